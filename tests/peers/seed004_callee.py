"""Seed 004 task 7 callee.py: binds ("", 37021) with SO_BROADCAST and
answers every datagram with 'receive message'. Exits after --timeout s
of silence (the seed runs forever)."""
import argparse
import socket

ap = argparse.ArgumentParser()
ap.add_argument('--port', type=int, default=37021)
ap.add_argument('--timeout', type=float, default=60)
args = ap.parse_args()

host = ""
u = socket.socket(family=socket.AF_INET,
                  type=socket.SOCK_DGRAM,
                  proto=socket.IPPROTO_UDP)

u.setsockopt(socket.SOL_SOCKET,
             socket.SO_BROADCAST, 1)
u.bind((host, args.port))
u.settimeout(args.timeout)
print("Answer to caller")
while True:
    c, addr = u.recvfrom(1024)
    print(f'Call from Server {addr}')
    u.sendto(b"receive message", addr)
