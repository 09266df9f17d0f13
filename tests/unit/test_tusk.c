/* SPDX-License-Identifier: MIT */
/* test_tusk.c - the TuskLang-style parser (src/config/tusk.c): every syntax
 * form, positions (UTF-8 columns, CRLF), variables, '+', @env, @file,
 * @include (globs, merging, cycles), the limits that keep hostile input
 * bounded, error recovery, and every error with its exact FILE:LINE:COL
 * text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config/tusk.h"

typedef struct parsed {
    tn_doc doc;
    tn_diag diag;
    int rc;
} parsed;

static int parsen(parsed *r, const char *text, size_t len)
{
    memset(r, 0, sizeof(*r));
    r->rc = tn_tusk_parse_string(&r->doc, "t.conf", text, len, &r->diag);
    return r->rc;
}

static int parse(parsed *r, const char *text) { return parsen(r, text, strlen(text)); }

static int parse_named(parsed *r, const char *name, const char *text)
{
    memset(r, 0, sizeof(*r));
    r->rc = tn_tusk_parse_string(&r->doc, name, text, strlen(text), &r->diag);
    return r->rc;
}

static int parse_path(parsed *r, const char *path)
{
    memset(r, 0, sizeof(*r));
    r->rc = tn_tusk_parse_file(&r->doc, path, &r->diag);
    return r->rc;
}

static void unparse(parsed *r)
{
    tn_doc_free(&r->doc);
    tn_diag_free(&r->diag);
}

static void assert_ok(parsed *r)
{
    char *got = tn_diag_join(&r->diag);
    if (got)
        fail_msg("unexpected diagnostics: %s", got);
    assert_int_equal(r->rc, 0);
    assert_non_null(r->doc.root);
    assert_int_equal(r->doc.root->type, TN_V_OBJECT);
}

/* The parse failed with exactly these messages, joined by '\n'. */
static void assert_errors(parsed *r, const char *want)
{
    char *got = tn_diag_join(&r->diag);
    if (!got)
        fail_msg("expected errors:\n%s\ngot none", want);
    if (strcmp(got, want) != 0) {
        print_error("want:\n%s\ngot:\n%s\n", want, got);
        free(got);
        fail();
    }
    free(got);
    assert_int_equal(r->rc, -1);
    assert_non_null(r->doc.root);
    assert_int_equal(r->doc.root->type, TN_V_OBJECT);
}

static void parse_error(const char *text, const char *want)
{
    parsed r;
    parse(&r, text);
    assert_errors(&r, want);
    unparse(&r);
}

/* Follows a NULL-terminated path of keys (or "#N" array indexes). */
static const tn_value *at(const tn_value *v, ...)
{
    va_list ap;
    va_start(ap, v);
    for (const char *k; v && (k = va_arg(ap, const char *));) {
        if (k[0] == '#') {
            size_t i = (size_t)atoi(k + 1);
            v = v->type == TN_V_ARRAY && i < v->u.a.len ? v->u.a.items[i] : NULL;
        } else {
            v = tn_object_get(v, k);
        }
    }
    va_end(ap);
    return v;
}

static void assert_str(const tn_value *v, const char *s)
{
    assert_non_null(v);
    if (v->type != TN_V_STRING)
        fail_msg("expected string \"%s\", got %s", s, tn_vtype_name(v->type));
    assert_string_equal(v->u.s.ptr, s);
    assert_int_equal(v->u.s.len, strlen(s));
}

static void assert_int(const tn_value *v, int64_t i)
{
    assert_non_null(v);
    if (v->type != TN_V_INT)
        fail_msg("expected integer %lld, got %s", (long long)i, tn_vtype_name(v->type));
    assert_true(v->u.i == i);
}

static void assert_float(const tn_value *v, double f)
{
    assert_non_null(v);
    if (v->type != TN_V_FLOAT)
        fail_msg("expected number %g, got %s", f, tn_vtype_name(v->type));
    assert_true(v->u.f == f);
}

static void assert_pos(tn_pos pos, const char *file, int line, int col)
{
    assert_non_null(pos.file);
    assert_string_equal(pos.file, file);
    if (pos.line != line || pos.col != col)
        fail_msg("position %d:%d, want %d:%d", pos.line, pos.col, line, col);
}

static const tn_member *member(const tn_value *obj, const char *key)
{
    const tn_member *m = tn_object_find(obj, key);
    if (!m)
        fail_msg("no key '%s'", key);
    return m;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- a scratch directory for @file and @include; tests chdir into it so
 * that paths in messages are short and exact. */

static char tmpdir[PATH_MAX], oldcwd[PATH_MAX];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int fs_setup(void **state)
{
    (void)state;
    if (!getcwd(oldcwd, sizeof(oldcwd)))
        return -1;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_tusk.XXXXXX");
    if (!mkdtemp(tmpdir) || chdir(tmpdir) < 0)
        return -1;
    return 0;
}

static int fs_teardown(void **state)
{
    (void)state;
    if (chdir(oldcwd) < 0)
        return -1;
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void mkdirs(const char *path)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *s = strchr(buf + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = '\0';
        mkdir(buf, 0755);
        *s = '/';
    }
}

static void write_filen(const char *path, const char *text, size_t len)
{
    mkdirs(path);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void write_file(const char *path, const char *text) { write_filen(path, text, strlen(text)); }

/* ---- empty input, comments */

static void test_empty_file(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "");
    assert_ok(&r);
    assert_int_equal(r.doc.root->u.o.len, 0);
    assert_pos(r.doc.root->pos, "t.conf", 1, 1);
    unparse(&r);

    parsen(&r, NULL, 0);
    assert_ok(&r);
    assert_int_equal(r.doc.root->u.o.len, 0);
    unparse(&r);

    parse(&r, "  \n\t\n\r\n");
    assert_ok(&r);
    assert_int_equal(r.doc.root->u.o.len, 0);
    unparse(&r);
}

static void test_comments_only(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "# one\n   # two\n#three");
    assert_ok(&r);
    assert_int_equal(r.doc.root->u.o.len, 0);
    unparse(&r);

    parse(&r, "a: \"x # not a comment\" # a comment\n# b: 2\nc: 'y#z'#c\n");
    assert_ok(&r);
    assert_int_equal(r.doc.root->u.o.len, 2);
    assert_str(at(r.doc.root, "a", NULL), "x # not a comment");
    assert_str(at(r.doc.root, "c", NULL), "y#z");
    unparse(&r);
}

static void test_bom_is_skipped(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "\xEF\xBB\xBF" "a: 1\n");
    assert_ok(&r);
    assert_int(at(r.doc.root, "a", NULL), 1);
    assert_pos(member(r.doc.root, "a")->key_pos, "t.conf", 1, 1);
    unparse(&r);
}

/* ---- statements */

static void test_key_separators(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "a: 1\nb = 2\nc:3\nd=4\n");
    assert_ok(&r);
    assert_int_equal(r.doc.root->u.o.len, 4);
    assert_int(at(r.doc.root, "a", NULL), 1);
    assert_int(at(r.doc.root, "b", NULL), 2);
    assert_int(at(r.doc.root, "c", NULL), 3);
    assert_int(at(r.doc.root, "d", NULL), 4);
    assert_pos(member(r.doc.root, "b")->key_pos, "t.conf", 2, 1);
    assert_pos(at(r.doc.root, "b", NULL)->pos, "t.conf", 2, 5);
    /* insertion order is kept */
    assert_string_equal(r.doc.root->u.o.items[0].key, "a");
    assert_string_equal(r.doc.root->u.o.items[3].key, "d");
    unparse(&r);
}

static void test_identifier_keys(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "max-conn.v2_x: 1\n_private: 2\n");
    assert_ok(&r);
    assert_int(at(r.doc.root, "max-conn.v2_x", NULL), 1);
    assert_int(at(r.doc.root, "_private", NULL), 2);
    unparse(&r);
}

static void test_quoted_keys(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "\"GET /health\": \"health\"\n'raw \\ key' = 1\n\"tab\\tkey\" { x: 1 }\n");
    assert_ok(&r);
    assert_str(at(r.doc.root, "GET /health", NULL), "health");
    assert_int(at(r.doc.root, "raw \\ key", NULL), 1);
    assert_int(at(r.doc.root, "tab\tkey", "x", NULL), 1);
    assert_pos(member(r.doc.root, "GET /health")->key_pos, "t.conf", 1, 1);
    assert_pos(at(r.doc.root, "GET /health", NULL)->pos, "t.conf", 1, 16);
    assert_pos(member(r.doc.root, "raw \\ key")->key_pos, "t.conf", 2, 1);
    unparse(&r);
}

