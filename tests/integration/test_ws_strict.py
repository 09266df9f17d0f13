# SPDX-License-Identifier: MIT
"""WebSocket strictness under hostile clients, over raw sockets.

A small RFC 6455 client built from socket and struct sends what no library
would: unmasked frames, reserved bits and opcodes, non-minimal lengths,
fragmented control frames, stray continuations, bad close codes, invalid
UTF-8 split over fragments, pings between fragments, frames after a close,
a header declaring far more than max_message, and bad handshakes. Each test
checks the exact close code and the exact sequence of frames the daemon
sends before it closes the TCP connection, and that a well-behaved client
on another connection is still served afterwards."""
import base64
import os
import socket
import ssl
import struct
import time

import pytest

from daemon_util import HOST, daemon  # noqa: F401  (daemon is a fixture)
from test_ws import RawWs
from tls_util import pki, tls_context  # noqa: F401  (pki is a fixture)

CONFIG = """
[daemon]
control_socket: ""

[handlers]
echo { type: "echo" }
slow { type: "exec" command: ["sh", "-c", "sleep 0.3; cat"] timeout: "2s" }

[listeners]
web {
    protocol: "http"
    listen: "127.0.0.1:PORT_WEB"
    websocket {
        "/echo": { handler: "echo"  ping_interval: "0s" }
        "/slow": { handler: "slow"  ping_interval: "0s" }
        "/deflate": { handler: "echo"  deflate: true  ping_interval: "0s" }
        "/small": { handler: "echo"  max_message: "64KB"  ping_interval: "0s" }
    }
}
"""

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


@pytest.fixture
def web(daemon):  # noqa: F811
    return daemon(CONFIG)


