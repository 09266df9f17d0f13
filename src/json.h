/* SPDX-License-Identifier: MIT */
/* json.h - writing JSON into an evbuffer (control socket answers), and
 * turning a config value tree into JSON. */
#ifndef TN_JSON_H
#define TN_JSON_H

#include <event2/buffer.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/value.h"

/* A small writer that places commas itself: open/close objects and arrays,
 * then keys and values in order. */
typedef struct tn_json {
    struct evbuffer *out;
    int depth;
    bool need_comma[32];
} tn_json;

void tn_json_init(tn_json *j, struct evbuffer *out);
void tn_json_open(tn_json *j, const char *key, char bracket);  /* key NULL inside arrays / at top */
void tn_json_close(tn_json *j, char bracket);
void tn_json_str(tn_json *j, const char *key, const char *value); /* NULL value -> null */
void tn_json_strn(tn_json *j, const char *key, const char *value, size_t len);
void tn_json_u64(tn_json *j, const char *key, uint64_t value);
void tn_json_i64(tn_json *j, const char *key, int64_t value);
void tn_json_num(tn_json *j, const char *key, double value);
void tn_json_bool(tn_json *j, const char *key, bool value);
/* A wall-clock time (milliseconds since the epoch) as ISO 8601 UTC with
 * milliseconds: "2026-01-31T12:00:00.000Z". */
void tn_json_time(tn_json *j, const char *key, int64_t ms);
void tn_json_value(tn_json *j, const char *key, const tn_value *v);

/* Appends S as a quoted JSON string. */
void tn_json_escape(struct evbuffer *out, const char *s, size_t len);

#endif
