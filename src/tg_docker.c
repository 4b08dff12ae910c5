/* tg_docker.c -- see tg_docker.h. */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700
#include "tg_docker.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tg_run.h"
#include "tg_sha1.h"

extern char **environ;

#define CMD_SECS 60             /* any one docker command but a build */
#define CMD_MAX (1 << 20)       /* what we keep of a command's output */

/* ---- one command, run to its end (bounded) ------------------------------ */

typedef struct cmd {
    uv_process_t proc;
    uv_pipe_t pipes[2];
    uv_timer_t timer;
    char *buf[2];
    size_t len[2], cap[2];
    int64_t status;
    int sig, timed_out, exited, open_pipes;
} cmd_t;

static void cmd_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
    (void)h;
    b->base = malloc(suggested);
    b->len = b->base ? suggested : 0;
}

static void cmd_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    cmd_t *c = s->data;
    int k = s == (uv_stream_t *)&c->pipes[1];
    if (n > 0 && c->len[k] + (size_t)n < CMD_MAX) {
        if (c->len[k] + (size_t)n + 1 > c->cap[k]) {
            size_t cap = c->cap[k] ? c->cap[k] : 4096;
            while (cap < c->len[k] + (size_t)n + 1) cap *= 2;
            char *nb = realloc(c->buf[k], cap);
            if (nb) { c->buf[k] = nb; c->cap[k] = cap; }
        }
        if (c->len[k] + (size_t)n + 1 <= c->cap[k]) {
            memcpy(c->buf[k] + c->len[k], b->base, (size_t)n);
            c->len[k] += (size_t)n;
            c->buf[k][c->len[k]] = '\0';
        }
    }
    free(b->base);
    if (n < 0) {
        uv_close((uv_handle_t *)s, NULL);
        if (--c->open_pipes == 0 && c->exited) uv_timer_stop(&c->timer);
    }
}

/* The command exited and something it started still holds its output
 * open: stop reading (what came is kept). */
static void cmd_orphans(uv_timer_t *t) {
    cmd_t *c = t->data;
    for (int k = 0; k < 2; k++)
        if (!uv_is_closing((uv_handle_t *)&c->pipes[k])) uv_close((uv_handle_t *)&c->pipes[k], NULL);
    c->open_pipes = 0;
}

static void cmd_exit(uv_process_t *p, int64_t status, int sig) {
    cmd_t *c = p->data;
    c->status = status;
    c->sig = sig;
    c->exited = 1;
    uv_close((uv_handle_t *)p, NULL);
    /* its output ends with it -- unless a process it started keeps the
     * pipes: then 2 s more at the most */
    if (c->open_pipes > 0) uv_timer_start(&c->timer, cmd_orphans, 2000, 0);
    else uv_timer_stop(&c->timer);
}

static void cmd_timeout(uv_timer_t *t) {
    cmd_t *c = t->data;
    c->timed_out = 1;
    uv_process_kill(&c->proc, SIGKILL);
}

/* Run argv (argv[0] looked up on PATH) with env (NULL: ours), on a loop of
 * its own, for at most timeout seconds.  With logfd >= 0 its stdout and
 * stderr go there; else they are kept (the first MiB) in *out and *err,
 * malloc'd and NUL-terminated (either may be NULL: not wanted).  Returns
 * the exit status (128 + the signal if killed by one), -1 when it could
 * not start (*err says why), or -2 when it was killed at the timeout. */
static int cmd_run(char *const argv[], char *const env[], double timeout, int logfd, char **out, char **err) {
    uv_loop_t loop;
    cmd_t c;
    memset(&c, 0, sizeof c);
    if (out) *out = NULL;
    if (err) *err = NULL;
    uv_loop_init(&loop);
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    for (int k = 0; k < 2; k++) {
        if (logfd >= 0) {
            stdio[k + 1].flags = UV_INHERIT_FD;
            stdio[k + 1].data.fd = logfd;
        } else {
            uv_pipe_init(&loop, &c.pipes[k], 0);
            c.pipes[k].data = &c;
            stdio[k + 1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
            stdio[k + 1].data.stream = (uv_stream_t *)&c.pipes[k];
        }
    }
    uv_process_options_t po;
    memset(&po, 0, sizeof po);
    po.file = argv[0];
    po.args = (char **)argv;
    po.env = (char **)(env ? env : environ);
    po.stdio = stdio;
    po.stdio_count = 3;
    po.exit_cb = cmd_exit;
    c.proc.data = &c;
    int rc = uv_spawn(&loop, &c.proc, &po);
    if (rc < 0) {
        if (logfd < 0) {
            uv_close((uv_handle_t *)&c.pipes[0], NULL);
            uv_close((uv_handle_t *)&c.pipes[1], NULL);
        }
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        if (err) {
            char m[256];
            snprintf(m, sizeof m, "cannot run %s: %s", argv[0], uv_strerror(rc));
            *err = strdup(m);
        }
        return -1;
    }
    if (logfd < 0) {
        uv_read_start((uv_stream_t *)&c.pipes[0], cmd_alloc, cmd_read);
        uv_read_start((uv_stream_t *)&c.pipes[1], cmd_alloc, cmd_read);
        c.open_pipes = 2;
    }
    uv_timer_init(&loop, &c.timer);
    c.timer.data = &c;
    uv_timer_start(&c.timer, cmd_timeout, (uint64_t)(timeout * 1000), 0);
    uv_run(&loop, UV_RUN_DEFAULT);          /* until it exited and its pipes closed */
    uv_close((uv_handle_t *)&c.timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (out) *out = c.buf[0] ? c.buf[0] : strdup("");
    else free(c.buf[0]);
    if (err) *err = c.buf[1] ? c.buf[1] : strdup("");
    else free(c.buf[1]);
    if (c.timed_out) return -2;
    return c.sig ? 128 + c.sig : (int)c.status;
}

/* The first line of text that is not the docker client's "WARNING: ...",
 * without docker's "Error response from daemon: " (into buf). */
static const char *first_line(const char *text, char *buf, size_t len) {
    const char *p = text ? text : "";
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n && strncmp(p, "WARNING:", 8) != 0) {
            static const char noise[] = "Error response from daemon: ";
            if (n > sizeof noise - 1 && strncmp(p, noise, sizeof noise - 1) == 0) {
                p += sizeof noise - 1;
                n -= sizeof noise - 1;
            }
            snprintf(buf, len, "%.*s", (int)n, p);
            return buf;
        }
        p += n + (nl ? 1 : 0);
    }
    snprintf(buf, len, "(no message)");
    return buf;
}

