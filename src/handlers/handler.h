/* SPDX-License-Identifier: MIT */
/* handler.h - the protocol-neutral handler interface.
 *
 * A front end (tcp line, udp, http, websocket) frames a message and calls
 * tn_handler_call(). The handler answers in one of three ways:
 *   - now: it appends the reply to call->out and returns TN_REPLY (or
 *     TN_FAIL with the error detail in call->out);
 *   - later: it calls tn_job_begin(call) and returns TN_LATER; when the work
 *     is done it calls tn_job_done() exactly once. If the front end goes away
 *     first it calls tn_job_cancel(); the handler's cancel hook (if set) runs
 *     and the result, when it comes, is dropped;
 *   - never: TN_SILENT (broadcast relays, stream input), nothing is sent back.
 *
 * Handlers that keep per-connection state (stream: a process; broadcast:
 * room membership) use sessions: a front end gives each connection (or UDP
 * peer) a tn_session, and a handler attaches to it on first use. Pushes go
 * back through the session's ops, so handlers never see a socket. */
#ifndef TN_HANDLERS_HANDLER_H
#define TN_HANDLERS_HANDLER_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/config.h"
#include "metrics.h"

struct tn_daemon;
typedef struct tn_handler tn_handler;
typedef struct tn_session tn_session;
typedef struct tn_job tn_job;
typedef struct tn_http_request tn_http_request; /* defined by the HTTP front end */

typedef enum tn_result {
    TN_REPLY,  /* reply in call->out */
    TN_FAIL,   /* error detail in call->out; front end answers "Error: DETAIL" */
    TN_LATER,  /* tn_job_begin() was called; tn_job_done() follows */
    TN_SILENT, /* nothing goes back */
} tn_result;

/* The TLS session a message arrived over. */
typedef struct tn_tls_info {
    const char *version; /* "TLSv1.3" */
    const char *cipher;  /* "TLS_AES_256_GCM_SHA384" */
    const char *verify;  /* client certificate: "SUCCESS", "NONE" (none sent) */
    char *subject;       /* the verified client certificate's subject (RFC 2253), or NULL */
} tn_tls_info;

/* What a handler knows about where a message came from. */
typedef struct tn_msg_ctx {
    const char *listener;  /* listener name */
    uint64_t conn_id;      /* 0 for UDP */
    int protocol;          /* enum tn_protocol, or TN_PROTO_WS */
    const struct sockaddr *remote;
    socklen_t remote_len;
    const char *remote_addr; /* "ip:port" text, or NULL: use tn_msg_remote_addr() */
    tn_session *session;     /* NULL when the front end has none */
    tn_http_request *http;   /* HTTP only */
    const tn_tls_info *tls;  /* NULL when the connection is not TLS */
} tn_msg_ctx;

#define TN_PROTO_WS 3

typedef struct tn_call {
    tn_handler *handler;
    const char *payload;
    size_t len;
    tn_msg_ctx ctx;
    struct evbuffer *out; /* sync replies go here */
    tn_job *job;          /* set by tn_job_begin() */
    /* A front end that sets take_ref also takes a sync reply by reference:
     * reply/reply_len, bytes that stay valid until the call returns (echo's
     * payload, a static text), which spares a copy through out and the
     * allocation of a buffer for it. See tn_call_reply_ref(). */
    bool take_ref;
    const char *reply;
    size_t reply_len;
} tn_call;

/* A sync reply the handler need not copy: by reference when the front end
 * takes one, else into call->out. */
static inline void tn_call_reply_ref(tn_call *call, const char *data, size_t len)
{
    if (call->take_ref) {
        call->reply = data;
        call->reply_len = len;
    } else {
        evbuffer_add(call->out, data, len);
    }
}

/* An asynchronous reply in progress. The front end sets complete/fe right
 * after the call returns TN_LATER; the handler owns hstate. */
struct tn_job {
    tn_handler *handler;
    char *payload;
    size_t len;
    tn_msg_ctx ctx;        /* strings copied; session/http pointers cleared on cancel */
    char remote_addr[64];
    struct sockaddr_storage remote;
    tn_tls_info tls;       /* ctx.tls points here (subject copied) */
    int64_t started_us;
    void (*complete)(tn_job *job, tn_result result, const char *data, size_t len);
    void *fe;
    void *hstate;
    void (*cancel)(tn_job *job); /* set by the handler; called on tn_job_cancel() */
    bool cancelled;
};

tn_job *tn_job_begin(tn_call *call);
/* Delivers (unless cancelled), records metrics, frees the job. */
void tn_job_done(tn_job *job, tn_result result, const char *data, size_t len);
/* The front end no longer wants the answer (connection closed). */
void tn_job_cancel(tn_job *job);

/* A connection (or UDP peer) as handlers see it. */
typedef struct tn_session_ops {
    /* Send a message to the peer outside request/reply (one line, one datagram,
     * one WebSocket message). Returns -1 if the peer cannot take more now
     * (over its output cap); the caller may drop it. */
    int (*push)(tn_session *s, const char *data, size_t len);
    /* Close the connection (stream process exited, slow consumer dropped). */
    void (*close)(tn_session *s, const char *reason);
} tn_session_ops;

typedef struct tn_attachment {
    struct tn_attachment *next;
    tn_handler *handler;
    void *state;
} tn_attachment;

struct tn_session {
    const tn_session_ops *ops;
    uint64_t id;
    const char *listener;
    int protocol;
    tn_attachment *attached;
};

