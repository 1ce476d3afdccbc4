"""Big shared inputs (``q.put``): stored once, content-addressed, loaded once per worker child process
(JobRunner's shared-memory arrays, across machines)."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from procs import worker

from forrestq import Queue, defer, evaluate, shared


class Counted:
    """An object whose every unpickling appends this process's pid to a file."""

    def __init__(self, path, payload):
        self.path, self.payload = path, payload

    def __reduce__(self):
        return (_load_counted, (self.path, self.payload))


def _load_counted(path, payload):
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return Counted(path, payload)


def use_counted(obj, i):
    return len(obj.payload), i, os.getpid()


def array_stats(arr, i):
    return float(arr.sum()), arr.shape, i


def try_write(arr):
    arr[0] = 1.0


def digest(blob):
    return hashlib.sha256(blob).hexdigest()


def nested(d):
    return d["data"][1] + d["k"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    shared.clear_cache()
    yield
    shared.clear_cache()


def test_loaded_once_per_child_process(url, tmp_path):
    log = tmp_path / "loads"
    q = Queue("sh-once")
    ref = q.put(Counted(str(log), "x" * 100_000))
    assert len(shared.codec.dumps(ref)) < 300  # tasks carry the reference, not the object
    with worker(url, "sh-once", 2):
        out = q.starmap(use_counted, [(ref, i) for i in range(30)], progress=False, timeout=60)
    assert [o[:2] for o in out] == [(100_000, i) for i in range(30)]  # the right value, in order
    loads = [int(p) for p in log.read_text().split()]
    task_pids = {o[2] for o in out}
    assert sorted(loads) == sorted(set(loads))  # no process loaded it twice
    assert set(loads) == task_pids  # every child that ran a task loaded it, once
    assert str(os.getpid()) not in loads  # put never unpickles here


def test_numpy_array_right_value_and_read_only(url):
    arr = np.arange(1_000_000, dtype=np.float64)
    q = Queue("sh-np")
    ref = q.put(arr)
    with worker(url, "sh-np", 2):
        out = q.starmap(array_stats, [(ref, i) for i in range(10)], progress=False, timeout=60)
        (err,) = q.map(try_write, [ref], return_exceptions=True, progress=False, timeout=60)
    assert out == [(float(arr.sum()), (1_000_000,), i) for i in range(10)]
    assert isinstance(err, ValueError) and "read-only" in str(err)  # one copy serves every task of a child


def test_put_twice_writes_once(url, r):
    q = Queue("sh-twice")
    blob = os.urandom(1 << 20)

    def sets() -> int:
        return r.info("commandstats").get("cmdstat_set", {}).get("calls", 0)

    before = sets()
    a = q.put(blob)
    b = q.put(bytes(blob))  # equal content, another object
    assert a == b and a.sha == hashlib.sha256(shared.codec.dumps(blob)).hexdigest()
    assert sets() - before == 1
    assert list(r.scan_iter(match="fq:{sh-twice}:blob:*")) == [f"fq:{{sh-twice}}:blob:{a.sha}".encode()]
    assert a.size > (1 << 20) and "sh-twice" in repr(a)


def test_big_object_in_parts_nested_args_and_local_use(url, r, monkeypatch):
    monkeypatch.setattr(shared, "PART", 1 << 20)
    blob = os.urandom(3 * (1 << 20) + 5)
    q = Queue("sh-parts")
    ref = q.put(blob)
    assert len(list(r.scan_iter(match="fq:{sh-parts}:blob:*"))) == 1 + 4  # head + 4 parts
    small = q.put([10, 20, 30])
    with worker(url, "sh-parts", 1):
        got = q.map(digest, [ref], progress=False, timeout=60)
        tree = q.schedule(defer(nested, {"data": small, "k": defer(len, small)}))
        assert q.wait(tree, timeout=60).returnvalue == 23  # a reference deep inside the arguments
    assert got == [hashlib.sha256(blob).hexdigest()]
    assert ref.value == blob  # here too, through the queue's client
    assert evaluate(defer(nested, {"data": small, "k": 1})) == 21


def test_debug_mode_and_deleted_blob(url):
    q = Queue("sh-inline")
    ref = q.put(np.ones(10))
    q.schedule(defer(array_stats, ref, 0))
    (task,) = list(q.run(procs=0))
    assert task.returnvalue == (10.0, (10,), 0)
    ref.delete()
    shared.clear_cache()
    q.schedule(defer(array_stats, ref, 1))
    (task,) = [t for t in q.run(procs=0) if t.state == "failed"]
    assert isinstance(task.errorvalue, LookupError) and "missing" in str(task.errorvalue)


def test_set_client_hook(url, r):
    q = Queue("sh-hook")
    ref = q.put({"a": 1})
    monkey = shared._queue_clients.pop("sh-hook")
    try:
        shared.set_client(r)
        assert shared._load("sh-hook", ref.sha, "redis://127.0.0.1:1") == {"a": 1}  # the url is not used
    finally:
        shared.set_client(None)
        shared._queue_clients["sh-hook"] = monkey
