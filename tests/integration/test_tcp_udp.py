# SPDX-License-Identifier: MIT
"""Handlers over real TCP and UDP sockets: every
handler type, handler selection, error replies, pipelining with async
handlers, exec failures, stream process lifecycle and broadcast."""
import datetime
import re
import time

import pytest

from daemon_util import (  # noqa: F401  (daemon is a fixture)
    LineClient,
    UdpClient,
    daemon,
    pid_alive,
    proc_cmdline,
    read_all_lines,
    wait_pid_gone,
)

BASE = """
[daemon]
log_level: "debug"
control_socket: ""
max_connections: 2000
shutdown_timeout: "2s"

[limits]
idle_timeout: "30s"

[handlers]
echo  { type: "echo" }
ping  { type: "static" reply: "+PONG" }
tpl   { type: "static" reply: "p={payload}|r={remote_addr}|c={connection_id}|t={time}" }
upper { type: "exec" command: ["tr", "a-z", "A-Z"] timeout: "2s" }
fail  { type: "exec" command: ["sh", "-c", "exit 3"] }
hang  { type: "exec" command: ["sleep", "10"] timeout: "300ms" }
lines3 { type: "exec" command: ["printf", "one\\ntwo\\n"] }
cat   { type: "stream" command: ["cat"] }
chat  { type: "broadcast" }
secret { type: "static" reply: "not on this listener" }

[listeners]
lines {
    protocol: "tcp"
    listen: "127.0.0.1:PORT_LINES"
    handlers: ["echo", "ping", "tpl", "upper", "fail", "hang", "lines3", "cat", "chat"]
}
dgram {
    protocol: "udp"
    listen: "127.0.0.1:PORT_DGRAM"
    handlers: ["echo", "ping", "tpl", "upper", "fail", "lines3", "cat", "chat"]
}
whole { protocol: "tcp" listen: "127.0.0.1:PORT_WHOLE" handler: "echo" }
wholeu { protocol: "udp" listen: "127.0.0.1:PORT_WHOLEU" handler: "echo" }
room  { protocol: "tcp" listen: "127.0.0.1:PORT_ROOM" handler: "chat" }
"""


@pytest.fixture
def d(daemon):
    return daemon(BASE)


# ---- echo, static, selection -------------------------------------------------


def test_tcp_echo_and_static_selection(d):
    with LineClient(d.ports["LINES"]) as c:
        assert c.request("echo hi") == "hi"
        assert c.request("echo: hi") == "hi"
        assert c.request("echo:hi") == "hi"
        assert c.request("echo:    hi there") == "hi there"
        assert c.request("echo  two spaces") == " two spaces"
        assert c.request("echo") == ""
        assert c.request("ping") == "+PONG"
        assert c.request("ping ignored payload") == "+PONG"
        # CRLF line endings: the \r is not part of the message, and the
        # replies end the way the request lines did
        c.send(b"echo crlf\r\nping\r\necho lf\n")
        assert c.readlines(3) == ["crlf\r", "+PONG\r", "lf"]
        # raw bytes survive
        c.send(b"echo \xc3\xa9t\xc3\xa9\n")
        assert c.readline() == "\u00e9t\u00e9"


def test_tcp_error_replies(d):
    with LineClient(d.ports["LINES"]) as c:
        assert c.request("nope hi") == "Unknown handler: nope"
        assert c.request("nope: hi") == "Unknown handler: nope"
        assert c.request("nope") == "Unknown handler: nope"
        # exists in the config, but is not one of this listener's handlers
        assert c.request("secret x") == "Unknown handler: secret"
        # handler names are case sensitive
        assert c.request("ECHO hi") == "Unknown handler: ECHO"
        # no token at all
        assert c.request(":hi") == "Invalid message format"
        assert c.request(" hi") == "Invalid message format"
        # the connection is still fine afterwards
        assert c.request("echo still here") == "still here"


