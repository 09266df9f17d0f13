/* SPDX-License-Identifier: MIT */
/* http_conn.h - one HTTP connection's state, shared by the connection layer
 * (http.c: responses in order, errors, the input loop) and the parser
 * (http_parse.c: heads, bodies, the request model filled in). Only those
 * two include it. */
#ifndef TN_PROTO_HTTP_CONN_H
#define TN_PROTO_HTTP_CONN_H

#include <http_parser.h>
#include <stdbool.h>
#include <stdint.h>

#include "clock.h"
#include "net/conn.h"
#include "proto/http_msg.h"
#include "state.h"

#define TN_HTTP_MAX_URI 8192
#define TN_HTTP_MAX_HEADERS 100

enum { TN_HTTP_HEAD, TN_HTTP_BODY, TN_HTTP_DONE }; /* what the next bytes are */

typedef struct tn_http_conn {
    http_parser parser;
    int state;
    tn_http_request *cur;   /* being received */
    int64_t head_start_us;  /* first byte of the current head (slowloris) */
    /* header parsing scratch: the callbacks see pieces of the arena copy */
    const char *field, *value;
    size_t field_len, value_len;
    int content_lengths, transfer_encodings, hosts;
    bool te_chunked_last;
    /* chunk data must end with CRLF; http_parser (not built strict) takes
     * any two bytes there, which smuggles bytes past other parsers */
    int crlf_need;
    const char *feed_end;   /* end of the bytes being parsed */
    bool message_complete;
    int error;              /* status to answer with, 0 = none */
    bool path_above_root;   /* the current request's path climbed above '/' */
    const tn_http_route *route; /* matched when the head arrived (its limits apply to the body) */
    int64_t max_body;
    const char *allow;      /* for a 405 */
    const tn_ws_conf *upgrade; /* the head just parsed upgrades to this WebSocket endpoint */
    struct tn_http_pending *head, *tail; /* responses in request order (http.c) */
    /* a response whose body is being made as it is sent (r->stream): while
     * it lasts, later responses wait and no further request is read */
    tn_http_request *sreq;
    struct event *pump_ev;  /* makes the next piece, from the loop */
    struct evbuffer *piece;
    uint64_t sbytes;        /* body bytes of sreq sent so far, without chunk framing (access log) */
    bool sclose, schunked, pumping;
    bool swaiting;          /* the stream has nothing yet: only tn_http_stream_wake() resumes it */
    int send;               /* 0 while sreq's body goes on; 1 made whole, -1 failed: the pump ends it */
    size_t queued;          /* entries in head..tail */
    int64_t body_start_us;  /* first byte of the current body (its read_timeout deadline) */
    /* a proxied request (its handler's http_stream): dispatched at its head,
     * its body goes to the handler's sink as it arrives */
    bool early;             /* the request being received was dispatched already */
    tn_http_body_sink *sink;
    bool sink_full;         /* the sink said stop: input waits for tn_http_body_resume */
    int64_t sink_bytes;
    bool upgrade_wait;      /* a proxied Upgrade request: input waits for its answer */
    /* the peer's "ip:port", formatted for its first request (every request
     * carries it: X-Forwarded-For, the access log, exec's environment) */
    char remote[128];
    uint8_t remote_len, remote_ip_start, remote_ip_len;
} tn_http_conn;

/* The loop's cached time: the head deadline needs milliseconds, not a clock
 * read per request. */
static inline int64_t tn_http_loop_us(const tn_conn *c)
{
    return tn_loop_us(tn_conn_daemon(c)->base);
}

/* ---- the parser (http_parse.c) ---- */

/* A request for C: its router referenced, its peer's address filled in. */
tn_http_request *tn_http_request_new(tn_conn *c, tn_http_conn *hc);
/* Frees R: its arena, body, file, stream, and its reference on the router. */
void tn_http_request_free(tn_http_request *r);
/* Parses a complete head (DATA, LEN including the blank line): answers an
 * error, marks an upgrade, dispatches a request without body, or starts
 * receiving the body. */
void tn_http_begin_request(tn_conn *c, tn_http_conn *hc, const char *data, size_t len);
/* Feeds body bytes; returns how many were used. */
size_t tn_http_feed_body(tn_conn *c, tn_http_conn *hc, const char *data, size_t len);

/* The early request's body ended: COMPLETE, or cut short. */
void tn_http_sink_finish(tn_http_conn *hc, bool complete);

/* ---- the connection layer (http.c) ---- */

/* What the connection layer does with each HTTP connection (accept gives it). */
extern const tn_frontend tn_http_frontend;

/* Ends the connection with STATUS for the request being received. */
void tn_http_fail_request(tn_conn *c, tn_http_conn *hc, int status, const char *text);
/* Runs R through its route's middleware and handler and answers it in
 * turn; NOT_FOUND: its path climbed above the root (404); ROUTE NULL: 405
 * with ALLOW, else 404. */
void tn_http_dispatch(tn_conn *c, tn_http_request *r, bool not_found, const tn_http_route *route, const char *allow);

#endif
