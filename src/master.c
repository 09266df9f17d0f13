/* SPDX-License-Identifier: MIT */
/* master.c - daemon.workers > 1: the master process.
 *
 * nginx's design: the master parses and checks the config, binds one
 * SO_REUSEPORT socket per listener and worker slot (a socket systemd passed
 * is shared by every slot as it is) and keeps them all open, then forks the
 * workers; a worker inherits the parsed config and its slot's sockets and
 * builds its own loop (daemon.c). Because the master holds every socket,
 * neither a worker's exit nor a reload closes one, so connections queued in
 * a socket's backlog are never dropped: the next worker on the slot accepts
 * them.
 *
 * Reload: the config is parsed and checked once, here; a refused one changes
 * no worker, an accepted one is applied in place by every worker, which
 * keeps its connections (master_reload.c).
 *
 * The master supervises (pidfd per worker; a crashed worker is restarted
 * with a backoff that doubles while it keeps crashing soon after a start),
 * owns the signals (a signalfd, so that forked workers inherit no handler),
 * the control socket (commands about traffic go to the workers over their
 * socketpairs and the answers are merged, master_merge.c), systemd
 * notifications (READY once all workers serve; MAINPID is the master) and the
 * pid file, and relays room messages between workers in the order each
 * worker sent them. */
#include "master.h"

#include <errno.h>
#include <event2/bufferevent.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "cluster.h"
#include "control.h"
#include "log.h"
#include "workers.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 10000
#define STABLE_US (10 * 1000000LL) /* a worker up this long resets its slot's backoff */

/* The one master state (and its daemon record: control socket, config,
 * counters); reachable from here in forked workers too, which never use it. */
static tn_master master_state;
static tn_daemon master_daemon;

static const int master_signals[] = { SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH, SIGALRM };