/* Run a docker command (argv without "docker"); its stdout in *out (may be
 * NULL: not wanted), the reason it failed in why.  The exit status, or
 * -1/-2 as cmd_run. */
static int docker(const char *const args[], char **out, char *why, size_t whylen, double timeout) {
    tg_strv_t v = {0};
    tg_strv_addf(&v, "docker");
    for (int i = 0; args[i]; i++) tg_strv_addf(&v, "%s", args[i]);
    char *o = NULL, *e = NULL;
    int rc = v.oom ? -1 : cmd_run(v.v, NULL, timeout, -1, &o, &e);
    if (rc != 0 && why) {
        if (rc == -2) snprintf(why, whylen, "docker %s did not answer within %g s", args[0], timeout);
        else first_line(e, why, whylen);
    }
    if (out) *out = o;
    else free(o);
    free(e);
    tg_strv_free(&v);
    return rc;
}

/* Split whitespace-separated words of text onto v. */
static void words(const char *text, tg_strv_t *v) {
    const char *p = text ? text : "";
    while (*p) {
        while (*p == ' ' || *p == '\n' || *p == '\t') p++;
        size_t n = strcspn(p, " \n\t");
        if (n) tg_strv_addf(v, "%.*s", (int)n, p);
        p += n;
    }
}

/* ---- names and owners ---------------------------------------------------- */

/* Docker names: [a-zA-Z0-9][a-zA-Z0-9_.-]*; anything else becomes '_'. */
static void sanitize(char *dst, size_t len, const char *src) {
    size_t i = 0;
    for (; src[i] && i + 1 < len; i++) {
        char ch = src[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')
                 || (i > 0 && (ch == '_' || ch == '.' || ch == '-'));
        dst[i] = ok ? ch : '_';
    }
    dst[i] = '\0';
}

void tg_docker_container_name(const tg_docker_t *d, const char *group, int index, char *buf, size_t len) {
    char r[80], g[80];
    sanitize(r, sizeof r, d->run_id);
    sanitize(g, sizeof g, group);
    snprintf(buf, len, "tgrun-%s-%s-%d", r, g, index);
}

static void read_line_of(const char *path, char *buf, size_t len) {
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (fgets(buf, (int)len, f)) buf[strcspn(buf, "\n")] = '\0';
    fclose(f);
}

/* When process pid started (clock ticks after boot, /proc/<pid>/stat field
 * 22): with the boot id it names a process for good.  0 or -1. */
static int proc_start(long pid, unsigned long long *start) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');            /* the name may hold spaces and ')' */
    if (!p) return -1;
    p++;
    for (int field = 3; field < 22; field++) {
        p = strchr(p + 1, ' ');
        if (!p) return -1;
    }
    return sscanf(p, " %llu", start) == 1 ? 0 : -1;
}

/* "<host>/<boot id>/<pid>/<start>" of this process. */
static void my_owner(char *buf, size_t len) {
    char host[200], boot[64];
    unsigned long long start = 0;
    read_line_of("/proc/sys/kernel/hostname", host, sizeof host);
    read_line_of("/proc/sys/kernel/random/boot_id", boot, sizeof boot);
    proc_start((long)getpid(), &start);
    snprintf(buf, len, "%s/%s/%ld/%llu", host, boot, (long)getpid(), start);
}

/* Is the tgrun that owns something still alive?  Owners on another host
 * (an engine shared through DOCKER_HOST) are not ours to judge: alive. */
