# SPDX-License-Identifier: MIT
"""The WebSocket front end over real sockets:
python3-websockets (asyncio API) for the ordinary client side, and a small
raw RFC 6455 client below for what a well-behaved library will not send
(invalid UTF-8, not answering pings, hand-made fragments and close codes).

Covered: echo on a single-handler endpoint, handler selection and its error
replies, asynchronous replies in order, max_message -> 1009, invalid UTF-8 ->
1007, fragmented input, ping/pong both ways and the pong timeout,
permessage-deflate on and off, subprotocols, Origin checks (403), broadcast
among 3 and 200 clients, wrong paths (404) and plain GETs on an endpoint
(426), HTTP routes on the same port during WebSocket traffic, close codes in
both directions, and SIGTERM closing every WebSocket with 1001."""
import asyncio
import base64
import http.client
import os
import signal
import socket
import struct
import time

import pytest
import websockets

from daemon_util import HOST, daemon  # noqa: F401  (daemon is a fixture)
from http_util import vanishing_ws_clients

CONFIG = """
[daemon]
control_socket: ""
shutdown_timeout: "5s"

[handlers]
echo   { type: "echo" }
ping   { type: "static" reply: "+PONG" }
upper  { type: "exec" command: ["tr", "a-z", "A-Z"] timeout: "2s" }
slow   { type: "exec" command: ["sh", "-c", "sleep 0.3; cat"] timeout: "2s" }
chat   { type: "broadcast" }
health { type: "health" }

[listeners]
web {
    protocol: "http"
    listen: "127.0.0.1:PORT_WEB"
    routes {
        "GET /health": "health"
    }
    websocket {
        "/ws": ["echo", "ping", "upper", "slow"]
        "/echo": { handler: "echo" }
        "/deflate": { handler: "echo"  deflate: true }
        "/plain": { handler: "echo"  deflate: false }
        "/small": { handler: "echo"  max_message: "64KB" }
        "/chat": { handler: "chat" }
        "/proto": { handler: "echo"  subprotocols: ["chat.v2", "chat.v1"] }
        "/same": { handler: "echo"  origins: ["same"] }
        "/listed": { handler: "echo"  origins: ["https://app.example"] }
        "/keepalive": { handler: "echo"  ping_interval: "1s"  pong_timeout: "1s" }
    }
}
"""


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def url(d, path):
    return f"ws://{HOST}:{d.ports['WEB']}{path}"


@pytest.fixture
def web(daemon):  # noqa: F811
    return daemon(CONFIG)


# ---- a raw client --------------------------------------------------------------


class RawWs:
    """A minimal RFC 6455 client on a blocking socket."""

    def __init__(self, port, path, headers=None, timeout=5.0, rcvbuf=None, tls=None):
        if rcvbuf:
            # set before connecting, so the window the server sees is small
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect((HOST, port))
        else:
            self.sock = socket.create_connection((HOST, port), timeout=timeout)
        if tls:
            self.sock = tls.wrap_socket(self.sock, server_hostname=HOST)
        key = base64.b64encode(os.urandom(16)).decode()
        fields = {
            "Host": f"{HOST}:{port}",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Version": "13",
        }
        fields.update(headers or {})
        lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in fields.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.head = head.decode(errors="replace")
        self.status = int(self.head.split(" ", 2)[1]) if self.head else 0

    def send_frame(self, opcode, payload=b"", fin=True):
        if isinstance(payload, str):
            payload = payload.encode()
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", b0, 0x80 | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, 0x80 | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, 0x80 | 127, n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(hdr + mask + masked)

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self, timeout=5.0):
        """(opcode, payload) of the next frame; EOFError when closed."""
        self.sock.settimeout(timeout)
        b0, b1 = self._need(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8))[0]
        return b0 & 0x0F, self._need(n)

    def ends_without_close_frame(self, timeout=5.0):
        """True if the server ends the connection with a plain FIN (EOF) before
        any close frame; False on a close frame. A reset raises."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                op, _ = self.recv_frame(max(0.05, deadline - time.monotonic()))
            except EOFError:
                return True
            if op == 8:
                return False
        raise TimeoutError("the connection stayed open")

    def close_code(self, timeout=5.0):
        """Reads until a close frame; its code (None if the socket just closed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                op, data = self.recv_frame(max(0.05, deadline - time.monotonic()))
            except (EOFError, ConnectionResetError):
                return None
            if op == 8:
                return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
        raise TimeoutError("no close frame")

    def close(self):
        self.sock.close()


# ---- messages ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/echo", "/deflate"])
def test_echo_single_handler(web, path):
    async def go():
        async with websockets.connect(url(web, path)) as ws:
            for msg in ["hello", "with spaces: and colons", "ünïcödé ✓", ""]:
                await ws.send(msg)
                assert await ws.recv() == msg
            await ws.send(b"\x00\x01binary\xff")
            assert await ws.recv() == b"\x00\x01binary\xff"

    run(go())


def test_handler_selection_and_errors(web):
    async def go():
        async with websockets.connect(url(web, "/ws")) as ws:
            cases = [
                ("echo hi", "hi"),
                ("echo: hi there", "hi there"),
                ("echo\nline", "line"),
                ("ping", "+PONG"),
                ("upper: abc", "ABC"),
                ("nosuch payload", "Unknown handler: nosuch"),
                ("", "Invalid message format"),
                (" leading", "Invalid message format"),
            ]
            for send, want in cases:
                await ws.send(send)
                assert await asyncio.wait_for(ws.recv(), 5) == want, send

    run(go())


def test_async_replies_keep_order(web):
    async def go():
        async with websockets.connect(url(web, "/ws")) as ws:
            await ws.send("slow first")
            await ws.send("echo second")
            await ws.send("upper third")
            await ws.send("echo fourth")
            got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(4)]
            assert got == ["first", "second", "THIRD", "fourth"]

    run(go())


