/* SPDX-License-Identifier: MIT */
/* metrics_handler.c - the metrics handler: the daemon's counters and
 * histograms in the Prometheus text exposition format, over HTTP. The
 * numbers themselves are kept and formatted by metrics.c, shared with the
 * control socket's `metrics` command. */
#include "handlers/handler.h"
#include "metrics.h"
#include "metrics_export.h"
#include "proto/http_msg.h"
#include "workers.h"

static tn_result metrics_handle(tn_handler *h, tn_call *call)
{
    tn_http_request *r = call->ctx.http;
    if (!r) {
        /* the config loader refuses metrics on other protocols already */
        evbuffer_add_printf(call->out, "metrics handlers only serve HTTP");
        return TN_FAIL;
    }
    if (!h->daemon) {
        evbuffer_add_printf(call->out, "metrics: no daemon to report on");
        return TN_FAIL;
    }
    r->status = 200;
    r->content_type = "text/plain; version=0.0.4; charset=utf-8";
    /* in a worker process: the whole daemon's numbers, merged by the master */
    if (tn_workers_metrics(h->daemon, call))
        return TN_LATER;
    tn_metrics_prometheus(h->daemon, call->out);
    return TN_REPLY;
}

const tn_handler_ops tn_metrics_ops = { .type = "metrics", .handle = metrics_handle };
