"""What a dashboard was started with, and the address of a task's page."""
from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import quote

__all__ = ["DashboardConfig", "task_url"]


@dataclass
class DashboardConfig:
    url: str  # Redis
    bind: str = "127.0.0.1"
    port: int = 8765
    read_only: bool = False
    token: str | None = None
    public_url: str | None = None
    refresh_ms: int = 2000  # how often the pages update themselves (at most every 2 s: issue 19)

    def base_url(self) -> str:
        """The address people open: ``public_url``, else http://BIND:PORT (this host's name for a
        wildcard bind)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = socket.gethostname() if self.bind in ("0.0.0.0", "::", "") else self.bind
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"


def task_url(base: str, queue: str, task_id: str) -> str:
    """A task's stable page: ``BASE/task/<queue>/<id>``."""
    return f"{base.rstrip('/')}/task/{quote(queue, safe='')}/{quote(task_id, safe='')}"
