/* SPDX-License-Identifier: MIT */
/* proxy.c - the `proxy` handler type: its settings, its upstream group
 * (kept across a reload for the servers that stay), and the dispatch of
 * each call to the side serving its protocol. */
#include "upstream/proxy.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "json.h"
#include "log.h"

/* ---- settings ------------------------------------------------------------ */

static int parse_count(const char *key, const char *v, int lo, int hi, int *out, char *err, size_t errlen)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (end == v || *end || n < lo || n > hi) {
        snprintf(err, errlen, "%s must be from %d to %d, not '%s'", key, lo, hi, v);
        return -1;
    }
    *out = (int)n;
    return 0;
}

static int parse_ms(const char *key, const char *v, int64_t lo, int64_t *out, char *err, size_t errlen)
{
    if (tn_parse_duration_ms(v, out) < 0 || *out < lo) {
        snprintf(err, errlen, "%s must be a duration of at least %lldms, not '%s'", key, (long long)lo, v);
        return -1;
    }
    return 0;
}

/* health_check { path interval timeout rise fall expect_status } into G
 * (NULL: check only). */
static int parse_health(const tn_strmap *m, tn_upstream_group *g, char *err, size_t errlen)
{
    tn_upstream_group tmp = { 0 };
    if (!g)
        g = &tmp;
    g->check_interval_ms = m->n ? 5000 : 0;
    g->check_timeout_ms = 2000;
    g->check_rise = 2;
    g->check_fall = 3;
    g->check_status = 200;
    const char *path = NULL;
    for (size_t i = 0; i < m->n; i++) {
        const char *k = m->v[i].key, *v = m->v[i].val;
        int rc = 0;
        if (strcmp(k, "path") == 0) {
            if (v[0] != '/' || strpbrk(v, " \r\n\t")) {
                snprintf(err, errlen, "health_check.path must start with '/' and hold no spaces, not '%s'", v);
                return -1;
            }
            path = v;
        } else if (strcmp(k, "interval") == 0) {
            rc = parse_ms("health_check.interval", v, 10, &g->check_interval_ms, err, errlen);
        } else if (strcmp(k, "timeout") == 0) {
            rc = parse_ms("health_check.timeout", v, 1, &g->check_timeout_ms, err, errlen);
        } else if (strcmp(k, "rise") == 0) {
            rc = parse_count("health_check.rise", v, 1, 100, &g->check_rise, err, errlen);
        } else if (strcmp(k, "fall") == 0) {
            rc = parse_count("health_check.fall", v, 1, 100, &g->check_fall, err, errlen);
        } else if (strcmp(k, "expect_status") == 0) {
            rc = parse_count("health_check.expect_status", v, 100, 599, &g->check_status, err, errlen);
        } else {
            snprintf(err, errlen,
                     "health_check: unknown key '%s' (path, interval, timeout, rise, fall, expect_status)", k);
            return -1;
        }
        if (rc < 0)
            return -1;
    }
    if (path && g != &tmp && !(g->check_path = strdup(path))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static void tls_free(tn_proxy_tls *t)
{
    free(t->ca);
    free(t->sni);
    free(t->certificate);
    free(t->key);
    if (t->ctx)
        SSL_CTX_free(t->ctx);
    memset(t, 0, sizeof(*t));
}

static int parse_tls(const tn_strmap *m, tn_proxy_tls *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    t->enabled = m->n > 0;
    t->verify = true;
    for (size_t i = 0; i < m->n; i++) {
        const char *k = m->v[i].key, *v = m->v[i].val;
        char **slot = NULL;
        if (strcmp(k, "verify") == 0) {
            if (strcmp(v, "true") && strcmp(v, "false")) {
                snprintf(err, errlen, "tls.verify must be true or false, not '%s'", v);
                return -1;
            }
            t->verify = strcmp(v, "true") == 0;
            continue;
        }
        if (strcmp(k, "ca") == 0)
            slot = &t->ca;
        else if (strcmp(k, "sni") == 0)
            slot = &t->sni;
        else if (strcmp(k, "certificate") == 0)
            slot = &t->certificate;
        else if (strcmp(k, "key") == 0)
            slot = &t->key;
        if (!slot) {
            snprintf(err, errlen, "tls: unknown key '%s' (verify, ca, sni, certificate, key)", k);
            return -1;
        }
        if (slot != &t->sni && access(v, R_OK) < 0) {
            snprintf(err, errlen, "tls.%s: cannot read '%s'", k, v);
            return -1;
        }
        free(*slot);
        if (!(*slot = strdup(v))) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    if (!t->certificate != !t->key) {
        snprintf(err, errlen, "tls: certificate and key go together");
        return -1;
    }
    return 0;
}

static int tls_ctx(tn_proxy_tls *t, char *err, size_t errlen)
{
    if (!t->enabled)
        return 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "tls: cannot create a context");
        return -1;
    }
    t->ctx = ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, t->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (t->verify) {
        int ok = t->ca ? SSL_CTX_load_verify_locations(ctx, t->ca, NULL) : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            snprintf(err, errlen, "tls.ca: cannot load '%s'", t->ca ? t->ca : "the system's CAs");
            return -1;
        }
    }
    if (t->certificate && (SSL_CTX_use_certificate_chain_file(ctx, t->certificate) != 1 ||
                           SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM) != 1 ||
                           SSL_CTX_check_private_key(ctx) != 1)) {
        unsigned long e = ERR_get_error();
        snprintf(err, errlen, "tls: cannot use certificate '%s' with key '%s': %s", t->certificate, t->key,
                 e ? ERR_reason_error_string(e) : "mismatch");
        ERR_clear_error();
        return -1;
    }
    return 0;
}

