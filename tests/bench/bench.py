#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""tusknetd benchmarks, side by side with the peer servers.

Every server under test (tusknetd, redis-server, nginx) runs pinned to CPU 0
with `taskset -c 0`; this script and every load generator it starts run
pinned to CPU 1. Each benchmark is a function in BENCHMARKS that returns
table rows; the table and the notes are printed at the end.

    /usr/bin/python3 tests/bench/bench.py --tusknetd build/release/tusknetd
    ... --only ping,udp          run a subset (see --list)
    ... --quick                  smaller runs, for trying the harness out

Standard library only. Exit status: 0 when every benchmark ran (targets
missed or not), 2 when a benchmark could not run, 1 on bad usage.
"""

import argparse
import os
import re
import resource
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from statistics import median

SERVER_CPU = 0
CLIENT_CPU = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- helpers

class BenchError(Exception):
    pass


class Row:
    """One line of the final table."""

    def __init__(self, name, tusknetd, peer="n/a", ratio=None, target="", met=None):
        self.name = name
        self.tusknetd = tusknetd
        self.peer = peer
        self.ratio = ratio          # float, or None for "n/a"
        self.target = target
        self.met = met              # True / False / None (no target)


class Ctx:
    """What every benchmark gets: options, a temp dir, process bookkeeping, notes."""

    def __init__(self, args, tmpdir):
        self.args = args
        self.tmp = tmpdir
        self.procs = []             # every Popen we started, killed at the end
        self.notes = []
        self.pin = args.pin

    def note(self, text):
        self.notes.append(text)

    def path(self, name):
        return os.path.join(self.tmp, name)

    # -- processes

    def start_server(self, name, argv, nofile=None, cpu=SERVER_CPU):
        """Start a server pinned to CPU (SERVER_CPU; CLIENT_CPU for a server
        behind the one measured); stdout/stderr go to a log file."""
        if self.pin:
            argv = ["taskset", "-c", str(cpu)] + argv
        log = open(self.path(name + ".log"), "ab")

        def pre():
            if nofile:
                raise_nofile(nofile)

        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             preexec_fn=pre, start_new_session=True, cwd=self.tmp)
        log.close()
        p.bench_name = name
        self.procs.append(p)
        return p

    def log_tail(self, p, n=15):
        try:
            with open(self.path(p.bench_name + ".log"), "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join("    " + l for l in lines[-n:])
        except OSError:
            return ""

    def stop(self, p):
        if p in self.procs:
            self.procs.remove(p)
        stop_process(p)

    def stop_all(self):
        while self.procs:
            stop_process(self.procs.pop())

    def run_client(self, argv, timeout):
        """Run a load generator pinned to CLIENT_CPU; returns (rc, output) or raises on timeout."""
        if self.pin:
            argv = ["taskset", "-c", str(CLIENT_CPU)] + argv
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(p)
            raise BenchError("%s did not finish within %ds" % (" ".join(argv), timeout))
        self.procs.remove(p)
        return p.returncode, out.decode("utf-8", "replace")


def stop_process(p):
    if p.poll() is not None:
        return
    try:
        p.terminate()
        p.wait(3)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(3)
    except ProcessLookupError:
        pass


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(n, soft), max(n, hard)))
    except (ValueError, OSError):      # not root: as far as the hard limit goes
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_tcp(p, ctx, port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise BenchError("%s exited with %s at start:\n%s" % (p.bench_name, p.returncode, ctx.log_tail(p)))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError("%s is not accepting on port %d after %gs" % (p.bench_name, port, timeout))


def wait_udp_echo(p, ctx, port, timeout=10.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.1", port))
    s.settimeout(0.1)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise BenchError("%s exited with %s at start:\n%s" % (p.bench_name, p.returncode, ctx.log_tail(p)))
            try:
                s.send(b"probe")
                if s.recv(2048) == b"probe":
                    return
            except (socket.timeout, ConnectionRefusedError):
                pass
    finally:
        s.close()
    raise BenchError("%s does not echo on udp port %d after %gs" % (p.bench_name, port, timeout))


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_ticks():
    """{cpu index: (busy, total)} jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                v = [int(x) for x in parts[1:]]
                idle = v[3] + (v[4] if len(v) > 4 else 0)
                out[int(parts[0][3:])] = (sum(v[:8]) - idle, sum(v[:8]))
    return out


def busy_between(a, b):
    """{cpu index: busy fraction} between two cpu_ticks() samples."""
    return {c: (b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1]) for c in b if c in a}


def busy_fraction(seconds=0.5):
    """How busy each CPU is with whatever runs now (before our servers start)."""
    a = cpu_ticks()
    time.sleep(seconds)
    return busy_between(a, cpu_ticks())


def check_quiet(ctx, label):
    """Note it when CPU 0 or 1 is already busy: the numbers then measure the contention."""
    busy = busy_fraction()
    loaded = {c: f for c, f in busy.items() if c in (SERVER_CPU, CLIENT_CPU) and f > 0.10}
    if loaded:
        ctx.note("%s: machine NOT idle before the run (%s busy with other processes): "
                 "numbers are unreliable, rerun on a quiet machine"
                 % (label, ", ".join("cpu%d %d%%" % (c, f * 100) for c, f in sorted(loaded.items()))))


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError("no VmRSS for pid %d" % pid)


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def tusknetd_conf(ctx, name, handlers, listeners, max_connections=20000, daemon_extra=""):
    text = ('[daemon]\nlog_level: "warn"\ncontrol_socket: ""\nmax_connections: %d\n%s'
            "[handlers]\n%s\n[listeners]\n%s\n" % (max_connections, daemon_extra, handlers, listeners))
    return write(ctx.path(name + ".conf"), text)


def start_tusknetd(ctx, name, conf, nofile=None):
    return ctx.start_server(name, [ctx.args.tusknetd, "-c", conf], nofile=nofile)


def start_redis(ctx, port, nofile=None, maxclients=None):
    argv = [ctx.args.redis_server, "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", ctx.tmp]
    if maxclients:
        argv += ["--maxclients", str(maxclients)]
    p = ctx.start_server("redis-server", argv, nofile=nofile)
    wait_tcp(p, ctx, port)
    return p


def paired_median(ours, theirs):
    """Median of the per-round ratios (round i of each side ran back to back):
    steadier than best against best when rounds vary more than the servers do."""
    ratios = sorted(a[0] / b[0] for a, b in zip(ours, theirs) if b[0] > 0)
    if not ratios:
        return None
    mid = len(ratios) // 2
    return ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2


def fmt_int(v):
    return "{:,}".format(int(round(v))).replace(",", "")


# ------------------------------------------------------- 1. TCP line PING

BUSY_POLL_US = 50

PING_RPS_RE = re.compile(r"PING_INLINE: ([\d.]+) requests per second(?:, p50=([\d.]+) msec)?")


def redis_benchmark(ctx, port, n, pipeline, timeout):
    argv = [ctx.args.redis_benchmark, "-h", "127.0.0.1", "-p", str(port),
            "-t", "ping_inline", "-c", "50", "-n", str(n), "-q"]
    if pipeline > 1:
        argv += ["-P", str(pipeline)]
    rc, out = ctx.run_client(argv, timeout)
    m = None
    for m in PING_RPS_RE.finditer(out.replace("\r", "\n")):
        pass
    if rc != 0 or m is None:
        raise BenchError("redis-benchmark rc=%d, no result in: %r" % (rc, out[-300:]))
    return float(m.group(1)), (float(m.group(2)) if m.group(2) else None)


