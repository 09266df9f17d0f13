/* SPDX-License-Identifier: MIT */
/* fuzz_net.c - libFuzzer harness for what faces the network, through the
 * daemon's own sockets.
 *
 * One daemon is started in this process on a fixed config (no handler that
 * forks); each input is sent over a fresh loopback connection, the write side
 * is shut, and the loop is driven until the daemon closes the connection or
 * a pass bound is reached. So an input exercises exactly what a client would:
 * accept, framing, parsing, handler selection, routing, middleware, handlers,
 * replies, closing. One source, four targets (-DFUZZ_TARGET=...):
 *
 *   1 http   the HTTP request path: parser, the strictness layer, header,
 *            URL and path handling, routes, middleware, file and static handlers
 *   2 line   TCP line framing with handler selection by first token
 *   3 ws     WebSocket upgrade checks: the input is the head of a GET to a
 *            WebSocket endpoint after its request line (then frames, if lws
 *            accepts the upgrade)
 *   4 ctl    the control socket's command parser (commands that stop or
 *            reconfigure the daemon are skipped)
 *
 * The daemon must not crash, leak, or keep a connection open after the
 * client's FIN once it has answered (a connection still open after the pass
 * bound is a finding: abort). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config/config.h"
#include "config/tusk.h"
#include "daemon.h"
#include "log.h"
#include "net/listener.h"

#ifndef FUZZ_TARGET
#define FUZZ_TARGET 1
#endif

#define MAX_PASSES 4000

static const char config_fmt[] =
    "[daemon]\n"
    "control_socket: \"%s/ctl.sock\"\n"
    "log_level: \"error\"\n"
    "max_connections: 100000\n"
    "[limits]\n"
    "max_line: \"4KB\"\n"
    "max_header: \"4KB\"\n"
    "max_body: \"64KB\"\n"
    "max_message: \"64KB\"\n"
    "[handlers]\n"
    "echo  { type: \"echo\" }\n"
    "ping  { type: \"static\" reply: \"+PONG\" }\n"
    "tpl   { type: \"static\" reply: \"p={payload} r={remote_addr}\" headers: { \"X-T\": \"1\" } }\n"
    "chat  { type: \"broadcast\" }\n"
    "health { type: \"health\" }\n"
    "metrics { type: \"metrics\" }\n"
    "files { type: \"file\" root: \"%s/www\" }\n"
    "moved { type: \"redirect\" location: \"/new{path}?{query}\" }\n"
    "[middleware]\n"
    "cors { type: \"cors\" origins: [\"https://a.example\"] credentials: true }\n"
    "gz   { type: \"gzip\" min_size: \"16B\" }\n"
    "auth { type: \"auth\" tokens: [\"secret\"] users: { alice: \"pw\" } }\n"
    "rl   { type: \"rate_limit\" rate: \"1000000/s\" }\n"
    "hdrs { type: \"headers\" set: { \"X-Frame-Options\": \"DENY\" } add: { \"X-A\": \"b\" } }\n"
    "alog { type: \"access_log\" file: \"%s/access.log\" format: \"json\" }\n"
    "[listeners]\n"
    "web {\n"
    "  protocol: \"http\" listen: \"127.0.0.1:0\"\n"
    "  middleware: [\"alog\", \"cors\", \"gz\", \"hdrs\"]\n"
    "  routes {\n"
    "    \"GET /health\": \"health\"  \"POST /echo\": \"echo\"  \"/t/:id\": \"tpl\"\n"
    "    \"GET /metrics\": \"metrics\"  \"GET /old/*\": \"moved\"  \"POST /chat\": \"chat\"\n"
    "    \"/private/*\": { handler: \"echo\" middleware: [\"auth\", \"rl\"] }\n"
    "    \"GET /*\": \"files\"\n"
    "  }\n"
    "  websocket { \"/ws\": \"echo\"  \"/chat\": \"chat\" }\n"
    "}\n"
    "lines { protocol: \"tcp\" listen: \"127.0.0.1:0\" handlers: [\"echo\", \"ping\", \"tpl\", \"chat\"] }\n";

static tn_daemon *daemon_under_test;
static struct sockaddr_in web_addr, line_addr;
static char dir[64];

static void die(const char *why)
{
    fprintf(stderr, "fuzz_net: %s (%s)\n", why, strerror(errno));
    abort();
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        die(path);
}

static void stop_daemon(void)
{
    if (daemon_under_test)
        tn_daemon_stop(daemon_under_test);
    daemon_under_test = NULL;
    char path[128];
    const char *names[] = { "www/index.html", "www/a.css", "www/a.css.gz", "ctl.sock", "access.log",
                            "tusknetd.conf" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    snprintf(path, sizeof(path), "%s/www", dir);
    rmdir(path);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    strcpy(dir, "/tmp/tusknet-fuzz-XXXXXX");
    if (!mkdtemp(dir))
        die("mkdtemp");
    char path[128], text[8192];
    snprintf(path, sizeof(path), "%s/www", dir);
    if (mkdir(path, 0755) != 0)
        die(path);
    snprintf(path, sizeof(path), "%s/www/index.html", dir);
    write_file(path, "<html><body>index index index index index</body></html>\n");
    snprintf(path, sizeof(path), "%s/www/a.css", dir);
    write_file(path, "body { color: red; } body { color: red; } body { color: red; }\n");
    snprintf(path, sizeof(path), "%s/www/a.css.gz", dir);
    write_file(path, "not really gzip, served as the precompressed sibling\n");
    snprintf(text, sizeof(text), config_fmt, dir, dir, dir);
    snprintf(path, sizeof(path), "%s/tusknetd.conf", dir);
    write_file(path, text);

    tn_log_set_level(TN_LOG_ERROR);
    tn_diag diag = { 0 };
    tn_config *cfg = tn_config_load(path, &diag);
    if (!cfg || tn_diag_errors(&diag)) {
        tn_diag_print(&diag, stderr);
        die("the fuzz config does not load");
    }
    tn_diag_free(&diag);
    daemon_under_test = tn_daemon_start(cfg, path, TN_LOG_ERROR);
    if (!daemon_under_test)
        die("the daemon does not start");
    /* libFuzzer installs its signal handlers (SIGALRM for -timeout,
     * SIGUSR1/SIGUSR2, SIGINT/SIGTERM to stop) after this returns, and only
     * where no handler is set yet: the daemon's signals go back to it. */
    for (int i = 0; i < TN_NSIGNALS; i++)
        if (daemon_under_test->sig_ev[i])
            event_del(daemon_under_test->sig_ev[i]);
    atexit(stop_daemon);
    for (tn_listener *l = daemon_under_test->listeners; l; l = l->next) {
        struct sockaddr_in *to = strcmp(l->name, "web") == 0 ? &web_addr : &line_addr;
        memcpy(to, &l->bound, sizeof(*to));
    }
    return 0;
}

