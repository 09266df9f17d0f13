# SPDX-License-Identifier: MIT
"""Protocol strictness and bounded resources under hostile clients and
programs:

- a reply holding line breaks (an exec program printing several lines, a
  broadcast relayed from UDP) is still exactly one line on a TCP line
  listener: each "\\n" or "\\r\\n" becomes one space; UDP keeps them;
- TLS listeners offer forward secret suites only by default: static-RSA
  key exchange, CBC suites and TLS 1.1 are refused, ECDHE/DHE AEAD suites
  and TLS 1.3 served; min_version "1.0" adds the ECDHE CBC suites, never static RSA;
- what programs write to stderr and what clients send reaches the daemon's
  log escaped (control bytes as \\xHH), one log line per stderr line, and a
  program flooding stderr gets 100 lines a second logged and the rest
  counted in "dropped N stderr lines"; access log lines (combined and JSON)
  pass through unchanged, the JSON ones still valid JSON;
- an include fan-out (twenty files each including a directory of twenty)
  or a mesh of files including each other ends `tusknetd -t` at once with
  one FILE:LINE:COL error.
"""
import json
import re
import subprocess

import pytest

from daemon_util import TUSKNETD, LineClient, UdpClient, daemon  # noqa: F401  (daemon is a fixture)
from http_util import raw_exchange
from tls_util import handshake_ok, pki, s_client  # noqa: F401  (pki is a fixture)

LINES = r"""
[daemon]
control_socket: ""
shutdown_timeout: "2s"

[handlers]
three { type: "exec" command: ["printf", "one\ntwo\r\nthree\n"] }
json  { type: "exec" command: ["printf", "%s\n", "{\n  \"a\": 1,\n  \"b\": \"x\\\\y\"\n}"] }
ping  { type: "static" reply: "+PONG" }
multi { type: "static" reply: "first\nsecond" }
echo  { type: "echo" }
room  { type: "broadcast" }

[listeners]
lines { protocol: "tcp" listen: "127.0.0.1:PORT_LINES" handlers: ["three", "json", "ping", "multi", "echo", "room"] }
dgram { protocol: "udp" listen: "127.0.0.1:PORT_DGRAM" handlers: ["three", "room"] }
"""


def test_exec_lines_keep_the_framing(daemon):
    d = daemon(LINES)
    with LineClient(d.ports["LINES"]) as c:
        c.send(b"three\nping\n")
        assert c.readlines(2) == ["one two three", "+PONG"]
        # pipelined behind an outstanding reply (the queued path), CRLF client
        c.send(b"three\r\nping\r\nthree\r\necho after\r\n")
        assert c.readlines(4) == ["one two three\r", "+PONG\r", "one two three\r", "after\r"]
        # a sync reply with a line break, pretty-printed JSON stays valid JSON
        assert c.request("multi") == "first second"
        assert c.request("json") == '{   "a": 1,   "b": "x\\\\y" }'
        assert c.silent_for(0.2) == b""
    # UDP is one datagram either way: the breaks stay
    with UdpClient(d.ports["DGRAM"]) as u:
        assert u.request("three") == b"one\ntwo\r\nthree"


def test_pushed_message_with_line_breaks_is_one_line(daemon):
    d = daemon(LINES)
    with LineClient(d.ports["LINES"]) as member, UdpClient(d.ports["DGRAM"]) as u:
        member.sendline("room")  # joins the room; a broadcast sender gets no reply
        assert member.silent_for(0.2) == b""
        u.send(b"room a\nb\r\nc")
        assert member.readline() == "a b c"
        assert member.request("ping") == "+PONG"


# ---- TLS defaults --------------------------------------------------------------

TLS = """
[daemon]
control_socket: ""

[handlers]
ping { type: "static" reply: "+PONG" }

[listeners]
modern { protocol: "tcp" listen: "127.0.0.1:PORT_MODERN" handler: "ping"
         tls { cert: "CERT" key: "KEY" } }
legacy { protocol: "tcp" listen: "127.0.0.1:PORT_LEGACY" handler: "ping"
         tls { cert: "CERT" key: "KEY" min_version: "1.0" } }
"""


def cipher_of(out):
    for line in out.splitlines():
        if ", Cipher is " in line:
            return line.split(", Cipher is ")[1].strip()
    return None


@pytest.fixture
def tls_daemon(daemon, pki):
    return daemon(TLS.replace("CERT", str(pki.localhost.cert)).replace("KEY", str(pki.localhost.key)))


@pytest.mark.parametrize("cipher", ["AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA", "AES256-SHA256",
                                    "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA384", "DHE-RSA-AES128-SHA",
                                    "DHE-RSA-AES256-SHA256"])
def test_default_tls12_refuses_static_rsa_and_cbc(tls_daemon, pki, cipher):
    r = s_client(tls_daemon.ports["MODERN"], "-tls1_2", "-cipher", cipher, "-CAfile", pki.ca.cert)
    assert not handshake_ok(r.out), r.out
    assert "alert handshake failure" in r.out, r.out


