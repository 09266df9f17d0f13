# SPDX-License-Identifier: MIT
"""`tusknetd -t` checks everything starting checks except binding, and
`make install` installs a config that starts.

- Every configuration in the repository (outside tests/) is checked with -t,
  started, sent one request per listener, and stopped with SIGTERM (exit 0).
  Each runs from a copy whose listen ports and control socket are moved
  (ports to free ones, the socket to a temporary directory); the copy sits
  in a mirror of the repository (symbolic links) at the original's relative
  place, so that its relative paths (file roots) reach the same files.
- Each refusal of the start (a file root that is missing or not a
  directory, a program not found or not executable, a missing cwd, a
  certificate whose key does not match, an access log that cannot be
  opened or created, a control socket directory that cannot be made, a
  listen host that does not resolve, a handler type this version lacks)
  is reported by -t as FILE:LINE:COL: message, all at once, and the start
  and a reload refuse the same config with the same lines.
- `make install DESTDIR=... PREFIX=/usr` with the binaries already built:
  the installed /etc/tusknetd/tusknetd.conf names /usr/share/tusknetd/www,
  which outside a real install lives under DESTDIR, so the test rewrites
  that one prefix (and the ports and control socket) in a copy next to the
  installed config, starts the installed binary on it and fetches / from
  the installed site.
"""
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ctl_util import run_as
from daemon_util import SANITIZER_RE, STARTED_RE, DaemonProcess, free_ports
from http_util import curl_response

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20
NOBODY = (65534, 65534)


# ---- running the binary ---------------------------------------------------------


