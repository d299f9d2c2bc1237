#!/usr/bin/env bash
# Side-by-side loopback benchmark of `sockit file send/receive` (BLAKE3
# verification on, fsync and atomic rename on) against the usual ways to
# move a file, in one run:
#   sockit   sockit file receive --once -d DEST  <-  sockit file send
#   sockit-tls  the same with --tls on both ends (the sender pins the
#            receiver's identity)
#   nc       nc -l 127.0.0.1 P > DEST/f          <-  nc -N 127.0.0.1 P < SRC
#   nc+sync  the same, then `sync DEST/f` (fsync) inside the timed window
#   socat    socat -u TCP-LISTEN:P CREATE:DEST/f <-  socat -u FILE:SRC TCP:127.0.0.1:P
#   rsync    rsync --daemon on 127.0.0.1 (a module on DEST)  <-  rsync SRC
#            rsync://127.0.0.1:P/bench/: the verified transfer users pick
#            (it checks a whole-file checksum after the copy, like sockit)
#   iperf3   one stream, memory to memory: the ceiling for one TCP connection
# and b3sum (one thread) on the source, for the cost of hashing alone.
# The source file is read once beforehand, so every run reads it from the
# page cache. Each tool's time runs from starting the sender to the
# receiver having exited (so sockit's fsync and rename are included; nc and
# socat do not sync, so with DEST=disk part of their writing to disk
# happens after their clock stops). Before each run, `sync` flushes what
# the previous one left dirty.
# Every copy is checked with b3sum afterwards (not timed).
#
# Environment (defaults in brackets):
#   SIZE_MB [2048]   size of the random source file in MiB
#   RUNS [3]         rounds; tools alternate within a round; medians are kept
#   DEST [tmpfs]     where received files go: tmpfs (a directory in /dev/shm,
#                    so the disk does not enter the comparison) or disk (a
#                    directory next to the source, under $TMPDIR or /tmp)
#   NO_BUILD [0]     1: use the sockit already built (honours CARGO_TARGET_DIR)
#   TIMEOUT [120]    seconds any one transfer may take
# Results: stdout and bench/results/file-latest.txt.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh

SIZE_MB=${SIZE_MB:-2048}
RUNS=${RUNS:-3}
DEST=${DEST:-tmpfs}
NO_BUILD=${NO_BUILD:-0}
TIMEOUT=${TIMEOUT:-120}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
check_int SIZE_MB "$SIZE_MB" 1 16384
check_int RUNS "$RUNS" 1 21
check_int TIMEOUT "$TIMEOUT" 1 1200
[[ $DEST == tmpfs || $DEST == disk ]] || die "DEST must be tmpfs or disk, got '$DEST'"

missing=()
for tool in iperf3 b3sum nc socat ss rsync; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
	pkgs=()
	for tool in "${missing[@]}"; do
		case $tool in
		nc) pkgs+=(netcat-openbsd) ;;
		ss) pkgs+=(iproute2) ;;
		*) pkgs+=("$tool") ;;
		esac
	done
	echo "file.sh: installing ${pkgs[*]}" >&2
	(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}") >&2 ||
		die "cannot install ${pkgs[*]} (run as root, or install them)"
fi

if [[ $NO_BUILD != 1 ]]; then
	cargo build --release --locked --bin sockit >&2 || die "cargo build --release failed"
fi
SOCKIT=$TARGET_DIR/release/sockit
[[ -x $SOCKIT ]] || die "$SOCKIT is not built"

start_work
SRC=$WORK/src.bin
if [[ $DEST == tmpfs ]]; then
	OUT=$(mktemp -d /dev/shm/sockit-file-bench.XXXXXX)
else
	OUT=$WORK/dest
	mkdir -p "$OUT"
fi
# The tmpfs directory is outside $WORK: remove it too when we end.
trap 'cleanup; rm -rf "$OUT"' EXIT

need_mb=$((SIZE_MB * 2 + 256))
avail_mb=$(($(df -Pk "$WORK" | awk 'NR==2 {print $4}') / 1024))
((avail_mb > need_mb)) || die "need ${need_mb} MiB free under $WORK, have $avail_mb"

echo "file.sh: writing a ${SIZE_MB} MiB random source file" >&2
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom >"$SRC"
# Written back once now, so no tool's run pays for the source's writeback.
sync
cat "$SRC" >/dev/null
BYTES=$(stat -c %s "$SRC")
SRC_HASH=$(b3sum --no-names "$SRC")

# now: seconds since the epoch with nanoseconds.
now() { date +%s.%N; }

# wait_listen PORT PID: waits (at most 10 s) until something listens on PORT.
wait_listen() {
	local i
	for ((i = 0; i < 200; i++)); do
		if ss -Hltn "sport = :$1" | grep -q .; then return 0; fi
		kill -0 "$2" 2>/dev/null || die "the receiver on port $1 exited early"
		sleep 0.05
	done
	die "nothing listens on port $1 after 10 s"
}

