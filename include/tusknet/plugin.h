/* SPDX-License-Identifier: MIT */
/* tusknet/plugin.h - the C ABI of tusknetd's `plugin` handlers.
 *
 * A plugin is a shared object that defines one exported object,
 *
 *     TN_PLUGIN_EXPORT const tn_plugin_def tn_plugin = { TN_PLUGIN_ABI, ... };
 *
 * The daemon loads it (also for `tusknetd -t`), refuses it when the symbol
 * is missing or its `abi` differs from the daemon's TN_PLUGIN_ABI, and then
 * calls:
 *
 *   init(host, options, &state, err, errlen)   once per loaded instance, with
 *       the handler's `options { key: "value" }` (valid during init only:
 *       copy what you keep); return 0, or -1 with a message in err (the
 *       start or the reload is then refused with it);
 *   handle(state, call)   for every message, from any protocol: answer now
 *       (host->reply() then TN_PLUGIN_REPLY or TN_PLUGIN_ERROR), not at all
 *       (TN_PLUGIN_SILENT), or later: keep the handle host->later(call)
 *       returns, return TN_PLUGIN_LATER, and call host->complete() on it
 *       exactly once (a handle followed by another result is void);
 *   cancel(state, call)   (optional) the client of a call answered later went
 *       away: the handle is void when cancel returns, complete() must not be
 *       called on it. Without a cancel hook complete() stays due and its
 *       result is dropped;
 *   attach(state, session) / detach(state, session, sstate)   (optional)
 *       per-connection state: attach runs on a connection's first message
 *       (at connect where the plugin is a listener's or WebSocket endpoint's
 *       only handler), detach when the connection ends (UDP has none);
 *   destroy(state)   when the instance is no longer used: after a reload
 *       replaced it, once its last call and session are done, or at
 *       shutdown. Never from inside a call into the plugin.
 *
 * Everything runs in the daemon's one thread, inside its event loop: a
 * plugin must never block. It may add events of its own to the loop
 * (host->base()) and must remove them in destroy.
 *
 * Bytes given to the plugin (payload, context strings) are valid during the
 * call that receives them, or, for a handle from host->later(), until it is
 * completed or cancelled. The daemon copies whatever the plugin gives it. */
#ifndef TUSKNET_PLUGIN_H
#define TUSKNET_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Raised on any incompatible change of this header. */
#define TN_PLUGIN_ABI 1

#define TN_PLUGIN_EXPORT __attribute__((visibility("default")))

struct event_base;
struct sockaddr;

typedef struct tn_plugin_call tn_plugin_call;       /* a message (opaque) */
typedef struct tn_plugin_session tn_plugin_session; /* a connection (opaque) */
typedef struct tn_plugin_host tn_plugin_host;

typedef enum tn_plugin_result {
    TN_PLUGIN_REPLY,  /* what host->reply() added is the answer (may be empty) */
    TN_PLUGIN_ERROR,  /* it is an error's detail: "Error: DETAIL" (HTTP 500 unless a status >= 400 was set) */
    TN_PLUGIN_LATER,  /* host->later() was called; host->complete() follows */
    TN_PLUGIN_SILENT, /* nothing is sent back (HTTP: 204) */
} tn_plugin_result;

enum tn_plugin_protocol { TN_PLUGIN_TCP, TN_PLUGIN_UDP, TN_PLUGIN_HTTP, TN_PLUGIN_WS };

enum tn_plugin_log_level { TN_PLUGIN_LOG_ERROR, TN_PLUGIN_LOG_WARN, TN_PLUGIN_LOG_INFO, TN_PLUGIN_LOG_DEBUG };

/* Where a message came from (host->context()). */
typedef struct tn_plugin_ctx {
    const char *listener;        /* listener name */
    int protocol;                /* enum tn_plugin_protocol */
    uint64_t conn_id;            /* connection id as in `tusknetctl connections`; 0 for UDP */
    const char *remote_addr;     /* "ip:port", "[v6]:port" */
    const struct sockaddr *remote;
    unsigned remote_len;
    /* HTTP only, NULL otherwise */
    const char *method;          /* "GET" */
    const char *path;            /* decoded, starts with '/' */
    const char *query;           /* raw, without '?'; "" when none */
    size_t nheaders;             /* request headers: host->http_header_at() */
} tn_plugin_ctx;

/* The handler's `options` block. */
typedef struct tn_plugin_option {
    const char *key;
    const char *value;
} tn_plugin_option;

typedef struct tn_plugin_options {
    const tn_plugin_option *v;
    size_t n;
} tn_plugin_options;

