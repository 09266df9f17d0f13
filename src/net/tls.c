/* SPDX-License-Identifier: MIT */
/* tls.c - TLS with OpenSSL for stream listeners.
 *
 * A listener's tls block becomes one SSL_CTX, plus one per `sni` name; the
 * servername callback moves a handshake to the context of the name the
 * client asked for. Everything is checked when the config is loaded (also by
 * `tusknetd -t` and before a reload is applied), so a certificate that does
 * not load never replaces one that serves.
 *
 * Connections do TLS on their own nonblocking socket with SSL_read and
 * SSL_write (see conn.c for why there are no bufferevents). Buffers are
 * released while a connection is idle (SSL_MODE_RELEASE_BUFFERS): an idle
 * TLS connection then costs its SSL object and little else.
 *
 * Session tickets are encrypted with keys OpenSSL makes for each SSL_CTX:
 * every load of the config builds new contexts, so a reload rotates them.
 *
 * OpenSSL's error queue is per thread and this daemon has one: every failure
 * path clears it, so that one connection's error cannot be read as
 * another's. */
#include "net/tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "metrics.h"

#define TLS_CHUNK 16384 /* plaintext per SSL_write: one full record */

/* The default TLS 1.2 list: forward secret AEAD suites only, Mozilla's
 * "intermediate" profile. OpenSSL's own default still has static-RSA key
 * exchange and CBC suites. The DHE suites are what IE 11 on Windows 7 and
 * 8.1 can use with an RSA certificate (their ECDHE suites are all CBC); DH
 * groups come with the certificate's strength (SSL_CTX_set_dh_auto). TLS
 * 1.3 suites are all forward secret: OpenSSL's default stays. */
#define DEFAULT_CIPHERS                                                                                            \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"                    \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                      \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
/* TLS 1.0 and 1.1 know no AEAD suite: a min_version below 1.2 adds the
 * forward secret CBC ones, still no static RSA. */
#define LEGACY_CIPHERS "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA"

typedef struct sni_ctx {
    char *name; /* lower case; "*.example.com" matches one label */
    SSL_CTX *ctx;
} sni_ctx;

struct tn_tls {
    int refs;
    SSL_CTX *ctx;
    sni_ctx *sni;
    size_t nsni;
    unsigned char alpn[256]; /* wire format: length-prefixed names */
    size_t alpn_len;
};

struct tn_tls_conn {
    SSL *ssl;
    tn_tls *tls;
    tn_tls_info info;
    bool handshaking;
    bool broken; /* a fatal error: no close_notify may follow */
};

const char *tn_tls_library_version(void)
{
    return OpenSSL_version(OPENSSL_VERSION);
}

/* The reason of the most recent OpenSSL error, and an empty queue. */
static const char *ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, len, "%s", r ? r : "unknown error");
    ERR_clear_error();
    return buf;
}

