# SPDX-License-Identifier: MIT
"""The file handler over real sockets and curl: index
files, MIME types, ETag and Last-Modified with 304, single ranges (206,
416), HEAD, large files, clients that vanish mid-response, and no way out of
the root: `..`, `%2e%2e`, `%2f` and symlinks pointing outside all get 404."""
import email.utils
import hashlib
import os
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

SECRET = b"TOP-SECRET-do-not-serve"

CONFIG = """
[daemon]
control_socket: ""
shutdown_timeout: "2s"

[handlers]
site { type: "file" root: "{WWW}" }
alt  { type: "file" root: "{WWW}" index: ["home.htm", "index.html"] }

[listeners]
web {
    protocol: "http"
    listen: "127.0.0.1:PORT_WEB"
    routes { "GET /static/*": "site"  "GET /*": "site" }
}
alt {
    protocol: "http"
    listen: "127.0.0.1:PORT_ALT"
    routes { "GET /*": "alt" }
}
"""

FILES = {
    "index.html": b"<!doctype html><h1>home</h1>\n",
    "style.css": b"body { color: red }\n",
    "app.js": b"console.log('hi');\n",
    "data.json": b'{"a": 1}\n',
    "image.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    "pic.svg": b'<svg xmlns="http://www.w3.org/2000/svg"></svg>\n',
    "page.txt": b"0123456789" * 100,
    "noext": b"\x00\x01binary\x02",
    "sub/index.html": b"<p>sub index</p>\n",
    "sub/page.txt": b"sub page\n",
    "althome/home.htm": b"<p>home.htm wins</p>\n",
    "althome/index.html": b"<p>index.html loses</p>\n",
    "emptydir/.keep": b"",
}


@pytest.fixture
def site(tmp_path):
    www = tmp_path / "www"
    for name, data in FILES.items():
        p = www / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (www / "emptydir" / ".keep").unlink()
    (tmp_path / "secret.txt").write_bytes(SECRET)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    os.symlink(tmp_path / "secret.txt", www / "link_out")
    os.symlink("../secret.txt", www / "link_out_rel")
    os.symlink(outside, www / "linkdir")
    return www


@pytest.fixture
def d(daemon, site):
    return daemon(CONFIG.replace("{WWW}", str(site)))


@pytest.fixture
def big(site):
    data = os.urandom(24 * 1024 * 1024)
    (site / "big.bin").write_bytes(data)
    return data


def url(d, path, port="WEB"):
    return f"http://127.0.0.1:{d.ports[port]}{path}"


def ctype(r):
    return r.header("Content-Type", "").split(";")[0].strip().lower()


# ---- serving -------------------------------------------------------------------------------


def test_index_files(d):
    port = d.ports["WEB"]
    r = assert_valid(http_get(port, "/"), 200)
    assert r.body == FILES["index.html"] and ctype(r) == "text/html", r
    r = assert_valid(http_get(port, "/index.html"), 200)
    assert r.body == FILES["index.html"]
    r = assert_valid(http_get(port, "/sub/"), 200)
    assert r.body == FILES["sub/index.html"], r
    # a directory named without its slash redirects to it
    r = assert_valid(http_get(port, "/sub"), 301)
    assert r.header("Location", "").endswith("/sub/"), r
    r = assert_valid(http_get(port, "/sub?x=1"), 301)
    assert r.header("Location", "").endswith("/sub/?x=1"), r
    r = assert_valid(http_get(d.ports["ALT"], "/althome/"), 200)
    assert r.body == FILES["althome/home.htm"], "index list order not honoured"
    r = assert_valid(http_get(d.ports["ALT"], "/"), 200)
    assert r.body == FILES["index.html"], "second index name not tried"


def test_missing_and_directory_without_index(d):
    port = d.ports["WEB"]
    assert_small_error(http_get(port, "/nope.txt"), 404)
    assert_small_error(http_get(port, "/sub/nope/deeper"), 404)
    # directory listings are not served: a directory without an index is not found
    r = assert_small_error(http_get(port, "/emptydir/"), 404)
    assert r.body == b"Not Found\n", r
    assert_small_error(http_get(port, "/page.txt", method="POST", body=b"x"), 405)


@pytest.mark.parametrize(
    "name,types",
    [
        ("index.html", ["text/html"]),
        ("style.css", ["text/css"]),
        ("app.js", ["text/javascript", "application/javascript"]),
        ("data.json", ["application/json"]),
        ("image.png", ["image/png"]),
        ("pic.svg", ["image/svg+xml"]),
        ("page.txt", ["text/plain"]),
        ("noext", ["application/octet-stream"]),
    ],
)
def test_mime_types(d, name, types):
    r = assert_valid(http_get(d.ports["WEB"], "/" + name), 200)
    assert ctype(r) in types, f"{name}: {r.header('Content-Type')!r}"
    assert r.body == FILES[name]
    assert r.header("Content-Length") == str(len(FILES[name]))


