"""Seed 000 UDPClient.py: one line from stdin, one datagram, one recvfrom(2048)."""
import sys
from socket import socket, AF_INET, SOCK_DGRAM

server_name, server_port = sys.argv[1], int(sys.argv[2])
client = socket(AF_INET, SOCK_DGRAM)
client.settimeout(10)
message = input('Input lowercase sentence:')
client.sendto(message.encode(), (server_name, server_port))
modified, _addr = client.recvfrom(2048)
print(modified.decode())
client.close()
