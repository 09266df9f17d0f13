#!/bin/sh
# SPDX-License-Identifier: MIT
# A tusknetd worker in POSIX shell: answers every call with its payload.
#
# tusknetd writes one JSON call per line on stdin, always with its keys in
# this order:
#   {"id":7,"payload":"hello","context":{...}}
#   {"id":8,"payload":"aGk=","binary":true,"context":{...}}
# and this script answers each with one line on stdout:
#   {"id":7,"reply":"hello"}
#
# The payload is copied as the JSON string the daemon wrote (escapes
# included), so every payload comes back exactly, binary ones too. Limits:
# calls are answered one at a time, in order (one sed per call, about a
# millisecond each); and a program that wants to compute on the payload gets
# it still JSON-escaped: only simple payloads (no '"', '\' or control
# characters) read the same escaped and unescaped. For real work, use a
# language with a JSON library (see echo.py).
while IFS= read -r line; do
    printf '%s\n' "$line" |
        sed -E 's/^\{"id":([0-9]+),"payload":("([^"\\]|\\.)*")(,"binary":true)?,.*$/{"id":\1,"reply":\2\4}/'
done
