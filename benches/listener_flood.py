#!/usr/bin/env python3
"""The listener under floods, bounded: the daemon's peak memory against its limits.

    python3 benches/listener_flood.py --volley target/release/volley [--auth N] [--data N --mib M]

Starts `volley run` with a submission listener (STARTTLS, a self-signed
certificate, one AUTH user) on 127.0.0.1 and then:

1. AUTH flood: N sessions at once (default 100) from ten loopback addresses,
   each STARTTLS then AUTH PLAIN with a wrong password. `[server]
   max_auth_failures` is set high so that every attempt is checked (argon2id,
   ~19 MiB each): the figure is what `max_auth_checks` (one check per core)
   holds memory to.
2. DATA flood: N sessions at once (default 40) from trusted loopback, each
   sending an M MiB message (default 20) without SIZE=, against `[server]
   max_buffered_bytes = 256 MiB`: those that do not fit get 452 4.3.1.

Prints the daemon's peak RSS (VmHWM) after each phase and the replies counted,
and writes benches/results/listener-flood-<date>.json. Everything stays on
127.0.0.0/8; every loop is bounded.
"""

import argparse
import base64
import datetime
import json
import os
import smtplib
import ssl
import subprocess
import tempfile
import threading
import time

from e2e import free_port, wait_listening
from submit import vm_hwm_mb


def auth_once(port, source, results, lock):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        s = smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=120)
        s.ehlo("flood.test")
        s.starttls(context=ctx)
        s.ehlo("flood.test")
        token = base64.b64encode(b"\0alice\0wrong-password").decode()
        code, _ = s.docmd("AUTH", f"PLAIN {token}")
        s.close()
    except Exception as e:  # counted, not raised: the flood goes on
        code = f"error: {type(e).__name__}"
    with lock:
        results[str(code)] = results.get(str(code), 0) + 1


def data_once(port, mib, results, lock):
    body = ("Subject: flood\r\n\r\n" + ("x" * 78 + "\r\n") * (mib * 1024 * 1024 // 80)).encode()
    try:
        s = smtplib.SMTP("127.0.0.1", port, timeout=300)
        s.ehlo("flood.test")
        s.mail("a@flood.test")
        s.rcpt("b@remote.test")
        code, _ = s.docmd("DATA")
        if code == 354:
            s.send(body + b".\r\n")
            code, _ = s.getreply()
        s.close()
    except Exception as e:
        code = f"error: {type(e).__name__}"
    with lock:
        results[str(code)] = results.get(str(code), 0) + 1


def flood(target, n, *args):
    results, lock = {}, threading.Lock()
    threads = [threading.Thread(target=target, args=args + (results, lock)) for _ in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    return results, time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--volley", required=True)
    ap.add_argument("--auth", type=int, default=100)
    ap.add_argument("--data", type=int, default=40)
    ap.add_argument("--mib", type=int, default=20)
    args = ap.parse_args()
    volley = os.path.abspath(args.volley)
    work = tempfile.mkdtemp(prefix="volley-flood-")
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=flood.test"], check=True, capture_output=True)
    hashed = subprocess.run([volley, "hash-password"], input="secret\n", capture_output=True, text=True,
                            check=True).stdout.strip()
    port = free_port("127.0.0.1")
    conf = os.path.join(work, "volley.toml")
    with open(conf, "w") as f:
        f.write(f'''[control]
listen = ""
[spool]
dir = "{work}/spool"
[delivery]
log = "{work}/delivery.jsonl"
[server]
hostname = "flood.test"
tls_cert_file = "{cert}"
tls_key_file = "{key}"
max_connections = 1000
max_connections_per_ip = 200
max_auth_failures = 1000
max_message_size = {(args.mib + 4) << 20}
max_buffered_bytes = {256 << 20}
[relay]
networks = ["127.0.0.1/32"]
[[route]]
domain = "*"
via = "127.0.0.1:9"
[[listen]]
address = "127.0.0.1:{port}"
role = "submission"
[[user]]
name = "alice"
password_hash = "{hashed}"
''')
    log = open(os.path.join(work, "volley.log"), "wb")
    daemon = subprocess.Popen([volley, "-C", conf, "run"], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    out = {"date": datetime.date.today().isoformat(), "cores": os.cpu_count()}
    try:
        wait_listening("127.0.0.1", port)
        out["idle_rss_mb"] = round(vm_hwm_mb(daemon.pid), 1)
        sources = [f"127.0.0.{i}" for i in range(2, 12)]
        results, lock = {}, threading.Lock()
        threads = [threading.Thread(target=auth_once, args=(port, sources[i % len(sources)], results, lock))
                   for i in range(args.auth)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        out["auth"] = {"sessions": args.auth, "replies": results, "seconds": round(time.monotonic() - t0, 1),
                       "peak_rss_mb": round(vm_hwm_mb(daemon.pid), 1)}
        print("AUTH flood:", json.dumps(out["auth"]), flush=True)
        results, secs = flood(data_once, args.data, port, args.mib)
        out["data"] = {"sessions": args.data, "mib": args.mib, "budget_mib": 256, "replies": results,
                       "seconds": round(secs, 1), "peak_rss_mb": round(vm_hwm_mb(daemon.pid), 1)}
        print("DATA flood:", json.dumps(out["data"]), flush=True)
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    os.makedirs("benches/results", exist_ok=True)
    path = f"benches/results/listener-flood-{out['date']}.json"
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"written {path}")


if __name__ == "__main__":
    main()
