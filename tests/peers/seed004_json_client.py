"""Seed 004 task 4-4 JSON client: ten dicts, json.dumps with no newline, sendall, recv(1024).

The seed sleeps 3 s between messages; the pause is an optional third
argument here (default 0) so tests stay fast. Nothing else changes.
"""
import json
import socket
import sys
import time

host, port = sys.argv[1], int(sys.argv[2])
pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
s = socket.socket()
s.settimeout(10)
s.connect((host, port))
data = {}
data['name'] = 'jung'
for count in range(10):
    data['count'] = count
    body = json.dumps(data)
    print('send message: ', bytes(body, 'utf-8'), flush=True)
    s.sendall(bytes(body, 'UTF-8'))
    in_data = s.recv(1024)
    r_data = json.loads(in_data.decode())
    print('From Server: ', r_data, flush=True)
    time.sleep(pause)
s.close()