int tn_master_workers_wanted(const tn_config *cfg)
{
    if (cfg->daemon.workers > 0)
        return (int)cfg->daemon.workers;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* ---- workers ------------------------------------------------------------------- */

static void check_ready(tn_master *m);
static bool start_request(tn_master *m, void *client, uint64_t asker, uint64_t asker_seq, const char *name,
                          const char *arg);

static int take_seat(tn_master *m)
{
    for (int i = 0; i < m->seats; i++) {
        if (!m->seat_used[i]) {
            m->seat_used[i] = true;
            return i;
        }
    }
    return -1;
}

static void unlink_worker(tn_master *m, tn_mworker *w)
{
    for (tn_mworker **pp = &m->workers; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
}

static void free_worker(tn_mworker *w)
{
    if (w->exit_ev)
        event_free(w->exit_ev);
    if (w->kill_ev)
        event_free(w->kill_ev);
    if (w->pidfd >= 0)
        close(w->pidfd);
    if (w->bev)
        bufferevent_free(w->bev);
    if (w->fdch >= 0)
        close(w->fdch);
    free(w);
}

/* Answers W still owed are given up on. */
static void forget_answers(tn_master *m, uint64_t serial)
{
    for (tn_mrequest *r = m->requests, *next; r; r = next) {
        next = r->next;
        for (size_t i = 0; i < r->n; i++) {
            if (r->serials[i] == serial && !r->answers[i].body) {
                r->serials[i] = 0;
                if (--r->pending == 0) {
                    tn_master_request_done(r);
                    break;
                }
            }
        }
    }
}

static void describe_exit(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "was killed by SIG%s", sigabbrev_np(WTERMSIG(status)) ? sigabbrev_np(WTERMSIG(status)) : "?");
    else
        snprintf(buf, len, "ended");
}

static void on_restart(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tn_mslot *s = arg;
    if (!s->m->stopping)
        tn_master_spawn(s->m, s->slot);
}

static void on_worker_exit(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tn_mworker *w = arg;
    tn_master *m = w->m;
    int status = 0;
    if (waitpid(w->pid, &status, WNOHANG) == 0)
        return; /* not yet: the pidfd said so early */
    char how[64];
    describe_exit(status, how, sizeof(how));
    unlink_worker(m, w);
    tn_wshm_clear_seat(m->shm, w->seat);
    m->seat_used[w->seat] = false;
    forget_answers(m, w->serial);
    bool current = w->generation == m->generation && !w->draining && !w->superseded;
    if (m->stopping || !current) {
        tn_info("worker %d (pid %ld) %s", w->slot, (long)w->pid, how);
    } else if (!m->started && !w->ready) {
        tn_error("worker %d (pid %ld) %s before serving: not starting", w->slot, (long)w->pid, how);
        m->exit_code = 1;
        free_worker(w);
        tn_master_shutdown(m, "a worker failed to start");
        return;
    } else {
        tn_mslot *s = &m->slots[w->slot];
        int64_t ran = tn_now_us() - s->last_start_us;
        s->backoff_ms = ran >= STABLE_US || !s->backoff_ms ? BACKOFF_MIN_MS
                        : s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                             : s->backoff_ms * 2;
        s->restarts++;
        tn_warn("worker %d (pid %ld) %s; restarting it in %d ms", w->slot, (long)w->pid, how, s->backoff_ms);
        struct timeval tv = { s->backoff_ms / 1000, (s->backoff_ms % 1000) * 1000 };
        evtimer_add(s->restart_ev, &tv);
    }
    free_worker(w);
    if (m->stopping && !m->workers)
        event_base_loopexit(m->d->base, NULL);
}

static void on_worker_message(tn_mworker *w, const tn_wmsg_hdr *h, struct evbuffer *body)
{
    tn_master *m = w->m;
    switch (h->type) {
    case TN_WMSG_READY:
        w->ready = true;
        tn_debug("worker %d (pid %ld) serving", w->slot, (long)w->pid);
        tn_master_reload_replaced(m, w);
        check_ready(m);
        break;
    case TN_WMSG_ANSWER:
        for (tn_mrequest *r = m->requests; r; r = r->next) {
            if (r->seq != h->seq)
                continue;
            for (size_t i = 0; i < r->n; i++) {
                if (r->serials[i] == w->serial && !r->answers[i].body) {
                    r->answers[i].body = evbuffer_new();
                    if (r->answers[i].body)
                        evbuffer_add_buffer(r->answers[i].body, body);
                    if (--r->pending == 0)
                        tn_master_request_done(r);
                    return;
                }
            }
        }
        break;
    case TN_WMSG_RELAY: {
        /* to every other worker, old generations included (their members);
         * a worker that stopped reading gets nothing more past the cap */
        size_t len = evbuffer_get_length(body);
        const void *data = evbuffer_pullup(body, -1);
        for (tn_mworker *o = m->workers; o; o = o->next) {
            if (o == w || !o->bev)
                continue;
            if (evbuffer_get_length(bufferevent_get_output(o->bev)) > TN_WMSG_QUEUE_CAP) {
                if (o->relay_dropped++ == 0)
                    tn_warn("worker %d (pid %ld) is not reading: room messages to it are dropped", o->slot,
                            (long)o->pid);
                continue;
            }
            tn_wmsg_send(o->bev, TN_WMSG_DELIVER, 0, data, len);
        }
        break;
    }
    case TN_WMSG_QUERY:
        /* a worker's metrics handler wants the whole daemon's numbers */
        if (evbuffer_get_length(body) == 7 && memcmp(evbuffer_pullup(body, -1), "metrics", 7) == 0 &&
            start_request(m, NULL, w->serial, h->seq, "metrics", NULL))
            break;
        tn_wmsg_send(w->bev, TN_WMSG_ANSWER, h->seq, NULL, 0);
        break;
    default: tn_warn("worker %d: unknown message %u", w->slot, h->type); break;
    }
}

static void on_worker_read(struct bufferevent *bev, void *arg)
{
    tn_mworker *w = arg;
    struct evbuffer *body = evbuffer_new();
    tn_wmsg_hdr h;
    int rc = 0;
    while (body && (rc = tn_wmsg_next(bufferevent_get_input(bev), &h, body)) > 0) {
        on_worker_message(w, &h, body);
        evbuffer_drain(body, evbuffer_get_length(body));
    }
    if (body)
        evbuffer_free(body);
    if (rc < 0) {
        tn_error("worker %d (pid %ld): malformed message; stopping it", w->slot, (long)w->pid);
        bufferevent_disable(bev, EV_READ);
        kill(w->pid, SIGKILL);
    }
}

static void on_worker_event(struct bufferevent *bev, short what, void *arg)
{
    tn_mworker *w = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        /* the exit itself comes through the pidfd */
        bufferevent_disable(bev, EV_READ);
        forget_answers(w->m, w->serial);
    }
}

