# SPDX-License-Identifier: MIT
"""[cluster]: `send NODE:ID MESSAGE` reaches a connection of another instance.

Two daemons share a real redis-server: node "a" (one process) and node "b"
(`workers: 2`). Connection ids are per instance; `send b:ID ...` on a's
control socket is published on b's own channel and b's worker that holds
the connection delivers it, to TCP line clients on either worker and to a
WebSocket client. The other way round, b's master hands the command to one
of its workers, which publishes it. An unknown node, a malformed NODE:ID, no
[cluster], and Redis down each give their exact error at once (a send to
the node's own id is delivered without Redis); a connection
id b does not have is published (the answer cannot know) and counted at b.
"""
import os
import subprocess

from ctl_util import TUSKNETCTL, CtlClient, wait_for
from daemon_util import LineClient, daemon  # noqa: F401 (fixture)
from test_cluster import ctl_dir, redis, wait_state, ws_text  # noqa: F401 (fixtures)
from test_ws import RawWs

ID_SHIFT = 40
N = 40

NODE = """
[daemon]
control_socket: "{ctl}"
shutdown_timeout: "2s"
workers: {workers}

[handlers]
echo {{ type: "echo" }}

[listeners]
lines {{ protocol: "tcp" listen: "127.0.0.1:PORT_LINES" handler: "echo" }}
web {{
    protocol: "http"
    listen: "127.0.0.1:PORT_WEB"
    websocket {{ "/ws": "echo" }}
}}
{cluster}
"""


def start(daemon, ctl_dir, node, redis_port, workers=1):  # noqa: F811
    sock = os.path.join(ctl_dir, f"{node}.sock")
    cluster = f'[cluster]\nredis: "127.0.0.1:{redis_port}"\nnode_id: "{node}"\nreconnect_max: "200ms"\n' \
        if redis_port else ""
    d = daemon(NODE.format(ctl=sock, workers=workers, cluster=cluster), name=f"node-{node}")
    d.ctl = CtlClient(sock, timeout=10)
    d.sock = sock
    return d


def linked(daemon, redis, ctl_dir):  # noqa: F811
    """Redis, node a (one process) and node b (two workers), both linked."""
    r = redis()
    a = start(daemon, ctl_dir, "a", r.port)
    b = start(daemon, ctl_dir, "b", r.port, workers=2)
    wait_state(a, "connected")
    wait_for(lambda: [w["state"] for w in b.ctl.command("stats")["workers"]] == ["serving"] * 2, what="b's workers")
    wait_state(b, "connected")
    return r, a, b


def ids(d, listener):
    return [row["id"] for row in d.ctl.command(f"connections {listener}")["connections"]]


def cluster(d):
    return d.ctl.command("stats")["cluster"]


def line_clients(d, n):
    out = [LineClient(d.ports["LINES"]) for _ in range(n)]
    for i, c in enumerate(out):
        assert c.request(f"hi {i}") == f"hi {i}"
    return out


def by_port(d, listener, clients):
    """Each client's connection id, from the daemon's list (matched by port)."""
    rows = {row["remote"]: row["id"] for row in d.ctl.command(f"connections {listener}")["connections"]}
    return [rows[c.local_addr()] for c in clients]


def test_send_reaches_line_and_websocket_clients_on_another_node(daemon, redis, ctl_dir):  # noqa: F811
    _, a, b = linked(daemon, redis, ctl_dir)
    clients = line_clients(b, N)
    ws = RawWs(b.ports["WEB"], "/ws")
    assert ws.status == 101
    cids = by_port(b, "lines", clients)
    assert len({i >> ID_SHIFT for i in cids}) == 2, "every line client on one worker"
    [wsid] = ids(b, "web")
    for i, (c, cid) in enumerate(zip(clients, cids)):
        assert a.ctl.command(f"send b:{cid} to you {i}") == {"ok": True, "published": True, "node": "b", "id": cid}
        assert c.readline() == f"to you {i}"
    assert a.ctl.command(f"send b:{wsid} to the websocket") == {"ok": True, "published": True, "node": "b",
                                                                 "id": wsid}
    assert ws_text(ws) == "to the websocket"
    wait_for(lambda: cluster(b)["direct_delivered"] == N + 1, what="b counted its deliveries")
    assert cluster(a)["direct_published"] == N + 1
    assert cluster(b)["direct_undeliverable"] == 0
    # the other way: b's master has one of its workers publish it
    [back] = line_clients(a, 1)
    [aid] = by_port(a, "lines", [back])
    assert b.ctl.command(f"send a:{aid} from b") == {"ok": True, "published": True, "node": "a", "id": aid}
    assert back.readline() == "from b"
    # an id b does not have: published (the answer cannot know), counted at b
    gone = cids[0] + 100000
    assert a.ctl.command(f"send b:{gone} nobody") == {"ok": True, "published": True, "node": "b", "id": gone}
    wait_for(lambda: cluster(b)["direct_undeliverable"] == 1, what="b counted the undeliverable one")
    assert b.wait_log(rf"cluster: a message from node a for connection {gone}: no such connection")
    # tusknetctl says what it knows
    out = subprocess.run([TUSKNETCTL, "-s", a.sock, "send", f"b:{cids[1]}", "via", "tusknetctl"], capture_output=True,
                         text=True, timeout=10)
    assert (out.returncode, out.stdout) == (
        0, f"ok: published for connection {cids[1]} of node b (whether it reached it is known there)\n")
    assert clients[1].readline() == "via tusknetctl"
    ws.close()
    for c in clients + [back]:
        c.close()


