"""A real single-node SLURM for the tests of ``forrestq launch slurm`` (issue 21).

:class:`SlurmCluster` writes a minimal ``slurm.conf`` (one node: this host's short name at 127.0.0.1,
its CPUs and most of its memory; cons_tres with cores shared by up to 8 jobs, so several 1-CPU worker
jobs run at once on a small VM; no accounting; proctrack/linuxproc, task/none; state and spool in a
tmp dir; free ports), a munge key, and starts ``munged``, ``slurmctld`` and ``slurmd`` as real
foreground processes of the test run, waits (bounded) until ``sinfo`` shows the node idle, and
at the end cancels every job, waits for them to leave, and stops the daemons (SIGTERM, wait, SIGKILL).

Where SLURM cannot start (not root, a package missing, a daemon that fails), :func:`start` raises
:class:`Unavailable` with the exact reason, which the fixture turns into a skip.
Packages (Debian): ``apt-get install -y slurm-wlm munge`` (``.ci/run`` installs them when root).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from helpers import free_port

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
START_TIMEOUT = 45.0  # seconds for the node to show up idle
STOP_TIMEOUT = 15.0  # seconds for jobs to leave and each daemon to exit


class Unavailable(Exception):
    """SLURM cannot run here; the message says why (the tests skip with it)."""


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024 * 9 // 10
    return 1024


class SlurmCluster:
    """munged + slurmctld + slurmd in ``root``; ``env`` is what client commands need (SLURM_CONF)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.node = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def config(self) -> str:
        r = self.root
        return "\n".join([
            "ClusterName=forrestqtest", f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={r / 'munge.socket'}",
            "SlurmUser=root", "SlurmdUser=root", f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_min_interval=200000", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
            "ReturnToService=2", "SlurmctldTimeout=30", "SlurmdTimeout=30", "InactiveLimit=0", "MinJobAge=2",
            "KillWait=5", "MessageTimeout=10",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory={_memory_mb()} "
            "State=UNKNOWN",
            f"PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8",
        ]) + "\n"

    def _daemon(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")
        self.procs.append((name, subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                  start_new_session=True)))
        log.close()

    def start(self) -> None:
        if os.geteuid() != 0:
            raise Unavailable("SLURM tests need root (slurmd runs jobs as their user; munged and slurmd as root here)")
        missing = [b for b in BINARIES if shutil.which(b) is None]
        if missing:
            raise Unavailable(f"SLURM is not installed (missing {', '.join(missing)}): "
                              "apt-get install -y slurm-wlm munge")
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # munged wants its socket's directory searchable by all
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        self.conf.write_text(self.config())
        r = self.root
        self._daemon("munged", ["munged", "--foreground", "--force", f"--socket={r / 'munge.socket'}",
                                f"--key-file={key}", f"--pid-file={r / 'munged.pid'}",
                                f"--log-file={r / 'log' / 'munged.log'}", f"--seed-file={r / 'munged.seed'}"])
        self._wait(lambda: (r / "munge.socket").exists(), 10.0, "munged's socket")
        self._daemon("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._daemon("slurmd", ["slurmd", "-D", "-N", self.node, "-f", str(self.conf)])
        self._wait(self._idle, START_TIMEOUT, f"node {self.node} idle in sinfo")

    def _idle(self) -> bool:
        done = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%T"], env=self.env, capture_output=True,
                              text=True, timeout=20)
        return done.returncode == 0 and done.stdout.strip() == "idle"

    def _wait(self, predicate: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise Unavailable(f"{name} exited with code {proc.returncode} at start: {self.log_tail(name)}")
            if predicate():  # type: ignore[operator]
                return
            time.sleep(0.2)
        raise Unavailable(f"SLURM did not start: no {what} within {timeout:g} s: {self.log_tail('slurmd')}")

    def log_tail(self, name: str) -> str:
        text = ""
        for path in (self.root / "log" / f"{name}.out", self.root / "log" / f"{name}.log"):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-3:]) or "(no output)"

    def run(self, *cmd: str, timeout: float = 30.0) -> str:
        """A client command (squeue, scancel, ...) against this cluster; its stdout."""
        done = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr.strip()}"
        return done.stdout

    def job_ids(self) -> list[str]:
        return self.run("squeue", "--noheader", "--format=%i").split()

    def cancel_all(self, timeout: float = STOP_TIMEOUT) -> None:
        """scancel every job and wait (bounded) until none is left."""
        ids = self.job_ids()
        if ids:
            subprocess.run(["scancel", *ids], env=self.env, capture_output=True, timeout=30)
        deadline = time.monotonic() + timeout
        while self.job_ids() and time.monotonic() < deadline:
            time.sleep(0.2)

    def stop(self) -> None:
        if any(name == "slurmctld" and proc.poll() is None for name, proc in self.procs):  # else none to ask
            with contextlib.suppress(Exception):
                self.cancel_all()
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
        self.procs.clear()
