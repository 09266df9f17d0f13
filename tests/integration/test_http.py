# SPDX-License-Identifier: MIT
"""The HTTP/1.1 front end over real sockets and curl:
every status code the front end itself produces, malformed and smuggling
requests, keep-alive, pipelining, chunked uploads, Expect: 100-continue, HEAD,
HTTP/1.0, absolute-form targets, path normalization, route precedence, the
non-file handler types on routes, slow clients, connection caps, many
clients, and byte and error accounting in the control socket's stats.

Middleware is in test_http_middleware.py, the file handler in
test_http_files.py; the raw client is http_util.py."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from daemon_util import daemon  # noqa: F401  (daemon is a fixture)
from http_util import (
    HttpConn,
    assert_small_error,
    assert_valid,
    build_request,
    chunked,
    ctl_socket_path,
    curl,
    curl_response,
    http_get,
    listener_stats,
    parse_responses,
    raw_exchange,
    wait_stats,
)

TEXT_PLAIN = "text/plain; charset=utf-8"

CGI_SCRIPT = """#!/bin/sh
body=$(/bin/cat)
printf 'Status: 201 Created\\n'
printf 'Content-Type: text/x-cgi-test\\n'
printf 'X-Script: yes\\n'
printf '\\n'
/usr/bin/env
printf 'BODY=%s\\n' "$body"
"""

CGI_LOCATION = """#!/bin/sh
/bin/cat >/dev/null
printf 'Location: http://example.com/elsewhere\\n\\n'
"""

BASE = """
[daemon]
control_socket: "{ctl}"
max_connections: 5000
shutdown_timeout: "2s"

[limits]
idle_timeout: "30s"

[handlers]
echo    { type: "echo" }
hello   { type: "static" reply: "hello" }
tpl     { type: "static" reply: "p={payload}|r={remote_addr}" }
created { type: "static" reply: '{"ok":true}' status: 201 content_type: "application/json"
          headers: { "X-Static": "yes", "Cache-Control": "no-store" } }
exact   { type: "static" reply: "exact" }
param   { type: "static" reply: "param" }
paramedit { type: "static" reply: "param-edit" }
prefix  { type: "static" reply: "prefix" }
deep    { type: "static" reply: "deep-prefix" }
anym    { type: "static" reply: "any-method" }
getm    { type: "static" reply: "get-method" }
putm    { type: "static" reply: "put" }
upper   { type: "exec" command: ["tr", "a-z", "A-Z"] timeout: "5s" }
count   { type: "exec" command: ["wc", "-c"] timeout: "20s" }
cat     { type: "exec" command: ["cat"] timeout: "5s" }
health  { type: "health" }
metrics { type: "metrics" }
moved   { type: "redirect" location: "https://example.com{path}?{query}" status: 301 }
found   { type: "redirect" location: "/new-home" }
cgi     { type: "exec" command: ["{cgi}"] timeout: "5s" }
cgiloc  { type: "exec" command: ["{cgiloc}"] timeout: "5s" }
fail    { type: "exec" command: ["sh", "-c", "exit 3"] }

[middleware]
rl { type: "rate_limit" rate: "1/m" burst: 1 }

