"""Shared fixtures: one real server for the whole session, an empty database per test, and no
test ever touching the user's real data directory or their FORRESTQ_URL.

Fixtures:
  server   (session)  a ServerProcess on a free TCP port in a tmp dir
  url      (function) FLUSHALL on ``server``, FORRESTQ_URL set to it; yields the URL
  r        (function) a redis.Redis client on ``url``
  fq_home  (function, autouse) FORRESTQ_HOME set to a fresh short tmp dir, FORRESTQ_URL unset;
           any background server a test started there is stopped afterwards
Helper: ``wait_for`` (defined in tests/helpers.py; ``from conftest import wait_for`` also works).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import wait_for

from forrestq import signing
from forrestq.server import ServerProcess, stop_local_server

__all__ = ["wait_for"]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server shared by the session (do not kill it: start your own ServerProcess)."""
    proc = ServerProcess(tmp_path_factory.mktemp("server"))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(autouse=True)
def fq_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Isolate every test from the user's environment. The dir comes from tmp_path_factory, not
    tmp_path: its path must stay short enough for a UNIX socket."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("FORRESTQ_HOME", str(home))
    monkeypatch.delenv("FORRESTQ_URL", raising=False)
    try:
        yield home
    finally:
        if (home / "server.json").exists():
            stop_local_server(home)


@pytest.fixture
def url(server: ServerProcess, fq_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty database on the session server; FORRESTQ_URL points at it."""
    if not server.running:  # a test stopped it despite the advice: bring it back
        server.restart()
    client = redis.Redis.from_url(server.url)
    try:
        client.flushall()
    finally:
        client.close()
    monkeypatch.setenv("FORRESTQ_URL", server.url)
    yield server.url


@pytest.fixture
def r(url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client (bytes responses) on ``url``."""
    client = redis.Redis.from_url(url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def no_secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process and the workers' environment start and end without a payload secret (tests that
    need one set their own); used by the signing tests."""
    monkeypatch.delenv("FORRESTQ_SECRET", raising=False)
    monkeypatch.delenv("FORRESTQ_SECRET_FILE", raising=False)
    signing.use_environment()
    try:
        yield
    finally:
        signing.use_environment()
