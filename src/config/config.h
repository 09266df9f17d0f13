/* SPDX-License-Identifier: MIT */
/* config.h - the typed configuration the daemon runs on.
 *
 * A config file (TuskLang-style or YAML) is parsed into a value tree, then the
 * schema table (schema.c) turns the tree into these structs: every key is
 * type-checked, bounded, defaulted and cross-checked (handler references,
 * duplicate addresses) before the daemon sees it. Durations are milliseconds,
 * sizes bytes. */
#ifndef TN_CONFIG_CONFIG_H
#define TN_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config/value.h"

typedef struct tn_strlist {
    char **v;
    size_t n;
} tn_strlist;

typedef struct tn_strpair {
    char *key;
    char *val;
} tn_strpair;

typedef struct tn_strmap {
    tn_strpair *v;
    size_t n;
} tn_strmap;


enum tn_protocol { TN_PROTO_TCP, TN_PROTO_UDP, TN_PROTO_HTTP };

enum tn_handler_type {
    TN_H_ECHO,
    TN_H_STATIC,
    TN_H_EXEC,
    TN_H_STREAM,
    TN_H_BROADCAST,
    TN_H_HEALTH,
    TN_H_METRICS,
    TN_H_FILE,
    TN_H_REDIRECT,
    TN_H_PROXY,
    TN_H_PLUGIN,
    TN_H_WORKER,
};

enum tn_middleware_type {
    TN_MW_CORS,
    TN_MW_GZIP,
    TN_MW_AUTH,
    TN_MW_RATE_LIMIT,
    TN_MW_ACCESS_LOG,
    TN_MW_HEADERS,
};

enum tn_stderr_mode { TN_STDERR_LOG, TN_STDERR_CLIENT, TN_STDERR_DISCARD };
enum tn_balance { TN_BALANCE_ROUND_ROBIN, TN_BALANCE_LEAST_CONN, TN_BALANCE_HASH };
enum tn_proxy_mode { TN_PROXY_MESSAGE, TN_PROXY_CONNECTION };
enum tn_log_format { TN_LOGFMT_COMBINED, TN_LOGFMT_JSON };
enum tn_verify_client { TN_VERIFY_NONE, TN_VERIFY_OPTIONAL, TN_VERIFY_REQUIRED };
enum tn_tls_version { TN_TLS_1_0, TN_TLS_1_1, TN_TLS_1_2, TN_TLS_1_3 };
enum tn_control_level { TN_CTL_READ, TN_CTL_ADMIN };

/* Limits are set in [limits] and may be overridden per listener, per route
 * and per WebSocket endpoint; each level starts as a copy of its parent. */
typedef struct tn_limits {
    int64_t max_connections;            /* per listener; 0 = only the global cap */
    int64_t max_connections_per_ip;     /* 0 = unlimited */
    int64_t max_connections_per_second; /* per source address; 0 = unlimited */
    int64_t idle_timeout;               /* ms; 0 = none */
    int64_t read_timeout;
    int64_t write_timeout;
    int64_t handshake_timeout;
    int64_t header_timeout;
    int64_t max_line;
    int64_t max_body;
    int64_t max_header;
    int64_t max_message;
    int64_t max_output; /* bytes queued to a slow reader before it is dropped */
    double rate_limit;  /* messages per second per client address; 0 = off */
    int64_t rate_burst;
    tn_strlist allow; /* addresses / CIDR ranges */
    tn_strlist deny;
} tn_limits;

typedef struct tn_daemon_conf {
    int log_level;
    char *control_socket;
    tn_pos control_socket_pos; /* the value, or the [daemon] section when it is the default */
    char *control_group;
    int control_group_level;
    int64_t max_connections;
    int64_t shutdown_timeout;
    char *pid_file;
    int64_t busy_poll_us;
    int64_t coalesce_us;
    int64_t coalesce_quiet_waits;
    int64_t workers; /* 0: auto */
    int64_t reload_timeout;
} tn_daemon_conf;

