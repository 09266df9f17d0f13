# SPDX-License-Identifier: MIT
"""The gzip middleware on file-handler responses, over raw sockets and curl:
small files compressed whole (Content-Length), large ones streamed (chunked
for HTTP/1.1, up to the close for HTTP/1.0) with the daemon's memory bounded
while a slow client downloads 50 MB, precompressed FILE.gz siblings (and
none from outside the root), Vary on every compressible answer, weak ETags
with 304, identity ranges (206), q=0, HEAD, types that are not compressed,
pipelining behind a streamed body, clients that half-close or vanish."""
import gzip
import hashlib
import json
import os
import socket
import time
import zlib

import pytest

from ctl_util import rss_kb
from daemon_util import daemon  # noqa: F401  (daemon is a fixture)
from http_util import HttpConn, assert_valid, curl_response
from tls_util import https_conn, pki, tls_context  # noqa: F401  (pki is a fixture)

SECRET = b"outside the root: never served " * 20

CONFIG = """
[daemon]
control_socket: ""
shutdown_timeout: "5s"

[handlers]
site { type: "file" root: "{WWW}" }

[middleware]
gz1k { type: "gzip" min_size: "1KB" level: 1 }
alog { type: "access_log" file: "{ALOG}" format: "json" }

[listeners]
web {
    protocol: "http"
    listen: "127.0.0.1:PORT_WEB"
    middleware: ["gzip"]
    routes { "GET /*": "site" }
}
k1 {
    protocol: "http"
    listen: "127.0.0.1:PORT_K1"
    routes { "GET /*": { handler: "site"  middleware: ["gz1k"] } }
}
plain {
    protocol: "http"
    listen: "127.0.0.1:PORT_PLAIN"
    routes { "GET /*": "site" }
}
logged {
    protocol: "http"
    listen: "127.0.0.1:PORT_LOG"
    middleware: ["alog", "gzip"]
    routes { "GET /*": "site" }
}
"""


def text(n, seed=0):
    """N bytes of log-like text: compressible, but not trivially."""
    lines, size, i = [], 0, seed * 1000003
    while size < n:
        ln = f"{i:09d} GET /app/v{i % 7}/item/{(i * 7919) % 100003} 200 {(i * 31) % 9000} {hex(i * 2654435761)}\n"
        lines.append(ln)
        size += len(ln)
        i += 1
    return "".join(lines).encode()[:n]


SMALL = text(5000)  # compressed whole
BIG = text(3 * 1024 * 1024 + 17, seed=1)  # streamed
FILES = {
    "index.html": b"<!doctype html><title>t</title>" + text(2000, seed=2),
    "small.txt": SMALL,
    "style.css": b"body { color: red }\n" * 300,
    "app.js": b"console.log('hello');\n" * 300,
    "data.json": b'{"k": [' + b", ".join(b"%d" % i for i in range(2000)) + b"]}",
    "pic.svg": b'<svg xmlns="http://www.w3.org/2000/svg">' + b'<rect width="1"/>' * 300 + b"</svg>",
    "feed.xml": b"<feed>" + b"<entry>x</entry>" * 300 + b"</feed>",
    "big.txt": BIG,
    "tiny.txt": b"tiny\n" * 10,  # 50 bytes: under min_size
    "mid.txt": text(600, seed=3),  # over the default min_size, under 1KB
    "image.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 20000,
    "blob.bin": b"\x00" * 20000,
    "pre.css": b".pre { margin: 0 }\n" * 400,
}


