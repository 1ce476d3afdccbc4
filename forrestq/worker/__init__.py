"""The worker: a supervising process (:mod:`.supervisor`) and the children it forks (:mod:`.child`),
which run each task through :class:`forrestq.runner.Runner`.

=====================  ===========================================================================
module                 owns
=====================  ===========================================================================
``supervisor``         ``Worker``, ``WorkerConfig``: the supervision loop (named steps), children's
                       lives and deaths, what becomes of a dead child's task
``bookkeeping``        the worker's Redis side: outbox, lease renewal, published state, the sweep
``child``              a child's claim/run/complete loop (and the async lanes)
``refusals``           tasks this host cannot load (a missing module, another secret): handed to
                       another host, or failed once every live host refused them
``peers``              the other live workers (hosts, queues, secret fingerprints); what became of a
                       task an attempt of ours lost
``slots``              the shared-memory slots (a seqlock) through which children say what they hold
``procs``              prctl, process trees, signals in words, output capture, back-off
``access``             the checks at start that the Redis user may do what a worker does (one line,
                       exit 4, before any child starts)
=====================  ===========================================================================
"""
from .supervisor import Worker, WorkerConfig, default_host

__all__ = ["Worker", "WorkerConfig", "default_host"]
