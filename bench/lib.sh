# Shared by the bench scripts (sourced, not run): errors, bounds on the
# environment knobs, and the background servers a run starts, waits for
# and always stops again.

BENCH_SCRIPT=$(basename "$0")

die() {
	echo "$BENCH_SCRIPT: error: $*" >&2
	exit 1
}

# Bounds keep a typo from turning into an hour-long load run.
check_int() { # name value min max
	if ! [[ $2 =~ ^[0-9]+$ ]] || ((10#$2 < $3 || 10#$2 > $4)); then
		die "$1 must be an integer in [$3, $4], got '$2'"
	fi
}

# start_work: makes $WORK (each started process's .out/.err) and makes sure
# every process started with `start` ends with the script.
start_work() {
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/sockit-${BENCH_SCRIPT%.sh}.XXXXXX")
	PIDS=()
	trap cleanup EXIT
	trap 'exit 130' INT TERM
}

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$WORK"
}

# start NAME CMD...: runs CMD in the background, stdout/stderr to
# $WORK/NAME.out/.err; sets LAST_PID. The files are emptied before CMD is
# launched: the background job's own redirection may run later, and a
# wait_line on a NAME used before must not read the last process's port.
start() {
	local name=$1
	shift
	: >"$WORK/$name.out"
	: >"$WORK/$name.err"
	"$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
	LAST_PID=$!
	PIDS+=("$LAST_PID")
}

# forget PID: drops an id from the ones cleanup ends (once it was reaped, so
# that cleanup never signals a recycled pid).
forget() {
	local pid keep=()
	for pid in "${PIDS[@]}"; do
		[[ $pid == "$1" ]] || keep+=("$pid")
	done
	PIDS=("${keep[@]}")
}

# stop PID: ends one process we started, reaps it and forgets its id.
stop() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	forget "$1"
}

# wait_line NAME PID FILE REGEX [any]: waits at most 10 s for the first line
# of FILE (with "any": some line) to match REGEX, whose group 1 is the port,
# and prints the port.
wait_line() {
	local name=$1 pid=$2 file=$3 re=$4 which=${5:-first} line i
	for ((i = 0; i < 200; i++)); do
		if [[ $which == any ]]; then
			line=$(grep -E -m 1 -- "$re" "$file" 2>/dev/null || true)
		else
			line=$(head -n 1 "$file" 2>/dev/null || true)
		fi
		if [[ -n $line && $line =~ $re ]]; then
			echo "${BASH_REMATCH[1]}"
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "$BENCH_SCRIPT: error: $name exited before it was ready; its output:" >&2
			cat "$WORK/$name.out" "$WORK/$name.err" >&2
			return 1
		fi
		sleep 0.05
	done
	echo "$BENCH_SCRIPT: error: $name printed no line matching '$re' in 10 s; got: '${line:-}'" >&2
	cat "$WORK/$name.err" >&2
	return 1
}

# free_port [udp|tcp]: a port on 127.0.0.1 that is free right now.
free_port() {
	python3 - "${1:-tcp}" <<'PY'
import socket, sys
kind = socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, kind)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
PY
}
