"""``forrestq launch slurm``: workers as SLURM batch jobs (issue 21), their status and their stop.

Thin over :mod:`forrestq.slurm` (the job script, sbatch, squeue, scancel) and
:mod:`forrestq.slurm_adapt` (the ``--adapt MIN,MAX`` controller).
"""
from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import typer
from rich.table import Table

from .. import slurm
from ..connection import mask
from ..errors import ConfigError
from ..server import data_dir
from ..slurm_adapt import Controller, parse_range
from .common import JSON, URL, VERBOSE, Command, PlainHelp, client, queue_name, set_verbose
from .render import literal, make_console, print_json

__all__ = ["app"]

app = typer.Typer(cls=PlainHelp, no_args_is_help=True, rich_markup_mode="rich",
                  help="Start workers through a batch scheduler: [bold]forrestq launch slurm[/bold].")
slurm_app = typer.Typer(cls=PlainHelp, invoke_without_command=True, no_args_is_help=True, rich_markup_mode="rich")
app.add_typer(slurm_app, name="slurm")

_QUEUE = typer.Option("default", "--queue", "-q", metavar="NAME", callback=queue_name, help="The queue the jobs serve.")
_NAME = typer.Option(None, "--name", metavar="NAME", help="The SLURM job name (default: forrestq-QUEUE).")
LOOPBACK = ("localhost", "127.0.0.1", "::1")


def _spec(queue: str, url: str | None, name: str | None, directory: Path | None, **options: Any) -> slurm.LaunchSpec:
    if not url:
        raise ConfigError("forrestq launch slurm needs --url or $FORRESTQ_URL: the server every job's worker "
                          "connects to")
    if (urlsplit(url).hostname or "") in LOOPBACK:
        print(f"forrestq: warning: {mask(url)} names this machine: only jobs on this node can reach it",
              file=sys.stderr)
    name = name or slurm.job_name(queue)
    return slurm.LaunchSpec(queue=queue, url=url, name=name, directory=directory or data_dir() / "slurm" / name,
                            **options)


def _dry_run(spec: slurm.LaunchSpec, count: int | None, adapt: str | None) -> None:
    out = make_console()
    script = spec.dir / "job.sh"
    what = f"--adapt {adapt}: a controller keeps that many jobs" if adapt else f"{count} job(s)"
    out.print(literal(f"# would write {script} (mode 0600):"))
    print(slurm.job_script(spec), end="")
    out.print(literal(f"# and {spec.dir / 'env'} (mode 0600, the URL's password shown masked here):"))
    print(slurm.env_file(spec).replace(spec.url, mask(spec.url)), end="")
    out.print(literal(f"# then, for {what}:"))
    print(" ".join(shlex.quote(a) for a in slurm.sbatch_command(spec, script)))


def _adapt(spec: slurm.LaunchSpec, url: str, adapt: str, interval: float, idle: float) -> None:
    lo, hi = parse_range(adapt)
    ctl = Controller(client(url), spec, lo, hi, interval=interval, idle_after=idle,
                     say=lambda line: print(line, flush=True))
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: ctl.stop())
    print(f"forrestq: keeping {lo} to {hi} jobs {spec.name} for queue {spec.queue} (every {interval:g} s; "
          "Ctrl-C ends the controller, the jobs stay: forrestq launch slurm stop)", flush=True)
    ctl.run()


