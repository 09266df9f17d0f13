# SPDX-License-Identifier: MIT
"""What the proxy shows and keeps around servers a reload or the operator
takes away: a server removed by a reload is in the Prometheus series (labels
state="draining", removed="true") while its request drains, then its series
go; a whole proxy handler removed by a reload lists its busy servers under
its name, marked removed, until the last request in flight through it ends
(that client still gets its whole answer), then nothing of it is left and
no connection to its servers stays open; `upstream H S drain` on a
mode "connection" line proxy sends new clients elsewhere while the splices
already on S go on; and a reload that changes only a server's weight or the
balance keeps its pooled connections.

The upstreams are the ones of test_proxy_ops: they answer their own name,
hold `/hold` requests (the line `hold`) until released, and count the
connections they accepted and the ones the proxy closed."""
import json

from ctl_util import ctl, ctl_metrics, parse_prometheus, wait_for
from daemon_util import daemon  # noqa: F401  (daemon is a fixture)
from http_util import HttpConn, ctl_socket_path
from test_proxy_ops import (Client, LineClient, LineUpstream, bodies, hold_on, reload_with, row,  # noqa: F401
                            servers, ups)

UPSTREAM_SERIES = ("tusknet_upstream_requests_total", "tusknet_upstream_responses_total",
                   "tusknet_upstream_connects_total", "tusknet_upstream_reused_total",
                   "tusknet_upstream_ejections_total", "tusknet_upstream_active_connections",
                   "tusknet_upstream_idle_connections", "tusknet_upstream_up", "tusknet_upstream_failures_total",
                   "tusknet_upstream_latency_seconds_bucket", "tusknet_upstream_latency_seconds_sum",
                   "tusknet_upstream_latency_seconds_count")


class SpliceUpstream(LineUpstream):
    """A line upstream that closes its side when the client's side ends, as
    a spliced server does (the splice ends when both sides have)."""

    def _serve(self, c):
        super()._serve(c)
        c.close()


def config(tmp_path, upstreams, px_extra="", with_px=True, mode=""):
    """px proxies `* /*` on WEB (st when WITH_PX is false) and the line
    listener LINES; mx serves the metrics on `GET /metrics`."""
    ctl_path = ctl_socket_path(tmp_path)
    ups_text = ", ".join(json.dumps(u) for u in upstreams)
    px = f'px {{ type: "proxy" upstreams: [{ups_text}] {mode} {px_extra} }}' if with_px else ""
    target = "px" if with_px else "st"
    return ctl_path, f"""
[daemon]
control_socket: "{ctl_path}"
[handlers]
{px}
st {{ type: "static" reply: "static" }}
mx {{ type: "metrics" }}
[listeners]
web {{ protocol: "http" listen: "127.0.0.1:PORT_WEB" routes {{ "GET /metrics": "mx" "* /*": "{target}" }} }}
lines {{ protocol: "tcp" listen: "127.0.0.1:PORT_LINES" handler: "{target}" }}
"""


def http_metrics(port):
    with HttpConn(port) as c:
        r = c.exchange("GET", "/metrics")
        assert r.status == 200, r
        return r.text


def upstream_samples(text):
    """{(name, labels as a sorted tuple): value} of the tusknet_upstream_* samples."""
    return {(n, tuple(sorted(ls))): v for (n, ls), v in parse_prometheus(text).items()
            if n.startswith("tusknet_upstream_")}


def of_server(samples, server):
    return {k: v for k, v in samples.items() if ("server", server) in k[1]}


def labels(server, handler="px", removed=False, **more):
    ls = {"handler": handler, "server": server, **more}
    if removed:
        ls.update(state="draining", removed="true")
    return tuple(sorted(ls.items()))


def check_removed_series(samples, b, requests=1, handler="px"):
    """The series of b's removed self: all of them, with its request in flight."""
    mine = {k: v for k, v in of_server(samples, b).items() if ("removed", "true") in k[1]}
    assert {k[0] for k in mine} == set(UPSTREAM_SERIES)
    assert all(("state", "draining") in k[1] for k in mine), mine
    assert mine[("tusknet_upstream_requests_total", labels(b, handler, True))] == requests
    assert mine[("tusknet_upstream_active_connections", labels(b, handler, True))] == 1
    assert mine[("tusknet_upstream_idle_connections", labels(b, handler, True))] == 0
    assert mine[("tusknet_upstream_up", labels(b, handler, True))] == 0
    assert mine[("tusknet_upstream_failures_total", labels(b, handler, True, reason="reset"))] == 0


