/* SPDX-License-Identifier: MIT */
/* upstream.c - server lists, selection, passive health and the operator's
 * commands (see upstream.h).
 *
 * Selection follows nginx where it has a good answer: smooth weighted round
 * robin (every server gets its share, interleaved rather than in bursts),
 * least_conn as fewest active per unit of weight with round robin between
 * ties, and hash as a ketama-style ring (160 points per unit of weight) so
 * that adding or removing one of N servers moves about 1/N of the keys.
 * Backups take traffic only while no primary is usable. */
#include "upstream/upstream.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/dns.h>

#include "addr.h"
#include "clock.h"
#include "handlers/handler.h"
#include "log.h"

#define RING_POINTS 160

static const char *const state_names[] = { "up", "down", "ejected", "draining" };
static const char *const failure_names[] = { "connect", "connect_timeout", "tls", "send_timeout",
                                             "timeout", "reset", "bad_response" };

const char *tn_upstream_state_name(int state)
{
    return state >= 0 && state < 4 ? state_names[state] : "?";
}

const char *tn_upstream_failure_name(int reason)
{
    return reason >= 0 && reason < TN_UPF_COUNT ? failure_names[reason] : "?";
}

uint32_t tn_upstream_hash(const char *data, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)data[i];
        h *= 1099511628211ULL;
    }
    /* FNV alone clusters short keys that differ in their last byte; the
     * splitmix64 finalizer spreads them over the ring */
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return (uint32_t)(h >> 32);
}

int64_t tn_upstream_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms)
{
    if (attempt < 1 || base_ms <= 0 || cap_ms <= 0)
        return 0;
    int64_t ceil_ms = base_ms;
    for (int i = 1; i < attempt && ceil_ms < cap_ms; i++)
        ceil_ms *= 2;
    if (ceil_ms > cap_ms)
        ceil_ms = cap_ms;
    /* full jitter: spreads the retries of many clients hit by the same
     * failure instead of having them come back in step */
    return (int64_t)(((uint64_t)random() << 16 ^ (uint64_t)random()) % (uint64_t)(ceil_ms + 1));
}

/* ---- parsing ------------------------------------------------------------- */

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

int tn_upstream_parse_spec(const char *text, tn_upstream_spec *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->weight = 1;
    out->max_fails = -1;
    out->fail_timeout_ms = -1;
    char buf[512];
    if (strlen(text) >= sizeof(buf)) {
        snprintf(err, errlen, "upstream '%.40s...' is too long", text);
        return -1;
    }
    snprintf(buf, sizeof(buf), "%s", text);
    char *save = NULL;
    char *addr = strtok_r(buf, " \t", &save);
    if (!addr) {
        snprintf(err, errlen, "empty upstream");
        return -1;
    }
    if (tn_parse_listen(addr, out->host, sizeof(out->host), &out->port) < 0 || !out->host[0] ||
        strcmp(out->host, "*") == 0 || out->port <= 0) {
        snprintf(err, errlen, "upstream '%s': expected host:port or [v6]:port with a port from 1 to 65535", addr);
        return -1;
    }
    for (char *opt; (opt = strtok_r(NULL, " \t", &save));) {
        char *eq = strchr(opt, '=');
        const char *val = eq ? eq + 1 : NULL;
        size_t klen = eq ? (size_t)(eq - opt) : strlen(opt);
        int n;
        int64_t ms;
        if (!val && strcmp(opt, "backup") == 0) {
            out->backup = true;
        } else if (!val && strcmp(opt, "down") == 0) {
            out->down = true;
        } else if (val && klen == 6 && strncmp(opt, "weight", 6) == 0) {
            if (parse_int(val, 1, 1000, &n) < 0) {
                snprintf(err, errlen, "upstream '%s': weight must be from 1 to 1000, not '%s'", addr, val);
                return -1;
            }
            out->weight = n;
        } else if (val && klen == 9 && strncmp(opt, "max_fails", 9) == 0) {
            if (parse_int(val, 1, 1000, &n) < 0) {
                snprintf(err, errlen, "upstream '%s': max_fails must be from 1 to 1000, not '%s'", addr, val);
                return -1;
            }
            out->max_fails = n;
        } else if (val && klen == 12 && strncmp(opt, "fail_timeout", 12) == 0) {
            if (tn_parse_duration_ms(val, &ms) < 0 || ms < 1) {
                snprintf(err, errlen, "upstream '%s': fail_timeout must be a duration such as \"10s\", not '%s'",
                         addr, val);
                return -1;
            }
            out->fail_timeout_ms = ms;
        } else {
            snprintf(err, errlen,
                     "upstream '%s': unknown option '%s' (weight=N, max_fails=N, fail_timeout=D, backup, down)", addr,
                     opt);
            return -1;
        }
    }
    if (out->backup && out->down) {
        snprintf(err, errlen, "upstream '%s': backup and down together", addr);
        return -1;
    }
    return 0;
}

