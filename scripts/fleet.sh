#!/usr/bin/env bash
# One command for a whole fleet on loopback: builds volley (release), starts a
# private PostgreSQL (initdb + pg_ctl in ./fleet/pgrun, 127.0.0.80), a control
# plane (`volley control`, API on 127.0.0.80:8025), three delivery gateways
# (`volley gateway`, sending from 127.0.0.81-83) and a Postfix smtp-sink
# receiver (127.0.0.80:2525); submits a 100,000-recipient campaign over the
# API, kills one gateway (kill -9) halfway, and prints the per-gateway table
# and the final counts when the campaign completes. Installs postfix and
# postgresql first if they are missing (as root, unattended).
# Everything stays on loopback and in ./fleet/.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
n="${FLEET_RECIPIENTS:-100000}"
ip=127.0.0.80

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ ! -x /usr/sbin/smtp-sink ] || [ -z "$pg_bin" ]; then
  [ "$(id -u)" = 0 ] || { echo "smtp-sink (postfix) or PostgreSQL is missing; run as root to install them" >&2; exit 1; }
  scripts/install-packages.sh postfix postgresql
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

echo "== building volley (release)"
cargo build --release -q -p volley-cli
volley="$PWD/target/release/volley"
work="$PWD/fleet"
rm -rf "$work" && mkdir -p "$work" && chmod 755 "$work"

pids=()
pg_up=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -z "$pg_up" ] || as_pg "$pg_bin/pg_ctl" -D "$work/pgrun/data" -m fast stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
wait_port() {
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on $1:$2" >&2; return 1
}

echo "== PostgreSQL on $ip:5432"
mkdir -p "$work/pgrun"
[ "$(id -u)" = 0 ] && chown postgres "$work/pgrun"
as_pg "$pg_bin/initdb" -D "$work/pgrun/data" -U volley --auth=trust --no-sync -E UTF8 --locale=C >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$work/pgrun/data" -l "$work/pgrun/pg.log" -w -t 60 \
  -o "-c listen_addresses=$ip -p 5432 -k $work/pgrun -c max_connections=200" start >/dev/null
pg_up=1
as_pg "$pg_bin/createdb" -h "$ip" -p 5432 -U volley volley

sink_user=(); [ "$(id -u)" = 0 ] && sink_user=(-u nobody)
/usr/sbin/smtp-sink -c "${sink_user[@]}" "$ip:2525" 1000 > "$work/sink.log" 2>&1 &
pids+=($!)
wait_port "$ip" 2525

cat > "$work/control.toml" <<EOF
[control]
listen = "$ip:8025"
database = "postgres://volley@$ip:5432/volley"
lease_ttl = "10s"
[spool]
dir = "$work/control"
EOF
export VOLLEY_LOG=warn
"$volley" -C "$work/control.toml" token create --name ops --role admin > "$work/admin.token" 2>/dev/null
"$volley" -C "$work/control.toml" token create --name gateways --role gateway > "$work/gateway.token" 2>/dev/null
VOLLEY_LOG=info "$volley" -C "$work/control.toml" control 2> "$work/control.log" &
pids+=($!)
wait_port "$ip" 8025

gw_pid=()
for g in 1 2 3; do
  cat > "$work/gw$g.toml" <<EOF
[control]
listen = ""
[spool]
dir = "$work/gw$g"
[delivery]
helo_name = "gw$g.fleet.test"
log = "$work/gw$g.jsonl"
source_addresses = ["127.0.0.$((80 + g))"]
[gateway]
name = "gw$g"
control = ["http://$ip:8025"]
token_file = "$work/gateway.token"
max_batches = 32
[[route]]
domain = "*"
via = "$ip:2525"
EOF
  VOLLEY_LOG=info "$volley" -C "$work/gw$g.toml" gateway 2> "$work/gw$g.log" &
  gw_pid+=($!)
  pids+=($!)
done

python3 - "$n" > "$work/recipients.csv" <<'PY'
import sys
print("email,first_name")
for i in range(int(sys.argv[1])):
    print(f"user{i}@d{i % 20}.fleet.test,Name{i}")
PY
cat > "$work/campaign.toml" <<'EOF'
from = "Fleet News <news@fleet.test>"
subject = "Hello {{ first_name }}"
text = "Hi {{ first_name }}, this came through a fleet."
EOF

export VOLLEY_TOKEN; VOLLEY_TOKEN=$(cat "$work/admin.token")
api="http://$ip:8025"
id=$("$volley" -C "$work/control.toml" campaign submit --api "$api" \
  --template "$work/campaign.toml" --recipients "$work/recipients.csv" --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "== campaign $id: $n recipients, 3 gateways"
show() { "$volley" -C "$work/control.toml" campaign show "$id" --api "$api" --json; }
field() { show | python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }
killed=
for _ in $(seq 1200); do
  delivered=$(field delivered)
  state=$(field state)
  if [ -z "$killed" ] && [ "$delivered" -ge $((n / 2)) ]; then
    kill -9 "${gw_pid[0]}"; wait "${gw_pid[0]}" 2>/dev/null || true; killed=1
    echo "== gw1 killed (kill -9) at $delivered delivered"
  fi
  [ "$state" = completed ] && break
  sleep 0.5
done
[ "$(field state)" = completed ] || { echo "the campaign did not complete: see $work/*.log" >&2; exit 1; }

# The killed gateway shows as lost once it has been silent for lease_ttl.
for _ in $(seq 60); do
  curl -s -H "Authorization: Bearer $VOLLEY_TOKEN" "$api/v1/gateways" | grep -q '"name":"gw1","state":"lost"\|"state":"lost"' && break
  sleep 0.5
done
echo "== gateways (GET /v1/gateways)"
curl -s -H "Authorization: Bearer $VOLLEY_TOKEN" "$api/v1/gateways" | python3 -c '
import json, sys
print("%-8s %-6s %10s %7s %6s" % ("gateway", "state", "delivered", "leases", "sites"))
for g in json.load(sys.stdin)["gateways"]:
    print("%-8s %-6s %10d %7d %6d" % (g["name"], g["state"], g["delivered"], g["leases"], len(g["sites"])))'
echo "== campaign $id"
show | python3 -c '
import json, sys
c = json.load(sys.stdin)
for k in ["state", "recipients", "delivered", "bounced", "resent_after_failure", "msgs_per_s", "started_at", "completed_at"]:
    print("%-22s %s" % (k, c[k]))'
received=$(tr '\r' '\n' < "$work/sink.log" | grep -o 'mesg=[0-9]*' | tail -1 | cut -d= -f2)
echo "received by the sink    ${received:-0} (duplicates at most resent_after_failure)"
