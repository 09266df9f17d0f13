/* SPDX-License-Identifier: MIT */
/* kv.c - an in-memory key-value store as a tusknetd plugin (kv.so).
 *
 * Over the line protocol, UDP and WebSocket a message is a command, words
 * separated by spaces, the command's name in any case:
 *
 *   GET key                  the value            | Error: no such key
 *   SET key value [EX secs]  OK                   (EX: the key expires after secs)
 *   DEL key                  1 (deleted) or 0 (there was none)
 *   INCR key                 the new value        (a missing key counts from 0)
 *   KEYS [prefix]            the keys starting with prefix, sorted, separated
 *                            by one space (at most 1000; empty when none)
 *
 * Over HTTP the key is the request path after the option `prefix` (default
 * "/kv/"): GET reads it, PUT sets it to the body (?ex=SECS expires it), DELETE
 * deletes it, POST increments it; GET of the prefix itself lists the keys
 * starting with ?prefix=P. A missing key is 404, a bad request 400.
 *
 * Keys are bounded by the option max_key (bytes, default 1024), values by
 * max_value (default 1048576), their number by max_keys (default 1000000),
 * the bytes of all keys and values together by max_bytes (default 256 MiB).
 * Each key with an expiry has its own timer on the daemon's loop. The
 * counters `keys` and `expired` show in `stats`. */
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <tusknet/plugin.h>

#define KEYS_MAX 1000

typedef struct entry {
    struct entry *next;
    struct kv *kv;
    struct event *ttl; /* NULL: no expiry */
    uint64_t hash;
    size_t klen, vlen;
    char *val;
    char key[]; /* klen bytes */
} entry;

typedef struct kv {
    const tn_plugin_host *host;
    entry **bucket;
    size_t nbucket; /* a power of two */
    size_t count;
    size_t max_key, max_value, max_keys, max_bytes;
    size_t bytes; /* keys and values held */
    char *prefix;
    int c_keys, c_expired;
} kv;

typedef struct word {
    const char *p;
    size_t len;
} word;

static uint64_t hash(const char *p, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
    return h;
}

static entry **slot(kv *s, const char *k, size_t klen, uint64_t h)
{
    entry **e = &s->bucket[h & (s->nbucket - 1)];
    while (*e && !((*e)->hash == h && (*e)->klen == klen && memcmp((*e)->key, k, klen) == 0))
        e = &(*e)->next;
    return e;
}

static void entry_free(entry *e)
{
    if (e->ttl)
        event_free(e->ttl);
    free(e->val);
    free(e);
}

static void unlink_entry(kv *s, entry **at)
{
    entry *e = *at;
    *at = e->next;
    s->count--;
    s->bytes -= e->klen + e->vlen;
    s->host->count(s->host, s->c_keys, -1);
    entry_free(e);
}

static void expired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    entry *e = arg;
    kv *s = e->kv;
    s->host->count(s->host, s->c_expired, 1);
    unlink_entry(s, slot(s, e->key, e->klen, e->hash));
}

static void grow(kv *s)
{
    size_t n = s->nbucket * 2;
    entry **b = calloc(n, sizeof(*b));
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < s->nbucket; i++)
        for (entry *e = s->bucket[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    free(s->bucket);
    s->bucket = b;
    s->nbucket = n;
}

static bool parse_i64(const char *p, size_t len, int64_t *out)
{
    char buf[24];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, p, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end || !(buf[0] == '-' || (buf[0] >= '0' && buf[0] <= '9')))
        return false;
    *out = v;
    return true;
}

/* Sets KEY to VAL (ttl seconds, 0 = none). NULL or an error message. */
static const char *set(kv *s, word key, const char *val, size_t vlen, int64_t ttl)
{
    if (vlen > s->max_value)
        return "value too long";
    uint64_t h = hash(key.p, key.len);
    entry **at = slot(s, key.p, key.len, h), *e = *at;
    if (s->bytes - (e ? e->klen + e->vlen : 0) + key.len + vlen > s->max_bytes)
        return "store full";
    char *v = malloc(vlen ? vlen : 1);
    if (!v)
        return "out of memory";
    memcpy(v, val, vlen);
    if (!e) {
        if (s->count >= s->max_keys) {
            free(v);
            return "too many keys";
        }
        if (!(e = calloc(1, sizeof(*e) + key.len))) {
            free(v);
            return "out of memory";
        }
        memcpy(e->key, key.p, key.len);
        e->klen = key.len;
        e->hash = h;
        e->kv = s;
        *at = e;
        s->count++;
        s->host->count(s->host, s->c_keys, 1);
        if (s->count > s->nbucket)
            grow(s);
    }
    s->bytes = s->bytes - e->vlen + vlen + (e->val ? 0 : key.len);
    free(e->val);
    e->val = v;
    e->vlen = vlen;
    if (ttl > 0) {
        if (!e->ttl && !(e->ttl = evtimer_new(s->host->base(s->host), expired, e)))
            return "out of memory";
        struct timeval tv = { (time_t)ttl, 0 };
        evtimer_add(e->ttl, &tv);
    } else if (ttl == 0 && e->ttl) {
        event_free(e->ttl);
        e->ttl = NULL;
    }
    return NULL;
}