static int parse_key(tn_upstream_group *g, const char *key, char *err, size_t errlen)
{
    if (!key || !*key || strcmp(key, "remote_addr") == 0) {
        g->key_kind = TN_UPK_REMOTE_ADDR;
        return 0;
    }
    if (strcmp(key, "token") == 0) {
        g->key_kind = TN_UPK_TOKEN;
        return 0;
    }
    const char *name = NULL;
    if (strncmp(key, "header:", 7) == 0) {
        g->key_kind = TN_UPK_HEADER;
        name = key + 7;
    } else if (strncmp(key, "cookie:", 7) == 0) {
        g->key_kind = TN_UPK_COOKIE;
        name = key + 7;
    }
    if (!name || !*name) {
        snprintf(err, errlen, "hash_key '%s': expected remote_addr, token, header:NAME or cookie:NAME", key);
        return -1;
    }
    g->key_name = strdup(name);
    return g->key_name ? 0 : -1;
}

/* ---- servers ------------------------------------------------------------- */

void tn_upstream_server_ref(tn_upstream_server *s)
{
    s->refs++;
}

/* Off the list of the group showing it as removed. */
static void gone_unlink(tn_upstream_server *s)
{
    tn_upstream_group *g = s->gone_in;
    if (!g)
        return;
    for (size_t i = 0; i < g->ngone; i++) {
        if (g->gone[i] == s) {
            memmove(&g->gone[i], &g->gone[i + 1], (g->ngone - i - 1) * sizeof(*g->gone));
            g->ngone--;
            break;
        }
    }
    s->gone_in = NULL;
}

static void gone_add(tn_upstream_group *g, tn_upstream_server *s)
{
    gone_unlink(s);
    if (g->ngone == g->gone_cap) {
        size_t cap = g->gone_cap ? g->gone_cap * 2 : 4;
        tn_upstream_server **v = realloc(g->gone, cap * sizeof(*v));
        if (!v)
            return; /* it drains all the same, unlisted */
        g->gone = v;
        g->gone_cap = cap;
    }
    g->gone[g->ngone++] = s;
    s->gone_in = g;
}

void tn_upstream_close_idle(tn_upstream_server *s)
{
    for (int i = 0; i < TN_UPSIDE_COUNT; i++)
        if (s->pool[i].close_idle && s->pool[i].data)
            s->pool[i].close_idle(s, s->pool[i].data);
}

void tn_upstream_server_unref(tn_upstream_server *s)
{
    if (--s->refs > 0)
        return;
    gone_unlink(s);
    for (int i = 0; i < TN_UPSIDE_COUNT; i++)
        if (s->pool[i].release)
            s->pool[i].release(s, s->pool[i].data);
    if (s->check_ev)
        event_free(s->check_ev);
    free(s->name);
    free(s);
}

