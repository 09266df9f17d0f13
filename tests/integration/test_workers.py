# SPDX-License-Identifier: MIT
"""daemon.workers: a master process and worker processes on SO_REUSEPORT
sockets.

With `workers: 2`: both workers accept (per-worker counts from `stats`), the
aggregated counters are exactly the sum of the traffic sent, a worker killed
with SIGKILL is restarted while the other serves, a reload under load fails
no request and a refused one changes no worker, `close` and `send` reach a
connection on either worker, room messages and the control `broadcast` reach
members in every worker, max_connections_per_ip and max_connections hold for
the whole daemon, and SIGTERM closes WebSockets with 1001 in every worker.
`workers: 1` runs no master. The config checks for the key are at the end.

SO_REUSEPORT spreads connections by a hash of their addresses and ports, so
tests that need both workers use enough connections from distinct source
ports that each worker gets some (the chance that 200 all go to one of two
is 2^-199); they still check which worker has what from the daemon's own
answers (a connection id carries its worker's serial above bit 40)."""
import asyncio
import os
import signal
import socket
import threading
import time

import pytest
import websockets

from ctl_util import CtlClient, ctl_daemon, notify, parse_prometheus, sample, wait_for  # noqa: F401 (fixtures)
from daemon_util import HOST, LineClient, check_config, daemon, pid_alive, wait_pid_gone  # noqa: F401
from http_util import http_get

ID_SHIFT = 40

CONFIG = """
[daemon]
workers: 2
control_socket: "ctl.sock"
shutdown_timeout: "5s"

[handlers]
echo   { type: "echo" }
chat   { type: "broadcast" }
health { type: "health" }
gen    { type: "static" reply: "GEN" }
prom   { type: "metrics" }

[listeners]
lines { protocol: "tcp" listen: "127.0.0.1:PORT_LINES" handler: "echo" }
room  { protocol: "tcp" listen: "127.0.0.1:PORT_ROOM" handler: "chat" }
capped { protocol: "tcp" listen: "127.0.0.1:PORT_CAPPED" handler: "echo" max_connections_per_ip: 10 }
web {
    protocol: "http"
    listen: "127.0.0.1:PORT_WEB"
    routes {
        "GET /health": "health"
        "GET /gen": "gen"
        "GET /metrics": "prom"
    }
    websocket {
        "/echo": { handler: "echo" }
        "/chat": { handler: "chat" }
    }
}
"""


def ctl_of(d):
    return CtlClient(d.tmp_path / "ctl.sock", timeout=10)


def command(d, line):
    with ctl_of(d) as c:
        return c.command(line)


def worker_of(conn_id):
    return conn_id >> ID_SHIFT


def workers(d):
    s = command(d, "stats")
    assert "workers" in s, s
    return s["workers"]


def ids_by_worker(d, listener):
    by = {}
    for row in command(d, f"connections {listener}")["connections"]:
        by.setdefault(worker_of(row["id"]), []).append(row)
    return by


@pytest.fixture
def two(daemon):  # noqa: F811
    return daemon(CONFIG)


def open_echoed(port, n):
    """N connections held open, each proven accepted by an echo round trip."""
    out = []
    for i in range(n):
        c = LineClient(port)
        assert c.request(f"c{i}") == f"c{i}"
        out.append(c)
    return out


def expect_refused(port, n, line):
    """N connections each refused with LINE and the close."""
    for _ in range(n):
        c = LineClient(port)
        data, closed = c.read_until_closed(timeout=5)
        c.close()
        assert closed and data == line


def serve_lines(port, n, prefix=""):
    """N connections one after another, each one echo round trip and a close."""
    for i in range(n):
        with socket.create_connection((HOST, port), timeout=5) as s:
            s.sendall(f"{prefix}m{i:04d}\n".encode())
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(100)
                assert chunk, f"connection {i} closed before its echo"
                buf += chunk
            assert buf == f"m{i:04d}\n".encode()


