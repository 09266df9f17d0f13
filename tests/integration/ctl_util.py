# SPDX-License-Identifier: MIT
"""Helpers for the control-socket, reload and systemd integration tests.

``CtlDaemon`` runs tusknetd on a config text written to tmp_path, with its
control socket in tmp_path (or in a directory the test names), waits until the
control socket answers, and talks to it over a real Unix socket: one command
per line, one JSON document per line back (``metrics`` answers Prometheus text
ending with ``# EOF``).

Listeners use port 0; their bound ports are read from the ``listeners``
answer's "address" field (``d.port("lines")``).

The ``ctl_daemon`` fixture is a factory: ``d = ctl_daemon(CONFIG)``. At
teardown every daemon is stopped like the ``daemon`` fixture's
(``DaemonProcess.shutdown``: SIGTERM, SIGKILL only if it does not go, then
every process it spawned, by pid), the tail of its log is printed, so a failing
test shows it, and a sanitizer report in the log fails the test.

The ``notify`` fixture is a NotifySocket standing in for systemd's
NOTIFY_SOCKET (give its ``.path`` to the daemon's environment).

Binaries: $TUSKNETD and $TUSKNETCTL (default build/release/tusknetd and
build/release/tusknetctl under the repository root).
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from daemon_util import DaemonProcess, descendants, fail_on_sanitizer_reports, pid_alive, stop_all  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]


def _binary(var, default):
    path = Path(os.environ.get(var) or REPO_ROOT / default)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return str(path)


TUSKNETD = _binary("TUSKNETD", "build/release/tusknetd")
TUSKNETCTL = _binary("TUSKNETCTL", "build/release/tusknetctl")

HOST = "127.0.0.1"
SUN_PATH_MAX = 107  # sizeof(sun_path) - 1


# ---- the control protocol -------------------------------------------------------


class CtlError(Exception):
    pass


class CtlClient:
    """One connection to a control socket."""

    def __init__(self, path, timeout=5.0):
        self.path = str(path)
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(self.path)
        except OSError:
            self.sock.close()
            raise
        self.buf = b""
        self.eof = False

    def fileno(self):
        return self.sock.fileno()

    def send_line(self, line):
        if isinstance(line, str):
            line = line.encode()
        self.sock.sendall(line + b"\n")

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout(f"no complete answer in time; have {self.buf[:300]!r}")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 20)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise CtlError(f"control connection closed; unread {self.buf[:300]!r}")
        self.buf += chunk

    def read_line(self, timeout=None):
        """The next line (str, without the newline)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\n" not in self.buf:
            self._fill(deadline)
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def read_json(self, timeout=None):
        line = self.read_line(timeout)
        try:
            return json.loads(line)
        except ValueError as e:
            raise CtlError(f"answer is not one JSON document on one line: {line[:500]!r}") from e

    def read_metrics(self, timeout=None):
        """Prometheus text up to and including the '# EOF' line."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            idx = self.buf.find(b"# EOF\n")
            if idx == 0 or (idx > 0 and self.buf[idx - 1 : idx] == b"\n"):
                text, self.buf = self.buf[: idx + 6], self.buf[idx + 6 :]
                return text.decode()
            self._fill(deadline)

    def command(self, line, timeout=None):
        """Sends LINE, returns the parsed JSON answer."""
        self.send_line(line)
        return self.read_json(timeout)

    def metrics(self, timeout=None):
        self.send_line("metrics")
        return self.read_metrics(timeout)

    def read_until_closed(self, timeout=3.0):
        """Everything until EOF. Returns (bytes, closed?)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            try:
                self._fill(deadline)
            except CtlError:
                break
            except socket.timeout:
                break
        data, self.buf = self.buf, b""
        return data, self.eof

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def ctl(path, line, timeout=5.0):
    """One command on a fresh connection; the parsed JSON answer."""
    with CtlClient(path, timeout) as c:
        return c.command(line, timeout)


def ctl_metrics(path, timeout=5.0):
    with CtlClient(path, timeout) as c:
        return c.metrics(timeout)


