"""forrestq: spread slow, crashy Python work over every core of many machines through Redis.

The public names are loaded on first use (a module ``__getattr__``, PEP 562): ``import forrestq``
imports nothing of the package (and so neither redis-py), ``from forrestq import Queue, defer`` imports
what those two need. Every process of the package (``forrestq status``, a worker) starts faster
for it; ``tests/test_startup_imports.py`` keeps heavy modules off the paths that do not use them.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .version import __version__ as __version__

if TYPE_CHECKING:  # what the names are, for type checkers (at run time: _WHERE and __getattr__)
    from .batch import Batch
    from .context import TaskContext, current_task, progress
    from .deferred import Failed, allow_failed, defer, io_bound
    from .errors import (
        AuthFailed,
        Cancelled,
        ConfigError,
        ForrestqError,
        GraphError,
        KeyBusy,
        LeaseLost,
        LeaseLostWarning,
        NotClaimed,
        NotDurable,
        NotSendable,
        OrphanedServer,
        PortInUse,
        RemoteError,
        SerializationError,
        ServerUnreachable,
        SignatureMismatch,
        TaskFailed,
        TaskKilled,
        TaskLost,
        TimeLimitExceeded,
        UnknownQueue,
        UnknownTask,
        UpstreamFailed,
        WorkerImportError,
        WorkerStartError,
    )
    from .graph import check_graph
    from .plan import evaluate
    from .queue import Queue
    from .task import Task, TaskRef

__all__ = ["Batch", "Queue", "Task", "TaskContext", "TaskRef", "check_graph", "current_task", "defer", "evaluate",
           "io_bound", "progress", "Failed", "allow_failed",
           "AuthFailed", "Cancelled", "ConfigError", "ForrestqError", "GraphError", "KeyBusy", "LeaseLost",
           "LeaseLostWarning",
           "NotClaimed", "NotDurable", "NotSendable", "OrphanedServer", "PortInUse", "RemoteError",
           "SerializationError",
           "ServerUnreachable", "SignatureMismatch",
           "TaskFailed", "TaskKilled", "TaskLost", "TimeLimitExceeded", "UnknownQueue", "UnknownTask", "UpstreamFailed",
           "WorkerImportError", "WorkerStartError"]

# public name -> the module of this package that defines it (every other public name: errors)
_MODULES = {"Batch": "batch", "TaskContext": "context", "current_task": "context", "progress": "context",
            "Failed": "deferred", "allow_failed": "deferred", "defer": "deferred", "io_bound": "deferred",
            "check_graph": "graph", "evaluate": "plan", "Queue": "queue", "Task": "task", "TaskRef": "task"}
_WHERE = {name: _MODULES.get(name, "errors") for name in __all__}


def __getattr__(name: str) -> Any:
    """A public name, imported from its module at first use (then kept in the package's globals);
    a module of the package (``forrestq.schema`` after ``import forrestq``, as when this module
    imported them all) is imported when named."""
    where = _WHERE.get(name)
    if where is not None:
        value = getattr(import_module(f".{where}", __name__), name)
    elif not name.startswith("__"):
        try:
            value = import_module(f".{name}", __name__)  # the import system also sets it as an attribute
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
