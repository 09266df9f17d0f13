/* SPDX-License-Identifier: MIT */
/* yaml.c - the YAML front end of the config and the YAML dumper.
 *
 * Loading drives libyaml's event parser and builds the same tn_value tree the
 * TuskLang-style parser builds, with a FILE:LINE:COL position on every value
 * and key. Plain scalars resolve with the YAML 1.2 core schema (null, bool,
 * int, float, else string); quoted scalars are always strings, so "10s" and
 * 10s both reach the schema as strings and the schema decides what they mean.
 *
 * The loader is not recursive: open collections live on an explicit stack
 * capped at TN_YAML_MAX_DEPTH, and an alias is only expanded when the result
 * stays within that depth and within a global budget of expanded nodes and
 * bytes, so neither deep nesting nor "billion laughs" input can exhaust the
 * stack or memory. Because every tree it returns is at most that deep, the
 * recursive helpers in value.c (free, clone, equal) are safe on it.
 *
 * Emitting drives libyaml's emitter. The only subtle part is choosing a scalar
 * style so that load(emit(T)) equals T: any string that the loader would
 * resolve to something else (null, true, 12, 1.5, "") is double-quoted, as is
 * any string with control characters or line breaks; everything else is left
 * to libyaml, which picks plain when YAML allows it. */
#include "config/yaml.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

/* The TuskLang parser's limit, counted so that every tree it accepts also
 * loads from its YAML dump. It counts neither the top level nor a [section],
 * and a YAML mapping under a top-level key may be either a section or a
 * block, so neither counts here: in `a: {b: [x]}` the list is level 1, in
 * `a: [x]` too. */
#define TN_YAML_MAX_DEPTH 64

/* What aliases may add to a document in total. A real config uses aliases to
 * share a handful of blocks; these are far above that, and low enough that
 * loading, dumping and reloading the largest result takes well under a
 * second (a million nodes took seconds under the fuzzer's sanitizers). */
#define TN_YAML_MAX_ALIAS_NODES 100000
#define TN_YAML_MAX_ALIAS_BYTES (16u * 1024 * 1024)

#define TAG_STR "tag:yaml.org,2002:str"

/* ------------------------------------------------------------------------
 * A string -> index hash, used for the keys of each open mapping (duplicate
 * detection) and for anchor names. Linear search would make a mapping with n
 * keys cost n^2, which a large hostile file could turn into minutes. */

typedef struct strindex {
    struct { const char *key; size_t idx; } *slots; /* key NULL = empty */
    size_t cap; /* power of two, or 0 */
    size_t used;
} strindex;

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

/* Returns the slot holding KEY, or the empty slot where it would go. */
static size_t strindex_slot(const strindex *ix, const char *key)
{
    size_t mask = ix->cap - 1;
    size_t i = (size_t)str_hash(key) & mask;
    while (ix->slots[i].key && strcmp(ix->slots[i].key, key) != 0)
        i = (i + 1) & mask;
    return i;
}

static bool strindex_get(const strindex *ix, const char *key, size_t *idx)
{
    if (!ix->cap)
        return false;
    size_t i = strindex_slot(ix, key);
    if (!ix->slots[i].key)
        return false;
    *idx = ix->slots[i].idx;
    return true;
}

/* KEY must outlive the index (it points into the tree or the anchor table).
 * Replaces the index of an existing equal key. */
static int strindex_put(strindex *ix, const char *key, size_t idx)
{
    if ((ix->used + 1) * 2 > ix->cap) {
        size_t ncap = ix->cap ? ix->cap * 2 : 8;
        strindex n = { calloc(ncap, sizeof(*n.slots)), ncap, 0 };
        if (!n.slots)
            return -1;
        for (size_t i = 0; i < ix->cap; i++)
            if (ix->slots[i].key)
                n.slots[strindex_slot(&n, ix->slots[i].key)] = ix->slots[i];
        n.used = ix->used;
        free(ix->slots);
        *ix = n;
    }
    size_t i = strindex_slot(ix, key);
    if (!ix->slots[i].key)
        ix->used++;
    ix->slots[i].key = key;
    ix->slots[i].idx = idx;
    return 0;
}

static void strindex_free(strindex *ix)
{
    free(ix->slots);
    memset(ix, 0, sizeof(*ix));
}

/* ------------------------------------------------------------------------
 * Plain scalar resolution (YAML 1.2 core schema). Shared by the loader and the
 * emitter so that the emitter quotes exactly the strings the loader would not
 * read back as strings. */

typedef enum {
    RES_STRING,
    RES_NULL,
    RES_BOOL,
    RES_INT,
    RES_FLOAT,
    RES_INT_RANGE,   /* looks like an int but does not fit int64 */
    RES_FLOAT_RANGE, /* looks like a float but overflows a double */
} res_kind;

