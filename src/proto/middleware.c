/* SPDX-License-Identifier: MIT */
/* middleware.c - the six HTTP middleware kinds: cors, gzip,
 * auth, rate_limit, access_log and headers.
 *
 * An instance is built from its [middleware] settings once per router and
 * copies what it needs, because a router outlives the config it was built
 * from while requests are in flight across a reload. Whatever can be worked
 * out in advance is: joined header values, SHA-256 digests of the accepted
 * credentials, the WWW-Authenticate values; per request the kinds only look
 * at headers. gzip's compression lives in gzip.c.
 *
 * before() runs in list order and may answer (preflight, 401, 403, 429);
 * after() runs in reverse order on every response, the handler's or an
 * earlier middleware's answer; done() runs once the response is written. */
#include "clock.h"
#include "proto/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "log.h"
#include "net/limits.h"
#include "proto/gzip.h"

#define TEXT_PLAIN "text/plain; charset=utf-8"
#define SWEEP_EVERY 1024
#define MAX_CRED 1024 /* longest Authorization credential looked at */

typedef uint8_t digest[SHA256_DIGEST_LENGTH];

struct tn_mw {
    int type;
    union {
        struct {
            tn_strlist origins;
            bool any_origin;
            bool star; /* answer "*" rather than the origin */
            bool credentials;
            char *methods;
            char *allow_headers; /* NULL: echo what the preflight asks for */
            char *expose;        /* NULL: none */
            char max_age[24];
        } cors;
        tn_gzip *gzip; /* gzip.c */
        struct {
            digest *tokens;
            size_t ntokens;
            digest *creds; /* of "user:password" */
            size_t ncreds;
            char *www_bearer, *www_basic;
        } auth;
        struct {
            double rate;
            int64_t burst;
            tn_peers peers;
            uint32_t calls;
        } rl;
        struct {
            tn_logfile *file; /* NULL: the daemon's log */
            int format;
            struct evbuffer *line;
            time_t tsec;
            char tbuf[40];
        } log;
        struct {
            tn_strmap set, add;
        } hdr;
    } u;
};

/* ---- helpers ------------------------------------------------------------------ */

static int strlist_copy(tn_strlist *dst, const tn_strlist *src)
{
    dst->n = 0;
    dst->v = calloc(src->n ? src->n : 1, sizeof(char *));
    if (!dst->v)
        return -1;
    for (size_t i = 0; i < src->n; i++) {
        if (!(dst->v[i] = strdup(src->v[i])))
            return -1;
        dst->n++;
    }
    return 0;
}

static void strlist_free(tn_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int strmap_copy(tn_strmap *dst, const tn_strmap *src)
{
    dst->n = 0;
    dst->v = calloc(src->n ? src->n : 1, sizeof(tn_strpair));
    if (!dst->v)
        return -1;
    for (size_t i = 0; i < src->n; i++) {
        dst->v[i].key = strdup(src->v[i].key);
        dst->v[i].val = strdup(src->v[i].val);
        dst->n++;
        if (!dst->v[i].key || !dst->v[i].val)
            return -1;
    }
    return 0;
}

static void strmap_free(tn_strmap *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].key);
        free(m->v[i].val);
    }
    free(m->v);
    m->v = NULL;
    m->n = 0;
}

/* LIST joined by ", "; NULL when empty (*oom set on failure). */
static char *join(const tn_strlist *list, bool *oom)
{
    if (!list->n)
        return NULL;
    size_t len = 1;
    for (size_t i = 0; i < list->n; i++)
        len += strlen(list->v[i]) + 2;
    char *s = malloc(len), *p = s;
    if (!s) {
        *oom = true;
        return NULL;
    }
    for (size_t i = 0; i < list->n; i++) {
        if (i) {
            *p++ = ',';
            *p++ = ' ';
        }
        size_t n = strlen(list->v[i]);
        memcpy(p, list->v[i], n);
        p += n;
    }
    *p = '\0';
    return s;
}

