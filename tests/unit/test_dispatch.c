/* SPDX-License-Identifier: MIT */
/* test_dispatch.c - the step line, UDP and WebSocket messages share before
 * a handler call (src/proto/dispatch.c): the handler chosen by the first
 * word, what the rest of the message becomes, the texts a client gets for
 * no word, an unknown one and the rate limit; and the TCP line framing
 * (tn_line_frame() in src/proto/line.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>

#include "proto/dispatch.h"
#include "proto/line.h"

static tn_handler echo_h = { .name = "echo" };
static tn_handler time_h = { .name = "time" };

/* Two handlers by name; counts the look-ups. */
typedef struct names {
    int lookups;
} names;

static tn_handler *lookup(const void *arg, const char *name, size_t len)
{
    ((names *)arg)->lookups++;
    tn_handler *all[] = { &echo_h, &time_h };
    for (size_t i = 0; i < 2; i++)
        if (strlen(all[i]->name) == len && memcmp(all[i]->name, name, len) == 0)
            return all[i];
    return NULL;
}

/* The dispatch of MSG (LEN bytes) by SEL with no rate limit; the answer
 * text, if any, in TEXT. */
static tn_verdict run(const tn_dispatch *sel, tn_call *call, const char *msg, size_t len, char *text, size_t cap)
{
    struct evbuffer *out = evbuffer_new();
    assert_non_null(out);
    memset(call, 0, sizeof(*call));
    tn_verdict v = tn_dispatch_message(sel, NULL, NULL, call, msg, len, out);
    size_t n = evbuffer_get_length(out);
    assert_true(n < cap);
    evbuffer_remove(out, text, n);
    text[n] = '\0';
    evbuffer_free(out);
    return v;
}

static void assert_payload(const tn_call *call, const char *want)
{
    assert_int_equal(call->len, strlen(want));
    assert_memory_equal(call->payload, want, call->len);
}

static void test_single_handler_takes_the_whole_message(void **state)
{
    (void)state;
    names n = { 0 };
    tn_dispatch sel = { .single = &echo_h, .lookup = lookup, .arg = &n };
    tn_call call;
    char text[256];
    const char *msg = "time is whatever: here";
    assert_int_equal(run(&sel, &call, msg, strlen(msg), text, sizeof(text)), TN_DISPATCH_CALL);
    assert_ptr_equal(call.handler, &echo_h);
    assert_ptr_equal(call.payload, msg);
    assert_payload(&call, msg);
    assert_string_equal(text, "");
    assert_int_equal(n.lookups, 0);
    /* an empty message too: it is the handler's to answer */
    assert_int_equal(run(&sel, &call, "", 0, text, sizeof(text)), TN_DISPATCH_CALL);
    assert_int_equal(call.len, 0);
}

static void test_first_word_chooses(void **state)
{
    (void)state;
    names n = { 0 };
    tn_dispatch sel = { .lookup = lookup, .arg = &n };
    tn_call call;
    char text[256];
    /* a space ends the name; the payload keeps every later byte */
    assert_int_equal(run(&sel, &call, "echo  two  spaces ", 18, text, sizeof(text)), TN_DISPATCH_CALL);
    assert_ptr_equal(call.handler, &echo_h);
    assert_payload(&call, " two  spaces ");
    /* "name:" and the spaces after it */
    assert_int_equal(run(&sel, &call, "time:   x", 9, text, sizeof(text)), TN_DISPATCH_CALL);
    assert_ptr_equal(call.handler, &time_h);
    assert_payload(&call, "x");
    /* the name alone: an empty payload */
    assert_int_equal(run(&sel, &call, "time", 4, text, sizeof(text)), TN_DISPATCH_CALL);
    assert_ptr_equal(call.handler, &time_h);
    assert_payload(&call, "");
    /* a CRLF (a WebSocket message may hold one) ends the name */
    assert_int_equal(run(&sel, &call, "echo\r\nnext", 10, text, sizeof(text)), TN_DISPATCH_CALL);
    assert_ptr_equal(call.handler, &echo_h);
    assert_payload(&call, "next");
    /* a lone LF too */
    assert_int_equal(run(&sel, &call, "echo\nnext", 9, text, sizeof(text)), TN_DISPATCH_CALL);
    assert_payload(&call, "next");
    /* names are exact: no prefix, no case folding */
    assert_int_equal(run(&sel, &call, "ech x", 5, text, sizeof(text)), TN_DISPATCH_UNKNOWN);
    assert_int_equal(run(&sel, &call, "ECHO x", 6, text, sizeof(text)), TN_DISPATCH_UNKNOWN);
    assert_int_equal(run(&sel, &call, "echoes x", 8, text, sizeof(text)), TN_DISPATCH_UNKNOWN);
    assert_int_equal(n.lookups, 8);
}

