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
 * Self-contained on purpose (the Makefile links this file alone): it carries
 * its own small JSON reader. Exit status: 0 success, 1 the daemon answered an
 * error or could not be reached, 2 usage error. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "version.h"

#define DEFAULT_SOCKET "/run/tusknetd/control.sock"
#define MAX_COMMAND 65535 /* the daemon refuses longer command lines */
#define JSON_MAX_DEPTH 512

static volatile sig_atomic_t g_quit;   /* top: SIGINT/SIGTERM/SIGHUP seen */
static volatile sig_atomic_t g_resize; /* top: SIGWINCH seen */

/* ---- small helpers ------------------------------------------------------------ */

static void oom(void)
{
    fputs("tusknetctl: out of memory\n", stderr);
    exit(1);
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        oom();
    return p;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom();
    return p;
}

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

/* A growable byte string, always NUL-terminated once anything was added. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_reserve(sbuf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1) {
        if (cap > SIZE_MAX / 2)
            oom();
        cap *= 2;
    }
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

static void sb_add(sbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_addc(sbuf *b, char c)
{
    sb_add(b, &c, 1);
}

static void sb_adds(sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_free(sbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_real(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- JSON: a small reader into a tree ------------------------------------------ */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

typedef struct jv jv;
struct jv {
    jtype t;
    bool b;
    double n;
    char *s;     /* J_STR: the decoded string; J_NUM: the number as written */
    size_t len;  /* J_STR: bytes in s; J_ARR/J_OBJ: items */
    size_t cap;
    jv **items;  /* J_ARR, J_OBJ: values */
    char **keys; /* J_OBJ: keys, in the order received */
};

typedef struct jparser {
    const char *p, *start, *end;
    const char *err;
    int depth;
} jparser;

static void jv_free(jv *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->len && v->items; i++) {
        jv_free(v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->s);
    free(v);
}

static jv *jv_new(jtype t)
{
    jv *v = xcalloc(1, sizeof(*v));
    v->t = t;
    return v;
}

static void jv_push(jv *c, char *key, jv *val)
{
    if (c->len == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 8;
        c->items = xrealloc(c->items, c->cap * sizeof(*c->items));
        if (c->t == J_OBJ)
            c->keys = xrealloc(c->keys, c->cap * sizeof(*c->keys));
    }
    c->items[c->len] = val;
    if (c->t == J_OBJ)
        c->keys[c->len] = key;
    c->len++;
}

static void jp_ws(jparser *jp)
{
    while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r'))
        jp->p++;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool jp_hex4(jparser *jp, unsigned *out)
{
    if (jp->end - jp->p < 4)
        return false;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(jp->p[i]);
        if (h < 0)
            return false;
        v = v * 16 + (unsigned)h;
    }
    jp->p += 4;
    *out = v;
    return true;
}

static void utf8_put(sbuf *b, unsigned cp)
{
    char u[4];
    if (cp < 0x80) {
        sb_addc(b, (char)cp);
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        sb_add(b, u, 2);
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        sb_add(b, u, 3);
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        sb_add(b, u, 4);
    }
}

/* At the opening quote; returns the decoded string (caller frees) or NULL. */
static char *jp_string(jparser *jp, size_t *lenp)
{
    sbuf b = { 0 };
    sb_reserve(&b, 0);
    b.p[0] = '\0';
    jp->p++;
    for (;;) {
        const char *run = jp->p;
        while (jp->p < jp->end && *jp->p != '"' && *jp->p != '\\' && (unsigned char)*jp->p >= 0x20)
            jp->p++;
        if (jp->p > run)
            sb_add(&b, run, (size_t)(jp->p - run));
        if (jp->p >= jp->end) {
            jp->err = "unterminated string";
            goto fail;
        }
        char c = *jp->p++;
        if (c == '"')
            break;
        if (c != '\\') {
            jp->p--;
            jp->err = "control character in a string";
            goto fail;
        }
        if (jp->p >= jp->end) {
            jp->err = "unterminated string";
            goto fail;
        }
        char e = *jp->p++;
        switch (e) {
        case '"': sb_addc(&b, '"'); break;
        case '\\': sb_addc(&b, '\\'); break;
        case '/': sb_addc(&b, '/'); break;
        case 'b': sb_addc(&b, '\b'); break;
        case 'f': sb_addc(&b, '\f'); break;
        case 'n': sb_addc(&b, '\n'); break;
        case 'r': sb_addc(&b, '\r'); break;
        case 't': sb_addc(&b, '\t'); break;
        case 'u': {
            unsigned cp, lo;
            if (!jp_hex4(jp, &cp)) {
                jp->err = "bad \\u escape";
                goto fail;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF && jp->end - jp->p >= 6 && jp->p[0] == '\\' && jp->p[1] == 'u') {
                jparser save = *jp;
                jp->p += 2;
                if (jp_hex4(jp, &lo) && lo >= 0xDC00 && lo <= 0xDFFF)
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else
                    *jp = save;
            }
            if (cp >= 0xD800 && cp <= 0xDFFF)
                cp = 0xFFFD; /* a lone surrogate */
            utf8_put(&b, cp);
            break;
        }
        default:
            jp->p--;
            jp->err = "bad escape in a string";
            goto fail;
        }
    }
    *lenp = b.len;
    return b.p;
fail:
    sb_free(&b);
    return NULL;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static jv *jp_value(jparser *jp);

static jv *jp_number(jparser *jp)
{
    const char *s = jp->p;
    if (jp->p < jp->end && *jp->p == '-')
        jp->p++;
    if (jp->p < jp->end && *jp->p == '0') {
        jp->p++;
    } else if (jp->p < jp->end && is_digit(*jp->p)) {
        while (jp->p < jp->end && is_digit(*jp->p))
            jp->p++;
    } else {
        jp->err = "unexpected character";
        return NULL;
    }
    if (jp->p < jp->end && *jp->p == '.') {
        jp->p++;
        if (jp->p >= jp->end || !is_digit(*jp->p)) {
            jp->err = "bad number";
            return NULL;
        }
        while (jp->p < jp->end && is_digit(*jp->p))
            jp->p++;
    }
    if (jp->p < jp->end && (*jp->p == 'e' || *jp->p == 'E')) {
        jp->p++;
        if (jp->p < jp->end && (*jp->p == '+' || *jp->p == '-'))
            jp->p++;
        if (jp->p >= jp->end || !is_digit(*jp->p)) {
            jp->err = "bad number";
            return NULL;
        }
        while (jp->p < jp->end && is_digit(*jp->p))
            jp->p++;
    }
    jv *v = jv_new(J_NUM);
    v->s = strndup(s, (size_t)(jp->p - s));
    if (!v->s)
        oom();
    v->n = strtod(v->s, NULL);
    return v;
}

static bool jp_literal(jparser *jp, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(jp->end - jp->p) < n || memcmp(jp->p, word, n) != 0)
        return false;
    jp->p += n;
    return true;
}