/* ---- contexts --------------------------------------------------------------- */

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    (void)ssl;
    tn_tls *t = arg;
    unsigned char *chosen = NULL;
    if (SSL_select_next_proto(&chosen, outlen, t->alpn, (unsigned int)t->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* go on without ALPN rather than fail */
    *out = chosen;
    return SSL_TLSEXT_ERR_OK;
}

static bool name_matches(const char *pattern, const char *name)
{
    if (strcasecmp(pattern, name) == 0)
        return true;
    if (pattern[0] != '*' || pattern[1] != '.')
        return false;
    const char *dot = strchr(name, '.');
    return dot && dot != name && strcasecmp(dot, pattern + 1) == 0;
}

static int on_servername(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    tn_tls *t = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name)
        return SSL_TLSEXT_ERR_OK;
    for (int wild = 0; wild < 2; wild++) {
        /* exact names first, then wildcards */
        for (size_t i = 0; i < t->nsni; i++) {
            if ((t->sni[i].name[0] == '*') != wild || !name_matches(t->sni[i].name, name))
                continue;
            SSL_set_SSL_CTX(ssl, t->sni[i].ctx);
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK; /* unknown names get the default certificate */
}

static void warn_validity(X509 *x, const char *file, tn_pos pos, tn_diag *diag)
{
    const ASN1_TIME *after = X509_get0_notAfter(x), *before = X509_get0_notBefore(x);
    char when[64] = "";
    BIO *b = BIO_new(BIO_s_mem());
    if (b) {
        ASN1_TIME_print(b, after);
        int n = BIO_read(b, when, sizeof(when) - 1);
        when[n > 0 ? n : 0] = '\0';
        BIO_free(b);
    }
    if (X509_cmp_current_time(after) < 0)
        tn_diag_warn(diag, pos, "certificate %s expired on %s", file, when);
    else if (X509_cmp_current_time(before) > 0)
        tn_diag_warn(diag, pos, "certificate %s is not valid yet", file);
}

static bool load_chain(SSL_CTX *ctx, const char *file, tn_pos pos, tn_diag *diag)
{
    BIO *b = BIO_new_file(file, "r");
    if (!b) {
        char why[160];
        tn_diag_error(diag, pos, "cannot read chain %s: %s", file, ssl_reason(why, sizeof(why)));
        return false;
    }
    int n = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
        if (!SSL_CTX_add0_chain_cert(ctx, x)) {
            X509_free(x);
            break;
        }
        n++;
    }
    ERR_clear_error(); /* the end of the file reads as an error */
    BIO_free(b);
    if (n == 0)
        tn_diag_error(diag, pos, "chain %s holds no PEM certificate", file);
    return n > 0;
}

/* One context: the settings of the tls block with certificate CERT and key
 * KEY (the block's own, or an sni entry's). */
static SSL_CTX *make_ctx(tn_tls *t, const tn_tls_conf *tc, const char *cert, tn_pos cert_pos, const char *key,
                         tn_pos key_pos, const char *listener, tn_diag *diag)
{
    static const int versions[] = { TLS1_VERSION, TLS1_1_VERSION, TLS1_2_VERSION, TLS1_3_VERSION };
    char why[160];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        tn_diag_error(diag, tc->pos, "listener '%s': cannot create a TLS context: %s", listener,
                      ssl_reason(why, sizeof(why)));
        return NULL;
    }
    int errors = tn_diag_errors(diag);
    SSL_CTX_set_min_proto_version(ctx, versions[tc->min_version]);
    if (tc->min_version < TN_TLS_1_2)
        SSL_CTX_set_security_level(ctx, 0); /* OpenSSL 3 refuses TLS 1.0/1.1 above level 0 */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
    if (!tc->session_tickets) {
        /* no resumption at all: without tickets OpenSSL would still resume
         * from its session cache (and TLS 1.3 would hand out stateful tickets) */
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* read what the socket has in one recv, not a record header and then its body */
    SSL_CTX_set_read_ahead(ctx, 1);
    /* sessions are cached per listener: a session of one may not resume on another */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)listener,
                                   (unsigned int)(strlen(listener) > SSL_MAX_SID_CTX_LENGTH ? SSL_MAX_SID_CTX_LENGTH
                                                                                            : strlen(listener)));
    if (*tc->ciphers && !SSL_CTX_set_cipher_list(ctx, tc->ciphers))
        tn_diag_error(diag, tc->ciphers_pos, "no usable cipher in '%s': %s", tc->ciphers, ssl_reason(why, sizeof(why)));
    if (!*tc->ciphers)
        SSL_CTX_set_cipher_list(ctx, tc->min_version < TN_TLS_1_2 ? DEFAULT_CIPHERS ":" LEGACY_CIPHERS
                                                                  : DEFAULT_CIPHERS);
    SSL_CTX_set_dh_auto(ctx, 1);
    if (*tc->ciphersuites && !SSL_CTX_set_ciphersuites(ctx, tc->ciphersuites))
        tn_diag_error(diag, tc->ciphersuites_pos, "no usable TLS 1.3 cipher suite in '%s': %s", tc->ciphersuites,
                      ssl_reason(why, sizeof(why)));
    bool have_cert = SSL_CTX_use_certificate_chain_file(ctx, cert) == 1;
    if (!have_cert)
        tn_diag_error(diag, cert_pos, "cannot load certificate %s: %s", cert, ssl_reason(why, sizeof(why)));
    else
        warn_validity(SSL_CTX_get0_certificate(ctx), cert, cert_pos, diag);
    if (have_cert && *tc->chain)
        load_chain(ctx, tc->chain, tc->chain_pos, diag);
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        /* OpenSSL compares the key with the certificate as it loads it */
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
            ERR_clear_error();
            tn_diag_error(diag, key_pos, "private key %s does not match certificate %s", key, cert);
        } else {
            tn_diag_error(diag, key_pos, "cannot load private key %s: %s", key, ssl_reason(why, sizeof(why)));
        }
    } else if (have_cert && SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        tn_diag_error(diag, key_pos, "private key %s does not match certificate %s", key, cert);
    }
    if (*tc->client_ca) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(tc->client_ca);
        if (!names || SSL_CTX_load_verify_locations(ctx, tc->client_ca, NULL) != 1) {
            tn_diag_error(diag, tc->client_ca_pos, "cannot load client CA %s: %s", tc->client_ca,
                          ssl_reason(why, sizeof(why)));
            sk_X509_NAME_pop_free(names, X509_NAME_free);
        } else {
            SSL_CTX_set_client_CA_list(ctx, names);
        }
    }
    int mode = SSL_VERIFY_NONE;
    if (tc->verify_client == 1)
        mode = SSL_VERIFY_PEER;
    else if (tc->verify_client == 2)
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, mode, NULL);
    if (t->alpn_len)
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select, t);
    if (tn_diag_errors(diag) > errors) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static bool build_alpn(tn_tls *t, const tn_listener_conf *lc, tn_diag *diag)
{
    const tn_strlist *names = &lc->tls->alpn;
    static char *http11[] = { "http/1.1" };
    tn_strlist dflt = { http11, 1 };
    if (!names->n && lc->protocol == TN_PROTO_HTTP)
        names = &dflt; /* HTTP listeners speak http/1.1 and say so */
    for (size_t i = 0; i < names->n; i++) {
        size_t n = strlen(names->v[i]);
        if (n == 0 || n > 255 || t->alpn_len + 1 + n > sizeof(t->alpn)) {
            tn_diag_error(diag, lc->tls->pos, "listener '%s': alpn name '%s' is empty or too long", lc->name,
                          names->v[i]);
            return false;
        }
        t->alpn[t->alpn_len++] = (unsigned char)n;
        memcpy(t->alpn + t->alpn_len, names->v[i], n);
        t->alpn_len += n;
    }
    return true;
}

