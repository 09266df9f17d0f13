# SPDX-License-Identifier: MIT
"""The control socket against clients that send what no tusknetctl would:
over-long command lines whose tail must never run, NUL and non-UTF-8 bytes
that must still get one valid JSON answer each, and a flood from a client
that never reads."""
import json
import subprocess

import pytest

from ctl_util import TUSKNETD, ctl_daemon  # noqa: F401  (fixture)

CONFIG = """
[handlers]
echo { type: "echo" }

[listeners]
lines { protocol: "tcp" listen: "127.0.0.1:0" handler: "echo" }
"""

MAX_COMMAND = 65536
TOO_LONG = {"ok": False, "error": f"command too long (at most {MAX_COMMAND} bytes)"}


@pytest.fixture
def d(ctl_daemon):
    daemon = ctl_daemon(CONFIG)
    out = subprocess.run([TUSKNETD, "-V"], capture_output=True, text=True, check=True).stdout
    daemon.version = out.split()[1]
    return daemon


def test_tail_of_an_over_long_command_never_runs(d):
    with d.client() as c:
        # the tail that arrives after the limit is passed is a valid command
        c.sock.sendall(b"x" * (MAX_COMMAND + 10))
        assert c.read_json() == TOO_LONG
        c.sock.sendall(b" version\n")
        c.send_line("version")
        assert c.read_json() == {"version": d.version}
        # nothing else was answered: the next command's answer comes next
        assert c.command("log-level info") == {"ok": True, "log_level": "info"}


def test_over_long_command_in_one_write(d):
    with d.client() as c:
        c.sock.sendall(b"version " + b"y" * (MAX_COMMAND + 100) + b"\nversion\n")
        assert c.read_json() == TOO_LONG
        assert c.read_json() == {"version": d.version}


@pytest.mark.parametrize(
    "line, shown",
    [
        (b"\x00stats", None),
        (b"\xffhello", "\ufffdhello"),
        (b"st\xc3ats", "st\ufffdats"),
        (b"\x1b[2Jclear", "\x1b[2Jclear"),
        (b"\xe2\x82\xac", "\u20ac"),
        (b'quote"back\\slash', 'quote"back\\slash'),
    ],
)
def test_odd_bytes_get_one_valid_json_answer(d, line, shown):
    with d.client() as c:
        c.sock.sendall(line + b"\n")
        raw = c.read_line()
        answer = json.loads(raw)
        assert answer["ok"] is False
        if shown is None:
            assert answer["error"] == "invalid command: it contains a NUL byte"
        else:
            assert answer["error"] == f"unknown command '{shown}' (try help)"
        # the connection still serves
        assert c.command("version") == {"version": d.version}
