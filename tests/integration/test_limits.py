# SPDX-License-Identifier: MIT
"""Limits and timeouts with real sockets: max_line,
connection caps (global, per listener, per address, per second), rate_limit,
allow/deny, idle and read timeouts, UDP max_message, max_output for slow
readers, 1,000 concurrent connections and running out of descriptors."""
import os
import resource
import selectors
import socket
import time

from daemon_util import (  # noqa: F401  (daemon is a fixture)
    LineClient,
    UdpClient,
    daemon,
    served,
)

HEAD = """
[daemon]
control_socket: ""
max_connections: {maxconn}
shutdown_timeout: "2s"
[handlers]
echo { type: "echo" }
ping { type: "static" reply: "+PONG" }
chat { type: "broadcast" }
{extra}
"""


def head(maxconn=10000, extra_handlers=""):
    return HEAD.replace("{maxconn}", str(maxconn)).replace("{extra}", extra_handlers)


def expect_refused(port, exact, source=None):
    """A new connection gets the one line EXACT, then the close."""
    c = LineClient(port, source=source)
    try:
        data, closed = c.read_until_closed(timeout=3)
    finally:
        c.close()
    assert closed, f"refused connection must be closed, got {data!r} and still open"
    text = data.decode(errors="replace")
    assert text == exact, f"expected {exact!r}, got {text!r}"
    return text


PER_IP = "Error: too many connections from your address\n"
PER_SECOND = "Error: too many connections per second\n"


def open_served(port, n, source=None):
    """N connections, each proven accepted by an echo round trip."""
    out = []
    for i in range(n):
        c = LineClient(port, source=source)
        assert c.request(f"echo c{i}") == f"c{i}"
        out.append(c)
    return out


def close_all(clients):
    for c in clients:
        c.close()


# ---- max_line ----------------------------------------------------------------


def test_max_line(daemon):
    d = daemon(
        head()
        + """
[listeners]
lines { protocol: "tcp" listen: "127.0.0.1:PORT_L" handlers: ["echo"] max_line: "1KB" }
"""
    )
    port = d.ports["L"]
    with LineClient(port) as c:
        # exactly max_line bytes (without the newline) is fine
        line = "echo " + "a" * (1024 - 5)
        assert len(line) == 1024
        assert c.request(line) == "a" * 1019
        # one byte more is not
        c.sendline("echo " + "b" * (1024 - 4))
        data, closed = c.read_until_closed(timeout=3)
        assert data == b"Error: line too long\n"
        assert closed
    # a long line without a newline yet is caught too
    with LineClient(port) as c:
        assert c.request("echo before") == "before"
        c.send("echo " + "x" * 3000)
        data, closed = c.read_until_closed(timeout=3)
        assert data == b"Error: line too long\n"
        assert closed
    # replies before the long line still come, in order
    with LineClient(port) as c:
        c.send(b"echo one\necho two\necho " + b"z" * 5000 + b"\necho never\n")
        data, closed = c.read_until_closed(timeout=3)
        assert data == b"one\ntwo\nError: line too long\n"
        assert closed
    assert served(port)


# ---- connection caps -----------------------------------------------------------


def test_global_max_connections(daemon):
    d = daemon(
        head(maxconn=3)
        + """
[listeners]
a { protocol: "tcp" listen: "127.0.0.1:PORT_A" handlers: ["echo"] }
b { protocol: "tcp" listen: "127.0.0.1:PORT_B" handlers: ["echo"] }
"""
    )
    held = open_served(d.ports["A"], 2) + open_served(d.ports["B"], 1)
    try:
        # the cap is global: listener b has one connection but the daemon has three
        expect_refused(d.ports["B"], "Error: too many connections\n")
        expect_refused(d.ports["A"], "Error: too many connections\n")
        # the held ones still work
        for c in held:
            assert c.request("echo still") == "still"
        # a slot frees up when one closes
        held.pop().close()
        assert served(d.ports["B"], timeout=3), "a freed slot must be usable again"
    finally:
        close_all(held)


def test_listener_max_connections(daemon):
    d = daemon(
        head()
        + """
[listeners]
small { protocol: "tcp" listen: "127.0.0.1:PORT_S" handlers: ["echo"] max_connections: 2 }
other { protocol: "tcp" listen: "127.0.0.1:PORT_O" handlers: ["echo"] }
"""
    )
    held = open_served(d.ports["S"], 2)
    try:
        expect_refused(d.ports["S"], "Error: too many connections\n")
        expect_refused(d.ports["S"], "Error: too many connections\n")
        # other listeners are not affected
        others = open_served(d.ports["O"], 3)
        close_all(others)
        held.pop().close()
        assert served(d.ports["S"], timeout=3)
    finally:
        close_all(held)


