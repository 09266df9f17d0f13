/* metrics.c - latency histograms and the names of rejection reasons.
 *
 * Counters are plain fields in the structs of metrics.h, bumped where the
 * event happens; this file holds what is more than an increment. */
#include "metrics.h"

const char *tn_reject_name(int reason)
{
    static const char *const names[TN_REJ_COUNT] = {
        "max_connections", "listener_full", "per_ip", "per_second",
        "denied", "rate_limit", "too_large", "slow_reader", "reply_dropped",
    };
    return reason >= 0 && reason < TN_REJ_COUNT ? names[reason] : "?";
}

const char *tn_tls_failure_name(int reason)
{
    static const char *const names[TN_TLSF_COUNT] = {
        "timeout", "protocol_version", "no_shared_cipher", "no_client_certificate", "bad_client_certificate",
        "peer_alert", "not_tls", "eof", "other",
    };
    return reason >= 0 && reason < TN_TLSF_COUNT ? names[reason] : "?";
}

uint64_t tn_hist_bound_us(int i)
{
    return (uint64_t)1 << i;
}

void tn_hist_add(tn_hist *h, int64_t us)
{
    if (us < 0)
        us = 0;
    int i = 0;
    /* bucket i holds values below 2^i */
    uint64_t v = (uint64_t)us;
    while (i < TN_HIST_BUCKETS - 1 && v >= ((uint64_t)1 << i))
        i++;
    h->buckets[i]++;
    h->count++;
    h->sum_us += (uint64_t)us;
}

double tn_hist_percentile(const tn_hist *h, double p)
{
    if (!h->count)
        return 0;
    double target = p * (double)h->count;
    uint64_t seen = 0;
    for (int i = 0; i < TN_HIST_BUCKETS; i++) {
        if (!h->buckets[i])
            continue;
        if ((double)(seen + h->buckets[i]) >= target) {
            /* linear interpolation inside the bucket */
            double lo = i ? (double)((uint64_t)1 << (i - 1)) : 0;
            double hi = (double)((uint64_t)1 << i);
            double frac = (target - (double)seen) / (double)h->buckets[i];
            return lo + (hi - lo) * frac;
        }
        seen += h->buckets[i];
    }
    return (double)((uint64_t)1 << (TN_HIST_BUCKETS - 1));
}

/* ---- exports --------------------------------------------------------------- */

#include <event2/buffer.h>
#include <string.h>

#include "daemon.h"
#include "handlers/handler.h"
#include "json.h"
#include "net/listener.h"
#include "version.h"

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

void tn_metrics_stats_json(tn_daemon *d, tn_json *j)
{
    tn_json_open(j, NULL, '{');
    tn_json_str(j, "version", TN_VERSION);
    tn_json_num(j, "uptime_seconds", (double)(tn_now_us() - d->started_us) / 1e6);
    tn_json_u64(j, "reloads", d->reloads);
    tn_json_u64(j, "reload_failures", d->reload_failures);
    tn_json_open(j, "global", '{');
    counters_json(j, &d->stats);
    tls_json(j, &d->stats);
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
        tn_json_open(j, "latency_ms", '{');
        tn_json_num(j, "p50", tn_hist_percentile(&h->stats.latency, 0.50) / 1000);
        tn_json_num(j, "p90", tn_hist_percentile(&h->stats.latency, 0.90) / 1000);
        tn_json_num(j, "p99", tn_hist_percentile(&h->stats.latency, 0.99) / 1000);
        tn_json_close(j, '}');
        tn_json_close(j, '}');
    }
    tn_json_close(j, '}');
    tn_json_close(j, '}');
}

/* Label values are names from the config: escape what the text format needs. */
static void label(struct evbuffer *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            evbuffer_add_printf(out, "\\%c", *s);
        else if (*s == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, s, 1);
    }
}