static bool is_method(const tn_http_request *r, const char *m)
{
    return strcmp(r->method, m) == 0;
}

/* A middleware's own answer: STATUS with a short text body. */
static tn_mw_result answer(tn_http_request *r, struct evbuffer *body, int status, const char *text)
{
    r->status = status;
    r->content_type = NULL;
    evbuffer_drain(body, evbuffer_get_length(body));
    if (text)
        evbuffer_add(body, text, strlen(text));
    return TN_MW_RESPOND;
}

/* ---- cors --------------------------------------------------------------------- */

static int cors_new(tn_mw *mw, const tn_middleware_conf *c)
{
    bool oom = false;
    if (strlist_copy(&mw->u.cors.origins, &c->origins) < 0)
        return -1;
    for (size_t i = 0; i < c->origins.n; i++)
        mw->u.cors.any_origin |= strcmp(c->origins.v[i], "*") == 0;
    mw->u.cors.credentials = c->credentials;
    /* with credentials browsers refuse "*": name the origin instead */
    mw->u.cors.star = mw->u.cors.any_origin && !c->credentials;
    mw->u.cors.methods = join(&c->methods, &oom);
    mw->u.cors.allow_headers = join(&c->allow_headers, &oom);
    mw->u.cors.expose = join(&c->expose_headers, &oom);
    snprintf(mw->u.cors.max_age, sizeof(mw->u.cors.max_age), "%lld", (long long)(c->max_age / 1000));
    return oom ? -1 : 0;
}

static void cors_free(tn_mw *mw)
{
    strlist_free(&mw->u.cors.origins);
    free(mw->u.cors.methods);
    free(mw->u.cors.allow_headers);
    free(mw->u.cors.expose);
}

static bool cors_allowed(const tn_mw *mw, const char *origin)
{
    if (mw->u.cors.any_origin)
        return true;
    for (size_t i = 0; i < mw->u.cors.origins.n; i++)
        if (strcasecmp(mw->u.cors.origins.v[i], origin) == 0)
            return true;
    return false;
}

static void cors_common(tn_mw *mw, tn_http_request *r, const char *origin)
{
    tn_http_set_header(r, "Access-Control-Allow-Origin", mw->u.cors.star ? "*" : origin);
    if (mw->u.cors.credentials)
        tn_http_set_header(r, "Access-Control-Allow-Credentials", "true");
    tn_http_vary_add(r, "Origin");
}

static tn_mw_result cors_before(tn_mw *mw, tn_http_request *r, struct evbuffer *body)
{
    if (!is_method(r, "OPTIONS"))
        return TN_MW_NEXT;
    const char *origin = tn_http_header_get(r, "Origin");
    if (!origin || !tn_http_header_get(r, "Access-Control-Request-Method"))
        return TN_MW_NEXT;
    if (!cors_allowed(mw, origin))
        return answer(r, body, 403, "Forbidden\n");
    answer(r, body, 204, NULL);
    cors_common(mw, r, origin);
    if (mw->u.cors.methods)
        tn_http_set_header(r, "Access-Control-Allow-Methods", mw->u.cors.methods);
    const char *ask = tn_http_header_get(r, "Access-Control-Request-Headers");
    if (mw->u.cors.allow_headers)
        tn_http_set_header(r, "Access-Control-Allow-Headers", mw->u.cors.allow_headers);
    else if (ask && *ask)
        tn_http_set_header(r, "Access-Control-Allow-Headers", ask);
    tn_http_set_header(r, "Access-Control-Max-Age", mw->u.cors.max_age);
    return TN_MW_RESPOND;
}

static void cors_after(tn_mw *mw, tn_http_request *r)
{
    const char *origin = tn_http_header_get(r, "Origin");
    if (!origin || !cors_allowed(mw, origin))
        return;
    /* set already: our own preflight answer, or the handler's choice */
    if (tn_http_resp_header_get(r, "Access-Control-Allow-Origin"))
        return;
    cors_common(mw, r, origin);
    if (mw->u.cors.expose)
        tn_http_set_header(r, "Access-Control-Expose-Headers", mw->u.cors.expose);
}

