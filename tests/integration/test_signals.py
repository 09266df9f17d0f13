# SPDX-License-Identifier: MIT
"""The signals an operator sends to a running daemon, with live connections:
SIGUSR1 reopens access log files (moved away by hand and by logrotate with
the shipped snippet), SIGQUIT stops gracefully like SIGTERM, SIGUSR2,
SIGWINCH and SIGALRM are logged and change nothing. Then `tusknetctl
reload` as the unit's ExecReload runs it (exit 1 with FILE:LINE:COL on a
refused config, sd_notify RELOADING=1/READY=1 sent before it returns) and
tusknetctl's exit statuses (0 done, 1 the daemon's error, 2 usage)."""
import gzip
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from ctl_util import REPO_ROOT, TUSKNETCTL, ctl_daemon, notify, wait_for  # noqa: F401  (fixtures)
from daemon_util import SANITIZER_RE, LineClient
from http_util import HttpConn

SERVICE = REPO_ROOT / "systemd" / "tusknetd.service"
LOGROTATE = REPO_ROOT / "conf" / "logrotate" / "tusknetd"

# "hold" answers once the file GATE exists: a reply the test keeps in flight
# for as long as it wants, without sleeping for it.
CONFIG = """
[daemon]
log_level: "debug"
shutdown_timeout: "20s"

[handlers]
echo   { type: "echo" }
greet  { type: "static" reply: "hello v1" }
health { type: "health" }
hold   { type: "exec" command: ["sh", "-c", "while [ ! -e GATE ]; do sleep 0.02; done; cat"] }

[middleware]
access  { type: "access_log" file: "LOGDIR/access.log" }
jsonlog { type: "access_log" file: "LOGDIR/json.log" format: "json" }

[listeners]
lines { protocol: "tcp" listen: "127.0.0.1:0" handlers: ["echo", "greet", "hold"] }
web {
    protocol: "http"
    listen: "127.0.0.1:0"
    middleware: ["access", "jsonlog"]
    routes {
        "GET /health": "health"
        "POST /hold": "hold"
        "GET /*": "greet"
    }
}
"""


def config(tmp_path, logdir=None, text=CONFIG):
    logdir = Path(logdir or tmp_path / "logs")
    logdir.mkdir(exist_ok=True)
    return text.replace("LOGDIR", str(logdir)).replace("GATE", str(tmp_path / "gate"))


def lines_of(path):
    return Path(path).read_text().splitlines()


def log_count(d, pattern):
    return len(re.findall(pattern, d.log(), re.M))


def signal_and_wait(d, sig, pattern):
    """Sends SIG and waits for the daemon's log line matching PATTERN (a new one)."""
    n = log_count(d, pattern)
    d.send_signal(sig)
    wait_for(lambda: log_count(d, pattern) > n, 5, what=f"log line {pattern!r} after {sig.name}")


def get(conn, target):
    """One keep-alive GET; the body."""
    r = conn.exchange("GET", target)
    assert r.status == 200, r
    assert r.header("Connection") != "close", r
    return r.body


def wait_lines(path, n):
    """Waits until PATH has N lines (the access log line is written just
    after the response), then checks it has exactly N."""
    wait_for(lambda: Path(path).exists() and len(lines_of(path)) >= n, 5, what=f"{n} lines in {path}")
    assert len(lines_of(path)) == n, lines_of(path)


def targets(path):
    """The request targets of a combined-format access log, in order."""
    return [re.search(r'"GET (\S+) HTTP/1\.1"', ln).group(1) for ln in lines_of(path)]


def stop(d):
    """SIGTERM; the daemon must exit 0 without a sanitizer report."""
    assert d.stop(10) == 0, d.log_tail()
    m = SANITIZER_RE.search(d.log())
    assert not m, m.group(0)


# ---- signals with live connections ---------------------------------------------------------------


IGNORED = [
    (signal.SIGUSR2, r"\[warn\] SIGUSR2 received: ignored \(no meaning for tusknetd\)$"),
    (signal.SIGWINCH, r"\[info\] SIGWINCH received: ignored \(no meaning for tusknetd\)$"),
    (signal.SIGALRM, r"\[warn\] SIGALRM received: ignored \(no meaning for tusknetd\)$"),
    (signal.SIGUSR1, r"\[info\] SIGUSR1: reopened 2 log file\(s\)$"),
]


