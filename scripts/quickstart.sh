#!/usr/bin/env bash
# One command from a fresh clone to a real campaign through volley's control
# plane: builds volley (release), installs Postfix's smtp-sink if missing (as
# root, unattended; nothing else of Postfix is configured or started), starts it
# on 127.0.0.77 as the receiver, starts the volley daemon (`volley run`: the HTTP
# API on 127.0.0.77:8025, the store an SQLite file in the spool), makes an API
# token, generates 20,000 recipients with merge fields, submits a personalized
# campaign over the API and prints its progress until it completes.
# Everything stays on loopback and in ./quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
n="${QUICKSTART_RECIPIENTS:-20000}"

if ! command -v smtp-sink >/dev/null && [ ! -x /usr/sbin/smtp-sink ]; then
  [ "$(id -u)" = 0 ] || { echo "smtp-sink (Debian package postfix) is missing; run as root to install it" >&2; exit 1; }
  echo "== smtp-sink comes with Debian's postfix package (left unconfigured)"
  scripts/install-packages.sh postfix
fi

echo "== building volley (release)"
cargo build --release -q -p volley-cli
volley="$PWD/target/release/volley"
work="$PWD/quickstart"
rm -rf "$work" && mkdir -p "$work" && chmod 755 "$work"

port=2525
sink_user=(); [ "$(id -u)" = 0 ] && sink_user=(-u nobody)
/usr/sbin/smtp-sink -c "${sink_user[@]}" "127.0.0.77:$port" 1000 > "$work/sink.log" 2>&1 &
sink=$!
daemon=
trap 'kill $sink 2>/dev/null || true; [ -z "$daemon" ] || kill $daemon 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.77/$port") 2>/dev/null && break
  sleep 0.1
done

python3 - "$n" > "$work/recipients.csv" <<'PY'
import random, sys
random.seed(7)
first = ["Olivia", "Liam", "Zoë", "Noah", "Amélie", "Mateo", "Yuki", "Jürgen", "Aarav", "Ingrid"]
cities = ["Paris", "Zürich", "São Paulo", "Tokyo", "Austin", "Dublin"]
domains = ["gmail.example", "yahoo.example", "outlook.example", "corp.example", "mail.example"]
print("email,first_name,city,plan")
for i in range(int(sys.argv[1])):
    name = random.choice(first)
    print(f"{name.lower().encode('ascii','ignore').decode()}{i}@{random.choice(domains)},{name},{random.choice(cities)},{random.choice(['free','pro'])}")
PY

cat > "$work/volley.toml" <<EOF2
# The control plane: its HTTP API, and its store (unset: SPOOL/control.db).
[control]
listen = "127.0.0.77:8025"

[spool]
dir = "$work/spool"

[queue]
batch_size = 100

[delivery]
helo_name = "volley.quickstart.test"
log = "$work/delivery.jsonl"

# Every domain goes to the local sink instead of its MX: nothing leaves loopback.
[[route]]
domain = "*"
via = "127.0.0.77:$port"

[site]
max_connections = 4
max_messages_per_connection = 1000
EOF2

cat > "$work/campaign.toml" <<'EOF2'
from = "Volley Quickstart <news@volley.quickstart.test>"
subject = "Hello {{ first_name | default(\"friend\") }}, news from {{ city }}"
text = """
Hi {{ first_name }},

You are on the {{ plan }} plan. This message was rendered for you at send time.
"""
html = "<p>Hi <b>{{ first_name }}</b>,</p><p>You are on the {{ plan }} plan.</p>"
EOF2

echo "== volley run: the daemon, with its API on 127.0.0.77:8025 (log: $work/volley.log)"
"$volley" --config "$work/volley.toml" run > "$work/volley.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.77/8025") 2>/dev/null && break
  sleep 0.1
done
echo "== volley token create: an API token (shown once; only its hash is stored)"
VOLLEY_TOKEN=$("$volley" --config "$work/volley.toml" token create --name quickstart --role sender)
export VOLLEY_TOKEN
echo "$VOLLEY_TOKEN" > "$work/token"
echo "== volley campaign submit: $n recipients (the list is uploaded, then POST /v1/campaigns)"
id=$("$volley" --config "$work/volley.toml" campaign submit --template "$work/campaign.toml" \
  --recipients "$work/recipients.csv" --tag quickstart)
echo "== volley campaign show $id --follow"
"$volley" --config "$work/volley.toml" campaign show "$id" --follow
echo "== the sink counted $(grep -o "mesg=[0-9]*" "$work/sink.log" | tail -n 1 | cut -d= -f2) messages"
echo "The same over HTTP: curl -H \"Authorization: Bearer \$(cat $work/token)\" http://127.0.0.77:8025/v1/campaigns/$id"
echo "Per-recipient table: $volley --config $work/volley.toml campaign recipients $id --token \$(cat $work/token)"
echo "Live views: $volley --config $work/volley.toml run, then http://127.0.0.77:8025/ (the dashboard: sign in with the token in $work/token), $volley --config $work/volley.toml top, and http://127.0.0.77:8025/metrics"
kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=
