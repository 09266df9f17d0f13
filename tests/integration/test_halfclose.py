# SPDX-License-Identifier: MIT
"""Clients that send their requests and then shut down their write side.

Every client here sends its bytes and its FIN together (TCP_CORK held over
the write and shutdown(SHUT_WR), so data and FIN share one segment, the case
an edge-triggered reader can miss), then reads: it must get every reply it
is owed, in order, also when replies come from exec after the FIN, and then
the end of stream from the daemon, long before idle_timeout (30 s here).
Afterwards no socket of the daemon's port may be left in CLOSE-WAIT (`ss`).
Also: socat pipes, an unterminated last line (answered as a line), TLS with
and without close_notify, and keep-alive connections that send no FIN.
"""
import socket
import ssl
import subprocess
import threading

import pytest

from daemon_util import daemon  # noqa: F401  (a fixture)
from http_util import HttpConn, build_request
from tls_util import pki, tls_context  # noqa: F401  (pki is a fixture)

HOST = "127.0.0.1"
ROUNDS = 50
READ_TIMEOUT = 10.0  # a leaked connection would stay open for idle_timeout (30 s)

HEAD = """
[daemon]
log_level: "debug"
control_socket: ""
shutdown_timeout: "2s"

[limits]
idle_timeout: "30s"

[handlers]
echo  { type: "echo" }
ping  { type: "static" reply: "+PONG" }
upper { type: "exec" command: ["tr", "a-z", "A-Z"] timeout: "5s" }
slow  { type: "exec" command: ["sh", "-c", "sleep 0.1; tr a-z A-Z"] timeout: "5s" }
cat   { type: "stream" command: ["cat"] }
last  { type: "stream" command: ["sh", "-c", 'while read l; do echo "got $l"; done; sleep 0.1; echo bye'] }
"""

LISTENERS = """
[listeners]
lines { protocol: "tcp" listen: "127.0.0.1:PORT_LINES" handlers: ["echo", "ping", "upper", "slow"] }
short { protocol: "tcp" listen: "127.0.0.1:PORT_SHORT" handler: "echo" max_line: 16 }
limited { protocol: "tcp" listen: "127.0.0.1:PORT_LIMITED" handler: "ping" max_connections_per_ip: 2 }
inetd { protocol: "tcp" listen: "127.0.0.1:PORT_INETD" handler: "cat" }
multi { protocol: "tcp" listen: "127.0.0.1:PORT_MULTI" handlers: ["ping", "last"] }
web {
    protocol: "http"
    listen: "127.0.0.1:PORT_WEB"
    routes { "GET /ping": "ping"  "POST /upper": "upper"  "POST /slow": "slow" }
}
"""


@pytest.fixture
def d(daemon):
    return daemon(HEAD + LISTENERS)


# ---- helpers -------------------------------------------------------------------


