# SPDX-License-Identifier: MIT
"""The worker handler: persistent programs answering JSON lines by id.

A test worker (worker_prog.py) does what each payload's first word says, so
the daemon's side is exercised with a real process: answers out of order,
binary payloads, workers killed mid-call and restarted, hung workers timed
out, malformed and oversized answer lines, the queue bound, the context of
each protocol, the shipped examples, and reload under load with no failed
request. Over TCP lines, UDP, HTTP and WebSocket."""
import asyncio
import json
import re
import signal
import threading
from pathlib import Path

import pytest
import websockets

from daemon_util import (  # noqa: F401  (daemon is a fixture)
    REPO_ROOT,
    LineClient,
    UdpClient,
    check_config,
    daemon,
    pid_alive,
    wait_pid_gone,
)
from ctl_util import ctl_metrics, parse_prometheus, sample, wait_for
from http_util import HttpConn, http_get, stats

# the machine running the tests may be loaded: a Python worker can take
# seconds to start, so answers are awaited generously (none of the tests
# measures time)
T = 20

PROG = str(Path(__file__).resolve().parent / "worker_prog.py")
ECHO_PY = str(REPO_ROOT / "examples/workers/echo.py")
ECHO_SH = str(REPO_ROOT / "examples/workers/echo.sh")

CONFIG = f"""
[daemon]
log_level: "debug"
control_socket: "ctl.sock"
shutdown_timeout: "2s"

[handlers]
w     {{ type: "worker" command: ["{PROG}"] timeout: "5s" env {{ WORKER_VERSION: "1" }} }}
hung  {{ type: "worker" command: ["{PROG}"] timeout: "1s" }}
small {{ type: "worker" command: ["{PROG}"] max_output: "64KB" }}
tiny  {{ type: "worker" command: ["{PROG}"] max_inflight: 1 max_queue: 1 }}
errs  {{ type: "worker" command: ["{PROG}"] stderr: "client" }}
two   {{ type: "worker" command: ["{PROG}"] processes: 2 }}
py    {{ type: "worker" command: ["{ECHO_PY}"] processes: 2 }}
sh    {{ type: "worker" command: ["{ECHO_SH}"] }}

[listeners]
lines {{
    protocol: "tcp"
    listen: "127.0.0.1:PORT_LINES"
    handlers: ["w", "hung", "small", "tiny", "errs", "two", "py", "sh"]
}}
dgram {{ protocol: "udp" listen: "127.0.0.1:PORT_DGRAM" handlers: ["w", "py", "sh"] }}
web {{
    protocol: "http"
    listen: "127.0.0.1:PORT_WEB"
    routes {{
        "/w/*": "w"
        "POST /py": "py"
        "POST /sh": "sh"
    }}
    websocket {{
        "/ws": ["w", "py", "sh"]
        "/raw": {{ handler: "w" }}
    }}
}}
"""


WORKERS = ["w", "hung", "small", "tiny", "errs", "two"]


@pytest.fixture
def d(daemon):
    d = daemon(CONFIG)
    for name in WORKERS:
        started_pid(d, name)
    with LineClient(d.ports["LINES"], timeout=T) as c:
        assert c.request("py ready") == "ready"
        assert c.request("sh ready") == "ready"
    return d


def ctl_sock(d):
    return d.tmp_path / "ctl.sock"


def worker_stats(d, name):
    return stats(ctl_sock(d))["handlers"][name]


def ws_url(d, path):
    return f"ws://127.0.0.1:{d.ports['WEB']}{path}"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


# ---- answers matched by id -----------------------------------------------------------


def test_answers_out_of_order_are_matched_by_id(d):
    # one process: the first call is held back while later ones are answered
    with LineClient(d.ports["LINES"], timeout=T) as a, LineClient(d.ports["LINES"], timeout=T) as b, LineClient(d.ports["LINES"], timeout=T) as c:
        a.sendline("w hold k1 first")
        assert b.request("w echo second") == "echo second"
        assert a.silent_for(0.2) == b""
        assert c.request("w release k1") == "released"
        assert a.readline() == "first"
    assert worker_stats(d, "w")["processes"] == 1


