/* SPDX-License-Identifier: MIT */
/* http_exchange.c - a proxy handler's HTTP side: its spare exchanges and
 * its batch of requests to upstreams (http_pool.c sends it).
 *
 * Each proxied request needs an exchange of some 4 KB (the response head's
 * index, the servers tried); one allocated outside malloc's per-thread
 * cache and zeroed for every request was 1% of the proxy's CPU, so a
 * handler keeps finished ones, buffers included, and clears only the part
 * that is not indexed. */
#include "upstream/http_exchange.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "handlers/handler.h"

#define SPARE_MAX 64

typedef struct http_side {
    tn_http_exchange *list;
    size_t n;
    tn_up_batch batch;
} http_side;

int tn_http_side_init(tn_proxy *p, char *err, size_t errlen)
{
    http_side *sp = calloc(1, sizeof(*sp));
    if (!sp) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    tn_up_batch_start(&sp->batch, p->h);
    p->side_state[TN_UPSIDE_HTTP] = sp;
    return 0;
}

/* The side is made with the handler (tn_http_side_init) and freed after
 * its last exchange, so the functions below find it. */
tn_up_batch *tn_http_side_batch(tn_proxy *p)
{
    http_side *sp = p->side_state[TN_UPSIDE_HTTP];
    return &sp->batch;
}

tn_http_exchange *tn_http_exchange_new(tn_proxy *p)
{
    http_side *sp = p->side_state[TN_UPSIDE_HTTP];
    tn_http_exchange *x = sp->list;
    if (x) {
        sp->list = x->next_free;
        sp->n--;
        struct evbuffer *head = x->head, *body = x->body, *rbody = x->rbody;
        memset(x, 0, offsetof(tn_http_exchange, tried));
        x->head = head;
        x->body = body;
        x->rbody = rbody;
        return x;
    }
    x = malloc(sizeof(*x));
    if (!x)
        return NULL;
    memset(x, 0, offsetof(tn_http_exchange, tried));
    if (!(x->head = evbuffer_new()) || !(x->body = evbuffer_new()) || !(x->rbody = evbuffer_new())) {
        if (x->head)
            evbuffer_free(x->head);
        if (x->body)
            evbuffer_free(x->body);
        free(x);
        return NULL;
    }
    return x;
}

static void exchange_discard(tn_http_exchange *x)
{
    evbuffer_free(x->head);
    evbuffer_free(x->body);
    evbuffer_free(x->rbody);
    free(x);
}

void tn_http_exchange_put(tn_proxy *p, tn_http_exchange *x)
{
    http_side *sp = p->side_state[TN_UPSIDE_HTTP];
    if (sp->n >= SPARE_MAX) {
        exchange_discard(x);
        return;
    }
    evbuffer_drain(x->head, evbuffer_get_length(x->head));
    evbuffer_drain(x->body, evbuffer_get_length(x->body));
    evbuffer_drain(x->rbody, evbuffer_get_length(x->rbody));
    x->next_free = sp->list;
    sp->list = x;
    sp->n++;
}

void tn_http_side_free(tn_proxy *p)
{
    http_side *sp = p->side_state[TN_UPSIDE_HTTP];
    if (!sp)
        return;
    tn_up_batch_stop(&sp->batch);
    while (sp->list) {
        tn_http_exchange *x = sp->list;
        sp->list = x->next_free;
        exchange_discard(x);
    }
    free(sp);
    p->side_state[TN_UPSIDE_HTTP] = NULL;
}

