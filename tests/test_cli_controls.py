"""Terminal control characters in user text print as visible escapes: a task's reason, output and
traceback cannot clear the screen (``ESC [2J``) or colour it from ``forrestq show``, ``forrestq
tasks`` or the worker's log."""
from __future__ import annotations

import json
from pathlib import Path

from helpers import wait_for
from procs import worker
from test_cli import fq, row_of

from forrestq import Queue, defer

ESC = "\x1b"
CLEAR = "\x1b[2J"
SHOWN = "\\x1b[2J"  # how CLEAR prints: backslash, x, 1, b, [2J


def paint_and_fail() -> None:
    print("\x1b[31mRED\x1b[0m", flush=True)
    raise ValueError(f"boom {CLEAR}")


def test_control_characters_print_escaped(url: str, tmp_path: Path) -> None:
    q = Queue("ctl")
    ref = q.schedule(defer(paint_and_fail))
    log = tmp_path / "w.log"
    with worker(url, "ctl", 1, log=log):
        assert len(list(q.results(timeout=60))) == 1
        wait_for(lambda: f"failed ctl {ref.id}" in log.read_text(errors="replace"), timeout=30,
                 what="the worker's task-end line")
    assert json.loads(fq("show", ref.id, "--json").stdout)["reason"] == f"ValueError: boom {CLEAR}"  # as raised

    text = log.read_text(errors="replace")
    assert ESC not in text, text
    assert f"failed ctl {ref.id} ValueError: boom {SHOWN}" in text, text

    out = fq("show", ref.id)
    assert out.returncode == 0, out.stderr
    assert ESC not in out.stdout, out.stdout
    assert f"ValueError: boom {SHOWN}" in out.stdout, out.stdout  # the reason and the traceback's last line
    assert out.stdout.count(SHOWN) >= 2, out.stdout
    assert "\\x1b[31mRED\\x1b[0m" in out.stdout, out.stdout  # the output box
    assert "Traceback (most recent call last)" in out.stdout

    out = fq("tasks", "--queue", "ctl")
    assert out.returncode == 0, out.stderr
    assert ESC not in out.stdout, out.stdout
    assert row_of(out.stdout, ref.id)[-1] == f"ValueError: boom {SHOWN}", out.stdout
