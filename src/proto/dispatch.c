/* SPDX-License-Identifier: MIT */
/* dispatch.c - rate limit, handler selection and their answers, once for
 * every message front end. */
#include "proto/dispatch.h"

#include <string.h>

#include "clock.h"
#include "net/listener.h"

static tn_handler *listener_lookup(const void *arg, const char *name, size_t len)
{
    return tn_listener_handler(arg, name, len);
}

tn_dispatch tn_dispatch_listener(const tn_listener *l)
{
    return (tn_dispatch){ .single = l->handler, .lookup = listener_lookup, .arg = l };
}

tn_verdict tn_dispatch_message(const tn_dispatch *sel, tn_peer *peer, const tn_limits *lim, tn_call *call,
                               const char *msg, size_t len, struct evbuffer *out)
{
    if (peer && lim->rate_limit > 0 && !tn_peer_take_token(peer, lim->rate_limit, lim->rate_burst, tn_now_us())) {
        evbuffer_add(out, "rate limit exceeded", 19);
        return TN_DISPATCH_LIMITED;
    }
    call->handler = sel->single;
    call->payload = msg;
    call->len = len;
    if (call->handler)
        return TN_DISPATCH_CALL;
    size_t tok = tn_split_token(msg, len, &call->payload, &call->len);
    if (tok == 0) {
        evbuffer_add(out, "Invalid message format", 22);
        return TN_DISPATCH_INVALID;
    }
    call->handler = sel->lookup(sel->arg, msg, tok);
    if (!call->handler) {
        size_t echo = sel->echo_max && tok > sel->echo_max ? sel->echo_max : tok;
        echo = strnlen(msg, echo); /* the name as text: up to a NUL byte */
        evbuffer_add(out, "Unknown handler: ", 17);
        evbuffer_add(out, msg, echo);
        return TN_DISPATCH_UNKNOWN;
    }
    return TN_DISPATCH_CALL;
}

tn_result tn_dispatch_result(tn_verdict verdict)
{
    return verdict == TN_DISPATCH_LIMITED ? TN_FAIL : TN_REPLY;
}
