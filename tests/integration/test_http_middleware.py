# SPDX-License-Identifier: MIT
"""HTTP middleware with real sockets and curl: cors
(simple requests, preflight, credentials, exposed headers), gzip (q-values,
min_size, skip_types, Vary, output that `gzip -d` accepts), auth (bearer
tokens from @env and @file, basic users, 401 with WWW-Authenticate),
rate_limit (429 with Retry-After, per client address), access_log (combined
and JSON lines in a file), headers (set and add) -- and, for each, that a
listener or route without it behaves as if it did not exist."""
import gzip
import json
import os
import re
import subprocess
import time

import pytest

from daemon_util import daemon  # noqa: F401  (daemon is a fixture)
from http_util import (
    HttpConn,
    assert_small_error,
    assert_valid,
    curl_response,
    http_get,
)

BIG = "The quick brown fox jumps over the lazy dog. " * 90  # 4050 bytes, compressible
MID = "x" * 800
SMALL = "s" * 100
BIG_JSON = '{"items": [' + ", ".join(f'{{"id": {i}, "name": "item number {i}"}}' for i in range(120)) + "]}"

TOKEN_ENV = "env-token-5f1d0c3a"
TOKEN_FILE = "file-token-9b2e77aa"
ALICE_PW = "s3cret pass:word"

CONFIG = """
[daemon]
control_socket: ""
shutdown_timeout: "2s"

[handlers]
hello { type: "static" reply: "hello" }
echo  { type: "echo" }
big   { type: "static" reply: "{BIG}" }
json  { type: "static" reply: '{BIG_JSON}' content_type: "application/json" }
png   { type: "static" reply: "{BIG}" content_type: "image/png" }
zip   { type: "static" reply: "{BIG}" content_type: "application/zip" }
small { type: "static" reply: "{SMALL}" }
mid   { type: "static" reply: "{MID}" }
hdr   { type: "static" reply: "h" headers: { "X-Static": "orig", "X-Extra": "handler" } }

[middleware]
strict  { type: "cors" origins: ["https://app.example", "https://other.example"] credentials: true
          expose_headers: ["X-Total", "X-Page"] methods: ["GET", "POST"]
          allow_headers: ["X-Api-Key", "Content-Type"] max_age: "60s" }
credany { type: "cors" credentials: true }
gz1k    { type: "gzip" min_size: "1KB" }
bearer  { type: "auth" tokens: [@env("TN_TEST_TOKEN"), @file("{TOKFILE}")] }
basic   { type: "auth" users: { alice: @env("TN_TEST_PW"), bob: "builder" } realm: "test realm" }
rl      { type: "rate_limit" rate: "1/s" burst: 3 }
alog    { type: "access_log" file: "{ALOG}" format: "combined" }
jlog    { type: "access_log" file: "{JLOG}" format: "json" }
hdrs    { type: "headers" set: { "X-Frame-Options": "DENY", "X-Static": "overridden" }
          add: { "X-Extra": "added" } }

[listeners]
cors {
    protocol: "http"
    listen: "127.0.0.1:PORT_CORS"
    middleware: ["cors"]
    routes { "GET /api": "hello"  "POST /api": "echo" }
}
strict {
    protocol: "http"
    listen: "127.0.0.1:PORT_STRICT"
    middleware: ["strict"]
    routes { "GET /api": "hello"  "POST /api": "echo" }
}
credany {
    protocol: "http"
    listen: "127.0.0.1:PORT_CREDANY"
    middleware: ["credany"]
    routes { "GET /api": "hello" }
}
plain {
    protocol: "http"
    listen: "127.0.0.1:PORT_PLAIN"
    routes { "GET /api": "hello"  "GET /big": "big"  "GET /hdr": "hdr"  "/echo": "echo" }
}
gz {
    protocol: "http"
    listen: "127.0.0.1:PORT_GZ"
    middleware: ["gzip"]
    routes {
        "GET /big": "big"  "GET /json": "json"  "GET /png": "png"  "GET /zip": "zip"
        "GET /small": "small"  "/echo": "echo"  "GET /hello": "hello"
    }
}
gz1k {
    protocol: "http"
    listen: "127.0.0.1:PORT_GZ1K"
    middleware: ["gz1k"]
    routes { "GET /mid": "mid"  "GET /big": "big" }
}
auth {
    protocol: "http"
    listen: "127.0.0.1:PORT_AUTH"
    routes {
        "GET /open": "hello"
        "GET /bearer": { handler: "hello"  middleware: ["bearer"] }
        "GET /basic": { handler: "hello"  middleware: ["basic"] }
    }
}
rl {
    protocol: "http"
    listen: "127.0.0.1:PORT_RL"
    routes {
        "GET /limited": { handler: "hello"  middleware: ["rl"] }
        "GET /free": "hello"
    }
}
log {
    protocol: "http"
    listen: "127.0.0.1:PORT_LOG"
    middleware: ["alog", "jlog"]
    routes { "GET /hello": "hello"  "/echo": "echo" }
}
hdrs {
    protocol: "http"
    listen: "127.0.0.1:PORT_HDRS"
    routes { "GET /h": { handler: "hdr"  middleware: ["hdrs"] }  "GET /plain": "hdr" }
}
hdrsall {
    protocol: "http"
    listen: "127.0.0.1:PORT_HDRSALL"
    middleware: ["hdrs"]
    routes { "GET /h": "hdr" }
}
"""