int tn_proxy_check_conf(const tn_handler_conf *c, char *err, size_t errlen)
{
    tn_upstream_spec spec;
    for (size_t i = 0; i < c->upstreams.n; i++)
        if (tn_upstream_parse_spec(c->upstreams.v[i], &spec, err, errlen) < 0)
            return -1;
    if (c->upstreams.n == 0) {
        snprintf(err, errlen, "upstreams is empty");
        return -1;
    }
    const char *k = c->hash_key;
    if (k && *k && strcmp(k, "remote_addr") && strcmp(k, "token") &&
        !((strncmp(k, "header:", 7) == 0 || strncmp(k, "cookie:", 7) == 0) && k[7])) {
        snprintf(err, errlen, "hash_key '%s': expected remote_addr, token, header:NAME or cookie:NAME", k);
        return -1;
    }
    if (parse_health(&c->health_check, NULL, err, errlen) < 0)
        return -1;
    tn_proxy_tls t;
    int rc = parse_tls(&c->upstream_tls, &t, err, errlen);
    tls_free(&t);
    return rc;
}

/* ---- the handler ----------------------------------------------------------- */

tn_upstream_group *tn_proxy_group(const tn_handler *h)
{
    if (h->ops != &tn_proxy_ops || !h->state)
        return NULL;
    return ((const tn_proxy *)h->state)->group;
}

static const char *balance_name(int b)
{
    static const char *const names[] = { "round_robin", "least_conn", "hash" };
    return b >= 0 && b < 3 ? names[b] : "?";
}

/* Servers of proxy handlers a reload dropped with no proxy of the same
 * name left to list them (the whole handler went, or its name is now
 * another type) that still have work: the requests and splices in flight
 * hold their old handler, so its group is found among the live handlers.
 * Each server once, under the newest such handler, though older
 * generations of the handler may share it. Returns the count; with OUT
 * NULL, a bound on it (duplicates counted). */
static size_t retired_rows(tn_registry *r, tn_upstream_row *out, size_t cap)
{
    size_t n = 0;
    for (tn_handler *h = tn_registry_alive(r); h; h = h->alive_next) {
        tn_upstream_group *g = h->removed ? tn_proxy_group(h) : NULL;
        for (size_t i = 0; g && i < g->n; i++) {
            tn_upstream_server *s = g->servers[i];
            if (!s->removed || s->gone_in || !tn_upstream_gone_listed(s))
                continue;
            bool seen = false;
            for (size_t k = 0; out && k < n && !seen; k++)
                seen = out[k].s == s;
            if (seen)
                continue;
            if (out && n == cap)
                return n;
            if (out)
                out[n] = (tn_upstream_row){ h->name, s };
            n++;
        }
    }
    return n;
}

