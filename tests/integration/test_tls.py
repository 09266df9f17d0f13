# SPDX-License-Identifier: MIT
"""TLS on TCP and HTTP listeners (README "TLS") from
real clients on loopback: ``openssl s_client``, ``curl``, Python's ``ssl``
sockets and python3-websockets over an ``ssl.SSLContext``. Certificates come
from the ``pki`` session fixture (tls_util.py: a test CA, server certificates
for localhost, a.test, b.test, *.wild.test, one behind an intermediate, an
expired one, a client certificate and a self-signed impostor, ...).

Covered:
- ``-t``: a full tls block is valid; a missing or non-PEM certificate, an
  unreadable key (as nobody when run as root), a key that does not match
  its certificate (also in an sni entry), unusable cipher lists and an
  unknown min_version are errors at FILE:LINE:COL of the value; an expired
  certificate is a warning there;
- the TCP line protocol over TLS answers exactly as a plain listener
  (replies, errors, pipelining, a message split over records), in bulk
  (20,000 pipelined lines), through ``s_client``, and an error close
  (line too long) delivers the error then close_notify;
- HTTPS: curl with the test CA (and refusing without it), keep-alive, an
  orderly ``Connection: close``, ALPN, 1 MB bodies both ways (also to a slow
  reader), a certificate chain; cipher settings;
- WSS on the HTTPS port with HTTPS routes alongside, backpressure through
  the TLS relay, a client that resets;
- SNI: exact and wildcard names, the default certificate otherwise;
- protocol versions: TLS 1.1 refused by default, 1.2 and 1.3 served,
  ``min_version: "1.3"`` refusing 1.2, ``"1.1"`` accepting 1.1;
- client certificates: required (refused without, or from an unknown CA)
  and optional; the exec handler's SSL_* variables over HTTP, TCP and WSS;
- limits: a connection over max_connections gets no plain-text error;
- the handshake timeout (silent client, half a ClientHello, a ClientHello
  dribbled a byte at a time) and that it ends with the handshake; plain
  text and random bytes on a TLS port;
- reload: a renewed certificate (same path or a new one) seen by new
  clients while old connections keep working; a mismatched key refused
  with FILE:LINE:COL and the old certificate kept; a connection accepted
  before a reload handshaking after it; session tickets resumed, not across
  a reload (ticket key rotated) nor across listeners;
- SIGTERM with TLS connections open (WSS closed with 1001, exit 0);
- metrics: the ``tls`` objects of ``stats`` (handshakes, failures by
  reason), the tls_* fields and application byte counts of
  ``connections``, and the Prometheus series.
"""
import asyncio
import json
import os
import random
import re
import selectors
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time

import pytest
import websockets

from ctl_util import (  # noqa: F401  (ctl_daemon is a fixture)
    TUSKNETCTL,
    TUSKNETD,
    ctl_daemon,
    parse_prometheus,
    run_as,
    sample,
    wait_for,
)
from daemon_util import LineClient
from http_util import assert_valid, curl, curl_response, vanishing_ws_clients
from tls_util import (  # noqa: F401  (pki is a fixture)
    OPENSSL,
    CertKey,
    TlsClosed,
    TlsLineClient,
    cert_subject,
    client_hello,
    handshake_ok,
    https_conn,
    pki,
    s_client,
    s_client_subject,
    tls_connect,
    tls_context,
)

REASONS = ("timeout", "protocol_version", "no_shared_cipher", "no_client_certificate", "bad_client_certificate",
           "peer_alert", "not_tls", "eof", "other")

HEAD = """
[daemon]
log_level: "debug"
shutdown_timeout: "2s"

[limits]
idle_timeout: "30s"

[handlers]
echo   { type: "echo" }
ping   { type: "static" reply: "+PONG" }
health { type: "health" }
who    {
    type: "exec"
    command: ["sh", "-c", 'echo "who=$SSL_CLIENT_S_DN|$SSL_CLIENT_VERIFY|$SSL_PROTOCOL|$HTTPS"']
    timeout: "5s"
}
"""


# ---- config text -----------------------------------------------------------------


def _value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(json.dumps(str(x)) for x in v) + "]"
    return json.dumps(str(v))


def tls_block(cert, key=None, sni=None, **opts):
    """A `tls { ... }` block (indented for a listener). CERT is a CertKey (or
    a path, then KEY is the key's path); SNI maps names to CertKeys; OPTS
    are further keys (strings, bools, lists)."""
    if key is None:
        cert, key = cert.cert, cert.key
    lines = ["    tls {", f'        cert: "{cert}"', f'        key: "{key}"']
    for k, v in opts.items():
        lines.append(f"        {k}: {_value(v)}")
    if sni:
        lines.append("        sni {")
        for name, ck in sni.items():
            lines.append(f'            "{name}": {{ cert: "{ck.cert}" key: "{ck.key}" }}')
        lines.append("        }")
    lines.append("    }")
    return "\n".join(lines)


def tcp_listener(name, tls=None, extra="", handshake_timeout="1s"):
    body = [f"{name} {{", '    protocol: "tcp"', '    listen: "127.0.0.1:0"',
            '    handlers: ["echo", "ping", "who"]', f'    handshake_timeout: "{handshake_timeout}"']
    if extra:
        body.append(extra)
    if tls:
        body.append(tls)
    body.append("}")
    return "\n".join(body) + "\n"


def http_listener(name, tls=None, extra="", handshake_timeout="1s"):
    body = [f"{name} {{", '    protocol: "http"', '    listen: "127.0.0.1:0"',
            f'    handshake_timeout: "{handshake_timeout}"',
            "    routes {", '        "GET /health": "health"', '        "GET /whoami": "who"',
            '        "POST /echo": "echo"', "    }", '    websocket { "/ws": "echo"  "/who": "who" }']
    if extra:
        body.append(extra)
    if tls:
        body.append(tls)
    body.append("}")
    return "\n".join(body) + "\n"


def config(*listeners):
    return HEAD + "\n[listeners]\n" + "".join(listeners)


def standard(pki, web_opts=None, lines_opts=None):
    """plain (tcp), lines (tcp over TLS), web (HTTPS with SNI for a.test/b.test)."""
    return config(
        tcp_listener("plain"),
        tcp_listener("lines", tls_block(pki.localhost, **(lines_opts or {}))),
        http_listener("web", tls_block(pki.localhost, sni={"a.test": pki.a, "b.test": pki.b}, **(web_opts or {}))),
    )


# ---- helpers ---------------------------------------------------------------------


def first_position(text, needle):
    """(line, col), 1-based, of NEEDLE in TEXT."""
    idx = text.index(needle)
    line = text.count("\n", 0, idx) + 1
    col = idx - (text.rfind("\n", 0, idx) + 1) + 1
    return line, col


def check_t(path, as_user=None):
    """`tusknetd -t -c PATH` (as (uid, gid) AS_USER if given): (exit code, stderr+stdout lines)."""
    argv = [TUSKNETD, "-t", "-c", str(path)]
    if as_user:
        r = run_as(as_user[0], as_user[1], [], argv)
    else:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=15, env=dict(os.environ, LC_ALL="C"))
    return r.returncode, (r.stderr + r.stdout).splitlines()


def failed_check(text, path, mode=None, as_user=None):
    """Writes TEXT to PATH and runs `tusknetd -t` on it, which must fail:
    (its FILE:LINE:COL diagnostics, all its output lines)."""
    with open(path, "w") as f:
        f.write(text)
    if mode is not None:
        os.chmod(path, mode)
    rc, out = check_t(path, as_user=as_user)
    assert rc == 1, out
    return [l for l in out if l.startswith(f"{path}:")], out


def at(path, text, needle):
    """The "FILE:LINE:COL: " prefix of a diagnostic about NEEDLE in TEXT."""
    ln, col = first_position(text, needle)
    return f"{path}:{ln}:{col}: "


def tls_stats(d, listener=None):
    """The `tls` object of a listener's stats (or of the global object)."""
    s = d.stats()
    obj = s["global"] if listener is None else s["listeners"][listener]
    assert set(obj["tls"]) == {"handshakes", "handshake_failures"}, obj
    return obj["tls"]


