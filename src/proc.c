/* SPDX-License-Identifier: MIT */
/* proc.c - child processes on the event loop (see proc.h).
 *
 * Reaping goes through pidfd_open(2): the pidfd becomes readable when the
 * child exits, so each tn_proc owns its own reaping event and there is no
 * process-wide child table, SIGCHLD handler or blocking waitpid(). A
 * process is "done" only when it is reaped AND both output pipes reached
 * EOF, so the owner never loses the tail of the output nor leaks a pipe.
 * When the owner killed the process, waiting for EOF could last forever (a
 * descendant that left the group may hold the pipe), so after the reap the
 * group is swept with SIGKILL and the pipes are drained once and dropped. */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "handlers/handler.h" /* tn_now_us */
#include "clock.h"
#include "log.h"

extern char **environ;

/* One read per callback: a chatty child cannot starve the rest of the loop. */
#define READ_CHUNK 65536
/* At most this much is still read from a pipe that is being abandoned. */
#define ABANDON_READS 16

struct tn_proc {
    struct event_base *base;
    const tn_proc_ops *ops;
    void *arg;
    char *name;
    pid_t pid;
    int pidfd;
    int in_fd, out_fd, err_fd;
    struct event *ev_pid, *ev_in, *ev_out, *ev_err, *ev_abandon;
    struct evbuffer *in, *out, *err;
    int stderr_mode;
    size_t stderr_line_max;
    tn_log_limit *stderr_limit;
    int status;
    bool in_close; /* close stdin once drained */
    bool err_cutting;
    bool reaped, killed, done;
};

static void close_fd(int *fd, struct event **ev)
{
    if (*ev) {
        event_free(*ev);
        *ev = NULL;
    }
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static void close_stdin_now(tn_proc *p)
{
    close_fd(&p->in_fd, &p->ev_in);
    evbuffer_drain(p->in, evbuffer_get_length(p->in));
}

static void maybe_done(tn_proc *p)
{
    if (p->done || !p->reaped || p->out_fd >= 0 || p->err_fd >= 0)
        return;
    p->done = true;
    close_stdin_now(p);
    event_del(p->ev_abandon);
    /* Last statement: the owner may free p. */
    p->ops->on_done(p, p->arg, p->status);
}

static void stderr_line(void *arg, const char *line, size_t len)
{
    tn_proc *p = arg;
    if (p->stderr_mode == TN_STDERR_CLIENT) {
        if (p->ops->on_stderr_line)
            p->ops->on_stderr_line(p, p->arg, line, len);
    } else if (!p->stderr_limit || tn_log_limit_take(p->stderr_limit, tn_now_us())) {
        tn_warn("handler %s: %.*s", p->name, (int)len, line);
    }
}

static void stderr_lines(tn_proc *p, bool eof)
{
    if (p->stderr_mode == TN_STDERR_DISCARD) {
        evbuffer_drain(p->err, evbuffer_get_length(p->err));
        return;
    }
    tn_proc_lines(p->err, p->stderr_line_max, eof, &p->err_cutting, stderr_line, p);
}

static void stdout_eof(tn_proc *p)
{
    close_fd(&p->out_fd, &p->ev_out);
    if (p->ops->on_stdout)
        p->ops->on_stdout(p, p->arg, true);
}

static void stderr_eof(tn_proc *p)
{
    close_fd(&p->err_fd, &p->ev_err);
    stderr_lines(p, true);
}

/* Read what is already in a pipe without waiting for a writer that may
 * never close it. */
static void drain_fd(int fd, struct evbuffer *buf)
{
    for (int i = 0; i < ABANDON_READS; i++)
        if (evbuffer_read(buf, fd, READ_CHUNK) <= 0)
            break;
}

static void abandon(tn_proc *p)
{
    if (p->out_fd >= 0) {
        drain_fd(p->out_fd, p->out);
        stdout_eof(p);
    }
    if (p->err_fd >= 0) {
        drain_fd(p->err_fd, p->err);
        stderr_eof(p);
    }
    maybe_done(p);
}

static void abandon_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tn_proc *p = arg;
    if (p->reaped)
        abandon(p);
}