static jv *jp_container(jparser *jp, bool object)
{
    if (++jp->depth > JSON_MAX_DEPTH) {
        jp->err = "nested too deeply";
        return NULL;
    }
    jv *v = jv_new(object ? J_OBJ : J_ARR);
    char close = object ? '}' : ']';
    jp->p++;
    jp_ws(jp);
    if (jp->p < jp->end && *jp->p == close) {
        jp->p++;
        jp->depth--;
        return v;
    }
    for (;;) {
        char *key = NULL;
        jp_ws(jp);
        if (object) {
            size_t klen;
            if (jp->p >= jp->end || *jp->p != '"') {
                jp->err = "expected a key";
                goto fail;
            }
            key = jp_string(jp, &klen);
            if (!key)
                goto fail;
            jp_ws(jp);
            if (jp->p >= jp->end || *jp->p != ':') {
                free(key);
                jp->err = "expected ':'";
                goto fail;
            }
            jp->p++;
        }
        jv *item = jp_value(jp);
        if (!item) {
            free(key);
            goto fail;
        }
        jv_push(v, key, item);
        jp_ws(jp);
        if (jp->p < jp->end && *jp->p == ',') {
            jp->p++;
            continue;
        }
        if (jp->p < jp->end && *jp->p == close) {
            jp->p++;
            break;
        }
        jp->err = object ? "expected ',' or '}'" : "expected ',' or ']'";
        goto fail;
    }
    jp->depth--;
    return v;
fail:
    jv_free(v);
    return NULL;
}

static jv *jp_value(jparser *jp)
{
    jp_ws(jp);
    if (jp->p >= jp->end) {
        jp->err = "unexpected end";
        return NULL;
    }
    switch (*jp->p) {
    case '{': return jp_container(jp, true);
    case '[': return jp_container(jp, false);
    case '"': {
        size_t len;
        char *s = jp_string(jp, &len);
        if (!s)
            return NULL;
        jv *v = jv_new(J_STR);
        v->s = s;
        v->len = len;
        return v;
    }
    case 't':
    case 'f':
    case 'n': {
        jv *v = NULL;
        if (jp_literal(jp, "true") || jp_literal(jp, "false")) {
            v = jv_new(J_BOOL);
            v->b = jp->p[-1] == 'e' && jp->p[-2] == 'u';
        } else if (jp_literal(jp, "null")) {
            v = jv_new(J_NULL);
        } else {
            jp->err = "unexpected word";
        }
        return v;
    }
    default: return jp_number(jp);
    }
}

/* Parses TEXT[0..LEN) as one JSON document; NULL with *ERR set on failure. */
static jv *json_parse(const char *text, size_t len, char *err, size_t errlen)
{
    jparser jp = { .p = text, .start = text, .end = text + len };
    jv *v = jp_value(&jp);
    if (v) {
        jp_ws(&jp);
        if (jp.p < jp.end) {
            jp.err = "trailing characters";
            jv_free(v);
            v = NULL;
        }
    }
    if (!v)
        snprintf(err, errlen, "%s at byte %zu", jp.err ? jp.err : "invalid JSON", (size_t)(jp.p - jp.start));
    return v;
}

static jv *jget(const jv *o, const char *key)
{
    if (!o || o->t != J_OBJ)
        return NULL;
    for (size_t i = 0; i < o->len; i++)
        if (strcmp(o->keys[i], key) == 0)
            return o->items[i];
    return NULL;
}

static const char *jstr(const jv *o, const char *key, const char *def)
{
    const jv *v = jget(o, key);
    return v && v->t == J_STR ? v->s : def;
}

static uint64_t jv_u64(const jv *v)
{
    if (!v || v->t != J_NUM)
        return 0;
    if (v->s && v->s[0] != '-' && !strpbrk(v->s, ".eE"))
        return strtoull(v->s, NULL, 10);
    return v->n > 0 ? (uint64_t)v->n : 0;
}

static uint64_t ju64(const jv *o, const char *key)
{
    return jv_u64(jget(o, key));
}

static double jnum(const jv *o, const char *key)
{
    const jv *v = jget(o, key);
    return v && v->t == J_NUM ? v->n : 0;
}

static bool jbool(const jv *o, const char *key)
{
    const jv *v = jget(o, key);
    return v && v->t == J_BOOL && v->b;
}

/* ---- JSON: printing -------------------------------------------------------------- */

static void json_escape(FILE *f, const char *s, size_t len)
{
    fputc('"', f);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (c < 0x20)
                fprintf(f, "\\u%04x", c);
            else
                fputc(c, f);
        }
    }
    fputc('"', f);
}

static void json_pretty(FILE *f, const jv *v, int indent)
{
    switch (v->t) {
    case J_NULL: fputs("null", f); break;
    case J_BOOL: fputs(v->b ? "true" : "false", f); break;
    case J_NUM: fputs(v->s, f); break;
    case J_STR: json_escape(f, v->s, v->len); break;
    case J_ARR:
    case J_OBJ: {
        bool obj = v->t == J_OBJ;
        if (!v->len) {
            fputs(obj ? "{}" : "[]", f);
            break;
        }
        fputc(obj ? '{' : '[', f);
        for (size_t i = 0; i < v->len; i++) {
            fprintf(f, "%s\n%*s", i ? "," : "", indent + 2, "");
            if (obj) {
                json_escape(f, v->keys[i], strlen(v->keys[i]));
                fputs(": ", f);
            }
            json_pretty(f, v->items[i], indent + 2);
        }
        fprintf(f, "\n%*s%c", indent, "", obj ? '}' : ']');
        break;
    }
    }
}

/* ---- human units ---------------------------------------------------------------- */

static const char *fmt_bytes(char *buf, size_t n, double v)
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
static const char *fmt_duration(char *buf, size_t n, double secs, int maxunits)
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

static const char *fmt_ms(char *buf, size_t n, double ms)
{
    snprintf(buf, n, ms < 10 ? "%.3f" : ms < 1000 ? "%.1f" : "%.0f", ms);
    return buf;
}

static const char *fmt_rate(char *buf, size_t n, double r)
{
    if (r < 0) {
        snprintf(buf, n, "-");
        return buf;
    }
    snprintf(buf, n, r < 100 ? "%.1f" : "%.0f", r);
    return buf;
}

static const char *fmt_byte_rate(char *buf, size_t n, double r)
{
    if (r < 0) {
        snprintf(buf, n, "-");
        return buf;
    }
    char b[32];
    snprintf(buf, n, "%s/s", fmt_bytes(b, sizeof(b), r));
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

typedef struct table {
    int ncols;
    const char *const *hdr;
    const char *align; /* 'l' or 'r' per column */
    char **cells;      /* row-major */
    size_t nrows, cap, col;
} table;

static void tbl_init(table *t, int ncols, const char *const *hdr, const char *align)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
    t->hdr = hdr;
    t->align = align;
}

