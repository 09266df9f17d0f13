# SPDX-License-Identifier: MIT
"""Bounded memory and descriptors under clients that do not play along:
a TCP line client that pipelines without reading behind a slow reply, 3,000
pipelined HTTP requests behind a slow CGI request, a stream process writing to
WebSocket and TCP clients that never read, a UDP client that floods and never
reads, and clients that trickle a line, a head or a body one byte at a time.

Memory is the daemon's VmHWM (peak RSS) against its VmRSS before the test,
descriptors are counted in /proc/PID/fd. Under SANITIZE=1 the daemon runs with
a small ASan quarantine so that freed memory is not counted as held."""
import base64
import os
import socket
import struct
import threading
import time

import pytest
from ctl_util import ctl
from daemon_util import LineClient, UdpClient, daemon  # noqa: F401  (daemon is a fixture)
from http_util import HttpConn, build_request

SANITIZE = os.environ.get("SANITIZE") == "1"
GROWTH_KB = 16 * 1024  # what a test may add to the daemon's peak RSS
LINE = "y" * 4000  # what the stream handler's program prints, again and again

HEAD = """
[daemon]
control_socket: "ctl.sock"
shutdown_timeout: "2s"
[handlers]
echo  { type: "echo" }
slow  { type: "exec" command: ["sleep", "2"] timeout: "10s" }
yes   { type: "stream" command: ["yes", "LINE"] }
files { type: "file" root: "www" }
"""


def start(daemon, tmp_path, listeners):
    (tmp_path / "www").mkdir(exist_ok=True)
    (tmp_path / "www" / "a.txt").write_text("file body\n")
    env = None
    if SANITIZE:
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=4").lstrip(":")
    return daemon(HEAD.replace("LINE", LINE) + "[listeners]\n" + listeners, env=env)


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def nfds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def stats(d):
    return ctl(str(d.tmp_path / "ctl.sock"), "stats")


def listener_stats(d, name):
    return stats(d)["listeners"][name]


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# ---- 1. TCP lines: a client that never reads behind a slow reply -----------------


def test_line_client_that_never_reads_behind_slow_reply(daemon, tmp_path):
    d = start(daemon, tmp_path, 'l { protocol: "tcp" listen: "127.0.0.1:PORT_L" handlers: ["echo", "slow"] }\n')
    with LineClient(d.ports["L"], timeout=60) as warm:
        assert warm.request("echo warm") == "warm"
    base = status_kb(d.pid, "VmRSS")
    n = 50 * 1024 * 1024 // len(b"echo x\n")
    c = LineClient(d.ports["L"], timeout=120)
    try:
        c.sendline("slow")

        def send_all():
            block = b"echo x\n" * 8192
            left = n
            while left:
                k = min(left, 8192)
                c.sock.sendall(block if k == 8192 else b"echo x\n" * k)
                left -= k

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        # the slow reply comes after 2 s; the replies parked behind it and
        # those after it that the client does not read must not pile up
        time.sleep(3.5)
        held = status_kb(d.pid, "VmHWM") - base
        assert held < GROWTH_KB, f"daemon grew by {held} KB while the client did not read"
        assert sender.is_alive(), "the daemon must stop reading a client that does not read"
        want = b"\n" + b"x\n" * n
        got = bytearray()
        deadline = time.monotonic() + 300
        c.sock.settimeout(5)
        while len(got) < len(want):
            assert time.monotonic() < deadline
            chunk = c.sock.recv(1 << 20)
            assert chunk, f"closed after {len(got)} of {len(want)} bytes"
            got += chunk
        sender.join(10)
        assert not sender.is_alive()
        assert c.silent_for(0.3) == b""
        assert bytes(got) == want, "every reply, in order, exactly once"
        held = status_kb(d.pid, "VmHWM") - base
        assert held < GROWTH_KB, f"daemon grew by {held} KB"
        assert c.request("echo after") == "after"
    finally:
        c.close()


# ---- 2. HTTP: 3,000 pipelined requests behind a slow CGI request ------------------


