"""run-once's habits on forrestq: ``q.iterate`` (DistributedIterator), ``q.once`` (the ``run_once``
decorator), ``q.notify_success``/``q.notify_failure``, rewritten from the run-once README and tests,
plus regressions for its traps (no lease renewal, anybody's lock released, version collisions,
ASCII-only keys, claims made permanent by the default timeout).

Run as a script, this file is one of the looping processes of the multi-process tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from procs import worker_env

from forrestq import Queue, once
from forrestq.once import NotClaimed, Status


def keys_of(n: int) -> list[str]:
    return [f"clé-{i:03d}-ø✓" for i in range(n)]  # non-ASCII on purpose (run-once asserted ASCII)


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())  # one small write: atomic between processes
    finally:
        os.close(fd)


def _events(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split("\t")) for line in path.read_text(encoding="utf-8").splitlines()]


def loop_main(url: str, queue: str, logdir: str, n: int, lease: float, stall_at: int) -> None:
    """One process of the distributed loop: log each body's start and end; optionally stall forever
    in its ``stall_at``-th body (for the test to SIGKILL it there)."""
    q = Queue(queue, url)
    log = Path(logdir)
    pid = str(os.getpid())
    count = 0
    for key in q.iterate(keys_of(n), lease=lease):
        _append(log / "start", f"{key}\t{pid}")
        if count == stall_at:
            tmp = log / f"stalled.{pid}"
            tmp.write_text(key, encoding="utf-8")
            tmp.rename(log / "stalled")
            time.sleep(300)
        time.sleep(0.003)
        _append(log / "end", f"{key}\t{pid}")
        count += 1


def _spawn(url: str, queue: str, logdir: Path, n: int, lease: float, stall_at: int = -1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, url, queue, str(logdir), str(n), str(lease), str(stall_at)],
                            env=worker_env(), start_new_session=True)


def _reap(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)


# --- the distributed loop ------------------------------------------------------------------------


def test_three_processes_300_keys_each_body_once(url, tmp_path):
    procs = [_spawn(url, "once-3", tmp_path, 300, lease=5) for _ in range(3)]
    try:
        assert [p.wait(90) for p in procs] == [0, 0, 0]
    finally:
        _reap(procs)
    starts, ends = _events(tmp_path / "start"), _events(tmp_path / "end")
    assert sorted(k for k, _ in ends) == sorted(keys_of(300))  # every key, exactly once
    assert sorted(k for k, _ in starts) == sorted(keys_of(300))  # no body even started twice
    assert len({pid for _, pid in ends}) == 3  # the work was shared
    q = Queue("once-3")
    assert once.counts(q) == {"done": 300, "running": 0, "failed": 0, "expired": 0}
    assert list(q.iterate(keys_of(300), lease=5)) == []  # persistent: a re-run skips everything


def test_sigkilled_process_key_is_rerun_after_its_lease(url, tmp_path):
    lease = 1.0
    victim = _spawn(url, "once-kill", tmp_path, 300, lease, stall_at=10)
    others = [_spawn(url, "once-kill", tmp_path, 300, lease) for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "stalled").exists():
            assert time.monotonic() < deadline, "the victim never stalled"
            assert victim.poll() is None
            time.sleep(0.01)
        stalled = (tmp_path / "stalled").read_text(encoding="utf-8")
        os.killpg(victim.pid, signal.SIGKILL)  # mid-body: its lease is never released nor renewed
        victim.wait(10)
        assert [p.wait(90) for p in others] == [0, 0]  # they waited for the lease, then ran the key
    finally:
        _reap([victim, *others])
    starts, ends = _events(tmp_path / "start"), _events(tmp_path / "end")
    assert sorted(k for k, _ in ends) == sorted(keys_of(300))  # each body completed exactly once
    started_twice = sorted({k for k, _ in starts if sum(1 for s, _ in starts if s == k) > 1})
    assert started_twice == [stalled]  # only the killed body ran again
    (end_pid,) = [pid for k, pid in ends if k == stalled]
    assert end_pid != str(victim.pid)
    assert len(starts) == 301


# --- confirm / release semantics -------------------------------------------------------------------


def test_key_confirmed_when_the_loop_asks_for_the_next(url):
    q = Queue("once-confirm")
    seen = []
    for key in q.iterate(["a", "b"], lease=30):
        seen.append((key, once.status(q, "a"), once.status(q, "b")))
    assert seen == [("a", "running", "free"), ("b", "done", "running")]
    assert once.status(q, "b") == "done"  # the end of the loop confirms the last key


def test_exception_in_body_releases_at_once(url):
    q = Queue("once-raise")
    with pytest.raises(RuntimeError):
        for key in q.iterate(["a", "b", "c"], lease=60):
            if key == "b":
                raise RuntimeError("body failed")
    # recorded failed (issue 13: listable), and claimable again now, not after 60 s
    assert [once.status(q, k) for k in "abc"] == ["done", "failed", "free"]
    assert list(q.iterate(["a", "b", "c"], lease=60)) == ["b", "c"]


def test_break_releases_the_current_key_unless_notified(url):
    q = Queue("once-break")
    for key in q.iterate(["a", "b", "c"], lease=60):
        if key == "b":
            break
    assert [once.status(q, k) for k in "abc"] == ["done", "failed", "free"]  # a loop cannot tell break
    for key in q.iterate(["b", "c"], lease=60):
        q.notify_success(key)  # done before the break: say so
        break
    assert [once.status(q, k) for k in "bc"] == ["done", "free"]


def test_notify_failure_releases_at_once_and_only_our_claim(url):
    q = Queue("once-notify")
    for key in q.iterate(["x"], lease=60):
        assert once.status(q, key) == "running"
        assert q.notify_failure(key) is True
        assert once.status(q, key) == "failed"  # recorded (issue 13), and immediately claimable by anyone
        assert q.try_claim(key).release() and once.status(q, key) == "free"
        # run-once deleted anybody's lock: here another process's claim is never touched
        q.r.set(once.lease_key(q, key), "token of another process", px=60_000)
        assert q.notify_failure(key) is False and once.status(q, key) == "running"
        q.r.delete(once.lease_key(q, key))
    # the loop's confirm of a key settled in the body does nothing: it stays free
    assert once.status(q, "x") == "free"


def test_notify_success_duplicates_and_unclaimed(url):
    q = Queue("once-dup")
    for key in q.iterate(["k"], lease=60):
        q.notify_success(key)
        with pytest.raises(ValueError, match="completed more than once"):
            q.notify_success(key)
    with pytest.raises(NotClaimed):
        q.notify_success("never-claimed")
    assert q.notify_failure("never-claimed") is False


def test_version_bump_recomputes(url):
    q = Queue("once-version")
    assert list(q.iterate(["a", "b"])) == ["a", "b"]
    assert list(q.iterate(["a", "b"])) == []
    assert list(q.iterate(["a", "b"], version=1)) == ["a", "b"]
    # run-once's make_versioned_key collided: ("a_v001", v0) vs ("a", v1)
    assert list(q.iterate(["a_v001"], version=0)) == ["a_v001"]
    assert list(q.iterate(["a"], version=2)) == ["a"]


def test_keys_non_ascii_and_ints(url):
    q = Queue("once-keys")
    keys = [1, 2, "ü", "日本語", "\U00100000", "~", chr(255), "a b/c{d}"]
    assert list(q.iterate(keys)) == keys  # the original objects come back
    assert once.done_keys(q) == {str(k) for k in keys}
    with pytest.raises(TypeError):
        list(q.iterate([1.5]))
    with pytest.raises(ValueError):
        list(q.iterate(["k"], lease=0))  # run-once's default timeout=0 made every claim permanent


def test_one_pass_skips_keys_held_elsewhere(url):
    q = Queue("once-pass")
    started, release = threading.Event(), threading.Event()

    @q.once("b", lease=60)
    def hold():
        started.set()
        release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    started.wait(10)
    try:
        assert list(q.iterate(["a", "b", "c"], wait=False)) == ["a", "c"]
    finally:
        release.set()
        t.join()
    assert once.status(q, "b") == "done"


# --- the decorator ----------------------------------------------------------------------------------


def test_once_status_values(url):
    q = Queue("once-status")
    calls = []

    def work(x):
        calls.append(x)
        return x * 2

    assert q.once("k", lease=30)(work)(21) == (Status.COMPUTE_OK, 42)
    assert q.once("k", lease=30)(work)(21) == (Status.SKIP_OK, None)
    assert calls == [21]

    inside, release = threading.Event(), threading.Event()
    got = []

    @q.once("busy", lease=30)
    def slow():
        inside.set()
        release.wait(10)
        return "slow"

    t = threading.Thread(target=lambda: got.append(slow()))
    t.start()
    inside.wait(10)
    assert q.once("busy", lease=30)(work)(1) == (Status.SKIP_IN_PROGRESS, None)
    release.set()
    t.join()
    assert got == [(Status.COMPUTE_OK, "slow")]

    @q.once("err", lease=30)
    def fails():
        raise KeyError("nope")

    status, exc = fails()
    assert status is Status.COMPUTE_ERROR and isinstance(exc, KeyError)
    assert once.status(q, "err") == "failed"  # recorded failed at once (claimable), not at expiry
    with pytest.raises(KeyError):
        q.once("err", lease=30, suppress_exception=False)(fails.__wrapped__)()
    assert q.once("k", lease=30, version=1)(work)(5) == (Status.COMPUTE_OK, 10)  # version bump
    assert [s.value for s in Status] == [1, 2, 3, 4]  # run-once's values


def test_lease_is_renewed_while_a_long_body_runs(url):
    q = Queue("once-renew")
    observed = []
    for key in q.iterate(["long"], lease=0.5):
        for _ in range(4):  # 2 s: four times the lease
            time.sleep(0.5)
            observed.append(q.once(key, lease=0.5)(lambda: None)()[0])
    assert observed == [Status.SKIP_IN_PROGRESS] * 4  # never claimable while this process lives
    assert once.status(q, "long") == "done"


if __name__ == "__main__":
    loop_main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]))
