#!/usr/bin/env bash
# TLS chat against plaintext chat, side by side in one run: a fresh
# server per run, `chat serve --tls` whose clients connect in TLS
# (chatload `--tls-pin`, the server's identity) or a plain `chat serve`
# whose clients connect in plain TCP, in alternating rounds. Reported per shape (medians over
# the rounds): the time to connect (and handshake) every client, server
# CPU per delivery over the burst, deliveries/s and latency; and the
# ratios TLS/plain. Every delivery is checked by chatload (lost,
# duplicated, reordered must be 0). Loopback only.
#   bash bench/chat-tls.sh
#   CLIENTS=1000 SENDERS=10 MESSAGES=1000 ROUNDS=3 NO_BUILD=1 bash bench/chat-tls.sh
# Results: stdout and bench/results/chat-tls-latest.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh
CLIENTS=${CLIENTS:-1000}
SENDERS=${SENDERS:-10}
MESSAGES=${MESSAGES:-1000}
ROUNDS=${ROUNDS:-3}
SIZE=${SIZE:-64}
check_int CLIENTS "$CLIENTS" 2 15000
check_int SENDERS "$SENDERS" 1 1000
check_int MESSAGES "$MESSAGES" 1 100000
check_int ROUNDS "$ROUNDS" 1 15
check_int SIZE "$SIZE" 8 65536
if [[ -z ${NO_BUILD:-} ]]; then
	cargo build --release --locked -p sockit -p sockit-bench >&2 || die "cargo build failed"
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
SOCKIT=$BIN/sockit CHATLOAD=$BIN/chatload
[[ -x $SOCKIT && -x $CHATLOAD ]] || die "build sockit and chatload first"
ulimit -n "$(ulimit -Hn)"
start_work

# run SHAPE ROUND: one server, one chatload run; its JSON in $WORK.
run() {
	local shape=$1 round=$2 pid port id pin=() tls=()
	# The plaintext baseline is a plaintext server: a --tls one waits
	# (SNIFF_WAIT) before greeting a client that says nothing first.
	[[ $shape == tls ]] && tls=(--tls --identity "$WORK/identity.pem")
	start "server-$shape-$round" "$SOCKIT" chat serve -b 127.0.0.1 -p 0 --max-clients 20000 "${tls[@]}"
	pid=$LAST_PID
	port=$(wait_line "server-$shape-$round" "$pid" "$WORK/server-$shape-$round.out" '^listening on 127\.0\.0\.1:([0-9]+)$')
	if [[ $shape == tls ]]; then
		id=$("$SOCKIT" id --identity "$WORK/identity.pem")
		pin=(--tls-pin "$id")
	fi
	timeout 600 "$CHATLOAD" --addr "127.0.0.1:$port" --clients "$CLIENTS" --senders "$SENDERS" \
		--messages "$MESSAGES" --size "$SIZE" --pid "$pid" --json "${pin[@]}" \
		>"$WORK/$shape-$round.json" 2>"$WORK/$shape-$round.err" ||
		die "chatload ($shape, round $round) failed: $(tail -3 "$WORK/$shape-$round.err")"
	stop "$pid"
	echo "  $shape round $round: $(tail -1 "$WORK/$shape-$round.err")" >&2
}

for ((r = 1; r <= ROUNDS; r++)); do
	echo "chat-tls.sh: round $r of $ROUNDS" >&2
	run plain "$r"
	run tls "$r"
done

