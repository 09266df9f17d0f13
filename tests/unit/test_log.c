/* SPDX-License-Identifier: MIT */
/* Unit tests for log.c: the escaping every log line goes through (and the
 * access log's combined-format quoting), lines cut to one atomic write, one
 * line per line of a list of errors, and the stderr rate limiter, driven by
 * a clock the test sets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static char *escaped(const char *s, size_t len, int flags)
{
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    tn_log_escape(b, s, len, flags);
    size_t n = evbuffer_get_length(b);
    char *out = malloc(n + 1);
    assert_non_null(out);
    evbuffer_remove(b, out, n);
    out[n] = '\0';
    evbuffer_free(b);
    return out;
}

static void assert_escaped(const char *in, size_t len, int flags, const char *want)
{
    char *got = escaped(in, len, flags);
    assert_string_equal(got, want);
    free(got);
}

static void test_escape_daemon_log(void **state)
{
    (void)state;
    assert_escaped("plain text", 10, 0, "plain text");
    assert_escaped("a\nb\rc\td", 7, 0, "a\\x0Ab\\x0Dc\\x09d");
    assert_escaped("\x1b[31mred\x7f", 9, 0, "\\x1B[31mred\\x7F");
    assert_escaped("nul\0x", 5, 0, "nul\\x00x");
    /* quotes and backslashes stay: messages quote config text */
    assert_escaped("\"q\" \\x41", 8, 0, "\"q\" \\x41");
    /* valid UTF-8 stays, invalid bytes are escaped one by one */
    assert_escaped("\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, 0, "\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    assert_escaped("\xff\xc3(\xe2\x82", 5, 0, "\\xFF\\xC3(\\xE2\\x82");
    /* overlong, surrogate, beyond U+10FFFF */
    assert_escaped("\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80", 9, 0,
                   "\\xC0\\xAF\\xED\\xA0\\x80\\xF4\\x90\\x80\\x80");
    /* a sequence cut by the end of the input */
    assert_escaped("ok\xe2\x82", 4, 0, "ok\\xE2\\x82");
}

static void test_escape_clf(void **state)
{
    (void)state;
    assert_escaped("GET /a\"b\\c HTTP", 15, TN_ESC_CLF, "GET /a\\x22b\\x5Cc HTTP");
    assert_escaped("\xc3\xa9\n", 3, TN_ESC_CLF, "\\xC3\\xA9\\x0A");
}

static void test_utf8_len(void **state)
{
    (void)state;
    assert_int_equal(tn_utf8_len((const unsigned char *)"a", 1), 1);
    assert_int_equal(tn_utf8_len((const unsigned char *)"\xc3\xa9", 2), 2);
    assert_int_equal(tn_utf8_len((const unsigned char *)"\xc3\xa9", 1), 0);
    assert_int_equal(tn_utf8_len((const unsigned char *)"\xe2\x82\xac", 3), 3);
    assert_int_equal(tn_utf8_len((const unsigned char *)"\xf0\x9f\x98\x80", 4), 4);
    assert_int_equal(tn_utf8_len((const unsigned char *)"\xf0\x9f\x98", 3), 0);
    assert_int_equal(tn_utf8_len((const unsigned char *)"\x80", 1), 0);
}

/* What tn_log and friends write while FN runs, with stderr on a file. */
static char captured[65536];

static const char *capture(void (*fn)(void))
{
    FILE *f = tmpfile();
    assert_non_null(f);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fileno(f), STDERR_FILENO), STDERR_FILENO);
    fn();
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    rewind(f);
    size_t n = fread(captured, 1, sizeof(captured) - 1, f);
    captured[n] = '\0';
    fclose(f);
    return captured;
}

/* Lines of BUF without the time stamp and level (up to "] "). */
static void assert_lines(const char *buf, const char *const *want, int n)
{
    int i = 0;
    for (const char *p = buf; *p; i++) {
        const char *eol = strchr(p, '\n');
        assert_non_null(eol);
        const char *body = strstr(p, "] ");
        assert_true(body && body < eol);
        body += 2;
        assert_true(i < n);
        if ((size_t)(eol - body) != strlen(want[i]) || memcmp(body, want[i], strlen(want[i])) != 0)
            fail_msg("line %d: got '%.*s', want '%s'", i, (int)(eol - body), body, want[i]);
        p = eol + 1;
    }
    assert_int_equal(i, n);
}

static void log_forged(void) { tn_warn("handler x: %s", "ok\n2026-01-01 00:00:00.000 [error] forged\r\x1b[2K"); }

