"""The least Redis ACL of a producer, a worker and an operator (README, Security), for real: users made
from the README's own ``ACL SETUSER`` lines on a server of this module's own; a producer schedules and
reads, a real ``forrestq worker`` runs the tasks to the end, an operator requeues and cleans, and the
server's ACL LOG says nobody was refused anything. A user that lacks one command gets one line naming
it and exit code 4 (``EXIT_AUTH``), from the CLI and from a worker (at start, or when an ACL changes
under a running one): never a traceback, never a retry loop."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import tasks
from helpers import wait_for
from procs import ROOT, stop, worker, worker_env

from forrestq import Queue, defer
from forrestq.cli.common import EXIT_AUTH
from forrestq.errors import is_permission_error
from forrestq.server import ServerProcess

PASSWORD = "acl-test-pw"
FAST = ("--lease", "1", "--grace", "2")
TIMEOUT = 20.0  # seconds any process of these tests may take


def readme_users() -> dict[str, list[str]]:
    """The ``ACL SETUSER NAME RULE...`` lines of README.md: user name -> its rules."""
    found = re.findall(r"^ACL SETUSER (fq-[a-z]+) (.+)$", (ROOT / "README.md").read_text(), re.M)
    return {name: rules.split() for name, rules in found}


@dataclass
class Acl:
    server: ServerProcess
    admin: redis.Redis

    def url(self, user: str) -> str:
        return f"redis://{user}:{PASSWORD}@127.0.0.1:{self.server.port}/0"

    def make(self, user: str, rules: list[str]) -> None:
        self.admin.execute_command("ACL", "SETUSER", user, "reset",
                                   *[r.replace(">PASSWORD", f">{PASSWORD}") for r in rules])

    def refused(self) -> list[tuple[str, str]]:
        """(user, what) the ACL LOG holds for the README's users, then cleared. INFO is left out: the
        connection check asks for it and copes without it (the README does not grant it)."""
        entries = self.admin.execute_command("ACL", "LOG")
        self.admin.execute_command("ACL", "LOG", "RESET")
        seen = {(e[b"username"].decode(), e[b"object"].decode()) for e in map(_pairs, entries)}
        return sorted((u, what) for u, what in seen if u.startswith("fq-") and what != "info")


def _pairs(entry: list[bytes] | dict[bytes, bytes]) -> dict[bytes, bytes]:
    return entry if isinstance(entry, dict) else dict(zip(entry[::2], entry[1::2]))


def without(rules: list[str], command: str) -> list[str]:
    assert command in rules, f"{command} is not in the rules"
    return [r for r in rules if r != command]


@pytest.fixture(scope="module")
def acl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Acl]:
    server = ServerProcess(tmp_path_factory.mktemp("acl")).start()
    admin = redis.Redis.from_url(server.url)
    try:
        users = readme_users()
        assert set(users) == {"fq-producer", "fq-worker", "fq-operator"}, users
        a = Acl(server, admin)
        for user, rules in users.items():
            a.make(user, rules)
        a.make("fq-noread", without(users["fq-worker"], "+xreadgroup"))  # only a worker's children read
        a.make("fq-nosweep", without(users["fq-worker"], "+xpending"))  # the supervisor's sweep
        a.make("fq-late", users["fq-worker"])  # loses +hset while it runs
        a.make("fq-nolist", without(users["fq-producer"], "+smembers"))  # `forrestq status` lists queues
        a.make("fq-noxadd", without(users["fq-producer"], "+xadd"))  # inside the schedule script
        yield a
    finally:
        admin.close()
        server.stop()


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forrestq", *args], env=worker_env({"FORRESTQ_URL": url}),
                          capture_output=True, text=True, timeout=TIMEOUT)


def one_line_refusal(stderr: str, command: str) -> str:
    """The one line of stderr, which names ``command`` as refused; no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and f"'{command}' command" in lines[0] and "NOPERM" in lines[0], stderr
    return lines[0]


