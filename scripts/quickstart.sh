#!/usr/bin/env bash
# One command from a fresh clone to a running volley: builds it (release), writes a
# 100,000-recipient campaign into a demo spool (./spool-demo), runs the startup
# recovery scan, and shows the queue by destination domain and one batch.
# Needs only Rust (cargo) and a C compiler; sends no mail yet (delivery comes next).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
echo "== building volley (release)"
cargo build --release -q -p volley-cli
volley=./target/release/volley
spool=./spool-demo
rm -rf "$spool"
echo "== writing 100,000 recipients in batches of 100 into $spool"
"$volley" bench queue --recipients 100000 --batch-size 100 --dir "$spool"
echo "== recovery scan"
"$volley" queue recover --spool "$spool"
echo "== queue by destination domain (top 10)"
"$volley" queue summary --spool "$spool" | head -n 11
echo "== the first batch"
"$volley" queue show 0000000000000001-0000000000000000 --spool "$spool" --values | head -n 14
echo
echo "Done. Try: $volley queue summary --spool $spool --json, or $volley --help"
