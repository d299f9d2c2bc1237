#!/usr/bin/env bash
# Side-by-side loopback benchmark of sockit's chat server against reference
# chat servers, with bench/src/bin/chatload.rs as the load generator:
#   sockit chat serve  vs  ncat --chat  vs  tests/peers/seed004_chat_server.py
# Every server listens on 127.0.0.1 (the Python seed binds 0.0.0.0 but is only
# connected to on 127.0.0.1), gets a fresh process per scenario, and is
# stopped after it; every load run is bounded in time.
#
# Scenarios (SCENARIOS, any of a b c d e; default all):
#   a  room of CLIENTS [1000]: SENDERS [10] send MESSAGES [1000] lines each,
#      once per pace in PACES [all one] against every server in SERVERS:
#      pace all, at most WINDOW [32] lines per sender not yet delivered to
#      every other client (the room goes at its slowest reader's pace); pace
#      one, at most WINDOW not yet delivered to one designated receiver (a
#      non-sender; the room may run ahead of slower readers, who must keep
#      up or be cut off). Every delivery to every client is checked either
#      way. Clients join in waves of JOIN_WAVE [8], each wave confirmed by a
#      sync line, because ncat and the seed listen with a backlog of 10: a
#      burst of connects overflows it, and connections dropped then (SYN
#      cookies) never make it into the room.
#   b  connect time for CLIENTS: connect_s of the (a) runs (pace all, or
#      the first pace run; same waves for all servers), plus sockit with all
#      clients connecting at once (CONNECT_CONCURRENCY [256] in flight, no
#      waves).
#   c  sockit only: BIG_CLIENTS [10000] clients, SENDERS send RATE [100]
#      lines/s in all for RATE_SECS [10] s: latency under a steady trickle.
#   d  sockit only: VmRSS of an idle server, then with BIG_CLIENTS clients
#      connected, synced and idle for HOLD [5] s: memory per client.
#   e  sockit only: shape (a), for each pace in PACES, once undisturbed and
#      once with one stalled client beside the room (chatload --stalled 1:
#      it joins, then never reads; it is no receiver, and the server cutting
#      it off is reported, not a failure), each run on a fresh server, the
#      two back to back: p99 latency stalled/undisturbed, and whether the
#      server cut the stalled client off. The stalled run's room has
#      CLIENTS + 1 members (at CLIENTS=100 that crosses sockit's large-room
#      threshold, whose output coalescing then dominates the ratio).
#
# Environment (defaults in brackets, besides those above):
#   SIZE [64]         bytes per line, newline included (WINDOW x SIZE must stay
#                     within 2048, the seed's read size, or it cuts lines)
#   TIMEOUT [300]     seconds per chatload run (connect + delivery)
#   SERVERS [sockit ncat python]  which servers (a) and (b) measure
#   PACES [all one]   the paces (a) and (e) run in (chatload --pace)
#   SOCKIT_FLAGS []   extra flags for every `sockit chat serve` (word-split);
#                     `--flood 0` (no per-client line limit) is passed by
#                     itself when `sockit chat serve --help` mentions --flood
#   NO_BUILD [0]      1: use the binaries already built (honours CARGO_TARGET_DIR)
# A chatload without --pace (an older build, as bench/before_after.sh may
# run) runs pace all only, with no flag, and (e) is skipped.
# ncat serves at most ~1000 clients (select(2)), so it is skipped when
# CLIENTS > 1000. Results: stdout and bench/results/chat-latest.txt (+ raw
# JSON lines in bench/results/chat-latest.jsonl).
set -euo pipefail


ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh

