#!/usr/bin/python3
"""Scripted SMTP receiver for volley's end-to-end tests (driven by support/scripted.rs).

Run with Debian's /usr/bin/python3 (python3-aiosmtpd 1.4.3):

    scripted_smtpd.py --host 127.0.0.x --port P --scenario scenario.json --out-dir DIR

Serves SMTP on host:port (an aiosmtpd SMTP protocol on a plain asyncio server) and
writes, flushed line by line:

* DIR/transactions.jsonl: one JSON object per DATA that reached the final dot (or
  was dropped after it): {"session", "peer", "helo", "tls", "mail_from",
  "mail_options", "rcpt_tos", "rcpt_options", "data" (hex of the message bytes as
  received, CRLF kept, dot-stuffing removed), "reply" (the reply sent, "" if the
  connection was dropped instead), "accepted" (reply is 2xx)}.
* DIR/transcript.log: "[s<session>] C: <command>", "[s<session>] S: <reply line>",
  "[s<session>] -- <event>" lines. Message content is logged as one
  "C: <N bytes of message data>" line.

Exits when stdin is a pipe that reaches EOF (the test process died) or on SIGTERM/SIGINT.

Scenario keys (all optional; unknown keys are an error):

  hostname            name in the greeting and EHLO reply ("mx.scripted.test")
  greeting            replaces the whole "220 ..." greeting line
  greeting_delay_ms   wait before the greeting
  delay_ms            wait before every reply (each multi-line reply once)
  delay_ms_by_peer    {"127.0.0.x": ms}: delay_ms for sessions from that client
                      address instead (a receiver slow for one sender)
  ehlo_disable        EHLO keywords not to advertise, e.g. ["PIPELINING", "SIZE"]
                      (the command still works: this only hides the keyword)
  ehlo_add            extra EHLO lines, e.g. ["DSN"]
                      (PIPELINING is advertised unless disabled; aiosmtpd handles
                      pipelined commands in order. AUTH is never advertised.)
  size_limit          SIZE value and enforced limit in bytes (33554432; 0 = none)
  smtputf8            advertise and accept SMTPUTF8 (true)
  timeout_s           idle timeout per connection (60)
  command_replies     {"VERB": reply} fixed reply for a command, instead of running
                      it, e.g. {"EHLO": "502 5.5.2 Error: command not recognized"};
                      a 421 reply also closes the connection
  mail_replies        {sender: reply}    replies to MAIL FROM:<sender>
  rcpt_replies        {recipient: reply} replies to RCPT TO:<recipient>
                      (addresses compared case-insensitively; a reply may be a list:
                      the k-th attempt for that address, server-wide, gets item k,
                      the last item repeats)
  data_replies        reply (or list, by DATA count server-wide) after the final dot
  rcpt_limit          N: a transaction's RCPTs after N accepted ones get
                      "452 4.5.3 Too many recipients" (RFC 5321 4.5.3.1.10)
  defer_first_n       the first N attempts per recipient (server-wide) get
                      defer_reply, then the normal reply
  defer_at            "rcpt" (default: at RCPT) or "data" (after the final dot: DATA
                      is deferred while any of its recipients has been deferred
                      fewer than N times; each deferred DATA counts once for each
                      of its recipients)
  defer_reply         "451 4.7.1 Try again later"
  reply_421_after     N: after N accepted messages in a session, the next command
                      gets reply_421 and the connection is closed
  reply_421           "421 4.7.0 Too many messages, closing"
  drop_in_data_after  N: after N accepted messages in a session, the next DATA is
                      cut off: the connection is closed without a reply
  drop_in_data_mode   "mid" (default: after the first line of message data) or
                      "after_dot" (after the final dot, before the reply: the
                      message is complete but the client cannot know)
  drop_in_data_times  drop at most this many times server-wide (unlimited)
  starttls            {"cert": path, "key": path, "require": false}: offer STARTTLS
                      (require: every command but EHLO/HELO/NOOP/QUIT/STARTTLS gets
                      "530 Must issue a STARTTLS command first" before TLS)
                      ("max_version": "TLSv1_1": speak TLS 1.1 at most, which
                      rustls refuses, so the handshake after "220 Ready" fails)
"""

import argparse
import asyncio
import collections
import json
import os
import signal
import ssl
import stat
import sys
import time

from aiosmtpd.smtp import MISSING, SMTP

