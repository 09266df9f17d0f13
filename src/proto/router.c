/* SPDX-License-Identifier: MIT */
/* router.c - HTTP routes: from a listener's config to the route a request
 * takes.
 *
 * Everything is decided when the router is built, so matching a request
 * allocates nothing: routes are grouped by the shape of their path (param
 * names do not count: "/users/:id" and "/users/:name" are one shape), shapes
 * are sorted most specific first (exact, then parameter patterns with more
 * literal segments, earlier ones first, then prefixes, longer first), and
 * exact paths are found through a small hash table. Within a shape the route
 * naming the request's method beats a HEAD-served-by-GET route, which beats
 * a route for any method. A request takes the first shape that has a route
 * for its method; only when none does are the methods of the shapes that
 * matched the path collected for the 405's Allow header.
 *
 * The router also owns the middleware instances of its routes: one per name,
 * shared by every route naming it (one rate-limit table for the listener,
 * one access log file descriptor), each route holding its own ordered list
 * (the listener's names, then the route's, each name once). */
#include "proto/http.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "state.h"

#define MAX_PARAMS (sizeof(((tn_http_request *)0)->param_values) / sizeof(const char *))
#define MAX_ALLOW 32

enum { K_EXACT, K_PARAM, K_PREFIX };

typedef struct seg {
    const char *s; /* into the shape's path */
    size_t len;
    bool param;
} seg;

/* Responses by status class. Shared, by route spec, between the routers a
 * reload replaces and the one replacing them, so a route that stays keeps
 * counting (also for requests still in flight on the old router). */
typedef struct counts {
    int refs;
    uint64_t n[TN_HTTP_CLASSES];
} counts;

typedef struct route_ent {
    tn_http_route pub; /* first: a route pointer is its entry's */
    counts *counts;
    char *method;  /* "*" for any */
    bool any;
    bool has_cors; /* may answer CORS preflights for its path */
    char *names;   /* param names, NUL-separated; pnames point into it */
    const char *pnames[MAX_PARAMS];
    size_t nparams;
} route_ent;

typedef struct shape {
    int kind;
    char *path;   /* exact: the path; prefix: the literal prefix; param: the route's path */
    size_t len;
    seg *segs;    /* param shapes */
    size_t nsegs;
    bool rest;    /* a param shape ending in the prefix wildcard */
    unsigned nlit;
    uint64_t litmask; /* bit 63 - i: segment i is literal (earlier literals rank higher) */
    size_t first; /* config index of its first route: ties keep config order */
    route_ent **routes;
    size_t nroutes;
} shape;

typedef struct named_mw {
    char *name;
    tn_mw *mw;
} named_mw;

struct tn_http_router {
    shape *shapes; /* sorted, most specific first; exact ones at the front */
    size_t nshapes, nexact;
    uint32_t *exact_tab; /* open addressing: shape index + 1, 0 = empty */
    size_t exact_mask;
    route_ent *ents;
    size_t nents;
    named_mw *mws;
    size_t nmws;
    tn_http_route fallback; /* the listener's middleware, no handler */
    counts *unrouted;       /* responses no route gave */
    /* Requests in flight keep the router they started with; route configs
     * point into the config that built it, which the router holds. */
    int refs;
    tn_config *cfg;
};

/* ---- building ---------------------------------------------------------------- */

static void counts_unref(counts *k)
{
    if (k && --k->refs == 0)
        free(k);
}

static counts *counts_new(void)
{
    counts *k = calloc(1, sizeof(*k));
    if (k)
        k->refs = 1;
    return k;
}

static void counts_share(counts **dst, counts *src)
{
    src->refs++;
    counts_unref(*dst);
    *dst = src;
}

