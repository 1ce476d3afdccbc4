"""forrestq: spread slow, crashy Python work over every core of many machines through Redis.

The public names are imported on first use (PEP 562, issue 18): ``import forrestq`` alone, and the
command line (``python -m forrestq status`` runs this module first), load no more than they need.
``from forrestq import Queue, defer`` works as always; so do ``dir(forrestq)`` and ``import *``.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__ as __version__

if TYPE_CHECKING:  # the type checker sees every name as eagerly imported
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

# public name -> the module defining it (every other public name is an exception class of .errors)
_WHERE = {"Batch": "batch", "TaskContext": "context", "current_task": "context", "progress": "context",
          "Failed": "deferred", "allow_failed": "deferred", "defer": "deferred", "io_bound": "deferred",
          "check_graph": "graph", "evaluate": "plan", "Queue": "queue", "Task": "task", "TaskRef": "task"}


def __getattr__(name: str) -> Any:
    """Import a public name on first use, and keep it (later uses are plain attribute reads)."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("." + _WHERE.get(name, "errors"), __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
