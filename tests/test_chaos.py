"""Chaos tests: nothing is lost, whatever dies. Real server, real worker processes, real signals.

Each test prints its figures (``pytest -s tests/test_chaos.py`` shows them)."""
from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import redis
import tasks
from helpers import wait_for
from procs import alive, child_pids, spawn_worker, stop, worker

from forrestq import Queue, defer
from forrestq.schema import QueueKeys
from forrestq.server import ServerProcess

FAST = ("--lease", "1", "--grace", "0")  # heartbeat and sweep every 1/3 s; stop at once


def parse_log(path: Path) -> tuple[list[tuple[int, int, float]], list[tuple[int, int, float]]]:
    """(starts, ends) of tasks.chaos_work executions: (task number, pid, time)."""
    starts, ends = [], []
    for line in path.read_text().splitlines() if path.exists() else ():
        kind, i, pid, t = line.split()
        (starts if kind == "start" else ends).append((int(i), int(pid), float(t)))
    return starts, ends


def ends_count(path: Path) -> int:
    return len(parse_log(path)[1])


def held_by(pid: int, at: float, starts, ends) -> list[int]:
    """Task numbers process pid was running when it was killed at time ``at`` (it may still have
    finished one just after ``at``: the kill is not instant)."""
    began = [i for i, p, t in starts if p == pid and t <= at]
    finished = {i for i, p, t in ends if p == pid}
    return [i for i in began if i not in finished]


def restarted_after(i: int, at: float, starts) -> float | None:
    later = [t for j, _, t in starts if j == i and t > at]
    return min(later) - at if later else None


def check_recorded_once(q: Queue, r: redis.Redis, refs, got, n: int) -> None:
    """Every task done with its own value, yielded once, finished once."""
    k = QueueKeys(q.name)
    assert len(got) == n and len({t.id for t in got}) == n
    assert sorted(t.id for t in got) == sorted(ref.id for ref in refs)
    values = {t.id: t.returnvalue for t in got}
    assert all(t.state == "done" for t in got)
    assert [values[ref.id] for ref in refs] == list(range(n))
    assert q.counts() == {"waiting": 0, "scheduled": 0, "ready": 0, "running": 0, "done": n, "failed": 0}
    assert r.xlen(k.finished) == n  # one completion recorded per task, never two
    assert r.zcard(k.done) == n and r.zcard(k.todo) == 0


