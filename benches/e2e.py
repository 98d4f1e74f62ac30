#!/usr/bin/env python3
"""The end-to-end benchmark behind benches/e2e.sh (see there for usage).

Phases, one after the other, each with freshly started sinks:
  sink limit  smtp-source -> smtp-sink (one smtp-source per site, C sessions each)
  volley      volley send -> dnsmasq MX -> smtp-sink
  postfix     smtp-source -> private Postfix -> transport map -> smtp-sink
CPU is measured with wait4() rusage for single processes (volley, smtp-source,
smtp-sink) and with a cpuacct cgroup for Postfix's process tree (its daemons come
and go). The queues of volley and Postfix live on a fresh ext4 on a loop device
(see spool_fs). With --rounds K the sink limit and volley alternate K times.
Everything binds to 127.0.0.0/8; every wait has a deadline.
"""
import argparse
import base64
import datetime
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

DOMAINS = 1000
SINK_PORT = 2525
SESSIONS_PER_SITE = 4
SINK = "/usr/sbin/smtp-sink"
SOURCE = "/usr/sbin/smtp-source"
DNSMASQ = "/usr/sbin/dnsmasq"
POSTFIX = "/usr/sbin/postfix"
HERE = os.path.dirname(os.path.abspath(__file__))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def site_ip(site):
    return f"127.0.0.{101 + site}"


def domain(i):
    return f"d{i:03d}.bench.test"


def free_port(ip):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def wait_listening(ip, port, deadline_s=20):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with socket.create_connection((ip, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {ip}:{port} after {deadline_s} s")


def spool_fs(workdir, mode):
    """Where the queues go: a fresh ext4 file system (mkfs defaults, so with a
    journal, as on a typical spool partition) on a loop device, so that a run does
    not depend on what the host file system went through before it. (This VM's root
    file system is ext4 without a journal: there, inode allocation skips inodes
    freed in the last five minutes, one buffer lookup each, so a run that follows
    another pays for its predecessor's cleanup: up to ~14 µs per message of kernel
    time in volley's partitioning thread after a test suite run.) Returns the
    directory and what to unmount, or the work dir itself with mode "host" or when
    a loop mount is not possible in "auto"."""
    if mode == "host":
        return workdir, None
    img = os.path.join(workdir, "spool-fs.img")
    mnt = os.path.join(workdir, "fs")
    try:
        os.makedirs(mnt)
        with open(img, "wb") as f:
            f.truncate(4 << 30)  # sparse
        # Inode tables and journal written now, not by a background thread during
        # the run.
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E",
                        "lazy_itable_init=0,lazy_journal_init=0,nodiscard", img],
                       check=True, capture_output=True, timeout=300)
        subprocess.run(["mount", "-o", "loop", img, mnt], check=True, capture_output=True,
                       timeout=60)
        os.chmod(mnt, 0o755)
        return mnt, mnt
    except (OSError, subprocess.SubprocessError) as e:
        if mode == "loop":
            raise
        log(f"warning: no loop-mounted file system for the queues ({e}); using {workdir}")
        return workdir, None


def rusage_cpu(ru):
    return ru.ru_utime + ru.ru_stime


