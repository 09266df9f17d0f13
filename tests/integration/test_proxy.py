# SPDX-License-Identifier: MIT
"""The proxy handler on HTTP routes, against real upstreams: nginx (run in
the foreground from a config in the test's directory), a second tusknetd
(its `stats` count the connections the proxy opened), and small Python
servers that answer exactly what a case needs (malformed, slow, cut short).

Covers balancing (round_robin, least_conn, hash) over 1000 requests,
keep-alive pooling, retries of refused connects (not for POST), passive
ejection and return, 502/504, hop-by-hop and forwarding headers, prefix
stripping, a body of 1 GB each way with the proxy's memory bounded,
the control commands, a reload under load and WebSockets through the
proxy."""
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from ctl_util import TUSKNETCTL, ctl, ctl_metrics, parse_prometheus, rss_kb, sample, wait_for
from daemon_util import HOST, PORT_RE, daemon, free_ports  # noqa: F401  (daemon is a fixture)
from http_util import HttpConn, ctl_socket_path, http_get
from tls_util import pki  # noqa: F401  (a fixture)

NGINX = "/usr/sbin/nginx"


# ---- peers ---------------------------------------------------------------------


class Nginx:
    """nginx in the foreground with SERVERS, a list of (port, location text)."""

    def __init__(self, tmp_path, servers, extra=""):
        self.dir = tmp_path / f"nginx{servers[0][0]}"
        self.dir.mkdir()
        blocks = "\n".join(f"server {{ listen 127.0.0.1:{p}; {body} }}" for p, body in servers)
        conf = f"""
daemon off;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {self.dir};
  proxy_temp_path {self.dir};
  fastcgi_temp_path {self.dir};
  uwsgi_temp_path {self.dir};
  scgi_temp_path {self.dir};
  keepalive_requests 100000;
  {extra}
  {blocks}
}}
"""
        (self.dir / "nginx.conf").write_text(conf)
        self.proc = subprocess.Popen([NGINX, "-c", str(self.dir / "nginx.conf"), "-p", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for p, _ in servers:
            wait_for(lambda: _accepts(p), 20, what=f"nginx on port {p}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _accepts(port):
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
        return True
    except OSError:
        return False


class Canned:
    """A TCP server that answers each request with what RESPOND(conn_index,
    request_bytes) returns (bytes, or None to keep silent; a callable gets
    the socket and the bytes read past the head). Counts accepted
    connections."""

    def __init__(self, respond):
        self.respond = respond
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.requests = []
        self.stopping = False
        self.conns = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c, self.accepted), daemon=True).start()

    def _serve(self, c, index):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, _, buf = buf.partition(b"\r\n\r\n")
                self.requests.append(head)
                out = self.respond(index, head)
                if out is None:
                    continue
                if callable(out):
                    out(c, buf)  # with what was read past the head
                    return
                c.sendall(out)
        except OSError:
            pass

    def stop(self):
        self.stopping = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture
def peers():
    started = []
    yield started
    for p in started:
        p.stop()


def closed_port():
    """A port nothing listens on (bound, then closed)."""
    return free_ports(1)[0]


def proxy_config(tmp_path, upstreams, extra="", routes=None, listener_extra=""):
    ctl_path = ctl_socket_path(tmp_path)
    ups = ", ".join(json.dumps(u) for u in upstreams)
    routes = routes or '"* /*": "px"'
    return ctl_path, f"""
[daemon]
control_socket: "{ctl_path}"
[handlers]
px {{ type: "proxy" upstreams: [{ups}] {extra} }}
[listeners]
web {{ protocol: "http" listen: "127.0.0.1:PORT_WEB" {listener_extra} routes {{ {routes} }} }}
"""


def reload_with(d, ctl_path, conf):
    """CONF (with d's ports) as d's config, applied by the control socket."""
    d.config_path.write_text(PORT_RE.sub(lambda m: str(d.ports[m.group(1)]), conf))
    ans = ctl(ctl_path, "reload")
    assert ans.get("ok") is True, ans


def servers_of(ctl_path, handler="px"):
    for g in ctl(ctl_path, "upstreams")["upstreams"]:
        if g["handler"] == handler:
            return {s["server"]: s for s in g["servers"]}
    raise KeyError(handler)


def bodies(port, n, path="/", headers=None):
    out = {}
    with HttpConn(port) as c:
        for i in range(n):
            r = c.exchange("GET", path, headers(i) if headers else None)
            assert r.status == 200, r
            out[r.text] = out.get(r.text, 0) + 1
    return out


# ---- balancing -------------------------------------------------------------------


def three_nginx(tmp_path, peers):
    ports = free_ports(3)
    ng = Nginx(tmp_path, [(p, f'location / {{ return 200 "{p}"; }}') for p in ports])
    peers.append(ng)
    return ports


def test_round_robin_follows_weights_over_1000_requests(daemon, tmp_path, peers):
    a, b, c = three_nginx(tmp_path, peers)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{a} weight=5", f"127.0.0.1:{b}", f"127.0.0.1:{c} weight=4"])
    d = daemon(conf)
    assert bodies(d.ports["WEB"], 1000) == {str(a): 500, str(b): 100, str(c): 400}
    s = servers_of(ctl_path)
    assert [s[f"127.0.0.1:{p}"]["requests"] for p in (a, b, c)] == [500, 100, 400]
    assert [s[f"127.0.0.1:{p}"]["state"] for p in (a, b, c)] == ["up", "up", "up"]


def test_least_conn_shares_idle_servers_by_weight(daemon, tmp_path, peers):
    a, b, c = three_nginx(tmp_path, peers)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{a}", f"127.0.0.1:{b} weight=3", f"127.0.0.1:{c}"],
                                  'balance: "least_conn"')
    d = daemon(conf)
    # one request at a time: every server has 0 active, a tie shared by weight
    assert bodies(d.ports["WEB"], 1000) == {str(a): 200, str(b): 600, str(c): 200}


