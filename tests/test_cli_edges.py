"""The command line's rough edges of issue 12: bad queue names and refused ACL permissions as one
line, why a cancel or requeue did nothing, what ``status`` flags (queues nobody serves, refusing
workers, roots apart from nodes, narrow terminals), help without type metavars, ``--version``,
the task listing's errors and metadata, the state filter on a big queue, and the server's and
``clean``'s smaller edges. Real servers, real workers, the CLI as real processes."""
from __future__ import annotations

import json
import re
import socket
import time

import pytest
import redis
import tasks
from helpers import wait_for
from procs import worker
from test_cli import cli, fq, row_of, snapshot

import forrestq
from forrestq import Queue, defer, signing
from forrestq.cli import EXIT_AUTH, EXIT_FAILURE, EXIT_USAGE
from forrestq.server import ensure_local_server

COMMANDS = ("worker", "status", "tasks", "show", "events", "server", "requeue", "run", "clean", "cancel")


def one_error_line(out, code: int, *expected: str) -> str:
    """The process ended with ``code`` and one line on stderr holding ``expected``, no traceback."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == code, (out.returncode, out.stderr)
    assert len(lines) == 1 and lines[0].startswith("forrestq: "), out.stderr
    assert "Traceback" not in out.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def cells_of(text: str, first_cell: str) -> list[str]:
    """The cells of a table row, each with the lines it wrapped onto joined by a space."""
    rows: list[list[list[str]]] = []
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if not cells:
            continue
        if cells[0] or not rows:
            rows.append([[c] for c in cells])
        else:  # a continuation line of the row above
            for parts, c in zip(rows[-1], cells):
                parts.append(c)
    for row in rows:
        if row[0][0] == first_cell:
            return [" ".join(p for p in parts if p) for parts in row]
    raise AssertionError(f"no row {first_cell!r} in:\n{text}")


def fake_worker(r: redis.Redis, wid: str, ttl: int = 60, **fields: object) -> None:
    """A worker's heartbeat as a worker writes it (fq:workers and its hash with a TTL)."""
    now = time.time()
    host, pid, _ = wid.split(":")
    base = {"host": host, "pid": pid, "procs": 4, "busy": 0, "done": 0, "failed": 0, "rss": 1 << 20,
            "queues": "q", "started": now - 10, "beat": now, "stopping": 0, "fingerprint": "none", "refusing": ""}
    r.zadd("fq:workers", {wid: now})
    r.hset(f"fq:w:{wid}", mapping={**base, **fields})
    r.expire(f"fq:w:{wid}", ttl)


# --- 1. queue names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a b", "x{y}", ""])
def test_a_bad_queue_name_is_refused_by_every_command_that_takes_one(url, r, name):
    Queue("good").schedule(defer(tasks.identity, 1))
    before = snapshot(r)
    for args in (["worker", "--procs", "1", "--queue", name], ["worker", "--queue", "good", "--queue", name],
                 ["status", "--queue", name], ["tasks", "-q", name], ["show", "abc", "-q", name],
                 ["requeue", "--failed", "-q", name], ["run", "abc", "-q", name], ["clean", "--done", "-q", name],
                 ["cancel", "-q", name, "--all"]):
        out = fq(*args, timeout=30)
        one_error_line(out, EXIT_USAGE, f"bad queue name {name!r}")
    assert snapshot(r) == before  # no worker registered, nothing created


# --- 2. ACL permissions ------------------------------------------------------------------------------------


@pytest.fixture
def limited_url(url, r, server):
    """A user whose ACL allows only keys other:* (every command, no key of forrestq)."""
    r.execute_command("ACL", "SETUSER", "limited", "on", ">lim-pw", "~other:*", "+@all")
    try:
        yield f"redis://limited:lim-pw@127.0.0.1:{server.port}/0"
    finally:
        r.execute_command("ACL", "DELUSER", "limited")


def test_a_key_the_acl_refuses_is_one_line_naming_the_permission_exit_4(url, limited_url):
    Queue("acl").schedule(defer(tasks.identity, 1))
    for args in (["status"], ["status", "-q", "acl"], ["tasks"], ["show", "abc"], ["cancel", "abc"]):
        out = fq(*args, "--url", limited_url)
        line = one_error_line(out, EXIT_AUTH, "NOPERM", "No permissions to access a key", "fq:*")
        assert "lim-pw" not in line and out.stdout == ""


# --- 3. why a cancel or a requeue did nothing ------------------------------------------------------------


