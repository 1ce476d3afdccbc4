"""Workers as SLURM batch jobs (issue 21): ``forrestq launch slurm``.

Each job runs one ``forrestq worker`` (``--procs`` children) through a job script forrestq writes;
:mod:`forrestq.slurm_adapt` keeps their number in step with the queue. This module writes the
script, submits it (``sbatch``), lists the jobs (``squeue``), cancels them (``scancel``) and joins
each job with the worker that runs in it.

How the URL and the secret travel: never on a command line (``ps`` shows those to every user) and
never through SLURM. Both sit in a file only the user can read, ``DIR/env`` (mode 0600, in a
directory of mode 0700; the secret itself, from ``$FORRESTQ_SECRET``, in ``DIR/secret``, 0600, named
by ``$FORRESTQ_SECRET_FILE``); the job script (0600, no secret in it) reads that file when the job
starts. So the secret is not in the script, which slurmctld keeps in its state directory, nor in the
job's submitted environment (``sbatch`` is run with ``FORRESTQ_URL``/``FORRESTQ_SECRET`` removed from
the environment it exports), which slurmctld keeps too and an accounting database may store
(``AccountingStoreFlags=job_env``). The cost: ``DIR`` must be on a file system the compute nodes see
(the default, under the home directory, is on every cluster).

A job knows its worker by ``$FORRESTQ_JOB`` (``slurm:<job id>``), which the worker publishes in its
hash (``schema.WORKER_JOB``). SLURM's time limit: the job asks for ``SIGTERM`` to its batch shell
(which ``exec``\\s the worker) ``grace + 60`` seconds before the wall time (``--signal=B:TERM@S``), so
the worker lets its tasks finish for ``--grace`` seconds and hands the others back before SLURM kills it.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from . import schema
from .errors import ConfigError, SlurmError
from .server import write_private
from .status import list_tasks, worker_status
from .worker.remote import request_stop

__all__ = ["JOB_PREFIX", "SIGNAL_MARGIN", "LaunchSpec", "Job", "job_script", "sbatch_command", "write_files",
           "submit", "jobs", "cancel_pending", "signal_batch", "workers_of", "job_name", "job_status", "stop_jobs"]

JOB_PREFIX = "slurm:"  # $FORRESTQ_JOB of a SLURM job's worker: slurm:<job id>
SIGNAL_MARGIN = 60  # seconds between the end of the worker's grace and SLURM's time limit
COMMAND_TIMEOUT = 60.0  # seconds sbatch, squeue or scancel may take (a busy slurmctld is slow)
_HIDDEN = ("FORRESTQ_URL", "FORRESTQ_SECRET", "FORRESTQ_SECRET_FILE")  # never exported through SLURM
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "REQUEUED", "RESIZING")


def job_name(queue: str) -> str:
    """The SLURM job name of a queue's workers (what status, stop and the controller look for)."""
    return f"forrestq-{queue}"


@dataclass
class LaunchSpec:
    """What every job of one ``forrestq launch slurm`` asks for."""

    queue: str
    url: str
    procs: int = 8
    time: str | None = None  # sbatch --time (e.g. 4:00:00)
    mem: str | None = None  # sbatch --mem (e.g. 32G)
    cpus: int | None = None  # sbatch --cpus-per-task (default: procs)
    partition: str | None = None
    account: str | None = None
    extra_sbatch: list[str] = field(default_factory=list)  # more sbatch options, on its command line
    grace: float = 30.0  # the worker's --grace
    idle_exit: float = 0.0  # the worker's --idle-exit (0: it stays)
    worker_args: list[str] = field(default_factory=list)  # more `forrestq worker` options
    name: str = ""  # the job name (default: forrestq-QUEUE)
    directory: Path | None = None  # where the script, the env file and the logs go
    python: str = sys.executable  # the interpreter the jobs run forrestq with (this one)
    workdir: str = field(default_factory=os.getcwd)  # the jobs' working directory (task modules import from it)

    def __post_init__(self) -> None:
        self.name = self.name or job_name(self.queue)
        if self.procs < 1:
            raise ConfigError(f"--procs must be at least 1, not {self.procs}")
        if self.cpus is not None and self.cpus < 1:
            raise ConfigError(f"--cpus must be at least 1, not {self.cpus}")
        if self.grace < 0 or self.idle_exit < 0:
            raise ConfigError("--grace and --idle-exit must be 0 or more seconds")

    @property
    def dir(self) -> Path:
        if self.directory is None:
            raise ConfigError("no directory for the job files")
        return self.directory

    def signal_before(self) -> int:
        """Seconds before the wall time SLURM sends SIGTERM to the worker."""
        return int(self.grace) + SIGNAL_MARGIN


