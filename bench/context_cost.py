"""What the task context costs a task that does not use it (issue 15): ``Runner.call`` of a no-op,
in this process, best of many repetitions, in microseconds per call.

    cd BASELINE && python -m bench.context_cost base   # a tree whose Runner.call sets no context
    cd /work/main && python -m bench.context_cost new

Run the two alternately a few times (the machine is shared): the difference of the best figures is
what setting the context (one small object, a ContextVar set and reset, a check for progress to
flush) costs per task. ``python -m bench.throughput`` measures the same on the no-op drain, where it
is lost in the noise (bench/RESULTS.md, "Task context and progress").
"""
from __future__ import annotations

import sys
import timeit

from forrestq import ops
from forrestq.runner import Loaded, Runner


def main() -> None:
    label = sys.argv[1] if len(sys.argv) > 1 else "this tree"
    try:
        from forrestq.context import Where
        runner = Runner(lambda key: None, "h", where=Where("redis://127.0.0.1:1", "h"))
    except ImportError:  # a tree from before the context
        runner = Runner(lambda key: None, "h")
    claimed = ops.Claimed("id", "", b"", b"", 0.0, 1, 3, b"", 0, [], "tok")
    loaded = Loaded(lambda: None, (), {}, "q")
    n = 100_000
    best = min(timeit.repeat(lambda: runner.call(claimed, loaded), number=n, repeat=25)) / n * 1e6
    print(f"{label}: Runner.call of a no-op {best:.3f} us (best of 25 x {n:,})")


if __name__ == "__main__":
    main()