static void test_no_word_is_invalid(void **state)
{
    (void)state;
    names n = { 0 };
    tn_dispatch sel = { .lookup = lookup, .arg = &n };
    tn_call call;
    char text[256];
    const char *bad[] = { "", " echo x", ":x", "\r\n", "\n" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(run(&sel, &call, bad[i], strlen(bad[i]), text, sizeof(text)), TN_DISPATCH_INVALID);
        assert_string_equal(text, "Invalid message format");
    }
    assert_int_equal(n.lookups, 0);
    assert_int_equal(tn_dispatch_result(TN_DISPATCH_INVALID), TN_REPLY);
}

static void test_unknown_name_is_echoed(void **state)
{
    (void)state;
    names n = { 0 };
    tn_dispatch sel = { .lookup = lookup, .arg = &n };
    tn_call call;
    char text[512];
    assert_int_equal(run(&sel, &call, "nosuch a b", 10, text, sizeof(text)), TN_DISPATCH_UNKNOWN);
    assert_string_equal(text, "Unknown handler: nosuch");
    assert_int_equal(tn_dispatch_result(TN_DISPATCH_UNKNOWN), TN_REPLY);
    /* the name as text: up to a NUL byte in it */
    assert_int_equal(run(&sel, &call, "ab\0cd x", 7, text, sizeof(text)), TN_DISPATCH_UNKNOWN);
    assert_string_equal(text, "Unknown handler: ab");
    /* whole by default, however long */
    char longname[300];
    memset(longname, 'n', sizeof(longname));
    assert_int_equal(run(&sel, &call, longname, sizeof(longname), text, sizeof(text)), TN_DISPATCH_UNKNOWN);
    assert_int_equal(strlen(text), 17 + sizeof(longname));
    /* cut at echo_max when the endpoint sets one */
    sel.echo_max = 80;
    assert_int_equal(run(&sel, &call, longname, sizeof(longname), text, sizeof(text)), TN_DISPATCH_UNKNOWN);
    assert_int_equal(strlen(text), 17 + 80);
    assert_memory_equal(text, "Unknown handler: nnn", 20);
    assert_int_equal(run(&sel, &call, "short x", 7, text, sizeof(text)), TN_DISPATCH_UNKNOWN);
    assert_string_equal(text, "Unknown handler: short");
}

static void test_rate_limit_comes_first(void **state)
{
    (void)state;
    tn_peers t;
    assert_int_equal(tn_peers_init(&t), 0);
    struct sockaddr_in in = { .sin_family = AF_INET };
    assert_int_equal(inet_pton(AF_INET, "192.0.2.7", &in.sin_addr), 1);
    tn_peer *p = tn_peers_get(&t, (struct sockaddr *)&in);
    assert_non_null(p);
    /* a burst of 2 at a rate slow enough that no token comes back meanwhile */
    tn_limits lim = { .rate_limit = 0.001, .rate_burst = 2 };
    names n = { 0 };
    tn_dispatch sel = { .lookup = lookup, .arg = &n };
    struct evbuffer *out = evbuffer_new();
    assert_non_null(out);
    tn_call call = { 0 };
    assert_int_equal(tn_dispatch_message(&sel, p, &lim, &call, "echo a", 6, out), TN_DISPATCH_CALL);
    assert_int_equal(tn_dispatch_message(&sel, p, &lim, &call, "nosuch", 6, out), TN_DISPATCH_UNKNOWN);
    evbuffer_drain(out, evbuffer_get_length(out));
    /* out of tokens: refused before the name is looked at */
    memset(&call, 0, sizeof(call));
    assert_int_equal(tn_dispatch_message(&sel, p, &lim, &call, "echo b", 6, out), TN_DISPATCH_LIMITED);
    assert_null(call.handler);
    assert_int_equal(n.lookups, 2);
    char text[64];
    size_t len = evbuffer_get_length(out);
    evbuffer_remove(out, text, len);
    text[len] = '\0';
    assert_string_equal(text, "rate limit exceeded");
    assert_int_equal(tn_dispatch_result(TN_DISPATCH_LIMITED), TN_FAIL);
    /* without a peer (WebSockets) or with the limit off: no bucket */
    assert_int_equal(tn_dispatch_message(&sel, NULL, &lim, &call, "echo c", 6, out), TN_DISPATCH_CALL);
    lim.rate_limit = 0;
    assert_int_equal(tn_dispatch_message(&sel, p, &lim, &call, "echo d", 6, out), TN_DISPATCH_CALL);
    assert_int_equal(evbuffer_get_length(out), 0);
    evbuffer_free(out);
    tn_peers_free(&t);
}

