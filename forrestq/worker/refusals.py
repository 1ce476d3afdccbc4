"""Tasks this host cannot load, while another host might: hand them back rather than fail them.

A task fails to load here for a reason that may be this host's rather than the task's: a module (or a
name in it) the task needs is missing here (``WorkerImportError``), or its payload fails this worker's
signature check (``SignatureMismatch``: this worker may have another ``FORRESTQ_SECRET`` than the
producers). The rule (README, Guarantees):

* the child hands the task back unrun (its attempt not counted) and records this host on the task
  (``TASK_REFUSED``, distinct hosts): refuse.lua, fenced by the attempt's token;
* the task fails only once every live worker host serving its queue has refused it, or once
  :data:`MAX_HOSTS` distinct hosts have; its reason is the load error followed by the hosts that
  refused it. For a signature mismatch only workers whose secret differs from this one's count as
  hosts that might load it (a worker with the same secret would refuse it the same way), so a payload
  forged or altered by hand fails at once, as before; and when the producers sign with another secret
  than this worker's (their fingerprint is in ``fq:{q}:signer``), this host is the misconfigured one:
  it never fails the task, even alone, and hands it back for a worker with the producers' secret;
* the task goes to the end of the stream, where an idle worker elsewhere (blocked reading it) gets
  it at once, and the refusing child pauses before it claims again, longer the more it keeps refusing
  (:data:`PAUSE_FIRST` s doubling up to :data:`PAUSE_CAP` s): a refusing host does not spin on the
  tasks it cannot run;
* a signature hand-back is counted in the child's slot; a worker whose children handed back
  :data:`SIGNATURE_LIMIT` payloads in a row stops claiming and says why
  (:meth:`forrestq.worker.supervisor.Worker.check_refusals`).
"""
from __future__ import annotations

import time

import redis

from .. import log, ops, signing
from ..runner import BAD_SIGNATURE, REFUSED, Outcome
from ..schema import QueueKeys
from .peers import Peer, live_peers
from .slots import Slot

__all__ = ["MAX_HOSTS", "PAUSE_CAP", "PAUSE_FIRST", "SIGNATURE_LIMIT", "Refuser", "stop_claiming_words"]

logger = log.get("child")

MAX_HOSTS = 3  # distinct refusing hosts after which a task fails, whoever else lives
PAUSE_FIRST = 0.2  # seconds a child pauses after a hand-back; doubled at each hand-back in a row
PAUSE_CAP = 2.0  # seconds: longest pause of a child between claims while it keeps handing back
SIGNATURE_LIMIT = 3  # signature hand-backs in a row after which a worker stops claiming
PEERS_TTL = 1.0  # seconds the list of live workers is reused
PRODUCERS_SECRET = "(a worker with the producers' secret)"  # stands for the hosts a signature refusal waits for
NEVER = 1 << 30  # distinct hosts: a task whose producers' secret no live worker holds is never failed for it


