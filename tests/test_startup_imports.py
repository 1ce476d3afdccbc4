"""Start-up cost (issue 18): each process imports only what it uses. ``import forrestq`` imports no
module of the package (the public names load on first use), ``forrestq --help`` no command and not
redis-py, ``forrestq status`` nothing of the producer, the worker or the unpickler, a worker nothing
of the command line's views (and with ``--url``, neither loads the embedded server's module).
Checked on the modules a fresh interpreter holds after the path ran, so that a new eager import
fails here; nothing is timed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import forrestq

ROOT = Path(__file__).resolve().parent.parent

# a fresh interpreter runs ARGV as `python -m forrestq ARGV` (none: only `import forrestq`) and writes
# the names of the modules it then holds to OUT, whichever way it ends
_RUN = """
import atexit, json, os, runpy, sys
def _dump():
    with open(os.environ["FQ_MODULES_OUT"], "w") as f:
        json.dump(sorted(sys.modules), f)
atexit.register(_dump)
argv = json.loads(os.environ["FQ_ARGV"])
if argv is None:
    import forrestq
else:
    sys.argv = ["forrestq", *argv]
    runpy.run_module("forrestq", run_name="__main__")
"""

# imported by no path below but the one that needs it
HEAVY = ["dill", "starlette", "uvicorn", "jinja2", "prometheus_client", "croniter", "forrestq.dashboard",
         "forrestq.metrics", "forrestq.slurm", "forrestq.debug", "forrestq.executor", "forrestq.mapping",
         "forrestq.batch", "forrestq.aio", "forrestq.once"]
COMMAND_MODULES = ["forrestq.cli." + m for m in ("work", "inspect", "manage", "dashboard", "periodic", "limits",
                                                  "slurm", "render")]


def modules_after(tmp_path: Path, argv: list[str] | None, ok: tuple[int, ...] = (0,)) -> set[str]:
    out = tmp_path / "modules.json"
    env = {**os.environ, "FQ_MODULES_OUT": str(out), "FQ_ARGV": json.dumps(argv),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-c", _RUN], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode in ok, done.stderr
    return set(json.loads(out.read_text()))


def loaded(mods: set[str], names: list[str]) -> list[str]:
    return sorted(n for n in names if n in mods)


def test_import_forrestq_imports_nothing_of_the_package_nor_redis(tmp_path: Path) -> None:
    mods = modules_after(tmp_path, None)
    assert sorted(m for m in mods if m.startswith("forrestq.")) == ["forrestq.version"]
    assert loaded(mods, ["redis", "rich", "typer", "pydantic", "asyncio", *HEAVY]) == []


def test_the_public_names_load_on_first_use() -> None:
    from forrestq import Queue, TaskFailed, defer
    from forrestq.deferred import defer as defer_itself
    from forrestq.errors import TaskFailed as task_failed_itself
    from forrestq.queue import Queue as queue_itself

    assert (Queue, TaskFailed, defer) == (queue_itself, task_failed_itself, defer_itself)
    assert set(forrestq.__all__) <= set(dir(forrestq))
    for name in forrestq.__all__:
        value = getattr(forrestq, name)
        assert getattr(sys.modules[value.__module__], name) is value, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        forrestq.nope  # noqa: B018
    assert forrestq.schema is sys.modules["forrestq.schema"]  # a module, named after `import forrestq`


def test_help_imports_no_command_and_not_redis(tmp_path: Path) -> None:
    mods = modules_after(tmp_path, ["--help"])
    assert loaded(mods, ["redis", "pydantic", "asyncio", "forrestq.connection", "forrestq.queue",
                         *COMMAND_MODULES, *HEAVY]) == []


def test_status_imports_neither_producer_nor_worker_nor_unpickler(tmp_path: Path, url: str) -> None:
    mods = modules_after(tmp_path, ["status", "--url", url])
    assert "forrestq.status" in mods and "forrestq.cli.inspect" in mods  # it did run the command
    assert loaded(mods, ["forrestq.codec", "forrestq.queue", "forrestq.producer", "forrestq.core",
                         "forrestq.events", "forrestq.worker", "forrestq.local", "forrestq.server", "rich.live",
                         "rich.syntax",
                         *[m for m in COMMAND_MODULES if m not in ("forrestq.cli.inspect", "forrestq.cli.render")],
                         *HEAVY]) == []


def test_a_worker_imports_none_of_the_views(tmp_path: Path, url: str) -> None:
    mods = modules_after(tmp_path, ["worker", "--procs", "1", "--queue", "idle", "--url", url, "--quiet",
                                    "--idle-exit", "0.1"])
    assert "forrestq.worker.supervisor" in mods
    # dill is the children's (the unpickler of tasks): imported before they are forked, shared by all
    assert loaded(mods, ["rich", "forrestq.status", "forrestq.cli.render", "forrestq.queue", "forrestq.events",
                         "forrestq.server", *[m for m in HEAVY if m != "dill"]]) == []


def test_the_root_help_lists_each_command_with_its_own_first_paragraph() -> None:
    """``forrestq --help`` lists the commands from :data:`forrestq.cli.COMMANDS` without importing
    them: each entry must say what the command's own help says first."""
    from forrestq.cli import COMMANDS, app, load_command

    for name, (_, _, listed) in COMMANDS.items():
        command = load_command(name)
        assert command.name == name
        assert (command.short_help or command.help or "").split("\n\n")[0] == listed, name
    import typer.main

    group = typer.main.get_command(app)
    assert list(group.list_commands(None)) == list(COMMANDS)  # type: ignore[attr-defined]
