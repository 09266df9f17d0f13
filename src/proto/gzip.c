/* SPDX-License-Identifier: MIT */
/* gzip.c - the gzip middleware: compressing handler bodies and files.
 *
 * A handler's body is in memory already and is compressed in one go with a
 * deflate stream the instance keeps and resets. A file body (the file
 * handler's descriptor) is compressed when its type is text: up to
 * INLINE_MAX it is read and compressed at once, which keeps a
 * Content-Length; a larger file becomes a stream (http.h) that reads and
 * deflates a bounded piece each time the connection's output has drained,
 * sent chunked to HTTP/1.1 clients and ended by the close for HTTP/1.0.
 * A download therefore costs its deflate state and one input block,
 * whatever the file's size, and a slow reader holds no more than that.
 *
 * Around it: Vary: Accept-Encoding on every response of a type that could
 * be compressed, whether it was or not; a weak ETag on a compressed answer
 * and on the 304 that stands for one (the bytes differ from the file's);
 * none for 206, whose ranges are of the file's own bytes. The file handler
 * answers with a precompressed FILE.gz itself (file.c) when
 * tn_gzip_before() has found that the client takes gzip. */
#include "proto/gzip.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <zlib.h>

#include "config/schema.h"

#define TEXT_PLAIN "text/plain; charset=utf-8"
#define INLINE_MAX (64 * 1024) /* larger files are compressed while they are sent */
#define BLOCK (64 * 1024)      /* file bytes read at a time */
#define PIECE_IN (256 * 1024)  /* input per piece before a sync flush forces output out */
#define PIECE_OUT (32 * 1024)  /* a piece ends once it holds this much */
#define OUT_STEP 16384
/* 15 bits of window + 16: a gzip wrapper rather than zlib's */
#define GZIP_WBITS 31

struct tn_gzip {
    size_t min_size;
    int level;
    tn_strlist skip;
    z_stream zs;
    bool zs_ready;
    struct evbuffer *out;
};

tn_gzip *tn_gzip_new(const tn_middleware_conf *c)
{
    tn_gzip *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->min_size = c->min_size > 0 ? (size_t)c->min_size : 0;
    g->level = (int)c->level;
    if (!(g->out = evbuffer_new()) || tn_strlist_copy(&g->skip, &c->skip_types) < 0) {
        tn_gzip_free(g);
        return NULL;
    }
    return g;
}

void tn_gzip_free(tn_gzip *g)
{
    if (!g)
        return;
    if (g->zs_ready)
        deflateEnd(&g->zs);
    if (g->out)
        evbuffer_free(g->out);
    tn_strlist_free(&g->skip);
    free(g);
}

/* ---- what to compress ---------------------------------------------------------- */

/* A q-value in thousandths ("0.5" -> 500); malformed counts as 1. */
static int parse_q(const char *p, const char *end)
{
    int q = 0, scale = 1000;
    if (p < end && (*p == '0' || *p == '1')) {
        q = (*p++ - '0') * 1000;
        if (p < end && *p == '.') {
            p++;
            for (int i = 0; i < 3 && p < end && *p >= '0' && *p <= '9'; i++, p++) {
                scale /= 10;
                q += (*p - '0') * scale;
            }
        }
        return q > 1000 ? 1000 : q;
    }
    return 1000;
}

bool tn_gzip_accepted(const char *ae)
{
    int q_gzip = -1, q_star = -1, q_id = -1;
    for (const char *p = ae; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *e = strchrnul(p, ',');
        const char *ne = p;
        while (ne < e && *ne != ';' && *ne != ' ' && *ne != '\t')
            ne++;
        size_t nlen = (size_t)(ne - p);
        int q = 1000;
        for (const char *s = ne; s < e; s++) {
            if (*s != ';')
                continue;
            s++;
            while (s < e && (*s == ' ' || *s == '\t'))
                s++;
            if (s + 1 < e && (s[0] == 'q' || s[0] == 'Q') && s[1] == '=') {
                q = parse_q(s + 2, e);
                break;
            }
            s--;
        }
        if ((nlen == 4 && strncasecmp(p, "gzip", 4) == 0) || (nlen == 6 && strncasecmp(p, "x-gzip", 6) == 0))
            q_gzip = q;
        else if (nlen == 1 && *p == '*')
            q_star = q;
        else if (nlen == 8 && strncasecmp(p, "identity", 8) == 0)
            q_id = q;
        p = e;
    }
    int g = q_gzip >= 0 ? q_gzip : q_star >= 0 ? q_star : 0;
    return g > 0 && g >= q_id;
}