def test_many_calls_in_flight_with_shuffled_delays(d):
    before = worker_stats(d, "w")["calls"]
    clients = [LineClient(d.ports["LINES"], timeout=T) for _ in range(20)]
    try:
        for i, c in enumerate(clients):
            c.sendline(f"w sleep {(i * 7) % 5 * 40} payload-{i}")
        for i, c in enumerate(clients):
            assert c.readline() == f"payload-{i}"
    finally:
        for c in clients:
            c.close()
    s = worker_stats(d, "w")
    assert (s["in_flight"], s["errors"], s["calls"]) == (0, 0, before + 20)


def test_pipelined_calls_on_one_connection_keep_their_order(d):
    with LineClient(d.ports["LINES"], timeout=T) as c:
        c.send(b"".join(f"w sleep {(5 - i) * 30} n{i}\n".encode() for i in range(6)))
        assert c.readlines(6) == [f"n{i}" for i in range(6)]


def test_error_answers(d):
    with LineClient(d.ports["LINES"], timeout=T) as c:
        assert c.request("w error no such user") == "Error: no such user"
        assert c.request("w echo fine") == "echo fine"
    r = http_get(d.ports["WEB"], timeout=T, target="/w/x", method="POST", body=b"error nope")
    assert (r.status, r.body) == (500, b"Error: nope\n")


def test_http_status_and_headers_from_the_answer(d):
    r = http_get(d.ports["WEB"], timeout=T, target="/w", method="POST", body=b'created {"ok":true}')
    assert (r.status, r.body) == (201, b'{"ok":true}')
    assert r.headers_all("Content-Type") == ["application/json"]
    assert r.headers_all("X-Worker") == ["yes", "again"]
    r = http_get(d.ports["WEB"], timeout=T, target="/w", method="POST", body=b"notfound")
    assert (r.status, r.body) == (404, b"Error: no such thing\n")
    # a value that would split the response fails the call instead
    r = http_get(d.ports["WEB"], timeout=T, target="/w", method="POST", body=b"badheader")
    assert (r.status, r.body) == (500, b"Error: invalid answer from worker: control character in header value\n")
    assert not r.has("Set-Cookie") and not r.has("X-Evil")
    # other protocols take the reply alone
    with LineClient(d.ports["LINES"], timeout=T) as c:
        assert c.request("w created plain") == "plain"
        assert c.request("w notfound") == "Error: no such thing"


# ---- binary payloads -----------------------------------------------------------------


def test_binary_payloads_over_every_protocol(d):
    blob = bytes(range(256)) * 4
    linebytes = bytes(b for b in range(256) if b not in (10, 13)) + b"\xff\xfe"
    with LineClient(d.ports["LINES"], timeout=T) as c:
        c.send(b"w " + linebytes + b"\n")
        c._fill(5)
        while b"\n" not in c.buf:
            c._fill(5)
        assert c.buf.split(b"\n")[0] == linebytes
    with UdpClient(d.ports["DGRAM"]) as u:
        assert u.request(b"w " + blob) == blob
        assert u.request(b"py " + blob) == blob
        assert u.request(b"sh " + blob) == blob
    for path in ("/w", "/py", "/sh"):
        r = http_get(d.ports["WEB"], timeout=T, target=path, method="POST", body=blob)
        assert (r.status, r.body) == (200, blob), path

    async def go():
        async with websockets.connect(ws_url(d, "/raw")) as ws:
            await ws.send(blob)
            assert await ws.recv() == blob
            await ws.send("ünïcödé ✓ text")
            assert await ws.recv() == "ünïcödé ✓ text"

    run(go())


# ---- context ---------------------------------------------------------------------------


