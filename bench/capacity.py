"""Capacity of one Redis node and of a 3-primary cluster (issue 17), measured on this machine.

    python -m bench.capacity                   # 3 repetitions, 5,000 no-ops (a few minutes)
    python -m bench.capacity --reps 5 --tasks 5000 --queues 6 --idle-procs 8 --idle-seconds 5
    python -m bench.capacity --skip single,many,idle --wakeups 60    # f only (about a minute)

Two topologies are up for the whole run: one private server (``forrestq.server.ServerProcess``, loopback,
``appendonly no``) and a ``forrestq.topology.LocalCluster`` (3 primaries + 3 replicas; ``CONFIG SET
appendonly no`` on every node, so both sides do the same work per command; the replicas stay attached).

a. **server CPU per no-op** (single node): ``INFO cpu`` (used_cpu_user + used_cpu_sys) delta over
   ``schedule_many`` of N no-ops (chunks of 2,000) and over their drain by ``forrestq worker --procs 2``
   (started after the enqueue; measured from the first finish, per task finished after it), / tasks.
   Also ``schedule()`` one call per task (500 calls), server CPU per call.
b. **drain rate** of that drain ((count - 1) / (last t1 - first t1) from the ``done`` zset) and the
   server's CPU share during it (server CPU seconds / wall seconds); the ceiling 1e6 / (server µs per
   task) is an extrapolation whenever the share is below 100 % of a core.
c. **many queues**, single node vs cluster: Q queues (names chosen so the cluster holds Q/3 on each
   primary), Q/3 queues per worker (one worker per primary's group, ``--procs --group-procs``), N tasks
   spread evenly; aggregate drain rate over all queues, and each node's server CPU per task it served.
d. **memory per queued no-op** (single node): ``INFO memory`` used_memory delta / N after the enqueue;
   per DAG node: N / 4 chains of 4 nodes (``combine``), delta / N nodes; and per finished no-op (the
   record kept after the drain of a.).
e. **an idle worker** with ``--procs P``: the client connections it holds on each node (connected_clients
   minus the idle baseline; CLIENT LIST), blocked clients (sampled), new connections/s, and the commands/s
   it causes (``total_commands_processed`` delta over --idle-seconds minus the baseline without the
   worker, commandstats for the breakdown); 1 queue and Q queues, single node and cluster.
f. (opt-in, ``--wakeups R``) **multi-slot wake-ups**: an idle worker serving the Q queues; R times, one
   no-op on every queue at once; claim start minus creation per task, single node then cluster.

Every worker runs in its own process group and is stopped in a ``finally`` (SIGTERM, then SIGKILL); both
topologies are stopped in a ``finally``. Every wait is bounded.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from bench.harness import context, print_context, server_cpu, wait_for, wait_quiet
from bench.tasks import combine, noop
from forrestq import Queue, defer
from forrestq.connection import connect
from forrestq.schema import QueueKeys
from forrestq.server import ServerProcess
from forrestq.topology import LocalCluster

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 2000


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# ------------------------------------------------------------------------------------------ workers


class Workers:
    """``forrestq worker`` subprocesses, each the leader of its own process group, logs in ``dir``;
    :meth:`stop_all` (SIGTERM, then SIGKILL of each group) is safe to call at any time."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.procs: list[subprocess.Popen[bytes]] = []
        self.count = 0

    def start(self, url: str, queues: Sequence[str], procs: int, env: dict[str, str] | None = None,
              ) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "forrestq", "worker", "--procs", str(procs), "--url", url, "--quiet",
               "--grace", "1"]
        for q in queues:
            cmd += ["--queue", q]
        full = dict(os.environ)
        full.update(env or {})
        full["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full.get("PYTHONPATH")) if p)
        self.count += 1
        path = self.dir / f"worker-{self.count}.log"
        with open(path, "ab") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=full, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
        proc.log_path = path  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def check(self) -> bool:
        """True while every worker runs; raises (with its log) for one that exited."""
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"worker {p.pid} exited with {p.returncode}: "
                                   f"{Path(p.log_path).read_text(errors='replace')[-1500:]}")  # type: ignore[attr-defined]
        return True

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # children left behind too
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for p in list(self.procs):
            self.stop(p)

    def incidents(self) -> dict[str, int]:
        """Lines of the worker logs a clean run does not have."""
        out = {"warnings": 0, "errors": 0, "reclaimed": 0, "handed_back": 0}
        for path in self.dir.glob("worker-*.log"):
            text = path.read_text(errors="replace")
            out["warnings"] += text.count("WARNING")
            out["errors"] += text.count("ERROR") + text.count("Traceback")
            out["reclaimed"] += text.count("reclaimed")
            out["handed_back"] += text.count("handed back")
        return out

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(p.read_text(errors="replace")[-chars:] for p in sorted(self.dir.glob("worker-*.log")))


