"""Where the time of a no-op task goes: the child's loop, the producer, and the server.

    python -m bench.profile_worker                    # all parts (about 5 minutes)
    python -m bench.profile_worker --quick            # small N, no py-spy
    python -m bench.profile_worker --parts child,server --n 5000 --out /tmp/fqprof

Parts (each on a fresh private server, ``bench.harness.Bench``: valkey, loopback, ``appendonly no``):

``child``     cProfile (timer: process CPU time, so waiting for the server or for a core counts only
              as the CPU its system calls use) of one child loop run in-process,
              ``forrestq.worker.child.Child(cfg, Slot()).loop()`` with ``max_tasks=N``, on a backlog of N
              no-ops (in a subprocess of its own: the loop
              retires a child that has child processes, and the benchmark has the server as one). The
              same loop is first run without the profiler, for its plain rate. Printed: the top
              functions by own time and by cumulative time, and the own time summed per bucket
              (waiting for the server, sending, redis-py, forrestq, codec/pickle, system calls).
``producer``  cProfile of ``q.schedule_many`` of N pre-built ``defer(noop)``, and of an N-node random DAG
              (``bench.dag.build``), with the server CPU per task.
``server``    a real ``forrestq worker --procs 2`` drains N no-ops; ``INFO commandstats`` per task
              (calls and microseconds per task of every command, those run inside the Lua scripts
              included) and server CPU per task; then a second drain with ``SLOWLOG`` recording every
              command, to split the time of EVALSHA between the scripts (claim, complete, ...).
``variants``  prototypes of proposed speed-ups, applied by monkeypatching a real worker at its start
              (``$FQ_BENCH_VARIANT``; the package itself is not edited): ``no-script-exists`` (redis-py
              sends SCRIPT EXISTS before every pipeline holding a Script: one round trip more per
              task), ``no-capture`` (no fd 1/2 redirection per task), ``no-mtime`` (no stale-code
              ``os.stat`` per task), ``no-wake`` (no write to the worker's wake pipe per task end),
              ``no-forensics`` (no per-task CPU and peak-memory measurement in the children: what
              issue 14's bookkeeping costs), ``all``; drain rate of each with --procs, interleaved repetitions.
``protocol``  the floor set by the protocol alone: 1 or 2 plain loops that call only claim.lua and
              complete.lua the way a child does (completions pipelined with the next claims), with
              redis-py Scripts (SCRIPT EXISTS first) or plain EVALSHA, and K = 1, 4, 16 tasks per
              pipeline: what batched claims/completions would buy, before any Lua change.
``pyspy``     py-spy (``pip install py-spy``; needs ptrace, root here) samples one child and the
              worker parent of a real ``--procs 2`` worker for a few seconds of a long drain, with idle
              (blocked) samples included: where a child's wall time goes, and what the parent does.
"""
from __future__ import annotations

import argparse
import collections
import cProfile
import hashlib
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import ROOT, Bench, children_of, context, median, print_context, server_cpu, tree_cpu, wait_quiet
from forrestq import Queue, defer

MIN_IDLE = [1.6, 120.0]  # --min-idle, --quiet-timeout
from bench.tasks import noop

QUEUE = "prof"


# ------------------------------------------------------------------------------------ cProfile


def bucket(filename: str, func: str) -> str:
    if filename == "~" and ("_socket.socket" in func or "select" in func):
        # sendall wakes the server, which often runs at once on this core: waiting shows up in both
        return "socket send/recv (wall profiles: includes waiting for the server)"
    if "/redis/" in filename or "hiredis" in func:
        return "redis-py + hiredis"
    if "forrestq/codec" in filename or "pickle" in filename or "pickle" in func or "dill" in filename:
        return "codec (pickle)"
    if "/forrestq/" in filename:
        return "forrestq (python)"
    if filename == "~" and ("posix" in func or "os." in func):
        return "os calls (dup2, ftruncate, stat, urandom, ...)"
    return "other"


