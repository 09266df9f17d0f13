/* SPDX-License-Identifier: MIT */
/* ctl/render.c - the human output of tusknetctl: units (bytes, durations,
 * rates), aligned tables, one renderer per command, and the table of commands
 * this client knows with their argument counts. Renderers read a parsed answer
 * and write text; they never talk to the daemon. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl/json.h"
#include "ctl/render.h"
#include "ctl/util.h"

/* ---- human units ---------------------------------------------------------------- */

const char *tn_ctl_fmt_bytes(char *buf, size_t n, double v)
{
    static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    if (v < 1024) {
        snprintf(buf, n, "%.0f B", v < 0 ? 0 : v);
        return buf;
    }
    int u = -1;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    snprintf(buf, n, v < 9.95 ? "%.1f %s" : "%.0f %s", v, units[u]);
    return buf;
}

/* "2h 3m 4s"; MAXUNITS > 0 keeps only that many of the largest units. */
const char *tn_ctl_fmt_duration(char *buf, size_t n, double secs, int maxunits)
{
    if (!(secs > 0))
        secs = 0;
    uint64_t s = (uint64_t)secs;
    uint64_t parts[4] = { s / 86400, s / 3600 % 24, s / 60 % 60, s % 60 };
    static const char units[4] = { 'd', 'h', 'm', 's' };
    size_t len = 0;
    int shown = 0;
    buf[0] = '\0';
    for (int i = 0; i < 4; i++) {
        if (!shown && !parts[i] && i < 3)
            continue;
        if (maxunits > 0 && shown >= maxunits)
            break;
        len += (size_t)snprintf(buf + len, len < n ? n - len : 0, "%s%" PRIu64 "%c", shown ? " " : "", parts[i],
                                units[i]);
        if (len >= n)
            break;
        shown++;
    }
    return buf;
}

const char *tn_ctl_fmt_ms(char *buf, size_t n, double ms)
{
    snprintf(buf, n, ms < 10 ? "%.3f" : ms < 1000 ? "%.1f" : "%.0f", ms);
    return buf;
}

const char *tn_ctl_fmt_rate(char *buf, size_t n, double r)
{
    if (r < 0) {
        snprintf(buf, n, "-");
        return buf;
    }
    snprintf(buf, n, r < 100 ? "%.1f" : "%.0f", r);
    return buf;
}

const char *tn_ctl_fmt_byte_rate(char *buf, size_t n, double r)
{
    if (r < 0) {
        snprintf(buf, n, "-");
        return buf;
    }
    char b[32];
    snprintf(buf, n, "%s/s", tn_ctl_fmt_bytes(b, sizeof(b), r));
    return buf;
}

