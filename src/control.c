/* SPDX-License-Identifier: MIT */
/* control.c - the control socket: a Unix stream socket
 * taking one command per line and answering one JSON document per line
 * (`metrics` answers Prometheus text ending in "# EOF").
 *
 * Who may do what is decided once, at accept, from SO_PEERCRED: root and the
 * daemon's own user are admins; members of daemon.control_group get
 * daemon.control_group_level; anyone else gets one error line and the close.
 *
 * A client that sends commands and never reads cannot grow our memory: once
 * its unread answers pass OUTPUT_CAP we stop reading its commands until it
 * catches up, so at most one answer beyond the cap is ever queued. */
#include "control.h"

#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "check.h"
#include "cluster.h"
#include "daemon.h"
#include "json.h"
#include "log.h"
#include "metrics_export.h"
#include "workers.h"
#include "upstream/proxy.h"
#include "net/conn.h"
#include "net/listener.h"
#include "version.h"

#define OUTPUT_CAP (4 * 1024 * 1024)
#define MAX_COMMAND 65536

typedef struct ctl_client {
    struct ctl_client *prev, *next;
    tn_control *ctl;
    struct bufferevent *bev;
    int level;
    bool discarding; /* inside an over-long command: skip to its newline */
    bool waiting;    /* the master is collecting its workers' answers (master.h), or Redis is asked */
    bool deferred;   /* this command's answer comes later (send NODE:ID) */
    struct send_wait *send_wait;
    tn_control_later_fn later; /* tn_control_exec_later(): how a later answer goes out */
    void *later_arg;
} ctl_client;

/* A `send NODE:ID` waiting for Redis: its asker is a socket client or a
 * tn_control_exec_later() caller (a worker answering the master). */
typedef struct send_wait {
    tn_daemon *d;
    ctl_client *client;
    tn_control_later_fn later;
    void *later_arg;
    uint64_t id;
    char node[256];
} send_wait;

struct tn_control {
    tn_daemon *d;
    char *path;
    struct evconnlistener *evl;
    ctl_client *clients;
};

typedef struct command {
    const char *name;
    const char *args;
    int level;
    void (*run)(ctl_client *c, tn_json *j, char *arg);
    const char *doc;
} command;

static void client_free(ctl_client *c)
{
    if (c->waiting && c->ctl->d->master)
        c->ctl->d->master_ops->forget(c->ctl->d->master, c);
    if (c->send_wait) {
        tn_cluster_forget(c->ctl->d, c->send_wait);
        free(c->send_wait);
    }
    /* answers already made (e.g. to `shutdown`) should reach the client */
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_get_length(out)) {
        evbuffer_unfreeze(out, 1); /* bufferevents freeze their output's start */
        evbuffer_write(out, bufferevent_getfd(c->bev));
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        c->ctl->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    bufferevent_free(c->bev);
    free(c);
}

static void error_answer(tn_json *j, const char *fmt, const char *arg)
{
    char msg[512];
    snprintf(msg, sizeof(msg), fmt, arg ? arg : "");
    tn_json_open(j, NULL, '{');
    tn_json_bool(j, "ok", false);
    tn_json_str(j, "error", msg);
    tn_json_close(j, '}');
}

static void ok_answer(tn_json *j)
{
    tn_json_open(j, NULL, '{');
    tn_json_bool(j, "ok", true);
    tn_json_close(j, '}');
}

/* ---- commands --------------------------------------------------------------- */

static void cmd_stats(ctl_client *c, tn_json *j, char *arg)
{
    (void)arg;
    tn_metrics_stats_json(c->ctl->d, j);
}

static void cmd_info(ctl_client *c, tn_json *j, char *arg)
{
    (void)arg;
    tn_metrics_info_json(c->ctl->d, j, NULL);
}

static void cmd_metrics(ctl_client *c, tn_json *j, char *arg)
{
    (void)arg;
    tn_metrics_prometheus(c->ctl->d, j->out);
}

/* TLS connections say how they are protected; plain ones have no such keys. */
static void tls_fields(tn_json *j, const tn_tls_info *tls)
{
    if (!tls)
        return;
    tn_json_str(j, "tls_version", tls->version);
    tn_json_str(j, "tls_cipher", tls->cipher);
    if (tls->subject)
        tn_json_str(j, "tls_client_subject", tls->subject);
}

