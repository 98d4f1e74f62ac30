#!/usr/bin/env bash
# Micro benchmarks of the per-message hot paths (divan). Prints divan's table and
# saves it to benches/results/micro-<date>.txt. Figures on a shared 2-core VM are
# noisy: compare runs taken back to back, not across days.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benches/results
out="benches/results/micro-$(date -u +%Y-%m-%d).txt"
cargo bench -q -p volley-benches --bench micro -- "$@" | tee "$out"
echo "results: $out" >&2
