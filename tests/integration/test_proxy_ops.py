# SPDX-License-Identifier: MIT
"""Operating the HTTP proxy's servers: a server a reload removes stays in
`upstreams` (state draining, "removed": true, its active count) while its
requests finish, then goes; `upstream H S drain` closes the server's idle
pooled connections at once and the busy ones after their request; `up`
brings it back; `balance: "hash"` with `hash_key: "token"` places HTTP
requests by their path; and the control command's bad input gets exact
answers. The line proxy's shared pool connections follow the same rules.

The upstreams are small Python HTTP/1.1 keep-alive servers that answer
their own name, hold `/hold` requests until the test releases them, and
count the connections they accepted and the ones the proxy closed (the
end of stream they read); the line upstreams answer `NAME:LINE` the same
way."""
import json
import subprocess
import socket
import threading

import pytest

from ctl_util import TUSKNETCTL, ctl, wait_for
from daemon_util import HOST, PORT_RE, daemon  # noqa: F401  (daemon is a fixture)
from http_util import HttpConn, ctl_socket_path


class Upstream:
    """Answers every request `200 NAME` on a kept-alive connection; `/hold`
    requests wait for release()."""

    END = b"\r\n\r\n"  # what ends a request

    def holds(self, request):
        return request.split(b" ", 2)[1] == b"/hold"

    def answer(self, request):
        body = self.name.encode()
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    def __init__(self, name):
        self.name = name
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.addr = f"{HOST}:{self.port}"
        self.lock = threading.Lock()
        self.accepted = 0
        self.closed = 0  # connections the proxy closed
        self.held = 0    # /hold requests waiting
        self.released = threading.Event()
        self.conns = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def open(self):
        with self.lock:
            return self.accepted - self.closed

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        try:
            while True:
                while self.END not in buf:
                    d = c.recv(65536)
                    if not d:
                        with self.lock:
                            self.closed += 1
                        return
                    buf += d
                request, _, buf = buf.partition(self.END)
                if self.holds(request):
                    with self.lock:
                        self.held += 1
                    self.released.wait(30)
                    with self.lock:
                        self.held -= 1
                c.sendall(self.answer(request))
        except OSError:
            pass

    def stop(self):
        self.released.set()
        self.sock.close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture
def ups():
    """ups(NAME) an HTTP upstream, ups(NAME, LineUpstream) a line one."""
    started = []

    def make(name, kind=Upstream):
        u = kind(name)
        started.append(u)
        return u
    yield make
    for u in started:
        u.stop()


class Client:
    """One proxied GET on its own connection, in a thread."""

    def __init__(self, port, path):
        self.result = None
        self.thread = threading.Thread(target=self._run, args=(port, path), daemon=True)
        self.thread.start()

    def _run(self, port, path):
        with HttpConn(port, timeout=30) as c:
            r = c.exchange("GET", path)
            self.result = (r.status, r.text)

    def join(self):
        self.thread.join(30)
        return self.result


HTTP_LISTENER = 'web { protocol: "http" listen: "127.0.0.1:PORT_WEB" routes { "* /*": "px" "GET /static": "st" } }'
LINE_LISTENER = 'lines { protocol: "tcp" listen: "127.0.0.1:PORT_LINES" handler: "px" }'


def config(tmp_path, upstreams, extra="", listener=HTTP_LISTENER):
    ctl_path = ctl_socket_path(tmp_path)
    ups_text = ", ".join(json.dumps(u) for u in upstreams)
    return ctl_path, f"""
[daemon]
control_socket: "{ctl_path}"
[handlers]
px {{ type: "proxy" upstreams: [{ups_text}] {extra} }}
st {{ type: "static" reply: "static" }}
[listeners]
{listener}
"""


def reload_with(d, ctl_path, conf):
    d.config_path.write_text(PORT_RE.sub(lambda m: str(d.ports[m.group(1)]), conf))
    ans = ctl(ctl_path, "reload")
    assert ans.get("ok") is True, ans


def servers(ctl_path):
    """The rows of handler px, in the order `upstreams` lists them."""
    for g in ctl(ctl_path, "upstreams")["upstreams"]:
        if g["handler"] == "px":
            return g["servers"]
    raise KeyError("px")


def row(ctl_path, name):
    found = [s for s in servers(ctl_path) if s["server"] == name]
    assert len(found) == 1, found
    s = found[0]
    return s["state"], s["removed"], s["active"], s["idle"]


