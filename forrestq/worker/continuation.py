"""A task that returned a deferred tree: the worker child's side of a continuation (issue 15).

A task may return ``defer(join, [defer(work, f) for f in files])``: a tree it only learned at run
time. :class:`forrestq.runner.Runner` judges such a return value ``CONTINUED`` (it only judges); the
child then plans the tree here, with :func:`forrestq.producer.continuation` (the serialisation and
signing of any producer), and records the outcome like any other, pipelined with its next claim:

* complete.lua, with outcome CONTINUED and fenced by the attempt's token (a stale attempt writes
  nothing, not even the nodes), writes the tree's nodes through include/nodes.lua (schedule.lua's node
  writing), each marked ``TASK_OWNER`` = the task, and makes the task a dependent of the tree's root:
  state WAITING (counted as waiting; a root task stays unfinished in ``root_counts()``), ``TASK_CONT``
  = the root's id, its lease and stream entry gone, its attempt's evidence (runtime, output, CPU,
  memory) kept; event ``continued``;
* when the root ends, complete.lua ends the task the same way, in the same call: done with the root's
  very result blob (its dependents released; announced to ``results()`` if it is a root), or failed
  with ``UpstreamFailed`` naming the node that failed first (its dependents failed likewise). A task
  that waited for a task that waited for a tree ends with it (nested continuations);
* a root that had finished already (the task returned a node that was scheduled before) ends the
  task at once.

A worker killed while the task ran loses nothing: nothing is written before the completion, and the
task runs again elsewhere (new ids: the lost attempt's tree was never written). Once the completion is
recorded, the tree's nodes are ordinary tasks: they survive anything other tasks survive.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .. import ops, producer
from ..runner import Outcome
from ..schema import CONTINUED, QueueKeys

__all__ = ["planned"]

T = TypeVar("T")


def planned(outcome: Outcome, r: Any, k: QueueKeys, c: ops.Claimed,
            patiently: Callable[[Callable[[], Outcome]], Outcome]) -> Outcome:
    """``outcome`` as the child records it: a CONTINUED one with its tree planned into nodes (carried
    on the outcome to complete.lua; the function blobs written now, ``patiently``: again while Redis
    is away), or the failure to plan it; any other outcome as it is. The tree's nodes get the task's
    own ``max_attempts``."""
    if outcome.state != CONTINUED or outcome.tree is None:
        return outcome
    tree = outcome
    return patiently(lambda: producer.continuation(r, k, tree, c.max_attempts))
