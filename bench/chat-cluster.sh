#!/usr/bin/env bash
# `chat serve --redis` side by side with one plain server, in one run:
# CLIENTS [3000] clients in one room, SENDERS [10] of them sending
# MESSAGES [1000] lines each, spread round-robin over 1, 2 and 3 sockit
# servers on one redis-server (COUNTS ["1 2 3"]), and the same burst
# through one server without --redis as the baseline. The load generator
# is bench/src/bin/chatload.rs (every delivery to every client checked:
# lost, duplicated, reordered must all be 0); per run it reports
# deliveries/s, latency p50/p99 (the sender's timestamp to each
# receiver), the servers' CPU (summed) per delivery and Redis's CPU over
# the delivery phase, and this script adds Redis's calls per line from
# INFO commandstats (reset once every client is in the room, so joins
# and their nick claims are not counted; calls made inside the link's
# scripts, such as a heartbeat's, are counted as the commands they are).
#
# Everything is on 127.0.0.1: redis-server and every sockit server on
# free ports, started fresh per run and stopped after it, each chatload
# run bounded by TIMEOUT [300] s.
#
# Environment (defaults in brackets): CLIENTS, SENDERS, MESSAGES, COUNTS
# as above; PACE [all] (chatload --pace: all = the room goes at its
# slowest reader's pace, one = each sender paced by one receiver);
# RATE [] (chatload --rate: lines/s into the room in all, instead of as
# fast as the window allows); SIZE [64] bytes per line; WINDOW [32];
# NO_BUILD [] (1: use the binaries already built, honours
# CARGO_TARGET_DIR). Results: stdout and bench/results/chat-cluster-latest.txt.
#
#   bash bench/chat-cluster.sh
#   COUNTS="1 3" PACE=one bash bench/chat-cluster.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh

CLIENTS=${CLIENTS:-3000} SENDERS=${SENDERS:-10} MESSAGES=${MESSAGES:-1000}
COUNTS=${COUNTS:-"1 2 3"} PACE=${PACE:-all} RATE=${RATE:-} SIZE=${SIZE:-64}
WINDOW=${WINDOW:-32} TIMEOUT=${TIMEOUT:-300} NO_BUILD=${NO_BUILD:-}
check_int CLIENTS "$CLIENTS" 2 20000
check_int SENDERS "$SENDERS" 1 "$CLIENTS"
check_int MESSAGES "$MESSAGES" 1 1000000
check_int SIZE "$SIZE" 8 65536
check_int WINDOW "$WINDOW" 1 100000
check_int TIMEOUT "$TIMEOUT" 1 3600
for n in $COUNTS; do check_int "COUNTS entry" "$n" 1 8; done
[[ $PACE == all || $PACE == one ]] || die "PACE must be all or one, got '$PACE'"
command -v redis-server >/dev/null || die "redis-server is missing (apt install redis-server)"

if [[ -z $NO_BUILD ]]; then
	cargo build --release --workspace || die "cargo build --release --workspace failed"
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
SOCKIT=$BIN/sockit CHATLOAD=$BIN/chatload
[[ -x $SOCKIT && -x $CHATLOAD ]] || die "build sockit and sockit-bench first"
# The load generator and the servers may hold CLIENTS sockets each.
ulimit -n "$(ulimit -Hn)"

start_work
RPORT=$(free_port)
start redis redis-server --bind 127.0.0.1 --port "$RPORT" --save '' --appendonly no
RPID=$LAST_PID
for ((i = 0; i < 100; i++)); do
	redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break
	sleep 0.1
done
redis-cli -p "$RPORT" ping >/dev/null || die "redis-server did not start on port $RPORT"

OUT=$WORK/results.txt
: >"$OUT"
say() { echo "$*" | tee -a "$OUT"; }