typedef struct {
    res_kind kind;
    bool b;
    int64_t i;
    double f;
} resolved;

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool word_in(const char *s, size_t len, const char *const *words)
{
    for (; *words; words++)
        if (strlen(*words) == len && memcmp(*words, s, len) == 0)
            return true;
    return false;
}

/* Digits matched by ok() from S, none required; returns the count. */
static size_t span(const char *s, size_t len, bool (*ok)(char))
{
    size_t n = 0;
    while (n < len && ok(s[n]))
        n++;
    return n;
}

static bool is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_oct(char c) { return c >= '0' && c <= '7'; }

/* [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
static bool match_float(const char *s, size_t len)
{
    size_t p = 0, n;
    if (p < len && (s[p] == '-' || s[p] == '+'))
        p++;
    if (p < len && s[p] == '.') {
        p++;
        if ((n = span(s + p, len - p, is_digit)) == 0)
            return false;
        p += n;
    } else {
        if ((n = span(s + p, len - p, is_digit)) == 0)
            return false;
        p += n;
        if (p < len && s[p] == '.') {
            p++;
            p += span(s + p, len - p, is_digit);
        }
    }
    if (p < len && (s[p] == 'e' || s[p] == 'E')) {
        p++;
        if (p < len && (s[p] == '-' || s[p] == '+'))
            p++;
        if ((n = span(s + p, len - p, is_digit)) == 0)
            return false;
        p += n;
    }
    return p == len;
}

/* Parses digits of S (already validated) in BASE; false on overflow. */
static bool parse_u64(const char *s, size_t len, unsigned base, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        unsigned d = is_digit(c) ? (unsigned)(c - '0')
                   : (c >= 'a' && c <= 'f') ? (unsigned)(c - 'a' + 10)
                                            : (unsigned)(c - 'A' + 10);
        if (v > (UINT64_MAX - d) / base)
            return false;
        v = v * base + d;
    }
    *out = v;
    return true;
}

static resolved resolve_plain(const char *s, size_t len)
{
    static const char *const nulls[] = { "null", "Null", "NULL", "~", "", NULL };
    static const char *const trues[] = { "true", "True", "TRUE", NULL };
    static const char *const falses[] = { "false", "False", "FALSE", NULL };
    static const char *const infs[] = { ".inf", ".Inf", ".INF", NULL };
    resolved r = { .kind = RES_STRING };

    if (word_in(s, len, nulls)) {
        r.kind = RES_NULL;
        return r;
    }
    if (word_in(s, len, trues) || word_in(s, len, falses)) {
        r.kind = RES_BOOL;
        r.b = s[0] == 't' || s[0] == 'T';
        return r;
    }
    if (len == 0 || len > 512) /* nothing longer is a sensible number */
        return r;

    /* Integers: [-+]?[0-9]+ | 0o[0-7]+ | 0x[0-9a-fA-F]+ */
    size_t sign = (s[0] == '-' || s[0] == '+') ? 1 : 0;
    uint64_t u;
    if (len > sign && span(s + sign, len - sign, is_digit) == len - sign) {
        bool neg = s[0] == '-';
        r.kind = RES_INT;
        if (!parse_u64(s + sign, len - sign, 10, &u) ||
            u > (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX)) {
            r.kind = RES_INT_RANGE;
            return r;
        }
        r.i = neg ? (int64_t)(0 - u) : (int64_t)u;
        return r;
    }
    if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
        bool hex = s[1] == 'x';
        if (span(s + 2, len - 2, hex ? is_hex : is_oct) == len - 2) {
            r.kind = RES_INT;
            if (!parse_u64(s + 2, len - 2, hex ? 16 : 8, &u) || u > (uint64_t)INT64_MAX) {
                r.kind = RES_INT_RANGE;
                return r;
            }
            r.i = (int64_t)u;
            return r;
        }
    }

    if (word_in(s + sign, len - sign, infs)) {
        r.kind = RES_FLOAT;
        r.f = s[0] == '-' ? -INFINITY : INFINITY;
        return r;
    }
    if (match_float(s, len)) {
        /* strtod needs a terminated copy; the input is a slice. */
        char buf[520];
        memcpy(buf, s, len);
        buf[len] = '\0';
        r.kind = RES_FLOAT;
        r.f = strtod(buf, NULL);
        if (isinf(r.f))
            r.kind = RES_FLOAT_RANGE;
        return r;
    }
    /* .nan deliberately stays a string: NaN has no use in a config and would
     * make every comparison against the value false. */
    return r;
}

/* ------------------------------------------------------------------------
 * Loader state. */