@pytest.fixture
def site(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    for name, data in FILES.items():
        (www / name).write_bytes(data)
    # a precompressed sibling whose bytes differ from what the daemon would make
    (www / "pre.css.gz").write_bytes(gzip.compress(FILES["pre.css"], compresslevel=9, mtime=12345))
    # .gz siblings that must not be used: leading out of the root, a directory, a FIFO
    (tmp_path / "outside.gz").write_bytes(gzip.compress(SECRET))
    os.symlink(tmp_path / "outside.gz", www / "style.css.gz")
    os.symlink("../outside.gz", www / "app.js.gz")
    (www / "feed.xml.gz").mkdir()
    os.mkfifo(www / "data.json.gz")
    return www


def config(site):
    return CONFIG.replace("{WWW}", str(site)).replace("{ALOG}", str(site.parent / "access.log"))


@pytest.fixture
def d(daemon, site):
    return daemon(config(site))


def get(d, path, headers=None, port="WEB", method="GET", version="HTTP/1.1"):
    with HttpConn(d.ports[port], timeout=20) as c:
        return c.exchange(method, path, headers=headers, version=version, timeout=20)


GZ = {"Accept-Encoding": "gzip"}


def vary(r):
    return "accept-encoding" in r.tokens("Vary")


# ---- compression ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,ctype",
    [
        ("small.txt", "text/plain"),
        ("index.html", "text/html"),
        ("style.css", "text/css"),
        ("app.js", "text/javascript"),
        ("data.json", "application/json"),
        ("pic.svg", "image/svg+xml"),
        ("feed.xml", "text/xml"),
    ],
)
def test_small_text_files_compressed_whole(d, name, ctype):
    r = assert_valid(get(d, "/" + name, GZ), 200)
    assert r.header("Content-Type").split(";")[0] == ctype, r
    assert r.header("Content-Encoding") == "gzip", r
    assert r.framing == "length" and int(r.header("Content-Length")) == len(r.body), r
    assert len(r.body) < len(FILES[name]) / 2, "not really compressed"
    assert gzip.decompress(r.body) == FILES[name]
    assert vary(r), r
    assert r.header("ETag").startswith('W/"'), r
    assert not r.has("Accept-Ranges"), r


def test_large_file_streamed_chunked(d):
    with HttpConn(d.ports["WEB"], timeout=20) as c:
        r = assert_valid(c.exchange("GET", "/big.txt", headers=GZ, timeout=20), 200)
        assert r.framing == "chunked" and not r.has("Content-Length"), r
        assert r.header("Content-Encoding") == "gzip" and vary(r), r
        assert r.header("ETag").startswith('W/"'), r
        assert len(r.body) < len(BIG) / 2
        assert gzip.decompress(r.body) == BIG
        # the connection goes on after the last chunk
        r = assert_valid(c.exchange("GET", "/small.txt", headers=GZ), 200)
        assert gzip.decompress(r.body) == SMALL


def test_large_file_http10_ends_with_the_close(d):
    with HttpConn(d.ports["WEB"], timeout=20) as c:
        c.request("GET", "/big.txt", headers={"Accept-Encoding": "gzip", "Connection": "keep-alive"},
                  version="HTTP/1.0")
        r = c.read_response(timeout=20)
        assert r.status == 200 and r.version == "HTTP/1.0", r
        assert r.framing == "close" and r.header("Connection") == "close", r
        assert r.header("Content-Encoding") == "gzip"
        assert gzip.decompress(r.body) == BIG
    # a small file keeps its length and the keep-alive on HTTP/1.0
    with HttpConn(d.ports["WEB"]) as c:
        c.request("GET", "/small.txt", headers={"Accept-Encoding": "gzip", "Connection": "keep-alive"},
                  version="HTTP/1.0")
        r = c.read_response()
        assert r.framing == "length" and r.header("Connection") == "keep-alive", r
        assert gzip.decompress(r.body) == SMALL
        assert c.is_open()


def test_curl_compressed(d):
    for name in ("small.txt", "big.txt"):
        r = curl_response(["--compressed", f"http://127.0.0.1:{d.ports['WEB']}/{name}"])
        assert r.status == 200 and r.header("Content-Encoding") == "gzip", r
        assert r.body == FILES[name]


