"""Micro-benchmark of the scheduling hot path: Planner.add of 100,000 ``defer(f, i)`` roots.

Prints microseconds per task (median of 5 runs), split into building the deferred values (defer)
and planning them (Planner.add: dump_fn, dump_args, node specs). No Redis.

    python bench/codec.py            # or: python -m bench.codec
"""
from __future__ import annotations

import statistics
import time

from forrestq.deferred import defer
from forrestq.plan import Planner

N = 100_000
RUNS = 5


def work(x: int) -> int:
    """The task function: importable by name, so it pickles by reference."""
    return x * 2


def one_run() -> tuple[float, float]:
    start = time.perf_counter()
    roots = [defer(work, i) for i in range(N)]
    built = time.perf_counter()
    planner = Planner()
    add = planner.add
    for root in roots:
        add(root)
    done = time.perf_counter()
    return (built - start) / N * 1e6, (done - built) / N * 1e6


def main() -> None:
    runs = [one_run() for _ in range(RUNS)]
    defer_us = statistics.median(r[0] for r in runs)
    plan_us = statistics.median(r[1] for r in runs)
    best = min(r[1] for r in runs)
    print(f"defer(work, i):      {defer_us:.2f} us/task")
    print(f"Planner.add(root):   {plan_us:.2f} us/task  (median of {RUNS} runs of {N:,} roots; "
          f"best {best:.2f})")


if __name__ == "__main__":
    main()
