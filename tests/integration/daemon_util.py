# SPDX-License-Identifier: MIT
"""Helpers for the integration tests: run tusknetd on a config string, talk to
it with real sockets, and clean up everything it started.

The daemon binary comes from $TUSKNETD (default: build/release/tusknetd;
relative paths are taken from the repository root).

Configs name their ports with placeholders ``PORT_<NAME>`` (e.g.
``listen: "127.0.0.1:PORT_LINES"``). ``Daemon`` picks a free port for each
placeholder (bound to port 0 in Python and closed, never a fixed number),
substitutes it and exposes it as ``d.ports["LINES"]``.

The ``daemon`` fixture is a factory: ``d = daemon(CONFIG)`` starts a daemon,
waits until its listeners are bound, and returns it. At teardown every
daemon is stopped by ``DaemonProcess.shutdown`` (SIGTERM, SIGKILL only if it
does not go), every process it spawned is killed by pid, the tail of its log is
printed (pytest shows it for a failing test), and a sanitizer report in the
log fails the test. The other launchers (ctl_util's ``ctl_daemon``,
test_tusknetctl's module daemon) stop the same way.
"""
import os
import re
import selectors
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TUSKNETD = str(REPO_ROOT / Path(os.environ.get("TUSKNETD") or "build/release/tusknetd"))

HOST = "127.0.0.1"
PORT_RE = re.compile(r"PORT_([A-Z0-9_]+)")
STARTED_RE = re.compile(r"tusknetd started")
SANITIZER_RE = re.compile(r"(ERROR: (Address|Leak)Sanitizer.*|runtime error:.*)")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- ports -------------------------------------------------------------------


def free_ports(n):
    """N distinct ports that are free for both TCP and UDP on 127.0.0.1."""
    ports = []
    held = []
    try:
        while len(ports) < n:
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.bind((HOST, 0))
            port = t.getsockname()[1]
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                u.bind((HOST, port))
            except OSError:
                t.close()
                u.close()
                continue
            held += [t, u]
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


def free_port():
    return free_ports(1)[0]


# ---- processes -----------------------------------------------------------------