def test_level_and_min_size_options(d):
    # gz1k: min_size 1KB, level 1
    r = assert_valid(get(d, "/mid.txt", GZ, port="K1"), 200)
    assert not r.has("Content-Encoding") and r.body == FILES["mid.txt"], r
    assert vary(r), "a compressible type varies even when too small to compress"
    r = assert_valid(get(d, "/mid.txt", GZ), 200)
    assert r.header("Content-Encoding") == "gzip" and gzip.decompress(r.body) == FILES["mid.txt"]
    r1 = assert_valid(get(d, "/small.txt", GZ, port="K1"), 200)
    assert gzip.decompress(r1.body) == SMALL
    # the gzip header's XFL byte says which level made it: 4 = fastest, 0 = default
    assert r1.body[8] == 4, r1.body[:10]
    r6 = assert_valid(get(d, "/small.txt", GZ), 200)
    assert r6.body[8] == 0, r6.body[:10]
    # under the default min_size of 256 bytes
    r = assert_valid(get(d, "/tiny.txt", GZ), 200)
    assert not r.has("Content-Encoding") and r.body == FILES["tiny.txt"] and vary(r), r


@pytest.mark.parametrize(
    "accept",
    [None, "", "gzip;q=0", "GZIP; q=0.000", "identity", "deflate, br", "*;q=0", "gzip;q=0, *"],
)
def test_no_compression_unless_accepted(d, accept):
    headers = {} if accept is None else {"Accept-Encoding": accept}
    for name in ("small.txt", "big.txt"):
        r = assert_valid(get(d, "/" + name, headers), 200)
        assert not r.has("Content-Encoding"), f"{accept!r}: {r!r}"
        assert r.framing == "length" and r.body == FILES[name]
        assert vary(r), f"the identity variant of a compressible type must vary: {r!r}"
        assert r.header("ETag").startswith('"'), r
        assert r.header("Accept-Ranges") == "bytes", r


def test_types_not_compressed(d):
    for name, ctype in (("image.png", "image/png"), ("blob.bin", "application/octet-stream")):
        r = assert_valid(get(d, "/" + name, GZ), 200)
        assert r.header("Content-Type") == ctype, r
        assert not r.has("Content-Encoding") and not r.has("Vary"), r
        assert r.framing == "length" and r.body == FILES[name]
        assert r.header("ETag").startswith('"'), r


def test_no_gzip_middleware_no_compression(d):
    r = assert_valid(get(d, "/big.txt", GZ, port="PLAIN"), 200)
    assert not r.has("Content-Encoding") and not r.has("Vary") and r.body == BIG, r
    # a .gz sibling is only used where the route has gzip
    r = assert_valid(get(d, "/pre.css", GZ, port="PLAIN"), 200)
    assert not r.has("Content-Encoding") and r.body == FILES["pre.css"], r


# ---- validators, ranges, HEAD -------------------------------------------------------------


def test_weak_etag_and_304(d):
    for name in ("small.txt", "big.txt"):
        r = assert_valid(get(d, "/" + name, GZ), 200)
        weak = r.header("ETag")
        assert weak.startswith('W/"'), r
        strong = assert_valid(get(d, "/" + name), 200).header("ETag")
        assert weak == "W/" + strong
        # weak comparison: either form of the tag matches
        for inm in (weak, strong, f'"nope", {weak}'):
            r = assert_valid(get(d, "/" + name, {"Accept-Encoding": "gzip", "If-None-Match": inm}), 304)
            assert r.body == b"" and r.header("ETag") == weak and vary(r), r
            assert not r.has("Content-Encoding"), r
            r = assert_valid(get(d, "/" + name, {"If-None-Match": inm}), 304)
            assert r.header("ETag") == strong and vary(r), r
        r = assert_valid(get(d, "/" + name, {"Accept-Encoding": "gzip", "If-None-Match": '"other"'}), 200)
        assert r.header("Content-Encoding") == "gzip"