def failures(t, reason):
    return t["handshake_failures"].get(reason, 0)


def wait_tls(d, listener, pred, timeout=3.0, what="the tls stats to change"):
    """Polls the listener's tls stats until PRED(tls) holds; returns them."""
    return wait_for(lambda: (lambda t: t if pred(t) else None)(tls_stats(d, listener)), timeout, what=what)


def wait_failure(d, listener, reason, before, n=1, timeout=3.0):
    """Waits until LISTENER's failures for REASON are BEFORE's + N; asserts exactly that."""
    want = failures(before, reason) + n
    try:
        t = wait_tls(d, listener, lambda t: failures(t, reason) >= want, timeout,
                     what=f"{listener} tls handshake_failures[{reason}] to reach {want}")
    except pytest.fail.Exception:
        t = tls_stats(d, listener)
        pytest.fail(f"{listener}: handshake_failures[{reason}] is {failures(t, reason)}, expected {want} "
                    f"(before {before['handshake_failures']}, now {t['handshake_failures']})")
    assert failures(t, reason) == want, (before, t)
    return t


# Where a refused client certificate shows: under TLS 1.2 the server checks it
# inside the handshake; under TLS 1.3 the client's side of the handshake is
# complete before the server has seen it, so the alert comes at the first read.
REFUSED_AT = {ssl.TLSVersion.TLSv1_2: "handshake", ssl.TLSVersion.TLSv1_3: "read"}


def refused(port, ctx, send=b"ping\n", server_hostname="127.0.0.1"):
    """Tries a TLS connection that the daemon should refuse. Returns how it
    was refused: "handshake" (the handshake failed), "read" (a TLS 1.3
    handshake completed on the client side but the first read failed) or
    "closed" (EOF without data); the bytes read if it was NOT refused."""
    try:
        s = tls_connect(port, ctx, server_hostname, timeout=3)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return "handshake"
    try:
        s.sendall(send)
        data = s.recv(1000)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return "read"
    except socket.timeout:
        return b"<no answer and no close within 3 s>"
    finally:
        s.close()
    return "closed" if data == b"" else data


def wait_closed(sock, timeout):
    """Reads a raw socket until it is closed. Returns (how, bytes received):
    how is "eof" (a FIN), "reset" (a RST) or None (still open after TIMEOUT)."""
    deadline = time.monotonic() + timeout
    got = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, got
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return None, got
        except ConnectionResetError:
            return "reset", got
        if not chunk:
            return "eof", got
        got += chunk


def https_get(port, ctx, path="/health", server_hostname="127.0.0.1"):
    with https_conn(port, ctx, server_hostname) as c:
        return c.exchange("GET", path)