def test_signals_keep_connections_served(ctl_daemon, tmp_path):
    d = ctl_daemon(config(tmp_path))
    lines_port, web_port = d.port("lines"), d.port("web")
    with LineClient(lines_port) as tcp, HttpConn(web_port) as web:
        assert tcp.request("echo before") == "before"
        assert get(web, "/before") == b"hello v1"
        for i, (sig, pattern) in enumerate(IGNORED * 2):
            signal_and_wait(d, sig, pattern)
            # the same two connections, still served
            assert tcp.request(f"echo after {sig.name} {i}") == f"after {sig.name} {i}"
            assert get(web, f"/after/{i}") == b"hello v1"
        assert d.alive()
        web_stats = d.stats()["listeners"]["web"]
        assert web_stats["total_connections"] == 1 and web_stats["active_connections"] == 1, web_stats
        tcp_stats = d.stats()["listeners"]["lines"]
        assert tcp_stats["total_connections"] == 1 and tcp_stats["active_connections"] == 1, tcp_stats
        # each signal once per round: 8 lines, none lost
        for sig, pattern in IGNORED:
            assert log_count(d, pattern) == 2, sig
    stop(d)


def test_sigquit_finishes_replies_in_flight_then_exits_0(ctl_daemon, tmp_path):
    d = ctl_daemon(config(tmp_path))
    gate = tmp_path / "gate"
    lines_port = d.port("lines")
    with LineClient(lines_port) as tcp, HttpConn(d.port("web")) as web, \
            LineClient(d.port("lines")) as idle:
        assert idle.request("echo idle") == "idle"
        tcp.sendline("hold line reply")
        web.request("POST", "/hold", body=b"http reply")
        wait_for(lambda: d.stats()["handlers"]["hold"]["in_flight"] == 2, 5, what="two replies in flight")
        signal_and_wait(d, signal.SIGQUIT, r"shutting down \(SIGQUIT\): 3 connection\(s\) open$")
        # the idle connection goes now; the busy ones wait for their replies
        assert idle.read_until_closed() == (b"", True)
        assert d.alive()
        assert tcp.is_open() and web.is_open()
        # nobody new gets in
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", lines_port), timeout=2).close()
        gate.touch()
        assert tcp.readline() == "line reply"
        r = web.read_response()
        assert r.status == 200 and r.body == b"http reply", r
        assert tcp.read_until_closed() == (b"", True)
        web.wait_closed()
    assert d.wait(10) == 0, d.log_tail()
    assert re.search(r"\[info\] stopped$", d.log(), re.M)
    assert not SANITIZER_RE.search(d.log())


# ---- log files -----------------------------------------------------------------------------------


def test_move_then_usr1_loses_no_line(ctl_daemon, tmp_path):
    d = ctl_daemon(config(tmp_path))
    logs = tmp_path / "logs"
    access, rotated = logs / "access.log", logs / "access.log.1"
    jlog, jrotated = logs / "json.log", logs / "json.log.1"
    with HttpConn(d.port("web")) as web:
        for i in range(5):
            get(web, f"/a{i}")
        wait_lines(access, 5)
        os.rename(access, rotated)
        os.rename(jlog, jrotated)
        # until the signal, lines still go to the moved files
        for i in range(3):
            get(web, f"/b{i}")
        wait_lines(rotated, 8)
        wait_lines(jrotated, 8)
        assert not access.exists()
        signal_and_wait(d, signal.SIGUSR1, r"\[info\] SIGUSR1: reopened 2 log file\(s\)$")
        # reopening created the files afresh (mode 0640), empty
        assert access.read_text() == "" and jlog.read_text() == ""
        assert access.stat().st_mode & 0o777 == 0o640
        for i in range(4):
            get(web, f"/c{i}")
        wait_lines(access, 4)
        wait_lines(jlog, 4)
        assert targets(rotated) == [f"/a{i}" for i in range(5)] + [f"/b{i}" for i in range(3)]
        assert targets(access) == [f"/c{i}" for i in range(4)]
        assert len(lines_of(rotated)) == 8 and len(lines_of(jrotated)) == 8
        # the same keep-alive connection served all twelve requests
        assert d.stats()["listeners"]["web"]["total_connections"] == 1
    stop(d)


