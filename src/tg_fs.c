/*
 * tg_fs.c -- see tg_fs.h.
 */
#define _XOPEN_SOURCE 700
#include "tg_fs.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

void tg_rm_tree(const char *path, const char *marker) {
    if (path && *path && marker && strstr(path, marker)) nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* mkdir, where an existing directory is fine and anything else there is not. */
static int mkdir_one(const char *path) {
    struct stat st;
    if (mkdir(path, 0755) == 0) return 0;
    if (errno != EEXIST) return -1;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    errno = ENOTDIR;
    return -1;
}

/* Only a missing parent walks up. */
static int mkdir_p(char *buf) {
    if (mkdir(buf, 0755) == 0) return 0;
    if (errno == ENOENT) {
        char *slash = strrchr(buf, '/');
        if (!slash || slash == buf) return mkdir_one(buf);
        *slash = '\0';
        int rc = mkdir_p(buf);
        *slash = '/';
        if (rc < 0) return -1;
    }
    return mkdir_one(buf);
}

int tg_mkdir_p(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = '\0';
    return mkdir_p(buf);
}
