"""Seed 004 task 6 broadcaster.py: 'broadcast message' to <broadcast>:37020
once a second, SO_BROADCAST set, a print per send. Bounded by --count."""
import argparse
import socket
import time

ap = argparse.ArgumentParser()
ap.add_argument('--port', type=int, default=37020)
ap.add_argument('--count', type=int, default=10)
ap.add_argument('--interval', type=float, default=1.0)
args = ap.parse_args()

host = '<broadcast>'
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
u.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
u.settimeout(0.2)
print("UDP Broadcast server up and announce message")
for _ in range(args.count):
    u.sendto(b"broadcast message", (host, args.port))
    print("Broadcast message")
    time.sleep(args.interval)
