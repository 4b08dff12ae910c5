/*
 * tg_report.h -- the picture of a finished run: `tgrun report RUN_DIR`, and
 * the same at the end of every `tgrun -n` (processes and --inproc).
 *
 * The report merges what each instance left in RUN_DIR/<group>/<index>/ --
 * trace.jsonl (its waits, publishes and outcome: tg_trace.h) and run.out
 * (Testground's event lines, all that a run of an older tgrun or of the Go
 * SDK has) -- and writes, in RUN_DIR unless told otherwise:
 *  - timeline.html: one self-contained page (its script and styles inline,
 *    nothing fetched), one lane per instance, grouped by group;
 *  - trace.json: the same spans in Chrome's trace event format, for
 *    Perfetto or chrome://tracing;
 * and returns a few lines for the summary: the slowest barriers, who came
 * last to each, the time waited per state.
 *
 * The merging and both files are lua/tg/report.lua's work (the page's
 * template is assets/timeline.html), run in a lua_State of its own on a
 * runtime of its own; this unit gives it what plain Lua lacks (folder
 * listings, the compiled-in template) and speaks for it on the command
 * line.  It is a runner-side unit: it may use the runtime, never the other
 * way round.
 *
 * Bad input never ends in a stack trace: what is there is drawn, and each
 * thing missing is one line ("2 of 50 instances left no trace.jsonl: ...").
 */
#ifndef TG_REPORT_H
#define TG_REPORT_H

#include <stdio.h>

/* Write the report of the run in run_dir to out_dir (NULL: run_dir).  The
 * summary lines (and one per thing missing) go to lines, each prefixed with
 * indent.  Returns 0 when it wrote the files, 2 when run_dir is not a run
 * (one line on stderr says why), 1 when they could not be written (said
 * on stderr). */
int tg_report_write(const char *run_dir, const char *out_dir, FILE *lines, const char *indent);

/* `tgrun report [--out DIR] RUN_DIR`: argv[0] is "report".  The exit status. */
int tg_report_main(int argc, char **argv);

#endif
