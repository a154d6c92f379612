#!/usr/bin/env python3
"""What an idle kept-alive connection costs patgate: N clients each fetch one answer of
SIZE bytes over keep-alive (each size in a patgate of its own), then stay open and idle; patgate's resident memory (VmRSS)
before and after, divided by N, is the cost of one idle connection.

Usage: python3 benches/idle.py PATGATE_BIN [N] [SIZE]   (loopback only; builds nothing)
Prints one line per answer size; exits non-zero when a connection costs more than 32 KiB.
"""
import http.server, json, os, socket, socketserver, subprocess, sys, tempfile, threading, time

bin_ = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
sizes = [int(sys.argv[3])] if len(sys.argv) > 3 else [256, 256 * 1024]

class Up(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        size = int(self.path.rsplit("/", 1)[-1])
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.wfile.write(b"x" * size)
    def log_message(self, *a):
        pass

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 4096

up = Server(("127.0.0.1", 0), Up)
threading.Thread(target=up.serve_forever, daemon=True).start()
run = tempfile.mkdtemp()
proxy_port = socket.socket(); proxy_port.bind(("127.0.0.1", 0)); port = proxy_port.getsockname()[1]; proxy_port.close()
cfg = os.path.join(run, "patgate.toml")
open(cfg, "w").write(f"""[server]
listen = "127.0.0.1:{port}"
workers = 1
max_connections_per_ip = 100000
[admin]
enabled = false
[store]
url = "sqlite://{run}/p.db"
[log]
level = "warn"
[[routes]]
path = "/big/**"
upstream = "http://127.0.0.1:{up.server_address[1]}"
rules = [{{ scope = "agentpools:read" }}]
""")
out = subprocess.run([bin_, "--config", cfg, "token", "create", "--name", "idle", "--owner", "bench", "--scopes",
                      "agentpools:read", "--orgs", "*", "--expires-in", "1h", "--json"], capture_output=True, check=True, text=True)
token = json.loads(out.stdout)["token"]
def serve():
    p = subprocess.Popen([bin_, "--config", cfg, "serve"])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port)).close(); break
        except OSError:
            time.sleep(0.1)
    return p

worst = 0
for size in sizes:
  p = serve()
  try:
    def rss():
        for line in open(f"/proc/{p.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    def fetch(s, size):
        s.sendall(f"GET /big/{size} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(65536)
        head, body = got.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200"), head
        while len(body) < size:
            body += s.recv(1 << 20)
    if True:
        # Warm up: the allocator's arenas and the upstream pool.
        warm = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        for s in warm: fetch(s, size)
        for s in warm: s.close()
        time.sleep(0.5)
        before = rss()
        conns = []
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            fetch(s, size)
            conns.append(s)
        time.sleep(1.0)
        after = rss()
        per = (after - before) / n
        worst = max(worst, per)
        print(f"{n} idle connections after a {size}-byte answer: RSS {before} -> {after} KiB, {per:.1f} KiB each")
        for s in conns: s.close()
  finally:
    p.terminate(); p.wait(10)
sys.exit(1 if worst > 32 else 0)