def frame(opcode, payload=b"", fin=True, rsv=0, masked=True, length=None, encoding=None):
    """One client frame. LENGTH: the declared payload length (default: the
    real one); ENCODING: force the 7-bit (None), 16-bit (126) or 64-bit
    (127) length form, minimal or not."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    form = encoding or (0 if n < 126 else 126 if n < 65536 else 127)
    m = 0x80 if masked else 0
    if form == 0:
        hdr = struct.pack("!BB", b0, m | n)
    elif form == 126:
        hdr = struct.pack("!BBH", b0, m | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, m | 127, n)
    if not masked:
        return hdr + payload
    key = os.urandom(4)
    return hdr + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


class Ws(RawWs):
    """test_ws's raw client, with whole writes of several frames and the
    frames read until the TCP close."""

    def __init__(self, port, path="/echo", key=None, headers=None, tls=None):
        headers = dict(headers or {})
        if key is not None:
            headers["Sec-WebSocket-Key"] = key
        super().__init__(port, path, headers=headers, tls=tls)

    def send(self, *frames):
        """All of FRAMES in one write."""
        self.sock.sendall(b"".join(frames))

    def frame(self):
        """(opcode, payload) of the next frame; a close frame as (CLOSE, code)."""
        op, data = self.recv_frame()
        if op == CLOSE:
            return CLOSE, struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
        return op, data

    def frames(self):
        """Every frame until the daemon closes the TCP connection."""
        out = []
        while True:
            try:
                out.append(self.frame())
            except (EOFError, ConnectionResetError, ssl.SSLEOFError):
                return out



def served(d, path="/echo", port="WEB", tls=None):
    """A well-behaved client on a new connection gets its echo and a clean close."""
    c = Ws(d.ports[port], path, tls=tls)
    assert c.status == 101
    c.send(frame(TEXT, "still served"), frame(CLOSE, close_payload(1000)))
    assert c.frames() == [(TEXT, b"still served"), (CLOSE, 1000)]
    c.close()


def hostile(d, *frames_, path="/echo"):
    c = Ws(d.ports["WEB"], path)
    assert c.status == 101
    c.send(*frames_)
    got = c.frames()
    c.close()
    served(d)
    return got


# ---- framing violations: 1002 ---------------------------------------------------


def test_unmasked_frame_fails_1002(web):
    assert hostile(web, frame(TEXT, "not masked", masked=False)) == [(CLOSE, 1002)]
    # also after a good message in the same write: its echo comes first
    assert hostile(web, frame(TEXT, "ok"), frame(BINARY, b"\x01", masked=False)) == [(TEXT, b"ok"), (CLOSE, 1002)]


VIOLATIONS = {
    "ping payload of 126": [frame(PING, b"p" * 126)],
    "pong payload of 126": [frame(PONG, b"p" * 126)],
    "close payload of 1 byte": [frame(CLOSE, b"\x03")],
    "rsv1 without extension": [frame(TEXT, "x", rsv=4)],
    "rsv2": [frame(TEXT, "x", rsv=2)],
    "rsv3 on a ping": [frame(PING, b"x", rsv=1)],
    "16-bit length for 5 bytes": [frame(TEXT, "hello", encoding=126)],
    "64-bit length for 200 bytes": [frame(BINARY, b"b" * 200, encoding=127)],
    "64-bit length with the top bit": [frame(BINARY, b"", length=1 << 63, encoding=127)],
    "opcode 3": [frame(3, "x")],
    "opcode 7": [frame(7, "x")],
    "opcode 0xb": [frame(0xB, "x")],
    "opcode 0xf": [frame(0xF, "x")],
    "fragmented ping": [frame(PING, b"a", fin=False), frame(CONT, b"b")],
    "fragmented close": [frame(CLOSE, close_payload(1000), fin=False)],
    "continuation without start": [frame(CONT, "orphan")],
    "text inside a fragmented message": [frame(TEXT, "a", fin=False), frame(TEXT, "b")],
    "binary inside a fragmented message": [frame(BINARY, b"a", fin=False), frame(BINARY, b"b", fin=False)],
}


@pytest.mark.parametrize("case", list(VIOLATIONS))
def test_protocol_violation_answered_with_close_1002(web, case):
    assert hostile(web, *VIOLATIONS[case]) == [(CLOSE, 1002)]


def test_violation_after_frames_in_the_same_write(web):
    got = hostile(web, frame(TEXT, "one"), frame(PING, b"p1"), frame(CONT, "stray"), frame(TEXT, "never"))
    assert got == [(TEXT, b"one"), (PONG, b"p1"), (CLOSE, 1002)]


def test_frames_cut_at_every_byte(web):
    # headers, pings and closes cut across reads are put together again
    c = Ws(web.ports["WEB"])
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = (frame(TEXT, "split", fin=False) + frame(PING, b"pp") + frame(CONT, "!") + frame(BINARY, b"b" * 300) +
            frame(CLOSE, close_payload(1001, b"bye")))
    for i in range(len(data)):
        c.sock.sendall(data[i:i + 1])
        time.sleep(0.002)  # separate segments, so that reads end anywhere
    assert c.frames() == [(PONG, b"pp"), (TEXT, b"split!"), (BINARY, b"b" * 300), (CLOSE, 1001)]
    c.close()
    served(web)


def test_long_lengths_in_shortest_form_pass(web):
    got = hostile(web, frame(TEXT, "x" * 126), frame(BINARY, b"y" * 65535), frame(BINARY, b"z" * 65536),
                  frame(CLOSE, close_payload(1000)))
    assert got == [(TEXT, b"x" * 126), (BINARY, b"y" * 65535), (BINARY, b"z" * 65536), (CLOSE, 1000)]


# ---- close frames -------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
def test_invalid_close_code_fails_1002(web, code):
    assert hostile(web, frame(CLOSE, close_payload(code))) == [(CLOSE, 1002)]


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999])
def test_valid_close_code_is_echoed(web, code):
    assert hostile(web, frame(CLOSE, close_payload(code, b"bye"))) == [(CLOSE, code)]


def test_empty_close_is_answered(web):
    assert hostile(web, frame(CLOSE)) == [(CLOSE, 1000)]


@pytest.mark.parametrize("reason", [b"\xff", b"ok \xc3", b"\xed\xa0\x80", b"\xc0\xaf"])
def test_close_reason_not_utf8_fails_1007(web, reason):
    assert hostile(web, frame(CLOSE, close_payload(1000, reason))) == [(CLOSE, 1007)]


def test_close_reason_utf8_accepted(web):
    assert hostile(web, frame(CLOSE, close_payload(1001, "au revoir ✓".encode()))) == [(CLOSE, 1001)]


def test_nothing_handled_after_the_close(web):
    # frames after the client's close are neither answered nor echoed; the
    # daemon's close echoing the code is the last frame
    got = hostile(web, frame(TEXT, "before"), frame(CLOSE, close_payload(4001)), frame(TEXT, "after"),
                  frame(PING, b"late"), frame(CONT, "bad"))
    assert got == [(TEXT, b"before"), (CLOSE, 4001)]


def test_pong_before_the_close(web):
    assert hostile(web, frame(PING, b"last"), frame(CLOSE, close_payload(1000))) == [(PONG, b"last"), (CLOSE, 1000)]


@pytest.mark.parametrize("frames,want", [
    ([frame(TEXT, "early"), frame(PING, b"p"), frame(CLOSE, close_payload(1000))],
     [(TEXT, b"early"), (PONG, b"p"), (CLOSE, 1000)]),
    ([frame(TEXT, "early"), frame(TEXT, "bad", masked=False)], [(TEXT, b"early"), (CLOSE, 1002)]),
], ids=["good", "unmasked"])
def test_frames_in_the_upgrade_write(web, frames, want):
    # frames sent in the same write as the upgrade request are checked too
    port = web.ports["WEB"]
    s = socket.create_connection((HOST, port), timeout=5)
    s.sendall(f"GET /echo HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
              + b"".join(frames))
    c = Ws.__new__(Ws)
    c.sock, c.buf = s, b""
    while b"\r\n\r\n" not in c.buf:
        c.buf += s.recv(65536)
    head, _, c.buf = c.buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert c.frames() == want
    c.close()
    served(web)


def test_close_after_frames_sent_separately(web):
    c = Ws(web.ports["WEB"])
    c.send(frame(TEXT, "hello"))
    assert c.frame() == (TEXT, b"hello")
    c.send(frame(CLOSE, close_payload(1000)))
    c.send(frame(TEXT, "ignored"))
    assert c.frames() == [(CLOSE, 1000)]
    c.close()
    served(web)


# ---- UTF-8: fail fast -----------------------------------------------------------------


def test_invalid_utf8_fails_at_its_fragment(web):
    # the rest of the message is never sent: the close must come anyway
    c = Ws(web.ports["WEB"])
    c.send(frame(TEXT, "valid start ", fin=False))
    c.send(frame(CONT, b"then \xff here", fin=False))
    assert c.frames() == [(CLOSE, 1007)]
    c.close()
    served(web)


def test_invalid_utf8_in_the_first_fragment(web):
    c = Ws(web.ports["WEB"])
    c.send(frame(TEXT, b"\xed\xa0\x80 surrogate", fin=False))
    assert c.frames() == [(CLOSE, 1007)]
    c.close()
    served(web)


def test_code_point_split_at_a_fragment_boundary(web):
    euro = "€".encode()  # e2 82 ac
    c = Ws(web.ports["WEB"])
    c.send(frame(TEXT, b"price " + euro[:2], fin=False))
    c.send(frame(CONT, euro[2:] + b"5", fin=False))
    c.send(frame(CONT, b"!", fin=True))
    assert c.frame() == (TEXT, "price €5!".encode())
    # a split character whose next byte is wrong fails at that fragment
    c.send(frame(TEXT, b"x" + euro[:1], fin=False))
    c.send(frame(CONT, b"A", fin=False))
    assert c.frames() == [(CLOSE, 1007)]
    c.close()
    served(web)


def test_pings_around_invalid_utf8(web):
    # the ping before the bad message is answered, the one after it is not
    got = hostile(web, frame(PING, b"before"), frame(TEXT, b"bad \xff"), frame(PING, b"after"))
    assert got == [(PONG, b"before"), (CLOSE, 1007)]


def test_incomplete_code_point_at_the_end_fails(web):
    assert hostile(web, frame(TEXT, b"abc\xe2\x82", fin=False), frame(CONT, b"")) == [(CLOSE, 1007)]


def test_invalid_utf8_with_deflate_negotiated(web):
    c = Ws(web.ports["WEB"], "/deflate", headers={"Sec-WebSocket-Extensions": "permessage-deflate"})
    assert c.status == 101 and "permessage-deflate" in c.head
    # an uncompressed message (RSV1 clear) is allowed with the extension
    c.send(frame(TEXT, "plain", fin=False))
    c.send(frame(CONT, b"\xf5", fin=False))
    assert c.frames() == [(CLOSE, 1007)]
    c.close()
    served(web, "/deflate")


# ---- control frames: order and count -----------------------------------------------------


def test_pong_between_fragments_goes_before_the_reply(web):
    got = hostile(web, frame(TEXT, "ab", fin=False), frame(PING, b"mid"), frame(CONT, "cd"),
                  frame(CLOSE, close_payload(1000)))
    assert got == [(PONG, b"mid"), (TEXT, b"abcd"), (CLOSE, 1000)]


def test_pong_not_behind_a_slow_reply(web):
    # the reply to the message takes 0.3 s: the pong for the ping sent after
    # the message does not wait for it
    c = Ws(web.ports["WEB"], "/slow")
    c.send(frame(TEXT, "slow one"), frame(PING, b"now"))
    assert c.frame() == (PONG, b"now")
    assert c.frame() == (TEXT, b"slow one")
    c.close()
    served(web)


def test_every_ping_gets_its_pong(web):
    pings = [b"", b"1", b"two", b"p" * 125, b"\x00\xff binary"]
    got = hostile(web, *[frame(PING, p) for p in pings], frame(CLOSE, close_payload(1000)))
    assert got == [(PONG, p) for p in pings] + [(CLOSE, 1000)]


def test_many_pings_in_one_read_between_messages(web):
    data = []
    want = []
    for i in range(50):
        data.append(frame(PING, f"ping {i}"))
        want.append((PONG, f"ping {i}".encode()))
    data.append(frame(TEXT, "after"))
    want.append((TEXT, b"after"))
    data.append(frame(CLOSE, close_payload(1000)))
    want.append((CLOSE, 1000))
    assert hostile(web, *data) == want


def test_pings_with_deflate(web):
    c = Ws(web.ports["WEB"], "/deflate", headers={"Sec-WebSocket-Extensions": "permessage-deflate"})
    assert c.status == 101
    c.send(frame(PING, b"a"), frame(PING, b"b"), frame(CLOSE, close_payload(1000)))
    assert c.frames() == [(PONG, b"a"), (PONG, b"b"), (CLOSE, 1000)]
    c.close()


def test_unsolicited_pong_is_ignored(web):
    assert hostile(web, frame(PONG, b"unasked"), frame(TEXT, "x"), frame(CLOSE, close_payload(1000))) == [
        (TEXT, b"x"), (CLOSE, 1000)]


# ---- max_message at the header ---------------------------------------------------------------


def test_declared_length_over_max_message_refused_at_the_header(web):
    # 100 MB declared, a few bytes sent: the 1009 comes without the rest
    c = Ws(web.ports["WEB"], "/small")
    c.send(frame(BINARY, length=100 * 1024 * 1024) + b"only a few bytes")
    assert c.frames() == [(CLOSE, 1009)]
    c.close()
    served(web, "/small")


def test_fragment_header_passing_max_message_refused(web):
    c = Ws(web.ports["WEB"], "/small")
    c.send(frame(BINARY, b"a" * 40000, fin=False))
    c.send(frame(CONT, length=40000)[:6])  # a header alone, no payload
    assert c.frames() == [(CLOSE, 1009)]
    c.close()
    served(web, "/small")


def test_exactly_max_message_passes(web):
    c = Ws(web.ports["WEB"], "/small")
    c.send(frame(BINARY, b"m" * 65536))
    assert c.frame() == (BINARY, b"m" * 65536)
    c.send(frame(CLOSE, close_payload(1000)))
    assert c.frames() == [(CLOSE, 1000)]
    c.close()


# ---- over TLS -----------------------------------------------------------------------------


def test_checked_over_tls(daemon, pki):  # noqa: F811
    # a WSS connection reaches lws through the TLS relay: checked the same way
    conf = CONFIG.replace("[listeners]\n", f"""[listeners]