@pytest.fixture
def d(daemon, tmp_path):
    tok = tmp_path / "token"
    tok.write_text(TOKEN_FILE)
    cfg = (
        CONFIG.replace("{BIG_JSON}", BIG_JSON)
        .replace("{BIG}", BIG)
        .replace("{MID}", MID)
        .replace("{SMALL}", SMALL)
        .replace("{TOKFILE}", str(tok))
        .replace("{ALOG}", str(tmp_path / "access.log"))
        .replace("{JLOG}", str(tmp_path / "access.json"))
    )
    env = dict(os.environ, TN_TEST_TOKEN=TOKEN_ENV, TN_TEST_PW=ALICE_PW)
    dm = daemon(cfg, env=env)
    dm.alog = tmp_path / "access.log"
    dm.jlog = tmp_path / "access.json"
    return dm


def url(d, port, path):
    return f"http://127.0.0.1:{d.ports[port]}{path}"


# ---- cors ------------------------------------------------------------------------------


def test_cors_simple_request_any_origin(d):
    r = assert_valid(http_get(d.ports["CORS"], "/api", headers={"Origin": "https://site.example"}), 200)
    assert r.body == b"hello"
    assert r.header("Access-Control-Allow-Origin") == "*", r
    assert not r.has("Access-Control-Allow-Credentials"), r
    r = assert_valid(http_get(d.ports["CORS"], "/api", method="POST", body=b"b",
                              headers={"Origin": "https://site.example"}), 200)
    assert r.header("Access-Control-Allow-Origin") == "*" and r.body == b"b", r


def test_cors_preflight_defaults(d):
    port = d.ports["CORS"]
    h = {
        "Origin": "https://site.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "X-Foo, Content-Type",
    }
    r = assert_valid(http_get(port, "/api", method="OPTIONS", headers=h), 204)
    assert r.body == b""
    assert r.header("Access-Control-Allow-Origin") == "*", r
    methods = r.tokens("Access-Control-Allow-Methods")
    for m in ("get", "head", "post", "put", "patch", "delete"):
        assert m in methods, r
    allowed = r.tokens("Access-Control-Allow-Headers")
    assert "x-foo" in allowed and "content-type" in allowed, f"empty allow_headers allows those asked for: {r!r}"
    assert r.header("Access-Control-Max-Age") == "600", r
    # curl
    c = curl_response(["-X", "OPTIONS", "-H", "Origin: https://x.example", "-H",
                       "Access-Control-Request-Method: GET", url(d, "CORS", "/api")])
    assert c.status == 204 and c.header("Access-Control-Allow-Origin") == "*", c


