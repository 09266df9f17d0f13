/* SPDX-License-Identifier: MIT */
/* test_upstream.c - upstream server lists (src/upstream/upstream.c): the
 * `upstreams` entry syntax, smooth weighted round robin, least_conn,
 * consistent hashing (one server of N removed moves about 1/N of the keys,
 * and only its own), backups, passive ejection and its end, operator
 * commands, the backoff bounds, and sharing servers across a reload. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "upstream/upstream.h"

static tn_upstream_group *group_of(const char *const *ups, size_t n, int balance, const tn_upstream_group *old)
{
    tn_handler_conf c;
    memset(&c, 0, sizeof(c));
    c.name = "p";
    c.upstreams.v = (char **)ups;
    c.upstreams.n = n;
    c.balance = balance;
    c.hash_key = "remote_addr";
    c.max_fails = 3;
    c.fail_timeout = 50;
    char err[256] = "";
    tn_upstream_group *g = tn_upstream_group_new(&c, NULL, old, err, sizeof(err));
    if (!g)
        fail_msg("group: %s", err);
    return g;
}

static void spec_syntax(void **st)
{
    (void)st;
    tn_upstream_spec s;
    char err[256];
    assert_int_equal(tn_upstream_parse_spec("10.0.0.1:8080 weight=3 backup", &s, err, sizeof(err)), 0);
    assert_string_equal(s.host, "10.0.0.1");
    assert_int_equal(s.port, 8080);
    assert_int_equal(s.weight, 3);
    assert_true(s.backup);
    assert_false(s.down);
    assert_int_equal(tn_upstream_parse_spec("[::1]:81 max_fails=5 fail_timeout=2s down", &s, err, sizeof(err)), 0);
    assert_string_equal(s.host, "::1");
    assert_int_equal(s.max_fails, 5);
    assert_int_equal(s.fail_timeout_ms, 2000);
    assert_true(s.down);
    assert_int_equal(tn_upstream_parse_spec("host:0", &s, err, sizeof(err)), -1);
    assert_string_equal(err, "upstream 'host:0': expected host:port or [v6]:port with a port from 1 to 65535");
    assert_int_equal(tn_upstream_parse_spec("h:1 weight=0", &s, err, sizeof(err)), -1);
    assert_string_equal(err, "upstream 'h:1': weight must be from 1 to 1000, not '0'");
    assert_int_equal(tn_upstream_parse_spec("h:1 heavy", &s, err, sizeof(err)), -1);
    assert_string_equal(err,
                        "upstream 'h:1': unknown option 'heavy' (weight=N, max_fails=N, fail_timeout=D, backup, down)");
    assert_int_equal(tn_upstream_parse_spec("*:80", &s, err, sizeof(err)), -1);
    assert_int_equal(tn_upstream_parse_spec("h:1 backup down", &s, err, sizeof(err)), -1);
    assert_string_equal(err, "upstream 'h:1': backup and down together");
}

static void weighted_round_robin(void **st)
{
    (void)st;
    const char *ups[] = { "127.0.0.1:1 weight=5", "127.0.0.1:2", "127.0.0.1:3 weight=2" };
    tn_upstream_group *g = group_of(ups, 3, TN_BALANCE_ROUND_ROBIN, NULL);
    int count[3] = { 0 };
    /* smooth: within one cycle of 8 the heavy server never runs 3 in a row */
    char seq[9] = "";
    for (int i = 0; i < 800; i++) {
        tn_upstream_server *s = tn_upstream_pick(g, NULL, 0, NULL, 0, NULL);
        assert_non_null(s);
        int k = s->spec.port - 1;
        count[k]++;
        if (i < 8)
            seq[i] = (char)('a' + k);
    }
    assert_int_equal(count[0], 500);
    assert_int_equal(count[1], 100);
    assert_int_equal(count[2], 200);
    assert_string_equal(seq, "acaabaca");
    tn_upstream_group_free(g);
}

static void least_conn(void **st)
{
    (void)st;
    const char *ups[] = { "127.0.0.1:1", "127.0.0.1:2 weight=2" };
    tn_upstream_group *g = group_of(ups, 2, TN_BALANCE_LEAST_CONN, NULL);
    g->servers[0]->stats.active = 1;
    g->servers[1]->stats.active = 3; /* 3/2 > 1/1 */
    assert_ptr_equal(tn_upstream_pick(g, NULL, 0, NULL, 0, NULL), g->servers[0]);
    g->servers[1]->stats.active = 2; /* 2/2 = 1/1: a tie, shared 1:2 */
    int n1 = 0;
    for (int i = 0; i < 300; i++)
        n1 += tn_upstream_pick(g, NULL, 0, NULL, 0, NULL) == g->servers[1];
    assert_int_equal(n1, 200);
    tn_upstream_group_free(g);
}