def test_least_conn_avoids_the_busy_server(daemon, tmp_path, peers):
    (a,) = free_ports(1)
    ng = Nginx(tmp_path, [(a, 'location / { return 200 "fast"; }')])
    peers.append(ng)
    slow = Canned(lambda i, req: None)  # takes requests, never answers
    peers.append(slow)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{slow.port}", f"127.0.0.1:{a}"],
                                  'balance: "least_conn" timeout: "30s"')
    d = daemon(conf)
    stuck = HttpConn(d.ports["WEB"])
    stuck.request("GET", "/stuck")
    wait_for(lambda: len(slow.requests) == 1, 5, what="the slow server to get its request")
    # the slow server has one active request: everything else goes to nginx
    assert bodies(d.ports["WEB"], 100) == {"fast": 100}
    stuck.close()


def test_hash_on_a_header_is_consistent_and_moves_only_a_removed_servers_keys(daemon, tmp_path, peers):
    ports = free_ports(4)
    ng = Nginx(tmp_path, [(p, f'location / {{ return 200 "{p}"; }}') for p in ports])
    peers.append(ng)
    ups = [f"127.0.0.1:{p}" for p in ports]
    ctl_path, conf = proxy_config(tmp_path, ups, 'balance: "hash" hash_key: "header:X-User"')
    d = daemon(conf)
    port = d.ports["WEB"]

    def placement():
        out = {}
        with HttpConn(port) as c:
            for i in range(1000):
                r = c.exchange("GET", "/", {"X-User": f"user{i}"})
                assert r.status == 200, r
                out[i] = r.text
        return out

    first = placement()
    assert placement() == first  # the same key, the same server
    counts = {p: list(first.values()).count(str(p)) for p in ports}
    assert sum(counts.values()) == 1000 and min(counts.values()) > 0, counts
    # drop the third server: its keys move, no other key does
    conf2 = conf.replace(f', "127.0.0.1:{ports[2]}"', "")
    reload_with(d, ctl_path, conf2)
    after = placement()
    moved = [i for i in first if first[i] != after[i]]
    assert sorted(moved) == sorted(i for i in first if first[i] == str(ports[2]))
    assert str(ports[2]) not in after.values()


def test_cookie_hash_and_backup_only_when_primaries_are_down(daemon, tmp_path, peers):
    a, b = free_ports(2)
    ng = Nginx(tmp_path, [(a, f'location / {{ return 200 "{a}"; }}'), (b, f'location / {{ return 200 "{b}"; }}')])
    peers.append(ng)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{a}", f"127.0.0.1:{b} backup"],
                                  'balance: "hash" hash_key: "cookie:sid"')
    d = daemon(conf)
    port = d.ports["WEB"]
    assert bodies(port, 50, headers=lambda i: {"Cookie": f"x=1; sid=s{i}"}) == {str(a): 50}
    assert ctl(ctl_path, f"upstream px 127.0.0.1:{a} down") == {"ok": True}
    assert bodies(port, 20, headers=lambda i: {"Cookie": f"sid=s{i}"}) == {str(b): 20}
    assert ctl(ctl_path, f"upstream px 127.0.0.1:{a} up") == {"ok": True}
    assert bodies(port, 20) == {str(a): 20}


# ---- pooling ---------------------------------------------------------------------


def upstream_tusknetd(daemon, tmp_path, name="up"):
    up_ctl = str(tmp_path / f"{name}.sock")
    if len(up_ctl) > 100:
        up_ctl = ctl_socket_path(tmp_path).replace("ctl.sock", f"{name}.sock")
    d = daemon(f"""
[daemon]
control_socket: "{up_ctl}"
[handlers]
hello {{ type: "static" reply: "hello from {name}" }}
health {{ type: "health" }}
ws_echo {{ type: "echo" }}
[listeners]
app {{ protocol: "http" listen: "127.0.0.1:PORT_APP" routes {{ "GET /*": "hello" "POST /*": "hello" "GET /health": "health" }}
       websocket {{ "/ws": "ws_echo" }} }}
""")
    return d, up_ctl


