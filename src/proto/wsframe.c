/* SPDX-License-Identifier: MIT */
/* wsframe.c - the client frame check in front of libwebsockets (see
 * wsframe.h), and UTF-8 validation. */
#include "proto/wsframe.h"

#include <string.h>

/* ---- UTF-8 -------------------------------------------------------------------- */

bool tn_utf8_step(tn_utf8 *u, const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (!u->need) {
            /* most text is ASCII: 32, then 8 bytes at a time while no high bit is set */
            while (i + 32 <= n) {
                uint64_t w[4];
                memcpy(w, s + i, sizeof(w));
                if ((w[0] | w[1] | w[2] | w[3]) & 0x8080808080808080ULL)
                    break;
                i += 32;
            }
            while (i + 8 <= n) {
                uint64_t w;
                memcpy(&w, s + i, 8);
                if (w & 0x8080808080808080ULL)
                    break;
                i += 8;
            }
            if (i >= n)
                break;
            unsigned char c = s[i++];
            if (c < 0x80)
                continue;
            /* the lead byte fixes the length and the range of the second
             * byte, which rules out overlong forms, surrogates and code
             * points over U+10FFFF */
            u->lo = 0x80;
            u->hi = 0xbf;
            if (c >= 0xc2 && c <= 0xdf) {
                u->need = 1;
            } else if (c >= 0xe0 && c <= 0xef) {
                u->need = 2;
                if (c == 0xe0)
                    u->lo = 0xa0;
                else if (c == 0xed)
                    u->hi = 0x9f;
            } else if (c >= 0xf0 && c <= 0xf4) {
                u->need = 3;
                if (c == 0xf0)
                    u->lo = 0x90;
                else if (c == 0xf4)
                    u->hi = 0x8f;
            } else {
                return false;
            }
            continue;
        }
        unsigned char c = s[i++];
        if (c < u->lo || c > u->hi)
            return false;
        u->need--;
        u->lo = 0x80;
        u->hi = 0xbf;
    }
    return true;
}

bool tn_utf8_valid(const unsigned char *s, size_t n)
{
    tn_utf8 u = { 0, 0, 0 };
    return tn_utf8_step(&u, s, n) && !u.need;
}

/* ---- frames ------------------------------------------------------------------- */

enum { OP_CONT = 0x0, OP_TEXT = 0x1, OP_BINARY = 0x2, OP_CLOSE = 0x8, OP_PING = 0x9, OP_PONG = 0xa };

static int fail(tn_wsf *f, int code, const char *why)
{
    f->code = code;
    f->why = why;
    return -1;
}

/* The header at P (N bytes available): its length once it is complete and
 * acceptable, 0 while it is incomplete, -1 when it fails the connection.
 * Each rule is checked as soon as the bytes it needs are there. */
static int header(tn_wsf *f, const uint8_t *p, size_t n)
{
    if (n < 2)
        return 0;
    unsigned op = p[0] & 0x0f, len7 = p[1] & 0x7f;
    bool fin = p[0] & 0x80, ctl = op & 0x8;
    if (!(p[1] & 0x80))
        return fail(f, 1002, "unmasked frame");
    if ((op > OP_BINARY && op < OP_CLOSE) || op > OP_PONG)
        return fail(f, 1002, "reserved opcode");
    /* RSV1 is permessage-deflate's "compressed" bit, valid on the first
     * frame of a data message only; RSV2 and RSV3 have no meaning here */
    if ((p[0] & 0x30) || ((p[0] & 0x40) && (!f->deflate || op == OP_CONT || ctl)))
        return fail(f, 1002, "reserved bits set");
    if (ctl && !fin)
        return fail(f, 1002, "fragmented control frame");
    if (ctl && len7 > 125)
        return fail(f, 1002, "control frame over 125 bytes");
    if (op == OP_CLOSE && len7 == 1)
        return fail(f, 1002, "close frame of one byte");
    if (op == OP_CONT && !f->open)
        return fail(f, 1002, "continuation without a message");
    if ((op == OP_TEXT || op == OP_BINARY) && f->open)
        return fail(f, 1002, "new message inside a fragmented one");
    size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    if (n < 2 + ext)
        return 0;
    uint64_t len = len7;
    if (ext) {
        len = 0;
        for (size_t i = 0; i < ext; i++)
            len = len << 8 | p[2 + i];
        if (len >> 63)
            return fail(f, 1002, "length over 63 bits");
        if (len < (len7 == 126 ? 126u : 65536u))
            return fail(f, 1002, "length not in its shortest form");
    }
    /* refused here, before the payload arrives */
    if (!ctl && (op == OP_CONT ? f->msg_len : 0) + len > f->max_message)
        return fail(f, 1009, "message too large");
    if (n < 2 + ext + 4)
        return 0;
    memcpy(f->mask, p + 2 + ext, 4);
    f->op = (uint8_t)op;
    f->left = len;
    f->nctl = 0;
    if (!ctl) {
        f->msg_len = (op == OP_CONT ? f->msg_len : 0) + len;
        f->open = !fin;
        if (fin)
            f->msgs++;
    }
    return (int)(2 + ext + 4);
}

