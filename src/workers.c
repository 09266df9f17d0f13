/* SPDX-License-Identifier: MIT */
/* workers.c - a worker process's side of daemon.workers > 1.
 *
 * A worker is an ordinary daemon (daemon.c) forked by the master with the
 * config the master parsed and its slot's listening sockets; what it adds is
 * here: the channel to the master (control commands in, answers out, room
 * messages both ways), connection ids that name the worker, and the shared
 * segment that makes daemon.max_connections and max_connections_per_ip hold
 * for the whole daemon.
 *
 * The segment is mapped by the master before it forks (MAP_SHARED |
 * MAP_ANONYMOUS), so every worker sees the same pages. Each live worker has a
 * seat: its open-connection count, and a column in the per-address table, so
 * that when a worker dies the master clears exactly what it had counted. The
 * table is small open addressing under one process-shared robust mutex (a
 * worker killed while holding it does not wedge the others); entries whose
 * count falls to zero are reused. */
#include "workers.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "addr.h"
#include "log.h"

/* ---- messages ------------------------------------------------------------------ */

void tn_wmsg_send(struct bufferevent *bev, int type, uint64_t seq, const void *data, size_t len)
{
    tn_wmsg_hdr h = { (uint32_t)len, (uint32_t)type, seq };
    struct evbuffer *out = bufferevent_get_output(bev);
    evbuffer_add(out, &h, sizeof(h));
    if (len)
        evbuffer_add(out, data, len);
}

int tn_wmsg_next(struct evbuffer *in, tn_wmsg_hdr *hdr, struct evbuffer *body)
{
    if (evbuffer_get_length(in) < sizeof(*hdr))
        return 0;
    evbuffer_copyout(in, hdr, sizeof(*hdr));
    if (hdr->len > TN_WMSG_MAX)
        return -1;
    if (evbuffer_get_length(in) < sizeof(*hdr) + hdr->len)
        return 0;
    evbuffer_drain(in, sizeof(*hdr));
    evbuffer_remove_buffer(in, body, hdr->len);
    return 1;
}

/* ---- the shared segment --------------------------------------------------------- */

#define IP_ENTRIES 4096
#define IP_PROBES 64

struct tn_wshm {
    size_t size;
    int seats;
    pthread_mutex_t lock; /* the per-address table */
    size_t stride;        /* bytes per table entry */
    _Atomic uint64_t active[]; /* per seat; the table follows */
};

/* An entry: key (0 = never used), total, then one count per seat. */
typedef struct ip_entry {
    uint64_t key;
    uint32_t total;
    uint16_t n[];
} ip_entry;

static ip_entry *entry_at(tn_wshm *shm, size_t i)
{
    char *table = (char *)&shm->active[shm->seats];
    return (ip_entry *)(table + i * shm->stride);
}

tn_wshm *tn_wshm_new(int seats)
{
    size_t stride = (sizeof(ip_entry) + (size_t)seats * sizeof(uint16_t) + 7) & ~(size_t)7;
    size_t size = sizeof(tn_wshm) + (size_t)seats * sizeof(uint64_t) + IP_ENTRIES * stride;
    tn_wshm *shm = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED)
        return NULL;
    shm->size = size;
    shm->seats = seats;
    shm->stride = stride;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    int rc = pthread_mutex_init(&shm->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (rc != 0) {
        munmap(shm, size);
        return NULL;
    }
    return shm;
}

void tn_wshm_free(tn_wshm *shm)
{
    if (shm)
        munmap(shm, shm->size);
}

static void lock(tn_wshm *shm)
{
    if (pthread_mutex_lock(&shm->lock) == EOWNERDEAD)
        pthread_mutex_consistent(&shm->lock); /* the master clears the dead worker's seat */
}

void tn_wshm_clear_seat(tn_wshm *shm, int seat)
{
    if (!shm || seat < 0 || seat >= shm->seats)
        return;
    atomic_store(&shm->active[seat], 0);
    lock(shm);
    for (size_t i = 0; i < IP_ENTRIES; i++) {
        ip_entry *e = entry_at(shm, i);
        e->n[seat] = 0;
        uint32_t total = 0;
        for (int s = 0; s < shm->seats; s++)
            total += e->n[s];
        e->total = total;
    }
    pthread_mutex_unlock(&shm->lock);
}

