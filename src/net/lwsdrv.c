/* SPDX-License-Identifier: MIT */
/* lwsdrv.c - libwebsockets driven from the libevent loop ("direct drive").
 *
 *  - lws runs on its default poll backend but never polls: its pollfd table
 *    (pt->fds, allocated once at context creation) is found by interposing
 *    poll() during lws_service() calls, which this file makes itself;
 *  - each adopted socket gets one persistent level-triggered EV_READ event
 *    that calls lws_service_fd() with POLLIN, and one one-shot EV_WRITE event;
 *  - lws asks protocols[0] for LWS_CALLBACK_GET_THREAD_ID every time a
 *    socket's wanted events change (lib/core-net/pollfd.c). We answer a
 *    constant (so lws never cancels a poll that does not exist) and use the
 *    call as the hook: the wanted events are read from the table. POLLOUT
 *    newly wanted: if lws holds nothing partially written the socket is
 *    surely writable, so it is serviced at the end of the pass without a
 *    syscall; otherwise a real EV_WRITE is armed;
 *  - once per loop pass with lws activity (a before-sleep job) a "tick" runs
 *    lws_service() with poll() faked: lws services its ripe timers (sul),
 *    tells us its next deadline through the poll timeout (one libevent timer
 *    is set to it), and when lws_service_adjust_timeout() says work is
 *    pending (rx buffered, extension draining) the fake poll reports
 *    activity so lws runs its forced service;
 *  - the events are freed on LWS_CALLBACK_WSI_DESTROY;
 *  - lws reads a socket's bytes with recv(), interposed too: the front end
 *    reads them (its frame check sits there).
 *
 * This leans on 4.1.x internals; tn_lws_init() refuses other versions and
 * the integration tests cover the behaviour. */
#ifdef _FORTIFY_SOURCE
#undef _FORTIFY_SOURCE
#endif
#include "net/lwsdrv.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "log.h"

#define WS_TID 1 /* what GET_THREAD_ID answers */
#define RX_CHUNK 1024 /* per-connection lws rx buffer: 10,000 idle WebSockets at ~3.4 KiB each */

enum { PASS_FLUSH, PASS_WRITABLE, PASS_LISTS };

typedef struct vhost {
    struct vhost *next;
    int ping_s, hangup_s;
    struct lws_vhost *vh;
    struct lws_protocols *protocols;
    lws_retry_bo_t retry;
    char name[24]; /* lws keeps the pointer, not a copy */
} vhost;

/* The driver's state. It is file-static rather than a member of the daemon
 * because the poll() and recv() interposers below, called by lws with no
 * context argument, must reach it; there is one lws context per process. */
static struct {
    tn_daemon *d;
    const tn_lws_hooks *hooks;
    struct lws_context *ctx;
    struct lws_pollfd *fds; /* lws's pollfd table */
    tn_pass_job post;       /* on_post, before the loop sleeps */
    struct event *timer_ev; /* lws's next deadline */
    int spins;
    uint64_t callbacks; /* lws callbacks so far: a forced tick made progress */
    tn_lws_sock *pass[PASS_LISTS]; /* sockets on_post services once per pass */
    tn_lws_sock *adopting;
    vhost *vhosts;
    bool initializing;
    /* the poll() interposer */
    volatile int capture;
    int fake_n;
    int cap_timeout;
    struct lws_pollfd *cap_fds;
    unsigned cap_nfds;
    tn_lws_sock **foreign; /* lws's own fds */
    unsigned nforeign;
    tn_lws_sock **byfd;    /* sockets by fd, for the recv() interposer */
    size_t nbyfd;
} g;

/* ---- interposers ---------------------------------------------------------------- */

/* lws calls poll() only from lws_service(), which we call only to tick; any
 * other caller in the process gets the real thing (through ppoll, a different
 * symbol). */
int poll(struct pollfd *fds, nfds_t nfds, int timeout)
{
    if (g.capture) {
        g.cap_fds = fds;
        g.cap_nfds = (unsigned)nfds;
        g.cap_timeout = timeout;
        return g.fake_n;
    }
    struct timespec ts, *tp = NULL;
    if (timeout >= 0) {
        ts.tv_sec = timeout / 1000;
        ts.tv_nsec = (long)(timeout % 1000) * 1000000L;
        tp = &ts;
    }
    return ppoll(fds, nfds, tp, NULL);
}

