/* SPDX-License-Identifier: MIT */
/* test_file_handler.c - the HTTP-only handler types (src/handlers/file.c,
 * health.c, redirect.c, metrics_handler.c), called directly through their
 * ops on hand-built requests.
 *
 * The file handler serves a scratch tree made per run: index files, a
 * directory without one, a large binary file, symlinks that stay inside the
 * root and symlinks that leave it (to /etc, to a file beside the root), a
 * FIFO. Bodies are checked by reading the descriptor the handler hands to
 * the response at the offset and length it chose. Every test ends by
 * checking that the process has exactly the descriptors it had before: a
 * 304, 404 or 416 that forgot to close its file fails here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "daemon.h"
#include "handlers/handler.h"
#include "proto/http.h"
#include "unit_util.h"
#include "version.h"

#define BIG_SIZE (1024 * 1024 + 123)

/* ---- fixture --------------------------------------------------------------- */

typedef struct fx {
    char base[PATH_MAX]; /* scratch directory, real path */
    char root[PATH_MAX]; /* base/root: what the handler serves */
    char *index_v[1];
    tn_handler h;
    int fds; /* open descriptors when the test began */
} fx;

static void puts_file(const char *dir, const char *name, const char *text)
{
    put(dir, name, text, strlen(text));
}

static void sub(const char *dir, const char *name, char *out)
{
    snprintf(out, PATH_MAX, "%s/%s", dir, name);
}

static const char *const mime_cases[][2] = {
    { "t.html", "text/html; charset=utf-8" },
    { "t.htm", "text/html; charset=utf-8" },
    { "t.css", "text/css; charset=utf-8" },
    { "t.js", "text/javascript; charset=utf-8" },
    { "t.mjs", "text/javascript; charset=utf-8" },
    { "t.json", "application/json" },
    { "t.txt", "text/plain; charset=utf-8" },
    { "t.xml", "text/xml; charset=utf-8" },
    { "t.svg", "image/svg+xml" },
    { "t.png", "image/png" },
    { "t.jpg", "image/jpeg" },
    { "t.jpeg", "image/jpeg" },
    { "t.gif", "image/gif" },
    { "t.webp", "image/webp" },
    { "t.ico", "image/x-icon" },
    { "t.wasm", "application/wasm" },
    { "t.pdf", "application/pdf" },
    { "t.zip", "application/zip" },
    { "t.gz", "application/gzip" },
    { "t.mp4", "video/mp4" },
    { "t.webm", "video/webm" },
    { "t.mp3", "audio/mpeg" },
    { "t.woff", "font/woff" },
    { "t.woff2", "font/woff2" },
    { "t.ttf", "font/ttf" },
    { "t.otf", "font/otf" },
    { "t.map", "application/json" },
    { "UPPER.CSS", "text/css; charset=utf-8" },
    { "noext", "application/octet-stream" },
    { "t.unknownext", "application/octet-stream" },
    { ".hidden", "application/octet-stream" },
    { "archive.tar.gz", "application/gzip" },
};

static int group_setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    char tmpl[] = "/tmp/tn_file_XXXXXX";
    if (!mkdtemp(tmpl) || !realpath(tmpl, f->base))
        return -1;
    snprintf(f->root, sizeof(f->root), "%s/root", f->base);
    char p[PATH_MAX], q[PATH_MAX];
    if (mkdir(f->root, 0755) < 0)
        return -1;
    puts_file(f->root, "index.html", "<h1>home</h1>\n");
    puts_file(f->root, "a.css", "body { color: red }\n");
    sub(f->root, "sub", p);
    mkdir(p, 0755);
    puts_file(p, "index.html", "<h1>sub</h1>\n");
    puts_file(p, "page.txt", "page\n");
    sub(f->root, "empty", p);
    mkdir(p, 0755);
    sub(f->root, "my dir", p);
    mkdir(p, 0755);
    sub(f->root, "alt", p);
    mkdir(p, 0755);
    puts_file(p, "index.txt", "alt index\n");
    sub(p, "index.html", q);
    mkdir(q, 0755); /* a directory named like an index file is skipped */
    unsigned char *big = malloc(BIG_SIZE);
    if (!big)
        return -1;
    for (size_t i = 0; i < BIG_SIZE; i++)
        big[i] = (unsigned char)(i * 7 + i / 251);
    put(f->root, "big.bin", big, BIG_SIZE);
    free(big);
    put(f->root, "zero.txt", "", 0);
    for (size_t i = 0; i < sizeof(mime_cases) / sizeof(mime_cases[0]); i++)
        puts_file(f->root, mime_cases[i][0], "x");
    /* beside the root, not under it */
    puts_file(f->base, "secret.txt", "secret\n");
    sub(f->root, "out_hostname", p);
    if (symlink("/etc/hostname", p) < 0)
        return -1;
    sub(f->root, "etc", p);
    if (symlink("/etc", p) < 0)
        return -1;
    sub(f->root, "secret", p);
    if (symlink("../secret.txt", p) < 0)
        return -1;
    sub(f->base, "secret.txt", q);
    sub(f->root, "secret_abs", p);
    if (symlink(q, p) < 0)
        return -1;
    sub(f->root, "alias.css", p);
    if (symlink("a.css", p) < 0)
        return -1;
    sub(f->root, "sub/up.css", p);
    if (symlink("../a.css", p) < 0)
        return -1;
    sub(f->root, "subalias", p);
    if (symlink("sub", p) < 0)
        return -1;
    sub(f->root, "dangling", p);
    if (symlink("nowhere", p) < 0)
        return -1;
    sub(f->root, "fifo", p);
    if (mkfifo(p, 0644) < 0)
        return -1;

    file_handler(&f->h, f->root, f->index_v);
    char err[256] = "";
    if (tn_file_ops.init && tn_file_ops.init(&f->h, err, sizeof(err)) < 0) {
        fprintf(stderr, "init: %s\n", err);
        return -1;
    }
    *state = f;
    return 0;
}