/* In the child: everything but the worker's own descriptors is closed, the
 * signals the master took with its signalfd are given back, and systemd's
 * variables go (the master notifies; the sockets come from the master). */
static void child_setup(int keep_fd, int keep_fd2, const tn_worker_socket *socks, size_t nsocks)
{
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof(master_signals) / sizeof(master_signals[0]); i++)
        sigaddset(&set, master_signals[i]);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    static const char *const vars[] = { "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                                        "LISTEN_FDS",    "LISTEN_PID",    "LISTEN_FDNAMES" };
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    /* in rounds: descriptors are closed after the listing, never during it */
    for (size_t n = 1; n;) {
        int fds[1024];
        n = 0;
        DIR *dir = opendir("/proc/self/fd");
        if (!dir)
            return;
        int own = dirfd(dir);
        for (struct dirent *e; (e = readdir(dir)) && n < sizeof(fds) / sizeof(fds[0]);) {
            int fd = atoi(e->d_name);
            if (e->d_name[0] == '.' || fd <= 2 || fd == own || fd == keep_fd || fd == keep_fd2)
                continue;
            bool keep = false;
            for (size_t i = 0; i < nsocks && !keep; i++)
                keep = socks[i].fd == fd;
            if (!keep)
                fds[n++] = fd;
        }
        closedir(dir);
        for (size_t i = 0; i < n; i++)
            close(fds[i]);
    }
}

void tn_master_spawn(tn_master *m, int slot)
{
    tn_mslot *s = &m->slots[slot];
    int seat = take_seat(m);
    int sv[2] = { -1, -1 }, fv[2] = { -1, -1 };
    tn_worker_socket *socks = calloc(m->nsocks ? m->nsocks : 1, sizeof(*socks));
    tn_mworker *w = calloc(1, sizeof(*w));
    if (seat < 0 || !socks || !w || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fv) < 0) {
        tn_error("worker %d: cannot start: %s", slot, seat < 0 ? "every seat taken by draining workers" : strerror(errno));
        if (seat >= 0)
            m->seat_used[seat] = false;
        for (int i = 0; i < 2; i++) {
            if (sv[i] >= 0)
                close(sv[i]);
            if (fv[i] >= 0)
                close(fv[i]);
        }
        free(socks);
        free(w);
        s->backoff_ms = s->backoff_ms ? s->backoff_ms : BACKOFF_MAX_MS;
        struct timeval tv = { s->backoff_ms / 1000, (s->backoff_ms % 1000) * 1000 };
        evtimer_add(s->restart_ev, &tv);
        return;
    }
    for (size_t i = 0; i < m->nsocks; i++) {
        socks[i].conf = m->socks[i].conf;
        socks[i].fd = m->socks[i].fds[m->socks[i].shared ? 0 : slot];
    }
    uint64_t serial = ++m->next_serial;
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        close(fv[0]);
        child_setup(sv[1], fv[1], socks, m->nsocks);
        char tag[32];
        snprintf(tag, sizeof(tag), "worker %d: ", slot);
        tn_log_set_tag(tag);
        tn_worker_link *link = tn_workers_link_new(sv[1], fv[1], slot, seat, serial, m->shm, socks, m->nsocks);
        int rc = link ? tn_daemon_run_as(m->d->cfg, m->d->config_path, m->d->cli_log_level, link) : 1;
        exit(rc);
    }
    free(socks);
    close(sv[1]);
    close(fv[1]);
    w->fdch = fv[0];
    if (pid < 0) {
        tn_error("worker %d: fork: %s", slot, strerror(errno));
        close(sv[0]);
        close(fv[0]);
        m->seat_used[seat] = false;
        free(w);
        s->backoff_ms = BACKOFF_MAX_MS;
        struct timeval tv = { s->backoff_ms / 1000, 0 };
        evtimer_add(s->restart_ev, &tv);
        return;
    }
    w->m = m;
    w->pid = pid;
    w->slot = slot;
    w->seat = seat;
    w->serial = serial;
    w->generation = m->generation;
    w->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    w->bev = bufferevent_socket_new(m->d->base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    if (w->pidfd >= 0)
        w->exit_ev = event_new(m->d->base, w->pidfd, EV_READ, on_worker_exit, w);
    if (w->exit_ev)
        event_add(w->exit_ev, NULL);
    if (w->bev) {
        bufferevent_setcb(w->bev, on_worker_read, NULL, on_worker_event, w);
        bufferevent_enable(w->bev, EV_READ);
    } else {
        close(sv[0]);
    }
    /* by generation, then slot: the order of the rows in `stats` */
    tn_mworker **at = &m->workers;
    while (*at && ((*at)->generation < w->generation || ((*at)->generation == w->generation && (*at)->slot < slot)))
        at = &(*at)->next;
    w->next = *at;
    *at = w;
    s->last_start_us = tn_now_us();
    tn_info("worker %d started (pid %ld)", slot, (long)pid);
}

