# SPDX-License-Identifier: MIT
"""`plugin` handlers: the C ABI of include/tusknet/plugin.h.

The probe plugin (tests/integration/plugins/probe.c) is compiled here from the
header `make install DESTDIR=... PREFIX=/usr` installed, found through
pkg-config's tusknet-plugin.pc alone (no project directory on the include
path). Over real TCP, UDP, HTTP and WebSocket clients: sync, silent, error
and async replies, cancellation when the client goes, per-connection state,
the message context, counters in `stats` and Prometheus, `-t` refusing an
ABI mismatch or a missing symbol at the handler's position, init failures
refusing the start and a reload, and a reload swapping the object (same
path, new file) under traffic without a failed request while the old
instance finishes its call. The example plugins built by make: ticker
pushing to a WebSocket, kv over the four protocols with its expiry and its
bounds, minimal."""
import asyncio
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
import websockets

from ctl_util import TUSKNETD, ctl_daemon, parse_prometheus, sample, wait_for  # noqa: F401
from daemon_util import REPO_ROOT, LineClient, UdpClient, check_config, daemon  # noqa: F401
from http_util import http_get

PROBE_SRC = Path(__file__).resolve().parent / "plugins" / "probe.c"
EXAMPLES = Path(TUSKNETD).resolve().parent / "plugins"


