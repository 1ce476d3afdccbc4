"""The producer's fast paths (issue 18) write exactly what the general path writes: options given
as their defaults, the options validated once per queue's max_attempts, the raw send of the schedule's
commands, a call without arguments."""
from __future__ import annotations

import pytest
import tasks

from forrestq import ConfigError, Queue, codec, defer, schema, signing

VOLATILE = {schema.TASK_CREATED, schema.TASK_STREAM_ID}


def record(r, q: Queue, tid: str) -> dict[str, bytes]:
    got = {k.decode(): v for k, v in r.hgetall(q.keys.task(tid)).items()}
    return {k: v for k, v in got.items() if k not in VOLATILE}


def test_defaults_given_explicitly_write_the_same_record(url, r):
    q = Queue("plain")
    fast = q.schedule(defer(tasks.add, 1, 2))
    slow = q.schedule(defer(tasks.add, 1, 2), retries=0, retry_backoff=1, retry_on=(Exception, ValueError),
                      priority=0, limits=[], resources=None)
    assert record(r, q, fast.id) == record(r, q, slow.id)
    batch = q.schedule_many([defer(tasks.add, 1, 2)], retry_on=ValueError)
    assert record(r, q, batch[0].id) == record(r, q, fast.id)


def test_options_cached_per_max_attempts(url, r):
    five, plain = Queue("five", max_attempts=5), Queue("plain")
    a, b = five.schedule(defer(tasks.add, 1, 2)), plain.schedule(defer(tasks.add, 1, 2))
    c = five.schedule(defer(tasks.add, 1, 2))
    assert r.hget(five.keys.task(a.id), schema.TASK_MAX_ATTEMPTS) == b"5"
    assert r.hget(five.keys.task(c.id), schema.TASK_MAX_ATTEMPTS) == b"5"
    assert r.hget(plain.keys.task(b.id), schema.TASK_MAX_ATTEMPTS) is None  # the default: not stored
    d = plain.schedule(defer(tasks.add, 1, 2), max_attempts=7)
    assert r.hget(plain.keys.task(d.id), schema.TASK_MAX_ATTEMPTS) == b"7"


@pytest.mark.parametrize("options", [{"retry_backoff": True}, {"retries": False}, {"priority": False},
                                     {"retry_on": (Exception, 3)}, {"retry_on": [Exception]}])
def test_values_equal_to_a_default_are_still_checked(url, r, options):
    q = Queue("checked")
    with pytest.raises(ConfigError):
        q.schedule(defer(tasks.add, 1, 2), **options)
    with pytest.raises(ConfigError):
        q.schedule_many([defer(tasks.add, 1, 2)], **options)
    assert not r.exists(q.keys.stream) and not r.keys(q.keys.prefix + "*")  # nothing written


def test_a_function_instead_of_a_deferred_call_is_refused_with_a_key_too(url, r):
    q = Queue("refused")
    for key in (None, "k1"):
        with pytest.raises(ConfigError, match="deferred call"):
            q.schedule(tasks.add, key=key)
    assert not r.keys(q.keys.prefix + "*")


def test_a_schedule_sent_again_after_noscript_writes_each_task_once(url, r):
    q = Queue("again", events=True)
    q.schedule(defer(tasks.identity, 0))
    r.script_flush()
    ref = q.schedule(defer(tasks.identity, 1))
    r.script_flush()
    refs = q.schedule_many([defer(tasks.identity, i) for i in range(5)], keys=[f"k{i}" for i in range(5)])
    assert q.counts()["ready"] == 7 and r.xlen(q.keys.stream) == 7 and len(q.todo_tasks()) == 7
    assert ref.id in {t.id for t in q.todo_tasks()} and [x.id for x in refs] == [f"k-k{i}" for i in range(5)]


def test_the_blob_of_no_arguments_loads_and_is_signed_when_a_secret_is(no_secret):
    blob, inputs = codec.dump_args((), {})
    assert inputs == [] and codec.load_args(blob, []) == ((), {})
    assert blob == codec.dump_args([], {})[0]
    signing.set_secret("s3cret-for-this-test")
    try:
        signed, _ = codec.dump_args((), {})
        assert signing.is_signed(signed) and codec.load_args(signed, []) == ((), {})
        assert codec.dump_args((1,), {})[0] != signed
    finally:
        signing.use_environment()
    assert codec.dump_args((), {})[0] == blob


def test_a_big_schedule_many_is_cut_into_chunks_that_all_land(url, r, monkeypatch):
    from forrestq import producer
    monkeypatch.setattr(producer, "CHUNK_NODES", 7)
    q = Queue("chunks")
    shared = defer(tasks.identity, 5)
    batch = q.schedule_many([defer(tasks.add, shared, i) for i in range(30)])
    assert len(batch) == 30 and q.counts()["waiting"] == 30 and q.counts()["ready"] == 1
    assert batch[0].since == "0-0"


@pytest.mark.parametrize("options", [{}, {"timeout": 5, "priority": 2, "limits": "l"}, {"result_ttl": 0}])
def test_a_single_schedule_writes_what_a_batch_writes(url, r, options):
    """Queue.schedule of one plain call takes schedule.lua's lean path (one new root, write_root); the
    same call in a batch of two takes write_nodes: same record, events and counts.
    The queue's own result TTL and the signer and function blob written with them hold for both."""
    q = Queue("lean", events=True, result_ttl=60)
    one = q.schedule(defer(tasks.add, 1, 2), **options)
    r.delete(q.keys.signer, *r.keys(q.keys.fn("*")))  # gone (as after a clean): written again with the next
    two = q.schedule_many([defer(tasks.add, 1, 2), defer(tasks.add, 3, 4)], **options)
    assert record(r, q, one.id) == record(r, q, two[0].id)
    assert r.get(q.keys.signer) == signing.fingerprint().encode() and r.keys(q.keys.fn("*"))
    task = schema.ENTRY_TASK.encode()
    events = {ref.id: [{k: v for k, v in fields.items() if k != task}
                       for _, fields in r.xrange(q.keys.events) if fields[task] == ref.id.encode()]
              for ref in (one, two[0])}
    assert events[one.id] == events[two[0].id] and len(events[one.id]) == 1
    assert q.counts()["ready"] == 3 and r.hget(q.keys.counts, schema.COUNT_OPEN) == b"3"
    assert r.sismember(schema.QUEUES, "lean")


def test_single_schedules_that_are_not_a_plain_leaf_take_the_general_way(url, r):
    """A tree (inputs), an IO-bound or allow-failed call, a data value, metadata or a key: schedule() of one
    writes what schedule_many of one writes."""
    q = Queue("notleaf")
    inner = defer(tasks.add, 1, 2)
    tree = q.schedule(defer(tasks.add, inner, 3))
    assert q.get(tree.id).state == "waiting" and q.get(inner._id).state == "ready"
    assert r.hget(q.keys.task(tree.id), schema.TASK_INPUTS) == inner._id.encode()
    data = q.schedule(41)
    keyed = q.schedule(defer(tasks.add, 1, 2), key="k1", metadata={"m": 1})
    assert q.schedule(defer(tasks.add, 5, 6), key="k1").id == keyed.id  # the key's node, left as it is
    assert r.hget(q.keys.task(keyed.id), schema.TASK_KEY) == b"k1" and q.get(keyed.id).metadata == {"m": 1}
    assert q.get(data.id).state == "ready"
    assert q.counts()["ready"] == 3 and q.counts()["waiting"] == 1