static void notify_status(tn_master *m, const char *prefix)
{
    size_t serving = 0;
    for (tn_mworker *w = m->workers; w; w = w->next)
        serving += w->ready && !w->draining;
    tn_sd_notify("STATUS=%s%zu worker(s), %zu listener(s), %zu handler(s)", prefix, serving, m->d->cfg->nlisteners,
                 m->d->cfg->nhandlers);
}

/* Every slot has a serving worker of the current generation: the start or
 * a reload is complete. */
static void check_ready(tn_master *m)
{
    int ready = 0;
    for (tn_mworker *w = m->workers; w; w = w->next)
        ready += w->generation == m->generation && w->ready && !w->draining;
    if (ready < m->nslots || m->stopping)
        return;
    if (!m->started) {
        m->started = true;
        tn_info("tusknetd started: %d worker(s), %zu listener(s), %zu handler(s)", m->nslots, m->d->cfg->nlisteners,
                m->d->cfg->nhandlers);
        tn_sd_notify("READY=1\nMAINPID=%ld", (long)getpid());
        notify_status(m, "Serving: ");
    }
}

/* ---- control --------------------------------------------------------------------- */

static void free_request(tn_mrequest *r)
{
    tn_master *m = r->m;
    for (tn_mrequest **pp = &m->requests; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    for (size_t i = 0; i < r->n; i++)
        if (r->answers[i].body)
            evbuffer_free(r->answers[i].body);
    if (r->timeout_ev)
        event_free(r->timeout_ev);
    free(r->answers);
    free(r->serials);
    free(r->error);
    free(r);
}

void tn_master_request_done(tn_mrequest *r)
{
    tn_master *m = r->m;
    struct evbuffer *out = evbuffer_new(), *own = evbuffer_new();
    if (out && own && strcmp(r->name, "reload") == 0) {
        tn_master_reload_done(r, out);
    } else if (out && own) {
        /* what only the master knows comes from its own answer */
        if (strcmp(r->name, "stats") == 0 || strcmp(r->name, "info") == 0 || strcmp(r->name, "metrics") == 0) {
            char line[16];
            snprintf(line, sizeof(line), "%s", r->name);
            tn_control_exec(m->d, line, strlen(line), own);
        }
        tn_master_merge(r->name, r->answers, r->n, own, out);
    }
    void *client = r->client;
    bool newline = strcmp(r->name, "metrics") != 0;
    uint64_t asker = r->asker, asker_seq = r->asker_seq;
    free_request(r);
    if (client && out)
        tn_control_answer(client, out, newline);
    for (tn_mworker *w = m->workers; w && asker && out; w = w->next)
        if (w->serial == asker && w->bev)
            tn_wmsg_send(w->bev, TN_WMSG_ANSWER, asker_seq, evbuffer_pullup(out, -1), evbuffer_get_length(out));
    if (out)
        evbuffer_free(out);
    if (own)
        evbuffer_free(own);
}

static void on_request_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tn_mrequest *r = arg;
    if (r->pending)
        tn_warn("control: %zu worker(s) did not answer '%s' within %lld ms", r->pending, r->name,
                (long long)r->timeout_ms);
    tn_master_request_done(r);
}