def test_udp_echo_static_and_selection(d):
    with UdpClient(d.ports["DGRAM"]) as u:
        assert u.request("echo hi") == b"hi"
        assert u.request("echo: hi") == b"hi"
        assert u.request("echo:hi") == b"hi"
        # the token ends at a newline too
        assert u.request("echo\nhi") == b"hi"
        assert u.request("echo\nline1\nline2") == b"line1\nline2"
        assert u.request("ping") == b"+PONG"
        # one datagram back, no newline added
        assert u.request("echo x y z") == b"x y z"


def test_udp_error_replies(d):
    with UdpClient(d.ports["DGRAM"]) as u:
        assert u.request("nope hi") == b"Unknown handler: nope"
        assert u.request("secret hi") == b"Unknown handler: secret"
        assert u.request(":hi") == b"Invalid message format"
        assert u.request(" hi") == b"Invalid message format"
        assert u.request("fail") == b"Error: exit status 3"


def test_single_handler_gets_whole_line(d):
    with LineClient(d.ports["WHOLE"]) as c:
        assert c.request("ping hello") == "ping hello"
        assert c.request("echo: x") == "echo: x"
        assert c.request("nope") == "nope"
        assert c.request(":x") == ":x"
    with UdpClient(d.ports["WHOLEU"]) as u:
        assert u.request("ping hello") == b"ping hello"
        assert u.request("echo\nhi") == b"echo\nhi"


def _parse_tpl(reply):
    fields = dict(part.split("=", 1) for part in reply.split("|"))
    return fields


def _now_ms():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _check_time(t, before, after):
    # ISO-8601 UTC with milliseconds, read between BEFORE and AFTER (an order, not a duration)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", t), t
    when = datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    assert before <= when <= after, (t, before, after)


def test_static_templates_tcp(d):
    with LineClient(d.ports["LINES"]) as a, LineClient(d.ports["LINES"]) as b:
        before = _now_ms()
        fa = _parse_tpl(a.request("tpl hello world"))
        after = datetime.datetime.now(datetime.timezone.utc)
        fb = _parse_tpl(b.request("tpl: other"))
        fa2 = _parse_tpl(a.request("tpl"))
        addr_a, addr_b = a.local_addr(), b.local_addr()
    assert fa["p"] == "hello world"
    assert fb["p"] == "other"
    assert fa2["p"] == ""
    assert fa["r"] == addr_a
    assert fb["r"] == addr_b
    # ids count connections from 1 in this fresh daemon; the id is per connection
    assert (fa["c"], fb["c"], fa2["c"]) == ("1", "2", "1")
    _check_time(fa["t"], before, after)


def test_static_templates_udp(d):
    with UdpClient(d.ports["DGRAM"]) as u:
        before = _now_ms()
        reply = u.request("tpl payload here")
        after = datetime.datetime.now(datetime.timezone.utc)
        assert reply is not None
        f = _parse_tpl(reply.decode())
        assert f["p"] == "payload here"
        assert f["r"] == u.local_addr()
        assert f["c"] == "0"  # a datagram has no connection
        _check_time(f["t"], before, after)


# ---- exec ----------------------------------------------------------------------


def test_exec_tcp(d):
    with LineClient(d.ports["LINES"]) as c:
        assert c.request("upper hello world") == "HELLO WORLD"
        assert c.request("upper: mixed Case 123") == "MIXED CASE 123"
        # the program's trailing newline is stripped: exactly one line back
        assert c.request("upper x") == "X"
        assert c.request("echo next") == "next"


def test_exec_udp(d):
    with UdpClient(d.ports["DGRAM"]) as u:
        assert u.request("upper hello") == b"HELLO"
        # one trailing newline stripped, inner ones kept, one datagram
        assert u.request("lines3") == b"one\ntwo"


def test_exec_nonzero_exit_tcp(d):
    with LineClient(d.ports["LINES"]) as c:
        assert c.request("fail") == "Error: exit status 3"
        assert c.request("fail with payload") == "Error: exit status 3"
        assert c.request("echo after") == "after"