tn_tls *tn_tls_new(const tn_listener_conf *lc, tn_diag *diag)
{
    const tn_tls_conf *tc = lc->tls;
    tn_tls *t = calloc(1, sizeof(*t));
    if (!t) {
        tn_diag_error(diag, tc->pos, "out of memory");
        return NULL;
    }
    t->refs = 1;
    if (tc->verify_client && !*tc->client_ca)
        tn_diag_error(diag, tc->pos, "listener '%s': verify_client needs client_ca (the CA client certificates are "
                                     "checked against)", lc->name);
    if (!build_alpn(t, lc, diag) || tn_diag_errors(diag)) {
        tn_tls_unref(t);
        return NULL;
    }
    t->ctx = make_ctx(t, tc, tc->cert, tc->cert_pos, tc->key, tc->key_pos, lc->name, diag);
    t->sni = calloc(tc->nsni ? tc->nsni : 1, sizeof(*t->sni));
    if (!t->sni)
        tn_diag_error(diag, tc->pos, "out of memory");
    for (size_t i = 0; t->sni && i < tc->nsni; i++) {
        const tn_sni_conf *s = &tc->sni[i];
        SSL_CTX *ctx = make_ctx(t, tc, s->cert, s->cert_pos, s->key, s->key_pos, lc->name, diag);
        if (!ctx)
            continue;
        t->sni[t->nsni].ctx = ctx;
        t->sni[t->nsni].name = strdup(s->name);
        if (!t->sni[t->nsni++].name)
            tn_diag_error(diag, s->pos, "out of memory");
    }
    if (!t->ctx || tn_diag_errors(diag)) {
        tn_tls_unref(t);
        return NULL;
    }
    if (t->nsni)
        SSL_CTX_set_tlsext_servername_callback(t->ctx, on_servername), SSL_CTX_set_tlsext_servername_arg(t->ctx, t);
    return t;
}