class Procs:
    """Processes started by the benchmark; all stopped at exit."""

    def __init__(self):
        self.procs = []

    def start(self, args, **kw):
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, deadline_s=10):
        """Stops p; returns its rusage (wait4) or None if it was already reaped."""
        if p.returncode is not None:
            return None
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                return ru
            time.sleep(0.02)
        p.kill()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        return ru

    def wait(self, p, deadline_s):
        """Waits for p to exit by itself; returns (exit code, rusage)."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                return p.returncode, ru
            time.sleep(0.01)
        self.stop(p, signal.SIGKILL)
        raise RuntimeError(f"{p.args[0]} did not finish within {deadline_s} s")

    def stop_all(self):
        for p in reversed(self.procs):
            if p.returncode is None:
                try:
                    self.stop(p, deadline_s=5)
                except Exception as e:  # keep stopping the others
                    log(f"stopping {p.args[0]}: {e}")


class Sinks:
    """One smtp-sink per site on 127.0.0.(101+site):2525."""

    def __init__(self, procs, sites, workdir, dump=None):
        self.procs = procs
        self.list = []
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        for s in range(sites):
            args = [SINK] + user + (["-d", dump] if dump else []) + [
                f"{site_ip(s)}:{SINK_PORT}", "1024"]
            err = open(os.path.join(workdir, f"sink{s}.log"), "ab")
            self.list.append(self.procs.start(args, stdout=err, stderr=err))
        for s in range(sites):
            wait_listening(site_ip(s), SINK_PORT)

    def stop(self):
        """Stops every sink; returns their summed CPU seconds."""
        cpu = 0.0
        for p in self.list:
            ru = self.procs.stop(p)
            if ru is not None:
                cpu += rusage_cpu(ru)
        return cpu


class CpuGroup:
    """A cgroup counting the CPU time of a process tree (v2 or v1 cpuacct)."""

    def __init__(self, name):
        self.path = None
        self.kind = None
        # cgroup v2 counts CPU in cpu.stat of every group; v1 needs cpuacct.
        for root, kind in (("/sys/fs/cgroup", "v2"), ("/sys/fs/cgroup/unified", "v2"),
                           ("/sys/fs/cgroup/cpuacct", "v1")):
            if kind == "v2" and not os.path.exists(os.path.join(root, "cgroup.controllers")):
                continue
            path = os.path.join(root, name)
            try:
                os.makedirs(path, exist_ok=True)
                probe = "cpu.stat" if kind == "v2" else "cpuacct.usage"
                if os.path.exists(os.path.join(path, probe)):
                    self.path, self.kind = path, kind
                    break
            except OSError:
                continue

    def enter(self):
        """For preexec_fn: moves the calling (child) process into the group."""
        if self.path:
            with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    def cpu_s(self):
        if not self.path:
            return None
        if self.kind == "v1":
            with open(os.path.join(self.path, "cpuacct.usage")) as f:
                return int(f.read()) / 1e9
        with open(os.path.join(self.path, "cpu.stat")) as f:
            for line in f:
                k, v = line.split()
                if k == "usage_usec":
                    return int(v) / 1e6
        return None

    def remove(self):
        if self.path:
            try:
                os.rmdir(self.path)
            except OSError:
                pass


FIRST = ["Olivia", "Liam", "Zoë", "Noah", "Amélie", "Mateo", "Yuki", "Jürgen", "Aarav", "Ingrid"]
LAST = ["Martin", "Müller", "García", "Tanaka", "O'Brien", "Novák", "Silva", "Kowalski"]
CITIES = ["Paris", "Zürich", "São Paulo", "Tokyo", "Austin", "Dublin", "Kraków"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay"]


def write_recipients(path, n):
    rnd = random.Random(7)
    with open(path, "w", encoding="utf-8") as f:
        f.write("email,first_name,last_name,city,company,customer_id\n")
        for j in range(n):
            f.write(f"u{j}@{domain(j % DOMAINS)},{rnd.choice(FIRST)},{rnd.choice(LAST)},"
                    f"{rnd.choice(CITIES)},{rnd.choice(COMPANIES)},C{j:08d}\n")


PARAGRAPH = ("We have been working on the things you asked for, and this month brings "
             "faster delivery, clearer reports and a calmer inbox for everyone at "
             "{{ company }}. ")


def perf_record(workdir):
    """The command volley runs under with --profile. VOLLEY_BENCH_PERF_ARGS: other
    sampling options (say "-F 299 --call-graph dwarf,8192" for callers in a build
    without frame pointers)."""
    opts = os.environ.get("VOLLEY_BENCH_PERF_ARGS", "-F 999 -g").split()
    return ["perf", "record", *opts, "-o", os.path.join(workdir, "perf.data"), "--"]


def write_template(path, web=False, links=False):
    """The campaign's template; `links`: three links in the HTML part (as a
    newsletter has them), `web`: the same links tracked, and the open image."""
    text = ("Hello {{ first_name }} {{ last_name }},\n\n"
            + "\n\n".join(PARAGRAPH for _ in range(14))
            + "\n\nYour customer number is {{ customer_id }}; we will be in "
            "{{ city }} next month.\n\nThe volley team\n")
    html = ("<html><body><h1>Hello {{ first_name }} {{ last_name }}</h1>"
            + "".join(f"<p>{PARAGRAPH}</p>" for _ in range(14))
            + "<p>Your customer number is <b>{{ customer_id }}</b>; we will be in "
            "{{ city }} next month.</p><p>The volley team</p></body></html>")
    if web or links:
        # Three links, as a newsletter has them (tracked with `web`).
        anchors = "".join(f'<a href="https://volley.bench.test/{p}?id=1&amp;x=2">{p}</a> '
                        for p in ("sale", "news", "account"))
        html = html.replace("<p>The volley team</p>", f"<p>{anchors}</p><p>The volley team</p>")
    with open(path, "w", encoding="utf-8") as f:
        if web:
            f.write("track_clicks = true\ntrack_opens = true\n")
        f.write('from = "Volley Bench <news@volley.bench.test>"\n')
        f.write('subject = "{{ first_name }}, news for {{ company }} in {{ city }}"\n')
        f.write("text = " + json.dumps(text, ensure_ascii=False) + "\n")
        f.write("html = " + json.dumps(html, ensure_ascii=False) + "\n")


def volley_config(path, spool, dns, log_path, dkim, threads=None, api=None, web=None,
                  webhook=None):
    # No [control] section unless the API is used: a binary from before the
    # control plane (an A/B's A) refuses it.
    lines = (["[control]", f'listen = "{api}"'] if api else []) + [
        "[spool]", f'dir = "{spool}"',
        "[queue]", "batch_size = 100",
        "[dns]", f'nameservers = ["{dns}"]',
        "[delivery]", f"smtp_port = {SINK_PORT}", 'helo_name = "volley.bench.test"',
        f'log = "{log_path}"',
        "[site]", f"max_connections = {SESSIONS_PER_SITE}",
        "max_messages_per_connection = 100000",
    ]
    if threads is not None:
        lines.insert(lines.index("[site]"), f"threads = {threads}")
    if dkim:
        lines += ["[[dkim]]", 'domain = "volley.bench.test"', 'selector = "bench"',
                  f'key_file = "{dkim[0]}"', f'algorithm = "{dkim[1]}"']
    if web:
        # Links in every message (List-Unsubscribe one-click, tracked clicks,
        # the open image); `volley send` writes them, nothing serves them here.
        lines += ["[web]", f'listen = "{web}"', 'base_url = "https://links.volley.bench.test"']
    if webhook:
        # Every delivery pushed to a batched webhook (url, secret file).
        lines += ["[[webhook]]", f'url = "{webhook[0]}"', f'secret_file = "{webhook[1]}"',
                  'events = ["message.delivered"]', "batch = 1000"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def dkim_key(workdir, kind):
    if kind == "none":
        return None
    path = os.path.join(workdir, f"dkim-{kind}.pem")
    if kind == "ed25519":
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", path], check=True,
                       capture_output=True)
        return path, "ed25519-sha256"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", path], check=True, capture_output=True)
    return path, "rsa-sha256"


def spool_usage(spool):
    files, size = 0, 0
    for sub in ("active", "done", "content", "campaigns"):
        d = os.path.join(spool, sub)
        if not os.path.isdir(d):
            continue
        for e in os.scandir(d):
            try:  # a batch may move from active/ to done/ under our feet
                size += e.stat().st_blocks * 512
                files += 1
            except FileNotFoundError:
                pass
    return files, size


def delivered_series(log_path, t0_wall):
    """Messages delivered per second of the run, from the delivery log's ts."""
    counts = {}
    with open(log_path, "rb") as f:
        for line in f:
            if b'"status":"delivered"' not in line:
                continue
            i = line.find(b'"ts":"') + 6
            ts = datetime.datetime.fromisoformat(line[i:i + 24].decode().replace("Z", "+00:00"))
            sec = int(ts.timestamp() - t0_wall)
            counts[sec] = counts.get(sec, 0) + 1
    if not counts:
        return []
    return [[s, counts.get(s, 0)] for s in range(0, max(counts) + 1)]


