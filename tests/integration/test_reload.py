# SPDX-License-Identifier: MIT
"""Reload by SIGHUP and by the control socket's `reload`,
each effect observed from a real client: handlers and listeners added, a
static reply changed, a listener removed (its open connection drains, new
ones are refused), a broken config refused with FILE:LINE:COL while the old
one keeps serving, a reload under continuous traffic that loses nothing, and
kept listeners that keep their socket and connections."""
import signal
import socket
import subprocess
import threading
import time

import pytest

from ctl_util import TUSKNETD, ctl_daemon, daemon_socket_inodes, wait_for  # noqa: F401
from daemon_util import LineClient, UdpClient

HEAD = """
[daemon]
log_level: "debug"
shutdown_timeout: "3s"

[limits]
idle_timeout: "60s"
"""


# Listeners use port 0 (the bound port is read from `listeners`). The
# listeners added or removed by a reload are on 127.0.0.2 so that their
# address differs from the kept ones' ("127.0.0.1:0"); several listeners on
# the very same "127.0.0.1:0" across a reload are the subject of
# test_port0_listeners_stay_distinct_across_reload.


def config(handlers, listeners):
    return HEAD + "\n[handlers]\n" + handlers.strip() + "\n\n[listeners]\n" + listeners.strip() + "\n"


V1 = config(
    """
echo  { type: "echo" }
greet { type: "static" reply: "hello v1" }
""",
    """
lines { protocol: "tcp" listen: "127.0.0.1:0" handlers: ["echo", "greet"] }
dgram { protocol: "udp" listen: "127.0.0.1:0" handlers: ["echo", "greet"] }
""",
)


def do_reload(d, how):
    """Reloads by HOW ("signal" or "command"); returns (ok, error text or None)."""
    if how == "command":
        ans = d.ctl("reload")
        return ans["ok"], ans.get("error")
    before = d.stats()
    s = d.reload_signal()
    ok = s["reloads_ok"] > before["reloads_ok"]
    return ok, None


HOW = pytest.mark.parametrize("how", ["signal", "command"])


def check_t(path):
    """`tusknetd -t -c PATH`: (exit code, the diagnostics without the summary line)."""
    r = subprocess.run([TUSKNETD, "-t", "-c", str(path)], capture_output=True, text=True, timeout=10)
    lines = [l for l in (r.stdout + r.stderr).splitlines() if l and not l.startswith("tusknetd: configuration")]
    return r.returncode, "\n".join(lines)


# ---- handlers and listeners added ----------------------------------------------------------


@HOW
def test_add_handler_and_listener(ctl_daemon, how):
    d = ctl_daemon(V1)
    lines = d.port("lines")
    with LineClient(lines) as old:
        assert old.request("echo a") == "a"
        assert old.request("shout x") == "Unknown handler: shout"
        d.write_config(config(
            """
echo  { type: "echo" }
greet { type: "static" reply: "hello v1" }
shout { type: "exec" command: ["tr", "a-z", "A-Z"] timeout: "2s" }
""",
            """
lines { protocol: "tcp" listen: "127.0.0.1:0" handlers: ["echo", "greet", "shout"] }
dgram { protocol: "udp" listen: "127.0.0.1:0" handlers: ["echo", "greet"] }
extra { protocol: "tcp" listen: "127.0.0.2:0" handlers: ["shout", "greet"] }
extrau { protocol: "udp" listen: "127.0.0.2:0" handler: "shout" }
"""))
        ok, err = do_reload(d, how)
        assert ok, err
        # the connection opened before the reload uses the new handler
        assert old.request("shout quiet") == "QUIET"
        assert old.request("echo b") == "b"
        ls = d.listeners()
        assert set(ls) == {"lines", "dgram", "extra", "extrau"}, ls
        assert ls["extra"]["serving"] and ls["extrau"]["serving"]
        assert d.port("lines") == lines
        extra = d.port("extra")
        # the ports were picked by the kernel: what is exact is which sockets the daemon listens on
        assert tcp_listening(d.pid) == sorted([f"127.0.0.1:{lines}", f"127.0.0.2:{extra}"])
        with LineClient(extra, host="127.0.0.2") as c:
            assert c.request("shout new listener") == "NEW LISTENER"
            assert c.request("greet") == "hello v1"
            assert c.request("echo x") == "Unknown handler: echo"
        with UdpClient(d.port("extrau"), host="127.0.0.2") as u:
            assert u.request("whole datagram") == b"WHOLE DATAGRAM"
        with LineClient(lines) as c:
            assert c.request("shout fresh") == "FRESH"
        hs = {h["name"] for h in d.ctl("handlers")["handlers"]}
        assert hs == {"echo", "greet", "shout"}
        assert d.stats()["reloads"] == 1


