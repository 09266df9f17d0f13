/* SPDX-License-Identifier: MIT */
/* gzip.h - the gzip middleware's compression: handler bodies in memory,
 * files in memory or streamed, and the checks the file handler shares. */
#ifndef TN_PROTO_GZIP_H
#define TN_PROTO_GZIP_H

#include <event2/buffer.h>
#include <stdbool.h>

#include "config/config.h"
#include "proto/http_msg.h"

typedef struct tn_gzip tn_gzip;

tn_gzip *tn_gzip_new(const tn_middleware_conf *conf);
void tn_gzip_free(tn_gzip *g);
/* Before the handler: notes in r->gzip that the client takes gzip, so
 * that the file handler may answer with a FILE.gz sibling. */
void tn_gzip_before(tn_gzip *g, tn_http_request *r);
/* After the handler: compresses BODY, or the file body (into BODY when
 * small, as r->stream when large), and sets Vary, Content-Encoding and a
 * weak ETag. */
void tn_gzip_after(tn_gzip *g, tn_http_request *r, struct evbuffer *body);
/* Whether files of type CTYPE are compressed: text/..., JSON, XML,
 * JavaScript and the +json/+xml types (SVG), unless skip_types names them. */
bool tn_gzip_type(const tn_gzip *g, const char *ctype);
/* Whether an Accept-Encoding value lets us answer with gzip (q-values and
 * "*" honoured, not below an explicitly preferred identity). */
bool tn_gzip_accepted(const char *accept_encoding);

#endif