def probe_line_reply(port):
    """What the server answers to an inline PING, raw bytes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        s.sendall(b"PING\r\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(100)
            if not chunk:
                break
            data += chunk
        return data
    finally:
        s.close()


def bench_tcp_ping(ctx):
    """redis-benchmark -t ping_inline -c 50, plain and -P 16, tusknetd vs redis-server."""
    a = ctx.args
    port = free_port()
    listeners = 'redis { protocol: "tcp" listen: "127.0.0.1:%d" handler: "ping" }' % port
    conf = tusknetd_conf(ctx, "ping", 'ping { type: "static" reply: "+PONG" }', listeners)
    tn = start_tusknetd(ctx, "tusknetd-ping", conf)
    wait_tcp(tn, ctx, port)

    # redis-benchmark reads replies with hiredis, which wants every RESP line to
    # end in CRLF; a bare "+PONG\n" leaves it waiting forever. If tusknetd
    # answers with LF only, measure with a reply that carries its own CR (a
    # literal CR byte inside the config string; TuskLang has no \r escape), so
    # the wire bytes are exactly redis's "+PONG\r\n", and say so.
    reply = probe_line_reply(port)
    if not reply.endswith(b"\r\n"):
        ctx.note("tusknetd answers an inline 'PING\\r\\n' with %r; redis-benchmark (hiredis) needs "
                 "CRLF-terminated lines and hangs on it. The ping rows were measured with "
                 "reply: \"+PONG<CR>\" (a literal CR byte in the config string) so the wire "
                 "reply is b'+PONG\\r\\n'." % reply)
        ctx.stop(tn)
        conf = tusknetd_conf(ctx, "ping-crlf", 'ping { type: "static" reply: "+PONG\r" }', listeners)
        tn = start_tusknetd(ctx, "tusknetd-ping-crlf", conf)
        wait_tcp(tn, ctx, port)
        reply = probe_line_reply(port)
        if reply != b"+PONG\r\n":
            raise BenchError("tusknetd ping reply is %r even with a CR in the config" % reply)

    rport = free_port()
    rd = start_redis(ctx, rport)

    # The same daemon with daemon.busy_poll_us set (docs/design.md: busy polling):
    # an operator's throughput setting, measured beside the default.
    bport = free_port()
    blisteners = 'redis { protocol: "tcp" listen: "127.0.0.1:%d" handler: "ping" }' % bport
    bconf = tusknetd_conf(ctx, "ping-busypoll", 'ping { type: "static" reply: "+PONG" }', blisteners,
                          daemon_extra="busy_poll_us: %d\n" % BUSY_POLL_US)
    tb = start_tusknetd(ctx, "tusknetd-ping-busypoll", bconf)
    wait_tcp(tb, ctx, bport)

    # Rounds alternate the servers so that drift hits all; each side's best
    # round is reported (the least disturbed one), and the median of the
    # per-round ratios beside it.
    rows = []
    rounds = max(1, a.rounds)
    cases = [("tcp ping_inline -c50", 1, a.ping_n),
             ("tcp ping_inline -c50 -P16", 16, a.ping_pipelined_n)]
    servers = (("tusknetd", tn, port), ("busypoll", tb, bport), ("redis", rd, rport))
    for label, pipeline, n in cases:
        res = {who: [] for who, _, _ in servers}
        for i in range(rounds):
            order = servers[i % 3:] + servers[:i % 3]
            for who, proc, p in order:
                c0, t0 = cpu_seconds(proc.pid), time.monotonic()
                u0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                rps, p50 = redis_benchmark(ctx, p, n // rounds, pipeline, timeout=120)
                u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                dt = time.monotonic() - t0
                cpu = (cpu_seconds(proc.pid) - c0) / dt
                gen = (u1.ru_utime + u1.ru_stime - u0.ru_utime - u0.ru_stime) / dt
                res[who].append((rps, p50, cpu, gen))
        r = max(res["redis"])
        for who, suffix in (("tusknetd", ""), ("busypoll", ", busy_poll_us %d" % BUSY_POLL_US)):
            t = max(res[who])
            ratio = t[0] / r[0]
            rows.append(Row(label + suffix, "%s rps" % fmt_int(t[0]), "%s rps" % fmt_int(r[0]), ratio,
                            ">= 1.0", ratio >= 1.0))
            ctx.note("%s%s: rounds tusknetd %s / redis %s rps (median of paired round ratios %.2f); best round "
                     "p50 %s / %s ms; CPU used by server %d%% / %d%%, by redis-benchmark %d%% / %d%%"
                     % (label, suffix, " ".join(fmt_int(x[0]) for x in res[who]),
                        " ".join(fmt_int(x[0]) for x in res["redis"]), paired_median(res[who], res["redis"]),
                        t[1], r[1], t[2] * 100, r[2] * 100, t[3] * 100, r[3] * 100))
    return rows


# ---------------------------------------------------------- 2. UDP echo

def udp_echo_rate(port, seconds, nsock, window, size, warmup=0.5):
    """Windowed non-blocking UDP echo client: replies per second over `seconds`."""
    payload = os.urandom(size // 2).hex().encode()[:size]
    socks, outst = {}, {}
    ep = select.epoll()
    try:
        for _ in range(nsock):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.connect(("127.0.0.1", port))
            s.setblocking(False)
            socks[s.fileno()] = s
            outst[s.fileno()] = 0
            ep.register(s.fileno(), select.EPOLLIN)

        def fill(fd):
            s, k = socks[fd], window - outst[fd]
            send = s.send
            try:
                for _ in range(k):
                    send(payload)
                    outst[fd] += 1
            except (BlockingIOError, ConnectionRefusedError):
                pass

        for fd in socks:
            fill(fd)
        start = time.monotonic()
        t_count = start + warmup
        end = t_count + seconds
        got = bad = refills = 0
        counting = False
        while True:
            now = time.monotonic()
            if not counting and now >= t_count:
                counting, got = True, 0
            if now >= end:
                break
            events = ep.poll(0.05)
            if not events:                  # lost datagrams: refill every window
                refills += 1
                for fd in socks:
                    outst[fd] = 0
                    fill(fd)
                continue
            for fd, _ in events:
                s = socks[fd]
                recv = s.recv
                n = 0
                try:
                    while True:
                        d = recv(2048)
                        n += 1
                        if len(d) != size:
                            bad += 1
                except (BlockingIOError, ConnectionRefusedError):
                    pass
                got += n
                outst[fd] = max(0, outst[fd] - n)
                fill(fd)
        elapsed = time.monotonic() - t_count
        return got / elapsed, bad, refills
    finally:
        ep.close()
        for s in socks.values():
            s.close()


def bench_udp_echo(ctx):
    """64-byte datagrams, windowed, from this (CPU 1) process; no peer to compare."""
    a = ctx.args
    port = free_port(socket.SOCK_DGRAM)
    conf = tusknetd_conf(ctx, "udp", 'echo { type: "echo" }',
                         'dgram { protocol: "udp" listen: "127.0.0.1:%d" handler: "echo" }' % port)
    tn = start_tusknetd(ctx, "tusknetd-udp", conf)
    wait_udp_echo(tn, ctx, port)
    c0, t0 = cpu_seconds(tn.pid), time.monotonic()
    u0 = resource.getrusage(resource.RUSAGE_SELF)
    rate, bad, refills = udp_echo_rate(port, a.udp_seconds, nsock=8, window=64, size=64)
    u1 = resource.getrusage(resource.RUSAGE_SELF)
    dt = time.monotonic() - t0
    cpu = (cpu_seconds(tn.pid) - c0) / dt
    gen = (u1.ru_utime + u1.ru_stime - u0.ru_utime - u0.ru_stime) / dt
    if bad:
        raise BenchError("udp echo: %d replies of the wrong size" % bad)
    ctx.note("udp echo 64B: 8 sockets x 64 in flight, %gs; CPU used by tusknetd %d%%, by the Python "
             "client %d%% (a server well below 100%% means the client is the limit); "
             "%d window refills after loss" % (a.udp_seconds, cpu * 100, gen * 100, refills))
    return [Row("udp echo 64B", "%s msg/s" % fmt_int(rate), "n/a")]


# ------------------------------------------------- 3. idle TCP connection memory

def open_idle(ctx, p, port, n, base_fds):
    """Open n idle TCP connections to port, waiting for the server to accept them all."""
    conns = []
    batch = 256
    try:
        while len(conns) < n:
            for _ in range(min(batch, n - len(conns))):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.settimeout(5)
                s.connect(("127.0.0.1", port))
                conns.append(s)
            deadline = time.monotonic() + 10
            while fd_count(p.pid) < base_fds + len(conns):
                if p.poll() is not None:
                    raise BenchError("%s exited with %s holding %d connections:\n%s"
                                     % (p.bench_name, p.returncode, len(conns), ctx.log_tail(p)))
                if time.monotonic() > deadline:
                    raise BenchError("%s accepted only %d of %d connections"
                                     % (p.bench_name, fd_count(p.pid) - base_fds, len(conns)))
                time.sleep(0.005)
        # every connection must still be open (a server over its limit closes them)
        time.sleep(0.3)
        poller = select.poll()
        for s in conns:
            poller.register(s, select.POLLIN)
        closed = poller.poll(0)
        if closed:
            raise BenchError("%s closed or wrote to %d idle connections" % (p.bench_name, len(closed)))
        return conns
    except BaseException:
        for s in conns:
            s.close()
        raise


def idle_memory(ctx, p, port, n):
    """RSS growth per connection for n idle connections; closes them afterwards."""
    # one connection opened and closed first, so lazily built state is in the base line
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    time.sleep(0.3)
    base_fds = fd_count(p.pid)
    before = rss_bytes(p.pid)
    conns = open_idle(ctx, p, port, n, base_fds)
    try:
        time.sleep(0.5)
        if fd_count(p.pid) < base_fds + n:
            raise BenchError("%s holds only %d of %d connections" % (p.bench_name, fd_count(p.pid) - base_fds, n))
        after = rss_bytes(p.pid)
    finally:
        for s in conns:
            s.close()
    return (after - before) / n, before, after


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile %(nofile)d;
pid %(tmp)s/nginx.pid;
error_log %(tmp)s/nginx-error.log warn;
events { worker_connections %(conns)d; }
http {
    access_log off;
    client_body_temp_path %(tmp)s/body;
    proxy_temp_path %(tmp)s/proxy;
    fastcgi_temp_path %(tmp)s/fastcgi;
    uwsgi_temp_path %(tmp)s/uwsgi;
    scgi_temp_path %(tmp)s/scgi;
    client_header_timeout 300s;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:%(port)d;
        location / { return 200 "ok\\n"; }
    }
}
"""


def bench_idle_memory(ctx):
    """RSS per idle TCP connection: tusknetd (tcp echo) vs redis-server vs nginx (1 worker)."""
    a = ctx.args
    n = a.conns
    nofile = n * 3 if n * 3 > 30000 else 30000
    raise_nofile(n + 1000)          # this client process
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < n + 100:
        raise BenchError("cannot raise this process's RLIMIT_NOFILE to %d" % (n + 100))
    results = {}

    port = free_port()
    conf = tusknetd_conf(ctx, "idle", 'echo { type: "echo" }',
                         'lines { protocol: "tcp" listen: "127.0.0.1:%d" handler: "echo" }' % port,
                         max_connections=2 * n)
    tn = start_tusknetd(ctx, "tusknetd-idle", conf, nofile=nofile)
    try:
        wait_tcp(tn, ctx, port)
        results["tusknetd"] = idle_memory(ctx, tn, port, n)
    finally:
        ctx.stop(tn)

    if a.redis_server:
        port = free_port()
        rd = start_redis(ctx, port, nofile=nofile, maxclients=2 * n)
        try:
            results["redis"] = idle_memory(ctx, rd, port, n)
        except BenchError as e:
            ctx.note("idle memory, redis: %s" % e)
        finally:
            ctx.stop(rd)

    if a.nginx:
        port = free_port()
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(ctx.path(d), exist_ok=True)
        nconf = write(ctx.path("nginx.conf"),
                      NGINX_CONF % {"tmp": ctx.tmp, "port": port, "conns": 2 * n, "nofile": nofile})
        ng = ctx.start_server("nginx", [a.nginx, "-p", ctx.tmp, "-c", nconf, "-e", ctx.path("nginx-error.log")],
                              nofile=nofile)
        try:
            wait_tcp(ng, ctx, port)
            results["nginx"] = idle_memory(ctx, ng, port, n)
        except BenchError as e:
            ctx.note("idle memory, nginx: %s" % e)
        finally:
            ctx.stop(ng)

    t = results["tusknetd"][0]
    peers = ", ".join("%s %s" % (k, fmt_int(results[k][0])) for k in ("redis", "nginx") if k in results)
    ratio = t / results["redis"][0] if "redis" in results and results["redis"][0] > 0 else None
    ctx.note("idle tcp conn memory, %d connections: VmRSS before -> after: %s"
             % (n, "; ".join("%s %.1f -> %.1f MiB" % (k, v[1] / 2**20, v[2] / 2**20)
                             for k, v in results.items())))
    return [Row("idle tcp conn memory", "%s B/conn" % fmt_int(t), peers or "n/a", ratio,
                "<= 1024", t <= 1024)]


# ------------------------------------------------------------ 4. HTTP GET /health

HEALTH_BODY = '{"status":"healthy","uptime_seconds":1.000,"version":"0.1.0"}'

NGINX_HEALTH_CONF = """\
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile %(nofile)d;
pid %(tmp)s/nginx-%(name)s.pid;
error_log %(tmp)s/nginx-%(name)s-error.log warn;
events { worker_connections %(conns)d; }
http {
    access_log off;
    client_body_temp_path %(tmp)s/body;
    proxy_temp_path %(tmp)s/proxy;
    fastcgi_temp_path %(tmp)s/fastcgi;
    uwsgi_temp_path %(tmp)s/uwsgi;
    scgi_temp_path %(tmp)s/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:%(port)d%(listen)s backlog=65535;
%(server)s        location /health { default_type application/json; return 200 '%(body)s'; }
    }
%(more)s}
"""


def start_nginx_health(ctx, name, conns, nofile, listen="", server="", more="", cpu=SERVER_CPU):
    """nginx, 1 worker, answering GET /health like tusknetd's health handler;
    LISTEN, SERVER and MORE add to the listen line, the server block and the
    http block. Returns (process, port)."""
    nport = free_port()
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(ctx.path(d), exist_ok=True)
    nconf = write(ctx.path("nginx-%s.conf" % name), NGINX_HEALTH_CONF % {
        "name": name, "tmp": ctx.tmp, "port": nport, "conns": conns, "nofile": nofile, "body": HEALTH_BODY,
        "listen": listen, "server": server, "more": more})
    ng = ctx.start_server("nginx-" + name, [ctx.args.nginx, "-p", ctx.tmp, "-c", nconf, "-e",
                                            ctx.path("nginx-%s-error.log" % name)], nofile=nofile, cpu=cpu)
    wait_tcp(ng, ctx, nport)
    return ng, nport

