/* SPDX-License-Identifier: MIT */
/* metrics_export.h - every counter of the daemon, exported. */
#ifndef TN_METRICS_EXPORT_H
#define TN_METRICS_EXPORT_H

#include "metrics.h"

/* Exports of the whole daemon's numbers (control socket `stats`, `metrics`). */
struct tn_daemon;
struct tn_json;
struct evbuffer;
/* A worker's raw histogram under "latency_buckets", for its master to add
 * up before computing percentiles (master_merge.c); nothing otherwise. */
void tn_metrics_buckets_json(const struct tn_daemon *d, struct tn_json *j, const tn_hist *h);
void tn_metrics_stats_json(struct tn_daemon *d, struct tn_json *j);
/* The process and build (control socket `info`, also inside `stats`):
 * an object under KEY (NULL at the top level). */
void tn_metrics_info_json(struct tn_daemon *d, struct tn_json *j, const char *key);
void tn_metrics_prometheus(struct tn_daemon *d, struct evbuffer *out);
/* Seconds since the daemon started (health, stats). */
double tn_metrics_uptime(const struct tn_daemon *d);

#endif