def parse_prometheus(text):
    """{(name, frozenset(labels.items())): float} of the samples in TEXT."""
    out = {}
    rx = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
    lrx = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = rx.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = frozenset(lrx.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def sample(samples, name, **labels):
    """The value of one sample (KeyError if it is missing)."""
    want = frozenset((k, str(v)) for k, v in labels.items())
    for (n, ls), v in samples.items():
        if n == name and want <= ls:
            return v
    raise KeyError(f"{name}{dict(labels)} not in the metrics")


# ---- processes ------------------------------------------------------------------


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise KeyError("VmRSS")


def wait_for(pred, timeout=5.0, interval=0.02, what="condition"):
    """Polls PRED until it returns a true value; returns it or fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def insert_daemon_keys(config, **keys):
    """CONFIG with KEYS set in its [daemon] section (added if missing);
    string values are quoted."""
    lines = []
    for k, v in keys.items():
        if isinstance(v, str):
            v = json.dumps(v)
        elif isinstance(v, bool):
            v = "true" if v else "false"
        lines.append(f"{k}: {v}")
    block = "\n".join(lines) + "\n"
    m = re.search(r"^\[daemon\][^\n]*\n", config, re.M)
    if m:
        return config[: m.end()] + block + config[m.end() :]
    return "[daemon]\n" + block + config


class CtlDaemon(DaemonProcess):
    """tusknetd with a control socket, started from a config text.

    config: the config text (without control_socket: it is added).
    control_dir: where the control socket goes (default tmp_path, or a short
        directory under /tmp when tmp_path is too long for a socket path).
    env: extra environment variables (merged into os.environ unless
        clean_env is true).
    stderr: None (log to tmp_path/NAME.log) or a file descriptor.
    wait_ready: wait until the control socket answers `version`.
    launcher: optional argv prefix (e.g. a socket-activation launcher) put
        before the daemon's command line.
    popen_kw: more subprocess.Popen keywords (pass_fds, preexec_fn, ...).
    """

    TAIL = 60

    def __init__(self, config, tmp_path, name="tusknetd", control_dir=None, env=None, clean_env=False,
                 log_level="debug", stderr=None, launcher=None, popen_kw=None, daemon_keys=None):
        self.tmp_path = Path(tmp_path)
        self.name = name
        self._own_dir = None
        if control_dir is None:
            control_dir = self.tmp_path
            if len(str(control_dir / f"{name}.sock")) > SUN_PATH_MAX:
                control_dir = self._own_dir = Path(tempfile.mkdtemp(prefix="tnctl-"))
        self.control_dir = Path(control_dir)
        self.control = str(self.control_dir / f"{name}.sock")
        self.daemon_keys = dict(daemon_keys or {})
        self.config_path = self.tmp_path / f"{name}.conf"
        self.log_path = self.tmp_path / f"{name}.log"
        self.log_level = log_level
        self.env = env
        self.clean_env = clean_env
        self.stderr = stderr
        self.launcher = list(launcher or [])
        self.popen_kw = dict(popen_kw or {})
        self.proc = None
        self.known_children = set()
        self._log_file = None
        self.write_config(config)

    # -- config

    def render(self, config):
        return insert_daemon_keys(config, control_socket=self.control, **self.daemon_keys)

    def write_config(self, config):
        """(Re)writes the config file; takes effect at the next reload."""
        self.config = self.render(config)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(self.config)
        os.replace(tmp, self.config_path)  # a reload never sees half a file
        return self.config_path

    def write_raw_config(self, text):
        """Writes TEXT as is (for broken configs)."""
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)
        return self.config_path

    # -- running

    def command_line(self):
        cmd = [TUSKNETD, "-c", str(self.config_path)]
        if self.log_level:
            cmd += ["--log-level", self.log_level]
        return self.launcher + cmd

    def start(self, timeout=10.0, wait_ready=True):
        env = {} if self.clean_env else dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
        env.pop("LISTEN_FDS", None)
        env.pop("LISTEN_PID", None)
        env.pop("LISTEN_FDNAMES", None)
        env.pop("JOURNAL_STREAM", None)
        env.update(self.env or {})
        if self.stderr is None:
            self._log_file = open(self.log_path, "wb")
            out = err = self._log_file
        else:
            out = subprocess.DEVNULL
            err = self.stderr
        self.proc = subprocess.Popen(self.command_line(), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                     env=env, cwd=str(self.tmp_path), **self.popen_kw)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tusknetd exited with {self.proc.returncode} during startup\n"
                                   f"--- config ---\n{self.config}\n--- log ---\n{self.log()}")
            try:
                if "version" in ctl(self.control, "version", timeout=2):
                    return self
            except (OSError, CtlError) as e:
                last = e
            time.sleep(0.02)
        raise RuntimeError(f"control socket {self.control} did not answer within {timeout}s ({last})\n"
                           f"--- log ---\n{self.log()}")

    def rss_kb(self):
        return rss_kb(self.pid)

    def cleanup(self):
        self.shutdown()
        if self._log_file:
            self._log_file.close()
        if self._own_dir:
            for p in self._own_dir.iterdir():
                try:
                    p.unlink()
                except OSError:
                    pass
            try:
                self._own_dir.rmdir()
            except OSError:
                pass

    # -- control

    def client(self, timeout=5.0):
        return CtlClient(self.control, timeout)

    def ctl(self, line, timeout=5.0):
        return ctl(self.control, line, timeout)

    def metrics(self, timeout=5.0):
        return ctl_metrics(self.control, timeout)

    def stats(self):
        return self.ctl("stats")

    def listeners(self):
        return {entry["name"]: entry for entry in self.ctl("listeners")["listeners"]}

    def address(self, name):
        return self.listeners()[name]["address"]

    def port(self, name):
        addr = self.address(name)
        return int(addr.rsplit(":", 1)[1])

    def ports(self):
        out = {}
        for name, entry in self.listeners().items():
            addr = entry["address"]
            if ":" in addr and addr.rsplit(":", 1)[1].isdigit():
                out[name] = int(addr.rsplit(":", 1)[1])
        return out

    def connection_ids(self, listener=None):
        ans = self.ctl("connections" + (f" {listener}" if listener else ""))
        return [c["id"] for c in ans["connections"]]

    def connection_of(self, local_addr, listener=None):
        """The `connections` entry whose remote address is LOCAL_ADDR (a client's "ip:port")."""
        ans = self.ctl("connections" + (f" {listener}" if listener else ""))
        for c in ans["connections"]:
            if c["remote"] == local_addr:
                return c
        return None

    def reload_signal(self, timeout=5.0):
        """SIGHUP, then waits until `stats` shows the reload done (or refused).
        Returns the stats after it."""
        before = self.stats()
        n = before["reloads"]  # attempts: ok and refused
        self.send_signal(signal.SIGHUP)
        return wait_for(lambda: (lambda s: s if s["reloads"] > n else None)(self.stats()),
                        timeout, what="the SIGHUP reload to finish")


class CtlDaemonFactory:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.daemons = []

    def __call__(self, config, start=True, **kw):
        kw.setdefault("name", f"tusknetd{len(self.daemons)}")
        d = CtlDaemon(config, self.tmp_path, **kw)
        self.daemons.append(d)
        return d.start() if start else d

    def cleanup(self):
        return stop_all(self.daemons, 80)


@pytest.fixture
def ctl_daemon(tmp_path):
    """Factory fixture: ctl_daemon(CONFIG, **kw) -> started CtlDaemon."""
    if not os.access(TUSKNETD, os.X_OK):
        pytest.fail(f"tusknetd binary not found at {TUSKNETD} (set $TUSKNETD or run `make all`)")
    f = CtlDaemonFactory(tmp_path)
    yield f
    fail_on_sanitizer_reports(f.cleanup())


# ---- a NOTIFY_SOCKET -----------------------------------------------------------


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []  # list of (monotonic time, {key: value}, raw text)

    def _recv(self, timeout):
        self.sock.settimeout(max(0.001, timeout))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        text = data.decode()
        fields = {}
        for line in text.split("\n"):
            if "=" in line:
                k, _, v = line.partition("=")
                fields[k] = v
        msg = (time.monotonic(), fields, text)
        self.messages.append(msg)
        return msg

    def wait(self, pred, timeout=5.0, what="a notification"):
        """The first message from now on whose fields satisfy PRED."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                got = [m[2] for m in self.messages[-10:]]
                pytest.fail(f"no {what} within {timeout}s; last messages: {got}")
            m = self._recv(left)
            if m and pred(m[1]):
                return m[1]

    def wait_key(self, key, value=None, timeout=5.0):
        return self.wait(lambda f: key in f and (value is None or f[key] == value), timeout,
                         what=f"{key}={value if value is not None else '*'}")

    def drain(self, duration):
        """Every message that arrives within DURATION."""
        out = []
        deadline = time.monotonic() + duration
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            m = self._recv(left)
            if m:
                out.append(m[1])

    def pending(self):
        """Every message already queued (a millisecond's wait ends it)."""
        out = []
        while m := self._recv(0):
            out.append(m[1])
        return out

    def close(self):
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    """A NotifySocket in tmp_path; pass its .path as NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    if len(str(path)) > 107:
        pytest.skip("tmp_path too long for a Unix socket path")
    n = NotifySocket(path)
    yield n
    n.close()


# ---- running code as another user ----------------------------------------------------

# A client run as another user: connects to argv[1], sends each of argv[2:]
# as a command and prints one JSON line describing what happened.
AS_USER_CLIENT = r"""
import json, socket, sys
out = {"uid": __import__("os").getuid(), "gid": __import__("os").getgid(), "answers": []}
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
except OSError as e:
    out["connect_error"] = e.errno
    print(json.dumps(out)); sys.exit(0)
buf = b""
def line():
    global buf
    while b"\n" not in buf:
        try:
            c = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            c = b""
        if not c:
            return None
        buf += c
    l, _, buf = buf.partition(b"\n")
    return l.decode()
for cmd in sys.argv[2:]:
    try:
        s.sendall(cmd.encode() + b"\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    l = line()
    out["answers"].append(json.loads(l) if l is not None else None)
    if l is None:
        break
# after the answers: is the connection closed by the daemon?
s.settimeout(1.0)
try:
    rest = s.recv(65536)
    out["closed"] = rest == b""
except socket.timeout:
    out["closed"] = False
except (ConnectionResetError, BrokenPipeError):
    out["closed"] = True
print(json.dumps(out))
"""


def run_as(uid, gid, groups, argv, timeout=15):
    """Runs ARGV as UID/GID with supplementary GROUPS (a list); CompletedProcess."""

    def drop():
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)

    return subprocess.run(argv, preexec_fn=drop, capture_output=True, text=True, timeout=timeout, cwd="/",
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})


def ctl_as(uid, gid, groups, path, *commands):
    """Connects to the control socket PATH as UID/GID, sends COMMANDS; the
    client's report: {"connect_error": errno} or {"answers": [...], "closed": bool}."""
    r = run_as(uid, gid, groups, ["/usr/bin/python3", "-c", AS_USER_CLIENT, str(path), *commands])
    assert r.returncode == 0, f"client as uid {uid} failed: {r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---- socket activation ----------------------------------------------------------------

# Exec'd with the sockets to pass as inherited descriptors: moves them to
# 3, 4, ... (SD_LISTEN_FDS_START), sets LISTEN_FDS, LISTEN_PID (its own pid,
# which the daemon keeps across execve) and LISTEN_FDNAMES, and execs argv[1:].
ACTIVATE = r"""
import fcntl, os, sys
src = [int(x) for x in os.environ.pop("TN_PASS_FDS").split(",") if x]
names = os.environ.pop("TN_PASS_NAMES", None)
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in src]
for fd in src:
    os.close(fd)
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.set_inheritable(3 + i, True)
    os.close(fd)
os.environ["LISTEN_FDS"] = str(len(high))
os.environ["LISTEN_PID"] = str(os.getpid())
if names is not None:
    os.environ["LISTEN_FDNAMES"] = names
os.execv(sys.argv[1], sys.argv[1:])
"""


def activation(sockets, names=None):
    """(launcher argv, env, popen_kw) passing SOCKETS (socket objects, in
    order) to the daemon as systemd would; NAMES: None (no LISTEN_FDNAMES)
    or a list of names."""
    fds = [s.fileno() for s in sockets]
    env = {"TN_PASS_FDS": ",".join(map(str, fds))}
    if names is not None:
        env["TN_PASS_NAMES"] = ":".join(names)
    return [sys.executable, "-c", ACTIVATE], env, {"pass_fds": tuple(fds)}


def socket_inode(fd_path):
    """The inode number of a socket from a /proc/PID/fd/N link, or None."""
    try:
        target = os.readlink(fd_path)
    except OSError:
        return None
    m = re.match(r"socket:\[(\d+)\]", target)
    return int(m.group(1)) if m else None


def daemon_socket_inodes(pid):
    out = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for n in names:
        ino = socket_inode(f"/proc/{pid}/fd/{n}")
        if ino:
            out.add(ino)
    return out


class Collector(threading.Thread):
    """Reads a file descriptor (e.g. a pipe's read end) into memory until EOF."""

    def __init__(self, fd):
        super().__init__(daemon=True)
        self.fd = fd
        self.data = b""
        self.lock = threading.Lock()

    def run(self):
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            with self.lock:
                self.data += chunk

    def text(self):
        with self.lock:
            return self.data.decode(errors="replace")

    def wait_for(self, pattern, timeout=3.0):
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.text())
            if m or time.monotonic() >= deadline:
                return m
            time.sleep(0.02)
