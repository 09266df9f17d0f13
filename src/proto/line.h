/* SPDX-License-Identifier: MIT */
/* line.h - the TCP line-protocol front end. */
#ifndef TN_PROTO_LINE_H
#define TN_PROTO_LINE_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "net/proto_ops.h"

extern const tn_proto_ops tn_line_proto;

typedef enum tn_line_status {
    TN_LINE_WHOLE,    /* a line: *LINE_LEN bytes, then "\n" or "\r\n" (*CRLF) */
    TN_LINE_PARTIAL,  /* no '\n' yet, and no more than MAX_LINE bytes so far */
    TN_LINE_TOO_LONG, /* over MAX_LINE bytes before its '\n' (the '\r' counts) */
} tn_line_status;

/* The framing of the first line in DATA/LEN: one '\n'-terminated line is one
 * message, a '\r' before the '\n' is not part of it. Inline: it runs once
 * per message. */
static inline tn_line_status tn_line_frame(const char *data, size_t len, int64_t max_line, size_t *line_len, bool *crlf)
{
    const char *nl = memchr(data, '\n', len);
    if (!nl)
        return (int64_t)len > max_line ? TN_LINE_TOO_LONG : TN_LINE_PARTIAL;
    size_t n = (size_t)(nl - data);
    if ((int64_t)n > max_line)
        return TN_LINE_TOO_LONG;
    *crlf = n && data[n - 1] == '\r';
    *line_len = n - *crlf;
    return TN_LINE_WHOLE;
}

#endif
