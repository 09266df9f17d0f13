# SPDX-License-Identifier: MIT
"""The proxy handler on TCP line listeners.

mode message: lines from many clients share a small pool of pipelined
connections per upstream server and every reply goes back to the client that
asked, in order; a client that leaves with replies owed does not shift anybody
else's; a server that dies fails what was in flight on it with an Error line
and the service goes on with the other server; a refused connect is retried
on another server; a reply line over max_output fails and drops that upstream
connection. The upstreams are second tusknetd daemons (their replies name the
upstream connection: `{connection_id}`), redis-server, and small Python servers
where a test needs a peer that misbehaves on purpose.

mode connection: the client connection is spliced to one upstream connection:
any bytes both ways, half-close passed on in each direction, a client that
never reads holds a bounded amount."""
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
from daemon_util import LineClient, daemon, free_port  # noqa: F401  (daemon is a fixture)
from test_bounds import status_kb
from tls_util import TlsLineClient, pki, tls_context  # noqa: F401  (pki is a fixture)

SANITIZE = os.environ.get("SANITIZE") == "1"
GROWTH_KB = 16 * 1024  # what a test may add to the proxy's peak RSS

HEAD = '[daemon]\ncontrol_socket: ""\nshutdown_timeout: "2s"\n'


def upstream(daemon, handlers, listener_handler, name):
    """A tusknetd line server: HANDLERS block, one listener UP."""
    return daemon(HEAD + "[handlers]\n" + handlers + "\n[listeners]\n"
                  'up { protocol: "tcp" listen: "127.0.0.1:PORT_UP" %s }\n' % listener_handler, name=name)


def proxy(daemon, settings, servers, extra_listener="", name="proxy", bounded=False):
    """A tusknetd whose listener LINES proxies to SERVERS; BOUNDED: measured for
    memory (under SANITIZE=1 with a small ASan quarantine, so that freed memory
    is not counted as held)."""
    env = None
    if bounded and SANITIZE:
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=4").lstrip(":")
    ups = ", ".join('"127.0.0.1:%d"' % p for p in servers)
    return daemon(HEAD + "[handlers]\npx { type: \"proxy\" upstreams: [%s] %s }\n[listeners]\n"
                  'lines { protocol: "tcp" listen: "127.0.0.1:PORT_LINES" handler: "px" %s }\n'
                  % (ups, settings, extra_listener), name=name, env=env)


class PyServer:
    """A one-purpose upstream in a thread: SERVE(conn) runs for each accepted
    connection; accepted counts them."""

    def __init__(self, serve):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.serve = serve
        self.accepted = 0
        self.results = []
        self.stopping = False
        self.threads = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        self.sock.settimeout(0.1)
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            t = threading.Thread(target=self._run, args=(c,), daemon=True)
            t.start()
            self.threads.append(t)

    def _run(self, c):
        try:
            self.results.append(self.serve(c))
        except OSError as e:
            self.results.append(e)
        finally:
            c.close()

    def close(self):
        self.stopping = True
        self.sock.close()
        for t in self.threads:
            t.join(10)


@pytest.fixture
def pyservers():
    made = []

    def make(serve):
        s = PyServer(serve)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def recv_lines(c, n, timeout=5.0):
    c.settimeout(timeout)
    buf = b""
    while buf.count(b"\n") < n:
        chunk = c.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


# ---- mode message ----------------------------------------------------------


def test_many_clients_share_a_small_pool_and_get_their_own_replies_in_order(daemon):
    up = upstream(daemon, 'tag { type: "static" reply: "{payload} via {connection_id}" }', 'handler: "tag"', "up")
    px = proxy(daemon, "pool_size: 2", [up.ports["UP"]])
    clients = [LineClient(px.ports["LINES"]) for _ in range(30)]
    for i, c in enumerate(clients):  # every client pipelines all its lines at once
        c.send("".join("c%d-%d\n" % (i, j) for j in range(50)))
    via = set()
    for i, c in enumerate(clients):
        replies = c.readlines(50)
        assert [r.rsplit(" via ", 1)[0] for r in replies] == ["c%d-%d" % (i, j) for j in range(50)]
        via |= {r.rsplit(" via ", 1)[1] for r in replies}
    # the upstream numbers its connections from 1: the pool opened exactly two
    assert via == {"1", "2"}
    # and it accepted nothing else: the next connection is its third
    assert LineClient(up.ports["UP"]).request("direct") == "direct via 3"