# ---- accepting and counting --------------------------------------------------


def test_master_and_two_workers(two):
    rows = workers(two)
    assert [r["slot"] for r in rows] == [0, 1]
    assert [r["state"] for r in rows] == ["serving", "serving"]
    assert [r["generation"] for r in rows] == [1, 1]
    assert sorted(r["pid"] for r in rows) == sorted(two.children())
    stats = command(two, "stats")
    assert stats["info"]["pid"] == two.pid


def test_both_workers_accept_and_stats_are_the_sum(two):
    n = 200
    serve_lines(two.ports["LINES"], n)
    for i in range(20):
        r = http_get(two.ports["WEB"], "/health")
        assert r.status == 200
    stats = command(two, "stats")
    per = [w["global"]["total_connections"] for w in stats["workers"]]
    assert all(c > 0 for c in per), f"a worker accepted nothing: {per}"
    assert sum(per) == n + 20
    g = stats["global"]
    assert g["total_connections"] == n + 20
    assert g["active_connections"] == 0
    lines = stats["listeners"]["lines"]
    assert lines["total_connections"] == n
    assert lines["messages_in"] == n and lines["messages_out"] == n
    # "mNNNN\n" is 6 bytes each way
    assert lines["total_bytes_received"] == 6 * n
    assert lines["total_bytes_sent"] == 6 * n
    assert stats["listeners"]["web"]["http_responses"]["2xx"] == 20
    assert stats["handlers"]["echo"]["calls"] == n
    assert stats["handlers"]["health"]["calls"] == 20
    # percentiles come from the summed histogram: present, ordered
    lat = stats["handlers"]["echo"]["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert "latency_buckets" not in stats["handlers"]["echo"]
    with ctl_of(two) as c:
        prom = parse_prometheus(c.metrics())
    assert sample(prom, "tusknet_connections_total", listener="lines", protocol="tcp") == n
    assert sample(prom, "tusknet_handler_calls_total", handler="echo", type="echo") == n
    assert sample(prom, "tusknet_handler_latency_seconds_count", handler="echo") == n
    for w in stats["workers"]:
        assert sample(prom, "tusknet_worker_up", worker=str(w["slot"]), pid=str(w["pid"]), state="serving") == 1
        assert sample(prom, "tusknet_worker_restarts_total", worker=str(w["slot"]), pid=str(w["pid"])) == 0
    # /metrics over HTTP is answered by one worker with the whole daemon's numbers
    for i in range(10):
        r = http_get(two.ports["WEB"], "/metrics", headers={"Connection": "close"})
        assert r.status == 200
        over_http = parse_prometheus(r.body.decode())
        assert sample(over_http, "tusknet_connections_total", listener="lines", protocol="tcp") == n
        assert sample(over_http, "tusknet_handler_calls_total", handler="echo", type="echo") == n
        handlers = {h["name"]: h for h in command(two, "handlers")["handlers"]}
    assert handlers["echo"]["calls"] == n
    listeners = {x["name"]: x for x in command(two, "listeners")["listeners"]}
    assert listeners["lines"]["serving"] is True and listeners["lines"]["draining"] is False


def test_connection_ids_name_their_worker_and_close_send_reach_them(two):
    port = two.ports["LINES"]
    clients = [LineClient(port) for _ in range(40)]
    try:
        for i, c in enumerate(clients):
            assert c.request(f"hello {i}") == f"hello {i}"
        by = ids_by_worker(two, "lines")
        assert len(by) == 2, f"connections on {sorted(by)} only"
        slots = {w["pid"]: w["slot"] for w in workers(two)}
        assert sorted(slots.values()) == [0, 1]
        for rows in by.values():
            assert len({r["worker"] for r in rows}) == 1
        serials = sorted(by)
        assert sum(len(v) for v in by.values()) == 40
        local = {c.local_addr(): c for c in clients}
        for serial in serials:
            send_row, close_row = by[serial][0], by[serial][1]
            assert command(two, f"send {send_row['id']} pushed to {serial}") == {"ok": True}
            assert local[send_row["remote"]].readline() == f"pushed to {serial}"
            assert command(two, f"close {close_row['id']}") == {"ok": True}
            data, closed = local[close_row["remote"]].read_until_closed(timeout=5)
            assert closed and data == b""
        left = ids_by_worker(two, "lines")
        assert sum(len(v) for v in left.values()) == 38
        # an id on no worker, and one on a worker that has no such connection
        assert command(two, "close 7") == {"ok": False, "error": "no connection 7"}
        missing = (serials[0] << ID_SHIFT) + 999999
        assert command(two, f"close {missing}") == {"ok": False, "error": f"no connection {missing}"}
        assert command(two, f"send {missing} x") == {"ok": False, "error": f"no connection {missing}"}
        assert command(two, "close x1") == {"ok": False, "error": "usage: close ID"}
        assert command(two, "send") == {"ok": False, "error": "usage: send ID MESSAGE"}
    finally:
        for c in clients:
            c.close()


# ---- rooms ----------------------------------------------------------------------


def test_room_messages_and_broadcast_reach_every_worker(two):
    port = two.ports["ROOM"]
    members = [LineClient(port) for _ in range(30)]
    try:
        wait_for(lambda: sum(len(v) for v in ids_by_worker(two, "room").values()) == 30, what="30 members")
        assert len(ids_by_worker(two, "room")) == 2
        members[0].sendline("hello from zero")
        for m in members[1:]:
            assert m.readline() == "hello from zero"
        answer = command(two, "broadcast chat to everyone")
        assert answer == {"ok": True, "sent": 30, "dropped": 0}
        for m in members:
            assert m.readline() == "to everyone"

        async def ws_member():
            url = f"ws://{HOST}:{two.ports['WEB']}/chat"
            socks = [await websockets.connect(url) for _ in range(10)]
            members[5].sendline("to ws too")
            got = [await asyncio.wait_for(ws.recv(), 5) for ws in socks]
            for ws in socks:
                await ws.close()
            return got

        assert asyncio.run(ws_member()) == ["to ws too"] * 10
        for i, m in enumerate(members):
            if i != 5:
                assert m.readline() == "to ws too"
    finally:
        for m in members:
            m.close()


# ---- supervision ------------------------------------------------------------------


def test_killed_worker_is_restarted_while_the_other_serves(two):
    before = workers(two)
    victim = before[0]
    other = before[1]
    os.kill(victim["pid"], signal.SIGKILL)
    assert wait_pid_gone(victim["pid"], 5)
    # every connection is served: the master holds the dead worker's socket,
    # so what queues there waits for its successor
    serve_lines(two.ports["LINES"], 60)
    wait_for(lambda: [(w["slot"], w["state"]) for w in workers(two)] == [(0, "serving"), (1, "serving")]
             and workers(two)[0]["pid"] != victim["pid"], what="a new worker 0")
    after = workers(two)
    assert after[0]["slot"] == 0 and after[0]["restarts"] == 1
    assert after[1]["pid"] == other["pid"] and after[1]["restarts"] == 0
    assert pid_alive(after[0]["pid"])
    assert two.wait_log(rf"worker 0 \(pid {victim['pid']}\) was killed by SIGKILL; restarting it in 100 ms")
    serve_lines(two.ports["LINES"], 20)


def test_a_worker_crashing_again_soon_waits_twice_as_long(two):
    def slot0():
        rows = [w for w in workers(two) if w["slot"] == 0]
        return rows[0] if rows else {"pid": None, "state": "gone"}

    first = slot0()["pid"]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: slot0()["pid"] not in (None, first) and slot0()["state"] == "serving", what="restart 1")
    second = slot0()["pid"]
    os.kill(second, signal.SIGKILL)
    wait_for(lambda: slot0()["pid"] not in (None, first, second) and slot0()["state"] == "serving",
             what="restart 2")
    assert two.wait_log(rf"worker 0 \(pid {first}\) was killed by SIGKILL; restarting it in 100 ms")
    assert two.wait_log(rf"worker 0 \(pid {second}\) was killed by SIGKILL; restarting it in 200 ms")
    assert slot0()["restarts"] == 2
    serve_lines(two.ports["LINES"], 20)