static const char *worker_state(const tn_mworker *w)
{
    return w->draining ? "draining" : w->ready ? "serving" : "starting";
}

/* A worker stopped for not answering a reload would not answer this either:
 * every command would wait for it until its kill. */
static bool asked(const tn_mworker *w)
{
    return w->bev && !w->kill_ev;
}

bool tn_master_forward(tn_master *m, void *client, const char *name, const char *arg)
{
    if (strcmp(name, "reload") == 0) {
        tn_master_reload_command(m, client);
        return true;
    }
    return start_request(m, client, 0, 0, name, arg);
}

tn_mrequest *tn_master_request_new(tn_master *m, void *client, const char *name, size_t n)
{
    tn_mrequest *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->m = m;
    r->answers = calloc(n ? n : 1, sizeof(*r->answers));
    r->serials = calloc(n ? n : 1, sizeof(*r->serials));
    r->timeout_ev = evtimer_new(m->d->base, on_request_timeout, r);
    r->next = m->requests;
    m->requests = r;
    if (!r->answers || !r->serials || !r->timeout_ev) {
        free_request(r);
        return NULL;
    }
    r->client = client;
    snprintf(r->name, sizeof(r->name), "%s", name);
    r->seq = ++m->next_seq;
    tn_master_request_timeout(r, REQUEST_TIMEOUT_S * 1000);
    return r;
}

void tn_master_request_timeout(tn_mrequest *r, int64_t ms)
{
    r->timeout_ms = ms;
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evtimer_add(r->timeout_ev, &tv);
}

static bool start_request(tn_master *m, void *client, uint64_t asker, uint64_t asker_seq, const char *name,
                          const char *arg)
{
    static const char *const all[] = { "stats", "info", "metrics", "connections", "listeners", "handlers",
                                       "broadcast", "log-level" };
    bool to_all = false, to_one = strcmp(name, "close") == 0 || strcmp(name, "send") == 0;
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        to_all = to_all || strcmp(name, all[i]) == 0;
    if (!to_all && !to_one)
        return false;
    uint64_t target = 0;
    const char *sp = arg ? strchr(arg, ' ') : NULL;
    const char *colon = to_one && sp ? memrchr(arg, ':', (size_t)(sp - arg)) : NULL;
    if (colon && strcmp(name, "send") == 0 && tn_cluster_own_node(m->d, arg, (size_t)(colon - arg))) {
        /* this node's own: the worker whose connection it is delivers it */
        target = strtoull(colon + 1, NULL, 10) >> TN_WORKER_ID_SHIFT;
    } else if (colon && strcmp(name, "send") == 0) {
        /* send NODE:ID goes through Redis: one serving worker publishes it */
        for (tn_mworker *w = m->workers; w && !target; w = w->next)
            if (w->bev && w->ready && !w->draining)
                target = w->serial;
    } else if (to_one) {
        char *end;
        unsigned long long id = arg ? strtoull(arg, &end, 10) : 0;
        if (!arg || end == arg)
            return false; /* the usage error, from the master */
        target = id >> TN_WORKER_ID_SHIFT;
    }
    if (strcmp(name, "log-level") == 0 && arg && tn_log_level_parse(arg) >= 0)
        tn_log_set_level(tn_log_level_parse(arg)); /* the master's own lines too */
    size_t n = 0;
    for (tn_mworker *w = m->workers; w; w = w->next)
        n += asked(w) && (!to_one || w->serial == target);
    if (!n)
        return false; /* answered by the master alone: nothing, or no such connection */
    tn_mrequest *r = tn_master_request_new(m, client, name, n);
    if (!r)
        return false;
    r->asker = asker;
    r->asker_seq = asker_seq;
    char *line = NULL;
    int len = asprintf(&line, "%s%s%s", name, arg && *arg ? " " : "", arg ? arg : "");
    if (len < 0) {
        free_request(r);
        return false;
    }
    for (tn_mworker *w = m->workers; w; w = w->next) {
        if (!asked(w) || (to_one && w->serial != target))
            continue;
        tn_master_answer *a = &r->answers[r->n];
        a->slot = w->slot;
        a->pid = (long)w->pid;
        a->generation = w->generation;
        a->state = worker_state(w);
        a->restarts = m->slots[w->slot].restarts;
        /* one worker publishes a control broadcast to other machines */
        int type = r->n && strcmp(name, "broadcast") == 0 ? TN_WMSG_CMD_LOCAL : TN_WMSG_CMD;
        r->serials[r->n++] = w->serial;
        tn_wmsg_send(w->bev, type, r->seq, line, (size_t)len);
    }
    free(line);
    r->pending = r->n;
    return true;
}

