#!/usr/bin/env bash
# Installs the test peers and runs every test: formatting, lints, the fuzz targets'
# build, and the whole test suite (unit, property, end-to-end against real peers).
# Runs unattended (no standard input), as root on Debian, or as a user who already
# has the peers installed. Every peer a test starts binds to 127.0.0.0/8 only.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the end-to-end tests start (each test starts its own instance on
# 127.0.0.x): postfix (smtp-sink, smtp-source, a full MTA), dnsmasq-base (the binary
# without the system service), python3-aiosmtpd (scripted receivers, run with
# /usr/bin/python3), swaks (SMTP client) with libnet-ssleay-perl (its STARTTLS and
# implicit TLS; only recommended by swaks, so not pulled in here), openssl (test
# certificates).
PEERS=(postfix dnsmasq-base python3-aiosmtpd swaks libnet-ssleay-perl openssl python3-dkim)
scripts/install-packages.sh "${PEERS[@]}"

echo "== module graph"
python3 scripts/module-cycles.py
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --exclude volley-fuzz -- -D warnings
echo "== fuzz targets build"
cargo build -q -p volley-fuzz --bins
echo "== cargo test"
cargo test --workspace --exclude volley-fuzz --exclude volley-benches 2>&1 | tee target/test.log
# The closing line CI reads: the sum over every test binary.
awk '/^test result:/ {p+=$4; f+=$6; i+=$8} END {printf "%d passed, %d failed, %d skipped\n", p, f, i}' target/test.log