def test_range_gets_identity_206(d):
    for name in ("small.txt", "big.txt"):
        data = FILES[name]
        r = assert_valid(get(d, "/" + name, {"Accept-Encoding": "gzip", "Range": "bytes=100-1099"}), 206)
        assert not r.has("Content-Encoding"), r
        assert r.header("Content-Range") == f"bytes 100-1099/{len(data)}", r
        assert r.body == data[100:1100]
        assert r.header("ETag").startswith('"') and vary(r), r
        r = assert_valid(get(d, "/" + name, {"Accept-Encoding": "gzip", "Range": "bytes=-10"}), 206)
        assert r.body == data[-10:] and not r.has("Content-Encoding"), r


def test_head_same_headers_without_body(d):
    def heads(r):
        return [(k.lower(), v) for k, v in r.headers if k.lower() != "date"]

    for name in ("small.txt", "big.txt", "pre.css", "image.png"):
        for headers in (GZ, {}):
            g = assert_valid(get(d, "/" + name, headers), 200)
            h = assert_valid(get(d, "/" + name, headers, method="HEAD"), 200)
            assert h.body == b"" and h.framing == "none"
            assert heads(h) == heads(g), f"{name} {headers}: HEAD {h!r} GET {g!r}"


def test_head_then_get_on_one_connection(d):
    with HttpConn(d.ports["WEB"], timeout=20) as c:
        h = c.exchange("HEAD", "/big.txt", headers=GZ)
        assert h.header("Transfer-Encoding") == "chunked" and h.header("Content-Encoding") == "gzip", h
        r = c.exchange("GET", "/big.txt", headers=GZ, timeout=20)
        assert gzip.decompress(r.body) == BIG


# ---- precompressed siblings ---------------------------------------------------------------


def test_gz_sibling_served(d, site):
    gz = (site / "pre.css.gz").read_bytes()
    r = assert_valid(get(d, "/pre.css", GZ), 200)
    assert r.header("Content-Type") == "text/css; charset=utf-8", r
    assert r.header("Content-Encoding") == "gzip" and vary(r), r
    assert r.framing == "length" and int(r.header("Content-Length")) == len(gz), r
    assert r.body == gz, "not the bytes of pre.css.gz"
    # its own validators: the .gz file's
    st = os.stat(site / "pre.css.gz")
    etag = r.header("ETag")
    assert etag.startswith('"') and etag.endswith(f"-{st.st_size:x}\""), r
    assert assert_valid(get(d, "/pre.css", {"Accept-Encoding": "gzip", "If-None-Match": etag}), 304)
    h = assert_valid(get(d, "/pre.css", GZ, method="HEAD"), 200)
    assert h.header("Content-Length") == str(len(gz)) and h.header("Content-Encoding") == "gzip", h
    # without gzip: the file itself
    r = assert_valid(get(d, "/pre.css"), 200)
    assert r.body == FILES["pre.css"] and not r.has("Content-Encoding") and vary(r), r
    # a range: of the file itself, never of the .gz
    r = assert_valid(get(d, "/pre.css", {"Accept-Encoding": "gzip", "Range": "bytes=0-9"}), 206)
    assert r.body == FILES["pre.css"][:10] and not r.has("Content-Encoding"), r
    # asked for by name it is a gzip file like any other
    r = assert_valid(get(d, "/pre.css.gz", GZ), 200)
    assert r.header("Content-Type") == "application/gzip" and not r.has("Content-Encoding") and r.body == gz, r
    # curl decodes it to the original
    cr = curl_response(["--compressed", f"http://127.0.0.1:{d.ports['WEB']}/pre.css"])
    assert cr.header("Content-Encoding") == "gzip" and cr.body == FILES["pre.css"], cr


@pytest.mark.parametrize("name", ["style.css", "app.js", "feed.xml", "data.json"])
def test_gz_sibling_outside_root_or_not_a_file_refused(d, name):
    # the sibling leads out of the root (absolute or relative symlink), is a
    # directory or a FIFO: the file is compressed on the fly instead
    r = assert_valid(get(d, "/" + name, GZ), 200)
    assert r.header("Content-Encoding") == "gzip", r
    body = gzip.decompress(r.body)
    assert body == FILES[name], "served something other than the file"
    assert SECRET not in body and r.header("ETag").startswith('W/"'), r