/* FNV-1a over the listener's name and the address (port excluded). */
static uint64_t ip_key(const char *listener, const struct sockaddr *sa)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = listener; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    const unsigned char *a = NULL;
    size_t n = 0;
    if (sa->sa_family == AF_INET) {
        a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
        n = 4;
    } else if (sa->sa_family == AF_INET6) {
        a = (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
        n = 16;
    }
    h = (h ^ (unsigned char)sa->sa_family) * 1099511628211ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ a[i]) * 1099511628211ULL;
    return h ? h : 1;
}

/* The entry for KEY, or a free one for it when CREATE; NULL if the probe
 * window is full. */
static ip_entry *ip_find(tn_wshm *shm, uint64_t key, bool create)
{
    ip_entry *free_e = NULL;
    for (size_t p = 0; p < IP_PROBES; p++) {
        ip_entry *e = entry_at(shm, (key + p) % IP_ENTRIES);
        if (e->key == key)
            return e;
        if (!free_e && (e->key == 0 || e->total == 0))
            free_e = e;
        if (e->key == 0)
            break;
    }
    if (!create || !free_e)
        return NULL;
    free_e->key = key;
    return free_e;
}

/* ---- the link ------------------------------------------------------------------- */

/* A metrics handler's job waiting for the master's answer. */
typedef struct query {
    struct query *next;
    struct tn_worker_link *w;
    uint64_t seq;
    tn_job *job;
} query;

struct tn_worker_link {
    tn_daemon *d;
    query *queries;
    uint64_t next_query;
    struct bufferevent *bev;
    int fd, fdch;
    int slot, seat;
    uint64_t serial;
    tn_wshm *shm;
    tn_worker_socket *sockets;
    size_t nsockets;
    bool unlisted_warned;
    bool local_only; /* running a TN_WMSG_CMD_LOCAL */
    tn_worker_hooks hooks;
    uint64_t relay_dropped;
    long master_pid;
};

tn_worker_link *tn_workers_link_new(int fd, int fdch, int slot, int seat, uint64_t serial, tn_wshm *shm,
                                    tn_worker_socket *sockets, size_t nsockets)
{
    tn_worker_link *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->fd = fd;
    w->fdch = fdch;
    w->slot = slot;
    w->seat = seat;
    w->serial = serial;
    w->shm = shm;
    w->sockets = sockets;
    w->nsockets = nsockets;
    w->master_pid = (long)getppid();
    return w;
}

static void query_unlink(query *q)
{
    for (query **pp = &q->w->queries; *pp; pp = &(*pp)->next) {
        if (*pp == q) {
            *pp = q->next;
            break;
        }
    }
}

/* Ends every waiting query: the master will not answer. */
static void queries_fail(tn_worker_link *w, bool cancel)
{
    while (w->queries) {
        query *q = w->queries;
        w->queries = q->next;
        q->job->cancel = NULL;
        if (cancel)
            tn_job_cancel(q->job);
        static const char why[] = "the master process did not answer";
        tn_job_done(q->job, TN_FAIL, why, sizeof(why) - 1);
        free(q);
    }
}

static void query_cancel(tn_job *job)
{
    /* the job stays until the answer comes (tn_job_done frees it) */
    (void)job;
}

bool tn_workers_metrics(tn_daemon *d, tn_call *call)
{
    tn_worker_link *w = d->worker;
    if (!w || !w->bev)
        return false;
    query *q = calloc(1, sizeof(*q));
    tn_job *job = q ? tn_job_begin(call) : NULL;
    if (!job) {
        free(q);
        return false;
    }
    q->w = w;
    q->job = job;
    q->seq = ++w->next_query;
    job->hstate = q;
    job->cancel = query_cancel;
    q->next = w->queries;
    w->queries = q;
    tn_wmsg_send(w->bev, TN_WMSG_QUERY, q->seq, "metrics", 7);
    return true;
}

void tn_workers_free(tn_worker_link *w)
{
    if (!w)
        return;
    queries_fail(w, true);
    if (w->bev)
        bufferevent_free(w->bev);
    else if (w->fd >= 0)
        close(w->fd);
    if (w->fdch >= 0)
        close(w->fdch);
    for (size_t i = 0; i < w->nsockets; i++)
        if (w->sockets[i].fd >= 0)
            close(w->sockets[i].fd);
    free(w->sockets);
    free(w);
}

long tn_workers_daemon_pid(const tn_daemon *d)
{
    return d && d->worker ? d->worker->master_pid : (long)getpid();
}