def test_http_pipeline_behind_slow_request_holds_few_descriptors(daemon, tmp_path):
    d = start(
        daemon,
        tmp_path,
        'web { protocol: "http" listen: "127.0.0.1:PORT_H" routes { "GET /slow": "slow"  "GET /f/*": "files" } }\n',
    )
    with HttpConn(d.ports["H"]) as warm:
        assert warm.exchange("GET", "/f/a.txt").status == 200
    base = nfds(d.pid)
    n = 3000
    c = HttpConn(d.ports["H"], timeout=60)
    try:
        c.send(build_request("GET", "/slow") + build_request("GET", "/f/a.txt") * n)
        most = 0
        deadline = time.monotonic() + 1.8
        while time.monotonic() < deadline:
            most = max(most, nfds(d.pid))
            time.sleep(0.02)
        assert most <= base + 40, f"{most - base} descriptors more than before while requests wait"
        first = c.read_response(timeout=10)
        assert (first.status, first.body) == (200, b"")
        bodies = [c.read_response(timeout=10) for _ in range(n)]
        assert [r.status for r in bodies] == [200] * n
        assert all(r.body == b"file body\n" for r in bodies)
        assert c.is_open()
    finally:
        c.close()
    assert listener_stats(d, "web")["messages_out"] == n + 2


# ---- 3. stream output to clients that never read ----------------------------------


def ws_handshake(port, path, rcvbuf):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(1)
        assert b, "closed during the handshake"
        head += b
    assert head.startswith(b"HTTP/1.1 101 "), head
    return s


def ws_frames(data):
    """(opcode, payload) of each complete server frame in DATA."""
    out, i = [], 0
    while i + 2 <= len(data):
        op, ln = data[i] & 0x0F, data[i + 1] & 0x7F
        j = i + 2
        if ln == 126:
            ln, j = struct.unpack(">H", data[j : j + 2])[0], j + 2
        elif ln == 127:
            ln, j = struct.unpack(">Q", data[j : j + 8])[0], j + 8
        if j + ln > len(data):
            break
        out.append((op, data[j : j + ln]))
        i = j + ln
    return out


def read_to_eof(s, timeout):
    """Everything until the peer closes; fails if it does not within TIMEOUT."""
    s.settimeout(timeout)
    data = bytearray()
    while True:
        try:
            chunk = s.recv(1 << 20)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def test_stream_to_websocket_that_never_reads(daemon, tmp_path):
    d = start(
        daemon,
        tmp_path,
        'web { protocol: "http" listen: "127.0.0.1:PORT_H" max_output: "64KB"\n'
        '      routes { "GET /f/*": "files" } websocket { "/yes": "yes" } }\n',
    )
    base = status_kb(d.pid, "VmRSS")
    s = ws_handshake(d.ports["H"], "/yes", 4096)
    try:
        wait_until(lambda: listener_stats(d, "web")["rejected"]["slow_reader"] == 1, 10, "the slow reader drop")
        assert d.wait_log(r"handler yes: dropping slow reader \(connection \d+\)", timeout=2)
        frames = ws_frames(read_to_eof(s, 10))
        assert frames and all(op == 1 and p == LINE.encode() for op, p in frames[:-1])
        assert frames[-1] == (8, struct.pack(">H", 1008) + b"slow reader")
    finally:
        s.close()
    wait_until(lambda: not d.children(), 5, "the yes process to end")
    held = status_kb(d.pid, "VmHWM") - base
    assert held < GROWTH_KB, f"daemon grew by {held} KB"
    st = listener_stats(d, "web")
    assert st["rejected"]["slow_reader"] == 1
    assert st["active_connections"] == 0
    with HttpConn(d.ports["H"]) as h:
        assert h.exchange("GET", "/f/a.txt").body == b"file body\n"


