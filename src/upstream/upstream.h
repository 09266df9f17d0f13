/* SPDX-License-Identifier: MIT */
/* upstream.h - the servers behind a proxy handler: who they are, which one
 * serves the next request, and what we know about their health.
 *
 * A proxy handler owns one tn_upstream_group, built from its `upstreams`
 * list ("host:port weight=N max_fails=N fail_timeout=D backup down") and
 * resolved when the handler is created (start and reload). The sides that
 * forward traffic (the HTTP reverse proxy, the TCP line proxy) ask the group
 * for a server, open or reuse a connection to it, and report back how it
 * went; they keep their connections in the server's per-side pool slot, so
 * that a reload which keeps a server keeps its pools too.
 *
 * Servers are reference counted: a reload builds a new group that adopts
 * (shares) the servers whose address text stays, with their counters,
 * pools and ejection state; a server the new config drops stays with the
 * old group, draining, until the last request using it ends. Once the
 * reload is committed, the new group lists such servers (weakly: the list
 * holds no reference) so that `upstreams` still shows them while they
 * have work.
 *
 * Health is the product of three things: the operator's word (control
 * `upstream H S drain|up|down`), passive checks (max_fails failures in a
 * row eject the server for fail_timeout) and active checks (health_check:
 * fall failed probes take it down, rise good ones bring it back). */
#ifndef TN_UPSTREAM_UPSTREAM_H
#define TN_UPSTREAM_UPSTREAM_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/config.h"
#include "metrics.h"

struct tn_json;
struct evbuffer;

/* What the operator set (control `upstream`, or `down` in the config). */
enum tn_upstream_admin {
    TN_UPA_ENABLED,
    TN_UPA_DRAIN, /* no new requests; in-flight ones and pooled connections finish */
    TN_UPA_DOWN,  /* no new requests */
};

/* What `upstreams` reports; the first that applies wins: draining, down
 * (operator or active check), ejected (passive check), up. */
enum tn_upstream_state {
    TN_UPS_UP,
    TN_UPS_DOWN,
    TN_UPS_EJECTED,
    TN_UPS_DRAINING,
};

/* Why a try failed; each counts once per server. */
enum tn_upstream_failure {
    TN_UPF_CONNECT,         /* refused, unreachable, reset while connecting */
    TN_UPF_CONNECT_TIMEOUT, /* connect_timeout passed */
    TN_UPF_TLS,             /* the upstream's TLS handshake or certificate failed */
    TN_UPF_SEND_TIMEOUT,    /* send_timeout passed with the request unsent */
    TN_UPF_TIMEOUT,         /* timeout passed between two reads of the answer */
    TN_UPF_RESET,           /* the connection closed or reset before the answer ended */
    TN_UPF_BAD_RESPONSE,    /* malformed, oversized or ambiguous answer */
    TN_UPF_COUNT
};

const char *tn_upstream_state_name(int state);
const char *tn_upstream_failure_name(int reason);

/* Pools kept per server by each side of the proxy. */
enum tn_upstream_side { TN_UPSIDE_HTTP, TN_UPSIDE_LINE, TN_UPSIDE_COUNT };

typedef struct tn_upstream_server tn_upstream_server;
typedef struct tn_upstream_group tn_upstream_group;

/* A side's per-server pool: created lazily by the side, released (its
 * connections closed) when the server itself is freed. close_idle, when
 * set, closes the connections no request uses (drain, down, removal). */
typedef struct tn_upstream_pool {
    void *data;
    void (*release)(tn_upstream_server *s, void *data);
    void (*close_idle)(tn_upstream_server *s, void *data);
} tn_upstream_pool;

typedef struct tn_upstream_stats {
    uint64_t requests;   /* tries started (each retry counts) */
    uint64_t responses;  /* tries that got a complete answer */
    uint64_t connects;   /* new connections opened */
    uint64_t reused;     /* tries sent over a pooled connection */
    uint64_t failures[TN_UPF_COUNT];
    uint64_t ejections;  /* times max_fails ejected it */
    uint64_t active;     /* connections in use (a request on them, or a relay) */
    uint64_t idle;       /* connections kept in a pool */
    uint64_t bytes_sent;
    uint64_t bytes_received;
    uint64_t resolutions; /* periodic re-resolutions that answered (resolve) */
    tn_hist latency;     /* try start to the answer's head (HTTP) or reply (line) */
} tn_upstream_stats;

