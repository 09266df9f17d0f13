# SPDX-License-Identifier: MIT
"""daemon.workers > 1 at its edges: reloads that meet a worker which cannot
answer, `send NODE:ID` to this very node, and each worker's Redis link.

A worker is made unable to answer by SIGSTOP: its loop does not run until
SIGCONT, which is how a stuck worker looks to the master, with no timing
involved. A reload asked for while one is being applied is refused with an
exact answer, and the first completes once the stopped worker runs again.
A worker that does not answer within daemon.reload_timeout is named in the
reload's answer, told to stop and killed once shutdown_timeout and the grace
after it have passed (a stopped process cannot exit by itself); a new worker
takes its slot with the new config, while the other worker applied it in
place and kept every connection.

`send NODE:ID` with this instance's own node id is delivered here without
Redis, so it works with redis-server stopped (one process and two workers,
a node_id set and the default one).

With `[cluster]` each worker has its own link to Redis: `stats` shows each
link in the worker's row, and the top-level state counts the connected
workers; tusknetctl renders both. redis-server is the Redis peer.

SO_REUSEPORT spreads connections by a hash of addresses and ports: 40
connections all landing on one of two workers has the chance 2^-39, and the
tests check from the daemon's `connections` answer that both hold some."""
import os
import signal
import socket
import subprocess
import pytest

from ctl_util import TUSKNETCTL, CtlClient, wait_for
from daemon_util import LineClient, check_config, daemon, wait_pid_gone  # noqa: F401 (fixture)
from test_cluster import ctl_dir, redis  # noqa: F401 (fixtures)

ID_SHIFT = 40
N = 40
IN_PROGRESS = "a reload is in progress; try again when it is done"

CONFIG = """
[daemon]
workers: {workers}
control_socket: "{ctl}"
shutdown_timeout: "1s"
reload_timeout: "{reload_timeout}"

[handlers]
echo {{ type: "echo" }}
room {{ type: "broadcast" }}
{new}

[listeners]
lines {{ protocol: "tcp" listen: "127.0.0.1:PORT_LINES" handlers: ["echo", "new"] }}
chat  {{ protocol: "tcp" listen: "127.0.0.1:PORT_CHAT" handler: "room" }}
{cluster}
"""

NEW = 'new { type: "static" reply: "NEW" }'
OLD = 'new { type: "static" reply: "OLD" }'


def text(ctl, workers=2, reload_timeout="30s", new=False, redis_port=None, node_id="self", extra=""):
    cluster = ""
    if redis_port:
        cluster = f'[cluster]\nredis: "127.0.0.1:{redis_port}"\nreconnect_max: "200ms"\n{extra}\n'
        if node_id:
            cluster += f'node_id: "{node_id}"\n'
    return CONFIG.format(workers=workers, ctl=ctl, reload_timeout=reload_timeout, new=NEW if new else OLD,
                         cluster=cluster)


def start(daemon, ctl_dir, **kw):  # noqa: F811
    sock = os.path.join(ctl_dir, "d.sock")
    d = daemon(text(sock, **kw), name="edge")
    d.sock = sock
    d.kw = kw
    if kw.get("workers", 2) > 1:
        wait_for(lambda: [w["state"] for w in command(d, "stats")["workers"]] == ["serving"] * kw.get("workers", 2),
                 what="every worker serving")
    return d


def command(d, line, timeout=20):
    with CtlClient(d.sock, timeout=timeout) as c:
        return c.command(line)


def rewrite(d, **kw):
    body = text(d.sock, **{**d.kw, **kw})
    for name, port in d.ports.items():
        body = body.replace(f"PORT_{name}", str(port))
    d.config_path.write_text(body)


def worker_pids(d):
    return [w["pid"] for w in command(d, "stats")["workers"]]


def clients_by_worker(d, n=N):
    """N line clients that have exchanged a line, keyed by worker serial."""
    clients = [LineClient(d.ports["LINES"]) for _ in range(n)]
    for i, c in enumerate(clients):
        assert c.request(f"echo {i}") == str(i)
    by_addr = {c.local_addr(): c for c in clients}
    out = {}
    for row in command(d, "connections lines")["connections"]:
        if row["remote"] in by_addr:
            out.setdefault(row["id"] >> ID_SHIFT, []).append((row["id"], by_addr[row["remote"]]))
    assert len(out) == 2, "every connection on one worker"
    return out


class Pending:
    """A control command whose answer is read later, on its own connection."""

    def __init__(self, d, line):
        self.c = CtlClient(d.sock, timeout=60)
        self.c.send_line(line)

    def result(self):
        try:
            return self.c.read_json()
        finally:
            self.c.close()


