# SPDX-License-Identifier: MIT
"""Certificates and TLS clients for the TLS integration tests.

``make_pki(dir)`` generates, with the openssl command line only (RSA 2048,
SHA-256), everything test_tls.py needs into DIR and returns a ``Pki`` naming
the files:

- ``ca``: a self-signed CA (``ca.crt``/``ca.key``) that signs every other
  certificate below;
- ``localhost``: the default server certificate, CN=localhost, SANs
  DNS:localhost, IP:127.0.0.1, IP:::1;
- ``renewed``: a second certificate for the same names (CN=localhost,
  O=Renewed), to swap in by a reload;
- ``a`` / ``b``: server certificates for the SNI names a.test and b.test;
- ``wild``: a server certificate for *.wild.test;
- ``client``: a client certificate, CN=client, O=Tusk Test;
- ``expired``: a server certificate for localhost valid only on
  2020-01-01 (made with ``openssl ca -startdate/-enddate``, since OpenSSL
  3.0's ``x509 -req`` cannot backdate);
- ``other_key``: a fresh key that matches no certificate;
- ``inter`` / ``chained``: an intermediate CA signed by the CA, and a
  localhost server certificate (O=Chained) signed by the intermediate (a
  client trusting only the CA needs the intermediate from the server);
- ``rogue``: a self-signed client certificate with the same subject as
  ``client`` (CN=client, O=Tusk Test) that no configured CA vouches for.

The ``pki`` session fixture makes them once per test session.

Clients: ``tls_context()`` (a client ``ssl.SSLContext`` trusting the test
CA), ``TlsLineClient`` (a TCP line client over TLS on a real socket),
``s_client(...)`` (runs ``openssl s_client`` and returns its output),
``cert_der(path)`` and ``peer_subject(...)``.
"""
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon_util import Closed, LineClient
from http_util import HttpConn

HOST = "127.0.0.1"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


@dataclass
class CertKey:
    cert: Path
    key: Path

    def der(self):
        return cert_der(self.cert)


@dataclass
class Pki:
    dir: Path
    ca: CertKey
    localhost: CertKey
    renewed: CertKey
    a: CertKey
    b: CertKey
    client: CertKey
    expired: CertKey
    other_key: Path
    inter: CertKey
    chained: CertKey
    rogue: CertKey
    wild: CertKey


def _openssl(*args, cwd=None, input=None):
    r = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, cwd=cwd, input=input,
                       timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr}")
    return r.stdout


def _genkey(path):
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path)
    os.chmod(path, 0o600)
    return path


SERVER_EXT = """
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {san}
"""

CA_EXT = """
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

CLIENT_EXT = """
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

# A minimal `openssl ca` set-up: the only way OpenSSL 3.0's command line can
# issue a certificate whose validity lies in the past.
CA_CNF = """
[ca]
default_ca = tca

[tca]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/issued
serial = {dir}/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
email_in_dn = no

[anything]
commonName = supplied
organizationName = optional

[server]
""" + SERVER_EXT


def _sign(d, name, subject, ext, issuer="ca"):
    """A key NAME.key and a certificate NAME.crt for SUBJECT signed by ISSUER (a name in D)."""
    key = _genkey(d / f"{name}.key")
    csr = d / f"{name}.csr"
    _openssl("req", "-new", "-key", key, "-subj", subject, "-out", csr)
    extfile = d / f"{name}.ext"
    extfile.write_text(ext)
    _openssl("x509", "-req", "-in", csr, "-CA", d / f"{issuer}.crt", "-CAkey", d / f"{issuer}.key",
             "-CAcreateserial", "-days", "30", "-sha256", "-extfile", extfile, "-out", d / f"{name}.crt")
    return CertKey(d / f"{name}.crt", key)


