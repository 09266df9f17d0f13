/* SPDX-License-Identifier: MIT */
/* test_wsframe.c - the client frame check (src/proto/wsframe.c): UTF-8
 * validation whole and in pieces cut at every byte; a stream of frames fed
 * in reads of every size, with the held header put back in front as ws.c
 * does, comes out as the same frames without the pings and the close, with
 * each ping reported once and in place; each rule fails at the right frame
 * with the right code, with only the frames before it left for lws. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "proto/wsframe.h"

/* ---- UTF-8 ---------------------------------------------------------------------- */

static const char *const good_text[] = {
    "", "plain ascii, longer than thirty-two bytes for the fast path", "caf\xc3\xa9", "\xe2\x82\xac 5",
    "\xf0\x9f\x98\x80 emoji", "\xed\x9f\xbf", "\xee\x80\x80", "\xf4\x8f\xbf\xbf",
};
static const char *const bad_text[] = {
    "\xff", "\xc0\xaf", "\xc1\xbf", "\xe0\x9f\xbf", "\xed\xa0\x80", "\xf0\x8f\xbf\xbf", "\xf4\x90\x80\x80",
    "\xf5\x80\x80\x80", "abc\x80", "\xc3", "\xe2\x82", "\xc3\x28",
};

static bool in_pieces(const char *s, size_t cut)
{
    size_t n = strlen(s);
    tn_utf8 u = { 0, 0, 0 };
    if (cut > n)
        cut = n;
    return tn_utf8_step(&u, (const unsigned char *)s, cut) &&
           tn_utf8_step(&u, (const unsigned char *)s + cut, n - cut) && !u.need;
}

static void test_utf8(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(good_text) / sizeof(good_text[0]); i++) {
        assert_true(tn_utf8_valid((const unsigned char *)good_text[i], strlen(good_text[i])));
        for (size_t cut = 0; cut <= strlen(good_text[i]); cut++)
            assert_true(in_pieces(good_text[i], cut));
    }
    for (size_t i = 0; i < sizeof(bad_text) / sizeof(bad_text[0]); i++) {
        assert_false(tn_utf8_valid((const unsigned char *)bad_text[i], strlen(bad_text[i])));
        for (size_t cut = 0; cut <= strlen(bad_text[i]); cut++)
            assert_false(in_pieces(bad_text[i], cut));
    }
    /* an incomplete character is not invalid yet */
    tn_utf8 u = { 0, 0, 0 };
    assert_true(tn_utf8_step(&u, (const unsigned char *)"x\xe2\x82", 3));
    assert_int_equal(u.need, 1);
    assert_false(tn_utf8_step(&u, (const unsigned char *)"A", 1));
}

/* ---- frames --------------------------------------------------------------------- */

typedef struct stream {
    unsigned char in[4096], want[4096], out[4096];
    size_t nin, nwant, nout;
    char pings[8][32];
    uint32_t ping_msgs[8];
    size_t npings;
} stream;

/* Appends a masked frame to the input, and to what lws should get when KEEP. */
static void add(stream *s, unsigned b0, const char *payload, size_t len, bool keep)
{
    unsigned char f[200];
    size_t n = 0;
    f[n++] = (unsigned char)b0;
    if (len < 126) {
        f[n++] = (unsigned char)(0x80 | len);
    } else {
        f[n++] = 0x80 | 126;
        f[n++] = (unsigned char)(len >> 8);
        f[n++] = (unsigned char)len;
    }
    static const unsigned char key[4] = { 0x12, 0x34, 0x56, 0x78 };
    memcpy(f + n, key, 4);
    n += 4;
    memcpy(s->in + s->nin, f, n);
    for (size_t i = 0; i < len; i++)
        s->in[s->nin + n + i] = (unsigned char)payload[i] ^ key[i & 3];
    if (keep) {
        memcpy(s->want + s->nwant, s->in + s->nin, n + len);
        s->nwant += n + len;
    }
    s->nin += n + len;
}

