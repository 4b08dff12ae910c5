/*
 * tg_redis.c -- hiredis on libuv, commands and scripts for tasks, the
 * blocking stream reader, pushed barriers and subscriptions.  The overview is
 * in tg_redis.h; the key layout and the wake-up protocol in docs/design.md.
 */
#include "tg_redis.h"

#include <stdlib.h>
#include <string.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <lauxlib.h>

#include "tg_embedded.h"
#include "tg_json.h"
#include "tg_map.h"
#include "tg_reply.h"
#include "tg_sha1.h"

#define XREAD_BLOCK_MS "1000"
#define XREAD_COUNT "1000"

#include "tg_redis_int.h"

static void issue_xread(tg_redis_t *r);
void tg_redis_lost(tg_redis_t *r, const char *why);

/* ---- the libuv adapter ------------------------------------------------- */

/* hiredis calls these through ac->ev.  The poll handle outlives the context:
 * cleanup() clears a->ac and closes the handle, whose close callback frees it. */
typedef struct adapter {
    uv_poll_t poll;
    redisAsyncContext *ac;
    int events;
} adapter_t;

static void on_poll(uv_poll_t *h, int status, int events) {
    adapter_t *a = h->data;
    if (!a->ac) return;
    /* On a poll error hiredis must still look at the socket, or a failed
     * connect would leave its callbacks pending forever (the 0.14 bug). */
    if (status < 0) events = a->events ? a->events : UV_READABLE;
    if ((events & UV_READABLE) && a->ac) redisAsyncHandleRead(a->ac);
    if ((events & UV_WRITABLE) && a->ac) redisAsyncHandleWrite(a->ac);
}

static void update(adapter_t *a, int add, int ev) {
    int events = add ? (a->events | ev) : (a->events & ~ev);
    if (events == a->events) return;
    a->events = events;
    if (events) uv_poll_start(&a->poll, events, on_poll);
    else uv_poll_stop(&a->poll);
}

static void add_read(void *p)  { update(p, 1, UV_READABLE); }
static void del_read(void *p)  { update(p, 0, UV_READABLE); }
static void add_write(void *p) { update(p, 1, UV_WRITABLE); }
static void del_write(void *p) { update(p, 0, UV_WRITABLE); }

static void adapter_free(uv_handle_t *h) {
    free(h->data);
}

static void cleanup(void *p) {
    adapter_t *a = p;
    a->ac = NULL;
    uv_poll_stop(&a->poll);
    uv_close((uv_handle_t *)&a->poll, adapter_free);
}

static int attach(uv_loop_t *loop, redisAsyncContext *ac) {
    adapter_t *a = calloc(1, sizeof *a);
    if (!a) return -1;
    if (uv_poll_init_socket(loop, &a->poll, ac->c.fd) != 0) {
        free(a);
        return -1;
    }
    a->poll.data = a;
    a->ac = ac;
    ac->ev.data = a;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    return 0;
}

/* ---- connections ------------------------------------------------------- */

static void startup_fail(tg_redis_t *r, const char *fmt, const char *detail) {
    if (r->startup_failed) return;
    r->startup_failed = 1;
    if (r->startup_err)
        snprintf(r->startup_err, r->startup_errlen, fmt, r->addr, detail);
}

static void on_connect(const redisAsyncContext *ac, int status) {
    conn_t *c = ac->data;
    if (status != REDIS_OK) {
        c->ac = NULL;           /* hiredis frees the context after this callback */
        startup_fail(c->r, "cannot connect to Redis at %s: %s", ac->errstr);
        tg_redis_lost(c->r, ac->errstr);
        return;
    }
    c->connected = 1;
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    conn_t *c = ac->data;
    c->ac = NULL;
    c->connected = 0;
    if (status != REDIS_OK || !c->r->rt->closing) {
        char why[200];
        snprintf(why, sizeof why, "%s connection closed%s%s", c->name,
                 ac->errstr[0] ? ": " : "", ac->errstr);
        tg_redis_lost(c->r, why);
    }
}

static int conn_open(tg_redis_t *r, conn_t *c, const tg_redis_addr_t *a, const char *name) {
    c->r = r;
    c->name = name;
    c->ac = a->is_unix ? redisAsyncConnectUnix(a->path) : redisAsyncConnect(a->host, a->port);
    if (!c->ac) return -1;
    if (c->ac->err) {
        startup_fail(r, "cannot connect to Redis at %s: %s", c->ac->errstr);
        redisAsyncFree(c->ac);
        c->ac = NULL;
        return -1;
    }
    c->ac->data = c;
    if (attach(r->rt->loop, c->ac) < 0) {
        redisAsyncFree(c->ac);
        c->ac = NULL;
        return -1;
    }
    redisAsyncSetConnectCallback(c->ac, on_connect);
    redisAsyncSetDisconnectCallback(c->ac, on_disconnect);
    return 0;
}

