/* SPDX-License-Identifier: MIT */
/* stream.c - the "stream" handler: one process per connection, inetd or
 * websocketd style.
 *
 * The process starts when a session first uses the handler (attach). Each
 * message becomes a line on its stdin, each line of its stdout is pushed to
 * the session, and its exit closes the session. A peer that shuts down its
 * side gets the process's stdin closed and the session stays until the
 * process has said its last and exited. When the session ends first
 * (detach) the process gets its stdin closed and SIGTERM, then SIGKILL two
 * seconds later; its state outlives the session until it is reaped, holding
 * a reference on the handler meanwhile, and never touches the session again.
 *
 * Session callbacks (push, close) may detach us synchronously, so detach only
 * marks and kills; the state is freed where the process ends (or at detach
 * when it already has).
 *
 * A session that refuses a push (its unread output is over max_output) is a
 * slow reader, as in broadcast: the rest of the output is dropped and the
 * session closed (WebSocket 1008) once the lines at hand are split, so the
 * process cannot make the daemon buffer what the peer does not read. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers/handler.h"
#include "log.h"
#include "proc.h"

/* Grace between SIGTERM and SIGKILL once the connection is gone. */
#define KILL_GRACE_MS 2000

typedef struct stream_sess stream_sess;

typedef struct stream_state {
    tn_handler *h;
    char **argv;       /* the command, NULL-terminated as execve wants it */
    tn_log_limit *stderr_limit;
    stream_sess *head; /* attached and dying processes */
    char err[256];     /* why the last attach failed */
} stream_state;

struct stream_sess {
    stream_sess *prev, *next;
    stream_state *st;
    tn_session *session; /* NULL once detached */
    tn_proc *proc;
    struct event *kill_timer;
    bool cutting;   /* dropping the rest of an overlong stdout line */
    bool closing;   /* we asked the session to close */
    bool in_close;  /* inside session->ops->close() from on_done */
    bool done;      /* process reaped, pipes closed */
    bool detached;
    bool holds_ref;
    bool slow;      /* a push was refused: close after the lines at hand */
};

static void sess_unlink(stream_sess *ss)
{
    if (ss->prev)
        ss->prev->next = ss->next;
    else
        ss->st->head = ss->next;
    if (ss->next)
        ss->next->prev = ss->prev;
    ss->prev = ss->next = NULL;
}

static void sess_free(stream_sess *ss)
{
    tn_handler *h = ss->st->h;
    bool ref = ss->holds_ref;
    sess_unlink(ss);
    tn_proc_free(ss->proc);
    if (ss->kill_timer)
        event_free(ss->kill_timer);
    free(ss);
    /* Last: this may destroy a handler dropped by a reload. */
    if (ref)
        tn_handler_unref(h);
}

static void push_line(void *arg, const char *line, size_t len)
{
    stream_sess *ss = arg;
    if (!ss->session || ss->closing || ss->slow)
        return;
    if (ss->session->ops->push(ss->session, line, len) < 0)
        ss->slow = true; /* the session counted the refusal */
}

/* After a refused push: the peer does not read, close it. */
static void drop_slow(stream_sess *ss)
{
    if (!ss->slow || !ss->session || ss->closing)
        return;
    tn_warn("handler %s: dropping slow reader (connection %llu)", ss->st->h->name,
            (unsigned long long)ss->session->id);
    ss->closing = true;
    ss->session->ops->close(ss->session, "slow reader");
    /* its output has nowhere to go while the session drains (a line client
     * gets write_timeout to read what is queued): stop it now */
    if (!ss->detached)
        tn_proc_kill(ss->proc, SIGTERM);
}

static void stream_on_stdout(tn_proc *p, void *arg, bool eof)
{
    stream_sess *ss = arg;
    struct evbuffer *out = tn_proc_stdout(p);
    if (!ss->session) {
        evbuffer_drain(out, evbuffer_get_length(out));
        return;
    }
    tn_proc_lines(out, (size_t)ss->st->h->conf.max_output, eof, &ss->cutting, push_line, ss);
    drop_slow(ss);
}

static void stream_on_stderr_line(tn_proc *p, void *arg, const char *line, size_t len)
{
    (void)p;
    push_line(arg, line, len);
    drop_slow(arg);
}

static void stream_on_done(tn_proc *p, void *arg, int status)
{
    (void)p;
    stream_sess *ss = arg;
    char how[64];
    tn_proc_status_text(status, how, sizeof(how));
    tn_debug("handler %s: stream process %d ended: %s", ss->st->h->name, (int)tn_proc_pid(p), how);
    ss->done = true;
    if (ss->kill_timer)
        event_del(ss->kill_timer);
    if (!ss->detached && !ss->closing) {
        ss->closing = true;
        ss->in_close = true;
        ss->session->ops->close(ss->session, "process exited");
        ss->in_close = false;
    }
    if (ss->detached)
        sess_free(ss); /* frees p: allowed in on_done */
}

static const tn_proc_ops stream_proc_ops = {
    .on_stdout = stream_on_stdout,
    .on_stderr_line = stream_on_stderr_line,
    .on_done = stream_on_done,
};

