"""Unit tests of forrestq.deferred: building deferred values and the RunForrest traps it avoids."""
from __future__ import annotations

import copy
import operator
import os
import pickle
import re

import pytest

from forrestq.deferred import Call, Deferred, Part, _apply, _identity, apply_path, base_and_path, defer, new_id
from forrestq.plan import evaluate


def load(path):
    return {"path": path, "rows": [1, 2, 3]}


def fit(data, k):
    return sum(data["rows"]) * k


# ---------------------------------------------------------------------------------------- defer


def test_defer_callable_makes_a_call():
    t = defer(fit, 1, k=3)
    assert isinstance(t, Call) and isinstance(t, Deferred)
    assert t._fn is fit and t._args == (1,) and t._kwargs == {"k": 3}
    assert isinstance(t._id, str) and t._id


def test_each_call_has_its_own_id():
    assert defer(fit, 1, 2)._id != defer(fit, 1, 2)._id


def test_defer_plain_value_is_a_data_task():
    t = defer(42)
    assert t._fn is _identity and t._args == (42,) and t._kwargs == {}
    assert evaluate(t) == 42


def test_defer_noncallable_with_args_raises():
    with pytest.raises(TypeError, match="not callable"):
        defer(42, 1, 2)
    with pytest.raises(TypeError, match="not callable"):
        defer("x", key=1)


def test_keyword_named_fn_is_passed_through():
    t = defer(dict, fn=1)
    assert t._kwargs == {"fn": 1}
    assert evaluate(t) == {"fn": 1}


def test_defer_of_deferred_function_resolves_the_function_slot():
    fns = defer(dict, neg=operator.neg)
    t = defer(fns["neg"], 5)
    assert t._fn is _apply and t._args[0] is not None
    assert evaluate(t) == -5
    assert _apply(operator.add, 1, 2) == 3


# ------------------------------------------------------------------------------------------ parts


def test_item_and_attr_make_parts():
    t = defer(load, "a")
    item, attr = t[1], t.thing
    assert isinstance(item, Part) and (item._parent, item._op, item._key) == (t, "item", 1)
    assert isinstance(attr, Part) and (attr._parent, attr._op, attr._key) == (t, "attr", "thing")


def test_chains_and_base_and_path():
    t = defer(load, "a")
    assert base_and_path(t) == (t, ())
    assert base_and_path(t.args[0]) == (t, (("attr", "args"), ("item", 0)))
    assert base_and_path(t[1].thing[0]) == (t, (("item", 1), ("attr", "thing"), ("item", 0)))


def test_apply_path():
    class Box:
        thing = [10, 20]
    assert apply_path({"a": Box()}, (("item", "a"), ("attr", "thing"), ("item", 1))) == 20
    assert apply_path(5, ()) == 5


def test_runforrest_examples():
    assert evaluate(defer(Exception, "an error message").args[0]) == "an error message"
    assert evaluate(defer(Exception, "an error message").args) == ("an error message",)
    assert evaluate(defer(dict, alpha="a", beta="b")["alpha"]) == "a"
    assert evaluate(defer({"value": 42})["value"]) == 42
    assert evaluate(defer(lambda x: x, defer(list, [23, 42])[1])) == 42
    assert evaluate(defer(dict, value=42)) == {"value": 42}


def test_nested_tree():
    data = defer(load, "file.csv")
    t = defer(fit, data, data["rows"][0])
    assert evaluate(t) == 6
    assert evaluate(defer(fit, defer(load, "x"), k=defer(len, defer(load, "y")["rows"]))) == 18


def test_private_and_dunder_names_are_not_deferred():
    t = defer(load, "a")
    for name in ("_private", "__len__", "__array__", "__array_interface__", "__setstate__",
                 "__deepcopy__", "_repr_html_", "_ipython_display_"):
        assert not hasattr(t, name)
    with pytest.raises(AttributeError):
        t._whatever


def test_copy_and_pickle_are_not_fooled():
    t = defer(load, "a")
    assert copy.copy(t)._id == t._id
    assert copy.deepcopy(t)._id == t._id
    back = pickle.loads(pickle.dumps(t))
    assert isinstance(back, Call) and back._id == t._id and back._fn is load
    part = pickle.loads(pickle.dumps(t[1].x))
    assert base_and_path(part)[1] == (("item", 1), ("attr", "x"))


def test_numpy_treats_it_as_an_object():
    np = pytest.importorskip("numpy")
    t = defer(load, "a")
    arr = np.asarray(t)
    assert arr.dtype == object and arr.shape == () and arr[()] is t