static void log_list(void) { tn_log_lines(TN_LOG_ERROR, "reload failed: ", "a.conf:1:1: one\nb.conf:2:2: two \x1b"); }

static void test_log_lines_escaped(void **state)
{
    (void)state;
    tn_log_set_level(TN_LOG_DEBUG);
    const char *want1[] = { "handler x: ok\\x0A2026-01-01 00:00:00.000 [error] forged\\x0D\\x1B[2K" };
    assert_lines(capture(log_forged), want1, 1);
    const char *want2[] = { "reload failed: a.conf:1:1: one", "reload failed: b.conf:2:2: two \\x1B" };
    assert_lines(capture(log_list), want2, 2);
}

static void log_long(void)
{
    char msg[2000];
    memset(msg, 1, sizeof(msg)); /* every byte becomes \x01: 8000 bytes escaped */
    msg[sizeof(msg) - 1] = '\0';
    tn_info("%s", msg);
}

static void test_log_line_is_one_atomic_write(void **state)
{
    (void)state;
    tn_log_set_level(TN_LOG_DEBUG);
    const char *out = capture(log_long);
    size_t len = strlen(out);
    assert_true(len <= PIPE_BUF);
    assert_int_equal(out[len - 1], '\n');
    assert_null(memchr(out, '\n', len - 1));
    /* cut between escapes, never inside one */
    const char *body = strstr(out, "] ") + 2;
    assert_int_equal((size_t)(out + len - 1 - body) % 4, 0);
    assert_int_equal(memcmp(out + len - 5, "\\x01", 4), 0);
}

static struct event_base *base;
static tn_log_limit *limit;

static void free_limit(void) { tn_log_limit_free(limit); }

static void test_limit(void **state)
{
    (void)state;
    tn_log_set_level(TN_LOG_DEBUG);
    base = event_base_new();
    assert_non_null(base);
    limit = tn_log_limit_new(base, "flood");
    assert_non_null(limit);
    int64_t t = 5000000;
    /* the burst passes, then nothing until time refills the bucket */
    for (int i = 0; i < TN_LOG_LIMIT_BURST; i++)
        assert_true(tn_log_limit_take(limit, t));
    for (int i = 0; i < 50; i++)
        assert_false(tn_log_limit_take(limit, t));
    t += 1000000 / TN_LOG_LIMIT_RATE; /* one line's worth */
    assert_true(tn_log_limit_take(limit, t));
    assert_false(tn_log_limit_take(limit, t));
    /* a clock that goes back adds nothing */
    assert_false(tn_log_limit_take(limit, t - 1000000));
    /* a long pause refills to the burst, not beyond */
    t += 3600 * 1000000LL;
    for (int i = 0; i < TN_LOG_LIMIT_BURST; i++)
        assert_true(tn_log_limit_take(limit, t));
    assert_false(tn_log_limit_take(limit, t));
    /* freeing tells what was dropped since the last report */
    const char *want[] = { "handler flood: dropped 53 stderr lines (more than 100 a second)" };
    assert_lines(capture(free_limit), want, 1);
    /* nothing dropped, nothing said */
    limit = tn_log_limit_new(base, "quiet");
    assert_true(tn_log_limit_take(limit, t));
    assert_string_equal(capture(free_limit), "");
    event_base_free(base);
}

static void report_after_a_second(void) { event_base_dispatch(base); }

static void test_limit_reports_once_a_second(void **state)
{
    (void)state;
    tn_log_set_level(TN_LOG_DEBUG);
    base = event_base_new();
    limit = tn_log_limit_new(base, "flood");
    assert_non_null(limit);
    for (int i = 0; i < TN_LOG_LIMIT_BURST + 7; i++)
        tn_log_limit_take(limit, 1);
    /* the report timer is the only event: the loop ends after it */
    const char *want[] = { "handler flood: dropped 7 stderr lines (more than 100 a second)" };
    assert_lines(capture(report_after_a_second), want, 1);
    assert_false(tn_log_limit_take(limit, 1)); /* counting again, a new report armed */
    const char *want2[] = { "handler flood: dropped 1 stderr lines (more than 100 a second)" };
    assert_lines(capture(free_limit), want2, 1);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_daemon_log),
        cmocka_unit_test(test_escape_clf),
        cmocka_unit_test(test_utf8_len),
        cmocka_unit_test(test_log_lines_escaped),
        cmocka_unit_test(test_log_line_is_one_atomic_write),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_limit_reports_once_a_second),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