__attribute__((format(printf, 2, 3))) static void tbl_cell(table *t, const char *fmt, ...)
{
    if (t->col == 0) {
        if (t->nrows == t->cap) {
            t->cap = t->cap ? t->cap * 2 : 16;
            t->cells = xrealloc(t->cells, t->cap * (size_t)t->ncols * sizeof(char *));
        }
        t->nrows++;
    }
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        oom();
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

static void tbl_print(const table *t, FILE *f)
{
    size_t *w = xcalloc((size_t)t->ncols, sizeof(size_t));
    for (int c = 0; c < t->ncols; c++) {
        w[c] = text_width(t->hdr[c]);
        for (size_t r = 0; r < t->nrows; r++) {
            size_t cw = text_width(t->cells[r * (size_t)t->ncols + (size_t)c]);
            if (cw > w[c])
                w[c] = cw;
        }
    }
    for (size_t r = 0; r <= t->nrows; r++) {
        sbuf line = { 0 };
        for (int c = 0; c < t->ncols; c++) {
            const char *s = r == 0 ? t->hdr[c] : t->cells[(r - 1) * (size_t)t->ncols + (size_t)c];
            size_t pad = w[c] - text_width(s);
            if (c)
                sb_adds(&line, "  ");
            if (t->align[c] == 'r')
                for (size_t i = 0; i < pad; i++)
                    sb_addc(&line, ' ');
            sb_adds(&line, s);
            if (t->align[c] != 'r')
                for (size_t i = 0; i < pad; i++)
                    sb_addc(&line, ' ');
        }
        while (line.len && line.p[line.len - 1] == ' ')
            line.p[--line.len] = '\0';
        fprintf(f, "%s\n", line.len ? line.p : "");
        sb_free(&line);
    }
    if (!t->nrows)
        fputs("(none)\n", f);
    free(w);
}

static void tbl_free(table *t)
{
    for (size_t i = 0; i < t->nrows * (size_t)t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}

/* ---- talking to the daemon ------------------------------------------------------ */

typedef struct ctl_conn {
    int fd;
    sbuf in;           /* bytes received, not consumed yet */
    size_t scan;       /* bytes of `in` already searched for a newline */
    size_t line_start; /* start of the line being searched (metrics) */
} ctl_conn;

static const char *g_socket = DEFAULT_SOCKET;
static double g_timeout = 30; /* seconds to wait for an answer; 0 = forever */

/* 0, or -1 with errno set. */
static int ctl_connect(ctl_conn *c, const char *path)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sun.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        if (errno != EINTR) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        /* interrupted: the connect goes on in the background; wait for it */
        struct pollfd pfd = { .fd = fd, .events = POLLOUT };
        int rc;
        while ((rc = poll(&pfd, 1, 5000)) < 0 && errno == EINTR && !g_quit)
            ;
        int soerr = rc > 0 ? 0 : rc == 0 ? ETIMEDOUT : errno;
        socklen_t sl = sizeof(soerr);
        if (rc > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
            soerr = errno;
        if (soerr) {
            close(fd);
            errno = soerr;
            return -1;
        }
    }
    c->fd = fd;
    return 0;
}

static void ctl_close(ctl_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    sb_free(&c->in);
    c->scan = c->line_start = 0;
}

static void connect_failed(const char *path, int err)
{
    const char *hint = "";
    if (err == ENOENT || err == ECONNREFUSED)
        hint = " (is tusknetd running?)";
    else if (err == EACCES || err == EPERM)
        hint = " (root, the daemon's user or daemon.control_group may use it)";
    fprintf(stderr, "tusknetctl: cannot connect to %s: %s%s\n", path, strerror(err), hint);
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Is the line [s, e) (without its '\n') the end marker of `metrics`? */
static bool is_eof_line(const char *s, const char *e)
{
    if (e > s && e[-1] == '\r')
        e--;
    return e - s == 5 && memcmp(s, "# EOF", 5) == 0;
}

/* Reads one answer: a JSON line, or with METRICS the text up to "# EOF" (a
 * JSON line instead is an error answer). Returns its length in c->in.p (the
 * final newline excluded), or -1 with ERR set. Consume it with ctl_consume. */
static ssize_t ctl_read_answer(ctl_conn *c, bool metrics, char *err, size_t errlen)
{
    double deadline = g_timeout > 0 ? now_mono() + g_timeout : 0;
    for (;;) {
        while (c->scan < c->in.len) {
            char *nl = memchr(c->in.p + c->scan, '\n', c->in.len - c->scan);
            if (!nl) {
                c->scan = c->in.len;
                break;
            }
            size_t end = (size_t)(nl - c->in.p);
            const char *ls = c->in.p + c->line_start;
            if (!metrics || (c->line_start == 0 && c->in.p[0] == '{') || is_eof_line(ls, nl)) {
                c->scan = end + 1;
                return (ssize_t)end;
            }
            c->line_start = c->scan = end + 1;
        }
        int wait_ms = -1;
        if (deadline > 0) {
            double left = deadline - now_mono();
            if (left <= 0) {
                snprintf(err, errlen, "no answer from tusknetd within %gs", g_timeout);
                return -1;
            }
            wait_ms = (int)(left * 1000) + 1;
        }
        struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
        int rc = poll(&pfd, 1, wait_ms);
        if (rc < 0) {
            if (errno == EINTR) {
                if (g_quit) {
                    snprintf(err, errlen, "interrupted");
                    return -1;
                }
                continue;
            }
            snprintf(err, errlen, "poll: %s", strerror(errno));
            return -1;
        }
        if (rc == 0)
            continue; /* the deadline check above reports it */
        sb_reserve(&c->in, 65536);
        ssize_t r = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len - 1);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            snprintf(err, errlen, "reading the answer: %s", strerror(errno));
            return -1;
        }
        if (r == 0) {
            if (c->in.len)
                snprintf(err, errlen, "tusknetd closed the connection in the middle of an answer (%zu bytes read)",
                         c->in.len);
            else
                snprintf(err, errlen, "tusknetd closed the connection without answering");
            return -1;
        }
        c->in.len += (size_t)r;
        c->in.p[c->in.len] = '\0';
    }
}

/* Drops the answer just read (and its newline). */
static void ctl_consume(ctl_conn *c)
{
    size_t n = c->scan;
    memmove(c->in.p, c->in.p + n, c->in.len - n);
    c->in.len -= n;
    if (c->in.p)
        c->in.p[c->in.len] = '\0';
    c->scan = c->line_start = 0;
}

/* Sends LINE (no newline) and reads the answer; -1 with ERR set on failure.
 * A failed write still reads: the daemon may have answered and closed (e.g.
 * "permission denied" at accept). */
static ssize_t ctl_request(ctl_conn *c, const char *line, bool metrics, char *err, size_t errlen)
{
    sbuf cmd = { 0 };
    sb_adds(&cmd, line);
    sb_addc(&cmd, '\n');
    int werr = send_all(c->fd, cmd.p, cmd.len) < 0 ? errno : 0;
    sb_free(&cmd);
    ssize_t n = ctl_read_answer(c, metrics, err, errlen);
    if (n < 0 && (werr == EPIPE || werr == ECONNRESET))
        snprintf(err, errlen, "tusknetd closed the connection");
    else if (n < 0 && werr)
        snprintf(err, errlen, "sending the command: %s", strerror(werr));
    return n;
}

/* ---- human output of each command ---------------------------------------------- */

static const char *const LISTENER_HDR[] = { "LISTENER", "PROTO", "ADDRESS", "ACTIVE", "TOTAL", "SENT",
                                            "RECEIVED", "ERRORS", "TIMEOUTS", "REJECTED" };

static uint64_t rejected_sum(const jv *counters)
{
    const jv *rej = jget(counters, "rejected");
    uint64_t sum = 0;
    for (size_t i = 0; rej && rej->t == J_OBJ && i < rej->len; i++)
        sum += jv_u64(rej->items[i]);
    return sum;
}

static const char *listener_label(char *buf, size_t n, const char *name, const jv *l)
{
    snprintf(buf, n, "%s%s", name, jbool(l, "draining") ? " (draining)" : "");
    return buf;
}