def test_cors_preflight_for_a_method_without_a_route(d):
    # the preflight is the cors middleware's answer: it does not need a
    # route for the method it asks about (the actual request may then 405)
    h = {"Origin": "https://site.example", "Access-Control-Request-Method": "PUT"}
    r = assert_valid(http_get(d.ports["CORS"], "/api", method="OPTIONS", headers=h), 204)
    assert r.header("Access-Control-Allow-Origin") == "*", r
    assert "put" in r.tokens("Access-Control-Allow-Methods"), r


def test_cors_origin_list_credentials_and_exposed_headers(d):
    port = d.ports["STRICT"]
    r = assert_valid(http_get(port, "/api", headers={"Origin": "https://app.example"}), 200)
    assert r.header("Access-Control-Allow-Origin") == "https://app.example", r
    assert r.header("Access-Control-Allow-Credentials") == "true", r
    assert "origin" in r.tokens("Vary"), f"a per-origin answer needs Vary: Origin: {r!r}"
    exposed = r.tokens("Access-Control-Expose-Headers")
    assert "x-total" in exposed and "x-page" in exposed, r
    r = http_get(port, "/api", headers={"Origin": "https://other.example"})
    assert r.header("Access-Control-Allow-Origin") == "https://other.example", r
    # an origin not in the list gets no CORS grant (the body is still served:
    # the browser is what blocks)
    r = http_get(port, "/api", headers={"Origin": "https://evil.example"})
    assert r.status == 200, r
    assert not r.has("Access-Control-Allow-Origin"), r
    assert not r.has("Access-Control-Allow-Credentials"), r
    # no Origin: not a CORS request
    r = http_get(port, "/api")
    assert r.status == 200 and not r.has("Access-Control-Allow-Origin"), r


def test_cors_preflight_with_configured_lists(d):
    port = d.ports["STRICT"]
    h = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "X-Api-Key",
    }
    r = assert_valid(http_get(port, "/api", method="OPTIONS", headers=h), 204)
    assert r.header("Access-Control-Allow-Origin") == "https://app.example", r
    assert r.header("Access-Control-Allow-Credentials") == "true", r
    assert set(r.tokens("Access-Control-Allow-Methods")) == {"get", "post"}, r
    assert set(r.tokens("Access-Control-Allow-Headers")) == {"x-api-key", "content-type"}, r
    assert r.header("Access-Control-Max-Age") == "60", r
    # a method outside the list is not granted
    # a method outside the list is not granted: the answer names only the list
    h["Access-Control-Request-Method"] = "DELETE"
    r = assert_valid(http_get(port, "/api", method="OPTIONS", headers=h), 204)
    assert r.header("Access-Control-Allow-Methods") == "GET, POST", r
    # an origin outside the list is not granted
    h["Access-Control-Request-Method"] = "POST"
    h["Origin"] = "https://evil.example"
    r = http_get(port, "/api", method="OPTIONS", headers=h)
    assert not r.has("Access-Control-Allow-Origin"), r
    assert assert_small_error(r, 403).body == b"Forbidden\n", r


def test_cors_credentials_never_with_wildcard(d):
    r = http_get(d.ports["CREDANY"], "/api", headers={"Origin": "https://site.example"})
    assert r.status == 200
    assert r.header("Access-Control-Allow-Origin") == "https://site.example", (
        f"with credentials the origin must be echoed, never '*': {r!r}"
    )
    assert r.header("Access-Control-Allow-Credentials") == "true", r
    assert "origin" in r.tokens("Vary"), r


def test_no_cors_without_the_middleware(d):
    port = d.ports["PLAIN"]
    r = http_get(port, "/api", headers={"Origin": "https://site.example"})
    assert r.status == 200
    assert not [k for k, _ in r.headers if k.lower().startswith("access-control-")], r
    r = http_get(port, "/api", method="OPTIONS",
                 headers={"Origin": "https://site.example", "Access-Control-Request-Method": "GET"})
    assert r.status == 405, r
    assert not r.has("Access-Control-Allow-Origin"), r


# ---- gzip ------------------------------------------------------------------------------