def a_and_b(daemon, tmp_path, ups):
    """px over HTTP upstreams a and b."""
    a, b = ups("a"), ups("b")
    ctl_path, conf = config(tmp_path, [a.addr, b.addr])
    d = daemon(conf)
    return a, b, d, ctl_path, d.ports["WEB"]


def b_holding(daemon, tmp_path, ups):
    """px over a and b, with a request b holds."""
    a, b, d, ctl_path, port = a_and_b(daemon, tmp_path, ups)
    return a, b, d, ctl_path, port, hold_on(ctl_path, a, b, lambda: Client(port, "/hold"))


# ---- a removed server in the metrics ---------------------------------------------------


def test_removed_server_has_labelled_series_while_its_request_drains(daemon, tmp_path, ups):
    a, b, d, ctl_path, port, held = b_holding(daemon, tmp_path, ups)
    before = upstream_samples(ctl_metrics(ctl_path))
    assert before[("tusknet_upstream_active_connections", labels(b.addr))] == 1
    assert not [k for k in before if ("removed", "true") in k[1]]

    reload_with(d, ctl_path, config(tmp_path, [a.addr])[1])
    assert row(ctl_path, b.addr) == ("draining", True, 1, 0)
    for text in (ctl_metrics(ctl_path), http_metrics(port)):
        samples = upstream_samples(text)
        check_removed_series(samples, b.addr)
        assert all(("removed", "true") in k[1] for k in of_server(samples, b.addr))
        assert samples[("tusknet_upstream_up", labels(a.addr))] == 1
        assert not [k for k in samples if ("server", a.addr) in k[1] and ("removed", "true") in k[1]]

    b.released.set()
    assert held.join() == (200, "b")
    wait_for(lambda: [s["server"] for s in servers(ctl_path)] == [a.addr], 10, what="b to leave upstreams")
    for text in (ctl_metrics(ctl_path), http_metrics(port)):
        samples = upstream_samples(text)
        assert of_server(samples, b.addr) == {}
        assert samples[("tusknet_upstream_up", labels(a.addr))] == 1
    wait_for(lambda: b.open() == 0, 10, what="b's last connection to close")


def test_server_added_back_while_its_old_self_drains_has_two_sets_of_series(daemon, tmp_path, ups):
    a, b, d, ctl_path, port, held = b_holding(daemon, tmp_path, ups)
    reload_with(d, ctl_path, config(tmp_path, [a.addr])[1])
    reload_with(d, ctl_path, config(tmp_path, [a.addr, b.addr])[1])
    assert bodies(port, 2) == {"a": 1, "b": 1}
    samples = upstream_samples(ctl_metrics(ctl_path))
    check_removed_series(samples, b.addr)
    assert samples[("tusknet_upstream_requests_total", labels(b.addr))] == 1
    assert samples[("tusknet_upstream_active_connections", labels(b.addr))] == 0
    assert samples[("tusknet_upstream_up", labels(b.addr))] == 1
    b.released.set()
    assert held.join() == (200, "b")
    wait_for(lambda: len(servers(ctl_path)) == 2, 10, what="the old b to leave upstreams")
    samples = upstream_samples(ctl_metrics(ctl_path))
    assert not [k for k in samples if ("removed", "true") in k[1]]
    assert samples[("tusknet_upstream_requests_total", labels(b.addr))] == 1


# ---- a whole proxy handler removed -----------------------------------------------------


