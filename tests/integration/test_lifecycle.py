# SPDX-License-Identifier: MIT
"""Lifecycle with real sockets and signals (the daemon
core): graceful shutdown with replies in flight, shutdown_timeout, SIGPIPE,
clients that reset while a reply is being written."""
import signal
import socket
import time

import pytest

from daemon_util import (  # noqa: F401  (daemon is a fixture)
    Closed,
    LineClient,
    UdpClient,
    daemon,
    proc_cmdline,
    served,
    signal_mask,
    wait_pid_gone,
)

CONFIG = """
[daemon]
control_socket: ""
max_connections: 1000
shutdown_timeout: "SHUTDOWN"
[handlers]
echo { type: "echo" }
slow { type: "exec" command: ["sh", "-c", "sleep 1; echo done"] }
long { type: "exec" command: ["sh", "-c", "sleep 10; echo late"] }
cat  { type: "stream" command: ["cat"] }
quick { type: "exec" command: ["sh", "-c", "exec 0<&-; sleep 0.2"] }
[listeners]
lines { protocol: "tcp" listen: "127.0.0.1:PORT_L" handlers: ["echo", "slow", "long", "cat", "quick"] max_line: "8MB" max_output: "64MB" }
dgram { protocol: "udp" listen: "127.0.0.1:PORT_U" handlers: ["echo", "slow"] }
"""


def config(shutdown_timeout="5s"):
    return CONFIG.replace("SHUTDOWN", shutdown_timeout)


def wait_children(d, argv0, n=1, timeout=3.0):
    deadline = time.monotonic() + timeout
    while True:
        kids = [p for p in d.children() if proc_cmdline(p)[:1] == [argv0]]
        if len(kids) >= n or time.monotonic() >= deadline:
            return kids
        time.sleep(0.02)


# ---- graceful shutdown -----------------------------------------------------------


def test_sigterm_finishes_reply_in_flight(daemon):
    d = daemon(config("5s"))
    with LineClient(d.ports["L"]) as c:
        c.sendline("slow")
        assert len(wait_children(d, "sh")) == 1, "the exec process should be running"
        d.send_signal(signal.SIGTERM)
        assert c.readline(timeout=4) == "done", "the reply in flight must still arrive"
        data, closed = c.read_until_closed(timeout=3)
        assert closed and data == b"", "after its last reply the connection is closed"
    # the last reply is out, so it exits without waiting out shutdown_timeout
    # (5 s; 4 s only bounds the wait)
    rc = d.wait(timeout=4)
    assert rc == 0, f"daemon exit code {rc}"


def test_sigterm_refuses_new_connections(daemon):
    d = daemon(config("5s"))
    with LineClient(d.ports["L"]) as c:
        c.sendline("slow")
        assert wait_children(d, "sh")
        d.send_signal(signal.SIGTERM)
        assert d.wait_log(r"shutting down", timeout=2), "SIGTERM not logged"
        time.sleep(0.1)
        assert d.alive(), "the daemon must wait for the reply in flight"
        try:
            n = LineClient(d.ports["L"], timeout=2)
        except ConnectionRefusedError:
            n = None
        if n is not None:
            try:
                n.sendline("echo should not be served")
                try:
                    got = n.readline(timeout=0.5)
                except (socket.timeout, Closed) as e:
                    got = f"<{type(e).__name__}>"
            finally:
                n.close()
            pytest.fail(
                "a new connection during shutdown was accepted by the kernel instead of refused "
                f"(the listening socket is still open); it read {got!r}"
            )
        assert c.readline(timeout=4) == "done"
    assert d.wait(timeout=4) == 0


def test_sigterm_udp_reply_in_flight(daemon):
    d = daemon(config("5s"))
    with UdpClient(d.ports["U"]) as u:
        u.send("slow")
        assert wait_children(d, "sh")
        d.send_signal(signal.SIGTERM)
        assert u.recv(timeout=4) == b"done"
    assert d.wait(timeout=4) == 0


def test_shutdown_timeout_kills_longer_work(daemon):
    d = daemon(config("500ms"))
    with LineClient(d.ports["L"]) as c, LineClient(d.ports["L"]) as idle:
        c.sendline("long")
        shells = wait_children(d, "sh")
        sleeps = wait_children(d, "sleep")
        assert (len(shells), len(sleeps)) == (1, 1), "the exec process should be running"
        assert idle.request("echo idle") == "idle"
        d.send_signal(signal.SIGTERM)
        # idle connections go at once, while the busy one is still waiting
        data, closed = idle.read_until_closed(timeout=2)
        assert closed and data == b""
        assert d.alive() and c.is_open(), "the busy connection must get its shutdown_timeout"
        # the busy one is cut at shutdown_timeout without its reply (the
        # command would take 10 s; 4 s only bounds the wait)
        data, closed = c.read_until_closed(timeout=4)
        assert closed and data == b"", "connection still open after shutdown_timeout"
    rc = d.wait(timeout=3)
    assert rc == 0, f"daemon exit code {rc}"
    for p in shells + sleeps:
        assert wait_pid_gone(p, 2), f"process {p} {proc_cmdline(p)} outlived the daemon"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_closes_idle_and_stream_connections_and_exits_0(daemon, sig):
    d = daemon(config("5s"))
    clients = [LineClient(d.ports["L"]) for _ in range(3)]
    try:
        for i, c in enumerate(clients):
            assert c.request(f"echo {i}") == str(i)
        clients[0].sendline("cat streaming")
        assert clients[0].readline() == "streaming"
        cats = wait_children(d, "cat")
        assert len(cats) == 1
        d.send_signal(sig)
        for c in clients:
            data, closed = c.read_until_closed(timeout=2)
            assert closed and data == b""
        # nothing was in flight: it exits without waiting out shutdown_timeout
        # (5 s; 3 s only bounds the wait)
        rc = d.wait(timeout=3)
        assert rc == 0, f"exit code {rc}"
        assert wait_pid_gone(cats[0], 2), "the stream process outlived the daemon"
    finally:
        for c in clients:
            c.close()


