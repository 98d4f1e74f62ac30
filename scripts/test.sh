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
# certificates), postgresql (the control plane's store: each test runs its own
# server with initdb + pg_ctl in a temporary directory on a 127.0.0.x port), curl
# (the HTTP client a mailbox provider's one-click unsubscribe POST stands for),
# chromium + chromium-driver + python3-selenium (a real browser on the web pages),
# python3-prometheus-client (its text parser reads /metrics), tmux (a terminal for
# volley top),
# python3-pip (for what Debian does not package, below).
PEERS=(postfix dnsmasq-base python3-aiosmtpd swaks libnet-ssleay-perl openssl python3-dkim postgresql curl
       chromium chromium-driver python3-selenium python3-prometheus-client tmux python3-pip)
scripts/install-packages.sh "${PEERS[@]}"
# From PyPI, pinned, into target/pylib (not the system's Python): the Standard
# Webhooks reference library, which checks volley's webhook signatures.
if ! PYTHONPATH=target/pylib /usr/bin/python3 -c 'import standardwebhooks' 2>/dev/null; then
  /usr/bin/python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --target target/pylib standardwebhooks==1.3.0
fi
# What the tests start, checked once installed: a missing peer fails here rather
# than letting its tests skip.
for peer in /usr/sbin/smtp-sink /usr/sbin/smtp-source /usr/sbin/postfix /usr/sbin/dnsmasq \
            /usr/bin/swaks /usr/bin/openssl /usr/bin/curl /usr/bin/chromium /usr/bin/chromedriver /usr/bin/tmux; do
  [ -x "$peer" ] || { echo "test peer missing: $peer" >&2; exit 1; }
done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "test peer missing: PostgreSQL's initdb" >&2; exit 1; }
/usr/bin/python3 -c 'import aiosmtpd, dkim, selenium, prometheus_client' || { echo "test peers missing: python3-aiosmtpd, python3-dkim, python3-selenium, python3-prometheus-client" >&2; exit 1; }
PYTHONPATH=target/pylib /usr/bin/python3 -c 'import standardwebhooks' || { echo "test peer missing: standardwebhooks (target/pylib)" >&2; exit 1; }

echo "== module graph"
python3 scripts/module-cycles.py
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --exclude volley-fuzz -- -D warnings
echo "== fuzz targets build"
cargo build -q -p volley-fuzz --bins
echo "== cargo test"
# Tests that cannot run here (a peer missing, no root) say so in this file.
export VOLLEY_TEST_SKIPS="$PWD/target/skipped.log"
rm -f "$VOLLEY_TEST_SKIPS"
status=0
cargo test --workspace --no-fail-fast --exclude volley-fuzz --exclude volley-benches 2>&1 | tee target/test.log || status=$?
skips=0
if [ -f "$VOLLEY_TEST_SKIPS" ]; then
  echo "== skipped tests"
  cat "$VOLLEY_TEST_SKIPS"
  skips=$(wc -l < "$VOLLEY_TEST_SKIPS")
fi
# The closing line CI reads: the sum over every test binary; a test that skipped
# itself counts as skipped, not passed.
awk -v s="$skips" '/^test result:/ {p+=$4; f+=$6; i+=$8} END {printf "%d passed, %d failed, %d skipped\n", p - s, f, i + s}' target/test.log
exit "$status"
