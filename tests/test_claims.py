"""Claims of several tasks at once (issue 18, forrestq.worker.claims): fast tasks are claimed ahead of
their turn, and nothing is stranded or held up by it: not by a slow task, not by a child's death."""
from __future__ import annotations

import threading
import time

import pytest
import redis
import tasks
from helpers import wait_for
from procs import worker

from forrestq import Queue, codec, defer, ops, schema
from forrestq.connection import connect
from forrestq.schema import QueueKeys
from forrestq.worker.claims import Claims
from forrestq.worker.slots import Slot, SlotTable
from forrestq.worker.supervisor import unblock


def test_claim_many_takes_up_to_count_tasks_each_fenced_by_its_own_token(r: redis.Redis) -> None:
    q = Queue("many")
    refs = q.schedule_many(defer(tasks.add, i, 1) for i in range(5))
    s, k = ops.Scripts(r), QueueKeys("many")
    first = ops.claim_many(s, k, ops.ClaimArgs("c1", "tok", 60_000, "h", "w", count=3))
    assert [c.id for c in first] == [ref.id for ref in refs[:3]]
    tokens = [ops.claim_token("tok", i) for i in range(3)]
    assert tokens == ["tok", "tok.2", "tok.3"]
    assert [r.hget(k.task(c.id), schema.TASK_TOKEN).decode() for c in first] == tokens
    assert [r.get(k.lease(c.id)).decode() for c in first] == tokens
    rest = ops.claim_many(s, k, ops.ClaimArgs("c1", "tok2", 60_000, "h", "w", count=8))
    assert [c.id for c in rest] == [ref.id for ref in refs[3:]]
    assert ops.claim_many(s, k, ops.ClaimArgs("c1", "tok3", 60_000, "h", "w", count=8)) == []
    assert q.counts()["running"] == 5 and q.counts()["ready"] == 0
    # each is its own attempt: a completion fenced by another task's token is refused
    done = ops.complete(s, k, ops.Completion(first[1].id, "tok", schema.DONE, result=b"\x80N."))
    assert not done
    assert ops.complete(s, k, ops.Completion(first[1].id, "tok.2", schema.DONE, result=b"\x80N."))


def test_fast_tasks_are_claimed_several_at_a_time_and_each_runs_once(url: str) -> None:
    q = Queue("fast")
    refs = q.schedule_many(defer(tasks.add, i, 1) for i in range(300))
    with worker(url, "fast", 1):
        got = [q.wait(ref, timeout=30) for ref in refs]
    assert [t.returnvalue for t in got] == [i + 1 for i in range(300)]
    assert all(t.attempts == 1 for t in got)
    r = q.r
    ahead = [t for t in got if schema.TOKEN_SEP in r.hget(q.keys.task(t.id), schema.TASK_TOKEN).decode()]
    assert ahead, "no task was claimed ahead of its turn"


def test_a_slow_task_holds_no_task_claimed_behind_it(url: str) -> None:
    """The tasks one child claimed after a slow one are handed back once it has run 0.1 s: a worker
    started later runs them while the slow one still runs."""
    q = Queue("hostage")
    before = q.schedule_many(defer(tasks.add, i, 0) for i in range(20))  # the claims grow to 8 at a time
    slow = q.schedule(defer(tasks.sleep_then, 8, "slow"))
    after = q.schedule_many(defer(tasks.add, i, 100) for i in range(20))
    with worker(url, "hostage", 1):
        for ref in before:
            q.wait(ref, timeout=30)
        wait_for(lambda: q.get(slow).state == "running", timeout=10, what="the slow task to start")
        started = time.monotonic()
        with worker(url, "hostage", 1):
            got = [q.wait(ref, timeout=6) for ref in after]
            assert q.get(slow).state == "running", "the tasks behind it waited for the slow task"
        assert time.monotonic() - started < 8
        assert [t.returnvalue for t in got] == [i + 100 for i in range(20)]
        assert all(t.attempts == 1 for t in got)
        assert q.wait(slow, timeout=20).returnvalue == "slow"


def test_a_child_killed_with_tasks_claimed_ahead_hands_them_back_at_once(url: str) -> None:
    """Its claimed-ahead tasks are handed back with their attempt not counted, long before their
    leases (30 s) would expire; the task that killed it is the only one charged."""
    q = Queue("killed")
    before = q.schedule_many(defer(tasks.add, i, 0) for i in range(20))
    killer = q.schedule(defer(tasks.kill_myself), max_attempts=1)
    after = q.schedule_many(defer(tasks.add, i, 100) for i in range(20))
    with worker(url, "killed", 1):
        t0 = time.monotonic()
        got = [q.wait(ref, timeout=15) for ref in [*before, *after]]
        assert time.monotonic() - t0 < 15
        died = q.wait(killer, timeout=15)
    assert died.state == "failed" and "SIGKILL" in died.reason
    assert [t.returnvalue for t in got] == [i for i in range(20)] + [i + 100 for i in range(20)]
    assert all(t.attempts == 1 for t in got)