WRK_RPS_RE = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_P99_RE = re.compile(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", re.M)
WRK_ERR_RE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
WRK_NON2XX_RE = re.compile(r"Non-2xx or 3xx responses: (\d+)")
WRK_REQS_RE = re.compile(r"(\d+) requests in ")


def wrk_run(ctx, url, conns, seconds, timeout, headers=(), script=None):
    """wrk -t1 on url (SCRIPT: a wrk Lua script): dict of rps, p99 (ms or None), requests, errors
    (connect, read, write, timeout), non2xx."""
    argv = [ctx.args.wrk, "-t1", "-c%d" % conns, "-d%ds" % seconds, "--latency", "--timeout", "10s"]
    for h in headers:
        argv += ["-H", h]
    if script:
        argv += ["-s", script]
    rc, out = ctx.run_client(argv + [url], timeout)
    m = WRK_RPS_RE.search(out)
    if rc != 0 or not m:
        raise BenchError("wrk rc=%d: %r" % (rc, out[-300:]))
    p = WRK_P99_RE.search(out)
    p99 = None
    if p:
        p99 = float(p.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p.group(2)]
    errs = WRK_ERR_RE.search(out)
    non2xx = WRK_NON2XX_RE.search(out)
    reqs = WRK_REQS_RE.search(out)
    return {"rps": float(m.group(1)), "p99": p99, "requests": int(reqs.group(1)) if reqs else 0,
            "errors": tuple(int(x) for x in errs.groups()) if errs else (0, 0, 0, 0),
            "non2xx": int(non2xx.group(1)) if non2xx else 0}


def wrk(ctx, port, conns, seconds, timeout):
    r = wrk_run(ctx, "http://127.0.0.1:%d/health" % port, conns, seconds, timeout)
    return r["rps"], r["p99"], sum(r["errors"]) + r["non2xx"]


def start_http_pair(ctx, conns):
    nofile = max(30000, conns * 3)
    port = free_port()
    conf = tusknetd_conf(ctx, "http", 'health { type: "health" }',
                         'web { protocol: "http" listen: "127.0.0.1:%d" backlog: 65535 routes { "GET /health": "health" } '
                         'idle_timeout: "300s" }' % port, max_connections=conns * 2)
    tn = start_tusknetd(ctx, "tusknetd-http", conf, nofile=nofile)
    wait_tcp(tn, ctx, port)
    ng, nport = start_nginx_health(ctx, "http", conns * 2, nofile)
    return (tn, port), (ng, nport)


def bench_http_health(ctx):
    """wrk GET /health, 50 keep-alive connections: tusknetd (health handler) vs nginx 1 worker (return 200)."""
    a = ctx.args
    if not a.wrk or not a.nginx:
        raise BenchError("wrk and nginx are needed")
    (tn, port), (ng, nport) = start_http_pair(ctx, 50)
    res = {"tusknetd": [], "nginx": []}
    for _ in range(max(1, a.rounds)):
        for who, p in (("tusknetd", port), ("nginx", nport)):
            res[who].append(wrk(ctx, p, 50, a.http_seconds, timeout=a.http_seconds + 60))
    t, n = max(res["tusknetd"]), max(res["nginx"])
    ratio = t[0] / n[0]
    ctx.note("http GET /health -c50: rounds tusknetd %s / nginx %s rps; p99 of the best round %.2f / %.2f ms; "
             "errors %d / %d" % (" ".join(fmt_int(x[0]) for x in res["tusknetd"]),
                                 " ".join(fmt_int(x[0]) for x in res["nginx"]), t[1] or 0, n[1] or 0, t[2], n[2]))
    rows = [Row("http GET /health -c50", "%s rps" % fmt_int(t[0]), "%s rps" % fmt_int(n[0]), ratio,
                ">= 1.0", ratio >= 1.0 and t[2] == 0),
            Row("http GET /health p99", "%.2f ms" % (t[1] or 0), "%.2f ms" % (n[1] or 0),
                (t[1] / n[1]) if t[1] and n[1] else None, "<= 1.0", bool(t[1] and n[1] and t[1] <= n[1] * 1.0))]
    ctx.stop(tn)
    ctx.stop(ng)
    return rows


def bench_http_10k(ctx):
    """10,000 concurrent keep-alive HTTP clients (wrk -c10000): no error, tusknetd vs nginx."""
    a = ctx.args
    if not a.wrk or not a.nginx:
        raise BenchError("wrk and nginx are needed")
    raise_nofile(a.conns + 1000)
    (tn, port), (ng, nport) = start_http_pair(ctx, a.conns)
    t = wrk(ctx, port, a.conns, a.http_seconds, timeout=a.http_seconds + 120)
    n = wrk(ctx, nport, a.conns, a.http_seconds, timeout=a.http_seconds + 120)
    ctx.note("http %d keep-alive clients: tusknetd %s rps, %d errors; nginx %s rps, %d errors"
             % (a.conns, fmt_int(t[0]), t[2], fmt_int(n[0]), n[2]))
    ctx.stop(tn)
    ctx.stop(ng)
    return [Row("http %d keep-alive clients" % a.conns, "%d errors" % t[2], "nginx %d errors" % n[2], None,
                "0 errors", t[2] == 0)]


# ------------------------------------------------------------ 4c. worker processes: 2 over 1


def unpinned(ctx, fn, *args, **kw):
    """FN with servers and clients on every CPU (this script is pinned to
    CLIENT_CPU, and children inherit that): both sides of the comparison run
    alike, with no pinning, so two worker processes can use two cores."""
    every = "0-%d" % (os.cpu_count() - 1)
    saved_pin, saved_start, saved_client = ctx.pin, ctx.start_server, ctx.run_client
    ctx.pin = False
    ctx.start_server = lambda name, argv, nofile=None: saved_start(name, ["taskset", "-c", every] + argv, nofile)
    ctx.run_client = lambda argv, timeout: saved_client(["taskset", "-c", every] + argv, timeout)
    try:
        return fn(*args, **kw)
    finally:
        ctx.pin, ctx.start_server, ctx.run_client = saved_pin, saved_start, saved_client


def start_workers_pair(ctx, workers):
    port = free_port()
    conf = tusknetd_conf(ctx, "workers%d" % workers, 'health { type: "health" }',
                         'web { protocol: "http" listen: "127.0.0.1:%d" backlog: 65535 routes { "GET /health": "health" } '
                         'idle_timeout: "300s" }' % port, max_connections=200,
                         daemon_extra="workers: %d\n" % workers)
    tn = start_tusknetd(ctx, "tusknetd-workers%d" % workers, conf, nofile=30000)
    wait_tcp(tn, ctx, port)
    # nginx the same way: SO_REUSEPORT sockets per worker process (reuseport)
    nport = free_port()
    nconf = write(ctx.path("nginx-workers%d.conf" % workers), (NGINX_HEALTH_CONF % {
        "name": "workers%d" % workers, "tmp": ctx.tmp, "port": nport, "conns": 200, "nofile": 30000,
        "body": HEALTH_BODY, "listen": " reuseport", "server": "", "more": ""}).replace(
        "master_process off;\nworker_processes 1;", "master_process on;\nworker_processes %d;" % workers))
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(ctx.path(d), exist_ok=True)
    ng = ctx.start_server("nginx-workers%d" % workers, [ctx.args.nginx, "-p", ctx.tmp, "-c", nconf, "-e",
                                                         ctx.path("nginx-workers%d-error.log" % workers)], nofile=30000)
    wait_tcp(ng, ctx, nport)
    time.sleep(0.5)  # every worker up
    return (tn, port), (ng, nport)


def bench_workers(ctx):
    """wrk GET /health -c50, nothing pinned: gain of tusknetd workers: 2 over 1 vs nginx worker_processes 2 over 1."""
    a = ctx.args
    if not a.wrk or not a.nginx:
        raise BenchError("wrk and nginx are needed")
    pairs = {w: unpinned(ctx, start_workers_pair, ctx, w) for w in (1, 2)}
    res = {(who, w): [] for who in ("tusknetd", "nginx") for w in (1, 2)}
    for _ in range(max(1, a.rounds)):
        for w in (1, 2):
            for who, (_, port) in zip(("tusknetd", "nginx"), pairs[w]):
                res[(who, w)].append(unpinned(ctx, wrk, ctx, port, 50, a.http_seconds, a.http_seconds + 60))
    gain = {who: paired_median(res[(who, 2)], res[(who, 1)]) for who in ("tusknetd", "nginx")}
    errors = sum(r[2] for rs in res.values() for r in rs)
    ctx.note("workers GET /health -c50 unpinned: tusknetd 1 worker %s, 2 workers %s rps; nginx 1 worker %s, "
             "2 workers %s rps; errors %d" % tuple(
                 [" ".join(fmt_int(x[0]) for x in res[k]) for k in
                  (("tusknetd", 1), ("tusknetd", 2), ("nginx", 1), ("nginx", 2))] + [errors]))
    for w in (1, 2):
        for p, _ in pairs[w]:
            ctx.stop(p)
    t, n = gain["tusknetd"], gain["nginx"]
    ratio = t / n if t and n else None
    return [Row("http workers 2 vs 1 (gain)", "%.2fx" % (t or 0), "nginx %.2fx" % (n or 0), ratio, ">= 1.0",
                bool(ratio and ratio >= 1.0 and errors == 0))]


# ------------------------------------------------------------ 4b. HTTPS GET /health, TLS handshakes


NGINX_ACCEPTS_RE = re.compile(r"server accepts handled requests\s+(\d+)\s+(\d+)\s+(\d+)")
S_CLIENT_KEX_RE = re.compile(r"Server Temp Key: ([^\r\n]+)")
S_CLIENT_SIG_RE = re.compile(r"Signature type: ([^\r\n]+)")


def tls_cert(ctx):
    """A self-signed EC P-256 certificate for CN=localhost (openssl CLI), made once per run: (cert, key)."""
    if getattr(ctx, "tls_cert", None):
        return ctx.tls_cert
    openssl = shutil.which("openssl")
    if not openssl:
        raise BenchError("the openssl command is needed to make the TLS certificate")
    cert, key = ctx.path("tls-cert.pem"), ctx.path("tls-key.pem")
    argv = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise BenchError("%s failed:\n%s" % (" ".join(argv), r.stdout.decode("utf-8", "replace")[-800:]))
    ctx.tls_cert = (cert, key)
    return ctx.tls_cert


def http_get(port, path, timeout=5, method="GET", body=b""):
    """Plain HTTP/1.1 GET (or METHOD with BODY) on 127.0.0.1 with Connection: close; returns the body as text."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                  % (method.encode(), path.encode(), len(body), body))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise BenchError("%s %s on port %d: %r" % (method, path, port, head[:100]))
    return body.decode("utf-8", "replace")


def tusknetd_accepts(port):
    """(connections accepted, TLS handshakes completed) by tusknetd's listener 'web', from its metrics route."""
    text = http_get(port, "/metrics")
    conns = re.search(r'^tusknet_connections_total\{listener="web"[^}]*\} (\d+)$', text, re.M)
    hs = re.search(r'^tusknet_tls_handshakes_total\{listener="web"[^}]*\} (\d+)$', text, re.M)
    if not conns:
        raise BenchError("no tusknet_connections_total for listener web in tusknetd's metrics")
    return int(conns.group(1)), (int(hs.group(1)) if hs else None)


def nginx_accepts(port):
    """(connections accepted, None) by nginx, from stub_status."""
    m = NGINX_ACCEPTS_RE.search(http_get(port, "/status"))
    if not m:
        raise BenchError("no counters in nginx's stub_status")
    return int(m.group(1)), None


def tls_probe(port, cert):
    """What a client with OpenSSL's defaults (as wrk) gets: two GET /health with Python's ssl, the
    second offering the first one's session, plus `openssl s_client -brief` for the key exchange."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    sctx.check_hostname = False
    sctx.verify_mode = ssl.CERT_NONE

    def get(session):
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with sctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except (ssl.SSLEOFError, ConnectionResetError):
                    break
                if not chunk:
                    break
                data += chunk
            if not data.startswith(b"HTTP/1.1 200"):
                raise BenchError("GET /health over TLS on port %d: %r" % (port, data[:100]))
            return s.version(), s.cipher(), s.session_reused, s.session, s.getpeercert(binary_form=True)

    try:
        version, cipher, _, session, der = get(None)
        resumed = get(session)[2]
    except (OSError, ssl.SSLError) as e:
        raise BenchError("TLS probe of port %d: %s" % (port, e))
    with open(cert) as f:
        if der != ssl.PEM_cert_to_DER_cert(f.read()):
            raise BenchError("port %d does not serve the bench certificate" % port)
    kex = sig = "?"
    try:
        r = subprocess.run([shutil.which("openssl") or "openssl", "s_client", "-brief", "-connect",
                            "127.0.0.1:%d" % port], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=10)
        out = r.stdout.decode("utf-8", "replace")
        m, n = S_CLIENT_KEX_RE.search(out), S_CLIENT_SIG_RE.search(out)
        kex, sig = (m.group(1) if m else "?"), (n.group(1) if n else "?")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"version": version, "cipher": cipher[0], "kex": kex, "sig": sig, "resumes": resumed}


def describe_tls(p):
    return "%s %s, key exchange %s, %s signature" % (p["version"], p["cipher"], p["kex"], p["sig"])


def start_https_pair(ctx, name, conns, tickets):
    """tusknetd (http listener with a tls block, health handler; a plain 'stats' listener serving
    metrics) and nginx 1 worker (listen ssl; stub_status on a plain port), same EC P-256 cert."""
    cert, key = tls_cert(ctx)
    nofile = max(30000, conns * 3)
    port, sport = free_port(), free_port()
    tls = 'tls { cert: "%s" key: "%s"%s }' % (cert, key, "" if tickets else " session_tickets: false")
    conf = tusknetd_conf(ctx, name, 'health { type: "health" }\nmetrics { type: "metrics" }',
                         'web { protocol: "http" listen: "127.0.0.1:%d" backlog: 65535 routes { "GET /health": "health" } '
                         'idle_timeout: "300s" %s }\n'
                         'stats { protocol: "http" listen: "127.0.0.1:%d" routes { "GET /metrics": "metrics" } }'
                         % (port, tls, sport), max_connections=conns * 2 + 100)
    tn = start_tusknetd(ctx, "tusknetd-" + name, conf, nofile=nofile)
    try:
        wait_tcp(tn, ctx, port)
    except BenchError:
        if "TLS is not available" in ctx.log_tail(tn):
            raise BenchError("%s refuses the tls block: TLS is not available in this build" % ctx.args.tusknetd)
        raise
    nsport = free_port()
    ng, nport = start_nginx_health(
        ctx, name, conns * 2 + 100, nofile, listen=" ssl",
        server=("        ssl_certificate %s;\n        ssl_certificate_key %s;\n"
                "        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_session_tickets %s;\n"
                % (cert, key, "on" if tickets else "off")),
        more="    server {\n        listen 127.0.0.1:%d;\n        location = /status { stub_status; }\n    }\n" % nsport)
    return (tn, port, lambda: tusknetd_accepts(sport)), (ng, nport, lambda: nginx_accepts(nsport))


def https_round(ctx, proc, port, accepts, conns, headers=()):
    """One wrk run on https://127.0.0.1:port/health with the server's CPU time, wrk's CPU share and
    the connections (and TLS handshakes) the server accepted meanwhile."""
    a = ctx.args
    before = accepts()
    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
    u0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = wrk_run(ctx, "https://127.0.0.1:%d/health" % port, conns, a.https_seconds, a.https_seconds + 60, headers)
    u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    dt = time.monotonic() - t0
    r["server_cpu"] = cpu_seconds(proc.pid) - c0
    r["server_share"] = r["server_cpu"] / dt
    r["wrk_share"] = (u1.ru_utime + u1.ru_stime - u0.ru_utime - u0.ru_stime) / dt
    after = accepts()
    r["accepted"] = after[0] - before[0]
    r["handshakes"] = after[1] - before[1] if after[1] is not None and before[1] is not None else None
    if proc.poll() is not None:
        raise BenchError("%s exited with %s during the run:\n%s" % (proc.bench_name, proc.returncode, ctx.log_tail(proc)))
    return r


def fmt_errors(r):
    e = r["errors"]
    return "connect %d read %d write %d timeout %d non-2xx %d" % (e[0], e[1], e[2], e[3], r["non2xx"])


def fmt_errors_sum(rs):
    return fmt_errors({"errors": tuple(sum(r["errors"][i] for r in rs) for i in range(4)),
                       "non2xx": sum(r["non2xx"] for r in rs)})


def bench_https(ctx):
    """wrk GET /health over TLS, 50 keep-alive connections: tusknetd (tls block) vs nginx 1 worker (listen ssl); EC P-256 cert."""
    a = ctx.args
    if not a.wrk or not a.nginx:
        raise BenchError("wrk and nginx are needed")
    (tn, port, tacc), (ng, nport, nacc) = start_https_pair(ctx, "https", 50, tickets=True)
    cert = tls_cert(ctx)[0]
    probe = {"tusknetd": tls_probe(port, cert), "nginx": tls_probe(nport, cert)}
    res = {"tusknetd": [], "nginx": []}
    for _ in range(max(1, a.rounds)):
        for who, proc, p, acc in (("tusknetd", tn, port, tacc), ("nginx", ng, nport, nacc)):
            res[who].append(https_round(ctx, proc, p, acc, 50))
    t = max(res["tusknetd"], key=lambda r: r["rps"])
    n = max(res["nginx"], key=lambda r: r["rps"])
    terr = sum(sum(r["errors"]) + r["non2xx"] for r in res["tusknetd"])
    ratio = t["rps"] / n["rps"]
    ctx.note("https GET /health -c50 (keep-alive, %ds rounds): rounds tusknetd %s / nginx %s rps; p99 of the best "
             "round %.2f / %.2f ms; CPU used by server %d%% / %d%%, by wrk %d%% / %d%%; errors (all rounds) "
             "tusknetd %s / nginx %s; TLS: tusknetd %s; nginx %s; cert EC P-256 (prime256v1) self-signed"
             % (a.https_seconds, " ".join(fmt_int(r["rps"]) for r in res["tusknetd"]),
                " ".join(fmt_int(r["rps"]) for r in res["nginx"]), t["p99"] or 0, n["p99"] or 0,
                t["server_share"] * 100, n["server_share"] * 100, t["wrk_share"] * 100, n["wrk_share"] * 100,
                terr, sum(sum(r["errors"]) + r["non2xx"] for r in res["nginx"]),
                describe_tls(probe["tusknetd"]), describe_tls(probe["nginx"])))
    ctx.stop(tn)
    ctx.stop(ng)
    return [Row("https GET /health -c50", "%s rps" % fmt_int(t["rps"]), "%s rps" % fmt_int(n["rps"]), ratio,
                ">= 1.0", ratio >= 1.0 and terr == 0)]


def bench_https_new(ctx):
    """TLS handshakes/s: wrk -H 'Connection: close' -c50 GET /health, one full handshake per request (no resumption): tusknetd vs nginx."""
    a = ctx.args
    if not a.wrk or not a.nginx:
        raise BenchError("wrk and nginx are needed")
    # wrk keeps each connection's SSL session across its reconnect (SSL_shutdown + SSL_clear) and
    # offers it again, so it resumes whenever the server lets it (a TLS 1.3 ticket, stateless or
    # backed by a server session cache). Both servers run with tickets off, and the probe checks
    # that neither resumes: only then is every request a full handshake.
    (tn, port, tacc), (ng, nport, nacc) = start_https_pair(ctx, "httpsnew", 50, tickets=False)
    cert = tls_cert(ctx)[0]
    probe = {"tusknetd": tls_probe(port, cert), "nginx": tls_probe(nport, cert)}
    res = {"tusknetd": [], "nginx": []}
    for _ in range(max(1, a.rounds)):
        for who, proc, p, acc in (("tusknetd", tn, port, tacc), ("nginx", ng, nport, nacc)):
            res[who].append(https_round(ctx, proc, p, acc, 50, headers=("Connection: close",)))
    ctx.stop(tn)
    ctx.stop(ng)

    def summary(who):
        rs = res[who]
        best = max(rs, key=lambda r: r["rps"])
        reqs = sum(r["requests"] for r in rs)
        per_req = sum(r["accepted"] for r in rs) / max(1, reqs)
        cpu_us = sum(r["server_cpu"] for r in rs) / max(1, reqs) * 1e6
        errs = sum(sum(r["errors"]) + r["non2xx"] for r in rs)
        hs = [r["handshakes"] for r in rs]
        hs_per_req = sum(hs) / max(1, reqs) if None not in hs else None
        return best, per_req, cpu_us, errs, hs_per_req

    t, tper, tcpu, terr, ths = summary("tusknetd")
    n, nper, ncpu, _, _ = summary("nginx")
    full = {who: probe[who]["resumes"] is False for who in probe}
    reconnects = {"tusknetd": tper >= 0.95, "nginx": nper >= 0.95}
    ratio = t["rps"] / n["rps"]
    comparable = full["tusknetd"] and full["nginx"] and reconnects["tusknetd"] and reconnects["nginx"]
    for who, per in (("tusknetd", tper), ("nginx", nper)):
        if not reconnects[who]:
            ctx.note("https new connections: %s accepted only %.2f connections per request: wrk did not "
                     "reconnect after each response (the server kept the connection open), so the rate is "
                     "not a handshake rate" % (who, per))
        if not full[who]:
            ctx.note("https new connections: %s RESUMED a TLS session with session tickets off (%s): its "
                     "rows count resumptions, not full handshakes, and are not comparable"
                     % (who, "session_tickets: false" if who == "tusknetd" else "ssl_session_tickets off"))
    ctx.note("https new connections -c50 (wrk -H 'Connection: close', %ds rounds): rounds tusknetd %s / nginx %s "
             "handshakes/s; p99 (handshake + request) of the best round %.2f / %.2f ms; connections accepted per "
             "request %.2f / %.2f%s; server CPU per handshake %d / %d us; CPU used by server %d%% / %d%%, by wrk "
             "%d%% / %d%% (best round); wrk errors (all rounds) tusknetd %s / nginx %s"
             % (a.https_seconds, " ".join(fmt_int(r["rps"]) for r in res["tusknetd"]),
                " ".join(fmt_int(r["rps"]) for r in res["nginx"]), t["p99"] or 0, n["p99"] or 0, tper, nper,
                ("" if ths is None else " (tusknetd TLS handshakes per request %.2f)" % ths), tcpu, ncpu,
                t["server_share"] * 100, n["server_share"] * 100, t["wrk_share"] * 100, n["wrk_share"] * 100,
                fmt_errors_sum(res["tusknetd"]), fmt_errors_sum(res["nginx"])))
    resumers = [who for who in ("tusknetd", "nginx") if not full[who]]
    ctx.note("https new connections: handshake: tusknetd %s; nginx %s; certificate EC P-256 (prime256v1), "
             "self-signed, not verified by wrk; a second probe connection offering the first one's session: "
             "tusknetd %s it, nginx %s it; wrk offers its previous session on every reconnect, so %s"
             % (describe_tls(probe["tusknetd"]), describe_tls(probe["nginx"]),
                "resumed" if probe["tusknetd"]["resumes"] else "refused",
                "resumed" if probe["nginx"]["resumes"] else "refused",
                "every wrk request costs a full handshake" if not resumers else
                "wrk's handshakes with %s are resumptions (PSK), not full handshakes" % " and ".join(resumers)))
    bound = [who for who, r in (("tusknetd", t), ("nginx", n)) if r["wrk_share"] >= 0.9 and r["server_share"] < 0.9]
    if bound:
        ctx.note("https new connections: against %s wrk used ~all of CPU %d while the server did not fill CPU %d: "
                 "the client's half of each handshake (ECDHE, and in a full handshake the ECDSA verify) set the "
                 "pace, so handshakes/s understates the server; the server CPU per handshake row compares the "
                 "servers" % (" and ".join(bound), CLIENT_CPU, SERVER_CPU))
    cpu_ratio = tcpu / ncpu if ncpu > 0 else None
    return [Row("https new conn -c50 handshakes", "%s hs/s" % fmt_int(t["rps"]), "%s hs/s" % fmt_int(n["rps"]),
                ratio, ">= 1.0", ratio >= 1.0 and terr == 0 and comparable),
            Row("https server CPU per handshake", "%s us" % fmt_int(tcpu), "%s us" % fmt_int(ncpu), cpu_ratio)]


# ------------------------------------------------------------ 5. WebSocket echo / idle memory

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
WS_LOAD_RE = re.compile(r"msgs/s (\d+)\s+msgs (\d+)\s+seconds ([\d.]+)\s+conns (\d+)\s+idle (\d+)\s+idle_closed (\d+)")


def ws_tools(ctx):
    """Compiles ws_load.c and ws_peer.c (gcc -O2) into the temp dir, once per run."""
    if getattr(ctx, "ws_tools", None):
        return ctx.ws_tools
    gcc = shutil.which("gcc") or shutil.which("cc")
    pkgc = shutil.which("pkg-config")
    if not gcc or not pkgc:
        raise BenchError("gcc and pkg-config are needed to build the WebSocket tools")
    r = subprocess.run([pkgc, "--cflags", "--libs", "libwebsockets"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise BenchError("pkg-config libwebsockets: %s" % r.stdout.decode("utf-8", "replace").strip())
    lws_flags = r.stdout.decode().split()
    load, peer = ctx.path("ws_load"), ctx.path("ws_peer")
    for argv in ([gcc, "-O2", "-o", load, os.path.join(BENCH_DIR, "ws_load.c")],
                 [gcc, "-O2", "-o", peer, os.path.join(BENCH_DIR, "ws_peer.c")] + lws_flags):
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise BenchError("%s failed:\n%s" % (" ".join(argv), r.stdout.decode("utf-8", "replace")[-1500:]))
    ctx.ws_tools = (load, peer)
    return ctx.ws_tools


def start_ws_pair(ctx, suffix, nofile):
    """tusknetd (http listener, /echo -> echo, deflate and pings off) and ws_peer (lws native loop)."""
    load, peer = ws_tools(ctx)
    port = free_port()
    conf = tusknetd_conf(ctx, "ws" + suffix, 'echo { type: "echo" }',
                         'web { protocol: "http" listen: "127.0.0.1:%d" backlog: 4096 '
                         'websocket { "/echo": { handler: "echo" deflate: false ping_interval: "0s" } } }' % port,
                         max_connections=max(20000, nofile))
    tn = start_tusknetd(ctx, "tusknetd-ws" + suffix, conf, nofile=nofile)
    wait_tcp(tn, ctx, port)
    pport = free_port()
    lw = ctx.start_server("ws-peer" + suffix, [peer, str(pport)], nofile=nofile)
    wait_tcp(lw, ctx, pport)
    return load, (tn, port), (lw, pport)


def ws_load(ctx, load, port, seconds, conns=50, timeout=None):
    rc, out = ctx.run_client([load, "-c", str(conns), "-d", str(seconds), str(port), "/echo"],
                             timeout or seconds + 60)
    m = WS_LOAD_RE.search(out)
    if rc != 0 or not m:
        raise BenchError("ws_load rc=%d: %s" % (rc, out.strip()[-400:]))
    return float(m.group(1))


class WsIdleHolder:
    """A ws_load -H process (pinned to CLIENT_CPU) holding n idle WebSockets open until close()."""

    def __init__(self, ctx, load, p, port, n, timeout=120):
        argv = [load, "-H", "-i", str(n), str(port), "/echo"]
        if ctx.pin:
            argv = ["taskset", "-c", str(CLIENT_CPU)] + argv
        self.ctx, self.server = ctx, p
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     preexec_fn=lambda: raise_nofile(n + 1000), start_new_session=True)
        ctx.procs.append(self.proc)
        deadline = time.monotonic() + timeout
        line = b""
        while not line.startswith(b"READY"):
            if time.monotonic() > deadline:
                raise BenchError("ws_load -H did not open %d idle WebSockets to %s within %ds"
                                 % (n, p.bench_name, timeout))
            if p.poll() is not None:
                raise BenchError("%s exited with %s while WebSockets were being opened:\n%s"
                                 % (p.bench_name, p.returncode, ctx.log_tail(p)))
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                line = self.proc.stdout.readline()
                if not line:
                    self.proc.wait(5)
                    raise BenchError("ws_load -H to %s failed (rc %s)" % (p.bench_name, self.proc.returncode))

    def close(self):
        """Ends the hold; returns how many idle WebSockets the server closed meanwhile."""
        if self.proc.poll() is None:
            try:
                out, _ = self.proc.communicate(b"", timeout=30)
            except subprocess.TimeoutExpired:
                self.ctx.stop(self.proc)
                raise BenchError("ws_load -H did not end")
        else:
            out = self.proc.stdout.read()
        if self.proc in self.ctx.procs:
            self.ctx.procs.remove(self.proc)
        m = WS_LOAD_RE.search(out.decode("utf-8", "replace"))
        if self.proc.returncode != 0 or not m:
            raise BenchError("ws_load -H rc=%s: %r" % (self.proc.returncode, out[-300:]))
        return int(m.group(6))


def bench_ws_echo(ctx):
    """64 B WebSocket echo over 50 connections (ws_load.c): tusknetd vs libwebsockets' own server (native poll loop), also with 10,000 idle."""
    a = ctx.args
    n = a.conns
    nofile = max(30000, n * 3)
    raise_nofile(n * 2 + 1000)
    load, (tn, port), (lw, pport) = start_ws_pair(ctx, "", nofile)
    rows = []
    rounds = max(1, a.rounds)
    holders = []
    try:
        idle_label = "%dk" % (n // 1000) if n % 1000 == 0 else str(n)
        for label, idle in (("ws echo 64B x50", 0), ("ws echo 64B x50 + %s idle" % idle_label, n)):
            if idle:
                # the idle WebSockets stay open on both servers while the rounds run
                holders = [(WsIdleHolder(ctx, load, tn, port, idle), tn), (WsIdleHolder(ctx, load, lw, pport, idle), lw)]
                time.sleep(0.5)
                for _, p in holders:
                    if p.poll() is not None:
                        raise BenchError("%s exited holding %d idle WebSockets:\n%s"
                                         % (p.bench_name, idle, ctx.log_tail(p)))
            res = {"tusknetd": [], "lws": []}
            for _ in range(rounds):
                for who, proc, p in (("tusknetd", tn, port), ("lws", lw, pport)):
                    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
                    u0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    rate = ws_load(ctx, load, p, a.ws_seconds)
                    u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                    dt = time.monotonic() - t0
                    cpu = (cpu_seconds(proc.pid) - c0) / dt
                    gen = (u1.ru_utime + u1.ru_stime - u0.ru_utime - u0.ru_stime) / dt
                    res[who].append((rate, cpu, gen))
            closed = []
            for h, p in holders:
                k = h.close()
                if k:
                    closed.append("%s closed %d" % (p.bench_name, k))
            holders = []
            t, r = max(res["tusknetd"]), max(res["lws"])
            ratio = t[0] / r[0] if r[0] > 0 else None
            rows.append(Row(label, "%s msg/s" % fmt_int(t[0]), "lws %s msg/s" % fmt_int(r[0]), ratio,
                            ">= 1.0", ratio is not None and ratio >= 1.0 and not closed))
            ctx.note("%s: rounds tusknetd %s / lws %s msg/s (%gs each, one 64 B text frame in flight per "
                     "connection; median of paired round ratios %.2f); CPU used by server %d%% / %d%%, by ws_load "
                     "%d%% / %d%%%s"
                     % (label, " ".join(fmt_int(x[0]) for x in res["tusknetd"]),
                        " ".join(fmt_int(x[0]) for x in res["lws"]), a.ws_seconds,
                        paired_median(res["tusknetd"], res["lws"]) or 0,
                        t[1] * 100, r[1] * 100, t[2] * 100, r[2] * 100,
                        ("; idle WebSockets lost: " + ", ".join(closed)) if closed else ""))
    finally:
        for h, _ in holders:
            try:
                h.close()
            except BenchError:
                pass
    ctx.stop(tn)
    ctx.stop(lw)
    return rows


def ws_idle_memory(ctx, load, p, port, n):
    """RSS growth per connection for n idle WebSockets held by ws_load -H."""
    # one echo first, so lazily built state (lws pools, handler state) is in the base line
    ws_load(ctx, load, port, 0.2, conns=1)
    time.sleep(0.3)
    base_fds = fd_count(p.pid)
    before = rss_bytes(p.pid)
    h = WsIdleHolder(ctx, load, p, port, n)
    try:
        deadline = time.monotonic() + 10
        while fd_count(p.pid) < base_fds + n:
            if p.poll() is not None:
                raise BenchError("%s exited holding idle WebSockets:\n%s" % (p.bench_name, ctx.log_tail(p)))
            if time.monotonic() > deadline:
                raise BenchError("%s holds only %d of %d WebSockets" % (p.bench_name, fd_count(p.pid) - base_fds, n))
            time.sleep(0.01)
        time.sleep(0.5)
        after = rss_bytes(p.pid)
    finally:
        closed = h.close()
    if closed:
        raise BenchError("%s closed %d of the %d idle WebSockets" % (p.bench_name, closed, n))
    return (after - before) / n, before, after


def bench_ws_idle_mem(ctx):
    """RSS per idle WebSocket (10,000 open after the handshake): tusknetd vs libwebsockets' own server."""
    a = ctx.args
    n = a.conns
    nofile = max(30000, n * 3)
    raise_nofile(n + 1000)
    load, (tn, port), (lw, pport) = start_ws_pair(ctx, "-mem", nofile)
    results = {"tusknetd": ws_idle_memory(ctx, load, tn, port, n)}
    ctx.stop(tn)
    try:
        results["lws"] = ws_idle_memory(ctx, load, lw, pport, n)
    except BenchError as e:
        ctx.note("idle websocket memory, lws: %s" % e)
    ctx.stop(lw)
    t = results["tusknetd"][0]
    peer = "lws %s B/conn" % fmt_int(results["lws"][0]) if "lws" in results else "n/a"
    ratio = t / results["lws"][0] if "lws" in results and results["lws"][0] > 0 else None
    ctx.note("idle websocket memory, %d WebSockets (deflate off, no pings): VmRSS before -> after: %s"
             % (n, "; ".join("%s %.1f -> %.1f MiB" % (k, v[1] / 2**20, v[2] / 2**20) for k, v in results.items())))
    return [Row("idle websocket memory", "%s B/conn" % fmt_int(t), peer, ratio, "<= 4096", t <= 4096)]


# ------------------------------------------------------ 10. TCP line proxy

# redis-benchmark sends SET and INCR only as RESP multibulk requests (several
# lines each), and its one inline test, PING, is answered by twemproxy itself
# without reaching redis. So both proxies are driven by linegen.c: the same
# closed loop as redis-benchmark -c50 [-P16], inline commands to the line
# proxy, multibulk to twemproxy, and redis' own INFO commandstats must grow by
# exactly the number of requests for every run of either. redis-benchmark on
# twemproxy is run too, to show that linegen measures what it does.
LINEGEN_RE = re.compile(r"rps=(\d+) p50_ms=([\d.]+) errors=(\d+) replies=(\d+)")
LINE_PROXY_POOL = 2


def linegen(ctx, exe, port, n, pipeline, wire, cmd):
    rc, out = ctx.run_client([exe, "127.0.0.1", str(port), "50", str(pipeline), str(n), wire, cmd], timeout=300)
    m = LINEGEN_RE.search(out)
    if rc != 0 or m is None or int(m.group(4)) != n:
        raise BenchError("linegen rc=%d: %r" % (rc, out[-300:]))
    return float(m.group(1)), float(m.group(2))


def redis_calls(port, cmd):
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"], capture_output=True,
                         text=True, timeout=10).stdout
    m = re.search(r"cmdstat_%s:calls=(\d+)" % cmd, out)
    return int(m.group(1)) if m else 0


def start_nutcracker(ctx, port, rport, conns):
    exe = shutil.which("nutcracker") or "/usr/sbin/nutcracker"
    if not os.access(exe, os.X_OK):
        raise BenchError("nutcracker (twemproxy) is not installed: apt-get install nutcracker")
    yml = write(ctx.path("nutcracker.yml"),
                "alpha:\n  listen: 127.0.0.1:%d\n  redis: true\n  hash: fnv1a_64\n  distribution: ketama\n"
                "  server_connections: %d\n  servers:\n   - 127.0.0.1:%d:1\n" % (port, conns, rport))
    p = ctx.start_server("nutcracker", [exe, "-c", yml, "-s", str(free_port()), "-o", ctx.path("nutcracker.out")])
    wait_tcp(p, ctx, port)
    return p


def bench_line_proxy(ctx):
    """Inline SET/INCR through the TCP line proxy to redis-server vs twemproxy, -c50, plain and -P16."""
    a = ctx.args
    exe = c_tool(ctx, "linegen")
    rport = free_port()
    start_redis(ctx, rport)
    port = free_port()
    conf = tusknetd_conf(ctx, "lineproxy",
                         'px { type: "proxy" upstreams: ["127.0.0.1:%d"] pool_size: %d }' % (rport, LINE_PROXY_POOL),
                         'lines { protocol: "tcp" listen: "127.0.0.1:%d" handler: "px" }' % port)
    tn = start_tusknetd(ctx, "tusknetd-lineproxy", conf)
    wait_tcp(tn, ctx, port)
    nport = free_port()
    nc = start_nutcracker(ctx, nport, rport, LINE_PROXY_POOL)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"SET probe 1\r\n")
    if s.recv(100) != b"+OK\r\n":
        raise BenchError("the line proxy does not answer SET with +OK")
    s.close()
    rows = []
    rounds = max(1, a.rounds)
    peers = (("tusknetd", tn, port, "inline"), ("twemproxy", nc, nport, "resp"))
    for cmd in ("set", "incr"):
        for pipeline, n in ((1, a.lineproxy_n), (16, a.lineproxy_pipelined_n)):
            per = max(pipeline, n // rounds - (n // rounds) % pipeline)  # requests per run
            label = "line proxy %s -c50%s" % (cmd.upper(), " -P16" if pipeline > 1 else "")
            res = {who: [] for who, _, _, _ in peers}
            for i in range(rounds):
                for who, proc, p, wire in (peers if i % 2 == 0 else peers[::-1]):
                    before = redis_calls(rport, cmd)
                    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
                    rps, p50 = linegen(ctx, exe, p, per, pipeline, wire, cmd)
                    cpu = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)
                    grew = redis_calls(rport, cmd) - before
                    if grew != per:
                        raise BenchError("%s %s: redis counted %d %s calls for %d requests"
                                         % (who, label, grew, cmd, per))
                    res[who].append((rps, p50, cpu))
            t, r = max(res["tusknetd"]), max(res["twemproxy"])
            ratio = t[0] / r[0]
            rows.append(Row(label, "%s rps" % fmt_int(t[0]), "%s rps" % fmt_int(r[0]), ratio, ">= 1.0",
                            ratio >= 1.0))
            ctx.note("%s: rounds line proxy %s / twemproxy %s rps (median of paired round ratios %.2f); best "
                     "round p50 %.3f / %.3f ms; proxy CPU %d%% / %d%%; redis counted every request of every run"
                     % (label, " ".join(fmt_int(x[0]) for x in res["tusknetd"]),
                        " ".join(fmt_int(x[0]) for x in res["twemproxy"]),
                        paired_median(res["tusknetd"], res["twemproxy"]), t[1], r[1], t[2] * 100, r[2] * 100))
    # the reference client on the same twemproxy, for the record
    for cmd in ("set", "incr"):
        argv = [a.redis_benchmark, "-h", "127.0.0.1", "-p", str(nport), "-t", cmd, "-c", "50",
                "-n", str(a.lineproxy_n // rounds), "-q"]
        rc, out = ctx.run_client(argv, timeout=300)
        m = re.search(r"%s: ([\d.]+) requests per second" % cmd.upper(), out.replace("\r", "\n"))
        ctx.note("redis-benchmark -t %s -c50 on twemproxy: %s rps (linegen resp measured the rows above)"
                 % (cmd, m.group(1) if m else "no result (rc=%d)" % rc))
    return rows


# ------------------------------------------------------------ the list

# (name for --only, function). Each function takes the Ctx and returns Rows;
# raising BenchError (or anything) marks its row as an error and the run goes on.
# ------------------------------------------------------------ worker vs exec

WORKER_ECHO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "workers", "echo.py")


def bench_worker(ctx):
    """wrk POST over HTTP, 50 connections: a worker handler running examples/workers/echo.py vs an exec handler running cat."""
    a = ctx.args
    if not a.wrk:
        raise BenchError("wrk is needed")
    port = free_port()
    conf = tusknetd_conf(ctx, "worker",
                         'wecho { type: "worker" command: ["%s"] }\nxecho { type: "exec" command: ["cat"] }'
                         % os.path.abspath(WORKER_ECHO),
                         'web { protocol: "http" listen: "127.0.0.1:%d" backlog: 65535 '
                         'routes { "POST /worker": "wecho" "POST /exec": "xecho" } }' % port)
    script = write(ctx.path("post.lua"), 'wrk.method = "POST"\nwrk.body = "hello worker"\n'
                   'wrk.headers["Content-Type"] = "text/plain"\n')
    tn = start_tusknetd(ctx, "tusknetd-worker", conf)
    wait_tcp(tn, ctx, port)
    # the worker answers once Python is up
    deadline = time.monotonic() + 30
    while True:
        try:
            if http_get(port, "/worker", method="POST", body=b"ok") == "ok":
                break
        except (OSError, BenchError):
            pass
        if time.monotonic() > deadline:
            raise BenchError("the worker did not answer within 30 s")
        time.sleep(0.2)
    res = {"worker": [], "exec": []}
    for _ in range(max(1, a.rounds)):
        for who in ("worker", "exec"):
            r = wrk_run(ctx, "http://127.0.0.1:%d/%s" % (port, who), 50, a.http_seconds,
                        timeout=a.http_seconds + 60, script=script)
            res[who].append((r["rps"], sum(r["errors"]) + r["non2xx"]))
    w, x = max(res["worker"]), max(res["exec"])
    ratio = w[0] / x[0] if x[0] else None
    ctx.note("worker echo.py vs exec cat, POST -c50: rounds worker %s / exec %s rps; errors %d / %d"
             % (" ".join(fmt_int(r[0]) for r in res["worker"]), " ".join(fmt_int(r[0]) for r in res["exec"]),
                w[1], x[1]))
    ctx.stop(tn)
    return [Row("worker (Python) vs exec, HTTP -c50", "%s rps" % fmt_int(w[0]), "exec %s rps" % fmt_int(x[0]),
                ratio, ">= 20", bool(ratio and ratio >= 20 and w[1] == 0 and x[1] == 0))]


# Planned rows, to add here as the features land:
#   ("tlsping",  ...)                 the ping rows over TLS vs redis --tls-port
# ------------------------------------------------------------ 6. broadcast fan-out

FANOUT_RE = re.compile(r"deliveries/s (\d+)\s+msgs (\d+)\s+seconds ([\d.]+)\s+subs (\d+)\s+p50_ms ([\d.]+)\s+p99_ms ([\d.]+)")
FANOUT_SUBS = 1000


def c_tool(ctx, name):
    """Compiles tests/bench/NAME.c (gcc -O2) into the temp dir, once per run; its path."""
    tools = ctx.__dict__.setdefault("c_tools", {})
    if name in tools:
        return tools[name]
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        raise BenchError("gcc is needed to build %s" % name)
    out = ctx.path(name)
    r = subprocess.run([gcc, "-O2", "-o", out, os.path.join(BENCH_DIR, name + ".c")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise BenchError("%s.c: %s" % (name, r.stdout.decode("utf-8", "replace")[-1500:]))
    tools[name] = out
    return out


def control_stats(sock_path, timeout=5.0):
    """`stats` from a control socket, parsed."""
    import json
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall(b"stats\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    return json.loads(buf)


def fanout_run(ctx, tool, pub, sub, seconds):
    rc, out = ctx.run_client([tool, "-n", str(FANOUT_SUBS), "-d", str(seconds), str(pub), str(sub), "/chat"],
                             seconds + 120)
    m = FANOUT_RE.search(out)
    if rc != 0 or not m:
        raise BenchError("ws_fanout rc=%d: %s" % (rc, out.strip()[-400:]))
    return float(m.group(1)), float(m.group(6)), float(m.group(5))


def bench_fanout(ctx):
    """Broadcast fan-out: one publisher, 1,000 WebSocket subscribers in one room, 64 B messages (ws_fanout.c): tusknetd vs a node `ws` server; also through two tusknetd joined by Redis."""
    a = ctx.args
    node = a.node
    if not node or not os.access(node, os.X_OK):
        raise BenchError("node not found (Debian nodejs and node-ws)")
    tool = c_tool(ctx, "ws_fanout")
    nofile = 20000
    raise_nofile(nofile)
    room = 'chat { type: "broadcast" }'

    def ws_listener(port):
        return ('web { protocol: "http" listen: "127.0.0.1:%d" backlog: 4096 '
                'websocket { "/chat": { handler: "chat" deflate: false ping_interval: "0s" } } }' % port)

    port = free_port()
    tn = start_tusknetd(ctx, "tusknetd-fanout", tusknetd_conf(ctx, "fanout", room, ws_listener(port)), nofile=nofile)
    wait_tcp(tn, ctx, port)
    nport = free_port()
    nd = ctx.start_server("node-ws", [node, os.path.join(BENCH_DIR, "ws_broadcast.js"), str(nport)], nofile=nofile)
    wait_tcp(nd, ctx, nport)
    # two daemons and a Redis: the publisher on one, the subscribers on the other
    rport = free_port()
    start_redis(ctx, rport)
    pair = []
    for who in ("a", "b"):
        p = free_port()
        sock = ctx.path("fanout-%s.sock" % who)
        conf = write(ctx.path("fanout-%s.conf" % who),
                     '[daemon]\nlog_level: "warn"\ncontrol_socket: "%s"\nmax_connections: 20000\n'
                     "[handlers]\n%s\n[listeners]\n%s\n"
                     '[cluster]\nredis: "127.0.0.1:%d"\nnode_id: "%s"\n' % (sock, room, ws_listener(p), rport, who))
        proc = start_tusknetd(ctx, "tusknetd-fanout-" + who, conf, nofile=nofile)
        wait_tcp(proc, ctx, p)
        pair.append((proc, p, sock))
    deadline = time.monotonic() + 10
    while not all(control_stats(s)["cluster"]["state"] == "connected" for _, _, s in pair):
        if time.monotonic() > deadline:
            raise BenchError("the two daemons did not connect to Redis within 10 s")
        time.sleep(0.05)

    res = {"tusknetd": [], "node": [], "redis": []}
    for _ in range(max(1, a.rounds)):
        res["tusknetd"].append(fanout_run(ctx, tool, port, port, a.fanout_seconds))
        res["node"].append(fanout_run(ctx, tool, nport, nport, a.fanout_seconds))
        res["redis"].append(fanout_run(ctx, tool, pair[0][1], pair[1][1], a.fanout_seconds))
    lost = control_stats(pair[0][2])["cluster"]["lost"]
    t, n, r = (max(res[k]) for k in ("tusknetd", "node", "redis"))
    ratio = t[0] / n[0] if n[0] > 0 else None
    label = "fan-out 64B x%d" % FANOUT_SUBS
    rows = [Row(label, "%s deliv/s" % fmt_int(t[0]), "node ws %s deliv/s" % fmt_int(n[0]), ratio,
                ">= 1.5, p99", ratio is not None and ratio >= 1.5 and t[1] <= n[1]),
            Row(label + " via Redis", "%s deliv/s" % fmt_int(r[0]), "node ws %s deliv/s" % fmt_int(n[0]),
                r[0] / n[0] if n[0] > 0 else None, "reported")]
    ctx.note("%s: rounds tusknetd %s / node ws %s / two tusknetd via Redis %s deliveries/s (%gs each, 8 messages "
             "in flight, a message done when all %d subscribers have it; median of paired round ratios %.2f); "
             "p50/p99 publish-to-last-subscriber %.1f/%.1f ms, node %.1f/%.1f ms, via Redis %.1f/%.1f ms; "
             "messages lost on the Redis path: %d"
             % (label, " ".join(fmt_int(x[0]) for x in res["tusknetd"]), " ".join(fmt_int(x[0]) for x in res["node"]),
                " ".join(fmt_int(x[0]) for x in res["redis"]), a.fanout_seconds, FANOUT_SUBS,
                paired_median(res["tusknetd"], res["node"]) or 0, t[2], t[1], n[2], n[1], r[2], r[1], lost))
    return rows


# ------------------------------------------------------------ plugins

def plugin_path(ctx, name):
    """An example plugin built by make beside the tusknetd under test."""
    path = os.path.join(os.path.dirname(ctx.args.tusknetd), "plugins", name + ".so")
    if not os.path.exists(path):
        raise BenchError("%s not found (make all builds the example plugins)" % path)
    return path


def bench_plugin_ping(ctx):
    """redis-benchmark -t ping_inline -c 50: the minimal example plugin answering +PONG vs the built-in static handler, one daemon."""
    a = ctx.args
    sport, pport = free_port(), free_port()
    handlers = ('pong { type: "static" reply: "+PONG" }\n'
                'plug { type: "plugin" path: "%s" options { reply: "+PONG" } }' % plugin_path(ctx, "minimal"))
    listeners = ('s { protocol: "tcp" listen: "127.0.0.1:%d" handler: "pong" }\n'
                 'p { protocol: "tcp" listen: "127.0.0.1:%d" handler: "plug" }' % (sport, pport))
    tn = start_tusknetd(ctx, "tusknetd-plugin-ping", tusknetd_conf(ctx, "plugin-ping", handlers, listeners))
    wait_tcp(tn, ctx, sport)
    wait_tcp(tn, ctx, pport)
    for port in (sport, pport):
        if probe_line_reply(port) != b"+PONG\r\n":
            raise BenchError("port %d answers PING with %r" % (port, probe_line_reply(port)))
    rounds = max(1, a.rounds)
    res = {"static": [], "plugin": []}
    for i in range(rounds):
        for who, port in ((("static", sport), ("plugin", pport)) if i % 2 == 0 else (("plugin", pport), ("static", sport))):
            res[who].append(redis_benchmark(ctx, port, a.ping_n // rounds, 1, timeout=120))
    t, s = max(res["plugin"]), max(res["static"])
    ratio = t[0] / s[0]
    ctx.note("plugin ping: rounds plugin %s / static %s rps (median of paired round ratios %.2f)"
             % (" ".join(fmt_int(x[0]) for x in res["plugin"]), " ".join(fmt_int(x[0]) for x in res["static"]),
                paired_median(res["plugin"], res["static"])))
    return [Row("tcp PING via minimal.so plugin", "%s rps" % fmt_int(t[0]), "static %s rps" % fmt_int(s[0]),
                ratio, ">= 0.97", ratio >= 0.97)]


LINE_LOAD_RE = re.compile(r"req/s (\d+)\s+reqs (\d+)")


def bench_kv(ctx):
    """The kv example plugin vs redis-server: inline `SET k v` and `INCR n` lines in turn, one in flight on each of 50 connections (line_load.c for both)."""
    a = ctx.args
    load = c_tool(ctx, "line_load")
    port = free_port()
    conf = tusknetd_conf(ctx, "kv", 'kv { type: "plugin" path: "%s" }' % plugin_path(ctx, "kv"),
                         'kv { protocol: "tcp" listen: "127.0.0.1:%d" handler: "kv" }' % port)
    tn = start_tusknetd(ctx, "tusknetd-kv", conf)
    wait_tcp(tn, ctx, port)
    rport = free_port()
    rd = start_redis(ctx, rport)
    rounds = max(1, a.rounds)
    res = {"kv": [], "redis": []}
    for i in range(rounds):
        order = (("kv", tn, port), ("redis", rd, rport))
        for who, proc, p in (order if i % 2 == 0 else order[::-1]):
            c0, t0 = cpu_seconds(proc.pid), time.monotonic()
            rc, out = ctx.run_client([load, "-c", "50", "-d", str(a.ws_seconds), str(p), "SET k v", "INCR n"],
                                     a.ws_seconds + 60)
            m = LINE_LOAD_RE.search(out)
            if rc != 0 or not m:
                raise BenchError("line_load on %s rc=%d: %s" % (who, rc, out.strip()[-400:]))
            res[who].append((float(m.group(1)), (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)))
    t, r = max(res["kv"]), max(res["redis"])
    ratio = t[0] / r[0]
    ctx.note("kv: rounds kv.so %s / redis %s req/s (median of paired round ratios %.2f); CPU used by the server "
             "%d%% / %d%%" % (" ".join(fmt_int(x[0]) for x in res["kv"]), " ".join(fmt_int(x[0]) for x in res["redis"]),
                              paired_median(res["kv"], res["redis"]), t[1] * 100, r[1] * 100))
    return [Row("kv.so SET/INCR lines -c50", "%s req/s" % fmt_int(t[0]), "redis %s req/s" % fmt_int(r[0]),
                ratio, ">= 0.9", ratio >= 0.9)]


# ------------------------------------------------------------ reverse proxy

PROXY_NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 30000;
pid %(tmp)s/%(name)s.pid;
error_log %(tmp)s/%(name)s-error.log warn;
events { worker_connections 10000; }
http {
    access_log off;
    client_body_temp_path %(tmp)s/body;
    proxy_temp_path %(tmp)s/proxy;
    fastcgi_temp_path %(tmp)s/fastcgi;
    uwsgi_temp_path %(tmp)s/uwsgi;
    scgi_temp_path %(tmp)s/scgi;
    keepalive_requests 100000000;
    upstream app { server 127.0.0.1:%(up)d; keepalive 32; }
    server {
        listen 127.0.0.1:%(port)d backlog=65535;
        location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";%(headers)s }
    }
}
"""

PROXY_HAPROXY_CONF = """\
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend web
    bind 127.0.0.1:%(port)d
    default_backend app
backend app
%(headers)s    server up 127.0.0.1:%(up)d
"""

# The forwarding headers tusknetd's proxy handler adds by default, spelled in
# each peer's config, so that a second pair of peers does the same job per
# request: the upstream parses the same request, the client the same response.
PROXY_NGINX_FORWARDING = """
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header Forwarded "for=$remote_addr;proto=$scheme;host=\\"$http_host\\"";
            proxy_set_header Via "1.1 nginx";
            add_header Via "1.1 nginx";"""

PROXY_HAPROXY_FORWARDING = """\
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header Forwarded "for=%[src];proto=http;host=\\"%[req.hdr(host)]\\""
    http-request add-header Via "1.1 haproxy"
    http-response add-header Via "1.1 haproxy"
"""


PROXY_PATHS = (("/health", "GET /health"), ("/www-1k", "1 KB body"), ("/www-64k", "64 KB body"))


def proxy_rounds(ctx, servers, tag="", spinning=()):
    """wrk -c50 on each path, rounds alternating between SERVERS ((who, proc, port), tusknetd first); a server
    in SPINNING polls even when idle, so it is stopped (SIGSTOP) while another one is measured. Each path
    starts with one unmeasured round of every server (pools and caches filled, pages touched), and the
    order is reversed every other round, so that no server is always the one measured first."""
    a = ctx.args
    rows = []
    for path, label in PROXY_PATHS:
        res = {who: [] for who, _, _ in servers}
        use = {who: [] for who, _, _ in servers}   # (proxy CPU us per request, {cpu: busy fraction})
        for i in range(max(1, a.rounds) + 1):
            for who, server, p in (servers if i % 2 else servers[::-1]):
                for other, proc, _ in servers:
                    if proc in spinning:
                        os.kill(proc.pid, signal.SIGCONT if other == who else signal.SIGSTOP)
                c0, k0 = cpu_seconds(server.pid), cpu_ticks()
                r = wrk_run(ctx, "http://127.0.0.1:%d%s" % (p, path), 50, a.http_seconds,
                            timeout=a.http_seconds + 60)
                c1, k1 = cpu_seconds(server.pid), cpu_ticks()
                if i:
                    res[who].append((r["rps"], r["p99"], sum(r["errors"]) + r["non2xx"]))
                    use[who].append(((c1 - c0) * 1e6 / max(1, r["requests"]), busy_between(k0, k1)))
        t = max(res["tusknetd"])
        for who in [w for w, _, _ in servers if w != "tusknetd"]:
            n = max(res[who])
            ratio = paired_median(res["tusknetd"], res[who])
            rows.append(Row("proxy %s%s -c50 vs %s" % (tag, label, who), "%s rps" % fmt_int(t[0]),
                            "%s %s rps" % (who, fmt_int(n[0])), ratio, ">= 1.0",
                            bool(ratio and ratio >= 1.0 and t[2] == 0)))
            rows.append(Row("proxy %s%s p99 vs %s" % (tag, label, who), "%.2f ms" % (t[1] or 0),
                            "%s %.2f ms" % (who, n[1] or 0), (t[1] / n[1]) if t[1] and n[1] else None, "<= 1.0",
                            bool(t[1] and n[1] and t[1] <= n[1])))
            if spinning:
                continue   # a proxy that polls spends its CPU whether or not there is work
            # the proxy's own CPU time per request, whichever CPU set the pace (lower is better)
            rows.append(Row("proxy %s%s CPU/req vs %s" % (tag, label, who),
                            "%.1f us" % median(u[0] for u in use["tusknetd"]),
                            "%s %.1f us" % (who, median(u[0] for u in use[who])),
                            median(x[0] / y[0] for x, y in zip(use["tusknetd"], use[who]) if y[0] > 0),
                            "reported"))
        ctx.note("proxy %s%s -c50: %s" % (tag, label, "; ".join(
            "%s %s rps (errors %d)" % (w, " ".join(fmt_int(x[0]) for x in res[w]), max(res[w])[2]) for w in res)))
        # which CPU set the pace: a proxy that leaves its own CPU idle while
        # wrk's and the upstream's is full is not what the round measured
        ctx.note("proxy %s%s -c50 CPU busy, median of rounds (proxy's CPU %d / wrk's and the upstream's CPU %d): %s"
                 % (tag, label, SERVER_CPU, CLIENT_CPU, "; ".join(
                     "%s %.0f%% / %.0f%%" % (w, 100 * median(u[1][SERVER_CPU] for u in use[w]),
                                            100 * median(u[1][CLIENT_CPU] for u in use[w])) for w in use)))
    for _, proc, _ in servers:
        if proc in spinning:
            os.kill(proc.pid, signal.SIGCONT)
        ctx.stop(proc)
    return rows


# the upstream answers /fwd-check with the forwarding headers it was sent
PROXY_FWD_ECHO = ("        location /fwd-check { return 200 '$http_x_forwarded_for|$http_x_forwarded_proto|"
                  "$http_x_forwarded_host|$http_forwarded|$http_via'; }\n")


def check_forwarding(servers):
    """tusknetd and the -fwd peers must send the upstream all five forwarding headers, the plain peers none:
    otherwise the two pairs of rows do not compare what they say."""
    for who, _, port in servers:
        got = http_get(port, "/fwd-check").split("|")
        want = who == "tusknetd" or who.endswith("-fwd")
        if len(got) != 5 or any(bool(v) != want for v in got):
            raise BenchError("proxy %s sent the upstream forwarding headers %r, expected %s" %
                             (who, got, "all five" if want else "none"))


def start_proxy_tusknetd(ctx, name, uport, daemon_extra=""):
    port = free_port()
    conf = tusknetd_conf(ctx, name, 'app { type: "proxy" upstreams: ["127.0.0.1:%d"] keepalive: 32 }' % uport,
                         'web { protocol: "http" listen: "127.0.0.1:%d" backlog: 65535 routes { "GET /*": "app" } }'
                         % port, daemon_extra=daemon_extra)
    tn = start_tusknetd(ctx, name, conf, nofile=30000)
    wait_tcp(tn, ctx, port)
    return tn, port


def start_proxy_nginx(ctx, name, uport, headers=""):
    nport = free_port()
    nconf = write(ctx.path(name + ".conf"), PROXY_NGINX_CONF % {"tmp": ctx.tmp, "up": uport, "port": nport,
                                                                "name": name, "headers": headers})
    ng = ctx.start_server(name, [ctx.args.nginx, "-p", ctx.tmp, "-c", nconf, "-e", ctx.path(name + "-error.log")],
                          nofile=30000)
    wait_tcp(ng, ctx, nport)
    return ng, nport


def start_proxy_haproxy(ctx, name, haproxy, uport, global_extra="", headers=""):
    hport = free_port()
    text = PROXY_HAPROXY_CONF % {"up": uport, "port": hport, "headers": headers}
    text = text.replace("global\n", "global\n" + global_extra, 1)
    hp = ctx.start_server(name, [haproxy, "-db", "-f", write(ctx.path(name + ".cfg"), text)], nofile=30000)
    wait_tcp(hp, ctx, hport)
    return hp, hport


def bench_proxy(ctx):
    """Reverse proxy to one keep-alive upstream (nginx on the client CPU), wrk -c50 on /health, a 1 KB and a
    64 KB body: tusknetd (proxy handler) vs nginx (proxy_pass, upstream keepalive 32) vs HAProxy, each with
    its defaults; then tusknetd with busy_poll_us: 50 vs HAProxy with busy-polling, the one knob both have
    for an idle wait that costs the peers a wakeup per message."""
    a = ctx.args
    if not a.wrk or not a.nginx:
        raise BenchError("wrk and nginx are needed")
    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    for name, size in (("1k", 1024), ("64k", 65536)):
        write(ctx.path("www-" + name), "x" * size)
    # the upstream: nginx on the client CPU (with wrk), the same for every proxy
    up, uport = start_nginx_health(ctx, "upstream", 2000, 30000,
                                   server="        location /www- { root %s; }\n%s" % (ctx.tmp, PROXY_FWD_ECHO),
                                   cpu=CLIENT_CPU)
    tn, port = start_proxy_tusknetd(ctx, "tusknetd-proxy", uport)
    # each peer at its defaults and adding the forwarding headers tusknetd adds (X-Forwarded-*, Forwarded, Via)
    servers = [("tusknetd", tn, port), ("nginx",) + start_proxy_nginx(ctx, "nginx-proxy", uport),
               ("nginx-fwd",) + start_proxy_nginx(ctx, "nginx-proxy-fwd", uport, PROXY_NGINX_FORWARDING)]
    if haproxy:
        servers.append(("haproxy",) + start_proxy_haproxy(ctx, "haproxy", haproxy, uport))
        servers.append(("haproxy-fwd",) + start_proxy_haproxy(ctx, "haproxy-fwd", haproxy, uport,
                                                             headers=PROXY_HAPROXY_FORWARDING))
    else:
        ctx.note("proxy: haproxy not installed (Debian package haproxy), its rows are missing")
    check_forwarding(servers)
    rows = proxy_rounds(ctx, servers)
    if haproxy:
        tnp, pport = start_proxy_tusknetd(ctx, "tusknetd-proxy-poll", uport, daemon_extra="busy_poll_us: 50\n")
        hpp, hpport = start_proxy_haproxy(ctx, "haproxy-poll", haproxy, uport, global_extra="    busy-polling\n")
        rows += proxy_rounds(ctx, [("tusknetd", tnp, pport), ("haproxy", hpp, hpport)], tag="polling ",
                             spinning=(hpp,))
    ctx.stop(up)
    return rows


BENCHMARKS = [
    ("ping", bench_tcp_ping),
    ("udp", bench_udp_echo),
    ("idlemem", bench_idle_memory),
    ("http", bench_http_health),
    ("http10k", bench_http_10k),
    ("workers", bench_workers),
    ("https", bench_https),
    ("httpsnew", bench_https_new),
    ("ws", bench_ws_echo),
    ("wsmem", bench_ws_idle_mem),
    ("fanout", bench_fanout),
    ("plugin", bench_plugin_ping),
    ("kv", bench_kv),
    ("worker", bench_worker),
    ("proxy", bench_proxy),
    ("lineproxy", bench_line_proxy),
]


# ------------------------------------------------------------ main

def print_table(rows):
    line = "%-40s %-15s %-27s %-7s %-9s %s"
    head = line % ("benchmark", "tusknetd", "peer", "ratio", "target", "met")
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = "%.2f" % r.ratio if r.ratio is not None else "n/a"
        met = {True: "yes", False: "NO", None: "-"}[r.met]
        print(line % (r.name, r.tusknetd, r.peer, ratio, r.target, met))


def main():
    ap = argparse.ArgumentParser(description="tusknetd benchmarks vs redis-server / nginx")
    ap.add_argument("--tusknetd", required=False, default="build/release/tusknetd")
    ap.add_argument("--redis-server", default=shutil.which("redis-server"))
    ap.add_argument("--redis-benchmark", default=shutil.which("redis-benchmark"))
    ap.add_argument("--nginx", default=shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None))
    ap.add_argument("--only", help="comma-separated benchmark names (see --list)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--quick", action="store_true", help="smaller runs to try the harness out")
    ap.add_argument("--ping-n", type=int, default=200000, help="requests, plain ping (default 200000)")
    ap.add_argument("--ping-pipelined-n", type=int, default=2000000, help="requests, -P 16 (default 2000000)")
    ap.add_argument("--lineproxy-n", type=int, default=200000, help="requests, line proxy plain (default 200000)")
    ap.add_argument("--lineproxy-pipelined-n", type=int, default=1000000,
                    help="requests, line proxy -P16 (default 1000000)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per ping case (default 2)")
    ap.add_argument("--udp-seconds", type=float, default=5.0)
    ap.add_argument("--wrk", default=shutil.which("wrk"))
    ap.add_argument("--http-seconds", type=int, default=5, help="wrk duration per round (default 5)")
    ap.add_argument("--https-seconds", type=int, default=5, help="wrk duration per round, https rows (default 5)")
    ap.add_argument("--ws-seconds", type=float, default=5.0, help="ws_load duration per round (default 5)")
    ap.add_argument("--fanout-seconds", type=float, default=5.0, help="ws_fanout duration per round (default 5)")
    ap.add_argument("--node", default=shutil.which("node") or shutil.which("nodejs"))
    ap.add_argument("--conns", type=int, default=10000, help="idle connections (default 10000)")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="first wait up to SECONDS for CPUs 0 and 1 to be idle (default: don't wait)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    args = ap.parse_args()

    if args.list:
        for name, fn in BENCHMARKS:
            print("%-10s %s" % (name, (fn.__doc__ or "").strip()))
        return 0
    if args.quick:
        args.ping_n, args.ping_pipelined_n = 20000, 200000
        args.lineproxy_n, args.lineproxy_pipelined_n = 20000, 160000
        args.udp_seconds, args.conns = 1.0, 2000
        args.ws_seconds = 1.0
        args.fanout_seconds = 1.0
        args.https_seconds = 2
    args.tusknetd = os.path.abspath(args.tusknetd)
    if not os.access(args.tusknetd, os.X_OK):
        print("bench: %s is not an executable (run make all)" % args.tusknetd, file=sys.stderr)
        return 1
    selected = BENCHMARKS
    if args.only:
        want = set(args.only.split(","))
        unknown = want - {n for n, _ in BENCHMARKS}
        if unknown:
            print("bench: unknown benchmark(s): %s" % ", ".join(sorted(unknown)), file=sys.stderr)
            return 1
        selected = [b for b in BENCHMARKS if b[0] in want]

    cpus = os.sched_getaffinity(0)
    args.pin = shutil.which("taskset") is not None and {SERVER_CPU, CLIENT_CPU} <= cpus
    if args.pin:
        os.sched_setaffinity(0, {CLIENT_CPU})      # this process is a load generator too
    tmp = tempfile.mkdtemp(prefix="tusknetd-bench-")
    ctx = Ctx(args, tmp)
    if not args.pin:
        ctx.note("NOT pinned (need taskset and CPUs %d and %d): numbers are not comparable"
                 % (SERVER_CPU, CLIENT_CPU))

    # SIGTERM/SIGHUP become exceptions so the finally below still kills everything
    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    if args.wait_idle > 0:
        deadline = time.monotonic() + args.wait_idle
        while True:
            busy = busy_fraction(1.0)
            worst = max(busy.get(SERVER_CPU, 0), busy.get(CLIENT_CPU, 0))
            if worst <= 0.10 or time.monotonic() >= deadline:
                break
            print("waiting for an idle machine (cpu0 %d%%, cpu1 %d%% busy)"
                  % (busy.get(SERVER_CPU, 0) * 100, busy.get(CLIENT_CPU, 0) * 100), flush=True)
            time.sleep(4)

    rows, failed = [], 0
    print("tusknetd %s; servers on CPU %d, load on CPU %d; temp dir %s"
          % (args.tusknetd, SERVER_CPU, CLIENT_CPU, tmp), flush=True)
    t_start = time.monotonic()
    try:
        for name, fn in selected:
            t0 = time.monotonic()
            print("== %s ..." % name, end=" ", flush=True)
            try:
                check_quiet(ctx, name)
                new = fn(ctx)
                rows.extend(new)
                print("%.1fs: %s" % (time.monotonic() - t0,
                                     "; ".join("%s %s" % (r.name, r.tusknetd) for r in new)), flush=True)
            except KeyboardInterrupt:
                raise
            except Exception as e:        # one broken benchmark doesn't stop the rest
                failed += 1
                msg = str(e) if isinstance(e, (BenchError, OSError)) else "%s: %s" % (type(e).__name__, e)
                rows.append(Row(name, "error", "n/a"))
                ctx.note("%s: ERROR %s" % (name, msg))
                print("error: %s" % msg, flush=True)
            finally:
                ctx.stop_all()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        failed += 1
    finally:
        ctx.stop_all()
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print_table(rows)
    if ctx.notes:
        print()
        print("notes:")
        for n in ctx.notes:
            print("  - " + n)
    print("\ntotal %.0fs" % (time.monotonic() - t_start))
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
