"""Dramatiq broker and actors for the benchmark: RedisBroker on db 0 of $BENCH_REDIS_URL, Results
middleware with a RedisBackend on db 1 (so that DBSIZE of db 1 counts finished messages)."""
import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
RESULTS_URL = URL.rsplit("/", 1)[0] + "/1"

broker = RedisBroker(url=URL)
broker.add_middleware(Results(backend=RedisBackend(url=RESULTS_URL)))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, max_retries=0)
def noop():
    return None


@dramatiq.actor(store_results=True, max_retries=0)
def sleep10():
    time.sleep(0.01)
