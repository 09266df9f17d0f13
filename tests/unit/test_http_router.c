/* SPDX-License-Identifier: MIT */
/* test_http_router.c - HTTP routes and middleware (src/proto/router.c,
 * src/proto/middleware.c), driven through the real config loader and
 * handler registry: route precedence (exact, parameters, prefixes, the
 * catch-all, method-specific over any-method, HEAD served by GET),
 * parameters, 404 against 405 with the exact Allow value, CORS preflight
 * routing, router build errors; then each middleware kind on hand-built
 * requests: cors preflights and simple requests, gzip (checked by inflating
 * the output) with q-values, min_size, skip_types and Vary, auth (bearer and
 * basic), rate limiting with Retry-After, headers set/add, and the access
 * log in both formats. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <zlib.h>

#include "clock.h"
#include "config/tusk.h"
#include "daemon.h"
#include "log.h"
#include "proto/http.h"
#include "unit_util.h"

/* ---- fixture ------------------------------------------------------------------- */

typedef struct fx {
    struct event_base *base;
    tn_daemon *d;
    tn_config *cfg;
} fx;

static tn_config *load(const char *text)
{
    tn_doc doc = { 0 };
    tn_diag diag = { 0 };
    tn_tusk_parse_string(&doc, "test.conf", text, strlen(text), &diag);
    tn_config *cfg = tn_config_from_doc(&doc, "test.conf", &diag);
    if (!cfg || tn_diag_errors(&diag))
        tn_diag_print(&diag, stderr);
    tn_diag_free(&diag);
    assert_non_null(cfg);
    return cfg;
}

static fx *fx_new(const char *text)
{
    fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->base = event_base_new();
    f->d = calloc(1, sizeof(*f->d));
    f->d->base = f->base;
    f->cfg = load(text);
    f->d->cfg = f->cfg;
    f->d->registry = tn_registry_new(f->base, f->d);
    char err[512];
    assert_int_equal(tn_registry_apply(f->d->registry, f->cfg, err, sizeof(err)), 0);
    return f;
}

static void fx_free(fx *f)
{
    tn_registry_free(f->d->registry, 0);
    tn_config_free(f->cfg);
    free(f->d);
    event_base_free(f->base);
    free(f);
}

static const tn_listener_conf *listener(fx *f, const char *name)
{
    for (size_t i = 0; i < f->cfg->nlisteners; i++)
        if (strcmp(f->cfg->listeners[i].name, name) == 0)
            return &f->cfg->listeners[i];
    fail_msg("no listener %s", name);
    return NULL;
}

static tn_http_router *router(fx *f, const char *name)
{
    char err[512] = "";
    tn_http_router *rt = tn_http_router_new(f->d, f->cfg, listener(f, name), err, sizeof(err));
    if (!rt)
        fail_msg("router: %s", err);
    return rt;
}

static tn_mw *mw(fx *f, const char *name)
{
    for (size_t i = 0; i < f->cfg->nmiddleware; i++) {
        if (strcmp(f->cfg->middleware[i].name, name) == 0) {
            char err[256] = "";
            tn_mw *m = tn_mw_new(f->d, &f->cfg->middleware[i], err, sizeof(err));
            if (!m)
                fail_msg("middleware %s: %s", name, err);
            return m;
        }
    }
    fail_msg("no middleware %s", name);
    return NULL;
}

/* ---- requests -------------------------------------------------------------------- */

typedef struct treq {
    tn_http_request r;
    tn_http_header h[16];
    struct evbuffer *body; /* the response body middleware work on */
} treq;

/* METHOD PATH with NULL-terminated name, value pairs of request headers. */
static treq *req(const char *method, const char *target, ...)
{
    treq *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    tn_http_request *r = &t->r;
    r->method = method;
    r->target = target;
    const char *q = strchr(target, '?');
    r->path = q ? tn_http_strdup(r, target, (size_t)(q - target)) : target;
    r->query = q ? q + 1 : "";
    r->http_major = 1;
    r->http_minor = 1;
    r->keep_alive = true;
    r->head = strcmp(method, "HEAD") == 0;
    r->headers = t->h;
    r->remote_addr = "192.0.2.1:40000";
    r->remote_ip = "192.0.2.1";
    r->listener = "web";
    r->started_us = tn_now_us(); /* as the HTTP layer sets it */
    r->file_fd = -1;
    va_list ap;
    va_start(ap, target);
    const char *name;
    while ((name = va_arg(ap, const char *)) != NULL) {
        t->h[r->nheaders].name = name;
        t->h[r->nheaders++].value = va_arg(ap, const char *);
    }
    va_end(ap);
    t->body = evbuffer_new();
    return t;
}

static void req_free(treq *t)
{
    free_arena(&t->r);
    evbuffer_free(t->body);
    free(t);
}

static const char *resp(treq *t, const char *name)
{
    return tn_http_resp_header_get(&t->r, name);
}

static size_t resp_count(treq *t, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < t->r.nresp; i++)
        n += strcasecmp(t->r.resp_headers[i].name, name) == 0;
    return n;
}

static char *body_str(treq *t)
{
    size_t n = evbuffer_get_length(t->body);
    char *s = malloc(n + 1);
    evbuffer_copyout(t->body, s, n);
    s[n] = '\0';
    return s;
}

static void assert_body(treq *t, const char *want)
{
    char *s = body_str(t);
    assert_string_equal(s, want);
    free(s);
}