class Refuser:
    """Refusals of one child (``host``; ``slot``: its own slot, where signature hand-backs are counted)."""

    def __init__(self, r: redis.Redis, scripts: ops.Scripts, host: str, slot: Slot) -> None:
        self.r = r
        self.scripts = scripts
        self.host = host
        self.slot = slot
        self.in_row = 0  # hand-backs since this child last loaded a task
        self.ready_at = 0.0  # monotonic time before which this child should not claim
        self._peers: tuple[float, list[Peer]] = (-PEERS_TTL, [])  # (when read, the live workers)

    def loaded(self) -> None:
        """A task loaded fine here: the hand-backs in a row (and their pauses) end."""
        if self.in_row:
            self.in_row = 0
        if self.slot.refused:
            self.slot.refused = 0

    def hosts_that_might(self, k: QueueKeys, refusal: str) -> list[str]:
        """The live hosts that might load a task of queue ``k`` this host refused for ``refusal``:
        workers serving the queue and claiming (for a signature: with another secret than this one's);
        this host first."""
        now = time.monotonic()
        if now - self._peers[0] >= PEERS_TTL:
            self._peers = (now, live_peers(self.r))
        mine = signing.fingerprint()
        hosts = [self.host]
        if refusal == BAD_SIGNATURE and self.producers_differ(k):
            hosts.append(PRODUCERS_SECRET)  # a host that would load it may come: never fail it here
        for p in self._peers[1]:
            if p.claiming and k.name in p.queues and p.host not in hosts and \
                    not (refusal == BAD_SIGNATURE and p.fingerprint == mine):
                hosts.append(p.host)
        return hosts

    def producers_differ(self, k: QueueKeys) -> bool:
        """Whether the producers of queue ``k`` sign with another secret than this worker's (they say
        which in ``fq:{q}:signer`` at every schedule): then this host is the misconfigured one."""
        theirs = self.r.get(k.signer)
        return theirs is not None and theirs.decode() != signing.fingerprint()

    def refuse(self, k: QueueKeys, c: ops.Claimed, outcome: Outcome) -> Outcome:
        """Settle a task that this host could not load (``outcome``: the failure to load it): an
        outcome of state REFUSED (handed back, or no longer ours: nothing to record), or the failure
        to record, its reason naming the hosts that refused it."""
        hosts = self.hosts_that_might(k, outcome.refusal)
        most = NEVER if PRODUCERS_SECRET in hosts else MAX_HOSTS
        verdict = ops.refuse(self.scripts, k, ops.RefuseArgs(c.id, c.token, self.host, hosts, most))
        if verdict.must_fail:  # recorded as failed: nothing comes back to spin on
            which = f"{len(verdict.hosts)} hosts" if len(verdict.hosts) >= MAX_HOSTS else \
                f"every live worker host of queue {k.name}"
            outcome.reason = f"{outcome.reason}; refused by {which}: {', '.join(verdict.hosts)}"
            return outcome
        if verdict.handed_back:
            self.in_row += 1
            self.ready_at = time.monotonic() + min(PAUSE_CAP, PAUSE_FIRST * 2 ** (self.in_row - 1))
            if outcome.refusal == BAD_SIGNATURE:
                self.slot.refused += 1
            logger.info("refused %s %s: %s; handed back for another host (refused so far on %s)", k.name, c.id,
                        outcome.reason, ", ".join(verdict.hosts))
        else:
            logger.debug("refused %s %s, which this attempt no longer held", k.name, c.id)
        return Outcome(REFUSED, reason=outcome.reason)

    def pause(self, stop: Slot) -> None:
        """Wait until this child may claim again (at most PAUSE_CAP s; ends early when ``stop.stop``)."""
        while not stop.stop:
            left = self.ready_at - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))


def stop_claiming_words(r: redis.Redis, worker_id: str, queues: list[str], refused: int) -> tuple[str, str]:
    """Why worker ``worker_id`` (serving ``queues``) stops claiming after ``refused`` signature
    hand-backs: (the one log line, the shorter reason it publishes for ``forrestq status``), with the
    fingerprints of its secret and of the other live workers' of its queues."""
    mine = signing.fingerprint()
    try:
        others = sorted({p.fingerprint or "?" for p in live_peers(r) if p.id != worker_id
                         and set(p.queues) & set(queues) and p.fingerprint != mine})
        producers = sorted({v.decode() for v in (r.get(QueueKeys(q).signer) for q in queues) if v})
    except redis.RedisError:
        others, producers = [], []
    cause = ("this worker has no secret and the payloads are signed" if mine == signing.NO_SECRET else
             "the payloads are unsigned or signed with another secret than this worker's")
    theirs = ", ".join(others) or "unknown"
    theirs += f"; the producers sign with {', '.join(producers)}" if producers else ""
    line = (f"stopped claiming tasks: {refused} payloads in a row failed the signature check here ({cause}) "
            f"and were handed back for a worker with the producers' secret; this worker's secret has fingerprint "
            f"{mine}, the other workers of {', '.join(queues)} have {theirs}: give this worker the producers' "
            f"secret ($FORRESTQ_SECRET or --secret-file) and restart it")
    published = (f"secret differs: fingerprint {mine}, other workers {theirs}; "
                 f"{refused} payloads refused for their signature")
    return line, published
