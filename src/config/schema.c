/* SPDX-License-Identifier: MIT */
/* schema.c - the config schema: one table of every key (scope, name, type,
 * default, bounds, doc) and the code the table drives.
 *
 * Like Redis's config.c and nginx's ngx_command_t arrays, nothing about a key
 * lives anywhere but its row: converting a value into the typed struct,
 * bounds checks, defaults, freeing, dumping it back (--dump-config) and the
 * README reference are all generic over the table. Scopes are the objects a
 * key may appear in; `only` narrows a row to some handler types, listener
 * protocols or middleware types. Rows of scope "limits" are inherited:
 * listeners, routes and WebSocket endpoints accept them too and start from
 * their parent's values. */
#include "config/schema.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define OFF(type, field) offsetof(type, field)
#define D(f) OFF(tn_daemon_conf, f)
#define L(f) OFF(tn_limits, f)
#define H(f) OFF(tn_handler_conf, f)
#define M(f) OFF(tn_middleware_conf, f)
#define LI(f) OFF(tn_listener_conf, f)
#define T(f) OFF(tn_tls_conf, f)
#define S(f) OFF(tn_sni_conf, f)
#define R(f) OFF(tn_route_conf, f)
#define W(f) OFF(tn_ws_conf, f)
#define CL(f) OFF(tn_cluster_conf, f)

#define SEC ((int64_t)1000)
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)
#define KB ((int64_t)1024)
#define MB (1024 * KB)
#define GB (1024 * MB)

