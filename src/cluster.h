/* SPDX-License-Identifier: MIT */
/* cluster.h - broadcast rooms across instances through Redis pub/sub
 * (the [cluster] section). */
#ifndef TN_CLUSTER_H
#define TN_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "json.h"

struct tn_daemon;
typedef struct tn_handler tn_handler;
typedef struct tn_cluster tn_cluster;

/* Where Redis is, resolved once per config so that the loop never waits on
 * a name server. */
typedef struct tn_cluster_addr {
    char ip[64];
    int port;
} tn_cluster_addr;

/* Resolves CONF's Redis host when CONF differs from the running link's
 * (an unchanged section keeps its link and is not resolved again). Returns
 * -1 with a message in err when it cannot be resolved; nothing changes. */
int tn_cluster_resolve(struct tn_daemon *d, const tn_cluster_conf *conf, tn_cluster_addr *addr, char *err,
                       size_t errlen);
/* Starts, keeps, redirects (a changed section reconnects) or stops the
 * link; CONF must outlive it or be replaced by the next apply. */
void tn_cluster_apply(struct tn_daemon *d, const tn_cluster_conf *conf, const tn_cluster_addr *addr);
void tn_cluster_free(struct tn_daemon *d);

/* The way out of a room: called after local delivery with a message for
 * every member elsewhere. Never blocks; queued (bounded by max_queue) while
 * Redis is unreachable. A no-op without [cluster]. */
void tn_cluster_publish(tn_handler *h, const char *data, size_t len);

/* `send NODE:ID MESSAGE`: MESSAGE for connection ID of the instance whose
 * node_id is NODE. -1 with err when it cannot be tried (no [cluster], the
 * link not connected); otherwise FN(ARG, OUTCOME, ERROR) follows once Redis
 * has answered: 1 published, 0 no such node, -1 failed (ERROR says why). */
typedef void (*tn_cluster_sent_fn)(void *arg, int outcome, const char *error);
int tn_cluster_send_to(struct tn_daemon *d, const char *node, uint64_t id, const char *msg, size_t len,
                       tn_cluster_sent_fn fn, void *arg, char *err, size_t errlen);
/* This instance's node id under CONF (node_id, or hostname:pid with the
 * master's pid for workers) into BUF. */
void tn_cluster_node_id(const struct tn_daemon *d, const tn_cluster_conf *conf, char *buf, size_t len);
/* NODE (LEN bytes) is this instance under the running config's [cluster]:
 * `send NODE:ID` is delivered here without Redis. */
bool tn_cluster_own_node(const struct tn_daemon *d, const char *node, size_t len);
/* ARG is going away: its sends finish without calling it. */
void tn_cluster_forget(struct tn_daemon *d, void *arg);

/* The "cluster" object of `stats` (nothing without [cluster]). */
void tn_cluster_stats_json(struct tn_daemon *d, tn_json *j);
/* Prometheus lines (nothing without [cluster]). */
void tn_cluster_prometheus(struct tn_daemon *d, struct evbuffer *out);

#endif