def test_cancel_and_requeue_say_why_nothing_happened(url):
    q = Queue("why")
    done = q.schedule(defer(tasks.identity, 1))
    bad = q.schedule(defer(tasks.crash, "boom"))
    up = defer(tasks.crash, "upstream")
    dependent = q.schedule(defer(tasks.identity, up))
    with worker(url, "why", 1):
        assert len(list(q.results(timeout=60))) == 3

    out = fq("cancel", done.id, bad.id)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["cancelled 0 task(s)", f"task {done.id} is done already: nothing to cancel",
                                       f"task {bad.id} failed already (ValueError: boom): nothing to cancel"]
    data = json.loads(fq("cancel", done.id, "--json").stdout)
    why_done = f"task {done.id} is done already: nothing to cancel"
    assert data["cancelled"] == 0
    assert data["skipped"] == [{"id": done.id, "queue": "why", "state": "done", "reason": why_done}]
    out = fq("cancel", "-q", "why", "--all")
    assert out.stdout.splitlines() == ["cancelled 0 task(s)", "nothing to cancel: queue 'why' has no unfinished task"]

    out = fq("requeue", "--failed", "--id", done.id, "--id", dependent.id, "--id", bad.id, "--error-type", "KeyError")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "requeued 0 task(s)", f"task {done.id} is not failed (state done): nothing to requeue",
        f"task {dependent.id} failed because its input {up._id} failed: requeue that one "
        f"(forrestq requeue --failed --id {up._id}), its dependents follow",
        f"task {bad.id} failed with ValueError, not KeyError: not requeued"]
    data = json.loads(fq("requeue", "--failed", "--id", done.id, "--json").stdout)
    assert data["count"] == 0 and [(s["id"], s["state"]) for s in data["skipped"]] == [(done.id, "done")]
    data = json.loads(fq("requeue", "--failed", "--error-type", "KeyError", "--json").stdout)
    assert data["count"] == 0 and "none of the 3 failed task(s)" in data["reason"] and "KeyError" in data["reason"]
    assert q.counts()["failed"] == 3  # nothing changed


# --- 4 and 5. status: queues nobody serves, refusing workers, roots apart from nodes -----------------------


def test_status_flags_queues_no_live_worker_serves_and_counts_roots_apart(url, r):
    served, orphan = Queue("served"), Queue("orphan")
    trees = [defer(tasks.add, defer(tasks.identity, i), 1) for i in range(3)]  # 2 nodes each
    served.schedule_many(trees)
    orphan.schedule_many([defer(tasks.identity, i) for i in range(4)])
    with worker(url, "served", 1, env={"FORRESTQ_HOST": "hostW"}):
        assert len(list(served.results(timeout=60))) == 3
        wait_for(lambda: json.loads(fq("status", "--json").stdout)["workers"], timeout=30, what="a heartbeat")
        data = json.loads(fq("status", "--json").stdout)
        text = fq("status").stdout
    assert data["unserved"] == ["orphan"]
    assert (data["queues"]["served"]["workers"], data["queues"]["orphan"]["workers"]) == (1, 0)
    assert data["queues"]["served"]["done"] == 6  # nodes
    assert data["queues"]["served"]["roots"] == {"unfinished": 0, "done": 3, "failed": 0}  # what was scheduled
    assert data["queues"]["orphan"]["roots"] == {"unfinished": 4, "done": 0, "failed": 0}
    queue, waiting, ready, running, done, failed, done_rate, failed_rate, workers, scheduled = row_of(text, "served")
    assert (done, workers, scheduled) == ("6", "1", "3 done")
    assert row_of(text, "orphan")[-2:] == ["no worker", "4 open"]
    assert "warning: queue orphan has 4 unfinished task(s) and no live worker serves it; start one: " \
           "forrestq worker --queue orphan" in text
    assert "warning: queue served" not in text


def test_status_shows_a_refusing_worker_with_its_reason_and_it_serves_nobody(url, r):
    Queue("q").schedule(defer(tasks.identity, 1))
    reason = "secret differs: fingerprint 0badf00d, other workers 1a2b3c4d [bold]x[/bold]"
    fake_worker(r, "hostR:41:aa", fingerprint="0badf00d", refusing=reason)
    data = json.loads(fq("status", "--json").stdout)
    (w,) = data["workers"]
    assert (w["state"], w["refusing"], w["fingerprint"]) == ("refusing", reason, "0badf00d")
    assert data["queues"]["q"]["workers"] == 0 and data["unserved"] == ["q"]
    out = fq("status")
    cells = row_of(out.stdout, "hostR")
    assert cells[-1] == "refusing"
    assert f"refusing: worker on hostR (pid 41) claims no tasks: {reason}" in " ".join(out.stdout.split())


