# SPDX-License-Identifier: MIT
"""daemon.workers > 1: a reload is applied in place by every worker.

With `workers: 2`: kept-alive HTTP connections and TCP line connections that
have exchanged messages, on both workers, survive a reload that adds a route
and a handler, and the new route and handler answer on those same
connections; a refused config changes no worker and keeps every connection;
requests in a loop on kept-alive connections from several clients see no
failure across several reloads; a listener whose address changes keeps its
connections (they drain) and the new address serves on every worker; a
changed `daemon.workers` starts or stops workers while the others keep their
processes and connections; a room keeps its members; a worker that cannot
apply the config (no free descriptor for a new listener's socket) is named in
the reply and replaced; and the snapshot the workers load carries the Redis
password that `config` hides.

SO_REUSEPORT spreads connections by a hash of addresses and ports: 40
connections of each kind all landing on one of two workers has the chance
2^-39, and the tests check from the daemon's own `connections` answer that
both workers hold some (a connection id carries its worker's serial above
bit 40)."""
import os
import resource
import threading

import pytest

from ctl_util import CtlClient, wait_for
from daemon_util import LineClient, daemon, pid_alive  # noqa: F401 (fixture)
from http_util import HttpConn, http_get
from test_cluster import redis  # noqa: F401 (fixture)

ID_SHIFT = 40
N = 40

CONFIG = """
[daemon]
workers: 2
control_socket: "ctl.sock"
shutdown_timeout: "5s"

[handlers]
echo { type: "echo" }
old  { type: "static" reply: "OLD" }
#NEWHANDLER#

[listeners]
lines { protocol: "tcp" listen: "127.0.0.1:PORT_LINES" handlers: ["echo", "old"#NEWNAME#] }
web {
    protocol: "http"
    listen: "127.0.0.1:PORT_WEB"
    routes {
        "GET /old": "old"
        #NEWROUTE#
    }
}
"""

NEW_HANDLER = 'new { type: "static" reply: "NEW" }'


def config(new=False, workers=2):
    text = CONFIG.replace("workers: 2", f"workers: {workers}")
    if new:
        text = (text.replace("#NEWHANDLER#", NEW_HANDLER).replace("#NEWNAME#", ', "new"')
                .replace("#NEWROUTE#", '"GET /new": "new"'))
    return text.replace("#NEWHANDLER#", "").replace("#NEWNAME#", "").replace("#NEWROUTE#", "")


def command(d, line):
    with CtlClient(d.tmp_path / "ctl.sock", timeout=20) as c:
        return c.command(line)


def workers(d):
    return command(d, "stats")["workers"]


def reload_with(d, text):
    # the daemon substitutes nothing: ports go in as the fixture chose them
    for name, port in d.ports.items():
        text = text.replace(f"PORT_{name}", str(port))
    d.config_path.write_text(text)
    return command(d, "reload")


def held_ids(d, listener):
    """Connection id -> worker serial, from the daemon."""
    return {row["id"]: row["id"] >> ID_SHIFT for row in command(d, f"connections {listener}")["connections"]}


def get(conn, path):
    r = conn.exchange("GET", path)
    return r.status, r.body


@pytest.fixture
def two(daemon):  # noqa: F811
    return daemon(config())


def open_clients(d):
    webs = [HttpConn(d.ports["WEB"]) for _ in range(N)]
    lines = [LineClient(d.ports["LINES"]) for _ in range(N)]
    for c in webs:
        assert get(c, "/old") == (200, b"OLD")
        assert get(c, "/new")[0] == 404
    for c in lines:
        assert c.request("echo hi") == "hi"
        assert c.request("new x") == "Unknown handler: new"
    for listener in ("web", "lines"):
        by = set(held_ids(d, listener).values())
        assert len(by) == 2, f"{listener}: every connection on one worker"
    return webs, lines


def close_all(clients):
    for c in clients:
        c.close()


