/* SPDX-License-Identifier: MIT */
/* master_sockets.c - the master's listening sockets: one SO_REUSEPORT socket
 * per listener and worker slot (or the one systemd passed, shared by every
 * slot), kept across a reload for each listener that continues, so that no
 * connection waiting in a backlog is lost. */
#include "master.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "net/listener.h"
#include "proto/protocols.h"

void tn_master_close_lsock(tn_master_lsock *s, int nslots)
{
    if (!s->fds)
        return;
    for (int i = 0; i < (s->shared ? 1 : nslots); i++)
        if (s->fds[i] >= 0)
            close(s->fds[i]);
    free(s->fds);
    s->fds = NULL;
}

/* The sockets of a listener in OLD that CONF continues (same protocol and
 * address, the same name first), as the single process matches listeners. */
static tn_master_lsock *find_old(tn_master_lsock *old, size_t nold, const tn_listener_conf *conf)
{
    char host[256];
    int port = 0;
    tn_parse_listen(conf->listen, host, sizeof(host), &port);
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < nold; i++) {
            tn_master_lsock *s = &old[i];
            if (!s->fds || s->conf->protocol != conf->protocol || strcmp(s->conf->listen, conf->listen) != 0)
                continue;
            if (pass == 0 ? strcmp(s->conf->name, conf->name) == 0 : port != 0)
                return s;
        }
    return NULL;
}

static int bind_slots(tn_sd *sd, int nslots, const tn_listener_conf *conf, tn_master_lsock *s, char *err, size_t errlen)
{
    const tn_proto_ops *ops = tn_proto_ops_for(conf->protocol);
    struct sockaddr_storage ss;
    socklen_t len = 0;
    char why[256];
    s->fds = malloc((size_t)nslots * sizeof(int));
    if (!s->fds || !ops) {
        snprintf(err, errlen, "listener '%s': out of memory", conf->name);
        return -1;
    }
    for (int i = 0; i < nslots; i++)
        s->fds[i] = -1;
    if (tn_listen_resolve(conf->listen, &ss, &len, why, sizeof(why)) == 0) {
        int fd = tn_sd_take(sd, conf->fd_name, ops->socktype, (struct sockaddr *)&ss, len);
        if (fd >= 0) {
            tn_info("listener %s: using the socket passed by systemd, shared by the workers", conf->name);
            s->fds[0] = fd;
            s->shared = true;
            return 0;
        }
        for (int i = 0; i < nslots; i++) {
            s->fds[i] = tn_listener_bind(conf, ops->socktype, &ss, len, true, why, sizeof(why));
            if (s->fds[i] < 0)
                break;
            if (i == 0) {
                /* port 0: every slot on the port the first one got */
                struct sockaddr_storage got;
                socklen_t gl = sizeof(got);
                if (getsockname(s->fds[0], (struct sockaddr *)&got, &gl) == 0 && got.ss_family == ss.ss_family) {
                    ss = got;
                    len = gl;
                }
            }
        }
        if (s->fds[nslots - 1] >= 0)
            return 0;
    }
    snprintf(err, errlen, "%s:%d:%d: listener '%s': %s", conf->listen_pos.file, conf->listen_pos.line,
             conf->listen_pos.col, conf->name, why);
    tn_master_close_lsock(s, nslots);
    return -1;
}

/* More slots for a listener that continues (daemon.workers grew): bound
 * on the address its first slot has, so that port 0 stays one port. */
static int grow_slots(const tn_listener_conf *conf, tn_master_lsock *s, int from, int to, char *err, size_t errlen)
{
    if (s->shared || to <= from)
        return 0;
    int *fds = realloc(s->fds, (size_t)to * sizeof(int));
    if (!fds) {
        snprintf(err, errlen, "listener '%s': out of memory", conf->name);
        return -1;
    }
    s->fds = fds;
    for (int i = from; i < to; i++)
        fds[i] = -1;
    const tn_proto_ops *ops = tn_proto_ops_for(conf->protocol);
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char why[256];
    snprintf(why, sizeof(why), "getsockname: %s", strerror(errno));
    if (getsockname(fds[0], (struct sockaddr *)&ss, &len) == 0)
        for (int i = from; i < to; i++)
            if ((fds[i] = tn_listener_bind(conf, ops->socktype, &ss, len, true, why, sizeof(why))) < 0)
                break;
    if (fds[to - 1] >= 0)
        return 0;
    for (int i = from; i < to; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    snprintf(err, errlen, "%s:%d:%d: listener '%s': %s", conf->listen_pos.file, conf->listen_pos.line,
             conf->listen_pos.col, conf->name, why);
    return -1;
}

void tn_master_shrink_lsock(tn_master_lsock *s, int from, int to)
{
    for (int i = to; s->fds && !s->shared && i < from; i++) {
        if (s->fds[i] >= 0)
            close(s->fds[i]);
        s->fds[i] = -1;
    }
}

/* Sockets for every listener of CFG, kept from the running set where the
 * listener continues (with slots added when NSLOTS > OLD_NSLOTS). On
 * failure nothing changed. */
int tn_master_open_sockets(tn_sd *sd, int old_nslots, int nslots, tn_master_lsock *old_set, size_t nold,
                           const tn_config *cfg, tn_master_lsock **out, char *err, size_t errlen)
{
    tn_master_lsock *set = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*set));
    tn_master_lsock **from = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*from));
    if (!set || !from) {
        free(set);
        free(from);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < cfg->nlisteners && rc == 0; i++) {
        const tn_listener_conf *conf = &cfg->listeners[i];
        set[i].conf = conf;
        tn_master_lsock *old = find_old(old_set, nold, conf);
        if (old) {
            set[i].fds = old->fds;
            set[i].shared = old->shared;
            old->fds = NULL; /* taken; given back below if this fails */
            from[i] = old;
            rc = grow_slots(conf, &set[i], old_nslots, nslots, err, errlen);
            if (rc == 0 && nslots > old_nslots && !set[i].shared)
                set[i].grown = true;
        } else {
            rc = bind_slots(sd, nslots, conf, &set[i], err, errlen);
            set[i].fresh = rc == 0;
        }
    }
    if (rc < 0) {
        for (size_t i = 0; i < cfg->nlisteners; i++) {
            if (from[i]) {
                if (set[i].grown)
                    tn_master_shrink_lsock(&set[i], nslots, old_nslots);
                from[i]->fds = set[i].fds;
            } else {
                tn_master_close_lsock(&set[i], nslots);
            }
        }
        free(set);
        free(from);
        return -1;
    }
    free(from);
    *out = set;
    return 0;
}