def test_frames_in_one_write_answered_in_order(web):
    # sync replies go out from inside the receive callback unless something
    # is queued before them: many frames in one TCP write, sync and async
    # mixed, and replies too big for one send, must still come back in order
    c = RawWs(web.ports["WEB"], "/ws", rcvbuf=8192)
    expect = []
    frames = []
    for i in range(300):
        if i % 50 == 7:
            frames.append(f"slow s{i}")
            expect.append(f"s{i}")
        elif i % 50 == 30:
            frames.append(f"upper u{i}")
            expect.append(f"U{i}")
        elif i % 100 == 99:
            big = f"b{i}" + "x" * 900000
            frames.append("echo " + big)
            expect.append(big)
        else:
            frames.append(f"ping {i}" if i % 3 == 0 else f"echo e{i}")
            expect.append("+PONG" if i % 3 == 0 else f"e{i}")
    data = b""
    for f in frames:
        payload = f.encode()
        n = len(payload)
        hdr = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else (
            struct.pack("!BBH", 0x81, 0x80 | 126, n) if n < 65536 else struct.pack("!BBQ", 0x81, 0x80 | 127, n))
        mask = os.urandom(4)
        data += hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    c.sock.sendall(data)
    time.sleep(0.5)  # the server's sends stall on the small window meanwhile
    got = [c.recv_frame(timeout=10)[1].decode() for _ in expect]
    assert got == expect
    c.close()


def test_replies_before_the_close_answer(web):
    # messages and a close frame in one write: the replies come before the
    # daemon's close frame, and nothing after it
    c = RawWs(web.ports["WEB"], "/echo")
    data = b""
    for op, payload in ((0x1, b"first"), (0x1, b"second"), (0x8, struct.pack("!H", 1000))):
        mask = os.urandom(4)
        data += struct.pack("!BB", 0x80 | op, 0x80 | len(payload)) + mask
        data += bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    c.sock.sendall(data)
    assert c.recv_frame() == (0x1, b"first")
    assert c.recv_frame() == (0x1, b"second")
    op, payload = c.recv_frame()
    assert op == 0x8 and struct.unpack("!H", payload[:2])[0] == 1000
    c.sock.settimeout(3)
    assert c.sock.recv(100) == b""
    c.close()


@pytest.mark.parametrize("path", ["/echo", "/deflate"])
def test_max_message_closes_1009(web, path):
    async def go():
        async with websockets.connect(url(web, path), max_size=None) as ws:
            ok = "x" * (1024 * 1024)  # exactly the 1MB default: allowed
            await ws.send(ok)
            assert len(await asyncio.wait_for(ws.recv(), 10)) == len(ok)
            await ws.send("x" * (1024 * 1024 + 1))
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1009

        async with websockets.connect(url(web, "/small")) as ws:
            # over the endpoint's own 64KB limit, in fragments
            await ws.send(["a" * 40000, "b" * 40000])
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1009

    run(go())