/* The spec of the route METHOD TARGET takes, "404", or "405 <Allow>". */
static const char *route_of(tn_http_router *rt, treq *t)
{
    static char buf[256];
    const char *allow = "unset";
    const tn_http_route *route = tn_http_route_match(rt, &t->r, &allow);
    if (route) {
        assert_null(allow);
        return route->conf->spec;
    }
    if (!allow)
        return "404";
    snprintf(buf, sizeof(buf), "405 %s", allow);
    return buf;
}

static void assert_route(tn_http_router *rt, const char *method, const char *path, const char *want)
{
    treq *t = req(method, path, NULL);
    const char *got = route_of(rt, t);
    if (strcmp(got, want) != 0)
        fail_msg("%s %s: got '%s', want '%s'", method, path, got, want);
    req_free(t);
}

/* ---- routes ------------------------------------------------------------------------- */

static const char *routes_conf =
    "[handlers]\n"
    "h { type: \"echo\" }\n"
    "[middleware]\n"
    "c1 { type: \"cors\" origins: [\"https://app.example\"] }\n"
    "hd { type: \"headers\" set: { \"X-A\": \"1\" } }\n"
    "[listeners]\n"
    "web {\n"
    "  protocol: \"http\"\n"
    "  listen: \"127.0.0.1:0\"\n"
    "  routes {\n"
    "    \"GET /health\": \"h\"\n"
    "    \"* /health\": \"h\"\n"
    "    \"GET /users/me\": \"h\"\n"
    "    \"GET /users/:id\": \"h\"\n"
    "    \"GET /users/:id/posts/:post\": \"h\"\n"
    "    \"GET /users/*\": \"h\"\n"
    "    \"GET /static/*\": \"h\"\n"
    "    \"GET /static/img/*\": \"h\"\n"
    "    \"GET /:section/about\": \"h\"\n"
    "    \"GET /blog/:slug\": \"h\"\n"
    "    \"/*\": \"h\"\n"
    "  }\n"
    "}\n"
    "strict {\n"
    "  protocol: \"http\"\n"
    "  listen: \"127.0.0.1:0\"\n"
    "  middleware: [\"hd\"]\n"
    "  routes {\n"
    "    \"GET /only\": \"h\"\n"
    "    \"POST /only\": \"h\"\n"
    "    \"PUT /items/:id\": \"h\"\n"
    "    \"DELETE /items/*\": \"h\"\n"
    "    \"POST /form\": \"h\"\n"
    "    \"GET /api/things\": { handler: \"h\" middleware: [\"c1\", \"hd\"] }\n"
    "    \"POST /p/:a\": \"h\"\n"
    "    \"PATCH /p/:b\": \"h\"\n"
    "    \"HEAD /h\": \"h\"\n"
    "    \"GET /h\": \"h\"\n"
    "    \"/any\": \"h\"\n"
    "  }\n"
    "}\n";

static void test_route_precedence(void **state)
{
    (void)state;
    fx *f = fx_new(routes_conf);
    tn_http_router *rt = router(f, "web");
    /* exact beats parameters, which beat prefixes */
    assert_route(rt, "GET", "/users/me", "GET /users/me");
    assert_route(rt, "GET", "/users/42", "GET /users/:id");
    assert_route(rt, "GET", "/users/42/posts/7", "GET /users/:id/posts/:post");
    assert_route(rt, "GET", "/users/42/photos", "GET /users/*");
    assert_route(rt, "GET", "/users", "GET /users/*");
    assert_route(rt, "GET", "/users/", "GET /users/*"); /* an empty segment is no :id */
    /* more literal segments first, then earlier ones */
    assert_route(rt, "GET", "/blog/about", "GET /blog/:slug");
    assert_route(rt, "GET", "/news/about", "GET /:section/about");
    /* longer prefix first; a prefix covers itself and everything below */
    assert_route(rt, "GET", "/static/app.css", "GET /static/*");
    assert_route(rt, "GET", "/static/", "GET /static/*");
    assert_route(rt, "GET", "/static", "GET /static/*");
    assert_route(rt, "GET", "/static/img/a.png", "GET /static/img/*");
    assert_route(rt, "GET", "/static/img", "GET /static/img/*");
    assert_route(rt, "GET", "/staticfoo", "/*");
    assert_route(rt, "GET", "/", "/*");
    assert_route(rt, "DELETE", "/whatever/deep/path", "/*");
    /* method-specific beats any-method at the same path; HEAD takes GET routes */
    assert_route(rt, "GET", "/health", "GET /health");
    assert_route(rt, "HEAD", "/health", "GET /health");
    assert_route(rt, "POST", "/health", "* /health");
    /* a less specific route with the method beats a more specific one without */
    assert_route(rt, "POST", "/users/me", "/*");
    assert_route(rt, "GET", "/health/", "/*");
    tn_http_router_free(rt);
    fx_free(f);
}

static void test_route_405(void **state)
{
    (void)state;
    fx *f = fx_new(routes_conf);
    tn_http_router *rt = router(f, "strict");
    assert_route(rt, "GET", "/only", "GET /only");
    assert_route(rt, "HEAD", "/only", "GET /only");
    assert_route(rt, "DELETE", "/only", "405 GET, HEAD, POST");
    assert_route(rt, "OPTIONS", "/only", "405 GET, HEAD, POST");
    /* methods of every shape the path matches, sorted, once each */
    assert_route(rt, "GET", "/items/5", "405 DELETE, PUT");
    assert_route(rt, "GET", "/items/5/x", "405 DELETE");
    assert_route(rt, "PUT", "/items/5", "PUT /items/:id");
    assert_route(rt, "GET", "/form", "405 POST");
    assert_route(rt, "HEAD", "/form", "405 POST");
    /* a HEAD route beats GET for HEAD */
    assert_route(rt, "HEAD", "/h", "HEAD /h");
    assert_route(rt, "GET", "/h", "GET /h");
    assert_route(rt, "POST", "/h", "405 GET, HEAD");
    /* no method given = any */
    assert_route(rt, "BREW", "/any", "/any");
    /* nothing at the path: 404 */
    assert_route(rt, "GET", "/nothing", "404");
    assert_route(rt, "GET", "/onlyx", "404");
    assert_route(rt, "GET", "/items", "405 DELETE");
    tn_http_router_free(rt);
    fx_free(f);
}

