"""Exactly-once keys with run-once's full semantics (issue 13, item 8): ``timeout=`` claims that are
never renewed next to renewed ``lease=`` ones, the ``failed`` and ``expired`` states, listing by state
and prefix, ``try_claim`` (a context manager) and ``mark_done``, ``confirm="explicit"``, ``retries``
and ``at_most_every``; token fencing of a holder whose lease ended.

Several processes where the semantics need them: run as a script, this file is one of them
(``hold``: claim one key and wait; ``race``: a loop that confirms only some keys)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from helpers import wait_for
from procs import worker_env

from forrestq import ConfigError, KeyBusy, LeaseLost, LeaseLostWarning, Queue, once
from forrestq.once import Status

# ------------------------------------------------------------------------------ helper processes


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())  # one small write: atomic between processes
    finally:
        os.close(fd)


def hold_main(url: str, queue: str, logdir: str, key: str, kind: str, seconds: float) -> None:
    """Claim ``key`` (``kind`` "lease" or "timeout" of ``seconds``), say so, wait for the file ``go``
    (or for ever, to be killed), then try to confirm it and write what happened to ``result``."""
    q = Queue(queue, url)
    log = Path(logdir)
    held = q.try_claim(key, **{kind: seconds})
    (log / "claimed.tmp").write_text(json.dumps({"held": held.held, "pid": os.getpid()}))
    (log / "claimed.tmp").rename(log / "claimed")
    deadline = time.monotonic() + 120
    while not (log / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        held.done()
        result = "done"
    except (LeaseLost, ValueError) as exc:
        result = f"{type(exc).__name__}: {exc}"
    (log / "result.tmp").write_text(result)
    (log / "result.tmp").rename(log / "result")


def race_main(url: str, queue: str, logdir: str, n: int) -> None:
    """A loop with ``confirm="explicit"``: confirms the even keys only; logs each body's start."""
    q = Queue(queue, url)
    log = Path(logdir)
    _append(log / "ready", str(os.getpid()))
    deadline = time.monotonic() + 60
    while not (log / "go").exists() and time.monotonic() < deadline:  # start together
        time.sleep(0.01)
    for key in q.iterate(range(n), lease=5, confirm="explicit"):
        _append(log / "start", f"{key}\t{os.getpid()}")
        time.sleep(0.002)
        if key % 2 == 0:
            q.notify_success(key)


def _spawn(*args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *map(str, args)], env=worker_env(), start_new_session=True)


def _reap(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)


def _claimed(logdir: Path, proc: subprocess.Popen) -> dict:
    def ready() -> bool:
        assert proc.poll() is None, "the holder exited early"
        return (logdir / "claimed").exists()

    wait_for(ready, timeout=30, what="the holder's claim")
    return json.loads((logdir / "claimed").read_text())


def _record(q: Queue, key: str) -> once.KeyRecord:
    (rec,) = [r for r in q.once_keys() if r.key == key]
    return rec


# --------------------------------------------------------------- timeout (not renewed) vs lease


def test_a_timeout_is_not_renewed_the_key_goes_to_another_process_and_the_late_holder_cannot_confirm(
        url, tmp_path):
    q = Queue("ok-timeout")
    holder = _spawn("hold", url, "ok-timeout", tmp_path, "k", "timeout", 1.0)
    try:
        assert _claimed(tmp_path, holder)["held"]
        assert q.try_claim("k").skipped == "running"
        # the holder lives and its body still runs, but nobody renews a timeout: it expires
        wait_for(lambda: once.status(q, "k") == "expired", timeout=10, what="the timeout to pass")
        rec = _record(q, "k")
        assert (rec.state, rec.renewed, rec.pid, rec.attempts) == ("expired", False, holder.pid, 1)
        assert rec.settled_at == rec.lease_until  # expired when its timeout ended
        ours = q.try_claim("k", timeout=30)  # another process takes it over
        assert ours
        (tmp_path / "go").touch()  # now the first holder's body "finishes" and tries to confirm
        wait_for(lambda: (tmp_path / "result").exists(), timeout=30, what="the holder's result")
        assert holder.wait(10) == 0
        assert once.status(q, "k") == "running"  # the stale holder changed nothing
        ours.done()
    finally:
        _reap([holder])
    assert (tmp_path / "result").read_text() == (
        "LeaseLost: once key 'k': its timeout (1 s) ended before the body finished here, and another process "
        "holds it now; it was not marked done here (it may run again elsewhere)")
    rec = _record(q, "k")
    assert (rec.state, rec.pid, rec.attempts) == ("done", os.getpid(), 2)  # ours stands: fenced