typedef struct anchor {
    char *name;
    tn_value *val; /* NULL while the anchored collection is still open */
    char *text;    /* scalar source text, so an alias can be used as a key */
    size_t text_len;
    size_t nodes, bytes;
    int height;
    unsigned long gen; /* bumped on redefinition */
} anchor;

typedef struct frame {
    tn_value *v;     /* the open TN_V_ARRAY or TN_V_OBJECT */
    char *key;       /* mapping: key read, value not yet (owned) */
    tn_pos key_pos;
    bool drop_value; /* the pending key was rejected: discard its value */
    strindex keys;   /* mapping: key -> member index */
    size_t nodes, bytes; /* of the subtree so far, for alias accounting */
    int height;
    int level;         /* nesting as counted against TN_YAML_MAX_DEPTH */
    size_t anchor_idx; /* SIZE_MAX when not anchored */
    unsigned long anchor_gen;
} frame;

typedef struct loader {
    tn_doc *doc;
    tn_diag *diag;
    const char *file; /* interned */
    const char *text;
    size_t len;
    frame stack[TN_YAML_MAX_DEPTH + 2]; /* + the top level and a section */
    int depth;
    tn_value *root;
    /* Values that were parsed but are not part of the tree (the values of
     * duplicate keys, a non-mapping top level). They may be anchored, so
     * they live until the load ends. */
    tn_value *discarded;
    anchor *anchors;
    size_t nanchors, anchors_cap;
    strindex anchor_ix;
    size_t alias_nodes, alias_bytes;
    int documents;
    bool fatal;
} loader;

static tn_pos mark_pos(const loader *ld, yaml_mark_t m)
{
    return (tn_pos){ ld->file, (int)m.line + 1, (int)m.column + 1 };
}

static tn_pos start_pos(const loader *ld) { return (tn_pos){ ld->file, 1, 1 }; }

/* libyaml reports reader errors (invalid UTF-8, control characters such as
 * NUL) only as a byte offset, so the line and column are counted here the
 * way libyaml counts them: CR, LF and CRLF end a line, columns are code
 * points. */
static tn_pos offset_pos(const loader *ld, size_t off)
{
    tn_pos p = { ld->file, 1, 1 };
    if (off > ld->len)
        off = ld->len;
    for (size_t i = 0; i < off; i++) {
        unsigned char c = (unsigned char)ld->text[i];
        if (c == '\n' || (c == '\r' && (i + 1 >= ld->len || ld->text[i + 1] != '\n'))) {
            p.line++;
            p.col = 1;
        } else if (c != '\r' && (c & 0xC0) != 0x80) {
            p.col++;
        }
    }
    return p;
}

/* The byte at a libyaml mark (line and column counted as in offset_pos), or
 * -1 past the end. */
static int byte_at(const loader *ld, yaml_mark_t m)
{
    size_t line = 0, col = 0;
    for (size_t i = 0; i < ld->len; i++) {
        unsigned char c = (unsigned char)ld->text[i];
        if ((c & 0xC0) == 0x80)
            continue;
        if (line == m.line && col == m.column)
            return c;
        if (c == '\n' || (c == '\r' && (i + 1 >= ld->len || ld->text[i + 1] != '\n'))) {
            if (line == m.line)
                return -1;
            line++;
            col = 0;
        } else if (c != '\r') {
            col++;
        }
    }
    return -1;
}