def bodies(port, n, path="/x"):
    out = {}
    with HttpConn(port) as c:
        for _ in range(n):
            r = c.exchange("GET", path)
            assert r.status == 200, r
            out[r.text] = out.get(r.text, 0) + 1
    return out


def hold_on(ctl_path, a, b, start):
    """START()s an exchange b holds (a is set aside meanwhile); its result."""
    assert ctl(ctl_path, f"upstream px {a.addr} down") == {"ok": True}
    started = start()
    wait_for(lambda: b.held == 1, 10, what="the exchange held by b")
    assert ctl(ctl_path, f"upstream px {a.addr} up") == {"ok": True}
    return started


def release_and_see_it_go(ctl_path, b, held, configured):
    """b answers HELD; then only the CONFIGURED servers are listed and b's
    last connection is closed."""
    b.released.set()
    assert held.join() == (200, "b")
    wait_for(lambda: [s["server"] for s in servers(ctl_path)] == configured, 10, what="b to leave upstreams")
    wait_for(lambda: b.open() == 0, 10, what="b's last connection to close")


def table(ctl_path):
    out = subprocess.run([TUSKNETCTL, "-s", ctl_path, "upstreams"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return [ln.split() for ln in out.stdout.splitlines()[1:]]


# ---- a server removed by a reload ------------------------------------------------------


def test_server_removed_by_reload_is_listed_while_its_request_drains(daemon, tmp_path, ups):
    a, b = ups("a"), ups("b")
    ctl_path, conf = config(tmp_path, [a.addr, b.addr])
    d = daemon(conf)
    port = d.ports["WEB"]
    # a out of the way: the held request and one more go to b
    assert ctl(ctl_path, f"upstream px {a.addr} down") == {"ok": True}
    held = Client(port, "/hold")
    wait_for(lambda: b.held == 1, 10, what="the request held by b")
    assert bodies(port, 1) == {"b": 1}  # on a second connection, pooled after
    assert row(ctl_path, b.addr) == ("up", False, 1, 1)
    assert ctl(ctl_path, f"upstream px {a.addr} up") == {"ok": True}

    _, conf2 = config(tmp_path, [a.addr])
    reload_with(d, ctl_path, conf2)
    # b drains: listed after the configured servers, its idle connection closed now
    assert [s["server"] for s in servers(ctl_path)] == [a.addr, b.addr]
    assert row(ctl_path, b.addr) == ("draining", True, 1, 0)
    assert row(ctl_path, a.addr) == ("up", False, 0, 0)
    wait_for(lambda: b.closed == 1, 10, what="b's idle connection to close")
    assert (b.accepted, b.open()) == (2, 1)
    rows = table(ctl_path)
    assert len(rows) == 2, rows
    assert rows[0][:9] == ["px", a.addr, "up", "1", "0", "0", "0", "0", "-"]
    assert rows[1][:10] == ["px", b.addr, "(removed)", "draining", "1", "1", "0", "2", "0", "-"]
    # the operator cannot touch it, and new requests go to a
    assert ctl(ctl_path, f"upstream px {b.addr} drain") == {
        "ok": False, "error": f"upstream '{b.addr}' of 'px' was removed by a reload and drains until its requests end"}
    assert ctl(ctl_path, f"upstream px {b.addr} up") == {
        "ok": False, "error": f"upstream '{b.addr}' of 'px' was removed by a reload and drains until its requests end"}
    assert bodies(port, 5) == {"a": 5}

    release_and_see_it_go(ctl_path, b, held, [a.addr])
    assert (b.accepted, b.closed) == (2, 2)  # its last connection was closed, not pooled
    assert ctl(ctl_path, f"upstream px {b.addr} drain") == {
        "ok": False, "error": f"handler 'px' has no upstream '{b.addr}'"}
    assert bodies(port, 5) == {"a": 5}
    assert b.accepted == 2


def b_alone_holding(daemon, tmp_path, b):
    """A proxy to b alone, with a request b holds."""
    ctl_path, conf = config(tmp_path, [b.addr])
    d = daemon(conf)
    held = Client(d.ports["WEB"], "/hold")
    wait_for(lambda: b.held == 1, 10, what="the request held by b")
    return d, ctl_path, held


def test_server_removed_by_two_reloads_in_a_row_stays_listed(daemon, tmp_path, ups):
    a, b, c = ups("a"), ups("b"), ups("c")
    d, ctl_path, held = b_alone_holding(daemon, tmp_path, b)
    port = d.ports["WEB"]
    reload_with(d, ctl_path, config(tmp_path, [a.addr])[1])
    reload_with(d, ctl_path, config(tmp_path, [c.addr])[1])
    # a went idle (never used): it is not listed; b still drains under the newest config
    assert [(s["server"], s["state"], s["removed"], s["active"]) for s in servers(ctl_path)] == [
        (c.addr, "up", False, 0), (b.addr, "draining", True, 1)]
    assert bodies(port, 3) == {"c": 3}
    release_and_see_it_go(ctl_path, b, held, [c.addr])
    assert (a.accepted, b.accepted) == (0, 1)


def test_server_added_back_while_its_old_self_drains_is_a_new_server(daemon, tmp_path, ups):
    a, b = ups("a"), ups("b")
    d, ctl_path, held = b_alone_holding(daemon, tmp_path, b)
    port = d.ports["WEB"]
    reload_with(d, ctl_path, config(tmp_path, [a.addr])[1])
    reload_with(d, ctl_path, config(tmp_path, [a.addr, b.addr])[1])
    # the configured b starts afresh; the old one drains beside it
    assert [(s["server"], s["state"], s["removed"], s["active"], s["requests"]) for s in servers(ctl_path)] == [
        (a.addr, "up", False, 0, 0), (b.addr, "up", False, 0, 0), (b.addr, "draining", True, 1, 1)]
    assert ctl(ctl_path, f"upstream px {b.addr} weight 2") == {"ok": True}
    assert bodies(port, 3) == {"b": 2, "a": 1}
    assert b.accepted == 2  # the new b opened its own connection
    b.released.set()
    assert held.join() == (200, "b")
    wait_for(lambda: len(servers(ctl_path)) == 2, 10, what="the old b to leave upstreams")
    assert [(s["server"], s["weight"], s["removed"]) for s in servers(ctl_path)] == [
        (a.addr, 1, False), (b.addr, 2, False)]
    wait_for(lambda: b.open() == 1, 10, what="the old b's connection to close")


# ---- drain and up --------------------------------------------------------------------


def test_drain_closes_idle_pooled_connections_at_once_and_busy_ones_after(daemon, tmp_path, ups):
    a, b = ups("a"), ups("b")
    ctl_path, conf = config(tmp_path, [a.addr, b.addr])
    d = daemon(conf)
    port = d.ports["WEB"]
    # four requests at once: two connections to each server, pooled after
    clients = [Client(port, "/hold") for _ in range(4)]
    wait_for(lambda: (a.held, b.held) == (2, 2), 10, what="two held requests on each server")
    a.released.set()
    b.released.set()
    assert sorted(c.join() for c in clients) == [(200, "a"), (200, "a"), (200, "b"), (200, "b")]
    wait_for(lambda: row(ctl_path, b.addr) == ("up", False, 0, 2), 10, what="b's two idle connections")
    assert (b.accepted, b.open()) == (2, 2)

    # one request busy on b (a set aside for it), then drain b
    b.released.clear()
    held = hold_on(ctl_path, a, b, lambda: Client(port, "/hold"))
    assert row(ctl_path, b.addr) == ("up", False, 1, 1)
    assert ctl(ctl_path, f"upstream px {b.addr} drain") == {"ok": True}
    assert row(ctl_path, b.addr) == ("draining", False, 1, 0)
    wait_for(lambda: b.closed == 1, 10, what="b's idle connection to close")
    assert bodies(port, 10) == {"a": 10}
    assert (b.accepted, b.open()) == (2, 1)

    # the busy one finishes, then closes instead of going back to the pool
    b.released.set()
    assert held.join() == (200, "b")
    wait_for(lambda: b.open() == 0, 10, what="b's busy connection to close after its request")
    assert row(ctl_path, b.addr) == ("draining", False, 0, 0)
    assert b.accepted == 2

    assert ctl(ctl_path, f"upstream px {b.addr} up") == {"ok": True}
    assert bodies(port, 10) == {"a": 5, "b": 5}
    assert (b.accepted, b.open()) == (3, 1)
    assert row(ctl_path, b.addr) == ("up", False, 0, 1)


def test_down_closes_idle_pooled_connections_too(daemon, tmp_path, ups):
    a, b = ups("a"), ups("b")
    ctl_path, conf = config(tmp_path, [a.addr, b.addr])
    d = daemon(conf)
    port = d.ports["WEB"]
    assert bodies(port, 4) == {"a": 2, "b": 2}
    assert (b.accepted, b.open()) == (1, 1)
    assert ctl(ctl_path, f"upstream px {b.addr} down") == {"ok": True}
    wait_for(lambda: b.open() == 0, 10, what="b's idle connection to close")
    assert row(ctl_path, b.addr) == ("down", False, 0, 0)
    assert bodies(port, 4) == {"a": 4}
    assert b.accepted == 1


# ---- hash on the path ----------------------------------------------------------------


def test_hash_token_on_http_places_each_path_on_one_server(daemon, tmp_path, ups):
    a, b = ups("a"), ups("b")
    ctl_path, conf = config(tmp_path, [a.addr, b.addr], 'balance: "hash" hash_key: "token"')
    d = daemon(conf)
    first, second = {}, {}
    with HttpConn(d.ports["WEB"]) as c:
        for i in range(200):
            r = c.exchange("GET", f"/item/{i}?v=1")
            assert r.status == 200, r
            first[i] = r.text
        # the query does not count: the same path with another query, and none
        for i in range(200):
            r = c.exchange("GET", f"/item/{i}" + ("?v=2&x=y" if i % 2 else ""))
            assert r.status == 200, r
            second[i] = r.text
    assert first == second
    counts = {name: list(first.values()).count(name) for name in ("a", "b")}
    assert counts["a"] > 0 and counts["b"] > 0, counts
    assert counts["a"] + counts["b"] == 200


# ---- bad input -----------------------------------------------------------------------


def test_upstream_command_bad_input_gets_exact_answers(daemon, tmp_path, ups):
    a, b = ups("a"), ups("b")
    ctl_path, conf = config(tmp_path, [a.addr, b.addr])
    daemon(conf)
    usage = {"ok": False, "error": "usage: upstream HANDLER SERVER drain|up|down|weight N"}
    bad_weight = {"ok": False, "error": "weight must be from 1 to 1000"}
    cases = [
        (f"upstream px {a.addr} weight -1", bad_weight),
        (f"upstream px {a.addr} weight 0", bad_weight),
        (f"upstream px {a.addr} weight 1001", bad_weight),
        (f"upstream px {a.addr} weight 99999999999", bad_weight),
        (f"upstream px {a.addr} weight 99999999999999999999999", bad_weight),
        (f"upstream px {a.addr} weight 3x", bad_weight),
        (f"upstream px {a.addr} weight", usage),
        (f"upstream px {a.addr} drain now", usage),
        (f"upstream px {a.addr} up 3", usage),
        (f"upstream px {a.addr}", usage),
        ("upstream px", usage),
        (f"upstream px {a.addr} restart", {"ok": False, "error": "unknown action 'restart' (drain, up, down, weight N)"}),
        ("upstream px 9.9.9.9:1 drain", {"ok": False, "error": "handler 'px' has no upstream '9.9.9.9:1'"}),
        ("upstream px 0 drain", {"ok": False, "error": "handler 'px' has no upstream '0'"}),
        ("upstream px 3 drain", {"ok": False, "error": "handler 'px' has no upstream '3'"}),
        ("upstream px -1 drain", {"ok": False, "error": "handler 'px' has no upstream '-1'"}),
        (f"upstream nope {a.addr} drain", {"ok": False, "error": "no handler 'nope'"}),
        (f"upstream st {a.addr} drain", {"ok": False, "error": "handler 'st' is not a proxy"}),
    ]
    for cmd, want in cases:
        assert ctl(ctl_path, cmd) == want, cmd
    # nothing changed
    assert [(s["state"], s["weight"]) for s in servers(ctl_path)] == [("up", 1), ("up", 1)]
    # the position works as the name does, and 1000 is a weight
    assert ctl(ctl_path, "upstream px 2 weight 1000") == {"ok": True}
    assert ctl(ctl_path, "upstream px 2 drain") == {"ok": True}
    assert [(s["state"], s["weight"]) for s in servers(ctl_path)] == [("up", 1), ("draining", 1000)]
    # tusknetctl passes the daemon's answer on
    out = subprocess.run([TUSKNETCTL, "-s", ctl_path, "upstream", "px", a.addr, "weight", "99999999999"],
                         capture_output=True, text=True, timeout=10)
    assert (out.returncode, out.stdout, out.stderr) == (1, "", "tusknetctl: weight must be from 1 to 1000\n")


# ---- the line proxy's pools ----------------------------------------------------------


class LineUpstream(Upstream):
    """Answers each line `NAME:LINE`; the line `hold` waits for release()."""

    END = b"\n"

    def holds(self, line):
        return line == b"hold"

    def answer(self, line):
        return self.name.encode() + b":" + line + b"\n"


def line_config(tmp_path, upstreams):
    return config(tmp_path, upstreams, listener=LINE_LISTENER)


class LineClient:
    def __init__(self, port):
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.buf = b""

    def send(self, line):
        self.sock.sendall(line.encode() + b"\n")

    def recv(self):
        while b"\n" not in self.buf:
            d = self.sock.recv(65536)
            assert d, "closed"
            self.buf += d
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def ask(self, line):
        self.send(line)
        return self.recv()

    def close(self):
        self.sock.close()


def test_line_proxy_drain_closes_idle_pool_connections_and_busy_ones_after_their_reply(daemon, tmp_path, ups):
    a, b = ups("a", LineUpstream), ups("b", LineUpstream)
    ctl_path, conf = line_config(tmp_path, [a.addr, b.addr])
    d = daemon(conf)
    cl = LineClient(d.ports["LINES"])
    try:
        assert [cl.ask(f"x{i}") for i in range(4)] == ["a:x0", "b:x1", "a:x2", "b:x3"]
        # pool_size 2: both of b's connections opened at its first use, idle now
        wait_for(lambda: b.accepted == 2, 10, what="b's two pool connections")
        assert row(ctl_path, b.addr) == ("up", False, 0, 2)
        assert ctl(ctl_path, f"upstream px {b.addr} drain") == {"ok": True}
        wait_for(lambda: b.closed == 2, 10, what="b's idle pool connections to close")
        assert row(ctl_path, b.addr) == ("draining", False, 0, 0)
        assert [cl.ask(f"y{i}") for i in range(3)] == ["a:y0", "a:y1", "a:y2"]
        assert b.accepted == 2

        # back up: the pool opens again; one line held on b, then drain
        assert ctl(ctl_path, f"upstream px {b.addr} up") == {"ok": True}
        hold_on(ctl_path, a, b, lambda: cl.send("hold"))
        wait_for(lambda: b.accepted == 4, 10, what="b's pool to open again")
        assert row(ctl_path, b.addr) == ("up", False, 1, 1)
        assert ctl(ctl_path, f"upstream px {b.addr} drain") == {"ok": True}
        wait_for(lambda: b.closed == 3, 10, what="b's idle pool connection to close")
        assert row(ctl_path, b.addr) == ("draining", False, 1, 0)
        b.released.set()
        assert cl.recv() == "b:hold"
        wait_for(lambda: b.closed == 4, 10, what="b's busy connection to close after its reply")
        assert row(ctl_path, b.addr) == ("draining", False, 0, 0)
        assert cl.ask("z") == "a:z"
        assert b.accepted == 4
    finally:
        cl.close()


def test_line_proxy_server_removed_by_reload_is_listed_until_its_reply(daemon, tmp_path, ups):
    a, b = ups("a", LineUpstream), ups("b", LineUpstream)
    ctl_path, conf = line_config(tmp_path, [a.addr, b.addr])
    d = daemon(conf)
    cl = LineClient(d.ports["LINES"])
    other = LineClient(d.ports["LINES"])
    try:
        hold_on(ctl_path, a, b, lambda: cl.send("hold"))
        reload_with(d, ctl_path, line_config(tmp_path, [a.addr])[1])
        assert [s["server"] for s in servers(ctl_path)] == [a.addr, b.addr]
        assert row(ctl_path, b.addr) == ("draining", True, 1, 0)
        wait_for(lambda: b.closed == 1, 10, what="b's idle pool connection to close")
        assert other.ask("w") == "a:w"
        b.released.set()
        assert cl.recv() == "b:hold"
        wait_for(lambda: [s["server"] for s in servers(ctl_path)] == [a.addr], 10, what="b to leave upstreams")
        wait_for(lambda: b.closed == 2, 10, what="b's last connection to close")
        assert b.accepted == 2
        assert cl.ask("v") == "a:v"
    finally:
        cl.close()
        other.close()