def summarize(path: Path, top: int, total: float | None = None) -> str:
    out = io.StringIO()
    raw = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    total = total or sum(v[2] for v in raw.values())
    buckets: dict[str, float] = collections.Counter()
    for (filename, _line, func), (_cc, _nc, tt, _ct, _callers) in raw.items():
        buckets[bucket(filename, func)] += tt
    print("own time by bucket:", file=out)
    for name, tt in sorted(buckets.items(), key=lambda kv: -kv[1]):
        print(f"  {tt / total:6.1%}  {name}", file=out)
    s = pstats.Stats(str(path), stream=out)
    s.strip_dirs()
    s.sort_stats("tottime").print_stats(top)
    s.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# Prototypes of proposed changes, applied by monkeypatching (the package is not edited), selected by
# $FQ_BENCH_VARIANT (comma-separated): what each would gain is measured, not guessed.
PATCHES = r"""
import os
_variants = set(filter(None, os.environ.get("FQ_BENCH_VARIANT", "").split(",")))
if _variants & {"no-script-exists", "all"}:
    # redis-py's Pipeline.execute sends SCRIPT EXISTS (one more round trip) before every pipeline that
    # holds a Script; check once per process instead (the real fix: EVALSHA, reload on NOSCRIPT).
    import redis.client
    _checked = set()
    _load = redis.client.Pipeline.load_scripts
    def _load_once(self):
        key = tuple(sorted(s.sha for s in self.scripts))
        if key not in _checked:
            _load(self)
            _checked.add(key)
    redis.client.Pipeline.load_scripts = _load_once
if _variants & {"no-capture", "all"}:
    # no redirection of fds 1/2 per task (ftruncate, lseek, 4 dup2, 2 flush, fstat)
    import forrestq.worker.procs as _p
    _p.Capture.start = lambda self: None
    _p.Capture.stop = lambda self: 0
if _variants & {"no-wake", "all"}:
    # no byte to the worker's wake pipe per task end (the parent then wakes on its 50 ms tick)
    import forrestq.worker.child as _c
    if hasattr(_c.Child, "wake"):
        _c.Child.wake = lambda self: None
if _variants & {"no-forensics"}:
    # no per-task CPU and peak-memory measurement in the children (issue 14's bookkeeping)
    import forrestq.worker.forensics as _f
    _f.Meter.begin = lambda self: 0.0
    _f.Meter.end = lambda self: (0.0, 0)
if _variants & {"no-mtime", "all"}:
    # no os.stat of the function's module file per task (the stale-code check)
    import forrestq.runner as _r
    _r._mtime = lambda fn: None
"""

WORKER_CODE = PATCHES + r"""
import sys
from forrestq.cli import main
main(sys.argv[1:])
"""

CHILD_CODE = PATCHES + r"""
import cProfile, json, os, socket, sys, time
from forrestq.worker.child import Child, ChildConfig
from forrestq.worker.slots import Slot
url, queue, n, profile, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
cfg = ChildConfig(url=url, queues=[queue], worker_id="profile:w", consumer=f"profile:{os.getpid()}",
                  host=socket.gethostname(), lease_ms=60000, max_tasks=n, block_ms=200)
child = Child(cfg, Slot())
prof = cProfile.Profile(time.process_time)  # CPU time: robust to a busy machine; waits cost ~nothing
t0 = time.perf_counter(); c0 = time.process_time()
if profile:
    prof.enable()
child.loop()
if profile:
    prof.disable()
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
if profile:
    prof.dump_stats(out)
print(json.dumps({"tasks": child.tasks_run, "wall": wall, "cpu": cpu}))
"""


def part_child(n: int, top: int, out: Path) -> None:
    print(f"\n## child: one in-process Child.loop() draining {n:,} no-ops (max_tasks={n})", flush=True)
    with Bench() as b:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get(
            "PYTHONPATH")) if p)}
        for profile in (False, True):
            b.flush()
            Queue(QUEUE, url=b.url).schedule_many([defer(noop) for _ in range(n)])
            srv0 = server_cpu(b.r)
            res = subprocess.run([sys.executable, "-c", CHILD_CODE, b.url, QUEUE, str(n),
                                  "1" if profile else "0", str(out / "child.prof")],
                                 capture_output=True, text=True, timeout=120 + n * 0.01, cwd=ROOT, env=env)
            if res.returncode:
                raise RuntimeError(f"profiled child failed:\n{res.stderr[-3000:]}")
            got = json.loads(res.stdout.strip().splitlines()[-1])
            srv = server_cpu(b.r) - srv0
            what = "with cProfile" if profile else "plain"
            print(f"{what:14}: {got['tasks']:,} tasks, {got['tasks'] / got['wall']:,.0f} tasks/s, "
                  f"{got['wall'] / got['tasks'] * 1e6:.0f} us wall/task, child CPU "
                  f"{got['cpu'] / got['tasks'] * 1e6:.0f} us/task, server CPU {srv / got['tasks'] * 1e6:.0f} "
                  "us/task", flush=True)
        print(summarize(out / "child.prof", top))