bool tn_workers_owns_id(const tn_daemon *d, uint64_t id)
{
    return !d->worker || id >> TN_WORKER_ID_SHIFT == d->worker->serial;
}

bool tn_workers_local_only(const tn_daemon *d)
{
    return d->worker && d->worker->local_only;
}

uint64_t tn_workers_first_id(const tn_worker_link *w)
{
    return w ? w->serial << TN_WORKER_ID_SHIFT : 0;
}

int tn_workers_take_socket(tn_worker_link *w, const tn_listener_conf *conf)
{
    for (size_t i = 0; i < w->nsockets; i++) {
        if (w->sockets[i].conf == conf) {
            int fd = w->sockets[i].fd;
            w->sockets[i].fd = -1;
            return fd;
        }
    }
    return -1;
}

/* ---- reload in place ------------------------------------------------------------ */

int tn_workers_send_fds(int fdch, const uint32_t *listener, const int *fds, size_t n)
{
    for (size_t at = 0; at < n; at += TN_WFD_BATCH) {
        size_t k = n - at < TN_WFD_BATCH ? n - at : TN_WFD_BATCH;
        tn_wfd_msg msg = { (uint32_t)k, { 0 } };
        memcpy(msg.listener, listener + at, k * sizeof(*listener));
        union {
            char buf[CMSG_SPACE(TN_WFD_BATCH * sizeof(int))];
            struct cmsghdr align;
        } ctl;
        memset(&ctl, 0, sizeof(ctl));
        struct iovec iov = { &msg, sizeof(msg) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                             .msg_controllen = CMSG_SPACE(k * sizeof(int)) };
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(k * sizeof(int));
        memcpy(CMSG_DATA(c), fds + at, k * sizeof(int));
        ssize_t rc;
        do
            rc = sendmsg(fdch, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        while (rc < 0 && errno == EINTR);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* The NFDS sockets the master sent ahead of a reload, as the worker's
 * sockets for the listeners of CFG (what tn_listener_open() takes; with no
 * CFG they are read and closed). The master wrote them before it queued the
 * reload message, so they wait in the channel already. -1 with err on a
 * short or broken channel. */
static int take_fds(tn_worker_link *w, const tn_config *cfg, uint32_t nfds, char *err, size_t errlen)
{
    tn_worker_socket *socks = calloc(nfds ? nfds : 1, sizeof(*socks));
    size_t got = 0, seen = 0;
    int rc = socks ? 0 : -1;
    const char *why = "out of memory";
    while (rc == 0 && seen < nfds) {
        tn_wfd_msg msg;
        union {
            char buf[CMSG_SPACE(TN_WFD_BATCH * sizeof(int))];
            struct cmsghdr align;
        } ctl;
        struct iovec iov = { &msg, sizeof(msg) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
        ssize_t n;
        do
            n = recvmsg(w->fdch, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        struct cmsghdr *c = n == (ssize_t)sizeof(msg) ? CMSG_FIRSTHDR(&mh) : NULL;
        size_t k = c && c->cmsg_type == SCM_RIGHTS ? (c->cmsg_len - CMSG_LEN(0)) / sizeof(int) : 0;
        int fds[TN_WFD_BATCH];
        if (k)
            memcpy(fds, CMSG_DATA(c), k * sizeof(int));
        if (!k || k != msg.n || seen + k > nfds || (mh.msg_flags & MSG_CTRUNC)) {
            rc = -1;
            why = n < 0                      ? strerror(errno)
                  : mh.msg_flags & MSG_CTRUNC ? "no free file descriptor to take them"
                                              : "a malformed message";
        }
        seen += k;
        for (size_t i = 0; i < k; i++) {
            if (rc == 0 && cfg && msg.listener[i] < cfg->nlisteners) {
                socks[got].conf = &cfg->listeners[msg.listener[i]];
                socks[got++].fd = fds[i];
            } else {
                close(fds[i]);
                rc = cfg ? -1 : rc;
            }
        }
    }
    if (rc < 0) {
        snprintf(err, errlen, "the listening sockets of the new listeners did not arrive (%s)", why);
        for (size_t i = 0; i < got; i++)
            close(socks[i].fd);
        free(socks);
        return -1;
    }
    w->sockets = socks;
    w->nsockets = got;
    return 0;
}

/* Closes what no new listener took. */
static void drop_fds(tn_worker_link *w)
{
    for (size_t i = 0; i < w->nsockets; i++)
        if (w->sockets[i].fd >= 0)
            close(w->sockets[i].fd);
    free(w->sockets);
    w->sockets = NULL;
    w->nsockets = 0;
}

/* A reload the master checked: DATA is a tn_wreload_hdr and the snapshot.
 * ERR gets why it failed ("" when applied). */
static void reload_in_place(tn_daemon *d, const char *data, size_t len, char *err, size_t errlen)
{
    tn_worker_link *w = d->worker;
    err[0] = '\0';
    tn_wreload_hdr h;
    if (len < sizeof(h)) {
        snprintf(err, errlen, "malformed reload message");
        return;
    }
    memcpy(&h, data, sizeof(h));
    tn_diag diag = { 0 };
    tn_config *cfg = tn_config_from_snapshot(data + sizeof(h), len - sizeof(h), d->config_path, &diag);
    if (!cfg) {
        char *all = tn_diag_join(&diag);
        snprintf(err, errlen, "the master's snapshot does not load: %s", all ? all : "out of memory");
        free(all);
    }
    tn_diag_free(&diag);
    drop_fds(w); /* none are left from the start, but to be sure */
    char why[512];
    if (take_fds(w, cfg, h.nfds, why, sizeof(why)) < 0 || !cfg) {
        if (cfg)
            snprintf(err, errlen, "%s", why);
        tn_config_unref(cfg);
        drop_fds(w);
        return;
    }
    if (w->hooks.reload(d, cfg, err, errlen) < 0)
        tn_config_unref(cfg);
    else
        err[0] = '\0';
    drop_fds(w);
}

/* A command whose answer came later (send NODE:ID waited for Redis). */
typedef struct later_answer {
    tn_daemon *d;
    uint64_t seq;
} later_answer;

static void answer_later(void *arg, struct evbuffer *answer)
{
    later_answer *la = arg;
    tn_worker_link *w = la->d->worker; /* NULL once the worker is stopping */
    if (w && w->bev)
        tn_wmsg_send(w->bev, TN_WMSG_ANSWER, la->seq, evbuffer_pullup(answer, -1), evbuffer_get_length(answer));
    free(la);
}

static void on_message(tn_daemon *d, const tn_wmsg_hdr *h, struct evbuffer *body)
{
    tn_worker_link *w = d->worker;
    size_t len = evbuffer_get_length(body);
    char *data = malloc(len + 1);
    if (!data)
        return;
    evbuffer_remove(body, data, len);
    data[len] = '\0';
    switch (h->type) {
    case TN_WMSG_CMD:
    case TN_WMSG_CMD_LOCAL: {
        struct evbuffer *out = evbuffer_new();
        later_answer *la = malloc(sizeof(*la));
        if (out && la) {
            la->d = d;
            la->seq = h->seq;
            w->local_only = h->type == TN_WMSG_CMD_LOCAL;
            bool later = w->hooks.exec(d, data, len, out, answer_later, la);
            w->local_only = false;
            if (!later) {
                size_t n = evbuffer_get_length(out);
                tn_wmsg_send(w->bev, TN_WMSG_ANSWER, h->seq, evbuffer_pullup(out, -1), n);
                free(la);
            }
        } else {
            free(la);
        }
        if (out)
            evbuffer_free(out);
        break;
    }
    case TN_WMSG_DRAIN: w->hooks.drain(d); break;
    case TN_WMSG_RELOAD: {
        char err[2048];
        reload_in_place(d, data, len, err, sizeof(err));
        tn_wmsg_send(w->bev, TN_WMSG_ANSWER, h->seq, err, strlen(err));
        break;
    }
    case TN_WMSG_ANSWER:
        for (query *q = w->queries; q; q = q->next) {
            if (q->seq == h->seq) {
                query_unlink(q);
                if (len)
                    tn_job_done(q->job, TN_REPLY, data, len);
                else
                    tn_job_done(q->job, TN_FAIL, "no answer from the workers", 26);
                free(q);
                break;
            }
        }
        break;
    case TN_WMSG_DELIVER: {
        size_t nlen = strnlen(data, len);
        tn_handler *hd = nlen < len ? tn_registry_find(d->registry, data) : NULL;
        if (hd)
            tn_broadcast_deliver(hd, data + nlen + 1, len - nlen - 1);
        break;
    }
    default: tn_warn("worker: unknown message %u from the master", h->type); break;
    }
    free(data);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    tn_daemon *d = arg;
    struct evbuffer *body = evbuffer_new();
    tn_wmsg_hdr h;
    int rc;
    while (body && d->worker && (rc = tn_wmsg_next(bufferevent_get_input(bev), &h, body)) > 0) {
        on_message(d, &h, body);
        evbuffer_drain(body, evbuffer_get_length(body));
    }
    if (body)
        evbuffer_free(body);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    tn_daemon *d = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        /* the master is gone: nobody supervises, restarts or relays */
        bufferevent_disable(bev, EV_READ);
        queries_fail(d->worker, false);
        d->worker->hooks.shutdown(d, "master exited");
    }
}

int tn_workers_started(tn_daemon *d, const tn_worker_hooks *hooks, char *err, size_t errlen)
{
    tn_worker_link *w = d->worker;
    w->d = d;
    w->hooks = *hooks;
    w->bev = bufferevent_socket_new(d->base, w->fd, BEV_OPT_CLOSE_ON_FREE);
    if (!w->bev) {
        snprintf(err, errlen, "worker: cannot watch the channel to the master");
        return -1;
    }
    bufferevent_setcb(w->bev, on_read, NULL, on_event, d);
    bufferevent_enable(w->bev, EV_READ);
    for (size_t i = 0; i < w->nsockets; i++) {
        if (w->sockets[i].fd >= 0) {
            close(w->sockets[i].fd);
            w->sockets[i].fd = -1;
        }
    }
    tn_workers_publish(d);
    tn_wmsg_send(w->bev, TN_WMSG_READY, 0, NULL, 0);
    return 0;
}

bool tn_workers_admit(tn_daemon *d, int64_t max)
{
    tn_worker_link *w = d->worker;
    if (!w)
        return (int64_t)d->active < max;
    /* Reserve first, then count: of two workers admitting the last place at
     * once, at least one sees the other's reservation, so the cap is never
     * passed (both may refuse). The connection's own count, or a refusal's
     * tn_workers_publish(), replaces the reservation. */
    atomic_store(&w->shm->active[w->seat], d->active + 1);
    uint64_t n = 0;
    for (int s = 0; s < w->shm->seats; s++)
        n += atomic_load(&w->shm->active[s]);
    if ((int64_t)n > max) {
        tn_workers_publish(d);
        return false;
    }
    return true;
}

void tn_workers_publish(tn_daemon *d)
{
    if (d->worker)
        atomic_store(&d->worker->shm->active[d->worker->seat], d->active);
}

bool tn_workers_ip_admit(tn_daemon *d, const char *listener, const struct sockaddr *sa, int64_t max)
{
    tn_worker_link *w = d->worker;
    if (!w)
        return true;
    uint64_t key = ip_key(listener, sa);
    bool ok = true;
    lock(w->shm);
    ip_entry *e = ip_find(w->shm, key, true);
    if (e && max && (int64_t)e->total >= max) {
        ok = false;
    } else if (e) {
        e->total++;
        e->n[w->seat]++;
    } else if (!w->unlisted_warned) {
        w->unlisted_warned = true; /* admitted uncounted rather than refused */
        tn_warn("worker: the shared table of client addresses is full around one address");
    }
    pthread_mutex_unlock(&w->shm->lock);
    return ok;
}

void tn_workers_ip_release(tn_daemon *d, const char *listener, const struct sockaddr *sa)
{
    tn_worker_link *w = d->worker;
    if (!w)
        return;
    lock(w->shm);
    ip_entry *e = ip_find(w->shm, ip_key(listener, sa), false);
    if (e && e->n[w->seat]) {
        e->n[w->seat]--;
        e->total--;
    }
    pthread_mutex_unlock(&w->shm->lock);
}

void tn_workers_relay(tn_daemon *d, const char *handler, const void *payload, size_t len)
{
    tn_worker_link *w = d->worker;
    if (!w || !w->bev)
        return;
    size_t nlen = strlen(handler);
    struct evbuffer *out = bufferevent_get_output(w->bev);
    if (evbuffer_get_length(out) > TN_WMSG_QUEUE_CAP) {
        if (w->relay_dropped++ == 0)
            tn_warn("worker: the master is not reading: room messages to other workers are dropped");
        return;
    }
    tn_wmsg_hdr h = { (uint32_t)(nlen + 1 + len), TN_WMSG_RELAY, 0 };
    evbuffer_add(out, &h, sizeof(h));
    evbuffer_add(out, handler, nlen + 1);
    evbuffer_add(out, payload, len);
}