static int group_teardown(void **state)
{
    fx *f = *state;
    int rc = remove_tree(f->base);
    if (f->h.ops->destroy)
        f->h.ops->destroy(&f->h);
    free(f);
    return rc;
}

static int test_setup(void **state)
{
    fx *f = *state;
    f->fds = count_fds();
    return 0;
}

static int test_teardown(void **state)
{
    fx *f = *state;
    assert_int_equal(count_fds(), f->fds);
    return 0;
}

/* ---- requests -------------------------------------------------------------- */

typedef struct treq {
    tn_http_request r;
    tn_http_header hdrs[8];
    tn_route_conf rc;
    tn_http_route route;
    struct evbuffer *out;
    tn_result res;
} treq;

static treq *mk(const char *method, const char *path)
{
    treq *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    t->r.method = method;
    t->r.path = path;
    t->r.target = path;
    t->r.query = "";
    t->r.http_major = 1;
    t->r.http_minor = 1;
    t->r.head = strcmp(method, "HEAD") == 0;
    t->r.headers = t->hdrs;
    t->r.file_fd = -1;
    t->out = evbuffer_new();
    assert_non_null(t->out);
    return t;
}

static void hdr(treq *t, const char *name, const char *value)
{
    assert_true(t->r.nheaders < 8);
    t->hdrs[t->r.nheaders++] = (tn_http_header){ name, value };
}

static void on_route(treq *t, const char *pattern)
{
    t->rc.path = (char *)pattern;
    t->rc.method = "*";
    t->route.conf = &t->rc;
    t->r.route = &t->route;
}

static tn_result run(treq *t, tn_handler *h)
{
    tn_call call = { .handler = h, .payload = "", .len = 0, .out = t->out };
    call.ctx.protocol = TN_PROTO_HTTP;
    call.ctx.http = &t->r;
    t->res = h->ops->handle(h, &call);
    return t->res;
}

static const char *resp(treq *t, const char *name)
{
    return tn_http_resp_header_get(&t->r, name);
}

/* The body written into out, as a string (valid until done()). */
static const char *body(treq *t)
{
    evbuffer_add(t->out, "", 1);
    return (const char *)evbuffer_pullup(t->out, -1);
}

static void done(treq *t)
{
    if (t->r.file_fd >= 0)
        close(t->r.file_fd);
    free_arena(&t->r);
    evbuffer_free(t->out);
    free(t);
}

/* The file body the response would send equals DATA. */
static void assert_file_body(treq *t, const void *data, size_t len)
{
    assert_true(t->r.file_fd >= 0);
    assert_int_equal((size_t)t->r.file_length, len);
    char *buf = malloc(len + 1);
    assert_non_null(buf);
    ssize_t n = pread(t->r.file_fd, buf, len + 1, t->r.file_offset);
    assert_true(n >= (ssize_t)len);
    assert_memory_equal(buf, data, len);
    free(buf);
}

static void big_bytes(unsigned char *buf, size_t off, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)((off + i) * 7 + (off + i) / 251);
}