# ---- SIGPIPE and resets -------------------------------------------------------------


def test_sigpipe_ignored(daemon):
    d = daemon(config())
    # replies written to peers that went away
    big = "echo " + "p" * (2 * 1024 * 1024)
    for _ in range(5):
        c = LineClient(d.ports["L"])
        c.sendline(big)
        c.sock.recv(1024)
        c.close()  # unread data: the kernel answers the daemon's writes with RST, then EPIPE
    time.sleep(0.3)
    assert d.alive(), f"daemon died: exit {d.proc.returncode}"
    # a program that exits without reading its stdin: writing the payload
    # to the pipe fails with EPIPE
    with LineClient(d.ports["L"]) as c:
        for _ in range(3):
            try:
                reply = c.request("quick " + "q" * (1024 * 1024))
            except Closed:
                pytest.fail(f"connection dropped; daemon exit status {d.wait(1)} (-13 = killed by SIGPIPE)")
            assert reply == ""
    assert d.alive(), f"daemon died: exit {d.proc.returncode}"
    assert served(d.ports["L"])
    ign = signal_mask(d.pid, "SigIgn")
    assert ign & (1 << (signal.SIGPIPE - 1)), f"SIGPIPE not ignored (SigIgn={ign:#x})"


def test_client_reset_mid_reply(daemon):
    d = daemon(config())
    port = d.ports["L"]
    size = 4 * 1024 * 1024
    good = LineClient(port, timeout=10)
    try:
        for i in range(6):
            c = LineClient(port)
            c.sendline("echo " + chr(ord("a") + i) * size)
            if i % 2 == 0:
                # part of the reply is here: the daemon is mid-write
                got = 0
                while got < 64 * 1024:
                    got += len(c.sock.recv(65536))
            else:
                time.sleep(0.05)
            c.reset()
        # meanwhile and afterwards other clients are served, big replies whole
        good.sendline("echo " + "g" * size)
        reply = good.readline(timeout=10)
        assert reply == "g" * size
        assert good.request("echo small") == "small"
        assert d.alive()
        assert served(port)
        # the daemon let go of the reset connections
        assert d.wait_log(r"connection \d+ closed", timeout=2)
    finally:
        good.close()


# ---- busy polling ------------------------------------------------------------------

POLL_CONFIG = """
[daemon]
control_socket: ""
busy_poll_us: POLL
[handlers]
echo { type: "echo" }
[listeners]
lines { protocol: "tcp" listen: "127.0.0.1:PORT_L" handler: "echo" }
dgram { protocol: "udp" listen: "127.0.0.1:PORT_U" handler: "echo" }
"""


# The CPU bounds below check that polling stops at all: a daemon still
# spinning uses all of the 1.5 s, a sleeping one next to nothing.
def idle_cpu(d, seconds=1.5):
    c0 = d.cpu_seconds()
    time.sleep(seconds)
    return d.cpu_seconds() - c0


def test_busy_poll_serves_and_sleeps_when_idle(daemon):
    d = daemon(POLL_CONFIG.replace("POLL", "200"))
    with LineClient(d.ports["L"]) as c:
        for i in range(3000):
            c.sendline(f"m{i}")
            assert c.readline() == f"m{i}"
        # the window shrinks once polling finds nothing: an idle daemon sleeps
        assert idle_cpu(d) < 0.15
        # and it still answers the first message after a long sleep
        c.sendline("after idle")
        assert c.readline() == "after idle"
    with UdpClient(d.ports["U"]) as u:
        assert u.request("dgram") == b"dgram"
    assert idle_cpu(d) < 0.15


def test_busy_poll_turned_on_and_off_by_reload(daemon):
    d = daemon(POLL_CONFIG.replace("POLL", "0"))
    with LineClient(d.ports["L"]) as c:
        for n, setting in enumerate(["300", "0", "50", "0"]):
            for i in range(500):
                c.sendline(f"{n}-{i}")
                assert c.readline() == f"{n}-{i}"
            d.config_path.write_text(d.config.replace("busy_poll_us: 0", f"busy_poll_us: {setting}"))
            d.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while d.log().count("reload complete") < n + 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert d.log().count("reload complete") == n + 1
            c.sendline("ping")
            assert c.readline() == "ping"
        assert idle_cpu(d) < 0.15