def test_the_worker_startup_line_names_its_queues_and_the_fingerprint_of_its_secret(url, tmp_path):
    secret = "a-secret-for-the-banner-test"
    signing.set_secret(secret)
    try:
        fingerprint = signing.fingerprint()
    finally:
        signing.use_environment()
    assert re.fullmatch(r"[0-9a-f]{8}", fingerprint)
    log = tmp_path / "worker.log"
    with worker(url, ["first", "second"], 1, env={"FORRESTQ_SECRET": secret}, log=log):
        wait_for(lambda: "forrestq worker " in log.read_text(), timeout=30, what="the startup line")
    (line,) = [x for x in log.read_text().splitlines() if "forrestq worker " in x]
    assert "queues first, second," in line and f"payloads signed (secret fingerprint {fingerprint})" in line
    assert secret not in log.read_text()


# --- 6. help and --version -------------------------------------------------------------------------------


def test_help_shows_no_type_metavars_flags_bare_options_plain():
    for args in ([], *([c] for c in COMMANDS)):
        text = cli(*args, "--help").stdout
        assert not re.search(r"<(bool|int|str|float|path|list\[str\])>", text), (args, text)
    worker_help = cli("worker", "--help").stdout
    assert re.search(r"--queue\s+-q\s+NAME\s", worker_help) and re.search(r"--procs\s+-p\s+N\s", worker_help)
    assert re.search(r"--quiet\s+Log nothing", worker_help)  # a flag: nothing between it and its help
    status_help = cli("status", "--help").stdout
    assert re.search(r"--json\s+Print JSON", status_help) and re.search(r"--watch\s+-w\s+Refresh", status_help)
    assert re.search(r"--verbose\s+-v\s+Show tracebacks", status_help)
    root = cli("--help").stdout
    assert "Examples:" in root and "forrestq worker --procs 8 --queue fits" in root
    assert re.search(r"--version\s+Print the version", root)


def test_version():
    out = fq("--version")
    assert out.returncode == 0 and out.stdout == f"forrestq {forrestq.__version__}\n" == "forrestq 0.1.0\n"


# --- 7. narrow terminals -------------------------------------------------------------------------------------


def test_status_in_a_narrow_terminal_drops_columns_and_never_cuts_a_number(url, r):
    q = Queue("narrow-queue")
    q.schedule_many([defer(tasks.identity, i) for i in range(1234)])
    fake_worker(r, "hostN:1672345:bb", queues="narrow-queue", busy=3, done=1_000_000, failed=2, rss=34 << 20)
    for columns in (200, 100, 60, 40):
        out = fq("status", env={"COLUMNS": str(columns)})
        assert out.returncode == 0, out.stderr
        assert "…" not in out.stdout, out.stdout
        assert max(len(line) for line in out.stdout.splitlines()) <= columns, out.stdout
        host = row_of(out.stdout, "hostN")
        assert "1672345" in host  # the pid is kept whole at every width
        assert "34.0 MiB" in host or "memory" in out.stdout.split("left out to fit")[-1], out.stdout
        assert "1,234" in row_of(out.stdout, "narrow-queue")  # ready
    wide = fq("status", env={"COLUMNS": "200"}).stdout
    assert "left out" not in wide
    assert row_of(wide, "hostN")[:7] == ["hostN", "1672345", "narrow-queue", "3/4", "1,000,000", "2", "34.0 MiB"]


# --- 8 and 9. the task listing: errors and metadata ---------------------------------------------------------


def test_tasks_shows_the_error_type_and_the_end_of_a_long_message(url):
    q = Queue("errs")
    message = "while reading " + "very long context " * 12 + "the useful end: item 17"
    ref = q.schedule(defer(tasks.crash, message))
    with worker(url, "errs", 1):
        assert len(list(q.results(timeout=60))) == 1
    out = fq("tasks", "-q", "errs")
    error = cells_of(out.stdout, ref.id)[-1]
    assert error.startswith("ValueError: …") and error.endswith("the useful end: item 17"), error
    assert len(error) <= 125
    assert json.loads(fq("tasks", "-q", "errs", "--json").stdout)[0]["reason"] == f"ValueError: {message}"


def test_json_gives_metadata_as_json_where_it_is_json(url):
    q = Queue("md")
    values = [{"item": 182, "tags": ["a", "b"], "ok": True, "x": None, "f": 1.5}, (1, 2), "text",
              {1, 2}, {3: "int key"}, float("nan")]
    refs = q.schedule_many([defer(tasks.identity, i) for i in range(len(values))], metadata=values)
    got = {t["id"]: t["metadata"] for t in json.loads(fq("tasks", "-q", "md", "--json").stdout)}
    assert [got[ref.id] for ref in refs] == [values[0], [1, 2], "text", "{1, 2}", "{3: 'int key'}", "nan"]
    assert json.loads(fq("show", refs[0].id, "--json").stdout)["metadata"] == values[0]
    assert "{'item': 182" in fq("show", refs[0].id).stdout  # the table view keeps the repr


