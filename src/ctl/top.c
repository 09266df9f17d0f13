/* SPDX-License-Identifier: MIT */
/* ctl/top.c - `tusknetctl top`: keeps one connection open, samples `stats`
 * every interval and shows rates, on a terminal full-screen (alternate screen,
 * cut to the window, q quits), otherwise as plain frames one after another. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "ctl/conn.h"
#include "ctl/json.h"
#include "ctl/render.h"
#include "ctl/top.h"
#include "ctl/util.h"

static volatile sig_atomic_t g_resize; /* SIGWINCH seen */

static struct termios g_saved_tty;
static bool g_tty_changed, g_screen_changed;

static void restore_terminal(void)
{
    if (g_screen_changed) {
        /* cursor back, leave the alternate screen */
        static const char seq[] = "\033[?25h\033[?1049l";
        ssize_t w = write(STDOUT_FILENO, seq, sizeof(seq) - 1);
        (void)w;
        g_screen_changed = false;
    }
    if (g_tty_changed) {
        tcsetattr(STDIN_FILENO, TCSADRAIN, &g_saved_tty);
        g_tty_changed = false;
    }
}

static void on_quit_signal(int sig)
{
    (void)sig;
    tn_ctl_quit = 1;
}

static void on_winch(int sig)
{
    (void)sig;
    g_resize = 1;
}

/* Per-second rate of the counter KEY between two samples; -1 if unknown. */
static double rate_of(const tn_ctl_jv *cur, const tn_ctl_jv *prev, const char *key, double dt)
{
    if (!prev || dt <= 0 || !tn_ctl_jget(prev, key))
        return -1;
    uint64_t a = tn_ctl_ju64(cur, key), b = tn_ctl_ju64(prev, key);
    return a >= b ? (double)(a - b) / dt : -1; /* a counter going back: the daemon restarted */
}

/* CPU use between two samples in percent of one core, "-" when unknown. */
static const char *cpu_percent(char *buf, size_t n, const tn_ctl_jv *cur, const tn_ctl_jv *prev, double dt)
{
    if (!prev || dt <= 0 || !tn_ctl_jget(prev, "cpu_seconds") ||
        tn_ctl_jnum(cur, "cpu_seconds") < tn_ctl_jnum(prev, "cpu_seconds"))
        snprintf(buf, n, "-");
    else
        snprintf(buf, n, "%.1f%%", 100 * (tn_ctl_jnum(cur, "cpu_seconds") - tn_ctl_jnum(prev, "cpu_seconds")) / dt);
    return buf;
}

