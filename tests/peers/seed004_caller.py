"""Seed 004 task 7 caller.py: 'broadcast message' to <broadcast>:37021 with
SO_BROADCAST, then prints every reply until a 3 s timeout, once a second.
Bounded by --rounds; --timeout shortens the seed's 3 s wait for tests."""
import argparse
import socket
import time

ap = argparse.ArgumentParser()
ap.add_argument('--port', type=int, default=37021)
ap.add_argument('--rounds', type=int, default=1)
ap.add_argument('--timeout', type=float, default=3)
args = ap.parse_args()

host = '<broadcast>'
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
u.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
u.settimeout(args.timeout)
print("UDP Broadcast to check devices")
for _ in range(args.rounds):
    u.sendto(b"broadcast message", (host, args.port))
    print("Broadcast message")
    try:
        while True:
            c, addr = u.recvfrom(1024)
            print(f'Message from client {addr}')
    except socket.timeout:
        pass
    time.sleep(1)