static void test_brace_block(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "a {\n  b: 1\n  c { d: \"x\" }\n}\ne{}\n");
    assert_ok(&r);
    const tn_value *a = at(r.doc.root, "a", NULL);
    assert_non_null(a);
    assert_int_equal(a->type, TN_V_OBJECT);
    assert_pos(a->pos, "t.conf", 1, 3);
    assert_int(at(a, "b", NULL), 1);
    assert_str(at(a, "c", "d", NULL), "x");
    assert_pos(member(at(a, "c", NULL), "d")->key_pos, "t.conf", 3, 7);
    assert_int_equal(at(r.doc.root, "e", NULL)->type, TN_V_OBJECT);
    assert_int_equal(at(r.doc.root, "e", NULL)->u.o.len, 0);
    unparse(&r);
}

static void test_angle_block(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "e >\n  f: 1\n  g > h: 2 <\n<\nafter: true\n");
    assert_ok(&r);
    assert_int(at(r.doc.root, "e", "f", NULL), 1);
    assert_int(at(r.doc.root, "e", "g", "h", NULL), 2);
    assert_pos(at(r.doc.root, "e", NULL)->pos, "t.conf", 1, 3);
    assert_int_equal(at(r.doc.root, "after", NULL)->type, TN_V_BOOL);
    unparse(&r);
}

static void test_inline_object(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "b: { k: \"v\", n: 2, }\nc = {x: {y: 1}}\nd: {\n  p: 1,\n  q: 2\n}\ne: {}\n");
    assert_ok(&r);
    assert_str(at(r.doc.root, "b", "k", NULL), "v");
    assert_int(at(r.doc.root, "b", "n", NULL), 2);
    assert_int_equal(at(r.doc.root, "b", NULL)->u.o.len, 2);
    assert_pos(at(r.doc.root, "b", NULL)->pos, "t.conf", 1, 4);
    assert_int(at(r.doc.root, "c", "x", "y", NULL), 1);
    assert_int(at(r.doc.root, "d", "q", NULL), 2);
    assert_int_equal(at(r.doc.root, "e", NULL)->u.o.len, 0);
    unparse(&r);
}

static void test_statements_on_one_line(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "ping { type: \"static\"  reply: \"+PONG\" }\na: 1, b: 2 c: 3,\n");
    assert_ok(&r);
    assert_str(at(r.doc.root, "ping", "type", NULL), "static");
    assert_str(at(r.doc.root, "ping", "reply", NULL), "+PONG");
    assert_int(at(r.doc.root, "a", NULL), 1);
    assert_int(at(r.doc.root, "b", NULL), 2);
    assert_int(at(r.doc.root, "c", NULL), 3);
    assert_pos(member(r.doc.root, "c")->key_pos, "t.conf", 2, 12);
    unparse(&r);
}

static void test_sections(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "top = 1\n[daemon]\nlog: \"debug\"\n[ limits ]\nmax: 10\n");
    assert_ok(&r);
    assert_int(at(r.doc.root, "top", NULL), 1);
    assert_str(at(r.doc.root, "daemon", "log", NULL), "debug");
    assert_int(at(r.doc.root, "limits", "max", NULL), 10);
    assert_null(at(r.doc.root, "log", NULL));
    assert_null(at(r.doc.root, "daemon", "max", NULL));
    assert_pos(member(r.doc.root, "daemon")->key_pos, "t.conf", 2, 2);
    assert_pos(at(r.doc.root, "daemon", NULL)->pos, "t.conf", 2, 1);
    unparse(&r);
}

static void test_section_merging(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "[a]\nx: 1\n[b]\ny: 2\n[a]\nz: 3\n");
    assert_ok(&r);
    const tn_value *a = at(r.doc.root, "a", NULL);
    assert_int_equal(a->u.o.len, 2);
    assert_int(at(a, "x", NULL), 1);
    assert_int(at(a, "z", NULL), 3);
    assert_int_equal(r.doc.root->u.o.len, 2);
    unparse(&r);

    /* blocks with the same name merge recursively, at any depth */
    parse(&r, "h { a { x: 1 } }\nh { a { y: 2 } b: 3 }\n[h]\nc: 4\n");
    assert_ok(&r);
    assert_int(at(r.doc.root, "h", "a", "x", NULL), 1);
    assert_int(at(r.doc.root, "h", "a", "y", NULL), 2);
    assert_int(at(r.doc.root, "h", "b", NULL), 3);
    assert_int(at(r.doc.root, "h", "c", NULL), 4);
    unparse(&r);
}

static void test_duplicate_key(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "a: 1\nb: 2\na: 3\n");
    assert_errors(&r, "t.conf:3:1: duplicate key 'a' (first defined at 1:1)");
    assert_int(at(r.doc.root, "a", NULL), 1); /* the first one stays */
    unparse(&r);

    parse_error("a { b: 1 }\na { b: 2 }\n", "t.conf:2:5: duplicate key 'b' (first defined at 1:5)");
    parse_error("a: {}\na: 1\n", "t.conf:2:1: duplicate key 'a' (first defined at 1:1)");
    parse_error("a: 1\n  a { }\n", "t.conf:2:3: duplicate key 'a' (first defined at 1:1)");
    parse_error("\"k\": 1\nk: 2\n", "t.conf:2:1: duplicate key 'k' (first defined at 1:1)");

    /* a section clashing with a plain key: its statements go nowhere */
    parse(&r, "a: 1\n[a]\nb: 2\n[c]\nd: 3\n");
    assert_errors(&r, "t.conf:2:2: duplicate key 'a' (first defined at 1:1)");
    assert_int(at(r.doc.root, "a", NULL), 1);
    assert_null(at(r.doc.root, "b", NULL));
    assert_int(at(r.doc.root, "c", "d", NULL), 3);
    unparse(&r);
}

/* ---- values */

static void test_arrays(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "a: [1, \"two\", 3.5, true, null, [], [[1]], {k: 1}]\n"
              "b: [\n"
              "  1,   # one\n"
              "  2\n"
              "  # a comment line\n"
              "  3\n"
              "  , 4,\n"
              "]\n"
              "c: []\n"
              "d: [ \"x\", ]\n");
    assert_ok(&r);
    const tn_value *a = at(r.doc.root, "a", NULL);
    assert_int_equal(a->type, TN_V_ARRAY);
    assert_int_equal(a->u.a.len, 8);
    assert_pos(a->pos, "t.conf", 1, 4);
    assert_int(at(a, "#0", NULL), 1);
    assert_str(at(a, "#1", NULL), "two");
    assert_pos(at(a, "#1", NULL)->pos, "t.conf", 1, 8);
    assert_float(at(a, "#2", NULL), 3.5);
    assert_int_equal(at(a, "#4", NULL)->type, TN_V_NULL);
    assert_int_equal(at(a, "#5", NULL)->u.a.len, 0);
    assert_int(at(a, "#6", "#0", "#0", NULL), 1);
    assert_int(at(a, "#7", "k", NULL), 1);
    const tn_value *b = at(r.doc.root, "b", NULL);
    assert_int_equal(b->u.a.len, 4);
    for (int i = 0; i < 4; i++)
        assert_int(b->u.a.items[i], i + 1);
    assert_pos(b->u.a.items[2]->pos, "t.conf", 6, 3);
    assert_int_equal(at(r.doc.root, "c", NULL)->u.a.len, 0);
    assert_int_equal(at(r.doc.root, "d", NULL)->u.a.len, 1);
    unparse(&r);
}

static void test_escapes(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "a: \"n\\nt\\tr\\rq\\\"b\\\\s\\/\"\nb: \"\"\n");
    assert_ok(&r);
    assert_str(at(r.doc.root, "a", NULL), "n\nt\tr\rq\"b\\s/");
    assert_str(at(r.doc.root, "b", NULL), "");
    unparse(&r);
}

static void test_unicode_escapes(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "a: \"\\u00e9\\u20AC\\u0041\"\nb: \"\\uD83D\\uDE00!\"\nc: \"\\u007f\\u0800\\uFFFF\"\n");
    assert_ok(&r);
    assert_str(at(r.doc.root, "a", NULL), "\xC3\xA9\xE2\x82\xAC" "A");
    assert_str(at(r.doc.root, "b", NULL), "\xF0\x9F\x98\x80!");
    assert_str(at(r.doc.root, "c", NULL), "\x7F\xE0\xA0\x80\xEF\xBF\xBF");
    unparse(&r);
}