# ---- a static reply changed ----------------------------------------------------------------


@HOW
def test_change_static_reply(ctl_daemon, how):
    d = ctl_daemon(V1)
    lines, dgram = d.port("lines"), d.port("dgram")
    with LineClient(lines) as old, UdpClient(dgram) as u:
        assert old.request("greet") == "hello v1"
        assert u.request("greet") == b"hello v1"
        d.write_config(V1.replace("hello v1", "hello v2"))
        ok, err = do_reload(d, how)
        assert ok, err
        assert old.request("greet") == "hello v2"
        assert u.request("greet") == b"hello v2"
        with LineClient(lines) as new:
            assert new.request("greet") == "hello v2"
        assert d.ctl("config")["config"]["handlers"]["greet"]["reply"] == "hello v2"
        # and back
        d.write_config(V1)
        ok, err = do_reload(d, how)
        assert ok, err
        assert old.request("greet") == "hello v1"


# ---- a listener removed ----------------------------------------------------------------------


@HOW
def test_remove_listener_drains(ctl_daemon, how):
    two = config(
        """
echo  { type: "echo" }
greet { type: "static" reply: "hello v1" }
""",
        """
lines { protocol: "tcp" listen: "127.0.0.1:0" handlers: ["echo", "greet"] }
gone  { protocol: "tcp" listen: "127.0.0.2:0" handlers: ["echo", "greet"] }
goneu { protocol: "udp" listen: "127.0.0.2:0" handler: "echo" }
""")
    d = ctl_daemon(two)
    lines, gone, goneu = d.port("lines"), d.port("gone"), d.port("goneu")
    with LineClient(gone, host="127.0.0.2") as draining:
        assert draining.request("echo before") == "before"
        d.write_config(config(
            """
echo  { type: "echo" }
greet { type: "static" reply: "hello v2" }
""",
            """
lines { protocol: "tcp" listen: "127.0.0.1:0" handlers: ["echo", "greet"] }
"""))
        ok, err = do_reload(d, how)
        assert ok, err
        ls = d.listeners()
        assert ls["gone"]["draining"] is True and ls["gone"]["serving"] is False, ls
        assert ls["gone"]["active_connections"] == 1
        assert "goneu" not in ls, ls  # a UDP listener has no connections to drain: it goes at once
        # the open connection keeps working until it is closed
        for i in range(5):
            assert draining.request(f"echo still {i}") == f"still {i}"
        # new connections are refused
        with pytest.raises(ConnectionRefusedError):
            c = socket.create_connection(("127.0.0.2", gone), timeout=2)
            try:
                c.settimeout(1)
                c.sendall(b"echo should not be served\n")
                got = c.recv(100)
            except OSError as e:
                got = repr(e)
            finally:
                c.close()
            pytest.fail(f"connect() to the removed listener's port {gone} succeeded (read {got!r})")
        # the removed UDP listener answers nothing
        with UdpClient(goneu, host="127.0.0.2") as u:
            assert u.request("echo anyone", timeout=0.5) is None
        # the kept listener serves the new config
        with LineClient(lines) as c:
            assert c.request("greet") == "hello v2"
    # once its last connection is closed, the removed listener is gone
    wait_for(lambda: "gone" not in d.listeners(), 3, what="the drained listener to go away")
    assert set(d.listeners()) == {"lines"}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", gone), timeout=2).close()


# ---- a broken config is refused ------------------------------------------------------------------


BROKEN = {
    "unknown_key": V1.replace('dgram { protocol: "udp"', 'dgram {\n    listn: "x"\n    protocol: "udp"'),
    "undefined_handler": V1.replace('handlers: ["echo", "greet"] }\ndgram', 'handlers: ["echo", "nope"] }\ndgram'),
    "bad_type": V1.replace('shutdown_timeout: "3s"', 'shutdown_timeout: "3s"\nmax_connections: "lots"'),
    "syntax": V1.replace('greet { type: "static" reply: "hello v1" }', 'greet { type: "static" reply: "hello v1"'),
}


