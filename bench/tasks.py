"""Task functions of forrestq's own benchmarks (throughput, dag, scale, profile_worker).

Module-level and importable, so ``dump_fn`` pickles them by reference: a worker imports them by name
and no function is serialised per task.
"""
from __future__ import annotations

import time


def noop() -> None:
    return None


def sleep10() -> None:
    time.sleep(0.01)


def combine(seed: int, *inputs: int) -> int:
    """A DAG node: a small integer derived from its inputs (cheap, deterministic)."""
    return (seed + sum(inputs)) % 1_000_003
