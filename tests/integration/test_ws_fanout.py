# SPDX-License-Identifier: MIT
"""Broadcast fan-out to WebSocket subscribers, byte for byte.

Messages pushed to a WebSocket in one loop pass go out together, framed by
the daemon and sent in one write. These tests read the subscribers' raw
bytes: every frame in order, minimal lengths,
unmasked, text when the bytes are UTF-8, across the sizes where a batch is cut (a frame over 1 KiB, a
batch over 4 KiB, an empty message) and mixed with the pongs a subscriber
is owed; a subscriber that never reads is dropped as a slow consumer while
the others get everything."""
import struct

from daemon_util import daemon  # noqa: F401  (daemon is a fixture)
from test_ws import RawWs
from test_ws_strict import BINARY, CLOSE, PING, PONG, TEXT, frame

CONFIG = """
[daemon]
control_socket: ""

[handlers]
room { type: "broadcast" }

[listeners]
web {
    protocol: "http"
    listen: "127.0.0.1:PORT_WEB"
    max_output: "MAX_OUTPUT"
    websocket { "/room": { handler: "room"  deflate: false  ping_interval: "0s" } }
}
"""


def server_frame(opcode, payload):
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        hdr = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        hdr = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return hdr + payload


def utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def join(d, n):
    subs = [RawWs(d.ports["WEB"], "/room") for _ in range(n)]
    assert all(s.status == 101 for s in subs)
    return subs


def sync(pub, subs):
    """A marker message every subscriber has seen: all are in the room."""
    pub.sock.sendall(frame(TEXT, "sync"))
    for s in subs:
        assert s.recv_frame() == (TEXT, b"sync")


def read_bytes(s, n):
    s.sock.settimeout(5.0)
    return s._need(n)


def messages():
    out = []
    for i, size in enumerate([1, 64, 125, 126, 0, 127, 1000, 1024, 1025, 3000, 64, 64, 65535, 65536, 7, 200000]):
        body = bytes((i * 7 + k) % 251 for k in range(size))
        if i % 3 == 0:
            out.append((TEXT, bytes(b % 94 + 33 for b in body)))
        else:
            out.append((BINARY, body))
    out += [(TEXT, ("m%d" % i).encode()) for i in range(300)]  # many small ones: several full batches
    return out


def test_messages_in_one_write_reach_every_subscriber_byte_for_byte(daemon):  # noqa: F811
    d = daemon(CONFIG.replace("MAX_OUTPUT", "1MB"))
    subs = join(d, 3)
    pub = RawWs(d.ports["WEB"], "/room")
    sync(pub, subs)
    msgs = messages()
    pub.sock.sendall(b"".join(frame(op, p) for op, p in msgs))
    # a room relays bytes: text when they are UTF-8, whatever the frame was
    want = b"".join(server_frame(TEXT if utf8(p) else BINARY, p) for _, p in msgs)
    for s in subs:
        assert read_bytes(s, len(want)) == want
    # the publisher got nothing back: the next thing it reads is another's message
    subs[0].sock.sendall(frame(TEXT, "from a subscriber"))
    assert pub.recv_frame() == (TEXT, b"from a subscriber")
    for s in subs + [pub]:
        s.sock.close()


def test_pongs_and_pushes_for_one_subscriber_in_one_pass(daemon):  # noqa: F811
    d = daemon(CONFIG.replace("MAX_OUTPUT", "1MB"))
    (sub,) = join(d, 1)
    pub = RawWs(d.ports["WEB"], "/room")
    sync(pub, [sub])
    # the subscriber's pings and the publisher's messages are read in the same
    # loop pass: each pong and each message arrives once, whole, in its order
    for round_ in range(20):
        pings = [("p%d.%d" % (round_, i)).encode() for i in range(3)]
        sub.sock.sendall(b"".join(frame(PING, p) for p in pings))
        pub.sock.sendall(b"".join(frame(TEXT, "r%d.%d" % (round_, i)) for i in range(5)))
        got = [sub.recv_frame() for _ in range(8)]
        assert [p for op, p in got if op == PONG] == pings
        assert [p for op, p in got if op == TEXT] == [("r%d.%d" % (round_, i)).encode() for i in range(5)]
    sub.sock.close()
    pub.sock.close()


def test_subscriber_that_never_reads_is_dropped_and_the_others_get_everything(daemon):  # noqa: F811
    d = daemon(CONFIG.replace("MAX_OUTPUT", "64KB"))
    slow = RawWs(d.ports["WEB"], "/room", rcvbuf=4096)
    (fast,) = join(d, 1)
    pub = RawWs(d.ports["WEB"], "/room")
    sync(pub, [fast])
    assert slow.recv_frame() == (TEXT, b"sync")
    body = b"x" * 1000
    n = 0
    # small messages, each batched with what else is queued, until the
    # daemon's output cap (not the kernel's buffers) is exceeded
    while not (n % 100 == 0 and d.wait_log(r"handler room: dropping slow consumer \(connection \d+\)", timeout=0)):
        assert n < 100000, "never dropped"
        pub.sock.sendall(b"".join(frame(TEXT, b"%05d" % (n + k) + body) for k in range(4)))
        for k in range(4):
            assert fast.recv_frame() == (TEXT, b"%05d" % (n + k) + body)
        n += 4
    # what the slow one got is a prefix of the messages, then the close
    got = []
    while True:
        op, p = slow.recv_frame()
        if op == CLOSE:
            assert p == struct.pack("!H", 1008) + b"slow consumer"
            break
        got.append(p)
    assert got == [b"%05d" % i + body for i in range(len(got))]
    assert 0 < len(got) < n
    slow.sock.close()
    fast.sock.close()
    pub.sock.close()
