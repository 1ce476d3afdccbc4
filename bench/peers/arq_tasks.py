"""arq worker settings for the benchmark (Redis at $BENCH_REDIS_URL, default queue ``arq:queue``).

``WorkerSettings`` keeps arq's defaults (poll_delay 0.5 s, max_jobs 10); ``FastWorkerSettings`` polls
every 10 ms (the ``arq-10ms`` variant). ``sleep10`` blocks its event loop on purpose: it stands for
blocking work, as in every other system. ``LOG_CONFIG`` (``--custom-log-dict``) logs warnings only, so
that no per-job log line is formatted (as with ``-q`` for the others).
"""
import os
import time

from arq.connections import RedisSettings

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


async def noop(ctx):
    return None


async def sleep10(ctx):
    time.sleep(0.01)


class WorkerSettings:
    functions = [noop, sleep10]
    redis_settings = RedisSettings.from_dsn(URL)


class FastWorkerSettings:  # arq reads the class __dict__ only: no inheritance
    functions = [noop, sleep10]
    redis_settings = RedisSettings.from_dsn(URL)
    poll_delay = 0.01


LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "loggers": {"arq": {"handlers": ["stderr"], "level": "WARNING"}},
}
