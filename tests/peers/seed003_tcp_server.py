"""Seed 003 TCP server: accept one client, recv(1024) once, send a fixed reply, close."""
import sys
from socket import socket, AF_INET, SOCK_STREAM

host = "127.0.0.1"
port = int(sys.argv[1]) if len(sys.argv) > 1 else 7001
server = socket(AF_INET, SOCK_STREAM)
server.bind((host, port))
server.listen(1)
print(f"listening on {host}:{server.getsockname()[1]}", flush=True)
print("Waiting for Connection..", flush=True)
conn, addr = server.accept()
print(str(addr), "by Connetcion..", flush=True)
data = conn.recv(1024)
print("Server : Data Received :", data.decode("utf-8"), flush=True)
conn.send("Hello, i'm server!".encode("utf-8"))
conn.close()
server.close()