void tn_tls_ref(tn_tls *t)
{
    t->refs++;
}

void tn_tls_unref(tn_tls *t)
{
    if (!t || --t->refs > 0)
        return;
    SSL_CTX_free(t->ctx);
    for (size_t i = 0; i < t->nsni; i++) {
        SSL_CTX_free(t->sni[i].ctx);
        free(t->sni[i].name);
    }
    free(t->sni);
    free(t);
}

/* ---- connections -------------------------------------------------------------- */

tn_tls_conn *tn_tls_accept(tn_tls *t, int fd)
{
    tn_tls_conn *tc = calloc(1, sizeof(*tc));
    if (!tc)
        return NULL;
    tc->ssl = SSL_new(t->ctx);
    if (!tc->ssl || SSL_set_fd(tc->ssl, fd) != 1) {
        ERR_clear_error();
        SSL_free(tc->ssl);
        free(tc);
        return NULL;
    }
    SSL_set_accept_state(tc->ssl);
    tc->tls = t;
    tn_tls_ref(t);
    tc->handshaking = true;
    return tc;
}

static void tls_shutdown(void *st)
{
    tn_tls_conn *tc = st;
    if (!tc->broken && !tc->handshaking) {
        /* one close_notify, best effort: the socket is closed right after */
        if (SSL_shutdown(tc->ssl) < 0)
            ERR_clear_error();
    }
}

static void tls_close(void *st)
{
    tn_tls_conn *tc = st;
    SSL_free(tc->ssl);
    free(tc->info.subject);
    tn_tls_unref(tc->tls);
    free(tc);
}

static bool tls_handshaking(const void *st)
{
    const tn_tls_conn *tc = st;
    return tc->handshaking;
}

static bool tls_broken(const void *st)
{
    const tn_tls_conn *tc = st;
    return tc->broken;
}

static const tn_tls_info *tls_info(const void *st)
{
    const tn_tls_conn *tc = st;
    return tc->handshaking ? NULL : &tc->info;
}

