# SPDX-License-Identifier: MIT
"""A real browser against the daemon: headless Chromium loads a page served
by the daemon's own file handler, and the page's script drives the WebSocket
endpoints of the same listener.

The page (written to a temp www dir) opens ws://<location.host>/echo, sends a
text, a unicode text, a 100 KB text and a nonce that the test put in the
page's query string, and checks that each comes back unchanged; it then joins
/chat (a broadcast endpoint with origins: ["same"], so Chromium's Origin
header is checked against Host) from two WebSockets and checks that a message
from one reaches the other and not its sender. It writes the outcome into
<pre id=result> and document.title: "PASS echo=<nonce as echoed by the
server> ..." or "FAIL: reason".

Chromium runs the page with --remote-debugging-port=0, and the test polls
the page's title through the DevTools HTTP endpoint (/json/list) until it
says PASS or FAIL, under a wall-clock timeout; Chromium runs in its own
process group, which is killed at the end. (--dump-dom with
--virtual-time-budget does not work here: virtual time does not wait for
WebSocket traffic, so the DOM was dumped, and the page torn down, before the
second /chat socket had opened.)

The test also reads the daemon's log: three WebSockets were
opened (one on /echo, two on /chat), and the nonce came back in the
page's result, which only the server's echo could have put there. Skipped only if Chromium is not installed and
cannot be installed with apt-get.
"""
import html
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import pytest

from daemon_util import HOST, daemon  # noqa: F401  (daemon is a fixture)

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-proxy-server",
]

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

CONFIG = """
[daemon]
control_socket: ""
shutdown_timeout: "2s"

[handlers]
site { type: "file" root: "{WWW}" }
echo { type: "echo" }
chat { type: "broadcast" }

[listeners]
web {
    protocol: "http"
    listen: "127.0.0.1:PORT_WEB"
    routes { "GET /*": "site" }
    websocket {
        "/echo": "echo"
        "/chat": { handler: "chat" origins: ["same"] }
    }
}
"""

PAGE = r"""<!doctype html>
<html>
<head><meta charset="utf-8"><title>running</title></head>
<body>
<pre id="result"></pre>
<script>
"use strict";
const out = document.getElementById("result");
function finish(text) {
  if (out.textContent) return;  // first outcome wins
  out.textContent = text;
  document.title = text;
}

// A WebSocket with a message queue, so that nothing that arrives between two
// awaits is lost. No timers anywhere: the test's wall-clock timeout bounds it.
function open(path) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket("ws://" + location.host + path);
    const q = { ws, msgs: [], waiting: null, closed: null };
    ws.onopen = () => resolve(q);
    ws.onerror = () => reject(new Error("error on " + path));
    ws.onmessage = (e) => {
      if (q.waiting) { const w = q.waiting; q.waiting = null; w.resolve(e.data); }
      else q.msgs.push(e.data);
    };
    ws.onclose = (e) => {
      q.closed = "closed " + path + " code " + e.code;
      if (q.waiting) { const w = q.waiting; q.waiting = null; w.reject(new Error(q.closed)); }
      reject(new Error(q.closed));
    };
  });
}
function recv(q) {
  if (q.msgs.length) return Promise.resolve(q.msgs.shift());
  if (q.closed) return Promise.reject(new Error(q.closed));
  return new Promise((resolve, reject) => { q.waiting = { resolve, reject }; });
}
function preview(s) { return JSON.stringify(s.length > 40 ? s.slice(0, 40) + "...(" + s.length + ")" : s); }

async function main() {
  const nonce = new URLSearchParams(location.search).get("nonce") || "none";
  const echo = await open("/echo");
  const big = "0123456789abcdef".repeat(6400);  // 102,400 characters
  const sent = ["hello from chromium", "ünïcödé ✓ 日本語 🦣", big, "nonce:" + nonce];
  let echoed = [];
  for (const m of sent) {
    echo.ws.send(m);
    const got = await recv(echo);
    if (typeof got !== "string") throw new Error("echo: non-text reply for " + preview(m));
    if (got !== m) throw new Error("echo: sent " + preview(m) + " got " + preview(got));
    echoed.push(got);
  }
  echo.ws.close(1000);

  const a = await open("/chat");
  const b = await open("/chat");
  const msg = "chat from a " + nonce;
  a.ws.send(msg);
  const atB = await recv(b);
  if (atB !== msg) throw new Error("chat: b got " + preview(atB));
  b.ws.send("reply from b");
  const atA = await recv(a);
  if (atA !== "reply from b") throw new Error("chat: a got " + preview(atA) + " (its own message echoed?)");
  if (a.msgs.length || b.msgs.length) throw new Error("chat: extra messages " + JSON.stringify([a.msgs, b.msgs]));
  a.ws.close(1000);
  b.ws.close(1000);

  const lastEcho = echoed[echoed.length - 1];
  finish("PASS echo=" + lastEcho.slice("nonce:".length) + " count=" + echoed.length +
         " bigLen=" + echoed[2].length + " chat=" + JSON.stringify(atB));
}
main().catch((e) => finish("FAIL: " + (e && e.message ? e.message : String(e))));
</script>
</body>
</html>
"""