def test_reload_keeps_the_pool_of_a_server_that_stays(daemon):
    up = upstream(daemon, 'tag { type: "static" reply: "{payload} via {connection_id}" }', 'handler: "tag"', "up")
    px = proxy(daemon, "pool_size: 2  retries: 2", [up.ports["UP"]])
    a, b = LineClient(px.ports["LINES"]), LineClient(px.ports["LINES"])
    assert {a.request("a").split(" via ")[1], b.request("b").split(" via ")[1]} == {"1", "2"}
    px.config_path.write_text(px.config.replace("retries: 2", "retries: 1"))
    px.send_signal(signal.SIGHUP)
    assert px.wait_log(r"reload complete", timeout=5)
    # the new handler's lines ride the same two upstream connections
    assert {LineClient(px.ports["LINES"]).request("c%d" % i).split(" via ")[1] for i in range(4)} == {"1", "2"}
    assert LineClient(up.ports["UP"]).request("direct") == "direct via 3"


def test_crlf_lines_get_crlf_replies_and_redis_answers_through_the_pool(daemon):
    redis = shutil.which("redis-server")
    if not redis:
        pytest.fail("redis-server is not installed (make test installs it)")
    rport = free_port()
    rp = subprocess.Popen([redis, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", rport), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        px = proxy(daemon, "pool_size: 3", [rport])
        c = LineClient(px.ports["LINES"])
        c.send(b"PING\r\nSET greeting hello\r\nINCR n\r\nINCR n\r\nDEL n\r\nNOSUCH x\r\n")
        got = recv_lines(c.sock, 6)
        assert got == (b"+PONG\r\n+OK\r\n:1\r\n:2\r\n:1\r\n"
                       b"-ERR unknown command 'NOSUCH', with args beginning with: 'x' \r\n")
        # the same commands from 20 clients at once: every INCR counted once
        cs = [LineClient(px.ports["LINES"]) for _ in range(20)]
        for cl in cs:
            cl.send(b"INCR total\r\n" * 25)
        for cl in cs:
            assert len(recv_lines(cl.sock, 25).split(b"\r\n")) == 26
        info = subprocess.run(["redis-cli", "-p", str(rport), "GET", "total"], capture_output=True, text=True)
        assert info.stdout.strip() == "500"
    finally:
        rp.send_signal(signal.SIGTERM)
        rp.wait(10)


def test_client_leaving_with_replies_owed_shifts_nobody(daemon):
    up = upstream(daemon, 'slow { type: "exec" command: ["sh", "-c", "sleep 0.3; cat"] max_concurrency: 64 }',
                  'handler: "slow"', "up")
    px = proxy(daemon, "pool_size: 1", [up.ports["UP"]])
    leaver = LineClient(px.ports["LINES"])
    stayer = LineClient(px.ports["LINES"])
    leaver.send("".join("gone-%d\n" % i for i in range(5)))
    time.sleep(0.05)
    stayer.send("".join("mine-%d\n" % i for i in range(5)))
    leaver.sock.close()  # its five replies are still on their way
    assert stayer.readlines(5, timeout=10) == ["mine-%d" % i for i in range(5)]
    # the shared connection is still in step: a new client gets its own reply
    assert LineClient(px.ports["LINES"]).request("after", timeout=10) == "after"
    assert px.alive()


def test_upstream_killed_fails_its_lines_and_the_other_server_serves(daemon):
    slow = upstream(daemon, 'slow { type: "exec" command: ["sh", "-c", "sleep 5; cat"] }', 'handler: "slow"',
                    "slow")
    other = upstream(daemon, 'tag { type: "static" reply: "{payload} from other" }', 'handler: "tag"', "other")
    # the second server is a backup: the first line goes to the slow one
    d = daemon(HEAD + '[handlers]\npx { type: "proxy" upstreams: ["127.0.0.1:%d", "127.0.0.1:%d backup"] '
               'pool_size: 1  retries: 1  max_fails: 1 }\n[listeners]\n'
               'lines { protocol: "tcp" listen: "127.0.0.1:PORT_LINES" handler: "px" }\n'
               % (slow.ports["UP"], other.ports["UP"]), name="proxy2")
    c = LineClient(d.ports["LINES"])
    c.send("in flight\n")
    deadline = time.monotonic() + 5
    while not slow.children():  # remembered, so that the teardown ends the orphaned sleep
        assert time.monotonic() < deadline, "the line did not reach the slow server"
        time.sleep(0.02)
    slow.proc.kill()
    slow.proc.wait(5)
    assert c.readline(timeout=5) == "Error: upstream connection lost"
    # the dead server refuses now: its lines are retried on the backup
    assert [c.request("next %d" % i) for i in range(5)] == ["next %d from other" % i for i in range(5)]


def test_refused_connect_is_retried_on_another_server(daemon):
    up = upstream(daemon, 'tag { type: "static" reply: "{payload} ok" }', 'handler: "tag"', "up")
    closed = free_port()
    px = proxy(daemon, "retries: 1  retry_backoff: 0", [closed, up.ports["UP"]])
    c = LineClient(px.ports["LINES"])
    assert [c.request("r%d" % i) for i in range(8)] == ["r%d ok" % i for i in range(8)]
    # without retries the tries that met the closed port fail, until
    # max_fails (3) of them eject it
    px0 = proxy(daemon, "retries: 0", [closed, up.ports["UP"]], name="noretry")
    c0 = LineClient(px0.ports["LINES"])
    got = [c0.request("r%d" % i) for i in range(8)]
    assert got == ["Error: upstream connect failed", "r1 ok", "Error: upstream connect failed", "r3 ok",
                   "Error: upstream connect failed", "r5 ok", "r6 ok", "r7 ok"]
    assert px0.wait_log(r"ejected", timeout=3)


def test_hash_on_the_first_token_keeps_a_key_on_one_server(daemon):
    a = upstream(daemon, 'tag { type: "static" reply: "A" }', 'handler: "tag"', "a")
    b = upstream(daemon, 'tag { type: "static" reply: "B" }', 'handler: "tag"', "b")
    px = proxy(daemon, 'balance: "hash"  hash_key: "token"', [a.ports["UP"], b.ports["UP"]])
    c = LineClient(px.ports["LINES"])
    seen = {}
    for rnd in range(3):
        for k in range(20):
            seen.setdefault("key%d" % k, set()).add(c.request("key%d value %d" % (k, rnd)))
    assert all(len(v) == 1 for v in seen.values())
    assert set.union(*seen.values()) == {"A", "B"}


def test_reply_line_over_max_output_fails_and_the_pool_recovers(daemon):
    up = upstream(daemon, 'big { type: "static" reply: "%s" }\necho { type: "echo" }' % ("x" * 100000),
                  'handlers: ["big", "echo"]', "up")
    px = proxy(daemon, 'pool_size: 1  max_output: "64KB"', [up.ports["UP"]])
    c = LineClient(px.ports["LINES"])
    assert c.request("echo before") == "before"
    assert c.request("big") == "Error: upstream reply too long"
    assert c.request("echo after") == "after"


def test_slow_upstream_times_out_with_an_error(daemon, pyservers):
    def mute(conn):  # reads, never answers, closes only when the proxy does
        return recv_lines(conn, 1 << 30, timeout=5)
    s = pyservers(mute)
    px = proxy(daemon, 'timeout: "300ms"  retries: 0', [s.port])
    c = LineClient(px.ports["LINES"])
    assert c.request("anyone?", timeout=5) == "Error: upstream timeout"


def test_in_flight_and_waiting_lines_are_bounded_per_connection(daemon, pyservers):
    def mute(conn):
        return recv_lines(conn, 1 << 30, timeout=10)
    s = pyservers(mute)
    px = proxy(daemon, 'pool_size: 1  retries: 0  timeout: "1s"', [s.port])
    clients = [LineClient(px.ports["LINES"], timeout=10) for _ in range(6)]
    for i, c in enumerate(clients):
        c.send("".join("c%d-%d\n" % (i, j) for j in range(1000)))
    replies = [r for c in clients for r in c.readlines(1000, timeout=15)]
    # 1,024 in flight on the one connection and 4,096 waiting for it, the rest
    # refused at once; the timeout then fails the lot
    assert replies.count("Error: upstream busy") == 6000 - 1024 - 4096
    assert replies.count("Error: upstream timeout") == 1024 + 4096


def test_client_pipelining_without_reading_is_bounded(daemon):
    up = upstream(daemon, 'echo { type: "echo" }', 'handler: "echo"', "up")
    px = proxy(daemon, "pool_size: 2", [up.ports["UP"]], bounded=True)
    before = status_kb(px.pid, "VmRSS")
    c = LineClient(px.ports["LINES"], rcvbuf=4096)
    c.sock.setblocking(False)
    line = b"z" * 1000 + b"\n"
    sent = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and sent < 200 * 1024 * 1024:
        try:
            sent += c.sock.send(line * 64)
        except BlockingIOError:
            time.sleep(0.01)
    assert sent < 64 * 1024 * 1024  # the proxy stopped reading it
    assert status_kb(px.pid, "VmHWM") - before < GROWTH_KB
    # others are served meanwhile
    assert LineClient(px.ports["LINES"]).request("still here") == "still here"


# ---- mode connection ---------------------------------------------------------


def test_connection_mode_relays_bytes_and_passes_half_close_both_ways(daemon, pyservers):
    def server(conn):
        conn.settimeout(5)
        first = conn.recv(100)
        conn.sendall(b"bye, but go on\n")
        conn.shutdown(socket.SHUT_WR)  # the server ends its side first
        rest = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return first, rest
            rest += chunk
    s = pyservers(server)
    px = proxy(daemon, 'mode: "connection"', [s.port])
    c = socket.create_connection(("127.0.0.1", px.ports["LINES"]), timeout=5)
    c.sendall(b"hi\n")
    got = b""
    while True:
        chunk = c.recv(100)
        if not chunk:
            break  # the server's end arrived as ours
        got += chunk
    assert got == b"bye, but go on\n"
    c.sendall(b"\x00binary\xff after the server's end, no newline")
    c.shutdown(socket.SHUT_WR)
    c.settimeout(5)
    assert c.recv(100) == b""
    c.close()
    deadline = time.monotonic() + 5
    while not s.results and time.monotonic() < deadline:
        time.sleep(0.02)
    assert s.results == [(b"hi\n", b"\x00binary\xff after the server's end, no newline")]


def test_connection_mode_client_half_close_with_a_tusknetd_upstream(daemon):
    up = upstream(daemon, 'echo { type: "echo" }', 'handler: "echo"', "up")
    px = proxy(daemon, 'mode: "connection"', [up.ports["UP"]])
    out = subprocess.run(["socat", "-t5", "-", "TCP:127.0.0.1:%d" % px.ports["LINES"]], input=b"one\ntwo\n",
                         capture_output=True, timeout=10)
    assert out.stdout == b"one\ntwo\n"


def test_connection_mode_behind_tls(daemon, pyservers, pki):
    def bye(conn):
        conn.settimeout(5)
        got = conn.recv(100)
        conn.sendall(b"bye " + got)
        conn.shutdown(socket.SHUT_WR)
        return conn.recv(100)
    up = upstream(daemon, 'echo { type: "echo" }', 'handler: "echo"', "up")
    s = pyservers(bye)
    tls = 'tls { cert: "%s"  key: "%s" }' % (pki.localhost.cert, pki.localhost.key)
    px = proxy(daemon, 'mode: "connection"', [up.ports["UP"]], extra_listener=tls)
    c = TlsLineClient(px.ports["LINES"], tls_context(pki))
    assert [c.request("over tls %d" % i) for i in range(3)] == ["over tls %d" % i for i in range(3)]
    # the server's end of stream closes a TLS client (no half-close over TLS)
    px2 = proxy(daemon, 'mode: "connection"', [s.port], extra_listener=tls, name="proxy2")
    c2 = TlsLineClient(px2.ports["LINES"], tls_context(pki))
    c2.sendline("x")
    assert c2.read_until_closed(timeout=5) == (b"bye x\n", True)


def test_connection_mode_shutdown_closes_idle_splices_at_once(daemon):
    up = upstream(daemon, 'echo { type: "echo" }', 'handler: "echo"', "up")
    px = daemon(HEAD.replace('"2s"', '"60s"') + '[handlers]\npx { type: "proxy" upstreams: ["127.0.0.1:%d"] '
                'mode: "connection" }\n[listeners]\nlines { protocol: "tcp" listen: "127.0.0.1:PORT_LINES" '
                'handler: "px" }\n' % up.ports["UP"], name="proxy")
    c = LineClient(px.ports["LINES"])
    assert c.request("still open") == "still open"
    px.send_signal(signal.SIGTERM)
    assert px.wait(30) == 0
    assert c.read_until_closed() == (b"", True)
    assert "timeout reached" not in px.log()


def test_connection_mode_carries_megabytes_both_ways(daemon, pyservers):
    def echo(conn):
        conn.settimeout(10)
        n = 0
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                conn.shutdown(socket.SHUT_WR)
                return n
            n += len(chunk)
            conn.sendall(chunk)
    s = pyservers(echo)
    px = proxy(daemon, 'mode: "connection"', [s.port])
    data = random.Random(7).randbytes(8 * 1024 * 1024)
    c = socket.create_connection(("127.0.0.1", px.ports["LINES"]), timeout=10)
    got = []

    def reader():
        while True:
            chunk = c.recv(1 << 20)
            if not chunk:
                return
            got.append(chunk)
    t = threading.Thread(target=reader)
    t.start()
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    t.join(30)
    c.close()
    assert b"".join(got) == data


def test_connection_mode_client_that_never_reads_is_bounded(daemon, pyservers):
    def flood(conn):
        conn.setblocking(False)
        block = b"f" * 65536
        sent = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and sent < 256 * 1024 * 1024:
            try:
                sent += conn.send(block)
            except BlockingIOError:
                time.sleep(0.01)
        return sent
    s = pyservers(flood)
    px = proxy(daemon, 'mode: "connection"', [s.port], bounded=True)
    before = status_kb(px.pid, "VmRSS")
    c = LineClient(px.ports["LINES"], rcvbuf=4096)
    deadline = time.monotonic() + 10
    while not s.results and time.monotonic() < deadline:
        time.sleep(0.05)
    assert s.results and s.results[0] < 64 * 1024 * 1024  # the proxy stopped reading the server
    assert status_kb(px.pid, "VmHWM") - before < GROWTH_KB
    c.sock.close()


def test_connection_mode_idle_timeout_and_unreachable_servers(daemon, pyservers):
    def quiet(conn):
        return recv_lines(conn, 1 << 30, timeout=5)
    s = pyservers(quiet)
    px = proxy(daemon, 'mode: "connection"', [s.port], extra_listener='idle_timeout: "300ms"')
    c = LineClient(px.ports["LINES"])
    data, closed = c.read_until_closed(timeout=5)
    assert (data, closed) == (b"", True)
    dead = proxy(daemon, 'mode: "connection"  retries: 1', [free_port(), free_port()], name="dead")
    c2 = LineClient(dead.ports["LINES"])
    assert c2.read_until_closed(timeout=5) == (b"", True)
    assert dead.wait_log(r"no upstream server", timeout=3)


# ---- with the upstream core: active checks and the control socket -------------


def test_tcp_connect_checks_and_counters_of_a_line_proxy(daemon, tmp_path):
    from ctl_util import ctl, wait_for
    up = upstream(daemon, 'tag { type: "static" reply: "{payload} ok" }', 'handler: "tag"', "up")
    dead = free_port()
    sock = tmp_path / "px.sock"
    px = daemon('[daemon]\ncontrol_socket: "%s"\n[handlers]\npx { type: "proxy" upstreams: ["127.0.0.1:%d", '
                '"127.0.0.1:%d"] pool_size: 2  health_check { interval: "100ms" fall: 1 } }\n[listeners]\n'
                'lines { protocol: "tcp" listen: "127.0.0.1:PORT_LINES" handler: "px" }\n'
                % (sock, up.ports["UP"], dead), name="proxy")

    def servers():
        return {s["server"]: s for s in ctl(str(sock), "upstreams")["upstreams"][0]["servers"]}
    wait_for(lambda: servers()["127.0.0.1:%d" % dead]["state"] == "down", 5, what="the dead server down")
    c = LineClient(px.ports["LINES"])
    assert [c.request("m%d" % i) for i in range(10)] == ["m%d ok" % i for i in range(10)]
    s = servers()
    live = s["127.0.0.1:%d" % up.ports["UP"]]
    assert (live["requests"], live["responses"], live["connects"]) == (10, 10, 2)
    assert s["127.0.0.1:%d" % dead]["failures"]["connect"] == 0  # no line was sent there
