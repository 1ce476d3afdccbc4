"""The Redis schema: every key, hash field, state and stream field forrestq writes, spelled once.

Python reads the names below; the Lua scripts use the same names (:func:`lua_constants`), which
the script loader (:mod:`forrestq.ops`) replaces by their values, so no script spells a field.

Every key of a queue carries the queue name as a hash tag, ``fq:{name}:...``, so that all keys of
one queue live in one Redis Cluster slot and the multi-key Lua scripts stay valid on a cluster.

Per queue ``q`` (prefix ``fq:{q}:``):

=========================  ======  ==================================  ==========================
key                        type    what                                written by
=========================  ======  ==================================  ==========================
``fq:{q}:stream``          stream  ready task ids (field ``t``); group  schedule/complete/reclaim
                                   ``workers``; an entry is deleted    (XADD), complete (XACK+XDEL)
                                   once its task ends or is re-added
``fq:{q}:counts``          hash    state -> number of tasks (waiting,  every script
                                   scheduled, ready, running, done,
                                   failed) and
                                   of roots: ``open`` (not finished
                                   yet), ``roots_done``,
                                   ``roots_failed``
``fq:{q}:todo``            zset    ids of unfinished tasks that have   schedule, complete,
                                   no stream entry and are not in      requeue, takeover
                                   ``delayed``: waiting ones (and ones
                                   taken over), by the time they began
                                   waiting (``forrestq.unfinished``
                                   reads the three indexes as one)
``fq:{q}:done``            zset    ids of done tasks, by finish time   complete
``fq:{q}:failed``          zset    ids of failed tasks, by finish time complete
``fq:{q}:delayed``         zset    ids of SCHEDULED tasks (a delay or  schedule (delay/at),
                                   ``at``, a retry backoff), by the    complete (retry, release);
                                   server-clock time they are due      claim and promote move due
                                                                       ones to the stream
``fq:{q}:stream:p<n>``     stream  ready tasks of priority n (1..9),   schedule(priority=), every
                                   same group; a nudge entry on the    push of such a task
                                   stream itself wakes blocked children (include/stream.lua)
``fq:{q}:stream:levels``   zset    the priority levels above 0 in use  include/stream.lua (ZADD NX)
``fq:{q}:expiry``          zset    finished roots with a result TTL,   complete (ZADD), expire
                                   by the server-clock time they       (worker timekeeper: deletes
                                   expire                              the due ones, clean.lua)
``fq:{q}:result_ttl``      string  the queue's default result TTL (s)  Queue(result_ttl=) (SET),
                                   for new roots; unset: kept for ever producer; read by schedule
``fq:{q}:periodic``        zset    periodic schedule name -> its next  Queue.every/cron, pause
                                   due time (server clock, s); paused: (+inf), resume, remove;
                                   +inf                                periodic_tick (next due)
``fq:{q}:p:<name>``        hash    one periodic schedule: PERIODIC_*   the same; periodic_tick
                                   fields, and the task it plans once  (CAS on PERIODIC_NEXT and
                                   (TASK_* fields of one node)         PERIODIC_SPEC)
``fq:{q}:finished``        stream  finished root tasks (``t`` id,      complete
                                   ``g`` generation): what
                                   ``Queue.results`` blocks on
``fq:{q}:t:<id>``          hash    one task (DAG node): payload,       schedule, claim, complete
                                   state, attempts, fencing token,
                                   result or error (fields: TASK_*)
``fq:{q}:d:<id>``          set     ids of the nodes that wait on       schedule; deleted by clean
                                   ``<id>``'s result
``fq:{q}:lease:<id>``      string  fencing token of the attempt that   claim (SET PX), renew,
                                   holds the task; expires (PX)        complete (DEL)
``fq:{q}:fn:<sha1>``       string  a serialised function,              schedule (SET NX)
                                   content-addressed
``fq:{q}:signer``          string  fingerprint of the secret the       schedule (SET)
                                   producers sign payloads with
                                   (``signing.fingerprint()``):
                                   a worker with another one knows
                                   it is the misconfigured host
``fq:{q}:sweep``           string  guard: one reclaim sweep per        worker (SET NX PX)
                                   interval per queue
``fq:{q}:once:<v>:lease:`` string  owner token (random, host, pid) of  once_claim.lua (SET NX
``<key>``                          the process running ``<key>``'s     PX), once_renew.lua,
                                   body; expires (PX) unless renewed   once_confirm/once_release
                                   (``lease=``; ``timeout=``: never)   (DEL, token-checked)
``fq:{q}:once:<v>:k:``     hash    one exactly-once key under version  once_claim, once_confirm,
``<key>``                          ``<v>``: state (running, done,      once_release, once_renew,
                                   failed, expired), claim token,      once_sweep, once_mark
                                   host, pid, times, attempts, reason
                                   (fields ONCE_*; absent: free)
``fq:{q}:once:<v>:s:``     zset    the keys in state ``<state>``       the same scripts (a key is
``<state>``                        (score 0, read by lex range: a      in exactly one of the four)
                                   prefix listing reads only those)
``fq:{q}:blob:<sha256>``   string  a shared input (``Queue.put``):     shared.put (SET NX)
                                   its pickle, content-addressed; over
                                   64 MiB a small head naming parts
``fq:{q}:blob:<sha256>:``  string  part ``<i>`` of a shared input over  shared.put (SET NX)
``<i>``                            64 MiB (64 MiB each)
``fq:{q}:events``          stream  a task's history: one entry per     schedule, claim, complete,
                                   state change (EVENT_* fields; the   reclaim, requeue, release,
                                   entry id is its time), XADD MAXLEN  refuse (include/events.lua)
                                   ~ the cap below
``fq:{q}:events:cap``      string  how many events the queue keeps     Queue(events=...) (SET),
                                   (approximately); "0" or unset:      producer (again with each
                                   none (events are opt-in)            schedule)
``fq:{q}:unfit``           hash    task id -> its request, for tasks   release.lua (RELEASE_UNFIT);
                                   a worker handed back because it     the child that starts one
                                   has less than they need (forrestq   deletes it (HDEL); read by
                                   status: "no live worker has it")    forrestq.status
``fq:{q}:stats``           hash    per function name: runs             complete (HINCRBY; not for
                                   (``STATS_RUNS`` + name) and failed   a cancel), read by
                                   ones (``STATS_FAILED`` + name)      forrestq.stats
``fq:{q}:stats:s:<name>``  list    the function's last STATS_SAMPLES   complete (LPUSH + LTRIM),
                                   measured runs, newest first:        for attempts with evidence
                                   "runtime peak_rss host" (STATS_SEP) (a pid)
``fq:{q}:progress``        zset    ids of running tasks that reported  progress.lua (ZADD; ZREM at
                                   progress (TASK_PROGRESS), by the    the task's end); readers
                                   time of their last report: what     (forrestq.reading) drop
                                   the bars and status read            ids no longer running
``fq:{q}:lost``            hash    LOST_ATTEMPTS: attempts lost so far reclaim.lua (HINCRBY, each
                                   (a worker vanished: its lease       running task found lost); metrics
                                   expired); read
                                   by /metrics (issue 19)
=========================  ======  ==================================  ==========================

Global keys (no hash tag: they are never used inside a script):

=========================  ======  ==================================  ==========================
``fq:queues``              set     names of the queues ever scheduled  Queue.schedule
``fq:workers``             zset    worker id -> last heartbeat (s)     worker
``fq:w:<worker id>``       hash    one worker: host, pid, procs,       worker (with a TTL of
                                   busy, done, failed, rss, queues,    3 heartbeats)
                                   env (its environment's id),
                                   resources (what it has),
                                   job (its batch job: "slurm:<id>")
``fq:env:<env id>``        string  one environment fingerprint, once:  worker (SET EX ENV_TTL, once
                                   JSON of python, forrestq, platform, its children run; refreshed
                                   sorted "name==version" list         hourly)
``fq:wenv:<worker id>``    string  the env id a worker ran in (tasks   worker (SET EX ENV_TTL);
                                   name their worker: TASK_WORKER)     read by forrestq show
``fq:wctl:<worker id>``    string  a request to that worker: "stop"    the dashboard (SET EX
                                   (finish running tasks, then exit)   CONTROL_TTL); read by the
                                                                       worker at each heartbeat
``fq:dashboard``           string  the URL of a running dashboard      forrestq dashboard (SET EX
                                                                       DASHBOARD_TTL, renewed);
                                                                       read by forrestq show
=========================  ======  ==================================  ==========================

Per-task keys (``t:``, ``d:``, ``lease:``) are reached inside Lua from the ids the scripts read
(dependents are only known once the script runs). The scripts build them from the queue prefix,
which every script receives as ARGV[1], and the suffixes ``SUFFIX_*`` of the header; they always
share the queue's hash tag, so they sit in the slot of the KEYS the script was called with.

Worker hash ``fq:w:<id>`` fields: ``WORKER_*`` below.
"""
from __future__ import annotations