static const char *const HTTP_CLASSES[] = { "1xx", "2xx", "3xx", "4xx", "5xx" };

/* "3 2xx, 2 4xx" from an http_responses object; false when all are 0. */
static bool http_classes_line(FILE *f, const jv *resp)
{
    int shown = 0;
    for (size_t k = 0; k < 5; k++) {
        uint64_t v = ju64(resp, HTTP_CLASSES[k]);
        if (v)
            fprintf(f, "%s%" PRIu64 " %s", shown++ ? ", " : "", v, HTTP_CLASSES[k]);
    }
    return shown > 0;
}

/* Whether any listener of a `stats` answer serves HTTP. */
static bool has_http(const jv *stats)
{
    const jv *ls = jget(stats, "listeners");
    for (size_t i = 0; ls && ls->t == J_OBJ && i < ls->len; i++)
        if (jget(ls->items[i], "http_responses"))
            return true;
    return false;
}

/* "2 ok, 1 refused" (attempts are the sum). */
static void reloads_line(FILE *f, const jv *a)
{
    fprintf(f, "%" PRIu64 " ok, %" PRIu64 " refused", ju64(a, "reloads_ok"), ju64(a, "reloads_refused"));
}

static void http_row(table *t, const char *listener, const char *route, const jv *resp)
{
    tbl_cell(t, "%s", listener);
    tbl_cell(t, "%s", route);
    for (size_t k = 0; k < 5; k++)
        tbl_cell(t, "%" PRIu64, ju64(resp, HTTP_CLASSES[k]));
}

static int show_stats(const jv *a, FILE *f)
{
    char b1[64], b2[64];
    const jv *g = jget(a, "global"), *info = jget(a, "info");
    fprintf(f, "tusknetd %s, up %s", jstr(a, "version", "?"),
            fmt_duration(b1, sizeof(b1), jnum(a, "uptime_seconds"), 0));
    if (ju64(a, "reloads")) {
        fputs(", reloads: ", f);
        reloads_line(f, a);
    }
    fputs("\n\n", f);
    fprintf(f, "connections  %" PRIu64 " active, %" PRIu64 " total\n", ju64(g, "active_connections"),
            ju64(g, "total_connections"));
    fprintf(f, "bytes        %s sent, %s received\n", fmt_bytes(b1, sizeof(b1), (double)ju64(g, "total_bytes_sent")),
            fmt_bytes(b2, sizeof(b2), (double)ju64(g, "total_bytes_received")));
    fprintf(f, "messages     %" PRIu64 " in, %" PRIu64 " out\n", ju64(g, "messages_in"), ju64(g, "messages_out"));
    fprintf(f, "errors       %" PRIu64 " connection, %" PRIu64 " timeout\n", ju64(g, "connection_errors"),
            ju64(g, "timeout_errors"));
    fputs("rejections   ", f);
    const jv *rej = jget(g, "rejected");
    int shown = 0;
    for (size_t i = 0; rej && rej->t == J_OBJ && i < rej->len; i++) {
        uint64_t v = jv_u64(rej->items[i]);
        if (v)
            fprintf(f, "%s%s %" PRIu64, shown++ ? ", " : "", rej->keys[i], v);
    }
    fputs(shown ? "\n" : "none\n", f);
    if (has_http(a)) {
        fputs("http         ", f);
        fputs(http_classes_line(f, jget(g, "http_responses")) ? "\n" : "none\n", f);
    }
    if (info)
        fprintf(f, "process      pid %" PRIu64 ", %s resident, %" PRIu64 " of %" PRIu64 " descriptors\n",
                ju64(info, "pid"), fmt_bytes(b1, sizeof(b1), (double)ju64(info, "rss_bytes")),
                ju64(info, "open_fds"), ju64(info, "max_fds"));
    const jv *tls = jget(g, "tls");
    const jv *fails = tls ? jget(tls, "handshake_failures") : NULL;
    uint64_t handshakes = tls ? ju64(tls, "handshakes") : 0, nfail = 0;
    for (size_t i = 0; fails && fails->t == J_OBJ && i < fails->len; i++)
        nfail += jv_u64(fails->items[i]);
    if (handshakes || nfail) {
        fprintf(f, "tls          %" PRIu64 " handshake%s, %" PRIu64 " failed", handshakes, handshakes == 1 ? "" : "s", nfail);
        shown = 0;
        for (size_t i = 0; fails && fails->t == J_OBJ && i < fails->len; i++) {
            uint64_t v = jv_u64(fails->items[i]);
            if (v)
                fprintf(f, "%s%s %" PRIu64, shown++ ? ", " : " (", fails->keys[i], v);
        }
        fputs(shown ? ")\n" : "\n", f);
    }

    table t;
    tbl_init(&t, 10, LISTENER_HDR, "lllrrrrrrr");
    const jv *ls = jget(a, "listeners");
    for (size_t i = 0; ls && ls->t == J_OBJ && i < ls->len; i++) {
        const jv *l = ls->items[i];
        char lab[256];
        tbl_cell(&t, "%s", listener_label(lab, sizeof(lab), ls->keys[i], l));
        tbl_cell(&t, "%s", jstr(l, "protocol", "?"));
        tbl_cell(&t, "%s", jstr(l, "address", "-"));
        tbl_cell(&t, "%" PRIu64, ju64(l, "active_connections"));
        tbl_cell(&t, "%" PRIu64, ju64(l, "total_connections"));
        tbl_cell(&t, "%s", fmt_bytes(b1, sizeof(b1), (double)ju64(l, "total_bytes_sent")));
        tbl_cell(&t, "%s", fmt_bytes(b1, sizeof(b1), (double)ju64(l, "total_bytes_received")));
        tbl_cell(&t, "%" PRIu64, ju64(l, "connection_errors"));
        tbl_cell(&t, "%" PRIu64, ju64(l, "timeout_errors"));
        tbl_cell(&t, "%" PRIu64, rejected_sum(l));
    }
    fputc('\n', f);
    tbl_print(&t, f);
    tbl_free(&t);

    /* HTTP responses by class: each HTTP listener, then its routes */
    static const char *const rh[] = { "HTTP LISTENER", "ROUTE", "1XX", "2XX", "3XX", "4XX", "5XX" };
    tbl_init(&t, 7, rh, "llrrrrr");
    for (size_t i = 0; ls && ls->t == J_OBJ && i < ls->len; i++) {
        const jv *l = ls->items[i], *routes = jget(l, "routes"), *unrouted = jget(l, "unrouted");
        if (!jget(l, "http_responses"))
            continue;
        http_row(&t, ls->keys[i], "(all)", jget(l, "http_responses"));
        for (size_t r = 0; routes && routes->t == J_OBJ && r < routes->len; r++)
            http_row(&t, ls->keys[i], routes->keys[r], jget(routes->items[r], "http_responses"));
        if (unrouted)
            http_row(&t, ls->keys[i], "(no route)", jget(unrouted, "http_responses"));
    }
    if (t.nrows) {
        fputc('\n', f);
        tbl_print(&t, f);
    }
    tbl_free(&t);

    static const char *const hh[] = { "HANDLER", "TYPE", "CALLS", "ERRORS", "IN-FLIGHT", "P50 ms", "P90 ms", "P99 ms" };
    tbl_init(&t, 8, hh, "llrrrrrr");
    const jv *hs = jget(a, "handlers");
    for (size_t i = 0; hs && hs->t == J_OBJ && i < hs->len; i++) {
        const jv *h = hs->items[i], *lat = jget(h, "latency_ms");
        tbl_cell(&t, "%s", hs->keys[i]);
        tbl_cell(&t, "%s", jstr(h, "type", "?"));
        tbl_cell(&t, "%" PRIu64, ju64(h, "calls"));
        tbl_cell(&t, "%" PRIu64, ju64(h, "errors"));
        tbl_cell(&t, "%" PRIu64, ju64(h, "in_flight"));
        tbl_cell(&t, "%s", fmt_ms(b1, sizeof(b1), jnum(lat, "p50")));
        tbl_cell(&t, "%s", fmt_ms(b1, sizeof(b1), jnum(lat, "p90")));
        tbl_cell(&t, "%s", fmt_ms(b1, sizeof(b1), jnum(lat, "p99")));
    }
    fputc('\n', f);
    tbl_print(&t, f);
    tbl_free(&t);
    return 0;
}