void tn_master_forget(tn_master *m, void *client)
{
    for (tn_mrequest *r = m->requests; r; r = r->next)
        if (r->client == client)
            r->client = NULL;
}

/* ---- reload and shutdown ------------------------------------------------------------ */

static void on_worker_kill(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tn_mworker *w = arg;
    tn_warn("worker %d (pid %ld) still running %lld ms after it was told to stop: killing it", w->slot, (long)w->pid,
            (long long)(w->m->d->cfg->daemon.shutdown_timeout + KILL_GRACE_MS));
    kill(w->pid, SIGKILL);
}

void tn_master_stop_worker(tn_master *m, tn_mworker *w)
{
    w->draining = true;
    kill(w->pid, SIGTERM);
    if (!w->kill_ev)
        w->kill_ev = evtimer_new(m->d->base, on_worker_kill, w);
    int64_t ms = m->d->cfg->daemon.shutdown_timeout + KILL_GRACE_MS;
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    if (w->kill_ev)
        evtimer_add(w->kill_ev, &tv);
}

static void on_kill(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tn_master *m = arg;
    for (tn_mworker *w = m->workers; w; w = w->next) {
        tn_warn("worker %d (pid %ld) still running after the shutdown timeout: killing it", w->slot, (long)w->pid);
        kill(w->pid, SIGKILL);
    }
}

void tn_master_shutdown(tn_master *m, const char *why)
{
    if (m->stopping)
        return;
    m->stopping = true;
    m->d->stopping = true;
    tn_sd_notify("STOPPING=1\nSTATUS=Shutting down (%s)", why);
    tn_info("shutting down (%s): stopping %d worker(s)", why, m->nslots);
    for (int i = 0; i < m->nslots; i++)
        evtimer_del(m->slots[i].restart_ev);
    for (tn_mworker *w = m->workers; w; w = w->next)
        kill(w->pid, SIGTERM);
    /* the workers keep shutdown_timeout themselves; this is the backstop */
    int64_t ms = m->d->cfg->daemon.shutdown_timeout + KILL_GRACE_MS;
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evtimer_add(m->kill_ev, &tv);
    if (!m->workers)
        event_base_loopexit(m->d->base, NULL);
}

/* ---- signals and the run ---------------------------------------------------------------- */

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    tn_master *m = arg;
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        int sig = (int)si.ssi_signo;
        switch (sig) {
        case SIGTERM:
        case SIGINT:
        case SIGQUIT: {
            char why[16];
            snprintf(why, sizeof(why), "SIG%s", sigabbrev_np(sig));
            tn_master_shutdown(m, why);
            break;
        }
        case SIGHUP:
            if (!m->stopping) {
                char err[2048];
                tn_daemon_reload(m->d, err, sizeof(err));
            }
            break;
        case SIGUSR1:
            /* log files belong to the workers */
            for (tn_mworker *w = m->workers; w; w = w->next)
                kill(w->pid, SIGUSR1);
            tn_info("SIGUSR1: passed to %d worker(s) to reopen their log files", m->nslots);
            break;
        default:
            tn_log(sig == SIGWINCH ? TN_LOG_INFO : TN_LOG_WARN, "SIG%s received: ignored (no meaning for tusknetd)",
                   sigabbrev_np(sig));
            break;
        }
    }
}