def test_usr1_counts_only_the_files_in_use_after_a_reload(ctl_daemon, tmp_path):
    d = ctl_daemon(config(tmp_path))
    with HttpConn(d.port("web")) as web:
        get(web, "/one")
    assert d.ctl("reload")["ok"] is True
    # the old router's files were closed with it: still two files, not four
    signal_and_wait(d, signal.SIGUSR1, r"\[info\] SIGUSR1: reopened 2 log file\(s\)$")
    # a config without access logs has none
    d.write_config(config(tmp_path).replace('middleware: ["access", "jsonlog"]', ""))
    assert d.ctl("reload")["ok"] is True
    signal_and_wait(d, signal.SIGUSR1, r"\[info\] SIGUSR1: reopened 0 log file\(s\)$")
    stop(d)


def test_usr1_keeps_the_old_file_when_the_path_cannot_be_opened(ctl_daemon, tmp_path):
    d = ctl_daemon(config(tmp_path))
    logs, moved = tmp_path / "logs", tmp_path / "logs.old"
    with HttpConn(d.port("web")) as web:
        get(web, "/one")
        wait_lines(logs / "access.log", 1)
        os.rename(logs, moved)  # LOGDIR/access.log cannot be created any more
        signal_and_wait(d, signal.SIGUSR1,
                        r"\[warn\] SIGUSR1: reopened 0 log file\(s\), 2 could not be reopened$")
        assert re.search(rf"\[error\] cannot reopen log file {re.escape(str(logs))}/access\.log, still writing "
                         r"to the old one: No such file or directory$", d.log(), re.M)
        get(web, "/two")
        wait_lines(moved / "access.log", 2)
        assert targets(moved / "access.log") == ["/one", "/two"]
        # once the directory is back, the next USR1 moves on to it
        logs.mkdir()
        signal_and_wait(d, signal.SIGUSR1, r"\[info\] SIGUSR1: reopened 2 log file\(s\)$")
        get(web, "/three")
        wait_lines(logs / "access.log", 1)
        assert targets(logs / "access.log") == ["/three"]
        assert len(lines_of(moved / "access.log")) == 2
    stop(d)


FAKE_SYSTEMCTL = """#!/bin/sh
# systemctl as the logrotate snippet calls it, for one service whose main
# process is $TUSKNETD_PID; anything else is an error.
echo "$*" >> "$SYSTEMCTL_CALLS"
case "$*" in
"--quiet is-active tusknetd.service") exit 0 ;;
"kill --kill-who=main --signal=USR1 tusknetd.service") exec kill -USR1 "$TUSKNETD_PID" ;;
esac
echo "unexpected systemctl call: $*" >&2
exit 1
"""