static uint64_t hash_path(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static const tn_middleware_conf *find_mw_conf(const tn_config *cfg, const char *name)
{
    for (size_t i = 0; cfg && i < cfg->nmiddleware; i++)
        if (strcmp(cfg->middleware[i].name, name) == 0)
            return &cfg->middleware[i];
    return NULL;
}

static tn_mw *router_mw(tn_http_router *rt, tn_daemon *d, const tn_config *cfg, const tn_listener_conf *lc,
                        const char *name, bool *is_cors, char *err, size_t errlen)
{
    const tn_middleware_conf *mc = find_mw_conf(cfg, name);
    if (!mc) {
        snprintf(err, errlen, "listener '%s': undefined middleware '%s'", lc->name, name);
        return NULL;
    }
    *is_cors = mc->type == TN_MW_CORS;
    for (size_t i = 0; i < rt->nmws; i++)
        if (strcmp(rt->mws[i].name, name) == 0)
            return rt->mws[i].mw;
    named_mw *v = realloc(rt->mws, (rt->nmws + 1) * sizeof(*v));
    if (!v) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rt->mws = v;
    char why[256];
    tn_mw *mw = tn_mw_new(d, mc, why, sizeof(why));
    if (!mw) {
        snprintf(err, errlen, "listener '%s': middleware '%s': %s", lc->name, name, why);
        return NULL;
    }
    v[rt->nmws].name = strdup(name);
    if (!v[rt->nmws].name) {
        tn_mw_free(mw);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    v[rt->nmws++].mw = mw;
    return mw;
}

/* The listener's middleware then ROUTE's (NULL: the listener's only), each
 * name once, in order. */
static int build_mw_list(tn_http_router *rt, tn_daemon *d, const tn_config *cfg, const tn_listener_conf *lc,
                         const tn_route_conf *route, tn_http_route *out, bool *has_cors, char *err, size_t errlen)
{
    size_t n = lc->middleware.n + (route ? route->middleware.n : 0);
    *has_cors = false;
    out->middleware = NULL;
    out->nmiddleware = 0;
    if (!n)
        return 0;
    out->middleware = calloc(n, sizeof(tn_mw *));
    if (!out->middleware) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = i < lc->middleware.n ? lc->middleware.v[i] : route->middleware.v[i - lc->middleware.n];
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++) {
            const char *prev = j < lc->middleware.n ? lc->middleware.v[j] : route->middleware.v[j - lc->middleware.n];
            dup = strcmp(prev, name) == 0;
        }
        if (dup)
            continue;
        bool cors = false;
        tn_mw *mw = router_mw(rt, d, cfg, lc, name, &cors, err, errlen);
        if (!mw)
            return -1;
        *has_cors |= cors;
        out->middleware[out->nmiddleware++] = mw;
    }
    return 0;
}

/* Splits PATH into the shape key (param names dropped) and, for param
 * shapes, the names. Returns the kind, or -1 (too many parameters). */
static int parse_path(const char *path, char *key, char *names, const char **pnames, size_t *nparams, bool *rest)
{
    size_t len = strlen(path);
    *rest = len >= 2 && path[len - 2] == '/' && path[len - 1] == '*';
    size_t base = *rest ? len - 2 : len;
    size_t k = 0, nn = 0;
    *nparams = 0;
    for (size_t i = 0; i < base;) {
        key[k++] = path[i++]; /* the '/' */
        if (i < base && path[i] == ':') {
            if (*nparams == MAX_PARAMS)
                return -1;
            key[k++] = ':';
            size_t e = i + 1;
            while (e < base && path[e] != '/')
                e++;
            pnames[(*nparams)++] = names + nn;
            memcpy(names + nn, path + i + 1, e - i - 1);
            nn += e - i - 1;
            names[nn++] = '\0';
            i = e;
        } else {
            while (i < base && path[i] != '/')
                key[k++] = path[i++];
        }
    }
    if (*rest) {
        key[k++] = '/';
        key[k++] = '*';
    }
    key[k] = '\0';
    if (*nparams)
        return K_PARAM;
    return *rest ? K_PREFIX : K_EXACT;
}

