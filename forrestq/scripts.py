"""The Lua scripts, each an atomic operation in its own ``scripts/<name>.lua`` file (KEYS/ARGV header)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import redis

_DIR = Path(__file__).parent / "scripts"
NAMES = ("schedule", "claim", "complete", "renew", "reclaim", "release", "requeue", "takeover", "clean")


@lru_cache(maxsize=None)
def source(name: str) -> str:
    return (_DIR / f"{name}.lua").read_text()


class Scripts:
    """The scripts registered once on one client (EVALSHA, loaded again after a server restart)."""

    def __init__(self, client: redis.Redis) -> None:
        for name in NAMES:
            setattr(self, name, client.register_script(source(name)))

    schedule: Any
    claim: Any
    complete: Any
    renew: Any
    reclaim: Any
    release: Any
    requeue: Any
    takeover: Any
    clean: Any
