"""The commands that run something in the foreground: ``forrestq worker`` and ``forrestq server``."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer

from .. import durability
from ..connection import describe, mask, resolve_url
from ..errors import ConfigError
from ..log import get as get_logger
from ..log import setup as setup_logging
from ..signing import check as payloads_signed
from ..signing import fingerprint
from ..signing import use_environment as use_secret_from_environment
from ..worker import Worker, WorkerConfig
from ..worker.launch import parse_size
from .common import URL, VERBOSE, queue_names, set_verbose

__all__ = ["parse_size", "server", "worker"]

_log = get_logger("worker")

_SERVED = typer.Option(["default"], "--queue", "-q", metavar="NAME", callback=queue_names,
                       help="Queue to serve (repeatable; first has priority).")
_PATHS = typer.Option(None, "--path", metavar="DIR",
                      help="Directory to import task modules from, before the working directory (repeatable).")
_PASSWORD_FILE = typer.Option(None, "--password-file", metavar="FILE", help="File holding the password (first line).")
_DATA = typer.Option(None, "--data", metavar="DIR", help="Data directory (default: DATA_DIR/server-PORT).")

# ------------------------------------------------------------------------------------------- worker


def _check_worker_options(autokill: float, grace: float, max_tasks_per_child: int) -> None:
    if autokill < 0:
        raise ConfigError(f"--autokill must be 0 (never) or a positive number of seconds, not {autokill:g}")
    if grace < 0:
        raise ConfigError(f"--grace must be 0 or more seconds, not {grace:g}")
    if max_tasks_per_child < 0:
        raise ConfigError(f"--max-tasks-per-child must be 0 (never) or more, not {max_tasks_per_child}")


def _use_secret_file(secret_file: str) -> None:
    os.environ.pop("FORRESTQ_SECRET", None)
    os.environ["FORRESTQ_SECRET_FILE"] = secret_file  # children inherit it
    use_secret_from_environment()
    try:
        payloads_signed()  # name the option the user gave, not the variable it is passed on in
    except ConfigError as e:
        raise ConfigError(str(e).replace(f"$FORRESTQ_SECRET_FILE={secret_file!r}", f"--secret-file {secret_file}")
                          .replace("($FORRESTQ_SECRET_FILE)", "(--secret-file)")) from None


def worker(
    procs: int = typer.Option(os.cpu_count() or 1, "--procs", "-p", metavar="N", help="Child processes running tasks."),
    queue: list[str] = _SERVED,
    url: str | None = URL,
    autokill: float = typer.Option(0, metavar="SECONDS",
                                   help="Kill a task's process group after this many seconds (0 = never)."),
    soft_timeout: float = typer.Option(0, metavar="SECONDS", help="Raise TimeLimitExceeded in a task after this "
                                       "many seconds, unless it set its own (0 = never)."),
    max_memory: str | None = typer.Option(None, metavar="SIZE", help="Address-space limit per child, and "
                                          "resident memory of a task's processes together, e.g. 2G."),
    lease: float = typer.Option(30, metavar="SECONDS", help="Seconds a claim lives without a heartbeat."),
    grace: float = typer.Option(30, metavar="SECONDS", help="On SIGTERM/SIGINT, seconds running tasks may finish."),
    max_tasks_per_child: int = typer.Option(0, metavar="N", help="Replace a child after this many tasks (0 = never)."),
    idle_exit: float = typer.Option(0, metavar="SECONDS", help="Exit after this long without a task (0 = never)."),
    max_child_rss: str | None = typer.Option(None, metavar="SIZE",
                                             help="Replace a child that grew past this RSS, e.g. 1G."),
    logfile: str | None = typer.Option(None, metavar="FILE",
                                       help="Append every task's output here, tagged with its id."),
    async_concurrency: int = typer.Option(1, metavar="N", help="Coroutine (IO-bound) tasks one child runs at once."),
    resources: str | None = typer.Option(None, metavar="NAME=AMOUNT,...", help="What this worker has, e.g. "
                                         "mem=32G,gpu=2 (default: mem = the machine's, cpus = --procs, others 0); "
                                         "it starts a task only while what is free covers the task's request."),
    admit_by_memory: bool = typer.Option(False, "--admit-by-memory", help="Start no task without a declared mem "
                                         "while the host's available memory is below its function's recent p95 peak."),
    secret_file: str | None = typer.Option(None, metavar="FILE", help="File holding the secret that signs payloads "
                                              "(as $FORRESTQ_SECRET_FILE)."),
    path: list[str] | None = _PATHS,
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More output."),
    quiet: bool = typer.Option(False, "--quiet", help="Log nothing per task."),
) -> None:
    """Run tasks of the queues (--queue; default: [bold]default[/bold]) in N child processes until SIGTERM/SIGINT.

    Prints one startup line (host, pid, procs, the queues it serves, server, whether payloads are
    signed and the fingerprint of the secret, to compare hosts) and one line per finished task.
    Task modules are imported from the directories of [bold]--path[/bold], then the working directory.

    Example: [bold]forrestq worker --procs 8 --queue fits --autokill 600 --max-memory 4G[/bold]
    """
    set_verbose(verbose)
    level = -1 if quiet else verbose
    setup_logging(level)
    _check_worker_options(autokill, grace, max_tasks_per_child)
    if secret_file is not None:
        _use_secret_file(secret_file)
    cfg = WorkerConfig(url=url, queues=list(queue), procs=procs, lease=lease, autokill=autokill,
                       soft_timeout=soft_timeout,
                       max_memory=parse_size(max_memory) if max_memory else 0, grace=grace,
                       max_tasks_per_child=max_tasks_per_child,
                       max_child_rss=parse_size(max_child_rss) if max_child_rss else 0,
                       logfile=logfile, verbose=level, async_concurrency=async_concurrency, idle_exit=idle_exit,
                       paths=list(path or []), resources=resources, admit_by_memory=admit_by_memory)
    w = Worker(cfg)
    if _log.isEnabledFor(logging.INFO):  # not with --quiet
        signed = f"signed (secret fingerprint {fingerprint()})" if payloads_signed() else "unsigned"
        durable = " (a task's end waits for a replica)" if durability.replicas() else ""
        _log.info("forrestq worker %s: host %s, pid %d, %d procs, queues %s, server %s%s, payloads %s, resources %s",
                  w.id, cfg.host, os.getpid(), cfg.procs, ", ".join(cfg.queues), describe(resolve_url(url)), durable,
                  signed,
                  w.capacity.text + (", admit by memory" if cfg.admit_by_memory else ""))
    raise typer.Exit(w.run())


# ------------------------------------------------------------------------------------------- server


def _connected_warning(info: dict[str, Any] | None) -> str:
    """One line warning that live workers are connected to the server about to stop ("" if none)."""
    workers = (info or {}).get("workers") or []
    if not workers:
        return ""
    shown = ", ".join(f"{w['host']} (pid {w['pid']})" for w in workers[:3]) + (" ..." if len(workers) > 3 else "")
    return (f"forrestq: warning: {len(workers)} live worker(s) still connected: {shown}; they keep retrying "
            "until a server is back")


def _stop(as_json: bool) -> None:
    from ..server import data_dir, local_server_info, stop_local_server

    before = local_server_info()
    warning = _connected_warning(before) if before and before.get("running") else ""
    if warning:
        print(warning, file=sys.stderr, flush=True)
    stopped = stop_local_server()
    workers = len((before or {}).get("workers") or []) if warning else 0
    if as_json:
        from .render import print_json  # rich: not imported by a worker
        print_json({"stopped": stopped, "data_dir": str(data_dir()), "workers_connected": workers})
    else:
        print("stopped the local server" if stopped else f"no local server was running (data in {data_dir()})")


def _info(as_json: bool) -> None:
    from ..server import data_dir, local_server_info

    record: dict[str, Any] | None = local_server_info()
    if record is not None:
        record = {**record, "url": mask(record["url"])}
    if as_json:
        from .render import print_json
        print_json(record or {"running": False, "state": "never started", "data_dir": str(data_dir())})
    elif record is None:
        print(f"no local server was started yet; it will keep its data in {data_dir()}")
    else:
        state = record.get("state") or ("running" if record["running"] else "not running")
        where = f", pid {record['pid']}, url {record['url']}" if record["running"] else f" (last pid {record['pid']})"
        print(f"local server: {state}{where}\n{record.get('note') or state}\n"
              f"data in {record['data_dir']}\nlog {record['log']}\nbinary {record.get('binary', '-')}")


def _read_password(password_file: Path) -> str:
    try:
        password = password_file.expanduser().read_text().splitlines()[0].strip()
    except (OSError, IndexError) as e:
        why = "it is empty" if isinstance(e, IndexError) else (e.strerror or str(e))
        raise ConfigError(f"cannot read the password from {password_file}: {why}") from None
    if not password:
        raise ConfigError(f"cannot read the password from {password_file}: its first line is empty")
    return password


def server(
    port: int = typer.Option(6379, "--port", metavar="PORT", help="TCP port to listen on."),
    bind: str = typer.Option("127.0.0.1", "--bind", metavar="ADDR",
                             help="Address to listen on; 0.0.0.0 for other machines (needs a password)."),
    password_file: Path | None = _PASSWORD_FILE,
    data: Path | None = _DATA,
    stop: bool = typer.Option(False, "--stop", help="Stop the background server the library started on demand."),
    info: bool = typer.Option(False, "--info", help="Say where the background server runs and keeps its data."),
    as_json: bool = typer.Option(False, "--json", help="With --info or --stop: print JSON."),
    verbose: int = VERBOSE,
) -> None:
    """Run the embedded Redis-compatible server in the foreground until Ctrl-C.

    Prints the [bold]FORRESTQ_URL[/bold] other machines should use. Listening beyond localhost needs a password.

    Examples: [bold]forrestq server --bind 0.0.0.0 --password-file ~/.forrestq-pass[/bold],
    [bold]forrestq server --info[/bold], [bold]forrestq server --stop[/bold]
    """
    set_verbose(verbose)
    if stop and info:
        raise ConfigError("--stop and --info do not go together")
    if stop:
        return _stop(as_json)
    if info:
        return _info(as_json)
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be from 1 to 65535, not {port}")
    password = None if password_file is None else _read_password(password_file)
    from ..server import serve_foreground
    raise typer.Exit(serve_foreground(port=port, bind=bind, password=password, data=data))