# finish PID: waits for a receiver, bounded by TIMEOUT.
finish() {
	local i
	for ((i = 0; i < TIMEOUT * 100; i++)); do
		if ! kill -0 "$1" 2>/dev/null; then
			wait "$1" || die "a receiver failed (see $WORK)"
			forget "$1"
			return 0
		fi
		sleep 0.01
	done
	die "a transfer took more than $TIMEOUT s"
}

verify() { # tool file
	local got
	got=$(b3sum --no-names "$2")
	[[ $got == "$SRC_HASH" ]] || die "$1 delivered a different file ($got, expected $SRC_HASH)"
	rm -f "$2"
}

run_sockit() {
	local port t0 t1
	rm -rf "$OUT/sockit"
	start sockit-recv "$SOCKIT" file receive -b 127.0.0.1 -p 0 -d "$OUT/sockit" --once
	local pid=$LAST_PID
	port=$(wait_line sockit-recv "$pid" "$WORK/sockit-recv.out" '^listening on .*:([0-9]+)$')
	t0=$(now)
	timeout "$TIMEOUT" "$SOCKIT" file send 127.0.0.1 "$port" "$SRC" >"$WORK/sockit-send.out" ||
		die "sockit file send failed: $(cat "$WORK/sockit-send.out")"
	finish "$pid"
	t1=$(now)
	verify sockit "$OUT/sockit/src.bin"
	RESULT=$(echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}')
}

run_sockit-tls() {
	local port t0 t1 id
	rm -rf "$OUT/sockit-tls"
	start sockit-tls-recv "$SOCKIT" file receive -b 127.0.0.1 -p 0 -d "$OUT/sockit-tls" --once \
		--tls --identity "$WORK/identity.pem"
	local pid=$LAST_PID
	port=$(wait_line sockit-tls-recv "$pid" "$WORK/sockit-tls-recv.out" '^listening on .*:([0-9]+)$')
	id=$("$SOCKIT" id --identity "$WORK/identity.pem")
	t0=$(now)
	timeout "$TIMEOUT" "$SOCKIT" file send 127.0.0.1 "$port" "$SRC" --tls --pin "$id" \
		>"$WORK/sockit-tls-send.out" || die "sockit file send --tls failed: $(cat "$WORK/sockit-tls-send.out")"
	finish "$pid"
	t1=$(now)
	verify sockit-tls "$OUT/sockit-tls/src.bin"
	RESULT=$(echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}')
}

# rsync in daemon mode, as it is run to take files over the network: the
# client exits once the daemon has the file in place and its checksum
# matched. A new daemon per run, on a free port, that writes into $OUT.
run_rsync() {
	local port t0 t1
	port=$(free_port)
	mkdir -p "$OUT/rsync"
	cat >"$WORK/rsyncd.conf" <<-CONF
		use chroot = no
		pid file = $WORK/rsyncd.pid
		[bench]
		path = $OUT/rsync
		read only = no
		uid = root
		gid = root
	CONF
	start rsyncd rsync --daemon --no-detach --address=127.0.0.1 --port="$port" --config="$WORK/rsyncd.conf"
	local pid=$LAST_PID
	wait_listen "$port" "$pid"
	t0=$(now)
	timeout "$TIMEOUT" rsync --whole-file "$SRC" "rsync://127.0.0.1:$port/bench/" || die "rsync failed"
	t1=$(now)
	stop "$pid"
	verify rsync "$OUT/rsync/src.bin"
	RESULT=$(echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}')
}

run_nc() {
	local port t0 t1
	port=$(free_port)
	start nc-recv sh -c "exec nc -l 127.0.0.1 $port > '$OUT/nc.bin'"
	local pid=$LAST_PID
	wait_listen "$port" "$pid"
	t0=$(now)
	timeout "$TIMEOUT" nc -N 127.0.0.1 "$port" <"$SRC" || die "nc failed"
	finish "$pid"
	# nc+sync: the same, made as durable as sockit's copy (fsync of the
	# file), for a like-for-like figure when DEST=disk.
	[[ ${1:-} == sync ]] && sync "$OUT/nc.bin"
	t1=$(now)
	verify nc "$OUT/nc.bin"
	RESULT=$(echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}')
}

run_nc+sync() { run_nc sync; }

run_socat() {
	local port t0 t1
	port=$(free_port)
	start socat-recv socat -u "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr" "CREATE:$OUT/socat.bin"
	local pid=$LAST_PID
	wait_listen "$port" "$pid"
	t0=$(now)
	timeout "$TIMEOUT" socat -u "FILE:$SRC" "TCP:127.0.0.1:$port" || die "socat failed"
	finish "$pid"
	t1=$(now)
	verify socat "$OUT/socat.bin"
	RESULT=$(echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}')
}