def test_max_connections_per_ip(daemon):
    d = daemon(
        head()
        + """
[listeners]
l { protocol: "tcp" listen: "127.0.0.1:PORT_L" handlers: ["echo"] max_connections_per_ip: 2 }
"""
    )
    port = d.ports["L"]
    held = open_served(port, 2, source="127.0.0.1")
    try:
        expect_refused(port, PER_IP, source="127.0.0.1")
        # another address has its own allowance
        held += open_served(port, 2, source="127.0.0.2")
        expect_refused(port, PER_IP, source="127.0.0.2")
        # closing one from 127.0.0.1 lets one more in from there
        held.pop(0).close()
        assert served(port, timeout=3, source="127.0.0.1")
    finally:
        close_all(held)


def _fresh_second():
    """Sleeps until early in a wall-clock second so that a burst of
    connections falls within one second."""
    while True:
        frac = time.time() % 1.0
        if 0.02 < frac < 0.4:
            return
        time.sleep(0.01)


def test_max_connections_per_second(daemon):
    d = daemon(
        head()
        + """
[listeners]
l { protocol: "tcp" listen: "127.0.0.1:PORT_L" handlers: ["echo"] max_connections_per_second: 3 }
"""
    )
    port = d.ports["L"]
    # everything up to the next comment runs within one wall-clock second:
    # _fresh_second leaves at least 0.6 s for a few loopback round trips
    _fresh_second()
    held = open_served(port, 3, source="127.0.0.1")
    try:
        expect_refused(port, PER_SECOND, source="127.0.0.1")
        # the limit is per source address
        held += open_served(port, 1, source="127.0.0.3")
        # it is a rate, not a cap: closing does not help within the second...
        close_all(held)
        held = []
        expect_refused(port, PER_SECOND, source="127.0.0.1")
        # ...but the next second does
        time.sleep(1.1)
        held = open_served(port, 3, source="127.0.0.1")
    finally:
        close_all(held)


# ---- rate_limit ------------------------------------------------------------------


def test_rate_limit_tcp(daemon):
    d = daemon(
        head()
        + """
[listeners]
l { protocol: "tcp" listen: "127.0.0.1:PORT_L" handlers: ["echo"] rate_limit: "5/s" rate_burst: 5 }
"""
    )
    with LineClient(d.ports["L"]) as c:
        c.send("".join(f"echo m{i}\n" for i in range(20)))
        got = c.readlines(20)
        # the 20 lines arrive in one segment and are handled within far less
        # than the 200 ms a token takes to come back: the burst, then refusals
        assert got == [f"m{i}" for i in range(5)] + ["Error: rate limit exceeded"] * 15, got
        # the connection stays open and tokens come back at the rate
        time.sleep(0.5)
        assert c.request("echo later") == "later"


def test_rate_limit_udp(daemon):
    d = daemon(
        head()
        + """
[listeners]
u { protocol: "udp" listen: "127.0.0.1:PORT_U" handlers: ["echo"] rate_limit: "5/s" rate_burst: 3 }
"""
    )
    with UdpClient(d.ports["U"]) as u:
        for i in range(10):
            u.send(f"echo m{i}")
        got = [u.recv(timeout=2) for _ in range(10)]
        assert got[:3] == [b"m0", b"m1", b"m2"], got
        assert got[-5:] == [b"Error: rate limit exceeded"] * 5, got
        time.sleep(0.5)
        assert u.request("echo later") == b"later"


# ---- allow / deny ----------------------------------------------------------------


def test_allow_deny_closed_at_accept(daemon, tmp_path):
    marker = tmp_path / "started.txt"
    d = daemon(
        head(extra_handlers=f"""mark {{ type: "stream" command: ["sh", "-c", 'echo x >> "{marker}"; exec cat'] }}""")
        + """
[listeners]
guarded {
    protocol: "tcp" listen: "127.0.0.1:PORT_G" handler: "mark"
    allow: ["127.0.0.2", "127.0.0.16/28"]
    deny: ["127.0.0.0/8"]
}
denyonly { protocol: "tcp" listen: "127.0.0.1:PORT_D" handlers: ["echo"] deny: ["127.0.0.1"] }
"""
    )
    g = d.ports["G"]
    # denied peers: closed at once, nothing said, and no handler ran
    for src in ("127.0.0.1", "127.0.0.3", "127.0.0.15", "127.0.0.32"):
        c = LineClient(g, source=src)
        try:
            try:
                c.sendline("hello")
            except OSError:
                pass
            data, closed = c.read_until_closed(timeout=3)
        finally:
            c.close()
        assert closed and data == b"", f"{src}: expected an immediate close, got {data!r} closed={closed}"
    time.sleep(0.2)
    assert not marker.exists(), "a denied connection must not reach the handler"
    # allowed: the most specific rule wins
    for src in ("127.0.0.2", "127.0.0.17"):
        with LineClient(g, source=src) as c:
            assert c.request(f"hi from {src}") == f"hi from {src}"
    assert marker.read_text() == "x\nx\n"
    # deny without allow: everyone else is allowed
    c = LineClient(d.ports["D"], source="127.0.0.1")
    data, closed = c.read_until_closed(timeout=3)
    c.close()
    assert closed and data == b""
    assert served(d.ports["D"], source="127.0.0.5")