import re

from .errors import ConfigError, shown

GROUP = "workers"  # the consumer group of every queue stream

# --- task states (also the counter fields of ``fq:{q}:counts``) ------------------------------------
WAITING = "waiting"
SCHEDULED = "scheduled"  # its time (delay=, at=, a retry backoff) has not come: in fq:{q}:delayed
READY = "ready"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
STATES = (WAITING, SCHEDULED, READY, RUNNING, DONE, FAILED)
FINISHED_STATES = (DONE, FAILED)
COUNT_OPEN = "open"  # counter: roots not finished yet
# counters of the roots (what users scheduled) that finished; the state counters above count DAG nodes
COUNT_ROOTS_DONE = "roots_done"
COUNT_ROOTS_FAILED = "roots_failed"
ROOT_COUNTS = (COUNT_OPEN, COUNT_ROOTS_DONE, COUNT_ROOTS_FAILED)

# --- outcomes a worker reports to complete.lua (besides DONE and FAILED) ----------------------------
RETRY = "retry"  # back to ready after a delay (a retry policy matched)
CONTINUED = "continued"  # the task returned a deferred tree: it waits (WAITING) for that tree's root (issue 15)

# --- protocol words of the scripts (replies and modes; Python callers compare with these) ------------
CLAIM_SKIP = "skip"  # claim.lua's reply ({CLAIM_SKIP}) for a delivered stream entry that was stale
# claim.lua's ARGV[9] for "the entries this consumer's blocking XREADGROUP, sent just before in the same
# pipeline, delivered": claimed from its pending entries (forrestq.worker.claims.Claims.wait)
CLAIM_DELIVERED = "delivered"
FOLLOW_FAILED = "failed"  # requeue.lua mode: follow only dependents that failed because of an input
FOLLOW_ALL = "all"  # requeue.lua mode: follow every dependent, whatever its state (rerun)
ONCE_DONE = "d"  # once_claim.lua status letter: the key completed before (skipped)
ONCE_BUSY = "b"  # once_claim.lua status letter: another lease holds the key
ONCE_CLAIMED = "c"  # once_claim.lua status letter: claimed by this call
ONCE_FREE = "free"  # once_release/once_mark mode: the key goes back to free (its record is deleted)
RELEASE_WAIT = "wait"  # release.lua mode: not startable here now (its resources): TASK_WAITS + 1
RELEASE_UNFIT = "unfit"  # release.lua mode: needs more than this host's worker has: noted on the task