def test_kept_connections_survive_a_reload_and_use_the_new_config(two):
    webs, lines = open_clients(two)
    pids = [w["pid"] for w in workers(two)]
    before = (held_ids(two, "web"), held_ids(two, "lines"))
    answer = reload_with(two, config(new=True))
    assert answer["ok"] is True and answer["failed"] == 0, answer
    assert sorted((w["slot"], w["pid"], w["applied"]) for w in answer["workers"]) == [
        (0, pids[0], True), (1, pids[1], True)]
    # the answer comes once every worker has applied it: no waiting here
    for c in webs:
        assert get(c, "/new") == (200, b"NEW")
        assert get(c, "/old") == (200, b"OLD")
    for c in lines:
        assert c.request("new x") == "NEW"
        assert c.request("echo again") == "again"
    assert (held_ids(two, "web"), held_ids(two, "lines")) == before
    assert [(w["pid"], w["generation"]) for w in workers(two)] == [(pids[0], 2), (pids[1], 2)]
    assert two.wait_log(r"reload complete: 2 listener\(s\), 3 handler\(s\); 2 worker\(s\) applied it in place, "
                        r"0 replaced")
    close_all(webs + lines)


def test_refused_config_changes_no_worker_and_keeps_connections(two):
    webs, lines = open_clients(two)
    before = [(w["pid"], w["generation"]) for w in workers(two)]
    ids = (held_ids(two, "web"), held_ids(two, "lines"))
    answer = reload_with(two, config(new=True).replace('type: "static" reply: "NEW"', 'type: "nonsense"'))
    assert answer["ok"] is False and (answer["reloads"], answer["reloads_ok"], answer["reloads_refused"]) == (1, 0, 1)
    assert answer["error"] == (f"{two.config_path}:10:13: unknown type 'nonsense' (expected one of: echo, static, "
                               "exec, stream, broadcast, health, metrics, file, redirect, proxy, plugin, worker)")
    assert "workers" not in answer
    for c in webs:
        assert get(c, "/old") == (200, b"OLD")
        assert get(c, "/new")[0] == 404
    for c in lines:
        assert c.request("old") == "OLD"
        assert c.request("new x") == "Unknown handler: new"
    assert [(w["pid"], w["generation"]) for w in workers(two)] == before
    assert (held_ids(two, "web"), held_ids(two, "lines")) == ids
    close_all(webs + lines)


