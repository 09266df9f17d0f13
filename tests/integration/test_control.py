# SPDX-License-Identifier: MIT
"""The control socket over a real Unix socket: every command
and its JSON answer, errors that keep the connection usable, many clients at
once, a client that never reads, SO_PEERCRED permissions, and metrics that
count exactly the traffic the test sends (checked with promtool too)."""
import grp
import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time

import pytest

from ctl_util import (  # noqa: F401  (ctl_daemon is a fixture)
    TUSKNETD,
    ctl_as,
    ctl_daemon,
    parse_prometheus,
    sample,
    wait_for,
)
from daemon_util import LineClient, UdpClient

CONFIG = """
[daemon]
log_level: "debug"
max_connections: 2000
shutdown_timeout: "3s"

[limits]
idle_timeout: "60s"

[handlers]
echo  { type: "echo" }
ping  { type: "static" reply: "+PONG" }
chat  { type: "broadcast" }
upper { type: "exec" command: ["tr", "a-z", "A-Z"] timeout: "2s" }

[listeners]
lines { protocol: "tcp" listen: "127.0.0.1:0" handlers: ["echo", "ping", "upper"] }
whole { protocol: "tcp" listen: "127.0.0.1:0" handler: "echo" }
room  { protocol: "tcp" listen: "127.0.0.1:0" handler: "chat" }
dgram { protocol: "udp" listen: "127.0.0.1:0" handlers: ["echo", "ping"] }
"""

READ_COMMANDS = ["stats", "info", "metrics", "connections", "listeners", "handlers", "routes", "upstreams", "config", "version", "help"]
ADMIN_COMMANDS = ["reload", "close", "send", "broadcast", "upstream", "log-level", "shutdown"]


@pytest.fixture
def d(ctl_daemon):
    return ctl_daemon(CONFIG)


def daemon_version():
    out = subprocess.run([TUSKNETD, "-V"], capture_output=True, text=True, timeout=10).stdout
    return out.split()[-1]


def connection_for(d, client, listener=None):
    """The `connections` entry of CLIENT (a LineClient), waiting for it to show up."""
    return wait_for(lambda: d.connection_of(client.local_addr(), listener), 3,
                    what=f"connection {client.local_addr()} in `connections`")


# ---- every command ------------------------------------------------------------------


def test_version_and_help(d):
    with d.client() as c:
        v = c.command("version")
        assert v == {"version": daemon_version()}
        h = c.command("help")
        assert h["level"] == "admin"
        names = [cmd["name"] for cmd in h["commands"]]
        assert sorted(names) == sorted(READ_COMMANDS + ADMIN_COMMANDS)
        levels = {cmd["name"]: cmd["level"] for cmd in h["commands"]}
        for name in READ_COMMANDS:
            assert levels[name] == "read", name
        for name in ADMIN_COMMANDS:
            assert levels[name] == "admin", name
        for cmd in h["commands"]:
            assert isinstance(cmd["args"], str) and cmd["doc"], cmd
        args = {cmd["name"]: cmd["args"] for cmd in h["commands"]}
        assert args["connections"] == "[LISTENER]"
        assert args["close"] == "ID"
        assert args["send"] == "ID MESSAGE"
        assert args["broadcast"] == "HANDLER MESSAGE"
        assert args["log-level"] == "LEVEL"
        assert args["upstream"] == "HANDLER SERVER drain|up|down|weight N"