# --- exactly-once keys (fq:{q}:once:<v>:k:<key> hashes, fq:{q}:once:<v>:s:<state> indexes) -----------
EXPIRED = "expired"  # once state: the lease ended before its holder settled the key
ONCE_STATES = (RUNNING, DONE, FAILED, EXPIRED)  # "free" (no record) is not stored
ONCE_STATE = "st"  # one of ONCE_STATES
ONCE_TOKEN = "tok"  # owner token of the latest claim
ONCE_HOST = "host"  # host of the latest claim (or of mark_done)
ONCE_PID = "pid"
ONCE_CLAIMED_AT = "t0"  # ms, server clock: the latest claim
ONCE_UNTIL = "until"  # ms, server clock: the end of the lease (moved by each renewal)
ONCE_SETTLED_AT = "t1"  # ms, server clock: done, failed, or (expired) the end of the lease
ONCE_ATTEMPTS = "n"  # claims so far
ONCE_REASON = "why"  # why it failed or expired
ONCE_RENEWED = "renew"  # "1": a lease renewed by its holder (lease=); "": not renewed (timeout=)
SUFFIX_ONCE_KEY = "k:"  # below fq:{q}:once:<v>: (the leases are SUFFIX_LEASE there)
SUFFIX_ONCE_STATE = "s:"

# claim.lua, in place of an allow-failed task's failed input: "<this><id>|<upstream>|<n>|<error blob><reason>"
# (no pickle nor signed blob starts so; forrestq.codec.load_input makes a forrestq.Failed of it)
INPUT_FAILED = "fq!failed:"
INPUT_SEP = "|"  # between the parts above (task ids never hold it: producer._SAFE_KEY)

# --- stream entry fields -----------------------------------------------------------------------------
ENTRY_TASK = "t"  # task id, in fq:{q}:stream and fq:{q}:finished entries
ENTRY_GEN = "g"  # generation of the finished task, in fq:{q}:finished entries

