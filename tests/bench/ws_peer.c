/* SPDX-License-Identifier: MIT */
/* ws_peer.c - the peer for bench.py's WebSocket rows: a libwebsockets echo
 * server on lws's own native poll loop (lws_service(ctx, 0)), nothing else.
 *
 *     ws_peer PORT
 *
 * One protocol (the default, so clients need no Sec-WebSocket-Protocol) echoes
 * every message back, text or binary, from LWS_CALLBACK_SERVER_WRITEABLE.
 * No extensions (permessage-deflate off), no ping policy. Built by bench.py:
 *     gcc -O2 ws_peer.c $(pkg-config --cflags --libs libwebsockets) */
#include <libwebsockets.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

struct msg {
    struct msg *next;
    size_t len;
    int binary;
    unsigned char buf[]; /* LWS_PRE + len */
};

struct pss {
    struct msg *head, *tail; /* complete messages waiting to be echoed */
    unsigned char *rx;       /* a fragmented message being received */
    size_t rx_len;
};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void pss_free(struct pss *p)
{
    while (p->head) {
        struct msg *m = p->head;
        p->head = m->next;
        free(m);
    }
    p->tail = NULL;
    free(p->rx);
    p->rx = NULL;
    p->rx_len = 0;
}

/* Queues a copy of the message DATA for echoing and asks for POLLOUT. */
static int queue_echo(struct pss *p, struct lws *wsi, const void *data, size_t len)
{
    struct msg *m = malloc(sizeof(*m) + LWS_PRE + len);
    if (!m)
        return -1;
    m->next = NULL;
    m->len = len;
    m->binary = lws_frame_is_binary(wsi);
    memcpy(m->buf + LWS_PRE, data, len);
    if (p->tail)
        p->tail->next = m;
    else
        p->head = m;
    p->tail = m;
    lws_callback_on_writable(wsi);
    return 0;
}

static int cb_echo(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    struct pss *p = user;

    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        memset(p, 0, sizeof(*p));
        break;

    case LWS_CALLBACK_RECEIVE: {
        int first = lws_is_first_fragment(wsi), final = lws_is_final_fragment(wsi);
        if (first && final) { /* the common case: one piece, one allocation */
            if (queue_echo(p, wsi, in, len) < 0)
                return -1;
            break;
        }
        unsigned char *nb = realloc(p->rx, p->rx_len + len);
        if (!nb)
            return -1;
        p->rx = nb;
        memcpy(p->rx + p->rx_len, in, len);
        p->rx_len += len;
        if (final) {
            int r = queue_echo(p, wsi, p->rx, p->rx_len);
            free(p->rx);
            p->rx = NULL;
            p->rx_len = 0;
            if (r < 0)
                return -1;
        }
        break;
    }

    case LWS_CALLBACK_SERVER_WRITEABLE: {
        struct msg *m = p->head;
        if (!m)
            break;
        int n = lws_write(wsi, m->buf + LWS_PRE, m->len, m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
        if (n < (int)m->len)
            return -1;
        p->head = m->next;
        if (!p->head)
            p->tail = NULL;
        free(m);
        if (p->head)
            lws_callback_on_writable(wsi);
        break;
    }

    case LWS_CALLBACK_CLOSED:
        pss_free(p);
        break;

    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
    { "echo", cb_echo, sizeof(struct pss), 0, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 }
};

int main(int argc, char **argv)
{
    struct lws_context_creation_info info;
    struct lws_context *ctx;

    if (argc != 2) {
        fprintf(stderr, "usage: ws_peer PORT\n");
        return 1;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    lws_set_log_level(LLL_ERR | LLL_WARN, NULL);

    memset(&info, 0, sizeof(info));
    info.port = atoi(argv[1]);
    info.iface = "127.0.0.1";
    info.protocols = protocols;
    info.options = 0; /* no extensions are set up, so no permessage-deflate */
    ctx = lws_create_context(&info);
    if (!ctx) {
        fprintf(stderr, "ws_peer: lws_create_context failed\n");
        return 1;
    }
    fprintf(stderr, "ws_peer: lws %s listening on 127.0.0.1:%d\n", lws_get_library_version(), info.port);
    while (!stop && lws_service(ctx, 0) >= 0)
        ;
    lws_context_destroy(ctx);
    return 0;
}
