"""Protocol strictness and bounded resources under hostile clients and
programs:

- a reply holding line breaks (an exec program printing several lines, a
  broadcast relayed from UDP) is still exactly one line on a TCP line
  listener: each "\\n" or "\\r\\n" becomes one space; UDP keeps them;
- TLS listeners offer forward secret suites only by default: static-RSA
  key exchange, CBC suites and TLS 1.1 are refused, ECDHE-GCM and TLS 1.3
  served; min_version "1.0" adds the ECDHE CBC suites, never static RSA;
- an include fan-out (twenty files each including a directory of twenty)
  or a mesh of files including each other ends `tusknetd -t` at once with
  one FILE:LINE:COL error.
"""
import subprocess

import pytest

from daemon_util import TUSKNETD, LineClient, UdpClient, daemon  # noqa: F401  (daemon is a fixture)
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
                                    "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA384"])
def test_default_tls12_refuses_static_rsa_and_cbc(tls_daemon, pki, cipher):
    r = s_client(tls_daemon.ports["MODERN"], "-tls1_2", "-cipher", cipher, "-CAfile", pki.ca.cert)
    assert not handshake_ok(r.out), r.out
    assert "alert handshake failure" in r.out, r.out


@pytest.mark.parametrize("cipher", ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                                    "ECDHE-RSA-CHACHA20-POLY1305"])
def test_default_tls12_serves_forward_secret_aead(tls_daemon, pki, cipher):
    r = s_client(tls_daemon.ports["MODERN"], "-tls1_2", "-cipher", cipher, "-CAfile", pki.ca.cert)
    assert handshake_ok(r.out) and cipher_of(r.out) == cipher, r.out


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
