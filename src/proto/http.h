/* SPDX-License-Identifier: MIT */
/* http.h - the HTTP/1.1 front end: routes, middleware, the protocol table.
 *
 * The parser (http_parse.c) takes requests apart with libhttp-parser; the
 * connection layer (http.c) orders and writes the responses; the router
 * (router.c) picks a route; middleware (middleware.c) runs around the
 * handler; handlers see the request (http_msg.h) through tn_msg_ctx.http
 * and may set the response's status and headers. */
#ifndef TN_PROTO_HTTP_H
#define TN_PROTO_HTTP_H

#include <event2/buffer.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "config/config.h"
#include "handlers/handler.h"
#include "net/conn.h"
#include "net/proto_ops.h"
#include "proto/http_msg.h"

typedef struct tn_http_route tn_http_route;
typedef struct tn_http_router tn_http_router;

/* ---- routes ---- */

struct tn_http_route {
    const tn_route_conf *conf;   /* spec, method, path, handler name, middleware, limits */
    tn_handler *handler;         /* referenced */
    struct tn_mw **middleware;   /* listener's then route's, in order */
    size_t nmiddleware;
};

/* Built from CONF, one of CFG's listeners (its middleware names refer to
 * CFG's, and the router holds a reference on CFG: route configs point into
 * it); NULL with err on failure (a handler that is not running, an unknown
 * middleware). */
tn_http_router *tn_http_router_new(tn_daemon *d, tn_config *cfg, const tn_listener_conf *conf, char *err,
                                   size_t errlen);
void tn_http_router_free(tn_http_router *rt);
/* Routers are shared by the listener and the requests in flight. */
void tn_http_router_ref(tn_http_router *rt);
void tn_http_router_unref(tn_http_router *rt);
/* The listener's own middleware as a route without handler (for 404, 405
 * and 400 answers: logging, CORS, headers), or NULL when it has none. */
const tn_http_route *tn_http_router_fallback(const tn_http_router *rt);
/* Most specific route for METHOD and PATH: exact paths beat parameters,
 * parameters beat prefixes, longer prefixes beat shorter; a route with the
 * method beats one for any method. Fills r->params. Returns NULL and sets
 * *allow (a comma list, e.g. "GET, HEAD, POST", in r's arena) when the path
 * matches only for other methods (405), *allow NULL for no match at all (404). */
const tn_http_route *tn_http_route_match(const tn_http_router *rt, tn_http_request *r, const char **allow);

/* Responses by status class, per route of a router and for responses no
 * route gave (no match, malformed or refused requests, WebSocket
 * handshakes). A reload's new router takes over the counts of the routes
 * whose spec it keeps (tn_http_router_inherit, before the old one is dropped). */
void tn_http_router_inherit(tn_http_router *rt, const tn_http_router *old);
/* ROUTE: a route of RT, its fallback or NULL (counted as no route). */
void tn_http_router_count(tn_http_router *rt, const tn_http_route *route, int status);
/* FN for each route in config order (ROUTE its spec, "GET /a"), then once
 * with ROUTE NULL for the responses no route gave; COUNTS has
 * TN_HTTP_CLASSES entries. */
typedef void (*tn_http_counts_fn)(void *arg, const char *route, const uint64_t *counts);
void tn_http_router_counts(const tn_http_router *rt, tn_http_counts_fn fn, void *arg);

/* ---- middleware ---- */

typedef enum tn_mw_result {
    TN_MW_NEXT,    /* go on to the next middleware / the handler */
    TN_MW_RESPOND, /* the middleware answered (status, headers, body in out) */
} tn_mw_result;

typedef struct tn_mw tn_mw;
/* One configured middleware instance (from [middleware] or a bare kind). */
tn_mw *tn_mw_new(tn_daemon *d, const tn_middleware_conf *conf, char *err, size_t errlen);
void tn_mw_free(tn_mw *mw);
/* What CONF needs from the system to start, checked without side effects:
 * an access_log file must open for appending, or be creatable in its
 * directory. Returns -1 with a message in err. */
int tn_mw_check(const tn_middleware_conf *conf, char *err, size_t errlen);
/* Before the handler, in order. May answer (preflight, 401, 429). */
tn_mw_result tn_mw_before(tn_mw *mw, tn_http_request *r, struct evbuffer *body);
/* After the handler (or an earlier middleware's answer), in reverse order:
 * may change the response headers and BODY, or turn a file body into a
 * compressed one (in BODY, or as r->stream for a large file: gzip). */
void tn_mw_after(tn_mw *mw, tn_http_request *r, struct evbuffer *body);
/* When the response has been written (access_log); BODY_BYTES: the body's
 * length as sent (0 for HEAD, 204, 304). */
void tn_mw_done(tn_mw *mw, tn_http_request *r, uint64_t body_bytes);

/* ---- the front end ---- */

/* accept, routes per listener (rebuilt on reload), the 503 of a refusal */
extern const tn_proto_ops tn_http_proto;
/* Counts a response with STATUS on listener L and the daemon, and in RT's
 * counts under ROUTE (see tn_http_router_count); RT NULL: L's router. For
 * responses that do not go through a request (a WebSocket's 101, the 503
 * at accept) as for those that do. */
void tn_http_count_response(tn_listener *l, tn_http_router *rt, const tn_http_route *route, int status);

#endif
