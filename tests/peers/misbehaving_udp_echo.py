"""A UDP echo server that misbehaves on purpose, for `sockit ping` tests.

Not a seed program: it shows what real networks and servers do to replies.
  --twice         answer every datagram twice (duplicates)
  --drop-every N  answer nothing to every Nth datagram (1-based: N, 2N, ...)
  --garbage       send a datagram that is no probe before each answer
Prints `listening on 127.0.0.1:PORT` first, like every test server.
"""
import argparse
from socket import socket, AF_INET, SOCK_DGRAM

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("--twice", action="store_true")
parser.add_argument("--drop-every", type=int, default=0)
parser.add_argument("--garbage", action="store_true")
args = parser.parse_args()

server = socket(AF_INET, SOCK_DGRAM)
server.bind(("127.0.0.1", args.port))
print(f"listening on 127.0.0.1:{server.getsockname()[1]}", flush=True)
count = 0
while True:
    message, client = server.recvfrom(65536)
    count += 1
    if args.drop_every and count % args.drop_every == 0:
        continue
    if args.garbage:
        server.sendto(b"\xff\xfenot a probe", client)
    for _ in range(2 if args.twice else 1):
        server.sendto(message, client)
