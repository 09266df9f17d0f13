/* SPDX-License-Identifier: MIT */
/* cluster.c - broadcast rooms across instances through Redis pub/sub.
 *
 * Each broadcast handler is a room; its channel is channel_prefix + the
 * handler's name. A message delivered locally is PUBLISHed there; every
 * instance PSUBSCRIBEs to prefix* and hands what arrives to
 * tn_broadcast_deliver(). Redis sends a publisher its own messages too:
 * every payload starts with the publishing node's id, and a node drops what
 * carries its own.
 *
 * Frame: one byte version (1), one byte id length, the id, the message.
 * Binary-safe, no escaping, and the message is the rest.
 *
 * `send NODE:ID MESSAGE` (connection ids are per instance) goes on NODE's
 * own channel, prefix + "@" + NODE, which NODE SUBSCRIBEs to (exactly; its
 * pattern subscription sees it too and ignores every "@" channel). The
 * frame is the same with the connection id (8 bytes, big-endian) before the
 * message. PUBSUB NUMSUB on that channel first tells an unknown node (no
 * exact subscriber) from a known one, before anything is published; all
 * workers of a node subscribe, and the one whose connection it is (the id
 * names its worker) delivers. Whether the connection still exists there is
 * known only there (counted as delivered or undeliverable).
 *
 * hiredis runs on the daemon's libevent loop with two connections: one in
 * subscribe mode (which can send nothing else) and one that publishes. All
 * publishes go through one connection in order, so a room's messages from
 * one node arrive everywhere in the order they were sent. The link is
 * "connected" when the publisher is authenticated and the subscription
 * confirmed; a failure of either tears both down and retries after a wait
 * that doubles from 100ms up to reconnect_max. Until then messages wait in
 * a queue bounded by max_queue (bytes of messages, counting the ones sent
 * but not yet acknowledged); beyond it they are lost and counted, as are
 * unacknowledged ones when the link breaks (at most once: a resend could
 * deliver twice). Local delivery never waits for any of this.
 *
 * hiredis frees a context after its connect-failure and disconnect
 * callbacks, and freeing one runs its pending callbacks: teardown therefore
 * happens in a before-sleep job of its own (reset_job), never inside a callback, and
 * forgets a context (pointer set to NULL) before freeing it, which is how
 * the callbacks that freeing runs know to ignore it. */
#include "cluster.h"

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "net/conn.h"
#include "state.h"
#include "workers.h"

#define FRAME_VERSION 1
#define BACKOFF_MIN_MS 100
/* hiredis 0.14 has no connect timeout of its own; an unanswered SYN would
 * otherwise hold the link in "connecting" for the kernel's minutes. */
#define CONNECT_TIMEOUT_MS 5000

enum link_state { LINK_CONNECTING, LINK_CONNECTED, LINK_DOWN };
static const char *const state_names[] = { "connecting", "connected", "down" };

/* A message for Redis: queued, then in flight until its reply. */
typedef struct cmsg {
    struct cmsg *next;
    size_t len;   /* the message's own bytes, counted against max_queue */
    size_t chlen; /* channel bytes at buf, the frame follows */
    size_t flen;
    char buf[];
} cmsg;

/* A `send NODE:ID`: between its NUMSUB and its PUBLISH's reply. hiredis
 * answers every command it took (NULL when the link goes), so each one
 * ends in finish(). */
typedef struct direct {
    struct direct *next;
    tn_cluster *c;
    tn_cluster_sent_fn fn; /* NULL: the asker went away */
    void *arg;
    size_t chlen, flen;
    char buf[]; /* the channel, then the frame */
} direct;

struct tn_cluster {
    tn_daemon *d;
    direct *directs;
    const tn_cluster_conf *conf;
    tn_cluster_addr addr;
    char node[256];
    size_t node_len;
    char *pattern; /* the escaped prefix and '*' */
    redisAsyncContext *pub, *sub;
    bool pub_ready, sub_ready;
    int state;
    int64_t since_ms;
    int64_t backoff_ms;
    struct event *timer_ev; /* connect timeout, or the wait before the next attempt */
    tn_pass_job reset_job;
    bool resetting; /* reset_job is due: the first failure was reported */
    cmsg *head, *tail; /* head..unsent in flight, unsent..tail queued */
    cmsg *unsent;
    size_t queued_msgs, queued_bytes;
    bool warned_full, warned_big; /* one warning of each per connection */
    uint64_t published, received, lost, errors, reconnects, unroutable, invalid;
    uint64_t direct_published, direct_delivered, direct_undeliverable;
    char last_error[256];
};

