# SPDX-License-Identifier: MIT
"""systemd integration without systemd running: sd_notify
messages read from a NOTIFY_SOCKET the test binds (READY=1, STATUS=,
RELOADING=1/READY=1 around reloads, STOPPING=1, WATCHDOG=1), socket
activation (sockets passed as systemd passes them, matched by
FileDescriptorName or by address, and through systemd-socket-activate),
journald priority prefixes, the unit files (systemd-analyze verify), and
`make install` with DESTDIR and PREFIX."""
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ctl_util import (  # noqa: F401  (ctl_daemon and notify are fixtures)
    REPO_ROOT,
    TUSKNETCTL,
    TUSKNETD,
    Collector,
    activation,
    ctl_daemon,
    daemon_socket_inodes,
    notify,
)
from daemon_util import LineClient, UdpClient, free_port

CONFIG = """
[daemon]
log_level: "debug"
shutdown_timeout: "3s"

[handlers]
echo  { type: "echo" }
greet { type: "static" reply: "hello v1" }

[listeners]
lines { protocol: "tcp" listen: "127.0.0.1:0" handlers: ["echo", "greet"] }
dgram { protocol: "udp" listen: "127.0.0.1:0" handlers: ["echo", "greet"] }
"""


def start_notified(ctl_daemon, notify, config=CONFIG, env=None, **kw):
    e = {"NOTIFY_SOCKET": notify.path}
    e.update(env or {})
    return ctl_daemon(config, env=e, **kw)


# ---- sd_notify ----------------------------------------------------------------------------------


def test_ready_after_listeners_are_bound(ctl_daemon, notify):
    d = start_notified(ctl_daemon, notify, start=False)
    d.start(wait_ready=False)
    ready = notify.wait_key("READY", "1")
    # at READY=1 everything already serves: no retry allowed here
    ls = d.listeners()
    with LineClient(int(ls["lines"]["address"].rsplit(":", 1)[1])) as c:
        assert c.request("greet") == "hello v1"
    with UdpClient(int(ls["dgram"]["address"].rsplit(":", 1)[1])) as u:
        assert u.request("greet") == b"hello v1"
    assert ready.get("MAINPID", str(d.pid)) == str(d.pid)
    # nothing claimed readiness before that, and a summary follows
    readies = [m for m in notify.messages if m[1].get("READY") == "1"]
    assert len(readies) == 1
    status = ready.get("STATUS") or notify.wait_key("STATUS")["STATUS"]
    assert re.match(r"Serving: 2 listener\(s\), 2 handler\(s\), 0 connection\(s\)", status), status


@pytest.mark.parametrize("how", ["signal", "command"])
def test_reloading_then_ready_around_a_reload(ctl_daemon, notify, how):
    d = start_notified(ctl_daemon, notify)
    notify.wait_key("READY", "1")
    notify.drain(0.1)
    d.write_config(CONFIG.replace("hello v1", "hello v2"))
    t0 = time.clock_gettime(time.CLOCK_MONOTONIC)
    if how == "signal":
        d.send_signal(signal.SIGHUP)
    else:
        assert d.ctl("reload")["ok"] is True
    reloading = notify.wait_key("RELOADING", "1")
    # MONOTONIC_USEC: when the reload started, on CLOCK_MONOTONIC
    # (between the request and the notification's arrival: an order, not a duration)
    t1 = time.clock_gettime(time.CLOCK_MONOTONIC)
    usec = int(reloading["MONOTONIC_USEC"])
    assert t0 <= usec / 1e6 <= t1, (usec, t0, t1)
    assert reloading == {"RELOADING": "1", "MONOTONIC_USEC": str(usec), "STATUS": f"Reloading {d.config_path}"}
    notify.wait_key("READY", "1")
    status = notify.wait(lambda f: f.get("STATUS", "").startswith("Reloaded"), what="STATUS=Reloaded")
    assert status["STATUS"] == "Reloaded: 2 listener(s), 2 handler(s), 0 connection(s)", status
    with LineClient(d.port("lines")) as c:
        assert c.request("greet") == "hello v2"