@slurm_app.callback()
def launch_slurm(
    ctx: typer.Context,
    queue: str = _QUEUE,
    procs: int = typer.Option(1, "--procs", "-p", metavar="N", help="Worker processes per job."),
    jobs: int | None = typer.Option(None, "--jobs", "-n", metavar="N", help="Jobs to submit (default 1)."),
    adapt: str | None = typer.Option(None, "--adapt", metavar="MIN,MAX", help="Keep running: between MIN and MAX "
                                     "jobs, by the queue's ready + running tasks."),
    time: str | None = typer.Option(None, "--time", metavar="TIME", help="Wall time of each job (sbatch --time)."),
    mem: str | None = typer.Option(None, "--mem", metavar="SIZE", help="Memory of each job (sbatch --mem), e.g. 32G."),
    cpus: int | None = typer.Option(None, "--cpus", metavar="N", help="CPUs of each job (default: --procs)."),
    partition: str | None = typer.Option(None, "--partition", metavar="P", help="SLURM partition."),
    account: str | None = typer.Option(None, "--account", metavar="A", help="SLURM account."),
    extra_sbatch: str | None = typer.Option(None, "--extra-sbatch", metavar="OPTIONS",
                                            help='More sbatch options, e.g. "--gres=gpu:1 --qos=long".'),
    worker_args: str | None = typer.Option(None, "--worker-args", metavar="OPTIONS",
                                           help='More forrestq worker options, e.g. "--autokill 3600".'),
    grace: float = typer.Option(30, "--grace", metavar="SECONDS", help="The workers' --grace; SLURM sends SIGTERM "
                                f"this + {slurm.SIGNAL_MARGIN} s before the wall time."),
    idle_exit: float = typer.Option(0, "--idle-exit", metavar="SECONDS",
                                    help="A job's worker exits after this long without a task (0 = never)."),
    interval: float = typer.Option(10, "--interval", metavar="SECONDS", help="With --adapt: seconds between rounds."),
    idle: float = typer.Option(60, "--idle", metavar="SECONDS",
                               help="With --adapt: a job's worker idle this long may be stopped."),
    name: str | None = _NAME,
    directory: Path | None = typer.Option(None, "--dir", metavar="DIR", help="Job script, env file and logs (on a "
                                          "file system the nodes share; default: DATA_DIR/slurm/NAME)."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Print the job script and the sbatch command; submit nothing."),
    url: str | None = URL,
    as_json: bool = JSON,
    verbose: int = VERBOSE,
) -> None:
    """Submit forrestq workers as SLURM jobs: N of them (--jobs), or as many as the work needs (--adapt MIN,MAX).

    Each job runs [bold]forrestq worker --procs N --queue Q[/bold] with this Python, from this directory; the URL
    and the secret reach it through a file only you can read, never a command line.

    Examples: [bold]forrestq launch slurm -q fits --procs 8 --jobs 4 --time 4:00:00 --mem 32G[/bold],
    [bold]forrestq launch slurm -q fits --procs 8 --adapt 0,20 --idle-exit 600[/bold],
    [bold]forrestq launch slurm status -q fits[/bold], [bold]forrestq launch slurm stop -q fits[/bold]
    """
    if ctx.invoked_subcommand is not None:
        return
    set_verbose(verbose)
    count = _count(jobs, adapt)
    spec = _spec(queue, url, name, directory, procs=procs, time=time, mem=mem, cpus=cpus, partition=partition,
                 account=account, extra_sbatch=shlex.split(extra_sbatch or ""), grace=grace, idle_exit=idle_exit,
                 worker_args=shlex.split(worker_args or ""))
    if dry_run:
        return _dry_run(spec, count, adapt)
    if adapt is not None:
        return _adapt(spec, url or "", adapt, interval, idle)
    _submit(spec, count, as_json)


def _count(jobs: int | None, adapt: str | None) -> int:
    """How many jobs --jobs asks for (1 by default), the options checked."""
    if adapt is not None:
        if jobs is not None:
            raise ConfigError("--jobs and --adapt do not go together: --adapt decides how many")
        parse_range(adapt)  # a bad MIN,MAX is refused also with --dry-run
    count = 1 if jobs is None else jobs
    if count < 1:
        raise ConfigError(f"--jobs must be at least 1, not {count}")
    return count


def _submit(spec: slurm.LaunchSpec, count: int, as_json: bool) -> None:
    ids = slurm.submit(spec, count)
    if as_json:
        return print_json({"jobs": ids, "name": spec.name, "script": str(spec.dir / "job.sh")})
    make_console().print(literal(f"submitted {len(ids)} job(s) {spec.name}: {', '.join(ids)} (script "
                                 f"{spec.dir / 'job.sh'}, logs {spec.dir / (spec.name + '-JOBID.log')})"))


def _status_table(rows: list[dict[str, Any]], name: str) -> Table:
    table = Table(title=f"jobs {name}", title_justify="left")
    for column in ("job", "state", "node", "elapsed", "limit", "worker", "busy", "done", "failed", "running"):
        table.add_column(column)
    for row in rows:
        w = row["worker"] or {}
        running = ", ".join(f"{t['function']} {t['id']}" for t in row["running"][:3])
        running += f" (+{len(row['running']) - 3})" if len(row["running"]) > 3 else ""
        table.add_row(row["id"], row["state"], row["node"] or row["reason"], row["elapsed"], row["limit"],
                      w.get("id", "-") + (f" ({w['state']})" if w else ""),
                      f"{w['busy']}/{w['procs']}" if w else "-", str(w.get("done", "-")), str(w.get("failed", "-")),
                      running or "-")
    return table


@slurm_app.command("status", cls=Command)
def status(queue: str = _QUEUE, name: str | None = _NAME, url: str | None = URL, as_json: bool = JSON,
           verbose: int = VERBOSE) -> None:
    """The queue's SLURM jobs, the worker in each and what it runs."""
    set_verbose(verbose)
    rows = slurm.job_status(client(url), queue, name)
    if as_json:
        return print_json(rows)
    if not rows:
        make_console().print(literal(f"no jobs {name or slurm.job_name(queue)}"))
        return
    make_console().print(_status_table(rows, name or slurm.job_name(queue)))


@slurm_app.command("stop", cls=Command)
def stop(queue: str = _QUEUE, name: str | None = _NAME, url: str | None = URL, as_json: bool = JSON,
         verbose: int = VERBOSE) -> None:
    """End the queue's SLURM jobs without losing a task.

    Each job's worker finishes its running tasks (for its --grace; the rest is handed back) and exits;
    pending jobs are cancelled.
    """
    set_verbose(verbose)
    done = slurm.stop_jobs(client(url), queue, name)
    if as_json:
        return print_json(done)
    make_console().print(literal(
        f"asked {len(done['asked'])} worker(s) to stop after their tasks, signalled {len(done['signalled'])} "
        f"starting job(s), cancelled {len(done['cancelled'])} pending job(s)"))
