/* SPDX-License-Identifier: MIT */
/* plugin.c - the plugin handler: a shared object implementing
 * include/tusknet/plugin.h, mapped onto the handler interface.
 *
 * Loading. The object is copied into a memfd and opened through
 * /proc/self/fd/N with RTLD_LOCAL, never from its path: the dynamic loader
 * hands back the already loaded object for a name it has seen, so a reload
 * after the file was replaced at the same path would otherwise get the old
 * code, and a file overwritten in place would change under a mapping in
 * use. With a private copy each load is a new object beside the old ones,
 * and the memfd stays open while it is loaded so that its name stays unique.
 *
 * Lifetime. An instance (object + the plugin's state) belongs to one
 * tn_handler, which lives while the config, a job or a session refers to
 * it; a reload that changes `path`, or finds the file changed (inode, size,
 * mtime), builds a new handler, and the old one goes with its last user.
 * That last user may be the plugin itself (complete() or close() from its
 * own timer), so destroy() and dlclose() are never run from inside a call
 * into the plugin: they are deferred to a libevent finalizer, which runs in
 * a later loop iteration, or at event_base_free() on shutdown. */
#include "handlers/plugin.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "json.h"
#include "log.h"
#include "proto/http_msg.h"
#include "tusknet/plugin.h"

#define MAX_COUNTERS 32
#define COUNTER_NAME 49

typedef struct plugin_obj {
    void *dl;
    int fd; /* the memfd the object was loaded from */
    const tn_plugin_def *def;
    struct stat st; /* the file at load time */
} plugin_obj;

typedef struct plugin_inst {
    tn_plugin_host host; /* first: host callbacks find their instance by it */
    plugin_obj obj;
    void *state;
    char *name;
    struct event_base *base;
    char *path;
    size_t ncounters;
    char counter_names[MAX_COUNTERS][COUNTER_NAME];
    int64_t counters[MAX_COUNTERS];
} plugin_inst;

/* A call as the plugin sees it: on the stack while handle() runs, or
 * allocated by later() around the job. */
struct tn_plugin_call {
    tn_call *call; /* sync */
    tn_job *job;   /* held */
    plugin_inst *inst;
    void *data;
    void *sstate;
    tn_plugin_call *held; /* sync: what later() returned */
    char addr[80];
};

/* Per-session state kept for the plugin. */
typedef struct plugin_sess {
    void *sstate;
} plugin_sess;

/* ---- loading ------------------------------------------------------------ */

static void obj_unload(plugin_obj *o)
{
    if (o->dl)
        dlclose(o->dl);
    if (o->fd >= 0)
        close(o->fd);
    o->dl = NULL;
    o->fd = -1;
}

static int copy_to_memfd(const char *path, struct stat *st, char *err, size_t errlen)
{
    int src = open(path, O_RDONLY | O_CLOEXEC);
    if (src < 0) {
        snprintf(err, errlen, "plugin '%s': %s", path, strerror(errno));
        return -1;
    }
    if (fstat(src, st) < 0 || !S_ISREG(st->st_mode)) {
        snprintf(err, errlen, "plugin '%s': not a regular file", path);
        close(src);
        return -1;
    }
    int fd = memfd_create("tusknet-plugin", MFD_CLOEXEC);
    off_t off = 0;
    errno = 0;
    while (fd >= 0 && off < st->st_size) {
        ssize_t n = sendfile(fd, src, &off, (size_t)(st->st_size - off));
        if (n <= 0) {
            close(fd);
            fd = -1;
        }
    }
    if (fd < 0)
        snprintf(err, errlen, "plugin '%s': cannot copy it: %s", path, errno ? strerror(errno) : "short read");
    close(src);
    return fd;
}