typedef struct listener_metric {
    const char *name, *type, *help;
    size_t off;
} listener_metric;

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
    evbuffer_add_printf(out,
                        "# HELP tusknet_uptime_seconds Seconds since the daemon started.\n"
                        "# TYPE tusknet_uptime_seconds gauge\n"
                        "tusknet_uptime_seconds %.3f\n"
                        "# HELP tusknet_reloads_total Successful configuration reloads.\n"
                        "# TYPE tusknet_reloads_total counter\n"
                        "tusknet_reloads_total %llu\n"
                        "# HELP tusknet_reload_failures_total Refused configuration reloads.\n"
                        "# TYPE tusknet_reload_failures_total counter\n"
                        "tusknet_reload_failures_total %llu\n",
                        (double)(tn_now_us() - d->started_us) / 1e6, (unsigned long long)d->reloads,
                        (unsigned long long)d->reload_failures);
    for (size_t m = 0; m < sizeof(lm) / sizeof(lm[0]); m++) {
        evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", lm[m].name, lm[m].help, lm[m].name, lm[m].type);
        for (tn_listener *l = d->listeners; l; l = l->next) {
            uint64_t v = *(const uint64_t *)((const char *)&l->stats + lm[m].off);
            evbuffer_add_printf(out, "%s{listener=\"", lm[m].name);
            label(out, l->name);
            evbuffer_add_printf(out, "\",protocol=\"%s\"} %llu\n", tn_protocol_name(l->protocol),
                                (unsigned long long)v);
        }
    }
    evbuffer_add_printf(out, "# HELP tusknet_rejections_total Connections and messages refused, by reason.\n"
                             "# TYPE tusknet_rejections_total counter\n");
    for (tn_listener *l = d->listeners; l; l = l->next) {
        for (int r = 0; r < TN_REJ_COUNT; r++) {
            evbuffer_add(out, "tusknet_rejections_total{listener=\"", 35);
            label(out, l->name);
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
        label(out, l->name);
        evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)l->stats.tls_handshakes);
    }
    evbuffer_add_printf(out, "# HELP tusknet_tls_handshake_failures_total TLS handshakes that failed, by reason.\n"
                             "# TYPE tusknet_tls_handshake_failures_total counter\n");
    for (tn_listener *l = d->listeners; l; l = l->next) {
        if (!l->conf->tls)
            continue;
        for (int r = 0; r < TN_TLSF_COUNT; r++) {
            evbuffer_add(out, "tusknet_tls_handshake_failures_total{listener=\"", 47);
            label(out, l->name);
            evbuffer_add_printf(out, "\",reason=\"%s\"} %llu\n", tn_tls_failure_name(r),
                                (unsigned long long)l->stats.tls_failures[r]);
        }
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
            label(out, h->name);
            evbuffer_add_printf(out, "\",type=\"%s\"} %llu\n", h->ops->type, (unsigned long long)v);
        }
    }
    evbuffer_add_printf(out, "# HELP tusknet_handler_latency_seconds Time from message to reply.\n"
                             "# TYPE tusknet_handler_latency_seconds histogram\n");
    for (size_t i = 0; i < nh; i++) {
        tn_handler *h = tn_registry_at(d->registry, i);
        uint64_t cum = 0;
        /* Prometheus buckets are cumulative with "le" bounds; ours are
         * power-of-two microsecond buckets, reported from 1us to ~1min */
        for (int b = 0; b < TN_HIST_BUCKETS - 1; b++) {
            cum += h->stats.latency.buckets[b];
            if (b < 26 && (b % 2 == 0 || b < 4)) {
                evbuffer_add(out, "tusknet_handler_latency_seconds_bucket{handler=\"", 48);
                label(out, h->name);
                evbuffer_add_printf(out, "\",le=\"%g\"} %llu\n", (double)tn_hist_bound_us(b) / 1e6,
                                    (unsigned long long)cum);
            }
        }
        evbuffer_add(out, "tusknet_handler_latency_seconds_bucket{handler=\"", 48);
        label(out, h->name);
        evbuffer_add_printf(out, "\",le=\"+Inf\"} %llu\n", (unsigned long long)h->stats.latency.count);
        evbuffer_add(out, "tusknet_handler_latency_seconds_sum{handler=\"", 45);
        label(out, h->name);
        evbuffer_add_printf(out, "\"} %.6f\n", (double)h->stats.latency.sum_us / 1e6);
        evbuffer_add(out, "tusknet_handler_latency_seconds_count{handler=\"", 47);
        label(out, h->name);
        evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)h->stats.latency.count);
    }
    evbuffer_add(out, "# EOF\n", 6);
}
