# SPDX-License-Identifier: MIT
"""The proxy's upstream connections as the pool keeps and reads them: the
surplus a burst leaves over `keepalive` trimmed back to it, idle connections
closed by the server or by keepalive_timeout, and sized response bodies
that arrive in pieces or with bytes after them, and the order in which
requests read together leave for the upstream."""
import select
import signal
import socket
import threading
import time

from ctl_util import wait_for
from daemon_util import HOST, daemon  # noqa: F401  (daemon is a fixture)
from http_util import HttpConn
from test_proxy import Canned, peers, proxy_config, servers_of  # noqa: F401  (peers is a fixture)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_a_bursts_surplus_over_keepalive_is_trimmed_back_to_it(daemon, tmp_path, peers):
    n = 6
    everyone_in = threading.Barrier(n, timeout=20)

    def respond(i, req):
        if b"/burst" in req:
            everyone_in.wait()  # all N requests are upstream at once, each on its own connection
        return OK
    up = Canned(respond)
    peers.append(up)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.port}"], "keepalive: 2")
    d = daemon(conf)
    conns = [HttpConn(d.ports["WEB"]) for _ in range(n)]
    for c in conns:
        c.request("GET", "/burst")
    for c in conns:
        r = c.read_response()
        assert (r.status, r.text) == (200, "ok")
        c.close()
    name = f"127.0.0.1:{up.port}"
    wait_for(lambda: servers_of(ctl_path)[name]["idle"] == 2, 10, what="the surplus trimmed to keepalive")
    s = servers_of(ctl_path)[name]
    assert (s["connects"], s["active"], up.accepted) == (n, 0, n)
    # the two kept serve on, one after the other
    with HttpConn(d.ports["WEB"]) as c:
        for _ in range(10):
            assert c.exchange("GET", "/after").text == "ok"
    s = servers_of(ctl_path)[name]
    assert (s["connects"], s["idle"], up.accepted) == (n, 2, n)


def test_an_idle_connection_the_server_closes_leaves_the_pool(daemon, tmp_path, peers):
    def respond(i, req):
        def answer_then_close(sock, rest):
            sock.sendall(OK)
            time.sleep(0.3)
            sock.close()
        return answer_then_close
    up = Canned(respond)
    peers.append(up)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.port}"])
    d = daemon(conf)
    name = f"127.0.0.1:{up.port}"
    with HttpConn(d.ports["WEB"]) as c:
        assert c.exchange("GET", "/a").text == "ok"
        wait_for(lambda: servers_of(ctl_path)[name]["connects"] == 1 and servers_of(ctl_path)[name]["idle"] == 0,
                 10, what="the closed connection out of the pool")
        assert c.exchange("GET", "/b").text == "ok"
    s = servers_of(ctl_path)[name]
    assert (s["connects"], s["reused"], up.accepted, sum(s["failures"].values())) == (2, 0, 2, 0)


def test_keepalive_timeout_closes_an_idle_connection(daemon, tmp_path, peers):
    closed = threading.Event()

    def respond(i, req):
        def answer_and_watch(sock, rest):
            sock.sendall(OK)
            if sock.recv(1) == b"":
                closed.set()
        return answer_and_watch
    up = Canned(respond)
    peers.append(up)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.port}"], 'keepalive_timeout: "300ms"')
    d = daemon(conf)
    with HttpConn(d.ports["WEB"]) as c:
        assert c.exchange("GET", "/a").text == "ok"
    assert closed.wait(10)
    assert servers_of(ctl_path)[f"127.0.0.1:{up.port}"]["idle"] == 0


def test_a_sized_body_in_pieces_arrives_whole_and_the_connection_is_reused(daemon, tmp_path, peers):
    body = bytes(range(256)) * 1024  # 256 KB

    def respond(i, req):
        if b"/small" in req:
            return OK

        def in_pieces(sock, rest):
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:10])
            for at in range(10, len(body), 70000):
                time.sleep(0.05)
                sock.sendall(body[at:at + 70000])
            # the connection serves on: the next request on it gets a short answer
            buf = rest
            while b"\r\n\r\n" not in buf:
                d = sock.recv(65536)
                if not d:
                    return
                buf += d
            sock.sendall(OK)
        return in_pieces
    up = Canned(respond)
    peers.append(up)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.port}"])
    d = daemon(conf)
    with HttpConn(d.ports["WEB"]) as c:
        r = c.exchange("GET", "/big")
        assert (r.status, r.body) == (200, body)
        assert c.exchange("GET", "/small").text == "ok"
    s = servers_of(ctl_path)[f"127.0.0.1:{up.port}"]
    assert (s["connects"], s["reused"], up.accepted) == (1, 1, 1)


