/* SPDX-License-Identifier: MIT */
/* wsframe.h - the check of a WebSocket client's frames in front of
 * libwebsockets, and incremental UTF-8 validation.
 *
 * lws 4.1.6 echoes unmasked frames, accepts lengths not in their shortest
 * form, drops some violators without a close frame, answers only the first
 * of several pings read together and knows nothing of max_message. ws.c therefore runs every byte lws reads
 * from a client through tn_wsf_run() first: it sees frame headers (never
 * payload, except of pings and closes), refuses what RFC 6455 forbids at the
 * header that shows it, and takes pings and closes out of the stream so that
 * ws.c answers them itself, in order. */
#ifndef TN_PROTO_WSFRAME_H
#define TN_PROTO_WSFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Incremental UTF-8 validation: a character may be split across calls. */
typedef struct tn_utf8 {
    uint8_t need;   /* continuation bytes still expected */
    uint8_t lo, hi; /* the range the next one must be in */
} tn_utf8;

/* Feeds N bytes; false at the first byte that makes the text invalid. An
 * incomplete character at the end is not invalid yet (U->need says so). */
bool tn_utf8_step(tn_utf8 *u, const unsigned char *s, size_t n);
/* Whole text: valid and complete. */
bool tn_utf8_valid(const unsigned char *s, size_t n);

enum { TN_WSF_HEADER_MAX = 14 };

typedef struct tn_wsf {
    uint64_t max_message; /* set by the owner */
    bool deflate;         /* set by the owner: RSV1 allowed on a message's first frame */
    /* what the check found: 0 while all is well; otherwise the peer's close
     * (closed, its code or 1000 when it sent none) or the close code the
     * connection fails with (1002, 1007, 1009) and why. Input is dropped
     * from the frame that set it on. */
    int code;
    bool closed;
    const char *why;
    /* state */
    uint64_t left;    /* payload bytes of the current frame still to come */
    uint64_t msg_len; /* declared payload of the data message so far */
    uint32_t msgs;    /* data messages whose final frame has started */
    bool open;        /* a fragmented data message is in progress */
    uint8_t op;       /* the current frame's opcode */
    uint8_t mask[4];
    uint8_t nhold, nctl;
    uint8_t hold[TN_WSF_HEADER_MAX]; /* a header cut by the end of a read */
    uint8_t ctl[125];                /* the ping or close payload, unmasked */
} tn_wsf;

/* Called for each ping taken out of the stream, with its payload and the
 * number of data messages whose final frame came before it. */
typedef void (*tn_wsf_ping_fn)(void *arg, const uint8_t *payload, size_t len, uint32_t msgs);

/* Checks the N bytes at BUF (read from the client, following the held bytes
 * of the previous call: see ws.c) and rewrites them in place for lws: pings
 * and closes removed, nothing from a failing frame on, a header cut by the
 * end kept in F->hold. Returns how many bytes are left. */
size_t tn_wsf_run(tn_wsf *f, unsigned char *buf, size_t n, tn_wsf_ping_fn ping, void *arg);

#endif
