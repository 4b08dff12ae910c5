/*
 * tg_text.h -- small text helpers shared by the pure parsers (tg_params,
 * tg_scalar, tg_addr, tg_rfc3339): ASCII character classes (locale-free on
 * purpose: a plan's parameters must mean the same thing on every machine),
 * trimming, and the quoting of offending input in error messages.
 *
 * Pure libc, no global state.  tg_text_dupn returns malloc'd memory the
 * caller frees; the quoting functions write into the caller's buffer.  A
 * tg_strv_t (an argument or environment vector built piece by piece) owns
 * its strings; tg_strv_free frees them.
 */
#ifndef TG_TEXT_H
#define TG_TEXT_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define TG_QMAX 80              /* input bytes shown in an error message */
#define TG_QBUF (2 + TG_QMAX * 4 + 3 + 1)

static inline int tg_is_digit(int c) { return c >= '0' && c <= '9'; }
static inline int tg_is_alpha(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
static inline int tg_is_alnum(int c) { return tg_is_digit(c) || tg_is_alpha(c); }
static inline int tg_is_space(int c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' ||
           c == '\r';
}
/* A letter, digit, '_', '.' or '-': names of groups and hosts. */
static inline int tg_is_name_char(int c) {
    return tg_is_alnum(c) || c == '_' || c == '.' || c == '-';
}
static inline int tg_lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }
static inline int tg_hexval(int c) {
    if (tg_is_digit(c)) return c - '0';
    c = tg_lower(c);
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

/* Case-insensitive compare of s[0..n) with the NUL-terminated word w. */
int tg_text_eq_ci(const char *s, size_t n, const char *w);
/* Format one sentence into err (when err and errlen are given). */
void tg_text_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Render s[0..n) double-quoted into buf (TG_QBUF bytes): '"' and '\\'
 * escaped, control bytes as \xNN, more than TG_QMAX bytes cut and marked
 * with "...".  Returns buf. */
const char *tg_text_qn(char *buf, const char *s, size_t n);
/* The same for a NUL-terminated string (NULL shows as ""). */
const char *tg_text_q(char *buf, const char *s);
/* Trim ASCII whitespace: *b = first kept byte, *e = one past the last. */
void tg_text_trim(const char *s, const char **b, const char **e);
/* A malloc'd NUL-terminated copy of s[0..n), or NULL. */
char *tg_text_dupn(const char *s, size_t n);

/* A NULL-terminated vector of malloc'd strings (argv, envp); zero it to
 * start.  v[n] is always NULL once something was added. */
typedef struct tg_strv {
    char **v;
    size_t n, cap;
    int oom;                    /* an add ran out of memory: the vector is short */
} tg_strv_t;
/* Append one formatted string.  0, or -1 (out of memory; oom set). */
int tg_strv_addf(tg_strv_t *sv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Free every string and the vector; the struct is zeroed. */
void tg_strv_free(tg_strv_t *sv);

#endif
