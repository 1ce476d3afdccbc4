"""forrestq: spread slow, crashy Python work over every core of many machines through Redis."""
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
from .version import __version__ as __version__

__all__ = ["Batch", "Queue", "Task", "TaskContext", "TaskRef", "check_graph", "current_task", "defer", "evaluate",
           "io_bound", "progress", "Failed", "allow_failed",
           "AuthFailed", "Cancelled", "ConfigError", "ForrestqError", "GraphError", "KeyBusy", "LeaseLost",
           "LeaseLostWarning",
           "NotClaimed", "NotDurable", "NotSendable", "OrphanedServer", "PortInUse", "RemoteError",
           "SerializationError",
           "ServerUnreachable", "SignatureMismatch",
           "TaskFailed", "TaskKilled", "TaskLost", "TimeLimitExceeded", "UnknownQueue", "UnknownTask", "UpstreamFailed",
           "WorkerImportError", "WorkerStartError"]