static void test_raw_strings(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "a: 'no \\n escapes \\u0041 \"here\"'\nb: ''\nc: \"it's\"\n");
    assert_ok(&r);
    assert_str(at(r.doc.root, "a", NULL), "no \\n escapes \\u0041 \"here\"");
    assert_str(at(r.doc.root, "b", NULL), "");
    assert_str(at(r.doc.root, "c", NULL), "it's");
    unparse(&r);
}

static void test_numbers_bools_null(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "i: 42\nn: -7\nz: 0\nlz: 007\nmax: 9223372036854775807\nmin: -9223372036854775808\n"
              "f: 1.5\ng: -0.25\ne: 1e3\nE: 2.5E-2\nep: 1e+2\n"
              "t: true\nfa: false\nnu: null\n");
    assert_ok(&r);
    const tn_value *root = r.doc.root;
    assert_int(at(root, "i", NULL), 42);
    assert_int(at(root, "n", NULL), -7);
    assert_int(at(root, "z", NULL), 0);
    assert_int(at(root, "lz", NULL), 7);
    assert_int(at(root, "max", NULL), INT64_MAX);
    assert_int(at(root, "min", NULL), INT64_MIN);
    assert_float(at(root, "f", NULL), 1.5);
    assert_float(at(root, "g", NULL), -0.25);
    assert_float(at(root, "e", NULL), 1000.0);
    assert_float(at(root, "E", NULL), 0.025);
    assert_float(at(root, "ep", NULL), 100.0);
    assert_int_equal(at(root, "t", NULL)->type, TN_V_BOOL);
    assert_true(at(root, "t", NULL)->u.b);
    assert_int_equal(at(root, "fa", NULL)->type, TN_V_BOOL);
    assert_false(at(root, "fa", NULL)->u.b);
    assert_int_equal(at(root, "nu", NULL)->type, TN_V_NULL);
    assert_pos(at(root, "nu", NULL)->pos, "t.conf", 14, 5);
    unparse(&r);
}

static void test_unit_literals(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "a: 30s\nb: 250ms\nc: 64KB\nd: 1.5MiB\ne: -5s\nf: [1h, 2m]\n");
    assert_ok(&r);
    assert_str(at(r.doc.root, "a", NULL), "30s");
    assert_str(at(r.doc.root, "b", NULL), "250ms");
    assert_str(at(r.doc.root, "c", NULL), "64KB");
    assert_str(at(r.doc.root, "d", NULL), "1.5MiB");
    assert_str(at(r.doc.root, "e", NULL), "-5s");
    assert_str(at(r.doc.root, "f", "#0", NULL), "1h");
    assert_str(at(r.doc.root, "f", "#1", NULL), "2m");
    assert_pos(at(r.doc.root, "d", NULL)->pos, "t.conf", 4, 4);
    unparse(&r);
}

/* ---- variables and '+' */

static void test_variables(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "$name: \"x\"\n$port = 7000\n$obj: { k: [1, 2] }\n"
              "a: $name\nb: $port\nc { o: $obj }\nd: $obj\n"
              "$name: \"redefined\"\ne: $name\n"
              "blk { $inner: 5 }\nf: $inner\n");
    assert_ok(&r);
    const tn_value *root = r.doc.root;
    /* definitions do not create keys */
    assert_null(at(root, "$name", NULL));
    assert_null(at(root, "name", NULL));
    assert_int_equal(root->u.o.len, 7);
    assert_str(at(root, "a", NULL), "x");
    assert_pos(at(root, "a", NULL)->pos, "t.conf", 4, 4); /* the use, not the definition */
    assert_int(at(root, "b", NULL), 7000);
    assert_int(at(root, "c", "o", "k", "#1", NULL), 2);
    assert_int(at(root, "d", "k", "#0", NULL), 1);
    /* each use is its own copy */
    assert_ptr_not_equal(at(root, "c", "o", NULL), at(root, "d", NULL));
    assert_str(at(root, "e", NULL), "redefined");
    assert_int_equal(at(root, "blk", NULL)->u.o.len, 0);
    assert_int(at(root, "f", NULL), 5);
    unparse(&r);

    /* visible only after the definition */
    parse_error("a: $later\n$later: 1\n", "t.conf:1:4: undefined variable $later");
}

static void test_concatenation(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "$bind: \"127.0.0.1\"\n"
              "listen: $bind + \":7000\"\n"
              "mixed: \"n=\" + 42 + \" f=\" + 1.5 + \" b=\" + true + 'raw'\n"
              "neg: -3 + \"\"\n"
              "multi: \"a\" +\n   \"b\" +\n   \"c\"\n"
              "third: 0.1 + \"\"\n");
    assert_ok(&r);
    assert_str(at(r.doc.root, "listen", NULL), "127.0.0.1:7000");
    assert_pos(at(r.doc.root, "listen", NULL)->pos, "t.conf", 2, 9);
    assert_str(at(r.doc.root, "mixed", NULL), "n=42 f=1.5 b=trueraw");
    assert_str(at(r.doc.root, "neg", NULL), "-3");
    assert_str(at(r.doc.root, "multi", NULL), "abc");
    assert_str(at(r.doc.root, "third", NULL), "0.1");
    unparse(&r);
}

/* ---- @env */

static void test_env(void **state)
{
    (void)state;
    parsed r;
    setenv("TUSK_TEST_SET", "from-env", 1);
    unsetenv("TUSK_TEST_UNSET");
    parse(&r, "a: @env(\"TUSK_TEST_SET\")\n"
              "b: @env(\"TUSK_TEST_UNSET\", \"dflt\")\n"
              "c: @env(\"TUSK_TEST_SET\", \"dflt\")\n"
              "d: @env(\"TUSK_TEST_UNSET\", 8080)\n"
              "e: @env(\"TUSK_TEST_UNSET\", [1, 2])\n"
              "$prefix: \"TUSK_TEST_\"\n"
              "f: @env($prefix + \"SET\") + \"!\"\n"
              "g: @env(\n  \"TUSK_TEST_UNSET\",\n  @env(\"TUSK_TEST_SET\"),\n)\n");
    assert_ok(&r);
    assert_str(at(r.doc.root, "a", NULL), "from-env");
    assert_pos(at(r.doc.root, "a", NULL)->pos, "t.conf", 1, 4);
    assert_str(at(r.doc.root, "b", NULL), "dflt");
    assert_str(at(r.doc.root, "c", NULL), "from-env");
    assert_int(at(r.doc.root, "d", NULL), 8080);
    assert_int(at(r.doc.root, "e", "#1", NULL), 2);
    assert_str(at(r.doc.root, "f", NULL), "from-env!");
    assert_str(at(r.doc.root, "g", NULL), "from-env");
    unparse(&r);

    parse_error("a: @env(\"TUSK_TEST_UNSET\")\n",
                "t.conf:1:4: environment variable TUSK_TEST_UNSET is not set");
    unsetenv("TUSK_TEST_SET");
}

/* ---- @file */

