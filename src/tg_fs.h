/*
 * tg_fs.h -- folders: make one with its parents, remove a temporary tree.
 * The one place that does either, for the runners, the server, the docker
 * launcher and an instance's lazily made temp folder.  No libuv, no Lua.
 */
#ifndef TG_FS_H
#define TG_FS_H

/* mkdir -p: 0, or -1 with errno (ENOTDIR: something else is in the way;
 * ENAMETOOLONG).  An existing folder is fine.  The usual case -- the
 * parent exists -- is one system call. */
int tg_mkdir_p(const char *path);

/* Remove the tree at path (files, folders, depth first), but only when
 * path contains marker (e.g. "/tgrun-"): a guard against removing a folder
 * that tgrun did not make. */
void tg_rm_tree(const char *path, const char *marker);

#endif