static void assert_big_range(treq *t, size_t off, size_t len)
{
    assert_int_equal((size_t)t->r.file_offset, off);
    assert_int_equal((size_t)t->r.file_length, len);
    unsigned char *want = malloc(len ? len : 1);
    assert_non_null(want);
    big_bytes(want, off, len);
    assert_file_body(t, want, len);
    free(want);
}

/* One request, its status checked; the caller looks further and done()s. */
static treq *get(fx *f, const char *method, const char *path, int status)
{
    treq *t = mk(method, path);
    assert_int_equal(run(t, &f->h), TN_REPLY);
    assert_int_equal(t->r.status, status);
    return t;
}

static void expect_404(fx *f, const char *path)
{
    treq *t = get(f, "GET", path, 404);
    assert_int_equal(t->r.file_fd, -1);
    assert_string_equal(body(t), "Not Found\n");
    done(t);
}

/* ---- file: serving --------------------------------------------------------- */

static void test_serves_file(void **state)
{
    fx *f = *state;
    treq *t = get(f, "GET", "/a.css", 200);
    assert_string_equal(t->r.content_type, "text/css; charset=utf-8");
    assert_int_equal(t->r.file_offset, 0);
    assert_file_body(t, "body { color: red }\n", 20);
    /* the body goes by file_fd: nothing in out */
    assert_int_equal(evbuffer_get_length(t->out), 0);
    int fl = fcntl(t->r.file_fd, F_GETFD);
    assert_true(fl & FD_CLOEXEC);
    assert_int_equal(fcntl(t->r.file_fd, F_GETFL) & O_ACCMODE, O_RDONLY);
    assert_string_equal(resp(t, "Accept-Ranges"), "bytes");

    /* validators describe the file */
    char p[PATH_MAX];
    struct stat st;
    sub(f->root, "a.css", p);
    assert_int_equal(stat(p, &st), 0);
    char want[128], lm[64];
    snprintf(want, sizeof(want), "\"%llx-%llx-%llx\"", (unsigned long long)st.st_ino,
             (unsigned long long)st.st_mtim.tv_sec * 1000000000ull + (unsigned long long)st.st_mtim.tv_nsec,
             (unsigned long long)st.st_size);
    assert_string_equal(resp(t, "ETag"), want);
    struct tm tm;
    gmtime_r(&st.st_mtime, &tm);
    strftime(lm, sizeof(lm), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    assert_string_equal(resp(t, "Last-Modified"), lm);
    done(t);

    t = get(f, "GET", "/big.bin", 200);
    assert_string_equal(t->r.content_type, "application/octet-stream");
    assert_big_range(t, 0, BIG_SIZE);
    done(t);

    /* an empty file: a 200 with an empty body */
    t = get(f, "GET", "/zero.txt", 200);
    assert_true(t->r.file_fd >= 0);
    assert_int_equal(t->r.file_length, 0);
    done(t);

    /* hidden files are served, as nginx does */
    t = get(f, "GET", "/.hidden", 200);
    assert_file_body(t, "x", 1);
    done(t);
}

static void test_mime_types(void **state)
{
    fx *f = *state;
    for (size_t i = 0; i < sizeof(mime_cases) / sizeof(mime_cases[0]); i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "/%s", mime_cases[i][0]);
        treq *t = get(f, "GET", path, 200);
        if (strcmp(t->r.content_type, mime_cases[i][1]) != 0)
            fail_msg("%s: got %s, want %s", path, t->r.content_type, mime_cases[i][1]);
        done(t);
    }
    treq *t = get(f, "GET", "/", 200);
    assert_string_equal(t->r.content_type, "text/html; charset=utf-8");
    done(t);
}

static void test_head(void **state)
{
    fx *f = *state;
    /* HEAD keeps the fd so that Content-Length is the file's size; http.c
     * sends no body and closes it */
    treq *t = get(f, "HEAD", "/big.bin", 200);
    assert_big_range(t, 0, BIG_SIZE);
    assert_non_null(resp(t, "ETag"));
    assert_int_equal(evbuffer_get_length(t->out), 0);
    done(t);

    /* Range is defined for GET only */
    t = mk("HEAD", "/big.bin");
    hdr(t, "Range", "bytes=0-9");
    run(t, &f->h);
    assert_int_equal(t->r.status, 200);
    assert_int_equal(t->r.file_length, BIG_SIZE);
    assert_null(resp(t, "Content-Range"));
    done(t);
}