static void test_file(void **state)
{
    (void)state;
    parsed r;
    write_file("conf/secret.txt", "s3cret\n");
    write_file("conf/crlf.txt", "line\r\n");
    write_file("conf/two.txt", "a\n\n");
    write_file("conf/none.txt", "plain");
    write_file("conf/empty.txt", "");
    write_file("conf/sub/deep.txt", "deep\n");
    parse_named(&r, "conf/main.conf",
                "a: @file(\"secret.txt\")\nb: @file(\"crlf.txt\")\nc: @file(\"two.txt\")\n"
                "d: @file(\"none.txt\")\ne: @file(\"empty.txt\")\nf: @file(\"sub/\" + \"deep.txt\")\n"
                "g: \"<\" + @file(\"secret.txt\") + \">\"\n");
    assert_ok(&r);
    assert_str(at(r.doc.root, "a", NULL), "s3cret");
    assert_pos(at(r.doc.root, "a", NULL)->pos, "conf/main.conf", 1, 4);
    assert_str(at(r.doc.root, "b", NULL), "line");
    assert_str(at(r.doc.root, "c", NULL), "a\n");
    assert_str(at(r.doc.root, "d", NULL), "plain");
    assert_str(at(r.doc.root, "e", NULL), "");
    assert_str(at(r.doc.root, "f", NULL), "deep");
    assert_str(at(r.doc.root, "g", NULL), "<s3cret>");
    unparse(&r);

    /* an absolute path is used as is */
    char abs[PATH_MAX + 64], text[PATH_MAX + 128];
    snprintf(abs, sizeof(abs), "%s/conf/secret.txt", tmpdir);
    snprintf(text, sizeof(text), "a: @file(\"%s\")\n", abs);
    parse_named(&r, "conf/main.conf", text);
    assert_ok(&r);
    assert_str(at(r.doc.root, "a", NULL), "s3cret");
    unparse(&r);

    parse_named(&r, "conf/main.conf", "x: 1\na: @file(\"missing.txt\")\n");
    assert_errors(&r, "conf/main.conf:2:4: cannot open file conf/missing.txt: No such file or directory");
    unparse(&r);

    write_filen("conf/nul.txt", "ab\0cd", 5);
    parse_named(&r, "conf/main.conf", "a: @file(\"nul.txt\")\n");
    assert_errors(&r, "conf/main.conf:1:4: file conf/nul.txt contains a NUL byte");
    unparse(&r);

    int fd = open("conf/big.bin", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (16 << 20) + 1), 0);
    close(fd);
    parse_named(&r, "conf/main.conf", "a: @file(\"big.bin\")\n");
    assert_errors(&r, "conf/main.conf:1:4: cannot open file conf/big.bin: larger than 16 MiB");
    unparse(&r);

    parse_named(&r, "conf/main.conf", "a: @file(\"sub\")\n");
    assert_errors(&r, "conf/main.conf:1:4: cannot open file conf/sub: Is a directory");
    unparse(&r);

    /* devices and FIFOs are refused without being opened (a FIFO would hang) */
    parse_named(&r, "conf/main.conf", "a: @file(\"/dev/null\")\n");
    assert_errors(&r, "conf/main.conf:1:4: cannot open file /dev/null: not a regular file");
    unparse(&r);
    assert_int_equal(mkfifo("conf/fifo", 0644), 0);
    parse_named(&r, "conf/main.conf", "a: @file(\"fifo\")\n@include(\"fifo\")\n");
    assert_errors(&r, "conf/main.conf:1:4: cannot open file conf/fifo: not a regular file\n"
                      "conf/main.conf:2:1: cannot open include file conf/fifo: not a regular file");
    unparse(&r);
    parse_path(&r, "conf/fifo");
    assert_errors(&r, "conf/fifo:1:1: cannot open conf/fifo: not a regular file");
    unparse(&r);

    /* a name without a directory resolves against the cwd */
    parse_named(&r, "main.conf", "a: @file(\"conf/secret.txt\")\n");
    assert_ok(&r);
    assert_str(at(r.doc.root, "a", NULL), "s3cret");
    unparse(&r);
}

/* ---- @include */

static void test_include_glob_and_merge(void **state)
{
    (void)state;
    parsed r;
    write_file("conf/main.conf", "[a]\n"
                                 "x: 1\n"
                                 "@include(\"dir/*.conf\")\n"
                                 "y: 2\n"
                                 "$v: $w + \"!\"\n");
    /* glob results are sorted: 1 before 2 before 3 */
    write_file("conf/dir/2.conf", "two: 2\n[b]\nw: 4\n$w: \"var\"\n");
    write_file("conf/dir/1.conf", "one: 1\nnest { k: 1 }\n");
    write_file("conf/dir/3.conf", "three: 3\nnest { j: 2 }\n@include(\"../other.conf\")\n");
    write_file("conf/other.conf", "other: true\n");
    write_file("conf/dir/ignored.txt", "not: included\n");
    mkdir("conf/dir/sub.conf", 0755); /* a directory matching the glob is skipped */
    parse_path(&r, "conf/main.conf");
    assert_ok(&r);
    const tn_value *a = at(r.doc.root, "a", NULL);
    const char *order[] = { "x", "one", "nest", "two", "three", "other", "y" };
    assert_int_equal(a->u.o.len, 7);
    for (size_t i = 0; i < 7; i++)
        assert_string_equal(a->u.o.items[i].key, order[i]);
    assert_int(at(a, "nest", "k", NULL), 1);
    assert_int(at(a, "nest", "j", NULL), 2);
    /* the section opened by 2.conf did not leak into 3.conf or main.conf */
    assert_int(at(r.doc.root, "b", "w", NULL), 4);
    assert_int_equal(at(r.doc.root, "b", NULL)->u.o.len, 1);
    assert_null(at(r.doc.root, "not", NULL));
    /* included positions carry their own (joined) path */
    assert_pos(member(a, "one")->key_pos, "conf/dir/1.conf", 1, 1);
    assert_pos(member(a, "other")->key_pos, "conf/dir/../other.conf", 1, 1);
    assert_pos(member(a, "y")->key_pos, "conf/main.conf", 4, 1);
    assert_pos(member(r.doc.root, "b")->key_pos, "conf/dir/2.conf", 2, 2);
    unparse(&r);
}

static void test_include_in_block(void **state)
{
    (void)state;
    parsed r;
    write_file("conf/frag.conf", "a: 1\nb { c: 2 }\n");
    write_file("conf/sect.conf", "ok: 1\n[nope]\nz: 1\n");
    parse_named(&r, "conf/main.conf", "h { @include(\"frag.conf\") d: 3 }\n");
    assert_ok(&r);
    assert_int(at(r.doc.root, "h", "a", NULL), 1);
    assert_int(at(r.doc.root, "h", "b", "c", NULL), 2);
    assert_int(at(r.doc.root, "h", "d", NULL), 3);
    assert_null(at(r.doc.root, "a", NULL));
    unparse(&r);

    parse_named(&r, "conf/main.conf", "h { @include(\"sect.conf\") }\n");
    assert_errors(&r, "conf/sect.conf:2:1: section header in a file included inside a block");
    assert_int(at(r.doc.root, "h", "ok", NULL), 1);
    assert_null(at(r.doc.root, "nope", NULL));
    unparse(&r);

    /* duplicates across files name the other file */
    write_file("conf/dup.conf", "a: 2\n");
    parse_named(&r, "conf/main.conf", "a: 1\n@include(\"dup.conf\")\n");
    assert_errors(&r, "conf/dup.conf:1:1: duplicate key 'a' (first defined at conf/main.conf:1:1)");
    unparse(&r);
}

static void test_include_errors(void **state)
{
    (void)state;
    parsed r;
    parse_named(&r, "conf/main.conf", "x: 1\n@include(\"nope.conf\")\ny: 2\n");
    assert_errors(&r, "conf/main.conf:2:1: cannot open include file conf/nope.conf: No such file or directory");
    assert_int(at(r.doc.root, "y", NULL), 2);
    unparse(&r);

    /* a wildcard that matches nothing is fine */
    parse_named(&r, "conf/main.conf", "@include(\"none/*.conf\")\n@include(\"*.nothing\")\na: 1\n");
    assert_ok(&r);
    assert_int(at(r.doc.root, "a", NULL), 1);
    unparse(&r);

    write_file("conf/a.conf", "a: 1\n@include(\"b.conf\")\n");
    write_file("conf/b.conf", "b: 1\n  @include(\"a.conf\")\n");
    parse_path(&r, "conf/a.conf");
    assert_errors(&r, "conf/b.conf:2:3: include cycle: conf/a.conf -> conf/b.conf -> conf/a.conf");
    assert_int(at(r.doc.root, "b", NULL), 1);
    unparse(&r);

    mkdir("solo", 0755);
    write_file("solo/self.conf", "s: 1\n@include(\"*.conf\")\n");
    parse_path(&r, "solo/self.conf");
    assert_errors(&r, "solo/self.conf:2:1: include cycle: solo/self.conf -> solo/self.conf");
    unparse(&r);

    /* parse_string: NAME is on the stack too when it names a real file */
    parse_named(&r, "solo/self.conf", "@include(\"self.conf\")\n");
    assert_errors(&r, "solo/self.conf:1:1: include cycle: solo/self.conf -> solo/self.conf");
    unparse(&r);

    /* a chain deeper than the limit stops at the limit */
    char name[64], text[128];
    for (int i = 0; i < 70; i++) {
        snprintf(name, sizeof(name), "chain/d%d.conf", i);
        snprintf(text, sizeof(text), "k%d: %d\n@include(\"d%d.conf\")\n", i, i, i + 1);
        write_file(name, text);
    }
    parse_path(&r, "chain/d0.conf");
    assert_errors(&r, "chain/d64.conf:2:1: nesting deeper than 64 levels");
    assert_int(at(r.doc.root, "k64", NULL), 64);
    assert_null(at(r.doc.root, "k65", NULL));
    unparse(&r);
}

