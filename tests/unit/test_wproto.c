/* SPDX-License-Identifier: MIT */
/* test_wproto.c - the worker line protocol: call lines as a worker reads
 * them, and the strict reader of answer lines against good and hostile
 * input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "handlers/wproto.h"

static char *encode(const tn_msg_ctx *ctx, const char *payload, size_t len)
{
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    tn_wproto_encode(b, ctx, payload, len);
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    assert_non_null(s);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

static void test_encode(void **state)
{
    (void)state;
    tn_msg_ctx ctx = { .listener = "lines", .conn_id = 9, .protocol = TN_PROTO_TCP, .remote_addr = "127.0.0.1:5" };
    char *s = encode(&ctx, "say \"hi\"\n\xc3\xa9", 11);
    assert_string_equal(s, ",\"payload\":\"say \\\"hi\\\"\\n\xc3\xa9\",\"context\":{\"listener\":\"lines\","
                           "\"protocol\":\"tcp\",\"conn_id\":9,\"remote_addr\":\"127.0.0.1:5\"}}\n");
    free(s);
    ctx.protocol = TN_PROTO_WS;
    s = encode(&ctx, "\xff\x00\x01", 3);
    assert_string_equal(s, ",\"payload\":\"/wAB\",\"binary\":true,\"context\":{\"listener\":\"lines\","
                           "\"protocol\":\"websocket\",\"conn_id\":9,\"remote_addr\":\"127.0.0.1:5\"}}\n");
    free(s);
}

static void ok(const char *line, uint64_t id, bool is_error, const char *text, size_t len)
{
    tn_wreply r;
    char err[128] = "";
    int rc = tn_wproto_parse(line, strlen(line), &r, err, sizeof(err));
    if (rc != 0)
        fail_msg("%s: %s", line, err);
    assert_true(r.have_id);
    assert_int_equal(r.id, id);
    assert_int_equal(r.is_error, is_error);
    assert_int_equal(r.len, len);
    assert_memory_equal(r.text, text, len);
    tn_wproto_free(&r);
}

static void bad(const char *line, bool have_id, const char *why)
{
    tn_wreply r;
    char err[128] = "";
    int rc = tn_wproto_parse(line, strlen(line), &r, err, sizeof(err));
    if (rc != -1)
        fail_msg("accepted: %s", line);
    if (strcmp(err, why) != 0)
        fail_msg("%s: got \"%s\", want \"%s\"", line, err, why);
    assert_int_equal(r.have_id, have_id);
    assert_null(r.text);
    assert_int_equal(r.nheaders, 0);
}

static void test_parse_good(void **state)
{
    (void)state;
    ok("{\"id\":1,\"reply\":\"hi\"}", 1, false, "hi", 2);
    ok(" { \"reply\" : \"x\" , \"id\" : 9007199254740992 } ", 9007199254740992ULL, false, "x", 1);
    ok("{\"id\":3,\"error\":\"no\"}", 3, true, "no", 2);
    ok("{\"id\":3,\"reply\":\"\"}", 3, false, "", 0);
    ok("{\"id\":4,\"reply\":\"a\\u00e9\\ud83d\\ude00\\n\\\"\\\\\\/\\b\\f\\r\\t\"}", 4, false,
       "a\xc3\xa9\xf0\x9f\x98\x80\n\"\\/\b\f\r\t", 15);
    ok("{\"id\":5,\"reply\":\"\\u0000x\"}", 5, false, "\0x", 2);
    ok("{\"id\":6,\"reply\":\"/wAB\",\"binary\":true}", 6, false, "\xff\x00\x01", 3);
    ok("{\"binary\":true,\"id\":6,\"reply\":\"YQ==\"}", 6, false, "a", 1);
    ok("{\"id\":6,\"reply\":\"YWI=\",\"binary\":false}", 6, false, "YWI=", 4);
    /* other keys are checked and skipped */
    ok("{\"id\":7,\"trace\":{\"a\":[1,-2.5e3,true,null,\"s\",{}]},\"reply\":\"r\"}", 7, false, "r", 1);
}

static void test_parse_http(void **state)
{
    (void)state;
    const char *line = "{\"id\":2,\"reply\":\"{}\",\"status\":201,"
                       "\"headers\":{\"Content-Type\":\"application/json\",\"X-A\":\"1\\t2\",\"X-A\":\"\"}}";
    tn_wreply r;
    char err[128] = "";
    assert_int_equal(tn_wproto_parse(line, strlen(line), &r, err, sizeof(err)), 0);
    assert_int_equal(r.status, 201);
    assert_int_equal(r.nheaders, 3);
    assert_string_equal(r.hname[0], "Content-Type");
    assert_string_equal(r.hvalue[0], "application/json");
    assert_string_equal(r.hname[1], "X-A");
    assert_string_equal(r.hvalue[1], "1\t2");
    assert_string_equal(r.hvalue[2], "");
    tn_wproto_free(&r);
    ok("{\"id\":2,\"error\":\"gone\",\"status\":404,\"headers\":{}}", 2, true, "gone", 4);
    bad("{\"id\":2,\"reply\":\"\",\"status\":199}", true, "status is not an integer from 200 to 599");
    bad("{\"id\":2,\"reply\":\"\",\"status\":600}", true, "status is not an integer from 200 to 599");
    bad("{\"id\":2,\"reply\":\"\",\"status\":\"200\"}", true, "invalid JSON value");
    bad("{\"id\":2,\"reply\":\"\",\"status\":200,\"status\":200}", true, "duplicate key \"status\"");
    bad("{\"id\":2,\"reply\":\"\",\"headers\":[]}", true, "headers is not an object");
    bad("{\"id\":2,\"reply\":\"\",\"headers\":{\"X\":1}}", true, "header value is not a string");
    bad("{\"id\":2,\"reply\":\"\",\"headers\":{\"X\":\"a\\r\\nSet-Cookie: x\"}}", true,
        "control character in header value");
    bad("{\"id\":2,\"reply\":\"\",\"headers\":{\"Bad Name\":\"a\"}}", true, "bad header name");
    bad("{\"id\":2,\"reply\":\"\",\"headers\":{\"\":\"a\"}}", true, "bad header name");
    bad("{\"id\":2,\"reply\":\"\",\"headers\":{\"X\" \"a\"}}", true, "expected ':'");
    bad("{\"id\":2,\"reply\":\"\",\"headers\":{\"X\":\"a\"},\"headers\":{}}", true, "duplicate key \"headers\"");
    char many[4096];
    size_t n = (size_t)snprintf(many, sizeof(many), "{\"id\":2,\"reply\":\"\",\"headers\":{");
    for (int i = 0; i <= TN_WPROTO_HEADERS_MAX; i++)
        n += (size_t)snprintf(many + n, sizeof(many) - n, "%s\"H%d\":\"v\"", i ? "," : "", i);
    snprintf(many + n, sizeof(many) - n, "}}");
    bad(many, true, "too many headers");
}

