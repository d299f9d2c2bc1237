#!/usr/bin/env bash
# Side-by-side loopback benchmark of sockit's echo servers against reference
# peers, so a change in sockit shows up as a ratio rather than a raw number
# that depends on the machine:
#   UDP: sockit echo serve --udp  vs  tests/peers/seed000_udp_server.py  vs  socat
#        (and udpecho, a bare recvmmsg/sendmmsg echo: the yardstick that shows
#        what the load generator itself can drive on this machine)
#   TCP: sockit echo serve --tcp  vs  socat
# Every server binds 127.0.0.1 (the Python seed binds 0.0.0.0 but is only
# sent to on 127.0.0.1); every load run is bounded in time.
#
# Environment (defaults in brackets):
#   DURATION [5]   seconds measured per udpload run (after WARMUP [1])
#   RUNS [3]       tcpbulk runs per TCP server, alternating; the median is kept
#   UDP_RUNS [1]   udpload runs per UDP server, alternating; the median is kept
#   WINDOW [32]    datagrams in flight      SIZE [64]   datagram payload bytes
#   CLIENT_FLAGS [] extra udpload flags, the same for every UDP server: any
#                  of --gso (send each refill as UDP_SEGMENT messages) and
#                  --gro (UDP_GRO on the client socket)
#   BYTES [1G]     bytes per tcpbulk run    TCP_TIMEOUT [60] seconds per run
#   STALL_TIMEOUT [10] seconds without echoed data before a TCP run is aborted
#   PEERS_ONLY [0] 1: skip sockit (to test the harness before sockit exists)
#   YARDSTICK [1]  0: skip the udpecho yardstick in the UDP runs
#   NO_BUILD [0]   1: use the binaries already built (honours CARGO_TARGET_DIR)
# Results: stdout and bench/results/latest.txt (+ raw JSON lines in
# bench/results/latest.jsonl).
set -euo pipefail


ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh

DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
RUNS=${RUNS:-3}
UDP_RUNS=${UDP_RUNS:-1}
WINDOW=${WINDOW:-32}
SIZE=${SIZE:-64}
BYTES=${BYTES:-1G}
TCP_TIMEOUT=${TCP_TIMEOUT:-60}
STALL_TIMEOUT=${STALL_TIMEOUT:-10}
PEERS_ONLY=${PEERS_ONLY:-0}
YARDSTICK=${YARDSTICK:-1}
NO_BUILD=${NO_BUILD:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

check_int DURATION "$DURATION" 1 600
check_int WARMUP "$WARMUP" 0 60
check_int RUNS "$RUNS" 1 21
check_int UDP_RUNS "$UDP_RUNS" 1 21
check_int WINDOW "$WINDOW" 1 4096
check_int SIZE "$SIZE" 16 1400
check_int TCP_TIMEOUT "$TCP_TIMEOUT" 1 600
check_int STALL_TIMEOUT "$STALL_TIMEOUT" 1 600
CLIENT_FLAGS=${CLIENT_FLAGS:-}
read -r -a CLIENT_ARGS <<<"$CLIENT_FLAGS"
for flag in "${CLIENT_ARGS[@]}"; do
	[[ $flag == --gso || $flag == --gro ]] || die "CLIENT_FLAGS may hold only --gso and --gro, got '$flag'"
done
[[ $BYTES =~ ^[0-9]+[KMGkmg]?$ ]] || die "BYTES must look like 1073741824, 100M or 1G, got '$BYTES'"

command -v python3 >/dev/null || die "python3 is needed (seed server, free ports, report)"
command -v socat >/dev/null || (apt-get update && apt-get install -y socat) >&2 ||
	die "socat is missing and could not be installed"

# ---------------------------------------------------------------- build
if [[ $NO_BUILD != 1 ]]; then
	if [[ $PEERS_ONLY == 1 ]]; then
		cargo build --release -p sockit-bench --bins ||
			die "building sockit-bench failed (see above)"
	else
		cargo build --release -p sockit -p sockit-bench --bins ||
			die "cargo build --release failed (see above); PEERS_ONLY=1 benchmarks only the peers"
	fi
fi
BIN=$TARGET_DIR/release
UDPLOAD=$BIN/udpload
TCPBULK=$BIN/tcpbulk
UDPECHO=$BIN/udpecho
SOCKIT=$BIN/sockit
[[ -x $UDPLOAD && -x $TCPBULK ]] || die "$UDPLOAD or $TCPBULK is missing: build sockit-bench first"
[[ $YARDSTICK != 1 || -x $UDPECHO ]] || die "$UDPECHO is missing: build sockit-bench first (or YARDSTICK=0)"
if [[ $PEERS_ONLY != 1 ]]; then
	[[ -x $SOCKIT ]] || die "$SOCKIT is not built (cargo build --release -p sockit); PEERS_ONLY=1 skips it"
	"$SOCKIT" echo serve --help >/dev/null 2>&1 ||
		die "'sockit echo serve' is not implemented yet ($SOCKIT echo serve --help failed); PEERS_ONLY=1 skips sockit"
fi

# ---------------------------------------------------------------- servers
start_work

# start_sockit udp|tcp: starts sockit's echo server; sets LAST_PID, PORT.
start_sockit() {
	start "sockit-$1" "$SOCKIT" echo serve "--$1" -b 127.0.0.1 -p 0
	PORT=$(wait_line "sockit-$1" "$LAST_PID" "$WORK/sockit-$1.out" \
		'^listening on 127\.0\.0\.1:([0-9]+)$') ||
		die "'sockit echo serve --$1' did not start: its first stdout line must be exactly 'listening on 127.0.0.1:PORT'"
}

# start_socat udp|tcp: a fresh socat echo; UDP4-LISTEN and TCP4-LISTEN serve
# only one peer, so each load run gets its own. For UDP, -b SIZE makes socat
# read the internal pipe one datagram at a time: PIPE is a byte stream, and
# with its default 8 KiB block size socat would merge queued datagrams into
# one reply.
start_socat() {
	local port addr
	port=$(free_port "$1")
	if [[ $1 == udp ]]; then
		addr=(-b "$SIZE" "UDP4-LISTEN:$port,bind=127.0.0.1,reuseaddr")
	else
		addr=("TCP4-LISTEN:$port,bind=127.0.0.1,reuseaddr")
	fi
	start "socat-$1" socat -d -d "${addr[@]}" PIPE
	wait_line "socat-$1" "$LAST_PID" "$WORK/socat-$1.err" ' listening on .*:([0-9]+)$' any >/dev/null ||
		die "socat did not start on port $port"
	PORT=$port
}

RAW=$WORK/raw.jsonl
LINES=$WORK/runs.txt
: >"$RAW"
: >"$LINES"

# record LABEL JSONLINE: keeps one result line, tagged with its server.
record() {
	python3 -c 'import json,sys; d=json.loads(sys.argv[2]); d["server"]=sys.argv[1]; print(json.dumps(d))' \
		"$1" "$2" >>"$RAW"
}

udp_run() { # LABEL PORT
	local out
	out=$(timeout $((WARMUP + DURATION + 30)) "$UDPLOAD" --target "127.0.0.1:$2" --window "$WINDOW" \
		--size "$SIZE" --duration "$DURATION" --warmup "$WARMUP" "${CLIENT_ARGS[@]}" --json) ||
		die "udpload against $1 (127.0.0.1:$2) failed"
	echo "  $1: $(head -n 1 <<<"$out")" | tee -a "$LINES" >&2
	record "$1" "$(tail -n 1 <<<"$out")"
}

# tcp_run LABEL PORT: one tcpbulk run; returns non-zero (with tcpbulk's
# error in TCP_ERR) if it failed, so the caller can decide.
tcp_run() {
	local out
	if ! out=$(timeout $((TCP_TIMEOUT + 30)) "$TCPBULK" --target "127.0.0.1:$2" --bytes "$BYTES" \
		--timeout "$TCP_TIMEOUT" --stall-timeout "$STALL_TIMEOUT" --json 2>"$WORK/tcpbulk.err"); then
		TCP_ERR=$(tail -n 1 "$WORK/tcpbulk.err")
		return 1
	fi
	echo "  $1: $(head -n 1 <<<"$out")" | tee -a "$LINES" >&2
	record "$1" "$(tail -n 1 <<<"$out")"
}

echo "== UDP: udpload --window $WINDOW --size $SIZE${CLIENT_FLAGS:+ $CLIENT_FLAGS}, ${WARMUP}+${DURATION} s per run, $UDP_RUNS run(s) each" >&2
if [[ $PEERS_ONLY != 1 ]]; then
	start_sockit udp
	SOCKIT_UDP=$PORT
	SOCKIT_UDP_PID=$LAST_PID
fi
start python-udp python3 tests/peers/seed000_udp_server.py 0
PY_PID=$LAST_PID
if [[ $YARDSTICK == 1 ]]; then
	# It exits by itself after --duration (at most an hour), which outlasts
	# the UDP runs; stop() ends it earlier.
	ECHO_SECS=$((UDP_RUNS * (WARMUP + DURATION + 35) + 30))
	((ECHO_SECS <= 3600)) || ECHO_SECS=3600
	start udpecho "$UDPECHO" --bind 127.0.0.1:0 --duration "$ECHO_SECS"
	ECHO_PID=$LAST_PID
	ECHO_UDP=$(wait_line udpecho "$ECHO_PID" "$WORK/udpecho.out" '^listening on 127\.0\.0\.1:([0-9]+)$') ||
		die "udpecho did not start"
fi
PY_UDP=$(wait_line python-udp "$PY_PID" "$WORK/python-udp.out" '^listening on [^ ]+:([0-9]+)$') ||
	die "the Python seed UDP server did not start"
for ((r = 1; r <= UDP_RUNS; r++)); do
	[[ $PEERS_ONLY == 1 ]] || udp_run sockit "$SOCKIT_UDP"
	udp_run python "$PY_UDP"
	[[ $YARDSTICK != 1 ]] || udp_run udpecho "$ECHO_UDP"
	start_socat udp
	udp_run socat "$PORT"
	stop "$LAST_PID"
done
stop "$PY_PID"
[[ $YARDSTICK != 1 ]] || stop "$ECHO_PID"
[[ $PEERS_ONLY == 1 ]] || stop "$SOCKIT_UDP_PID"

echo "== TCP: tcpbulk --bytes $BYTES, $RUNS run(s) each, alternating" >&2
if [[ $PEERS_ONLY != 1 ]]; then
	start_sockit tcp
	SOCKIT_TCP=$PORT
fi
for ((r = 1; r <= RUNS; r++)); do
	if [[ $PEERS_ONLY != 1 ]]; then
		tcp_run sockit "$SOCKIT_TCP" || die "tcpbulk against sockit (127.0.0.1:$SOCKIT_TCP) failed: $TCP_ERR"
	fi
	# socat's PIPE can deadlock itself: it blocks in write() to its own pipe
	# when the client reads back slower than it writes (seen as a stall under
	# CPU contention). That is socat's flaw, not a result, so such a run is
	# redone with a fresh socat, at most twice, and noted in the report.
	for ((attempt = 1; ; attempt++)); do
		start_socat tcp
		if tcp_run socat "$PORT"; then
			stop "$LAST_PID"
			break
		fi
		stop "$LAST_PID"
		((attempt < 3)) || die "tcpbulk against socat failed 3 times in a row: $TCP_ERR"
		echo "  socat: run failed and is redone: $TCP_ERR" | tee -a "$LINES" >&2
	done
done

# ---------------------------------------------------------------- report
mkdir -p bench/results
python3 - "$RAW" >"$WORK/report.txt" <<'EOF'
import json, statistics, sys

rows = [json.loads(line) for line in open(sys.argv[1])]
udp = [r for r in rows if r["tool"] == "udpload"]
tcp = [r for r in rows if r["tool"] == "tcpbulk"]

def median(rs, key):
    return statistics.median(key(r) for r in rs) if rs else None

def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "n/a"

servers = ["sockit", "python", "socat", "udpecho"]
if udp:
    u = udp[0]
    flags = " ".join(f for f in ("gso", "gro") if u.get(f))
    print(f"UDP echo, window {u['window']}, {u['size']} B payloads, "
          f"{u['duration_s']:.0f} s per run (median of runs)"
          + (f", client: {flags}" if flags else ""))
    print(f"{'server':<8} {'dgram/s':>10} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'lost':>6} {'bad':>5} {'runs':>5}")
    rate = {}
    for s in servers:
        rs = [r for r in udp if r["server"] == s]
        if not rs:
            continue
        rate[s] = median(rs, lambda r: r["dgram_per_s"])
        print(f"{s:<8} {rate[s]:>10.0f} {median(rs, lambda r: r['rtt_us']['p50']):>8.1f} "
              f"{median(rs, lambda r: r['rtt_us']['p99']):>8.1f} "
              f"{median(rs, lambda r: r['rtt_us']['p999']):>9.1f} "
              f"{sum(r['lost'] for r in rs):>6} {sum(r['bad'] for r in rs):>5} {len(rs):>5}")
    print(f"ratio dgram/s: sockit/python {ratio(rate.get('sockit'), rate.get('python'))}, "
          f"sockit/socat {ratio(rate.get('sockit'), rate.get('socat'))}"
          + (f", sockit/udpecho {ratio(rate.get('sockit'), rate.get('udpecho'))}" if "udpecho" in rate else ""))
    print()
if tcp:
    t = tcp[0]
    print(f"TCP bulk echo, {t['bytes'] / 2**20:.0f} MiB per run (median of runs)")
    print(f"{'server':<8} {'MiB/s':>10} {'runs':>5}  all runs")
    mib = {}
    for s in servers:
        rs = [r for r in tcp if r["server"] == s]
        if not rs:
            continue
        mib[s] = median(rs, lambda r: r["mib_per_s"])
        runs = " ".join(f"{r['mib_per_s']:.0f}" for r in rs)
        print(f"{s:<8} {mib[s]:>10.1f} {len(rs):>5}  {runs}")
    print(f"ratio MiB/s: sockit/socat {ratio(mib.get('sockit'), mib.get('socat'))}")
EOF
{
	echo "sockit bench $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores, $(uname -r)"
	echo
	cat "$WORK/report.txt"
	echo
	echo "runs:"
	cat "$LINES"
} >bench/results/latest.txt
cp "$RAW" bench/results/latest.jsonl
echo
cat bench/results/latest.txt