def test_close_code_reaches_a_client_still_sending(web):
    # the daemon fails the connection in the middle of a message the client
    # is still sending: the client must read the close code, not a reset,
    # so the daemon drains the socket until the client closes
    async def too_large():
        async with websockets.connect(url(web, "/small")) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await ws.send(("x" * 40000 for _ in range(100)))
                await asyncio.wait_for(ws.recv(), 10)
            return ws.close_code

    fds = len(os.listdir(f"/proc/{web.pid}/fd"))
    for _ in range(5):
        assert run(too_large()) == 1009
    # the drained sockets are closed once the clients have gone
    deadline = time.monotonic() + 3
    while len(os.listdir(f"/proc/{web.pid}/fd")) > fds and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(os.listdir(f"/proc/{web.pid}/fd")) == fds


def test_drained_socket_closed_when_the_client_stays(web):
    # after its close frame the daemon drains what the client still sends
    # (no reset), and lets go of the socket a second after the client falls
    # silent without closing
    fds = len(os.listdir(f"/proc/{web.pid}/fd"))
    c = RawWs(web.ports["WEB"], "/small")
    c.send_frame(0x2, b"z" * 70000)
    assert c.close_code() == 1009
    for _ in range(20):
        c.sock.sendall(b"w" * 10000)  # would raise ConnectionResetError on a reset
        time.sleep(0.02)
    assert len(os.listdir(f"/proc/{web.pid}/fd")) > fds
    deadline = time.monotonic() + 3
    while len(os.listdir(f"/proc/{web.pid}/fd")) > fds and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(os.listdir(f"/proc/{web.pid}/fd")) == fds
    c.close()


def test_invalid_utf8_closes_1007(web):
    c = RawWs(web.ports["WEB"], "/echo")
    assert c.status == 101
    c.send_frame(0x1, b"ok")
    assert c.recv_frame() == (0x1, b"ok")
    c.send_frame(0x1, b"bad \xff\xfe text")
    assert c.close_code() == 1007
    c.close()


def test_utf8_checked_on_the_whole_message(web):
    # a character split across fragments is valid text
    c = RawWs(web.ports["WEB"], "/echo")
    c.send_frame(0x1, b"caf\xc3", fin=False)
    c.send_frame(0x0, b"\xa9 \xf0\x9f", fin=False)
    c.send_frame(0x0, b"\x98\x80", fin=True)
    assert c.recv_frame() == (0x1, "café 😀".encode())
    # an invalid byte in a later fragment fails the connection
    c.send_frame(0x1, b"fine so far ", fin=False)
    c.send_frame(0x0, b"then \xc3(", fin=True)
    assert c.close_code() == 1007
    c.close()
    # binary frames carry any bytes
    c = RawWs(web.ports["WEB"], "/echo")
    c.send_frame(0x2, b"\xff\xfe\xc3")
    assert c.recv_frame() == (0x2, b"\xff\xfe\xc3")
    c.close()


@pytest.mark.parametrize("bad", [
    b"\xc0\xaf",            # overlong "/"
    b"\xed\xa0\x80",        # a UTF-16 surrogate
    b"\xf4\x90\x80\x80",    # above U+10FFFF
    b"abc\xe2\x82",         # cut short at the end
    b"\x80",                # a lone continuation byte
    b"12345678\xf8\x88\x80\x80\x80",  # five-byte form, after the ASCII fast path
])
def test_invalid_utf8_forms_close_1007(web, bad):
    c = RawWs(web.ports["WEB"], "/echo")
    c.send_frame(0x1, bad)
    assert c.close_code() == 1007
    c.close()


