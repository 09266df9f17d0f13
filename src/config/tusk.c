/* SPDX-License-Identifier: MIT */
/* tusk.c - the TuskLang-style configuration parser.
 *
 * This file owns everything between the bytes of a .conf/.tsk file and the
 * tn_value tree: input validation (UTF-8, NUL), the lexer, a recursive-descent
 * parser that recovers after errors so one run reports many of them, and the
 * evaluation done while parsing: $variables, '+' concatenation, @env, @file
 * and @include (globbing, cycle detection, merging into the including
 * object). The schema never sees syntax, only the tree and its positions.
 *
 * The input is untrusted (a fuzzer drives tn_tusk_parse_string), so every
 * recursion is bounded by TN_TUSK_MAX_DEPTH, what variables, '+' and @file
 * can produce is capped by a byte budget (a few short lines can otherwise
 * describe an exponentially large tree), so are the number and total size
 * of the files one parse reads, an include cycle ends the parse, and
 * duplicate-key checks in large objects go through a hash index so a file
 * with many keys stays linear. */
#include "config/tusk.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A config or @file bigger than this is a mistake, not a config. */
#define MAX_FILE ((size_t)16 << 20)
#define MAX_FILE_TEXT "larger than 16 MiB"
/* Longest string '+' may build. */
#define MAX_CONCAT ((size_t)16 << 20)
/* Total bytes variables, '+' and @file may produce in one parse. */
#define EXPAND_BUDGET ((size_t)64 << 20)
/* What one parse may read: every file (the config, its includes, @file
 * files) counts. Without a total, twenty files each including a directory
 * of twenty more describe 20^n reads in a few lines. */
#define MAX_FILES 256
#define MAX_TOTAL ((size_t)16 << 20)
/* Each @include globs or resolves a path even when it matches nothing:
 * 16 MiB of those take seconds. */
#define MAX_INCLUDES 256
/* Objects with fewer members are searched linearly; the index would cost more. */
#define INDEX_MIN 16
/* Longest piece of user text quoted in a message. */
#define SNIP 40

/* ---- small helpers */

typedef struct strbuf {
    char *ptr;
    size_t len, cap;
} strbuf;

static int sb_add(strbuf *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->ptr, cap);
        if (!np)
            return -1;
        b->ptr = np;
        b->cap = cap;
    }
    if (n)
        memcpy(b->ptr + b->len, s, n);
    b->len += n;
    b->ptr[b->len] = '\0';
    return 0;
}

static int sb_adds(strbuf *b, const char *s) { return sb_add(b, s, strlen(s)); }

static bool is_digit(int c) { return c >= '0' && c <= '9'; }
static bool is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_ident_start(int c) { return is_alpha(c) || c == '_'; }
static bool is_ident(int c) { return is_ident_start(c) || is_digit(c) || c == '.' || c == '-'; }

/* Length of the UTF-8 sequence at S (at most N bytes) or 0 if it is not one:
 * overlong forms, surrogates and values past U+10FFFF are rejected too, so
 * everything downstream can trust its strings. */
