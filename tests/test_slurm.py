"""Workers as SLURM jobs (issue 21): ``forrestq launch slurm``, ``--adapt``, ``--idle-exit``, SIGTERM at
the wall time. The integration tests run against a real single-node SLURM (tests/slurm.py) and skip
with the reason where it cannot start; the rest (the job script, where the secret goes, the
controller's decisions, --idle-exit) needs none."""
from __future__ import annotations

import json
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import wait_for
from procs import worker, worker_env
from slurm import SlurmCluster, Unavailable
from tasks import add, sleep_then

from forrestq import Queue, defer, schema, signing
from forrestq.slurm import Job, LaunchSpec, env_file, job_script, jobs, sbatch_command, write_files
from forrestq.slurm_adapt import Controller, parse_range, plan, wanted


def fq(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``python -m forrestq ARGS`` in a real process with this test's environment."""
    return subprocess.run([sys.executable, "-m", "forrestq", *args], env=worker_env(), capture_output=True,
                          text=True, timeout=timeout)


# ------------------------------------------------------------------------------ without SLURM


def test_dry_run_shows_the_script_and_submits_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORRESTQ_SECRET", "s3cr3t-value")
    out = fq("launch", "slurm", "-q", "fits", "--procs", "8", "--jobs", "3", "--time", "4:00:00", "--mem", "32G",
             "--partition", "long", "--account", "lab", "--extra-sbatch", "--qos=big --gres=gpu:1",
             "--url", "redis://:pa55word@db.example:6379/0", "--dir", str(tmp_path / "jobs"), "--dry-run")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for line in ("#SBATCH --job-name=forrestq-fits", "#SBATCH --cpus-per-task=8", "#SBATCH --time=4:00:00",
                 "#SBATCH --mem=32G", "#SBATCH --partition=long", "#SBATCH --account=lab",
                 "#SBATCH --signal=B:TERM@90"):
        assert line in text.splitlines()
    assert f"exec {sys.executable} -m forrestq worker --procs 8 --queue fits --grace 30" in text
    assert "sbatch --parsable --export=ALL --qos=big --gres=gpu:1" in text
    assert "pa55word" not in text and "s3cr3t" not in text and "redis://:***@db.example:6379/0" in text
    assert not (tmp_path / "jobs").exists()  # nothing written


def test_the_secret_and_the_url_sit_in_files_only_the_user_reads(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORRESTQ_SECRET", "s3cr3t-value")
    spec = LaunchSpec(queue="q", url="redis://:pa55word@db:6379/0", directory=tmp_path / "d")
    script = write_files(spec)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700
    for name in ("job.sh", "env", "secret"):
        assert stat.S_IMODE((tmp_path / "d" / name).stat().st_mode) == 0o600
    assert (tmp_path / "d" / "secret").read_text().strip() == "s3cr3t-value"
    assert "pa55word" in env_file(spec) and "s3cr3t" not in env_file(spec)  # the secret: by its file
    for public in (script.read_text(), " ".join(sbatch_command(spec, script)), job_script(spec)):
        assert "pa55word" not in public and "s3cr3t" not in public


def test_without_slurm_the_launch_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # python, forrestq; no sbatch
    out = fq("launch", "slurm", "-q", "x", "--url", "redis://db:6379/0", "--dir", str(tmp_path / "d"))
    assert out.returncode == 1 and out.stderr.splitlines() == [
        "forrestq: sbatch not found: forrestq launch slurm runs on a host with SLURM's client commands"]
    bad = fq("launch", "slurm", "--adapt", "4,1", "--url", "redis://db:6379/0", "--dry-run")
    assert bad.returncode == 2 and "MIN <= MAX" in bad.stderr
    assert fq("launch", "slurm", "--dry-run").returncode == 2  # no URL: where would the jobs connect?


def test_the_controller_wants_work_over_procs_within_its_range() -> None:
    assert parse_range("0,8") == (0, 8)
    for bad in ("8", "3,1", "a,b", "0,0"):
        with pytest.raises(ValueError):
            parse_range(bad)
    assert wanted(0, 0, 8, 0, 4) == 0 and wanted(0, 0, 8, 1, 4) == 1
    assert wanted(9, 0, 8, 0, 4) == 2 and wanted(100, 20, 8, 0, 4) == 4


def _job(i: int, state: str = "RUNNING") -> Job:
    return Job(str(i), state, "n1" if state == "RUNNING" else "", "0:01", "1:00:00", "None")


def _w(i: int, busy: int = 0, state: str = "running") -> dict[str, object]:
    return {"id": f"w{i}", "busy": busy, "state": state}


def test_the_controller_stops_only_idle_workers_and_cancels_only_pending_jobs() -> None:
    listed = [_job(1), _job(2), _job(3), _job(4, "PENDING")]
    workers = {"1": _w(1, busy=1), "2": _w(2), "3": _w(3)}
    long_idle = {"w2": 0.0, "w3": 0.0}
    p = plan(0, listed, workers, long_idle, now=100.0, idle_after=10)
    assert (p.submit, p.cancel, sorted(p.stop)) == (0, ["4"], ["w2", "w3"])  # w1 runs a task: left alone
    p = plan(0, listed, workers, {"w2": 95.0, "w3": 0.0}, now=100.0, idle_after=10)
    assert p.stop == ["w3"]  # w2 idle for 5 s only
    p = plan(5, listed, {**workers, "3": _w(3, state="stopping")}, long_idle, now=100.0, idle_after=10)
    assert p.submit == 2 and p.have == 3  # a stopping worker's job is on its way out
    assert plan(3, [_job(1, "COMPLETING")], {}, {}, 0.0, 1).submit == 3


def test_a_worker_with_idle_exit_leaves_by_itself_after_its_tasks(url: str) -> None:
    q = Queue("idle")
    ref = q.schedule(defer(sleep_then, 1.5, "done"))
    with worker(url, "idle", 1, "--idle-exit", "1") as proc:
        started = time.monotonic()
        assert q.wait(ref, timeout=30).returnvalue == "done"
        assert proc.wait(20) == 0  # exits 0, on its own
        assert time.monotonic() - started >= 1.0  # not while the task ran (1.5 s), nor before an idle second


# ------------------------------------------------------------------------------ against SLURM


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """The daemons, for this module's tests (stopped once they ran, not at the session's end)."""
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except (Unavailable, OSError, subprocess.SubprocessError) as e:
        cluster.stop()
        pytest.skip(f"no SLURM: {e}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(slurm_cluster: SlurmCluster, url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SlurmCluster]:
    """The session's SLURM for one test: its client commands and the jobs' task modules found, no job
    left behind."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    monkeypatch.setenv("PYTHONPATH", worker_env()["PYTHONPATH"])  # the jobs import tests/tasks.py
    try:
        yield slurm_cluster
    finally:
        slurm_cluster.cancel_all()


def _job_of(r: redis.Redis, worker_id: str) -> str:
    return (r.hget(schema.worker(worker_id), schema.WORKER_JOB) or b"").decode()


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A payload secret in this process's environment (the jobs get it through their 0600 file)."""
    monkeypatch.setenv("FORRESTQ_SECRET", "slurm-test-secret")
    monkeypatch.delenv("FORRESTQ_SECRET_FILE", raising=False)
    signing.use_environment()
    try:
        yield "slurm-test-secret"
    finally:
        monkeypatch.delenv("FORRESTQ_SECRET")
        signing.use_environment()


def test_jobs_drain_200_tasks_then_leave_by_idle_exit(cluster: SlurmCluster, url: str, r: redis.Redis,
                                                      secret: str) -> None:
    """Signed payloads: the jobs' workers run them only if the secret reached them (by its file)."""
    q = Queue("sl200")
    refs = [q.schedule(defer(add, i, 1)) for i in range(200)]
    out = fq("launch", "slurm", "-q", "sl200", "--procs", "2", "--jobs", "2", "--idle-exit", "3", "--json",
             "--url", url)
    assert out.returncode == 0, out.stderr
    ids = json.loads(out.stdout)["jobs"]
    assert len(ids) == 2 and sorted(cluster.job_ids()) == sorted(ids)
    stored = [p for p in (cluster.root / "state").rglob("*") if p.is_file()]  # scripts and environments
    assert any(p.name == "environment" for p in stored) and not [p for p in stored if secret.encode() in p.read_bytes()]
    results = {t.id: t for t in q.results(timeout=90)}
    assert len(results) == 200 and {results[ref.id].returnvalue for ref in refs} == set(range(1, 201))
    ran_in = {_job_of(r, t.worker) for t in results.values()}
    assert ran_in <= {f"slurm:{i}" for i in ids} and ran_in  # every task ran in one of the jobs
    fingerprints = {r.hget(schema.worker(t.worker), schema.WORKER_FINGERPRINT) for t in results.values()}
    assert fingerprints == {signing.fingerprint().encode()}
    wait_for(lambda: not cluster.job_ids(), timeout=60, interval=0.2, what="the idle jobs to end by themselves")


def test_status_and_stop(cluster: SlurmCluster, url: str, r: redis.Redis) -> None:
    q = Queue("slst")
    ref = q.schedule(defer(sleep_then, 8.0, "ok"))  # running through the two status calls
    out = fq("launch", "slurm", "-q", "slst", "--jobs", "2", "--grace", "30", "--worker-args", "--lease 3",
             "--url", url)
    assert out.returncode == 0, out.stderr
    assert "submitted 2 job(s) forrestq-slst" in out.stdout

    def running() -> list[dict[str, object]]:
        rows = json.loads(fq("launch", "slurm", "status", "-q", "slst", "--json", "--url", url).stdout)
        return [row for row in rows if row["running"] and row["worker"]["busy"]]  # busy: at its next beat
    (row,) = wait_for(running, timeout=60, interval=0.3, what="a job running the task")
    assert row["state"] == "RUNNING" and row["worker"]["busy"] == 1 and row["running"][0]["id"] == ref.id
    table = fq("launch", "slurm", "status", "-q", "slst", "--url", url).stdout
    assert row["id"] in table and "sleep_then" in table, table
    stopped = json.loads(fq("launch", "slurm", "stop", "-q", "slst", "--json", "--url", url).stdout)
    assert len(stopped["asked"]) + len(stopped["signalled"]) + len(stopped["cancelled"]) == 2
    assert q.wait(ref, timeout=30).returnvalue == "ok"  # the running task finished: nothing lost
    wait_for(lambda: not cluster.job_ids(), timeout=60, interval=0.2, what="the jobs to end after stop")


def test_adapt_scales_up_from_zero_and_down_after_idle(cluster: SlurmCluster, url: str, r: redis.Redis,
                                                       tmp_path: Path) -> None:
    said: list[str] = []
    spec = LaunchSpec(queue="slad", url=url, procs=1, worker_args=["--lease", "3"], directory=tmp_path / "jobs")
    ctl = Controller(redis.Redis.from_url(url), spec, 0, 3, interval=0.5, idle_after=1.0, say=said.append)
    assert ctl.step().want == 0 and not cluster.job_ids()  # no work, no job
    thread = threading.Thread(target=ctl.run, daemon=True)
    thread.start()
    try:
        q = Queue("slad")
        refs = [q.schedule(defer(sleep_then, 2.0, i)) for i in range(6)]
        wait_for(lambda: len(jobs(spec.name)) == 3, timeout=60, interval=0.2, what="3 jobs for 6 tasks")
        assert sorted(t.returnvalue for t in q.results(timeout=90)) == list(range(6))
        assert len({t.worker for t in (q.wait(ref) for ref in refs)}) >= 2  # spread over the jobs
        wait_for(lambda: not jobs(spec.name), timeout=60, interval=0.2, what="the idle jobs to be stopped")
    finally:
        ctl.stop()
        thread.join(10)
    assert any(line.startswith("submitted job(s)") for line in said)
    assert sum(line.startswith("asked idle worker") for line in said) == 3  # each left by the remote stop
    for log in (tmp_path / "jobs").glob("*.log"):  # and none was cancelled: each worker left on its own
        assert "CANCELLED" not in log.read_text()


def test_sigterm_at_the_wall_time_hands_the_task_back(cluster: SlurmCluster, url: str, r: redis.Redis,
                                                      tmp_path: Path) -> None:
    """SLURM sends SIGTERM to the batch shell (the worker) before the time limit (--signal=B:TERM@S);
    scancel --signal=TERM --batch sends the very same signal now. The worker's grace (1 s) is shorter
    than the task (4 s): the task is handed back, its attempt not counted, and finished elsewhere."""
    q = Queue("slwall")
    ref = q.schedule(defer(sleep_then, 4.0, "finished"))
    out = fq("launch", "slurm", "-q", "slwall", "--grace", "1", "--time", "5", "--json", "--url", url)
    assert out.returncode == 0, out.stderr
    (job,) = json.loads(out.stdout)["jobs"]
    first = wait_for(lambda: (t := q.get(ref)) and t.state == schema.RUNNING and t.worker, timeout=60,
                     interval=0.2, what="the task running in the job")
    assert _job_of(r, first) == f"slurm:{job}"
    cluster.run("scancel", "--signal=TERM", "--batch", job)
    wait_for(lambda: job not in cluster.job_ids(), timeout=60, interval=0.2, what="the job to end")
    t = q.get(ref)
    assert t.state == schema.READY and t.attempts == 0  # handed back, not counted
    with worker(url, "slwall", 1):
        done = q.wait(ref, timeout=30)
    assert done.returnvalue == "finished" and done.worker != first


def test_a_job_at_its_real_time_limit_hands_its_task_back(cluster: SlurmCluster, url: str, r: redis.Redis) -> None:
    """The same with SLURM's own signal: --time 1 (a minute) and a worker grace of 1 s, so the signal
    (grace + 60 s before the end) is due at once; slurmctld sends it at its next time-limit check."""
    q = Queue("slreal")
    ref = q.schedule(defer(sleep_then, 120.0, "finished"))
    out = fq("launch", "slurm", "-q", "slreal", "--grace", "1", "--time", "1", "--json", "--url", url)
    assert out.returncode == 0, out.stderr
    (job,) = json.loads(out.stdout)["jobs"]
    first = wait_for(lambda: (t := q.get(ref)) and t.state == schema.RUNNING and t.worker, timeout=60,
                     interval=0.2, what="the task running in the job")
    wait_for(lambda: job not in cluster.job_ids(), timeout=90, interval=0.2, what="SLURM's signal to end the job")
    t = q.get(ref)
    assert t.state == schema.READY and t.attempts == 0 and t.worker == first


def test_the_adapt_command_runs_until_sigterm(cluster: SlurmCluster, url: str, tmp_path: Path) -> None:
    """``forrestq launch slurm --adapt`` is the controller in the foreground: one line per action, a
    clean exit at SIGTERM, the jobs left as they are."""
    q = Queue("slcli")
    ref = q.schedule(defer(add, 2, 3))
    proc = subprocess.Popen([sys.executable, "-m", "forrestq", "launch", "slurm", "-q", "slcli", "--adapt", "0,1",
                             "--interval", "0.5", "--idle-exit", "30", "--url", url, "--dir", str(tmp_path / "j")],
                            env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert q.wait(ref, timeout=60).returnvalue == 5
        assert len(cluster.job_ids()) == 1  # the one job it submitted stays until its --idle-exit
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "keeping 0 to 1 jobs forrestq-slcli" in out and "submitted job(s)" in out