# ---- reload -------------------------------------------------------------------------


def test_reload_under_load_fails_no_request(two):
    port = two.ports["WEB"]
    stop = threading.Event()
    results = {"ok": 0, "failed": [], "bodies": set()}

    def load():
        while not stop.is_set():
            try:
                r = http_get(port, "/gen", headers={"Connection": "close"}, timeout=10)
                if r.status == 200:
                    results["ok"] += 1
                    results["bodies"].add(r.body)
                else:
                    results["failed"].append(r.status)
            except Exception as e:  # noqa: BLE001 - every failure is counted
                results["failed"].append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        for gen in (2, 3, 4):
            two.config_path.write_text(two.config.replace('reply: "GEN"', f'reply: "GEN{gen}"'))
            assert command(two, "reload")["ok"] is True
            assert two.wait_log(rf"reload complete(.|\n)*" * (gen - 1), timeout=10)
            time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert results["failed"] == []
    assert results["ok"] > 0
    assert results["bodies"] <= {b"GEN", b"GEN2", b"GEN3", b"GEN4"}
    wait_for(lambda: [w["generation"] for w in workers(two)] == [4, 4], timeout=10, what="only new workers")
    assert http_get(port, "/gen").body == b"GEN4"
    stats = command(two, "stats")
    assert (stats["reloads"], stats["reloads_ok"], stats["reloads_refused"]) == (3, 3, 0)