/* lws reads a socket's bytes with recv() and nothing else, and only from
 * calls this file makes; other callers and sockets get the real thing
 * (through recvfrom, a different symbol). */
ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    tn_lws_sock *s = fd >= 0 && (size_t)fd < g.nbyfd ? g.byfd[fd] : NULL;
    if (!s || flags || s->destroyed)
        return recvfrom(fd, buf, len, flags, NULL, NULL);
    return g.hooks->recv(s, buf, len);
}

/* ---- the end of the pass ---------------------------------------------------------- */

void tn_lws_wake(void)
{
    if (g.post.run)
        tn_before_sleep_due(g.d, &g.post);
}

static void pass_add(tn_lws_sock *s, int list)
{
    if (s->on_pass[list])
        return;
    s->on_pass[list] = true;
    s->pass_next[list] = g.pass[list];
    g.pass[list] = s;
    tn_lws_wake();
}

static void pass_remove(tn_lws_sock *s, int list)
{
    if (!s->on_pass[list])
        return;
    for (tn_lws_sock **pp = &g.pass[list]; *pp; pp = &(*pp)->pass_next[list])
        if (*pp == s) {
            *pp = s->pass_next[list];
            break;
        }
    s->on_pass[list] = false;
}

/* Runs FN for the sockets on LIST; one listed again meanwhile waits for
 * the next pass. */
static void pass_run(int list, void (*fn)(tn_lws_sock *s))
{
    tn_lws_sock *unserviced = g.pass[list];
    g.pass[list] = NULL;
    while (unserviced) {
        tn_lws_sock *s = unserviced;
        unserviced = s->pass_next[list];
        s->on_pass[list] = false;
        if (!s->destroyed)
            fn(s);
    }
}

void tn_lws_flush_later(tn_lws_sock *s)
{
    pass_add(s, PASS_FLUSH);
}

bool tn_lws_flush_listed(const tn_lws_sock *s)
{
    return s->on_pass[PASS_FLUSH];
}

bool tn_lws_holding(void)
{
    return lws_service_adjust_timeout(g.ctx, 1, 0) == 0;
}

/* ---- events ------------------------------------------------------------------------- */

/* The wanted events of S's fd in lws's table; -1 if it is not there. Live
 * entries are contiguous from 0 (lws moves the last one into a freed slot
 * and marks the old last slot fd -1; never-used slots are zero), so the
 * search stops at the first slot past the end. */
static int wanted(tn_lws_sock *s)
{
    if (!g.fds)
        return -1;
    if (s->fdpos >= 0 && g.fds[s->fdpos].fd == s->fd)
        return g.fds[s->fdpos].events;
    for (int i = 0;; i++) {
        int fd = g.fds[i].fd;
        if (fd == s->fd) {
            s->fdpos = i;
            return g.fds[i].events;
        }
        if (fd == -1 || (fd == 0 && !g.fds[i].events))
            return -1;
    }
}

/* Makes the read and write events follow what lws wants for S. */
static void sync_events(tn_lws_sock *s)
{
    if (s->destroyed || !s->rev)
        return;
    int ev = wanted(s);
    if (ev < 0)
        return;
    bool in = ev & POLLIN, out = ev & POLLOUT;
    if (in != s->want_in) {
        if (in)
            event_add(s->rev, NULL);
        else
            event_del(s->rev);
        s->want_in = in;
    }
    if (out && !s->want_out) {
        if (s->wsi && !s->foreign && !lws_partial_buffered(s->wsi)) {
            /* writable unless proven otherwise: no syscall, no libevent
             * activation; on_post writes for every such socket once the
             * pass's reads are done */
            pass_add(s, PASS_WRITABLE);
        } else {
            event_add(s->wev, NULL);
        }
    } else if (!out && s->want_out) {
        if (!s->on_pass[PASS_WRITABLE])
            event_del(s->wev);
    }
    s->want_out = out;
}

static void service(tn_lws_sock *s, short revents)
{
    struct lws_pollfd p = { .fd = s->fd, .events = (short)(POLLIN | POLLOUT), .revents = revents };
    lws_service_fd(g.ctx, &p);
    tn_lws_wake();
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    service(arg, POLLIN);
}

