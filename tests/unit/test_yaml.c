/* SPDX-License-Identifier: MIT */
/* test_yaml.c - the YAML loader and emitter (src/config/yaml.c): scalar
 * resolution, positions, every error with its exact FILE:LINE:COL text, the
 * limits that keep hostile input bounded, and load(emit(T)) == T. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/yaml.h"

typedef struct loaded {
    tn_doc doc;
    tn_diag diag;
    int rc;
} loaded;

static int loadn(loaded *l, const char *text, size_t len)
{
    memset(l, 0, sizeof(*l));
    l->rc = tn_yaml_load_string(&l->doc, "t.yaml", text, len, &l->diag);
    return l->rc;
}

static int load(loaded *l, const char *text) { return loadn(l, text, strlen(text)); }

static void unload(loaded *l)
{
    tn_doc_free(&l->doc);
    tn_diag_free(&l->diag);
}

/* Asserts the load failed with exactly these messages (joined by '\n'). */
static void assert_errors(loaded *l, const char *want)
{
    char *got = tn_diag_join(&l->diag);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
    assert_int_equal(l->rc, -1);
    /* The root is always an object, even after an error. */
    assert_non_null(l->doc.root);
    assert_int_equal(l->doc.root->type, TN_V_OBJECT);
}

static void assert_ok(loaded *l)
{
    char *got = tn_diag_join(&l->diag);
    if (got)
        fail_msg("unexpected diagnostics: %s", got);
    assert_int_equal(l->rc, 0);
    assert_non_null(l->doc.root);
    assert_int_equal(l->doc.root->type, TN_V_OBJECT);
}

static void load_error(const char *text, const char *want)
{
    loaded l;
    load(&l, text);
    assert_errors(&l, want);
    unload(&l);
}

/* Loads "v: TEXT" and returns a clone of v (caller frees). */
static tn_value *value_of(const char *text)
{
    loaded l;
    char buf[256];
    snprintf(buf, sizeof(buf), "v: %s\n", text);
    load(&l, buf);
    assert_ok(&l);
    tn_value *v = tn_value_clone(tn_object_get(l.doc.root, "v"));
    assert_non_null(v);
    unload(&l);
    return v;
}

static void resolves_null(const char *text)
{
    tn_value *v = value_of(text);
    if (v->type != TN_V_NULL)
        fail_msg("%s: expected null, got %s", text, tn_vtype_name(v->type));
    tn_value_free(v);
}

static void resolves_bool(const char *text, bool b)
{
    tn_value *v = value_of(text);
    if (v->type != TN_V_BOOL)
        fail_msg("%s: expected boolean, got %s", text, tn_vtype_name(v->type));
    assert_int_equal(v->u.b, b);
    tn_value_free(v);
}

static void resolves_int(const char *text, int64_t i)
{
    tn_value *v = value_of(text);
    if (v->type != TN_V_INT)
        fail_msg("%s: expected integer, got %s", text, tn_vtype_name(v->type));
    if (v->u.i != i)
        fail_msg("%s: got %lld", text, (long long)v->u.i);
    tn_value_free(v);
}

static void resolves_float(const char *text, double f)
{
    tn_value *v = value_of(text);
    if (v->type != TN_V_FLOAT)
        fail_msg("%s: expected number, got %s", text, tn_vtype_name(v->type));
    if (!(v->u.f == f))
        fail_msg("%s: got %.17g, want %.17g", text, v->u.f, f);
    tn_value_free(v);
}

static void resolves_string(const char *text, const char *s)
{
    tn_value *v = value_of(text);
    if (v->type != TN_V_STRING)
        fail_msg("%s: expected string, got %s", text, tn_vtype_name(v->type));
    assert_string_equal(v->u.s.ptr, s);
    assert_int_equal(v->u.s.len, strlen(s));
    tn_value_free(v);
}

/* ---- scalar resolution */

static void test_plain_null(void **state)
{
    (void)state;
    resolves_null("null");
    resolves_null("Null");
    resolves_null("NULL");
    resolves_null("~");
    resolves_null("");
    resolves_string("nULL", "nULL");
    resolves_string("none", "none");
}

static void test_plain_bool(void **state)
{
    (void)state;
    resolves_bool("true", true);
    resolves_bool("True", true);
    resolves_bool("TRUE", true);
    resolves_bool("false", false);
    resolves_bool("False", false);
    resolves_bool("FALSE", false);
    /* YAML 1.1 booleans are plain strings in the 1.2 core schema. */
    resolves_string("yes", "yes");
    resolves_string("on", "on");
    resolves_string("off", "off");
    resolves_string("tRUE", "tRUE");
}

static void test_plain_int(void **state)
{
    (void)state;
    resolves_int("0", 0);
    resolves_int("42", 42);
    resolves_int("-17", -17);
    resolves_int("+17", 17);
    resolves_int("007", 7);
    resolves_int("9223372036854775807", INT64_MAX);
    resolves_int("-9223372036854775808", INT64_MIN);
    resolves_int("0x1F", 31);
    resolves_int("0xff", 255);
    resolves_int("0o17", 15);
    resolves_int("0x7FFFFFFFFFFFFFFF", INT64_MAX);
    /* Not integers in the core schema: strings for the schema to judge. */
    resolves_string("1_000", "1_000");
    resolves_string("-0x10", "-0x10");
    resolves_string("0x", "0x");
    resolves_string("0o8", "0o8");
    resolves_string("10s", "10s");
    resolves_string("64KB", "64KB");
    resolves_string("1.2.3", "1.2.3");
    resolves_string("127.0.0.1:8080", "127.0.0.1:8080");
}

static void test_plain_float(void **state)
{
    (void)state;
    resolves_float("1.5", 1.5);
    resolves_float("-2e3", -2000.0);
    resolves_float("2E-2", 0.02);
    resolves_float("1.", 1.0);
    resolves_float(".5", 0.5);
    resolves_float("+.5", 0.5);
    resolves_float("1e5", 100000.0);
    resolves_float("0.0", 0.0);
    resolves_float(".inf", INFINITY);
    resolves_float("-.Inf", -INFINITY);
    resolves_float("+.INF", INFINITY);
    /* NaN is deliberately not a number here. */
    resolves_string(".nan", ".nan");
    resolves_string("1e", "1e");
    resolves_string(".", ".");
    resolves_string("e5", "e5");
}