def part_producer(n: int, top: int, out: Path) -> None:
    print(f"\n## producer: schedule_many of {n:,} pre-built defer(noop)", flush=True)
    with Bench() as b:
        q = Queue(QUEUE, url=b.url)
        q.schedule_many([defer(noop) for _ in range(2)])
        tasks = [defer(noop) for _ in range(n)]
        t0 = time.perf_counter()
        Queue(QUEUE + "-plain", url=b.url).schedule_many([defer(noop) for _ in range(n)])
        plain = time.perf_counter() - t0
        srv0 = server_cpu(b.r)
        prof = cProfile.Profile()
        prof.enable()
        q.schedule_many(tasks)
        prof.disable()
        srv = server_cpu(b.r) - srv0
        prof.dump_stats(str(out / "producer.prof"))
        print(f"plain: {n / plain:,.0f} tasks/s (defer included); profiled schedule_many: server CPU "
              f"{srv / n * 1e6:.1f} us/task")
        print(summarize(out / "producer.prof", top))

        from bench.dag import build

        nodes, sinks, _, edges = build(n, 5, 1000, 1)
        qd = Queue(QUEUE + "-dag", url=b.url)
        srv0 = server_cpu(b.r)
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        qd.schedule_many([nodes[i] for i in sinks])
        prof.disable()
        took = time.perf_counter() - t0
        srv = server_cpu(b.r) - srv0
        prof.dump_stats(str(out / "producer-dag.prof"))
        print(f"\n## producer: schedule_many of a {n:,}-node random DAG (bench.dag, fan-in 0..5, {edges:,} "
              f"edges, {len(sinks):,} sinks as roots): {took:.2f} s profiled, server CPU {srv / n * 1e6:.1f} "
              "us/node")
        print(summarize(out / "producer-dag.prof", top))


def script_names() -> dict[str, str]:
    """sha1 -> script name, for every script forrestq sends (as the loader sends it: header included)."""
    from forrestq.ops import _DIR, source

    return {hashlib.sha1(source(p.stem).encode()).hexdigest(): p.stem for p in _DIR.glob("*.lua")}


def part_server(n: int, procs: int) -> None:
    print(f"\n## server: forrestq worker --procs {procs} draining {n:,} no-ops", flush=True)
    with Bench() as b:
        b.flush()
        Queue(QUEUE, url=b.url).schedule_many([defer(noop) for _ in range(n)])
        b.r.config_resetstat()
        srv0 = server_cpu(b.r)
        with b.worker(QUEUE, procs) as proc:
            b.wait_finished(QUEUE, n, 60 + n * 0.05, proc)
            cpu = tree_cpu(proc.pid)
        srv = server_cpu(b.r) - srv0
        first, last, count = b.finish_span(QUEUE)
        stats = b.commandstats()
        print(f"drain {(count - 1) / (last - first):,.0f} tasks/s; server CPU {srv / n * 1e6:.0f} us/task "
              f"(start-up included); worker tree CPU at the end: parent {cpu['parent']:.2f} s, children "
              f"{cpu['children']:.2f} s")
        print("| command | calls/task | usec/call | usec/task |\n|---|---:|---:|---:|")
        rows = sorted(stats.items(), key=lambda kv: -kv[1]["usec"])
        for name, v in rows:
            if v["usec"] / n < 0.05:
                continue
            print(f"| {name} | {v['calls'] / n:.2f} | {v['usec_per_call']:.2f} | {v['usec'] / n:.2f} |")
        inner = sum(v["usec"] for k, v in stats.items() if not k.startswith(("evalsha", "eval", "script")))
        ev = stats.get("evalsha", {}).get("usec", 0)
        print(f"EVALSHA total {ev / n:.1f} us/task; commands it (and the client) ran: {inner / n:.1f} us/task "
              "(commands called by a script count in their own row as well as in EVALSHA's)")

        # second drain: per-script split from the slow log (every command logged)
        b.flush()
        Queue(QUEUE, url=b.url).schedule_many([defer(noop) for _ in range(n)])
        b.r.config_set("slowlog-log-slower-than", 0)
        b.r.config_set("slowlog-max-len", 40 * n + 1000)  # commands run by scripts are logged too
        b.r.slowlog_reset()
        with b.worker(QUEUE, procs) as proc:
            b.wait_finished(QUEUE, n, 60 + n * 0.05, proc)
        entries = b.r.execute_command("SLOWLOG", "GET", -1)
        b.r.config_set("slowlog-log-slower-than", 10000)
        names = script_names()
        per: dict[str, list[int]] = collections.defaultdict(list)
        for e in entries:
            args = [a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in e[3]]
            if not args:
                continue
            cmd = args[0].lower()
            if cmd != "evalsha" or len(args) < 2:
                continue  # the commands run inside the scripts are in the commandstats table above
            per["evalsha " + names.get(args[1], args[1][:8])].append(int(e[2]))
        if len(entries) >= 40 * n + 1000:
            print("(the slow log overflowed: the split below is partial)")
        print("\nEVALSHA per script, from SLOWLOG (every command logged, which adds its own overhead):")
        print("| script | calls/task | median usec | mean usec | usec/task |\n|---|---:|---:|---:|---:|")
        for cmd, ds in sorted(per.items(), key=lambda kv: -sum(kv[1])):
            if sum(ds) / n < 0.05:
                continue
            ds.sort()
            print(f"| {cmd} | {len(ds) / n:.2f} | {ds[len(ds) // 2]} | {sum(ds) / len(ds):.1f} | "
                  f"{sum(ds) / n:.1f} |")


