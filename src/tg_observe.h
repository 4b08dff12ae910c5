/*
 * tg_observe.h -- `tgrun observe --redis URL --run ID`: follow a run whose
 * instances live elsewhere (other hosts, pods, containers) from the run's
 * event stream alone, `run:<run>:plan:<plan>:case:<case>:run_events`.
 *
 * Every tgrun instance appends its start (once it has its seqs) and its
 * outcome there: field "p" the Testground event -- the start_event's runenv
 * carries the run's instance count and the instance's group with its
 * count -- and field "tg" which instance it was ({seq, group_seq, name,
 * host}).  Observe reads the stream from its beginning with XREAD BLOCK
 * (so it may start before, during or after the run), shows a live progress
 * line on a terminal (else one line per start and outcome), and once every
 * instance recorded its outcome -- or at its own --timeout -- prints the
 * same summary as a local run: per group, the first error of each failed
 * instance.  Exit status 0 all succeeded, 1 one failed or did not finish,
 * 2 bad usage or configuration (no Redis, no such run).
 *
 * Plan and case name the stream; without --plan/--case observe finds them
 * (SCAN for the run's run_events keys; more than one: it asks).  Instances
 * that do not record starts there (Go SDK ones) can be counted with -n N.
 * Redis is used synchronously (hiredis, every call bounded): observe does
 * nothing else while it waits.
 */
#ifndef TG_OBSERVE_H
#define TG_OBSERVE_H

/* `tgrun observe ...` (argv[0] is "observe").  The exit status. */
int tg_observe_main(int argc, char **argv);

#endif