KNOWN_KEYS = {
    "hostname", "greeting", "greeting_delay_ms", "delay_ms", "delay_ms_by_peer", "ehlo_disable", "ehlo_add",
    "size_limit", "smtputf8", "timeout_s", "command_replies", "mail_replies",
    "rcpt_replies", "data_replies", "defer_first_n", "defer_at", "defer_reply",
    "reply_421_after", "reply_421", "drop_in_data_after", "drop_in_data_mode",
    "drop_in_data_times", "starttls", "rcpt_limit",
}


class Recorder:
    """Appends transcript lines and transaction records, flushing each line."""

    def __init__(self, out_dir):
        self.transcript = open(os.path.join(out_dir, "transcript.log"), "a", encoding="utf-8")
        self.transactions = open(os.path.join(out_dir, "transactions.jsonl"), "a", encoding="utf-8")

    def log(self, session, kind, text):
        self.transcript.write(f"[s{session}] {kind} {text}\n")
        self.transcript.flush()

    def transaction(self, record):
        self.transactions.write(json.dumps(record, sort_keys=True) + "\n")
        self.transactions.flush()


class Scenario:
    def __init__(self, raw):
        unknown = set(raw) - KNOWN_KEYS
        if unknown:
            raise SystemExit(f"scripted_smtpd: unknown scenario keys: {sorted(unknown)}")
        self.raw = raw
        self.hostname = raw.get("hostname", "mx.scripted.test")
        self.greeting = raw.get("greeting")
        self.greeting_delay = raw.get("greeting_delay_ms", 0) / 1000.0
        self.delay = raw.get("delay_ms", 0) / 1000.0
        self.delay_by_peer = {ip: ms / 1000.0 for ip, ms in raw.get("delay_ms_by_peer", {}).items()}
        self.ehlo_disable = {k.upper() for k in raw.get("ehlo_disable", [])}
        self.ehlo_add = list(raw.get("ehlo_add", []))
        self.size_limit = raw.get("size_limit", 33554432) or None
        self.smtputf8 = bool(raw.get("smtputf8", True))
        self.timeout = float(raw.get("timeout_s", 60))
        self.command_replies = {k.upper(): v for k, v in raw.get("command_replies", {}).items()}
        self.mail_replies = {k.lower(): v for k, v in raw.get("mail_replies", {}).items()}
        self.rcpt_replies = {k.lower(): v for k, v in raw.get("rcpt_replies", {}).items()}
        self.data_replies = raw.get("data_replies")
        self.rcpt_limit = raw.get("rcpt_limit")
        self.defer_first_n = int(raw.get("defer_first_n", 0))
        self.defer_at = raw.get("defer_at", "rcpt")
        if self.defer_at not in ("rcpt", "data"):
            raise SystemExit(f"scripted_smtpd: defer_at must be rcpt or data, not {self.defer_at!r}")
        self.defer_reply = raw.get("defer_reply", "451 4.7.1 Try again later")
        self.reply_421_after = raw.get("reply_421_after")
        self.reply_421 = raw.get("reply_421", "421 4.7.0 Too many messages, closing")
        self.drop_after = raw.get("drop_in_data_after")
        self.drop_mode = raw.get("drop_in_data_mode", "mid")
        if self.drop_mode not in ("mid", "after_dot"):
            raise SystemExit(f"scripted_smtpd: drop_in_data_mode must be mid or after_dot, not {self.drop_mode!r}")
        self.drop_times = raw.get("drop_in_data_times")
        self.tls_context = None
        self.require_starttls = False
        tls = raw.get("starttls")
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls["cert"], tls["key"])
            if tls.get("max_version"):
                ctx.minimum_version = ssl.TLSVersion.TLSv1
                ctx.maximum_version = getattr(ssl.TLSVersion, tls["max_version"])
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            self.tls_context = ctx
            self.require_starttls = bool(tls.get("require", False))


def pick(reply, attempt):
    """A reply string, or the attempt-th item of a list (the last one repeats)."""
    if isinstance(reply, list):
        return reply[min(attempt, len(reply) - 1)] if reply else None
    return reply


def is_final_line(status):
    text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
    return text[3:4] != "-"


class State:
    """Server-wide counters shared by all connections."""

    def __init__(self):
        self.sessions = 0
        self.rcpt_attempts = collections.Counter()
        self.mail_attempts = collections.Counter()
        self.command_attempts = collections.Counter()
        self.data_attempts = 0
        self.data_defers = collections.Counter()
        self.drops = 0


