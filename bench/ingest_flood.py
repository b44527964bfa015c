#!/usr/bin/env python3
"""Ingest flood (issue 16, 4c): 20 concurrent 15 MiB NDJSON bodies of tiny records
against `runnel serve --auto-create` on PORT, sampling the server's RSS and /healthz
latency meanwhile.

    runnel serve --listen 127.0.0.1:18089 --data-dir /tmp/flood --auto-create &
    python3 bench/ingest_flood.py 18089
"""
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

port = int(sys.argv[1]) if len(sys.argv) > 1 else 18089
body = b'{"a":1}\n' * (15 * 1024 * 1024 // 8)
answers = []


def post():
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(120)
    s.sendall(
        b"POST /v1/topics/t/records HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-ndjson\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    try:
        s.sendall(body)
    except OSError:
        pass
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except OSError:
        pass
    answers.append(data.split(b"\r\n")[0].decode())


pid = subprocess.check_output(["pgrep", "-f", f"serve --listen 127.0.0.1:{port}"]).split()[0].decode()
threads = [threading.Thread(target=post) for _ in range(20)]
for t in threads:
    t.start()
max_rss, healthz = 0, []
for _ in range(40):
    t0 = time.time()
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    s.recv(100)
    healthz.append(time.time() - t0)
    status = open(f"/proc/{pid}/status").read()
    max_rss = max(max_rss, int(status.split("VmRSS:")[1].split()[0]))
    time.sleep(0.1)
for t in threads:
    t.join()
print(dict(Counter(answers)))
print(f"max RSS {max_rss // 1024} MB, slowest /healthz {max(healthz) * 1000:.0f} ms")