/* Every pending wait that needs Redis fails with "closed"; later calls too. */
void tg_redis_lost(tg_redis_t *r, const char *why) {
    if (r->down) return;
    r->down = 1;
    snprintf(r->down_msg, sizeof r->down_msg, "lost the connection to Redis at %s (%s)",
             r->addr, why);
    uv_timer_stop(&r->safety);
    uv_timer_stop(&r->retry);
    uv_timer_stop(&r->reissue);
    if (r->session_timer_on) uv_timer_stop(&r->session_timer);
    size_t b;
    for (tg_map_ent_t *e = tg_map_next(&r->barriers, NULL, &b); e; e = tg_map_next(&r->barriers, e, &b)) {
        blist_t *l = e->value;
        while (l->head) {
            bwaiter_t *w = l->head;
            if (w->task->state == TG_TASK_WAITING && w->task->abort_data == w)
                tg_wait_abort(w->task, TG_ABORT_CLOSED);
            else tg_barrier_unlink(w);
        }
    }
    for (tg_map_ent_t *e = tg_map_next(&r->streams, NULL, &b); e; e = tg_map_next(&r->streams, e, &b)) {
        stream_t *s = e->value;
        for (sub_t *u = s->subs; u; u = u->next)
            if (u->task) tg_wait_abort(u->task, TG_ABORT_CLOSED);
    }
    tg_coord_lost(r);
    /* The other connection would only carry errors from here on. */
    if (r->cmd.ac) redisAsyncDisconnect(r->cmd.ac);
    if (r->blk.ac) redisAsyncDisconnect(r->blk.ac);
}

/* ---- startup ----------------------------------------------------------- */

static void on_startup_reply(redisAsyncContext *ac, void *reply, void *priv) {
    conn_t *c = ac->data;
    tg_redis_t *r = c->r;
    redisReply *rep = reply;
    const char *step = priv;
    r->startup_pending--;
    if (!rep) {
        startup_fail(r, "cannot connect to Redis at %s: %s",
                     ac->errstr[0] ? ac->errstr : "connection closed");
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        char detail[300];
        snprintf(detail, sizeof detail, "%s failed: %s", step, rep->str);
        startup_fail(r, "Redis at %s refused the session: %s", detail);
        return;
    }
    if (strcmp(step, "CLIENT ID") == 0 && rep->type == REDIS_REPLY_INTEGER)
        r->blk_id = rep->integer;
    if (strcmp(step, "SCARD") == 0 && rep->type == REDIS_REPLY_INTEGER)
        r->ndead = rep->integer;
    if (strcmp(step, "XREVRANGE") == 0 && rep->type == REDIS_REPLY_ARRAY && rep->elements) {
        redisReply *ent = rep->element[0];
        stream_t *s = NULL;
        size_t b;
        for (tg_map_ent_t *e = tg_map_next(&r->streams, NULL, &b); e; e = tg_map_next(&r->streams, e, &b))
            if (((stream_t *)e->value)->is_notify) s = e->value;
        if (s && ent->type == REDIS_REPLY_ARRAY && ent->elements >= 1)
            snprintf(s->last_id, sizeof s->last_id, "%s", ent->element[0]->str);
    }
}

static void startup_cmd(tg_redis_t *r, conn_t *c, const char *step, int argc, const char **argv) {
    if (!c->ac) return;
    if (redisAsyncCommandArgv(c->ac, on_startup_reply, (void *)step, argc, argv, NULL) == REDIS_OK)
        r->startup_pending++;
}

static void auth_select(tg_redis_t *r, conn_t *c, const tg_redis_addr_t *a) {
    char db[16];
    if (a->password[0]) {
        if (a->user[0]) startup_cmd(r, c, "AUTH", 3, (const char *[]){"AUTH", a->user, a->password});
        else startup_cmd(r, c, "AUTH", 2, (const char *[]){"AUTH", a->password});
    }
    if (a->db) {
        snprintf(db, sizeof db, "%d", a->db);
        startup_cmd(r, c, "SELECT", 2, (const char *[]){"SELECT", db});
    }
}

static stream_t *stream_add(tg_redis_t *r, const char *key, size_t klen, const char *from) {
    stream_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->key = malloc(klen + 1);
    if (!s->key || tg_map_set(&r->streams, key, klen, s) < 0) {
        free(s->key);
        free(s);
        return NULL;
    }
    memcpy(s->key, key, klen);
    s->key[klen] = '\0';
    s->klen = klen;
    snprintf(s->last_id, sizeof s->last_id, "%s", from);
    s->gen = ++r->watch_gen;
    return s;
}