static void fatal(loader *ld, tn_pos pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fatal(loader *ld, tn_pos pos, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tn_diag_verror(ld->diag, pos, false, fmt, ap);
    va_end(ap);
    ld->fatal = true;
}

static void oom(loader *ld, tn_pos pos) { fatal(ld, pos, "out of memory"); }

static void discard(loader *ld, tn_value *v)
{
    if (!ld->discarded) {
        ld->discarded = tn_value_new(TN_V_ARRAY, start_pos(ld));
        if (!ld->discarded) {
            /* Nothing can alias it any more once loading stops. */
            tn_value_free(v);
            oom(ld, start_pos(ld));
            return;
        }
    }
    if (tn_array_push(ld->discarded, v) < 0)
        oom(ld, start_pos(ld)); /* push freed it; loading stops, so no alias can reach it */
}

static void report_parser_error(loader *ld, const yaml_parser_t *p)
{
    if (p->error == YAML_MEMORY_ERROR) {
        oom(ld, start_pos(ld));
        return;
    }
    if (p->error == YAML_READER_ERROR) {
        size_t off = p->problem_offset;
        /* A bad trailing octet is reported at its own offset; the broken
         * character starts at the lead byte before it. */
        if (p->problem && strstr(p->problem, "trailing") && off <= ld->len) {
            while (off > 0 && ((unsigned char)ld->text[off - 1] & 0xC0) == 0x80)
                off--;
            if (off > 0)
                off--;
        }
        tn_pos pos = offset_pos(ld, off);
        if (p->problem_value == 0 && p->problem && strstr(p->problem, "control"))
            fatal(ld, pos, "NUL byte in input");
        else if (p->problem_value >= 0)
            fatal(ld, pos, "%s (0x%X)", p->problem, (unsigned)p->problem_value);
        else
            fatal(ld, pos, "%s", p->problem ? p->problem : "invalid input");
        return;
    }
    tn_pos pos = mark_pos(ld, p->problem_mark);
    const char *problem = p->problem ? p->problem : "invalid YAML";
    /* The most common YAML mistake gets a message that names it. */
    if (strcmp(problem, "found character that cannot start any token") == 0 &&
        byte_at(ld, p->problem_mark) == '\t') {
        fatal(ld, pos, "tab character where a token was expected (YAML indents with spaces)");
        return;
    }
    if (p->context)
        fatal(ld, pos, "%s (%s at %d:%d)", problem, p->context,
              (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
    else
        fatal(ld, pos, "%s", problem);
}

/* ---- anchors */

static anchor *anchor_find(loader *ld, const char *name)
{
    size_t idx;
    return strindex_get(&ld->anchor_ix, name, &idx) ? &ld->anchors[idx] : NULL;
}

/* (Re)defines NAME. A redefinition replaces the old meaning for later
 * aliases, as YAML 1.2 says; the old value stays in the tree. */
static anchor *anchor_define(loader *ld, const char *name, tn_pos pos)
{
    anchor *a = anchor_find(ld, name);
    if (a) {
        free(a->text);
        a->text = NULL;
        a->val = NULL;
        a->gen++;
        return a;
    }
    if (ld->nanchors == ld->anchors_cap) {
        size_t ncap = ld->anchors_cap ? ld->anchors_cap * 2 : 8;
        anchor *n = realloc(ld->anchors, ncap * sizeof(*n));
        if (!n) {
            oom(ld, pos);
            return NULL;
        }
        ld->anchors = n;
        ld->anchors_cap = ncap;
        /* The index points at the names, which did not move. */
    }
    char *copy = strdup(name);
    if (!copy) {
        oom(ld, pos);
        return NULL;
    }
    a = &ld->anchors[ld->nanchors];
    memset(a, 0, sizeof(*a));
    a->name = copy;
    if (strindex_put(&ld->anchor_ix, copy, ld->nanchors) < 0) {
        free(copy);
        oom(ld, pos);
        return NULL;
    }
    ld->nanchors++;
    return a;
}

/* ---- building */

/* Adds a finished value to the open collection, or makes it the document. */
static void attach(loader *ld, tn_value *v, size_t nodes, size_t bytes, int height,
                   bool empty_plain)
{
    if (ld->depth == 0) {
        if (v->type == TN_V_OBJECT) {
            ld->root = v;
        } else if (empty_plain) {
            /* An empty document ("---" and nothing) is an empty config. */
            tn_value_free(v);
        } else {
            fatal(ld, v->pos, "top level must be a mapping");
            tn_value_free(v);
        }
        return;
    }
    frame *f = &ld->stack[ld->depth - 1];
    f->nodes += nodes;
    f->bytes += bytes;
    if (height + 1 > f->height)
        f->height = height + 1;
    if (f->v->type == TN_V_ARRAY) {
        if (tn_array_push(f->v, v) < 0)
            oom(ld, f->v->pos);
        return;
    }
    char *key = f->key;
    f->key = NULL;
    if (f->drop_value) {
        f->drop_value = false;
        free(key);
        discard(ld, v);
        return;
    }
    if (tn_object_add(f->v, key, f->key_pos, v) < 0) {
        oom(ld, f->key_pos);
        return;
    }
    size_t idx = f->v->u.o.len - 1;
    if (strindex_put(&f->keys, f->v->u.o.items[idx].key, idx) < 0)
        oom(ld, f->key_pos);
}

/* A scalar (or an alias of one) in key position. */
static void take_key(loader *ld, const char *s, size_t len, tn_pos pos)
{
    frame *f = &ld->stack[ld->depth - 1];
    f->key_pos = pos;
    f->drop_value = false;
    if (memchr(s, '\0', len)) {
        tn_diag_error(ld->diag, pos, "mapping key contains a NUL character");
        f->drop_value = true;
    }
    f->key = malloc(len + 1);
    if (!f->key) {
        oom(ld, pos);
        return;
    }
    memcpy(f->key, s, len);
    f->key[len] = '\0';
    f->bytes += len;
    size_t idx;
    if (!f->drop_value && strindex_get(&f->keys, f->key, &idx)) {
        tn_pos first = f->v->u.o.items[idx].key_pos;
        tn_diag_error(ld->diag, pos, "duplicate key '%s' (first defined at %d:%d)", f->key,
                      first.line, first.col);
        f->drop_value = true;
    }
}

static bool awaiting_key(const loader *ld)
{
    if (ld->depth == 0)
        return false;
    const frame *f = &ld->stack[ld->depth - 1];
    return f->v->type == TN_V_OBJECT && !f->key && !f->drop_value;
}

/* Makes NAME refer to scalar V, whose source text is S. */
static bool anchor_scalar(loader *ld, const char *name, tn_value *v, const char *s, size_t len,
                          tn_pos pos)
{
    anchor *a = anchor_define(ld, name, pos);
    if (!a)
        return false;
    a->text = malloc(len + 1);
    if (!a->text) {
        oom(ld, pos);
        return false;
    }
    memcpy(a->text, s, len);
    a->text[len] = '\0';
    a->text_len = len;
    a->val = v;
    a->nodes = 1;
    a->bytes = len;
    a->height = 0;
    return true;
}

/* The value of a scalar event: resolved if plain, else a string. NULL after
 * reporting an error. */
static tn_value *scalar_value(loader *ld, const yaml_event_t *ev, tn_pos pos)
{
    const char *s = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    const char *tag = (const char *)ev->data.scalar.tag;
    bool plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    /* "!" (non-specific) and "!!str" both mean: this is a string. */
    bool force_str = tag && (strcmp(tag, TAG_STR) == 0 || strcmp(tag, "!") == 0);
    resolved r = { .kind = RES_STRING };
    if (plain && !force_str)
        r = resolve_plain(s, len);

    tn_value *v = NULL;
    switch (r.kind) {
    case RES_STRING: v = tn_value_string(s, len, pos); break;
    case RES_NULL: v = tn_value_new(TN_V_NULL, pos); break;
    case RES_BOOL: v = tn_value_bool(r.b, pos); break;
    case RES_INT: v = tn_value_int(r.i, pos); break;
    case RES_FLOAT:
        v = tn_value_new(TN_V_FLOAT, pos);
        if (v)
            v->u.f = r.f;
        break;
    case RES_INT_RANGE:
        fatal(ld, pos, "integer '%s' out of range", s);
        return NULL;
    case RES_FLOAT_RANGE:
        fatal(ld, pos, "number '%s' out of range", s);
        return NULL;
    }
    if (!v)
        oom(ld, pos);
    return v;
}

static void on_scalar(loader *ld, const yaml_event_t *ev)
{
    tn_pos pos = mark_pos(ld, ev->start_mark);
    const char *s = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    const char *anchor_name = (const char *)ev->data.scalar.anchor;

    if (awaiting_key(ld)) {
        take_key(ld, s, len, pos);
        if (anchor_name && !ld->fatal) {
            /* Keys are kept as text, but an alias of an anchored key used as
             * a value means the node, resolved as any scalar. It belongs to
             * no tree, so it is kept with the discarded values. */
            tn_value *v = scalar_value(ld, ev, pos);
            if (!v)
                return;
            discard(ld, v);
            if (!ld->fatal)
                anchor_scalar(ld, anchor_name, v, s, len, pos);
        }
        return;
    }

    tn_value *v = scalar_value(ld, ev, pos);
    if (!v)
        return;
    if (anchor_name && !anchor_scalar(ld, anchor_name, v, s, len, pos)) {
        tn_value_free(v);
        return;
    }
    bool empty_plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && len == 0 &&
                       !ev->data.scalar.tag;
    attach(ld, v, 1, len, 0, empty_plain);
}

/* The level a collection of TYPE opened now would be at. */
static int level_of(const loader *ld, tn_vtype type)
{
    if (ld->depth == 0 || (ld->depth == 1 && type == TN_V_OBJECT))
        return 0; /* the top level, or a section */
    return ld->stack[ld->depth - 1].level + 1;
}

static void on_alias(loader *ld, const yaml_event_t *ev)
{
    tn_pos pos = mark_pos(ld, ev->start_mark);
    const char *name = (const char *)ev->data.alias.anchor;
    anchor *a = anchor_find(ld, name);
    if (!a) {
        fatal(ld, pos, "unknown alias '%s'", name);
        return;
    }
    if (!a->val) {
        fatal(ld, pos, "alias '%s' refers to a node that contains it", name);
        return;
    }
    if (awaiting_key(ld)) {
        if (!a->text) {
            fatal(ld, pos, "mapping keys must be scalars");
            return;
        }
        take_key(ld, a->text, a->text_len, pos);
        return;
    }
    if (a->height > 0 && level_of(ld, a->val->type) + a->height - 1 > TN_YAML_MAX_DEPTH) {
        fatal(ld, pos, "nesting deeper than %d levels", TN_YAML_MAX_DEPTH);
        return;
    }
    if (a->nodes > TN_YAML_MAX_ALIAS_NODES - ld->alias_nodes ||
        a->bytes > TN_YAML_MAX_ALIAS_BYTES - ld->alias_bytes) {
        fatal(ld, pos, "alias expansion too large");
        return;
    }
    ld->alias_nodes += a->nodes;
    ld->alias_bytes += a->bytes;
    tn_value *v = tn_value_clone(a->val);
    if (!v) {
        oom(ld, pos);
        return;
    }
    /* Report problems with the copy where the alias is, not where the
     * original was; its insides keep their original positions. */
    v->pos = pos;
    attach(ld, v, a->nodes, a->bytes, a->height, false);
}

static void on_collection_start(loader *ld, const yaml_event_t *ev, tn_vtype type,
                                const char *anchor_name)
{
    tn_pos pos = mark_pos(ld, ev->start_mark);
    if (awaiting_key(ld)) {
        fatal(ld, pos, "mapping keys must be scalars");
        return;
    }
    if (ld->depth == 0 && type != TN_V_OBJECT) {
        fatal(ld, pos, "top level must be a mapping");
        return;
    }
    int level = level_of(ld, type);
    if (level > TN_YAML_MAX_DEPTH) {
        fatal(ld, pos, "nesting deeper than %d levels", TN_YAML_MAX_DEPTH);
        return;
    }
    tn_value *v = tn_value_new(type, pos);
    if (!v) {
        oom(ld, pos);
        return;
    }
    frame *f = &ld->stack[ld->depth++];
    memset(f, 0, sizeof(*f));
    f->v = v;
    f->level = level;
    f->nodes = 1;
    f->height = 1;
    f->anchor_idx = SIZE_MAX;
    if (anchor_name) {
        /* Defined now, filled in at the end: an alias inside the collection
         * to its own anchor is recursive, not a reference to an older node. */
        anchor *a = anchor_define(ld, anchor_name, pos);
        if (a) {
            f->anchor_idx = (size_t)(a - ld->anchors);
            f->anchor_gen = a->gen;
        }
    }
}

/* Closes the innermost collection and attaches it to its parent. Also used
 * to unwind after a fatal error, so that doc->root keeps what was parsed. */
static void close_collection(loader *ld)
{
    frame f = ld->stack[--ld->depth];
    free(f.key);
    strindex_free(&f.keys);
    if (f.anchor_idx != SIZE_MAX) {
        anchor *a = &ld->anchors[f.anchor_idx];
        /* Unless redefined inside, which then is the newer meaning. */
        if (a->gen == f.anchor_gen && !ld->fatal) {
            a->val = f.v;
            a->nodes = f.nodes;
            a->bytes = f.bytes;
            a->height = f.height;
        }
    }
    attach(ld, f.v, f.nodes, f.bytes, f.height, false);
}

static void loader_free(loader *ld)
{
    while (ld->depth > 0)
        close_collection(ld);
    for (size_t i = 0; i < ld->nanchors; i++) {
        free(ld->anchors[i].name);
        free(ld->anchors[i].text);
    }
    free(ld->anchors);
    strindex_free(&ld->anchor_ix);
    tn_value_free(ld->discarded);
}

int tn_yaml_load_string(tn_doc *doc, const char *name, const char *text, size_t len,
                        tn_diag *diag)
{
    int errors_before = tn_diag_errors(diag);
    if (!text) { /* libyaml asserts on a NULL input */
        text = "";
        len = 0;
    }
    loader ld = { .doc = doc, .diag = diag, .text = text, .len = len };
    ld.file = tn_doc_intern(doc, name);

    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        tn_diag_error(diag, start_pos(&ld), "out of memory");
        goto done;
    }
    /* Config files are UTF-8. Pinning it keeps libyaml's byte offsets (the
     * only position it gives for encoding errors) in this file's bytes. */
    yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);

    bool end = false;
    while (!end && !ld.fatal) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            report_parser_error(&ld, &parser);
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            end = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (ld.documents++ > 0)
                fatal(&ld, mark_pos(&ld, ev.start_mark), "only one YAML document is allowed");
            break;
        case YAML_MAPPING_START_EVENT:
            on_collection_start(&ld, &ev, TN_V_OBJECT,
                                (const char *)ev.data.mapping_start.anchor);
            break;
        case YAML_SEQUENCE_START_EVENT:
            on_collection_start(&ld, &ev, TN_V_ARRAY,
                                (const char *)ev.data.sequence_start.anchor);
            break;
        case YAML_MAPPING_END_EVENT:
        case YAML_SEQUENCE_END_EVENT:
            close_collection(&ld);
            break;
        case YAML_SCALAR_EVENT:
            on_scalar(&ld, &ev);
            break;
        case YAML_ALIAS_EVENT:
            on_alias(&ld, &ev);
            break;
        default: /* stream start, document end */
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);

done:
    loader_free(&ld);
    tn_value_free(doc->root);
    doc->root = ld.root;
    if (!doc->root) {
        doc->root = tn_value_new(TN_V_OBJECT, start_pos(&ld));
        if (!doc->root && tn_diag_errors(diag) == errors_before)
            tn_diag_error(diag, start_pos(&ld), "out of memory");
    }
    return tn_diag_errors(diag) > errors_before ? -1 : 0;
}