class SClientLines:
    """`openssl s_client -quiet` as a line client: write lines to its stdin,
    read the daemon's lines from its stdout. QUIET=False: interactive
    s_client (session details on stdout; a line "K", "k" or "R" sends a key
    update or asks for renegotiation), read with wait_text()."""

    def __init__(self, port, *args, quiet=True):
        argv = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}"] + (["-quiet"] if quiet else [])
        self.proc = subprocess.Popen(argv + [str(a) for a in args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT if not quiet else subprocess.PIPE)
        self.buf = b""

    def wait_text(self, text, count=1, timeout=5.0):
        """Reads until TEXT (bytes) has appeared COUNT times in all output;
        returns the output so far (raises socket.timeout if it does not)."""
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            while self.buf.count(text) < count:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise socket.timeout(f"s_client: {text!r} x{count} not seen in {timeout}s: {self.buf[-2000:]!r}")
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise TlsClosed(f"s_client ended before {text!r} x{count}: {self.buf[-2000:]!r}")
                self.buf += chunk
        finally:
            sel.close()
        return self.buf

    def send(self, data):
        self.proc.stdin.write(data.encode() if isinstance(data, str) else data)
        self.proc.stdin.flush()

    def readlines(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            while self.buf.count(b"\n") < n:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise socket.timeout(f"s_client: {n} lines not read in {timeout}s; have {self.buf!r}, "
                                         f"stderr {self._stderr()!r}")
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise TlsClosed(f"s_client ended; have {self.buf!r}, stderr {self._stderr()!r}")
                self.buf += chunk
        finally:
            sel.close()
        out = []
        for _ in range(n):
            line, _, self.buf = self.buf.partition(b"\n")
            out.append(line.decode(errors="replace"))
        return out

    def _stderr(self):
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")[-500:]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if f:
                    f.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- -t ------------------------------------------------------------------------


def full_config(pki):
    return config(
        tcp_listener("lines", tls_block(pki.localhost, min_version="1.3", client_ca=pki.ca.cert,
                                        verify_client="optional", session_tickets=False, alpn=["tusk"])),
        http_listener("web", tls_block(pki.localhost, chain=pki.ca.cert, min_version="1.2",
                                       ciphers="ECDHE+AESGCM:ECDHE+CHACHA20",
                                       ciphersuites="TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384",
                                       alpn=["http/1.1"], client_ca=pki.ca.cert, verify_client="required",
                                       session_tickets=True, sni={"a.test": pki.a, "b.test": pki.b})),
    )


def test_check_valid_tls_config(pki, tmp_path):
    p = tmp_path / "t.conf"
    p.write_text(full_config(pki))
    rc, out = check_t(p)
    assert rc == 0, "\n".join(out)
    assert f"tusknetd: configuration {p} is valid" in out, out
    assert not [l for l in out if l.startswith(f"{p}:")], out


def test_check_missing_cert(pki, tmp_path):
    missing = tmp_path / "nope.crt"
    text = config(tcp_listener("lines", tls_block(missing, pki.localhost.key)))
    p = tmp_path / "t.conf"
    diag, out = failed_check(text, p)
    assert diag == [at(p, text, f'"{missing}"') + f"cannot read cert '{missing}': No such file or directory"], out


def test_check_cert_not_pem(pki, tmp_path):
    junk = tmp_path / "junk.crt"
    junk.write_text("this is not a certificate\n")
    text = config(http_listener("web", tls_block(junk, pki.localhost.key)))
    p = tmp_path / "t.conf"
    diag, out = failed_check(text, p)
    assert diag and diag[0].startswith(at(p, text, f'"{junk}"')) and str(junk) in diag[0], out


def test_check_missing_sni_cert(pki, tmp_path):
    missing = tmp_path / "gone-a.crt"
    text = config(tcp_listener("lines", tls_block(pki.localhost, sni={"a.test": CertKey(missing, pki.a.key)})))
    p = tmp_path / "t.conf"
    diag, out = failed_check(text, p)
    assert diag and diag[0].startswith(at(p, text, f'"{missing}"')) and str(missing) in diag[0], out


def test_check_unreadable_key(pki, tmp_path):
    """chmod 000 on the key. Root reads anything, so as root the check runs
    as nobody (65534) on copies in a world-readable directory."""
    root = os.geteuid() == 0
    base = tempfile.mkdtemp(prefix="tntls-") if root else str(tmp_path)
    try:
        os.chmod(base, 0o755)
        cert = os.path.join(base, "server.crt")
        key = os.path.join(base, "server.key")
        shutil.copy(pki.localhost.cert, cert)
        shutil.copy(pki.localhost.key, key)
        os.chmod(cert, 0o644)
        os.chmod(key, 0o000)
        text = config(tcp_listener("lines", tls_block(cert, key)))
        p = os.path.join(base, "t.conf")
        diag, out = failed_check(text, p, mode=0o644, as_user=(65534, 65534) if root else None)
        assert diag and diag[0].startswith(at(p, text, f'"{key}"')), out
        assert key in diag[0] and "Permission denied" in diag[0], diag
    finally:
        if root:
            shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("where", ["listener", "sni"])
def test_check_key_does_not_match(pki, tmp_path, where):
    if where == "listener":
        bad = CertKey(pki.localhost.cert, pki.other_key)
        text = config(tcp_listener("lines", tls_block(bad)))
    else:
        bad = CertKey(pki.a.cert, pki.b.key)
        text = config(http_listener("web", tls_block(pki.localhost, sni={"a.test": bad})))
    p = tmp_path / "t.conf"
    diag, out = failed_check(text, p)
    # at the key's value: the key is what does not fit the certificate
    assert diag == [at(p, text, f'"{bad.key}"') + f"private key {bad.key} does not match certificate {bad.cert}"], out


def test_check_unknown_min_version(pki, tmp_path):
    text = config(tcp_listener("lines", tls_block(pki.localhost, min_version="1.5")))
    p = tmp_path / "t.conf"
    diag, out = failed_check(text, p)
    assert diag == [at(p, text, '"1.5"') + "unknown min_version '1.5' (expected one of: 1.0, 1.1, 1.2, 1.3); "
                    "did you mean '1.0'?"], out


def test_check_unusable_ciphers(pki, tmp_path):
    text = config(tcp_listener("lines", tls_block(pki.localhost, ciphers="NO-SUCH-CIPHER",
                                                  ciphersuites="TLS_NO_SUCH_SUITE")))
    p = tmp_path / "t.conf"
    diag, out = failed_check(text, p)
    assert diag == [at(p, text, '"NO-SUCH-CIPHER"') + "no usable cipher in 'NO-SUCH-CIPHER': no cipher match",
                    at(p, text, '"TLS_NO_SUCH_SUITE"')
                    + "no usable TLS 1.3 cipher suite in 'TLS_NO_SUCH_SUITE': no cipher match"], out


def test_check_expired_cert_warns(pki, tmp_path):
    text = config(tcp_listener("lines", tls_block(pki.expired)))
    p = tmp_path / "t.conf"
    p.write_text(text)
    rc, out = check_t(p)
    ln, col = first_position(text, f'"{pki.expired.cert}"')
    assert rc == 0, out
    assert f"tusknetd: configuration {p} is valid" in out, out
    warn = [l for l in out if l.startswith(f"{p}:")]
    assert len(warn) == 1 and warn[0].startswith(f"{p}:{ln}:{col}: ") and "expired" in warn[0], out


# ---- TCP lines over TLS -------------------------------------------------------------------


LINE_SEQUENCE = ["ping", "echo hi", "x", "echo a  b: c", "nope", "echo " + "z" * 3000]
PIPELINED = "echo one\nping\necho two\nwhat ever\necho three\n"


def test_tcp_lines_over_tls_match_plain(ctl_daemon, pki):
    d = ctl_daemon(standard(pki))
    ctx = tls_context(pki)
    answers = {}
    with LineClient(d.port("plain")) as plain, TlsLineClient(d.port("lines"), ctx) as tls:
        for name, c in (("plain", plain), ("tls", tls)):
            got = [c.request(m) for m in LINE_SEQUENCE]
            c.send(PIPELINED)
            got += c.readlines(5)
            # one message split over several TLS records / writes
            c.send("ec")
            time.sleep(0.05)
            c.send("ho spl")
            time.sleep(0.05)
            c.send("it\n")
            got.append(c.readline())
            answers[name] = got
    assert answers["plain"][:5] == ["+PONG", "hi", "Unknown handler: x", "a  b: c", "Unknown handler: nope"]
    assert answers["tls"] == answers["plain"]
    assert answers["tls"][-6:] == ["one", "+PONG", "two", "Unknown handler: what", "three", "split"]


def test_tcp_bulk_pipelined_over_tls(ctl_daemon, pki):
    """Many lines in few large TLS records (more plaintext buffered inside
    OpenSSL at once than one read takes): every reply, in order."""
    d = ctl_daemon(standard(pki))
    lines = [f"echo line {i} " + "p" * (i % 50) for i in range(20000)]
    # 16 KB (one full record) first, then ~100 KB writes, at line boundaries;
    # the replies to each write are read before the next (no reader thread:
    # an SSL object is not for two threads at once)
    chunks, cur, size = [], [], 0
    for line in lines:
        cur.append(line)
        size += len(line) + 1
        if size >= (16000 if not chunks else 100_000):
            chunks.append(cur)
            cur, size = [], 0
    chunks.append(cur)
    with TlsLineClient(d.port("lines"), tls_context(pki), timeout=20) as c:
        for chunk in chunks:
            c.send("".join(l + "\n" for l in chunk))
            assert c.readlines(len(chunk), timeout=10) == [l[5:] for l in chunk]
        assert c.request("ping") == "+PONG"


def test_tcp_error_close_over_tls(ctl_daemon, pki):
    """A line over max_line gets its error reply, intact, before the close;
    the close is an orderly TLS close (close_notify), not a truncation."""
    d = ctl_daemon(config(tcp_listener("lines", tls_block(pki.localhost), extra='    max_line: "1KB"')))
    raw = socket.create_connection(("127.0.0.1", d.port("lines")), timeout=5)
    s = tls_context(pki).wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False)
    try:
        s.sendall(b"echo ok\n")
        s.sendall(b"echo " + b"x" * 3000 + b"\n")
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ssl.SSLEOFError:
                pytest.fail(f"the daemon closed without close_notify after {data!r}")
            if not chunk:
                break
            data += chunk
        assert data == b"ok\nError: line too long\n", data
    finally:
        s.close()


def test_tcp_lines_with_s_client(ctl_daemon, pki):
    d = ctl_daemon(standard(pki))
    with SClientLines(d.port("lines"), "-CAfile", pki.ca.cert, "-verify_return_error") as s:
        s.send("ping\necho hi\n")
        assert s.readlines(2) == ["+PONG", "hi"]
        s.send("x y\n")
        assert s.readlines(1) == ["Unknown handler: x"]


# ---- HTTPS --------------------------------------------------------------------------------


def test_https_with_curl(ctl_daemon, pki):
    d = ctl_daemon(standard(pki))
    port = d.port("web")
    r = assert_valid(curl_response(["--cacert", pki.ca.cert, f"https://127.0.0.1:{port}/health"]), 200)
    body = json.loads(r.body)
    assert body["status"] == "healthy", body
    # by name, through --resolve: hostname verification against DNS:localhost
    r = curl_response(["--cacert", pki.ca.cert, "--resolve", f"localhost:{port}:127.0.0.1",
                       f"https://localhost:{port}/health"])
    assert r.status == 200
    # without the CA, curl refuses the certificate (the daemon really serves the test cert)
    before = tls_stats(d, "web")
    p = curl([f"https://127.0.0.1:{port}/health"])
    assert p.returncode == 60, p
    wait_failure(d, "web", "peer_alert", before)


def test_https_keep_alive(ctl_daemon, pki):
    d = ctl_daemon(standard(pki))
    port = d.port("web")
    before = d.stats()["listeners"]["web"]["total_connections"]
    with https_conn(port, tls_context(pki)) as c:
        for i in range(3):
            assert_valid(c.exchange("GET", "/health"), 200)
            r = assert_valid(c.exchange("POST", "/echo", body=f"n{i}".encode()), 200)
            assert r.body == f"n{i}".encode()
    assert d.stats()["listeners"]["web"]["total_connections"] == before + 1
    # curl: two URLs, one connection
    p = subprocess.run(["curl", "-sS", "--cacert", str(pki.ca.cert), "-o", "/dev/null", "-o", "/dev/null",
                        "-w", "%{http_code} %{num_connects}\n", f"https://127.0.0.1:{port}/health",
                        f"https://127.0.0.1:{port}/health"], capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:2] == ["200 1", "200 0"], p.stdout


def test_https_connection_close_is_orderly(ctl_daemon, pki):
    """`Connection: close`: the whole response, then close_notify."""
    d = ctl_daemon(standard(pki))
    raw = socket.create_connection(("127.0.0.1", d.port("web")), timeout=5)
    s = tls_context(pki).wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False)
    try:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ssl.SSLEOFError:
                pytest.fail(f"the daemon closed without close_notify after {data!r}")
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), data
        assert json.loads(body)["status"] == "healthy"
    finally:
        s.close()


