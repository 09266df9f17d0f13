/* SPDX-License-Identifier: MIT */
/* upstream_export.c - what the servers of a proxy handler look like from
 * outside: the control socket's `upstreams` rows (removed servers after
 * the configured ones, while they still serve) and the Prometheus series
 * (see upstream.h). */
#include "upstream/upstream.h"

#include <stddef.h>

#include <event2/buffer.h>

#include "addr.h"
#include "json.h"

void tn_upstream_server_json(tn_json *j, const tn_upstream_server *s)
{
    char addr[80];
    tn_addr_format((const struct sockaddr *)&s->addr, addr, sizeof(addr));
    tn_json_open(j, NULL, '{');
    tn_json_str(j, "server", s->name);
    tn_json_str(j, "address", addr);
    tn_json_str(j, "state", tn_upstream_state_name(tn_upstream_state(s)));
    tn_json_u64(j, "weight", (uint64_t)s->weight);
    tn_json_bool(j, "backup", s->spec.backup);
    tn_json_bool(j, "removed", s->removed);
    tn_json_u64(j, "active", s->stats.active);
    tn_json_u64(j, "idle", s->stats.idle);
    tn_json_u64(j, "requests", s->stats.requests);
    tn_json_u64(j, "responses", s->stats.responses);
    tn_json_u64(j, "connects", s->stats.connects);
    tn_json_u64(j, "reused", s->stats.reused);
    tn_json_u64(j, "ejections", s->stats.ejections);
    tn_json_u64(j, "fails_in_row", (uint64_t)s->fails);
    tn_json_open(j, "failures", '{');
    for (int r = 0; r < TN_UPF_COUNT; r++)
        tn_json_u64(j, tn_upstream_failure_name(r), s->stats.failures[r]);
    tn_json_close(j, '}');
    tn_json_u64(j, "bytes_sent", s->stats.bytes_sent);
    tn_json_u64(j, "bytes_received", s->stats.bytes_received);
    tn_json_u64(j, "resolutions", s->stats.resolutions);
    tn_json_open(j, "latency_ms", '{');
    tn_json_num(j, "p50", tn_hist_percentile(&s->stats.latency, 0.50) / 1000);
    tn_json_num(j, "p99", tn_hist_percentile(&s->stats.latency, 0.99) / 1000);
    tn_json_close(j, '}');
    tn_json_close(j, '}');
}

bool tn_upstream_gone_listed(const tn_upstream_server *s)
{
    return s->stats.active > 0;
}

void tn_upstream_group_json(tn_upstream_group *g, tn_json *j, const char *key)
{
    tn_json_open(j, key, '[');
    for (size_t i = 0; i < g->n; i++)
        tn_upstream_server_json(j, g->servers[i]);
    for (size_t i = 0; i < g->ngone; i++)
        if (tn_upstream_gone_listed(g->gone[i]))
            tn_upstream_server_json(j, g->gone[i]);
    tn_json_close(j, ']');
}

/* The labels of ROW into OUT, without braces. */
static void labels(struct evbuffer *out, const tn_upstream_row *row)
{
    evbuffer_add(out, "handler=\"", 9);
    tn_prom_label(out, row->handler);
    evbuffer_add(out, "\",server=\"", 10);
    tn_prom_label(out, row->s->name);
    evbuffer_add(out, "\"", 1);
    if (row->s->removed)
        evbuffer_add_printf(out, ",state=\"%s\",removed=\"true\"", tn_upstream_state_name(TN_UPS_DRAINING));
}

static void series(struct evbuffer *out, const char *name, const tn_upstream_row *row, const char *extra, uint64_t v)
{
    evbuffer_add_printf(out, "%s{", name);
    labels(out, row);
    evbuffer_add_printf(out, "%s} %llu\n", extra ? extra : "", (unsigned long long)v);
}

void tn_upstream_prometheus(const tn_upstream_row *rows, size_t n, struct evbuffer *out)
{
    static const struct {
        const char *name, *type, *help;
        size_t off;
    } m[] = {
        { "tusknet_upstream_requests_total", "counter", "Tries sent to the server (retries count).",
          offsetof(tn_upstream_stats, requests) },
        { "tusknet_upstream_responses_total", "counter", "Tries answered completely.",
          offsetof(tn_upstream_stats, responses) },
        { "tusknet_upstream_connects_total", "counter", "Connections opened to the server.",
          offsetof(tn_upstream_stats, connects) },
        { "tusknet_upstream_reused_total", "counter", "Tries sent over a pooled connection.",
          offsetof(tn_upstream_stats, reused) },
        { "tusknet_upstream_ejections_total", "counter", "Times max_fails ejected the server.",
          offsetof(tn_upstream_stats, ejections) },
        { "tusknet_upstream_active_connections", "gauge", "Connections in use.",
          offsetof(tn_upstream_stats, active) },
        { "tusknet_upstream_idle_connections", "gauge", "Connections kept idle in the pool.",
          offsetof(tn_upstream_stats, idle) },
    };
    for (size_t k = 0; k < sizeof(m) / sizeof(m[0]); k++) {
        evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m[k].name, m[k].help, m[k].name, m[k].type);
        for (size_t i = 0; i < n; i++)
            series(out, m[k].name, &rows[i], NULL, *(const uint64_t *)((const char *)&rows[i].s->stats + m[k].off));
    }
    evbuffer_add_printf(out, "# HELP tusknet_upstream_up 1 when the server takes new requests.\n"
                             "# TYPE tusknet_upstream_up gauge\n");
    for (size_t i = 0; i < n; i++)
        series(out, "tusknet_upstream_up", &rows[i], NULL, tn_upstream_state(rows[i].s) == TN_UPS_UP);
    evbuffer_add_printf(out, "# HELP tusknet_upstream_failures_total Failed tries, by reason.\n"
                             "# TYPE tusknet_upstream_failures_total counter\n");
    for (size_t i = 0; i < n; i++)
        for (int r = 0; r < TN_UPF_COUNT; r++) {
            char extra[48];
            snprintf(extra, sizeof(extra), ",reason=\"%s\"", tn_upstream_failure_name(r));
            series(out, "tusknet_upstream_failures_total", &rows[i], extra, rows[i].s->stats.failures[r]);
        }
    evbuffer_add_printf(out, "# HELP tusknet_upstream_latency_seconds Time from a try's start to its answer.\n"
                             "# TYPE tusknet_upstream_latency_seconds histogram\n");
    struct evbuffer *l = evbuffer_new();
    for (size_t i = 0; l && i < n; i++) {
        evbuffer_drain(l, evbuffer_get_length(l));
        labels(l, &rows[i]);
        evbuffer_add(l, "", 1); /* the NUL */
        tn_prom_histogram(out, "tusknet_upstream_latency_seconds", (const char *)evbuffer_pullup(l, -1),
                          &rows[i].s->stats.latency);
    }
    if (l)
        evbuffer_free(l);
}