/* A failed load still leaves an (empty) object, as a failed parse does, so
 * callers never have to check doc->root for NULL. */
static int load_failed(tn_doc *doc, tn_pos pos, tn_diag *diag, const char *what,
                       const char *path, int err)
{
    tn_diag_error(diag, pos, "%s %s: %s", what, path, strerror(err));
    tn_value_free(doc->root);
    doc->root = tn_value_new(TN_V_OBJECT, pos);
    return -1;
}

int tn_yaml_load_file(tn_doc *doc, const char *path, tn_diag *diag)
{
    tn_pos pos = { tn_doc_intern(doc, path), 1, 1 };
    FILE *f = fopen(path, "rb");
    if (!f)
        return load_failed(doc, pos, diag, "cannot open", path, errno);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 16384;
            char *n = realloc(buf, ncap);
            if (!n) {
                free(buf);
                fclose(f);
                return load_failed(doc, pos, diag, "cannot read", path, ENOMEM);
            }
            buf = n;
            cap = ncap;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        int err = errno;
        free(buf);
        fclose(f);
        return load_failed(doc, pos, diag, "cannot read", path, err);
    }
    fclose(f);
    int rc = tn_yaml_load_string(doc, path, buf, len, diag);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------------
 * Emitter. */

/* Writes the shortest decimal form that reads back as the same double, and
 * makes sure it still looks like a float ("1.0", not "1", which is an int). */