static void test_route_params(void **state)
{
    (void)state;
    fx *f = fx_new(routes_conf);
    tn_http_router *rt = router(f, "web");
    const char *allow;
    treq *t = req("GET", "/users/42/posts/7?x=1", NULL);
    const tn_http_route *route = tn_http_route_match(rt, &t->r, &allow);
    assert_non_null(route);
    assert_int_equal(t->r.nparams, 2);
    assert_string_equal(tn_http_param(&t->r, "id"), "42");
    assert_string_equal(tn_http_param(&t->r, "post"), "7");
    assert_null(tn_http_param(&t->r, "nope"));
    req_free(t);

    /* routes of one shape may name their parameters differently */
    tn_http_router *strict = router(f, "strict");
    t = req("POST", "/p/x1", NULL);
    assert_non_null(tn_http_route_match(strict, &t->r, &allow));
    assert_string_equal(tn_http_param(&t->r, "a"), "x1");
    req_free(t);
    t = req("PATCH", "/p/x2", NULL);
    assert_non_null(tn_http_route_match(strict, &t->r, &allow));
    assert_null(tn_http_param(&t->r, "a"));
    assert_string_equal(tn_http_param(&t->r, "b"), "x2");
    req_free(t);

    /* no parameters left over from an earlier match */
    t = req("GET", "/health", NULL);
    t->r.nparams = 3;
    assert_non_null(tn_http_route_match(rt, &t->r, &allow));
    assert_int_equal(t->r.nparams, 0);
    assert_null(t->r.arena); /* matching a route without parameters allocates nothing */
    req_free(t);
    tn_http_router_free(strict);
    tn_http_router_free(rt);
    fx_free(f);
}

static void test_route_middleware(void **state)
{
    (void)state;
    fx *f = fx_new(routes_conf);
    tn_http_router *rt = router(f, "strict");
    const char *allow;
    treq *a = req("GET", "/api/things", NULL), *b = req("GET", "/only", NULL);
    const tn_http_route *ra = tn_http_route_match(rt, &a->r, &allow);
    const tn_http_route *rb = tn_http_route_match(rt, &b->r, &allow);
    assert_non_null(ra);
    assert_non_null(rb);
    /* listener's then route's, each name once, one instance per name */
    assert_int_equal(ra->nmiddleware, 2);
    assert_int_equal(rb->nmiddleware, 1);
    assert_ptr_equal(ra->middleware[0], rb->middleware[0]);
    assert_ptr_not_equal(ra->middleware[1], ra->middleware[0]);
    assert_string_equal(ra->handler->name, "h");
    req_free(a);
    req_free(b);

    /* a CORS preflight is routed like the method it asks about, to a route
     * with cors middleware */
    treq *t = req("OPTIONS", "/api/things", "Origin", "https://app.example", "Access-Control-Request-Method", "GET",
                  NULL);
    assert_string_equal(route_of(rt, t), "GET /api/things");
    const tn_http_route *route = tn_http_route_match(rt, &t->r, &allow);
    assert_int_equal(tn_mw_before(route->middleware[0], &t->r, t->body), TN_MW_NEXT); /* headers */
    assert_int_equal(tn_mw_before(route->middleware[1], &t->r, t->body), TN_MW_RESPOND);
    assert_int_equal(t->r.status, 204);
    assert_string_equal(resp(t, "Access-Control-Allow-Origin"), "https://app.example");
    req_free(t);
    /* a method no route has: still answered by the path's cors route */
    t = req("OPTIONS", "/api/things", "Origin", "https://app.example", "Access-Control-Request-Method", "DELETE",
            NULL);
    assert_string_equal(route_of(rt, t), "GET /api/things");
    req_free(t);
    /* ... but never by a route without cors */
    t = req("OPTIONS", "/only", "Origin", "https://app.example", "Access-Control-Request-Method", "GET", NULL);
    assert_string_equal(route_of(rt, t), "405 GET, HEAD, POST");
    req_free(t);
    tn_http_router_free(rt);
    fx_free(f);
}