def gunzip_cli(data):
    p = subprocess.run(["gzip", "-dc"], input=data, capture_output=True, timeout=10)
    assert p.returncode == 0, f"gzip -d rejected the body: {p.stderr.decode(errors='replace')}"
    return p.stdout


def test_gzip_compresses_and_gzip_d_accepts_it(d):
    port = d.ports["GZ"]
    with HttpConn(port) as c:
        for path, original in (("/big", BIG.encode()), ("/json", BIG_JSON.encode())):
            r = assert_valid(c.exchange("GET", path, headers={"Accept-Encoding": "gzip"}), 200)
            assert r.header("Content-Encoding") == "gzip", r
            assert "accept-encoding" in r.tokens("Vary"), r
            # the compressed size depends on the zlib build; the text is
            # repetitive, so any real compression is far under half of it
            assert len(r.body) < len(original) / 2, "not really compressed"
            assert r.framing == "length" and int(r.header("Content-Length")) == len(r.body), r
            assert gzip.decompress(r.body) == original
            assert gunzip_cli(r.body) == original
        # a large echoed body too; the connection stays usable
        payload = (b"0123456789abcdef" * 8192)[:100000]
        r = c.exchange("POST", "/echo", headers={"Accept-Encoding": "gzip"}, body=payload)
        assert r.header("Content-Encoding") == "gzip", r
        assert gunzip_cli(r.body) == payload
        assert c.exchange("GET", "/hello").body == b"hello"
    # curl --compressed decodes it
    cr = curl_response(["--compressed", url(d, "GZ", "/big")])
    assert cr.status == 200 and cr.header("Content-Encoding") == "gzip" and cr.body == BIG.encode(), cr


@pytest.mark.parametrize(
    "accept,compressed",
    [
        ("gzip", True),
        ("GZIP", True),
        ("gzip;q=1.0", True),
        ("deflate, gzip;q=0.5", True),
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("*;q=0", False),
        ("gzip;q=0, *", False),
        ("identity", False),
        ("deflate, br", False),
        ("", False),
        (None, False),
    ],
)
def test_gzip_accept_encoding_q_values(d, accept, compressed):
    headers = {} if accept is None else {"Accept-Encoding": accept}
    r = assert_valid(http_get(d.ports["GZ"], "/big", headers=headers), 200)
    if compressed:
        assert r.header("Content-Encoding") == "gzip", f"Accept-Encoding {accept!r}: {r!r}"
        assert gzip.decompress(r.body) == BIG.encode()
    else:
        assert not r.has("Content-Encoding"), f"Accept-Encoding {accept!r}: {r!r}"
        assert r.body == BIG.encode()
        # the uncompressed variant of a compressible response still varies
        assert "accept-encoding" in r.tokens("Vary"), f"Vary missing on the identity variant: {r!r}"


def test_gzip_min_size(d):
    r = http_get(d.ports["GZ"], "/small", headers={"Accept-Encoding": "gzip"})
    assert r.status == 200 and not r.has("Content-Encoding") and r.body == SMALL.encode(), r
    r = http_get(d.ports["GZ1K"], "/mid", headers={"Accept-Encoding": "gzip"})
    assert r.status == 200 and not r.has("Content-Encoding") and r.body == MID.encode(), r
    r = http_get(d.ports["GZ1K"], "/big", headers={"Accept-Encoding": "gzip"})
    assert r.header("Content-Encoding") == "gzip", r
    assert gzip.decompress(r.body) == BIG.encode()


def test_gzip_skips_compressed_types(d):
    for path, ctype in (("/png", "image/png"), ("/zip", "application/zip")):
        r = assert_valid(http_get(d.ports["GZ"], path, headers={"Accept-Encoding": "gzip"}), 200)
        assert r.header("Content-Type") == ctype
        assert not r.has("Content-Encoding"), r
        assert r.body == BIG.encode()


def test_no_gzip_without_the_middleware(d):
    r = assert_valid(http_get(d.ports["PLAIN"], "/big", headers={"Accept-Encoding": "gzip"}), 200)
    assert not r.has("Content-Encoding"), r
    assert r.body == BIG.encode()


