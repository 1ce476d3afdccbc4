"""``python -m forrestq.worker.launch FD SPEC``: the lean entry point of a local worker.

:mod:`forrestq.local` (behind ``Queue.run``, ``map(procs=N)`` and ``Queue.workers``) starts workers
through this module instead of the ``forrestq worker`` command line: it imports neither typer nor
rich (a third of the command line's start-up time), takes its options as one JSON object ``SPEC``
(the names of :data:`forrestq.local.WORKER_OPTIONS`, plus ``url``, ``queues``, ``procs`` and the
``parent`` pid), and writes one line to the pipe ``FD``: ``ready PID...`` once the worker is
registered and its children are forked, or ``error MESSAGE`` when it cannot start. It dies with the
process that started it (SIGTERM as the parent-death signal: the usual stop, grace included).
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
from typing import Any, NoReturn

import redis

from .. import log
from ..errors import ConfigError, ForrestqError, shown
from ..local import WORKER_OPTIONS
from .procs import PR_SET_PDEATHSIG, prctl
from .supervisor import Worker, WorkerConfig

__all__ = ["parse_size", "config", "main"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_NUMBERS = {"autokill": float, "lease": float, "grace": float, "max_tasks_per_child": int,
            "async_concurrency": int, "verbose": int}


def parse_size(text: str) -> int:
    """'2G', '512M', '1.5GiB', '1000000' -> bytes."""
    m = _SIZE.match(str(text))
    if not m:
        raise ConfigError(f"bad size {text!r}: use a number with an optional unit, e.g. 2G or 512M")
    return int(float(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower()))


def config(spec: dict[str, Any]) -> WorkerConfig:
    """The WorkerConfig a spec asks for, checked as ``forrestq worker`` checks its options."""
    opts = {k: v for k, v in spec.items() if k in WORKER_OPTIONS and v is not None}
    for name, kind in _NUMBERS.items():
        if name in opts:
            try:
                if isinstance(opts[name], bool):
                    raise TypeError
                opts[name] = kind(opts[name])
            except (TypeError, ValueError):
                raise ConfigError(f"worker option {name} must be a number, not {shown(opts[name])}") from None
    for name in ("max_memory", "max_child_rss"):
        if name in opts:
            opts[name] = parse_size(opts[name])
    path = opts.pop("path", [])
    verbose = -1 if opts.pop("quiet", False) else opts.pop("verbose", 0)
    opts.pop("secret_file", None)  # the starter put it in $FORRESTQ_SECRET_FILE
    return WorkerConfig(url=spec["url"], queues=list(spec["queues"]), procs=int(spec["procs"]),
                        paths=[path] if isinstance(path, str) else list(path), verbose=verbose, **opts)


class LocalWorker(Worker):
    """A worker that says ``ready PID...`` on a pipe after its first round (registered in Redis,
    children forked), for the process that started it."""

    def __init__(self, cfg: WorkerConfig, ready_fd: int) -> None:
        super().__init__(cfg)
        self.ready_fd = ready_fd

    def fill_vacant(self) -> None:
        super().fill_vacant()
        if self.ready_fd >= 0:
            _say(self.ready_fd, "ready " + " ".join(str(p) for p in self.pids))
            self.ready_fd = -1


def _say(fd: int, line: str) -> None:
    """One line to the starter (it may have gone: then nobody listens)."""
    try:
        os.write(fd, (" ".join(line.split()) + "\n").encode(errors="replace"))
        os.close(fd)
    except OSError:
        pass


def _exit(code: int) -> NoReturn:
    """Leave without the interpreter's tear-down (module by module: tens of milliseconds, for
    nothing; the worker has stopped its children and left Redis already)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run one local worker: ``FD SPEC`` (see the module doc); exits without returning."""
    args = sys.argv[1:] if argv is None else argv
    fd, spec = int(args[0]), json.loads(args[1])
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if spec.get("parent") and os.getppid() != spec["parent"]:
        _exit(0)  # the starter died before the line above
    w: LocalWorker | None = None
    try:
        cfg = config(spec)
        log.setup(cfg.verbose)
        w = LocalWorker(cfg, fd)
        code = w.run()
    except Exception as e:  # noqa: BLE001 - before "ready", every error is the starter's to report
        if w is not None and w.ready_fd < 0:
            raise
        _say(fd, f"error {e if isinstance(e, (ForrestqError, redis.RedisError)) else f'{type(e).__name__}: {e}'}")
        _exit(2)
    _exit(code)


if __name__ == "__main__":
    main()
