"""SVG geometry of the dashboard's pictures; the templates draw it (so every label is escaped there).

* :func:`chart`: the throughput of the last hour, done and failed per minute, as two polylines;
* :func:`dag_picture`: the DAG around one task, inputs to the left, dependents to the right, one
  column per step, each node a box coloured by its state (a CSS class per state) linking to its page.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .data import Node

CHART_W, CHART_H, CHART_PAD = 600, 120, 4
BOX_W, BOX_H, GAP_X, GAP_Y = 150, 28, 40, 12
LABEL = 20  # characters of a node's label


def _points(values: Sequence[int], top: int) -> str:
    if not values:
        return ""
    step = (CHART_W - 2 * CHART_PAD) / max(1, len(values) - 1)
    h = CHART_H - 2 * CHART_PAD
    return " ".join(f"{CHART_PAD + i * step:.1f},{CHART_PAD + h - h * v / top:.1f}" for i, v in enumerate(values))


def chart(series: dict[str, list[int]]) -> dict[str, Any]:
    """The chart of one queue: ``{"w", "h", "top" (the highest count per minute), "done", "failed"
    (polyline points)}``."""
    top = max([1, *series.get("done", []), *series.get("failed", [])])
    return {"w": CHART_W, "h": CHART_H, "top": top, "done": _points(series.get("done", []), top),
            "failed": _points(series.get("failed", []), top)}


@dataclass(frozen=True)
class Box:
    id: str
    label: str
    state: str
    x: int
    y: int
    here: bool  # the task whose page it is


@dataclass(frozen=True)
class Edge:
    x1: int
    y1: int
    x2: int
    y2: int


def dag_picture(nodes: Sequence[Node], here: str) -> dict[str, Any]:
    """Boxes and edges of :func:`forrestq.dashboard.data.dag`: ``{"w", "h", "boxes", "edges"}``."""
    if not nodes:
        return {"w": 0, "h": 0, "boxes": [], "edges": []}
    first = min(n.layer for n in nodes)
    rows: dict[int, int] = {}
    boxes: dict[str, Box] = {}
    for n in nodes:
        row = rows.get(n.layer, 0)
        rows[n.layer] = row + 1
        label = n.name.rsplit(".", 1)[-1] or n.id
        boxes[n.id] = Box(n.id, label if len(label) <= LABEL else label[:LABEL - 1] + "…", n.state,
                          (n.layer - first) * (BOX_W + GAP_X), row * (BOX_H + GAP_Y), n.id == here)
    edges = [Edge(boxes[i].x + BOX_W, boxes[i].y + BOX_H // 2, boxes[n.id].x, boxes[n.id].y + BOX_H // 2)
             for n in nodes for i in n.inputs if i in boxes]
    return {"w": max(b.x for b in boxes.values()) + BOX_W + 2, "h": max(b.y for b in boxes.values()) + BOX_H + 2,
            "boxes": list(boxes.values()), "edges": edges, "box_w": BOX_W, "box_h": BOX_H}