/* [cluster]: broadcast rooms shared with other instances through Redis. */
typedef struct tn_cluster_conf {
    char *redis; /* host:port; NULL = no cluster */
    char *password;
    char *channel_prefix;
    char *node_id; /* "" = hostname:pid */
    int64_t reconnect_max;
    int64_t max_queue;
} tn_cluster_conf;

typedef struct tn_handler_conf {
    char *name;
    tn_pos pos;
    int type;
    /* static, redirect */
    char *reply;
    int64_t status;
    char *content_type;
    tn_strmap headers;
    char *location;
    /* exec, stream, worker */
    tn_strlist command;
    int64_t timeout;
    int64_t max_concurrency;
    int64_t max_queue;
    int64_t max_output;
    tn_strmap env;
    tn_strlist passenv;
    int stderr_mode;
    char *cwd;
    /* file */
    char *root;
    tn_strlist index;
    /* proxy */
    tn_strlist upstreams;
    int balance;
    char *hash_key;
    int64_t retries;
    int64_t connect_timeout;
    int64_t send_timeout;
    int64_t max_fails;
    int64_t fail_timeout;
    int64_t keepalive;
    int64_t keepalive_timeout;
    bool retry_non_idempotent;
    int64_t retry_backoff;
    int64_t retry_backoff_max;
    int64_t retry_budget;
    bool preserve_host;
    int64_t max_response_header;
    tn_strmap health_check;
    tn_strmap upstream_tls;
    int64_t resolve;
    int mode;          /* enum tn_proxy_mode (tcp listeners) */
    int64_t pool_size; /* mode message: pipelined connections per server */
    /* plugin */
    char *path;
    tn_strmap options;
    /* worker (with command, env, passenv, cwd, stderr, timeout, max_queue, max_output) */
    int64_t processes;
    int64_t max_inflight;
    /* where command, cwd and root are written (the handler's name when
     * not): startup checks of the programs and directories point here */
    tn_pos command_pos, cwd_pos, root_pos;
} tn_handler_conf;

typedef struct tn_middleware_conf {
    char *name;
    tn_pos pos;
    int type;
    /* cors */
    tn_strlist origins;
    tn_strlist methods;
    tn_strlist allow_headers;
    tn_strlist expose_headers;
    bool credentials;
    int64_t max_age;
    /* gzip */
    int64_t min_size;
    int64_t level;
    tn_strlist skip_types;
    /* auth */
    tn_strlist tokens;
    tn_strmap users;
    char *realm;
    /* rate_limit */
    double rate;
    int64_t burst;
    /* access_log */
    char *file;
    tn_pos file_pos;
    int format;
    /* headers */
    tn_strmap set;
    tn_strmap add;
} tn_middleware_conf;

typedef struct tn_sni_conf {
    char *name; /* server name (may start with "*.") */
    tn_pos pos;
    char *cert;
    char *key;
    tn_pos cert_pos, key_pos; /* where the values are written, for errors found when loading them */
} tn_sni_conf;

typedef struct tn_tls_conf {
    tn_pos pos;
    char *cert;
    char *key;
    char *chain;
    int min_version;
    char *ciphers;
    char *ciphersuites;
    tn_strlist alpn;
    char *client_ca;
    int verify_client;
    bool session_tickets;
    tn_sni_conf *sni;
    size_t nsni;
    /* where the values are written: errors found when the files are loaded
     * (key not matching, expired) point here */
    tn_pos cert_pos, key_pos, chain_pos, client_ca_pos, ciphers_pos, ciphersuites_pos;
} tn_tls_conf;

typedef struct tn_route_conf {
    char *spec;   /* as written: "GET /users/:id" */
    char *method; /* "*" for any */
    char *path;
    tn_pos pos;
    char *handler;
    tn_pos handler_pos;
    tn_strlist middleware;
    tn_limits limits;
} tn_route_conf;

