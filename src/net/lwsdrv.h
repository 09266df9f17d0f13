/* SPDX-License-Identifier: MIT */
/* lwsdrv.h - libwebsockets driven from the daemon's libevent loop.
 *
 * Debian's libwebsockets 4.1.6 has neither libevent support nor external-poll
 * callbacks, so the driver services lws itself (see lwsdrv.c): one read and
 * one write event per socket lws serves, following lws's pollfd table; lws's
 * timers, writes and pending work once per loop pass (a before-sleep job);
 * one vhost per keepalive policy. It knows no WebSocket semantics: its user
 * (the WebSocket front end) gets lws's callbacks, the end-of-pass flushes it
 * asks for, and every read lws makes from one of its sockets. One lws
 * context per process. */
#ifndef TN_NET_LWSDRV_H
#define TN_NET_LWSDRV_H

#include <event2/event.h>
#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "state.h"

/* What lws's handshake may hold of a request head (max_http_header_data);
 * lws drops a handshake it cannot hold without a word. */
#define TN_LWS_HEAD_MAX 8192

typedef struct tn_lws_sock tn_lws_sock;

/* A socket lws serves, kept inside the front end's record of it. */
struct tn_lws_sock {
    struct lws *wsi;     /* NULL until lws adopted it, and again once destroyed */
    evutil_socket_t fd;
    struct event *rev, *wev;
    int fdpos;           /* cached index into lws's pollfd table */
    bool want_in;        /* rev is added */
    bool want_out;       /* POLLOUT wanted, as last seen */
    bool on_pass[2];     /* listed for the end of the pass: flush, writable */
    tn_lws_sock *pass_next[2];
    bool destroyed;      /* lws freed the wsi (or it never got one) */
    bool foreign;        /* an lws-internal fd (event pipe) */
};

/* The front end's part. */
typedef struct tn_lws_hooks {
    /* lws's callback for socket S (NULL: not one of the front end's) for
     * every reason but the thread id, which the driver answers; WSI_DESTROY
     * must end with tn_lws_sock_close(S). */
    int (*callback)(tn_lws_sock *s, struct lws *wsi, enum lws_callback_reasons reason, void *in, size_t len);
    /* End of the loop pass, before lws's writes and timers: S was listed
     * with tn_lws_flush_later(). */
    void (*flush)(tn_lws_sock *s);
    /* lws reads from S (and from nothing else but with this call): read
     * s->fd and return what lws may see, as recv() would. */
    ssize_t (*recv)(tn_lws_sock *s, unsigned char *buf, size_t len);
} tn_lws_hooks;

/* Creates the lws context (no listening socket of its own) and the vhost
 * for the default keepalive (PING_MS, PONG_MS); the library must be 4.1.x
 * (the driver leans on its internals). -1 with a message in err. */
int tn_lws_init(tn_daemon *d, const tn_lws_hooks *hooks, int64_t ping_ms, int64_t pong_ms, char *err, size_t errlen);
/* Destroys the context: every socket still served gets WSI_DESTROY. */
void tn_lws_free(void);
/* Whether the context exists (between init and free). */
bool tn_lws_running(void);
const char *tn_lws_version(void);

/* The vhost for a keepalive policy: a ping after PING_MS of silence (0:
 * none), the close PONG_MS after that. NULL when it cannot be made. */
struct lws_vhost *tn_lws_vhost(int64_t ping_ms, int64_t pong_ms);

/* Readies S to serve FD (nonblocking): its events, and its place for the
 * recv() interposer. -1 when out of memory (S is left closed). */
int tn_lws_sock_open(tn_lws_sock *s, evutil_socket_t fd);
/* lws adopts S's socket at VH with BUF/LEN already read from it. NULL: lws
 * refused it and closed the socket (WSI_DESTROY may have come already). */
struct lws *tn_lws_adopt(tn_lws_sock *s, struct lws_vhost *vh, const char *buf, size_t len);
/* S is over: its events go, it leaves the pass lists and the interposer. */
void tn_lws_sock_close(tn_lws_sock *s);

/* S gets the flush hook at the end of this loop pass; whether it is listed. */
void tn_lws_flush_later(tn_lws_sock *s);
bool tn_lws_flush_listed(const tn_lws_sock *s);
/* lws has work for the end of this pass (a close, a write request). */
void tn_lws_wake(void);
/* lws holds input it has not handed over yet (rx buffered, an extension
 * draining): it comes in a later service. */
bool tn_lws_holding(void);

#endif