# Each run_TOOL sets RESULT: seconds taken (iperf3: MiB/s of payload). They
# run in this shell, not in $(...), so the processes they start stay
# known to cleanup.
run_iperf3() {
	local port
	port=$(free_port)
	start iperf3-srv iperf3 -s -1 -B 127.0.0.1 -p "$port"
	local pid=$LAST_PID
	wait_listen "$port" "$pid"
	timeout "$TIMEOUT" iperf3 -c 127.0.0.1 -p "$port" -n "$BYTES" -J >"$WORK/iperf3.json" ||
		die "iperf3 failed"
	finish "$pid"
	RESULT=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.1f" % (d["end"]["sum_received"]["bits_per_second"]/8/1048576))' "$WORK/iperf3.json")
}

run_b3sum() {
	local t0 t1
	t0=$(now)
	b3sum --num-threads 1 --no-names "$SRC" >/dev/null
	t1=$(now)
	RESULT=$(echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}')
}

mibps() { echo "$1" | awk -v b="$BYTES" '{printf "%.1f", b / 1048576 / $1}'; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# Ratios are also taken within each round (tools run back to back), and
# their median reported: on a machine whose speed drifts between rounds,
# a round's pair saw the same conditions.
declare -A RATES ROUND PAIRS
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
for ((r = 1; r <= RUNS; r++)); do
	echo "file.sh: round $r of $RUNS" >&2
	for tool in sockit sockit-tls nc nc+sync socat rsync; do
		# Flush the previous copy's dirty pages (DEST=disk) before timing.
		sync
		"run_$tool"
		secs=$RESULT
		rate=$(mibps "$secs")
		RATES[$tool]+="$rate "
		ROUND[$tool]=$rate
		echo "  $tool: $secs s, $rate MiB/s" >&2
	done
	PAIRS[tls]+="$(ratio "${ROUND[sockit-tls]}" "${ROUND[sockit]}") "
	PAIRS[nc]+="$(ratio "${ROUND[sockit]}" "${ROUND[nc]}") "
	PAIRS[rsync]+="$(ratio "${ROUND[sockit]}" "${ROUND[rsync]}") "
	PAIRS[tls-rsync]+="$(ratio "${ROUND[sockit-tls]}" "${ROUND[rsync]}") "
	run_iperf3
	rate=$RESULT
	RATES[iperf3]+="$rate "
	echo "  iperf3: $rate MiB/s" >&2
	run_b3sum
	rate=$(mibps "$RESULT")
	RATES[b3sum]+="$rate "
	echo "  b3sum: $rate MiB/s" >&2
done

mkdir -p bench/results
{
	echo "file transfer, loopback, ${SIZE_MB} MiB from the page cache into $DEST, $RUNS rounds (median MiB/s; all runs)"
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  load: $(cut -d' ' -f1-3 /proc/loadavg)  cores: $(nproc)"
	declare -A MED
	for tool in sockit sockit-tls nc nc+sync socat rsync iperf3 b3sum; do
		# shellcheck disable=SC2086
		MED[$tool]=$(printf '%s\n' ${RATES[$tool]} | median)
		printf '  %-10s %8.1f MiB/s   (%s)\n' "$tool" "${MED[$tool]}" "${RATES[$tool]% }"
	done
	awk -v s="${MED[sockit]}" -v t="${MED[sockit-tls]}" -v n="${MED[nc]}" -v ns="${MED[nc+sync]}" -v c="${MED[socat]}" -v r="${MED[rsync]}" -v i="${MED[iperf3]}" 'BEGIN {
		printf "  sockit-tls/sockit %.2fx (target >= 0.7x)\n", t / s
		printf "  sockit/nc     %.2fx (target >= 1.0x)\n", s / n
		printf "  sockit/rsync  %.2fx\n", s / r
		printf "  sockit-tls/rsync %.2fx\n", t / r
		printf "  sockit/nc+sync %.2fx\n", s / ns
		printf "  sockit/socat  %.2fx\n", s / c
		printf "  sockit/iperf3 %.0f%%  (target >= 60%%; iperf3 = %.1f Gbit/s)\n", 100 * s / i, i * 1048576 * 8 / 1e9
	}'
	echo "  within-round ratios (median; each round):"
	for pair in tls nc rsync tls-rsync; do
		# shellcheck disable=SC2086
		printf '    %-16s %5.2fx   (%s)\n' "$pair" "$(printf '%s\n' ${PAIRS[$pair]} | median)" "${PAIRS[$pair]% }"
	done
} | tee bench/results/file-latest.txt