static void pid_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tn_proc *p = arg;
    int status;
    pid_t r = waitpid(p->pid, &status, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR))
        return; /* persistent event: we come back */
    if (r < 0) {
        /* Someone else reaped it; the daemon must not do that. */
        tn_warn("handler %s: waitpid(%d): %s", p->name, (int)p->pid, strerror(errno));
        status = 255 << 8;
    }
    p->reaped = true;
    p->status = status;
    close_fd(&p->pidfd, &p->ev_pid);
    if (p->killed) {
        /* The group id stays valid while members remain, so this reaches
         * descendants still running and nothing else. */
        kill(-p->pid, SIGKILL);
        abandon(p);
        return;
    }
    maybe_done(p);
}

static void out_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    tn_proc *p = arg;
    int n = evbuffer_read(p->out, fd, READ_CHUNK);
    if (n > 0) {
        if (p->ops->on_stdout)
            p->ops->on_stdout(p, p->arg, false);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    stdout_eof(p);
    maybe_done(p);
}

static void err_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    tn_proc *p = arg;
    int n = evbuffer_read(p->err, fd, READ_CHUNK);
    if (n > 0) {
        stderr_lines(p, false);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    stderr_eof(p);
    maybe_done(p);
}

static void in_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    tn_proc *p = arg;
    if (evbuffer_write(p->in, fd) < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        /* EPIPE: the child does not read (more of) its input; that is its
         * business, not an error. */
        close_stdin_now(p);
        return;
    }
    if (evbuffer_get_length(p->in) == 0) {
        event_del(p->ev_in);
        if (p->in_close)
            close_stdin_now(p);
    }
}

/* The child's ends become its fds 0-2 by dup2 in spawn order, so none of
 * our pipe fds may sit in 0-2 (possible if the daemon runs with one of its
 * standard descriptors closed): a later dup2 would clobber an earlier one. */
static int move_high(int fd)
{
    if (fd > 2)
        return fd;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int e = errno;
    close(fd);
    errno = e;
    return nfd;
}

static int make_pipe(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    fds[0] = move_high(fds[0]);
    fds[1] = move_high(fds[1]);
    if (fds[0] < 0 || fds[1] < 0)
        return -1;
    return 0;
}

static void close_pair(int fds[2])
{
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int spawn_child(pid_t *pid, const tn_proc_opts *o, int in[2], int out[2], int err[2])
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc)
        return rc;
    rc = posix_spawnattr_init(&attr);
    if (rc) {
        posix_spawn_file_actions_destroy(&fa);
        return rc;
    }
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    if (!rc && o->cwd && *o->cwd)
        rc = posix_spawn_file_actions_addchdir_np(&fa, o->cwd);
    /* Listening sockets and client connections without O_CLOEXEC must
     * not end up in a handler's program. */
    if (!rc)
        rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    /* Own group, so a timeout can kill everything the command started;
     * default dispositions (the daemon ignores SIGPIPE, and an ignored
     * signal would survive exec) and an empty mask. */
    if (!rc)
        rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (!rc)
        rc = posix_spawnattr_setpgroup(&attr, 0);
    if (!rc)
        rc = posix_spawnattr_setsigmask(&attr, &none);
    if (!rc)
        rc = posix_spawnattr_setsigdefault(&attr, &all);
    if (!rc)
        rc = posix_spawnp(pid, o->argv[0], &fa, &attr, o->argv, o->envp);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

