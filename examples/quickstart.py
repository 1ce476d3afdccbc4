"""forrestq quickstart: a few hundred task trees on local workers, with a progress bar and a summary.

Run: python examples/quickstart.py   (no server needed: the embedded local one starts on demand)
"""
import math
import random
import time

from forrestq import Queue, defer


def prepare(item):
    """Some slow set-up: returns (item, an object with a `thing` attribute)."""
    time.sleep(random.uniform(0, 0.01))
    return item, Params(scale=1 + item % 7)


class Params:
    def __init__(self, scale):
        self.thing = scale


def dostuff(item, thing):
    if item % 97 == 13:
        raise ValueError(f"item {item} is cursed")  # some work fails: it is recorded, not lost
    return math.sqrt(item) * thing


def main() -> int:
    q = Queue("quickstart", pre_clean=True)  # a fresh run each time (never deletes running tasks)
    refs = []
    for item in range(300):
        t = defer(prepare, item)
        t = defer(dostuff, t[0], t[1].thing)  # a task tree: indexing/getattr of a deferred value is deferred
        refs.append(q.schedule(t, metadata={"item": item}))

    done, failed, total = 0, [], 0.0
    for task in q.run(procs=2, progress=True):  # starts 2 local worker processes, stops them at the end
        if task.state == "done":
            done += 1
            total += task.returnvalue
        else:
            failed.append((task.metadata["item"], task.reason))
    print(f"{done} done, {len(failed)} failed, sum of results {total:.1f}")
    for item, reason in failed:
        print(f"  item {item}: {reason}")
    return 0 if done + len(failed) == len(refs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