@pytest.mark.parametrize(
    "target",
    ["/../outside.gz", "/%2e%2e/outside.gz", "/..%2foutside.gz", "/style.css.gz", "/app.js.gz", "/feed.xml.gz/"],
)
def test_gz_traversal_refused(d, target):
    r = assert_valid(get(d, target, GZ), 404)
    assert SECRET not in r.body and b"\x1f\x8b" not in r.body, r


# ---- the connection around a streamed body ----------------------------------------------


def test_pipelined_behind_a_streamed_body(d):
    with HttpConn(d.ports["WEB"], timeout=20) as c:
        reqs = [("/big.txt", GZ), ("/small.txt", GZ), ("/big.txt", GZ), ("/tiny.txt", {}), ("/big.txt", {})]
        for path, h in reqs:
            c.request("GET", path, headers=h)
        for path, h in reqs:
            r = assert_valid(c.read_response(timeout=20), 200)
            want = FILES[path[1:]]
            got = gzip.decompress(r.body) if r.header("Content-Encoding") == "gzip" else r.body
            assert got == want, f"{path}: wrong body"
        assert c.is_open()


def test_half_closed_client_gets_the_whole_body(d):
    with HttpConn(d.ports["WEB"], timeout=20) as c:
        c.request("GET", "/big.txt", headers={"Accept-Encoding": "gzip", "Connection": "close"})
        c.sock.shutdown(socket.SHUT_WR)
        r = assert_valid(c.read_response(timeout=20), 200)
        assert r.framing == "chunked" and r.header("Content-Encoding") == "gzip", r
        assert gzip.decompress(r.body) == BIG
        assert c.wait_closed()
    # requests pipelined behind a streamed body, then the FIN: all answered, then the close
    with HttpConn(d.ports["WEB"], timeout=20) as c:
        names = ["big.txt", "small.txt", "big.txt", "tiny.txt"]
        c.send(b"".join(f"GET /{n} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n".encode() for n in names))
        c.sock.shutdown(socket.SHUT_WR)
        for n in names:
            r = assert_valid(c.read_response(timeout=20), 200)
            body = gzip.decompress(r.body) if r.header("Content-Encoding") == "gzip" else r.body
            assert body == FILES[n], n
        assert c.wait_closed()


def test_streamed_over_tls(daemon, site, pki):
    tls = f"""
secure {{
    protocol: "http"
    listen: "127.0.0.1:PORT_TLS"
    middleware: ["gzip"]
    tls {{ cert: "{pki.localhost.cert}"  key: "{pki.localhost.key}" }}
    routes {{ "GET /*": "site" }}
}}
"""
    d = daemon(config(site) + tls)
    with https_conn(d.ports["TLS"], tls_context(pki), timeout=20, rcvbuf=16384) as c:
        for name in ("big.txt", "small.txt", "big.txt"):
            r = assert_valid(c.exchange("GET", "/" + name, headers=GZ, timeout=20), 200)
            assert r.header("Content-Encoding") == "gzip", r
            assert r.framing == ("chunked" if name == "big.txt" else "length"), r
            assert gzip.decompress(r.body) == FILES[name]


def test_access_log_counts_a_streamed_body(d, site):
    # logged once the last piece is out; bytes are the body's (as nginx's
    # $body_bytes_sent): the compressed bytes sent, without head or chunk framing
    log = site.parent / "access.log"
    with HttpConn(d.ports["LOG"], timeout=20) as c:
        big = assert_valid(c.exchange("GET", "/big.txt", headers=GZ, timeout=20), 200)
        small = assert_valid(c.exchange("GET", "/small.txt", headers=GZ), 200)
    assert big.framing == "chunked" and small.framing == "length"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(log.read_text().splitlines()) < 2:
        time.sleep(0.02)
    lines = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert [(e["path"], e["status"], e["bytes"]) for e in lines] == [
        ("/big.txt", 200, len(big.body)),
        ("/small.txt", 200, len(small.body)),
    ], lines