static int resolve(tn_upstream_server *s, char *err, size_t errlen)
{
    struct addrinfo hints = { 0 }, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
    char port[8];
    snprintf(port, sizeof(port), "%d", s->spec.port);
    int rc = getaddrinfo(s->spec.host, port, &hints, &res);
    if (rc == EAI_BADFLAGS || (rc != 0 && rc != EAI_NONAME)) {
        /* AI_ADDRCONFIG refuses loopback-only hosts on some systems */
        hints.ai_flags = AI_NUMERICSERV;
        rc = getaddrinfo(s->spec.host, port, &hints, &res);
    }
    if (rc != 0 || !res) {
        snprintf(err, errlen, "upstream '%s': cannot resolve '%s': %s", s->name, s->spec.host,
                 rc ? gai_strerror(rc) : "no address");
        return -1;
    }
    memcpy(&s->addr, res->ai_addr, res->ai_addrlen);
    s->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static tn_upstream_server *server_new(const char *text, char *err, size_t errlen)
{
    tn_upstream_server *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->refs = 1;
    if (tn_upstream_parse_spec(text, &s->spec, err, errlen) < 0)
        goto fail;
    size_t n = strcspn(text, " \t");
    s->name = strndup(text, n);
    if (!s->name) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (resolve(s, err, errlen) < 0)
        goto fail;
    s->weight = s->spec.weight;
    s->admin = s->spec.down ? TN_UPA_DOWN : TN_UPA_ENABLED;
    return s;
fail:
    tn_upstream_server_unref(s);
    return NULL;
}

/* ---- groups -------------------------------------------------------------- */

static int point_cmp(const void *a, const void *b)
{
    const tn_upstream_ring_point *x = a, *y = b;
    return x->hash < y->hash ? -1 : x->hash > y->hash ? 1 : (int)x->server - (int)y->server;
}

static int build_ring(tn_upstream_group *g)
{
    free(g->ring);
    g->ring = NULL;
    g->nring = 0;
    if (g->balance != TN_BALANCE_HASH)
        return 0;
    size_t total = 0;
    for (size_t i = 0; i < g->n; i++)
        total += (size_t)g->servers[i]->weight * RING_POINTS;
    g->ring = calloc(total ? total : 1, sizeof(*g->ring));
    if (!g->ring)
        return -1;
    for (size_t i = 0; i < g->n; i++) {
        tn_upstream_server *s = g->servers[i];
        /* points depend on the server's name only, so the other servers'
         * points stay put when one comes or goes */
        for (int p = 0; p < s->weight * RING_POINTS; p++) {
            char buf[300];
            int len = snprintf(buf, sizeof(buf), "%s-%d", s->name, p);
            g->ring[g->nring].hash = tn_upstream_hash(buf, (size_t)len);
            g->ring[g->nring].server = (uint32_t)i;
            g->nring++;
        }
    }
    qsort(g->ring, g->nring, sizeof(*g->ring), point_cmp);
    return 0;
}

tn_upstream_group *tn_upstream_group_new(const tn_handler_conf *c, struct event_base *base,
                                         const tn_upstream_group *old, char *err, size_t errlen)
{
    tn_upstream_group *g = calloc(1, sizeof(*g));
    if (!g || !(g->handler = strdup(c->name))) {
        free(g);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    g->base = base;
    g->balance = c->balance;
    g->max_fails = (int)c->max_fails;
    g->fail_timeout_ms = c->fail_timeout;
    g->resolve_ms = c->resolve;
    if (parse_key(g, c->hash_key, err, errlen) < 0)
        goto fail;
    if (c->upstreams.n == 0) {
        snprintf(err, errlen, "no upstreams");
        goto fail;
    }
    g->servers = calloc(c->upstreams.n, sizeof(*g->servers));
    if (!g->servers) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    /* primaries first, then backups: both passes keep config order */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < c->upstreams.n; i++) {
            tn_upstream_server *s = server_new(c->upstreams.v[i], err, errlen);
            if (!s)
                goto fail;
            if (s->spec.backup != (pass == 1)) {
                tn_upstream_server_unref(s);
                continue;
            }
            for (size_t j = 0; j < g->n; j++) {
                if (strcmp(g->servers[j]->name, s->name) == 0) {
                    snprintf(err, errlen, "upstream '%s' is listed twice", s->name);
                    tn_upstream_server_unref(s);
                    goto fail;
                }
            }
            tn_upstream_server *kept = NULL;
            for (size_t j = 0; old && j < old->n && !kept; j++)
                if (strcmp(old->servers[j]->name, s->name) == 0)
                    kept = old->servers[j];
            if (kept) {
                /* same server: keep its pools, counters and health; take the
                 * new settings and address */
                bool moved = kept->addrlen != s->addrlen || memcmp(&kept->addr, &s->addr, s->addrlen) != 0;
                if (moved)
                    tn_info("upstream %s of %s: address changed, its pooled connections close as they idle",
                            s->name, c->name);
                kept->spec = s->spec;
                kept->addr = s->addr;
                kept->addrlen = s->addrlen;
                kept->weight = s->spec.weight;
                if (kept->admin != TN_UPA_ENABLED || s->spec.down)
                    kept->admin = s->spec.down ? TN_UPA_DOWN : kept->admin;
                tn_upstream_server_unref(s);
                tn_upstream_server_ref(kept);
                s = kept;
            }
            g->servers[g->n++] = s;
            if (pass == 0)
                g->nprimary++;
        }
    }
    if (build_ring(g) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return g;
fail:
    tn_upstream_group_free(g);
    return NULL;
}

void tn_upstream_group_free(tn_upstream_group *g)
{
    if (!g)
        return;
    if (g->resolve_ev)
        event_free(g->resolve_ev);
    if (g->dns)
        evdns_base_free(g->dns, 1); /* lookups in flight end, cancelled */
    for (size_t i = 0; i < g->ngone; i++)
        g->gone[i]->gone_in = NULL;
    free(g->gone);
    for (size_t i = 0; i < g->n; i++) {
        tn_upstream_server *s = g->servers[i];
        if (s->check_group == g) {
            s->check_group = NULL;
            if (s->check_ev)
                event_del(s->check_ev);
        }
        tn_upstream_server_unref(s);
    }
    free(g->servers);
    free(g->ring);
    free(g->key_name);
    free(g->check_path);
    free(g->handler);
    free(g);
}

void tn_upstream_group_succeed(tn_upstream_group *old, tn_upstream_group *next)
{
    while (old->ngone) {
        if (next)
            gone_add(next, old->gone[0]);
        else
            gone_unlink(old->gone[0]);
    }
    for (size_t i = 0; i < old->n; i++) {
        tn_upstream_server *s = old->servers[i];
        bool kept = false;
        for (size_t j = 0; next && j < next->n && !kept; j++)
            kept = next->servers[j] == s;
        if (kept || s->removed)
            continue;
        s->removed = true;
        tn_upstream_close_idle(s);
        if (!next)
            continue; /* the whole handler went (or the daemon exits) */
        tn_info("upstream %s of %s: removed by the reload, draining (%llu active)", s->name, old->handler,
                (unsigned long long)s->stats.active);
        gone_add(next, s);
    }
}

tn_upstream_server *tn_upstream_find_gone(tn_upstream_group *g, const char *name)
{
    for (size_t i = 0; i < g->ngone; i++)
        if (strcmp(g->gone[i]->name, name) == 0)
            return g->gone[i];
    return NULL;
}

tn_upstream_server *tn_upstream_find(tn_upstream_group *g, const char *name)
{
    for (size_t i = 0; i < g->n; i++)
        if (strcmp(g->servers[i]->name, name) == 0)
            return g->servers[i];
    int idx;
    if (parse_int(name, 1, (int)(g->n < 100000 ? g->n : 100000), &idx) == 0)
        return g->servers[idx - 1];
    return NULL;
}

/* ---- periodic resolution ------------------------------------------------- */

typedef struct lookup {
    tn_upstream_server *s; /* referenced until the answer */
    char *handler;
} lookup;

static void resolved(int err, struct evutil_addrinfo *res, void *arg)
{
    lookup *lk = arg;
    tn_upstream_server *s = lk->s;
    if (err == 0 && res) {
        s->stats.resolutions++;
        if (res->ai_addrlen != s->addrlen || memcmp(res->ai_addr, &s->addr, s->addrlen) != 0) {
            char before[80], after[80];
            tn_addr_format((const struct sockaddr *)&s->addr, before, sizeof(before));
            memcpy(&s->addr, res->ai_addr, res->ai_addrlen);
            s->addrlen = (socklen_t)res->ai_addrlen;
            tn_addr_format((const struct sockaddr *)&s->addr, after, sizeof(after));
            tn_info("upstream %s of %s: %s now resolves to %s (was %s)", s->name, lk->handler, s->spec.host, after,
                    before);
        }
    } else if (err != EVUTIL_EAI_CANCEL) {
        tn_warn("upstream %s of %s: cannot resolve '%s' again: %s (the last address stays)", s->name, lk->handler,
                s->spec.host, evutil_gai_strerror(err));
    }
    if (res)
        evutil_freeaddrinfo(res);
    tn_upstream_server_unref(s);
    free(lk->handler);
    free(lk);
}

static void resolve_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tn_upstream_group *g = arg;
    for (size_t i = 0; i < g->n; i++) {
        tn_upstream_server *s = g->servers[i];
        unsigned char ip[sizeof(struct in6_addr)];
        if (inet_pton(AF_INET, s->spec.host, ip) == 1 || inet_pton(AF_INET6, s->spec.host, ip) == 1)
            continue; /* an address: nothing to look up */
        lookup *lk = calloc(1, sizeof(*lk));
        if (!lk || !(lk->handler = strdup(g->handler))) {
            free(lk);
            continue;
        }
        lk->s = s;
        tn_upstream_server_ref(s);
        struct evutil_addrinfo hints = { 0 };
        hints.ai_family = s->addr.ss_family; /* the family the start chose */
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = EVUTIL_AI_NUMERICSERV;
        char port[8];
        snprintf(port, sizeof(port), "%d", s->spec.port);
        /* the answer may come at once (the hosts file): resolved() runs then */
        evdns_getaddrinfo(g->dns, s->spec.host, port, &hints, resolved, lk);
    }
    struct timeval tv = { g->resolve_ms / 1000, (g->resolve_ms % 1000) * 1000 };
    evtimer_add(g->resolve_ev, &tv);
}