static void test_plain_other_strings(void **state)
{
    (void)state;
    resolves_string("hello world", "hello world");
    resolves_string("/var/run/x.sock", "/var/run/x.sock");
    resolves_string("a#b", "a#b");
    resolves_string("x  # comment", "x");
}

static void test_quoted_always_string(void **state)
{
    (void)state;
    resolves_string("\"1\"", "1");
    resolves_string("'1.5'", "1.5");
    resolves_string("\"true\"", "true");
    resolves_string("'null'", "null");
    resolves_string("\"\"", "");
    resolves_string("''", "");
    resolves_string("\"~\"", "~");
    resolves_string("\"a\\tb\\n\"", "a\tb\n");
    resolves_string("'it''s'", "it's");

    loaded l;
    load(&l, "lit: |\n  12\n  true\nfold: >\n  a\n  b\nkeep: |+\n  x\n\nstrip: |-\n  42\n");
    assert_ok(&l);
    tn_value *v = tn_object_get(l.doc.root, "lit");
    assert_int_equal(v->type, TN_V_STRING);
    assert_string_equal(v->u.s.ptr, "12\ntrue\n");
    v = tn_object_get(l.doc.root, "fold");
    assert_int_equal(v->type, TN_V_STRING);
    assert_string_equal(v->u.s.ptr, "a b\n");
    v = tn_object_get(l.doc.root, "keep");
    assert_string_equal(v->u.s.ptr, "x\n\n");
    v = tn_object_get(l.doc.root, "strip");
    assert_int_equal(v->type, TN_V_STRING);
    assert_string_equal(v->u.s.ptr, "42");
    unload(&l);
}

static void test_tags(void **state)
{
    (void)state;
    resolves_string("!!str 12", "12");
    resolves_string("!!str true", "true");
    resolves_string("!!str", "");
    resolves_string("! 12", "12");
    /* Other tags are ignored: the plain scalar resolves as usual. */
    resolves_int("!!int 12", 12);
    resolves_int("!custom 12", 12);
}

static void test_keys_are_raw_text(void **state)
{
    (void)state;
    loaded l;
    load(&l, "1: a\ntrue: b\nnull: c\n\"\": d\n0x10: e\n~: f\n");
    assert_ok(&l);
    tn_value *r = l.doc.root;
    assert_int_equal(r->u.o.len, 6);
    assert_string_equal(r->u.o.items[0].key, "1");
    assert_string_equal(r->u.o.items[1].key, "true");
    assert_string_equal(r->u.o.items[2].key, "null");
    assert_string_equal(r->u.o.items[3].key, "");
    assert_string_equal(r->u.o.items[4].key, "0x10");
    assert_string_equal(r->u.o.items[5].key, "~");
    unload(&l);
}

/* ---- structure */

static void test_nested(void **state)
{
    (void)state;
    loaded l;
    load(&l,
         "daemon:\n"
         "  log_level: info\n"
         "  max_connections: 10000\n"
         "handlers:\n"
         "  upper: {type: exec, command: [tr, a-z, A-Z], timeout: 2s}\n"
         "list:\n"
         "  - a\n"
         "  - [1, [2, 3]]\n"
         "  - {k: v}\n"
         "  - - x\n"
         "    - y\n"
         "empty_map: {}\n"
         "empty_seq: []\n"
         "nothing:\n");
    assert_ok(&l);
    tn_value *r = l.doc.root;
    assert_int_equal(r->u.o.len, 6);
    /* Insertion order is kept. */
    assert_string_equal(r->u.o.items[0].key, "daemon");
    assert_string_equal(r->u.o.items[5].key, "nothing");

    tn_value *d = tn_object_get(r, "daemon");
    assert_int_equal(d->type, TN_V_OBJECT);
    assert_string_equal(tn_object_get(d, "log_level")->u.s.ptr, "info");
    assert_int_equal(tn_object_get(d, "max_connections")->u.i, 10000);

    tn_value *up = tn_object_get(tn_object_get(r, "handlers"), "upper");
    assert_int_equal(up->type, TN_V_OBJECT);
    tn_value *cmd = tn_object_get(up, "command");
    assert_int_equal(cmd->type, TN_V_ARRAY);
    assert_int_equal(cmd->u.a.len, 3);
    assert_string_equal(cmd->u.a.items[2]->u.s.ptr, "A-Z");
    assert_string_equal(tn_object_get(up, "timeout")->u.s.ptr, "2s");

    tn_value *list = tn_object_get(r, "list");
    assert_int_equal(list->u.a.len, 4);
    assert_string_equal(list->u.a.items[0]->u.s.ptr, "a");
    tn_value *inner = list->u.a.items[1];
    assert_int_equal(inner->u.a.len, 2);
    assert_int_equal(inner->u.a.items[0]->u.i, 1);
    assert_int_equal(inner->u.a.items[1]->u.a.items[1]->u.i, 3);
    assert_string_equal(tn_object_get(list->u.a.items[2], "k")->u.s.ptr, "v");
    assert_string_equal(list->u.a.items[3]->u.a.items[1]->u.s.ptr, "y");

    tn_value *em = tn_object_get(r, "empty_map");
    assert_int_equal(em->type, TN_V_OBJECT);
    assert_int_equal(em->u.o.len, 0);
    tn_value *es = tn_object_get(r, "empty_seq");
    assert_int_equal(es->type, TN_V_ARRAY);
    assert_int_equal(es->u.a.len, 0);
    assert_int_equal(tn_object_get(r, "nothing")->type, TN_V_NULL);
    unload(&l);
}

