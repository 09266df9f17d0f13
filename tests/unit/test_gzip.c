/* SPDX-License-Identifier: MIT */
/* test_gzip.c - the gzip middleware's compression (src/proto/gzip.c) with
 * the file handler (src/handlers/file.c), on hand-built requests and real
 * files in a scratch directory.
 *
 * Which types count as compressible and how skip_types narrows them; what
 * happens to a file answer (small: compressed in memory with a length;
 * large: a stream whose pieces are pulled here as http.c would, each one
 * bounded and never empty, inflating to the file exactly; 206, 304, HEAD,
 * q=0); a file that shrinks while it is streamed fails the stream instead
 * of sending short; FILE.gz siblings (used only inside the root, only
 * regular files, never for ranges). Every test ends by checking that no
 * descriptor was left open. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "handlers/handler.h"
#include "proto/gzip.h"
#include "proto/http.h"
#include "unit_util.h"

#define LARGE (3 * 1024 * 1024 + 5)
#define ZEROS (10 * 1024 * 1024)
#define PIECE_MAX (128 * 1024) /* what one pull may add, at most */

typedef struct fx {
    char base[PATH_MAX], root[PATH_MAX];
    char *index_v[1];
    char *skip_v[6];
    tn_handler h;
    tn_gzip *gz;   /* defaults: min_size 256, level 6, the default skip_types */
    int fds;
} fx;

static unsigned char *text(size_t n)
{
    unsigned char *s = malloc(n);
    assert_non_null(s);
    size_t i = 0;
    for (unsigned k = 0; i < n; k++) {
        char line[96];
        int m = snprintf(line, sizeof(line), "%08u GET /item/%u 200 %u\n", k, (k * 7919u) % 100003u, (k * 31u) % 9000u);
        for (int j = 0; j < m && i < n; j++)
            s[i++] = (unsigned char)line[j];
    }
    return s;
}

