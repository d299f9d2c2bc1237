#!/usr/bin/env bash
# Before/after: runs the side-by-side benchmarks once per build, alternating
# builds round by round, so that a refactor's cost (or gain) shows up as the
# ratio between two sockit builds measured in the same session on the same
# machine, next to the same peers.
#
#   bench/before_after.sh BASE_TARGET_DIR NEW_TARGET_DIR
#
# Each TARGET_DIR must hold a release build of the workspace (sockit and the
# sockit-bench load generators), e.g. for the commit before a change:
#   git worktree add --detach /tmp/base <commit>
#   (cd /tmp/base && CARGO_TARGET_DIR=/tmp/base-target cargo build --release --workspace)
#   cargo build --release --workspace
#   bench/before_after.sh /tmp/base-target target
#
# Environment (defaults in brackets):
#   ROUNDS [2]    rounds; each round runs every benchmark for base, then new
#   BENCHES [chat udp ping file]  which benchmarks:
#     chat  bench/chat.sh, scenarios a (1000 clients, 10 senders x 1000 lines,
#           in each pace of PACES [all one]) and d (10,000 idle clients:
#           memory), sockit only, with each build's own chatload (an old one
#           without --pace runs pace all only). SOCKIT_FLAGS reaches both
#           builds' servers: use only flags both know.
#     udp   bench/run.sh: UDP echo datagrams/s and TCP bulk MiB/s, sockit and
#           the yardstick, DURATION [5] s, BYTES [512M]
#     ping  bench/ping.sh: p50/p99 against sockperf, client and server on
#           two CPUs, DURATION [5] s
#     file  bench/file.sh: 512 MiB through sockit file send/receive and nc
# Results: bench/results/ba-ROUND-LABEL-BENCH.txt (stdout of each run; its
# stderr beside it as .txt.err), all printed at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh

(($# == 2)) || die "usage: bench/before_after.sh BASE_TARGET_DIR NEW_TARGET_DIR"
BASE=$(cd "$1" && pwd)
NEW=$(cd "$2" && pwd)
ROUNDS=${ROUNDS:-2}
BENCHES=${BENCHES:-chat udp ping file}
DURATION=${DURATION:-5}
BYTES=${BYTES:-512M}
check_int ROUNDS "$ROUNDS" 1 10
read -r -a BENCH_LIST <<<"$BENCHES"
for b in "${BENCH_LIST[@]}"; do
	[[ $b == chat || $b == udp || $b == ping || $b == file ]] || die "BENCHES may hold only chat, udp, ping and file, got '$b'"
done
for dir in "$BASE" "$NEW"; do
	[[ -x $dir/release/sockit && -x $dir/release/chatload ]] || die "$dir holds no release build of the workspace"
done
mkdir -p bench/results

run_one() { # BENCH TARGET_DIR OUT: each script prints its results on stdout
	case $1 in
	chat) SCENARIOS="a d" SERVERS=sockit CARGO_TARGET_DIR=$2 NO_BUILD=1 bash bench/chat.sh ;;
	udp) DURATION=$DURATION BYTES=$BYTES RUNS=1 CARGO_TARGET_DIR=$2 NO_BUILD=1 bash bench/run.sh ;;
	ping) DURATION=$DURATION PLACEMENTS="0/1" CARGO_TARGET_DIR=$2 NO_BUILD=1 bash bench/ping.sh ;;
	file) SIZE_MB=512 RUNS=1 CARGO_TARGET_DIR=$2 NO_BUILD=1 bash bench/file.sh ;;
	esac >"$3" 2>"$3.err"
}

for ((round = 1; round <= ROUNDS; round++)); do
	for b in "${BENCH_LIST[@]}"; do
		for label in base new; do
			dir=$BASE
			[[ $label == new ]] && dir=$NEW
			out=bench/results/ba-$round-$label-$b.txt
			echo "== round $round: $b, $label ($dir)" >&2
			run_one "$b" "$dir" "$out" || echo "   $b failed for $label: see $out.err" >&2
		done
	done
done
for f in bench/results/ba-*-*-*.txt; do
	echo "=== $f"
	cat "$f"
done