# run LABEL N [redis]: N fresh sockit servers (with --redis, or one
# without), the load over all of them, then the servers stopped.
run() {
	local label=$1 n=$2 link=${3:-} addrs=() pids=() extra=() i port json rc=0
	[[ -n $link ]] && extra=(--redis "redis://127.0.0.1:$RPORT")
	redis-cli -p "$RPORT" flushall >/dev/null
	for ((i = 0; i < n; i++)); do
		start "sockit$i" "$SOCKIT" chat serve -b 127.0.0.1 -p 0 --flood 0 "${extra[@]}"
		pids+=("$LAST_PID")
		port=$(wait_line "sockit$i" "$LAST_PID" "$WORK/sockit$i.out" '^listening on 127\.0\.0\.1:([0-9]+)$') ||
			die "sockit chat serve did not start"
		addrs+=(--addr "127.0.0.1:$port")
	done
	local pid_args=()
	for i in "${pids[@]}"; do pid_args+=(--pid "$i"); done
	local rate_args=()
	[[ -n $RATE ]] && rate_args=(--rate "$RATE")
	# Redis's counters cover the delivery phase (and the second before it):
	# chatload says `ready` once every client is in the room, then holds.
	: >"$WORK/chatload.err"
	timeout $((TIMEOUT + 60)) "$CHATLOAD" "${addrs[@]}" "${pid_args[@]}" --redis-pid "$RPID" \
		--clients "$CLIENTS" --senders "$SENDERS" --messages "$MESSAGES" --size "$SIZE" \
		--window "$WINDOW" --pace "$PACE" "${rate_args[@]}" --timeout "$TIMEOUT" --hold 1 --json \
		>"$WORK/chatload.json" 2>"$WORK/chatload.err" &
	local load=$!
	for ((i = 0; i < TIMEOUT * 10; i++)); do
		grep -q '^ready$' "$WORK/chatload.err" && break
		kill -0 "$load" 2>/dev/null || break
		sleep 0.1
	done
	redis-cli -p "$RPORT" config resetstat >/dev/null
	wait "$load" || rc=$?
	json=$(cat "$WORK/chatload.json")
	local stats
	stats=$(redis-cli -p "$RPORT" info commandstats)
	for i in "${pids[@]}"; do stop "$i"; done
	if [[ $json != \{* ]]; then
		say "$label: chatload failed (exit $rc): $(tail -n 1 "$WORK/chatload.err")"
		return
	fi
	python3 - "$label" "$json" "$stats" "$((SENDERS * MESSAGES))" "$rc" <<'PY' | tee -a "$OUT"
import json, re, sys
label, d, stats, lines, rc = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
calls = {m.group(1): int(m.group(2)) for m in re.finditer(r"cmdstat_(\w+):calls=(\d+)", stats)}
per = lambda c: calls.get(c, 0) / lines
lat = d.get("latency_ms", {})
cpu = d.get("server_cpu_s"); deliveries = d.get("delivered", 0)
ns = cpu * 1e9 / deliveries if cpu is not None and deliveries else float("nan")
redis_cpu = d.get("redis_cpu_s")
print(f"{label}: {deliveries}/{d.get('expected')} delivered ({d.get('end')}), "
      f"lost {d.get('lost')} dup {d.get('duplicates')} reordered {d.get('reordered')} disconnected {d.get('disconnected')}; "
      f"{d.get('deliveries_per_s', float('nan')):.0f} deliveries/s; latency ms p50 {lat.get('p50', float('nan')):.2f} p99 {lat.get('p99', float('nan')):.2f}; "
      f"server cpu {cpu if cpu is not None else float('nan'):.2f} s = {ns:.0f} ns/delivery; "
      f"redis cpu {redis_cpu if redis_cpu is not None else 0:.2f} s; "
      f"redis calls/line xadd {per('xadd'):.3f} xread {per('xread'):.3f} all {sum(calls.values())/lines:.3f}"
      + ("" if rc == 0 else f"; chatload exit {rc}"))
PY
}

say "sockit chat-cluster bench $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores, $(uname -r), $(redis-server --version | cut -d' ' -f3)"
say "clients $CLIENTS, senders $SENDERS x $MESSAGES lines of $SIZE B, pace $PACE${RATE:+, rate $RATE/s}, window $WINDOW"
run "1 server, no --redis" 1
for n in $COUNTS; do
	run "$n server(s) on redis" "$n" redis
done
mkdir -p bench/results
cp "$OUT" bench/results/chat-cluster-latest.txt