static int shape_init(shape *s, int kind, bool rest, const char *key, size_t first)
{
    s->kind = kind;
    s->rest = rest;
    s->first = first;
    s->path = strdup(key);
    if (!s->path)
        return -1;
    size_t len = strlen(key);
    s->len = kind == K_EXACT ? len : (rest ? len - 2 : len);
    if (kind == K_PREFIX)
        s->path[s->len] = '\0';
    if (kind != K_PARAM)
        return 0;
    size_t base = s->len, n = 0;
    for (size_t i = 0; i < base; i++)
        n += s->path[i] == '/';
    s->segs = calloc(n ? n : 1, sizeof(seg));
    if (!s->segs)
        return -1;
    for (size_t i = 0; i < base;) {
        i++; /* '/' */
        size_t e = i;
        while (e < base && s->path[e] != '/')
            e++;
        seg *g = &s->segs[s->nsegs];
        g->s = s->path + i;
        g->len = e - i;
        g->param = g->len == 1 && s->path[i] == ':';
        if (!g->param) {
            s->nlit++;
            if (s->nsegs < 64)
                s->litmask |= 1ULL << (63 - s->nsegs);
        }
        s->nsegs++;
        i = e;
    }
    return 0;
}

static int shape_cmp(const void *pa, const void *pb)
{
    const shape *a = pa, *b = pb;
    /* param shapes ending in the prefix wildcard rank as prefixes */
    int ka = a->kind == K_PARAM && a->rest ? K_PREFIX : a->kind;
    int kb = b->kind == K_PARAM && b->rest ? K_PREFIX : b->kind;
    if (ka != kb)
        return ka - kb;
    if (ka == K_PREFIX) {
        /* longer prefix first: count segments of the prefix */
        size_t sa = a->kind == K_PARAM ? a->nsegs : 0, sb = b->kind == K_PARAM ? b->nsegs : 0;
        if (a->kind == K_PREFIX)
            for (size_t i = 0; i < a->len; i++)
                sa += a->path[i] == '/';
        if (b->kind == K_PREFIX)
            for (size_t i = 0; i < b->len; i++)
                sb += b->path[i] == '/';
        if (sa != sb)
            return sa > sb ? -1 : 1;
        unsigned la = a->kind == K_PARAM ? a->nlit : (unsigned)sa;
        unsigned lb = b->kind == K_PARAM ? b->nlit : (unsigned)sb;
        if (la != lb)
            return la > lb ? -1 : 1;
        if (a->kind == K_PARAM && b->kind == K_PARAM && a->litmask != b->litmask)
            return a->litmask > b->litmask ? -1 : 1;
        if (a->len != b->len)
            return a->len > b->len ? -1 : 1;
    } else if (ka == K_PARAM) {
        if (a->nlit != b->nlit)
            return a->nlit > b->nlit ? -1 : 1;
        if (a->litmask != b->litmask)
            return a->litmask > b->litmask ? -1 : 1;
    }
    return a->first < b->first ? -1 : a->first > b->first;
}

static int build_exact_table(tn_http_router *rt)
{
    if (!rt->nexact)
        return 0;
    size_t size = 8;
    while (size < rt->nexact * 2)
        size *= 2;
    rt->exact_tab = calloc(size, sizeof(uint32_t));
    if (!rt->exact_tab)
        return -1;
    rt->exact_mask = size - 1;
    for (size_t i = 0; i < rt->nexact; i++) {
        size_t h = hash_path(rt->shapes[i].path, rt->shapes[i].len) & rt->exact_mask;
        while (rt->exact_tab[h])
            h = (h + 1) & rt->exact_mask;
        rt->exact_tab[h] = (uint32_t)i + 1;
    }
    return 0;
}

void tn_http_router_ref(tn_http_router *rt)
{
    rt->refs++;
}

void tn_http_router_unref(tn_http_router *rt)
{
    if (rt && --rt->refs <= 0)
        tn_http_router_free(rt);
}

void tn_http_router_free(tn_http_router *rt)
{
    if (!rt)
        return;
    for (size_t i = 0; i < rt->nents; i++) {
        route_ent *e = &rt->ents[i];
        if (e->pub.handler)
            tn_handler_unref(e->pub.handler);
        free(e->pub.middleware);
        counts_unref(e->counts);
        free(e->method);
        free(e->names);
    }
    free(rt->ents);
    for (size_t i = 0; i < rt->nshapes; i++) {
        free(rt->shapes[i].path);
        free(rt->shapes[i].segs);
        free(rt->shapes[i].routes);
    }
    free(rt->shapes);
    free(rt->exact_tab);
    for (size_t i = 0; i < rt->nmws; i++) {
        tn_mw_free(rt->mws[i].mw);
        free(rt->mws[i].name);
    }
    free(rt->mws);
    free(rt->fallback.middleware);
    counts_unref(rt->unrouted);
    tn_config_unref(rt->cfg);
    free(rt);
}