static void cmd_connections(ctl_client *c, tn_json *j, char *arg)
{
    tn_daemon *d = c->ctl->d;
    if (arg && *arg) {
        bool known = false;
        for (tn_listener *l = d->listeners; l && !known; l = l->next)
            known = strcmp(l->name, arg) == 0;
        if (!known) {
            error_answer(j, "no listener '%s'", arg);
            return;
        }
    }
    tn_json_open(j, NULL, '{');
    tn_json_open(j, "connections", '[');
    for (tn_conn_base *k = d->conns; k; k = k->next) {
        if (arg && *arg && strcmp(k->listener->name, arg) != 0)
            continue;
        char remote[80];
        tn_addr_format(&k->remote.sa, remote, sizeof(remote));
        tn_conn_info info = { .local = "" };
        k->kind->describe(k, &info);
        tn_json_open(j, NULL, '{');
        tn_json_u64(j, "id", k->session.id);
        tn_json_str(j, "listener", k->listener->name);
        tn_json_str(j, "protocol", k->kind->protocol(k));
        tn_json_str(j, "remote", remote);
        tn_json_str(j, "local", info.local);
        if (info.path)
            tn_json_str(j, "path", info.path);
        if (info.subprotocol && *info.subprotocol)
            tn_json_str(j, "subprotocol", info.subprotocol);
        tn_json_time(j, "established", k->established_ms);
        tn_json_time(j, "last_activity", k->last_activity_ms);
        tn_json_u64(j, "bytes_sent", k->bytes_out);
        tn_json_u64(j, "bytes_received", k->bytes_in);
        tn_json_u64(j, "messages_in", k->msgs_in);
        tn_json_u64(j, "messages_out", k->msgs_out);
        tls_fields(j, info.tls);
        tn_json_close(j, '}');
    }
    tn_json_close(j, ']');
    tn_json_close(j, '}');
}

static void cmd_listeners(ctl_client *c, tn_json *j, char *arg)
{
    (void)arg;
    tn_json_open(j, NULL, '{');
    tn_json_open(j, "listeners", '[');
    for (tn_listener *l = c->ctl->d->listeners; l; l = l->next) {
        tn_json_open(j, NULL, '{');
        tn_json_str(j, "name", l->name);
        tn_json_str(j, "protocol", tn_protocol_name(l->protocol));
        tn_json_str(j, "listen", l->conf->listen);
        tn_json_str(j, "address", l->bound_str);
        tn_json_bool(j, "serving", l->fd >= 0 && !l->draining);
        tn_json_bool(j, "draining", l->draining);
        tn_json_u64(j, "active_connections", l->stats.active_connections);
        tn_json_open(j, "handlers", '[');
        if (l->handler)
            tn_json_str(j, NULL, l->handler->name);
        for (size_t i = 0; i < l->nhandlers; i++)
            tn_json_str(j, NULL, l->handlers[i]->name);
        tn_json_close(j, ']');
        tn_json_close(j, '}');
    }
    tn_json_close(j, ']');
    tn_json_close(j, '}');
}

static void cmd_handlers(ctl_client *c, tn_json *j, char *arg)
{
    (void)arg;
    tn_registry *r = c->ctl->d->registry;
    tn_json_open(j, NULL, '{');
    tn_json_open(j, "handlers", '[');
    for (size_t i = 0; i < tn_registry_count(r); i++) {
        tn_handler *h = tn_registry_at(r, i);
        tn_json_open(j, NULL, '{');
        tn_json_str(j, "name", h->name);
        tn_json_str(j, "type", h->ops->type);
        tn_json_u64(j, "calls", h->stats.calls);
        tn_json_u64(j, "errors", h->stats.errors);
        tn_json_u64(j, "in_flight", h->stats.in_flight);
        tn_json_num(j, "p50_ms", tn_hist_percentile(&h->stats.latency, 0.50) / 1000);
        tn_json_num(j, "p90_ms", tn_hist_percentile(&h->stats.latency, 0.90) / 1000);
        tn_json_num(j, "p99_ms", tn_hist_percentile(&h->stats.latency, 0.99) / 1000);
        tn_metrics_buckets_json(c->ctl->d, j, &h->stats.latency);
        tn_json_close(j, '}');
    }
    tn_json_close(j, ']');
    tn_json_close(j, '}');
}

