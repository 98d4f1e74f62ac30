#!/usr/bin/env python3
"""The e2e benchmark's webhook endpoint: counts the message.delivered events of
the (batched) requests it gets and writes the count and the time of the last
one to a file after each request. No signature check and no JSON parsing
(it shares the machine's two cores with volley; a real endpoint does not):
the benchmark measures volley, and the tests check signatures and bodies
with the reference library.

Usage: webhook_sink.py HOST PORT OUT
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

HOST, PORT, OUT = sys.argv[1], int(sys.argv[2]), sys.argv[3]
state = {"events": 0, "requests": 0, "last": 0.0}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        state["events"] += body.count(b'{"type":"message.delivered"')
        state["requests"] += 1
        state["last"] = time.time()
        with open(OUT + ".tmp", "w") as f:
            json.dump(state, f)
        import os
        os.replace(OUT + ".tmp", OUT)
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer((HOST, PORT), Handler).serve_forever()