static int show_info(const jv *a, FILE *f)
{
    char b1[64];
    const jv *build = jget(a, "build"), *last = jget(a, "last_reload"), *conns = jget(a, "connections");
    fprintf(f, "tusknetd %s, pid %" PRIu64 "\n", jstr(a, "version", "?"), ju64(a, "pid"));
    fprintf(f, "build        %s, %s, %s\n", jstr(build, "git", "?"), jstr(build, "date", "?"),
            jstr(build, "compiler", "?"));
    fprintf(f, "libraries    libevent %s, OpenSSL %s, libwebsockets %s\n", jstr(build, "libevent", "?"),
            jstr(build, "openssl", "?"), jstr(build, "libwebsockets", "?"));
    fprintf(f, "config       %s\n", jstr(a, "config", "?"));
    fprintf(f, "started      %s, up %s\n", jstr(a, "started", "?"),
            fmt_duration(b1, sizeof(b1), jnum(a, "uptime_seconds"), 0));
    fprintf(f, "reloads      %" PRIu64 ": ", ju64(a, "reloads"));
    reloads_line(f, a);
    fputc('\n', f);
    if (last && last->t == J_OBJ) {
        /* the errors of a refused reload may span lines: indent the rest */
        fprintf(f, "last reload  %s, %s: ", jstr(last, "time", "?"), jstr(last, "outcome", "?"));
        for (const char *m = jstr(last, "message", ""); *m; m++) {
            fputc(*m, f);
            if (*m == '\n' && m[1])
                fputs("             ", f);
        }
        fputc('\n', f);
    }
    fprintf(f, "memory       %s resident\n", fmt_bytes(b1, sizeof(b1), (double)ju64(a, "rss_bytes")));
    fprintf(f, "descriptors  %" PRIu64 " open, limit %" PRIu64 "\n", ju64(a, "open_fds"), ju64(a, "max_fds"));
    fprintf(f, "cpu          %.2f s\n", jnum(a, "cpu_seconds"));
    fputs("connections  ", f);
    for (size_t i = 0; conns && conns->t == J_OBJ && i < conns->len; i++)
        fprintf(f, "%s%" PRIu64 " %s", i ? ", " : "", jv_u64(conns->items[i]), conns->keys[i]);
    fputc('\n', f);
    return 0;
}

static int cmp_conn_id(const void *a, const void *b)
{
    uint64_t x = ju64(*(const jv *const *)a, "id"), y = ju64(*(const jv *const *)b, "id");
    return x < y ? -1 : x > y;
}

static int show_connections(const jv *a, FILE *f)
{
    static const char *const hdr[] = { "ID",   "LISTENER", "PROTO", "REMOTE",      "LOCAL", "AGE",
                                       "IDLE", "SENT",     "RECV",  "MSGS IN/OUT", "PATH",  "TLS" };
    const jv *cs = jget(a, "connections");
    size_t n = cs && cs->t == J_ARR ? cs->len : 0;
    const jv **sorted = xcalloc(n, sizeof(*sorted));
    for (size_t i = 0; i < n; i++)
        sorted[i] = cs->items[i];
    qsort(sorted, n, sizeof(*sorted), cmp_conn_id);
    double now = now_real();
    table t;
    tbl_init(&t, 12, hdr, "rllllrrrrrll");
    char b[64];
    for (size_t i = 0; i < n; i++) {
        const jv *c = sorted[i];
        double est = parse_iso(jstr(c, "established", NULL)), last = parse_iso(jstr(c, "last_activity", NULL));
        tbl_cell(&t, "%" PRIu64, ju64(c, "id"));
        tbl_cell(&t, "%s", jstr(c, "listener", "?"));
        tbl_cell(&t, "%s", jstr(c, "protocol", "?"));
        tbl_cell(&t, "%s", jstr(c, "remote", "?"));
        tbl_cell(&t, "%s", jstr(c, "local", "?"));
        tbl_cell(&t, "%s", est < 0 ? "?" : fmt_duration(b, sizeof(b), now - est, 2));
        tbl_cell(&t, "%s", last < 0 ? "?" : fmt_duration(b, sizeof(b), now - last, 2));
        tbl_cell(&t, "%s", fmt_bytes(b, sizeof(b), (double)ju64(c, "bytes_sent")));
        tbl_cell(&t, "%s", fmt_bytes(b, sizeof(b), (double)ju64(c, "bytes_received")));
        tbl_cell(&t, "%" PRIu64 "/%" PRIu64, ju64(c, "messages_in"), ju64(c, "messages_out"));
        tbl_cell(&t, "%s", jstr(c, "path", "-")); /* WebSockets */
        tbl_cell(&t, "%s", jstr(c, "tls_version", "-"));
    }
    if (n) {
        tbl_print(&t, f);
        fprintf(f, "\n%zu connection%s\n", n, n == 1 ? "" : "s");
    } else {
        fputs("no open connections\n", f);
    }
    tbl_free(&t);
    free(sorted);
    return 0;
}

static void join_strings(sbuf *out, const jv *arr)
{
    for (size_t i = 0; arr && arr->t == J_ARR && i < arr->len; i++) {
        if (i)
            sb_adds(out, ",");
        if (arr->items[i]->t == J_STR)
            sb_adds(out, arr->items[i]->s);
    }
    if (!out->len)
        sb_adds(out, "-");
}

static int show_listeners(const jv *a, FILE *f)
{
    static const char *const hdr[] = { "LISTENER", "PROTO", "LISTEN", "ADDRESS", "STATE", "ACTIVE", "HANDLERS" };
    table t;
    tbl_init(&t, 7, hdr, "lllllrl");
    const jv *ls = jget(a, "listeners");
    for (size_t i = 0; ls && ls->t == J_ARR && i < ls->len; i++) {
        const jv *l = ls->items[i];
        sbuf hs = { 0 };
        join_strings(&hs, jget(l, "handlers"));
        tbl_cell(&t, "%s", jstr(l, "name", "?"));
        tbl_cell(&t, "%s", jstr(l, "protocol", "?"));
        tbl_cell(&t, "%s", jstr(l, "listen", "-"));
        tbl_cell(&t, "%s", jstr(l, "address", "-"));
        tbl_cell(&t, "%s", jbool(l, "draining") ? "draining" : jbool(l, "serving") ? "serving" : "stopped");
        tbl_cell(&t, "%" PRIu64, ju64(l, "active_connections"));
        tbl_cell(&t, "%s", hs.p);
        sb_free(&hs);
    }
    tbl_print(&t, f);
    tbl_free(&t);
    return 0;
}

