#!/usr/bin/env python3
"""Start-up time and memory with many idle keep-alive connections.

Starts a small stand-in Jira (HTTP/1.1 keep-alive, one JSON answer) and the proxy in front
of it with a Basic user, then:
  1. times process start to the first answered request (one without credentials: 401);
  2. opens N connections one after another, sends one authenticated request on each and
     reads the answer (many clients over time, not a burst), and leaves them all open;
  3. reads the proxy's resident memory (VmRSS) with the N connections idle.

    cargo build --release
    python3 benches/idle.py                       # 10,000 connections
    python3 benches/idle.py --conns 2000 --no-request

Needs `ulimit -n` above N + 100. Standard library only.
"""
import argparse
import base64
import http.server
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Jira(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b'{"name":"alice","active":true}'

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def read_answer(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed before the answer")
        data += chunk
    return data


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/jira-auth-proxy"))
    ap.add_argument("--conns", type=int, default=10_000)
    ap.add_argument("--no-request", action="store_true", help="open the connections without a request on them")
    args = ap.parse_args()

    jira = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Jira)
    threading.Thread(target=jira.serve_forever, daemon=True).start()
    work = tempfile.mkdtemp(prefix="jap-idle-")
    hashed = subprocess.run([args.bin, "hash-password"], input=b"idle-pw", capture_output=True, check=True)
    port = free_port()
    cfg = os.path.join(work, "config.toml")
    with open(cfg, "w") as f:
        f.write(f"""version = 1
[server]
listen = "127.0.0.1:{port}"
max_connections = {args.conns + 100}
header_read_timeout = "10m"
[upstream]
url = "http://127.0.0.1:{jira.server_address[1]}"
[audit]
to = "off"
[[auth.chain]]
type = "basic"
[[users]]
name = "alice"
password_hash = "{hashed.stdout.decode().strip()}"
[[access.rules]]
name = "authenticated"
authenticated = true
effect = "allow"
""")
    auth = base64.b64encode(b"alice:idle-pw").decode()
    request = f"GET /rest/api/2/myself HTTP/1.1\r\nHost: jira\r\nAuthorization: Basic {auth}\r\n\r\n".encode()
    # The first request carries no credential: its answer (401) is the proxy serving, and
    # no password check is in the figure.
    probe = b"GET /rest/api/2/myself HTTP/1.1\r\nHost: jira\r\n\r\n"

    started = time.monotonic()
    proxy = subprocess.Popen([args.bin, "serve", "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port)) as s:
                    s.sendall(probe)
                    if read_answer(s).startswith(b"HTTP/1.1 401"):
                        break
            except (OSError, RuntimeError):
                if proxy.poll() is not None:
                    sys.exit("the proxy exited")
                time.sleep(0.001)
        first = (time.monotonic() - started) * 1000
        before = rss_kib(proxy.pid)
        conns = []
        for _ in range(args.conns):
            c = socket.create_connection(("127.0.0.1", port))
            if not args.no_request:
                c.sendall(request)
                if not read_answer(c).startswith(b"HTTP/1.1 200"):
                    sys.exit("a request was not answered 200")
            conns.append(c)
        time.sleep(1.0)
        after = rss_kib(proxy.pid)
        what = "idle after one request each" if not args.no_request else "idle, no request"
        print(f"start to first answered request: {first:.1f} ms")
        print(f"RSS: {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB with {args.conns} connections "
              f"{what} ({(after - before) / args.conns:.2f} KiB per connection)")
        for c in conns:
            c.close()
    finally:
        proxy.terminate()
        proxy.wait()
        jira.shutdown()


if __name__ == "__main__":
    main()