static bool client_takes_gzip(const tn_http_request *r)
{
    const char *ae = tn_http_header_get(r, "Accept-Encoding");
    return ae && tn_gzip_accepted(ae);
}

/* Length of CT's media type, without parameters. */
static size_t type_len(const char *ct)
{
    return strcspn(ct, "; \t");
}

static bool ends_with(const char *s, size_t n, const char *suffix)
{
    size_t m = strlen(suffix);
    return n >= m && strncasecmp(s + n - m, suffix, m) == 0;
}

/* Whether a skip_types entry covers CT. An entry for a whole family
 * ("image/") leaves out the family's +xml and +json types: those are text
 * (SVG is image/svg+xml). */
static bool skipped(const tn_gzip *g, const char *ct)
{
    size_t n = type_len(ct);
    bool text = ends_with(ct, n, "+xml") || ends_with(ct, n, "+json");
    for (size_t i = 0; i < g->skip.n; i++) {
        const char *s = g->skip.v[i];
        size_t sl = strlen(s);
        if (sl && strncasecmp(ct, s, sl) == 0 && !(text && s[sl - 1] == '/'))
            return true;
    }
    return false;
}

bool tn_gzip_type(const tn_gzip *g, const char *ct)
{
    static const char *const text_apps[] = {
        "application/json", "application/javascript", "application/x-javascript", "application/xml",
    };
    size_t n = type_len(ct);
    bool text = (n > 5 && strncasecmp(ct, "text/", 5) == 0) || ends_with(ct, n, "+xml") || ends_with(ct, n, "+json");
    for (size_t i = 0; !text && i < sizeof(text_apps) / sizeof(text_apps[0]); i++)
        text = strlen(text_apps[i]) == n && strncasecmp(ct, text_apps[i], n) == 0;
    return text && !skipped(g, ct);
}

/* ---- compressing ------------------------------------------------------------------- */

static bool deflate_init(z_stream *zs, int level)
{
    memset(zs, 0, sizeof(*zs));
    return deflateInit2(zs, level, Z_DEFLATED, GZIP_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK;
}

/* One deflate() into at least WANT bytes of room at the end of OUT; the
 * bytes made are added to *MADE. */
static int deflate_into(z_stream *zs, struct evbuffer *out, size_t want, int flush, size_t *made)
{
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)want, &v, 1) < 1)
        return Z_MEM_ERROR;
    zs->next_out = v.iov_base;
    zs->avail_out = (uInt)v.iov_len;
    int rc = deflate(zs, flush);
    v.iov_len -= zs->avail_out;
    *made += v.iov_len;
    evbuffer_commit_space(out, &v, 1);
    return rc;
}

/* BODY, all in memory, replaced by its gzip. */
static bool compress_body(tn_gzip *g, struct evbuffer *body)
{
    z_stream *zs = &g->zs;
    if (!g->zs_ready) {
        if (!deflate_init(zs, g->level))
            return false;
        g->zs_ready = true;
    } else if (deflateReset(zs) != Z_OK) {
        return false;
    }
    size_t len = evbuffer_get_length(body);
    unsigned char *in = evbuffer_pullup(body, -1);
    if (!in)
        return false;
    struct evbuffer *out = g->out;
    evbuffer_drain(out, evbuffer_get_length(out));
    zs->next_in = in;
    zs->avail_in = (uInt)len;
    size_t want = deflateBound(zs, (uLong)len), made = 0;
    int rc;
    do {
        rc = deflate_into(zs, out, want, Z_FINISH, &made);
        want = 4096;
    } while (rc == Z_OK);
    if (rc != Z_STREAM_END) {
        evbuffer_drain(out, evbuffer_get_length(out));
        return false;
    }
    evbuffer_drain(body, len);
    evbuffer_add_buffer(body, out);
    return true;
}

/* A small file: read into BODY and compressed there; the descriptor is
 * closed. False leaves the file body as it was. */
