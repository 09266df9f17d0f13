/* SPDX-License-Identifier: MIT */
/* health_check.c - active checks of upstream servers (`health_check`):
 * every interval, a probe per server, an HTTP GET of `path` answered with
 * `expect_status` (over the handler's upstream TLS when it has one), or,
 * without a path, a TCP connect that succeeds. `fall` failed probes in a
 * row take the server down, `rise` good ones bring it back.
 *
 * The probe runs for the server, not for a handler: a reload that keeps the
 * server keeps one probe going, with the newest group's settings. A probe
 * in flight holds a reference on its server; the timer is stopped when the
 * group whose settings it follows goes. */
#include "upstream/proxy.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "log.h"
#include "upstream/http_pool.h"

typedef struct probe {
    tn_upstream_server *s;
    tn_up_conn *uc;
    struct event_base *base;
    char path[512]; /* "" for a TCP check */
    int expect;
    int64_t timeout_ms;
} probe;

static void arm(tn_upstream_server *s);

static void verdict(tn_upstream_server *s, bool ok, const char *why)
{
    tn_upstream_group *g = s->check_group;
    int rise = g ? g->check_rise : 1, fall = g ? g->check_fall : 1;
    const char *handler = g ? g->handler : "?";
    if (ok == !s->check_down) {
        s->check_streak = 0;
        return;
    }
    if (++s->check_streak < (ok ? rise : fall))
        return;
    s->check_streak = 0;
    s->check_down = !ok;
    if (ok)
        tn_info("upstream %s of %s: health check passed %d times, up", s->name, handler, rise);
    else
        tn_warn("upstream %s of %s: health check failed %d times (last: %s), down", s->name, handler, fall, why);
}

static void probe_end(probe *pr, bool ok, const char *why)
{
    tn_upstream_server *s = pr->s;
    if (pr->uc)
        tn_up_conn_free(pr->uc);
    s->probe = NULL;
    free(pr);
    verdict(s, ok, why);
    arm(s);
    tn_upstream_server_unref(s);
}

static void probe_read(struct bufferevent *bev, void *arg)
{
    probe *pr = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_ptr eol = evbuffer_search(in, "\n", 1, NULL);
    if (eol.pos < 0) {
        if (evbuffer_get_length(in) > 1024)
            probe_end(pr, false, "no status line");
        return;
    }
    char line[64] = "";
    evbuffer_copyout(in, line, eol.pos < 63 ? (size_t)eol.pos : 63);
    int major, minor, status;
    if (sscanf(line, "HTTP/%d.%d %3d", &major, &minor, &status) != 3) {
        probe_end(pr, false, "not an HTTP answer");
        return;
    }
    if (status != pr->expect) {
        char why[64];
        snprintf(why, sizeof(why), "status %d", status);
        probe_end(pr, false, why);
        return;
    }
    probe_end(pr, true, NULL);
}

static void probe_event(struct bufferevent *bev, short what, void *arg)
{
    probe *pr = arg;
    if (what & BEV_EVENT_CONNECTED) { /* TLS handshake done */
        bufferevent_set_timeouts(bev, NULL, NULL);
        struct timeval tv = { pr->timeout_ms / 1000, (pr->timeout_ms % 1000) * 1000 };
        bufferevent_set_timeouts(bev, &tv, &tv);
        return;
    }
    probe_end(pr, false, (what & BEV_EVENT_TIMEOUT) ? "timed out" : "connection closed");
}

static void probe_connected(tn_up_conn *uc, int reason, const char *detail)
{
    probe *pr = uc->arg;
    tn_upstream_group *g = pr->s->check_group;
    if (reason >= 0) {
        probe_end(pr, false, detail);
        return;
    }
    if (!pr->path[0]) {
        probe_end(pr, true, NULL);
        return;
    }
    if (!g || tn_http_pool_attach(uc, pr->base, g->check_tls) < 0) {
        probe_end(pr, false, "out of memory");
        return;
    }
    struct timeval tv = { pr->timeout_ms / 1000, (pr->timeout_ms % 1000) * 1000 };
    bufferevent_setcb(uc->bev, probe_read, NULL, probe_event, pr);
    bufferevent_set_timeouts(uc->bev, &tv, &tv);
    bufferevent_enable(uc->bev, EV_READ | EV_WRITE);
    evbuffer_add_printf(bufferevent_get_output(uc->bev),
                        "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tusknetd-health-check\r\nConnection: close\r\n\r\n",
                        pr->path, pr->s->name);
}

static void probe_start(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tn_upstream_server *s = arg;
    tn_upstream_group *g = s->check_group;
    if (!g || s->probe)
        return;
    probe *pr = calloc(1, sizeof(*pr));
    if (!pr) {
        arm(s);
        return;
    }
    pr->s = s;
    tn_upstream_server_ref(s);
    snprintf(pr->path, sizeof(pr->path), "%s", g->check_path ? g->check_path : "");
    pr->expect = g->check_status;
    pr->timeout_ms = g->check_timeout_ms;
    pr->base = g->base;
    s->probe = pr;
    pr->uc = tn_http_pool_connect(g->base, s, pr->timeout_ms, true, probe_connected, pr);
    if (!pr->uc)
        probe_end(pr, false, "no socket");
}

static void arm(tn_upstream_server *s)
{
    tn_upstream_group *g = s->check_group;
    if (!g || !g->check_interval_ms || !s->check_ev)
        return;
    struct timeval tv = { g->check_interval_ms / 1000, (g->check_interval_ms % 1000) * 1000 };
    evtimer_add(s->check_ev, &tv);
}

void tn_upstream_checks_start(tn_upstream_group *g)
{
    for (size_t i = 0; i < g->n; i++) {
        tn_upstream_server *s = g->servers[i];
        s->check_group = g;
        if (!g->check_interval_ms) {
            /* checks dropped by a reload: the server is judged by traffic */
            s->check_down = false;
            s->check_streak = 0;
            if (s->check_ev)
                event_del(s->check_ev);
            continue;
        }
        if (!s->check_ev && !(s->check_ev = evtimer_new(g->base, probe_start, s)))
            continue;
        if (!s->probe) {
            /* the first probe at once: a server down at start is found
             * within one timeout, not one interval */
            event_del(s->check_ev);
            event_active(s->check_ev, EV_TIMEOUT, 0);
        }
    }
}
