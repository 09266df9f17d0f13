/* SPDX-License-Identifier: MIT */
/* health.c - the health handler: HTTP 200 with a small JSON document
 * (status, uptime, version) for load balancers and probes.
 *
 * It is the route the benchmarks race against nginx, so the whole answer is
 * one evbuffer_add_printf: the content type is a literal and the version is
 * pasted in at compile time. */
#include "handlers/handler.h"
#include "metrics_export.h"
#include "proto/http_msg.h"
#include "version.h"

static tn_result health_handle(tn_handler *h, tn_call *call)
{
    tn_http_request *r = call->ctx.http;
    if (!r) {
        /* the config loader refuses health on other protocols already */
        evbuffer_add_printf(call->out, "health handlers only serve HTTP");
        return TN_FAIL;
    }
    r->status = 200;
    r->content_type = "application/json";
    double up = h->daemon ? tn_metrics_uptime(h->daemon) : 0.0;
    evbuffer_add_printf(call->out, "{\"status\":\"healthy\",\"uptime_seconds\":%.3f,\"version\":\"" TN_VERSION "\"}",
                        up);
    return TN_REPLY;
}

const tn_handler_ops tn_health_ops = { .type = "health", .handle = health_handle };
