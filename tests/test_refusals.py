"""Tasks a host cannot load while another host might (issue 12): a module missing on one host, a worker
with another secret. The rule: the refusing host hands the task back unrun (attempt not counted) and
is recorded on the task; the task fails, naming the hosts, only once every live worker host serving
its queue has refused it, or 3 distinct hosts have. A worker whose secret differs from the other
workers' stops claiming after 3 such refusals and says why.

refuse.lua is tested through its Op on the test server; the rest with real worker processes (distinct
FORRESTQ_HOST names), every wait bounded."""
from __future__ import annotations

import importlib
import os
import sys
import time
import uuid
from pathlib import Path

import pytest
import tasks
from helpers import wait_for
from procs import ROOT, worker

from forrestq import Queue, defer, ops, schema, signing
from forrestq.schema import QueueKeys
from forrestq.worker.peers import live_peers

FAST = ("--lease", "1")
SECRET = "correct horse battery staple"
OTHER = "another secret entirely"


pytestmark = pytest.mark.usefixtures("no_secret")  # tests/conftest.py: start and end without a secret


@pytest.fixture
def only_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A task module in a directory of its own (a fresh name per test): this process imports it (so
    its functions travel by reference); a worker has it only if given ``with_module(env)``."""
    name = f"fq_only_here_{uuid.uuid4().hex[:8]}"
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / f"{name}.py").write_text(
        "import os, time\n\n"
        "def where(seconds=0.0):\n"
        "    time.sleep(seconds)\n"
        "    return os.environ.get('FORRESTQ_HOST', '')\n\n"
        "def gate(path, timeout=60.0):\n"
        "    deadline = time.monotonic() + timeout\n"
        "    while not os.path.exists(path) and time.monotonic() < deadline:\n"
        "        time.sleep(0.01)\n"
        "    return where()\n")
    monkeypatch.syspath_prepend(str(mods))
    module = importlib.import_module(name)
    yield module, mods
    sys.modules.pop(name, None)


def with_module(mods: Path, host: str) -> dict[str, str]:
    return {"FORRESTQ_HOST": host,
            "PYTHONPATH": os.pathsep.join([str(mods), str(ROOT / "tests"), str(ROOT)])}


def hosts_live(r, *hosts: str) -> bool:
    return set(hosts) <= {p.host for p in live_peers(r)}


def refused_by(r, k: QueueKeys, task_id: str) -> list[str]:
    raw = r.hget(k.task(task_id), schema.TASK_REFUSED)
    return raw.decode().split(",") if raw else []


# --- refuse.lua through its Op -----------------------------------------------------------------------
def claim(s: ops.Scripts, k: QueueKeys, token: str, host: str) -> ops.Claimed:
    got = ops.claim(s, k, ops.ClaimArgs("c-" + host, token, 60_000, host, "w-" + host))
    assert isinstance(got, ops.Claimed), got
    return got


def test_refuse_hands_back_unrun_until_every_live_host_refused(url, r):
    q = Queue("refuse-op")
    ref = q.schedule(defer(tasks.identity, 1))
    k, s = QueueKeys("refuse-op"), ops.Scripts(r)
    first = claim(s, k, "T1", "h1")
    assert ops.refuse(s, k, ops.RefuseArgs(ref.id, "stale", "h1", ["h1", "h2"])) == ops.Refused(False, False, [])
    assert r.hget(k.task(ref.id), "st") == b"running"  # a stale token changes nothing
    got = ops.refuse(s, k, ops.RefuseArgs(ref.id, "T1", "h1", ["h1", "h2"]))
    assert got == ops.Refused(True, False, ["h1"])
    fields = r.hgetall(k.task(ref.id))
    assert fields[b"st"] == b"ready" and fields[b"n"] == b"0"  # unrun, the attempt not counted
    assert r.exists(k.lease(ref.id)) == 0
    (entry,) = r.xrange(k.stream)  # one entry, a new one at the end of the stream
    assert entry[0] == fields[b"sid"] != first.sid.encode() and entry[1] == {b"t": ref.id.encode()}
    assert q.counts()["ready"] == 1 and q.counts()["running"] == 0
    again = claim(s, k, "T2", "h1")  # the same host again: still one host on the list
    assert again.id == first.id and again.attempts == 1
    assert ops.refuse(s, k, ops.RefuseArgs(ref.id, "T2", "h1", ["h1", "h2"])).hosts == ["h1"]
    claim(s, k, "T3", "h2")
    last = ops.refuse(s, k, ops.RefuseArgs(ref.id, "T3", "h2", ["h2", "h1"]))
    assert last == ops.Refused(False, True, ["h1", "h2"])  # every live host refused: the caller fails it
    assert r.hget(k.task(ref.id), "st") == b"running" and r.hget(k.task(ref.id), "tok") == b"T3"
    assert refused_by(r, k, ref.id) == ["h1", "h2"]


def test_refuse_fails_after_three_distinct_hosts_whoever_lives(url, r):
    q = Queue("refuse-cap")
    ref = q.schedule(defer(tasks.identity, 1))
    k, s = QueueKeys("refuse-cap"), ops.Scripts(r)
    live = ["a", "b", "c", "d", "e"]
    for i, host in enumerate(["a", "b", "c"]):
        claim(s, k, f"T{i}", host)
        got = ops.refuse(s, k, ops.RefuseArgs(ref.id, f"T{i}", host, live))
        assert got.must_fail == (i == 2) and got.handed_back == (i < 2)
    assert got.hosts == ["a", "b", "c"]


# --- a module missing on one host ----------------------------------------------------------------
def test_a_host_without_the_module_hands_its_tasks_to_one_that_has_it(url, r, only_here, tmp_path):
    module, mods = only_here
    q, k = Queue("import-split"), QueueKeys("import-split")
    log = tmp_path / "bad.log"
    with worker(url, "import-split", 1, *FAST, env=with_module(mods, "good")), \
            worker(url, "import-split", 2, *FAST, env={"FORRESTQ_HOST": "bad"}, log=log):
        wait_for(lambda: hosts_live(r, "good", "bad"), timeout=30, what="both workers to be live")
        refs = q.schedule_many(defer(module.where, 0.2) for _ in range(8))
        got = {t.id: t for t in q.results(timeout=90)}
    assert len(got) == 8
    for ref in refs:
        task = got[ref.id]
        assert task.state == "done" and task.returnvalue == "good" and task.host == "good", task.reason
        assert task.attempts == 1  # the hand-backs were not counted
    assert any(refused_by(r, k, ref.id) == ["bad"] for ref in refs), "the bad host claimed none"
    text = log.read_text()
    assert f"cannot import module {module.__name__!r} on host bad" in text
    assert "handed back for another host" in text


@pytest.mark.parametrize("lanes", ["1", "3"])  # plain children, and children running coroutines at once
def test_with_only_hosts_lacking_the_module_the_task_fails_naming_them(url, r, only_here, lanes):
    module, _ = only_here
    q = Queue("import-none")
    opts = (*FAST, "--async-concurrency", lanes)
    with worker(url, "import-none", 1, *opts, env={"FORRESTQ_HOST": "bad1"}), \
            worker(url, "import-none", 1, *opts, env={"FORRESTQ_HOST": "bad2"}):
        wait_for(lambda: hosts_live(r, "bad1", "bad2"), timeout=30, what="both workers to be live")
        ref = q.schedule(defer(module.where))
        task = q.wait(ref, timeout=60)
    assert task.state == "failed" and task.attempts == 1
    assert task.reason.startswith(f"could not load task payload: WorkerImportError: cannot import module "
                                  f"{module.__name__!r} on host bad")
    assert task.reason.endswith(tuple(f"; refused by every live worker host of queue import-none: {a}, {b}"
                                      for a, b in (("bad1", "bad2"), ("bad2", "bad1")))), task.reason
    assert isinstance(task.errorvalue, ImportError)


def test_a_refusing_host_does_not_spin_on_a_task_it_cannot_load(url, r, only_here, tmp_path):
    """The good host is busy; the bad one meets the task again and again, but pausing longer each time
    (0.2 s doubling up to 2 s), and the good host runs it in the end."""
    module, mods = only_here
    q = Queue("import-spin")
    gate = tmp_path / "gate"
    log = tmp_path / "bad.log"
    with worker(url, "import-spin", 1, *FAST, env=with_module(mods, "good")), \
            worker(url, "import-spin", 1, *FAST, env={"FORRESTQ_HOST": "bad"}, log=log):
        wait_for(lambda: hosts_live(r, "good", "bad"), timeout=30, what="both workers to be live")
        busy = q.schedule(defer(module.gate, str(gate)))  # only the good host can run it
        wait_for(lambda: q.get(busy).state == "running" and q.get(busy).host == "good", timeout=30,
                 what="the good host to be busy")
        ref = q.schedule(defer(module.where))
        wait_for(lambda: "handed back" in log.read_text(), timeout=30, what="a first refusal")
        time.sleep(3)  # a window to count refusals in (a rate, not a condition to await)
        refusals = log.read_text().count("handed back for another host")
        gate.touch()
        task = q.wait(ref, timeout=30)
    print(f"\nthe refusing host met the task {refusals} times in 3 s")
    assert 1 <= refusals <= 6, f"{refusals} refusals in about 3 s"
    assert task.state == "done" and task.host == "good" and task.attempts == 1


# --- a worker with another secret --------------------------------------------------------------------
def test_a_worker_with_another_secret_hands_tasks_back_then_stops_claiming_and_says_why(url, r, tmp_path):
    signing.set_secret(SECRET)  # the producer signs
    q = Queue("secret-split")
    log = tmp_path / "bad.log"
    good_fp, bad_fp = signing.Signer(SECRET).fingerprint, signing.Signer(OTHER).fingerprint
    with worker(url, "secret-split", 1, *FAST, env={"FORRESTQ_HOST": "good", "FORRESTQ_SECRET": SECRET}), \
            worker(url, "secret-split", 2, *FAST, env={"FORRESTQ_HOST": "bad", "FORRESTQ_SECRET": OTHER},
                   log=log) as bad:
        wait_for(lambda: hosts_live(r, "good", "bad"), timeout=30, what="both workers to be live")
        refs = q.schedule_many(defer(tasks.sleep_then, 0.3, i) for i in range(12))
        got = {t.id: t for t in q.results(timeout=120)}
        (peer,) = [p for p in live_peers(r) if p.host == "bad"]
        refusing = wait_for(lambda: r.hget(schema.worker(peer.id), schema.WORKER_REFUSING), timeout=30,
                            what="the bad worker to publish why it stopped claiming").decode()
        assert bad.poll() is None  # it stays up (idle), visible in `forrestq status`
    assert [got[ref.id].returnvalue for ref in refs] == list(range(12))
    assert all(got[ref.id].host == "good" and got[ref.id].attempts == 1 for ref in refs)
    assert peer.fingerprint == bad_fp and bad_fp in refusing and good_fp in refusing
    lines = [line for line in log.read_text().splitlines() if "stopped claiming tasks" in line]
    assert len(lines) == 1, lines
    assert "failed the signature check" in lines[0] and f"fingerprint {bad_fp}" in lines[0]
    assert good_fp in lines[0] and SECRET not in log.read_text() and OTHER not in log.read_text()


def test_a_lone_worker_with_another_secret_fails_nothing_and_the_right_one_runs_everything_later(
        url, r, tmp_path):
    """The overnight case: the misconfigured host starts first and alone. The producers say which
    secret they sign with (fq:{q}:signer), so that worker knows the fault is its own: it hands every
    task back unrun, stops claiming after a few, and a worker with the right secret started later
    runs them all."""
    signing.set_secret(SECRET)
    q, k = Queue("secret-alone"), QueueKeys("secret-alone")
    refs = q.schedule_many(defer(tasks.identity, i) for i in range(6))
    assert r.get(k.signer).decode() == signing.Signer(SECRET).fingerprint
    log = tmp_path / "bad.log"
    with worker(url, "secret-alone", 2, *FAST, env={"FORRESTQ_HOST": "bad", "FORRESTQ_SECRET": OTHER},
                log=log):
        wait_for(lambda: hosts_live(r, "bad"), timeout=30, what="the bad worker to be live")
        (peer,) = [p for p in live_peers(r) if p.host == "bad"]
        wait_for(lambda: r.hget(schema.worker(peer.id), schema.WORKER_REFUSING), timeout=60,
                 what="the lone bad worker to stop claiming")
        assert q.counts()["failed"] == 0 and q.counts()["done"] == 0
        with worker(url, "secret-alone", 1, *FAST, env={"FORRESTQ_HOST": "good", "FORRESTQ_SECRET": SECRET}):
            got = [q.wait(ref, timeout=60) for ref in refs]
    assert [t.returnvalue for t in got] == list(range(6)) and {t.host for t in got} == {"good"}
    line = next(x for x in log.read_text().splitlines() if "stopped claiming tasks" in x)
    assert "the producers sign with " + signing.Signer(SECRET).fingerprint in line


def test_a_payload_forged_by_hand_fails_at_once_among_workers_with_the_same_secret(url, r, tmp_path):
    """Two workers with the right secret: a forged payload would fail on either, so it is not handed
    around; it fails at its first refusal, and neither worker stops claiming."""
    signing.set_secret(SECRET)
    q, k = Queue("forged"), QueueKeys("forged")
    forged = q.schedule(defer(tasks.identity, "forged"))
    r.hset(k.task(forged.id), "a", signing.Signer("a guessed secret").sign(signing.ARGS, b"\x80\x05N."))
    honest = q.schedule_many(defer(tasks.identity, i) for i in range(3))
    env = {"FORRESTQ_SECRET": SECRET}
    with worker(url, "forged", 1, *FAST, env={**env, "FORRESTQ_HOST": "h1"}), \
            worker(url, "forged", 1, *FAST, env={**env, "FORRESTQ_HOST": "h2"}):
        wait_for(lambda: hosts_live(r, "h1", "h2"), timeout=30, what="both workers to be live")
        task = q.wait(forged, timeout=60)
        assert [q.wait(h, timeout=60).returnvalue for h in honest] == [0, 1, 2]
        assert all(p.claiming for p in live_peers(r))
    assert task.state == "failed" and task.attempts == 1 and len(refused_by(r, k, forged.id)) == 1
    assert task.reason.startswith("could not load task payload: SignatureMismatch: signature mismatch: "
                                  "the task's arguments came with a bad signature")