static bool compress_file(tn_gzip *g, tn_http_request *r, struct evbuffer *body)
{
    size_t len = (size_t)r->file_length, got = 0;
    struct evbuffer_iovec v;
    evbuffer_drain(body, evbuffer_get_length(body));
    if (evbuffer_reserve_space(body, (ev_ssize_t)len, &v, 1) < 1)
        return false;
    while (got < len) {
        ssize_t n = pread(r->file_fd, (char *)v.iov_base + got, len - got, r->file_offset + (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* an I/O error, or the file shrank since fstat */
        got += (size_t)n;
    }
    v.iov_len = got;
    evbuffer_commit_space(body, &v, 1);
    if (got < len || !compress_body(g, body)) {
        evbuffer_drain(body, evbuffer_get_length(body));
        return false;
    }
    close(r->file_fd);
    r->file_fd = -1;
    return true;
}

typedef struct gz_stream {
    tn_http_stream base;
    int fd;
    off_t off, left;
    int level;
    bool ready; /* zs initialized; deferred so that a HEAD never pays for it */
    z_stream zs;
    unsigned char *in;
} gz_stream;

/* One piece: input is read a block at a time until the piece holds
 * PIECE_OUT; input that compresses so well that PIECE_IN of it has not
 * filled a piece is flushed out, so that every piece sends something and
 * no call works through the whole file. */
static int stream_next(tn_http_stream *base, struct evbuffer *out)
{
    gz_stream *s = (gz_stream *)base;
    if (!s->ready) {
        if (!s->in && !(s->in = malloc(BLOCK)))
            return -1;
        if (!deflate_init(&s->zs, s->level))
            return -1;
        s->ready = true;
    }
    size_t fed = 0, made = 0;
    for (;;) {
        int flush = Z_NO_FLUSH;
        if (!s->zs.avail_in) {
            if (s->left > 0 && fed < PIECE_IN) {
                size_t want = s->left < BLOCK ? (size_t)s->left : BLOCK;
                ssize_t n;
                do
                    n = pread(s->fd, s->in, want, s->off);
                while (n < 0 && errno == EINTR);
                if (n <= 0)
                    return -1; /* an I/O error, or the file shrank: the body cannot be completed */
                s->off += n;
                s->left -= n;
                fed += (size_t)n;
                s->zs.next_in = s->in;
                s->zs.avail_in = (uInt)n;
            } else {
                flush = s->left > 0 ? Z_SYNC_FLUSH : Z_FINISH;
            }
        }
        int rc = deflate_into(&s->zs, out, OUT_STEP, flush, &made);
        if (rc == Z_STREAM_END)
            return 0;
        if (rc != Z_OK)
            return -1;
        if ((flush == Z_SYNC_FLUSH && s->zs.avail_out) || made >= PIECE_OUT)
            return 1;
    }
}

static void stream_free(tn_http_stream *base)
{
    gz_stream *s = (gz_stream *)base;
    if (s->ready)
        deflateEnd(&s->zs);
    free(s->in);
    close(s->fd);
    free(s);
}

/* A large file: the descriptor moves into a stream that compresses it
 * while it is sent. */
static bool stream_file(tn_gzip *g, tn_http_request *r)
{
    gz_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return false;
    s->base.next = stream_next;
    s->base.free = stream_free;
    s->fd = r->file_fd;
    s->off = r->file_offset;
    s->left = r->file_length;
    s->level = g->level;
    r->file_fd = -1;
    r->stream = &s->base;
    return true;
}

/* The compressed bytes differ from the file's: a strong validator would lie. */
static void weaken_etag(tn_http_request *r)
{
    const char *etag = tn_http_resp_header_get(r, "ETag");
    if (etag && etag[0] == '"') {
        char buf[256];
        snprintf(buf, sizeof(buf), "W/%s", etag);
        tn_http_set_header(r, "ETag", buf);
    }
}

/* A body made elsewhere (a proxied response), compressed as its pieces
 * come: each piece of the inner stream is deflated with a sync flush, so
 * what arrived goes out at once instead of waiting in zlib. */
typedef struct gz_wrap {
    tn_http_stream base;
    tn_http_stream *inner;
    bool ready, inner_done;
    int level;
    z_stream zs;
    struct evbuffer *raw;
} gz_wrap;

static int wrap_next(tn_http_stream *base, struct evbuffer *out)
{
    gz_wrap *s = (gz_wrap *)base;
    if (!s->ready) {
        if (!(s->raw = evbuffer_new()) || !deflate_init(&s->zs, s->level))
            return -1;
        s->ready = true;
    }
    s->inner->fe = base->fe; /* its maker wakes the front end through it */
    int rc = s->inner_done ? 0 : s->inner->next(s->inner, s->raw);
    if (rc < 0)
        return -1;
    if (rc == TN_HTTP_STREAM_WAIT && !evbuffer_get_length(s->raw))
        return TN_HTTP_STREAM_WAIT;
    s->inner_done = rc == 0;
    size_t len = evbuffer_get_length(s->raw), made = 0;
    s->zs.next_in = len ? evbuffer_pullup(s->raw, -1) : NULL;
    s->zs.avail_in = (uInt)len;
    int flush = s->inner_done ? Z_FINISH : Z_SYNC_FLUSH;
    for (;;) {
        int zr = deflate_into(&s->zs, out, OUT_STEP, flush, &made);
        if (zr == Z_STREAM_END) {
            evbuffer_drain(s->raw, len);
            return 0;
        }
        if (zr != Z_OK && zr != Z_BUF_ERROR)
            return -1;
        if (!s->zs.avail_in && s->zs.avail_out)
            break;
    }
    evbuffer_drain(s->raw, len);
    return 1;
}

static void wrap_free(tn_http_stream *base)
{
    gz_wrap *s = (gz_wrap *)base;
    if (s->ready)
        deflateEnd(&s->zs);
    if (s->raw)
        evbuffer_free(s->raw);
    s->inner->free(s->inner);
    free(s);
}

/* A proxied body: compressed unless its server did, its type is one we
 * skip, or it is known to be smaller than min_size. */
static void proxied_after(tn_gzip *g, tn_http_request *r, int status)
{
    const char *ctype = r->content_type && *r->content_type ? r->content_type : NULL;
    if (!ctype || !tn_gzip_type(g, ctype))
        return;
    tn_http_vary_add(r, "Accept-Encoding");
    if (status != 200 || tn_http_resp_header_get(r, "Content-Encoding") || !client_takes_gzip(r) ||
        (r->stream->has_length && r->stream->length < (uint64_t)g->min_size))
        return;
    gz_wrap *s = calloc(1, sizeof(*s));
    if (!s)
        return;
    s->base.next = wrap_next;
    s->base.free = wrap_free;
    s->inner = r->stream;
    s->level = g->level;
    r->stream = &s->base;
    tn_http_set_header(r, "Content-Encoding", "gzip");
    tn_http_remove_header(r, "Accept-Ranges");
    weaken_etag(r);
}

/* A file answer (200, 206, or the 304 standing for one), judged by the
 * file's type and size rather than by a body in memory. */
static void file_after(tn_gzip *g, tn_http_request *r, struct evbuffer *body, int status)
{
    if (!tn_gzip_type(g, r->content_type ? r->content_type : TEXT_PLAIN))
        return;
    /* a cache must key this type on Accept-Encoding, whatever was sent */
    tn_http_vary_add(r, "Accept-Encoding");
    if (tn_http_resp_header_get(r, "Content-Encoding") || (status != 200 && status != 304))
        return; /* a FILE.gz already, or a range of the file's own bytes */
    size_t size = r->file_length > 0 ? (size_t)r->file_length : 0;
    if (!size || size < g->min_size || !client_takes_gzip(r))
        return;
    if (status == 200) {
        if (!(size <= INLINE_MAX ? compress_file(g, r, body) : stream_file(g, r)))
            return;
        tn_http_set_header(r, "Content-Encoding", "gzip");
        /* ranges are served of the file's bytes, never of these */
        tn_http_remove_header(r, "Accept-Ranges");
    }
    weaken_etag(r);
}

void tn_gzip_before(tn_gzip *g, tn_http_request *r)
{
    if (!r->gzip && client_takes_gzip(r))
        r->gzip = g;
}

void tn_gzip_after(tn_gzip *g, tn_http_request *r, struct evbuffer *body)
{
    int status = r->status ? r->status : 200;
    if (r->stream && r->stream->compressible) {
        proxied_after(g, r, status);
        return;
    }
    if (r->file_fd >= 0 || r->stream || status == 304) {
        file_after(g, r, body, status);
        return;
    }
    if (status < 200 || status == 204 || status == 206)
        return;
    size_t len = evbuffer_get_length(body);
    if (!len || len < g->min_size || tn_http_resp_header_get(r, "Content-Encoding"))
        return;
    if (skipped(g, r->content_type ? r->content_type : TEXT_PLAIN))
        return;
    /* the answer depends on Accept-Encoding from here on, whatever this
     * client sent: caches must know */
    tn_http_vary_add(r, "Accept-Encoding");
    if (!client_takes_gzip(r) || !compress_body(g, body))
        return;
    tn_http_set_header(r, "Content-Encoding", "gzip");
    weaken_etag(r);
}
