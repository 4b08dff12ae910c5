/*
 * tg_addr.h -- where Redis is: URLs (--redis), REDIS_HOST/REDIS_PORT, and
 * their printable form.  Strict parsers: on failure -1, the output left
 * alone, and one sentence in err that quotes the input with any password
 * shown as ***.  Pure libc.
 */
#ifndef TG_ADDR_H
#define TG_ADDR_H

#include <stddef.h>

typedef struct tg_redis_addr {
    int is_unix;            /* 1: path is a unix socket */
    char host[256];         /* without IPv6 brackets */
    int port;               /* default 6379 */
    char path[108];
    char password[256];     /* "" if none */
    char user[128];         /* "" if none (redis 6 ACL user) */
    int db;                 /* default 0 */
} tg_redis_addr_t;

/* redis://[[user]:password@]host[:port][/db] (host may be [v6]),
 * unix:///path or unix:/path [?db=N&password=P&user=U], or plain host,
 * host:port, [v6]:port.  User/password percent-decoded.  0 or -1. */
int tg_redis_addr_parse(const char *url, tg_redis_addr_t *out, char *err,
                        size_t errlen);
/* REDIS_HOST/REDIS_PORT values; NULL or "" = localhost / 6379.  0 or -1. */
int tg_redis_addr_from_env(const char *host, const char *port,
                           tg_redis_addr_t *out, char *err, size_t errlen);
/* "host:port", "[v6]:port" or "unix:/path", no credentials.  Returns buf. */
const char *tg_redis_addr_str(const tg_redis_addr_t *a, char *buf,
                              size_t len);

/* A URL for a that tg_redis_addr_parse takes back, without the user name
 * and password (they travel apart: REDIS_USERNAME, REDIS_PASSWORD).
 * Writes at most len bytes (NUL-terminated) and returns buf. */
const char *tg_redis_addr_url(const tg_redis_addr_t *a, char *buf, size_t len);

/* Fill in the user name and password from REDIS_USERNAME / REDIS_PASSWORD
 * values (NULL or "": none) where a has none.  0, or -1 when one is too
 * long (err says which; the password is never shown). */
int tg_redis_addr_credentials(tg_redis_addr_t *a, const char *user, const char *password, char *err,
                              size_t errlen);

#endif
