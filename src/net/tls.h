/* SPDX-License-Identifier: MIT */
/* tls.h - TLS for stream listeners: a listener's contexts built from its
 * tls block (certificates, SNI, client certificates, versions, ALPN), and
 * the TLS side of one connection (handshake, read, write, close). */
#ifndef TN_NET_TLS_H
#define TN_NET_TLS_H

#include <stdbool.h>
#include <sys/types.h>

#include "config/config.h"
#include "handlers/handler.h"

/* A listener's TLS contexts. Reference counted: connections keep the one
 * they were accepted with, so a reload that swaps certificates leaves them
 * alone. */
typedef struct tn_tls tn_tls;

/* Builds the contexts of listener LC (which has a tls block). Problems are
 * reported in DIAG at the position of the value at fault: errors (missing or
 * unreadable files, a key that does not match its certificate, unknown
 * ciphers) make it return NULL; warnings (an expired certificate) do not. */
tn_tls *tn_tls_new(const tn_listener_conf *lc, tn_diag *diag);
void tn_tls_ref(tn_tls *t);
void tn_tls_unref(tn_tls *t);

/* The TLS state of one connection. */
typedef struct tn_tls_conn tn_tls_conn;

tn_tls_conn *tn_tls_conn_new(tn_tls *t, int fd);
/* Sends close_notify when the session is still sound (CLEAN), then frees. */
void tn_tls_conn_free(tn_tls_conn *tc, bool clean);

enum { TN_TLS_DONE = 1, TN_TLS_AGAIN = 0, TN_TLS_FAILED = -1 };
/* Advances the handshake. On TN_TLS_FAILED *reason is an enum
 * tn_tls_failure and detail (DETAILLEN) says what OpenSSL reported. */
int tn_tls_handshake(tn_tls_conn *tc, int *reason, char *detail, size_t detaillen);
bool tn_tls_handshaking(const tn_tls_conn *tc);
/* A fatal error ended the session (also an end of stream without
 * close_notify): nothing more can be sent. */
bool tn_tls_broken(const tn_tls_conn *tc);
/* After the handshake: version, cipher, client certificate. */
const tn_tls_info *tn_tls_conn_info(const tn_tls_conn *tc);

/* recv(2)/send(2) semantics: bytes, 0 at the peer's end of stream (read),
 * -1 with errno (EAGAIN when the session waits for the socket, ECONNRESET
 * or EPROTO when it is broken). */
ssize_t tn_tls_read(tn_tls_conn *tc, void *buf, size_t len);
ssize_t tn_tls_write(tn_tls_conn *tc, const void *buf, size_t len);

/* Whether OpenSSL can be used at all (called once at startup). */
const char *tn_tls_library_version(void);

#endif