static int owner_alive(const char *owner) {
    char host[256], boot[64], mhost[256], mboot[64];
    long pid;
    unsigned long long start, now;
    if (sscanf(owner, "%255[^/]/%63[^/]/%ld/%llu", host, boot, &pid, &start) != 4) return 1;
    read_line_of("/proc/sys/kernel/hostname", mhost, sizeof mhost);
    read_line_of("/proc/sys/kernel/random/boot_id", mboot, sizeof mboot);
    if (strcmp(host, mhost) != 0) return 1;
    if (strcmp(boot, mboot) != 0) return 0;        /* from before a reboot */
    return proc_start(pid, &now) == 0 && now == start;
}

/* ---- cleaning up a run ------------------------------------------------------ */

/* Stop the run's private redis-server (its pid in <tmpdir>/redis.pid, if
 * that process is still the one started there) and remove the folder. */
static void clean_tmpdir(const char *tmpdir) {
    if (!tmpdir || !strstr(tmpdir, "/tgrun-")) return;
    char path[4200], line[64], cwd[4200], comm[64];
    snprintf(path, sizeof path, "%s/redis.pid", tmpdir);
    read_line_of(path, line, sizeof line);
    long pid = atol(line);
    if (pid > 1) {
        /* still the server started there?  (it rewrites its command line,
         * but its name stays and it runs in that folder: --dir) */
        snprintf(path, sizeof path, "/proc/%ld/comm", pid);
        read_line_of(path, comm, sizeof comm);
        snprintf(path, sizeof path, "/proc/%ld/cwd", pid);
        ssize_t n = readlink(path, cwd, sizeof cwd - 1);
        cwd[n > 0 ? n : 0] = '\0';
        if (strcmp(comm, "redis-server") == 0 && strcmp(cwd, tmpdir) == 0) {
            kill((pid_t)pid, SIGTERM);
            for (int i = 0; i < 100 && kill((pid_t)pid, 0) == 0; i++) {
                struct timespec ts = {0, 30000000};
                nanosleep(&ts, NULL);
            }
            kill((pid_t)pid, SIGKILL);
        }
    }
    tg_rm_tree(tmpdir, "/tgrun-");
}

#define RM_CHUNK 16             /* containers per `docker rm`: each one's removal is heavy I/O */

/* Remove the run's containers (with their anonymous volumes) and networks,
 * by label.  A network is tried `tries` times 0.2 s apart (an endpoint may
 * linger a moment after its container went).  Counts what it removed; 0,
 * or -1 when something could not be removed (why says what). */
static int remove_run(const char *run_id, int tries, int *ncont, int *nnet, char *why, size_t whylen) {
    char filter[200];
    snprintf(filter, sizeof filter, "label=tgrun.run=%s", run_id);
    char *out = NULL;
    int rc = 0;
    *ncont = *nnet = 0;
    const char *ps[] = {"ps", "-aq", "--filter", filter, NULL};
    if (docker(ps, &out, why, whylen, CMD_SECS) != 0) rc = -1;
    tg_strv_t ids = {0};
    words(out, &ids);
    free(out);
    for (size_t i = 0; i < ids.n; i += RM_CHUNK) {
        tg_strv_t v = {0};
        tg_strv_addf(&v, "rm");
        tg_strv_addf(&v, "-f");
        tg_strv_addf(&v, "-v");
        for (size_t j = i; j < ids.n && j < i + RM_CHUNK; j++) tg_strv_addf(&v, "%s", ids.v[j]);
        if (docker((const char *const *)v.v, NULL, why, whylen, CMD_SECS) == 0) *ncont += (int)v.n - 3;
        else rc = -1;
        tg_strv_free(&v);
    }
    tg_strv_free(&ids);
    const char *nls[] = {"network", "ls", "-q", "--filter", filter, NULL};
    out = NULL;
    if (docker(nls, &out, why, whylen, CMD_SECS) != 0) rc = -1;
    tg_strv_t nets = {0};
    words(out, &nets);
    free(out);
    for (size_t i = 0; i < nets.n; i++) {
        const char *rm[] = {"network", "rm", nets.v[i], NULL};
        int nrc = -1;
        for (int k = 0; k < tries && nrc != 0; k++) {
            if (k) {
                struct timespec ts = {0, 200000000};
                nanosleep(&ts, NULL);
            }
            nrc = docker(rm, NULL, why, whylen, CMD_SECS);
        }
        if (nrc == 0) {
            (*nnet)++;
            continue;
        }
        rc = -1;
        /* no container attached, yet "active endpoints": the engine lost
         * count (seen with Docker 20.10 when a hundred containers end at
         * once); only restarting dockerd recounts */
        char *attached = NULL;
        const char *insp[] = {"network", "inspect", "--format", "{{len .Containers}}", nets.v[i], NULL};
        if (strstr(why, "active endpoints") && docker(insp, &attached, NULL, 0, CMD_SECS) == 0
            && atoi(attached) == 0) {
            char w[300];
            snprintf(w, sizeof w, "%s", why);
            snprintf(why, whylen, "%.300s, though no container is attached: Docker's engine lost count of "
                     "its endpoints, which a restart of dockerd repairs", w);
        }
        free(attached);
    }
    tg_strv_free(&nets);
    return rc;
}