static void test_anchors_and_aliases(void **state)
{
    (void)state;
    loaded l;
    load(&l,
         "base: &b {timeout: 2s, cmd: [a, b]}\n"
         "one: *b\n"
         "two: [*b, *b]\n"
         "n: &n 5\n"
         "m: *n\n"
         "keyed:\n"
         "  &k name: x\n"
         "other:\n"
         "  *k : y\n");
    assert_ok(&l);
    tn_value *r = l.doc.root;
    tn_value *base = tn_object_get(r, "base");
    assert_true(tn_value_equal(base, tn_object_get(r, "one")));
    tn_value *two = tn_object_get(r, "two");
    assert_true(tn_value_equal(base, two->u.a.items[0]));
    assert_true(tn_value_equal(base, two->u.a.items[1]));
    /* A deep copy, not a shared node. */
    assert_ptr_not_equal(base, tn_object_get(r, "one"));
    assert_int_equal(tn_object_get(r, "m")->type, TN_V_INT);
    assert_int_equal(tn_object_get(r, "m")->u.i, 5);
    /* The copy is reported where the alias is; its insides where they were
     * written. */
    tn_value *one = tn_object_get(r, "one");
    assert_int_equal(one->pos.line, 2);
    assert_int_equal(one->pos.col, 6);
    assert_int_equal(tn_object_get(one, "cmd")->pos.line, 1);
    /* An alias of a scalar can be a key. */
    assert_string_equal(tn_object_get(tn_object_get(r, "other"), "name")->u.s.ptr, "y");
    unload(&l);

    /* An anchored key used as a value is the scalar it was, resolved. */
    load(&l, "&k 12: a\nv: *k\n\"x\\0y\": 1\n");
    assert_errors(&l, "t.yaml:3:1: mapping key contains a NUL character");
    tn_value *v = tn_object_get(l.doc.root, "v");
    assert_int_equal(v->type, TN_V_INT);
    assert_int_equal(v->u.i, 12);
    unload(&l);
    load(&l, "v: &s \"a\\0b\"\nm: {*s : 1}\n");
    assert_errors(&l, "t.yaml:2:5: mapping key contains a NUL character");
    unload(&l);

    /* Redefining an anchor changes what later aliases mean. */
    load(&l, "a: &x 1\nb: *x\nc: &x [2]\nd: *x\n");
    assert_ok(&l);
    assert_int_equal(tn_object_get(l.doc.root, "b")->u.i, 1);
    assert_int_equal(tn_object_get(l.doc.root, "d")->type, TN_V_ARRAY);
    unload(&l);

    /* An anchor redefined inside the collection that first defined it: the
     * inner (later) definition is the one that stands. */
    load(&l, "a: &x [&x 7]\nb: *x\n");
    assert_ok(&l);
    assert_int_equal(tn_object_get(l.doc.root, "b")->type, TN_V_INT);
    unload(&l);

    /* The value of a rejected duplicate key can still be aliased safely. */
    load(&l, "a: 1\na: &d [x]\nb: *d\n");
    assert_errors(&l, "t.yaml:2:1: duplicate key 'a' (first defined at 1:1)");
    assert_string_equal(tn_object_get(l.doc.root, "b")->u.a.items[0]->u.s.ptr, "x");
    unload(&l);
}

/* ---- positions */

static void test_positions(void **state)
{
    (void)state;
    loaded l;
    load(&l,
         "# comment\n"
         "daemon:\n"
         "  log_level: \"info\"\n"
         "  list: [a,  bb, {k: 1}]\n"
         "\n"
         "seq:\n"
         "  - x\n"
         "  -   y\n");
    assert_ok(&l);
    tn_value *r = l.doc.root;
    assert_string_equal(r->pos.file, "t.yaml");
    assert_int_equal(r->pos.line, 2);
    assert_int_equal(r->pos.col, 1);

    tn_member *m = tn_object_find(r, "daemon");
    assert_int_equal(m->key_pos.line, 2);
    assert_int_equal(m->key_pos.col, 1);
    assert_int_equal(m->val->pos.line, 3);
    assert_int_equal(m->val->pos.col, 3);

    tn_member *ll = tn_object_find(m->val, "log_level");
    assert_int_equal(ll->key_pos.line, 3);
    assert_int_equal(ll->key_pos.col, 3);
    assert_int_equal(ll->val->pos.line, 3);
    assert_int_equal(ll->val->pos.col, 14); /* the opening quote */
    assert_ptr_equal(ll->val->pos.file, r->pos.file); /* interned once */

    tn_member *lm = tn_object_find(m->val, "list");
    assert_int_equal(lm->val->pos.line, 4);
    assert_int_equal(lm->val->pos.col, 9);
    assert_int_equal(lm->val->u.a.items[0]->pos.col, 10);
    assert_int_equal(lm->val->u.a.items[1]->pos.col, 14);
    tn_value *k = lm->val->u.a.items[2];
    assert_int_equal(k->pos.col, 18);
    assert_int_equal(k->u.o.items[0].key_pos.col, 19);
    assert_int_equal(k->u.o.items[0].val->pos.col, 22);

    tn_value *seq = tn_object_get(r, "seq");
    assert_int_equal(seq->pos.line, 7);
    assert_int_equal(seq->pos.col, 3);
    assert_int_equal(seq->u.a.items[0]->pos.line, 7);
    assert_int_equal(seq->u.a.items[0]->pos.col, 5);
    assert_int_equal(seq->u.a.items[1]->pos.line, 8);
    assert_int_equal(seq->u.a.items[1]->pos.col, 7);
    unload(&l);
}

static void test_positions_unicode_columns(void **state)
{
    (void)state;
    loaded l;
    /* Columns count characters, not bytes. */
    load(&l, "ké: vé\nx: [ü, ö, \"日本\", z]\n");
    assert_ok(&l);
    tn_member *m = tn_object_find(l.doc.root, "ké");
    assert_non_null(m);
    assert_int_equal(m->val->pos.col, 5);
    assert_string_equal(m->val->u.s.ptr, "vé");
    tn_value *x = tn_object_get(l.doc.root, "x");
    assert_int_equal(x->u.a.items[0]->pos.col, 5);
    assert_int_equal(x->u.a.items[1]->pos.col, 8);
    assert_int_equal(x->u.a.items[2]->pos.col, 11);
    assert_int_equal(x->u.a.items[3]->pos.col, 17);
    assert_string_equal(x->u.a.items[2]->u.s.ptr, "日本");
    unload(&l);
}

