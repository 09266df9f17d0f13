/* SPDX-License-Identifier: MIT */
/* value.h - the config value tree, source positions and diagnostics.
 *
 * Both front ends (the TuskLang-style parser and the YAML loader) produce the
 * same tree; the schema then turns it into a typed struct tn_config. Every node
 * carries the position it came from so that any later error can be reported
 * as FILE:LINE:COL. */
#ifndef TN_CONFIG_VALUE_H
#define TN_CONFIG_VALUE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct tn_pos {
    const char *file; /* interned in the owning tn_doc, never freed separately */
    int line;         /* 1-based */
    int col;          /* 1-based, in characters (UTF-8 code points) */
} tn_pos;

typedef enum tn_vtype {
    TN_V_NULL,
    TN_V_BOOL,
    TN_V_INT,
    TN_V_FLOAT,
    TN_V_STRING,
    TN_V_ARRAY,
    TN_V_OBJECT,
} tn_vtype;

typedef struct tn_value tn_value;

typedef struct tn_member {
    char *key;
    tn_pos key_pos;
    tn_value *val;
} tn_member;

struct tn_value {
    tn_vtype type;
    tn_pos pos;
    union {
        bool b;
        int64_t i;
        double f;
        struct { char *ptr; size_t len; } s;            /* always NUL-terminated too */
        struct { tn_value **items; size_t len, cap; } a;
        struct { tn_member *items; size_t len, cap; } o; /* insertion order kept */
    } u;
};

tn_value *tn_value_new(tn_vtype type, tn_pos pos);
tn_value *tn_value_string(const char *s, size_t len, tn_pos pos);
tn_value *tn_value_int(int64_t i, tn_pos pos);
tn_value *tn_value_bool(bool b, tn_pos pos);
tn_value *tn_value_clone(const tn_value *v);
void tn_value_free(tn_value *v);

/* Both take ownership of what they are given, also on failure (-1, ENOMEM). */
int tn_array_push(tn_value *arr, tn_value *item);
int tn_object_add(tn_value *obj, char *key, tn_pos key_pos, tn_value *val);

tn_member *tn_object_find(const tn_value *obj, const char *key);
tn_value *tn_object_get(const tn_value *obj, const char *key);
const char *tn_vtype_name(tn_vtype type);

/* Structural equality (positions ignored). */
bool tn_value_equal(const tn_value *a, const tn_value *b);

/* Diagnostics: every message is "FILE:LINE:COL: text". The first TN_DIAG_MAX
 * are kept; the rest are only counted so a pathological file cannot make the
 * report grow without bound. */
#define TN_DIAG_MAX 20

typedef struct tn_diag {
    char *msgs[TN_DIAG_MAX];
    tn_pos pos[TN_DIAG_MAX];
    int count; /* stored */
    int total; /* seen */
    int warnings; /* of total, how many were warnings (not errors) */
} tn_diag;

void tn_diag_error(tn_diag *d, tn_pos pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void tn_diag_warn(tn_diag *d, tn_pos pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void tn_diag_verror(tn_diag *d, tn_pos pos, bool warning, const char *fmt, va_list ap);
int tn_diag_errors(const tn_diag *d); /* errors only, warnings excluded */
/* Orders the stored messages from index FROM on by file, line, column, so a
 * report reads top to bottom whatever order the checks ran in. */
void tn_diag_sort(tn_diag *d, int from);
void tn_diag_print(const tn_diag *d, FILE *out);
/* All messages joined by '\n' (caller frees); NULL if none. */
char *tn_diag_join(const tn_diag *d);
void tn_diag_free(tn_diag *d);

/* A parsed document: the tree plus the file names its positions point into. */
typedef struct tn_doc {
    tn_value *root; /* an object */
    char **files;
    size_t nfiles;
} tn_doc;

const char *tn_doc_intern(tn_doc *doc, const char *path);
void tn_doc_free(tn_doc *doc);

/* Text helpers the parsers of escaped strings share (the config syntaxes,
 * worker answers): a hex digit's value (-1 if C is none), and code point
 * CP (at most 0x10FFFF) as UTF-8 into OUT, returning the bytes written. */
int tn_hexval(int c);
int tn_utf8_put(char out[4], uint32_t cp);

#endif