/* ---- the queue ------------------------------------------------------------- */

static void on_published(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    tn_cluster *c = priv;
    redisReply *reply = r;
    cmsg *m = c->head;
    if (!m || m == c->unsent)
        return; /* cannot happen: replies match sends one to one */
    c->head = m->next;
    if (!c->head)
        c->tail = NULL;
    c->queued_msgs--;
    c->queued_bytes -= m->len;
    if (!reply) {
        c->lost++; /* the link went with it unacknowledged */
    } else if (reply->type == REDIS_REPLY_ERROR) {
        c->errors++;
        c->lost++;
        if (strcmp(reply->str, c->last_error) != 0)
            tn_warn("cluster: Redis refused a PUBLISH: %s", reply->str);
        snprintf(c->last_error, sizeof(c->last_error), "%s", reply->str);
    } else {
        c->published++;
    }
    free(m);
}

static void send_unsent(tn_cluster *c)
{
    while (c->unsent && c->state == LINK_CONNECTED && c->pub) {
        cmsg *m = c->unsent;
        const char *argv[3] = { "PUBLISH", m->buf, m->buf + m->chlen };
        size_t lens[3] = { 7, m->chlen, m->flen };
        if (redisAsyncCommandArgv(c->pub, on_published, c, 3, argv, lens) != REDIS_OK)
            return; /* the context is going away; its disconnect resets the link */
        c->unsent = m->next;
    }
}

/* A frame's head at P: the version, our node id's length, the id; returns
 * where the rest goes. */
static char *frame_head(const tn_cluster *c, char *p)
{
    p[0] = FRAME_VERSION;
    p[1] = (char)c->node_len;
    memcpy(p + 2, c->node, c->node_len);
    return p + 2 + c->node_len;
}

void tn_cluster_publish(tn_handler *h, const char *data, size_t len)
{
    tn_cluster *c = h->daemon ? h->daemon->cluster : NULL;
    if (!c)
        return;
    if (c->queued_bytes + len > (size_t)c->conf->max_queue) {
        c->lost++;
        bool big = len > (size_t)c->conf->max_queue;
        if (big && !c->warned_big)
            tn_warn("cluster: %s: a message of %zu bytes is over max_queue, not published", h->name, len);
        else if (!big && !c->warned_full)
            tn_warn("cluster: %s: queue full (%zu bytes waiting for Redis, link %s); messages are lost", h->name,
                    c->queued_bytes, state_names[c->state]);
        c->warned_big |= big;
        c->warned_full |= !big;
        return;
    }
    size_t plen = strlen(c->conf->channel_prefix), nlen = strlen(h->name);
    size_t chlen = plen + nlen, flen = 2 + c->node_len + len;
    cmsg *m = malloc(sizeof(*m) + chlen + flen);
    if (!m) {
        c->lost++;
        return;
    }
    m->next = NULL;
    m->len = len;
    m->chlen = chlen;
    m->flen = flen;
    char *p = m->buf;
    memcpy(p, c->conf->channel_prefix, plen);
    memcpy(p + plen, h->name, nlen);
    p = frame_head(c, p + chlen);
    if (len)
        memcpy(p, data, len);
    if (c->tail)
        c->tail->next = m;
    else
        c->head = m;
    c->tail = m;
    if (!c->unsent)
        c->unsent = m;
    c->queued_msgs++;
    c->queued_bytes += len;
    send_unsent(c);
}

/* ---- send NODE:ID -------------------------------------------------------------- */

