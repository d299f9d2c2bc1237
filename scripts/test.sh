#!/usr/bin/env bash
# Runs everything CI runs, on a fresh machine or a used one:
#   1. installs the programs the tests use as peers, if missing
#      (netcat-openbsd, ncat and socat from Debian; python3 is expected);
#   2. checks formatting and lints (warnings are errors);
#   3. runs the whole test suite (cargo-nextest if present, else cargo test).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pkg in netcat-openbsd ncat socat; do
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

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked
else
  cargo test --workspace --locked
fi
