# SPDX-License-Identifier: MIT
"""tusknetctl, the control client: every command in both
output modes (tables for people, raw JSON with --json), exit codes, the
message when the daemon is not running, send/broadcast/close reaching real TCP
clients, `top` with stdout piped, and robustness against partial reads, long
answers and a peer that closes in the middle (with a fake control socket).

Binaries: $TUSKNETD and $TUSKNETCTL (default build/release/tusknetd and
build/release/tusknetctl under the repository root). One daemon serves the
whole module; tests that stop a daemon start their own.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from daemon_util import DaemonProcess, fail_on_sanitizer_reports, stop_all

REPO_ROOT = Path(__file__).resolve().parents[2]


def _binary(var, default):
    path = Path(os.environ.get(var) or REPO_ROOT / default)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return str(path)


TUSKNETD = _binary("TUSKNETD", "build/release/tusknetd")
TUSKNETCTL = _binary("TUSKNETCTL", "build/release/tusknetctl")
HOST = "127.0.0.1"

CONFIG = """
[daemon]
control_socket: "{sock}"
shutdown_timeout: "2s"
[handlers]
echo {{ type: "echo" }}
chat {{ type: "broadcast" }}
[listeners]
lines {{ protocol: "tcp" listen: "127.0.0.1:0" handlers: ["echo", "chat"] }}
other {{ protocol: "tcp" listen: "127.0.0.1:0" handler: "echo" }}
"""

NOT_RUNNING = "tusknetctl: cannot connect to {}: No such file or directory (is tusknetd running?)"


# ---- running things -------------------------------------------------------------


def ctl(*args, sock=None, env=None, timeout=20, check=None):
    """Runs tusknetctl; returns the CompletedProcess (text). SOCK is given with -s."""
    cmd = [TUSKNETCTL]
    if sock is not None:
        cmd += ["-s", str(sock)]
    cmd += [str(a) for a in args]
    full_env = dict(os.environ)
    full_env.pop("TUSKNETCTL_SOCKET", None)
    if env:
        full_env.update(env)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check is not None:
        assert r.returncode == check, f"{cmd} -> {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r


class Daemon(DaemonProcess):
    """tusknetd on CONFIG with its control socket in a short /tmp directory."""

    def __init__(self, name="ctl"):
        self.name = name
        self.known_children = set()
        self.dir = Path(tempfile.mkdtemp(prefix="tnctl-"))
        self.sock = self.dir / "control.sock"
        self.conf = self.dir / f"{name}.conf"
        self.config = CONFIG.format(sock=self.sock)
        self.conf.write_text(self.config)
        self.log_path = self.dir / f"{name}.log"
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen([TUSKNETD, "-c", str(self.conf), "--log-level", "debug"],
                                     stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=self.log_file,
                                     cwd=str(self.dir))
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tusknetd exited with {self.proc.returncode}:\n{self.log()}")
            if self.sock.exists():
                try:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                        s.connect(str(self.sock))
                        break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"tusknetd control socket did not appear:\n{self.log()}")
            time.sleep(0.02)

    def ctl(self, *args, **kw):
        return ctl(*args, sock=self.sock, **kw)

    def json(self, *args):
        r = self.ctl("--json", *args, check=0)
        return json.loads(r.stdout)

    def port(self, listener):
        for l in self.json("listeners")["listeners"]:
            if l["name"] == listener:
                return int(l["address"].rsplit(":", 1)[1])
        raise KeyError(listener)

    def cleanup(self):
        self.shutdown()
        self.log_file.close()

    def finish(self):
        """Stops it (SIGTERM first), prints its log tail, removes its directory;
        a sanitizer report in its log fails the test."""
        try:
            problems = stop_all([self], 40)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
        fail_on_sanitizer_reports(problems)


@pytest.fixture(scope="module")
def d():
    for b in (TUSKNETD, TUSKNETCTL):
        if not os.access(b, os.X_OK):
            pytest.fail(f"{b} is missing: run 'make all' or set TUSKNETD/TUSKNETCTL", pytrace=False)
    daemon = Daemon()
    yield daemon
    daemon.finish()


class Client:
    """A line client on a real TCP socket."""

    def __init__(self, port):
        self.sock = socket.create_connection((HOST, port), timeout=5)
        self.buf = b""

    def sendline(self, s):
        self.sock.sendall(s.encode() + b"\n")

    def readline(self, timeout=5):
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"closed; partial {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def closed(self, timeout=5):
        """True once the peer closed (EOF or reset) within TIMEOUT."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def local(self):
        h, p = self.sock.getsockname()[:2]
        return f"{h}:{p}"

    def close(self):
        self.sock.close()


