#!/usr/bin/env bash
# End-to-end benchmark against real peers, on loopback only:
#
#   benches/e2e.sh [--recipients N] [--sites S] [--dkim none|ed25519|rsa2048]
#                  [--postfix-cap M] [--no-postfix] [--no-source] [--rounds K]
#                  [--spool-fs auto|loop|host] [--threads T] [--profile] [--tag T]
#
# (defaults 1,000,000 / 10 / none / 100,000). It starts dnsmasq serving MX records
# for 1,000 domains spread over S sites, one smtp-sink per site on its own
# 127.0.0.x address, then measures three senders into the same sinks, one after
# the other, each with fresh sinks:
#   - sink limit: smtp-source (Postfix's load generator), same message size;
#   - volley: `volley send` of N personalized recipients (5 merge fields, text +
#     HTML, ~5 KB rendered) through its own MX resolution;
#   - Postfix: a private Postfix instance relaying min(N, M) messages.
# For each: messages/s end to end, CPU per message, peak RSS. The last line printed
# is one JSON object with the headline figures; the full result goes to
# benches/results/e2e-<date>[-dkim].json with a plot of volley's messages/s over
# time (e2e-<date>[-dkim].svg). The queues of volley and Postfix go on a fresh
# loop-mounted ext4 made for the run (--spool-fs); --rounds K alternates the sink
# limit and volley K times and reports the median CPU ratio. Installs postfix and
# dnsmasq-base from Debian if missing (root). Everything it starts is stopped, the
# file system unmounted and its temp dir removed at exit.
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
exec python3 benches/e2e.py --volley target/release/volley --plot target/release/e2e-plot "$@"
