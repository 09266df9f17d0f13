/* SPDX-License-Identifier: MIT */
/* proxy.h - the `proxy` handler type: one upstream group, served to HTTP
 * routes by the reverse proxy (http_proxy.c) and to TCP line listeners by
 * the line proxy. The handler dispatches each call on its protocol to a
 * side; each side keeps its own state in the tn_proxy and its connections
 * in the servers' pool slots (upstream.h). */
#ifndef TN_UPSTREAM_PROXY_H
#define TN_UPSTREAM_PROXY_H

#include "handlers/handler.h"
#include "upstream/upstream.h"

typedef struct tn_proxy tn_proxy;

/* What a side provides. Every hook but handle is optional. */
typedef struct tn_proxy_side {
    const char *name;
    int (*init)(tn_proxy *p, char *err, size_t errlen);
    tn_result (*handle)(tn_proxy *p, tn_call *call);
    void *(*attach)(tn_proxy *p, tn_session *s);
    void (*detach)(tn_proxy *p, tn_session *s, void *state);
    bool (*input_end)(tn_proxy *p, tn_session *s, void *state);
    void (*destroy)(tn_proxy *p);
    /* the handler's takeover (handler.h) */
    bool (*takeover)(tn_proxy *p, struct tn_conn *c);
} tn_proxy_side;

/* The sides this build has (each side points its entry at its table, so
 * that proxy.c includes no side);
 * NULL: the front end refuses proxy handlers (startup check).
 * HTTP: HTTP and HTTPS routes, WebSocket upgrades on them. LINE: TCP line
 * listeners. */
extern const tn_proxy_side *const tn_proxy_http_side;
extern const tn_proxy_side *const tn_proxy_line_side;

/* Upstream TLS (the handler's `tls` map). */
typedef struct tn_proxy_tls {
    bool enabled;
    bool verify;       /* default true */
    char *ca;          /* NULL: the system's default CAs */
    char *sni;         /* NULL: the server's host when it is a name */
    char *certificate; /* client certificate, with key */
    char *key;
    void *ctx;         /* SSL_CTX, made at init */
} tn_proxy_tls;

struct tn_proxy {
    tn_handler *h;
    tn_upstream_group *group;
    tn_proxy_tls tls;
    void *side_state[TN_UPSIDE_COUNT]; /* owned by each side */
};

/* Starts (or, after a reload, retunes) the active checks of G's servers
 * when G has health_check settings (health_check.c). */
void tn_upstream_checks_start(tn_upstream_group *g);

/* Startup check of a proxy handler's settings (upstreams, hash_key,
 * health_check, tls) without resolving anything. Returns -1 with a
 * message in err. */
int tn_proxy_check_conf(const tn_handler_conf *c, char *err, size_t errlen);

/* The group of a proxy handler, NULL for other types (control, metrics). */
tn_upstream_group *tn_proxy_group(const tn_handler *h);

/* Control `upstreams`: "upstreams": [{handler, balance, servers: [...]}]. */
struct tn_json;
void tn_proxy_upstreams_json(tn_registry *r, struct tn_json *j);
/* Control `upstream HANDLER SERVER drain|up|down|weight N` (ARG is the
 * text after the command). Returns -1 with a message in err. */
int tn_proxy_upstream_cmd(tn_registry *r, char *arg, char *err, size_t errlen);
/* Prometheus series of every proxy handler's servers. */
void tn_proxy_prometheus(tn_registry *r, struct evbuffer *out);


#endif