static void write_ready(tn_lws_sock *s)
{
    int ev = wanted(s);
    if (ev < 0 || !(ev & POLLOUT)) {
        s->want_out = false;
        return;
    }
    s->want_out = false; /* the trigger is used up */
    service(s, POLLOUT);
    if (!s->destroyed)
        sync_events(s); /* still wanted (partial write): trigger again */
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    write_ready(arg);
}

static void tick(bool force)
{
    g.capture = 1;
    g.fake_n = force ? 1 : 0;
    g.cap_timeout = -1;
    lws_service(g.ctx, 0);
    g.capture = 0;
}

static void on_post(void *arg)
{
    (void)arg;
    if (!g.ctx)
        return;
    /* after all of the pass's reads: the front end's flushes, then POLLOUT */
    pass_run(PASS_FLUSH, g.hooks->flush);
    pass_run(PASS_WRITABLE, write_ready);
    bool force = tn_lws_holding();
    uint64_t before = g.callbacks;
    tick(force);
    int ms = g.cap_timeout;
    if (tn_lws_holding()) {
        /* still pending (e.g. an inflated message drained chunk by chunk):
         * come back next pass, or after a breath if lws makes no progress */
        if (g.callbacks != before)
            g.spins = 0;
        if (++g.spins < 16) {
            tn_lws_wake();
            ms = -1;
        } else {
            ms = 1;
        }
    } else {
        g.spins = 0;
    }
    if (ms >= 0) {
        if (ms > 3600 * 1000)
            ms = 3600 * 1000;
        struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
        event_add(g.timer_ev, &tv);
    }
}

/* lws's next deadline: its timers are serviced at the end of the pass */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    tn_lws_wake();
}

/* ---- sockets ---------------------------------------------------------------------- */

/* Lists S in g.byfd, where the recv() interposer finds it. */
static bool watch_fd(tn_lws_sock *s)
{
    size_t fd = (size_t)s->fd;
    if (fd >= g.nbyfd) {
        size_t n = g.nbyfd ? g.nbyfd : 64;
        while (n <= fd)
            n *= 2;
        tn_lws_sock **v = realloc(g.byfd, n * sizeof(*v));
        if (!v)
            return false;
        memset(v + g.nbyfd, 0, (n - g.nbyfd) * sizeof(*v));
        g.byfd = v;
        g.nbyfd = n;
    }
    g.byfd[fd] = s;
    return true;
}

int tn_lws_sock_open(tn_lws_sock *s, evutil_socket_t fd)
{
    s->fd = fd;
    s->fdpos = -1;
    s->rev = event_new(g.d->base, fd, EV_READ | EV_PERSIST, on_read, s);
    s->wev = event_new(g.d->base, fd, EV_WRITE, on_write, s);
    if (!s->rev || !s->wev || !watch_fd(s)) {
        tn_lws_sock_close(s);
        return -1;
    }
    return 0;
}

void tn_lws_sock_close(tn_lws_sock *s)
{
    s->destroyed = true;
    s->wsi = NULL;
    pass_remove(s, PASS_FLUSH);
    pass_remove(s, PASS_WRITABLE);
    if (s->rev)
        event_free(s->rev);
    if (s->wev)
        event_free(s->wev);
    s->rev = s->wev = NULL;
    if (s->fd >= 0 && (size_t)s->fd < g.nbyfd && g.byfd[s->fd] == s)
        g.byfd[s->fd] = NULL;
}

struct lws *tn_lws_adopt(tn_lws_sock *s, struct lws_vhost *vh, const char *buf, size_t len)
{
    s->want_in = event_add(s->rev, NULL) == 0;
    g.adopting = s;
    struct lws *wsi = lws_adopt_socket_vhost_readbuf(vh, s->fd, buf, len);
    g.adopting = NULL;
    if (!wsi)
        return NULL;
    if (!s->wsi && !s->destroyed) {
        s->wsi = wsi;
        lws_set_opaque_user_data(wsi, s);
    }
    if (!s->destroyed)
        sync_events(s);
    tn_lws_wake();
    return wsi;
}