def test_the_next_task_is_claimed_while_a_short_one_runs(url: str) -> None:
    """Tasks of a few ms: the child's next task is claimed (and the last end recorded) while the
    current one runs, so its claim time is before the current one's end; each runs once, in order."""
    q = Queue("ahead")
    refs = q.schedule_many(defer(tasks.sleep_then, 0.005, i) for i in range(40))
    with worker(url, "ahead", 1):
        got = [q.wait(ref, timeout=30) for ref in refs]
    assert [t.returnvalue for t in got] == list(range(40))
    assert all(t.attempts == 1 for t in got)
    fields = [q.r.hmget(q.keys.task(t.id), schema.TASK_STARTED, schema.TASK_FINISHED, schema.TASK_TOKEN)
              for t in got]
    # claimed on their own (not the 2nd.. of a claim of several, whose tokens say so) while the one before ran
    ahead = sum(float(s) < float(f) and schema.TOKEN_SEP not in tok.decode()
                for (s, _, tok), (_, f, _) in zip(fields[1:], fields))
    assert ahead >= 20, (ahead, "of 39 tasks were claimed on their own while the one before ran")


def test_a_child_killed_with_the_next_task_claimed_while_it_ran_hands_it_back(url: str) -> None:
    """A child dies in a task after short ones (so the next task was claimed while the task ran): that
    one is handed back uncounted at once (its lease is 30 s) and runs once; only the killer is charged."""
    q = Queue("ahead-killed")
    before = q.schedule_many(defer(tasks.sleep_then, 0.005, i) for i in range(10))
    killer = q.schedule(defer(tasks.kill_myself, 0.05), max_attempts=1)
    after = q.schedule_many(defer(tasks.sleep_then, 0.005, i + 100) for i in range(10))
    with worker(url, "ahead-killed", 1):
        t0 = time.monotonic()
        got = [q.wait(ref, timeout=20) for ref in [*before, *after]]
        assert time.monotonic() - t0 < 20
        died = q.wait(killer, timeout=20)
    assert died.state == "failed" and "SIGKILL" in died.reason
    assert [t.returnvalue for t in got] == list(range(10)) + [i + 100 for i in range(10)]
    assert all(t.attempts == 1 for t in got)


def test_a_claim_of_what_was_delivered_takes_only_that_and_leaves_running_tasks_alone(r: redis.Redis) -> None:
    """claim.lua's CLAIM_DELIVERED (the claim pipelined after a child's blocking read): it claims the
    entry the read delivered, not the next ready one, and keeps the pending entries of tasks the
    consumer runs (the reclaim sweep finds a lost task by them)."""
    q = Queue("delivered")
    refs = q.schedule_many(defer(tasks.add, i, 1) for i in range(3))
    s, k = ops.Scripts(r), QueueKeys("delivered")

    def delivered(token: str) -> ops.Claimed | None:
        got = ops.claim(s, k, ops.ClaimArgs("c1", token, 60_000, "h", "w", sid=schema.CLAIM_DELIVERED, now=None))
        assert not isinstance(got, ops.Skip)
        return got

    assert delivered("t0") is None  # nothing delivered: nothing claimed, nothing read
    assert q.counts()["ready"] == 3
    first = ops.claim(s, k, ops.ClaimArgs("c1", "t1", 60_000, "h", "w"))
    assert first is not None and first.id == refs[0].id
    r.xreadgroup(schema.GROUP, "c1", {k.stream: ">"}, count=1)  # delivers the second task's entry
    second = delivered("t2")
    assert second is not None and second.id == refs[1].id
    assert r.hget(k.task(second.id), schema.TASK_STARTED)  # the server's clock (no worker clock was sent)
    assert r.xpending(k.stream, schema.GROUP)["pending"] == 2  # the first one's entry is still pending
    assert q.get(refs[0]).state == "running" and q.get(refs[2]).state == "ready"
    assert delivered("t3") is None