static void test_crlf(void **state)
{
    (void)state;
    loaded l;
    load(&l, "a: 1\r\nb:\r\n  c: x y\r\n  d: |\r\n    l1\r\n    l2\r\n");
    assert_ok(&l);
    assert_int_equal(tn_object_get(l.doc.root, "a")->u.i, 1);
    tn_member *b = tn_object_find(l.doc.root, "b");
    assert_int_equal(b->key_pos.line, 2);
    tn_member *c = tn_object_find(b->val, "c");
    assert_int_equal(c->key_pos.line, 3);
    assert_int_equal(c->key_pos.col, 3);
    assert_int_equal(c->val->pos.col, 6);
    assert_string_equal(c->val->u.s.ptr, "x y"); /* no stray \r */
    /* Line breaks in block scalars are normalised to \n. */
    assert_string_equal(tn_object_get(b->val, "d")->u.s.ptr, "l1\nl2\n");
    unload(&l);

    /* Reader errors are located by counting lines the same way. */
    static const char nul_crlf[] = "a: 1\r\nb: 2\rc: \0";
    loadn(&l, nul_crlf, sizeof(nul_crlf) - 1);
    assert_errors(&l, "t.yaml:3:4: NUL byte in input");
    unload(&l);
}

static void test_unicode_strings(void **state)
{
    (void)state;
    loaded l;
    load(&l, "greek: αβγ\nemoji: \"😀 ok\"\nescaped: \"\\u00e9\\U0001F600\"\n\xef\xbb\xbf");
    assert_ok(&l);
    assert_string_equal(tn_object_get(l.doc.root, "greek")->u.s.ptr, "αβγ");
    assert_string_equal(tn_object_get(l.doc.root, "emoji")->u.s.ptr, "😀 ok");
    assert_string_equal(tn_object_get(l.doc.root, "escaped")->u.s.ptr, "é😀");
    unload(&l);

    /* A UTF-8 byte order mark at the start is skipped. */
    load(&l, "\xef\xbb\xbf" "a: 1\n");
    assert_ok(&l);
    tn_member *a = tn_object_find(l.doc.root, "a");
    assert_non_null(a);
    assert_int_equal(a->key_pos.line, 1);
    unload(&l);
}

/* ---- empty input */

static void test_empty_documents(void **state)
{
    (void)state;
    static const char *const empties[] = {
        "", "\n\n", "# just a comment\n", "---\n", "--- \n...\n", "%YAML 1.1\n---\n",
    };
    for (size_t i = 0; i < sizeof(empties) / sizeof(empties[0]); i++) {
        loaded l;
        load(&l, empties[i]);
        assert_ok(&l);
        assert_int_equal(l.doc.root->u.o.len, 0);
        unload(&l);
    }
    /* A null written out is not "nothing". */
    load_error("~\n", "t.yaml:1:1: top level must be a mapping");
}

/* ---- errors */

static void test_error_top_level(void **state)
{
    (void)state;
    load_error("- a\n- b\n", "t.yaml:1:1: top level must be a mapping");
    load_error("just text\n", "t.yaml:1:1: top level must be a mapping");
    load_error("--- 42\n", "t.yaml:1:5: top level must be a mapping");
    load_error("\n\n  [1, 2]\n", "t.yaml:3:3: top level must be a mapping");
}

static void test_error_duplicate_key(void **state)
{
    (void)state;
    loaded l;
    load(&l, "a: 1\nb:\n  x: 1\n  y: 2\n  x: 3\na: [4]\nc: 5\n");
    /* Each duplicate is reported; loading goes on and keeps the first. */
    assert_errors(&l,
                  "t.yaml:5:3: duplicate key 'x' (first defined at 3:3)\n"
                  "t.yaml:6:1: duplicate key 'a' (first defined at 1:1)");
    assert_int_equal(tn_object_get(l.doc.root, "a")->u.i, 1);
    assert_int_equal(tn_object_get(tn_object_get(l.doc.root, "b"), "x")->u.i, 1);
    assert_int_equal(tn_object_get(l.doc.root, "c")->u.i, 5);
    unload(&l);

    /* Quoted and plain spellings of a key are the same key. */
    load_error("{\"k\": 1, k: 2}\n", "t.yaml:1:10: duplicate key 'k' (first defined at 1:2)");
}

static void test_many_keys(void **state)
{
    (void)state;
    /* Enough keys to exercise the key index's growth; the last is a dup. */
    size_t n = 5000, cap = n * 16 + 64, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(text + len, cap - len, "k%zu: %zu\n", i, i);
    len += (size_t)snprintf(text + len, cap - len, "k1234: dup\n");
    loaded l;
    loadn(&l, text, len);
    assert_errors(&l, "t.yaml:5001:1: duplicate key 'k1234' (first defined at 1235:1)");
    assert_int_equal(l.doc.root->u.o.len, n);
    assert_int_equal(tn_object_get(l.doc.root, "k4999")->u.i, 4999);
    unload(&l);
    free(text);
}

static void test_error_multiple_documents(void **state)
{
    (void)state;
    loaded l;
    load(&l, "a: 1\n---\nb: 2\n");
    assert_errors(&l, "t.yaml:2:1: only one YAML document is allowed");
    /* What was read before the error is kept. */
    assert_int_equal(tn_object_get(l.doc.root, "a")->u.i, 1);
    unload(&l);
    load_error("---\na: 1\n...\n--- {}\n", "t.yaml:4:1: only one YAML document is allowed");
}

static void test_error_aliases(void **state)
{
    (void)state;
    load_error("a: *nope\n", "t.yaml:1:4: unknown alias 'nope'");
    load_error("a: &r [1, *r]\n", "t.yaml:1:11: alias 'r' refers to a node that contains it");
    load_error("a: &m {k: *m}\n", "t.yaml:1:11: alias 'm' refers to a node that contains it");
    load_error("a: &s [1]\n*s : 2\n", "t.yaml:2:1: mapping keys must be scalars");
}

static void test_error_non_scalar_key(void **state)
{
    (void)state;
    load_error("? [a, b]\n: 1\n", "t.yaml:1:3: mapping keys must be scalars");
    load_error("x: {{a: 1}: 2}\n", "t.yaml:1:5: mapping keys must be scalars");
    load_error("a: \"x\\0y\"\n\"b\\0c\": 1\n", "t.yaml:2:1: mapping key contains a NUL character");
}

static void test_error_number_range(void **state)
{
    (void)state;
    load_error("a: 9223372036854775808\n",
               "t.yaml:1:4: integer '9223372036854775808' out of range");
    load_error("a: -9223372036854775809\n",
               "t.yaml:1:4: integer '-9223372036854775809' out of range");
    load_error("a: 0x8000000000000000\n",
               "t.yaml:1:4: integer '0x8000000000000000' out of range");
    load_error("a:\n  - 1e999\n", "t.yaml:2:5: number '1e999' out of range");
    /* Quoted, they are just strings. */
    resolves_string("\"1e999\"", "1e999");
    /* Underflow is not an error: the nearest double is fine. */
    resolves_float("1e-400", 0.0);
}