/* What crashed runs (their owner gone from this host) left: removed. */
static void sweep(void) {
    char why[512];
    char *cont = NULL, *nets = NULL;
    const char *ps[] = {"ps", "-a", "--filter", "label=tgrun.owner", "--format",
                        "{{.Label \"tgrun.owner\"}}\t{{.Label \"tgrun.run\"}}\t-", NULL};
    const char *nls[] = {"network", "ls", "--filter", "label=tgrun.owner", "--format",
                         "{{.Label \"tgrun.owner\"}}\t{{.Label \"tgrun.run\"}}\t{{.Label \"tgrun.tmpdir\"}}", NULL};
    if (docker(ps, &cont, why, sizeof why, CMD_SECS) != 0 || docker(nls, &nets, why, sizeof why, CMD_SECS) != 0) {
        free(cont);
        free(nets);
        return;                             /* setup's own commands will say what is wrong */
    }
    tg_strv_t done = {0};
    int nc = 0, nn = 0;
    for (int pass = 0; pass < 2; pass++) {
        /* networks first: only they know the run's temp folder */
        for (char *line = strtok(pass == 0 ? nets : cont, "\n"); line; line = strtok(NULL, "\n")) {
            char owner[320], run[128], tmp[4096];
            if (sscanf(line, "%319[^\t]\t%127[^\t]\t%4095[^\n]", owner, run, tmp) != 3) continue;
            if (owner_alive(owner)) continue;
            int seen = 0;
            for (size_t i = 0; i < done.n; i++) seen |= strcmp(done.v[i], run) == 0;
            if (seen) continue;
            tg_strv_addf(&done, "%s", run);
            int c = 0, n = 0;
            if (remove_run(run, 1, &c, &n, why, sizeof why) != 0)
                fprintf(stderr, "tgrun: could not remove what run %s left: %s\n", run, why);
            if (strcmp(tmp, "-") != 0) clean_tmpdir(tmp);
            nc += c;
            nn += n;
        }
    }
    if (nc + nn)
        fprintf(stderr, "tgrun: removed %d container(s) and %d network(s) left by %zu --docker run(s) "
                "whose tgrun is gone\n", nc, nn, done.n);
    tg_strv_free(&done);
    free(cont);
    free(nets);
}

/* ---- the image ---------------------------------------------------------------- */

static int image_exists(const char *image) {
    const char *args[] = {"image", "inspect", "--format", "{{.Id}}", image, NULL};
    return docker(args, NULL, NULL, 0, CMD_SECS) == 0;
}

/* The Debian packages that hold the shared libraries of exe (ldd, dpkg -S),
 * space-separated into pkgs.  0, or -1 with why. */
static int lib_packages(const char *exe, char *pkgs, size_t len, char *why, size_t whylen) {
    char *out = NULL;
    char *ldd[] = {"ldd", (char *)exe, NULL};
    if (cmd_run(ldd, NULL, CMD_SECS, -1, &out, NULL) != 0) {
        snprintf(why, whylen, "ldd %s failed", exe);
        free(out);
        return -1;
    }
    pkgs[0] = '\0';
    int rc = 0;
    for (char *save = NULL, *line = strtok_r(out, "\n", &save); line && rc == 0; line = strtok_r(NULL, "\n", &save)) {
        char *arrow = strstr(line, "=> /");
        if (!arrow) continue;               /* the vdso, the loader */
        char lib[PATH_MAX], real[PATH_MAX];
        if (sscanf(arrow + 3, "%4095s", lib) != 1) continue;
        /* dpkg knows a file by the path its package ships it at: with
         * merged /usr that may be /lib/... or /usr/lib/..., of the link or
         * of its target */
        char cand[4][PATH_MAX + 8];
        const char *base[2] = {lib, realpath(lib, real) ? real : lib};
        for (int i = 0; i < 2; i++) {
            snprintf(cand[i], sizeof cand[i], "%s", base[i]);
            if (strncmp(base[i], "/usr/", 5) == 0) snprintf(cand[2 + i], sizeof cand[0], "%.4000s", base[i] + 4);
            else snprintf(cand[2 + i], sizeof cand[0], "/usr%.4000s", base[i]);
        }
        char *dout = NULL;
        int found = 0;
        for (int i = 0; i < 4 && !found; i++) {
            free(dout);
            char *dpkg[] = {"dpkg", "-S", cand[i], NULL};
            found = cmd_run(dpkg, NULL, CMD_SECS, -1, &dout, NULL) == 0 && strchr(dout, ':');
        }
        if (!found) {
            snprintf(why, whylen, "cannot tell which Debian package holds %.300s (dpkg -S)", lib);
            rc = -1;
        } else {
            size_t n = strcspn(dout, ":");
            char pkg[128];
            snprintf(pkg, sizeof pkg, " %.*s ", (int)n, dout);
            char padded[4200];
            snprintf(padded, sizeof padded, " %s ", pkgs);
            if (!strstr(padded, pkg) && strlen(pkgs) + n + 2 < len)
                snprintf(pkgs + strlen(pkgs), len - strlen(pkgs), "%s%.*s", pkgs[0] ? " " : "", (int)n, dout);
        }
        free(dout);
    }
    free(out);
    return rc;
}

