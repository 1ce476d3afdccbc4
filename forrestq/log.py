"""Logging: the standard ``logging`` module, one named logger per part (``forrestq.worker``,
``forrestq.child``, ``forrestq.once``, ...), configured once by the CLI.

Library code only logs; it never configures handlers (a program that imports forrestq keeps its own
logging set-up). ``forrestq worker`` calls :func:`setup`, which writes every line to stderr with a
timestamp, so a worker's log reads as a time line in the morning::

    2026-12-01 03:12:45.123 forrestq.child   done   fits 3f2a9c 0.412s

Verbosity: ``--quiet`` shows warnings and errors only; the default shows task ends and worker
events (INFO); ``-v`` adds child replacements and other details (DEBUG).

A worker child writes through the same handler; its stderr is a copy of the worker's taken before
the task's output is captured (:func:`redirect`), so task output never mixes into the log lines.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

FORMAT = "%(asctime)s.%(msecs)03d %(name)-16s %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"
_HANDLER_NAME = "forrestq"


def level_for(verbose: int) -> int:
    """``-v`` count (negative: ``--quiet``) to a logging level."""
    if verbose < 0:
        return logging.WARNING
    return logging.DEBUG if verbose > 0 else logging.INFO


def get(name: str) -> logging.Logger:
    """The logger ``forrestq.<name>``."""
    return logging.getLogger(f"forrestq.{name}")


def setup(verbose: int = 0, stream: TextIO | None = None) -> None:
    """Send forrestq's log lines to ``stream`` (stderr) with timestamps, at the level for
    ``verbose``; calling it again replaces the earlier handler."""
    root = logging.getLogger("forrestq")
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    root.addHandler(handler)
    root.setLevel(level_for(verbose))
    root.propagate = False


def redirect(fd: int) -> None:
    """Point the handler :func:`setup` installed at file descriptor ``fd`` (a worker child's copy
    of the worker's stderr), so log lines survive the child's output capture of fds 1 and 2."""
    for handler in logging.getLogger("forrestq").handlers:
        if handler.get_name() == _HANDLER_NAME and isinstance(handler, logging.StreamHandler):
            handler.setStream(os.fdopen(os.dup(fd), "w", buffering=1))
