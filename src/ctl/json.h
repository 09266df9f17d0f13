/* SPDX-License-Identifier: MIT */
/* ctl/json.h - tusknetctl's own small JSON reader: parses one answer of the
 * daemon into a tree of tn_ctl_jv values, looks keys up with defaults, and
 * pretty-prints a tree (for `config` and unknown answers). The client does not
 * link the daemon's code, so it carries this reader itself. */
#ifndef TN_CTL_JSON_H
#define TN_CTL_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum { TN_J_NULL, TN_J_BOOL, TN_J_NUM, TN_J_STR, TN_J_ARR, TN_J_OBJ } tn_ctl_jtype;

typedef struct tn_ctl_jv tn_ctl_jv;
struct tn_ctl_jv {
    tn_ctl_jtype t;
    bool b;
    double n;
    char *s;           /* TN_J_STR: the decoded string; TN_J_NUM: the number as written */
    size_t len;        /* TN_J_STR: bytes in s; TN_J_ARR/TN_J_OBJ: items */
    size_t cap;
    tn_ctl_jv **items; /* TN_J_ARR, TN_J_OBJ: values */
    char **keys;       /* TN_J_OBJ: keys, in the order received */
};

void tn_ctl_jv_free(tn_ctl_jv *v);
tn_ctl_jv *tn_ctl_json_parse(const char *text, size_t len, char *err, size_t errlen);
tn_ctl_jv *tn_ctl_jget(const tn_ctl_jv *o, const char *key);
const char *tn_ctl_jstr(const tn_ctl_jv *o, const char *key, const char *def);
uint64_t tn_ctl_jv_u64(const tn_ctl_jv *v);
uint64_t tn_ctl_ju64(const tn_ctl_jv *o, const char *key);
double tn_ctl_jnum(const tn_ctl_jv *o, const char *key);
bool tn_ctl_jbool(const tn_ctl_jv *o, const char *key);
void tn_ctl_json_pretty(FILE *f, const tn_ctl_jv *v, int indent);

#endif