def make_pki(d):
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    ca_key = _genkey(d / "ca.key")
    _openssl("req", "-x509", "-new", "-key", ca_key, "-subj", "/O=Tusk Test/CN=Tusk Test CA", "-days", "30",
             "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", d / "ca.crt")
    ca = CertKey(d / "ca.crt", ca_key)
    local_san = "DNS:localhost, IP:127.0.0.1, IP:::1"
    localhost = _sign(d, "localhost", "/CN=localhost", SERVER_EXT.format(san=local_san))
    renewed = _sign(d, "renewed", "/O=Renewed/CN=localhost", SERVER_EXT.format(san=local_san))
    a = _sign(d, "a", "/CN=a.test", SERVER_EXT.format(san="DNS:a.test"))
    b = _sign(d, "b", "/CN=b.test", SERVER_EXT.format(san="DNS:b.test"))
    client = _sign(d, "client", "/O=Tusk Test/CN=client", CLIENT_EXT)

    # expired: valid 2020-01-01 .. 2020-01-02 only
    cadir = d / "cadb"
    (cadir / "issued").mkdir(parents=True, exist_ok=True)
    (cadir / "index.txt").write_text("")
    (cadir / "serial").write_text("1000\n")
    cnf = cadir / "ca.cnf"
    cnf.write_text(CA_CNF.format(dir=cadir, san=local_san))
    exp_key = _genkey(d / "expired.key")
    _openssl("req", "-new", "-key", exp_key, "-subj", "/CN=localhost", "-out", d / "expired.csr")
    _openssl("ca", "-batch", "-config", cnf, "-cert", ca.cert, "-keyfile", ca.key, "-in", d / "expired.csr",
             "-out", d / "expired.crt", "-notext", "-extensions", "server",
             "-startdate", "20200101000000Z", "-enddate", "20200102000000Z")
    expired = CertKey(d / "expired.crt", exp_key)

    other_key = _genkey(d / "other.key")
    inter = _sign(d, "inter", "/O=Tusk Test/CN=Tusk Test Intermediate", CA_EXT)
    chained = _sign(d, "chained", "/O=Chained/CN=localhost", SERVER_EXT.format(san=local_san), issuer="inter")
    rogue_key = _genkey(d / "rogue.key")
    _openssl("req", "-x509", "-new", "-key", rogue_key, "-subj", "/O=Tusk Test/CN=client", "-days", "30",
             "-sha256", "-addext", "extendedKeyUsage=clientAuth", "-out", d / "rogue.crt")
    rogue = CertKey(d / "rogue.crt", rogue_key)
    wild = _sign(d, "wild", "/CN=*.wild.test", SERVER_EXT.format(san="DNS:*.wild.test"))
    for p in d.iterdir():
        if p.is_file():
            os.chmod(p, 0o644)  # readable by a test that drops privileges; the dir stays private
    return Pki(d, ca, localhost, renewed, a, b, client, expired, other_key, inter, chained, rogue, wild)


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """The test PKI (see make_pki), made once per session."""
    return make_pki(tmp_path_factory.mktemp("pki"))


# ---- inspecting certificates --------------------------------------------------


def cert_der(path):
    """The DER bytes of the (first) certificate in the PEM file PATH."""
    return ssl.PEM_cert_to_DER_cert(Path(path).read_text())


def cert_subject(path):
    """`openssl x509 -subject` of PATH, e.g. 'CN = localhost'."""
    out = _openssl("x509", "-noout", "-subject", "-nameopt", "oneline", "-in", path)
    return out.strip().partition("=")[2].strip()


# ---- clients -------------------------------------------------------------------


def tls_context(pki, cert=None, verify=True, min_version=None, max_version=None, alpn=None, hostname_check=True):
    """A client SSLContext trusting the test CA. CERT: a CertKey to present."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(cafile=str(pki.ca.cert))
        ctx.check_hostname = hostname_check
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def https_conn(port, ctx, server_hostname="127.0.0.1", timeout=5.0, rcvbuf=None):
    """An http_util.HttpConn whose socket is a TLS connection (strict HTTP
    parsing, keep-alive; not is_open(), which peeks)."""
    c = HttpConn(port, timeout=timeout, connect=False)
    c.sock.close()
    c.sock = tls_connect(port, ctx, server_hostname, timeout=timeout, rcvbuf=rcvbuf)
    return c


def client_hello(server_hostname="localhost"):
    """The bytes of a real ClientHello (TLS records) as Python's ssl sends it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    data = outgoing.read()
    assert data[:1] == b"\x16" and len(data) > 100, data[:20]
    return data


class TlsClosed(Closed):
    """The peer closed (close_notify, EOF or reset) before a full line came."""


def tls_connect(port, ctx, server_hostname="127.0.0.1", host=HOST, timeout=5.0, rcvbuf=None):
    """A connected, handshaken ssl.SSLSocket (RCVBUF: SO_RCVBUF set before connecting)."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(timeout)
        raw.connect((host, port))
        return ctx.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


class TlsLineClient(LineClient):
    """daemon_util's LineClient over TLS."""

    def __init__(self, port, ctx, server_hostname="127.0.0.1", timeout=5.0):
        self.sock = tls_connect(port, ctx, server_hostname, timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def _fill(self, timeout):
        try:
            super()._fill(timeout)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            self.eof = True
            raise TlsClosed(f"connection closed; unread partial data {self.buf[:200]!r}") from None
        except Closed as e:
            raise TlsClosed(str(e)) from None


# ---- openssl s_client ------------------------------------------------------------


def s_client(port, *args, input=b"", timeout=10, host=HOST):
    """Runs `openssl s_client -connect HOST:PORT ARGS` with INPUT on stdin
    (stdin is closed after it; -ign_eof is not used, so s_client ends when
    stdin does unless ARGS keep it reading). Returns the CompletedProcess
    (text, stdout and stderr together in .out)."""
    cmd = [OPENSSL, "s_client", "-connect", f"{host}:{port}", *map(str, args)]
    r = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
    r.out = (r.stdout + r.stderr).decode(errors="replace")
    return r


SUBJECT_RE = re.compile(r"^subject=(.*)$", re.M)


def s_client_subject(out):
    """The server certificate's subject line from s_client output (str) or None."""
    m = SUBJECT_RE.search(out)
    return m.group(1).strip() if m else None


def handshake_ok(out):
    """True if s_client output shows a completed handshake with a cipher."""
    m = re.search(r"^\s*(New|Reused), (TLSv[\d.]+|SSLv3), Cipher is (\S+)", out, re.M)
    return bool(m) and m.group(3) != "(NONE)"