static void top_frame(FILE *f, const tn_ctl_jv *cur, const tn_ctl_jv *prev, double dt, double interval, bool tty)
{
    char b1[64], b2[64], b3[64], b4[64];
    const tn_ctl_jv *g = tn_ctl_jget(cur, "global"), *pg = tn_ctl_jget(prev, "global");
    char clock[32] = "";
    time_t now = time(NULL);
    struct tm tm;
    if (localtime_r(&now, &tm))
        strftime(clock, sizeof(clock), "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(f, "tusknetd %s  up %s  %s  every %gs%s\n", tn_ctl_jstr(cur, "version", "?"),
            tn_ctl_fmt_duration(b1, sizeof(b1), tn_ctl_jnum(cur, "uptime_seconds"), 0), clock, interval,
            tty ? "  (q quits)" : "");
    fprintf(f, "connections  %" PRIu64 " open, %" PRIu64 " total, %s/s new\n", tn_ctl_ju64(g, "active_connections"),
            tn_ctl_ju64(g, "total_connections"),
            tn_ctl_fmt_rate(b1, sizeof(b1), rate_of(g, pg, "total_connections", dt)));
    fprintf(f, "messages     in %s/s, out %s/s\n", tn_ctl_fmt_rate(b1, sizeof(b1), rate_of(g, pg, "messages_in", dt)),
            tn_ctl_fmt_rate(b2, sizeof(b2), rate_of(g, pg, "messages_out", dt)));
    fprintf(f, "bytes        in %s, out %s\n",
            tn_ctl_fmt_byte_rate(b1, sizeof(b1), rate_of(g, pg, "total_bytes_received", dt)),
            tn_ctl_fmt_byte_rate(b2, sizeof(b2), rate_of(g, pg, "total_bytes_sent", dt)));
    fprintf(f, "errors       %" PRIu64 " connection, %" PRIu64 " timeout, %" PRIu64 " rejected\n",
            tn_ctl_ju64(g, "connection_errors"), tn_ctl_ju64(g, "timeout_errors"), tn_ctl_rejected_sum(g));
    const tn_ctl_jv *resp = tn_ctl_jget(g, "http_responses"), *presp = tn_ctl_jget(pg, "http_responses");
    if (resp && tn_ctl_has_http(cur)) {
        fputs("http         ", f);
        for (size_t k = 0; k < 5; k++)
            fprintf(f, "%s%s %s/s", k ? ", " : "", tn_ctl_http_classes[k],
                    tn_ctl_fmt_rate(b1, sizeof(b1), rate_of(resp, presp, tn_ctl_http_classes[k], dt)));
        fputc('\n', f);
    }
    const tn_ctl_jv *info = tn_ctl_jget(cur, "info");
    if (info)
        fprintf(f, "process      %s resident, %" PRIu64 " of %" PRIu64 " descriptors, cpu %s\n",
                tn_ctl_fmt_bytes(b1, sizeof(b1), (double)tn_ctl_ju64(info, "rss_bytes")), tn_ctl_ju64(info, "open_fds"),
                tn_ctl_ju64(info, "max_fds"), cpu_percent(b2, sizeof(b2), info, tn_ctl_jget(prev, "info"), dt));

    static const char *const lh[] = { "LISTENER", "PROTO", "ADDRESS", "OPEN", "CONN/S", "MSG IN/S",
                                      "MSG OUT/S", "IN/S",  "OUT/S",  "ERRORS" };
    tn_ctl_table t;
    tn_ctl_table_init(&t, 10, lh, "lllrrrrrrr");
    const tn_ctl_jv *ls = tn_ctl_jget(cur, "listeners"), *pls = tn_ctl_jget(prev, "listeners");
    for (size_t i = 0; ls && ls->t == TN_J_OBJ && i < ls->len; i++) {
        const tn_ctl_jv *l = ls->items[i], *pl = tn_ctl_jget(pls, ls->keys[i]);
        char lab[256];
        tn_ctl_table_cell(&t, "%s", tn_ctl_listener_label(lab, sizeof(lab), ls->keys[i], l));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(l, "protocol", "?"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(l, "address", "-"));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(l, "active_connections"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_rate(b1, sizeof(b1), rate_of(l, pl, "total_connections", dt)));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_rate(b2, sizeof(b2), rate_of(l, pl, "messages_in", dt)));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_rate(b3, sizeof(b3), rate_of(l, pl, "messages_out", dt)));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_byte_rate(b4, sizeof(b4), rate_of(l, pl, "total_bytes_received", dt)));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_byte_rate(b1, sizeof(b1), rate_of(l, pl, "total_bytes_sent", dt)));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(l, "connection_errors") + tn_ctl_ju64(l, "timeout_errors"));
    }
    fputc('\n', f);
    tn_ctl_table_print(&t, f);
    tn_ctl_table_free(&t);

    static const char *const hh[] = { "HANDLER", "TYPE", "CALLS", "CALLS/S", "ERR/S", "IN-FLIGHT", "P50 ms",
                                      "P90 ms",  "P99 ms" };
    tn_ctl_table_init(&t, 9, hh, "llrrrrrrr");
    const tn_ctl_jv *hs = tn_ctl_jget(cur, "handlers"), *phs = tn_ctl_jget(prev, "handlers");
    for (size_t i = 0; hs && hs->t == TN_J_OBJ && i < hs->len; i++) {
        const tn_ctl_jv *h = hs->items[i], *ph = tn_ctl_jget(phs, hs->keys[i]), *lat = tn_ctl_jget(h, "latency_ms");
        tn_ctl_table_cell(&t, "%s", hs->keys[i]);
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(h, "type", "?"));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(h, "calls"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_rate(b1, sizeof(b1), rate_of(h, ph, "calls", dt)));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_rate(b2, sizeof(b2), rate_of(h, ph, "errors", dt)));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(h, "in_flight"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_ms(b1, sizeof(b1), tn_ctl_jnum(lat, "p50")));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_ms(b2, sizeof(b2), tn_ctl_jnum(lat, "p90")));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_ms(b3, sizeof(b3), tn_ctl_jnum(lat, "p99")));
    }
    fputc('\n', f);
    tn_ctl_table_print(&t, f);
    tn_ctl_table_free(&t);
}

static void write_all_stdout(const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(STDOUT_FILENO, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Shows FRAME: on a terminal from the top-left corner, cut to the window;
 * otherwise plainly, after a blank line unless it is the first. */
static void top_show(const char *frame, size_t len, bool tty, bool first)
{
    if (!tty) {
        if (!first)
            write_all_stdout("\n", 1);
        write_all_stdout(frame, len);
        return;
    }
    struct winsize ws = { 0 };
    int rows = 0, cols = 0;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) {
        rows = ws.ws_row;
        cols = ws.ws_col;
    }
    tn_ctl_buf out = { 0 };
    tn_ctl_buf_adds(&out, "\033[H");
    const char *p = frame, *end = frame + len;
    int row = 0;
    while (p < end && (rows <= 0 || row < rows)) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        /* cut to the width, counting code points */
        const char *q = p;
        int w = 0;
        while (q < le && (cols <= 0 || w < cols || ((unsigned char)*q & 0xC0) == 0x80)) {
            if (((unsigned char)*q & 0xC0) != 0x80)
                w++;
            q++;
        }
        tn_ctl_buf_add(&out, p, (size_t)(q - p));
        tn_ctl_buf_adds(&out, "\033[K");
        row++;
        p = nl ? nl + 1 : end;
        if (p < end && (rows <= 0 || row < rows))
            tn_ctl_buf_adds(&out, "\r\n");
    }
    tn_ctl_buf_adds(&out, "\033[J");
    write_all_stdout(out.p, out.len);
    tn_ctl_buf_free(&out);
}

