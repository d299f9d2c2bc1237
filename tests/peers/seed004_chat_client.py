"""Seed 004 tasks 4-1 / 4-2 / 4-3 chat client.

usage: seed004_chat_client.py HOST PORT [--name]

A receive thread prints `receive : ` and each recv(2048) chunk; the main
loop sends each input() line with no newline, and `bye` (sent bare) ends
it (4-1, 4-2: host and port from argv, usage message otherwise). With
--name (task 4-3) the first input() line is the user's name and every
other message goes out as `[NAME] message`.
"""
import socket
import sys
import threading


class ChatThread(threading.Thread):
    def __init__(self, s):
        threading.Thread.__init__(self)
        self.csocket = s

    def run(self):
        while True:
            try:
                data = self.csocket.recv(2048)
            except OSError:
                break
            if not data:
                break
            print('receive : ', data.decode(), flush=True)


argv = [a for a in sys.argv if not a.startswith('--')]
if len(argv) != 3:
    print(f'usage : python {sys.argv[0]} ip# port#')
    quit()
host = argv[1]
port = int(argv[2])
name = input('name : ') if '--name' in sys.argv else None

s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.connect((host, port))
print('chat client start', flush=True)

n = ChatThread(s)
n.daemon = True
n.start()

while True:
    try:
        message = input()
    except EOFError:
        break
    if message == 'bye':
        s.send(message.encode())
        break
    if name is not None:
        message = f'[{name}] {message}'
    s.send(message.encode())
s.close()
