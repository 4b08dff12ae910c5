/*
 * tg_docker.h -- the --docker backend of the local runner: each instance
 * its own container, driven through the `docker` command line (there is no
 * Docker API client library in Debian that fits; the CLI is what users have
 * and what they would type, and it speaks to any engine DOCKER_HOST names).
 *
 *  - Set-up (tg_docker_setup): an engine must answer; the image must be
 *    there (tgrun never pulls), or, with no IMAGE given, tgrun's own image
 *    tgrun-self:<version>-<binary's SHA-1> is built from a generated
 *    Dockerfile that copies this very binary onto debian:12-slim with the
 *    Debian packages of its shared libraries; what crashed runs left is
 *    swept; then a private `--internal` bridge network whose subnet and
 *    gateway Docker picks and we read back (TEST_SUBNET is the real one);
 *    and a reaper (see below).
 *  - An instance (tg_docker_run_argv): `docker run --init` on that
 *    network with NET_ADMIN (tg.network), the outputs folder mounted at
 *    /outputs, the plan's folder read-only at /plan, the TEST_* variables;
 *    the supervisor (tg_super.c) spawns it and reads its output as for a
 *    process.  The private Redis is a redis-server of this host on the
 *    network's gateway address (tg_redisd.c), which works with any image.
 *  - Leftovers: everything carries the labels tgrun.run=<run> and
 *    tgrun.owner=<host>/<boot id>/<pid>/<start time>.  At the end
 *    tg_docker_teardown removes by label and checks that no container,
 *    network or volume of the run is left.  If tgrun itself is killed
 *    (SIGKILL), the reaper -- a process of ours in its own session that
 *    holds a pipe from tgrun -- sees the pipe close without "done" and
 *    removes the run's containers, network, Redis and temp folder.  If the
 *    reaper died too, the next --docker run on this host sweeps whatever
 *    an owner that is no longer alive left.
 *
 * Status convention: set-up returns 0 or 2 after printing one line.
 * Ownership: the caller owns the tg_docker_t; its handles are on the loop
 * given to setup and are closed by teardown.
 */
#ifndef TG_DOCKER_H
#define TG_DOCKER_H

#include <uv.h>

#include "tg_text.h"

#define TG_DOCKER_REAPER_CMD "_docker-reaper"   /* tgrun's hidden subcommand */

typedef void (*tg_docker_done_fn)(void *data);

typedef struct tg_docker {
    uv_loop_t *loop;
    char run_id[64];
    char image[512];
    char net[160];              /* the run's network */
    char subnet[64], gateway[64];
    char owner[320];            /* tgrun.owner label value */
    char plandir[4096], planfile[1024];
    char tmpdir[4096];
    char user[64];              /* --user UID:GID, or "" (root: the image's own user) */
    int net_made;
    uv_process_t reaper;
    uv_pipe_t reaper_pipe;
    int reaper_on;              /* its handles are open */
    uv_process_t rm;            /* an asynchronous `docker rm -f` */
    int rm_on;
    tg_docker_done_fn rm_done;
    void *rm_data;
    tg_strv_t warned;           /* docker CLI warnings already printed */
} tg_docker_t;

/* Engine, image, sweep, network, reaper.  image NULL: tgrun's own; exe:
 * this binary; tmpdir: the run's temp folder (the reaper removes it);
 * subnet: the network's (NULL: Docker picks one from its address pools).
 * 0, or 2 after printing one line. */
int tg_docker_setup(tg_docker_t *d, uv_loop_t *loop, const char *run_id, const char *image,
                    const char *plan_path, const char *exe, const char *tmpdir, const char *subnet);

/* The container's name for instance index of group ("tgrun-<run>-<group>-<index>"). */
void tg_docker_container_name(const tg_docker_t *d, const char *group, int index, char *buf, size_t len);

/* Append to argv the `docker run` of one instance: env holds its
 * NAME=VALUE variables, timeout and redis_url go to its tgrun.  outdir is
 * its outputs folder on this host (made writable for the image's user).
 * 0 or a negative errno. */
int tg_docker_run_argv(tg_docker_t *d, const char *group, int index, const char *label, const char *outdir,
                       const tg_strv_t *env, const char *timeout, const char *redis_url, tg_strv_t *argv);

/* Start `docker rm -f -v NAMES...` without waiting; done(data) runs when it
 * ended.  0, or -1 (nothing started, done will not run). */
int tg_docker_rm_start(tg_docker_t *d, const tg_strv_t *names, tg_docker_done_fn done, void *data);
/* Kill that `docker rm` if it still runs (its done still comes). */
void tg_docker_rm_stop(tg_docker_t *d);

/* Is this stderr line the docker client's own "WARNING: ..."?  The first
 * time a warning is seen it is printed once for the run; returns 1 for a
 * warning (the caller drops the line), else 0. */
int tg_docker_cli_warning(tg_docker_t *d, const char *line, size_t len);

/* Hand the run's outputs folder back to the user who ran tgrun (the
 * containers wrote as the image's user). */
void tg_docker_own_outputs(const tg_docker_t *d, const char *dir);

/* Remove every container and the network of the run (by label), check that
 * nothing of it is left, and dismiss the reaper.  Safe after a failed
 * set-up.  0, or -1 after printing what is left. */
int tg_docker_teardown(tg_docker_t *d);

/* `tgrun _docker-reaper RUN_ID TMPDIR`: wait for tgrun's pipe on stdin to
 * close; unless tgrun said "done", remove what the run left.  Exit status. */
int tg_docker_reaper_main(int argc, char **argv);

#endif