def accepted(up_ctl):
    return ctl(up_ctl, "stats")["listeners"]["app"]["total_connections"]


def test_keepalive_pool_reuses_upstream_connections(daemon, tmp_path):
    up, up_ctl = upstream_tusknetd(daemon, tmp_path)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.ports['APP']}"])
    d = daemon(conf)
    port = d.ports["WEB"]
    for _ in range(4):  # four clients one after another, 50 requests each
        with HttpConn(port) as c:
            for _ in range(50):
                r = c.exchange("GET", "/x")
                assert (r.status, r.text) == (200, "hello from up"), r
    assert accepted(up_ctl) == 1
    s = servers_of(ctl_path)[f"127.0.0.1:{up.ports['APP']}"]
    assert (s["requests"], s["connects"], s["reused"], s["idle"], s["active"]) == (200, 1, 199, 1, 0)


def test_keepalive_zero_opens_a_connection_per_request(daemon, tmp_path):
    up, up_ctl = upstream_tusknetd(daemon, tmp_path)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.ports['APP']}"], "keepalive: 0")
    d = daemon(conf)
    with HttpConn(d.ports["WEB"]) as c:
        for _ in range(30):
            assert c.exchange("GET", "/x").status == 200
    wait_for(lambda: accepted(up_ctl) == 30, 5, what="30 upstream connections")
    s = servers_of(ctl_path)[f"127.0.0.1:{up.ports['APP']}"]
    assert (s["connects"], s["reused"], s["idle"]) == (30, 0, 0)


# ---- headers -------------------------------------------------------------------------


def test_forwarding_headers_added_hop_by_hop_removed_both_ways(daemon, tmp_path, peers):
    def respond(i, req):
        body = req.replace(b"\r\n", b"\n")
        return (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: X-Secret, keep-alive\r\nX-Secret: s\r\n"
                b"Keep-Alive: timeout=5\r\nProxy-Foo: p\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-App: a\r\n"
                b"Server: canned\r\nContent-Type: text/x-req\r\n\r\n" % len(body)) + body
    up = Canned(respond)
    peers.append(up)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.port}"],
                                  routes='"GET /api/*": "px" "GET /keep": "px"')
    d = daemon(conf)
    port = d.ports["WEB"]
    with HttpConn(port) as c:
        r = c.exchange("GET", "/api/v1/items?q=a%20b", {
            "Host": "front.example", "Connection": "keep-alive, X-Drop", "X-Drop": "1", "Keep-Alive": "300",
            "TE": "trailers", "Proxy-Authorization": "Basic x", "X-Forwarded-For": "10.9.8.7",
            "Via": "1.0 edge", "X-Keep": "k"}, host=False)
    assert r.status == 200, r
    lines = r.text.split("\n")
    assert lines[0] == "GET /v1/items?q=a%20b HTTP/1.1"  # the route's prefix stripped
    got = dict(ln.split(": ", 1) for ln in lines[1:] if ln)
    assert got == {
        "Host": f"127.0.0.1:{up.port}",
        "X-Keep": "k",
        "X-Forwarded-For": "10.9.8.7, 127.0.0.1",
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": "front.example",
        "Forwarded": 'for=127.0.0.1;proto=http;host="front.example"',
        "Via": "1.0 edge, 1.1 tusknetd",
    }
    names = [n.lower() for n, _ in r.headers]
    for gone in ("x-secret", "keep-alive", "proxy-foo", "trailer", "upgrade"):
        assert gone not in names, r
    assert r.header("X-App") == "a" and r.header("Content-Type") == "text/x-req"
    assert r.header("Via") == "1.1 tusknetd" and r.header("Server") == "tusknetd"
    assert r.headers_all("Connection") == []


def test_preserve_host_sends_the_clients_host(daemon, tmp_path, peers):
    (a,) = free_ports(1)
    ng = Nginx(tmp_path, [(a, 'location / { return 200 "$host $request_uri"; }')])
    peers.append(ng)
    _, conf = proxy_config(tmp_path, [f"127.0.0.1:{a}"], "preserve_host: true", routes='"GET /static/*": "px"')
    d = daemon(conf)
    r = http_get(d.ports["WEB"], "/static/", {"Host": "shop.example"})
    assert (r.status, r.text) == (200, "shop.example /")


# ---- failures -----------------------------------------------------------------------


