"""forrestq: spread slow, crashy Python work over every core of many machines through Redis."""
from .deferred import defer
from .errors import (
                     AuthFailed,
                     Cancelled,
                     ConfigError,
                     ForrestqError,
                     GraphError,
                     LeaseLostWarning,
                     NotClaimed,
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
                     UnknownQueue,
                     UnknownTask,
                     UpstreamFailed,
                     WorkerImportError,
)
from .plan import evaluate
from .queue import Queue
from .task import Task, TaskRef
from .version import __version__ as __version__

__all__ = ["Queue", "Task", "TaskRef", "defer", "evaluate",
           "AuthFailed", "Cancelled", "ConfigError", "ForrestqError", "GraphError", "LeaseLostWarning",
           "NotClaimed", "NotSendable", "OrphanedServer", "PortInUse", "RemoteError", "SerializationError",
           "ServerUnreachable", "SignatureMismatch",
           "TaskFailed", "TaskKilled", "TaskLost", "UnknownQueue", "UnknownTask", "UpstreamFailed",
           "WorkerImportError"]
