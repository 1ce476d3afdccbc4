"""Unit tests of forrestq.codec: functions, arguments, results, exceptions, planning, evaluate."""
from __future__ import annotations

import hashlib
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import threading

import dill
import pytest

from forrestq import codec
from forrestq.codec import dump_args, dump_exception, dump_fn, dumps, load_args, load_fn, loads
from forrestq.deferred import _identity, defer
from forrestq.errors import GraphError, RemoteError, SerializationError, WorkerImportError
from forrestq.plan import NodeSpec, Planner, evaluate

SCALE = 2
CALLS: list = []


def load(path):
    return {"path": path, "rows": [1, 2, 3]}


def fit(data, k):
    return sum(data["rows"]) * k


def inc(x):
    return x + 1


def counted(x):
    CALLS.append(x)
    return x


def pair(a, b):
    return a, b


def boom(x):
    raise KeyError(x)


def gen():
    yield 1


def make_adder(n):
    def add(x):
        def twice(y):
            return 2 * y
        return twice(x) + n
    return add


class Box:
    def __init__(self, v):
        self.v = v


class BadInit(Exception):
    """Pickles fine, fails to unpickle: __reduce__ passes self.args (one value) to a 2-arg init."""

    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


class HoldsSocket:
    def __init__(self):
        self.sock = socket.socket()

    def __call__(self):
        return 1


def run_fresh(blob: bytes, code: str, cwd) -> subprocess.CompletedProcess:
    """Load ``blob`` with load_fn as ``f`` in a new interpreter where this test module is not
    importable, then run ``code``."""
    script = ("import sys, importlib.util\n"
              "assert importlib.util.find_spec('test_codec') is None\n"
              "from forrestq.codec import load_fn\n"
              "f = load_fn(sys.stdin.buffer.read(), host='fresh')\n" + code)
    return subprocess.run([sys.executable, "-c", script], input=blob, capture_output=True,
                          cwd=cwd, timeout=120)


def fresh_output(blob: bytes, code: str, cwd) -> str:
    proc = run_fresh(blob, code, cwd)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode().strip()


# ---------------------------------------------------------------------------------- dump_fn


def test_importable_function_pickles_by_reference():
    sha, blob, name = dump_fn(textwrap.dedent)
    assert len(blob) < 200
    assert name == "textwrap.dedent"
    assert sha == codec.fn_id(blob) == hashlib.sha1(blob).hexdigest()[:codec.FN_ID_CHARS]
    assert load_fn(blob) is textwrap.dedent
    assert dump_fn(fit)[2].endswith(".fit") and len(dump_fn(fit)[1]) < 200
    assert load_fn(dump_fn(len)[1]) is len
    assert load_fn(dump_fn(dict)[1]) is dict


def test_dump_fn_is_cached_per_function(monkeypatch):
    monkeypatch.setattr(codec, "_fn_cache", {})
    calls = []
    real_pickle, real_dill = pickle.dumps, dill.dumps
    monkeypatch.setattr(pickle, "dumps", lambda *a, **k: calls.append(a[0]) or real_pickle(*a, **k))
    monkeypatch.setattr(dill, "dumps", lambda *a, **k: calls.append(a[0]) or real_dill(*a, **k))
    first = dump_fn(textwrap.indent)
    n = len(calls)
    assert n >= 1
    assert dump_fn(textwrap.indent) is first
    assert len(calls) == n

    f = lambda x: x + 1  # noqa: E731  (by value)
    first = dump_fn(f)
    n = len(calls)
    for _ in range(100):
        assert dump_fn(f) is first
    assert len(calls) == n


def test_cache_entry_goes_with_the_function(monkeypatch):
    monkeypatch.setattr(codec, "_fn_cache", {})
    f = make_adder(1)
    dump_fn(f)
    assert len(codec._fn_cache) == 1
    del f
    assert codec._fn_cache == {}


