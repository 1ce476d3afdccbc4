"""The runner (load, call, judge) without Redis: outcomes, retries, stale code, serialisation failures,
refusals, the completion it makes; the shared-memory slots' seqlock; and the worker's words for a
time limit and a lost attempt, and its import paths. Fast unit tests."""
from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sys
import time
import types

import pytest

from forrestq import codec, ops, runner, signing
from forrestq.errors import ConfigError, StaleCode
from forrestq.runner import RELEASE, Outcome, Runner, completion, invoke, unrecordable
from forrestq.schema import DONE, FAILED, READY, RETRY, RUNNING, QueueKeys
from forrestq.worker import WorkerConfig
from forrestq.worker.peers import loss_reason
from forrestq.worker.procs import signal_reason
from forrestq.worker.slots import Slot, SlotTable

K = QueueKeys("unit")


def add(a, b=0):
    return a + b


async def async_add(a, b=0):
    await asyncio.sleep(0)
    return a + b


def boom(msg):
    raise ValueError(msg)


def unpicklable():
    return (i for i in range(3))


def make_claimed(fn, *args, retry_policy=b"", retries_used=0, **kwargs) -> tuple[ops.Claimed, dict[str, bytes]]:
    sha, blob, _ = codec.dump_fn(fn)
    argblob, _ = codec.dump_args(args, kwargs)
    c = ops.Claimed(id="t1", sid="1-0", fn_sha=sha.encode(), args=argblob, timeout=0.0, attempts=1,
                    max_attempts=3, retry_policy=retry_policy, retries_used=retries_used, inputs=[], token="tok")
    return c, {K.fn(sha): blob}


def run(fn, *args, **kwargs) -> Outcome:
    c, blobs = make_claimed(fn, *args, **kwargs)
    return Runner(blobs.get, "h").run(K, c)


def test_invoke_calls_and_awaits():
    assert invoke(add, (1,), {"b": 2}) == 3
    assert invoke(async_add, (1, 2), {}) == 3


def test_done_with_the_serialised_value():
    o = run(add, 2, b=3)
    assert o.state == DONE and pickle.loads(o.result) == 5 and o.runtime >= 0 and o.exc is None


def test_a_coroutine_task_is_awaited():
    o = run(async_add, 2, 5)
    assert o.state == DONE and pickle.loads(o.result) == 7


def test_failed_keeps_reason_traceback_and_the_live_exception():
    o = run(boom, "bad")
    assert o.state == FAILED and o.reason == "ValueError: bad" and "boom" in o.traceback
    assert isinstance(codec.loads(o.error), ValueError) and isinstance(o.exc, ValueError)


def test_retry_policy_matching_gives_retry_with_backoff():
    policy = codec.dumps((2, 0.5, (ValueError,)))
    c, blobs = make_claimed(boom, "x", retry_policy=policy, retries_used=1)
    o = Runner(blobs.get, "h").run(K, c)
    assert o.state == RETRY and o.delay == 1.0
    c, _ = make_claimed(boom, "x", retry_policy=policy, retries_used=2)  # used up
    assert Runner(blobs.get, "h").run(K, c).state == FAILED


def test_a_bad_retry_policy_fails_the_task_saying_so():
    c, blobs = make_claimed(boom, "x", retry_policy=b"garbage")
    o = Runner(blobs.get, "h").run(K, c)
    assert o.state == FAILED and "retry policy not loaded" in o.reason


def test_unserialisable_and_too_big_return_values_fail(monkeypatch):
    o = run(unpicklable)
    assert o.state == FAILED and o.reason.startswith("could not serialise the return value:")
    monkeypatch.setattr(runner, "RESULT_LIMIT", 10)
    o = run(add, "x" * 100, b="y")
    assert o.state == FAILED and o.reason.startswith("could not store the return value:")


def test_missing_blob_and_garbage_payload_fail_to_load():
    c, _ = make_claimed(add, 1)
    o = Runner({}.get, "h").run(K, c)
    assert o.state == FAILED and o.reason.startswith("could not load task payload: LookupError")
    c, blobs = make_claimed(add, 1)
    c.args = b"\x00garbage"
    o = Runner(blobs.get, "h").run(K, c)
    assert o.state == FAILED and o.reason.startswith("could not load task payload")