def run_worker(url: str, queue: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`forrestq worker` that is expected to end by itself: its exit code and output (bounded)."""
    proc = subprocess.Popen([sys.executable, "-m", "forrestq", "worker", "--procs", "2", "--queue", queue,
                             "--url", url, *FAST, *args], env=worker_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        stop(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# --------------------------------------------------------------------------- the README's users work


def test_producer_and_worker_users_run_a_workload_to_the_end(acl: Acl, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    acl.refused()
    monkeypatch.setenv("FORRESTQ_URL", acl.url("fq-producer"))
    q = Queue("acl-work", events=True)
    q.set_limit("one", 1)
    shared = q.put([1, 2, 3])
    a = defer(tasks.add, 1, 2)
    dag = q.schedule(defer(tasks.add, a, defer(tasks.add, a, 3)), metadata={"m": 1})
    batch = q.schedule_many([defer(tasks.identity, i) for i in range(4)], priority=2)
    failing = q.schedule(defer(tasks.crash, "no"))
    killed = q.schedule(defer(tasks.sleep_then, 30), timeout=0.5)
    limited = [q.schedule(defer(tasks.identity, shared), limits=["one"]) for _ in range(2)]
    later = q.schedule(defer(tasks.identity, "later"), delay=0.2, key="later")
    q.every(1, defer(tasks.identity, "tick"), key="tick")
    with worker(acl.url("fq-worker"), "acl-work", 2, *FAST):
        assert q.wait(dag, timeout=TIMEOUT).returnvalue == 9
        assert [t.returnvalue for t in batch.wait(timeout=TIMEOUT)] == [0, 1, 2, 3]
        assert q.wait(failing, timeout=TIMEOUT).state == "failed"
        assert "killed" in (q.wait(killed, timeout=TIMEOUT).reason or "")
        assert [q.wait(t, timeout=TIMEOUT).returnvalue for t in limited] == [[1, 2, 3]] * 2
        assert q.wait(later, timeout=TIMEOUT).returnvalue == "later"
        wait_for(lambda: any(t.periodic == "tick" for t in q.done_tasks()), TIMEOUT, what="a periodic tick")
        q.remove_periodic("tick")
        for args in (["status"], ["tasks", "-q", "acl-work"], ["show", dag.id], ["events", "-q", "acl-work"]):
            assert cli(acl.url("fq-producer"), *args).returncode == 0, args
    kinds = {ev.kind for ev in q.events()}
    assert {"scheduled", "started", "done", "failed"} <= kinds
    assert acl.refused() == []


def test_operator_user_requeues_and_cleans_where_a_producer_user_may_not(acl: Acl,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORRESTQ_URL", acl.url("fq-operator"))
    q = Queue("acl-ops")
    failing = q.schedule(defer(tasks.crash, "again"))
    q.schedule(defer(tasks.identity, 1))
    with worker(acl.url("fq-worker"), "acl-ops", 1, *FAST):
        q.wait(failing, timeout=TIMEOUT)
        assert cli(acl.url("fq-operator"), "requeue", "--failed", "-q", "acl-ops").returncode == 0
        wait_for(lambda: q.get(failing).attempts >= 1 and q.get(failing).state == "failed", TIMEOUT,
                 what="the requeued task to fail again")
    acl.refused()
    refused = cli(acl.url("fq-producer"), "clean", "--all", "--yes", "-q", "acl-ops")
    assert refused.returncode == EXIT_AUTH, refused.stderr
    line = one_line_refusal(refused.stderr, re.search(r"'(\w+)' command", refused.stderr)[1])  # type: ignore[index]
    assert "inside a forrestq script" in line and "fq-producer" in line
    assert cli(acl.url("fq-operator"), "clean", "--all", "--yes", "-q", "acl-ops").returncode == 0
    assert q.counts().get("failed", 0) == 0
    assert [u for u, _ in acl.refused()] == ["fq-producer"]


# -------------------------------------------------------------- one permission missing: one line, 4


def test_cli_without_a_command_says_which_in_one_line_and_exits_4(acl: Acl) -> None:
    got = cli(acl.url("fq-nolist"), "status")
    assert got.returncode == EXIT_AUTH
    assert "ACL must allow" in one_line_refusal(got.stderr, "smembers")


def test_scheduling_without_a_command_of_the_schedule_script_names_it(acl: Acl,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORRESTQ_URL", acl.url("fq-noxadd"))
    with pytest.raises(redis.RedisError) as e:
        Queue("acl-noxadd").schedule(defer(tasks.identity, 1))
    assert is_permission_error(e.value) and "'xadd' command" in str(e.value)


def test_worker_whose_children_could_not_read_exits_4_in_one_line_before_any_child(acl: Acl) -> None:
    got = run_worker(acl.url("fq-noread"), "acl-noread")
    assert got.returncode == EXIT_AUTH, got.stderr
    one_line_refusal(got.stderr, "xreadgroup")


def test_worker_whose_own_round_is_refused_exits_4_in_one_line(acl: Acl) -> None:
    got = run_worker(acl.url("fq-nosweep"), "acl-nosweep")
    assert got.returncode == EXIT_AUTH, got.stderr
    one_line_refusal(got.stderr, "xpending")


def test_a_running_worker_that_loses_a_permission_stops_with_exit_4(acl: Acl, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORRESTQ_URL", acl.url("fq-producer"))
    q = Queue("acl-late")
    proc = subprocess.Popen([sys.executable, "-m", "forrestq", "worker", "--procs", "1", "--queue", "acl-late",
                             "--url", acl.url("fq-late"), *FAST], env=worker_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert q.wait(q.schedule(defer(tasks.identity, 1)), timeout=TIMEOUT).state == "done"
        acl.admin.execute_command("ACL", "SETUSER", "fq-late", "-hset")  # the heartbeat's
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        stop(proc)
    assert proc.returncode == EXIT_AUTH, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("forrestq: Redis refused: NOPERM") and "'hset' command" in last, err