static int write_file(const char *path, const void *data, size_t len, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return -1;
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            close(fd);
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return close(fd);
}

static char *read_whole(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = realloc(buf, cap *= 2);
        if (!nb) { free(buf); buf = NULL; }
        else buf = nb;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* tgrun's own image: this binary on debian:12-slim with the packages of
 * its libraries, plus what tg.network runs (iproute2, iptables, with
 * cap_net_admin as file capabilities for the non-root user uid 10001).
 * Built once per binary (its SHA-1 names it); a lock keeps two runs from
 * building it at the same time.  0 or 2. */
static int self_image(tg_docker_t *d, const char *exe) {
    size_t len = 0;
    char *bin = read_whole(exe, &len);
    if (!bin) return tg_usage_error("cannot read my own binary %s: %s", exe, strerror(errno));
    char sha[41];
    tg_sha1_hex(bin, len, sha);
    snprintf(d->image, sizeof d->image, "tgrun-self:%s-%.12s", TG_VERSION, sha);
    if (image_exists(d->image)) { free(bin); return 0; }

    double limit = atof(tg_env_or("TG_DOCKER_BUILD_TIMEOUT", "900"));
    if (limit <= 0) limit = 900;
    char lockp[256];
    snprintf(lockp, sizeof lockp, "%s/tgrun-self-%.12s.lock", tg_env_or("TMPDIR", "/tmp"), sha);
    int lock = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    double t0 = tg_rt_now();
    while (lock >= 0 && flock(lock, LOCK_EX | LOCK_NB) != 0) {   /* another run builds it */
        if (tg_rt_now() - t0 > limit) break;
        struct timespec ts = {0, 200000000};
        nanosleep(&ts, NULL);
    }
    int status = 2;
    char why[512], ctx[4200], path[4300], pkgs[2048];
    if (image_exists(d->image)) { status = 0; goto out; }
    if (!image_exists("debian:12-slim")) {
        tg_usage_error("building tgrun's own image needs the base image debian:12-slim, which this engine "
                       "lacks: docker pull debian:12-slim (offline: tests/harness/base-image.sh), or give "
                       "an image of your own: --docker IMAGE");
        goto out;
    }
    if (lib_packages(exe, pkgs, sizeof pkgs, why, sizeof why) < 0) {
        tg_usage_error("%s: build an image yourself (docker build -t tgrun .) and run with --docker tgrun", why);
        goto out;
    }
    snprintf(ctx, sizeof ctx, "%s/image", d->tmpdir);
    char dockerfile[4096];
    snprintf(dockerfile, sizeof dockerfile,
        "# generated by tgrun %s for --docker: this binary and the packages of its libraries\n"
        "FROM debian:12-slim\n"
        "RUN apt-get update \\\n"
        " && apt-get install -y --no-install-recommends %s iproute2 iptables libcap2-bin \\\n"
        " && setcap cap_net_admin+ep /usr/sbin/tc \\\n"
        " && setcap cap_net_admin,cap_net_raw+ep \"$(readlink -f /usr/sbin/iptables)\" \\\n"
        " && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \\\n"
        " && useradd --uid 10001 --user-group --create-home --home-dir /home/tgrun --shell /usr/sbin/nologin tgrun\n"
        "COPY tgrun /usr/local/bin/tgrun\n"
        "USER tgrun\n"
        "WORKDIR /home/tgrun\n"
        "ENTRYPOINT [\"tgrun\"]\n", TG_VERSION, pkgs);
    snprintf(path, sizeof path, "%s/tgrun", ctx);
    if (tg_mkdir_p(ctx) < 0 || write_file(path, bin, len, 0755) < 0) {
        tg_usage_error("cannot write the image's build folder %s: %s", ctx, strerror(errno));
        goto out;
    }
    snprintf(path, sizeof path, "%s/Dockerfile", ctx);
    write_file(path, dockerfile, strlen(dockerfile), 0644);
    snprintf(path, sizeof path, "%s/tgrun-self-%.12s.log", tg_env_or("TMPDIR", "/tmp"), sha);
    int logfd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    fprintf(stderr, "tgrun: building image %s (once per tgrun binary; log in %s)\n", d->image, path);
    tg_strv_t env = {0}, argv = {0};
    for (size_t i = 0; environ[i]; i++)
        if (strncmp(environ[i], "DOCKER_BUILDKIT=", 16) != 0) tg_strv_addf(&env, "%s", environ[i]);
    tg_strv_addf(&env, "DOCKER_BUILDKIT=0");      /* Debian's engine and client have no buildx */
    const char *b[] = {"docker", "build", "--network", "host", "--label", "tgrun.self=" TG_VERSION,
                       "-t", d->image, ctx, NULL};
    for (int i = 0; b[i]; i++) tg_strv_addf(&argv, "%s", b[i]);
    double tb = tg_rt_now();
    int rc = logfd < 0 ? -1 : cmd_run(argv.v, env.v, limit, logfd, NULL, NULL);
    if (logfd >= 0) close(logfd);
    tg_strv_free(&env);
    tg_strv_free(&argv);
    if (rc != 0) {
        size_t ll = 0;
        char *log = read_whole(path, &ll);
        const char *last = "";
        if (log && ll) {                     /* its last non-empty line */
            while (ll && (log[ll - 1] == '\n' || log[ll - 1] == ' ')) log[--ll] = '\0';
            char *nl = strrchr(log, '\n');
            last = nl ? nl + 1 : log;
        }
        tg_usage_error("docker build of %s %s: %s (log: %s)", d->image,
                       rc == -2 ? "took longer than TG_DOCKER_BUILD_TIMEOUT" : "failed", last, path);
        free(log);
        goto out;
    }
    fprintf(stderr, "tgrun: built image %s in %.0f s\n", d->image, tg_rt_now() - tb);
    /* the images of older binaries are a cache of ours: those a day old
     * that no container uses go (docker refuses to remove one in use) */
    const char *prune[] = {"image", "prune", "-a", "-f", "--filter", "label=tgrun.self",
                           "--filter", "until=24h", NULL};
    docker(prune, NULL, NULL, 0, CMD_SECS);
    status = 0;
out:
    if (lock >= 0) close(lock);
    free(bin);
    return status;
}

/* ---- the reaper -------------------------------------------------------------- */

static void on_reaper_exit(uv_process_t *p, int64_t status, int sig) {
    (void)p; (void)status; (void)sig;      /* its handle is closed at teardown */
}

/* Start `tgrun _docker-reaper RUN TMPDIR` in a session of its own, its
 * stdin a pipe that only we hold.  0 or 2. */
static int start_reaper(tg_docker_t *d, const char *exe) {
    char *args[] = {(char *)exe, TG_DOCKER_REAPER_CMD, d->run_id, d->tmpdir, NULL};
    uv_stdio_container_t stdio[3];
    uv_pipe_init(d->loop, &d->reaper_pipe, 0);
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&d->reaper_pipe;
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = 1;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = 2;
    uv_process_options_t po;
    memset(&po, 0, sizeof po);
    po.file = exe;
    po.args = args;
    po.stdio = stdio;
    po.stdio_count = 3;
    po.exit_cb = on_reaper_exit;
    po.flags = UV_PROCESS_DETACHED;         /* Ctrl-C does not reach it */
    d->reaper.data = d;
    int rc = uv_spawn(d->loop, &d->reaper, &po);
    if (rc < 0) {
        uv_close((uv_handle_t *)&d->reaper_pipe, NULL);
        return tg_usage_error("cannot start tgrun's clean-up watchdog: %s", uv_strerror(rc));
    }
    d->reaper_on = 1;
    uv_unref((uv_handle_t *)&d->reaper);
    uv_unref((uv_handle_t *)&d->reaper_pipe);
    return 0;
}

int tg_docker_reaper_main(int argc, char **argv) {
    if (argc != 3) return 2;
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    char buf[64];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(0, buf + got, sizeof buf - 1 - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
        if (got == sizeof buf - 1) break;
    }
    buf[got] = '\0';
    if (strstr(buf, "done")) return 0;
    /* tgrun went away without cleaning up (killed): do it */
    char why[512] = "";
    int nc = 0, nn = 0;
    int rc = remove_run(argv[1], 50, &nc, &nn, why, sizeof why);
    clean_tmpdir(argv[2]);
    fprintf(stderr, "tgrun: run %s ended without cleaning up: removed %d container(s) and %d network(s)%s%s\n",
            argv[1], nc, nn, rc ? "; docker: " : "", rc ? why : "");
    return rc ? 1 : 0;
}

/* ---- set-up ---------------------------------------------------------------- */

int tg_docker_setup(tg_docker_t *d, uv_loop_t *loop, const char *run_id, const char *image,
                    const char *plan_path, const char *exe, const char *tmpdir, const char *subnet) {
    char why[512], bin[4096], rid[80];
    d->loop = loop;
    snprintf(d->run_id, sizeof d->run_id, "%s", run_id);
    snprintf(d->tmpdir, sizeof d->tmpdir, "%s", tmpdir);
    if (tg_find_on_path("docker", bin, sizeof bin) < 0)
        return tg_usage_error("--docker needs the docker command, which is not on PATH: install Docker "
                              "(Debian: apt-get install docker.io)");
    const char *ver[] = {"version", "--format", "{{.Server.Version}}", NULL};
    if (docker(ver, NULL, why, sizeof why, 20) != 0)
        return tg_usage_error("--docker: no Docker engine answers (%s): start one (dockerd, or "
                              "tests/harness/docker-engine.sh) or point DOCKER_HOST at it", why);
    if (start_reaper(d, exe) != 0) return 2;
    my_owner(d->owner, sizeof d->owner);
    sweep();

    if (image) {
        snprintf(d->image, sizeof d->image, "%s", image);
        if (!image_exists(image))
            return tg_usage_error("--docker: image \"%s\" is not on this Docker engine (tgrun never pulls): "
                                  "docker build -t %s . (or docker pull it), or leave IMAGE out to use tgrun's own",
                                  image, image);
    } else if (self_image(d, exe) != 0) {
        return 2;
    }

    char real[PATH_MAX], pbuf[PATH_MAX];
    if (!realpath(plan_path, real))
        return tg_usage_error("cannot read plan \"%s\": %s", plan_path, strerror(errno));
    snprintf(pbuf, sizeof pbuf, "%s", real);
    snprintf(d->plandir, sizeof d->plandir, "%s", dirname(pbuf));
    snprintf(pbuf, sizeof pbuf, "%s", real);
    snprintf(d->planfile, sizeof d->planfile, "%s", basename(pbuf));
    if (geteuid() != 0) snprintf(d->user, sizeof d->user, "%ld:%ld", (long)geteuid(), (long)getegid());

    /* the network: internal (nothing routed off this host), the subnet Docker's pools give */
    sanitize(rid, sizeof rid, run_id);
    snprintf(d->net, sizeof d->net, "tgrun-%s", rid);
    char lrun[200], lowner[400], ltmp[4200];
    snprintf(lrun, sizeof lrun, "tgrun.run=%s", run_id);
    snprintf(lowner, sizeof lowner, "tgrun.owner=%s", d->owner);
    snprintf(ltmp, sizeof ltmp, "tgrun.tmpdir=%s", tmpdir);
    const char *create[] = {"network", "create", "--internal", "--label", lrun, "--label", lowner,
                            "--label", ltmp, d->net, NULL, NULL, NULL};
    if (subnet) {
        create[9] = "--subnet";
        create[10] = subnet;
        create[11] = d->net;
    }
    if (docker(create, NULL, why, sizeof why, CMD_SECS) != 0)
        return tg_usage_error("--docker: cannot create the run's network %s: %s%s", d->net, why,
                              strstr(why, "already exists") ? " (is a run with this id still running?)" : "");
    d->net_made = 1;
    char *out = NULL;
    const char *insp[] = {"network", "inspect", "--format",
                          "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}\n{{end}}", d->net, NULL};
    if (docker(insp, &out, why, sizeof why, CMD_SECS) != 0) {
        free(out);
        return tg_usage_error("--docker: cannot inspect network %s: %s", d->net, why);
    }
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char sn[64], gw[64];
        if (sscanf(line, "%63s %63s", sn, gw) == 2 && strchr(sn, '.')) {   /* IPv4 */
            snprintf(d->subnet, sizeof d->subnet, "%s", sn);
            snprintf(d->gateway, sizeof d->gateway, "%s", gw);
            break;
        }
    }
    free(out);
    if (!d->gateway[0])
        return tg_usage_error("--docker: network %s has no IPv4 subnet with a gateway on this host, "
                              "so its containers cannot reach the run's Redis", d->net);
    return 0;
}