def test_listeners_handlers_routes_config(d):
    with d.client() as c:
        ls = {entry["name"]: entry for entry in c.command("listeners")["listeners"]}
        assert set(ls) == {"lines", "whole", "room", "dgram"}
        for name, proto in [("lines", "tcp"), ("whole", "tcp"), ("room", "tcp"), ("dgram", "udp")]:
            e = ls[name]
            assert e["protocol"] == proto
            assert e["listen"] == "127.0.0.1:0"
            assert re.fullmatch(r"127\.0\.0\.1:\d+", e["address"]), e
            assert int(e["address"].rsplit(":", 1)[1]) != 0
            assert e["serving"] is True and e["draining"] is False
            assert e["active_connections"] == 0
        assert ls["lines"]["handlers"] == ["echo", "ping", "upper"]
        assert ls["whole"]["handlers"] == ["echo"]
        assert ls["dgram"]["handlers"] == ["echo", "ping"]

        hs = {h["name"]: h for h in c.command("handlers")["handlers"]}
        assert {n: h["type"] for n, h in hs.items()} == {
            "echo": "echo", "ping": "static", "chat": "broadcast", "upper": "exec"}
        for h in hs.values():
            for k in ("calls", "errors", "in_flight", "p50_ms", "p90_ms", "p99_ms"):
                assert k in h, (k, h)

        routes = c.command("routes")
        assert routes == {"routes": []}  # no http listener here

        cfg = c.command("config")
        assert cfg["path"] == str(d.config_path)
        conf = cfg["config"]
        assert conf["daemon"]["control_socket"] == d.control
        assert conf["daemon"]["max_connections"] == 2000
        assert set(conf["handlers"]) == {"echo", "ping", "chat", "upper"}
        assert conf["handlers"]["ping"]["reply"] == "+PONG"
        assert conf["handlers"]["upper"]["command"] == ["tr", "a-z", "A-Z"]
        assert set(conf["listeners"]) == {"lines", "whole", "room", "dgram"}
        assert conf["listeners"]["lines"]["handlers"] == ["echo", "ping", "upper"]
        assert conf["listeners"]["dgram"]["protocol"] == "udp"


def test_routes_lists_http_routes_and_websockets(ctl_daemon):
    d = ctl_daemon(CONFIG + """
web {
    protocol: "http"
    listen: "127.0.0.1:0"
    routes {
        "GET /health": "ping"
        "POST /upper": "upper"
        "/any": "echo"
    }
    websocket {
        "/ws": ["echo", "ping"]
        "/chat": { handler: "chat" }
    }
}
""")
    # in config order; a route without a method matches any ("*")
    assert d.ctl("routes")["routes"] == [
        {"listener": "web", "kind": "http", "method": "GET", "path": "/health", "handler": "ping"},
        {"listener": "web", "kind": "http", "method": "POST", "path": "/upper", "handler": "upper"},
        {"listener": "web", "kind": "http", "method": "*", "path": "/any", "handler": "echo"},
        {"listener": "web", "kind": "websocket", "method": "GET", "path": "/ws", "handlers": ["echo", "ping"]},
        {"listener": "web", "kind": "websocket", "method": "GET", "path": "/chat", "handler": "chat"},
    ]


def test_stats_shape(d):
    s = d.ctl("stats")
    assert s["version"] == daemon_version()
    # uptime is a clock reading: it is a float no larger than the process's age
    with open(f"/proc/{d.pid}/stat") as f:
        started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime") as f:
        age = float(f.read().split()[0]) - started
    assert isinstance(s["uptime_seconds"], float) and 0 < s["uptime_seconds"] <= age + 0.02, (s, age)
    assert s["reloads"] == s["reloads_ok"] == s["reloads_refused"] == 0
    counters = ["total_connections", "active_connections", "total_bytes_sent", "total_bytes_received",
                "connection_errors", "timeout_errors", "messages_in", "messages_out"]
    for k in counters:
        assert s["global"][k] == 0, k
    assert s["global"]["rejected"] == {"max_connections": 0, "listener_full": 0, "per_ip": 0, "per_second": 0,
                                       "denied": 0, "rate_limit": 0, "too_large": 0, "slow_reader": 0,
                                       "reply_dropped": 0}
    assert set(s["listeners"]) == {"lines", "whole", "room", "dgram"}
    for name, entry in s["listeners"].items():
        for k in counters:
            assert entry[k] == 0, (name, k)
        assert entry["address"] == d.address(name)
    idle = {"calls": 0, "errors": 0, "in_flight": 0, "latency_ms": {"p50": 0, "p90": 0, "p99": 0}}
    assert s["handlers"] == {"echo": dict(idle, type="echo"), "ping": dict(idle, type="static"),
                             "chat": dict(idle, type="broadcast"), "upper": dict(idle, type="exec")}