static void test_error_prefix(void **state)
{
    (void)state;
    assert_string_equal(TN_ERROR_PREFIX, "Error: ");
    assert_int_equal(TN_ERROR_PREFIX_LEN, 7);
}

/* ---- line framing ---- */

static tn_line_status frame(const char *data, size_t len, int64_t max, size_t *n, bool *crlf)
{
    *n = 12345;
    *crlf = true;
    return tn_line_frame(data, len, max, n, crlf);
}

static void test_line_framing(void **state)
{
    (void)state;
    size_t n;
    bool crlf;
    assert_int_equal(frame("abc\nrest", 8, 100, &n, &crlf), TN_LINE_WHOLE);
    assert_int_equal(n, 3);
    assert_false(crlf);
    assert_int_equal(frame("abc\r\nrest", 9, 100, &n, &crlf), TN_LINE_WHOLE);
    assert_int_equal(n, 3);
    assert_true(crlf);
    /* empty lines, bare and CRLF */
    assert_int_equal(frame("\n", 1, 100, &n, &crlf), TN_LINE_WHOLE);
    assert_int_equal(n, 0);
    assert_false(crlf);
    assert_int_equal(frame("\r\n", 2, 100, &n, &crlf), TN_LINE_WHOLE);
    assert_int_equal(n, 0);
    assert_true(crlf);
    /* only the '\r' right before the '\n' goes; others are data */
    assert_int_equal(frame("a\rb\r\r\n", 6, 100, &n, &crlf), TN_LINE_WHOLE);
    assert_int_equal(n, 4);
    assert_true(crlf);
    /* a NUL byte is data */
    assert_int_equal(frame("a\0b\n", 4, 100, &n, &crlf), TN_LINE_WHOLE);
    assert_int_equal(n, 3);
    /* no '\n' yet: wait, up to max_line bytes */
    assert_int_equal(frame("abc", 3, 3, &n, &crlf), TN_LINE_PARTIAL);
    assert_int_equal(frame("", 0, 3, &n, &crlf), TN_LINE_PARTIAL);
    assert_int_equal(frame("abcd", 4, 3, &n, &crlf), TN_LINE_TOO_LONG);
    assert_int_equal(frame("abc\r", 4, 3, &n, &crlf), TN_LINE_TOO_LONG);
    /* exactly max_line before the '\n' is fine; the '\r' of CRLF counts */
    assert_int_equal(frame("abc\n", 4, 3, &n, &crlf), TN_LINE_WHOLE);
    assert_int_equal(n, 3);
    assert_int_equal(frame("abcd\n", 5, 3, &n, &crlf), TN_LINE_TOO_LONG);
    assert_int_equal(frame("abc\r\n", 5, 3, &n, &crlf), TN_LINE_TOO_LONG);
    assert_int_equal(frame("ab\r\n", 4, 3, &n, &crlf), TN_LINE_WHOLE);
    assert_int_equal(n, 2);
    assert_true(crlf);
    /* only the first line counts: a long second one is the next call's */
    assert_int_equal(frame("a\nbbbbbbbb", 10, 3, &n, &crlf), TN_LINE_WHOLE);
    assert_int_equal(n, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_handler_takes_the_whole_message),
        cmocka_unit_test(test_first_word_chooses),
        cmocka_unit_test(test_no_word_is_invalid),
        cmocka_unit_test(test_unknown_name_is_echoed),
        cmocka_unit_test(test_rate_limit_comes_first),
        cmocka_unit_test(test_error_prefix),
        cmocka_unit_test(test_line_framing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