def test_head_on_a_file(d):
    port = d.ports["WEB"]
    with HttpConn(port) as c:
        g = assert_valid(c.exchange("GET", "/page.txt"), 200)
        h = assert_valid(c.exchange("HEAD", "/page.txt"), 200)
        assert h.body == b"" and h.header("Content-Length") == str(len(FILES["page.txt"]))
        for name in ("Content-Type", "ETag", "Last-Modified", "Accept-Ranges"):
            assert h.header(name) == g.header(name), name
        assert c.exchange("GET", "/style.css").body == FILES["style.css"]


# ---- conditional requests ------------------------------------------------------------------


def test_etag_and_if_none_match(d, site):
    port = d.ports["WEB"]
    with HttpConn(port) as c:
        r = assert_valid(c.exchange("GET", "/page.txt"), 200)
        etag = r.header("ETag")
        st = os.stat(site / "page.txt")  # a strong tag: inode, mtime in ns and size, in hex
        assert etag == f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"', r
        r = c.exchange("GET", "/page.txt", headers={"If-None-Match": etag})
        assert_valid(r, 304)
        assert r.body == b"" and r.header("ETag") == etag, r
        r = c.exchange("GET", "/page.txt", headers={"If-None-Match": f'"nope", {etag}'})
        assert r.status == 304, r
        r = c.exchange("GET", "/page.txt", headers={"If-None-Match": '"something-else"'})
        assert r.status == 200 and r.body == FILES["page.txt"], r
        # the connection is fine after a 304
        assert c.exchange("GET", "/style.css").status == 200
    # a changed file has a new ETag
    time.sleep(0.01)
    (site / "page.txt").write_bytes(b"changed content, longer than before " * 40)
    r = http_get(port, "/page.txt", headers={"If-None-Match": etag})
    assert r.status == 200 and r.body.startswith(b"changed content"), r
    assert r.header("ETag") != etag


def test_last_modified_and_if_modified_since(d, site):
    port = d.ports["WEB"]
    mtime = int((site / "page.txt").stat().st_mtime)
    r = assert_valid(http_get(port, "/page.txt"), 200)
    lm = r.header("Last-Modified")
    assert lm == email.utils.formatdate(mtime, usegmt=True), f"Last-Modified {lm!r} vs mtime {mtime}"
    r = http_get(port, "/page.txt", headers={"If-Modified-Since": lm})
    assert_valid(r, 304)
    assert r.body == b""
    later = email.utils.formatdate(mtime + 3600, usegmt=True)
    assert http_get(port, "/page.txt", headers={"If-Modified-Since": later}).status == 304
    earlier = email.utils.formatdate(mtime - 3600, usegmt=True)
    r = http_get(port, "/page.txt", headers={"If-Modified-Since": earlier})
    assert r.status == 200 and r.body == FILES["page.txt"], r
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2)
    r = http_get(port, "/page.txt", headers={"If-None-Match": '"other"', "If-Modified-Since": lm})
    assert r.status == 200, r
    # an unparsable date is ignored
    r = http_get(port, "/page.txt", headers={"If-Modified-Since": "yesterday-ish"})
    assert r.status == 200, r


# ---- ranges --------------------------------------------------------------------------------


def test_single_range_206(d):
    port = d.ports["WEB"]
    data = FILES["page.txt"]
    n = len(data)
    r = assert_valid(http_get(port, "/page.txt"), 200)
    assert r.header("Accept-Ranges") == "bytes", r
    cases = [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, n - 1),
        ("bytes=-50", n - 50, n - 1),
        ("bytes=990-5000", 990, n - 1),  # end past the size is clamped
        ("bytes=5-5", 5, 5),
    ]
    with HttpConn(port) as c:
        for rng, a, b in cases:
            r = assert_valid(c.exchange("GET", "/page.txt", headers={"Range": rng}), 206)
            assert r.header("Content-Range") == f"bytes {a}-{b}/{n}", f"{rng}: {r!r}"
            assert r.header("Content-Length") == str(b - a + 1)
            assert r.body == data[a : b + 1], rng
    c = curl_response(["-r", "10-19", url(d, "/page.txt")])
    assert c.status == 206 and c.body == data[10:20], c