tn_http_router *tn_http_router_new(tn_daemon *d, tn_config *cfg, const tn_listener_conf *conf, char *err,
                                   size_t errlen)
{
    tn_http_router *rt = calloc(1, sizeof(*rt));
    size_t n = conf->nroutes;
    char *key = NULL;
    if (!rt)
        goto oom;
    rt->refs = 1;
    rt->cfg = tn_config_ref(cfg);
    rt->ents = calloc(n ? n : 1, sizeof(route_ent));
    rt->shapes = calloc(n ? n : 1, sizeof(shape));
    rt->unrouted = counts_new();
    if (!rt->ents || !rt->shapes || !rt->unrouted)
        goto oom;
    bool fallback_cors;
    if (build_mw_list(rt, d, cfg, conf, NULL, &rt->fallback, &fallback_cors, err, errlen) < 0)
        goto fail;

    for (size_t i = 0; i < n; i++) {
        const tn_route_conf *rc = &conf->routes[i];
        route_ent *e = &rt->ents[rt->nents++];
        e->pub.conf = rc;
        e->pub.handler = tn_registry_find(d->registry, rc->handler);
        if (!e->pub.handler) {
            snprintf(err, errlen, "listener '%s': route '%s': handler '%s' is not running", conf->name, rc->spec,
                     rc->handler);
            goto fail;
        }
        tn_handler_ref(e->pub.handler);
        e->method = strdup(rc->method);
        e->counts = counts_new();
        size_t plen = strlen(rc->path);
        free(key);
        key = malloc(plen + 3);
        e->names = malloc(plen + 1);
        if (!e->method || !e->counts || !key || !e->names)
            goto oom;
        e->any = strcmp(rc->method, "*") == 0;
        bool rest;
        int kind = parse_path(rc->path, key, e->names, e->pnames, &e->nparams, &rest);
        if (kind < 0) {
            snprintf(err, errlen, "listener '%s': route '%s': more than %zu parameters", conf->name, rc->spec,
                     MAX_PARAMS);
            goto fail;
        }
        if (build_mw_list(rt, d, cfg, conf, rc, &e->pub, &e->has_cors, err, errlen) < 0)
            goto fail;
        shape *s = NULL;
        for (size_t j = 0; j < rt->nshapes && !s; j++) {
            shape *t = &rt->shapes[j];
            /* prefix shapes keep only the prefix in path; compare keys alike */
            if (t->kind == kind && t->rest == rest && strlen(t->path) + (kind == K_PREFIX ? 2 : 0) == strlen(key) &&
                strncmp(t->path, key, strlen(t->path)) == 0)
                s = t;
        }
        if (!s) {
            s = &rt->shapes[rt->nshapes++];
            if (shape_init(s, kind, rest, key, i) < 0)
                goto oom;
        }
        route_ent **v = realloc(s->routes, (s->nroutes + 1) * sizeof(*v));
        if (!v)
            goto oom;
        s->routes = v;
        v[s->nroutes++] = e;
    }
    free(key);
    key = NULL;
    /* shapes point at entries, not at each other: sorting them is safe */
    qsort(rt->shapes, rt->nshapes, sizeof(shape), shape_cmp);
    while (rt->nexact < rt->nshapes && rt->shapes[rt->nexact].kind == K_EXACT)
        rt->nexact++;
    if (build_exact_table(rt) < 0)
        goto oom;
    return rt;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    free(key);
    tn_http_router_free(rt);
    return NULL;
}

/* The listener's middleware as a route with no handler, for responses no
 * route produced (404, 405, malformed requests): after() and done() of
 * these may run on them (headers, CORS, access log). */
const tn_http_route *tn_http_router_fallback(const tn_http_router *rt)
{
    return rt && rt->fallback.nmiddleware ? &rt->fallback : NULL;
}

/* ---- response counts ------------------------------------------------------------ */

