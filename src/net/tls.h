/* SPDX-License-Identifier: MIT */
/* tls.h - TLS for stream listeners: a listener's contexts built from its
 * tls block (certificates, SNI, client certificates, versions, ALPN), and
 * the TLS side of one connection as a transport (handshake, read, write,
 * close). */
#ifndef TN_NET_TLS_H
#define TN_NET_TLS_H

#include <stdbool.h>
#include <sys/types.h>

#include "config/config.h"
#include "handlers/handler.h"
#include "net/transport.h"

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

/* The TLS side of one connection: a transport (transport.h) whose state
 * is a tn_tls_conn. */
typedef struct tn_tls_conn tn_tls_conn;
extern const tn_transport_ops tn_tls_transport;

/* The server side of a session on FD with T's contexts (T referenced until
 * the transport's close), handshake still to come; NULL when out of memory. */
tn_tls_conn *tn_tls_accept(tn_tls *t, int fd);

/* Whether OpenSSL can be used at all (called once at startup). */
const char *tn_tls_library_version(void);

#endif