def test_a_lease_is_renewed_while_its_process_lives(url, tmp_path):
    q = Queue("ok-lease")
    holder = _spawn("hold", url, "ok-lease", tmp_path, "k", "lease", 0.5)
    try:
        assert _claimed(tmp_path, holder)["held"]
        first = _record(q, "k").lease_until
        # the renewer moves the lease end forward: four lease periods later it still holds the key
        wait_for(lambda: _record(q, "k").lease_until >= first + 2.0, timeout=10, what="four renewals")
        assert q.try_claim("k").skipped == "running" and once.status(q, "k") == "running"
        (tmp_path / "go").touch()
        assert holder.wait(30) == 0
    finally:
        _reap([holder])
    assert (tmp_path / "result").read_text() == "done"
    assert _record(q, "k").state == "done" and _record(q, "k").renewed


def test_a_sigkilled_holder_key_expires_after_its_lease_and_is_taken_by_another(url, tmp_path):
    q = Queue("ok-kill")
    holder = _spawn("hold", url, "ok-kill", tmp_path, "k", "lease", 1.0)
    try:
        assert _claimed(tmp_path, holder)["held"]
        os.killpg(holder.pid, signal.SIGKILL)  # mid-body: no release, no renewal
        holder.wait(10)
        wait_for(lambda: [r.key for r in q.once_keys(state="expired")] == ["k"], timeout=10,
                 what="the dead holder's key to expire")
        rec = _record(q, "k")
        assert (rec.pid, rec.renewed, rec.attempts) == (holder.pid, True, 1)
        assert q.once_counts() == {"running": 0, "done": 0, "failed": 0, "expired": 1}
        assert list(q.iterate(["k"])) == ["k"]  # taken by another process
    finally:
        _reap([holder])
    rec = _record(q, "k")
    assert (rec.state, rec.pid, rec.attempts) == ("done", os.getpid(), 2)


def test_a_process_exiting_with_a_key_held_records_it_failed(url, tmp_path):
    code = ("import sys; from forrestq import Queue; q = Queue('ok-exit', sys.argv[1]); "
            "held = q.try_claim('k'); assert held; raise SystemExit(3)")
    assert subprocess.run([sys.executable, "-c", code, url], env=worker_env(), timeout=60).returncode == 3
    rec = _record(Queue("ok-exit"), "k")
    assert (rec.state, rec.reason) == ("failed", "the process exited while the body ran")


# ------------------------------------------------------------------------ explicit confirmation


def test_two_processes_explicit_confirm_only_notified_keys_are_done(url, tmp_path):
    procs = [_spawn("race", url, "ok-race", tmp_path, 200) for _ in range(2)]
    try:
        wait_for(lambda: len((tmp_path / "ready").read_text().split()) == 2 if (tmp_path / "ready").exists()
                 else False, timeout=30, what="both loops to start")
        (tmp_path / "go").touch()
        assert [p.wait(90) for p in procs] == [0, 0]
    finally:
        _reap(procs)
    starts = [line.split("\t") for line in (tmp_path / "start").read_text().splitlines()]
    evens = [k for k, _ in starts if int(k) % 2 == 0]
    assert sorted(evens, key=int) == [str(i) for i in range(0, 200, 2)]  # each confirmed body ran once
    q = Queue("ok-race")
    assert once.done_keys(q) == {str(i) for i in range(0, 200, 2)}
    assert {once.status(q, i) for i in range(1, 200, 2)} == {"free"}  # skipped keys are not done
    assert len({pid for _, pid in starts}) == 2


def test_explicit_confirm_in_one_loop(url):
    q = Queue("ok-explicit")
    for key in q.iterate(["a", "b", "c"], confirm="explicit"):
        if key == "b":
            q.notify_success(key)
    assert [once.status(q, k) for k in "abc"] == ["free", "done", "free"]
    assert list(q.iterate(["a", "b", "c"])) == ["a", "c"]  # the default: the next key confirms
    assert once.done_keys(q) == {"a", "b", "c"}


# ---------------------------------------------------------------------------- failed and retries


