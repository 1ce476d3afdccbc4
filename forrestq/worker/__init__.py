"""The worker: a supervising process (:mod:`.supervisor`) and the children it forks (:mod:`.child`),
which run each task through :class:`forrestq.runner.Runner`.

=====================  ===========================================================================
module                 owns
=====================  ===========================================================================
``supervisor``         ``Worker``, ``WorkerConfig``: the supervision loop (named steps), children's
                       lives and deaths, what becomes of a dead child's task
``bookkeeping``        the worker's Redis side: outbox, lease renewal, published state, the sweep
``child``              a child's claim/run/complete loop (and the async lanes)
``slots``              the shared-memory slots (a seqlock) through which children say what they hold
``procs``              prctl, process trees, signals in words, output capture, back-off
=====================  ===========================================================================
"""
from .supervisor import Worker, WorkerConfig, default_host

__all__ = ["Worker", "WorkerConfig", "default_host"]
