/* tg_sha1.c -- see tg_sha1.h. */
#include "tg_sha1.h"

#include <stdint.h>
#include <string.h>

#define ROL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))

static void sha1_block(uint32_t h[5], const unsigned char *b) {
    uint32_t w[80], a, bb, c, d, e, f, k, t;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 |
               (uint32_t)b[4 * i + 2] << 8 | (uint32_t)b[4 * i + 3];
    for (; i < 80; i++) w[i] = ROL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    a = h[0]; bb = h[1]; c = h[2]; d = h[3]; e = h[4];
    for (i = 0; i < 80; i++) {
        if (i < 20)      { f = (bb & c) | (~bb & d);          k = 0x5a827999; }
        else if (i < 40) { f = bb ^ c ^ d;                    k = 0x6ed9eba1; }
        else if (i < 60) { f = (bb & c) | (bb & d) | (c & d); k = 0x8f1bbcdc; }
        else             { f = bb ^ c ^ d;                    k = 0xca62c1d6; }
        t = ROL(a, 5) + f + e + k + w[i];
        e = d; d = c; c = ROL(bb, 30); bb = a; a = t;
    }
    h[0] += a; h[1] += bb; h[2] += c; h[3] += d; h[4] += e;
}

/* SHA-1 of data[0..len) as 40 lowercase hex chars + NUL into the caller's
 * out.  Processes whole blocks in place, pads the tail on the stack. */
void tg_sha1_hex(const void *data, size_t len, char out[41]) {
    static const char hex[] = "0123456789abcdef";
    uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    const unsigned char *p = data;
    unsigned char tail[128];
    uint64_t bits = (uint64_t)len * 8;
    size_t n = len, tn;
    int i;

    for (; n >= 64; n -= 64, p += 64) sha1_block(h, p);
    /* Last partial block, 0x80, zero pad, 64-bit big-endian bit length. */
    if (n) memcpy(tail, p, n);
    tail[n] = 0x80;
    tn = n + 1 + 8 <= 64 ? 64 : 128;
    memset(tail + n + 1, 0, tn - n - 1);
    for (i = 0; i < 8; i++) tail[tn - 1 - i] = (unsigned char)(bits >> (8 * i));
    sha1_block(h, tail);
    if (tn == 128) sha1_block(h, tail + 64);

    for (i = 0; i < 20; i++) {
        unsigned char byte = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));
        out[2 * i] = hex[byte >> 4];
        out[2 * i + 1] = hex[byte & 15];
    }
    out[40] = '\0';
}
