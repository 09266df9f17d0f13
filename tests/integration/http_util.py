# SPDX-License-Identifier: MIT
"""Raw-socket HTTP/1.1 client helpers for the HTTP integration tests.

Nothing here trusts the daemon: responses are parsed strictly (CRLF line
endings, one status line, token header names, a body framed by exactly one of
Content-Length, chunked transfer coding, or the close), so a malformed
response fails the test that reads it.

- ``HttpConn(port)``: one connection. ``send(raw)``, ``request(...)`` (sends),
  ``read_response(head=...)`` (reads exactly one response, keeping whatever
  follows for the next call, so keep-alive and pipelining work),
  ``exchange(...)`` (both), ``wait_closed()``.
- ``build_request(...)``: the bytes of one request.
- ``chunked(body, sizes)``: a body in the chunked transfer coding.
- ``http_get(port, path, ...)``: one request on a fresh connection.
- ``curl(...)`` / ``curl_response(...)``: curl with ``-sS -i`` and the
  parsed final response.
- ``assert_valid(resp)``: the defaults every response must carry
  (Server: tusknetd, an IMF-fixdate Date, a framed body).
- ``assert_small_error(resp, status)``: an error answer that is short,
  well-formed text.
- ``stats(path)``: the control socket's ``stats`` JSON.
- ``http_served(port)``: waits until the listener answers HTTP.
- ``vanishing_ws_clients(...)``: a crowd of WebSocket clients that send large
  messages, read some echoes and vanish mid-exchange.
"""
import asyncio
import json
import random
import re
import socket
import struct
import subprocess
import time

HOST = "127.0.0.1"

STATUS_RE = re.compile(rb"^HTTP/(1)\.([01]) ([1-5][0-9][0-9]) ?([^\r\n]*)$")
TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
IMF_DATE_RE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    r"\d{2}:\d{2}:\d{2} GMT$"
)


class HttpError(AssertionError):
    """The daemon sent something that is not a well-formed HTTP response."""


class PeerClosed(Exception):
    """The connection closed (EOF or reset) before a full response came."""


class Response:
    def __init__(self, version, status, reason, headers, body, raw_head, framing, trailers=None):
        self.version = version  # "HTTP/1.1"
        self.status = status  # int
        self.reason = reason  # str
        self.headers = headers  # [(name, value)] as received (str)
        self.body = body  # bytes (de-chunked)
        self.raw_head = raw_head  # bytes of the status line and headers, with the blank line
        self.framing = framing  # "length", "chunked", "close" or "none"
        self.trailers = trailers or []
        self.wire_len = 0  # bytes this response took on the wire

    def header(self, name, default=None):
        """The first value of header NAME (case-insensitive), or DEFAULT."""
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return default

    def headers_all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def has(self, name):
        return bool(self.headers_all(name))

    def tokens(self, name):
        """Comma-separated values of every NAME header, lower-cased and stripped."""
        out = []
        for v in self.headers_all(name):
            out += [t.strip().lower() for t in v.split(",") if t.strip()]
        return out

    @property
    def text(self):
        return self.body.decode("utf-8", errors="replace")

    def __repr__(self):
        hs = "".join(f"\n  {k}: {v}" for k, v in self.headers)
        b = self.body[:300]
        more = f" ... ({len(self.body)} bytes)" if len(self.body) > 300 else ""
        return f"<{self.version} {self.status} {self.reason}{hs}\n  body={b!r}{more}>"


def build_request(method, target, headers=None, body=None, version="HTTP/1.1", host=True, port=None):
    """The bytes of one request. HEADERS is a dict or a list of pairs (kept in
    order, duplicates allowed). Content-Length is added for a BODY unless a
    Content-Length or Transfer-Encoding header is given. Host is added for
    HTTP/1.1 unless HOST is False or a Host header is given."""
    if isinstance(headers, dict):
        headers = list(headers.items())
    headers = list(headers or [])
    names = {k.lower() for k, _ in headers}
    if body is not None and isinstance(body, str):
        body = body.encode()
    out = [f"{method} {target} {version}".encode()]
    if host and "host" not in names and version == "HTTP/1.1":
        out.append(f"Host: {HOST}:{port}".encode() if port else b"Host: localhost")
    for k, v in headers:
        k = k.encode() if isinstance(k, str) else k
        v = v.encode() if isinstance(v, str) else v
        out.append(k + b": " + v)
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        out.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(out) + b"\r\n\r\n" + (body or b"")