static void cmd_routes(ctl_client *c, tn_json *j, char *arg)
{
    (void)arg;
    const tn_config *cfg = c->ctl->d->cfg;
    tn_json_open(j, NULL, '{');
    tn_json_open(j, "routes", '[');
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const tn_listener_conf *lc = &cfg->listeners[i];
        for (size_t r = 0; r < lc->nroutes; r++) {
            tn_json_open(j, NULL, '{');
            tn_json_str(j, "listener", lc->name);
            tn_json_str(j, "kind", "http");
            tn_json_str(j, "method", lc->routes[r].method);
            tn_json_str(j, "path", lc->routes[r].path);
            tn_json_str(j, "handler", lc->routes[r].handler);
            tn_json_close(j, '}');
        }
        for (size_t w = 0; w < lc->nwebsocket; w++) {
            const tn_ws_conf *ws = &lc->websocket[w];
            tn_json_open(j, NULL, '{');
            tn_json_str(j, "listener", lc->name);
            tn_json_str(j, "kind", "websocket");
            tn_json_str(j, "method", "GET");
            tn_json_str(j, "path", ws->path);
            if (ws->handler) {
                tn_json_str(j, "handler", ws->handler);
            } else {
                tn_json_open(j, "handlers", '[');
                for (size_t k = 0; k < ws->handlers.n; k++)
                    tn_json_str(j, NULL, ws->handlers.v[k]);
                tn_json_close(j, ']');
            }
            tn_json_close(j, '}');
        }
    }
    tn_json_close(j, ']');
    tn_json_close(j, '}');
}

static void cmd_config(ctl_client *c, tn_json *j, char *arg)
{
    (void)arg;
    tn_value *v = tn_config_to_value(c->ctl->d->cfg);
    tn_json_open(j, NULL, '{');
    tn_json_str(j, "path", c->ctl->d->config_path);
    tn_json_value(j, "config", v);
    tn_json_close(j, '}');
    tn_value_free(v);
}

static void cmd_reload(ctl_client *c, tn_json *j, char *arg)
{
    (void)arg;
    char err[2048];
    tn_daemon *d = c->ctl->d;
    bool ok = tn_daemon_reload(d, err, sizeof(err)) == 0;
    tn_json_open(j, NULL, '{');
    tn_json_bool(j, "ok", ok);
    if (!ok)
        tn_json_str(j, "error", err);
    /* the counts also tell a refused reload from other errors (tusknetctl) */
    tn_json_u64(j, "reloads", d->reloads);
    tn_json_u64(j, "reloads_ok", d->reloads_ok);
    tn_json_u64(j, "reloads_refused", d->reloads_refused);
    tn_json_close(j, '}');
}

static bool parse_id(const char *s, uint64_t *id)
{
    char *end;
    if (!s || !*s)
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || (*end && *end != ' '))
        return false;
    *id = v;
    return true;
}

static void cmd_close(ctl_client *c, tn_json *j, char *arg)
{
    uint64_t id;
    if (!parse_id(arg, &id)) {
        error_answer(j, "usage: close ID", NULL);
        return;
    }
    tn_conn_base *k = tn_conn_find(c->ctl->d, id);
    if (!k) {
        error_answer(j, "no connection %s", arg);
        return;
    }
    k->kind->close(k);
    ok_answer(j);
}

static void on_sent(void *arg, int outcome, const char *error)
{
    send_wait *w = arg;
    struct evbuffer *out = evbuffer_new();
    if (out) {
        tn_json j;
        tn_json_init(&j, out);
        char id[24];
        snprintf(id, sizeof(id), "%llu", (unsigned long long)w->id);
        tn_json_open(&j, NULL, '{');
        tn_json_bool(&j, "ok", outcome > 0);
        if (outcome > 0) {
            tn_json_bool(&j, "published", true);
            tn_json_str(&j, "node", w->node);
            tn_json_u64(&j, "id", w->id);
        } else if (outcome == 0) {
            char msg[400];
            snprintf(msg, sizeof(msg), "no node '%s' in the cluster (nothing subscribes to its channel)", w->node);
            tn_json_str(&j, "error", msg);
        } else {
            char msg[400];
            snprintf(msg, sizeof(msg), "not published: %s", error ? error : "failed");
            tn_json_str(&j, "error", msg);
        }
        tn_json_close(&j, '}');
        if (w->client) {
            w->client->send_wait = NULL;
            tn_control_answer(w->client, out, true);
        } else if (w->later) {
            evbuffer_add(out, "\n", 1);
            w->later(w->later_arg, out);
        }
        evbuffer_free(out);
    }
    free(w);
}