def make_env():
    return {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`make install DESTDIR PREFIX=/usr` into a temporary root; its pkg-config directory."""
    if not shutil.which("make") or not shutil.which("pkg-config"):
        pytest.skip("make and pkg-config are needed")
    root = tmp_path_factory.mktemp("root")
    r = subprocess.run(["make", "-s", "-C", str(REPO_ROOT), "install", f"DESTDIR={root}", "PREFIX=/usr"],
                       capture_output=True, text=True, timeout=900, env=make_env())
    assert r.returncode == 0, r.stdout + r.stderr
    return root


def build(installed, out, *defines):
    """Compiles probe.c into OUT with the installed header, through pkg-config only."""
    env = dict(os.environ, PKG_CONFIG_PATH=str(installed / "usr/share/pkgconfig"))
    flags = subprocess.run(["pkg-config", "--define-prefix", "--cflags", "tusknet-plugin"], capture_output=True,
                           text=True, env=env, check=True).stdout.split()
    libs = subprocess.run(["pkg-config", "--libs", "libevent"], capture_output=True, text=True, check=True).stdout.split()
    assert flags == [f"-I{installed}/usr/include"]
    tmp = Path(str(out) + ".build")
    subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", *flags,
                    *[f"-D{d}" for d in defines], str(PROBE_SRC), *libs, "-o", str(tmp)], check=True, timeout=120)
    os.replace(tmp, out)  # a new file (inode) at OUT, as an install would put it
    return out


@pytest.fixture
def probe(installed, tmp_path):
    return build(installed, tmp_path / "probe.so")


def probe_config(path, extra_options="", listeners=None):
    return f"""
[daemon]
log_level: "debug"
shutdown_timeout: "3s"

[handlers]
probe {{ type: "plugin"  path: "{path}"  options {{ greeting: "hi" {extra_options} }} }}

[listeners]
""" + (listeners or """
lines { protocol: "tcp"  listen: "127.0.0.1:0"  handler: "probe" }
dgram { protocol: "udp"  listen: "127.0.0.1:0"  handler: "probe" }
web   { protocol: "http" listen: "127.0.0.1:0"  routes { "* /p/*": "probe" }  websocket { "/ws": "probe" } }
""")


def handler_stats(d, name="probe"):
    return d.stats()["handlers"][name]


def ws_exchange(port, path, messages, extra=0):
    """Sends each of MESSAGES over one WebSocket and reads a message after
    each, plus EXTRA more; returns the texts."""
    async def run():
        got = []
        async with websockets.connect(f"ws://127.0.0.1:{port}{path}") as ws:
            for m in messages:
                await ws.send(m)
                got.append(await asyncio.wait_for(ws.recv(), 5))
            for _ in range(extra):
                got.append(await asyncio.wait_for(ws.recv(), 5))
        return got
    return asyncio.run(run())


# ---- the installed ABI -----------------------------------------------------------------


def test_install_puts_the_header_and_pc(installed):
    header = installed / "usr/include/tusknet/plugin.h"
    assert header.read_bytes() == (REPO_ROOT / "include/tusknet/plugin.h").read_bytes()
    assert header.stat().st_mode & 0o777 == 0o644
    pc = (installed / "usr/share/pkgconfig/tusknet-plugin.pc").read_text()
    assert "prefix=/usr\n" in pc and "Cflags: -I${includedir}\n" in pc
    # the header stands alone: standard headers only
    includes = re.findall(r"^#include (.*)$", header.read_text(), re.M)
    assert includes == ["<stddef.h>", "<stdint.h>"]


# ---- replies -------------------------------------------------------------------------------


def test_sync_silent_error_and_async_replies_over_tcp(ctl_daemon, probe):
    d = ctl_daemon(probe_config(probe))
    with LineClient(d.port("lines")) as c:
        assert c.request("sync hello there") == "hello there"
        assert c.request("fail boom") == "Error: boom"
        c.sendline("silent")
        assert c.request("sync after silent") == "after silent"
        assert c.request("later 100 async reply") == "async reply"
        # pipelined: the async reply keeps its place
        c.send("later 300 first\nsync second\nlater 50 third\n")
        assert c.readlines(3) == ["first", "second", "third"]
        assert c.request("nonsense") == "Error: unknown probe"
        # a plugin breaking the protocol of handle()
        assert c.request("badlater") == "Error: plugin answered later without a handle"
        assert c.request("undecided") == "now after all"
    st = handler_stats(d)
    assert st["type"] == "plugin"
    assert st["calls"] == 11 and st["errors"] == 3 and st["in_flight"] == 0
    assert d.wait_log(r"handler probe: probe v1 up, greeting 'hi'")


def test_udp_and_context(ctl_daemon, probe):
    d = ctl_daemon(probe_config(probe))
    with UdpClient(d.port("dgram")) as u:
        assert u.request("sync over udp") == b"over udp"
        assert u.request("later 50 udp later") == b"udp later"
        assert u.request("ctx") == f"listener=dgram protocol=1 conn=0 remote={u.local_addr()}".encode()
        assert u.request("count") == b"-1"  # no connection, no per-connection state
    with LineClient(d.port("lines")) as c:
        conn = d.connection_of(c.local_addr())["id"]
        assert c.request("ctx") == f"listener=lines protocol=0 conn={conn} remote={c.local_addr()}"


def test_http_replies_status_and_context(ctl_daemon, probe):
    d = ctl_daemon(probe_config(probe))
    web = d.port("web")
    r = http_get(web, "/p/x?a=1&b=%20", method="POST", body=b"ctx", headers={"X-Probe": "yes"})
    assert r.status == 200
    assert re.fullmatch(rf"listener=web protocol=2 conn=\d+ remote=127\.0\.0\.1:\d+ method=POST path=/p/x "
                        rf"query=a=1&b=%20 x-probe=yes headers=\d+", r.text), r.text
    r = http_get(web, "/p/", method="POST", body=b"headers", headers=[("X-A", "1"), ("x-b", "two words")])
    assert (r.status, r.text) == (200, f"Host=127.0.0.1:{web}; X-A=1; x-b=two words; Content-Length=7")
    r = http_get(web, "/p/", method="POST", body=b"status 418 short and stout")
    assert (r.status, r.text, r.header("X-Probe-Reply")) == (418, "short and stout", "yes")
    r = http_get(web, "/p/", method="POST", body=b"fail broken")
    assert (r.status, r.text) == (500, "Error: broken\n")
    r = http_get(web, "/p/", method="POST", body=b"silent")
    assert (r.status, r.body) == (204, b"")
    r = http_get(web, "/p/", method="POST", body=b"later 100 late body")
    assert (r.status, r.text) == (200, "late body")


def test_websocket_replies_and_state(ctl_daemon, probe):
    d = ctl_daemon(probe_config(probe))
    got = ws_exchange(d.port("web"), "/ws", ["sync ws", "later 50 ws later", "count", "count"])
    assert got == ["ws", "ws later", "3", "4"]


# ---- cancellation, sessions, counters --------------------------------------------------------


def reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_cancellation_when_the_client_goes(ctl_daemon, probe):
    d = ctl_daemon(probe_config(probe))
    c = LineClient(d.port("lines"))
    c.sendline("later 5000 never")
    wait_for(lambda: handler_stats(d)["in_flight"] == 1, what="the call in flight")
    reset(c.sock)  # a FIN alone is a half-close: the reply is still owed
    assert d.wait_log(r"handler probe: call cancelled")
    st = wait_for(lambda: (lambda s: s if s["in_flight"] == 0 else None)(handler_stats(d)), what="in_flight 0")
    assert st["counters"]["cancelled"] == 1
    # over HTTP too
    s = socket.create_connection(("127.0.0.1", d.port("web")))
    s.sendall(b"POST /p/ HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\nlater 5000 gone")
    wait_for(lambda: handler_stats(d)["in_flight"] == 1, what="the HTTP call in flight")
    reset(s)
    st = wait_for(lambda: (lambda s: s if s["in_flight"] == 0 else None)(handler_stats(d)), what="in_flight 0")
    assert st["counters"]["cancelled"] == 2

    async def ws_gone():
        async with websockets.connect(f"ws://127.0.0.1:{d.port('web')}/ws") as ws:
            await ws.send("later 5000 unseen")
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: wait_for(lambda: handler_stats(d)["in_flight"] == 1, what="the WebSocket call"))
    asyncio.run(ws_gone())
    st = wait_for(lambda: (lambda s: s if s["in_flight"] == 0 else None)(handler_stats(d)), what="in_flight 0")
    assert st["counters"]["cancelled"] == 3


def test_per_connection_state_and_counters(ctl_daemon, probe):
    d = ctl_daemon(probe_config(probe))
    a, b = LineClient(d.port("lines")), LineClient(d.port("lines"))
    try:
        assert [a.request("count") for _ in range(3)] == ["1", "2", "3"]
        assert b.request("count") == "1"
        assert a.request("count") == "4"
        st = handler_stats(d)
        assert st["counters"] == {"calls": 5, "cancelled": 0, "sessions": 2}
        text = d.metrics()
        samples = parse_prometheus(text)
        for counter, value in (("calls", 5), ("cancelled", 0), ("sessions", 2)):
            key = ("tusknet_plugin_value", frozenset({"handler": "probe", "name": counter}.items()))
            assert samples[key] == value
        assert sample(samples, "tusknet_handler_calls_total", handler="probe", type="plugin") == 5
        assert "# TYPE tusknet_plugin_value gauge\n" in text
        promtool = shutil.which("promtool")  # Debian's prometheus package (DEB_TEST)
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert (check.returncode, check.stdout + check.stderr) == (0, ""), text
        ida = d.connection_of(a.local_addr())["id"]
    finally:
        a.close()
        b.close()
    assert d.wait_log(rf"handler probe: detach {ida} after 4")
    wait_for(lambda: handler_stats(d)["counters"]["sessions"] == 0, what="both sessions detached")


def test_timer_plugin_pushes_to_a_websocket(ctl_daemon):
    d = ctl_daemon(f"""
[handlers]
tick {{ type: "plugin"  path: "{EXAMPLES / 'ticker.so'}"  options {{ interval_ms: "50" }} }}
[listeners]
web {{ protocol: "http" listen: "127.0.0.1:0"  websocket {{ "/tick": "tick" }} }}
dgram {{ protocol: "udp" listen: "127.0.0.1:0"  handler: "tick" }}
""")
    got = ws_exchange(d.port("web"), "/tick", ["hello"], extra=3)
    assert got[0] == "subscribed"
    ticks = [int(m.split()[1]) for m in got[1:]]
    assert [m.split()[0] for m in got[1:]] == ["tick"] * 3
    assert ticks == [ticks[0], ticks[0] + 1, ticks[0] + 2]
    with UdpClient(d.port("dgram")) as u:
        assert u.request("hello") == b"Error: needs a connection"


# ---- loading: -t, the start, reloads -------------------------------------------------------


def test_abi_mismatch_and_missing_symbol_refused_by_t(installed, tmp_path, daemon):
    bad = build(installed, tmp_path / "abi99.so", "PROBE_ABI=99")
    nosym = build(installed, tmp_path / "nosym.so", "PROBE_NO_SYMBOL")
    undef = build(installed, tmp_path / "undef.so", "PROBE_UNDEF")
    notelf = tmp_path / "text.so"
    notelf.write_text("not a shared object\n" * 20)
    for path, why in ((bad, "plugin ABI version 99, this tusknetd has 1"),
                      (nosym, "no symbol 'tn_plugin' (not a tusknetd plugin)"),
                      (undef, "cannot load it: undefined symbol: tn_no_such_function"),
                      (notelf, "cannot load it: invalid ELF header"),
                      (tmp_path / "missing.so", "No such file or directory")):
        text = f"""[daemon]
control_socket: ""
[handlers]
echo {{ type: "echo" }}
  p {{ type: "plugin" path: "{path}" }}
[listeners]
l {{ protocol: "tcp" listen: "127.0.0.1:0" handler: "p" }}
"""
        rc, out = check_config(text, tmp_path)
        assert rc == 1, out
        assert f"{tmp_path}/check.conf:5:3: handler 'p': plugin '{path}': {why}" in out, out
        # the start refuses with the same line
        conf = tmp_path / "start.conf"
        conf.write_text(text)
        r = subprocess.run([TUSKNETD, "-c", str(conf)], capture_output=True, text=True, timeout=10)
        assert r.returncode == 1 and f"{conf}:5:3: handler 'p': plugin '{path}': {why}" in r.stderr, r.stderr


def test_init_failure_refuses_start_and_reload(ctl_daemon, probe, installed, tmp_path):
    text = probe_config(probe, 'fail_init: "no database at db.example"')
    conf = tmp_path / "fail.conf"
    conf.write_text(text.replace('log_level: "debug"', 'control_socket: ""'))
    r = subprocess.run([TUSKNETD, "-c", str(conf)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert f"handler 'probe': plugin '{probe}': init failed: no database at db.example" in r.stderr, r.stderr
    d = ctl_daemon(probe_config(probe))
    with LineClient(d.port("lines")) as c:
        assert c.request("version") == "v1"
        d.write_config(text)
        ans = d.ctl("reload")
        assert not ans["ok"]
        assert f"handler 'probe': plugin '{probe}': init failed: no database at db.example" in ans["error"]
        assert c.request("sync still serving") == "still serving"
        # a file replaced by one of another ABI version: refused, the loaded one serves on
        d.write_config(probe_config(probe))
        build(installed, probe, "PROBE_ABI=2")
        ans = d.ctl("reload")
        assert not ans["ok"]
        assert f"handler 'probe': plugin '{probe}': plugin ABI version 2, this tusknetd has 1" in ans["error"]
        assert c.request("version") == "v1"
    assert handler_stats(d)["counters"]["calls"] == 3  # the same instance


def test_reload_keeps_an_unchanged_plugin_and_rebuilds_a_changed_one(ctl_daemon, probe, installed):
    d = ctl_daemon(probe_config(probe))
    with LineClient(d.port("lines")) as c:
        assert c.request("sync a") == "a"
        assert d.ctl("reload")["ok"]
        assert handler_stats(d)["counters"]["calls"] == 1  # same file, same options: kept
        assert len(re.findall(r"probe v1 up", d.log())) == 1
        d.write_config(probe_config(probe, 'other: "x"'))
        assert d.ctl("reload")["ok"]
        assert c.request("sync b") == "b"
        assert handler_stats(d)["counters"]["calls"] == 1  # a new instance
        assert len(re.findall(r"probe v1 up", d.log())) == 2


def test_reload_swaps_the_object_under_traffic(ctl_daemon, probe, installed):
    """v2 replaces v1 at the same path; clients on kept and new connections
    never see a failure, the call in flight on v1 completes from v1, and v1
    is destroyed once its last call and session are done."""
    d = ctl_daemon(probe_config(probe))
    port = d.port("lines")
    stop = threading.Event()
    results, errors = [], []

    def traffic(fresh):
        seen = []
        try:
            c = LineClient(port)
            while not stop.is_set():
                if fresh:
                    c.close()
                    c = LineClient(port)
                seen.append(c.request("version"))
            c.close()
        except Exception as e:  # noqa: BLE001 - any failure is what the test counts
            errors.append(repr(e))
        results.append(seen)

    pinned = LineClient(port)
    assert pinned.request("count") == "1"  # attached to v1
    slow = LineClient(port)
    slow.sendline("later 1500 from v1")
    wait_for(lambda: handler_stats(d)["in_flight"] == 1, what="the slow call")
    threads = [threading.Thread(target=traffic, args=(i % 2 == 1,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        build(installed, probe, 'VERSION="v2"')
        assert d.ctl("reload")["ok"]
        wait_for(lambda: LineClient(port).request("version") == "v2", what="v2 serving")
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []
    assert len(results) == 4
    for seen in results:
        assert seen and set(seen) <= {"v1", "v2"}
        # each client switches once, from v1 to v2
        assert seen == ["v1"] * seen.count("v1") + ["v2"] * seen.count("v2"), seen
        assert seen[-1] == "v2"
    assert sum(len(s) for s in results) == sum(s.count("v1") + s.count("v2") for s in results)
    assert slow.readline() == "from v1"
    assert pinned.request("version") == "v2"  # new messages go to the new instance
    assert "probe v1 destroyed" not in d.log()  # the pinned session still holds v1
    pinned.close()
    slow.close()
    assert d.wait_log(r"handler probe: probe v1 destroyed", timeout=5)
    assert "probe v2 destroyed" not in d.log()


# ---- the example plugins -----------------------------------------------------------------


KV_CONFIG = f"""
[handlers]
kv {{ type: "plugin"  path: "{EXAMPLES / 'kv.so'}"  options {{ max_key: "32"  max_value: "64"  max_keys: "50" }} }}
small {{ type: "plugin"  path: "{EXAMPLES / 'kv.so'}"  options {{ max_bytes: "100" }} }}
mini {{ type: "plugin"  path: "{EXAMPLES / 'minimal.so'}" }}
pong {{ type: "plugin"  path: "{EXAMPLES / 'minimal.so'}"  options {{ reply: "+PONG" }} }}
[listeners]
lines {{ protocol: "tcp"  listen: "127.0.0.1:0"  handler: "kv" }}
dgram {{ protocol: "udp"  listen: "127.0.0.1:0"  handler: "kv" }}
web   {{ protocol: "http" listen: "127.0.0.1:0"  routes {{ "* /kv/*": "kv" }}  websocket {{ "/kv": "kv" }} }}
mini  {{ protocol: "tcp"  listen: "127.0.0.1:0"  handlers: ["mini", "pong", "small"] }}
"""


def test_kv_over_the_four_protocols(ctl_daemon):
    d = ctl_daemon(KV_CONFIG)
    web = d.port("web")
    with LineClient(d.port("lines")) as c:
        assert c.request("SET user:1 alice") == "OK"
        assert c.request("get user:1") == "alice"
        assert c.request("INCR hits") == "1"
        assert c.request("INCR hits") == "2"
        assert c.request("DEL nothing") == "0"
        assert c.request("GET nothing") == "Error: no such key"
    with UdpClient(d.port("dgram")) as u:
        assert u.request("GET user:1") == b"alice"
        assert u.request("SET user:2 bob") == b"OK"
        assert u.request("INCR hits\n") == b"3"
    assert ws_exchange(web, "/kv", ["GET user:2", "SET user:3 carol", "INCR hits", "KEYS user:"]) == \
        ["bob", "OK", "4", "user:1 user:2 user:3"]
    r = http_get(web, "/kv/user:3")
    assert (r.status, r.text) == (200, "carol")
    r = http_get(web, "/kv/page", method="PUT", body=b"<p>hello world</p>\n")
    assert (r.status, r.text) == (200, "OK")
    r = http_get(web, "/kv/hits", method="POST")
    assert (r.status, r.text) == (200, "5")
    r = http_get(web, "/kv/?prefix=user")
    assert (r.status, r.text) == (200, "user:1 user:2 user:3")
    r = http_get(web, "/kv/user:1", method="DELETE")
    assert (r.status, r.text) == (200, "1")
    r = http_get(web, "/kv/user:1")
    assert (r.status, r.text) == (404, "Error: no such key\n")
    with LineClient(d.port("lines")) as c:
        assert c.request("GET page") == "<p>hello world</p> "  # a line reply's newline becomes a space
        assert c.request("KEYS") == "hits page user:2 user:3"
    assert handler_stats(d, "kv")["counters"] == {"keys": 4, "expired": 0}


def test_kv_expiry_on_loop_timers(ctl_daemon):
    d = ctl_daemon(KV_CONFIG)
    web = d.port("web")
    with LineClient(d.port("lines")) as c:
        assert c.request("SET short v EX 1") == "OK"
        assert c.request("SET kept v EX 1") == "OK"
        assert c.request("SET kept w") == "OK"  # SET without EX drops the expiry
        assert c.request("SET counter 10 EX 1") == "OK"
        assert c.request("INCR counter") == "11"  # INCR keeps it
        assert http_get(web, "/kv/web?ex=1", method="PUT", body=b"x").status == 200
        assert c.request("GET short") == "v"
        wait_for(lambda: c.request("GET short") == "Error: no such key", timeout=5, what="short to expire")
        wait_for(lambda: c.request("GET counter") == "Error: no such key", timeout=5, what="counter to expire")
        wait_for(lambda: c.request("GET web") == "Error: no such key", timeout=5, what="web to expire")
        assert c.request("GET kept") == "w"
        assert c.request("KEYS") == "kept"
    assert handler_stats(d, "kv")["counters"] == {"keys": 1, "expired": 3}


def test_kv_bounds_and_malformed_commands(ctl_daemon):
    d = ctl_daemon(KV_CONFIG)
    web = d.port("web")
    with LineClient(d.port("lines")) as c:
        for line, want in (("SET " + "k" * 33 + " v", "Error: key too long"),
                           ("GET " + "k" * 5000, "Error: key too long"),
                           ("SET k " + "v" * 65, "Error: value too long"),
                           ("", "Error: empty command"),
                           ("   ", "Error: empty command"),
                           ("SET", "Error: wrong number of arguments"),
                           ("SET k", "Error: wrong number of arguments"),
                           ("SET k v EX", "Error: wrong number of arguments"),
                           ("SET k v EX -1", "Error: syntax: SET key value [EX seconds]"),
                           ("SET k v EX 1x", "Error: syntax: SET key value [EX seconds]"),
                           ("SET k v PX 5", "Error: syntax: SET key value [EX seconds]"),
                           ("GET a b", "Error: wrong number of arguments"),
                           ("a b c d e f g", "Error: too many words"),
                           ("FLUSHALL", "Error: unknown command"),
                           ("\x00\x01\xff", "Error: unknown command"),
                           ("SET text abc", "OK"),
                           ("INCR text", "Error: value is not an integer"),
                           ("SET big 9223372036854775807", "OK"),
                           ("INCR big", "Error: increment would overflow"),
                           ("SET neg -5", "OK"),
                           ("INCR neg", "-4"),
                           ("GET big", "9223372036854775807")):
            assert c.request(line) == want, line
        for i in range(47):
            assert c.request(f"SET many{i} x") == "OK"
        assert c.request("SET one-too-many x") == "Error: too many keys"
        assert c.request("SET many0 replaced") == "OK"  # replacing is not adding
        # a line far over max_line is the front end's: the connection closes
    r = http_get(web, "/kv/body", method="PUT", body=b"v" * 65)
    assert (r.status, r.text) == (413, "Error: value too long\n")
    r = http_get(web, "/kv/" + "k" * 33)
    assert (r.status, r.text) == (400, "Error: key too long\n")
    r = http_get(web, "/kv/x", method="PATCH", body=b"1")
    assert (r.status, r.header("Allow")) == (405, "GET, HEAD, PUT, DELETE, POST")
    r = http_get(web, "/kv/x?ex=zero", method="PUT", body=b"1")
    assert (r.status, r.text) == (400, "Error: invalid ex\n")
    assert handler_stats(d, "kv")["counters"]["keys"] == 50
    with LineClient(d.port("mini")) as c:  # max_bytes: 100, keys and values together
        assert c.request("small SET a " + "x" * 60) == "OK"  # 61
        assert c.request("small SET b " + "y" * 39) == "Error: store full"  # 101
        assert c.request("small SET b " + "y" * 38) == "OK"  # 100
        assert c.request("small SET a " + "x" * 61) == "Error: store full"
        assert c.request("small SET a x") == "OK"  # replacing frees the old value's bytes
        assert c.request("small INCR n") == "1"


def test_minimal_plugin(ctl_daemon):
    d = ctl_daemon(KV_CONFIG)
    with LineClient(d.port("mini")) as c:
        assert c.request("mini echo this") == "echo this"
        assert c.request("pong") == "+PONG"
        assert c.request("pong ignored payload") == "+PONG"
    assert handler_stats(d, "mini")["counters"] == {"calls": 1}
    assert handler_stats(d, "pong")["counters"] == {"calls": 2}
