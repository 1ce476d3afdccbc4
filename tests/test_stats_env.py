"""Issue 14, two parts: per-function statistics kept as tasks end (``Queue.stats()``, ``forrestq
stats``) and each worker's environment fingerprint (``forrestq show`` names a task's; ``forrestq
status`` says when live workers' environments differ, and which distribution).

What a user relies on: the figures are those of the task records (counts, failed %, a p50 that is
one of the runtimes recorded, the hosts); they are kept without the task records (they survive
``clean(done=True)``, go with ``clean(all=True)``); ``--json`` parses; a version skew between two
workers is named; user text prints literally.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import redis
import tasks
from helpers import wait_for
from procs import worker, worker_env
from typer.testing import CliRunner

from forrestq import Queue, Task, defer, environment, schema
from forrestq.cli import app
from forrestq.stats import percentile

FAST = ("--lease", "2", "--grace", "0")
runner = CliRunner()


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def _ran(q: Queue, timeout: float = 60) -> list[Task]:
    return list(q.results(timeout=timeout))


def test_stats_match_the_records_of_the_tasks(url: str) -> None:
    q = Queue("st-records")
    sleeps = [0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25]
    refs = [q.schedule(defer(tasks.sleep_then, s, i)) for i, s in enumerate(sleeps)]
    bad = q.schedule(defer(tasks.sleep_then, -1))  # time.sleep(-1): ValueError
    with worker(url, "st-records", 2, *FAST, env={"FORRESTQ_HOST": "host-st"}):
        done = {t.id: t for t in _ran(q)}
    assert done[bad.id].state == "failed" and all(done[r.id].ok for r in refs)
    st = q.stats()["tasks.sleep_then"]
    assert (st.runs, st.failed, st.samples) == (11, 1, 11)
    assert round(st.failed_pct, 2) == 9.09
    runtimes = [t.runtime for t in done.values()]
    assert st.p50_runtime in runtimes and st.p95_runtime in runtimes  # nearest rank: a recorded runtime
    assert st.p50_runtime == percentile(runtimes, 50) and st.p95_runtime == max(runtimes)  # 95 % of 11: the 11th
    assert st.p95_runtime >= 0.25 and st.p50_runtime >= 0.05
    peaks = [t.peak_rss for t in done.values()]
    assert st.p95_peak_rss in peaks and st.p95_peak_rss > 0
    assert st.hosts == {"host-st": 11}


def test_stats_outlive_the_task_records_and_go_with_the_queue(url: str, r: redis.Redis) -> None:
    q = Queue("st-clean")
    for i in range(4):
        q.schedule(defer(tasks.identity, i))
    q.schedule(defer(tasks.crash, "boom"))
    with worker(url, "st-clean", 2, *FAST):
        _ran(q)
    before = q.stats()
    assert q.clean(done=True, failed=True) == 5
    assert not q.done_tasks() and not q.fail_tasks()
    after = q.stats()  # read from its own keys: no task is left to scan
    assert after == before
    assert (after["tasks.identity"].runs, after["tasks.crash"].failed) == (4, 1)
    q.clean(all=True)
    assert q.stats() == {}
    assert not list(r.scan_iter(match="*stats*"))


def test_a_cancelled_task_does_not_count(url: str) -> None:
    q = Queue("st-cancel")
    ref = q.schedule(defer(tasks.identity, 1))
    assert q.cancel([ref]) == [ref.id]
    assert q.stats() == {}


def test_stats_cli_json_parses_and_matches_and_the_table_prints_names_literally(url: str) -> None:
    q = Queue("st-cli")
    q.schedule(defer(tasks.identity, 7))
    q.schedule(defer(tasks.crash, "x"))
    with worker(url, "st-cli", 1, *FAST):
        _ran(q)
    rows = json.loads(cli("stats", "--json"))
    by_name = {row["function"]: row for row in rows}
    assert set(by_name) == {"tasks.identity", "tasks.crash"}
    for name, st in q.stats().items():
        assert by_name[name] == json.loads(json.dumps(st.as_json()))
    assert by_name["tasks.crash"]["failed_pct"] == 100.0 and by_name["tasks.identity"]["runs"] == 1
    # a function name is user text: markup and control characters print as they are
    r = redis.Redis.from_url(url)
    name = "odd [red]name[/red] \x1b[2J"
    r.hset(q.keys.stats, mapping={schema.STATS_RUNS + name: 3, schema.STATS_FAILED + name: 1})
    r.lpush(q.keys.stats_samples(name), f"0.5{schema.STATS_SEP}1048576{schema.STATS_SEP}my [b]host")
    table = cli("stats", "-q", "st-cli")
    assert "odd [red]name[/red] \\x1b[2J" in table and "my [b]host (1)" in table and "33.3 %" in table
    assert "last 1,000 measured runs" in table


def test_show_names_the_environment_a_task_ran_in(url: str, r: redis.Redis) -> None:
    q = Queue("env-show")
    ref = q.schedule(defer(tasks.identity, 1))
    with worker(url, "env-show", 1, *FAST):
        task = q.wait(ref, timeout=30)
        env_id = wait_for(lambda: (r.hget(schema.worker(task.worker), schema.WORKER_ENV) or b"").decode(),
                          timeout=15, what="the worker's environment id")
    env = environment.of_worker(r, task.worker)
    assert env is not None and env.id == env_id
    assert env.forrestq and env.python.startswith("CPython 3.") and any(d.startswith("redis==")
                                                                        for d in env.distributions)
    shown = cli("show", ref.id)
    assert f"environment  {env_id} (CPython 3." in shown and f"forrestq {env.forrestq}" in shown
    assert json.loads(cli("show", ref.id, "--json"))["environment"]["id"] == env_id


def _fake_distribution(root: Path, version: str) -> str:
    """A directory holding a fake installed distribution ``fqtestpkg`` at ``version``."""
    info = root / f"fqtestpkg-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fqtestpkg\nVersion: {version}\n")
    return str(root)


def _with_path(directory: str, host: str) -> dict[str, str]:
    return {"PYTHONPATH": worker_env()["PYTHONPATH"] + os.pathsep + directory, "FORRESTQ_HOST": host}


def test_status_says_which_distribution_differs_between_live_workers(url: str, tmp_path: Path) -> None:
    q = Queue("env-skew")
    q.schedule(defer(tasks.identity, 1))
    a = _fake_distribution(tmp_path / "a", "1.0")
    b = _fake_distribution(tmp_path / "b", "2.0.1")
    with worker(url, "env-skew", 1, *FAST, env=_with_path(a, "host-a")), \
            worker(url, "env-skew", 1, *FAST, env=_with_path(b, "host-b")):
        data = wait_for(lambda: (d := json.loads(cli("status", "--json")))["environments"] and d,
                        timeout=20, what="two environments")
        text = cli("status")
    diffs = {d["what"]: d["values"] for d in data["environments"]}
    assert diffs == {"fqtestpkg": {"host-a": "1.0", "host-b": "2.0.1"}}
    assert "environments differ: host-a fqtestpkg==1.0, host-b fqtestpkg==2.0.1" in text
    assert len({w["env"] for w in data["workers"]}) == 2


def test_one_environment_is_not_a_difference_and_the_fingerprint_is_stable(url: str, tmp_path: Path) -> None:
    d = _fake_distribution(tmp_path / "same", "3.0")
    one, two = environment.describe([d]), environment.describe([d])
    assert one == two and one.distributions == ("fqtestpkg==3.0",)
    other = environment.describe([_fake_distribution(tmp_path / "other", "3.1")])
    assert other.id != one.id
    q = Queue("env-same")
    q.schedule(defer(tasks.identity, 1))
    with worker(url, "env-same", 1, *FAST), worker(url, "env-same", 1, *FAST):
        wait_for(lambda: len({w["env"] for w in json.loads(cli("status", "--json"))["workers"] if w["env"]}) == 1
                 and all(w["env"] for w in json.loads(cli("status", "--json"))["workers"]),
                 timeout=20, what="both workers' environment")
        assert json.loads(cli("status", "--json"))["environments"] == []
        assert "environments differ" not in cli("status")


def test_the_samples_are_the_last_thousand_runs(url: str, r: redis.Redis) -> None:
    """Counted ever, sampled over the last SAMPLES: the list is trimmed as it grows (the scripts
    driven directly, as a worker child drives them, to end 1,150 tasks quickly)."""
    from forrestq import ops
    from forrestq.stats import SAMPLES
    q = Queue("st-trim")
    n = SAMPLES + 150
    q.schedule_many(defer(tasks.identity, i) for i in range(n))
    for i in range(n):
        got = ops.claim(q.scripts, q.keys, ops.ClaimArgs("t:1:0", f"tok{i}", 60_000, "h", "t:1"))
        assert isinstance(got, ops.Claimed)
        assert ops.complete(q.scripts, q.keys, ops.Completion(got.id, f"tok{i}", schema.DONE, runtime=i,
                                                              host="h", peak_rss=1000 + i, pid=1))
        assert r.llen(q.keys.stats_samples("tasks.identity")) <= SAMPLES * 1.1
    st = q.stats()["tasks.identity"]
    assert (st.runs, st.failed, st.samples, st.hosts) == (n, 0, SAMPLES, {"h": SAMPLES})
    first = n - SAMPLES  # runtime (and peak - 1000) of the oldest run kept: nearest ranks 500 and 950 of 1,000
    assert (st.p50_runtime, st.p95_runtime, st.p95_peak_rss) == (first + 499, first + 949, 1000 + first + 949)