def first_position(text, needle):
    """(line, col), 1-based, of NEEDLE in TEXT."""
    idx = text.index(needle)
    line = text.count("\n", 0, idx) + 1
    col = idx - (text.rfind("\n", 0, idx) + 1) + 1
    return line, col


@HOW
@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_config_is_refused(ctl_daemon, how, kind):
    d = ctl_daemon(V1)
    lines = d.port("lines")
    with LineClient(lines) as old:
        assert old.request("greet") == "hello v1"
        text = d.render(BROKEN[kind].replace("hello v1", "hello v2"))
        path = d.write_raw_config(text)
        rc, diag = check_t(path)
        assert rc == 1 and diag, diag
        first = diag.splitlines()[0]
        assert first.startswith(f"{path}:"), first
        # where the first error is, computed from the text itself
        if kind == "unknown_key":
            ln, col = first_position(text, "listn")
            assert first == f"{path}:{ln}:{col}: unknown key 'listn' in listener 'dgram'; did you mean 'listen'?"
        elif kind == "undefined_handler":
            ln, col = first_position(text, '"nope"')
            assert first == f"{path}:{ln}:{col}: undefined handler 'nope'"
        elif kind == "bad_type":
            ln, col = first_position(text, '"lots"')
            assert first == f"{path}:{ln}:{col}: 'max_connections' must be an integer, not \"lots\""
        mark = len(d.log())
        before = d.stats()
        if how == "command":
            ans = d.ctl("reload")
            assert ans["ok"] is False, ans
            assert ans["error"] == diag, ans
        else:
            d.send_signal(signal.SIGHUP)
            wait_for(lambda: d.stats()["reloads_refused"] > before["reloads_refused"], 5,
                     what="the refused reload to be counted")
        s = d.stats()
        assert s["reloads_refused"] == before["reloads_refused"] + 1
        assert s["reloads_ok"] == before["reloads_ok"]
        assert s["reloads"] == before["reloads"] + 1  # attempts
        # logged with the position
        assert d.wait_log(r"reload failed", 2)
        assert first in d.log()[mark:], d.log()[mark:]
        # the old config still serves, old and new connections alike
        assert old.request("greet") == "hello v1"
        assert old.request("echo ok") == "ok"
        with LineClient(lines) as c:
            assert c.request("greet") == "hello v1"
        with UdpClient(d.port("dgram")) as u:
            assert u.request("greet") == b"hello v1"
        assert d.ctl("config")["config"]["handlers"]["greet"]["reply"] == "hello v1"
        # fixing the file makes the next reload work
        d.write_config(V1.replace("hello v1", "hello v3"))
        ok, err = do_reload(d, how)
        assert ok, err
        assert old.request("greet") == "hello v3"
        s = d.stats()
        assert s["reloads_ok"] == before["reloads_ok"] + 1
        assert s["reloads_refused"] == before["reloads_refused"] + 1


def test_refused_reload_changes_nothing(ctl_daemon):
    """A config that parses but cannot be applied (a new listener's address is
    taken) is refused as a whole: the handlers' changes do not leak in."""
    d = ctl_daemon(V1)
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        with LineClient(d.port("lines")) as old:
            listeners = (
                'lines { protocol: "tcp" listen: "127.0.0.1:0" handlers: ["echo", "greet"] }\n'
                'dgram { protocol: "udp" listen: "127.0.0.1:0" handlers: ["echo", "greet"] }\n'
                'busy  { protocol: "tcp" listen: "127.0.0.1:%d" handler: "echo" }\n' % port)
            text = config('echo { type: "echo" }\ngreet { type: "static" reply: "hello v2" }', listeners)
            path = d.write_config(text)
            ans = d.ctl("reload")
            assert ans["ok"] is False, ans
            ln, col = first_position(d.config, f'"127.0.0.1:{port}"')
            assert ans["error"] == (f"{path}:{ln}:{col}: listener 'busy': cannot bind 127.0.0.1:{port}: "
                                    "Address already in use"), ans
            assert d.stats()["reloads_refused"] == 1
            assert old.request("greet") == "hello v1"
            assert "busy" not in d.listeners()
    finally:
        taken.close()


# ---- reload under traffic ------------------------------------------------------------------------


LOAD = config(
    """
echo  { type: "echo" }
greet { type: "static" reply: "hello GEN" }
upper { type: "exec" command: ["tr", "a-z", "A-Z"] timeout: "5s" max_concurrency: 32 }
""",
    """
lines { protocol: "tcp" listen: "127.0.0.1:0" handlers: ["echo", "greet", "upper"] }
dgram { protocol: "udp" listen: "127.0.0.1:0" handlers: ["echo", "greet"] }
""",
)


