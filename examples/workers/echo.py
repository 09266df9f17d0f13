#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A tusknetd worker in Python: answers every call with its payload.

tusknetd writes one JSON object per line on stdin,
    {"id": 7, "payload": "hello", "context": {"listener": "web", ...}}
("binary": true and a base64 payload when the message is not UTF-8), and
reads one answer line per call on stdout, in any order:
    {"id": 7, "reply": "hello"}    or    {"id": 7, "error": "why"}

Calls are handled as asyncio tasks, so a slow call does not hold up the
others; replace handle() with your own work. Answers are buffered and
flushed once per turn of the event loop rather than once per line, which
is what lets one process serve many thousands of calls a second.
Anything the program prints for humans belongs on stderr (the handler's
`stderr` setting decides where it goes); stdout is for answer lines only.
"""
import asyncio
import base64
import json
import sys


async def handle(payload, context):
    """The reply to one call (bytes when the payload was binary); raise to
    answer with an error."""
    return payload


class Output:
    """stdout, flushed once per turn of the loop that wrote to it."""

    def __init__(self, loop):
        self.loop = loop
        self.buf = sys.stdout.buffer
        self.pending = False

    def write(self, data):
        self.buf.write(data)
        if not self.pending:
            self.pending = True
            self.loop.call_soon(self.flush)

    def flush(self):
        self.pending = False
        self.buf.flush()


def answer(out, call_id, result=None, error=None):
    if error is not None:
        msg = {"id": call_id, "error": str(error)}
    elif isinstance(result, bytes):
        msg = {"id": call_id, "reply": base64.b64encode(result).decode(), "binary": True}
    else:
        msg = {"id": call_id, "reply": result}
    out.write(json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")


async def run_call(out, call):
    try:
        payload = call["payload"]
        if call.get("binary"):
                payload = base64.b64decode(payload)
        answer(out, call["id"], await handle(payload, call.get("context", {})))
    except Exception as e:  # the caller gets "Error: ..." instead of a timeout
        answer(out, call["id"], error=e)


async def main():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = Output(loop)
    tasks = set()
    while True:
        line = await reader.readline()
        if not line:
            break  # EOF: tusknetd wants us gone once the calls in flight are answered
        call = json.loads(line)
        task = asyncio.ensure_future(run_call(out, call))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    out.flush()


if __name__ == "__main__":
    asyncio.run(main())