static int show_handlers(const jv *a, FILE *f)
{
    static const char *const hdr[] = { "HANDLER", "TYPE", "CALLS", "ERRORS", "IN-FLIGHT", "P50 ms", "P90 ms", "P99 ms" };
    table t;
    char b[64];
    tbl_init(&t, 8, hdr, "llrrrrrr");
    const jv *hs = jget(a, "handlers");
    for (size_t i = 0; hs && hs->t == J_ARR && i < hs->len; i++) {
        const jv *h = hs->items[i];
        tbl_cell(&t, "%s", jstr(h, "name", "?"));
        tbl_cell(&t, "%s", jstr(h, "type", "?"));
        tbl_cell(&t, "%" PRIu64, ju64(h, "calls"));
        tbl_cell(&t, "%" PRIu64, ju64(h, "errors"));
        tbl_cell(&t, "%" PRIu64, ju64(h, "in_flight"));
        tbl_cell(&t, "%s", fmt_ms(b, sizeof(b), jnum(h, "p50_ms")));
        tbl_cell(&t, "%s", fmt_ms(b, sizeof(b), jnum(h, "p90_ms")));
        tbl_cell(&t, "%s", fmt_ms(b, sizeof(b), jnum(h, "p99_ms")));
    }
    tbl_print(&t, f);
    tbl_free(&t);
    return 0;
}

static int show_routes(const jv *a, FILE *f)
{
    static const char *const hdr[] = { "LISTENER", "KIND", "METHOD", "PATH", "HANDLER" };
    const jv *rs = jget(a, "routes");
    if (!rs || rs->t != J_ARR || !rs->len) {
        fputs("no routes (HTTP routes and WebSocket endpoints are listed here)\n", f);
        return 0;
    }
    table t;
    tbl_init(&t, 5, hdr, "lllll");
    for (size_t i = 0; i < rs->len; i++) {
        const jv *r = rs->items[i];
        sbuf hs = { 0 };
        if (jget(r, "handler"))
            sb_adds(&hs, jstr(r, "handler", "?"));
        else
            join_strings(&hs, jget(r, "handlers"));
        tbl_cell(&t, "%s", jstr(r, "listener", "?"));
        tbl_cell(&t, "%s", jstr(r, "kind", "?"));
        tbl_cell(&t, "%s", jstr(r, "method", "*"));
        tbl_cell(&t, "%s", jstr(r, "path", "?"));
        tbl_cell(&t, "%s", hs.p);
        sb_free(&hs);
    }
    tbl_print(&t, f);
    tbl_free(&t);
    return 0;
}

static int show_help(const jv *a, FILE *f)
{
    static const char *const hdr[] = { "COMMAND", "LEVEL", "DESCRIPTION" };
    fprintf(f, "Commands of tusknetd (your level: %s):\n\n", jstr(a, "level", "?"));
    table t;
    tbl_init(&t, 3, hdr, "lll");
    const jv *cs = jget(a, "commands");
    for (size_t i = 0; cs && cs->t == J_ARR && i < cs->len; i++) {
        const jv *c = cs->items[i];
        const char *args = jstr(c, "args", "");
        tbl_cell(&t, "%s%s%s", jstr(c, "name", "?"), *args ? " " : "", args);
        tbl_cell(&t, "%s", jstr(c, "level", "?"));
        tbl_cell(&t, "%s", jstr(c, "doc", ""));
    }
    tbl_cell(&t, "top [-n N] [-d SECONDS]");
    tbl_cell(&t, "read");
    tbl_cell(&t, "live view of the stats with rates (tusknetctl only)");
    tbl_print(&t, f);
    tbl_free(&t);
    return 0;
}

static int show_version(const jv *a, FILE *f)
{
    fprintf(f, "tusknetd %s\n", jstr(a, "version", "?"));
    return 0;
}

static int show_pretty(const jv *a, FILE *f)
{
    json_pretty(f, a, 0);
    fputc('\n', f);
    return 0;
}

/* The answer to an action command: {"ok":true,...}. */
static const char *g_args[3]; /* the command's first arguments, for the messages */

static int show_ok(const char *cmd, const jv *a, FILE *f)
{
    if (strcmp(cmd, "reload") == 0)
        fprintf(f, "ok: configuration reloaded (reloads so far: %" PRIu64 " ok, %" PRIu64 " refused)\n",
                ju64(a, "reloads_ok"), ju64(a, "reloads_refused"));
    else if (strcmp(cmd, "close") == 0)
        fprintf(f, "ok: connection %s closed\n", g_args[0]);
    else if (strcmp(cmd, "send") == 0)
        fprintf(f, "ok: sent to connection %s\n", g_args[0]);
    else if (strcmp(cmd, "broadcast") == 0) {
        uint64_t sent = ju64(a, "sent"), dropped = ju64(a, "dropped");
        fprintf(f, "ok: sent to %" PRIu64 " connection%s", sent, sent == 1 ? "" : "s");
        if (dropped)
            fprintf(f, ", %" PRIu64 " dropped (not reading)", dropped);
        fputc('\n', f);
    } else if (strcmp(cmd, "log-level") == 0)
        fprintf(f, "ok: log level %s\n", jstr(a, "log_level", g_args[0]));
    else if (strcmp(cmd, "shutdown") == 0)
        fputs("ok: tusknetd is shutting down\n", f);
    else if (a->len == 1)
        fputs("ok\n", f);
    else
        show_pretty(a, f);
    return 0;
}

/* ---- commands known to this client --------------------------------------------- */

typedef struct ctl_command {
    const char *name;
    int min_args, max_args; /* max -1: the rest is free text */
    int (*show)(const jv *a, FILE *f);
} ctl_command;

static const ctl_command COMMANDS[] = {
    { "stats", 0, 0, show_stats },
    { "info", 0, 0, show_info },
    { "metrics", 0, 0, NULL },
    { "connections", 0, 1, show_connections },
    { "listeners", 0, 0, show_listeners },
    { "handlers", 0, 0, show_handlers },
    { "routes", 0, 0, show_routes },
    { "config", 0, 0, show_pretty },
    { "version", 0, 0, show_version },
    { "help", 0, 0, show_help },
    { "reload", 0, 0, NULL },
    { "close", 1, 1, NULL },
    { "send", 2, -1, NULL },
    { "broadcast", 2, -1, NULL },
    { "log-level", 1, 1, NULL },
    { "shutdown", 0, 0, NULL },
    { "top", 0, 0, NULL },
};

static const ctl_command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof(COMMANDS) / sizeof(COMMANDS[0]); i++)
        if (strcmp(COMMANDS[i].name, name) == 0)
            return &COMMANDS[i];
    return NULL;
}

/* ---- top ------------------------------------------------------------------------ */

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
    g_quit = 1;
}

static void on_winch(int sig)
{
    (void)sig;
    g_resize = 1;
}