/* ---- instances --------------------------------------------------------------- */

int tg_docker_run_argv(tg_docker_t *d, const char *group, int index, const char *label, const char *outdir,
                       const tg_strv_t *env, const char *timeout, const char *redis_url, tg_strv_t *argv) {
    char name[256], abs[PATH_MAX];
    if (!realpath(outdir, abs)) return -errno;
    /* root runs the image as its own user, which must be able to write here */
    if (!d->user[0] && chmod(abs, 0777) < 0) return -errno;
    tg_docker_container_name(d, group, index, name, sizeof name);
    /* no --rm: a hundred containers removing themselves at once is heavy
     * I/O (vfs: a copy of the image each) just when their endpoints go,
     * and once that left Docker 20.10 counting an endpoint no container
     * had; the teardown removes them, RM_CHUNK at a time.  No log driver:
     * their output comes once, through the attached client. */
    const char *head[] = {"docker", "run", "--init", "--pull", "never", "--log-driver", "none",
                          "--network", d->net, "--cap-add", "NET_ADMIN", "--name", name, NULL};
    for (int i = 0; head[i]; i++) tg_strv_addf(argv, "%s", head[i]);
    tg_strv_addf(argv, "--label");
    tg_strv_addf(argv, "tgrun.run=%s", d->run_id);
    tg_strv_addf(argv, "--label");
    tg_strv_addf(argv, "tgrun.owner=%s", d->owner);
    tg_strv_addf(argv, "--label");
    tg_strv_addf(argv, "tgrun.instance=%s", label);
    if (d->user[0]) {
        tg_strv_addf(argv, "--user");
        tg_strv_addf(argv, "%s", d->user);
    }
    tg_strv_addf(argv, "-v");
    tg_strv_addf(argv, "%s:/outputs", abs);
    tg_strv_addf(argv, "-v");
    tg_strv_addf(argv, "%s:/plan:ro", d->plandir);
    for (size_t i = 0; i < env->n; i++) {
        tg_strv_addf(argv, "-e");
        tg_strv_addf(argv, "%s", env->v[i]);
    }
    static const char *pass[] = {"LOG_LEVEL", "TG_SESSION_TTL", NULL};   /* knobs, not host paths */
    for (int i = 0; pass[i]; i++) {
        const char *v = getenv(pass[i]);
        if (v) {
            tg_strv_addf(argv, "-e");
            tg_strv_addf(argv, "%s=%s", pass[i], v);
        }
    }
    const char *tail[] = {"--entrypoint", "tgrun", d->image, "--timeout", timeout, "--redis", redis_url, NULL};
    for (int i = 0; tail[i]; i++) tg_strv_addf(argv, "%s", tail[i]);
    tg_strv_addf(argv, "/plan/%s", d->planfile);
    return argv->oom ? UV_ENOMEM : 0;
}

