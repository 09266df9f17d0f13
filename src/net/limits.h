/* SPDX-License-Identifier: MIT */
/* limits.h - per-address admission: allow/deny lists, connections per
 * address, connections per second, and message rate token buckets. */
#ifndef TN_NET_LIMITS_H
#define TN_NET_LIMITS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/config.h"

typedef struct tn_acl tn_acl;

/* NULL when both lists are empty (everyone allowed). */
tn_acl *tn_acl_new(const tn_strlist *allow, const tn_strlist *deny);
/* The most specific matching entry decides; with an allow list, an address
 * matching nothing is denied. */
bool tn_acl_allows(const tn_acl *acl, const struct sockaddr *sa);
void tn_acl_free(tn_acl *acl);

typedef struct tn_peer {
    struct tn_peer *next;
    uint8_t addr[16];
    uint8_t family;
    uint32_t conns;
    int64_t cps_second;
    uint32_t cps_count;
    double tokens;
    int64_t refill_us;
} tn_peer;

typedef struct tn_peers {
    tn_peer **buckets;
    size_t nbuckets;
    size_t count;
} tn_peers;

int tn_peers_init(tn_peers *t);
/* The entry for SA, created when missing (NULL on OOM). */
tn_peer *tn_peers_get(tn_peers *t, const struct sockaddr *sa);
/* Counts a new connection in this second; false if over PER_SECOND. */
bool tn_peer_admit_rate(tn_peer *p, int64_t per_second, int64_t now_s);
/* Token bucket: false if the message is over RATE (per second, BURST). */
bool tn_peer_take_token(tn_peer *p, double rate, int64_t burst, int64_t now_us);
/* Drops entries with no connection and nothing to remember. */
void tn_peers_sweep(tn_peers *t, int64_t now_s, int64_t now_us);
void tn_peers_free(tn_peers *t);

#endif