/* MESSAGE to connection ID of this instance; LABEL names it in the error. */
static void send_local(ctl_client *c, tn_json *j, uint64_t id, const char *msg, const char *label)
{
    tn_conn_base *k = tn_conn_find(c->ctl->d, id);
    int r = k ? k->kind->send(k, msg, strlen(msg)) : -2;
    if (r == -2)
        error_answer(j, "no connection %s", label);
    else if (r == -3)
        error_answer(j, "connection %s is a proxied WebSocket: its messages are the upstream's", label);
    else if (r < 0)
        error_answer(j, "connection is not reading (output over max_output)", NULL);
    else
        ok_answer(j);
}

/* send NODE:ID MESSAGE: through Redis to the instance whose node_id is NODE
 * (the last ':' ends it: a default node id holds one); NODE is this
 * instance's own id, delivered here without Redis, so that it works while
 * Redis is down. */
static void send_remote(ctl_client *c, tn_json *j, char *arg, char *colon, char *msg)
{
    char *end;
    errno = 0;
    unsigned long long id = strtoull(colon + 1, &end, 10);
    if (colon == arg || colon - arg > 255 || !(colon[1] >= '0' && colon[1] <= '9') || errno || end != msg - 1) {
        msg[-1] = '\0';
        error_answer(j, "bad connection id '%s' (use ID, or NODE:ID with [cluster])", arg);
        return;
    }
    if (tn_cluster_own_node(c->ctl->d, arg, (size_t)(colon - arg))) {
        msg[-1] = '\0';
        send_local(c, j, id, msg, arg);
        return;
    }
    if (!c->bev && !c->later) {
        error_answer(j, "send NODE:ID cannot wait for Redis here", NULL);
        return;
    }
    send_wait *w = calloc(1, sizeof(*w));
    if (!w) {
        error_answer(j, "out of memory", NULL);
        return;
    }
    w->d = c->ctl->d;
    w->id = id;
    memcpy(w->node, arg, (size_t)(colon - arg));
    char err[256];
    if (tn_cluster_send_to(c->ctl->d, w->node, id, msg, strlen(msg), on_sent, w, err, sizeof(err)) < 0) {
        free(w);
        error_answer(j, "%s", err);
        return;
    }
    if (c->bev) {
        w->client = c;
        c->send_wait = w;
        c->waiting = true;
    } else {
        w->later = c->later;
        w->later_arg = c->later_arg;
    }
    c->deferred = true;
}

static void cmd_send(ctl_client *c, tn_json *j, char *arg)
{
    uint64_t id;
    char *msg = arg ? strchr(arg, ' ') : NULL;
    char *colon = msg ? memrchr(arg, ':', (size_t)(msg - arg)) : NULL;
    if (colon) {
        send_remote(c, j, arg, colon, msg + 1);
        return;
    }
    if (!parse_id(arg, &id) || !msg) {
        error_answer(j, "usage: send ID MESSAGE", NULL);
        return;
    }
    *msg++ = '\0';
    send_local(c, j, id, msg, arg);
}

static void cmd_broadcast(ctl_client *c, tn_json *j, char *arg)
{
    char *msg = arg ? strchr(arg, ' ') : NULL;
    if (!arg || !*arg || !msg) {
        error_answer(j, "usage: broadcast HANDLER MESSAGE", NULL);
        return;
    }
    *msg++ = '\0';
    tn_handler *h = tn_registry_find(c->ctl->d->registry, arg);
    if (!h) {
        error_answer(j, "no handler '%s'", arg);
        return;
    }
    uint64_t sent = 0, dropped = 0;
    for (tn_conn_base *k = c->ctl->d->conns; k; k = k->next) {
        bool attached = false;
        for (tn_attachment *a = k->session.attached; a && !attached; a = a->next)
            attached = a->handler == h;
        if (!attached || k->kind->closing(k))
            continue;
        if (k->kind->send(k, msg, strlen(msg)) < 0)
            dropped++;
        else
            sent++;
    }
    /* a room's members elsewhere (the counts are this process's); of a
     * daemon's workers, one publishes */
    if (h->ops == &tn_broadcast_ops && !tn_workers_local_only(c->ctl->d))
        tn_cluster_publish(h, msg, strlen(msg));
    tn_json_open(j, NULL, '{');
    tn_json_bool(j, "ok", true);
    tn_json_u64(j, "sent", sent);
    tn_json_u64(j, "dropped", dropped);
    tn_json_close(j, '}');
}