wss {{
    protocol: "http"
    listen: "127.0.0.1:PORT_WSS"
    websocket {{ "/echo": {{ handler: "echo"  ping_interval: "0s" }} }}
    tls {{ cert: "{pki.localhost.cert}"  key: "{pki.localhost.key}" }}
}}
""")
    d = daemon(conf)
    ctx = tls_context(pki)
    c = Ws(d.ports["WSS"], tls=ctx)
    assert c.status == 101
    c.send(frame(TEXT, "ok"), frame(PING, b"p"), frame(TEXT, "plain", masked=False))
    assert c.frames() == [(TEXT, b"ok"), (PONG, b"p"), (CLOSE, 1002)]
    c.close()
    c = Ws(d.ports["WSS"], tls=ctx)
    c.send(frame(TEXT, "a", fin=False), frame(PING, b"between"), frame(CONT, "b"), frame(CLOSE, close_payload(3001)))
    assert c.frames() == [(PONG, b"between"), (TEXT, b"ab"), (CLOSE, 3001)]
    c.close()
    served(d, port="WSS", tls=ctx)


# ---- the handshake ---------------------------------------------------------------------------


def test_good_key_is_accepted(web):
    c = Ws(web.ports["WEB"], key="dGhlIHNhbXBsZSBub25jZQ==")
    assert c.status == 101
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in c.head
    c.close()


@pytest.mark.parametrize("headers,status", [
    ({"Sec-WebSocket-Key": "short"}, 400),
    ({"Sec-WebSocket-Key": base64.b64encode(b"x" * 15).decode()}, 400),
    ({"Sec-WebSocket-Key": base64.b64encode(b"x" * 17).decode()}, 400),
    ({"Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAAA*=="}, 400),
    ({"Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAAAAAA"}, 400),
    ({"Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAAAB=="}, 400),
    ({"Sec-WebSocket-Key": ""}, 400),
    ({"Cookie": "c" * 8100}, 431),
    ({f"X-Header-{i}": "v" * 200 for i in range(60)}, 431),
], ids=["short key", "15-byte key", "17-byte key", "key not base64", "key without padding",
        "key with stray bits", "empty key", "one big header", "many headers"])
def test_bad_handshake_gets_an_http_answer(web, headers, status):
    # lws would drop a head it cannot hold without a word: 431 instead
    c = Ws(web.ports["WEB"], headers=headers)
    assert c.status == status
    c.close()
    served(web)


def test_big_handshake_that_fits_is_accepted(web):
    c = Ws(web.ports["WEB"], headers={"Cookie": "c" * 7500})
    assert c.status == 101
    c.send(frame(TEXT, "big head"), frame(CLOSE, close_payload(1000)))
    assert c.frames() == [(TEXT, b"big head"), (CLOSE, 1000)]
    c.close()
