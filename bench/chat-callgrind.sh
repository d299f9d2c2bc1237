#!/usr/bin/env bash
# Instructions a chat server executes under one fixed load, counted by
# valgrind's callgrind (they do not drift with the machine's load, unlike
# times): BIN... each run once, in the order given, under
# `chatload --clients 100 --senders 10 --messages 300` on 127.0.0.1.
#   bash bench/chat-callgrind.sh /tmp/prev-target/release/sockit target/release/sockit
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh
command -v valgrind >/dev/null || die "valgrind is missing (apt install valgrind)"
CHATLOAD=${CARGO_TARGET_DIR:-$ROOT/target}/release/chatload
[[ -x $CHATLOAD ]] || die "build sockit-bench first (cargo build --release --workspace)"
(($# > 0)) || die "usage: bench/chat-callgrind.sh SOCKIT_BINARY..."
start_work
for bin in "$@"; do
	start server valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
		"$bin" chat serve -b 127.0.0.1 -p 0 --flood 0
	pid=$LAST_PID
	port=$(wait_line server "$pid" "$WORK/server.out" '^listening on 127\.0\.0\.1:([0-9]+)$' any)
	"$CHATLOAD" --addr "127.0.0.1:$port" --clients 100 --senders 10 --messages 300 --timeout 120 \
		2>&1 | tail -n 1 | cut -c1-160
	kill -INT "$pid"
	wait "$pid" 2>/dev/null || true
	forget "$pid"
	echo "$bin: $(sed -n 's/^totals: //p' "$WORK/callgrind.out") instructions"
done
