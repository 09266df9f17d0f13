/* SPDX-License-Identifier: MIT */
/* broadcast.c - the broadcast handler: a chat room. Each message goes to
 * every other session attached to the handler, across listeners and
 * protocols; the sender gets nothing back.
 *
 * A member whose output is over its cap (push() refuses) is a slow consumer:
 * it is closed rather than letting the room's memory grow without bound.
 * Closing detaches, which edits the member list, so victims are collected
 * first and closed after the walk.
 *
 * A room may span processes and machines: after local delivery a message
 * goes to tn_cluster_publish() (other machines) and tn_workers_relay()
 * (the other worker processes, through the master); messages coming in from
 * elsewhere enter through tn_broadcast_deliver(), which reaches every local
 * member (the sender is not here). */
#include <stdlib.h>

#include "cluster.h"
#include "handlers/handler.h"
#include "log.h"
#include "workers.h"

typedef struct member {
    struct member *prev, *next;
    tn_session *session;
} member;

typedef struct room {
    member head; /* circular list sentinel */
    size_t count;
} room;

static int broadcast_init(tn_handler *h, char *err, size_t errlen)
{
    room *r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    r->head.next = r->head.prev = &r->head;
    h->state = r;
    return 0;
}

static void *broadcast_attach(tn_handler *h, tn_session *s)
{
    room *r = h->state;
    member *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->session = s;
    m->next = &r->head;
    m->prev = r->head.prev;
    r->head.prev->next = m;
    r->head.prev = m;
    r->count++;
    return m;
}

static void broadcast_detach(tn_handler *h, tn_session *s, void *state)
{
    (void)s;
    room *r = h->state;
    member *m = state;
    m->prev->next = m->next;
    m->next->prev = m->prev;
    r->count--;
    free(m);
}

/* Pushes to every member but SENDER; returns how many took it. */
static size_t deliver(tn_handler *h, const tn_session *sender, const char *data, size_t len)
{
    room *r = h->state;
    tn_session *slow[64];
    size_t nslow = 0, n = 0;
    for (member *m = r->head.next; m != &r->head; m = m->next) {
        if (m->session == sender)
            continue;
        if (m->session->ops->push(m->session, data, len) == 0)
            n++;
        else if (nslow < 64)
            slow[nslow++] = m->session;
    }
    for (size_t i = 0; i < nslow; i++) {
        tn_warn("handler %s: dropping slow consumer (connection %llu)", h->name,
                (unsigned long long)slow[i]->id);
        slow[i]->ops->close(slow[i], "slow consumer");
    }
    return n;
}

static tn_result broadcast_handle(tn_handler *h, tn_call *call)
{
    tn_session *sender = call->ctx.session;
    if (sender && !tn_session_state(sender, h)) {
        evbuffer_add_printf(call->out, "cannot join %s", h->name);
        return TN_FAIL;
    }
    deliver(h, sender, call->payload, call->len);
    tn_cluster_publish(h, call->payload, call->len);
    /* members in the other worker processes get it through the master */
    tn_workers_relay(h->daemon, h->name, call->payload, call->len);
    return TN_SILENT;
}

size_t tn_broadcast_deliver(tn_handler *h, const char *data, size_t len)
{
    if (h->ops != &tn_broadcast_ops || !h->state)
        return 0;
    return deliver(h, NULL, data, len);
}

static void broadcast_destroy(tn_handler *h)
{
    free(h->state);
}

const tn_handler_ops tn_broadcast_ops = {
    .type = "broadcast",
    .init = broadcast_init,
    .handle = broadcast_handle,
    .attach = broadcast_attach,
    .detach = broadcast_detach,
    .destroy = broadcast_destroy,
};
