/* SPDX-License-Identifier: MIT */
/* file.c - the file handler: static files under a root directory
 * with index files, MIME types by extension, ETag and
 * Last-Modified validators (304), single byte ranges (206/416), and no way
 * out of the root.
 *
 * The part of the URL path served is what follows the route's prefix when
 * the route's pattern ends in a slash and a star (route "/static/" + "*"
 * serves /static/a.css from ROOT/a.css), the whole path otherwise. http.c has already decoded the path and
 * resolved its dot segments; the containment check here does not rely on
 * that: the file is found with realpath(), which also follows symlinks, and
 * must lie inside realpath(root), taken per request so that a root which is
 * itself a symlink (a deploy switching releases) is followed. The opened
 * descriptor's own path is checked again, which closes the race of a
 * directory being swapped for a symlink between the two steps. Only regular
 * files and directories are opened for what they are; anything else, a
 * missing file or a permission problem all answer the same 404.
 *
 * Where the route compresses and the client takes gzip, a regular file
 * NAME.gz beside NAME, found by the same rules, is sent in its place with
 * NAME's type (nginx's gzip_static); compressing on the fly is the gzip
 * middleware's.
 *
 * The body is not read here: the open descriptor goes into r->file_fd with
 * the range to send, and from then on it belongs to the response. http.c
 * sends it with sendfile and closes it (also when the request is dropped or
 * the method is HEAD). Answers without a file body (304, 416, 404) close it
 * here and leave file_fd at -1. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "handlers/handler.h"
#include "proto/gzip.h"
#include "proto/http_msg.h"

#define TEXT_PLAIN "text/plain; charset=utf-8"

static const struct {
    const char *ext;
    const char *type;
} mime_types[] = {
    { "html", "text/html; charset=utf-8" },
    { "htm", "text/html; charset=utf-8" },
    { "css", "text/css; charset=utf-8" },
    { "js", "text/javascript; charset=utf-8" },
    { "mjs", "text/javascript; charset=utf-8" },
    { "json", "application/json" },
    { "txt", "text/plain; charset=utf-8" },
    { "xml", "text/xml; charset=utf-8" },
    { "svg", "image/svg+xml" },
    { "png", "image/png" },
    { "jpg", "image/jpeg" },
    { "jpeg", "image/jpeg" },
    { "gif", "image/gif" },
    { "webp", "image/webp" },
    { "ico", "image/x-icon" },
    { "wasm", "application/wasm" },
    { "pdf", "application/pdf" },
    { "zip", "application/zip" },
    { "gz", "application/gzip" },
    { "mp4", "video/mp4" },
    { "webm", "video/webm" },
    { "mp3", "audio/mpeg" },
    { "woff", "font/woff" },
    { "woff2", "font/woff2" },
    { "ttf", "font/ttf" },
    { "otf", "font/otf" },
    { "map", "application/json" },
};

/* By the extension of the name asked for (not of a symlink's target, as
 * nginx does); a leading dot is a hidden file, not an extension. */
static const char *mime_type(const char *name)
{
    const char *slash = strrchr(name, '/');
    const char *base = slash ? slash + 1 : name;
    const char *dot = strrchr(base, '.');
    if (dot && dot > base)
        for (size_t i = 0; i < sizeof(mime_types) / sizeof(mime_types[0]); i++)
            if (strcasecmp(dot + 1, mime_types[i].ext) == 0)
                return mime_types[i].type;
    return "application/octet-stream";
}

/* ---- finding the file ------------------------------------------------------ */

static bool inside(const char *path, const char *root, size_t rootlen)
{
    if (rootlen == 1) /* root is "/" */
        return path[0] == '/';
    return strncmp(path, root, rootlen) == 0 && (path[rootlen] == '\0' || path[rootlen] == '/');
}

static bool has_dotdot(const char *p)
{
    for (const char *s = p; (s = strstr(s, "..")); s += 2)
        if ((s == p || s[-1] == '/') && (s[2] == '\0' || s[2] == '/'))
            return true;
    return false;
}

/* Opens ROOT (a real path) + REL if the result is a regular file or a
 * directory inside ROOT; -1 otherwise. */