static void test_error_syntax(void **state)
{
    (void)state;
    load_error("a: [1, 2\nb: 3\n",
               "t.yaml:2:2: did not find expected ',' or ']' (while parsing a flow sequence at 1:4)");
    load_error("a: b: c\n", "t.yaml:1:5: mapping values are not allowed in this context");
    load_error("a:\n\t- 1\n",
               "t.yaml:2:1: tab character where a token was expected (YAML indents with spaces)");
    load_error("a:\n  b: 1\n  c: @x\n",
               "t.yaml:3:6: found character that cannot start any token (while scanning for the next token at 3:6)");
    load_error("a: \"open\n",
               "t.yaml:2:1: found unexpected end of stream (while scanning a quoted scalar at 1:4)");
    load_error("a: 1\n b: 2\n", "t.yaml:2:3: mapping values are not allowed in this context");
}

static void test_error_nul_byte(void **state)
{
    (void)state;
    static const char text[] = "a: 1\nbb: x\0y\n";
    loaded l;
    loadn(&l, text, sizeof(text) - 1);
    assert_errors(&l, "t.yaml:2:6: NUL byte in input");
    unload(&l);
    /* At the very start too. */
    loadn(&l, "\0", 1);
    assert_errors(&l, "t.yaml:1:1: NUL byte in input");
    unload(&l);
}

static void test_error_encoding(void **state)
{
    (void)state;
    load_error("a: ok\nb: \xff\n", "t.yaml:2:4: invalid leading UTF-8 octet (0xFF)");
    load_error("a: \x01\n", "t.yaml:1:4: control characters are not allowed (0x1)");
    static const char trail_nul[] = "a: \xc3\0\n";
    loaded l;
    loadn(&l, trail_nul, sizeof(trail_nul) - 1);
    assert_errors(&l, "t.yaml:1:4: invalid trailing UTF-8 octet (0x0)");
    unload(&l);
    load_error("a: \xed\xa0\x80\n", "t.yaml:1:4: invalid Unicode character (0xD800)");
    load_error("a: \xe2\x82\n", "t.yaml:1:4: invalid trailing UTF-8 octet (0xA)");
    load_error("a: \xe2\x82", "t.yaml:1:4: incomplete UTF-8 octet sequence");
    /* No input at all is an empty document. */
    loadn(&l, NULL, 0);
    assert_ok(&l);
    unload(&l);
}

static void test_error_counted_only_for_this_load(void **state)
{
    (void)state;
    tn_doc doc = { 0 };
    tn_diag diag = { 0 };
    tn_pos p = { "other", 1, 1 };
    tn_diag_error(&diag, p, "earlier problem");
    /* Errors from before the call do not make this load fail... */
    assert_int_equal(tn_yaml_load_string(&doc, "t.yaml", "a: 1\n", 5, &diag), 0);
    /* ...warnings do not either... */
    tn_diag_warn(&diag, p, "a warning");
    assert_int_equal(tn_yaml_load_string(&doc, "t.yaml", "a: 2\n", 5, &diag), 0);
    assert_int_equal(tn_object_get(doc.root, "a")->u.i, 2); /* the root was replaced */
    /* ...and an error of its own does. */
    assert_int_equal(tn_yaml_load_string(&doc, "t.yaml", "- 1\n", 4, &diag), -1);
    assert_int_equal(diag.total, 3);
    tn_doc_free(&doc);
    tn_diag_free(&diag);
}

/* ---- limits */

static char *nested(const char *prefix, int levels, const char *inner)
{
    size_t len = strlen(prefix) + 2 * (size_t)levels + strlen(inner) + 2;
    char *s = malloc(len), *p = s;
    assert_non_null(s);
    p += sprintf(p, "%s", prefix);
    for (int i = 0; i < levels; i++)
        *p++ = '[';
    p += sprintf(p, "%s", inner);
    for (int i = 0; i < levels; i++)
        *p++ = ']';
    *p++ = '\n';
    *p = '\0';
    return s;
}

static void test_depth_limit(void **state)
{
    (void)state;
    loaded l;
    /* Counted as the TuskLang parser counts: the top-level mapping is level
     * 0, so 64 levels inside it fit... */
    char *ok = nested("a: ", 64, "x");
    load(&l, ok);
    assert_ok(&l);
    unload(&l);
    free(ok);

    /* ...the 65th does not, and is reported where it opens. */
    char *deep = nested("a: ", 65, "x");
    load_error(deep, "t.yaml:1:68: nesting deeper than 64 levels");
    free(deep);

    /* Far deeper input is stopped at the same point, without recursion. */
    char *huge = nested("a: ", 100000, "");
    load_error(huge, "t.yaml:1:68: nesting deeper than 64 levels");
    free(huge);

    /* Like a TuskLang [section], a mapping under a top-level key is not a
     * level either, so a dump of any TuskLang tree loads back. */
    char *sect = nested("s:\n  k: ", 64, "x");
    load(&l, sect);
    assert_ok(&l);
    unload(&l);
    free(sect);
    sect = nested("s:\n  k: ", 65, "x");
    load_error(sect, "t.yaml:2:70: nesting deeper than 64 levels");
    free(sect);
    /* But a list at the top is level 1. */
    char *list = nested("s:\n  - ", 64, "x");
    load_error(list, "t.yaml:2:68: nesting deeper than 64 levels");
    free(list);

    /* Block mappings: k0's mapping is a section, k1's is level 1... */
    size_t cap = 70 * 70 * 2 + 100, len = 0;
    char *blk = malloc(cap);
    assert_non_null(blk);
    for (int i = 0; i <= 65; i++)
        len += (size_t)snprintf(blk + len, cap - len, "%*sk%d:\n", i, "", i);
    load(&l, blk);
    assert_ok(&l);
    unload(&l);
    snprintf(blk + len, cap - len, "%*sk66: 1\n", 66, "");
    load_error(blk, "t.yaml:67:67: nesting deeper than 64 levels");
    free(blk);
}