def test_reload_under_continuous_traffic(ctl_daemon):
    d = ctl_daemon(LOAD.replace("GEN", "0"))
    lines, dgram = d.port("lines"), d.port("dgram")
    stop = threading.Event()
    errors = []
    counts = [0] * 22
    ngen = 12
    # gen[0]: the last generation whose reload has finished; gen[1]: the
    # newest one written. A greeting sent after generation lo finished and
    # read before generation hi was written comes from lo..hi, and a
    # connection never goes back to an older one.
    gen = [0, 0]

    def greet_ok(reply, lo, hi, last):
        if not (reply.startswith("hello ") and reply[6:].isdigit()):
            return False
        return max(lo, last) <= int(reply[6:]) <= hi

    def tcp_worker(i):
        try:
            with LineClient(lines, timeout=10) as c:
                n = 0
                last = 0
                while not stop.is_set():
                    # pipelined batch: echo, greet, sometimes exec
                    batch = [f"echo w{i}-{n}", "greet"] + ([f"upper w{i}-{n}"] if n % 10 == 0 else [])
                    lo = gen[0]
                    c.send("".join(m + "\n" for m in batch))
                    replies = c.readlines(len(batch), timeout=10)
                    hi = gen[1]
                    if replies[0] != f"w{i}-{n}":
                        errors.append(f"worker {i} msg {n}: echo answered {replies[0]!r}")
                        return
                    if not greet_ok(replies[1], lo, hi, last):
                        errors.append(f"worker {i} msg {n}: greet answered {replies[1]!r} "
                                      f"(generations {max(lo, last)}..{hi} possible)")
                        return
                    last = int(replies[1][6:])
                    if len(batch) == 3 and replies[2] != f"W{i}-{n}".upper():
                        errors.append(f"worker {i} msg {n}: upper answered {replies[2]!r}")
                        return
                    n += 1
                    counts[i] = n
        except Exception as e:  # noqa: BLE001
            errors.append(f"worker {i}: {e!r}")

    def connect_worker(i):
        # a new connection per message, across the reloads
        n = 0
        try:
            while not stop.is_set():
                with LineClient(lines, timeout=10) as c:
                    r = c.request(f"echo fresh{n}")
                    if r != f"fresh{n}":
                        errors.append(f"fresh connection {n}: {r!r}")
                        return
                n += 1
                counts[i] = n
        except Exception as e:  # noqa: BLE001
            errors.append(f"connect worker: {e!r}")

    def udp_worker(i):
        n = 0
        try:
            with UdpClient(dgram) as u:
                while not stop.is_set():
                    r = u.request(f"echo u{n}", timeout=5)
                    if r != f"u{n}".encode():
                        errors.append(f"udp {n}: {r!r}")
                        return
                    n += 1
                    counts[i] = n
        except Exception as e:  # noqa: BLE001
            errors.append(f"udp worker: {e!r}")

    threads = [threading.Thread(target=tcp_worker, args=(i,)) for i in range(20)]
    threads.append(threading.Thread(target=connect_worker, args=(20,)))
    threads.append(threading.Thread(target=udp_worker, args=(21,)))
    for t in threads:
        t.start()
    try:
        for g in range(1, ngen + 1):
            # every worker is served between two reloads
            before = list(counts)
            wait_for(lambda: errors or all(c > b for c, b in zip(counts, before)), 10,
                     what="every worker to be served again")
            assert not errors, errors[:5]
            gen[1] = g
            d.write_config(LOAD.replace("GEN", str(g)))
            if g % 2:
                ans = d.ctl("reload", timeout=10)
                assert ans["ok"] is True, ans
            else:
                d.reload_signal(timeout=10)
            gen[0] = g
        before = list(counts)
        wait_for(lambda: errors or all(c > b for c, b in zip(counts, before)), 10,
                 what="every worker to be served after the last reload")
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    assert not errors, errors[:5]
    s = d.stats()
    assert s["reloads_ok"] == ngen and s["reloads_refused"] == 0
    g = s["global"]
    assert g["messages_in"] == g["messages_out"], g
    assert g["connection_errors"] == 0 and g["timeout_errors"] == 0, g
    assert s["handlers"]["upper"]["errors"] == 0
    with LineClient(lines) as c:
        assert c.request("greet") == f"hello {ngen}"