def _sbatch_lines(spec: LaunchSpec) -> list[str]:
    opts = [f"--job-name={spec.name}", f"--cpus-per-task={spec.cpus or spec.procs}", "--nodes=1", "--ntasks=1",
            f"--signal=B:TERM@{spec.signal_before()}", f"--output={spec.dir / (spec.name + '-%j.log')}",
            f"--chdir={spec.workdir}"]
    for flag, value in (("time", spec.time), ("mem", spec.mem), ("partition", spec.partition),
                        ("account", spec.account)):
        if value:
            opts.append(f"--{flag}={value}")
    return [f"#SBATCH {o}" for o in opts]


def worker_command(spec: LaunchSpec) -> list[str]:
    """The command a job runs (no secret in it: the URL comes from $FORRESTQ_URL)."""
    cmd = [spec.python, "-m", "forrestq", "worker", "--procs", str(spec.procs), "--queue", spec.queue,
           "--grace", f"{spec.grace:g}"]
    if spec.idle_exit:
        cmd += ["--idle-exit", f"{spec.idle_exit:g}"]
    return cmd + list(spec.worker_args)


def job_script(spec: LaunchSpec) -> str:
    """The batch script of every job (shown by ``--dry-run``)."""
    q = shlex.quote
    lines = ["#!/bin/bash", *_sbatch_lines(spec),
             "# written by `forrestq launch slurm`: one forrestq worker per job.",
             "# The Redis URL and the secret are read from a file only you can read: never on a command line.",
             "set -euo pipefail", "set -a", f". {q(str(spec.dir / 'env'))}", "set +a",
             'export FORRESTQ_JOB="slurm:$SLURM_JOB_ID"  # the worker publishes it: status and the controller'
             ' find it']
    if os.environ.get("PYTHONPATH"):
        lines.append(f"export PYTHONPATH={q(os.environ['PYTHONPATH'])}")
    lines.append("exec " + " ".join(q(a) for a in worker_command(spec)) + "  # exec: SLURM's signal reaches it")
    return "\n".join(lines) + "\n"


def env_file(spec: LaunchSpec) -> str:
    """What ``DIR/env`` holds: the URL, and where the secret is (``DIR/secret`` or the user's file)."""
    lines = [f"FORRESTQ_URL={shlex.quote(spec.url)}"]
    if os.environ.get("FORRESTQ_SECRET"):
        lines.append(f"FORRESTQ_SECRET_FILE={shlex.quote(str(spec.dir / 'secret'))}")
    elif os.environ.get("FORRESTQ_SECRET_FILE"):
        lines.append(f"FORRESTQ_SECRET_FILE={shlex.quote(os.path.abspath(os.environ['FORRESTQ_SECRET_FILE']))}")
    return "\n".join(lines) + "\n"


def write_files(spec: LaunchSpec) -> Path:
    """Write the job files into ``spec.dir`` (mode 0700): ``job.sh``, ``env`` and, with
    ``$FORRESTQ_SECRET``, ``secret`` (each 0600). Returns the script's path."""
    spec.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(spec.dir, 0o700)
    secret = os.environ.get("FORRESTQ_SECRET")
    if secret:
        write_private(spec.dir / "secret", secret.strip() + "\n")
    write_private(spec.dir / "env", env_file(spec))
    write_private(spec.dir / "job.sh", job_script(spec))
    return spec.dir / "job.sh"


def sbatch_command(spec: LaunchSpec, script: Path) -> list[str]:
    """``sbatch --parsable [--extra-sbatch ...] SCRIPT`` (options given here override the script's)."""
    return ["sbatch", "--parsable", "--export=ALL", *spec.extra_sbatch, str(script)]


def _run(cmd: list[str], what: str) -> str:
    """Run a SLURM client command; its output, or SlurmError with its first line of complaint."""
    if shutil.which(cmd[0]) is None:
        raise SlurmError(f"{cmd[0]} not found: forrestq launch slurm runs on a host with SLURM's client commands")
    env = {k: v for k, v in os.environ.items() if k not in _HIDDEN}
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{what}: {cmd[0]} did not answer within {COMMAND_TIMEOUT:g} s") from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}").splitlines()[0]
        raise SlurmError(f"{what}: {said}")
    return done.stdout


def submit(spec: LaunchSpec, count: int, script: Path | None = None) -> list[str]:
    """Submit ``count`` jobs of the spec (files written first unless ``script`` is given): their ids."""
    path = script or write_files(spec)
    return [_run(sbatch_command(spec, path), "sbatch refused the job").strip().split(";")[0]
            for _ in range(count)]