static int obj_load(const char *path, plugin_obj *o, char *err, size_t errlen)
{
    memset(o, 0, sizeof(*o));
    o->fd = copy_to_memfd(path, &o->st, err, errlen);
    if (o->fd < 0)
        return -1;
    char name[64];
    snprintf(name, sizeof(name), "/proc/self/fd/%d", o->fd);
    /* a name still held by an object that could not be unloaded would give
     * that object back: take another descriptor number */
    for (int tries = 0; tries < 8; tries++) {
        void *stale = dlopen(name, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
        if (!stale)
            break;
        dlclose(stale);
        int fd = fcntl(o->fd, F_DUPFD_CLOEXEC, o->fd + 1);
        if (fd < 0)
            break;
        close(o->fd);
        o->fd = fd;
        snprintf(name, sizeof(name), "/proc/self/fd/%d", o->fd);
    }
    o->dl = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!o->dl) {
        const char *why = dlerror();
        size_t n = strlen(name);
        /* dlerror() names the /proc path first: the file's own is given */
        if (why && strncmp(why, name, n) == 0 && strncmp(why + n, ": ", 2) == 0)
            why += n + 2;
        snprintf(err, errlen, "plugin '%s': cannot load it: %s", path, why ? why : "?");
        obj_unload(o);
        return -1;
    }
    o->def = dlsym(o->dl, TN_PLUGIN_SYMBOL);
    if (!o->def) {
        snprintf(err, errlen, "plugin '%s': no symbol '%s' (not a tusknetd plugin)", path, TN_PLUGIN_SYMBOL);
    } else if (o->def->abi != TN_PLUGIN_ABI) {
        snprintf(err, errlen, "plugin '%s': plugin ABI version %u, this tusknetd has %u", path,
                 (unsigned)o->def->abi, (unsigned)TN_PLUGIN_ABI);
    } else if (!o->def->init || !o->def->handle) {
        snprintf(err, errlen, "plugin '%s': '%s' has no %s", path, TN_PLUGIN_SYMBOL,
                 o->def->init ? "handle" : "init");
    } else {
        return 0;
    }
    obj_unload(o);
    return -1;
}

int tn_plugin_check(const char *path, char *err, size_t errlen)
{
    plugin_obj o;
    if (obj_load(path, &o, err, errlen) < 0)
        return -1;
    obj_unload(&o);
    return 0;
}

/* ---- host services -------------------------------------------------------- */

static const tn_msg_ctx *call_ctx(const tn_plugin_call *pc)
{
    return pc->call ? &pc->call->ctx : &pc->job->ctx;
}

static const char *h_payload(const tn_plugin_call *pc, size_t *len)
{
    *len = pc->call ? pc->call->len : pc->job->len;
    return pc->call ? pc->call->payload : pc->job->payload;
}

static void h_context(const tn_plugin_call *pc, tn_plugin_ctx *out)
{
    const tn_msg_ctx *c = call_ctx(pc);
    memset(out, 0, sizeof(*out));
    out->listener = c->listener;
    out->protocol = c->protocol == TN_PROTO_WS ? TN_PLUGIN_WS
                    : c->protocol == TN_PROTO_UDP ? TN_PLUGIN_UDP
                    : c->protocol == TN_PROTO_HTTP ? TN_PLUGIN_HTTP
                                                   : TN_PLUGIN_TCP;
    out->conn_id = c->conn_id;
    out->remote_addr = tn_msg_remote_addr(c, ((tn_plugin_call *)pc)->addr, sizeof(pc->addr));
    out->remote = c->remote;
    out->remote_len = (unsigned)c->remote_len;
    if (c->http) {
        out->method = c->http->method;
        out->path = c->http->path;
        out->query = c->http->query;
        out->nheaders = c->http->nheaders;
    }
}

static const char *h_http_header(const tn_plugin_call *pc, const char *name)
{
    const tn_msg_ctx *c = call_ctx(pc);
    return c->http ? tn_http_header_get(c->http, name) : NULL;
}

static int h_http_header_at(const tn_plugin_call *pc, size_t i, const char **name, const char **value)
{
    const tn_msg_ctx *c = call_ctx(pc);
    if (!c->http || i >= c->http->nheaders)
        return 0;
    *name = c->http->headers[i].name;
    *value = c->http->headers[i].value;
    return 1;
}

static void h_set_data(tn_plugin_call *pc, void *data)
{
    pc->data = data;
}

static void *h_data(const tn_plugin_call *pc)
{
    return pc->data;
}

static void h_reply(tn_plugin_call *pc, const void *data, size_t len)
{
    if (pc->call && len)
        evbuffer_add(pc->call->out, data, len);
}

static void job_cancelled(tn_job *job);