static void test_alias_depth_limit(void **state)
{
    (void)state;
    /* x is 10 levels high; used 55 levels down it reaches exactly 64. */
    char *anchored = nested("", 10, "1");
    char *use_ok = nested("", 54, "*x");
    char *use_deep = nested("", 55, "*x");
    char text[1024];

    snprintf(text, sizeof(text), "a: &x %sb: %s", anchored, use_ok);
    loaded l;
    load(&l, text);
    assert_ok(&l);
    unload(&l);

    snprintf(text, sizeof(text), "a: &x %sb: %s", anchored, use_deep);
    load_error(text, "t.yaml:2:59: nesting deeper than 64 levels");

    /* A section 64 levels deep may be copied to another section, but not
     * one level further down. */
    char *sect = nested("s: &s\n  k: ", 64, "x");
    snprintf(text, sizeof(text), "%st: *s\n", sect);
    load(&l, text);
    assert_ok(&l);
    unload(&l);
    snprintf(text, sizeof(text), "%st: [*s]\n", sect);
    load_error(text, "t.yaml:3:5: nesting deeper than 64 levels");
    free(sect);
    free(anchored);
    free(use_ok);
    free(use_deep);
}

static void test_billion_laughs(void **state)
{
    (void)state;
    static const char laughs[] =
        "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
        "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
        "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
        "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
        "i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]\n";
    /* e holds 66,430 nodes and the aliases up to e copied 74,718; the first
     * copy of e would pass the 100,000 budget, long before 9^9 strings. */
    load_error(laughs, "t.yaml:6:8: alias expansion too large");
}

static void test_alias_bytes_limit(void **state)
{
    (void)state;
    /* Few nodes but large strings: each level is 8 times the one before. */
    size_t cap = 8192, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    len += (size_t)snprintf(text + len, cap - len, "s: &s ");
    for (int i = 0; i < 4096; i++)
        text[len++] = 'x';
    len += (size_t)snprintf(text + len, cap - len, "\n");
    const char *prev = "s";
    static const char *const names[] = { "l1", "l2", "l3", "l4", "l5" };
    for (int i = 0; i < 5; i++) {
        len += (size_t)snprintf(text + len, cap - len, "%s: &%s [", names[i], names[i]);
        for (int j = 0; j < 8; j++)
            len += (size_t)snprintf(text + len, cap - len, "%s*%s", j ? ", " : "", prev);
        len += (size_t)snprintf(text + len, cap - len, "]\n");
        prev = names[i];
    }
    /* l3 is 8^3 copies of 4 KiB = 2 MiB, and the aliases up to there copied
     * 2.28 MiB; l4's seventh copy of l3 passes 16 MiB, at 585 nodes each. */
    load_error(text, "t.yaml:5:40: alias expansion too large");
    free(text);
}

/* ---- files */

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/test_yaml_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const char text[] = "a: 1\nb: [x]\n";
    assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
    close(fd);

    tn_doc doc = { 0 };
    tn_diag diag = { 0 };
    assert_int_equal(tn_yaml_load_file(&doc, path, &diag), 0);
    assert_int_equal(tn_object_get(doc.root, "a")->u.i, 1);
    assert_string_equal(doc.root->pos.file, path);
    tn_doc_free(&doc);
    tn_diag_free(&diag);

    /* Empty file. */
    assert_int_equal(truncate(path, 0), 0);
    assert_int_equal(tn_yaml_load_file(&doc, path, &diag), 0);
    assert_int_equal(doc.root->type, TN_V_OBJECT);
    assert_int_equal(doc.root->u.o.len, 0);
    tn_doc_free(&doc);
    tn_diag_free(&diag);
    unlink(path);

    assert_int_equal(tn_yaml_load_file(&doc, "/nonexistent/dir/x.yaml", &diag), -1);
    char *msg = tn_diag_join(&diag);
    assert_string_equal(msg, "/nonexistent/dir/x.yaml:1:1: cannot open /nonexistent/dir/x.yaml: "
                             "No such file or directory");
    free(msg);
    assert_non_null(doc.root);
    assert_int_equal(doc.root->type, TN_V_OBJECT);
    tn_doc_free(&doc);
    tn_diag_free(&diag);

    assert_int_equal(tn_yaml_load_file(&doc, "/tmp", &diag), -1);
    msg = tn_diag_join(&diag);
    assert_string_equal(msg, "/tmp:1:1: cannot read /tmp: Is a directory");
    free(msg);
    tn_doc_free(&doc);
    tn_diag_free(&diag);
}

/* ---- emitting */

static char *emit(const tn_value *v)
{
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(tn_yaml_emit_string(v, &out, &len), 0);
    assert_non_null(out);
    assert_int_equal(strlen(out), len);
    return out;
}

/* load(emit(v)) must equal v, and emitting that again gives the same text. */
static void assert_round_trip(const tn_value *v)
{
    char *text = emit(v);
    loaded l;
    loadn(&l, text, strlen(text));
    char *errs = tn_diag_join(&l.diag);
    if (errs)
        fail_msg("reloading failed: %s\n--- emitted:\n%s", errs, text);
    if (!tn_value_equal(v, l.doc.root))
        fail_msg("round trip changed the tree; emitted:\n%s", text);
    char *again = emit(l.doc.root);
    assert_string_equal(again, text);
    free(again);
    free(text);
    unload(&l);
}

static const tn_pos P = { "built", 1, 1 };

static void put_str(tn_value *obj, const char *key, const char *s, size_t len)
{
    assert_int_equal(tn_object_add(obj, strdup(key), P, tn_value_string(s, len, P)), 0);
}

static void put(tn_value *obj, const char *key, tn_value *v)
{
    assert_non_null(v);
    assert_int_equal(tn_object_add(obj, strdup(key), P, v), 0);
}

static tn_value *flt(double f)
{
    tn_value *v = tn_value_new(TN_V_FLOAT, P);
    v->u.f = f;
    return v;
}