const tn_key tn_schema[] = {
    /* [daemon] */
    { "daemon", "log_level", TN_T_ENUM, "info", 0, 0, "error|warn|info|debug", NULL, D(log_level), 0,
      "Least severe message logged." },
    { "daemon", "control_socket", TN_T_STRING, "/run/tusknetd/control.sock", 0, 0, NULL, NULL,
      D(control_socket), 0, "Unix socket for tusknetctl; empty disables it." },
    { "daemon", "control_group", TN_T_STRING, "", 0, 0, NULL, NULL, D(control_group), 0,
      "Group whose members may use the control socket (besides root and the daemon's user)." },
    { "daemon", "control_group_level", TN_T_ENUM, "read", 0, 0, "read|admin", NULL,
      D(control_group_level), 0, "What control_group members may do: read-only commands, or all." },
    { "daemon", "max_connections", TN_T_INT, "10000", 1, 10000000, NULL, NULL, D(max_connections), 0,
      "Connections open at once across all listeners." },
    { "daemon", "shutdown_timeout", TN_T_DURATION, "10s", 0, HOUR, NULL, NULL, D(shutdown_timeout), 0,
      "How long SIGTERM waits for in-flight work before closing everything." },
    { "daemon", "pid_file", TN_T_STRING, "", 0, 0, NULL, NULL, D(pid_file), 0,
      "Write the process id here when set." },
    { "daemon", "busy_poll_us", TN_T_INT, "0", 0, 100000, NULL, NULL, D(busy_poll_us), 0,
      "Microseconds the loop keeps polling, not sleeping, after the last event (shrinks while "
      "polling finds nothing); trades CPU for latency. 0 = off." },
    { "daemon", "coalesce_us", TN_T_INT, "50", 0, 1000, NULL, NULL, D(coalesce_us), 0,
      "Under load (8 or more events ready in one loop pass), microseconds the loop waits for "
      "more to gather before it looks again, instead of sleeping until the next one wakes it; "
      "light load never waits. 0 = off; busy_poll_us, when set, replaces it." },
    { "daemon", "coalesce_quiet_waits", TN_T_INT, "6", 0, 100, NULL, NULL, D(coalesce_quiet_waits), 0,
      "While coalescing, how many waits in a row that gather less than 2 events the loop still "
      "makes before it goes back to sleeping until an event wakes it: under load a sender then "
      "need not wake it after every lull. 0 = back to sleeping at the first." },
    { "daemon", "workers", TN_T_INT, "1", 0, 256, NULL, NULL, D(workers), TN_K_AUTO,
      "Worker processes serving traffic; auto (or 0) = one per CPU the process may run on. "
      "Above 1 a master process supervises them (see Scaling out)." },
    { "daemon", "reload_timeout", TN_T_DURATION, "10s", 100, HOUR, NULL, NULL, D(reload_timeout), 0,
      "With workers above 1: how long a reload waits for each worker to apply it; one that has not "
      "answered by then is counted failed and replaced." },

    /* [limits]: defaults that listeners, routes and WebSocket endpoints override */
    { "limits", "max_connections", TN_T_INT, "0", 0, 10000000, NULL, NULL, L(max_connections), 0,
      "Connections open at once on one listener; 0 leaves only the global cap." },
    { "limits", "max_connections_per_ip", TN_T_INT, "0", 0, 10000000, NULL, NULL,
      L(max_connections_per_ip), 0, "Connections open at once from one address; 0 = unlimited." },
    { "limits", "max_connections_per_second", TN_T_INT, "0", 0, 10000000, NULL, NULL,
      L(max_connections_per_second), 0, "New connections per second from one address; 0 = unlimited." },
    { "limits", "idle_timeout", TN_T_DURATION, "300s", 0, 7 * DAY, NULL, NULL, L(idle_timeout), 0,
      "Close a connection with no traffic for this long; 0 = never." },
    { "limits", "read_timeout", TN_T_DURATION, "60s", 0, 7 * DAY, NULL, NULL, L(read_timeout), 0,
      "Longest wait for the rest of a message once it has started; 0 = none." },
    { "limits", "write_timeout", TN_T_DURATION, "60s", 0, 7 * DAY, NULL, NULL, L(write_timeout), 0,
      "Longest a pending reply may wait for the peer to read it; 0 = none." },
    { "limits", "handshake_timeout", TN_T_DURATION, "10s", 0, HOUR, NULL, NULL, L(handshake_timeout), 0,
      "Longest a TLS handshake may take." },
    { "limits", "header_timeout", TN_T_DURATION, "10s", 0, HOUR, NULL, NULL, L(header_timeout), 0,
      "Longest an HTTP client may take to send request headers (408 after)." },
    { "limits", "max_line", TN_T_SIZE, "64KB", 16, GB, NULL, NULL, L(max_line), 0,
      "Longest TCP line; longer gets 'Error: line too long' and a close." },
    { "limits", "max_body", TN_T_SIZE, "8MB", 0, 64 * GB, NULL, NULL, L(max_body), 0,
      "Largest HTTP request body (413 over)." },
    { "limits", "max_header", TN_T_SIZE, "16KB", 1 * KB, 16 * MB, NULL, NULL, L(max_header), 0,
      "Largest HTTP request head (431 over)." },
    { "limits", "max_message", TN_T_SIZE, "1MB", 1, GB, NULL, NULL, L(max_message), 0,
      "Largest UDP datagram or WebSocket message (WebSocket close 1009 over)." },
    { "limits", "max_output", TN_T_SIZE, "4MB", 4 * KB, GB, NULL, NULL, L(max_output), 0,
      "Bytes queued for a slow reader before the connection is dropped." },
    { "limits", "rate_limit", TN_T_RATE, "0", 0, 0, NULL, NULL, L(rate_limit), 0,
      "Messages per client address, as \"100/s\" or \"600/m\"; 0 = off." },
    { "limits", "rate_burst", TN_T_INT, "0", 0, 10000000, NULL, NULL, L(rate_burst), 0,
      "Token bucket size for rate_limit; 0 = one second's worth." },
    { "limits", "allow", TN_T_CIDRS, "", 0, 0, NULL, NULL, L(allow), 0,
      "Addresses or CIDR ranges allowed to connect (most specific of allow/deny wins)." },
    { "limits", "deny", TN_T_CIDRS, "", 0, 0, NULL, NULL, L(deny), 0,
      "Addresses or CIDR ranges refused at accept." },

    /* [handlers] NAME { ... } */
    { "handler", "type", TN_T_ENUM, NULL, 0, 0,
      "echo|static|exec|stream|broadcast|health|metrics|file|redirect|proxy|plugin|worker", NULL, H(type),
      TN_K_REQUIRED, "What the handler does (see Handler types)." },
    { "handler", "reply", TN_T_STRING, NULL, 0, 0, NULL, "static", H(reply), TN_K_REQUIRED,
      "Reply text; {payload} {remote_addr} {time} {connection_id} are filled in." },
    { "handler", "status", TN_T_INT, "200", 100, 599, NULL, "static", H(status), 0,
      "HTTP status of the reply." },
    { "handler", "content_type", TN_T_STRING, "text/plain; charset=utf-8", 0, 0, NULL, "static",
      H(content_type), 0, "HTTP Content-Type of the reply." },
    { "handler", "headers", TN_T_STRMAP, "", 0, 0, NULL, "static,redirect", H(headers), 0,
      "Extra HTTP response headers." },
    { "handler", "location", TN_T_STRING, NULL, 0, 0, NULL, "redirect", H(location), TN_K_REQUIRED,
      "Redirect target; {path} and {query} are filled in." },
    { "handler", "status", TN_T_INT, "302", 300, 399, NULL, "redirect", H(status), 0,
      "HTTP status of the redirect." },
    { "handler", "command", TN_T_ARGV, NULL, 0, 0, NULL, "exec,stream,worker", H(command), TN_K_REQUIRED,
      "Program and arguments, run without a shell." },
    { "handler", "timeout", TN_T_DURATION, "30s", 0, DAY, NULL, "exec", H(timeout), 0,
      "Kill the process group after this long; 0 = never." },
    { "handler", "timeout", TN_T_DURATION, "30s", 0, DAY, NULL, "worker", H(timeout), 0,
      "Longest wait for a worker's answer to one call ('Error: timeout'); 0 = never." },
    { "handler", "max_concurrency", TN_T_INT, "16", 1, 100000, NULL, "exec", H(max_concurrency), 0,
      "Processes running at once; more messages wait in a queue." },
    { "handler", "max_queue", TN_T_INT, "1024", 0, 10000000, NULL, "exec,worker", H(max_queue), 0,
      "Messages waiting for a process slot before 'Error: busy'." },
    { "handler", "processes", TN_T_INT, "1", 1, 256, NULL, "worker", H(processes), 0,
      "Worker processes kept running." },
    { "handler", "max_inflight", TN_T_INT, "64", 1, 65536, NULL, "worker", H(max_inflight), 0,
      "Calls sent to one worker process and not answered yet; more wait in the queue." },
    { "handler", "max_output", TN_T_SIZE, "1MB", 1, GB, NULL, "exec,stream,worker", H(max_output), 0,
      "Output kept from one run (exec) or one line (stream, worker)." },
    { "handler", "env", TN_T_STRMAP, "", 0, 0, NULL, "exec,stream,worker", H(env), 0,
      "Environment variables set for the process." },
    { "handler", "passenv", TN_T_STRLIST, "", 0, 0, NULL, "exec,stream,worker", H(passenv), 0,
      "Variables passed on from the daemon's environment." },
    { "handler", "stderr", TN_T_ENUM, "log", 0, 0, "log|client|discard", "exec,stream,worker", H(stderr_mode), 0,
      "Where the process's stderr goes." },
    { "handler", "cwd", TN_T_STRING, "", 0, 0, NULL, "exec,stream,worker", H(cwd), 0,
      "Working directory of the process; empty = the daemon's." },
    { "handler", "root", TN_T_STRING, NULL, 0, 0, NULL, "file", H(root), TN_K_REQUIRED,
      "Directory served; nothing outside it is reachable." },
    { "handler", "index", TN_T_STRLIST, "index.html", 0, 0, NULL, "file", H(index), 0,
      "Files tried for a directory request." },
    { "handler", "upstreams", TN_T_STRLIST, NULL, 0, 0, NULL, "proxy", H(upstreams), TN_K_REQUIRED,
      "Servers, each \"host:port [weight=N] [max_fails=N] [fail_timeout=D] [backup] [down]\"." },
    { "handler", "balance", TN_T_ENUM, "round_robin", 0, 0, "round_robin|least_conn|hash", "proxy", H(balance),
      0, "How a server is picked: smooth weighted round robin, fewest active, or consistent hash of hash_key." },
    { "handler", "hash_key", TN_T_STRING, "remote_addr", 0, 0, NULL, "proxy", H(hash_key), 0,
      "balance hash: \"remote_addr\", \"header:NAME\", \"cookie:NAME\" or \"token\" (a line's first token; "
      "on HTTP the request path without its query)." },
    { "handler", "retries", TN_T_INT, "2", 0, 100, NULL, "proxy", H(retries), 0,
      "Further servers tried after a connect failure or a reset before any answer byte." },
    { "handler", "retry_non_idempotent", TN_T_BOOL, "false", 0, 0, NULL, "proxy", H(retry_non_idempotent), 0,
      "Retry POST, PATCH and other non-idempotent requests too." },
    { "handler", "retry_backoff", TN_T_DURATION, "20ms", 0, MIN, NULL, "proxy", H(retry_backoff), 0,
      "Base of the exponential backoff (full jitter) before a retry." },
    { "handler", "retry_backoff_max", TN_T_DURATION, "1s", 0, HOUR, NULL, "proxy", H(retry_backoff_max), 0,
      "Cap of one backoff." },
    { "handler", "retry_budget", TN_T_DURATION, "10s", 0, HOUR, NULL, "proxy", H(retry_budget), 0,
      "No retry starts later than this after the request arrived." },
    { "handler", "connect_timeout", TN_T_DURATION, "5s", 1, HOUR, NULL, "proxy", H(connect_timeout), 0,
      "Longest wait for an upstream connection." },
    { "handler", "timeout", TN_T_DURATION, "60s", 0, DAY, NULL, "proxy", H(timeout), 0,
      "Longest wait between two reads of an upstream's answer (504 before the head); 0 = none." },
    { "handler", "send_timeout", TN_T_DURATION, "60s", 0, DAY, NULL, "proxy", H(send_timeout), 0,
      "Longest an upstream may take to accept request bytes; 0 = none." },
    { "handler", "max_fails", TN_T_INT, "3", 1, 1000, NULL, "proxy", H(max_fails), 0,
      "Failures in a row that eject a server." },
    { "handler", "fail_timeout", TN_T_DURATION, "10s", 1, DAY, NULL, "proxy", H(fail_timeout), 0,
      "How long an ejected server stays out." },
    { "handler", "keepalive", TN_T_INT, "32", 0, 100000, NULL, "proxy", H(keepalive), 0,
      "Idle upstream connections kept per server for reuse; 0 = a connection per request." },
    { "handler", "keepalive_timeout", TN_T_DURATION, "60s", 1, DAY, NULL, "proxy", H(keepalive_timeout), 0,
      "Close a pooled connection idle this long." },
    { "handler", "preserve_host", TN_T_BOOL, "false", 0, 0, NULL, "proxy", H(preserve_host), 0,
      "Send the client's Host upstream instead of the server's host:port." },
    { "handler", "max_response_header", TN_T_SIZE, "64KB", 1 * KB, 16 * MB, NULL, "proxy",
      H(max_response_header), 0, "Largest upstream response head (502 over)." },
    { "handler", "resolve", TN_T_DURATION, "0", 0, DAY, NULL, "proxy", H(resolve), 0,
      "Resolve server host names again this often, without blocking (evdns); 0 = at start and reload only." },
    { "handler", "health_check", TN_T_STRMAP, "", 0, 0, NULL, "proxy", H(health_check), 0,
      "Active checks { path interval timeout rise fall expect_status }: an HTTP GET of path, or a TCP "
      "connect without path; empty = none." },
    { "handler", "tls", TN_T_STRMAP, "", 0, 0, NULL, "proxy", H(upstream_tls), 0,
      "Reach the servers over TLS { verify ca sni certificate key }; verify defaults to true." },
    { "handler", "mode", TN_T_ENUM, "message", 0, 0, "message|connection", "proxy", H(mode), 0,
      "On a tcp listener: each line forwarded over a shared pool (one reply line each), or the whole "
      "connection spliced to one server." },
    { "handler", "pool_size", TN_T_INT, "2", 1, 64, NULL, "proxy", H(pool_size), 0,
      "mode message: pipelined connections per server, shared by every client." },
    { "handler", "max_output", TN_T_SIZE, "1MB", 16, GB, NULL, "proxy", H(max_output), 0,
      "mode message: longest reply line; a longer one fails what is in flight and drops the connection." },
    { "handler", "path", TN_T_STRING, NULL, 0, 0, NULL, "plugin", H(path), TN_K_REQUIRED,
      "Shared object implementing tusknet/plugin.h (see Plugins); reloaded when the file changes." },
    { "handler", "options", TN_T_STRMAP, "", 0, 0, NULL, "plugin", H(options), 0,
      "Key/value options given to the plugin's init." },

    /* [middleware] NAME { ... } */
    { "middleware", "type", TN_T_ENUM, NULL, 0, 0, "cors|gzip|auth|rate_limit|access_log|headers", NULL,
      M(type), TN_K_REQUIRED, "Middleware kind; a bare kind name in a list uses its defaults." },
    { "middleware", "origins", TN_T_STRLIST, "*", 0, 0, NULL, "cors", M(origins), 0,
      "Allowed Origin values; \"*\" allows any." },
    { "middleware", "methods", TN_T_STRLIST, "GET,HEAD,POST,PUT,PATCH,DELETE", 0, 0, NULL, "cors",
      M(methods), 0, "Methods allowed in preflight answers." },
    { "middleware", "allow_headers", TN_T_STRLIST, "", 0, 0, NULL, "cors", M(allow_headers), 0,
      "Request headers allowed in preflight answers; empty = those asked for." },
    { "middleware", "expose_headers", TN_T_STRLIST, "", 0, 0, NULL, "cors", M(expose_headers), 0,
      "Response headers scripts may read." },
    { "middleware", "credentials", TN_T_BOOL, "false", 0, 0, NULL, "cors", M(credentials), 0,
      "Send Access-Control-Allow-Credentials." },
    { "middleware", "max_age", TN_T_DURATION, "600s", 0, DAY, NULL, "cors", M(max_age), 0,
      "How long browsers may cache a preflight answer." },
    { "middleware", "min_size", TN_T_SIZE, "256", 0, GB, NULL, "gzip", M(min_size), 0,
      "Smaller bodies are sent uncompressed." },
    { "middleware", "level", TN_T_INT, "6", 1, 9, NULL, "gzip", M(level), 0, "zlib compression level." },
    { "middleware", "skip_types", TN_T_STRLIST,
      "image/,video/,audio/,application/zip,application/gzip,font/woff2", 0, 0, NULL, "gzip",
      M(skip_types), 0, "Content-Type prefixes already compressed." },
    { "middleware", "tokens", TN_T_STRLIST, "", 0, 0, NULL, "auth", M(tokens), 0,
      "Accepted bearer tokens (use @env or @file)." },
    { "middleware", "users", TN_T_STRMAP, "", 0, 0, NULL, "auth", M(users), 0,
      "Basic-auth user: password pairs." },
    { "middleware", "realm", TN_T_STRING, "tusknetd", 0, 0, NULL, "auth", M(realm), 0,
      "Realm in WWW-Authenticate." },
    { "middleware", "rate", TN_T_RATE, "10/s", 0, 0, NULL, "rate_limit", M(rate), 0,
      "Requests per client address." },
    { "middleware", "burst", TN_T_INT, "20", 1, 10000000, NULL, "rate_limit", M(burst), 0,
      "Token bucket size." },
    { "middleware", "file", TN_T_STRING, "-", 0, 0, NULL, "access_log", M(file), 0,
      "Log file; \"-\" = the daemon's log." },
    { "middleware", "format", TN_T_ENUM, "combined", 0, 0, "combined|json", "access_log", M(format), 0,
      "Line format." },
    { "middleware", "set", TN_T_STRMAP, "", 0, 0, NULL, "headers", M(set), 0,
      "Response headers set (replacing)." },
    { "middleware", "add", TN_T_STRMAP, "", 0, 0, NULL, "headers", M(add), 0,
      "Response headers added." },

    /* [listeners] NAME { ... } (plus every [limits] key) */
    { "listener", "protocol", TN_T_ENUM, NULL, 0, 0, "tcp|udp|http", NULL, LI(protocol), TN_K_REQUIRED,
      "Front end: TCP line protocol, UDP datagrams, or HTTP/1.1 with WebSocket." },
    { "listener", "listen", TN_T_ADDRESS, NULL, 0, 0, NULL, NULL, LI(listen), TN_K_REQUIRED,
      "host:port, [v6]:port or *:port; port 0 picks a free port." },
    { "listener", "handler", TN_T_HANDLER, NULL, 0, 0, NULL, "tcp,udp", LI(handler), TN_K_OPTIONAL,
      "Handler for every message (or use handlers)." },
    { "listener", "handlers", TN_T_HANDLERS, NULL, 0, 0, NULL, "tcp,udp", LI(handlers), TN_K_OPTIONAL,
      "Handlers selected by each message's first token." },
    { "listener", "middleware", TN_T_MIDDLEWARES, "", 0, 0, NULL, "http", LI(middleware), 0,
      "Middleware for every route, in order." },
    { "listener", "backlog", TN_T_INT, "511", 1, 65535, NULL, "tcp,http", LI(backlog), 0,
      "listen(2) backlog." },
    { "listener", "fd_name", TN_T_STRING, "", 0, 0, NULL, NULL, LI(fd_name), 0,
      "systemd socket activation: take the socket with this FileDescriptorName." },
    { "listener", "routes", TN_T_ROUTES, NULL, 0, 0, NULL, "http", 0, TN_K_OPTIONAL,
      "\"METHOD /path\": handler, or { handler, middleware, limits }." },
    { "listener", "websocket", TN_T_WEBSOCKET, NULL, 0, 0, NULL, "http", 0, TN_K_OPTIONAL,
      "\"/path\": handler, [handlers], or { ... } WebSocket endpoints." },
    { "listener", "tls", TN_T_TLS, NULL, 0, 0, NULL, "tcp,http", 0, TN_K_OPTIONAL,
      "Serve over TLS with these settings." },

    /* listeners.NAME.tls { ... } */
    { "tls", "cert", TN_T_FILE, NULL, 0, 0, NULL, NULL, T(cert), TN_K_REQUIRED,
      "Certificate (PEM)." },
    { "tls", "key", TN_T_FILE, NULL, 0, 0, NULL, NULL, T(key), TN_K_REQUIRED, "Private key (PEM)." },
    { "tls", "chain", TN_T_FILE, "", 0, 0, NULL, NULL, T(chain), 0, "Intermediate certificates (PEM)." },
    { "tls", "min_version", TN_T_ENUM, "1.2", 0, 0, "1.0|1.1|1.2|1.3", NULL, T(min_version), 0,
      "Oldest TLS version accepted." },
    { "tls", "ciphers", TN_T_STRING, "", 0, 0, NULL, NULL, T(ciphers), 0,
      "OpenSSL cipher list for TLS 1.2 and older; empty = forward secret AEAD suites only." },
    { "tls", "ciphersuites", TN_T_STRING, "", 0, 0, NULL, NULL, T(ciphersuites), 0,
      "TLS 1.3 cipher suites; empty = OpenSSL's default." },
    { "tls", "alpn", TN_T_STRLIST, "", 0, 0, NULL, NULL, T(alpn), 0,
      "ALPN protocols offered; HTTP listeners always offer http/1.1." },
    { "tls", "client_ca", TN_T_FILE, "", 0, 0, NULL, NULL, T(client_ca), 0,
      "CA bundle that client certificates must chain to." },
    { "tls", "verify_client", TN_T_ENUM, "none", 0, 0, "none|optional|required", NULL, T(verify_client), 0,
      "Ask for a client certificate." },
    { "tls", "session_tickets", TN_T_BOOL, "true", 0, 0, NULL, NULL, T(session_tickets), 0,
      "Session resumption (tickets, their key rotated on reload; a session cache); false: full handshakes only." },
    { "tls", "sni", TN_T_SNI, NULL, 0, 0, NULL, NULL, 0, TN_K_OPTIONAL,
      "\"server.name\": { cert, key } chosen by SNI." },
    { "sni", "cert", TN_T_FILE, NULL, 0, 0, NULL, NULL, S(cert), TN_K_REQUIRED, "Certificate (PEM)." },
    { "sni", "key", TN_T_FILE, NULL, 0, 0, NULL, NULL, S(key), TN_K_REQUIRED, "Private key (PEM)." },

    /* listeners.NAME.routes."METHOD /path" { ... } (plus [limits] keys) */
    { "route", "handler", TN_T_HANDLER, NULL, 0, 0, NULL, NULL, R(handler), TN_K_REQUIRED,
      "Handler serving the route." },
    { "route", "middleware", TN_T_MIDDLEWARES, "", 0, 0, NULL, NULL, R(middleware), 0,
      "Middleware after the listener's, in order." },

    /* listeners.NAME.websocket."/path" { ... } (plus [limits] keys) */
    { "websocket", "handler", TN_T_HANDLER, NULL, 0, 0, NULL, NULL, W(handler), TN_K_OPTIONAL,
      "Handler for every message (or use handlers)." },
    { "websocket", "handlers", TN_T_HANDLERS, NULL, 0, 0, NULL, NULL, W(handlers), TN_K_OPTIONAL,
      "Handlers selected by each message's first token." },
    { "websocket", "subprotocols", TN_T_STRLIST, "", 0, 0, NULL, NULL, W(subprotocols), 0,
      "Sec-WebSocket-Protocol values accepted." },
    { "websocket", "origins", TN_T_STRLIST, "", 0, 0, NULL, NULL, W(origins), 0,
      "Allowed Origin values, or \"same\"; empty allows any (403 otherwise)." },
    { "websocket", "ping_interval", TN_T_DURATION, "30s", 0, DAY, NULL, NULL, W(ping_interval), 0,
      "Ping an idle peer this often; 0 = never." },
    { "websocket", "pong_timeout", TN_T_DURATION, "10s", 0, HOUR, NULL, NULL, W(pong_timeout), 0,
      "Close a peer that does not answer a ping within this." },
    { "websocket", "deflate", TN_T_BOOL, "false", 0, 0, NULL, NULL, W(deflate), 0,
      "Offer permessage-deflate (off by default: libwebsockets 4.1.6 can abort under it, see WebSocket)." },

    /* [cluster]: broadcast rooms across instances through Redis */
    { "cluster", "redis", TN_T_ADDRESS, NULL, 0, 0, NULL, NULL, CL(redis), TN_K_OPTIONAL,
      "Redis server, host:port or [v6]:port; the name is resolved at start and at each reload." },
    { "cluster", "password", TN_T_STRING, "", 0, 0, NULL, NULL, CL(password), 0,
      "AUTH password (use @env or @file); empty = none. Shown as (hidden) by `config`." },
    { "cluster", "channel_prefix", TN_T_STRING, "tusknet:", 0, 0, NULL, NULL, CL(channel_prefix), 0,
      "A broadcast handler's Redis channel is this prefix followed by the handler's name." },
    { "cluster", "node_id", TN_T_STRING, "", 0, 0, NULL, NULL, CL(node_id), 0,
      "This instance's name on the channels (its own messages come back and are dropped by it); "
      "empty = hostname:pid." },
    { "cluster", "reconnect_max", TN_T_DURATION, "5s", 100, HOUR, NULL, NULL, CL(reconnect_max), 0,
      "Longest wait between attempts to reach Redis; the wait starts at 100ms and doubles." },
    { "cluster", "max_queue", TN_T_SIZE, "4MB", 1 * KB, GB, NULL, NULL, CL(max_queue), 0,
      "Message bytes waiting for Redis (while it is unreachable, or not yet acknowledged); "
      "messages beyond it are lost and counted." },
};
const size_t tn_schema_len = sizeof(tn_schema) / sizeof(tn_schema[0]);

