# SPDX-License-Identifier: MIT
"""A WebSocket proxied to an upstream is one of the daemon's connections
after its 101, as one the daemon serves itself: `connections` lists it
(protocol ws, its path, the client's address, the bytes both ways),
`close ID` ends it, `send ID` says the messages are the upstream's, it
counts against a listener's max_connections, a graceful shutdown waits for
it until shutdown_timeout (messages still pass after SIGTERM) and then
closes it, and a proxy handler that a reload removed lists the server the
relay goes to until the relay ends.

With busy polling on, relayed bytes are work that keeps the loop polling.
A client that sends and never reads cannot make the relay hold more than
its bound, and once nothing has moved toward it for `timeout` the relay
ends.

The upstream is a second tusknetd with a WebSocket echo endpoint (see
test_proxy.upstream_tusknetd)."""
import asyncio
import base64
import os
import select
import socket
import struct
import threading
import time

import pytest

from ctl_util import ctl, rss_kb, wait_for
from daemon_util import daemon  # noqa: F401  (daemon is a fixture)
from test_proxy import Canned, peers, proxy_config, reload_with, servers_of, upstream_tusknetd  # noqa: F401
from tls_util import pki, tls_context  # noqa: F401  (pki is a fixture)

websockets = pytest.importorskip("websockets.client")
ConnectionClosed = pytest.importorskip("websockets.exceptions").ConnectionClosed
InvalidStatusCode = pytest.importorskip("websockets.exceptions").InvalidStatusCode


def ws_conns(ctl_path):
    return [c for c in ctl(ctl_path, "connections")["connections"] if c["protocol"] == "ws"]


# ASan keeps freed memory in quarantine on purpose (256 MB by default); the
# memory bounds measure ours
OWN_MEMORY = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=1")


def relay_setup(daemon, tmp_path, timeout="30s", listener_extra="", daemon_keys="", env=None):
    up, _ = upstream_tusknetd(daemon, tmp_path)
    server = f"127.0.0.1:{up.ports['APP']}"
    ctl_path, conf = proxy_config(tmp_path, [server], f'timeout: "{timeout}"',
                                  routes='"GET /ws": "px" "GET /*": "px"', listener_extra=listener_extra)
    conf = conf.replace("[daemon]\n", "[daemon]\n" + daemon_keys, 1)
    d = daemon(conf, env=env)
    return d, ctl_path, server, conf


async def echo(ws, text):
    await ws.send(text)
    return await asyncio.wait_for(ws.recv(), 10)


def test_a_proxied_websocket_is_listed_and_closed_by_id(daemon, tmp_path):
    d, ctl_path, server, _ = relay_setup(daemon, tmp_path)
    port = d.ports["WEB"]

    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
            assert await echo(ws, "12345678") == "12345678"
            local = "127.0.0.1:%d" % ws.local_address[1]
            rows = ws_conns(ctl_path)
            assert len(rows) == 1, rows
            row = rows[0]
            assert (row["listener"], row["path"], row["remote"], row["local"]) == \
                ("web", "/ws", local, f"127.0.0.1:{port}")
            # the client's frame (8 bytes masked: 14) went up, the echo (10) came down
            assert (row["bytes_received"], row["bytes_sent"]) == (14, 10)
            assert ctl(ctl_path, "stats")["listeners"]["web"]["active_connections"] == 1
            assert servers_of(ctl_path)[server]["active"] == 1
            ans = ctl(ctl_path, f"send {row['id']} hello")
            assert ans["ok"] is False
            assert ans["error"] == f"connection {row['id']} is a proxied WebSocket: its messages are the upstream's"
            assert ctl(ctl_path, f"close {row['id']}")["ok"] is True
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        wait_for(lambda: not ws_conns(ctl_path), 5, what="the relay to leave the list")
        assert ctl(ctl_path, "stats")["listeners"]["web"]["active_connections"] == 0
        assert servers_of(ctl_path)[server]["active"] == 0

    asyncio.run(go())


def test_a_proxied_websocket_over_tls_is_listed_and_closed_by_id(daemon, tmp_path, pki):
    tls = f'tls {{ cert: "{pki.localhost.cert}" key: "{pki.localhost.key}" }}'
    d, ctl_path, server, _ = relay_setup(daemon, tmp_path, listener_extra=tls)
    port = d.ports["WEB"]

    async def go():
        async with websockets.connect(f"wss://127.0.0.1:{port}/ws", ssl=tls_context(pki), open_timeout=10) as ws:
            big = "y" * 100000
            assert await echo(ws, big) == big
            (row,) = ws_conns(ctl_path)
            assert (row["path"], row["remote"], row["local"]) == \
                ("/ws", "127.0.0.1:%d" % ws.local_address[1], f"127.0.0.1:{port}")
            assert servers_of(ctl_path)[server]["active"] == 1
            assert ctl(ctl_path, f"close {row['id']}")["ok"] is True
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        wait_for(lambda: not ws_conns(ctl_path) and servers_of(ctl_path)[server]["active"] == 0, 5,
                 what="the relay to end")

    asyncio.run(go())