def test_refused_connect_is_retried_on_another_server_post_is_not(daemon, tmp_path, peers):
    (a,) = free_ports(1)
    ng = Nginx(tmp_path, [(a, 'location / { return 200 "ok"; }')])
    peers.append(ng)
    dead = closed_port()
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{dead}", f"127.0.0.1:{a}"],
                                  'max_fails: 1000 retry_backoff: "30ms" retry_backoff_max: "50ms"')
    d = daemon(conf)
    port = d.ports["WEB"]
    # round robin sends every other request to the dead server first
    assert bodies(port, 20) == {"ok": 20}
    s = servers_of(ctl_path)
    assert s[f"127.0.0.1:{dead}"]["failures"]["connect"] == 10
    assert s[f"127.0.0.1:{a}"]["requests"] == 20
    retries = re.findall(r"retry (\d+) of GET / in (\d+)ms", d.log())
    assert len(retries) == 10 and all(n == "1" and 0 <= int(ms) <= 30 for n, ms in retries), retries
    # POST: the one that meets the dead server is answered 502, not retried
    statuses = []
    with HttpConn(port) as c:
        for _ in range(4):
            statuses.append(c.exchange("POST", "/form", None, b"a=1").status)
    assert sorted(statuses) == [200, 200, 502, 502]
    assert servers_of(ctl_path)[f"127.0.0.1:{dead}"]["failures"]["connect"] == 12


def test_ejection_after_max_fails_and_return_after_fail_timeout(daemon, tmp_path, peers):
    (a,) = free_ports(1)
    ng = Nginx(tmp_path, [(a, 'location / { return 200 "ok"; }')])
    peers.append(ng)
    dead = closed_port()
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{dead}", f"127.0.0.1:{a}"],
                                  'max_fails: 2 fail_timeout: "1s" retry_backoff: "1ms"')
    d = daemon(conf)
    port = d.ports["WEB"]
    assert bodies(port, 4) == {"ok": 4}
    s = servers_of(ctl_path)[f"127.0.0.1:{dead}"]
    assert (s["state"], s["ejections"], s["failures"]["connect"]) == ("ejected", 1, 2)
    assert bodies(port, 10) == {"ok": 10}
    assert servers_of(ctl_path)[f"127.0.0.1:{dead}"]["failures"]["connect"] == 2  # not tried while out
    wait_for(lambda: servers_of(ctl_path)[f"127.0.0.1:{dead}"]["state"] == "up", 3, what="the return")


def test_all_ejected_answers_502_with_retry_after(daemon, tmp_path):
    dead = closed_port()
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{dead}"], 'max_fails: 1 fail_timeout: "30s" retries: 0')
    d = daemon(conf)
    r1 = http_get(d.ports["WEB"], "/")
    assert (r1.status, r1.header("Retry-After")) == (502, None)
    r2 = http_get(d.ports["WEB"], "/")
    assert (r2.status, r2.header("Retry-After")) == (502, "30")


def test_slow_upstream_gives_504(daemon, tmp_path, peers):
    slow = Canned(lambda i, req: None)
    peers.append(slow)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{slow.port}"], 'timeout: "300ms"')
    d = daemon(conf)
    r = http_get(d.ports["WEB"], "/slow")
    assert r.status == 504, r
    assert servers_of(ctl_path)[f"127.0.0.1:{slow.port}"]["failures"]["timeout"] == 1



def test_a_client_that_half_closes_gets_its_answer_then_the_close(daemon, tmp_path, peers):
    """A client that sends its request and then its FIN (shutdown of its
    write side) is answered when the upstream answers, and the connection
    ends right after: nothing is left open until idle_timeout. Before the
    fix the proxy kept such connections, one per client that left while its
    request was in flight (wrk leaves 8-50 of them at the end of a run)."""
    release = threading.Event()

    def respond(i, req):
        release.wait(10)  # not before the client's FIN is in
        return b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nlater"

    up = Canned(respond)
    peers.append(up)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.port}"])
    d = daemon(conf)
    for _ in range(3):
        release.clear()
        with HttpConn(d.ports["WEB"]) as c:
            c.request("GET", "/x")
            c.sock.shutdown(socket.SHUT_WR)
            wait_for(lambda: len(up.requests) > 0, 5, what="the request at the upstream")
            time.sleep(0.1)  # the FIN reaches the proxy before the answer
            release.set()
            r = c.read_response()
            assert r.status == 200 and r.body == b"later", r
            assert c.wait_closed(5)
        up.requests.clear()
    st = ctl(ctl_path, "stats")
    assert st["global"]["active_connections"] == 0, st["global"]

MALFORMED = {
    "length and chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "two lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "bad chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk without CRLF": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
    "folded header": b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  continued\r\nContent-Length: 2\r\n\r\nok",
    "oversized head": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\nContent-Length: 2\r\n\r\nok",
    "not http": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_upstream_response_is_502_and_its_connection_not_reused(daemon, tmp_path, peers, case):
    good = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood"
    up = Canned(lambda i, req: MALFORMED[case] if b"/bad" in req else good)
    peers.append(up)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.port}"], "max_fails: 100")
    d = daemon(conf)
    with HttpConn(d.ports["WEB"]) as c:
        assert c.exchange("GET", "/good").text == "good"
        r = c.exchange("GET", "/bad")
        assert r.status == 502, r
        assert c.exchange("GET", "/good").text == "good"
    assert up.accepted == 2  # the connection that carried the bad answer was closed
    s = servers_of(ctl_path)[f"127.0.0.1:{up.port}"]
    assert s["failures"]["bad_response"] == 1