def test_allow_deny_udp(daemon):
    d = daemon(
        head()
        + """
[listeners]
u { protocol: "udp" listen: "127.0.0.1:PORT_U" handlers: ["echo"] deny: ["127.0.0.1"] }
"""
    )
    with UdpClient(d.ports["U"], source="127.0.0.1") as u:
        assert u.request("echo denied", timeout=0.5) is None
    with UdpClient(d.ports["U"], source="127.0.0.4") as u:
        assert u.request("echo allowed") == b"allowed"


# ---- timeouts ------------------------------------------------------------------


def test_idle_timeout(daemon):
    d = daemon(
        head()
        + """
[listeners]
l { protocol: "tcp" listen: "127.0.0.1:PORT_L" handlers: ["echo"] idle_timeout: "300ms" read_timeout: "0" }
"""
    )
    port = d.ports["L"]
    idle = LineClient(port)
    busy = LineClient(port)
    try:
        # a talking connection outlives the idle one
        for i in range(8):
            assert busy.request(f"echo {i}") == str(i)
            if idle.eof:
                break
            time.sleep(0.1)
        data, closed = idle.read_until_closed(timeout=2)
        assert closed and data == b"", (data, closed)
        assert busy.request("echo alive") == "alive"
        # and once quiet, it goes too
        data, closed = busy.read_until_closed(timeout=2)
        assert closed
    finally:
        idle.close()
        busy.close()


def test_read_timeout_closes_half_sent_line(daemon):
    d = daemon(
        head()
        + """
[listeners]
l { protocol: "tcp" listen: "127.0.0.1:PORT_L" handlers: ["echo"] idle_timeout: "3s" read_timeout: "300ms" }
"""
    )
    port = d.ports["L"]
    half = LineClient(port)
    quiet = LineClient(port)
    try:
        assert half.request("echo first") == "first"
        half.send("echo never finish")
        data, closed = half.read_until_closed(timeout=2.5)
        assert closed, "a half-sent line must be cut off after read_timeout"
        assert data == b"Error: read timeout\n"
        # an idle connection is held to idle_timeout, not read_timeout
        assert quiet.is_open(), "an idle connection must not get read_timeout"
        assert quiet.request("echo quiet ok") == "quiet ok"
    finally:
        half.close()
        quiet.close()


# ---- UDP max_message ----------------------------------------------------------


def test_udp_max_message(daemon):
    d = daemon(
        head()
        + """
[listeners]
u { protocol: "udp" listen: "127.0.0.1:PORT_U" handlers: ["echo"] max_message: 100 }
"""
    )
    with UdpClient(d.ports["U"]) as u:
        ok = "echo " + "a" * 95
        assert len(ok) == 100
        assert u.request(ok) == b"a" * 95
        assert u.request("echo " + "b" * 96) == b"Error: message too large"
        assert u.request("echo " + "c" * 5000) == b"Error: message too large"
        assert u.request("echo small") == b"small"


# ---- slow readers ------------------------------------------------------------------