# --- the event stream fq:{q}:events (issue 13): entries {EVENT_KIND, ENTRY_TASK, then EVENT_* fields} ------
EVENT_KIND = "k"  # one of EVENT_KINDS
EVENT_HOST = "h"  # host of the attempt
EVENT_ATTEMPT = "n"  # the attempt's number (1 = first start)
EVENT_REASON = "why"  # one line: a failure's reason, the error that is retried
EVENT_NAME = "fn"  # the function's qualified name (scheduled)
EVENT_RUNTIME = "rt"  # seconds the attempt ran (done, failed, retried)
EVENT_DELAY = "d"  # seconds before the retry may start (retried)
EVENT_SCHEDULED = "scheduled"  # a new node: waiting for its inputs or ready
EVENT_STARTED = "started"  # claimed by a worker child (host, attempt)
EVENT_DONE = "done"
EVENT_FAILED = "failed"  # (reason) ran and failed, killed, lost too often, or an input failed
EVENT_RETRIED = "retried"  # failed with an error its retry policy matches: ready again after a delay
EVENT_LOST = "lost"  # its worker vanished (lease expired): ready again, or failed next when out of attempts
EVENT_RELEASED = "released"  # handed back unrun or unfinished (worker stopping, host cannot load it)
EVENT_REQUEUED = "requeued"  # requeue_failed / rerun: waiting or ready again under a new generation
EVENT_CANCELLED = "cancelled"
EVENT_CONTINUED = "continued"  # returned a deferred tree: waits for it (its own done/failed event follows)
EVENT_KINDS = (EVENT_SCHEDULED, EVENT_STARTED, EVENT_DONE, EVENT_FAILED, EVENT_RETRIED, EVENT_LOST,
               EVENT_RELEASED, EVENT_REQUEUED, EVENT_CANCELLED, EVENT_CONTINUED)
EVENTS_CAP = "100000"  # events a queue keeps (approximately) with Queue(events=True); events=N: about N
EVENTS_OFF = "0"  # the cap of a queue that keeps no events (a count: the scripts spell it '0')

# --- task hash fields (kept short: they are stored once per task) -------------------------------------
TASK_FN = "fn"  # sha1 of the function blob (fq:{q}:fn:<sha1>)
TASK_ARGS = "a"  # serialised (args, kwargs) with references to the inputs
TASK_INPUTS = "in"  # comma-separated ids of the input nodes, in reference order
TASK_NAME = "name"  # qualified function name, for listings
TASK_STATE = "st"  # one of STATES
TASK_ROOT = "root"  # "1" when scheduled by the user (results() yields it)
TASK_META = "md"  # serialised metadata
TASK_TIMEOUT = "to"  # seconds, "" for the worker's --autokill
TASK_MAX_ATTEMPTS = "ma"
TASK_ATTEMPTS = "n"
TASK_TOKEN = "tok"  # fencing token of the current (or last) attempt
TASK_STREAM_ID = "sid"  # id of the task's entry in fq:{q}:stream while ready or running
TASK_PENDING = "pend"  # inputs not finished yet
TASK_CREATED = "ct"
TASK_STARTED = "t0"
TASK_FINISHED = "t1"
TASK_HOST = "host"
TASK_WORKER = "wk"
TASK_RESULT = "rv"  # serialised return value
TASK_ERROR = "ev"  # serialised exception
TASK_TRACEBACK = "tb"  # text
TASK_REASON = "why"  # one line a person can act on
TASK_RUNTIME = "rt"
TASK_OUTPUT = "out"  # last 64 KiB of stdout+stderr
TASK_UPSTREAM = "up"  # id of the failed input that failed this node
TASK_GEN = "g"  # generation: bumped by every requeue/rerun
TASK_KEY = "key"  # user key for idempotent scheduling
TASK_RETRY_POLICY = "rp"  # serialised (retries, backoff seconds, exception types)
TASK_RETRIES_USED = "rtn"
TASK_LOST_ON = "lost"  # host of the last attempt that was lost
TASK_REFUSED = "rfd"  # comma-separated distinct hosts that could not load the task (refuse.lua)
TASK_IO_BOUND = "io"  # "1": an IO-bound coroutine, may share a child's event loop (claim.lua returns it)
TASK_SOFT_TIMEOUT = "sto"  # seconds before TimeLimitExceeded is raised in the task, "" for the worker's
TASK_CPU = "cpu"  # CPU seconds of the attempt (user + system, its waited-for processes too)
TASK_PEAK_RSS = "mem"  # peak resident bytes of the attempt (forrestq.worker.forensics)
TASK_PID = "pid"  # pid of the process that ran the attempt
TASK_STACK = "stk"  # Python stack at death (a time-limit kill, a crash), text
TASK_RESOURCES = "res"  # what the task needs, "cpus=2,gpu=1,mem=6442450944" (forrestq.resources); "": cpus=1
TASK_WAITS = "rw"  # times handed back unrun for its resources (release.lua RELEASE_WAIT/RELEASE_UNFIT)
TASK_UNFIT = "unfit"  # comma-separated distinct hosts whose worker has less than the task needs
TASK_LIMITS = "lim"  # comma-separated limit keys the task holds while it runs (issue 16; forrestq.limits)
# the attempt's progress (forrestq.progress() inside the task; progress.lua, fenced by TASK_TOKEN): JSON
# {"done", "total", "message", "at", "tok"}; "tok" is the writer's token: shown only while it is TASK_TOKEN
TASK_PROGRESS = "prg"
# dynamic DAGs (issue 15)
TASK_CONT = "cont"  # on a task that returned a deferred tree: id of that tree's root (its continuation)
TASK_OWNER = "cof"  # on each node a continuation created: the id of the task whose continuation it is
TASK_ALLOW_FAILED = "af"  # "1": runs when inputs failed, getting forrestq.Failed for each (allow_failed)
# delayed and periodic tasks (issue 16)
TASK_DUE = "due"  # server-clock time (s) before which it does not start (delay=, at=); absent: at once
TASK_PERIODIC = "per"  # the name of the periodic schedule whose tick made it
# result expiry (issue 16)
TASK_RESULT_TTL = "rttl"  # on a root: seconds its finished record is kept (result_ttl=); absent: for ever
# priorities (issue 16)
TASK_PRIORITY = "pri"  # its priority level, 1..PRIORITY_MAX (schedule(priority=)); absent: 0, the stream itself