def test_stale_code_is_released_unless_the_check_is_off(tmp_path, monkeypatch):
    path = tmp_path / "fq_stale_mod.py"
    path.write_text("def f():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = types.ModuleType("fq_stale_mod")
    mod.__file__ = str(path)
    exec(compile(path.read_text(), str(path), "exec"), mod.__dict__)
    mod.f.__module__ = "fq_stale_mod"
    monkeypatch.setitem(sys.modules, "fq_stale_mod", mod)
    c, blobs = make_claimed(mod.f)
    worker_side, debug_side = Runner(blobs.get, "h"), Runner(blobs.get, "h", stale_check=False)
    assert worker_side.run(K, c).state == DONE and debug_side.run(K, c).state == DONE
    later = time.time() + 5
    os.utime(path, (later, later))
    with pytest.raises(StaleCode):
        worker_side.load_fn(K, c.fn_sha)
    o = worker_side.run(K, c)
    assert o.state == RELEASE and "changed since this process imported it" in o.reason
    assert debug_side.run(K, c).state == DONE


def test_completion_and_unrecordable():
    c, _ = make_claimed(add, 1)
    o = Outcome(RETRY, result=b"r", error=b"e", traceback="tb", reason="why", runtime=0.25, delay=4.0)
    done = completion(c, o, b"out", "host1")
    assert {f: getattr(done, f) for f in ("task_id", "token", "outcome", "result", "error", "traceback", "reason",
                                         "runtime", "output", "host", "delay")} == \
        {"task_id": "t1", "token": "tok", "outcome": RETRY, "result": b"r", "error": b"e", "traceback": "tb",
         "reason": "why", "runtime": 0.25, "output": b"out", "host": "host1", "delay": 4.0}
    assert abs(done.now - time.time()) < 5
    bad = unrecordable(done, ValueError("too big"))
    assert bad.outcome == FAILED and bad.result == b"" and bad.output == b"" and bad.token == "tok"
    assert bad.reason == "could not record the result: ValueError: too big" and bad.runtime == 0.25
    assert bad.delay == 0.0 and bad.traceback == ""
    assert isinstance(codec.loads(bad.error), RuntimeError)


def test_slot_seqlock_round_trip():
    table = SlotTable(2, 3)
    assert len(table.all) == 6 and table.lanes(1)[0] is table.first(1)
    slot = table.lanes(1)[2]
    slot.begin(1, "task-x", "tok-y", 2, 70000)
    view = slot.read()
    assert view.busy and view.queue == 1 and view.task == "task-x" and view.token == "tok-y"
    assert view.attempts == 2 and view.max_attempts == 65535 and view.timeout == 0
    slot.arm(1.5)
    assert slot.read().timeout == 1.5
    slot.disarm()
    slot.end(True)
    slot.begin(0, "t2", "k", 1, 3)
    slot.end(False)
    assert not slot.read().busy and (slot.done, slot.failed) == (1, 1) and slot.seq % 2 == 0
    assert isinstance(Slot(), Slot)


def test_a_load_failure_of_this_host_is_marked_as_a_refusal(tmp_path, monkeypatch):
    """A missing module or a bad signature may be this host's fault: the outcome says which, so a
    worker child can hand the task to another host; debug mode records the failure as it is."""
    (tmp_path / "fq_refused_mod.py").write_text("def f():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fq_refused_mod

    c, blobs = make_claimed(fq_refused_mod.f)
    monkeypatch.delitem(sys.modules, "fq_refused_mod")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    o = Runner(blobs.get, "h").run(K, c)
    assert o.state == FAILED and o.refusal == runner.MISSING_IMPORT
    assert o.reason.startswith("could not load task payload: WorkerImportError: cannot import module 'fq_refused_mod'")
    try:
        signing.set_secret("one secret")
        c, blobs = make_claimed(add, 1)
        signing.set_secret("another secret")
        o = Runner(blobs.get, "h").run(K, c)
        assert o.state == FAILED and o.refusal == runner.BAD_SIGNATURE and "SignatureMismatch" in o.reason
    finally:
        signing.use_environment()
    c, blobs = make_claimed(add, 1)
    c.args = b"\x00garbage"
    assert Runner(blobs.get, "h").run(K, c).refusal == ""  # the payload's own fault: no refusal
    assert run(boom, "x").refusal == ""


def test_slot_carries_whose_time_limit_and_the_refusal_count():
    slot = SlotTable(1, 1).first(0)
    slot.begin(0, "t", "k", 1, 3)
    slot.arm(2.0, own=True)
    assert slot.read().own_limit and slot.read().timeout == 2.0
    slot.arm(5.0)
    assert not slot.read().own_limit
    slot.refused += 1
    assert slot.refused == 1 and slot.seq % 2 == 0


def test_time_limit_reasons_say_whose_limit_it_was():
    status = signal.SIGKILL  # a wait status: killed by SIGKILL
    assert signal_reason(status, 2.0, own=True) == "killed after 2 s (timeout of this task)"
    assert signal_reason(status, 300.0) == "killed after 300 s (worker --autokill)"
    assert signal_reason(status) == "killed by signal 9 (SIGKILL) (out of memory?)"


def test_a_lost_attempt_is_told_what_became_of_its_task():
    assert loss_reason("", "", "", "", "mine").startswith("the task record is gone (deleted by a clean, or the "
                                                          "server lost its data)")
    assert loss_reason(FAILED, "cancel-x", "cancelled", "h", "mine") == "the task was cancelled"
    assert loss_reason(RUNNING, "other", "", "h2", "mine").startswith("another attempt on host h2 took it over")
    assert loss_reason(DONE, "other", "", "h2", "mine").startswith("another attempt on host h2 recorded it as done")
    assert loss_reason(READY, "", "", "", "mine").startswith("it was requeued or handed back meanwhile")
    assert "another attempt" not in loss_reason(FAILED, "cancel-x", "cancelled", "h", "mine")


def test_worker_paths_must_exist_and_come_before_the_working_directory(tmp_path):
    with pytest.raises(ConfigError, match="--path '/no/such/dir': no such directory"):
        WorkerConfig(paths=["/no/such/dir"])
    with pytest.raises(ConfigError, match=r"\.\.\.: no such directory"):
        WorkerConfig(paths=["x" * 500])  # echoed, cut to a readable length
    cfg = WorkerConfig(paths=[str(tmp_path), "."])
    assert cfg.import_paths() == [str(tmp_path), os.getcwd(), os.getcwd()]
