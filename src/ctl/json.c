/* SPDX-License-Identifier: MIT */
/* ctl/json.c - tusknetctl's own small JSON reader: parses one answer of the
 * daemon into a tree of tn_ctl_jv values, looks keys up with defaults, and
 * pretty-prints a tree (for `config` and unknown answers). The client does not
 * link the daemon's code, so it carries this reader itself. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/json.h"
#include "ctl/util.h"

#define JSON_MAX_DEPTH 512

/* ---- JSON: a small reader into a tree ------------------------------------------ */

typedef struct jparser {
    const char *p, *start, *end;
    const char *err;
    int depth;
} jparser;

void tn_ctl_jv_free(tn_ctl_jv *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->len && v->items; i++) {
        tn_ctl_jv_free(v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->s);
    free(v);
}

static tn_ctl_jv *jv_new(tn_ctl_jtype t)
{
    tn_ctl_jv *v = tn_ctl_calloc(1, sizeof(*v));
    v->t = t;
    return v;
}

static void jv_push(tn_ctl_jv *c, char *key, tn_ctl_jv *val)
{
    if (c->len == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 8;
        c->items = tn_ctl_realloc(c->items, c->cap * sizeof(*c->items));
        if (c->t == TN_J_OBJ)
            c->keys = tn_ctl_realloc(c->keys, c->cap * sizeof(*c->keys));
    }
    c->items[c->len] = val;
    if (c->t == TN_J_OBJ)
        c->keys[c->len] = key;
    c->len++;
}

static void jp_ws(jparser *jp)
{
    while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r'))
        jp->p++;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool jp_hex4(jparser *jp, unsigned *out)
{
    if (jp->end - jp->p < 4)
        return false;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(jp->p[i]);
        if (h < 0)
            return false;
        v = v * 16 + (unsigned)h;
    }
    jp->p += 4;
    *out = v;
    return true;
}

static void utf8_put(tn_ctl_buf *b, unsigned cp)
{
    char u[4];
    if (cp < 0x80) {
        tn_ctl_buf_addc(b, (char)cp);
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        tn_ctl_buf_add(b, u, 2);
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        tn_ctl_buf_add(b, u, 3);
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        tn_ctl_buf_add(b, u, 4);
    }
}