def _stat_fields(pid):
    """Fields of /proc/PID/stat after the command name, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()


def proc_state(pid):
    """One-letter state of PID ('R', 'S', 'Z', ...) or None if it is gone."""
    f = _stat_fields(pid)
    return f[0] if f else None


def pid_alive(pid):
    """True while PID exists and is not a zombie."""
    s = proc_state(pid)
    return s is not None and s not in ("Z", "X")


def wait_pid_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return not pid_alive(pid)


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def descendants(pid):
    """Every live descendant of PID (children, grandchildren, ...)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        f = _stat_fields(entry)
        if f:
            children.setdefault(int(f[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def cpu_seconds(pid):
    """User + system CPU time PID has used so far."""
    f = _stat_fields(pid)
    if not f:
        return 0.0
    return (int(f[11]) + int(f[12])) / CLK_TCK


def signal_mask(pid, name):
    """The SigIgn/SigBlk/... mask of PID as an int."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1], 16)
    raise KeyError(name)


# ---- the daemon ----------------------------------------------------------------


def check_config(text, tmp_path, name="check.conf"):
    """Runs `tusknetd -t -c FILE`; returns (exit code, output)."""
    path = Path(tmp_path) / name
    path.write_text(text)
    r = subprocess.run([TUSKNETD, "-t", "-c", str(path)], capture_output=True, text=True, timeout=10)
    return r.returncode, r.stdout + r.stderr


class DaemonProcess:
    """What every started daemon offers: its pid, liveness, its log, signals
    and stopping (the subclass sets self.proc, self.log_path and
    self.known_children)."""

    TAIL = 40

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines=None):
        return "\n".join(self.log().splitlines()[-(lines or self.TAIL):])

    def wait_log(self, pattern, timeout=3.0):
        """Waits until the log matches PATTERN (a regex); returns the match or None."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.log())
            if m or time.monotonic() >= deadline:
                return m
            time.sleep(0.02)

    def children(self):
        """Live descendants; remembered so that teardown can kill them."""
        kids = descendants(self.pid) if self.alive() else []
        self.known_children.update(kids)
        return kids

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        """Exit code, or None if it is still running after TIMEOUT seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=5.0):
        """SIGTERM and wait; SIGKILL if it does not exit. Returns the exit code."""
        return self.shutdown(timeout)

    def shutdown(self, term_timeout=3.0):
        """How every test daemon ends: SIGTERM first (a sanitizer build reports
        leaks only at a normal exit), SIGKILL if it is still running after
        TERM_TIMEOUT seconds, then SIGKILL to every process it was seen to spawn.
        Returns the exit code (negative: the signal that ended it)."""
        if self.proc is None:
            return None
        if self.alive():
            self.children()
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(term_timeout) is None:
                self.children()
                self.proc.kill()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        for pid in self.known_children:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        return self.proc.returncode

    def sanitizer_report(self):
        """The first ASan/LSan/UBSan report line in the log, or None."""
        m = SANITIZER_RE.search(self.log())
        return f"{self.name}: {m.group(0)}" if m else None


def stop_all(daemons, tail):
    """Stops every daemon in DAEMONS (DaemonProcess.shutdown via its cleanup),
    prints its config and log tail (pytest shows them for a failing test) and
    returns the sanitizer reports found in the logs."""
    problems = []
    for d in daemons:
        try:
            d.cleanup()
        finally:
            print(f"--- {d.name} (pid {d.pid if d.proc else '-'}) exit {d.proc.returncode if d.proc else '-'}")
            print(f"--- config ---\n{d.config}")
            print(f"--- log (tail) ---\n{d.log_tail(tail)}")
        report = d.sanitizer_report()
        if report:
            problems.append(report)
    return problems


def fail_on_sanitizer_reports(problems):
    if problems:
        pytest.fail("sanitizer report in the daemon's log: " + "; ".join(problems), pytrace=False)


class Daemon(DaemonProcess):
    def __init__(self, config, tmp_path, name="tusknetd", log_level="debug", preexec_fn=None, env=None):
        self.tmp_path = Path(tmp_path)
        self.name = name
        self.ports = {}
        names = sorted(set(PORT_RE.findall(config)))
        for key, port in zip(names, free_ports(len(names))):
            self.ports[key] = port
        self.config = PORT_RE.sub(lambda m: str(self.ports[m.group(1)]), config)
        self.config_path = self.tmp_path / f"{name}.conf"
        self.config_path.write_text(self.config)
        self.log_path = self.tmp_path / f"{name}.log"
        self.log_level = log_level
        self.preexec_fn = preexec_fn
        self.env = env
        self.proc = None
        self.known_children = set()
        self._log_file = None

    # -- running

    def start(self, timeout=10):
        cmd = [TUSKNETD, "-c", str(self.config_path)]
        if self.log_level:
            cmd += ["--log-level", self.log_level]
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
            preexec_fn=self.preexec_fn,
            env=self.env,
            cwd=str(self.tmp_path),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if STARTED_RE.search(self.log()):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"tusknetd exited with {self.proc.returncode} during startup\n"
                    f"--- config ---\n{self.config}\n--- log ---\n{self.log()}"
                )
            time.sleep(0.01)
        raise RuntimeError(f"tusknetd did not start within {timeout}s\n--- log ---\n{self.log()}")

    def cpu_seconds(self):
        return cpu_seconds(self.pid)

    def cleanup(self):
        self.shutdown()
        if self._log_file:
            self._log_file.close()


class DaemonFactory:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.daemons = []

    def __call__(self, config, **kw):
        kw.setdefault("name", f"tusknetd{len(self.daemons)}")
        d = Daemon(config, self.tmp_path, **kw)
        self.daemons.append(d)
        return d.start()

    def cleanup(self):
        return stop_all(self.daemons, 60)


@pytest.fixture
def daemon(tmp_path):
    """Factory fixture: daemon(CONFIG, **kw) -> started Daemon."""
    if not os.access(TUSKNETD, os.X_OK):
        pytest.fail(f"tusknetd binary not found at {TUSKNETD} (set $TUSKNETD or run `make all`)")
    f = DaemonFactory(tmp_path)
    yield f
    fail_on_sanitizer_reports(f.cleanup())


# ---- clients -------------------------------------------------------------------


class Closed(Exception):
    """The peer closed (EOF or reset) before a full line came."""


class LineClient:
    """A TCP line-protocol client on a real socket."""

    def __init__(self, port, host=HOST, source=None, timeout=5.0, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def local_addr(self):
        h, p = self.sock.getsockname()[:2]
        return f"{h}:{p}"

    def fileno(self):
        return self.sock.fileno()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def sendline(self, line):
        self.send((line if isinstance(line, bytes) else line.encode()) + b"\n")

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise Closed(f"connection closed; unread partial data {self.buf[:200]!r}")
        self.buf += chunk

    def readline(self, timeout=None):
        """The next line without its newline (str). Raises Closed on EOF,
        socket.timeout if nothing complete comes within TIMEOUT."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout(f"no complete line within {timeout}s; have {self.buf[:200]!r}")
            self._fill(left)
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode(errors="replace")

    def readlines(self, n, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        return [self.readline(max(0.001, deadline - time.monotonic())) for _ in range(n)]

    def request(self, line, timeout=None):
        self.sendline(line)
        return self.readline(timeout)

    def read_until_closed(self, timeout=3.0):
        """Everything until EOF/reset. Returns (bytes, closed?)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                self._fill(left)
            except Closed:
                break
            except socket.timeout:
                break
        data, self.buf = self.buf, b""
        return data, self.eof

    def silent_for(self, duration):
        """Bytes that arrive within DURATION (b'' if nothing did); EOF counts as nothing."""
        deadline = time.monotonic() + duration
        got = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                self.eof = True
                break
            got += chunk
        got, self.buf = self.buf + got, b""
        return got

    def is_open(self, wait=0.05):
        """True if the peer has not closed (nothing pending that says otherwise)."""
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536, socket.MSG_PEEK)
        except socket.timeout:
            return True
        except ConnectionResetError:
            return False
        return bool(chunk)

    def reset(self):
        """Close with SO_LINGER 0: the peer sees a RST."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()


def connect_retry(port, timeout=3.0, **kw):
    """Connects, retrying while the daemon refuses (e.g. accepts paused)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return LineClient(port, **kw)
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def served(port, timeout=3.0, **kw):
    """True once a fresh connection gets an echo back within TIMEOUT (handler 'echo')."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with LineClient(port, timeout=0.5, **kw) as c:
                if c.request("echo alive", timeout=max(0.1, min(0.5, deadline - time.monotonic()))) == "alive":
                    return True
        except (OSError, Closed):
            pass
        time.sleep(0.05)
    return False


class UdpClient:
    def __init__(self, port, host=HOST, source=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source or host, 0))
        self.addr = (host, port)

    def local_addr(self):
        h, p = self.sock.getsockname()[:2]
        return f"{h}:{p}"

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendto(data, self.addr)

    def recv(self, timeout=2.0):
        """One datagram (bytes) from the daemon, or None within TIMEOUT."""
        self.sock.settimeout(timeout)
        try:
            data, frm = self.sock.recvfrom(70000)
        except socket.timeout:
            return None
        assert frm[1] == self.addr[1], f"datagram from unexpected {frm}"
        return data

    def request(self, data, timeout=2.0):
        self.send(data)
        return self.recv(timeout)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()


def read_all_lines(clients, expected_counts, timeout):
    """Reads lines from several LineClients at once until each has
    expected_counts[i] lines or TIMEOUT passes. Returns a list of line lists."""
    sel = selectors.DefaultSelector()
    out = [[] for _ in clients]
    for i, c in enumerate(clients):
        # lines already buffered
        while b"\n" in c.buf and len(out[i]) < expected_counts[i]:
            line, _, c.buf = c.buf.partition(b"\n")
            out[i].append(line.decode(errors="replace"))
        if len(out[i]) < expected_counts[i]:
            c.sock.setblocking(False)
            sel.register(c.sock, selectors.EVENT_READ, i)
    deadline = time.monotonic() + timeout
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
            i = key.data
            c = clients[i]
            try:
                chunk = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                c.eof = True
                sel.unregister(c.sock)
                continue
            c.buf += chunk
            while b"\n" in c.buf and len(out[i]) < expected_counts[i]:
                line, _, c.buf = c.buf.partition(b"\n")
                out[i].append(line.decode(errors="replace"))
            if len(out[i]) >= expected_counts[i]:
                sel.unregister(c.sock)
    sel.close()
    for c in clients:
        c.sock.setblocking(True)
        c.sock.settimeout(c.timeout)
    return out
