"""Huey instance for the benchmark: RedisHuey on db 0 of $BENCH_REDIS_URL with ``notify_result=True``
(result waits block on a per-task list instead of polling) and ``store_none=True`` (so that a no-op's
``None`` result is stored: HLEN of the result hash counts finished tasks)."""
import os
import time

from huey import RedisHuey

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

huey = RedisHuey("bench", url=URL, notify_result=True, store_none=True)


@huey.task()
def noop():
    return None


@huey.task()
def sleep10():
    time.sleep(0.01)