@contextlib.contextmanager
def workers(directory: Path) -> Iterator[Workers]:
    w = Workers(directory)
    try:
        yield w
    finally:
        w.stop_all()


# ----------------------------------------------------------------------------------------- topologies


class Side:
    """One topology as the benchmark sees it: the URL workers and producers use, a key-routing client
    (``r``), and the data nodes whose INFO is read (``nodes``: name -> a plain client)."""

    def __init__(self, name: str, url: str, nodes: dict[str, redis.Redis], node_of: Any = None) -> None:
        self.name, self.url, self.nodes = name, url, nodes
        self.r = connect(url, socket_timeout=60)
        self._node_of = node_of  # key -> node name (cluster), else the only node
        self.idle: dict[str, float] = dict.fromkeys(nodes, 0.0)  # CPU µs/s each node uses with no client

    def node_of(self, key: str) -> str:
        return self._node_of(key) if self._node_of else next(iter(self.nodes))

    def flush(self) -> None:
        for c in self.nodes.values():
            if c.execute_command("ROLE")[0] in (b"master", "master"):
                c.flushall()
            c.config_resetstat()

    def cpu(self) -> dict[str, float]:
        return {n: server_cpu(c) for n, c in self.nodes.items()}

    def finished(self, queues: Sequence[str]) -> int:
        total = 0
        for q in queues:
            done, failed = self.r.hmget(QueueKeys(q).counts, "done", "failed")
            total += int(done or 0) + int(failed or 0)
        return total

    def failed(self, queues: Sequence[str]) -> int:
        return sum(int(self.r.hget(QueueKeys(q).counts, "failed") or 0) for q in queues)

    def span(self, queues: Sequence[str]) -> tuple[float, float, int]:
        """(first finish, last finish, tasks done) over the queues' ``done`` zsets."""
        firsts, lasts, count = [], [], 0
        for q in queues:
            k = QueueKeys(q).done
            a = self.r.zrange(k, 0, 0, withscores=True)
            b = self.r.zrange(k, -1, -1, withscores=True)
            if a:
                firsts.append(a[0][1])
                lasts.append(b[0][1])
                count += self.r.zcard(k)
        return min(firsts), max(lasts), count

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.r.close()
        for c in self.nodes.values():
            with contextlib.suppress(Exception):
                c.close()


def cluster_side(cluster: LocalCluster) -> Side:
    primaries = {f"p{i}": n for i, n in enumerate(cluster.nodes[:LocalCluster.PRIMARIES])}
    by_port = {n.port: name for name, n in primaries.items()}
    clients = {name: n.client(socket_timeout=30) for name, n in primaries.items()}
    return Side("cluster", cluster.url, clients, lambda key: by_port[cluster.primary_for(key).port])


def cluster_queues(cluster: LocalCluster, q: int, prefix: str) -> list[list[str]]:
    """Q queue names, Q/3 on each primary of the cluster: one group per primary."""
    groups: dict[int | None, list[str]] = {n.port: [] for n in cluster.nodes[:LocalCluster.PRIMARIES]}
    per = q // len(groups)
    i = 0
    while any(len(g) < per for g in groups.values()):
        name = f"{prefix}{i}"
        i += 1
        port = cluster.primary_for(QueueKeys(name).stream).port
        if port in groups and len(groups[port]) < per:
            groups[port].append(name)
    return list(groups.values())


# --------------------------------------------------------------------------------------- measurements


