"""Regenerate docs/status.svg and docs/status.txt: what `forrestq status` shows for a small demo.

Runs everything privately: its own server (a ServerProcess in a temporary directory) and one worker
process, so it never touches your FORRESTQ_URL or the local background server.

    python docs/make_status_capture.py [OUTPUT_DIR]     # default: the directory of this script
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rich.console import Console

from forrestq import Queue, defer
from forrestq.cli.render import render_status
from forrestq.connection import connect, describe
from forrestq.queue import stop_worker
from forrestq.server import ServerProcess
from forrestq.status import gather

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # this module is also the workers' task module (`make_status_capture.fit`)

T = TypeVar("T")


def fit(i: int) -> float:
    """A stand-in for a slow, sometimes failing scientific call."""
    if i % 17 == 3:
        raise ValueError(f"no convergence for item {i}")
    return math.sqrt(i)


def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "ok"


def wait_for(predicate: Callable[[], T], timeout: float = 60.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def capture(out_dir: Path) -> str:
    """Run the demo, write status.txt and status.svg into ``out_dir``; return the text."""
    import make_status_capture as me  # by this name (sys.path above), so that the worker imports the functions

    with tempfile.TemporaryDirectory(prefix="fqdoc") as tmp, ServerProcess(Path(tmp) / "server") as server:
        fits, render = Queue("fits", server.url), Queue("render", server.url)
        fits.schedule_many([defer(me.fit, i) for i in range(60)], metadata=[{"item": i} for i in range(60)])
        env = {**os.environ, "FORRESTQ_HOST": "node01",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen([sys.executable, "-m", "forrestq", "worker", "--procs", "4", "--queue", "fits",
                                 "--queue", "render", "--url", server.url, "--quiet", "--grace", "0",
                                 "--lease", "3"], env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert len(list(fits.results(timeout=60))) == 60
            # some work in flight and a backlog, so that every column has something to show
            render.schedule_many([defer(me.slow, 30) for _ in range(3)])
            render.schedule_many([defer(me.slow, 1) for _ in range(12)])
            waiting = defer(me.slow, 30)
            render.schedule(defer(me.fit, waiting))
            r = connect(server.url)
            wait_for(lambda: render.counts()["running"] == 4
                     and any(w["busy"] == 4 for w in gather(r)["workers"]), what="busy workers")
            data = gather(r)
            with open(os.devnull, "w") as devnull:
                console = Console(record=True, width=120, force_terminal=True, color_system="truecolor",
                                  file=devnull, markup=False, emoji=False)
                console.print(render_status(data, describe(server.url)))
            out_dir.mkdir(parents=True, exist_ok=True)
            text = console.export_text(clear=False)
            (out_dir / "status.txt").write_text(text)
            console.save_svg(str(out_dir / "status.svg"), title="forrestq status")
            return text
        finally:
            stop_worker(proc)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    print(capture(target))
    print(f"wrote {target / 'status.svg'} and {target / 'status.txt'}", file=sys.stderr)