/* "2026-11-25T11:15:06.385Z" -> seconds since the epoch, or -1. */
static double parse_iso(const char *s)
{
    struct tm tm = { 0 };
    int ms = 0, used = 0;
    if (!s || sscanf(s, "%d-%d-%dT%d:%d:%d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                     &tm.tm_sec, &used) != 6)
        return -1;
    if (s[used] == '.')
        sscanf(s + used + 1, "%3d", &ms);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    return (double)t + ms / 1000.0;
}

/* ---- tables --------------------------------------------------------------------- */

void tn_ctl_table_init(tn_ctl_table *t, int ncols, const char *const *hdr, const char *align)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
    t->hdr = hdr;
    t->align = align;
}

__attribute__((format(printf, 2, 3))) void tn_ctl_table_cell(tn_ctl_table *t, const char *fmt, ...)
{
    if (t->col == 0) {
        if (t->nrows == t->cap) {
            t->cap = t->cap ? t->cap * 2 : 16;
            t->cells = tn_ctl_realloc(t->cells, t->cap * (size_t)t->ncols * sizeof(char *));
        }
        t->nrows++;
    }
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        tn_ctl_oom();
    va_end(ap);
    /* a cell is one line: control characters from names become '?' */
    for (char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    t->cells[(t->nrows - 1) * (size_t)t->ncols + t->col] = s;
    t->col = (t->col + 1) % (size_t)t->ncols;
}

/* Terminal columns a UTF-8 string takes (one per code point). */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            w++;
    return w;
}

void tn_ctl_table_print(const tn_ctl_table *t, FILE *f)
{
    size_t *w = tn_ctl_calloc((size_t)t->ncols, sizeof(size_t));
    for (int c = 0; c < t->ncols; c++) {
        w[c] = text_width(t->hdr[c]);
        for (size_t r = 0; r < t->nrows; r++) {
            size_t cw = text_width(t->cells[r * (size_t)t->ncols + (size_t)c]);
            if (cw > w[c])
                w[c] = cw;
        }
    }
    for (size_t r = 0; r <= t->nrows; r++) {
        tn_ctl_buf line = { 0 };
        for (int c = 0; c < t->ncols; c++) {
            const char *s = r == 0 ? t->hdr[c] : t->cells[(r - 1) * (size_t)t->ncols + (size_t)c];
            size_t pad = w[c] - text_width(s);
            if (c)
                tn_ctl_buf_adds(&line, "  ");
            if (t->align[c] == 'r')
                for (size_t i = 0; i < pad; i++)
                    tn_ctl_buf_addc(&line, ' ');
            tn_ctl_buf_adds(&line, s);
            if (t->align[c] != 'r')
                for (size_t i = 0; i < pad; i++)
                    tn_ctl_buf_addc(&line, ' ');
        }
        while (line.len && line.p[line.len - 1] == ' ')
            line.p[--line.len] = '\0';
        fprintf(f, "%s\n", line.len ? line.p : "");
        tn_ctl_buf_free(&line);
    }
    if (!t->nrows)
        fputs("(none)\n", f);
    free(w);
}

void tn_ctl_table_free(tn_ctl_table *t)
{
    for (size_t i = 0; i < t->nrows * (size_t)t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}

/* ---- human output of each command ---------------------------------------------- */

static const char *const LISTENER_HDR[] = { "LISTENER", "PROTO", "ADDRESS", "ACTIVE", "TOTAL", "SENT",
                                            "RECEIVED", "ERRORS", "TIMEOUTS", "REJECTED" };

uint64_t tn_ctl_rejected_sum(const tn_ctl_jv *counters)
{
    const tn_ctl_jv *rej = tn_ctl_jget(counters, "rejected");
    uint64_t sum = 0;
    for (size_t i = 0; rej && rej->t == TN_J_OBJ && i < rej->len; i++)
        sum += tn_ctl_jv_u64(rej->items[i]);
    return sum;
}

const char *tn_ctl_listener_label(char *buf, size_t n, const char *name, const tn_ctl_jv *l)
{
    snprintf(buf, n, "%s%s", name, tn_ctl_jbool(l, "draining") ? " (draining)" : "");
    return buf;
}

const char *const tn_ctl_http_classes[5] = { "1xx", "2xx", "3xx", "4xx", "5xx" };

/* "3 2xx, 2 4xx" from an http_responses object; false when all are 0. */
static bool http_classes_line(FILE *f, const tn_ctl_jv *resp)
{
    int shown = 0;
    for (size_t k = 0; k < 5; k++) {
        uint64_t v = tn_ctl_ju64(resp, tn_ctl_http_classes[k]);
        if (v)
            fprintf(f, "%s%" PRIu64 " %s", shown++ ? ", " : "", v, tn_ctl_http_classes[k]);
    }
    return shown > 0;
}

/* Whether any listener of a `stats` answer serves HTTP. */
bool tn_ctl_has_http(const tn_ctl_jv *stats)
{
    const tn_ctl_jv *ls = tn_ctl_jget(stats, "listeners");
    for (size_t i = 0; ls && ls->t == TN_J_OBJ && i < ls->len; i++)
        if (tn_ctl_jget(ls->items[i], "http_responses"))
            return true;
    return false;
}

/* "2 ok, 1 refused" (attempts are the sum). */
static void reloads_line(FILE *f, const tn_ctl_jv *a)
{
    fprintf(f, "%" PRIu64 " ok, %" PRIu64 " refused", tn_ctl_ju64(a, "reloads_ok"), tn_ctl_ju64(a, "reloads_refused"));
}

static void http_row(tn_ctl_table *t, const char *listener, const char *route, const tn_ctl_jv *resp)
{
    tn_ctl_table_cell(t, "%s", listener);
    tn_ctl_table_cell(t, "%s", route);
    for (size_t k = 0; k < 5; k++)
        tn_ctl_table_cell(t, "%" PRIu64, tn_ctl_ju64(resp, tn_ctl_http_classes[k]));
}

static int show_stats(const tn_ctl_jv *a, FILE *f)
{
    char b1[64], b2[64];
    const tn_ctl_jv *g = tn_ctl_jget(a, "global"), *info = tn_ctl_jget(a, "info");
    fprintf(f, "tusknetd %s, up %s", tn_ctl_jstr(a, "version", "?"),
            tn_ctl_fmt_duration(b1, sizeof(b1), tn_ctl_jnum(a, "uptime_seconds"), 0));
    if (tn_ctl_ju64(a, "reloads")) {
        fputs(", reloads: ", f);
        reloads_line(f, a);
    }
    fputs("\n\n", f);
    fprintf(f, "connections  %" PRIu64 " active, %" PRIu64 " total\n", tn_ctl_ju64(g, "active_connections"),
            tn_ctl_ju64(g, "total_connections"));
    fprintf(f, "bytes        %s sent, %s received\n",
            tn_ctl_fmt_bytes(b1, sizeof(b1), (double)tn_ctl_ju64(g, "total_bytes_sent")),
            tn_ctl_fmt_bytes(b2, sizeof(b2), (double)tn_ctl_ju64(g, "total_bytes_received")));
    fprintf(f, "messages     %" PRIu64 " in, %" PRIu64 " out\n", tn_ctl_ju64(g, "messages_in"),
            tn_ctl_ju64(g, "messages_out"));
    fprintf(f, "errors       %" PRIu64 " connection, %" PRIu64 " timeout\n", tn_ctl_ju64(g, "connection_errors"),
            tn_ctl_ju64(g, "timeout_errors"));
    fputs("rejections   ", f);
    const tn_ctl_jv *rej = tn_ctl_jget(g, "rejected");
    int shown = 0;
    for (size_t i = 0; rej && rej->t == TN_J_OBJ && i < rej->len; i++) {
        uint64_t v = tn_ctl_jv_u64(rej->items[i]);
        if (v)
            fprintf(f, "%s%s %" PRIu64, shown++ ? ", " : "", rej->keys[i], v);
    }
    fputs(shown ? "\n" : "none\n", f);
    if (tn_ctl_has_http(a)) {
        fputs("http         ", f);
        fputs(http_classes_line(f, tn_ctl_jget(g, "http_responses")) ? "\n" : "none\n", f);
    }
    if (info)
        fprintf(f, "process      pid %" PRIu64 ", %s resident, %" PRIu64 " of %" PRIu64 " descriptors\n",
                tn_ctl_ju64(info, "pid"), tn_ctl_fmt_bytes(b1, sizeof(b1), (double)tn_ctl_ju64(info, "rss_bytes")),
                tn_ctl_ju64(info, "open_fds"), tn_ctl_ju64(info, "max_fds"));
    const tn_ctl_jv *cl = tn_ctl_jget(a, "cluster");
    if (cl) {
        /* daemon.workers > 1: each worker has its own link */
        char linked[64] = "";
        if (tn_ctl_jget(cl, "workers"))
            snprintf(linked, sizeof(linked), ", %" PRIu64 " of %" PRIu64 " workers connected",
                     tn_ctl_ju64(cl, "workers_connected"), tn_ctl_ju64(cl, "workers"));
        fprintf(f, "cluster      %s%s (Redis %s, node %s): %" PRIu64 " published, %" PRIu64 " received, %" PRIu64
                   " lost, %" PRIu64 " queued",
                tn_ctl_jstr(cl, "state", "?"), linked, tn_ctl_jstr(cl, "redis", "?"), tn_ctl_jstr(cl, "node_id", "?"),
                tn_ctl_ju64(cl, "published"), tn_ctl_ju64(cl, "received"), tn_ctl_ju64(cl, "lost"),
                tn_ctl_ju64(cl, "queued"));
        const char *err = tn_ctl_jstr(cl, "last_error", NULL);
        fprintf(f, err ? " (%s)\n" : "\n", err);
    }
    const tn_ctl_jv *tls = tn_ctl_jget(g, "tls");
    const tn_ctl_jv *fails = tls ? tn_ctl_jget(tls, "handshake_failures") : NULL;
    uint64_t handshakes = tls ? tn_ctl_ju64(tls, "handshakes") : 0, nfail = 0;
    for (size_t i = 0; fails && fails->t == TN_J_OBJ && i < fails->len; i++)
        nfail += tn_ctl_jv_u64(fails->items[i]);
    if (handshakes || nfail) {
        fprintf(f, "tls          %" PRIu64 " handshake%s, %" PRIu64 " failed", handshakes,
                handshakes == 1 ? "" : "s", nfail);
        shown = 0;
        for (size_t i = 0; fails && fails->t == TN_J_OBJ && i < fails->len; i++) {
            uint64_t v = tn_ctl_jv_u64(fails->items[i]);
            if (v)
                fprintf(f, "%s%s %" PRIu64, shown++ ? ", " : " (", fails->keys[i], v);
        }
        fputs(shown ? ")\n" : "\n", f);
    }

    tn_ctl_table t;
    tn_ctl_table_init(&t, 10, LISTENER_HDR, "lllrrrrrrr");
    const tn_ctl_jv *ls = tn_ctl_jget(a, "listeners");
    for (size_t i = 0; ls && ls->t == TN_J_OBJ && i < ls->len; i++) {
        const tn_ctl_jv *l = ls->items[i];
        char lab[256];
        tn_ctl_table_cell(&t, "%s", tn_ctl_listener_label(lab, sizeof(lab), ls->keys[i], l));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(l, "protocol", "?"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(l, "address", "-"));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(l, "active_connections"));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(l, "total_connections"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_bytes(b1, sizeof(b1), (double)tn_ctl_ju64(l, "total_bytes_sent")));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_bytes(b1, sizeof(b1), (double)tn_ctl_ju64(l, "total_bytes_received")));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(l, "connection_errors"));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(l, "timeout_errors"));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_rejected_sum(l));
    }
    fputc('\n', f);
    tn_ctl_table_print(&t, f);
    tn_ctl_table_free(&t);

    /* HTTP responses by class: each HTTP listener, then its routes */
    static const char *const rh[] = { "HTTP LISTENER", "ROUTE", "1XX", "2XX", "3XX", "4XX", "5XX" };
    tn_ctl_table_init(&t, 7, rh, "llrrrrr");
    for (size_t i = 0; ls && ls->t == TN_J_OBJ && i < ls->len; i++) {
        const tn_ctl_jv *l = ls->items[i], *routes = tn_ctl_jget(l, "routes"), *unrouted = tn_ctl_jget(l, "unrouted");
        if (!tn_ctl_jget(l, "http_responses"))
            continue;
        http_row(&t, ls->keys[i], "(all)", tn_ctl_jget(l, "http_responses"));
        for (size_t r = 0; routes && routes->t == TN_J_OBJ && r < routes->len; r++)
            http_row(&t, ls->keys[i], routes->keys[r], tn_ctl_jget(routes->items[r], "http_responses"));
        if (unrouted)
            http_row(&t, ls->keys[i], "(no route)", tn_ctl_jget(unrouted, "http_responses"));
    }
    if (t.nrows) {
        fputc('\n', f);
        tn_ctl_table_print(&t, f);
    }
    tn_ctl_table_free(&t);

    static const char *const hh[] = { "HANDLER", "TYPE", "CALLS", "ERRORS", "IN-FLIGHT", "P50 ms", "P90 ms", "P99 ms" };
    tn_ctl_table_init(&t, 8, hh, "llrrrrrr");
    const tn_ctl_jv *hs = tn_ctl_jget(a, "handlers");
    for (size_t i = 0; hs && hs->t == TN_J_OBJ && i < hs->len; i++) {
        const tn_ctl_jv *h = hs->items[i], *lat = tn_ctl_jget(h, "latency_ms");
        tn_ctl_table_cell(&t, "%s", hs->keys[i]);
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(h, "type", "?"));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(h, "calls"));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(h, "errors"));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(h, "in_flight"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_ms(b1, sizeof(b1), tn_ctl_jnum(lat, "p50")));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_ms(b1, sizeof(b1), tn_ctl_jnum(lat, "p90")));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_ms(b1, sizeof(b1), tn_ctl_jnum(lat, "p99")));
    }
    fputc('\n', f);
    tn_ctl_table_print(&t, f);
    tn_ctl_table_free(&t);

    /* daemon.workers > 1: the master's rows, one per worker process */
    static const char *const wh[] = { "WORKER", "PID", "STATE", "GEN", "RESTARTS", "ACTIVE", "TOTAL", "SENT",
                                      "RECEIVED", "CLUSTER", "LOST" };
    tn_ctl_table_init(&t, cl ? 11 : 9, wh, "rrlrrrrrrlr");
    const tn_ctl_jv *ws = tn_ctl_jget(a, "workers");
    for (size_t i = 0; ws && ws->t == TN_J_ARR && i < ws->len; i++) {
        const tn_ctl_jv *w = ws->items[i], *wg = tn_ctl_jget(w, "global"), *wc = tn_ctl_jget(w, "cluster");
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(w, "slot"));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(w, "pid"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(w, "state", "?"));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(w, "generation"));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(w, "restarts"));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(wg, "active_connections"));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(wg, "total_connections"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_bytes(b1, sizeof(b1), (double)tn_ctl_ju64(wg, "total_bytes_sent")));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_bytes(b1, sizeof(b1), (double)tn_ctl_ju64(wg, "total_bytes_received")));
        if (cl) {
            tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(wc, "state", "-"));
            tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(wc, "lost"));
        }
    }
    if (t.nrows) {
        fputc('\n', f);
        tn_ctl_table_print(&t, f);
    }
    tn_ctl_table_free(&t);
    return 0;
}