# ---- one reload at a time -------------------------------------------------------


def test_a_second_reload_while_one_is_applied_is_refused_and_the_first_completes(daemon, ctl_dir):  # noqa: F811
    d = start(daemon, ctl_dir)
    byw = clients_by_worker(d)
    pids = worker_pids(d)
    rewrite(d, new=True)
    os.kill(pids[1], signal.SIGSTOP)
    try:
        first = Pending(d, "reload")
        # the master checks and hands out a reload in one go: once it has
        # logged it, the reload is the one in progress
        assert d.wait_log(r"reloading ", timeout=10)
        assert command(d, "reload") == {"ok": False, "error": IN_PROGRESS, "reloads": 2, "reloads_ok": 1,
                                        "reloads_refused": 1}
        d.send_signal(signal.SIGHUP)
        assert d.wait_log("reload failed, keeping the running configuration: " + IN_PROGRESS, timeout=10)
    finally:
        os.kill(pids[1], signal.SIGCONT)
    assert first.result() == {"ok": True, "reloads": 3, "reloads_ok": 1, "reloads_refused": 2, "failed": 0,
                              "workers": [{"slot": 0, "pid": pids[0], "applied": True},
                                          {"slot": 1, "pid": pids[1], "applied": True}]}
    assert d.wait_log(r"reload complete: 2 listener\(s\), 3 handler\(s\); 2 worker\(s\) applied it in place, "
                      r"0 replaced")
    assert [(w["pid"], w["generation"]) for w in command(d, "stats")["workers"]] == [(pids[0], 2), (pids[1], 2)]
    for held in byw.values():
        for _, c in held:
            assert c.request("new x") == "NEW"
            c.close()
    # and the next reload is taken
    rewrite(d, new=False)
    assert command(d, "reload")["failed"] == 0


# ---- a worker that never answers -------------------------------------------------


def test_a_worker_that_never_answers_is_reported_killed_and_replaced(daemon, ctl_dir):  # noqa: F811
    d = start(daemon, ctl_dir, reload_timeout="1s")
    byw = clients_by_worker(d)
    pids = worker_pids(d)
    serials = sorted(byw)
    # worker serials are given in start order: slot 0's first
    kept, stuck = byw[serials[0]], byw[serials[1]]
    rewrite(d, new=True)
    os.kill(pids[1], signal.SIGSTOP)
    answer = command(d, "reload")
    assert answer == {"ok": True, "reloads": 1, "reloads_ok": 1, "reloads_refused": 0, "failed": 1,
                      "workers": [{"slot": 0, "pid": pids[0], "applied": True},
                                  {"slot": 1, "pid": pids[1], "applied": False,
                                   "error": "no answer within daemon.reload_timeout"}]}
    # commands no longer ask it (they would wait for it)
    assert pids[1] not in [w["pid"] for w in command(d, "stats", timeout=5)["workers"]]
    # SIGTERM cannot end a stopped process; SIGKILL after shutdown_timeout + 5 s does
    assert wait_pid_gone(pids[1], 15)
    assert d.wait_log(rf"worker 1 \(pid {pids[1]}\) still running 6000 ms after it was told to stop: killing it")
    assert d.wait_log(rf"worker 1 \(pid {pids[1]}\) was killed by SIGKILL")
    rows = wait_for(lambda: (r := command(d, "stats")["workers"]) and all(w["state"] == "serving" for w in r)
                    and len(r) == 2 and r, what="the replacement serving")
    assert [(w["slot"], w["generation"], w["restarts"], w["answered"]) for w in rows] == [
        (0, 2, 0, True), (1, 2, 0, True)]
    assert rows[0]["pid"] == pids[0] and rows[1]["pid"] not in pids
    # the worker that applied it kept every connection, and they use the new config
    ids_now = {r["id"] for r in command(d, "connections lines")["connections"]}
    assert {cid for cid, _ in kept} <= ids_now
    for _, c in kept:
        assert c.request("new x") == "NEW"
        assert c.request("echo still") == "still"
    # the killed worker's connections went with it
    for _, c in stuck:
        assert c.read_until_closed() == (b"", True)
    assert not ({cid for cid, _ in stuck} & ids_now)
    # new connections, on both workers, have the new config
    fresh = clients_by_worker(d)
    assert sorted(fresh)[0] == serials[0] and sorted(fresh)[1] > serials[1]
    for held in fresh.values():
        for _, c in held:
            assert c.request("new y") == "NEW"
            c.close()
    for _, c in kept + stuck:
        c.close()