def test_reloads_under_load_fail_no_request(two):
    stop = threading.Event()
    failures = []
    counts = {"web": 0, "lines": 0}
    lock = threading.Lock()

    def web_client():
        c = HttpConn(two.ports["WEB"], timeout=20)
        try:
            while not stop.is_set():
                r = c.exchange("GET", "/old")
                if (r.status, r.body) != (200, b"OLD"):
                    failures.append((r.status, r.body))
                with lock:
                    counts["web"] += 1
        except Exception as e:  # noqa: BLE001 - every failure is counted
            failures.append(repr(e))
        finally:
            c.close()

    def line_client():
        c = LineClient(two.ports["LINES"], timeout=20)
        try:
            i = 0
            while not stop.is_set():
                i += 1
                got = c.request(f"echo m{i}")
                if got != f"m{i}":
                    failures.append(got)
                with lock:
                    counts["lines"] += 1
        except Exception as e:  # noqa: BLE001
            failures.append(repr(e))
        finally:
            c.close()

    threads = [threading.Thread(target=web_client) for _ in range(4)]
    threads += [threading.Thread(target=line_client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: counts["web"] > 0 and counts["lines"] > 0, timeout=10, what="traffic")
        for i in range(6):
            seen = dict(counts)
            answer = reload_with(two, config(new=i % 2 == 0))
            assert answer["ok"] is True and answer["failed"] == 0, answer
            # each reload lands between requests of every kind
            wait_for(lambda: counts["web"] > seen["web"] and counts["lines"] > seen["lines"], timeout=10,
                     what="traffic after the reload")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    stats = command(two, "stats")
    assert (stats["reloads"], stats["reloads_ok"], stats["reloads_refused"]) == (6, 6, 0)
    assert [w["generation"] for w in stats["workers"]] == [7, 7]


def test_a_moved_listener_keeps_its_connections_and_serves_the_new_address(two):
    lines = [LineClient(two.ports["LINES"]) for _ in range(N)]
    for c in lines:
        assert c.request("echo before") == "before"
    text = config().replace("127.0.0.1:PORT_LINES", "127.0.0.1:0")
    answer = reload_with(two, text)
    assert answer["ok"] is True and answer["failed"] == 0, answer
    rows = [x for x in command(two, "listeners")["listeners"] if x["name"] == "lines"]
    assert [(x["serving"], x["draining"], x["active_connections"]) for x in rows] == [(True, False, 0), (False, True, N)]
    port = int(rows[0]["address"].rsplit(":", 1)[1])
    assert port != two.ports["LINES"]
    for c in lines:
        assert c.request("echo after") == "after"  # the old listener drains: its connections stay
    fresh = [LineClient(port) for _ in range(N)]
    for c in fresh:
        assert c.request("old") == "OLD"
    by = {}
    for row in command(two, "connections lines")["connections"]:
        by.setdefault(row["id"] >> ID_SHIFT, 0)
        by[row["id"] >> ID_SHIFT] += 1
    assert len(by) == 2 and sum(by.values()) == 2 * N
    close_all(lines + fresh)


def test_workers_count_changes_start_and_stop_workers(two):
    webs, lines = open_clients(two)
    pids = [w["pid"] for w in workers(two)]
    answer = reload_with(two, config(new=True, workers=3))
    assert answer["ok"] is True and answer["failed"] == 0, answer
    wait_for(lambda: [w["state"] for w in workers(two)] == ["serving"] * 3, timeout=10, what="a third worker")
    now = workers(two)
    assert [w["slot"] for w in now] == [0, 1, 2]
    assert [w["pid"] for w in now[:2]] == pids
    assert [w["generation"] for w in now] == [2, 2, 2]
    for c in webs:
        assert get(c, "/new") == (200, b"NEW")
    # the third worker takes connections too, with the new config
    extra = [LineClient(two.ports["LINES"]) for _ in range(3 * N)]
    for c in extra:
        assert c.request("new x") == "NEW"
    assert len(set(held_ids(two, "lines").values())) == 3
    close_all(extra)
    # back to two, with a new listener: the third drains and exits, the first
    # two keep everything and take the new listener
    third = now[2]["pid"]
    more = '\n[listeners]\nmore { protocol: "tcp" listen: "127.0.0.1:0" handler: "new" }\n'
    answer = reload_with(two, config(new=True, workers=2) + more)
    assert answer["ok"] is True and answer["failed"] == 0, answer
    assert [(w["slot"], w["pid"]) for w in answer["workers"]] == [(0, pids[0]), (1, pids[1])]
    wait_for(lambda: [w["pid"] for w in workers(two)] == pids, timeout=10, what="the third worker gone")
    assert two.wait_log(rf"worker 2 \(pid {third}\) exited with status 0")
    for c in lines:
        assert c.request("new y") == "NEW"
    rows = {x["name"]: x for x in command(two, "listeners")["listeners"]}
    port = int(rows["more"]["address"].rsplit(":", 1)[1])
    fresh = [LineClient(port) for _ in range(N)]
    for c in fresh:
        assert c.request("x") == "NEW"
    assert len(set(held_ids(two, "more").values())) == 2
    close_all(webs + lines + fresh)


def test_a_second_reload_runs_after_the_first_and_counts(two):
    for i in range(3):
        answer = reload_with(two, config(new=i % 2 == 0))
        assert answer["ok"] is True, answer
        assert http_get(two.ports["WEB"], "/new").status == (200 if i % 2 == 0 else 404)
    stats = command(two, "stats")
    assert (stats["reloads"], stats["reloads_ok"], stats["reloads_refused"]) == (3, 3, 0)


def test_unchanged_handlers_keep_their_state(daemon):  # noqa: F811
    """A room whose settings did not change keeps its members in every worker:
    the snapshot a worker loads compares equal to what it runs."""
    d = daemon(config().replace('old  { type: "static" reply: "OLD" }',
                                'old  { type: "static" reply: "OLD" }\nchat { type: "broadcast" }')
               .replace('handlers: ["echo", "old"', 'handlers: ["echo", "old", "chat"'))
    members = [LineClient(d.ports["LINES"]) for _ in range(N)]
    for i, c in enumerate(members):
        assert c.request(f"echo m{i}") == f"m{i}"
        c.sendline("chat join")
    wait_for(lambda: command(d, "broadcast chat ping")["sent"] == N, timeout=10, what="every member joined")
    # the members' own messages and the pings all came before this mark
    assert command(d, "broadcast chat mark")["sent"] == N
    for c in members:
        while c.readline() != "mark":
            pass
    assert len({row["id"] >> ID_SHIFT for row in command(d, "connections lines")["connections"]}) == 2
    text = d.config_path.read_text().replace('reply: "OLD"', 'reply: "OLD2"')
    d.config_path.write_text(text)
    answer = command(d, "reload")
    assert answer["ok"] is True and answer["failed"] == 0, answer
    assert command(d, "broadcast chat after")["sent"] == N
    for c in members:
        assert c.readline() == "after"
        assert c.request("old") == "OLD2"
    close_all(members)


def test_a_worker_that_cannot_apply_is_reported_and_replaced(two):
    """Worker 0 gets no free descriptor (its RLIMIT_NOFILE lowered to what it
    has open), so the new listener's socket cannot reach it: the reply names
    it, worker 1 applies the config in place, and a new worker 0 with the new
    config takes the slot while the old one drains and exits."""
    webs, lines = open_clients(two)
    w0, w1 = workers(two)
    on_w1 = sum(1 for serial in held_ids(two, "lines").values() if serial != min(held_ids(two, "lines").values()))
    held = len(os.listdir(f"/proc/{w0['pid']}/fd"))
    resource.prlimit(w0["pid"], resource.RLIMIT_NOFILE, (held, resource.prlimit(w0["pid"], resource.RLIMIT_NOFILE)[1]))
    text = config() + '\n[listeners]\nmore { protocol: "tcp" listen: "127.0.0.1:0" handler: "old" }\n'
    answer = reload_with(two, text)
    assert answer["ok"] is True and answer["failed"] == 1, answer
    assert sorted(answer["workers"], key=lambda w: w["slot"]) == [
        {"slot": 0, "pid": w0["pid"], "applied": False,
         "error": "the listening sockets of the new listeners did not arrive (no free file descriptor to take them)"},
        {"slot": 1, "pid": w1["pid"], "applied": True}]
    assert two.wait_log(rf"reload: worker 0 \(pid {w0['pid']}\) could not apply the configuration: the listening "
                        r"sockets of the new listeners did not arrive \(no free file descriptor to take them\); a new "
                        r"worker with it replaces it \(the old one serves until then\)")
    wait_for(lambda: not pid_alive(w0["pid"]), timeout=15, what="the old worker 0 gone")
    now = workers(two)
    assert [(w["slot"], w["state"]) for w in now] == [(0, "serving"), (1, "serving")]
    assert now[0]["pid"] != w0["pid"] and now[1]["pid"] == w1["pid"]
    # its connections drained (each closed after a reply); worker 1's are kept
    rows = {x["name"]: x for x in command(two, "listeners")["listeners"]}
    port = int(rows["more"]["address"].rsplit(":", 1)[1])
    fresh = [LineClient(port) for _ in range(N)]
    for c in fresh:
        assert c.request("x") == "OLD"
    assert len({i >> ID_SHIFT for i in held_ids(two, "more")}) == 2
    kept = [c for c in lines if c.is_open()]
    assert len(kept) == on_w1
    for c in kept:
        assert c.request("echo still") == "still"
    close_all(webs + lines + fresh)


def test_the_snapshot_carries_the_cluster_password(daemon, redis):  # noqa: F811
    """The snapshot holds the secrets `config` hides: after a reload that
    changes [cluster], both workers authenticate again with the password."""
    r = redis("--requirepass", "s3cret")
    section = '\n[cluster]\nredis: "127.0.0.1:%d"\npassword: "s3cret"\nnode_id: "n1"\nchannel_prefix: "%s"\n'
    d = daemon(config() + section % (r.port, "one:"))

    def subscribed(channel):
        return r.command("PUBSUB", "NUMSUB", channel, password="s3cret").split() == [channel, "2"]

    wait_for(lambda: subscribed("one:@n1"), timeout=10, what="both workers on one:")
    answer = reload_with(d, config() + section % (r.port, "two:"))
    assert answer["ok"] is True and answer["failed"] == 0, answer
    wait_for(lambda: subscribed("two:@n1"), timeout=10, what="both workers on two:")
    c = command(d, "stats")["cluster"]
    assert (c["state"], c["last_error"], c["errors"]) == ("connected", None, 0)
    assert command(d, "config")["config"]["cluster"]["password"] == "(hidden)"