void tn_http_router_inherit(tn_http_router *rt, const tn_http_router *old)
{
    if (!old)
        return;
    counts_share(&rt->unrouted, old->unrouted);
    for (size_t i = 0; i < rt->nents; i++)
        for (size_t j = 0; j < old->nents; j++)
            if (strcmp(rt->ents[i].pub.conf->spec, old->ents[j].pub.conf->spec) == 0) {
                counts_share(&rt->ents[i].counts, old->ents[j].counts);
                break;
            }
}

void tn_http_router_count(tn_http_router *rt, const tn_http_route *route, int status)
{
    counts *k = route && route != &rt->fallback ? ((const route_ent *)route)->counts : rt->unrouted;
    k->n[tn_http_class(status)]++;
}

void tn_http_router_counts(const tn_http_router *rt, tn_http_counts_fn fn, void *arg)
{
    for (size_t i = 0; i < rt->nents; i++)
        fn(arg, rt->ents[i].pub.conf->spec, rt->ents[i].counts->n);
    fn(arg, NULL, rt->unrouted->n);
}

/* ---- matching ------------------------------------------------------------------ */

typedef struct span {
    const char *s;
    size_t len;
} span;

/* Param shape against PATH; fills VALS (one per param segment) on success. */
static bool match_segs(const shape *s, const char *path, span *vals)
{
    const char *p = path;
    size_t nv = 0;
    for (size_t i = 0; i < s->nsegs; i++) {
        if (*p != '/')
            return false;
        p++;
        const char *e = strchrnul(p, '/');
        size_t len = (size_t)(e - p);
        const seg *g = &s->segs[i];
        if (g->param) {
            if (!len)
                return false;
            vals[nv].s = p;
            vals[nv++].len = len;
        } else if (len != g->len || memcmp(p, g->s, len) != 0) {
            return false;
        }
        p = e;
    }
    return s->rest ? (*p == '\0' || *p == '/') : *p == '\0';
}

static bool match_prefix(const shape *s, const char *path)
{
    return strncmp(path, s->path, s->len) == 0 && (path[s->len] == '\0' || path[s->len] == '/');
}

typedef struct allow_set {
    const char *m[MAX_ALLOW];
    size_t n;
} allow_set;

static void allow_add(allow_set *a, const char *m)
{
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->m[i], m) == 0)
            return;
    if (a->n < MAX_ALLOW)
        a->m[a->n++] = m;
}

/* The shape's best route for METHOD, or NULL (its methods then go to ALLOW). */
static const route_ent *pick(const shape *s, const char *method, bool head, allow_set *allow)
{
    const route_ent *best = NULL;
    int best_score = 0;
    for (size_t i = 0; i < s->nroutes; i++) {
        const route_ent *e = s->routes[i];
        int score = e->any ? 1 : strcmp(e->method, method) == 0 ? 3 : head && strcmp(e->method, "GET") == 0 ? 2 : 0;
        if (score > best_score) {
            best = e;
            best_score = score;
        }
    }
    if (!best && allow)
        for (size_t i = 0; i < s->nroutes; i++) {
            allow_add(allow, s->routes[i]->method);
            if (strcmp(s->routes[i]->method, "GET") == 0)
                allow_add(allow, "HEAD");
        }
    return best;
}

static const shape *exact_shape(const tn_http_router *rt, const char *path)
{
    if (!rt->nexact)
        return NULL;
    size_t len = strlen(path);
    size_t h = hash_path(path, len) & rt->exact_mask;
    for (uint32_t i; (i = rt->exact_tab[h]) != 0; h = (h + 1) & rt->exact_mask) {
        const shape *s = &rt->shapes[i - 1];
        if (s->len == len && memcmp(s->path, path, len) == 0)
            return s;
    }
    return NULL;
}

static bool shape_matches(const shape *s, const char *path, span *vals)
{
    return s->kind == K_PREFIX ? match_prefix(s, path) : match_segs(s, path, vals);
}