# ---- kept listeners keep their socket ----------------------------------------------------------


@HOW
def test_same_address_keeps_socket_and_connections(ctl_daemon, how):
    d = ctl_daemon(V1)
    lines, dgram = d.port("lines"), d.port("dgram")
    inodes_before = daemon_socket_inodes(d.pid)
    with LineClient(lines) as old, UdpClient(dgram) as u:
        assert old.request("greet") == "hello v1"
        # a message half sent before the reload, finished after it
        old.send("echo spans the rel")
        d.write_config(V1.replace("hello v1", "hello v2").replace(
            'handlers: ["echo", "greet"] }\ndgram', 'handlers: ["echo", "greet"] max_line: "1KB" }\ndgram'))
        ok, err = do_reload(d, how)
        assert ok, err
        old.send("oad\n")
        assert old.readline() == "spans the reload"
        assert old.request("greet") == "hello v2"
        assert u.request("greet") == b"hello v2"
        # same ports, same listening sockets
        assert d.port("lines") == lines and d.port("dgram") == dgram
        assert d.listeners()["lines"]["active_connections"] == 1
        kept = daemon_socket_inodes(d.pid)
        listen_inodes = listening_inodes(d.pid, [lines], "tcp") | listening_inodes(d.pid, [dgram], "udp")
        assert len(listen_inodes) == 2
        assert listen_inodes <= inodes_before, "a listening socket was replaced by the reload"
        assert listen_inodes <= kept
        # the kept listener has the new limits: a line over 1 KB now closes
        old.sendline("echo " + "x" * 2000)
        data, closed = old.read_until_closed(3)
        assert b"Error: line too long" in data and closed


def tcp_listening(pid):
    """Sorted "ip:port" of the IPv4 TCP sockets PID listens on (from /proc)."""
    mine = daemon_socket_inodes(pid)
    out = []
    with open(f"/proc/{pid}/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[3] == "0A" and int(parts[9]) in mine:
                hexip, hexport = parts[1].split(":")
                ip = ".".join(str(b) for b in reversed(bytes.fromhex(hexip)))
                out.append(f"{ip}:{int(hexport, 16)}")
    return sorted(out)


def listening_inodes(pid, ports, proto):
    """Inodes of the sockets bound to 127.0.0.1:PORT for PORTS (from /proc/net)."""
    want = {f"0100007F:{p:04X}" for p in ports}
    out = set()
    with open(f"/proc/{pid}/net/{proto}") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[1] in want and (proto == "udp" or parts[3] == "0A"):
                out.add(int(parts[9]))
    return out


def test_port0_listeners_stay_distinct_across_reload(ctl_daemon):
    """Several listeners on "127.0.0.1:0": each keeps its own socket and
    handlers through a reload, and a new one gets a socket of its own."""
    text = config(
        """
echo { type: "echo" }
a    { type: "static" reply: "A" }
b    { type: "static" reply: "B" }
c    { type: "static" reply: "C" }
""",
        """
la { protocol: "tcp" listen: "127.0.0.1:0" handler: "a" }
lb { protocol: "tcp" listen: "127.0.0.1:0" handler: "b" }
""")
    d = ctl_daemon(text)
    pa, pb = d.port("la"), d.port("lb")
    assert tcp_listening(d.pid) == sorted([f"127.0.0.1:{pa}", f"127.0.0.1:{pb}"]) and pa != pb
    d.write_config(text.replace('lb { protocol: "tcp" listen: "127.0.0.1:0" handler: "b" }',
                                'lb { protocol: "tcp" listen: "127.0.0.1:0" handler: "b" }\n'
                                'lc { protocol: "tcp" listen: "127.0.0.1:0" handler: "c" }'))
    assert d.ctl("reload")["ok"] is True
    ls = d.listeners()
    assert set(ls) == {"la", "lb", "lc"}, ls
    assert all(e["serving"] and not e["draining"] for e in ls.values()), ls
    assert d.port("la") == pa and d.port("lb") == pb
    pc = d.port("lc")
    assert tcp_listening(d.pid) == sorted(f"127.0.0.1:{p}" for p in (pa, pb, pc)) and len({pa, pb, pc}) == 3
    for port, want in ((pa, "A"), (pb, "B"), (pc, "C")):
        with LineClient(port) as c:
            assert c.request("x") == want, port