VARIANTS = ("baseline", "no-script-exists", "no-capture", "no-mtime", "no-wake", "all")


def part_variants(n: int, procs: int, reps: int) -> None:
    """A real worker, launched with the prototype patches of each variant, drains n no-ops."""
    print(f"\n## variants: forrestq worker --procs {procs} draining {n:,} no-ops, with the prototype "
          f"patches of each variant (monkeypatched at the worker's start), {reps} interleaved reps", flush=True)
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    with Bench() as b:
        for rep in range(reps):
            for variant in VARIANTS:
                idle = wait_quiet(*MIN_IDLE)
                b.flush()
                Queue(QUEUE, url=b.url).schedule_many([defer(noop) for _ in range(n)])
                orig = b.worker_cmd
                b.worker_cmd = lambda q, p, *x, orig=orig: [sys.executable, "-c", WORKER_CODE, *orig(q, p, *x)[3:]]
                os.environ["FQ_BENCH_VARIANT"] = "" if variant == "baseline" else variant
                try:
                    proc = b.start_worker(QUEUE, procs)
                finally:
                    b.worker_cmd = orig
                    os.environ.pop("FQ_BENCH_VARIANT", None)
                try:
                    b.wait_finished(QUEUE, 1, 60, proc, interval=0.005)
                    cpu0, srv0, done0 = tree_cpu(proc.pid), server_cpu(b.r), b.finished(QUEUE)
                    b.wait_finished(QUEUE, n, 60 + n * 0.05, proc)
                    cpu1, srv1 = tree_cpu(proc.pid), server_cpu(b.r)
                finally:
                    b.stop_worker(proc)
                if b.failed(QUEUE):
                    raise RuntimeError(f"variant {variant}: {b.failed(QUEUE)} tasks failed\n{b.worker_log()}")
                first, last, count = b.finish_span(QUEUE)
                per = max(1, n - done0)
                results[variant].append({
                    "rate": (count - 1) / (last - first), "server": (srv1 - srv0) / per * 1e6,
                    "children": (cpu1["children"] - cpu0["children"]) / per * 1e6,
                    "parent": (cpu1["parent"] - cpu0["parent"]) / per * 1e6})
                print(f"rep {rep + 1} {variant}: {results[variant][-1]['rate']:,.0f}/s (idle cores before: "
                      f"{idle:.2f})", flush=True)
    base = median([r["rate"] for r in results["baseline"]])
    print("| variant | tasks/s | vs baseline | server CPU/task | children CPU/task | parent CPU/task |\n"
          "|---|---:|---:|---:|---:|---:|")
    for variant, rs in results.items():
        rate = median([r["rate"] for r in rs])
        print(f"| {variant} | {rate:,.0f} | {rate / base - 1:+.0%} | {median([r['server'] for r in rs]):.0f} us | "
              f"{median([r['children'] for r in rs]):.0f} us | {median([r['parent'] for r in rs]):.0f} us |")