static void stream_free(tg_redis_t *r, stream_t *s) {
    tg_map_del(&r->streams, s->key, s->klen);
    for (size_t i = 0; i < s->nlog; i++) free(s->log[i]);
    free(s->log);
    free(s->key);
    free(s);
}


static void on_tick(uv_timer_t *h) {
    (void)h;                    /* only bounds one turn of the startup loop */
}

void tg_random_id(char *buf, size_t len);

static void flush(tg_rt_t *rt) {
    tg_redis_t *r = rt->redis;
    if (r && !r->down && r->cmd.ac && r->cmd.connected) redisAsyncHandleWrite(r->cmd.ac);
}

int tg_redis_open(tg_rt_t *rt, const tg_redis_addr_t *addr, const char *prefix,
                  double timeout, char *err, size_t errlen) {
    tg_redis_t *r = calloc(1, sizeof *r);
    if (!r) { snprintf(err, errlen, "out of memory"); return -1; }
    r->rt = rt;
    rt->redis = r;
    r->startup_err = err;
    r->startup_errlen = errlen;
    tg_redis_addr_str(addr, r->addr, sizeof r->addr);
    uv_timer_init(rt->loop, &r->safety);
    uv_timer_init(rt->loop, &r->retry);
    uv_timer_init(rt->loop, &r->reissue);
    r->safety.data = r->retry.data = r->reissue.data = r;

    for (int i = 0; tg_embedded_scripts[i].name && i < MAX_SCRIPTS; i++, r->nscripts++)
        tg_sha1_hex(tg_embedded_scripts[i].data, tg_embedded_scripts[i].len, r->sha[i]);

    if (conn_open(r, &r->cmd, addr, "command") < 0 || conn_open(r, &r->blk, addr, "blocking") < 0) {
        startup_fail(r, "cannot connect to Redis at %s: %s", "out of memory");
        return -1;
    }
    auth_select(r, &r->cmd, addr);
    auth_select(r, &r->blk, addr);
    startup_cmd(r, &r->cmd, "CLIENT SETNAME", 3, (const char *[]){"CLIENT", "SETNAME", "tgrun-cmd"});
    startup_cmd(r, &r->blk, "CLIENT SETNAME", 3, (const char *[]){"CLIENT", "SETNAME", "tgrun-blk"});
    startup_cmd(r, &r->blk, "CLIENT ID", 2, (const char *[]){"CLIENT", "ID"});
    if (prefix) {
        char notify_key[600];
        tg_random_id(r->proc_id, sizeof r->proc_id);
        snprintf(r->prefix, sizeof r->prefix, "%s", prefix);
        snprintf(notify_key, sizeof notify_key, "%s:tg:notify", r->prefix);
        snprintf(r->inbox, sizeof r->inbox, "%s:tg:inbox:%s", r->prefix, r->proc_id);
        stream_t *s = stream_add(r, notify_key, strlen(notify_key), "0-0");
        if (s) s->is_notify = 1;
        if ((s = stream_add(r, r->inbox, strlen(r->inbox), "0-0"))) s->is_inbox = 1;
        startup_cmd(r, &r->cmd, "XREVRANGE", 6,
                    (const char *[]){"XREVRANGE", notify_key, "+", "-", "COUNT", "1"});
        /* peers that died before this process started reading the notify
         * stream: barriers check whether they can still complete */
        char dead_key[600];
        snprintf(dead_key, sizeof dead_key, "%s:tg:dead", r->prefix);
        startup_cmd(r, &r->cmd, "SCARD", 2, (const char *[]){"SCARD", dead_key});
    }

    double end = tg_rt_now() + timeout;
    uv_timer_init(rt->loop, &r->tick);
    while (r->startup_pending > 0 && !r->startup_failed && !r->down) {
        if (tg_rt_now() > end) {
            char d[64];
            snprintf(d, sizeof d, "no answer within %g s", timeout);
            startup_fail(r, "cannot connect to Redis at %s: %s", d);
            break;
        }
        uv_timer_start(&r->tick, on_tick, 50, 0);
        uv_run(rt->loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&r->tick);
    if (r->down && !r->startup_failed) startup_fail(r, "cannot connect to Redis at %s: %s", r->down_msg);
    r->startup_err = NULL;
    if (r->startup_failed) return -1;
    uv_timer_start(&r->safety, tg_barrier_on_safety, SAFETY_MS, SAFETY_MS);
    rt->flush = flush;
    issue_xread(r);
    return 0;
}

void tg_redis_close(tg_rt_t *rt) {
    tg_redis_t *r = rt->redis;
    if (!r) return;
    rt->flush = NULL;
    r->down = 1;
    snprintf(r->down_msg, sizeof r->down_msg, "the runtime is shutting down");
    if (r->cmd.ac) redisAsyncFree(r->cmd.ac);
    if (r->blk.ac) redisAsyncFree(r->blk.ac);
    size_t b;
    tg_map_ent_t *e;
    while ((e = tg_map_next(&r->streams, NULL, &b))) {
        stream_t *s = e->value;
        for (sub_t *u = s->subs; u; u = u->next) u->stream = NULL;
        stream_free(r, s);
    }
    while ((e = tg_map_next(&r->barriers, NULL, &b))) free(tg_map_del(&r->barriers, e->key, e->klen));
    tg_map_free(&r->streams);
    tg_map_free(&r->barriers);
    tg_coord_free(r);
    uv_close((uv_handle_t *)&r->safety, NULL);
    uv_close((uv_handle_t *)&r->retry, NULL);
    uv_close((uv_handle_t *)&r->reissue, NULL);
    uv_close((uv_handle_t *)&r->tick, NULL);
    tg_session_free(r);
    /* The timers are inside r: run the loop so their close callbacks are done. */
    uv_run(rt->loop, UV_RUN_NOWAIT);
    rt->redis = NULL;
    free(r);
}

const tg_redis_stats_t *tg_redis_stats(const tg_rt_t *rt) {
    return &rt->redis->stats;
}

/* ---- commands for tasks ------------------------------------------------ */

void tg_redis_req_free(req_t *q) {
    tg_task_unref(q->task);
    free(q);                    /* its argv, if kept, is in the same block */
}

tg_redis_t *tg_redis_of(lua_State *L) {
    tg_redis_t *r = tg_ctx(L)->inst->rt->redis;
    if (!r) tg_err_raise(L, "closed", "not connected to Redis");
    return r;
}

int tg_redis_check_up(lua_State *L, tg_redis_t *r, const char *what) {
    if (r->down) return tg_err_raise(L, "closed", "%s: %s", what, r->down_msg);
    return 0;
}


/* Results of a command or script for the task that waits for them. */
void tg_redis_on_reply(redisAsyncContext *ac, void *reply, void *priv) {
    (void)ac;
    req_t *q = priv;
    redisReply *rep = reply;
    tg_redis_t *r = q->r;
    if (rep && rep->type == REDIS_REPLY_ERROR && q->argv && !q->retried
        && strncmp(rep->str, "NOSCRIPT", 8) == 0 && r->cmd.ac && !r->down) {
        /* The server lost its script cache (restart, SCRIPT FLUSH): send the
         * body once; EVAL caches it again for the next EVALSHA. */
        const tg_embedded_t *sc = &tg_embedded_scripts[q->script];
        const char *argv[MAX_ARGS];
        size_t lens[MAX_ARGS];
        argv[0] = "EVAL"; lens[0] = 4;
        argv[1] = sc->data; lens[1] = sc->len;
        for (int i = 2; i < q->argc; i++) { argv[i] = q->argv[i]; lens[i] = q->lens[i]; }
        q->retried = 1;
        if (redisAsyncCommandArgv(r->cmd.ac, tg_redis_on_reply, q, q->argc, argv, lens) == REDIS_OK) return;
    }
    if (q->kind == REQ_TICKET) {
        tg_coord_on_reply(q, rep);
        tg_redis_req_free(q);
        return;
    }
    if (q->kind == REQ_BARRIER) {
        tg_barrier_on_reply(r, q, rep);
        tg_redis_req_free(q);
        return;
    }
    lua_State *co = tg_wait_target(q->task, q->token);
    if (co) {
        if (!rep) {
            tg_wait_abort(q->task, TG_ABORT_CLOSED);
        } else if (rep->type == REDIS_REPLY_ERROR) {
            tg_wait_fail(q->task, "redis", "%s: Redis replied: %s", q->task->what, rep->str);
        } else if (tg_reply_push(co, rep) < 0) {
            tg_wait_fail(q->task, "redis", "%s: reply too deep or too large", q->task->what);
        } else {
            tg_wait_done(q->task, 1, 1);
        }
    }
    tg_redis_req_free(q);
}

/* Collect the strings of table idx into argv/lens (pointers into Lua strings
 * that stay on the stack).  Numbers are converted in place. */
int tg_redis_table_args(lua_State *L, int idx, const char **argv, size_t *lens, int at, int max) {
    int n = (int)luaL_len(L, idx);
    luaL_checkstack(L, n + 8, "too many arguments");
    if (at + n > max) return tg_err_raise(L, "invalid", "too many arguments (%d)", at + n);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
            return tg_err_raise(L, "invalid", "argument %d is a %s, not a string or number",
                                i, luaL_typename(L, -1));
        argv[at] = lua_tolstring(L, -1, &lens[at]);   /* stays on the stack */
        at++;
    }
    return at;
}