TASK_FIELDS = tuple(v for k, v in sorted(globals().items()) if k.startswith("TASK_") and k != "TASK_FIELDS")
# every field of a task record but its argument payload, which can be large and is never shown
RECORD_FIELDS = tuple(sorted(set(TASK_FIELDS) - {TASK_ARGS}))

# --- worker hash fields (fq:w:<id>) ---------------------------------------------------------------------
WORKER_HOST = "host"
WORKER_PID = "pid"
WORKER_PROCS = "procs"
WORKER_BUSY = "busy"
WORKER_DONE = "done"
WORKER_FAILED = "failed"
WORKER_RSS = "rss"
WORKER_QUEUES = "queues"  # comma-separated
WORKER_STARTED = "started"
WORKER_BEAT = "beat"
WORKER_STOPPING = "stopping"  # 1 while the worker stops
WORKER_FINGERPRINT = "fingerprint"  # signing.fingerprint() of its secret ("none": no secret)
WORKER_REFUSING = "refusing"  # why it stopped claiming tasks (its secret differs); "" while it claims
WORKER_ENV = "env"  # id of its environment fingerprint (fq:env:<id>); "" until computed
WORKER_RESOURCES = "resources"  # what it has, in forrestq.resources' text form ("cpus=8,gpu=2,mem=...")
WORKER_JOB = "job"  # the batch job it runs in, from $FORRESTQ_JOB ("slurm:<job id>"; "" outside one)

# --- function statistics (fq:{q}:stats, fq:{q}:stats:s:<name>; forrestq.stats) --------------------------
STATS_RUNS = "n:"  # field prefix of fq:{q}:stats: runs of a function that ended (done or failed)
STATS_FAILED = "f:"  # field prefix of fq:{q}:stats: those of them that failed
STATS_SEP = " "  # between the parts of a sample: runtime, peak_rss, host (the host last: it may hold spaces)
STATS_SAMPLES = "1000"  # recent runs kept per function: p50/p95 are over these

# --- periodic schedules (fq:{q}:p:<name> hashes besides the TASK_* fields of their task; forrestq.periodic) ----
PERIODIC_EVERY = "every"  # interval in seconds ("" for a cron schedule)
PERIODIC_CRON = "cron"  # the cron expression ("" for an interval)
PERIODIC_TZ = "tz"  # the IANA zone the cron expression is read in ("" = UTC)
PERIODIC_NEXT = "next"  # next due time (s, server clock), as text: the tick's compare-and-set value
PERIODIC_SPEC = "spec"  # random token of this registration: a tick planned from an older one is refused
PERIODIC_PAUSED = "paused"  # "1" while paused
PERIODIC_LAST = "last"  # due time of the last tick that made a task
PERIODIC_LAST_TASK = "lt"  # id of that task
PERIODIC_RUNS = "runs"  # ticks that made a task
PERIODIC_CREATED = "ct"  # when it was first registered (s, server clock)
PERIODIC_FIELDS = (PERIODIC_EVERY, PERIODIC_CRON, PERIODIC_TZ, PERIODIC_NEXT, PERIODIC_SPEC, PERIODIC_PAUSED,
                   PERIODIC_LAST, PERIODIC_LAST_TASK, PERIODIC_RUNS, PERIODIC_CREATED)