@pytest.mark.parametrize("value,why", [
    ('"10ms"', "is out of range: 10ms (allowed 100ms to 1h)"),
    ('"2h"', "is out of range: 2h (allowed 100ms to 1h)"),
    ("-1", "is out of range: -1s (allowed 100ms to 1h)"),
    ('"soon"', ': bad duration "soon" (use e.g. 250ms, 30s, 5m, 1h)'),
])
def test_reload_timeout_out_of_range_is_refused(tmp_path, value, why):
    rc, out = check_config(f"[daemon]\nreload_timeout: {value}\n", tmp_path)
    path = tmp_path / "check.conf"
    sep = "" if why.startswith(":") else " "
    assert (rc, out) == (1, f"{path}:2:17: 'reload_timeout'{sep}{why}\ntusknetd: configuration {path} is invalid\n")


# ---- send NODE:ID to this very node ------------------------------------------------


@pytest.mark.parametrize("workers,node_id", [(1, "self"), (2, "self"), (1, ""), (2, "")])
def test_send_to_the_own_node_is_delivered_with_redis_down(daemon, redis, ctl_dir, workers, node_id):  # noqa: F811
    r = redis()
    d = start(daemon, ctl_dir, workers=workers, redis_port=r.port, node_id=node_id)
    wait_for(lambda: command(d, "stats")["cluster"]["state"] == "connected", what="linked")
    node = node_id or f"{socket.gethostname()}:{d.pid}"
    assert command(d, "stats")["cluster"]["node_id"] == node
    clients = [LineClient(d.ports["LINES"]) for _ in range(N if workers > 1 else 4)]
    for i, c in enumerate(clients):
        assert c.request(f"echo {i}") == str(i)
    ids = {row["remote"]: row["id"] for row in command(d, "connections lines")["connections"]}
    if workers > 1:
        assert len({i >> ID_SHIFT for i in ids.values()}) == 2, "every connection on one worker"
    r.stop()
    wait_for(lambda: command(d, "stats")["cluster"]["state"] == "down", what="Redis gone")
    for i, c in enumerate(clients):
        cid = ids[c.local_addr()]
        assert command(d, f"send {node}:{cid} for you {i}") == {"ok": True}
        assert c.readline() == f"for you {i}"
    cid = ids[clients[0].local_addr()]
    out = subprocess.run([TUSKNETCTL, "-s", d.sock, "send", f"{node}:{cid}", "via", "tusknetctl"],
                         capture_output=True, text=True, timeout=10)
    assert (out.returncode, out.stdout, out.stderr) == (0, f"ok: sent to connection {node}:{cid}\n", "")
    assert clients[0].readline() == "via tusknetctl"
    # an id this node does not have: from the worker it names, or from the master
    gone = max(ids.values()) + 1000
    for missing in (gone, 7):
        assert command(d, f"send {node}:{missing} x") == {"ok": False, "error": f"no connection {node}:{missing}"}
    # another node still needs Redis
    assert command(d, f"send other:{cid} x") == {
        "ok": False, "error": "not published: the link to Redis is not connected (stats shows why)"}
    c = command(d, "stats")["cluster"]
    assert (c["direct_published"], c["direct_delivered"], c["direct_undeliverable"]) == (0, 0, 0)
    for c in clients:
        c.close()


# ---- each worker's link in stats ------------------------------------------------------