# ---- auth ------------------------------------------------------------------------------


def test_auth_bearer_tokens_from_env_and_file(d):
    port = d.ports["AUTH"]
    assert http_get(port, "/open").status == 200
    r = assert_small_error(http_get(port, "/bearer"), 401)
    www = r.header("WWW-Authenticate", "")
    assert www.lower().startswith("bearer"), r
    assert 'realm="tusknetd"' in www, r
    for bad in ("Bearer wrong", f"Bearer {TOKEN_ENV}x", f"Bearer {TOKEN_ENV[:-1]}", f"Basic {TOKEN_ENV}",
                "Bearer", TOKEN_ENV):
        r = http_get(port, "/bearer", headers={"Authorization": bad})
        assert r.status == 401 and r.has("WWW-Authenticate"), f"{bad!r}: {r!r}"
    for good in (f"Bearer {TOKEN_ENV}", f"Bearer {TOKEN_FILE}", f"bearer {TOKEN_ENV}"):
        r = http_get(port, "/bearer", headers={"Authorization": good})
        assert r.status == 200 and r.body == b"hello", f"{good!r}: {r!r}"
    c = curl_response(["-H", f"Authorization: Bearer {TOKEN_FILE}", url(d, "AUTH", "/bearer")])
    assert c.status == 200


def test_auth_basic_users(d):
    import base64

    port = d.ports["AUTH"]
    r = assert_small_error(http_get(port, "/basic"), 401)
    www = r.header("WWW-Authenticate", "")
    assert www.lower().startswith("basic"), r
    assert 'realm="test realm"' in www, r

    def basic(user, pw):
        return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()

    assert http_get(port, "/basic", headers={"Authorization": basic("alice", ALICE_PW)}).status == 200
    assert http_get(port, "/basic", headers={"Authorization": basic("bob", "builder")}).status == 200
    for bad in (basic("alice", "wrong"), basic("bob", "builde"), basic("carol", "builder"), basic("", ""),
                "Basic !!!not-base64!!!", "Basic " + base64.b64encode(b"no-colon").decode(),
                f"Bearer {TOKEN_ENV}"):
        r = http_get(port, "/basic", headers={"Authorization": bad})
        assert r.status == 401, f"{bad!r}: {r!r}"
    c = curl_response(["-u", f"alice:{ALICE_PW}", url(d, "AUTH", "/basic")])
    assert c.status == 200 and c.body == b"hello", c
    c = curl_response(["-u", "alice:nope", url(d, "AUTH", "/basic")])
    assert c.status == 401, c


# ---- rate_limit ---------------------------------------------------------------------------


def test_rate_limit_429_with_retry_after(d):
    port = d.ports["RL"]
    with HttpConn(port) as c:
        for i in range(3):
            assert c.exchange("GET", "/limited").status == 200, f"request {i} within the burst"
        r = c.exchange("GET", "/limited")
        assert_small_error(r, 429)
        assert r.header("Retry-After") == "1", r  # rate 1/s: a token is back within a second
        # routes without the middleware are not limited
        for _ in range(5):
            assert c.exchange("GET", "/free").status == 200
    # other addresses have their own bucket
    assert http_get(port, "/limited", source="127.0.0.2").status == 200
    assert http_get(port, "/limited").status == 429
    time.sleep(1.1)
    assert http_get(port, "/limited").status == 200, "the bucket did not refill at 1/s"


# ---- access_log -----------------------------------------------------------------------------


def wait_lines(path, n, timeout=3.0):
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        try:
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        except OSError:
            lines = []
        if len(lines) >= n:
            break
        time.sleep(0.05)
    return lines


COMBINED = re.compile(
    r'^(?P<ip>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] '
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$'
)


