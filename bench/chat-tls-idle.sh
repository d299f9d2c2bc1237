#!/usr/bin/env bash
# Idle memory of `chat serve --tls` clients beside plaintext ones, in one
# run: a fresh server per shape, CLIENTS [5000] clients connected (TLS 1.3
# through Python's ssl, or plain TCP), each waiting for its welcome; then
# the server's VmRSS over its idle VmRSS, per client. Also the time to
# connect and handshake them all from one Python process (asyncio, at
# most 200 handshakes in flight): a bound on the client side as much as
# on the server, so it is reported, not judged. Loopback only.
#   bash bench/chat-tls-idle.sh
#   CLIENTS=1000 NO_BUILD=1 bash bench/chat-tls-idle.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh
CLIENTS=${CLIENTS:-5000}
check_int CLIENTS "$CLIENTS" 1 15000
[[ -n ${NO_BUILD:-} ]] || cargo build --release -p sockit || die "cargo build failed"
SOCKIT=${CARGO_TARGET_DIR:-$ROOT/target}/release/sockit
ulimit -n "$(ulimit -Hn)"
start_work
rss() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status"; }

for shape in plain tls; do
	flags=()
	[[ $shape == tls ]] && flags=(--tls --identity "$WORK/identity.pem")
	start "server-$shape" "$SOCKIT" chat serve -b 127.0.0.1 -p 0 --max-clients 20000 "${flags[@]}"
	pid=$LAST_PID
	port=$(wait_line "server-$shape" "$pid" "$WORK/server-$shape.out" '^listening on 127\.0\.0\.1:([0-9]+)$')
	idle=$(rss "$pid")
	python3 - "$port" "$CLIENTS" "$shape" "$WORK/ready-$shape" <<'PY' &
import asyncio, ssl, sys, time
port, n, shape, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = None
if shape == "tls":
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
async def one(i, gate, conns):
    async with gate:
        src = "127.0.0.%d" % (2 + i % 200)
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, local_addr=(src, 0))
        line = await asyncio.wait_for(r.readline(), 30)
        assert line.startswith(b"* welcome"), line
        conns.append(w)
async def main():
    gate, conns = asyncio.Semaphore(200), []
    t = time.time()
    await asyncio.gather(*(one(i, gate, conns) for i in range(n)))
    took = time.time() - t
    with open(ready, "w") as f:
        f.write("%.2f\n" % took)
    await asyncio.sleep(3600)
asyncio.run(main())
PY
	client=$!
	PIDS+=("$client")
	for ((i = 0; i < 1200; i++)); do
		[[ -s $WORK/ready-$shape ]] && break
		kill -0 "$client" 2>/dev/null || die "the $shape clients failed"
		sleep 0.1
	done
	[[ -s $WORK/ready-$shape ]] || die "the $shape clients did not connect in 120 s"
	sleep 1
	full=$(rss "$pid")
	took=$(cat "$WORK/ready-$shape")
	python3 -c "print('$shape: idle $idle KiB, with $CLIENTS clients $full KiB = %.2f KiB per client; all connected (and greeted) in $took s' % (($full - $idle) / $CLIENTS))"
	stop "$client"
	stop "$pid"
done
