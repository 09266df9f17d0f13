# SPDX-License-Identifier: MIT
"""Interrupt coalescing in the event loop (daemon.coalesce_us): after a pass
that found many events ready at once, the loop waits a fixed time for more to
gather instead of sleeping in epoll until the next one wakes it.

The load is made deterministic by stopping the daemon (SIGSTOP), writing to
many connections, and letting it go on (SIGCONT): its first pass then finds
every connection ready. The daemon's own count (`stats`: global.loop_gathers)
says whether it waited; every reply is checked."""
import signal
import time

from ctl_util import ctl
from daemon_util import LineClient, daemon  # noqa: F401  (daemon is a fixture)
from http_util import ctl_socket_path

CONFIG = """
[daemon]
control_socket: "CTL"
COALESCE
[handlers]
echo { type: "echo" }
slow { type: "exec" command: ["sh", "-c", "cat /proc/self/timerslack_ns"] }
[listeners]
lines { protocol: "tcp" listen: "127.0.0.1:PORT_L" handlers: ["echo", "slow"] }
"""

CLIENTS = 32


def start(daemon, tmp_path, coalesce):
    path = ctl_socket_path(tmp_path)
    conf = CONFIG.replace("CTL", path).replace("COALESCE", coalesce)
    return daemon(conf), path


def gathers(path):
    return ctl(path, "stats")["global"]["loop_gathers"]


def wait_stopped(pid):
    """SIGSTOP takes effect when the process next runs: lines sent before it
    has stopped may be read in a pass of their own, and the burst would not
    be one."""
    deadline = time.monotonic() + 5
    while open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
        assert time.monotonic() < deadline, "the daemon did not stop"
        time.sleep(0.001)


def burst(d, clients, rounds=3, settle=0.0):
    """Each round: the daemon stopped, a line on every connection, then let
    go; every connection must get its own line back. SETTLE seconds between
    rounds let the loop finish waiting before the next round comes."""
    for r in range(rounds):
        time.sleep(settle)
        d.send_signal(signal.SIGSTOP)
        try:
            wait_stopped(d.pid)
            for i, c in enumerate(clients):
                c.sendline(f"echo r{r}c{i}")
        finally:
            d.send_signal(signal.SIGCONT)
        for i, c in enumerate(clients):
            assert c.readline() == f"r{r}c{i}"


def test_many_ready_connections_make_the_loop_gather(daemon, tmp_path):
    d, path = start(daemon, tmp_path, "")  # the default is on
    clients = []
    try:
        for _ in range(CLIENTS):  # connected and served one at a time
            clients.append(LineClient(d.ports["L"]))
            assert clients[-1].request("echo hi") == "hi"
        assert gathers(path) == 0
        burst(d, clients)
        assert gathers(path) >= 3  # at least once per round
    finally:
        for c in clients:
            c.close()


def test_the_loop_waits_through_quiet_passes_then_sleeps(daemon, tmp_path):
    """After the pass that finds every connection ready, the next passes find
    nothing (each client waits for its answer): the loop still waits on its
    timer coalesce_quiet_waits times, then goes back to sleeping in epoll,
    where the next round's burst finds it. So each round counts 1 + that many
    waits, exactly."""
    d, path = start(daemon, tmp_path, "coalesce_quiet_waits: 3")
    clients = [LineClient(d.ports["L"]) for _ in range(CLIENTS)]
    try:
        # connecting 32 clients is itself a load that makes the loop gather:
        # a first round and a pause leave that behind
        burst(d, clients, rounds=1)
        time.sleep(0.1)
        before = gathers(path)
        burst(d, clients, rounds=4, settle=0.1)
        time.sleep(0.1)
        assert gathers(path) - before == 4 * (1 + 3)
        # 0: back to sleeping at the first quiet pass, one wait a round; a
        # reload changes it for the next round
        d.config_path.write_text(d.config.replace("coalesce_quiet_waits: 3", "coalesce_quiet_waits: 0"))
        assert ctl(path, "reload")["ok"] is True
        before = gathers(path)
        burst(d, clients, rounds=4, settle=0.1)
        time.sleep(0.1)
        assert gathers(path) - before == 4
    finally:
        for c in clients:
            c.close()


def test_a_lone_client_is_never_held_back(daemon, tmp_path):
    d, path = start(daemon, tmp_path, "")
    with LineClient(d.ports["L"]) as c:
        for i in range(2000):
            c.sendline(f"echo {i}")
            assert c.readline() == str(i)
    assert gathers(path) == 0


def test_zero_turns_it_off_and_a_reload_turns_it_on(daemon, tmp_path):
    d, path = start(daemon, tmp_path, "coalesce_us: 0")
    clients = [LineClient(d.ports["L"]) for _ in range(CLIENTS)]
    try:
        burst(d, clients)
        assert gathers(path) == 0
        d.config_path.write_text(d.config.replace("coalesce_us: 0", "coalesce_us: 200"))
        assert ctl(path, "reload")["ok"] is True
        burst(d, clients)
        assert gathers(path) >= 3
        # and back off
        d.config_path.write_text(d.config)
        assert ctl(path, "reload")["ok"] is True
        before = gathers(path)
        burst(d, clients)
        assert gathers(path) == before
    finally:
        for c in clients:
            c.close()


def test_the_timer_slack_is_the_processs_own_again_after_a_wait(daemon, tmp_path):
    """The wait sets the thread's timer slack to 1 us for itself alone: the
    daemon, and the programs it starts, keep the slack they were given."""
    d, path = start(daemon, tmp_path, "coalesce_us: 1000")
    own = int(open(f"/proc/{d.pid}/timerslack_ns").read())
    clients = [LineClient(d.ports["L"]) for _ in range(CLIENTS)]
    try:
        burst(d, clients, rounds=5)
        assert gathers(path) >= 5
        time.sleep(0.1)  # past the waits through quiet passes that follow a round
        assert int(open(f"/proc/{d.pid}/timerslack_ns").read()) == own
        # a program started from a pass between two waits
        d.send_signal(signal.SIGSTOP)
        try:
            wait_stopped(d.pid)
            for i, c in enumerate(clients):
                c.sendline("slow" if i == 0 else f"echo {i}")
        finally:
            d.send_signal(signal.SIGCONT)
        assert clients[0].readline(timeout=10) == str(own)
        for i, c in enumerate(clients[1:], 1):
            assert c.readline() == str(i)
    finally:
        for c in clients:
            c.close()


def test_idle_daemon_uses_no_cpu(daemon, tmp_path):
    d, path = start(daemon, tmp_path, "")
    clients = [LineClient(d.ports["L"]) for _ in range(CLIENTS)]
    try:
        burst(d, clients)
        assert gathers(path) >= 3
        c0 = d.cpu_seconds()
        time.sleep(1.5)
        # a loop still waiting in turns would use a good part of the 1.5 s
        assert d.cpu_seconds() - c0 < 0.15
    finally:
        for c in clients:
            c.close()