static void test_emit_exact_text(void **state)
{
    (void)state;
    tn_value *root = tn_value_new(TN_V_OBJECT, P);
    put(root, "n", tn_value_int(-5, P));
    put(root, "f", flt(1.0));
    put(root, "g", flt(0.1));
    put(root, "big", flt(1e20));
    put(root, "inf", flt(-INFINITY));
    put(root, "b", tn_value_bool(false, P));
    put(root, "z", tn_value_new(TN_V_NULL, P));
    put_str(root, "plain", "hello world", 11);
    put_str(root, "num", "10", 2);
    put_str(root, "word", "true", 4);
    put_str(root, "yes", "yes", 3);
    put_str(root, "nul", "~", 1);
    put_str(root, "empty", "", 0);
    put_str(root, "unit", "10s", 3);
    put_str(root, "colon", "a: b", 4);
    put_str(root, "nl", "x\ny", 3);
    put_str(root, "uni", "é", strlen("é"));
    put(root, "eo", tn_value_new(TN_V_OBJECT, P));
    tn_value *arr = tn_value_new(TN_V_ARRAY, P);
    assert_int_equal(tn_array_push(arr, tn_value_int(1, P)), 0);
    assert_int_equal(tn_array_push(arr, tn_value_new(TN_V_ARRAY, P)), 0);
    put(root, "arr", arr);
    put(root, "10", tn_value_int(10, P));

    char *text = emit(root);
    assert_string_equal(text,
                        "n: -5\n"
                        "f: 1.0\n"
                        "g: 0.1\n"
                        "big: 1e+20\n"
                        "inf: -.inf\n"
                        "b: false\n"
                        "z: null\n"
                        "plain: hello world\n"
                        "num: \"10\"\n"
                        "word: \"true\"\n"
                        "yes: \"yes\"\n"
                        "nul: \"~\"\n"
                        "empty: \"\"\n"
                        "unit: 10s\n"
                        "colon: 'a: b'\n"
                        "nl: \"x\\ny\"\n"
                        "uni: é\n"
                        "eo: {}\n"
                        "arr:\n"
                        "- 1\n"
                        "- []\n"
                        "10: 10\n");
    free(text);
    assert_round_trip(root);
    tn_value_free(root);

    /* Long strings stay on one line (no folding at 80 columns). */
    char longs[400];
    for (size_t i = 0; i < sizeof(longs) - 1; i++)
        longs[i] = i % 8 == 7 ? ' ' : 'w';
    longs[sizeof(longs) - 2] = 'w';
    longs[sizeof(longs) - 1] = '\0';
    tn_value *lo = tn_value_new(TN_V_OBJECT, P);
    put_str(lo, "long", longs, strlen(longs));
    text = emit(lo);
    char want[512];
    snprintf(want, sizeof(want), "long: %s\n", longs);
    assert_string_equal(text, want);
    free(text);
    tn_value_free(lo);

    /* Empty top level. */
    tn_value *empty = tn_value_new(TN_V_OBJECT, P);
    text = emit(empty);
    assert_string_equal(text, "{}\n");
    free(text);
    assert_round_trip(empty);
    tn_value_free(empty);
}

static void test_round_trip_tree(void **state)
{
    (void)state;
    static const char *const strings[] = {
        "42", "-7", "+3", "007", "1.5", "1e3", ".5", "1.", "0x1F", "0o17", ".inf", "-.inf",
        ".nan", "true", "False", "TRUE", "null", "Null", "~", "yes", "no", "on", "off", "y",
        "n", "99999999999999999999", "1e999", "10s", "64KB", "1_000", "127.0.0.1:80",
        "a: b", "a:b", "x #y", "#z", "x#y", "she said \"hi\" and 'bye'", "'", "\"",
        "line1\nline2\n", "\n", "trailing\n\n", "a\tb", "\t", " leading", "trailing ",
        " ", "- x", "-", "--", "---", "...", "--- x", "*x", "&x", "!x", "!!str", "%x",
        "@x", "`x", "{x}", "[x]", "{", "]", "|", ">", "? x", "?", ":", ": x", "a, b",
        "C:\\path\\to", "\\", "héllo wörld", "日本語", "😀", "mixé 😀 text",
        "a\r\nb", "a\rb", "a\xc2\x85" "b", "a\xe2\x80\xa8" "b", "\xef\xbb\xbf" "bom",
        "x\xc2\xa0", "\x7f", "=", "<<", "GET /health", "/ws",
    };
    tn_value *root = tn_value_new(TN_V_OBJECT, P);

    tn_value *strs = tn_value_new(TN_V_ARRAY, P);
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++)
        assert_int_equal(tn_array_push(strs, tn_value_string(strings[i], strlen(strings[i]), P)), 0);
    assert_int_equal(tn_array_push(strs, tn_value_string("", 0, P)), 0);
    assert_int_equal(tn_array_push(strs, tn_value_string("a\0b", 3, P)), 0);
    assert_int_equal(tn_array_push(strs, tn_value_string("\0", 1, P)), 0);
    char long_str[1000];
    for (size_t i = 0; i < sizeof(long_str) - 1; i++)
        long_str[i] = (char)('a' + i % 26) ;
    for (size_t i = 7; i < sizeof(long_str) - 1; i += 10)
        long_str[i] = ' ';
    long_str[sizeof(long_str) - 1] = '\0';
    assert_int_equal(tn_array_push(strs, tn_value_string(long_str, strlen(long_str), P)), 0);
    put(root, "strings", strs);

    /* The same strings as keys (keys are never resolved, but must be
     * written so that they read back as the same text). */
    tn_value *keys = tn_value_new(TN_V_OBJECT, P);
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++)
        put(keys, strings[i], tn_value_int((int64_t)i, P));
    put(keys, "", tn_value_bool(true, P));
    put(keys, long_str, tn_value_new(TN_V_NULL, P));
    put(root, "keys", keys);

    tn_value *nums = tn_value_new(TN_V_ARRAY, P);
    static const int64_t ints[] = { 0, 1, -1, 42, INT64_MAX, INT64_MIN, 1000000 };
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++)
        assert_int_equal(tn_array_push(nums, tn_value_int(ints[i], P)), 0);
    static const double floats[] = {
        0.0, -0.0, 1.0, -1.0, 0.1, 1.5, -2e3, 1e20, 1e300, -1e-300, 5e-324,
        2.2250738585072014e-308, 1.7976931348623157e308, 123456789.123, 1.0 / 3.0,
        9007199254740993.0, 1e16, 100.0, INFINITY, -INFINITY,
    };
    for (size_t i = 0; i < sizeof(floats) / sizeof(floats[0]); i++)
        assert_int_equal(tn_array_push(nums, flt(floats[i])), 0);
    assert_int_equal(tn_array_push(nums, tn_value_bool(true, P)), 0);
    assert_int_equal(tn_array_push(nums, tn_value_bool(false, P)), 0);
    assert_int_equal(tn_array_push(nums, tn_value_new(TN_V_NULL, P)), 0);
    put(root, "scalars", nums);

    tn_value *nest = tn_value_new(TN_V_OBJECT, P);
    put(nest, "empty_obj", tn_value_new(TN_V_OBJECT, P));
    put(nest, "empty_arr", tn_value_new(TN_V_ARRAY, P));
    tn_value *arrs = tn_value_new(TN_V_ARRAY, P);
    assert_int_equal(tn_array_push(arrs, tn_value_new(TN_V_ARRAY, P)), 0);
    assert_int_equal(tn_array_push(arrs, tn_value_new(TN_V_OBJECT, P)), 0);
    tn_value *inner = tn_value_new(TN_V_ARRAY, P);
    tn_value *innermost = tn_value_new(TN_V_ARRAY, P);
    assert_int_equal(tn_array_push(innermost, tn_value_string("deep", 4, P)), 0);
    assert_int_equal(tn_array_push(inner, innermost), 0);
    assert_int_equal(tn_array_push(inner, tn_value_new(TN_V_NULL, P)), 0);
    assert_int_equal(tn_array_push(arrs, inner), 0);
    tn_value *objs = tn_value_new(TN_V_OBJECT, P);
    put(objs, "a", tn_value_new(TN_V_OBJECT, P));
    tn_value *b = tn_value_new(TN_V_OBJECT, P);
    put(b, "x", tn_value_string("1", 1, P));
    put(b, "list", tn_value_new(TN_V_ARRAY, P));
    put(objs, "b", b);
    assert_int_equal(tn_array_push(arrs, objs), 0);
    put(nest, "arrays", arrs);
    put(root, "nested", nest);

    /* A config-shaped block. */
    tn_value *web = tn_value_new(TN_V_OBJECT, P);
    put_str(web, "protocol", "http", 4);
    put_str(web, "listen", "127.0.0.1:8080", 14);
    tn_value *routes = tn_value_new(TN_V_OBJECT, P);
    put_str(routes, "GET /health", "health", 6);
    put_str(routes, "GET /*", "site", 4);
    put(web, "routes", routes);
    put(web, "max_connections", tn_value_int(1000, P));
    put(root, "web", web);

    assert_round_trip(root);
    tn_value_free(root);
}