def conn_id(d, client):
    """The daemon's id of CLIENT's connection."""
    local = client.local()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        for c in d.json("connections")["connections"]:
            if c["remote"] == local:
                return c["id"]
        time.sleep(0.02)
    raise AssertionError(f"connection from {local} not listed")


def header_line(out, first_col):
    """The table line starting with FIRST_COL (a header), split on 2+ spaces."""
    for line in out.splitlines():
        if line.strip().startswith(first_col + " "):
            return re.split(r"\s{2,}", line.strip())
    raise AssertionError(f"no {first_col} header in:\n{out}")


def table_rows(out, first_col):
    """Rows under the header starting with FIRST_COL, until a blank line."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith(first_col + " "):
            rows = []
            for row in lines[i + 1:]:
                if not row.strip():
                    break
                rows.append(re.split(r"\s{2,}", row.strip()))
            return rows
    raise AssertionError(f"no {first_col} table in:\n{out}")


# ---- without a daemon -------------------------------------------------------------


def test_help_and_version_need_no_daemon():
    r = ctl("-h", sock="/nonexistent/x.sock", check=0)
    assert "Usage: tusknetctl" in r.stdout
    for cmd in ("stats", "connections [LISTENER]", "broadcast HANDLER MESSAGE", "top [-n N] [-d SECONDS]"):
        assert cmd in r.stdout
    assert ctl("--help", check=0).stdout == r.stdout
    r = ctl("-V", check=0)
    assert re.fullmatch(r"tusknetctl \d+\.\d+\.\d+\n", r.stdout)


@pytest.mark.parametrize("args", [
    [],                         # no command
    ["--bogus", "stats"],       # unknown option
    ["close"],                  # missing ID
    ["close", "abc"],           # ID not a number
    ["send", "1"],              # missing message
    ["broadcast", "chat"],      # missing message
    ["log-level"],              # missing level
    ["stats", "extra"],         # too many arguments
    ["connections", "a", "b"],
    ["top", "-n", "0"],
    ["top", "-d", "x"],
    ["--timeout", "soon", "stats"],
    ["send", "1", "two\nlines"],
])
def test_usage_errors_exit_2(args):
    r = ctl(*args, sock="/nonexistent/x.sock")
    assert r.returncode == 2, r
    assert r.stderr.startswith("tusknetctl: ")
    assert r.stdout == ""


def test_not_running_message(tmp_path):
    path = tmp_path / "none.sock"
    r = ctl("stats", sock=path)
    assert r.returncode == 1
    assert r.stderr.strip() == NOT_RUNNING.format(path)
    assert r.stdout == ""
    # the socket comes from $TUSKNETCTL_SOCKET when -s is not given
    r = ctl("--json", "stats", env={"TUSKNETCTL_SOCKET": str(path)})
    assert r.returncode == 1 and r.stderr.strip() == NOT_RUNNING.format(path)
    # ... and the default is /run/tusknetd/control.sock
    assert not os.path.exists("/run/tusknetd/control.sock"), "a tusknetd runs on this machine: the default is in use"
    r = ctl("version", env={"TUSKNETCTL_SOCKET": ""})
    assert r.returncode == 1 and r.stderr.strip() == NOT_RUNNING.format("/run/tusknetd/control.sock"), r.stderr
    # top too
    r = ctl("top", "-n", "1", sock=path)
    assert r.returncode == 1 and r.stderr.strip() == NOT_RUNNING.format(path)


def test_stale_socket_file_is_not_running(tmp_path):
    path = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # the file stays, nobody listens
    r = ctl("stats", sock=path)
    assert r.returncode == 1
    assert r.stderr.strip() == f"tusknetctl: cannot connect to {path}: Connection refused (is tusknetd running?)"


# ---- read commands, both modes ----------------------------------------------------


def test_socket_from_environment(d):
    want = d.json("version")
    r = ctl("--json", "version", env={"TUSKNETCTL_SOCKET": str(d.sock)}, check=0)
    assert json.loads(r.stdout) == want
    # -s wins over the environment
    r = ctl("--json", "version", sock=d.sock, env={"TUSKNETCTL_SOCKET": "/nonexistent/x.sock"}, check=0)
    assert json.loads(r.stdout) == want


def test_listeners(d):
    j = d.json("listeners")
    names = [l["name"] for l in j["listeners"]]
    assert sorted(names) == ["lines", "other"]
    port = d.port("lines")
    assert f"127.0.0.1:{port}" in [l["address"] for l in j["listeners"]]  # a port of its own, read back
    r = d.ctl("listeners", check=0)
    assert header_line(r.stdout, "LISTENER") == ["LISTENER", "PROTO", "LISTEN", "ADDRESS", "STATE", "ACTIVE",
                                                 "HANDLERS"]
    rows = {row[0]: row for row in table_rows(r.stdout, "LISTENER")}
    assert rows["lines"][1] == "tcp"
    assert rows["lines"][2] == "127.0.0.1:0"
    assert rows["lines"][3] == f"127.0.0.1:{port}"
    assert rows["lines"][4] == "serving"
    assert rows["lines"][6] == "echo,chat"
    assert rows["other"][6] == "echo"
    # options may also follow a command that takes no free text
    assert json.loads(d.ctl("listeners", "--json", check=0).stdout) == j


def test_json_is_the_raw_line(d):
    """--json prints the answer exactly as the daemon sent it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(d.sock))
        s.sendall(b"routes\n")
        raw = b""
        while not raw.endswith(b"\n"):
            raw += s.recv(65536)
    assert d.ctl("--json", "routes", check=0).stdout.encode() == raw