@pytest.mark.parametrize("how", ["signal", "command"])
def test_failed_reload_reports_status(ctl_daemon, notify, how):
    d = start_notified(ctl_daemon, notify)
    notify.wait_key("READY", "1")
    text = d.render(CONFIG.replace('greet { type: "static" reply: "hello v1" }',
                                   'greet { type: "static" reply: "hello v1" colour: "red" }'))
    path = d.write_raw_config(text)
    if how == "signal":
        d.send_signal(signal.SIGHUP)
    else:
        assert d.ctl("reload")["ok"] is False
    notify.wait_key("RELOADING", "1")
    ready = notify.wait_key("READY", "1")
    idx = text.index("colour")
    line = text.count("\n", 0, idx) + 1
    col = idx - text.rfind("\n", 0, idx)
    # one notification: READY=1 with the first diagnostic as STATUS, on one line
    assert ready == {"READY": "1",
                     "STATUS": f"Reload failed: {path}:{line}:{col}: unknown key 'colour' in handler 'greet'"}, ready
    with LineClient(d.port("lines")) as c:
        assert c.request("greet") == "hello v1"


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "shutdown"])
def test_stopping(ctl_daemon, notify, how):
    d = start_notified(ctl_daemon, notify)
    notify.wait_key("READY", "1")
    with d.client() as c:
        if how == "shutdown":
            c.send_line("shutdown")
        else:
            d.send_signal(getattr(signal, how))
        stopping = notify.wait_key("STOPPING", "1")
    why = {"SIGTERM": "SIGTERM", "SIGINT": "SIGINT", "shutdown": "control socket"}[how]
    assert stopping == {"STOPPING": "1", "STATUS": f"Shutting down ({why})"}, stopping
    assert d.wait(10) == 0


def test_watchdog(ctl_daemon, notify):
    d = start_notified(ctl_daemon, notify, env={"WATCHDOG_USEC": "200000"})
    notify.wait_key("READY", "1")
    # the interval is half of WATCHDOG_USEC (what systemd recommends); how
    # punctual the pings are is timing, so only the interval chosen and that
    # the pings keep coming are checked (5 s only bounds the waits)
    assert d.wait_log(r"watchdog every 100 ms", 1)
    for _ in range(5):
        assert notify.wait_key("WATCHDOG", "1", timeout=5) == {"WATCHDOG": "1"}
    # it keeps coming while the daemon is busy with clients
    with LineClient(d.port("lines")) as c:
        for i in range(200):
            c.sendline(f"echo {i}")
        c.readlines(200)
    assert notify.wait_key("WATCHDOG", "1", timeout=5) == {"WATCHDOG": "1"}


def test_no_watchdog_without_watchdog_usec(ctl_daemon, notify):
    start_notified(ctl_daemon, notify)
    notify.wait_key("READY", "1")
    msgs = notify.drain(0.6)
    assert not any("WATCHDOG" in m for m in msgs), msgs


