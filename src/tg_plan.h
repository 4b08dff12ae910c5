/*
 * tg_plan.h -- what a plan declares, shown without running it: `tgrun
 * manifest PLAN.lua` prints the Testground manifest.toml of the plan, and
 * `tgrun --help-params PLAN.lua` lists its parameters.  Both load the plan
 * in a runtime of their own that connects to nothing (tg_run_load_decl)
 * and ask tg.params (lua/tg/params.lua) for the text.
 *
 * Status convention: the exit status -- 0, or 2 after one line "tgrun: ..."
 * on stderr (a plan that does not load, a bad declaration, bad usage).
 */
#ifndef TG_PLAN_H
#define TG_PLAN_H

#include "tg_run.h"

/* tgrun manifest [-h] PLAN.lua (argv[0] is "manifest"). */
int tg_plan_manifest_main(int argc, char **argv);
/* tgrun --help-params [-c CASE] PLAN.lua: the parsed options. */
int tg_plan_help_params(const tg_opts_t *o);

#endif
