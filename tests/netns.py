"""Several "hosts" on one Linux machine: network namespaces joined by a private switch.

Used by tests/test_multihost.py (needs root and iproute2's ``ip``; :func:`unavailable` says why not).

Layout (``TAG`` = ``fqtest-<pid>-<random>``, so that concurrent runs never meet)::

    namespace TAG-switch:  bridge br0, one port per host (p-<host>)
    namespace TAG-<host>:  lo, eth0 (the other end of p-<host>) with 10.213.0.<n>/24

Everything lives in namespaces created here: the root namespace gets no interface, no address and
no route, and the hosts have no route beyond 10.213.0.0/24 (there is no gateway), so nothing they do
can reach another network. Processes run in a host with ``ip netns exec`` (:meth:`Lab.popen`).
:meth:`Lab.close` kills every process in every namespace of the lab and deletes the namespaces; it
runs even when the test fails, and a later run removes what a killed run left behind
(:func:`remove_stale`).

Also here: :func:`serve_main`, run inside a host to give it a ``ServerProcess`` bound to its address,
and task functions the workers import (this directory is on their PYTHONPATH).
"""
from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

SUBNET = "10.213.0"  # /24, exists only inside the lab's namespaces
PREFIX = "fqtest"
IP_TIMEOUT = 30.0  # seconds for one `ip` command


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=check)


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None if they can (a probe namespace is
    created and deleted)."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux, not {sys.platform}"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed: apt-get install -y iproute2"
    if os.geteuid() != 0:
        return f"network namespaces need root (this runs as uid {os.geteuid()})"
    probe = f"{PREFIX}-probe-{os.getpid()}"
    try:
        made = ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"`ip netns add` failed: {made.stderr.strip() or made.returncode}"
        ran = ip("netns", "exec", probe, "ip", "link", "set", "lo", "up", check=False)
        if ran.returncode != 0:
            return f"`ip netns exec` failed: {ran.stderr.strip() or ran.returncode}"
        return None
    except (OSError, subprocess.SubprocessError) as e:
        return f"`ip netns` does not work: {e}"
    finally:
        ip("netns", "del", probe, check=False)


def namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list", check=False).stdout.splitlines() if line.strip()]


def ns_pids(ns: str) -> list[int]:
    return [int(p) for p in ip("netns", "pids", ns, check=False).stdout.split()]


def kill_namespace(ns: str, timeout: float = 10.0) -> None:
    """SIGKILL every process in namespace ``ns`` until none is left (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in ns_pids(ns) if p != os.getpid()]
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.05)


def remove_stale() -> None:
    """Delete the namespaces of lab runs whose process is gone (a run killed before its clean-up)."""
    for ns in namespaces():
        m = re.fullmatch(rf"{PREFIX}-(?:probe-)?(\d+)(?:-.+)?", ns)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            kill_namespace(ns)
            ip("netns", "del", ns, check=False)


class Lab:
    """A switch and hosts in network namespaces; ``with Lab() as lab: lab.add_host("a")``."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}-{os.getpid()}-{os.urandom(3).hex()}"
        self.switch = f"{self.tag}-switch"
        self.hosts: dict[str, str] = {}  # host -> address
        self.made: list[str] = []  # namespaces created, in order
        self.procs: list[subprocess.Popen] = []

    # --- building ---------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        try:
            remove_stale()
            self._netns(self.switch)
            ip("-n", self.switch, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
            ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _netns(self, name: str) -> None:
        ip("netns", "add", name)
        self.made.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def add_host(self, host: str) -> str:
        """A namespace for ``host`` plugged into the switch; returns its address."""
        address = f"{SUBNET}.{10 + len(self.hosts)}"
        ns, port = self.ns(host), f"p-{host}"[:15]
        self._netns(ns)
        ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        self.hosts[host] = address
        return address

    def address(self, host: str) -> str:
        return self.hosts[host]

    # --- processes --------------------------------------------------------------------------
    def popen(self, host: str, argv: list[str], env: dict[str, str] | None = None,
              log: Path | None = None, stdin: Any = subprocess.DEVNULL,
              stdout: Any = None) -> subprocess.Popen:
        """Start ``argv`` inside ``host``, in its own session. Its output (stderr, and stdout unless
        ``stdout`` is given) is appended to ``log``, or dropped."""
        out: Any = open(log, "ab") if log is not None else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns(host), *argv], env=env,
                                    start_new_session=True, stdin=stdin,
                                    stdout=out if stdout is None else stdout, stderr=out)
        finally:
            if log is not None:
                out.close()
        self.procs.append(proc)
        return proc

    def pids(self, host: str) -> list[int]:
        return ns_pids(self.ns(host))

    def kill_host(self, host: str) -> list[int]:
        """SIGKILL every process of ``host`` (a host that dies at once); returns their pids."""
        pids = self.pids(host)
        kill_namespace(self.ns(host))
        return pids

    def link(self, host: str, up: bool) -> None:
        """Plug ``host``'s cable into the switch, or pull it (its switch port goes down; the host's
        own eth0 stays configured and loses its carrier, as with a cut cable)."""
        ip("-n", self.switch, "link", "set", f"p-{host}"[:15], "up" if up else "down")

    # --- tearing down -----------------------------------------------------------------------
    def close(self) -> None:
        for ns in reversed(self.made):
            kill_namespace(ns)
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for ns in reversed(self.made):
            ip("netns", "del", ns, check=False)
        self.made.clear()


def read_line(stream: IO[bytes], timeout: float) -> str:
    """One line from a child's pipe within ``timeout`` seconds ("" at EOF); TimeoutError otherwise."""
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise TimeoutError(f"no line within {timeout:g} s")
        return stream.readline().decode()
    finally:
        sel.close()


# --- run inside a namespace ------------------------------------------------------------------------


def serve_main() -> None:
    """A ``ServerProcess`` bound to this host's address with a password, plus a UNIX socket for the
    test process (outside the namespaces). Prints "ready", then runs until stdin closes.
    Configured by $FQ_DATA, $FQ_BIND, $FQ_PORT, $FQ_SOCK, $FQ_PASSWORD (never on a command line)."""
    from forrestq.server import ServerProcess

    e = os.environ
    proc = ServerProcess(Path(e["FQ_DATA"]), port=int(e["FQ_PORT"]), bind=e["FQ_BIND"],
                         password=e["FQ_PASSWORD"], unixsocket=Path(e["FQ_SOCK"]))
    proc.start()
    try:
        print("ready", flush=True)
        sys.stdin.read()  # until the test closes our stdin, or dies
    finally:
        proc.stop()


def schedule_main() -> None:
    """Schedule ``N`` :func:`host_task` tasks on queue ``NAME`` ($FORRESTQ_URL): argv NAME N LOG
    SECONDS. Prints the task ids, one line."""
    from forrestq import Queue, defer

    name, n, log, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    q = Queue(name)
    refs = q.schedule_many([defer(host_task, log, f"t{i}", seconds) for i in range(n)])
    print(" ".join(ref.id for ref in refs), flush=True)


# --- task functions (imported by the workers) ------------------------------------------------------


def host_task(log: str, name: str, seconds: float) -> str:
    """Log "NAME HOST START_TIME", sleep, and return the host that ran it ($FORRESTQ_HOST)."""
    host = os.environ.get("FORRESTQ_HOST", "?")
    with open(log, "a") as f:
        f.write(f"{name} {host} {time.time():.6f}\n")
    time.sleep(seconds)
    return host
