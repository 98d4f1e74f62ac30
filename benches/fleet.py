#!/usr/bin/env python3
"""The fleet end to end: `volley control` on a private PostgreSQL, G `volley
gateway`s on their own source addresses, Postfix's smtp-sink as the receiver.

    python3 benches/fleet.py --volley target/release/volley scaling [--gateways 1,2,3]
        [--recipients 6000] [--delay 1] [--connections 100]
    python3 benches/fleet.py --volley target/release/volley batches [--sizes 10,100,1000,10000]
        [--recipients 100000]

scaling: receivers whose replies are delayed (`smtp-sink -w DELAY`: each DATA
answered DELAY seconds late), so that delivery is bound by latency, not by this
machine's 2 cores; each gateway may hold CONNECTIONS connections
(`[delivery] max_connections`), the site's fleet-wide limit is far above, and
a connection carries 10 messages (`[site] max_messages_per_connection`; the
engine opens a connection per that many recipients queued). For 1, 2
and 3 gateways: seconds from the campaign's first lease to its completion,
msgs/s, the speed-up over one gateway, and the control plane's CPU per million
recipients.

batches: the batch-ratio sweep for performance engineers. Two gateways, an
undelayed smtp-sink, one campaign per batch size (`[queue] batch_size`); one
gateway is killed (-9) at 30% and restarted. Per size: batch files and their
bytes in the store per 1M recipients, the partition time, end-to-end msgs/s,
lease requests per 1M (`volley_lease_seconds_count`), and the recipients re-sent
after the kill (`resent_after_failure`).

Each run has its own PostgreSQL, control plane, gateways and sink (nothing
carries over). Results go to benches/results/fleet-<mode>-<date>.json with an
SVG plot. Everything on 127.0.0.0/8; every wait is bounded.
"""

import argparse
import datetime
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from e2e import SINK, free_port, wait_listening
from lease import cpu_seconds
from submit import postgres

HOST = "127.0.0.60"


def api(port, token, method, path):
    c = http.client.HTTPConnection(HOST, port, timeout=30)
    c.request(method, path, headers={"Authorization": f"Bearer {token}"})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def get(port, token, path):
    status, body = api(port, token, "GET", path)
    if status != 200:
        raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
    return json.loads(body)


def metric(port, name):
    """The sum of a metric's samples on the control plane's /metrics."""
    c = http.client.HTTPConnection(HOST, port, timeout=30)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


