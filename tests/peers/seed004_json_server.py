"""Seed 004 task 4-4 JSON server: per connection, ten times recv(2048), json.loads, sendall json.dumps."""
import json
import socket
import sys

port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', port))
s.listen(10)
print(f"listening on 0.0.0.0:{s.getsockname()[1]}", flush=True)
while True:
    c, addr = s.accept()
    print('Got connection from', addr, flush=True)
    for i in range(10):
        data = c.recv(2048)
        if not data:
            break
        r_data = json.loads(data.decode())
        print('r_data :', r_data, flush=True)
        s_data = json.dumps(r_data)
        c.sendall(bytes(s_data, 'utf-8'))
    print('client at', addr, 'disconnected...', flush=True)
    c.close()