static void finish(direct *x, int outcome, const char *error)
{
    for (direct **pp = &x->c->directs; *pp; pp = &(*pp)->next) {
        if (*pp == x) {
            *pp = x->next;
            break;
        }
    }
    if (outcome > 0)
        x->c->direct_published++;
    if (x->fn)
        x->fn(x->arg, outcome, error);
    free(x);
}

static void on_direct_published(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    redisReply *reply = r;
    if (!reply)
        finish(priv, -1, "the link to Redis went down before it answered");
    else if (reply->type == REDIS_REPLY_ERROR)
        finish(priv, -1, reply->str);
    else
        finish(priv, 1, NULL);
}

static void on_numsub(redisAsyncContext *ac, void *r, void *priv)
{
    direct *x = priv;
    redisReply *reply = r;
    tn_cluster *c = x->c;
    if (!reply) {
        finish(x, -1, "the link to Redis went down before it answered");
    } else if (reply->type == REDIS_REPLY_ERROR) {
        finish(x, -1, reply->str);
    } else if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
               reply->element[1]->type != REDIS_REPLY_INTEGER) {
        finish(x, -1, "unexpected answer to PUBSUB NUMSUB");
    } else if (reply->element[1]->integer == 0) {
        finish(x, 0, NULL);
    } else if (ac != c->pub) {
        finish(x, -1, "the link to Redis went down before it answered");
    } else {
        const char *argv[3] = { "PUBLISH", x->buf, x->buf + x->chlen };
        size_t lens[3] = { 7, x->chlen, x->flen };
        if (redisAsyncCommandArgv(c->pub, on_direct_published, x, 3, argv, lens) != REDIS_OK)
            finish(x, -1, "the link to Redis is going down");
    }
}

int tn_cluster_send_to(tn_daemon *d, const char *node, uint64_t id, const char *msg, size_t len,
                       tn_cluster_sent_fn fn, void *arg, char *err, size_t errlen)
{
    tn_cluster *c = d->cluster;
    if (!c) {
        snprintf(err, errlen, "send NODE:ID needs [cluster] (connection ids are per instance)");
        return -1;
    }
    if (c->state != LINK_CONNECTED || !c->pub) {
        snprintf(err, errlen, "not published: the link to Redis is not connected (stats shows why)");
        return -1;
    }
    size_t plen = strlen(c->conf->channel_prefix), nlen = strlen(node);
    size_t chlen = plen + 1 + nlen, flen = 2 + c->node_len + 8 + len;
    direct *x = malloc(sizeof(*x) + chlen + flen);
    if (!x) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    x->c = c;
    x->fn = fn;
    x->arg = arg;
    x->chlen = chlen;
    x->flen = flen;
    char *p = x->buf;
    memcpy(p, c->conf->channel_prefix, plen);
    p[plen] = '@';
    memcpy(p + plen + 1, node, nlen);
    p = frame_head(c, p + chlen);
    for (int i = 0; i < 8; i++)
        p[i] = (char)(id >> (56 - 8 * i));
    if (len)
        memcpy(p + 8, msg, len);
    x->next = c->directs;
    c->directs = x;
    const char *argv[3] = { "PUBSUB", "NUMSUB", x->buf };
    size_t lens[3] = { 6, 6, chlen };
    if (redisAsyncCommandArgv(c->pub, on_numsub, x, 3, argv, lens) != REDIS_OK) {
        x->fn = NULL;
        finish(x, -1, NULL);
        snprintf(err, errlen, "not published: the link to Redis is going down");
        return -1;
    }
    return 0;
}

void tn_cluster_forget(tn_daemon *d, void *arg)
{
    for (direct *x = d->cluster ? d->cluster->directs : NULL; x; x = x->next)
        if (x->arg == arg)
            x->fn = NULL;
}