def test_sighup_reloads_in_the_master_only(two):
    before = workers(two)
    os.kill(before[0]["pid"], signal.SIGHUP)
    assert two.wait_log(r"worker 0: SIGHUP: ignored by a worker process \(the master reloads\)")
    assert [(w["pid"], w["generation"]) for w in workers(two)] == [(w["pid"], w["generation"]) for w in before]
    assert command(two, "stats")["reloads"] == 0
    two.send_signal(signal.SIGHUP)
    wait_for(lambda: [w["generation"] for w in workers(two)] == [2, 2], timeout=10, what="reloaded workers")
    assert command(two, "stats")["reloads_ok"] == 1
    # applied in place: the same processes
    assert [w["pid"] for w in workers(two)] == [w["pid"] for w in before]


def test_refused_reload_changes_no_worker(two):
    before = workers(two)
    two.config_path.write_text(two.config.replace('type: "static"', 'type: "nonsense"'))
    answer = command(two, "reload")
    assert answer["ok"] is False and answer["reloads_refused"] == 1
    assert "nonsense" in answer["error"]
    after = workers(two)
    assert [(w["pid"], w["generation"]) for w in after] == [(w["pid"], w["generation"]) for w in before]
    assert http_get(two.ports["WEB"], "/gen").body == b"GEN"


def test_reload_onto_a_taken_port_changes_no_worker(two):
    before = workers(two)
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        extra = f'more {{ protocol: "tcp" listen: "127.0.0.1:{port}" handler: "echo" }}\n'
        two.config_path.write_text(two.config + extra)
        answer = command(two, "reload")
    assert answer["ok"] is False
    assert answer["error"].endswith(f"listener 'more': cannot bind 127.0.0.1:{port}: Address already in use")
    assert [(w["pid"], w["generation"]) for w in workers(two)] == [(w["pid"], w["generation"]) for w in before]
    assert "more" not in {x["name"] for x in command(two, "listeners")["listeners"]}