/* Per-second rate of the counter KEY between two samples; -1 if unknown. */
static double rate_of(const jv *cur, const jv *prev, const char *key, double dt)
{
    if (!prev || dt <= 0 || !jget(prev, key))
        return -1;
    uint64_t a = ju64(cur, key), b = ju64(prev, key);
    return a >= b ? (double)(a - b) / dt : -1; /* a counter going back: the daemon restarted */
}

/* CPU use between two samples in percent of one core, "-" when unknown. */
static const char *cpu_percent(char *buf, size_t n, const jv *cur, const jv *prev, double dt)
{
    if (!prev || dt <= 0 || !jget(prev, "cpu_seconds") || jnum(cur, "cpu_seconds") < jnum(prev, "cpu_seconds"))
        snprintf(buf, n, "-");
    else
        snprintf(buf, n, "%.1f%%", 100 * (jnum(cur, "cpu_seconds") - jnum(prev, "cpu_seconds")) / dt);
    return buf;
}

static void top_frame(FILE *f, const jv *cur, const jv *prev, double dt, double interval, bool tty)
{
    char b1[64], b2[64], b3[64], b4[64];
    const jv *g = jget(cur, "global"), *pg = jget(prev, "global");
    char clock[32] = "";
    time_t now = time(NULL);
    struct tm tm;
    if (localtime_r(&now, &tm))
        strftime(clock, sizeof(clock), "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(f, "tusknetd %s  up %s  %s  every %gs%s\n", jstr(cur, "version", "?"),
            fmt_duration(b1, sizeof(b1), jnum(cur, "uptime_seconds"), 0), clock, interval,
            tty ? "  (q quits)" : "");
    fprintf(f, "connections  %" PRIu64 " open, %" PRIu64 " total, %s/s new\n", ju64(g, "active_connections"),
            ju64(g, "total_connections"), fmt_rate(b1, sizeof(b1), rate_of(g, pg, "total_connections", dt)));
    fprintf(f, "messages     in %s/s, out %s/s\n", fmt_rate(b1, sizeof(b1), rate_of(g, pg, "messages_in", dt)),
            fmt_rate(b2, sizeof(b2), rate_of(g, pg, "messages_out", dt)));
    fprintf(f, "bytes        in %s, out %s\n", fmt_byte_rate(b1, sizeof(b1), rate_of(g, pg, "total_bytes_received", dt)),
            fmt_byte_rate(b2, sizeof(b2), rate_of(g, pg, "total_bytes_sent", dt)));
    fprintf(f, "errors       %" PRIu64 " connection, %" PRIu64 " timeout, %" PRIu64 " rejected\n",
            ju64(g, "connection_errors"), ju64(g, "timeout_errors"), rejected_sum(g));
    const jv *resp = jget(g, "http_responses"), *presp = jget(pg, "http_responses");
    if (resp && has_http(cur)) {
        fputs("http         ", f);
        for (size_t k = 0; k < 5; k++)
            fprintf(f, "%s%s %s/s", k ? ", " : "", HTTP_CLASSES[k],
                    fmt_rate(b1, sizeof(b1), rate_of(resp, presp, HTTP_CLASSES[k], dt)));
        fputc('\n', f);
    }
    const jv *info = jget(cur, "info");
    if (info)
        fprintf(f, "process      %s resident, %" PRIu64 " of %" PRIu64 " descriptors, cpu %s\n",
                fmt_bytes(b1, sizeof(b1), (double)ju64(info, "rss_bytes")), ju64(info, "open_fds"),
                ju64(info, "max_fds"), cpu_percent(b2, sizeof(b2), info, jget(prev, "info"), dt));

    static const char *const lh[] = { "LISTENER", "PROTO", "ADDRESS", "OPEN", "CONN/S", "MSG IN/S",
                                      "MSG OUT/S", "IN/S",  "OUT/S",  "ERRORS" };
    table t;
    tbl_init(&t, 10, lh, "lllrrrrrrr");
    const jv *ls = jget(cur, "listeners"), *pls = jget(prev, "listeners");
    for (size_t i = 0; ls && ls->t == J_OBJ && i < ls->len; i++) {
        const jv *l = ls->items[i], *pl = jget(pls, ls->keys[i]);
        char lab[256];
        tbl_cell(&t, "%s", listener_label(lab, sizeof(lab), ls->keys[i], l));
        tbl_cell(&t, "%s", jstr(l, "protocol", "?"));
        tbl_cell(&t, "%s", jstr(l, "address", "-"));
        tbl_cell(&t, "%" PRIu64, ju64(l, "active_connections"));
        tbl_cell(&t, "%s", fmt_rate(b1, sizeof(b1), rate_of(l, pl, "total_connections", dt)));
        tbl_cell(&t, "%s", fmt_rate(b2, sizeof(b2), rate_of(l, pl, "messages_in", dt)));
        tbl_cell(&t, "%s", fmt_rate(b3, sizeof(b3), rate_of(l, pl, "messages_out", dt)));
        tbl_cell(&t, "%s", fmt_byte_rate(b4, sizeof(b4), rate_of(l, pl, "total_bytes_received", dt)));
        tbl_cell(&t, "%s", fmt_byte_rate(b1, sizeof(b1), rate_of(l, pl, "total_bytes_sent", dt)));
        tbl_cell(&t, "%" PRIu64, ju64(l, "connection_errors") + ju64(l, "timeout_errors"));
    }
    fputc('\n', f);
    tbl_print(&t, f);
    tbl_free(&t);

    static const char *const hh[] = { "HANDLER", "TYPE", "CALLS", "CALLS/S", "ERR/S", "IN-FLIGHT", "P50 ms",
                                      "P90 ms",  "P99 ms" };
    tbl_init(&t, 9, hh, "llrrrrrrr");
    const jv *hs = jget(cur, "handlers"), *phs = jget(prev, "handlers");
    for (size_t i = 0; hs && hs->t == J_OBJ && i < hs->len; i++) {
        const jv *h = hs->items[i], *ph = jget(phs, hs->keys[i]), *lat = jget(h, "latency_ms");
        tbl_cell(&t, "%s", hs->keys[i]);
        tbl_cell(&t, "%s", jstr(h, "type", "?"));
        tbl_cell(&t, "%" PRIu64, ju64(h, "calls"));
        tbl_cell(&t, "%s", fmt_rate(b1, sizeof(b1), rate_of(h, ph, "calls", dt)));
        tbl_cell(&t, "%s", fmt_rate(b2, sizeof(b2), rate_of(h, ph, "errors", dt)));
        tbl_cell(&t, "%" PRIu64, ju64(h, "in_flight"));
        tbl_cell(&t, "%s", fmt_ms(b1, sizeof(b1), jnum(lat, "p50")));
        tbl_cell(&t, "%s", fmt_ms(b2, sizeof(b2), jnum(lat, "p90")));
        tbl_cell(&t, "%s", fmt_ms(b3, sizeof(b3), jnum(lat, "p99")));
    }
    fputc('\n', f);
    tbl_print(&t, f);
    tbl_free(&t);
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
    sbuf out = { 0 };
    sb_adds(&out, "\033[H");
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
        sb_add(&out, p, (size_t)(q - p));
        sb_adds(&out, "\033[K");
        row++;
        p = nl ? nl + 1 : end;
        if (p < end && (rows <= 0 || row < rows))
            sb_adds(&out, "\r\n");
    }
    sb_adds(&out, "\033[J");
    write_all_stdout(out.p, out.len);
    sb_free(&out);
}

