/* tg_local.c -- the local runner (tgrun -n N). */
#include "tg_main.h"

int tg_local_run(tg_opts_t *o, const char *argv0) {
    (void)o; (void)argv0;
    return tg_usage_error("-n is not available yet");
}
