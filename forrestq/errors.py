"""Exceptions users can catch. Each one is raised at the call that caused it, with one readable line."""
from __future__ import annotations


class ForrestqError(Exception):
    """Base of every forrestq error."""


class ConfigError(ForrestqError, ValueError):
    """A bad argument, URL, queue name, size or option."""


class ServerUnreachable(ForrestqError, ConnectionError):
    """The Redis server cannot be reached (refused, timed out, unknown host)."""


class AuthFailed(ForrestqError, PermissionError):
    """The Redis server refused the password or user."""


class SerializationError(ForrestqError, TypeError):
    """A function, argument or value cannot be serialised; names the object."""


class SignatureMismatch(SerializationError):
    """A payload's signature is missing or wrong (``$FORRESTQ_SECRET``): it was refused before unpickling."""


class GraphError(ForrestqError, ValueError):
    """A task graph with a cycle, a missing dependency or a node without a function."""


class UnknownQueue(ForrestqError, KeyError):
    """No queue of that name exists on the server."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownTask(ForrestqError, KeyError):
    """No task of that id exists in the queue."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TaskFailed(ForrestqError):
    """Raised by helpers that return values (``Queue.map``) when a task failed and the original
    exception could not be restored; carries the remote traceback text."""


class UpstreamFailed(ForrestqError):
    """A task did not run because one of its inputs failed.

    ``upstream`` is the id of the failed input, ``reason`` its one-line failure reason.
    """

    def __init__(self, upstream: str, reason: str) -> None:
        super().__init__(f"input task {upstream} failed: {reason}")
        self.upstream = upstream
        self.reason = reason

    def __reduce__(self):  # keep both fields through pickling
        return (UpstreamFailed, (self.upstream, self.reason))


class RemoteError(ForrestqError):
    """Stands in for an exception that could not be pickled on the worker.

    Keeps the original type name and message; the traceback text is on the task.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message

    def __reduce__(self):
        return (RemoteError, (self.type_name, self.message))


class TaskKilled(ForrestqError):
    """The process running the task died or was killed (autokill, a signal, an exit); the message says which."""


class TaskLost(ForrestqError):
    """The task's worker vanished too many times (``max_attempts``); the message names the last host."""


class LeaseLost(ForrestqError):
    """This worker no longer holds the task's lease; its result was refused."""