/* What one parse reads is bounded in files and bytes, so a fan-out of
 * includes ends with one error at the include that went over. */
static void test_include_limits(void **state)
{
    (void)state;
    parsed r;
    char name[64], text[128];
    /* 20 files that each include a directory of 20: 1 + 20 + 400 reads */
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof(name), "fan/l1/f%02d.conf", i);
        write_file(name, "@include(\"../l2/*.conf\")\n");
        snprintf(name, sizeof(name), "fan/l2/g%02d.conf", i);
        write_file(name, "# nothing but a comment\n");
    }
    write_file("fan/main.conf", "a: 1\n@include(\"l1/*.conf\")\nz: 2\n");
    parse_path(&r, "fan/main.conf");
    /* after main and f00..f11 with their 20 each (253 files), f12 and g00, g01
     * make 256: g02 is one too many */
    assert_errors(&r, "fan/l1/f12.conf:1:1: include limit: more than 256 files (config, includes, @file) "
                      "for one configuration");
    assert_int(at(r.doc.root, "a", NULL), 1);
    assert_null(at(r.doc.root, "z", NULL)); /* the whole parse stopped */
    unparse(&r);

    /* every file including all of them: the first cycle ends the parse */
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof(name), "mesh/m%02d.conf", i);
        snprintf(text, sizeof(text), "k%02d { v: %d }\n@include(\"*.conf\")\n", i, i);
        write_file(name, text);
    }
    parse_path(&r, "mesh/m05.conf");
    assert_errors(&r, "mesh/m00.conf:2:1: include cycle: mesh/m00.conf -> mesh/m00.conf");
    assert_int_equal(r.diag.total, 1);
    unparse(&r);

    /* itself through another spelling of its path */
    write_file("loop/self.conf", "s: 1\n@include(\"../loop/./self.conf\")\nt: 2\n");
    parse_path(&r, "loop/self.conf");
    assert_errors(&r, "loop/self.conf:2:1: include cycle: loop/self.conf -> loop/../loop/./self.conf");
    assert_null(at(r.doc.root, "t", NULL));
    unparse(&r);

    /* @file reads count too */
    size_t cap = 300 * 32, len = 0;
    char *big = malloc(cap);
    assert_non_null(big);
    write_file("files/secret", "x\n");
    for (int i = 1; i <= 300; i++)
        len += (size_t)snprintf(big + len, cap - len, "k%03d: @file(\"secret\")\n", i);
    write_filen("files/main.conf", big, len);
    free(big);
    parse_path(&r, "files/main.conf");
    assert_errors(&r, "files/main.conf:256:7: include limit: more than 256 files (config, includes, @file) "
                      "for one configuration");
    assert_str(at(r.doc.root, "k255", NULL), "x");
    assert_null(at(r.doc.root, "k256", NULL));
    unparse(&r);

    /* @include statements count even when they match nothing: each globs */
    cap = 300 * 32;
    len = 0;
    big = malloc(cap);
    assert_non_null(big);
    for (int i = 1; i <= 300; i++)
        len += (size_t)snprintf(big + len, cap - len, "@include(\"none*.conf\")\n");
    write_filen("globs/main.conf", big, len);
    free(big);
    parse_path(&r, "globs/main.conf");
    assert_errors(&r, "globs/main.conf:257:1: include limit: more than 256 @include statements for one configuration");
    unparse(&r);

    /* bytes: two includes of 9 MiB each are more than 16 MiB together */
    size_t nine = (size_t)9 << 20;
    big = malloc(nine);
    assert_non_null(big);
    memset(big, ' ', nine);
    big[0] = '#';
    big[nine - 1] = '\n';
    write_filen("bytes/one.conf", big, nine);
    write_filen("bytes/two.conf", big, nine);
    free(big);
    write_file("bytes/main.conf", "@include(\"one.conf\")\n@include(\"two.conf\")\nz: 1\n");
    parse_path(&r, "bytes/main.conf");
    assert_errors(&r, "bytes/main.conf:2:1: include limit: the files of one configuration hold more than 16 MiB "
                      "together");
    assert_null(at(r.doc.root, "z", NULL));
    unparse(&r);
}

static void test_variables_across_includes(void **state)
{
    (void)state;
    parsed r;
    write_file("conf/vars.conf", "$port: 7000\nuses: $host\n");
    parse_named(&r, "conf/main.conf", "$host: \"h\"\n@include(\"vars.conf\")\nlisten: $host + \":\" + $port\n");
    assert_ok(&r);
    assert_str(at(r.doc.root, "uses", NULL), "h");
    assert_str(at(r.doc.root, "listen", NULL), "h:7000");
    unparse(&r);
}

static void test_parse_file_errors(void **state)
{
    (void)state;
    parsed r;
    parse_path(&r, "missing.conf");
    assert_errors(&r, "missing.conf:1:1: cannot open missing.conf: No such file or directory");
    unparse(&r);

    mkdir("adir", 0755);
    parse_path(&r, "adir");
    assert_errors(&r, "adir:1:1: cannot open adir: Is a directory");
    unparse(&r);

    write_file("ok.conf", "a: 1\n");
    parse_path(&r, "ok.conf");
    assert_ok(&r);
    assert_pos(member(r.doc.root, "a")->key_pos, "ok.conf", 1, 1);
    unparse(&r);
}

/* ---- positions: UTF-8, CRLF */

static void test_unicode_columns(void **state)
{
    (void)state;
    parsed r;
    /* e-acute (2 bytes), euro (3 bytes), emoji (4 bytes): one column each */
    parse(&r, "k: \"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\" x: 1\n"
              "# comment \xC3\xBC\xC3\xBC\n"
              "\"\xD0\xBA\xD0\xBB\xD1\x8E\xD1\x87\": 2  y: 3\n");
    assert_ok(&r);
    assert_str(at(r.doc.root, "k", NULL), "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
    assert_pos(member(r.doc.root, "x")->key_pos, "t.conf", 1, 10);
    assert_pos(at(r.doc.root, "x", NULL)->pos, "t.conf", 1, 13);
    assert_int(at(r.doc.root, "\xD0\xBA\xD0\xBB\xD1\x8E\xD1\x87", NULL), 2);
    assert_pos(member(r.doc.root, "y")->key_pos, "t.conf", 3, 12);
    unparse(&r);

    parse_error("k: \"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\" x: nope\n",
                "t.conf:1:13: unquoted string 'nope': write \"nope\"");
}

static void test_crlf(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "a: 1\r\nb: \"x\"\r\n# c\r\n  c { d: 2 }\r\n");
    assert_ok(&r);
    assert_int(at(r.doc.root, "a", NULL), 1);
    assert_str(at(r.doc.root, "b", NULL), "x");
    assert_pos(member(r.doc.root, "b")->key_pos, "t.conf", 2, 1);
    assert_pos(at(r.doc.root, "b", NULL)->pos, "t.conf", 2, 4);
    assert_pos(member(at(r.doc.root, "c", NULL), "d")->key_pos, "t.conf", 4, 7);
    unparse(&r);

    parse_error("a: 1\r\nb: nope\r\n", "t.conf:2:4: unquoted string 'nope': write \"nope\"");
    parse_error("a:\r\nb: 1\r\n", "t.conf:1:3: expected a value, found end of line");
    parse_error("a: \"abc\r\nb: 1\r\n", "t.conf:1:4: unterminated string");

    /* a lone CR is whitespace */
    parse(&r, "a: 1\rb: 2\r");
    assert_ok(&r);
    assert_int(at(r.doc.root, "b", NULL), 2);
    assert_pos(member(r.doc.root, "b")->key_pos, "t.conf", 1, 6);
    unparse(&r);
}

/* ---- input validation */