def test_connections_and_filter(d):
    lines, whole = d.port("lines"), d.port("whole")
    with LineClient(lines) as a, LineClient(lines) as b, LineClient(whole) as w:
        assert a.request("echo one") == "one"
        assert b.request("ping") == "+PONG"
        assert w.request("hello") == "hello"
        ca = connection_for(d, a)
        cb = connection_for(d, b)
        cw = connection_for(d, w)
        assert ca["listener"] == "lines" and cw["listener"] == "whole"
        assert ca["protocol"] == "tcp"
        assert ca["local"] == f"127.0.0.1:{lines}"
        assert ca["bytes_received"] == len("echo one\n") and ca["bytes_sent"] == len("one\n")
        assert cb["bytes_received"] == len("ping\n") and cb["bytes_sent"] == len("+PONG\n")
        assert ca["messages_in"] == 1 and ca["messages_out"] == 1
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ca["established"]), ca
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ca["last_activity"]), ca
        assert len({ca["id"], cb["id"], cw["id"]}) == 3
        every = d.ctl("connections")["connections"]
        assert {c["id"] for c in every} == {ca["id"], cb["id"], cw["id"]}
        only = d.ctl("connections lines")["connections"]
        assert {c["id"] for c in only} == {ca["id"], cb["id"]}
        assert [c["id"] for c in d.ctl("connections whole")["connections"]] == [cw["id"]]
        assert d.ctl("connections room") == {"connections": []}
        assert d.listeners()["lines"]["active_connections"] == 2


def test_close_send_broadcast(d):
    lines, room = d.port("lines"), d.port("room")
    with LineClient(lines) as a, LineClient(lines) as b, \
            LineClient(room) as r1, LineClient(room) as r2, LineClient(room) as r3:
        assert a.request("echo x") == "x"
        assert b.request("echo y") == "y"
        ida = connection_for(d, a)["id"]
        idb = connection_for(d, b)["id"]
        for r in (r1, r2, r3):
            connection_for(d, r)

        # send ID MESSAGE: the rest of the line is the message, spaces included
        assert d.ctl(f"send {idb} hello from  control") == {"ok": True}
        assert b.readline() == "hello from  control"
        assert b.request("echo after") == "after"

        # broadcast HANDLER MESSAGE: every connection attached to the room
        ans = d.ctl("broadcast chat room news")
        assert ans == {"ok": True, "sent": 3, "dropped": 0}
        for r in (r1, r2, r3):
            assert r.readline() == "room news"
        # the line listener's connections are not in the room
        assert a.silent_for(0.2) == b""
        # a handler with nobody attached
        assert d.ctl("broadcast ping nothing") == {"ok": True, "sent": 0, "dropped": 0}

        # close ID: the client sees the close, the others are untouched
        assert d.ctl(f"close {ida}") == {"ok": True}
        data, closed = a.read_until_closed(3)
        assert closed and data == b""
        assert b.request("echo still") == "still"
        wait_for(lambda: d.connection_of(a.local_addr()) is None, 3, what="closed connection to go")
        # the id is gone now
        ans = d.ctl(f"close {ida}")
        assert ans["ok"] is False and str(ida) in ans["error"]
        ans = d.ctl(f"send {ida} x")
        assert ans["ok"] is False and "no connection" in ans["error"]


def test_log_level(d):
    with d.client() as c:
        for level in ("error", "warn", "info", "debug"):
            assert c.command(f"log-level {level}") == {"ok": True, "log_level": level}
        assert c.command("log-level warn") == {"ok": True, "log_level": "warn"}
    # at warn, info lines (a reload's) are not logged any more
    mark = len(d.log())
    assert d.ctl("reload")["ok"] is True
    time.sleep(0.2)
    assert "[info]" not in d.log()[mark:], d.log()[mark:]
    assert d.ctl("log-level info")["log_level"] == "info"
    mark = len(d.log())
    assert d.ctl("reload")["ok"] is True
    assert d.wait_log(r"\[info\] reloading", 2), "no info line after log-level info"


def test_reload_command(d):
    assert d.ctl("reload") == {"ok": True, "reloads": 1, "reloads_ok": 1, "reloads_refused": 0}
    assert d.ctl("reload") == {"ok": True, "reloads": 2, "reloads_ok": 2, "reloads_refused": 0}
    assert d.stats()["reloads"] == 2
    with LineClient(d.port("lines")) as a:
        assert a.request("ping") == "+PONG"


def test_shutdown_command(d):
    with LineClient(d.port("lines")) as a:
        assert a.request("echo up") == "up"
        with d.client() as c:
            assert c.command("shutdown") == {"ok": True}
        # the idle connection is closed, the daemon exits 0
        data, closed = a.read_until_closed(5)
        assert closed
    assert d.wait(10) == 0, d.log_tail()
    assert not os.path.exists(d.control), "control socket file left behind"
    assert "shutting down (control socket)" in d.log()


