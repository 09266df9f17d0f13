/* SPDX-License-Identifier: MIT */
/* wshandshake.h - what the WebSocket front end checks of an upgrade request
 * and how it hands the request head to libwebsockets. */
#ifndef TN_PROTO_WSHANDSHAKE_H
#define TN_PROTO_WSHANDSHAKE_H

#include <stddef.h>

#include "config/config.h"

struct tn_http_request;

/* Whether WebSocket upgrade request R may be upgraded at endpoint EP: 0
 * when it may, or the HTTP status to answer instead: 431 (a head too big
 * for libwebsockets), 400 (bad key/version: the key must be 16 bytes in
 * base64), 403 (Origin refused). */
int tn_ws_check(const tn_ws_conf *ep, const struct tn_http_request *r);

/* Copies the request head HEAD/LEN into OUT (CAP bytes), leaving out
 * permessage-deflate when endpoint EP has it off, and the subprotocol offer:
 * the first offered name EP speaks is put in CHOSEN, to be answered from
 * LWS_CALLBACK_ADD_HEADERS (lws 4.1.6 tokenizes names at '.', so "chat.v1"
 * could never match in lws). Whatever followed the head is copied
 * unchanged; *HEAD_LEN is where it starts in OUT. Returns the bytes in OUT. */
size_t tn_ws_rewrite_head(const tn_ws_conf *ep, const char *head, size_t len, char *out, size_t cap, char *chosen,
                          size_t chosen_len, size_t *head_len);

#endif