SCENARIOS=${SCENARIOS:-a b c d}
SERVERS=${SERVERS:-sockit ncat python}
CLIENTS=${CLIENTS:-1000}
SENDERS=${SENDERS:-10}
MESSAGES=${MESSAGES:-1000}
WINDOW=${WINDOW:-32}
SIZE=${SIZE:-64}
JOIN_WAVE=${JOIN_WAVE:-8}
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-256}
PACES=${PACES:-all one}
SOCKIT_FLAGS=${SOCKIT_FLAGS:-}
BIG_CLIENTS=${BIG_CLIENTS:-10000}
RATE=${RATE:-100}
RATE_SECS=${RATE_SECS:-10}
HOLD=${HOLD:-5}
TIMEOUT=${TIMEOUT:-300}
NO_BUILD=${NO_BUILD:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

check_int CLIENTS "$CLIENTS" 2 10000
check_int SENDERS "$SENDERS" 1 1000
check_int MESSAGES "$MESSAGES" 1 100000
check_int WINDOW "$WINDOW" 1 4096
check_int SIZE "$SIZE" 32 4096
check_int JOIN_WAVE "$JOIN_WAVE" 0 10000
check_int CONNECT_CONCURRENCY "$CONNECT_CONCURRENCY" 1 10000
check_int BIG_CLIENTS "$BIG_CLIENTS" 2 10000
check_int RATE "$RATE" 1 100000
check_int RATE_SECS "$RATE_SECS" 1 600
check_int HOLD "$HOLD" 1 600
check_int TIMEOUT "$TIMEOUT" 10 3600
((SENDERS <= CLIENTS && SENDERS <= BIG_CLIENTS)) || die "SENDERS must not exceed CLIENTS or BIG_CLIENTS"
read -r -a SCENARIO_LIST <<<"$SCENARIOS"
read -r -a SERVER_LIST <<<"$SERVERS"
read -r -a PACE_LIST <<<"$PACES"
read -r -a SOCKIT_FLAG_LIST <<<"$SOCKIT_FLAGS"
for s in "${SCENARIO_LIST[@]}"; do
	[[ $s == [abcde] ]] || die "SCENARIOS may hold only a, b, c, d and e, got '$s'"
done
((${#PACE_LIST[@]} > 0)) || die "PACES must name at least one pace (all, one)"
for p in "${PACE_LIST[@]}"; do
	[[ $p == all || $p == one ]] || die "PACES may hold only all and one, got '$p'"
done
for s in "${SERVER_LIST[@]}"; do
	[[ $s == sockit || $s == ncat || $s == python ]] || die "SERVERS may hold only sockit, ncat and python, got '$s'"
done
has() { # word list...
	local w=$1 x
	shift
	for x in "$@"; do [[ $x == "$w" ]] && return 0; done
	return 1
}
# Lines per sender in (c): RATE lines/s in all for RATE_SECS.
RATE_MESSAGES=$(((RATE * RATE_SECS + SENDERS - 1) / SENDERS))
WAVE_ARGS=()
((JOIN_WAVE == 0)) || WAVE_ARGS=(--join-wave "$JOIN_WAVE")

command -v python3 >/dev/null || die "python3 is needed (seed server, report)"
command -v ss >/dev/null || die "ss (iproute2) is needed to see when ncat listens"
if has ncat "${SERVER_LIST[@]}" && ! dpkg -s ncat >/dev/null 2>&1; then
	(apt-get update && apt-get install -y ncat) >&2 || die "ncat is missing and could not be installed"
fi

# ---------------------------------------------------------------- build
if [[ $NO_BUILD != 1 ]]; then
	cargo build --release --workspace || die "cargo build --release --workspace failed (see above)"
fi
BIN=$TARGET_DIR/release
CHATLOAD=$BIN/chatload
SOCKIT=$BIN/sockit
[[ -x $CHATLOAD ]] || die "$CHATLOAD is missing: build sockit-bench first"
CHATLOAD_PACE=0
[[ $("$CHATLOAD" --help 2>&1 || true) == *--pace* ]] && CHATLOAD_PACE=1
SOCKIT_SERVE=()
if has sockit "${SERVER_LIST[@]}" || has b "${SCENARIO_LIST[@]}" || has c "${SCENARIO_LIST[@]}" ||
	has d "${SCENARIO_LIST[@]}" || has e "${SCENARIO_LIST[@]}"; then
	[[ -x $SOCKIT ]] || die "$SOCKIT is not built (cargo build --release -p sockit)"
	help=$("$SOCKIT" chat serve --help 2>&1) ||
		die "'sockit chat serve' is not implemented ($SOCKIT chat serve --help failed)"
	SOCKIT_SERVE=("$SOCKIT" chat serve -b 127.0.0.1 -p 0)
	# No per-client line limit: the load decides the pace. Older builds have
	# no --flood (and no limit).
	[[ $help == *--flood* ]] && SOCKIT_SERVE+=(--flood 0)
	SOCKIT_SERVE+=("${SOCKIT_FLAG_LIST[@]}")
fi

# ---------------------------------------------------------------- servers
start_work

# wait_listen NAME PID PORT: waits at most 10 s until something listens on
# 127.0.0.1:PORT. It looks with ss rather than connecting: a probe
# connection would join the room, and ncat quits when a connection it has
# not accepted yet is reset.
wait_listen() {
	local i
	for ((i = 0; i < 200; i++)); do
		if [[ -n $(ss -Hltn "sport = :$3" 2>/dev/null) ]]; then
			return 0
		fi
		if ! kill -0 "$2" 2>/dev/null; then
			echo "$BENCH_SCRIPT: error: $1 exited before it listened; its output:" >&2
			cat "$WORK/$1.out" "$WORK/$1.err" >&2
			return 1
		fi
		sleep 0.05
	done
	echo "$BENCH_SCRIPT: error: $1 does not listen on 127.0.0.1:$3 after 10 s" >&2
	return 1
}

# start_server sockit|ncat|python: a fresh chat server; sets LAST_PID, PORT.
start_server() {
	case $1 in
	sockit)
		start sockit "${SOCKIT_SERVE[@]}"
		PORT=$(wait_line sockit "$LAST_PID" "$WORK/sockit.out" '^listening on 127\.0\.0\.1:([0-9]+)$') ||
			die "'sockit chat serve' did not start: its first stdout line must be 'listening on 127.0.0.1:PORT'"
		;;
	ncat)
		PORT=$(free_port)
		start ncat ncat --chat -m 20000 -l 127.0.0.1 "$PORT"
		wait_listen ncat "$LAST_PID" "$PORT" || die "ncat did not start on port $PORT"
		;;
	python)
		start python python3 -u tests/peers/seed004_chat_server.py 0
		PORT=$(wait_line python "$LAST_PID" "$WORK/python.out" '^listening on [^ ]+:([0-9]+)$') ||
			die "the seed's Python chat server did not start"
		;;
	esac
}

RAW=$WORK/raw.jsonl
LINES=$WORK/runs.txt
NOTES=$WORK/notes.txt
: >"$RAW"
: >"$LINES"
: >"$NOTES"

# record SCENARIO SERVER JSONLINE [KEY=NUMBER...]: keeps one result line,
# tagged with its scenario and server (and any extra numbers). A chatload
# without --pace reports no pace: it paced by all receivers.
record() {
	python3 -c '
import json, sys
d = json.loads(sys.argv[3])
d["scenario"], d["server"] = sys.argv[1], sys.argv[2]
d.setdefault("pace", "all")
for kv in sys.argv[4:]:
    k, v = kv.split("=", 1)
    d[k] = float(v)
print(json.dumps(d))' "$@" >>"$RAW"
}

# load SCENARIO PACE SERVER PID ARGS...: one chatload run against
# 127.0.0.1:$PORT, with --pace PACE unless PACE is empty (chatload's default,
# all); labelled "(SCENARIO/PACE) SERVER". A run that fails its checks
# (loss, disconnects, ...) still reports and is kept (and noted); a run that
# reports nothing is noted and skipped.
load() {
	local scenario=$1 pace=$2 server=$3 pid=$4 label out rc=0 pace_args=()
	shift 4
	label="($scenario) $server"
	if [[ -n $pace ]]; then
		label="($scenario/$pace) $server"
		if ((CHATLOAD_PACE)); then pace_args=(--pace "$pace"); fi
	fi
	out=$(timeout $((TIMEOUT + HOLD + 60)) "$CHATLOAD" --addr "127.0.0.1:$PORT" --pid "$pid" \
		--timeout "$TIMEOUT" --size "$SIZE" --json "${pace_args[@]}" "$@" 2>"$WORK/chatload.err") || rc=$?
	echo "  $label: $(grep -v '^ready$' "$WORK/chatload.err" | tail -n 1)" | tee -a "$LINES" >&2
	if [[ $out == \{* ]]; then
		record "$scenario" "$server" "$out"
		((rc == 0)) || echo "$label: chatload reported failed checks (exit $rc)" >>"$NOTES"
	else
		echo "$label: chatload failed (exit $rc): $(tail -n 1 "$WORK/chatload.err")" >>"$NOTES"
	fi
}

# PACES as this chatload can run them: one needs --pace.
RUN_PACES=()
for p in "${PACE_LIST[@]}"; do
	if [[ $p == one ]] && ((!CHATLOAD_PACE)); then
		echo "pace one: skipped, $CHATLOAD has no --pace" >>"$NOTES"
	else
		RUN_PACES+=("$p")
	fi
done

rss_kib() { # PID
	awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# Shape (a), for (a) and (e).
A_ARGS=(--clients "$CLIENTS" --senders "$SENDERS" --messages "$MESSAGES" --window "$WINDOW" "${WAVE_ARGS[@]}")

if has a "${SCENARIO_LIST[@]}" || has b "${SCENARIO_LIST[@]}"; then
	echo "== (a) $CLIENTS clients, $SENDERS senders x $MESSAGES lines, window $WINDOW, size $SIZE, join waves of $JOIN_WAVE" >&2
	for server in "${SERVER_LIST[@]}"; do
		if [[ $server == ncat ]] && ((CLIENTS > 1000)); then
			echo "(a) ncat: skipped, it serves at most ~1000 clients (select)" >>"$NOTES"
			continue
		fi
		if has a "${SCENARIO_LIST[@]}"; then
			for pace in "${RUN_PACES[@]}"; do
				start_server "$server"
				load a "$pace" "$server" "$LAST_PID" "${A_ARGS[@]}"
				stop "$LAST_PID"
			done
		else
			start_server "$server"
			load a "" "$server" "$LAST_PID" --clients "$CLIENTS" --senders 0 --messages 0 "${WAVE_ARGS[@]}"
			stop "$LAST_PID"
		fi
	done
fi

if has b "${SCENARIO_LIST[@]}"; then
	echo "== (b) $CLIENTS clients connecting at once (sockit only), $CONNECT_CONCURRENCY in flight" >&2
	start_server sockit
	load b "" sockit-burst "$LAST_PID" --clients "$CLIENTS" --senders 0 --messages 0 \
		--connect-concurrency "$CONNECT_CONCURRENCY"
	stop "$LAST_PID"
fi

if has c "${SCENARIO_LIST[@]}"; then
	echo "== (c) sockit, $BIG_CLIENTS clients, $SENDERS senders, $RATE lines/s for ${RATE_SECS} s" >&2
	start_server sockit
	load c "" sockit "$LAST_PID" --clients "$BIG_CLIENTS" --senders "$SENDERS" --messages "$RATE_MESSAGES" \
		--rate "$RATE" --window "$WINDOW" --connect-concurrency "$CONNECT_CONCURRENCY"
	stop "$LAST_PID"
fi

if has d "${SCENARIO_LIST[@]}"; then
	echo "== (d) sockit memory, $BIG_CLIENTS idle clients held for $HOLD s" >&2
	start_server sockit
	SOCKIT_PID=$LAST_PID
	sleep 0.5
	RSS0=$(rss_kib "$SOCKIT_PID")
	# chatload prints "ready" on stderr once every client is in the room;
	# the RSS is read a second later, while they are all held idle.
	timeout $((TIMEOUT + HOLD + 60)) "$CHATLOAD" --addr "127.0.0.1:$PORT" --pid "$SOCKIT_PID" \
		--timeout "$TIMEOUT" --clients "$BIG_CLIENTS" --senders 0 --messages 0 --hold "$HOLD" \
		--connect-concurrency "$CONNECT_CONCURRENCY" --json >"$WORK/hold.out" 2>"$WORK/hold.err" &
	HOLD_PID=$!
	PIDS+=("$HOLD_PID")
	RSS1=
	for ((i = 0; i < (TIMEOUT + 10) * 10; i++)); do
		if grep -qx ready "$WORK/hold.err"; then
			sleep 1
			RSS1=$(rss_kib "$SOCKIT_PID")
			break
		fi
		kill -0 "$HOLD_PID" 2>/dev/null || break
		sleep 0.1
	done
	wait "$HOLD_PID" || true
	forget "$HOLD_PID"
	out=$(tail -n 1 "$WORK/hold.out")
	echo "  (d) sockit: idle ${RSS0} KiB, with $BIG_CLIENTS clients ${RSS1:-?} KiB; $(tail -n 1 "$WORK/hold.err")" |
		tee -a "$LINES" >&2
	if [[ -n $RSS1 && $out == \{* ]]; then
		record d sockit "$out" "rss0_kib=$RSS0" "rss1_kib=$RSS1"
	else
		echo "(d) sockit: the held clients never became ready: $(tail -n 1 "$WORK/hold.err")" >>"$NOTES"
	fi
	stop "$SOCKIT_PID"
fi

if has e "${SCENARIO_LIST[@]}"; then
	if ((!CHATLOAD_PACE)); then
		echo "(e): skipped, $CHATLOAD has no --pace or --stalled" >>"$NOTES"
	else
		echo "== (e) sockit, shape (a) undisturbed and with 1 stalled client, paces ${RUN_PACES[*]}" >&2
		for pace in "${RUN_PACES[@]}"; do
			for stalled in 0 1; do
				label=sockit
				((stalled == 0)) || label=sockit+stalled
				start_server sockit
				load e "$pace" "$label" "$LAST_PID" "${A_ARGS[@]}" --stalled "$stalled"
				stop "$LAST_PID"
			done
		done
	fi
fi

# ---------------------------------------------------------------- report
mkdir -p bench/results
python3 - "$RAW" >"$WORK/report.txt" <<'EOF'
import json, sys

rows = [json.loads(line) for line in open(sys.argv[1])]
by = {(r["scenario"], r["server"], r["pace"]): r for r in rows}
PACES = ("all", "one")

def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "n/a"

def num(v, fmt):
    return format(v, fmt) if v is not None else "n/a"

a = [by[("a", s, p)] for p in PACES for s in ("sockit", "ncat", "python") if ("a", s, p) in by]
if a:
    r0 = a[0]
    if r0["messages"]:
        print(f"(a) room of {r0['clients']}: {r0['senders']} senders x {r0['messages']} lines of "
              f"{r0['size']} B, window {r0['window']} per sender (pace all: not yet delivered to "
              f"every other client; one: to one designated receiver)")
    else:
        print(f"(a) room of {r0['clients']}: connect only")
    print(f"{'pace':<4} {'server':<8} {'connect s':>9} {'deliv/s':>10} {'srv ns/dl':>9} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>7} {'lost':>6} {'dup':>4} {'reord':>5} {'disc':>4} {'ok':>3}")
    for r in a:
        lat = r["latency_ms"]
        print(f"{r['pace']:<4} {r['server']:<8} {r['connect_s']:>9.2f} {r['deliveries_per_s']:>10.0f} "
              f"{num(r['server_ns_per_delivery'], '.0f'):>9} {lat['p50']:>7.2f} {lat['p99']:>7.2f} "
              f"{lat['max']:>7.2f} {r['lost']:>6} {r['duplicates']:>4} {r['reordered']:>5} "
              f"{r['disconnected']:>4} {'yes' if r['ok'] else 'NO':>3}")
    for p in PACES:
        s = by.get(("a", "sockit", p))
        for other in ("ncat", "python"):
            o = by.get(("a", other, p))
            if s and o:
                print(f"pace {p}, sockit/{other}: server ns per delivery "
                      f"{ratio(s['server_ns_per_delivery'], o['server_ns_per_delivery'])}, "
                      f"p99 latency {ratio(s['latency_ms']['p99'], o['latency_ms']['p99'])}, "
                      f"connect_s {ratio(s['connect_s'], o['connect_s'])}, "
                      f"deliveries/s {ratio(s['deliveries_per_s'], o['deliveries_per_s'])}")
    print("(ns per delivery: server CPU time / lines delivered; ncat and the seed relay a whole read\n"
          " chunk of up to 32 lines per write, sockit formats and queues every line.)")
    print()

def connect_run(server):
    """A server's (a) run for connect times: pace all's if there is one."""
    return next((by[("a", server, p)] for p in PACES if ("a", server, p) in by), None)

b = by.get(("b", "sockit-burst", "all"))
a1 = [r for r in map(connect_run, ("sockit", "ncat", "python")) if r]
if a1 or b:
    print("(b) connect time (first connect until every client saw the sync line)")
    def how(r):
        if r["join_wave"]:
            way = f"waves of {r['join_wave']}, each confirmed by a sync line"
        else:
            way = f"all at once, {r['connect_concurrency']} in flight"
        return (f"{way} ({r['sync_rounds']} sync rounds, {r['nudges']} nudges, "
                f"{r['reconnects']} reconnects)")
    for r in a1 + ([b] if b else []):
        print(f"  {r['server']:<13} {r['clients']:>6} clients {r['connect_s']:>7.2f} s  {how(r)}")
    s, n = connect_run("sockit"), connect_run("ncat")
    if s and n:
        print(f"  connect_s sockit/ncat {ratio(s['connect_s'], n['connect_s'])}")
    print()

c = by.get(("c", "sockit", "all"))
if c:
    lat = c["latency_ms"]
    print(f"(c) sockit, {c['clients']} clients, {c['senders']} senders at {c['rate']:.0f} lines/s in all "
          f"({c['messages']} each): connect {c['connect_s']:.2f} s, {c['deliveries_per_s']:.0f} deliveries/s, "
          f"latency ms p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} max {lat['max']:.2f}, "
          f"server {num(c['server_ns_per_delivery'], '.0f')} ns/delivery, lost {c['lost']}, "
          f"disconnected {c['disconnected']}{'' if c['ok'] else ' (checks FAILED)'}")
    print()

d = by.get(("d", "sockit", "all"))
if d:
    per = (d["rss1_kib"] - d["rss0_kib"]) / d["clients"]
    print(f"(d) sockit memory: VmRSS {d['rss0_kib']:.0f} KiB idle, {d['rss1_kib']:.0f} KiB with "
          f"{d['clients']} idle clients = {per:.2f} KiB per client (connect {d['connect_s']:.2f} s)")
    print()

e = [(p, by.get(("e", "sockit", p)), by.get(("e", "sockit+stalled", p))) for p in PACES]
e = [x for x in e if x[1] or x[2]]
if e:
    r0 = next(r for x in e for r in x[1:] if r)
    print(f"(e) sockit, room of {r0['clients']}: {r0['senders']} senders x {r0['messages']} lines, "
          f"window {r0['window']}, undisturbed and with a stalled client (never reads) beside it")
    print(f"{'pace':<4} {'run':<15} {'deliv/s':>10} {'srv ns/dl':>9} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'lost':>6} {'disc':>4} {'cut off':>7} {'ok':>3}")
    for p, u, st in e:
        for r in (u, st):
            if not r:
                continue
            lat = r["latency_ms"]
            cut = f"{r['stalled_cut_off']}/{r['stalled']}" if r["stalled"] else "-"
            print(f"{p:<4} {r['server']:<15} {r['deliveries_per_s']:>10.0f} "
                  f"{num(r['server_ns_per_delivery'], '.0f'):>9} {lat['p50']:>7.2f} {lat['p99']:>7.2f} "
                  f"{lat['max']:>7.2f} {r['lost']:>6} {r['disconnected']:>4} {cut:>7} "
                  f"{'yes' if r['ok'] else 'NO':>3}")
        if u and st:
            print(f"pace {p}: p99 stalled/undisturbed {ratio(st['latency_ms']['p99'], u['latency_ms']['p99'])}, "
                  f"deliveries/s {ratio(st['deliveries_per_s'], u['deliveries_per_s'])}, "
                  f"stalled client cut off by the end: {'yes' if st['stalled_cut_off'] else 'no'}")
EOF
{
	echo "sockit chat bench $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores, $(uname -r)"
	echo
	cat "$WORK/report.txt"
	if [[ -s $NOTES ]]; then
		echo
		echo "notes:"
		cat "$NOTES"
	fi
	echo
	echo "runs:"
	cat "$LINES"
} >bench/results/chat-latest.txt
cp "$RAW" bench/results/chat-latest.jsonl
echo
cat bench/results/chat-latest.txt
