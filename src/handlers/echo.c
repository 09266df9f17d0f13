/* SPDX-License-Identifier: MIT */
/* echo.c - the echo handler: the reply is the payload. */
#include "handlers/handler.h"

static tn_result echo_handle(tn_handler *h, tn_call *call)
{
    (void)h;
    tn_call_reply_ref(call, call->payload, call->len);
    return TN_REPLY;
}

const tn_handler_ops tn_echo_ops = { .type = "echo", .handle = echo_handle };
