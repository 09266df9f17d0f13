# SPDX-License-Identifier: MIT
"""Counters an operator reads: HTTP responses by status class (per listener,
per route, and for responses no route gave) in `stats`, Prometheus and
`tusknetctl stats`; the `info` command (pid, build, config, reloads, memory,
descriptors, connections by protocol) and the process_* series; reload
counts split into ok and refused; WebSocket open/close log lines; the access
log's body bytes and request_time; the WebSocket path in `tusknetctl
connections`.

Every daemon here has a control socket (ctl_daemon) and port-0 listeners,
read back from `listeners`.
"""
import asyncio
import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import time
from datetime import datetime, timezone

import pytest
import websockets

from ctl_util import (  # noqa: F401  (ctl_daemon is a fixture)
    TUSKNETCTL,
    TUSKNETD,
    ctl_daemon,
    parse_prometheus,
    sample,
    wait_for,
)
from daemon_util import LineClient
from http_util import HttpConn, http_get, raw_exchange

CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def config(tmp_path, extra_routes=""):
    (tmp_path / "files").mkdir(exist_ok=True)
    (tmp_path / "files" / "big.bin").write_bytes(bytes(range(256)) * 40)  # 10240 bytes, sent with sendfile
    return f"""
[daemon]
log_level: "info"
shutdown_timeout: "3s"

[handlers]
ok      {{ type: "static" reply: "hello" }}
missing {{ type: "static" reply: "no such thing" status: 404 }}
fail    {{ type: "exec" command: ["false"] }}
slow    {{ type: "exec" command: ["sleep", "0.2"] }}
moved   {{ type: "redirect" location: "/ok" status: 301 }}
files   {{ type: "file" root: "{tmp_path / 'files'}" }}
echo    {{ type: "echo" }}

[middleware]
alog {{ type: "access_log" file: "{tmp_path / 'access.log'}" format: "combined" }}
jlog {{ type: "access_log" file: "{tmp_path / 'access.json'}" format: "json" }}

[listeners]
web {{
    protocol: "http"
    listen: "127.0.0.1:0"
    middleware: ["alog", "jlog"]
    routes {{
        "GET /ok": "ok"
        "GET /missing": "missing"
        "POST /fail": "fail"
        "POST /slow": "slow"
        "GET /old": "moved"
        "GET /files/*": "files"
        {extra_routes}
    }}
    websocket {{ "/ws": {{ handler: "echo" max_message: "1KB" }} }}
}}
api   {{ protocol: "http" listen: "127.0.0.1:0" routes {{ "GET /ok": "ok" }} }}
tiny  {{ protocol: "http" listen: "127.0.0.1:0" max_connections: 1 routes {{ "GET /ok": "ok" }} }}
lines {{ protocol: "tcp" listen: "127.0.0.1:0" handler: "echo" }}
"""


@pytest.fixture
def d(ctl_daemon, tmp_path):
    return ctl_daemon(config(tmp_path))


def ctl(d, *args, check=0):
    r = subprocess.run([TUSKNETCTL, "-s", d.control, *args], capture_output=True, text=True, timeout=20)
    assert r.returncode == check, r.stdout + r.stderr
    return r.stdout


def classes(**n):
    return {c: n.get("c" + c[0], 0) for c in CLASSES}