def test_removed_handler_lists_its_busy_servers_until_the_last_request_ends(daemon, tmp_path, ups):
    a, b, d, ctl_path, port = a_and_b(daemon, tmp_path, ups)
    held = Client(port, "/hold")  # round robin: to a
    wait_for(lambda: a.held == 1, 10, what="the request held by a")
    assert bodies(port, 1) == {"b": 1}  # b keeps that connection idle in its pool
    assert (row(ctl_path, a.addr), row(ctl_path, b.addr)) == (("up", False, 1, 0), ("up", False, 0, 1))

    reload_with(d, ctl_path, config(tmp_path, [], with_px=False)[1])
    # b has no work: not listed; a serves the request in flight, under px
    listed = ctl(ctl_path, "upstreams")["upstreams"]
    assert [(g["handler"], g["balance"], g["removed"]) for g in listed] == [("px", "round_robin", True)]
    assert [(s["server"], s["state"], s["removed"], s["active"], s["idle"], s["requests"])
            for s in listed[0]["servers"]] == [(a.addr, "draining", True, 1, 0, 1)]
    # b's idle pooled connection closed at the reload
    wait_for(lambda: b.closed == 1, 10, what="b's idle pooled connection to close")
    assert (a.open(), b.open()) == (1, 0)
    for text in (ctl_metrics(ctl_path), http_metrics(port)):
        samples = upstream_samples(text)
        assert of_server(samples, b.addr) == {}
        check_removed_series(samples, a.addr)
        assert all(("removed", "true") in k[1] for k in of_server(samples, a.addr))
    # the handler is gone for everything else
    assert ctl(ctl_path, f"upstream px {a.addr} drain") == {"ok": False, "error": "no handler 'px'"}
    with HttpConn(port) as c:
        r = c.exchange("GET", "/x")
        assert (r.status, r.text) == (200, "static")

    a.released.set()
    assert held.join() == (200, "a")
    wait_for(lambda: ctl(ctl_path, "upstreams")["upstreams"] == [], 10, what="px to leave upstreams")
    wait_for(lambda: a.open() == 0, 10, what="a's last connection to close")
    assert (a.accepted, b.accepted, a.closed, b.closed) == (1, 1, 1, 1)
    samples = upstream_samples(ctl_metrics(ctl_path))
    assert samples == {}


def test_removed_handler_lists_the_servers_of_its_older_generations_once(daemon, tmp_path, ups):
    a, b, d, ctl_path, port, held_b = b_holding(daemon, tmp_path, ups)
    reload_with(d, ctl_path, config(tmp_path, [a.addr])[1])  # b drains, held by the first px
    held_a = Client(port, "/hold")  # a, held by the second px (which shares a with the first)
    wait_for(lambda: a.held == 1, 10, what="the request held by a")

    reload_with(d, ctl_path, config(tmp_path, [], with_px=False)[1])
    listed = ctl(ctl_path, "upstreams")["upstreams"]
    assert [(g["handler"], g["removed"], [(s["server"], s["state"], s["removed"], s["active"])
                                          for s in g["servers"]]) for g in listed] == [
        ("px", True, [(a.addr, "draining", True, 1), (b.addr, "draining", True, 1)])]
    samples = upstream_samples(ctl_metrics(ctl_path))
    check_removed_series(samples, a.addr)
    check_removed_series(samples, b.addr)
    assert len(samples) == 2 * len(of_server(samples, a.addr))

    b.released.set()
    assert held_b.join() == (200, "b")
    wait_for(lambda: [s["server"] for g in ctl(ctl_path, "upstreams")["upstreams"] for s in g["servers"]] == [a.addr],
             10, what="b to leave upstreams")
    a.released.set()
    assert held_a.join() == (200, "a")
    wait_for(lambda: ctl(ctl_path, "upstreams")["upstreams"] == [], 10, what="px to leave upstreams")
    assert upstream_samples(ctl_metrics(ctl_path)) == {}
    wait_for(lambda: (a.open(), b.open()) == (0, 0), 10, what="the last connections to close")


def test_removed_handler_with_a_line_splice_in_flight_lists_it_until_the_client_leaves(daemon, tmp_path, ups):
    a = ups("a", SpliceUpstream)
    ctl_path, conf = config(tmp_path, [a.addr], mode='mode: "connection"')
    d = daemon(conf)
    cl = LineClient(d.ports["LINES"])
    try:
        assert cl.ask("x") == "a:x"
        reload_with(d, ctl_path, config(tmp_path, [], with_px=False)[1])
        listed = ctl(ctl_path, "upstreams")["upstreams"]
        assert [(g["handler"], g["removed"], [(s["server"], s["state"], s["removed"], s["active"])
                                                for s in g["servers"]]) for g in listed] == [
            ("px", True, [(a.addr, "draining", True, 1)])]
        # the splice goes on; a new client gets the listener's new handler
        assert cl.ask("y") == "a:y"
        other = LineClient(d.ports["LINES"])
        try:
            assert other.ask("hello") == "static"
        finally:
            other.close()
    finally:
        cl.close()
    wait_for(lambda: ctl(ctl_path, "upstreams")["upstreams"] == [], 10, what="px to leave upstreams")
    wait_for(lambda: a.open() == 0, 10, what="the splice's upstream connection to close")
    assert a.accepted == 1