def test_stream_to_line_client_that_never_reads(daemon, tmp_path):
    d = start(
        daemon,
        tmp_path,
        'y { protocol: "tcp" listen: "127.0.0.1:PORT_Y" handler: "yes" max_output: "64KB" }\n'
        'l { protocol: "tcp" listen: "127.0.0.1:PORT_L" handler: "echo" }\n',
    )
    base = status_kb(d.pid, "VmRSS")
    c = LineClient(d.ports["Y"], rcvbuf=4096)
    try:
        wait_until(lambda: listener_stats(d, "y")["rejected"]["slow_reader"] == 1, 10, "the slow reader drop")
        assert d.wait_log(r"handler yes: dropping slow reader \(connection \d+\)", timeout=2)
        wait_until(lambda: not d.children(), 5, "the yes process to end")
        # what was queued before the drop is still delivered, then the close
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        data = read_to_eof(c.sock, 30)
        line = LINE.encode() + b"\n"
        assert 0 < len(data) and data == line * (len(data) // len(line)), (len(data), len(data) % len(line), data[-50:])
    finally:
        c.close()
    held = status_kb(d.pid, "VmHWM") - base
    assert held < GROWTH_KB, f"daemon grew by {held} KB"
    assert listener_stats(d, "y")["rejected"]["slow_reader"] == 1
    with LineClient(d.ports["L"]) as e:
        assert e.request("still serving") == "still serving"


# ---- 4. UDP: a client that floods and never reads -----------------------------------

SO_RXQ_OVFL = 40  # the socket's drop count arrives with each datagram


def test_udp_flood_without_reading_drops_replies(daemon, tmp_path):
    d = start(daemon, tmp_path, 'u { protocol: "udp" listen: "127.0.0.1:PORT_U" handlers: ["echo"] }\n')
    base = status_kb(d.pid, "VmRSS")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        s.connect(("127.0.0.1", d.ports["U"]))
        n = 20000
        for _ in range(n):
            s.send(b"echo x")

        def settled():
            a = listener_stats(d, "u")
            time.sleep(0.2)
            b = listener_stats(d, "u")
            return a["messages_in"] == b["messages_in"] and a["messages_out"] == b["messages_out"]

        wait_until(settled, 10, "the daemon to answer everything it got")
        st = listener_stats(d, "u")
        received, client_drops = 0, 0
        s.settimeout(0.5)
        while True:
            try:
                data, anc, _, _ = s.recvmsg(64, socket.CMSG_SPACE(4))
            except socket.timeout:
                break
            assert data == b"x"
            received += 1
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL:
                    client_drops = struct.unpack("I", value[:4])[0]
        # the drop count comes with a datagram queued after the drops
        s.send(b"echo last")
        data, anc, _, _ = s.recvmsg(64, socket.CMSG_SPACE(4))
        assert data == b"last"
        received += 1
        for level, kind, value in anc:
            if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL:
                client_drops = struct.unpack("I", value[:4])[0]
        st = listener_stats(d, "u")
        assert received > 0 and client_drops > 0
        # every reply the daemon sent reached the client or its full socket;
        # those the daemon's socket did not take are counted as dropped
        assert st["messages_out"] == received + client_drops
        assert st["messages_in"] == st["messages_out"] + st["rejected"]["reply_dropped"]
        assert st["messages_in"] <= n + 1
    finally:
        s.close()
    held = status_kb(d.pid, "VmHWM") - base
    assert held < GROWTH_KB, f"daemon grew by {held} KB"
    with UdpClient(d.ports["U"]) as u:
        assert u.request("echo still") == b"still"


def udp_from_port_zero(port, payload):
    """A datagram to 127.0.0.1:PORT whose source port is 0 (raw socket):
    no reply can be sent back to it."""
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    try:
        r.sendto(struct.pack(">HHHH", 0, port, 8 + len(payload), 0) + payload, ("127.0.0.1", 0))
    finally:
        r.close()


def test_udp_reply_that_cannot_be_sent_is_counted(daemon, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("raw sockets need root")
    d = start(daemon, tmp_path, 'u { protocol: "udp" listen: "127.0.0.1:PORT_U" handlers: ["echo"] }\n')
    for _ in range(3):
        udp_from_port_zero(d.ports["U"], b"echo lost")
    wait_until(lambda: listener_stats(d, "u")["messages_in"] == 3, 5, "the datagrams")
    st = listener_stats(d, "u")
    assert (st["rejected"]["reply_dropped"], st["messages_out"]) == (3, 0)
    assert stats(d)["global"]["rejected"]["reply_dropped"] == 3
    with UdpClient(d.ports["U"]) as u:
        assert u.request("echo fine") == b"fine"


# ---- 5. whole-message deadlines ---------------------------------------------------


def trickle(sock, data, every, stop):
    """Sends DATA one byte every EVERY seconds until done, STOP is set or the
    peer is gone."""
    for b in data:
        if stop.is_set():
            return
        try:
            sock.send(bytes([b]))
        except OSError:
            return
        stop.wait(every)


def closed_within(sock, timeout):
    """Everything the peer sends until it closes, or None if it does not
    close within TIMEOUT."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return None
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


TIMEOUTS = 'read_timeout: "2s" header_timeout: "2s" idle_timeout: "30s"'


def trickled_answer(sock, whole, trickled):
    """Sends WHOLE at once, then TRICKLED a byte every 0.5 s; what the daemon
    sends until it closes, or None if it does not close within 4 s."""
    stop = threading.Event()
    try:
        sock.sendall(whole)
        threading.Thread(target=trickle, args=(sock, trickled, 0.5, stop), daemon=True).start()
        return closed_within(sock, 4.0)
    finally:
        stop.set()


def test_line_trickled_one_byte_at_a_time_gets_read_timeout(daemon, tmp_path):
    d = start(daemon, tmp_path, f'l {{ protocol: "tcp" listen: "127.0.0.1:PORT_L" handlers: ["echo"] {TIMEOUTS} }}\n')
    with LineClient(d.ports["L"]) as c:
        assert c.request("echo first") == "first"
        assert trickled_answer(c.sock, b"", b"echo " + b"a" * 100) == b"Error: read timeout\n"
    assert listener_stats(d, "l")["timeout_errors"] == 1


def test_slow_complete_lines_are_not_timed_out(daemon, tmp_path):
    d = start(daemon, tmp_path, f'l {{ protocol: "tcp" listen: "127.0.0.1:PORT_L" handlers: ["echo"] {TIMEOUTS} }}\n')
    with LineClient(d.ports["L"]) as c:
        for i in range(5):
            # each line arrives in two halves; the deadline is per line
            c.send(f"echo line{i}")
            time.sleep(0.5)
            c.send("\n")
            assert c.readline(timeout=2) == f"line{i}"
            time.sleep(0.5)
        assert c.is_open()
    assert listener_stats(d, "l")["timeout_errors"] == 0


def http_status_line(data):
    return data.split(b"\r\n", 1)[0]


@pytest.mark.parametrize(
    "whole, trickled",
    [
        (b"", b"GET /e HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100),
        (b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", b"b" * 100),
    ],
    ids=["head", "body"],
)
def test_http_trickled_request_gets_408(daemon, tmp_path, whole, trickled):
    d = start(
        daemon, tmp_path, f'web {{ protocol: "http" listen: "127.0.0.1:PORT_H" routes {{ "/e": "echo" }} {TIMEOUTS} }}\n'
    )
    with HttpConn(d.ports["H"]) as c:
        data = trickled_answer(c.sock, whole, trickled)
    assert data is not None, "not closed within 4 s"
    assert http_status_line(data) == b"HTTP/1.1 408 Request Timeout"
    assert data.endswith(b"\r\nConnection: close\r\n\r\nRequest Timeout\n")
    assert listener_stats(d, "web")["timeout_errors"] == 1


def test_http_slow_complete_requests_are_not_timed_out(daemon, tmp_path):
    d = start(
        daemon, tmp_path, f'web {{ protocol: "http" listen: "127.0.0.1:PORT_H" routes {{ "POST /e": "echo" }} {TIMEOUTS} }}\n'
    )
    with HttpConn(d.ports["H"]) as c:
        for i in range(5):
            body = f"body{i}".encode()
            c.send(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
            time.sleep(0.5)
            c.send(body)
            r = c.read_response(timeout=2)
            assert (r.status, r.body) == (200, body)
            time.sleep(0.5)
        assert c.is_open()
    assert listener_stats(d, "web")["timeout_errors"] == 0