static void stream_kill(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    stream_sess *ss = arg;
    tn_proc_kill(ss->proc, SIGKILL);
}

static int stream_init(tn_handler *h, char *err, size_t errlen)
{
    if (tn_proc_check_conf(&h->conf, NULL, err, errlen) < 0)
        return -1;
    stream_state *st = calloc(1, sizeof(*st));
    if (!st || !(st->argv = tn_proc_argv(&h->conf.command)) ||
        !(st->stderr_limit = tn_log_limit_new(h->base, h->name))) {
        if (st)
            free(st->argv);
        free(st);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    st->h = h;
    h->state = st;
    return 0;
}

static void *stream_attach(tn_handler *h, tn_session *s)
{
    stream_state *st = h->state;
    const tn_handler_conf *c = &h->conf;
    stream_sess *ss = calloc(1, sizeof(*ss));
    char **envp = ss ? tn_proc_env(c, NULL) : NULL;
    if (!envp) {
        free(ss);
        snprintf(st->err, sizeof(st->err), "cannot run %s: out of memory", c->command.v[0]);
        return NULL;
    }
    tn_proc_opts o = {
        .argv = st->argv,
        .envp = envp,
        .cwd = c->cwd,
        .stderr_mode = c->stderr_mode,
        .stderr_line_max = (size_t)c->max_output,
        .name = h->name,
        .stderr_limit = st->stderr_limit,
    };
    ss->proc = tn_proc_spawn(h->base, &o, &stream_proc_ops, ss, st->err, sizeof(st->err));
    tn_proc_env_free(envp);
    if (!ss->proc) {
        tn_warn("handler %s: %s", h->name, st->err);
        free(ss);
        return NULL;
    }
    ss->st = st;
    ss->session = s;
    ss->next = st->head;
    if (st->head)
        st->head->prev = ss;
    st->head = ss;
    return ss;
}

static void stream_detach(tn_handler *h, tn_session *s, void *state)
{
    (void)s;
    stream_sess *ss = state;
    ss->detached = true;
    ss->session = NULL;
    if (ss->done) {
        if (!ss->in_close)
            sess_free(ss);
        return;
    }
    tn_proc_close_stdin(ss->proc, true);
    tn_proc_kill(ss->proc, SIGTERM);
    struct timeval tv = { KILL_GRACE_MS / 1000, (KILL_GRACE_MS % 1000) * 1000 };
    ss->kill_timer = evtimer_new(h->base, stream_kill, ss);
    if (!ss->kill_timer || evtimer_add(ss->kill_timer, &tv) < 0)
        tn_proc_kill(ss->proc, SIGKILL);
    tn_handler_ref(h);
    ss->holds_ref = true;
}

static bool stream_input_end(tn_handler *h, tn_session *s, void *state)
{
    (void)h;
    (void)s;
    stream_sess *ss = state;
    if (ss->done || ss->closing)
        return false;
    tn_proc_close_stdin(ss->proc, false); /* after what is queued: the last lines count */
    return true;
}

static tn_result stream_handle(tn_handler *h, tn_call *call)
{
    stream_state *st = h->state;
    tn_session *s = call->ctx.session;
    if (!st) {
        evbuffer_add_printf(call->out, "shutting down");
        return TN_FAIL;
    }
    if (!s) {
        evbuffer_add_printf(call->out, "stream handlers need a connection");
        return TN_FAIL;
    }
    st->err[0] = '\0';
    stream_sess *ss = tn_session_state(s, h);
    if (!ss) {
        evbuffer_add_printf(call->out, "%s", st->err[0] ? st->err : "cannot start the process");
        return TN_FAIL;
    }
    if (ss->closing)
        return TN_SILENT; /* the session is on its way out */
    if (tn_proc_write(ss->proc, call->payload, call->len) < 0 || tn_proc_write(ss->proc, "\n", 1) < 0) {
        evbuffer_add_printf(call->out, "process closed its input");
        return TN_FAIL;
    }
    if (tn_proc_stdin_pending(ss->proc) > (size_t)h->conf.max_output) {
        ss->closing = true;
        s->ops->close(s, "stream input overflow");
    }
    return TN_SILENT;
}

/* Attached and dying sessions hold references on the handler, so normally
 * none is left here; at exit the registry destroys busy handlers anyway,
 * and their processes are killed and reaped (bounded wait) rather than
 * leaked. Their references die with the handler. */
static void stream_destroy(tn_handler *h)
{
    stream_state *st = h->state;
    if (!st)
        return;
    h->state = NULL;
    while (st->head) {
        stream_sess *ss = st->head;
        st->head = ss->next;
        tn_proc_free(ss->proc);
        if (ss->kill_timer)
            event_free(ss->kill_timer);
        free(ss);
    }
    tn_log_limit_free(st->stderr_limit);
    free(st->argv);
    free(st);
}

const tn_handler_ops tn_stream_ops = {
    .type = "stream",
    .init = stream_init,
    .handle = stream_handle,
    .attach = stream_attach,
    .detach = stream_detach,
    .input_end = stream_input_end,
    .destroy = stream_destroy,
};
