"""User text prints literally (issue 12): metadata, queue names, call arguments, reasons, output,
tracebacks and worker hosts are never read as rich markup or emoji codes by ``forrestq status``,
``tasks`` or ``show``, and never crash them."""
from __future__ import annotations

import io
import json

import tasks
from helpers import wait_for
from procs import worker
from rich.console import Console
from test_cli import fq, row_of

from forrestq import Queue, defer
from forrestq.cli import render
from forrestq.task import Task

UNBALANCED = "ratio [/red] 3"  # a closing tag with nothing open: rich raises MarkupError
LINK = "[link=http://x]docs[/link]"  # rich would hide "docs" behind a terminal hyperlink
BOLD = "[bold]loud[/bold] :smile:"  # a tag and an emoji code
EMOJI_QUEUE = "x:b:c"  # an allowed queue name; rich's emoji codes would make it x🅱c
HOST = "node[bold]7:b:"  # a worker host (FORRESTQ_HOST)
EMOJI = ("🅱", "😄")


def shout(text):
    """Print text, then fail with it: the output, the reason and the traceback all hold it."""
    print(f"said {text}", flush=True)
    raise ValueError(f"failed {text}")


def assert_literal(out, *expected):
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "MarkupError" not in out.stderr, out.stderr
    for text in expected:
        assert text in out.stdout, (text, out.stdout)
    assert not any(e in out.stdout for e in EMOJI), out.stdout


def test_queue_names_metadata_and_arguments_print_literally(url):
    q = Queue(EMOJI_QUEUE)
    metadata = [{"m": UNBALANCED}, LINK, BOLD]
    refs = q.schedule_many([defer(tasks.identity, BOLD) for _ in metadata], metadata=metadata)

    out = fq("status")
    assert_literal(out, EMOJI_QUEUE)
    assert row_of(out.stdout, EMOJI_QUEUE)[2] == "3"  # ready

    for args in (("tasks",), ("tasks", "-q", EMOJI_QUEUE)):
        out = fq(*args)
        assert_literal(out)
        for ref, md in zip(refs, metadata):
            cells = row_of(out.stdout, ref.id)
            assert repr(md) in cells, (md, cells)
            assert EMOJI_QUEUE in cells or args[1:] == ("-q", EMOJI_QUEUE)

    for ref, md in zip(refs, metadata):
        out = fq("show", ref.id)
        assert_literal(out, f"{ref.id}  (queue {EMOJI_QUEUE}, root)", repr(md),
                       f"tasks.identity({BOLD!r})")


def test_reason_output_traceback_and_host_print_literally(url):
    q = Queue("lit")
    ref = q.schedule(defer(shout, UNBALANCED), metadata=LINK)
    quiet = q.schedule(defer(tasks.identity, 1), metadata=BOLD)
    with worker(url, "lit", 1, env={"FORRESTQ_HOST": HOST}):
        assert len(list(q.results(timeout=60))) == 2
        wait_for(lambda: any(w["host"] == HOST for w in json.loads(fq("status", "--json").stdout)["workers"]),
                 timeout=30, what="the worker's heartbeat")
        out = fq("status")
        assert_literal(out, HOST)
        assert row_of(out.stdout, HOST)[2] == "lit"  # host, pid, queues

    out = fq("tasks", "-q", "lit")
    assert_literal(out)
    cells = row_of(out.stdout, ref.id)
    assert cells[1:3] == ["failed", "test_cli_render.shout"]
    assert repr(LINK) in cells and HOST in cells and cells[-1] == f"ValueError: failed {UNBALANCED}"
    assert repr(BOLD) in row_of(out.stdout, quiet.id)

    out = fq("show", ref.id)
    assert_literal(out, f"said {UNBALANCED}", f"ValueError: failed {UNBALANCED}", repr(LINK), HOST,
                   f"test_cli_render.shout({UNBALANCED!r})")
    assert "Traceback (most recent call last)" in out.stdout


def test_render_builds_user_text_as_literal_text():
    """The views themselves, without a server: nothing given as user data is parsed."""
    task = Task(EMOJI_QUEUE, "t1", {b"st": b"failed", b"name": b"mod.f", b"why": f"E: {UNBALANCED}\n2nd".encode(),
                                   b"host": HOST.encode(), b"tb": f"Traceback\nE: {LINK}".encode(),
                                   b"out": BOLD.encode(), b"in": b"a,b"})
    console = Console(record=True, width=200, file=io.StringIO())
    status = {"time": 0, "queues": {EMOJI_QUEUE: {"waiting": 0, "ready": 1, "running": 0, "done": 0,
                                                  "failed": 1, "done_per_min": 0, "failed_per_min": 0}},
              "workers": [{"host": HOST, "pid": 1, "queues": [EMOJI_QUEUE, LINK], "busy": 0, "procs": 1,
                           "done": 0, "failed": 0, "rss": 1, "age": 1.0, "state": "running"}]}
    console.print(render.render_status(status, "server " + LINK))
    console.print(render.tasks_view([task], None, None, False))
    console.print(render.task_detail(task, f"mod.f({BOLD!r})", [(1.0, "failed", HOST)], repr(LINK), [BOLD]))
    text = console.export_text()
    for expected in (EMOJI_QUEUE, HOST, f"{EMOJI_QUEUE},{LINK}", "server " + LINK, f"E: {UNBALANCED}",
                     f"E: {LINK}", BOLD, f"mod.f({BOLD!r})", repr(LINK), f"failed  on {HOST}"):
        assert expected in text, (expected, text)
    assert not any(e in text for e in EMOJI)
