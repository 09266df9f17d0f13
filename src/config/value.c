/* SPDX-License-Identifier: MIT */
/* value.c - the config value tree, diagnostics and the document that owns
 * the file names positions point into. Nothing here knows the schema. */
#include "config/value.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

tn_value *tn_value_new(tn_vtype type, tn_pos pos)
{
    tn_value *v = calloc(1, sizeof(*v));
    if (!v)
        return NULL;
    v->type = type;
    v->pos = pos;
    return v;
}

tn_value *tn_value_string(const char *s, size_t len, tn_pos pos)
{
    tn_value *v = tn_value_new(TN_V_STRING, pos);
    if (!v)
        return NULL;
    v->u.s.ptr = malloc(len + 1);
    if (!v->u.s.ptr) {
        free(v);
        return NULL;
    }
    if (len)
        memcpy(v->u.s.ptr, s, len);
    v->u.s.ptr[len] = '\0';
    v->u.s.len = len;
    return v;
}

tn_value *tn_value_int(int64_t i, tn_pos pos)
{
    tn_value *v = tn_value_new(TN_V_INT, pos);
    if (v)
        v->u.i = i;
    return v;
}

tn_value *tn_value_bool(bool b, tn_pos pos)
{
    tn_value *v = tn_value_new(TN_V_BOOL, pos);
    if (v)
        v->u.b = b;
    return v;
}

void tn_value_free(tn_value *v)
{
    if (!v)
        return;
    switch (v->type) {
    case TN_V_STRING:
        free(v->u.s.ptr);
        break;
    case TN_V_ARRAY:
        for (size_t i = 0; i < v->u.a.len; i++)
            tn_value_free(v->u.a.items[i]);
        free(v->u.a.items);
        break;
    case TN_V_OBJECT:
        for (size_t i = 0; i < v->u.o.len; i++) {
            free(v->u.o.items[i].key);
            tn_value_free(v->u.o.items[i].val);
        }
        free(v->u.o.items);
        break;
    default:
        break;
    }
    free(v);
}

tn_value *tn_value_clone(const tn_value *v)
{
    if (!v)
        return NULL;
    tn_value *c;
    switch (v->type) {
    case TN_V_STRING:
        return tn_value_string(v->u.s.ptr, v->u.s.len, v->pos);
    case TN_V_ARRAY:
        c = tn_value_new(TN_V_ARRAY, v->pos);
        if (!c)
            return NULL;
        for (size_t i = 0; i < v->u.a.len; i++) {
            tn_value *item = tn_value_clone(v->u.a.items[i]);
            if (!item || tn_array_push(c, item) < 0) {
                tn_value_free(c);
                return NULL;
            }
        }
        return c;
    case TN_V_OBJECT:
        c = tn_value_new(TN_V_OBJECT, v->pos);
        if (!c)
            return NULL;
        for (size_t i = 0; i < v->u.o.len; i++) {
            const tn_member *m = &v->u.o.items[i];
            char *key = strdup(m->key);
            tn_value *val = tn_value_clone(m->val);
            if (!key || !val || tn_object_add(c, key, m->key_pos, val) < 0) {
                if (!key || !val) {
                    free(key);
                    tn_value_free(val);
                }
                tn_value_free(c);
                return NULL;
            }
        }
        return c;
    default:
        c = tn_value_new(v->type, v->pos);
        if (c)
            c->u = v->u;
        return c;
    }
}

static int grow(void **items, size_t *cap, size_t len, size_t size)
{
    if (len < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 4;
    void *n = realloc(*items, ncap * size);
    if (!n)
        return -1;
    *items = n;
    *cap = ncap;
    return 0;
}

int tn_array_push(tn_value *arr, tn_value *item)
{
    if (grow((void **)&arr->u.a.items, &arr->u.a.cap, arr->u.a.len, sizeof(tn_value *)) < 0) {
        tn_value_free(item);
        errno = ENOMEM;
        return -1;
    }
    arr->u.a.items[arr->u.a.len++] = item;
    return 0;
}

int tn_object_add(tn_value *obj, char *key, tn_pos key_pos, tn_value *val)
{
    if (grow((void **)&obj->u.o.items, &obj->u.o.cap, obj->u.o.len, sizeof(tn_member)) < 0) {
        free(key);
        tn_value_free(val);
        errno = ENOMEM;
        return -1;
    }
    obj->u.o.items[obj->u.o.len++] = (tn_member){ key, key_pos, val };
    return 0;
}

tn_member *tn_object_find(const tn_value *obj, const char *key)
{
    if (!obj || obj->type != TN_V_OBJECT)
        return NULL;
    for (size_t i = 0; i < obj->u.o.len; i++)
        if (strcmp(obj->u.o.items[i].key, key) == 0)
            return &obj->u.o.items[i];
    return NULL;
}

tn_value *tn_object_get(const tn_value *obj, const char *key)
{
    tn_member *m = tn_object_find(obj, key);
    return m ? m->val : NULL;
}

const char *tn_vtype_name(tn_vtype type)
{
    switch (type) {
    case TN_V_NULL: return "null";
    case TN_V_BOOL: return "boolean";
    case TN_V_INT: return "integer";
    case TN_V_FLOAT: return "number";
    case TN_V_STRING: return "string";
    case TN_V_ARRAY: return "array";
    case TN_V_OBJECT: return "object";
    }
    return "?";
}

bool tn_value_equal(const tn_value *a, const tn_value *b)
{
    if (!a || !b)
        return a == b;
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case TN_V_NULL: return true;
    case TN_V_BOOL: return a->u.b == b->u.b;
    case TN_V_INT: return a->u.i == b->u.i;
    case TN_V_FLOAT: return a->u.f == b->u.f;
    case TN_V_STRING:
        return a->u.s.len == b->u.s.len && memcmp(a->u.s.ptr, b->u.s.ptr, a->u.s.len) == 0;
    case TN_V_ARRAY:
        if (a->u.a.len != b->u.a.len)
            return false;
        for (size_t i = 0; i < a->u.a.len; i++)
            if (!tn_value_equal(a->u.a.items[i], b->u.a.items[i]))
                return false;
        return true;
    case TN_V_OBJECT:
        if (a->u.o.len != b->u.o.len)
            return false;
        for (size_t i = 0; i < a->u.o.len; i++) {
            if (strcmp(a->u.o.items[i].key, b->u.o.items[i].key) != 0)
                return false;
            if (!tn_value_equal(a->u.o.items[i].val, b->u.o.items[i].val))
                return false;
        }
        return true;
    }
    return false;
}