def test_alpn(ctl_daemon, pki):
    d = ctl_daemon(config(
        http_listener("web", tls_block(pki.localhost)),
        tcp_listener("lines", tls_block(pki.localhost)),
        tcp_listener("tusk", tls_block(pki.localhost, alpn=["tusk/1"])),
    ))
    r = s_client(d.port("web"), "-alpn", "http/1.1", "-CAfile", pki.ca.cert)
    assert handshake_ok(r.out), r.out
    assert "ALPN protocol: http/1.1" in r.out, r.out
    # h2 offered first: an HTTP/1.1 server must pick http/1.1, not h2
    with tls_connect(d.port("web"), tls_context(pki, alpn=["h2", "http/1.1"])) as s:
        assert s.selected_alpn_protocol() == "http/1.1"
    # a client offering only protocols the listener does not speak continues without ALPN
    with https_conn(d.port("web"), tls_context(pki, alpn=["h2"])) as c:
        assert c.sock.selected_alpn_protocol() is None
        assert c.exchange("GET", "/health").status == 200
    # a configured protocol on a TCP listener
    with tls_connect(d.port("tusk"), tls_context(pki, alpn=["other", "tusk/1"])) as s:
        assert s.selected_alpn_protocol() == "tusk/1"
    # a TCP listener without alpn negotiates none (and still serves)
    with tls_connect(d.port("lines"), tls_context(pki, alpn=["h2", "http/1.1"])) as s:
        assert s.selected_alpn_protocol() is None