[listeners]
web {
    protocol: "http"
    listen: "127.0.0.1:PORT_WEB"
    routes {
        "GET /hello": "hello"
        "/echo": "echo"
        "/tpl": "tpl"
        "GET /created": "created"
        "GET /p/exact": "exact"
        "GET /p/:id": "param"
        "GET /p/:id/edit": "paramedit"
        "GET /p/*": "prefix"
        "GET /p/deep/*": "deep"
        "/both": "anym"
        "GET /both": "getm"
        "GET /only": "hello"
        "PUT /only": "putm"
        "POST /upper": "upper"
        "/count": "count"
        "POST /cat": "cat"
        "GET /health": "health"
        "GET /metrics": "metrics"
        "GET /old/*": "moved"
        "GET /found": "found"
        "/cgi/*": "cgi"
        "GET /cgiloc": "cgiloc"
        "GET /fail": "fail"
        "GET /dir/file.txt": "hello"
    }
}
lim {
    protocol: "http"
    listen: "127.0.0.1:PORT_LIM"
    header_timeout: "1s"
    max_body: "1KB"
    max_header: "2KB"
    routes {
        "/echo": "echo"
        "POST /big": { handler: "echo"  max_body: "64KB" }
        "GET /hello": "hello"
        "GET /rl": { handler: "hello"  middleware: ["rl"] }
    }
}
full {
    protocol: "http"
    listen: "127.0.0.1:PORT_FULL"
    max_connections: 2
    routes { "GET /hello": "hello" }
}
acct {
    protocol: "http"
    listen: "127.0.0.1:PORT_ACCT"
    routes { "GET /hello": "hello"  "/echo": "echo" }
}
"""


def make_config(tmp_path, ctl=""):
    cgi = tmp_path / "cgi.sh"
    cgi.write_text(CGI_SCRIPT)
    cgi.chmod(0o755)
    loc = tmp_path / "cgiloc.sh"
    loc.write_text(CGI_LOCATION)
    loc.chmod(0o755)
    return BASE.replace("{ctl}", ctl).replace("{cgi}", str(cgi)).replace("{cgiloc}", str(loc))


@pytest.fixture
def d(daemon, tmp_path):
    return daemon(make_config(tmp_path))


@pytest.fixture
def dctl(daemon, tmp_path):
    """The same config with a control socket; d.ctl is its path."""
    ctl = ctl_socket_path(tmp_path)
    dm = daemon(make_config(tmp_path, ctl))
    deadline = time.monotonic() + 5
    while not os.path.exists(ctl) and time.monotonic() < deadline:
        time.sleep(0.02)
    dm.ctl = ctl
    return dm


def url(d, path, port="WEB"):
    return f"http://127.0.0.1:{d.ports[port]}{path}"


# ---- the basics -------------------------------------------------------------------


def test_static_reply_defaults(d):
    r = assert_valid(http_get(d.ports["WEB"], "/hello"), 200)
    assert r.body == b"hello"
    assert r.header("Content-Length") == "5"
    assert r.header("Content-Type") == TEXT_PLAIN
    assert r.version == "HTTP/1.1"
    # curl sees the same
    c = curl_response([url(d, "/hello")])
    assert c.status == 200 and c.body == b"hello", c
    assert c.header("Content-Type") == TEXT_PLAIN
    assert c.header("Server", "").startswith("tusknetd")


def test_echo_replies_with_the_body(d):
    port = d.ports["WEB"]
    r = assert_valid(http_get(port, "/echo", method="POST", body=b"some body \x00\xff bytes"), 200)
    assert r.body == b"some body \x00\xff bytes"
    assert r.header("Content-Type") == TEXT_PLAIN
    r = assert_valid(http_get(port, "/echo"), 200)
    assert r.body == b"" and r.header("Content-Length") == "0", r
    c = curl_response(["--data-binary", "from curl", url(d, "/echo")])
    assert c.status == 200 and c.body == b"from curl"


def test_static_status_content_type_headers_and_template(d):
    port = d.ports["WEB"]
    r = assert_valid(http_get(port, "/created"), 201)
    assert r.body == b'{"ok":true}'
    assert r.header("Content-Type") == "application/json"
    assert r.header("X-Static") == "yes"
    assert r.header("Cache-Control") == "no-store"
    with HttpConn(port) as c:
        r = assert_valid(c.exchange("POST", "/tpl", body=b"abc"), 200)
        assert r.text == f"p=abc|r={c.local_addr()}", r


def test_health_handler(d):
    r = assert_valid(http_get(d.ports["WEB"], "/health"), 200)
    assert r.header("Content-Type", "").startswith("application/json"), r
    j = json.loads(r.body)
    assert j["status"] == "healthy", j
    uptime = [k for k in j if "uptime" in k]
    assert uptime and isinstance(j[uptime[0]], (int, float)), f"health JSON has no uptime: {j}"
    assert isinstance(j.get("version"), str) and j["version"], f"health JSON has no version: {j}"


def test_metrics_handler_prometheus_text(d):
    port = d.ports["WEB"]
    http_get(port, "/hello")
    r = assert_valid(http_get(port, "/metrics"), 200)
    assert r.header("Content-Type", "").startswith("text/plain"), r
    text = r.text
    assert "# TYPE tusknet_" in text, text[:500]
    sample = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? [-+]?([0-9.eE+-]+|Inf|NaN)( [0-9]+)?$")
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert sample.match(line), f"not a Prometheus sample line: {line!r}"
    assert re.search(r'^tusknet_\w+\{[^}]*listener="web"', text, re.M), "no per-listener series for 'web'"
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=r.body, capture_output=True, timeout=20)
        assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()


def test_redirect_handler_301_and_302(d):
    port = d.ports["WEB"]
    r = assert_valid(http_get(port, "/old/a/b?x=1"), 301)
    assert r.header("Location") == "https://example.com/old/a/b?x=1", r
    assert r.body == b"Redirecting to https://example.com/old/a/b?x=1\n", r
    r = assert_valid(http_get(port, "/found"), 302)
    assert r.header("Location") == "/new-home", r
    c = curl_response(["-L", "--max-redirs", "1", url(d, "/found")])
    assert c.status == 404, c  # followed to /new-home, which has no route


def test_exec_plain_output_is_a_text_body(d):
    r = assert_valid(http_get(d.ports["WEB"], "/upper", method="POST", body=b"hello world"), 200)
    assert r.body == b"HELLO WORLD"
    assert r.header("Content-Type") == TEXT_PLAIN


def test_exec_cgi_variables_and_response_headers(d):
    port = d.ports["WEB"]
    with HttpConn(port) as c:
        r = c.exchange(
            "POST",
            "/cgi/sub/a%20b?a=1&b=%20x",
            headers=[("Content-Type", "application/x-www-form-urlencoded"), ("X-Custom-Thing", "hello")],
            body=b"field=value",
        )
        local = c.local_addr()
    assert_valid(r, 201)
    assert r.header("Content-Type") == "text/x-cgi-test", r
    assert r.header("X-Script") == "yes", r
    assert not r.has("Status"), f"the CGI Status header must not reach the client: {r!r}"
    env = {}
    for line in r.text.splitlines():
        k, eq, v = line.partition("=")
        if eq:
            env.setdefault(k, v)
    assert env.get("REQUEST_METHOD") == "POST", env
    assert env.get("PATH_INFO", "").endswith("/sub/a b"), f"PATH_INFO (decoded): {env.get('PATH_INFO')!r}"
    assert env.get("QUERY_STRING") == "a=1&b=%20x", env.get("QUERY_STRING")
    assert env.get("CONTENT_TYPE") == "application/x-www-form-urlencoded", env
    assert env.get("CONTENT_LENGTH") == "11", env
    assert env.get("REMOTE_ADDR") == "127.0.0.1", env
    assert env.get("HTTP_X_CUSTOM_THING") == "hello", env
    assert env.get("HTTP_HOST") == f"127.0.0.1:{port}", env
    assert env.get("GATEWAY_INTERFACE") == "CGI/1.1", env
    assert env.get("SERVER_PROTOCOL") == "HTTP/1.1", env
    assert env.get("BODY") == "field=value", env
    assert env.get("REMOTE_PORT") == local.split(":")[1], env
    assert env.get("REQUEST_URI") == "/cgi/sub/a%20b?a=1&b=%20x", env
    assert env.get("SERVER_NAME"), env


def test_exec_cgi_location_redirects(d):
    r = assert_valid(http_get(d.ports["WEB"], "/cgiloc"), 302)
    assert r.header("Location") == "http://example.com/elsewhere", r


def test_exec_failure_is_500(d):
    r = assert_valid(http_get(d.ports["WEB"], "/fail"), 500)
    assert r.body == b"Error: exit status 3\n", r


# ---- routing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("GET", "/p/exact", "exact"),  # exact beats :param and prefix
        ("GET", "/p/42", "param"),  # :param beats prefix
        ("GET", "/p/deep", "param"),
        ("GET", "/p/42/edit", "param-edit"),
        ("GET", "/p/42/other", "prefix"),  # only the prefix matches
        ("GET", "/p", "prefix"),  # "/p/*" also matches "/p" itself
        ("GET", "/p/deep/a/b", "deep-prefix"),  # longer prefix beats shorter
        ("GET", "/both", "get-method"),  # method-specific beats any method
        ("POST", "/both", "any-method"),
        ("DELETE", "/both", "any-method"),
        ("PUT", "/only", "put"),
    ],
)
def test_route_precedence(d, method, path, body):
    r = assert_valid(http_get(d.ports["WEB"], path, method=method), 200)
    assert r.text == body, f"{method} {path}: {r!r}"


def test_404_and_405_with_allow(d):
    port = d.ports["WEB"]
    r = assert_small_error(http_get(port, "/nope"), 404)
    r = assert_small_error(http_get(port, "/only", method="DELETE"), 405)
    assert r.header("Allow") == "GET, HEAD, PUT", r
    r = assert_small_error(http_get(port, "/hello", method="POST", body=b"x"), 405)
    assert r.header("Allow") == "GET, HEAD", r
    # HEAD is served by a GET route
    with HttpConn(port) as c:
        r = assert_valid(c.exchange("HEAD", "/only"), 200)
        # the connection survives 404 and 405 answers
        assert c.exchange("GET", "/nope").status == 404
        assert c.exchange("PATCH", "/only").status == 405
        assert c.exchange("GET", "/only").body == b"hello"


# ---- connection handling ----------------------------------------------------------


def test_head_has_the_same_headers_and_no_body(d):
    port = d.ports["WEB"]
    with HttpConn(port) as c:
        g = assert_valid(c.exchange("GET", "/created"), 201)
        h = assert_valid(c.exchange("HEAD", "/created"), 201)
        assert h.body == b""
        assert h.header("Content-Length") == str(len(g.body)), (g, h)

        def norm(r):
            return sorted((k.lower(), v) for k, v in r.headers if k.lower() != "date")

        assert norm(g) == norm(h)
        # no body bytes followed the HEAD answer: the next response parses
        r = assert_valid(c.exchange("GET", "/hello"), 200)
        assert r.body == b"hello"
        h = c.exchange("HEAD", "/echo")
        assert h.status == 200 and h.header("Content-Length") == "0"
        assert c.exchange("GET", "/hello").body == b"hello"
    # curl -I
    r = curl_response(["-I", url(d, "/hello")])
    assert r.status == 200 and r.header("Content-Length") == "5" and r.body == b""


def test_keep_alive(d):
    port = d.ports["WEB"]
    with HttpConn(port) as c:
        for i in range(20):
            r = assert_valid(c.exchange("POST", "/echo", body=f"n{i}".encode()), 200)
            assert r.body == f"n{i}".encode()
            assert "close" not in r.tokens("Connection"), r
        r = c.exchange("POST", "/upper", body=b"async")
        assert r.body == b"ASYNC"
        assert c.is_open(0.3), "HTTP/1.1 connection closed without Connection: close"
        assert c.exchange("GET", "/hello").body == b"hello"
    # curl reuses one connection for two URLs
    p = subprocess.run(["curl", "-sS", "-v", url(d, "/hello"), url(d, "/hello")], capture_output=True, timeout=20)
    assert p.returncode == 0 and p.stdout == b"hellohello", p
    assert re.search(rb"Re-using existing connection", p.stderr), p.stderr.decode(errors="replace")


def test_connection_close(d):
    port = d.ports["WEB"]
    with HttpConn(port) as c:
        r = assert_valid(c.exchange("GET", "/hello", headers={"Connection": "close"}), 200)
        assert "close" in r.tokens("Connection"), r
        assert c.wait_closed(2), "daemon kept the connection open after Connection: close"
    # a request pipelined after Connection: close is not answered
    with HttpConn(port) as c:
        c.send(build_request("GET", "/hello", {"Connection": "close"}) + build_request("GET", "/created"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello"
        assert c.wait_closed(2)


def test_http10_closes_unless_keep_alive(d):
    port = d.ports["WEB"]
    with HttpConn(port) as c:
        c.send(b"GET /hello HTTP/1.0\r\n\r\n")
        r = assert_valid(c.read_response(), 200)
        assert r.body == b"hello"
        assert r.version == "HTTP/1.0" and r.header("Connection") == "close", r
        assert c.wait_closed(2), "HTTP/1.0 without keep-alive must close"
    with HttpConn(port) as c:
        c.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = assert_valid(c.read_response(), 200)
        assert "keep-alive" in r.tokens("Connection"), r
        assert c.is_open(0.3)
        # an asynchronous reply to a 1.0 client is not chunked
        c.send(b"POST /cat HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\nabcd")
        r = assert_valid(c.read_response(), 200)
        assert r.body == b"abcd" and r.framing == "length", r
        c.send(b"GET /hello HTTP/1.0\r\n\r\n")
        assert c.read_response().body == b"hello"
        assert c.wait_closed(2)
    r = curl_response(["--http1.0", url(d, "/hello")])
    assert r.status == 200 and r.body == b"hello"


def test_pipelining_100_requests_in_one_write(d):
    port = d.ports["WEB"]
    reqs, expect = [], []
    for i in range(100):
        if i % 10 == 9:  # asynchronous handler in the middle of the pipeline
            reqs.append(build_request("POST", "/cat", body=f"exec-{i}"))
            expect.append(("POST", f"exec-{i}".encode()))
        elif i % 13 == 5:
            reqs.append(build_request("HEAD", "/hello"))
            expect.append(("HEAD", b""))
        elif i % 7 == 3:
            reqs.append(build_request("GET", "/hello"))
            expect.append(("GET", b"hello"))
        else:
            reqs.append(build_request("POST", "/echo", body=f"echo-{i}"))
            expect.append(("POST", f"echo-{i}".encode()))
    with HttpConn(port, timeout=15) as c:
        c.send(b"".join(reqs))
        for i, (method, body) in enumerate(expect):
            r = c.read_response(head=(method == "HEAD"), timeout=15)
            assert r.status == 200, f"response {i}: {r!r}"
            assert r.body == body, f"response {i} out of order or wrong: {r!r}, expected {body!r}"
        assert c.is_open(0.2)


def test_chunked_upload_5mb_to_exec_wc(d, tmp_path):
    data = os.urandom(5 * 1024 * 1024)
    f = tmp_path / "upload.bin"
    f.write_bytes(data)
    r = curl_response(["-T", str(f), "-H", "Transfer-Encoding: chunked", url(d, "/count")], timeout=40)
    assert r.status == 200, r
    assert r.body.strip() == b"5242880", r
    # raw, in uneven chunks with extensions and a trailer
    with HttpConn(d.ports["WEB"], timeout=20) as c:
        c.send(build_request("POST", "/count", {"Transfer-Encoding": "chunked"}))
        c.send(chunked(data, sizes=(1, 7000, 65536, 300000, 17), ext=True, trailers=[("X-Trailer", "t")]))
        r = assert_valid(c.read_response(timeout=20), 200)
        assert r.body.strip() == b"5242880", r


def test_chunked_upload_5mb_to_echo(d):
    data = os.urandom(5 * 1024 * 1024)
    with HttpConn(d.ports["WEB"], timeout=20) as c:
        c.send(build_request("POST", "/echo", {"Transfer-Encoding": "chunked"}))
        c.send(chunked(data, sizes=(4096, 1, 100000)))
        r = assert_valid(c.read_response(timeout=20), 200)
        assert len(r.body) == len(data)
        assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(data).hexdigest()
        # the connection is still usable after a chunked body
        assert c.exchange("GET", "/hello").body == b"hello"


def test_expect_100_continue(d):
    port = d.ports["WEB"]
    with HttpConn(port) as c:
        c.send(build_request("POST", "/echo", {"Expect": "100-continue", "Content-Length": "11"}))
        r = c.read_response(allow_interim=True, timeout=3)
        assert r.status == 100, f"expected 100 Continue before the body, got {r!r}"
        c.send(b"hello world")
        r = assert_valid(c.read_response(), 200)
        assert r.body == b"hello world"
    # chunked body with Expect
    with HttpConn(port) as c:
        c.send(build_request("POST", "/echo", {"Expect": "100-continue", "Transfer-Encoding": "chunked"}))
        assert c.read_response(allow_interim=True, timeout=3).status == 100
        c.send(chunked(b"chunky", sizes=(2,)))
        assert c.read_response().body == b"chunky"
    # curl waits for 100 Continue on a large upload
    big = os.urandom(2 * 1024 * 1024)
    p = curl(["-H", "Expect: 100-continue", "--data-binary", "@-", url(d, "/echo")], input=big)
    assert p.returncode == 0, p.stderr
    rs = parse_responses(p.stdout)
    assert [r.status for r in rs] == [100, 200], [r.status for r in rs]
    assert rs[-1].body == big


def test_expect_100_continue_over_max_body_gets_413(d):
    with HttpConn(d.ports["LIM"]) as c:
        c.send(build_request("POST", "/echo", {"Expect": "100-continue", "Content-Length": str(2 * 1024 * 1024)}))
        r = c.read_response(allow_interim=True, timeout=3)
        assert_small_error(r, 413)


def test_absolute_form_target(d):
    port = d.ports["WEB"]
    with HttpConn(port) as c:
        r = assert_valid(c.exchange("GET", f"http://127.0.0.1:{port}/hello"), 200)
        assert r.body == b"hello"
        r = c.exchange("GET", "http://example.com/p/exact?x=1")
        assert r.status == 200 and r.body == b"exact", r
        r = c.exchange("GET", "http://example.com")  # empty path is "/"
        assert r.status == 404, r
    # curl through the daemon as a "proxy" sends absolute-form
    r = curl_response(["-x", f"http://127.0.0.1:{port}", "http://example.com/hello"])
    assert r.status == 200 and r.body == b"hello", r


@pytest.mark.parametrize(
    "target",
    [
        "/dir/%66ile.txt",
        "/dir/file%2Etxt",
        "/%64%69%72/file.txt",
        "/dir/./file.txt",
        "/dir/sub/../file.txt",
        "/dir/sub/%2e%2e/file.txt",
        "/dir/sub/%2E%2E/file.txt",
        "/x/y/../../dir/file.txt",
        "/dir/file.txt?query=../..",
    ],
)
def test_percent_decoding_and_dot_segments(d, target):
    r = assert_valid(http_get(d.ports["WEB"], target), 200)
    assert r.body == b"hello", f"{target}: {r!r}"


def test_dot_segments_cannot_climb_above_root(d):
    port = d.ports["WEB"]
    # a ".." above the root names nothing: 404, not the path clamped at the root
    for target in ["/../dir/file.txt", "/../../../dir/file.txt", "/%2e%2e/dir/file.txt"]:
        r = assert_small_error(http_get(port, target), 404)
        assert r.body == b"Not Found\n", f"{target}: {r!r}"
    r = http_get(port, "/dir/file.txt/..")
    assert r.status == 404, r  # "/dir" has no route
    # a malformed escape is a bad request, and the connection closes
    r = assert_small_error(http_get(port, "/dir/%zz"), 400)
    assert r.body == b"Bad Request\n" and r.header("Connection") == "close", r
    assert http_get(port, "/hello").status == 200


# ---- malformed requests: 400 and close ---------------------------------------------------

MALFORMED = {
    "garbage": b"NOT A REQUEST\r\n\r\n",
    "bad_version": b"GET /hello HTTP/X.Y\r\nHost: x\r\n\r\n",
    "no_colon": b"GET /hello HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "space_before_colon": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
    "cl_and_te": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
    "te_and_cl": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
    b"0\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
    "cl_not_a_number": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nabc",
    "cl_negative": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello",
    "cl_duplicate_differing": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl_duplicate_same": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "cl_list": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!",
    "te_not_chunked": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    "chunk_size_not_hex": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk_size_negative": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    "chunk_size_overflow": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "chunk_data_too_long": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nhello\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_request_400_and_close(d, case):
    port = d.ports["WEB"]
    with HttpConn(port) as c:
        c.send(MALFORMED[case])
        r = c.read_response(timeout=3)
        assert_small_error(r, 400)
        assert "close" in r.tokens("Connection"), f"a 400 must say Connection: close: {r!r}"
        # nothing smuggled after it is answered, and the connection closes
        assert c.wait_closed(2), "daemon kept the connection open after a 400"
    assert http_get(port, "/hello").status == 200
    assert d.alive()


# ---- limits: 408, 413, 414, 431, 503 ----------------------------------------------------


def test_408_slowloris_while_others_are_served(d):
    port = d.ports["LIM"]
    c = HttpConn(port)
    try:
        c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        # other clients are served while that head is pending
        for _ in range(3):
            r = http_get(port, "/hello", timeout=3)
            assert r.status == 200 and r.body == b"hello", r
        # a byte trickle does not extend the deadline: with header_timeout 1s
        # the 408 comes while the client is still trickling (5 s only bounds
        # the wait for it)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5 and not c.eof:
            try:
                c.send(b"X-Slow: y\r\n")
            except OSError:
                break  # closed after the 408, which is read below
            data = c.read_available(0.15)
            if data:
                c.buf = data
                break
        assert_small_error(c.read_response(timeout=1), 408)
        assert c.wait_closed(2)
    finally:
        c.close()


def test_408_partial_head_then_silence(d):
    port = d.ports["LIM"]
    with HttpConn(port) as c:
        c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        # header_timeout is 1s; 3 s only bounds the wait
        assert_small_error(c.read_response(timeout=3), 408)
        assert c.wait_closed(2)
    # the same on a keep-alive connection after a first request
    with HttpConn(port) as c:
        assert c.exchange("GET", "/hello").status == 200
        c.send(b"GET /hello HTTP/1.1\r\nHo")
        assert_small_error(c.read_response(timeout=3), 408)


def test_408_for_a_silent_connection(d):
    # a connection that never sends a byte is held to header_timeout too
    # (nginx client_header_timeout, HAProxy timeout http-request), not to
    # idle_timeout (30 s here)
    port = d.ports["LIM"]
    with HttpConn(port) as c:
        t0 = time.monotonic()
        data = b""
        while not c.eof and time.monotonic() - t0 < 3:
            data += c.read_available(0.2)
        assert c.eof, "a connection that never sends a request is still open 3 s after header_timeout 1s"
        # no request was started, so there is nothing to answer: the daemon
        # closes without a 408
        assert data == b"", data[:200]


def test_413_body_over_max_body(d):
    port = d.ports["LIM"]
    # the answer comes before the body is sent
    with HttpConn(port) as c:
        c.send(build_request("POST", "/echo", {"Content-Length": "2048"}))
        assert_small_error(c.read_response(timeout=3), 413)
    with HttpConn(port) as c:
        c.send(build_request("POST", "/echo", {"Transfer-Encoding": "chunked"}) + chunked(b"x" * 2048, sizes=(512,)))
        assert_small_error(c.read_response(timeout=3), 413)
    # exactly max_body is fine; a route may raise it
    r = assert_valid(http_get(port, "/echo", method="POST", body=b"y" * 1024), 200)
    assert len(r.body) == 1024
    r = assert_valid(http_get(port, "/big", method="POST", body=b"z" * 10000), 200)
    assert len(r.body) == 10000
    assert_small_error(http_get(port, "/big", method="POST", body=b"z" * 70000), 413)


def test_414_long_request_target(d):
    port = d.ports["WEB"]
    r, closed = raw_exchange(port, build_request("GET", "/hello?q=" + "a" * 9000))
    assert_small_error(r, 414)
    assert closed
    # under 8 KB is served
    r = assert_valid(http_get(port, "/hello?q=" + "a" * 7900), 200)
    assert r.body == b"hello"


def test_431_headers_over_max_header(d):
    port = d.ports["LIM"]  # max_header 2KB
    many = [(f"X-H{i}", "v" * 60) for i in range(50)]  # ~3.4 KB
    r, closed = raw_exchange(port, build_request("GET", "/hello", many))
    assert_small_error(r, 431)
    assert closed
    r, closed = raw_exchange(port, build_request("GET", "/hello", {"X-Big": "b" * 3000}))
    assert_small_error(r, 431)
    assert closed
    r = assert_valid(http_get(port, "/hello", headers=[(f"X-H{i}", "v" * 60) for i in range(15)]), 200)


def test_a_hundred_headers_all_reach_the_handler_and_one_more_is_431(d):
    # the header array starts small and grows as a request needs: every
    # header of a full request reaches the handler, in order
    port = d.ports["WEB"]
    many = [(f"X-H{i}", f"v{i}") for i in range(99)]  # with Host: 100, the most a request may have
    with HttpConn(port) as c:
        r = c.exchange("GET", "/cgi/", headers=many)
    assert_valid(r, 201)  # the script's own status
    env = dict(line.partition("=")[::2] for line in r.text.splitlines() if "=" in line)
    assert [env.get(f"HTTP_X_H{i}") for i in range(99)] == [f"v{i}" for i in range(99)], env
    r, closed = raw_exchange(port, build_request("GET", "/cgi/", many + [("X-H99", "v99")]))
    assert_small_error(r, 431)
    assert closed


def test_503_over_max_connections(d):
    port = d.ports["FULL"]
    a, b = HttpConn(port), HttpConn(port)
    try:
        assert a.exchange("GET", "/hello").status == 200
        assert b.exchange("GET", "/hello").status == 200
        with HttpConn(port) as c:
            data = c.read_available(1.0)
            if data:
                c.buf = data
            else:
                c.request("GET", "/hello")
            r = c.read_response(timeout=3)
            assert_small_error(r, 503)
            assert c.wait_closed(2)
        a.close()
        deadline = time.monotonic() + 3
        while True:
            r = http_get(port, "/hello")
            if r.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert r.status == 200, "a slot freed by a closed connection is not reused"
        assert b.exchange("GET", "/hello").status == 200
    finally:
        a.close()
        b.close()


def test_503_over_the_global_max_connections(daemon):
    cfg = """
