# SPDX-License-Identifier: MIT
"""[cluster]: broadcast rooms across daemons through a real redis-server.

Two daemons (nodes "a" and "b") share a Redis started here on a free port in
tmp_path (no persistence). Members are TCP line clients (a tcp listener whose
one handler is the room: connecting joins) and WebSocket clients. Link
states are waited for by polling `stats`; what is delivered and counted is
checked exactly. Redis's own refusals (wrong password, errors for PUBLISH
or PSUBSCRIBE) and hostile channel traffic come from a scripted RESP server.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from ctl_util import TUSKNETCTL, CtlClient, wait_for
from daemon_util import (  # noqa: F401  (daemon is a fixture)
    HOST, PORT_RE, TUSKNETD, LineClient, check_config, daemon, free_port)
from test_ws import RawWs

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


# ---- a real Redis --------------------------------------------------------------


class Redis:
    """redis-server on PORT in DIR, restartable on the same port."""

    def __init__(self, tmp_path, port=None):
        self.dir = tmp_path / f"redis-{id(self)}"
        self.dir.mkdir()
        self.port = port or free_port()
        self.proc = None
        self.log = None

    def start(self, *args):
        self.log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), *args],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((self.dir / "redis.log").read_text())
                time.sleep(0.02)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            self.log.close()
            self.log = None

    def command(self, *args, password=None):
        """One command through redis-cli; its output."""
        cmd = ["redis-cli", "-h", HOST, "-p", str(self.port)]
        if password:
            cmd += ["--no-auth-warning", "-a", password]
        return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=10, check=True).stdout


@pytest.fixture
def redis(tmp_path):
    made = []

    def make(*args, port=None):
        r = Redis(tmp_path, port)
        made.append(r)
        return r.start(*args)

    yield make
    for r in made:
        r.stop()


@pytest.fixture
def ctl_dir():
    """Control sockets in a short directory (tmp_path may be too long for one)."""
    d = tempfile.mkdtemp(prefix="tncl-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


NODE = """
[daemon]
control_socket: "{ctl}"
shutdown_timeout: "2s"

[handlers]
chat  {{ type: "broadcast" }}
other {{ type: "broadcast" }}

[listeners]
lines {{ protocol: "tcp"  listen: "127.0.0.1:PORT_LINES"  handler: "chat" }}
web {{
    protocol: "http"
    listen: "127.0.0.1:PORT_WEB"
    websocket {{ "/chat": "chat" }}
}}

[cluster]
redis: "{redis}"
node_id: "{node}"
reconnect_max: "200ms"
{extra}
"""


def node_config(ctl_dir, node, redis_port, extra=""):
    return NODE.format(ctl=os.path.join(ctl_dir, f"{node}.sock"), redis=f"127.0.0.1:{redis_port}", node=node,
                       extra=extra)


def start_node(daemon, ctl_dir, node, redis_port, extra=""):  # noqa: F811
    d = daemon(node_config(ctl_dir, node, redis_port, extra), name=f"node-{node}")
    d.ctl = CtlClient(os.path.join(ctl_dir, f"{node}.sock"))
    return d


def rewrite(d, text):
    """Writes TEXT as D's config (its ports kept); a reload applies it."""
    d.config_path.write_text(PORT_RE.sub(lambda m: str(d.ports[m.group(1)]), text))


def two_nodes(daemon, r, ctl_dir, extra_a="", extra_b=""):  # noqa: F811
    """Nodes a and b on Redis R, both linked."""
    a = start_node(daemon, ctl_dir, "a", r.port, extra_a)
    b = start_node(daemon, ctl_dir, "b", r.port, extra_b)
    wait_state(a, "connected")
    wait_state(b, "connected")
    return a, b


def cluster(d):
    return d.ctl.command("stats")["cluster"]


def wait_state(d, state, timeout=10.0):
    return wait_for(lambda: cluster(d)["state"] == state and cluster(d), timeout=timeout,
                    what=f"{d.name}: cluster link {state}")


def counts(d):
    c = cluster(d)
    return {k: c[k] for k in ("published", "received", "lost", "queued", "errors", "unroutable", "invalid")}