# --- 1 -----------------------------------------------------------------------------------------
def test_chaos_1_sigkill_random_worker_processes(url, r, tmp_path):
    seed = int(os.environ.get("CHAOS_SEED", "4"))
    rng = random.Random(seed)
    n = 500
    log = tmp_path / "executions"
    q = Queue("chaos1", max_attempts=20)  # a task may be hit more than 3 times; none may fail
    refs = q.schedule_many(defer(tasks.chaos_work, str(log), i, rng.uniform(0.01, 0.2)) for i in range(n))
    wlog = tmp_path / "workers.log"
    workers = [spawn_worker(url, "chaos1", 2, *FAST, log=wlog) for _ in range(3)]
    kills: list[tuple[float, str, int, list[int]]] = []  # (time, "worker"|"child", pid, victims)
    # tasks a kill interrupted -> (kind, kill time, token then); and how long until each was back
    # in the queue (handed back or reclaimed: no longer running under the dead process's token)
    watch: dict[int, tuple[str, float, bytes | None]] = {}
    requeued: list[tuple[str, float]] = []

    def poll(until: float, pace: bool = True) -> None:
        while watch and time.monotonic() < until:
            for i, (kind, at, tok) in list(watch.items()):
                st, now_tok = r.hmget(k.task(refs[i].id), "st", "tok")
                if st != b"running" or now_tok != tok:
                    requeued.append((kind, time.time() - at))
                    del watch[i]
            time.sleep(0.01)
        if pace:
            time.sleep(max(0.0, until - time.monotonic()))

    k = QueueKeys("chaos1")
    t0 = time.monotonic()
    try:
        wait_for(lambda: ends_count(log) >= 10, timeout=30, what="the first tasks to finish")
        for _ in range(10):
            poll(time.monotonic() + 1.0)  # the pace of the chaos: one kill a second
            live = [w for w in workers if w.poll() is None]
            choices = [("worker", w.pid, w) for w in live]
            choices += [("child", c, w) for w in live for c in child_pids(w.pid)]
            kind, pid, owner = rng.choice(choices)
            victims = child_pids(pid) if kind == "worker" else [pid]
            starts, ends = parse_log(log)
            held = [i for v in victims for i in held_by(v, time.time(), starts, ends)]
            toks = [r.hget(k.task(refs[i].id), "tok") for i in held]
            kills.append((time.time(), kind, pid, victims))
            os.kill(pid, signal.SIGKILL)
            watch.update({i: (kind, time.time(), tok) for i, tok in zip(held, toks)})
            if kind == "worker":
                owner.wait(5)
                workers.remove(owner)
                workers.append(spawn_worker(url, "chaos1", 2, *FAST, log=wlog))
        poll(time.monotonic() + 10, pace=False)
        assert not watch, f"tasks never handed back or reclaimed: {sorted(watch)}"
        got = list(q.results(timeout=60))
        elapsed = time.monotonic() - t0
    finally:
        for w in workers:
            stop(w)
    check_recorded_once(q, r, refs, got, n)
    starts, ends = parse_log(log)
    assert {i for i, _, _ in ends} == set(range(n))  # every task ran to its end at least once
    recoveries, lost = [], 0
    for at, kind, pid, victims in kills:
        for victim in victims:
            for i in held_by(victim, at, starts, ends):
                lost += 1
                back = restarted_after(i, at, starts)
                assert back is not None, f"task {i}, held by killed {kind} {pid}, never ran again"
                recoveries.append((kind, back))
    attempts = [t.attempts for t in got]
    print(f"\nchaos 1 (seed {seed}): {n} tasks scheduled, {sum(t.state == 'done' for t in got)} done, "
          f"{sum(t.state == 'failed' for t in got)} failed, in {elapsed:.1f} s")
    print(f"  kills: {sum(k[1] == 'worker' for k in kills)} workers (with their children), "
          f"{sum(k[1] == 'child' for k in kills)} children; {lost} running tasks interrupted")
    print(f"  executions: {len(starts)} started, {len(ends)} ran to their end "
          f"({len(ends) - n} more than tasks: at-least-once); each result recorded once")
    print(f"  attempts per task: max {max(attempts)}, {sum(a > 1 for a in attempts)} tasks ran more than once")
    for kind in ("child", "worker"):
        back = [b for what, b in requeued if what == kind]
        again = [b for what, b in recoveries if what == kind]
        if back:
            print(f"  recovery after a {kind} kill: its task back in the queue after mean "
                  f"{sum(back) / len(back):.2f} s, max {max(back):.2f} s ({len(back)} tasks); running "
                  f"again (behind the queue's backlog) after mean {sum(again) / len(again):.2f} s, "
                  f"max {max(again):.2f} s")


# --- 2 -----------------------------------------------------------------------------------------
def test_chaos_2_hang_is_autokilled_and_grandchildren_are_gone(url, tmp_path):
    q = Queue("chaos2")
    pidfile = tmp_path / "pids"
    ref = q.schedule(defer(tasks.start_sleepers, str(pidfile), 3))
    with worker(url, "chaos2", 1, *FAST, "--autokill", "1") as proc:
        text = wait_for(lambda: pidfile.exists() and pidfile.read_text(), timeout=20, what="the sleepers")
        sleepers = [int(p) for p in text.split()]
        assert all(alive(p) for p in sleepers)
        task = q.wait(ref, timeout=20)
        assert task.state == "failed" and task.reason == "killed after 1 s (worker --autokill)"
        assert "TaskKilled" in type(task.errorvalue).__name__
        wait_for(lambda: not any(alive(p) for p in sleepers), timeout=5, what="the sleepers to be gone")
        gone_at = time.time()
        after = q.wait(q.schedule(defer(tasks.identity, "alive")), timeout=20)
        assert after.returnvalue == "alive" and proc.poll() is None
    print(f"\nchaos 2: hung task failed {task.finished - task.started:.2f} s after it started "
          f"({task.reason!r}); its {len(sleepers)} `sleep 1000` grandchildren gone "
          f"{gone_at - task.finished:.2f} s later at most; the worker ran the next task")


