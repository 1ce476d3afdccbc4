"""The Lua scripts themselves (issue 11): every script compiles on a real server, spells no key suffix,
field, state or protocol word (it names the constants of :func:`forrestq.schema.lua_constants`), names
only constants that exist, and does its job when called through its :mod:`forrestq.ops` wrapper.

Only ``forrestq.ops``, ``forrestq.schema`` and the conftest fixtures are used: no queue, no worker.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from forrestq import ops, schema
from forrestq.schema import GROUP, QueueKeys

SCRIPTS = Path(ops.__file__).parent / "scripts"
NAMES = sorted(p.stem for p in SCRIPTS.glob("*.lua"))
INCLUDES = sorted(p.stem for p in (SCRIPTS / "include").glob("*.lua"))
LUA_FILES = sorted(SCRIPTS.glob("*.lua")) + sorted((SCRIPTS / "include").glob("*.lua"))
_INCLUDE_LINE = re.compile(r"^--- @include (\w+)\s*$", re.M)

# ------------------------------------------------------------------------------- a tiny Lua lexer

# earliest match wins, so a quote inside a comment and "--" inside a string are read correctly
_LEX = re.compile(r"""
    --\[(?P<ceq>=*)\[.*?\](?P=ceq)\]               # long comment
  | --[^\n]*                                       # line comment
  | '(?P<sq>(?:[^'\\\n]|\\.)*)'                    # 'string'
  | "(?P<dq>(?:[^"\\\n]|\\.)*)"                    # "string"
  | \[(?P<leq>=*)\[(?P<long>.*?)\](?P=leq)\]       # [[long string]]
""", re.S | re.X)


def literals(text: str) -> list[tuple[int, str]]:
    """(line, value) of every string literal of Lua source ``text`` (comments skipped)."""
    out = []
    for m in _LEX.finditer(text):
        if m.group(0).startswith("--"):
            continue
        value = next(v for v in (m.group("sq"), m.group("dq"), m.group("long")) if v is not None)
        out.append((text.count("\n", 0, m.start()) + 1, value))
    return out


def code(text: str) -> str:
    """``text`` with its comments and string literals blanked out (lines kept)."""
    return _LEX.sub(lambda m: "\n" * m.group(0).count("\n") + " ", text)


_CONSTANT = re.compile(r"\b[A-Z][A-Z0-9_]*\b")
_LOCAL = re.compile(r"\blocal\s+(?:function\s+(\w+)|(\w+(?:\s*,\s*\w+)*))")
_LUA_GLOBALS = {"KEYS", "ARGV"}


def undefined_constants(source: str) -> set[str]:
    """UPPER_CASE names ``source`` uses but never declares ``local`` (a misspelt schema constant)."""
    text = code(source)
    defined = set(_LUA_GLOBALS)
    for m in _LOCAL.finditer(text):
        defined.update(n.strip() for n in (m.group(1) or m.group(2)).split(","))
    return set(_CONSTANT.findall(text)) - defined


def _schema_words() -> dict[str, str]:
    """value -> name of every schema word no script may spell: task fields, states, counters, outcomes,
    stream entry fields, key suffixes and the scripts' protocol words."""
    names = [n for n in vars(schema) if n.startswith(("TASK_", "SUFFIX_", "ENTRY_")) and n != "TASK_FIELDS"]
    names += ["WAITING", "READY", "RUNNING", "DONE", "FAILED", "COUNT_OPEN", "RETRY", "FOLLOW_FAILED",
              *schema._LUA_NAMES]
    words: dict[str, str] = {}
    for n in names:
        words.setdefault(getattr(schema, n), n)
    return words


SCHEMA_WORDS = _schema_words()