/* The socket of WSI; lws calls back during adoption, before it returns the
 * wsi that tn_lws_adopt() would have marked. */
static tn_lws_sock *sock_of(struct lws *wsi)
{
    if (!wsi)
        return NULL;
    tn_lws_sock *s = lws_get_opaque_user_data(wsi);
    if (!s && g.adopting && !g.adopting->wsi && lws_get_socket_fd(wsi) == g.adopting->fd) {
        s = g.adopting;
        s->wsi = wsi;
        lws_set_opaque_user_data(wsi, s);
    }
    return s;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    (void)user;
    g.callbacks++;
    if (reason == LWS_CALLBACK_GET_THREAD_ID) {
        tn_lws_sock *s = lws_get_opaque_user_data(wsi);
        if (!s)
            s = sock_of(wsi);
        if (s && !s->destroyed)
            sync_events(s);
        return WS_TID;
    }
    tn_lws_sock *s = sock_of(wsi);
    if (reason == LWS_CALLBACK_WSI_DESTROY && s)
        lws_set_opaque_user_data(wsi, NULL);
    return g.hooks->callback(s, wsi, reason, in, len);
}

/* ---- logging -------------------------------------------------------------------- */

static void log_emit(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    if (g.initializing && level == LLL_ERR)
        tn_warn("libwebsockets: %.*s", (int)n, line);
    else
        tn_debug("libwebsockets: %.*s", (int)n, line);
}

static void set_log_level(int level)
{
    /* lws logs errors during normal adoption: they are debug lines here */
    int lws = level >= TN_LOG_DEBUG ? (LLL_ERR | LLL_WARN | LLL_NOTICE) : g.initializing ? LLL_ERR : 0;
    lws_set_log_level(lws, log_emit);
}

/* ---- vhosts ------------------------------------------------------------------------- */

static const struct lws_extension extensions[] = {
    { "permessage-deflate", lws_extension_callback_pm_deflate,
      "permessage-deflate; client_no_context_takeover; client_max_window_bits" },
    { NULL, NULL, NULL },
};

static const struct lws_protocols proto0 = {
    .name = "tusknet",
    .callback = callback,
    .per_session_data_size = 0,
    .rx_buffer_size = RX_CHUNK,
};

static int secs_up(int64_t ms)
{
    if (ms <= 0)
        return 0;
    int64_t s = (ms + 999) / 1000;
    return s > 65535 ? 65535 : (int)s;
}

/* One per keepalive policy: lws 4.1.6 sets the ping/hangup policy per vhost. */
struct lws_vhost *tn_lws_vhost(int64_t ping_ms, int64_t pong_ms)
{
    int ping = secs_up(ping_ms);
    int hangup = ping ? ping + (secs_up(pong_ms) ? secs_up(pong_ms) : 1) : 0;
    for (vhost *v = g.vhosts; v; v = v->next)
        if (v->ping_s == ping && v->hangup_s == hangup)
            return v->vh;
    vhost *v = calloc(1, sizeof(*v));
    if (!v)
        return NULL;
    v->ping_s = ping;
    v->hangup_s = hangup;
    v->protocols = calloc(2, sizeof(*v->protocols));
    if (!v->protocols) {
        free(v);
        return NULL;
    }
    v->protocols[0] = proto0;
    v->retry.secs_since_valid_ping = (uint16_t)ping;
    v->retry.secs_since_valid_hangup = (uint16_t)hangup;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    snprintf(v->name, sizeof(v->name), "tn-ping%d-hangup%d", ping, hangup);
    info.vhost_name = v->name;
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = v->protocols;
    info.options = 0;
    info.extensions = extensions; /* the front end leaves the offer out where it is off */
    if (ping)
        info.retry_and_idle_policy = &v->retry;
    info.gid = (gid_t)-1;
    info.uid = (uid_t)-1;
    v->vh = lws_create_vhost(g.ctx, &info);
    if (!v->vh) {
        free(v->protocols);
        free(v);
        return NULL;
    }
    v->next = g.vhosts;
    g.vhosts = v;
    return v->vh;
}

/* ---- lifetime ---------------------------------------------------------------------- */

