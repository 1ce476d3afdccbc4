"""The ``forrestq`` command line, driven by typer's CliRunner and as real subprocesses, against a
real server with real workers."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import tasks
from helpers import free_port, wait_for
from procs import ROOT, worker, worker_env
from typer.testing import CliRunner

from forrestq import Queue, defer
from forrestq.cli import EXIT_AUTH, EXIT_FAILURE, EXIT_UNKNOWN, EXIT_UNREACHABLE, EXIT_USAGE, app
from forrestq.server import ServerProcess, ensure_local_server

# --- task functions (tests/ is on the workers' PYTHONPATH: they import them from here) -----------


def noisy(n):
    """Print n lines, then fail."""
    for i in range(1, n + 1):
        print(f"output line {i}", flush=True)
    raise RuntimeError(f"noisy failed after {n} lines")


def needs_file(path, value):
    """Fails until the file exists: a failure fixed by hand, then requeued."""
    if not Path(path).exists():
        raise FileNotFoundError(f"missing {path}")
    return value


# --- helpers ---------------------------------------------------------------------------------------

runner = CliRunner()


def cli(*args: str, input: str | None = None):
    """Invoke the app in this process; 200 columns so that table rows are not wrapped."""
    result = runner.invoke(app, list(args), input=input, env={"COLUMNS": "200"}, catch_exceptions=False)
    return result


def fq(*args: str, env: dict[str, str] | None = None, input: str | None = None,
       timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``python -m forrestq ARGS`` as a real process (tests/ importable, like a worker)."""
    return subprocess.run([sys.executable, "-m", "forrestq", *args], env=worker_env({"COLUMNS": "200", **(env or {})}),
                          input=input, capture_output=True, text=True, timeout=timeout)


