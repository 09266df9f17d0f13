# SPDX-License-Identifier: MIT
"""A WebSocket proxied to an upstream is one of the daemon's connections
after its 101, as one the daemon serves itself: `connections` lists it
(protocol ws, its path, the client's address, the bytes both ways),
`close ID` ends it, `send ID` says the messages are the upstream's, it
counts against a listener's max_connections, a graceful shutdown waits for
it until shutdown_timeout (messages still pass after SIGTERM) and then
closes it, and a proxy handler that a reload removed lists the server the
relay goes to until the relay ends.

The upstream is a second tusknetd with a WebSocket echo endpoint (see
test_proxy.upstream_tusknetd)."""
import asyncio
import time

import pytest

from ctl_util import ctl, wait_for
from daemon_util import daemon  # noqa: F401  (daemon is a fixture)
from test_proxy import proxy_config, reload_with, servers_of, upstream_tusknetd
from tls_util import pki, tls_context  # noqa: F401  (pki is a fixture)

websockets = pytest.importorskip("websockets.client")
ConnectionClosed = pytest.importorskip("websockets.exceptions").ConnectionClosed


def ws_conns(ctl_path):
    return [c for c in ctl(ctl_path, "connections")["connections"] if c["protocol"] == "ws"]


def relay_setup(daemon, tmp_path, extra="", listener_extra="", daemon_keys=""):
    up, _ = upstream_tusknetd(daemon, tmp_path)
    server = f"127.0.0.1:{up.ports['APP']}"
    ctl_path, conf = proxy_config(tmp_path, [server], 'timeout: "30s" ' + extra,
                                  routes='"GET /ws": "px" "GET /*": "px"', listener_extra=listener_extra)
    conf = conf.replace("[daemon]\n", "[daemon]\n" + daemon_keys, 1)
    d = daemon(conf)
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
            with pytest.raises(Exception):
                async with websockets.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as other:
                    await echo(other, "b")
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