def close_wait(port):
    """The daemon's sockets on PORT in CLOSE-WAIT (lines of `ss`)."""
    out = subprocess.run(["ss", "-Htan", "state", "close-wait", f"( sport = :{port} )"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return [ln for ln in out.splitlines() if ln.strip()]


def connect(port):
    s = socket.create_connection((HOST, port), timeout=READ_TIMEOUT)
    s.settimeout(READ_TIMEOUT)
    return s


def send_and_finish(s, data):
    """DATA and the FIN in one segment: corked write, shutdown, uncork."""
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)


def read_to_end(s):
    """Everything up to the daemon's end of stream (socket.timeout if it
    keeps the connection open)."""
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return got
        got += chunk


def recv_exact(s, n):
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        assert chunk, f"closed after {got!r}"
        got += chunk
    return got


def exchange_and_end(port, data):
    """Sends DATA and the FIN; returns all the daemon sent before closing."""
    with connect(port) as s:
        send_and_finish(s, data)
        return read_to_end(s)


def http_responses(data, n):
    """The N responses in DATA, parsed strictly by http_util (through a
    socketpair whose far end is closed after DATA), and whether nothing
    follows them."""
    a, b = socket.socketpair()
    try:
        a.sendall(data)
        a.close()
        c = HttpConn(0, connect=False)
        c.sock.close()
        c.sock = b
        rs = [c.read_response(timeout=READ_TIMEOUT) for _ in range(n)]
        return rs, c.wait_closed(READ_TIMEOUT)
    finally:
        b.close()


def get(path):
    return build_request("GET", path)


def post(path, body):
    return build_request("POST", path, body=body)


# ---- TCP line ----------------------------------------------------------------------


@pytest.mark.parametrize("sent,want", [
    ("ping\necho a{i}\necho b{i}\n", "+PONG\na{i}\nb{i}\n"),
    # the exec replies are computed after the FIN arrived: the daemon waits
    # for them and writes them in order before it closes
    ("slow abc{i}\nping\nupper x{i}\necho e{i}\n", "ABC{i}\n+PONG\nX{i}\ne{i}\n"),
], ids=["sync", "async"])
def test_line_replies_then_close(d, sent, want):
    port = d.ports["LINES"]
    for i in range(ROUNDS):
        got = exchange_and_end(port, sent.format(i=i).encode())
        assert got == want.format(i=i).encode(), f"round {i}"
    assert close_wait(port) == []


def test_line_keepalive_without_fin(d):
    """No FIN: the connection stays open between requests, then the FIN
    after the last reply closes it."""
    port = d.ports["LINES"]
    for i in range(ROUNDS):
        with connect(port) as s:
            s.sendall(b"ping\n")
            assert recv_exact(s, 6) == b"+PONG\n"
            s.sendall(f"echo k{i}\n".encode())
            want = f"k{i}\n".encode()
            assert recv_exact(s, len(want)) == want
            s.shutdown(socket.SHUT_WR)
            assert read_to_end(s) == b"", f"round {i}"
    assert close_wait(port) == []


@pytest.mark.parametrize("data,reply", [
    (b"ping\necho tail", b"+PONG\ntail\n"),
    (b"echo crlf\r", b"crlf\r\n"),
    (b"ping", b"+PONG\n"),
    (b"slow abc\necho end", b"ABC\nend\n"),
    (b"slow last", b"LAST\n"),
    (b"nosuch thing", b"Unknown handler: nosuch\n"),
    (b"echo \xff\x00bin", b"\xff\x00bin\n"),
])
def test_line_unterminated_last_line_is_answered(d, data, reply):
    port = d.ports["LINES"]
    assert exchange_and_end(port, data) == reply
    assert close_wait(port) == []


def test_line_unterminated_last_line_obeys_max_line(d):
    port = d.ports["SHORT"]
    assert exchange_and_end(port, b"x" * 16) == b"x" * 16 + b"\n"
    assert exchange_and_end(port, b"y" * 17) == b"Error: line too long\n"
    assert exchange_and_end(port, b"ok\n" + b"z" * 40) == b"ok\nError: line too long\n"
    assert close_wait(port) == []


def test_line_fin_behind_paused_input(d):
    """2 MB of pipelined lines and the FIN, from a client that reads only
    later: the daemon pauses reading at 256 KB of unsent replies, so
    the FIN waits in the socket until the replies drain. Every reply still
    comes, then the close."""
    port = d.ports["LINES"]
    n = 400_000
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(READ_TIMEOUT)
        s.connect((HOST, port))
        sender = threading.Thread(target=send_and_finish, args=(s, b"ping\n" * n))
        sender.start()
        sender.join(1.0)  # the sender blocks: the daemon stopped reading
        got = read_to_end(s)
        sender.join()
    assert (len(got), got == b"+PONG\n" * n) == (6 * n, True)
    assert close_wait(port) == []


def test_socat_pipe(d):
    port = d.ports["LINES"]
    r = subprocess.run(["sh", "-c", f"printf 'ping\\n' | socat - TCP:{HOST}:{port}"],
                       capture_output=True, timeout=READ_TIMEOUT)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"+PONG\n", b"")
    assert close_wait(port) == []