[daemon]
control_socket: ""
max_connections: 2
shutdown_timeout: "2s"
[handlers]
hello { type: "static" reply: "hello" }
[listeners]
web { protocol: "http"  listen: "127.0.0.1:PORT_WEB"  routes { "GET /hello": "hello" } }
"""
    dm = daemon(cfg)
    port = dm.ports["WEB"]
    a, b = HttpConn(port), HttpConn(port)
    try:
        assert a.exchange("GET", "/hello").status == 200
        assert b.exchange("GET", "/hello").status == 200
        with HttpConn(port) as c:
            data = c.read_available(1.0)
            if data:
                c.buf = data
            else:
                c.request("GET", "/hello")
            assert_small_error(c.read_response(timeout=3), 503)
    finally:
        a.close()
        b.close()


# ---- robustness and scale ----------------------------------------------------------------


def test_1000_keep_alive_clients(d):
    port = d.ports["WEB"]
    conns = []
    try:
        for i in range(1000):
            conns.append(HttpConn(port, timeout=10))
        for rnd in range(2):
            for i, c in enumerate(conns):
                c.request("POST", "/echo", body=f"{rnd}-{i}")
            for i, c in enumerate(conns):
                r = c.read_response(timeout=10)
                assert r.status == 200 and r.body == f"{rnd}-{i}".encode(), f"client {i} round {rnd}: {r!r}"
        assert all(c.is_open(0.001) for c in conns[:50])
    finally:
        for c in conns:
            c.close()
    assert http_get(port, "/hello").status == 200


def test_abrupt_clients_do_not_hurt_the_daemon(d):
    port = d.ports["WEB"]
    # reset in the middle of a request, and right after sending one
    for i in range(10):
        c = HttpConn(port)
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        c.reset()
        c = HttpConn(port)
        c.send(build_request("POST", "/upper", body=b"gone"))
        c.reset()
    assert d.alive()
    assert http_get(port, "/hello").status == 200
    assert http_get(port, "/upper", method="POST", body=b"still").body == b"STILL"


# ---- accounting --------------------------------------------------------------------------


def test_http_bytes_accounted_in_stats(dctl):
    port = dctl.ports["ACCT"]
    with HttpConn(port) as c:
        assert c.exchange("GET", "/hello").status == 200
        assert c.exchange("POST", "/echo", body=b"e" * 1000).body == b"e" * 1000
        assert c.exchange("HEAD", "/hello").status == 200
        r = c.exchange("GET", "/hello", headers={"Connection": "close"})
        assert r.status == 200
        assert c.wait_closed(2)
        sent, received = c.sent, c.received
    st = wait_stats(
        dctl.ctl,
        "acct",
        lambda s: s["total_bytes_received"] == sent and s["total_bytes_sent"] == received,
    )
    assert st["total_bytes_received"] == sent, f"client sent {sent} bytes; stats: {st}"
    assert st["total_bytes_sent"] == received, f"client received {received} bytes; stats: {st}"
    assert st["total_connections"] == 1, st
    assert st["protocol"] == "http", st


def test_error_responses_are_counted(dctl):
    port = dctl.ports["LIM"]
    before = listener_stats(dctl.ctl, "lim")
    # 400
    r, _ = raw_exchange(port, b"NOT A REQUEST\r\n\r\n")
    assert r.status == 400
    # 413
    r, _ = raw_exchange(port, build_request("POST", "/echo", {"Content-Length": "5000"}))
    assert r.status == 413
    # a 9 KB target on a listener whose max_header is 2 KB: the head is over
    # max_header before the target is over 8 KB, so 431
    r, _ = raw_exchange(port, build_request("GET", "/hello?" + "q" * 9000))
    assert r.status == 431, r
    # 431
    r, _ = raw_exchange(port, build_request("GET", "/hello", {"X-Big": "b" * 3000}))
    assert r.status == 431
    # 429
    assert http_get(port, "/rl").status == 200
    r = http_get(port, "/rl")
    assert r.status == 429, r
    # 408: part of a head, then silence (the client has nothing in flight when
    # the daemon answers and closes, so the 408 is never lost to a reset)
    with HttpConn(port) as c:
        c.send(b"GET /hello HTTP/1.1\r\nX: y\r\n")
        assert_small_error(c.read_response(timeout=3), 408)
        assert c.wait_closed(2)
    wait_stats(dctl.ctl, "lim", lambda s: s["timeout_errors"] > before["timeout_errors"])
    after = listener_stats(dctl.ctl, "lim")
    # 400 is a connection error; 413 and both 431s are too_large; 408 and 429 have their own
    assert after["connection_errors"] - before["connection_errors"] == 1, (before, after)
    assert after["timeout_errors"] - before["timeout_errors"] == 1, (before, after)
    assert {k: after["rejected"][k] - before["rejected"][k] for k in after["rejected"]} == {
        "max_connections": 0, "listener_full": 0, "per_ip": 0, "per_second": 0, "denied": 0,
        "rate_limit": 1, "too_large": 3, "slow_reader": 0, "reply_dropped": 0}, (before, after)
    # 503: refused at accept, before the client sends anything
    full = dctl.ports["FULL"]
    fb = listener_stats(dctl.ctl, "full")
    a, b = HttpConn(full), HttpConn(full)
    try:
        assert a.exchange("GET", "/hello").status == 200
        assert b.exchange("GET", "/hello").status == 200
        with HttpConn(full) as c:
            assert_small_error(c.read_response(timeout=3), 503)
    finally:
        a.close()
        b.close()
    fa = wait_stats(dctl.ctl, "full", lambda s: s["rejected"]["listener_full"] > fb["rejected"]["listener_full"])
    assert {k: fa["rejected"][k] - fb["rejected"][k] for k in fa["rejected"]} == {
        "max_connections": 0, "listener_full": 1, "per_ip": 0, "per_second": 0, "denied": 0,
        "rate_limit": 0, "too_large": 0, "slow_reader": 0, "reply_dropped": 0}, (fb, fa)
