"""Named graphs before and after scheduling (issue 13, item 7): ``forrestq.check_graph`` checks a graph
without writing anything and returns the order it would be scheduled in; ``Queue.descendants`` lists
what lies downstream of a scheduled task (what ``rerun`` re-runs besides it); and the rule for a
function that has no ``dependencies`` entry: it is a task without inputs, scheduled and run."""
from __future__ import annotations

import pytest
import redis

from forrestq import GraphError, Queue, UnknownTask, check_graph, defer


def a():
    return 5


def b(x):
    return x + 10


def c(x, y):
    return x + y + 20


def extra():
    return "ran"


FUNCS = {"a": a, "b": b, "c": c}
DEPS = {"c": ["a", "b"], "b": ["a"], "a": []}


def test_check_graph_returns_an_order_inputs_first():
    order = check_graph(FUNCS, DEPS)
    assert sorted(order) == ["a", "b", "c"]
    assert order.index("a") < order.index("b") < order.index("c")


def test_check_graph_leaves_done_names_out():
    assert check_graph(FUNCS, DEPS, done=["a"]) == ["b", "c"]


@pytest.mark.parametrize("funcs, deps, done, match", [
    ({"a": a, "b": b}, {"a": ["b"], "b": ["a"]}, None, "cycle in task graph: "),
    ({"a": a}, {"a": ["a"]}, None, "cycle"),
    ({"a": a}, {"a": ["missing"]}, None, "depends on 'missing'"),
    ({"a": a}, {"a": [], "d": ["a"]}, None, "'d' has no function"),
    ({"a": a}, {"a": []}, ["zz"], "done names unknown tasks: 'zz'"),
    ({"a": a}, {"a": "b"}, None, "not the string"),
    ({"a": 3}, {}, None, "not callable"),
])
def test_check_graph_raises_graph_error_naming_the_culprit(funcs, deps, done, match):
    with pytest.raises(GraphError, match=match):
        check_graph(funcs, deps, done=done)


def test_check_graph_writes_nothing_and_needs_no_server(url, r: redis.Redis):
    with pytest.raises(GraphError):
        check_graph({"a": a, "b": b}, {"a": ["b"], "b": ["a"]})
    assert check_graph(FUNCS, DEPS)
    assert r.dbsize() == 0


def test_a_function_without_a_dependencies_entry_is_checked_scheduled_and_run(url):
    """The no-entry rule: taskmap ignores such a name; forrestq schedules it as a task without inputs."""
    funcs = {**FUNCS, "extra": extra}
    assert "extra" in check_graph(funcs, DEPS)
    q = Queue("gp-extra", local=True)
    refs = q.schedule_graph(funcs, DEPS)
    assert set(refs) == {"a", "b", "c", "extra"}
    got = {t.metadata["name"]: t.returnvalue for t in q.results(timeout=60)}
    assert got == {"a": 5, "b": 15, "c": 40, "extra": "ran"}


def test_descendants_of_graph_tasks(url):
    q = Queue("gp-desc")
    refs = q.schedule_graph({"a": a, "b": b, "c": b, "d": b}, {"d": ["a"], "c": ["b"], "b": ["a"], "a": []})
    names = {ref.id: name for name, ref in refs.items()}
    assert sorted(names[i] for i in q.descendants(refs["a"])) == ["b", "c", "d"]
    assert [names[i] for i in q.descendants(refs["b"].id)] == ["c"]  # an id works too
    assert q.descendants(refs["c"]) == []
    assert len(set(q.descendants(refs["a"]))) == 3  # each once


def test_descendants_are_what_rerun_reruns_besides_the_task(url):
    q = Queue("gp-rerun", local=True)
    refs = q.schedule_graph(FUNCS, DEPS)
    list(q.results(timeout=60))
    below = q.descendants(refs["a"])
    assert sorted(q.rerun(refs["a"])) == sorted([refs["a"].id, *below])


def test_descendants_of_a_tree_and_of_an_unknown_task(url):
    q = Queue("gp-tree")
    first = defer(a)
    shared = defer(b, first)
    root = q.schedule(defer(c, shared, defer(b, shared)))
    assert q.descendants(root) == []
    assert len(q.descendants(first._id)) == 3  # shared, the inner b, the root: each once
    with pytest.raises(UnknownTask):
        q.descendants("no-such-task")