SUFFIX_PERIODIC = "p:"

# --- environment fingerprints (fq:env:<id>, fq:wenv:<worker id>; forrestq.environment) -------------------
ENV_TTL = 30 * 86400  # seconds an environment description (and a worker's env id) is kept

# --- key suffixes below a queue's prefix ------------------------------------------------------------------
SUFFIX_TASK = "t:"
SUFFIX_DEPENDENTS = "d:"
SUFFIX_LEASE = "lease:"
SUFFIX_FN = "fn:"
SUFFIX_BLOB = "blob:"
SUFFIX_EVENTS = "events"
SUFFIX_EVENTS_CAP = "events:cap"
SUFFIX_STATS = "stats"
SUFFIX_STATS_SAMPLES = "stats:s:"
SUFFIX_PROGRESS = "progress"
# concurrency and rate limits by key (issue 16; limit_acquire.lua, forrestq.limits): below the prefix,
# + the key's name: its holders (hash: task id -> the token of the attempt holding it, counted only while
# that token holds the task's lease), its rate window (zset: "<id>:<token>" -> start time, server clock)
# and the tasks handed back waiting for it (zset: task id -> when, server clock)
SUFFIX_LIMIT_HOLDERS = "lim:h:"
SUFFIX_LIMIT_STARTS = "lim:r:"
SUFFIX_LIMIT_WAITING = "lim:w:"
LIMIT_SEP = " "  # between the two numbers of a rate ("<starts> <per seconds>"), and id and token in its window
LIMIT_WAITING_FOR = 10.0  # seconds a hand-back keeps a task counted as waiting for a key (status)
SUFFIX_RESULT_TTL = "result_ttl"  # string: the queue's default result TTL (s) for new roots (Queue(result_ttl=))
SUFFIX_EXPIRY = "expiry"  # zset: finished roots with a result TTL -> server-clock time they expire
PRIORITY_MAX = 9  # priorities are 0 (the default: the queue's stream) .. PRIORITY_MAX, higher first
STREAM_LEVEL = ":p"  # after the stream's key: the stream of one priority level above 0 (fq:{q}:stream:p<n>)
STREAM_LEVELS = ":levels"  # after the stream's key: zset of the levels above 0 in use (member = score = level)
LEVEL_SEP = "/"  # TASK_STREAM_ID of a task on a level above 0: "<level>/<entry id>" (include/stream.lua)
EXPIRE_RETRY = "60"  # s: an expired root an unfinished task still needs is looked at again this much later
EXPIRE_LIMIT = 200  # expired roots deleted per queue per timekeeper look (the rest: the next looks)

QUEUES = "fq:queues"
DASHBOARD = "fq:dashboard"  # string: the URL of a running dashboard (issue 19), kept DASHBOARD_TTL s unless renewed
DASHBOARD_TTL = 30  # seconds; the dashboard renews it every few seconds (forrestq.dashboard.serve)
LOST_ATTEMPTS = "attempts"  # field of fq:{q}:lost: attempts lost with their worker (HINCRBY: in the worker's ACL)
CONTROL_STOP = "stop"  # a worker control request (fq:wctl:<id>): finish the running tasks, then exit
CONTROL_TTL = 600  # seconds a control request waits for its worker's heartbeat (a gone worker never reads it)

_NAME = re.compile(r"^[A-Za-z0-9_.:@/+=-]{1,128}$")


def check_name(name: object) -> str:
    """``name`` if it is a valid queue name (it becomes part of every key of the queue)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"bad queue name {shown(name)}: use 1 to 128 letters, digits or _ . : @ / + = -")
    return name

WORKERS = "fq:workers"


def worker(worker_id: str) -> str:
    """The hash of one worker."""
    return f"fq:w:{worker_id}"


def worker_control(worker_id: str) -> str:
    """A request to one worker (CONTROL_STOP), read at its heartbeats (forrestq.worker.remote)."""
    return f"fq:wctl:{worker_id}"


def environment(env_id: str) -> str:
    """One environment fingerprint's description (JSON), stored once per fingerprint."""
    return f"fq:env:{env_id}"


def worker_environment(worker_id: str) -> str:
    """The id of the environment a worker runs in (outlives the worker: its tasks name it)."""
    return f"fq:wenv:{worker_id}"


