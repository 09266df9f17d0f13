/* SPDX-License-Identifier: MIT */
/* tusknetctl.c - the control client of tusknetd.
 *
 *   tusknetctl [-s SOCKET] [--json] [--timeout SECONDS] COMMAND [ARGS...]
 *   tusknetctl [-s SOCKET] top [-n N] [-d SECONDS]
 *
 * Sends one command line to the control socket, reads one answer (one JSON
 * line; for `metrics` Prometheus text up to the "# EOF" line) and prints it:
 * raw with --json, as aligned tables with human units otherwise. `top` keeps
 * the connection open, samples `stats` every interval and shows rates.
 *
 * This file owns the command line (options, checking a command's arguments)
 * and the exit status: 0 success, 1 the daemon answered an error or could not
 * be reached, 2 usage error. The rest lives in src/ctl/: the JSON reader
 * (json), the tables and per-command output (render), the socket (conn), `top`
 * (top) and small helpers (util). Self-contained on purpose: the Makefile
 * links it with src/ctl/ alone, none of the daemon's objects. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "ctl/conn.h"
#include "ctl/json.h"
#include "ctl/render.h"
#include "ctl/top.h"
#include "ctl/util.h"
#include "version.h"

#define DEFAULT_SOCKET "/run/tusknetd/control.sock"
#define MAX_COMMAND 65535 /* the daemon refuses longer command lines */

__attribute__((format(printf, 1, 2), noreturn)) static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("tusknetctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'tusknetctl --help' for more information.\n", stderr);
    exit(2);
}

/* ---- main ----------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs("Usage: tusknetctl [-s SOCKET] [--json] [--timeout SECONDS] COMMAND [ARGS...]\n"
          "       tusknetctl [-s SOCKET] top [-n N] [-d SECONDS]\n"
          "\n"
          "Talks to tusknetd on its control socket: " DEFAULT_SOCKET ",\n"
          "or $TUSKNETCTL_SOCKET when set, or the path given with -s.\n"
          "\n"
          "Options:\n"
          "  -s, --socket PATH      the control socket\n"
          "  -j, --json             print the daemon's answer as received (one JSON line)\n"
          "  -t, --timeout SECONDS  wait at most this long for an answer (default 30, 0: forever)\n"
          "  -h, --help             this help\n"
          "  -V, --version          tusknetctl's version\n"
          "\n"
          "Commands anyone with read access may use:\n"
          "  stats                      counters globally, per listener and per handler\n"
          "  info                       process, build, reloads, memory, descriptors, connections\n"
          "  metrics                    Prometheus text exposition, ending with # EOF\n"
          "  connections [LISTENER]     open connections\n"
          "  listeners                  listeners with their bound addresses\n"
          "  handlers                   handlers with calls, errors and latency\n"
          "  routes                     HTTP routes and WebSocket endpoints\n"
          "  config                     the running configuration, normalized\n"
          "  version                    the daemon's version\n"
          "  help                       the daemon's own list of commands\n"
          "  top [-n N] [-d SECONDS]    live view refreshed every SECONDS (default 1) with rates;\n"
          "                             q or Ctrl-C quits; -n stops after N refreshes\n"
          "Commands for admins (root, the daemon's user):\n"
          "  reload                     re-read the configuration file\n"
          "  close ID                   close a connection\n"
          "  send [NODE:]ID MESSAGE     push a message to one connection (NODE: one of\n"
          "                             another instance, node_id NODE, through [cluster])\n"
          "  broadcast HANDLER MESSAGE  push a message to every connection attached to HANDLER\n"
          "  log-level LEVEL            error, warn, info or debug\n"
          "  shutdown                   graceful shutdown\n"
          "\n"
          "Exit status: 0 done, 1 the daemon answered an error or could not be reached,\n"
          "2 usage error.\n",
          f);
}

static double parse_seconds(const char *opt, const char *s, bool zero_ok)
{
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || errno || end == s || *end || v != v || v < 0 || (!zero_ok && v == 0) || v > 86400 * 365)
        usage_error("%s needs a number of seconds%s, not '%s'", opt, zero_ok ? "" : " above 0", s ? s : "");
    return v;
}

/* Option with a value: "-s X", "-sX", "--socket X", "--socket=X". Returns the
 * value (advancing *I past it) or NULL if ARGV[*I] is not this option. */