def test_stats(d):
    # the module's daemon has served other tests: counts are taken as differences
    g0 = d.json("stats")["global"]
    c = Client(d.port("lines"))
    try:
        c.sendline("echo hello")
        assert c.readline() == "hello"
        j = d.json("stats")
        g = j["global"]
        assert g["active_connections"] == g0["active_connections"] + 1, (g0, g)
        assert (g["messages_in"], g["messages_out"]) == (g0["messages_in"] + 1, g0["messages_out"] + 1), (g0, g)
        assert set(j["listeners"]) == {"lines", "other"}
        assert set(j["handlers"]) == {"echo", "chat"}
        r = d.ctl("stats", check=0)
        out = r.stdout
        assert re.search(r"^tusknetd \S+, up (\d+[dhms] ?)+", out, re.M), out
        # the table is the same numbers as the JSON just read (nothing happened in between)
        assert re.search(rf"^connections\s+{g['active_connections']} active, {g['total_connections']} total$",
                         out, re.M), out
        assert re.search(r"^bytes\s+\d+(\.\d)? (B|KiB|MiB) sent, \d+(\.\d)? (B|KiB|MiB) received$", out, re.M), out
        assert re.search(rf"^messages\s+{g['messages_in']} in, {g['messages_out']} out$", out, re.M), out
        assert re.search(rf"^errors\s+{g['connection_errors']} connection, {g['timeout_errors']} timeout$",
                         out, re.M), out
        assert re.search(r"^rejections\s+", out, re.M), out
        assert header_line(out, "LISTENER") == ["LISTENER", "PROTO", "ADDRESS", "ACTIVE", "TOTAL", "SENT",
                                                "RECEIVED", "ERRORS", "TIMEOUTS", "REJECTED"]
        lrows = {row[0]: row for row in table_rows(out, "LISTENER")}
        assert lrows["lines"][1] == "tcp"
        assert lrows["lines"][2] == f"127.0.0.1:{d.port('lines')}"
        assert int(lrows["lines"][3]) == j["listeners"]["lines"]["active_connections"]
        assert header_line(out, "HANDLER") == ["HANDLER", "TYPE", "CALLS", "ERRORS", "IN-FLIGHT", "P50 ms",
                                               "P90 ms", "P99 ms"]
        hrows = {row[0]: row for row in table_rows(out, "HANDLER")}
        assert hrows["echo"][1] == "echo" and int(hrows["echo"][2]) == j["handlers"]["echo"]["calls"]
        assert hrows["chat"][1] == "broadcast"
        for v in hrows["echo"][5:8]:
            float(v)
    finally:
        c.close()


