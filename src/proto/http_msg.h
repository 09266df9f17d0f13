/* SPDX-License-Identifier: MIT */
/* http_msg.h - the HTTP request model: what handlers and middleware see.
 *
 * A request as parsed, its route parameters and the response handlers and
 * middleware fill in (status, headers, a body from a file or made while it
 * is sent). Nothing here knows the connection it came over: the connection
 * layer (http.c) and the parser (http_parse.c) fill the request in and write
 * the response. Everything is owned by the request: strings live in its
 * arena and die with it. */
#ifndef TN_PROTO_HTTP_MSG_H
#define TN_PROTO_HTTP_MSG_H

#include <event2/buffer.h>
#include <event2/util.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct tn_http_request tn_http_request;
typedef struct tn_http_route tn_http_route;
typedef struct tn_http_router tn_http_router;
struct tn_gzip;

typedef struct tn_http_header {
    const char *name;  /* as received (or set); compare case-insensitively */
    const char *value;
} tn_http_header;

/* A response body made while it is sent (gzip of a large file), so that
 * neither it nor its source is ever held whole: http.c asks for the next
 * piece each time the connection's output has drained. */
typedef struct tn_http_stream {
    /* Appends the next piece (a bounded amount) to OUT: 1 more follows, 0
     * that was the last, -1 failed (the connection is then closed: the
     * body cannot be completed), TN_HTTP_STREAM_WAIT nothing yet: the
     * maker calls tn_http_stream_wake() when it has more (a proxied body
     * arriving from its upstream). */
    int (*next)(struct tn_http_stream *s, struct evbuffer *out);
    void (*free)(struct tn_http_stream *s);
    bool has_length;  /* the body's length is known: Content-Length, not chunked */
    bool compressible; /* a body made elsewhere (proxied) that gzip may wrap */
    uint64_t length;
    void *fe;         /* the front end's, while the body is being sent */
} tn_http_stream;

/* Framing checks http_parser (not built strict) leaves to its user, for
 * requests and proxied responses alike. A head must not hold obs-fold (a
 * line continuing the previous header: its raw CRLF would reach whatever
 * copies the value), a CR that does not end a line, or NUL. Chunk data must
 * end with CRLF (http_parser takes any two bytes, which smuggles bytes past
 * other parsers): *NEED bytes of it are owed, checked against AT..END. */
bool tn_http_head_strict(const char *h, size_t len);
bool tn_http_crlf_ok(int *need, const char *at, const char *end);

#define TN_HTTP_STREAM_WAIT 2
void tn_http_stream_wake(tn_http_stream *s);

/* A request body taken as it arrives (proxied routes: the handler's ops set
 * http_stream, so the request is dispatched when its head is complete and
 * the handler sets r->body_sink during the call). The front end calls end
 * exactly once: when the body is complete (at once when there is none),
 * or with COMPLETE false when it cannot be (malformed, timed out, the
 * client gone). */
typedef struct tn_http_body_sink {
    /* Body bytes, de-chunked. Returns false to stop reading the client
     * until tn_http_body_resume(). */
    bool (*data)(struct tn_http_body_sink *s, const char *at, size_t len);
    void (*end)(struct tn_http_body_sink *s, bool complete);
    void *fe; /* the front end's */
} tn_http_body_sink;

void tn_http_body_resume(tn_http_body_sink *s);

/* After a 101 response (status 101, r->on_upgrade set) is written, the
 * front end gives up the client's connection. Valid during the call only. */
typedef struct tn_http_handover {
    /* the connection's record, which ends with the handover (or, for TLS,
     * goes on carrying it): who taking over lists the connection anew needs
     * its listener and remote address */
    struct tn_conn_base *from;
    evutil_socket_t fd;   /* the plain bytes (through a relay for TLS); -1 when the connection was lost */
    const char *local;    /* "ip:port" the client reached */
    const char *data;     /* read after the request's head, LEN bytes */
    size_t len;
    const char *path;     /* the request's path */
} tn_http_handover;
typedef void (*tn_http_upgrade_fn)(void *arg, const tn_http_handover *ho);

struct tn_http_request {
    /* ---- the request, as parsed ---- */
    const char *method;     /* "GET" */
    const char *target;     /* raw request-target */
    const char *path;       /* percent-decoded, dot segments resolved, always starts with '/' */
    const char *query;      /* raw query without '?', "" when none */
    int http_major, http_minor;
    bool keep_alive;        /* after this response */
    bool head;              /* HEAD: send headers only */
    tn_http_header *headers;
    size_t nheaders, headers_cap;
    struct evbuffer *body;  /* request body (de-chunked) */
    const char *remote_addr; /* "ip:port" */
    const char *remote_ip;   /* "ip" */
    uint64_t conn_id;
    const char *listener;
    int64_t started_us;     /* tn_now_us() when the head was taken up (access log request_time) */