def test_exec_timeout_kills_process(d):
    with LineClient(d.ports["LINES"]) as c:
        c.sendline("hang")
        time.sleep(0.1)
        sleepers = [p for p in d.children() if proc_cmdline(p)[:1] == ["sleep"]]
        assert len(sleepers) == 1, "the exec process should be running"
        # the handler's timeout fires (3 s only bounds the wait)
        assert c.readline(timeout=3) == "Error: timeout"
        for p in sleepers:
            assert wait_pid_gone(p, 2), f"timed-out exec process {p} still alive"
        assert c.request("echo alive") == "alive"


def test_pipelining_1000_mixed_sync_async_in_order(d):
    lines, expected = [], []
    for i in range(1000):
        k = i % 4
        if k == 0:
            lines.append(f"echo m{i}")
            expected.append(f"m{i}")
        elif k == 1:
            lines.append(f"upper m{i}x")
            expected.append(f"M{i}X")
        elif k == 2:
            lines.append("ping")
            expected.append("+PONG")
        else:
            lines.append(f"nope{i} x")
            expected.append(f"Unknown handler: nope{i}")
    payload = ("\n".join(lines) + "\n").encode()
    with LineClient(d.ports["LINES"], timeout=30) as c:
        c.send(payload)  # one write
        got = c.readlines(1000, timeout=40)
        for i, (g, e) in enumerate(zip(got, expected)):
            assert g == e, f"reply {i}: got {g!r}, expected {e!r} (request {lines[i]!r})"
        assert c.request("echo done") == "done"


# ---- stream --------------------------------------------------------------------

STREAM = """
[daemon]
control_socket: ""
shutdown_timeout: "2s"
[handlers]
echo { type: "echo" }
tagged { type: "stream" command: ["sh", "-c", 'echo "hello $$"; while read l; do echo "$$ $l"; done'] }
once { type: "stream" command: ["sh", "-c", 'read l; echo "bye $l"'] }
cat { type: "stream" command: ["cat"] }
[listeners]
tagged { protocol: "tcp" listen: "127.0.0.1:PORT_TAGGED" handler: "tagged" }
once { protocol: "tcp" listen: "127.0.0.1:PORT_ONCE" handler: "once" }
multi { protocol: "tcp" listen: "127.0.0.1:PORT_MULTI" handlers: ["echo", "cat"] }
dgram { protocol: "udp" listen: "127.0.0.1:PORT_DGRAM" handlers: ["echo", "cat"] }
"""


def test_stream_one_process_per_connection(daemon):
    d = daemon(STREAM)
    a = LineClient(d.ports["TAGGED"])
    b = LineClient(d.ports["TAGGED"])
    try:
        # the process starts at connect and may speak first
        ha = a.readline()
        hb = b.readline()
        assert ha.startswith("hello ") and hb.startswith("hello ")
        pa, pb = int(ha.split()[1]), int(hb.split()[1])
        assert pa != pb, "each connection gets its own process"
        assert pid_alive(pa) and pid_alive(pb)
        assert pa in d.children() and pb in d.children()
        for i in range(5):
            a.sendline(f"a{i}")
            b.sendline(f"b{i}")
        assert a.readlines(5) == [f"{pa} a{i}" for i in range(5)]
        assert b.readlines(5) == [f"{pb} b{i}" for i in range(5)]

        # closing a connection kills its process, and only its process
        a.close()
        assert wait_pid_gone(pa, 1.5), f"stream process {pa} survived its connection by 1.5s"
        assert pid_alive(pb)
        assert b.request("still") == f"{pb} still"
        # a reset kills it too
        b.reset()
        assert wait_pid_gone(pb, 1.5), f"stream process {pb} survived its connection reset by 1.5s"
    finally:
        a.close()
        b.close()


def test_stream_process_exit_closes_connection(daemon):
    d = daemon(STREAM)
    with LineClient(d.ports["ONCE"]) as c:
        c.sendline("now")
        assert c.readline() == "bye now"
        data, closed = c.read_until_closed(timeout=3)
        assert closed, "the connection must close when the stream process exits"
        assert data == b""
    # the daemon serves on
    with LineClient(d.ports["MULTI"]) as c:
        assert c.request("echo ok") == "ok"