static const route_ent *find(const tn_http_router *rt, const char *method, const char *path, span *vals,
                             allow_set *allow)
{
    bool head = strcmp(method, "HEAD") == 0;
    const shape *s = exact_shape(rt, path);
    const route_ent *e = s ? pick(s, method, head, allow) : NULL;
    if (e)
        return e;
    for (size_t i = rt->nexact; i < rt->nshapes; i++) {
        s = &rt->shapes[i];
        if (shape_matches(s, path, vals) && (e = pick(s, method, head, allow)) != NULL)
            return e;
    }
    return NULL;
}

static const route_ent *cors_route(const shape *s)
{
    for (size_t j = 0; j < s->nroutes; j++)
        if (s->routes[j]->has_cors)
            return s->routes[j];
    return NULL;
}

/* The most specific route at PATH, whatever its method, that has cors. */
static const route_ent *find_cors(const tn_http_router *rt, const char *path, span *vals)
{
    const shape *s = exact_shape(rt, path);
    const route_ent *e = s ? cors_route(s) : NULL;
    if (e)
        return e;
    for (size_t i = rt->nexact; i < rt->nshapes; i++) {
        s = &rt->shapes[i];
        if (shape_matches(s, path, vals) && (e = cors_route(s)) != NULL)
            return e;
    }
    return NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const char *allow_join(tn_http_request *r, allow_set *a)
{
    qsort(a->m, a->n, sizeof(a->m[0]), cmp_str);
    char buf[MAX_ALLOW * 34];
    size_t k = 0;
    for (size_t i = 0; i < a->n; i++) {
        size_t len = strlen(a->m[i]);
        if (k + len + 2 >= sizeof(buf))
            break;
        if (i) {
            buf[k++] = ',';
            buf[k++] = ' ';
        }
        memcpy(buf + k, a->m[i], len);
        k += len;
    }
    return tn_http_strdup(r, buf, k);
}

static void set_params(tn_http_request *r, const route_ent *e, const span *vals)
{
    r->nparams = e->nparams;
    for (size_t i = 0; i < e->nparams; i++) {
        r->param_names[i] = e->pnames[i];
        /* a value ending the path is already NUL-terminated there */
        r->param_values[i] = vals[i].s[vals[i].len] == '\0' ? vals[i].s : tn_http_strdup(r, vals[i].s, vals[i].len);
    }
}

const tn_http_route *tn_http_route_match(const tn_http_router *rt, tn_http_request *r, const char **allow)
{
    span vals[MAX_PARAMS];
    *allow = NULL;
    r->nparams = 0;
    if (r->method[0] == 'O' && strcmp(r->method, "OPTIONS") == 0) {
        /* A CORS preflight asks about the method it will use: route it
         * like that method so the route's cors middleware answers; a
         * method no route has is still answered by a route at the path
         * with cors (its answer lists what is allowed). */
        const char *want = tn_http_header_get(r, "Access-Control-Request-Method");
        if (want && tn_http_header_get(r, "Origin")) {
            const route_ent *e = find(rt, want, r->path, vals, NULL);
            if (!e || !e->has_cors)
                e = find_cors(rt, r->path, vals);
            if (e) {
                set_params(r, e, vals);
                return &e->pub;
            }
        }
    }
    allow_set as;
    as.n = 0;
    const route_ent *e = find(rt, r->method, r->path, vals, &as);
    if (e) {
        set_params(r, e, vals);
        return &e->pub;
    }
    if (as.n)
        *allow = allow_join(r, &as);
    return NULL;
}

/* The router matched the route, so PATH has as many leading segments as the
 * pattern before its final star; counting segments rather than comparing
 * text also covers patterns with parameters ("/users/:id/files/" + "*"). */
const char *tn_http_route_rest_of(const tn_http_request *r, const char *path)
{
    const char *pattern = r->route && r->route->conf ? r->route->conf->path : NULL;
    size_t plen = pattern ? strlen(pattern) : 0;
    if (plen < 2 || pattern[plen - 1] != '*' || pattern[plen - 2] != '/')
        return path;
    size_t segments = 0;
    for (size_t i = 0; i + 2 < plen; i++)
        segments += pattern[i] == '/';
    const char *p = path;
    for (; segments > 0 && *p; segments--) {
        p++; /* the '/' */
        while (*p && *p != '/')
            p++;
    }
    return p;
}