class Fleet:
    """One run's processes, stopped by close()."""

    def __init__(self, volley, work, gateways, batch_size, delay, connections, per_connection):
        self.volley, self.work, self.procs = volley, work, {}
        self.url, self.stop_pg = postgres(os.path.join(work, "pgwork"))
        self.sink_port = free_port(HOST)
        sink_args = [SINK, "-c"] + (["-u", "nobody"] if os.geteuid() == 0 else []) + \
            (["-w", str(delay)] if delay else []) + [f"{HOST}:{self.sink_port}", "1024"]
        self.procs["sink"] = subprocess.Popen(sink_args, cwd=work, stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(HOST, self.sink_port)
        self.port = free_port(HOST)
        self.conf = os.path.join(work, "control.toml")
        with open(self.conf, "w") as f:
            f.write(f'[control]\nlisten = "{HOST}:{self.port}"\ndatabase = "{self.url}"\nlease_ttl = "5s"\n'
                    f'[spool]\ndir = "{work}/control"\n[queue]\nbatch_size = {batch_size}\n')
        self.admin = self.token("admin")
        with open(os.path.join(work, "gateway.token"), "w") as f:
            f.write(self.token("gateway"))
        self.start("control", [volley, "-C", self.conf, "control"])
        wait_listening(HOST, self.port)
        for g in range(1, gateways + 1):
            source = f"127.0.0.{60 + g}"
            conf = os.path.join(work, f"gw{g}.toml")
            with open(conf, "w") as f:
                f.write(f'[control]\nlisten = ""\nlease_ttl = "5s"\n[spool]\ndir = "{work}/gw{g}"\n'
                        f'[delivery]\nhelo_name = "gw{g}.bench"\nsource_addresses = ["{source}"]\nlog = "{work}/gw{g}.jsonl"\n'
                        f'max_connections = {connections}\n'
                        f'[site]\nmax_connections = 10000\nmax_messages_per_connection = {per_connection}\n'
                        f'[gateway]\nname = "gw{g}"\ncontrol = ["http://{HOST}:{self.port}"]\n'
                        f'token_file = "{work}/gateway.token"\nmax_batches = 64\n'
                        f'[[route]]\ndomain = "*"\nvia = "{HOST}:{self.sink_port}"\n')
            self.start(f"gw{g}", [volley, "-C", conf, "gateway"])

    def token(self, role):
        return subprocess.run([self.volley, "-C", self.conf, "token", "create", "--name", f"bench-{role}",
                               "--role", role], check=True, capture_output=True, text=True).stdout.strip()

    def start(self, name, argv):
        log = open(os.path.join(self.work, f"{name}.log"), "ab")
        self.procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            env={**os.environ, "VOLLEY_LOG": os.environ.get("VOLLEY_LOG", "warn")})

    def submit(self, n, domains=50):
        csv = os.path.join(self.work, "list.csv")
        with open(csv, "w") as f:
            f.write("email,name\n")
            for i in range(n):
                f.write(f"u{i}@d{i % domains}.test,N{i}\n")
        tpl = os.path.join(self.work, "t.toml")
        with open(tpl, "w") as f:
            f.write('from = "news@acme.test"\nsubject = "Hi {{ name }}"\ntext = "Hello {{ name }}, ' +
                    "x" * 2000 + '"\n')
        out = subprocess.run([self.volley, "-C", self.conf, "campaign", "submit", "--api",
                              f"http://{HOST}:{self.port}", "--token", self.admin, "--template", tpl,
                              "--recipients", csv, "--json"], check=True, capture_output=True, text=True)
        return json.loads(out.stdout)["id"]

    def view(self, cid):
        return get(self.port, self.admin, f"/v1/campaigns/{cid}")

    def wait(self, cid, until, limit_s, step=0.1):
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            v = self.view(cid)
            if until(v):
                return v
            time.sleep(step)
        raise RuntimeError(f"campaign {cid}: not there in {limit_s} s: {v}")

    def close(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.stop_pg()


def one_run(args, work, gateways, batch_size, delay, kill=False, domains=50):
    # Latency-bound: a connection per 10 queued recipients; else the default.
    per_connection = 10 if delay else 100
    fleet = Fleet(os.path.abspath(args.volley), work, gateways, batch_size, delay, args.connections,
                  per_connection)
    try:
        cpu0 = cpu_seconds(fleet.procs["control"].pid)
        t_submit = time.monotonic()
        cid = fleet.submit(args.recipients, domains)
        fleet.wait(cid, lambda v: v.get("partitioned"), 600, 0.05)
        t_cut = time.monotonic()
        fleet.wait(cid, lambda v: v.get("delivered", 0) > 0, 120, 0.05)
        t_first = time.monotonic()
        killed = False
        if kill:
            fleet.wait(cid, lambda v: v.get("delivered", 0) >= 0.3 * args.recipients, 600, 0.05)
            fleet.procs["gw1"].send_signal(signal.SIGKILL)
            fleet.procs["gw1"].wait()
            fleet.start("gw1", [fleet.volley, "-C", os.path.join(work, "gw1.toml"), "gateway"])
            killed = True
        v = fleet.wait(cid, lambda v: v.get("state") == "completed", 1800, 0.1)
        t_done = time.monotonic()
        cpu = cpu_seconds(fleet.procs["control"].pid) - cpu0
        leases = metric(fleet.port, "volley_lease_seconds_count")
        psql = shutil.which("psql") or next(
            (f"/usr/lib/postgresql/{d}/bin/psql" for d in sorted(os.listdir("/usr/lib/postgresql"), key=int)), "psql")
        q = subprocess.run([psql, fleet.url, "-At", "-c",
                            f"SELECT count(*), coalesce(sum(length(bytes)), 0) FROM batch_files WHERE campaign = {cid}"],
                           capture_output=True, text=True)
        files, file_bytes = (int(x) for x in q.stdout.strip().split("|")) if q.returncode == 0 else (0, 0)
        per_m = 1_000_000 / args.recipients
        return {
            "gateways": gateways, "batch_size": batch_size, "delay_s": delay, "recipients": args.recipients,
            "delivered": v["delivered"], "killed": killed,
            "partition_s": round(t_cut - t_submit, 2),
            "seconds": round(t_done - t_first, 2),
            "msgs_per_s": round(args.recipients / (t_done - t_first), 1),
            "control_cpu_s": round(cpu, 2),
            "control_cpu_s_per_1m": round(cpu * per_m, 1),
            "lease_requests_per_1m": round(leases * per_m),
            "batch_files_per_1m": round(files * per_m),
            "batch_mb_per_1m": round(file_bytes * per_m / 1e6, 1),
            "resent_after_failure": v.get("resent_after_failure", 0),
        }
    finally:
        fleet.close()


def svg(path, xs, ys, xlabel, ylabel, log_x=False):
    import math
    w, h = 500, 260
    fx = (lambda x: math.log10(x)) if log_x else (lambda x: x)
    x0, x1 = fx(min(xs)), fx(max(xs))
    top = max(ys) * 1.1 or 1
    pt = lambda x, y: (40 + (fx(x) - x0) / ((x1 - x0) or 1) * w, 10 + h - y / top * h)
    pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in (pt(x, y) for x, y in zip(xs, ys)))
    labels = "".join(f'<text x="{pt(x, y)[0]:.1f}" y="{h + 28}" font-size="11">{x}</text>'
                     f'<text x="{pt(x, y)[0] + 4:.1f}" y="{pt(x, y)[1] - 4:.1f}" font-size="11">{y:,.0f}</text>'
                     for x, y in zip(xs, ys))
    with open(path, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w + 80}" height="{h + 60}">'
                f'<polyline fill="none" stroke="steelblue" stroke-width="2" points="{pts}"/>{labels}'
                f'<line x1="40" y1="{h + 10}" x2="{w + 40}" y2="{h + 10}" stroke="black"/>'
                f'<text x="{w / 2}" y="{h + 50}" font-size="12">{xlabel}</text>'
                f'<text x="0" y="10" font-size="12">{ylabel}</text></svg>')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--volley", required=True)
    ap.add_argument("mode", choices=["scaling", "batches"])
    ap.add_argument("--gateways", default="1,2,3")
    ap.add_argument("--sizes", default="10,100,1000,10000")
    ap.add_argument("--recipients", type=int, default=None)
    ap.add_argument("--delay", type=int, default=1, help="scaling: seconds smtp-sink waits before each DATA reply")
    ap.add_argument("--connections", type=int, default=100, help="[delivery] max_connections per gateway")
    args = ap.parse_args()
    rows = []
    if args.mode == "scaling":
        args.recipients = args.recipients or 6000
        for g in [int(x) for x in args.gateways.split(",")]:
            work = tempfile.mkdtemp(prefix="volley-fleet-")
            os.chmod(work, 0o755)
            rows.append(one_run(args, work, g, 100, args.delay))
            print(json.dumps(rows[-1]), flush=True)
        base = rows[0]["msgs_per_s"] / rows[0]["gateways"]
        for r in rows:
            r["speedup_vs_one"] = round(r["msgs_per_s"] / base, 2)
        print(f"\n{'gateways':>8} {'seconds':>8} {'msgs/s':>8} {'speed-up':>8} {'control CPU s/1M':>16}")
        for r in rows:
            print(f"{r['gateways']:>8} {r['seconds']:>8} {r['msgs_per_s']:>8,.0f} {r['speedup_vs_one']:>8} "
                  f"{r['control_cpu_s_per_1m']:>16}")
    else:
        args.recipients = args.recipients or 100_000
        args.delay = 0
        for size in [int(x) for x in args.sizes.split(",")]:
            work = tempfile.mkdtemp(prefix="volley-fleet-")
            os.chmod(work, 0o755)
            # Five domains: a batch holds one domain's recipients, so 10,000 fit.
            rows.append(one_run(args, work, 2, size, 0, kill=True, domains=5))
            print(json.dumps(rows[-1]), flush=True)
        print(f"\n{'batch':>6} {'files/1M':>9} {'MB/1M':>7} {'cut s':>6} {'msgs/s':>8} {'leases/1M':>10} {'resent':>7}")
        for r in rows:
            print(f"{r['batch_size']:>6} {r['batch_files_per_1m']:>9,} {r['batch_mb_per_1m']:>7} "
                  f"{r['partition_s']:>6} {r['msgs_per_s']:>8,.0f} {r['lease_requests_per_1m']:>10,} "
                  f"{r['resent_after_failure']:>7}")
    date = datetime.date.today().isoformat()
    os.makedirs("benches/results", exist_ok=True)
    path = f"benches/results/fleet-{args.mode}-{date}"
    with open(path + ".json", "w") as f:
        json.dump({"date": date, "cores": os.cpu_count(), "mode": args.mode, "runs": rows}, f, indent=1)
    if args.mode == "scaling":
        svg(path + ".svg", [r["gateways"] for r in rows], [r["msgs_per_s"] for r in rows], "gateways", "msgs/s")
    else:
        svg(path + ".svg", [r["batch_size"] for r in rows], [r["msgs_per_s"] for r in rows],
            "recipients per batch", "msgs/s end to end", log_x=True)
    print(f"written {path}.json and .svg")


if __name__ == "__main__":
    sys.exit(main())
