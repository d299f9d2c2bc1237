#!/usr/bin/env python3
"""A chat member that reads as fast as plain Python can (`recv(65536)` in
a loop, as a student's first reader would) and checks what it reads.

Usage: chat_reader.py HOST PORT COUNT [TRICKLE_BYTES_PER_S]

It joins the room, prints `ready NICK` once its welcome is read, then
counts relayed lines of the form `[SENDER] mNNNNNN ...`: for each sender,
the numbers must run 0, 1, 2, ... with nothing missing or repeated. It
prints every `* ` notice it sees as `notice TEXT`, and when COUNT such
lines have arrived, `got COUNT in order` and exits 0. Anything else (a
gap, a reset, end of stream, 60 s without a line) is printed as
`error: ...` with exit 1.

With TRICKLE_BYTES_PER_S it is instead a reader that keeps reading, but
slowly: that many bytes a second (in 1-second steps), printing `read N`
(its running total) after each step, until the server ends the
connection; it then prints `closed after N bytes` and exits 0.
"""
import socket
import sys
import time


def main():
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    trickle = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    sock = socket.create_connection((host, port))
    sock.settimeout(60)
    buf = b""
    while b"\n" not in buf:
        data = sock.recv(65536)
        if not data:
            print("error: no welcome", flush=True)
            return 1
        buf += data
    welcome, buf = buf.split(b"\n", 1)
    nick = welcome.split(b"you are ", 1)[1].split(b" ", 1)[0].decode()
    print(f"ready {nick}", flush=True)
    if trickle:
        return read_slowly(sock, trickle, len(buf))
    seen = {}
    got = 0
    while got < count:
        try:
            data = sock.recv(65536)
        except OSError as e:
            print(f"error: {e} after {got} lines", flush=True)
            return 1
        if not data:
            print(f"error: end of stream after {got} lines", flush=True)
            return 1
        buf += data
        lines = buf.split(b"\n")
        buf = lines.pop()
        for line in lines:
            if got == count:
                break
            if line.startswith(b"* "):
                print("notice " + line.decode("utf-8", "replace"), flush=True)
                continue
            sender, _, body = line.partition(b"] m")
            if not body[:6].isdigit():
                print(f"error: unexpected line {line[:80]!r}", flush=True)
                return 1
            number = int(body[:6])
            want = seen.get(sender, 0)
            if number != want:
                print(f"error: from {sender[1:].decode()} line {number}, "
                      f"expected {want}", flush=True)
                return 1
            seen[sender] = want + 1
            got += 1
    print(f"got {got} in order", flush=True)
    return 0


def read_slowly(sock, per_s, total):
    while True:
        try:
            data = sock.recv(per_s)
        except OSError:
            break
        if not data:
            break
        total += len(data)
        print(f"read {total}", flush=True)
        time.sleep(1)
    print(f"closed after {total} bytes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