def test_upstream_killed_mid_response_client_gets_a_clean_error(daemon, tmp_path, peers):
    def cut(sock, rest):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        sock.close()
    up = Canned(lambda i, req: cut if b"/cut" in req else b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    peers.append(up)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.port}"])
    d = daemon(conf)
    port = d.ports["WEB"]
    c = HttpConn(port)
    c.request("GET", "/cut")
    head = c.read_head()
    assert head[1] == 200 and ("Content-Length", "100000") in head[3]
    body = b""
    with pytest.raises(Exception):
        while True:
            c._fill(time.monotonic() + 5, "the rest of the body")
    body = c.buf
    assert body == b"x" * 1000 and c.eof
    c.close()
    assert bodies(port, 5) == {"ok": 5}
    assert servers_of(ctl_path)[f"127.0.0.1:{up.port}"]["failures"]["reset"] == 1


# ---- streaming ------------------------------------------------------------------------


GB = 1 << 30


def read_body(i, head):
    """Canned answer: reads the Content-Length body, then tells its length."""
    n = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))

    def reply(sock, rest):
        left = n - len(rest)
        buf = bytearray(1 << 20)
        while left:
            got = sock.recv_into(buf, min(left, len(buf)))
            if not got:
                return
            left -= got
        text = b"%d" % n
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text))
        sock.close()
    return reply


def test_one_gigabyte_each_way_with_bounded_memory(daemon, tmp_path, peers):
    files = tmp_path / "files"
    files.mkdir()
    with open(files / "big.bin", "wb") as f:
        f.truncate(GB)
    # downloads from a tusknetd file handler, uploads to a server that reads
    # the whole body before answering its length
    fs = daemon(f"""
[daemon]
control_socket: ""
[handlers]
files {{ type: "file" root: "{files}" }}
[listeners]
app {{ protocol: "http" listen: "127.0.0.1:PORT_APP" routes {{ "GET /*": "files" }} }}
""", name="files")
    up = Canned(read_body)
    peers.append(up)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{fs.ports['APP']}", f"127.0.0.1:{up.port}"],
                                  listener_extra='max_body: "2GB" read_timeout: "600s"',
                                  routes='"GET /*": "down" "POST /up": "px"')
    conf = conf.replace("[listeners]", f'down {{ type: "proxy" upstreams: ["127.0.0.1:{fs.ports["APP"]}"] }}\n'
                                       f'[listeners]').replace(f'"127.0.0.1:{fs.ports["APP"]}", ', "")
    # ASan keeps freed memory in quarantine on purpose; this measures ours
    env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=1")
    d = daemon(conf, env=env)
    port = d.ports["WEB"]
    rss_before = rss_kb(d.pid)
    peak = [rss_before]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kb(d.pid))
            time.sleep(0.05)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        down = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                               f"http://127.0.0.1:{port}/big.bin"], capture_output=True, timeout=120)
        assert down.stdout.decode() == f"200 {GB}", down.stderr
        # chunked upload from a pipe: 1 GB of zeros
        sent = subprocess.run(["curl", "-sS", "-X", "POST", "-T", str(files / "big.bin"), "-H", "Expect:",
                               f"http://127.0.0.1:{port}/up"], capture_output=True, timeout=300)
        assert (sent.returncode, sent.stdout) == (0, b"%d" % GB), sent.stderr
    finally:
        done.set()
        t.join()
    assert peak[0] - rss_before < 32 * 1024, (rss_before, peak[0])


# ---- operations ----------------------------------------------------------------------


