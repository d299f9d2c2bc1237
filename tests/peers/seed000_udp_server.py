"""Seed 000 UDPServer.py: recvfrom(2048), decode().upper(), sendto back."""
import sys
from socket import socket, AF_INET, SOCK_DGRAM

port = int(sys.argv[1]) if len(sys.argv) > 1 else 12000
server = socket(AF_INET, SOCK_DGRAM)
server.bind(('', port))
print(f"listening on 0.0.0.0:{server.getsockname()[1]}", flush=True)
print("The server is ready to receive", flush=True)
while True:
    message, client_address = server.recvfrom(2048)
    modified = message.decode().upper()
    server.sendto(modified.encode(), client_address)
