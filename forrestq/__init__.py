"""forrestq: spread slow, crashy Python work over every core of many machines through Redis."""
from .codec import evaluate
from .deferred import defer
from .errors import (AuthFailed, ConfigError, ForrestqError, GraphError, RemoteError, SerializationError,
                     ServerUnreachable, SignatureMismatch, TaskKilled, TaskLost, UnknownQueue, UnknownTask,
                     UpstreamFailed)
from .queue import Queue
from .task import Task, TaskRef

__all__ = ["Queue", "Task", "TaskRef", "defer", "evaluate", "AuthFailed", "ConfigError", "ForrestqError",
           "GraphError", "RemoteError", "SerializationError", "ServerUnreachable", "SignatureMismatch", "TaskKilled", "TaskLost",
           "UnknownQueue", "UnknownTask", "UpstreamFailed"]
__version__ = "0.1.0"