/* ---- small helpers ---------------------------------------------------- */

static const char *skip_ws(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

bool tn_only_matches(const char *only, const char *type_name)
{
    if (!only)
        return true;
    if (!type_name)
        return false;
    size_t n = strlen(type_name);
    for (const char *p = only; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncmp(p, type_name, n) == 0)
            return true;
        if (!e)
            break;
        p = e + 1;
    }
    return false;
}

bool tn_key_applies(const tn_key *k, const char *scope, const char *tname)
{
    return strcmp(k->scope, scope) == 0 && tn_only_matches(k->only, tname);
}

/* Index of NAME in "a|b|c", or -1. */
int tn_enum_index(const char *enums, const char *name)
{
    int i = 0;
    size_t n = strlen(name);
    for (const char *p = enums;; i++) {
        const char *e = strchr(p, '|');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0)
            return i;
        if (!e)
            return -1;
        p = e + 1;
    }
}

/* Writes the I-th name of "a|b|c" into BUF. */
const char *tn_enum_name(const char *enums, int idx, char *buf, size_t len)
{
    const char *p = enums;
    for (int i = 0; i < idx && p; i++) {
        p = strchr(p, '|');
        if (p)
            p++;
    }
    if (!p) {
        snprintf(buf, len, "?");
        return buf;
    }
    const char *e = strchr(p, '|');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    if (n >= len)
        n = len - 1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    return buf;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 99;
    size_t prev[65], cur[65];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (lb + 1) * sizeof(size_t));
    }
    return prev[lb];
}

