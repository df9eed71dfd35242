#!/usr/bin/env python3
"""A static HTTPS file server with Range support, for the update tests and benchmark.

Python's http.server ignores Range; devices resume downloads with it, so this adds it. It can
also misbehave on purpose (--drop-after BYTES: cut every connection after that many body bytes,
simulating a flaky link) and write its port to a file (--port-file) so tests need no fixed port.
--log FILE appends one JSON line per request start ("begin", with the Range start), per MiB
sent ("sent"), and per end ("done", or "broken" when the client went away, e.g. a power cut),
so a test can tell how far each transfer got and whether a client resumed.

    update-server.py DIR --cert server.pem --key server.key [--port 0] [--port-file F] [--log F]
"""
import argparse
import http.server
import json
import os
import re
import ssl
import sys
import threading
import time


class Handler(http.server.SimpleHTTPRequestHandler):
    drop_after = 0
    log_path = None
    log_lock = threading.Lock()

    def log_message(self, fmt, *args):  # quiet: tests read stdout
        pass

    def event(self, event, **fields):
        if not self.log_path:
            return
        line = json.dumps({"t": round(time.time(), 3), "event": event, "path": self.path, **fields})
        with self.log_lock, open(self.log_path, "a") as f:
            f.write(line + "\n")

    def do_GET(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.event("begin", start=start, size=size, range=bool(match))
        sent = 0
        try:
            with open(path, "rb") as f:
                f.seek(start)
                while True:
                    chunk = f.read(256 * 1024)
                    if not chunk:
                        break
                    if self.drop_after and sent + len(chunk) > self.drop_after:
                        self.wfile.write(chunk[: self.drop_after - sent])
                        self.wfile.flush()
                        self.close_connection = True
                        self.event("dropped", start=start, sent=self.drop_after)
                        return
                    self.wfile.write(chunk)
                    sent += len(chunk)
                    if sent % (1 << 20) == 0:
                        self.event("sent", start=start, sent=sent)
        except OSError as e:  # the client went away (network loss, power cut)
            self.event("broken", start=start, sent=sent, error=type(e).__name__)
            self.close_connection = True
            return
        self.event("done", start=start, sent=sent)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--drop-after", type=int, default=0)
    ap.add_argument("--log", help="append JSON lines about each transfer to this file")
    args = ap.parse_args()
    cert, key = os.path.abspath(args.cert), os.path.abspath(args.key)
    port_file = os.path.abspath(args.port_file) if args.port_file else None
    Handler.log_path = os.path.abspath(args.log) if args.log else None
    os.chdir(args.dir)
    Handler.drop_after = args.drop_after
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    if port_file:
        with open(port_file + ".tmp", "w") as f:
            f.write(str(server.server_address[1]))
        os.rename(port_file + ".tmp", port_file)
    print(f"serving {args.dir} on https://127.0.0.1:{server.server_address[1]}/", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