def test_handlers(d):
    j = d.json("handlers")
    assert [h["name"] for h in j["handlers"]] == ["echo", "chat"]
    out = d.ctl("handlers", check=0).stdout
    assert header_line(out, "HANDLER") == ["HANDLER", "TYPE", "CALLS", "ERRORS", "IN-FLIGHT", "P50 ms", "P90 ms",
                                           "P99 ms"]
    rows = {row[0]: row for row in table_rows(out, "HANDLER")}
    assert rows["chat"][1] == "broadcast"
    assert rows["echo"][1] == "echo"
    for row in rows.values():
        for v in row[2:5]:
            int(v)
        for v in row[5:8]:
            float(v)


def test_routes(d):
    assert d.json("routes") == {"routes": []}
    out = d.ctl("routes", check=0).stdout
    assert out.startswith("no routes")


def test_config(d):
    j = d.json("config")
    assert j["config"]["listeners"]["lines"]["protocol"] == "tcp"
    out = d.ctl("config", check=0).stdout
    # people get the same document, indented
    assert json.loads(out) == j
    assert '\n  "config": {' in out


def test_version(d):
    j = d.json("version")
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", j["version"])
    assert d.ctl("version", check=0).stdout == f"tusknetd {j['version']}\n"


def test_help(d):
    j = d.json("help")
    assert j["level"] == "admin"
    names = [c["name"] for c in j["commands"]]
    for n in ("stats", "metrics", "connections", "send", "broadcast", "shutdown"):
        assert n in names
    out = d.ctl("help", check=0).stdout
    assert "your level: admin" in out
    assert header_line(out, "COMMAND") == ["COMMAND", "LEVEL", "DESCRIPTION"]
    assert re.search(r"^broadcast HANDLER MESSAGE\s+admin\s+push a message", out, re.M), out
    assert re.search(r"^top \[-n N\] \[-d SECONDS\]", out, re.M), out


def test_metrics(d):
    r = d.ctl("metrics", check=0)
    assert r.stdout.endswith("\n# EOF\n")
    assert "tusknet_connections_total{listener=\"lines\",protocol=\"tcp\"}" in r.stdout
    assert "# TYPE tusknet_uptime_seconds gauge" in r.stdout
    # --json changes nothing: the answer is not JSON
    r2 = d.ctl("--json", "metrics", check=0)
    assert r2.stdout.endswith("\n# EOF\n")
    assert r2.stdout.splitlines()[:2] == r.stdout.splitlines()[:2]


def test_connections(d):
    clients = [Client(d.port("lines")) for _ in range(2)] + [Client(d.port("other"))]
    try:
        for c in clients[:2]:
            c.sendline("echo x")  # lines: several handlers, the first word picks one
            assert c.readline() == "x"
        clients[2].sendline("x")  # other: the whole line goes to echo
        assert clients[2].readline() == "x"
        ids = [conn_id(d, c) for c in clients]
        j = d.json("connections")
        by_id = {c["id"]: c for c in j["connections"]}
        for cid, c in zip(ids, clients):
            assert by_id[cid]["remote"] == c.local()
            assert by_id[cid]["messages_in"] == 1 and by_id[cid]["messages_out"] == 1
        assert by_id[ids[2]]["listener"] == "other"

        out = d.ctl("connections", check=0).stdout
        assert header_line(out, "ID") == ["ID", "LISTENER", "PROTO", "REMOTE", "LOCAL", "AGE", "IDLE", "SENT",
                                          "RECV", "MSGS IN/OUT", "PATH", "TLS"]
        rows = {int(row[0]): row for row in table_rows(out, "ID")}
        for cid, c in zip(ids, clients):
            row = rows[cid]
            assert row[2] == "tcp"
            assert row[3] == c.local()
            assert re.fullmatch(r"\d+[smhd]( \d+[smhd])?", row[5]), row
            assert re.fullmatch(r"\d+[smhd]( \d+[smhd])?", row[6]), row
            assert row[7] == "2 B" and row[8] == ("7 B" if c is not clients[2] else "2 B")
            assert row[9] == "1/1"
            assert row[10] == "-" and row[11] == "-"
        assert re.search(rf"^{len(j['connections'])} connections?$", out, re.M)
        assert list(rows) == sorted(rows)

        # by listener
        jo = d.json("connections", "other")
        assert [c["id"] for c in jo["connections"]] == [ids[2]]
        out = d.ctl("connections", "other", check=0).stdout
        assert [int(r[0]) for r in table_rows(out, "ID")] == [ids[2]]
    finally:
        for c in clients:
            c.close()


