/* SPDX-License-Identifier: MIT */
/* dispatch.h - the step the message front ends (TCP lines, UDP datagrams,
 * WebSocket messages) share between framing a message and calling its
 * handler: the peer's rate limit, the handler chosen by the message's first
 * word, and the texts a client gets when either says no. */
#ifndef TN_PROTO_DISPATCH_H
#define TN_PROTO_DISPATCH_H

#include <event2/buffer.h>
#include <stddef.h>

#include "config/config.h"
#include "handlers/handler.h"
#include "net/limits.h"

/* What comes before a failure's text (TN_FAIL) on every message protocol. */
#define TN_ERROR_PREFIX "Error: "
#define TN_ERROR_PREFIX_LEN (sizeof(TN_ERROR_PREFIX) - 1)

/* The handler called NAME (LEN bytes, not terminated), NULL when none. */
typedef tn_handler *(*tn_handler_lookup)(const void *arg, const char *name, size_t len);

/* How an endpoint picks the handler of a message. */
typedef struct tn_dispatch {
    tn_handler *single;       /* every message goes to it whole; NULL: by first word */
    tn_handler_lookup lookup; /* by first word */
    const void *arg;          /* lookup's */
    size_t echo_max;          /* bytes of an unknown name echoed back; 0: all */
} tn_dispatch;

typedef struct tn_listener tn_listener;

typedef enum tn_verdict {
    TN_DISPATCH_CALL,     /* call is ready for tn_handler_call() */
    TN_DISPATCH_LIMITED,  /* over the rate limit (count it: TN_REJ_RATE_LIMIT) */
    TN_DISPATCH_INVALID,  /* no first word */
    TN_DISPATCH_UNKNOWN,  /* the first word names no handler */
} tn_verdict;

/* Readies CALL for message MSG/LEN: takes a token from PEER's bucket when
 * LIM has a rate limit (PEER NULL: none kept), then sets call->handler,
 * payload and len (the words after the first one, when the first one
 * chooses). Anything but TN_DISPATCH_CALL leaves the client's answer in OUT
 * ("rate limit exceeded", "Invalid message format", "Unknown handler: NAME"),
 * to be sent as tn_dispatch_result() says. */
tn_verdict tn_dispatch_message(const tn_dispatch *sel, tn_peer *peer, const tn_limits *lim, tn_call *call,
                               const char *msg, size_t len, struct evbuffer *out);

/* The selection of a listener's messages: its one handler, or its
 * handlers by name. */
tn_dispatch tn_dispatch_listener(const tn_listener *l);

/* How the answer to VERDICT goes out: TN_FAIL (with TN_ERROR_PREFIX) for
 * the rate limit, TN_REPLY (plain text) for the others. */
tn_result tn_dispatch_result(tn_verdict verdict);

#endif