static int open_inside(const char *root, const char *rel, struct stat *st)
{
    char full[PATH_MAX], real[PATH_MAX];
    size_t rootlen = strlen(root);
    int n = snprintf(full, sizeof(full), "%s/%s", root, rel);
    if (n < 0 || (size_t)n >= sizeof(full) || !realpath(full, real) || !inside(real, root, rootlen))
        return -1;
    /* O_NOFOLLOW: realpath resolved every link, so one here now is a swap;
     * O_NONBLOCK: a FIFO must not hang the loop before fstat turns it away */
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return -1;
    if (fstat(fd, st) < 0 || !(S_ISREG(st->st_mode) || S_ISDIR(st->st_mode))) {
        close(fd);
        return -1;
    }
    /* where the descriptor really is (a directory above may have become a
     * symlink since realpath); without /proc the realpath check stands */
    char proc[64], now[PATH_MAX];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    ssize_t len = readlink(proc, now, sizeof(now) - 1);
    if (len >= 0) {
        now[len] = '\0';
        if (!inside(now, root, rootlen)) {
            close(fd);
            return -1;
        }
    }
    return fd;
}

/* ---- validators ------------------------------------------------------------ */

/* IMF-fixdate, and the two obsolete forms recipients must accept. */
static bool parse_http_date(const char *s, time_t *out)
{
    static const char *const formats[] = {
        "%a, %d %b %Y %H:%M:%S GMT",
        "%A, %d-%b-%y %H:%M:%S GMT",
        "%a %b %e %H:%M:%S %Y",
    };
    while (*s == ' ' || *s == '\t')
        s++;
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        const char *end = strptime(s, formats[i], &tm);
        if (!end)
            continue;
        while (*end == ' ' || *end == '\t')
            end++;
        if (*end)
            continue;
        *out = timegm(&tm);
        return *out != (time_t)-1;
    }
    return false;
}

/* If-None-Match: a list of entity tags or "*", compared weakly (W/ is
 * ignored on both sides). */
static bool etag_list_match(const char *list, const char *etag)
{
    size_t elen = strlen(etag);
    const char *p = list;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            return false;
        if (*p == '*')
            return true;
        if (p[0] == 'W' && p[1] == '/')
            p += 2;
        if (*p != '"') { /* not an entity tag: skip to the next one */
            while (*p && *p != ',')
                p++;
            continue;
        }
        const char *q = strchr(p + 1, '"');
        if (!q)
            return false;
        if ((size_t)(q + 1 - p) == elen && memcmp(p, etag, elen) == 0)
            return true;
        p = q + 1;
    }
}

static bool not_modified(const tn_http_request *r, const char *etag, time_t mtime)
{
    /* a present If-None-Match decides alone (RFC 9110 13.2.2) */
    const char *inm = tn_http_header_get(r, "If-None-Match");
    if (inm)
        return etag_list_match(inm, etag);
    const char *ims = tn_http_header_get(r, "If-Modified-Since");
    time_t since;
    return ims && parse_http_date(ims, &since) && mtime <= since;
}

/* ---- ranges ---------------------------------------------------------------- */

enum range_kind { RANGE_NONE, RANGE_OK, RANGE_UNSATISFIABLE };

static const char *skip_ws(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

static const char *parse_num(const char *s, uint64_t *v, bool *any)
{
    *v = 0;
    *any = false;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        /* saturate: a position past any file is as good as infinity */
        *v = *v > (UINT64_MAX - d) / 10 ? UINT64_MAX : *v * 10 + d;
        *any = true;
    }
    return s;
}

/* One "bytes=a-b", "bytes=a-" or "bytes=-n" against SIZE. Several ranges, an
 * other unit or bad syntax: RANGE_NONE, the whole file is sent (RFC 9110
 * 14.2 lets a server ignore Range). */
static enum range_kind parse_range(const char *s, uint64_t size, uint64_t *first, uint64_t *last)
{
    s = skip_ws(s);
    if (strncasecmp(s, "bytes", 5) != 0)
        return RANGE_NONE;
    s = skip_ws(s + 5);
    if (*s++ != '=' || strchr(s, ','))
        return RANGE_NONE;
    uint64_t a, b;
    bool has_a, has_b;
    s = parse_num(skip_ws(s), &a, &has_a);
    s = skip_ws(s);
    if (*s++ != '-')
        return RANGE_NONE;
    s = parse_num(skip_ws(s), &b, &has_b);
    if (*skip_ws(s) || (!has_a && !has_b) || (has_a && has_b && b < a))
        return RANGE_NONE;
    if (!has_a) { /* the last b bytes */
        if (b == 0 || size == 0)
            return RANGE_UNSATISFIABLE;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return RANGE_OK;
    }
    if (a >= size)
        return RANGE_UNSATISFIABLE;
    *first = a;
    *last = !has_b || b >= size ? size - 1 : b;
    return RANGE_OK;
}