static void on_rm_closed(uv_handle_t *h) {
    tg_docker_t *d = h->data;
    d->rm_on = 0;
    if (d->rm_done) d->rm_done(d->rm_data);
}

static void on_rm_exit(uv_process_t *p, int64_t status, int sig) {
    (void)status; (void)sig;
    uv_close((uv_handle_t *)p, on_rm_closed);
}

int tg_docker_rm_start(tg_docker_t *d, const tg_strv_t *names, tg_docker_done_fn done, void *data) {
    if (d->rm_on) return -1;
    tg_strv_t argv = {0};
    tg_strv_addf(&argv, "docker");
    tg_strv_addf(&argv, "rm");
    tg_strv_addf(&argv, "-f");
    tg_strv_addf(&argv, "-v");
    for (size_t i = 0; i < names->n; i++) tg_strv_addf(&argv, "%s", names->v[i]);
    uv_stdio_container_t stdio[3];
    for (int i = 0; i < 3; i++) stdio[i].flags = UV_IGNORE;
    uv_process_options_t po;
    memset(&po, 0, sizeof po);
    po.file = "docker";
    po.args = argv.v;
    po.stdio = stdio;
    po.stdio_count = 3;
    po.exit_cb = on_rm_exit;
    po.flags = UV_PROCESS_DETACHED;
    d->rm.data = d;
    d->rm_done = done;
    d->rm_data = data;
    int rc = argv.oom ? UV_ENOMEM : uv_spawn(d->loop, &d->rm, &po);
    tg_strv_free(&argv);
    if (rc < 0) {
        fprintf(stderr, "tgrun: cannot run docker rm: %s\n", uv_strerror(rc));
        return -1;
    }
    d->rm_on = 1;
    return 0;
}