void tn_suggest_init(tn_suggest *s, const char *word)
{
    s->word = word;
    s->best[0] = '\0';
    s->dist = (size_t)-1;
}

void tn_suggest_add(tn_suggest *s, const char *candidate)
{
    size_t d = edit_distance(s->word, candidate);
    size_t limit = strlen(s->word) / 3 + 1;
    if (limit < 2)
        limit = 2;
    if (d <= limit && d < s->dist && strlen(candidate) < sizeof(s->best)) {
        strcpy(s->best, candidate);
        s->dist = d;
    }
}

/* "; did you mean 'x'?" or "" */
const char *tn_suggest_text(const tn_suggest *s, char *buf, size_t len)
{
    if (!s->best[0])
        return "";
    snprintf(buf, len, "; did you mean '%s'?", s->best);
    return buf;
}

void tn_strlist_free(tn_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

void tn_strmap_free(tn_strmap *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].key);
        free(m->v[i].val);
    }
    free(m->v);
    m->v = NULL;
    m->n = 0;
}

int tn_strlist_copy(tn_strlist *dst, const tn_strlist *src)
{
    dst->n = 0;
    dst->v = src->n ? calloc(src->n, sizeof(char *)) : NULL;
    if (src->n && !dst->v)
        return -1;
    for (size_t i = 0; i < src->n; i++) {
        dst->v[i] = strdup(src->v[i]);
        if (!dst->v[i])
            return -1;
        dst->n++;
    }
    return 0;
}

