/* SPDX-License-Identifier: MIT */
/* exec.c - the "exec" handler: one process per message.
 *
 * The payload goes to the command's stdin, its stdout (one trailing newline
 * removed) is the reply. Every message becomes a tn_job answered when the
 * process is done; at most max_concurrency processes run per handler and
 * further jobs wait in a FIFO of at most max_queue, beyond which a message
 * is refused at once with "busy".
 *
 * Over HTTP it is a CGI/1.1 gateway: the request comes as the usual CGI
 * variables, and output that starts with a CGI header block (Status,
 * Content-Type, Location, other fields, then an empty line) sets the
 * response's status and headers; any other output is the body as is.
 *
 * Lifetime rule: tn_job_done() may deliver a reply to a front end that then
 * reenters this handler, and it may drop the last reference to the handler,
 * so every path finishes its own bookkeeping first and calls tn_job_done()
 * as its last action on the handler's state. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <ctype.h>
#include <strings.h>

#include "handlers/handler.h"
#include "log.h"
#include "proc.h"
#include "proto/http_msg.h"

/* How much of the first stderr line an error detail carries. */
#define ERRLINE_MAX 1024

typedef struct exec_state exec_state;

/* One message: queued (proc == NULL) or running. */
typedef struct exec_run {
    struct exec_run *prev, *next;
    exec_state *st;
    tn_job *job;
    tn_proc *proc;
    struct event *timer;
    char *errline; /* stderr: client, first line */
    bool timed_out, overflow;
} exec_run;

typedef struct run_list {
    exec_run *head, *tail;
    size_t n;
} run_list;

struct exec_state {
    tn_handler *h;
    char **argv; /* the command, NULL-terminated as execve wants it */
    tn_log_limit *stderr_limit;
    run_list running;
    run_list queue;
};

static void list_push(run_list *l, exec_run *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
}

static void list_unlink(run_list *l, exec_run *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    l->n--;
}

static void run_free(exec_run *r)
{
    tn_proc_free(r->proc);
    if (r->timer)
        event_free(r->timer);
    free(r->errline);
    free(r);
}

static void exec_on_stdout(tn_proc *p, void *arg, bool eof)
{
    (void)eof;
    exec_run *r = arg;
    struct evbuffer *out = tn_proc_stdout(p);
    if (r->overflow) {
        evbuffer_drain(out, evbuffer_get_length(out));
        return;
    }
    if (evbuffer_get_length(out) > (size_t)r->st->h->conf.max_output) {
        r->overflow = true;
        evbuffer_drain(out, evbuffer_get_length(out));
        tn_proc_kill(p, SIGKILL);
    }
}

static void exec_on_stderr_line(tn_proc *p, void *arg, const char *line, size_t len)
{
    (void)p;
    exec_run *r = arg;
    if (r->errline)
        return;
    if (len > ERRLINE_MAX)
        len = ERRLINE_MAX;
    r->errline = strndup(line, len);
}

static void exec_on_done(tn_proc *p, void *arg, int status);

static const tn_proc_ops exec_proc_ops = {
    .on_stdout = exec_on_stdout,
    .on_stderr_line = exec_on_stderr_line,
    .on_done = exec_on_done,
};

static void exec_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    exec_run *r = arg;
    r->timed_out = true;
    tn_proc_kill(r->proc, SIGKILL);
}

/* The TLS session as mod_ssl names it, into ENV (room for 4); returns how
 * many were set. */
static size_t tls_env(const tn_tls_info *tls, char **env)
{
    size_t i = 0;
    if (!tls)
        return 0;
#define PUT(...) (asprintf(&env[i], __VA_ARGS__) < 0 ? (void)(env[i] = NULL) : (void)i++)
    PUT("SSL_PROTOCOL=%s", tls->version);
    PUT("SSL_CIPHER=%s", tls->cipher);
    PUT("SSL_CLIENT_VERIFY=%s", tls->verify);
    if (tls->subject)
        PUT("SSL_CLIENT_S_DN=%s", tls->subject);
#undef PUT
    return i;
}

/* The CGI/1.1 meta-variables of an HTTP request (RFC 3875), as "K=V"
 * strings in an array freed with tn_proc_env_free(). */