static tn_plugin_call *h_later(tn_plugin_call *pc)
{
    if (!pc->call || pc->held)
        return pc->held;
    tn_plugin_call *hc = calloc(1, sizeof(*hc));
    tn_job *job = hc ? tn_job_begin(pc->call) : NULL;
    if (!job) {
        free(hc);
        return NULL;
    }
    hc->job = job;
    hc->inst = pc->inst;
    hc->data = pc->data;
    hc->sstate = pc->sstate;
    job->hstate = hc;
    job->cancel = job_cancelled;
    pc->held = hc;
    return hc;
}

static tn_result to_result(tn_plugin_result r)
{
    return r == TN_PLUGIN_ERROR ? TN_FAIL : r == TN_PLUGIN_SILENT ? TN_SILENT : TN_REPLY;
}

static void h_complete(tn_plugin_call *hc, tn_plugin_result result, const void *data, size_t len)
{
    if (!hc || !hc->job)
        return;
    tn_job *job = hc->job;
    job->hstate = NULL;
    job->cancel = NULL;
    free(hc);
    tn_job_done(job, to_result(result), data ? data : "", data ? len : 0);
}

static void job_cancelled(tn_job *job)
{
    tn_plugin_call *hc = job->hstate;
    const tn_plugin_def *def = hc->inst->obj.def;
    if (!def->cancel)
        return; /* complete() stays due; tn_job_done drops its result */
    def->cancel(hc->inst->state, hc);
    job->hstate = NULL;
    job->cancel = NULL;
    free(hc);
    tn_job_done(job, TN_FAIL, "cancelled", 9);
}

static void h_http_status(tn_plugin_call *pc, int status)
{
    const tn_msg_ctx *c = call_ctx(pc);
    if (c->http && status >= 100 && status <= 599)
        c->http->status = status;
}

static void h_http_set_header(tn_plugin_call *pc, const char *name, const char *value)
{
    const tn_msg_ctx *c = call_ctx(pc);
    if (c->http && name && value)
        tn_http_set_header(c->http, name, value);
}

static tn_plugin_session *h_session(const tn_plugin_call *pc)
{
    return (tn_plugin_session *)call_ctx(pc)->session;
}

static void *h_session_state(const tn_plugin_call *pc)
{
    return call_ctx(pc)->session ? pc->sstate : NULL;
}

static uint64_t h_session_id(const tn_plugin_session *s)
{
    return ((const tn_session *)s)->id;
}

static int h_push(tn_plugin_session *ps, const void *data, size_t len)
{
    tn_session *s = (tn_session *)ps;
    return s->ops->push(s, data, len);
}

static void h_close(tn_plugin_session *ps, const char *reason)
{
    tn_session *s = (tn_session *)ps;
    s->ops->close(s, reason ? reason : "closed by plugin");
}

static const char *h_handler_name(const tn_plugin_host *host)
{
    return ((const plugin_inst *)host)->name;
}

static void h_log(const tn_plugin_host *host, int level, const char *fmt, ...)
{
    int lv = level <= TN_PLUGIN_LOG_ERROR ? TN_LOG_ERROR
             : level == TN_PLUGIN_LOG_WARN ? TN_LOG_WARN
             : level == TN_PLUGIN_LOG_INFO ? TN_LOG_INFO
                                           : TN_LOG_DEBUG;
    if (lv > tn_log_get_level())
        return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    tn_log(lv, "handler %s: %s", ((const plugin_inst *)host)->name, buf);
}

static int h_counter(const tn_plugin_host *host, const char *name)
{
    plugin_inst *in = (plugin_inst *)host;
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len >= COUNTER_NAME || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != len)
        return -1;
    for (size_t i = 0; i < in->ncounters; i++)
        if (strcmp(in->counter_names[i], name) == 0)
            return (int)i;
    if (in->ncounters == MAX_COUNTERS)
        return -1;
    memcpy(in->counter_names[in->ncounters], name, len + 1);
    return (int)in->ncounters++;
}

static void h_count(const tn_plugin_host *host, int id, int64_t delta)
{
    plugin_inst *in = (plugin_inst *)host;
    if (id >= 0 && (size_t)id < in->ncounters)
        in->counters[id] += delta;
}

static struct event_base *h_base(const tn_plugin_host *host)
{
    return ((const plugin_inst *)host)->base;
}

static int64_t h_now_us(const tn_plugin_host *host)
{
    (void)host;
    return tn_now_us();
}

