#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""ab.py - two tusknetd builds head to head: is a change faster, slower, or noise?

    python3 tests/bench/ab.py OLD_TUSKNETD NEW_TUSKNETD [--rounds 6] [--seconds 3] [--rt]

bench.py compares tusknetd with other servers, one round each, and on a shared
2-CPU machine a single round moves by more than most changes do. This script
answers the narrower question a refactoring asks: with everything else equal,
does the new binary serve as fast as the old one? Both builds run side by side
from one config (a WebSocket echo route, a TCP line listener answering PING
with a static reply, an HTTP /health route), pinned to CPU 0; the load
generators run on CPU 1: ws_load.c and line_load.c (built here with gcc -O2)
and wrk. Rounds alternate which build goes first, and the figure is the median
of the per-round new/old ratios, with every round printed so the spread shows.

--rt runs the servers and load generators under SCHED_FIFO (chrt -f 20), which
keeps background jobs on the same machine from taking their CPUs mid-round;
use it when the machine cannot be made quiet. Absolute rates under --rt are
not comparable with bench.py's; only the ratio is the result.
"""
import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
SERVER_CPU, CLIENT_CPU = "0", "1"

CONF = """[daemon]
log_level: "warn"
control_socket: ""
max_connections: 20000
[handlers]
echo { type: "echo" }
pong { type: "static" reply: "+PONG" }
health { type: "health" }
[listeners]
web { protocol: "http" listen: "127.0.0.1:%(ws)d" backlog: 4096 websocket { "/echo": { handler: "echo" deflate: false ping_interval: "0s" } } }
line { protocol: "tcp" listen: "127.0.0.1:%(line)d" handler: "pong" }
h { protocol: "http" listen: "127.0.0.1:%(http)d" routes { "/health": { handler: "health" } } }
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp(port, proc, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit("a tusknetd exited during start (status %s)" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("port %d did not open" % port)


def build_tool(tmp, name):
    out = os.path.join(tmp, name)
    r = subprocess.run(["gcc", "-O2", "-o", out, os.path.join(BENCH_DIR, name + ".c")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.exit("%s.c: %s" % (name, r.stdout.decode("utf-8", "replace")[-800:]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rt", action="store_true", help="SCHED_FIFO for servers and load (chrt -f 20)")
    a = ap.parse_args()
    for tool in ("taskset", "wrk", "gcc"):
        if not shutil.which(tool):
            sys.exit("%s is needed" % tool)
    prefix = ["chrt", "-f", "20"] if a.rt else []
    tmp = tempfile.mkdtemp(prefix="tusknetd-ab-")
    ws_load, line_load = build_tool(tmp, "ws_load"), build_tool(tmp, "line_load")
    builds, procs = {}, []
    try:
        for who, exe in (("old", a.old), ("new", a.new)):
            ports = {"ws": free_port(), "line": free_port(), "http": free_port()}
            conf = os.path.join(tmp, who + ".conf")
            with open(conf, "w") as f:
                f.write(CONF % ports)
            log = open(os.path.join(tmp, who + ".log"), "w")
            p = subprocess.Popen(prefix + ["taskset", "-c", SERVER_CPU, exe, "-c", conf],
                                 stdout=log, stderr=subprocess.STDOUT)
            procs.append(p)
            for port in ports.values():
                wait_tcp(port, p)
            builds[who] = ports

        def run(argv, rx):
            out = subprocess.run(prefix + ["taskset", "-c", CLIENT_CPU] + argv, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, timeout=a.seconds + 60).stdout.decode()
            m = re.search(rx, out)
            if not m:
                sys.exit("%s: no result:\n%s" % (argv[0], out[-400:]))
            return float(m.group(1))

        d = str(a.seconds)
        rows = (
            ("ws echo 64B x50", lambda p: run([ws_load, "-c", "50", "-d", d, str(p["ws"]), "/echo"],
                                              r"msgs/s (\d+)")),
            ("tcp PING x50", lambda p: run([line_load, "-c", "50", "-d", d, str(p["line"]), "PING"],
                                           r"req/s (\d+)")),
            ("http /health wrk -c50", lambda p: run(["wrk", "-t1", "-c50", "-d%ss" % d,
                                                     "http://127.0.0.1:%d/health" % p["http"]],
                                                    r"Requests/sec:\s+([\d.]+)")),
        )
        print("old %s\nnew %s\n%d rounds of %ss, servers on CPU %s, load on CPU %s%s" % (
            a.old, a.new, a.rounds, d, SERVER_CPU, CLIENT_CPU, ", SCHED_FIFO" if a.rt else ""))
        for name, measure in rows:
            res = {"old": [], "new": []}
            for i in range(a.rounds):
                for who in (("old", "new") if i % 2 == 0 else ("new", "old")):
                    res[who].append(measure(builds[who]))
            ratios = sorted(n / o for n, o in zip(res["new"], res["old"]) if o)
            print("%-22s new/old median %.3f  (rounds %s; old %s; new %s)" % (
                name, statistics.median(ratios), " ".join("%.2f" % r for r in ratios),
                " ".join("%d" % x for x in res["old"]), " ".join("%d" % x for x in res["new"])), flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