static int cmp_entry(const void *a, const void *b)
{
    const entry *x = *(entry *const *)a, *y = *(entry *const *)b;
    int c = memcmp(x->key, y->key, x->klen < y->klen ? x->klen : y->klen);
    return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

static tn_plugin_result keys(kv *s, tn_plugin_call *call, const char *prefix, size_t plen)
{
    entry **v = malloc((s->count ? s->count : 1) * sizeof(*v));
    size_t n = 0;
    if (!v) {
        s->host->reply(call, "out of memory", 13);
        return TN_PLUGIN_ERROR;
    }
    for (size_t i = 0; i < s->nbucket; i++)
        for (entry *e = s->bucket[i]; e; e = e->next)
            if (e->klen >= plen && memcmp(e->key, prefix, plen) == 0)
                v[n++] = e;
    qsort(v, n, sizeof(*v), cmp_entry);
    for (size_t i = 0; i < n && i < KEYS_MAX; i++) {
        if (i)
            s->host->reply(call, " ", 1);
        s->host->reply(call, v[i]->key, v[i]->klen);
    }
    free(v);
    return TN_PLUGIN_REPLY;
}

static tn_plugin_result fail(kv *s, tn_plugin_call *call, int status, const char *msg)
{
    s->host->http_status(call, status);
    s->host->reply(call, msg, strlen(msg));
    return TN_PLUGIN_ERROR;
}

/* HTTP status for an error of set() */
static int set_status(const char *err)
{
    return strcmp(err, "value too long") == 0 ? 413 : strcmp(err, "out of memory") == 0 ? 500 : 507;
}

enum cmd { C_GET, C_SET, C_DEL, C_INCR, C_KEYS };

/* One command, from the words of a message or from an HTTP request. */
static tn_plugin_result run(kv *s, tn_plugin_call *call, enum cmd c, word key, word val, int64_t ttl)
{
    if (c != C_KEYS && key.len == 0)
        return fail(s, call, 400, "empty key");
    if (key.len > s->max_key)
        return fail(s, call, 400, "key too long");
    entry **at = c == C_KEYS ? NULL : slot(s, key.p, key.len, hash(key.p, key.len));
    switch (c) {
    case C_GET:
        if (!*at)
            return fail(s, call, 404, "no such key");
        s->host->reply(call, (*at)->val, (*at)->vlen);
        return TN_PLUGIN_REPLY;
    case C_SET: {
        const char *err = set(s, key, val.p, val.len, ttl);
        if (err)
            return fail(s, call, set_status(err), err);
        s->host->reply(call, "OK", 2);
        return TN_PLUGIN_REPLY;
    }
    case C_DEL: {
        bool had = *at != NULL;
        if (had)
            unlink_entry(s, at);
        s->host->reply(call, had ? "1" : "0", 1);
        return TN_PLUGIN_REPLY;
    }
    case C_INCR: {
        int64_t n = 0;
        if (*at && !parse_i64((*at)->val, (*at)->vlen, &n))
            return fail(s, call, 400, "value is not an integer");
        if (n == INT64_MAX)
            return fail(s, call, 400, "increment would overflow");
        char buf[24];
        int len = snprintf(buf, sizeof(buf), "%" PRId64, n + 1);
        const char *err = set(s, key, buf, (size_t)len, -1); /* -1: keep the expiry */
        if (err)
            return fail(s, call, set_status(err), err);
        s->host->reply(call, buf, (size_t)len);
        return TN_PLUGIN_REPLY;
    }
    case C_KEYS: return keys(s, call, key.p, key.len);
    }
    return TN_PLUGIN_ERROR;
}

static tn_plugin_result handle_words(kv *s, tn_plugin_call *call, const char *p, size_t len)
{
    static const struct { const char *name; enum cmd c; size_t min, max; } cmds[] = {
        { "GET", C_GET, 2, 2 }, { "SET", C_SET, 3, 5 }, { "DEL", C_DEL, 2, 2 },
        { "INCR", C_INCR, 2, 2 }, { "KEYS", C_KEYS, 1, 2 },
    };
    word w[6];
    size_t n = 0;
    while (len && (p[len - 1] == '\n' || p[len - 1] == '\r'))
        len--;
    for (size_t i = 0; i < len;) {
        while (i < len && p[i] == ' ')
            i++;
        size_t start = i;
        while (i < len && p[i] != ' ')
            i++;
        if (i == start)
            break;
        if (n == 6)
            return fail(s, call, 400, "too many words");
        w[n++] = (word){ p + start, i - start };
    }
    if (n == 0)
        return fail(s, call, 400, "empty command");
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        if (w[0].len != strlen(cmds[i].name) || strncasecmp(w[0].p, cmds[i].name, w[0].len) != 0)
            continue;
        if (n < cmds[i].min || n > cmds[i].max || n == 4)
            return fail(s, call, 400, "wrong number of arguments");
        int64_t ttl = 0;
        if (n == 5 && (w[3].len != 2 || strncasecmp(w[3].p, "EX", 2) != 0 || !parse_i64(w[4].p, w[4].len, &ttl) ||
                       ttl <= 0 || ttl > 100000000))
            return fail(s, call, 400, "syntax: SET key value [EX seconds]");
        word none = { "", 0 };
        return run(s, call, cmds[i].c, n > 1 ? w[1] : none, n > 2 ? w[2] : none, ttl);
    }
    return fail(s, call, 400, "unknown command");
}