def test_a_proxied_websocket_counts_against_max_connections(daemon, tmp_path):
    d, ctl_path, _, _ = relay_setup(daemon, tmp_path, listener_extra="max_connections: 1")
    port = d.ports["WEB"]

    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
            assert await echo(ws, "a") == "a"
            with pytest.raises(InvalidStatusCode) as refused:
                async with websockets.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as other:
                    await echo(other, "b")
            assert refused.value.status_code == 503
            st = ctl(ctl_path, "stats")["listeners"]["web"]
            assert st["rejected"]["listener_full"] == 1
            assert await echo(ws, "c") == "c"
        wait_for(lambda: ctl(ctl_path, "stats")["listeners"]["web"]["active_connections"] == 0, 5,
                 what="the relay to end")
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
            assert await echo(ws, "d") == "d"

    asyncio.run(go())


def test_shutdown_waits_for_a_proxied_websocket_then_closes_it(daemon, tmp_path):
    d, ctl_path, _, _ = relay_setup(daemon, tmp_path, daemon_keys='shutdown_timeout: "2s"\n')
    port = d.ports["WEB"]

    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
            assert await echo(ws, "before") == "before"
            t0 = time.monotonic()
            d.proc.send_signal(15)
            await asyncio.sleep(0.5)
            assert await echo(ws, "during the shutdown") == "during the shutdown"
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            return time.monotonic() - t0

    waited = asyncio.run(go())
    assert 1.8 <= waited < 5, waited
    assert d.proc.wait(5) == 0
    assert "shutdown: timeout reached, closing 1 connection(s)" in d.log()


def test_shutdown_ends_when_the_last_proxied_websocket_does(daemon, tmp_path):
    d, ctl_path, _, _ = relay_setup(daemon, tmp_path, daemon_keys='shutdown_timeout: "30s"\n')
    port = d.ports["WEB"]

    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
            assert await echo(ws, "x") == "x"
            d.proc.send_signal(15)
            await asyncio.sleep(0.3)
            assert d.proc.poll() is None  # still relaying
        t0 = time.monotonic()
        return t0

    t0 = asyncio.run(go())
    assert d.proc.wait(5) == 0
    assert time.monotonic() - t0 < 3
    assert "timeout reached" not in d.log()


def test_a_removed_proxy_handler_lists_the_server_its_websocket_goes_to(daemon, tmp_path):
    d, ctl_path, server, _ = relay_setup(daemon, tmp_path)
    port = d.ports["WEB"]
    without_px = f"""
[daemon]
control_socket: "{ctl_path}"
[handlers]
st {{ type: "static" reply: "static" }}
[listeners]
web {{ protocol: "http" listen: "127.0.0.1:PORT_WEB" routes {{ "GET /*": "st" }} }}
"""

    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
            assert await echo(ws, "one") == "one"
            reload_with(d, ctl_path, without_px)
            groups = ctl(ctl_path, "upstreams")["upstreams"]
            assert [(g["handler"], g["removed"], [(s["server"], s["active"]) for s in g["servers"]])
                    for g in groups] == [("px", True, [(server, 1)])]
            assert await echo(ws, "two") == "two"
        wait_for(lambda: ctl(ctl_path, "upstreams")["upstreams"] == [], 5, what="the removed handler to go")
        assert ws_conns(ctl_path) == []

    asyncio.run(go())


def memory_report(pid):
    """What the kernel says of PID's memory, for a failed bound."""
    with open(f"/proc/{pid}/status") as f:
        status = [ln.strip() for ln in f if ln.startswith(("Vm", "Rss"))]
    with open(f"/proc/{pid}/limits") as f:
        files = [ln.strip() for ln in f if ln.startswith("Max open files")]
    return "; ".join(status + files)