def test_reload_adds_a_listener_on_every_worker(two):
    extra = 'more { protocol: "tcp" listen: "127.0.0.1:0" handler: "echo" }\n'
    two.config_path.write_text(two.config + extra)
    assert command(two, "reload")["ok"] is True
    wait_for(lambda: [w["generation"] for w in workers(two)] == [2, 2], timeout=10, what="new workers")
    rows = {x["name"]: x for x in command(two, "listeners")["listeners"]}
    port = int(rows["more"]["address"].rsplit(":", 1)[1])
    serve_lines(port, 100)
    per = [w["global"]["total_connections"] for w in workers(two)]
    assert all(c > 0 for c in per), per


# ---- limits for the whole daemon ----------------------------------------------------


def test_max_connections_per_ip_holds_for_the_whole_daemon(two):
    port = two.ports["CAPPED"]
    held = open_echoed(port, 10)
    try:
        expect_refused(port, 20, b"Error: too many connections from your address\n")
        stats = command(two, "stats")
        assert stats["listeners"]["capped"]["rejected"]["per_ip"] == 20
        assert stats["listeners"]["capped"]["active_connections"] == 10
        held.pop().close()
        wait_for(lambda: command(two, "stats")["listeners"]["capped"]["active_connections"] == 9, what="a close")
        c = LineClient(port)
        held.append(c)
        assert c.request("again") == "again"
    finally:
        for c in held:
            c.close()


def test_max_connections_holds_for_the_whole_daemon(daemon):  # noqa: F811
    d = daemon(CONFIG.replace('shutdown_timeout: "5s"', 'shutdown_timeout: "5s"\nmax_connections: 12'))
    port = d.ports["LINES"]
    held = open_echoed(port, 12)
    try:
        assert len(ids_by_worker(d, "lines")) == 2
        expect_refused(port, 10, b"Error: too many connections\n")
        assert command(d, "stats")["global"]["rejected"]["max_connections"] == 10
    finally:
        for c in held:
            c.close()


def test_a_killed_worker_gives_back_its_connections(daemon):  # noqa: F811
    d = daemon(CONFIG.replace('shutdown_timeout: "5s"', 'shutdown_timeout: "5s"\nmax_connections: 30'))
    port = d.ports["CAPPED"]
    held = open_echoed(port, 10)
    try:
        rows = {w["pid"]: w for w in workers(d)}
        victim = next(w for w in rows.values() if w["global"]["active_connections"] > 0)
        lost = victim["global"]["active_connections"]
        os.kill(victim["pid"], signal.SIGKILL)
        assert wait_pid_gone(victim["pid"], 5)
        wait_for(lambda: all(w["state"] == "serving" for w in workers(d)) and len(workers(d)) == 2,
                 what="the restart")
        # its connections no longer count against the address
        fresh = []
        for i in range(lost):
            c = LineClient(port)
            assert c.request(f"n{i}") == f"n{i}"
            fresh.append(c)
        held += fresh
        assert command(d, "stats")["listeners"]["capped"]["rejected"]["per_ip"] == 0
        expect_refused(port, 1, b"Error: too many connections from your address\n")
    finally:
        for c in held:
            c.close()


# ---- shutdown --------------------------------------------------------------------------


def test_sigterm_closes_websockets_with_1001_in_every_worker(two):
    async def go():
        url = f"ws://{HOST}:{two.ports['WEB']}/echo"
        clients = [await websockets.connect(url) for _ in range(24)]
        for ws in clients:
            await ws.send("x")
            assert await ws.recv() == "x"
        by = {}
        for row in command(two, "connections web")["connections"]:
            by.setdefault(worker_of(row["id"]), 0)
            by[worker_of(row["id"])] += 1
        assert len(by) == 2 and sum(by.values()) == 24, by
        two.send_signal(signal.SIGTERM)
        codes = []
        for ws in clients:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            codes.append(ws.close_code)
        return codes

    assert asyncio.run(asyncio.wait_for(go(), 30)) == [1001] * 24
    assert two.wait(10) == 0
    assert two.children() == []