@dataclass
class Job:
    """One job as ``squeue`` shows it."""

    id: str
    state: str  # PENDING, RUNNING, COMPLETING, ...
    node: str  # where it runs ("" while pending)
    elapsed: str
    limit: str  # its time limit
    reason: str  # why it is pending ("None" once it runs)

    @property
    def active(self) -> bool:
        """Pending or running (not on its way out)."""
        return self.state in ACTIVE

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "node": self.node, "elapsed": self.elapsed,
                "limit": self.limit, "reason": self.reason}


def jobs(name: str) -> list[Job]:
    """This user's jobs named ``name``, oldest first."""
    out = _run(["squeue", "--noheader", "--me", f"--name={name}", "--format=%i|%T|%N|%M|%l|%r"],
               "cannot list the jobs")
    found = [Job(*(line.split("|", 5) + [""] * 6)[:6]) for line in out.splitlines() if line.strip()]
    return sorted(found, key=lambda j: int(j.id) if j.id.isdigit() else 0)


def cancel_pending(ids: list[str]) -> None:
    """Cancel those jobs that are still pending (never one that started meanwhile: its worker may
    have claimed a task)."""
    if ids:
        _run(["scancel", "--state=PENDING", *ids], "scancel refused")


def signal_batch(ids: list[str]) -> None:
    """SIGTERM to the batch shell of running jobs (their worker: its usual stop, grace included)."""
    if ids:
        _run(["scancel", "--signal=TERM", "--batch", *ids], "scancel refused")


def workers_of(r: redis.Redis, listed: list[Job]) -> dict[str, dict[str, Any]]:
    """Job id -> the live worker of :func:`forrestq.status.worker_status` that runs in it (with its
    ``job``), for the jobs ``listed``; a job whose worker has not started (or is gone) has none."""
    ids = {j.id for j in listed}
    live = [w for w in worker_status(r, prune=False) if w["state"] != "lost"]
    if not live or not ids:
        return {}
    pipe = r.pipeline(transaction=False)
    for w in live:
        pipe.hget(schema.worker(w["id"]), schema.WORKER_JOB)
    found: dict[str, dict[str, Any]] = {}
    for w, job in zip(live, pipe.execute()):
        text = (job or b"").decode(errors="replace")
        if text.startswith(JOB_PREFIX) and text[len(JOB_PREFIX):] in ids:
            found[text[len(JOB_PREFIX):]] = {**w, "job": text}
    return found


def job_status(r: redis.Redis, queue: str, name: str | None = None, shown: int = 200) -> list[dict[str, Any]]:
    """``forrestq launch slurm status``: each job of the queue (its SLURM state, node, times) with its
    worker (``None`` until it started: id, state, busy/procs, done, failed) and the tasks that worker
    runs (``[{"id", "function"}]``, from the first ``shown`` running tasks of the queue)."""
    listed = jobs(name or job_name(queue))
    workers = workers_of(r, listed)
    running: dict[str, list[dict[str, str]]] = {}
    if workers:
        for t in list_tasks(r, queue, schema.RUNNING, limit=shown)[0]:
            running.setdefault(t.worker, []).append({"id": t.id, "function": t.name})
    rows = []
    for j in listed:
        w = workers.get(j.id)
        worker = None if w is None else {k: w.get(k) for k in ("id", "host", "state", "busy", "procs", "done",
                                                                "failed")}
        rows.append({**j.as_json(), "worker": worker, "running": running.get(w["id"], []) if w else []})
    return rows


def stop_jobs(r: redis.Redis, queue: str, name: str | None = None) -> dict[str, list[str]]:
    """``forrestq launch slurm stop``: every job of the queue leaves without losing a task. A running
    job's worker is asked to stop after its tasks (the remote stop: its --grace, then the rest is
    handed back); a running job whose worker has not registered yet gets SIGTERM (it holds no task);
    a pending job is cancelled. Returns ``{"asked": worker ids, "signalled": job ids, "cancelled": job ids}``."""
    listed = [j for j in jobs(name or job_name(queue)) if j.active]
    workers = workers_of(r, listed)
    asked = [workers[j.id]["id"] for j in listed if j.id in workers]
    for wid in asked:
        request_stop(r, wid)
    signalled = [j.id for j in listed if j.id not in workers and j.state != "PENDING"]
    pending = [j.id for j in listed if j.state == "PENDING"]
    signal_batch(signalled)
    cancel_pending(pending)
    return {"asked": asked, "signalled": signalled, "cancelled": pending}