PROTOCOL_CODE = r"""
import json, os, socket, sys, time
import redis
from forrestq import ops
from forrestq.schema import DONE, QueueKeys
url, queue, mode, k_batch, n_max = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
r = redis.Redis.from_url(url)
scripts = ops.Scripts(r)
scripts.load()
k = QueueKeys(queue)
host, consumer = socket.gethostname(), f"proto:{os.getpid()}"
claim_sha, complete_sha = scripts.script("claim").sha, scripts.script("complete").sha
def claim_args(token):
    return ops.ClaimArgs(consumer, token, 60000, host, "proto")
def completion(tid, token):
    return ops.Completion(tid, token, DONE, b"\x80\x05N.", runtime=0.000001, host=host)
def raw(op, args):  # the bare EVALSHA the wrapper sends, without the wrapper (its cost is what differs)
    keys, argv = op._keys(k, args), op._argv(k, args)
    return len(keys), *keys, *argv
held = []  # (task id, token) claimed, their completion not sent yet
done = 0
sys.stdout.write("ready\n"); sys.stdout.flush(); sys.stdin.readline()
t0 = time.perf_counter(); c0 = time.process_time()
while True:
    pipe = r.pipeline(transaction=False)
    for tid, tok in held:
        if mode == "script":
            ops.complete.queue(scripts, pipe, k, completion(tid, tok))
        else:
            pipe.evalsha(complete_sha, *raw(ops.complete, completion(tid, tok)))
    tokens = [os.urandom(8).hex() for _ in range(k_batch)]
    for tok in tokens:
        if mode == "script":
            ops.claim.queue(scripts, pipe, k, claim_args(tok))
        else:
            pipe.evalsha(claim_sha, *raw(ops.claim, claim_args(tok)))
    replies = pipe.execute()
    done += len(held)
    got = replies[len(held):]
    held = [(g[0].decode(), tok) for g, tok in zip(got, tokens) if g]
    if not held:
        break
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"done": done, "wall": wall, "cpu": cpu}))
"""


