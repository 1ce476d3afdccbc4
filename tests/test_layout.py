"""The package's shape (issue 11): layers import downward only, small functions and classes, one
owner for every Redis name. Static checks over the source; they fail with the offending places."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "forrestq"
MAX_FUNCTION = 60
MAX_CLASS = 300
FACADES = {"forrestq.queue.Queue"}  # one-line delegates: may be longer


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """forrestq modules imported by ``name`` anywhere in it (also inside functions)."""
    base = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                b = base
                for _ in range(node.level - 1):
                    b = b.rpartition(".")[0]
                module = b + ("." + node.module if node.module else "")
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" for a in node.names] + [module]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for t in targets:
            while t and t not in MODULES and "." in t:
                t = t.rpartition(".")[0]
            if t in MODULES and t != name and t != "forrestq":
                found.add(t)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_among_the_modules_even_inside_functions() -> None:
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    assert _cycles(graph) == []


def test_the_package_root_is_imported_by_nobody_inside_the_package() -> None:
    """Modules import names from the module that defines them, never from the package root
    (``from forrestq import Queue`` inside the package would import the facade, and with it
    everything); ``from . import codec`` (a module) is fine."""
    offenders = []
    for name, path in MODULES.items():
        if name == "forrestq":
            continue
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = (base + ("." + node.module if node.module else "")) if node.level else node.module
            if target == "forrestq":
                offenders += [f"{name}:{node.lineno} {a.name}" for a in node.names
                              if f"forrestq.{a.name}" not in MODULES]
    assert offenders == []


def _sizes() -> tuple[list[str], list[str]]:
    long_functions, long_classes = [], []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > MAX_FUNCTION:
                long_functions.append(f"{name}.{node.name} ({size} lines)")
            if isinstance(node, ast.ClassDef) and size > MAX_CLASS and f"{name}.{node.name}" not in FACADES:
                long_classes.append(f"{name}.{node.name} ({size} lines)")
    return long_functions, long_classes


def test_no_function_over_60_lines_and_no_class_over_300() -> None:
    assert _sizes() == ([], [])


def test_every_exception_class_is_defined_in_errors() -> None:
    found = []
    for name, path in MODULES.items():
        if name == "forrestq.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception", "Warning")) or
                                                 b.id == "ForrestqError") for b in node.bases):
                found.append(f"{name}.{node.name}")
    assert found == []


def test_no_parameter_of_the_package_is_a_queue_typed_any() -> None:
    """The layers below the facade take a QueueCore, typed; ``q: Any`` hides what a function needs."""
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.arg) and node.arg in ("q", "queue") and isinstance(node.annotation, ast.Name) \
                    and node.annotation.id == "Any":
                found.append(f"{name}:{node.lineno}")
    assert found == []


_FIELD_LITERAL = re.compile(r"""(?:hget|hmget|hset|hdel|hincrby)\([^)]*?["'](\w{1,5})["']""", re.I)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != "forrestq.schema"))
def test_python_reads_task_fields_through_the_schema(name: str) -> None:
    """No module spells a task-hash field in a Redis hash call: it names ``schema.TASK_*``."""
    from forrestq import schema

    fields = set(schema.TASK_FIELDS) | {schema.COUNT_OPEN}
    text = MODULES[name].read_text()
    spelled = [m.group(1) for m in _FIELD_LITERAL.finditer(text) if m.group(1) in fields]
    assert spelled == []


def test_every_script_is_called_through_its_one_wrapper() -> None:
    """Only forrestq.ops touches a script: nobody else registers, evaluates or loads one."""
    calls = re.compile(r"register_script|\.evalsha\(|\.eval\(|script_load|scripts\.run\(")
    found = [f"{name}:{i}" for name, path in MODULES.items() if name != "forrestq.ops"
             for i, line in enumerate(path.read_text().splitlines(), 1) if calls.search(line)]
    assert found == []