def test_logrotate_with_the_shipped_snippet(ctl_daemon, tmp_path):
    logrotate = shutil.which("logrotate") or (os.access("/usr/sbin/logrotate", os.X_OK) and "/usr/sbin/logrotate")
    if not logrotate:
        pytest.fail("logrotate is not installed (Debian package logrotate, in the Makefile's DEB_TEST)")
    d = ctl_daemon(config(tmp_path))
    logs = tmp_path / "logs"
    snippet = LOGROTATE.read_text()
    assert "/var/log/tusknetd/*.log {" in snippet
    conf = tmp_path / "logrotate.conf"
    conf.write_text(snippet.replace("/var/log/tusknetd/", f"{logs}/"))
    conf.chmod(0o644)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bindir / "systemctl").chmod(0o755)
    calls = tmp_path / "systemctl.calls"
    env = dict(os.environ, PATH=f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin", TUSKNETD_PID=str(d.pid),
               SYSTEMCTL_CALLS=str(calls))

    def rotate(round_no):
        n = log_count(d, r"SIGUSR1: reopened 2 log file\(s\)$")
        r = subprocess.run([logrotate, "-f", "-s", str(tmp_path / "state"), str(conf)], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        wait_for(lambda: log_count(d, r"SIGUSR1: reopened 2 log file\(s\)$") == n + 1, 5,
                 what=f"the reopen of rotation {round_no}")

    with HttpConn(d.port("web")) as web:
        for i in range(6):
            get(web, f"/a{i}")
        wait_lines(logs / "access.log", 6)
        wait_lines(logs / "json.log", 6)
        rotate(1)
        # sharedscripts: one postrotate for both files
        assert calls.read_text().splitlines() == ["--quiet is-active tusknetd.service",
                                                  "kill --kill-who=main --signal=USR1 tusknetd.service"]
        # delaycompress: the fresh .1 stays plain; nocreate: the daemon made the new file
        assert targets(logs / "access.log.1") == [f"/a{i}" for i in range(6)]
        assert (logs / "access.log").read_text() == ""
        for i in range(3):
            get(web, f"/b{i}")
        wait_lines(logs / "access.log", 3)
        rotate(2)
        assert targets(logs / "access.log.1") == [f"/b{i}" for i in range(3)]
        with gzip.open(logs / "access.log.2.gz", "rt") as f:
            old = f.read().splitlines()
        assert [re.search(r'"GET (\S+) ', ln).group(1) for ln in old] == [f"/a{i}" for i in range(6)]
        with gzip.open(logs / "json.log.2.gz", "rt") as f:
            assert len(f.read().splitlines()) == 6
        assert d.stats()["listeners"]["web"]["total_connections"] == 1
    stop(d)


def test_logrotate_snippet_settings():
    text = LOGROTATE.read_text()
    body = text[text.index("/var/log/tusknetd/*.log {"):]
    directives = [ln.strip() for ln in body.splitlines()[1:] if ln.strip()]
    for word in ("missingok", "notifempty", "compress", "delaycompress", "nocreate", "sharedscripts"):
        assert word in directives, word
    post = body[body.index("postrotate"):body.index("endscript")]
    assert "systemctl kill --kill-who=main --signal=USR1 tusknetd.service" in post


# ---- reload through tusknetctl, as the unit runs it -------------------------------------------------


def exec_reload_argv():
    """The unit's ExecReload= command line, with the installed path pointed at the build."""
    lines = [ln for ln in SERVICE.read_text().splitlines() if ln.startswith("ExecReload=")]
    assert len(lines) == 1, lines
    argv = shlex.split(lines[0][len("ExecReload="):])
    assert argv[0] == "/usr/local/bin/tusknetctl", argv
    return [TUSKNETCTL] + argv[1:]


def run_exec_reload(d, env=None):
    # systemd runs it with the unit's environment; the socket comes from
    # TUSKNETCTL_SOCKET here, as a drop-in would set it for a non-default path
    e = dict(os.environ, TUSKNETCTL_SOCKET=d.control, MAINPID=str(d.pid))
    e.update(env or {})
    return subprocess.run(exec_reload_argv(), capture_output=True, text=True, timeout=60, env=e)


def position(text, needle):
    idx = text.index(needle)
    return text.count("\n", 0, idx) + 1, idx - text.rfind("\n", 0, idx)


def test_exec_reload_refused_config_fails_and_reports_the_position(ctl_daemon, tmp_path, notify):
    d = ctl_daemon(config(tmp_path), env={"NOTIFY_SOCKET": notify.path})
    with LineClient(d.port("lines")) as c:
        assert c.request("greet") == "hello v1"
        good = d.config
        bad = good.replace('reply: "hello v1"', 'reply: "hello v2" colour: "red"') \
                  .replace('shutdown_timeout: "20s"', 'shutdown_timeout: "20 parsecs"')
        path = d.write_raw_config(bad)
        notify.pending()
        r = run_exec_reload(d)
        assert r.returncode == 1, r
        assert r.stdout == ""
        l1, c1 = position(bad, '"20 parsecs"')
        l2, c2 = position(bad, "colour")
        assert r.stderr.splitlines() == [
            f"{path}:{l1}:{c1}: 'shutdown_timeout': bad duration \"20 parsecs\" (use e.g. 250ms, 30s, 5m, 1h)",
            f"{path}:{l2}:{c2}: unknown key 'colour' in handler 'greet'",
            "tusknetctl: reload refused; tusknetd keeps the running configuration",
        ], r.stderr
        # RELOADING=1 and READY=1 were sent before the answer: both are queued
        msgs = notify.pending()
        assert [m.get("RELOADING") for m in msgs if "RELOADING" in m] == ["1"], msgs
        ready = [m for m in msgs if m.get("READY") == "1"]
        assert len(ready) == 1 and ready[0]["STATUS"].startswith(f"Reload failed: {path}:{l1}:{c1}: "), msgs
        assert msgs.index(ready[0]) > [i for i, m in enumerate(msgs) if "RELOADING" in m][0]
        # the old configuration serves on, on the same connection
        assert c.request("greet") == "hello v1"
        assert d.stats()["reloads_refused"] == 1

        d.write_config(CONFIG_V2(tmp_path))
        r = run_exec_reload(d)
        assert (r.returncode, r.stdout, r.stderr) == \
            (0, "ok: configuration reloaded (reloads so far: 1 ok, 1 refused)\n", ""), r
        msgs = notify.pending()
        assert [k for m in msgs for k in ("RELOADING", "READY") if m.get(k) == "1"] == ["RELOADING", "READY"], msgs
        assert c.request("greet") == "hello v2"
    stop(d)


def CONFIG_V2(tmp_path):
    return config(tmp_path).replace("hello v1", "hello v2")


def test_exec_reload_refused_when_a_new_port_is_taken(ctl_daemon, tmp_path):
    """A refusal that is not a syntax error (a port in use) fails the same way."""
    d = ctl_daemon(config(tmp_path))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        text = d.config + f'more {{ protocol: "tcp" listen: "127.0.0.1:{port}" handler: "echo" }}\n'
        path = d.write_raw_config(text)
        r = run_exec_reload(d)
        assert r.returncode == 1, r
        ln, col = position(text, f'"127.0.0.1:{port}"')
        err = r.stderr.splitlines()
        assert err[0].startswith(f"{path}:{ln}:{col}: listener 'more': cannot bind"), err
        assert err[-1] == "tusknetctl: reload refused; tusknetd keeps the running configuration"
        assert "more" not in d.listeners()
    finally:
        busy.close()
    stop(d)


def test_exec_reload_without_a_daemon_fails(tmp_path):
    e = dict(os.environ, TUSKNETCTL_SOCKET=str(tmp_path / "none.sock"))
    r = subprocess.run(exec_reload_argv(), capture_output=True, text=True, timeout=30, env=e)
    assert r.returncode == 1
    assert r.stderr == (f"tusknetctl: cannot connect to {tmp_path / 'none.sock'}: No such file or directory "
                        "(is tusknetd running?)\n")


def test_unit_reload_and_logs_settings():
    text = SERVICE.read_text()
    settings = {}
    for ln in text.splitlines():
        if "=" in ln and not ln.startswith("#"):
            k, _, v = ln.partition("=")
            settings.setdefault(k, []).append(v)
    assert settings["ExecReload"] == ["/usr/local/bin/tusknetctl reload"]
    # the control socket tusknetctl uses by default lives in the RuntimeDirectory
    assert settings["RuntimeDirectory"] == ["tusknetd"]
    r = subprocess.run([TUSKNETCTL, "--help"], capture_output=True, text=True, timeout=10)
    assert "/run/tusknetd/control.sock" in r.stdout
    # access logs under /var/log/tusknetd, which the logrotate snippet rotates
    assert settings["LogsDirectory"] == ["tusknetd"]
    assert settings["KillMode"] == ["mixed"]


def test_make_install_puts_the_logrotate_snippet(tmp_path):
    dest = tmp_path / "root"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    r = subprocess.run(["make", "-C", str(REPO_ROOT), "install", f"DESTDIR={dest}", "PREFIX=/opt/tn"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    installed = dest / "etc/logrotate.d/tusknetd"
    assert installed.read_text() == LOGROTATE.read_text()
    assert installed.stat().st_mode & 0o777 == 0o644
    unit = (dest / "opt/tn/lib/systemd/system/tusknetd.service").read_text()
    assert "\nExecReload=/opt/tn/bin/tusknetctl reload\n" in unit
    assert os.access(dest / "opt/tn/bin/tusknetctl", os.X_OK)
    # an operator's edit survives the next install
    installed.write_text(installed.read_text().replace("rotate 14", "rotate 30"))
    r = subprocess.run(["make", "-C", str(REPO_ROOT), "install", f"DESTDIR={dest}", "PREFIX=/opt/tn"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rotate 30" in installed.read_text()


# ---- tusknetctl exit statuses ----------------------------------------------------------------------


USAGE = [
    (["frobnicate"], "tusknetctl: unknown command 'frobnicate'"),
    (["STATS"], "tusknetctl: unknown command 'STATS'"),
    (["--bogus", "stats"], "tusknetctl: unknown option '--bogus'"),
    (["stats", "--bogus"], "tusknetctl: unknown option '--bogus' for stats"),
    (["reload", "now"], "tusknetctl: reload takes no arguments"),
    (["close"], "tusknetctl: usage: tusknetctl close ID"),
    (["close", "abc"], "tusknetctl: connection ID must be a number, not 'abc'"),
    (["close", "-5"], "tusknetctl: connection ID must be a number, not '-5'"),
    (["log-level"], "tusknetctl: usage: tusknetctl log-level LEVEL"),
    (["log-level", "loud"], "tusknetctl: log-level takes error, warn, info or debug, not 'loud'"),
    (["log-level", "INFO"], "tusknetctl: log-level takes error, warn, info or debug, not 'INFO'"),
    (["-s"], "tusknetctl: option -s needs a value"),
    (["-s", "", "stats"], "tusknetctl: the control socket path is empty"),
    ([], "tusknetctl: no command given"),
]


@pytest.mark.parametrize("args,message", USAGE, ids=[" ".join(a) or "none" for a, _ in USAGE])
def test_usage_errors_exit_2_before_connecting(ctl_daemon, tmp_path, args, message):
    d = ctl_daemon(config(tmp_path))
    before = d.stats()["reloads"]
    r = subprocess.run([TUSKNETCTL] + args, capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, TUSKNETCTL_SOCKET=d.control))
    assert r.returncode == 2, r
    assert r.stdout == ""
    assert r.stderr == message + "\nTry 'tusknetctl --help' for more information.\n"
    assert d.stats()["reloads"] == before
    stop(d)


def test_daemon_errors_exit_1_and_success_0(ctl_daemon, tmp_path):
    d = ctl_daemon(config(tmp_path))
    env = dict(os.environ, TUSKNETCTL_SOCKET=d.control)

    def run(*args):
        return subprocess.run([TUSKNETCTL, *args], capture_output=True, text=True, timeout=30, env=env)

    r = run("close", "999999")
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "tusknetctl: no connection 999999\n")
    r = run("connections", "nope")
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "tusknetctl: no listener 'nope'\n")
    r = run("broadcast", "nope", "hi")
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "tusknetctl: no handler 'nope'\n")
    r = run("log-level", "info")
    assert (r.returncode, r.stdout, r.stderr) == (0, "ok: log level info\n", "")
    r = run("reload")
    assert (r.returncode, r.stdout, r.stderr) == (0, "ok: configuration reloaded (reloads so far: 1 ok, 0 refused)\n", "")
    d.write_raw_config(d.config.replace("[handlers]", "[handlers]\nbroken {"))
    r = run("--json", "reload")
    assert r.returncode == 1
    assert '"ok":false' in r.stdout and '"reloads_refused":1' in r.stdout
    assert r.stderr.endswith("tusknetctl: reload refused; tusknetd keeps the running configuration\n")
    r = run("version")
    assert r.returncode == 0 and r.stdout.startswith("tusknetd ")
    stop(d)
