"""asyncio (issue 20): ``await q.wait_async(ref)``, ``async for task in q.results_async()`` and
``await`` of executor futures, inside a running event loop. Real server, real worker processes."""
from __future__ import annotations

import asyncio
import concurrent.futures as cf

import pytest
import tasks_executor as tx
from procs import worker, worker_env

from forrestq import ConfigError, Queue, UnknownTask, aio, defer


@pytest.fixture
def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", worker_env()["PYTHONPATH"])


def test_a_gather_of_100_wait_async_calls(url, importable, tmp_path):
    q = Queue("aio-100")
    gate = tmp_path / "gate"
    refs = list(q.schedule_many([defer(tx.gated, str(gate), i * i) for i in range(100)]))

    async def main():
        waits = asyncio.gather(*(q.wait_async(ref, timeout=60) for ref in refs))
        h = aio.hub(q.core)

        async def registered():  # every wait registered, and one reader reads
            while len(h.pending) < 100 or h.reader is None:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(registered(), 30)
        readers = {id(t) for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "Hub._read"}
        gate.touch()  # now the tasks may finish: the reader settles the waits
        got = await waits
        return got, len(readers), (h.reader, h.pending, h.active)

    with q.workers(2):
        got, readers, after = asyncio.run(main())
    assert [t.id for t in got] == [r.id for r in refs]
    assert [t.returnvalue for t in got] == [i * i for i in range(100)]
    assert readers == 1 and after == (None, {}, 0)


def test_wait_async_of_a_finished_task_an_unknown_one_and_a_timeout(url):
    q = Queue("aio-edges")
    ref = q.schedule(defer(tx.square, 3))
    waiting = q.schedule(defer(tx.square, 4))

    async def main():
        with pytest.raises(TimeoutError, match="did not finish within 0.2 s"):
            await q.wait_async(waiting, timeout=0.2)
        with pytest.raises(UnknownTask):
            await q.wait_async("nope")
        with worker(url, "aio-edges", 1):
            first = await q.wait_async(ref, timeout=60)
        again = await q.wait_async(ref)  # finished already: at once, no reader
        return first, again

    first, again = asyncio.run(main())
    assert first.returnvalue == again.returnvalue == 9


def test_wait_async_leaves_the_loop_free_while_it_waits(url, importable):
    q = Queue("aio-free")
    ref = q.schedule(defer(tx.sleep_then, 0.5, "late"))

    async def main():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        task = await q.wait_async(ref, timeout=60)
        ticker.cancel()
        return task, ticks

    with q.workers(1):
        task, ticks = asyncio.run(main())
    assert task.returnvalue == "late" and ticks >= 10


def test_results_async_yields_every_root_once_and_returns(url, importable):
    q = Queue("aio-results")
    refs = q.schedule_many([defer(tx.add, i, 1) for i in range(30)])
    failing = q.schedule(defer(tx.boom, "async boom"))

    async def main():
        return [t async for t in q.results_async(timeout=60)]

    with q.workers(2):
        got = asyncio.run(main())
    assert sorted(t.id for t in got) == sorted([r.id for r in refs] + [failing.id])
    by_id = {t.id: t for t in got}
    assert [by_id[r.id].returnvalue for r in refs] == list(range(1, 31))
    assert "async boom" in by_id[failing.id].traceback


def test_executor_futures_are_awaitable(url, importable):
    q = Queue("aio-exec")

    async def main(ex):
        values = await asyncio.gather(*(ex.submit(tx.square, i) for i in range(10)))
        wrapped = await asyncio.wrap_future(ex.submit(tx.add, 2, 3))
        with pytest.raises(ValueError, match="awaited boom"):
            await ex.submit(tx.boom, "awaited boom")
        return values, wrapped

    with q.executor(procs=2) as ex:
        values, wrapped = asyncio.run(main(ex))
    assert values == [i * i for i in range(10)] and wrapped == 5


def test_debug_mode_and_bad_timeouts(url):
    q = Queue("aio-debug", local=True)
    ref = q.schedule(defer(tx.square, 6))

    async def main():
        with pytest.raises(ConfigError):
            await q.wait_async(ref, timeout=-1)
        return await q.wait_async(ref, timeout=30), [t.id async for t in q.results_async()]

    task, rest = asyncio.run(main())
    assert task.returnvalue == 36 and rest == [ref.id]  # results: every root since the queue began


def test_a_cluster_url_falls_back_to_a_thread():
    class Core:
        local = False
        url = "redis+cluster://127.0.0.1:7000/"

    assert not aio.served_here(Core())  # type: ignore[arg-type]
    Core.url = "redis://127.0.0.1:6379/0"
    assert aio.served_here(Core())  # type: ignore[arg-type]


def test_the_executor_future_is_a_concurrent_future(url):
    q = Queue("aio-cf")
    ex = q.executor(procs=0)
    assert isinstance(ex.submit(tx.square, 2), cf.Future)
    ex.shutdown()