static void test_directories(void **state)
{
    fx *f = *state;
    treq *t = get(f, "GET", "/", 200);
    assert_file_body(t, "<h1>home</h1>\n", 14);
    done(t);

    t = get(f, "GET", "/sub/", 200);
    assert_string_equal(t->r.content_type, "text/html; charset=utf-8");
    assert_file_body(t, "<h1>sub</h1>\n", 13);
    done(t);

    /* without the slash: 301 to it, the query kept */
    t = get(f, "GET", "/sub", 301);
    assert_string_equal(resp(t, "Location"), "/sub/");
    assert_int_equal(t->r.file_fd, -1);
    assert_string_equal(body(t), "Redirecting to /sub/\n");
    done(t);

    t = mk("GET", "/sub");
    t->r.query = "a=1&b=2";
    run(t, &f->h);
    assert_int_equal(t->r.status, 301);
    assert_string_equal(resp(t, "Location"), "/sub/?a=1&b=2");
    done(t);

    /* the decoded path is escaped again in Location */
    t = get(f, "GET", "/my dir", 301);
    assert_string_equal(resp(t, "Location"), "/my%20dir/");
    done(t);

    /* no index: 404, never a listing */
    expect_404(f, "/empty/");
    expect_404(f, "/my dir/");

    /* index names are tried in order; a directory named like one is not it */
    char *names[] = { "index.html", "missing.htm", "index.txt" };
    tn_handler h2 = f->h;
    h2.conf.index.v = names;
    h2.conf.index.n = 3;
    t = mk("GET", "/alt/");
    run(t, &h2);
    assert_int_equal(t->r.status, 200);
    assert_string_equal(t->r.content_type, "text/plain; charset=utf-8");
    assert_file_body(t, "alt index\n", 10);
    done(t);

    /* no index configured */
    h2.conf.index.n = 0;
    t = mk("GET", "/sub/");
    run(t, &h2);
    assert_int_equal(t->r.status, 404);
    done(t);
}

static void test_prefix_route(void **state)
{
    fx *f = *state;
    treq *t = mk("GET", "/static/a.css");
    on_route(t, "/static/*");
    run(t, &f->h);
    assert_int_equal(t->r.status, 200);
    assert_file_body(t, "body { color: red }\n", 20);
    done(t);

    t = mk("GET", "/static/sub/page.txt");
    on_route(t, "/static/*");
    run(t, &f->h);
    assert_int_equal(t->r.status, 200);
    assert_file_body(t, "page\n", 5);
    done(t);

    t = mk("GET", "/static/");
    on_route(t, "/static/*");
    run(t, &f->h);
    assert_int_equal(t->r.status, 200);
    assert_file_body(t, "<h1>home</h1>\n", 14);
    done(t);

    /* the prefix itself is the root directory: slash redirect */
    t = mk("GET", "/static");
    on_route(t, "/static/*");
    run(t, &f->h);
    assert_int_equal(t->r.status, 301);
    assert_string_equal(resp(t, "Location"), "/static/");
    done(t);

    /* a parameter in the prefix counts as one segment */
    t = mk("GET", "/u/42/files/sub/page.txt");
    on_route(t, "/u/:id/files/*");
    run(t, &f->h);
    assert_int_equal(t->r.status, 200);
    assert_file_body(t, "page\n", 5);
    done(t);

    /* a route that is not a prefix serves the whole path */
    t = mk("GET", "/a.css");
    on_route(t, "/a.css");
    run(t, &f->h);
    assert_int_equal(t->r.status, 200);
    done(t);

    /* "/static/a.css" is not under the root without the prefix route */
    expect_404(f, "/static/a.css");
}

static void test_not_found_and_escapes(void **state)
{
    fx *f = *state;
    expect_404(f, "/missing.html");
    expect_404(f, "/sub/missing");
    /* "/../etc/passwd" after http.c's normalization, or as it came */
    expect_404(f, "/etc/passwd");
    expect_404(f, "/../secret.txt");
    expect_404(f, "/sub/../../secret.txt");
    expect_404(f, "/..");
    /* a ".." segment is refused even where it would stay inside */
    expect_404(f, "/sub/../a.css");
    /* symlinks out of the root: to /etc, to a file beside the root */
    expect_404(f, "/out_hostname");
    expect_404(f, "/etc/hostname");
    expect_404(f, "/etc/");
    expect_404(f, "/etc");
    expect_404(f, "/secret");
    expect_404(f, "/secret_abs");
    expect_404(f, "/dangling");
    /* a file is not a directory */
    expect_404(f, "/a.css/");
    expect_404(f, "/a.css/x");
    /* not a regular file: 404 at once (a FIFO must not block the open) */
    expect_404(f, "/fifo");

    /* a root that went away after init */
    tn_handler h2 = f->h;
    char gone[PATH_MAX];
    snprintf(gone, sizeof(gone), "%s/nonexistent", f->base);
    h2.conf.root = gone;
    treq *t = mk("GET", "/a.css");
    run(t, &h2);
    assert_int_equal(t->r.status, 404);
    done(t);

    /* unreadable files are not found either (root reads everything) */
    if (geteuid() != 0) {
        char p[PATH_MAX];
        sub(f->root, "private.txt", p);
        puts_file(f->root, "private.txt", "no");
        chmod(p, 0);
        expect_404(f, "/private.txt");
        unlink(p);
    }
}