class Handler:
    def __init__(self, scn, state, rec):
        self.scn = scn
        self.state = state
        self.rec = rec

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        keywords = [r[4:] for r in responses[1:]]
        if "PIPELINING" not in keywords:
            keywords.insert(0, "PIPELINING")
        keywords += self.scn.ehlo_add
        keywords = [k for k in keywords
                    if k.split(" ")[0].upper() not in self.scn.ehlo_disable
                    and k.split(" ")[0].upper() != "AUTH"]
        lines = [responses[0][4:]] + keywords
        return [("250 " if i == len(lines) - 1 else "250-") + line for i, line in enumerate(lines)]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        key = address.lower()
        reply = pick(self.scn.mail_replies.get(key), self.state.mail_attempts[key])
        self.state.mail_attempts[key] += 1
        if reply is None:
            return MISSING
        if reply.startswith("2"):
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        key = address.lower()
        if self.scn.rcpt_limit is not None and len(envelope.rcpt_tos) >= self.scn.rcpt_limit:
            return "452 4.5.3 Too many recipients"
        attempt = self.state.rcpt_attempts[key]
        self.state.rcpt_attempts[key] += 1
        reply = pick(self.scn.rcpt_replies.get(key), attempt)
        if reply is None:
            if self.scn.defer_at == "rcpt" and attempt < self.scn.defer_first_n:
                reply = self.scn.defer_reply
            else:
                reply = "250 2.1.5 OK"
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply

    async def handle_DATA(self, server, session, envelope):
        scn, state = self.scn, self.state
        attempt = state.data_attempts
        state.data_attempts += 1
        keys = [r.lower() for r in envelope.rcpt_tos]
        reply = pick(scn.data_replies, attempt)
        if reply is None:
            if scn.defer_at == "data" and any(state.data_defers[k] < scn.defer_first_n for k in keys):
                for k in keys:
                    state.data_defers[k] += 1
                reply = scn.defer_reply
            else:
                reply = f"250 2.0.0 OK: queued as S{server.session_no}M{attempt}"
        dropping = server.drop_armed() and scn.drop_mode == "after_dot"
        record = {
            "session": server.session_no,
            "peer": server.peer_text,
            "helo": session.host_name,
            "tls": session.ssl is not None,
            "mail_from": envelope.mail_from,
            "mail_options": envelope.mail_options,
            "rcpt_tos": envelope.rcpt_tos,
            "rcpt_options": envelope.rcpt_options,
            "data": bytes(envelope.original_content).hex(),
            "reply": "" if dropping else reply,
            "accepted": (not dropping) and reply.startswith("2"),
            "at": time.time(),
        }
        self.rec.transaction(record)
        if dropping:
            server.drop("after the final dot, before the reply")
        if reply.startswith("2"):
            server.accepted += 1
        return reply

    def handle_STARTTLS(self, server, session, envelope):
        cipher = session.ssl.get("cipher") if session.ssl else None
        self.rec.log(server.session_no, "--", f"TLS established {cipher}")
        return True


