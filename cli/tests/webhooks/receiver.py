#!/usr/bin/env python3
"""A webhook endpoint for volley's tests: every request's signature is checked
with the Standard Webhooks reference library (`standardwebhooks`, not ours),
and each request is appended to a JSON-lines file as it came:

    {"webhook_id": ..., "verified": true|false, "error": ..., "body": "..."}

Usage: receiver.py HOST PORT SECRET OUT.jsonl [--status CODE]

Answers 204 to a verified request (or CODE when given), 400 to one whose
signature does not verify. Binds HOST:PORT only (a loopback address).
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

HOST, PORT, SECRET, OUT = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
STATUS = 204
if "--status" in sys.argv:
    STATUS = int(sys.argv[sys.argv.index("--status") + 1])
HOOK = Webhook(SECRET)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        headers = {k: v for k, v in self.headers.items()}
        record = {"webhook_id": headers.get("webhook-id", headers.get("Webhook-Id")),
                  "body": body.decode("utf-8", "replace")}
        try:
            HOOK.verify(body, headers)
            record["verified"] = True
            status = STATUS
        except WebhookVerificationError as e:
            record["verified"] = False
            record["error"] = str(e)
            status = 400
        with open(OUT, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer((HOST, PORT), Handler)
print("listening", flush=True)
server.serve_forever()