/* Send argv for the wait that task t has begun; the reply completes it.
 * keep: copy argv so that a NOSCRIPT reply can resend it.  0, or -1 (out of
 * memory, or the connection is closing) with the wait still pending. */
int tg_redis_send_for(tg_redis_t *r, tg_task_t *t, int kind, int script, int argc,
                    const char **argv, size_t *lens, int keep) {
    if (r->down || !r->cmd.ac) return -1;
    /* One block: the request, then (keep) the argument pointers, lengths and
     * bytes -- one allocation per request on the hot path of every barrier. */
    size_t extra = 0;
    if (keep) {
        extra = (size_t)argc * (sizeof(char *) + sizeof(size_t));
        for (int i = 0; i < argc; i++) extra += lens[i] + 1;
    }
    req_t *q = calloc(1, sizeof *q + extra);
    if (!q) return -1;
    q->r = r;
    q->kind = kind;
    q->script = script;
    q->task = t;
    q->token = t->token;
    t->refs++;
    if (keep) {
        q->argc = argc;
        q->argv = (char **)(q + 1);
        q->lens = (size_t *)(q->argv + argc);
        char *d = (char *)(q->lens + argc);
        for (int i = 0; i < argc; i++) {
            q->argv[i] = d;
            memcpy(d, argv[i], lens[i]);
            d[lens[i]] = '\0';
            q->lens[i] = lens[i];
            d += lens[i] + 1;
        }
    }
    r->stats.commands++;
    if (redisAsyncCommandArgv(r->cmd.ac, tg_redis_on_reply, q, argc, argv, lens) != REDIS_OK) {
        tg_redis_req_free(q);
        return -1;
    }
    return 0;
}

