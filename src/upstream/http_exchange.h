/* SPDX-License-Identifier: MIT */
/* http_exchange.h - the record of one proxied HTTP request (http_proxy.c
 * drives it), and what a proxy handler's HTTP side keeps between requests:
 * spare records for the next ones, and the batch its requests to upstreams
 * leave in. */
#ifndef TN_UPSTREAM_HTTP_EXCHANGE_H
#define TN_UPSTREAM_HTTP_EXCHANGE_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "proto/http.h"
#include "upstream/http_pool.h"
#include "upstream/proxy.h"

#define MAX_RESP_HEADERS 100
#define MAX_TRIES 101          /* retries is at most 100 */

typedef struct tn_http_exchange tn_http_exchange;

struct tn_http_exchange {
    tn_proxy *p;
    tn_handler *h;            /* referenced while the exchange lives */
    tn_job *job;              /* until the response head is handed over */
    tn_http_request *r;       /* NULL once the front end let go of it */
    tn_http_body_sink sink;
    tn_http_stream stream;
    bool sink_set, sink_ended, body_complete;
    bool stream_set, stream_freed;
    /* the current try */
    tn_up_conn *uc;
    tn_upstream_server *server; /* referenced while tried */
    size_t ntried;            /* in tried[] */
    int attempt;              /* retries done */
    bool sending;             /* head sent on uc; body goes there */
    bool body_sent_any;       /* a body byte left for some upstream: no retry */
    bool request_sent;        /* all of it is in the kernel */
    bool got_byte;            /* a response byte came */
    bool reused;
    int64_t t0, try_t0;
    struct event *timer;      /* backoff */
    struct event *nosock_ev;  /* a failure to report from the loop, not from the handler call */
    struct evbuffer *head;    /* the request head, kept for retries */
    struct evbuffer *body;    /* body bytes waiting for a connection */
    bool chunked_up;          /* the body goes up chunked */
    bool idempotent;
    bool upgrade;             /* the client asked to switch protocols */
    bool upgrade_pending;     /* 101 handed over: the front end calls tn_proxy_ws_take */
    bool https;               /* the client came over TLS */
    uint64_t resp_length;     /* Content-Length of the response, when it has one */
    bool sized;               /* framed by Content-Length alone: moved without the parser */
    uint64_t body_left;       /* of a sized body */
    /* the response */
    http_parser parser;
    char *rhead;              /* the head, NUL-terminated in place after parsing */
    size_t rhead_len;
    size_t nh;                /* in hname[] and the others */
    int content_lengths, transfer_encodings;
    bool header_overflow;
    bool head_done, resp_done, resp_failed;
    int crlf_need;            /* see on_body */
    const char *feed_end;
    struct evbuffer *rbody;   /* decoded body bytes for the client */
    bool read_stopped;
    tn_http_exchange *next_free; /* in the handler's spare list */
    /* Not cleared for a new exchange (3.5 KB): read only below ntried and
     * nh. Keep them last. */
    tn_upstream_server *tried[MAX_TRIES];
    const char *hname[MAX_RESP_HEADERS], *hvalue[MAX_RESP_HEADERS];
    size_t hname_len[MAX_RESP_HEADERS], hvalue_len[MAX_RESP_HEADERS];
};

/* P's HTTP side made (the handler's start) and freed (its end). */
int tn_http_side_init(tn_proxy *p, char *err, size_t errlen);
void tn_http_side_free(tn_proxy *p);
/* The batch P's requests to upstreams leave in (tn_http_pool_send). */
tn_up_batch *tn_http_side_batch(tn_proxy *p);
/* A new exchange for P, all zero but its three (empty) buffers; NULL when
 * out of memory. */
tn_http_exchange *tn_http_exchange_new(tn_proxy *p);
/* X, done with (nothing referenced any more), to P's spares or freed. */
void tn_http_exchange_put(tn_proxy *p, tn_http_exchange *x);

#endif