# literals a script may spell besides Redis command and option words (all upper case, e.g. 'HSET', 'PX')
ARGUMENT_WORDS = {
    "": "empty argument / absent value",
    "*": "XADD: new entry id",
    "~": "XADD MAXLEN ~: trim approximately (whole stream nodes, cheap)",
    ">": "XREADGROUP: entries never delivered",
    "+": "XREVRANGE: newest",
    "-": "XREVRANGE: oldest",
    "-inf": "ZRANGEBYSCORE: lowest score",
    "0-0": "the id before any stream entry",
    "0": "a count or generation of 0",
    "1": "the flag values of TASK_ROOT and of boolean ARGV",
    "3": "the default of TASK_MAX_ATTEMPTS (as ops.Node)",
    "?": "unknown host",
    "[^,]+": "pattern: one id of a comma-separated list",
    ",": "separator of a comma-separated list (table.concat)",
    "input task ": "reason text of an upstream failure",
    " failed: ": "reason text of an upstream failure",
}
_COMMAND_WORD = re.compile(r"^[A-Z]+$")


def _rel(path: Path) -> str:
    return str(path.relative_to(SCRIPTS))


# -------------------------------------------------------------------------------------- static


def test_there_are_scripts_and_includes() -> None:
    assert len(NAMES) >= 12 and "claim" in NAMES and "complete" in NAMES
    assert {"stream", "counts"} <= set(INCLUDES)


def test_lexer_reads_strings_and_skips_comments() -> None:
    text = "local a = 'x' -- 'not this'\nlocal b = \"y--z\" .. [[w]]\n--[[ 'nor this' ]]\nreturn 'v'"
    assert literals(text) == [(1, "x"), (2, "y--z"), (2, "w"), (4, "v")]
    assert "not this" not in code(text) and "y--z" not in code(text)