    /* ---- routing ---- */
    const tn_http_route *route; /* NULL: no route matched */
    const char *param_names[8];
    const char *param_values[8];
    size_t nparams;

    /* ---- the response, filled by handlers and middleware ---- */
    int status;                  /* 0: 200 */
    tn_http_header *resp_headers; /* extra headers, in order */
    size_t nresp, resp_cap;
    const char *content_type;    /* NULL: text/plain; charset=utf-8 */
    int file_fd;                 /* >= 0: the body is this file's range (sendfile) */
    off_t file_offset;
    off_t file_length;           /* also set with a file's 304: the size it would have */
    tn_http_stream *stream;      /* non-NULL: the body, made piece by piece (owned); no Content-Length */
    const struct tn_gzip *gzip;  /* the route's gzip, set before the handler when the client takes it */
    tn_http_body_sink *body_sink; /* set by an http_stream handler during its call */
    tn_http_upgrade_fn on_upgrade; /* with a 101: who takes the connection */
    void *upgrade_arg;

    /* ---- internals of http.c ---- */
    void *arena;
    tn_http_router *router; /* the router the request started with (referenced) */
};

/* Header lookup, case-insensitive; NULL when absent. */
const char *tn_http_header_get(const tn_http_request *r, const char *name);
/* Copy S into the request's arena (lives as long as the request). */
const char *tn_http_strdup(tn_http_request *r, const char *s, size_t len);
/* Response headers: add another, or replace any of the same name. */
void tn_http_add_header(tn_http_request *r, const char *name, const char *value);
void tn_http_set_header(tn_http_request *r, const char *name, const char *value);
const char *tn_http_resp_header_get(const tn_http_request *r, const char *name);
void tn_http_remove_header(tn_http_request *r, const char *name);
/* Status code to reason phrase ("Not Found"). */
const char *tn_http_reason(int status);
/* The response head for R with STATUS into OUT (see http_msg.c). */
enum { TN_HEAD_STREAMED = 1, TN_HEAD_NO_BODY = 2, TN_HEAD_NO_CTYPE = 4, TN_HEAD_CLOSE = 8 };
void tn_http_write_head(struct evbuffer *out, const tn_http_request *r, int status, const char *date,
                        size_t body_len, unsigned flags);
/* Whether a comma-separated header value (Connection, Upgrade, Vary) names
 * TOKEN, case-insensitively; with STAR, a "*" element names every token. */
bool tn_http_list_has(const char *list, const char *token, bool star);
/* Whether R asks for a WebSocket: GET with `Upgrade: websocket` and
 * `Connection: upgrade` (RFC 6455 4.1). */
bool tn_http_is_ws_upgrade(const tn_http_request *r);
/* Adds TOKEN to the response's Vary unless it is listed already: several
 * middleware may each contribute one. */
void tn_http_vary_add(tn_http_request *r, const char *token);
/* Appends S to OUT percent-encoding what may not appear as is: in a path
 * (r->path is decoded, so "?", "#", "%", spaces and controls go back to %XX)
 * or in a query (still encoded: only bytes no URI may hold are escaped). */
enum tn_http_escape { TN_HTTP_ESC_PATH, TN_HTTP_ESC_QUERY };
void tn_http_add_escaped(struct evbuffer *out, const char *s, enum tn_http_escape what);
/* The part of PATH (r->path or a path derived from it) under R's route
 * prefix when the route's pattern ends in a slash and a star (route
 * "/static/" + "*" gives "/a.css" for /static/a.css); PATH itself
 * otherwise. File handlers serve it; proxies forward it (router.c). */
const char *tn_http_route_rest_of(const tn_http_request *r, const char *path);
/* A route parameter (":id" -> "id"), NULL when absent. */
const char *tn_http_param(const tn_http_request *r, const char *name);
/* LEN bytes in the request's arena (lives as long as the request), NULL
 * when out of memory. */
void *tn_http_alloc(tn_http_request *r, size_t len);
/* Frees R's arena: everything tn_http_alloc and tn_http_strdup gave. */
void tn_http_arena_free(tn_http_request *r);

#endif