/* ---- scalar parsers shared with the daemon ----------------------------- */

static int parse_number_unit(const char *s, double *num, const char **unit)
{
    s = skip_ws(s);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !isfinite(v) || v < 0)
        return -1;
    *num = v;
    *unit = skip_ws(end);
    return 0;
}

static int unit_is(const char *unit, const char *name)
{
    size_t n = strlen(name);
    if (strncasecmp(unit, name, n) != 0)
        return 0;
    return *skip_ws(unit + n) == '\0';
}

int tn_parse_duration_ms(const char *s, int64_t *out)
{
    double v;
    const char *u;
    if (parse_number_unit(s, &v, &u) < 0)
        return -1;
    double ms;
    if (!*u || unit_is(u, "s") || unit_is(u, "sec"))
        ms = v * 1000;
    else if (unit_is(u, "ms"))
        ms = v;
    else if (unit_is(u, "us"))
        ms = v / 1000;
    else if (unit_is(u, "m") || unit_is(u, "min"))
        ms = v * 60000;
    else if (unit_is(u, "h"))
        ms = v * 3600000;
    else if (unit_is(u, "d"))
        ms = v * 86400000;
    else
        return -1;
    if (ms > 9e15)
        return -1;
    *out = (int64_t)llround(ms);
    if (*out == 0 && ms > 0)
        *out = 1; /* under a millisecond is not "never" */
    return 0;
}

int tn_parse_size(const char *s, int64_t *out)
{
    double v;
    const char *u;
    if (parse_number_unit(s, &v, &u) < 0)
        return -1;
    double mult;
    if (!*u || unit_is(u, "b"))
        mult = 1;
    else if (unit_is(u, "k") || unit_is(u, "kb") || unit_is(u, "kib"))
        mult = KB;
    else if (unit_is(u, "m") || unit_is(u, "mb") || unit_is(u, "mib"))
        mult = MB;
    else if (unit_is(u, "g") || unit_is(u, "gb") || unit_is(u, "gib"))
        mult = GB;
    else
        return -1;
    double b = v * mult;
    if (b > 9e15 || b != floor(b))
        return -1;
    *out = (int64_t)b;
    return 0;
}

static int parse_rate(const char *s, double *out)
{
    double v;
    const char *u;
    if (parse_number_unit(s, &v, &u) < 0)
        return -1;
    if (!*u || strcmp(u, "/s") == 0)
        *out = v;
    else if (strcmp(u, "/m") == 0)
        *out = v / 60;
    else if (strcmp(u, "/h") == 0)
        *out = v / 3600;
    else
        return -1;
    return 0;
}

