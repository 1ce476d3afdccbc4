"""Every exception class of forrestq, in one place.

The ones users catch are exported from ``forrestq``; each is raised at the call that caused it, with
one readable line. The rest are control flow between forrestq's own layers (named here so that no
module has to import another sideways just for an exception).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # redis-py is imported where a Redis error is looked at (it is then imported already):
    from redis import exceptions as rx  # importing this module does not cost an import of redis-py


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


class UnknownSchedule(UnknownTask):
    """No periodic schedule of that name exists in the queue (``Queue.every``/``cron`` make them)."""


class UnknownLimit(UnknownTask):
    """No concurrency limit or rate of that key is set on the queue (``Queue.set_limit``/``set_rate``)."""


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

    def __reduce__(self) -> tuple[Any, ...]:  # keep both fields through pickling
        return (UpstreamFailed, (self.upstream, self.reason))


class RemoteError(ForrestqError):
    """Stands in for an exception that could not be pickled on the worker.

    Keeps the original type name and message; the traceback text is on the task.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteError, (self.type_name, self.message))


class TaskKilled(ForrestqError):
    """The process running the task died or was killed (autokill, a signal, an exit); the message says which."""


class TimeLimitExceeded(ForrestqError):
    """Raised inside a task at its soft time limit (``schedule(soft_timeout=S)`` or ``forrestq worker
    --soft-timeout S``), so its ``finally:`` blocks run and its traceback names the line it was on;
    the hard limit (``timeout`` / ``--autokill``) still kills the task's processes later."""


class TaskLost(ForrestqError):
    """The task's worker vanished too many times (``max_attempts``); the message names the last host."""


class NotSendable(SerializationError):
    """A task's function or argument holds a live connection (a ``Queue``, a Redis client or
    connection pool): it cannot travel to a worker process. Pass the queue's name (and URL) instead
    and open ``Queue(name)`` inside the task. ``obj``: the object refused."""

    obj: object = None


class WorkerImportError(SerializationError, ImportError):
    """A function or value refers to a module or name that is missing where it is loaded."""


class Cancelled(ForrestqError):
    """The error value of a cancelled task."""


class WorkerStartError(ForrestqError, RuntimeError):
    """A local worker (``Queue.run``, ``procs=`` of ``map``, ``Queue.workers``) could not start: a
    bad worker option, a server it cannot reach, a secret it cannot read; the message says which."""


class SlurmError(ForrestqError, RuntimeError):
    """A SLURM command (sbatch, squeue, scancel) is missing or refused (``forrestq launch slurm``); the
    message carries its first line of complaint."""


class NotClaimed(ForrestqError, LookupError):
    """``notify_success`` for an exactly-once key this process does not hold (never claimed, or
    already settled)."""


class LeaseLost(NotClaimed):
    """``notify_success`` (or ``KeyClaim.done()``) for an exactly-once key whose lease ended before it
    was confirmed (its ``timeout`` passed, or its lease expired and another process may hold it): the
    key was not marked done (token fencing), so its body may run again elsewhere."""


class KeyBusy(ForrestqError):
    """``mark_done`` for an exactly-once key that another process holds right now: nothing changed
    (its holder settles it)."""


class LeaseLostWarning(ForrestqError, RuntimeWarning):
    """Warning: an exactly-once key's lease expired while its body ran here; another process may
    have run it too."""


class StaleCode(ForrestqError):
    """A module this process imported has changed on disk: its functions must not be served any
    more (the task is handed back, and a fresh process serves it)."""


class NotDurable(ForrestqError):
    """A write made with durability ``replica`` that no replica confirmed in time (``WAIT``): it is
    on the primary and stands, unless the primary fails before a replica has it."""


class ServerStop(ForrestqError):
    """``forrestq server`` in the foreground was asked to stop (SIGTERM)."""


