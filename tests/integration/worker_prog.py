#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A worker program for test_worker.py: the payload's first word says what
to do with the call.

  hold KEY TEXT    answer TEXT only once `release KEY` came (out of order)
  release KEY      answer "released", then the held call
  sleep MS TEXT    answer TEXT after MS milliseconds (other calls go on)
  ignore           never answer this call (the process keeps serving)
  block S          stop the whole process for S seconds (hung)
  crash            "dying" on stderr, then exit 3 without answering
  pid              the process id
  version          $WORKER_VERSION
  ctx              the call's context as JSON
  error TEXT       answer with an error
  garbage TEXT     a line that is not JSON, then TEXT
  badtype          {"id":N,"reply":123}
  strayid TEXT     an answer for an id nobody asked, then TEXT
  created TEXT     TEXT with status 201 and headers (over HTTP)
  notfound         an error with status 404
  badheader        a header whose value would split the response
  huge N           a reply of N bytes
  endless          output without a newline that never ends
  anything else    the payload back (binary stays binary)
"""
import asyncio
import base64
import json
import os
import sys
import time

held = {}


def send(obj):
    sys.stdout.buffer.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
    sys.stdout.buffer.flush()


def raw(data):
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


async def call(c):
    cid = c["id"]
    payload = c["payload"]
    if c.get("binary"):
        send({"id": cid, "reply": payload, "binary": True})
        return
    word, _, rest = payload.partition(" ")
    if word == "hold":
        key, _, text = rest.partition(" ")
        fut = asyncio.get_running_loop().create_future()
        held[key] = fut
        await fut
        send({"id": cid, "reply": text})
    elif word == "release":
        send({"id": cid, "reply": "released"})
        held.pop(rest).set_result(None)
    elif word == "sleep":
        ms, _, text = rest.partition(" ")
        await asyncio.sleep(int(ms) / 1000)
        send({"id": cid, "reply": text})
    elif word == "ignore":
        pass
    elif word == "block":
        time.sleep(float(rest))
        send({"id": cid, "reply": "unblocked"})
    elif word == "crash":
        sys.stderr.write("dying\n")
        sys.stderr.flush()
        os._exit(3)
    elif word == "pid":
        send({"id": cid, "reply": str(os.getpid())})
    elif word == "version":
        send({"id": cid, "reply": os.environ.get("WORKER_VERSION", "")})
    elif word == "ctx":
        send({"id": cid, "reply": json.dumps(c["context"], sort_keys=True)})
    elif word == "error":
        send({"id": cid, "error": rest})
    elif word == "garbage":
        raw(b"this is not json\n")
        send({"id": cid, "reply": rest})
    elif word == "badtype":
        raw(b'{"id":%d,"reply":123}\n' % cid)
    elif word == "strayid":
        send({"id": cid + 1000000, "reply": "stray"})
        send({"id": cid, "reply": rest})
    elif word == "created":
        send({"id": cid, "reply": rest, "status": 201,
              "headers": {"Content-Type": "application/json", "X-Worker": "yes", "x-worker": "again"}})
    elif word == "notfound":
        send({"id": cid, "error": "no such thing", "status": 404})
    elif word == "badheader":
        send({"id": cid, "reply": "x", "headers": {"X-Evil": "a\r\nSet-Cookie: stolen=1"}})
    elif word == "huge":
        send({"id": cid, "reply": "x" * int(rest)})
    elif word == "endless":
        while True:
            raw(b"y" * 65536)
            await asyncio.sleep(0)
    else:
        send({"id": cid, "reply": payload})


async def main():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks = set()
    while True:
        line = await reader.readline()
        if not line:
            break
        t = asyncio.ensure_future(call(json.loads(line)))
        tasks.add(t)
        t.add_done_callback(tasks.discard)


asyncio.run(main())