def test_context_over_each_protocol(d):
    with LineClient(d.ports["LINES"], timeout=T) as c:
        ctx = json.loads(c.request("w ctx"))
        assert ctx == {
            "listener": "lines",
            "protocol": "tcp",
            "conn_id": ctx["conn_id"],
            "remote_addr": c.local_addr(),
        }
        assert ctx["conn_id"] > 0
    with UdpClient(d.ports["DGRAM"]) as u:
        ctx = json.loads(u.request("w ctx"))
        host, port = u.sock.getsockname()
        assert ctx == {"listener": "dgram", "protocol": "udp", "conn_id": 0, "remote_addr": f"{host}:{port}"}
    with HttpConn(d.ports["WEB"], timeout=T) as h:
        r = h.exchange("POST", "/w/a%20b?x=1&y=%41", [("X-Tag", "one"), ("x-tag", "two"), ("Content-Type", "text/plain")],
                       b"ctx")
        assert r.status == 200
        ctx = json.loads(r.body)
        assert ctx["headers"] == {
            "Host": f"127.0.0.1:{d.ports['WEB']}",
            "X-Tag": "one, two",
            "Content-Type": "text/plain",
            "Content-Length": "3",
        }
        del ctx["headers"]
        assert ctx == {
            "listener": "web",
            "protocol": "http",
            "conn_id": ctx["conn_id"],
            "remote_addr": h.local_addr(),
            "method": "POST",
            "path": "/w/a b",
            "query": "x=1&y=%41",
        }

    async def go():
        async with websockets.connect(ws_url(d, "/ws")) as ws:
            await ws.send("w ctx")
            ctx = json.loads(await ws.recv())
            assert (ctx["listener"], ctx["protocol"]) == ("web", "websocket")
            assert ctx["conn_id"] > 0

    run(go())


# ---- workers that fail -------------------------------------------------------------------


def pid_of(c, name="w"):
    return int(c.request(f"{name} pid"))


def started_pid(d, name):
    """The pid of NAME's process once it answers: a call made while Python
    is still starting on a loaded machine can take longer than `timeout`."""
    with LineClient(d.ports["LINES"], timeout=T) as c:
        for _ in range(20):
            answer = c.request(f"{name} pid")
            if answer != "Error: timeout":
                return int(answer)
    raise AssertionError(f"{name} never answered")


def test_worker_killed_mid_call_fails_its_calls_and_restarts(d):
    with LineClient(d.ports["LINES"], timeout=T) as a, LineClient(d.ports["LINES"], timeout=T) as b:
        old = pid_of(b)
        a.sendline("w hold k1 never")
        b.sendline("w hold k2 never")
        assert a.silent_for(0.2) == b""
        d.children()
        import os

        os.kill(old, signal.SIGKILL)
        assert a.readline() == "Error: worker exited (killed by signal 9)"
        assert b.readline() == "Error: worker exited (killed by signal 9)"
        assert d.wait_log(r"handler w: restarting worker 0 in 100 ms")
        # calls made before the new process is up wait for it
        new = pid_of(a)
        assert new != old and pid_alive(new)
        assert b.request("w echo back") == "echo back"
    s = worker_stats(d, "w")
    assert (s["processes"], s["restarts"], s["in_flight"]) == (1, 1, 0)
    prom = parse_prometheus(ctl_metrics(ctl_sock(d)))
    assert sample(prom, "tusknet_handler_restarts_total", handler="w") == 1
    assert sample(prom, "tusknet_handler_processes", handler="w") == 1


def test_crash_with_stderr_to_client_and_backoff(d):
    with LineClient(d.ports["LINES"], timeout=T) as c:
        assert c.request("errs crash") == "Error: worker exited (exit status 3): dying"
        assert c.request("errs crash") == "Error: worker exited (exit status 3): dying"
        assert c.request("errs echo alive") == "echo alive"
    # the second quick exit doubled the delay
    assert d.wait_log(r"handler errs: restarting worker 0 in 100 ms")
    assert d.wait_log(r"handler errs: restarting worker 0 in 200 ms")
    assert worker_stats(d, "errs")["restarts"] == 2


def test_hung_call_times_out_and_the_process_keeps_serving(d):
    before = started_pid(d, "hung")
    with LineClient(d.ports["LINES"], timeout=T) as c:
        assert c.request("hung ignore") == "Error: timeout"
        assert c.request("hung echo still") == "echo still"
        assert pid_of(c, "hung") == before


def test_hung_process_is_killed_after_three_timeouts_in_a_row(d):
    old = started_pid(d, "hung")
    clients = [LineClient(d.ports["LINES"], timeout=T) for _ in range(3)]
    try:
        clients[0].sendline("hung block 30")
        for c in clients[1:]:
            c.sendline("hung echo stuck behind")
        for c in clients:
            assert c.readline() == "Error: timeout"
    finally:
        for c in clients:
            c.close()
    assert d.wait_log(r"handler hung: worker 0 \(pid %d\): its calls timed out 3 times in a row, killing it" % old)
    assert wait_pid_gone(old, T)
    assert started_pid(d, "hung") != old