static void format_float(double f, char *buf, size_t size)
{
    if (isnan(f)) {
        snprintf(buf, size, ".nan"); /* reads back as a string: see resolve_plain */
        return;
    }
    if (isinf(f)) {
        snprintf(buf, size, f < 0 ? "-.inf" : ".inf");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, f);
        if (strtod(buf, NULL) == f)
            break;
    }
    if (!strpbrk(buf, ".eE"))
        strncat(buf, ".0", size - strlen(buf) - 1);
}

/* Would a YAML 1.1 reader (other tools reading our dump) take this plain word
 * for a boolean? We read them as strings, but quoting them costs nothing. */
static bool yaml11_bool(const char *s, size_t len)
{
    static const char *const words[] = {
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
        "on", "On", "ON", "off", "Off", "OFF", NULL,
    };
    return word_in(s, len, words);
}

/* Control characters and Unicode line breaks: libyaml would otherwise pick a
 * single-quoted or block style whose line folding is easy to get wrong. */
static bool needs_escapes(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7F)
            return true;
        if (c == 0xC2 && i + 1 < len && (unsigned char)s[i + 1] == 0x85) /* NEL */
            return true;
        if (c == 0xE2 && i + 2 < len && (unsigned char)s[i + 1] == 0x80 &&
            ((unsigned char)s[i + 2] == 0xA8 || (unsigned char)s[i + 2] == 0xA9))
            return true; /* LS, PS */
    }
    return false;
}