def test_by_value_function_is_redumped_when_a_global_is_rebound(monkeypatch, tmp_path):
    f = lambda x: x * SCALE  # noqa: E731
    before = dump_fn(f)
    assert dump_fn(f) is before
    monkeypatch.setattr(sys.modules[__name__], "SCALE", 5)
    after = dump_fn(f)
    assert after[0] != before[0]
    assert fresh_output(before[1], "print(f(3))", tmp_path) == "6"
    assert fresh_output(after[1], "print(f(3))", tmp_path) == "15"


def test_lambda_round_trips_in_a_fresh_interpreter(tmp_path):
    f = lambda x: [x, SCALE, os.sep]  # noqa: E731
    sha, blob, name = dump_fn(f)
    assert "<lambda>" in name
    assert fresh_output(blob, "print(f(3))", tmp_path) == str([3, SCALE, os.sep])


def test_closure_round_trips_in_a_fresh_interpreter(tmp_path):
    f = make_adder(10)
    sha, blob, name = dump_fn(f)
    assert "<locals>" in name
    assert fresh_output(blob, "print(f(3))", tmp_path) == "16"


def test_function_and_arguments_from_main_round_trip(tmp_path):
    """A script's functions, classes and instances load in a process whose __main__ differs."""
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent("""
        import pickle, sys
        from dataclasses import dataclass
        from forrestq.codec import dump_args, dump_fn, dumps
        OFFSET = 100
        @dataclass
        class Config:
            scale: int
        class Result:
            def __init__(self, v):
                self.v = v
        def helper(x):
            return x + OFFSET
        def task(x, config):
            return Result(helper(x) * config.scale)
        sha, blob, name = dump_fn(task)
        assert name == "__main__.task", name
        args, inputs = dump_args((3,), {"config": Config(2)})
        sys.stdout.buffer.write(pickle.dumps((blob, args, dumps(Config(5)))))
    """))
    made = subprocess.run([sys.executable, str(script)], capture_output=True, cwd=tmp_path,
                          timeout=120)
    assert made.returncode == 0, made.stderr.decode()
    code = ("import pickle\n"
            "from forrestq.codec import load_args, loads\n"
            "f, args, meta = pickle.loads(sys.stdin.buffer.read())\n"
            "f = load_fn(f)\n"
            "a, k = load_args(args, [])\n"
            "print(f(*a, **k).v, loads(meta).scale)\n")
    script = ("import sys\nfrom forrestq.codec import load_fn\n" + code)
    proc = subprocess.run([sys.executable, "-c", script], input=made.stdout, capture_output=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split() == ["206", "5"]


def test_a_lambda_using_an_uninstalled_module_names_it(tmp_path):
    f = lambda x: inc(x)  # noqa: E731  (inc goes by reference to this test module)
    proc = run_fresh(dump_fn(f)[1], "print(f(1))", tmp_path)
    assert proc.returncode != 0
    assert "cannot import module 'test_codec' on host fresh" in proc.stderr.decode()


def test_load_fn_names_the_missing_module_and_host(tmp_path, monkeypatch):
    (tmp_path / "fq_gone_mod.py").write_text("def work(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fq_gone_mod
    sha, blob, name = dump_fn(fq_gone_mod.work)
    assert name == "fq_gone_mod.work" and len(blob) < 200
    monkeypatch.delitem(sys.modules, "fq_gone_mod")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    with pytest.raises(ImportError) as info:
        load_fn(blob, host="node7")
    assert isinstance(info.value, SerializationError) and isinstance(info.value, WorkerImportError)
    message = str(info.value)
    assert "cannot import module 'fq_gone_mod' on host node7" in message
    assert "install it on the worker or define the function in __main__" in message


def test_load_fn_names_a_missing_function(tmp_path, monkeypatch):
    (tmp_path / "fq_old_mod.py").write_text("def work(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fq_old_mod
    blob = dump_fn(fq_old_mod.work)[1]
    monkeypatch.delattr(fq_old_mod, "work")
    with pytest.raises(WorkerImportError, match="cannot find fq_old_mod.work on host h1"):
        load_fn(blob, host="h1")
    monkeypatch.delitem(sys.modules, "fq_old_mod")


def test_unserialisable_function_names_it():
    with pytest.raises(SerializationError, match="HoldsSocket"):
        dump_fn(HoldsSocket())


# -------------------------------------------------------------------------------- arguments


def test_plain_arguments_round_trip():
    blob, inputs = dump_args((1, "a", [2.5]), {"k": {"x": None}})
    assert inputs == []
    assert load_args(blob, []) == ((1, "a", [2.5]), {"k": {"x": None}})


def test_deferred_values_anywhere_become_references():
    a, b = defer(load, "a"), defer(load, "b")
    args = ([a, (b["rows"],)], {"k": a["path"]}, {b["path"]}, Box(a["rows"][1]), frozenset([a.x]))
    blob, inputs = dump_args(args, {"kw": Box([b, a])})
    assert len(inputs) == 2 and inputs[0] is a and inputs[1] is b  # distinct, first-seen order

    class Va(dict):
        x = "attr-x"
    va, vb = Va(path="A", rows=[1, 2]), {"path": "B", "rows": [3]}
    (lst, dct, st, box, fs), kwargs = load_args(blob, [va, vb])
    assert lst == [va, ([3],)] and lst[0] is va
    assert dct == {"k": "A"}
    assert st == {"B"}
    assert isinstance(box, Box) and box.v == 2
    assert fs == frozenset(["attr-x"])
    assert kwargs["kw"].v[0] is vb and kwargs["kw"].v[1] is va


def test_argument_references_keep_item_and_attr_apart():
    a = defer(load, "a")
    blob, inputs = dump_args((a[1], a["1"]), {})
    assert len(inputs) == 1
    assert load_args(blob, [{1: "int", "1": "str"}])[0] == ("int", "str")


def test_arguments_the_c_pickle_cannot_do_fall_back_to_dill():
    a = defer(load, "a")
    lock = threading.Lock()
    blob, inputs = dump_args((lambda x: x + 1, a, lock), {"f": make_adder(1)})
    assert inputs[0] is a
    (f, data, lock2), kwargs = load_args(blob, ["A"])
    assert f(1) == 2 and data == "A" and kwargs["f"](1) == 3
    assert lock2.acquire(blocking=False)


def test_unserialisable_positional_argument_is_named():
    with socket.socket() as s:
        with pytest.raises(SerializationError) as info:
            dump_args((1, s), {}, "mod.fit")
    message = str(info.value)
    assert "argument 2 of mod.fit(...)" in message and "socket" in message


def test_unserialisable_keyword_argument_is_named_down_to_the_object():
    with socket.socket() as s:
        with pytest.raises(SerializationError) as info:
            dump_args((), {"data": {"rows": [1, 2], "conn": Box(s)}}, "fit")
    message = str(info.value)
    assert "keyword 'data' of fit(...)" in message
    assert "the object that fails is <socket.socket" in message
    assert len(message) < 400


def test_a_generator_argument_is_refused_by_schedule():
    with pytest.raises(SerializationError, match=r"argument 1 of .*fit\(\.\.\.\).*generator"):
        Planner().add(defer(fit, (x for x in range(3)), 1))


# -------------------------------------------------------------------------- results, exceptions


def test_dumps_loads():
    assert loads(dumps({"a": [1, 2]})) == {"a": [1, 2]}
    assert loads(dumps(lambda x: x * 3))(2) == 6
    with socket.socket() as s:
        with pytest.raises(SerializationError, match="socket"):
            dumps(s)


def test_dump_exception_keeps_a_picklable_exception():
    back = loads(dump_exception(ValueError("bad value", 3)))
    assert type(back) is ValueError and back.args == ("bad value", 3)


def test_dump_exception_replaces_one_that_does_not_unpickle():
    exc = BadInit(1, 2)
    pickle.dumps(exc)  # pickling works, loading is what fails
    back = loads(dump_exception(exc))
    assert isinstance(back, RemoteError)
    assert back.type_name == f"{__name__}.BadInit" and back.message == "1-2"


def test_dump_exception_replaces_one_that_does_not_pickle():
    exc = RuntimeError("with a socket")
    with socket.socket() as s:
        exc.sock = s
        back = loads(dump_exception(exc))
    assert isinstance(back, RemoteError) and back.type_name == "RuntimeError"
    assert back.message == "with a socket"


# ---------------------------------------------------------------------------------- planning


def test_planner_orders_inputs_first_and_plans_each_node_once():
    a = defer(load, "a")
    b = defer(fit, a, 1)
    c = defer(pair, a, b)
    root, specs = Planner().add(c)
    ids = [s.id for s in specs]
    assert root == c._id and ids == [a._id, b._id, c._id]
    by_id = {s.id: s for s in specs}
    assert by_id[c._id].inputs == [a._id, b._id]
    assert by_id[b._id].inputs == [a._id]
    assert by_id[a._id].inputs == []
    spec = by_id[b._id]
    assert isinstance(spec, NodeSpec) and spec.name.endswith(".fit")
    assert spec.fn_sha == codec.fn_id(spec.fn_blob)
    assert load_fn(spec.fn_blob) is fit


def test_planner_remembers_nodes_across_roots():
    p = Planner()
    a = defer(load, "a")
    first = defer(fit, a, 1)
    assert [s.id for s in p.add(first)[1]] == [a._id, first._id]
    second = defer(fit, a, 2)
    assert [s.id for s in p.add(second)[1]] == [second._id]
    assert p.add(first) == (first._id, [])
    assert p.seen == {a._id, first._id, second._id}


def test_planner_wraps_parts_and_plain_values():
    p = Planner()
    a = defer(load, "a")
    p.add(a)
    root, specs = p.add(a["rows"])
    assert len(specs) == 1 and specs[0].id == root and specs[0].inputs == [a._id]
    assert load_fn(specs[0].fn_blob) is _identity
    root, specs = p.add(42)
    assert len(specs) == 1 and load_args(specs[0].args, []) == ((42,), {})
    root, specs = p.add(len)  # a plain callable is data too
    assert load_args(specs[0].args, []) == ((len,), {})


def test_planner_detects_a_cycle_and_changes_nothing():
    p = Planner()
    items: list = []
    a = defer(len, items)
    items.append(defer(inc, a))
    with pytest.raises(GraphError, match="cycle"):
        p.add(a)
    assert p.seen == set()


def test_failed_plan_changes_nothing():
    p = Planner()
    with socket.socket() as s:
        with pytest.raises(SerializationError):
            p.add(defer(pair, defer(load, "x"), s))
    assert p.seen == set()


def test_a_long_chain_plans_and_evaluates_without_recursion_error():
    t = defer(0)
    for _ in range(100_000):
        t = defer(inc, t)
    root, specs = Planner().add(t)
    assert len(specs) == 100_001 and specs[-1].id == root
    assert evaluate(t) == 100_000


def test_a_long_part_chain():
    loop: dict = {"end": "here"}
    loop[0] = loop
    t = defer(loop)
    for _ in range(10_000):
        t = t[0]
    assert evaluate(t["end"]) == "here"


# ---------------------------------------------------------------------------------- evaluate


def test_evaluate_runs_a_shared_subtask_once():
    CALLS.clear()
    shared = defer(counted, 7)
    t = defer(pair, defer(pair, shared, shared), defer(fit, {"rows": [1]}, shared))
    assert evaluate(t) == ((7, 7), 7)
    assert CALLS == [7]


def test_evaluate_resolves_deferred_values_in_containers_and_objects():
    a, b = defer(load, "a"), defer(dict, k=5)
    t = defer(pair, [a["path"], {"k": b["k"]}, {b["k"]}], Box((a["rows"], b)))
    (lst, box) = evaluate(t)
    assert lst == ["a", {"k": 5}, {5}]
    assert box.v == ([1, 2, 3], {"k": 5})


def test_evaluate_propagates_exceptions_unchanged():
    with pytest.raises(KeyError) as info:
        evaluate(defer(inc, defer(boom, "missing")))
    assert info.value.args == ("missing",)
    with pytest.raises(KeyError):
        evaluate(defer(dict, a=1)["b"])


def test_evaluate_of_a_plain_value_is_the_value():
    obj = object()
    assert evaluate(obj) is obj


def test_evaluate_refuses_a_result_a_worker_could_not_store():
    with pytest.raises(SerializationError):
        evaluate(defer(gen))