/* A message on our own channel: for one connection of this node. */
static void direct_received(tn_cluster *c, const unsigned char *f, size_t flen)
{
    if (flen < 2 || f[0] != FRAME_VERSION || flen < 2 + (size_t)f[1] + 8) {
        c->invalid++;
        return;
    }
    size_t idlen = f[1];
    const unsigned char *p = f + 2 + idlen;
    uint64_t id = 0;
    for (int i = 0; i < 8; i++)
        id = id << 8 | p[i];
    if (!tn_workers_owns_id(c->d, id))
        return; /* another worker's connection: that worker delivers it */
    tn_conn_base *k = tn_conn_find(c->d, id);
    size_t mlen = flen - 2 - idlen - 8;
    if (!k || k->kind->send(k, (const char *)p + 8, mlen) < 0) {
        c->direct_undeliverable++;
        tn_info("cluster: a message from node %.*s for connection %llu: %s", (int)idlen, (const char *)f + 2,
                (unsigned long long)id, k ? "it is not reading (output over max_output)" : "no such connection");
        return;
    }
    c->direct_delivered++;
}

/* ---- the link -------------------------------------------------------------- */

static void set_state(tn_cluster *c, int state)
{
    if (c->state != state) {
        c->state = state;
        c->since_ms = tn_wall_ms();
    }
}

static void arm_timer(tn_cluster *c, int64_t ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evtimer_add(c->timer_ev, &tv);
}

/* Something failed: remember why, tear down outside hiredis's callbacks. */
static void link_failed(tn_cluster *c, const char *why)
{
    if (c->resetting)
        return;
    c->resetting = true;
    if (strcmp(why, c->last_error) != 0 || c->state == LINK_CONNECTED)
        tn_warn("cluster: Redis %s:%d: %s", c->addr.ip, c->addr.port, why);
    snprintf(c->last_error, sizeof(c->last_error), "%s", why);
    tn_before_sleep_due(c->d, &c->reset_job);
}

static void drop_contexts(tn_cluster *c)
{
    redisAsyncContext *pub = c->pub, *sub = c->sub;
    c->pub = c->sub = NULL;
    c->pub_ready = c->sub_ready = false;
    /* in-flight messages come back through on_published with no reply */
    if (pub)
        redisAsyncFree(pub);
    if (sub)
        redisAsyncFree(sub);
    c->unsent = c->head;
}

static void on_reset(void *arg)
{
    tn_cluster *c = arg;
    c->resetting = false;
    drop_contexts(c);
    set_state(c, LINK_DOWN);
    evtimer_del(c->timer_ev);
    tn_debug("cluster: next attempt in %lldms", (long long)c->backoff_ms);
    arm_timer(c, c->backoff_ms);
    c->backoff_ms = c->backoff_ms * 2 > c->conf->reconnect_max ? c->conf->reconnect_max : c->backoff_ms * 2;
}

static void check_ready(tn_cluster *c)
{
    if (!c->pub_ready || !c->sub_ready || c->state == LINK_CONNECTED)
        return;
    evtimer_del(c->timer_ev);
    set_state(c, LINK_CONNECTED);
    c->backoff_ms = BACKOFF_MIN_MS;
    c->warned_full = c->warned_big = false;
    c->last_error[0] = '\0';
    tn_info("cluster: connected to Redis %s:%d as node %s (%zu message(s) queued)", c->addr.ip, c->addr.port, c->node,
            c->queued_msgs);
    send_unsent(c);
}

static tn_cluster *owner(const redisAsyncContext *ac)
{
    return ac->data;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    tn_cluster *c = owner(ac);
    bool pub = ac == c->pub, sub = ac == c->sub;
    if (!pub && !sub)
        return;
    if (status != REDIS_OK) {
        char why[256];
        snprintf(why, sizeof(why), "cannot connect: %s", ac->errstr);
        /* hiredis frees it after this callback */
        if (pub)
            c->pub = NULL;
        else
            c->sub = NULL;
        link_failed(c, why);
        return;
    }
    if (pub && !*c->conf->password) {
        c->pub_ready = true;
        check_ready(c);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    tn_cluster *c = owner(ac);
    if (ac == c->pub)
        c->pub = NULL;
    else if (ac == c->sub)
        c->sub = NULL;
    else
        return; /* one we dropped ourselves */
    char why[256];
    snprintf(why, sizeof(why), "connection lost: %s", ac->err ? ac->errstr : "closed by the server");
    link_failed(c, why);
}

static void on_auth(redisAsyncContext *ac, void *r, void *priv)
{
    tn_cluster *c = priv;
    redisReply *reply = r;
    if (!reply || (ac != c->pub && ac != c->sub))
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        char why[256];
        c->errors++;
        snprintf(why, sizeof(why), "AUTH refused: %s", reply->str);
        link_failed(c, why);
        return;
    }
    if (ac == c->pub) {
        c->pub_ready = true;
        check_ready(c);
    }
}

