/* SPDX-License-Identifier: MIT */
/* test_schema.c - the config schema (src/config/schema.c, config.c): defaults
 * from the table, limit inheritance (limits -> listener -> route / WebSocket
 * endpoint), the scalar parsers (durations, sizes, listen addresses), every
 * schema error with its exact FILE:LINE:COL text, middleware kinds named
 * bare, the dump -> YAML -> load round trip, handler settings copy / compare,
 * relative path resolution and the Markdown reference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "log.h"
#include "config/schema.h"
#include "config/tusk.h"
#include "config/yaml.h"

#define KB ((int64_t)1024)
#define MB (1024 * KB)
#define GB (1024 * MB)

/* ---- helpers */

/* Parses TEXT as the TuskLang-style file NAME (which must parse cleanly)
 * and converts it; DIAG keeps what the schema reported. */
static tn_config *load_named(const char *name, const char *text, tn_diag *d)
{
    tn_doc doc = { 0 };
    memset(d, 0, sizeof(*d));
    if (tn_tusk_parse_string(&doc, name, text, strlen(text), d) != 0) {
        char *got = tn_diag_join(d);
        print_error("parse failed:\n%s\n", got ? got : "(no message)");
        free(got);
        tn_doc_free(&doc);
        tn_diag_free(d);
        fail();
    }
    assert_int_equal(d->count, 0);
    return tn_config_from_doc(&doc, name, d);
}

static tn_config *load(const char *text, tn_diag *d) { return load_named("t.conf", text, d); }

/* Loads TEXT, which must be valid without any message. */
static tn_config *load_ok_named(const char *name, const char *text)
{
    tn_diag d;
    tn_config *cfg = load_named(name, text, &d);
    char *got = tn_diag_join(&d);
    if (got) {
        print_error("unexpected diagnostics:\n%s\n", got);
        free(got);
        tn_config_free(cfg);
        tn_diag_free(&d);
        fail();
    }
    tn_diag_free(&d);
    assert_non_null(cfg);
    return cfg;
}

static tn_config *load_ok(const char *text) { return load_ok_named("t.conf", text); }

/* TEXT must be rejected with exactly the messages given (NULL-terminated),
 * in this order. */
static void expect_errors(const char *text, ...)
{
    const char *want[TN_DIAG_MAX + 1];
    int n = 0;
    va_list ap;
    va_start(ap, text);
    for (const char *m; (m = va_arg(ap, const char *)) != NULL && n < TN_DIAG_MAX;)
        want[n++] = m;
    va_end(ap);

    tn_diag d;
    tn_config *cfg = load(text, &d);
    if (cfg || d.count != n) {
        char *got = tn_diag_join(&d);
        print_error("config:\n%s\nwant %d error(s):\n", text, n);
        for (int i = 0; i < n; i++)
            print_error("  %s\n", want[i]);
        print_error("got %s (%d):\n%s\n", cfg ? "a config" : "NULL", d.count, got ? got : "(none)");
        free(got);
        tn_config_free(cfg);
        tn_diag_free(&d);
        fail();
    }
    assert_int_equal(tn_diag_errors(&d), n);
    for (int i = 0; i < n; i++)
        assert_string_equal(d.msgs[i], want[i]);
    tn_diag_free(&d);
}

#define ERRORS(text, ...) expect_errors(text, __VA_ARGS__, (const char *)NULL)

static const tn_listener_conf *listener(const tn_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nlisteners; i++)
        if (strcmp(cfg->listeners[i].name, name) == 0)
            return &cfg->listeners[i];
    fail_msg("no listener '%s'", name);
    return NULL;
}

static const tn_middleware_conf *middleware(const tn_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nmiddleware; i++)
        if (strcmp(cfg->middleware[i].name, name) == 0)
            return &cfg->middleware[i];
    fail_msg("no middleware '%s'", name);
    return NULL;
}

static const tn_handler_conf *handler(const tn_config *cfg, const char *name)
{
    const tn_handler_conf *h = tn_config_handler(cfg, name);
    if (!h)
        fail_msg("no handler '%s'", name);
    return h;
}

static void assert_list(const tn_strlist *l, size_t n, ...)
{
    if (l->n != n)
        fail_msg("list has %zu items, want %zu", l->n, n);
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(l->v[i], va_arg(ap, const char *));
    va_end(ap);
}

static int64_t dur(const char *s)
{
    int64_t v = -12345;
    if (tn_parse_duration_ms(s, &v) < 0)
        fail_msg("duration \"%s\" rejected", s);
    return v;
}

static int64_t size(const char *s)
{
    int64_t v = -12345;
    if (tn_parse_size(s, &v) < 0)
        fail_msg("size \"%s\" rejected", s);
    return v;
}

/* ---- a scratch directory (TLS files, relative names) */

static char tmpdir[PATH_MAX], oldcwd[PATH_MAX];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int fs_setup(void **state)
{
    (void)state;
    if (!getcwd(oldcwd, sizeof(oldcwd)))
        return -1;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_schema.XXXXXX");
    if (!mkdtemp(tmpdir) || chdir(tmpdir) < 0)
        return -1;
    return 0;
}

