"""Celery app for the benchmark: Redis broker on db 0 of $BENCH_REDIS_URL, Redis result backend on db 1
(so that DBSIZE of db 1 counts finished tasks). Defaults otherwise (json, prefetch multiplier 4)."""
import os
import time

from celery import Celery

BROKER = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKEND = BROKER.rsplit("/", 1)[0] + "/1"

app = Celery("bench", broker=BROKER, backend=BACKEND)
app.conf.broker_connection_retry_on_startup = True


@app.task
def noop():
    return None


@app.task
def sleep10():
    time.sleep(0.01)
