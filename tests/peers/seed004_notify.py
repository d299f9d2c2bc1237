"""Seed 004 task 5 notify.py: one datagram "Hello UDP Listener", 5 s timeout, recvfrom(1024)."""
import socket
import sys

host, port = sys.argv[1], int(sys.argv[2])
u = socket.socket(family=socket.AF_INET, type=socket.SOCK_DGRAM)
u.settimeout(5.0)
u.sendto("Hello UDP Listener".encode('UTF-8'), (host, port))
c, addr = u.recvfrom(1024)
print(f'Message from Server {addr}')
print(f'[Recv Data] {c.decode()}')