static char **cgi_env(const tn_msg_ctx *ctx, size_t body_len)
{
    const tn_http_request *r = ctx->http;
    size_t n = 24 + r->nheaders, i = 0;
    char **env = calloc(n + 1, sizeof(char *));
    if (!env)
        return NULL;
    const char *ctype = tn_http_header_get(r, "Content-Type");
    const char *host = tn_http_header_get(r, "Host");
    const char *port = strrchr(r->remote_addr ? r->remote_addr : "", ':');
    size_t iplen = r->remote_ip ? strlen(r->remote_ip) : 0;
#define PUT(...) (asprintf(&env[i], __VA_ARGS__) < 0 ? (void)(env[i] = NULL) : (void)i++)
    PUT("GATEWAY_INTERFACE=CGI/1.1");
    PUT("SERVER_SOFTWARE=tusknetd");
    PUT("SERVER_PROTOCOL=HTTP/%d.%d", r->http_major, r->http_minor);
    PUT("REQUEST_METHOD=%s", r->method);
    PUT("PATH_INFO=%s", r->path);
    PUT("SCRIPT_NAME=");
    PUT("QUERY_STRING=%s", r->query);
    PUT("REQUEST_URI=%s", r->target);
    PUT("REMOTE_ADDR=%.*s", (int)iplen, r->remote_ip ? r->remote_ip : "");
    PUT("REMOTE_PORT=%s", port ? port + 1 : "");
    if (host)
        PUT("SERVER_NAME=%s", host);
    if (ctype)
        PUT("CONTENT_TYPE=%s", ctype);
    if (body_len || tn_http_header_get(r, "Content-Length") || tn_http_header_get(r, "Transfer-Encoding"))
        PUT("CONTENT_LENGTH=%zu", body_len);
    if (ctx->tls)
        PUT("HTTPS=on");
    i += tls_env(ctx->tls, env + i);
    for (size_t h = 0; h < r->nheaders && i < n; h++) {
        const char *name = r->headers[h].name;
        /* these two are CONTENT_TYPE/CONTENT_LENGTH; Proxy is httpoxy */
        if (!strcasecmp(name, "Content-Type") || !strcasecmp(name, "Content-Length") || !strcasecmp(name, "Proxy"))
            continue;
        char var[256];
        size_t k = 0;
        k += (size_t)snprintf(var, sizeof(var), "HTTP_");
        for (const char *p = name; *p && k < sizeof(var) - 1; p++)
            var[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        var[k] = '\0';
        PUT("%s=%s", var, r->headers[h].value);
    }
#undef PUT
    env[i] = NULL;
    return env;
}

/* If DATA starts with a CGI header block, applies it to the response and
 * returns the body's offset; 0 when DATA is all body. */
static size_t cgi_response(tn_http_request *r, const char *data, size_t len)
{
    /* a header block needs "Name: value" first and an empty line to end it */
    size_t i = 0;
    while (i < len && (isalnum((unsigned char)data[i]) || data[i] == '-'))
        i++;
    if (i == 0 || i >= len || data[i] != ':')
        return 0;
    const char *end = NULL;
    size_t body = 0;
    for (size_t k = 0; k + 1 < len; k++) {
        if (data[k] == '\n' && data[k + 1] == '\n') {
            end = data + k;
            body = k + 2;
            break;
        }
        if (data[k] == '\n' && k + 2 < len && data[k + 1] == '\r' && data[k + 2] == '\n') {
            end = data + k;
            body = k + 3;
            break;
        }
    }
    if (!end)
        return 0;
    bool have_status = false, have_location = false;
    for (const char *line = data; line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line) + 1);
        if (!eol)
            eol = end;
        size_t ll = (size_t)(eol - line);
        if (ll && line[ll - 1] == '\r')
            ll--;
        const char *colon = memchr(line, ':', ll);
        if (colon) {
            const char *name = tn_http_strdup(r, line, (size_t)(colon - line));
            const char *v = colon + 1;
            while (v < line + ll && (*v == ' ' || *v == '\t'))
                v++;
            const char *value = tn_http_strdup(r, v, (size_t)(line + ll - v));
            if (!strcasecmp(name, "Status")) {
                int st = atoi(value);
                if (st >= 100 && st <= 599) {
                    r->status = st;
                    have_status = true;
                }
            } else if (!strcasecmp(name, "Content-Type")) {
                tn_http_set_header(r, "Content-Type", value);
            } else {
                if (!strcasecmp(name, "Location"))
                    have_location = true;
                tn_http_add_header(r, name, value);
            }
        }
        line = eol + 1;
    }
    if (have_location && !have_status)
        r->status = 302;
    return body;
}