def test_clients_vanishing_mid_stream(d):
    for i in range(6):
        c = HttpConn(d.ports["WEB"], rcvbuf=16384)
        c.request("GET", "/big.txt", headers=GZ)
        c.read_head()
        c.sock.recv(10000 * (i + 1))
        if i % 2:
            c.reset()
        else:
            c.close()
    r = assert_valid(get(d, "/big.txt", GZ), 200)
    assert gzip.decompress(r.body) == BIG
    assert d.alive()


BOUND_MB = 8


def test_memory_bounded_while_a_slow_client_downloads_50mb(daemon, site, tmp_path):
    block = text(1024 * 1024, seed=9)
    h = hashlib.sha256()
    with open(site / "huge.txt", "wb") as f:
        for i in range(50):
            chunk = block[i:] + block[:i]  # not one block repeated byte for byte
            f.write(chunk)
            h.update(chunk)
    env = None
    if os.environ.get("SANITIZE") == "1":
        # ASan keeps freed memory in quarantine on purpose; this measures ours
        env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=1")
    d = daemon(config(site), env=env)
    assert gzip.decompress(get(d, "/small.txt", GZ).body) == SMALL  # deflate state in place
    before = rss_kb(d.pid)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    s.connect(("127.0.0.1", d.ports["WEB"]))
    s.settimeout(20)
    s.sendall(b"GET /huge.txt HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = hashlib.sha256()
    buf, head, peak, total, wire = b"", None, before, 0, 0
    try:
        while True:
            chunk = s.recv(16384)
            if not chunk:
                break
            wire += len(chunk)
            buf += chunk
            if head is None:
                if b"\r\n\r\n" not in buf:
                    continue
                head, _, buf = buf.partition(b"\r\n\r\n")
                assert b"Content-Encoding: gzip" in head and b"Transfer-Encoding: chunked" in head, head
            # de-chunk what is complete
            while True:
                eol = buf.find(b"\r\n")
                if eol < 0:
                    break
                n = int(buf[:eol], 16)
                if len(buf) < eol + 2 + n + 2:
                    break
                data = inflater.decompress(buf[eol + 2:eol + 2 + n])
                out.update(data)
                total += len(data)
                buf = buf[eol + 2 + n + 2:]
            time.sleep(0.001)  # a slow reader: the daemon's socket buffer stays full
            if wire // (256 * 1024) != (wire - len(chunk)) // (256 * 1024):
                peak = max(peak, rss_kb(d.pid))
    finally:
        s.close()
    assert buf == b"", "the body did not end with the last chunk"
    assert total == 50 * 1024 * 1024 and out.digest() == h.digest()
    after = rss_kb(d.pid)
    grew = (max(peak, after) - before) / 1024
    print(f"VmRSS before {before} kB, peak {peak} kB, after {after} kB; {wire} bytes on the wire")
    # well under both the file and its compressed size: neither was held whole
    assert wire > 1.5 * BOUND_MB * 1024 * 1024, wire
    assert grew < BOUND_MB, f"the daemon grew by {grew:.1f} MB while streaming a 50 MB file"


def test_shutdown_lets_a_stream_finish(d):
    with HttpConn(d.ports["WEB"], timeout=20, rcvbuf=16384) as c:
        c.request("GET", "/big.txt", headers=GZ)
        c.read_head()
        d.send_signal(15)
        time.sleep(0.2)
        # the rest of the body still comes, then the daemon exits
        data = b""
        while True:
            try:
                chunk = c.sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        data = c.buf + data
        assert data.endswith(b"\r\n0\r\n\r\n"), data[-50:]
    assert d.wait(5) == 0