@pytest.mark.parametrize("path", LUA_FILES, ids=_rel)
def test_no_schema_word_spelled_in_lua(path: Path) -> None:
    """A field, state, counter, stream field, key suffix or protocol word is named, never spelled."""
    bad = [f"{_rel(path)}:{line}: '{v}' (use {SCHEMA_WORDS[v]})" for line, v in literals(path.read_text())
           if v in SCHEMA_WORDS and not _COMMAND_WORD.match(v)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", LUA_FILES, ids=_rel)
def test_only_command_and_argument_words_spelled_in_lua(path: Path) -> None:
    """Stricter: a literal is a Redis command/option word or one of ARGUMENT_WORDS, so a new field or a
    key built inside Lua (``prefix .. 'something'``) cannot slip in unnamed."""
    bad = [f"{_rel(path)}:{line}: '{v}'" for line, v in literals(path.read_text())
           if not _COMMAND_WORD.match(v) and v not in ARGUMENT_WORDS]
    assert not bad, "unexpected literals (name them in schema.py and _LUA_NAMES):\n" + "\n".join(bad)


def test_schema_words_are_caught() -> None:
    """The checks above can fail: a spelled field and a spelled suffix are both flagged."""
    text = "redis.call('HGET', prefix .. 't:' .. id, 'st')"
    assert [v for _, v in literals(text) if v in SCHEMA_WORDS] == ["t:", "st"]


@pytest.mark.parametrize("name", NAMES)
def test_includes_expand(name: str) -> None:
    text = (SCRIPTS / f"{name}.lua").read_text()
    wanted = _INCLUDE_LINE.findall(text)
    assert len(wanted) == len(set(wanted)), f"{name}: an include listed twice"
    for inc in wanted:
        assert inc in INCLUDES, f"{name}.lua includes a missing include/{inc}.lua"
    source = ops.source(name)
    assert "@include" not in source, "an include line left unexpanded (includes do not nest)"
    assert not text.startswith("---"), "the header comment (KEYS/ARGV/returns) comes first"


def test_every_include_is_used() -> None:
    used = {inc for name in NAMES for inc in _INCLUDE_LINE.findall((SCRIPTS / f"{name}.lua").read_text())}
    assert used == set(INCLUDES)


@pytest.mark.parametrize("name", NAMES)
def test_every_constant_a_script_uses_is_defined(name: str) -> None:
    """Every UPPER_CASE name left in the text sent to the server is a local the script declares."""
    assert undefined_constants(ops.source(name)) == set()
    left = set(_CONSTANT.findall(code(ops.source(name)))) & set(schema.lua_constants())
    assert not left, f"schema constants reached the server unexpanded: {left}"


def test_lua_names_are_schema_names_and_used() -> None:
    sources = "\n".join(code(p.read_text()) for p in LUA_FILES)
    for n in schema._LUA_NAMES:
        assert isinstance(getattr(schema, n), str)
        assert re.search(rf"\b{n}\b", sources), f"{n} is in the header but no script uses it"


def test_a_misspelt_constant_is_caught_statically() -> None:
    assert undefined_constants("return redis.call('HGET', KEYS[1], TASK_STAT)") == {"TASK_STAT"}
    assert undefined_constants("local X_Y = 1\nreturn {X_Y, TASK_STATE}") == {"TASK_STATE"}


def test_a_misspelt_constant_fails_when_the_script_is_loaded() -> None:
    """A misspelt field would read nil in Lua, silently: the loader refuses the script instead."""
    with pytest.raises(ValueError, match="TASK_STAT is not a forrestq.schema constant"):
        ops.expand("return redis.call('HGET', KEYS[1], TASK_STAT)")


def test_expansion_leaves_comments_strings_and_locals_alone() -> None:
    text = "local X_Y = 1 -- TASK_STATE here stays\nreturn {X_Y, TASK_STATE, 'TASK_STATE', KEYS[1]}"
    assert ops.expand(text) == ("local X_Y = 1 -- TASK_STATE here stays\n"
                                f"return {{X_Y, '{schema.TASK_STATE}', 'TASK_STATE', KEYS[1]}}")


@pytest.mark.parametrize("name", NAMES)
def test_header_comment_documents_the_keys_used(name: str) -> None:
    text = (SCRIPTS / f"{name}.lua").read_text()
    used = set(re.findall(r"KEYS\[(\d+)\]", code(text)))
    comments = "\n".join(line for line in text.splitlines() if line.startswith("--"))
    documented = set(re.findall(r"KEYS\[(\d+)\]", comments))
    assert used <= documented, f"{name}: KEYS {sorted(used - documented)} used but not documented"
    assert "Returns" in text


# ------------------------------------------------------------------------------- on the server


def test_every_script_compiles_on_the_server(r: redis.Redis) -> None:
    for name in NAMES:
        sha = r.script_load(ops.source(name))
        assert r.script_exists(sha) == [True], name


def test_constant_values_reach_lua(r: redis.Redis) -> None:
    names = sorted(schema.lua_constants())
    got = r.eval(ops.expand("return {" + ", ".join(names) + "}"), 0)
    assert [v.decode() for v in got] == [getattr(schema, n) for n in names]
    r.hset("h", schema.TASK_STATE, schema.READY)
    assert r.eval(ops.expand("return redis.call('HGET', KEYS[1], TASK_STATE)"), 1, "h") == b"ready"


# ------------------------------------------------------------------------- behaviour, via the Ops


@pytest.fixture
def k(r: redis.Redis) -> QueueKeys:
    keys = QueueKeys("scripts")
    r.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    return keys


@pytest.fixture
def s(r: redis.Redis) -> Iterator[ops.Scripts]:
    yield ops.Scripts(r)


def counts(r: redis.Redis, k: QueueKeys) -> dict[str, int]:
    return {key.decode(): int(v) for key, v in r.hgetall(k.counts).items() if int(v)}


def field(r: redis.Redis, k: QueueKeys, task_id: str, name: str) -> str | None:
    v = r.hget(k.task(task_id), name)
    return None if v is None else v.decode()


def claim(s: ops.Scripts, k: QueueKeys, token: str, **kw: object) -> ops.Claimed:
    got = ops.claim(s, k, ops.ClaimArgs("c1", token, 60_000, "h1", "w1", **kw))  # type: ignore[arg-type]
    assert isinstance(got, ops.Claimed), got
    got.token = token
    return got


def done(s: ops.Scripts, k: QueueKeys, c: ops.Claimed, result: bytes = b"", **kw: object) -> bool:
    return ops.complete(s, k, ops.Completion(c.id, c.token, schema.DONE, result=result, **kw))  # type: ignore


def finished(r: redis.Redis, k: QueueKeys) -> list[tuple[str, str]]:
    return [(f[schema.ENTRY_TASK.encode()].decode(), f[schema.ENTRY_GEN.encode()].decode())
            for _, f in r.xrange(k.finished)]


def test_dag_dependent_becomes_ready_when_its_input_is_done(r: redis.Redis, k: QueueKeys,
                                                            s: ops.Scripts) -> None:
    got = ops.schedule(s, k, ops.ScheduleArgs([ops.Node("a", fn_sha="f"), ops.Node("b", inputs="a", root=True)]))
    assert got.states == [schema.READY, schema.WAITING] and got.since == "0-0"
    assert counts(r, k) == {schema.READY: 1, schema.WAITING: 1, schema.COUNT_OPEN: 1}
    assert field(r, k, "b", schema.TASK_PENDING) == "1"

    a = claim(s, k, "T1")
    assert (a.id, a.attempts, a.inputs, a.fn_sha, a.max_attempts) == ("a", 1, [], b"f", 3)
    assert r.get(k.lease("a")) == b"T1" and field(r, k, "a", schema.TASK_STATE) == schema.RUNNING
    assert ops.claim(s, k, ops.ClaimArgs("c1", "T2", 60_000, "h1", "w1")) is None  # b still waits
    assert counts(r, k) == {schema.RUNNING: 1, schema.WAITING: 1, schema.COUNT_OPEN: 1}

    assert done(s, k, a, result=b"RA") is True
    assert field(r, k, "b", schema.TASK_STATE) == schema.READY
    assert counts(r, k) == {schema.DONE: 1, schema.READY: 1, schema.COUNT_OPEN: 1}
    assert not r.exists(k.lease("a")) and finished(r, k) == []  # a is no root

    b = claim(s, k, "T3")
    assert (b.id, b.inputs) == ("b", [b"RA"])
    assert done(s, k, b, result=b"RB") is True
    assert finished(r, k) == [("b", "0")]
    assert counts(r, k) == {schema.DONE: 2, schema.COUNT_ROOTS_DONE: 1}  # two nodes, one root
    assert r.zcard(k.todo) == 0 and r.zrange(k.done, 0, -1) == [b"a", b"b"]
    assert r.xlen(k.stream) == 0 and r.xpending(k.stream, GROUP)["pending"] == 0  # entries acked + deleted
    # scheduling a finished node again leaves it; newly made a root, it is announced at once
    again = ops.schedule(s, k, ops.ScheduleArgs([ops.Node("a", root=True)]))
    assert again.states == [schema.DONE] and again.since == r.xrevrange(k.finished, count=1)[0][0].decode()
    assert finished(r, k) == [("b", "0"), ("a", "0")]
    assert counts(r, k) == {schema.DONE: 2, schema.COUNT_ROOTS_DONE: 2}


def test_a_stale_token_is_refused(r: redis.Redis, k: QueueKeys, s: ops.Scripts) -> None:
    ops.schedule(s, k, ops.ScheduleArgs([ops.Node("a", root=True)]))
    a = claim(s, k, "T1")
    stale = ops.Completion("a", "T0", schema.DONE, result=b"x")
    assert ops.complete(s, k, stale) is False
    lost = ops.Completion("a", "", schema.FAILED)  # "lost" is accepted only once no lease exists
    assert ops.complete(s, k, lost) is False
    assert field(r, k, "a", schema.TASK_STATE) == schema.RUNNING
    assert counts(r, k) == {schema.RUNNING: 1, schema.COUNT_OPEN: 1}
    # a takeover drops the lease: the old attempt's token no longer ends the task
    assert ops.takeover(s, k, ops.TakeoverArgs("TT", ["a", "nope"])) == ["a"]
    assert done(s, k, a) is False
    assert ops.complete(s, k, ops.Completion("a", "TT", schema.DONE, result=b"y")) is True
    assert field(r, k, "a", schema.TASK_RESULT) == "y" and finished(r, k) == [("a", "0")]
    assert ops.complete(s, k, ops.Completion("a", "TT", schema.DONE)) is False  # not running any more


def test_a_failure_fails_everything_downstream(r: redis.Redis, k: QueueKeys, s: ops.Scripts) -> None:
    ops.schedule(s, k, ops.ScheduleArgs([ops.Node("a"), ops.Node("b", inputs="a"),
                                         ops.Node("c", inputs="b", root=True)]))
    a = claim(s, k, "T1")
    fail = ops.Completion("a", a.token, schema.FAILED, error=b"E", traceback="tb", reason="boom", output=b"O")
    assert ops.complete(s, k, fail) is True
    for node in ("b", "c"):
        assert field(r, k, node, schema.TASK_STATE) == schema.FAILED
        assert field(r, k, node, schema.TASK_UPSTREAM) == "a"
        assert field(r, k, node, schema.TASK_REASON) == "input task a failed: boom"
    assert (field(r, k, "a", schema.TASK_ERROR), field(r, k, "a", schema.TASK_OUTPUT)) == ("E", "O")
    assert finished(r, k) == [("c", "0")]
    assert counts(r, k) == {schema.FAILED: 3, schema.COUNT_ROOTS_FAILED: 1}
    # a node scheduled after its input failed fails at once, into the failed zset (schedule's KEYS[5])
    late = ops.schedule(s, k, ops.ScheduleArgs([ops.Node("d", inputs="a", root=True)]))
    assert late.states == [schema.FAILED]
    assert field(r, k, "d", schema.TASK_REASON) == "input task a failed: boom"
    assert r.zscore(k.failed, "d") is not None and r.zscore(k.todo, "d") is None
    assert finished(r, k) == [("c", "0"), ("d", "0")]
    assert counts(r, k) == {schema.FAILED: 4, schema.COUNT_ROOTS_FAILED: 2}
    # requeue_failed: a and its dependents that failed because of it run again (d, failed at schedule,
    # was never registered as a's dependent: it stays failed)
    assert sorted(ops.requeue(s, k, ops.RequeueArgs(schema.FOLLOW_FAILED, ["a"]))) == ["a", "b", "c"]
    assert [field(r, k, n, schema.TASK_STATE) for n in "abcd"] == [schema.READY, schema.WAITING,
                                                                    schema.WAITING, schema.FAILED]
    assert [field(r, k, n, schema.TASK_GEN) or "0" for n in "abcd"] == ["1", "1", "1", "0"]  # absent: 0
    assert field(r, k, "b", schema.TASK_UPSTREAM) is None and field(r, k, "b", schema.TASK_PENDING) == "1"
    assert counts(r, k) == {schema.READY: 1, schema.WAITING: 2, schema.FAILED: 1, schema.COUNT_OPEN: 1,
                            schema.COUNT_ROOTS_FAILED: 1}


def test_retry_waits_in_delayed_then_claim_brings_it_back(r: redis.Redis, k: QueueKeys,
                                                           s: ops.Scripts) -> None:
    ops.schedule(s, k, ops.ScheduleArgs([ops.Node("a")]))
    a = claim(s, k, "T1", now=100.0)
    retry = ops.Completion("a", "T1", schema.RETRY, error=b"E", reason="flaky", delay=10.0, now=100.0)
    assert ops.complete(s, k, retry) is True
    assert field(r, k, "a", schema.TASK_STATE) == schema.SCHEDULED and field(r, k, "a", schema.TASK_STREAM_ID) is None
    sec, usec = r.time()
    due = r.zscore(k.delayed, "a")  # 10 s on the server's clock (issue 16), not on the worker's (now=100)
    assert abs(due - (sec + usec / 1e6 + 10.0)) < 2.0 and r.xlen(k.stream) == 0
    assert counts(r, k) == {schema.SCHEDULED: 1}
    assert ops.claim(s, k, ops.ClaimArgs("c1", "T2", 60_000, "h1", "w1", now=due + 5)) is None  # not due yet
    r.zadd(k.delayed, {"a": due - 20})  # as if the server's clock had passed it
    again = claim(s, k, "T3", now=110.0)
    assert (again.id, again.attempts, again.retries_used) == ("a", 2, 1) and again.sid != a.sid
    assert r.zcard(k.delayed) == 0 and field(r, k, "a", schema.TASK_REASON) == "flaky"
    assert counts(r, k) == {schema.RUNNING: 1}


def test_claim_of_a_stale_delivered_entry_skips(r: redis.Redis, k: QueueKeys, s: ops.Scripts) -> None:
    ops.schedule(s, k, ops.ScheduleArgs([ops.Node("a"), ops.Node("b")]))
    delivered = r.xreadgroup(GROUP, "c1", {k.stream: ">"}, count=1)[0][1][0][0].decode()
    assert ops.clean(s, k, ["a"]) == 1  # a ready task can be cleaned: its entry goes with it
    got = ops.claim(s, k, ops.ClaimArgs("c1", "T1", 60_000, "h1", "w1", sid=delivered))
    assert got is ops.SKIP
    b = claim(s, k, "T2")
    assert b.id == "b"


def test_release_and_reclaim_hand_a_task_back(r: redis.Redis, k: QueueKeys, s: ops.Scripts) -> None:
    ops.schedule(s, k, ops.ScheduleArgs([ops.Node("a", max_attempts="2")]))
    a = claim(s, k, "T1")
    assert ops.release(s, k, ops.ReleaseArgs("a", "T0")) is False
    assert ops.release(s, k, ops.ReleaseArgs("a", "T1")) is True  # not counted
    assert field(r, k, "a", schema.TASK_ATTEMPTS) == "0" and not r.exists(k.lease("a"))
    assert counts(r, k) == {schema.READY: 1}
    a = claim(s, k, "T2")
    assert a.attempts == 1
    r.delete(k.lease("a"))  # its worker is gone: the lease expired
    assert ops.reclaim(s, k, ops.ReclaimArgs([a.sid])) == ops.Reclaimed(1, [])  # lost once: put back
    assert field(r, k, "a", schema.TASK_STATE) == schema.READY and field(r, k, "a", schema.TASK_LOST_ON) == "h1"
    a = claim(s, k, "T3")
    assert a.attempts == 2
    r.delete(k.lease("a"))
    assert ops.reclaim(s, k, ops.ReclaimArgs([a.sid])) == ops.Reclaimed(1, [ops.GaveUp("a", 2, "h1")])  # used up
    assert ops.complete(s, k, ops.Completion("a", "", schema.FAILED, reason="lost")) is True
    assert counts(r, k) == {schema.FAILED: 1}


def test_clean_deletes_all_but_running_and_needed(r: redis.Redis, k: QueueKeys, s: ops.Scripts) -> None:
    ops.schedule(s, k, ops.ScheduleArgs([ops.Node("a"), ops.Node("b", inputs="a", root=True), ops.Node("c")]))
    a = claim(s, k, "T1")
    assert ops.clean(s, k, ["a"]) == 0  # running
    assert done(s, k, a)
    assert ops.clean(s, k, ["a"]) == 0  # b still needs its result
    assert ops.clean(s, k, ["b", "c", "a"]) == 3
    assert sorted(r.keys(k.pattern())) == sorted([k.stream.encode(), k.counts.encode()])  # counts: all 0
    assert counts(r, k) == {} and not r.exists(k.finished)


def test_once_keys(r: redis.Redis, k: QueueKeys, s: ops.Scripts) -> None:
    def claim_as(token: str) -> ops.OnceClaimed:
        return ops.once_claim(s, k, ops.OnceClaimArgs(1, token, 60_000, ["k1", "k2"]))

    assert claim_as("A") == ops.OnceClaimed(1, schema.ONCE_CLAIMED)
    assert claim_as("B") == ops.OnceClaimed(2, schema.ONCE_BUSY + schema.ONCE_CLAIMED)
    assert ops.once_confirm(s, k, ops.OnceArgs(1, "k1", "A")) == 1
    assert claim_as("C") == ops.OnceClaimed(0, schema.ONCE_DONE + schema.ONCE_BUSY)
    assert ops.once_release(s, k, ops.OnceArgs(1, "k2", "A")) is False
    assert ops.once_release(s, k, ops.OnceArgs(1, "k2", "B")) is True
    assert ops.once_confirm(s, k, ops.OnceArgs(1, "k1", "A")) == 0


def test_renew_extends_only_leases_still_held(r: redis.Redis, k: QueueKeys, s: ops.Scripts) -> None:
    r.set(k.lease("a"), "T1", px=1000)
    r.set(k.lease("b"), "X", px=1000)
    assert ops.renew(s, k, ops.RenewArgs(60_000, [(k.lease("a"), "T1"), (k.lease("b"), "T2")])) == [True, False]
    assert r.pttl(k.lease("a")) > 1000 >= r.pttl(k.lease("b"))


def test_a_node_failing_after_a_dependent_failure_names_the_first_failure_once(
        r: redis.Redis, k: QueueKeys, s: ops.Scripts) -> None:
    """a fails; b (a's dependent) fails because of a; c, scheduled later on b, names a, not b, and
    the reason says "input task ... failed: " once."""
    ops.schedule(s, k, ops.ScheduleArgs([ops.Node("a"), ops.Node("b", inputs="a")]))
    a = claim(s, k, "T1")
    assert ops.complete(s, k, ops.Completion("a", a.token, schema.FAILED, reason="RuntimeError: x"))
    assert field(r, k, "b", schema.TASK_REASON) == "input task a failed: RuntimeError: x"
    late = ops.schedule(s, k, ops.ScheduleArgs([ops.Node("c", inputs="b", root=True)]))
    assert late.states == [schema.FAILED]
    assert (field(r, k, "c", schema.TASK_UPSTREAM), field(r, k, "c", schema.TASK_REASON)) == (
        "a", "input task a failed: RuntimeError: x")


def test_root_counters_follow_every_script(r: redis.Redis, k: QueueKeys, s: ops.Scripts) -> None:
    """COUNT_OPEN, COUNT_ROOTS_DONE and COUNT_ROOTS_FAILED count roots (what users scheduled) through
    schedule, complete, retry, release, requeue, takeover (cancel) and clean; nodes stay apart."""
    ops.schedule(s, k, ops.ScheduleArgs([ops.Node("a"), ops.Node("b", inputs="a", root=True),
                                         ops.Node("c", root=True)]))
    assert counts(r, k) == {schema.READY: 2, schema.WAITING: 1, schema.COUNT_OPEN: 2}
    a = claim(s, k, "T1", now=100.0)
    assert a.id == "a" and ops.release(s, k, ops.ReleaseArgs("a", "T1"))  # handed back: nothing finished
    c = claim(s, k, "T2", now=100.0)
    assert c.id == "c"
    assert ops.complete(s, k, ops.Completion("c", "T2", schema.RETRY, delay=0.0, now=100.0))  # no end
    # scheduled (in the delayed zset) until a claim or the worker's clock moves it to ready (issue 16)
    assert counts(r, k) == {schema.READY: 1, schema.SCHEDULED: 1, schema.WAITING: 1, schema.COUNT_OPEN: 2}
    a = claim(s, k, "T3", now=100.0)
    assert a.id == "a" and done(s, k, a)  # an inner node: no root counter moves
    assert counts(r, k) == {schema.READY: 2, schema.DONE: 1, schema.COUNT_OPEN: 2}
    c = claim(s, k, "T4", now=100.0)
    assert c.id == "c" and ops.complete(s, k, ops.Completion("c", "T4", schema.FAILED, reason="E"))
    assert counts(r, k) == {schema.READY: 1, schema.DONE: 1, schema.FAILED: 1, schema.COUNT_OPEN: 1,
                            schema.COUNT_ROOTS_FAILED: 1}
    b = claim(s, k, "T5", now=100.0)
    assert b.id == "b"
    assert done(s, k, b)
    assert counts(r, k) == {schema.DONE: 2, schema.FAILED: 1, schema.COUNT_ROOTS_DONE: 1,
                            schema.COUNT_ROOTS_FAILED: 1}
    # requeue of the failed root, then a takeover + cancel of it
    assert ops.requeue(s, k, ops.RequeueArgs(schema.FOLLOW_FAILED, ["c"])) == ["c"]
    assert counts(r, k) == {schema.DONE: 2, schema.READY: 1, schema.COUNT_OPEN: 1, schema.COUNT_ROOTS_DONE: 1}
    assert ops.takeover(s, k, ops.TakeoverArgs("CX", ["c"])) == ["c"]
    assert ops.complete(s, k, ops.Completion("c", "CX", schema.FAILED, reason="cancelled"))
    assert counts(r, k) == {schema.DONE: 2, schema.FAILED: 1, schema.COUNT_ROOTS_DONE: 1,
                            schema.COUNT_ROOTS_FAILED: 1}
    # a takeover of a finished root re-opens it (forrestq run --record)
    assert ops.takeover(s, k, ops.TakeoverArgs("RX", ["b"], finished_too=True)) == ["b"]
    assert counts(r, k) == {schema.DONE: 1, schema.RUNNING: 1, schema.FAILED: 1, schema.COUNT_OPEN: 1,
                            schema.COUNT_ROOTS_FAILED: 1}
    assert ops.complete(s, k, ops.Completion("b", "RX", schema.DONE, result=b"R"))
    # clean: a done root and a failed root are counted out; the last clean leaves nothing
    assert ops.clean(s, k, ["b", "c", "a"]) == 3
    assert counts(r, k) == {}
    # a root scheduled while unfinished is cleaned as unfinished
    ops.schedule(s, k, ops.ScheduleArgs([ops.Node("e", root=True)]))
    assert ops.clean(s, k, ["e"]) == 1 and counts(r, k) == {}


def test_cancelling_a_running_task_keeps_its_host(r: redis.Redis, k: QueueKeys, s: ops.Scripts) -> None:
    ops.schedule(s, k, ops.ScheduleArgs([ops.Node("a", root=True), ops.Node("b", root=True)]))
    claim(s, k, "T1")  # host h1
    assert ops.takeover(s, k, ops.TakeoverArgs("CX", ["a", "b"])) == ["a", "b"]
    for tid in ("a", "b"):
        assert ops.complete(s, k, ops.Completion(tid, "CX", schema.FAILED, reason="cancelled"))  # host ""
    assert field(r, k, "a", schema.TASK_HOST) == "h1"  # the attempt that was running
    assert field(r, k, "b", schema.TASK_HOST) is None  # never ran: no host
    ops.schedule(s, k, ops.ScheduleArgs([ops.Node("c", root=True)]))
    c = claim(s, k, "T2")
    assert ops.complete(s, k, ops.Completion(c.id, c.token, schema.DONE, host="h2"))
    assert field(r, k, "c", schema.TASK_HOST) == "h2"  # a worker's completion still records its host
