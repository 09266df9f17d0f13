/* SPDX-License-Identifier: MIT */
/* test_limits.c - per-address admission (src/net/limits.c): allow/deny CIDR
 * lists where the most specific entry decides, IPv4 and IPv6, IPv4-mapped
 * IPv6 peers; connections per second; message token buckets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "net/limits.h"

static struct sockaddr_storage addr(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &in4->sin_addr) == 1)
        in4->sin_family = AF_INET;
    else {
        assert_int_equal(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
        in6->sin6_family = AF_INET6;
    }
    return ss;
}

static bool allows(const tn_acl *acl, const char *text)
{
    struct sockaddr_storage ss = addr(text);
    return tn_acl_allows(acl, (struct sockaddr *)&ss);
}

static tn_acl *acl_of(char **allow, size_t nallow, char **deny, size_t ndeny)
{
    tn_strlist a = { allow, nallow }, d = { deny, ndeny };
    return tn_acl_new(&a, &d);
}

static void test_empty_lists_allow_everyone(void **state)
{
    (void)state;
    assert_null(acl_of(NULL, 0, NULL, 0));
    assert_true(allows(NULL, "203.0.113.9"));
    assert_true(allows(NULL, "2001:db8::1"));
}

static void test_allow_list_denies_the_rest(void **state)
{
    (void)state;
    char *allow[] = { "10.0.0.0/8", "192.168.1.7", "2001:db8::/32" };
    tn_acl *acl = acl_of(allow, 3, NULL, 0);
    assert_non_null(acl);
    assert_true(allows(acl, "10.1.2.3"));
    assert_true(allows(acl, "10.255.255.255"));
    assert_false(allows(acl, "11.0.0.0"));
    assert_false(allows(acl, "9.255.255.255"));
    assert_true(allows(acl, "192.168.1.7"));
    assert_false(allows(acl, "192.168.1.8"));
    assert_true(allows(acl, "2001:db8:ffff::1"));
    assert_false(allows(acl, "2001:db9::1"));
    tn_acl_free(acl);
}

static void test_most_specific_entry_wins(void **state)
{
    (void)state;
    char *allow[] = { "10.0.0.0/8", "10.1.2.0/24" };
    char *deny[] = { "10.1.0.0/16", "10.1.2.3" };
    tn_acl *acl = acl_of(allow, 2, deny, 2);
    assert_true(allows(acl, "10.9.9.9"));   /* /8 allow */
    assert_false(allows(acl, "10.1.9.9"));  /* /16 deny beats /8 allow */
    assert_true(allows(acl, "10.1.2.4"));   /* /24 allow beats /16 deny */
    assert_false(allows(acl, "10.1.2.3"));  /* /32 deny beats /24 allow */
    assert_false(allows(acl, "172.16.0.1")); /* matches nothing, allow list present */
    tn_acl_free(acl);
}

static void test_deny_only_allows_the_rest(void **state)
{
    (void)state;
    char *deny[] = { "127.0.0.0/8", "::1" };
    tn_acl *acl = acl_of(NULL, 0, deny, 2);
    assert_false(allows(acl, "127.0.0.1"));
    assert_false(allows(acl, "::1"));
    assert_true(allows(acl, "128.0.0.1"));
    assert_true(allows(acl, "::2"));
    tn_acl_free(acl);
}

static void test_ipv4_mapped_peers_match_ipv4_entries(void **state)
{
    (void)state;
    char *deny[] = { "192.0.2.0/24" };
    tn_acl *acl = acl_of(NULL, 0, deny, 1);
    assert_false(allows(acl, "::ffff:192.0.2.10"));
    assert_true(allows(acl, "::ffff:192.0.3.10"));
    tn_acl_free(acl);
}

static void test_zero_prefix_matches_everything(void **state)
{
    (void)state;
    char *allow[] = { "0.0.0.0/0" };
    char *deny[] = { "198.51.100.0/24" };
    tn_acl *acl = acl_of(allow, 1, deny, 1);
    assert_true(allows(acl, "1.2.3.4"));
    assert_false(allows(acl, "198.51.100.200"));
    tn_acl_free(acl);
}

static void test_connections_per_second(void **state)
{
    (void)state;
    tn_peers t;
    assert_int_equal(tn_peers_init(&t), 0);
    struct sockaddr_storage ss = addr("10.0.0.1");
    tn_peer *p = tn_peers_get(&t, (struct sockaddr *)&ss);
    assert_non_null(p);
    assert_ptr_equal(tn_peers_get(&t, (struct sockaddr *)&ss), p);
    assert_true(tn_peer_admit_rate(p, 3, 100));
    assert_true(tn_peer_admit_rate(p, 3, 100));
    assert_true(tn_peer_admit_rate(p, 3, 100));
    assert_false(tn_peer_admit_rate(p, 3, 100));
    assert_true(tn_peer_admit_rate(p, 3, 101)); /* a new second */
    tn_peers_free(&t);
}

static void test_token_bucket(void **state)
{
    (void)state;
    tn_peers t;
    assert_int_equal(tn_peers_init(&t), 0);
    struct sockaddr_storage ss = addr("2001:db8::5");
    tn_peer *p = tn_peers_get(&t, (struct sockaddr *)&ss);
    int64_t now = 1000000000;
    /* 2 per second with a burst of 4: four at once, then one per 500 ms */
    for (int i = 0; i < 4; i++)
        assert_true(tn_peer_take_token(p, 2.0, 4, now));
    assert_false(tn_peer_take_token(p, 2.0, 4, now));
    assert_false(tn_peer_take_token(p, 2.0, 4, now + 499000));
    assert_true(tn_peer_take_token(p, 2.0, 4, now + 500000));
    assert_false(tn_peer_take_token(p, 2.0, 4, now + 500000));
    /* a long pause refills to the burst, not beyond */
    now += 60 * 1000000LL;
    for (int i = 0; i < 4; i++)
        assert_true(tn_peer_take_token(p, 2.0, 4, now));
    assert_false(tn_peer_take_token(p, 2.0, 4, now));
    tn_peers_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_lists_allow_everyone),
        cmocka_unit_test(test_allow_list_denies_the_rest),
        cmocka_unit_test(test_most_specific_entry_wins),
        cmocka_unit_test(test_deny_only_allows_the_rest),
        cmocka_unit_test(test_ipv4_mapped_peers_match_ipv4_entries),
        cmocka_unit_test(test_zero_prefix_matches_everything),
        cmocka_unit_test(test_connections_per_second),
        cmocka_unit_test(test_token_bucket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