def test_socat_runs_within_per_address_limit(d):
    """max_connections_per_ip: 2. A connection left in CLOSE-WAIT would still
    count, and the third run would be refused."""
    port = d.ports["LIMITED"]
    for i in range(20):
        r = subprocess.run(["sh", "-c", f"printf 'ping\\n' | socat - TCP:{HOST}:{port}"],
                           capture_output=True, timeout=READ_TIMEOUT)
        assert (r.returncode, r.stdout, r.stderr) == (0, b"+PONG\n", b""), f"run {i}"
    assert close_wait(port) == []


# ---- stream handlers: the process finishes after the client's FIN ------------------


def test_stream_gets_eof_and_finishes_its_output(d):
    """inetd style: the FIN closes the process's stdin; everything it prints
    until it exits reaches the client, then the connection closes."""
    port = d.ports["INETD"]
    for i in range(10):
        assert exchange_and_end(port, f"hi{i}\nlast{i}".encode()) == f"hi{i}\nlast{i}\n".encode(), f"round {i}"
    r = subprocess.run(["sh", "-c", f"printf 'a\\nb\\n' | socat - TCP:{HOST}:{port}"],
                       capture_output=True, timeout=READ_TIMEOUT)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"a\nb\n", b"")
    assert close_wait(port) == []
    assert d.children() == []


def test_stream_selected_by_token_finishes_after_fin(d):
    port = d.ports["MULTI"]
    assert exchange_and_end(port, b"ping\nlast one\nlast two") == b"+PONG\ngot one\ngot two\nbye\n"
    assert close_wait(port) == []
    assert d.children() == []


# ---- HTTP ----------------------------------------------------------------------------


def test_http_single_request_then_close(d):
    port = d.ports["WEB"]
    for i in range(ROUNDS):
        rs, closed = http_responses(exchange_and_end(port, get("/ping")), 1)
        assert (rs[0].status, rs[0].body, closed) == (200, b"+PONG", True), f"round {i}"
    assert close_wait(port) == []


def test_http_pipelined_requests_then_close(d):
    port = d.ports["WEB"]
    for i in range(ROUNDS):
        data = get("/ping") + post("/slow", f"abc{i}") + post("/upper", f"x{i}") + get("/ping")
        rs, closed = http_responses(exchange_and_end(port, data), 4)
        assert [(r.status, r.body) for r in rs] == [
            (200, b"+PONG"), (200, f"ABC{i}".encode()), (200, f"X{i}".encode()), (200, b"+PONG")], f"round {i}"
        assert closed, f"round {i}"
    assert close_wait(port) == []


def test_http_keepalive_without_fin(d):
    """Keep-alive holds without a FIN; the FIN after the last response closes."""
    port = d.ports["WEB"]
    for i in range(ROUNDS):
        with HttpConn(port, timeout=READ_TIMEOUT) as c:
            r1 = c.exchange("GET", "/ping")
            r2 = c.exchange("POST", "/slow", body=f"k{i}")
            assert (r1.status, r1.body, r2.status, r2.body) == (200, b"+PONG", 200, f"K{i}".encode())
            c.sock.shutdown(socket.SHUT_WR)
            assert c.wait_closed(READ_TIMEOUT), f"round {i}"
    assert close_wait(port) == []


def test_http_connection_close_then_fin(d):
    port = d.ports["WEB"]
    data = build_request("GET", "/ping", headers={"Connection": "close"}) + get("/ping")
    rs, closed = http_responses(exchange_and_end(port, data), 1)
    assert (rs[0].status, rs[0].body, rs[0].header("Connection"), closed) == (200, b"+PONG", "close", True)
    assert close_wait(port) == []