static const char *opt_value(int argc, char **argv, int *i, const char *shortopt, const char *longopt)
{
    const char *a = argv[*i];
    size_t ln = strlen(longopt);
    if (strcmp(a, shortopt) == 0 || strcmp(a, longopt) == 0) {
        if (*i + 1 >= argc)
            usage_error("option %s needs a value", a);
        return argv[++*i];
    }
    if (strncmp(a, longopt, ln) == 0 && a[ln] == '=')
        return a + ln + 1;
    if (strncmp(a, shortopt, 2) == 0 && a[2])
        return a + 2;
    return NULL;
}

int main(int argc, char **argv)
{
    bool json = false;
    const char *sock_path = DEFAULT_SOCKET;
    double timeout = 30; /* seconds to wait for an answer; 0 = forever */
    const char *msg_args[3]; /* the command's first arguments, for the messages */
    const char *env = getenv("TUSKNETCTL_SOCKET");
    if (env && *env)
        sock_path = env;

    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i], *v;
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (a[0] != '-' || !a[1])
            break;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("tusknetctl %s\n", TN_VERSION);
            return 0;
        }
        if (strcmp(a, "-j") == 0 || strcmp(a, "--json") == 0)
            json = true;
        else if ((v = opt_value(argc, argv, &i, "-s", "--socket")))
            sock_path = v;
        else if ((v = opt_value(argc, argv, &i, "-t", "--timeout")))
            timeout = parse_seconds("--timeout", v, true);
        else
            usage_error("unknown option '%s'", a);
    }
    if (i >= argc)
        usage_error("no command given");
    const char *cmdname = argv[i++];
    const tn_ctl_command *cmd = tn_ctl_find_command(cmdname);
    if (!cmd)
        usage_error("unknown command '%s'", cmdname);

    /* the command's arguments; for commands without free text, options may
     * also follow the command (tusknetctl stats --json) */
    static char **args; /* static: still reachable when a usage error exits */
    args = tn_ctl_calloc((size_t)argc + 1, sizeof(char *));
    int nargs = 0;
    int top_n = 0;
    double top_d = 1.0;
    bool free_text = cmd->max_args < 0;
    for (; i < argc; i++) {
        const char *a = argv[i], *v;
        if (free_text && nargs >= cmd->min_args - 1) {
            args[nargs++] = argv[i];
            continue;
        }
        if (a[0] == '-' && a[1]) {
            if (strcmp(a, "-j") == 0 || strcmp(a, "--json") == 0)
                json = true;
            else if ((v = opt_value(argc, argv, &i, "-s", "--socket")))
                sock_path = v;
            else if ((v = opt_value(argc, argv, &i, "-t", "--timeout")))
                timeout = parse_seconds("--timeout", v, true);
            else if (strcmp(cmd->name, "top") == 0 && (v = opt_value(argc, argv, &i, "-n", "--iterations"))) {
                char *end;
                long n = strtol(v, &end, 10);
                if (*end || end == v || n < 1 || n > 1000000000)
                    usage_error("-n needs a positive number of refreshes, not '%s'", v);
                top_n = (int)n;
            } else if (strcmp(cmd->name, "top") == 0 && (v = opt_value(argc, argv, &i, "-d", "--delay")))
                top_d = parse_seconds("-d", v, false);
            else if (strcmp(cmd->name, "close") == 0 || strcmp(cmd->name, "log-level") == 0 ||
                     strcmp(cmd->name, "connections") == 0)
                args[nargs++] = argv[i]; /* let the daemon judge it */
            else
                usage_error("unknown option '%s' for %s", a, cmd->name);
            continue;
        }
        args[nargs++] = argv[i];
    }
    if (!*sock_path)
        usage_error("the control socket path is empty");
    if (strlen(sock_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        usage_error("socket path too long: %s", sock_path);
    if (nargs < cmd->min_args || (cmd->max_args >= 0 && nargs > cmd->max_args)) {
        static const char *const forms[] = { "close ID", "send ID MESSAGE", "broadcast HANDLER MESSAGE",
                                             "log-level LEVEL", "connections [LISTENER]" };
        const char *form = cmd->name;
        for (size_t k = 0; k < sizeof(forms) / sizeof(forms[0]); k++)
            if (strncmp(forms[k], cmd->name, strlen(cmd->name)) == 0 && forms[k][strlen(cmd->name)] == ' ')
                form = forms[k];
        if (nargs < cmd->min_args)
            usage_error("usage: tusknetctl %s", form);
        usage_error("%s takes %s", cmd->name, cmd->max_args == 0 ? "no arguments" : "at most one argument");
    }
    /* send also takes NODE:ID (another instance's connection, with [cluster]) */
    const char *idpart = args[0];
    if (strcmp(cmd->name, "send") == 0 && strrchr(args[0], ':') && strrchr(args[0], ':') != args[0])
        idpart = strrchr(args[0], ':') + 1;
    if ((strcmp(cmd->name, "close") == 0 || strcmp(cmd->name, "send") == 0) &&
        (!*idpart || strspn(idpart, "0123456789") != strlen(idpart)))
        usage_error("connection ID must be a number%s, not '%s'", strcmp(cmd->name, "send") == 0 ? " or NODE:ID" : "",
                    args[0]);
    if (strcmp(cmd->name, "log-level") == 0 && strcmp(args[0], "error") != 0 && strcmp(args[0], "warn") != 0 &&
        strcmp(args[0], "info") != 0 && strcmp(args[0], "debug") != 0)
        usage_error("log-level takes error, warn, info or debug, not '%s'", args[0]);
    for (int k = 0; k < 3; k++)
        msg_args[k] = k < nargs ? args[k] : "";

    if (strcmp(cmd->name, "top") == 0) {
        free(args);
        return tn_ctl_top(sock_path, timeout, top_n, top_d, json);
    }

    /* the command line (static: still reachable when a usage error exits) */
    static tn_ctl_buf line;
    tn_ctl_buf_adds(&line, cmdname);
    for (int k = 0; k < nargs; k++) {
        tn_ctl_buf_addc(&line, ' ');
        tn_ctl_buf_adds(&line, args[k]);
    }
    free(args);
    if (strpbrk(line.p, "\r\n"))
        usage_error("a command and its arguments cannot contain line breaks");
    if (line.len > MAX_COMMAND)
        usage_error("command too long (%zu bytes, at most %d)", line.len, MAX_COMMAND);

    tn_ctl_conn c;
    if (tn_ctl_connect(&c, sock_path, timeout) < 0) {
        tn_ctl_connect_failed(sock_path, errno);
        tn_ctl_buf_free(&line);
        return 1;
    }
    bool metrics = strcmp(cmdname, "metrics") == 0;
    char err[512];
    ssize_t n = tn_ctl_request(&c, line.p, metrics, err, sizeof(err));
    tn_ctl_buf_free(&line);
    if (n < 0) {
        fprintf(stderr, "tusknetctl: %s\n", err);
        tn_ctl_close(&c);
        return 1;
    }
    const char *ans = c.in.p;
    int rc = 0;
    if (metrics && ans[0] != '{') {
        /* Prometheus text, as is, with its final newline */
        fwrite(ans, 1, (size_t)n, stdout);
        fputc('\n', stdout);
    } else {
        char perr[256];
        tn_ctl_jv *a = tn_ctl_json_parse(ans, (size_t)n, perr, sizeof(perr));
        if (json) {
            fwrite(ans, 1, (size_t)n, stdout);
            fputc('\n', stdout);
        }
        if (!a || a->t != TN_J_OBJ) {
            fprintf(stderr, "tusknetctl: invalid answer from tusknetd: %s\n", a ? "not a JSON object" : perr);
            rc = 1;
        } else if (tn_ctl_jget(a, "ok") && !tn_ctl_jbool(a, "ok")) {
            const char *e = tn_ctl_jstr(a, "error", "tusknetd answered an error");
            /* a refused reload's FILE:LINE:COL lines as the daemon wrote
             * them (so editors and `systemctl reload`'s journal show them
             * as they are), then what it means */
            if (strcmp(cmd->name, "reload") == 0 && tn_ctl_jget(a, "reloads_refused"))
                fprintf(stderr, "%s\ntusknetctl: reload refused; tusknetd keeps the running configuration\n", e);
            else
                fprintf(stderr, "tusknetctl: %s\n", e);
            rc = 1;
        } else if (!json) {
            if (cmd->show)
                rc = cmd->show(a, stdout);
            else
                rc = tn_ctl_show_ok(cmdname, msg_args, a, stdout);
        }
        tn_ctl_jv_free(a);
    }
    tn_ctl_close(&c);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "tusknetctl: writing the output: %s\n", strerror(errno));
        return 1;
    }
    return rc;
}