/* Spawn R's process and feed it PAYLOAD; on failure err holds the reason.
 * CTX is the message's context (CGI variables over HTTP). */
static int run_start(exec_run *r, const tn_msg_ctx *ctx, const char *payload, size_t len, char *err, size_t errlen)
{
    tn_handler *h = r->st->h;
    const tn_handler_conf *c = &h->conf;
    char **cgi = NULL;
    if (ctx && ctx->http) {
        cgi = cgi_env(ctx, len);
    } else if (ctx && ctx->tls && (cgi = calloc(5, sizeof(char *)))) {
        tls_env(ctx->tls, cgi);
    }
    char **envp = tn_proc_env(c, cgi);
    if (cgi)
        tn_proc_env_free(cgi);
    if (!envp) {
        snprintf(err, errlen, "cannot run %s: out of memory", c->command.v[0]);
        return -1;
    }
    tn_proc_opts o = {
        .argv = r->st->argv,
        .envp = envp,
        .cwd = c->cwd,
        .stderr_mode = c->stderr_mode,
        .stderr_line_max = ERRLINE_MAX,
        .name = h->name,
        .stderr_limit = r->st->stderr_limit,
    };
    r->proc = tn_proc_spawn(h->base, &o, &exec_proc_ops, r, err, errlen);
    tn_proc_env_free(envp);
    if (!r->proc)
        return -1;
    tn_proc_write(r->proc, payload, len);
    tn_proc_close_stdin(r->proc, false);
    if (c->timeout > 0) {
        struct timeval tv = { (time_t)(c->timeout / 1000), (suseconds_t)(c->timeout % 1000) * 1000 };
        r->timer = evtimer_new(h->base, exec_timeout, r);
        if (!r->timer || evtimer_add(r->timer, &tv) < 0) {
            snprintf(err, errlen, "cannot run %s: out of memory", c->command.v[0]);
            if (r->timer)
                event_free(r->timer);
            r->timer = NULL;
            tn_proc_free(r->proc);
            r->proc = NULL;
            return -1;
        }
    }
    list_push(&r->st->running, r);
    return 0;
}

/* Start queued jobs while slots are free. The caller still holds a job of
 * this handler, so finishing a job here cannot free the handler. */
static void pump(exec_state *st)
{
    char err[256];
    while (st->queue.head && st->running.n < (size_t)st->h->conf.max_concurrency) {
        exec_run *r = st->queue.head;
        list_unlink(&st->queue, r);
        if (run_start(r, &r->job->ctx, r->job->payload, r->job->len, err, sizeof(err)) == 0)
            continue;
        tn_job *job = r->job;
        job->cancel = NULL;
        run_free(r);
        tn_job_done(job, TN_FAIL, err, strlen(err));
    }
}

static void exec_on_done(tn_proc *p, void *arg, int status)
{
    exec_run *r = arg;
    exec_state *st = r->st;
    tn_job *job = r->job;
    const tn_handler_conf *c = &st->h->conf;
    struct evbuffer *reply = NULL;
    char detail[ERRLINE_MAX + 64];
    tn_result res = TN_FAIL;

    if (r->timed_out) {
        snprintf(detail, sizeof(detail), "timeout");
    } else if (r->overflow) {
        snprintf(detail, sizeof(detail), "output too large");
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        res = TN_REPLY;
        reply = evbuffer_new();
        if (reply)
            evbuffer_add_buffer(reply, tn_proc_stdout(p));
        else
            res = TN_FAIL, snprintf(detail, sizeof(detail), "out of memory");
    } else {
        tn_proc_status_text(status, detail, sizeof(detail));
        if (c->stderr_mode == TN_STDERR_CLIENT && r->errline) {
            size_t n = strlen(detail);
            snprintf(detail + n, sizeof(detail) - n, ": %s", r->errline);
        }
    }

    /* The run is gone: a front end cancelling the job from inside a reply
     * delivered by pump() must not reach it. */
    job->cancel = NULL;
    job->hstate = NULL;
    list_unlink(&st->running, r);
    run_free(r); /* frees p: allowed in on_done */
    pump(st);

    if (res == TN_REPLY) {
        size_t len = evbuffer_get_length(reply);
        const char *data = len ? (const char *)evbuffer_pullup(reply, -1) : "";
        if (job->ctx.http) {
            /* CGI: headers, then the body exactly as the program wrote it */
            size_t off = cgi_response(job->ctx.http, data, len);
            tn_job_done(job, TN_REPLY, data + off, len - off);
            evbuffer_free(reply);
            return;
        }
        if (len && data[len - 1] == '\n') {
            len--;
            if (len && data[len - 1] == '\r')
                len--;
        }
        tn_job_done(job, TN_REPLY, data, len);
        evbuffer_free(reply);
    } else {
        tn_job_done(job, TN_FAIL, detail, strlen(detail));
    }
}