tn_proc *tn_proc_spawn(struct event_base *base, const tn_proc_opts *o, const tn_proc_ops *ops, void *arg,
                       char *err, size_t errlen)
{
    const char *prog = o->argv && o->argv[0] ? o->argv[0] : "";
    int in[2] = { -1, -1 }, out[2] = { -1, -1 }, errp[2] = { -1, -1 };
    tn_proc *p = NULL;
    pid_t pid;
    int rc;

    if (!o->argv || !o->argv[0]) {
        snprintf(err, errlen, "cannot run: empty command");
        return NULL;
    }
    if (make_pipe(in) < 0 || make_pipe(out) < 0 || make_pipe(errp) < 0 || set_nonblock(in[1]) < 0 ||
        set_nonblock(out[0]) < 0 || set_nonblock(errp[0]) < 0) {
        snprintf(err, errlen, "cannot run %s: %s", prog, strerror(errno));
        goto fail;
    }
    rc = spawn_child(&pid, o, in, out, errp);
    close(in[0]);
    close(out[1]);
    close(errp[1]);
    in[0] = out[1] = errp[1] = -1;
    if (rc) {
        snprintf(err, errlen, "cannot run %s: %s", prog, strerror(rc));
        goto fail;
    }

    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
        /* Without a pidfd we cannot reap it from the loop; it has only just
         * started, so killing and reaping it now is quick. */
        int e = errno;
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        snprintf(err, errlen, "cannot run %s: pidfd_open: %s", prog, strerror(e));
        goto fail;
    }

    p = calloc(1, sizeof(*p));
    if (!p) {
        /* Same as above: never leave an unreaped child behind. */
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        close(pidfd);
        snprintf(err, errlen, "cannot run %s: out of memory", prog);
        goto fail;
    }
    p->base = base;
    p->ops = ops;
    p->arg = arg;
    p->pid = pid;
    p->pidfd = pidfd;
    p->in_fd = in[1];
    p->out_fd = out[0];
    p->err_fd = errp[0];
    in[1] = out[0] = errp[0] = -1;
    p->stderr_mode = o->stderr_mode;
    p->stderr_line_max = o->stderr_line_max ? o->stderr_line_max : 1024;
    p->stderr_limit = o->stderr_limit;
    p->name = strdup(o->name ? o->name : "?");
    p->in = evbuffer_new();
    p->out = evbuffer_new();
    p->err = evbuffer_new();
    p->ev_pid = event_new(base, p->pidfd, EV_READ | EV_PERSIST, pid_cb, p);
    p->ev_in = event_new(base, p->in_fd, EV_WRITE | EV_PERSIST, in_cb, p);
    p->ev_out = event_new(base, p->out_fd, EV_READ | EV_PERSIST, out_cb, p);
    p->ev_err = event_new(base, p->err_fd, EV_READ | EV_PERSIST, err_cb, p);
    p->ev_abandon = event_new(base, -1, 0, abandon_cb, p);
    if (!p->name || !p->in || !p->out || !p->err || !p->ev_pid || !p->ev_in || !p->ev_out || !p->ev_err ||
        !p->ev_abandon || event_add(p->ev_pid, NULL) < 0 || event_add(p->ev_out, NULL) < 0 ||
        event_add(p->ev_err, NULL) < 0) {
        tn_proc_free(p);
        snprintf(err, errlen, "cannot run %s: out of memory", prog);
        return NULL;
    }
    tn_debug("handler %s: started %s, pid %d", p->name, prog, (int)pid);
    return p;

fail:
    close_pair(in);
    close_pair(out);
    close_pair(errp);
    return NULL;
}

pid_t tn_proc_pid(const tn_proc *p)
{
    return p->pid;
}

struct evbuffer *tn_proc_stdout(tn_proc *p)
{
    return p->out;
}

bool tn_proc_reaped(const tn_proc *p)
{
    return p->reaped;
}

int tn_proc_write(tn_proc *p, const void *data, size_t len)
{
    if (p->in_fd < 0 || p->in_close)
        return -1;
    if (len == 0)
        return 0;
    if (evbuffer_add(p->in, data, len) < 0 || event_add(p->ev_in, NULL) < 0)
        return -1;
    return 0;
}

size_t tn_proc_stdin_pending(const tn_proc *p)
{
    return evbuffer_get_length(p->in);
}

void tn_proc_close_stdin(tn_proc *p, bool discard)
{
    if (p->in_fd < 0)
        return;
    if (discard || evbuffer_get_length(p->in) == 0)
        close_stdin_now(p);
    else
        p->in_close = true;
}

void tn_proc_kill(tn_proc *p, int sig)
{
    if (p->done)
        return;
    p->killed = true;
    if (!p->reaped) {
        /* Not reaped, so the pid cannot have been reused; the direct kill
         * covers a child that moved itself to another group. */
        if (kill(-p->pid, sig) < 0)
            kill(p->pid, sig);
        return;
    }
    /* The leader is gone but someone still holds our pipes: signal what is
     * left of the group and stop waiting for those pipes (from the loop,
     * since callbacks never run inside API calls). */
    kill(-p->pid, sig);
    event_active(p->ev_abandon, EV_TIMEOUT, 1);
}