def test_connections_unknown_listener(d):
    r = d.ctl("connections", "nope")
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.strip() == "tusknetctl: no listener 'nope'"
    r = d.ctl("--json", "connections", "nope")
    assert r.returncode == 1
    assert json.loads(r.stdout) == {"ok": False, "error": "no listener 'nope'"}
    assert r.stderr == "tusknetctl: no listener 'nope'\n", r.stderr


def test_unknown_command_is_a_usage_error(d):
    r = d.ctl("frobnicate")
    assert r.returncode == 2
    assert r.stderr == "tusknetctl: unknown command 'frobnicate'\nTry 'tusknetctl --help' for more information.\n"


def test_many_connections_long_answer(d):
    """An answer far larger than one read (and than the socket buffers)."""
    port = d.port("other")
    clients = [socket.create_connection((HOST, port), timeout=5) for _ in range(400)]
    try:
        deadline = time.monotonic() + 5
        while len(d.json("connections", "other")["connections"]) < 400:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = d.ctl("--json", "connections", "other", check=0)
        assert len(r.stdout) > 64 * 1024  # the premise: more than one read
        assert len(json.loads(r.stdout)["connections"]) == 400
        out = d.ctl("connections", "other", check=0).stdout
        assert len(table_rows(out, "ID")) == 400
        assert re.search(r"^400 connections$", out, re.M), out
    finally:
        for s in clients:
            s.close()


# ---- actions ----------------------------------------------------------------------


def test_broadcast_reaches_attached_clients(d):
    port = d.port("lines")
    a, b, other = Client(port), Client(port), Client(port)
    try:
        # "chat ..." attaches a connection to the broadcast handler; the
        # echo after it tells when the daemon has handled it
        a.sendline("chat hi")
        a.sendline("echo sync")
        assert a.readline() == "sync"
        b.sendline("chat hi")
        b.sendline("echo sync")
        assert b.readline() == "sync"
        assert a.readline() == "hi"  # b's message, to the room
        other.sendline("echo ready")
        assert other.readline() == "ready"
        r = d.ctl("broadcast", "chat", "hello", check=0)
        assert r.stdout == "ok: sent to 2 connections\n"
        assert a.readline() == "hello" and b.readline() == "hello"
        # several words are one message
        j = d.json("broadcast", "chat", "hello", "big", "world")
        assert j == {"ok": True, "sent": 2, "dropped": 0}
        assert a.readline() == "hello big world" and b.readline() == "hello big world"
        # the unattached connection got nothing
        other.sock.settimeout(0.2)
        with pytest.raises(socket.timeout):
            other.sock.recv(100)
        r = d.ctl("broadcast", "nope", "x")
        assert r.returncode == 1 and r.stderr.strip() == "tusknetctl: no handler 'nope'"
    finally:
        for c in (a, b, other):
            c.close()