static void consistent_hash(void **st)
{
    (void)st;
    const char *five[] = { "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4", "127.0.0.1:5" };
    const char *four[] = { "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:4", "127.0.0.1:5" };
    tn_upstream_group *a = group_of(five, 5, TN_BALANCE_HASH, NULL);
    tn_upstream_group *b = group_of(four, 4, TN_BALANCE_HASH, NULL);
    int moved = 0, per[5] = { 0 };
    for (int i = 0; i < 10000; i++) {
        char key[32];
        int len = snprintf(key, sizeof(key), "10.1.%d.%d", i / 256, i % 256);
        tn_upstream_server *x = tn_upstream_pick(a, key, (size_t)len, NULL, 0, NULL);
        tn_upstream_server *y = tn_upstream_pick(b, key, (size_t)len, NULL, 0, NULL);
        /* the same key, the same server, every time */
        assert_ptr_equal(tn_upstream_pick(a, key, (size_t)len, NULL, 0, NULL), x);
        per[x->spec.port - 1]++;
        if (x->spec.port != y->spec.port) {
            /* only the keys of the removed server move */
            assert_int_equal(x->spec.port, 3);
            moved++;
        }
    }
    assert_int_equal(moved, per[2]);
    for (int k = 0; k < 5; k++) {
        /* each of 5 servers holds 20% +- 5% of the keys */
        assert_in_range(per[k], 1500, 2500);
    }
    /* a tried server is skipped: the key goes to the next point's server */
    tn_upstream_server *first = tn_upstream_pick(a, "k", 1, NULL, 0, NULL);
    tn_upstream_server *second = tn_upstream_pick(a, "k", 1, &first, 1, NULL);
    assert_non_null(second);
    assert_ptr_not_equal(first, second);
    tn_upstream_group_free(a);
    tn_upstream_group_free(b);
}

static void backup_and_ejection(void **st)
{
    (void)st;
    const char *ups[] = { "127.0.0.1:1", "127.0.0.1:2 backup", "127.0.0.1:3 max_fails=1" };
    tn_upstream_group *g = group_of(ups, 3, TN_BALANCE_ROUND_ROBIN, NULL);
    /* primaries first, config order kept */
    assert_int_equal(g->servers[0]->spec.port, 1);
    assert_int_equal(g->servers[1]->spec.port, 3);
    assert_int_equal(g->servers[2]->spec.port, 2);
    tn_upstream_server *p1 = g->servers[0], *p3 = g->servers[1], *b = g->servers[2];
    for (int i = 0; i < 10; i++)
        assert_ptr_not_equal(tn_upstream_pick(g, NULL, 0, NULL, 0, NULL), b);
    tn_upstream_try_fail(g, p3, TN_UPF_CONNECT); /* max_fails=1 */
    assert_int_equal(tn_upstream_state(p3), TN_UPS_EJECTED);
    tn_upstream_try_fail(g, p1, TN_UPF_RESET);
    tn_upstream_try_ok(g, p1, 10); /* a success breaks the streak */
    tn_upstream_try_fail(g, p1, TN_UPF_RESET);
    tn_upstream_try_fail(g, p1, TN_UPF_RESET);
    assert_int_equal(tn_upstream_state(p1), TN_UPS_UP);
    tn_upstream_try_fail(g, p1, TN_UPF_TIMEOUT);
    assert_int_equal(tn_upstream_state(p1), TN_UPS_EJECTED);
    assert_int_equal(p1->stats.failures[TN_UPF_RESET], 3);
    assert_int_equal(p1->stats.ejections, 1);
    /* every primary out: the backup serves */
    assert_ptr_equal(tn_upstream_pick(g, NULL, 0, NULL, 0, NULL), b);
    int retry_after = -1;
    assert_null(tn_upstream_pick(g, NULL, 0, &b, 1, &retry_after));
    assert_int_equal(retry_after, 0); /* b is usable, only tried */
    char err[64];
    assert_int_equal(tn_upstream_admin_cmd(g, b, "down", 0, err, sizeof(err)), 0);
    assert_null(tn_upstream_pick(g, NULL, 0, NULL, 0, &retry_after));
    assert_int_equal(retry_after, 1); /* the first ejected server is back within the second */
    /* fail_timeout (50ms) over: back */
    struct timespec ts = { 0, 60 * 1000000 };
    nanosleep(&ts, NULL);
    assert_ptr_not_equal(tn_upstream_pick(g, NULL, 0, NULL, 0, NULL), b);
    assert_int_equal(tn_upstream_state(p1), TN_UPS_UP);
    tn_upstream_group_free(g);
}

