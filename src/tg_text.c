/* tg_text.c -- see tg_text.h. */
#include "tg_text.h"

#include <stdarg.h>
#include <stdio.h>

int tg_text_eq_ci(const char *s, size_t n, const char *w) {
    size_t i;
    for (i = 0; i < n; i++)
        if (!w[i] || tg_lower((unsigned char)s[i]) != tg_lower((unsigned char)w[i]))
            return 0;
    return w[n] == '\0';
}

void tg_text_seterr(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    if (!err || !errlen) return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const char *tg_text_qn(char *buf, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    size_t i, o = 0;
    buf[o++] = '"';
    for (i = 0; i < n && i < TG_QMAX; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf[o++] = '\\'; buf[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            buf[o++] = '\\'; buf[o++] = 'x';
            buf[o++] = hex[c >> 4]; buf[o++] = hex[c & 15];
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    if (n > TG_QMAX) { memcpy(buf + o, "...", 3); o += 3; }
    buf[o] = '\0';
    return buf;
}

const char *tg_text_q(char *buf, const char *s) {
    return tg_text_qn(buf, s ? s : "", s ? strlen(s) : 0);
}

void tg_text_trim(const char *s, const char **b, const char **e) {
    const char *end = s + strlen(s);
    while (s < end && tg_is_space((unsigned char)*s)) s++;
    while (end > s && tg_is_space((unsigned char)end[-1])) end--;
    *b = s; *e = end;
}

char *tg_text_dupn(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

int tg_strv_addf(tg_strv_t *sv, const char *fmt, ...) {
    va_list ap;
    if (sv->n + 2 > sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 16;
        char **nv = realloc(sv->v, cap * sizeof *nv);
        if (!nv) { sv->oom = 1; return -1; }
        sv->v = nv;
        sv->cap = cap;
    }
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = len < 0 ? NULL : malloc((size_t)len + 1);
    if (!s) { sv->oom = 1; return -1; }
    va_start(ap, fmt);
    vsnprintf(s, (size_t)len + 1, fmt, ap);
    va_end(ap);
    sv->v[sv->n++] = s;
    sv->v[sv->n] = NULL;
    return 0;
}

void tg_strv_free(tg_strv_t *sv) {
    for (size_t i = 0; i < sv->n; i++) free(sv->v[i]);
    free(sv->v);
    memset(sv, 0, sizeof *sv);
}