def test_slow_reader_dropped_after_max_output(daemon):
    d = daemon(
        head()
        + """
[listeners]
room { protocol: "tcp" listen: "127.0.0.1:PORT_R" handler: "chat" max_output: "64KB" write_timeout: "0" }
"""
    )
    port = d.ports["R"]
    slow = LineClient(port, rcvbuf=4096)
    fast = LineClient(port)
    sender = LineClient(port)
    try:
        # make sure all three are in the room
        deadline = time.monotonic() + 3
        while True:
            sender.sendline("sync")
            if fast.silent_for(0.05):
                break
            assert time.monotonic() < deadline
        time.sleep(0.1)
        fast.silent_for(0.05)
        line = b"x" * 1000 + b"\n"
        sent = 0
        fast_got = 0
        dropped = None
        # the slow one never reads: the daemon must give up on it once more
        # than max_output is queued for it, and keep serving the others
        while sent < 64 * 1024 * 1024:
            sender.send(line * 64)
            sent += len(line) * 64
            fast_got += len(fast.silent_for(0.0005))
            if sent % (len(line) * 1024) == 0 and d.wait_log(r"slow consumer|slow reader", timeout=0):
                dropped = True
                break
        assert dropped, f"slow reader never dropped after {sent} bytes"
        # the dropped client sees the end of the stream after what was sent
        # before: what the daemon's kernel still buffers for it (megabytes with
        # send-buffer autotuning) comes first, so it reads with a big buffer now
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        slow.sock.setblocking(True)
        data, closed = slow.read_until_closed(timeout=10)
        assert closed, "the slow reader's connection must be closed"
        # how much got through depends on the socket buffers; what did is the
        # "sync" lines, then whole lines from the start of the stream, and the
        # rest was dropped
        body = data.lstrip(b"sync\n")
        assert data[: len(data) - len(body)] == b"sync\n" * ((len(data) - len(body)) // 5), data[:100]
        assert len(body) < sent and body == line * (len(body) // len(line)), len(body)
        # the fast reader got everything
        while fast_got < sent:
            chunk = fast.silent_for(1.0)
            if not chunk:
                break
            fast_got += len(chunk)
        assert fast_got == sent
        sender.sendline("after")
        assert fast.readline() == "after"
    finally:
        slow.close()
        fast.close()
        sender.close()


# ---- many connections -------------------------------------------------------------


def test_1000_concurrent_connections(daemon):
    d = daemon(
        head()
        + """
[listeners]
l { protocol: "tcp" listen: "127.0.0.1:PORT_L" handlers: ["echo"] backlog: 2048 }
"""
    )
    port = d.ports["L"]
    n = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 200), hard))
    clients = []
    try:
        for i in range(n):
            clients.append(LineClient(port, timeout=10))
        for rnd in range(2):
            for i, c in enumerate(clients):
                c.sendline(f"echo r{rnd}c{i}")
            sel = selectors.DefaultSelector()
            for i, c in enumerate(clients):
                sel.register(c.sock, selectors.EVENT_READ, i)
            pending = set(range(n))
            deadline = time.monotonic() + 20
            while pending and time.monotonic() < deadline:
                for key, _ in sel.select(1.0):
                    i = key.data
                    line = clients[i].readline(timeout=2)
                    assert line == f"r{rnd}c{i}", (i, line)
                    pending.discard(i)
                    sel.unregister(key.fileobj)
            sel.close()
            assert not pending, f"{len(pending)} connections got no reply in round {rnd}"
        assert d.alive()
    finally:
        close_all(clients)
    assert served(port)


def _lower_nofile(n):
    def fn():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return fn


def test_emfile_backs_off_and_recovers(daemon):
    d = daemon(
        head()
        + """
[listeners]
l { protocol: "tcp" listen: "127.0.0.1:PORT_L" handlers: ["echo"] backlog: 1024 }
""",
        preexec_fn=_lower_nofile(40),
    )
    port = d.ports["L"]
    clients = []
    base = len(os.listdir(f"/proc/{d.pid}/fd"))
    try:
        for i in range(120):
            c = LineClient(port, timeout=5)
            c.sendline(f"echo c{i}")
            clients.append(c)
        # some are served, the rest wait in the backlog
        sel = selectors.DefaultSelector()
        for i, c in enumerate(clients):
            sel.register(c.sock, selectors.EVENT_READ, i)
        answered = set()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            for key, _ in sel.select(0.1):
                i = key.data
                assert clients[i].readline(timeout=1) == f"c{i}"
                answered.add(i)
                sel.unregister(key.fileobj)
        sel.close()
        # every descriptor left under RLIMIT_NOFILE 40 serves one connection,
        # in the order they were queued; the rest wait in the backlog
        assert answered == set(range(40 - base)), f"{len(answered)} served with {base} descriptors in use"
        assert d.alive()
        # out of descriptors, the daemon must not spin
        cpu0 = d.cpu_seconds()
        time.sleep(1.0)
        used = d.cpu_seconds() - cpu0
        # a bound that only tells backing off from spinning (which uses the whole second)
        assert used < 0.3, f"daemon used {used:.2f}s CPU in 1s while out of descriptors"
        assert d.alive()
    finally:
        close_all(clients)
    # with descriptors free again it accepts and serves
    assert served(port, timeout=5), "daemon did not recover after EMFILE"
    with LineClient(port) as c:
        assert c.request("echo back") == "back"