void tn_proxy_upstreams_json(tn_registry *r, tn_json *j)
{
    tn_json_open(j, "upstreams", '[');
    for (size_t i = 0; i < tn_registry_count(r); i++) {
        tn_handler *h = tn_registry_at(r, i);
        tn_upstream_group *g = tn_proxy_group(h);
        if (!g)
            continue;
        tn_json_open(j, NULL, '{');
        tn_json_str(j, "handler", h->name);
        tn_json_str(j, "balance", balance_name(g->balance));
        tn_json_bool(j, "removed", false);
        tn_upstream_group_json(g, j, "servers");
        tn_json_close(j, '}');
    }
    /* then the handlers a reload removed, one entry per name, while their
     * servers serve what was in flight */
    size_t n = retired_rows(r, NULL, 0);
    tn_upstream_row *rows = n ? calloc(n, sizeof(*rows)) : NULL;
    n = rows ? retired_rows(r, rows, n) : 0;
    for (size_t i = 0; i < n; i++) {
        if (!rows[i].handler)
            continue; /* listed with an earlier row of its name */
        const char *name = rows[i].handler;
        tn_handler *h = NULL;
        for (tn_handler *a = tn_registry_alive(r); a && !h; a = a->alive_next)
            if (a->removed && strcmp(a->name, name) == 0 && tn_proxy_group(a))
                h = a;
        tn_json_open(j, NULL, '{');
        tn_json_str(j, "handler", name);
        tn_json_str(j, "balance", balance_name(tn_proxy_group(h)->balance));
        tn_json_bool(j, "removed", true);
        tn_json_open(j, "servers", '[');
        for (size_t k = i; k < n; k++) {
            if (rows[k].handler && strcmp(rows[k].handler, name) == 0) {
                tn_upstream_server_json(j, rows[k].s);
                rows[k].handler = NULL;
            }
        }
        tn_json_close(j, ']');
        tn_json_close(j, '}');
    }
    free(rows);
    tn_json_close(j, ']');
}

int tn_proxy_upstream_cmd(tn_registry *r, char *arg, char *err, size_t errlen)
{
    static const char usage[] = "usage: upstream HANDLER SERVER drain|up|down|weight N";
    char *save = NULL;
    char *hname = arg ? strtok_r(arg, " ", &save) : NULL;
    char *sname = hname ? strtok_r(NULL, " ", &save) : NULL;
    char *action = sname ? strtok_r(NULL, " ", &save) : NULL;
    char *num = action ? strtok_r(NULL, " ", &save) : NULL;
    if (!action || (strcmp(action, "weight") == 0) != (num != NULL) || strtok_r(NULL, " ", &save)) {
        snprintf(err, errlen, "%s", usage);
        return -1;
    }
    tn_handler *h = tn_registry_find(r, hname);
    tn_upstream_group *g = h ? tn_proxy_group(h) : NULL;
    if (!g) {
        snprintf(err, errlen, h ? "handler '%s' is not a proxy" : "no handler '%s'", hname);
        return -1;
    }
    tn_upstream_server *s = tn_upstream_find(g, sname);
    if (!s) {
        if (tn_upstream_find_gone(g, sname))
            snprintf(err, errlen, "upstream '%s' of '%s' was removed by a reload and drains until its requests end",
                     sname, hname);
        else
            snprintf(err, errlen, "handler '%s' has no upstream '%s'", hname, sname);
        return -1;
    }
    int weight = 0;
    if (num) {
        char *end;
        long v = strtol(num, &end, 10);
        weight = *end || v < 0 || v > 100000 ? -1 : (int)v;
    }
    return tn_upstream_admin_cmd(g, s, action, weight, err, errlen);
}

void tn_proxy_prometheus(tn_registry *r, struct evbuffer *out)
{
    size_t n = retired_rows(r, NULL, 0);
    for (size_t i = 0; i < tn_registry_count(r); i++) {
        tn_upstream_group *g = tn_proxy_group(tn_registry_at(r, i));
        n += g ? g->n + g->ngone : 0;
    }
    tn_upstream_row *rows = n ? calloc(n, sizeof(*rows)) : NULL;
    if (!rows)
        return;
    size_t k = 0;
    for (size_t i = 0; i < tn_registry_count(r); i++) {
        tn_handler *h = tn_registry_at(r, i);
        tn_upstream_group *g = tn_proxy_group(h);
        for (size_t si = 0; g && si < g->n; si++)
            rows[k++] = (tn_upstream_row){ h->name, g->servers[si] };
        for (size_t si = 0; g && si < g->ngone; si++)
            if (tn_upstream_gone_listed(g->gone[si]))
                rows[k++] = (tn_upstream_row){ h->name, g->gone[si] };
    }
    k += retired_rows(r, rows + k, n - k);
    tn_upstream_prometheus(rows, k, out);
    free(rows);
}