void tn_proc_free(tn_proc *p)
{
    if (!p)
        return;
    if (!p->reaped) {
        if (kill(-p->pid, SIGKILL) < 0)
            kill(p->pid, SIGKILL);
        /* Bounded wait: SIGKILL takes effect at once unless the child is
         * stuck in the kernel, and then we rather leave a zombie than hang. */
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int left = 1000;
        for (;;) {
            int st;
            pid_t r = waitpid(p->pid, &st, WNOHANG);
            if (r == p->pid || (r < 0 && errno != EINTR))
                break;
            clock_gettime(CLOCK_MONOTONIC, &t);
            left = 1000 - (int)((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
            if (left <= 0) {
                tn_warn("handler %s: process %d does not die, left unreaped", p->name ? p->name : "?",
                        (int)p->pid);
                break;
            }
            struct pollfd pfd = { .fd = p->pidfd, .events = POLLIN };
            poll(&pfd, 1, left);
        }
    }
    close_fd(&p->pidfd, &p->ev_pid);
    close_fd(&p->in_fd, &p->ev_in);
    close_fd(&p->out_fd, &p->ev_out);
    close_fd(&p->err_fd, &p->ev_err);
    if (p->ev_abandon)
        event_free(p->ev_abandon);
    if (p->in)
        evbuffer_free(p->in);
    if (p->out)
        evbuffer_free(p->out);
    if (p->err)
        evbuffer_free(p->err);
    free(p->name);
    free(p);
}

/* ---- environment ----------------------------------------------------------- */

typedef struct envvec {
    char **v;
    size_t n, cap;
    bool oom;
} envvec;

static void env_set(envvec *e, const char *key, size_t klen, const char *val)
{
    if (e->oom || klen == 0)
        return;
    size_t vlen = strlen(val);
    char *kv = malloc(klen + vlen + 2);
    if (!kv) {
        e->oom = true;
        return;
    }
    memcpy(kv, key, klen);
    kv[klen] = '=';
    memcpy(kv + klen + 1, val, vlen + 1);
    for (size_t i = 0; i < e->n; i++)
        if (strncmp(e->v[i], key, klen) == 0 && e->v[i][klen] == '=') {
            free(e->v[i]);
            e->v[i] = kv;
            return;
        }
    if (e->n + 2 > e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 16;
        char **nv = realloc(e->v, cap * sizeof(*nv));
        if (!nv) {
            free(kv);
            e->oom = true;
            return;
        }
        e->v = nv;
        e->cap = cap;
    }
    e->v[e->n++] = kv;
    e->v[e->n] = NULL;
}

char **tn_proc_env(const tn_handler_conf *conf, char *const *extra)
{
    envvec e = { 0 };
    env_set(&e, "PATH", 4, TN_PROC_DEFAULT_PATH);
    for (size_t i = 0; i < conf->passenv.n; i++) {
        const char *val = getenv(conf->passenv.v[i]);
        if (val)
            env_set(&e, conf->passenv.v[i], strlen(conf->passenv.v[i]), val);
    }
    for (size_t i = 0; extra && extra[i]; i++) {
        const char *eq = strchr(extra[i], '=');
        if (eq)
            env_set(&e, extra[i], (size_t)(eq - extra[i]), eq + 1);
    }
    for (size_t i = 0; i < conf->env.n; i++)
        env_set(&e, conf->env.v[i].key, strlen(conf->env.v[i].key), conf->env.v[i].val ? conf->env.v[i].val : "");
    if (e.oom) {
        tn_proc_env_free(e.v);
        return NULL;
    }
    return e.v;
}

void tn_proc_env_free(char **env)
{
    if (!env)
        return;
    for (size_t i = 0; env[i]; i++)
        free(env[i]);
    free(env);
}

/* ---- helpers ------------------------------------------------------------- */

char **tn_proc_argv(const tn_strlist *list)
{
    char **v = calloc(list->n + 1, sizeof(*v));
    if (v)
        for (size_t i = 0; i < list->n; i++)
            v[i] = list->v[i];
    return v;
}

static int check_file(const char *path, const char *prog, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        snprintf(err, errlen, "cannot run %s: %s", prog, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "cannot run %s: not a regular file", prog);
        return -1;
    }
    if (access(path, X_OK) < 0) {
        snprintf(err, errlen, "cannot run %s: %s", prog, strerror(errno));
        return -1;
    }
    return 0;
}

int tn_proc_check_program(const char *prog, const char *cwd, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (!prog || !*prog) {
        snprintf(err, errlen, "command is empty");
        return -1;
    }
    if (strchr(prog, '/')) {
        int n = prog[0] != '/' && cwd && *cwd ? snprintf(path, sizeof(path), "%s/%s", cwd, prog)
                                              : snprintf(path, sizeof(path), "%s", prog);
        if (n < 0 || (size_t)n >= sizeof(path)) {
            snprintf(err, errlen, "cannot run %s: path too long", prog);
            return -1;
        }
        return check_file(path, prog, err, errlen);
    }
    /* posix_spawnp() searches the daemon's PATH (glibc's default when it
     * is unset), so that is what must contain the program. */
    const char *dirs = getenv("PATH");
    if (!dirs)
        dirs = "/bin:/usr/bin";
    for (const char *d = dirs;;) {
        const char *end = strchr(d, ':');
        size_t dl = end ? (size_t)(end - d) : strlen(d);
        int n = dl ? snprintf(path, sizeof(path), "%.*s/%s", (int)dl, d, prog)
                   : snprintf(path, sizeof(path), "%s", prog);
        struct stat st;
        if (n > 0 && (size_t)n < sizeof(path) && stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
            access(path, X_OK) == 0)
            return 0;
        if (!end)
            break;
        d = end + 1;
    }
    snprintf(err, errlen, "cannot run %s: not found in PATH", prog);
    return -1;
}

int tn_proc_check_conf(const tn_handler_conf *conf, tn_pos *at, char *err, size_t errlen)
{
    if (at)
        *at = conf->command_pos;
    if (conf->command.n == 0 || !conf->command.v[0] || !*conf->command.v[0]) {
        snprintf(err, errlen, "command is empty");
        return -1;
    }
    if (conf->cwd && *conf->cwd) {
        struct stat st;
        if (at)
            *at = conf->cwd_pos;
        if (stat(conf->cwd, &st) < 0) {
            snprintf(err, errlen, "cwd %s: %s", conf->cwd, strerror(errno));
            return -1;
        }
        if (!S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "cwd %s: not a directory", conf->cwd);
            return -1;
        }
    }
    if (at)
        *at = conf->command_pos;
    return tn_proc_check_program(conf->command.v[0], conf->cwd, err, errlen);
}