static int fs_teardown(void **state)
{
    (void)state;
    if (chdir(oldcwd) < 0)
        return -1;
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

/* ---- defaults */

static void check_default_limits(const tn_limits *l)
{
    assert_int_equal(l->max_connections, 0);
    assert_int_equal(l->max_connections_per_ip, 0);
    assert_int_equal(l->max_connections_per_second, 0);
    assert_int_equal(l->idle_timeout, 300000);
    assert_int_equal(l->read_timeout, 60000);
    assert_int_equal(l->write_timeout, 60000);
    assert_int_equal(l->handshake_timeout, 10000);
    assert_int_equal(l->header_timeout, 10000);
    assert_int_equal(l->max_line, 65536);
    assert_int_equal(l->max_body, 8 * MB);
    assert_int_equal(l->max_header, 16 * KB);
    assert_int_equal(l->max_message, 1 * MB);
    assert_int_equal(l->max_output, 4 * MB);
    assert_true(l->rate_limit == 0.0);
    assert_int_equal(l->rate_burst, 0);
    assert_int_equal(l->allow.n, 0);
    assert_int_equal(l->deny.n, 0);
}

static void test_defaults_empty(void **state)
{
    (void)state;
    tn_config *cfg = load_ok("");
    assert_string_equal(cfg->path, "t.conf");
    assert_int_equal(cfg->daemon.log_level, TN_LOG_INFO);
    assert_string_equal(cfg->daemon.control_socket, "/run/tusknetd/control.sock");
    assert_string_equal(cfg->daemon.control_group, "");
    assert_int_equal(cfg->daemon.control_group_level, TN_CTL_READ);
    assert_int_equal(cfg->daemon.max_connections, 10000);
    assert_int_equal(cfg->daemon.shutdown_timeout, 10000);
    assert_string_equal(cfg->daemon.pid_file, "");
    check_default_limits(&cfg->limits);
    assert_int_equal(cfg->nhandlers, 0);
    assert_int_equal(cfg->nmiddleware, 0);
    assert_int_equal(cfg->nlisteners, 0);
    tn_config_free(cfg);

    /* empty sections are the same as none */
    cfg = load_ok("[daemon]\n[limits]\n[handlers]\n[middleware]\n[listeners]\n");
    assert_int_equal(cfg->daemon.log_level, TN_LOG_INFO);
    check_default_limits(&cfg->limits);
    tn_config_free(cfg);
}

static void test_defaults_per_type(void **state)
{
    (void)state;
    tn_config *cfg = load_ok("[handlers]\n"
                             "e { type: \"echo\" }\n"
                             "s { type: \"static\" reply: \"hi\" }\n"
                             "r { type: \"redirect\" location: \"/x\" }\n"
                             "x { type: \"exec\" command: \"true\" }\n"
                             "st { type: \"stream\" command: [\"cat\"] }\n"
                             "f { type: \"file\" root: \"/srv\" }\n"
                             "p { type: \"proxy\" upstreams: \"127.0.0.1:1\" }\n"
                             "[listeners]\n"
                             "t { protocol: \"tcp\" listen: \"127.0.0.1:7000\" handler: \"e\" }\n"
                             "w {\n"
                             "  protocol: \"http\"\n"
                             "  listen: \"127.0.0.1:8080\"\n"
                             "  routes { \"/\": \"s\" }\n"
                             "  websocket { \"/ws\": \"e\" }\n"
                             "}\n");
    assert_int_equal(cfg->nhandlers, 7);
    const tn_handler_conf *h = handler(cfg, "s");
    assert_int_equal(h->type, TN_H_STATIC);
    assert_string_equal(h->reply, "hi");
    assert_int_equal(h->status, 200);
    assert_string_equal(h->content_type, "text/plain; charset=utf-8");
    assert_int_equal(h->headers.n, 0);

    h = handler(cfg, "r");
    assert_int_equal(h->type, TN_H_REDIRECT);
    assert_int_equal(h->status, 302);
    assert_string_equal(h->location, "/x");

    h = handler(cfg, "x");
    assert_int_equal(h->type, TN_H_EXEC);
    assert_list(&h->command, 1, "true");
    assert_int_equal(h->timeout, 30000);
    assert_int_equal(h->max_concurrency, 16);
    assert_int_equal(h->max_queue, 1024);
    assert_int_equal(h->max_output, 1 * MB);
    assert_int_equal(h->stderr_mode, TN_STDERR_LOG);
    assert_string_equal(h->cwd, "");
    assert_int_equal(h->env.n, 0);
    assert_int_equal(h->passenv.n, 0);

    h = handler(cfg, "st");
    assert_int_equal(h->type, TN_H_STREAM);
    assert_int_equal(h->max_output, 1 * MB);
    assert_int_equal(h->timeout, 0); /* exec only */

    h = handler(cfg, "f");
    assert_string_equal(h->root, "/srv");
    assert_list(&h->index, 1, "index.html");

    h = handler(cfg, "p");
    assert_list(&h->upstreams, 1, "127.0.0.1:1");
    assert_int_equal(h->balance, TN_BALANCE_ROUND_ROBIN);
    assert_int_equal(h->retries, 2);
    assert_int_equal(h->connect_timeout, 5000);
    assert_int_equal(h->timeout, 60000); /* proxy's own default, not exec's */
    assert_int_equal(h->max_fails, 3);
    assert_int_equal(h->fail_timeout, 10000);

    const tn_listener_conf *li = listener(cfg, "t");
    assert_int_equal(li->protocol, TN_PROTO_TCP);
    assert_string_equal(li->listen, "127.0.0.1:7000");
    assert_string_equal(li->handler, "e");
    assert_int_equal(li->handlers.n, 0);
    assert_int_equal(li->backlog, 511);
    assert_string_equal(li->fd_name, "");
    assert_null(li->tls);
    check_default_limits(&li->limits);

    li = listener(cfg, "w");
    assert_int_equal(li->protocol, TN_PROTO_HTTP);
    assert_int_equal(li->nroutes, 1);
    assert_string_equal(li->routes[0].spec, "/");
    assert_string_equal(li->routes[0].method, "*");
    assert_string_equal(li->routes[0].path, "/");
    assert_string_equal(li->routes[0].handler, "s");
    assert_int_equal(li->routes[0].middleware.n, 0);
    check_default_limits(&li->routes[0].limits);
    assert_int_equal(li->nwebsocket, 1);
    const tn_ws_conf *w = &li->websocket[0];
    assert_string_equal(w->path, "/ws");
    assert_string_equal(w->handler, "e");
    assert_int_equal(w->ping_interval, 30000);
    assert_int_equal(w->pong_timeout, 10000);
    assert_false(w->deflate); /* off unless asked for: lws 4.1.6 can abort under it */
    assert_int_equal(w->subprotocols.n, 0);
    assert_int_equal(w->origins.n, 0);
    check_default_limits(&w->limits);
    tn_config_free(cfg);
}

/* ---- limits: [limits] -> listener -> route / endpoint */

static void test_limit_inheritance(void **state)
{
    (void)state;
    tn_config *cfg = load_ok("[limits]\n"
                             "idle_timeout: \"5s\"\n"
                             "max_body: \"1MB\"\n"
                             "rate_limit: \"600/m\"\n"
                             "allow: [\"10.0.0.0/8\", \"::1\"]\n"
                             "[handlers]\n"
                             "e { type: \"echo\" }\n"
                             "[listeners]\n"
                             "a { protocol: \"tcp\" listen: \"127.0.0.1:7000\" handler: \"e\" }\n"
                             "b { protocol: \"tcp\" listen: \"127.0.0.1:7001\" handler: \"e\" idle_timeout: \"1s\" }\n"
                             "w {\n"
                             "  protocol: \"http\"\n"
                             "  listen: \"127.0.0.1:8080\"\n"
                             "  routes {\n"
                             "    \"GET /a\": \"e\"\n"
                             "    \"POST /b\": { handler: \"e\" max_body: \"64KB\" }\n"
                             "  }\n"
                             "  websocket {\n"
                             "    \"/ws\": \"e\"\n"
                             "    \"/big\": { handler: \"e\" max_message: \"4MB\" idle_timeout: 7 }\n"
                             "  }\n"
                             "  idle_timeout: \"2s\"\n" /* after routes: still inherited by them */
                             "  deny: \"10.1.2.3\"\n"
                             "}\n");
    assert_int_equal(cfg->limits.idle_timeout, 5000);
    assert_int_equal(cfg->limits.max_body, 1 * MB);
    assert_true(cfg->limits.rate_limit == 10.0);
    assert_list(&cfg->limits.allow, 2, "10.0.0.0/8", "::1");

    const tn_listener_conf *a = listener(cfg, "a");
    assert_int_equal(a->limits.idle_timeout, 5000);
    assert_int_equal(a->limits.max_body, 1 * MB);
    assert_int_equal(a->limits.read_timeout, 60000);
    assert_true(a->limits.rate_limit == 10.0);
    assert_list(&a->limits.allow, 2, "10.0.0.0/8", "::1");
    assert_true(a->limits.allow.v != cfg->limits.allow.v); /* a deep copy */
    assert_true(a->limits.allow.v[0] != cfg->limits.allow.v[0]);

    const tn_listener_conf *b = listener(cfg, "b");
    assert_int_equal(b->limits.idle_timeout, 1000);
    assert_int_equal(cfg->limits.idle_timeout, 5000); /* parent untouched */

    const tn_listener_conf *w = listener(cfg, "w");
    assert_int_equal(w->limits.idle_timeout, 2000);
    assert_list(&w->limits.deny, 1, "10.1.2.3");
    assert_int_equal(w->nroutes, 2);
    const tn_route_conf *r = &w->routes[0];
    assert_string_equal(r->method, "GET");
    assert_string_equal(r->path, "/a");
    assert_int_equal(r->limits.idle_timeout, 2000);
    assert_int_equal(r->limits.max_body, 1 * MB);
    assert_list(&r->limits.deny, 1, "10.1.2.3");
    assert_list(&r->limits.allow, 2, "10.0.0.0/8", "::1");
    r = &w->routes[1];
    assert_string_equal(r->method, "POST");
    assert_string_equal(r->path, "/b");
    assert_int_equal(r->limits.max_body, 64 * KB);
    assert_int_equal(r->limits.idle_timeout, 2000);
    assert_int_equal(w->limits.max_body, 1 * MB); /* the override stays in the route */

    assert_int_equal(w->nwebsocket, 2);
    assert_int_equal(w->websocket[0].limits.max_message, 1 * MB);
    assert_int_equal(w->websocket[0].limits.idle_timeout, 2000);
    assert_int_equal(w->websocket[1].limits.max_message, 4 * MB);
    assert_int_equal(w->websocket[1].limits.idle_timeout, 7000);
    assert_int_equal(w->websocket[1].limits.max_body, 1 * MB);
    assert_int_equal(w->limits.max_message, 1 * MB);
    tn_config_free(cfg);
}

static void test_value_forms(void **state)
{
    (void)state;
    /* numbers are seconds / bytes; numeric strings are accepted for integers */
    tn_config *cfg = load_ok("[daemon]\n"
                             "max_connections: \"250\"\n"
                             "shutdown_timeout: 1.5\n"
                             "log_level: \"debug\"\n"
                             "[limits]\n"
                             "idle_timeout: 5\n"
                             "read_timeout: \"250ms\"\n"
                             "write_timeout: \"2m\"\n"
                             "max_line: 1024\n"
                             "max_body: \"1.5MB\"\n"
                             "rate_limit: 2.5\n"
                             "rate_burst: 7\n"
                             "deny: \"192.168.0.0/16\"\n");
    assert_int_equal(cfg->daemon.max_connections, 250);
    assert_int_equal(cfg->daemon.shutdown_timeout, 1500);
    assert_int_equal(cfg->daemon.log_level, TN_LOG_DEBUG);
    assert_int_equal(cfg->limits.idle_timeout, 5000);
    assert_int_equal(cfg->limits.read_timeout, 250);
    assert_int_equal(cfg->limits.write_timeout, 120000);
    assert_int_equal(cfg->limits.max_line, 1024);
    assert_int_equal(cfg->limits.max_body, 1572864);
    assert_true(cfg->limits.rate_limit == 2.5);
    assert_int_equal(cfg->limits.rate_burst, 7);
    assert_list(&cfg->limits.deny, 1, "192.168.0.0/16");
    tn_config_free(cfg);

    cfg = load_ok("[limits]\nrate_limit: \"36/h\"\n");
    assert_true(cfg->limits.rate_limit == 0.01);
    tn_config_free(cfg);
    cfg = load_ok("[limits]\nrate_limit: \"100/s\"\n");
    assert_true(cfg->limits.rate_limit == 100.0);
    tn_config_free(cfg);
    cfg = load_ok("[middleware]\nc { type: \"cors\" credentials: \"yes\" }\n");
    assert_true(middleware(cfg, "c")->credentials);
    tn_config_free(cfg);
}

/* ---- scalar parsers */

static void test_parse_duration(void **state)
{
    (void)state;
    assert_int_equal(dur("250ms"), 250);
    assert_int_equal(dur("30s"), 30000);
    assert_int_equal(dur("5m"), 300000);
    assert_int_equal(dur("1h"), 3600000);
    assert_int_equal(dur("1d"), 86400000);
    assert_int_equal(dur("1.5s"), 1500);
    assert_int_equal(dur("1.5"), 1500); /* no unit: seconds */
    assert_int_equal(dur("0"), 0);
    assert_int_equal(dur("2min"), 120000);
    assert_int_equal(dur("3sec"), 3000);
    assert_int_equal(dur("1500us"), 2);
    assert_int_equal(dur(" 10 s "), 10000);
    assert_int_equal(dur("0.5m"), 30000);

    static const char *const bad[] = { "", "s", "ms", "10x", "10 parsecs", "-1s", "-5", "1w", "5 m s",
                                       "nan", "inf", "1e20d", "10s5", "1mb" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v = -7;
        if (tn_parse_duration_ms(bad[i], &v) != -1)
            fail_msg("duration \"%s\" accepted as %lld", bad[i], (long long)v);
        assert_int_equal(v, -7); /* untouched */
    }
}

static void test_parse_size(void **state)
{
    (void)state;
    assert_int_equal(size("512"), 512);
    assert_int_equal(size("512B"), 512);
    assert_int_equal(size("64KB"), 65536);
    assert_int_equal(size("64kb"), 65536);
    assert_int_equal(size("64K"), 65536);
    assert_int_equal(size("1MiB"), 1048576);
    assert_int_equal(size("1MB"), 1048576);
    assert_int_equal(size("1.5MB"), 1572864);
    assert_int_equal(size("2GiB"), 2 * GB);
    assert_int_equal(size("1.5KB"), 1536); /* fractions are fine when the byte count is whole */
    assert_int_equal(size("0.5KB"), 512);
    assert_int_equal(size("0"), 0);
    assert_int_equal(size(" 8 MB "), 8 * MB);

    /* a byte count that is not a whole number is rejected */
    static const char *const bad[] = { "", "KB", "1.5", "1.5B", "0.1KB", "-1", "-1KB", "10TB", "10 bytes",
                                       "1e30GB", "12QB", "nan" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v = -7;
        if (tn_parse_size(bad[i], &v) != -1)
            fail_msg("size \"%s\" accepted as %lld", bad[i], (long long)v);
        assert_int_equal(v, -7);
    }
}

static void listen_ok(const char *s, const char *host, int port)
{
    char h[64] = "junk";
    int p = -1;
    if (tn_parse_listen(s, h, sizeof(h), &p) != 0)
        fail_msg("listen \"%s\" rejected", s);
    assert_string_equal(h, host);
    assert_int_equal(p, port);
}

static void test_parse_listen(void **state)
{
    (void)state;
    listen_ok("127.0.0.1:80", "127.0.0.1", 80);
    listen_ok("[::1]:0", "::1", 0);
    listen_ok("[::]:443", "::", 443);
    listen_ok("*:8080", "", 8080);
    listen_ok(":8080", "", 8080);
    listen_ok("0.0.0.0:65535", "0.0.0.0", 65535);
    listen_ok("localhost:7000", "localhost", 7000);
    listen_ok("my-host.example_1:1", "my-host.example_1", 1);
    listen_ok("[::ffff:10.0.0.1]:9", "::ffff:10.0.0.1", 9);

    static const char *const bad[] = { "::1:80", "127.0.0.1:70000", "127.0.0.1:65536", "host:", "noport",
                                       "", ":", "*:", "[::1]", "[::1]80", "[::1:80", "[]:80", "[nothost]:80",
                                       "host:8a", "host:-1", "host:+80", "ho st:80", "h/x:80", "**:80",
                                       "[::1]:", "host: 80" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char h[64];
        int p = -1;
        if (tn_parse_listen(bad[i], h, sizeof(h), &p) != -1)
            fail_msg("listen \"%s\" accepted (host '%s' port %d)", bad[i], h, p);
    }
    /* a host longer than the caller's buffer */
    char small[4];
    int p;
    assert_int_equal(tn_parse_listen("example.com:80", small, sizeof(small), &p), -1);
    assert_int_equal(tn_parse_listen("abc:80", small, sizeof(small), &p), 0);
    assert_string_equal(small, "abc");
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(tn_handler_type_name(TN_H_ECHO), "echo");
    assert_string_equal(tn_handler_type_name(TN_H_PLUGIN), "plugin");
    assert_string_equal(tn_handler_type_name(TN_H_WORKER), "worker");
    assert_string_equal(tn_handler_type_name(99), "?");
    assert_string_equal(tn_handler_type_name(-1), "?");
    assert_string_equal(tn_protocol_name(TN_PROTO_UDP), "udp");
    assert_string_equal(tn_protocol_name(3), "?");
    assert_string_equal(tn_log_level_name(TN_LOG_WARN), "warn");
    assert_string_equal(tn_log_level_name(4), "?");
    assert_int_equal(tn_log_level_parse("debug"), TN_LOG_DEBUG);
    assert_int_equal(tn_log_level_parse("error"), TN_LOG_ERROR);
    assert_int_equal(tn_log_level_parse("Debug"), -1);
    assert_int_equal(tn_log_level_parse("deb"), -1);
    assert_int_equal(tn_log_level_parse(""), -1);
}

/* ---- schema errors, one kind at a time */

static void test_error_unknown_key(void **state)
{
    (void)state;
    ERRORS("[daemon]\nlog_levl: \"info\"\n",
           "t.conf:2:1: unknown key 'log_levl' in [daemon]; did you mean 'log_level'?");
    ERRORS("[daemon]\nzzz: 1\n", "t.conf:2:1: unknown key 'zzz' in [daemon]");
    ERRORS("[limits]\nidle_timout: 5\n",
           "t.conf:2:1: unknown key 'idle_timout' in [limits]; did you mean 'idle_timeout'?");
    ERRORS("[handlers]\ns { type: \"static\" replay: \"x\" }\n",
           "t.conf:2:3: handler 's': missing required key 'reply'",
           "t.conf:2:20: unknown key 'replay' in handler 's'; did you mean 'reply'?");
    /* listeners also suggest [limits] keys */
    ERRORS("[handlers]\ne { type: \"echo\" }\n"
           "[listeners]\n"
           "t { protocol: \"tcp\" listen: \"*:1\" handler: \"e\" max_lin: 10 handlr: \"e\" }\n",
           "t.conf:4:48: unknown key 'max_lin' in listener 't'; did you mean 'max_line'?",
           "t.conf:4:60: unknown key 'handlr' in listener 't'; did you mean 'handler'?");
    /* routes and endpoints too */
    ERRORS("[handlers]\ne { type: \"echo\" }\n"
           "[listeners]\n"
           "w { protocol: \"http\" listen: \"*:1\"\n"
           "  routes { \"/\": { handler: \"e\" max_bdy: 1 } }\n"
           "  websocket { \"/ws\": { handler: \"e\" pingg_interval: 1 } }\n"
           "}\n",
           "t.conf:5:32: unknown key 'max_bdy' in route '/'; did you mean 'max_body'?",
           "t.conf:6:37: unknown key 'pingg_interval' in WebSocket endpoint '/ws'; did you mean 'ping_interval'?");
}

static void test_error_key_does_not_apply(void **state)
{
    (void)state;
    ERRORS("[handlers]\ne { type: \"echo\" timeout: \"1s\" }\n",
           "t.conf:2:18: 'timeout' does not apply to handlers of type 'echo'");
    ERRORS("[middleware]\ng { type: \"gzip\" realm: \"x\" }\n",
           "t.conf:2:18: 'realm' does not apply to middleware of type 'gzip'");
    ERRORS("[handlers]\ne { type: \"echo\" }\n"
           "[listeners]\n"
           "w { protocol: \"http\" listen: \"*:1\" handler: \"e\" }\n"
           "u { protocol: \"udp\" listen: \"*:2\" handler: \"e\" backlog: 5 middleware: [\"gzip\"] }\n",
           "t.conf:4:36: 'handler' does not apply to http listeners",
           "t.conf:5:48: 'backlog' does not apply to udp listeners",
           "t.conf:5:59: 'middleware' does not apply to udp listeners");
}

static void test_error_wrong_type(void **state)
{
    (void)state;
    ERRORS("[daemon]\nmax_connections: \"many\"\n",
           "t.conf:2:18: 'max_connections' must be an integer, not \"many\"");
    ERRORS("[daemon]\nmax_connections: true\n",
           "t.conf:2:18: 'max_connections' must be an integer, not boolean");
    ERRORS("[daemon]\nmax_connections: 2.5\n",
           "t.conf:2:18: 'max_connections' must be an integer, not number");
    ERRORS("[daemon]\nmax_connections: \"\"\n",
           "t.conf:2:18: 'max_connections' must be an integer, not string");
    ERRORS("[daemon]\npid_file: 5\n", "t.conf:2:11: 'pid_file' must be a string, not integer");
    ERRORS("[daemon]\nlog_level: true\n", "t.conf:2:12: 'log_level' must be a string, not boolean");
    ERRORS("[limits]\nallow: [\"10.0.0.1\", 3]\n",
           "t.conf:2:21: 'allow' must be a list of strings; item 2 is integer");
    ERRORS("[limits]\ndeny: { a: 1 }\n",
           "t.conf:2:7: 'deny' must be a string or a list of strings, not object");
    ERRORS("[limits]\nmax_body: 1.5\n", "t.conf:2:11: 'max_body' must be a size, not number");
    ERRORS("[limits]\nidle_timeout: [1]\n", "t.conf:2:15: 'idle_timeout' must be a duration, not array");
    ERRORS("[limits]\nrate_limit: true\n", "t.conf:2:13: 'rate_limit' must be a rate, not boolean");
    ERRORS("[handlers]\ns { type: \"static\" reply: \"x\" headers: \"X-A: 1\" }\n",
           "t.conf:2:40: 'headers' must be an object of strings, not string");
    ERRORS("[handlers]\ns { type: \"static\" reply: \"x\" headers { a: [1] } }\n",
           "t.conf:2:44: 'headers.a' must be a string, not array");
    ERRORS("[handlers]\nx { type: \"exec\" command: [] }\n", "t.conf:2:27: 'command' must name a program");
    ERRORS("[handlers]\nx { type: \"exec\" command: 5 }\n",
           "t.conf:2:27: 'command' must be a string or a list of strings, not integer");
    ERRORS("[handlers]\ne: 5\n", "t.conf:2:4: handler 'e' must be a block { ... }, not integer");
    ERRORS("daemon: 5\n", "t.conf:1:9: [daemon] must be a section, not integer");
    ERRORS("[handlers]\ne { type: \"echo\" }\n[listeners]\n"
           "w { protocol: \"http\" listen: \"*:1\" websocket { \"/ws\": { handler: \"e\" deflate: \"maybe\" } } }\n",
           "t.conf:4:79: 'deflate' must be true or false, not string");
    ERRORS("[handlers]\ne { type: \"echo\" }\n[listeners]\n"
           "w { protocol: \"http\" listen: \"*:1\" routes { \"/\": 5 } }\n",
           "t.conf:4:50: route '/' must name a handler or be a block, not integer");
}

static void test_error_out_of_range(void **state)
{
    (void)state;
    ERRORS("[daemon]\nmax_connections: 0\n",
           "t.conf:2:18: 'max_connections' is out of range: 0 (allowed 1 to 10000000)");
    ERRORS("[daemon]\nmax_connections: \"20000000\"\n",
           "t.conf:2:18: 'max_connections' is out of range: 20000000 (allowed 1 to 10000000)");
    ERRORS("[daemon]\nshutdown_timeout: \"2h\"\n",
           "t.conf:2:19: 'shutdown_timeout' is out of range: 2h (allowed 0s to 1h)");
    ERRORS("[daemon]\nshutdown_timeout: \"3601s\"\n",
           "t.conf:2:19: 'shutdown_timeout' is out of range: 3601s (allowed 0s to 1h)");
    ERRORS("[limits]\nmax_line: 8\n", "t.conf:2:11: 'max_line' is out of range: 8 (allowed 16 to 1GB)");
    ERRORS("[limits]\nmax_header: \"32MB\"\n",
           "t.conf:2:13: 'max_header' is out of range: 32MB (allowed 1KB to 16MB)");
    ERRORS("[limits]\nidle_timeout: -5\n",
           "t.conf:2:15: 'idle_timeout' is out of range: -5s (allowed 0s to 7d)");
    ERRORS("[limits]\nmax_body: -1\n", "t.conf:2:11: 'max_body' is out of range: -1 (allowed 0 to 64GB)");
    ERRORS("[limits]\nidle_timeout: 9000000000001\n", "t.conf:2:15: 'idle_timeout' is out of range");
    ERRORS("[limits]\nrate_limit: 2000000000\n", "t.conf:2:13: 'rate_limit' is out of range");
    ERRORS("[limits]\nrate_burst: -1\n",
           "t.conf:2:13: 'rate_burst' is out of range: -1 (allowed 0 to 10000000)");
    ERRORS("[middleware]\ng { type: \"gzip\" level: 10 }\n",
           "t.conf:2:25: 'level' is out of range: 10 (allowed 1 to 9)");
    ERRORS("[handlers]\np { type: \"proxy\" upstreams: \"h:1\" connect_timeout: 0 }\n",
           "t.conf:2:53: 'connect_timeout' is out of range: 0s (allowed 1ms to 1h)");
    ERRORS("[handlers]\ns { type: \"static\" reply: \"x\" status: 99 }\n",
           "t.conf:2:39: 'status' is out of range: 99 (allowed 100 to 599)");
    ERRORS("[handlers]\nr { type: \"redirect\" location: \"/\" status: 200 }\n",
           "t.conf:2:44: 'status' is out of range: 200 (allowed 300 to 399)");
}

static void test_error_bad_values(void **state)
{
    (void)state;
    ERRORS("[limits]\nidle_timeout: \"5 parsecs\"\n",
           "t.conf:2:15: 'idle_timeout': bad duration \"5 parsecs\" (use e.g. 250ms, 30s, 5m, 1h)");
    ERRORS("[limits]\nidle_timeout: \"-5s\"\n",
           "t.conf:2:15: 'idle_timeout': bad duration \"-5s\" (use e.g. 250ms, 30s, 5m, 1h)");
    ERRORS("[limits]\nmax_body: \"1.5\"\n",
           "t.conf:2:11: 'max_body': bad size \"1.5\" (use e.g. 512, 64KB, 1MB)");
    ERRORS("[limits]\nmax_body: \"2 TB\"\n",
           "t.conf:2:11: 'max_body': bad size \"2 TB\" (use e.g. 512, 64KB, 1MB)");
    ERRORS("[limits]\nrate_limit: \"5/x\"\n",
           "t.conf:2:13: 'rate_limit': bad rate \"5/x\" (use e.g. 100/s, 600/m)");
    ERRORS("[middleware]\nr { type: \"rate_limit\" rate: \"fast\" }\n",
           "t.conf:2:30: 'rate': bad rate \"fast\" (use e.g. 100/s, 600/m)");
    ERRORS("[limits]\nallow: [\"10.0.0.0/8\", \"10.0.0.0/33\", \"host\", \"::1/129\", \"1.2.3.4/\"]\n",
           "t.conf:2:23: 'allow': '10.0.0.0/33' is not an address or CIDR range",
           "t.conf:2:38: 'allow': 'host' is not an address or CIDR range",
           "t.conf:2:46: 'allow': '::1/129' is not an address or CIDR range",
           "t.conf:2:57: 'allow': '1.2.3.4/' is not an address or CIDR range");
    ERRORS("[limits]\ndeny: \"10.0.0.1/-1\"\n", "t.conf:2:7: 'deny': '10.0.0.1/-1' is not an address or CIDR range");
    ERRORS("[handlers]\ne { type: \"echo\" }\n[listeners]\n"
           "t { protocol: \"tcp\" listen: \"::1:80\" handler: \"e\" }\n"
           "u { protocol: \"udp\" listen: \"*:70000\" handler: \"e\" }\n"
           "v { protocol: \"udp\" listen: 80 handler: \"e\" }\n",
           "t.conf:4:29: 'listen': bad address \"::1:80\" (use host:port, [v6]:port or *:port)",
           "t.conf:5:29: 'listen': bad address \"*:70000\" (use host:port, [v6]:port or *:port)",
           "t.conf:6:29: 'listen' must be a string, not integer");
}

static void test_error_enum(void **state)
{
    (void)state;
    ERRORS("[daemon]\nlog_level: \"debg\"\n",
           "t.conf:2:12: unknown log_level 'debg' (expected one of: error, warn, info, debug); did you mean 'debug'?");
    ERRORS("[daemon]\nlog_level: \"verbose\"\n",
           "t.conf:2:12: unknown log_level 'verbose' (expected one of: error, warn, info, debug)");
    ERRORS("[daemon]\nlog_level: 3\n",
           "t.conf:2:12: unknown log_level '3' (expected one of: error, warn, info, debug)");
    ERRORS("[handlers]\nx { type: \"exex\" }\n",
           "t.conf:2:11: unknown type 'exex' (expected one of: echo, static, exec, stream, broadcast, health, "
           "metrics, file, redirect, proxy, plugin, worker); did you mean 'exec'?");
    ERRORS("[middleware]\nm { type: \"gzipp\" }\n",
           "t.conf:2:11: unknown type 'gzipp' (expected one of: cors, gzip, auth, rate_limit, access_log, "
           "headers); did you mean 'gzip'?");
    ERRORS("[handlers]\nx { type: \"exec\" command: \"ls\" stderr: \"clinet\" }\n",
           "t.conf:2:40: unknown stderr 'clinet' (expected one of: log, client, discard); did you mean 'client'?");
    ERRORS("[handlers]\ne { type: \"echo\" }\n[listeners]\n"
           "t { protocol: \"htp\" listen: \"*:1\" handler: \"e\" }\n"
           "u { protocol: \"sctp\" listen: \"*:1\" handler: \"e\" }\n",
           "t.conf:4:15: unknown protocol 'htp' (expected one of: tcp, udp, http); did you mean 'http'?",
           "t.conf:5:15: unknown protocol 'sctp' (expected one of: tcp, udp, http); did you mean 'tcp'?");
}

static void test_error_sections(void **state)
{
    (void)state;
    ERRORS("[limit]\nidle_timeout: 5\n", "t.conf:1:2: unknown section 'limit'; did you mean 'limits'?");
    ERRORS("[handler]\n", "t.conf:1:2: unknown section 'handler'; did you mean 'handlers'?");
    ERRORS("foo: 1\n[listners]\n", "t.conf:1:1: unknown section 'foo'",
           "t.conf:2:2: unknown section 'listners'; did you mean 'listeners'?");
}

static void test_error_missing_required(void **state)
{
    (void)state;
    ERRORS("[handlers]\nx { type: \"exec\" }\n", "t.conf:2:3: handler 'x': missing required key 'command'");
    ERRORS("[handlers]\nx { reply: \"hi\" }\n", "t.conf:2:3: handler 'x': missing required key 'type'");
    ERRORS("[handlers]\np { type: \"proxy\" }\nf { type: \"file\" }\n",
           "t.conf:2:3: handler 'p': missing required key 'upstreams'",
           "t.conf:3:3: handler 'f': missing required key 'root'");
    ERRORS("[middleware]\nm { level: 3 }\n", "t.conf:2:3: middleware 'm': missing required key 'type'");
    ERRORS("[handlers]\ne { type: \"echo\" }\n[listeners]\n"
           "t { listen: \"*:1\" handler: \"e\" }\n"
           "u { protocol: \"udp\" handler: \"e\" }\n",
           "t.conf:4:3: listener 't': missing required key 'protocol'",
           "t.conf:5:3: listener 'u': missing required key 'listen'");
    ERRORS("[handlers]\ne { type: \"echo\" }\n[listeners]\n"
           "w { protocol: \"http\" listen: \"*:1\" routes { \"/\": { middleware: [\"gzip\"] } } }\n",
           "t.conf:4:50: route '/': missing required key 'handler'");
}

static void test_error_handler_choice(void **state)
{
    (void)state;
    ERRORS("[handlers]\ne { type: \"echo\" }\n[listeners]\n"
           "t { protocol: \"tcp\" listen: \"*:1\" handler: \"e\" handlers: [\"e\"] }\n"
           "u { protocol: \"udp\" listen: \"*:2\" }\n",
           "t.conf:4:3: listener 't': set 'handler' or 'handlers', not both",
           "t.conf:5:3: listener 'u': needs 'handler' or 'handlers'");
    ERRORS("[handlers]\ne { type: \"echo\" }\n[listeners]\n"
           "w { protocol: \"http\" listen: \"*:1\" websocket {\n"
           "  \"/a\": { handler: \"e\" handlers: [\"e\"] }\n"
           "  \"/b\": { deflate: false }\n"
           "} }\n",
           "t.conf:5:9: WebSocket endpoint '/a': set 'handler' or 'handlers', not both",
           "t.conf:6:9: WebSocket endpoint '/b': needs 'handler' or 'handlers'");
}

static void test_error_references(void **state)
{
    (void)state;
    ERRORS("[handlers]\necho { type: \"echo\" }\n[listeners]\n"
           "t { protocol: \"tcp\" listen: \"*:1\" handler: \"ecko\" }\n"
           "u { protocol: \"udp\" listen: \"*:2\" handlers: [\"echo\", \"zzzzzzzz\"] }\n",
           "t.conf:4:44: undefined handler 'ecko'; did you mean 'echo'?",
           "t.conf:5:54: undefined handler 'zzzzzzzz'");
    ERRORS("[handlers]\ne { type: \"echo\" }\n[middleware]\nmine { type: \"cors\" }\n[listeners]\n"
           "w { protocol: \"http\" listen: \"*:1\" middleware: [\"gzp\", \"mien\", \"nope\"]\n"
           "  routes { \"/\": { handler: \"e\" middleware: \"authh\" } } }\n",
           "t.conf:6:49: undefined middleware 'gzp'; did you mean 'gzip'?",
           "t.conf:6:56: undefined middleware 'mien'; did you mean 'mine'?",
           "t.conf:6:64: undefined middleware 'nope'",
           "t.conf:7:44: undefined middleware 'authh'; did you mean 'auth'?");
    /* HTTP-only handlers on the other front ends */
    ERRORS("[handlers]\n"
           "hl { type: \"health\" }\n"
           "fl { type: \"file\" root: \"/srv\" }\n"
           "rd { type: \"redirect\" location: \"/\" }\n"
           "mt { type: \"metrics\" }\n"
           "px { type: \"proxy\" upstreams: [\"h:1\"] }\n"
           "[listeners]\n"
           "t { protocol: \"tcp\" listen: \"*:1\" handler: \"hl\" }\n"
           "u { protocol: \"udp\" listen: \"*:1\" handlers: [\"fl\", \"px\"] }\n"
           "w { protocol: \"http\" listen: \"*:2\" websocket { \"/ws\": [\"rd\", \"mt\", \"px\"] } }\n",
           "t.conf:8:44: handler 'hl' (type health) only serves HTTP routes, not tcp",
           "t.conf:9:46: handler 'fl' (type file) only serves HTTP routes, not udp",
           "t.conf:9:52: handler 'px' (type proxy) serves HTTP routes and TCP listeners, not udp",
           "t.conf:10:56: handler 'rd' (type redirect) only serves HTTP routes, not websocket",
           "t.conf:10:62: handler 'mt' (type metrics) only serves HTTP routes, not websocket",
           "t.conf:10:68: handler 'px' (type proxy) serves HTTP routes and TCP listeners, not websocket");
    /* a stream handler keeps a process per connection: not for HTTP routes */
    ERRORS("[handlers]\ns { type: \"stream\" command: \"cat\" }\n[listeners]\n"
           "w { protocol: \"http\" listen: \"*:1\" routes { \"/\": \"s\" } websocket { \"/ws\": \"s\" } }\n"
           "t { protocol: \"tcp\" listen: \"*:2\" handler: \"s\" }\n",
           "t.conf:4:50: handler 's' (type stream) keeps a process per connection: use it on tcp listeners "
           "or WebSocket endpoints, not HTTP routes");
}

static void test_error_routes(void **state)
{
    (void)state;
    ERRORS("[handlers]\ne { type: \"echo\" }\n[listeners]\n"
           "w { protocol: \"http\" listen: \"*:1\" routes {\n"
           "  \"get /x\": \"e\"\n"
           "  \"GET x\": \"e\"\n"
           "  \"GET /a b\": \"e\"\n"
           "  \"G1T /x\": \"e\"\n"
           "  \"GET\": \"e\"\n"
           "  \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA /x\": \"e\"\n"
           "} }\n",
           "t.conf:5:3: bad route 'get /x' (use \"METHOD /path\" or \"/path\")",
           "t.conf:6:3: bad route 'GET x' (use \"METHOD /path\" or \"/path\")",
           "t.conf:7:3: bad route 'GET /a b' (use \"METHOD /path\" or \"/path\")",
           "t.conf:8:3: bad route 'G1T /x' (use \"METHOD /path\" or \"/path\")",
           "t.conf:9:3: bad route 'GET' (use \"METHOD /path\" or \"/path\")",
           "t.conf:10:3: bad route 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA /x': method too long");
    /* "/x" means any method: the same route as "* /x"; extra spaces do not make a new one */
    ERRORS("[handlers]\ne { type: \"echo\" }\n[listeners]\n"
           "w { protocol: \"http\" listen: \"*:1\" routes {\n"
           "  \"/x\": \"e\"\n"
           "  \"GET /x\": \"e\"\n"
           "  \"* /x\": \"e\"\n"
           "  \"GET  /x\": \"e\"\n"
           "} }\n",
           "t.conf:7:3: duplicate route '* /x' (first defined at 5:3)",
           "t.conf:8:3: duplicate route 'GET  /x' (first defined at 6:3)");
    ERRORS("[handlers]\ne { type: \"echo\" }\n[listeners]\n"
           "w { protocol: \"http\" listen: \"*:1\" websocket { \"ws\": \"e\" \"/a b\": \"e\" \"/ok\": 5 } }\n",
           "t.conf:4:48: bad WebSocket path 'ws' (must start with '/')",
           "t.conf:4:58: bad WebSocket path '/a b' (must start with '/')",
           "t.conf:4:77: WebSocket endpoint '/ok' must name a handler, list handlers or be a block, not integer");
}

static void test_error_duplicate_listen(void **state)
{
    (void)state;
    ERRORS("[handlers]\ne { type: \"echo\" }\n[listeners]\n"
           "a { protocol: \"tcp\" listen: \"127.0.0.1:7000\" handler: \"e\" }\n"
           "b { protocol: \"tcp\" listen: \"127.0.0.1:7000\" handler: \"e\" }\n",
           "t.conf:5:29: duplicate listen address 127.0.0.1:7000 (also used by listener 'a' at 4:29)");
    /* a wildcard overlaps every host; tcp and http share the port space */
    ERRORS("[handlers]\ne { type: \"echo\" }\n[listeners]\n"
           "a { protocol: \"tcp\" listen: \"*:7000\" handler: \"e\" }\n"
           "b { protocol: \"http\" listen: \"127.0.0.1:7000\" }\n"
           "c { protocol: \"tcp\" listen: \"[::]:7001\" handler: \"e\" }\n"
           "d { protocol: \"tcp\" listen: \"10.0.0.1:7001\" handler: \"e\" }\n"
           "e { protocol: \"udp\" listen: \"0.0.0.0:7002\" handler: \"e\" }\n"
           "f { protocol: \"udp\" listen: \":7002\" handler: \"e\" }\n",
           "t.conf:5:30: duplicate listen address 127.0.0.1:7000 (also used by listener 'a' at 4:29)",
           "t.conf:7:29: duplicate listen address 10.0.0.1:7001 (also used by listener 'c' at 6:29)",
           "t.conf:9:29: duplicate listen address :7002 (also used by listener 'e' at 8:29)");
    /* tcp and udp on one port, distinct hosts, and port 0 are all fine */
    tn_config *cfg = load_ok("[handlers]\ne { type: \"echo\" }\n[listeners]\n"
                             "a { protocol: \"tcp\" listen: \"*:7000\" handler: \"e\" }\n"
                             "b { protocol: \"udp\" listen: \"*:7000\" handler: \"e\" }\n"
                             "c { protocol: \"tcp\" listen: \"127.0.0.1:7001\" handler: \"e\" }\n"
                             "d { protocol: \"http\" listen: \"127.0.0.2:7001\" }\n"
                             "e { protocol: \"tcp\" listen: \"127.0.0.1:0\" handler: \"e\" }\n"
                             "f { protocol: \"tcp\" listen: \"127.0.0.1:0\" handler: \"e\" }\n"
                             "g { protocol: \"http\" listen: \"*:0\" }\n");
    assert_int_equal(cfg->nlisteners, 7);
    assert_int_equal(listener(cfg, "b")->protocol, TN_PROTO_UDP);
    tn_config_free(cfg);
}

static void test_errors_sorted_in_file_order(void **state)
{
    (void)state;
    /* sections are read daemon, limits, handlers, middleware, listeners;
     * the report is still top to bottom */
    ERRORS("[listeners]\n"
           "t { protocol: \"tcp\" listen: \"*:1\" handler: \"nope\" }\n"
           "[middleware]\n"
           "m { type: \"zip\" }\n"
           "[handlers]\n"
           "x { type: \"exec\" }\n"
           "[limits]\n"
           "max_line: 1\n"
           "[daemon]\n"
           "log_level: \"loud\"\n",
           "t.conf:2:44: undefined handler 'nope'",
           "t.conf:4:11: unknown type 'zip' (expected one of: cors, gzip, auth, rate_limit, access_log, headers); "
           "did you mean 'gzip'?",
           "t.conf:6:3: handler 'x': missing required key 'command'",
           "t.conf:8:11: 'max_line' is out of range: 1 (allowed 16 to 1GB)",
           "t.conf:10:12: unknown log_level 'loud' (expected one of: error, warn, info, debug)");
}

static void test_errors_keep_earlier_diagnostics(void **state)
{
    (void)state;
    /* messages already in DIAG (e.g. warnings) stay first and unsorted */
    tn_doc doc = { 0 };
    tn_diag d = { 0 };
    tn_pos p = { "z.conf", 1, 1 };
    tn_diag_warn(&d, p, "earlier");
    const char *text = "[daemon]\nzz: 1\n";
    assert_int_equal(tn_tusk_parse_string(&doc, "t.conf", text, strlen(text), &d), 0);
    tn_config *cfg = tn_config_from_doc(&doc, "t.conf", &d);
    assert_null(cfg);
    assert_int_equal(d.count, 2);
    assert_string_equal(d.msgs[0], "z.conf:1:1: warning: earlier");
    assert_string_equal(d.msgs[1], "t.conf:2:1: unknown key 'zz' in [daemon]");
    tn_diag_free(&d);

    /* a warning alone does not make the config fail */
    memset(&doc, 0, sizeof(doc));
    tn_diag_warn(&d, p, "only a warning");
    assert_int_equal(tn_tusk_parse_string(&doc, "t.conf", "", 0, &d), 0);
    cfg = tn_config_from_doc(&doc, "t.conf", &d);
    assert_non_null(cfg);
    assert_int_equal(d.count, 1);
    tn_config_free(cfg);
    tn_diag_free(&d);
}

/* ---- middleware kinds named bare */

static void test_bare_middleware(void **state)
{
    (void)state;
    tn_config *cfg = load_ok("[handlers]\ne { type: \"echo\" }\n"
                             "[middleware]\n"
                             "strong { type: \"gzip\" level: 9 }\n"
                             "auth { type: \"headers\" set { X-A: \"1\" } }\n" /* a name shadowing a kind */
                             "[listeners]\n"
                             "w { protocol: \"http\" listen: \"*:1\" middleware: [\"gzip\", \"cors\", \"strong\"]\n"
                             "  routes {\n"
                             "    \"/a\": { handler: \"e\" middleware: [\"rate_limit\", \"auth\", \"gzip\"] }\n"
                             "    \"/b\": { handler: \"e\" middleware: \"access_log\" }\n"
                             "  }\n"
                             "}\n"
                             "v { protocol: \"http\" listen: \"*:2\" middleware: [\"gzip\", \"headers\"] }\n");
    /* named ones first, then each kind once, in order of first use */
    assert_int_equal(cfg->nmiddleware, 7);
    assert_string_equal(cfg->middleware[0].name, "strong");
    assert_string_equal(cfg->middleware[1].name, "auth");
    assert_int_equal(middleware(cfg, "strong")->level, 9);
    assert_int_equal(middleware(cfg, "auth")->type, TN_MW_HEADERS);
    assert_int_equal(middleware(cfg, "auth")->set.n, 1);

    const tn_middleware_conf *g = middleware(cfg, "gzip");
    assert_int_equal(g->type, TN_MW_GZIP);
    assert_int_equal(g->min_size, 256);
    assert_int_equal(g->level, 6);
    assert_list(&g->skip_types, 6, "image/", "video/", "audio/", "application/zip", "application/gzip",
                "font/woff2");

    const tn_middleware_conf *c = middleware(cfg, "cors");
    assert_int_equal(c->type, TN_MW_CORS);
    assert_list(&c->origins, 1, "*");
    assert_list(&c->methods, 6, "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE");
    assert_int_equal(c->allow_headers.n, 0);
    assert_false(c->credentials);
    assert_int_equal(c->max_age, 600000);

    const tn_middleware_conf *r = middleware(cfg, "rate_limit");
    assert_int_equal(r->type, TN_MW_RATE_LIMIT);
    assert_true(r->rate == 10.0);
    assert_int_equal(r->burst, 20);

    const tn_middleware_conf *a = middleware(cfg, "access_log");
    assert_int_equal(a->type, TN_MW_ACCESS_LOG);
    assert_string_equal(a->file, "-");
    assert_int_equal(a->format, TN_LOGFMT_COMBINED);

    const tn_middleware_conf *h = middleware(cfg, "headers");
    assert_int_equal(h->type, TN_MW_HEADERS);
    assert_int_equal(h->set.n, 0);
    assert_int_equal(h->add.n, 0);

    const tn_listener_conf *w = listener(cfg, "w");
    assert_list(&w->middleware, 3, "gzip", "cors", "strong");
    assert_list(&w->routes[0].middleware, 3, "rate_limit", "auth", "gzip");
    assert_list(&w->routes[1].middleware, 1, "access_log");
    tn_config_free(cfg);

    /* the auth kind's defaults, named bare */
    cfg = load_ok("[handlers]\ne { type: \"echo\" }\n[listeners]\n"
                  "w { protocol: \"http\" listen: \"*:1\" routes { \"/\": { handler: \"e\" middleware: [\"auth\"] } } }\n");
    assert_int_equal(cfg->nmiddleware, 1);
    const tn_middleware_conf *au = middleware(cfg, "auth");
    assert_int_equal(au->type, TN_MW_AUTH);
    assert_string_equal(au->realm, "tusknetd");
    assert_int_equal(au->tokens.n, 0);
    assert_int_equal(au->users.n, 0);
    tn_config_free(cfg);
}

/* ---- dump and load back */

static const char full_config[] =
    "[daemon]\n"
    "log_level: \"debug\"\n"
    "control_socket: \"ctl.sock\"\n"
    "control_group: \"wheel\"\n"
    "control_group_level: \"admin\"\n"
    "max_connections: 500\n"
    "shutdown_timeout: \"1500ms\"\n"
    "pid_file: \"/run/t.pid\"\n"
    "[limits]\n"
    "max_connections: 100\n"
    "max_connections_per_ip: 10\n"
    "max_connections_per_second: 5\n"
    "idle_timeout: \"5m\"\n"
    "read_timeout: \"1.5s\"\n"
    "write_timeout: \"1d\"\n"
    "handshake_timeout: \"30m\"\n"
    "header_timeout: \"7s\"\n"
    "max_line: \"1KB\"\n"
    "max_body: 1000\n"
    "max_header: \"2KB\"\n"
    "max_message: \"3MB\"\n"
    "max_output: \"1GB\"\n"
    "rate_limit: \"30/m\"\n"
    "rate_burst: 20\n"
    "allow: [\"10.0.0.0/8\", \"::1\"]\n"
    "deny: \"192.168.1.1\"\n"
    "[handlers]\n"
    "echo { type: \"echo\" }\n"
    "st { type: \"static\" reply: \"hi {payload}\" status: 201 content_type: \"text/html\"\n"
    "     headers { \"X-A\": \"1\" \"X-B\": \"true\" } }\n"
    "ex { type: \"exec\" command: [\"tr\", \"a-z\", \"A-Z\"] timeout: \"2s\" max_concurrency: 4 max_queue: 0\n"
    "     max_output: \"64KB\" env { LANG: \"C\" N: \"5\" } passenv: [\"PATH\"] stderr: \"discard\" cwd: \"/tmp\" }\n"
    "sm { type: \"stream\" command: [\"cat\"] stderr: \"client\" }\n"
    "bc { type: \"broadcast\" }\n"
    "hl { type: \"health\" }\n"
    "mt { type: \"metrics\" }\n"
    "fl { type: \"file\" root: \"www\" index: [\"index.html\", \"index.htm\"] }\n"
    "rd { type: \"redirect\" location: \"https://x{path}\" status: 301 headers { \"Cache-Control\": \"no\" } }\n"
    "px { type: \"proxy\" upstreams: [\"127.0.0.1:9000\", \"127.0.0.1:9001\"] balance: \"least_conn\"\n"
    "     retries: 0 connect_timeout: \"250ms\" timeout: \"90s\" max_fails: 5 fail_timeout: \"1m\" }\n"
    "pl { type: \"plugin\" path: \"p.so\" options { a: \"b\" \"c d\": \"\" } }\n"
    "[middleware]\n"
    "c { type: \"cors\" origins: [\"https://a\"] credentials: true allow_headers: [\"X-Y\"]\n"
    "    expose_headers: [\"X-Z\"] max_age: \"1h\" methods: [\"GET\"] }\n"
    "g { type: \"gzip\" level: 9 min_size: \"1KB\" skip_types: [] }\n"
    "a { type: \"auth\" tokens: [\"t1\", \"123\"] users { bob: \"pw\" } realm: \"r\" }\n"
    "r { type: \"rate_limit\" rate: \"5/h\" burst: 10 }\n"
    "l { type: \"access_log\" file: \"access.log\" format: \"json\" }\n"
    "h { type: \"headers\" set { \"X-Frame-Options\": \"DENY\" } add { \"X-B\": \"2\" } }\n"
    "[listeners]\n"
    "tcp1 { protocol: \"tcp\" listen: \"127.0.0.1:0\" handlers: [\"echo\", \"ex\", \"sm\", \"px\"] backlog: 128\n"
    "       max_line: \"2KB\" fd_name: \"lines\"\n"
    "       tls { cert: \"cert.pem\" key: \"key.pem\" chain: \"cert.pem\" min_version: \"1.3\" alpn: [\"x\"]\n"
    "             ciphers: \"HIGH\" ciphersuites: \"TLS_AES_128_GCM_SHA256\" client_ca: \"cert.pem\"\n"
    "             verify_client: \"optional\" session_tickets: false\n"
    "             sni { \"a.example\" { cert: \"cert.pem\" key: \"key.pem\" } \"*.b.example\" { cert: \"cert.pem\" "
    "key: \"key.pem\" } } } }\n"
    "udp1 { protocol: \"udp\" listen: \"[::1]:0\" handler: \"echo\" max_message: \"64KB\" rate_limit: 0.5 }\n"
    "web { protocol: \"http\" listen: \"*:0\" middleware: [\"c\", \"gzip\", \"l\"] idle_timeout: \"1m\"\n"
    "  tls { cert: \"cert.pem\" key: \"key.pem\" }\n"
    "  routes {\n"
    "    \"GET /\": \"st\"\n"
    "    \"POST /x\": { handler: \"ex\" middleware: [\"a\", \"cors\", \"h\", \"r\"] max_body: \"1KB\" deny: [\"10.9.9.9\"] }\n"
    "    \"/h\": \"hl\"\n"
    "    \"/m\": \"mt\"\n"
    "    \"GET /f/*\": \"fl\"\n"
    "    \"/r\": \"rd\"\n"
    "    \"* /p\": \"px\"\n"
    "    \"/pl\": \"pl\"\n"
    "  }\n"
    "  websocket {\n"
    "    \"/ws\": [\"echo\", \"bc\"]\n"
    "    \"/s\": { handler: \"sm\" subprotocols: [\"chat\"] origins: [\"same\"] ping_interval: \"1m\"\n"
    "            pong_timeout: \"5s\" deflate: false max_message: \"2MB\" idle_timeout: 0 }\n"
    "  }\n"
    "}\n";

static tn_value *roundtrip_value(const tn_config *cfg, tn_config **back)
{
    tn_value *v1 = tn_config_to_value(cfg);
    assert_non_null(v1);
    char *yaml = NULL;
    size_t len = 0;
    assert_int_equal(tn_yaml_emit_string(v1, &yaml, &len), 0);
    assert_non_null(yaml);
    assert_int_equal(strlen(yaml), len);

    tn_doc doc = { 0 };
    tn_diag d = { 0 };
    if (tn_yaml_load_string(&doc, "dump.yaml", yaml, len, &d) != 0) {
        char *got = tn_diag_join(&d);
        fail_msg("dump does not load:\n%s\n%s", got ? got : "", yaml);
    }
    /* the YAML reads back as the very tree that was emitted */
    if (!tn_value_equal(doc.root, v1))
        fail_msg("YAML round trip changed the tree:\n%s", yaml);
    *back = tn_config_from_doc(&doc, "dump.yaml", &d);
    if (!*back) {
        char *got = tn_diag_join(&d);
        fail_msg("dump rejected:\n%s\n---\n%s", got ? got : "", yaml);
    }
    assert_int_equal(d.count, 0);
    tn_diag_free(&d);
    free(yaml);
    return v1;
}

static void test_dump_roundtrip(void **state)
{
    (void)state;
    write_file("cert.pem", "not really a certificate\n");
    write_file("key.pem", "not really a key\n");
    char name[PATH_MAX + 16];
    snprintf(name, sizeof(name), "%s/t.conf", tmpdir);
    tn_config *cfg = load_ok_named(name, full_config);

    /* spot checks of the first load */
    assert_int_equal(cfg->nhandlers, 11);
    assert_int_equal(cfg->nmiddleware, 8); /* 6 named + gzip + cors */
    assert_int_equal(cfg->nlisteners, 3);
    assert_int_equal(cfg->limits.handshake_timeout, 1800000);
    const tn_listener_conf *t = listener(cfg, "tcp1");
    assert_non_null(t->tls);
    assert_int_equal(t->tls->min_version, TN_TLS_1_3);
    assert_int_equal(t->tls->verify_client, TN_VERIFY_OPTIONAL);
    assert_false(t->tls->session_tickets);
    assert_int_equal(t->tls->nsni, 2);
    assert_string_equal(t->tls->sni[1].name, "*.b.example");
    char want[PATH_MAX + 32];
    snprintf(want, sizeof(want), "%s/cert.pem", tmpdir);
    assert_string_equal(t->tls->cert, want);
    assert_string_equal(t->tls->sni[0].cert, want);
    const tn_listener_conf *web = listener(cfg, "web");
    assert_non_null(web->tls);
    assert_true(web->tls->session_tickets);
    assert_int_equal(web->tls->min_version, TN_TLS_1_2);
    assert_int_equal(web->nroutes, 8);
    assert_int_equal(web->nwebsocket, 2);
    assert_true(listener(cfg, "udp1")->limits.rate_limit == 0.5);
    assert_true(middleware(cfg, "r")->rate == 5.0 / 3600);

    tn_config *back = NULL;
    tn_value *v1 = roundtrip_value(cfg, &back);
    tn_value *v2 = tn_config_to_value(back);
    assert_non_null(v2);
    if (!tn_value_equal(v1, v2)) {
        tn_config_dump(cfg, stderr);
        fputs("---\n", stderr);
        tn_config_dump(back, stderr);
        fail_msg("the dump of the reloaded dump differs");
    }

    /* the dump holds every default and the normalized values */
    const tn_value *lim = tn_object_get(v1, "limits");
    assert_non_null(lim);
    assert_string_equal(tn_object_get(lim, "read_timeout")->u.s.ptr, "1500ms");
    assert_string_equal(tn_object_get(lim, "max_line")->u.s.ptr, "1KB");
    assert_int_equal(tn_object_get(lim, "max_body")->u.i, 1000);
    assert_string_equal(tn_object_get(lim, "rate_limit")->u.s.ptr, "30/m");
    const tn_value *wv = tn_object_get(tn_object_get(v1, "listeners"), "web");
    assert_non_null(wv);
    const tn_value *route = tn_object_get(tn_object_get(wv, "routes"), "POST /x");
    assert_non_null(route);
    /* routes list only the limits they change */
    assert_string_equal(tn_object_get(route, "max_body")->u.s.ptr, "1KB");
    assert_non_null(tn_object_get(route, "deny"));
    assert_null(tn_object_get(route, "idle_timeout"));
    assert_string_equal(tn_object_get(tn_object_get(tn_object_get(v1, "handlers"), "fl"), "root")->u.s.ptr,
                        (snprintf(want, sizeof(want), "%s/www", tmpdir), want));

    /* same structs on both sides */
    for (size_t i = 0; i < cfg->nhandlers; i++) {
        const tn_handler_conf *b = tn_config_handler(back, cfg->handlers[i].name);
        assert_non_null(b);
        assert_true(tn_handler_conf_equal(&cfg->handlers[i], b));
    }
    assert_true(back->limits.rate_limit == cfg->limits.rate_limit);
    assert_true(middleware(back, "r")->rate == middleware(cfg, "r")->rate);
    assert_int_equal(listener(back, "web")->websocket[1].limits.idle_timeout, 0);
    assert_int_equal(listener(back, "web")->websocket[1].limits.max_body, 1000);

    tn_value_free(v1);
    tn_value_free(v2);
    tn_config_free(back);
    tn_config_free(cfg);

    /* tn_config_dump writes the same YAML */
    cfg = load_ok("");
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    assert_non_null(f);
    assert_int_equal(tn_config_dump(cfg, f), 0);
    fclose(f);
    assert_non_null(strstr(buf, "log_level: info"));
    assert_non_null(strstr(buf, "max_body: 8MB"));
    tn_value *v = tn_config_to_value(cfg);
    char *yaml = NULL;
    size_t ylen = 0;
    assert_int_equal(tn_yaml_emit_string(v, &yaml, &ylen), 0);
    assert_string_equal(buf, yaml);
    free(yaml);
    free(buf);
    tn_value_free(v);
    tn_config_free(cfg);
}

/* ---- handler settings: copy, compare, free */

static void test_handler_conf_copy(void **state)
{
    (void)state;
    tn_config *cfg = load_ok("[handlers]\n"
                             "ex { type: \"exec\" command: [\"tr\", \"a-z\", \"A-Z\"] timeout: \"2s\" env { A: \"1\" }"
                             " passenv: [\"PATH\", \"HOME\"] cwd: \"/tmp\" }\n"
                             "st { type: \"static\" reply: \"x\" headers { \"X-A\": \"1\" } status: 204 }\n"
                             "px { type: \"proxy\" upstreams: [\"h:1\", \"h:2\"] balance: \"least_conn\" }\n"
                             "fl { type: \"file\" root: \"/srv\" }\n"
                             "pl { type: \"plugin\" path: \"/x.so\" options { k: \"v\" } }\n"
                             "e { type: \"echo\" }\n");
    for (size_t i = 0; i < cfg->nhandlers; i++) {
        const tn_handler_conf *src = &cfg->handlers[i];
        tn_handler_conf c;
        assert_int_equal(tn_handler_conf_copy(&c, src), 0);
        assert_string_equal(c.name, src->name);
        assert_true(c.name != src->name);
        assert_int_equal(c.type, src->type);
        assert_true(tn_handler_conf_equal(&c, src));
        assert_true(tn_handler_conf_equal(src, &c));
        tn_handler_conf_free(&c);
        assert_null(c.name);
    }

    const tn_handler_conf *ex = handler(cfg, "ex");
    tn_handler_conf c;
    assert_int_equal(tn_handler_conf_copy(&c, ex), 0);
    assert_list(&c.command, 3, "tr", "a-z", "A-Z");
    assert_true(c.command.v != ex->command.v);
    assert_true(c.command.v[0] != ex->command.v[0]);
    assert_int_equal(c.timeout, 2000);
    assert_string_equal(c.cwd, "/tmp");
    assert_true(c.cwd != ex->cwd);
    assert_int_equal(c.env.n, 1);
    assert_string_equal(c.env.v[0].key, "A");
    assert_string_equal(c.env.v[0].val, "1");
    /* one field changed: not equal any more */
    free(c.command.v[2]);
    c.command.v[2] = strdup("B-Z");
    assert_false(tn_handler_conf_equal(&c, ex));
    free(c.command.v[2]);
    c.command.v[2] = strdup("A-Z");
    assert_true(tn_handler_conf_equal(&c, ex));
    c.timeout = 3000;
    assert_false(tn_handler_conf_equal(&c, ex));
    c.timeout = 2000;
    c.max_concurrency = 17;
    assert_false(tn_handler_conf_equal(&c, ex));
    c.max_concurrency = ex->max_concurrency;
    free(c.env.v[0].val);
    c.env.v[0].val = strdup("2");
    assert_false(tn_handler_conf_equal(&c, ex));
    tn_handler_conf_free(&c);

    const tn_handler_conf *st = handler(cfg, "st");
    assert_int_equal(tn_handler_conf_copy(&c, st), 0);
    assert_int_equal(c.status, 204);
    c.status = 200;
    assert_false(tn_handler_conf_equal(&c, st));
    tn_handler_conf_free(&c);

    const tn_handler_conf *px = handler(cfg, "px");
    assert_int_equal(tn_handler_conf_copy(&c, px), 0);
    assert_int_equal(c.balance, TN_BALANCE_LEAST_CONN);
    c.balance = TN_BALANCE_ROUND_ROBIN;
    assert_false(tn_handler_conf_equal(&c, px));
    tn_handler_conf_free(&c);

    /* a different type is never equal; fields of other types do not count */
    assert_false(tn_handler_conf_equal(handler(cfg, "e"), handler(cfg, "fl")));
    assert_int_equal(tn_handler_conf_copy(&c, handler(cfg, "e")), 0);
    c.timeout = 99; /* not an echo setting */
    assert_true(tn_handler_conf_equal(&c, handler(cfg, "e")));
    tn_handler_conf_free(&c);

    /* the copy outlives the config */
    assert_int_equal(tn_handler_conf_copy(&c, handler(cfg, "fl")), 0);
    tn_config_free(cfg);
    assert_string_equal(c.root, "/srv");
    assert_list(&c.index, 1, "index.html");
    tn_handler_conf_free(&c);
}

/* ---- relative paths */

static void test_relative_paths(void **state)
{
    (void)state;
    tn_config *cfg = load_ok_named("/some/dir/t.conf",
                                   "[daemon]\n"
                                   "pid_file: \"run/t.pid\"\n"
                                   "control_socket: \"./ctl.sock\"\n"
                                   "[handlers]\n"
                                   "a { type: \"file\" root: \"www\" }\n"
                                   "b { type: \"file\" root: \"a/../b\" }\n"
                                   "c { type: \"file\" root: \"./x/./y//z/\" }\n"
                                   "d { type: \"file\" root: \"/srv/../etc/.\" }\n"
                                   "e { type: \"file\" root: \"../../../../..\" }\n"
                                   "f { type: \"file\" root: \"../www\" }\n"
                                   "x { type: \"exec\" command: [\"bin/run\"] cwd: \"work\" }\n"
                                   "p { type: \"plugin\" path: \"plugins/p.so\" }\n"
                                   "[middleware]\n"
                                   "l1 { type: \"access_log\" file: \"-\" }\n"
                                   "l2 { type: \"access_log\" file: \"logs/a.log\" }\n");
    assert_string_equal(cfg->daemon.pid_file, "/some/dir/run/t.pid");
    assert_string_equal(cfg->daemon.control_socket, "/some/dir/ctl.sock");
    assert_string_equal(handler(cfg, "a")->root, "/some/dir/www");
    assert_string_equal(handler(cfg, "b")->root, "/some/dir/b");
    assert_string_equal(handler(cfg, "c")->root, "/some/dir/x/y/z");
    assert_string_equal(handler(cfg, "d")->root, "/srv/../etc/."); /* absolute: as written */
    assert_string_equal(handler(cfg, "e")->root, "/");
    assert_string_equal(handler(cfg, "f")->root, "/some/www");
    assert_string_equal(handler(cfg, "x")->cwd, "/some/dir/work");
    assert_list(&handler(cfg, "x")->command, 1, "bin/run"); /* argv is not a path key */
    assert_string_equal(handler(cfg, "p")->path, "/some/dir/plugins/p.so");
    assert_string_equal(middleware(cfg, "l1")->file, "-");
    assert_string_equal(middleware(cfg, "l2")->file, "/some/dir/logs/a.log");
    tn_config_free(cfg);

    /* defaults are not resolved */
    cfg = load_ok_named("/some/dir/t.conf", "[handlers]\nx { type: \"exec\" command: \"ls\" }\n");
    assert_string_equal(handler(cfg, "x")->cwd, "");
    assert_string_equal(cfg->daemon.pid_file, "");
    assert_string_equal(cfg->daemon.control_socket, "/run/tusknetd/control.sock");
    tn_config_free(cfg);

    /* a file named relative to the working directory */
    char cwd[PATH_MAX], want[PATH_MAX + 32];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    cfg = load_ok_named("t.conf", "[handlers]\nf { type: \"file\" root: \"www\" }\n");
    snprintf(want, sizeof(want), "%s/www", strcmp(cwd, "/") == 0 ? "" : cwd);
    assert_string_equal(handler(cfg, "f")->root, want);
    tn_config_free(cfg);
    cfg = load_ok_named("sub/t.conf", "[handlers]\nf { type: \"file\" root: \"www\" }\n");
    snprintf(want, sizeof(want), "%s/sub/www", strcmp(cwd, "/") == 0 ? "" : cwd);
    assert_string_equal(handler(cfg, "f")->root, want);
    tn_config_free(cfg);
}

static void test_tls_files_must_be_readable(void **state)
{
    (void)state;
    write_file("cert.pem", "x\n");
    char name[PATH_MAX + 16];
    snprintf(name, sizeof(name), "%s/t.conf", tmpdir);
    const char *text = "[listeners]\n"
                       "w { protocol: \"http\" listen: \"*:1\" tls { cert: \"cert.pem\" key: \"nokey.pem\" } }\n";
    tn_diag d;
    tn_config *cfg = load_named(name, text, &d);
    assert_null(cfg);
    assert_int_equal(d.count, 1);
    char want[2 * PATH_MAX];
    snprintf(want, sizeof(want), "%s:2:64: cannot read key '%s/nokey.pem': No such file or directory", name,
             tmpdir);
    assert_string_equal(d.msgs[0], want);
    tn_diag_free(&d);

    ERRORS("[listeners]\nw { protocol: \"http\" listen: \"*:1\" tls { } }\n",
           "t.conf:2:40: tls of listener 'w': missing required key 'cert'",
           "t.conf:2:40: tls of listener 'w': missing required key 'key'");
    ERRORS("[listeners]\nu { protocol: \"udp\" listen: \"*:1\" tls { } }\n",
           "t.conf:2:3: listener 'u': needs 'handler' or 'handlers'",
           "t.conf:2:35: 'tls' does not apply to udp listeners");
}

/* ---- the Markdown reference */

static void test_reference(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    tn_config_reference(f);
    assert_int_equal(fclose(f), 0);
    assert_non_null(buf);
    assert_int_equal(strlen(buf), len);

    static const char *const titles[] = {
        "\n#### `[daemon]`\n", "\n#### `[limits]`\n", "\n#### `[handlers]` NAME `{ ... }`\n",
        "\n#### `[middleware]` NAME `{ ... }`\n", "\n#### `[listeners]` NAME `{ ... }`\n",
        "\n#### listener `tls { ... }`\n", "\n#### listener `tls { sni { \"name\" { ... } } }`\n",
        "\n#### listener `routes { \"METHOD /path\": ... }`\n", "\n#### listener `websocket { \"/path\": ... }`\n",
    };
    const char *prev = buf;
    for (size_t i = 0; i < sizeof(titles) / sizeof(titles[0]); i++) {
        const char *p = strstr(buf, titles[i]);
        if (!p)
            fail_msg("no heading %s", titles[i]);
        assert_true(p >= prev); /* in order */
        prev = p;
    }

    /* a row for every key of the table, with its type */
    for (size_t i = 0; i < tn_schema_len; i++) {
        const tn_key *k = &tn_schema[i];
        char row[256];
        snprintf(row, sizeof(row), "\n| `%s` | %s", k->key, tn_type_doc(k->type));
        if (!strstr(buf, row))
            fail_msg("no row for %s.%s", k->scope, k->key);
    }
    size_t rows = 0;
    for (const char *p = buf; (p = strstr(p, "\n| `")) != NULL; p++)
        rows++;
    assert_int_equal(rows, tn_schema_len);

    /* some rows in full */
    assert_non_null(strstr(buf, "\n| `log_level` | enum: error, warn, info, debug | `info` | all | "
                                "Least severe message logged. |\n"));
    assert_non_null(strstr(buf, "\n| `max_line` | size (16–1GB) | `64KB` | all | Longest TCP line; longer gets "
                                "'Error: line too long' and a close. |\n"));
    assert_non_null(strstr(buf, "\n| `shutdown_timeout` | duration (0s–1h) | `10s` | all |"));
    assert_non_null(strstr(buf, "\n| `command` | argv list | required | exec,stream,worker | "));
    assert_non_null(strstr(buf, "\n| `handler` | handler name | — | tcp,udp | "));
    assert_non_null(strstr(buf, "\n| `control_group` | string | empty | all | "));
    assert_non_null(strstr(buf, "\n| `skip_types` | list of strings | "
                                "`image/,video/,audio/,application/zip,application/gzip,font/woff2` | gzip | "));
    assert_non_null(strstr(buf, "\n| key | type | default | applies to | meaning |\n|---|---|---|---|---|\n"));
    assert_true(strncmp(buf, "Durations are seconds", 21) == 0);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_empty),
        cmocka_unit_test(test_defaults_per_type),
        cmocka_unit_test(test_limit_inheritance),
        cmocka_unit_test(test_value_forms),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_listen),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_error_unknown_key),
        cmocka_unit_test(test_error_key_does_not_apply),
        cmocka_unit_test(test_error_wrong_type),
        cmocka_unit_test(test_error_out_of_range),
        cmocka_unit_test(test_error_bad_values),
        cmocka_unit_test(test_error_enum),
        cmocka_unit_test(test_error_sections),
        cmocka_unit_test(test_error_missing_required),
        cmocka_unit_test(test_error_handler_choice),
        cmocka_unit_test(test_error_references),
        cmocka_unit_test(test_error_routes),
        cmocka_unit_test(test_error_duplicate_listen),
        cmocka_unit_test(test_errors_sorted_in_file_order),
        cmocka_unit_test(test_errors_keep_earlier_diagnostics),
        cmocka_unit_test(test_bare_middleware),
        cmocka_unit_test_setup_teardown(test_dump_roundtrip, fs_setup, fs_teardown),
        cmocka_unit_test(test_handler_conf_copy),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test_setup_teardown(test_tls_files_must_be_readable, fs_setup, fs_teardown),
        cmocka_unit_test(test_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