/* The front end went away. A queued job ends now; a running one is killed
 * and ends through exec_on_done, its result dropped by the registry. */
static void exec_cancel(tn_job *job)
{
    exec_run *r = job->hstate;
    if (r->proc) {
        tn_proc_kill(r->proc, SIGKILL);
        return;
    }
    job->cancel = NULL;
    list_unlink(&r->st->queue, r);
    run_free(r);
    tn_job_done(job, TN_FAIL, "cancelled", 9);
}

static int exec_init(tn_handler *h, char *err, size_t errlen)
{
    if (tn_proc_check_conf(&h->conf, NULL, err, errlen) < 0)
        return -1;
    exec_state *st = calloc(1, sizeof(*st));
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

static tn_result exec_handle(tn_handler *h, tn_call *call)
{
    exec_state *st = h->state;
    char err[256];
    exec_run *r;

    if (!st) {
        evbuffer_add_printf(call->out, "shutting down");
        return TN_FAIL;
    }
    if (st->running.n >= (size_t)h->conf.max_concurrency || st->queue.head) {
        if (st->queue.n >= (size_t)h->conf.max_queue) {
            evbuffer_add(call->out, "busy", 4);
            return TN_FAIL;
        }
        r = calloc(1, sizeof(*r));
        tn_job *job = r ? tn_job_begin(call) : NULL;
        if (!job) {
            free(r);
            evbuffer_add_printf(call->out, "out of memory");
            return TN_FAIL;
        }
        r->st = st;
        r->job = job;
        job->hstate = r;
        job->cancel = exec_cancel;
        list_push(&st->queue, r);
        return TN_LATER;
    }

    /* Spawn before beginning the job, so that a program that cannot run
     * is answered at once and no job exists to finish. */
    r = calloc(1, sizeof(*r));
    if (!r) {
        evbuffer_add_printf(call->out, "out of memory");
        return TN_FAIL;
    }
    r->st = st;
    if (run_start(r, &call->ctx, call->payload, call->len, err, sizeof(err)) < 0) {
        free(r);
        evbuffer_add(call->out, err, strlen(err));
        return TN_FAIL;
    }
    tn_job *job = tn_job_begin(call);
    if (!job) {
        list_unlink(&st->running, r);
        run_free(r);
        evbuffer_add_printf(call->out, "out of memory");
        return TN_FAIL;
    }
    r->job = job;
    job->hstate = r;
    job->cancel = exec_cancel;
    return TN_LATER;
}

/* Normally the last job's tn_job_done() is what lets the handler go, and
 * nothing is left here. At exit the registry destroys handlers that are
 * still busy: their processes are killed and their jobs end with an error.
 * Those jobs still count references on the handler being destroyed, so one
 * more is taken first, lest their tn_job_done() destroy it a second time. */
static void exec_destroy(tn_handler *h)
{
    exec_state *st = h->state;
    if (!st)
        return;
    h->state = NULL; /* a front end reentering from a reply gets "shutting down" */
    if (st->running.head || st->queue.head)
        tn_handler_ref(h);
    while (st->running.head || st->queue.head) {
        run_list *l = st->running.head ? &st->running : &st->queue;
        exec_run *r = l->head;
        tn_job *job = r->job;
        job->cancel = NULL;
        list_unlink(l, r);
        run_free(r);
        tn_job_done(job, TN_FAIL, "shutting down", 13);
    }
    tn_log_limit_free(st->stderr_limit);
    free(st->argv);
    free(st);
}

const tn_handler_ops tn_exec_ops = {
    .type = "exec",
    .init = exec_init,
    .handle = exec_handle,
    .destroy = exec_destroy,
};