static void on_message(redisAsyncContext *ac, void *r, void *priv)
{
    tn_cluster *c = priv;
    redisReply *reply = r;
    if (!reply || ac != c->sub || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    if (strcmp(kind, "psubscribe") == 0) {
        c->sub_ready = true;
        check_ready(c);
        return;
    }
    if (strcmp(kind, "subscribe") == 0)
        return;
    if (strcmp(kind, "message") == 0 && reply->elements == 3 && reply->element[2]->type == REDIS_REPLY_STRING) {
        direct_received(c, (const unsigned char *)reply->element[2]->str, reply->element[2]->len);
        return;
    }
    if (strcmp(kind, "pmessage") != 0 || reply->elements != 4 || reply->element[2]->type != REDIS_REPLY_STRING ||
        reply->element[3]->type != REDIS_REPLY_STRING) {
        c->invalid++;
        return;
    }
    const redisReply *ch = reply->element[2], *pl = reply->element[3];
    size_t prefix_len = strlen(c->conf->channel_prefix);
    if (ch->len > prefix_len && ch->str[prefix_len] == '@')
        return; /* a node's own channel: its SUBSCRIBE delivers it there */
    const unsigned char *f = (const unsigned char *)pl->str;
    size_t flen = pl->len;
    if (flen < 2 || f[0] != FRAME_VERSION || flen < 2 + (size_t)f[1]) {
        c->invalid++;
        return;
    }
    size_t idlen = f[1];
    if (idlen == c->node_len && memcmp(f + 2, c->node, idlen) == 0)
        return; /* our own, delivered locally already */
    size_t plen = strlen(c->conf->channel_prefix);
    const char *name = ch->str + plen;
    /* a name with a NUL inside names no handler */
    tn_handler *h = ch->len > plen && strlen(name) == ch->len - plen ? tn_registry_find(c->d->registry, name) : NULL;
    if (!h || h->ops != &tn_broadcast_ops) {
        c->unroutable++;
        return;
    }
    c->received++;
    tn_broadcast_deliver(h, (const char *)f + 2 + idlen, flen - 2 - idlen);
}

static redisAsyncContext *open_context(tn_cluster *c, char *why, size_t whylen)
{
    redisAsyncContext *ac = redisAsyncConnect(c->addr.ip, c->addr.port);
    if (!ac) {
        snprintf(why, whylen, "cannot connect: out of memory");
        return NULL;
    }
    if (ac->err) {
        snprintf(why, whylen, "cannot connect: %s", ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = c;
    if (redisLibeventAttach(ac, c->d->base) != REDIS_OK) {
        snprintf(why, whylen, "cannot connect: event setup failed");
        redisAsyncFree(ac);
        return NULL;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    const char *pw = c->conf->password;
    if (*pw)
        redisAsyncCommand(ac, on_auth, c, "AUTH %b", pw, strlen(pw));
    return ac;
}

/* Starts an attempt: both connections, AUTH and PSUBSCRIBE pipelined
 * behind the connect (hiredis sends them once it completes). */
static void link_start(tn_cluster *c)
{
    char why[256];
    set_state(c, LINK_CONNECTING);
    c->pub = open_context(c, why, sizeof(why));
    c->sub = c->pub ? open_context(c, why, sizeof(why)) : NULL;
    if (!c->sub) {
        link_failed(c, why);
        return;
    }
    redisAsyncCommand(c->sub, on_message, c, "PSUBSCRIBE %b", c->pattern, strlen(c->pattern));
    /* after it: the link counts as up on the PSUBSCRIBE's confirmation */
    redisAsyncCommand(c->sub, on_message, c, "SUBSCRIBE %b@%b", c->conf->channel_prefix,
                      strlen(c->conf->channel_prefix), c->node, c->node_len);
    arm_timer(c, CONNECT_TIMEOUT_MS);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tn_cluster *c = arg;
    if (c->state == LINK_CONNECTING) {
        link_failed(c, "connect timeout");
        return;
    }
    c->reconnects++;
    link_start(c);
}

/* ---- configuration ------------------------------------------------------------ */

int tn_cluster_resolve(tn_daemon *d, const tn_cluster_conf *conf, tn_cluster_addr *addr, char *err, size_t errlen)
{
    memset(addr, 0, sizeof(*addr));
    if (!conf->redis || (d->cluster && tn_cluster_conf_equal(conf, d->cluster->conf)))
        return 0;
    char host[256], port[16];
    int p;
    if (tn_parse_listen(conf->redis, host, sizeof(host), &p) < 0) {
        snprintf(err, errlen, "[cluster] redis: bad address \"%s\"", conf->redis);
        return -1;
    }
    snprintf(port, sizeof(port), "%d", p);
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "[cluster] redis: cannot resolve \"%s\": %s", host, gai_strerror(rc));
        return -1;
    }
    rc = getnameinfo(res->ai_addr, res->ai_addrlen, addr->ip, sizeof(addr->ip), NULL, 0, NI_NUMERICHOST);
    freeaddrinfo(res);
    if (rc != 0) {
        snprintf(err, errlen, "[cluster] redis: cannot resolve \"%s\": %s", host, gai_strerror(rc));
        return -1;
    }
    addr->port = p;
    return 0;
}

/* Redis glob patterns treat * ? [ ] \ specially; the prefix is literal. */
static char *make_pattern(const char *prefix)
{
    size_t n = strlen(prefix);
    char *p = malloc(2 * n + 2), *o = p;
    if (!p)
        return NULL;
    for (const char *s = prefix; *s; s++) {
        if (strchr("*?[]\\", *s))
            *o++ = '\\';
        *o++ = *s;
    }
    *o++ = '*';
    *o = '\0';
    return p;
}

void tn_cluster_node_id(const tn_daemon *d, const tn_cluster_conf *conf, char *buf, size_t len)
{
    if (*conf->node_id) {
        snprintf(buf, len, "%s", conf->node_id);
        return;
    }
    char host[200];
    if (gethostname(host, sizeof(host)) < 0)
        snprintf(host, sizeof(host), "tusknetd");
    host[sizeof(host) - 1] = '\0';
    /* worker processes are one node: the master's pid (workers.h) */
    snprintf(buf, len, "%s:%ld", host, tn_workers_daemon_pid(d));
}

bool tn_cluster_own_node(const tn_daemon *d, const char *node, size_t len)
{
    if (!d->cfg || !d->cfg->cluster.redis)
        return false;
    char own[256];
    tn_cluster_node_id(d, &d->cfg->cluster, own, sizeof(own));
    return strlen(own) == len && memcmp(own, node, len) == 0;
}

static void set_node(tn_cluster *c)
{
    tn_cluster_node_id(c->d, c->conf, c->node, sizeof(c->node));
    c->node_len = strlen(c->node);
}

void tn_cluster_apply(tn_daemon *d, const tn_cluster_conf *conf, const tn_cluster_addr *addr)
{
    tn_cluster *c = d->cluster;
    if (!conf->redis) {
        if (c)
            tn_info("cluster: [cluster] removed, leaving Redis");
        tn_cluster_free(d);
        return;
    }
    if (c && tn_cluster_conf_equal(conf, c->conf)) {
        c->conf = conf; /* the old config goes away */
        return;
    }
    char *pattern = make_pattern(conf->channel_prefix);
    if (!c && pattern) {
        c = calloc(1, sizeof(*c));
        if (c) {
            c->d = d;
            c->timer_ev = evtimer_new(d->base, on_timer, c);
        }
        if (c && !c->timer_ev) {
            free(c);
            c = NULL;
        }
        if (c) {
            c->reset_job.run = on_reset;
            c->reset_job.arg = c;
            tn_before_sleep_add(d, &c->reset_job);
        }
    }
    if (!c || !pattern) {
        free(pattern);
        tn_error("cluster: out of memory, running without Redis");
        return;
    }
    if (d->cluster)
        tn_info("cluster: [cluster] changed, reconnecting");
    /* a changed section starts over; queued messages go to the new link */
    drop_contexts(c);
    c->reset_job.due = false; /* a teardown the old link asked for is moot */
    c->resetting = false;
    evtimer_del(c->timer_ev);
    free(c->pattern);
    c->pattern = pattern;
    c->conf = conf;
    c->addr = *addr;
    set_node(c);
    c->backoff_ms = BACKOFF_MIN_MS;
    c->last_error[0] = '\0';
    c->state = -1;
    d->cluster = c;
    link_start(c);
}

void tn_cluster_free(tn_daemon *d)
{
    tn_cluster *c = d->cluster;
    if (!c)
        return;
    drop_contexts(c);
    while (c->head) {
        cmsg *m = c->head;
        c->head = m->next;
        free(m);
    }
    event_free(c->timer_ev);
    tn_before_sleep_remove(d, &c->reset_job);
    free(c->pattern);
    free(c);
    d->cluster = NULL;
}

/* ---- reporting ---------------------------------------------------------------- */

void tn_cluster_stats_json(tn_daemon *d, tn_json *j)
{
    tn_cluster *c = d->cluster;
    if (!c)
        return;
    char redis[96];
    snprintf(redis, sizeof(redis), strchr(c->addr.ip, ':') ? "[%s]:%d" : "%s:%d", c->addr.ip, c->addr.port);
    tn_json_open(j, "cluster", '{');
    tn_json_str(j, "redis", redis);
    tn_json_str(j, "node_id", c->node);
    tn_json_str(j, "state", state_names[c->state]);
    tn_json_time(j, "since", c->since_ms);
    tn_json_u64(j, "published", c->published);
    tn_json_u64(j, "received", c->received);
    tn_json_u64(j, "lost", c->lost);
    tn_json_u64(j, "queued", c->queued_msgs);
    tn_json_u64(j, "queued_bytes", c->queued_bytes);
    tn_json_u64(j, "errors", c->errors);
    tn_json_u64(j, "reconnects", c->reconnects);
    tn_json_u64(j, "unroutable", c->unroutable);
    tn_json_u64(j, "invalid", c->invalid);
    tn_json_u64(j, "direct_published", c->direct_published);
    tn_json_u64(j, "direct_delivered", c->direct_delivered);
    tn_json_u64(j, "direct_undeliverable", c->direct_undeliverable);
    tn_json_str(j, "last_error", *c->last_error ? c->last_error : NULL);
    tn_json_close(j, '}');
}

void tn_cluster_prometheus(tn_daemon *d, struct evbuffer *out)
{
    tn_cluster *c = d->cluster;
    if (!c)
        return;
    evbuffer_add_printf(out,
                        "# HELP tusknet_cluster_up Whether the Redis link is connected.\n"
                        "# TYPE tusknet_cluster_up gauge\n"
                        "tusknet_cluster_up %d\n"
                        "# HELP tusknet_cluster_messages_total Room messages published to, received from, or lost "
                        "on the way to Redis.\n"
                        "# TYPE tusknet_cluster_messages_total counter\n"
                        "tusknet_cluster_messages_total{outcome=\"published\"} %llu\n"
                        "tusknet_cluster_messages_total{outcome=\"received\"} %llu\n"
                        "tusknet_cluster_messages_total{outcome=\"lost\"} %llu\n"
                        "# HELP tusknet_cluster_queued_messages Messages waiting for Redis.\n"
                        "# TYPE tusknet_cluster_queued_messages gauge\n"
                        "tusknet_cluster_queued_messages %zu\n"
                        "# HELP tusknet_cluster_reconnects_total Attempts to reach Redis again after a failure.\n"
                        "# TYPE tusknet_cluster_reconnects_total counter\n"
                        "tusknet_cluster_reconnects_total %llu\n",
                        c->state == LINK_CONNECTED, (unsigned long long)c->published,
                        (unsigned long long)c->received, (unsigned long long)c->lost, c->queued_msgs,
                        (unsigned long long)c->reconnects);
}