static void test_router_errors(void **state)
{
    (void)state;
    /* the registry runs another config's handlers: 'gone' is not running */
    fx *f = fx_new("[handlers]\nother { type: \"echo\" }\n"
                   "[listeners]\nweb { protocol: \"http\" listen: \"127.0.0.1:0\"\n"
                   "  routes { \"GET /y\": \"other\" } }\n");
    tn_config *cfg2 = load("[handlers]\ngone { type: \"echo\" }\n"
                           "[listeners]\nx { protocol: \"http\" listen: \"127.0.0.1:0\" routes {\n"
                           "  \"GET /ok\": \"gone\"\n \"GET /y\": \"gone\" } }\n");
    char err[512] = "";
    f->d->cfg = cfg2;
    assert_null(tn_http_router_new(f->d, cfg2, &cfg2->listeners[0], err, sizeof(err)));
    assert_string_equal(err, "listener 'x': route 'GET /ok': handler 'gone' is not running");
    f->d->cfg = f->cfg;
    tn_config_free(cfg2);

    /* an access log that cannot be opened */
    tn_config *cfg3 = load("[handlers]\nother { type: \"echo\" }\n"
                           "[middleware]\nlog { type: \"access_log\" file: \"/nonexistent/dir/access.log\" }\n"
                           "[listeners]\nx { protocol: \"http\" listen: \"127.0.0.1:0\" middleware: [\"log\"]\n"
                           " routes { \"GET /y\": \"other\" } }\n");
    f->d->cfg = cfg3;
    assert_null(tn_http_router_new(f->d, cfg3, &cfg3->listeners[0], err, sizeof(err)));
    assert_non_null(
        strstr(err, "listener 'x': middleware 'log': cannot open access log '/nonexistent/dir/access.log'"));
    f->d->cfg = f->cfg;
    tn_config_free(cfg3);

    /* more parameters than a request holds */
    tn_config *cfg4 = load("[handlers]\nother { type: \"echo\" }\n"
                           "[listeners]\nx { protocol: \"http\" listen: \"127.0.0.1:0\" routes {\n"
                           " \"GET /:a/:b/:c/:d/:e/:f/:g/:h/:i\": \"other\" } }\n");
    f->d->cfg = cfg4;
    assert_null(tn_http_router_new(f->d, cfg4, &cfg4->listeners[0], err, sizeof(err)));
    assert_non_null(strstr(err, "more than 8 parameters"));
    f->d->cfg = f->cfg;
    tn_config_free(cfg4);

    /* what no route matches is 404 */
    tn_http_router *rt = router(f, "web");
    assert_route(rt, "GET", "/x", "404");
    assert_route(rt, "GET", "/y", "GET /y");
    tn_http_router_free(rt);
    fx_free(f);
}

/* ---- cors ------------------------------------------------------------------------------ */

static const char *mw_conf =
    "[handlers]\n"
    "h { type: \"echo\" }\n"
    "[middleware]\n"
    "strict_cors {\n"
    "  type: \"cors\"\n"
    "  origins: [\"https://app.example\", \"https://admin.example\"]\n"
    "  credentials: true\n"
    "  max_age: \"1h\"\n"
    "  expose_headers: [\"X-Request-Id\", \"X-Total\"]\n"
    "}\n"
    "open_cors { type: \"cors\" allow_headers: [\"Content-Type\", \"Authorization\"] methods: [\"GET\", \"POST\"] }\n"
    "cred_any { type: \"cors\" credentials: true }\n"
    "gz { type: \"gzip\" min_size: 100 level: 9 }\n"
    "both { type: \"auth\" tokens: [\"s3cret\", \"t2\"] users: { alice: \"wonder:land\" }\n"
    "  realm: \"My \\\"Zone\\\"\" }\n"
    "bearer { type: \"auth\" tokens: [\"s3cret\"] }\n"
    "basic { type: \"auth\" users: { bob: \"pw\" } }\n"
    "rl { type: \"rate_limit\" rate: \"1/m\" burst: 3 }\n"
    "fast { type: \"rate_limit\" rate: \"2/s\" burst: 1 }\n"
    "hdrs { type: \"headers\" set: { \"X-Frame-Options\": \"DENY\", \"Cache-Control\": \"no-store\" }"
    " add: { \"Link\": \"</a>; rel=preload\" } }\n"
    "[listeners]\n"
    "web { protocol: \"http\" listen: \"127.0.0.1:0\" routes { \"/*\": \"h\" } }\n";

static void test_cors_preflight(void **state)
{
    (void)state;
    fx *f = fx_new(mw_conf);
    tn_mw *m = mw(f, "strict_cors");
    treq *t = req("OPTIONS", "/api", "Origin", "https://admin.example", "Access-Control-Request-Method", "PUT",
                  "Access-Control-Request-Headers", "X-Custom, Content-Type", NULL);
    evbuffer_add(t->body, "junk", 4);
    assert_int_equal(tn_mw_before(m, &t->r, t->body), TN_MW_RESPOND);
    assert_int_equal(t->r.status, 204);
    assert_int_equal(evbuffer_get_length(t->body), 0);
    assert_string_equal(resp(t, "Access-Control-Allow-Origin"), "https://admin.example");
    assert_string_equal(resp(t, "Access-Control-Allow-Methods"), "GET, HEAD, POST, PUT, PATCH, DELETE");
    assert_string_equal(resp(t, "Access-Control-Allow-Headers"), "X-Custom, Content-Type");
    assert_string_equal(resp(t, "Access-Control-Max-Age"), "3600");
    assert_string_equal(resp(t, "Access-Control-Allow-Credentials"), "true");
    assert_string_equal(resp(t, "Vary"), "Origin");
    /* after() on our own answer adds nothing twice */
    size_t n = t->r.nresp;
    tn_mw_after(m, &t->r, t->body);
    assert_int_equal(t->r.nresp, n);
    assert_null(resp(t, "Access-Control-Expose-Headers"));
    req_free(t);

    /* a disallowed origin: 403 and no CORS headers */
    t = req("OPTIONS", "/api", "Origin", "https://evil.example", "Access-Control-Request-Method", "PUT", NULL);
    assert_int_equal(tn_mw_before(m, &t->r, t->body), TN_MW_RESPOND);
    assert_int_equal(t->r.status, 403);
    tn_mw_after(m, &t->r, t->body);
    assert_null(resp(t, "Access-Control-Allow-Origin"));
    assert_null(resp(t, "Vary"));
    req_free(t);

    /* OPTIONS without the preflight headers is an ordinary request */
    t = req("OPTIONS", "/api", "Origin", "https://app.example", NULL);
    assert_int_equal(tn_mw_before(m, &t->r, t->body), TN_MW_NEXT);
    req_free(t);
    tn_mw_free(m);

    /* any origin, no credentials: "*"; configured allow_headers are sent as is */
    m = mw(f, "open_cors");
    t = req("OPTIONS", "/api", "Origin", "http://x.example", "Access-Control-Request-Method", "POST",
            "Access-Control-Request-Headers", "X-Other", NULL);
    assert_int_equal(tn_mw_before(m, &t->r, t->body), TN_MW_RESPOND);
    assert_int_equal(t->r.status, 204);
    assert_string_equal(resp(t, "Access-Control-Allow-Origin"), "*");
    assert_string_equal(resp(t, "Access-Control-Allow-Methods"), "GET, POST");
    assert_string_equal(resp(t, "Access-Control-Allow-Headers"), "Content-Type, Authorization");
    assert_string_equal(resp(t, "Access-Control-Max-Age"), "600");
    assert_null(resp(t, "Access-Control-Allow-Credentials"));
    req_free(t);
    tn_mw_free(m);
    fx_free(f);
}