/* If-Range: the range only applies to the representation the client has
 * part of: a strong ETag equal to ours, or exactly our Last-Modified. */
static bool if_range_holds(const tn_http_request *r, const char *etag, time_t mtime)
{
    const char *ir = tn_http_header_get(r, "If-Range");
    if (!ir)
        return true;
    ir = skip_ws(ir);
    if (*ir == '"' || (ir[0] == 'W' && ir[1] == '/')) {
        size_t elen = strlen(etag);
        return strncmp(ir, etag, elen) == 0 && *skip_ws(ir + elen) == '\0';
    }
    time_t t;
    return parse_http_date(ir, &t) && t == mtime;
}

/* ---- answers --------------------------------------------------------------- */

static tn_result answer(tn_http_request *r, tn_call *call, int status, const char *text)
{
    r->status = status;
    r->content_type = TEXT_PLAIN;
    r->file_fd = -1;
    evbuffer_add_printf(call->out, "%s\n", text);
    return TN_REPLY;
}

/* A directory asked for without its slash: 301 to the same path with one,
 * keeping the query, as nginx does; relative links in its index would
 * otherwise resolve against the parent. */
static tn_result redirect_slash(tn_http_request *r, tn_call *call, const char *path)
{
    struct evbuffer *out = call->out;
    evbuffer_add(out, "Redirecting to ", 15);
    size_t start = evbuffer_get_length(out);
    tn_http_add_escaped(out, path, TN_HTTP_ESC_PATH);
    evbuffer_add(out, "/", 1);
    if (r->query && *r->query) {
        evbuffer_add(out, "?", 1);
        tn_http_add_escaped(out, r->query, TN_HTTP_ESC_QUERY);
    }
    size_t n = evbuffer_get_length(out) - start;
    const char *all = (const char *)evbuffer_pullup(out, -1);
    tn_http_set_header(r, "Location", all ? tn_http_strdup(r, all + start, n) : "/");
    evbuffer_add(out, "\n", 1);
    r->status = 301;
    r->content_type = TEXT_PLAIN;
    r->file_fd = -1;
    return TN_REPLY;
}

/* NAME.gz under ROOT, opened by the same rules as any file, when the
 * route's gzip middleware found that the client takes gzip and compresses
 * NAME's type, and the request is not for a range (ranges are of the
 * file's own bytes). -1 when there is none to serve. */