/* At the opening quote; returns the decoded string (caller frees) or NULL. */
static char *jp_string(jparser *jp, size_t *lenp)
{
    tn_ctl_buf b = { 0 };
    tn_ctl_buf_reserve(&b, 0);
    b.p[0] = '\0';
    jp->p++;
    for (;;) {
        const char *run = jp->p;
        while (jp->p < jp->end && *jp->p != '"' && *jp->p != '\\' && (unsigned char)*jp->p >= 0x20)
            jp->p++;
        if (jp->p > run)
            tn_ctl_buf_add(&b, run, (size_t)(jp->p - run));
        if (jp->p >= jp->end) {
            jp->err = "unterminated string";
            goto fail;
        }
        char c = *jp->p++;
        if (c == '"')
            break;
        if (c != '\\') {
            jp->p--;
            jp->err = "control character in a string";
            goto fail;
        }
        if (jp->p >= jp->end) {
            jp->err = "unterminated string";
            goto fail;
        }
        char e = *jp->p++;
        switch (e) {
        case '"': tn_ctl_buf_addc(&b, '"'); break;
        case '\\': tn_ctl_buf_addc(&b, '\\'); break;
        case '/': tn_ctl_buf_addc(&b, '/'); break;
        case 'b': tn_ctl_buf_addc(&b, '\b'); break;
        case 'f': tn_ctl_buf_addc(&b, '\f'); break;
        case 'n': tn_ctl_buf_addc(&b, '\n'); break;
        case 'r': tn_ctl_buf_addc(&b, '\r'); break;
        case 't': tn_ctl_buf_addc(&b, '\t'); break;
        case 'u': {
            unsigned cp, lo;
            if (!jp_hex4(jp, &cp)) {
                jp->err = "bad \\u escape";
                goto fail;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF && jp->end - jp->p >= 6 && jp->p[0] == '\\' && jp->p[1] == 'u') {
                jparser save = *jp;
                jp->p += 2;
                if (jp_hex4(jp, &lo) && lo >= 0xDC00 && lo <= 0xDFFF)
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else
                    *jp = save;
            }
            if (cp >= 0xD800 && cp <= 0xDFFF)
                cp = 0xFFFD; /* a lone surrogate */
            utf8_put(&b, cp);
            break;
        }
        default:
            jp->p--;
            jp->err = "bad escape in a string";
            goto fail;
        }
    }
    *lenp = b.len;
    return b.p;
fail:
    tn_ctl_buf_free(&b);
    return NULL;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static tn_ctl_jv *jp_value(jparser *jp);

static tn_ctl_jv *jp_number(jparser *jp)
{
    const char *s = jp->p;
    if (jp->p < jp->end && *jp->p == '-')
        jp->p++;
    if (jp->p < jp->end && *jp->p == '0') {
        jp->p++;
    } else if (jp->p < jp->end && is_digit(*jp->p)) {
        while (jp->p < jp->end && is_digit(*jp->p))
            jp->p++;
    } else {
        jp->err = "unexpected character";
        return NULL;
    }
    if (jp->p < jp->end && *jp->p == '.') {
        jp->p++;
        if (jp->p >= jp->end || !is_digit(*jp->p)) {
            jp->err = "bad number";
            return NULL;
        }
        while (jp->p < jp->end && is_digit(*jp->p))
            jp->p++;
    }
    if (jp->p < jp->end && (*jp->p == 'e' || *jp->p == 'E')) {
        jp->p++;
        if (jp->p < jp->end && (*jp->p == '+' || *jp->p == '-'))
            jp->p++;
        if (jp->p >= jp->end || !is_digit(*jp->p)) {
            jp->err = "bad number";
            return NULL;
        }
        while (jp->p < jp->end && is_digit(*jp->p))
            jp->p++;
    }
    tn_ctl_jv *v = jv_new(TN_J_NUM);
    v->s = strndup(s, (size_t)(jp->p - s));
    if (!v->s)
        tn_ctl_oom();
    v->n = strtod(v->s, NULL);
    return v;
}

static bool jp_literal(jparser *jp, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(jp->end - jp->p) < n || memcmp(jp->p, word, n) != 0)
        return false;
    jp->p += n;
    return true;
}

static tn_ctl_jv *jp_container(jparser *jp, bool object)
{
    if (++jp->depth > JSON_MAX_DEPTH) {
        jp->err = "nested too deeply";
        return NULL;
    }
    tn_ctl_jv *v = jv_new(object ? TN_J_OBJ : TN_J_ARR);
    char close = object ? '}' : ']';
    jp->p++;
    jp_ws(jp);
    if (jp->p < jp->end && *jp->p == close) {
        jp->p++;
        jp->depth--;
        return v;
    }
    for (;;) {
        char *key = NULL;
        jp_ws(jp);
        if (object) {
            size_t klen;
            if (jp->p >= jp->end || *jp->p != '"') {
                jp->err = "expected a key";
                goto fail;
            }
            key = jp_string(jp, &klen);
            if (!key)
                goto fail;
            jp_ws(jp);
            if (jp->p >= jp->end || *jp->p != ':') {
                free(key);
                jp->err = "expected ':'";
                goto fail;
            }
            jp->p++;
        }
        tn_ctl_jv *item = jp_value(jp);
        if (!item) {
            free(key);
            goto fail;
        }
        jv_push(v, key, item);
        jp_ws(jp);
        if (jp->p < jp->end && *jp->p == ',') {
            jp->p++;
            continue;
        }
        if (jp->p < jp->end && *jp->p == close) {
            jp->p++;
            break;
        }
        jp->err = object ? "expected ',' or '}'" : "expected ',' or ']'";
        goto fail;
    }
    jp->depth--;
    return v;
fail:
    tn_ctl_jv_free(v);
    return NULL;
}

