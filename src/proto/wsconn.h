/* SPDX-License-Identifier: MIT */
/* wsconn.h - a WebSocket's record, shared by the two halves of the
 * WebSocket front end: ws.c (the upgrade, messages in, the lifetime) and
 * wsconn.c (what goes out: replies in request order, pongs, output caps,
 * close frames, pushes). Nothing outside proto/ws*.c includes it. */
#ifndef TN_PROTO_WSCONN_H
#define TN_PROTO_WSCONN_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>

#include "clock.h"
#include "handlers/handler.h"
#include "net/conn.h"
#include "net/listener.h"
#include "net/lwsdrv.h"
#include "proto/wsframe.h"

typedef struct tn_wsconn tn_wsconn;

typedef struct tn_wsmsg {
    struct tn_wsmsg *next;
    tn_wsconn *conn;     /* pending: whose reply this is */
    tn_job *job;      /* pending: outstanding handler call */
    bool ready;       /* pending: answered (or data to send) */
    bool send;        /* pending: something to send once at the head */
    bool binary;
    bool small;       /* inline_buf holds LWS_PRE + MSG_SMALL + 2: reusable */
    bool pong;        /* a pong (control frame), not a message */
    uint32_t after;   /* pong: goes out after the replies to this many messages */
    size_t len;
    unsigned char *buf; /* LWS_PRE + len: inline below, or malloc'd by job_complete */
    unsigned char inline_buf[];
} tn_wsmsg;

struct tn_wsconn {
    tn_conn_base base;  /* first: the record is freed through it */
    tn_lws_sock sock;   /* lws's side: the wsi and the socket's events */
    tn_daemon *d;
    bool in_receive;    /* inside lws's RECEIVE callback: a reply may take the fast path */
    bool established;
    bool finished;      /* sessions detached, jobs cancelled */
    tn_handler *handler; /* single-handler endpoint (referenced) */
    char **names;        /* multi-handler endpoint: the handler names */
    size_t nnames;
    char *path;
    char subprotocol[64];
    int64_t max_message, max_output;
    char local[64];      /* "ip:port": over a TLS relay, the TLS connection's */
    tn_tls_info *tls;    /* over a TLS relay: the session's (owned copy) */
    struct evbuffer *rx; /* fragments of the message being received */
    size_t rx_len;
    bool rx_binary;
    bool rx_open; /* a message is partly received */
    bool rx_dead; /* failed while receiving: lws's further messages are ignored */
    tn_utf8 rx_utf8; /* the text message so far */
    uint32_t msgs_done; /* messages received whole (the frame check counts them too) */
    tn_wsf wsf;         /* the frame check in front of lws */
    tn_wsmsg *pong_head, *pong_tail; /* pongs owed, in order */
    tn_wsmsg *out_head, *out_tail; /* ready to write */
    tn_wsmsg *inflight;    /* written with permessage-deflate: lws may still read it */
    bool deflate;       /* permessage-deflate offered and allowed */
    size_t out_bytes;
    tn_wsmsg *pend_head, *pend_tail; /* replies in request order */
    int close_code;
    bool close_now;
    bool close_sent;    /* our close frame went to lws */
    char close_reason[64];
};

/* The front end's state: freed small messages, for the next replies. */
struct tn_ws {
    tn_wsmsg *spare;
    size_t nspare;
};

static inline void tn_wsconn_reject(tn_wsconn *c, int reason)
{
    TN_COUNT(c->base.listener, rejected[reason], 1);
}

/* ---- wsconn.c ---- */

/* Session operations (push, close) of every WebSocket. */
extern const tn_session_ops tn_wsconn_session_ops;

void tn_wsconn_msg_free(tn_wsconn *c, tn_wsmsg *m);
/* Close C with CODE and REASON once what is queued is out, or at once
 * (NOW): a slow reader, a protocol violation. */
void tn_wsconn_close_with(tn_wsconn *c, int code, const char *reason, bool now);
/* The end of the loop pass for C: replies on the fast path, pongs, and the
 * close the frame check asked for (the driver's flush hook). */
void tn_wsconn_flush(tn_wsconn *c);
/* Pongs whose pings came before the messages answered so far (ALL: every
 * one owed); dropping every pong owed. */
void tn_wsconn_pong_release(tn_wsconn *c, bool all);
void tn_wsconn_pongs_drop(tn_wsconn *c);
/* A reply of RES to a message (REQ_BINARY: it was binary; UTF8_KNOWN: DATA
 * is known to be UTF-8): in order, behind asynchronous replies owed. */
void tn_wsconn_reply(tn_wsconn *c, tn_result res, const char *data, size_t len, bool req_binary, bool utf8_known);
/* A slot for an asynchronous reply, completed by tn_wsconn_job_complete(). */
tn_wsmsg *tn_wsconn_pend_add(tn_wsconn *c);
void tn_wsconn_job_complete(tn_job *job, tn_result res, const char *data, size_t len);
/* The frame check saw a ping (ARG is the connection): a pong is owed after
 * the replies to the first MSGS messages. */
void tn_wsconn_on_ping(void *arg, const uint8_t *payload, size_t len, uint32_t msgs);
/* lws's writeable callback: the next message, or the close frame. */
int tn_wsconn_writeable(tn_wsconn *c);

#endif
