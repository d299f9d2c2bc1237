#!/usr/bin/env bash
# Side-by-side loopback RTT benchmark for `sockit ping` (issue 5), one run:
#   A. sockit ping -i 0              -> sockit echo serve --udp
#   B. sockperf ping-pong --full-rtt -> sockperf sr       (the reference)
#   C. sockperf ping-pong --full-rtt -> sockit echo serve --udp
#      (sockperf's client against a plain echo server: see the note it prints)
#   D. sockit ping -i 0            -> udpecho (a bare recvmmsg/sendmmsg echo,
#      bench/src/bin/udpecho.rs): the server yardstick for A
# all with 64-byte UDP payloads, DURATION seconds each, one after the other,
# ROUNDS times, then p50/p99 ratios of the medians. On loopback the figures
# depend mostly on whether client and server share a CPU (about 5 us if they
# do, 13 us if they do not, on the 2-core machine of BENCHMARKS.md), so each
# pair runs pinned the same way with taskset, once per PLACEMENTS entry.
#
# Environment (defaults in brackets):
#   DURATION [10]  seconds per measurement     ROUNDS [1]  rounds, alternating
#   SIZE [64]      payload bytes (sockit's probe needs at least 56)
#   PLACEMENTS ["0/1 0/0"]  CLIENT/SERVER CPUs per placement (taskset -c);
#                  "any/any" runs unpinned (C runs in the first placement only)
#   NO_BUILD [0]   1: use the binaries already built (honours CARGO_TARGET_DIR)
# Needs sockperf (Debian package `sockperf`, installed here if missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-1}
SIZE=${SIZE:-64}
NO_BUILD=${NO_BUILD:-0}
PLACEMENTS=${PLACEMENTS:-0/1 0/0}
for placement in $PLACEMENTS; do
	[[ $placement =~ ^([0-9]+|any)/([0-9]+|any)$ ]] || die "PLACEMENTS entries look like 0/1 or any/any, got '$placement'"
done
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
check_int DURATION "$DURATION" 1 120
check_int ROUNDS "$ROUNDS" 1 9
check_int SIZE "$SIZE" 56 1400

command -v python3 >/dev/null || die "python3 is needed (free ports, report)"
if ! command -v sockperf >/dev/null; then
	(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sockperf) >&2 ||
		die "sockperf is missing and could not be installed (apt-get install sockperf)"
fi

if [[ $NO_BUILD != 1 ]]; then
	cargo build --release -p sockit -p sockit-bench --bins || die "cargo build --release failed (see above)"
fi
SOCKIT=$TARGET_DIR/release/sockit
UDPECHO=$TARGET_DIR/release/udpecho
[[ -x $SOCKIT && -x $UDPECHO ]] || die "$SOCKIT or $UDPECHO is missing: build first"

start_work
RESULTS=$WORK/results.txt
: >"$RESULTS"

# sockit_ping [taskset -c N] PORT: prints "p50 p99 samples loss%" (us).
sockit_ping() {
	local out port=${*: -1}
	out=$(timeout $((DURATION + 30)) "${@:1:$#-1}" "$SOCKIT" ping 127.0.0.1 "$port" -i 0 -w "$DURATION" -s "$SIZE" -W 1 --json) ||
		die "sockit ping against port $port failed; server output: $(cat "$WORK"/*.err 2>/dev/null | tail -n 5)"
	python3 -c 'import json,sys; d=json.loads(sys.argv[1]); r=d["rtt_ms"]
print("%.3f %.3f %d %s" % (r["p50"]*1e3, r["p99"]*1e3, d["samples"], d["loss_percent"]))' "$out"
}

# sockperf_ping [taskset -c N] PORT: prints "p50 p99 samples" (us), or
# "none" if sockperf got no replies.
sockperf_ping() {
	local out port=${*: -1}
	out=$(timeout $((DURATION + 30)) "${@:1:$#-1}" sockperf ping-pong -i 127.0.0.1 -p "$port" -m "$SIZE" -t "$DURATION" --full-rtt 2>&1) ||
		true
	if grep -q 'No messages were received' <<<"$out"; then
		echo "none"
		return
	fi
	python3 -c '
import re, sys
t = sys.argv[1]
p = lambda q: float(re.search(r"percentile %s =\s*([0-9.]+)" % re.escape(q), t).group(1))
n = int(re.search(r"Total (\d+) observations", t).group(1))
print("%.3f %.3f %d" % (p("50.000"), p("99.000"), n))' "$out" || die "cannot read sockperf's output: $out"
}

# on CPU: the taskset prefix for one side ("" when not pinning).
on() {
	if [[ $1 == any ]]; then
		echo ""
	else
		echo "taskset -c $1"
	fi
}