@pytest.mark.parametrize("tail", [
    b"GET /ping HTTP/1.1\r\nHost: x\r\n",                             # head cut short
    b"POST /upper HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",  # body cut short
    b"GET /pi",
])
def test_http_incomplete_request_then_fin_is_dropped(d, tail):
    """A request the FIN cut short is not answered; the complete ones before
    it are."""
    port = d.ports["WEB"]
    assert exchange_and_end(port, tail) == b""
    rs, closed = http_responses(exchange_and_end(port, get("/ping") + tail), 1)
    assert (rs[0].status, rs[0].body, closed) == (200, b"+PONG", True)
    assert close_wait(port) == []


# ---- TLS ------------------------------------------------------------------------------


def tls_exchange_and_end(port, ctx, data, close_notify):
    """Over TLS: DATA, then (CLOSE_NOTIFY) close_notify, and the FIN in the
    same segment. Returns (plaintext received, how the daemon ended: 'close_notify'
    or the SSL error's reason)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with connect(port) as s:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                s.sendall(outgoing.read())
                chunk = s.recv(65536)
                assert chunk, "the daemon closed during the handshake"
                incoming.write(chunk)
        tls.write(data)
        if close_notify:
            with pytest.raises(ssl.SSLWantReadError):
                tls.unwrap()  # queues our close_notify, then waits for the daemon's
        send_and_finish(s, outgoing.read())
        raw = read_to_end(s)
    incoming.write(raw)
    incoming.write_eof()
    plain = b""
    try:
        while True:
            chunk = tls.read(65536)
            if not chunk:
                return plain, "close_notify"
            plain += chunk
    except ssl.SSLZeroReturnError:
        return plain, "close_notify"
    except ssl.SSLError as e:
        return plain, e.reason


@pytest.fixture
def tls_d(daemon, pki):
    tls = f'tls {{ cert: "{pki.localhost.cert}" key: "{pki.localhost.key}" }}'
    return daemon(HEAD + f"""
[listeners]
lines {{ protocol: "tcp" listen: "127.0.0.1:PORT_LINES" handlers: ["echo", "ping", "slow"] {tls} }}
web {{
    protocol: "http"
    listen: "127.0.0.1:PORT_WEB"
    routes {{ "GET /ping": "ping"  "POST /slow": "slow" }}
    {tls}
}}
""")


def test_tls_line_close_notify_then_fin(tls_d, pki):
    port, ctx = tls_d.ports["LINES"], tls_context(pki)
    for i in range(20):
        got = tls_exchange_and_end(port, ctx, f"slow a{i}\nping\necho last{i}".encode(), close_notify=True)
        assert got == (f"A{i}\n+PONG\nlast{i}\n".encode(), "close_notify"), f"round {i}"
    assert close_wait(port) == []


def test_tls_http_close_notify_then_fin(tls_d, pki):
    port, ctx = tls_d.ports["WEB"], tls_context(pki)
    for i in range(20):
        plain, end = tls_exchange_and_end(port, ctx, get("/ping") + post("/slow", f"b{i}") + get("/ping"),
                                          close_notify=True)
        rs, closed = http_responses(plain, 3)
        assert [(r.status, r.body) for r in rs] == [(200, b"+PONG"), (200, f"B{i}".encode()), (200, b"+PONG")]
        assert (closed, end) == (True, "close_notify"), f"round {i}"
    assert close_wait(port) == []


def test_tls_fin_without_close_notify_closes_at_once(tls_d, pki):
    """An end of stream without close_notify may be a truncation and OpenSSL
    fails the session on it (with a decode_error alert): what was answered
    before it arrives, then the close. The exec reply and the unterminated
    line are not answered."""
    port, ctx = tls_d.ports["LINES"], tls_context(pki)
    for i in range(20):
        got = tls_exchange_and_end(port, ctx, f"ping\nslow a{i}\necho cut{i}".encode(), close_notify=False)
        assert got == (b"+PONG\n", "TLSV1_ALERT_DECODE_ERROR"), f"round {i}"
    assert close_wait(port) == []
