#!/usr/bin/env python3
"""A webhook receiver for the tests: records each POST (path, headers, body, arrival time) as
one JSON file in --dir, in arrival order, and answers with the status in --dir/status (200 when
the file is absent), so a test can take the receiver "down" (503) and back up without a restart.
Prints "ready" once it listens."""

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--dir", required=True)
args = parser.parse_args()
os.makedirs(args.dir, exist_ok=True)
lock = threading.Lock()
count = [0]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode("utf-8", "replace")
        try:
            with open(os.path.join(args.dir, "status")) as f:
                status = int(f.read().strip())
        except FileNotFoundError:
            status = 200
        if status == 200:
            with lock:
                count[0] += 1
                record = {
                    "path": self.path,
                    "headers": {k: v for k, v in self.headers.items()},
                    "body": body,
                    "received_at": time.time(),
                }
                name = os.path.join(args.dir, "%06d.json" % count[0])
                with open(name + ".tmp", "w") as f:
                    json.dump(record, f)
                os.rename(name + ".tmp", name)
        answer = b"ok" if status == 200 else b"answered %d for the test" % status
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_):
        pass


server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
print("ready", flush=True)
server.serve_forever()