@pytest.mark.parametrize("cipher", ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                                    "ECDHE-RSA-CHACHA20-POLY1305", "DHE-RSA-AES128-GCM-SHA256",
                                    "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305"])
def test_default_tls12_serves_forward_secret_aead(tls_daemon, pki, cipher):
    r = s_client(tls_daemon.ports["MODERN"], "-tls1_2", "-cipher", cipher, "-CAfile", pki.ca.cert)
    assert handshake_ok(r.out) and cipher_of(r.out) == cipher, r.out
    # the DH group matches the RSA 2048 certificate
    want = "Server Temp Key: DH, 2048 bits" if cipher.startswith("DHE") else "Server Temp Key: X25519, 253 bits"
    assert want in r.out, r.out


def test_default_tls_versions(tls_daemon, pki):
    port = tls_daemon.ports["MODERN"]
    r = s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", pki.ca.cert)
    assert not handshake_ok(r.out), r.out
    r = s_client(port, "-tls1_3", "-CAfile", pki.ca.cert)
    assert handshake_ok(r.out) and cipher_of(r.out) == "TLS_AES_256_GCM_SHA384", r.out
    # the server's order: AES-128-GCM first for a client offering everything
    r = s_client(port, "-tls1_2", "-CAfile", pki.ca.cert)
    assert handshake_ok(r.out) and cipher_of(r.out) == "ECDHE-RSA-AES128-GCM-SHA256", r.out


def test_legacy_min_version_stays_forward_secret(tls_daemon, pki):
    port = tls_daemon.ports["LEGACY"]
    r = s_client(port, "-tls1", "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", pki.ca.cert)
    assert handshake_ok(r.out) and cipher_of(r.out) == "ECDHE-RSA-AES128-SHA", r.out
    for cipher in ("AES128-SHA", "AES256-SHA"):
        r = s_client(port, "-tls1", "-cipher", cipher + "@SECLEVEL=0", "-CAfile", pki.ca.cert)
        assert not handshake_ok(r.out), r.out
    r = s_client(port, "-tls1_2", "-CAfile", pki.ca.cert)
    assert handshake_ok(r.out) and cipher_of(r.out) == "ECDHE-RSA-AES128-GCM-SHA256", r.out


ACCESS = """
[daemon]
control_socket: ""
log_level: "info"

[handlers]
ok { type: "static" reply: "ok" }

[middleware]
clf  { type: "access_log" format: "combined" }
json { type: "access_log" format: "json" }

[listeners]
a { protocol: "http" listen: "127.0.0.1:PORT_A" middleware: ["clf"] routes { "/*": "ok" } }
b { protocol: "http" listen: "127.0.0.1:PORT_B" middleware: ["json"] routes { "/*": "ok" } }
"""


def test_access_log_lines_in_the_daemon_log(daemon):
    """Both access log formats reach the daemon's log unchanged: what they
    quote is already safe, and a JSON line stays valid JSON."""
    d = daemon(ACCESS)
    ua = b'ua "q" \\ \xff\xfe \xc3\xa9'
    for port in (d.ports["A"], d.ports["B"]):
        r, _ = raw_exchange(port, b"GET /p HTTP/1.1\r\nHost: x\r\nUser-Agent: " + ua + b"\r\nConnection: close\r\n\r\n")
        assert r.status == 200, r
    assert d.wait_log(r'\{"time"', 3)
    lines = d.log().split("\n")
    clf = [line for line in lines if '"GET /p HTTP/1.1"' in line]
    assert len(clf) == 1 and clf[0].endswith(r'"ua \x22q\x22 \x5C \xFF\xFE \xC3\xA9"'), clf
    js = [line[line.index("{"):] for line in lines if '{"time"' in line]
    assert len(js) == 1, js
    assert json.loads(js[0])["user_agent"] == 'ua "q" \\ \ufffd\ufffd \u00e9', js


# ---- config include bounds -------------------------------------------------------


def check(path):
    r = subprocess.run([TUSKNETD, "-t", "-c", str(path)], capture_output=True, text=True, timeout=20)
    return r.returncode, r.stderr.splitlines()


def test_include_fan_out_is_bounded(tmp_path):
    for i in range(20):
        (tmp_path / "l1").mkdir(exist_ok=True)
        (tmp_path / "l2").mkdir(exist_ok=True)
        (tmp_path / "l1" / f"f{i:02d}.conf").write_text('@include("../l2/*.conf")\n')
        (tmp_path / "l2" / f"g{i:02d}.conf").write_text("# nothing\n")
    main = tmp_path / "main.conf"
    main.write_text('[daemon]\n@include("l1/*.conf")\n')
    # main, then f00..f11 with their twenty each (253 files), f12, g00, g01
    assert check(main) == (1, [
        f"{tmp_path}/l1/f12.conf:1:1: include limit: more than 256 files (config, includes, @file) "
        "for one configuration",
        f"tusknetd: configuration {main} is invalid"])