@pytest.mark.parametrize("path", ["/echo", "/deflate"])
def test_fragmented_input(web, path):
    async def go():
        async with websockets.connect(url(web, path)) as ws:
            await ws.send(["frag", "mented ", "message"])
            assert await ws.recv() == "fragmented message"
            await ws.send([b"\x01\x02", b"\x03"])
            assert await ws.recv() == b"\x01\x02\x03"
            big = ["y" * 10000 for _ in range(20)]
            await ws.send(big)
            assert await ws.recv() == "".join(big)

        async with websockets.connect(url(web, "/ws")) as ws:
            # the handler name may end up in the first fragment only
            await ws.send(["ech", "o spl", "it"])
            assert await ws.recv() == "split"

    run(go())
    # interleaved control frame between fragments (raw)
    c = RawWs(web.ports["WEB"], "/echo")
    # the pong is read before the last fragment goes out: the daemon answers a
    # ping in the middle of a message, and the order of the two replies is fixed
    c.send_frame(0x1, "one ", fin=False)
    c.send_frame(0x9, "p")
    assert c.recv_frame() == (0xA, b"p")
    c.send_frame(0x0, "two", fin=True)
    assert c.recv_frame() == (0x1, b"one two")
    c.close()


def test_ping_pong(web):
    async def go():
        async with websockets.connect(url(web, "/echo")) as ws:
            pong = await ws.ping(b"abc")
            await asyncio.wait_for(pong, 3)
        # the server pings an idle client every ping_interval; a client that
        # answers (websockets does) stays connected past several intervals
        async with websockets.connect(url(web, "/keepalive"), ping_interval=None) as ws:
            await asyncio.sleep(4.5)
            await ws.send("still here")
            assert await asyncio.wait_for(ws.recv(), 3) == "still here"

    run(go())


def test_server_pings_and_hangs_up_without_pong(web):
    c = RawWs(web.ports["WEB"], "/keepalive")
    assert c.status == 101
    op, _ = c.recv_frame(timeout=4)
    assert op == 0x9, "expected a ping from the server"
    # no pong: libwebsockets hangs up after ping_interval + pong_timeout (2 s
    # here) by closing the socket, without a close frame; 6 s only bounds the
    # wait for it
    assert c.ends_without_close_frame(timeout=6)
    c.close()


def test_permessage_deflate_on_and_off(web):
    async def go():
        async with websockets.connect(url(web, "/deflate")) as ws:
            assert [e.name for e in ws.extensions] == ["permessage-deflate"]
            assert ws.response_headers.get_all("Sec-WebSocket-Extensions") == ["permessage-deflate"]
            text = "compressible " * 5000
            await ws.send(text)
            assert await ws.recv() == text
            await ws.send(os.urandom(50000))
            assert len(await ws.recv()) == 50000
        async with websockets.connect(url(web, "/plain")) as ws:
            assert ws.extensions == []
            assert "Sec-WebSocket-Extensions" not in ws.response_headers
            await ws.send("plain")
            assert await ws.recv() == "plain"
        # off unless asked for (libwebsockets 4.1.6 can abort under it)
        async with websockets.connect(url(web, "/echo")) as ws:
            assert ws.extensions == []
            assert "Sec-WebSocket-Extensions" not in ws.response_headers
        async with websockets.connect(url(web, "/echo"), compression=None) as ws:
            assert ws.extensions == []
            await ws.send("uncompressed client")
            assert await ws.recv() == "uncompressed client"

    run(go())


def test_subprotocols(web):
    async def go():
        async with websockets.connect(url(web, "/proto"), subprotocols=["chat.v1", "chat.v2"]) as ws:
            assert ws.subprotocol == "chat.v1"
            await ws.send("sp")
            assert await ws.recv() == "sp"
        async with websockets.connect(url(web, "/proto"), subprotocols=["other", "chat.v2"]) as ws:
            assert ws.subprotocol == "chat.v2"
        # no common name: the handshake goes on without a subprotocol, and an
        # endpoint never picks a name only another endpoint speaks
        async with websockets.connect(url(web, "/proto"), subprotocols=["nope"]) as ws:
            assert ws.subprotocol is None
        async with websockets.connect(url(web, "/echo"), subprotocols=["chat.v1"]) as ws:
            assert ws.subprotocol is None
            assert "Sec-WebSocket-Protocol" not in ws.response_headers

    run(go())


def test_origin_checks(web):
    port = web.ports["WEB"]
    assert RawWs(port, "/same", {"Origin": "https://evil.example"}).status == 403
    assert RawWs(port, "/same", {"Origin": f"http://{HOST}:{port}"}).status == 101
    assert RawWs(port, "/listed", {"Origin": "https://app.example"}).status == 101
    assert RawWs(port, "/listed", {"Origin": "https://app.example.evil"}).status == 403
    # non-browser clients send no Origin
    assert RawWs(port, "/listed").status == 101
    # endpoints without a list take any origin
    assert RawWs(port, "/echo", {"Origin": "https://anything.example"}).status == 101