static yaml_scalar_style_t string_style(const char *s, size_t len, bool key)
{
    if (needs_escapes(s, len))
        return YAML_DOUBLE_QUOTED_SCALAR_STYLE;
    if (key) /* keys are never resolved, so any spelling reads back */
        return YAML_ANY_SCALAR_STYLE;
    if (len == 0 || resolve_plain(s, len).kind != RES_STRING || yaml11_bool(s, len))
        return YAML_DOUBLE_QUOTED_SCALAR_STYLE;
    return YAML_ANY_SCALAR_STYLE;
}

static int emit_scalar(yaml_emitter_t *e, const char *s, size_t len, yaml_scalar_style_t style)
{
    yaml_event_t ev;
    if (len > INT32_MAX)
        return -1;
    if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)len, 1, 1,
                                      style))
        return -1; /* also: not valid UTF-8, which YAML cannot carry */
    return yaml_emitter_emit(e, &ev) ? 0 : -1;
}

static int emit_value(yaml_emitter_t *e, const tn_value *v, int depth)
{
    yaml_event_t ev;
    char buf[64];

    /* Trees come from the parsers, which cap nesting at 64; this only keeps a
     * hand-built cyclic or absurd tree from overflowing the stack. */
    if (depth > 10000)
        return -1;
    switch (v->type) {
    case TN_V_NULL:
        return emit_scalar(e, "null", 4, YAML_PLAIN_SCALAR_STYLE);
    case TN_V_BOOL:
        return v->u.b ? emit_scalar(e, "true", 4, YAML_PLAIN_SCALAR_STYLE)
                      : emit_scalar(e, "false", 5, YAML_PLAIN_SCALAR_STYLE);
    case TN_V_INT:
        snprintf(buf, sizeof(buf), "%" PRId64, v->u.i);
        return emit_scalar(e, buf, strlen(buf), YAML_PLAIN_SCALAR_STYLE);
    case TN_V_FLOAT:
        format_float(v->u.f, buf, sizeof(buf));
        return emit_scalar(e, buf, strlen(buf), YAML_PLAIN_SCALAR_STYLE);
    case TN_V_STRING:
        return emit_scalar(e, v->u.s.ptr, v->u.s.len,
                           string_style(v->u.s.ptr, v->u.s.len, false));
    case TN_V_ARRAY:
        if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                                  v->u.a.len ? YAML_BLOCK_SEQUENCE_STYLE
                                                             : YAML_FLOW_SEQUENCE_STYLE) ||
            !yaml_emitter_emit(e, &ev))
            return -1;
        for (size_t i = 0; i < v->u.a.len; i++)
            if (emit_value(e, v->u.a.items[i], depth + 1) < 0)
                return -1;
        if (!yaml_sequence_end_event_initialize(&ev) || !yaml_emitter_emit(e, &ev))
            return -1;
        return 0;
    case TN_V_OBJECT:
        if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                                 v->u.o.len ? YAML_BLOCK_MAPPING_STYLE
                                                            : YAML_FLOW_MAPPING_STYLE) ||
            !yaml_emitter_emit(e, &ev))
            return -1;
        for (size_t i = 0; i < v->u.o.len; i++) {
            const tn_member *m = &v->u.o.items[i];
            size_t klen = strlen(m->key);
            if (emit_scalar(e, m->key, klen, string_style(m->key, klen, true)) < 0 ||
                emit_value(e, m->val, depth + 1) < 0)
                return -1;
        }
        if (!yaml_mapping_end_event_initialize(&ev) || !yaml_emitter_emit(e, &ev))
            return -1;
        return 0;
    }
    return -1;
}