def test_send_and_close(d):
    c = Client(d.port("lines"))
    try:
        c.sendline("echo hi")
        assert c.readline() == "hi"
        cid = conn_id(d, c)
        r = d.ctl("send", cid, "msg", check=0)
        assert r.stdout == f"ok: sent to connection {cid}\n"
        assert c.readline() == "msg"
        assert d.json("send", cid, "two words") == {"ok": True}
        assert c.readline() == "two words"
        # a message starting with a dash is still the message
        d.ctl("send", cid, "-n", "--json", check=0)
        assert c.readline() == "-n --json"

        r = d.ctl("close", cid, check=0)
        assert r.stdout == f"ok: connection {cid} closed\n"
        assert c.closed()
        r = d.ctl("close", cid)
        assert r.returncode == 1 and r.stderr.strip() == f"tusknetctl: no connection {cid}"
        r = d.ctl("--json", "send", cid, "late")
        assert r.returncode == 1 and json.loads(r.stdout)["ok"] is False
    finally:
        c.close()


def test_log_level(d):
    r = d.ctl("log-level", "info", check=0)
    assert r.stdout == "ok: log level info\n"
    assert d.json("log-level", "debug") == {"ok": True, "log_level": "debug"}
    r = d.ctl("log-level", "loud")
    assert r.returncode == 2
    assert r.stderr == ("tusknetctl: log-level takes error, warn, info or debug, not 'loud'\n"
                        "Try 'tusknetctl --help' for more information.\n"), r.stderr


def test_reload():
    # its own daemon: a reload may change the listeners the other tests use
    d = Daemon("reload")
    try:
        _reload(d)
    finally:
        d.finish()


def _reload(d):
    before = d.json("stats")
    ok, refused = before["reloads_ok"], before["reloads_refused"]
    r = d.ctl("reload", check=0)
    assert r.stdout == f"ok: configuration reloaded (reloads so far: {ok + 1} ok, {refused} refused)\n"
    j = d.json("reload")
    assert j == {"ok": True, "reloads": before["reloads"] + 2, "reloads_ok": ok + 2, "reloads_refused": refused}


def test_top_piped(d):
    r = d.ctl("top", "-n", "2", "-d", "0.2", check=0, timeout=10)
    assert "\x1b" not in r.stdout
    # frames start with the "tusknetd VERSION  up ..." line, separated by a blank line
    starts = [m.start() for m in re.finditer(r"^tusknetd \S+  up ", r.stdout, re.M)]
    assert len(starts) == 2, r.stdout
    assert r.stdout[starts[1] - 2:starts[1]] == "\n\n"
    frames = [r.stdout[starts[0]:starts[1]], r.stdout[starts[1]:]]
    for f in frames:
        assert re.search(r"^connections\s+\d+ open", f, re.M), f
        assert header_line(f, "LISTENER")[:5] == ["LISTENER", "PROTO", "ADDRESS", "OPEN", "CONN/S"]
        names = [row[0] for row in table_rows(f, "LISTENER")]
        assert sorted(names) == ["lines", "other"]
        assert sorted(row[0] for row in table_rows(f, "HANDLER")) == ["chat", "echo"]
    # the second frame has rates
    assert re.search(r"^messages\s+in \d+(\.\d)?/s, out \d+(\.\d)?/s$", frames[1], re.M), frames[1]
    rows = {row[0]: row for row in table_rows(frames[1], "LISTENER")}
    float(rows["lines"][4])


def test_top_json(d):
    r = d.ctl("--json", "top", "-n", "2", "-d", "0.1", check=0, timeout=10)
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert set(json.loads(line)["listeners"]) == {"lines", "other"}


