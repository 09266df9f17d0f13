/* SPDX-License-Identifier: MIT */
/* metrics_export.c - the exports of every counter: `stats` and `info`
 * JSON for the control socket, Prometheus text for the metrics handler.
 *
 * Process figures (memory, descriptors, CPU, start time) are read from
 * /proc when asked for, the way Prometheus client libraries read them. */
#include "metrics_export.h"

#include <dirent.h>
#include <event2/buffer.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "clock.h"
#include "cluster.h"
#include "handlers/handler.h"
#include "handlers/plugin.h"
#include "json.h"
#include "metrics.h"
#include "net/conn.h"
#include "net/listener.h"
#include "net/lwsdrv.h"
#include "proto/http.h"
#include "state.h"
#include "upstream/proxy.h"
#include "version.h"

/* What the Makefile bakes in (-D); a build without them says so. */
#ifndef TN_BUILD_DATE
#define TN_BUILD_DATE "unknown"
#endif
#ifndef TN_BUILD_GIT
#define TN_BUILD_GIT "unknown"
#endif
#if defined(__clang__)
#define TN_COMPILER __VERSION__
#else
#define TN_COMPILER "gcc " __VERSION__
#endif

typedef struct proc_sample {
    uint64_t rss_bytes, vm_bytes;
    uint64_t open_fds, max_fds;
    double cpu_seconds;
    double start_time; /* seconds since the epoch */
} proc_sample;

/* Boot time plus the process's start in clock ticks since boot, as
 * Prometheus clients compute process_start_time_seconds. */
static double start_time(unsigned long long ticks)
{
    FILE *f = fopen("/proc/stat", "r");
    char line[256];
    unsigned long long btime = 0;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "btime %llu", &btime) == 1)
            break;
    if (f)
        fclose(f);
    long hz = sysconf(_SC_CLK_TCK);
    return (double)btime + (double)ticks / (double)(hz > 0 ? hz : 100);
}