def test_malformed_answer_lines(d):
    with LineClient(d.ports["LINES"], timeout=T) as c:
        pid = pid_of(c)
        # a line that is not JSON is logged and skipped
        assert c.request("w garbage after") == "after"
        assert d.wait_log(r"handler w: worker 0 \(pid %d\): ignored output line \(not a JSON object\): "
                          r"this is not json" % pid)
        # an answer to an id nobody asked for is logged and skipped
        assert c.request("w strayid mine") == "mine"
        assert d.wait_log(r"ignored output line \(no call has this id\)")
        # a malformed answer with a known id fails that call
        assert c.request("w badtype") == "Error: invalid answer from worker: reply is not a string"
        assert c.request("w echo ok") == "echo ok"
        assert pid_of(c) == pid


def test_answer_over_max_output_restarts_the_process(d):
    with LineClient(d.ports["LINES"], timeout=T) as c, LineClient(d.ports["LINES"], timeout=T) as other:
        old = pid_of(c, "small")
        other.sendline("small hold k never")
        assert other.silent_for(0.1) == b""
        assert c.request("small huge 60000") == "x" * 60000
        assert c.request("small huge 70000") == "Error: worker killed: answer line over max_output"
        assert other.readline() == "Error: worker killed: answer line over max_output"
        assert wait_pid_gone(old, T)
        mid = pid_of(c, "small")
        assert mid != old
        # output that never ends a line is cut off the same way
        assert c.request("small endless") == "Error: worker killed: answer line over max_output"
        assert wait_pid_gone(mid, T)
        assert c.request("small echo fine") == "echo fine"


def test_queue_bound_answers_busy(d):
    with LineClient(d.ports["LINES"], timeout=T) as a, LineClient(d.ports["LINES"], timeout=T) as b, LineClient(d.ports["LINES"], timeout=T) as c:
        a.sendline("tiny sleep 1500 first")  # the process's one slot
        assert a.silent_for(0.1) == b""
        b.sendline("tiny echo queued")  # the queue's one place
        assert b.silent_for(0.1) == b""
        assert c.request("tiny echo third") == "Error: busy"
        assert a.readline() == "first"
        assert b.readline() == "echo queued"
        assert c.request("tiny echo free again") == "echo free again"


def test_caller_gone_mid_call(d):
    a = LineClient(d.ports["LINES"], timeout=T)
    a.sendline("w hold gone lost")
    assert a.silent_for(0.1) == b""
    a.reset()  # a FIN would still wait for the answer
    wait_for(lambda: worker_stats(d, "w")["in_flight"] == 0, T, what="the cancelled call")
    with LineClient(d.ports["LINES"], timeout=T) as c:
        # the answer comes after the caller went and is dropped
        assert c.request("w release gone") == "released"
        assert c.request("w echo after") == "echo after"


def test_least_loaded_process_gets_the_call(d):
    with LineClient(d.ports["LINES"], timeout=T) as a, LineClient(d.ports["LINES"], timeout=T) as b:
        a.sendline("two sleep 1500 x")  # one process busy with a call
        assert a.silent_for(0.1) == b""
        pids = {pid_of(b, "two") for _ in range(6)}
        assert len(pids) == 1  # always the idle one
        assert a.readline() == "x"
        # with both idle, calls take turns
        assert len({pid_of(b, "two") for _ in range(4)}) == 2
    assert worker_stats(d, "two")["processes"] == 2


# ---- the shipped examples ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["py", "sh"])
def test_examples_echo(d, name):
    payloads = ['plain', 'quotes " and \\ backslash', "ünïcödé ✓", "tab\there", ""]
    with LineClient(d.ports["LINES"], timeout=T) as c:
        for p in payloads:
            assert c.request(f"{name} {p}") == p
    for p in payloads:
        r = http_get(d.ports["WEB"], timeout=T, target=f"/{name}", method="POST", body=p.encode())
        assert (r.status, r.body) == (200, p.encode())

    async def go():
        async with websockets.connect(ws_url(d, "/ws")) as ws:
            for p in payloads:
                await ws.send(f"{name} {p}")
                assert await ws.recv() == p

    run(go())


# ---- configuration ---------------------------------------------------------------------------


