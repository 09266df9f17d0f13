# SPDX-License-Identifier: MIT
"""The log level set at run time (control socket `log-level`) also governs
libwebsockets' own messages: at info none reach the log, after `log-level
debug` they do, and after `log-level info` they stop again."""
import socket
import time

import pytest

from ctl_util import ctl_daemon, wait_for  # noqa: F401  (fixture)

CONFIG = """
[handlers]
echo { type: "echo" }

[listeners]
web { protocol: "http" listen: "127.0.0.1:0" routes { "GET /": "echo" } websocket { "/ws": "echo" } }
"""

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


@pytest.fixture
def d(ctl_daemon):
    return ctl_daemon(CONFIG, log_level="info")


def websocket_round(port):
    """Upgrade, then a masked close frame; waits for the daemon's close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(UPGRADE)
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 ")
        s.sendall(b"\x88\x80abcd")
        while s.recv(4096):
            pass


def lws_lines(d):
    return sum(1 for line in d.log().splitlines() if "libwebsockets:" in line)


def test_libwebsockets_follows_the_run_time_level(d):
    port = d.port("web")
    websocket_round(port)
    assert lws_lines(d) == 0
    assert d.ctl("log-level debug") == {"ok": True, "log_level": "debug"}
    websocket_round(port)
    wait_for(lambda: lws_lines(d) > 0, what="libwebsockets debug lines")
    assert d.ctl("log-level info") == {"ok": True, "log_level": "info"}
    time.sleep(0.2)
    seen = lws_lines(d)
    websocket_round(port)
    time.sleep(0.2)
    assert lws_lines(d) == seen
