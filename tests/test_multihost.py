"""Several machines for real: hosts in Linux network namespaces, joined by a private switch.

``redis`` runs a ServerProcess bound to its address with a password; ``a`` and ``b`` each run
``forrestq worker --procs 2 --lease 2`` with FORRESTQ_HOST=host-a/host-b (recorded as each task's
host); ``prod`` schedules over TCP like any other machine. The test process itself stays in the
root namespace, which gets no interface, address or route: it watches through the server's UNIX
socket, which no network cut reaches. (See tests/netns.py.)

Needs root and iproute2 (``ip netns``); skipped with the reason otherwise.

1. both hosts work: tasks scheduled from ``prod`` run on host-a and host-b;
2. host loss: every process of host-a is SIGKILLed mid-task; its tasks are re-queued once their
   lease expires and re-run on host-b; the recovery time is printed;
3. network cut: host-a's cable is pulled for longer than the lease while it runs a task; host-b runs
   the task again; when the cable is back, host-a's late result is refused (the record stays
   host-b's) and host-a's worker carries on with the next task.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import netns
import pytest
from helpers import wait_for
from procs import stop, worker_env

from forrestq import Queue, Task, defer
from forrestq.schema import WORKERS

LEASE = 2.0  # seconds: the workers' --lease
SWEEP = min(LEASE / 3, 5.0)  # the workers' reclaim sweep interval (forrestq.worker)
PASSWORD = "multi host p@ss"
PORT = 6379  # inside the redis namespace: nothing else listens there


class Cluster:
    def __init__(self, lab: netns.Lab, tmp: Path) -> None:
        self.lab = lab
        self.tmp = tmp
        self.tcp_url = f"redis://:{quote(PASSWORD, safe='')}@{lab.address('redis')}:{PORT}/0"
        self.unix_url = f"unix://:{quote(PASSWORD, safe='')}@{quote(str(tmp / 'redis.sock'))}"

    def worker(self, host: str, queue: str, log: Path) -> subprocess.Popen:
        """``forrestq worker`` inside host ``host``; FORRESTQ_HOST=host-<host>."""
        proc = self.lab.popen(host, [sys.executable, "-m", "forrestq", "worker", "--procs", "2",
                                     "--lease", f"{LEASE:g}", "--grace", "5", "--url", self.tcp_url,
                                     "--queue", queue],
                              env=worker_env({"FORRESTQ_HOST": f"host-{host}"}), log=log)
        return proc

    def wait_registered(self, q: Queue, *workers: tuple[str, subprocess.Popen], timeout: float = 30) -> None:
        """Until each worker's heartbeat is in Redis (it reached the server over the network)."""
        def up() -> bool:
            ids = [w.decode() for w in q.r.zrange(WORKERS, 0, -1)]
            return all(any(i.startswith(f"host-{host}:{proc.pid}:") for i in ids) for host, proc in workers)

        for host, proc in workers:
            assert proc.poll() is None, f"the worker of host-{host} exited with code {proc.returncode}"
        wait_for(up, timeout, 0.05, "the workers to register")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"multi-host test needs `ip netns` as root: {reason}")
    tmp = tmp_path_factory.mktemp("multihost")
    with netns.Lab() as lab:
        for host in ("redis", "a", "b", "prod"):
            lab.add_host(host)
        root = subprocess.run(["ip", "-br", "addr"], capture_output=True, text=True, timeout=30).stdout
        assert netns.SUBNET not in root, "the lab's addresses must not exist in the root namespace"
        server = lab.popen("redis", [sys.executable, "-c", "import netns; netns.serve_main()"],
                           env=worker_env({"FQ_DATA": str(tmp / "redis"), "FQ_BIND": lab.address("redis"),
                                           "FQ_PORT": str(PORT), "FQ_SOCK": str(tmp / "redis.sock"),
                                           "FQ_PASSWORD": PASSWORD}),
                           log=tmp / "server.log", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            try:
                line = netns.read_line(server.stdout, 30)
            except TimeoutError:
                line = ""
            assert line.strip() == "ready", (tmp / "server.log").read_text()
            yield Cluster(lab, tmp)
        finally:
            server.stdin.close()  # the helper stops its server (lab.close() kills whatever is left)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                pass


def finished(q: Queue, n: int, timeout: float = 60) -> dict[str, Task]:
    got: dict[str, Task] = {}
    for task in q.results(timeout=timeout):
        got[task.id] = task
        if len(got) == n:
            break
    assert len(got) == n
    return got


def report(capsys: pytest.CaptureFixture, text: str) -> None:
    with capsys.disabled():
        print(f"\n[multihost] {text}", flush=True)


def test_both_hosts_work(cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    q = Queue("both", cluster.unix_url)
    log = tmp_path / "runs"
    a = cluster.worker("a", "both", tmp_path / "a.log")
    b = cluster.worker("b", "both", tmp_path / "b.log")
    try:
        cluster.wait_registered(q, ("a", a), ("b", b))
        producer = cluster.lab.popen("prod", [sys.executable, "-c", "import netns; netns.schedule_main()",
                                              "both", "20", str(log), "0.3"],
                                     env=worker_env({"FORRESTQ_URL": cluster.tcp_url}),
                                     log=tmp_path / "producer.log", stdout=subprocess.PIPE)
        try:
            ids = netns.read_line(producer.stdout, 60).split()
        except TimeoutError:
            ids = []
        assert producer.wait(30) == 0 and len(ids) == 20, (tmp_path / "producer.log").read_text()
        got = finished(q, 20)
    finally:
        stop(a)
        stop(b)
    assert set(got) == set(ids)
    assert all(t.state == "done" and t.returnvalue == t.host for t in got.values())
    hosts = Counter(t.host for t in got.values())
    assert set(hosts) == {"host-a", "host-b"}, hosts
    report(capsys, f"both hosts: 20 tasks scheduled from host prod ran {dict(sorted(hosts.items()))}")


def states(q: Queue, ids: list[str]) -> dict[str, tuple[str, str, str]]:
    """task id -> (state, host, lost_on), in one round trip."""
    pipe = q.r.pipeline(transaction=False)
    for task_id in ids:
        pipe.hmget(q.keys.task(task_id), "st", "host", "lost")
    return {i: tuple((v or b"").decode() for v in row) for i, row in zip(ids, pipe.execute())}


def test_host_loss(cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    q = Queue("loss", cluster.unix_url)
    n = 12
    a = cluster.worker("a", "loss", tmp_path / "a.log")
    b = cluster.worker("b", "loss", tmp_path / "b.log")
    try:
        cluster.wait_registered(q, ("a", a), ("b", b))
        refs = q.schedule_many([defer(netns.host_task, str(tmp_path / "runs"), f"t{i}", 1.0) for i in range(n)])
        ids = [ref.id for ref in refs]

        def two_on_a() -> list[str] | None:  # mid-run: host-a has finished a task and runs two more
            now = states(q, ids).items()
            running = [i for i, (st, host, _) in now if st == "running" and host == "host-a"]
            finished_on_a = [i for i, (st, host, _) in now if st == "done" and host == "host-a"]
            return running if len(running) == 2 and finished_on_a else None

        on_a = wait_for(two_on_a, 30, 0.02, "host-a to finish a task and run two more")
        killed = cluster.lab.kill_host("a")
        t_kill = time.time()  # every process of host-a is dead (kill_host lists them first: ~10 ms)
        assert a.wait(10) is not None and not cluster.lab.pids("a")
        requeued: dict[str, float] = {}
        deadline = time.monotonic() + 60
        while True:  # watch the lost tasks come back, until every task has finished
            now = states(q, ids)
            for i, (_st, _host, lost) in now.items():
                if lost == "host-a" and i not in requeued:
                    requeued[i] = time.time() - t_kill
            if all(st in ("done", "failed") for st, _, _ in now.values()):
                break
            assert time.monotonic() < deadline, f"tasks unfinished 60 s after host-a died: {now}"
            time.sleep(0.02)
        t_all = time.time() - t_kill
    finally:
        stop(b)
        stop(a)
    tasks = {i: q.get(i) for i in ids}
    assert all(t.state == "done" for t in tasks.values()), {i: t.reason for i, t in tasks.items()}
    lost = [t for t in tasks.values() if t.lost_on == "host-a"]
    assert lost and set(on_a) <= {t.id for t in lost} | {t.id for t in tasks.values() if t.host == "host-a"}
    for t in lost:
        assert (t.host, t.returnvalue, t.attempts) == ("host-b", "host-b", 2)
    for t in tasks.values():  # whatever finished after the kill, host-b did
        if t.finished is not None and t.finished > t_kill:
            assert t.host == "host-b"
    recovery = max(requeued.values())
    rerun_done = max(t.finished for t in lost) - t_kill
    assert recovery <= LEASE + 2 * SWEEP + 2.0, f"lost tasks re-queued only after {recovery:.2f} s"
    report(capsys, f"host loss: SIGKILLed {len(killed)} processes of host-a holding {len(on_a)} tasks; "
                   f"re-queued {recovery:.2f} s after the kill (lease {LEASE:g} s, sweep every {SWEEP:.2f} s), "
                   f"re-run on host-b and done after {rerun_done:.2f} s; all {n} tasks done after {t_all:.2f} s "
                   f"({Counter(t.host for t in tasks.values())})")


def test_network_cut(cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    q = Queue("cut", cluster.unix_url)
    runs = tmp_path / "runs"
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    a = cluster.worker("a", "cut", a_log)
    b = None
    cut = False
    try:
        cluster.wait_registered(q, ("a", a))
        ref = q.schedule(defer(netns.host_task, str(runs), "T", 3.0))
        wait_for(lambda: runs.exists() and "T host-a" in runs.read_text(), 30, 0.01, "host-a to start T")
        t_cut = time.monotonic()
        cluster.lab.link("a", up=False)
        cut = True
        b = cluster.worker("b", "cut", b_log)

        def done() -> Task | None:
            task = q.get(ref)
            return task if task.state == "done" else None

        record = wait_for(done, 40, 0.05, "host-b to run T again while host-a is cut off")
        outage = time.monotonic() - t_cut
        assert (record.host, record.returnvalue, record.attempts, record.lost_on) == ("host-b", "host-b", 2, "host-a")
        assert outage > LEASE
        assert a.poll() is None
        before = q.r.hgetall(q.keys.task(ref.id))
        cluster.lab.link("a", up=True)
        cut = False
        t_up = time.monotonic()
        refused = re.compile(rf"refused.*{ref.id}|{ref.id}.*refused|lease lost.*{ref.id}")
        line = wait_for(lambda: next((x for x in a_log.read_text().splitlines() if refused.search(x)), None),
                        60, 0.05, "host-a to hear that its late result of T is refused")
        late = time.monotonic() - t_up
        assert q.r.hgetall(q.keys.task(ref.id)) == before  # the record is still host-b's
        assert a.poll() is None, "host-a's worker died"
        stop(b)  # from now on only host-a serves the queue: it must carry on
        b = None
        after = q.schedule(defer(netns.host_task, str(runs), "U", 0.1))
        task = q.wait(after, timeout=60)
        assert (task.state, task.host, task.returnvalue) == ("done", "host-a", "host-a")
    finally:
        if cut:
            cluster.lab.link("a", up=True)
        if b is not None:
            stop(b)
        stop(a)
    starts = [x.split()[:2] for x in runs.read_text().splitlines()]
    assert starts == [["T", "host-a"], ["T", "host-b"], ["U", "host-a"]]
    report(capsys, f"network cut: host-a offline {outage:.2f} s (lease {LEASE:g} s) while running T; host-b "
                   f"re-ran T; {late:.2f} s after the cable was back host-a logged: {line.strip()!r}; "
                   "then host-a ran the next task")
