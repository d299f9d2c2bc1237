"""Seed 004 tasks 4 / 4-1 chat server: a thread per client, recv(2048), relay the raw chunk.

Default: task 4-1 (the sender does not get its own chunk back).
--echo-self: task 4 (every client, the sender too, gets every chunk).
"""
import socket
import sys
import threading

args = [a for a in sys.argv[1:] if not a.startswith('--')]
echo_self = '--echo-self' in sys.argv
port = int(args[0]) if args else 9999


class ClientThread(threading.Thread):
    def __init__(self, addr, c):
        threading.Thread.__init__(self)
        self.csocket = c
        self.addr = addr

    def run(self):
        print("connection from : ", self.addr, flush=True)
        msg = ''
        while True:
            try:
                data = self.csocket.recv(2048)
            except OSError:
                break
            if not data:
                break
            msg = data.decode()
            if msg == 'bye':
                break
            for client in list(client_sockets):
                if echo_self or client != self.csocket:
                    try:
                        client.send(bytes(msg, 'UTF-8'))
                    except OSError:
                        pass
        print("Client at ", self.addr, " disconnected...", flush=True)
        if self.csocket in client_sockets:
            client_sockets.remove(self.csocket)
        self.csocket.close()


client_sockets = []
host = '0.0.0.0'
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(10)
print(f"listening on 0.0.0.0:{s.getsockname()[1]}", flush=True)
print("Chat Server start", flush=True)
while True:
    c, addr = s.accept()
    client_sockets.append(c)
    n = ClientThread(addr, c)
    n.daemon = True
    n.start()
    print('# of client:', len(client_sockets), flush=True)
