#!/usr/bin/env python3
"""Raw pwrite(100 B) + fdatasync latency on this disk, no runnel involved: python3 bench/fsync_stalls.py append|prealloc SECONDS"""
import os, time, sys
mode = sys.argv[1]; secs = float(sys.argv[2])
path = f"/tmp/fsynctest.{mode}"
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
if mode == "prealloc":
    z = b"\0" * (1 << 20)
    for _ in range(64): os.write(fd, z)
    os.fsync(fd)
lat = []
off = 0
rec = b"x" * 100
end = time.time() + secs
while time.time() < end:
    t = time.perf_counter()
    os.pwrite(fd, rec, off); off += 100
    os.fdatasync(fd)
    lat.append((time.perf_counter() - t) * 1e3)
lat.sort()
n = len(lat)
print(mode, n, "ops", f"p50={lat[n//2]:.3f} p99={lat[int(n*0.99)]:.3f} p999={lat[int(n*0.999)]:.3f} max={lat[-1]:.1f} ms", "over10ms=", sum(1 for x in lat if x > 10))
os.close(fd); os.unlink(path)