def chunked(body, sizes=(4096,), ext=False, trailers=None):
    """BODY in the chunked transfer coding, cut into chunks whose sizes cycle
    through SIZES; EXT adds a chunk extension to every chunk."""
    if isinstance(body, str):
        body = body.encode()
    out = []
    i = k = 0
    while i < len(body):
        n = sizes[k % len(sizes)]
        k += 1
        piece = body[i : i + n]
        i += len(piece)
        out.append(b"%x%s\r\n%s\r\n" % (len(piece), b";name=value" if ext else b"", piece))
    out.append(b"0\r\n")
    for name, value in (trailers or []):
        out.append(f"{name}: {value}\r\n".encode())
    out.append(b"\r\n")
    return b"".join(out)


class HttpConn:
    """One client connection on a real socket."""

    def __init__(self, port, host=HOST, source=None, timeout=5.0, rcvbuf=None, connect=True):
        self.port = port
        self.host = host
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        if connect:
            self.sock.connect((host, port))
        self.buf = b""
        self.eof = False
        self.sent = 0  # bytes written
        self.received = 0  # bytes read

    # -- plumbing

    def local_addr(self):
        h, p = self.sock.getsockname()[:2]
        return f"{h}:{p}"

    def fileno(self):
        return self.sock.fileno()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)
        self.sent += len(data)

    def _fill(self, deadline, what):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout(f"timed out waiting for {what}; have {self.buf[:300]!r}")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 20)
        except ConnectionResetError:
            chunk = b""
        except socket.timeout:
            raise socket.timeout(f"timed out waiting for {what}; have {self.buf[:300]!r}") from None
        if not chunk:
            self.eof = True
            raise PeerClosed(f"connection closed while waiting for {what}; have {self.buf[:300]!r}")
        self.received += len(chunk)
        self.buf += chunk

    def _take(self, n, deadline, what):
        while len(self.buf) < n:
            self._fill(deadline, what)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _line(self, deadline, what, limit=65536):
        while b"\r\n" not in self.buf:
            if len(self.buf) > limit:
                raise HttpError(f"{what}: no CRLF within {limit} bytes: {self.buf[:200]!r}")
            self._fill(deadline, what)
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    # -- requests and responses

    def request(self, method, target, headers=None, body=None, version="HTTP/1.1", host=True):
        self.send(build_request(method, target, headers, body, version, host, self.port))

    def read_head(self, timeout=None):
        """Status line and headers of the next response: (version, status,
        reason, headers, raw)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise HttpError(f"response head over 1 MB: {self.buf[:200]!r}")
            self._fill(deadline, "a response head")
        raw, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        for ln in lines:
            if b"\n" in ln or b"\r" in ln:
                raise HttpError(f"bare CR or LF in the response head: {raw[:500]!r}")
        m = STATUS_RE.match(lines[0])
        if not m:
            raise HttpError(f"bad status line {lines[0][:200]!r} (head {raw[:300]!r})")
        headers = []
        for ln in lines[1:]:
            name, colon, value = ln.partition(b":")
            if not colon or not TOKEN_RE.match(name):
                raise HttpError(f"bad header line {ln[:200]!r} in {raw[:500]!r}")
            headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        version = "HTTP/1." + m.group(2).decode()
        return version, int(m.group(3)), m.group(4).decode("latin-1"), headers, raw + b"\r\n\r\n"

    def read_response(self, head=False, timeout=None, allow_interim=False):
        """The next complete response. HEAD: the request was HEAD (no body).
        Interim (1xx) responses are returned as they are when ALLOW_INTERIM,
        otherwise skipped. Raises PeerClosed if the peer closes first."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        before = self.received - len(self.buf)
        while True:
            version, status, reason, headers, raw = self.read_head(max(0.001, deadline - time.monotonic()))
            if 100 <= status < 200:
                if status == 101 or allow_interim:
                    r = Response(version, status, reason, headers, b"", raw, "none")
                    r.wire_len = len(raw)
                    return r
                continue
            break
        resp = Response(version, status, reason, headers, b"", raw, "none")
        te = [t for t in resp.tokens("Transfer-Encoding")]
        cls = resp.headers_all("Content-Length")
        if te and cls:
            raise HttpError(f"response with both Transfer-Encoding and Content-Length: {resp!r}")
        if len(cls) > 1:
            raise HttpError(f"response with {len(cls)} Content-Length headers: {resp!r}")
        if cls and not re.fullmatch(r"[0-9]+", cls[0]):
            raise HttpError(f"bad Content-Length {cls[0]!r}")
        if head or status in (204, 304):
            if status == 204 and (te or (cls and cls[0] != "0")):
                raise HttpError(f"204 with a body framing: {resp!r}")
            resp.framing = "none"
        elif te:
            if te[-1] != "chunked":
                raise HttpError(f"unexpected Transfer-Encoding {te}: {resp!r}")
            resp.framing = "chunked"
            body = []
            while True:
                line = self._line(deadline, "a chunk size")
                size_txt = line.split(b";", 1)[0].strip()
                if not re.fullmatch(rb"[0-9A-Fa-f]{1,15}", size_txt):
                    raise HttpError(f"bad chunk size line {line[:100]!r}")
                n = int(size_txt, 16)
                if n == 0:
                    break
                body.append(self._take(n, deadline, "chunk data"))
                if self._take(2, deadline, "the CRLF after a chunk") != b"\r\n":
                    raise HttpError("chunk data not followed by CRLF")
            while True:
                line = self._line(deadline, "trailers")
                if not line:
                    break
                n, _, v = line.partition(b":")
                resp.trailers.append((n.decode("latin-1"), v.strip().decode("latin-1")))
            resp.body = b"".join(body)
        elif cls:
            resp.framing = "length"
            resp.body = self._take(int(cls[0]), deadline, "the response body")
        else:
            resp.framing = "close"
            while not self.eof:
                try:
                    self._fill(deadline, "the close ending a body")
                except PeerClosed:
                    break
            resp.body, self.buf = self.buf, b""
        resp.wire_len = (self.received - len(self.buf)) - before
        return resp

    def exchange(self, method, target, headers=None, body=None, version="HTTP/1.1", host=True, timeout=None):
        self.request(method, target, headers, body, version, host)
        return self.read_response(head=(method == "HEAD"), timeout=timeout)

    def wait_closed(self, timeout=3.0):
        """True if the peer closes (EOF or reset) within TIMEOUT with nothing
        more to read; raises HttpError if it sends more bytes instead."""
        deadline = time.monotonic() + timeout
        if self.buf:
            raise HttpError(f"unexpected bytes after the response: {self.buf[:300]!r}")
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except ConnectionResetError:
                self.eof = True
                return True
            if not chunk:
                self.eof = True
                return True
            raise HttpError(f"unexpected bytes after the response: {chunk[:300]!r}")
        return True

    def is_open(self, wait=0.1):
        """True if the peer has not closed within WAIT (pending data counts as open)."""
        if self.eof:
            return False
        if self.buf:
            return True
        self.sock.settimeout(max(wait, 0.001))
        try:
            chunk = self.sock.recv(65536, socket.MSG_PEEK)
        except (socket.timeout, BlockingIOError):
            return True
        except ConnectionResetError:
            return False
        finally:
            self.sock.settimeout(self.timeout)
        return bool(chunk)

    def read_available(self, wait=0.3):
        """Whatever arrives within WAIT (bytes); EOF or reset ends it."""
        deadline = time.monotonic() + wait
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                self.eof = True
                break
            if not chunk:
                self.eof = True
                break
            self.received += len(chunk)
            self.buf += chunk
        data, self.buf = self.buf, b""
        return data

    def reset(self):
        """Close with SO_LINGER 0: the peer sees a RST."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()


def http_get(port, target, headers=None, method="GET", body=None, version="HTTP/1.1", timeout=5.0, source=None):
    """One request on a fresh connection; returns the Response."""
    with HttpConn(port, timeout=timeout, source=source) as c:
        return c.exchange(method, target, headers, body, version)


def raw_exchange(port, data, timeout=3.0, head=False):
    """Sends DATA on a fresh connection and reads one response. Returns
    (response, closed_after): whether the daemon closed the connection after
    it (checked for up to 2 s)."""
    with HttpConn(port, timeout=timeout) as c:
        c.send(data)
        r = c.read_response(head=head, timeout=timeout)
        closed = c.wait_closed(2.0)
        return r, closed


def http_served(port, timeout=5.0):
    """True once a fresh connection gets any HTTP response to GET /."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with HttpConn(port, timeout=0.5) as c:
                c.exchange("GET", "/", timeout=max(0.1, min(1.0, deadline - time.monotonic())))
                return True
        except (OSError, PeerClosed, HttpError):
            pass
        time.sleep(0.05)
    return False