static void test_cors_simple(void **state)
{
    (void)state;
    fx *f = fx_new(mw_conf);
    tn_mw *m = mw(f, "strict_cors");
    treq *t = req("GET", "/api", "Origin", "https://app.example", NULL);
    assert_int_equal(tn_mw_before(m, &t->r, t->body), TN_MW_NEXT);
    tn_http_add_header(&t->r, "Vary", "Accept-Language");
    tn_mw_after(m, &t->r, t->body);
    assert_string_equal(resp(t, "Access-Control-Allow-Origin"), "https://app.example");
    assert_string_equal(resp(t, "Access-Control-Allow-Credentials"), "true");
    assert_string_equal(resp(t, "Access-Control-Expose-Headers"), "X-Request-Id, X-Total");
    assert_string_equal(resp(t, "Vary"), "Accept-Language, Origin");
    assert_int_equal(resp_count(t, "Vary"), 1);
    req_free(t);

    t = req("GET", "/api", "Origin", "https://evil.example", NULL);
    assert_int_equal(tn_mw_before(m, &t->r, t->body), TN_MW_NEXT);
    tn_mw_after(m, &t->r, t->body);
    assert_int_equal(t->r.nresp, 0);
    req_free(t);

    t = req("GET", "/api", NULL); /* not a cross-origin request */
    tn_mw_after(m, &t->r, t->body);
    assert_int_equal(t->r.nresp, 0);
    req_free(t);
    tn_mw_free(m);

    m = mw(f, "open_cors");
    t = req("POST", "/api", "Origin", "http://x.example", NULL);
    tn_mw_after(m, &t->r, t->body);
    assert_string_equal(resp(t, "Access-Control-Allow-Origin"), "*");
    assert_null(resp(t, "Access-Control-Expose-Headers"));
    req_free(t);
    tn_mw_free(m);

    /* credentials with any origin: browsers refuse "*", so name the origin */
    m = mw(f, "cred_any");
    t = req("GET", "/api", "Origin", "http://y.example", NULL);
    tn_mw_after(m, &t->r, t->body);
    assert_string_equal(resp(t, "Access-Control-Allow-Origin"), "http://y.example");
    assert_string_equal(resp(t, "Access-Control-Allow-Credentials"), "true");
    req_free(t);
    tn_mw_free(m);
    fx_free(f);
}

/* ---- gzip ------------------------------------------------------------------------------- */

static char *gunzip(const unsigned char *in, size_t len, size_t *outlen)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    assert_int_equal(inflateInit2(&zs, 16 + 15), Z_OK); /* gzip only */
    size_t cap = 1 << 20;
    char *out = malloc(cap);
    zs.next_in = (unsigned char *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = (unsigned char *)out;
    zs.avail_out = (uInt)cap;
    assert_int_equal(inflate(&zs, Z_FINISH), Z_STREAM_END);
    *outlen = cap - zs.avail_out;
    inflateEnd(&zs);
    return out;
}

static char *text_body(size_t n)
{
    char *s = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        s[i] = "hello gzip world, "[i % 18];
    s[n] = '\0';
    return s;
}

/* Runs gzip's after() on a LEN-byte text body; true if it compressed. */
static bool gz_run(tn_mw *m, treq *t, size_t len)
{
    char *text = text_body(len);
    evbuffer_add(t->body, text, len);
    tn_mw_after(m, &t->r, t->body);
    bool compressed = resp(t, "Content-Encoding") && strcmp(resp(t, "Content-Encoding"), "gzip") == 0;
    size_t n = evbuffer_get_length(t->body);
    if (compressed) {
        size_t outlen;
        char *out = gunzip(evbuffer_pullup(t->body, -1), n, &outlen);
        assert_int_equal(outlen, len);
        assert_memory_equal(out, text, len);
        assert_true(n < len);
        free(out);
    } else {
        assert_int_equal(n, len);
        assert_memory_equal(evbuffer_pullup(t->body, -1), text, len);
    }
    free(text);
    return compressed;
}

