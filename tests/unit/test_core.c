/* SPDX-License-Identifier: MIT */
/* test_core.c - small shared pieces with exact expectations: latency
 * histograms and their percentiles (src/metrics.c), the streaming JSON
 * writer and its escaping of whatever bytes clients send (src/json.c), and
 * handler selection by first token (tn_split_token, src/handlers/registry.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "handlers/handler.h"
#include "json.h"
#include "metrics.h"
#include "state.h"

/* ---- histograms ------------------------------------------------------------ */

static void test_hist_buckets(void **state)
{
    (void)state;
    tn_hist h = { 0 };
    tn_hist_add(&h, 0);   /* < 1 us: bucket 0 */
    tn_hist_add(&h, -5);  /* negative counts as 0 */
    tn_hist_add(&h, 1);   /* < 2: bucket 1 */
    tn_hist_add(&h, 3);   /* < 4: bucket 2 */
    tn_hist_add(&h, 1024); /* < 2048: bucket 11 */
    tn_hist_add(&h, INT64_MAX); /* the last bucket takes everything larger */
    assert_int_equal(h.count, 6);
    assert_int_equal(h.buckets[0], 2);
    assert_int_equal(h.buckets[1], 1);
    assert_int_equal(h.buckets[2], 1);
    assert_int_equal(h.buckets[11], 1);
    assert_int_equal(h.buckets[TN_HIST_BUCKETS - 1], 1);
    assert_int_equal(tn_hist_bound_us(10), 1024);
}

static void test_hist_percentiles(void **state)
{
    (void)state;
    tn_hist h = { 0 };
    assert_true(tn_hist_percentile(&h, 0.5) == 0.0);
    /* 100 values in [512, 1024): bucket 10 */
    for (int i = 0; i < 100; i++)
        tn_hist_add(&h, 600);
    /* interpolated linearly inside the bucket */
    assert_true(tn_hist_percentile(&h, 0.5) == 512 + 512 * 0.5);
    assert_true(tn_hist_percentile(&h, 0.99) == 512 + 512 * 0.99);
    /* 100 more in bucket 14 ([8192, 16384)): the median stays in bucket 10 */
    for (int i = 0; i < 100; i++)
        tn_hist_add(&h, 10000);
    assert_true(tn_hist_percentile(&h, 0.5) == 1024.0);
    assert_true(tn_hist_percentile(&h, 0.75) == 8192 + 8192 * 0.5);
    assert_int_equal(h.sum_us, 100 * 600 + 100 * 10000);
}

/* ---- JSON writer ------------------------------------------------------------ */

static char *text_of(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = test_malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    return s;
}

static void check_escape(const char *in, size_t len, const char *want)
{
    struct evbuffer *b = evbuffer_new();
    tn_json_escape(b, in, len);
    char *got = text_of(b);
    assert_string_equal(got, want);
    test_free(got);
    evbuffer_free(b);
}

static void test_json_document(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    tn_json j;
    tn_json_init(&j, b);
    tn_json_open(&j, NULL, '{');
    tn_json_bool(&j, "ok", true);
    tn_json_u64(&j, "n", UINT64_MAX);
    tn_json_i64(&j, "neg", -42);
    tn_json_str(&j, "null", NULL);
    tn_json_open(&j, "list", '[');
    tn_json_str(&j, NULL, "a");
    tn_json_open(&j, NULL, '{');
    tn_json_close(&j, '}');
    tn_json_close(&j, ']');
    tn_json_strn(&j, "cut", "abcdef", 3);
    tn_json_close(&j, '}');
    char *got = text_of(b);
    assert_string_equal(got, "{\"ok\":true,\"n\":18446744073709551615,\"neg\":-42,\"null\":null,"
                             "\"list\":[\"a\",{}],\"cut\":\"abc\"}");
    test_free(got);
    evbuffer_free(b);
}

static void test_json_escapes_control_bytes(void **state)
{
    (void)state;
    check_escape("a\"b\\c", 5, "\"a\\\"b\\\\c\"");
    check_escape("\n\r\t", 3, "\"\\n\\r\\t\"");
    check_escape("\x01\x1b[1m\x7f", 6, "\"\\u0001\\u001b[1m\\u007f\"");
    check_escape("a\0b", 3, "\"a\\u0000b\"");
}