static tn_ctl_jv *jp_value(jparser *jp)
{
    jp_ws(jp);
    if (jp->p >= jp->end) {
        jp->err = "unexpected end";
        return NULL;
    }
    switch (*jp->p) {
    case '{': return jp_container(jp, true);
    case '[': return jp_container(jp, false);
    case '"': {
        size_t len;
        char *s = jp_string(jp, &len);
        if (!s)
            return NULL;
        tn_ctl_jv *v = jv_new(TN_J_STR);
        v->s = s;
        v->len = len;
        return v;
    }
    case 't':
    case 'f':
    case 'n': {
        tn_ctl_jv *v = NULL;
        if (jp_literal(jp, "true") || jp_literal(jp, "false")) {
            v = jv_new(TN_J_BOOL);
            v->b = jp->p[-1] == 'e' && jp->p[-2] == 'u';
        } else if (jp_literal(jp, "null")) {
            v = jv_new(TN_J_NULL);
        } else {
            jp->err = "unexpected word";
        }
        return v;
    }
    default: return jp_number(jp);
    }
}

/* Parses TEXT[0..LEN) as one JSON document; NULL with *ERR set on failure. */
tn_ctl_jv *tn_ctl_json_parse(const char *text, size_t len, char *err, size_t errlen)
{
    jparser jp = { .p = text, .start = text, .end = text + len };
    tn_ctl_jv *v = jp_value(&jp);
    if (v) {
        jp_ws(&jp);
        if (jp.p < jp.end) {
            jp.err = "trailing characters";
            tn_ctl_jv_free(v);
            v = NULL;
        }
    }
    if (!v)
        snprintf(err, errlen, "%s at byte %zu", jp.err ? jp.err : "invalid JSON", (size_t)(jp.p - jp.start));
    return v;
}

tn_ctl_jv *tn_ctl_jget(const tn_ctl_jv *o, const char *key)
{
    if (!o || o->t != TN_J_OBJ)
        return NULL;
    for (size_t i = 0; i < o->len; i++)
        if (strcmp(o->keys[i], key) == 0)
            return o->items[i];
    return NULL;
}

const char *tn_ctl_jstr(const tn_ctl_jv *o, const char *key, const char *def)
{
    const tn_ctl_jv *v = tn_ctl_jget(o, key);
    return v && v->t == TN_J_STR ? v->s : def;
}

uint64_t tn_ctl_jv_u64(const tn_ctl_jv *v)
{
    if (!v || v->t != TN_J_NUM)
        return 0;
    if (v->s && v->s[0] != '-' && !strpbrk(v->s, ".eE"))
        return strtoull(v->s, NULL, 10);
    return v->n > 0 ? (uint64_t)v->n : 0;
}

uint64_t tn_ctl_ju64(const tn_ctl_jv *o, const char *key)
{
    return tn_ctl_jv_u64(tn_ctl_jget(o, key));
}

double tn_ctl_jnum(const tn_ctl_jv *o, const char *key)
{
    const tn_ctl_jv *v = tn_ctl_jget(o, key);
    return v && v->t == TN_J_NUM ? v->n : 0;
}

bool tn_ctl_jbool(const tn_ctl_jv *o, const char *key)
{
    const tn_ctl_jv *v = tn_ctl_jget(o, key);
    return v && v->t == TN_J_BOOL && v->b;
}

/* ---- JSON: printing -------------------------------------------------------------- */

static void json_escape(FILE *f, const char *s, size_t len)
{
    fputc('"', f);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (c < 0x20)
                fprintf(f, "\\u%04x", c);
            else
                fputc(c, f);
        }
    }
    fputc('"', f);
}

void tn_ctl_json_pretty(FILE *f, const tn_ctl_jv *v, int indent)
{
    switch (v->t) {
    case TN_J_NULL: fputs("null", f); break;
    case TN_J_BOOL: fputs(v->b ? "true" : "false", f); break;
    case TN_J_NUM: fputs(v->s, f); break;
    case TN_J_STR: json_escape(f, v->s, v->len); break;
    case TN_J_ARR:
    case TN_J_OBJ: {
        bool obj = v->t == TN_J_OBJ;
        if (!v->len) {
            fputs(obj ? "{}" : "[]", f);
            break;
        }
        fputc(obj ? '{' : '[', f);
        for (size_t i = 0; i < v->len; i++) {
            fprintf(f, "%s\n%*s", i ? "," : "", indent + 2, "");
            if (obj) {
                json_escape(f, v->keys[i], strlen(v->keys[i]));
                fputs(": ", f);
            }
            tn_ctl_json_pretty(f, v->items[i], indent + 2);
        }
        fprintf(f, "\n%*s%c", indent, "", obj ? '}' : ']');
        break;
    }
    }
}