static void record_info(tn_tls_conn *tc)
{
    tc->info.version = SSL_get_version(tc->ssl);
    tc->info.cipher = SSL_get_cipher_name(tc->ssl);
    tc->info.verify = "NONE";
    X509 *peer = SSL_get0_peer_certificate(tc->ssl);
    if (!peer || SSL_get_verify_result(tc->ssl) != X509_V_OK)
        return;
    tc->info.verify = "SUCCESS";
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return;
    X509_NAME_print_ex(b, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    if (n >= 0 && (tc->info.subject = malloc((size_t)n + 1))) {
        memcpy(tc->info.subject, data, (size_t)n);
        tc->info.subject[n] = '\0';
    }
    BIO_free(b);
}

static int classify(int reason)
{
    switch (reason) {
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION: return TN_TLSF_PROTOCOL_VERSION;
    case SSL_R_NO_SHARED_CIPHER: return TN_TLSF_NO_SHARED_CIPHER;
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE: return TN_TLSF_NO_CLIENT_CERT;
    case SSL_R_CERTIFICATE_VERIFY_FAILED: return TN_TLSF_BAD_CLIENT_CERT;
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_UNKNOWN_PROTOCOL:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
    case SSL_R_UNSUPPORTED_SSL_VERSION: return TN_TLSF_NOT_TLS;
    case SSL_R_UNEXPECTED_EOF_WHILE_READING: return TN_TLSF_EOF;
    default: return reason >= SSL_AD_REASON_OFFSET ? TN_TLSF_PEER_ALERT : TN_TLSF_OTHER;
    }
}

static int tls_handshake(void *st, int *reason, char *detail, size_t detaillen)
{
    tn_tls_conn *tc = st;
    int r = SSL_do_handshake(tc->ssl);
    if (r == 1) {
        tc->handshaking = false;
        record_info(tc);
        return TN_TP_DONE;
    }
    int e = SSL_get_error(tc->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        ERR_clear_error();
        return TN_TP_AGAIN;
    }
    tc->broken = true;
    if (e == SSL_ERROR_SSL) {
        unsigned long err = ERR_peek_last_error();
        *reason = classify(ERR_GET_REASON(err));
        ssl_reason(detail, detaillen);
    } else if (e == SSL_ERROR_SYSCALL && errno) {
        *reason = TN_TLSF_EOF;
        snprintf(detail, detaillen, "%s", strerror(errno));
        ERR_clear_error();
    } else {
        *reason = TN_TLSF_EOF;
        snprintf(detail, detaillen, "the client closed the connection");
        ERR_clear_error();
    }
    return TN_TP_FAILED;
}

/* What an SSL_read or SSL_write that returned N <= 0 means, the way recv(2)
 * and send(2) say it. */
static ssize_t io_result(tn_tls_conn *tc, int n, int saved_errno, bool reading)
{
    int e = SSL_get_error(tc->ssl, n);
    unsigned long err = ERR_peek_last_error();
    ERR_clear_error();
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE: errno = EAGAIN; return -1;
    case SSL_ERROR_ZERO_RETURN: /* close_notify */
        if (reading)
            return 0;
        errno = EPIPE;
        return -1;
    case SSL_ERROR_SYSCALL:
        tc->broken = true;
        if (!saved_errno && reading)
            return 0;
        errno = saved_errno ? saved_errno : EPIPE;
        return -1;
    default:
        tc->broken = true;
        /* most clients just close the socket: an end of stream, not an attack */
        if (reading && ERR_GET_REASON(err) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
            return 0;
        errno = EPROTO;
        return -1;
    }
}

static ssize_t tls_read(void *st, evutil_socket_t fd, void *buf, size_t len)
{
    (void)fd; /* the session has it */
    tn_tls_conn *tc = st;
    int n = SSL_read(tc->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    return n > 0 ? n : io_result(tc, n, errno, true);
}

/* Replies appended one by one go out as one record of up to TLS_CHUNK
 * bytes (file segments are read into memory by the pullup). */
static int tls_write(void *st, evutil_socket_t fd, struct evbuffer *src)
{
    (void)fd;
    tn_tls_conn *tc = st;
    size_t len = evbuffer_get_length(src);
    size_t chunk = len < TLS_CHUNK ? len : TLS_CHUNK;
    int n = SSL_write(tc->ssl, evbuffer_pullup(src, (ssize_t)chunk), (int)chunk);
    if (n <= 0)
        return (int)io_result(tc, n, errno, false);
    evbuffer_drain(src, (size_t)n);
    return n;
}

const tn_transport_ops tn_tls_transport = {
    .name = "tls",
    .plain = false,
    .read = tls_read,
    .write = tls_write,
    .handshake = tls_handshake,
    .handshaking = tls_handshaking,
    .broken = tls_broken,
    .shutdown = tls_shutdown,
    .close = tls_close,
    .info = tls_info,
};