static void cmd_log_level(ctl_client *c, tn_json *j, char *arg)
{
    (void)c;
    int level = arg ? tn_log_level_parse(arg) : -1;
    if (level < 0) {
        error_answer(j, "usage: log-level error|warn|info|debug", NULL);
        return;
    }
    tn_log_set_level(level);
    tn_info("log level set to %s by the control socket", arg);
    tn_json_open(j, NULL, '{');
    tn_json_bool(j, "ok", true);
    tn_json_str(j, "log_level", tn_log_level_name(level));
    tn_json_close(j, '}');
}

static void cmd_shutdown(ctl_client *c, tn_json *j, char *arg)
{
    (void)arg;
    ok_answer(j);
    tn_daemon_shutdown(c->ctl->d, "control socket");
}

static void cmd_version(ctl_client *c, tn_json *j, char *arg)
{
    (void)c;
    (void)arg;
    tn_json_open(j, NULL, '{');
    tn_json_str(j, "version", TN_VERSION);
    tn_json_close(j, '}');
}

static void cmd_upstreams(ctl_client *c, tn_json *j, char *arg)
{
    (void)arg;
    tn_json_open(j, NULL, '{');
    tn_proxy_upstreams_json(c->ctl->d->registry, j);
    tn_json_close(j, '}');
}

static void cmd_upstream(ctl_client *c, tn_json *j, char *arg)
{
    char err[256];
    if (tn_proxy_upstream_cmd(c->ctl->d->registry, arg, err, sizeof(err)) < 0) {
        error_answer(j, "%s", err);
        return;
    }
    ok_answer(j);
}

static void cmd_help(ctl_client *c, tn_json *j, char *arg);

static const command commands[] = {
    { "stats", "", TN_CTL_READ, cmd_stats, "counters globally, per listener and per handler" },
    { "info", "", TN_CTL_READ, cmd_info, "process, build, reloads, memory, descriptors, connections by protocol" },
    { "metrics", "", TN_CTL_READ, cmd_metrics, "Prometheus text exposition, ending with # EOF" },
    { "connections", "[LISTENER]", TN_CTL_READ, cmd_connections, "open connections" },
    { "listeners", "", TN_CTL_READ, cmd_listeners, "listeners with their bound addresses" },
    { "handlers", "", TN_CTL_READ, cmd_handlers, "handlers with calls, errors and latency" },
    { "routes", "", TN_CTL_READ, cmd_routes, "HTTP routes and WebSocket endpoints" },
    { "upstreams", "", TN_CTL_READ, cmd_upstreams, "proxy handlers' servers: state, connections, failures, latency" },
    { "config", "", TN_CTL_READ, cmd_config, "the running configuration, normalized" },
    { "version", "", TN_CTL_READ, cmd_version, "daemon version" },
    { "help", "", TN_CTL_READ, cmd_help, "this list" },
    { "reload", "", TN_CTL_ADMIN, cmd_reload, "re-read the configuration file" },
    { "close", "ID", TN_CTL_ADMIN, cmd_close, "close a connection" },
    { "send", "ID MESSAGE", TN_CTL_ADMIN, cmd_send,
      "push a message to one connection (ID as NODE:ID: of another instance, through [cluster])" },
    { "broadcast", "HANDLER MESSAGE", TN_CTL_ADMIN, cmd_broadcast,
      "push a message to every connection attached to a handler" },
    { "upstream", "HANDLER SERVER drain|up|down|weight N", TN_CTL_ADMIN, cmd_upstream,
      "change one upstream server of a proxy handler" },
    { "log-level", "LEVEL", TN_CTL_ADMIN, cmd_log_level, "set the log level" },
    { "shutdown", "", TN_CTL_ADMIN, cmd_shutdown, "graceful shutdown" },
};

static void cmd_help(ctl_client *c, tn_json *j, char *arg)
{
    (void)arg;
    tn_json_open(j, NULL, '{');
    tn_json_str(j, "level", c->level == TN_CTL_ADMIN ? "admin" : "read");
    tn_json_open(j, "commands", '[');
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        tn_json_open(j, NULL, '{');
        tn_json_str(j, "name", commands[i].name);
        tn_json_str(j, "args", commands[i].args);
        tn_json_str(j, "level", commands[i].level == TN_CTL_ADMIN ? "admin" : "read");
        tn_json_str(j, "doc", commands[i].doc);
        tn_json_close(j, '}');
    }
    tn_json_close(j, ']');
    tn_json_close(j, '}');
}

