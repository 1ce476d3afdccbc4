"""schedule.lua's compact node layout (issue 18): the call's options sent once, a node's own only when
they differ (ops.nodes_argv, include/nodes.lua). The records written are the same as field-by-field."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from forrestq import ops, schema
from forrestq.schema import GROUP, QueueKeys


@pytest.fixture
def k(r: redis.Redis) -> QueueKeys:
    keys = QueueKeys("argv")
    r.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    return keys


@pytest.fixture
def s(r: redis.Redis) -> Iterator[ops.Scripts]:
    yield ops.Scripts(r)


def record(r: redis.Redis, k: QueueKeys, tid: str) -> dict[str, str]:
    """The task's fields, the ones that vary from run to run (times, stream ids) left out."""
    got = {f.decode(): v.decode(errors="replace") for f, v in r.hgetall(k.task(tid)).items()}
    return {f: v for f, v in got.items() if f not in (schema.TASK_CREATED, schema.TASK_STREAM_ID, schema.TASK_DUE)}


def test_plain_roots_take_six_fields_each_and_the_options_once() -> None:
    nodes = [ops.Node(f"n{i}", "f", b"x", "", "noop", root=True) for i in range(3)]
    argv = ops.nodes_argv(nodes)
    assert len(argv) == 9 + 6 * 3
    assert argv[9:15] == ["n0", "f", b"x", "", "noop", schema.NODE_ROOT]


def test_each_option_is_written_as_given_per_node(r: redis.Redis, k: QueueKeys, s: ops.Scripts) -> None:
    r.set(k.result_ttl, "30.0")
    full = ops.Node("b", "g", b"y", "a", "nb", root=True, metadata=b"M", timeout="5.0", max_attempts="2",
                    key="K", retry_policy=b"P", io_bound=True, soft_timeout="1.0", resources="cpus=2",
                    allow_failed=True, due="+600", result_ttl="60.0", limits="l1", priority="3")
    got = ops.schedule(s, k, ops.ScheduleArgs([
        ops.Node("a", "f", b"x", "", "na"), full, ops.Node("c", "f", b"z", "", "nc", root=True),
        ops.Node("a", root=True, metadata=b"MA")]))
    assert got.states == [schema.READY, schema.WAITING, schema.READY, schema.READY]
    base = {schema.TASK_FN: "f", schema.TASK_NAME: "na", schema.TASK_ARGS: "x", schema.TASK_STATE: schema.READY}
    assert record(r, k, "a") == {**base, schema.TASK_ROOT: "1", schema.TASK_META: "MA"}
    assert record(r, k, "b") == {
        schema.TASK_FN: "g", schema.TASK_ARGS: "y", schema.TASK_NAME: "nb", schema.TASK_INPUTS: "a",
        schema.TASK_ROOT: "1", schema.TASK_META: "M", schema.TASK_TIMEOUT: "5.0", schema.TASK_MAX_ATTEMPTS: "2",
        schema.TASK_KEY: "K", schema.TASK_RETRY_POLICY: "P", schema.TASK_IO_BOUND: "1",
        schema.TASK_SOFT_TIMEOUT: "1.0", schema.TASK_RESOURCES: "cpus=2", schema.TASK_ALLOW_FAILED: "1",
        schema.TASK_RESULT_TTL: "60.0", schema.TASK_LIMITS: "l1", schema.TASK_PRIORITY: "3",
        schema.TASK_STATE: schema.WAITING, schema.TASK_PENDING: "1"}
    assert r.hget(k.task("b"), schema.TASK_DUE)  # a due time, though it waits for its input first
    assert record(r, k, "c") == {schema.TASK_FN: "f", schema.TASK_ARGS: "z", schema.TASK_NAME: "nc",
                                 schema.TASK_ROOT: "1", schema.TASK_RESULT_TTL: "30.0",
                                 schema.TASK_STATE: schema.READY}
    assert r.hgetall(k.counts) == {schema.READY.encode(): b"2", schema.WAITING.encode(): b"1",
                                   schema.COUNT_OPEN.encode(): b"3"}


def test_a_node_without_the_first_nodes_options_has_none(r: redis.Redis, k: QueueKeys, s: ops.Scripts) -> None:
    got = ops.schedule(s, k, ops.ScheduleArgs([
        ops.Node("a", "f", timeout="5.0", due="+600", priority="2", limits="l", root=True, result_ttl="0"),
        ops.Node("b", "f", root=True, result_ttl="7.0"), ops.Node("c", "f", timeout="5.0", due="+600",
                                                                  priority="2", limits="l", root=True)]))
    assert got.states == [schema.SCHEDULED, schema.READY, schema.SCHEDULED]
    assert record(r, k, "b") == {schema.TASK_FN: "f", schema.TASK_ARGS: "", schema.TASK_NAME: "",
                                 schema.TASK_ROOT: "1", schema.TASK_RESULT_TTL: "7.0", schema.TASK_STATE: schema.READY}
    same = {schema.TASK_FN: "f", schema.TASK_ARGS: "", schema.TASK_NAME: "", schema.TASK_ROOT: "1",
            schema.TASK_TIMEOUT: "5.0", schema.TASK_PRIORITY: "2", schema.TASK_LIMITS: "l",
            schema.TASK_STATE: schema.SCHEDULED}
    assert record(r, k, "a") == same and record(r, k, "c") == same
    assert r.zcard(k.delayed) == 2