# ---- mode connection: drain --------------------------------------------------------------


def test_drain_sends_new_splices_elsewhere_and_keeps_the_existing_ones(daemon, tmp_path, ups):
    a, b = ups("a", SpliceUpstream), ups("b", SpliceUpstream)
    ctl_path, conf = config(tmp_path, [a.addr, b.addr], mode='mode: "connection"')
    d = daemon(conf)
    port = d.ports["LINES"]
    c1, c2 = LineClient(port), LineClient(port)
    more = []
    try:
        assert (c1.ask("1"), c2.ask("2")) == ("a:1", "b:2")
        assert ctl(ctl_path, f"upstream px {b.addr} drain") == {"ok": True}
        assert row(ctl_path, b.addr) == ("draining", False, 1, 0)
        more = [LineClient(port) for _ in range(3)]
        assert [c.ask(f"n{i}") for i, c in enumerate(more)] == ["a:n0", "a:n1", "a:n2"]
        assert c2.ask("still") == "b:still"
        assert (a.accepted, b.accepted) == (4, 1)
        c2.close()
        wait_for(lambda: b.closed == 1, 10, what="the splice to b to end")
        assert row(ctl_path, b.addr) == ("draining", False, 0, 0)
        assert ctl(ctl_path, f"upstream px {b.addr} up") == {"ok": True}
        back = [LineClient(port) for _ in range(2)]
        more += back
        assert [c.ask("back") for c in back] == ["a:back", "b:back"]
    finally:
        for c in [c1, c2] + more:
            c.close()


# ---- reloads that keep a server's pool ----------------------------------------------------


def test_reload_changing_weight_or_balance_keeps_pooled_connections(daemon, tmp_path, ups):
    a, b, d, ctl_path, port = a_and_b(daemon, tmp_path, ups)
    assert bodies(port, 4) == {"a": 2, "b": 2}
    assert (a.accepted, b.accepted) == (1, 1)
    assert (row(ctl_path, a.addr), row(ctl_path, b.addr)) == (("up", False, 0, 1), ("up", False, 0, 1))

    reload_with(d, ctl_path, config(tmp_path, [a.addr, f"{b.addr} weight=3"])[1])
    assert [(s["server"], s["weight"], s["idle"]) for s in servers(ctl_path)] == [(a.addr, 1, 1), (b.addr, 3, 1)]
    assert bodies(port, 8) == {"a": 2, "b": 6}
    assert (a.accepted, b.accepted, a.closed, b.closed) == (1, 1, 0, 0)

    reload_with(d, ctl_path, config(tmp_path, [a.addr, f"{b.addr} weight=3"], 'balance: "least_conn"')[1])
    assert [(g["handler"], g["balance"], g["removed"]) for g in ctl(ctl_path, "upstreams")["upstreams"]] == [
        ("px", "least_conn", False)]
    assert bodies(port, 4) == {"a": 1, "b": 3}
    assert (a.accepted, b.accepted, a.closed, b.closed) == (1, 1, 0, 0)
    assert [(s["server"], s["requests"], s["connects"], s["reused"]) for s in servers(ctl_path)] == [
        (a.addr, 5, 1, 4), (b.addr, 11, 1, 10)]


def test_reload_changing_weight_keeps_the_line_pool(daemon, tmp_path, ups):
    a, b = ups("a", LineUpstream), ups("b", LineUpstream)
    ctl_path, conf = config(tmp_path, [a.addr, b.addr], "pool_size: 1")
    d = daemon(conf)
    cl = LineClient(d.ports["LINES"])
    try:
        assert [cl.ask(f"x{i}") for i in range(2)] == ["a:x0", "b:x1"]
        reload_with(d, ctl_path, config(tmp_path, [a.addr, f"{b.addr} weight=3"], "pool_size: 1")[1])
        assert [cl.ask(f"y{i}") for i in range(4)] == ["b:y0", "a:y1", "b:y2", "b:y3"]
        assert (a.accepted, b.accepted, a.closed, b.closed) == (1, 1, 0, 0)
    finally:
        cl.close()
