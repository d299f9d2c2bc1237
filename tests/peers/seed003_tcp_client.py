"""Seed 003 TCP client: send "Hello, i'm client!" (no newline), recv(1024) once."""
import sys
from socket import socket, AF_INET, SOCK_STREAM

ip, port = sys.argv[1], int(sys.argv[2])
client = socket(AF_INET, SOCK_STREAM)
client.settimeout(10)
client.connect((ip, port))
print("Connection Success..")
client.send("Hello, i'm client!".encode("utf-8"))
data = client.recv(1024)
print("Client : Data Received : ", data.decode("utf-8"))
client.close()