/* Begin the running task's wait (may raise; nothing is allocated before)
 * and send argv for it.  The caller returns tg_wait_yield(L). */
static void start_req(lua_State *L, tg_redis_t *r, int kind, int script, int argc,
                      const char **argv, size_t *lens, int keep, double timeout,
                      const char *what) {
    tg_redis_check_up(L, r, what);
    tg_task_t *t = tg_wait_begin(L, timeout, what);
    if (tg_redis_send_for(r, t, kind, script, argc, argv, lens, keep) < 0)
        tg_wait_fail(t, "closed", "%s: %s", what, r->down ? r->down_msg : "could not send the command");
}

/* core.call({cmd, arg...} [, timeout [, what]]) -> reply.  Yields. */
static int l_call(lua_State *L) {
    tg_redis_t *r = tg_redis_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    double timeout = luaL_optnumber(L, 2, -1);
    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    lua_settop(L, 3);
    int argc = tg_redis_table_args(L, 1, argv, lens, 0, MAX_ARGS);
    if (argc == 0) return tg_err_raise(L, "invalid", "empty Redis command");
    char what[96];
    snprintf(what, sizeof what, "Redis %s", luaL_optstring(L, 3, argv[0]));
    start_req(L, r, REQ_CALL, 0, argc, argv, lens, 0, timeout, what);
    return tg_wait_yield(L);
}

int tg_redis_script_index(lua_State *L, const char *name) {
    for (int i = 0; tg_embedded_scripts[i].name; i++)
        if (strcmp(tg_embedded_scripts[i].name, name) == 0) return i;
    return tg_err_raise(L, "invalid", "no server-side script named '%s'", name);
}

/* Build EVALSHA sha nkeys keys... args... from tables at kidx and aidx. */
int tg_redis_script_argv(lua_State *L, tg_redis_t *r, int si, int kidx, int aidx,
                       const char **argv, size_t *lens, char *nkeys) {
    argv[0] = "EVALSHA"; lens[0] = 7;
    argv[1] = r->sha[si]; lens[1] = 40;
    int nk = (int)luaL_len(L, kidx);
    snprintf(nkeys, 16, "%d", nk);
    argv[2] = nkeys; lens[2] = strlen(nkeys);
    int argc = tg_redis_table_args(L, kidx, argv, lens, 3, MAX_ARGS);
    return tg_redis_table_args(L, aidx, argv, lens, argc, MAX_ARGS);
}

/* core.script(name, {keys}, {args} [, timeout [, what]]) -> reply.  Yields. */
static int l_script(lua_State *L) {
    tg_redis_t *r = tg_redis_of(L);
    int si = tg_redis_script_index(L, luaL_checkstring(L, 1));
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    double timeout = luaL_optnumber(L, 4, -1);
    lua_settop(L, 5);
    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    char nkeys[16];
    int argc = tg_redis_script_argv(L, r, si, 2, 3, argv, lens, nkeys);
    char what[128];
    snprintf(what, sizeof what, "%s", luaL_optstring(L, 5, tg_embedded_scripts[si].name));
    start_req(L, r, REQ_SCRIPT, si, argc, argv, lens, 1, timeout, what);
    return tg_wait_yield(L);
}