def row_of(text: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is first_cell."""
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{text}")


def snapshot(r: redis.Redis) -> dict[bytes, object]:
    """Every key with its type and content: to show that a failed command changed nothing."""
    out: dict[bytes, object] = {}
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        read = {b"hash": r.hgetall, b"zset": lambda k: r.zrange(k, 0, -1, withscores=True),
                b"set": r.smembers, b"string": r.get, b"stream": lambda k: r.xrange(k)}.get(kind)
        out[key] = (kind, read(key) if read else None)
    return out


def finished(q: Queue, n: int, timeout: float = 60) -> list:
    got = list(q.results(timeout=timeout))
    assert len(got) == n, got
    return got


# --- status ------------------------------------------------------------------------------------------


def test_status_counts_and_workers_after_a_real_worker(url):
    q = Queue("stat")
    q.schedule_many([defer(tasks.add, i, i) for i in range(6)] + [defer(tasks.crash, "bad")])
    with worker(url, "stat", 2, env={"FORRESTQ_HOST": "hostS"}):
        finished(q, 7)
        # the worker publishes its counts at its next beat after a task ends (at most a few times a second)
        wait_for(lambda: sum(w["done"] + w["failed"] for w in json.loads(cli("status", "--json").stdout)["workers"]
                             if w["host"] == "hostS") == 7, what="the worker's heartbeat with its 7 tasks")
        text = cli("status").stdout
        assert row_of(text, "stat")[1:6] == ["0", "0", "0", "6", "1"]
        assert row_of(text, "stat")[6:8] == ["6", "1"]  # all finished within the last minute
        assert row_of(text, "stat")[8:] == ["1", "7 (6 done, 1 failed)"]  # live workers; roots
        host, pid, queues, busy, done, failed, memory, beat, state = row_of(text, "hostS")
        assert (queues, busy, state) == ("stat", "0/2", "running")
        assert "MiB" in memory and beat.endswith("ago")
        assert "\x1b[" not in text  # not a terminal: no colour

        data = json.loads(cli("status", "--json").stdout)
        (w,) = data["workers"]
        assert (w["host"], w["procs"], w["busy"], w["queues"], w["state"]) == ("hostS", 2, 0, ["stat"], "running")
        assert w["done"] + w["failed"] == 7 and w["rss"] > 0 and w["age"] < 30
    # a waiting and a ready task, no worker: the counts follow
    gate = defer(tasks.identity, 1)
    q.schedule(defer(tasks.identity, gate))
    data = json.loads(cli("status", "--json", "--queue", "stat").stdout)
    counts = {k: v for k, v in data["queues"]["stat"].items() if k in q.counts()}
    assert counts == q.counts() == {"waiting": 1, "scheduled": 0, "ready": 1, "running": 0, "done": 6, "failed": 1}
    assert data["queues"]["stat"]["done_per_min"] == 6 and data["queues"]["stat"]["failed_per_min"] == 1
    assert data["workers"] == []  # the worker removed itself when it stopped


def test_status_lists_every_queue_or_one(url):
    Queue("a1").schedule(defer(tasks.identity, 1))
    Queue("b2").schedule_many([defer(tasks.identity, i) for i in range(3)])
    data = json.loads(cli("status", "--json").stdout)
    assert {k: v["ready"] for k, v in data["queues"].items()} == {"a1": 1, "b2": 3}
    assert list(json.loads(cli("status", "--json", "-q", "b2").stdout)["queues"]) == ["b2"]
    text = cli("status").stdout
    assert row_of(text, "a1")[2] == "1" and row_of(text, "b2")[2] == "3"
    assert "no workers" in text


def test_status_watch_refreshes_and_stops(url):
    Queue("w").schedule(defer(tasks.identity, 1))
    out = cli("status", "--watch", "--json", "--interval", "0.05", "--count", "3")
    assert out.exit_code == 0
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 3 and all(d["queues"]["w"]["ready"] == 1 for d in lines)
    assert lines[0]["time"] < lines[2]["time"]
    out = cli("status", "--watch", "--interval", "0.05", "--count", "2")
    assert out.exit_code == 0 and "w" in out.stdout


def test_status_watch_exits_0_on_ctrl_c(url):
    Queue("cc").schedule(defer(tasks.identity, 1))
    proc = subprocess.Popen([sys.executable, "-m", "forrestq", "status", "--watch", "--json", "-n", "0.05"],
                            env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(proc.stdout.readline())["queues"]["cc"]["ready"] == 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_lost_worker_is_shown_then_dropped(url, r):
    now = time.time()
    r.zadd("fq:workers", {"hostL:4242:ab12": now - 100, "hostR:77:cd34": now})
    r.hset("fq:w:hostR:77:cd34", mapping={"host": "hostR", "pid": 77, "procs": 4, "busy": 3, "done": 10,
                                         "failed": 2, "rss": 3 << 20, "queues": "x,y", "started": now - 50,
                                         "beat": now, "stopping": 0})
    data = json.loads(cli("status", "--json").stdout)
    lost, live = data["workers"]
    assert (lost["host"], lost["pid"], lost["state"]) == ("hostL", 4242, "lost") and 95 < lost["age"] < 200
    assert (live["host"], live["busy"], live["procs"], live["queues"], live["state"]) == \
        ("hostR", 3, 4, ["x", "y"], "running")
    text = cli("status").stdout
    assert row_of(text, "hostL")[-1] == "lost" and row_of(text, "hostR")[3] == "3/4"
    assert row_of(text, "hostR")[6] == "3.0 MiB"
    # five minutes without a heartbeat: dropped from the table and from fq:workers
    r.zadd("fq:workers", {"hostL:4242:ab12": now - 400})
    data = json.loads(cli("status", "--json").stdout)
    assert [w["host"] for w in data["workers"]] == ["hostR"]
    assert r.zscore("fq:workers", "hostL:4242:ab12") is None
    assert r.zscore("fq:workers", "hostR:77:cd34") is not None


def test_status_answers_fast_with_a_million_tasks(url, r):
    """Counts come from counters and rates from ZCOUNT: nothing scans the task ids. Checked by what
    status asks the server: the very same commands for ten tasks as for a million (not a timing)."""
    fill = ("local now, args = tonumber(ARGV[3]), {} "
            "for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do "
            "args[#args + 1] = now - i / 1000; args[#args + 1] = 'x' .. i "
            "if #args >= 2000 then redis.call('ZADD', KEYS[1], unpack(args)); args = {} end end "
            "if #args > 0 then redis.call('ZADD', KEYS[1], unpack(args)) end")
    now = time.time()
    r.sadd("fq:queues", "big")

    def status_commands():
        before = {k: v["calls"] for k, v in r.info("commandstats").items()}
        data = json.loads(cli("status", "--json").stdout)
        after = {k: v["calls"] for k, v in r.info("commandstats").items()}
        return data, {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}

    for key in ("fq:{big}:todo", "fq:{big}:done"):
        r.eval(fill, 1, key, 1, 10, now)
    r.hset("fq:{big}:counts", mapping={"ready": 10, "done": 10})
    _, small = status_commands()
    for start in range(11, 1_000_001, 250_000):
        for key in ("fq:{big}:todo", "fq:{big}:done"):
            r.eval(fill, 1, key, start, min(start + 249_999, 1_000_000), now)
    r.hset("fq:{big}:counts", mapping={"ready": 1_000_000, "done": 1_000_000})
    data, big = status_commands()
    assert big == small, (small, big)
    assert data["queues"]["big"]["ready"] == 1_000_000
    recent = r.zcount("fq:{big}:done", data["time"] - 60, "+inf")
    assert data["queues"]["big"]["done_per_min"] == recent > 0  # one finished per ms until `now`
    assert cli("status").exit_code == 0 and cli("tasks", "-q", "big", "-s", "done").exit_code == 0


# --- bad input: one line, a distinct code, nothing changed --------------------------------------------


@pytest.fixture
def password_server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("pw"), password="s3cret-pw") as s:
        yield s


def _bad_inputs(url: str, password_server: ServerProcess) -> list[tuple[list[str], int, str]]:
    wrong = password_server.url.replace("s3cret-pw", "wrong-pw")
    return [
        (["status", "--queue", "nope"], EXIT_UNKNOWN, "no queue 'nope'"),
        (["show", "nosuchtask"], EXIT_UNKNOWN, "no task 'nosuchtask'"),
        (["tasks", "--queue", "nope"], EXIT_UNKNOWN, "no queue 'nope'"),
        (["cancel", "nosuchtask"], EXIT_UNKNOWN, "no task 'nosuchtask'"),
        (["requeue", "--failed", "--id", "nosuchtask"], EXIT_UNKNOWN, "no task 'nosuchtask'"),
        (["status", "--url", f"redis://127.0.0.1:{free_port()}/0"], EXIT_UNREACHABLE, "cannot reach Redis"),
        (["status", "--url", wrong], EXIT_AUTH, "refused the password"),
        (["worker", "--procs", "0", "--queue", "q"], EXIT_USAGE, "--procs must be at least 1"),
        (["worker", "--max-memory", "banana", "--queue", "q"], EXIT_USAGE, "bad size 'banana'"),
        (["tasks", "--state", "sleeping"], EXIT_USAGE, "bad --state 'sleeping'"),
        (["clean", "--yes"], EXIT_USAGE, "say what to delete"),
        (["requeue"], EXIT_USAGE, "--failed"),
        (["worker", "--queue", "a b"], EXIT_USAGE, "bad queue name 'a b'"),
        (["status", "--url", url.replace("redis://", "redis://nobody:pw@")], EXIT_AUTH, "refused the password"),
    ]


def test_bad_input_is_one_line_with_a_distinct_code_and_changes_nothing(url, r, password_server):
    Queue("present").schedule(defer(tasks.crash, "x"))
    before = snapshot(r)
    cases = _bad_inputs(url, password_server)
    assert len({code for _, code, _ in cases}) == 4  # unknown, unreachable, auth, usage
    for args, code, text in cases:
        out = fq(*args)
        assert out.returncode == code, (args, out.returncode, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("forrestq: ") and text in lines[0], (args, out.stderr)
        assert "Traceback" not in out.stderr and out.stdout == ""
        assert "wrong-pw" not in out.stderr
    assert snapshot(r) == before


def test_bad_input_under_clirunner_and_with_verbose(url):
    out = cli("status", "--queue", "nope")
    assert out.exit_code == EXIT_UNKNOWN and out.stderr.strip() == "forrestq: no queue 'nope'; no queue was " \
                                                                 "scheduled on this server yet"
    out = fq("-v", "status", "--queue", "nope")
    assert out.returncode == EXIT_UNKNOWN  # -v adds the traceback, the code stays
    assert "Traceback" in out.stderr and out.stderr.strip().endswith("forrestq: no queue 'nope'; no queue "
                                                                      "was scheduled on this server yet")


def test_help_has_examples_and_exit_codes():
    assert "Example: forrestq worker --procs 8" in " ".join(cli("worker", "--help").stdout.split())
    top = " ".join(cli("--help").stdout.split())
    assert "Exit codes: 0 ok" in top and "5 unknown queue or task" in top
    for command in ("status", "tasks", "show", "server", "requeue", "run", "clean", "cancel"):
        assert "Example" in cli(command, "--help").stdout, command


def test_worker_startup_line_is_a_timestamped_log_line_and_quiet_drops_it(url, tmp_path):
    """`forrestq worker` logs through forrestq.log: lines with a timestamp on stderr; --quiet keeps
    warnings and errors only."""
    q = Queue("logq")
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} forrestq\.\S+\s+"
    for args, shown in (((), True), (("--quiet",), False)):
        log = tmp_path / f"worker{len(args)}.log"
        with worker(url, "logq", 1, *args, log=log):
            assert q.wait(q.schedule(defer(tasks.identity, 1)), timeout=60).returnvalue == 1
        banner = [line for line in log.read_text().splitlines() if "forrestq worker " in line]
        assert bool(banner) is shown, log.read_text()
        if shown:
            assert re.match(stamp + r"forrestq worker \S+: host .*, queues logq, .*payloads \w+", banner[0])


# --- tasks and show --------------------------------------------------------------------------------------


def test_tasks_lists_and_filters(url):
    q = Queue("lst")
    bad = q.schedule(defer(tasks.crash, "listing failure"), metadata={"item": 7})
    good = q.schedule_many([defer(tasks.identity, i) for i in range(3)])
    with worker(url, "lst", 2, env={"FORRESTQ_HOST": "hostT"}):
        finished(q, 4)
    (row,) = json.loads(cli("tasks", "--state", "failed", "--json").stdout)
    assert (row["id"], row["queue"], row["state"], row["function"]) == (bad.id, "lst", "failed", "tasks.crash")
    assert row["reason"] == "ValueError: listing failure" and row["host"] == "hostT"
    assert row["metadata"] == {"item": 7} and row["runtime"] >= 0 and row["attempts"] == 1
    done = json.loads(cli("tasks", "-q", "lst", "-s", "done", "--json").stdout)
    assert sorted(t["id"] for t in done) == sorted(g.id for g in good)
    assert len(json.loads(cli("tasks", "--json", "--limit", "2").stdout)) == 2
    waiting = q.schedule(defer(tasks.identity, defer(tasks.identity, 1)))
    (w,) = json.loads(cli("tasks", "-s", "waiting", "--json").stdout)
    assert w["id"] == waiting.id
    text = cli("tasks", "-q", "lst").stdout
    cells = row_of(text, bad.id)
    assert cells[1:3] == ["failed", "tasks.crash"] and cells[-1] == "ValueError: listing failure"
    assert "no running tasks" in cli("tasks", "-s", "running").stdout


def test_show_failed_task_has_call_output_tail_and_traceback(url):
    q = Queue("shw")
    ref = q.schedule(defer(noisy, 60), metadata={"run": "x1"})
    with worker(url, "shw", 1):
        (task,) = finished(q, 1)
    assert task.state == "failed"
    text = cli("show", ref.id, "--lines", "10").stdout
    assert f"{ref.id}  (queue shw, root)" in text
    assert "test_cli.noisy(60)" in text
    assert "RuntimeError: noisy failed after 60 lines" in text  # reason and traceback
    assert "Traceback (most recent call last)" in text and 'raise RuntimeError(f"noisy failed' in text
    assert "output line 60" in text and "output line 51" in text and "output line 50" not in text
    assert "last 10 of 60 lines" in text and "{'run': 'x1'}" in text
    data = json.loads(cli("show", ref.id, "--json", "-q", "shw").stdout)
    assert data["call"] == "test_cli.noisy(60)" and data["output"].splitlines()[-1] == "output line 60"
    assert "RuntimeError" in data["traceback"] and [h["state"] for h in data["history"]][-1] == "failed"


def test_show_names_inputs_and_survives_unloadable_arguments(url, r):
    q = Queue("shw2")
    first = defer(tasks.identity, {"a": 1})
    ref = q.schedule(defer(tasks.add, first["a"], b=2))
    text = cli("show", ref.id).stdout
    assert f"tasks.add(<task {first._id}>['a'], b=2)" in text and "waiting" in text
    # arguments whose class cannot be imported here: shown as such, the command still works
    r.hset(f"fq:{{shw2}}:t:{first._id}", "a", b"cnosuchmodule\nThing\n.")  # pickle: the global nosuchmodule.Thing
    out = cli("show", first._id)
    assert out.exit_code == 0 and "tasks.identity(<could not load: " in out.stdout


# --- requeue, run, cancel, clean --------------------------------------------------------------------------


def test_requeue_failed_tasks_then_they_succeed(url, tmp_path):
    flag = tmp_path / "flag"
    q = Queue("rq")
    refs = q.schedule_many([defer(needs_file, str(flag), i) for i in range(3)])
    dependent = q.schedule(defer(tasks.add, defer(needs_file, str(flag), 10), 5))
    with worker(url, "rq", 2):
        finished(q, 4)
    assert q.counts()["failed"] == 5  # 3 + the input of `dependent` + `dependent` itself
    out = cli("requeue", "--failed", "--error-type", "KeyError", "--json")
    assert json.loads(out.stdout)["count"] == 0
    out = cli("requeue", "--failed", "--dry-run")
    assert out.stdout.strip() == "would requeue 5 task(s) (5 in rq)"
    assert q.counts()["failed"] == 5
    flag.write_text("fixed")
    out = cli("requeue", "--failed", "--queue", "rq", "--error-type", "FileNotFoundError")
    assert out.exit_code == 0 and out.stdout.strip() == "requeued 5 task(s) (5 in rq)"
    assert q.counts()["failed"] == 0
    with worker(url, "rq", 2):
        got = {t.id: t for t in finished(q, 4)}
    assert all(t.state == "done" for t in got.values())
    assert sorted(got[r.id].returnvalue for r in refs) == [0, 1, 2] and got[dependent.id].returnvalue == 15


def test_requeue_by_id(url, tmp_path):
    q = Queue("rqid")
    a, b = q.schedule_many([defer(needs_file, str(tmp_path / "nope"), i) for i in range(2)])
    with worker(url, "rqid", 1):
        finished(q, 2)
    out = json.loads(cli("requeue", "--failed", "--id", b.id, "--json").stdout)
    assert out == {"dry_run": False, "count": 1, "queues": {"rqid": [b.id]}, "skipped": [], "reason": None}
    assert q.get(a).state == "failed" and q.get(b).state == "ready"


def test_run_raise_reraises_in_the_foreground_and_changes_nothing(url, r):
    q = Queue("runq")
    bad = q.schedule(defer(tasks.crash, "original boom"))
    good = q.schedule(defer(tasks.add, defer(tasks.identity, 20), 22))
    with worker(url, "runq", 1):
        finished(q, 2)
    before = snapshot(r)
    out = fq("run", bad.id, "--raise")
    assert out.returncode != 0
    assert "ValueError: original boom" in out.stderr and "raise ValueError(message)" in out.stderr
    out = fq("run", bad.id)  # without --raise: the traceback, exit 1
    assert out.returncode == EXIT_FAILURE and "ValueError: original boom" in out.stderr
    out = fq("run", good.id, "--queue", "runq")  # its real input comes from Redis
    assert out.returncode == 0 and out.stdout.strip() == "42"
    assert snapshot(r) == before
    out = fq("run", bad.id, "--raise", "--pdb")
    assert out.returncode == EXIT_USAGE and "do not go together" in out.stderr


def test_run_pdb_post_mortem(url):
    q = Queue("pdbq")
    bad = q.schedule(defer(tasks.crash, "inspect me"))
    with worker(url, "pdbq", 1):
        finished(q, 1)
    out = fq("run", bad.id, "--pdb", input="p message\nq\n")
    assert out.returncode == EXIT_FAILURE
    assert "(Pdb)" in out.stdout and "'inspect me'" in out.stdout  # a local of the failing frame


def test_run_record_changes_the_recorded_outcome(url, tmp_path):
    flag = tmp_path / "flag"
    q = Queue("recq")
    ref = q.schedule(defer(needs_file, str(flag), "recorded"))
    with worker(url, "recq", 1):
        finished(q, 1)
    flag.write_text("")
    out = fq("run", ref.id, "--record")
    assert out.returncode == 0 and "'recorded'" in out.stdout
    task = q.get(ref)
    assert task.state == "done" and task.returnvalue == "recorded"
    assert q.counts()["done"] == 1 and q.counts()["failed"] == 0


def test_cancel_kills_a_running_task_and_the_worker_carries_on(url):
    q = Queue("cxl")
    long = q.schedule(defer(tasks.sleep_then, 60, "never"))
    queued = q.schedule_many([defer(tasks.identity, i) for i in range(2)])
    with worker(url, "cxl", 1, "--lease", "3") as proc:
        wait_for(lambda: q.get(long).state == "running", timeout=20, what="the long task to start")
        t0 = time.monotonic()
        out = cli("cancel", long.id)
        assert out.exit_code == 0 and out.stdout.strip() == "cancelled 1 task(s)"
        task = q.get(long)
        assert task.state == "failed" and task.reason == "cancelled"
        # the worker kills it at its next heartbeat (lease 3 s: every second) and takes the next task
        got = {t.id: t for t in q.results(timeout=30)}
        assert time.monotonic() - t0 < 15
        assert [got[r.id].returnvalue for r in queued] == [0, 1]
        assert proc.poll() is None
        assert q.get(long).reason == "cancelled"  # the killed attempt did not overwrite it
        after = q.schedule(defer(tasks.identity, "still working"))
        assert q.wait(after, timeout=30).returnvalue == "still working"
    assert q.counts() == {"waiting": 0, "scheduled": 0, "ready": 0, "running": 0, "done": 3, "failed": 1}


def test_cancel_all_and_bad_usage(url):
    q = Queue("cxa")
    refs = q.schedule_many([defer(tasks.identity, i) for i in range(4)])
    assert cli("cancel").exit_code == EXIT_USAGE
    assert cli("cancel", "--all").exit_code == EXIT_USAGE
    out = json.loads(cli("cancel", "--queue", "cxa", "--all", "--json").stdout)
    assert out["cancelled"] == 4 and sorted(out["queues"]["cxa"]) == sorted(r.id for r in refs)
    assert q.counts()["failed"] == 4 and q.counts()["ready"] == 0


def test_clean_done_deletes_done_tasks_only(url, r):
    q = Queue("cln")
    bad = q.schedule(defer(tasks.crash, "keep me"))
    good = q.schedule_many([defer(tasks.identity, i) for i in range(3)])
    with worker(url, "cln", 2):
        finished(q, 4)
    waiting = q.schedule(defer(tasks.identity, defer(tasks.identity, 1)))
    out = cli("clean", "--done", input="n\n")  # asks first; "no" deletes nothing
    assert out.exit_code == 0 and "delete done tasks (3) from 1 queue(s)?" in out.stderr
    assert out.stdout.splitlines()[-1] == "nothing deleted"  # (CliRunner echoes the answer before it)
    assert q.counts()["done"] == 3
    out = cli("clean", "--done", "--yes")
    assert out.exit_code == 0 and out.stdout.strip() == "deleted 3 task(s) from 1 queue(s)"
    assert q.counts() == {"waiting": 1, "scheduled": 0, "ready": 1, "running": 0, "done": 0, "failed": 1}
    assert q.get(bad).state == "failed" and q.get(waiting).state == "waiting"
    assert all(not r.exists(q.keys.task(ref.id)) for ref in good)
    assert json.loads(cli("tasks", "-s", "done", "--json").stdout) == []
    out = cli("clean", "-q", "cln", "--failed", "--json", input="y\n")
    assert json.loads(out.stdout[out.stdout.index("{"):]) == {"deleted": 1, "queues": {"cln": 1}}


# --- server -----------------------------------------------------------------------------------------------


def test_server_info_and_stop(fq_home):
    data = json.loads(cli("server", "--info", "--json").stdout)
    assert data == {"running": False, "state": "never started", "data_dir": str(fq_home)}
    ensure_local_server()
    data = json.loads(cli("server", "--info", "--json").stdout)
    assert data["running"] is True and data["data_dir"] == str(fq_home) and data["pid"] > 0
    assert f"data in {fq_home}" in cli("server", "--info").stdout
    assert cli("server", "--stop").stdout.strip() == "stopped the local server"
    assert json.loads(cli("server", "--info", "--json").stdout)["running"] is False
    assert "no local server was running" in cli("server", "--stop").stdout


def test_server_foreground_prints_url_and_stops_on_sigterm(tmp_path):
    port = free_port()
    pw = tmp_path / "pw"
    pw.write_text("fg-secret\n")
    proc = subprocess.Popen([sys.executable, "-m", "forrestq", "server", "--port", str(port), "--data",
                             str(tmp_path / "data"), "--password-file", str(pw)],
                            env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert lines[1].strip() == f"FORRESTQ_URL=redis://:fg-secret@127.0.0.1:{port}/0"
        assert redis.Redis.from_url(lines[1].strip().split("=", 1)[1]).ping()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = fq("server", "--bind", "0.0.0.0", "--port", str(port))
    assert out.returncode == EXIT_USAGE and "without a password" in out.stderr
    out = fq("server", "--password-file", str(tmp_path / "missing"))
    assert out.returncode == EXIT_USAGE and "cannot read the password" in out.stderr


# --- the capture in docs/ --------------------------------------------------------------------------------


def test_status_capture_script(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "make_status_capture.py"), str(tmp_path)],
                         env=worker_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "status.txt").read_text()
    assert "fits" in text and "workers" in text and "running" in text
    assert (tmp_path / "status.svg").read_text().lstrip().startswith("<svg")