def zero(**kw):
    out = {"published": 0, "received": 0, "lost": 0, "queued": 0, "errors": 0, "unroutable": 0, "invalid": 0}
    out.update(kw)
    return out


def ws_text(ws, timeout=5.0):
    op, data = ws.recv_frame(timeout)
    assert op == 1
    return data.decode()


def members(d, n):
    """N line clients that have joined the room (the daemon lists them)."""
    before = len(d.ctl.command("connections lines")["connections"])
    out = [LineClient(d.ports["LINES"]) for _ in range(n)]
    wait_for(lambda: len(d.ctl.command("connections lines")["connections"]) == before + n,
             what="members connected")
    return out


def ws_member(d):
    ws = RawWs(d.ports["WEB"], "/chat")
    assert ws.status == 101
    return ws


# ---- delivery across nodes --------------------------------------------------------


def test_line_client_on_one_node_reaches_websocket_on_the_other(daemon, redis, ctl_dir):  # noqa: F811
    a, b = two_nodes(daemon, redis(), ctl_dir)
    sender, local = members(a, 2)
    ws = ws_member(b)
    far = members(b, 1)[0]

    sender.sendline("hello from a")
    assert ws_text(ws) == "hello from a"
    assert far.readline() == "hello from a"
    assert local.readline() == "hello from a"
    sender.sendline("second")
    assert ws_text(ws) == "second"
    assert far.readline() == "second"
    # a's own copy came back from Redis and was dropped: the next line is the
    # next message, not a duplicate
    assert local.readline() == "second"
    # the other way round, with a NUL and bytes that are not UTF-8; the
    # sender's next line is this, none of its own messages
    far.send(b"from b \x00\xff\n")
    assert local.readline() == "from b \x00\ufffd"
    assert sender.readline() == "from b \x00\ufffd"
    wait_for(lambda: cluster(a)["received"] == 1, what="a received")
    assert counts(a) == zero(published=2, received=1)
    assert counts(b) == zero(published=1, received=2)
    for c in (sender, local, far):
        c.close()
    ws.close()


def test_order_kept_per_publisher_across_nodes(daemon, redis, ctl_dir):  # noqa: F811
    a, b = two_nodes(daemon, redis(), ctl_dir)
    sender = members(a, 1)[0]
    far = members(b, 1)[0]
    ws = ws_member(b)
    wait_for(lambda: len(b.ctl.command("connections web")["connections"]) == 1, what="ws member on b")
    lines = ["message %d %s" % (i, "x" * (i % 50)) for i in range(500)]
    sender.send("".join(line + "\n" for line in lines))  # one write: the daemon reads them in batches
    assert far.readlines(500) == lines
    assert [ws_text(ws) for _ in lines] == lines
    wait_for(lambda: cluster(a)["published"] == 500, what="all acknowledged")
    assert counts(a) == zero(published=500)
    assert counts(b) == zero(received=500)
    sender.close()
    far.close()
    ws.close()


def test_control_broadcast_reaches_members_on_both(daemon, redis, ctl_dir):  # noqa: F811
    a, b = two_nodes(daemon, redis(), ctl_dir)
    here = members(a, 2)
    ws_here = ws_member(a)
    there = members(b, 3)
    ws_there = ws_member(b)
    wait_for(lambda: len(b.ctl.command("connections web")["connections"]) == 1, what="ws member on b")

    # the answer counts this node's members; b's get it through Redis
    assert a.ctl.command("broadcast chat to everyone") == {"ok": True, "sent": 3, "dropped": 0}
    for c in here + there:
        assert c.readline() == "to everyone"
    assert ws_text(ws_here) == "to everyone"
    assert ws_text(ws_there) == "to everyone"
    # a room without members is published all the same
    assert a.ctl.command("broadcast other nobody listens") == {"ok": True, "sent": 0, "dropped": 0}
    assert b.ctl.command("broadcast chat back") == {"ok": True, "sent": 4, "dropped": 0}
    for c in here:
        assert c.readline() == "back"
    assert ws_text(ws_here) == "back"
    wait_for(lambda: cluster(a)["received"] == 1 and cluster(b)["received"] == 2, what="deliveries counted")
    assert counts(a) == zero(published=2, received=1)
    assert counts(b) == zero(published=1, received=2)
    for c in here + there:
        c.close()
    ws_here.close()
    ws_there.close()