def test_watchdog_for_another_pid_is_ignored(ctl_daemon, notify):
    # WATCHDOG_PID names the process the watchdog is meant for
    d = start_notified(ctl_daemon, notify, env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    notify.wait_key("READY", "1")
    msgs = notify.drain(0.6)
    assert not any("WATCHDOG" in m for m in msgs), msgs
    assert d.alive()


def test_runs_without_notify_socket(ctl_daemon):
    d = ctl_daemon(CONFIG)
    with LineClient(d.port("lines")) as c:
        assert c.request("greet") == "hello v1"
    assert d.stop() == 0


# ---- socket activation ------------------------------------------------------------------------


def tcp_socket(port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    return s


def udp_socket(port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    return s


def inode(sock):
    return os.fstat(sock.fileno()).st_ino


def start_activated(ctl_daemon, config, sockets, names, **kw):
    launcher, env, popen_kw = activation(sockets, names)
    d = ctl_daemon(config, start=False, launcher=launcher, env=env, popen_kw=popen_kw, **kw)
    try:
        d.start()
    finally:
        for s in sockets:
            s.close()  # the daemon has its own copies now
    return d


NAMED = """
[daemon]
log_level: "debug"

[handlers]
echo  { type: "echo" }
greet { type: "static" reply: "hello v1" }

[listeners]
lines { protocol: "tcp" listen: "127.0.0.1:0" handlers: ["echo", "greet"] fd_name: "lines" }
dgram { protocol: "udp" listen: "127.0.0.1:0" handlers: ["echo", "greet"] fd_name: "dgram" }
"""


def test_socket_activation_by_name(ctl_daemon):
    t, u = tcp_socket(), udp_socket()
    tport, uport = t.getsockname()[1], u.getsockname()[1]
    inodes = {inode(t), inode(u)}
    # the datagram socket first: names, not order or guesswork, decide
    d = start_activated(ctl_daemon, NAMED, [u, t], ["dgram", "lines"])
    ls = d.listeners()
    assert ls["lines"]["address"] == f"127.0.0.1:{tport}"
    assert ls["dgram"]["address"] == f"127.0.0.1:{uport}"
    assert inodes <= daemon_socket_inodes(d.pid)
    with LineClient(tport) as c:
        assert c.request("greet") == "hello v1"
        assert c.request("echo activated") == "activated"
    with UdpClient(uport) as x:
        assert x.request("echo activated") == b"activated"
    assert d.wait_log(r"listener lines: using the socket passed by systemd", 1)
    assert d.wait_log(r"listener dgram: using the socket passed by systemd", 1)
    assert d.wait_log(r"systemd: 2 socket\(s\) passed", 1)


def test_socket_activation_by_address(ctl_daemon):
    t, u = tcp_socket(), udp_socket()
    tport, uport = t.getsockname()[1], u.getsockname()[1]
    inodes = {inode(t), inode(u)}
    config = NAMED.replace(' fd_name: "lines"', "").replace(' fd_name: "dgram"', "")
    config = config.replace('"tcp" listen: "127.0.0.1:0"', f'"tcp" listen: "127.0.0.1:{tport}"')
    config = config.replace('"udp" listen: "127.0.0.1:0"', f'"udp" listen: "127.0.0.1:{uport}"')
    # no LISTEN_FDNAMES at all, like a plain .socket unit without names
    d = start_activated(ctl_daemon, config, [t, u], None)
    assert inodes <= daemon_socket_inodes(d.pid)
    with LineClient(tport) as c:
        assert c.request("echo by address") == "by address"
    with UdpClient(uport) as x:
        assert x.request("greet") == b"hello v1"
    assert d.wait_log(r"listener lines: using the socket passed by systemd", 1)
    assert d.wait_log(r"listener dgram: using the socket passed by systemd", 1)


def test_socket_activation_by_address_ignores_unit_names(ctl_daemon):
    # one .socket unit without FileDescriptorName: systemd names every socket
    # after the unit; listeners without fd_name still match by address
    t, u = tcp_socket(), udp_socket()
    tport, uport = t.getsockname()[1], u.getsockname()[1]
    config = NAMED.replace(' fd_name: "lines"', "").replace(' fd_name: "dgram"', "")
    config = config.replace('"tcp" listen: "127.0.0.1:0"', f'"tcp" listen: "127.0.0.1:{tport}"')
    config = config.replace('"udp" listen: "127.0.0.1:0"', f'"udp" listen: "127.0.0.1:{uport}"')
    d = start_activated(ctl_daemon, config, [u, t], ["tusknetd.socket", "tusknetd.socket"])
    with LineClient(tport) as c:
        assert c.request("echo x") == "x"
    with UdpClient(uport) as x:
        assert x.request("echo y") == b"y"
    assert d.listeners()["lines"]["address"] == f"127.0.0.1:{tport}"


def test_socket_activation_same_name_matched_by_type(ctl_daemon):
    # FileDescriptorName= names every socket of a .socket unit: a stream and a
    # datagram socket of one unit share the name; each listener must get the
    # socket of its own type
    t, u = tcp_socket(), udp_socket()
    tport, uport = t.getsockname()[1], u.getsockname()[1]
    config = NAMED.replace('fd_name: "lines"', 'fd_name: "both"').replace('fd_name: "dgram"', 'fd_name: "both"')
    d = start_activated(ctl_daemon, config, [u, t], ["both", "both"])
    ls = d.listeners()
    assert ls["lines"]["address"] == f"127.0.0.1:{tport}", ls
    assert ls["dgram"]["address"] == f"127.0.0.1:{uport}", ls
    with LineClient(tport) as c:
        assert c.request("echo x") == "x"
    with UdpClient(uport) as x:
        assert x.request("echo y") == b"y"


def test_unclaimed_passed_socket_is_closed(ctl_daemon):
    t, extra = tcp_socket(), tcp_socket()
    tport = t.getsockname()[1]
    extra_inode = inode(extra)
    extra_port = extra.getsockname()[1]
    d = start_activated(ctl_daemon, NAMED, [t, extra], ["lines", "stray"])
    assert d.wait_log(r"passed socket \d+ \(stray\) matches no listener; closing it", 2)
    assert extra_inode not in daemon_socket_inodes(d.pid)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", extra_port), timeout=2).close()
    with LineClient(tport) as c:
        assert c.request("echo x") == "x"
    # the UDP listener with no passed socket bound its own
    assert d.port("dgram") != 0


def test_listen_pid_of_another_process_is_ignored(ctl_daemon, tmp_path):
    # LISTEN_PID names the process the sockets are meant for
    t = tcp_socket()
    tport = t.getsockname()[1]
    d = ctl_daemon(NAMED, start=False, env={"LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "lines"})
    d.start()
    t.close()
    assert d.port("lines") != tport
    assert "socket(s) passed" not in d.log()


def test_systemd_socket_activate(ctl_daemon):
    tool = shutil.which("systemd-socket-activate")
    if not tool:
        pytest.skip("systemd-socket-activate not installed (Debian package systemd)")
    port = free_port()
    d = ctl_daemon(NAMED, start=False,
                   launcher=[tool, "-l", f"127.0.0.1:{port}", "--fdname=lines", "-E", "TUSKNET_TEST=1"])
    d.start(wait_ready=False)
    # the daemon starts on the first connection, which it then serves
    deadline = time.monotonic() + 5
    while True:
        try:
            c = LineClient(port, timeout=10)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                pytest.fail(f"systemd-socket-activate did not listen on {port}\n{d.log()}")
            time.sleep(0.05)
    with c:
        assert c.request("echo first", timeout=10) == "first"
        d.wait_ready()
        assert d.port("lines") == port
        assert c.request("greet") == "hello v1"
    assert d.wait_log(r"listener lines: using the socket passed by systemd", 1)
    with LineClient(port) as c2:
        assert c2.request("echo second") == "second"


def socket_unit_addresses():
    """[(kind, host, port)] of the Listen lines of systemd/tusknetd.socket."""
    out = []
    for line in (REPO_ROOT / "systemd" / "tusknetd.socket").read_text().splitlines():
        m = re.match(r"^(ListenStream|ListenDatagram)=(\S+):(\d+)\s*$", line)
        if m:
            out.append(("tcp" if m.group(1) == "ListenStream" else "udp", m.group(2), int(m.group(3))))
    return out


def test_socket_unit_matches_the_example_config(ctl_daemon, tmp_path):
    """The sockets tusknetd.socket declares, passed as systemd would (both
    named after the unit), are taken by tusknetd.conf.example's listeners."""
    addrs = socket_unit_addresses()
    assert sorted(k for k, _, _ in addrs) == ["tcp", "udp"], addrs
    socks = []
    try:
        for kind, host, port in addrs:
            socks.append(tcp_socket(port) if kind == "tcp" else udp_socket(port))
        probe = tcp_socket(8080)  # the example's http listener binds it itself
        probe.close()
    except OSError as e:
        for s in socks:
            s.close()
        pytest.skip(f"the example's fixed ports are in use here: {e}")
    example = (REPO_ROOT / "tusknetd.conf.example").read_text()
    # the example's file handler serves ./conf/www next to the config file
    (tmp_path / "conf" / "www").mkdir(parents=True, exist_ok=True)
    launcher, env, popen_kw = activation(socks, ["tusknetd.socket"] * len(socks))
    d = ctl_daemon("", start=False, launcher=launcher, env=env, popen_kw=popen_kw)
    env["TUSKNET_CONTROL"] = d.control
    d.write_raw_config(example)
    d.config = example
    try:
        d.start()
    finally:
        for s in socks:
            s.close()
    ls = d.listeners()
    (tk, th, tp), = [a for a in addrs if a[0] == "tcp"]
    (uk, uh, up), = [a for a in addrs if a[0] == "udp"]
    assert ls["lines"]["address"] == f"{th}:{tp}"
    assert ls["dgram"]["address"] == f"{uh}:{up}"
    assert d.wait_log(r"listener lines: using the socket passed by systemd", 1)
    assert d.wait_log(r"listener dgram: using the socket passed by systemd", 1)
    assert "matches no listener" not in d.log()
    with LineClient(tp) as c:
        assert c.request("ping") == "+PONG"
        assert c.request("echo unit") == "unit"
    with UdpClient(up) as u:
        assert u.request("echo unit") == b"unit"


# ---- journald priorities -------------------------------------------------------------------------


def journald_daemon(ctl_daemon, config, matching=True, **kw):
    r, w = os.pipe()
    st = os.fstat(w)
    stream = f"{st.st_dev}:{st.st_ino}" if matching else f"{st.st_dev}:{st.st_ino + 1}"
    col = Collector(r)
    col.start()
    d = ctl_daemon(config, start=False, stderr=w, env={"JOURNAL_STREAM": stream}, **kw)
    try:
        d.start()
    finally:
        os.close(w)
    return d, col, r


def test_journald_priority_prefixes(ctl_daemon):
    d, col, r = journald_daemon(ctl_daemon, CONFIG)
    try:
        assert col.wait_for(r"^<6>tusknetd started", 3), col.text()
        # an error: a refused reload, whose message spans two lines (two
        # diagnostics): each line of it must carry the priority, or journald
        # stores the second one as a separate entry at the default priority
        text = d.render(CONFIG.replace("hello v1", "hello v1\" oops"))
        d.write_raw_config(text)
        assert d.ctl("reload")["ok"] is False
        assert col.wait_for(r"^<3>reload failed", 3), col.text()
        # a warning: control_socket changes wait for a restart
        d.write_raw_config(text.replace('hello v1" oops', "hello v2").replace(d.control, d.control + ".new"))
        assert d.ctl("reload")["ok"] is True
        assert col.wait_for(r"^<4>reload: control_socket changes", 3), col.text()
        # debug: a connection closed by the control socket
        with LineClient(d.port("lines")) as c:
            assert c.request("greet") == "hello v2"
            cid = d.connection_of(c.local_addr())["id"]
            assert d.ctl(f"close {cid}")["ok"] is True
            c.read_until_closed(2)
        assert col.wait_for(r"^<7>", 3), col.text()
        assert d.stop() == 0
        col.join(5)
        lines = [l for l in col.text().splitlines() if l]
        assert lines
        bad = [l for l in lines if not re.match(r"^<[0-7]>\S", l)]
        assert not bad, bad
        # the journal stamps the time itself: none in the line
        assert not any(re.match(r"^<\d>\d{4}-\d\d-\d\d", l) for l in lines), lines[:5]
    finally:
        os.close(r)


def test_no_prefixes_when_journal_stream_is_not_stderr(ctl_daemon):
    # JOURNAL_STREAM inherited from elsewhere (another stream): plain lines
    d, col, r = journald_daemon(ctl_daemon, CONFIG, matching=False)
    try:
        assert col.wait_for(r"tusknetd started", 3), col.text()
        assert d.stop() == 0
        col.join(5)
        lines = [l for l in col.text().splitlines() if l]
        assert lines and not any(l.startswith("<") for l in lines), lines[:5]
        assert all(re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[(error|warn|info|debug)\] ", l)
                   for l in lines), lines[:5]
    finally:
        os.close(r)


# ---- the unit files --------------------------------------------------------------------------------


def unit_settings(path):
    """{section: {key: [values]}} of a systemd unit file."""
    out, section = {}, None
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1], {})
            continue
        k, _, v = line.partition("=")
        section.setdefault(k.strip(), []).append(v.strip())
    return out


def test_service_unit_settings():
    s = unit_settings(REPO_ROOT / "systemd" / "tusknetd.service")["Service"]
    one = {k: v[-1] for k, v in s.items()}
    assert one["Type"] == "notify"
    assert one["ExecStart"] == "/usr/local/bin/tusknetd -c /etc/tusknetd/tusknetd.conf"
    assert one["ExecReload"] == "/usr/local/bin/tusknetctl reload"
    assert one["WatchdogSec"] == "30s"
    assert one["Restart"] == "on-failure"
    assert one["RuntimeDirectory"] == "tusknetd"
    assert one["LimitNOFILE"] == "65536"
    assert "CAP_NET_BIND_SERVICE" in one["AmbientCapabilities"].split()
    assert one["CapabilityBoundingSet"].split() == ["CAP_NET_BIND_SERVICE"]
    assert one["DynamicUser"] == "yes" and "User" not in one
    for k in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
              "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "RestrictNamespaces",
              "LockPersonality"):
        assert one.get(k) == "yes", k
    assert one["ProtectSystem"] == "strict"
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert one["SystemCallArchitectures"] == "native"
    # exec and stream handlers fork and exec: nothing may take that away
    # (@system-service includes @process)
    assert s["SystemCallFilter"] == ["@system-service"]
    # the control socket's default path lives in the RuntimeDirectory
    assert "/run/tusknetd/control.sock" in (REPO_ROOT / "tusknetd.conf.example").read_text()


def test_socket_unit_settings():
    u = unit_settings(REPO_ROOT / "systemd" / "tusknetd.socket")
    s = u["Socket"]
    assert s["ListenStream"] == ["127.0.0.1:7000"]
    assert s["ListenDatagram"] == ["127.0.0.1:7001"]
    assert s["Service"] == ["tusknetd.service"]
    assert u["Install"]["WantedBy"] == ["sockets.target"]
    # FileDescriptorName= names every socket of the unit (systemd.socket(5)):
    # one name for a stream and a datagram socket would make both claim the
    # same listener's fd_name, so this unit leaves names out and the
    # listeners match by address
    if "FileDescriptorName" in s:
        assert len(s.get("ListenStream", []) + s.get("ListenDatagram", [])) == 1, s


def verify_units(directory, manpath):
    """systemd-analyze verify; it also runs man(1) for each man: page of
    Documentation=, found in MANPATH."""
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    r = subprocess.run([tool, "verify", "tusknetd.service", "tusknetd.socket"], cwd=str(directory),
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, SYSTEMD_LOG_LEVEL="notice", MANPATH=str(manpath)))
    return r


def repo_manpath(tmp_path):
    """A man path (man5/, man8/) holding the repository's man/ pages."""
    root = tmp_path / "manpath"
    for page in (REPO_ROOT / "man").iterdir():
        section = root / f"man{page.suffix[1:]}"
        section.mkdir(parents=True, exist_ok=True)
        (section / page.name).symlink_to(page)
    return root


def test_units_pass_systemd_analyze_verify(tmp_path):
    # with ExecStart pointing at the built binary (the installed path may not exist here)
    svc = (REPO_ROOT / "systemd" / "tusknetd.service").read_text()
    assert "ExecStart=/usr/local/bin/tusknetd " in svc
    (tmp_path / "tusknetd.service").write_text(svc.replace("/usr/local/bin/tusknetctl", TUSKNETCTL)
                                               .replace("/usr/local/bin/tusknetd", TUSKNETD))
    shutil.copy(REPO_ROOT / "systemd" / "tusknetd.socket", tmp_path / "tusknetd.socket")
    r = verify_units(tmp_path, repo_manpath(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (r.stdout + r.stderr).strip() == "", r.stdout + r.stderr


# ---- make install ---------------------------------------------------------------------------------


def test_make_install_destdir_prefix(tmp_path):
    if not shutil.which("make"):
        pytest.skip("make not installed")
    dest = tmp_path / "root"
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(k, None)
    r = subprocess.run(["make", "-C", str(REPO_ROOT), "install", f"DESTDIR={dest}", "PREFIX=/usr"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    tusknetd = dest / "usr/bin/tusknetd"
    tusknetctl = dest / "usr/bin/tusknetctl"
    service = dest / "usr/lib/systemd/system/tusknetd.service"
    sock = dest / "usr/lib/systemd/system/tusknetd.socket"
    conf = dest / "etc/tusknetd/tusknetd.conf"
    for p in (tusknetd, tusknetctl, service, sock, conf):
        assert p.is_file(), f"{p.relative_to(dest)} not installed; installed: " + \
            ", ".join(str(x.relative_to(dest)) for x in dest.rglob("*") if x.is_file())
    assert os.access(tusknetd, os.X_OK) and os.access(tusknetctl, os.X_OK)
    text = service.read_text()
    assert "ExecStart=/usr/bin/tusknetd -c /etc/tusknetd/tusknetd.conf" in text
    assert "/usr/local" not in text
    assert sock.read_text() == (REPO_ROOT / "systemd" / "tusknetd.socket").read_text()
    example = (REPO_ROOT / "tusknetd.conf.example").read_text()
    assert conf.read_text() == example.replace('"./conf/www"', '"/usr/share/tusknetd/www"')
    # the installed binary runs and accepts the installed config (whose site
    # root /usr/share/tusknetd/www is under DESTDIR here)
    v = subprocess.run([str(tusknetd), "-V"], capture_output=True, text=True, timeout=10)
    assert v.returncode == 0 and v.stdout.startswith("tusknetd "), v
    staged = dest / "etc/tusknetd/staged.conf"
    staged.write_text(conf.read_text().replace('"/usr/share/tusknetd/', f'"{dest}/usr/share/tusknetd/'))
    t = subprocess.run([str(tusknetd), "-t", "-c", str(staged)], capture_output=True, text=True, timeout=10)
    assert t.returncode == 0, t.stderr
    # a second install keeps an edited config
    conf.write_text(conf.read_text() + "\n# edited by the operator\n")
    r = subprocess.run(["make", "-C", str(REPO_ROOT), "install", f"DESTDIR={dest}", "PREFIX=/usr"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert conf.read_text().endswith("# edited by the operator\n")
    # the installed units verify (ExecStart pointed into DESTDIR: /usr/bin/tusknetd may not exist here)
    vdir = tmp_path / "verify"
    vdir.mkdir()
    (vdir / "tusknetd.service").write_text(text.replace("/usr/bin/tusknetctl", str(tusknetctl))
                                           .replace("/usr/bin/tusknetd", str(tusknetd)))
    shutil.copy(sock, vdir / "tusknetd.socket")
    r = verify_units(vdir, dest / "usr/share/man")
    assert r.returncode == 0, r.stdout + r.stderr