static tn_plugin_result handle_http(kv *s, tn_plugin_call *call, const tn_plugin_ctx *ctx)
{
    size_t plen = strlen(s->prefix), blen;
    const char *body = s->host->payload(call, &blen);
    if (strncmp(ctx->path, s->prefix, plen) != 0)
        return fail(s, call, 404, "no such key");
    word key = { ctx->path + plen, strlen(ctx->path + plen) };
    word val = { body, blen };
    const char *m = ctx->method;
    if (key.len == 0 && strcmp(m, "GET") == 0) {
        const char *q = strncmp(ctx->query, "prefix=", 7) == 0 ? ctx->query + 7 : "";
        return run(s, call, C_KEYS, (word){ q, strcspn(q, "&") }, val, 0);
    }
    int64_t ttl = 0;
    if (strncmp(ctx->query, "ex=", 3) == 0 &&
        (!parse_i64(ctx->query + 3, strcspn(ctx->query + 3, "&"), &ttl) || ttl <= 0 || ttl > 100000000))
        return fail(s, call, 400, "invalid ex");
    if (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0)
        return run(s, call, C_GET, key, val, 0);
    if (strcmp(m, "PUT") == 0)
        return run(s, call, C_SET, key, val, ttl);
    if (strcmp(m, "DELETE") == 0)
        return run(s, call, C_DEL, key, val, 0);
    if (strcmp(m, "POST") == 0)
        return run(s, call, C_INCR, key, val, 0);
    s->host->http_set_header(call, "Allow", "GET, HEAD, PUT, DELETE, POST");
    return fail(s, call, 405, "method not allowed");
}

static tn_plugin_result kv_handle(void *state, tn_plugin_call *call)
{
    kv *s = state;
    tn_plugin_ctx ctx;
    s->host->context(call, &ctx);
    if (ctx.protocol == TN_PLUGIN_HTTP)
        return handle_http(s, call, &ctx);
    size_t len;
    const char *p = s->host->payload(call, &len);
    return handle_words(s, call, p, len);
}

static void kv_destroy(void *state)
{
    kv *s = state;
    for (size_t i = 0; i < s->nbucket; i++)
        for (entry *e = s->bucket[i], *next; e; e = next) {
            next = e->next;
            entry_free(e);
        }
    free(s->bucket);
    free(s->prefix);
    free(s);
}

static bool option_size(const tn_plugin_options *o, const char *key, size_t def, size_t *out, char *err, size_t errlen)
{
    const char *v = tn_plugin_option_get(o, key, NULL);
    int64_t n = (int64_t)def;
    if (v && (!parse_i64(v, strlen(v), &n) || n < 1 || n > (int64_t)1 << 40)) {
        snprintf(err, errlen, "option %s: expected a positive integer, got '%s'", key, v);
        return false;
    }
    *out = (size_t)n;
    return true;
}

static int kv_init(const tn_plugin_host *host, const tn_plugin_options *o, void **state, char *err, size_t errlen)
{
    kv *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->host = host;
    s->nbucket = 1024;
    s->bucket = calloc(s->nbucket, sizeof(*s->bucket));
    s->prefix = strdup(tn_plugin_option_get(o, "prefix", "/kv/"));
    if (!s->bucket || !s->prefix || !option_size(o, "max_key", 1024, &s->max_key, err, errlen) ||
        !option_size(o, "max_value", 1 << 20, &s->max_value, err, errlen) ||
        !option_size(o, "max_keys", 1000000, &s->max_keys, err, errlen) ||
        !option_size(o, "max_bytes", (size_t)256 << 20, &s->max_bytes, err, errlen)) {
        if (!s->bucket || !s->prefix)
            snprintf(err, errlen, "out of memory");
        kv_destroy(s);
        return -1;
    }
    s->c_keys = host->counter(host, "keys");
    s->c_expired = host->counter(host, "expired");
    *state = s;
    return 0;
}

TN_PLUGIN_EXPORT const tn_plugin_def tn_plugin = {
    .abi = TN_PLUGIN_ABI, .name = "kv", .init = kv_init, .handle = kv_handle, .destroy = kv_destroy,
};
