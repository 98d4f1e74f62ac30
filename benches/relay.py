#!/usr/bin/env python3
"""The relay benchmark behind benches/relay.sh (see there for usage).

smtp-source (Postfix's load generator: S sessions, connection reuse, N messages of
~L bytes, R recipients each) injects into

  volley   `volley run` with a submission listener, relaying to smtp-sink through
           its own MX resolution (dnsmasq);
  postfix  a private, throughput-tuned Postfix relaying to the same smtp-sink
           through a transport map;

alternated --rounds times, each phase on a fresh spool on a fresh loop-mounted
ext4 (e2e.spool_fs). Measured per phase: messages/s from the first connection to
the last delivery, CPU per message (volley: its process, /proc/PID/stat; Postfix:
its cgroup), peak queue files and bytes (polled), bytes written to the queue's
block device (/sys/block/loopN/stat, journal and metadata included) and by the
process (/proc/PID/io write_bytes), peak RSS. With --windows W1,W2,... it also
runs volley once per `[queue] group_window` and reports the deposit latency of
the `250` (p50/p99 of the "message accepted" log lines' `commit_us`).
Everything binds to 127.0.0.0/8; every wait has a deadline.
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402
from e2e import (CpuGroup, Procs, Sinks, dnsmasq_start, domain, free_port,  # noqa: E402
                 log, postfix_config, settle, site_ip, spool_fs, wait_listening)

SOURCE = "/usr/sbin/smtp-source"
POSTFIX = "/usr/sbin/postfix"


def block_device(mnt):
    """The block device under mount point `mnt` (its /sys/block name), or None."""
    if not mnt:
        return None
    try:
        out = subprocess.run(["findmnt", "-n", "-o", "SOURCE", mnt], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    name = os.path.basename(out)
    return name if os.path.exists(f"/sys/block/{name}/stat") else None


def sectors_written(dev):
    if not dev:
        return None
    with open(f"/sys/block/{dev}/stat") as f:
        return int(f.read().split()[6]) * 512


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def proc_write_bytes(pid):
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def proc_rss_peak_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def exit_status(p):
    """The status of `p` if it has exited, else 0; without reaping it (its
    resource usage is read later, by wait4)."""
    try:
        info = os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return 0
    return info.si_status if info is not None else 0


def queue_usage(spool):
    files, size = 0, 0
    for sub in ("active", "open", "reuse", "done", "content", "inbound"):
        d = os.path.join(spool, sub)
        if not os.path.isdir(d):
            continue
        for e in os.scandir(d):
            try:  # files move between directories under our feet
                if e.is_file():
                    size += e.stat().st_size
                    files += 1
            except FileNotFoundError:
                pass
    return files, size


def postfix_queue_usage(qdir):
    files, size = 0, 0
    for sub in ("incoming", "active", "deferred", "maildrop", "hold"):
        for root, _, names in os.walk(os.path.join(qdir, sub)):
            for n in names:
                try:
                    size += os.stat(os.path.join(root, n)).st_size
                    files += 1
                except FileNotFoundError:
                    pass
    return files, size


def inject(procs, args, workdir, target, tag):
    """smtp-source into `target`; returns the process (still running)."""
    err = open(os.path.join(workdir, f"{tag}-source.log"), "ab")
    return procs.start([SOURCE, "-d", "-s", str(args.sessions), "-l", str(args.size),
                        "-m", str(args.messages), "-r", str(args.rcpts),
                        "-M", "source.bench.test", "-f", "bench@source.bench.test",
                        "-t", f"user@{domain(0)}", target], stdout=err, stderr=err)


def count_lines(path, needle, state):
    """Occurrences of `needle` in the file at `path`, reading only what was added
    since the last call (`state`: [offset, count, carry])."""
    try:
        with open(path, "rb") as f:
            f.seek(state[0])
            data = state[2] + f.read()
    except FileNotFoundError:
        return state[1]
    cut = data.rfind(b"\n") + 1
    state[1] += data[:cut].count(needle)
    state[0] += len(data) - len(state[2])
    state[2] = data[cut:]
    return state[1]


def volley_config(path, spool, dns, log_path, listen, window, extra=()):
    """Writes volley's config; `extra`: "section:line" strings, each line put in
    that section."""
    lines = [
        "[spool]", f'dir = "{spool}"',
        "[queue]", "batch_size = 100",
    ]
    if window is not None:
        lines.append(f'group_window = "{window}"')
    lines += [
        "[dns]", f'nameservers = ["{dns}"]',
        "[delivery]", f"smtp_port = {e2e.SINK_PORT}", 'helo_name = "volley.bench.test"',
        f'log = "{log_path}"',
        "[site]", "max_connections = 20", "max_messages_per_connection = 100000",
        "[server]", 'hostname = "volley.bench.test"', "max_connections_per_ip = 1000",
        "[[listen]]", f'address = "{listen}"', 'role = "submission"', 'tls = "none"',
    ]
    for item in extra:
        section, _, line = item.partition(":")
        header = f"[{section}]"
        if header not in lines:
            lines.append(header)
        lines.insert(lines.index(header) + 1, line)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def series_from(stamps, t0):
    counts = {}
    for t in stamps:
        s = int(t - t0)
        counts[s] = counts.get(s, 0) + 1
    return [counts.get(s, 0) for s in range(0, max(counts) + 1)] if counts else []


def volley_series(log_path, t0_wall):
    return [c for _, c in e2e.delivered_series(log_path, t0_wall)]


COMMIT_US = re.compile(rb'commit_us=(\d+)')
ANSI = re.compile(rb'\x1b\[[0-9;]*m')


def commit_latencies(stderr_path):
    out = []
    with open(stderr_path, "rb") as f:
        for line in f:
            if b"message accepted" in line:
                m = COMMIT_US.search(ANSI.sub(b"", line))
                if m:
                    out.append(int(m.group(1)))
    return out


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


def phase_volley(procs, args, workdir, volley, dns, queues, dev, tag, window=None):
    settle()
    total = args.messages * args.rcpts
    log(f"== volley ({tag}): {args.messages:,} messages × {args.rcpts} recipients, "
        f"{args.sessions} sessions" + (f", group_window {window}" if window else ""))
    spool = os.path.join(queues, f"spool-{tag}")
    log_path = os.path.join(workdir, f"delivery-{tag}.jsonl")
    conf = os.path.join(workdir, f"volley-{tag}.toml")
    ip = "127.0.0.70"
    listen = f"{ip}:{free_port(ip)}"
    volley_config(conf, spool, dns, log_path, listen, window, args.conf)
    sinks = Sinks(procs, args.sites, workdir)
    out_path = os.path.join(workdir, f"volley-{tag}.out")
    out = open(out_path, "ab")
    p = procs.start([volley, "-C", conf, "run"], stdout=out, stderr=out)
    wait_listening(ip, int(listen.split(":")[1]), deadline_s=30)
    cpu0, wb0, dev0 = proc_cpu_s(p.pid), proc_write_bytes(p.pid), sectors_written(dev)
    perf = None
    if args.profile:
        perf = procs.start(["perf", "record", "-F", "999", "-g", "-p", str(p.pid), "-o",
                            os.path.join(workdir, f"perf-{tag}.data")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0_wall = time.time()
    started = time.monotonic()
    src = inject(procs, args, workdir, listen, tag)
    peak_files, peak_bytes, state = 0, 0, [0, 0, b""]
    deadline = started + args.deadline
    done = 0
    while True:
        done = count_lines(log_path, b'"status":"delivered"', state)
        if done >= total:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"volley delivered {done} of {total} within the deadline; "
                               f"see {out_path}")
        if p.poll() is not None:
            raise RuntimeError(f"volley exited {p.returncode}; see {out_path}")
        failed = exit_status(src)
        if failed:
            raise RuntimeError(f"smtp-source exited {failed} (a message refused?); "
                               f"see {workdir} and {out_path}")
        files, size = queue_usage(spool)
        peak_files, peak_bytes = max(peak_files, files), max(peak_bytes, size)
        time.sleep(0.1)
    wall = time.monotonic() - started
    cpu = proc_cpu_s(p.pid) - cpu0
    written = proc_write_bytes(p.pid) - wb0
    dev_written = None if dev0 is None else sectors_written(dev) - dev0
    rss = proc_rss_peak_mb(p.pid)
    if perf:
        procs.stop(perf, signal.SIGINT, deadline_s=60)
        with open(f"benches/results/relay-{datetime.date.today().isoformat()}-profile-{args.tag or tag}.txt",
                  "w") as f:
            for sort in (["--sort", "comm,dso"], []):
                f.flush()
                subprocess.run(["perf", "report", "--stdio", "--no-children", "--percent-limit",
                                "0.5", "-g", "none", *sort, "-i",
                                os.path.join(workdir, f"perf-{tag}.data")],
                               stdout=f, stderr=subprocess.DEVNULL, check=False, timeout=600)
    code, _ = procs.wait(src, 60)
    procs.stop(p)
    sinks.stop()
    if code != 0:
        raise RuntimeError(f"smtp-source exited {code}; see {workdir}/{tag}-source.log")
    lat = commit_latencies(out_path)
    msg_bytes = args.messages * (args.size + 300)
    return {"messages": args.messages, "recipients": total, "wall_s": wall,
            "msgs_per_s": args.messages / wall, "rcpts_per_s": total / wall,
            "cpu_s": cpu, "cpu_us_per_msg": cpu / args.messages * 1e6,
            "peak_rss_mb": rss, "peak_queue_files": peak_files, "peak_queue_bytes": peak_bytes,
            "process_write_bytes": written, "device_write_bytes": dev_written,
            "approx_message_bytes": msg_bytes,
            "commit_us_p50": pct(lat, 0.5), "commit_us_p99": pct(lat, 0.99),
            "group_window": window,
            "series": volley_series(log_path, t0_wall)}


POSTFIX_TUNING = [
    # Throughput-tuned: no per-message address verification or DNS, many smtp
    # processes, a big active queue, immediate delivery.
    "default_process_limit = 200", "smtp_destination_concurrency_limit = 20",
    "default_destination_concurrency_limit = 20", "qmgr_message_active_limit = 40000",
    "in_flow_delay = 0s", "smtpd_peername_lookup = no", "disable_dns_lookups = yes",
    "smtp_dns_support_level = disabled", "smtpd_recipient_restrictions = permit_mynetworks, reject",
]


def maillog_stamps(maillog, year):
    out = []
    try:
        with open(maillog, "rb") as f:
            for line in f:
                if b" status=sent " not in line:
                    continue
                t = line[:15].decode(errors="replace")
                try:
                    ts = datetime.datetime.strptime(f"{year} {t}", "%Y %b %d %H:%M:%S")
                    out.append(ts.replace(tzinfo=datetime.timezone.utc).timestamp())
                except ValueError:
                    pass
    except FileNotFoundError:
        pass
    return out


def phase_postfix(procs, args, workdir, queues, dev, tag):
    settle()
    n = args.messages * args.rcpts
    log(f"== postfix ({tag}): {args.messages:,} messages × {args.rcpts} recipients")
    d = os.path.join(queues, f"postfix-{tag}")
    ip = "127.0.0.60"
    smtpd = f"{ip}:{free_port(ip)}"
    postfix_config(d, smtpd, args.sites)
    with open(os.path.join(d, "etc/main.cf"), "a") as f:
        f.write("\n".join(POSTFIX_TUNING) + "\n")
    group = CpuGroup(f"volley-relay-postfix-{os.getpid()}-{tag}")
    sinks = Sinks(procs, args.sites, workdir)
    out = open(os.path.join(workdir, f"postfix-{tag}.out"), "ab")
    master = procs.start([POSTFIX, "-c", os.path.join(d, "etc"), "start-fg"], stdout=out,
                         stderr=out, preexec_fn=group.enter, start_new_session=True)
    wait_listening(ip, int(smtpd.split(":")[1]), deadline_s=30)
    cpu0, dev0 = group.cpu_s(), sectors_written(dev)
    t0_wall = time.time()
    started = time.monotonic()
    src = inject(procs, args, workdir, smtpd, f"postfix-{tag}")
    maillog = os.path.join(d, "maillog")
    deadline = started + args.deadline
    peak_files, peak_bytes, state = 0, 0, [0, 0, b""]
    sent = 0
    while time.monotonic() < deadline:
        sent = count_lines(maillog, b" status=sent ", state)
        if sent >= n:
            break
        files, size = postfix_queue_usage(os.path.join(d, "queue"))
        peak_files, peak_bytes = max(peak_files, files), max(peak_bytes, size)
        time.sleep(0.2)
    wall = time.monotonic() - started
    cpu = group.cpu_s()
    dev_written = None if dev0 is None else sectors_written(dev) - dev0
    procs.wait(src, 60)
    subprocess.run([POSTFIX, "-c", os.path.join(d, "etc"), "stop"], capture_output=True,
                   timeout=60)
    procs.wait(master, 60)
    sinks.stop()
    group.remove()
    if sent < n:
        raise RuntimeError(f"postfix sent {sent} of {n} within the deadline; see {maillog}")
    cpu_s = None if cpu is None or cpu0 is None else cpu - cpu0
    year = datetime.date.today().year
    return {"messages": args.messages, "recipients": n, "wall_s": wall,
            "msgs_per_s": args.messages / wall, "rcpts_per_s": n / wall,
            "cpu_s": cpu_s, "cpu_us_per_msg": None if cpu_s is None else cpu_s / args.messages * 1e6,
            "peak_queue_files": peak_files, "peak_queue_bytes": peak_bytes,
            "device_write_bytes": dev_written,
            "series": series_from(maillog_stamps(maillog, year), t0_wall)}


def main():
    ap = argparse.ArgumentParser(prog="benches/relay.sh")
    ap.add_argument("--volley", required=True)
    ap.add_argument("--plot", required=True)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rcpts", type=int, default=1, help="recipients per message (smtp-source -r)")
    ap.add_argument("--size", type=int, default=5000, help="message body bytes (smtp-source -l)")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--sites", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--no-postfix", action="store_true")
    ap.add_argument("--windows", default="",
                    help="comma-separated [queue] group_window values: one extra volley run "
                         "each, for the table of 250 latency over window sizes")
    ap.add_argument("--conf", action="append", default=[], metavar="SECTION:LINE",
                    help="an extra line for a section of volley's config, e.g. "
                         "'queue:seal_after = \"200ms\"' or 'delivery:threads = 1'; "
                         "repeatable")
    ap.add_argument("--deadline", type=float, default=1800)
    ap.add_argument("--tag", default="")
    ap.add_argument("--profile", action="store_true",
                    help="record volley with perf during its first run; the report goes to "
                         "benches/results/relay-<date>-profile-<tag>.txt")
    args = ap.parse_args()
    volley = os.path.abspath(args.volley)
    procs = Procs()
    workdir = tempfile.mkdtemp(prefix="volley-relay-", dir="/tmp")
    os.chmod(workdir, 0o755)
    mounted = None
    result = {"date": datetime.date.today().isoformat(), "cores": os.cpu_count(),
              "messages": args.messages, "rcpts_per_message": args.rcpts,
              "body_bytes": args.size, "sessions": args.sessions, "rounds": []}
    try:
        queues, mounted = spool_fs(workdir, "auto")
        dev = block_device(mounted)
        result["queue_fs"] = "ext4 on a loop device" if mounted else "host"
        dns = dnsmasq_start(procs, workdir, args.sites)
        for r in range(args.rounds):
            vol = phase_volley(procs, args, workdir, volley, dns, queues, dev, f"v{r}")
            args.profile = False
            pf = None if args.no_postfix else phase_postfix(procs, args, workdir, queues, dev,
                                                            f"p{r}")
            result["rounds"].append({"volley": vol, "postfix": pf})
            log(f"   round {r + 1}: volley {vol['msgs_per_s']:,.0f} msgs/s "
                f"{vol['cpu_us_per_msg']:.0f} µs/msg"
                + (f"; postfix {pf['msgs_per_s']:,.0f} msgs/s" if pf else ""))
        windows = []
        for w in [w for w in args.windows.split(",") if w]:
            vol = phase_volley(procs, args, workdir, volley, dns, queues, dev, f"w{w}", w)
            vol.pop("series")
            windows.append(vol)
        result["windows"] = windows
    finally:
        procs.stop_all()
        if mounted:
            subprocess.run(["umount", mounted], check=False, capture_output=True, timeout=120)

    suffix = f"-r{args.rcpts}" if args.rcpts != 1 else ""
    if args.tag:
        suffix += f"-{args.tag}"
    os.makedirs("benches/results", exist_ok=True)
    base = f"benches/results/relay-{result['date']}{suffix}"
    last = result["rounds"][-1]
    csv_path = os.path.join(workdir, "series.csv")
    vs = last["volley"]["series"]
    ps = last["postfix"]["series"] if last["postfix"] else []
    with open(csv_path, "w") as f:
        f.write("second,volley" + (",postfix" if last["postfix"] else "") + "\n")
        for s in range(max(len(vs), len(ps))):
            row = [str(s), str(vs[s] if s < len(vs) else 0)]
            if last["postfix"]:
                row.append(str(ps[s] if s < len(ps) else 0))
            f.write(",".join(row) + "\n")
    subprocess.run([args.plot, csv_path, base + ".svg",
                    f"relayed mail, {args.messages:,} messages × {args.rcpts}, "
                    f"{args.sessions} sessions"], check=False)

    def mb(x):
        return "-" if x is None else f"{x / 1e6:,.1f}"

    print(f"{args.messages:,} messages × {args.rcpts} recipients, body {args.size} B, "
          f"{args.sessions} sessions, queues on {result['queue_fs']}")
    print(f"{'':8} {'msgs/s':>8} {'CPU µs/msg':>11} {'peak files':>11} {'peak MB':>8} "
          f"{'dev MB':>8} {'proc MB':>8} {'RSS MB':>7} {'250 p50/p99 µs':>15}")
    for i, r in enumerate(result["rounds"]):
        for name in ("volley", "postfix"):
            x = r[name]
            if not x:
                continue
            cpu = "-" if x["cpu_us_per_msg"] is None else f"{x['cpu_us_per_msg']:.0f}"
            lat = (f"{x['commit_us_p50']}/{x['commit_us_p99']}"
                   if x.get("commit_us_p50") is not None else "-")
            print(f"{name[:1]}{i + 1:<7} {x['msgs_per_s']:>8,.0f} {cpu:>11} "
                  f"{x['peak_queue_files']:>11,} {mb(x['peak_queue_bytes']):>8} "
                  f"{mb(x['device_write_bytes']):>8} {mb(x.get('process_write_bytes')):>8} "
                  f"{x.get('peak_rss_mb', 0) or 0:>7.0f} {lat:>15}")
        if r["postfix"]:
            print(f"   volley / postfix: {r['volley']['msgs_per_s'] / r['postfix']['msgs_per_s']:.1f}x")
    if result["windows"]:
        print("group_window   msgs/s   CPU µs/msg   250 p50 µs   250 p99 µs")
        for w in result["windows"]:
            print(f"{w['group_window']:>12} {w['msgs_per_s']:>8,.0f} {w['cpu_us_per_msg']:>12.0f} "
                  f"{w['commit_us_p50'] or '-':>12} {w['commit_us_p99'] or '-':>12}")
    with open(base + ".json", "w") as f:
        json.dump(result, f, indent=1)
    log(f"results: {base}.json, plot: {base}.svg")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
