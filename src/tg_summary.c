/*
 * tg_summary.c -- what the local runner shows while and after it runs: the
 * live progress line, each instance's first error, and the summary per
 * group with the exit status.  Shared by the supervisor (tg_super.c) and
 * the in-process runner (tg_inproc.c); see tg_local.h.
 */
#define _POSIX_C_SOURCE 200809L
#include "tg_local.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tg_report.h"

double tg_local_now(void) {
    return (double)uv_hrtime() / 1e9;
}

/* ---- output ------------------------------------------------------------ */

void tg_local_clear_progress(tg_local_t *r) {
    if (r->tty && r->progress_shown) {
        fputs("\r\033[K", stderr);
        r->progress_shown = 0;
    }
}

static void counts(tg_local_t *r, int *ok, int *failed) {
    *ok = *failed = 0;
    for (int i = 0; i < r->n; i++) {
        if (r->kids[i].outcome == TG_OUT_SUCCESS) (*ok)++;
        else if (r->kids[i].outcome) (*failed)++;
    }
}

void tg_local_on_progress(uv_timer_t *h) {
    tg_local_t *r = h->data;
    int ok, failed;
    counts(r, &ok, &failed);
    fflush(stdout);
    fprintf(stderr, "\r\033[Ktgrun: %d instances: %d running, %d succeeded, %d failed, %.1f s",
            r->n, r->running, ok, failed, tg_local_now() - r->t0);
    fflush(stderr);
    r->progress_shown = 1;
}

void tg_local_set_error(char **slot, const char *msg, size_t len) {
    if (*slot) return;
    const char *nl = memchr(msg, '\n', len);
    if (nl) len = (size_t)(nl - msg);
    *slot = malloc(len + 1);
    if (!*slot) return;
    memcpy(*slot, msg, len);
    (*slot)[len] = '\0';
}

char *tg_local_outdir(tg_local_t *r, int g, long j) {
    size_t n = strlen(r->outputs) + strlen(r->run.run_id) + strlen(r->groups[g].name) + 32;
    char *d = malloc(n);
    if (d) snprintf(d, n, "%s/%s/%s/%ld", r->outputs, r->run.run_id, r->groups[g].name, j);
    return d;
}

/* The summary's last lines: the picture of the run -- timeline.html,
 * trace.json, and a few lines here on the barriers (tg_report.h), whose
 * trouble never changes the run's exit status -- and where the outputs
 * are.  The in-process runner calls it after its instances are gone, so
 * that the report's memory does not come on top of theirs. */
void tg_local_conclude(tg_local_t *r) {
    char rundir[4200];
    snprintf(rundir, sizeof rundir, "%s/%s", r->outputs, r->run.run_id);
    if (r->run.trace) tg_report_write(rundir, NULL, stdout, "  ");
    printf("tgrun: outputs in %s\n", rundir);
    fflush(stdout);
}

/* Settle each child's outcome and print the summary; the exit status. */
int tg_local_summarize(tg_local_t *r) {
    int usage = 0;
    tg_local_clear_progress(r);
    for (int i = 0; i < r->n; i++) {
        tg_child_t *c = &r->kids[i];
        char why[512];
        if (c->outcome == TG_OUT_SUCCESS && c->exited && c->status == 0 && !c->signal) continue;
        if (c->outcome == TG_OUT_SUCCESS) {
            snprintf(why, sizeof why, "recorded success but exited with %s %d",
                     c->signal ? "signal" : "status", c->signal ? c->signal : (int)c->status);
            c->outcome = TG_OUT_FAILURE;
            free(c->error);
            c->error = strdup(why);
        }
        if (!c->outcome) {
            if (!c->spawned) snprintf(why, sizeof why, "could not be started");
            /* 2: tgrun's own one-line complaint; 125..127: docker run's */
            else if ((c->status == 2 || (r->dk && c->status >= 125 && c->status <= 127)) && c->stderr_first)
                snprintf(why, sizeof why, "%s", c->stderr_first);
            else if (c->signal || (r->dk && c->status > 128 && c->status < 160))   /* a container's 128+n */
                snprintf(why, sizeof why, "killed by signal %d before it recorded an outcome%s",
                         c->signal ? c->signal : (int)c->status - 128,
                         r->timed_out ? " (the run's deadline had passed)" : "");
            else snprintf(why, sizeof why, "exited with status %d without recording an outcome", (int)c->status);
            c->error = strdup(why);
            c->outcome = TG_OUT_FAILURE;
        }
        if (c->exited && c->status == 2) usage++;
    }
    char extra[128] = "";
    if (r->n < r->total)
        snprintf(extra, sizeof extra, " (indices %d..%d of a run of %d)", r->offset, r->offset + r->n - 1, r->total);
    /* (where the outputs are is said by tg_local_conclude, after the run's report) */
    return tg_local_report(r, extra, usage, NULL);
}

int tg_local_report(tg_local_t *r, const char *extra, int usage, const char *outputs) {
    int ok = 0, failed = 0;
    tg_local_clear_progress(r);
    counts(r, &ok, &failed);
    failed = r->n - ok;
    printf("tgrun: run %s (plan %s, case %s): %d instances%s, %d succeeded, %d failed, in %.2f s\n",
           r->run.run_id, r->run.plan, r->run.case_name, r->n, extra, ok, failed, tg_local_now() - r->t0);
    for (int g = 0; g < r->ngroups; g++) {
        int gok = 0, gfail = 0;
        for (int i = 0; i < r->n; i++) {
            if (r->kids[i].group != g) continue;
            if (r->kids[i].outcome == TG_OUT_SUCCESS) gok++;
            else gfail++;
        }
        if (gok + gfail) printf("  group %s: %d succeeded, %d failed\n", r->groups[g].name, gok, gfail);
    }
    int shown = 0;
    for (int i = 0; i < r->n; i++) {
        tg_child_t *c = &r->kids[i];
        if (c->outcome == TG_OUT_SUCCESS) continue;
        if (shown++ == 20) { printf("  ... and %d more failed instances\n", failed - 20); break; }
        printf("  %s %s: %s\n", c->label,
               c->unfinished ? "did not finish" :
               c->outcome == TG_OUT_CRASH ? "crashed" : "failed",
               c->error ? c->error : "?");
    }
    if (outputs) printf("tgrun: outputs in %s\n", outputs);
    fflush(stdout);
    if (failed == 0) return 0;
    if (usage == failed) return 2;
    return 1;
}