def test_tusknetctl_upstreams_and_drain(daemon, tmp_path, peers):
    a, b = free_ports(2)
    ng = Nginx(tmp_path, [(a, f'location / {{ return 200 "{a}"; }}'), (b, f'location / {{ return 200 "{b}"; }}')])
    peers.append(ng)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{a}", f"127.0.0.1:{b} weight=2"])
    d = daemon(conf)
    port = d.ports["WEB"]
    assert bodies(port, 30) == {str(a): 10, str(b): 20}
    tn = TUSKNETCTL
    out = subprocess.run([tn, "-s", ctl_path, "upstreams"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["HANDLER", "SERVER", "STATE", "WEIGHT", "ACTIVE", "IDLE", "REQUESTS", "REUSED",
                                "FAILURES", "P50", "ms", "P99", "ms"]
    rows = [ln.split() for ln in lines[1:]]
    assert [r[:9] for r in rows] == [["px", f"127.0.0.1:{a}", "up", "1", "0", "1", "10", "9", "-"],
                                     ["px", f"127.0.0.1:{b}", "up", "2", "0", "1", "20", "19", "-"]]
    out = subprocess.run([tn, "-s", ctl_path, "upstream", "px", f"127.0.0.1:{b}", "drain"], capture_output=True,
                         text=True, timeout=10)
    assert (out.returncode, out.stdout) == (0, f"ok: upstream 127.0.0.1:{b} of px: drain\n")
    assert bodies(port, 10) == {str(a): 10}
    assert servers_of(ctl_path)[f"127.0.0.1:{b}"]["state"] == "draining"
    out = subprocess.run([tn, "-s", ctl_path, "upstream", "px", "9.9.9.9:1", "up"], capture_output=True,
                         text=True, timeout=10)
    assert (out.returncode, out.stderr) == (1, "tusknetctl: handler 'px' has no upstream '9.9.9.9:1'\n")
    assert ctl(ctl_path, f"upstream px 127.0.0.1:{b} weight 3") == {"ok": True}
    assert ctl(ctl_path, f"upstream px 127.0.0.1:{b} up") == {"ok": True}
    assert bodies(port, 40) == {str(a): 10, str(b): 30}
    samples = parse_prometheus(ctl_metrics(ctl_path))
    assert sample(samples, "tusknet_upstream_requests_total", handler="px", server=f"127.0.0.1:{b}") == 50
    assert sample(samples, "tusknet_upstream_up", handler="px", server=f"127.0.0.1:{a}") == 1
    assert sample(samples, "tusknet_upstream_failures_total", handler="px", server=f"127.0.0.1:{a}",
                  reason="connect") == 0


@contextlib.contextmanager
def steady_gets(port, path, clients=4):
    """CLIENTS keep-alive connections GET PATH one after another until the block
    ends; yields the list of (status, body) they receive."""
    stop = threading.Event()
    results = []

    def load():
        with HttpConn(port, timeout=10) as c:
            while not stop.is_set():
                r = c.exchange("GET", path)
                results.append((r.status, r.body))
    threads = [threading.Thread(target=load) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield results
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_reload_under_load_fails_no_request_and_keeps_pools(daemon, tmp_path):
    up1, ctl1 = upstream_tusknetd(daemon, tmp_path, "one")
    up2, ctl2 = upstream_tusknetd(daemon, tmp_path, "two")
    s1, s2 = f"127.0.0.1:{up1.ports['APP']}", f"127.0.0.1:{up2.ports['APP']}"
    ctl_path, conf = proxy_config(tmp_path, [s1])
    d = daemon(conf)
    port = d.ports["WEB"]
    with steady_gets(port, "/x") as results:
        for i in range(6):
            ups = [s1, s2] if i % 2 == 0 else [s1]
            _, conf_i = proxy_config(tmp_path, ups, f"keepalive: {32 + i}")
            reload_with(d, ctl_path, conf_i)
            time.sleep(0.2)
    assert results and {s for s, _ in results} == {200}, results[:5]
    assert {b for _, b in results} <= {b"hello from one", b"hello from two"}
    # server one stayed in every config: its pooled connections were kept
    assert accepted(ctl1) <= 4


def test_websockets_through_the_proxy(daemon, tmp_path):
    websockets = pytest.importorskip("websockets.client")
    up, _ = upstream_tusknetd(daemon, tmp_path)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.ports['APP']}"], 'timeout: "5s"',
                                  routes='"GET /ws": "px"')
    d = daemon(conf)
    port = d.ports["WEB"]

    async def one(i):
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
            for k in range(3):
                msg = f"client {i} message {k}"
                await ws.send(msg)
                assert await asyncio.wait_for(ws.recv(), 10) == msg

    async def all_of():
        await asyncio.gather(*(one(i) for i in range(100)))

    asyncio.run(all_of())
    s = servers_of(ctl_path)[f"127.0.0.1:{up.ports['APP']}"]
    assert s["requests"] == 100 and s["responses"] == 100
    wait_for(lambda: servers_of(ctl_path)[f"127.0.0.1:{up.ports['APP']}"]["active"] == 0, 5,
             what="every relay to end")


# ---- active checks and upstream TLS -----------------------------------------------------


def test_active_checks_take_a_server_out_and_back(daemon, tmp_path, peers):
    (a,) = free_ports(1)
    ng = Nginx(tmp_path, [(a, f'location / {{ return 200 "{a}"; }}')])
    peers.append(ng)
    healthy = threading.Event()
    healthy.set()

    def respond(i, req):
        if req.startswith(b"GET /hc "):
            return b"HTTP/1.1 %s\r\nContent-Length: 0\r\n\r\n" % (b"200 OK" if healthy.is_set() else b"503 No")
        return b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"
    b = Canned(respond)
    peers.append(b)
    ctl_path, conf = proxy_config(
        tmp_path, [f"127.0.0.1:{a}", f"127.0.0.1:{b.port}"],
        'health_check { path: "/hc" interval: "100ms" timeout: "1s" rise: 2 fall: 2 expect_status: 200 }')
    d = daemon(conf)
    port = d.ports["WEB"]
    wait_for(lambda: sum(1 for r in b.requests if r.startswith(b"GET /hc ")) >= 3, 5, what="three probes")
    assert bodies(port, 10) == {str(a): 5, "b": 5}
    probe = next(r for r in b.requests if r.startswith(b"GET /hc "))
    assert probe == (b"GET /hc HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: tusknetd-health-check\r\n"
                     b"Connection: close" % b.port)
    healthy.clear()
    wait_for(lambda: servers_of(ctl_path)[f"127.0.0.1:{b.port}"]["state"] == "down", 5, what="b down")
    assert bodies(port, 10) == {str(a): 10}
    assert "health check failed 2 times (last: status 503), down" in d.log()
    healthy.set()
    wait_for(lambda: servers_of(ctl_path)[f"127.0.0.1:{b.port}"]["state"] == "up", 5, what="b back")
    assert "health check passed 2 times, up" in d.log()


def test_tcp_connect_check_without_a_path(daemon, tmp_path, peers):
    (a,) = free_ports(1)
    ng = Nginx(tmp_path, [(a, 'location / { return 200 "ok"; }')])
    peers.append(ng)
    dead = closed_port()
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{a}", f"127.0.0.1:{dead}"],
                                  'health_check { interval: "100ms" fall: 1 }')
    d = daemon(conf)
    wait_for(lambda: servers_of(ctl_path)[f"127.0.0.1:{dead}"]["state"] == "down", 5, what="the dead one down")
    assert bodies(d.ports["WEB"], 10) == {"ok": 10}
    assert servers_of(ctl_path)[f"127.0.0.1:{dead}"]["failures"]["connect"] == 0  # no request was sent there