static int connect_target(void)
{
#if FUZZ_TARGET == 4
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/ctl.sock", dir);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0)
        die("connect to the control socket");
#else
    const struct sockaddr_in *to = FUZZ_TARGET == 2 ? &line_addr : &web_addr;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        die("socket");
    /* a reset instead of TIME_WAIT: a run makes more connections than there are ports */
    struct linger lg = { 1, 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    if (connect(fd, (const struct sockaddr *)to, sizeof(*to)) != 0 && errno != EINPROGRESS)
        die("connect");
#endif
    return fd;
}

/* Commands that would stop, reload or silence the daemon under test. */
static int ctl_input_allowed(const uint8_t *data, size_t size)
{
    static const char *const skipped[] = { "shutdown", "reload", "log-level", "close" };
    size_t i = 0;
    while (i < size) {
        while (i < size && (data[i] == ' ' || data[i] == '\t'))
            i++;
        for (size_t k = 0; k < sizeof(skipped) / sizeof(skipped[0]); k++) {
            size_t n = strlen(skipped[k]);
            if (size - i >= n && memcmp(data + i, skipped[k], n) == 0)
                return 0;
        }
        const uint8_t *nl = memchr(data + i, '\n', size - i);
        if (!nl)
            break;
        i = (size_t)(nl - data) + 1;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (FUZZ_TARGET == 4 && !ctl_input_allowed(data, size))
        return 0;
    static const char ws_head[] = "GET /ws HTTP/1.1\r\n";
    uint8_t *msg = malloc(size + sizeof(ws_head));
    if (!msg)
        die("malloc");
    size_t len = 0;
    if (FUZZ_TARGET == 3) {
        memcpy(msg, ws_head, sizeof(ws_head) - 1);
        len = sizeof(ws_head) - 1;
    }
    memcpy(msg + len, data, size);
    len += size;

    struct event_base *base = daemon_under_test->base;
    int fd = connect_target();
    size_t sent = 0;
    int shut = 0, closed = 0;
    char sink[65536];
    for (int pass = 0; pass < MAX_PASSES && !closed; pass++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        if (sent < len) {
            ssize_t w = send(fd, msg + sent, len - sent, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != ENOTCONN)
                closed = 1; /* the daemon closed first: it has answered */
        } else if (!shut) {
            shutdown(fd, SHUT_WR);
            shut = 1;
        }
        for (;;) {
            ssize_t r = recv(fd, sink, sizeof(sink), 0);
            if (r > 0)
                continue;
            if (r == 0 || (errno != EAGAIN && errno != ENOTCONN))
                closed = 1;
            break;
        }
    }
    close(fd);
    /* let the daemon see the reset and release the connection */
    for (int pass = 0; pass < 20; pass++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    free(msg);
    if (!closed) {
        fprintf(stderr, "fuzz_net: the daemon kept the connection open after the client's FIN\n");
        abort();
    }
    return 0;
}
