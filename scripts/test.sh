#!/usr/bin/env bash
# Runs every test of fablab: formatting and lints, unit, property and integration
# tests, the external-decoder tests (tshark, scapy) and, as root, the
# network-namespace tests. Usage: sudo scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "setup (Debian packages)"
scripts/setup.sh

if [ "$(id -u)" -ne 0 ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "scripts/test.sh: CI must run as root (network-namespace tests need it)" >&2
    exit 1
  fi
  echo "warning: not root: tests that need network namespaces will fail; run: sudo scripts/test.sh" >&2
fi

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "fuzz target compiles (dataplane/fuzz)"
cargo check --manifest-path dataplane/fuzz/Cargo.toml --quiet

step "cargo test (workspace)"
# The emu test runs below, optimized: it measures a datapath against wall-clock link
# rates, and a debug build cannot keep up with them.
cargo test --workspace --locked --no-fail-fast -- --skip emu_on_network_namespaces 2>&1 |
  tee target/test-output.txt

step "emu on network namespaces (release build)"
cargo test --release --locked -p fablab --test emu 2>&1 | tee -a target/test-output.txt

# One closing line over every test binary, for humans and for CI's reader.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "total: %d passed, %d failed, %d skipped\n", p, f, i }' target/test-output.txt