void tn_proc_status_text(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(buf, len, "wait status %d", status);
}

static void emit_line(struct evbuffer *buf, size_t take, bool whole,
                      void (*fn)(void *arg, const char *line, size_t len), void *arg)
{
    const char *data = take ? (const char *)evbuffer_pullup(buf, (ev_ssize_t)take) : "";
    size_t n = take;
    if (whole && n > 0 && data[n - 1] == '\r')
        n--;
    fn(arg, data ? data : "", data ? n : 0);
}

void tn_proc_lines(struct evbuffer *buf, size_t max, bool eof, bool *cutting,
                   void (*fn)(void *arg, const char *line, size_t len), void *arg)
{
    if (max == 0)
        max = 1;
    for (;;) {
        size_t avail = evbuffer_get_length(buf);
        if (avail == 0)
            break;
        struct evbuffer_ptr nl = evbuffer_search(buf, "\n", 1, NULL);
        if (nl.pos < 0) {
            if (*cutting) {
                evbuffer_drain(buf, avail);
            } else if (avail >= max) {
                emit_line(buf, max, false, fn, arg);
                evbuffer_drain(buf, max);
                *cutting = true;
                continue;
            } else if (eof) {
                emit_line(buf, avail, true, fn, arg);
                evbuffer_drain(buf, avail);
            }
            break;
        }
        size_t len = (size_t)nl.pos;
        if (*cutting) {
            *cutting = false;
        } else if (len > max) {
            emit_line(buf, max, false, fn, arg);
        } else {
            emit_line(buf, len, true, fn, arg);
        }
        evbuffer_drain(buf, len + 1);
    }
    if (eof)
        *cutting = false;
}