/* Services of the daemon. One host per loaded instance: keep the pointer
 * init() receives; it is valid until destroy() returns. Fields are only
 * ever added at the end; `size` is sizeof the daemon's struct. */
struct tn_plugin_host {
    uint32_t abi;
    size_t size;

    /* ---- the message ---- */
    const char *(*payload)(const tn_plugin_call *call, size_t *len);
    void (*context)(const tn_plugin_call *call, tn_plugin_ctx *out);
    /* HTTP request headers: by name (case-insensitive, NULL when absent), or
     * the I-th (0 when out of range) */
    const char *(*http_header)(const tn_plugin_call *call, const char *name);
    int (*http_header_at)(const tn_plugin_call *call, size_t i, const char **name, const char **value);
    /* The plugin's own pointer for a call (e.g. its timer, for cancel). */
    void (*set_data)(tn_plugin_call *call, void *data);
    void *(*data)(const tn_plugin_call *call);

    /* ---- answers ---- */
    /* Appends to the answer of a call being handled (sync). */
    void (*reply)(tn_plugin_call *call, const void *data, size_t len);
    /* Answer later: a handle that outlives handle(), NULL when out of memory
     * (then answer now, e.g. with an error). */
    tn_plugin_call *(*later)(tn_plugin_call *call);
    /* Completes a handle from later() with TN_PLUGIN_REPLY, _ERROR or
     * _SILENT; the handle is void afterwards. */
    void (*complete)(tn_plugin_call *call, tn_plugin_result result, const void *data, size_t len);
    /* HTTP response status and headers (ignored for other protocols);
     * allowed until the call is answered. Content-Type sets the type. */
    void (*http_status)(tn_plugin_call *call, int status);
    void (*http_set_header)(tn_plugin_call *call, const char *name, const char *value);

    /* ---- sessions (connections) ---- */
    /* The call's connection (NULL for UDP, and for a cancelled call), and
     * what attach() returned for it. */
    tn_plugin_session *(*session)(const tn_plugin_call *call);
    void *(*session_state)(const tn_plugin_call *call);
    uint64_t (*session_id)(const tn_plugin_session *s);
    /* Sends a message outside request/reply (a line, a datagram, a WebSocket
     * message). -1 when the peer is over its output cap: drop or close. */
    int (*push)(tn_plugin_session *s, const void *data, size_t len);
    /* Closes the connection (detach follows, maybe before this returns). */
    void (*close)(tn_plugin_session *s, const char *reason);

    /* ---- the instance ---- */
    const char *(*handler_name)(const tn_plugin_host *host);
    void (*log)(const tn_plugin_host *host, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
    /* A named counter shown in `stats` (handlers.NAME.counters) and in
     * Prometheus (tusknet_plugin_value{handler,name}); NAME is [a-z0-9_]
     * and at most 48 bytes, at most 32 per instance. Returns its id, or -1. */
    int (*counter)(const tn_plugin_host *host, const char *name);
    void (*count)(const tn_plugin_host *host, int id, int64_t delta);
    /* The daemon's libevent loop (timers, sockets of the plugin's own). */
    struct event_base *(*base)(const tn_plugin_host *host);
    /* Microseconds: a monotonic clock, and the wall clock (Unix time). */
    int64_t (*now_us)(const tn_plugin_host *host);
    int64_t (*wall_us)(const tn_plugin_host *host);
};

typedef struct tn_plugin_def {
    uint32_t abi; /* TN_PLUGIN_ABI */
    const char *name;
    int (*init)(const tn_plugin_host *host, const tn_plugin_options *options, void **state, char *err,
                size_t errlen);
    tn_plugin_result (*handle)(void *state, tn_plugin_call *call);
    void (*cancel)(void *state, tn_plugin_call *call);
    void *(*attach)(void *state, tn_plugin_session *session);
    void (*detach)(void *state, tn_plugin_session *session, void *sstate);
    void (*destroy)(void *state);
} tn_plugin_def;

/* The symbol the daemon looks up. */
#define TN_PLUGIN_SYMBOL "tn_plugin"

/* The value of option KEY, or DEF. */
static inline const char *tn_plugin_option_get(const tn_plugin_options *o, const char *key, const char *def)
{
    for (size_t i = 0; i < o->n; i++) {
        const char *a = o->v[i].key, *b = key;
        while (*a && *a == *b)
            a++, b++;
        if (*a == *b)
            return o->v[i].value;
    }
    return def;
}

#ifdef __cplusplus
}
#endif

#endif