def table(out, first_col):
    """Rows (cells split on 2+ spaces) under the header starting with FIRST_COL."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(first_col + " "):
            rows = []
            for row in lines[i + 1:]:
                if not row.strip():
                    break
                rows.append(re.split(r"\s{2,}", row.strip()))
            return [re.split(r"\s{2,}", line.strip())] + rows
    raise AssertionError(f"no {first_col} table in:\n{out}")


def promtool_check(text):
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package prometheus) is missing: make deps-test"
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr + "\n" + text


# ---- HTTP responses by status class ----------------------------------------------------------


def make_traffic(d):
    web, api, tiny = d.port("web"), d.port("api"), d.port("tiny")
    with HttpConn(web) as c:
        for _ in range(3):
            assert c.exchange("GET", "/ok").status == 200
        assert c.exchange("GET", "/missing").status == 404      # a route answering 404
        assert c.exchange("GET", "/nowhere").status == 404      # no route
        assert c.exchange("DELETE", "/ok").status == 405        # no route for the method
        assert c.exchange("POST", "/fail", body=b"x").status == 500
        assert c.exchange("GET", "/old").status == 301
    # a malformed request: 400 and the close
    assert raw_exchange(web, b"GET /ok HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")[0].status == 400
    assert http_get(api, "/ok").status == 200
    # over max_connections the listener answers 503 before any request
    with HttpConn(tiny) as held:
        assert held.exchange("GET", "/ok").status == 200
        assert raw_exchange(tiny, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")[0].status == 503


def test_responses_by_class_in_stats(d):
    make_traffic(d)
    s = d.stats()
    web = s["listeners"]["web"]
    assert web["http_responses"] == classes(c2=3, c3=1, c4=4, c5=1)
    assert web["routes"] == {
        "GET /ok": {"http_responses": classes(c2=3)},
        "GET /missing": {"http_responses": classes(c4=1)},
        "POST /fail": {"http_responses": classes(c5=1)},
        "POST /slow": {"http_responses": classes()},
        "GET /old": {"http_responses": classes(c3=1)},
        "GET /files/*": {"http_responses": classes()},
    }
    assert web["unrouted"] == {"http_responses": classes(c4=3)}  # 404, 405, 400
    assert s["listeners"]["api"]["http_responses"] == classes(c2=1)
    assert s["listeners"]["api"]["routes"] == {"GET /ok": {"http_responses": classes(c2=1)}}
    tiny = s["listeners"]["tiny"]
    assert tiny["http_responses"] == classes(c2=1, c5=1)
    assert tiny["unrouted"] == {"http_responses": classes(c5=1)}
    assert tiny["rejected"]["listener_full"] == 1
    assert s["global"]["http_responses"] == classes(c2=5, c3=1, c4=4, c5=2)
    # line listeners have no HTTP counts
    assert "http_responses" not in s["listeners"]["lines"] and "routes" not in s["listeners"]["lines"]


def test_responses_by_class_in_prometheus(d):
    make_traffic(d)
    text = d.metrics()
    promtool_check(text)
    m = parse_prometheus(text)
    got = {(dict(ls)["listener"], dict(ls)["route"], dict(ls)["class"]): v
           for (n, ls), v in m.items() if n == "tusknet_http_responses_total"}
    want = {}
    routes = {"web": ["GET /ok", "GET /missing", "POST /fail", "POST /slow", "GET /old", "GET /files/*", ""],
              "api": ["GET /ok", ""], "tiny": ["GET /ok", ""]}
    for listener, rs in routes.items():
        for r in rs:
            for c in CLASSES:
                want[(listener, r, c)] = 0
    want.update({("web", "GET /ok", "2xx"): 3, ("web", "GET /missing", "4xx"): 1, ("web", "POST /fail", "5xx"): 1,
                 ("web", "GET /old", "3xx"): 1, ("web", "", "4xx"): 3, ("api", "GET /ok", "2xx"): 1,
                 ("tiny", "GET /ok", "2xx"): 1, ("tiny", "", "5xx"): 1})
    assert got == want
    assert "# TYPE tusknet_http_responses_total counter" in text


def test_responses_by_class_in_tusknetctl(d):
    make_traffic(d)
    out = ctl(d, "stats")
    assert re.search(r"^http\s+5 2xx, 1 3xx, 4 4xx, 2 5xx$", out, re.M), out
    rows = table(out, "HTTP LISTENER")
    assert rows[0] == ["HTTP LISTENER", "ROUTE", "1XX", "2XX", "3XX", "4XX", "5XX"]
    assert rows[1:] == [
        ["web", "(all)", "0", "3", "1", "4", "1"],
        ["web", "GET /ok", "0", "3", "0", "0", "0"],
        ["web", "GET /missing", "0", "0", "0", "1", "0"],
        ["web", "POST /fail", "0", "0", "0", "0", "1"],
        ["web", "POST /slow", "0", "0", "0", "0", "0"],
        ["web", "GET /old", "0", "0", "1", "0", "0"],
        ["web", "GET /files/*", "0", "0", "0", "0", "0"],
        ["web", "(no route)", "0", "0", "0", "3", "0"],
        ["api", "(all)", "0", "1", "0", "0", "0"],
        ["api", "GET /ok", "0", "1", "0", "0", "0"],
        ["api", "(no route)", "0", "0", "0", "0", "0"],
        ["tiny", "(all)", "0", "1", "0", "0", "1"],
        ["tiny", "GET /ok", "0", "1", "0", "0", "0"],
        ["tiny", "(no route)", "0", "0", "0", "0", "1"],
    ]
    # top: the second frame has per-class rates
    top = ctl(d, "top", "-n", "2", "-d", "0.2")
    lines = re.findall(r"^http\s+(.*)$", top, re.M)
    assert len(lines) == 2, top
    assert lines[0] == "1xx -/s, 2xx -/s, 3xx -/s, 4xx -/s, 5xx -/s"
    assert re.fullmatch(r"1xx 0\.0/s, 2xx 0\.0/s, 3xx 0\.0/s, 4xx 0\.0/s, 5xx 0\.0/s", lines[1]), lines[1]
    assert re.search(r"^process\s+\S+ \S+ resident, \d+ of \d+ descriptors, cpu \d+\.\d%$", top, re.M), top


def test_route_counts_survive_reload(d, tmp_path):
    web = d.port("web")
    for _ in range(2):
        assert http_get(web, "/ok").status == 200
    assert http_get(web, "/missing").status == 404
    assert http_get(web, "/nowhere").status == 404
    # "GET /missing" goes, "GET /new" comes; the others and the listener stay
    text = config(tmp_path, extra_routes='"GET /new": "ok"').replace('"GET /missing": "missing"', "")
    d.write_config(text)
    assert d.ctl("reload")["ok"] is True
    assert http_get(web, "/ok").status == 200
    assert http_get(web, "/new").status == 200
    assert http_get(web, "/missing").status == 404  # now no route
    web_s = d.stats()["listeners"]["web"]
    assert web_s["routes"]["GET /ok"] == {"http_responses": classes(c2=3)}
    assert web_s["routes"]["GET /new"] == {"http_responses": classes(c2=1)}
    assert "GET /missing" not in web_s["routes"]
    assert web_s["unrouted"] == {"http_responses": classes(c4=2)}
    # the listener's own total keeps everything, the removed route included
    assert web_s["http_responses"] == classes(c2=4, c4=3)


def test_route_names_needing_escapes(ctl_daemon, tmp_path):
    """A route whose path holds a quote and a backslash: a JSON key, an
    escaped Prometheus label (promtool accepts it), a table cell."""
    d = ctl_daemon(config(tmp_path, extra_routes="""'GET /we"ird\\path': "ok\""""))
    assert http_get(d.port("web"), "/we%22ird%5Cpath").status == 200
    spec = 'GET /we"ird\\path'
    assert d.stats()["listeners"]["web"]["routes"][spec] == {"http_responses": classes(c2=1)}
    text = d.metrics()
    promtool_check(text)
    assert 'tusknet_http_responses_total{listener="web",route="GET /we\\"ird\\\\path",class="2xx"} 1\n' in text
    rows = table(ctl(d, "stats"), "HTTP LISTENER")
    assert ["web", spec, "0", "1", "0", "0", "0"] in rows