def test_redis_restart_local_delivery_continues_and_links_come_back(daemon, redis, ctl_dir):  # noqa: F811
    """Redis goes away and comes back with only b's password at first: b
    reconnects, flushes what it queued (a is not there to hear it); then a's
    password is added, a reconnects and flushes to b. Exact throughout."""
    users = ["--user", "default", "on", ">pass-a", ">pass-b", "~*", "&*", "+@all"]
    r = redis(*users)
    a, b = two_nodes(daemon, r, ctl_dir, 'password: "pass-a"', 'password: "pass-b"')
    a1, a2 = members(a, 2)
    b1, b2 = members(b, 2)
    a1.sendline("before")
    for c in (a2, b1, b2):
        assert c.readline() == "before"
    wait_for(lambda: cluster(a)["published"] == 1, what="acknowledged")

    r.stop()
    wait_for(lambda: cluster(a)["state"] != "connected" and cluster(b)["state"] != "connected",
             what="both links down")
    a1.sendline("a while down")
    assert a2.readline() == "a while down"
    b1.sendline("b while down")
    assert b2.readline() == "b while down"
    assert cluster(a)["queued"] == 1 and cluster(b)["queued"] == 1

    r.start("--user", "default", "on", ">pass-b", "~*", "&*", "+@all")
    wait_state(b, "connected")
    wait_for(lambda: cluster(b)["queued"] == 0, what="b's queue flushed")
    wait_for(lambda: cluster(a)["last_error"] == "AUTH refused: WRONGPASS invalid username-password pair "
             "or user is disabled.", what="a refused by Redis")
    assert cluster(a)["state"] != "connected"
    r.command("ACL", "SETUSER", "default", ">pass-a", password="pass-b")
    wait_state(a, "connected")
    # a's queued message reaches b; b's went out while a was not subscribed
    for c in (b1, b2):
        assert c.readline() == "a while down"
    b2.sendline("after")
    for c in (a1, a2, b1):
        assert c.readline() == "after"
    wait_for(lambda: cluster(a)["received"] == 1, what="a received")
    assert counts(a) == zero(published=2, received=1, errors=cluster(a)["errors"])
    assert cluster(a)["errors"] >= 1
    assert counts(b) == zero(published=2, received=2)
    assert cluster(a)["reconnects"] >= 1 and cluster(b)["reconnects"] >= 1
    assert cluster(a)["last_error"] is None
    for c in (a1, a2, b1, b2):
        c.close()


def test_wrong_password_never_connects_and_local_rooms_work(daemon, redis, ctl_dir):  # noqa: F811
    r = redis("--requirepass", "right")
    a = start_node(daemon, ctl_dir, "a", r.port, 'password: "wrong"')
    wait_for(lambda: cluster(a)["errors"] >= 1, what="AUTH refused")
    c = cluster(a)
    assert c["last_error"] == "AUTH refused: WRONGPASS invalid username-password pair or user is disabled."
    assert c["state"] != "connected"
    x, y = members(a, 2)
    x.sendline("local only")
    assert y.readline() == "local only"
    assert cluster(a)["queued"] == 1
    assert "cluster: Redis 127.0.0.1:%d: AUTH refused: WRONGPASS" % r.port in a.log()
    # the password from the environment, through a reload
    rewrite(a, node_config(ctl_dir, "a", r.port, 'password: @env("TN_TEST_REDIS_PW", "right")'))
    assert a.ctl.command("reload")["ok"] is True
    wait_state(a, "connected")
    wait_for(lambda: cluster(a)["published"] == 1, what="queued message published")
    assert cluster(a)["queued"] == 0
    # the secret is not shown by `config`
    assert a.ctl.command("config")["config"]["cluster"]["password"] == "(hidden)"
    x.close()
    y.close()