# idle SHAPE: IDLE clients connected by chatload and held; the server's
# VmRSS then over its VmRSS before, per client, in KiB.
rss() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status"; }
idle() {
	local shape=$1 pid port before load i pin=() tls=()
	[[ $shape == tls ]] && tls=(--tls --identity "$WORK/identity.pem")
	start "idle-$shape" "$SOCKIT" chat serve -b 127.0.0.1 -p 0 --max-clients 20000 "${tls[@]}"
	pid=$LAST_PID
	port=$(wait_line "idle-$shape" "$pid" "$WORK/idle-$shape.out" '^listening on 127\.0\.0\.1:([0-9]+)$')
	[[ $shape == tls ]] && pin=(--tls-pin "$("$SOCKIT" id --identity "$WORK/identity.pem")")
	before=$(rss "$pid")
	start "idle-load-$shape" "$CHATLOAD" --addr "127.0.0.1:$port" --clients "$IDLE" --senders 0 \
		--messages 0 --hold 600 "${pin[@]}"
	load=$LAST_PID
	for ((i = 0; i < 1200; i++)); do
		grep -q '^ready' "$WORK/idle-load-$shape.err" && break
		kill -0 "$load" 2>/dev/null || die "chatload (idle, $shape) failed: $(tail -3 "$WORK/idle-load-$shape.err")"
		sleep 0.1
	done
	grep -q '^ready' "$WORK/idle-load-$shape.err" || die "chatload (idle, $shape) was not ready in 120 s"
	# As bench/chat.sh (d): read a second after every client is in, once
	# the welcomes and join notices have been written and let go.
	sleep 1
	echo "$shape $(awk -v a="$(rss "$pid")" -v b="$before" -v n="$IDLE" 'BEGIN {printf "%.2f", (a - b) / n}')" >>"$WORK/idle.txt"
	stop "$load"
	stop "$pid"
}
IDLE=${IDLE:-5000}
check_int IDLE "$IDLE" 0 15000
if ((IDLE > 0)); then
	echo "chat-tls.sh: $IDLE idle clients per shape" >&2
	idle plain
	idle tls
fi

mkdir -p bench/results
python3 - "$WORK" "$ROUNDS" "$CLIENTS" "$SENDERS" "$MESSAGES" "$SIZE" "$IDLE" <<'PY' | tee bench/results/chat-tls-latest.txt
import json, os, statistics, sys, time
work, rounds, clients, senders, messages, size, idle = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
runs = {s: [json.load(open(os.path.join(work, f"{s}-{r}.json"))) for r in range(1, rounds + 1)] for s in ("plain", "tls")}
for s, rs in runs.items():
    for j in rs:
        assert j["ok"] and j["lost"] == 0 and j["duplicates"] == 0 and j["reordered"] == 0, (s, j)
def med(s, key, sub=None):
    vals = [(j[key][sub] if sub else j[key]) for j in runs[s]]
    return statistics.median(vals), vals
print(f"chat over TLS vs plaintext, {clients} clients, {senders} senders x {messages} lines of {size} B, {rounds} rounds (median; all rounds)")
print(f"date: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}  load: {open('/proc/loadavg').read().split()[0]}  cores: {os.cpu_count()}")
rows = [("connect all clients, s", "connect_s", None), ("server ns per delivery", "server_ns_per_delivery", None),
        ("deliveries/s", "deliveries_per_s", None), ("latency p99 ms", "latency_ms", "p99")]
for label, key, sub in rows:
    try:
        p, pv = med("plain", key, sub); t, tv = med("tls", key, sub)
    except KeyError:
        continue
    fmt = lambda v: f"{v:,.3f}" if v < 100 else f"{v:,.0f}"
    ratio = f"{t / p:5.2f}x" if p else "    -"
    print(f"  {label:26} plain {fmt(p):>12}  tls {fmt(t):>12}  tls/plain {ratio}   (plain {' '.join(fmt(v) for v in pv)}; tls {' '.join(fmt(v) for v in tv)})")
if os.path.exists(os.path.join(work, "idle.txt")):
    per = dict(line.split() for line in open(os.path.join(work, "idle.txt")))
    print(f"  idle RSS per client at {idle}: plain {per['plain']} KiB, tls {per['tls']} KiB")
print("  goals: TLS connect of 1,000 clients <= 1.0 s; TLS server CPU per delivery <= 1.5x plaintext; plaintext idle <= 2 KiB")
PY