class QueueKeys:
    """Key names of one queue."""

    __slots__ = ("name", "prefix", "stream", "counts", "todo", "done", "failed", "finished", "sweep",
                 "delayed", "signer", "events", "events_cap", "stats", "unfit", "progress", "periodic",
                 "limits", "rates",
                 "result_ttl", "expiry", "levels", "lost")

    def __init__(self, name: str) -> None:
        self.name = name
        self.prefix = f"fq:{{{name}}}:"
        p = self.prefix
        self.stream = p + "stream"
        self.counts = p + "counts"
        self.todo = p + "todo"
        self.done = p + "done"
        self.failed = p + "failed"
        self.finished = p + "finished"
        self.sweep = p + "sweep"
        self.delayed = p + "delayed"
        self.signer = p + "signer"
        self.events = p + SUFFIX_EVENTS
        self.events_cap = p + SUFFIX_EVENTS_CAP
        self.stats = p + SUFFIX_STATS
        self.unfit = p + "unfit"
        self.progress = p + SUFFIX_PROGRESS
        self.periodic = p + "periodic"
        self.limits = p + "limits"  # hash: limit key -> how many tasks holding it may run at once
        self.rates = p + "rates"  # hash: limit key -> "<starts> <per seconds>" (at most that many starts per window)
        self.result_ttl = p + SUFFIX_RESULT_TTL
        self.expiry = p + SUFFIX_EXPIRY
        self.levels = self.stream + STREAM_LEVELS
        self.lost = p + "lost"  # hash: LOST_ATTEMPTS -> attempts lost so far (the worker sweep counts them; /metrics)

    def task(self, task_id: str) -> str:
        return self.prefix + SUFFIX_TASK + task_id

    def level_stream(self, level: int | str) -> str:
        """The ready stream of priority ``level`` (0: the queue's stream itself; include/stream.lua)."""
        return self.stream if str(level) in ("", "0") else self.stream + STREAM_LEVEL + str(level)

    def dependents(self, task_id: str) -> str:
        return self.prefix + SUFFIX_DEPENDENTS + task_id

    def lease(self, task_id: str) -> str:
        return self.prefix + SUFFIX_LEASE + task_id

    def fn(self, sha: str) -> str:
        return self.prefix + SUFFIX_FN + sha

    def schedule(self, name: str) -> str:
        """One periodic schedule (hash: PERIODIC_* fields and the TASK_* fields of its task)."""
        return self.prefix + SUFFIX_PERIODIC + name

    def once_prefix(self, version: int) -> str:
        """Prefix of the exactly-once keys of ``version`` (the once_* scripts extend it)."""
        return f"{self.prefix}once:{version}:"

    def once_lease(self, version: int, key: str) -> str:
        """Lease of one exactly-once key."""
        return self.once_prefix(version) + SUFFIX_LEASE + key

    def once_record(self, version: int, key: str) -> str:
        """Record (hash, fields ONCE_*) of one exactly-once key."""
        return self.once_prefix(version) + SUFFIX_ONCE_KEY + key

    def once_index(self, version: int, state: str) -> str:
        """Lex-ordered zset of the exactly-once keys of ``version`` in ``state`` (one of ONCE_STATES)."""
        return self.once_prefix(version) + SUFFIX_ONCE_STATE + state

    def once_indexes(self, version: int) -> list[str]:
        """The four state indexes, in the order of ONCE_STATES (KEYS[1..4] of every once_* script)."""
        return [self.once_index(version, state) for state in ONCE_STATES]

    def stats_samples(self, name: str) -> str:
        """The recent samples (list) of function ``name`` (complete.lua builds it from the prefix)."""
        return self.prefix + SUFFIX_STATS_SAMPLES + name

    def blob(self, sha: str) -> str:
        """A shared input, content-addressed by the sha256 of its pickle."""
        return self.prefix + SUFFIX_BLOB + sha

    def limit_holders(self, key: str) -> str:
        """The holders of limit ``key`` (hash: task id -> token; limit_acquire.lua builds it from the prefix)."""
        return self.prefix + SUFFIX_LIMIT_HOLDERS + key

    def limit_starts(self, key: str) -> str:
        """The recent starts of tasks holding rate-limited ``key`` (zset scored by server time)."""
        return self.prefix + SUFFIX_LIMIT_STARTS + key

    def limit_waiting(self, key: str) -> str:
        """Tasks handed back because ``key`` was full (zset: task id -> when, server time)."""
        return self.prefix + SUFFIX_LIMIT_WAITING + key

    def pattern(self) -> str:
        """Glob matching every key of this queue (for clean-up by SCAN)."""
        return glob_escape(self.prefix) + "*"