def test_large_bodies_round_trip(ctl_daemon, pki, tmp_path):
    d = ctl_daemon(standard(pki))
    port = d.port("web")
    big = random.Random(1).randbytes(1024 * 1024)
    with https_conn(port, tls_context(pki), timeout=15) as c:
        r = assert_valid(c.exchange("POST", "/echo", body=big), 200)
        assert len(r.body) == len(big) and r.body == big
        # and again on the same connection
        r = assert_valid(c.exchange("POST", "/echo", body=big[::-1]), 200)
        assert r.body == big[::-1]
    # a slow reader: the daemon's TLS writes stall and resume many times
    with https_conn(port, tls_context(pki), timeout=20, rcvbuf=16384) as c:
        c.request("POST", "/echo", body=big)
        time.sleep(0.5)
        r = c.read_response(timeout=20)
        assert r.status == 200 and r.body == big
        assert c.exchange("GET", "/health").status == 200
    f = tmp_path / "big.bin"
    f.write_bytes(big)
    out = tmp_path / "out.bin"
    p = subprocess.run(["curl", "-sS", "--cacert", str(pki.ca.cert), "--data-binary", f"@{f}", "-o", str(out),
                        "-w", "%{http_code}", f"https://127.0.0.1:{port}/echo"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout == "200", (p.stdout, p.stderr)
    assert out.read_bytes() == big


def test_certificate_chain(ctl_daemon, pki):
    """With `chain`, a client that trusts only the root verifies a leaf
    signed by an intermediate; without it, it cannot."""
    d = ctl_daemon(config(
        http_listener("web", tls_block(pki.chained, chain=pki.inter.cert)),
        http_listener("bare", tls_block(pki.chained)),
    ))
    r = assert_valid(https_get(d.port("web"), tls_context(pki)), 200)
    assert json.loads(r.body)["status"] == "healthy"
    r = s_client(d.port("web"), "-CAfile", pki.ca.cert, "-showcerts")
    assert "Verify return code: 0 (ok)" in r.out, r.out
    assert r.out.count("-----BEGIN CERTIFICATE-----") == 2, r.out
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(d.port("bare"), tls_context(pki))


# ---- WSS ----------------------------------------------------------------------------------


def test_wss_and_https_on_one_port(ctl_daemon, pki):
    d = ctl_daemon(standard(pki))
    port = d.port("web")
    ctx = tls_context(pki)
    big = os.urandom(100 * 1024)

    async def go():
        async with websockets.connect(f"wss://127.0.0.1:{port}/ws", ssl=ctx, max_size=None) as ws:
            await ws.send("hello over tls")
            assert await asyncio.wait_for(ws.recv(), 5) == "hello over tls"
            await ws.send(big)
            got = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(got, bytes) and got == big
            # HTTPS routes on the same port while the WebSocket is open
            r = await asyncio.to_thread(https_get, port, ctx)
            assert r.status == 200
            for i in range(20):
                await ws.send(f"msg {i} " + "x" * i * 100)
            for i in range(20):
                assert await asyncio.wait_for(ws.recv(), 5) == f"msg {i} " + "x" * i * 100
            await ws.ping()
            r = await asyncio.to_thread(https_get, port, ctx, "/health")
            assert r.status == 200
        # and after it closed
        r = await asyncio.to_thread(https_get, port, ctx)
        assert r.status == 200

    asyncio.run(asyncio.wait_for(go(), 30))

    # a plain ws:// client on the TLS port is closed at once, not served
    async def plain():
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5):
            pass

    # closed without an HTTP answer (a client left hanging would time out instead)
    with pytest.raises(websockets.exceptions.InvalidMessage) as e:
        asyncio.run(plain())
    assert str(e.value) == "did not receive a valid HTTP response", e.value


def test_wss_backpressure_and_abort(ctl_daemon, pki):
    """Echoes pile up while the client does not read (the relay between TLS
    and the WebSocket stalls both ways), then all arrive intact and in
    order; a WSS client that vanishes with a reset leaves nothing behind."""
    d = ctl_daemon(standard(pki))
    port = d.port("web")
    ctx = tls_context(pki)
    msgs = [bytes([i]) * 1000 + os.urandom(199_000) for i in range(40)]  # 8 MB

    async def go():
        # small socket buffers, so that the daemon's buffers are what fills
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        async with websockets.connect(f"wss://127.0.0.1:{port}/ws", sock=sock, ssl=ctx, server_hostname="127.0.0.1",
                                      max_size=None, max_queue=2, compression=None) as ws:
            async def send_all():
                for m in msgs:
                    await ws.send(m)

            sender = asyncio.create_task(send_all())
            # nothing read for a second: the buffers on the way fill and push
            # back (how many messages that takes depends on how far the
            # kernel grows the daemon's receive buffer; ~17 here in release)
            await asyncio.sleep(1.0)
            for i, m in enumerate(msgs):
                got = await asyncio.wait_for(ws.recv(), 15)
                assert got == m, f"message {i} differs ({len(got)} bytes)"
            await asyncio.wait_for(sender, 5)
            await ws.send("done")
            assert await asyncio.wait_for(ws.recv(), 5) == "done"

    asyncio.run(asyncio.wait_for(go(), 40))

    # a client that resets mid-stream
    wait_for(lambda: not d.ctl("connections")["connections"], 3, what="the first WSS connection to be gone")

    async def abort():
        ws = await websockets.connect(f"wss://127.0.0.1:{port}/ws", ssl=ctx)
        await ws.send("x" * 100_000)
        sock = ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ws.transport.abort()

    asyncio.run(asyncio.wait_for(abort(), 10))
    wait_for(lambda: not d.ctl("connections")["connections"], 3,
             what="the reset WSS connection to be gone from `connections`")
    assert d.alive()
    assert https_get(port, ctx).status == 200


def test_wss_many_clients_vanishing(ctl_daemon, pki):
    """60 WSS clients at once send up to 1 MB per message, some without reading,
    some vanishing mid-exchange, some dropping right after the upgrade
    request: every relay ends, nothing is left in `connections`, and the
    daemon keeps serving."""
    # 80 Python TLS clients at once can take over a second to send their
    # ClientHellos on a busy machine: the 1 s handshake_timeout of the other
    # tests would cut off clients that do nothing wrong
    d = ctl_daemon(config(http_listener("web", tls_block(pki.localhost), handshake_timeout="10s")))
    port = d.port("web")
    ctx = tls_context(pki)

    async def go():
        await vanishing_ws_clients(f"wss://127.0.0.1:{port}/ws", port, "/ws", seed=5, ssl=ctx)

    asyncio.run(asyncio.wait_for(go(), 60))
    wait_for(lambda: not d.ctl("connections")["connections"], 10, what="every WSS connection to be gone")
    assert d.alive()
    assert https_get(port, ctx).status == 200


# ---- SNI ----------------------------------------------------------------------------------


def test_sni_selects_certificate(ctl_daemon, pki):
    d = ctl_daemon(config(http_listener("web", tls_block(pki.localhost, sni={"a.test": pki.a, "b.test": pki.b,
                                                                              "*.wild.test": pki.wild}))))
    port = d.port("web")
    cases = [
        (["-servername", "a.test"], pki.a.cert),
        (["-servername", "A.Test"], pki.a.cert),
        (["-servername", "b.test"], pki.b.cert),
        (["-servername", "x.wild.test"], pki.wild.cert),
        (["-servername", "y.x.wild.test"], pki.localhost.cert),
        (["-servername", "wild.test"], pki.localhost.cert),
        (["-servername", "c.test"], pki.localhost.cert),
        (["-servername", "localhost"], pki.localhost.cert),
        (["-noservername"], pki.localhost.cert),
    ]
    for args, want in cases:
        r = s_client(port, *args, "-CAfile", pki.ca.cert)
        assert handshake_ok(r.out), (args, r.out)
        assert s_client_subject(r.out) == cert_subject(want), (args, r.out)
    # python: the exact certificate
    for name, want in (("a.test", pki.a), ("b.test", pki.b), (None, pki.localhost)):
        ctx = tls_context(pki, hostname_check=False)
        with tls_connect(port, ctx, server_hostname=name) as s:
            assert s.getpeercert(binary_form=True) == want.der(), name
    # curl verifies the name against the certificate it got
    for name in ("a.test", "b.test", "www.wild.test"):
        r = curl_response(["--cacert", pki.ca.cert, "--resolve", f"{name}:{port}:127.0.0.1",
                           f"https://{name}:{port}/health"])
        assert r.status == 200, name
    p = curl(["--cacert", pki.ca.cert, "--resolve", f"c.test:{port}:127.0.0.1", f"https://c.test:{port}/health"])
    assert p.returncode == 60, p  # the default (localhost) certificate does not name c.test


# ---- protocol versions -------------------------------------------------------------------


def test_tls_versions_default(ctl_daemon, pki):
    d = ctl_daemon(standard(pki))
    port = d.port("web")
    before = tls_stats(d, "web")
    r = s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", pki.ca.cert)
    assert not handshake_ok(r.out), r.out
    assert r.returncode != 0
    wait_failure(d, "web", "protocol_version", before)
    for flag, version in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        r = s_client(port, flag, "-CAfile", pki.ca.cert)
        assert handshake_ok(r.out), r.out
        assert f"New, {version}, Cipher is" in r.out, r.out
    with tls_connect(port, tls_context(pki, max_version=ssl.TLSVersion.TLSv1_2)) as s:
        assert s.version() == "TLSv1.2"
    assert d.alive()
    assert https_get(port, tls_context(pki)).status == 200


def test_min_version_1_3(ctl_daemon, pki):
    d = ctl_daemon(standard(pki, web_opts={"min_version": "1.3"}, lines_opts={"min_version": "1.3"}))
    for name in ("web", "lines"):
        port = d.port(name)
        before = tls_stats(d, name)
        r = s_client(port, "-tls1_2", "-CAfile", pki.ca.cert)
        assert not handshake_ok(r.out), r.out
        wait_failure(d, name, "protocol_version", before)
        r = s_client(port, "-tls1_3", "-CAfile", pki.ca.cert)
        assert handshake_ok(r.out) and "TLSv1.3" in r.out, r.out
        assert refused(port, tls_context(pki, max_version=ssl.TLSVersion.TLSv1_2)) == "handshake"


def test_min_version_1_1_accepts_tls_1_1(ctl_daemon, pki):
    """min_version "1.1" must really serve TLS 1.1 (OpenSSL 3 refuses it at
    its default security level unless the server lowers it)."""
    d = ctl_daemon(standard(pki, lines_opts={"min_version": "1.1"}))
    with SClientLines(d.port("lines"), "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0") as s:
        s.send("ping\n")
        assert s.readlines(1) == ["+PONG"]
    # the listener without the override still refuses it
    r = s_client(d.port("web"), "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert not handshake_ok(r.out), r.out


def test_key_update_and_renegotiation(ctl_daemon, pki):
    """TLS 1.3 key updates (also asking the daemon to update its own keys)
    keep the session going; TLS 1.2 renegotiation is refused without harm."""
    d = ctl_daemon(standard(pki))
    port = d.port("lines")
    with SClientLines(port, "-tls1_3", "-CAfile", pki.ca.cert, quiet=False) as s:
        s.send("ping\n")
        s.wait_text(b"+PONG", 1)
        for i, cmd in enumerate(("K", "k", "K"), start=2):
            s.send(cmd + "\n")
            time.sleep(0.1)
            s.send("ping\n")
            out = s.wait_text(b"+PONG", i)
        assert out.count(b"KEYUPDATE") == 3, out[-2000:]
    with SClientLines(port, "-tls1_2", "-CAfile", pki.ca.cert, quiet=False) as s:
        s.send("ping\n")
        s.wait_text(b"+PONG", 1)
        s.send("R\n")
        s.wait_text(b"RENEGOTIATING", 1)
        time.sleep(0.3)
    assert d.alive()
    with TlsLineClient(port, tls_context(pki)) as c:
        assert c.request("ping") == "+PONG"


def test_cipher_settings(ctl_daemon, pki):
    d = ctl_daemon(config(tcp_listener("lines", tls_block(pki.localhost, ciphers="ECDHE-RSA-AES128-GCM-SHA256",
                                                          ciphersuites="TLS_CHACHA20_POLY1305_SHA256"))))
    port = d.port("lines")
    r = s_client(port, "-tls1_2", "-CAfile", pki.ca.cert)
    assert "New, TLSv1.2, Cipher is ECDHE-RSA-AES128-GCM-SHA256" in r.out, r.out
    r = s_client(port, "-tls1_3", "-CAfile", pki.ca.cert)
    assert "New, TLSv1.3, Cipher is TLS_CHACHA20_POLY1305_SHA256" in r.out, r.out
    before = tls_stats(d, "lines")
    r = s_client(port, "-tls1_2", "-cipher", "AES256-SHA", "-CAfile", pki.ca.cert)
    assert not handshake_ok(r.out), r.out
    wait_failure(d, "lines", "no_shared_cipher", before)
    with TlsLineClient(port, tls_context(pki)) as c:
        assert c.sock.cipher()[0] == "TLS_CHACHA20_POLY1305_SHA256"
        assert c.request("ping") == "+PONG"


# ---- client certificates -----------------------------------------------------------------


def mtls_config(pki, verify):
    opts = {"client_ca": pki.ca.cert, "verify_client": verify}
    return config(
        tcp_listener("plain"),
        tcp_listener("lines", tls_block(pki.localhost, **opts)),
        http_listener("web", tls_block(pki.localhost, **opts)),
    )


def parse_who(reply):
    """who=DN|VERIFY|PROTOCOL|HTTPS -> dict."""
    assert reply.startswith("who="), reply
    dn, verify, proto, https = reply[4:].rstrip("\n").split("|")
    return {"dn": dn, "verify": verify, "protocol": proto, "https": https}


def test_client_cert_required(ctl_daemon, pki):
    d = ctl_daemon(mtls_config(pki, "required"))
    web, lines = d.port("web"), d.port("lines")
    for name, port in (("web", web), ("lines", lines)):
        before = tls_stats(d, name)
        for maxv in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            how = refused(port, tls_context(pki, max_version=maxv),
                          send=b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" if name == "web" else b"ping\n")
            assert how == REFUSED_AT[maxv], f"{name} {maxv}: served without a client cert: {how!r}"
        wait_failure(d, name, "no_client_certificate", before, n=2)
    # curl without a certificate fails and prints no response
    p = curl(["--cacert", pki.ca.cert, f"https://127.0.0.1:{web}/health"])
    assert p.returncode != 0 and not p.stdout.startswith(b"HTTP/"), p
    # a certificate from a CA the daemon does not trust
    before = tls_stats(d, "lines")
    assert refused(lines, tls_context(pki, cert=pki.rogue)) == "read"  # TLS 1.3
    wait_failure(d, "lines", "bad_client_certificate", before)
    p = curl(["--cacert", pki.ca.cert, "--cert", pki.rogue.cert, "--key", pki.rogue.key,
              f"https://127.0.0.1:{web}/health"])
    assert p.returncode != 0 and not p.stdout.startswith(b"HTTP/"), p
    # with the client certificate
    r = curl_response(["--cacert", pki.ca.cert, "--cert", pki.client.cert, "--key", pki.client.key,
                       f"https://127.0.0.1:{web}/whoami"])
    assert r.status == 200, r
    who = parse_who(r.body.decode())
    assert who == {"dn": "CN=client,O=Tusk Test", "verify": "SUCCESS", "protocol": "TLSv1.3", "https": "on"}
    with TlsLineClient(lines, tls_context(pki, cert=pki.client)) as c:
        assert c.request("ping") == "+PONG"
        who = parse_who(c.request("who hello"))
        assert who["dn"] == "CN=client,O=Tusk Test" and who["verify"] == "SUCCESS", who
        assert who["protocol"] == c.sock.version(), who
    # the plain listener has no TLS variables
    with LineClient(d.port("plain")) as c:
        who = parse_who(c.request("who hello"))
        assert who["dn"] == "" and who["verify"] == "" and who["protocol"] == "", who
    assert d.alive()


def test_client_cert_optional(ctl_daemon, pki):
    d = ctl_daemon(mtls_config(pki, "optional"))
    web, lines = d.port("web"), d.port("lines")
    r = curl_response(["--cacert", pki.ca.cert, f"https://127.0.0.1:{web}/whoami"])
    who = parse_who(r.body.decode())
    assert who["dn"] == "" and who["verify"] == "NONE" and who["https"] == "on", who
    r = curl_response(["--cacert", pki.ca.cert, "--cert", pki.client.cert, "--key", pki.client.key,
                       f"https://127.0.0.1:{web}/whoami"])
    who = parse_who(r.body.decode())
    assert who["dn"] == "CN=client,O=Tusk Test" and who["verify"] == "SUCCESS", who
    with TlsLineClient(lines, tls_context(pki)) as c:
        who = parse_who(c.request("who"))
        assert who["verify"] == "NONE" and who["dn"] == "", who
    with TlsLineClient(lines, tls_context(pki, cert=pki.client)) as c:
        who = parse_who(c.request("who"))
        assert who["verify"] == "SUCCESS" and who["dn"] == "CN=client,O=Tusk Test", who

    # over WSS the handler sees the same session
    async def ws_who(cert):
        async with websockets.connect(f"wss://127.0.0.1:{web}/who", ssl=tls_context(pki, cert=cert)) as ws:
            await ws.send("hi")
            return parse_who(await asyncio.wait_for(ws.recv(), 5))

    who = asyncio.run(asyncio.wait_for(ws_who(pki.client), 15))
    assert who["dn"] == "CN=client,O=Tusk Test" and who["verify"] == "SUCCESS" and who["protocol"] == "TLSv1.3", who
    who = asyncio.run(asyncio.wait_for(ws_who(None), 15))
    assert who["dn"] == "" and who["verify"] == "NONE", who
    # an untrusted certificate is not accepted just because one is optional
    how = refused(lines, tls_context(pki, cert=pki.rogue), send=b"who\n")
    assert how == "read", f"an unverifiable client certificate was accepted: {how!r}"  # TLS 1.3


# ---- limits ------------------------------------------------------------------------------


def test_tls_listener_over_limit_sends_no_plain_text(ctl_daemon, pki):
    """A connection over max_connections on a TLS port is closed without the
    plain-text `Error:` line a plain listener sends (it would be garbage to
    a TLS client)."""
    d = ctl_daemon(config(tcp_listener("lines", tls_block(pki.localhost), extra="    max_connections: 1")))
    port = d.port("lines")
    with TlsLineClient(port, tls_context(pki)) as held:
        assert held.request("ping") == "+PONG"
        raw = socket.create_connection(("127.0.0.1", port))
        try:
            how, got = wait_closed(raw, 3)
        finally:
            raw.close()
        # closed at accept, without the plain-text line and without an alert
        assert (how, got) == ("eof", b""), "the connection over the limit was not just closed"
        assert refused(port, tls_context(pki)) == "handshake"  # closed at accept
        assert held.request("echo still") == "still"
    wait_for(lambda: d.listeners()["lines"]["active_connections"] == 0, 3, what="the held connection to end")
    with TlsLineClient(port, tls_context(pki)) as c:
        assert c.request("ping") == "+PONG"


# ---- handshake timeout -------------------------------------------------------------------


def test_handshake_timeout(ctl_daemon, pki):
    d = ctl_daemon(standard(pki))
    hello = client_hello()
    for name in ("web", "lines"):
        port = d.port(name)
        before = tls_stats(d, name)
        errors_before = d.stats()["listeners"][name]["timeout_errors"]
        silent = socket.create_connection(("127.0.0.1", port))
        half = socket.create_connection(("127.0.0.1", port))
        half.sendall(hello[:20])
        try:
            for what, s in (("silent", silent), ("half hello", half)):
                # handshake_timeout is 1s; 4 s only bounds the wait. Closed with
                # a FIN and nothing sent (no alert before a handshake).
                how, got = wait_closed(s, 4.0)
                assert (how, got) == ("eof", b""), f"{name}: {what} client: {how} {got[:100]!r}"
        finally:
            silent.close()
            half.close()
        wait_failure(d, name, "timeout", before, n=2)
        assert d.stats()["listeners"][name]["timeout_errors"] == errors_before + 2
    # the timeout ends with the handshake: an established TLS connection idles past it
    with TlsLineClient(d.port("lines"), tls_context(pki)) as c:
        assert c.request("ping") == "+PONG"
        time.sleep(1.3)
        assert c.request("echo still here") == "still here"
    with https_conn(d.port("web"), tls_context(pki)) as c:
        assert c.exchange("GET", "/health").status == 200
        time.sleep(1.3)
        assert c.exchange("GET", "/health").status == 200


def test_handshake_timeout_is_a_deadline(ctl_daemon, pki):
    """A client that dribbles its ClientHello a byte at a time is still cut
    off at handshake_timeout: the timeout bounds the whole handshake, it is
    not an inactivity timer."""
    d = ctl_daemon(standard(pki))
    hello = client_hello()
    port = d.port("lines")
    before = tls_stats(d, "lines")
    start = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port))
    closed_at = None
    try:
        for b in hello:
            try:
                s.sendall(bytes([b]))
            except (BrokenPipeError, ConnectionResetError):
                closed_at = time.monotonic() - start
                break
            how, _ = wait_closed(s, 0.3)
            if how is not None:
                closed_at = time.monotonic() - start
                break
            if time.monotonic() - start > 5:
                break
    finally:
        s.close()
    # an inactivity timer would never fire on a byte every 0.3 s: being cut off
    # within the 5 s the dribble lasts is what shows the deadline
    assert closed_at is not None, "a ClientHello sent a byte per 0.3 s kept the connection 5 s (handshake_timeout 1s)"
    wait_failure(d, "lines", "timeout", before)


# ---- garbage on a TLS port ---------------------------------------------------------------


def test_garbage_on_tls_port(ctl_daemon, pki):
    d = ctl_daemon(standard(pki))
    rnd = bytearray(random.Random(7).randbytes(4096))
    rnd[0] = 0x42  # not a handshake record (0x16) nor an SSLv2 hello (high bit)
    hello = client_hello()
    for name, plain_text in (("web", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ("lines", b"ping\n")):
        port = d.port(name)
        before = tls_stats(d, name)
        for data in (plain_text, bytes(rnd)):
            s = socket.create_connection(("127.0.0.1", port))
            try:
                s.sendall(data)
                how, got = wait_closed(s, 3.0)
            finally:
                s.close()
            # closed for the garbage, not by handshake_timeout: the not_tls
            # count below says which; nothing is sent back
            assert (how, got) == ("eof", b""), f"{name}: {how} {got[:200]!r} after {data[:20]!r}"
        wait_failure(d, name, "not_tls", before, n=2)
        # half a ClientHello, then the client goes away: eof
        before = tls_stats(d, name)
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(hello[:30])
        time.sleep(0.05)
        s.close()
        wait_failure(d, name, "eof", before)
        assert failures(tls_stats(d, name), "timeout") == failures(before, "timeout")
    assert d.alive()
    assert https_get(d.port("web"), tls_context(pki)).status == 200
    with TlsLineClient(d.port("lines"), tls_context(pki)) as c:
        assert c.request("ping") == "+PONG"
    with LineClient(d.port("plain")) as c:
        assert c.request("ping") == "+PONG"


# ---- reload -------------------------------------------------------------------------------


def do_reload(d, how):
    if how == "command":
        ans = d.ctl("reload")
        assert ans["ok"] is True, ans
    else:
        before = d.stats()
        s = d.reload_signal()
        assert s["reloads"] == before["reloads"] + 1, s


@pytest.mark.parametrize("how", ["command", "signal"])
@pytest.mark.parametrize("swap", ["same_path", "new_path"])
def test_reload_swaps_certificate(ctl_daemon, pki, tmp_path, how, swap):
    cur_crt, cur_key = tmp_path / "cur.crt", tmp_path / "cur.key"
    shutil.copy(pki.localhost.cert, cur_crt)
    shutil.copy(pki.localhost.key, cur_key)
    base = (standard(pki).replace(f'cert: "{pki.localhost.cert}"', f'cert: "{cur_crt}"')
            .replace(f'key: "{pki.localhost.key}"', f'key: "{cur_key}"'))
    d = ctl_daemon(base)
    ctx = tls_context(pki)
    old_http = https_conn(d.port("web"), ctx)
    old_line = TlsLineClient(d.port("lines"), ctx)
    try:
        assert old_http.exchange("GET", "/health").status == 200
        assert old_line.request("ping") == "+PONG"
        assert old_http.sock.getpeercert(binary_form=True) == pki.localhost.der()
        if swap == "same_path":
            # renewal: new files under the same names, config text unchanged
            for src, dst in ((pki.renewed.cert, cur_crt), (pki.renewed.key, cur_key)):
                tmp = dst.with_suffix(".new")
                shutil.copy(src, tmp)
                os.replace(tmp, dst)
        else:
            d.write_config(base.replace(str(cur_crt), str(pki.renewed.cert))
                           .replace(str(cur_key), str(pki.renewed.key)))
        do_reload(d, how)
        for name in ("web", "lines"):
            with tls_connect(d.port(name), ctx) as s:
                assert s.getpeercert(binary_form=True) == pki.renewed.der(), f"{name} still serves the old cert"
        r = s_client(d.port("web"), "-CAfile", pki.ca.cert)
        assert s_client_subject(r.out) == cert_subject(pki.renewed.cert), r.out
        # SNI certificates are untouched
        with tls_connect(d.port("web"), ctx, server_hostname="a.test") as s:
            assert s.getpeercert(binary_form=True) == pki.a.der()
        # the connections opened before keep working
        for i in range(3):
            assert old_http.exchange("GET", "/health").status == 200
            assert old_line.request(f"echo old {i}") == f"old {i}"
        assert old_http.sock.getpeercert(binary_form=True) == pki.localhost.der()
    finally:
        old_http.close()
        old_line.close()


def test_reload_adds_and_removes_tls(ctl_daemon, pki):
    """A kept listener that gains a tls block serves TLS to new clients while
    its plain connections go on; losing the block, the reverse."""
    plain_cfg = config(tcp_listener("lines"))
    tls_cfg = config(tcp_listener("lines", tls_block(pki.localhost)))
    d = ctl_daemon(plain_cfg)
    port = d.port("lines")
    with LineClient(port) as old_plain:
        assert old_plain.request("ping") == "+PONG"
        d.write_config(tls_cfg)
        assert d.ctl("reload")["ok"] is True
        assert d.port("lines") == port
        with TlsLineClient(port, tls_context(pki)) as new_tls:
            assert new_tls.request("ping") == "+PONG"
        with LineClient(port) as c:
            c.sendline("ping")
            data, closed = c.read_until_closed(3)
            assert (data, closed) == (b"", True)
        assert old_plain.request("echo plain still") == "plain still"
        with TlsLineClient(port, tls_context(pki)) as old_tls:
            assert old_tls.request("ping") == "+PONG"
            d.write_config(plain_cfg)
            assert d.ctl("reload")["ok"] is True
            with LineClient(port) as c:
                assert c.request("ping") == "+PONG"
            assert old_tls.request("echo tls still") == "tls still"
            assert old_plain.request("echo plain again") == "plain again"


def test_reload_with_mismatched_key_is_refused(ctl_daemon, pki, tmp_path):
    cur_crt, cur_key = tmp_path / "cur.crt", tmp_path / "cur.key"
    shutil.copy(pki.localhost.cert, cur_crt)
    shutil.copy(pki.localhost.key, cur_key)
    base = (standard(pki).replace(f'cert: "{pki.localhost.cert}"', f'cert: "{cur_crt}"')
            .replace(f'key: "{pki.localhost.key}"', f'key: "{cur_key}"'))
    d = ctl_daemon(base)
    ctx = tls_context(pki)
    with TlsLineClient(d.port("lines"), ctx) as old:
        assert old.request("ping") == "+PONG"
        # 1. the config names a key that does not match
        d.write_config(base.replace(f'key: "{cur_key}"', f'key: "{pki.other_key}"', 1))
        ans = d.ctl("reload")
        assert ans["ok"] is False, ans
        ln, col = first_position(d.config, f'"{pki.other_key}"')
        cln, ccol = first_position(d.config, f'"{cur_crt}"')
        assert (ans["error"].startswith(f"{d.config_path}:{ln}:{col}: ")
                or ans["error"].startswith(f"{d.config_path}:{cln}:{ccol}: ")), ans
        assert "does not match" in ans["error"], ans
        # 2. same config, but the key file at its path was replaced by a wrong one
        d.write_config(base)
        shutil.copy(pki.other_key, cur_key)
        ans = d.ctl("reload")
        assert ans["ok"] is False, ans
        assert "does not match" in ans["error"], ans
        assert d.stats()["reloads_refused"] == 2 and d.stats()["reloads_ok"] == 0
        # the old certificate keeps serving, old and new connections
        assert old.request("echo still") == "still"
        for name in ("web", "lines"):
            with tls_connect(d.port(name), ctx) as s:
                assert s.getpeercert(binary_form=True) == pki.localhost.der()
        assert https_get(d.port("web"), ctx).status == 200
        # fixed: the next reload works
        shutil.copy(pki.localhost.key, cur_key)
        assert d.ctl("reload")["ok"] is True


def test_handshake_across_reload(ctl_daemon, pki):
    """A connection accepted before a reload handshakes after it (after two
    reloads, so the contexts it was accepted with are no longer any
    listener's): it gets the configuration it was accepted with."""
    old = config(http_listener("web", tls_block(pki.localhost, sni={"a.test": pki.a}), handshake_timeout="5s"))
    d = ctl_daemon(old)
    port = d.port("web")
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        local = "%s:%d" % raw.getsockname()[:2]
        wait_for(lambda: d.connection_of(local) is not None, 3, what="the connection to be accepted")
        new = config(http_listener("web", tls_block(pki.renewed), handshake_timeout="5s"))
        d.write_config(new)
        assert d.ctl("reload")["ok"] is True
        d.write_config(new.replace('"5s"', '"4s"'))
        assert d.ctl("reload")["ok"] is True
        s = tls_context(pki).wrap_socket(raw, server_hostname="a.test")
        with https_conn(port, tls_context(pki), server_hostname="localhost") as fresh:
            assert fresh.sock.getpeercert(binary_form=True) == pki.renewed.der()
            assert fresh.exchange("GET", "/health").status == 200
        assert s.getpeercert(binary_form=True) == pki.a.der()
        s.sendall(b"GET /health HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 "), data
        # a new client asking for a.test now gets the default certificate
        with tls_connect(port, tls_context(pki, hostname_check=False), server_hostname="a.test") as t:
            assert t.getpeercert(binary_form=True) == pki.renewed.der()
    finally:
        raw.close()
    assert d.alive()


def test_shutdown_with_tls_connections(ctl_daemon, pki):
    """SIGTERM with TLS connections open (idle line, keep-alive HTTPS, WSS,
    one mid-handshake): WebSockets get 1001, everything closes, exit 0."""
    d = ctl_daemon(standard(pki))
    ctx = tls_context(pki)
    line = TlsLineClient(d.port("lines"), ctx)
    web = https_conn(d.port("web"), ctx)
    half = socket.create_connection(("127.0.0.1", d.port("lines")))
    try:
        assert line.request("ping") == "+PONG"
        assert web.exchange("GET", "/health").status == 200
        half.sendall(client_hello()[:20])

        async def go():
            async with websockets.connect(f"wss://127.0.0.1:{d.port('web')}/ws", ssl=ctx) as ws:
                await ws.send("x")
                assert await ws.recv() == "x"
                d.send_signal(signal.SIGTERM)
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
                return ws.close_code

        code = asyncio.run(asyncio.wait_for(go(), 15))
        assert code == 1001, f"WSS closed with {code} at shutdown (plain WebSockets get 1001)"
        assert d.wait(5) == 0, d.log_tail()
        with pytest.raises(TlsClosed):
            line.readline(timeout=2)
        assert wait_closed(half, 2) == ("eof", b"")
    finally:
        line.close()
        web.close()
        half.close()


def test_session_resumption_and_ticket_rotation(ctl_daemon, pki, tmp_path):
    d = ctl_daemon(config(
        http_listener("web", tls_block(pki.localhost)),
        http_listener("noticket", tls_block(pki.localhost, session_tickets=False)),
    ))
    port = d.port("web")
    sess = tmp_path / "sess.pem"
    r = s_client(port, "-tls1_2", "-CAfile", pki.ca.cert, "-sess_out", sess)
    assert "New, TLSv1.2" in r.out and "TLS session ticket:" in r.out, r.out
    r = s_client(port, "-tls1_2", "-CAfile", pki.ca.cert, "-sess_in", sess)
    assert "Reused, TLSv1.2" in r.out, r.out
    # a reload rotates the ticket key: the old ticket no longer resumes
    assert d.ctl("reload")["ok"] is True
    r = s_client(port, "-tls1_2", "-CAfile", pki.ca.cert, "-sess_in", sess, "-sess_out", sess)
    assert "New, TLSv1.2" in r.out, r.out
    # a ticket issued after the reload does
    r = s_client(port, "-tls1_2", "-CAfile", pki.ca.cert, "-sess_in", sess)
    assert "Reused, TLSv1.2" in r.out, r.out
    # a session of one listener does not resume on another
    r = s_client(d.port("noticket"), "-tls1_2", "-CAfile", pki.ca.cert, "-sess_in", sess)
    assert "New, TLSv1.2" in r.out, r.out
    # session_tickets: false issues no ticket, and resumes nothing (README: full handshakes only)
    nsess = tmp_path / "n.pem"
    r = s_client(d.port("noticket"), "-tls1_2", "-CAfile", pki.ca.cert, "-sess_out", nsess)
    assert handshake_ok(r.out) and "TLS session ticket:" not in r.out, r.out
    if nsess.exists():  # s_client saves only a session it could resume
        r = s_client(d.port("noticket"), "-tls1_2", "-CAfile", pki.ca.cert, "-sess_in", nsess)
        assert "New, TLSv1.2" in r.out, r.out


# ---- metrics -----------------------------------------------------------------------------


def test_tls_stats_connections_and_prometheus(ctl_daemon, pki):
    d = ctl_daemon(config(
        tcp_listener("plain"),
        tcp_listener("lines", tls_block(pki.localhost)),
        http_listener("web", tls_block(pki.localhost, client_ca=pki.ca.cert, verify_client="optional")),
    ))
    s = d.stats()
    for obj, what in ((s["global"], "global"), (s["listeners"]["lines"], "lines"), (s["listeners"]["web"], "web")):
        assert obj["tls"] == {"handshakes": 0, "handshake_failures": {r: 0 for r in REASONS}}, what
    g0 = tls_stats(d)

    ctx = tls_context(pki)
    plain = LineClient(d.port("plain"))
    line = TlsLineClient(d.port("lines"), ctx)
    line12 = TlsLineClient(d.port("lines"), tls_context(pki, max_version=ssl.TLSVersion.TLSv1_2))
    web = https_conn(d.port("web"), tls_context(pki, cert=pki.client))
    try:
        assert plain.request("ping") == "+PONG"
        assert line.request("ping") == "+PONG"
        assert line12.request("ping") == "+PONG"
        assert web.exchange("GET", "/health").status == 200
        conns = {c["remote"]: c for c in d.ctl("connections")["connections"]}
        p = conns[plain.local_addr()]
        assert p.get("tls_version") is None and p.get("tls_cipher") is None, p
        assert p.get("tls_client_subject") is None, p
        c = conns[line.local_addr()]
        # application bytes, not TLS records
        assert (c["bytes_received"], c["bytes_sent"]) == (len("ping\n"), len("+PONG\n")), c
        assert c["tls_version"] == line.sock.version() == "TLSv1.3", c
        assert c["tls_cipher"] == line.sock.cipher()[0], c
        assert c.get("tls_client_subject") is None, c
        c = conns[line12.local_addr()]
        assert c["tls_version"] == "TLSv1.2" and c["tls_cipher"] == line12.sock.cipher()[0], c
        c = conns[web.local_addr()]
        assert c["tls_version"] == web.sock.version() == "TLSv1.3" and c["tls_cipher"] == web.sock.cipher()[0], c
        assert c["tls_client_subject"] == "CN=client,O=Tusk Test", c
        # tusknetctl shows the version per connection and the handshakes in stats
        out = subprocess.run([TUSKNETCTL, "-s", d.control, "connections"], capture_output=True, text=True,
                             timeout=10).stdout
        head = next(ln for ln in out.splitlines() if ln.lstrip().startswith("ID "))
        assert head.split()[-1] == "TLS", out
        rows = {f[3]: f[-1] for f in (ln.split() for ln in out.splitlines()) if len(f) > 10 and f[0].isdigit()}
        assert rows[plain.local_addr()] == "-" and rows[line.local_addr()] == "TLSv1.3", out
        assert rows[line12.local_addr()] == "TLSv1.2", out
        out = subprocess.run([TUSKNETCTL, "-s", d.control, "stats"], capture_output=True, text=True,
                             timeout=10).stdout
        assert re.search(r"^tls +3 handshakes, 0 failed$", out, re.M), out
    finally:
        for x in (plain, line, line12, web):
            x.close()

    # failures by reason: one of each kind we can cause on "lines"
    lp = d.port("lines")
    r = s_client(lp, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert not handshake_ok(r.out)
    s1 = socket.create_connection(("127.0.0.1", lp))
    s1.sendall(b"hello plain text\n")
    assert wait_closed(s1, 3) == ("eof", b"")
    s1.close()
    s2 = socket.create_connection(("127.0.0.1", lp))
    s2.sendall(client_hello()[:10])
    s2.close()
    s3 = socket.create_connection(("127.0.0.1", lp))
    assert wait_closed(s3, 4) == ("eof", b"")
    s3.close()
    t = wait_tls(d, "lines", lambda t: sum(t["handshake_failures"].values()) >= 4, 4,
                 what="4 handshake failures on lines")
    assert t["handshakes"] == 2, t
    want = {"timeout": 1, "protocol_version": 1, "not_tls": 1, "eof": 1}
    assert t["handshake_failures"] == {r: want.get(r, 0) for r in REASONS}, t
    w = tls_stats(d, "web")
    assert w == {"handshakes": 1, "handshake_failures": {r: 0 for r in REASONS}}, w
    g = tls_stats(d)
    assert g["handshakes"] - g0["handshakes"] == 3, g
    for reason in REASONS:
        assert failures(g, reason) - failures(g0, reason) == failures(t, reason) + failures(w, reason), (reason, g)

    samples = parse_prometheus(d.metrics())
    assert sample(samples, "tusknet_tls_handshakes_total", listener="lines") == 2
    assert sample(samples, "tusknet_tls_handshakes_total", listener="web") == 1
    for reason in REASONS:
        assert sample(samples, "tusknet_tls_handshake_failures_total", listener="lines", reason=reason) == \
            t["handshake_failures"][reason], reason
    # no TLS series for the plain listener
    assert not [k for k in samples if k[0].startswith("tusknet_tls_") and ("listener", "plain") in k[1]], samples
    assert d.alive()