def test_failed_keys_are_recorded_listed_and_claimed_again(url):
    q = Queue("ok-failed")

    @q.once("boom")
    def boom():
        raise KeyError("nope")

    assert boom()[0] is Status.COMPUTE_ERROR
    for key in q.iterate(["told"]):
        assert q.notify_failure(key, reason="bad input file") is True
    failed = q.once_keys(state="failed")
    assert [(r.key, r.reason, r.attempts, r.pid) for r in failed] == [
        ("boom", "KeyError: 'nope'", 1, os.getpid()), ("told", "bad input file", 1, os.getpid())]
    assert all(r.settled_at and r.claimed_at and r.settled_at >= r.claimed_at for r in failed)
    assert list(q.iterate(["boom", "told"])) == ["boom", "told"]  # failed keys run again
    assert [(r.key, r.state, r.attempts, r.reason) for r in q.once_keys()] == [
        ("boom", "done", 2, ""), ("told", "done", 2, "")]


def test_retries_run_a_key_that_failed_in_this_loop_again(url):
    q = Queue("ok-retries")
    seen = []
    for key in q.iterate(["x", "y"], retries=2, poll=0.01):
        seen.append(key)
        if key == "x" and seen.count("x") < 3:
            q.notify_failure(key)
    assert seen == ["x", "y", "x", "x"]
    assert once.done_keys(q) == {"x", "y"}
    seen.clear()
    for key in q.iterate(["z"], retries=1, poll=0.01):
        seen.append(key)
        q.notify_failure(key)
    assert seen == ["z", "z"] and once.status(q, "z") == "failed"  # retries used up: left failed


def test_an_exception_in_the_loop_records_the_key_failed(url):
    q = Queue("ok-raise")
    with pytest.raises(RuntimeError):
        for _ in q.iterate(["a"]):
            raise RuntimeError("body failed")
    (rec,) = q.once_keys()
    assert (rec.state, rec.reason) == ("failed", "the loop stopped in its body (an exception or break)")


# ------------------------------------------------------------------------------ one key, no loop


def test_try_claim_as_a_context_manager(url):
    q = Queue("ok-claim")
    with q.try_claim("k") as held:
        assert held and held.skipped == ""
        assert once.status(q, "k") == "running"
        assert not q.try_claim("k") and q.try_claim("k").skipped == "running"  # one holder
    assert once.status(q, "k") == "done"
    assert q.try_claim("k").skipped == "done"
    with pytest.raises(ValueError, match="bad"):
        with q.try_claim("e") as held:
            assert held
            raise ValueError("bad")
    assert _record(q, "e").reason == "ValueError: bad"
    held = q.try_claim("r")
    assert held.release() is True and once.status(q, "r") == "free"
    held = q.try_claim("f")
    assert held.fail("no data") is True and _record(q, "f").reason == "no data"
    with pytest.raises(once.NotClaimed):
        held.done()  # settled already


def test_a_holder_whose_lease_ended_cannot_confirm(url):
    q = Queue("ok-fence")
    old = q.try_claim("k", timeout=0.2)
    assert old
    wait_for(lambda: once.status(q, "k") == "expired", timeout=10, what="the timeout to pass")
    new = q.try_claim("k", timeout=30)
    assert new
    with pytest.raises(LeaseLost, match="another process holds it now"):
        old.done()
    assert once.status(q, "k") == "running"  # untouched by the stale holder
    new.done()
    assert once.status(q, "k") == "done"
    with warnings.catch_warnings(record=True) as caught:  # implicit confirmation: warned, not confirmed
        warnings.simplefilter("always")
        for _ in q.iterate(["late"], timeout=0.2):
            wait_for(lambda: once.status(q, "late") == "expired", timeout=10, what="the timeout to pass")
    assert len([w for w in caught if w.category is LeaseLostWarning]) == 1
    assert once.status(q, "late") == "expired"


def test_mark_done_without_running(url, tmp_path):
    q = Queue("ok-mark")
    assert q.mark_done("m") is True and q.mark_done("m") is False
    assert list(q.iterate(["m", "n"])) == ["n"]
    rec = _record(q, "m")
    assert (rec.state, rec.attempts, rec.pid) == ("done", 0, os.getpid())
    with q.try_claim("mine") as held:
        assert held and q.mark_done("mine") is True  # a key held here: confirmed through its claim
    holder = _spawn("hold", url, "ok-mark", tmp_path, "busy", "lease", 30)
    try:
        assert _claimed(tmp_path, holder)["held"]
        with pytest.raises(KeyBusy):
            q.mark_done("busy")
        assert once.status(q, "busy") == "running"  # nothing changed
    finally:
        _reap([holder])