int tn_parse_listen(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon;
    const char *h = s;
    size_t hl;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return -1;
        h = s + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
        char tmp[INET6_ADDRSTRLEN];
        struct in6_addr a6;
        if (hl == 0 || hl >= sizeof(tmp))
            return -1;
        memcpy(tmp, h, hl);
        tmp[hl] = '\0';
        if (inet_pton(AF_INET6, tmp, &a6) != 1)
            return -1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -1;
        hl = (size_t)(colon - s);
        if (memchr(s, ':', hl))
            return -1; /* bare IPv6 needs brackets */
        if (hl == 1 && *s == '*')
            hl = 0;
    }
    if (hl >= hostlen)
        return -1;
    const char *p = colon + 1;
    if (!*p)
        return -1;
    long v = 0;
    for (; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return -1;
        v = v * 10 + (*p - '0');
        if (v > 65535)
            return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    for (size_t i = 0; i < hl; i++)
        if (!isalnum((unsigned char)host[i]) && !strchr(".-:_", host[i]))
            return -1;
    *port = (int)v;
    return 0;
}

/* addr or addr/prefix, IPv4 or IPv6 */
static int parse_cidr(const char *s)
{
    char buf[64];
    size_t n = strlen(s);
    if (n >= sizeof(buf))
        return -1;
    memcpy(buf, s, n + 1);
    char *slash = strchr(buf, '/');
    long prefix = -1;
    if (slash) {
        *slash = '\0';
        char *end;
        prefix = strtol(slash + 1, &end, 10);
        if (!slash[1] || *end || prefix < 0)
            return -1;
    }
    unsigned char a[16];
    if (inet_pton(AF_INET, buf, a) == 1)
        return prefix <= 32 ? 0 : -1;
    if (inet_pton(AF_INET6, buf, a) == 1)
        return prefix <= 128 ? 0 : -1;
    return -1;
}

/* ---- value -> field conversion ---------------------------------------- */

static char *value_text(const tn_value *v, char *buf, size_t len)
{
    switch (v->type) {
    case TN_V_STRING: return v->u.s.ptr;
    case TN_V_INT: snprintf(buf, len, "%" PRId64, v->u.i); return buf;
    case TN_V_FLOAT:
        /* the shortest text that reads back as the same number: 1.1, not
         * 1.1000000000000001 */
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(buf, len, "%.*g", prec, v->u.f);
            if (strtod(buf, NULL) == v->u.f)
                break;
        }
        if (!strpbrk(buf, ".eEn") && len > strlen(buf) + 2)
            strcat(buf, ".0"); /* still reads as a float: 1.0 stays "1.0" */
        return buf;
    case TN_V_BOOL: return v->u.b ? "true" : "false";
    default: return NULL;
    }
}

static void type_error(tn_diag *d, const tn_key *k, const tn_value *v, const char *expected)
{
    tn_diag_error(d, v->pos, "'%s' must be %s, not %s", k->key, expected, tn_vtype_name(v->type));
}

static bool check_bounds(tn_diag *d, const tn_key *k, const tn_value *v, int64_t n, const char *shown)
{
    if (k->min == 0 && k->max == 0)
        return true;
    if (n < k->min || n > k->max) {
        char lo[32], hi[32];
        tn_format_field(k->type, k->min, lo, sizeof(lo));
        tn_format_field(k->type, k->max, hi, sizeof(hi));
        tn_diag_error(d, v->pos, "'%s' is out of range: %s (allowed %s to %s)", k->key, shown, lo, hi);
        return false;
    }
    return true;
}

void tn_format_field(int type, int64_t n, char *buf, size_t len)
{
    if (type == TN_T_DURATION) {
        if (n == 0)
            snprintf(buf, len, "0s");
        else if (n % DAY == 0)
            snprintf(buf, len, "%" PRId64 "d", n / DAY);
        else if (n % HOUR == 0)
            snprintf(buf, len, "%" PRId64 "h", n / HOUR);
        else if (n % MIN == 0)
            snprintf(buf, len, "%" PRId64 "m", n / MIN);
        else if (n % SEC == 0)
            snprintf(buf, len, "%" PRId64 "s", n / SEC);
        else
            snprintf(buf, len, "%" PRId64 "ms", n);
    } else if (type == TN_T_SIZE) {
        if (n != 0 && n % GB == 0)
            snprintf(buf, len, "%" PRId64 "GB", n / GB);
        else if (n != 0 && n % MB == 0)
            snprintf(buf, len, "%" PRId64 "MB", n / MB);
        else if (n != 0 && n % KB == 0)
            snprintf(buf, len, "%" PRId64 "KB", n / KB);
        else
            snprintf(buf, len, "%" PRId64, n);
    } else {
        snprintf(buf, len, "%" PRId64, n);
    }
}

static bool conv_strlist(tn_diag *d, const tn_key *k, const tn_value *v, tn_strlist *out)
{
    tn_strlist l = { 0 };
    const tn_value *const *items = (const tn_value *const *)&v;
    size_t n = 1;
    if (v->type == TN_V_ARRAY) {
        items = (const tn_value *const *)v->u.a.items;
        n = v->u.a.len;
    }
    if (n) {
        l.v = calloc(n, sizeof(char *));
        if (!l.v)
            return false;
    }
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        const tn_value *it = items[i];
        if (it->type != TN_V_STRING) {
            if (v->type == TN_V_ARRAY)
                tn_diag_error(d, it->pos, "'%s' must be a list of strings; item %zu is %s", k->key, i + 1,
                              tn_vtype_name(it->type));
            else
                type_error(d, k, v, "a string or a list of strings");
            ok = false;
            continue;
        }
        if (k->type == TN_T_CIDRS && parse_cidr(it->u.s.ptr) < 0) {
            tn_diag_error(d, it->pos, "'%s': '%s' is not an address or CIDR range", k->key, it->u.s.ptr);
            ok = false;
            continue;
        }
        l.v[l.n++] = strdup(it->u.s.ptr);
    }
    if (ok && k->type == TN_T_ARGV && l.n == 0) {
        tn_diag_error(d, v->pos, "'%s' must name a program", k->key);
        ok = false;
    }
    if (!ok) {
        tn_strlist_free(&l);
        return false;
    }
    tn_strlist_free(out);
    *out = l;
    return true;
}

static bool conv_strmap(tn_diag *d, const tn_key *k, const tn_value *v, tn_strmap *out)
{
    if (v->type != TN_V_OBJECT) {
        type_error(d, k, v, "an object of strings");
        return false;
    }
    tn_strmap m = { 0 };
    if (v->u.o.len) {
        m.v = calloc(v->u.o.len, sizeof(tn_strpair));
        if (!m.v)
            return false;
    }
    bool ok = true;
    for (size_t i = 0; i < v->u.o.len; i++) {
        const tn_member *mem = &v->u.o.items[i];
        char buf[64];
        const char *t = value_text(mem->val, buf, sizeof(buf));
        if (!t) {
            tn_diag_error(d, mem->val->pos, "'%s.%s' must be a string, not %s", k->key, mem->key,
                          tn_vtype_name(mem->val->type));
            ok = false;
            continue;
        }
        m.v[m.n].key = strdup(mem->key);
        m.v[m.n].val = strdup(t);
        m.n++;
    }
    if (!ok) {
        tn_strmap_free(&m);
        return false;
    }
    tn_strmap_free(out);
    *out = m;
    return true;
}