void tg_docker_rm_stop(tg_docker_t *d) {
    if (d->rm_on) uv_process_kill(&d->rm, SIGKILL);
}

int tg_docker_cli_warning(tg_docker_t *d, const char *line, size_t len) {
    if (len < 9 || strncmp(line, "WARNING: ", 9) != 0) return 0;
    for (size_t i = 0; i < d->warned.n; i++)
        if (strlen(d->warned.v[i]) == len && memcmp(d->warned.v[i], line, len) == 0) return 1;
    tg_strv_addf(&d->warned, "%.*s", (int)len, line);
    fprintf(stderr, "tgrun: docker: %.*s\n", (int)len, line);
    return 1;
}

static int own_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)ftw;
    if (lchown(path, getuid(), getgid()) == 0 && flag == FTW_DP && (st->st_mode & 0777) == 0777) chmod(path, 0755);
    return 0;
}

void tg_docker_own_outputs(const tg_docker_t *d, const char *dir) {
    if (d->user[0]) return;                 /* they ran as the user who runs tgrun */
    nftw(dir, own_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- the end -------------------------------------------------------------- */

int tg_docker_teardown(tg_docker_t *d) {
    if (!d->loop) return 0;
    int status = 0;
    if (d->net_made) {
        char why[512] = "", filter[200];
        int nc = 0, nn = 0;
        if (remove_run(d->run_id, 50, &nc, &nn, why, sizeof why) != 0)
            fprintf(stderr, "tgrun: --docker run %s: %s\n", d->run_id, why);
        /* the check: nothing of the run is left, of any kind */
        snprintf(filter, sizeof filter, "label=tgrun.run=%s", d->run_id);
        const char *ps[] = {"ps", "-aq", "--filter", filter, NULL};
        const char *nls[] = {"network", "ls", "-q", "--filter", filter, NULL};
        const char *vls[] = {"volume", "ls", "-q", "--filter", filter, NULL};
        const char *const *checks[] = {ps, nls, vls};
        static const char *what[] = {"container", "network", "volume"};
        for (int i = 0; i < 3; i++) {
            char *out = NULL;
            int rc = docker(checks[i], &out, why, sizeof why, CMD_SECS);
            if (rc != 0 || (out && out[strspn(out, " \n")])) {
                status = -1;
                fprintf(stderr, "tgrun: --docker run %s left %s(s) behind: %s (remove them: docker %s rm "
                        "$(docker %s ls -q --filter %s))\n", d->run_id, what[i],
                        rc != 0 ? why : out, i == 0 ? "container" : what[i], i == 0 ? "container" : what[i], filter);
            }
            free(out);
        }
    }
    if (d->reaper_on) {                     /* all is clean: the watchdog may go */
        uv_buf_t b = uv_buf_init("done\n", 5);
        uv_try_write((uv_stream_t *)&d->reaper_pipe, &b, 1);
        uv_close((uv_handle_t *)&d->reaper_pipe, NULL);
        uv_close((uv_handle_t *)&d->reaper, NULL);
        d->reaper_on = 0;
    }
    tg_strv_free(&d->warned);
    d->loop = NULL;
    return status;
}