def test_queue_bound_and_huge_messages_are_lost_and_counted(daemon, redis, ctl_dir):  # noqa: F811
    r = redis()
    a = start_node(daemon, ctl_dir, "a", r.port, 'max_queue: "1KB"')
    wait_state(a, "connected")
    x, y = members(a, 2)
    huge = "h" * 5000
    x.sendline(huge)
    assert y.readline() == huge  # local delivery does not depend on Redis
    x.sendline("small")
    assert y.readline() == "small"
    wait_for(lambda: cluster(a)["published"] == 1, what="small published")
    assert counts(a) == zero(published=1, lost=1)
    # while Redis is away the queue holds 1KB of messages: 3 of 400 bytes fit 2
    r.stop()
    wait_for(lambda: cluster(a)["state"] != "connected", what="link down")
    for i in range(3):
        x.sendline(str(i) * 400)
        assert y.readline() == str(i) * 400
    c = cluster(a)
    assert (c["queued"], c["queued_bytes"], c["lost"]) == (2, 800, 2)
    assert "cluster: chat: a message of 5000 bytes is over max_queue, not published" in a.log()
    assert "cluster: chat: queue full (800 bytes waiting for Redis, link " in a.log()
    r.start()
    wait_state(a, "connected")
    wait_for(lambda: cluster(a)["queued"] == 0, what="queue flushed")
    assert counts(a) == zero(published=3, lost=2)
    x.close()
    y.close()


def test_reload_keeps_an_unchanged_link_and_redoes_a_changed_one(daemon, redis, ctl_dir):  # noqa: F811
    r = redis()
    a = start_node(daemon, ctl_dir, "a", r.port)
    first = wait_state(a, "connected")
    def clients():
        """Redis's client ids, without redis-cli's own."""
        return sorted(l.split()[0] for l in r.command("CLIENT", "LIST").splitlines() if "cmd=client|list" not in l)

    before = clients()
    assert len(before) == 2  # the publishing and the subscribing connection
    assert a.ctl.command("reload")["ok"] is True
    assert cluster(a)["since"] == first["since"] and clients() == before
    rewrite(a, node_config(ctl_dir, "a", r.port).replace('node_id: "a"', 'node_id: "a2"'))
    assert a.ctl.command("reload")["ok"] is True
    c = wait_state(a, "connected")
    assert c["node_id"] == "a2" and c["since"] != first["since"]
    wait_for(lambda: len(clients()) == 2 and set(clients()).isdisjoint(before), what="new connections")
    # without [cluster] the daemon is on its own
    rewrite(a, node_config(ctl_dir, "a", r.port).split("[cluster]")[0])
    assert a.ctl.command("reload")["ok"] is True
    assert "cluster" not in a.ctl.command("stats")
    wait_for(lambda: clients() == [], what="Redis connections closed")


def test_default_node_id_and_stats_rendering(daemon, redis, ctl_dir):  # noqa: F811
    r = redis()
    cfg = node_config(ctl_dir, "a", r.port).replace('node_id: "a"\n', "")
    d = daemon(cfg, name="node-a")
    d.ctl = CtlClient(os.path.join(ctl_dir, "a.sock"))
    c = wait_state(d, "connected")
    assert c["node_id"] == f"{socket.gethostname()}:{d.pid}"
    assert c["redis"] == f"127.0.0.1:{r.port}"
    out = subprocess.run([TUSKNETCTL, "-s", os.path.join(ctl_dir, "a.sock"), "stats"], capture_output=True, text=True,
                         timeout=10).stdout
    line = next(l for l in out.splitlines() if l.startswith("cluster"))
    assert line == (f"cluster      connected (Redis 127.0.0.1:{r.port}, node {c['node_id']}): 0 published, "
                    "0 received, 0 lost, 0 queued")
    metrics = d.ctl.metrics()
    assert "tusknet_cluster_up 1\n" in metrics
    assert 'tusknet_cluster_messages_total{outcome="published"} 0\n' in metrics


# ---- configuration ----------------------------------------------------------------