int tn_ctl_top(const char *sock_path, double timeout, int iterations, double interval, bool json)
{
    bool tty = !json && isatty(STDOUT_FILENO);
    bool keys = tty && isatty(STDIN_FILENO);
    tn_ctl_conn c;
    if (tn_ctl_connect(&c, sock_path, timeout) < 0) {
        tn_ctl_connect_failed(sock_path, errno);
        return 1;
    }

    struct sigaction sa = { 0 };
    sa.sa_handler = on_quit_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = on_winch;
    sigaction(SIGWINCH, &sa, NULL);
    atexit(restore_terminal);
    if (keys && tcgetattr(STDIN_FILENO, &g_saved_tty) == 0) {
        struct termios raw = g_saved_tty;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO); /* ISIG stays: Ctrl-C is SIGINT */
        raw.c_cc[VMIN] = 1;
        raw.c_cc[VTIME] = 0;
        if (tcsetattr(STDIN_FILENO, TCSADRAIN, &raw) == 0)
            g_tty_changed = true;
    }
    if (tty) {
        static const char seq[] = "\033[?1049h\033[?25l\033[H\033[2J"; /* alternate screen, no cursor */
        write_all_stdout(seq, sizeof(seq) - 1);
        g_screen_changed = true;
    }

    int rc = 0;
    tn_ctl_jv *prev = NULL;
    double prev_t = 0;
    tn_ctl_buf frame = { 0 };
    char err[512];
    for (int i = 0; !tn_ctl_quit && (iterations <= 0 || i < iterations); i++) {
        double t0 = tn_ctl_now_mono();
        if (c.fd < 0 && tn_ctl_connect(&c, sock_path, timeout) < 0)
            snprintf(err, sizeof(err), "cannot connect to %s: %s", sock_path, strerror(errno));
        tn_ctl_jv *cur = NULL;
        ssize_t n = c.fd < 0 ? -1 : tn_ctl_request(&c, "stats", false, err, sizeof(err));
        if (tn_ctl_quit)
            break;
        double t = tn_ctl_now_mono();
        if (n >= 0) {
            char perr[256];
            cur = tn_ctl_json_parse(c.in.p, (size_t)n, perr, sizeof(perr));
            if (json && (!cur || cur->t != TN_J_OBJ || tn_ctl_jget(cur, "ok") == NULL)) {
                write_all_stdout(c.in.p, (size_t)n);
                write_all_stdout("\n", 1);
            }
            tn_ctl_consume(&c);
            if (!cur) {
                snprintf(err, sizeof(err), "invalid answer from tusknetd: %s", perr);
            } else if (tn_ctl_jget(cur, "ok") && !tn_ctl_jbool(cur, "ok")) {
                restore_terminal();
                fprintf(stderr, "tusknetctl: %s\n", tn_ctl_jstr(cur, "error", "error"));
                tn_ctl_jv_free(cur);
                rc = 1;
                break;
            }
        }
        if (!cur)
            tn_ctl_close(&c); /* reconnect next time */
        if (!json) {
            free(frame.p);
            frame.p = NULL;
            frame.len = 0;
            FILE *f = open_memstream(&frame.p, &frame.len);
            if (!f)
                tn_ctl_oom();
            if (cur)
                top_frame(f, cur, prev, t - prev_t, interval, tty);
            else
                fprintf(f, "tusknetctl top: %s\nretrying every %gs%s\n", err, interval, tty ? "  (q quits)" : "");
            fclose(f);
            top_show(frame.p, frame.len, tty, i == 0);
        } else if (!cur) {
            fprintf(stderr, "tusknetctl: %s\n", err);
        }
        tn_ctl_jv_free(prev);
        prev = cur;
        prev_t = t;
        if (iterations > 0 && i + 1 >= iterations)
            break;
        /* wait for the next tick, reading keys */
        double next = t0 + interval;
        bool refresh = false;
        while (!tn_ctl_quit && !refresh) {
            double left = next - tn_ctl_now_mono();
            if (left <= 0)
                break;
            if (g_resize) {
                g_resize = 0;
                if (tty && frame.p)
                    top_show(frame.p, frame.len, tty, false);
            }
            struct pollfd pfd = { .fd = STDIN_FILENO, .events = POLLIN };
            int pr = poll(&pfd, keys ? 1 : 0, (int)(left * 1000) + 1);
            if (pr < 0 && errno != EINTR)
                break;
            if (pr > 0) {
                char kb[64];
                ssize_t r = read(STDIN_FILENO, kb, sizeof(kb));
                if (r <= 0) {
                    keys = false; /* stdin closed: just keep refreshing */
                    continue;
                }
                for (ssize_t k = 0; k < r; k++) {
                    if (kb[k] == 'q' || kb[k] == 'Q')
                        tn_ctl_quit = 1;
                    else if (kb[k] == ' ' || kb[k] == '\n' || kb[k] == 'r')
                        refresh = true;
                }
            }
        }
    }
    tn_ctl_jv_free(prev);
    free(frame.p);
    tn_ctl_close(&c);
    restore_terminal();
    return rc;
}