def _broadcast(web, n, per_client):
    async def go():
        clients = [await websockets.connect(url(web, "/chat")) for _ in range(n)]
        try:
            await asyncio.sleep(0.2)
            expected = set()
            for i, ws in enumerate(clients[: min(n, 3)]):
                for k in range(per_client):
                    msg = f"from {i} #{k}"
                    expected.add((i, msg))
                    await ws.send(msg)

            async def collect(j, ws, want):
                got = []
                while len(got) < want:
                    got.append(await asyncio.wait_for(ws.recv(), 10))
                return got

            senders = min(n, 3)
            results = await asyncio.gather(
                *[collect(j, ws, (senders - (1 if j < senders else 0)) * per_client) for j, ws in enumerate(clients)]
            )
            for j, got in enumerate(results):
                want = sorted(m for i, m in expected if i != j)
                assert sorted(got) == want, f"client {j}"
            # exactly once: nothing more arrives
            for ws in clients[:5]:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.3)
        finally:
            await asyncio.gather(*[ws.close() for ws in clients])

    run(go(), timeout=90)


def test_broadcast_three_clients(web):
    _broadcast(web, 3, 20)


def test_broadcast_two_hundred_clients(web):
    _broadcast(web, 200, 5)


def test_wrong_path_and_plain_get(web):
    port = web.ports["WEB"]

    async def go():
        with pytest.raises(websockets.InvalidStatusCode) as e:
            async with websockets.connect(url(web, "/nowhere")):
                pass
        assert e.value.status_code == 404

    run(go())
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    conn.request("GET", "/echo")
    r = conn.getresponse()
    r.read()
    assert r.status == 426
    assert r.getheader("Upgrade", "").lower() == "websocket"
    conn.close()
    # a bad version is refused
    assert RawWs(port, "/echo", {"Sec-WebSocket-Version": "8"}).status == 400


def test_http_routes_during_websocket_traffic(web):
    port = web.ports["WEB"]

    async def go():
        async with websockets.connect(url(web, "/echo")) as ws:
            loop = asyncio.get_running_loop()
            for i in range(50):
                await ws.send(f"m{i}")
                assert await ws.recv() == f"m{i}"
                if i % 10 == 0:
                    status = await loop.run_in_executor(None, http_get, port, "/health")
                    assert status == 200

    run(go())


def http_get(port, path):
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    conn.close()
    return r.status


def test_close_codes_both_ways(web):
    # the client's code is echoed
    c = RawWs(web.ports["WEB"], "/echo")
    c.send_frame(0x8, struct.pack("!H", 4000) + b"bye")
    assert c.close_code() == 4000
    c.close()

    async def go():
        async with websockets.connect(url(web, "/echo")) as ws:
            await ws.close(code=4001, reason="done")
            assert ws.close_code == 4001

    run(go())


def test_many_clients_vanishing_mid_message(web):
    """60 clients at once send messages of up to 1 MB, some without reading the
    echo, some vanishing (TCP abort) mid-exchange, some dropping right after
    the upgrade request: the daemon stays up and serves the next client."""

    async def go():
        for seed in (11, 12):
            await vanishing_ws_clients(url(web, "/echo"), web.ports["WEB"], "/echo", seed=seed)
        async with websockets.connect(url(web, "/echo")) as ws:
            await ws.send("still here")
            assert await ws.recv() == "still here"

    run(go(), timeout=60)
    assert web.alive()
    # lws closes sockets before it reports them gone: libevent's complaint
    # about the descriptor is expected and must not surface as a warning
    assert "[warn] Epoll" not in web.log() and "[warn] libevent: Epoll" not in web.log()


def test_sigterm_closes_with_1001(web):
    async def go():
        clients = [await websockets.connect(url(web, "/echo")) for _ in range(3)]
        for ws in clients:
            await ws.send("x")
            assert await ws.recv() == "x"
        web.send_signal(signal.SIGTERM)
        for ws in clients:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1001

    run(go())
    assert web.wait(5) == 0