def raw_upgrade(port, path="/ws"):
    """A WebSocket handshake on a plain socket, read up to the end of the 101's head only."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        b = s.recv(1)
        assert b, head
        head += b
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def binary_frame(payload):
    """A client frame: FIN, binary, masked with a zero key (so the payload goes as it is)."""
    n = len(payload)
    size = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n) if n < 65536 \
        else bytes([0x80 | 127]) + struct.pack("!Q", n)
    return bytes([0x82]) + size + b"\0\0\0\0" + payload


def flood(s, pid, base_rss, seconds=10):
    """Sends 60 KB frames on S without reading, for SECONDS or until the
    connection ends or refuses a write: (bytes sent, PID's highest RSS seen
    in KB, seconds until the end or None)."""
    s.setblocking(False)
    frame = binary_frame(os.urandom(60000))
    sent, peak = 0, base_rss
    t0 = time.monotonic()
    pending = memoryview(frame)
    while time.monotonic() - t0 < seconds:
        if not select.select([], [s], [], 0.2)[1]:
            peak = max(peak, rss_kb(pid))
            continue
        try:
            n = s.send(pending)
        except (BlockingIOError, ConnectionError):
            return sent, peak, time.monotonic() - t0
        sent += n
        pending = pending[n:] if n < len(pending) else memoryview(frame)
        if sent % (1 << 20) < n:
            peak = max(peak, rss_kb(pid))
    return sent, peak, None


def test_a_client_that_never_reads_holds_bounded_memory_and_times_out(daemon, tmp_path):
    d, ctl_path, server, _ = relay_setup(daemon, tmp_path, timeout="2s", env=OWN_MEMORY)
    port = d.ports["WEB"]
    base_rss, base_report = rss_kb(d.pid), memory_report(d.pid)
    s = raw_upgrade(port)
    sent, peak, closed_after = flood(s, d.pid, base_rss)
    # the echoes of what the client sends wait for it: the proxy keeps at
    # most its relay bound of them and stops reading the upstream (which
    # copes with its own slow reader as it likes)
    assert sent > 8 << 20, sent
    assert peak - base_rss < 8 * 1024, (base_rss, peak, sent, base_report, memory_report(d.pid),
                                              ctl(ctl_path, "connections"))
    # the client is still sending, but nothing has moved toward it for 2 s
    assert closed_after is not None and closed_after < 6, closed_after
    assert "closed: write timeout" in d.log()
    wait_for(lambda: not ws_conns(ctl_path), 5, what="the relay to leave the list")
    assert servers_of(ctl_path)[server]["active"] == 0
    s.close()


def test_an_upstream_that_never_reads_stops_the_clients_reads(daemon, tmp_path, peers):  # noqa: F811
    """The upstream answers 101 and then reads nothing: what the client sends
    waits in the proxy up to its bound, then in the sockets; the client's
    writes block, and after `timeout` without progress the relay ends."""
    stuck = threading.Event()

    def respond(i, head):
        def hold(c, rest):
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Accept: x\r\n\r\n")
            stuck.wait(30)
        return hold
    up = Canned(respond)
    peers.append(up)
    server = f"127.0.0.1:{up.port}"
    ctl_path, conf = proxy_config(tmp_path, [server], 'timeout: "2s"', routes='"GET /ws": "px"')
    d = daemon(conf, env=OWN_MEMORY)
    base_rss, base_report = rss_kb(d.pid), memory_report(d.pid)
    s = raw_upgrade(d.ports["WEB"])
    sent, peak, closed_after = flood(s, d.pid, base_rss)
    stuck.set()
    # the proxy's bound and the four socket buffers in between, not more
    assert 256 << 10 < sent < 32 << 20, sent
    assert peak - base_rss < 8 * 1024, (base_rss, peak, sent, base_report, memory_report(d.pid),
                                              ctl(ctl_path, "connections"))
    assert closed_after is not None and closed_after < 6, closed_after
    assert "closed: write timeout" in d.log()
    wait_for(lambda: not ws_conns(ctl_path) and servers_of(ctl_path)[server]["active"] == 0, 5,
             what="the relay to end")
    s.close()


def voluntary_switches(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("voluntary_ctxt_switches"))


def test_busy_polling_sees_the_relay_as_work(daemon, tmp_path):
    """With busy_poll_us set, a pass that relays WebSocket bytes is work like
    any other: messages 5 ms apart keep a 20 ms polling window open, so the
    loop does not go to sleep between them (each sleep is a voluntary
    context switch)."""
    d, _, _, _ = relay_setup(daemon, tmp_path, daemon_keys="busy_poll_us: 20000\n")
    port = d.ports["WEB"]

    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
            assert await echo(ws, "warm") == "warm"
            before = voluntary_switches(d.pid)
            for i in range(100):
                assert await echo(ws, f"m{i}") == f"m{i}"
                await asyncio.sleep(0.005)
            return voluntary_switches(d.pid) - before

    slept = asyncio.run(go())
    assert slept < 20, slept