typedef struct tn_ws_conf {
    char *path;
    tn_pos pos;
    char *handler;
    tn_strlist handlers;
    tn_pos handler_pos; /* the handler or handlers value */
    tn_strlist subprotocols;
    tn_strlist origins;
    int64_t ping_interval;
    int64_t pong_timeout;
    bool deflate;
    tn_limits limits;
} tn_ws_conf;

typedef struct tn_listener_conf {
    char *name;
    tn_pos pos;
    int protocol;
    char *listen;
    tn_pos listen_pos;
    char *handler;
    tn_strlist handlers;
    tn_pos handler_pos; /* the handler or handlers value */
    tn_strlist middleware;
    int64_t backlog;
    char *fd_name; /* systemd FileDescriptorName to take the socket from */
    tn_route_conf *routes;
    size_t nroutes;
    tn_ws_conf *websocket;
    size_t nwebsocket;
    tn_tls_conf *tls; /* NULL: plain */
    tn_limits limits;
} tn_listener_conf;

typedef struct tn_config {
    char *path;
    tn_daemon_conf daemon;
    tn_limits limits;
    tn_cluster_conf cluster;
    tn_handler_conf *handlers;
    size_t nhandlers;
    tn_middleware_conf *middleware;
    size_t nmiddleware;
    tn_listener_conf *listeners;
    size_t nlisteners;
    char **files; /* the file names positions point into */
    size_t nfiles;
    /* The running daemon shares a config between whatever was made from it
     * (listeners, HTTP routers, and through them requests in flight): each
     * holds a reference, the last one frees it (tn_config_unref). */
    int refs;
} tn_config;

/* Load and fully validate PATH (.conf/.tsk TuskLang-style, .yaml/.yml YAML).
 * Returns NULL and fills DIAG when anything is wrong; warnings may be in
 * DIAG also on success. */
tn_config *tn_config_load(const char *path, tn_diag *diag);
/* Same for an already parsed document (consumed: its tree is freed). */
tn_config *tn_config_from_doc(tn_doc *doc, const char *path, tn_diag *diag);
/* Frees CFG now: for its only owner (a loader, a check, a test). */
void tn_config_free(tn_config *cfg);
/* A shared config: the loaded one starts with one reference. */
tn_config *tn_config_ref(tn_config *cfg);
void tn_config_unref(tn_config *cfg);

/* The normalized config, every default filled in, as a value tree / YAML
 * (dump.c). */
tn_value *tn_config_to_value(const tn_config *cfg);
int tn_config_dump(const tn_config *cfg, FILE *out);
/* The same tree with the secrets, as YAML text (malloc'd, *TEXT), and a
 * config back from it: how a master hands a config it checked to workers
 * that are already running (what they get is what was checked, not the
 * files again, which may have changed since). */
int tn_config_snapshot(const tn_config *cfg, char **text, size_t *len);
tn_config *tn_config_from_snapshot(const char *text, size_t len, const char *path, tn_diag *diag);

/* Markdown reference of every key, generated from the schema table (dump.c). */
void tn_config_reference(FILE *out);

/* Deep copy, free and compare of one handler's settings (the registry keeps
 * its own copy so a handler outlives the config that created it). */
int tn_handler_conf_copy(tn_handler_conf *dst, const tn_handler_conf *src);
void tn_handler_conf_free(tn_handler_conf *c);
bool tn_handler_conf_equal(const tn_handler_conf *a, const tn_handler_conf *b);

bool tn_cluster_conf_equal(const tn_cluster_conf *a, const tn_cluster_conf *b);

const tn_handler_conf *tn_config_handler(const tn_config *cfg, const char *name);
const char *tn_handler_type_name(int type);
const char *tn_middleware_type_name(int type);
const char *tn_protocol_name(int protocol);

/* Parsers shared with the rest of the daemon (control commands, tests). */
int tn_parse_duration_ms(const char *s, int64_t *out);
int tn_parse_size(const char *s, int64_t *out);
/* "host:port", "[v6]:port", "*:port", ":port". host is "" for any. */
int tn_parse_listen(const char *s, char *host, size_t hostlen, int *port);

#endif