bool tn_convert(tn_diag *d, const tn_key *k, const tn_value *v, void *base)
{
    void *field = (char *)base + k->off;
    char buf[64];
    char shown[64];
    switch (k->type) {
    case TN_T_BOOL: {
        bool b;
        if (v->type == TN_V_BOOL)
            b = v->u.b;
        else if (v->type == TN_V_STRING && (!strcasecmp(v->u.s.ptr, "true") || !strcasecmp(v->u.s.ptr, "yes") ||
                                            !strcasecmp(v->u.s.ptr, "on") || !strcmp(v->u.s.ptr, "1")))
            b = true;
        else if (v->type == TN_V_STRING && (!strcasecmp(v->u.s.ptr, "false") || !strcasecmp(v->u.s.ptr, "no") ||
                                            !strcasecmp(v->u.s.ptr, "off") || !strcmp(v->u.s.ptr, "0")))
            b = false;
        else {
            type_error(d, k, v, "true or false");
            return false;
        }
        *(bool *)field = b;
        return true;
    }
    case TN_T_INT: {
        int64_t n;
        if (v->type == TN_V_INT)
            n = v->u.i;
        else if (v->type == TN_V_STRING && (k->flags & TN_K_AUTO) && strcmp(v->u.s.ptr, "auto") == 0)
            n = 0;
        else if (v->type == TN_V_STRING && v->u.s.len) {
            char *end;
            errno = 0;
            long long ll = strtoll(v->u.s.ptr, &end, 10);
            if (*end || errno) {
                tn_diag_error(d, v->pos, "'%s' must be an integer, not \"%s\"", k->key, v->u.s.ptr);
                return false;
            }
            n = ll;
        } else {
            type_error(d, k, v, "an integer");
            return false;
        }
        snprintf(shown, sizeof(shown), "%" PRId64, n);
        if (!check_bounds(d, k, v, n, shown))
            return false;
        *(int64_t *)field = n;
        return true;
    }
    case TN_T_DURATION:
    case TN_T_SIZE: {
        int64_t n;
        bool dur = k->type == TN_T_DURATION;
        if ((v->type == TN_V_INT && v->u.i < 0) || (v->type == TN_V_FLOAT && v->u.f < 0)) {
            /* shown in the unit a bare number means (seconds, bytes) */
            if (v->type == TN_V_INT)
                snprintf(shown, sizeof(shown), "%" PRId64 "%s", v->u.i, dur ? "s" : "");
            else
                snprintf(shown, sizeof(shown), "%g%s", v->u.f, dur ? "s" : "");
            char lo[32], hi[32];
            tn_format_field(k->type, k->min, lo, sizeof(lo));
            tn_format_field(k->type, k->max, hi, sizeof(hi));
            tn_diag_error(d, v->pos, "'%s' is out of range: %s (allowed %s to %s)", k->key, shown, lo, hi);
            return false;
        } else if (v->type == TN_V_INT) {
            if (v->u.i > 9000000000000LL) {
                tn_diag_error(d, v->pos, "'%s' is out of range", k->key);
                return false;
            }
            n = dur ? v->u.i * 1000 : v->u.i;
        } else if (v->type == TN_V_FLOAT && v->u.f >= 0 && dur && v->u.f < 9e12) {
            n = (int64_t)llround(v->u.f * 1000);
        } else if (v->type == TN_V_STRING) {
            int rc = dur ? tn_parse_duration_ms(v->u.s.ptr, &n) : tn_parse_size(v->u.s.ptr, &n);
            if (rc < 0) {
                if (dur)
                    tn_diag_error(d, v->pos, "'%s': bad duration \"%s\" (use e.g. 250ms, 30s, 5m, 1h)", k->key,
                                  v->u.s.ptr);
                else
                    tn_diag_error(d, v->pos, "'%s': bad size \"%s\" (use e.g. 512, 64KB, 1MB)", k->key,
                                  v->u.s.ptr);
                return false;
            }
        } else {
            type_error(d, k, v, dur ? "a duration" : "a size");
            return false;
        }
        tn_format_field(k->type, n, shown, sizeof(shown));
        if (!check_bounds(d, k, v, n, shown))
            return false;
        *(int64_t *)field = n;
        return true;
    }
    case TN_T_RATE: {
        double r;
        if (v->type == TN_V_INT && v->u.i >= 0)
            r = (double)v->u.i;
        else if (v->type == TN_V_FLOAT && v->u.f >= 0)
            r = v->u.f;
        else if (v->type == TN_V_STRING && parse_rate(v->u.s.ptr, &r) == 0)
            ;
        else {
            if (v->type == TN_V_STRING)
                tn_diag_error(d, v->pos, "'%s': bad rate \"%s\" (use e.g. 100/s, 600/m)", k->key, v->u.s.ptr);
            else if (v->type == TN_V_INT || v->type == TN_V_FLOAT)
                tn_diag_error(d, v->pos, "'%s' must not be negative", k->key);
            else
                type_error(d, k, v, "a rate");
            return false;
        }
        if (r > 1e9) {
            tn_diag_error(d, v->pos, "'%s' is out of range", k->key);
            return false;
        }
        *(double *)field = r;
        return true;
    }
    case TN_T_ENUM: {
        const char *t = value_text(v, buf, sizeof(buf));
        if (!t || v->type == TN_V_BOOL) {
            type_error(d, k, v, "a string");
            return false;
        }
        int idx = tn_enum_index(k->enums, t);
        if (idx < 0) {
            tn_suggest s;
            tn_suggest_init(&s, t);
            char list[256] = "", name[64];
            for (int i = 0; tn_enum_name(k->enums, i, name, sizeof(name))[0] != '?'; i++) {
                tn_suggest_add(&s, name);
                size_t used = strlen(list);
                snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "", name);
            }
            char sug[96];
            const char *what = strcmp(k->key, "type") == 0 ? "type" : k->key;
            if (strcmp(k->key, "protocol") == 0)
                tn_diag_error(d, v->pos, "unknown protocol '%s' (expected one of: %s)%s", t, list,
                              tn_suggest_text(&s, sug, sizeof(sug)));
            else
                tn_diag_error(d, v->pos, "unknown %s '%s' (expected one of: %s)%s", what, t, list,
                              tn_suggest_text(&s, sug, sizeof(sug)));
            return false;
        }
        *(int *)field = idx;
        return true;
    }
    case TN_T_STRING:
    case TN_T_FILE:
    case TN_T_HANDLER:
    case TN_T_ADDRESS: {
        if (v->type != TN_V_STRING) {
            type_error(d, k, v, "a string");
            return false;
        }
        if (k->type == TN_T_ADDRESS) {
            char host[256];
            int port;
            if (tn_parse_listen(v->u.s.ptr, host, sizeof(host), &port) < 0) {
                tn_diag_error(d, v->pos, "'%s': bad address \"%s\" (use host:port, [v6]:port or *:port)",
                              k->key, v->u.s.ptr);
                return false;
            }
        }
        char *s = strdup(v->u.s.ptr);
        if (!s)
            return false;
        free(*(char **)field);
        *(char **)field = s;
        return true;
    }
    case TN_T_STRLIST:
    case TN_T_CIDRS:
    case TN_T_ARGV:
    case TN_T_HANDLERS:
    case TN_T_MIDDLEWARES:
        return conv_strlist(d, k, v, field);
    case TN_T_STRMAP:
        return conv_strmap(d, k, v, field);
    default:
        return false;
    }
}