def test_forget_keys_makes_done_keys_run_again(url):
    q = Queue("ok-forget")
    assert list(q.iterate(["a1", "a2", "b1"])) == ["a1", "a2", "b1"]
    assert q.forget_keys(prefix="a") == 2
    assert list(q.iterate(["a1", "a2", "b1"])) == ["a1", "a2"]
    assert q.forget_keys(["b1", "nope"]) == 1 and once.status(q, "b1") == "free"


# ---------------------------------------------------------------------------------- at_most_every


def test_at_most_every_skips_a_recent_key_and_runs_an_older_one(url):
    q = Queue("ok-every")
    calls = []

    def work():
        calls.append(time.monotonic())
        return len(calls)

    assert q.once("k", at_most_every=0.5)(work)() == (Status.COMPUTE_OK, 1)
    assert q.once("k", at_most_every=0.5)(work)() == (Status.SKIP_OK, None)  # done 0 s ago
    assert q.once("k")(work)() == (Status.SKIP_OK, None)  # without it: done for good
    got = wait_for(lambda: (lambda r: r if r[0] is Status.COMPUTE_OK else None)(
        q.once("k", at_most_every=0.5)(work)()), timeout=10, interval=0.05, what="the key to be due again")
    assert got == (Status.COMPUTE_OK, 2) and calls[1] - calls[0] >= 0.5
    assert list(q.iterate(["k"], at_most_every=3600)) == []
    assert _record(q, "k").attempts == 2


# ----------------------------------------------------------------------------- listing by prefix


def test_listing_by_state_and_prefix_reads_indexes_not_the_keyspace(url, r):
    q = Queue("ok-list")
    delims = list(dict.fromkeys(["\U00100000", "ÿ", "~", chr(127), chr(255), chr(256), chr(1000), "ø"]))
    for d in delims:
        for i in range(3):
            q.mark_done(f"pre{d}{i}")
    for key in ["pre", "pr", "prf", "other"]:
        q.mark_done(key)
    for key in q.iterate(["pre-failed"]):
        q.notify_failure(key)
    held = q.try_claim("pre-running")
    r.config_resetstat()
    for d in delims:
        got = [rec.key for rec in q.once_keys(prefix=f"pre{d}")]
        assert got == [f"pre{d}{i}" for i in range(3)]
    listed = q.once_keys(prefix="pre")
    assert len(listed) == 3 * len(delims) + 3  # "pre" itself, the failed and the running key
    assert [rec.key.encode() for rec in listed] == sorted(rec.key.encode() for rec in listed)
    assert [(rec.key, rec.state) for rec in q.once_keys(state=["failed", "running"], prefix="pre")] == [
        ("pre-failed", "failed"), ("pre-running", "running")]
    assert [rec.key for rec in q.once_keys(state="done", limit=2)] == ["other", "pr"]
    assert q.once_counts() == {"running": 1, "done": 3 * len(delims) + 4, "failed": 1, "expired": 0}
    stats = r.info("commandstats")
    assert not [c for c in stats if c in ("cmdstat_scan", "cmdstat_keys")]  # no keyspace scan
    assert "cmdstat_zrangebylex" in stats
    held.done()
    with pytest.raises(ConfigError, match="state must be one of"):
        q.once_keys(state="free")


def test_bad_input_is_refused_at_the_call_and_claims_nothing(url):
    q = Queue("ok-bad")
    for kwargs in [{"lease": 5, "timeout": 5}, {"timeout": 0}, {"at_most_every": -1}, {"confirm": "always"},
                   {"retries": -1}, {"lease": float("nan")}]:
        with pytest.raises(ConfigError):
            q.iterate(["a"], **kwargs)
    with pytest.raises(ConfigError):
        q.try_claim("a", lease=1, timeout=1)
    with pytest.raises(ConfigError):
        q.once("a", timeout=-1)
    with pytest.raises(TypeError):
        q.mark_done(1.5)
    assert q.once_counts() == {"running": 0, "done": 0, "failed": 0, "expired": 0}


if __name__ == "__main__":
    role, rest = sys.argv[1], sys.argv[2:]
    if role == "hold":
        hold_main(rest[0], rest[1], rest[2], rest[3], rest[4], float(rest[5]))
    elif role == "race":
        race_main(rest[0], rest[1], rest[2], int(rest[3]))