for ((round = 1; round <= ROUNDS; round++)); do
	for placement in $PLACEMENTS; do
		client_cpu=${placement%%/*}
		server_cpu=${placement##*/}
		read -r -a CL <<<"$(on "$client_cpu")"
		read -r -a SV <<<"$(on "$server_cpu")"
		echo "== round $round of $ROUNDS, client CPU $client_cpu, server CPU $server_cpu: ${DURATION} s each, ${SIZE}-byte UDP on 127.0.0.1" >&2

		start sockit-echo "${SV[@]}" "$SOCKIT" echo serve --udp -b 127.0.0.1 -p 0
		ECHO_PID=$LAST_PID
		ECHO_PORT=$(wait_line sockit-echo "$ECHO_PID" "$WORK/sockit-echo.out" '^listening on 127\.0\.0\.1:([0-9]+)$') ||
			die "sockit echo serve did not start"
		line=$(sockit_ping "${CL[@]}" "$ECHO_PORT")
		echo "$placement A $line" >>"$RESULTS"
		echo "  A sockit ping -> sockit echo:  p50/p99 us, samples, loss% = $line" >&2
		if [[ $round == 1 && $placement == "${PLACEMENTS%% *}" ]]; then
			line=$(sockperf_ping "${CL[@]}" "$ECHO_PORT")
			echo "$placement C $line" >>"$RESULTS"
			echo "  C sockperf pp -> sockit echo:  $line" >&2
		fi
		stop "$ECHO_PID"

		SP_PORT=$(free_port udp)
		start sockperf-sr "${SV[@]}" sockperf sr -i 127.0.0.1 -p "$SP_PORT"
		SP_PID=$LAST_PID
		wait_line sockperf-sr "$SP_PID" "$WORK/sockperf-sr.out" 'using ([a-z_]+)\(\) to block()' any >/dev/null ||
			die "sockperf sr did not start"
		line=$(sockperf_ping "${CL[@]}" "$SP_PORT")
		[[ $line != none ]] || die "sockperf's client got nothing from sockperf sr"
		echo "$placement B $line" >>"$RESULTS"
		echo "  B sockperf pp -> sockperf sr:  p50/p99 us, samples = $line" >&2
		stop "$SP_PID"

		start udpecho "${SV[@]}" "$UDPECHO" --bind 127.0.0.1:0 --duration $((DURATION + 60))
		UE_PID=$LAST_PID
		UE_PORT=$(wait_line udpecho "$UE_PID" "$WORK/udpecho.out" '^listening on 127\.0\.0\.1:([0-9]+)$') ||
			die "udpecho did not start"
		line=$(sockit_ping "${CL[@]}" "$UE_PORT")
		echo "$placement D $line" >>"$RESULTS"
		echo "  D sockit ping -> udpecho:      p50/p99 us, samples, loss% = $line" >&2
		stop "$UE_PID"
	done
done

python3 - "$RESULTS" "$DURATION" "$SIZE" "$ROUNDS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    placement, key, *vals = line.split()
    rows.setdefault((placement, key), []).append(vals)
def med(p, key, i):
    vals = [float(v[i]) for v in rows.get((p, key), []) if v[0] != "none"]
    return statistics.median(vals) if vals else None
print(f"sockit ping vs sockperf: RTT of {sys.argv[3]}-byte UDP on loopback, {sys.argv[2]} s per run, "
      f"{sys.argv[4]} round(s), medians in us")
placements = list(dict.fromkeys(p for p, _ in rows))
for p in placements:
    c, s = p.split("/")
    A50, A99, B50, B99 = med(p, "A", 0), med(p, "A", 1), med(p, "B", 0), med(p, "B", 1)
    D50, D99 = med(p, "D", 0), med(p, "D", 1)
    print(f" client CPU {c}, server CPU {s}:")
    print(f"  A sockit ping -i 0 -> sockit echo serve --udp   p50 {A50:7.3f}  p99 {A99:7.3f}")
    print(f"  B sockperf ping-pong --full-rtt -> sockperf sr   p50 {B50:7.3f}  p99 {B99:7.3f}")
    print(f"  D sockit ping -i 0 -> udpecho (bare echo)        p50 {D50:7.3f}  p99 {D99:7.3f}")
    print(f"  A/B: p50 {A50 / B50:.2f}x (target <= 1.2x), p99 {A99 / B99:.2f}x (target <= 1.5x)")
    print(f"  A/D (sockit's server vs a bare one, same client): p50 {A50 / D50:.2f}x, p99 {A99 / D99:.2f}x")
    C = rows.get((p, "C"))
    if C and all(v[0] == "none" for v in C):
        print("  C sockperf ping-pong -> sockit echo serve: no replies. sockperf's client only accepts")
        print("    replies whose header sockperf's own server rewrote (client flag cleared), so it cannot")
        print("    measure any plain echo server; A/D compares sockit's server instead.")
    elif C:
        C50, C99 = med(p, "C", 0), med(p, "C", 1)
        print(f"  C sockperf -> sockit echo serve  p50 {C50:7.3f}  p99 {C99:7.3f}  (C/B p50 {C50 / B50:.2f}x)")
PY