# ---- checks -----------------------------------------------------------------


def assert_valid(resp, status=None):
    """The headers every tusknetd response carries."""
    if status is not None:
        assert resp.status == status, f"expected {status}, got {resp!r}"
    server = resp.header("Server")
    assert server is not None and server.startswith("tusknetd"), f"Server header should be tusknetd: {resp!r}"
    date = resp.header("Date")
    assert date is not None and IMF_DATE_RE.match(date), f"Date header missing or not IMF-fixdate: {resp!r}"
    if resp.framing == "close":
        raise AssertionError(f"response body framed by the close (no Content-Length, not chunked): {resp!r}")
    if resp.framing == "none" and not (100 <= resp.status < 200 or resp.status in (204, 304)):
        # HEAD: headers must still say how long the body would be
        assert resp.has("Content-Length") or "chunked" in resp.tokens("Transfer-Encoding"), (
            f"HEAD response without Content-Length: {resp!r}"
        )
    return resp


def assert_small_error(resp, status, max_body=512):
    """An error answer: that status, well-formed, a short text body."""
    assert_valid(resp, status)
    assert resp.framing == "length", f"error responses should carry Content-Length: {resp!r}"
    assert len(resp.body) <= max_body, f"error body over {max_body} bytes: {resp!r}"
    ctype = resp.header("Content-Type", "")
    if resp.body:
        assert ctype.startswith("text/"), f"error body should be text: {resp!r}"
    return resp


