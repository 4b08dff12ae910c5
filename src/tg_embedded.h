/*
 * tg_embedded.h -- the Lua modules (lua/), Redis scripts (scripts/) and
 * other files (assets/: the report's page) that are compiled into the
 * binary by cmake/embed.cmake.  Each table ends with an entry whose name is
 * NULL.  The data is static and never freed.
 */
#ifndef TG_EMBEDDED_H
#define TG_EMBEDDED_H

#include <stddef.h>

typedef struct tg_embedded {
    const char *name;   /* module name ("tg.sync") or script name ("signal") */
    const char *path;   /* source path relative to the repository root */
    const char *data;
    size_t len;
} tg_embedded_t;

extern const tg_embedded_t tg_embedded_lua[];
extern const tg_embedded_t tg_embedded_scripts[];
extern const tg_embedded_t tg_embedded_assets[];

#endif