static void run_command(ctl_client *c, struct evbuffer *out, char *line, size_t len)
{
    tn_json j;
    tn_json_init(&j, out);
    if (memchr(line, '\0', len)) {
        error_answer(&j, "invalid command: it contains a NUL byte", NULL);
        evbuffer_add(out, "\n", 1);
        return;
    }
    while (*line == ' ' || *line == '\t')
        line++;
    char *arg = strchr(line, ' ');
    if (arg) {
        *arg++ = '\0';
        while (*arg == ' ')
            arg++;
    }
    if (!*line)
        return;
    const command *cmd = NULL;
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]) && !cmd; i++)
        if (strcmp(commands[i].name, line) == 0)
            cmd = &commands[i];
    if (!cmd) {
        error_answer(&j, "unknown command '%s' (try help)", line);
    } else if (cmd->level > c->level) {
        error_answer(&j, "permission denied: '%s' needs admin", line);
    } else if (c->bev && c->ctl->d->master && c->ctl->d->master_ops->forward(c->ctl->d->master, c, cmd->name, arg)) {
        /* answered by tn_control_answer() once the workers have */
        c->waiting = true;
        return;
    } else {
        cmd->run(c, &j, arg);
        if (c->deferred)
            return; /* the answer follows */
    }
    if (cmd && cmd->run != cmd_metrics)
        evbuffer_add(out, "\n", 1);
    else if (!cmd)
        evbuffer_add(out, "\n", 1);
}

static void answer_too_long(ctl_client *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    char limit[24];
    snprintf(limit, sizeof(limit), "%d", MAX_COMMAND);
    tn_json j;
    tn_json_init(&j, out);
    error_answer(&j, "command too long (at most %s bytes)", limit);
    evbuffer_add(out, "\n", 1);
}

static void on_client_read(struct bufferevent *bev, void *arg)
{
    ctl_client *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) > OUTPUT_CAP) {
            bufferevent_disable(bev, EV_READ);
            return;
        }
        if (c->discarding) {
            /* the rest of an over-long command is dropped up to its end,
             * never run as a command of its own */
            struct evbuffer_ptr eol = evbuffer_search(in, "\n", 1, NULL);
            if (eol.pos < 0) {
                evbuffer_drain(in, evbuffer_get_length(in));
                return;
            }
            evbuffer_drain(in, (size_t)eol.pos + 1);
            c->discarding = false;
        }
        size_t len;
        char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
        if (!line) {
            if (evbuffer_get_length(in) > MAX_COMMAND) {
                answer_too_long(c);
                evbuffer_drain(in, evbuffer_get_length(in));
                c->discarding = true;
            }
            return;
        }
        if (len > MAX_COMMAND)
            answer_too_long(c);
        else
            run_command(c, bufferevent_get_output(bev), line, len);
        free(line);
        if (c->waiting) {
            bufferevent_disable(bev, EV_READ);
            return;
        }
    }
}

void tn_control_answer(void *client, struct evbuffer *answer, bool newline)
{
    ctl_client *c = client;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_buffer(out, answer);
    if (newline)
        evbuffer_add(out, "\n", 1);
    c->waiting = false;
    c->deferred = false;
    bufferevent_enable(c->bev, EV_READ);
    on_client_read(c->bev, c);
}

void tn_control_exec(tn_daemon *d, char *line, size_t len, struct evbuffer *out)
{
    tn_control_exec_later(d, line, len, out, NULL, NULL);
}

bool tn_control_exec_later(tn_daemon *d, char *line, size_t len, struct evbuffer *out, tn_control_later_fn later,
                           void *arg)
{
    tn_control ctl = { .d = d };
    ctl_client c = { .ctl = &ctl, .level = TN_CTL_ADMIN, .later = later, .later_arg = arg };
    run_command(&c, out, line, len);
    return c.deferred;
}

static void on_client_write(struct bufferevent *bev, void *arg)
{
    ctl_client *c = arg;
    if (!c->waiting && !(bufferevent_get_enabled(bev) & EV_READ)) {
        bufferevent_enable(bev, EV_READ);
        on_client_read(bev, arg);
    }
}

static void on_client_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    ctl_client *c = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        client_free(c);
}

