"""Regenerate docs/dashboard-overview.png and docs/dashboard-task.png: the dashboard on a small demo.

Runs everything privately: its own server (a ServerProcess in a temporary directory), one worker and
one ``forrestq dashboard`` process on free ports, so it never touches your FORRESTQ_URL or the local
background server. Needs the test extra (Playwright) and a Chromium (``apt-get install chromium``;
or ``FORRESTQ_CHROMIUM=/path/to/chrome``).

    python docs/make_dashboard_screenshots.py [OUTPUT_DIR]     # default: the directory of this script
"""
from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from playwright.sync_api import sync_playwright

from forrestq import Queue, defer
from forrestq.queue import stop_worker
from forrestq.server import ServerProcess

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # this module is also the worker's task module (`make_dashboard_screenshots.fit`)

T = TypeVar("T")


def fit(i: int, scale: float = 1.0) -> float:
    """A stand-in for a slow, sometimes failing scientific call."""
    print(f"fitting item {i} (scale {scale})")
    if i % 13 == 5:
        raise ValueError(f"no convergence for item {i} after 200 iterations")
    time.sleep(0.02)
    return math.sqrt(i) * scale


def combine(*values: float) -> float:
    return sum(values)


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(address, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def demo(me: object, url: str) -> str:
    """Schedule the demo's work; return the id of the failed task whose page is captured."""
    fits, render = Queue("fits", url), Queue("render", url)
    parts = [defer(me.fit, i) for i in range(4, 8)]  # type: ignore[attr-defined]
    fits.schedule(defer(me.combine, *parts), metadata={"sample": "NGC 1300", "run": 7})  # type: ignore[attr-defined]
    fits.schedule_many([defer(me.fit, i) for i in range(60)], metadata=[{"item": i} for i in range(60)])  # type: ignore[attr-defined]
    render.schedule_many([defer(me.slow, 60) for _ in range(2)])  # type: ignore[attr-defined]
    render.schedule_many([defer(me.slow, 1) for _ in range(10)])  # type: ignore[attr-defined]
    wait_for(lambda: fits.counts()["done"] + fits.counts()["failed"] >= 60, what="the fits")
    return next(t.id for t in fits.fail_tasks(nodes=True) if t.name.endswith("fit") and t.inputs == [] and
                fits.descendants(t.id))


def capture(out_dir: Path) -> None:
    import make_dashboard_screenshots as me  # by this name (sys.path above): the worker imports the functions

    browser_path = os.environ.get("FORRESTQ_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser_path:
        raise SystemExit("no Chromium found: apt-get install chromium, or set FORRESTQ_CHROMIUM")
    with tempfile.TemporaryDirectory(prefix="fqdoc") as tmp, ServerProcess(Path(tmp) / "server") as server:
        env = {**os.environ, "FORRESTQ_HOST": "node01",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
        worker = subprocess.Popen([sys.executable, "-m", "forrestq", "worker", "--procs", "3", "--queue", "fits",
                                   "--queue", "render", "--url", server.url, "--quiet", "--grace", "0"],
                                  env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = free_port()
        dash = subprocess.Popen([sys.executable, "-m", "forrestq", "dashboard", "--url", server.url, "--port",
                                 str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            failed = demo(me, server.url)
            wait_for(lambda: answers(base + "/"), what="the dashboard")
            with sync_playwright() as p:
                b = p.chromium.launch(executable_path=browser_path, headless=True, args=["--no-sandbox"])
                try:
                    page = b.new_page(viewport={"width": 1200, "height": 900})
                    page.goto(base + "/")
                    short_ones = page.locator('.queue[data-queue="render"] [data-count="done"]')
                    short_ones.filter(has_text="10").wait_for(timeout=60_000)  # the 2 long ones still run
                    page.screenshot(path=str(out_dir / "dashboard-overview.png"), full_page=True)
                    page.goto(f"{base}/task/fits/{failed}")
                    page.locator("#traceback").wait_for()
                    page.screenshot(path=str(out_dir / "dashboard-task.png"), full_page=True)
                finally:
                    b.close()
        finally:
            dash.terminate()
            dash.wait(10)
            stop_worker(worker)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    capture(target)
    print(f"wrote {target / 'dashboard-overview.png'} and {target / 'dashboard-task.png'}")