static int64_t h_wall_us(const tn_plugin_host *host)
{
    (void)host;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static const tn_plugin_host host_template = {
    .abi = TN_PLUGIN_ABI,
    .size = sizeof(tn_plugin_host),
    .payload = h_payload,
    .context = h_context,
    .http_header = h_http_header,
    .http_header_at = h_http_header_at,
    .set_data = h_set_data,
    .data = h_data,
    .reply = h_reply,
    .later = h_later,
    .complete = h_complete,
    .http_status = h_http_status,
    .http_set_header = h_http_set_header,
    .session = h_session,
    .session_state = h_session_state,
    .session_id = h_session_id,
    .push = h_push,
    .close = h_close,
    .handler_name = h_handler_name,
    .log = h_log,
    .counter = h_counter,
    .count = h_count,
    .base = h_base,
    .now_us = h_now_us,
    .wall_us = h_wall_us,
};

/* ---- the handler ------------------------------------------------------------ */

static void inst_free(plugin_inst *in)
{
    if (in->state && in->obj.def->destroy)
        in->obj.def->destroy(in->state);
    obj_unload(&in->obj);
    free(in->name);
    free(in->path);
    free(in);
}

/* for plugins without attach and detach */
static const tn_handler_ops plugin_stateless_ops;

static int plugin_init(tn_handler *h, char *err, size_t errlen)
{
    plugin_inst *in = calloc(1, sizeof(*in));
    if (!in || !(in->name = strdup(h->name)) || !(in->path = strdup(h->conf.path))) {
        snprintf(err, errlen, "out of memory");
        if (in)
            free(in->name);
        free(in);
        return -1;
    }
    in->host = host_template;
    in->base = h->base;
    if (obj_load(in->path, &in->obj, err, errlen) < 0) {
        free(in->name);
        free(in->path);
        free(in);
        return -1;
    }
    tn_plugin_option *opts = calloc(h->conf.options.n + 1, sizeof(*opts));
    if (!opts) {
        snprintf(err, errlen, "out of memory");
        inst_free(in);
        return -1;
    }
    for (size_t i = 0; i < h->conf.options.n; i++)
        opts[i] = (tn_plugin_option){ h->conf.options.v[i].key, h->conf.options.v[i].val };
    tn_plugin_options o = { opts, h->conf.options.n };
    char why[512] = "";
    int rc = in->obj.def->init(&in->host, &o, &in->state, why, sizeof(why));
    free(opts);
    if (rc != 0) {
        why[sizeof(why) - 1] = '\0';
        snprintf(err, errlen, "plugin '%s': init failed: %s", in->path, *why ? why : "(no message)");
        in->state = NULL; /* init failed: nothing for destroy */
        inst_free(in);
        return -1;
    }
    h->state = in;
    if (!in->obj.def->attach && !in->obj.def->detach)
        h->ops = &plugin_stateless_ops; /* connections need nothing of it */
    tn_info("handler %s: plugin %s loaded (%s)", h->name, in->path,
            in->obj.def->name ? in->obj.def->name : "unnamed");
    return 0;
}

static tn_result plugin_handle(tn_handler *h, tn_call *call)
{
    plugin_inst *in = h->state;
    const tn_plugin_def *def = in->obj.def;
    tn_plugin_call pc = { .call = call, .inst = in };
    if (call->ctx.session && (def->attach || def->detach)) {
        plugin_sess *ps = tn_session_state(call->ctx.session, h);
        if (!ps) {
            evbuffer_add_printf(call->out, "out of memory");
            return TN_FAIL;
        }
        pc.sstate = ps->sstate;
    }
    tn_plugin_result r = def->handle(in->state, &pc);
    if (r == TN_PLUGIN_LATER && pc.held)
        return TN_LATER;
    if (pc.held) {
        /* later() and then an answer now: the handle is void, its job ends
         * here (tn_handler_call counts in_flight only for TN_LATER) */
        tn_job *job = pc.held->job;
        free(pc.held);
        job->hstate = NULL;
        job->cancel = NULL;
        h->stats.in_flight++;
        tn_job_done(job, TN_SILENT, "", 0);
        call->job = NULL;
    }
    if (r == TN_PLUGIN_LATER) {
        evbuffer_drain(call->out, evbuffer_get_length(call->out));
        evbuffer_add_printf(call->out, "plugin answered later without a handle");
        return TN_FAIL;
    }
    return to_result(r);
}

static void *plugin_attach(tn_handler *h, tn_session *s)
{
    plugin_inst *in = h->state;
    plugin_sess *ps = calloc(1, sizeof(*ps));
    if (ps && in->obj.def->attach)
        ps->sstate = in->obj.def->attach(in->state, (tn_plugin_session *)s);
    return ps;
}

static void plugin_detach(tn_handler *h, tn_session *s, void *state)
{
    plugin_inst *in = h->state;
    plugin_sess *ps = state;
    if (in->obj.def->detach)
        in->obj.def->detach(in->state, (tn_plugin_session *)s, ps->sstate);
    free(ps);
}

static void finalize(struct event *ev, void *arg)
{
    (void)ev;
    inst_free(arg);
}

static void plugin_destroy(tn_handler *h)
{
    plugin_inst *in = h->state;
    if (!in)
        return;
    h->state = NULL;
    tn_info("handler %s: plugin %s instance released", in->name, in->path);
    /* never from inside a call into the plugin (see the top of the file) */
    struct event *ev = in->base ? event_new(in->base, -1, 0, NULL, in) : NULL;
    if (!ev || event_free_finalize(0, ev, finalize) < 0) {
        if (ev)
            event_free(ev);
        inst_free(in);
    }
}

/* A reload keeps the instance only while the file is the one it loaded. */
static bool plugin_unchanged(tn_handler *h)
{
    plugin_inst *in = h->state;
    struct stat st;
    if (!in || stat(in->path, &st) < 0)
        return true; /* the startup check refuses a file that is gone */
    return st.st_dev == in->obj.st.st_dev && st.st_ino == in->obj.st.st_ino && st.st_size == in->obj.st.st_size &&
           st.st_mtim.tv_sec == in->obj.st.st_mtim.tv_sec && st.st_mtim.tv_nsec == in->obj.st.st_mtim.tv_nsec;
}

const tn_handler_ops tn_plugin_ops = {
    .type = "plugin",
    .init = plugin_init,
    .handle = plugin_handle,
    .attach = plugin_attach,
    .detach = plugin_detach,
    .destroy = plugin_destroy,
    .unchanged = plugin_unchanged,
};

static const tn_handler_ops plugin_stateless_ops = {
    .type = "plugin",
    .handle = plugin_handle,
    .destroy = plugin_destroy,
    .unchanged = plugin_unchanged,
};

static plugin_inst *inst_of(tn_handler *h)
{
    return h->ops == &tn_plugin_ops || h->ops == &plugin_stateless_ops ? h->state : NULL;
}

/* ---- metrics ---------------------------------------------------------------- */

void tn_plugin_stats_json(tn_handler *h, struct tn_json *j)
{
    plugin_inst *in = inst_of(h);
    if (!in)
        return;
    tn_json_open(j, "counters", '{');
    for (size_t i = 0; i < in->ncounters; i++)
        tn_json_i64(j, in->counter_names[i], in->counters[i]);
    tn_json_close(j, '}');
}

void tn_plugin_prometheus(tn_registry *r, struct evbuffer *out)
{
    bool head = false;
    for (size_t i = 0; i < tn_registry_count(r); i++) {
        tn_handler *h = tn_registry_at(r, i);
        plugin_inst *in = inst_of(h);
        for (size_t c = 0; in && c < in->ncounters; c++) {
            if (!head)
                evbuffer_add_printf(out, "# HELP tusknet_plugin_value A plugin's own counter.\n"
                                         "# TYPE tusknet_plugin_value gauge\n");
            head = true;
            static const char row[] = "tusknet_plugin_value{handler=\"";
            evbuffer_add(out, row, sizeof(row) - 1);
            for (const char *s = h->name; *s; s++) {
                if (*s == '\\' || *s == '"' || *s == '\n')
                    evbuffer_add_printf(out, "\\%c", *s == '\n' ? 'n' : *s);
                else
                    evbuffer_add(out, s, 1);
            }
            evbuffer_add_printf(out, "\",name=\"%s\"} %lld\n", in->counter_names[c], (long long)in->counters[c]);
        }
    }
}