static void test_json_keeps_utf8_and_replaces_the_rest(void **state)
{
    (void)state;
    check_escape("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9, "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
    check_escape("\xff", 1, "\"\\ufffd\"");
    check_escape("a\xc3", 2, "\"a\\ufffd\"");           /* truncated sequence */
    check_escape("\xc0\xaf", 2, "\"\\ufffd\\ufffd\"");   /* overlong '/' */
    check_escape("\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""); /* surrogate */
    check_escape("\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\""); /* past U+10FFFF */
    check_escape("\xe2\x82", 2, "\"\\ufffd\\ufffd\"");
}

/* ---- first-token selection ----------------------------------------------------- */

static void check_token(const char *msg, const char *tok, const char *payload)
{
    const char *p = NULL;
    size_t plen = 0;
    size_t n = tn_split_token(msg, strlen(msg), &p, &plen);
    assert_int_equal(n, strlen(tok));
    assert_memory_equal(msg, tok, n);
    assert_int_equal(plen, strlen(payload));
    assert_memory_equal(p, payload, plen);
}

static void test_token_selection(void **state)
{
    (void)state;
    check_token("echo hello world", "echo", "hello world");
    check_token("echo  two spaces", "echo", " two spaces");
    check_token("upper: shout", "upper", "shout");
    check_token("upper:   many", "upper", "many");
    check_token("upper:tight", "upper", "tight");
    check_token("ping", "ping", "");
    check_token("ping\r\nrest", "ping", "rest");
    check_token("ping\nrest", "ping", "rest");
    check_token("", "", "");
    check_token(" leading", "", "leading");
    check_token(":colon", "", "colon");
}

/* ---- end-of-pass jobs ---------------------------------------------------------- */

typedef struct pass_probe {
    tn_daemon *d;
    tn_pass_job job;
    tn_pass_job *victim; /* removed and freed by this job's run */
    int runs;
} pass_probe;

static void probe_run(void *arg)
{
    pass_probe *p = arg;
    p->runs++;
    tn_pass_job *victim = p->victim;
    if (victim) {
        p->victim = NULL;
        tn_before_sleep_remove(p->d, victim);
        free(victim->arg); /* the job lives in its probe, P itself perhaps */
    }
}

static pass_probe *probe_new(tn_daemon *d)
{
    pass_probe *p = calloc(1, sizeof(*p));
    assert_non_null(p);
    p->d = d;
    p->job.run = probe_run;
    p->job.arg = p;
    tn_before_sleep_add(d, &p->job);
    p->job.due = true;
    return p;
}

/* A job that removes and frees the one after it (a handler's last
 * connection reaped with its listener ends the handler and its job): the
 * run goes on with the one after that, and the freed one is not touched
 * (ASan: make test SANITIZE=1). */
static void test_pass_job_removing_the_next_one(void **state)
{
    (void)state;
    tn_daemon d = { 0 };
    pass_probe *a = probe_new(&d), *b = probe_new(&d), *c = probe_new(&d);
    a->victim = &b->job;
    tn_before_sleep_run(&d);
    assert_int_equal(a->runs, 1);
    assert_int_equal(c->runs, 1);
    assert_ptr_equal(d.before_sleep, &a->job);
    assert_ptr_equal(a->job.next, &c->job);
    assert_null(c->job.next);
    /* and itself: C removes C while it runs */
    c->victim = &c->job;
    c->job.due = true;
    a->job.due = false;
    tn_before_sleep_run(&d);
    assert_null(a->job.next);
    assert_int_equal(a->runs, 1);
    free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hist_buckets),
        cmocka_unit_test(test_hist_percentiles),
        cmocka_unit_test(test_json_document),
        cmocka_unit_test(test_json_escapes_control_bytes),
        cmocka_unit_test(test_json_keeps_utf8_and_replaces_the_rest),
        cmocka_unit_test(test_token_selection),
        cmocka_unit_test(test_pass_job_removing_the_next_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
