#!/usr/bin/env bash
# Queue benchmark: files, bytes on disk, write and recovery-scan time for N recipients
# at batch sizes 1, 10, 100 and 1000 (`volley bench queue`, once per size).
#
#   benches/queue.sh [--recipients N] [--sizes "1 10 100 1000"] [--cold]
#
# --cold drops the page cache before each scan (root only), as after a reboot.
# Writes benches/results/queue-<date>.json (one JSON object per size) and prints a
# Markdown table. Each run writes into a temporary directory that it removes.
set -euo pipefail
cd "$(dirname "$0")/.."
recipients=1000000
sizes="1 10 100 1000"
cold=()
while [ $# -gt 0 ]; do
  case "$1" in
    --recipients) recipients="$2"; shift 2 ;;
    --sizes) sizes="$2"; shift 2 ;;
    --cold) cold=(--cold); shift ;;
    *) echo "usage: $0 [--recipients N] [--sizes \"1 10 100 1000\"] [--cold]" >&2; exit 2 ;;
  esac
done
cargo build --release -q -p volley-cli
mkdir -p benches/results
out="benches/results/queue-$(date -u +%Y-%m-%d).json"
: > "$out.tmp"
for b in $sizes; do
  echo "== batch size $b" >&2
  result=$(./target/release/volley bench queue --recipients "$recipients" --batch-size "$b" "${cold[@]}")
  printf '%s\n' "$result"
  printf '%s\n' "$result" | tail -n 1 >> "$out.tmp"
done
mv "$out.tmp" "$out"
echo
echo "| batch size | files | MB on disk | bytes/recipient | write s | scan s |"
echo "|---:|---:|---:|---:|---:|---:|"
python3 - "$out" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"| {r['batch_size']} | {r['files']:,} | {r['bytes_on_disk']/1e6:,.1f} | "
          f"{r['bytes']/r['recipients']:.1f} | {r['write_s']:.2f} | {r['scan_s']:.3f} ({r['scan_cache']}) |")
PY
echo "results: $out" >&2
