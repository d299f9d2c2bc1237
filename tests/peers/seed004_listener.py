"""Seed 004 task 5 listener.py: answer every datagram with b'Hello UDP Client'."""
import socket
import sys

port = int(sys.argv[1]) if len(sys.argv) > 1 else 20001
u = socket.socket(family=socket.AF_INET, type=socket.SOCK_DGRAM)
u.bind(("0.0.0.0", port))
print(f"listening on 0.0.0.0:{u.getsockname()[1]}", flush=True)
print("UDP server up and listening", flush=True)
while True:
    c, addr = u.recvfrom(1024)
    print(f'Message [{c}] from {addr}', flush=True)
    u.sendto(b'Hello UDP Client', addr)