def tls_upstream(daemon, pki):
    return daemon(f"""
[daemon]
control_socket: ""
[handlers]
hello {{ type: "static" reply: "hello over tls" }}
[listeners]
app {{ protocol: "http" listen: "127.0.0.1:PORT_APP" routes {{ "GET /*": "hello" }}
       tls {{ cert: "{pki.localhost.cert}" key: "{pki.localhost.key}" }} }}
""", name="tlsup")


def test_upstream_tls_verified_against_the_configured_ca(daemon, tmp_path, pki):
    up = tls_upstream(daemon, pki)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.ports['APP']}"], f'tls {{ ca: "{pki.ca.cert}" }}')
    d = daemon(conf)
    with HttpConn(d.ports["WEB"]) as c:
        for _ in range(3):
            r = c.exchange("GET", "/")
            assert (r.status, r.text) == (200, "hello over tls"), r
    s = servers_of(ctl_path)[f"127.0.0.1:{up.ports['APP']}"]
    assert (s["connects"], s["reused"]) == (1, 2)


def test_upstream_tls_refuses_an_unverified_certificate(daemon, tmp_path, pki):
    up = tls_upstream(daemon, pki)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.ports['APP']}"], "retries: 0 tls { verify: true }")
    d = daemon(conf)
    assert http_get(d.ports["WEB"], "/").status == 502  # the test CA is not in the system's store
    assert servers_of(ctl_path)[f"127.0.0.1:{up.ports['APP']}"]["failures"]["tls"] == 1
    _, conf2 = proxy_config(tmp_path, [f"127.0.0.1:{up.ports['APP']}"], 'tls { verify: false }')
    reload_with(d, ctl_path, conf2)
    assert http_get(d.ports["WEB"], "/").text == "hello over tls"


def test_middleware_runs_on_proxied_routes(daemon, tmp_path, peers):
    up = Canned(lambda i, req: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    peers.append(up)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.port}"], listener_extra='middleware: ["guard"]')
    conf = conf.replace("[listeners]", '[middleware]\nguard { type: "auth" tokens: ["s3cret"] }\n[listeners]')
    d = daemon(conf)
    r = http_get(d.ports["WEB"], "/x")
    assert r.status == 401 and up.accepted == 0
    r = http_get(d.ports["WEB"], "/x", {"Authorization": "Bearer s3cret"})
    assert (r.status, r.text) == (200, "ok")
    assert b"Authorization: Bearer s3cret" in up.requests[0]