/* ---- auth --------------------------------------------------------------------- */

static char *www_value(const char *scheme, const char *realm)
{
    size_t n = strlen(scheme) + 2 * strlen(realm) + 12;
    char *s = malloc(n), *p = s;
    if (!s)
        return NULL;
    p += sprintf(p, "%s realm=\"", scheme);
    for (const char *q = realm; *q; q++) {
        if (*q == '"' || *q == '\\')
            *p++ = '\\';
        *p++ = *q;
    }
    *p++ = '"';
    *p = '\0';
    return s;
}

static int auth_new(tn_mw *mw, const tn_middleware_conf *c)
{
    const char *realm = c->realm ? c->realm : "tusknetd";
    mw->u.auth.tokens = calloc(c->tokens.n ? c->tokens.n : 1, sizeof(digest));
    mw->u.auth.creds = calloc(c->users.n ? c->users.n : 1, sizeof(digest));
    if (!mw->u.auth.tokens || !mw->u.auth.creds)
        return -1;
    for (size_t i = 0; i < c->tokens.n; i++)
        SHA256((const unsigned char *)c->tokens.v[i], strlen(c->tokens.v[i]), mw->u.auth.tokens[i]);
    mw->u.auth.ntokens = c->tokens.n;
    for (size_t i = 0; i < c->users.n; i++) {
        size_t a = strlen(c->users.v[i].key), b = strlen(c->users.v[i].val);
        char *up = malloc(a + b + 2);
        if (!up)
            return -1;
        memcpy(up, c->users.v[i].key, a);
        up[a] = ':';
        memcpy(up + a + 1, c->users.v[i].val, b + 1);
        SHA256((const unsigned char *)up, a + b + 1, mw->u.auth.creds[i]);
        OPENSSL_cleanse(up, a + b + 1);
        free(up);
    }
    mw->u.auth.ncreds = c->users.n;
    /* nothing configured still refuses everyone, with a Bearer challenge */
    if (c->tokens.n || !c->users.n)
        if (!(mw->u.auth.www_bearer = www_value("Bearer", realm)))
            return -1;
    if (c->users.n && !(mw->u.auth.www_basic = www_value("Basic", realm)))
        return -1;
    return 0;
}

static void auth_free(tn_mw *mw)
{
    free(mw->u.auth.tokens);
    free(mw->u.auth.creds);
    free(mw->u.auth.www_bearer);
    free(mw->u.auth.www_basic);
}