static void master_free(tn_master *m)
{
    tn_daemon *d = m->d;
    while (m->requests)
        tn_master_request_done(m->requests);
    tn_control_close(d->control);
    d->control = NULL;
    while (m->workers) {
        tn_mworker *w = m->workers;
        m->workers = w->next;
        free_worker(w);
    }
    for (size_t i = 0; i < m->nsocks; i++)
        tn_master_close_lsock(&m->socks[i], m->nslots);
    free(m->socks);
    for (int i = 0; m->slots && i < m->seats; i++)
        if (m->slots[i].restart_ev)
            event_free(m->slots[i].restart_ev);
    free(m->slots);
    free(m->seat_used);
    tn_wshm_free(m->shm);
    if (m->sig_ev)
        event_free(m->sig_ev);
    if (m->kill_ev)
        event_free(m->kill_ev);
    if (m->sigfd >= 0)
        close(m->sigfd);
    if (d->registry)
        tn_registry_free(d->registry, 0);
    tn_sd_free(&d->sd);
    if (d->base)
        event_base_free(d->base);
    tn_config_unref(d->cfg);
    free(d->config_path);
}

int tn_master_run(tn_config *cfg, const char *path, int cli_log_level)
{
    tn_master *m = &master_state;
    tn_daemon *d = &master_daemon;
    memset(m, 0, sizeof(*m));
    memset(d, 0, sizeof(*d));
    m->d = d;
    m->sigfd = -1;
    static const tn_master_ops ops = { tn_master_forward, tn_master_forget, tn_master_apply, tn_master_shutdown };
    d->master = m;
    d->master_ops = &ops;
    d->cfg = cfg;
    d->config_path = strdup(path);
    d->cli_log_level = cli_log_level;
    d->started_wall_ms = tn_wall_ms();
    d->started_us = tn_now_us();
    m->nslots = tn_master_workers_wanted(cfg);
    m->seats = 4 * m->nslots + 4;
    m->generation = 1;
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof(master_signals) / sizeof(master_signals[0]); i++)
        sigaddset(&set, master_signals[i]);
    sigprocmask(SIG_BLOCK, &set, NULL);
    m->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    struct event_config *ec = event_config_new();
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    d->base = event_base_new_with_config(ec);
    event_config_free(ec);
    m->shm = tn_wshm_new(m->seats);
    m->slots = calloc((size_t)m->seats, sizeof(*m->slots));
    m->seat_used = calloc((size_t)m->seats, sizeof(bool));
    d->registry = d->base ? tn_registry_new(d->base, d) : NULL;
    if (m->sigfd < 0 || !d->base || !m->shm || !m->slots || !m->seat_used || !d->registry) {
        tn_error("cannot initialize the master process: %s", strerror(errno));
        master_free(m);
        return 1;
    }
    m->sig_ev = event_new(d->base, m->sigfd, EV_READ | EV_PERSIST, on_signal, m);
    event_add(m->sig_ev, NULL);
    m->kill_ev = evtimer_new(d->base, on_kill, m);
    for (int i = 0; i < m->seats; i++) {
        m->slots[i].m = m;
        m->slots[i].slot = i;
        m->slots[i].restart_ev = evtimer_new(d->base, on_restart, &m->slots[i]);
    }
    tn_sd_init(&d->sd, d->base);
    char err[2048];
    if (tn_master_open_sockets(&m->d->sd, m->nslots, m->nslots, m->socks, m->nsocks, cfg, &m->socks, err, sizeof(err)) < 0) {
        tn_log_lines(TN_LOG_ERROR, NULL, err);
        tn_sd_notify("STATUS=Failed to start: %s", err);
        master_free(m);
        return 1;
    }
    m->nsocks = cfg->nlisteners;
    tn_sd_close_unused(&d->sd);
    if (*cfg->daemon.control_socket) {
        d->control = tn_control_open(d, cfg->daemon.control_socket, err, sizeof(err));
        if (!d->control) {
            tn_error("%s", err);
            tn_sd_notify("STATUS=Failed to start: %s", err);
            master_free(m);
            return 1;
        }
    }
    tn_daemon_write_pid_file(cfg);
    tn_info("master process %ld: starting %d worker(s)", (long)getpid(), m->nslots);
    for (int i = 0; i < m->nslots; i++)
        tn_master_spawn(m, i);
    event_base_dispatch(d->base);
    tn_info("stopped");
    if (*d->cfg->daemon.pid_file)
        unlink(d->cfg->daemon.pid_file);
    int code = m->exit_code;
    master_free(m);
    return code;
}
