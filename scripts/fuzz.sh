#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ and runs each for a bounded time on its
# committed seed corpus (fuzz/corpus/TARGET), as CI does:
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 15)
# The targets are plain libFuzzer binaries (libfuzzer-sys), built by cargo
# on the stable toolchain with the coverage instrumentation cargo-fuzz
# would add (`-Cpasses=sancov-module ...`, no sanitizer: those need
# nightly); no cargo-fuzz install is needed. New inputs go to
# target/fuzz/corpus/TARGET (the committed seeds stay as they are), and a
# crash is saved in target/fuzz/artifacts/TARGET/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
[[ $secs =~ ^[0-9]+$ ]] || { echo "fuzz.sh: SECONDS must be a whole number" >&2; exit 2; }
host=$(rustc -vV | sed -n 's/^host: //p')
targets=(chat_lines json_stream ping_reply discovery file_messages)
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
  -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
  -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares \
  -Cdebug-assertions -Coverflow-checks"
# --target keeps the flags off build scripts and proc macros.
(cd fuzz && cargo build --release --locked --bins --target "$host" \
  --target-dir ../target/fuzz/build)
bin=target/fuzz/build/$host/release
for t in "${targets[@]}"; do
  work=target/fuzz/corpus/$t
  artifacts=target/fuzz/artifacts/$t
  mkdir -p "$work" "$artifacts"
  cp -n fuzz/corpus/"$t"/* "$work"/
  log=target/fuzz/$t.log
  if ! "$bin/$t" -max_total_time="$secs" -print_final_stats=1 \
      -artifact_prefix="$artifacts/" "$work" >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz.sh: $t FAILED; the input is in $artifacts/" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  echo "fuzz.sh: $t: $runs runs in ${secs} s, $cov, corpus $(ls "$work" | wc -l) inputs, no failure"
done