# --- 3 -----------------------------------------------------------------------------------------
def test_chaos_3_crash_zoo(url, tmp_path):
    q = Queue("chaos3")
    forks = tmp_path / "forks"
    zoo = [
        ("segfault", defer(tasks.segfault), lambda t: t.reason == "killed by signal 11 (SIGSEGV)"),
        ("os._exit(3)", defer(tasks.exit_now, 3),
         lambda t: t.reason == "the process running the task exited with code 3"),
        ("memory bomb", defer(tasks.memory_bomb, 4096), lambda t: t.reason.startswith("MemoryError")),
        ("fork of 50 sleepers", defer(tasks.fork_sleepers, str(forks), 50),
         lambda t: t.reason == "RuntimeError: forked 50 sleeping children"),
        ("10 MB of output", defer(tasks.shout, 10),
         lambda t: t.reason == "RuntimeError: shouted" and t.output.endswith("THE END\n")
         and 60_000 < len(t.output) <= 64 * 1024),
        ("unpicklable return value", defer(tasks.unpicklable_result),
         lambda t: t.reason.startswith("could not serialise the return value:") and "generator" in t.reason),
        ("SIGKILL (as by the OOM killer)", defer(tasks.kill_myself),
         lambda t: t.reason.startswith("killed by signal 9 (SIGKILL) (not by this worker: out of memory, or an "
                                       "operator? peak ") and t.reason.endswith("; attempt 3 of 3")),
    ]
    rows = []
    with worker(url, "chaos3", 1, *FAST, "--max-memory", "200M") as proc:
        for name, tree, check in zoo:
            t0 = time.monotonic()
            task = q.wait(q.schedule(tree), timeout=60)
            took = time.monotonic() - t0
            assert task.state == "failed" and check(task), (name, task.reason)
            normal = q.wait(q.schedule(defer(tasks.add, 20, 22)), timeout=20)
            assert normal.state == "done" and normal.returnvalue == 42, name
            assert proc.poll() is None
            rows.append((name, task.reason, took))
        pids = [int(p) for p in forks.read_text().split()]
        wait_for(lambda: not any(alive(p) for p in pids), timeout=5, what="the 50 forks to be gone")
    print("\nchaos 3: each crash ends failed; the same worker then runs a normal task")
    for name, reason, took in rows:
        print(f"  {name:32} {took:5.2f} s  {reason[:90]}")