static bool close_code_valid(int code)
{
    /* 1004 is reserved, 1005, 1006 and 1015 never go on the wire, the rest
     * below 3000 is unassigned, 5000 and over do not exist */
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

/* The ping or close frame just taken out is complete. */
static void control_done(tn_wsf *f, tn_wsf_ping_fn ping, void *arg)
{
    if (f->op == OP_PING) {
        ping(arg, f->ctl, f->nctl, f->msgs);
        return;
    }
    if (f->nctl == 0) {
        f->code = 1000;
        f->closed = true;
        return;
    }
    int code = f->ctl[0] << 8 | f->ctl[1];
    if (!close_code_valid(code)) {
        fail(f, 1002, "invalid close code");
    } else if (!tn_utf8_valid(f->ctl + 2, f->nctl - 2u)) {
        fail(f, 1007, "close reason not UTF-8");
    } else {
        f->code = code;
        f->closed = true;
    }
}

size_t tn_wsf_run(tn_wsf *f, unsigned char *buf, size_t n, tn_wsf_ping_fn ping, void *arg)
{
    size_t r = 0, w = 0;
    while (r < n && !f->code) {
        const uint8_t *p = buf + r;
        size_t small = !f->left && n - r >= 6 ? p[1] & 0x7f : 126;
        if (small < 126 && n - r >= 6 + small && !f->open && (p[0] == 0x81 || p[0] == 0x82) && (p[1] & 0x80) &&
            small <= f->max_message) {
            /* the usual frame, whole here: a short unfragmented message,
             * which passes every rule below */
            size_t fl = 6 + small;
            if (w != r)
                memmove(buf + w, p, fl);
            w += fl;
            r += fl;
            f->msg_len = small;
            f->msgs++;
            continue;
        }
        bool take = f->op == OP_PING || f->op == OP_CLOSE;
        if (f->left) {
            size_t k = f->left < n - r ? (size_t)f->left : n - r;
            if (take) {
                for (size_t i = 0; i < k; i++, f->nctl++)
                    f->ctl[f->nctl] = buf[r + i] ^ f->mask[f->nctl & 3];
            } else {
                if (w != r)
                    memmove(buf + w, buf + r, k);
                w += k;
            }
            r += k;
            f->left -= k;
            if (!f->left && take)
                control_done(f, ping, arg);
            continue;
        }
        int hl = header(f, buf + r, n - r);
        if (hl < 0)
            break;
        if (hl == 0) {
            f->nhold = (uint8_t)(n - r);
            memcpy(f->hold, buf + r, n - r);
            break;
        }
        take = f->op == OP_PING || f->op == OP_CLOSE;
        if (!take) {
            if (w != r)
                memmove(buf + w, buf + r, (size_t)hl);
            w += (size_t)hl;
        }
        r += (size_t)hl;
        if (!f->left && take)
            control_done(f, ping, arg);
    }
    return w;
}