static int b64_value(int ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

/* Standard base64, padding optional; -1 on anything else. */
static ssize_t b64_decode(const char *s, size_t len, unsigned char *out, size_t cap)
{
    while (len && s[len - 1] == '=')
        len--;
    if (len % 4 == 1 || len / 4 * 3 + 3 > cap)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return (ssize_t)o;
}

/* Constant time over the whole list: which entry matched, if any, must
 * not show in how long the answer takes. */
static bool digest_in(const digest d, const digest *list, size_t n)
{
    int found = 0;
    for (size_t i = 0; i < n; i++)
        found |= CRYPTO_memcmp(d, list[i], sizeof(digest)) == 0;
    return found;
}

static bool auth_ok(tn_mw *mw, const char *h)
{
    while (*h == ' ' || *h == '\t')
        h++;
    const char *cred = NULL;
    bool bearer = false;
    if (strncasecmp(h, "Bearer ", 7) == 0) {
        cred = h + 7;
        bearer = true;
    } else if (strncasecmp(h, "Basic ", 6) == 0) {
        cred = h + 6;
    } else {
        return false;
    }
    while (*cred == ' ' || *cred == '\t')
        cred++;
    size_t len = strlen(cred);
    while (len && (cred[len - 1] == ' ' || cred[len - 1] == '\t'))
        len--;
    if (!len || len > MAX_CRED)
        return false;
    digest d;
    if (bearer) {
        if (!mw->u.auth.ntokens)
            return false;
        SHA256((const unsigned char *)cred, len, d);
        return digest_in(d, mw->u.auth.tokens, mw->u.auth.ntokens);
    }
    if (!mw->u.auth.ncreds)
        return false;
    unsigned char buf[MAX_CRED];
    ssize_t n = b64_decode(cred, len, buf, sizeof(buf));
    if (n <= 0 || !memchr(buf, ':', (size_t)n))
        return false;
    SHA256(buf, (size_t)n, d);
    OPENSSL_cleanse(buf, (size_t)n);
    return digest_in(d, mw->u.auth.creds, mw->u.auth.ncreds);
}

static tn_mw_result auth_before(tn_mw *mw, tn_http_request *r, struct evbuffer *body)
{
    const char *h = tn_http_header_get(r, "Authorization");
    if (h && auth_ok(mw, h))
        return TN_MW_NEXT;
    if (mw->u.auth.www_bearer)
        tn_http_add_header(r, "WWW-Authenticate", mw->u.auth.www_bearer);
    if (mw->u.auth.www_basic)
        tn_http_add_header(r, "WWW-Authenticate", mw->u.auth.www_basic);
    return answer(r, body, 401, "Unauthorized\n");
}

/* ---- rate_limit ------------------------------------------------------------------ */

static int rl_new(tn_mw *mw, const tn_middleware_conf *c)
{
    mw->u.rl.rate = c->rate;
    mw->u.rl.burst = c->burst;
    return tn_peers_init(&mw->u.rl.peers);
}

static tn_mw_result rl_before(tn_mw *mw, tn_http_request *r, struct evbuffer *body)
{
    double rate = mw->u.rl.rate;
    if (rate <= 0 || !r->remote_ip)
        return TN_MW_NEXT;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, r->remote_ip, &s4->sin_addr) == 1)
        s4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, r->remote_ip, &s6->sin6_addr) == 1)
        s6->sin6_family = AF_INET6;
    else
        return TN_MW_NEXT; /* not an IP peer (a Unix socket): nothing to key on */
    int64_t now = tn_now_us();
    if (++mw->u.rl.calls % SWEEP_EVERY == 0)
        tn_peers_sweep(&mw->u.rl.peers, now / 1000000, now);
    tn_peer *p = tn_peers_get(&mw->u.rl.peers, (struct sockaddr *)&ss);
    if (!p || tn_peer_take_token(p, rate, mw->u.rl.burst, now))
        return TN_MW_NEXT;
    double wait = ceil((1.0 - p->tokens) / rate);
    if (wait < 1)
        wait = 1;
    if (wait > 86400)
        wait = 86400;
    char buf[24];
    snprintf(buf, sizeof(buf), "%d", (int)wait);
    tn_http_set_header(r, "Retry-After", buf);
    return answer(r, body, 429, "Too Many Requests\n");
}

/* ---- access_log ------------------------------------------------------------------ */

/* A file is opened through the daemon's list of log files, which SIGUSR1
 * reopens (logrotate). */
static int log_new(tn_mw *mw, tn_daemon *d, const tn_middleware_conf *c, char *err, size_t errlen)
{
    mw->u.log.format = c->format;
    mw->u.log.tsec = -1;
    mw->u.log.line = evbuffer_new();
    if (!mw->u.log.line)
        return -1;
    const char *file = c->file ? c->file : "-";
    if (strcmp(file, "-") != 0) {
        mw->u.log.file = tn_logfile_open(&d->logfiles, file);
        if (!mw->u.log.file) {
            snprintf(err, errlen, "cannot open access log '%s': %s", file, strerror(errno));
            return -1;
        }
    }
    return 0;
}