static void test_gzip(void **state)
{
    (void)state;
    fx *f = fx_new(mw_conf);
    tn_mw *m = mw(f, "gz");
    static const struct {
        const char *ae;
        bool yes;
    } cases[] = {
        { "gzip", true },
        { "gzip, deflate, br", true },
        { "deflate, GZIP", true },
        { "br;q=1.0, gzip;q=0.8", true },
        { "x-gzip", true },
        { "gzip;q=0", false },
        { "gzip; q=0.000", false },
        { "gzip;q=0, *", false },
        { "*;q=0.5", true },
        { "*", true },
        { "*;q=0", false },
        { "identity", false },
        { "identity, gzip;q=0.5", false },
        { "gzip;q=0.5, identity;q=0.1", true },
        { "deflate, br", false },
        { "", false },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        treq *t = req("GET", "/x", "Accept-Encoding", cases[i].ae, NULL);
        if (gz_run(m, t, 5000) != cases[i].yes)
            fail_msg("Accept-Encoding '%s': expected %s", cases[i].ae, cases[i].yes ? "gzip" : "identity");
        /* either way the answer depended on Accept-Encoding */
        assert_string_equal(resp(t, "Vary"), "Accept-Encoding");
        req_free(t);
    }

    /* no Accept-Encoding at all: sent as is, Vary still set */
    treq *t = req("GET", "/x", NULL);
    assert_false(gz_run(m, t, 5000));
    assert_string_equal(resp(t, "Vary"), "Accept-Encoding");
    req_free(t);

    /* below min_size: never compressed, so nothing varies */
    t = req("GET", "/x", "Accept-Encoding", "gzip", NULL);
    assert_false(gz_run(m, t, 99));
    assert_null(resp(t, "Vary"));
    req_free(t);
    t = req("GET", "/x", "Accept-Encoding", "gzip", NULL);
    assert_true(gz_run(m, t, 100));
    req_free(t);

    /* already compressed types */
    t = req("GET", "/x.png", "Accept-Encoding", "gzip", NULL);
    t->r.content_type = "image/png";
    assert_false(gz_run(m, t, 5000));
    assert_null(resp(t, "Vary"));
    req_free(t);
    t = req("GET", "/x.zip", "Accept-Encoding", "gzip", NULL);
    t->r.content_type = "application/zip";
    assert_false(gz_run(m, t, 5000));
    req_free(t);
    t = req("GET", "/x.json", "Accept-Encoding", "gzip", NULL);
    t->r.content_type = "application/json";
    assert_true(gz_run(m, t, 5000));
    req_free(t);

    /* an encoding set already, bodiless statuses, file bodies */
    t = req("GET", "/x", "Accept-Encoding", "gzip", NULL);
    tn_http_set_header(&t->r, "Content-Encoding", "br");
    assert_false(gz_run(m, t, 5000));
    req_free(t);
    t = req("GET", "/x", "Accept-Encoding", "gzip", NULL);
    t->r.status = 304;
    assert_false(gz_run(m, t, 5000));
    req_free(t);
    t = req("GET", "/x", "Accept-Encoding", "gzip", NULL);
    t->r.status = 204;
    assert_false(gz_run(m, t, 5000));
    req_free(t);
    t = req("GET", "/x", "Accept-Encoding", "gzip", NULL);
    t->r.file_fd = 0;
    assert_false(gz_run(m, t, 5000));
    t->r.file_fd = -1;
    req_free(t);

    /* error statuses are compressed too; Vary merges; a strong ETag weakens */
    t = req("GET", "/x", "Accept-Encoding", "gzip", NULL);
    t->r.status = 404;
    tn_http_add_header(&t->r, "Vary", "Origin");
    tn_http_add_header(&t->r, "ETag", "\"abc\"");
    assert_true(gz_run(m, t, 300000));
    assert_string_equal(resp(t, "Vary"), "Origin, Accept-Encoding");
    assert_string_equal(resp(t, "ETag"), "W/\"abc\"");
    req_free(t);
    tn_mw_free(m);
    fx_free(f);
}

/* ---- auth ----------------------------------------------------------------------------------- */

static tn_mw_result auth_run(tn_mw *m, const char *authorization, treq **out)
{
    treq *t = authorization ? req("GET", "/x", "Authorization", authorization, NULL) : req("GET", "/x", NULL);
    tn_mw_result res = tn_mw_before(m, &t->r, t->body);
    if (out)
        *out = t;
    else
        req_free(t);
    return res;
}