static int emit_document(yaml_emitter_t *e, const tn_value *v)
{
    yaml_event_t ev;
    yaml_emitter_set_unicode(e, 1);
    yaml_emitter_set_width(e, -1); /* never fold long strings */
    yaml_emitter_set_indent(e, 2);
    if (!yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) ||
        !yaml_emitter_emit(e, &ev))
        return -1;
    if (!yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) ||
        !yaml_emitter_emit(e, &ev))
        return -1;
    if (emit_value(e, v, 0) < 0)
        return -1;
    if (!yaml_document_end_event_initialize(&ev, 1) || !yaml_emitter_emit(e, &ev))
        return -1;
    if (!yaml_stream_end_event_initialize(&ev) || !yaml_emitter_emit(e, &ev))
        return -1;
    return yaml_emitter_flush(e) ? 0 : -1;
}

int tn_yaml_emit_file(const tn_value *v, FILE *out)
{
    yaml_emitter_t e;
    if (!v || !yaml_emitter_initialize(&e))
        return -1;
    yaml_emitter_set_output_file(&e, out);
    int rc = emit_document(&e, v);
    yaml_emitter_delete(&e);
    return rc;
}

typedef struct outbuf {
    char *p;
    size_t len, cap;
} outbuf;

static int outbuf_write(void *data, unsigned char *buf, size_t size)
{
    outbuf *o = data;
    if (size + 1 > o->cap - o->len) {
        size_t ncap = o->cap ? o->cap : 256;
        while (size + 1 > ncap - o->len)
            ncap *= 2;
        char *n = realloc(o->p, ncap);
        if (!n)
            return 0;
        o->p = n;
        o->cap = ncap;
    }
    memcpy(o->p + o->len, buf, size);
    o->len += size;
    o->p[o->len] = '\0';
    return 1;
}

int tn_yaml_emit_string(const tn_value *v, char **out, size_t *len)
{
    yaml_emitter_t e;
    outbuf o = { 0 };
    *out = NULL;
    if (len)
        *len = 0;
    if (!v || !yaml_emitter_initialize(&e))
        return -1;
    yaml_emitter_set_output(&e, outbuf_write, &o);
    int rc = emit_document(&e, v);
    yaml_emitter_delete(&e);
    if (rc == 0 && !o.p)
        rc = outbuf_write(&o, (unsigned char *)"", 0) ? 0 : -1;
    if (rc < 0) {
        free(o.p);
        return -1;
    }
    *out = o.p;
    if (len)
        *len = o.len;
    return 0;
}