def test_stream_on_multi_handler_listener(daemon):
    d = daemon(STREAM)
    with LineClient(d.ports["MULTI"]) as c:
        c.sendline("cat first")
        assert c.readline() == "first"
        c.sendline("cat: second")
        assert c.readline() == "second"
        cats = [p for p in d.children() if proc_cmdline(p) == ["cat"]]
        assert len(cats) == 1, f"one cat per connection, got {cats}"
        assert c.request("echo mixed") == "mixed"
        c.sendline("cat third")
        assert c.readline() == "third"
        assert [p for p in d.children() if proc_cmdline(p) == ["cat"]] == cats
    assert wait_pid_gone(cats[0], 1.5), "cat must die with its connection (within 1.5s)"


def test_stream_over_udp_needs_a_connection(daemon):
    d = daemon(STREAM)
    with UdpClient(d.ports["DGRAM"]) as u:
        assert u.request("cat hi") == b"Error: stream handlers need a connection"
        assert u.request("echo hi") == b"hi"


# ---- broadcast -----------------------------------------------------------------


def _join(clients, timeout=3.0):
    """Makes sure the daemon has attached every client to the room: client 0
    says sync-N until all others heard it, then everything is drained."""
    deadline = time.monotonic() + timeout
    n = 0
    heard = [False] * len(clients)
    heard[0] = True
    while not all(heard):
        assert time.monotonic() < deadline, "clients never joined the room"
        n += 1
        clients[0].sendline(f"sync-{n}")
        for i, c in enumerate(clients[1:], 1):
            if c.silent_for(0.05):
                heard[i] = True
    time.sleep(0.1)
    for c in clients:
        c.silent_for(0.05)


def test_broadcast_three_clients(d):
    clients = [LineClient(d.ports["ROOM"]) for _ in range(3)]
    try:
        _join(clients)
        names = "ABC"
        for r in range(5):
            for i, c in enumerate(clients):
                c.sendline(f"from-{names[i]}-{r}")
        got = read_all_lines(clients, [10, 10, 10], timeout=5)
        for i, lines in enumerate(got):
            others = [n for j, n in enumerate(names) if j != i]
            expected = sorted(f"from-{n}-{r}" for n in others for r in range(5))
            assert sorted(lines) == expected, f"client {names[i]} got {lines}"
            # each sender's messages arrive in the order sent
            for n in others:
                seq = [x for x in lines if x.startswith(f"from-{n}-")]
                assert seq == [f"from-{n}-{r}" for r in range(5)]
        # nothing more: no duplicates, no echo to the sender
        for i, c in enumerate(clients):
            extra = c.silent_for(0.3)
            assert extra == b"", f"client {names[i]} got extra {extra!r}"
        # a client that leaves no longer gets anything; the others carry on
        clients[2].close()
        time.sleep(0.1)
        clients[0].sendline("after-leave")
        assert clients[1].readline() == "after-leave"
        assert clients[0].silent_for(0.2) == b""
    finally:
        for c in clients:
            c.close()


def test_broadcast_on_multi_handler_listener_and_from_udp(d):
    room = [LineClient(d.ports["ROOM"]) for _ in range(2)]
    multi = LineClient(d.ports["LINES"])
    try:
        _join(room)
        # a multi-handler TCP connection joins on first use and reaches the room
        multi.sendline("chat hello from lines")
        got = read_all_lines(room, [1, 1], timeout=3)
        assert got == [["hello from lines"], ["hello from lines"]]
        assert multi.silent_for(0.2) == b"", "the sender gets nothing back"
        # now a member: it hears the room
        room[0].sendline("hi lines")
        assert multi.readline() == "hi lines"
        assert room[1].readline() == "hi lines"
        # UDP publishes to the room and gets no reply
        with UdpClient(d.ports["DGRAM"]) as u:
            u.send("chat over udp")
            assert u.recv(timeout=0.5) is None, "UDP gets no reply for broadcast"
        got = read_all_lines(room + [multi], [1, 1, 1], timeout=3)
        assert got == [["over udp"]] * 3
    finally:
        for c in room + [multi]:
            c.close()
