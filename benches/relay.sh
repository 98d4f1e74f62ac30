#!/usr/bin/env bash
# The relay path's benchmark, on loopback only:
#
#   benches/relay.sh [--messages N] [--rcpts R] [--size BYTES] [--sessions S]
#                    [--rounds K] [--no-postfix] [--windows W1,W2,...] [--profile] [--tag T]
#                    [--conf SECTION:LINE ...]
#
# (defaults 100,000 messages, 1 recipient, 5,000-byte bodies, 20 sessions, 1 round).
# smtp-source injects into `volley run`'s submission listener, which relays to
# smtp-sink through its own MX resolution (dnsmasq); then the same load goes
# through a private, throughput-tuned Postfix into the same kind of sink; K rounds
# alternate the two. Each phase gets a fresh spool on a fresh loop-mounted ext4.
# Printed per phase: messages/s end to end, CPU per message, peak queue files and
# bytes, bytes written to the queue's block device (journal included) and by
# volley's process, peak RSS, and volley's 250 latency (p50/p99 of the "message
# accepted" lines' commit_us). --windows runs volley once more per [queue]
# group_window value: the table an operator chooses the window from. --conf adds a
# line to a section of volley's config (e.g. 'queue:seal_after = "200ms"'). Results go to
# benches/results/relay-<date>[-rR][-tag].json with a plot of msgs/s over time
# (.svg). Installs postfix and dnsmasq-base from Debian if missing (root).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/sbin/smtp-sink ] || need+=(postfix)
[ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
if [ ${#need[@]} -gt 0 ]; then
  scripts/install-packages.sh "${need[@]}"
fi

echo "== building volley and the plot tool (release)" >&2
cargo build --release -q -p volley-cli
cargo build --release -q -p volley-benches --bin e2e-plot
exec python3 benches/relay.py --volley target/release/volley --plot target/release/e2e-plot "$@"