static void test_symlinks_inside(void **state)
{
    fx *f = *state;
    /* the type comes from the name asked for */
    treq *t = get(f, "GET", "/alias.css", 200);
    assert_string_equal(t->r.content_type, "text/css; charset=utf-8");
    assert_file_body(t, "body { color: red }\n", 20);
    done(t);

    t = get(f, "GET", "/sub/up.css", 200);
    assert_file_body(t, "body { color: red }\n", 20);
    done(t);

    t = get(f, "GET", "/subalias/", 200);
    assert_file_body(t, "<h1>sub</h1>\n", 13);
    done(t);

    t = get(f, "GET", "/subalias/page.txt", 200);
    assert_file_body(t, "page\n", 5);
    done(t);

    /* a root that is itself a symlink is followed */
    char link[PATH_MAX];
    snprintf(link, sizeof(link), "%s/rootlink", f->base);
    assert_int_equal(symlink(f->root, link), 0);
    tn_handler h2 = f->h;
    h2.conf.root = link;
    t = mk("GET", "/a.css");
    run(t, &h2);
    assert_int_equal(t->r.status, 200);
    done(t);
    t = mk("GET", "/secret");
    run(t, &h2);
    assert_int_equal(t->r.status, 404);
    done(t);
    unlink(link);
}

static void test_methods(void **state)
{
    fx *f = *state;
    const char *methods[] = { "POST", "PUT", "DELETE", "OPTIONS" };
    for (size_t i = 0; i < 4; i++) {
        treq *t = get(f, methods[i], "/a.css", 405);
        assert_string_equal(resp(t, "Allow"), "GET, HEAD");
        assert_int_equal(t->r.file_fd, -1);
        done(t);
    }
}

/* ---- file: conditional requests -------------------------------------------- */

static char *etag_of(fx *f, const char *path)
{
    treq *t = get(f, "GET", path, 200);
    char *e = strdup(resp(t, "ETag"));
    done(t);
    return e;
}

static void test_if_none_match(void **state)
{
    fx *f = *state;
    char *etag = etag_of(f, "/a.css");
    char weak[128], list[160];
    snprintf(weak, sizeof(weak), "W/%s", etag);
    snprintf(list, sizeof(list), "\"nope\", W/\"other\",%s", etag);
    const char *match[] = { etag, weak, list, "*" };
    for (size_t i = 0; i < 4; i++) {
        treq *t = mk("GET", "/a.css");
        hdr(t, "If-None-Match", match[i]);
        run(t, &f->h);
        if (t->r.status != 304)
            fail_msg("If-None-Match: %s: status %d", match[i], t->r.status);
        assert_int_equal(t->r.file_fd, -1);
        assert_int_equal(evbuffer_get_length(t->out), 0);
        assert_string_equal(resp(t, "ETag"), etag);
        done(t);
    }
    /* HEAD too */
    treq *t = mk("HEAD", "/a.css");
    hdr(t, "If-None-Match", etag);
    run(t, &f->h);
    assert_int_equal(t->r.status, 304);
    assert_int_equal(t->r.file_fd, -1);
    done(t);

    /* no match: the file; If-Modified-Since is then not looked at */
    t = mk("GET", "/a.css");
    hdr(t, "If-None-Match", "\"nope\", W/\"x\"");
    hdr(t, "If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT");
    run(t, &f->h);
    assert_int_equal(t->r.status, 200);
    assert_true(t->r.file_fd >= 0);
    done(t);

    /* another file's tag does not match */
    char *other = etag_of(f, "/index.html");
    t = mk("GET", "/a.css");
    hdr(t, "If-None-Match", other);
    run(t, &f->h);
    assert_int_equal(t->r.status, 200);
    done(t);
    free(other);
    free(etag);
}