/* core.redis_down() -> nil | message */
static int l_redis_down(lua_State *L) {
    tg_redis_t *r = tg_ctx(L)->inst->rt->redis;
    if (r && r->down) lua_pushstring(L, r->down_msg);
    else lua_pushnil(L);
    return 1;
}

/* core.redis_stats() -> {commands=, xreads=, unblocks=, notifies=, safety_checks=} */
static int l_redis_stats(lua_State *L) {
    tg_redis_t *r = tg_redis_of(L);
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, (lua_Integer)r->stats.commands); lua_setfield(L, -2, "commands");
    lua_pushinteger(L, (lua_Integer)r->stats.xreads); lua_setfield(L, -2, "xreads");
    lua_pushinteger(L, (lua_Integer)r->stats.unblocks); lua_setfield(L, -2, "unblocks");
    lua_pushinteger(L, (lua_Integer)r->stats.notifies); lua_setfield(L, -2, "notifies");
    lua_pushinteger(L, (lua_Integer)r->stats.safety_checks); lua_setfield(L, -2, "safety_checks");
    return 1;
}

/* ---- the stream reader ------------------------------------------------- */

static void deliver(tg_redis_t *r, stream_t *s);

static void on_unblock(redisAsyncContext *ac, void *reply, void *priv);

static void on_retry(uv_timer_t *h) {
    tg_redis_t *r = h->data;
    if (r->down || !r->cmd.ac || !r->xread_inflight || r->xread_gen == r->watch_gen) return;
    r->unblock_pending = 1;
    char id[32];
    snprintf(id, sizeof id, "%lld", r->blk_id);
    r->stats.unblocks++;
    if (redisAsyncCommandArgv(r->cmd.ac, on_unblock, r, 3,
                              (const char *[]){"CLIENT", "UNBLOCK", id}, NULL) != REDIS_OK)
        r->unblock_pending = 0;
}

static void on_unblock(redisAsyncContext *ac, void *reply, void *priv) {
    (void)ac;
    tg_redis_t *r = priv;
    redisReply *rep = reply;
    r->unblock_pending = 0;
    if (!rep || r->down) return;
    /* 0: the read was not blocked yet (it is still on its way) -- try again
     * shortly; the read's own BLOCK timeout bounds this anyway. */
    if (rep->type == REDIS_REPLY_INTEGER && rep->integer == 0 && r->xread_inflight
        && r->xread_gen != r->watch_gen && r->unblock_retries++ < 200)
        uv_timer_start(&r->retry, on_retry, 2, 0);
}

/* The watch set changed: make the blocked read start over with it. */
static void watch_changed(tg_redis_t *r) {
    if (!r->xread_inflight) { issue_xread(r); return; }
    if (r->unblock_pending) return;
    r->unblock_retries = 0;
    on_retry(&r->retry);
}

static void on_reissue(uv_timer_t *h) {
    issue_xread(h->data);
}