def test_access_log_combined_and_json(d):
    port = d.ports["LOG"]
    hdrs = {"User-Agent": "tn-test/1.0", "Referer": "http://ref.example/page"}
    with HttpConn(port) as c:
        r1 = c.exchange("GET", "/hello?x=1", headers=hdrs)
        r2 = c.exchange("POST", "/echo", headers=hdrs, body=b"12345")
    assert (r1.status, r2.status) == (200, 200)
    # a listener without access_log writes nothing there
    http_get(d.ports["PLAIN"], "/api", headers={"User-Agent": "not-logged"})

    lines = wait_lines(d.alog, 2)
    assert len(lines) == 2, f"combined log: {lines}"
    ms = [COMBINED.match(ln) for ln in lines]
    assert all(ms), f"not combined format: {lines}"
    expect = [("GET /hello?x=1 HTTP/1.1", "200", r1), ("POST /echo HTTP/1.1", "200", r2)]
    for m, (req, status, resp) in zip(ms, expect):
        assert m["ip"] == "127.0.0.1", m.group(0)
        assert m["request"] == req and m["status"] == status, m.group(0)
        assert m["referer"] == "http://ref.example/page" and m["agent"] == "tn-test/1.0", m.group(0)
        assert m["bytes"] == str(len(resp.body)), m.group(0)  # the body's bytes
    assert "not-logged" not in d.alog.read_text()

    jl = wait_lines(d.jlog, 2)
    assert len(jl) == 2, f"json log: {jl}"
    for line, (path, query, method, resp) in zip(jl, [("/hello", "x=1", "GET", r1), ("/echo", "", "POST", r2)]):
        obj = json.loads(line)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", obj.pop("time")), line
        assert isinstance(obj.pop("request_time"), (int, float)), line
        assert obj == {"remote": "127.0.0.1", "method": method, "path": path, "query": query, "status": 200,
                       "bytes": len(resp.body), "user_agent": "tn-test/1.0", "referer": "http://ref.example/page"}, line


def test_access_log_records_404_and_405(d):
    # requests no route takes are logged by the listener's access_log too
    port = d.ports["LOG"]
    assert http_get(port, "/nope", headers={"User-Agent": "ua-404"}).status == 404
    assert http_get(port, "/hello", method="DELETE", headers={"User-Agent": "ua-405"}).status == 405
    lines = wait_lines(d.alog, 2)
    ms = [COMBINED.match(ln) for ln in lines]
    assert len(lines) == 2 and all(ms), f"combined log: {lines}"
    assert [(m["request"], m["status"], m["agent"]) for m in ms] == [
        ("GET /nope HTTP/1.1", "404", "ua-404"),
        ("DELETE /hello HTTP/1.1", "405", "ua-405"),
    ], lines
    jl = wait_lines(d.jlog, 2)
    assert len(jl) == 2, f"json log: {jl}"
    # and a malformed request's 400
    with HttpConn(port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        assert c.read_response().status == 400
    lines = wait_lines(d.alog, 3)
    assert len(lines) == 3 and '" 400 ' in lines[2], f"combined log: {lines}"


# ---- headers ---------------------------------------------------------------------------------


def test_headers_set_and_add(d):
    port = d.ports["HDRS"]
    r = assert_valid(http_get(port, "/h"), 200)
    assert r.header("X-Frame-Options") == "DENY", r
    assert r.headers_all("X-Static") == ["overridden"], f"set must replace: {r!r}"
    assert sorted(r.headers_all("X-Extra")) == ["added", "handler"], f"add must add: {r!r}"
    assert r.body == b"h"
    r = assert_valid(http_get(port, "/plain"), 200)
    assert not r.has("X-Frame-Options"), r
    assert r.headers_all("X-Static") == ["orig"] and r.headers_all("X-Extra") == ["handler"], r


def test_listener_headers_middleware_sees_error_answers(d):
    port = d.ports["HDRSALL"]
    r = assert_valid(http_get(port, "/h"), 200)
    assert r.header("X-Frame-Options") == "DENY", r
    r = assert_small_error(http_get(port, "/nope"), 404)
    assert r.header("X-Frame-Options") == "DENY", r
    r = assert_small_error(http_get(port, "/h", method="POST", body=b"x"), 405)
    assert r.header("X-Frame-Options") == "DENY", r