static void watch_foreign(void)
{
    /* fds lws opened for itself (its event pipe) are serviced like ours */
    g.foreign = calloc(g.cap_nfds ? g.cap_nfds : 1, sizeof(*g.foreign));
    if (!g.foreign)
        return;
    for (unsigned i = 0; i < g.cap_nfds; i++) {
        tn_lws_sock *s = calloc(1, sizeof(*s));
        if (!s)
            return;
        g.foreign[g.nforeign++] = s;
        s->foreign = true;
        s->fd = g.fds[i].fd;
        s->fdpos = (int)i;
        s->rev = event_new(g.d->base, s->fd, EV_READ | EV_PERSIST, on_read, s);
        s->wev = event_new(g.d->base, s->fd, EV_WRITE, on_write, s);
        if (s->rev && event_add(s->rev, NULL) == 0)
            s->want_in = true;
        tn_debug("libwebsockets internal fd %d watched", s->fd);
    }
}

int tn_lws_init(tn_daemon *d, const tn_lws_hooks *hooks, int64_t ping_ms, int64_t pong_ms, char *err, size_t errlen)
{
    if (g.ctx)
        return 0;
    const char *ver = lws_get_library_version();
    if (strncmp(ver, "4.1.", 4) != 0) {
        snprintf(err, errlen, "libwebsockets %s is not supported: the WebSocket front end needs 4.1.x", ver);
        return -1;
    }
    memset(&g, 0, sizeof(g));
    g.d = d;
    g.hooks = hooks;
    g.initializing = true;
    set_log_level(tn_log_get_level());
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.gid = (gid_t)-1;
    info.uid = (uid_t)-1;
    info.count_threads = 1;
    info.max_http_header_data = TN_LWS_HEAD_MAX;
    info.max_http_header_pool = 256;
    info.timeout_secs = 20;
    g.ctx = lws_create_context(&info);
    if (!g.ctx) {
        snprintf(err, errlen, "cannot create the libwebsockets context");
        g.initializing = false;
        return -1;
    }
    if (!tn_lws_vhost(ping_ms, pong_ms)) {
        snprintf(err, errlen, "cannot create the libwebsockets vhost");
        lws_context_destroy(g.ctx);
        g.ctx = NULL;
        g.initializing = false;
        return -1;
    }
    g.post.run = on_post;
    tn_before_sleep_add(d, &g.post);
    g.timer_ev = evtimer_new(d->base, on_timer, NULL);
    /* one service call with poll() interposed: sets lws's service thread id
     * (our constant) and shows us the pollfd table */
    tick(false);
    g.fds = g.cap_fds;
    g.initializing = false;
    set_log_level(tn_log_get_level());
    /* `log-level` and reloads change lws's level with ours */
    tn_log_on_level_change(set_log_level);
    if (!g.fds || !g.timer_ev) {
        snprintf(err, errlen, "cannot drive libwebsockets %s from the event loop (poll table not found)", ver);
        tn_lws_free();
        return -1;
    }
    watch_foreign();
    tn_debug("libwebsockets %s driven directly (%u internal fd(s))", ver, g.cap_nfds);
    return 0;
}

bool tn_lws_running(void)
{
    return g.ctx != NULL;
}

const char *tn_lws_version(void)
{
    return lws_get_library_version();
}

void tn_lws_free(void)
{
    tn_log_on_level_change(NULL);
    for (unsigned i = 0; i < g.nforeign; i++) {
        tn_lws_sock *s = g.foreign[i];
        if (s->rev)
            event_free(s->rev);
        if (s->wev)
            event_free(s->wev);
        free(s);
    }
    free(g.foreign);
    g.foreign = NULL;
    g.nforeign = 0;
    if (g.ctx) {
        /* every wsi is destroyed (the front end closes its sockets) */
        lws_context_destroy(g.ctx);
        g.ctx = NULL;
    }
    if (g.post.run)
        tn_before_sleep_remove(g.d, &g.post);
    g.post.run = NULL;
    if (g.timer_ev)
        event_free(g.timer_ev);
    g.timer_ev = NULL;
    while (g.vhosts) {
        vhost *v = g.vhosts;
        g.vhosts = v->next;
        free(v->protocols);
        free(v);
    }
    free(g.byfd);
    g.byfd = NULL;
    g.nbyfd = 0;
    g.fds = NULL;
}