def test_one_call_records_several_ends_each_fenced_by_its_own_token(r: redis.Redis) -> None:
    """complete_many: the ends a child's next claim carries, in one script call; each end is judged
    on its own (a stale token is refused, the others are kept), and each root is announced once."""
    q = Queue("ends")
    refs = q.schedule_many(defer(tasks.add, i, 1) for i in range(4))
    s, k = ops.Scripts(r), QueueKeys("ends")
    got = ops.claim_many(s, k, ops.ClaimArgs("c1", "tok", 60_000, "h", "w", count=4))
    token = [ops.claim_token("tok", i) for i in range(4)]
    kept = ops.complete_many(s, k, [
        ops.Completion(got[0].id, token[0], schema.DONE, result=codec.dumps(1)),
        ops.Completion(got[1].id, token[1], schema.FAILED, error=b"", reason="ValueError: no"),
        ops.Completion(got[2].id, "not-its-token", schema.DONE, result=b"\x80N."),
        ops.Completion(got[3].id, token[3], schema.RETRY, reason="again", delay=30)])
    assert kept == [True, True, False, True]
    assert [q.get(ref).state for ref in refs] == ["done", "failed", "running", "scheduled"]
    assert q.get(refs[0]).returnvalue == 1
    assert q.counts() == {"waiting": 0, "scheduled": 1, "ready": 0, "running": 1, "done": 1, "failed": 1}
    assert r.xlen(k.finished) == 2 and r.xpending(k.stream, schema.GROUP)["pending"] == 1
    assert ops.complete_many(s, k, [ops.Completion(got[2].id, token[2], schema.DONE, result=b"\x80N.")]) == [True]
    assert q.get(refs[2]).state == "done"