static int show_info(const tn_ctl_jv *a, FILE *f)
{
    char b1[64];
    const tn_ctl_jv *build = tn_ctl_jget(a, "build"), *last = tn_ctl_jget(a, "last_reload"),
                    *conns = tn_ctl_jget(a, "connections");
    fprintf(f, "tusknetd %s, pid %" PRIu64 "\n", tn_ctl_jstr(a, "version", "?"), tn_ctl_ju64(a, "pid"));
    fprintf(f, "build        %s, %s, %s\n", tn_ctl_jstr(build, "git", "?"), tn_ctl_jstr(build, "date", "?"),
            tn_ctl_jstr(build, "compiler", "?"));
    fprintf(f, "libraries    libevent %s, OpenSSL %s, libwebsockets %s\n", tn_ctl_jstr(build, "libevent", "?"),
            tn_ctl_jstr(build, "openssl", "?"), tn_ctl_jstr(build, "libwebsockets", "?"));
    fprintf(f, "config       %s\n", tn_ctl_jstr(a, "config", "?"));
    fprintf(f, "started      %s, up %s\n", tn_ctl_jstr(a, "started", "?"),
            tn_ctl_fmt_duration(b1, sizeof(b1), tn_ctl_jnum(a, "uptime_seconds"), 0));
    fprintf(f, "reloads      %" PRIu64 ": ", tn_ctl_ju64(a, "reloads"));
    reloads_line(f, a);
    fputc('\n', f);
    if (last && last->t == TN_J_OBJ) {
        /* the errors of a refused reload may span lines: indent the rest */
        fprintf(f, "last reload  %s, %s: ", tn_ctl_jstr(last, "time", "?"), tn_ctl_jstr(last, "outcome", "?"));
        for (const char *m = tn_ctl_jstr(last, "message", ""); *m; m++) {
            fputc(*m, f);
            if (*m == '\n' && m[1])
                fputs("             ", f);
        }
        fputc('\n', f);
    }
    fprintf(f, "memory       %s resident\n", tn_ctl_fmt_bytes(b1, sizeof(b1), (double)tn_ctl_ju64(a, "rss_bytes")));
    fprintf(f, "descriptors  %" PRIu64 " open, limit %" PRIu64 "\n", tn_ctl_ju64(a, "open_fds"),
            tn_ctl_ju64(a, "max_fds"));
    fprintf(f, "cpu          %.2f s\n", tn_ctl_jnum(a, "cpu_seconds"));
    fputs("connections  ", f);
    for (size_t i = 0; conns && conns->t == TN_J_OBJ && i < conns->len; i++)
        fprintf(f, "%s%" PRIu64 " %s", i ? ", " : "", tn_ctl_jv_u64(conns->items[i]), conns->keys[i]);
    fputc('\n', f);
    return 0;
}