def test_nodes_that_exist_are_found_in_any_batch(r: redis.Redis, k: QueueKeys, s: ops.Scripts) -> None:
    """Whether the nodes exist is asked per batch (EXISTS): an old node far into a big call is left as it
    is, a node named twice in one call is written once, and inputs written earlier in the call count."""
    ops.schedule(s, k, ops.ScheduleArgs([ops.Node("old", "f", b"old")]))
    nodes = [ops.Node(f"n{i}", "f", root=True) for i in range(1200)]
    nodes[700] = ops.Node("old", "g", b"new", root=True)
    nodes.append(ops.Node("n5", "h", root=True))  # again, in another batch
    nodes.append(ops.Node("dep", "f", inputs="n3,old,n1100", root=True))
    got = ops.schedule(s, k, ops.ScheduleArgs(nodes, since=False))
    assert got.states == [schema.READY] * 1201 + [schema.WAITING] and got.since == ""
    assert r.hget(k.task("old"), schema.TASK_ARGS) == b"old" and r.hget(k.task("old"), schema.TASK_FN) == b"f"
    assert r.hget(k.task("n5"), schema.TASK_FN) == b"f"
    assert r.xlen(k.stream) == 1200  # every READY node once (old had its entry from the first call)
    assert r.hget(k.task("dep"), schema.TASK_PENDING) == b"3"
    assert all(r.smembers(k.dependents(i)) == {b"dep"} for i in ("n3", "old", "n1100"))


def test_the_signer_and_function_blobs_are_written_with_the_nodes(r: redis.Redis, k: QueueKeys,
                                                                  s: ops.Scripts) -> None:
    r.set(k.fn("s1"), b"kept")
    ops.schedule(s, k, ops.ScheduleArgs([ops.Node("a", "s1"), ops.Node("b", "s2")], signer="abcd1234",
                                        fns={"s1": b"other", "s2": b"blob2"}))
    assert r.get(k.signer) == b"abcd1234" and r.get(k.fn("s1")) == b"kept" and r.get(k.fn("s2")) == b"blob2"
    ops.schedule(s, k, ops.ScheduleArgs([ops.Node("c", "s2")]))  # neither: nothing else written
    assert r.get(k.signer) == b"abcd1234"


def test_blobs_and_signer_are_read_first_and_only_the_missing_or_changed_written(r: redis.Redis, k: QueueKeys,
                                                                                  s: ops.Scripts) -> None:
    """schedule.lua reads the signer and the first blobs in its one MGET and writes only what is missing or
    differs; blobs past the ones read are SET NX each: every blob is there after the call, none replaced."""
    shas = [f"s{i}" for i in range(150)]
    for sha in shas[::7]:  # some there already, in the part read and past it
        r.set(k.fn(sha), b"kept")
    r.set(k.signer, "old")
    ops.schedule(s, k, ops.ScheduleArgs([ops.Node(f"n{i}", sha) for i, sha in enumerate(shas)], signer="new1234",
                                        fns={sha: b"blob-" + sha.encode() for sha in shas}))
    assert r.get(k.signer) == b"new1234"
    assert [r.get(k.fn(sha)) for sha in shas] == [b"kept" if i % 7 == 0 else b"blob-" + sha.encode()
                                                  for i, sha in enumerate(shas)]


def test_include_helpers_a_script_does_not_use_are_left_out() -> None:
    """Every closure a script defines is made again at each call: ops.source leaves out the unused ones."""
    assert "local function promote_due(" not in ops.source("schedule")  # include/delayed.lua's, claim's
    assert "local function promote_due(" in ops.source("claim")
    assert "local function write_nodes(" in ops.source("schedule")
    text = "local function a(x)\n  return x\nend\nlocal function b(x)\n  return a(x)\nend\nreturn 1\n"
    assert ops._unused_dropped(text) == "return 1\n"  # b is unused, and then so is a


LONE_OPTIONS = [{}, {"timeout": "5.0", "max_attempts": "2", "retry_policy": b"P", "soft_timeout": "1.0",
                     "resources": "cpus=2", "limits": "l1,l2"}, {"max_attempts": "7"}, {"priority": "3"},
                {"result_ttl": "60.0"}, {"result_ttl": "0"}, {"limits": "l1", "priority": "9", "result_ttl": "5.0"}]