static void test_round_trip_loaded(void **state)
{
    (void)state;
    /* Anything the loader accepts must come back equal through the emitter. */
    loaded l;
    load(&l,
         "daemon:\n"
         "  log_level: 'info'\n"
         "  max_connections: 10000\n"
         "  shutdown_timeout: 10s\n"
         "vals: [1, -2, 1.5, .inf, true, ~, '1', \"\", 'null', 0x10, 0o7, 1e3, '#c']\n"
         "text: |\n"
         "  line one\n"
         "    indented: yes\n"
         "  - not a list\n"
         "folded: >-\n"
         "  a\n"
         "  b\n"
         "anch: &a {x: [1, {y: z}]}\n"
         "copy: *a\n"
         "\"quoted key\": 1\n"
         "? complex plain key\n"
         ": v\n");
    assert_ok(&l);
    assert_round_trip(l.doc.root);
    unload(&l);
}

static void test_emit_deep_and_file(void **state)
{
    (void)state;
    /* A maximally deep loaded tree emits and reloads. */
    char *deep = nested("a: ", 64, "x");
    loaded l;
    load(&l, deep);
    assert_ok(&l);
    assert_round_trip(l.doc.root);

    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(tn_yaml_emit_file(l.doc.root, f), 0);
    long size = ftell(f);
    char *text = emit(l.doc.root);
    assert_int_equal(size, (long)strlen(text));
    rewind(f);
    char *buf = malloc((size_t)size + 1);
    assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
    buf[size] = '\0';
    assert_string_equal(buf, text);
    free(buf);
    free(text);
    fclose(f);
    unload(&l);
    free(deep);
}

static void test_emit_failures(void **state)
{
    (void)state;
    /* YAML text is UTF-8: a string that is not cannot be written. */
    tn_value *root = tn_value_new(TN_V_OBJECT, P);
    put_str(root, "bad", "\xff\xfe", 2);
    char *out = (char *)1;
    size_t len = 99;
    assert_int_equal(tn_yaml_emit_string(root, &out, &len), -1);
    assert_null(out);
    assert_int_equal(len, 0);
    tn_value_free(root);

    assert_int_equal(tn_yaml_emit_string(NULL, &out, &len), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_null),
        cmocka_unit_test(test_plain_bool),
        cmocka_unit_test(test_plain_int),
        cmocka_unit_test(test_plain_float),
        cmocka_unit_test(test_plain_other_strings),
        cmocka_unit_test(test_quoted_always_string),
        cmocka_unit_test(test_tags),
        cmocka_unit_test(test_keys_are_raw_text),
        cmocka_unit_test(test_nested),
        cmocka_unit_test(test_anchors_and_aliases),
        cmocka_unit_test(test_positions),
        cmocka_unit_test(test_positions_unicode_columns),
        cmocka_unit_test(test_crlf),
        cmocka_unit_test(test_unicode_strings),
        cmocka_unit_test(test_empty_documents),
        cmocka_unit_test(test_error_top_level),
        cmocka_unit_test(test_error_duplicate_key),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_error_multiple_documents),
        cmocka_unit_test(test_error_aliases),
        cmocka_unit_test(test_error_non_scalar_key),
        cmocka_unit_test(test_error_number_range),
        cmocka_unit_test(test_error_syntax),
        cmocka_unit_test(test_error_nul_byte),
        cmocka_unit_test(test_error_encoding),
        cmocka_unit_test(test_error_counted_only_for_this_load),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_alias_depth_limit),
        cmocka_unit_test(test_billion_laughs),
        cmocka_unit_test(test_alias_bytes_limit),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_emit_exact_text),
        cmocka_unit_test(test_round_trip_tree),
        cmocka_unit_test(test_round_trip_loaded),
        cmocka_unit_test(test_emit_deep_and_file),
        cmocka_unit_test(test_emit_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