/* One parsed `upstreams` entry. */
typedef struct tn_upstream_spec {
    char host[256];  /* name or address as written, brackets removed */
    int port;
    int weight;      /* 1.. */
    int max_fails;   /* -1: the handler's */
    int64_t fail_timeout_ms; /* -1: the handler's */
    bool backup;
    bool down;
} tn_upstream_spec;

/* Parse "host:port [weight=N] [max_fails=N] [fail_timeout=D] [backup] [down]"
 * ("[v6]:port" for IPv6). Returns -1 with a message in err. */
int tn_upstream_parse_spec(const char *text, tn_upstream_spec *out, char *err, size_t errlen);

struct tn_upstream_server {
    char *name;      /* "host:port" as written: its identity across reloads */
    tn_upstream_spec spec;
    struct sockaddr_storage addr; /* resolved at group creation */
    socklen_t addrlen;
    int refs;
    /* selection */
    int weight;       /* spec weight, or the operator's `weight N` */
    int64_t rr_current; /* smooth weighted round robin */
    /* health */
    int admin;        /* enum tn_upstream_admin */
    int fails;        /* failures in a row */
    int64_t ejected_until_us; /* 0: not ejected */
    bool check_down;  /* the active check has taken it down */
    int check_streak; /* active check: consecutive results in the other direction */
    bool removed;     /* a reload dropped it: draining for good */
    tn_upstream_group *gone_in; /* the group listing it as removed, or NULL */
    tn_upstream_stats stats;
    tn_upstream_pool pool[TN_UPSIDE_COUNT];
    /* active health check of this server (health_check) */
    struct event *check_ev;
    tn_upstream_group *check_group; /* the newest group using it: whose settings apply */
    void *probe; /* the probe in progress, owned by upstream_check.c */
};

/* How a group picks. */
enum tn_upstream_hash_key {
    TN_UPK_REMOTE_ADDR, /* the client's address, port excluded */
    TN_UPK_HEADER,      /* "header:NAME" */
    TN_UPK_COOKIE,      /* "cookie:NAME" */
    TN_UPK_TOKEN,       /* "token": a line's first token; an HTTP request's path */
};

typedef struct tn_upstream_ring_point {
    uint32_t hash;
    uint32_t server; /* index into servers */
} tn_upstream_ring_point;

struct tn_upstream_group {
    char *handler;   /* the proxy handler's name */
    struct event_base *base;
    tn_upstream_server **servers; /* primaries first, then backups, config order within */
    size_t n;
    size_t nprimary;
    int balance;     /* enum tn_balance */
    int key_kind;    /* enum tn_upstream_hash_key */
    char *key_name;  /* header or cookie name */
    tn_upstream_ring_point *ring; /* hash: sorted points, 160 per unit of weight */
    size_t nring;
    int max_fails;
    int64_t fail_timeout_ms;
    /* active checks: interval_ms 0 = none */
    int64_t check_interval_ms;
    int64_t check_timeout_ms;
    int check_rise, check_fall;
    int check_status;
    char *check_path; /* NULL: a TCP connect is the check */
    const struct tn_proxy_tls *check_tls; /* the handler's upstream TLS, for HTTP checks */
    bool removed;     /* its handler left the config: its servers drain */
    /* servers earlier configs had and this one dropped, still alive;
     * not referenced: a server leaves this list when it is freed */
    tn_upstream_server **gone;
    size_t ngone, gone_cap;
    /* resolve: periodic re-resolution of host names (0 = none) */
    int64_t resolve_ms;
    struct evdns_base *dns;
    struct event *resolve_ev;
};

/* Build the group of handler conf C (resolving every host; blocking, which
 * only happens at start and reload). OLD, when given, is the group of the
 * handler of the same name being replaced: servers of the same name are
 * shared with it, keeping state, counters and pools. Returns NULL with a
 * message in err. */
tn_upstream_group *tn_upstream_group_new(const tn_handler_conf *c, struct event_base *base,
                                         const tn_upstream_group *old, char *err, size_t errlen);
/* Drops the group's references; servers no other group shares are freed
 * when their last request ends (their pools are released then). */
void tn_upstream_group_free(tn_upstream_group *g);