@pytest.mark.parametrize("per_call", [1, 1200])
def test_a_call_of_many_ends_leaves_what_as_many_calls_of_one_would(r: redis.Redis, per_call: int) -> None:
    """complete.lua writes the counts, zsets, lease deletions, stream acks and stats of a call's ends
    once per key at its end (include/later.lua), in slices past 1,000 items; a call of one end writes
    them at once. Either way each end's record, counters, indexes and statistics are exact."""
    n, name = 1200, f"many-ends-{per_call}"
    q = Queue(name)
    refs = q.schedule_many((defer(tasks.add, i, 1) for i in range(n)), result_ttl=3600)
    s, k = ops.Scripts(r), QueueKeys(name)
    got: list[ops.Claimed] = []
    while len(got) < n:
        token = f"tok{len(got)}"
        claimed = ops.claim_many(s, k, ops.ClaimArgs("c1", token, 60_000, "h", "w", count=8))
        for i, c in enumerate(claimed):
            c.token = ops.claim_token(token, i)
        got += claimed
    ends = [ops.Completion(c.id, c.token, schema.DONE if i % 2 == 0 else schema.FAILED, result=codec.dumps(i),
                           reason="" if i % 2 == 0 else "ValueError: odd", runtime=0.5, host="h", pid=4242)
            for i, c in enumerate(got)]
    kept = [kept for at in range(0, n, per_call) for kept in ops.complete_many(s, k, ends[at:at + per_call])]
    assert kept == [True] * n
    assert q.counts() == {"waiting": 0, "scheduled": 0, "ready": 0, "running": 0, "done": n // 2, "failed": n // 2}
    assert r.zcard(k.done) == n // 2 and r.zcard(k.failed) == n // 2 and r.zcard(k.expiry) == n
    assert r.exists(*(k.lease(c.id) for c in got)) == 0
    assert r.xlen(k.stream) == 0 and r.xpending(k.stream, schema.GROUP)["pending"] == 0
    assert r.xlen(k.finished) == n
    (st,) = q.stats().values()
    assert (st.runs, st.failed, st.samples) == (n, n // 2, 1000)  # the newest 1,000 samples read
    assert 1000 <= r.llen(k.stats_samples(st.name)) <= 1100  # trimmed back to 1,000 once it holds a tenth more
    assert [q.get(ref).state for ref in refs[:4]] == ["done", "failed", "done", "failed"]
    assert q.get(refs[2]).returnvalue == 2


def test_a_call_that_fails_at_an_end_keeps_every_write_of_the_ends_before_it(r: redis.Redis) -> None:
    """complete.lua gathers a call's counter, zset, lease and stream writes for its end (include/later.lua);
    should the script fail at one end, the ends before it are recorded whole all the same (the child then
    sends the call's ends again one by one: those read as refused, the others are recorded)."""
    q = Queue("bad-end")
    refs = q.schedule_many(defer(tasks.add, i, 1) for i in range(3))
    s, k = ops.Scripts(r), QueueKeys("bad-end")
    got = ops.claim_many(s, k, ops.ClaimArgs("c1", "tok", 60_000, "h", "w", count=3))
    ends = [ops.Completion(c.id, ops.claim_token("tok", i), schema.RETRY if i == 1 else schema.DONE,
                           result=codec.dumps(1), delay=5.0) for i, c in enumerate(got)]
    command = list(ops.complete_many.command(s, k, ends))
    argv = 3 + command[2]  # EVALSHA sha numkeys KEYS... ARGV...: ARGV[1] is command[argv]
    second = 3 + 1 + int(command[argv + 2])  # ARGV index of the second block's length: its fields follow
    command[argv + second - 1 + 12] = "not a number"  # its F[14], the retry delay: the script fails there
    with pytest.raises(redis.ResponseError):
        r.execute_command(*command)
    first = q.get(refs[0])
    assert first.state == "done" and first.returnvalue == 1
    assert q.counts() == {"waiting": 0, "scheduled": 0, "ready": 0, "running": 2, "done": 1, "failed": 0}
    assert r.zscore(k.done, got[0].id) is not None and not r.exists(k.lease(got[0].id))
    assert q.get(refs[2]).state == "running" and r.exists(k.lease(got[2].id))  # the end after it: untouched
    # (what the failing end itself wrote before the script stopped is what it wrote before gathering)
    assert r.xpending(k.stream, schema.GROUP)["pending"] == 1 and r.xlen(k.stream) == 1


def _held_ends(r: redis.Redis, name: str, n: int) -> tuple[Claims, list[tuple[int, ops.Completion, Slot]]]:
    """A child's Claims holding the ends of ``n`` tasks it claimed and ran (not recorded yet)."""
    q = Queue(name)
    q.schedule_many(defer(tasks.add, i, 1) for i in range(n))
    s, k = ops.Scripts(r), QueueKeys(name)
    lanes = SlotTable(1, 8).lanes(0)
    claims = Claims(r, s, [k], ops.ClaimArgs("c1", "tok", 60_000, "h", "w"), lanes, 0, lambda: None)
    got = ops.claim_many(s, k, ops.ClaimArgs("c1", "tok", 60_000, "h", "w", count=n))
    ends = []
    for i, c in enumerate(got):
        lane = claims.lane()
        lane.begin(0, c.id, ops.claim_token("tok", i), 1, 3)
        ends.append((0, ops.Completion(c.id, ops.claim_token("tok", i), schema.DONE, result=b"\x80N."), lane))
    return claims, ends


def test_ends_whose_call_the_server_refused_are_sent_again_one_by_one(r: redis.Redis) -> None:
    """A call of several ends refused outright (not for a transient reason) does not fail them all:
    each is sent on its own, and each is recorded."""
    claims, ends = _held_ends(r, "refused-call", 3)
    claims.settle(ends, [redis.ResponseError("ERR Error running script: boom")], claims.scripts)
    assert [Queue("refused-call").get(c.task_id).state for _, c, _ in ends] == ["done"] * 3
    assert len(claims.free) == 8 and not claims.ends


def test_ends_whose_call_met_a_transient_error_are_kept_for_the_next_round_trip(r: redis.Redis) -> None:
    claims, ends = _held_ends(r, "transient-call", 3)
    with pytest.raises(redis.ConnectionError):
        claims.settle(ends, [redis.ConnectionError("lost")], claims.scripts)
    assert [end[1].task_id for end in claims.ends] == [c.task_id for _, c, _ in ends]
    assert [Queue("transient-call").get(c.task_id).state for _, c, _ in ends] == ["running"] * 3
    claims.record(claims.scripts)  # the next round trip records them, in one call
    assert [Queue("transient-call").get(c.task_id).state for _, c, _ in ends] == ["done"] * 3
    assert len(claims.free) == 8 and not claims.ends


def test_a_blocking_read_for_work_is_named_by_its_consumer_and_a_stopping_worker_can_end_it(url: str) -> None:
    """An idle child's blocking read (its own connection, sent raw with the claims behind it) carries the
    consumer's name, so a stopping worker finds it (supervisor.unblock) and the child returns at once,
    having claimed nothing, instead of waiting out its block."""
    k = QueueKeys("idle")
    r = connect(url, check=False, socket_timeout=60, client_name="idle-c1")
    r.xgroup_create(k.stream, schema.GROUP, id="0", mkstream=True)
    claims = Claims(r, ops.Scripts(r), [k], ops.ClaimArgs("idle-c1", "", 60_000, "h", "w"), [Slot()], 0, lambda: None)
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(claims.wait(30_000)), daemon=True)
    started = time.monotonic()
    reader.start()
    other = redis.Redis.from_url(url)
    wait_for(lambda: any(c.get("name") == "idle-c1" and c.get("cmd") == "xreadgroup" for c in other.client_list()),
             timeout=10, what="the child's blocking read")
    unblock(other, {"idle-c1"}, time.monotonic())
    reader.join(timeout=10)
    assert got == [[]] and time.monotonic() - started < 10