def test_config_check_names_the_missing_program(tmp_path):
    text = '[handlers]\nw { type: "worker"\n    command: ["/nonexistent/prog"] }\n'
    rc, out = check_config(text, tmp_path)
    assert rc == 1
    assert f"{tmp_path}/check.conf:3:14: handler 'w': cannot run /nonexistent/prog: No such file or directory" in out


def test_config_bounds(tmp_path):
    for key, value, msg in [
        ("processes", "0", "'processes' is out of range: 0 (allowed 1 to 256)"),
        ("max_inflight", "0", "'max_inflight' is out of range: 0 (allowed 1 to 65536)"),
    ]:
        text = f'[handlers]\nw {{ type: "worker" command: ["cat"] {key}: {value} }}\n'
        rc, out = check_config(text, tmp_path)
        assert rc == 1 and msg in out, out


# ---- reload --------------------------------------------------------------------------------


def test_reload_under_load_fails_no_request(d):
    with LineClient(d.ports["LINES"], timeout=T) as c:
        old_pid = pid_of(c)
        assert c.request("w version") == "1"
    stop = threading.Event()
    results = {"line": [], "http": [], "ws": []}
    errors = []

    def line_load():
        try:
            with LineClient(d.ports["LINES"], timeout=T) as c:
                while not stop.is_set():
                    results["line"].append(c.request("w version"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    def http_load():
        try:
            with HttpConn(d.ports["WEB"], timeout=T) as h:
                while not stop.is_set():
                    r = h.exchange("POST", "/w", None, b"version")
                    results["http"].append(r.text if r.status == 200 else f"{r.status} {r.text}")
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    def ws_load():
        async def go():
            async with websockets.connect(ws_url(d, "/ws")) as ws:
                while not stop.is_set():
                    await ws.send("w version")
                    results["ws"].append(await ws.recv())

        try:
            asyncio.run(go())
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=f) for f in (line_load, line_load, http_load, ws_load)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: all(len(v) >= 20 for v in results.values()), T, what="load before the reload")
        d.config_path.write_text(d.config.replace('WORKER_VERSION: "1"', 'WORKER_VERSION: "2"'))
        d.send_signal(signal.SIGHUP)
        assert d.wait_log(r"reload complete", T)
        wait_for(lambda: all(v and v[-1] == "2" for v in results.values()), T, what="answers from the new workers")
        counts = {k: len(v) for k, v in results.items()}
        wait_for(lambda: all(len(results[k]) >= counts[k] + 20 for k in results), T, what="load after the reload")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []
    for kind, answers in results.items():
        # every answer is a version, never an error, and no client went back to the old one
        assert set(answers) <= {"1", "2"}, (kind, [a for a in answers if a not in ("1", "2")][:5])
        first2 = answers.index("2")
        assert answers[first2:] == ["2"] * (len(answers) - first2), kind
    # the old process got EOF once its calls were answered, and exited by itself
    assert wait_pid_gone(old_pid, T)
    assert re.search(r"handler w: worker 0 \(pid %d\) ended: exit status 0" % old_pid, d.log())
    with LineClient(d.ports["LINES"], timeout=T) as c:
        assert c.request("w version") == "2"
        assert pid_of(c) != old_pid


def test_reload_keeps_old_workers_while_a_websocket_holds_the_handler(d):
    """A WebSocket on an endpoint with a single handler keeps the handler it
    connected with; the old processes serve it until it closes, then exit."""
    old_pid = started_pid(d, "w")

    async def go():
        async with websockets.connect(ws_url(d, "/raw")) as ws:
            await ws.send("version")
            assert await ws.recv() == "1"
            d.config_path.write_text(d.config.replace('WORKER_VERSION: "1"', 'WORKER_VERSION: "2"'))
            d.send_signal(signal.SIGHUP)
            assert d.wait_log(r"reload complete", T)
            with LineClient(d.ports["LINES"], timeout=T) as c:
                assert c.request("w version") == "2"
            # still the old handler, served by the old process
            await ws.send("pid")
            assert await ws.recv() == str(old_pid)
            await ws.send("version")
            assert await ws.recv() == "1"

    run(go())
    # the connection is gone: the old process gets EOF and exits by itself
    assert wait_pid_gone(old_pid, T)
    assert d.wait_log(r"handler w: worker 0 \(pid %d\) ended: exit status 0" % old_pid, T)