# ---- curl -------------------------------------------------------------------


def curl(args, input=None, timeout=30):
    """Runs curl -sS -i ARGS; returns the CompletedProcess (bytes output)."""
    cmd = ["curl", "-sS", "-i", "--max-time", str(int(timeout) - 2)] + [str(a) for a in args]
    return subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)


def parse_responses(data):
    """Every response in curl -i output: interim responses, redirects
    followed with -L, and the final one (whose body is the rest)."""
    out = []
    while data.startswith(b"HTTP/"):
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise HttpError(f"curl output without a complete head: {data[:300]!r}")
        lines = head.split(b"\r\n")
        m = STATUS_RE.match(lines[0])
        if not m:
            raise HttpError(f"bad status line in curl output {lines[0]!r}")
        headers = []
        for ln in lines[1:]:
            n, _, v = ln.partition(b":")
            headers.append((n.decode("latin-1"), v.strip().decode("latin-1")))
        r = Response("HTTP/1." + m.group(2).decode(), int(m.group(3)), m.group(4).decode("latin-1"), headers, b"",
                      head + sep, "curl")
        out.append(r)
        data = rest
        if r.status < 200 or (300 <= r.status < 400 and rest.startswith(b"HTTP/")):
            continue  # interim response, or a redirect curl followed
        r.body = rest
        break
    return out


def curl_response(args, input=None, timeout=30):
    """The final response of curl -sS -i ARGS (asserting curl succeeded)."""
    p = curl(args, input=input, timeout=timeout)
    assert p.returncode == 0, f"curl {args} failed ({p.returncode}): {p.stderr.decode(errors='replace')}"
    rs = parse_responses(p.stdout)
    assert rs, f"curl printed no response: {p.stdout[:300]!r}"
    return rs[-1]


# ---- control socket -----------------------------------------------------------


def stats(path, timeout=3.0):
    """One `stats` answer from the control socket at PATH (a dict)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        s.sendall(b"stats\n")
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    return json.loads(buf.split(b"\n", 1)[0])


def listener_stats(path, name):
    return stats(path)["listeners"][name]


def wait_stats(path, name, pred, timeout=3.0):
    """Polls the listener's stats until PRED(stats) is true; returns the last stats."""
    deadline = time.monotonic() + timeout
    while True:
        st = listener_stats(path, name)
        if pred(st) or time.monotonic() >= deadline:
            return st
        time.sleep(0.05)


def ctl_socket_path(tmp_path):
    """A control socket path in TMP_PATH (short enough for sun_path)."""
    p = str(tmp_path / "ctl.sock")
    if len(p) > 100:
        import tempfile

        p = tempfile.mkdtemp(prefix="tnhttp", dir="/tmp") + "/ctl.sock"
    return p


UPGRADE = (b"GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


async def vanishing_ws_clients(url, port, path, clients=60, raw=20, seed=0, ssl=None):
    """CLIENTS WebSocket clients at URL at once send 1-6 messages of up to 1 MB,
    read about half of the echoes and vanish (TCP abort) mid-exchange one
    time in five, while RAW more connections to PORT send an upgrade request
    for PATH and vanish before the answer."""
    import websockets  # only the WebSocket tests need it

    rnd = random.Random(seed)

    async def one():
        try:
            async with websockets.connect(url, ssl=ssl, max_size=None) as ws:
                for _ in range(rnd.randint(1, 6)):
                    await ws.send(b"x" * rnd.choice([10, 1000, 100_000, 1_000_000]))
                    if rnd.random() < 0.2:
                        ws.transport.abort()
                        return
                    if rnd.random() < 0.5:
                        await asyncio.wait_for(ws.recv(), 10)
        except (websockets.ConnectionClosed, OSError, asyncio.TimeoutError):
            pass

    async def upgrade_then_vanish():
        _, w = await asyncio.open_connection("127.0.0.1", port, ssl=ssl,
                                             server_hostname="127.0.0.1" if ssl else None)
        w.write(UPGRADE % path.encode())
        await w.drain()
        w.transport.abort()

    await asyncio.gather(*[one() for _ in range(clients)], *[upgrade_then_vanish() for _ in range(raw)])