def schedule_all(r_url: str, queues: Sequence[str], n: int) -> None:
    """N no-ops spread evenly over the queues, ``schedule_many`` in chunks of CHUNK."""
    per = [n // len(queues) + (1 if i < n % len(queues) else 0) for i in range(len(queues))]
    for name, k in zip(queues, per):
        q = Queue(name, url=r_url)
        while k > 0:
            m = min(CHUNK, k)
            q.schedule_many([defer(noop) for _ in range(m)])
            k -= m


def drain(side: Side, w: Workers, groups: Sequence[Sequence[str]], n: int, procs: int) -> dict[str, Any]:
    """Start one worker per group on the backlog (n tasks + 2 warm-ups per queue), measure from the
    first finish to the last: rate, per-node server CPU per task it served, CPU share."""
    queues = [q for g in groups for q in g]
    total = n + 2 * len(queues)
    procs_ = [w.start(side.url, g, procs) for g in groups]
    wait_for(lambda: w.check() and side.finished(queues) >= len(groups), 120, "the workers' first tasks", 0.005)
    cpu0, t0, done0 = side.cpu(), time.monotonic(), side.finished(queues)
    per_queue0 = {q: side.finished([q]) for q in queues}
    wait_for(lambda: w.check() and side.finished(queues) >= total, 60 + n * 0.05, f"{total} tasks", 0.01)
    cpu1, t1 = side.cpu(), time.monotonic()
    first, last, count = side.span(queues)
    if side.failed(queues):
        raise RuntimeError(f"{side.failed(queues)} no-ops failed:\n{w.log_tail()}")
    served: dict[str, int] = dict.fromkeys(side.nodes, 0)
    for q in queues:
        served[side.node_of(QueueKeys(q).stream)] += side.finished([q]) - per_queue0[q]
    for p in procs_:
        w.stop(p)
    wall = t1 - t0
    out: dict[str, Any] = {"rate": (count - 1) / (last - first), "measured_tasks": total - done0, "wall_s": wall}
    for name in side.nodes:
        d = cpu1[name] - cpu0[name]
        out[f"{name}_us_per_task"] = d / max(1, served[name]) * 1e6
        out[f"{name}_net_us_per_task"] = (d - side.idle[name] * 1e-6 * wall) / max(1, served[name]) * 1e6
        out[f"{name}_share"] = d / wall
        out[f"{name}_tasks"] = served[name]
    out["all_us_per_task"] = sum(cpu1[x] - cpu0[x] for x in side.nodes) / max(1, total - done0) * 1e6
    return out


def single_node(side: Side, w: Workers, n: int, procs: int) -> dict[str, float]:
    """a, b and d: schedule, drain, memory, on the single node."""
    side.flush()
    r = next(iter(side.nodes.values()))
    out: dict[str, float] = {}
    q = Queue("cap", url=side.url)
    q.schedule_many([defer(noop) for _ in range(2)])  # warm-up: scripts, group, connection
    m0, c0 = int(r.info("memory")["used_memory"]), server_cpu(r)
    t0 = time.perf_counter()
    schedule_all(side.url, ["cap"], n)
    t1 = time.perf_counter()
    m1, c1 = int(r.info("memory")["used_memory"]), server_cpu(r)
    out["schedule_many_us"] = (c1 - c0) / n * 1e6
    out["enqueue_per_s"] = n / (t1 - t0)
    out["mem_queued_b"] = (m1 - m0) / n
    d = drain(side, w, [["cap"]], n, procs)
    out["drain_us"] = d["n0_us_per_task"]
    out["drain_per_s"] = d["rate"]
    out["drain_share"] = d["n0_share"]
    m2 = int(r.info("memory")["used_memory"])
    out["mem_finished_b"] = (m2 - m0) / n
    # one schedule() call per task
    q1 = Queue("cap-one", url=side.url)
    q1.schedule(defer(noop))
    k = 500
    c2 = server_cpu(r)
    t2 = time.perf_counter()
    for _ in range(k):
        q1.schedule(defer(noop))
    t3 = time.perf_counter()
    out["schedule_one_us"] = (server_cpu(r) - c2) / k * 1e6
    out["schedule_one_per_s"] = k / (t3 - t2)
    # DAG nodes: chains of 4 combine() nodes (1 ready, 3 waiting on their input)
    chains = max(1, n // 4)
    qd = Queue("cap-dag", url=side.url)
    qd.schedule(defer(noop))
    m3 = int(r.info("memory")["used_memory"])
    trees = []
    for i in range(chains):
        t = defer(combine, i)
        for _ in range(3):
            t = defer(combine, i, t)
        trees.append(t)
    for s in range(0, chains, 500):
        qd.schedule_many(trees[s:s + 500])
    m4 = int(r.info("memory")["used_memory"])
    out["mem_dag_node_b"] = (m4 - m3) / (chains * 4)
    out["sched_drain_us"] = out["schedule_many_us"] + out["drain_us"]
    return out


def many_queues(side: Side, w: Workers, groups: list[list[str]], n: int, procs: int) -> dict[str, Any]:
    side.flush()
    queues = [q for g in groups for q in g]
    for name in queues:  # warm-ups: 2 per queue
        Queue(name, url=side.url).schedule_many([defer(noop) for _ in range(2)])
    schedule_all(side.url, queues, n)
    return drain(side, w, groups, n, procs)


def snapshot(side: Side) -> dict[str, dict[str, Any]]:
    return {name: c.info("all") for name, c in side.nodes.items()}


def idle_window(side: Side, seconds: float) -> dict[str, dict[str, float]]:
    """Per node over ``seconds``: commands/s (less this function's own INFO calls), new connections/s,
    connected clients (median of samples), blocked clients (median, max), commandstats calls/s."""
    s0 = snapshot(side)
    c0 = side.cpu()
    t0 = time.monotonic()
    samples: dict[str, list[tuple[int, int]]] = {n: [] for n in side.nodes}
    polls = 0
    while time.monotonic() - t0 < seconds:
        for name, c in side.nodes.items():
            info = c.info("clients")
            samples[name].append((int(info["connected_clients"]), int(info["blocked_clients"])))
        polls += 1
        time.sleep(0.25)
    c1 = side.cpu()
    s1 = snapshot(side)
    wall = time.monotonic() - t0
    out: dict[str, dict[str, float]] = {}
    for name in side.nodes:
        a, b = s0[name], s1[name]
        own = polls + 1  # the INFO clients samples and the first INFO all
        stats = {"cmds_per_s": (b["total_commands_processed"] - a["total_commands_processed"] - own) / wall,
                 "conns_per_s": (b["total_connections_received"] - a["total_connections_received"]) / wall,
                 "cpu_us_per_s": (c1[name] - c0[name]) / wall * 1e6,
                 "clients": med([x[0] for x in samples[name]]),
                 "blocked": med([x[1] for x in samples[name]]),
                 "blocked_max": max(x[1] for x in samples[name])}
        for key, v in b.items():
            if key.startswith("cmdstat_"):
                before = a.get(key, {}).get("calls", 0)
                calls = v["calls"] - before
                if key == "cmdstat_info":
                    calls -= own
                if calls:
                    stats[key.removeprefix("cmdstat_")] = calls / wall
        out[name] = stats
    return out


def client_names(side: Side) -> dict[str, list[str]]:
    out = {}
    for name, c in side.nodes.items():
        out[name] = sorted(str(e.get("name", "")) for e in c.client_list())
    return out


def idle_worker(side: Side, w: Workers, queues: Sequence[str], procs: int, seconds: float) -> dict[str, Any]:
    """e: baseline window, start the worker, wait until it has run a task on each queue and its
    connection count is steady, then the same window; the worker's share is the difference."""
    side.flush()
    for q in queues:
        Queue(q, url=side.url)  # nothing queued: the worker only idles
    base = idle_window(side, seconds / 2)
    proc = w.start(side.url, queues, procs)
    try:
        for q in queues:  # one task per queue: every child is up and has read every stream
            Queue(q, url=side.url).schedule(defer(noop))
        wait_for(lambda: w.check() and side.finished(queues) >= len(queues), 120, "the idle worker's tasks")
        last: list[int] = []

        def steady() -> bool:
            now = sum(int(c.info("clients")["connected_clients"]) for c in side.nodes.values())
            last.append(now)
            return len(last) >= 8 and max(last[-8:]) - min(last[-8:]) <= max(2, now // 20)
        wait_for(steady, 60, "a steady connection count", 0.25)
        time.sleep(1.0)
        busy = idle_window(side, seconds)
        names = client_names(side)
    finally:
        w.stop(proc)
    out: dict[str, Any] = {}
    for node in side.nodes:
        b, i = base[node], busy[node]
        out[node] = {"conns": i["clients"] - b["clients"], "blocked": i["blocked"] - b["blocked"],
                     "blocked_max": i["blocked_max"] - b["blocked_max"],
                     "cmds_per_s": i["cmds_per_s"] - b["cmds_per_s"],
                     "conns_per_s": i["conns_per_s"] - b["conns_per_s"],
                     "cpu_us_per_s": i["cpu_us_per_s"] - b["cpu_us_per_s"],
                     "named": sum(1 for x in names[node] if x),
                     "by_cmd": {k: round(v - b.get(k, 0.0), 2) for k, v in i.items()
                                if k not in ("cmds_per_s", "conns_per_s", "clients", "blocked", "blocked_max",
                                             "cpu_us_per_s")
                                and v - b.get(k, 0.0) > 0.05}}
    out["total"] = {k: sum(out[x][k] for x in side.nodes)
                    for k in ("conns", "blocked", "cmds_per_s", "conns_per_s", "cpu_us_per_s")}
    return out


def wakeups(side: Side, w: Workers, queues: Sequence[str], procs: int, rounds: int) -> dict[str, Any]:
    """f (opt-in, --wakeups R): an idle worker serving all the queues; R times, one no-op on every queue
    at once, then wait for all. Per task: claim start (t0) minus creation (ct), and its attempt count; a
    task whose entry was delivered to a read nobody took waits for the sweep (idle >= the lease)."""
    side.flush()
    qs = {n: Queue(n, url=side.url) for n in queues}
    proc = w.start(side.url, queues, procs)
    try:
        for n in queues:
            qs[n].wait(qs[n].schedule(defer(noop)), timeout=120)
        delays: list[tuple[str, float, str]] = []
        for i in range(rounds):
            refs = [(n, qs[n].schedule(defer(noop))) for n in queues]
            for n, ref in refs:
                task = qs[n].wait(ref, timeout=120)
                if task.state != "done":
                    raise RuntimeError(f"wake-up task {task.id} ended {task.state}")
                ct, t0, attempts = side.r.hmget(QueueKeys(n).task(task.id), "ct", "t0", "n")
                delays.append((n, float(t0) - float(ct), (attempts or b"").decode()))
            time.sleep(0.05 + (i % 7) * 0.07)  # vary the phase against the children's 500 ms reads
    finally:
        w.stop(proc)
    late = [d for d in delays if d[1] > 1.0]
    ds = sorted(d[1] for d in delays)
    return {"tasks": len(ds), "p50_s": ds[len(ds) // 2], "max_s": ds[-1], "late_over_1s": len(late),
            "late": [(n, round(x, 2), a) for n, x, a in late]}


# --------------------------------------------------------------------------------------------- main


def idle_cpu(side: Side, seconds: float = 2.0) -> dict[str, float]:
    """Each node's CPU while nothing is connected but us (cluster bus, replication): µs per second."""
    a = side.cpu()
    time.sleep(seconds)
    b = side.cpu()
    return {n: (b[n] - a[n]) / seconds * 1e6 for n in side.nodes}


def fmt_rows(rows: list[tuple[str, list[float], str]]) -> list[str]:
    lines = ["| figure | median | min .. max | n |", "|---|---:|---:|---:|"]
    for label, xs, fmt in rows:
        lines.append(f"| {label} | {fmt.format(med(xs))} | {fmt.format(min(xs))} .. {fmt.format(max(xs))} "
                     f"| {len(xs)} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=5000, help="no-ops per measurement (a, b, c, d)")
    ap.add_argument("--procs", type=int, default=2, help="children of the single-queue worker (a, b)")
    ap.add_argument("--queues", type=int, default=6, help="queues of c and e (a multiple of 3)")
    ap.add_argument("--group-procs", type=int, default=1, help="children of each queue group's worker (c)")
    ap.add_argument("--idle-procs", type=int, default=8)
    ap.add_argument("--idle-seconds", type=float, default=5.0)
    ap.add_argument("--min-idle", type=float, default=1.2, help="wait for this many idle cores before a rep")
    ap.add_argument("--wakeups", type=int, default=0, help="f: rounds of one task on every queue at once onto "
                    "an idle multi-queue worker (--wakeup-procs), single node then cluster (0 = skip)")
    ap.add_argument("--wakeup-procs", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: single,many,idle")
    ap.add_argument("--json", help="also write every figure to this file")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    tmp = Path(tempfile.mkdtemp(prefix="fq-capacity-"))
    server = ServerProcess(tmp / "single", bind="127.0.0.1", extra=["--appendonly", "no"])
    cluster = LocalCluster(tmp / "cluster")
    replica: ServerProcess | None = None
    extra_procs: list[ServerProcess] = []
    sides: list[Side] = []
    result: dict[str, Any] = {"args": vars(args)}
    try:
        server.start(timeout=20)
        primary2 = ServerProcess(tmp / "primary2", bind="127.0.0.1", extra=["--appendonly", "no"])
        extra_procs.append(primary2)  # stopped in the finally from now on
        primary2.start(timeout=20)
        replica = ServerProcess(tmp / "replica2", bind="127.0.0.1",
                                extra=["--appendonly", "no", "--replicaof", "127.0.0.1", str(primary2.port)])
        replica.start(timeout=20)
        r2 = redis.Redis.from_url(replica.url, decode_responses=True)
        wait_for(lambda: r2.info("replication").get("master_link_status") == "up", 30, "the replica's link")
        r2.close()
        cluster.start()
        for node in cluster.nodes:
            node.client().config_set("appendonly", "no")
        single = Side("single", server.url, {"n0": redis.Redis.from_url(server.url, socket_timeout=30)})
        clus = cluster_side(cluster)
        repl = Side("single+replica", primary2.url, {"n0": redis.Redis.from_url(primary2.url, socket_timeout=30)})
        sides += [single, clus, repl]
        ctx = context(single.nodes["n0"])
        ctx["cluster"] = f"LocalCluster: 3 primaries + 3 replicas, ports {[n.port for n in cluster.nodes]}, " \
                         "appendonly no (CONFIG SET)"
        print_context(ctx)
        result["context"] = ctx
        result["idle_cpu_us_per_s"] = {"single": idle_cpu(single), "cluster": idle_cpu(clus),
                                       "single+replica": idle_cpu(repl)}
        single.idle, clus.idle = result["idle_cpu_us_per_s"]["single"], result["idle_cpu_us_per_s"]["cluster"]
        repl.idle = result["idle_cpu_us_per_s"]["single+replica"]
        print(f"# idle server CPU, µs/s per node: {result['idle_cpu_us_per_s']}", flush=True)
        groups = cluster_queues(cluster, args.queues, "capq")
        flat = [q for g in groups for q in g]
        result["groups"] = groups
        result["group_slots"] = [[key_slot(q.encode()) for q in g] for g in groups]
        print(f"# queue groups (one per primary): {groups}, slots {result['group_slots']}", flush=True)
        reps: dict[str, list[Any]] = {"single": [], "many_single": [], "many_cluster": [], "many_replica": []}
        with workers(tmp) as w:
            for i in range(args.reps):
                idle = wait_quiet(args.min_idle, 60)
                if "single" not in skip:
                    got = single_node(single, w, args.tasks, args.procs)
                    got["idle_cores_before"] = idle
                    reps["single"].append(got)
                    print(f"rep {i + 1} single: " + json.dumps({k: round(v, 3) for k, v in got.items()}), flush=True)
                if "many" not in skip:
                    order = [("many_single", single), ("many_cluster", clus), ("many_replica", repl)]
                    for key, side in order[i % 3:] + order[:i % 3]:  # rotated: each side in each place
                        got = many_queues(side, w, groups, args.tasks, args.group_procs)
                        reps[key].append(got)
                        print(f"rep {i + 1} {key}: " + json.dumps({k: round(v, 3) for k, v in got.items()}),
                              flush=True)
            idle_reps: dict[str, list[Any]] = {}
            if "idle" not in skip:
                for i in range(max(1, args.reps - 1)):
                    for label, side, qs in (("single 1 queue", single, flat[:1]),
                                            (f"single {len(flat)} queues", single, flat),
                                            ("cluster 1 queue", clus, flat[:1]),
                                            (f"cluster {len(flat)} queues", clus, flat)):
                        got = idle_worker(side, w, qs, args.idle_procs, args.idle_seconds)
                        idle_reps.setdefault(label, []).append(got)
                        print(f"rep {i + 1} idle {label}: {json.dumps(got)}", flush=True)
            if args.wakeups:
                result["wakeups"] = {}
                for label, side in (("single", single), ("cluster", clus)):
                    got = wakeups(side, w, flat, args.wakeup_procs, args.wakeups)
                    result["wakeups"][label] = got
                    print(f"f, {len(flat)} queues, {args.wakeups} rounds, --procs {args.wakeup_procs}, {label}: "
                          f"claim - creation p50 {got['p50_s'] * 1e3:.0f} ms, max {got['max_s']:.2f} s, "
                          f"{got['late_over_1s']} of {got['tasks']} tasks later than 1 s: {got['late']}", flush=True)
            result["incidents"] = w.incidents()
            print(f"# worker logs: {result['incidents']}", flush=True)
        result["reps"] = reps
        result["idle"] = idle_reps
        ctx["load after"] = context()["load"]
        print(f"# load after: {ctx['load after']}")
        report(result, args)
    finally:
        for s in sides:
            s.close()
        with contextlib.suppress(Exception):
            cluster.stop()
        for sp in [server, *extra_procs, *([replica] if replica is not None else [])]:
            with contextlib.suppress(Exception):
                sp.stop(timeout=5)
            with contextlib.suppress(Exception):
                sp.kill()
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1, default=str)
        shutil.rmtree(tmp, ignore_errors=True)


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    reps = result["reps"]
    n = args.tasks
    if reps["single"]:
        s = reps["single"]

        def col(k: str) -> list[float]:
            return [r[k] for r in s]
        print(f"\n## a, b, d: one node, {n:,} no-ops, drain by `forrestq worker --procs {args.procs}`")
        for line in fmt_rows([
            ("server CPU per task: schedule_many (chunks of 2,000)", col("schedule_many_us"), "{:.0f} µs"),
            ("server CPU per task: drain (claim + complete)", col("drain_us"), "{:.0f} µs"),
            ("server CPU per task: schedule_many + drain", col("sched_drain_us"), "{:.0f} µs"),
            ("server CPU per schedule() call (500 single calls)", col("schedule_one_us"), "{:.0f} µs"),
            ("enqueue rate, schedule_many", col("enqueue_per_s"), "{:,.0f}/s"),
            ("enqueue rate, single schedule() calls", col("schedule_one_per_s"), "{:,.0f}/s"),
            ("drain rate", col("drain_per_s"), "{:,.0f}/s"),
            ("server CPU share during the drain (1.0 = one core)", col("drain_share"), "{:.2f}"),
            ("ceiling, drain only: 1e6 / drain µs (extrapolated)", [1e6 / x for x in col("drain_us")], "{:,.0f}/s"),
            ("ceiling, schedule_many + drain: 1e6 / (sum) (extrapolated)",
             [1e6 / x for x in col("sched_drain_us")], "{:,.0f}/s"),
            ("used_memory per queued no-op", col("mem_queued_b"), "{:,.0f} B"),
            ("used_memory per queued DAG node (chains of 4)", col("mem_dag_node_b"), "{:,.0f} B"),
            ("used_memory per finished no-op (record kept)", col("mem_finished_b"), "{:,.0f} B"),
        ]):
            print(line)
    if reps["many_single"] and reps["many_cluster"]:
        ms, mc = reps["many_single"], reps["many_cluster"]
        print(f"\n## c: {args.queues} queues, {len(result['groups'])} workers x --procs {args.group_procs} "
              f"(one per queue group), {n:,} no-ops")
        rows = [("single node: aggregate drain rate", [r["rate"] for r in ms], "{:,.0f}/s"),
                ("single node: server CPU per task", [r["n0_us_per_task"] for r in ms], "{:.0f} µs"),
                ("single node: server CPU share", [r["n0_share"] for r in ms], "{:.2f}")]
        if reps["many_replica"]:
            mr = reps["many_replica"]
            rows += [("single node + 1 replica: aggregate drain rate", [r["rate"] for r in mr], "{:,.0f}/s"),
                     ("single node + 1 replica: primary's server CPU per task", [r["n0_us_per_task"] for r in mr],
                      "{:.0f} µs"),
                     ("single node + 1 replica: primary's CPU share", [r["n0_share"] for r in mr], "{:.2f}")]
        rows += [
                ("cluster: aggregate drain rate", [r["rate"] for r in mc], "{:,.0f}/s")]
        for p in ("p0", "p1", "p2"):
            rows += [(f"cluster {p}: server CPU per task it served", [r[f"{p}_us_per_task"] for r in mc], "{:.0f} µs"),
                     (f"cluster {p}:   less its idle CPU (bus, replication)", [r[f"{p}_net_us_per_task"] for r in mc],
                      "{:.0f} µs"),
                     (f"cluster {p}: CPU share", [r[f"{p}_share"] for r in mc], "{:.2f}"),
                     (f"cluster {p}: tasks served", [r[f"{p}_tasks"] for r in mc], "{:,.0f}")]
        rows += [("cluster / single: aggregate rate (paired by rep)",
                  [c["rate"] / s_["rate"] for c, s_ in zip(mc, ms)], "{:.2f}"),
                 ("cluster / single: server CPU per task, mean of the primaries",
                  [statistics.mean(c[f"{p}_us_per_task"] for p in ("p0", "p1", "p2")) / s_["n0_us_per_task"]
                   for c, s_ in zip(mc, ms)], "{:.2f}"),
                 ("cluster / single: ceiling 3 nodes x 1e6/µs vs 1e6/µs",
                  [sum(1e6 / c[f"{p}_us_per_task"] for p in ("p0", "p1", "p2")) / (1e6 / s_["n0_us_per_task"])
                   for c, s_ in zip(mc, ms)], "{:.2f}")]
        if reps["many_replica"]:
            rows += [("cluster / single+replica: server CPU per task, mean of the primaries",
                      [statistics.mean(c[f"{p}_us_per_task"] for p in ("p0", "p1", "p2")) / s_["n0_us_per_task"]
                       for c, s_ in zip(mc, reps["many_replica"])], "{:.2f}"),
                     ("single+replica / single: server CPU per task",
                      [a["n0_us_per_task"] / b["n0_us_per_task"] for a, b in zip(reps["many_replica"], ms)], "{:.2f}")]
        for line in fmt_rows(rows):
            print(line)
    if result["idle"]:
        print(f"\n## e: one idle `forrestq worker --procs {args.idle_procs}` (medians over "
              f"{len(next(iter(result['idle'].values())))} rounds, worker minus baseline, {args.idle_seconds:g} s)")
        print("| set-up | node | connections | blocked clients (median, max) | commands/s | new connections/s "
              "| server CPU |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for label, rs in result["idle"].items():
            for node in [k for k in rs[0] if k != "total"]:
                def m(key: str, node: str = node, rs: list[Any] = rs) -> float:
                    return med([r[node][key] for r in rs])
                print(f"| {label} | {node} | {m('conns'):.0f} | {m('blocked'):.0f}, {m('blocked_max'):.0f} | "
                      f"{m('cmds_per_s'):.1f} | {m('conns_per_s'):.1f} | {m('cpu_us_per_s') / 1e4:.2f} % |")
            tot = {k: med([r["total"][k] for r in rs])
                   for k in ("conns", "blocked", "cmds_per_s", "conns_per_s", "cpu_us_per_s")}
            print(f"| {label} | all | {tot['conns']:.0f} | {tot['blocked']:.0f} | {tot['cmds_per_s']:.1f} | "
                  f"{tot['conns_per_s']:.1f} | {tot['cpu_us_per_s'] / 1e4:.2f} % |")
        for label, rs in result["idle"].items():
            print(f"# {label}, commands/s by command (last round): "
                  + "; ".join(f"{node}: {rs[-1][node]['by_cmd']}" for node in rs[-1] if node != "total"))


if __name__ == "__main__":
    main()