static void test_parse_hostile(void **state)
{
    (void)state;
    bad("", false, "not a JSON object");
    bad("this is not json", false, "not a JSON object");
    bad("[1]", false, "not a JSON object");
    bad("{", false, "expected a string");
    bad("{}", false, "no \"id\"");
    bad("{\"reply\":\"x\"}", false, "no \"id\"");
    bad("{\"id\":1}", true, "neither \"reply\" nor \"error\"");
    bad("{\"id\":1,\"reply\":123}", true, "reply is not a string");
    bad("{\"id\":1,\"error\":null}", true, "error is not a string");
    bad("{\"id\":1,\"reply\":\"a\",\"error\":\"b\"}", true, "more than one of \"reply\" and \"error\"");
    bad("{\"id\":1,\"id\":2,\"reply\":\"a\"}", true, "duplicate key \"id\"");
    bad("{\"id\":-1,\"reply\":\"a\"}", false, "id is not an integer from 0 to 2^53");
    bad("{\"id\":1.5,\"reply\":\"a\"}", false, "id is not an integer from 0 to 2^53");
    bad("{\"id\":1e3,\"reply\":\"a\"}", false, "id is not an integer from 0 to 2^53");
    bad("{\"id\":9007199254740993,\"reply\":\"a\"}", false, "id is not an integer from 0 to 2^53");
    bad("{\"id\":99999999999999999999999,\"reply\":\"a\"}", false, "id is not an integer from 0 to 2^53");
    bad("{\"id\":01,\"reply\":\"a\"}", false, "leading zero in number");
    bad("{\"id\":\"1\",\"reply\":\"a\"}", false, "invalid JSON value");
    bad("{\"id\":1,\"reply\":\"a\"} x", true, "text after the object");
    bad("{\"id\":1,\"reply\":\"a\"}{}", true, "text after the object");
    bad("{\"id\":1,\"reply\":\"a\",}", true, "expected a string");
    bad("{\"id\":1 \"reply\":\"a\"}", true, "expected ',' or '}'");
    bad("{\"id\":1,\"reply\":\"a", true, "unterminated string");
    bad("{\"id\":1,\"reply\":\"a\tb\"}", true, "control character in string");
    bad("{\"id\":1,\"reply\":\"\xff\"}", true, "string is not UTF-8");
    bad("{\"id\":1,\"reply\":\"\xed\xa0\x80\"}", true, "string is not UTF-8");
    bad("{\"id\":1,\"reply\":\"\\x\"}", true, "bad escape in string");
    bad("{\"id\":1,\"reply\":\"\\u12\"}", true, "bad \\u escape");
    bad("{\"id\":1,\"reply\":\"\\ud800\"}", true, "lone surrogate in string");
    bad("{\"id\":1,\"reply\":\"\\udc00\"}", true, "lone surrogate in string");
    bad("{\"id\":1,\"reply\":\"\\ud800\\u0041\"}", true, "lone surrogate in string");
    bad("{\"id\":1,\"reply\":\"YQ=\",\"binary\":true}", true, "binary reply is not base64");
    bad("{\"id\":1,\"reply\":\"Y Q==\",\"binary\":true}", true, "binary reply is not base64");
    bad("{\"id\":1,\"reply\":\"=YQ=\",\"binary\":true}", true, "binary reply is not base64");
    bad("{\"id\":1,\"reply\":\"a\",\"binary\":1}", true, "binary is not true or false");
    bad("{\"id\":1,\"reply\":\"a\",\"x\":tru}", true, "invalid JSON value");
    bad("{\"id\":1,\"reply\":\"a\",\"x\":[1,]}", true, "invalid JSON value");
    bad("{\"id\":1,\"reply\":\"a\",\"x\":1.}", true, "invalid number");
    /* nesting is bounded */
    char deep[200];
    size_t n = (size_t)snprintf(deep, sizeof(deep), "{\"id\":1,\"x\":");
    for (int i = 0; i < 40; i++)
        deep[n++] = '[';
    deep[n] = '\0';
    bad(deep, true, "nested too deep");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_http),
        cmocka_unit_test(test_parse_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