static void on_ping(void *arg, const uint8_t *payload, size_t len, uint32_t msgs)
{
    stream *s = arg;
    assert_true(s->npings < 8 && len < 32);
    memcpy(s->pings[s->npings], payload, len);
    s->pings[s->npings][len] = '\0';
    s->ping_msgs[s->npings++] = msgs;
}

/* Feeds the input in reads of STEP bytes, as ws.c's recv() does. */
static void feed(stream *s, tn_wsf *f, size_t step)
{
    s->nout = s->npings = 0;
    size_t pos = 0;
    while (pos < s->nin && !f->code) {
        unsigned char buf[64];
        size_t held = f->nhold;
        memcpy(buf, f->hold, held);
        size_t k = s->nin - pos < step ? s->nin - pos : step;
        memcpy(buf + held, s->in + pos, k);
        pos += k;
        f->nhold = 0;
        size_t n = tn_wsf_run(f, buf, held + k, on_ping, s);
        memcpy(s->out + s->nout, buf, n);
        s->nout += n;
    }
}

static void test_stream_in_every_read_size(void **state)
{
    (void)state;
    static char big[300];
    memset(big, 'b', sizeof(big));
    stream s;
    memset(&s, 0, sizeof(s));
    add(&s, 0x81, "hello", 5, true);
    add(&s, 0x89, "p1", 2, false);
    add(&s, 0x01, "frag", 4, true);
    add(&s, 0x89, "mid", 3, false);
    add(&s, 0x8a, "pong", 4, true);
    add(&s, 0x80, "ment", 4, true);
    add(&s, 0x82, big, sizeof(big), true);
    add(&s, 0x88, "\x03\xe8ok", 4, false);
    add(&s, 0x81, "after the close", 15, false);
    for (size_t step = 1; step <= 50; step++) {
        tn_wsf f;
        memset(&f, 0, sizeof(f));
        f.max_message = 1000;
        feed(&s, &f, step);
        assert_int_equal(f.code, 1000);
        assert_true(f.closed);
        assert_int_equal(s.nout, s.nwant);
        assert_memory_equal(s.out, s.want, s.nwant);
        assert_int_equal(s.npings, 2);
        assert_string_equal(s.pings[0], "p1");
        assert_int_equal(s.ping_msgs[0], 1);
        assert_string_equal(s.pings[1], "mid");
        assert_int_equal(s.ping_msgs[1], 1);
    }
}

/* A good text frame, then BAD: CODE is set, and lws gets the good frame and
 * the first PASS bytes of BAD (frames before the failing one). */
static void refused(const unsigned char *bad, size_t nbad, size_t pass, uint64_t max, int code)
{
    stream s;
    memset(&s, 0, sizeof(s));
    add(&s, 0x81, "ok", 2, true);
    memcpy(s.in + s.nin, bad, nbad);
    s.nin += nbad;
    memcpy(s.want + s.nwant, bad, pass);
    s.nwant += pass;
    for (size_t step = 1; step <= 24; step++) {
        tn_wsf f;
        memset(&f, 0, sizeof(f));
        f.max_message = max;
        feed(&s, &f, step);
        assert_int_equal(f.code, code);
        assert_false(f.closed);
        assert_int_equal(s.nout, s.nwant);
        assert_memory_equal(s.out, s.want, s.nwant);
    }
}