def test_top_stops_on_sigint(d):
    p = subprocess.Popen([TUSKNETCTL, "-s", str(d.sock), "top", "-d", "0.1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=5)
    assert p.returncode == 0, err
    assert "LISTENER" in out


def test_shutdown():
    daemon = Daemon("shutdown")
    try:
        r = daemon.ctl("shutdown", check=0)
        assert r.stdout == "ok: tusknetd is shutting down\n"
        assert daemon.proc.wait(timeout=10) == 0
        r = daemon.ctl("stats")
        assert r.returncode == 1
        assert r.stderr.strip() == NOT_RUNNING.format(daemon.sock), r.stderr
    finally:
        daemon.finish()


# ---- a fake control socket: framing and robustness --------------------------------


class FakeServer:
    """A Unix socket server; HANDLER(conn, command_line) runs per connection."""

    def __init__(self, handler, greeting=None):
        self.dir = tempfile.mkdtemp(prefix="tnctl-fake-")
        self.path = os.path.join(self.dir, "fake.sock")
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(8)
        self.handler = handler
        self.greeting = greeting
        self.commands = []
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        self.srv.settimeout(0.1)
        while not self.stop:
            try:
                conn, _ = self.srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                if self.greeting is not None:
                    # like tusknetd refusing a peer at accept: one line, then close
                    conn.sendall(self.greeting)
                    conn.shutdown(socket.SHUT_RDWR)
                    continue
                buf = b""
                try:
                    while True:
                        while b"\n" not in buf:
                            chunk = conn.recv(65536)
                            if not chunk:
                                raise EOFError
                            buf += chunk
                        line, _, buf = buf.partition(b"\n")
                        self.commands.append(line.decode())
                        if self.handler(conn, line.decode()) is False:
                            break
                except (EOFError, OSError):
                    pass

    def close(self):
        self.stop = True
        self.thread.join(timeout=5)
        self.srv.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def fake():
    servers = []

    def make(handler, greeting=None):
        s = FakeServer(handler, greeting)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def dribble(conn, data, step=7):
    """Sends DATA in small pieces, so the client reads partial answers."""
    for i in range(0, len(data), step):
        conn.sendall(data[i:i + step])
        time.sleep(0.001)


def test_partial_reads_and_command_line(fake):
    answer = json.dumps({"version": "9.9.9"}).encode() + b"\n"
    srv = fake(lambda conn, line: dribble(conn, answer, step=3))
    r = ctl("version", sock=srv.path, check=0)
    assert r.stdout == "tusknetd 9.9.9\n"
    r = ctl("send", "12", "hello", "big  world", sock=srv.path)
    assert srv.commands[-1] == "send 12 hello big  world"


def test_metrics_framing(fake):
    text = b"# HELP a A.\n# TYPE a counter\na_total 1\n# EOF\n"
    srv = fake(lambda conn, line: dribble(conn, text, step=5))
    r = ctl("metrics", sock=srv.path, check=0)
    assert r.stdout.encode() == text


def test_huge_answer(fake):
    conns = [{"id": i, "listener": "big", "protocol": "tcp", "remote": f"10.0.{i // 250 % 250}.{i % 250}:5{i % 9999}",
              "local": "127.0.0.1:7000", "established": "2026-01-01T00:00:00.000Z",
              "last_activity": "2026-01-01T00:00:00.000Z", "bytes_sent": 1 << 20, "bytes_received": 1536,
              "messages_in": 3, "messages_out": 4} for i in range(20000)]
    answer = json.dumps({"connections": conns}, separators=(",", ":")).encode() + b"\n"
    assert len(answer) > 4 * 1024 * 1024
    srv = fake(lambda conn, line: conn.sendall(answer))
    r = ctl("--json", "connections", sock=srv.path, check=0)
    assert r.stdout.encode() == answer
    r = ctl("connections", sock=srv.path, check=0)
    rows = table_rows(r.stdout, "ID")
    assert len(rows) == 20000
    assert rows[0][7] == "1.0 MiB" and rows[0][8] == "1.5 KiB" and rows[0][9] == "3/4"
    assert "20000 connections" in r.stdout


def test_peer_closes_mid_answer(fake):
    srv = fake(lambda conn, line: (conn.sendall(b'{"connections":[{"id":1,'), False)[1])
    r = ctl("connections", sock=srv.path)
    assert r.returncode == 1
    assert r.stderr == "tusknetctl: tusknetd closed the connection in the middle of an answer (24 bytes read)\n", \
        r.stderr
    srv2 = fake(lambda conn, line: False)  # closes without a word
    r = ctl("stats", sock=srv2.path)
    assert r.returncode == 1
    assert r.stderr == "tusknetctl: tusknetd closed the connection without answering\n", r.stderr


def test_invalid_answer(fake):
    srv = fake(lambda conn, line: conn.sendall(b"not json\n"))
    r = ctl("stats", sock=srv.path)
    assert r.returncode == 1
    assert r.stderr == "tusknetctl: invalid answer from tusknetd: unexpected word at byte 0\n", r.stderr


def test_no_answer_times_out(fake):
    srv = fake(lambda conn, line: time.sleep(3))
    # the fake answers nothing for 3 s: the message says the 0.5 s timeout fired
    r = ctl("--timeout", "0.5", "stats", sock=srv.path)
    assert r.returncode == 1
    assert r.stderr == "tusknetctl: no answer from tusknetd within 0.5s\n", r.stderr


def test_json_strings_and_units(fake):
    stats = {
        "version": "1.0", "uptime_seconds": 7384.5, "reloads": 0, "reloads_ok": 0, "reloads_refused": 0,
        "global": {"total_connections": 5, "active_connections": 2, "total_bytes_sent": 1258291,
                   "total_bytes_received": 512, "connection_errors": 0, "timeout_errors": 1,
                   "messages_in": 10, "messages_out": 9,
                   "rejected": {"per_ip": 3, "denied": 0, "too_large": 1}},
        "listeners": {"caf\u00e9 \"x\"": {"protocol": "tcp", "address": "[::1]:70", "draining": True,
                                          "total_connections": 5, "active_connections": 2,
                                          "total_bytes_sent": 3 * 1024 ** 3, "total_bytes_received": 0,
                                          "connection_errors": 0, "timeout_errors": 1, "rejected": {"per_ip": 3}}},
        "handlers": {"h\U0001F600": {"type": "exec", "calls": 7, "errors": 1, "in_flight": 0,
                                     "latency_ms": {"p50": 0.25, "p90": 12.5, "p99": 1500}}},
    }
    answer = json.dumps(stats).encode() + b"\n"  # ensure_ascii: \u escapes, surrogate pairs
    srv = fake(lambda conn, line: conn.sendall(answer))
    out = ctl("stats", sock=srv.path, check=0).stdout
    assert "up 2h 3m 4s" in out
    assert re.search(r"^bytes\s+1\.2 MiB sent, 512 B received$", out, re.M), out
    assert re.search(r"^rejections\s+per_ip 3, too_large 1$", out, re.M), out
    rows = table_rows(out, "LISTENER")
    assert rows[0][0] == 'caf\u00e9 "x" (draining)'
    assert rows[0][5] == "3.0 GiB"
    hrows = table_rows(out, "HANDLER")
    assert hrows[0][0] == "h\U0001F600"
    assert hrows[0][5:8] == ["0.250", "12.5", "1500"]


def test_refused_at_accept(fake):
    denied = b'{"ok":false,"error":"permission denied"}\n'
    srv = fake(None, greeting=denied)
    r = ctl("stats", sock=srv.path)
    assert r.returncode == 1
    assert r.stderr.strip() == "tusknetctl: permission denied"
    r = ctl("--json", "metrics", sock=srv.path)
    assert r.returncode == 1 and r.stdout.encode() == denied
    r = ctl("top", "-n", "1", sock=srv.path)
    assert r.returncode == 1
    assert r.stderr == "tusknetctl: permission denied\n", r.stderr


MINI_STATS = {"version": "1.0", "uptime_seconds": 1, "global": {"active_connections": 1},
              "listeners": {"alpha": {"protocol": "tcp", "address": "127.0.0.1:1"}}, "handlers": {}}


def test_top_reconnects(fake):
    """A daemon that goes away: top says so and picks up again when it is back."""
    answer = json.dumps(MINI_STATS).encode() + b"\n"
    srv = fake(lambda conn, line: (conn.sendall(answer), False)[1])  # one answer per connection
    r = ctl("top", "-n", "3", "-d", "0.1", sock=srv.path, check=0, timeout=10)
    assert r.stdout.count("tusknetd 1.0  up 1s") == 2, r.stdout
    assert "tusknetctl top: tusknetd closed the connection" in r.stdout
    assert "retrying every 0.1s" in r.stdout
    assert r.stdout.count("alpha     tcp") == 2
