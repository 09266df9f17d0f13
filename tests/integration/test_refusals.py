# SPDX-License-Identifier: MIT
"""What a client refused at accept receives, byte for byte, per protocol:
each front end's refusal answer (an 'Error: ...' line for tcp, a 503 for
http), nothing for a denied address, and the close."""
import re
import socket
import time

from daemon_util import (  # noqa: F401  (daemon is a fixture)
    LineClient,
    daemon,
)

HEAD = """
[daemon]
control_socket: ""
shutdown_timeout: "2s"
[handlers]
echo { type: "echo" }
hello { type: "static" reply: "hello" }
"""


def refused_bytes(port, source="127.0.0.1"):
    """Everything the daemon sends a new connection before it closes it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=3, source_address=(source, 0))
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return data
            data += chunk
    finally:
        s.close()


def fresh_second():
    """Sleeps until early in a wall-clock second, so that two connections
    made at once fall within one second."""
    while not 0.02 < time.time() % 1.0 < 0.4:
        time.sleep(0.01)


def test_tcp_refusal_lines(daemon):
    d = daemon(
        HEAD
        + """
[listeners]
perip { protocol: "tcp" listen: "127.0.0.1:PORT_IP" handlers: ["echo"] max_connections_per_ip: 1 }
persec { protocol: "tcp" listen: "127.0.0.1:PORT_SEC" handlers: ["echo"] max_connections_per_second: 1 }
denied { protocol: "tcp" listen: "127.0.0.1:PORT_DENY" handlers: ["echo"] deny: ["127.0.0.1"] }
"""
    )
    with LineClient(d.ports["IP"]) as held:
        assert held.request("echo a") == "a"
        assert refused_bytes(d.ports["IP"]) == b"Error: too many connections from your address\n"
    fresh_second()
    with LineClient(d.ports["SEC"]) as first:
        assert first.request("echo b") == "b"
        assert refused_bytes(d.ports["SEC"]) == b"Error: too many connections per second\n"
    assert refused_bytes(d.ports["DENY"]) == b""


BUSY = re.compile(
    rb"HTTP/1\.1 503 Service Unavailable\r\nServer: tusknetd\r\n"
    rb"Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    rb"\d{4} \d\d:\d\d:\d\d GMT\r\n"
    rb"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\n"
    rb"Connection: close\r\n\r\nService Unavailable\n"
)


def test_http_refusal_is_a_503_before_any_request(daemon):
    d = daemon(
        HEAD
        + """
[listeners]
full { protocol: "http" listen: "127.0.0.1:PORT_FULL" max_connections: 1 routes { "GET /": "hello" } }
perip { protocol: "http" listen: "127.0.0.1:PORT_IP" max_connections_per_ip: 1 routes { "GET /": "hello" } }
denied { protocol: "http" listen: "127.0.0.1:PORT_DENY" deny: ["127.0.0.1"] routes { "GET /": "hello" } }
"""
    )
    for name in ("FULL", "IP"):
        held = socket.create_connection(("127.0.0.1", d.ports[name]), timeout=3)
        try:
            held.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert held.recv(4096).startswith(b"HTTP/1.1 200 OK\r\n")
            got = refused_bytes(d.ports[name])
            assert BUSY.fullmatch(got), (name, got)
        finally:
            held.close()
    # a denied address is told nothing
    assert refused_bytes(d.ports["DENY"]) == b""