def test_echo_exchange_over_50_connections(web):
    """50 connections each send 40 64-byte messages one after another; every
    one comes back, in order, on its own connection (the rate is bench.py's
    business)."""
    rounds = 40

    async def go():
        clients = [await websockets.connect(url(web, "/plain"), compression=None) for _ in range(50)]

        async def pump(i, ws):
            got = []
            for n in range(rounds):
                msg = f"{i:02d}:{n:03d}:".ljust(64, "x")
                await ws.send(msg)
                got.append(await ws.recv())
            return got

        results = await asyncio.gather(*[pump(i, ws) for i, ws in enumerate(clients)])
        await asyncio.gather(*[ws.close() for ws in clients])
        return results

    results = run(go())
    for i, got in enumerate(results):
        assert got == [f"{i:02d}:{n:03d}:".ljust(64, "x") for n in range(rounds)], i


def test_control_socket_lists_sends_and_closes(daemon):  # noqa: F811
    from ctl_util import CtlClient

    d = daemon(CONFIG.replace('control_socket: ""', 'control_socket: "ctl.sock"'))
    ctl = CtlClient(d.tmp_path / "ctl.sock")

    async def go():
        a = await websockets.connect(url(d, "/chat"))
        b = await websockets.connect(url(d, "/echo"))
        await b.send("x")
        assert await b.recv() == "x"
        rows = [r for r in ctl.command("connections web")["connections"] if r["protocol"] == "ws"]
        assert sorted(r["path"] for r in rows) == ["/chat", "/echo"]
        echo_row = next(r for r in rows if r["path"] == "/echo")
        assert echo_row["messages_in"] == 1 and echo_row["messages_out"] == 1
        assert echo_row["local"].endswith(f":{d.ports['WEB']}")
        chat_id = next(r["id"] for r in rows if r["path"] == "/chat")
        assert ctl.command(f"send {echo_row['id']} pushed") == {"ok": True}
        assert await asyncio.wait_for(b.recv(), 3) == "pushed"
        assert ctl.command("broadcast chat to the room") == {"ok": True, "sent": 1, "dropped": 0}
        assert await asyncio.wait_for(a.recv(), 3) == "to the room"
        assert ctl.command(f"close {chat_id}") == {"ok": True}
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(a.recv(), 3)
        assert a.close_code == 1000
        rows = [r for r in ctl.command("connections")["connections"] if r["protocol"] == "ws"]
        assert [r["path"] for r in rows] == ["/echo"]
        await b.close()

    run(go())


def test_upgrade_head_in_pieces_and_data_right_after_it(web):
    port = web.ports["WEB"]
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET /echo HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    # the head trickles in: the HTTP layer buffers it, then hands it over
    s = socket.create_connection((HOST, port), timeout=5)
    s.sendall(head[:20])
    time.sleep(0.1)
    s.sendall(head[20:60])
    time.sleep(0.1)
    s.sendall(head[60:])
    raw = RawWs.__new__(RawWs)
    raw.sock, raw.buf = s, b""
    while b"\r\n\r\n" not in raw.buf:
        raw.buf += s.recv(4096)
    assert raw.buf.startswith(b"HTTP/1.1 101")
    raw.buf = raw.buf.partition(b"\r\n\r\n")[2]
    raw.send_frame(0x1, "after trickle")
    assert raw.recv_frame() == (0x1, b"after trickle")
    s.close()
    # a frame in the same packet as the head is not lost
    s = socket.create_connection((HOST, port), timeout=5)
    mask = b"\x01\x02\x03\x04"
    payload = b"eager"
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    s.sendall(head + frame)
    raw = RawWs.__new__(RawWs)
    raw.sock, raw.buf = s, b""
    while b"\r\n\r\n" not in raw.buf:
        raw.buf += s.recv(4096)
    raw.buf = raw.buf.partition(b"\r\n\r\n")[2]
    assert raw.recv_frame() == (0x1, b"eager")
    s.close()


def test_reload_keeps_websockets_and_adds_endpoints(web):
    async def go():
        async with websockets.connect(url(web, "/echo")) as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            new = web.config.replace('"/echo": { handler: "echo" }', '"/echo": { handler: "echo" }\n        "/added": { handler: "ping" }')
            web.config_path.write_text(new)
            web.send_signal(signal.SIGHUP)
            assert web.wait_log(r"reload", timeout=5)
            await asyncio.sleep(0.3)
            await ws.send("after")
            assert await ws.recv() == "after"
            async with websockets.connect(url(web, "/added")) as ws2:
                await ws2.send("anything")
                assert await ws2.recv() == "+PONG"

    run(go())
