"""Plain task functions, for the systems that take any importable function (forrestq, RQ)."""
import time


def noop():
    return None


def sleep10():
    time.sleep(0.01)