int tn_upstream_resolve_start(tn_upstream_group *g, char *err, size_t errlen)
{
    if (g->resolve_ms <= 0)
        return 0;
    g->dns = evdns_base_new(g->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!g->dns) {
        /* no nameserver configured: names in the hosts file still resolve */
        g->dns = evdns_base_new(g->base, 0);
        if (g->dns)
            evdns_base_load_hosts(g->dns, NULL);
    }
    g->resolve_ev = g->dns ? evtimer_new(g->base, resolve_tick, g) : NULL;
    if (!g->resolve_ev) {
        snprintf(err, errlen, "resolve: cannot set up the resolver");
        return -1;
    }
    struct timeval tv = { g->resolve_ms / 1000, (g->resolve_ms % 1000) * 1000 };
    evtimer_add(g->resolve_ev, &tv);
    return 0;
}

/* ---- health -------------------------------------------------------------- */

static int max_fails_of(const tn_upstream_group *g, const tn_upstream_server *s)
{
    return s->spec.max_fails > 0 ? s->spec.max_fails : g->max_fails;
}

static int64_t fail_timeout_of(const tn_upstream_group *g, const tn_upstream_server *s)
{
    return s->spec.fail_timeout_ms > 0 ? s->spec.fail_timeout_ms : g->fail_timeout_ms;
}