static size_t u8_valid(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t k;
    uint32_t cp, min;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        k = 1, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        k = 2, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        k = 3, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    if (n <= k)
        return 0;
    for (size_t j = 1; j <= k; j++) {
        if ((s[j] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[j] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return k + 1;
}

/* Sequence length from a lead byte of already validated text. */
static int u8_len(unsigned char c) { return c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2; }

/* User text for a message, cut on a character boundary so that a huge key
 * or token cannot flood the report. */
static const char *snip(char buf[SNIP + 4], const char *s, size_t len)
{
    size_t n = len;
    if (n > SNIP) {
        n = SNIP;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(buf, s, n);
    strcpy(buf + n, n < len ? "..." : "");
    return buf;
}

/* The directory relative paths in PATH resolve against; "" is the cwd. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup("");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static char *path_join(const char *dir, const char *rel)
{
    char *out = NULL;
    if (rel[0] == '/' || dir[0] == '\0')
        return strdup(rel);
    size_t n = strlen(dir);
    if (asprintf(&out, "%s%s%s", dir, dir[n - 1] == '/' ? "" : "/", rel) < 0)
        return NULL;
    return out;
}

static const char *not_regular(const struct stat *st)
{
    if (S_ISDIR(st->st_mode))
        return strerror(EISDIR);
    return S_ISREG(st->st_mode) ? NULL : "not a regular file";
}

/* Reads a whole regular file of at most LIMIT bytes. Anything else is
 * refused before it is opened: a FIFO or /dev/stdin would hang the daemon,
 * and opening some devices has side effects (an @include of all of /dev). */
static int read_all(const char *path, size_t limit, char **out, size_t *outlen, const char **why)
{
    *out = NULL;
    *outlen = 0;
    struct stat st;
    if (stat(path, &st) < 0) {
        *why = strerror(errno);
        return -1;
    }
    if ((*why = not_regular(&st)))
        return -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        *why = strerror(errno);
        return -1;
    }
    char *buf = NULL;
    size_t len = 0, cap;
    /* Checked again on what was opened: the path may have been swapped. */
    if (fstat(fd, &st) < 0) {
        *why = strerror(errno);
        goto fail;
    }
    if ((*why = not_regular(&st)))
        goto fail;
    if ((uint64_t)st.st_size > limit) {
        *why = MAX_FILE_TEXT;
        goto fail;
    }
    cap = (size_t)st.st_size + 1;
    if (cap < 256)
        cap = 256;
    buf = malloc(cap);
    if (!buf) {
        *why = strerror(ENOMEM);
        goto fail;
    }
    for (;;) {
        if (len == cap) {
            /* The file grew (or /proc lied about its size). */
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                *why = strerror(ENOMEM);
                goto fail;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            *why = strerror(errno);
            goto fail;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > limit) {
            *why = MAX_FILE_TEXT;
            goto fail;
        }
    }
    close(fd);
    *out = buf;
    *outlen = len;
    return 0;
fail:
    free(buf);
    close(fd);
    return -1;
}

/* ---- parser state */

enum {
    T_EOF, T_NL, T_ERROR, /* T_ERROR: the lexer already reported it */
    T_IDENT, T_STR, T_INT, T_FLOAT, T_UNIT, T_VAR, T_FUNC,
    T_LBRACE, T_RBRACE, T_LBRACK, T_RBRACK, T_LPAREN, T_RPAREN, T_GT, T_LT,
    T_COLON, T_EQ, T_COMMA, T_PLUS,
};

typedef struct tok {
    int t;
    tn_pos pos;
    int nest;        /* bracket nesting before this token, for error recovery */
    size_t off, len; /* source span: identifier, number, $/@ name without sigil */
    int64_t i;
    double f;        /* T_STR text lives in parser.sb until the next token */
} tok;

typedef struct src {
    const char *name; /* interned */
    char *dir;        /* relative @file/@include paths resolve against this */
    const char *text;
    size_t len, off;
    int line, col;
    int nest;
    bool abort;       /* stop this file: depth exceeded or out of memory */
} src;

typedef struct var {
    char *name;
    tn_value *val; /* NULL: its definition failed, uses stay silent */
    size_t cost;   /* what one expansion costs against the budget */
    int depth;     /* container levels inside val */
    struct var *next;
} var;

/* Lazily built hash of an object's keys: slot holds member index + 1. The
 * object only ever grows by appending, so catching up is enough to stay
 * valid; frees go through val_free(), which drops the index first so a
 * recycled address can never find a stale one. */
typedef struct kindex {
    const tn_value *obj;
    struct kindex *next;
    uint32_t *slot;
    size_t nslot, n;
} kindex;

typedef struct incl {
    const char *name; /* as shown in messages */
    char *real;       /* realpath, NULL if the source has none */
} incl;

typedef struct parser {
    tn_doc *doc;
    tn_diag *diag;
    src *s;
    tok cur;
    strbuf sb;
    int depth;
    bool quiet; /* skipping after an error: what follows is noise */
    var **vars;
    size_t nvb, nvars;
    kindex **kx;
    size_t nkb, nkx;
    incl stack[TN_TUSK_MAX_DEPTH + 2];
    int nstack;
    size_t expanded;
    int files;   /* read so far, against MAX_FILES */
    int includes; /* @include statements run, against MAX_INCLUDES */
    size_t read; /* bytes of them, against MAX_TOTAL */
    bool stop;   /* the whole parse ends: every file on the stack aborts */
} parser;

static void perr(parser *p, tn_pos pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void perr(parser *p, tn_pos pos, const char *fmt, ...)
{
    if (p->quiet || (p->s && p->s->abort))
        return;
    va_list ap;
    va_start(ap, fmt);
    tn_diag_verror(p->diag, pos, false, fmt, ap);
    va_end(ap);
}

static void oom(parser *p)
{
    perr(p, p->cur.pos, "out of memory");
    if (p->s)
        p->s->abort = true;
}

/* After an include cycle or past a read limit: whatever follows could only
 * repeat the error, at a cost that may grow exponentially. */
static void stop(parser *p)
{
    p->stop = true;
    if (p->s)
        p->s->abort = true;
}

/* Counts a file about to be read (LEN < 0) or the bytes of one just read. */
static int read_budget(parser *p, tn_pos at, ssize_t len)
{
    if (len < 0 && p->files >= MAX_FILES) {
        perr(p, at, "include limit: more than %d files (config, includes, @file) for one configuration", MAX_FILES);
    } else if (len >= 0 && (size_t)len > MAX_TOTAL - p->read) {
        perr(p, at, "include limit: the files of one configuration hold more than %zu MiB together", MAX_TOTAL >> 20);
    } else {
        if (len < 0)
            p->files++;
        else
            p->read += (size_t)len;
        return 0;
    }
    stop(p);
    return -1;
}

static int charge(parser *p, tn_pos pos, size_t n)
{
    if (n > EXPAND_BUDGET - p->expanded) {
        perr(p, pos, "expansion limit exceeded: variables, '+' and @file produced more than %zu MiB",
             EXPAND_BUDGET >> 20);
        p->expanded = EXPAND_BUDGET;
        return -1;
    }
    p->expanded += n;
    return 0;
}

/* ---- key index */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static size_t hash_ptr(const void *ptr)
{
    uint64_t x = (uint64_t)(uintptr_t)ptr;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static kindex **kx_link(parser *p, const tn_value *obj)
{
    kindex **l = &p->kx[hash_ptr(obj) & (p->nkb - 1)];
    while (*l && (*l)->obj != obj)
        l = &(*l)->next;
    return l;
}

static kindex *kx_get(parser *p, const tn_value *obj)
{
    if (p->nkx + 1 > p->nkb) {
        size_t nb = p->nkb ? p->nkb * 2 : 64;
        kindex **n = calloc(nb, sizeof(*n));
        if (!n)
            return NULL;
        for (size_t i = 0; i < p->nkb; i++) {
            for (kindex *k = p->kx[i], *next; k; k = next) {
                next = k->next;
                size_t h = hash_ptr(k->obj) & (nb - 1);
                k->next = n[h];
                n[h] = k;
            }
        }
        free(p->kx);
        p->kx = n;
        p->nkb = nb;
    }
    kindex **l = kx_link(p, obj);
    if (!*l) {
        kindex *k = calloc(1, sizeof(*k));
        if (!k)
            return NULL;
        k->obj = obj;
        *l = k;
        p->nkx++;
    }
    return *l;
}

static void kx_insert(kindex *k, size_t idx)
{
    size_t mask = k->nslot - 1, h = hash_str(k->obj->u.o.items[idx].key) & mask;
    while (k->slot[h])
        h = (h + 1) & mask;
    k->slot[h] = (uint32_t)(idx + 1);
}

static int kx_sync(kindex *k)
{
    size_t len = k->obj->u.o.len;
    if (len > UINT32_MAX - 1)
        return -1;
    if (len * 2 > k->nslot) {
        size_t ns = k->nslot ? k->nslot : 64;
        while (len * 2 > ns)
            ns *= 2;
        uint32_t *slot = calloc(ns, sizeof(*slot));
        if (!slot)
            return -1;
        free(k->slot);
        k->slot = slot;
        k->nslot = ns;
        for (size_t i = 0; i < k->n; i++)
            kx_insert(k, i);
    }
    for (; k->n < len; k->n++)
        kx_insert(k, k->n);
    return 0;
}

static tn_member *obj_find(parser *p, tn_value *obj, const char *key)
{
    if (obj->u.o.len < INDEX_MIN)
        return tn_object_find(obj, key);
    kindex *k = kx_get(p, obj);
    if (!k || kx_sync(k) < 0)
        return tn_object_find(obj, key); /* out of memory: slow but right */
    size_t mask = k->nslot - 1;
    for (size_t h = hash_str(key) & mask; k->slot[h]; h = (h + 1) & mask) {
        tn_member *m = &obj->u.o.items[k->slot[h] - 1];
        if (strcmp(m->key, key) == 0)
            return m;
    }
    return NULL;
}

static void kx_forget(parser *p, const tn_value *v)
{
    if (v->type == TN_V_ARRAY) {
        for (size_t i = 0; i < v->u.a.len; i++)
            kx_forget(p, v->u.a.items[i]);
    } else if (v->type == TN_V_OBJECT) {
        kindex **l = kx_link(p, v);
        if (*l) {
            kindex *k = *l;
            *l = k->next;
            free(k->slot);
            free(k);
            p->nkx--;
        }
        for (size_t i = 0; i < v->u.o.len; i++)
            if (v->u.o.items[i].val)
                kx_forget(p, v->u.o.items[i].val);
    }
}

static void val_free(parser *p, tn_value *v)
{
    if (!v)
        return;
    if (p->nkx)
        kx_forget(p, v);
    tn_value_free(v);
}

/* Makes room first so that tn_object_add/tn_array_push cannot fail and free
 * a value whose index we still hold. */
static int reserve(void **items, size_t *cap, size_t len, size_t size)
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

static int arr_push(parser *p, tn_value *arr, tn_value *item)
{
    if (reserve((void **)&arr->u.a.items, &arr->u.a.cap, arr->u.a.len, sizeof(tn_value *)) < 0) {
        val_free(p, item);
        oom(p);
        return -1;
    }
    return tn_array_push(arr, item);
}

static void obj_put(parser *p, tn_value *obj, char *key, tn_pos kpos, tn_value *val);

static void dup_error(parser *p, const tn_member *first, const char *key, tn_pos kpos)
{
    char b[SNIP + 4];
    /* The file name only when it differs: an included fragment clashing. */
    if (first->key_pos.file == kpos.file)
        perr(p, kpos, "duplicate key '%s' (first defined at %d:%d)", snip(b, key, strlen(key)),
             first->key_pos.line, first->key_pos.col);
    else
        perr(p, kpos, "duplicate key '%s' (first defined at %s:%d:%d)",
             snip(b, key, strlen(key)), first->key_pos.file, first->key_pos.line,
             first->key_pos.col);
}

/* Repeated sections, included fragments and `a { }` after `a { }` combine. */
static void merge(parser *p, tn_value *dst, tn_value *from)
{
    if (p->nkx) {
        kindex **l = kx_link(p, from);
        if (*l) {
            kindex *k = *l;
            *l = k->next;
            free(k->slot);
            free(k);
            p->nkx--;
        }
    }
    for (size_t i = 0; i < from->u.o.len; i++) {
        tn_member m = from->u.o.items[i];
        from->u.o.items[i].key = NULL;
        from->u.o.items[i].val = NULL;
        obj_put(p, dst, m.key, m.key_pos, m.val);
    }
    from->u.o.len = 0;
    tn_value_free(from);
}

/* Adds KEY: VAL to OBJ; takes ownership of both. */
static void obj_put(parser *p, tn_value *obj, char *key, tn_pos kpos, tn_value *val)
{
    tn_member *m = obj_find(p, obj, key);
    if (!m) {
        if (reserve((void **)&obj->u.o.items, &obj->u.o.cap, obj->u.o.len, sizeof(tn_member)) < 0) {
            free(key);
            val_free(p, val);
            oom(p);
            return;
        }
        tn_object_add(obj, key, kpos, val);
        return;
    }
    if (m->val->type == TN_V_OBJECT && val->type == TN_V_OBJECT) {
        free(key);
        merge(p, m->val, val);
        return;
    }
    dup_error(p, m, key, kpos);
    free(key);
    val_free(p, val);
}

/* ---- variables */

static var **var_link(parser *p, const char *name)
{
    var **l = &p->vars[hash_str(name) & (p->nvb - 1)];
    while (*l && strcmp((*l)->name, name) != 0)
        l = &(*l)->next;
    return l;
}

static var *var_find(parser *p, const char *name)
{
    return p->nvb ? *var_link(p, name) : NULL;
}

static void measure(const tn_value *v, size_t *cost, int *depth)
{
    int d = 0;
    *cost += sizeof(tn_value);
    if (v->type == TN_V_STRING) {
        *cost += v->u.s.len + 1;
    } else if (v->type == TN_V_ARRAY) {
        for (size_t i = 0; i < v->u.a.len; i++) {
            int cd = 0;
            measure(v->u.a.items[i], cost, &cd);
            if (cd > d)
                d = cd;
        }
        *cost += v->u.a.len * sizeof(tn_value *);
        d++;
    } else if (v->type == TN_V_OBJECT) {
        for (size_t i = 0; i < v->u.o.len; i++) {
            int cd = 0;
            measure(v->u.o.items[i].val, cost, &cd);
            if (cd > d)
                d = cd;
            *cost += sizeof(tn_member) + strlen(v->u.o.items[i].key) + 1;
        }
        d++;
    }
    *depth = d;
}

/* Takes ownership of NAME and VAL (NULL marks a failed definition). */
static void var_set(parser *p, char *name, tn_value *val)
{
    if (p->nvars + 1 > p->nvb) {
        size_t nb = p->nvb ? p->nvb * 2 : 64;
        var **n = calloc(nb, sizeof(*n));
        if (!n) {
            free(name);
            val_free(p, val);
            oom(p);
            return;
        }
        for (size_t i = 0; i < p->nvb; i++) {
            for (var *e = p->vars[i], *next; e; e = next) {
                next = e->next;
                size_t h = hash_str(e->name) & (nb - 1);
                e->next = n[h];
                n[h] = e;
            }
        }
        free(p->vars);
        p->vars = n;
        p->nvb = nb;
    }
    var **l = var_link(p, name);
    var *e = *l;
    if (e) {
        free(name);
        val_free(p, e->val);
    } else {
        e = calloc(1, sizeof(*e));
        if (!e) {
            free(name);
            val_free(p, val);
            oom(p);
            return;
        }
        e->name = name;
        *l = e;
        p->nvars++;
    }
    e->val = val;
    e->cost = 0;
    e->depth = 0;
    if (val)
        measure(val, &e->cost, &e->depth);
}

/* ---- lexer */

static tn_pos here(const src *s) { return (tn_pos){ s->name, s->line, s->col }; }

static int peekc(const src *s, size_t k)
{
    return s->off + k < s->len ? (unsigned char)s->text[s->off + k] : -1;
}

static void adv(src *s)
{
    unsigned char c = (unsigned char)s->text[s->off++];
    if (c == '\n') {
        if (s->line < INT_MAX)
            s->line++;
        s->col = 1;
    } else if ((c & 0xC0) != 0x80 && s->col < INT_MAX) {
        s->col++;
    }
}

static bool at_newline(const src *s)
{
    int c = peekc(s, 0);
    return c == '\n' || (c == '\r' && peekc(s, 1) == '\n');
}

/* Rejects what the lexer must never see, before it sees any of it. */
static int validate(parser *p, src *s)
{
    const unsigned char *t = (const unsigned char *)s->text;
    size_t i = 0;
    int line = 1, col = 1;
    if (s->len >= 3 && t[0] == 0xEF && t[1] == 0xBB && t[2] == 0xBF)
        i = s->off = 3; /* a BOM some editors add; not a character */
    while (i < s->len) {
        tn_pos pos = { s->name, line, col };
        if (t[i] == 0) {
            perr(p, pos, "NUL byte in input");
            return -1;
        }
        size_t n = u8_valid(t + i, s->len - i);
        if (!n) {
            perr(p, pos, "invalid UTF-8");
            return -1;
        }
        if (t[i] == '\n') {
            if (line < INT_MAX)
                line++;
            col = 1;
        } else if (col < INT_MAX) {
            col++;
        }
        i += n;
    }
    return 0;
}

static int lex_string(parser *p, tok *t)
{
    src *s = p->s;
    strbuf *b = &p->sb;
    bool bad = false, raw = peekc(s, 0) == '\'';
    b->len = 0;
    if (sb_add(b, "", 0) < 0)
        goto nomem;
    adv(s);
    for (;;) {
        int c = peekc(s, 0);
        if (c < 0 || at_newline(s)) {
            perr(p, t->pos, "unterminated string");
            return T_ERROR;
        }
        if (c == (raw ? '\'' : '"')) {
            adv(s);
            return bad ? T_ERROR : T_STR;
        }
        if (raw || c != '\\') {
            /* Copy the run up to the next interesting byte in one go: a
             * megabyte string should cost a megabyte of work. */
            size_t st = s->off;
            while ((c = peekc(s, 0)) >= 0 && c != '\n' && c != '\r' && c != '\\' && c != '\'' &&
                   c != '"')
                adv(s);
            if (s->off == st)
                adv(s);
            if (sb_add(b, s->text + st, s->off - st) < 0)
                goto nomem;
            continue;
        }
        tn_pos epos = here(s);
        adv(s);
        c = peekc(s, 0);
        if (c < 0 || at_newline(s)) {
            perr(p, t->pos, "unterminated string");
            return T_ERROR;
        }
        char out[8];
        int n = 1;
        switch (c) {
        case 'n': out[0] = '\n'; break;
        case 't': out[0] = '\t'; break;
        case 'r': out[0] = '\r'; break;
        case '"': out[0] = '"'; break;
        case '\\': out[0] = '\\'; break;
        case '/': out[0] = '/'; break;
        case 'u': {
            adv(s);
            uint32_t cp = 0;
            bool ok = true;
            for (size_t k = 0; k < 4; k++) {
                int h = tn_hexval(peekc(s, k));
                ok = ok && h >= 0;
                cp = cp << 4 | (uint32_t)(h < 0 ? 0 : h);
            }
            if (!ok) {
                perr(p, epos, "invalid escape '\\u': expected 4 hex digits");
                bad = true;
                continue;
            }
            for (int k = 0; k < 4; k++)
                adv(s);
            if (cp >= 0xD800 && cp <= 0xDBFF && peekc(s, 0) == '\\' && peekc(s, 1) == 'u') {
                uint32_t lo = 0;
                ok = true;
                for (size_t k = 2; k < 6; k++) {
                    int h = tn_hexval(peekc(s, k));
                    ok = ok && h >= 0;
                    lo = lo << 4 | (uint32_t)(h < 0 ? 0 : h);
                }
                if (ok && lo >= 0xDC00 && lo <= 0xDFFF) {
                    for (int k = 0; k < 6; k++)
                        adv(s);
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) {
                perr(p, epos, "invalid escape '\\u%04" PRIX32 "': lone surrogate", cp);
                bad = true;
            } else if (cp == 0) {
                perr(p, epos, "invalid escape '\\u0000': NUL is not allowed");
                bad = true;
            } else {
                n = tn_utf8_put(out, cp);
                if (sb_add(b, out, (size_t)n) < 0)
                    goto nomem;
            }
            continue;
        }
        default: {
            int k = u8_len((unsigned char)c);
            perr(p, epos, "invalid escape '\\%.*s'", k, s->text + s->off);
            bad = true;
            n = 0;
            break;
        }
        }
        /* The escape letter; the rest of a multibyte one is then copied as
         * text, harmless since the string is already rejected. */
        adv(s);
        if (n && sb_add(b, out, (size_t)n) < 0)
            goto nomem;
    }
nomem:
    oom(p);
    return T_ERROR;
}

static int lex_number(parser *p, tok *t)
{
    src *s = p->s;
    bool isfloat = false, unit = false;
    if (peekc(s, 0) == '-')
        adv(s);
    while (is_digit(peekc(s, 0)))
        adv(s);
    if (peekc(s, 0) == '.' && is_digit(peekc(s, 1))) {
        isfloat = true;
        adv(s);
        while (is_digit(peekc(s, 0)))
            adv(s);
    }
    int e = peekc(s, 0), e1 = peekc(s, 1);
    if ((e == 'e' || e == 'E') &&
        (is_digit(e1) || ((e1 == '+' || e1 == '-') && is_digit(peekc(s, 2))))) {
        isfloat = true;
        adv(s);
        if (!is_digit(peekc(s, 0)))
            adv(s);
        while (is_digit(peekc(s, 0)))
            adv(s);
    }
    while (is_alpha(peekc(s, 0))) {
        adv(s);
        unit = true;
    }
    t->len = s->off - t->off;
    const char *text = s->text + t->off;
    char b[SNIP + 4];
    if (is_ident(peekc(s, 0))) {
        while (is_ident(peekc(s, 0)))
            adv(s);
        perr(p, t->pos, "invalid number '%s'", snip(b, text, s->off - t->off));
        return T_ERROR;
    }
    if (unit)
        return T_UNIT;
    if (!isfloat) {
        bool neg = text[0] == '-';
        uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        for (size_t i = neg; i < t->len; i++) {
            unsigned d = (unsigned)(text[i] - '0');
            if (v > (limit - d) / 10) {
                perr(p, t->pos, "integer out of range");
                return T_ERROR;
            }
            v = v * 10 + d;
        }
        t->i = !neg ? (int64_t)v : v == limit ? INT64_MIN : -(int64_t)v;
        return T_INT;
    }
    p->sb.len = 0;
    if (sb_add(&p->sb, text, t->len) < 0) {
        oom(p);
        return T_ERROR;
    }
    t->f = strtod(p->sb.ptr, NULL);
    if (isinf(t->f)) {
        perr(p, t->pos, "number out of range");
        return T_ERROR;
    }
    return T_FLOAT;
}

static void bad_char(parser *p, tok *t)
{
    src *s = p->s;
    int c = peekc(s, 0);
    if (c >= 0x80) {
        int n = u8_len((unsigned char)c);
        perr(p, t->pos, "unexpected character '%.*s'", n, s->text + s->off);
        for (int k = 0; k < n; k++)
            adv(s);
        return;
    }
    if (c > ' ' && c < 0x7F)
        perr(p, t->pos, "unexpected character '%c'", c);
    else
        perr(p, t->pos, "unexpected character U+%04X", (unsigned)c);
    adv(s);
}

static void next(parser *p)
{
    src *s = p->s;
    tok *t = &p->cur;
    for (;;) {
        int c = peekc(s, 0);
        if (c == ' ' || c == '\t' || (c == '\r' && peekc(s, 1) != '\n')) {
            adv(s);
        } else if (c == '#') {
            while (peekc(s, 0) >= 0 && !at_newline(s))
                adv(s);
        } else {
            break;
        }
    }
    t->pos = here(s);
    t->nest = s->nest;
    t->off = s->off;
    t->len = 0;
    if (s->abort || s->off >= s->len) {
        t->t = T_EOF;
        return;
    }
    int c = peekc(s, 0);
    switch (c) {
    case '\r': /* only as part of \r\n here */
        adv(s);
        adv(s);
        t->t = T_NL;
        return;
    case '\n': adv(s); t->t = T_NL; return;
    case '{': adv(s); s->nest++; t->t = T_LBRACE; return;
    case '[': adv(s); s->nest++; t->t = T_LBRACK; return;
    case '(': adv(s); s->nest++; t->t = T_LPAREN; return;
    /* '>' and '<' are also plain bytes a stray one is likely to be, so they
     * do not count as nesting: recovery must not skip to a '<' that never comes. */
    case '>': adv(s); t->t = T_GT; return;
    case '}': adv(s); s->nest--; t->t = T_RBRACE; return;
    case ']': adv(s); s->nest--; t->t = T_RBRACK; return;
    case ')': adv(s); s->nest--; t->t = T_RPAREN; return;
    case '<': adv(s); t->t = T_LT; return;
    case ':': adv(s); t->t = T_COLON; return;
    case '=': adv(s); t->t = T_EQ; return;
    case ',': adv(s); t->t = T_COMMA; return;
    case '+': adv(s); t->t = T_PLUS; return;
    case '"':
    case '\'':
        t->t = lex_string(p, t);
        return;
    case '$':
    case '@':
        adv(s);
        if (!is_ident_start(peekc(s, 0))) {
            perr(p, t->pos, c == '$' ? "expected a variable name after '$'"
                                     : "expected a function name after '@'");
            t->t = T_ERROR;
            return;
        }
        t->off = s->off;
        while (is_ident(peekc(s, 0)))
            adv(s);
        t->len = s->off - t->off;
        t->t = c == '$' ? T_VAR : T_FUNC;
        return;
    default:
        break;
    }
    if (is_digit(c) || (c == '-' && is_digit(peekc(s, 1)))) {
        t->t = lex_number(p, t);
    } else if (is_ident_start(c)) {
        while (is_ident(peekc(s, 0)))
            adv(s);
        t->len = s->off - t->off;
        t->t = T_IDENT;
    } else {
        bad_char(p, t);
        t->t = T_ERROR;
    }
}

static void skip_nl(parser *p)
{
    while (p->cur.t == T_NL)
        next(p);
}

/* What the current token is, for "expected X, found Y". */
static const char *found(parser *p, char buf[SNIP + 8])
{
    static const char *const punct[] = {
        [T_LBRACE] = "'{'", [T_RBRACE] = "'}'", [T_LBRACK] = "'['", [T_RBRACK] = "']'",
        [T_LPAREN] = "'('", [T_RPAREN] = "')'", [T_GT] = "'>'",     [T_LT] = "'<'",
        [T_COLON] = "':'",  [T_EQ] = "'='",     [T_COMMA] = "','",  [T_PLUS] = "'+'",
    };
    const tok *t = &p->cur;
    char b[SNIP + 4];
    switch (t->t) {
    case T_EOF: return "end of file";
    case T_NL: return "end of line";
    case T_STR: return "a string";
    case T_INT:
    case T_FLOAT:
    case T_UNIT: return "a number";
    case T_IDENT:
        snprintf(buf, SNIP + 8, "'%s'", snip(b, p->s->text + t->off, t->len));
        return buf;
    case T_VAR:
    case T_FUNC:
        snprintf(buf, SNIP + 8, "'%c%s'", t->t == T_VAR ? '$' : '@',
                 snip(b, p->s->text + t->off, t->len));
        return buf;
    default: return punct[t->t] ? punct[t->t] : "?";
    }
}

/* ---- parser */

static int parse_value(parser *p, tn_value **out);
static int parse_stmts(parser *p, tn_value *ctx, int closer, tn_pos open, bool top, bool sections_ok);

static int enter(parser *p, tn_pos pos)
{
    if (p->depth >= TN_TUSK_MAX_DEPTH) {
        perr(p, pos, "nesting deeper than %d levels", TN_TUSK_MAX_DEPTH);
        p->s->abort = true;
        return -1;
    }
    p->depth++;
    return 0;
}

static void leave(parser *p) { p->depth--; }

/* After an error, skip the rest of the statement: to the end of the line,
 * but past whole bracketed groups, and stopping before the closer of the
 * enclosing block so that it still ends where it should. */
static void recover(parser *p, int nest0, int closer)
{
    p->quiet = true;
    for (;;) {
        int t = p->cur.t;
        if (t == T_EOF || p->s->abort)
            break;
        if ((t == T_NL || t == closer) && p->cur.nest <= nest0)
            break;
        next(p);
    }
    p->quiet = false;
}

static char *tok_text(parser *p)
{
    const tok *t = &p->cur;
    char *k = t->t == T_STR ? strndup(p->sb.ptr, p->sb.len) : strndup(p->s->text + t->off, t->len);
    if (!k)
        oom(p);
    return k;
}

static int parse_block(parser *p, tn_value **out, int closer)
{
    tn_pos open = p->cur.pos;
    if (enter(p, open) < 0)
        return -1;
    tn_value *obj = tn_value_new(TN_V_OBJECT, open);
    if (!obj) {
        oom(p);
        leave(p);
        return -1;
    }
    next(p);
    int rc = parse_stmts(p, obj, closer, open, false, false);
    leave(p);
    if (rc < 0) {
        val_free(p, obj);
        return -1;
    }
    *out = obj;
    return 0;
}

static int parse_array(parser *p, tn_value **out)
{
    tn_pos open = p->cur.pos;
    char fb[SNIP + 8];
    if (enter(p, open) < 0)
        return -1;
    tn_value *arr = tn_value_new(TN_V_ARRAY, open);
    if (!arr) {
        oom(p);
        leave(p);
        return -1;
    }
    next(p);
    skip_nl(p);
    for (;;) {
        if (p->cur.t == T_RBRACK) {
            next(p);
            break;
        }
        if (p->cur.t == T_EOF) {
            perr(p, open, "unterminated array: missing ']' before end of file");
            goto fail;
        }
        tn_value *item;
        if (parse_value(p, &item) < 0 || arr_push(p, arr, item) < 0)
            goto fail;
        bool sep = false;
        if (p->cur.t == T_NL) {
            skip_nl(p);
            sep = true;
        }
        if (p->cur.t == T_COMMA) {
            next(p);
            skip_nl(p);
            sep = true;
        }
        if (!sep && p->cur.t != T_RBRACK && p->cur.t != T_EOF) {
            if (p->cur.t != T_ERROR)
                perr(p, p->cur.pos, "expected ',' or ']' after array item, found %s", found(p, fb));
            goto fail;
        }
    }
    leave(p);
    *out = arr;
    return 0;
fail:
    leave(p);
    val_free(p, arr);
    return -1;
}

static int use_var(parser *p, tn_value **out)
{
    char b[SNIP + 4];
    tok t = p->cur;
    char *name = tok_text(p);
    if (!name)
        return -1;
    var *e = var_find(p, name);
    int rc = -1;
    if (!e) {
        perr(p, t.pos, "undefined variable $%s", snip(b, name, t.len));
    } else if (e->val) {
        if (p->depth + e->depth > TN_TUSK_MAX_DEPTH) {
            perr(p, t.pos, "nesting deeper than %d levels", TN_TUSK_MAX_DEPTH);
        } else if (charge(p, t.pos, e->cost) == 0) {
            *out = tn_value_clone(e->val);
            if (!*out) {
                oom(p);
            } else {
                (*out)->pos = t.pos;
                next(p);
                rc = 0;
            }
        }
    }
    free(name);
    return rc;
}

static void fmt_double(char *buf, size_t n, double f)
{
    /* The shortest text that reads back as the same number. */
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, f);
        if (strtod(buf, NULL) == f)
            return;
    }
}

static int render(parser *p, strbuf *b, const tn_value *v)
{
    char num[64];
    const char *s = num;
    size_t len;
    switch (v->type) {
    case TN_V_STRING:
        s = v->u.s.ptr;
        len = v->u.s.len;
        break;
    case TN_V_INT:
        snprintf(num, sizeof(num), "%" PRId64, v->u.i);
        len = strlen(num);
        break;
    case TN_V_FLOAT:
        fmt_double(num, sizeof(num), v->u.f);
        len = strlen(num);
        break;
    case TN_V_BOOL:
        s = v->u.b ? "true" : "false";
        len = strlen(s);
        break;
    default:
        perr(p, v->pos, "cannot concatenate %s", tn_vtype_name(v->type));
        return -1;
    }
    if (len > MAX_CONCAT - b->len) {
        perr(p, v->pos, "concatenated string longer than %zu MiB", MAX_CONCAT >> 20);
        return -1;
    }
    if (sb_add(b, s, len) < 0) {
        oom(p);
        return -1;
    }
    return 0;
}

enum { F_ENV, F_FILE, F_INCLUDE, F_UNKNOWN };

static int func_kind(const char *name, size_t len)
{
    if (len == 3 && memcmp(name, "env", 3) == 0)
        return F_ENV;
    if (len == 4 && memcmp(name, "file", 4) == 0)
        return F_FILE;
    if (len == 7 && memcmp(name, "include", 7) == 0)
        return F_INCLUDE;
    return F_UNKNOWN;
}

static void parse_source(parser *p, src *s, tn_value *ctx, bool sections_ok);

static void include_one(parser *p, tn_value *ctx, bool sections_ok, tn_pos at, const char *path)
{
    char *real = realpath(path, NULL);
    if (!real) {
        perr(p, at, "cannot open include file %s: %s", path, strerror(errno));
        return;
    }
    for (int i = 0; i < p->nstack; i++) {
        if (!p->stack[i].real || strcmp(p->stack[i].real, real) != 0)
            continue;
        strbuf b = { 0 };
        sb_adds(&b, "include cycle: ");
        for (int j = i; j < p->nstack; j++) {
            sb_adds(&b, p->stack[j].name);
            sb_adds(&b, " -> ");
        }
        sb_adds(&b, path);
        perr(p, at, "%s", b.ptr ? b.ptr : "include cycle");
        stop(p);
        free(b.ptr);
        free(real);
        return;
    }
    char *text;
    size_t len;
    const char *why;
    if (read_budget(p, at, -1) < 0) {
        free(real);
        return;
    }
    if (read_all(path, MAX_FILE, &text, &len, &why) < 0) {
        perr(p, at, "cannot open include file %s: %s", path, why);
        free(real);
        return;
    }
    if (read_budget(p, at, (ssize_t)len) < 0) {
        free(text);
        free(real);
        return;
    }
    src ns = { .name = tn_doc_intern(p->doc, path), .dir = dir_of(path), .text = text,
               .len = len, .line = 1, .col = 1 };
    if (!ns.dir || p->nstack >= (int)(sizeof(p->stack) / sizeof(p->stack[0]))) {
        /* The stack cannot really fill: the depth limit stops includes first. */
        oom(p);
    } else {
        src *saved = p->s;
        tok saved_tok = p->cur;
        p->stack[p->nstack++] = (incl){ ns.name, real };
        parse_source(p, &ns, ctx, sections_ok);
        p->nstack--;
        p->s = saved;
        p->cur = saved_tok;
        if (p->stop)
            p->s->abort = true;
    }
    free(ns.dir);
    free(text);
    free(real);
}

static bool has_wildcard(const char *s) { return strpbrk(s, "*?[") != NULL; }

static void do_include(parser *p, tn_value *ctx, bool sections_ok, tn_pos at, const char *pattern)
{
    const char *dir = p->s->dir;
    if (p->includes++ >= MAX_INCLUDES) {
        perr(p, at, "include limit: more than %d @include statements for one configuration", MAX_INCLUDES);
        stop(p);
        return;
    }
    if (!has_wildcard(pattern)) {
        char *path = path_join(dir, pattern);
        if (path)
            include_one(p, ctx, sections_ok, at, path);
        else
            oom(p);
        free(path);
        return;
    }
    /* The directory is a literal, only the pattern may glob. */
    strbuf esc = { 0 };
    for (const char *c = dir; *c; c++) {
        if (strchr("*?[\\", *c))
            sb_add(&esc, "\\", 1);
        sb_add(&esc, c, 1);
    }
    char *full = path_join(esc.ptr ? esc.ptr : "", pattern);
    free(esc.ptr);
    if (!full) {
        oom(p);
        return;
    }
    glob_t g;
    memset(&g, 0, sizeof(g));
    int rc = glob(full, GLOB_MARK, NULL, &g);
    if (rc == 0) {
        for (size_t i = 0; i < g.gl_pathc && !p->s->abort; i++) {
            size_t n = strlen(g.gl_pathv[i]);
            if (n && g.gl_pathv[i][n - 1] == '/')
                continue; /* directories a wildcard happened to match */
            include_one(p, ctx, sections_ok, at, g.gl_pathv[i]);
        }
    } else if (rc != GLOB_NOMATCH) {
        perr(p, at, "cannot expand include pattern %s: %s", pattern,
             rc == GLOB_NOSPACE ? "out of memory" : "read error");
    }
    globfree(&g);
    free(full);
}

static int call_file(parser *p, tn_pos at, const char *rel, tn_value **out)
{
    char *path = path_join(p->s->dir, rel), *text;
    size_t len;
    const char *why;
    int rc = -1;
    if (!path) {
        oom(p);
        return -1;
    }
    if (read_budget(p, at, -1) < 0) {
        free(path);
        return -1;
    }
    if (read_all(path, MAX_FILE, &text, &len, &why) < 0) {
        perr(p, at, "cannot open file %s: %s", path, why);
        free(path);
        return -1;
    }
    if (read_budget(p, at, (ssize_t)len) < 0) {
        free(text);
        free(path);
        return -1;
    }
    if (memchr(text, '\0', len)) {
        perr(p, at, "file %s contains a NUL byte", path);
    } else {
        if (len && text[len - 1] == '\n')
            len -= len > 1 && text[len - 2] == '\r' ? 2 : 1;
        if (charge(p, at, len) == 0) {
            *out = tn_value_string(text, len, at);
            if (*out)
                rc = 0;
            else
                oom(p);
        }
    }
    free(text);
    free(path);
    return rc;
}

/* @name(args). OUT is NULL in statement position, where only @include fits;
 * CTX is the object an include merges into. */
static int parse_call(parser *p, tn_value **out, tn_value *ctx, bool sections_ok)
{
    tok fn = p->cur;
    const char *name = p->s->text + fn.off;
    int kind = func_kind(name, fn.len), nargs = 0, rc = -1;
    char b[SNIP + 4], fb[SNIP + 8];
    tn_value *args[3] = { 0 };
    if (kind == F_UNKNOWN) {
        perr(p, fn.pos, "unknown function @%s", snip(b, name, fn.len));
        return -1;
    }
    if (out && kind == F_INCLUDE) {
        perr(p, fn.pos, "@include is a statement and cannot be used as a value");
        return -1;
    }
    next(p);
    if (p->cur.t != T_LPAREN) {
        perr(p, p->cur.pos, "expected '(' after @%.*s, found %s", (int)fn.len, name, found(p, fb));
        return -1;
    }
    if (enter(p, fn.pos) < 0)
        return -1;
    next(p);
    skip_nl(p);
    while (p->cur.t != T_RPAREN) {
        tn_value *a;
        if (parse_value(p, &a) < 0)
            goto done;
        if (nargs < 3)
            args[nargs] = a;
        else
            val_free(p, a);
        nargs++;
        skip_nl(p);
        if (p->cur.t == T_COMMA) {
            next(p);
            skip_nl(p);
        } else if (p->cur.t != T_RPAREN) {
            if (p->cur.t != T_ERROR)
                perr(p, p->cur.pos, "expected ',' or ')' after argument, found %s", found(p, fb));
            goto done;
        }
    }
    /* The ')' stays current until the include is done: the included files
     * reuse the token buffer. */
    switch (kind) {
    case F_ENV:
        if (nargs < 1 || nargs > 2) {
            perr(p, fn.pos, "@env expects 1 or 2 arguments");
        } else if (args[0]->type != TN_V_STRING) {
            perr(p, args[0]->pos, "@env: the variable name must be a string");
        } else {
            const char *v = getenv(args[0]->u.s.ptr);
            if (v) {
                *out = tn_value_string(v, strlen(v), fn.pos);
                if (*out)
                    rc = 0;
                else
                    oom(p);
            } else if (nargs == 2) {
                *out = args[1];
                args[1] = NULL;
                rc = 0;
            } else {
                perr(p, fn.pos, "environment variable %s is not set",
                     snip(b, args[0]->u.s.ptr, args[0]->u.s.len));
            }
        }
        break;
    case F_FILE:
        if (nargs != 1)
            perr(p, fn.pos, "@file expects 1 argument");
        else if (args[0]->type != TN_V_STRING)
            perr(p, args[0]->pos, "@file: the path must be a string");
        else
            rc = call_file(p, fn.pos, args[0]->u.s.ptr, out);
        break;
    case F_INCLUDE:
        if (nargs != 1) {
            perr(p, fn.pos, "@include expects 1 argument");
        } else if (args[0]->type != TN_V_STRING) {
            perr(p, args[0]->pos, "@include: the pattern must be a string");
        } else {
            do_include(p, ctx, sections_ok, fn.pos, args[0]->u.s.ptr);
            rc = 0; /* its errors are the included files' */
        }
        break;
    }
    if (rc == 0)
        next(p);
done:
    leave(p);
    for (int i = 0; i < 3; i++)
        val_free(p, args[i]);
    return rc;
}

static int parse_term(parser *p, tn_value **out)
{
    tok *t = &p->cur;
    tn_value *v = NULL;
    char b[SNIP + 4], fb[SNIP + 8];
    const char *text = p->s->text + t->off;
    switch (t->t) {
    case T_STR:
        v = tn_value_string(p->sb.ptr, p->sb.len, t->pos);
        break;
    case T_UNIT:
        v = tn_value_string(text, t->len, t->pos);
        break;
    case T_INT:
        v = tn_value_int(t->i, t->pos);
        break;
    case T_FLOAT:
        v = tn_value_new(TN_V_FLOAT, t->pos);
        if (v)
            v->u.f = t->f;
        break;
    case T_IDENT:
        if (t->len == 4 && memcmp(text, "true", 4) == 0) {
            v = tn_value_bool(true, t->pos);
        } else if (t->len == 5 && memcmp(text, "false", 5) == 0) {
            v = tn_value_bool(false, t->pos);
        } else if (t->len == 4 && memcmp(text, "null", 4) == 0) {
            v = tn_value_new(TN_V_NULL, t->pos);
        } else {
            snip(b, text, t->len);
            perr(p, t->pos, "unquoted string '%s': write \"%s\"", b, b);
            return -1;
        }
        break;
    case T_VAR:
        return use_var(p, out);
    case T_FUNC:
        return parse_call(p, out, NULL, false);
    case T_LBRACK:
        return parse_array(p, out);
    case T_LBRACE:
        return parse_block(p, out, T_RBRACE);
    case T_ERROR:
        return -1;
    default:
        perr(p, t->pos, "expected a value, found %s", found(p, fb));
        return -1;
    }
    if (!v) {
        oom(p);
        return -1;
    }
    next(p);
    *out = v;
    return 0;
}

/* value := term ('+' term)*; a continuation line may start after a '+'. */
static int parse_value(parser *p, tn_value **out)
{
    tn_value *v;
    if (parse_term(p, &v) < 0)
        return -1;
    if (p->cur.t != T_PLUS) {
        *out = v;
        return 0;
    }
    strbuf b = { 0 };
    tn_pos pos = v->pos;
    int rc = render(p, &b, v);
    val_free(p, v);
    while (rc == 0 && p->cur.t == T_PLUS) {
        next(p);
        skip_nl(p);
        if (parse_term(p, &v) < 0) {
            rc = -1;
            break;
        }
        rc = render(p, &b, v);
        val_free(p, v);
    }
    if (rc == 0 && charge(p, pos, b.len) < 0)
        rc = -1;
    if (rc == 0) {
        *out = tn_value_string(b.ptr ? b.ptr : "", b.len, pos);
        if (!*out) {
            oom(p);
            rc = -1;
        }
    }
    free(b.ptr);
    return rc;
}

/* After a key or $name: ':' value, '=' value, '{' block '}' or '>' block '<'. */
static int parse_rhs(parser *p, tn_value **out, bool is_var, const char *name)
{
    char b[SNIP + 4];
    switch (p->cur.t) {
    case T_COLON:
    case T_EQ:
        next(p);
        return parse_value(p, out);
    case T_LBRACE:
        return parse_block(p, out, T_RBRACE);
    case T_GT:
        return parse_block(p, out, T_LT);
    case T_ERROR:
        return -1;
    default:
        if (is_var)
            perr(p, p->cur.pos, "expected ':' or '=' after variable $%s",
                 snip(b, name, strlen(name)));
        else
            perr(p, p->cur.pos, "expected ':' or '=' after key '%s'", snip(b, name, strlen(name)));
        return -1;
    }
}

/* '[' name ']': later statements go to root[name]. After a broken or
 * clashing header they go to an orphan object, so they are still checked but
 * neither land in the previous section nor in the tree. */
static int parse_section(parser *p, tn_value **cur, tn_value **orphan)
{
    tn_pos open = p->cur.pos;
    char fb[SNIP + 8];
    val_free(p, *orphan);
    *orphan = tn_value_new(TN_V_OBJECT, open);
    if (!*orphan) {
        oom(p);
        return -1;
    }
    *cur = *orphan;
    next(p);
    if (p->cur.t != T_IDENT) {
        if (p->cur.t != T_ERROR)
            perr(p, p->cur.pos, "expected a section name after '[', found %s", found(p, fb));
        return -1;
    }
    tok name = p->cur;
    next(p);
    if (p->cur.t != T_RBRACK) {
        if (p->cur.t != T_ERROR)
            perr(p, p->cur.pos, "expected ']' after section name, found %s", found(p, fb));
        return -1;
    }
    next(p);
    char *key = strndup(p->s->text + name.off, name.len);
    if (!key) {
        oom(p);
        return -1;
    }
    tn_member *m = obj_find(p, p->doc->root, key);
    if (m && m->val->type != TN_V_OBJECT) {
        dup_error(p, m, key, name.pos);
        free(key);
        return 0;
    }
    if (m) {
        free(key);
        *cur = m->val;
        val_free(p, *orphan);
    } else {
        obj_put(p, p->doc->root, key, name.pos, *orphan);
    }
    *orphan = NULL;
    return 0;
}

static int parse_statement(parser *p, tn_value *obj, bool top, bool sections_ok)
{
    tok t = p->cur;
    char b[SNIP + 4], fb[SNIP + 8];
    tn_value *v = NULL;
    char *key;
    switch (t.t) {
    case T_VAR:
        if (!(key = tok_text(p)))
            return -1;
        next(p);
        if (parse_rhs(p, &v, true, key) < 0) {
            var_set(p, key, NULL);
            return -1;
        }
        var_set(p, key, v);
        return 0;
    case T_FUNC: {
        const char *name = p->s->text + t.off;
        int kind = func_kind(name, t.len);
        if (kind == F_INCLUDE)
            return parse_call(p, NULL, obj, top && sections_ok);
        if (kind == F_UNKNOWN)
            perr(p, t.pos, "unknown function @%s", snip(b, name, t.len));
        else
            perr(p, t.pos, "expected a key, found %s", found(p, fb));
        return -1;
    }
    case T_IDENT:
    case T_STR:
        break;
    case T_LBRACK:
        perr(p, t.pos, top ? "section header in a file included inside a block"
                           : "section headers are only allowed at top level");
        return -1;
    case T_ERROR:
        return -1;
    default:
        perr(p, t.pos, "expected a key, found %s", found(p, fb));
        return -1;
    }
    if (!(key = tok_text(p)))
        return -1;
    next(p);
    if (parse_rhs(p, &v, false, key) < 0) {
        free(key);
        return -1;
    }
    obj_put(p, obj, key, t.pos, v);
    return 0;
}

/* Statements up to CLOSER (T_EOF at a file's top level). Errors inside a
 * statement are reported, the statement skipped, and parsing goes on. */
static int parse_stmts(parser *p, tn_value *ctx, int closer, tn_pos open, bool top, bool sections_ok)
{
    tn_value *cur = ctx, *orphan = NULL;
    char fb[SNIP + 8];
    int rc = 0;
    for (;;) {
        if (p->s->abort) {
            rc = -1;
            break;
        }
        int t = p->cur.t;
        if (t == T_NL || t == T_COMMA) {
            next(p);
            continue;
        }
        if (t == closer) {
            if (t != T_EOF)
                next(p);
            break;
        }
        if (t == T_EOF) {
            perr(p, open, "unterminated block: missing '%c' before end of file",
                 closer == T_RBRACE ? '}' : '<');
            rc = -1;
            break;
        }
        if (t == T_RBRACE || t == T_RBRACK || t == T_RPAREN || t == T_LT) {
            perr(p, p->cur.pos, "unexpected %s", found(p, fb));
            next(p);
            continue;
        }
        int nest0 = p->cur.nest, r;
        if (t == T_LBRACK && top && sections_ok)
            r = parse_section(p, &cur, &orphan);
        else
            r = parse_statement(p, cur, top, sections_ok);
        if (r < 0)
            recover(p, nest0, closer);
    }
    val_free(p, orphan);
    return rc;
}

static void parse_source(parser *p, src *s, tn_value *ctx, bool sections_ok)
{
    p->s = s;
    if (validate(p, s) < 0)
        return;
    next(p);
    parse_stmts(p, ctx, T_EOF, here(s), true, sections_ok);
}

static int parse_top(tn_doc *doc, const char *name, const char *text, size_t len, tn_diag *diag,
                     char *real)
{
    int before = tn_diag_errors(diag);
    parser P, *p = &P;
    memset(p, 0, sizeof(P));
    p->doc = doc;
    p->diag = diag;
    p->files = 1;
    p->read = len < MAX_TOTAL ? len : MAX_TOTAL;
    src s = { .name = tn_doc_intern(doc, name), .dir = dir_of(name), .text = text ? text : "",
              .len = text ? len : 0, .line = 1, .col = 1 };
    tn_pos pos0 = { s.name, 1, 1 };
    if (!doc->root)
        doc->root = tn_value_new(TN_V_OBJECT, pos0);
    if (!doc->root || !s.dir) {
        tn_diag_error(diag, pos0, "out of memory");
    } else if (doc->root->type != TN_V_OBJECT) {
        tn_diag_error(diag, pos0, "document root is not an object");
    } else {
        p->stack[p->nstack++] = (incl){ s.name, real };
        parse_source(p, &s, doc->root, true);
    }
    for (size_t i = 0; i < p->nvb; i++) {
        for (var *e = p->vars[i], *next; e; e = next) {
            next = e->next;
            tn_value_free(e->val);
            free(e->name);
            free(e);
        }
    }
    free(p->vars);
    for (size_t i = 0; i < p->nkb; i++) {
        for (kindex *k = p->kx[i], *next; k; k = next) {
            next = k->next;
            free(k->slot);
            free(k);
        }
    }
    free(p->kx);
    free(p->sb.ptr);
    free(s.dir);
    free(real);
    return tn_diag_errors(diag) > before ? -1 : 0;
}

int tn_tusk_parse_string(tn_doc *doc, const char *name, const char *text, size_t len,
                         tn_diag *diag)
{
    if (!name)
        name = "<input>";
    return parse_top(doc, name, text, len, diag, realpath(name, NULL));
}

int tn_tusk_parse_file(tn_doc *doc, const char *path, tn_diag *diag)
{
    char *text;
    size_t len;
    const char *why;
    if (read_all(path, MAX_FILE, &text, &len, &why) < 0) {
        tn_pos pos = { tn_doc_intern(doc, path), 1, 1 };
        tn_diag_error(diag, pos, "cannot open %s: %s", path, why);
        if (!doc->root)
            doc->root = tn_value_new(TN_V_OBJECT, pos);
        return -1;
    }
    int rc = parse_top(doc, path, text, len, diag, realpath(path, NULL));
    free(text);
    return rc;
}
