"""Seed 003 UDP client: sendto "Hello!", recvfrom(200), print data and address."""
import sys
from socket import socket, AF_INET, SOCK_DGRAM

host, port = sys.argv[1], int(sys.argv[2])
sock = socket(AF_INET, SOCK_DGRAM)
sock.settimeout(10)
sock.sendto("Hello!".encode(), (host, port))
data, addr = sock.recvfrom(200)
print(data.decode(), addr)
