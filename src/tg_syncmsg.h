/*
 * tg_syncmsg.h -- the messages of Testground's websocket sync service, as
 * text: parse a request and format a response (tgrun serve), format a
 * request and parse a response (tgrun's client).  Pure: no sockets, no Lua.
 *
 * The protocol (../shared/reference/testground-sync-service.md):
 *
 *   {"id":"1","signal_entry":{"state":K}}
 *   {"id":"2","barrier":{"state":K,"target":N}}
 *   {"id":"3","publish":{"topic":K,"payload":<any JSON>}}
 *   {"id":"4","subscribe":{"topic":K}}
 *   {"id":"4","is_cancel":true}                     stop request 4 (sdk-go)
 *   {"id":"5","count":{"state":K}}                  tgrun's extension: read a
 *                                                   state's count, no entry
 *
 *   {"id":..,"error":"","publish":{"seq":N}|null,"subscribe":"<payload>"|"",
 *    "signal_entry":{"seq":N}|null}                  and "count":N for "count"
 *
 * K is the full key (run:<r>:plan:<p>:case:<c>:states:<s> or :topics:<t> or
 * :run_events); tg_syncmsg_split_key takes it apart.
 *
 * Byte-exact payloads.  A publish's payload is not decoded: the parser
 * validates it (strict RFC 8259) and hands out the exact span of the
 * message that holds it, and a subscribe response carries those bytes as
 * a JSON string, escaped and nothing else -- so a subscriber's
 * JSON.parse(response.subscribe) gives back what the publisher sent, key
 * order, number spelling and all.  (The reference server re-encodes.)
 * Bytes that are not UTF-8 -- possible only in a value written to Redis by
 * a client that does not check -- become U+FFFD, as a text frame needs.
 *
 * Ownership: a parsed message's strings point into its `scratch` (one
 * malloc'd block, freed by tg_syncmsg_free) or, for a payload, into the
 * caller's message; formatting appends to a tg_sbuf_t the caller owns.
 */
#ifndef TG_SYNCMSG_H
#define TG_SYNCMSG_H

#include <stddef.h>

/* What a message asks or answers. */
enum {
    TG_SM_NONE = 0,
    TG_SM_SIGNAL_ENTRY,
    TG_SM_BARRIER,
    TG_SM_PUBLISH,
    TG_SM_SUBSCRIBE,
    TG_SM_COUNT,                /* tgrun's extension */
    TG_SM_CANCEL,               /* is_cancel: true without a body */
};

/* Parse results. */
#define TG_SM_ENOTJSON (-1)     /* not JSON at all: close with 1007 */
#define TG_SM_EBAD (-2)         /* JSON, but not a valid message */

/* A growable byte buffer. */
typedef struct tg_sbuf {
    char *p;
    size_t len, cap;
} tg_sbuf_t;

/* Append n bytes.  0, or -1 when memory ran out (the buffer is unchanged). */
int tg_sbuf_add(tg_sbuf_t *b, const void *s, size_t n);
void tg_sbuf_free(tg_sbuf_t *b);

/* A request or a response (the fields that apply). */
typedef struct tg_syncmsg {
    int kind;                   /* TG_SM_* */
    int has_id;                 /* an id was read (an error answer can name it) */
    const char *id;
    size_t idlen;
    const char *key;            /* state or topic key (requests) */
    size_t klen;
    long long target;           /* barrier target */
    long long seq;              /* publish/signal_entry seq; count (responses) */
    const char *payload;        /* publish: the payload's exact bytes in the message;
                                   subscribe response: the decoded payload text */
    size_t plen;
    const char *error;          /* responses; "" when none */
    size_t elen;
    int is_cancel;
    char *scratch;              /* owns the decoded strings */
} tg_syncmsg_t;

/* Parse a client's request.  0 with *m filled; TG_SM_ENOTJSON or
 * TG_SM_EBAD with one sentence in err (m->has_id and m->id tell whether an
 * error response can be addressed).  Call tg_syncmsg_free either way.
 * -3 when memory ran out. */
int tg_syncmsg_parse_request(const char *msg, size_t len, tg_syncmsg_t *m, char *err, size_t errlen);

/* Parse a server's response.  0, TG_SM_ENOTJSON, TG_SM_EBAD or -3, as
 * above.  kind is what the response carries: SIGNAL_ENTRY or PUBLISH (a
 * seq), SUBSCRIBE (a payload), COUNT (a count), or BARRIER (nothing: a
 * released barrier, or only an error). */
int tg_syncmsg_parse_response(const char *msg, size_t len, tg_syncmsg_t *m, char *err, size_t errlen);

void tg_syncmsg_free(tg_syncmsg_t *m);

/* Append the request m (kind, id, key, target, payload) to b.  0 or -1. */
int tg_syncmsg_format_request(tg_sbuf_t *b, const tg_syncmsg_t *m);

/* Append a response to request id: kind says which field is filled (seq,
 * payload, or count; BARRIER: none); error (may be NULL) makes it an error
 * response.  0 or -1. */
int tg_syncmsg_format_response(tg_sbuf_t *b, const char *id, size_t idlen, int kind, long long seq,
                               const char *payload, size_t plen, const char *error);

/* Append len bytes as a JSON string (quotes included).  0 or -1. */
int tg_syncmsg_add_string(tg_sbuf_t *b, const char *s, size_t len);

/* Take a full key apart: P = run:<r>:plan:<p>:case:<c> (*plen bytes), then
 * ":states:<name>", ":topics:<name>" or ":run_events"; *kind is
 * TG_SM_KEY_STATE, _TOPIC or _EVENTS and *noff where the name starts.
 * 0, or -1 when the key is not of that shape. */
enum { TG_SM_KEY_STATE = 1, TG_SM_KEY_TOPIC, TG_SM_KEY_EVENTS };
int tg_syncmsg_split_key(const char *key, size_t klen, size_t *plen, int *kind, size_t *noff);

/* Is s[0..len) one complete, strict JSON value (surrounding whitespace
 * allowed)?  1 or 0. */
int tg_syncmsg_is_json(const char *s, size_t len);

#endif
