#!/usr/bin/env bash
# Runs everything CI runs, on a fresh machine or a used one:
#   1. installs the programs the tests use as peers, if missing
#      (netcat-openbsd, ncat, socat, iproute2, man-db, redis-server and openssl from
#      Debian; python3 is expected), and warns if network namespaces cannot
#      be made;
#   2. checks formatting and lints (warnings are errors);
#   3. runs the whole test suite (cargo-nextest if present, else cargo test);
#   4. builds the fuzz targets and runs each for 15 s (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pkg in netcat-openbsd ncat socat iproute2 man-db redis-server openssl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "test.sh: please install: ${missing[*]} (tests use them as peers)" >&2
    exit 1
  fi
fi
command -v python3 >/dev/null || { echo "test.sh: python3 is required (seed peers)" >&2; exit 1; }

# The LAN tests build hosts out of network namespaces. Say so up front if
# this machine cannot: they are then skipped (under CI they fail instead).
probe_ns="sktest-probe-$$"
if ip netns add "$probe_ns" 2>/dev/null; then
  ip netns del "$probe_ns"
else
  echo "test.sh: WARNING: cannot create network namespaces (not root?);" \
    "the LAN tests (tests/lan.rs) will be SKIPPED" >&2
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked
else
  cargo test --workspace --locked
fi

# The fuzz targets (fuzz/, their own workspace): linted, built, and each
# run for FUZZ_SECS [15] seconds on its seed corpus. FUZZ_SECS=0 skips
# them (a quick local run); CI runs them.
(cd fuzz && cargo fmt --check)
# Its lock file must follow the library's dependencies even when the runs
# are skipped (FUZZ_SECS=0), or CI's fuzz build fails on --locked.
(cd fuzz && cargo metadata --locked --format-version 1 >/dev/null)
cargo clippy --lib --features fuzzing --locked -- -D warnings
if [ "${FUZZ_SECS:-15}" != 0 ]; then
  ./scripts/fuzz.sh "${FUZZ_SECS:-15}"
fi