void tn_diag_verror(tn_diag *d, tn_pos pos, bool warning, const char *fmt, va_list ap)
{
    d->total++;
    if (warning)
        d->warnings++;
    if (d->count >= TN_DIAG_MAX)
        return;
    char text[1024];
    vsnprintf(text, sizeof(text), fmt, ap);
    char *msg = NULL;
    int n = asprintf(&msg, "%s:%d:%d: %s%s", pos.file ? pos.file : "<input>", pos.line, pos.col,
                     warning ? "warning: " : "", text);
    if (n < 0)
        return;
    d->pos[d->count] = pos;
    d->msgs[d->count++] = msg;
}

void tn_diag_sort(tn_diag *d, int from)
{
    /* insertion sort: at most TN_DIAG_MAX entries, and stable */
    for (int i = from + 1; i < d->count; i++) {
        char *m = d->msgs[i];
        tn_pos p = d->pos[i];
        int j = i - 1;
        while (j >= from) {
            const tn_pos *q = &d->pos[j];
            int fc = strcmp(q->file ? q->file : "", p.file ? p.file : "");
            if (fc < 0 || (fc == 0 && (q->line < p.line || (q->line == p.line && q->col <= p.col))))
                break;
            d->msgs[j + 1] = d->msgs[j];
            d->pos[j + 1] = d->pos[j];
            j--;
        }
        d->msgs[j + 1] = m;
        d->pos[j + 1] = p;
    }
}

void tn_diag_error(tn_diag *d, tn_pos pos, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tn_diag_verror(d, pos, false, fmt, ap);
    va_end(ap);
}

void tn_diag_warn(tn_diag *d, tn_pos pos, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tn_diag_verror(d, pos, true, fmt, ap);
    va_end(ap);
}

int tn_diag_errors(const tn_diag *d)
{
    return d->total - d->warnings;
}

void tn_diag_print(const tn_diag *d, FILE *out)
{
    for (int i = 0; i < d->count; i++)
        fprintf(out, "%s\n", d->msgs[i]);
    if (d->total > d->count)
        fprintf(out, "(%d more messages not shown)\n", d->total - d->count);
}

char *tn_diag_join(const tn_diag *d)
{
    if (d->count == 0)
        return NULL;
    size_t len = 0;
    for (int i = 0; i < d->count; i++)
        len += strlen(d->msgs[i]) + 1;
    char *s = malloc(len + 1), *p = s;
    if (!s)
        return NULL;
    for (int i = 0; i < d->count; i++) {
        size_t n = strlen(d->msgs[i]);
        memcpy(p, d->msgs[i], n);
        p += n;
        *p++ = '\n';
    }
    p[-1] = '\0';
    return s;
}

void tn_diag_free(tn_diag *d)
{
    for (int i = 0; i < d->count; i++)
        free(d->msgs[i]);
    memset(d, 0, sizeof(*d));
}

const char *tn_doc_intern(tn_doc *doc, const char *path)
{
    for (size_t i = 0; i < doc->nfiles; i++)
        if (strcmp(doc->files[i], path) == 0)
            return doc->files[i];
    char **n = realloc(doc->files, (doc->nfiles + 1) * sizeof(char *));
    if (!n)
        return "<oom>";
    doc->files = n;
    char *copy = strdup(path);
    if (!copy)
        return "<oom>";
    doc->files[doc->nfiles++] = copy;
    return copy;
}

void tn_doc_free(tn_doc *doc)
{
    tn_value_free(doc->root);
    for (size_t i = 0; i < doc->nfiles; i++)
        free(doc->files[i]);
    free(doc->files);
    memset(doc, 0, sizeof(*doc));
}

/* ---- text helpers -------------------------------------------------------- */

int tn_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int tn_utf8_put(char out[4], uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}