static bool usable_at(tn_upstream_group *g, tn_upstream_server *s, int64_t now)
{
    if (s->admin != TN_UPA_ENABLED || s->check_down || s->removed)
        return false;
    if (s->ejected_until_us) {
        if (now < s->ejected_until_us)
            return false;
        s->ejected_until_us = 0;
        s->fails = 0;
        tn_info("upstream %s of %s: fail_timeout over, taking requests again", s->name, g->handler);
    }
    return true;
}

bool tn_upstream_usable(tn_upstream_group *g, tn_upstream_server *s)
{
    return usable_at(g, s, s->ejected_until_us ? tn_now_us() : 0); /* the clock only matters then */
}

int tn_upstream_state(const tn_upstream_server *s)
{
    if (s->admin == TN_UPA_DRAIN || s->removed)
        return TN_UPS_DRAINING;
    if (s->admin == TN_UPA_DOWN || s->check_down)
        return TN_UPS_DOWN;
    if (s->ejected_until_us && tn_now_us() < s->ejected_until_us)
        return TN_UPS_EJECTED;
    return TN_UPS_UP;
}

void tn_upstream_try_begin(tn_upstream_server *s, bool reused)
{
    s->stats.requests++;
    if (reused)
        s->stats.reused++;
}

void tn_upstream_try_ok(tn_upstream_group *g, tn_upstream_server *s, int64_t latency_us)
{
    (void)g;
    s->stats.responses++;
    s->fails = 0;
    tn_hist_add(&s->stats.latency, latency_us);
}

