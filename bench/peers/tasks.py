"""Plain task functions, for the systems that take any importable function (forrestq, RQ)."""
import time


def noop():
    return None


def sleep10():
    time.sleep(0.01)


def combine(seed, *inputs):
    """A DAG node (forrestq's DAG figure): a small integer derived from its inputs."""
    return (seed + sum(inputs)) % 1_000_003


def where():
    """The file the worker side imported forrestq from (checks ``--forrestq-base``), symlinks resolved."""
    import os

    import forrestq

    return os.path.realpath(forrestq.__file__)