def test_metrics_format_and_promtool(d, tmp_path):
    text = d.metrics()
    assert text.endswith("# EOF\n")
    assert text.count("# EOF") == 1
    samples = parse_prometheus(text)
    names = {n for n, _ in samples}
    for n in ("tusknet_uptime_seconds", "tusknet_reloads_total", "tusknet_connections_total",
              "tusknet_connections_active", "tusknet_sent_bytes_total", "tusknet_received_bytes_total",
              "tusknet_messages_received_total", "tusknet_messages_sent_total", "tusknet_handler_calls_total",
              "tusknet_rejections_total"):
        assert n in names, n
    assert all(n.startswith(("tusknet_", "process_")) for n in names), names
    # every metric family has HELP and TYPE
    for fam in {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}:
        if fam + "_bucket" in names or fam in names:
            assert f"# TYPE {fam} " in text, fam
            assert f"# HELP {fam} " in text, fam
    promtool = shutil.which("promtool") or ensure_promtool()
    if not promtool:
        pytest.skip("promtool not available (Debian package prometheus) and could not be installed")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, f"promtool check metrics:\n{check.stdout}{check.stderr}\n--- input ---\n{text}"
    assert check.stdout.strip() == "" and check.stderr.strip() == "", check.stdout + check.stderr


def ensure_promtool():
    """Installs Debian's prometheus package (for promtool) when root; its path or None."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
                           capture_output=True, env=env, timeout=600)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=600)
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
                           capture_output=True, env=env, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return shutil.which("promtool")


def test_tusknetctl_json_is_the_daemons_answer(d):
    from ctl_util import TUSKNETCTL
    if not os.access(TUSKNETCTL, os.X_OK):
        pytest.skip(f"tusknetctl not built at {TUSKNETCTL}")
    r = subprocess.run([TUSKNETCTL, "-s", d.control, "--json", "version"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == d.ctl("version")
    r = subprocess.run([TUSKNETCTL, "-s", d.control, "--json", "listeners"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == d.ctl("listeners")


# ---- errors keep the connection usable ---------------------------------------------------


BAD = [
    ("frobnicate", "unknown command"),
    ("STATS", "unknown command"),
    ("close", "usage: close ID"),
    ("close abc", "usage: close ID"),
    ("close 12x", "usage: close ID"),
    ("close -1", None),
    ("close 999999", "no connection 999999"),
    ("send", "usage: send ID MESSAGE"),
    ("send 5", "usage: send ID MESSAGE"),
    ("send abc hello", "usage: send ID MESSAGE"),
    ("send 999999 hello", "no connection"),
    ("broadcast", "usage: broadcast HANDLER MESSAGE"),
    ("broadcast chat", "usage: broadcast HANDLER MESSAGE"),
    ("broadcast nosuch hello", "no handler 'nosuch'"),
    ("log-level", "usage: log-level"),
    ("log-level loud", "usage: log-level"),
    ("connections nosuch", "no listener 'nosuch'"),
]


def test_errors_keep_the_connection_usable(d):
    with d.client() as c:
        for line, text in BAD:
            ans = c.command(line)
            assert ans["ok"] is False, (line, ans)
            assert isinstance(ans["error"], str) and ans["error"], (line, ans)
            if text:
                assert text in ans["error"], (line, ans)
            # the same connection still answers
            assert c.command("version") == {"version": daemon_version()}, line
        # several commands in one write are answered in order
        c.sock.sendall(b"version\nnope\nversion\r\n")
        assert c.read_json() == {"version": daemon_version()}
        assert c.read_json()["ok"] is False
        assert c.read_json() == {"version": daemon_version()}
        # an empty line is ignored, not answered
        c.sock.sendall(b"\n\nversion\n")
        assert c.read_json() == {"version": daemon_version()}
    assert d.alive()


def test_command_too_long_keeps_the_connection(d):
    with d.client() as c:
        c.sock.sendall(b"x" * 70000)
        ans = c.read_json()
        assert ans["ok"] is False and "too long" in ans["error"], ans
        # whatever is left of the long line ends at the next newline
        c.sock.sendall(b"\nversion\n")
        deadline = time.monotonic() + 5
        while True:
            ans = c.read_json(max(0.1, deadline - time.monotonic()))
            if ans.get("version"):
                break
            assert ans["ok"] is False, ans
    assert d.alive()


# ---- many clients ------------------------------------------------------------------------


def test_fifty_concurrent_clients(d):
    n = 50
    clients = [d.client(timeout=10) for _ in range(n)]
    barrier = threading.Barrier(n)
    errors = []
    version = daemon_version()

    def work(c, i):
        try:
            barrier.wait(10)
            for _ in range(5):
                assert c.command("version") == {"version": version}
                s = c.command("stats")
                assert "lines" in s["listeners"]
                assert c.command(f"connections nosuch{i}")["ok"] is False
                m = c.metrics()
                assert m.endswith("# EOF\n")
                assert len(c.command("listeners")["listeners"]) == 4
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {i}: {e!r}")

    threads = [threading.Thread(target=work, args=(c, i)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for c in clients:
        c.close()
    assert not errors, errors[:5]
    assert d.alive()
    assert d.ctl("version") == {"version": version}


def test_client_that_never_reads_is_bounded(d):
    # some connections so that `connections` answers are not tiny
    lines = d.port("lines")
    conns = [LineClient(lines) for _ in range(20)]
    try:
        for i, c in enumerate(conns):
            assert c.request(f"echo c{i}") == f"c{i}"
        # warm up: the answers once, so that allocator pools exist
        with d.client() as c:
            for _ in range(20):
                c.command("connections")
                c.command("config")
        time.sleep(0.2)
        before = d.rss_kb()

        hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.connect(d.control)
        hog.setblocking(False)
        chunk = b"connections\nconfig\n" * 2000
        sent = 0
        stalled_since = None
        deadline = time.monotonic() + 30
        # push commands until the daemon stops reading them for a while
        while time.monotonic() < deadline:
            try:
                sent += hog.send(chunk)
                stalled_since = None
            except BlockingIOError:
                if stalled_since is None:
                    stalled_since = time.monotonic()
                elif time.monotonic() - stalled_since > 1.5:
                    break
                time.sleep(0.01)
        assert stalled_since is not None, f"the daemon kept reading {sent} bytes of commands nobody reads"
        # others are still served while the hog is stuck (3 s bounds each wait)
        assert d.ctl("version", timeout=3) == {"version": daemon_version()}
        assert set(d.ctl("stats", timeout=3)["listeners"]) == {"lines", "whole", "room", "dgram"}
        with LineClient(lines) as x:
            assert x.request("echo alive", timeout=3) == "alive"
        after = d.rss_kb()
        print(f"hog: {sent} bytes of commands sent; RSS {before} kB -> {after} kB")
        # at most the control output cap (4 MiB) plus slack, not the answers
        # to every command sent (each `config` answer is ~2 KB: over 20 MB for
        # the ~200 KB of commands the kernel buffers take before the stall)
        limit = (64 if os.environ.get("SANITIZE") == "1" else 16) * 1024
        assert after - before < limit, f"RSS grew from {before} kB to {after} kB after {sent} bytes of commands"
        hog.close()
        time.sleep(0.3)
        assert d.alive()
        assert d.ctl("version")["version"]
    finally:
        for c in conns:
            c.close()


# ---- metrics count the traffic --------------------------------------------------------------


def test_counters_match_traffic_exactly(d):
    whole = d.port("whole")
    dgram = d.port("dgram")
    payloads = [f"line {i} " + "x" * (i * 7 % 50) for i in range(40)]
    sent_in = 0
    sent_out = 0
    n_conns = 4
    clients = [LineClient(whole) for _ in range(n_conns)]
    for i, p in enumerate(payloads):
        c = clients[i % n_conns]
        c.sendline(p)
        sent_in += len(p) + 1
    for i, c in enumerate(clients):
        mine = [p for j, p in enumerate(payloads) if j % n_conns == i]
        assert c.readlines(len(mine)) == mine
        sent_out += sum(len(p) + 1 for p in mine)
    # the CR of a CRLF line counts as received bytes too (and a reply that
    # ends in CRLF as sent bytes: counted from what actually arrives)
    clients[0].send(b"crlf\r\n")
    reply = clients[0].readline()
    assert reply == "crlf\r", reply  # a single-handler listener echoes the whole line, CR included
    sent_in += 6
    sent_out += len(reply) + 1
    for c in clients:
        c.close()
    wait_for(lambda: d.stats()["listeners"]["whole"]["active_connections"] == 0, 3,
             what="the closed connections to be counted")

    # UDP: one datagram in, one back
    udp_in = udp_out = 0
    with UdpClient(dgram) as u:
        for i in range(10):
            msg = f"echo dgram {i}"
            assert u.request(msg) == f"dgram {i}".encode()
            udp_in += len(msg)
            udp_out += len(f"dgram {i}")
        assert u.request("ping") == b"+PONG"
        udp_in += 4
        udp_out += 5

    s = d.stats()
    w = s["listeners"]["whole"]
    assert w["total_bytes_received"] == sent_in
    assert w["total_bytes_sent"] == sent_out
    assert w["messages_in"] == len(payloads) + 1
    assert w["messages_out"] == len(payloads) + 1
    assert w["total_connections"] == n_conns
    assert w["active_connections"] == 0
    assert w["connection_errors"] == 0 and w["timeout_errors"] == 0
    g = s["listeners"]["dgram"]
    assert g["total_bytes_received"] == udp_in
    assert g["total_bytes_sent"] == udp_out
    assert g["messages_in"] == 11 and g["messages_out"] == 11
    # nothing happened elsewhere, so the global counters are the sums
    glob = s["global"]
    assert glob["total_bytes_received"] == sent_in + udp_in
    assert glob["total_bytes_sent"] == sent_out + udp_out
    assert glob["messages_in"] == len(payloads) + 1 + 11
    assert glob["total_connections"] == n_conns
    assert s["handlers"]["echo"]["calls"] == len(payloads) + 1 + 10
    assert s["handlers"]["ping"]["calls"] == 1
    for l in ("lines", "room"):
        assert s["listeners"][l]["total_bytes_received"] == 0

    m = parse_prometheus(d.metrics())
    assert sample(m, "tusknet_received_bytes_total", listener="whole", protocol="tcp") == sent_in
    assert sample(m, "tusknet_sent_bytes_total", listener="whole", protocol="tcp") == sent_out
    assert sample(m, "tusknet_messages_received_total", listener="whole") == len(payloads) + 1
    assert sample(m, "tusknet_messages_sent_total", listener="whole") == len(payloads) + 1
    assert sample(m, "tusknet_connections_total", listener="whole") == n_conns
    assert sample(m, "tusknet_connections_active", listener="whole") == 0
    assert sample(m, "tusknet_received_bytes_total", listener="dgram", protocol="udp") == udp_in
    assert sample(m, "tusknet_sent_bytes_total", listener="dgram", protocol="udp") == udp_out
    assert sample(m, "tusknet_handler_calls_total", handler="echo") == len(payloads) + 1 + 10
    assert sample(m, "tusknet_handler_latency_seconds_count", handler="echo") == len(payloads) + 1 + 10
    assert sample(m, "tusknet_handler_latency_seconds_bucket", handler="echo", le="+Inf") == \
        len(payloads) + 1 + 10
    assert sample(m, "tusknet_reloads_total", outcome="ok") == 0
    assert sample(m, "tusknet_reloads_total", outcome="refused") == 0


def test_active_connections_gauge(d):
    lines = d.port("lines")
    cs = [LineClient(lines) for _ in range(5)]
    try:
        for c in cs:
            assert c.request("ping") == "+PONG"
        assert d.stats()["listeners"]["lines"]["active_connections"] == 5
        assert d.stats()["global"]["active_connections"] == 5
        m = parse_prometheus(d.metrics())
        assert sample(m, "tusknet_connections_active", listener="lines") == 5
        for c in cs[:3]:
            c.close()
        wait_for(lambda: d.stats()["listeners"]["lines"]["active_connections"] == 2, 3, what="2 active")
        m = parse_prometheus(d.metrics())
        assert sample(m, "tusknet_connections_active", listener="lines") == 2
        assert sample(m, "tusknet_connections_total", listener="lines") == 5
    finally:
        for c in cs:
            c.close()


# ---- permissions (SO_PEERCRED) ---------------------------------------------------------------

NOBODY_UID = 65534
NOBODY_GID = 65534

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")


def nobody():
    try:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return NOBODY_UID, NOBODY_GID


def group_without(uid, gid):
    """The name of an existing group that the user UID (primary GID) is not in."""
    user = pwd.getpwuid(uid).pw_name
    for name in ("daemon", "adm", "sys", "staff", "root"):
        try:
            g = grp.getgrnam(name)
        except KeyError:
            continue
        if g.gr_gid != gid and user not in g.gr_mem:
            return name
    pytest.skip("no group found that nobody is not a member of")


@pytest.fixture
def public_dir():
    """A directory under /tmp that every user can reach (pytest's tmp_path is 0700)."""
    path = tempfile.mkdtemp(prefix="tnperm-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@root_only
def test_socket_file_mode_refuses_others(ctl_daemon, public_dir):
    d = ctl_daemon(CONFIG, control_dir=public_dir)
    st = os.stat(d.control)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    uid, gid = nobody()
    r = ctl_as(uid, gid, [], d.control, "stats")
    assert r.get("connect_error") == 13, r  # EACCES from the file mode, before the daemon sees anything
    assert d.ctl("version")["version"]


@root_only
def test_peercred_refuses_users_outside_control_group(ctl_daemon, public_dir):
    uid, gid = nobody()
    group = group_without(uid, gid)
    d = ctl_daemon(CONFIG, control_dir=public_dir, daemon_keys={"control_group": group})
    st = os.stat(d.control)
    assert st.st_gid == grp.getgrnam(group).gr_gid, "control socket not given to control_group"
    assert stat.S_IMODE(st.st_mode) == 0o660
    os.chmod(d.control, 0o666)  # past the file mode: the daemon itself must refuse
    r = ctl_as(uid, gid, [], d.control, "stats", "version")
    assert "connect_error" not in r, r
    # refused at accept: the answer is written before the close, and the
    # second command finds the connection gone
    assert r["answers"] == [{"ok": False, "error": "permission denied"}, None], r
    assert r["closed"] is True, r
    assert d.wait_log(rf"control socket: refused uid {uid}", 2)
    # root is still admin
    assert d.ctl("help")["level"] == "admin"
    assert d.alive()


@root_only
def test_control_group_read_level(ctl_daemon, public_dir):
    uid, gid = nobody()
    group = grp.getgrgid(gid).gr_name  # nobody's primary group (nogroup)
    d = ctl_daemon(CONFIG, control_dir=public_dir, daemon_keys={"control_group": group})
    st = os.stat(d.control)
    assert st.st_gid == gid and stat.S_IMODE(st.st_mode) == 0o660
    # the 0660 mode lets the group in: no chmod needed
    r = ctl_as(uid, gid, [], d.control, "stats", "help", "version", "shutdown", "reload", "log-level debug",
               "connections", "version")
    assert "connect_error" not in r, r
    a = r["answers"]
    assert "listeners" in a[0] and "global" in a[0], a[0]
    assert a[1]["level"] == "read"
    assert a[2] == {"version": daemon_version()}
    for ans, cmd in zip(a[3:6], ("shutdown", "reload", "log-level")):
        assert ans["ok"] is False and "permission denied" in ans["error"], (cmd, ans)
    assert "connections" in a[6]
    assert a[7] == {"version": daemon_version()}
    assert r["closed"] is False
    assert d.alive()
    assert d.stats()["reloads"] == 0


@root_only
def test_control_group_by_supplementary_group(ctl_daemon, public_dir):
    uid, gid = nobody()
    group = group_without(uid, gid)
    ggid = grp.getgrnam(group).gr_gid
    d = ctl_daemon(CONFIG, control_dir=public_dir,
                   daemon_keys={"control_group": group, "control_group_level": "admin"})
    # member through a supplementary group only (the daemon reads /proc/PID/status)
    r = ctl_as(uid, gid, [ggid], d.control, "help", "log-level info")
    assert "connect_error" not in r, r
    assert r["answers"][0]["level"] == "admin", r
    assert r["answers"][1] == {"ok": True, "log_level": "info"}, r
    # without the supplementary group: refused (after chmod so that the daemon decides)
    os.chmod(d.control, 0o666)
    r = ctl_as(uid, gid, [], d.control, "help")
    assert r["answers"][0] == {"ok": False, "error": "permission denied"}, r
    assert r["closed"] is True