static unsigned char *gzip_of(const unsigned char *in, size_t len, size_t *outlen)
{
    uLongf cap = compressBound((uLong)len) + 64;
    unsigned char *out = malloc(cap);
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    assert_int_equal(deflateInit2(&zs, 9, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = (unsigned char *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    *outlen = cap - zs.avail_out;
    deflateEnd(&zs);
    return out;
}

static int group_setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    char tmpl[] = "/tmp/tn_gzip_XXXXXX";
    if (!f || !mkdtemp(tmpl) || !realpath(tmpl, f->base))
        return -1;
    snprintf(f->root, sizeof(f->root), "%s/root", f->base);
    if (mkdir(f->root, 0755) < 0)
        return -1;
    unsigned char *t = text(LARGE);
    put(f->root, "small.txt", t, 5000);
    put(f->root, "large.txt", t, LARGE);
    put(f->root, "tiny.txt", t, 100);
    put(f->root, "pic.png", t, 5000);
    put(f->root, "pre.css", t, 4000);
    put(f->root, "out.js", t, 4000);
    put(f->root, "dir.html", t, 4000);
    size_t glen;
    unsigned char *g = gzip_of(t, 4000, &glen);
    put(f->root, "pre.css.gz", g, glen);
    put(f->base, "secret.js.gz", g, glen / 2); /* beside the root */
    free(g);
    free(t);
    unsigned char *z = calloc(1, ZEROS);
    put(f->root, "zeros.txt", z, ZEROS);
    free(z);
    char p[PATH_MAX], q[PATH_MAX];
    snprintf(p, sizeof(p), "%s/out.js.gz", f->root);
    snprintf(q, sizeof(q), "%s/secret.js.gz", f->base);
    if (symlink(q, p) < 0)
        return -1;
    snprintf(p, sizeof(p), "%s/dir.html.gz", f->root);
    if (mkdir(p, 0755) < 0)
        return -1;

    file_handler(&f->h, f->root, f->index_v);
    static const char *const skip[] = { "image/", "video/", "audio/", "application/zip", "application/gzip",
                                        "font/woff2" };
    for (size_t i = 0; i < 6; i++)
        f->skip_v[i] = (char *)skip[i];
    tn_middleware_conf c = { .min_size = 256, .level = 6, .skip_types = { f->skip_v, 6 } };
    if (!(f->gz = tn_gzip_new(&c)))
        return -1;
    *state = f;
    return 0;
}

static int group_teardown(void **state)
{
    fx *f = *state;
    int rc = remove_tree(f->base);
    tn_gzip_free(f->gz);
    free(f);
    return rc;
}

static int test_setup(void **state)
{
    ((fx *)*state)->fds = count_fds();
    return 0;
}

static int test_teardown(void **state)
{
    assert_int_equal(count_fds(), ((fx *)*state)->fds);
    return 0;
}

/* ---- requests through the file handler and gzip ------------------------------ */

typedef struct treq {
    tn_http_request r;
    tn_http_header hdrs[8];
    struct evbuffer *body;
} treq;

/* GET or HEAD PATH with NULL-terminated header pairs; the file handler
 * answers and gzip's before() and after() run around it. */
static treq *serve(fx *f, const char *method, const char *path, ...)
{
    treq *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    t->r.method = method;
    t->r.path = t->r.target = path;
    t->r.query = "";
    t->r.http_major = t->r.http_minor = 1;
    t->r.head = strcmp(method, "HEAD") == 0;
    t->r.headers = t->hdrs;
    t->r.file_fd = -1;
    va_list ap;
    va_start(ap, path);
    const char *name;
    while ((name = va_arg(ap, const char *)) != NULL) {
        t->hdrs[t->r.nheaders].name = name;
        t->hdrs[t->r.nheaders++].value = va_arg(ap, const char *);
    }
    va_end(ap);
    t->body = evbuffer_new();
    tn_gzip_before(f->gz, &t->r);
    tn_call call = { .handler = &f->h, .payload = "", .out = t->body };
    call.ctx.protocol = TN_PROTO_HTTP;
    call.ctx.http = &t->r;
    assert_int_equal(f->h.ops->handle(&f->h, &call), TN_REPLY);
    tn_gzip_after(f->gz, &t->r, t->body);
    return t;
}

static void done(treq *t)
{
    if (t->r.file_fd >= 0)
        close(t->r.file_fd);
    if (t->r.stream)
        t->r.stream->free(t->r.stream);
    free_arena(&t->r);
    evbuffer_free(t->body);
    free(t);
}

static const char *resp(treq *t, const char *name)
{
    return tn_http_resp_header_get(&t->r, name);
}

static bool varies(treq *t)
{
    const char *v = resp(t, "Vary");
    return v && strcasecmp(v, "Accept-Encoding") == 0;
}

/* T's answer is compressed: its headers say so, the file body is gone
 * (into T->body, or a stream when STREAMED). */
static void assert_compressed(treq *t, bool streamed)
{
    assert_int_equal(t->r.status, 200);
    assert_int_equal(t->r.file_fd, -1);
    assert_true(streamed ? t->r.stream != NULL : t->r.stream == NULL);
    assert_string_equal(resp(t, "Content-Encoding"), "gzip");
    assert_true(varies(t));
    assert_null(resp(t, "Accept-Ranges"));
    assert_memory_equal(resp(t, "ETag"), "W/\"", 3);
}

/* Inflates all of IN, asserting it is one whole gzip member. */
static unsigned char *gunzip(const unsigned char *in, size_t len, size_t *outlen)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    assert_int_equal(inflateInit2(&zs, 16 + 15), Z_OK);
    size_t cap = ZEROS + 1024;
    unsigned char *out = malloc(cap);
    zs.next_in = (unsigned char *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    assert_int_equal(inflate(&zs, Z_FINISH), Z_STREAM_END);
    assert_int_equal(zs.avail_in, 0);
    *outlen = cap - zs.avail_out;
    inflateEnd(&zs);
    return out;
}

/* The file under the root, whole. */
static unsigned char *slurp(fx *f, const char *name, size_t *len)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", f->root, name);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    unsigned char *b = malloc((size_t)st.st_size + 1);
    FILE *fp = fopen(p, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(b, 1, (size_t)st.st_size, fp), (size_t)st.st_size);
    fclose(fp);
    *len = (size_t)st.st_size;
    return b;
}

static void assert_inflates_to_file(fx *f, const unsigned char *gz, size_t len, const char *name)
{
    size_t n, fl;
    unsigned char *plain = gunzip(gz, len, &n);
    unsigned char *file = slurp(f, name, &fl);
    assert_int_equal(n, fl);
    assert_memory_equal(plain, file, n);
    free(plain);
    free(file);
}

/* Pulls every piece of T's stream as http.c does; returns the number of
 * pieces and leaves the whole body in T->body. */
static size_t drain_stream(treq *t)
{
    size_t pieces = 0;
    struct evbuffer *piece = evbuffer_new();
    int rc;
    do {
        rc = t->r.stream->next(t->r.stream, piece);
        assert_true(rc >= 0);
        size_t n = evbuffer_get_length(piece);
        assert_true(n > 0); /* every piece sends something: the client sees progress */
        assert_true(n <= PIECE_MAX);
        evbuffer_add_buffer(t->body, piece);
        pieces++;
    } while (rc > 0);
    evbuffer_free(piece);
    return pieces;
}

/* ---- tests --------------------------------------------------------------------- */

static void test_types(void **state)
{
    fx *f = *state;
    static const struct {
        const char *type;
        bool yes;
    } cases[] = {
        { "text/html; charset=utf-8", true },
        { "text/css", true },
        { "TEXT/PLAIN", true },
        { "text/csv", true },
        { "text/javascript; charset=utf-8", true },
        { "application/json", true },
        { "application/javascript", true },
        { "application/xml", true },
        { "application/manifest+json", true },
        { "application/atom+xml; charset=utf-8", true },
        { "image/svg+xml", true }, /* "image/" skips the family, not its XML */
        { "image/png", false },
        { "image/jpeg", false },
        { "application/octet-stream", false },
        { "application/gzip", false },
        { "application/pdf", false },
        { "application/jsonx", false },
        { "font/woff2", false },
        { "text/", false },
        { "", false },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (tn_gzip_type(f->gz, cases[i].type) != cases[i].yes)
            fail_msg("type '%s': expected %s", cases[i].type, cases[i].yes ? "compressible" : "not");

    /* skip_types entries that name types (not a family) do apply */
    char *skip[] = { "text/css", "image/svg+xml" };
    tn_middleware_conf c = { .min_size = 0, .level = 1, .skip_types = { skip, 2 } };
    tn_gzip *g = tn_gzip_new(&c);
    assert_non_null(g);
    assert_false(tn_gzip_type(g, "text/css; charset=utf-8"));
    assert_false(tn_gzip_type(g, "image/svg+xml"));
    assert_true(tn_gzip_type(g, "text/html"));
    tn_gzip_free(g);
}

static void test_small_file_in_memory(void **state)
{
    fx *f = *state;
    treq *t = serve(f, "GET", "/small.txt", "Accept-Encoding", "gzip", NULL);
    assert_compressed(t, false);
    size_t n = evbuffer_get_length(t->body);
    assert_true(n < 5000 / 2);
    assert_inflates_to_file(f, evbuffer_pullup(t->body, -1), n, "small.txt");
    done(t);

    /* HEAD compresses too: its Content-Length is the GET's */
    t = serve(f, "HEAD", "/small.txt", "Accept-Encoding", "gzip", NULL);
    assert_compressed(t, false);
    assert_int_equal(evbuffer_get_length(t->body), n);
    done(t);
}

static void test_large_file_streamed(void **state)
{
    fx *f = *state;
    treq *t = serve(f, "GET", "/large.txt", "Accept-Encoding", "x-gzip", NULL);
    assert_compressed(t, true);
    assert_int_equal(evbuffer_get_length(t->body), 0);
    size_t pieces = drain_stream(t);
    assert_true(pieces > 1);
    size_t n = evbuffer_get_length(t->body);
    assert_inflates_to_file(f, evbuffer_pullup(t->body, -1), n, "large.txt");
    done(t);

    /* 10 MB of zeros deflate to almost nothing: pieces are still cut at a
     * bounded amount of input (256 KB), each flushed out */
    t = serve(f, "GET", "/zeros.txt", "Accept-Encoding", "gzip", NULL);
    assert_compressed(t, true);
    pieces = drain_stream(t);
    assert_true(pieces >= ZEROS / (256 * 1024));
    n = evbuffer_get_length(t->body);
    assert_true(n < ZEROS / 100);
    assert_inflates_to_file(f, evbuffer_pullup(t->body, -1), n, "zeros.txt");
    done(t);

    /* HEAD: a stream that is never pulled (http.c frees it unread) */
    t = serve(f, "HEAD", "/large.txt", "Accept-Encoding", "gzip", NULL);
    assert_compressed(t, true);
    done(t);
}

static void test_file_shrinking_mid_stream_fails(void **state)
{
    fx *f = *state;
    size_t len;
    unsigned char *orig = slurp(f, "large.txt", &len);
    treq *t = serve(f, "GET", "/large.txt", "Accept-Encoding", "gzip", NULL);
    assert_non_null(t->r.stream);
    struct evbuffer *piece = evbuffer_new();
    assert_int_equal(t->r.stream->next(t->r.stream, piece), 1);
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/large.txt", f->root);
    assert_int_equal(truncate(p, 1000), 0);
    int rc;
    while ((rc = t->r.stream->next(t->r.stream, piece)) > 0)
        ;
    assert_int_equal(rc, -1); /* never a short body passed off as whole */
    evbuffer_free(piece);
    done(t);
    put(f->root, "large.txt", orig, len);
    free(orig);
}

static void test_not_compressed(void **state)
{
    fx *f = *state;
    /* no gzip, q=0, identity preferred */
    static const char *const refuse[] = { NULL, "gzip;q=0", "identity, gzip;q=0.5", "br" };
    for (size_t i = 0; i < sizeof(refuse) / sizeof(refuse[0]); i++) {
        treq *t = refuse[i] ? serve(f, "GET", "/large.txt", "Accept-Encoding", refuse[i], NULL)
                            : serve(f, "GET", "/large.txt", NULL);
        assert_true(t->r.file_fd >= 0);
        assert_null(t->r.stream);
        assert_null(resp(t, "Content-Encoding"));
        assert_true(varies(t));
        assert_string_equal(resp(t, "Accept-Ranges"), "bytes");
        assert_int_equal(resp(t, "ETag")[0], '"');
        done(t);
    }
    /* a range: identity bytes of the file */
    treq *t = serve(f, "GET", "/large.txt", "Accept-Encoding", "gzip", "Range", "bytes=10-19", NULL);
    assert_int_equal(t->r.status, 206);
    assert_true(t->r.file_fd >= 0);
    assert_int_equal(t->r.file_offset, 10);
    assert_int_equal(t->r.file_length, 10);
    assert_null(resp(t, "Content-Encoding"));
    assert_true(varies(t));
    done(t);
    /* under min_size: sent as is, still varies */
    t = serve(f, "GET", "/tiny.txt", "Accept-Encoding", "gzip", NULL);
    assert_true(t->r.file_fd >= 0);
    assert_null(resp(t, "Content-Encoding"));
    assert_true(varies(t));
    done(t);
    /* an image: as is, and nothing varies */
    t = serve(f, "GET", "/pic.png", "Accept-Encoding", "gzip", NULL);
    assert_true(t->r.file_fd >= 0);
    assert_null(resp(t, "Content-Encoding"));
    assert_null(resp(t, "Vary"));
    done(t);
}

static void test_304_etag(void **state)
{
    fx *f = *state;
    treq *t = serve(f, "GET", "/large.txt", NULL);
    char strong[128], weak[136];
    snprintf(strong, sizeof(strong), "%s", resp(t, "ETag"));
    snprintf(weak, sizeof(weak), "W/%s", strong);
    done(t);
    /* weak comparison: either form matches; the 304's tag is the one the
     * 200 would carry for this client */
    const char *tags[] = { strong, weak };
    for (size_t i = 0; i < 2; i++) {
        t = serve(f, "GET", "/large.txt", "Accept-Encoding", "gzip", "If-None-Match", tags[i], NULL);
        assert_int_equal(t->r.status, 304);
        assert_int_equal(t->r.file_fd, -1);
        assert_null(t->r.stream);
        assert_string_equal(resp(t, "ETag"), weak);
        assert_null(resp(t, "Content-Encoding"));
        assert_true(varies(t));
        done(t);
        t = serve(f, "GET", "/large.txt", "If-None-Match", tags[i], NULL);
        assert_int_equal(t->r.status, 304);
        assert_string_equal(resp(t, "ETag"), strong);
        done(t);
    }
    /* below min_size the 200 is never compressed: its tag stays strong */
    t = serve(f, "GET", "/tiny.txt", NULL);
    snprintf(strong, sizeof(strong), "%s", resp(t, "ETag"));
    done(t);
    t = serve(f, "GET", "/tiny.txt", "Accept-Encoding", "gzip", "If-None-Match", strong, NULL);
    assert_int_equal(t->r.status, 304);
    assert_string_equal(resp(t, "ETag"), strong);
    done(t);
}

static void test_gz_sibling(void **state)
{
    fx *f = *state;
    size_t glen;
    unsigned char *g = slurp(f, "pre.css.gz", &glen);
    treq *t = serve(f, "GET", "/pre.css", "Accept-Encoding", "gzip", NULL);
    assert_int_equal(t->r.status, 200);
    assert_string_equal(t->r.content_type, "text/css; charset=utf-8");
    assert_string_equal(resp(t, "Content-Encoding"), "gzip");
    assert_true(varies(t));
    assert_int_equal(resp(t, "ETag")[0], '"'); /* the .gz file's own, strong */
    assert_true(t->r.file_fd >= 0);
    assert_null(t->r.stream);
    assert_int_equal(t->r.file_length, (off_t)glen);
    unsigned char *sent = malloc(glen);
    assert_int_equal(pread(t->r.file_fd, sent, glen, t->r.file_offset), (ssize_t)glen);
    assert_memory_equal(sent, g, glen);
    free(sent);
    free(g);
    done(t);
    /* not for a client without gzip, nor for a range */
    t = serve(f, "GET", "/pre.css", NULL);
    assert_null(resp(t, "Content-Encoding"));
    assert_int_equal(t->r.file_length, 4000);
    done(t);
    t = serve(f, "GET", "/pre.css", "Accept-Encoding", "gzip", "Range", "bytes=0-9", NULL);
    assert_int_equal(t->r.status, 206);
    assert_null(resp(t, "Content-Encoding"));
    done(t);
    /* a sibling leading out of the root, or a directory: compressed on the fly instead */
    static const char *const refused[] = { "/out.js", "/dir.html" };
    for (size_t i = 0; i < 2; i++) {
        t = serve(f, "GET", refused[i], "Accept-Encoding", "gzip", NULL);
        assert_compressed(t, false);
        size_t n = evbuffer_get_length(t->body);
        assert_inflates_to_file(f, evbuffer_pullup(t->body, -1), n, refused[i] + 1);
        done(t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_types, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_small_file_in_memory, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_large_file_streamed, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_file_shrinking_mid_stream_fails, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_not_compressed, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_304_etag, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_gz_sibling, test_setup, test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