static void sample_process(proc_sample *p)
{
    memset(p, 0, sizeof(*p));
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    /* fields after the command name, which may hold spaces and parentheses */
    const char *rest = strrchr(buf, ')');
    unsigned long long start = 0, vsize = 0;
    long long rss = 0;
    if (rest && sscanf(rest + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu %llu %lld",
                       &start, &vsize, &rss) == 3) {
        p->start_time = start_time(start);
        p->vm_bytes = vsize;
        long page = sysconf(_SC_PAGESIZE);
        p->rss_bytes = rss > 0 ? (uint64_t)rss * (uint64_t)(page > 0 ? page : 4096) : 0;
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        p->cpu_seconds = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    DIR *dir = opendir("/proc/self/fd");
    if (dir) {
        for (struct dirent *e; (e = readdir(dir));)
            p->open_fds += e->d_name[0] != '.';
        p->open_fds--; /* the listing's own descriptor */
        closedir(dir);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        p->max_fds = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
}

static void responses_json(tn_json *j, const char *key, const uint64_t *n)
{
    tn_json_open(j, key, '{');
    for (int k = 0; k < TN_HTTP_CLASSES; k++)
        tn_json_u64(j, tn_http_class_name(k), n[k]);
    tn_json_close(j, '}');
}

void tn_metrics_info_json(tn_daemon *d, tn_json *j, const char *key)
{
    proc_sample p;
    sample_process(&p);
    tn_json_open(j, key, '{');
    tn_json_i64(j, "pid", (int64_t)getpid());
    tn_json_str(j, "version", TN_VERSION);
    tn_json_open(j, "build", '{');
    tn_json_str(j, "git", TN_BUILD_GIT);
    tn_json_str(j, "date", TN_BUILD_DATE);
    tn_json_str(j, "compiler", TN_COMPILER);
    tn_json_str(j, "libevent", event_get_version());
    tn_json_str(j, "openssl", OpenSSL_version(OPENSSL_VERSION_STRING));
    tn_json_str(j, "libwebsockets", tn_lws_version());
    tn_json_close(j, '}');
    char *path = realpath(d->config_path, NULL); /* as given on the command line: maybe relative */
    tn_json_str(j, "config", path ? path : d->config_path);
    free(path);
    tn_json_time(j, "started", d->started_wall_ms);
    tn_json_num(j, "uptime_seconds", tn_metrics_uptime(d));
    tn_json_u64(j, "reloads", d->reloads);
    tn_json_u64(j, "reloads_ok", d->reloads_ok);
    tn_json_u64(j, "reloads_refused", d->reloads_refused);
    if (d->last_reload_ms) {
        tn_json_open(j, "last_reload", '{');
        tn_json_time(j, "time", d->last_reload_ms);
        tn_json_str(j, "outcome", d->last_reload_ok ? "ok" : "refused");
        tn_json_str(j, "message", d->last_reload_msg);
        tn_json_close(j, '}');
    } else {
        tn_json_str(j, "last_reload", NULL);
    }
    tn_json_u64(j, "rss_bytes", p.rss_bytes);
    tn_json_u64(j, "open_fds", p.open_fds);
    tn_json_u64(j, "max_fds", p.max_fds);
    tn_json_num(j, "cpu_seconds", p.cpu_seconds);
    /* by the name `connections` shows; UDP has no connections */
    uint64_t tcp = 0, http = 0, ws = 0;
    for (tn_conn_base *b = d->conns; b; b = b->next) {
        const char *proto = b->kind->protocol(b);
        tcp += strcmp(proto, "tcp") == 0;
        http += strcmp(proto, "http") == 0;
        ws += strcmp(proto, "ws") == 0;
    }
    tn_json_open(j, "connections", '{');
    tn_json_u64(j, "tcp", tcp);
    tn_json_u64(j, "http", http);
    tn_json_u64(j, "ws", ws);
    tn_json_close(j, '}');
    tn_json_close(j, '}');
}

static void counters_json(tn_json *j, const tn_conn_stats *s)
{
    tn_json_u64(j, "total_connections", s->total_connections);
    tn_json_u64(j, "active_connections", s->active_connections);
    tn_json_u64(j, "total_bytes_sent", s->total_bytes_sent);
    tn_json_u64(j, "total_bytes_received", s->total_bytes_received);
    tn_json_u64(j, "connection_errors", s->connection_errors);
    tn_json_u64(j, "timeout_errors", s->timeout_errors);
    tn_json_u64(j, "messages_in", s->messages_in);
    tn_json_u64(j, "messages_out", s->messages_out);
    tn_json_open(j, "rejected", '{');
    for (int r = 0; r < TN_REJ_COUNT; r++)
        tn_json_u64(j, tn_reject_name(r), s->rejected[r]);
    tn_json_close(j, '}');
}

static void tls_json(tn_json *j, const tn_conn_stats *s)
{
    tn_json_open(j, "tls", '{');
    tn_json_u64(j, "handshakes", s->tls_handshakes);
    tn_json_open(j, "handshake_failures", '{');
    for (int r = 0; r < TN_TLSF_COUNT; r++)
        tn_json_u64(j, tn_tls_failure_name(r), s->tls_failures[r]);
    tn_json_close(j, '}');
    tn_json_close(j, '}');
}

typedef struct route_objs {
    tn_json *j;
    const uint64_t *unrouted;
} route_objs;

static void route_json(void *arg, const char *route, const uint64_t *counts)
{
    route_objs *a = arg;
    if (!route) {
        a->unrouted = counts; /* after the routes, as a key of its own */
        return;
    }
    tn_json_open(a->j, route, '{');
    responses_json(a->j, "http_responses", counts);
    tn_json_close(a->j, '}');
}

void tn_metrics_buckets_json(const tn_daemon *d, tn_json *j, const tn_hist *h)
{
    if (!d->worker)
        return;
    tn_json_open(j, "latency_buckets", '[');
    for (int i = 0; i < TN_HIST_BUCKETS; i++)
        tn_json_u64(j, NULL, h->buckets[i]);
    tn_json_close(j, ']');
}

void tn_metrics_stats_json(tn_daemon *d, tn_json *j)
{
    tn_json_open(j, NULL, '{');
    tn_json_str(j, "version", TN_VERSION);
    tn_json_num(j, "uptime_seconds", tn_metrics_uptime(d));
    tn_json_u64(j, "reloads", d->reloads);
    tn_json_u64(j, "reloads_ok", d->reloads_ok);
    tn_json_u64(j, "reloads_refused", d->reloads_refused);
    tn_metrics_info_json(d, j, "info");
    tn_json_open(j, "global", '{');
    counters_json(j, &d->stats);
    tls_json(j, &d->stats);
    responses_json(j, "http_responses", d->stats.http_responses);
    tn_json_u64(j, "loop_gathers", d->loop_gathers);
    tn_json_close(j, '}');
    tn_json_open(j, "listeners", '{');
    for (tn_listener *l = d->listeners; l; l = l->next) {
        tn_json_open(j, l->name, '{');
        tn_json_str(j, "protocol", tn_protocol_name(l->protocol));
        tn_json_str(j, "address", l->bound_str);
        tn_json_bool(j, "draining", l->draining);
        counters_json(j, &l->stats);
        if (l->conf->tls)
            tls_json(j, &l->stats);
        if (l->protocol == TN_PROTO_HTTP) {
            responses_json(j, "http_responses", l->stats.http_responses);
            route_objs objs = { j, NULL };
            tn_json_open(j, "routes", '{');
            if (l->router)
                tn_http_router_counts(l->router, route_json, &objs);
            tn_json_close(j, '}');
            if (objs.unrouted) {
                tn_json_open(j, "unrouted", '{');
                responses_json(j, "http_responses", objs.unrouted);
                tn_json_close(j, '}');
            }
        }
        tn_json_close(j, '}');
    }
    tn_json_close(j, '}');
    tn_json_open(j, "handlers", '{');
    for (size_t i = 0; i < tn_registry_count(d->registry); i++) {
        tn_handler *h = tn_registry_at(d->registry, i);
        tn_json_open(j, h->name, '{');
        tn_json_str(j, "type", h->ops->type);
        tn_json_u64(j, "calls", h->stats.calls);
        tn_json_u64(j, "errors", h->stats.errors);
        tn_json_u64(j, "in_flight", h->stats.in_flight);
        if (h->conf.type == TN_H_WORKER) {
            tn_json_u64(j, "processes", h->stats.processes);
            tn_json_u64(j, "restarts", h->stats.restarts);
        }
        tn_json_open(j, "latency_ms", '{');
        tn_json_num(j, "p50", tn_hist_percentile(&h->stats.latency, 0.50) / 1000);
        tn_json_num(j, "p90", tn_hist_percentile(&h->stats.latency, 0.90) / 1000);
        tn_json_num(j, "p99", tn_hist_percentile(&h->stats.latency, 0.99) / 1000);
        tn_json_close(j, '}');
        tn_plugin_stats_json(h, j);
        tn_metrics_buckets_json(d, j, &h->stats.latency);
        tn_json_close(j, '}');
    }
    tn_json_close(j, '}');
    tn_cluster_stats_json(d, j);
    tn_json_close(j, '}');
}

typedef struct listener_metric {
    const char *name, *type, *help;
    size_t off;
} listener_metric;

typedef struct route_rows {
    struct evbuffer *out;
    const char *listener;
} route_rows;

static void route_prom(void *arg, const char *route, const uint64_t *counts)
{
    route_rows *a = arg;
    for (int k = 0; k < TN_HTTP_CLASSES; k++) {
        evbuffer_add_printf(a->out, "tusknet_http_responses_total{listener=\"");
        tn_prom_label(a->out, a->listener);
        evbuffer_add_printf(a->out, "\",route=\"");
        tn_prom_label(a->out, route ? route : "");
        evbuffer_add_printf(a->out, "\",class=\"%s\"} %llu\n", tn_http_class_name(k), (unsigned long long)counts[k]);
    }
}

/* The process_* series every Prometheus client library exports, and the
 * build as an info metric. */
static void process_prom(tn_daemon *d, struct evbuffer *out)
{
    proc_sample p;
    sample_process(&p);
    evbuffer_add_printf(out,
                        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
                        "# TYPE process_cpu_seconds_total counter\n"
                        "process_cpu_seconds_total %.6f\n"
                        "# HELP process_open_fds Number of open file descriptors.\n"
                        "# TYPE process_open_fds gauge\n"
                        "process_open_fds %llu\n"
                        "# HELP process_max_fds Maximum number of open file descriptors.\n"
                        "# TYPE process_max_fds gauge\n"
                        "process_max_fds %llu\n"
                        "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                        "# TYPE process_virtual_memory_bytes gauge\n"
                        "process_virtual_memory_bytes %llu\n"
                        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                        "# TYPE process_resident_memory_bytes gauge\n"
                        "process_resident_memory_bytes %llu\n"
                        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
                        "# TYPE process_start_time_seconds gauge\n"
                        "process_start_time_seconds %.2f\n",
                        p.cpu_seconds, (unsigned long long)p.open_fds, (unsigned long long)p.max_fds,
                        (unsigned long long)p.vm_bytes, (unsigned long long)p.rss_bytes, p.start_time);
    evbuffer_add_printf(out, "# HELP tusknet_build_info The daemon's version and build; always 1.\n"
                             "# TYPE tusknet_build_info gauge\n"
                             "tusknet_build_info{version=\"");
    tn_prom_label(out, TN_VERSION);
    evbuffer_add_printf(out, "\",revision=\"");
    tn_prom_label(out, TN_BUILD_GIT);
    evbuffer_add_printf(out, "\",build_date=\"");
    tn_prom_label(out, TN_BUILD_DATE);
    evbuffer_add_printf(out, "\",libevent=\"");
    tn_prom_label(out, event_get_version());
    evbuffer_add_printf(out, "\",openssl=\"");
    tn_prom_label(out, OpenSSL_version(OPENSSL_VERSION_STRING));
    evbuffer_add_printf(out, "\",libwebsockets=\"");
    tn_prom_label(out, tn_lws_version());
    evbuffer_add_printf(out, "\"} 1\n");
    evbuffer_add_printf(out,
                        "# HELP tusknet_uptime_seconds Seconds since the daemon started.\n"
                        "# TYPE tusknet_uptime_seconds gauge\n"
                        "tusknet_uptime_seconds %.3f\n"
                        "# HELP tusknet_reloads_total Configuration reload attempts, by outcome (ok, refused).\n"
                        "# TYPE tusknet_reloads_total counter\n"
                        "tusknet_reloads_total{outcome=\"ok\"} %llu\n"
                        "tusknet_reloads_total{outcome=\"refused\"} %llu\n"
                        "# HELP tusknet_last_reload_successful Whether the latest reload attempt loaded (1 before any).\n"
                        "# TYPE tusknet_last_reload_successful gauge\n"
                        "tusknet_last_reload_successful %d\n"
                        "# HELP tusknet_last_reload_timestamp_seconds When the latest reload was attempted (0 before any).\n"
                        "# TYPE tusknet_last_reload_timestamp_seconds gauge\n"
                        "tusknet_last_reload_timestamp_seconds %.3f\n"
                        "# HELP tusknet_loop_gathers_total Loop passes after which the loop waited coalesce_us for events to gather.\n"
                        "# TYPE tusknet_loop_gathers_total counter\n"
                        "tusknet_loop_gathers_total %llu\n",
                        tn_metrics_uptime(d), (unsigned long long)d->reloads_ok,
                        (unsigned long long)d->reloads_refused, !d->last_reload_ms || d->last_reload_ok,
                        (double)d->last_reload_ms / 1e3, (unsigned long long)d->loop_gathers);
}

double tn_metrics_uptime(const tn_daemon *d)
{
    return (double)(tn_now_us() - d->started_us) / 1e6;
}

void tn_metrics_prometheus(tn_daemon *d, struct evbuffer *out)
{
    static const listener_metric lm[] = {
        { "tusknet_connections_total", "counter", "Connections accepted.",
          offsetof(tn_conn_stats, total_connections) },
        { "tusknet_connections_active", "gauge", "Connections open now.",
          offsetof(tn_conn_stats, active_connections) },
        { "tusknet_sent_bytes_total", "counter", "Bytes written to peers.",
          offsetof(tn_conn_stats, total_bytes_sent) },
        { "tusknet_received_bytes_total", "counter", "Bytes read from peers.",
          offsetof(tn_conn_stats, total_bytes_received) },
        { "tusknet_connection_errors_total", "counter", "Connections ended by an error (reset, refused accept).",
          offsetof(tn_conn_stats, connection_errors) },
        { "tusknet_timeout_errors_total", "counter", "Connections closed by a timeout.",
          offsetof(tn_conn_stats, timeout_errors) },
        { "tusknet_messages_received_total", "counter", "Messages received.", offsetof(tn_conn_stats, messages_in) },
        { "tusknet_messages_sent_total", "counter", "Messages sent.", offsetof(tn_conn_stats, messages_out) },
    };
    process_prom(d, out);
    for (size_t m = 0; m < sizeof(lm) / sizeof(lm[0]); m++) {
        evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", lm[m].name, lm[m].help, lm[m].name, lm[m].type);
        for (tn_listener *l = d->listeners; l; l = l->next) {
            uint64_t v = *(const uint64_t *)((const char *)&l->stats + lm[m].off);
            evbuffer_add_printf(out, "%s{listener=\"", lm[m].name);
            tn_prom_label(out, l->name);
            evbuffer_add_printf(out, "\",protocol=\"%s\"} %llu\n", tn_protocol_name(l->protocol),
                                (unsigned long long)v);
        }
    }
    evbuffer_add_printf(out, "# HELP tusknet_rejections_total Connections and messages refused, by reason.\n"
                             "# TYPE tusknet_rejections_total counter\n");
    for (tn_listener *l = d->listeners; l; l = l->next) {
        for (int r = 0; r < TN_REJ_COUNT; r++) {
            evbuffer_add(out, "tusknet_rejections_total{listener=\"", 35);
            tn_prom_label(out, l->name);
            evbuffer_add_printf(out, "\",reason=\"%s\"} %llu\n", tn_reject_name(r),
                                (unsigned long long)l->stats.rejected[r]);
        }
    }
    evbuffer_add_printf(out, "# HELP tusknet_tls_handshakes_total TLS handshakes completed.\n"
                             "# TYPE tusknet_tls_handshakes_total counter\n");
    for (tn_listener *l = d->listeners; l; l = l->next) {
        if (!l->conf->tls)
            continue;
        evbuffer_add(out, "tusknet_tls_handshakes_total{listener=\"", 39);
        tn_prom_label(out, l->name);
        evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)l->stats.tls_handshakes);
    }
    evbuffer_add_printf(out, "# HELP tusknet_tls_handshake_failures_total TLS handshakes that failed, by reason.\n"
                             "# TYPE tusknet_tls_handshake_failures_total counter\n");
    for (tn_listener *l = d->listeners; l; l = l->next) {
        if (!l->conf->tls)
            continue;
        for (int r = 0; r < TN_TLSF_COUNT; r++) {
            evbuffer_add(out, "tusknet_tls_handshake_failures_total{listener=\"", 47);
            tn_prom_label(out, l->name);
            evbuffer_add_printf(out, "\",reason=\"%s\"} %llu\n", tn_tls_failure_name(r),
                                (unsigned long long)l->stats.tls_failures[r]);
        }
    }
    evbuffer_add_printf(out, "# HELP tusknet_http_responses_total HTTP responses by status class, per route "
                             "(route \"\": answered before or without a route).\n"
                             "# TYPE tusknet_http_responses_total counter\n");
    for (tn_listener *l = d->listeners; l; l = l->next) {
        route_rows rows = { out, l->name };
        if (l->protocol == TN_PROTO_HTTP && l->router)
            tn_http_router_counts(l->router, route_prom, &rows);
    }
    size_t nh = tn_registry_count(d->registry);
    static const struct { const char *name, *type, *help; } hm[] = {
        { "tusknet_handler_calls_total", "counter", "Messages given to the handler." },
        { "tusknet_handler_errors_total", "counter", "Calls that ended in an error reply." },
        { "tusknet_handler_in_flight", "gauge", "Asynchronous calls not answered yet." },
    };
    for (size_t m = 0; m < 3; m++) {
        evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", hm[m].name, hm[m].help, hm[m].name, hm[m].type);
        for (size_t i = 0; i < nh; i++) {
            tn_handler *h = tn_registry_at(d->registry, i);
            uint64_t v = m == 0 ? h->stats.calls : m == 1 ? h->stats.errors : h->stats.in_flight;
            evbuffer_add_printf(out, "%s{handler=\"", hm[m].name);
            tn_prom_label(out, h->name);
            evbuffer_add_printf(out, "\",type=\"%s\"} %llu\n", h->ops->type, (unsigned long long)v);
        }
    }
    static const struct { const char *name, *type, *help; } wm[] = {
        { "tusknet_handler_processes", "gauge", "Worker programs running." },
        { "tusknet_handler_restarts_total", "counter", "Worker programs started again after one ended." },
    };
    for (size_t m = 0; m < 2; m++) {
        evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", wm[m].name, wm[m].help, wm[m].name, wm[m].type);
        for (size_t i = 0; i < nh; i++) {
            tn_handler *h = tn_registry_at(d->registry, i);
            if (h->conf.type != TN_H_WORKER)
                continue;
            evbuffer_add_printf(out, "%s{handler=\"", wm[m].name);
            tn_prom_label(out, h->name);
            evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)(m ? h->stats.restarts : h->stats.processes));
        }
    }
    evbuffer_add_printf(out, "# HELP tusknet_handler_latency_seconds Time from message to reply.\n"
                             "# TYPE tusknet_handler_latency_seconds histogram\n");
    for (size_t i = 0; i < nh; i++) {
        tn_handler *h = tn_registry_at(d->registry, i);
        struct evbuffer *labels = evbuffer_new();
        if (!labels)
            continue;
        evbuffer_add(labels, "handler=\"", 9);
        tn_prom_label(labels, h->name);
        evbuffer_add(labels, "\"", 2); /* with the NUL */
        tn_prom_histogram(out, "tusknet_handler_latency_seconds", (const char *)evbuffer_pullup(labels, -1),
                          &h->stats.latency);
        evbuffer_free(labels);
    }
    tn_cluster_prometheus(d, out);
    tn_plugin_prometheus(d->registry, out);
    tn_proxy_prometheus(d->registry, out);
    evbuffer_add(out, "# EOF\n", 6);
}