int tn_mw_check(const tn_middleware_conf *conf, char *err, size_t errlen)
{
    const char *file = conf->file;
    if (conf->type != TN_MW_ACCESS_LOG || !file || strcmp(file, "-") == 0)
        return 0;
    /* Without O_CREAT: a check leaves no file behind (log_new() creates it).
     * O_NONBLOCK: a FIFO without a reader must not hang the check. */
    int fd = open(file, O_WRONLY | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    if (errno != ENOENT) {
        snprintf(err, errlen, "cannot open access log '%s': %s", file, strerror(errno));
        return -1;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", file);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    else
        snprintf(dir, sizeof(dir), ".");
    if (access(dir, W_OK | X_OK) < 0) {
        snprintf(err, errlen, "cannot create access log '%s': %s: %s", file, dir, strerror(errno));
        return -1;
    }
    return 0;
}

static void log_free(tn_mw *mw)
{
    tn_logfile_close(mw->u.log.file);
    if (mw->u.log.line)
        evbuffer_free(mw->u.log.line);
}

/* Combined-format quoting as nginx does it, so a line can neither be split
 * nor forged. */
static void add_clf(struct evbuffer *out, const char *s)
{
    if (!s || !*s)
        evbuffer_add(out, "-", 1);
    else
        tn_log_escape(out, s, strlen(s), TN_ESC_CLF);
}

/* A JSON member; bytes that are not UTF-8 (a decoded path may hold any)
 * become U+FFFD so that the line stays valid JSON. */
static void add_json(struct evbuffer *out, const char *key, const char *s)
{
    evbuffer_add_printf(out, ",\"%s\":", key);
    tn_json_escape(out, s ? s : "", s ? strlen(s) : 0);
}

static void log_done(tn_mw *mw, tn_http_request *r, uint64_t bytes)
{
    struct evbuffer *out = mw->u.log.line;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (tv.tv_sec != mw->u.log.tsec) {
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        strftime(mw->u.log.tbuf, sizeof(mw->u.log.tbuf),
                 mw->u.log.format == TN_LOGFMT_JSON ? "%Y-%m-%dT%H:%M:%S" : "%d/%b/%Y:%H:%M:%S +0000", &tm);
        mw->u.log.tsec = tv.tv_sec;
    }
    int status = r->status ? r->status : 200;
    const char *ua = tn_http_header_get(r, "User-Agent");
    const char *ref = tn_http_header_get(r, "Referer");
    const char *ip = r->remote_ip ? r->remote_ip : "-";
    if (mw->u.log.format == TN_LOGFMT_JSON) {
        evbuffer_add_printf(out, "{\"time\":\"%s.%03dZ\"", mw->u.log.tbuf, (int)(tv.tv_usec / 1000));
        add_json(out, "remote", ip);
        add_json(out, "method", r->method);
        add_json(out, "path", r->path);
        add_json(out, "query", r->query);
        /* seconds with microseconds, like nginx's $request_time with more
         * digits: from the head to the response handed to the connection */
        int64_t us = r->started_us ? tn_now_us() - r->started_us : 0;
        if (us < 0)
            us = 0;
        evbuffer_add_printf(out, ",\"status\":%d,\"bytes\":%llu,\"request_time\":%lld.%06lld", status,
                            (unsigned long long)bytes, (long long)(us / 1000000), (long long)(us % 1000000));
        add_json(out, "user_agent", ua);
        add_json(out, "referer", ref);
        evbuffer_add(out, "}", 1);
    } else {
        evbuffer_add_printf(out, "%s - - [%s] \"", ip, mw->u.log.tbuf);
        add_clf(out, r->method);
        evbuffer_add(out, " ", 1);
        add_clf(out, r->target ? r->target : r->path);
        evbuffer_add_printf(out, " HTTP/%d.%d\" %d %llu \"", r->http_major, r->http_minor, status,
                            (unsigned long long)bytes);
        add_clf(out, ref);
        evbuffer_add(out, "\" \"", 3);
        add_clf(out, ua);
        evbuffer_add(out, "\"", 1);
    }
    if (!mw->u.log.file) {
        evbuffer_add(out, "", 1);
        tn_info("%s", (const char *)evbuffer_pullup(out, -1));
    } else {
        evbuffer_add(out, "\n", 1);
        size_t len = evbuffer_get_length(out);
        tn_logfile_write(mw->u.log.file, evbuffer_pullup(out, -1), len);
    }
    evbuffer_drain(out, evbuffer_get_length(out));
}

/* ---- headers ---------------------------------------------------------------------- */

static int hdr_new(tn_mw *mw, const tn_middleware_conf *c)
{
    if (strmap_copy(&mw->u.hdr.set, &c->set) < 0)
        return -1;
    return strmap_copy(&mw->u.hdr.add, &c->add);
}

static void hdr_after(tn_mw *mw, tn_http_request *r)
{
    for (size_t i = 0; i < mw->u.hdr.set.n; i++)
        tn_http_set_header(r, mw->u.hdr.set.v[i].key, mw->u.hdr.set.v[i].val);
    for (size_t i = 0; i < mw->u.hdr.add.n; i++)
        tn_http_add_header(r, mw->u.hdr.add.v[i].key, mw->u.hdr.add.v[i].val);
}

/* ---- the interface ----------------------------------------------------------------- */

tn_mw *tn_mw_new(tn_daemon *d, const tn_middleware_conf *conf, char *err, size_t errlen)
{
    tn_mw *mw = calloc(1, sizeof(*mw));
    if (!mw) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    mw->type = conf->type;
    err[0] = '\0';
    int rc;
    switch (conf->type) {
    case TN_MW_CORS: rc = cors_new(mw, conf); break;
    case TN_MW_GZIP: rc = (mw->u.gzip = tn_gzip_new(conf)) ? 0 : -1; break;
    case TN_MW_AUTH: rc = auth_new(mw, conf); break;
    case TN_MW_RATE_LIMIT: rc = rl_new(mw, conf); break;
    case TN_MW_ACCESS_LOG: rc = log_new(mw, d, conf, err, errlen); break;
    case TN_MW_HEADERS: rc = hdr_new(mw, conf); break;
    default:
        snprintf(err, errlen, "unknown middleware type %d", conf->type);
        rc = -1;
    }
    if (rc < 0) {
        if (!err[0])
            snprintf(err, errlen, "out of memory");
        tn_mw_free(mw);
        return NULL;
    }
    return mw;
}

void tn_mw_free(tn_mw *mw)
{
    if (!mw)
        return;
    switch (mw->type) {
    case TN_MW_CORS: cors_free(mw); break;
    case TN_MW_GZIP: tn_gzip_free(mw->u.gzip); break;
    case TN_MW_AUTH: auth_free(mw); break;
    case TN_MW_RATE_LIMIT:
        if (mw->u.rl.peers.buckets)
            tn_peers_free(&mw->u.rl.peers);
        break;
    case TN_MW_ACCESS_LOG: log_free(mw); break;
    case TN_MW_HEADERS:
        strmap_free(&mw->u.hdr.set);
        strmap_free(&mw->u.hdr.add);
        break;
    default: break;
    }
    free(mw);
}

tn_mw_result tn_mw_before(tn_mw *mw, tn_http_request *r, struct evbuffer *body)
{
    switch (mw->type) {
    case TN_MW_CORS: return cors_before(mw, r, body);
    case TN_MW_AUTH: return auth_before(mw, r, body);
    case TN_MW_RATE_LIMIT: return rl_before(mw, r, body);
    case TN_MW_GZIP: tn_gzip_before(mw->u.gzip, r); return TN_MW_NEXT;
    default: return TN_MW_NEXT;
    }
}

void tn_mw_after(tn_mw *mw, tn_http_request *r, struct evbuffer *body)
{
    switch (mw->type) {
    case TN_MW_CORS: cors_after(mw, r); break;
    case TN_MW_GZIP: tn_gzip_after(mw->u.gzip, r, body); break;
    case TN_MW_HEADERS: hdr_after(mw, r); break;
    default: break;
    }
}

void tn_mw_done(tn_mw *mw, tn_http_request *r, uint64_t body_bytes)
{
    if (mw->type == TN_MW_ACCESS_LOG)
        log_done(mw, r, body_bytes);
}
