"""The dashboard's actions: each a thin call of the library (``Queue``) or of the worker's remote
control, returning one line that says what happened (shown on the page it returns to)."""
from __future__ import annotations

from collections.abc import Callable

import redis

from ..errors import ForrestqError
from ..queue import Queue
from ..status import why_not_cancelled, why_not_requeued
from ..worker.remote import request_stop
from .data import failure_type, group_ids

__all__ = ["ACTIONS", "run"]

Form = dict[str, str]


def _requeue(r: redis.Redis, q: Queue, form: Form) -> str:
    task_id = form["id"]
    done = q.requeue_failed([task_id])
    if done:
        return f"requeued {task_id}" + (f" and {len(done) - 1} dependent(s)" if len(done) > 1 else "")
    task = q.get(task_id)
    return why_not_requeued(task, None, failure_type(task))


def _requeue_group(r: redis.Redis, q: Queue, form: Form) -> str:
    ids = group_ids(r, q.name, form["type"], form["reason"])
    done = q.requeue_failed(ids) if ids else []
    return f"requeued {len(done)} task(s) of the group {form['type']}" if done else "nothing to requeue in that group"


def _cancel(r: redis.Redis, q: Queue, form: Form) -> str:
    task_id = form["id"]
    if q.cancel([task_id]):
        return f"cancelled {task_id}"
    return why_not_cancelled(q.get(task_id))


def _rerun(r: redis.Redis, q: Queue, form: Form) -> str:
    done = q.rerun(form["id"])
    return f"running {form['id']} again" + (f" with {len(done) - 1} dependent(s)" if len(done) > 1 else "")


def _clean(r: redis.Redis, q: Queue, form: Form) -> str:
    which = form.get("which", "")
    if which not in ("done", "failed"):
        return "clean: choose done or failed records"
    n = q.clean(done=which == "done", failed=which == "failed")
    return f"deleted {n} {which} record(s) of {q.name}"


def _stop_worker(r: redis.Redis, q: Queue | None, form: Form) -> str:
    request_stop(r, form["worker"])
    return f"asked worker {form['worker']} to stop: it finishes its running tasks, then exits"


# action name -> (needs a queue, what it does)
ACTIONS: dict[str, tuple[bool, Callable[..., str]]] = {
    "requeue": (True, _requeue), "requeue-group": (True, _requeue_group), "cancel": (True, _cancel),
    "rerun": (True, _rerun), "clean": (True, _clean), "stop-worker": (False, _stop_worker)}


def run(r: redis.Redis, queue_of: Callable[[str], Queue], name: str, form: Form) -> str:
    """Run action ``name`` with its form (``queue_of``: the Queue of a name); one line for the person
    who asked (an error too)."""
    needs_queue, action = ACTIONS[name]
    try:
        q = queue_of(form.get("queue", "")) if needs_queue else None
        return action(r, q, form)
    except KeyError as e:
        return f"{name}: missing {e}"
    except ForrestqError as e:
        return f"{name}: {e}"