/* Build the default of row K as a value and convert it like user input. */
bool tn_apply_default(tn_diag *d, const tn_key *k, void *base)
{
    if (!k->def)
        return true;
    tn_pos pos = { "<default>", 0, 0 };
    tn_value *v;
    switch (k->type) {
    case TN_T_STRLIST:
    case TN_T_CIDRS:
    case TN_T_ARGV:
    case TN_T_HANDLERS:
    case TN_T_MIDDLEWARES:
        v = tn_value_new(TN_V_ARRAY, pos);
        for (const char *p = k->def; v && *p;) {
            const char *e = strchr(p, ',');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            tn_array_push(v, tn_value_string(p, n, pos));
            p = e ? e + 1 : p + n;
        }
        break;
    case TN_T_STRMAP:
        v = tn_value_new(TN_V_OBJECT, pos);
        break;
    case TN_T_BOOL:
        v = tn_value_bool(strcmp(k->def, "true") == 0, pos);
        break;
    case TN_T_INT:
        v = tn_value_int(strtoll(k->def, NULL, 10), pos);
        break;
    default:
        v = tn_value_string(k->def, strlen(k->def), pos);
        break;
    }
    if (!v)
        return false;
    bool ok = tn_convert(d, k, v, base);
    tn_value_free(v);
    return ok;
}

void tn_free_field(const tn_key *k, void *base)
{
    void *field = (char *)base + k->off;
    switch (k->type) {
    case TN_T_STRING:
    case TN_T_FILE:
    case TN_T_HANDLER:
    case TN_T_ADDRESS:
        free(*(char **)field);
        *(char **)field = NULL;
        break;
    case TN_T_STRLIST:
    case TN_T_CIDRS:
    case TN_T_ARGV:
    case TN_T_HANDLERS:
    case TN_T_MIDDLEWARES:
        tn_strlist_free(field);
        break;
    case TN_T_STRMAP:
        tn_strmap_free(field);
        break;
    default:
        break;
    }
}

/* Field back to a value, for the dump. NULL when the field is unset. */
tn_value *tn_field_value(const tn_key *k, const void *base)
{
    const void *field = (const char *)base + k->off;
    tn_pos pos = { NULL, 0, 0 };
    char buf[64];
    switch (k->type) {
    case TN_T_BOOL:
        return tn_value_bool(*(const bool *)field, pos);
    case TN_T_INT:
        return tn_value_int(*(const int64_t *)field, pos);
    case TN_T_DURATION:
    case TN_T_SIZE: {
        int64_t n = *(const int64_t *)field;
        tn_format_field(k->type, n, buf, sizeof(buf));
        if (k->type == TN_T_SIZE && strspn(buf, "0123456789") == strlen(buf))
            return tn_value_int(n, pos);
        return tn_value_string(buf, strlen(buf), pos);
    }
    case TN_T_RATE: {
        double r = *(const double *)field;
        if (r == 0)
            return tn_value_int(0, pos);
        if (r * 60 == floor(r * 60) && r != floor(r))
            snprintf(buf, sizeof(buf), "%.17g/m", r * 60);
        else
            snprintf(buf, sizeof(buf), "%.17g/s", r);
        return tn_value_string(buf, strlen(buf), pos);
    }
    case TN_T_ENUM: {
        tn_enum_name(k->enums, *(const int *)field, buf, sizeof(buf));
        return tn_value_string(buf, strlen(buf), pos);
    }
    case TN_T_STRING:
    case TN_T_FILE:
    case TN_T_HANDLER:
    case TN_T_ADDRESS: {
        const char *s = *(char *const *)field;
        return s ? tn_value_string(s, strlen(s), pos) : NULL;
    }
    case TN_T_STRLIST:
    case TN_T_CIDRS:
    case TN_T_ARGV:
    case TN_T_HANDLERS:
    case TN_T_MIDDLEWARES: {
        const tn_strlist *l = field;
        tn_value *a = tn_value_new(TN_V_ARRAY, pos);
        for (size_t i = 0; a && i < l->n; i++)
            tn_array_push(a, tn_value_string(l->v[i], strlen(l->v[i]), pos));
        return a;
    }
    case TN_T_STRMAP: {
        const tn_strmap *m = field;
        tn_value *o = tn_value_new(TN_V_OBJECT, pos);
        for (size_t i = 0; o && i < m->n; i++)
            tn_object_add(o, strdup(m->v[i].key), pos, tn_value_string(m->v[i].val, strlen(m->v[i].val), pos));
        return o;
    }
    default:
        return NULL;
    }
}

bool tn_field_equal(const tn_key *k, const void *a, const void *b)
{
    tn_value *va = tn_field_value(k, a), *vb = tn_field_value(k, b);
    bool eq = tn_value_equal(va, vb);
    tn_value_free(va);
    tn_value_free(vb);
    return eq;
}

const char *tn_type_doc(int type)
{
    switch (type) {
    case TN_T_BOOL: return "bool";
    case TN_T_INT: return "integer";
    case TN_T_DURATION: return "duration";
    case TN_T_SIZE: return "size";
    case TN_T_RATE: return "rate";
    case TN_T_ENUM: return "enum";
    case TN_T_STRING: return "string";
    case TN_T_FILE: return "file path";
    case TN_T_STRLIST: return "list of strings";
    case TN_T_CIDRS: return "list of CIDRs";
    case TN_T_ARGV: return "argv list";
    case TN_T_STRMAP: return "object of strings";
    case TN_T_ADDRESS: return "address";
    case TN_T_HANDLER: return "handler name";
    case TN_T_HANDLERS: return "list of handler names";
    case TN_T_MIDDLEWARES: return "list of middleware";
    case TN_T_ROUTES: return "object";
    case TN_T_WEBSOCKET: return "object";
    case TN_T_TLS: return "object";
    case TN_T_SNI: return "object";
    }
    return "?";
}