def glob_escape(text: str) -> str:
    """``text`` with the glob characters of a SCAN MATCH pattern escaped."""
    return "".join("\\" + c if c in "*?[]{}\\" else c for c in text)


# a task's attempts when its record names none (Queue(max_attempts=) and schedule(max_attempts=) store theirs)
DEFAULT_MAX_ATTEMPTS = "3"
TOKEN_SEP = "."  # the n-th task of one claim of several is fenced by token + TOKEN_SEP + n (claim.lua)
# a node's flags as write_nodes takes it (include/nodes.lua, ops.nodes_argv): one letter each, "" = none
NODE_ROOT, NODE_IO, NODE_ALLOW = "r", "i", "w"  # a root; io-bound; allow-failed
NODE_HAS_META, NODE_HAS_KEY, NODE_HAS_OPTIONS = "m", "u", "o"  # its metadata, key, own options follow

_LUA_NAMES = ("DEFAULT_MAX_ATTEMPTS", "TOKEN_SEP", "NODE_ROOT", "NODE_IO", "NODE_ALLOW", "NODE_HAS_META",
              "NODE_HAS_KEY", "NODE_HAS_OPTIONS", "LOST_ATTEMPTS", "WAITING", "READY", "RUNNING", "DONE",
              "FAILED", "COUNT_OPEN", "COUNT_ROOTS_DONE", "COUNT_ROOTS_FAILED", "RETRY", "ENTRY_TASK",
              "ENTRY_GEN", "SUFFIX_TASK", "SUFFIX_DEPENDENTS", "SUFFIX_LEASE", "CLAIM_SKIP", "CLAIM_DELIVERED",
              "FOLLOW_ALL", "ONCE_DONE", "ONCE_BUSY", "ONCE_CLAIMED", "ONCE_FREE", "EXPIRED", "ONCE_STATE",
              "ONCE_TOKEN",
              "ONCE_HOST", "ONCE_PID", "ONCE_CLAIMED_AT", "ONCE_UNTIL", "ONCE_SETTLED_AT", "ONCE_ATTEMPTS",
              "ONCE_REASON", "ONCE_RENEWED", "SUFFIX_ONCE_KEY",
              # the event stream (include/events.lua)
              "SUFFIX_EVENTS", "SUFFIX_EVENTS_CAP", "EVENT_KIND", "EVENT_HOST",
              "EVENT_ATTEMPT", "EVENT_REASON", "EVENT_NAME", "EVENT_RUNTIME", "EVENT_DELAY", "EVENT_SCHEDULED",
              "EVENT_STARTED", "EVENT_DONE", "EVENT_FAILED", "EVENT_RETRIED", "EVENT_LOST", "EVENT_RELEASED",
              "EVENT_REQUEUED", "EVENT_CANCELLED",
              # resources (release.lua; forrestq.worker.capacity)
              "RELEASE_WAIT", "RELEASE_UNFIT",
              # dynamic DAGs (issue 15: continuations, allow_failed inputs)
              "CONTINUED", "EVENT_CONTINUED", "INPUT_FAILED", "INPUT_SEP",
              # delayed and periodic tasks (issue 16)
              "SCHEDULED", "PERIODIC_NEXT", "PERIODIC_SPEC", "PERIODIC_PAUSED", "PERIODIC_LAST",
              "PERIODIC_LAST_TASK", "PERIODIC_RUNS",
              # result expiry (issue 16)
              "SUFFIX_RESULT_TTL", "EXPIRE_RETRY",
              # priorities (issue 16)
              "GROUP", "STREAM_LEVEL", "STREAM_LEVELS", "LEVEL_SEP",
              # concurrency and rate limits by key (issue 16; limit_acquire.lua)
              "SUFFIX_LIMIT_HOLDERS", "SUFFIX_LIMIT_STARTS", "SUFFIX_LIMIT_WAITING", "LIMIT_SEP",
              # function statistics (include/stats.lua)
              "SUFFIX_STATS", "SUFFIX_STATS_SAMPLES", "STATS_RUNS", "STATS_FAILED", "STATS_SEP", "STATS_SAMPLES")


def lua_constants() -> dict[str, str]:
    """The names Lua scripts may use for fields, states and protocol words (``TASK_STATE`` -> ``'st'``
    ...). The script loader (:mod:`forrestq.ops`) writes each value in place of its name before the
    script reaches the server, so a script never spells a field and pays nothing for naming it."""
    names = [n for n in sorted(globals()) if n.startswith("TASK_") and n != "TASK_FIELDS"]
    return {n: globals()[n] for n in (*names, *_LUA_NAMES)}
