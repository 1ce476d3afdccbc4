"""Environment fingerprints: which Python, forrestq, platform and distributions a worker runs tasks
with, so that "it fails on host B only" can be traced to a version skew.

A worker describes its environment once its children run (off the start path:
:class:`forrestq.worker.environment.EnvironmentNote`), stores the description once per fingerprint
(``fq:env:<id>``, JSON, kept :data:`~forrestq.schema.ENV_TTL`), names its id in its hash
(``WORKER_ENV``) and maps its worker id to it (``fq:wenv:<worker id>``): a task records its worker
(``TASK_WORKER``) at claim, so which environment it ran in costs nothing per task.

The distributions are read from the names of the ``*.dist-info`` / ``*.egg-info`` entries on the
import path (``numpy-2.0.1.dist-info``: what pip writes), the first of each name winning, as the
import system would find it: under a millisecond, where reading every distribution's metadata with
``importlib.metadata`` takes 0.1-0.3 s. Only an entry whose name carries no version is opened.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from . import schema
from .version import __version__

__all__ = ["Environment", "describe", "distributions", "store", "load", "of_worker", "differences",
           "difference_line"]

_SUFFIXES = (".dist-info", ".egg-info")


@dataclass(frozen=True)
class Environment:
    """One environment: ``id`` is a hash of everything else (same id, same environment)."""

    id: str
    python: str  # "CPython 3.11.7"
    forrestq: str
    platform: str  # "Linux-6.1.0-x86_64"
    distributions: tuple[str, ...]  # sorted "name==version", names normalised (PEP 503)

    def versions(self) -> dict[str, str]:
        """Distribution name -> version."""
        return dict(d.split("==", 1) for d in self.distributions)

    def summary(self) -> str:
        """``3f2a... (CPython 3.11.7, forrestq 0.1.0, Linux-6.1.0-x86_64; 36 distributions)``."""
        return (f"{self.id} ({self.python}, forrestq {self.forrestq}, {self.platform}; "
                f"{len(self.distributions)} distributions)")

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "python": self.python, "forrestq": self.forrestq, "platform": self.platform,
                "distributions": list(self.distributions)}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _entry(directory: str, entry: str) -> tuple[str, str] | None:
    """(name, version) of one ``*.dist-info`` / ``*.egg-info`` entry; its metadata is read only when
    its name carries no version (``foo.egg-info`` of a source checkout)."""
    stem = entry.rsplit(".", 1)[0]
    name, sep, rest = stem.partition("-")
    if sep:
        return _normal(name), rest.split("-", 1)[0]
    from importlib.metadata import PathDistribution  # rare: keep its imports off the usual path
    from pathlib import Path
    try:
        dist = PathDistribution(Path(directory, entry))
        return _normal(dist.metadata["Name"] or name), dist.version or "?"
    except Exception:  # noqa: BLE001 - a broken entry must not stop a worker
        return _normal(name), "?"


def distributions(path: Iterable[str] | None = None) -> list[str]:
    """Sorted ``name==version`` of the distributions on ``path`` (default ``sys.path``)."""
    found: dict[str, str] = {}
    for directory in sys.path if path is None else path:
        try:
            entries = sorted(e for e in os.listdir(directory or ".") if e.endswith(_SUFFIXES))
        except OSError:
            continue
        for entry in entries:
            got = _entry(directory or ".", entry)
            if got is not None and got[0] not in found:
                found[got[0]] = got[1]
    return sorted(f"{n}=={v}" for n, v in found.items())


def _fingerprint(python: str, version: str, plat: str, dists: Sequence[str]) -> str:
    text = json.dumps([python, version, plat, list(dists)], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe(path: Iterable[str] | None = None) -> Environment:
    """This process's environment (distributions found on ``path``, default ``sys.path``)."""
    python = f"{sys.implementation.name.replace('cpython', 'CPython')} {'.'.join(map(str, sys.version_info[:3]))}"
    u = os.uname()
    plat = f"{u.sysname}-{u.release}-{u.machine}"
    dists = tuple(distributions(path))
    return Environment(_fingerprint(python, __version__, plat, dists), python, __version__, plat, dists)