static void test_nul_byte(void **state)
{
    (void)state;
    parsed r;
    static const char text[] = "a: 1\nbb: \"x\0y\"\nc: nope\n";
    parsen(&r, text, sizeof(text) - 1);
    assert_errors(&r, "t.conf:2:7: NUL byte in input");
    unparse(&r);

    static const char text2[] = "# \xC3\xA9\xC3\xA9\0";
    parsen(&r, text2, sizeof(text2) - 1);
    assert_errors(&r, "t.conf:1:5: NUL byte in input");
    unparse(&r);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    parse_error("a: \"\xFF\"\n", "t.conf:1:5: invalid UTF-8");
    parse_error("a: 1\n# \xC3\xA9 \xC0\xAF overlong\n", "t.conf:2:5: invalid UTF-8");
    parse_error("a: \"\xED\xA0\x80\"\n", "t.conf:1:5: invalid UTF-8"); /* a surrogate */
    parse_error("a: \"\xF4\x90\x80\x80\"\n", "t.conf:1:5: invalid UTF-8"); /* > U+10FFFF */
    parse_error("a: \"\xE2\x82", "t.conf:1:5: invalid UTF-8");               /* cut short */
    parse_error("a: \"\x80\"", "t.conf:1:5: invalid UTF-8");                 /* stray continuation */
}

/* ---- limits */

static void test_depth_limit(void **state)
{
    (void)state;
    parsed r;
    size_t n = 10000;
    char *text = malloc(n + 8);
    memcpy(text, "a: ", 3);
    memset(text + 3, '[', n);
    parsen(&r, text, n + 3);
    assert_errors(&r, "t.conf:1:68: nesting deeper than 64 levels");
    unparse(&r);

    /* exactly 64 levels is fine */
    char buf[256];
    memset(buf, 0, sizeof(buf));
    memcpy(buf, "a: ", 3);
    memset(buf + 3, '[', 64);
    memset(buf + 67, ']', 64);
    parse(&r, buf);
    assert_ok(&r);
    unparse(&r);

    /* blocks, inline objects and calls count too */
    size_t len = 0;
    for (int i = 0; i < 100; i++)
        len += (size_t)sprintf(text + len, "k{");
    parsen(&r, text, len);
    assert_errors(&r, "t.conf:1:130: nesting deeper than 64 levels");
    unparse(&r);

    len = (size_t)sprintf(text, "a: ");
    for (int i = 0; i < 100; i++)
        len += (size_t)sprintf(text + len, "{k:");
    parsen(&r, text, len);
    assert_errors(&r, "t.conf:1:196: nesting deeper than 64 levels");
    unparse(&r);

    len = (size_t)sprintf(text, "a: ");
    for (int i = 0; i < 100; i++)
        len += (size_t)sprintf(text + len, "@env(");
    parsen(&r, text, len);
    assert_errors(&r, "t.conf:1:324: nesting deeper than 64 levels");
    unparse(&r);
    free(text);

    /* a variable cannot smuggle extra depth in */
    char deep[512];
    len = (size_t)sprintf(deep, "$v: ");
    for (int i = 0; i < 40; i++)
        len += (size_t)sprintf(deep + len, "[");
    for (int i = 0; i < 40; i++)
        len += (size_t)sprintf(deep + len, "]");
    len += (size_t)sprintf(deep + len, "\nok: $v\nbad: ");
    for (int i = 0; i < 30; i++)
        len += (size_t)sprintf(deep + len, "[");
    len += (size_t)sprintf(deep + len, "$v");
    for (int i = 0; i < 30; i++)
        len += (size_t)sprintf(deep + len, "]");
    parse(&r, deep);
    assert_errors(&r, "t.conf:3:36: nesting deeper than 64 levels");
    unparse(&r);
}

static void test_large_string(void **state)
{
    (void)state;
    parsed r;
    size_t n = 1 << 20;
    char *text = malloc(n + 32);
    memcpy(text, "big: \"", 6);
    for (size_t i = 0; i < n; i++)
        text[6 + i] = (char)('a' + i % 26);
    memcpy(text + 6 + n, "\"\nafter: 1\n", 11);
    double t0 = now();
    parsen(&r, text, n + 17);
    assert_ok(&r);
    const tn_value *v = at(r.doc.root, "big", NULL);
    assert_int_equal(v->type, TN_V_STRING);
    assert_int_equal(v->u.s.len, n);
    assert_memory_equal(v->u.s.ptr, text + 6, n);
    assert_pos(member(r.doc.root, "after")->key_pos, "t.conf", 2, 1);
    unparse(&r);

    /* the same with an escape every other character */
    size_t len = (size_t)sprintf(text, "big: \"");
    while (len < n)
        len += (size_t)sprintf(text + len, "\\n");
    len += (size_t)sprintf(text + len, "\"");
    parsen(&r, text, len);
    assert_ok(&r);
    assert_int_equal(at(r.doc.root, "big", NULL)->u.s.len, (len - 7) / 2);
    unparse(&r);
    free(text);
    if (now() - t0 > 5)
        fail_msg("1 MiB strings took %.1fs", now() - t0);
}

static void test_many_keys_linear(void **state)
{
    (void)state;
    parsed r;
    size_t nkeys = 100000;
    char *text = malloc(nkeys * 24 + 64);
    size_t len = (size_t)sprintf(text, "[s]\n");
    for (size_t i = 0; i < nkeys; i++)
        len += (size_t)sprintf(text + len, "k%zu: %zu\n", i, i);
    len += (size_t)sprintf(text + len, "[t]\nx: 1\n[s]\nk77: 1\nnew: 2\n");
    double t0 = now();
    parsen(&r, text, len);
    double took = now() - t0;
    /* the duplicate is found through the key index after merging sections */
    assert_errors(&r, "t.conf:100005:1: duplicate key 'k77' (first defined at 79:1)");
    const tn_value *s = at(r.doc.root, "s", NULL);
    assert_int_equal(s->u.o.len, nkeys + 1);
    assert_int(at(s, "k99999", NULL), 99999);
    assert_int(at(s, "new", NULL), 2);
    unparse(&r);
    free(text);
    /* a linear scan per key would take minutes here */
    if (took > 5)
        fail_msg("100000 keys took %.1fs", took);
}

static void test_expansion_budget(void **state)
{
    (void)state;
    parsed r;
    /* each line doubles the tree: 2^40 strings without a budget */
    char text[4096];
    size_t len = (size_t)sprintf(text, "$a0: \"0123456789abcdef0123456789abcdef\"\n");
    for (int i = 1; i <= 40; i++)
        len += (size_t)sprintf(text + len, "$a%d: [$a%d, $a%d]\n", i, i - 1, i - 1);
    len += (size_t)sprintf(text + len, "x: $a40\ny: 1\n");
    parse(&r, text);
    assert_int_equal(r.rc, -1);
    assert_int_equal(r.diag.total, 1);
    const char *want = "expansion limit exceeded: variables, '+' and @file produced more than 64 MiB";
    if (!strstr(r.diag.msgs[0], want))
        fail_msg("got %s", r.diag.msgs[0]);
    assert_null(at(r.doc.root, "x", NULL));
    assert_int(at(r.doc.root, "y", NULL), 1);
    unparse(&r);

    /* the same with strings */
    len = (size_t)sprintf(text, "$s: \"0123456789abcdef\"\n");
    for (int i = 0; i < 40; i++)
        len += (size_t)sprintf(text + len, "$s: $s + $s\n");
    parse(&r, text);
    assert_int_equal(r.rc, -1);
    assert_true(r.diag.total >= 1);
    unparse(&r);
}

/* ---- errors */

static void test_multiple_errors_reported(void **state)
{
    (void)state;
    parsed r;
    parse(&r, "a: 1\n"
              "b: nope\n"
              "c: 2\n"
              "d: \"unterminated\n"
              "e { x: ; y: 1 }\n"
              "f: 3\n"
              "g: [1 2]\n"
              "h: [1,\n  oops,\n  2]\n"
              "i: 4\n"
              "}\n"
              "j { k: }\n"
              "l: 5\n");
    assert_errors(&r, "t.conf:2:4: unquoted string 'nope': write \"nope\"\n"
                      "t.conf:4:4: unterminated string\n"
                      "t.conf:5:8: unexpected character ';'\n"
                      "t.conf:7:7: expected ',' or ']' after array item, found a number\n"
                      "t.conf:9:3: unquoted string 'oops': write \"oops\"\n"
                      "t.conf:12:1: unexpected '}'\n"
                      "t.conf:13:8: expected a value, found '}'");
    const char *good[] = { "a", "c", "f", "i", "l" };
    for (size_t i = 0; i < 5; i++)
        assert_non_null(at(r.doc.root, good[i], NULL));
    /* the blocks still closed where they should */
    assert_int_equal(at(r.doc.root, "e", NULL)->u.o.len, 0);
    assert_int_equal(at(r.doc.root, "j", NULL)->u.o.len, 0);
    unparse(&r);
}