def test_if_range(d, site):
    port = d.ports["WEB"]
    data = FILES["page.txt"]
    r = http_get(port, "/page.txt")
    etag, lm = r.header("ETag"), r.header("Last-Modified")
    r = assert_valid(http_get(port, "/page.txt", headers={"Range": "bytes=0-9", "If-Range": etag}), 206)
    assert r.body == data[:10]
    r = assert_valid(http_get(port, "/page.txt", headers={"Range": "bytes=0-9", "If-Range": lm}), 206)
    assert r.body == data[:10]
    # a validator that no longer matches: the whole (current) file
    r = assert_valid(http_get(port, "/page.txt", headers={"Range": "bytes=0-9", "If-Range": '"stale"'}), 200)
    assert r.body == data
    old = email.utils.formatdate(time.time() - 86400 * 30, usegmt=True)
    r = assert_valid(http_get(port, "/page.txt", headers={"Range": "bytes=0-9", "If-Range": old}), 200)
    assert r.body == data


def test_range_416(d):
    port = d.ports["WEB"]
    n = len(FILES["page.txt"])
    for rng in (f"bytes={n}-", f"bytes={n + 10}-{n + 20}"):
        r = http_get(port, "/page.txt", headers={"Range": rng})
        assert_small_error(r, 416)
        assert r.header("Content-Range") == f"bytes */{n}", f"{rng}: {r!r}"
    # a Range that is not understood is ignored
    r = http_get(port, "/page.txt", headers={"Range": "items=0-5"})
    assert r.status == 200 and r.body == FILES["page.txt"], r


def test_range_on_a_large_file(d, big):
    port = d.ports["WEB"]
    a = 5_000_000
    r = assert_valid(http_get(port, "/big.bin", headers={"Range": f"bytes={a}-{a + 99999}"}), 206)
    assert r.body == big[a : a + 100000]
    assert r.header("Content-Range") == f"bytes {a}-{a + 99999}/{len(big)}"


def test_prefix_route_strips_the_prefix(d):
    port = d.ports["WEB"]
    r = assert_valid(http_get(port, "/static/page.txt"), 200)
    assert r.body == FILES["page.txt"]
    r = assert_valid(http_get(port, "/static/sub/page.txt"), 200)
    assert r.body == FILES["sub/page.txt"]
    r = http_get(port, "/static/../secret.txt")
    assert r.status == 404 and SECRET not in r.body, r
    r = http_get(port, "/static/%2e%2e/%2e%2e/secret.txt")
    assert r.status == 404 and SECRET not in r.body, r


# ---- no escape from root --------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/sub/../../../../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%5csecret.txt",
        "/sub/..%2f..%2f..%2fsecret.txt",
        "/link_out",
        "/link_out_rel",
        "/linkdir/secret.txt",
        "/linkdir/",
    ],
)
def test_traversal_is_404(d, target):
    port = d.ports["WEB"]
    with HttpConn(port) as c:
        c.send(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        r = c.read_response()
    assert SECRET not in r.body, f"{target} served a file outside the root"
    assert_small_error(r, 404)
    assert http_get(port, "/page.txt").status == 200


def test_traversal_with_curl_path_as_is(d):
    p = subprocess.run(["curl", "-sS", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}",
                        url(d, "/../../secret.txt")], capture_output=True, timeout=20)
    assert p.stdout == b"404", p


# ---- big files and vanishing clients --------------------------------------------------------


def test_large_file_download(d, big, tmp_path):
    out = tmp_path / "dl.bin"
    p = subprocess.run(["curl", "-sS", "-o", str(out), "-w", "%{http_code}", url(d, "/big.bin")],
                       capture_output=True, timeout=40)
    assert p.returncode == 0 and p.stdout == b"200", p
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(big).digest()
    with HttpConn(d.ports["WEB"], timeout=20) as c:
        r = assert_valid(c.exchange("GET", "/big.bin", timeout=20), 200)
        assert r.header("Content-Length") == str(len(big))
        assert hashlib.sha256(r.body).digest() == hashlib.sha256(big).digest()
        assert c.exchange("GET", "/page.txt").body == FILES["page.txt"]


def test_client_vanishing_mid_response(d, big):
    port = d.ports["WEB"]
    for i in range(8):
        c = HttpConn(port, rcvbuf=16384)
        c.request("GET", "/big.bin")
        c.read_head()
        got = c.read_available(0.05)
        assert got, "no body bytes came"
        if i % 2:
            c.reset()  # RST
        else:
            c.close()  # FIN with unread data
    # a reader in parallel, started while those went away, gets the whole file
    with HttpConn(port, timeout=20) as good:
        good.request("GET", "/big.bin")
        for i in range(4):
            c = HttpConn(port, rcvbuf=16384)
            c.request("GET", "/big.bin")
            c.read_available(0.05)
            c.reset()
        r = good.read_response(timeout=20)
        assert r.status == 200 and len(r.body) == len(big)
        assert hashlib.sha256(r.body).digest() == hashlib.sha256(big).digest()
    assert d.alive()
    r = assert_valid(http_get(port, "/page.txt"), 200)
    assert r.body == FILES["page.txt"]