# ---- one worker, and the key ------------------------------------------------------------


def test_one_worker_runs_no_master(daemon):  # noqa: F811
    d = daemon(CONFIG.replace("workers: 2", "workers: 1"))
    assert d.children() == []
    stats = command(d, "stats")
    assert "workers" not in stats
    assert stats["info"]["pid"] == d.pid
    with LineClient(d.ports["LINES"]) as c:
        assert c.request("x") == "x"
        assert [r["id"] for r in command(d, "connections lines")["connections"]] == [1]


def test_workers_key(tmp_path):
    base = '[handlers]\ne { type: "echo" }\n[listeners]\nl { protocol: "tcp" listen: "127.0.0.1:0" handler: "e" }\n'
    for value in ('"auto"', "0", "1", "3", "256"):
        rc, out = check_config(f"[daemon]\nworkers: {value}\n" + base, tmp_path)
        assert rc == 0, (value, out)
    for value, msg in (('"many"', "'workers' must be an integer, not \"many\""),
                       ("-1", "'workers' is out of range: -1 (allowed 0 to 256)"),
                       ("257", "'workers' is out of range: 257 (allowed 0 to 256)"),
                       ("true", "'workers' must be an integer")):
        rc, out = check_config(f"[daemon]\nworkers: {value}\n" + base, tmp_path)
        assert rc == 1 and msg in out, (value, out)


# ---- systemd ------------------------------------------------------------------------------

SYSTEMD = """
[daemon]
workers: 2

[handlers]
echo  { type: "echo" }
greet { type: "static" reply: "hello" }

[listeners]
lines { protocol: "tcp" listen: "127.0.0.1:0" handlers: ["echo", "greet"] fd_name: "lines" }
dgram { protocol: "udp" listen: "127.0.0.1:0" handlers: ["echo", "greet"] }
"""


def test_systemd_ready_when_every_worker_serves(ctl_daemon, notify):
    d = ctl_daemon(SYSTEMD, start=False, env={"NOTIFY_SOCKET": notify.path})
    d.start(wait_ready=False)
    ready = notify.wait_key("READY", "1", timeout=10)
    assert ready["MAINPID"] == str(d.pid)
    rows = d.ctl("stats")["workers"]
    assert [w["state"] for w in rows] == ["serving", "serving"]
    assert sorted(w["pid"] for w in rows) == sorted(d.children())
    # the UDP listener too is one SO_REUSEPORT socket per worker
    port = d.port("dgram")
    for i in range(40):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(5)
            u.sendto(f"echo u{i}".encode(), (HOST, port))
            assert u.recvfrom(100)[0] == f"u{i}".encode()
    assert [m for m in notify.pending() if m.get("READY") == "1"] == []
    assert d.ctl("stats")["listeners"]["dgram"]["messages_in"] == 40
    d.send_signal(signal.SIGTERM)
    assert notify.wait_key("STOPPING", "1")
    assert d.wait(10) == 0


def test_socket_passed_by_systemd_is_shared_by_the_workers(ctl_daemon):
    from ctl_util import activation, daemon_socket_inodes

    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind((HOST, 0))
    t.listen(64)
    port = t.getsockname()[1]
    ino = os.fstat(t.fileno()).st_ino
    launcher, env, popen_kw = activation([t], ["lines"])
    d = ctl_daemon(SYSTEMD, start=False, launcher=launcher, env=env, popen_kw=popen_kw)
    try:
        d.start()
    finally:
        t.close()
    assert d.wait_log(r"tusknetd started: 2 worker", 10)
    assert d.wait_log(r"listener lines: using the socket passed by systemd, shared by the workers", 1)
    pids = [w["pid"] for w in d.ctl("stats")["workers"]]
    for pid in pids:
        assert ino in daemon_socket_inodes(pid)
    serve_lines(port, 100, prefix="echo ")
    per = [w["global"]["total_connections"] for w in d.ctl("stats")["workers"]]
    assert sum(per) == 100