static void test_diag_cap(void **state)
{
    (void)state;
    parsed r;
    char text[2048];
    size_t len = 0;
    for (int i = 0; i < 30; i++)
        len += (size_t)sprintf(text + len, "k%d: bare\n", i);
    parse(&r, text);
    assert_int_equal(r.rc, -1);
    assert_int_equal(r.diag.total, 30);
    assert_int_equal(r.diag.count, TN_DIAG_MAX);
    assert_string_equal(r.diag.msgs[19], "t.conf:20:6: unquoted string 'bare': write \"bare\"");
    unparse(&r);
}

static void test_error_messages(void **state)
{
    (void)state;
    unsetenv("TUSK_TEST_UNSET");
    static const struct {
        const char *in, *want;
    } cases[] = {
        /* strings */
        { "a: \"abc\nb: 1\n", "t.conf:1:4: unterminated string" },
        { "a: 'abc\nb: 1\n", "t.conf:1:4: unterminated string" },
        { "a: \"abc\\\nb: 1\n", "t.conf:1:4: unterminated string" },
        { "a: \"abc", "t.conf:1:4: unterminated string" },
        { "a: \"x\\qy\"", "t.conf:1:6: invalid escape '\\q'" },
        { "a: \"x\\0\"", "t.conf:1:6: invalid escape '\\0'" },
        { "a: \"x\\'\"", "t.conf:1:6: invalid escape '\\''" },
        { "a: \"\\u12\"", "t.conf:1:5: invalid escape '\\u': expected 4 hex digits" },
        { "a: \"\\uD83D\"", "t.conf:1:5: invalid escape '\\uD83D': lone surrogate" },
        { "a: \"\\uD83Dx\"", "t.conf:1:5: invalid escape '\\uD83D': lone surrogate" },
        { "a: \"\\uDE00\"", "t.conf:1:5: invalid escape '\\uDE00': lone surrogate" },
        { "a: \"\\uD83D\\u0041\"", "t.conf:1:5: invalid escape '\\uD83D': lone surrogate" },
        { "a: \"\\u0000\"", "t.conf:1:5: invalid escape '\\u0000': NUL is not allowed" },
        { "a: \"\\q \\w\"", "t.conf:1:5: invalid escape '\\q'\nt.conf:1:8: invalid escape '\\w'" },
        /* numbers */
        { "a: 9223372036854775808", "t.conf:1:4: integer out of range" },
        { "a: -9223372036854775809", "t.conf:1:4: integer out of range" },
        { "a: 99999999999999999999999", "t.conf:1:4: integer out of range" },
        { "a: 1e999", "t.conf:1:4: number out of range" },
        { "a: 1.2.3", "t.conf:1:4: invalid number '1.2.3'" },
        { "a: 30s5", "t.conf:1:4: invalid number '30s5'" },
        { "a: 10.", "t.conf:1:4: invalid number '10.'" },
        { "a: 5_000", "t.conf:1:4: invalid number '5_000'" },
        /* characters */
        { "a: 1 ; b: 2", "t.conf:1:6: unexpected character ';'" },
        { "a: \xC3\xA9", "t.conf:1:4: unexpected character '\xC3\xA9'" },
        { "a: \x01", "t.conf:1:4: unexpected character U+0001" },
        { "a: - 1", "t.conf:1:4: unexpected character '-'" },
        { "a: .5", "t.conf:1:4: unexpected character '.'" },
        { "$: 1", "t.conf:1:1: expected a variable name after '$'" },
        { "a: @ x", "t.conf:1:4: expected a function name after '@'" },
        /* values */
        { "a: echo", "t.conf:1:4: unquoted string 'echo': write \"echo\"" },
        { "a: True", "t.conf:1:4: unquoted string 'True': write \"True\"" },
        { "a:\nb: 1", "t.conf:1:3: expected a value, found end of line" },
        { "a:", "t.conf:1:3: expected a value, found end of file" },
        { "a: }", "t.conf:1:4: expected a value, found '}'" },
        { "a: ,", "t.conf:1:4: expected a value, found ','" },
        { "a: \"x\" +\n", "t.conf:2:1: expected a value, found end of file" },
        { "a: [1, , 2]", "t.conf:1:8: expected a value, found ','" },
        /* statements */
        { "foo 1", "t.conf:1:5: expected ':' or '=' after key 'foo'" },
        { "\"GET /\" \"x\"", "t.conf:1:9: expected ':' or '=' after key 'GET /'" },
        { "$x 1", "t.conf:1:4: expected ':' or '=' after variable $x" },
        { "1: 2", "t.conf:1:1: expected a key, found a number" },
        { "= 2", "t.conf:1:1: expected a key, found '='" },
        { "a: 1 2", "t.conf:1:6: expected a key, found a number" },
        { "a { > }", "t.conf:1:5: expected a key, found '>'" },
        { "}\na: 1", "t.conf:1:1: unexpected '}'" },
        { "a: 1\n]", "t.conf:2:1: unexpected ']'" },
        { "a { b: 1 < }", "t.conf:1:10: unexpected '<'" },
        { "a { b: 1 ) }", "t.conf:1:10: unexpected ')'" },
        /* brackets */
        { "a: [1 2]", "t.conf:1:7: expected ',' or ']' after array item, found a number" },
        { "a: [1 b: 2", "t.conf:1:7: expected ',' or ']' after array item, found 'b'" },
        { "a {\n b: 1\n", "t.conf:1:3: unterminated block: missing '}' before end of file" },
        { "a >\n b: 1\n", "t.conf:1:3: unterminated block: missing '<' before end of file" },
        { "a: {b: 1", "t.conf:1:4: unterminated block: missing '}' before end of file" },
        { "a: [1,\n 2\n", "t.conf:1:4: unterminated array: missing ']' before end of file" },
        /* sections */
        { "a { [x] }", "t.conf:1:5: section headers are only allowed at top level" },
        { "[1]", "t.conf:1:2: expected a section name after '[', found a number" },
        { "[\"a\"]", "t.conf:1:2: expected a section name after '[', found a string" },
        { "[a\nb: 1", "t.conf:1:3: expected ']' after section name, found end of line" },
        { "a: 1\n[a]", "t.conf:2:2: duplicate key 'a' (first defined at 1:1)" },
        /* variables and + */
        { "a: $nope", "t.conf:1:4: undefined variable $nope" },
        { "a: [1] + \"x\"", "t.conf:1:4: cannot concatenate array" },
        { "a: \"x\" + {b: 1}", "t.conf:1:10: cannot concatenate object" },
        { "a: \"x\" + null", "t.conf:1:10: cannot concatenate null" },
        { "$x: [1, nope]\na: $x\nb: $x", "t.conf:1:9: unquoted string 'nope': write \"nope\"" },
        /* functions */
        { "a: @env(\"TUSK_TEST_UNSET\")", "t.conf:1:4: environment variable TUSK_TEST_UNSET is not set" },
        { "a: @env()", "t.conf:1:4: @env expects 1 or 2 arguments" },
        { "a: @env(\"A\", 1, 2)", "t.conf:1:4: @env expects 1 or 2 arguments" },
        { "a: @env(\"A\", 1, 2, 3, 4)", "t.conf:1:4: @env expects 1 or 2 arguments" },
        { "a: @env(1)", "t.conf:1:9: @env: the variable name must be a string" },
        { "a: @env\n", "t.conf:1:8: expected '(' after @env, found end of line" },
        { "a: @env(\"A\" \"B\")", "t.conf:1:13: expected ',' or ')' after argument, found a string" },
        { "a: @file()", "t.conf:1:4: @file expects 1 argument" },
        { "a: @file(1)", "t.conf:1:10: @file: the path must be a string" },
        { "@include()", "t.conf:1:1: @include expects 1 argument" },
        { "@include(1)", "t.conf:1:10: @include: the pattern must be a string" },
        { "a: @include(\"x\")", "t.conf:1:4: @include is a statement and cannot be used as a value" },
        { "@env(\"HOME\")", "t.conf:1:1: expected a key, found '@env'" },
        { "@foo(1)", "t.conf:1:1: unknown function @foo" },
        { "a: @foo(1)", "t.conf:1:4: unknown function @foo" },
        /* long user text is cut in messages */
        { "a: abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz",
          "t.conf:1:4: unquoted string 'abcdefghijklmnopqrstuvwxyzabcdefghijklmn...': write "
          "\"abcdefghijklmnopqrstuvwxyzabcdefghijklmn...\"" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        parsed r;
        parse(&r, cases[i].in);
        char *got = tn_diag_join(&r.diag);
        if (!got || strcmp(got, cases[i].want) != 0 || r.rc != -1) {
            print_error("input: %s\nwant:  %s\ngot:   %s (rc %d)\n", cases[i].in, cases[i].want,
                        got ? got : "(none)", r.rc);
            free(got);
            unparse(&r);
            fail();
        }
        free(got);
        unparse(&r);
    }
}

/* ---- the configuration-language example, verbatim */

static const char spec_example[] =
    "$bind: @env(\"TUSKNET_BIND\", \"127.0.0.1\")\n"
    "\n"
    "[daemon]\n"
    "log_level: \"info\"                       # error | warn | info | debug\n"
    "control_socket: \"/run/tusknetd/control.sock\"\n"
    "max_connections: 10000\n"
    "shutdown_timeout: \"10s\"\n"
    "\n"
    "[limits]                                # defaults; any listener may override\n"
    "idle_timeout: \"300s\"\n"
    "max_line: \"64KB\"\n"
    "max_body: \"8MB\"\n"
    "max_message: \"1MB\"\n"
    "\n"
    "[handlers]\n"
    "echo   { type: \"echo\" }\n"
    "ping   { type: \"static\"  reply: \"+PONG\" }\n"
    "time   { type: \"static\"  reply: \"{time}\" }\n"
    "upper  { type: \"exec\"    command: [\"tr\", \"a-z\", \"A-Z\"]  timeout: \"2s\" }\n"
    "chat   { type: \"broadcast\" }\n"
    "health { type: \"health\" }\n"
    "site   { type: \"file\"    root: \"./conf/www\" }\n"
    "\n"
    "[listeners]\n"
    "lines {\n"
    "    protocol: \"tcp\"\n"
    "    listen: $bind + \":7000\"\n"
    "    handlers: [\"echo\", \"ping\", \"time\", \"upper\"]\n"
    "    max_connections: 1000\n"
    "}\n"
    "dgram { protocol: \"udp\"   listen: $bind + \":7001\"   handlers: [\"echo\", \"time\"] }\n"
    "web {\n"
    "    protocol: \"http\"\n"
    "    listen: $bind + \":8080\"\n"
    "    middleware: [\"cors\", \"gzip\"]\n"
    "    routes {\n"
    "        \"GET /health\": \"health\"\n"
    "        \"POST /upper\": \"upper\"\n"
    "        \"GET /*\": \"site\"\n"
    "    }\n"
    "    websocket {\n"
    "        \"/ws\": [\"echo\", \"chat\", \"upper\"]\n"
    "        \"/chat\": { handler: \"chat\"  max_message: \"64KB\" }\n"
    "    }\n"
    "}\n";

static void test_spec_example(void **state)
{
    (void)state;
    parsed r;
    unsetenv("TUSKNET_BIND");
    parse_named(&r, "tusknetd.conf", spec_example);
    assert_ok(&r);
    const tn_value *root = r.doc.root;
    assert_int_equal(root->u.o.len, 4);
    assert_str(at(root, "daemon", "log_level", NULL), "info");
    assert_int(at(root, "daemon", "max_connections", NULL), 10000);
    assert_str(at(root, "limits", "max_line", NULL), "64KB");
    assert_int_equal(at(root, "handlers", NULL)->u.o.len, 7);
    assert_str(at(root, "handlers", "ping", "reply", NULL), "+PONG");
    assert_str(at(root, "handlers", "upper", "command", "#2", NULL), "A-Z");
    assert_str(at(root, "handlers", "upper", "timeout", NULL), "2s");
    assert_str(at(root, "listeners", "lines", "listen", NULL), "127.0.0.1:7000");
    assert_str(at(root, "listeners", "dgram", "listen", NULL), "127.0.0.1:7001");
    assert_str(at(root, "listeners", "web", "listen", NULL), "127.0.0.1:8080");
    assert_str(at(root, "listeners", "web", "routes", "GET /health", NULL), "health");
    assert_str(at(root, "listeners", "web", "routes", "GET /*", NULL), "site");
    assert_str(at(root, "listeners", "web", "websocket", "/ws", "#1", NULL), "chat");
    assert_str(at(root, "listeners", "web", "websocket", "/chat", "max_message", NULL), "64KB");
    assert_pos(member(at(root, "listeners", "web", "routes", NULL), "POST /upper")->key_pos,
               "tusknetd.conf", 38, 9);
    assert_pos(at(root, "listeners", "web", "listen", NULL)->pos, "tusknetd.conf", 34, 13);
    unparse(&r);

    setenv("TUSKNET_BIND", "0.0.0.0", 1);
    parse_named(&r, "tusknetd.conf", spec_example);
    assert_ok(&r);
    assert_str(at(r.doc.root, "listeners", "web", "listen", NULL), "0.0.0.0:8080");
    unparse(&r);
    unsetenv("TUSKNET_BIND");
}

/* Parsing into a doc that already has a root adds to it. */
static void test_parse_into_existing_doc(void **state)
{
    (void)state;
    tn_doc doc = { 0 };
    tn_diag diag = { 0 };
    assert_int_equal(tn_tusk_parse_string(&doc, "a.conf", "[s]\na: 1\n", 9, &diag), 0);
    assert_int_equal(tn_tusk_parse_string(&doc, "b.conf", "[s]\nb: 2\n", 9, &diag), 0);
    assert_int(at(doc.root, "s", "a", NULL), 1);
    assert_int(at(doc.root, "s", "b", NULL), 2);
    assert_pos(member(at(doc.root, "s", NULL), "b")->key_pos, "b.conf", 2, 1);
    /* the return value counts this parse's errors only */
    assert_int_equal(tn_tusk_parse_string(&doc, "c.conf", "x: y\n", 5, &diag), -1);
    assert_int_equal(tn_tusk_parse_string(&doc, "d.conf", "x: 1\n", 5, &diag), 0);
    tn_doc_free(&doc);
    tn_diag_free(&diag);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_file),
        cmocka_unit_test(test_comments_only),
        cmocka_unit_test(test_bom_is_skipped),
        cmocka_unit_test(test_key_separators),
        cmocka_unit_test(test_identifier_keys),
        cmocka_unit_test(test_quoted_keys),
        cmocka_unit_test(test_brace_block),
        cmocka_unit_test(test_angle_block),
        cmocka_unit_test(test_inline_object),
        cmocka_unit_test(test_statements_on_one_line),
        cmocka_unit_test(test_sections),
        cmocka_unit_test(test_section_merging),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_arrays),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_unicode_escapes),
        cmocka_unit_test(test_raw_strings),
        cmocka_unit_test(test_numbers_bools_null),
        cmocka_unit_test(test_unit_literals),
        cmocka_unit_test(test_variables),
        cmocka_unit_test(test_concatenation),
        cmocka_unit_test(test_env),
        cmocka_unit_test_setup_teardown(test_file, fs_setup, fs_teardown),
        cmocka_unit_test_setup_teardown(test_include_glob_and_merge, fs_setup, fs_teardown),
        cmocka_unit_test_setup_teardown(test_include_in_block, fs_setup, fs_teardown),
        cmocka_unit_test_setup_teardown(test_include_errors, fs_setup, fs_teardown),
        cmocka_unit_test_setup_teardown(test_include_limits, fs_setup, fs_teardown),
        cmocka_unit_test_setup_teardown(test_variables_across_includes, fs_setup, fs_teardown),
        cmocka_unit_test_setup_teardown(test_parse_file_errors, fs_setup, fs_teardown),
        cmocka_unit_test(test_unicode_columns),
        cmocka_unit_test(test_crlf),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_large_string),
        cmocka_unit_test(test_many_keys_linear),
        cmocka_unit_test(test_expansion_budget),
        cmocka_unit_test(test_multiple_errors_reported),
        cmocka_unit_test(test_diag_cap),
        cmocka_unit_test(test_error_messages),
        cmocka_unit_test(test_spec_example),
        cmocka_unit_test(test_parse_into_existing_doc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