def test_websocket_handshakes_are_1xx(d):
    web = d.port("web")

    async def run():
        for _ in range(2):
            async with websockets.connect(f"ws://127.0.0.1:{web}/ws") as ws:
                await ws.send("x")
                assert await ws.recv() == "x"

    asyncio.run(run())
    assert http_get(web, "/ws").status == 426  # not an upgrade
    s = d.stats()["listeners"]["web"]
    assert s["unrouted"] == {"http_responses": classes(c1=2, c4=1)}
    assert s["http_responses"] == classes(c1=2, c4=1)


# ---- info ---------------------------------------------------------------------------------------


def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    return data[data.rindex(")") + 2:].split()


def btime():
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return int(line.split()[1])
    raise AssertionError("no btime in /proc/stat")


def fd_limit(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft = line.split()[3]
                return soft
    raise AssertionError("no Max open files")


def statm(pid):
    """(virtual, resident) bytes of PID."""
    with open(f"/proc/{pid}/statm") as f:
        vm, rss = f.read().split()[:2]
    return int(vm) * PAGE, int(rss) * PAGE


def between(value, before, after, slack=512 * 1024):
    """VALUE, read between two outside reads BEFORE and AFTER of a figure that
    moves while the daemon answers (an ASan build grows its RSS); the slack
    is for the kernel's RSS counters, which are kept in per-CPU batches and
    read approximately."""
    return min(before, after) - slack <= value <= max(before, after) + slack


def iso_seconds(s):
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", s), s
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def test_info(d, tmp_path):
    pid = d.pid
    with LineClient(d.port("lines")) as line, HttpConn(d.port("web")) as http, d.client() as c:
        assert line.request("hi") == "hi"
        assert http.exchange("GET", "/ok").status == 200

        async def with_ws():
            async with websockets.connect(f"ws://127.0.0.1:{d.port('web')}/ws") as ws:
                await ws.send("x")
                assert await ws.recv() == "x"
                cpu_before = sum(int(x) for x in proc_stat(pid)[11:13]) / CLK_TCK
                rss_before = statm(pid)[1]
                info = c.command("info")
                # the same moment, seen from outside: this control connection is still open
                fds = len(os.listdir(f"/proc/{pid}/fd"))
                rss = (rss_before, statm(pid)[1])
                cpu_after = sum(int(x) for x in proc_stat(pid)[11:13]) / CLK_TCK
                return info, fds, rss, cpu_before, cpu_after

        info, fds, rss, cpu_before, cpu_after = asyncio.run(with_ws())
    assert info["pid"] == pid
    assert info["open_fds"] == fds
    assert str(info["max_fds"]) == fd_limit(pid)
    assert between(info["rss_bytes"], *rss), (info["rss_bytes"], rss)
    # /proc truncates user and system time to ticks each
    assert cpu_before <= info["cpu_seconds"] <= cpu_after + 2 / CLK_TCK
    assert info["connections"] == {"tcp": 1, "http": 1, "ws": 1}
    assert info["config"] == str(d.config_path.resolve())
    assert info["version"] == subprocess.run([TUSKNETD, "-V"], capture_output=True, text=True).stdout.split()[-1]
    start = btime() + int(proc_stat(pid)[19]) / CLK_TCK
    assert abs(iso_seconds(info["started"]) - start) < 2
    assert info["uptime_seconds"] > 0
    assert info["reloads"] == info["reloads_ok"] == info["reloads_refused"] == 0
    assert info["last_reload"] is None
    b = info["build"]
    assert set(b) == {"git", "date", "compiler", "libevent", "openssl", "libwebsockets"}
    assert re.fullmatch(r"[0-9a-f]{7,40}(-dirty)?|v?\d[\w.-]*", b["git"]), b
    # baked in when the binary was built
    assert abs(iso_seconds(b["date"]) - os.stat(TUSKNETD).st_mtime) < 600, (b["date"], TUSKNETD)
    assert b["openssl"] == subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.split()[1]
    pkg = lambda name: subprocess.run(["pkg-config", "--modversion", name], capture_output=True,  # noqa: E731
                                      text=True).stdout.strip()
    assert b["libevent"] == pkg("libevent")
    assert b["libwebsockets"].startswith(pkg("libwebsockets"))
    if b["compiler"].startswith("gcc "):
        gcc = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
        assert b["compiler"] == f"gcc {gcc}"
    # the same object inside stats
    s = d.stats()
    assert set(s["info"]) == set(info)
    assert s["info"]["pid"] == pid and s["info"]["build"] == b


def test_process_metrics(d):
    pid = d.pid
    with d.client() as c:
        vm_before, rss_before = statm(pid)
        text = c.metrics()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        vm_after, rss_after = statm(pid)
    promtool_check(text)
    m = parse_prometheus(text)
    assert sample(m, "process_open_fds") == fds
    assert str(int(sample(m, "process_max_fds"))) == fd_limit(pid)
    start = btime() + int(proc_stat(pid)[19]) / CLK_TCK
    assert abs(sample(m, "process_start_time_seconds") - start) < 0.006
    assert between(sample(m, "process_resident_memory_bytes"), rss_before, rss_after)
    assert between(sample(m, "process_virtual_memory_bytes"), vm_before, vm_after)
    assert sample(m, "process_cpu_seconds_total") <= sum(int(x) for x in proc_stat(pid)[11:13]) / CLK_TCK + 2 / CLK_TCK
    info = d.ctl("info")
    builds = [(dict(ls), v) for (n, ls), v in m.items() if n == "tusknet_build_info"]
    assert builds == [({"version": info["version"], "revision": info["build"]["git"],
                        "build_date": info["build"]["date"], "libevent": info["build"]["libevent"],
                        "openssl": info["build"]["openssl"], "libwebsockets": info["build"]["libwebsockets"]},
                       1.0)]
    for fam, typ in (("process_cpu_seconds_total", "counter"), ("process_open_fds", "gauge"),
                     ("process_max_fds", "gauge"), ("process_resident_memory_bytes", "gauge"),
                     ("process_start_time_seconds", "gauge"), ("tusknet_build_info", "gauge")):
        assert f"# TYPE {fam} {typ}\n" in text, fam


def test_info_in_tusknetctl(d):
    out = ctl(d, "info")
    info = d.ctl("info")
    b = info["build"]
    assert out.splitlines()[0] == f"tusknetd {info['version']}, pid {info['pid']}"
    assert re.search(rf"^build\s+{re.escape(b['git'])}, {re.escape(b['date'])}, {re.escape(b['compiler'])}$",
                     out, re.M), out
    assert re.search(rf"^libraries\s+libevent {re.escape(b['libevent'])}, OpenSSL {re.escape(b['openssl'])}, "
                     rf"libwebsockets {re.escape(b['libwebsockets'])}$", out, re.M), out
    assert re.search(rf"^config\s+{re.escape(info['config'])}$", out, re.M), out
    assert re.search(r"^reloads\s+0: 0 ok, 0 refused$", out, re.M), out
    assert "last reload" not in out
    assert re.search(r"^descriptors\s+\d+ open, limit " + fd_limit(d.pid) + "$", out, re.M), out
    assert re.search(r"^connections\s+0 tcp, 0 http, 0 ws$", out, re.M), out
    j = json.loads(ctl(d, "--json", "info"))
    assert j["pid"] == d.pid


# ---- reloads --------------------------------------------------------------------------------------


def test_reload_counts(d, tmp_path):
    good = config(tmp_path)
    assert d.ctl("reload")["ok"] is True
    d.write_raw_config(d.render(good).replace('type: "echo"', 'type: "ecco"'))
    ans = d.ctl("reload")
    assert ans["ok"] is False
    d.write_config(good)
    d.reload_signal()  # the second ok one, by SIGHUP
    s = d.stats()
    assert (s["reloads"], s["reloads_ok"], s["reloads_refused"]) == (3, 2, 1)
    info = d.ctl("info")
    assert (info["reloads"], info["reloads_ok"], info["reloads_refused"]) == (3, 2, 1)
    assert info["last_reload"]["outcome"] == "ok"
    assert info["last_reload"]["message"] == "4 listener(s), 7 handler(s)"
    assert abs(iso_seconds(info["last_reload"]["time"]) - time.time()) < 30
    m = parse_prometheus(d.metrics())
    assert sample(m, "tusknet_reloads_total", outcome="ok") == 2
    assert sample(m, "tusknet_reloads_total", outcome="refused") == 1
    assert sample(m, "tusknet_last_reload_successful") == 1
    assert abs(sample(m, "tusknet_last_reload_timestamp_seconds") - iso_seconds(info["last_reload"]["time"])) < 0.002
    out = ctl(d, "stats")
    assert re.match(r"tusknetd \S+, up [^,]+, reloads: 2 ok, 1 refused\n", out), out
    assert re.search(r"^reloads\s+3: 2 ok, 1 refused$", ctl(d, "info"), re.M)

    # a refused one last: its errors are the message
    d.write_raw_config(d.render(good).replace('type: "echo"', 'type: "ecco"'))
    err = d.ctl("reload")["error"]
    info = d.ctl("info")
    assert info["last_reload"]["outcome"] == "refused"
    assert info["last_reload"]["message"] == err and "ecco" in err
    assert sample(parse_prometheus(d.metrics()), "tusknet_last_reload_successful") == 0
    assert re.search(r"^last reload\s+\S+, refused: .*ecco", ctl(d, "info"), re.M)
    d.write_config(good)
    assert ctl(d, "reload") == "ok: configuration reloaded (reloads so far: 3 ok, 2 refused)\n"


# ---- WebSocket log lines and the connections table ---------------------------------------------


def test_websocket_open_close_logged(d):
    web = d.port("web")
    opened = r"websocket (\d+) opened: web /ws from (127\.0\.0\.1:\d+)"

    async def run():
        # 1. the peer closes with 4001
        async with websockets.connect(f"ws://127.0.0.1:{web}/ws") as ws:
            local = "%s:%d" % ws.transport.get_extra_info("sockname")[:2]
            await ws.send("one")
            assert await ws.recv() == "one"
            await ws.send("two")
            assert await ws.recv() == "two"
            out = ctl(d, "connections", "web")
            rows = table(out, "ID")
            col = rows[0].index("PATH")
            assert [r[col] for r in rows[1:] if r[2] == "ws"] == ["/ws"]
            assert [r[col] for r in rows[1:] if r[2] != "ws"] == ["-"] * (len(rows) - 2)
            await ws.close(code=4001, reason="done")
        # 2. the operator closes: 1000 from the server
        ws = await websockets.connect(f"ws://127.0.0.1:{web}/ws")
        cid = [c["id"] for c in d.ctl("connections web")["connections"] if c["protocol"] == "ws"]
        assert len(cid) == 1
        assert d.ctl(f"close {cid[0]}") == {"ok": True}
        with pytest.raises(websockets.ConnectionClosed) as e:
            await ws.recv()
        assert e.value.code == 1000
        # 3. a message over max_message: 1009 from the server
        ws = await websockets.connect(f"ws://127.0.0.1:{web}/ws")
        await ws.send("x" * 2000)
        with pytest.raises(websockets.ConnectionClosed) as e:
            await ws.recv()
        assert e.value.code == 1009
        # 4. the client vanishes: no close frame
        ws = await websockets.connect(f"ws://127.0.0.1:{web}/ws")
        ws.transport.abort()
        return local, cid[0]

    local, closed_id = asyncio.run(run())
    wait_for(lambda: len(re.findall(r"websocket \d+ closed:", d.log())) == 4, 5, what="four close lines")
    log = d.log()
    opens = re.findall(opened, log)
    assert len(opens) == 4, log
    first = opens[0][0]
    assert opens[0][1] == local
    assert re.search(rf"\[info\] websocket {first} closed: web /ws from {re.escape(local)}, code 4001 by the peer, "
                     r"\d+\.\d{3} s, 2 message\(s\) in, 2 out$", log, re.M), log
    assert re.search(rf"\[info\] websocket {closed_id} closed: web /ws from 127\.0\.0\.1:\d+, code 1000 by the server "
                     r"\(closed by the operator\), \d+\.\d{3} s, 0 message\(s\) in, 0 out$", log, re.M), log
    assert re.search(r"\[info\] websocket \d+ closed: web /ws from 127\.0\.0\.1:\d+, code 1009 by the server "
                     r"\(message too large\), \d+\.\d{3} s, 0 message\(s\) in, 0 out$", log, re.M), log
    assert re.search(r"\[info\] websocket \d+ closed: web /ws from 127\.0\.0\.1:\d+, code 1006 without a close "
                     r"frame, \d+\.\d{3} s, 0 message\(s\) in, 0 out$", log, re.M), log


# ---- access log ----------------------------------------------------------------------------------


COMBINED = re.compile(r'^127\.0\.0\.1 - - \[[^]]+\] "(?P<req>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) "[^"]*" "[^"]*"$')


def log_lines(path, n):
    return wait_for(lambda: (lambda ls: ls if len(ls) >= n else None)(
        [ln for ln in path.read_text().splitlines() if ln] if path.exists() else []), 5, what=f"{n} lines in {path}")


def test_access_log_body_bytes_and_request_time(d, tmp_path):
    web = d.port("web")
    resps = []
    with HttpConn(web) as c:
        resps.append(("GET /ok HTTP/1.1", c.exchange("GET", "/ok")))
        resps.append(("GET /files/big.bin HTTP/1.1", c.exchange("GET", "/files/big.bin")))  # sendfile
        resps.append(("GET /nowhere HTTP/1.1", c.exchange("GET", "/nowhere")))
        resps.append(("POST /slow HTTP/1.1", c.exchange("POST", "/slow", body=b"")))
        c.request("HEAD", "/ok")
        head = c.read_response(head=True)
        resps.append(("HEAD /ok HTTP/1.1", head))
    assert [r.status for _, r in resps] == [200, 200, 404, 200, 200]
    assert resps[1][1].body == bytes(range(256)) * 40
    lines = log_lines(tmp_path / "access.log", len(resps))
    for line, (req, resp) in zip(lines, resps):
        m = COMBINED.match(line)
        assert m and m["req"] == req and int(m["status"]) == resp.status, line
        want = 0 if req.startswith("HEAD") else int(resp.header("Content-Length"))
        assert int(m["bytes"]) == want == len(resp.body), (line, resp)
    assert int(resps[4][1].header("Content-Length")) == 5  # HEAD: the length of the body not sent
    jl = log_lines(tmp_path / "access.json", len(resps))
    for line, (req, resp) in zip(jl, resps):
        assert re.search(r'"request_time":\d+\.\d{6}[,}]', line), line
        obj = json.loads(line)
        assert obj["bytes"] == len(resp.body) and obj["status"] == resp.status, line
        assert "duration_ms" not in obj
    assert json.loads(jl[3])["request_time"] >= 0.2  # the exec handler sleeps 0.2 s


def test_access_log_body_bytes_hostile(d, tmp_path):
    """A request with a body it does not need, a bad request and a
    pipelined pair: each line counts only the body sent."""
    web = d.port("web")
    with socket.create_connection(("127.0.0.1", web), timeout=5) as s:
        s.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                  b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b"no such thing"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    assert raw_exchange(web, b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n")[0].status == 400
    lines = log_lines(tmp_path / "access.log", 3)
    got = [(COMBINED.match(ln)["status"], int(COMBINED.match(ln)["bytes"])) for ln in lines]
    assert got == [("200", 5), ("404", 13), ("400", len("Bad Request\n"))], lines


def test_no_http_lines_without_http_listeners(ctl_daemon):
    d = ctl_daemon('[handlers]\necho { type: "echo" }\n[listeners]\n'
                   'lines { protocol: "tcp" listen: "127.0.0.1:0" handler: "echo" }\n')
    with LineClient(d.port("lines")) as c:
        assert c.request("hi") == "hi"
        assert d.ctl("info")["connections"] == {"tcp": 1, "http": 0, "ws": 0}
    out = ctl(d, "stats")
    assert not re.search(r"^http ", out, re.M) and "HTTP LISTENER" not in out, out
    assert re.search(r"^process\s+pid \d+, ", out, re.M), out
    top = ctl(d, "top", "-n", "1")
    assert not re.search(r"^http ", top, re.M), top
    assert d.stats()["global"]["http_responses"] == classes()


def test_access_log_streamed_body(ctl_daemon, tmp_path):
    """A large text file compressed while it is sent (chunked; HTTP/1.0: up
    to the close): the log counts the compressed bytes, not the framing."""
    www = tmp_path / "www"
    www.mkdir()
    text = "".join(f"line {i:06d} of a text file that compresses well\n" for i in range(5000)).encode()
    (www / "big.txt").write_bytes(text)
    d = ctl_daemon(f"""
[handlers]
files {{ type: "file" root: "{www}" }}
[middleware]
alog {{ type: "access_log" file: "{tmp_path / 'a.log'}" format: "combined" }}
gz   {{ type: "gzip" }}
[listeners]
web {{ protocol: "http" listen: "127.0.0.1:0" middleware: ["alog", "gz"] routes {{ "GET /*": "files" }} }}
""")
    port = d.port("web")
    with HttpConn(port) as c:
        r11 = c.exchange("GET", "/big.txt", headers={"Accept-Encoding": "gzip"})
    assert r11.header("Transfer-Encoding") == "chunked" and r11.header("Content-Encoding") == "gzip", r11
    assert gzip.decompress(r11.body) == text
    with HttpConn(port) as c:
        r10 = c.exchange("GET", "/big.txt", headers={"Accept-Encoding": "gzip"}, version="HTTP/1.0")
    assert not r10.has("Content-Length") and gzip.decompress(r10.body) == text, r10
    lines = log_lines(tmp_path / "a.log", 2)
    got = [(COMBINED.match(ln)["req"], int(COMBINED.match(ln)["bytes"])) for ln in lines]
    assert got == [("GET /big.txt HTTP/1.1", len(r11.body)), ("GET /big.txt HTTP/1.0", len(r10.body))], lines