def test_indexing_with_a_deferred_key_is_refused():
    t = defer(load, "a")
    with pytest.raises(TypeError, match="another deferred"):
        t[defer(len, "x")]


# ------------------------------------------------------------------------------------------ traps


@pytest.mark.parametrize("action", [iter, list, tuple, lambda t: [*t], sorted, enumerate])
def test_iterating_raises_instead_of_looping(action):
    t = defer(load, "a")
    with pytest.raises(TypeError, match=r"t\[0\], t\[1\]"):
        action(t)


def test_membership_raises_with_a_hint():
    with pytest.raises(TypeError, match="operator.contains"):
        1 in defer(load, "a")


def test_unpacking_raises():
    t = defer(load, "a")
    with pytest.raises(TypeError, match=r"t\[0\], t\[1\]"):
        a, b = t


def test_len_raises():
    with pytest.raises(TypeError):
        len(defer(load, "a"))


def test_bool_raises():
    t = defer(load, "a")
    with pytest.raises(TypeError, match="no truth value until it runs"):
        bool(t)
    with pytest.raises(TypeError, match="no truth value"):
        if t[0]:
            pass


def test_item_and_attr_paths_do_not_collide():
    t = defer(dict, {1: "int", "1": "str", "x": "item"})
    assert base_and_path(t[1]) != base_and_path(t["1"])
    assert evaluate(defer(lambda a, b: (a, b), t[1], t["1"])) == ("int", "str")

    class Obj(dict):
        x = "attr"
    o = defer(Obj, x="item")
    assert base_and_path(o.x) != base_and_path(o["x"])
    assert evaluate(defer(lambda a, b: (a, b), o.x, o["x"])) == ("attr", "item")


def test_equality_is_identity_and_never_raises():
    t, u = defer(load, "a"), defer(load, "a")
    assert t == t and not (t != t)
    assert t != u and not (t == u)
    assert (t == 5) is False and (t != 5) is True
    assert (t == None) is False  # noqa: E711
    assert t[1] != t[1]  # two Part objects
    assert t.__eq__(5) is NotImplemented  # the other type has its say (a Task, an adapter's own class)
    np = pytest.importorskip("numpy")
    assert (t == np.arange(3)).tolist() == [False] * 3  # numpy compares elementwise, as with any object


def test_hashable_by_identity():
    t, u = defer(load, "a"), defer(load, "a")
    assert len({t, u, t}) == 2
    assert {t: 1}[t] == 1
    p = t.x
    assert p in {p}


def test_repr():
    t = defer(fit, defer(load, "data.csv"), 3)
    text = repr(t)
    assert text.startswith("<deferred fit(load(...), 3) #") and text.endswith(f"#{t._id}>")
    assert repr(t[1].thing) == f"<deferred fit(load(...), 3)[1].thing #{t._id}>"
    d = defer(42)
    assert repr(d) == f"<deferred defer(42) #{d._id}>"
    f = defer(dict, neg=operator.neg)["neg"]
    assert repr(defer(f, 5)).startswith("<deferred dict(...)['neg'](5) #")
    long = defer(fit, "x" * 1000, list(range(1000)), key="y" * 1000)
    assert len(repr(long)) < 120 and "..." in repr(long)


def test_repr_of_a_long_chain_is_short():
    t = defer(load, "a")
    for i in range(10_000):
        t = t[i]
    assert len(repr(t)) < 120


def test_attributes_are_not_settable():
    t = defer(load, "a")
    with pytest.raises(AttributeError):
        t.returnvalue = 1


# -------------------------------------------------------------------------------------------- ids


def test_new_id_is_short_and_unique():
    ids = [new_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-v]{13,20}", i) for i in ids)
    assert len({i[:12] for i in ids}) == 1  # one prefix per process


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_new_id_prefix_is_redrawn_after_fork():
    before = new_id()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.write(w, new_id().encode())
        finally:
            os._exit(0)
    os.close(w)
    child_id = os.read(r, 100).decode()
    os.close(r)
    os.waitpid(pid, 0)
    after = new_id()
    assert child_id[:12] != before[:12]
    assert after[:12] == before[:12]
    assert child_id not in (before, after)


def test_construction_is_cheap():
    import time
    n = 20_000
    start = time.perf_counter()
    for i in range(n):
        defer(fit, i, k=1)
    per_call = (time.perf_counter() - start) / n
    assert per_call < 20e-6  # generous: about 1 µs on a laptop
