"""Seed 004 task 6 receiver.py: binds ("", 37020) with SO_BROADCAST and
prints every recvfrom(1024). Exits after --count datagrams or --timeout s."""
import argparse
import socket

ap = argparse.ArgumentParser()
ap.add_argument('--port', type=int, default=37020)
ap.add_argument('--count', type=int, default=1)
ap.add_argument('--timeout', type=float, default=30)
args = ap.parse_args()

host = ""
u = socket.socket(family=socket.AF_INET, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP)
u.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
u.bind((host, args.port))
u.settimeout(args.timeout)
print("Broadcast receiver start")
for _ in range(args.count):
    c, addr = u.recvfrom(1024)
    print(f'Message [{c}] from Server {addr}')