static int run_top(int iterations, double interval, bool json)
{
    bool tty = !json && isatty(STDOUT_FILENO);
    bool keys = tty && isatty(STDIN_FILENO);
    ctl_conn c;
    if (ctl_connect(&c, g_socket) < 0) {
        connect_failed(g_socket, errno);
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
    jv *prev = NULL;
    double prev_t = 0;
    sbuf frame = { 0 };
    char err[512];
    for (int i = 0; !g_quit && (iterations <= 0 || i < iterations); i++) {
        double t0 = now_mono();
        if (c.fd < 0 && ctl_connect(&c, g_socket) < 0)
            snprintf(err, sizeof(err), "cannot connect to %s: %s", g_socket, strerror(errno));
        jv *cur = NULL;
        ssize_t n = c.fd < 0 ? -1 : ctl_request(&c, "stats", false, err, sizeof(err));
        if (g_quit)
            break;
        double t = now_mono();
        if (n >= 0) {
            char perr[256];
            cur = json_parse(c.in.p, (size_t)n, perr, sizeof(perr));
            if (json && (!cur || cur->t != J_OBJ || jget(cur, "ok") == NULL)) {
                write_all_stdout(c.in.p, (size_t)n);
                write_all_stdout("\n", 1);
            }
            ctl_consume(&c);
            if (!cur) {
                snprintf(err, sizeof(err), "invalid answer from tusknetd: %s", perr);
            } else if (jget(cur, "ok") && !jbool(cur, "ok")) {
                restore_terminal();
                fprintf(stderr, "tusknetctl: %s\n", jstr(cur, "error", "error"));
                jv_free(cur);
                rc = 1;
                break;
            }
        }
        if (!cur)
            ctl_close(&c); /* reconnect next time */
        if (!json) {
            free(frame.p);
            frame.p = NULL;
            frame.len = 0;
            FILE *f = open_memstream(&frame.p, &frame.len);
            if (!f)
                oom();
            if (cur)
                top_frame(f, cur, prev, t - prev_t, interval, tty);
            else
                fprintf(f, "tusknetctl top: %s\nretrying every %gs%s\n", err, interval, tty ? "  (q quits)" : "");
            fclose(f);
            top_show(frame.p, frame.len, tty, i == 0);
        } else if (!cur) {
            fprintf(stderr, "tusknetctl: %s\n", err);
        }
        jv_free(prev);
        prev = cur;
        prev_t = t;
        if (iterations > 0 && i + 1 >= iterations)
            break;
        /* wait for the next tick, reading keys */
        double next = t0 + interval;
        bool refresh = false;
        while (!g_quit && !refresh) {
            double left = next - now_mono();
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
                        g_quit = 1;
                    else if (kb[k] == ' ' || kb[k] == '\n' || kb[k] == 'r')
                        refresh = true;
                }
            }
        }
    }
    jv_free(prev);
    free(frame.p);
    ctl_close(&c);
    restore_terminal();
    return rc;
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
          "  send ID MESSAGE            push a message to one connection\n"
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
    const char *env = getenv("TUSKNETCTL_SOCKET");
    if (env && *env)
        g_socket = env;

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
            g_socket = v;
        else if ((v = opt_value(argc, argv, &i, "-t", "--timeout")))
            g_timeout = parse_seconds("--timeout", v, true);
        else
            usage_error("unknown option '%s'", a);
    }
    if (i >= argc)
        usage_error("no command given");
    const char *cmdname = argv[i++];
    const ctl_command *cmd = find_command(cmdname);
    if (!cmd)
        usage_error("unknown command '%s'", cmdname);

    /* the command's arguments; for commands without free text, options may
     * also follow the command (tusknetctl stats --json) */
    static char **args; /* static: still reachable when a usage error exits */
    args = xcalloc((size_t)argc + 1, sizeof(char *));
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
                g_socket = v;
            else if ((v = opt_value(argc, argv, &i, "-t", "--timeout")))
                g_timeout = parse_seconds("--timeout", v, true);
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
    if (!*g_socket)
        usage_error("the control socket path is empty");
    if (strlen(g_socket) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        usage_error("socket path too long: %s", g_socket);
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
    if ((strcmp(cmd->name, "close") == 0 || strcmp(cmd->name, "send") == 0) &&
        (!*args[0] || strspn(args[0], "0123456789") != strlen(args[0])))
        usage_error("connection ID must be a number, not '%s'", args[0]);
    if (strcmp(cmd->name, "log-level") == 0 && strcmp(args[0], "error") != 0 && strcmp(args[0], "warn") != 0 &&
        strcmp(args[0], "info") != 0 && strcmp(args[0], "debug") != 0)
        usage_error("log-level takes error, warn, info or debug, not '%s'", args[0]);
    for (int k = 0; k < 3; k++)
        g_args[k] = k < nargs ? args[k] : "";

    if (strcmp(cmd->name, "top") == 0) {
        free(args);
        return run_top(top_n, top_d, json);
    }

    /* the command line (static: still reachable when a usage error exits) */
    static sbuf line;
    sb_adds(&line, cmdname);
    for (int k = 0; k < nargs; k++) {
        sb_addc(&line, ' ');
        sb_adds(&line, args[k]);
    }
    free(args);
    if (strpbrk(line.p, "\r\n"))
        usage_error("a command and its arguments cannot contain line breaks");
    if (line.len > MAX_COMMAND)
        usage_error("command too long (%zu bytes, at most %d)", line.len, MAX_COMMAND);

    ctl_conn c;
    if (ctl_connect(&c, g_socket) < 0) {
        connect_failed(g_socket, errno);
        sb_free(&line);
        return 1;
    }
    bool metrics = strcmp(cmdname, "metrics") == 0;
    char err[512];
    ssize_t n = ctl_request(&c, line.p, metrics, err, sizeof(err));
    sb_free(&line);
    if (n < 0) {
        fprintf(stderr, "tusknetctl: %s\n", err);
        ctl_close(&c);
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
        jv *a = json_parse(ans, (size_t)n, perr, sizeof(perr));
        if (json) {
            fwrite(ans, 1, (size_t)n, stdout);
            fputc('\n', stdout);
        }
        if (!a || a->t != J_OBJ) {
            fprintf(stderr, "tusknetctl: invalid answer from tusknetd: %s\n", a ? "not a JSON object" : perr);
            rc = 1;
        } else if (jget(a, "ok") && !jbool(a, "ok")) {
            const char *e = jstr(a, "error", "tusknetd answered an error");
            /* a refused reload's FILE:LINE:COL lines as the daemon wrote
             * them (so editors and `systemctl reload`'s journal show them
             * as they are), then what it means */
            if (strcmp(cmd->name, "reload") == 0 && jget(a, "reloads_refused"))
                fprintf(stderr, "%s\ntusknetctl: reload refused; tusknetd keeps the running configuration\n", e);
            else
                fprintf(stderr, "tusknetctl: %s\n", e);
            rc = 1;
        } else if (!json) {
            if (cmd->show)
                rc = cmd->show(a, stdout);
            else
                rc = show_ok(cmdname, a, stdout);
        }
        jv_free(a);
    }
    ctl_close(&c);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "tusknetctl: writing the output: %s\n", strerror(errno));
        return 1;
    }
    return rc;
}
