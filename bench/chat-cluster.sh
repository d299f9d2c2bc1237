#!/usr/bin/env bash
# Cost of `chat serve --redis` in Redis per line: SERVERS sockit servers
# on one redis-server (loopback, free ports), MEMBERS idle members spread
# over them, one sender writing LINES lines on the first server; prints
# Redis's INFO commandstats and the calls per line, and checks that every
# member of every server got every line.
# (--flood 0: the one sender is not held to the flood rule).
#   SERVERS=2 MEMBERS=300 LINES=2000 bash bench/chat-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SERVERS=${SERVERS:-2} MEMBERS=${MEMBERS:-300} LINES=${LINES:-2000}
[ "${NO_BUILD:-}" ] || cargo build --release -q
BIN=${BIN:-target/release/sockit}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPORT=$(free_port)
redis-server --bind 127.0.0.1 --port "$RPORT" --save '' --appendonly no --logfile /dev/null &
RPID=$!
pids=()
trap 'kill "${pids[@]}" $RPID 2>/dev/null || true' EXIT
for _ in 1 2 3 4 5 6 7 8 9 10; do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.2; done
ports=()
for i in $(seq "$SERVERS"); do
  fifo=$(mktemp -u); mkfifo "$fifo"
  "$BIN" chat serve -b 127.0.0.1 -p 0 --flood 0 --redis "redis://127.0.0.1:$RPORT" >"$fifo" 2>/dev/null &
  pids+=($!)
  read -r line <"$fifo"; rm -f "$fifo"
  ports+=("${line##*:}")
done
redis-cli -p "$RPORT" config resetstat >/dev/null
python3 - "$MEMBERS" "$LINES" "${ports[@]}" <<'PY'
import socket, sys, time, selectors
members, lines, ports = int(sys.argv[1]), int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
socks = []
for i in range(members):
    s = socket.create_connection(("127.0.0.1", ports[i % len(ports)]))
    s.setblocking(False); socks.append(s)
sender = socket.create_connection(("127.0.0.1", ports[0]))
time.sleep(1.0)  # let the joins settle before counting
want = b"[%s] line %d\n"
start = time.time()
for i in range(lines):
    sender.sendall(b"line %d\n" % i)
    if i % 100 == 99: time.sleep(0.01)
sel = selectors.DefaultSelector()
got = {s: b"" for s in socks}
for s in socks: sel.register(s, selectors.EVENT_READ)
done, deadline = set(), time.time() + 60
last = b"line %d\n" % (lines - 1)
while len(done) < len(socks) and time.time() < deadline:
    for key, _ in sel.select(1):
        data = key.fileobj.recv(1 << 16)
        got[key.fileobj] += data
        if got[key.fileobj].endswith(last):
            done.add(key.fileobj); sel.unregister(key.fileobj)
print(f"members {members} on {len(ports)} servers: {len(done)} got all {lines} lines in {time.time()-start:.2f} s")
PY
stats=$(redis-cli -p "$RPORT" info commandstats)
echo "$stats" | grep -E "cmdstat_(xadd|xread)"
for cmd in xadd xread; do
  calls=$(echo "$stats" | sed -n "s/^cmdstat_$cmd:calls=\([0-9]*\).*/\1/p")
  echo "$cmd per line: $(python3 -c "print(round(${calls:-0}/$LINES, 3))")"
done