def store(r: redis.Redis, env: Environment, worker_id: str) -> None:
    """Store ``env`` (once per fingerprint: the same id is the same text) and that ``worker_id`` runs in it."""
    pipe = r.pipeline(transaction=False)
    pipe.set(schema.environment(env.id), json.dumps(env.as_json()), ex=schema.ENV_TTL)
    pipe.set(schema.worker_environment(worker_id), env.id, ex=schema.ENV_TTL)
    pipe.execute()


def _parse(raw: Any) -> Environment | None:
    try:
        d = json.loads(raw)
        return Environment(str(d["id"]), str(d["python"]), str(d["forrestq"]), str(d["platform"]),
                           tuple(str(x) for x in d["distributions"]))
    except (TypeError, ValueError, KeyError):
        return None


def load(r: redis.Redis, env_ids: Iterable[str]) -> dict[str, Environment]:
    """The stored environments of these ids (the ones expired or unknown left out)."""
    ids = sorted({i for i in env_ids if i})
    raws = r.mget([schema.environment(i) for i in ids]) if ids else []
    out = {i: _parse(raw) for i, raw in zip(ids, raws) if raw is not None}
    return {i: env for i, env in out.items() if env is not None}


def of_worker(r: redis.Redis, worker_id: str) -> Environment | None:
    """The environment worker ``worker_id`` ran in (a task's ``worker``), if still known."""
    if not worker_id:
        return None
    raw = r.get(schema.worker_environment(worker_id))
    env_id = raw.decode() if isinstance(raw, bytes) else raw
    return load(r, [env_id]).get(env_id) if env_id else None


def _labels(workers: Sequence[dict[str, Any]]) -> dict[str, str]:
    """env id -> who runs it: its hosts, with pids where one host runs several environments."""
    hosts: dict[str, set[str]] = {}
    for w in workers:
        hosts.setdefault(w["host"], set()).add(w["env"])
    out: dict[str, list[str]] = {}
    for w in workers:
        who = w["host"] if len(hosts[w["host"]]) == 1 else f"{w['host']} (pid {w['pid']})"
        if who not in out.setdefault(w["env"], []):
            out[w["env"]].append(who)
    return {env: ", ".join(who) for env, who in out.items()}


def _differing(envs: dict[str, Environment]) -> list[tuple[str, dict[str, str]]]:
    """(what, env id -> value) of every property whose value is not the same in every environment."""
    rows: list[tuple[str, dict[str, str]]] = []
    for what in ("python", "forrestq", "platform"):
        values = {i: str(getattr(e, what)) for i, e in envs.items()}
        if len(set(values.values())) > 1:
            rows.append((what, values))
    versions = {i: e.versions() for i, e in envs.items()}
    for name in sorted(set().union(*versions.values())):
        values = {i: v.get(name, "") for i, v in versions.items()}
        if len(set(values.values())) > 1:
            rows.append((name, values))
    return rows


def differences(r: redis.Redis, workers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """How the environments of these live workers (:func:`forrestq.status.worker_status` dicts with an
    ``env``) differ: one ``{"what", "values": {who: value}}`` per differing property or distribution
    (``value`` "" where a distribution is absent); [] when they all run in one environment (or their
    environments are not known yet)."""
    known = [w for w in workers if w.get("env") and w.get("state") != "lost"]
    envs = load(r, [w["env"] for w in known])
    known = [w for w in known if w["env"] in envs]
    if len(envs) < 2:
        return []
    labels = _labels(known)
    return [{"what": what, "values": {labels[i]: v for i, v in sorted(values.items(), key=lambda kv: labels[kv[0]])}}
            for what, values in _differing(envs)]


def difference_line(diff: dict[str, Any]) -> str:
    """``host-a numpy==1.26.4, host-b numpy==2.0.1`` (``host-b no numpy`` where it is absent)."""
    what = diff["what"]
    props = ("python", "forrestq", "platform")
    parts = [f"{who} {value}" if what in props else (f"{who} {what}=={value}" if value else f"{who} no {what}")
             for who, value in diff["values"].items()]
    return (f"{what}: " if what in props else "") + ", ".join(parts)