static void test_rules(void **state)
{
    (void)state;
    const unsigned char unmasked[] = { 0x81, 0x02, 'h', 'i' };
    refused(unmasked, sizeof(unmasked), 0, 100, 1002);
    const unsigned char rsv1[] = { 0xc1, 0x80, 0, 0, 0, 0 };
    refused(rsv1, sizeof(rsv1), 0, 100, 1002);
    const unsigned char opcode3[] = { 0x83, 0x80, 0, 0, 0, 0 };
    refused(opcode3, sizeof(opcode3), 0, 100, 1002);
    const unsigned char frag_ping[] = { 0x09, 0x80, 0, 0, 0, 0 };
    refused(frag_ping, sizeof(frag_ping), 0, 100, 1002);
    const unsigned char long_ping[] = { 0x89, 0x80 | 126, 0, 126 };
    refused(long_ping, sizeof(long_ping), 0, 1000, 1002);
    const unsigned char close1[] = { 0x88, 0x81, 0, 0, 0, 0, 3 };
    refused(close1, sizeof(close1), 0, 100, 1002);
    const unsigned char not_shortest[] = { 0x82, 0x80 | 126, 0, 5, 0, 0, 0, 0 };
    refused(not_shortest, sizeof(not_shortest), 0, 100, 1002);
    const unsigned char top_bit[] = { 0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0 };
    refused(top_bit, sizeof(top_bit), 0, 100, 1002);
    const unsigned char stray[] = { 0x80, 0x80, 0, 0, 0, 0 };
    refused(stray, sizeof(stray), 0, 100, 1002);
    const unsigned char nested[] = { 0x01, 0x80, 0, 0, 0, 0, 0x81, 0x80, 0, 0, 0, 0 };
    refused(nested, sizeof(nested), 6, 100, 1002);
    const unsigned char bad_code[] = { 0x88, 0x82, 0, 0, 0, 0, 0x03, 0xed }; /* 1005 */
    refused(bad_code, sizeof(bad_code), 0, 100, 1002);
    const unsigned char bad_reason[] = { 0x88, 0x83, 0, 0, 0, 0, 0x03, 0xe8, 0xff };
    refused(bad_reason, sizeof(bad_reason), 0, 100, 1007);
    /* 100 MB declared, no payload: refused at the header */
    const unsigned char huge[] = { 0x82, 0x80 | 127, 0, 0, 0, 0, 0x06, 0x40, 0, 0 };
    refused(huge, sizeof(huge), 0, 65536, 1009);
    /* fragments adding up past the limit: refused at the second header */
    static char sixty[60];
    memset(sixty, 'a', sizeof(sixty));
    stream s;
    memset(&s, 0, sizeof(s));
    add(&s, 0x02, sixty, sizeof(sixty), true);
    const unsigned char second[] = { 0x80, 0x80 | 41 };
    memcpy(s.in + s.nin, second, sizeof(second));
    s.nin += sizeof(second);
    tn_wsf f;
    memset(&f, 0, sizeof(f));
    f.max_message = 100;
    feed(&s, &f, 7);
    assert_int_equal(f.code, 1009);
    assert_int_equal(s.nout, s.nwant);
}

static void test_rsv1_with_deflate(void **state)
{
    (void)state;
    stream s;
    memset(&s, 0, sizeof(s));
    add(&s, 0xc1, "zz", 2, true);   /* compressed message */
    add(&s, 0x41, "zz", 2, true);   /* compressed, first fragment */
    add(&s, 0x80, "zz", 2, true);   /* its continuation, RSV1 clear */
    tn_wsf f;
    memset(&f, 0, sizeof(f));
    f.max_message = 100;
    f.deflate = true;
    feed(&s, &f, 64);
    assert_int_equal(f.code, 0);
    assert_int_equal(s.nout, s.nwant);
    /* RSV1 on a continuation is still refused */
    const unsigned char cont_rsv1[] = { 0x01, 0x80, 0, 0, 0, 0, 0xc0, 0x80, 0, 0, 0, 0 };
    memset(&s, 0, sizeof(s));
    memcpy(s.in, cont_rsv1, sizeof(cont_rsv1));
    s.nin = sizeof(cont_rsv1);
    memset(&f, 0, sizeof(f));
    f.max_message = 100;
    f.deflate = true;
    feed(&s, &f, 64);
    assert_int_equal(f.code, 1002);
    assert_int_equal(s.nout, 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_stream_in_every_read_size),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_rsv1_with_deflate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