static const tn_proxy_side *side_of(int protocol)
{
    return protocol == TN_PROTO_TCP ? tn_proxy_line_side : tn_proxy_http_side;
}

static void proxy_free(tn_proxy *p)
{
    for (int i = 0; i < 2; i++) {
        const tn_proxy_side *side = i ? tn_proxy_line_side : tn_proxy_http_side;
        if (side && side->destroy)
            side->destroy(p);
    }
    tn_upstream_group_free(p->group);
    tls_free(&p->tls);
    free(p);
}

static int proxy_init(tn_handler *h, char *err, size_t errlen)
{
    tn_proxy *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->h = h;
    const tn_upstream_group *old = h->replacing ? tn_proxy_group(h->replacing) : NULL;
    if (tn_proxy_check_conf(&h->conf, err, errlen) < 0 ||
        !(p->group = tn_upstream_group_new(&h->conf, h->base, old, err, errlen)) ||
        parse_health(&h->conf.health_check, p->group, err, errlen) < 0 ||
        parse_tls(&h->conf.upstream_tls, &p->tls, err, errlen) < 0 || tls_ctx(&p->tls, err, errlen) < 0) {
        proxy_free(p);
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        const tn_proxy_side *side = i ? tn_proxy_line_side : tn_proxy_http_side;
        if (side && side->init && side->init(p, err, errlen) < 0) {
            proxy_free(p);
            return -1;
        }
    }
    h->state = p;
    p->group->check_tls = &p->tls;
    tn_upstream_checks_start(p->group);
    if (tn_upstream_resolve_start(p->group, err, errlen) < 0) {
        h->state = NULL;
        proxy_free(p);
        return -1;
    }
    return 0;
}

static tn_result proxy_handle(tn_handler *h, tn_call *call)
{
    tn_proxy *p = h->state;
    const tn_proxy_side *side = call->ctx.http ? tn_proxy_http_side : side_of(call->ctx.protocol);
    if (!side) {
        evbuffer_add_printf(call->out, "proxy: not available on this protocol");
        return TN_FAIL;
    }
    return side->handle(p, call);
}

static void *proxy_attach(tn_handler *h, tn_session *s)
{
    const tn_proxy_side *side = side_of(s->protocol);
    return side && side->attach ? side->attach(h->state, s) : NULL;
}

static void proxy_detach(tn_handler *h, tn_session *s, void *state)
{
    const tn_proxy_side *side = side_of(s->protocol);
    if (side && side->detach)
        side->detach(h->state, s, state);
}

static bool proxy_input_end(tn_handler *h, tn_session *s, void *state)
{
    const tn_proxy_side *side = side_of(s->protocol);
    return side && side->input_end ? side->input_end(h->state, s, state) : false;
}

static bool proxy_takeover(tn_handler *h, struct tn_conn *c)
{
    const tn_proxy_side *side = side_of(TN_PROTO_TCP);
    return side && side->takeover ? side->takeover(h->state, c) : false;
}

/* The registry dropped H: the handler of the same name now in it (if any)
 * takes over the listing of the servers H had and it has not. */
static void proxy_retire(tn_handler *h)
{
    tn_upstream_group *old = tn_proxy_group(h);
    if (!old)
        return;
    tn_handler *next = h->registry ? tn_registry_find(h->registry, h->name) : NULL;
    tn_upstream_group_succeed(old, next ? tn_proxy_group(next) : NULL);
}

static void proxy_destroy(tn_handler *h)
{
    if (h->state)
        proxy_free(h->state);
    h->state = NULL;
}

const tn_handler_ops tn_proxy_ops = {
    .type = "proxy",
    .init = proxy_init,
    .handle = proxy_handle,
    .attach = proxy_attach,
    .detach = proxy_detach,
    .input_end = proxy_input_end,
    .takeover = proxy_takeover,
    .retire = proxy_retire,
    .destroy = proxy_destroy,
    .http_stream = true,
};