static void operator_commands(void **st)
{
    (void)st;
    const char *ups[] = { "127.0.0.1:1", "127.0.0.1:2" };
    tn_upstream_group *g = group_of(ups, 2, TN_BALANCE_ROUND_ROBIN, NULL);
    char err[128];
    tn_upstream_server *s1 = tn_upstream_find(g, "127.0.0.1:1");
    assert_ptr_equal(tn_upstream_find(g, "2"), g->servers[1]);
    assert_null(tn_upstream_find(g, "3"));
    assert_int_equal(tn_upstream_admin_cmd(g, s1, "drain", 0, err, sizeof(err)), 0);
    assert_int_equal(tn_upstream_state(s1), TN_UPS_DRAINING);
    for (int i = 0; i < 4; i++)
        assert_ptr_equal(tn_upstream_pick(g, NULL, 0, NULL, 0, NULL), g->servers[1]);
    assert_int_equal(tn_upstream_admin_cmd(g, s1, "up", 0, err, sizeof(err)), 0);
    assert_int_equal(tn_upstream_admin_cmd(g, s1, "weight", 3, err, sizeof(err)), 0);
    int n1 = 0;
    for (int i = 0; i < 400; i++)
        n1 += tn_upstream_pick(g, NULL, 0, NULL, 0, NULL) == s1;
    assert_int_equal(n1, 300);
    assert_int_equal(tn_upstream_admin_cmd(g, s1, "weight", 0, err, sizeof(err)), -1);
    assert_string_equal(err, "weight must be from 1 to 1000");
    assert_int_equal(tn_upstream_admin_cmd(g, s1, "nap", 0, err, sizeof(err)), -1);
    assert_string_equal(err, "unknown action 'nap' (drain, up, down, weight N)");
    assert_int_equal(tn_upstream_admin_cmd(g, s1, "down", 0, err, sizeof(err)), 0);
    assert_int_equal(tn_upstream_state(s1), TN_UPS_DOWN);
    tn_upstream_group_free(g);
}

static void reload_shares_servers(void **st)
{
    (void)st;
    const char *before[] = { "127.0.0.1:1", "127.0.0.1:2" };
    const char *after[] = { "127.0.0.1:2 weight=4", "127.0.0.1:3" };
    tn_upstream_group *a = group_of(before, 2, TN_BALANCE_ROUND_ROBIN, NULL);
    a->servers[1]->stats.requests = 7;
    tn_upstream_group *b = group_of(after, 2, TN_BALANCE_ROUND_ROBIN, a);
    assert_ptr_equal(b->servers[0], a->servers[1]);
    assert_int_equal(b->servers[0]->stats.requests, 7);
    assert_int_equal(b->servers[0]->weight, 4);
    assert_int_equal(b->servers[0]->refs, 2);
    tn_upstream_group_free(a);
    assert_int_equal(b->servers[0]->refs, 1);
    tn_upstream_group_free(b);
}

static void backoff_bounds(void **st)
{
    (void)st;
    for (int i = 0; i < 1000; i++) {
        assert_in_range(tn_upstream_backoff_ms(1, 20, 1000), 0, 20);
        assert_in_range(tn_upstream_backoff_ms(3, 20, 1000), 0, 80);
        assert_in_range(tn_upstream_backoff_ms(20, 20, 1000), 0, 1000);
    }
    assert_int_equal(tn_upstream_backoff_ms(0, 20, 1000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spec_syntax),         cmocka_unit_test(weighted_round_robin),
        cmocka_unit_test(least_conn),          cmocka_unit_test(consistent_hash),
        cmocka_unit_test(backup_and_ejection), cmocka_unit_test(operator_commands),
        cmocka_unit_test(reload_shares_servers), cmocka_unit_test(backoff_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