/* State a handler keeps for SESSION, attaching it on first use. */
void *tn_session_state(tn_session *s, tn_handler *h);
/* The front end calls this when the connection ends: every handler detaches. */
void tn_session_detach_all(tn_session *s);
/* The peer sends nothing more (it shut down its side). True when a handler
 * still talks to it and closes the session itself when done. */
bool tn_session_input_end(tn_session *s);

struct tn_conn; /* a front end's connection, opaque here (takeover) */

typedef struct tn_handler_ops {
    const char *type;
    /* Build per-handler state from the config; return -1 with a message in
     * err (size errlen) if the handler cannot run (e.g. unknown program). */
    int (*init)(tn_handler *h, char *err, size_t errlen);
    tn_result (*handle)(tn_handler *h, tn_call *call);
    void *(*attach)(tn_handler *h, tn_session *s);
    void (*detach)(tn_handler *h, tn_session *s, void *state);
    /* Optional. The session's peer sends nothing more; true to keep the
     * session open until the handler closes it (a stream process finishing
     * its output, inetd style). */
    bool (*input_end)(tn_handler *h, tn_session *s, void *state);
    /* Optional. The registry dropped the handler (a reload changed or
     * removed it, or the daemon exits); it lives on while referenced, and
     * a handler that keeps programs running lets them finish and go. The
     * registry holds the new set already: a successor is found by name. */
    void (*retire)(tn_handler *h);
    /* Called once no session, job or listener refers to the handler. */
    void (*destroy)(tn_handler *h);
    /* Optional. A reload found the handler's settings unchanged: false when
     * it must be rebuilt all the same (a plugin's file was replaced). */
    bool (*unchanged)(tn_handler *h);
    /* Optional. TCP line listeners: true when the handler took the accepted
     * connection C whole (the proxy's mode connection splices it to a
     * server); false leaves it to the line front end. C may be closed. */
    bool (*takeover)(tn_handler *h, struct tn_conn *c);
    /* HTTP routes: dispatch when the request head is complete and stream
     * the body to the handler (proto/http.h, tn_http_body_sink). */
    bool http_stream;
} tn_handler_ops;

struct tn_handler {
    char *name;
    const tn_handler_ops *ops;
    tn_handler_conf conf; /* deep copy owned by the handler */
    void *state;
    struct event_base *base;
    struct tn_daemon *daemon; /* for handlers that report on it (health, metrics) */
    int refs; /* listeners, routes, sessions and jobs using it */
    tn_handler *alive_prev, *alive_next; /* the registry's list of every live handler */
    struct tn_registry *registry;
    bool removed; /* dropped by a reload; freed when refs reach 0 */
    /* during init only: the handler of the same name this one replaces
     * (a reload that changed its settings), for state worth keeping */
    tn_handler *replacing;
    tn_handler_stats stats;
};

/* The remote address as text; formatted on demand so that front ends do not
 * pay for it on every message. */
const char *tn_msg_remote_addr(const tn_msg_ctx *ctx, char *buf, size_t len);

/* Calls the handler with metrics and error accounting. */
tn_result tn_handler_call(tn_call *call);

/* Handler selection by first token: the token ends at a
 * space, a colon with optional spaces, or a newline. On success *payload and
 * *len are the rest of the message. Returns the token length (0 = empty). */
size_t tn_split_token(const char *msg, size_t len, const char **payload, size_t *plen);

void tn_handler_ref(tn_handler *h);
void tn_handler_unref(tn_handler *h);

/* Registry: handlers by name, built from a config. */
typedef struct tn_registry tn_registry;
tn_registry *tn_registry_new(struct event_base *base, struct tn_daemon *daemon);
/* Create, or keep (same conf) the handlers of CFG. On error nothing changes
 * and err holds "FILE:LINE:COL: message". */
int tn_registry_apply(tn_registry *r, const tn_config *cfg, char *err, size_t errlen);
tn_handler *tn_registry_find(tn_registry *r, const char *name);
size_t tn_registry_count(const tn_registry *r);
/* The first of every handler not yet destroyed, those a reload dropped
 * (removed, still in use) included; the next is h->alive_next. */
tn_handler *tn_registry_alive(const tn_registry *r);
tn_handler *tn_registry_at(const tn_registry *r, size_t i);
/* Drops every handler; children still running (exec jobs cut short, stream
 * processes in their kill grace) are given up to WAIT_MS of loop time to be
 * reaped before the handlers are destroyed regardless. */
void tn_registry_free(tn_registry *r, int wait_ms);

/* The handler types. */
extern const tn_handler_ops tn_echo_ops;
extern const tn_handler_ops tn_static_ops;
extern const tn_handler_ops tn_exec_ops;
extern const tn_handler_ops tn_stream_ops;
extern const tn_handler_ops tn_broadcast_ops;
/* A room message that came from elsewhere (another process or machine):
 * pushed to every local member of broadcast handler H. Returns the members
 * that took it; 0 when H is not a broadcast handler. */
size_t tn_broadcast_deliver(tn_handler *h, const char *data, size_t len);
extern const tn_handler_ops tn_plugin_ops; /* handlers/plugin.c, plugin.h */
extern const tn_handler_ops tn_worker_ops;
/* HTTP-only types: they answer through ctx.http (see proto/http.h) and
 * refuse other protocols. */
extern const tn_handler_ops tn_health_ops;
extern const tn_handler_ops tn_metrics_ops;
extern const tn_handler_ops tn_file_ops;
extern const tn_handler_ops tn_redirect_ops;
extern const tn_handler_ops tn_proxy_ops; /* upstream/proxy.h */

/* What a file handler needs of its root to start: an existing directory
 * the daemon may read. Returns -1 with a message in err. */
int tn_file_check_root(const char *root, char *err, size_t errlen);

#endif