def test_include_mesh_stops_at_the_first_cycle(tmp_path):
    for i in range(20):
        (tmp_path / f"m{i:02d}.conf").write_text(f'[s{i}]\n@include("*.conf")\n')
    main = tmp_path / "m07.conf"
    first = tmp_path / "m00.conf"
    assert check(main) == (1, [
        f"{first}:2:1: include cycle: {first} -> {first}",
        f"tusknetd: configuration {main} is invalid"])
    # the same file through another spelling of its path
    (tmp_path / "sub").mkdir()
    loop = tmp_path / "sub" / "loop.conf"
    loop.write_text('@include("../sub/./loop.conf")\n')
    assert check(loop) == (1, [
        f"{loop}:1:1: include cycle: {loop} -> {tmp_path}/sub/../sub/./loop.conf",
        f"tusknetd: configuration {loop} is invalid"])


def test_include_statements_are_bounded(tmp_path):
    main = tmp_path / "main.conf"
    main.write_text('@include("nothing*.conf")\n' * 100000)
    assert check(main) == (1, [
        f"{main}:257:1: include limit: more than 256 @include statements for one configuration",
        f"tusknetd: configuration {main} is invalid"])


# ---- the daemon's log ------------------------------------------------------------

LOGS = r"""
[daemon]
control_socket: ""
log_level: "info"
shutdown_timeout: "2s"

[handlers]
forge { type: "exec" command: ["sh", "-c", "printf 'evil\r\n2026-01-01 00:00:00.000 [error] forged \\033[31mred\\033[0m \\377\n' >&2"] }
tell  { type: "exec" command: ["sh", "-c", "cat >&2"] }
chat  { type: "stream" command: ["sh", "-c", "while read -r l; do printf '%s\n' \"$l\" >&2; echo ok; done"] }
flood { type: "exec" command: ["sh", "-c", "seq 1 100000 >&2; echo done"] timeout: "20s" }
ping  { type: "static" reply: "+PONG" }

[listeners]
lines { protocol: "tcp" listen: "127.0.0.1:PORT_LINES" handlers: ["forge", "tell", "chat", "flood", "ping"] }
"""

HEAD = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[warn\] "


def log_lines(d, handler):
    """The daemon's log lines for HANDLER's stderr, without the time stamp."""
    rx = re.compile(HEAD + "(handler " + handler + ": .*)$")
    return [m.group(1) for m in map(rx.match, d.log().split("\n")) if m]


def test_program_stderr_is_escaped_in_the_log(daemon):
    d = daemon(LOGS)
    with LineClient(d.ports["LINES"]) as c:
        assert c.request("forge") == ""
        assert d.wait_log("forged", 3)
    raw = d.log()
    assert "\x1b" not in raw and "\r" not in raw and "\xff" not in raw
    assert not re.search(r"^2026-01-01", raw, re.M), raw
    assert log_lines(d, "forge") == [
        r"handler forge: evil",  # a line's CRLF ending is its end
        r"handler forge: 2026-01-01 00:00:00.000 [error] forged \x1B[31mred\x1B[0m \xFF",
    ]


def test_client_bytes_are_escaped_in_the_log(daemon):
    d = daemon(LOGS)
    with LineClient(d.ports["LINES"]) as c:
        # a program that logs what the client sent, once per message and as a stream
        c.send(b"tell one\rtwo \x1b]0;title\x07 \xc3\xa9t\xc3\xa9 \x7f\n")
        assert c.readline() == ""
        c.send(b"chat \x1b[2J\x08\x01x\n")
        assert c.readline() == "ok"
        assert d.wait_log("handler chat", 3)
    assert log_lines(d, "tell") == [r"handler tell: one\x0Dtwo \x1B]0;title\x07 été \x7F"]
    assert log_lines(d, "chat") == [r"handler chat: \x1B[2J\x08\x01x"]


def test_stderr_flood_is_rate_limited(daemon):
    d = daemon(LOGS)
    with LineClient(d.ports["LINES"], timeout=20) as c:
        assert c.request("flood") == "done"
        # the drops are reported while the daemon runs, and it keeps serving
        assert d.wait_log(r"handler flood: dropped \d+ stderr lines \(more than 100 a second\)", 3)
        assert c.request("ping") == "+PONG"
    assert d.stop() == 0  # the last count comes when the handler goes
    logged = [line for line in log_lines(d, "flood") if re.fullmatch(r"handler flood: \d+", line)]
    dropped = [int(m) for m in re.findall(r"handler flood: dropped (\d+) stderr lines", d.log())]
    # the burst first, in order, then what the rate let through; every line
    # is either logged or counted
    assert logged[:100] == [f"handler flood: {i}" for i in range(1, 101)]
    assert len(logged) + sum(dropped) == 100000
    assert sum(dropped) > 0
