"""The Lua scripts, each an atomic operation in its own ``scripts/<name>.lua`` file (KEYS/ARGV header)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError

_DIR = Path(__file__).parent / "scripts"
NAMES = ("schedule", "claim", "complete", "renew", "reclaim", "release", "requeue", "takeover", "clean")


@lru_cache(maxsize=None)
def source(name: str) -> str:
    return (_DIR / f"{name}.lua").read_text()


class _Script:
    """One script on one client. Called alone it is redis-py's Script (EVALSHA, loaded on NOSCRIPT).
    Queued on a pipeline it is a bare EVALSHA: redis-py would otherwise send SCRIPT EXISTS before
    every such pipeline (a round trip per task); ``Scripts.execute`` loads and replays on NOSCRIPT."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.script = client.register_script(source(name))
        self.sha = self.script.sha

    def __call__(self, keys: list[Any], args: list[Any], client: Any = None) -> Any:
        if isinstance(client, Pipeline):
            return client.evalsha(self.sha, len(keys), *keys, *args)
        return self.script(keys=keys, args=args, client=client)


class Scripts:
    """The scripts registered once on one client."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        for name in NAMES:
            setattr(self, name, _Script(client, name))

    def load(self) -> None:
        """Load every script (the server's script cache is empty after a restart)."""
        for name in NAMES:
            self.client.script_load(source(name))

    def execute(self, pipe: Pipeline, raise_on_error: bool = True) -> list[Any]:
        """Execute a pipeline holding scripts; if the server had forgotten them, load them and run the
        pipeline again (nothing in it ran: every script of it was refused)."""
        stack = list(pipe.command_stack)
        try:
            replies = pipe.execute(raise_on_error=raise_on_error)
        except NoScriptError:
            replies = None
        if replies is not None and not any(isinstance(r, NoScriptError) for r in replies):
            return replies
        self.load()
        for args, options in stack:
            pipe.pipeline_execute_command(*args, **options)
        return pipe.execute(raise_on_error=raise_on_error)

    schedule: Any
    claim: Any
    complete: Any
    renew: Any
    reclaim: Any
    release: Any
    requeue: Any
    takeover: Any
    clean: Any