def part_protocol(n: int, reps: int) -> None:
    """The protocol alone: claim.lua + complete.lua as the child calls them, with no user code, no
    capture, no slot; per task (K=1) or K claims and K completions per pipeline."""
    print(f"\n## protocol floor: {n:,} no-ops drained by P plain loops that only call claim.lua and "
          "complete.lua (pipelined like the child: completions with the next claims), no task code", flush=True)
    modes = [("script", 1), ("evalsha", 1), ("evalsha", 4), ("evalsha", 16)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    rows = []
    with Bench() as b:
        for procs in (1, 2):
            for mode, kb in modes:
                rates, servers, clients = [], [], []
                for _ in range(reps):
                    wait_quiet(*MIN_IDLE)
                    b.flush()
                    Queue(QUEUE, url=b.url).schedule_many([defer(noop) for _ in range(n)])
                    loops = [subprocess.Popen([sys.executable, "-c", PROTOCOL_CODE, b.url, QUEUE, mode, str(kb),
                                               str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                              text=True, env=env, cwd=ROOT) for _ in range(procs)]
                    try:
                        for p in loops:
                            assert p.stdout.readline().strip() == "ready"
                        srv0 = server_cpu(b.r)
                        for p in loops:
                            p.stdin.write("go\n")
                            p.stdin.flush()
                        outs = [json.loads(p.communicate(timeout=60 + n * 0.01)[0].strip().splitlines()[-1])
                                for p in loops]
                    finally:
                        for p in loops:
                            if p.poll() is None:
                                p.kill()
                    srv = server_cpu(b.r) - srv0
                    total = sum(o["done"] for o in outs)
                    if total != n:
                        raise RuntimeError(f"protocol loop completed {total} of {n}")
                    rates.append(n / max(o["wall"] for o in outs))
                    servers.append(srv / n * 1e6)
                    clients.append(sum(o["cpu"] for o in outs) / n * 1e6)
                rows.append((procs, mode, kb, median(rates), median(servers), median(clients)))
                print(f"procs {procs} {mode} K={kb}: {median(rates):,.0f}/s", flush=True)
    print("| loops | calls | tasks per pipeline | tasks/s | server CPU/task | client CPU/task |\n"
          "|---:|---|---:|---:|---:|---:|")
    for procs, mode, kb, rate, srv, cli in rows:
        how = "redis-py Script (SCRIPT EXISTS first)" if mode == "script" else "pipe.evalsha"
        print(f"| {procs} | {how} | {kb} | {rate:,.0f} | {srv:.0f} us | {cli:.0f} us |")


def _pyspy_summary(path: Path, top: int) -> str:
    """Summarise py-spy's raw (collapsed) output: own samples per frame, and inclusive samples of
    forrestq's functions."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = int(count)
        total += c
        frames = stack.split(";")
        own[frames[-1]] += c
        for f in set(frames):
            if "forrestq" in f or "redis/client.py" in f:
                incl[f] += c
    out = io.StringIO()
    print(f"  {total} samples; own (leaf) frames:", file=out)
    for f, c in own.most_common(top):
        print(f"    {c / total:6.1%}  {f}", file=out)
    print("  inclusive, forrestq and redis-py client frames:", file=out)
    for f, c in incl.most_common(top):
        print(f"    {c / total:6.1%}  {f}", file=out)
    return out.getvalue()


def part_pyspy(n: int, procs: int, seconds: float, top: int, out: Path) -> None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(exe, os.X_OK):
        print("\n## pyspy: skipped (py-spy not installed: pip install py-spy)")
        return
    print(f"\n## pyspy: a child and the parent of forrestq worker --procs {procs}, {seconds:g} s of a "
          f"{n:,}-task drain, idle samples included", flush=True)
    with Bench() as b:
        b.flush()
        Queue(QUEUE, url=b.url).schedule_many([defer(noop) for _ in range(n)])
        with b.worker(QUEUE, procs) as proc:
            b.wait_finished(QUEUE, 200, 60, proc)
            kids = children_of(proc.pid)
            targets = {"child": kids[0], "parent": proc.pid} if kids else {"parent": proc.pid}
            spies = {}
            for what, pid in targets.items():
                spies[what] = subprocess.Popen(
                    [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
                     "--idle", "--format", "raw", "--output", str(out / f"pyspy-{what}.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for what, spy in spies.items():
                try:
                    _, err = spy.communicate(timeout=seconds + 60)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    err = b"timed out"
                if spy.returncode:
                    print(f"py-spy {what} failed: {err.decode(errors='replace')[-500:]}")
            done_during = b.finished(QUEUE)
        print(f"(tasks finished by the end of sampling: {done_during:,} of {n:,})")
        for what in targets:
            path = out / f"pyspy-{what}.txt"
            if path.exists():
                print(f"\n### py-spy {what}\n" + _pyspy_summary(path, top))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="child,producer,server,variants,protocol,pyspy")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the variants and protocol parts")
    ap.add_argument("--n", type=int, default=5000, help="no-op tasks per part (pyspy: 10x)")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--seconds", type=float, default=5.0, help="py-spy sampling time")
    ap.add_argument("--out", help="directory for child.prof, producer.prof and py-spy output "
                                  "(default: a temporary directory, removed)")
    ap.add_argument("--quick", action="store_true", help="N=1000, no py-spy")
    ap.add_argument("--min-idle", type=float, default=1.6, help="before each measurement, wait until this "
                    "many cores were idle for a second (0 = do not wait)")
    ap.add_argument("--quiet-timeout", type=float, default=120, help="... but at most this many seconds")
    args = ap.parse_args()
    MIN_IDLE[:] = [args.min_idle, args.quiet_timeout]
    parts = args.parts.split(",")
    if args.quick:
        args.n, args.reps = 1000, 1
        parts = [p for p in parts if p != "pyspy"]
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fq-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        print_context(context())
        if "child" in parts:
            part_child(args.n, args.top, out)
        if "producer" in parts:
            part_producer(max(args.n, 20000), args.top, out)
        if "server" in parts:
            part_server(args.n, args.procs)
        if "variants" in parts:
            part_variants(args.n, args.procs, args.reps)
        if "protocol" in parts:
            part_protocol(args.n, args.reps)
        if "pyspy" in parts:
            part_pyspy(args.n * 10, args.procs, args.seconds, args.top, out)
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
