/* SPDX-License-Identifier: MIT */
/* wproto.h - the line protocol between the daemon and worker programs.
 *
 * One call is one JSON object on one line of the worker's stdin:
 *   {"id":N,"payload":"...","context":{...}}
 * with "binary":true and the payload in base64 when it is not UTF-8. The
 * worker answers with one line per call, in any order:
 *   {"id":N,"reply":"..."}  or  {"id":N,"error":"..."}
 * again with "binary":true when the reply is base64, and over HTTP
 * optionally "status":N and "headers":{"Name":"value",...}.
 *
 * The reader is strict JSON (RFC 8259) on purpose: the line comes from a
 * program we do not control, and anything it cannot vouch for is refused
 * rather than guessed at. Keys other than id, reply, error, binary, status
 * and headers are checked and skipped, so a worker may add its own. */
#ifndef TN_HANDLERS_WPROTO_H
#define TN_HANDLERS_WPROTO_H

#include <event2/buffer.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "handlers/handler.h"

/* Largest id a worker may send back: integers above 2^53 do not survive
 * languages whose numbers are doubles. */
#define TN_WPROTO_ID_MAX ((uint64_t)1 << 53)
/* Response headers one answer may set. */
#define TN_WPROTO_HEADERS_MAX 64

/* Appends to OUT everything of a call line after its id: the payload (as
 * text, or base64 with "binary":true), the context, the closing brace and
 * the newline. The caller writes `{"id":N` before it. */
void tn_wproto_encode(struct evbuffer *out, const tn_msg_ctx *ctx, const char *payload, size_t len);

typedef struct tn_wreply {
    bool have_id;  /* the id was read (also when the rest is malformed) */
    uint64_t id;
    bool is_error; /* "error" rather than "reply" */
    char *text;    /* the decoded reply or error (malloc'd, NUL-terminated), or NULL */
    size_t len;
    int status;    /* HTTP status, 0 when not given */
    size_t nheaders;
    char *hname[TN_WPROTO_HEADERS_MAX], *hvalue[TN_WPROTO_HEADERS_MAX]; /* malloc'd */
} tn_wreply;

/* Parses one answer line (without its newline). Returns 0, or -1 with the
 * reason in err; r->have_id/r->id are set as soon as the id was read, so a
 * malformed answer can still fail its call. tn_wproto_free() it in both
 * cases. Header names are HTTP tokens and values have no control
 * characters but tab, so they can go on the wire as they are. */
int tn_wproto_parse(const char *line, size_t len, tn_wreply *r, char *err, size_t errlen);
void tn_wproto_free(tn_wreply *r);

#endif
