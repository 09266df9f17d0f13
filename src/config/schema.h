/* SPDX-License-Identifier: MIT */
/* schema.h - the schema table's row type and the generic code it drives;
 * private to src/config (the rest of the daemon sees config.h only). */
#ifndef TN_CONFIG_SCHEMA_H
#define TN_CONFIG_SCHEMA_H

#include <stddef.h>

#include "config/config.h"

enum tn_stype {
    TN_T_BOOL,
    TN_T_INT,
    TN_T_DURATION, /* int64 ms */
    TN_T_SIZE,     /* int64 bytes */
    TN_T_RATE,     /* double per second */
    TN_T_ENUM,     /* int index into `enums` */
    TN_T_STRING,
    TN_T_FILE,     /* string naming a file that must be readable */
    TN_T_STRLIST,
    TN_T_CIDRS,
    TN_T_ARGV,
    TN_T_STRMAP,
    TN_T_ADDRESS,
    TN_T_HANDLER,
    TN_T_HANDLERS,
    TN_T_MIDDLEWARES,
    /* nested objects, converted by config.c */
    TN_T_ROUTES,
    TN_T_WEBSOCKET,
    TN_T_TLS,
    TN_T_SNI,
};

#define TN_K_REQUIRED 1u /* must be present */
#define TN_K_OPTIONAL 2u /* no default; absent stays unset */
#define TN_K_AUTO 4u     /* an integer that also takes "auto", stored as 0 */

typedef struct tn_key {
    const char *scope;
    const char *key;
    int type;
    const char *def; /* as config text; lists comma-separated; NULL = none */
    int64_t min, max; /* both 0: unbounded */
    const char *enums; /* "a|b|c" */
    const char *only;  /* "exec,stream": handler types / protocols / kinds it applies to */
    size_t off;
    unsigned flags;
    const char *doc;
} tn_key;

extern const tn_key tn_schema[];
extern const size_t tn_schema_len;

typedef struct tn_suggest {
    const char *word;
    char best[64];
    size_t dist;
} tn_suggest;

void tn_suggest_init(tn_suggest *s, const char *word);
void tn_suggest_add(tn_suggest *s, const char *candidate);
const char *tn_suggest_text(const tn_suggest *s, char *buf, size_t len);

bool tn_only_matches(const char *only, const char *type_name);
/* Whether row K is a key of SCOPE for TNAME (a handler type, protocol or kind). */
bool tn_key_applies(const tn_key *k, const char *scope, const char *tname);
int tn_enum_index(const char *enums, const char *name);
const char *tn_enum_name(const char *enums, int idx, char *buf, size_t len);

bool tn_convert(tn_diag *d, const tn_key *k, const tn_value *v, void *base);
bool tn_apply_default(tn_diag *d, const tn_key *k, void *base);
void tn_free_field(const tn_key *k, void *base);
tn_value *tn_field_value(const tn_key *k, const void *base);
bool tn_field_equal(const tn_key *k, const void *a, const void *b);
void tn_format_field(int type, int64_t n, char *buf, size_t len);
const char *tn_type_doc(int type);

void tn_strlist_free(tn_strlist *l);
void tn_strmap_free(tn_strmap *m);
int tn_strlist_copy(tn_strlist *dst, const tn_strlist *src);

#endif