def test_unknown_node_and_malformed_ids_are_exact_errors(daemon, redis, ctl_dir):  # noqa: F811
    _, a, b = linked(daemon, redis, ctl_dir)
    for d in (a, b):
        assert d.ctl.command("send c:5 hello") == {
            "ok": False, "error": "no node 'c' in the cluster (nothing subscribes to its channel)"}
        for bad in (":5", "b:", "b:x1", "b:5x", "b:-5", "b:99999999999999999999999"):
            assert d.ctl.command(f"send {bad} hello") == {
                "ok": False, "error": f"bad connection id '{bad}' (use ID, or NODE:ID with [cluster])"}
        assert d.ctl.command("send b:5") == {"ok": False, "error": "usage: send ID MESSAGE"}
    out = subprocess.run([TUSKNETCTL, "-s", a.sock, "send", "b:x", "m"], capture_output=True, text=True, timeout=10)
    assert (out.returncode, out.stderr) == (2, "tusknetctl: connection ID must be a number or NODE:ID, not 'b:x'\n"
                                               "Try 'tusknetctl --help' for more information.\n")
    assert cluster(a)["direct_published"] == 0


def test_without_cluster_node_ids_are_refused(daemon, ctl_dir):  # noqa: F811
    for workers, node in ((1, "solo"), (2, "duo")):
        d = start(daemon, ctl_dir, node, None, workers=workers)
        assert d.ctl.command("send x:1 hello") == {
            "ok": False, "error": "send NODE:ID needs [cluster] (connection ids are per instance)"}


def test_redis_down_is_an_exact_error_at_once(daemon, redis, ctl_dir):  # noqa: F811
    r, a, b = linked(daemon, redis, ctl_dir)
    [c] = line_clients(b, 1)
    [cid] = by_port(b, "lines", [c])
    r.stop()
    wait_for(lambda: cluster(a)["state"] != "connected", what="a sees Redis gone")
    # b's `stats` state is its workers' links together: none connected
    wait_for(lambda: cluster(b)["state"] != "connected", what="b sees Redis gone")
    assert a.ctl.command(f"send b:{cid} hello") == {
        "ok": False, "error": "not published: the link to Redis is not connected (stats shows why)"}
    # b's own node needs no Redis (test_workers_edge)
    assert b.ctl.command(f"send b:{cid} hello") == {"ok": True}
    assert c.readline() == "hello"
    c.close()


def test_hostile_traffic_on_a_nodes_channel(daemon, redis, ctl_dir):  # noqa: F811
    """Anyone may publish on b's channel: frames that are not tusknetd's are
    counted as invalid by each of b's two workers (both subscribe), a room
    name starting with '@' is never a room, and a well-formed frame is
    delivered by the worker that holds the connection."""
    r, a, b = linked(daemon, redis, ctl_dir)
    [c] = line_clients(b, 1)
    [cid] = by_port(b, "lines", [c])

    def publish(channel, payload):
        subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(r.port), "-x", "PUBLISH", channel], input=payload,
                       capture_output=True, timeout=10, check=True)

    for bad in (b"", bytes([1, 1]) + b"z" + b"\0" * 7, bytes([2, 1]) + b"z" + cid.to_bytes(8, "big") + b"v2",
                bytes([1, 200]) + b"short"):
        publish("tusknet:@b", bad)
    publish("tusknet:@b", bytes([1, 1]) + b"z" + cid.to_bytes(8, "big") + b"crafted \x00 bytes")
    assert c.readline() == "crafted \x00 bytes"
    wait_for(lambda: cluster(b)["invalid"] == 8, what="four bad frames, counted by each worker")
    c2 = cluster(b)
    assert (c2["direct_delivered"], c2["direct_undeliverable"], c2["unroutable"], c2["received"]) == (1, 0, 0, 0)
    assert (cluster(a)["invalid"], cluster(a)["unroutable"]) == (0, 0)  # a ignores b's channel
    c.close()