static void on_xread(redisAsyncContext *ac, void *reply, void *priv) {
    uint64_t gen = (uint64_t)(uintptr_t)priv;
    tg_redis_t *r = ac->data ? ((conn_t *)ac->data)->r : NULL;
    redisReply *rep = reply;
    if (!r) return;
    r->xread_inflight = 0;
    if (!rep || r->down) return;
    if (rep->type == REDIS_REPLY_ERROR) {
        /* Say so to every reader that waits, then go on with the rest. */
        size_t b;
        for (tg_map_ent_t *e = tg_map_next(&r->streams, NULL, &b); e; e = tg_map_next(&r->streams, e, &b))
            for (sub_t *u = ((stream_t *)e->value)->subs; u; u = u->next)
                if (u->task && tg_wait_target(u->task, u->token)) {
                    tg_task_t *t = u->task;
                    u->task = NULL;
                    tg_wait_fail(t, "redis", "subscription to topic '%s': Redis replied: %s", u->topic, rep->str);
                }
        uv_timer_start(&r->reissue, on_reissue, 100, 0);
        return;
    }
    if (rep->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < rep->elements; i++) {
            redisReply *sr = rep->element[i];
            if (sr->type != REDIS_REPLY_ARRAY || sr->elements != 2) continue;
            stream_t *s = tg_map_get(&r->streams, sr->element[0]->str, sr->element[0]->len);
            redisReply *ents = sr->element[1];
            /* A stream dropped and watched anew since this read was sent
             * starts over from its first entry: skip this read's part. */
            if (!s || s->gen > gen || ents->type != REDIS_REPLY_ARRAY) continue;
            for (size_t j = 0; j < ents->elements; j++) {
                redisReply *ent = ents->element[j];
                if (ent->type != REDIS_REPLY_ARRAY || ent->elements != 2) continue;
                snprintf(s->last_id, sizeof s->last_id, "%s", ent->element[0]->str);
                redisReply *f = ent->element[1];
                /* one-letter fields: p payload; s state key, n count, d dead
                 * peer (notify); w ticket, v value, x resource, t kind (inbox) */
                const char *fv_[26] = {0};
                size_t fl_[26] = {0};
                for (size_t k = 0; f->type == REDIS_REPLY_ARRAY && k + 1 < f->elements; k += 2) {
                    redisReply *fk = f->element[k], *fv = f->element[k + 1];
                    if (fk->len == 1 && fk->str[0] >= 'a' && fk->str[0] <= 'z'
                        && fv->type == REDIS_REPLY_STRING) {
                        fv_[fk->str[0] - 'a'] = fv->str;
                        fl_[fk->str[0] - 'a'] = fv->len;
                    }
                }
#define F(c) fv_[(c) - 'a'], fl_[(c) - 'a']
                if (s->is_notify) {
                    r->stats.notifies++;
                    if (fv_['s' - 'a'] && fv_['n' - 'a'])
                        tg_barrier_count(r, F('s'), strtoll(fv_['n' - 'a'], NULL, 10));
                    if (fv_['d' - 'a']) tg_barrier_dead(r, F('d'));
                    continue;
                }
                if (s->is_inbox) {
                    if (fv_['w' - 'a']) tg_coord_inbox(r, F('w'), F('v'), F('x'), F('t'));
                    continue;
                }
#undef F
                const char *pv = fv_['p' - 'a'];
                size_t plen = fl_['p' - 'a'];
                if (s->nlog == s->cap) {
                    size_t cap = s->cap ? s->cap * 2 : 16;
                    msg_t **log = realloc(s->log, cap * sizeof *log);
                    if (!log) continue;
                    s->log = log;
                    s->cap = cap;
                }
                if (!pv) { pv = "null"; plen = 4; }
                msg_t *m = malloc(sizeof *m + plen + 1);
                if (!m) continue;
                m->seq = (long long)s->nlog + 1;
                m->len = plen;
                memcpy(m->data, pv, plen);
                m->data[plen] = '\0';
                s->log[s->nlog++] = m;
            }
            if (!s->is_notify && !s->is_inbox) deliver(r, s);
        }
    }
    issue_xread(r);
}

static void issue_xread(tg_redis_t *r) {
    if (r->down || !r->blk.ac || r->xread_inflight || r->streams.len == 0) return;
    size_t n = r->streams.len;
    const char **argv = malloc((6 + 2 * n) * sizeof *argv);
    if (!argv) return;
    int argc = 0;
    argv[argc++] = "XREAD";
    argv[argc++] = "COUNT";
    argv[argc++] = XREAD_COUNT;
    argv[argc++] = "BLOCK";
    argv[argc++] = XREAD_BLOCK_MS;
    argv[argc++] = "STREAMS";
    size_t b, i = 0;
    for (tg_map_ent_t *e = tg_map_next(&r->streams, NULL, &b); e; e = tg_map_next(&r->streams, e, &b), i++) {
        stream_t *s = e->value;
        argv[argc + i] = s->key;
        argv[argc + n + i] = s->last_id;
    }
    argc += 2 * (int)n;
    if (redisAsyncCommandArgv(r->blk.ac, on_xread, (void *)(uintptr_t)r->watch_gen,
                              argc, argv, NULL) == REDIS_OK) {
        r->xread_inflight = 1;
        r->xread_gen = r->watch_gen;
        r->stats.xreads++;
    }
    free(argv);
}

/* ---- subscriptions ----------------------------------------------------- */

static int push_msg(lua_State *co, sub_t *u, msg_t *m, char *err, size_t errlen) {
    if (tg_json_decode(co, m->data, m->len) < 0) {
        snprintf(err, errlen, "topic '%s' value %lld is not JSON: %s", u->topic, m->seq, lua_tostring(co, -1));
        lua_pop(co, 1);
        return -1;
    }
    lua_pushinteger(co, m->seq);
    return 0;
}