static int cmp_conn_id(const void *a, const void *b)
{
    uint64_t x = tn_ctl_ju64(*(const tn_ctl_jv *const *)a, "id"), y = tn_ctl_ju64(*(const tn_ctl_jv *const *)b, "id");
    return x < y ? -1 : x > y;
}

static int show_connections(const tn_ctl_jv *a, FILE *f)
{
    static const char *const hdr[] = { "ID",   "LISTENER", "PROTO", "REMOTE",      "LOCAL", "AGE",
                                       "IDLE", "SENT",     "RECV",  "MSGS IN/OUT", "PATH",  "TLS" };
    const tn_ctl_jv *cs = tn_ctl_jget(a, "connections");
    size_t n = cs && cs->t == TN_J_ARR ? cs->len : 0;
    const tn_ctl_jv **sorted = tn_ctl_calloc(n, sizeof(*sorted));
    for (size_t i = 0; i < n; i++)
        sorted[i] = cs->items[i];
    qsort(sorted, n, sizeof(*sorted), cmp_conn_id);
    double now = tn_ctl_now_real();
    tn_ctl_table t;
    tn_ctl_table_init(&t, 12, hdr, "rllllrrrrrll");
    char b[64];
    for (size_t i = 0; i < n; i++) {
        const tn_ctl_jv *c = sorted[i];
        double est = parse_iso(tn_ctl_jstr(c, "established", NULL)),
               last = parse_iso(tn_ctl_jstr(c, "last_activity", NULL));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(c, "id"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(c, "listener", "?"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(c, "protocol", "?"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(c, "remote", "?"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(c, "local", "?"));
        tn_ctl_table_cell(&t, "%s", est < 0 ? "?" : tn_ctl_fmt_duration(b, sizeof(b), now - est, 2));
        tn_ctl_table_cell(&t, "%s", last < 0 ? "?" : tn_ctl_fmt_duration(b, sizeof(b), now - last, 2));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_bytes(b, sizeof(b), (double)tn_ctl_ju64(c, "bytes_sent")));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_bytes(b, sizeof(b), (double)tn_ctl_ju64(c, "bytes_received")));
        tn_ctl_table_cell(&t, "%" PRIu64 "/%" PRIu64, tn_ctl_ju64(c, "messages_in"), tn_ctl_ju64(c, "messages_out"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(c, "path", "-")); /* WebSockets */
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(c, "tls_version", "-"));
    }
    if (n) {
        tn_ctl_table_print(&t, f);
        fprintf(f, "\n%zu connection%s\n", n, n == 1 ? "" : "s");
    } else {
        fputs("no open connections\n", f);
    }
    tn_ctl_table_free(&t);
    free(sorted);
    return 0;
}

static void join_strings(tn_ctl_buf *out, const tn_ctl_jv *arr)
{
    for (size_t i = 0; arr && arr->t == TN_J_ARR && i < arr->len; i++) {
        if (i)
            tn_ctl_buf_adds(out, ",");
        if (arr->items[i]->t == TN_J_STR)
            tn_ctl_buf_adds(out, arr->items[i]->s);
    }
    if (!out->len)
        tn_ctl_buf_adds(out, "-");
}

static int show_listeners(const tn_ctl_jv *a, FILE *f)
{
    static const char *const hdr[] = { "LISTENER", "PROTO", "LISTEN", "ADDRESS", "STATE", "ACTIVE", "HANDLERS" };
    tn_ctl_table t;
    tn_ctl_table_init(&t, 7, hdr, "lllllrl");
    const tn_ctl_jv *ls = tn_ctl_jget(a, "listeners");
    for (size_t i = 0; ls && ls->t == TN_J_ARR && i < ls->len; i++) {
        const tn_ctl_jv *l = ls->items[i];
        tn_ctl_buf hs = { 0 };
        join_strings(&hs, tn_ctl_jget(l, "handlers"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(l, "name", "?"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(l, "protocol", "?"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(l, "listen", "-"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(l, "address", "-"));
        tn_ctl_table_cell(&t, "%s",
                          tn_ctl_jbool(l, "draining")  ? "draining"
                          : tn_ctl_jbool(l, "serving") ? "serving"
                                                       : "stopped");
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(l, "active_connections"));
        tn_ctl_table_cell(&t, "%s", hs.p);
        tn_ctl_buf_free(&hs);
    }
    tn_ctl_table_print(&t, f);
    tn_ctl_table_free(&t);
    return 0;
}

static int show_handlers(const tn_ctl_jv *a, FILE *f)
{
    static const char *const hdr[] = { "HANDLER", "TYPE", "CALLS", "ERRORS", "IN-FLIGHT", "P50 ms", "P90 ms", "P99 ms" };
    tn_ctl_table t;
    char b[64];
    tn_ctl_table_init(&t, 8, hdr, "llrrrrrr");
    const tn_ctl_jv *hs = tn_ctl_jget(a, "handlers");
    for (size_t i = 0; hs && hs->t == TN_J_ARR && i < hs->len; i++) {
        const tn_ctl_jv *h = hs->items[i];
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(h, "name", "?"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(h, "type", "?"));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(h, "calls"));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(h, "errors"));
        tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(h, "in_flight"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_ms(b, sizeof(b), tn_ctl_jnum(h, "p50_ms")));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_ms(b, sizeof(b), tn_ctl_jnum(h, "p90_ms")));
        tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_ms(b, sizeof(b), tn_ctl_jnum(h, "p99_ms")));
    }
    tn_ctl_table_print(&t, f);
    tn_ctl_table_free(&t);
    return 0;
}