def ctl_stats(d):
    out = subprocess.run([TUSKNETCTL, "-s", d.sock, "stats"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return out.stdout


def worker_table(rendered):
    """Rows of the WORKER table: pid -> (cluster state, lost)."""
    lines = rendered.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["WORKER", "PID"])
    assert lines[head].split()[-2:] == ["CLUSTER", "LOST"]
    rows = {}
    for line in lines[head + 1:]:
        if not line.strip():
            break
        cells = line.split()
        rows[int(cells[1])] = (cells[-2], int(cells[-1]))
    return rows


def test_stats_show_each_workers_link_up_then_down(daemon, redis, ctl_dir):  # noqa: F811
    r = redis()
    d = start(daemon, ctl_dir, redis_port=r.port, extra='max_queue: "1KB"')
    s = wait_for(lambda: (s := command(d, "stats"))["cluster"]["state"] == "connected" and s, what="both linked")
    pids = [w["pid"] for w in s["workers"]]
    assert (s["cluster"]["workers_connected"], s["cluster"]["workers"]) == (2, 2)
    assert [(w["cluster"]["state"], w["cluster"]["lost"], w["cluster"]["queued"]) for w in s["workers"]] == [
        ("connected", 0, 0)] * 2
    # a message over max_queue is lost by the worker whose client sent it
    members = [LineClient(d.ports["CHAT"]) for _ in range(N)]
    wait_for(lambda: len(command(d, "connections chat")["connections"]) == N, what="members joined")
    rows = command(d, "connections chat")["connections"]
    by_addr = {c.local_addr(): c for c in members}
    serial_of = {row["remote"]: row["id"] >> ID_SHIFT for row in rows}
    assert len(set(serial_of.values())) == 2, "every member on one worker"
    first_serial = min(serial_of.values())  # slot 0's worker started first
    sender = next(by_addr[a] for a, sl in serial_of.items() if sl == first_serial)
    huge = "h" * 2000
    sender.sendline(huge)
    for c in members:
        if c is not sender:
            assert c.readline() == huge
    s = command(d, "stats")
    assert [w["cluster"]["lost"] for w in s["workers"]] == [1, 0]
    assert s["cluster"]["lost"] == 1
    rendered = ctl_stats(d)
    assert (f"cluster      connected, 2 of 2 workers connected (Redis 127.0.0.1:{r.port}, node self): "
            "0 published, 0 received, 1 lost, 0 queued\n") in rendered
    assert worker_table(rendered) == {pids[0]: ("connected", 1), pids[1]: ("connected", 0)}
    # Redis goes: every worker's row says so, and the top level counts none
    r.stop()

    def all_down():
        s = command(d, "stats")
        return all(w["cluster"]["state"] == "down" for w in s["workers"]) and s

    s = wait_for(all_down, timeout=10, what="every worker's link down")
    assert (s["cluster"]["state"], s["cluster"]["workers_connected"], s["cluster"]["workers"]) == ("down", 0, 2)
    assert all(w["cluster"]["last_error"] for w in s["workers"])
    rendered = wait_for(lambda: (t := ctl_stats(d)) and set(worker_table(t).values()) == {("down", 1), ("down", 0)}
                        and t, what="tusknetctl shows both down")
    assert worker_table(rendered) == {pids[0]: ("down", 1), pids[1]: ("down", 0)}
    assert "cluster      down, 0 of 2 workers connected (Redis " in rendered
    # and back
    r.start()
    s = wait_for(lambda: (s := command(d, "stats"))["cluster"]["state"] == "connected" and s, what="relinked")
    assert [w["cluster"]["state"] for w in s["workers"]] == ["connected"] * 2
    assert s["cluster"]["workers_connected"] == 2
    for c in members:
        c.close()


def test_stats_count_a_partly_linked_node(daemon, redis, ctl_dir):  # noqa: F811
    """Redis takes 3 clients: one worker's two connections, one of the
    other's; that one keeps trying while the first stays linked."""
    r = redis("--maxclients", "3")
    d = start(daemon, ctl_dir, redis_port=r.port)

    def partial():
        s = command(d, "stats")
        return s["cluster"]["state"] == "partial" and s

    s = wait_for(partial, timeout=10, what="one worker linked")
    assert (s["cluster"]["workers_connected"], s["cluster"]["workers"]) == (1, 2)
    assert [w["cluster"]["state"] == "connected" for w in s["workers"]].count(True) == 1
    linked, refused = sorted(s["workers"], key=lambda w: w["cluster"]["state"] != "connected")
    assert linked["cluster"]["last_error"] is None
    assert refused["cluster"]["state"] in ("connecting", "down")
    assert "max number of clients reached" in refused["cluster"]["last_error"], refused["cluster"]
    assert "cluster      partial, 1 of 2 workers connected (Redis " in ctl_stats(d)
    # room for the other worker: it links on its next try, and the node is whole
    # redis-cli's own connection competes with the retrying worker for the
    # last slot, and a refused one prints the error and exits 0: try again
    wait_for(lambda: r.command("config", "set", "maxclients", "10").strip() == "OK", timeout=10,
             what="maxclients raised")
    s = wait_for(lambda: (s := command(d, "stats"))["cluster"]["state"] == "connected" and s, timeout=10,
                 what="both workers linked")
    assert [w["cluster"]["state"] for w in s["workers"]] == ["connected"] * 2
    assert (s["cluster"]["workers_connected"], s["cluster"]["workers"]) == (2, 2)
    assert "cluster      connected, 2 of 2 workers connected (Redis " in ctl_stats(d)