@pytest.mark.parametrize("body, message", [
    ('redis: "*:6379"', "'redis': \"*:6379\" is not a server to connect to (use host:port)"),
    ('redis: "127.0.0.1:0"', "'redis': \"127.0.0.1:0\" is not a server to connect to (use host:port)"),
    ('redis: "127.0.0.1"', "'redis': bad address \"127.0.0.1\" (use host:port, [v6]:port or *:port)"),
    ('redis: "127.0.0.1:6379"\nnode_id: "%s"' % ("n" * 256), "'node_id': longer than 255 bytes"),
    ('redis: "127.0.0.1:6379"\nmax_queue: "10"', "'max_queue'"),
    ('redis: "127.0.0.1:6379"\nchanel_prefix: "x"', "unknown key 'chanel_prefix'"),
])
def test_bad_cluster_sections_are_refused(tmp_path, body, message):
    rc, out = check_config("[cluster]\n" + body + "\n", tmp_path)
    assert rc != 0
    assert message in out


def test_an_unanswered_connect_times_out_without_blocking(daemon, ctl_dir):  # noqa: F811
    """A listener whose accept queue is full drops SYNs: the connect hangs."""
    blackhole = socket.socket()
    blackhole.bind((HOST, 0))
    blackhole.listen(0)
    port = blackhole.getsockname()[1]
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex((HOST, port))
        fillers.append(f)
    try:
        a = start_node(daemon, ctl_dir, "a", port)
        x, y = members(a, 2)
        x.sendline("while connecting")
        assert y.readline() == "while connecting"
        assert cluster(a)["state"] == "connecting"
        wait_for(lambda: cluster(a)["last_error"] == "connect timeout", timeout=15, what="connect timeout")
        assert cluster(a)["queued"] == 1
        x.close()
        y.close()
    finally:
        for f in fillers:
            f.close()
        blackhole.close()