def find_chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def ensure_chromium():
    """Path of Chromium; installs Debian's package if missing; skips if that fails."""
    path = find_chromium()
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "install", "-y", "chromium"],
                    ["sh", "-c", "apt-get update && apt-get install -y chromium"]):
            try:
                subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
            except (OSError, subprocess.TimeoutExpired):
                pass
            path = find_chromium()
            if path:
                return path
    pytest.skip("chromium is not installed and could not be installed with apt-get")


def kill_group(proc):
    """SIGKILL the process group PROC leads (Chromium's zygote, renderers, ...)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


class Chromium:
    """Headless Chromium on one URL, with a DevTools port (0: it picks one and
    writes it to <profile>/DevToolsActivePort). The page's title is read from
    the DevTools HTTP endpoint /json/list, so no DevTools WebSocket is needed.
    Runs in its own process group (session), which stop() kills."""

    def __init__(self, binary, url):
        self.profile = tempfile.mkdtemp(prefix="tn-chromium-")
        self.url = url
        self.err_path = os.path.join(self.profile, "stderr.log")
        self._err = open(self.err_path, "wb")
        cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0", url]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._err, stderr=self._err,
                                     start_new_session=True)
        self.port = None

    def stderr(self, n=4000):
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode(errors="replace")[-n:]
        except OSError:
            return ""

    def _devtools_port(self):
        try:
            with open(os.path.join(self.profile, "DevToolsActivePort")) as f:
                first = f.readline().strip()
        except OSError:
            return None
        return int(first) if first.isdigit() else None

    def title(self):
        """Title of the page target showing self.url (None until there is one)."""
        if self.port is None:
            self.port = self._devtools_port()
            if self.port is None:
                return None
        try:
            with NO_PROXY.open(f"http://{HOST}:{self.port}/json/list", timeout=2) as r:
                targets = json.load(r)
        except (OSError, ValueError):
            return None
        for t in targets:
            if t.get("type") == "page" and t.get("url", "").startswith(self.url.split("?")[0]):
                return html.unescape(t.get("title") or "")  # /json/list escapes it
        return None

    def wait_title(self, done, timeout):
        """Polls the title until done(title) or TIMEOUT; returns the last title."""
        deadline = time.monotonic() + timeout
        title = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            title = self.title()
            if title is not None and done(title):
                break
            time.sleep(0.05)
        return title

    def stop(self):
        kill_group(self.proc)
        self._err.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def test_browser_websocket_echo_and_chat(daemon, tmp_path):  # noqa: F811
    chromium = ensure_chromium()
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text(PAGE, encoding="utf-8")
    d = daemon(CONFIG.replace("{WWW}", str(www)))
    port = d.ports["WEB"]
    nonce = secrets.token_hex(8)
    # the file handler serves the page (a clear failure here rather than a
    # browser error page and a timeout)
    with NO_PROXY.open(f"http://{HOST}:{port}/", timeout=5) as r:
        assert r.status == 200 and b"new WebSocket(" in r.read(), r.status

    t0 = time.monotonic()
    browser = Chromium(chromium, f"http://{HOST}:{port}/?nonce={nonce}")
    try:
        result = browser.wait_title(lambda t: t.startswith(("PASS", "FAIL")), timeout=60)
        rc = browser.proc.poll()
        err = browser.stderr()
    finally:
        browser.stop()
    print(f"chromium: result after {time.monotonic() - t0:.2f}s")

    assert result and result.startswith(("PASS", "FAIL")), (
        f"no result from the page (title {result!r}, chromium exit {rc})"
        f"\n--- chromium stderr ---\n{err}\n--- daemon log ---\n{d.log_tail(40)}")
    # the nonce came back through the server's echo; the big message intact
    assert result == f'PASS echo={nonce} count=4 bigLen=102400 chat="chat from a {nonce}"', (
        f"page reported: {result}\n--- daemon log ---\n{d.log_tail(40)}")

    # the daemon saw the WebSockets: one on /echo, two on /chat
    assert d.wait_log(r"(?s)(websocket \d+ opened.*){3}", timeout=3), d.log_tail(60)
    opened = re.findall(r"websocket \d+ opened: web (/\w+)", d.log())
    assert sorted(opened) == ["/chat", "/chat", "/echo"], opened
    assert d.alive()