def test_many_clients_streaming_bodies_at_once(daemon, tmp_path, peers):
    (a,) = free_ports(1)
    www = tmp_path / "www"
    www.mkdir()
    (www / "b64k").write_bytes(bytes(range(256)) * 256)
    fs = daemon(f"""
[daemon]
control_socket: ""
[handlers]
files {{ type: "file" root: "{www}" }}
[listeners]
app {{ protocol: "http" listen: "127.0.0.1:PORT_APP" routes {{ "GET /*": "files" }} }}
""", name="files")
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{fs.ports['APP']}"])
    d = daemon(conf)
    port = d.ports["WEB"]
    want = bytes(range(256)) * 256
    results = []

    def client():
        with HttpConn(port, timeout=20) as c:
            for _ in range(20):
                r = c.exchange("GET", "/b64k")
                results.append((r.status, r.body == want))
    ts = [threading.Thread(target=client) for _ in range(30)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert results == [(200, True)] * 600


def test_client_gone_mid_upload_closes_the_upstream_connection(daemon, tmp_path, peers):
    up = Canned(lambda i, req: None)  # reads the head, waits for the body forever
    peers.append(up)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.port}"])
    d = daemon(conf)
    c = HttpConn(d.ports["WEB"])
    c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000)
    wait_for(lambda: len(up.requests) == 1, 5, what="the request upstream")
    assert servers_of(ctl_path)[f"127.0.0.1:{up.port}"]["active"] == 1
    c.close()
    wait_for(lambda: servers_of(ctl_path)[f"127.0.0.1:{up.port}"]["active"] == 0, 5, what="the upstream side to close")
    s = servers_of(ctl_path)[f"127.0.0.1:{up.port}"]
    assert (s["idle"], sum(s["failures"].values())) == (0, 0)  # not pooled, not the server's fault


def test_uploads_cut_short_in_the_read_that_started_them_among_good_requests(daemon, tmp_path, peers):
    """Head, part of the body and the client's close in one go: the exchange
    ends in the loop pass that queued its request for the upstream (requests
    leave at the end of the pass), so its connection leaves the batch before
    it is sent. Good requests in the same passes are all answered."""
    up = Canned(lambda i, req: None if req.startswith(b"POST") else b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    peers.append(up)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.port}"])
    d = daemon(conf)
    port = d.ports["WEB"]
    answers = []
    with steady_gets(port, "/g") as good:
        for _ in range(100):
            with socket.create_connection((HOST, port), timeout=10) as s:
                s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"a" * 100)
                s.shutdown(socket.SHUT_WR)
                got = b""
                while chunk := s.recv(65536):
                    got += chunk
                answers.append(got.split(b"\r\n", 1)[0])
    assert answers == [b"HTTP/1.1 400 Bad Request"] * 100
    assert good and set(good) == {(200, b"ok")}
    wait_for(lambda: servers_of(ctl_path)[f"127.0.0.1:{up.port}"]["active"] == 0, 5, what="no exchange left")
    s = servers_of(ctl_path)[f"127.0.0.1:{up.port}"]
    assert sum(s["failures"].values()) == 0  # the clients' doing, not the server's


def test_gzip_compresses_proxied_bodies_the_server_did_not(daemon, tmp_path, peers):
    import gzip as gz
    text = b"".join(b"line %d of a compressible answer\n" % i for i in range(3000))
    packed = gz.compress(b"already compressed by the server")

    def respond(i, req):
        if b"/packed" in req:
            return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(packed)) + packed
        if b"/image" in req:
            return b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(text) + text
        return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(text) + text
    up = Canned(respond)
    peers.append(up)
    ctl_path, conf = proxy_config(tmp_path, [f"127.0.0.1:{up.port}"], listener_extra='middleware: ["gzip"]')
    d = daemon(conf)
    with HttpConn(d.ports["WEB"]) as c:
        r = c.exchange("GET", "/text", {"Accept-Encoding": "gzip"})
        assert (r.status, r.header("Content-Encoding"), r.header("Vary"), r.framing) == (200, "gzip",
                                                                                         "Accept-Encoding", "chunked")
        assert gz.decompress(r.body) == text and len(r.body) < len(text) // 4
        r = c.exchange("GET", "/text")
        assert (r.header("Content-Encoding"), r.body, r.header("Content-Length")) == (None, text, str(len(text)))
        r = c.exchange("GET", "/packed", {"Accept-Encoding": "gzip"})
        assert (r.header("Content-Encoding"), r.body) == ("gzip", packed)
        r = c.exchange("GET", "/image", {"Accept-Encoding": "gzip"})
        assert (r.header("Content-Encoding"), r.body) == (None, text)


def test_host_names_are_resolved_again_without_blocking(daemon, tmp_path, peers):
    up = Canned(lambda i, req: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    peers.append(up)
    # "localhost" is in the hosts file, which evdns reads before any nameserver
    ctl_path, conf = proxy_config(tmp_path, [f"localhost:{up.port}", f"127.0.0.1:{up.port} backup"],
                                  'resolve: "100ms"')
    d = daemon(conf)
    wait_for(lambda: servers_of(ctl_path)[f"localhost:{up.port}"]["resolutions"] >= 3, 5, what="three lookups")
    s = servers_of(ctl_path)
    assert s[f"localhost:{up.port}"]["address"] == f"127.0.0.1:{up.port}"
    assert s[f"127.0.0.1:{up.port}"]["resolutions"] == 0  # an address is not looked up
    assert bodies(d.ports["WEB"], 5) == {"ok": 5}
    assert "cannot resolve" not in d.log()
