/* SPDX-License-Identifier: MIT */
/* metrics.h - counters and latency histograms, kept where the events happen
 * (listeners, handlers, the daemon) and exported by the control socket. */
#ifndef TN_METRICS_H
#define TN_METRICS_H

#include <stdint.h>
#include <stdio.h>

/* Why a connection or message was refused. */
enum tn_reject {
    TN_REJ_MAX_CONNECTIONS,  /* global cap */
    TN_REJ_LISTENER_FULL,    /* listener's max_connections */
    TN_REJ_PER_IP,           /* max_connections_per_ip */
    TN_REJ_PER_SECOND,       /* max_connections_per_second */
    TN_REJ_DENIED,           /* allow/deny */
    TN_REJ_RATE_LIMIT,       /* rate_limit */
    TN_REJ_TOO_LARGE,        /* max_line / max_message */
    TN_REJ_SLOW_READER,      /* max_output */
    TN_REJ_REPLY_DROPPED,    /* a UDP reply the socket did not take */
    TN_REJ_COUNT
};

const char *tn_reject_name(int reason);

/* Why a TLS handshake failed. */
enum tn_tls_failure {
    TN_TLSF_TIMEOUT,           /* handshake_timeout passed */
    TN_TLSF_PROTOCOL_VERSION,  /* the client's versions are all refused */
    TN_TLSF_NO_SHARED_CIPHER,
    TN_TLSF_NO_CLIENT_CERT,    /* verify_client: required, none sent */
    TN_TLSF_BAD_CLIENT_CERT,   /* the client certificate did not verify */
    TN_TLSF_PEER_ALERT,        /* the client gave up (e.g. it does not trust our certificate) */
    TN_TLSF_NOT_TLS,           /* plain text or garbage on a TLS port */
    TN_TLSF_EOF,               /* the client went away mid-handshake */
    TN_TLSF_OTHER,
    TN_TLSF_COUNT
};

const char *tn_tls_failure_name(int reason);

/* HTTP responses are counted by status class, 1xx to 5xx (handlers and the
 * config only produce 100-599). */
#define TN_HTTP_CLASSES 5

static inline int tn_http_class(int status)
{
    int k = status / 100 - 1;
    return k < 0 ? 0 : k >= TN_HTTP_CLASSES ? TN_HTTP_CLASSES - 1 : k;
}

const char *tn_http_class_name(int k); /* "1xx" .. "5xx" */

typedef struct tn_conn_stats {
    uint64_t total_connections;
    uint64_t active_connections;
    uint64_t total_bytes_sent;
    uint64_t total_bytes_received;
    uint64_t connection_errors;
    uint64_t timeout_errors;
    uint64_t messages_in;
    uint64_t messages_out;
    uint64_t rejected[TN_REJ_COUNT];
    uint64_t tls_handshakes;
    uint64_t tls_failures[TN_TLSF_COUNT];
    uint64_t http_responses[TN_HTTP_CLASSES];
} tn_conn_stats;

/* Power-of-two buckets of microseconds: bucket i counts values < 2^i us,
 * the last bucket everything larger (about 34 minutes and up). */
#define TN_HIST_BUCKETS 32

typedef struct tn_hist {
    uint64_t buckets[TN_HIST_BUCKETS];
    uint64_t count;
    uint64_t sum_us;
} tn_hist;

void tn_hist_add(tn_hist *h, int64_t us);
/* Estimated percentile (0 < p < 1) in microseconds, 0 when empty. */
double tn_hist_percentile(const tn_hist *h, double p);

struct evbuffer;
/* Appends S escaped as a Prometheus label value. */
void tn_prom_label(struct evbuffer *out, const char *s);
/* The series NAME_bucket/_sum/_count of H with LABELS (`a="x",b="y"`,
 * escaped already). */
void tn_prom_histogram(struct evbuffer *out, const char *name, const char *labels, const tn_hist *h);
/* Upper bound of bucket i in microseconds. */
uint64_t tn_hist_bound_us(int i);

typedef struct tn_handler_stats {
    uint64_t calls;
    uint64_t errors;
    uint64_t in_flight;
    uint64_t processes; /* worker: programs running */
    uint64_t restarts;  /* worker: programs started again after one ended */
    tn_hist latency;
    int64_t last_sync_us; /* latest timed synchronous call (sampling) */
} tn_handler_stats;

#endif