/* New values arrived on s: hand one to every subscription that waits. */
static void deliver(tg_redis_t *r, stream_t *s) {
    (void)r;
    for (sub_t *u = s->subs; u; u = u->next) {
        if (!u->task || u->pos >= s->nlog) continue;
        tg_task_t *t = u->task;
        u->task = NULL;
        lua_State *co = tg_wait_target(t, u->token);
        if (!co) continue;
        char err[300];
        msg_t *m = s->log[u->pos++];
        if (push_msg(co, u, m, err, sizeof err) < 0) tg_wait_fail(t, "invalid", "%s", err);
        else tg_wait_done(t, 1, 2);
    }
}

static sub_t *check_sub(lua_State *L) {
    return luaL_checkudata(L, 1, SUB_META);
}

static void sub_unlink(sub_t *u) {
    stream_t *s = u->stream;
    if (!s) return;
    if (u->prev) u->prev->next = u->next;
    else s->subs = u->next;
    if (u->next) u->next->prev = u->prev;
    u->stream = NULL;
    if (!s->subs && !s->is_notify && !s->is_inbox) stream_free(u->r, s);  /* the next read leaves it out */
}

static void sub_abort(tg_task_t *t, int why) {
    (void)why;
    sub_t *u = t->abort_data;
    u->task = NULL;
}

/* core.subscribe(key, topic) -> sub.  Does not yield: the first value comes
 * with sub:next(). */
static int l_subscribe(lua_State *L) {
    tg_redis_t *r = tg_redis_of(L);
    size_t klen;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *topic = luaL_checkstring(L, 2);
    tg_redis_check_up(L, r, "subscribe");
    sub_t *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    u->r = r;
    snprintf(u->topic, sizeof u->topic, "%s", topic);
    luaL_setmetatable(L, SUB_META);
    stream_t *s = tg_map_get(&r->streams, key, klen);
    int added = 0;
    if (!s) {
        if (!(s = stream_add(r, key, klen, "0-0"))) return luaL_error(L, "out of memory");
        added = 1;
    }
    u->stream = s;
    u->next = s->subs;
    if (s->subs) s->subs->prev = u;
    s->subs = u;
    if (added) watch_changed(r);
    return 1;
}

/* sub:next([timeout]) -> value, seq.  Yields when no value is buffered. */
static int l_sub_next(lua_State *L) {
    sub_t *u = check_sub(L);
    double timeout = luaL_optnumber(L, 2, -1);
    char what[160];
    snprintf(what, sizeof what, "subscription to topic '%s'", u->topic);
    if (!u->stream) return tg_err_raise(L, "closed", "%s: the subscription is closed", what);
    stream_t *s = u->stream;
    if (u->pos < s->nlog) {
        char err[300];
        if (push_msg(L, u, s->log[u->pos], err, sizeof err) < 0) {
            u->pos++;
            return tg_err_raise(L, "invalid", "%s", err);
        }
        u->pos++;
        return 2;
    }
    tg_redis_check_up(L, u->r, what);
    if (u->task) return tg_err_raise(L, "invalid", "%s: another task is already waiting in next()", what);
    tg_task_t *t = tg_wait_begin(L, timeout, what);
    u->task = t;
    u->token = t->token;
    tg_wait_on_abort(t, sub_abort, u);
    return tg_wait_yield(L);
}

/* sub:close().  A waiting next() ends with "closed". */
static int l_sub_close(lua_State *L) {
    sub_t *u = check_sub(L);
    if (u->task) {
        tg_task_t *t = u->task;
        u->task = NULL;
        if (tg_wait_target(t, u->token))
            tg_wait_fail(t, "closed", "subscription to topic '%s' was closed", u->topic);
    }
    sub_unlink(u);
    return 0;
}

/* sub:buffered() -> number of values read from Redis and not yet taken */
static int l_sub_buffered(lua_State *L) {
    sub_t *u = check_sub(L);
    lua_pushinteger(L, u->stream ? (lua_Integer)(u->stream->nlog - u->pos) : 0);
    return 1;
}

static int l_sub_gc(lua_State *L) {
    sub_t *u = check_sub(L);
    u->task = NULL;
    sub_unlink(u);
    return 0;
}

static const luaL_Reg sub_methods[] = {
    {"next_raw", l_sub_next},
    {"close", l_sub_close},
    {"buffered", l_sub_buffered},
    {NULL, NULL},
};

static const luaL_Reg redis_funcs[] = {
    {"call", l_call},
    {"script", l_script},
    {"subscribe", l_subscribe},
    {"redis_down", l_redis_down},
    {"redis_stats", l_redis_stats},
    {NULL, NULL},
};

void tg_redis_open_lua(lua_State *L) {
    tg_barrier_open_lua(L);
    tg_coord_open_lua(L);
    tg_session_open_lua(L);
    if (luaL_newmetatable(L, SUB_META)) {
        luaL_newlib(L, sub_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_sub_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_setfuncs(L, redis_funcs, 0);
}