def run_source(procs, sites, n, msg_len, target_of, workdir, tag, deadline_s, preexec=None):
    """One smtp-source per site, in parallel; returns (wall s, summed CPU s)."""
    per_site = [n // sites + (1 if s < n % sites else 0) for s in range(sites)]
    started = time.monotonic()
    ps = []
    for s in range(sites):
        if per_site[s] == 0:
            continue
        host, rcpt = target_of(s)
        err = open(os.path.join(workdir, f"{tag}-source{s}.log"), "ab")
        ps.append(procs.start([SOURCE, "-d", "-s", str(SESSIONS_PER_SITE), "-l", str(msg_len),
                               "-m", str(per_site[s]), "-M", "source.bench.test",
                               "-f", "bench@volley.bench.test", "-t", rcpt, host],
                              stdout=err, stderr=err, preexec_fn=preexec))
    cpu, sys_cpu = 0.0, 0.0
    for p in ps:
        code, ru = procs.wait(p, deadline_s)
        cpu += rusage_cpu(ru)
        sys_cpu += ru.ru_stime
        if code != 0:
            raise RuntimeError(f"smtp-source exited {code}; see {workdir}/{tag}-source*.log")
    return time.monotonic() - started, cpu, sys_cpu


def settle():
    """Writes back what earlier phases left dirty (volley's delivery log is ~300 MB
    per million messages, its spool ~90 MB) before a phase starts, so that one
    phase's writeback does not run during the next and weigh on its figures."""
    os.sync()
    time.sleep(2)


def phase_sink_limit(procs, args, workdir, msg_len):
    settle()
    log(f"== sink limit: smtp-source, {args.recipients:,} messages of ~{msg_len} bytes payload")
    sinks = Sinks(procs, args.sites, workdir)
    wall, cpu, sys_cpu = run_source(procs, args.sites, args.recipients, msg_len,
                           lambda s: (f"{site_ip(s)}:{SINK_PORT}", f"user@{domain(s)}"),
                           workdir, "limit", deadline_s=3600)
    sink_cpu = sinks.stop()
    return {"messages": args.recipients, "wall_s": wall, "msgs_per_s": args.recipients / wall,
            "source_cpu_s": cpu, "source_cpu_us_per_msg": cpu / args.recipients * 1e6,
            "source_sys_us_per_msg": sys_cpu / args.recipients * 1e6,
            "sink_cpu_us_per_msg": sink_cpu / args.recipients * 1e6}


def calibrate(procs, args, workdir, volley, dns, template):
    """Sends 20 recipients through volley into dumping sinks: the message size."""
    dump = os.path.join(workdir, "dump")
    os.makedirs(dump, exist_ok=True)
    os.chmod(dump, 0o777)
    sinks = Sinks(procs, args.sites, workdir, dump=os.path.join(dump, "m"))
    rcpts = os.path.join(workdir, "calibrate.csv")
    write_recipients(rcpts, 20)
    conf = os.path.join(workdir, "calibrate.toml")
    volley_config(conf, os.path.join(workdir, "calibrate-spool"), dns,
                  os.path.join(workdir, "calibrate.jsonl"), None)
    subprocess.run([volley, "-C", conf, "send", "--template", template, "--recipients", rcpts],
                   check=True, capture_output=True, timeout=120)
    sinks.stop()
    sizes = []
    for e in os.scandir(dump):
        with open(e.path, "rb") as f:
            data = f.read()
        # smtp-sink dumps the envelope (X-Client-Addr ... lines) then the message.
        i = data.find(b"\nFrom: ")
        if i < 0:
            i = data.find(b"\nDate: ")
        sizes.append(len(data) - max(i, 0))
    if not sizes:
        raise RuntimeError("calibration: the sinks dumped no message")
    return sum(sizes) // len(sizes)


def phase_volley(procs, args, workdir, volley, dns, template, rcpts, dkim, queues, round_=0):
    settle()
    log(f"== volley: send {args.recipients:,} recipients (dkim {args.dkim})")
    # Each round on a fresh spool.
    spool = os.path.join(queues, f"spool{round_ or ''}")
    log_path = os.path.join(workdir, f"delivery{round_ or ''}.jsonl")
    conf = os.path.join(workdir, "volley.toml")
    report = os.path.join(workdir, "report.json")
    api = f"127.0.0.1:{free_port('127.0.0.1')}" if args.path == "api" else None
    web = f"127.0.0.1:{free_port('127.0.0.1')}" if args.web else None
    webhook = None
    if args.webhook:
        port = free_port("127.0.0.1")
        counts = os.path.join(workdir, f"webhook{round_ or ''}.json")
        secret = os.path.join(workdir, "webhook.secret")
        with open(secret, "w") as f:
            f.write("whsec_" + base64.b64encode(os.urandom(32)).decode() + "\n")
        sink = procs.start([sys.executable, os.path.join(HERE, "webhook_sink.py"), "127.0.0.1",
                            str(port), counts])
        wait_listening("127.0.0.1", port)
        webhook = (f"http://127.0.0.1:{port}/hook", secret, counts, sink)
    volley_config(conf, spool, dns, log_path, dkim, args.threads, api, web, webhook)
    if api:
        return phase_volley_api(procs, args, workdir, volley, conf, api, template, rcpts,
                                spool, log_path, webhook)
    sinks = Sinks(procs, args.sites, workdir)
    out = open(os.path.join(workdir, "volley.out"), "ab")
    t0_wall = time.time()
    started = time.monotonic()
    # E2E_WRAP: a command to run volley under (e.g. "strace -f -c -o /tmp/s.txt").
    wrap = os.environ.get("E2E_WRAP", "").split()
    if args.profile:
        wrap = perf_record(workdir)
    p = procs.start(wrap + [volley, "-C", conf, "send", "--template", template, "--recipients", rcpts,
                     "--report", report, "--wait"], stdout=out, stderr=out)
    peak_files, peak_bytes = 0, 0
    deadline = started + 3600
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            procs.stop(p, signal.SIGKILL)
            raise RuntimeError("volley send did not finish within an hour")
        files, size = spool_usage(spool)
        peak_files, peak_bytes = max(peak_files, files), max(peak_bytes, size)
        time.sleep(0.5)
    wall = time.monotonic() - started
    files, size = spool_usage(spool)
    peak_files, peak_bytes = max(peak_files, files), max(peak_bytes, size)
    sink_cpu = sinks.stop()
    if p.returncode != 0:
        raise RuntimeError(f"volley send exited {p.returncode}; see {workdir}/volley.out")
    with open(report) as f:
        rep = json.load(f)
    delivered = rep["delivered"]
    if delivered != args.recipients:
        log(f"warning: volley delivered {delivered} of {args.recipients}")
    cpu = rusage_cpu(ru)
    return {"messages": delivered, "wall_s": wall, "msgs_per_s": delivered / wall,
            "cpu_s": cpu, "cpu_us_per_msg": cpu / max(delivered, 1) * 1e6,
            "sys_us_per_msg": ru.ru_stime / max(delivered, 1) * 1e6,
            "peak_rss_mb": ru.ru_maxrss / 1024, "queue_files": peak_files,
            "queue_mb": peak_bytes / 1e6, "sink_cpu_us_per_msg": sink_cpu / max(delivered, 1) * 1e6,
            "report": rep, "series": delivered_series(log_path, t0_wall)}


def api_call(api, method, path, token, body=None, data=None, timeout=3600):
    """One call of volley's HTTP API; answers the JSON body."""
    import urllib.request
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(f"http://{api}{path}", data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def thread_cpu(pid):
    """CPU seconds of a live process's threads, summed by thread name (the
    delivery lanes, the async runtime's workers, SQLite's thread, ...)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            cpu = (int(fields[11]) + int(fields[12])) / tick
            name = name.rstrip("0123456789-")
            out[name] = round(out.get(name, 0) + cpu, 2)
    except OSError:
        pass
    return out


def phase_volley_api(procs, args, workdir, volley, conf, api, template, rcpts, spool, log_path,
                     webhook=None):
    """volley run fed by its control plane: the list uploaded (streamed), the
    campaign submitted over the API, timed until the API says completed. CPU is
    the daemon's, all of it (startup and the API included). With a webhook,
    also until the webhook got every delivery event (webhook_lag_s after
    completion), the daemon's CPU counted to then."""
    import tomllib
    out = open(os.path.join(workdir, "volley.out"), "ab")
    tok = subprocess.run([volley, "-C", conf, "token", "create", "--name", f"bench{time.time_ns()}",
                          "--role", "sender"], capture_output=True, check=True, text=True).stdout.strip()
    sinks = Sinks(procs, args.sites, workdir)
    wrap = []
    if args.profile:
        wrap = perf_record(workdir)
    p = procs.start(wrap + [volley, "-C", conf, "run"], stdout=out, stderr=out)
    host, port = api.rsplit(":", 1)
    wait_listening(host, int(port))
    with open(template, "rb") as f:
        spec = tomllib.load(f)
    scraper = None
    if args.scrape:
        # Prometheus' part: GET /metrics every second while the campaign runs.
        import threading
        import urllib.request
        scraper = {"stop": threading.Event(), "scrapes": 0, "bytes": 0}

        def scrape_loop():
            while not scraper["stop"].wait(1.0):
                with urllib.request.urlopen(f"http://{api}/metrics", timeout=10) as r:
                    scraper["bytes"] += len(r.read())
                    scraper["scrapes"] += 1
        scraper["thread"] = threading.Thread(target=scrape_loop, daemon=True)
        scraper["thread"].start()
    t0_wall = time.time()
    started = time.monotonic()
    with open(rcpts, "rb") as f:
        up = api_call(api, "POST", "/v1/uploads", tok, data=f)
    c = api_call(api, "POST", "/v1/campaigns", tok, {"template": spec, "upload": up["id"]})
    queued_s = None
    peak_files, peak_bytes = 0, 0
    deadline = started + 3600
    while True:
        c = api_call(api, "GET", f"/v1/campaigns/{c['id']}", tok)
        if queued_s is None and c.get("partitioned"):
            queued_s = time.monotonic() - started
        if c["state"] == "completed":
            break
        if time.monotonic() > deadline or p.poll() is not None:
            raise RuntimeError(f"the campaign did not complete; see {workdir}/volley.out")
        files, size = spool_usage(spool)
        peak_files, peak_bytes = max(peak_files, files), max(peak_bytes, size)
        time.sleep(0.2)
    wall = time.monotonic() - started
    if scraper:
        scraper["stop"].set()
        scraper["thread"].join()
        log(f"   /metrics scraped {scraper['scrapes']} times ({scraper['bytes']:,} bytes)")
    lag = None
    if webhook:
        counts, end = webhook[2], time.monotonic() + 600
        got = {}
        while time.monotonic() < end:
            try:
                with open(counts) as f:
                    got = json.load(f)
            except (OSError, ValueError):
                pass
            if got.get("events", 0) >= c["delivered"]:
                break
            time.sleep(0.2)
        lag = time.monotonic() - started - wall
        log(f"   webhook: {got.get('events', 0):,} events in {got.get('requests', 0):,} requests, "
            f"the last {lag:.1f} s after completion")
    threads = thread_cpu(p.pid)
    ru = procs.stop(p)
    if webhook:
        procs.stop(webhook[3])
    sink_cpu = sinks.stop()
    delivered = c["delivered"]
    if delivered != args.recipients:
        log(f"warning: volley delivered {delivered} of {args.recipients}")
    cpu = rusage_cpu(ru)
    return {"messages": delivered, "wall_s": wall, "msgs_per_s": delivered / wall,
            "cpu_s": cpu, "cpu_us_per_msg": cpu / max(delivered, 1) * 1e6,
            "sys_us_per_msg": ru.ru_stime / max(delivered, 1) * 1e6,
            "peak_rss_mb": ru.ru_maxrss / 1024, "queue_files": peak_files,
            "queue_mb": peak_bytes / 1e6, "sink_cpu_us_per_msg": sink_cpu / max(delivered, 1) * 1e6,
            "queued_s": queued_s, "webhook_lag_s": lag, "threads_cpu_s": threads, "report": c,
            "series": delivered_series(log_path, t0_wall)}


def postfix_config(d, smtpd, sites):
    os.makedirs(os.path.join(d, "etc"), exist_ok=True)
    os.makedirs(os.path.join(d, "queue"), exist_ok=True)
    main = [
        "compatibility_level = 3.6", f"queue_directory = {d}/queue", f"data_directory = {d}/data",
        "mail_owner = postfix", "setgid_group = postdrop", "inet_interfaces = loopback-only",
        "inet_protocols = ipv4", "myhostname = postfix.bench.test", "mydestination =",
        "mynetworks = 127.0.0.0/8", "relay_domains =", "alias_maps =", "alias_database =",
        "local_recipient_maps =", f"maillog_file = {d}/maillog", f"maillog_file_prefixes = {d}",
        "biff = no", f"transport_maps = texthash:{d}/etc/transport",
        # The load must not be mistaken for abuse, nor bounced for looping.
        "smtpd_client_connection_count_limit = 0", "smtpd_client_message_rate_limit = 0",
        "smtp_connection_cache_on_demand = yes",
    ]
    with open(os.path.join(d, "etc/main.cf"), "w") as f:
        f.write("\n".join(main) + "\n")
    with open(os.path.join(d, "etc/transport"), "w") as f:
        for i in range(DOMAINS):
            f.write(f"{domain(i)} smtp:[{site_ip(i % sites)}]:{SINK_PORT}\n")
    services = f"""{smtpd} inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""
    with open(os.path.join(d, "etc/master.cf"), "w") as f:
        f.write(services)


def count_sent(maillog):
    try:
        with open(maillog, "rb") as f:
            return f.read().count(b" status=sent ")
    except FileNotFoundError:
        return 0


def phase_postfix(procs, args, workdir, msg_len, queues):
    settle()
    n = min(args.recipients, args.postfix_cap)
    if os.geteuid() != 0 or not os.path.exists(POSTFIX):
        log("== postfix: skipped (needs root and /usr/sbin/postfix)")
        return None
    log(f"== postfix: relaying {n:,} messages"
        + (f" (capped from {args.recipients:,})" if n < args.recipients else ""))
    d = os.path.join(queues, "postfix")
    smtpd_ip = "127.0.0.60"
    smtpd = f"{smtpd_ip}:{free_port(smtpd_ip)}"
    postfix_config(d, smtpd, args.sites)
    group = CpuGroup(f"volley-e2e-postfix-{os.getpid()}")
    sinks = Sinks(procs, args.sites, workdir)
    out = open(os.path.join(workdir, "postfix.out"), "ab")
    master = procs.start([POSTFIX, "-c", os.path.join(d, "etc"), "start-fg"], stdout=out,
                         stderr=out, preexec_fn=group.enter, start_new_session=True)
    host, port = smtpd.split(":")
    wait_listening(host, int(port), deadline_s=30)
    cpu0 = group.cpu_s()
    started = time.monotonic()
    run_source(procs, args.sites, n, msg_len, lambda s: (smtpd, f"user@{domain(s)}"), workdir,
               "postfix", deadline_s=7200)
    maillog = os.path.join(d, "maillog")
    deadline = time.monotonic() + 7200
    sent = 0
    while time.monotonic() < deadline:
        sent = count_sent(maillog)
        if sent >= n:
            break
        time.sleep(0.5)
    wall = time.monotonic() - started
    cpu = group.cpu_s()
    subprocess.run([POSTFIX, "-c", os.path.join(d, "etc"), "stop"], capture_output=True,
                   timeout=60)
    procs.wait(master, 60)
    sinks.stop()
    group.remove()
    if sent < n:
        raise RuntimeError(f"postfix sent {sent} of {n} within the deadline; see {maillog}")
    cpu_s = None if cpu is None or cpu0 is None else cpu - cpu0
    return {"messages": n, "wall_s": wall, "msgs_per_s": n / wall,
            "cpu_s": cpu_s, "cpu_us_per_msg": None if cpu_s is None else cpu_s / n * 1e6,
            "cpu_measured_by": group.kind and f"cgroup {group.kind}"}


def dnsmasq_start(procs, workdir, sites):
    ip = "127.0.0.53"
    port = free_port(ip)
    conf = os.path.join(workdir, "dnsmasq.conf")
    lines = ["no-resolv", "no-hosts", "no-poll", f"listen-address={ip}", "bind-interfaces",
             f"port={port}", "local=/test/", "local-ttl=3600"]
    for s in range(sites):
        lines.append(f"host-record=mx{s}.bench.test,{site_ip(s)}")
    for i in range(DOMAINS):
        lines.append(f"mx-host={domain(i)},mx{i % sites}.bench.test,10")
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    err = open(os.path.join(workdir, "dnsmasq.log"), "ab")
    procs.start([DNSMASQ, "--keep-in-foreground", f"--conf-file={conf}", "--pid-file="],
                stdout=err, stderr=err)
    # Ready when it answers a query (a minimal MX query for d000.bench.test).
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"".join(
        bytes([len(p)]) + p.encode() for p in domain(0).split(".")) + b"\x00\x00\x0f\x00\x01"
    end = time.monotonic() + 20
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < end:
            try:
                s.sendto(q, (ip, port))
                if s.recv(512)[:2] == b"\x12\x34":
                    return f"{ip}:{port}"
            except OSError:
                time.sleep(0.05)
    raise RuntimeError("dnsmasq did not answer within 20 s")


def main():
    ap = argparse.ArgumentParser(prog="benches/e2e.sh")
    ap.add_argument("--volley", required=True)
    ap.add_argument("--plot", required=True)
    ap.add_argument("--recipients", type=int, default=1_000_000)
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--dkim", choices=["none", "ed25519", "rsa2048"], default="none")
    ap.add_argument("--postfix-cap", type=int, default=100_000)
    ap.add_argument("--no-postfix", action="store_true")
    ap.add_argument("--no-source", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="record volley with perf (figures then include perf's overhead) and "
                         "write perf's report to benches/results/e2e-<date>-profile.txt")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the sink limit and volley this many times, alternately, and "
                         "report the round with the median CPU ratio (all rounds are listed)")
    ap.add_argument("--spool-fs", choices=["auto", "loop", "host"], default="auto",
                    help="where the queues of volley and Postfix go: a fresh loop-mounted ext4 "
                         "(auto falls back to the work dir if that is not possible) or the work "
                         "dir on the host file system")
    ap.add_argument("--threads", type=int, default=None,
                    help="volley's [delivery] threads (default: volley's own, one per core)")
    ap.add_argument("--path", choices=["send", "api"], default="send",
                    help="send: one `volley send` (the campaign path); api: `volley run` fed by "
                         "its control plane, the campaign uploaded and submitted over the HTTP API")
    ap.add_argument("--web", action="store_true",
                    help="[web] on and a template with three tracked links and the open image "
                         "(the cost of List-Unsubscribe one-click, click and open tracking)")
    ap.add_argument("--links", action="store_true",
                    help="the --web template's three links, untracked and without [web]: the "
                         "same message content as --web, to measure the tracking alone")
    ap.add_argument("--webhook", action="store_true",
                    help="with --path api: a [[webhook]] getting every message.delivered in "
                         "batches of 1,000 (benches/webhook_sink.py); timed until it got them all")
    ap.add_argument("--scrape", action="store_true",
                    help="with --path api: GET /metrics every second while the campaign runs "
                         "(what a Prometheus server does)")
    ap.add_argument("--tag", default="",
                    help="appended to the result file names (e2e-<date>[-dkim]-<tag>), so an "
                         "experimental run does not replace the figures of a quoted one")
    args = ap.parse_args()
    if not 1 <= args.sites <= 100:
        ap.error("--sites must be 1..100")
    if args.scrape and args.path != "api":
        ap.error("--scrape needs --path api (volley send serves no /metrics)")
    if args.webhook and args.path != "api":
        ap.error("--webhook needs --path api (volley send delivers no webhooks)")
    volley = os.path.abspath(args.volley)
    procs = Procs()
    workdir = tempfile.mkdtemp(prefix="volley-e2e-", dir="/tmp")
    os.chmod(workdir, 0o755)
    mounted = None
    try:
        queues, mounted = spool_fs(workdir, args.spool_fs)
        log(f"== workdir {workdir}: dnsmasq, {DOMAINS} domains over {args.sites} sites")
        dns = dnsmasq_start(procs, workdir, args.sites)
        template = os.path.join(workdir, "campaign.toml")
        write_template(template, args.web, args.links)
        msg_bytes = calibrate(procs, args, workdir, volley, dns, template)
        # smtp-source's -l is the body; it adds ~250 bytes of headers.
        payload = max(msg_bytes - 250, 100)
        rcpts = os.path.join(workdir, "recipients.csv")
        write_recipients(rcpts, args.recipients)
        dkim = dkim_key(workdir, args.dkim)
        result = {"date": datetime.date.today().isoformat(), "cores": os.cpu_count(),
                  "recipients": args.recipients, "sites": args.sites, "domains": DOMAINS,
                  "sessions_per_site": SESSIONS_PER_SITE, "dkim": args.dkim,
                  "message_bytes": msg_bytes,
                  "queue_fs": "ext4 on a loop device" if mounted else "host"}
        # With --rounds K the sink limit and volley run K times, alternately, and
        # the round with the median CPU ratio is the one reported: the host's speed
        # drifts by tens of percent over minutes, so one pair can mislead.
        rounds = []
        for r in range(args.rounds):
            lim = None if args.no_source else phase_sink_limit(procs, args, workdir, payload)
            vol = phase_volley(procs, args, workdir, volley, dns, template, rcpts, dkim, queues, r)
            rounds.append((lim, vol))
            if args.rounds > 1:
                source = (f"smtp-source {lim['source_cpu_us_per_msg']:.1f} µs/msg, "
                          if lim else "")
                ratio = (f", ratio {vol['cpu_us_per_msg'] / lim['source_cpu_us_per_msg']:.2f}"
                         if lim else "")
                log(f"   round {r + 1}: {source}volley {vol['cpu_us_per_msg']:.1f} µs/msg{ratio}")
        if args.rounds > 1:
            result["rounds"] = [{
                "source_cpu_us_per_msg": lim and round(lim["source_cpu_us_per_msg"], 2),
                "volley_cpu_us_per_msg": round(vol["cpu_us_per_msg"], 2),
                "cpu_ratio": lim and round(vol["cpu_us_per_msg"] / lim["source_cpu_us_per_msg"], 3),
                "sink_limit_msgs_per_s": lim and round(lim["msgs_per_s"], 1),
                "volley_msgs_per_s": round(vol["msgs_per_s"], 1),
                "volley_peak_rss_mb": round(vol["peak_rss_mb"], 1),
            } for lim, vol in rounds]
        key = (lambda lv: lv[1]["cpu_us_per_msg"] / lv[0]["source_cpu_us_per_msg"]) \
            if not args.no_source else (lambda lv: lv[1]["cpu_us_per_msg"])
        median = sorted(range(len(rounds)), key=lambda i: key(rounds[i]))[len(rounds) // 2]
        result["median_round"] = median + 1
        result["sink_limit"], result["volley"] = rounds[median]
        result["postfix"] = None if args.no_postfix else phase_postfix(
            procs, args, workdir, payload, queues)
    finally:
        procs.stop_all()
        if mounted:
            subprocess.run(["umount", mounted], check=False, capture_output=True, timeout=120)

    v, lim, pf = result["volley"], result["sink_limit"], result["postfix"]
    series = v.pop("series")
    suffix = "" if args.dkim == "none" else f"-{args.dkim}"
    if args.profile:
        # A profiled run is slower: it must not replace the figures of a clean one.
        suffix += "-profile"
    if args.tag:
        suffix += f"-{args.tag}"
    os.makedirs("benches/results", exist_ok=True)
    base = f"benches/results/e2e-{result['date']}{suffix}"
    csv_path = os.path.join(workdir, "series.csv")
    with open(csv_path, "w") as f:
        f.write("second,delivered\n")
        for s, c in series:
            f.write(f"{s},{c}\n")
    subprocess.run([args.plot, csv_path, base + ".svg",
                    f"volley send, {args.recipients:,} recipients, {args.sites} sites, "
                    f"dkim {args.dkim}"], check=False)
    result["series"] = series

    def fmt(x, spec):
        return "-" if x is None else format(x, spec)

    print(f"message size {msg_bytes} bytes, {args.recipients:,} recipients, {args.sites} sites, "
          f"{SESSIONS_PER_SITE} connections per site, dkim {args.dkim}, "
          f"queues on {result['queue_fs']}")
    print(f"{'':12} {'messages':>10} {'msgs/s':>9} {'CPU µs/msg':>11} {'peak RSS MB':>12}")
    if lim:
        print(f"{'sink limit':12} {lim['messages']:>10,} {lim['msgs_per_s']:>9,.0f} "
              f"{lim['source_cpu_us_per_msg']:>11.1f} {'-':>12}   (smtp-source; "
              f"sys {lim['source_sys_us_per_msg']:.1f} µs/msg)")
    print(f"{'volley':12} {v['messages']:>10,} {v['msgs_per_s']:>9,.0f} "
          f"{v['cpu_us_per_msg']:>11.1f} {v['peak_rss_mb']:>12.1f}   "
          f"queue: {v['queue_files']:,} files, {v['queue_mb']:.1f} MB; "
          f"sys {v['sys_us_per_msg']:.1f} µs/msg")
    if pf:
        print(f"{'postfix':12} {pf['messages']:>10,} {pf['msgs_per_s']:>9,.0f} "
              f"{fmt(pf['cpu_us_per_msg'], '11.1f')} {'-':>12}")
    if lim:
        print(f"volley / sink limit: {v['msgs_per_s'] / lim['msgs_per_s']:.2f}; volley CPU / "
              f"smtp-source CPU: {v['cpu_us_per_msg'] / lim['source_cpu_us_per_msg']:.2f}")
    if pf:
        print(f"volley / postfix: {v['msgs_per_s'] / pf['msgs_per_s']:.1f}x")
    for i, r in enumerate(result.get("rounds", [])):
        print(f"round {i + 1}: smtp-source {fmt(r['source_cpu_us_per_msg'], '.1f')} µs/msg, "
              f"volley {r['volley_cpu_us_per_msg']:.1f} µs/msg, ratio {fmt(r['cpu_ratio'], '.2f')}, "
              f"volley {r['volley_msgs_per_s']:,.0f} msgs/s")
    if "rounds" in result:
        print(f"(the figures above are round {result['median_round']}'s, the median)")
    headline = {
        "volley_msgs_per_s": round(v["msgs_per_s"], 1),
        "sink_limit_msgs_per_s": lim and round(lim["msgs_per_s"], 1),
        "postfix_msgs_per_s": pf and round(pf["msgs_per_s"], 1),
        "volley_cpu_us_per_msg": round(v["cpu_us_per_msg"], 2),
        "source_cpu_us_per_msg": lim and round(lim["source_cpu_us_per_msg"], 2),
        "postfix_cpu_us_per_msg": pf and pf["cpu_us_per_msg"] and round(pf["cpu_us_per_msg"], 2),
        "volley_peak_rss_mb": round(v["peak_rss_mb"], 1),
        "queue_files": v["queue_files"],
        "queue_mb": round(v["queue_mb"], 2),
    }
    result["headline"] = headline
    with open(base + ".json", "w") as f:
        json.dump(result, f, indent=1)
    log(f"results: {base}.json, plot: {base}.svg")
    if args.profile:
        with open(base + ".txt", "w") as f:
            # Per thread first (main = partitioning, tokio-rt-worker = delivery),
            # then per symbol.
            # The per-symbol lists of the threads besides the delivery
            # lanes (the async runtime: the API, the store's writes from the
            # feed, webhooks; SQLite's own thread) last.
            for sort in (["--sort", "comm,dso"], [],
                         ["--comms", "tokio-rt-worker,sqlx-sqlite-worker", "--sort", "comm,sym",
                          "--percentage", "relative"]):
                f.flush()
                subprocess.run(["perf", "report", "--stdio", "--no-children", "--percent-limit",
                                "0.05", "-g", "none", *sort, "-i", os.path.join(workdir, "perf.data")],
                               stdout=f, stderr=subprocess.DEVNULL, check=False)
        log(f"profile: {base}.txt")
        if os.environ.get("VOLLEY_BENCH_KEEP_PERF"):
            # For perf report's other views (callers, threads) afterwards.
            shutil.copy(os.path.join(workdir, "perf.data"), os.environ["VOLLEY_BENCH_KEEP_PERF"])
    shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