class PortInUse(ConfigError):
    """``forrestq server --port P`` (or a :class:`~forrestq.server.ServerProcess`) asked for a TCP
    port that another process already listens on; ``port`` and ``bind`` say which."""

    def __init__(self, message: str, port: int = 0, bind: str = "") -> None:
        super().__init__(message)
        self.port = port
        self.bind = bind


class OrphanedServer(ConfigError):
    """A server of the local data directory still runs but cannot be reached there (the directory
    was deleted or moved while it ran, or its socket was removed): starting a second server would
    hide the work the first one holds, so forrestq refuses. ``pids`` are the orphans' process ids;
    ``forrestq server --stop`` (:func:`~forrestq.server.stop_local_server`) stops them."""

    def __init__(self, message: str, pids: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.pids = pids


class DashboardRefused(ConfigError):
    """``forrestq dashboard`` was asked to listen beyond loopback without ``--token-file``: it
    refuses to start (exit code 2) rather than serve tasks and actions to anyone who can reach it."""


def shown(value: object, width: int = 80) -> str:
    """``repr(value)`` cut to ``width`` characters (the cut marked ``...``), for echoing user input in
    an error message: a 10,000-character name or a 5 kB id must not become a 5 kB line. Never raises
    (a broken ``__repr__`` must not hide the error being reported)."""
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - any repr failure: describe the object instead
        text = f"<{type(value).__name__} object (repr failed: {type(exc).__name__})>"
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


# C0 and C1 control characters and DEL, apart from newline and tab
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """``text`` with each terminal control character (but newline and tab) as a visible escape:
    ESC becomes the four characters ``\\x1b``, so that user text (a task's reason, output, traceback)
    cannot drive the terminal that shows it: the CLI's views and the worker's log use this."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def transient() -> tuple[type[Exception], ...]:
    """Errors a server gives while it is restarting, failing over or full: the same command may work
    later."""
    from redis import exceptions as rx
    return (rx.ConnectionError, rx.TimeoutError, rx.OutOfMemoryError, rx.NoScriptError, rx.ReadOnlyError,
            rx.TryAgainError, rx.ClusterDownError, rx.MasterDownError, rx.AskError)  # AskError: MOVED too


def is_transient(e: BaseException) -> bool:
    """Whether a Redis error may go away by itself (retry later) rather than never (give up). A
    command the Redis user's ACL refuses (:func:`is_permission_error`) never is."""
    if is_permission_error(e):
        return False
    return isinstance(e, transient()) or str(e).startswith(("BUSY ", "NOREPLICAS", "LOADING"))


# How Redis and Valkey word a command refused by the ACL inside a Lua script: a plain ResponseError
# ("ERR ACL failure in script: User u has no permissions to run the 'xack' command script: SHA, on
# @user_script:45."), not the NOPERM that redis-py turns into NoPermissionError.
_SCRIPT_ACL = re.compile(r"^(?:ERR )?ACL failure in script: (?P<what>.*?)(?: script: [0-9a-f]+, on @\S+?\.?)?$",
                         re.DOTALL)


def is_permission_error(e: BaseException) -> bool:
    """Whether ``e`` is Redis refusing a command, key or channel to this ACL user (NOPERM, also from
    inside a script): it never goes away by retrying."""
    from redis import exceptions as rx
    return isinstance(e, rx.NoPermissionError) or (isinstance(e, rx.ResponseError)
                                                   and _SCRIPT_ACL.match(str(e)) is not None)


def as_permission_error(e: BaseException) -> rx.NoPermissionError:
    """A permission error (:func:`is_permission_error`) as one NoPermissionError with a short message:
    what was refused (a refusal inside a forrestq script says so instead of giving the script's sha)."""
    from redis import exceptions as rx
    if isinstance(e, rx.NoPermissionError):
        return e
    found = _SCRIPT_ACL.match(str(e))
    what = found.group("what").strip() if found else str(e)
    return rx.NoPermissionError(f"{what} (inside a forrestq script)")
