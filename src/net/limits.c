/* SPDX-License-Identifier: MIT */
/* limits.c - admission control by peer address: allow/deny CIDR lists
 * (most specific wins, like nginx's geo and HAProxy's ACLs by prefix),
 * connections per address, new connections per second (xinetd's cps) and
 * per-address message token buckets.
 *
 * IPv4-mapped IPv6 peers are treated as IPv4 so one rule covers both ways a
 * dual-stack socket may report the same client. */
#include "net/limits.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

typedef struct acl_rule {
    uint8_t addr[16];
    uint8_t family;
    int prefix;
    bool allow;
} acl_rule;

struct tn_acl {
    acl_rule *rules;
    size_t n;
    bool has_allow;
};

/* Normalizes SA to (family, 16 bytes); false for non-IP. */
static bool addr_key(const struct sockaddr *sa, uint8_t *family, uint8_t out[16])
{
    memset(out, 0, 16);
    if (sa->sa_family == AF_INET) {
        memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        *family = AF_INET;
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            memcpy(out, a->s6_addr + 12, 4);
            *family = AF_INET;
        } else {
            memcpy(out, a->s6_addr, 16);
            *family = AF_INET6;
        }
        return true;
    }
    return false;
}

static bool parse_rule(const char *s, acl_rule *r)
{
    char buf[64];
    snprintf(buf, sizeof(buf), "%s", s);
    char *slash = strchr(buf, '/');
    if (slash)
        *slash++ = '\0';
    memset(r->addr, 0, 16);
    if (inet_pton(AF_INET, buf, r->addr) == 1) {
        r->family = AF_INET;
        r->prefix = slash ? atoi(slash) : 32;
    } else if (inet_pton(AF_INET6, buf, r->addr) == 1) {
        r->family = AF_INET6;
        r->prefix = slash ? atoi(slash) : 128;
        if (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)r->addr)) {
            memmove(r->addr, r->addr + 12, 4);
            memset(r->addr + 4, 0, 12);
            r->family = AF_INET;
            r->prefix = r->prefix >= 96 ? r->prefix - 96 : 0;
        }
    } else {
        return false;
    }
    return true;
}

tn_acl *tn_acl_new(const tn_strlist *allow, const tn_strlist *deny)
{
    if (!allow->n && !deny->n)
        return NULL;
    tn_acl *acl = calloc(1, sizeof(*acl));
    if (!acl || !(acl->rules = calloc(allow->n + deny->n, sizeof(acl_rule)))) {
        free(acl);
        return NULL;
    }
    for (size_t i = 0; i < allow->n + deny->n; i++) {
        bool is_allow = i < allow->n;
        const char *s = is_allow ? allow->v[i] : deny->v[i - allow->n];
        acl_rule *r = &acl->rules[acl->n];
        if (!parse_rule(s, r))
            continue; /* the schema already validated every entry */
        r->allow = is_allow;
        acl->has_allow |= is_allow;
        acl->n++;
    }
    return acl;
}

static bool prefix_match(const uint8_t *a, const uint8_t *b, int bits)
{
    int full = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)full) != 0)
        return false;
    if (!rest)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

bool tn_acl_allows(const tn_acl *acl, const struct sockaddr *sa)
{
    if (!acl)
        return true;
    uint8_t fam, key[16];
    if (!addr_key(sa, &fam, key))
        return true; /* unix sockets are not subject to address lists */
    int best = -1;
    bool decision = !acl->has_allow;
    for (size_t i = 0; i < acl->n; i++) {
        const acl_rule *r = &acl->rules[i];
        if (r->family != fam || !prefix_match(key, r->addr, r->prefix))
            continue;
        /* longer prefix wins; on a tie deny wins */
        if (r->prefix > best || (r->prefix == best && !r->allow)) {
            best = r->prefix;
            decision = r->allow;
        }
    }
    return decision;
}

void tn_acl_free(tn_acl *acl)
{
    if (!acl)
        return;
    free(acl->rules);
    free(acl);
}

/* ---- per-peer table ------------------------------------------------------- */

int tn_peers_init(tn_peers *t)
{
    t->nbuckets = 1024;
    t->count = 0;
    t->buckets = calloc(t->nbuckets, sizeof(tn_peer *));
    return t->buckets ? 0 : -1;
}

static size_t hash_key(const uint8_t *k, uint8_t fam)
{
    uint64_t h = 1469598103934665603ULL ^ fam; /* FNV-1a */
    for (int i = 0; i < 16; i++) {
        h ^= k[i];
        h *= 1099511628211ULL;
    }
    return (size_t)h;
}

static void grow(tn_peers *t)
{
    size_t n = t->nbuckets * 2;
    tn_peer **b = calloc(n, sizeof(tn_peer *));
    if (!b)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (tn_peer *p = t->buckets[i], *next; p; p = next) {
            next = p->next;
            size_t h = hash_key(p->addr, p->family) & (n - 1);
            p->next = b[h];
            b[h] = p;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

tn_peer *tn_peers_get(tn_peers *t, const struct sockaddr *sa)
{
    uint8_t fam, key[16];
    if (!addr_key(sa, &fam, key))
        return NULL;
    size_t h = hash_key(key, fam) & (t->nbuckets - 1);
    for (tn_peer *p = t->buckets[h]; p; p = p->next)
        if (p->family == fam && memcmp(p->addr, key, 16) == 0)
            return p;
    tn_peer *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    memcpy(p->addr, key, 16);
    p->family = fam;
    p->tokens = -1; /* bucket starts full on first use */
    p->next = t->buckets[h];
    t->buckets[h] = p;
    if (++t->count > t->nbuckets)
        grow(t);
    return p;
}

bool tn_peer_admit_rate(tn_peer *p, int64_t per_second, int64_t now_s)
{
    if (p->cps_second != now_s) {
        p->cps_second = now_s;
        p->cps_count = 0;
    }
    if (per_second > 0 && p->cps_count >= per_second)
        return false;
    p->cps_count++;
    return true;
}

bool tn_peer_take_token(tn_peer *p, double rate, int64_t burst, int64_t now_us)
{
    double cap = burst > 0 ? (double)burst : (rate < 1 ? 1 : rate);
    if (p->tokens < 0) {
        p->tokens = cap;
        p->refill_us = now_us;
    }
    p->tokens += (double)(now_us - p->refill_us) * rate / 1e6;
    if (p->tokens > cap)
        p->tokens = cap;
    p->refill_us = now_us;
    if (p->tokens < 1)
        return false;
    p->tokens -= 1;
    return true;
}

void tn_peers_sweep(tn_peers *t, int64_t now_s, int64_t now_us)
{
    (void)now_us;
    for (size_t i = 0; i < t->nbuckets; i++) {
        tn_peer **pp = &t->buckets[i];
        while (*pp) {
            tn_peer *p = *pp;
            /* a full token bucket and an old cps window carry no memory */
            bool idle = p->conns == 0 && p->cps_second < now_s - 1 &&
                        (p->tokens < 0 || now_us - p->refill_us > 60 * 1000000LL);
            if (idle) {
                *pp = p->next;
                free(p);
                t->count--;
            } else {
                pp = &p->next;
            }
        }
    }
}

void tn_peers_free(tn_peers *t)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (tn_peer *p = t->buckets[i], *next; p; p = next) {
            next = p->next;
            free(p);
        }
    }
    free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = 0;
}