static void test_auth(void **state)
{
    (void)state;
    fx *f = fx_new(mw_conf);
    tn_mw *m = mw(f, "both");
    assert_int_equal(auth_run(m, "Bearer s3cret", NULL), TN_MW_NEXT);
    assert_int_equal(auth_run(m, "bearer t2", NULL), TN_MW_NEXT);
    assert_int_equal(auth_run(m, "Bearer  s3cret ", NULL), TN_MW_NEXT);
    assert_int_equal(auth_run(m, "Bearer s3cre", NULL), TN_MW_RESPOND);
    assert_int_equal(auth_run(m, "Bearer s3cretX", NULL), TN_MW_RESPOND);
    assert_int_equal(auth_run(m, "Bearer ", NULL), TN_MW_RESPOND);
    assert_int_equal(auth_run(m, "s3cret", NULL), TN_MW_RESPOND);
    /* alice:wonder:land - the password may hold colons */
    assert_int_equal(auth_run(m, "Basic YWxpY2U6d29uZGVyOmxhbmQ=", NULL), TN_MW_NEXT);
    assert_int_equal(auth_run(m, "Basic YWxpY2U6d29uZGVyOmxhbmQ", NULL), TN_MW_NEXT); /* no padding */
    /* alice:wonder */
    assert_int_equal(auth_run(m, "Basic YWxpY2U6d29uZGVy", NULL), TN_MW_RESPOND);
    assert_int_equal(auth_run(m, "Basic !!!!", NULL), TN_MW_RESPOND);
    /* the token as a basic password, a password as a token */
    assert_int_equal(auth_run(m, "Basic czNjcmV0", NULL), TN_MW_RESPOND);
    assert_int_equal(auth_run(m, "Bearer wonder:land", NULL), TN_MW_RESPOND);

    treq *t;
    assert_int_equal(auth_run(m, NULL, &t), TN_MW_RESPOND);
    assert_int_equal(t->r.status, 401);
    assert_body(t, "Unauthorized\n");
    assert_null(t->r.content_type);
    assert_int_equal(resp_count(t, "WWW-Authenticate"), 2);
    assert_string_equal(t->r.resp_headers[0].value, "Bearer realm=\"My \\\"Zone\\\"\"");
    assert_string_equal(t->r.resp_headers[1].value, "Basic realm=\"My \\\"Zone\\\"\"");
    req_free(t);
    tn_mw_free(m);

    m = mw(f, "bearer");
    assert_int_equal(auth_run(m, "Bearer s3cret", NULL), TN_MW_NEXT);
    assert_int_equal(auth_run(m, "Basic Ym9iOnB3", NULL), TN_MW_RESPOND);
    assert_int_equal(auth_run(m, "Bearer nope", &t), TN_MW_RESPOND);
    assert_int_equal(resp_count(t, "WWW-Authenticate"), 1);
    assert_string_equal(resp(t, "WWW-Authenticate"), "Bearer realm=\"tusknetd\"");
    req_free(t);
    tn_mw_free(m);

    m = mw(f, "basic");
    assert_int_equal(auth_run(m, "Basic Ym9iOnB3", NULL), TN_MW_NEXT); /* bob:pw */
    assert_int_equal(auth_run(m, "Basic Ym9iOnB4", NULL), TN_MW_RESPOND);
    assert_int_equal(auth_run(m, "Bearer s3cret", &t), TN_MW_RESPOND);
    assert_int_equal(resp_count(t, "WWW-Authenticate"), 1);
    assert_string_equal(resp(t, "WWW-Authenticate"), "Basic realm=\"tusknetd\"");
    req_free(t);
    tn_mw_free(m);
    fx_free(f);
}

/* ---- rate_limit ------------------------------------------------------------------------------ */

static tn_mw_result rl_run(tn_mw *m, const char *ip, treq **out)
{
    treq *t = req("GET", "/x", NULL);
    t->r.remote_ip = ip;
    tn_mw_result res = tn_mw_before(m, &t->r, t->body);
    if (out)
        *out = t;
    else
        req_free(t);
    return res;
}

static void test_rate_limit(void **state)
{
    (void)state;
    fx *f = fx_new(mw_conf);
    tn_mw *m = mw(f, "rl"); /* 1 per minute, burst 3 */
    for (int i = 0; i < 3; i++)
        assert_int_equal(rl_run(m, "192.0.2.1", NULL), TN_MW_NEXT);
    treq *t;
    assert_int_equal(rl_run(m, "192.0.2.1", &t), TN_MW_RESPOND);
    assert_int_equal(t->r.status, 429);
    assert_body(t, "Too Many Requests\n");
    int retry = atoi(resp(t, "Retry-After"));
    assert_int_equal(retry, 60); /* a whole token at 1 per minute, rounded up */
    req_free(t);
    /* other addresses have their own bucket; IPv6 too */
    assert_int_equal(rl_run(m, "192.0.2.2", NULL), TN_MW_NEXT);
    for (int i = 0; i < 3; i++)
        assert_int_equal(rl_run(m, "2001:db8::1", NULL), TN_MW_NEXT);
    assert_int_equal(rl_run(m, "2001:db8::1", NULL), TN_MW_RESPOND);
    /* not an IP address: nothing to limit on */
    for (int i = 0; i < 5; i++)
        assert_int_equal(rl_run(m, "unix", NULL), TN_MW_NEXT);
    /* many calls: the periodic sweep keeps live buckets */
    for (int i = 0; i < 2100; i++)
        assert_int_equal(rl_run(m, "192.0.2.1", NULL), TN_MW_RESPOND);
    tn_mw_free(m);

    m = mw(f, "fast"); /* 2 per second, burst 1: Retry-After is at least 1 */
    assert_int_equal(rl_run(m, "192.0.2.1", NULL), TN_MW_NEXT);
    assert_int_equal(rl_run(m, "192.0.2.1", &t), TN_MW_RESPOND);
    assert_string_equal(resp(t, "Retry-After"), "1");
    req_free(t);
    usleep(600 * 1000);
    assert_int_equal(rl_run(m, "192.0.2.1", NULL), TN_MW_NEXT);
    tn_mw_free(m);
    fx_free(f);
}

/* ---- headers ---------------------------------------------------------------------------------- */

static void test_headers(void **state)
{
    (void)state;
    fx *f = fx_new(mw_conf);
    tn_mw *m = mw(f, "hdrs");
    treq *t = req("GET", "/x", NULL);
    assert_int_equal(tn_mw_before(m, &t->r, t->body), TN_MW_NEXT);
    tn_http_add_header(&t->r, "X-Frame-Options", "SAMEORIGIN");
    tn_http_add_header(&t->r, "Link", "</b>; rel=preload");
    tn_mw_after(m, &t->r, t->body);
    assert_int_equal(resp_count(t, "X-Frame-Options"), 1);
    assert_string_equal(resp(t, "X-Frame-Options"), "DENY");
    assert_string_equal(resp(t, "Cache-Control"), "no-store");
    assert_int_equal(resp_count(t, "Link"), 2);
    assert_string_equal(resp(t, "Link"), "</b>; rel=preload");
    assert_string_equal(t->r.resp_headers[t->r.nresp - 1].value, "</a>; rel=preload");
    req_free(t);
    tn_mw_free(m);
    fx_free(f);
}