static int show_upstreams(const tn_ctl_jv *a, FILE *f)
{
    static const char *const hdr[] = { "HANDLER", "SERVER", "STATE", "WEIGHT", "ACTIVE", "IDLE", "REQUESTS",
                                       "REUSED", "FAILURES", "P50 ms", "P99 ms" };
    const tn_ctl_jv *us = tn_ctl_jget(a, "upstreams");
    if (!us || us->t != TN_J_ARR || !us->len) {
        fputs("no proxy handlers\n", f);
        return 0;
    }
    tn_ctl_table t;
    char b[64];
    tn_ctl_table_init(&t, 11, hdr, "lllrrrrrlrr");
    for (size_t i = 0; i < us->len; i++) {
        const tn_ctl_jv *g = us->items[i];
        const tn_ctl_jv *ss = tn_ctl_jget(g, "servers");
        for (size_t k = 0; ss && ss->t == TN_J_ARR && k < ss->len; k++) {
            const tn_ctl_jv *s = ss->items[k];
            /* failures as "reason=N" for the reasons that happened */
            tn_ctl_buf fails = { 0 };
            const tn_ctl_jv *fo = tn_ctl_jget(s, "failures");
            for (size_t r = 0; fo && fo->t == TN_J_OBJ && r < fo->len; r++) {
                uint64_t n = tn_ctl_ju64(fo, fo->keys[r]);
                if (!n)
                    continue;
                char one[64];
                snprintf(one, sizeof(one), "%s%s=%" PRIu64, fails.len ? " " : "", fo->keys[r], n);
                tn_ctl_buf_adds(&fails, one);
            }
            tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(g, "handler", "?"));
            tn_ctl_table_cell(&t, "%s%s%s", tn_ctl_jstr(s, "server", "?"),
                              tn_ctl_jbool(s, "backup") ? " (backup)" : "",
                              tn_ctl_jbool(s, "removed") ? " (removed)" : "");
            tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(s, "state", "?"));
            tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(s, "weight"));
            tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(s, "active"));
            tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(s, "idle"));
            tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(s, "requests"));
            tn_ctl_table_cell(&t, "%" PRIu64, tn_ctl_ju64(s, "reused"));
            tn_ctl_table_cell(&t, "%s", fails.len ? fails.p : "-");
            const tn_ctl_jv *lat = tn_ctl_jget(s, "latency_ms");
            tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_ms(b, sizeof(b), tn_ctl_jnum(lat, "p50")));
            tn_ctl_table_cell(&t, "%s", tn_ctl_fmt_ms(b, sizeof(b), tn_ctl_jnum(lat, "p99")));
            tn_ctl_buf_free(&fails);
        }
    }
    tn_ctl_table_print(&t, f);
    tn_ctl_table_free(&t);
    return 0;
}

