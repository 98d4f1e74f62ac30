#!/usr/bin/env python3
"""The lease service alone: simulated gateways against `volley control` on a
private PostgreSQL, no SMTP.

    python3 benches/lease.py --volley target/release/volley [--gateways 100] [--recipients 200000]

Submits one campaign of N recipients (batches of 100), waits until it is cut,
then runs G simulated gateways (threads with keep-alive HTTP connections), each
looping: POST /v1/leases for up to 8 batches, then one POST /v1/reports that
completes them all (every recipient delivered), until nothing is left. Prints
batches leased and completed per second, lease latency (p50, p99) and the
control plane's CPU, and writes benches/results/lease-<date>.json and an SVG
plot of the latency distribution. Everything on 127.0.0.0/8; bounded by the
campaign's size and a time limit.
"""

import argparse
import datetime
import http.client
import json
import os
import subprocess
import tempfile
import threading
import time

from e2e import free_port, wait_listening
from submit import postgres


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds():
    """CPU of every running `postgres` process (the private server is the only one)."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            total += cpu_seconds(pid)
        except (OSError, IndexError, ValueError):
            continue
    return total


class Client:
    def __init__(self, host, port, token):
        self.conn = http.client.HTTPConnection(host, port, timeout=120)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(self, path, body):
        return self.post_text(path, json.dumps(body))

    def post_text(self, path, text):
        self.conn.request("POST", path, body=text, headers=self.headers)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data else None


# A completed batch's recipients as a gateway reports them, all delivered.
ALL_DELIVERED = json.dumps([[i, "", "delivered", 1, 250, "2.0.0", "", 0] for i in range(100)])


def gateway(name, host, port, token, want, deadline, out, lock):
    c = Client(host, port, token)
    latencies, leased, done, stale, last = [], 0, 0, 0, 0.0
    idle = 0
    while time.monotonic() < deadline and idle < 2:
        t0 = time.monotonic()
        status, answer = c.post("/v1/leases", {"gateway": name, "want": want, "wait_ms": 1000})
        latencies.append(time.monotonic() - t0)
        leases = answer["leases"] if status == 200 else []
        if not leases:
            idle += 1
            continue
        idle = 0
        leased += len(leases)
        # The body as text around one pre-encoded recipients list (every batch
        # completes the same way): the simulated gateways share the 2 cores
        # with the service they measure, so they spend as little as they can.
        finished = ", ".join(f'{{"campaign": {l["campaign"]}, "batch": {l["batch"]}, "epoch": {l["epoch"]}, '
                         f'"domains": [], "recipients": {ALL_DELIVERED}}}' for l in leases)
        status, answer = c.post_text("/v1/reports", f'{{"gateway": {json.dumps(name)}, "done": [{finished}]}}')
        if status == 409:
            stale += len(answer["stale"])
        done += len(leases) - (len(answer["stale"]) if status == 409 else 0)
        last = time.monotonic()
    with lock:
        if done:
            out["last"] = max(out["last"], last)
        out["latencies"] += latencies
        out["leased"] += leased
        out["done"] += done
        out["stale"] += stale


def plot(latencies, path):
    """An SVG of the lease latency distribution (sorted, ms)."""
    xs = sorted(latencies)
    if not xs:
        return
    w, h, top = 600, 300, max(xs) * 1000
    pts = " ".join(f"{i * w / max(1, len(xs) - 1):.1f},{h - x * 1000 / top * h:.1f}" for i, x in enumerate(xs))
    with open(path, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w + 60}" height="{h + 40}">'
                f'<g transform="translate(50,10)"><polyline fill="none" stroke="steelblue" points="{pts}"/>'
                f'<line x1="0" y1="{h}" x2="{w}" y2="{h}" stroke="black"/><line x1="0" y1="0" x2="0" y2="{h}" stroke="black"/>'
                f'<text x="-45" y="10" font-size="11">{top:.0f} ms</text><text x="{w / 2 - 80}" y="{h + 25}" font-size="11">'
                f'lease requests, sorted by latency</text></g></svg>')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--volley", required=True)
    ap.add_argument("--gateways", type=int, default=100)
    ap.add_argument("--recipients", type=int, default=200_000)
    ap.add_argument("--want", type=int, default=8)
    ap.add_argument("--limit", type=float, default=300.0)
    ap.add_argument("--statements", action="store_true",
                    help="load pg_stat_statements and print the statements by total time")
    ap.add_argument("--tag", default="", help="suffix of the result files (lease-DATE-TAG.json)")
    args = ap.parse_args()
    volley = os.path.abspath(args.volley)
    work = tempfile.mkdtemp(prefix="volley-lease-")
    os.chmod(work, 0o755)
    url, stop_pg = postgres(os.path.join(work, "pgwork"),
                            "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on" if args.statements else "")
    host = "127.0.0.1"
    port = free_port(host)
    conf = os.path.join(work, "control.toml")
    with open(conf, "w") as f:
        f.write(f'[control]\nlisten = "{host}:{port}"\ndatabase = "{url}"\n[spool]\ndir = "{work}/spool"\n')
    def token(role):
        return subprocess.run([volley, "-C", conf, "token", "create", "--name", f"bench-{role}", "--role", role],
                              check=True, capture_output=True, text=True).stdout.strip()
    admin, gw = token("admin"), token("gateway")
    log = open(os.path.join(work, "control.log"), "wb")
    control = subprocess.Popen([volley, "-C", conf, "control"], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        wait_listening(host, port)
        csv = os.path.join(work, "list.csv")
        with open(csv, "w") as f:
            f.write("email\n")
            for i in range(args.recipients):
                f.write(f"u{i}@d{i % 50}.test\n")
        tpl = os.path.join(work, "t.toml")
        with open(tpl, "w") as f:
            f.write('from = "news@acme.test"\nsubject = "Hi"\ntext = "Hello"\n')
        subprocess.run([volley, "-C", conf, "campaign", "submit", "--api", f"http://{host}:{port}", "--token", admin,
                        "--template", tpl, "--recipients", csv, "--json"], check=True, capture_output=True)
        batches = args.recipients // 100
        # Wait for the cut (batches stored) before timing.
        c = Client(host, port, admin)
        for _ in range(600):
            c.conn.request("GET", "/v1/campaigns?limit=1", headers=c.headers)
            r = json.loads(c.conn.getresponse().read())
            camp = r["campaigns"][0] if r.get("campaigns") else {}
            if camp.get("partitioned") and camp.get("state") == "sending":
                break
            time.sleep(0.5)
        out = {"latencies": [], "leased": 0, "done": 0, "stale": 0, "last": 0.0}
        lock = threading.Lock()
        deadline = time.monotonic() + args.limit
        cpu0, pg0, own0 = cpu_seconds(control.pid), postgres_cpu_seconds(), sum(os.times()[:2])
        t0 = time.monotonic()
        threads = [threading.Thread(target=gateway, args=(f"sim{i}", host, port, gw, args.want, deadline, out, lock))
                   for i in range(args.gateways)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Until the last completion: the final idle polls are not work.
        elapsed = out["last"] - t0
        cpu = cpu_seconds(control.pid) - cpu0
        pg_cpu = postgres_cpu_seconds() - pg0
        own_cpu = sum(os.times()[:2]) - own0
        lat = sorted(out["latencies"])
        busy = [x for x in lat if x < 0.9] or lat
        result = {
            "date": datetime.date.today().isoformat(), "cores": os.cpu_count(), "gateways": args.gateways,
            "recipients": args.recipients, "batches": batches, "want": args.want,
            "leased": out["leased"], "completed": out["done"], "stale": out["stale"],
            "seconds": round(elapsed, 2),
            "batches_per_s": round(out["done"] / elapsed, 1),
            "recipients_per_s": round(out["done"] * 100 / elapsed),
            "lease_p50_ms": round(busy[len(busy) // 2] * 1000, 1),
            "lease_p99_ms": round(busy[int(len(busy) * 0.99)] * 1000, 1),
            "control_cpu_s": round(cpu, 2),
            "postgres_cpu_s": round(pg_cpu, 2),
            "clients_cpu_s": round(own_cpu, 2),
            "note": "seconds: from the first request to the last completion; the 100 simulated gateways are Python threads on the same 2 cores",
        }
        print(json.dumps(result, indent=1))
        if args.statements:
            query = ("CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT calls, round(total_exec_time) AS ms, "
                     "round((total_exec_time / greatest(calls, 1))::numeric, 3) AS ms_each, rows, shared_blks_hit / greatest(calls, 1) AS blocks_each, round(total_plan_time) AS plan_ms, left(regexp_replace(query, '\\s+', ' ', 'g'), 160) "
                     "FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 25")
            shown = subprocess.run(["psql", url, "-c", query], capture_output=True, text=True)
            print(shown.stdout, shown.stderr)
        os.makedirs("benches/results", exist_ok=True)
        path = f"benches/results/lease-{result['date']}" + (f"-{args.tag}" if args.tag else "")
        with open(path + ".json", "w") as f:
            json.dump(result, f, indent=1)
        plot(busy, path + ".svg")
        print(f"written {path}.json and .svg")
    finally:
        control.terminate()
        control.wait(timeout=60)
        stop_pg()


if __name__ == "__main__":
    main()