def test_bytes_after_a_sized_body_are_not_passed_on_and_the_connection_is_not_reused(daemon, tmp_path, peers):
    up = Canned(lambda i, req: OK + b"HTTP/1.1 200 OK\r\n" if b"/extra" in req else OK)
    peers.append(up)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.port}"])
    d = daemon(conf)
    with HttpConn(d.ports["WEB"]) as c:
        r = c.exchange("GET", "/extra")
        assert (r.status, r.body) == (200, b"ok")
        assert c.exchange("GET", "/next").text == "ok"
    s = servers_of(ctl_path)[f"127.0.0.1:{up.port}"]
    assert (s["connects"], s["reused"], up.accepted) == (2, 0, 2)


class OneLoopUpstream:
    """An HTTP server with one epoll loop, as nginx's worker is: it sees its
    connections become readable in the order the requests reached them.
    Until every connection it accepted has a request waiting it answers
    nothing (so a burst opens a connection per request); hold() makes it
    stop looking until release(), whose first epoll_wait then records the
    order in which the held requests arrived."""

    def __init__(self, n):
        self.n = n
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.ep = select.epoll()
        self.ep.register(self.sock.fileno(), select.EPOLLIN)
        self.conns = {}
        self.waiting = {}
        self.arrival = []
        self.holding = False
        self.go = threading.Event()
        self.held = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def hold(self):
        self.go.clear()
        self.held.clear()
        self.holding = True
        assert self.held.wait(5)

    def release(self):
        self.go.set()

    def _run(self):
        while not self.stopping:
            if self.holding:
                self.held.set()
                self.go.wait()
                self.holding = False
                record = True
            else:
                record = False
            for fd, _ in self.ep.poll(0.05, 256):
                if fd == self.sock.fileno():
                    c, _ = self.sock.accept()
                    self.conns[c.fileno()] = c
                    self.waiting[c.fileno()] = b""
                    self.ep.register(c.fileno(), select.EPOLLIN)
                    continue
                c = self.conns[fd]
                d = c.recv(65536)
                if not d:
                    self.ep.unregister(fd)
                    c.close()
                    del self.conns[fd], self.waiting[fd]
                    continue
                self.waiting[fd] += d
                if record and b"\r\n\r\n" in self.waiting[fd]:
                    self.arrival.append(self.waiting[fd].split(b" ")[1].decode())
            heads = [fd for fd, b in self.waiting.items() if b"\r\n\r\n" in b]
            if len(self.conns) >= self.n and len(heads) == len(self.conns):
                for fd in heads:
                    self.waiting[fd] = b""
                    self.conns[fd].sendall(OK)

    def stop(self):
        self.stopping = True
        self.go.set()  # a test that failed while it held
        self.thread.join(5)
        for c in self.conns.values():
            c.close()
        self.sock.close()
        self.ep.close()


def test_requests_read_in_one_pass_go_upstream_in_the_order_they_came(daemon, tmp_path, peers):
    """Requests that one loop pass reads leave for the upstream together at
    its end; the one read first is sent first, so the upstream, which answers
    in arrival order, answers the client that has waited longest first. The
    daemon is stopped while the clients write, so its next pass reads all of
    them, in the order they were written (epoll reports them so)."""
    n = 20
    up = OneLoopUpstream(n)
    peers.append(up)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.port}"], f"keepalive: {n}")
    d = daemon(conf)
    clients = [HttpConn(d.ports["WEB"]) for _ in range(n)]
    for c in clients:  # a burst that leaves N pooled connections behind it
        c.request("GET", "/warm")
    for c in clients:
        assert c.read_response().text == "ok"
    wait_for(lambda: servers_of(ctl_path)[f"127.0.0.1:{up.port}"]["idle"] == n, 10, what="n pooled connections")
    up.hold()
    d.send_signal(signal.SIGSTOP)
    try:
        for i, c in enumerate(clients):
            c.request("GET", "/o%d" % i)
    finally:
        d.send_signal(signal.SIGCONT)
    time.sleep(0.5)  # the daemon's pass has sent every request
    up.release()
    for c in clients:
        assert c.read_response().text == "ok"
        c.close()
    assert up.arrival == ["/o%d" % i for i in range(n)]
    s = servers_of(ctl_path)[f"127.0.0.1:{up.port}"]
    assert (s["connects"], s["reused"], len(up.conns)) == (n, n, n)