static int show_routes(const tn_ctl_jv *a, FILE *f)
{
    static const char *const hdr[] = { "LISTENER", "KIND", "METHOD", "PATH", "HANDLER" };
    const tn_ctl_jv *rs = tn_ctl_jget(a, "routes");
    if (!rs || rs->t != TN_J_ARR || !rs->len) {
        fputs("no routes (HTTP routes and WebSocket endpoints are listed here)\n", f);
        return 0;
    }
    tn_ctl_table t;
    tn_ctl_table_init(&t, 5, hdr, "lllll");
    for (size_t i = 0; i < rs->len; i++) {
        const tn_ctl_jv *r = rs->items[i];
        tn_ctl_buf hs = { 0 };
        if (tn_ctl_jget(r, "handler"))
            tn_ctl_buf_adds(&hs, tn_ctl_jstr(r, "handler", "?"));
        else
            join_strings(&hs, tn_ctl_jget(r, "handlers"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(r, "listener", "?"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(r, "kind", "?"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(r, "method", "*"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(r, "path", "?"));
        tn_ctl_table_cell(&t, "%s", hs.p);
        tn_ctl_buf_free(&hs);
    }
    tn_ctl_table_print(&t, f);
    tn_ctl_table_free(&t);
    return 0;
}

static int show_help(const tn_ctl_jv *a, FILE *f)
{
    static const char *const hdr[] = { "COMMAND", "LEVEL", "DESCRIPTION" };
    fprintf(f, "Commands of tusknetd (your level: %s):\n\n", tn_ctl_jstr(a, "level", "?"));
    tn_ctl_table t;
    tn_ctl_table_init(&t, 3, hdr, "lll");
    const tn_ctl_jv *cs = tn_ctl_jget(a, "commands");
    for (size_t i = 0; cs && cs->t == TN_J_ARR && i < cs->len; i++) {
        const tn_ctl_jv *c = cs->items[i];
        const char *args = tn_ctl_jstr(c, "args", "");
        tn_ctl_table_cell(&t, "%s%s%s", tn_ctl_jstr(c, "name", "?"), *args ? " " : "", args);
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(c, "level", "?"));
        tn_ctl_table_cell(&t, "%s", tn_ctl_jstr(c, "doc", ""));
    }
    tn_ctl_table_cell(&t, "top [-n N] [-d SECONDS]");
    tn_ctl_table_cell(&t, "read");
    tn_ctl_table_cell(&t, "live view of the stats with rates (tusknetctl only)");
    tn_ctl_table_print(&t, f);
    tn_ctl_table_free(&t);
    return 0;
}

static int show_version(const tn_ctl_jv *a, FILE *f)
{
    fprintf(f, "tusknetd %s\n", tn_ctl_jstr(a, "version", "?"));
    return 0;
}

static int show_pretty(const tn_ctl_jv *a, FILE *f)
{
    tn_ctl_json_pretty(f, a, 0);
    fputc('\n', f);
    return 0;
}

/* The answer to an action command: {"ok":true,...}. */
int tn_ctl_show_ok(const char *cmd, const char *const args[3], const tn_ctl_jv *a, FILE *f)
{
    if (strcmp(cmd, "reload") == 0) {
        fprintf(f, "ok: configuration reloaded (reloads so far: %" PRIu64 " ok, %" PRIu64 " refused)\n",
                tn_ctl_ju64(a, "reloads_ok"), tn_ctl_ju64(a, "reloads_refused"));
        /* daemon.workers > 1: a worker that could not apply it was replaced */
        const tn_ctl_jv *ws = tn_ctl_jget(a, "workers");
        for (size_t i = 0; ws && ws->t == TN_J_ARR && i < ws->len; i++) {
            const tn_ctl_jv *w = ws->items[i];
            if (tn_ctl_jget(w, "error"))
                fprintf(f, "worker %" PRIu64 " (pid %" PRIu64 ") could not apply it (%s): replaced by a new worker\n",
                        tn_ctl_ju64(w, "slot"), tn_ctl_ju64(w, "pid"), tn_ctl_jstr(w, "error", "?"));
        }
    } else if (strcmp(cmd, "close") == 0)
        fprintf(f, "ok: connection %s closed\n", args[0]);
    else if (strcmp(cmd, "send") == 0 && tn_ctl_jget(a, "published"))
        fprintf(f, "ok: published for connection %" PRIu64 " of node %s (whether it reached it is known there)\n",
                tn_ctl_ju64(a, "id"), tn_ctl_jstr(a, "node", "?"));
    else if (strcmp(cmd, "send") == 0)
        fprintf(f, "ok: sent to connection %s\n", args[0]);
    else if (strcmp(cmd, "broadcast") == 0) {
        uint64_t sent = tn_ctl_ju64(a, "sent"), dropped = tn_ctl_ju64(a, "dropped");
        fprintf(f, "ok: sent to %" PRIu64 " connection%s", sent, sent == 1 ? "" : "s");
        if (dropped)
            fprintf(f, ", %" PRIu64 " dropped (not reading)", dropped);
        fputc('\n', f);
    } else if (strcmp(cmd, "log-level") == 0)
        fprintf(f, "ok: log level %s\n", tn_ctl_jstr(a, "log_level", args[0]));
    else if (strcmp(cmd, "shutdown") == 0)
        fputs("ok: tusknetd is shutting down\n", f);
    else if (strcmp(cmd, "upstream") == 0)
        fprintf(f, "ok: upstream %s of %s: %s\n", args[1], args[0], args[2]);
    else if (a->len == 1)
        fputs("ok\n", f);
    else
        show_pretty(a, f);
    return 0;
}

/* ---- commands known to this client --------------------------------------------- */

static const tn_ctl_command COMMANDS[] = {
    { "stats", 0, 0, show_stats },
    { "info", 0, 0, show_info },
    { "metrics", 0, 0, NULL },
    { "connections", 0, 1, show_connections },
    { "listeners", 0, 0, show_listeners },
    { "handlers", 0, 0, show_handlers },
    { "routes", 0, 0, show_routes },
    { "upstreams", 0, 0, show_upstreams },
    { "config", 0, 0, show_pretty },
    { "version", 0, 0, show_version },
    { "help", 0, 0, show_help },
    { "reload", 0, 0, NULL },
    { "close", 1, 1, NULL },
    { "send", 2, -1, NULL },
    { "broadcast", 2, -1, NULL },
    { "upstream", 3, 4, NULL },
    { "log-level", 1, 1, NULL },
    { "shutdown", 0, 0, NULL },
    { "top", 0, 0, NULL },
};

const tn_ctl_command *tn_ctl_find_command(const char *name)
{
    for (size_t i = 0; i < sizeof(COMMANDS) / sizeof(COMMANDS[0]); i++)
        if (strcmp(COMMANDS[i].name, name) == 0)
            return &COMMANDS[i];
    return NULL;
}