# ---- with [cluster] -----------------------------------------------------------------------


def test_cluster_with_workers_delivers_once(daemon, tmp_path):  # noqa: F811
    """Node a runs two workers, node b one, both on a real redis-server with
    the default node ids: a room message from a member on a reaches every
    other member once (siblings through the master, b through Redis), and a
    control broadcast on a reaches b once, not once per worker."""
    import tempfile

    from test_cluster import Redis, node_config, wait_state

    r = Redis(tmp_path).start()
    ctl_dir = tempfile.mkdtemp(prefix="tnwk-")
    try:
        def node(name, workers):
            text = node_config(ctl_dir, name, r.port).replace(f'node_id: "{name}"\n', "")
            text = text.replace('shutdown_timeout: "2s"', f'shutdown_timeout: "2s"\nworkers: {workers}')
            d = daemon(text, name=f"node-{name}")
            d.ctl = CtlClient(os.path.join(ctl_dir, f"{name}.sock"))
            return d

        a, b = node("a", 2), node("b", 1)
        wait_state(a, "connected")
        wait_state(b, "connected")
        assert a.ctl.command("stats")["cluster"]["node_id"].endswith(f":{a.pid}")
        on_a = [LineClient(a.ports["LINES"]) for _ in range(20)]
        on_b = [LineClient(b.ports["LINES"]) for _ in range(3)]
        wait_for(lambda: len(a.ctl.command("connections lines")["connections"]) == 20, what="members on a")
        wait_for(lambda: len(b.ctl.command("connections lines")["connections"]) == 3, what="members on b")
        assert len({worker_of(c["id"]) for c in a.ctl.command("connections lines")["connections"]}) == 2
        on_a[0].sendline("from a")
        for m in on_a[1:] + on_b:
            assert m.readline() == "from a"
        assert a.ctl.command("broadcast chat control on a") == {"ok": True, "sent": 20, "dropped": 0}
        for m in on_a + on_b:
            assert m.readline() == "control on a"
        on_b[0].sendline("from b")
        for m in on_a + on_b[1:]:
            assert m.readline() == "from b"
        # nothing twice: what each member was sent, exactly
        sent_a = sorted(c["messages_out"] for c in a.ctl.command("connections lines")["connections"])
        assert sent_a == [2] + [3] * 19  # "from a" (not to its sender), the control broadcast, "from b"
        sent_b = sorted(c["messages_out"] for c in b.ctl.command("connections lines")["connections"])
        assert sent_b == [2, 3, 3]
        for m in on_a + on_b:
            m.close()
    finally:
        r.stop()
        import shutil
        shutil.rmtree(ctl_dir, ignore_errors=True)


# ---- the control socket in front of the workers ----------------------------------------


def test_pipelined_and_abandoned_commands(two):
    """Commands the master asks the workers about are answered in order even
    when pipelined with ones it answers itself; a client gone before its
    answer costs nothing."""
    with ctl_of(two) as c:
        c.send_line("stats\nversion\nconnections\nmetrics\nlisteners\nclose 5")
        assert len(c.read_json()["workers"]) == 2
        assert set(c.read_json()) == {"version"}
        assert c.read_json() == {"connections": []}
        assert c.read_metrics().endswith("# EOF\n")
        assert [x["name"] for x in c.read_json()["listeners"]] == ["lines", "room", "capped", "web"]
        assert c.read_json() == {"ok": False, "error": "no connection 5"}
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(two.tmp_path / "ctl.sock"))
        s.sendall(b"stats\nconnections\n")
        s.close()
    assert len(workers(two)) == 2
    assert two.alive()
