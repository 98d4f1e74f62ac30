#!/usr/bin/env python3
"""Submission through the control plane's API until every batch is queued.

    python3 benches/submit.py --volley target/release/volley [--recipients N] [--store sqlite|postgres|both]

For each store: a fresh spool and `volley run` (its API on 127.0.0.1), a sender
token, then N recipients (address and two merge fields, ~40 bytes a row) uploaded
as CSV (`POST /v1/uploads`, streamed) and submitted (`POST /v1/campaigns`) with a
`start_at` a day ahead, so that nothing is delivered while it is measured; timed
until `GET /v1/campaigns/ID` says partitioned. Prints recipients per second for
the upload, the partitioning and both, and the daemon's peak RSS (VmHWM), and
writes benches/results/submit-<date>.json. PostgreSQL is a private server
(initdb + pg_ctl in a temporary directory on 127.0.0.9), removed afterwards.
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

# The same peers' helpers as the end-to-end benchmark (run from the repository root).
from e2e import free_port, wait_listening


def log(msg):
    print(msg, flush=True)


def call(api, method, path, token, body=None, data=None):
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(f"http://{api}{path}", data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=3600) as r:
        return json.loads(r.read())


def vm_hwm_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def postgres(work, options=""):
    """A private PostgreSQL; answers (url, stop function). `options`: more `-c name=value` for the server."""
    versions = sorted(os.listdir("/usr/lib/postgresql"), key=int)
    bin_dir = f"/usr/lib/postgresql/{versions[-1]}/bin"
    data = os.path.join(work, "pg")
    as_root = os.geteuid() == 0
    pre = ["runuser", "-u", "postgres", "--"] if as_root else []
    os.makedirs(data)
    if as_root:
        shutil.chown(work, "postgres")
        shutil.chown(data, "postgres")
    subprocess.run(pre + [f"{bin_dir}/initdb", "-D", data, "-U", "volley", "--auth=trust", "-E", "UTF8",
                          "--locale=C", "--no-sync"], check=True, capture_output=True, cwd=work)
    port = free_port("127.0.0.9")
    opts = f"-c listen_addresses=127.0.0.9 -p {port} -k {work} {options}"
    subprocess.run(pre + [f"{bin_dir}/pg_ctl", "-D", data, "-l", os.path.join(work, "pg.log"), "-o", opts,
                          "-w", "start"], check=True, capture_output=True, cwd=work)
    subprocess.run(pre + [f"{bin_dir}/createdb", "-h", "127.0.0.9", "-p", str(port), "-U", "volley", "volley"],
                   check=True, capture_output=True, cwd=work)

    def stop():
        subprocess.run(pre + [f"{bin_dir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"],
                       capture_output=True, cwd=work)
    return f"postgres://volley@127.0.0.9:{port}/volley", stop


def run_one(volley, store, n, csv_path, work):
    spool = os.path.join(work, f"spool-{store}")
    api = f"127.0.0.1:{free_port('127.0.0.1')}"
    stop_pg = None
    database = ""
    if store == "postgres":
        url, stop_pg = postgres(os.path.join(work, "pgwork"))
        database = f'database = "{url}"\n'
    conf = os.path.join(work, f"volley-{store}.toml")
    with open(conf, "w") as f:
        f.write(f'[control]\nlisten = "{api}"\n{database}[spool]\ndir = "{spool}"\n'
                f'[delivery]\nlog = "{work}/delivery-{store}.jsonl"\n')
    token = subprocess.run([volley, "-C", conf, "token", "create", "--name", "bench", "--role", "sender"],
                           check=True, capture_output=True, text=True).stdout.strip()
    out = open(os.path.join(work, f"volley-{store}.log"), "wb")
    daemon = subprocess.Popen([volley, "-C", conf, "run"], stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        host, port = api.rsplit(":", 1)
        wait_listening(host, int(port))
        base_rss = vm_hwm_mb(daemon.pid)
        start_at = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)) \
            .strftime("%Y-%m-%dT%H:%M:%SZ")
        t0 = time.monotonic()
        with open(csv_path, "rb") as f:
            up = call(api, "POST", "/v1/uploads", token, data=f)
        t_up = time.monotonic() - t0
        template = {"from": "news@bench.test", "subject": "Hi {{ first }}", "text": "Hello {{ first }} of {{ city }}"}
        c = call(api, "POST", "/v1/campaigns", token,
                 {"template": template, "upload": up["id"], "start_at": start_at})
        while not c["partitioned"]:
            time.sleep(0.1)
            c = call(api, "GET", f"/v1/campaigns/{c['id']}", token)
        total = time.monotonic() - t0
        rss = vm_hwm_mb(daemon.pid)
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
        if stop_pg:
            stop_pg()
    batches = len(os.listdir(os.path.join(spool, "active")))
    return {"store": store, "recipients": c["recipients"], "batches": batches,
            "upload_s": round(t_up, 2), "partition_s": round(total - t_up, 2), "total_s": round(total, 2),
            "recipients_per_s": round(c["recipients"] / total), "peak_rss_mb": round(rss, 1),
            "idle_rss_mb": round(base_rss, 1), "upload_mb": round(os.path.getsize(csv_path) / 1e6, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--volley", required=True)
    ap.add_argument("--recipients", type=int, default=1_000_000)
    ap.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    args = ap.parse_args()
    volley = os.path.abspath(args.volley)
    work = tempfile.mkdtemp(prefix="volley-submit-", dir="/tmp")
    os.chmod(work, 0o755)
    csv_path = os.path.join(work, "list.csv")
    with open(csv_path, "w") as f:
        f.write("email,first,city\n")
        for i in range(args.recipients):
            f.write(f"user{i}@d{i % 1000}.bench.test,First{i},City{i % 97}\n")
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    results = []
    try:
        for store in stores:
            log(f"== {store}: {args.recipients:,} recipients")
            r = run_one(volley, store, args.recipients, csv_path, work)
            log(json.dumps(r))
            results.append(r)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'store':10} {'recipients':>10} {'upload s':>9} {'partition s':>12} {'total s':>8} "
          f"{'rcpt/s':>9} {'peak RSS MB':>12}")
    for r in results:
        print(f"{r['store']:10} {r['recipients']:>10,} {r['upload_s']:>9} {r['partition_s']:>12} "
              f"{r['total_s']:>8} {r['recipients_per_s']:>9,} {r['peak_rss_mb']:>12}")
    os.makedirs("benches/results", exist_ok=True)
    path = f"benches/results/submit-{datetime.date.today().isoformat()}.json"
    with open(path, "w") as f:
        json.dump({"date": datetime.date.today().isoformat(), "cores": os.cpu_count(), "results": results}, f,
                  indent=1)
    log(f"written {path}")


if __name__ == "__main__":
    main()