class ScriptedSMTP(SMTP):
    def __init__(self, handler, scn, state, rec, **kwargs):
        super().__init__(handler, **kwargs)
        self.scn = scn
        self.state = state
        self.rec = rec
        self.session_no = 0
        self.peer_text = "?"
        self.accepted = 0
        self.in_data = False
        self.data_bytes = 0
        self.pushed_any = False
        self._smtp_methods = {name: self._gated(name, method)
                              for name, method in self._smtp_methods.items()}

    # -- connection events ----------------------------------------------------

    def connection_made(self, transport):
        tls_upgrade = self._original_transport is not None
        super().connection_made(transport)
        if not tls_upgrade:
            self.state.sessions += 1
            self.session_no = self.state.sessions
            peer = self.session.peer
            self.peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
            self.rec.log(self.session_no, "--", f"connect from {self.peer_text}")

    def connection_lost(self, error):
        self.rec.log(self.session_no, "--", f"connection closed ({error or 'clean'})")
        super().connection_lost(error)

    def _client_connected_cb(self, reader, writer):
        super()._client_connected_cb(reader, writer)
        original = reader.readuntil

        async def logged_readuntil(separator=b"\n"):
            line = await original(separator)
            if self.in_data:
                if line == b".\r\n":
                    self.rec.log(self.session_no, "C:", f"<{self.data_bytes} bytes of message data>")
                    self.rec.log(self.session_no, "C:", ".")
                else:
                    first = self.data_bytes == 0
                    self.data_bytes += len(line)
                    if first and self.drop_armed() and self.scn.drop_mode == "mid":
                        self.rec.log(self.session_no, "C:", f"<{self.data_bytes} bytes of message data>")
                        self.drop("in the middle of the message data")
            else:
                self.rec.log(self.session_no, "C:", line.rstrip(b"\r\n").decode("utf-8", "backslashreplace"))
            return line

        reader.readuntil = logged_readuntil

    # -- replies --------------------------------------------------------------

    async def push(self, status):
        if not self.pushed_any:
            self.pushed_any = True
            if self.scn.greeting is not None:
                status = self.scn.greeting
            if self.scn.greeting_delay:
                await asyncio.sleep(self.scn.greeting_delay)
        delay = self.scn.delay
        if self.scn.delay_by_peer and isinstance(self.session.peer, tuple):
            delay = self.scn.delay_by_peer.get(self.session.peer[0], delay)
        if delay and is_final_line(status):
            await asyncio.sleep(delay)
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        self.rec.log(self.session_no, "S:", text)
        await super().push(status)

    def _gated(self, name, method):
        async def run(arg):
            scn = self.scn
            if scn.reply_421_after is not None and self.accepted >= scn.reply_421_after:
                await self.push(scn.reply_421)
                self.close_session("421 after %d messages" % self.accepted)
                return
            if name in scn.command_replies:
                reply = pick(scn.command_replies[name], self.state.command_attempts[name])
                self.state.command_attempts[name] += 1
                await self.push(reply)
                if reply.startswith("421"):
                    self.close_session("scripted 421")
                return
            await method(arg)
        return run

    async def smtp_DATA(self, arg):
        self.in_data = True
        self.data_bytes = 0
        try:
            await super().smtp_DATA(arg)
        finally:
            self.in_data = False

    # -- closing --------------------------------------------------------------

    def drop_armed(self):
        scn = self.scn
        return (scn.drop_after is not None and self.accepted >= scn.drop_after
                and (scn.drop_times is None or self.state.drops < scn.drop_times))

    def drop(self, where):
        """Closes the connection without a reply; ends this session's task."""
        self.state.drops += 1
        self.rec.log(self.session_no, "--", f"dropping the connection {where}")
        self.transport.close()
        raise asyncio.CancelledError()

    def close_session(self, why):
        """Closes the connection after the reply already pushed; ends this session's
        task at once, so pipelined commands already buffered get no reply."""
        self.rec.log(self.session_no, "--", f"closing: {why}")
        self.transport.close()
        raise asyncio.CancelledError()


def main():
    ap = argparse.ArgumentParser(description="scripted SMTP receiver for tests")
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--scenario", required=True, help="JSON scenario file")
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args()
    if not args.host.startswith("127."):
        raise SystemExit(f"scripted_smtpd: refusing to bind outside 127.0.0.0/8: {args.host}")

    with open(args.scenario, encoding="utf-8") as f:
        scn = Scenario(json.load(f))
    rec = Recorder(args.out_dir)
    state = State()
    handler = Handler(scn, state, rec)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def factory():
        return ScriptedSMTP(
            handler, scn, state, rec,
            hostname=scn.hostname,
            ident="ESMTP scripted",
            data_size_limit=scn.size_limit,
            enable_SMTPUTF8=scn.smtputf8,
            tls_context=scn.tls_context,
            require_starttls=scn.require_starttls,
            timeout=scn.timeout,
            loop=loop,
        )

    try:
        server = loop.run_until_complete(loop.create_server(factory, host=args.host, port=args.port))
    except OSError as e:
        print(f"scripted_smtpd: bind {args.host}:{args.port}: {e}", file=sys.stderr)
        sys.exit(2)

    def on_stdin():
        if not os.read(0, 4096):
            loop.stop()

    # Only a pipe (as the Rust side passes) is watched: EOF means the test is gone.
    if stat.S_ISFIFO(os.fstat(0).st_mode):
        loop.add_reader(0, on_stdin)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    print(f"listening on {args.host}:{args.port}", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
