# SPDX-License-Identifier: MIT
"""HTTP/1.1 parsing as strict as nginx's, with raw sockets: folded header
lines, chunk data without its CRLF, missing or repeated Host, unsupported
versions, CR and NUL inside the head, encoded control bytes in the path, and
CR in headers a CGI program prints. Each hostile request gets its exact
status and the close; a well-behaved client on another connection is served
after it."""
import pytest

from daemon_util import daemon  # noqa: F401  (fixture)
from http_util import HttpConn, assert_small_error, http_get, raw_exchange

CGI_CR = """#!/bin/sh
/bin/cat >/dev/null
printf 'X-Good: yes\\r\\nX-Bad: a\\rInjected: 1\\r\\nContent-Type: text/plain\\r\\n\\r\\nok'
"""

CONFIG = """
[handlers]
hello { type: "static" reply: "hello" }
echo  { type: "echo" }
cgi   { type: "exec" command: ["{CGI}"] timeout: "5s" }

[middleware]
cors { type: "cors" }

[listeners]
web {
    protocol: "http"
    listen: "127.0.0.1:PORT_WEB"
    middleware: ["cors"]
    routes { "GET /": "hello"  "POST /echo": "echo"  "GET /cgi": "cgi"  "GET /files/*": "hello" }
}
"""


@pytest.fixture
def web(daemon, tmp_path):
    cgi = tmp_path / "cgi.sh"
    cgi.write_text(CGI_CR)
    cgi.chmod(0o755)
    return daemon(CONFIG.replace("{CGI}", str(cgi)))


def refused(d, data, status):
    """DATA gets STATUS and the close; the next client is still served."""
    port = d.ports["WEB"]
    resp, closed = raw_exchange(port, data)
    assert_small_error(resp, status)
    assert closed, f"connection left open after {status}"
    assert b"Injected" not in resp.raw_head
    good = http_get(port, "/")
    assert (good.status, good.body) == (200, b"hello")
    return resp


def test_folded_origin_is_400_and_never_reflected(web):
    resp = refused(web, b"GET / HTTP/1.1\r\nHost: a\r\nOrigin: http://x.example\r\n Injected: 1\r\n\r\n", 400)
    assert resp.header("Access-Control-Allow-Origin") is None


def test_folded_line_with_tab_is_400(web):
    refused(web, b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", 400)


def test_unfolded_origin_is_reflected(web):
    resp = http_get(web.ports["WEB"], "/", headers={"Origin": "http://x.example"})
    assert resp.status == 200
    assert resp.header("Access-Control-Allow-Origin") == "*"


CHUNK_HEAD = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_chunk_data_not_followed_by_crlf_is_400(web):
    refused(web, CHUNK_HEAD + b"5\r\nhelloXX0\r\n\r\n", 400)


def test_chunk_data_followed_by_bare_lf_is_400(web):
    refused(web, CHUNK_HEAD + b"5\r\nhello\n0\r\n\r\n", 400)


def test_bad_chunk_end_split_across_reads_is_400(web):
    with HttpConn(web.ports["WEB"]) as c:
        c.send(CHUNK_HEAD + b"5\r\nhello")
        c.send(b"\r")
        c.send(b"X0\r\n\r\n")
        resp = c.read_response()
        assert_small_error(resp, 400)
        assert c.wait_closed(2.0)


def test_well_formed_chunks_split_anywhere_are_accepted(web):
    data = CHUNK_HEAD + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    head_len = len(CHUNK_HEAD)
    for cut in range(head_len, len(data)):
        with HttpConn(web.ports["WEB"]) as c:
            c.send(data[:cut])
            c.send(data[cut:])
            resp = c.read_response()
            assert (resp.status, resp.body) == (200, b"hello world"), f"cut at {cut}"


def test_http11_without_host_is_400(web):
    refused(web, b"GET / HTTP/1.1\r\n\r\n", 400)


def test_two_host_headers_are_400(web):
    refused(web, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)


def test_two_host_headers_in_http10_are_400(web):
    refused(web, b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400)


def test_http10_without_host_is_served(web):
    resp, closed = raw_exchange(web.ports["WEB"], b"GET / HTTP/1.0\r\n\r\n")
    assert (resp.status, resp.body, closed) == (200, b"hello", True)


@pytest.mark.parametrize("version", [b"HTTP/1.2", b"HTTP/2.0", b"HTTP/3.0", b"HTTP/0.9"])
def test_other_versions_are_505(web, version):
    resp = refused(web, b"GET / " + version + b"\r\nHost: a\r\n\r\n", 505)
    assert resp.reason == "HTTP Version Not Supported"


@pytest.mark.parametrize(
    "header",
    [b"X-A: a\rb", b"X-A: a\x00b", b"X-A\x00: b", b"X-A: a\x7fb"],
    ids=["bare-cr", "nul-in-value", "nul-in-name", "del"],
)
def test_control_bytes_in_the_head_are_400(web, header):
    refused(web, b"GET / HTTP/1.1\r\nHost: a\r\n" + header + b"\r\n\r\n", 400)


@pytest.mark.parametrize("enc", ["%0d%0aInjected:%201", "%00", "%0a", "%1b", "%7f"])
def test_encoded_control_bytes_in_the_path_are_400(web, enc):
    refused(web, f"GET /files/a{enc} HTTP/1.1\r\nHost: a\r\n\r\n".encode(), 400)


def test_cgi_header_with_cr_is_dropped(web):
    resp = http_get(web.ports["WEB"], "/cgi")
    assert resp.status == 200
    assert resp.body == b"ok"
    assert resp.header("X-Good") == "yes"
    assert resp.header("X-Bad") is None
    assert b"Injected" not in resp.raw_head