/* Is the peer in GROUP (primary or supplementary)? */
static bool peer_in_group(const struct ucred *cred, const char *group)
{
    struct group *gr = getgrnam(group);
    if (!gr)
        return false;
    if (cred->gid == gr->gr_gid)
        return true;
    char path[64], line[4096];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)cred->pid);
    FILE *f = fopen(path, "r");
    bool found = false;
    while (f && !found && fgets(line, sizeof(line), f)) {
        if (strncmp(line, "Groups:", 7) != 0)
            continue;
        for (char *save = NULL, *t = strtok_r(line + 7, " \t\n", &save); t && !found; t = strtok_r(NULL, " \t\n", &save))
            found = (gid_t)strtoul(t, NULL, 10) == gr->gr_gid;
    }
    if (f)
        fclose(f);
    return found;
}

static void on_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)evl;
    (void)sa;
    (void)salen;
    tn_control *ctl = arg;
    struct ucred cred;
    socklen_t len = sizeof(cred);
    int level = -1;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        if (cred.uid == 0 || cred.uid == geteuid())
            level = TN_CTL_ADMIN;
        else if (*ctl->d->cfg->daemon.control_group && peer_in_group(&cred, ctl->d->cfg->daemon.control_group))
            level = ctl->d->cfg->daemon.control_group_level;
    }
    if (level < 0) {
        static const char denied[] = "{\"ok\":false,\"error\":\"permission denied\"}\n";
        ssize_t w = send(fd, denied, sizeof(denied) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
        tn_warn("control socket: refused uid %d", (int)cred.uid);
        evutil_closesocket(fd);
        return;
    }
    ctl_client *c = calloc(1, sizeof(*c));
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->bev = bufferevent_socket_new(ctl->d->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        free(c);
        evutil_closesocket(fd);
        return;
    }
    c->ctl = ctl;
    c->level = level;
    c->next = ctl->clients;
    if (ctl->clients)
        ctl->clients->prev = c;
    ctl->clients = c;
    bufferevent_setcb(c->bev, on_client_read, on_client_write, on_client_event, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, OUTPUT_CAP / 2, 0);
    bufferevent_enable(c->bev, EV_READ);
}

tn_control *tn_control_open(tn_daemon *d, const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    char dir[sizeof(sun.sun_path)];
    if (tn_check_socket_dir(path, dir, sizeof(dir), err, errlen) < 0)
        return NULL;
    strcpy(sun.sun_path, path);
    /* the runtime directory may not exist outside systemd (RuntimeDirectory) */
    if (*dir && mkdir(dir, 0755) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return NULL;
    }
    /* a socket file left by a previous run: replace it only if nobody answers */
    evutil_socket_t probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0 && connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
        close(probe);
        snprintf(err, errlen, "control socket %s is in use by another process", path);
        return NULL;
    }
    if (probe >= 0)
        close(probe);
    unlink(path);
    evutil_socket_t fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    mode_t old = umask(0117);
    int rc = fd < 0 ? -1 : bind(fd, (struct sockaddr *)&sun, sizeof(sun));
    umask(old);
    if (rc < 0 || listen(fd, 64) < 0) {
        snprintf(err, errlen, "cannot bind control socket %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    chmod(path, 0660);
    if (*d->cfg->daemon.control_group) {
        struct group *gr = getgrnam(d->cfg->daemon.control_group);
        if (!gr || chown(path, (uid_t)-1, gr->gr_gid) < 0)
            tn_warn("control socket: cannot give %s to group %s", path, d->cfg->daemon.control_group);
    }
    tn_control *ctl = calloc(1, sizeof(*ctl));
    if (!ctl) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ctl->d = d;
    ctl->path = strdup(path);
    ctl->evl = evconnlistener_new(d->base, on_accept, ctl, LEV_OPT_CLOSE_ON_FREE, -1, fd);
    if (!ctl->evl) {
        close(fd);
        tn_control_close(ctl);
        snprintf(err, errlen, "cannot watch control socket");
        return NULL;
    }
    tn_info("control socket on %s", path);
    return ctl;
}

const char *tn_control_path(const tn_control *ctl)
{
    return ctl->path;
}

void tn_control_close(tn_control *ctl)
{
    if (!ctl)
        return;
    while (ctl->clients)
        client_free(ctl->clients);
    if (ctl->evl) {
        evconnlistener_free(ctl->evl);
        unlink(ctl->path);
    }
    free(ctl->path);
    free(ctl);
}
