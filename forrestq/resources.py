"""Resource requests of tasks and capacities of workers (issue 14): parsing and their one text form.

A task may declare what it needs (``schedule(..., resources={"mem": "6G", "cpus": 2, "gpu": 1})``)
and a worker what it has (``forrestq worker --resources mem=32G,gpu=2``). Both become the same
normal form, a dict of resource name -> non-negative number, stored and published as one line of
text (``"cpus=2,gpu=1,mem=6442450944"``: names sorted, memory in bytes). Names are identifiers
(any: ``gpu``, ``licence``, ``scratch_disk``); ``mem`` takes units (K, M, G, T: powers of 1024, as
``--max-memory``); ``gpu`` is a whole number (GPUs are granted by index). A bad request raises
ConfigError at the call that made it, so nothing of a bad schedule is written.

A task without a request needs ``cpus=1`` and nothing else (:data:`DEFAULT`); a request that does
not name ``cpus`` needs one too (every task occupies a child process). Which worker may start what
is :mod:`forrestq.worker.capacity`'s work; this module only reads and writes the forms.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError, shown

__all__ = ["CPUS", "DEFAULT", "GPU", "MAX_NAMES", "MEM", "exceeding", "fits", "from_text", "parse_amount",
           "parse_mapping", "parse_text", "request", "to_text"]

CPUS = "cpus"
MEM = "mem"
GPU = "gpu"
MAX_NAMES = 16  # distinct resource names one request or one worker may have
DEFAULT: dict[str, float] = {CPUS: 1.0}  # what a task without a request needs
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")
_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_amount(name: str, value: Any, what: str = "resources") -> float:
    """One amount: a non-negative finite number (``mem`` also a size with a unit: "6G", "512M");
    ``gpu`` a whole number. ConfigError naming ``what`` otherwise."""
    if isinstance(value, str):
        m = _AMOUNT.match(value)
        if not m or (m.group(2) and name != MEM):
            unit = "a number with an optional unit K/M/G/T, e.g. 6G" if name == MEM else "a number"
            raise ConfigError(f"bad {what}: {name}={shown(value)}: use {unit}")
        amount = float(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower())
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        amount = float(value)
    else:
        raise ConfigError(f"bad {what}: {name}={shown(value)}: use a non-negative number")
    if not math.isfinite(amount) or amount < 0:
        raise ConfigError(f"bad {what}: {name}={shown(value)}: use a non-negative number")
    if name == GPU and amount != int(amount):
        raise ConfigError(f"bad {what}: gpu={shown(value)}: GPUs are whole (0, 1, 2, ...)")
    return float(round(amount)) if name == MEM else amount


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"bad {what}: resource name {shown(name)}: use an identifier (letters, digits, _)")
    return name


def parse_mapping(value: Mapping[str, Any], what: str = "resources") -> dict[str, float]:
    """``{"mem": "6G", "gpu": 1}`` -> ``{"gpu": 1.0, "mem": 6442450944.0}`` (checked, names sorted)."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"bad {what}: {shown(value)}: use a dict of name -> amount, e.g. {{'mem': '6G', 'gpu': 1}}")
    if len(value) > MAX_NAMES:
        raise ConfigError(f"bad {what}: {len(value)} resource names; at most {MAX_NAMES}")
    out = {_check_name(n, what): parse_amount(n, v, what) for n, v in value.items()}
    return dict(sorted(out.items()))


def parse_text(text: str, what: str = "--resources") -> dict[str, float]:
    """``"mem=32G,gpu=2"`` (the command line's form, also the stored one) -> the normal form."""
    if not isinstance(text, str):
        raise ConfigError(f"bad {what}: {shown(text)}: use name=amount,... e.g. mem=32G,gpu=2")
    pairs: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        name, eq, amount = part.partition("=")
        if not part or not eq:
            raise ConfigError(f"bad {what}: {shown(text)}: use name=amount,... e.g. mem=32G,gpu=2")
        if name.strip() in pairs:
            raise ConfigError(f"bad {what}: {shown(name.strip())} given twice")
        pairs[name.strip()] = amount.strip()
    return parse_mapping(pairs, what)


def request(value: Mapping[str, Any] | None) -> str:
    """A task's request in its stored text form ("" for none: :data:`DEFAULT`); ``cpus`` is 1 unless given."""
    if value is None:
        return ""
    return to_text({**DEFAULT, **parse_mapping(value)})


def to_text(amounts: Mapping[str, float]) -> str:
    """The one text form: ``name=amount`` sorted by name, whole numbers without a fraction."""
    return ",".join(f"{n}={int(a) if a == int(a) else repr(a)}" for n, a in sorted(amounts.items()))


def from_text(text: str | bytes) -> dict[str, float]:
    """The stored text form back (written by :func:`to_text`: never raises on it); "" -> :data:`DEFAULT`."""
    if isinstance(text, bytes):
        text = text.decode()
    if not text:
        return dict(DEFAULT)
    out = {}
    for part in text.split(","):
        name, _, amount = part.partition("=")
        out[name] = float(amount)
    return out


def fits(need: Mapping[str, float], have: Mapping[str, float]) -> bool:
    """Whether capacity ``have`` covers request ``need`` (a name ``have`` lacks counts as 0)."""
    return all(a <= have.get(n, 0.0) for n, a in need.items())


def exceeding(need: Mapping[str, float], most: Mapping[str, float]) -> str:
    """The part of ``need`` above ``most`` (the largest amount of each resource any worker has), as
    text for a person (``"gpu=4"``, memory with a unit); the whole request (bar the default cpus=1)
    when each part fits some worker but no worker has all of it."""
    over = {n: a for n, a in need.items() if a > most.get(n, 0.0)}
    if not over:
        over = {n: a for n, a in need.items() if not (n == CPUS and a == 1.0)} or dict(need)
    return ",".join(f"{n}={_human(n, a)}" for n, a in sorted(over.items()))


def _human(name: str, amount: float) -> str:
    if name == MEM:
        for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
            if amount >= size:
                return f"{amount / size:.3g}{unit}"
    return f"{int(amount)}" if amount == int(amount) else f"{amount:g}"