static void test_if_modified_since(void **state)
{
    fx *f = *state;
    treq *t = get(f, "GET", "/a.css", 200);
    char lm[64];
    snprintf(lm, sizeof(lm), "%s", resp(t, "Last-Modified"));
    done(t);

    t = mk("GET", "/a.css");
    hdr(t, "If-Modified-Since", lm);
    run(t, &f->h);
    assert_int_equal(t->r.status, 304);
    assert_int_equal(t->r.file_fd, -1);
    assert_non_null(resp(t, "ETag"));
    done(t);

    t = mk("GET", "/a.css");
    hdr(t, "If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT");
    run(t, &f->h);
    assert_int_equal(t->r.status, 304);
    done(t);

    /* the obsolete forms (asctime) */
    char p[PATH_MAX], ims[64];
    struct stat st;
    sub(f->root, "a.css", p);
    assert_int_equal(stat(p, &st), 0);
    struct tm tm;
    gmtime_r(&st.st_mtime, &tm);
    strftime(ims, sizeof(ims), "%a %b %e %H:%M:%S %Y", &tm);
    t = mk("GET", "/a.css");
    hdr(t, "If-Modified-Since", ims);
    run(t, &f->h);
    assert_int_equal(t->r.status, 304);
    done(t);

    /* older than the file, or not a date: the file */
    const char *modified[] = { "Thu, 01 Jan 1970 00:00:00 GMT", "yesterday", "" };
    for (size_t i = 0; i < 3; i++) {
        t = mk("GET", "/a.css");
        hdr(t, "If-Modified-Since", modified[i]);
        run(t, &f->h);
        if (t->r.status != 200)
            fail_msg("If-Modified-Since: %s: status %d", modified[i], t->r.status);
        assert_true(t->r.file_fd >= 0);
        done(t);
    }
    /* one second before the mtime */
    time_t before = st.st_mtime - 1;
    gmtime_r(&before, &tm);
    strftime(ims, sizeof(ims), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    t = mk("GET", "/a.css");
    hdr(t, "If-Modified-Since", ims);
    run(t, &f->h);
    assert_int_equal(t->r.status, 200);
    done(t);
}

/* ---- file: ranges ---------------------------------------------------------- */

static treq *ranged(fx *f, const char *range, int status)
{
    treq *t = mk("GET", "/big.bin");
    hdr(t, "Range", range);
    run(t, &f->h);
    if (t->r.status != status)
        fail_msg("Range: %s: status %d, want %d", range, t->r.status, status);
    return t;
}

static void expect_range(fx *f, const char *range, size_t first, size_t last)
{
    treq *t = ranged(f, range, 206);
    char cr[80];
    snprintf(cr, sizeof(cr), "bytes %zu-%zu/%d", first, last, BIG_SIZE);
    assert_string_equal(resp(t, "Content-Range"), cr);
    assert_string_equal(t->r.content_type, "application/octet-stream");
    assert_big_range(t, first, last - first + 1);
    done(t);
}

static void expect_full(fx *f, const char *range)
{
    treq *t = ranged(f, range, 200);
    assert_null(resp(t, "Content-Range"));
    assert_big_range(t, 0, BIG_SIZE);
    done(t);
}

static void expect_416(fx *f, const char *path, const char *range, const char *content_range)
{
    treq *t = mk("GET", path);
    hdr(t, "Range", range);
    run(t, &f->h);
    if (t->r.status != 416)
        fail_msg("Range: %s: status %d, want 416", range, t->r.status);
    assert_int_equal(t->r.file_fd, -1);
    assert_string_equal(resp(t, "Content-Range"), content_range);
    done(t);
}

static void test_ranges(void **state)
{
    fx *f = *state;
    expect_range(f, "bytes=0-99", 0, 99);
    expect_range(f, "bytes=1000-1000", 1000, 1000);
    expect_range(f, "bytes=100-", 100, BIG_SIZE - 1);
    expect_range(f, "bytes=-500", BIG_SIZE - 500, BIG_SIZE - 1);
    expect_range(f, "bytes = 10 - 20", 10, 20);
    /* past the end is cut to it */
    expect_range(f, "bytes=5-99999999999999999999999", 5, BIG_SIZE - 1);
    expect_range(f, "bytes=-99999999", 0, BIG_SIZE - 1);
    expect_range(f, "bytes=0-", 0, BIG_SIZE - 1);

    char r[64], cr[64];
    snprintf(cr, sizeof(cr), "bytes */%d", BIG_SIZE);
    snprintf(r, sizeof(r), "bytes=%d-", BIG_SIZE);
    expect_416(f, "/big.bin", r, cr);
    expect_416(f, "/big.bin", "bytes=99999999999-", cr);
    expect_416(f, "/big.bin", "bytes=-0", cr);
    expect_416(f, "/zero.txt", "bytes=0-", "bytes */0");
    expect_416(f, "/zero.txt", "bytes=-5", "bytes */0");

    /* several ranges, another unit, bad syntax: the whole file */
    expect_full(f, "bytes=0-1,5-6");
    expect_full(f, "bytes=0-1, 5-6");
    expect_full(f, "items=0-1");
    expect_full(f, "bytes=5-1");
    expect_full(f, "bytes=-");
    expect_full(f, "bytes=a-b");
    expect_full(f, "bytes=0-1x");
    expect_full(f, "bytes 0-1");

    /* If-Range: the range only for the same representation */
    char *etag = etag_of(f, "/big.bin");
    treq *t = mk("GET", "/big.bin");
    hdr(t, "Range", "bytes=0-9");
    hdr(t, "If-Range", etag);
    run(t, &f->h);
    assert_int_equal(t->r.status, 206);
    assert_big_range(t, 0, 10);
    const char *lm = tn_http_strdup(&t->r, resp(t, "Last-Modified"), strlen(resp(t, "Last-Modified")));
    treq *t2 = mk("GET", "/big.bin");
    hdr(t2, "Range", "bytes=0-9");
    hdr(t2, "If-Range", lm);
    run(t2, &f->h);
    assert_int_equal(t2->r.status, 206);
    done(t2);
    done(t);

    char weak[128];
    snprintf(weak, sizeof(weak), "W/%s", etag);
    const char *stale[] = { "\"other\"", weak, "Thu, 01 Jan 1970 00:00:00 GMT", "garbage" };
    for (size_t i = 0; i < 4; i++) {
        t = mk("GET", "/big.bin");
        hdr(t, "Range", "bytes=0-9");
        hdr(t, "If-Range", stale[i]);
        run(t, &f->h);
        if (t->r.status != 200)
            fail_msg("If-Range: %s: status %d", stale[i], t->r.status);
        assert_big_range(t, 0, BIG_SIZE);
        done(t);
    }
    free(etag);

    /* a matching If-None-Match wins over Range */
    etag = etag_of(f, "/big.bin");
    t = mk("GET", "/big.bin");
    hdr(t, "Range", "bytes=0-9");
    hdr(t, "If-None-Match", etag);
    run(t, &f->h);
    assert_int_equal(t->r.status, 304);
    assert_int_equal(t->r.file_fd, -1);
    done(t);
    free(etag);
}

/* ---- every type refuses other protocols ------------------------------------ */

static void test_http_only(void **state)
{
    fx *f = *state;
    const tn_handler_ops *ops[] = { &tn_file_ops, &tn_health_ops, &tn_redirect_ops, &tn_metrics_ops };
    for (size_t i = 0; i < 4; i++) {
        tn_handler h = f->h;
        h.ops = ops[i];
        h.conf.location = "/x";
        struct evbuffer *out = evbuffer_new();
        tn_call call = { .handler = &h, .payload = "hi", .len = 2, .out = out };
        call.ctx.protocol = TN_PROTO_TCP;
        assert_int_equal(ops[i]->handle(&h, &call), TN_FAIL);
        char want[64];
        snprintf(want, sizeof(want), "%s handlers only serve HTTP", ops[i]->type);
        evbuffer_add(out, "", 1);
        assert_string_equal((const char *)evbuffer_pullup(out, -1), want);
        evbuffer_free(out);
    }
}

static void test_file_init(void **state)
{
    fx *f = *state;
    tn_handler h = f->h;
    char err[256] = "", p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/nonexistent", f->base);
    h.conf.root = p;
    assert_int_equal(tn_file_ops.init(&h, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "No such file or directory"));
    sub(f->root, "a.css", p);
    assert_int_equal(tn_file_ops.init(&h, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not a directory"));
}

/* ---- health, redirect, metrics --------------------------------------------- */

static void test_health(void **state)
{
    (void)state;
    tn_daemon d;
    memset(&d, 0, sizeof(d));
    int64_t t0 = tn_now_us();
    d.started_us = t0 - 2500000;
    tn_handler h = { .name = "health", .ops = &tn_health_ops, .daemon = &d };
    treq *t = mk("GET", "/health");
    assert_int_equal(run(t, &h), TN_REPLY);
    assert_int_equal(t->r.status, 200);
    assert_string_equal(t->r.content_type, "application/json");
    const char *b = body(t);
    double up = 0;
    char version[32] = "";
    int n = sscanf(b, "{\"status\":\"healthy\",\"uptime_seconds\":%lf,\"version\":\"%31[^\"]\"}", &up, version);
    if (n != 2)
        fail_msg("health body: %s", b);
    /* 2.5 s plus however long the call took (printed with three decimals) */
    assert_true(up >= 2.5 && up <= 2.5 + (double)(tn_now_us() - t0) / 1e6 + 0.0005);
    assert_string_equal(version, TN_VERSION);
    /* three decimals, then the end of the document */
    const char *dot = strchr(strstr(b, "uptime_seconds"), '.');
    assert_int_equal(strspn(dot + 1, "0123456789"), 3);
    assert_int_equal(b[strlen(b) - 1], '}');
    done(t);
}

static treq *redirect(tn_handler *h, const char *path, const char *query)
{
    treq *t = mk("GET", path);
    t->r.query = query;
    assert_int_equal(run(t, h), TN_REPLY);
    return t;
}

static void test_redirect(void **state)
{
    (void)state;
    tn_strpair hp[] = { { "Cache-Control", "no-store" }, { "Location", "/ignored" } };
    tn_handler h = { .name = "moved", .ops = &tn_redirect_ops };
    h.conf.location = "https://example.com/new{path}?{query}";
    h.conf.status = 301;
    h.conf.headers.v = hp;
    h.conf.headers.n = 2;

    treq *t = redirect(&h, "/a/b.html", "x=1&y=%20");
    assert_int_equal(t->r.status, 301);
    assert_string_equal(resp(t, "Location"), "https://example.com/new/a/b.html?x=1&y=%20");
    assert_string_equal(resp(t, "Cache-Control"), "no-store");
    assert_string_equal(body(t), "Redirecting to https://example.com/new/a/b.html?x=1&y=%20\n");
    assert_string_equal(t->r.content_type, "text/plain; charset=utf-8");
    /* exactly one Location, the configured one */
    size_t locations = 0;
    for (size_t i = 0; i < t->r.nresp; i++)
        locations += strcasecmp(t->r.resp_headers[i].name, "Location") == 0;
    assert_int_equal(locations, 1);
    done(t);

    /* the decoded path cannot break the header or change the URL */
    t = redirect(&h, "/a b\r\nSet-Cookie: x=1?#%", "q=<1>");
    assert_string_equal(resp(t, "Location"),
                        "https://example.com/new/a%20b%0D%0ASet-Cookie:%20x=1%3F%23%25?q=%3C1%3E");
    done(t);

    /* default status; no {query} in the template: the query is dropped;
     * an unknown brace stays as it is */
    tn_handler h2 = { .name = "plain", .ops = &tn_redirect_ops };
    h2.conf.location = "/login{x}";
    t = redirect(&h2, "/account", "next=1");
    assert_int_equal(t->r.status, 302);
    assert_string_equal(resp(t, "Location"), "/login{x}");
    assert_string_equal(body(t), "Redirecting to /login{x}\n");
    done(t);

    h2.conf.location = "{path}{path}";
    h2.conf.status = 308;
    t = redirect(&h2, "/p", "");
    assert_int_equal(t->r.status, 308);
    assert_string_equal(resp(t, "Location"), "/p/p");
    done(t);
}

static void test_metrics(void **state)
{
    (void)state;
    tn_daemon d;
    memset(&d, 0, sizeof(d));
    d.base = event_base_new();
    assert_non_null(d.base);
    d.started_us = tn_now_us();
    d.registry = tn_registry_new(d.base, &d);
    assert_non_null(d.registry);
    tn_handler h = { .name = "metrics", .ops = &tn_metrics_ops, .daemon = &d };
    treq *t = mk("GET", "/metrics");
    assert_int_equal(run(t, &h), TN_REPLY);
    assert_int_equal(t->r.status, 200);
    assert_string_equal(t->r.content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert_non_null(strstr(body(t), "# TYPE tusknet_uptime_seconds gauge\ntusknet_uptime_seconds "));
    done(t);
    tn_registry_free(d.registry, 0);
    event_base_free(d.base);
}

int main(void)
{
    /* a FIFO opened without O_NONBLOCK would hang the file tests: fail instead */
    alarm(120);
#define T(fn) cmocka_unit_test_setup_teardown(fn, test_setup, test_teardown)
    const struct CMUnitTest tests[] = {
        T(test_serves_file),
        T(test_mime_types),
        T(test_head),
        T(test_directories),
        T(test_prefix_route),
        T(test_not_found_and_escapes),
        T(test_symlinks_inside),
        T(test_methods),
        T(test_if_none_match),
        T(test_if_modified_since),
        T(test_ranges),
        T(test_http_only),
        T(test_file_init),
        T(test_health),
        T(test_redirect),
        T(test_metrics),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