def test_a_redis_name_that_does_not_resolve_refuses_the_start_and_the_reload(daemon, redis, tmp_path, ctl_dir):  # noqa: F811
    conf = tmp_path / "unresolvable.conf"
    conf.write_text('[handlers]\nchat { type: "broadcast" }\n[listeners]\n'
                    'lines { protocol: "tcp" listen: "127.0.0.1:0" handler: "chat" }\n'
                    '[cluster]\nredis: "no-such-host.invalid:6379"\n')
    r = subprocess.run([TUSKNETD, "-c", str(conf), "--log-level", "warn"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.endswith('[error] [cluster] redis: cannot resolve "no-such-host.invalid": '
                             'Name or service not known\n')
    # a reload to it is refused and the running link stays
    red = redis()
    a = start_node(daemon, ctl_dir, "a", red.port)
    first = wait_state(a, "connected")
    rewrite(a, node_config(ctl_dir, "a", red.port).replace(f"127.0.0.1:{red.port}", "no-such-host.invalid:6379"))
    answer = a.ctl.command("reload")
    assert answer["ok"] is False
    assert answer["error"] == '[cluster] redis: cannot resolve "no-such-host.invalid": Name or service not known'
    c = cluster(a)
    assert (c["state"], c["since"], c["redis"]) == ("connected", first["since"], f"127.0.0.1:{red.port}")


# ---- a scripted Redis: refusals and hostile traffic ------------------------------------


def resp(*items):
    out = b"*%d\r\n" % len(items)
    for it in items:
        if isinstance(it, int):
            out += b":%d\r\n" % it
        else:
            it = it.encode() if isinstance(it, str) else it
            out += b"$%d\r\n%s\r\n" % (len(it), it)
    return out


class FakeRedis:
    """A RESP server answering what the test scripts: PSUBSCRIBE confirmed
    (or refused), PUBLISH refused; pushes frames to subscribers on demand."""

    def __init__(self, refuse_psubscribe=False):
        self.refuse_psubscribe = refuse_psubscribe
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind((HOST, 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.subscribers = []
        self.commands = []
        self.lock = threading.Lock()
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _read_command(f):
        line = f.readline()
        if not line:
            return None
        n = int(line[1:])
        args = []
        for _ in range(n):
            size = int(f.readline()[1:])
            args.append(f.read(size + 2)[:-2])
        return args

    def _serve(self, c):
        f = c.makefile("rb")
        while True:
            try:
                args = self._read_command(f)
            except (OSError, ValueError):
                return
            if args is None:
                return
            name = args[0].upper()
            with self.lock:
                self.commands.append(args)
            try:
                if name == b"PSUBSCRIBE" and not self.refuse_psubscribe:
                    with self.lock:
                        self.subscribers.append((c, args[1]))
                    c.sendall(resp("psubscribe", args[1], 1))
                elif name == b"SUBSCRIBE" and not self.refuse_psubscribe:
                    c.sendall(resp("subscribe", args[1], 2))  # the node's own channel (send NODE:ID)
                else:
                    c.sendall(b"-ERR %s refused by the test\r\n" % name.lower())
            except OSError:
                return

    def push(self, channel, payload):
        with self.lock:
            subs = list(self.subscribers)
        for c, pattern in subs:
            c.sendall(resp("pmessage", pattern, channel, payload))

    def close(self):
        self.srv.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()


@pytest.fixture
def fake_redis():
    made = []

    def make(**kw):
        f = FakeRedis(**kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def frame(node, message):
    node = node.encode()
    return bytes([1, len(node)]) + node + message


def test_refused_publishes_and_hostile_channel_traffic(daemon, fake_redis, ctl_dir):  # noqa: F811
    fr = fake_redis()
    a = start_node(daemon, ctl_dir, "a", fr.port, 'channel_prefix: "t[1]*:"')
    wait_state(a, "connected")
    # the prefix is literal in the subscription pattern
    assert [b"PSUBSCRIBE", b"t\\[1\\]\\*:*"] in fr.commands
    x, y = members(a, 2)
    for i in range(3):
        x.sendline(f"m{i}")
        assert y.readline() == f"m{i}"
    wait_for(lambda: cluster(a)["errors"] == 3, what="three refusals")
    assert counts(a) == zero(lost=3, errors=3)
    assert cluster(a)["last_error"] == "ERR publish refused by the test"
    published = [cmd for cmd in fr.commands if cmd[0] == b"PUBLISH"]
    assert published == [[b"PUBLISH", b"t[1]*:chat", frame("a", b"m%d" % i)] for i in range(3)]
    assert cluster(a)["state"] == "connected"  # refusals do not break the link

    fr.push("t[1]*:chat", frame("a", b"own copy"))       # dropped: our node id
    fr.push("t[1]*:chat", b"")                            # not a frame
    fr.push("t[1]*:chat", bytes([1, 200]) + b"short")     # id longer than the frame
    fr.push("t[1]*:chat", bytes([2, 1]) + b"bx")          # unknown version
    fr.push("t[1]*:nosuchroom", frame("b", b"lost"))      # no such handler
    fr.push("t[1]*:lines", frame("b", b"lost"))           # not a handler at all
    fr.push("t[1]*:chat\x00x", frame("b", b"lost"))       # NUL in the name
    fr.push("t[1]*:chat", frame("b", b"from \x00 b"))     # delivered
    fr.push("t[1]*:chat", frame("", b"no id is an id"))   # delivered
    assert x.readline() == "from \x00 b" and y.readline() == "from \x00 b"
    assert x.readline() == "no id is an id" and y.readline() == "no id is an id"
    wait_for(lambda: cluster(a)["received"] == 2, what="two received")
    assert counts(a) == zero(lost=3, errors=3, received=2, invalid=3, unroutable=3)
    assert a.alive()
    x.close()
    y.close()


def test_psubscribe_refused_keeps_retrying_then_a_reload_finds_redis(daemon, fake_redis, redis, ctl_dir):  # noqa: F811
    fr = fake_redis(refuse_psubscribe=True)
    a = start_node(daemon, ctl_dir, "a", fr.port)
    wait_for(lambda: cluster(a)["reconnects"] >= 2, what="retries")
    c = cluster(a)
    assert c["state"] != "connected"
    assert c["last_error"] == "connection lost: ERR psubscribe refused by the test"
    x, y = members(a, 2)
    x.sendline("queued 1")
    x.sendline("queued 2")
    assert y.readlines(2) == ["queued 1", "queued 2"]
    assert cluster(a)["queued"] == 2
    r = redis()
    rewrite(a, node_config(ctl_dir, "a", r.port))
    assert a.ctl.command("reload")["ok"] is True
    wait_state(a, "connected")
    wait_for(lambda: cluster(a)["published"] == 2, what="queue flushed to the real Redis")
    assert cluster(a)["queued"] == 0 and cluster(a)["lost"] == 0
    x.close()
    y.close()