# --- 4 -----------------------------------------------------------------------------------------
def test_chaos_4_redis_killed_for_5_s_and_restarted_from_its_aof(tmp_path, monkeypatch):
    srv = ServerProcess(tmp_path / "srv", appendfsync="always").start()
    monkeypatch.setenv("FORRESTQ_URL", srv.url)
    rng = random.Random(4)
    n = 300
    log = tmp_path / "executions"
    marks: dict[str, float] = {}
    try:
        q = Queue("chaos4")
        refs = q.schedule_many(defer(tasks.chaos_work, str(log), i, rng.uniform(0.01, 0.1)) for i in range(n))

        def outage() -> None:
            wait_for(lambda: ends_count(log) >= n // 4, timeout=60, what="a quarter of the tasks")
            marks["done_before"] = q.counts()["done"]
            marks["kill"] = time.time()
            srv.kill()
            time.sleep(5.0)  # the outage
            marks["restart"] = time.time()
            srv.start()
            marks["up"] = time.time()

        killer = threading.Thread(target=outage)
        wlogs = [tmp_path / f"worker{i}.log" for i in range(2)]
        with worker(srv.url, "chaos4", 2, *FAST, log=wlogs[0]), \
                worker(srv.url, "chaos4", 2, *FAST, log=wlogs[1]):
            t0 = time.monotonic()
            killer.start()
            got = list(q.results(timeout=90))  # rides out the outage
            elapsed = time.monotonic() - t0
            killer.join(30)
        r = redis.Redis.from_url(srv.url)
        check_recorded_once(q, r, refs, got, n)
        r.close()
    finally:
        srv.stop()
    starts, ends = parse_log(log)
    assert {i for i, _, _ in ends} == set(range(n))
    during = [t for _, _, t in ends if marks["kill"] < t < marks["up"]]
    first_after = min(t for _, _, t in ends if t > marks["up"]) - marks["up"]
    done_after = min(task.finished for task in got if task.finished > marks["up"]) - marks["up"]
    print(f"\nchaos 4: {n} tasks scheduled, {sum(t.state == 'done' for t in got)} done, "
          f"{sum(t.state == 'failed' for t in got)} failed, in {elapsed:.1f} s; Redis SIGKILLed after "
          f"{marks['done_before']} were recorded, down {marks['up'] - marks['kill']:.1f} s, restarted from "
          f"its AOF (appendfsync always)")
    print(f"  executions: {len(starts)} started, {len(ends)} ran to their end ({len(during)} ended during "
          f"the outage), {len(ends) - n} more than tasks; each result recorded once")
    print(f"  after the restart: first task ended {first_after:.2f} s later, first result recorded "
          f"{done_after:.2f} s later; max attempts {max(t.attempts for t in got)}")
    print(f"  results() kept reading through the outage: {len(got)} tasks yielded, each once")


# --- 5 -----------------------------------------------------------------------------------------
def test_chaos_5_a_stale_worker_cannot_overwrite_the_newer_attempt(url, r, tmp_path):
    q = Queue("chaos5")
    k = QueueKeys("chaos5")
    ref = q.schedule(defer(tasks.whoami, 1.5))
    log_a = tmp_path / "a.log"
    a = spawn_worker(url, "chaos5", 1, *FAST, env={"FORRESTQ_HOST": "hostA"}, log=log_a)
    b = None
    try:
        wait_for(lambda: q.get(ref).state == "running", timeout=20, what="A to start the task")
        token_a = r.hget(k.task(ref.id), "tok")
        (child_a,) = child_pids(a.pid)
        os.kill(a.pid, signal.SIGSTOP)  # the whole worker freezes (a paused VM, a long GC, ...)
        os.kill(child_a, signal.SIGSTOP)
        stopped = time.monotonic()
        b = spawn_worker(url, "chaos5", 1, *FAST, env={"FORRESTQ_HOST": "hostB"})
        task = q.wait(ref, timeout=30)
        taken_over = time.monotonic() - stopped
        assert task.state == "done" and task.host == "hostB" and task.returnvalue[0] == "hostB"
        token_b = r.hget(k.task(ref.id), "tok")
        assert token_b != token_a
        os.kill(child_a, signal.SIGCONT)  # A's child wakes up, finishes its attempt, tries to record it
        wait_for(lambda: f"result of task {ref.id} refused" in log_a.read_text(), timeout=20,
                 what="A's write to be refused")
        os.kill(a.pid, signal.SIGCONT)
        again = q.get(ref)
        assert again.state == "done" and again.host == "hostB" and again.returnvalue == task.returnvalue
        assert again.attempts == 2 and r.hget(k.task(ref.id), "tok") == token_b
        assert r.xlen(k.finished) == 1 and q.counts()["done"] == 1
        assert a.poll() is None  # A carries on
        after = q.schedule_many(defer(tasks.identity, i) for i in range(4))
        assert [q.wait(x, timeout=20).returnvalue for x in after] == list(range(4))
    finally:
        for p in (a, b):
            if p is not None:
                for pid in [p.pid, *child_pids(p.pid)]:
                    try:
                        os.kill(pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
                stop(p)
    print(f"\nchaos 5: worker A (token {token_a.decode()}) frozen with SIGSTOP; worker B took the task "
          f"over and recorded it {taken_over:.2f} s later (token {token_b.decode()}, attempt 2); "
          f"A's late write was refused; the record is B's: {again.returnvalue[0]}")


# --- 6 -----------------------------------------------------------------------------------------
def test_chaos_6_a_garbage_payload_fails_and_the_worker_carries_on(url, r):
    q = Queue("chaos6")
    k = QueueKeys("chaos6")
    bad = q.schedule(defer(tasks.identity, "never"))
    good = q.schedule(defer(tasks.identity, "fine"))
    garbage = b"\x00\xffnot a pickle\x13\x37" * 4
    r.hset(k.task(bad.id), "a", garbage)
    with worker(url, "chaos6", 1, *FAST) as proc:
        task = q.wait(bad, timeout=20)
        assert task.state == "failed" and task.reason.startswith("could not load task payload"), task.reason
        assert q.wait(good, timeout=20).returnvalue == "fine"
        after = q.wait(q.schedule(defer(tasks.add, 1, 2)), timeout=20)
        assert after.returnvalue == 3 and proc.poll() is None
    print(f"\nchaos 6: {len(garbage)} garbage bytes as a payload: failed with {task.reason!r}; the worker "
          "ran the next 2 tasks")