def clean_env():
    """No TUSKNET_* variables (the example reads TUSKNET_BIND and
    TUSKNET_CONTROL), C locale for predictable strerror texts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUSKNET") and not k.startswith("LC_")}
    env["LC_ALL"] = "C"
    return env


def diag_lines(output, path):
    return [l for l in output.splitlines() if l.startswith(f"{path}:")]


def check(binary, path, as_user=None):
    """`tusknetd -t -c PATH`: (exit code, FILE:LINE:COL lines, whole output)."""
    argv = [binary, "-t", "-c", str(path)]
    r = run_as(*as_user, [], argv) if as_user else subprocess.run(
        argv, capture_output=True, text=True, timeout=TIMEOUT, env=clean_env())
    out = r.stderr + r.stdout
    return r.returncode, diag_lines(out, path), out


class Started(DaemonProcess):
    """tusknetd -c PATH in the background, its output in LOG."""

    def __init__(self, binary, path, log_path, as_user=None):
        self.log_path = Path(log_path)
        self.known_children = set()
        self._log = open(self.log_path, "wb")
        pre = None
        if as_user:
            def pre():
                os.setgroups([])
                os.setgid(as_user[1])
                os.setuid(as_user[0])
        self.proc = subprocess.Popen([binary, "-c", str(path)], stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log, env=clean_env(), preexec_fn=pre, cwd="/")

    def wait_started(self, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if STARTED_RE.search(self.log()):
                return
            assert self.alive(), f"tusknetd exited with {self.proc.returncode} while starting:\n{self.log()}"
            time.sleep(0.02)
        pytest.fail(f"tusknetd did not start within {timeout}s:\n{self.log()}")

    def close(self):
        """Stops what is left (SIGTERM first, like every test daemon); returns
        a sanitizer report in the log, or None."""
        self.shutdown()
        self._log.close()
        m = SANITIZER_RE.search(self.log())
        return m and f"{m.group(0)}\n{self.log_tail()}"


@pytest.fixture
def started():
    """Factory: started(binary, path, log_path, as_user=None) -> Started; all closed at teardown."""
    procs = []

    def start(*args, **kw):
        procs.append(Started(*args, **kw))
        return procs[-1]

    yield start
    reports = [r for r in [p.close() for p in procs] if r]
    assert not reports, "sanitizer report in the daemon's log: " + "\n".join(reports)


def refused_start(started, binary, path, log_path, as_user=None):
    """Starts tusknetd on PATH, which must refuse: its FILE:LINE:COL lines."""
    d = started(binary, path, log_path, as_user=as_user)
    code = d.wait(TIMEOUT)
    assert code == 1, f"the start exited {code} (None: still running):\n{d.log()}"
    assert not STARTED_RE.search(d.log()), d.log()
    return diag_lines(d.log(), path)


@pytest.fixture
def short_dir():
    """A directory with a short path, world-searchable (control sockets have
    a 108-byte path limit; some checks run as nobody)."""
    d = tempfile.mkdtemp(prefix="tnck-")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def position(text, needle):
    """"LINE:COL" (1-based) of the first NEEDLE in TEXT."""
    i = text.index(needle)
    return f"{text.count(chr(10), 0, i) + 1}:{i - text.rfind(chr(10), 0, i)}"


# ---- moving a config's ports and control socket --------------------------------------


LISTEN_PORT = re.compile(r"(?<=:)(\d{1,5})(?=[\"'\s]|$)")
CONTROL_LINE = re.compile(r"^(\s*control_socket\s*[:=]\s*).*$", re.M)


def move(text, control):
    """TEXT with every port on a `listen` line moved to a free one (the same
    port to the same new one) and its control_socket set to CONTROL."""
    lines = text.split("\n")
    old = sorted({int(p) for l in lines if "listen" in l for p in LISTEN_PORT.findall(l)} - {0})
    new = dict(zip(old, free_ports(len(old))))
    lines = [LISTEN_PORT.sub(lambda m: str(new.get(int(m.group(1)), m.group(1))), l) if "listen" in l else l
             for l in lines]
    text, n = CONTROL_LINE.subn(lambda m: f'{m.group(1)}"{control}"', "\n".join(lines))
    assert n == 1, "the config must set daemon.control_socket once, so that the test can move it"
    return text


def mirror(tmp, rel):
    """A tree under TMP that looks like the repository (each entry a symbolic
    link) except along REL's directories, which are real; returns where the
    copy of REL goes."""
    rel = Path(rel)
    src, dst = REPO_ROOT, Path(tmp) / "repo"
    dst.mkdir()
    for part in list(rel.parent.parts) + [None]:
        for entry in src.iterdir():
            if entry.name not in (part, rel.name):
                (dst / entry.name).symlink_to(entry)
        if part is None:
            return dst / rel.name
        src, dst = src / part, dst / part
        dst.mkdir()


# ---- one request per listener ------------------------------------------------------


def control(path, command):
    """One command on the control socket: the JSON answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(command.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            assert chunk, f"control socket closed before answering {command!r}"
            buf += chunk
    return json.loads(buf)


def host_port(listen):
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    return (host if host not in ("", "*", "0.0.0.0", "::") else "127.0.0.1"), int(port)


def known_answer(cfg, names, select):
    """(message, expected reply) for the first handler of NAMES whose answer
    is known ahead (echo, or static without placeholders), or None."""
    for name in names:
        h = cfg["handlers"][name]
        prefix = f"{name} " if select else ""
        if h["type"] == "echo":
            return prefix + "checked", "checked"
        if h["type"] == "static" and "{" not in h["reply"]:
            return prefix + "checked", h["reply"]
    return None


def stream_request(listen, tls, message):
    host, port = host_port(listen)
    with socket.create_connection((host, port), timeout=10) as raw:
        s = raw
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(raw, server_hostname=host)
        s.sendall(message.encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, f"{listen}: closed before replying; got {buf!r}"
            buf += chunk
    return buf.split(b"\n")[0].rstrip(b"\r").decode()


def datagram_request(listen, message):
    host, port = host_port(listen)
    family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        s.sendto(message.encode(), (host, port))
        return s.recvfrom(70000)[0].decode()


def http_request(cfg, name, li):
    """Asks the route whose answer is known ahead (file, health, echo, static)."""
    host, port = host_port(li["listen"])
    base = f"{'https' if li.get('tls') else 'http'}://{'[%s]' % host if ':' in host else host}:{port}"
    routes = []
    for spec, route in li.get("routes", {}).items():
        method, _, path = spec.rpartition(" ")
        routes.append((method or "*", path, cfg["handlers"][route["handler"]]))
    exact = [(m, p, h) for m, p, h in routes if ":" not in p and "*" not in p]
    for method, path, h in routes:
        if h["type"] == "file" and method in ("GET", "*") and path.endswith("/*"):
            index = Path(h["root"]) / h["index"][0]
            r = curl_response(["-k", base + path[:-1]])
            assert (r.status, r.body) == (200, index.read_bytes()), f"listener {name}: {r.status} {r.body[:200]!r}"
            return
    for method, path, h in exact:
        if h["type"] == "health" and method in ("GET", "*"):
            r = curl_response(["-k", base + path])
            assert r.status == 200 and json.loads(r.body)["status"] == "healthy", f"listener {name}: {r.body!r}"
            return
        if h["type"] == "echo" and method in ("POST", "*"):
            r = curl_response(["-k", "--data-binary", "checked", base + path])
            assert (r.status, r.body) == (200, b"checked"), f"listener {name}: {r.status} {r.body!r}"
            return
    pytest.fail(f"listener {name}: no route with an answer known ahead (file, health, echo); extend this test")


def ask_every_listener(cfg):
    for name, li in cfg["listeners"].items():
        if li["protocol"] == "http":
            http_request(cfg, name, li)
            continue
        single = li.get("handler")
        ask = known_answer(cfg, [single] if single else li["handlers"], select=not single)
        assert ask, f"listener {name}: no echo or plain static handler to ask; extend this test"
        message, expected = ask
        if li["protocol"] == "udp":
            assert datagram_request(li["listen"], message) == expected, name
        else:
            assert stream_request(li["listen"], li.get("tls"), message) == expected, name


def stop(d):
    d.send_signal(signal.SIGTERM)
    code = d.wait(TIMEOUT)
    assert code == 0, f"exit {code} after SIGTERM:\n{d.log_tail()}"


# ---- every config in the repository starts -------------------------------------------


def repo_configs():
    """Relative paths of the configs in the repository outside tests/ and
    build/: *.conf, *.tsk, *.yaml, *.yml and *.conf.example with a
    listeners section."""
    found = []
    for dirpath, dirnames, filenames in os.walk(REPO_ROOT):
        rel_dir = Path(dirpath).relative_to(REPO_ROOT)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in ("tests", "build") and not d.startswith(".")]
        for f in filenames:
            if not f.endswith((".conf", ".tsk", ".yaml", ".yml", ".conf.example")):
                continue
            text = (Path(dirpath) / f).read_text(errors="replace")
            if re.search(r"^(\[listeners\]|listeners:)", text, re.M):
                found.append(str(rel_dir / f))
    return sorted(found)


def test_the_repository_configs_are_found():
    assert {"tusknetd.conf.example", "conf/examples/tusknetd.yaml"} <= set(repo_configs()), repo_configs()


@pytest.mark.parametrize("rel", repo_configs())
def test_repository_config_checks_and_starts(tusknetd, rel, tmp_path, short_dir, started):
    sock = short_dir / "ctl.sock"
    path = mirror(tmp_path, rel)
    path.write_text(move((REPO_ROOT / rel).read_text(), sock))
    code, diags, out = check(tusknetd, path)
    assert code == 0 and f"tusknetd: configuration {path} is valid" in out.splitlines(), out
    assert diags == [], out
    d = started(tusknetd, path, tmp_path / "daemon.log")
    d.wait_started()
    cfg = control(sock, "config")["config"]
    assert set(cfg["listeners"]), "a config without listeners"
    ask_every_listener(cfg)
    stop(d)


# ---- every refusal: -t, the start and a reload say the same ---------------------------------


HEAD = """[daemon]
control_socket: ""
[handlers]
echo { type: "echo" }
"""


def listener(handler="echo"):
    return f'[listeners]\nlines {{ protocol: "tcp" listen: "127.0.0.1:0" handler: "{handler}" }}\n'


def write(tmp, text, name="t.conf"):
    p = Path(tmp) / name
    p.write_text(text)
    os.chmod(p, 0o644)
    return p


def lines_at(path, text, expected):
    """The diagnostics EXPECTED names as (needle, message) pairs: each
    message at the position of the first NEEDLE in TEXT."""
    return [f"{path}:{position(text, needle)}: {msg}" for needle, msg in expected]


def assert_refused_alike(tusknetd, started, path, text, expected, as_user=None):
    """-t and the start both refuse PATH with exactly EXPECTED, given as
    (needle, message): the message at the first NEEDLE's position."""
    want = lines_at(path, text, expected)
    code, diags, out = check(tusknetd, path, as_user=as_user)
    assert (code, diags) == (1, want), out
    assert f"tusknetd: configuration {path} is invalid" in out.splitlines(), out
    log = Path(str(path) + ".log")
    assert refused_start(started, tusknetd, path, log, as_user=as_user) == want


def prepare(tmp):
    """The files the refusals below point at, in TMP."""
    (tmp / "plain.txt").write_text("not a directory\n")
    (tmp / "noexec.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(tmp / "noexec.sh", 0o644)
    (tmp / "logdir").mkdir()


def resolver_error(host):
    """The resolver's own text for HOST not resolving (asked as the daemon asks)."""
    try:
        socket.getaddrinfo(host, None, flags=socket.AI_ADDRCONFIG)
    except socket.gaierror as e:
        return e.strerror
    pytest.skip(f"{host} resolves here")


def control_at(sock):
    return HEAD.replace('control_socket: ""', f'control_socket: "{sock}"') + listener()


LONG = "s" * 120

# name -> tmp -> (config text, [(needle, message)]): each message is expected
# at the position of the first NEEDLE in the text.
REFUSALS = {
    "root missing": lambda t: (
        HEAD + f'site {{ type: "file" root: "{t}/www" }}\n' + listener(),
        [(f'"{t}/www"', f"handler 'site': root {t}/www: No such file or directory")]),
    "root not a directory": lambda t: (
        HEAD + f'site {{ type: "file" root: "{t}/plain.txt" }}\n' + listener(),
        [(f'"{t}/plain.txt"', f"handler 'site': root {t}/plain.txt: not a directory")]),
    "program not in PATH": lambda t: (
        HEAD + 'up { type: "exec" command: ["tn-no-such-program", "-x"] }\n' + listener(),
        [('["tn-no-such', "handler 'up': cannot run tn-no-such-program: not found in PATH")]),
    "program not executable": lambda t: (
        HEAD + f'sh {{ type: "stream" command: ["{t}/noexec.sh"] }}\n' + listener("sh"),
        [(f'["{t}/noexec.sh', f"handler 'sh': cannot run {t}/noexec.sh: Permission denied")]),
    "cwd missing": lambda t: (
        HEAD + f'up {{ type: "exec" command: ["cat"] cwd: "{t}/gone" }}\n' + listener(),
        [(f'"{t}/gone"', f"handler 'up': cwd {t}/gone: No such file or directory")]),
    "access log directory missing": lambda t: (
        HEAD + f'[middleware]\nlog {{ type: "access_log" file: "{t}/nope/access.log" }}\n' + listener(),
        [(f'"{t}/nope/', f"middleware 'log': cannot create access log '{t}/nope/access.log': "
                        f"{t}/nope: No such file or directory")]),
    "access log is a directory": lambda t: (
        HEAD + f'[middleware]\nlog {{ type: "access_log" file: "{t}/logdir" }}\n' + listener(),
        [(f'"{t}/logdir"', f"middleware 'log': cannot open access log '{t}/logdir': Is a directory")]),
    "control socket directory cannot be made": lambda t: (
        control_at(f"{t}/a/b/ctl.sock"),
        [(f'"{t}/a/b', f"control socket {t}/a/b/ctl.sock: cannot create {t}/a/b: No such file or directory")]),
    "control socket directory is a file": lambda t: (
        control_at(f"{t}/plain.txt/ctl.sock"),
        [(f'"{t}/plain.txt/', f"control socket {t}/plain.txt/ctl.sock: {t}/plain.txt is not a directory")]),
    "control socket path too long": lambda t: (
        control_at(f"{t}/{LONG}/ctl.sock"),
        [(f'"{t}/{LONG}', f"control socket path too long: {t}/{LONG}/ctl.sock")]),
    "listen host does not resolve": lambda t: (
        HEAD + '[listeners]\nlines { protocol: "tcp" listen: "no-such-host.invalid:7000" handler: "echo" }\n',
        [('"no-such-host', "listener 'lines': cannot resolve 'no-such-host.invalid': "
                           + resolver_error("no-such-host.invalid"))]),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusal_is_the_same_for_check_and_start(tusknetd, case, short_dir, started):
    prepare(short_dir)
    text, expected = REFUSALS[case](short_dir)
    assert_refused_alike(tusknetd, started, write(short_dir, text), text, expected)


def test_every_refusal_at_once(tusknetd, short_dir, started):
    """Several refusals in one config: all reported, in file order, by both."""
    prepare(short_dir)
    t = short_dir
    text = (HEAD.replace('control_socket: ""', f'control_socket: "{t}/a/b/ctl.sock"')
            + f'site {{ type: "file" root: "{t}/www" }}\n'
            + 'up { type: "exec" command: ["tn-no-such-program"] }\n'
            + f'[middleware]\nlog {{ type: "access_log" file: "{t}/logdir" }}\n'
            + '[listeners]\nlines { protocol: "tcp" listen: "no-such-host.invalid:7000" handler: "echo" }\n')
    expected = [
        (f'"{t}/a/b', f"control socket {t}/a/b/ctl.sock: cannot create {t}/a/b: No such file or directory"),
        (f'"{t}/www"', f"handler 'site': root {t}/www: No such file or directory"),
        ('["tn-no-such', "handler 'up': cannot run tn-no-such-program: not found in PATH"),
        (f'"{t}/logdir"', f"middleware 'log': cannot open access log '{t}/logdir': Is a directory"),
        ('"no-such-host', "listener 'lines': cannot resolve 'no-such-host.invalid': "
                          + resolver_error("no-such-host.invalid")),
    ]
    assert_refused_alike(tusknetd, started, write(t, text), text, expected)


def test_permissions_are_checked_as_the_daemon_user(tusknetd, short_dir, started):
    """As nobody: a root it may not read, a log and a socket directory it
    may not write (root reads and writes anything, so this runs as nobody)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the daemon as nobody")
    t = short_dir
    for d, mode in (("private", 0o700), ("logs", 0o755), ("run", 0o755)):
        (t / d).mkdir()
        os.chmod(t / d, mode)
    text = (HEAD.replace('control_socket: ""', f'control_socket: "{t}/run/ctl.sock"')
            + f'site {{ type: "file" root: "{t}/private" }}\n'
            + f'[middleware]\nlog {{ type: "access_log" file: "{t}/logs/access.log" }}\n' + listener())
    expected = [
        (f'"{t}/run/', f"control socket {t}/run/ctl.sock: cannot create it in {t}/run: Permission denied"),
        (f'"{t}/private"', f"handler 'site': root {t}/private: Permission denied"),
        (f'"{t}/logs/', f"middleware 'log': cannot create access log '{t}/logs/access.log': "
                        f"{t}/logs: Permission denied"),
    ]
    assert_refused_alike(tusknetd, started, write(t, text), text, expected, as_user=NOBODY)


def test_check_creates_nothing_and_the_start_creates_what_it_needs(tusknetd, short_dir, started):
    """-t accepts an access log that does not exist yet and a control socket
    directory one level deep that does not exist yet, without making them;
    the start makes both."""
    t = short_dir
    log, run = t / "access.log", t / "run"
    text = (HEAD.replace('control_socket: ""', f'control_socket: "{run}/ctl.sock"')
            + f'[middleware]\nlog {{ type: "access_log" file: "{log}" }}\n[listeners]\n'
            + 'web { protocol: "http" listen: "127.0.0.1:PORT" middleware: ["log"] routes { "POST /": "echo" } }\n')
    port = free_ports(1)[0]
    path = write(t, text.replace("PORT", str(port)))
    code, diags, out = check(tusknetd, path)
    assert (code, diags) == (0, []), out
    assert not log.exists() and not run.exists()
    d = started(tusknetd, path, t / "daemon.log")
    d.wait_started()
    assert log.is_file() and (run / "ctl.sock").is_socket()
    r = curl_response(["--data-binary", "logged", f"http://127.0.0.1:{port}/"])
    assert (r.status, r.body) == (200, b"logged")
    stop(d)
    assert re.fullmatch(r'127\.0\.0\.1 - - \[[^]]+\] "POST / HTTP/1\.1" 200 \d+ "-" "curl/[^"]+"\n', log.read_text())


def test_reload_refuses_with_the_same_lines(tusknetd, short_dir, started):
    t = short_dir
    (t / "www").mkdir()
    (t / "www" / "index.html").write_text("first\n")
    port = free_ports(1)[0]
    good = (HEAD.replace('control_socket: ""', f'control_socket: "{t}/ctl.sock"')
            + f'site {{ type: "file" root: "{t}/www" }}\n[listeners]\n'
            + f'web {{ protocol: "http" listen: "127.0.0.1:{port}" routes {{ "GET /*": "site" }} }}\n')
    path = write(t, good)
    d = started(tusknetd, path, t / "daemon.log")
    d.wait_started()
    bad = good.replace(f'"{t}/www"', f'"{t}/gone"').replace('"GET /*": "site"', '"GET /*": "site" "GET /x": "up"')
    bad = bad.replace("[listeners]", 'up { type: "exec" command: ["tn-no-such-program"] }\n[listeners]')
    write(t, bad)
    code, diags, out = check(tusknetd, path)
    assert (code, diags) == (1, lines_at(path, bad, [
        (f'"{t}/gone"', f"handler 'site': root {t}/gone: No such file or directory"),
        ('["tn-no-such', "handler 'up': cannot run tn-no-such-program: not found in PATH")])), out
    answer = control(t / "ctl.sock", "reload")
    assert answer == {"ok": False, "error": "\n".join(diags), "reloads": 1, "reloads_ok": 0, "reloads_refused": 1}
    r = curl_response([f"http://127.0.0.1:{port}/"])
    assert (r.status, r.body) == (200, b"first\n"), "the running configuration must keep serving"
    stop(d)


# ---- make install ---------------------------------------------------------------------


def make(*args):
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(["make", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=900,
                          env=env)


def test_make_install_starts_and_serves_the_installed_site(tusknetd, tmp_path, short_dir, started):
    if not shutil.which("make"):
        pytest.skip("make not installed")
    binary = Path(tusknetd)
    if REPO_ROOT / "build" not in binary.parents:
        pytest.skip(f"{binary} was not built in this checkout")
    # install exactly the binaries under test
    build = [f"BUILD={binary.parent.relative_to(REPO_ROOT)}", f"SANITIZE={os.environ.get('SANITIZE', '0')}"]
    up_to_date = make("-q", "all", *build).returncode == 0
    mtime = binary.stat().st_mtime_ns
    dest = tmp_path / "root"
    r = make("install", f"DESTDIR={dest}", "PREFIX=/usr", *build)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    if up_to_date:
        assert binary.stat().st_mtime_ns == mtime and " -c src/" not in r.stdout, "install rebuilt:\n" + r.stdout
    share = dest / "usr/share/tusknetd"
    conf = dest / "etc/tusknetd/tusknetd.conf"
    site = (REPO_ROOT / "conf/www/index.html").read_bytes()
    assert (share / "www/index.html").read_bytes() == site
    for example in (REPO_ROOT / "conf/examples").iterdir():
        assert (share / "examples" / example.name).read_bytes() == example.read_bytes()
    assert 'root: "/usr/share/tusknetd/www"' in conf.read_text()
    # what the daemon serves must be the installed copy, not the repository's
    marked = site + b"<!-- the installed copy -->\n"
    (share / "www/index.html").write_bytes(marked)
    installed = dest / "usr/bin/tusknetd"
    for i, (where, name) in enumerate(((conf.parent, "tusknetd.conf"), (share / "examples", "tusknetd.yaml"))):
        sock = short_dir / f"ctl{i}.sock"
        text = move((where / name).read_text(), sock)
        # the installed config names /usr/share/tusknetd, which is under DESTDIR here
        text = text.replace('"/usr/share/tusknetd/', f'"{share}/')
        staged = where / ("staged-" + name)
        staged.write_text(text)
        code, diags, out = check(str(installed), staged)
        assert code == 0 and diags == [], out
        d = started(str(installed), staged, tmp_path / f"installed{i}.log")
        d.wait_started()
        cfg = control(sock, "config")["config"]
        assert cfg["handlers"]["site"]["root"] == str(share / "www")
        ask_every_listener(cfg)
        host, port = host_port(cfg["listeners"]["web"]["listen"])
        r = curl_response([f"http://{host}:{port}/"])
        assert (r.status, r.body) == (200, marked)
        stop(d)