# --- 10. the state filter on a big queue -----------------------------------------------------------------


def test_tasks_state_filter_finds_running_tasks_at_the_end_of_a_big_queue(url, r):
    """25,000 unfinished tasks, the 3 running ones created last: the filter reads the whole todo
    zset (the old one gave up after 20,000 and said there were none)."""
    n, running = 25_000, 3
    now = time.time()
    r.sadd("fq:queues", "big")
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        state = "running" if i >= n - running else "ready"
        pipe.hset(f"fq:{{big}}:t:t{i:05d}", mapping={"st": state, "name": "tasks.identity", "ct": now + i / 1e6})
        pipe.zadd("fq:{big}:todo", {f"t{i:05d}": now + i / 1e6})
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.hset("fq:{big}:counts", mapping={"ready": n - running, "running": running})
    pipe.execute()
    t0 = time.monotonic()
    found = json.loads(fq("tasks", "-q", "big", "-s", "running", "--json").stdout)
    assert [t["id"] for t in found] == [f"t{i:05d}" for i in range(n - running, n)]
    assert time.monotonic() - t0 < 30
    assert "no running tasks" not in fq("tasks", "-q", "big", "-s", "running").stdout
    assert len(json.loads(fq("tasks", "-q", "big", "-s", "ready", "--json", "-n", "5").stdout)) == 5
    assert "no waiting tasks" in fq("tasks", "-q", "big", "-s", "waiting").stdout  # the counters say 0


# --- 11. smaller edges -----------------------------------------------------------------------------------


def test_server_info_after_stop_says_it_was_stopped(fq_home):
    assert "no local server was started yet" in fq("server", "--info").stdout
    ensure_local_server()
    assert fq("server", "--stop").stdout.strip() == "stopped the local server"
    out = fq("server", "--info")
    assert out.returncode == 0 and "local server: stopped" in out.stdout and "was started yet" not in out.stdout
    assert json.loads(fq("server", "--info", "--json").stdout)["state"] == "stopped"


def test_server_stop_warns_in_one_line_that_workers_are_connected(fq_home):
    local = redis.Redis.from_url(ensure_local_server())
    fake_worker(local, "hostC:777:cc", queues="q")
    local.close()
    out = fq("server", "--stop")
    assert out.returncode == 0 and out.stdout.strip() == "stopped the local server"
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("forrestq: warning: 1 live worker(s) still connected: hostC (pid 777)"), line
    local = redis.Redis.from_url(ensure_local_server())  # the record came back from the AOF: remove it
    local.zrem("fq:workers", "hostC:777:cc")
    local.delete("fq:w:hostC:777:cc")
    local.close()
    out = fq("server", "--stop")
    assert out.returncode == 0 and out.stderr == ""


def test_clean_answered_no_deletes_nothing_and_exits_0(url):
    q = Queue("cln2")
    q.schedule_many([defer(tasks.identity, i) for i in range(2)])
    out = fq("clean", "-q", "cln2", "--all", input="n\n")
    assert out.returncode == 0 and out.stdout.strip() == "nothing deleted", (out.stdout, out.stderr)
    assert "Aborted" not in out.stderr and q.counts()["ready"] == 2
    out = fq("clean", "-q", "cln2", "--all", input="")  # no answer at all
    assert out.returncode == EXIT_FAILURE and "Aborted" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == \
        "forrestq: no answer: nothing deleted (pass --yes to delete without asking)"
    assert q.counts()["ready"] == 2


def test_a_data_directory_that_cannot_be_one_is_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.delenv("FORRESTQ_URL", raising=False)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    # /proc: an existing directory nobody may create files in, also for root
    for home in (str(a_file), str(a_file / "below"), "/proc"):
        for args in (["status"], ["server", "--info"], ["worker", "--procs", "1"]):
            out = fq(*args, env={"FORRESTQ_HOME": home}, timeout=30)
            one_error_line(out, EXIT_USAGE, home)


def test_server_on_a_port_in_use_is_one_line(tmp_path):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = fq("server", "--port", str(port), "--data", str(tmp_path / "d"), timeout=30)
    one_error_line(out, EXIT_USAGE, f"port {port} is already in use")
    assert out.stdout == ""


def test_an_unreadable_secret_file_names_the_option_the_user_gave(url, tmp_path):
    missing = tmp_path / "no-such-secret"
    line = one_error_line(fq("worker", "--queue", "q", "--secret-file", str(missing)), EXIT_USAGE,
                          f"--secret-file {missing}", "No such file or directory")
    assert "$FORRESTQ_SECRET_FILE" not in line