void tn_upstream_try_fail(tn_upstream_group *g, tn_upstream_server *s, int reason)
{
    if (reason >= 0 && reason < TN_UPF_COUNT)
        s->stats.failures[reason]++;
    if (s->ejected_until_us)
        return; /* already out: requests that were in flight do not extend it */
    if (++s->fails < max_fails_of(g, s))
        return;
    s->fails = 0;
    s->ejected_until_us = tn_now_us() + fail_timeout_of(g, s) * 1000;
    s->stats.ejections++;
    tn_warn("upstream %s of %s: %d failures in a row (last: %s), ejected for %" PRId64 "ms", s->name, g->handler,
            max_fails_of(g, s), tn_upstream_failure_name(reason), fail_timeout_of(g, s));
}

/* ---- selection ----------------------------------------------------------- */

static bool was_tried(const tn_upstream_server *s, tn_upstream_server *const *tried, size_t ntried)
{
    for (size_t i = 0; i < ntried; i++)
        if (tried[i] == s)
            return true;
    return false;
}

/* Smooth weighted round robin over the candidates marked in OK. */
static tn_upstream_server *smooth_rr(tn_upstream_group *g, size_t lo, size_t hi, const bool *ok)
{
    tn_upstream_server *best = NULL;
    int64_t total = 0;
    for (size_t i = lo; i < hi; i++) {
        if (!ok[i])
            continue;
        tn_upstream_server *s = g->servers[i];
        s->rr_current += s->weight;
        total += s->weight;
        if (!best || s->rr_current > best->rr_current)
            best = s;
    }
    if (best)
        best->rr_current -= total;
    return best;
}