@pytest.mark.parametrize("queue_ttl", [None, "30.0"])
@pytest.mark.parametrize("options", LONE_OPTIONS)
def test_a_lone_new_root_writes_what_the_general_path_writes(r: redis.Redis, k: QueueKeys, s: ops.Scripts,
                                                            options: dict, queue_ttl: str | None) -> None:
    """One new root without inputs, flags or due time takes schedule.lua's lean path (write_root): the
    same record, stream entry, counts and events as the same node written by write_nodes, in a call of two."""
    r.set(k.events_cap, "100")
    if queue_ttl:
        r.set(k.result_ttl, queue_ttl)
    got = ops.schedule(s, k, ops.ScheduleArgs([ops.Node("lone", "f", b"x", "", "nm", root=True, **options)]))
    after_lone = {f: int(v) for f, v in r.hgetall(k.counts).items()}
    pair = ops.schedule(s, k, ops.ScheduleArgs([ops.Node("gen", "f", b"x", "", "nm", root=True, **options),
                                                ops.Node("other", "f", b"y", "", "o")]))
    assert got.states == [pair.states[0]] and got.since == "0-0"
    assert record(r, k, "lone") == record(r, k, "gen")
    level = options.get("priority", "")
    stream = k.stream + schema.STREAM_LEVEL + level if level else k.stream
    entries = [e[1][schema.ENTRY_TASK.encode()] for e in r.xrange(stream)]
    assert entries[:2] == [b"lone", b"gen"]
    for tid in ("lone", "gen"):
        sid = r.hget(k.task(tid), schema.TASK_STREAM_ID).decode()
        assert sid.rsplit(schema.LEVEL_SEP, 1)[-1] in {e[0].decode() for e in r.xrange(stream)}
    assert after_lone == {schema.READY.encode(): 1, schema.COUNT_OPEN.encode(): 1}
    events = {tid: [{f: v for f, v in e[1].items() if f != schema.ENTRY_TASK.encode()} for e in r.xrange(k.events)
                    if e[1][schema.ENTRY_TASK.encode()] == tid] for tid in (b"lone", b"gen")}
    assert len(events[b"lone"]) == 1 and events[b"lone"] == events[b"gen"]


def test_a_lone_root_that_is_not_new_or_not_plain_takes_the_general_path(r: redis.Redis, k: QueueKeys,
                                                                          s: ops.Scripts) -> None:
    """An existing node is left as it is (a root flag added), a due time makes it SCHEDULED, inputs make it
    wait: the lean path steps aside and writes nothing of its own."""
    ops.schedule(s, k, ops.ScheduleArgs([ops.Node("inner", "f", b"x")]))
    got = ops.schedule(s, k, ops.ScheduleArgs([ops.Node("inner", "g", b"new", root=True, metadata=b"M")]))
    assert got.states == [schema.READY]
    assert r.hget(k.task("inner"), schema.TASK_ROOT) == b"1" and r.hget(k.task("inner"), schema.TASK_FN) == b"f"
    again = ops.schedule(s, k, ops.ScheduleArgs([ops.Node("inner", "g", b"new", root=True)]))
    assert again.states == [schema.READY] and r.xlen(k.stream) == 1
    assert ops.schedule(s, k, ops.ScheduleArgs([ops.Node("later", "f", root=True, due="+600")])).states \
        == [schema.SCHEDULED]
    assert ops.schedule(s, k, ops.ScheduleArgs([ops.Node("dep", "f", inputs="later", root=True)])).states \
        == [schema.WAITING]
    assert r.hgetall(k.counts) == {schema.READY.encode(): b"1", schema.SCHEDULED.encode(): b"1",
                                   schema.WAITING.encode(): b"1", schema.COUNT_OPEN.encode(): b"3"}


@pytest.mark.parametrize("max_attempts", ["3", "5"])
def test_the_leaf_command_is_the_command_write_builds(k: QueueKeys, s: ops.Scripts, max_attempts: str) -> None:
    """A single schedule() of a leaf goes as ops.leaf_command (a template filled in): the very tuple
    schedule.command builds for that node, and that node is what the options of a call without any make."""
    from forrestq import producer
    from forrestq.plan import NodeSpec

    spec = NodeSpec("abc1", "sha1", b"blob", "mod.fn", b"\x00args", [])
    node = producer._plain_options(int(max_attempts)).node(spec, True, b"", None)
    assert node == ops.Node("abc1", "sha1", b"\x00args", "", "mod.fn", root=True, max_attempts=max_attempts)
    for now, signer in ((1764645000.1234, "f1"), (1.0, "none")):
        general = ops.schedule.command(s, k, ops.ScheduleArgs([node], now, True, signer, {"sha1": b"blob"}))
        leaf = ops.leaf_command(s, k, "abc1", "sha1", b"\x00args", "mod.fn", b"blob", now, signer, max_attempts)
        assert leaf == general and [type(v) for v in leaf] == [type(v) for v in general]