static int gz_sibling(const tn_http_request *r, const char *root, const char *name, const char *type, bool get,
                      struct stat *st)
{
    if (!r->gzip || !tn_gzip_type(r->gzip, type) || (get && tn_http_header_get(r, "Range")))
        return -1;
    char gz[PATH_MAX];
    int n = snprintf(gz, sizeof(gz), "%s.gz", name);
    if (n < 0 || (size_t)n >= sizeof(gz))
        return -1;
    int fd = open_inside(root, gz, st);
    if (fd >= 0 && !S_ISREG(st->st_mode)) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* FD (a regular file found as NAME under ROOT) with validators,
 * conditionals and ranges; its precompressed NAME.gz instead when there is
 * one to serve, with the .gz file's own validators and length. FD passes to
 * the response or is closed here. */
static tn_result serve(tn_http_request *r, tn_call *call, const char *root, int fd, const struct stat *st,
                       const char *name, bool get)
{
    const char *type = mime_type(name);
    struct stat gst;
    int gfd = gz_sibling(r, root, name, type, get, &gst);
    if (gfd >= 0) {
        close(fd);
        fd = gfd;
        st = &gst;
        tn_http_add_header(r, "Content-Encoding", "gzip");
    }
    uint64_t size = (uint64_t)st->st_size;
    uint64_t mtime_ns = (uint64_t)st->st_mtim.tv_sec * 1000000000u + (uint64_t)st->st_mtim.tv_nsec;
    char etag[80], modified[40];
    snprintf(etag, sizeof(etag), "\"%" PRIx64 "-%" PRIx64 "-%" PRIx64 "\"", (uint64_t)st->st_ino, mtime_ns, size);
    struct tm tm;
    gmtime_r(&st->st_mtim.tv_sec, &tm);
    strftime(modified, sizeof(modified), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    tn_http_add_header(r, "ETag", etag);
    tn_http_add_header(r, "Last-Modified", modified);
    tn_http_add_header(r, "Accept-Ranges", "bytes");
    r->content_type = type;
    r->file_offset = 0;
    /* with a 304 too: gzip weakens its ETag when the 200 would be compressed */
    r->file_length = (off_t)size;

    if (not_modified(r, etag, st->st_mtim.tv_sec)) {
        close(fd);
        r->status = 304;
        r->file_fd = -1;
        return TN_REPLY;
    }
    r->status = 200;
    /* Range is defined for GET only (RFC 9110 14.2); HEAD gets the 200 */
    const char *range = get ? tn_http_header_get(r, "Range") : NULL;
    uint64_t first = 0, last = 0;
    enum range_kind rk = range && if_range_holds(r, etag, st->st_mtim.tv_sec)
                             ? parse_range(range, size, &first, &last)
                             : RANGE_NONE;
    char cr[80];
    if (rk == RANGE_UNSATISFIABLE) {
        close(fd);
        snprintf(cr, sizeof(cr), "bytes */%" PRIu64, size);
        tn_http_add_header(r, "Content-Range", cr);
        return answer(r, call, 416, "Range Not Satisfiable");
    }
    if (rk == RANGE_OK) {
        snprintf(cr, sizeof(cr), "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, first, last, size);
        tn_http_add_header(r, "Content-Range", cr);
        r->status = 206;
        r->file_offset = (off_t)first;
        r->file_length = (off_t)(last - first + 1);
    }
    r->file_fd = fd; /* the response owns it now */
    return TN_REPLY;
}

static tn_result file_handle(tn_handler *h, tn_call *call)
{
    tn_http_request *r = call->ctx.http;
    if (!r) {
        /* the config loader refuses file on other protocols already */
        evbuffer_add_printf(call->out, "file handlers only serve HTTP");
        return TN_FAIL;
    }
    bool head = r->head || (r->method && strcmp(r->method, "HEAD") == 0);
    bool get = !head && r->method && strcmp(r->method, "GET") == 0;
    if (!get && !head) {
        /* the router answers 405 for routes limited to GET/HEAD; this is
         * for a route open to every method */
        tn_http_set_header(r, "Allow", "GET, HEAD");
        return answer(r, call, 405, "Method Not Allowed");
    }
    const char *path = r->path ? r->path : "/";
    const char *rel = tn_http_route_rest_of(r, path);
    /* ".." is already gone, but make sure */
    if (has_dotdot(rel))
        return answer(r, call, 404, "Not Found");
    while (*rel == '/')
        rel++;

    char root[PATH_MAX];
    struct stat st;
    int fd = -1;
    if (h->conf.root && realpath(h->conf.root, root))
        fd = open_inside(root, rel, &st);
    if (fd < 0)
        return answer(r, call, 404, "Not Found");
    if (S_ISREG(st.st_mode))
        return serve(r, call, root, fd, &st, rel, get);

    close(fd);
    size_t len = strlen(path);
    if (len == 0 || path[len - 1] != '/')
        return redirect_slash(r, call, path);
    /* no listings: an index file or nothing */
    size_t rlen = strlen(rel);
    for (size_t i = 0; i < h->conf.index.n; i++) {
        char name[PATH_MAX];
        const char *idx = h->conf.index.v[i];
        int n = snprintf(name, sizeof(name), "%s%s%s", rel, rlen && rel[rlen - 1] != '/' ? "/" : "", idx);
        if (n < 0 || (size_t)n >= sizeof(name) || has_dotdot(name))
            continue;
        fd = open_inside(root, name, &st);
        if (fd < 0)
            continue;
        if (S_ISREG(st.st_mode))
            return serve(r, call, root, fd, &st, name, get);
        close(fd);
    }
    return answer(r, call, 404, "Not Found");
}

int tn_file_check_root(const char *root, char *err, size_t errlen)
{
    /* a mistyped root is better found at start (or reload) than as 404s */
    struct stat st;
    if (!root || !*root) {
        snprintf(err, errlen, "root is required");
        return -1;
    }
    if (stat(root, &st) < 0) {
        snprintf(err, errlen, "root %s: %s", root, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "root %s: not a directory", root);
        return -1;
    }
    if (access(root, R_OK | X_OK) < 0) {
        snprintf(err, errlen, "root %s: %s", root, strerror(errno));
        return -1;
    }
    return 0;
}

static int file_init(tn_handler *h, char *err, size_t errlen)
{
    return tn_file_check_root(h->conf.root, err, errlen);
}

const tn_handler_ops tn_file_ops = { .type = "file", .init = file_init, .handle = file_handle };