/* A reload replaced OLD (whose handler the registry just dropped) by NEXT
 * (NULL: the handler is gone or no longer a proxy). OLD's servers that NEXT
 * lacks are removed: they take no new request, their idle connections
 * close now and the others when their request ends; NEXT lists them (and
 * those OLD listed) while they live. */
void tn_upstream_group_succeed(tn_upstream_group *old, tn_upstream_group *next);

/* Starts re-resolving G's host names every G->resolve_ms, in the loop
 * (evdns, /etc/hosts first); a changed address is used by new
 * connections, pooled ones to the old address are closed when taken. */
int tn_upstream_resolve_start(tn_upstream_group *g, char *err, size_t errlen);

void tn_upstream_server_ref(tn_upstream_server *s);
void tn_upstream_server_unref(tn_upstream_server *s);

/* Pick a server for a new request (or connection). KEY/KEYLEN is the hash
 * key (ignored unless balance is hash; NULL falls back to round robin).
 * TRIED lists servers this request already failed on: they are not
 * picked again. Backup servers are eligible only when no primary is
 * usable. Returns NULL when none is eligible; *retry_after_s is
 * then the seconds until the first ejected server returns (0 when none is
 * merely ejected). The caller takes no reference: the group keeps the
 * server alive while the group lives; take one for work that may outlive
 * the group (a request in flight across a reload). */
tn_upstream_server *tn_upstream_pick(tn_upstream_group *g, const char *key, size_t keylen,
                                     tn_upstream_server *const *tried, size_t ntried, int *retry_after_s);

/* Is S taking new requests now (not draining, down or ejected)? An expired
 * ejection ends here. */
bool tn_upstream_usable(tn_upstream_group *g, tn_upstream_server *s);
int tn_upstream_state(const tn_upstream_server *s);

/* Reports of a try. A try is counted at begin; exactly one of ok or fail
 * follows. ok clears the failure streak; fail counts REASON and ejects the
 * server after max_fails in a row (a client-side abort is neither). */
void tn_upstream_try_begin(tn_upstream_server *s, bool reused);
void tn_upstream_try_ok(tn_upstream_group *g, tn_upstream_server *s, int64_t latency_us);
void tn_upstream_try_fail(tn_upstream_group *g, tn_upstream_server *s, int reason);

/* The server, found by name ("host:port" as written) or 1-based index. */
tn_upstream_server *tn_upstream_find(tn_upstream_group *g, const char *name);
/* A server a reload removed that G still lists, by name; NULL if none. */
tn_upstream_server *tn_upstream_find_gone(tn_upstream_group *g, const char *name);
/* Closes S's idle pooled connections, on every side. */
void tn_upstream_close_idle(tn_upstream_server *s);
/* Operator commands: "drain", "up", "down", or "weight" with N (1..1000).
 * Returns -1 with a message in err. */
int tn_upstream_admin_cmd(tn_upstream_group *g, tn_upstream_server *s, const char *cmd, int weight, char *err,
                          size_t errlen);

/* Exports: the group's servers as a JSON array under KEY (control
 * `upstreams`), then the removed servers still serving a request, marked
 * "removed": true. */
void tn_upstream_group_json(tn_upstream_group *g, struct tn_json *j, const char *key);
/* One server's JSON object, for lists built elsewhere. */
void tn_upstream_server_json(struct tn_json *j, const tn_upstream_server *s);
/* Is S, removed by a reload, still to be listed? It is while it has work;
 * idle, it only waits for the last reference (an old handler) to go. */
bool tn_upstream_gone_listed(const tn_upstream_server *s);

/* A server under a handler's name, for the Prometheus series (labels
 * handler and server; a removed server adds state="draining" and
 * removed="true", so that a server added back under the same name while
 * its old self drains keeps series of its own). */
typedef struct tn_upstream_row {
    const char *handler;
    const tn_upstream_server *s;
} tn_upstream_row;
void tn_upstream_prometheus(const tn_upstream_row *rows, size_t n, struct evbuffer *out);

/* Exponential backoff with full jitter before try number ATTEMPT (1 = the
 * first retry): uniform in [0, min(cap, base * 2^(attempt-1))] ms. */
int64_t tn_upstream_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms);

/* 32-bit hash used for the ring and keys (FNV-1a, then mixed). */
uint32_t tn_upstream_hash(const char *data, size_t len);

#endif
