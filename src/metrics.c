/* SPDX-License-Identifier: MIT */
/* metrics.c - latency histograms and the names of rejection reasons.
 *
 * Counters are plain fields in the structs of metrics.h, bumped where the
 * event happens; this file holds what is more than an increment, and the
 * Prometheus pieces every exporter shares (upstream.c has its own series).
 * The exports of them all are metrics_export.c. */
#include "metrics.h"

#include <event2/buffer.h>

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

const char *tn_http_class_name(int k)
{
    static const char *const names[TN_HTTP_CLASSES] = { "1xx", "2xx", "3xx", "4xx", "5xx" };
    return k >= 0 && k < TN_HTTP_CLASSES ? names[k] : "?";
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

/* ---- Prometheus text format pieces -------------------------------------------- */

void tn_prom_histogram(struct evbuffer *out, const char *name, const char *labels, const tn_hist *h)
{
    uint64_t cum = 0;
    /* Prometheus buckets are cumulative with "le" bounds; ours are
     * power-of-two microsecond buckets, reported from 1us to ~1min */
    for (int b = 0; b < TN_HIST_BUCKETS - 1; b++) {
        cum += h->buckets[b];
        if (b < 26 && (b % 2 == 0 || b < 4))
            evbuffer_add_printf(out, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels,
                                (double)tn_hist_bound_us(b) / 1e6, (unsigned long long)cum);
    }
    evbuffer_add_printf(out, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, (unsigned long long)h->count);
    evbuffer_add_printf(out, "%s_sum{%s} %.6f\n", name, labels, (double)h->sum_us / 1e6);
    evbuffer_add_printf(out, "%s_count{%s} %llu\n", name, labels, (unsigned long long)h->count);
}

/* Label values are names from the config: escape what the text format needs. */
void tn_prom_label(struct evbuffer *out, const char *s)
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
