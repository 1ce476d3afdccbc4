"""URL resolution and fail-fast connecting, against real servers."""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port

from forrestq import connection
from forrestq.connection import connect, describe, mask, resolve_url
from forrestq.errors import AuthFailed, ConfigError, ServerUnreachable
from forrestq.server import ServerProcess, local_server_info, stop_local_server

SECRET = "hunter2"


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory) -> Iterator[ServerProcess]:
    """A password-protected server."""
    with ServerProcess(tmp_path_factory.mktemp("locked"), password="right-pw") as proc:
        yield proc


@pytest.mark.parametrize("bad", [
    "xyz",
    "localhost:6379",
    f"user:{SECRET}@host:6379",
    f"http://:{SECRET}@host:6379/0",
    f"redis://:{SECRET}@/0",
    f"redis://:{SECRET}@host:port/0",
    f"redis://:{SECRET}@host:99999/0",
    f"redis://:{SECRET}@host:0/0",
    f"redis://:{SECRET}@host:6379/abc",
    f"redis://:{SECRET}@[::1/0",
    f"redis://:{SECRET}@host:6379/0?socket_timeout=soon",
    "unix://",
    f"redis+sentinel://:{SECRET}@h1:26379,h2:26379/",
    f"redis+sentinel://:{SECRET}@h1:26379/mymaster/x",
    f"redis+sentinel://:{SECRET}@h1:99999/mymaster",
    f"redis+sentinel://:{SECRET}@/mymaster",
    f"redis+cluster://:{SECRET}@h1:7000,h2:/",
    f"redis+cluster://:{SECRET}@h1:7000/2",
    f"redis+cluster://:{SECRET}@h1:port/",
])
def test_bad_urls_are_config_errors_without_the_password(bad):
    with pytest.raises(ConfigError) as info:
        connect(bad, check=False)
    message = str(info.value)
    assert SECRET not in message
    assert message.startswith("bad Redis URL")


def test_bad_url_in_env_is_a_config_error(monkeypatch):
    monkeypatch.setenv("FORRESTQ_URL", f"redis//:{SECRET}@host")
    with pytest.raises(ConfigError, match="bad Redis URL"):
        connect()


def test_mask_and_describe():
    assert mask(f"redis://:{SECRET}@h:1/0") == "redis://:***@h:1/0"
    assert mask(f"redis://bob:{SECRET}@h:1/0") == "redis://bob:***@h:1/0"
    assert mask(f"redis://{SECRET}@h:1/0") == "redis://***@h:1/0"
    assert mask("redis://h:1/0") == "redis://h:1/0"
    assert describe(f"redis://:{SECRET}@example.org:6380/2") == "example.org:6380"
    assert describe("rediss://example.org") == "example.org:6379"
    assert describe("redis://[::1]:7000/0") == "[::1]:7000"
    assert describe("unix:///tmp/x/server.sock") == "unix:/tmp/x/server.sock"
    assert describe(f"redis+sentinel://:{SECRET}@s1,s2:26380/mymaster/1") == "sentinel s1:26379,s2:26380 (mymaster)"
    assert describe(f"redis+cluster://u:{SECRET}@h1:7000,h2:7001/") == "cluster h1:7000,h2:7001"
    assert mask(f"redis+cluster://u:{SECRET}@h1:7000,h2:7001/") == "redis+cluster://u:***@h1:7000,h2:7001/"


def test_closed_port_is_unreachable_quickly():
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(ServerUnreachable) as info:
        connect(f"redis://127.0.0.1:{port}/0")
    assert time.monotonic() - t0 < 5
    assert str(info.value) == f"cannot reach Redis at 127.0.0.1:{port}: connection refused"
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_unknown_host_is_unreachable():
    with pytest.raises(ServerUnreachable, match="cannot reach Redis at no-such-host.invalid:6379"):
        connect("redis://no-such-host.invalid:6379/0")


def test_missing_socket_is_unreachable(tmp_path):
    with pytest.raises(ServerUnreachable, match=f"unix:{tmp_path}/nope.sock"):
        connect(f"unix://{tmp_path}/nope.sock")


def test_wrong_password_is_auth_failed(locked_server):
    wrong = f"redis://:{SECRET}@127.0.0.1:{locked_server.port}/0"
    with pytest.raises(AuthFailed) as info:
        connect(wrong)
    assert SECRET not in str(info.value)
    assert str(info.value).startswith(f"Redis at 127.0.0.1:{locked_server.port} refused the password")
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_password_is_auth_failed(locked_server):
    with pytest.raises(AuthFailed, match="requires a password"):
        connect(f"redis://127.0.0.1:{locked_server.port}/0")


def test_right_password_works(locked_server):
    client = connect(locked_server.url)
    assert client.ping()
    client.set("k", "v")
    assert client.get("k") == b"v"  # bytes: decode_responses=False


def test_connect_uses_env_url_and_retries(url):
    client = connect()
    assert client.connection_pool.connection_kwargs["host"] == "127.0.0.1"
    assert client.get_retry().get_retries() == 10
    assert client.ping()


def test_unix_socket_url(tmp_path):
    sock = Path(tempfile.mkdtemp(prefix="fq", dir="/tmp")) / "s.sock"
    try:
        with ServerProcess(tmp_path, unixsocket=sock) as proc:
            assert connect(proc.url).ping()
            assert describe(proc.url) == f"unix:{sock}"
    finally:
        shutil.rmtree(sock.parent)


def test_client_rides_out_a_server_restart(tmp_path):
    with ServerProcess(tmp_path, appendfsync="always") as proc:
        client = connect(proc.url)
        client.set("k", "v")
        proc.kill()
        restarter = threading.Thread(target=proc.restart)
        restarter.start()
        try:
            assert client.get("k") == b"v"  # reconnects with back-off while the server comes back
        finally:
            restarter.join(20)


def test_resolve_url_precedence(monkeypatch):
    monkeypatch.setattr(connection, "ensure_local_server", lambda: "unix:///local.sock")
    assert resolve_url() == "unix:///local.sock"
    monkeypatch.setenv("FORRESTQ_URL", "redis://env:1/0")
    assert resolve_url() == "redis://env:1/0"
    assert resolve_url("redis://arg:2/0") == "redis://arg:2/0"


def test_no_url_starts_the_embedded_server(fq_home):
    try:
        client = connect()
        assert client.ping()
        assert resolve_url() == local_server_info(fq_home)["url"]
    finally:
        assert stop_local_server(fq_home)


def test_no_url_and_a_home_that_is_a_file_is_one_config_error(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("FORRESTQ_HOME", str(tmp_path / "file" / "forrestq"))
    with pytest.raises(ConfigError) as info:
        connect()
    assert str(info.value) == (f"cannot use {tmp_path}/file/forrestq as forrestq's data directory "
                               f"(from $FORRESTQ_HOME): {tmp_path}/file is a file, not a directory")
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_database_the_server_does_not_have_is_a_bad_url_not_an_unreachable_server(url):
    base = url.rsplit("/", 1)[0] if url.startswith("redis://") else None
    if base is None:
        pytest.skip(f"the session server's URL {url!r} has no database number to change")
    with pytest.raises(ConfigError, match=r"DB index is out of range \(the number after the last / picks"):
        connect(base + "/99999")