static tn_upstream_server *from_ring(tn_upstream_group *g, uint32_t h, const bool *ok)
{
    if (!g->nring)
        return NULL;
    size_t lo = 0, hi = g->nring;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (g->ring[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t k = 0; k < g->nring; k++) {
        const tn_upstream_ring_point *p = &g->ring[(lo + k) % g->nring];
        if (ok[p->server])
            return g->servers[p->server];
    }
    return NULL;
}

tn_upstream_server *tn_upstream_pick(tn_upstream_group *g, const char *key, size_t keylen,
                                     tn_upstream_server *const *tried, size_t ntried, int *retry_after_s)
{
    int64_t now = tn_now_us();
    bool okbuf[64];
    bool *ok = g->n <= 64 ? okbuf : calloc(g->n, sizeof(bool));
    if (!ok)
        return NULL;
    if (retry_after_s)
        *retry_after_s = 0;
    /* primaries, or backups when no primary is usable */
    size_t lo = 0, hi = g->nprimary, cand = 0;
    bool any_usable = false;
    for (int tier = 0; tier < 2 && !any_usable; tier++) {
        if (tier == 1) {
            lo = g->nprimary;
            hi = g->n;
        }
        for (size_t i = 0; i < g->n; i++)
            ok[i] = false;
        for (size_t i = lo; i < hi; i++) {
            bool u = usable_at(g, g->servers[i], now);
            any_usable |= u;
            if (u && !was_tried(g->servers[i], tried, ntried)) {
                ok[i] = true;
                cand++;
            }
        }
    }
    tn_upstream_server *pick = NULL;
    if (cand == 0) {
        int64_t soonest = 0;
        for (size_t i = 0; i < g->n && !any_usable; i++) {
            const tn_upstream_server *s = g->servers[i];
            if (s->admin == TN_UPA_ENABLED && !s->check_down && !s->removed && s->ejected_until_us > now &&
                (!soonest || s->ejected_until_us < soonest))
                soonest = s->ejected_until_us;
        }
        if (soonest && retry_after_s)
            *retry_after_s = (int)((soonest - now + 999999) / 1000000);
    } else if (g->balance == TN_BALANCE_HASH && key) {
        pick = from_ring(g, tn_upstream_hash(key, keylen), ok);
    } else if (g->balance == TN_BALANCE_LEAST_CONN) {
        /* fewest active per unit of weight: a1/w1 < a2/w2 as a1*w2 < a2*w1 */
        const tn_upstream_server *least = NULL;
        for (size_t i = lo; i < hi; i++) {
            const tn_upstream_server *s = g->servers[i];
            if (ok[i] && (!least || s->stats.active * (uint64_t)least->weight <
                                        least->stats.active * (uint64_t)s->weight))
                least = s;
        }
        for (size_t i = lo; i < hi; i++) {
            const tn_upstream_server *s = g->servers[i];
            if (ok[i] && s->stats.active * (uint64_t)least->weight != least->stats.active * (uint64_t)s->weight)
                ok[i] = false;
        }
        pick = smooth_rr(g, lo, hi, ok);
    } else {
        pick = smooth_rr(g, lo, hi, ok);
    }
    if (ok != okbuf)
        free(ok);
    return pick;
}

/* ---- operator ------------------------------------------------------------ */

int tn_upstream_admin_cmd(tn_upstream_group *g, tn_upstream_server *s, const char *cmd, int weight, char *err,
                          size_t errlen)
{
    if (strcmp(cmd, "drain") == 0) {
        /* requests in flight finish; their connections close after them */
        s->admin = TN_UPA_DRAIN;
        tn_upstream_close_idle(s);
    } else if (strcmp(cmd, "down") == 0) {
        s->admin = TN_UPA_DOWN;
        tn_upstream_close_idle(s);
    } else if (strcmp(cmd, "up") == 0) {
        /* the operator vouches for it: passive ejection ends too */
        s->admin = TN_UPA_ENABLED;
        s->ejected_until_us = 0;
        s->fails = 0;
    } else if (strcmp(cmd, "weight") == 0) {
        if (weight < 1 || weight > 1000) {
            snprintf(err, errlen, "weight must be from 1 to 1000");
            return -1;
        }
        s->weight = weight;
        s->rr_current = 0;
        if (build_ring(g) < 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    } else {
        snprintf(err, errlen, "unknown action '%s' (drain, up, down, weight N)", cmd);
        return -1;
    }
    if (strcmp(cmd, "weight") == 0)
        tn_info("upstream %s of %s: weight %d by the operator", s->name, g->handler, weight);
    else
        tn_info("upstream %s of %s: %s by the operator", s->name, g->handler, cmd);
    return 0;
}