/* ---- access_log ----------------------------------------------------------------------------------- */

static char *read_all(const char *path)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

static fx *log_fx(const char *path, const char *format)
{
    char conf[1024];
    snprintf(conf, sizeof(conf),
             "[handlers]\nh { type: \"echo\" }\n"
             "[middleware]\nlog { type: \"access_log\" file: \"%s\" format: \"%s\" }\n"
             "stderr_log { type: \"access_log\" }\n"
             "[listeners]\nweb { protocol: \"http\" listen: \"127.0.0.1:0\" routes { \"/*\": \"h\" } }\n",
             path, format);
    return fx_new(conf);
}

static void test_access_log_combined(void **state)
{
    (void)state;
    char path[] = "/tmp/tn_access_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    fx *f = log_fx(path, "combined");
    tn_mw *m = mw(f, "log");
    treq *t = req("GET", "/path?q=1&x=\"y\"", "User-Agent", "curl/8.0", "Referer", "http://ref.example/", NULL);
    t->r.status = 200;
    tn_mw_done(m, &t->r, 123);
    req_free(t);
    t = req("POST", "/nothing", NULL);
    t->r.status = 404;
    t->r.http_minor = 0;
    tn_mw_done(m, &t->r, 7);
    req_free(t);
    tn_mw_free(m);

    char *text = read_all(path);
    char *nl = strchr(text, '\n');
    assert_non_null(nl);
    *nl = '\0';
    /* 192.0.2.1 - - [25/Nov/2026:11:10:49 +0000] "GET ..." */
    assert_int_equal(strncmp(text, "192.0.2.1 - - [", 15), 0);
    assert_int_equal(text[17], '/');
    assert_int_equal(text[21], '/');
    assert_int_equal(text[26], ':');
    assert_string_equal(text + 35,
                        " +0000] \"GET /path?q=1&x=\\x22y\\x22 HTTP/1.1\" 200 123 "
                        "\"http://ref.example/\" \"curl/8.0\"");
    char *second = nl + 1;
    nl = strchr(second, '\n');
    assert_non_null(nl);
    assert_string_equal(nl + 1, "");
    *nl = '\0';
    assert_string_equal(second + 35, " +0000] \"POST /nothing HTTP/1.0\" 404 7 \"-\" \"-\"");

    /* "-" goes to the daemon's log */
    m = mw(f, "stderr_log");
    t = req("GET", "/to-stderr", NULL);
    tn_mw_done(m, &t->r, 1);
    req_free(t);
    tn_mw_free(m);
    fx_free(f);
    unlink(path);
}

static void test_access_log_json(void **state)
{
    (void)state;
    char path[] = "/tmp/tn_access_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    fx *f = log_fx(path, "json");
    tn_mw *m = mw(f, "log");
    treq *t = req("GET", "/a\"b?x=1", "User-Agent", "agent\\1\x01", NULL);
    t->r.path = "/a\"b\xff\xc3\xa9"; /* decoded: may hold any byte */
    t->r.status = 201;
    t->r.started_us -= 1500;
    int64_t started = t->r.started_us;
    tn_mw_done(m, &t->r, 42);
    struct timeval end; /* wall clock, like started_us */
    gettimeofday(&end, NULL);
    int64_t done = (int64_t)end.tv_sec * 1000000 + end.tv_usec;
    req_free(t);
    tn_mw_free(m);

    char *text = read_all(path);
    size_t len = strlen(text);
    assert_true(len > 0 && text[len - 1] == '\n');
    assert_int_equal(strncmp(text, "{\"time\":\"", 9), 0);
    /* 2026-11-25T11:10:49.123Z */
    assert_int_equal(text[9 + 4], '-');
    assert_int_equal(text[9 + 10], 'T');
    assert_int_equal(text[9 + 23], 'Z');
    const char *rest = text + 9 + 24;
    const char *want = "\",\"remote\":\"192.0.2.1\",\"method\":\"GET\","
                       "\"path\":\"/a\\\"b\\ufffd\xc3\xa9\",\"query\":\"x=1\","
                       "\"status\":201,\"bytes\":42,\"request_time\":";
    assert_int_equal(strncmp(rest, want, strlen(want)), 0);
    rest += strlen(want);
    /* seconds with exactly six decimals (microseconds) */
    size_t whole = strspn(rest, "0123456789");
    assert_true(whole >= 1 && rest[whole] == '.');
    assert_int_equal(strspn(rest + whole + 1, "0123456789"), 6);
    double secs = atof(rest);
    /* 1.5 ms plus however long the call took */
    assert_true(secs >= 0.0015 && secs <= (double)(done - started) / 1e6 + 0.0000005);
    rest = strchr(rest, ',');
    assert_non_null(rest);
    assert_string_equal(rest, ",\"user_agent\":\"agent\\\\1\\u0001\",\"referer\":\"\"}\n");
    fx_free(f);
    unlink(path);
}

int main(void)
{
    tn_log_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_precedence),
        cmocka_unit_test(test_route_405),
        cmocka_unit_test(test_route_params),
        cmocka_unit_test(test_route_middleware),
        cmocka_unit_test(test_router_errors),
        cmocka_unit_test(test_cors_preflight),
        cmocka_unit_test(test_cors_simple),
        cmocka_unit_test(test_gzip),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_rate_limit),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_access_log_combined),
        cmocka_unit_test(test_access_log_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
