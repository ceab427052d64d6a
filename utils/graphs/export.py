"""Exports of a :class:`~utils.graphs.graph.Graph`: the course's JSON (chapter 05), and
Graphviz ``.dot`` and a self-contained ``.svg`` (chapter 03)."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import torch

from utils.graphs.graph import Graph
from utils.graphs.pruning import Pruned, influence, normalized_adjacency
from utils.graphs.view import ROW_OF_KIND, layout
from utils.nodes import Node
from utils.views import sig3


def to_json(graph: Graph, pruned: Pruned | None, path: str | Path | None = None) -> dict[str, Any]:
    """The graph as JSON (nodes with kind, layer, position, index, label, activation and
    influence; edges as a sparse list ``{source, target, weight}``), restricted to the pruned
    graph if given; written to ``path`` if given."""
    keep = pruned.nodes if pruned is not None else torch.ones(len(graph.nodes), dtype=torch.bool)
    edges = pruned.edges if pruned is not None else graph.adjacency != 0
    infl = pruned.node_influence if pruned is not None else influence(normalized_adjacency(graph.adjacency), graph.logit_weights)
    data = {
        "prompt": graph.tokens,
        "nodes": [{"id": str(n), "kind": n.kind, "layer": n.layer, "pos": n.pos, "index": n.index,
                   "label": graph.labels.get(n, ""), "activation": round(float(graph.activation[j]), 6),
                   "influence": round(float(infl[j]), 6)}
                  for j, n in enumerate(graph.nodes) if keep[j]],
        "edges": [{"source": str(graph.nodes[s]), "target": str(graph.nodes[t]), "weight": round(float(graph.adjacency[t, s]), 6)}
                  for t, s in (edges & (graph.adjacency != 0)).nonzero().tolist()],
    }
    if path is not None:
        Path(path).write_text(json.dumps(data, indent=1))
    return data


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def to_dot(graph: Graph, title: str = "circuit") -> str:
    """Graphviz source: one rank per (layer, kind) row, nodes named ``str(node)``, edges
    blue (positive) or red (negative) with pen width growing with ``|weight|``."""
    edges, effects = graph.edges, graph.effects
    top = max((abs(w) for w in edges.values()), default=1.0) or 1.0
    lines = [f'digraph "{_dot_escape(title)}" {{', "  rankdir=BT;", "  node [shape=box, fontsize=10];"]
    rows: dict[tuple[int, int], list[Node]] = {}
    for node in sorted(graph.nodes):
        rows.setdefault((node.layer, ROW_OF_KIND[node.kind]), []).append(node)
    for nodes in rows.values():
        lines.append("  { rank=same; " + " ".join(f'"{n}"' for n in nodes) + " }")
    for node in sorted(graph.nodes):
        style = ", style=dashed" if node.is_error else ""
        lines.append(f'  "{node}" [label="{_dot_escape(graph.label(node))}\\neffect {sig3(effects[node])}"{style}];')
    for (u, d), w in sorted(edges.items()):
        colour = "#4c72b0" if w >= 0 else "#c44e52"
        lines.append(f'  "{u}" -> "{d}" [color="{colour}", penwidth={0.5 + 4 * abs(w) / top:.2f}, tooltip="{sig3(w)}"];')
    return "\n".join([*lines, "}"]) + "\n"


def to_svg(graph: Graph, title: str = "circuit") -> str:
    """A self-contained SVG drawing (no Graphviz needed): x = position, y = layer and kind,
    the layout of :func:`utils.graphs.view.graph_figure`."""
    where = layout(graph)
    xs = [x for x, _ in where.values()] or [0.0]
    ys = [y for _, y in where.values()] or [0.0]
    sx, sy, pad = 150.0, 70.0, 60.0
    width, height = (max(xs) - min(xs)) * sx + 2 * pad + 150, (max(ys) - min(ys)) * sy + 2 * pad

    def at(node: Node) -> tuple[float, float]:
        x, y = where[node]
        return pad + (x - min(xs)) * sx, height - pad - (y - min(ys)) * sy

    edges = graph.edges
    top = max((abs(w) for w in edges.values()), default=1.0) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" font-family="sans-serif" font-size="10">',
             f'<text x="{pad}" y="20" font-size="14">{html.escape(title)}</text>']
    for (u, d), w in edges.items():
        (x0, y0), (x1, y1) = at(u), at(d)
        colour = "#4c72b0" if w >= 0 else "#c44e52"
        parts.append(f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" stroke="{colour}" '
                     f'stroke-width="{0.5 + 4 * abs(w) / top:.2f}" stroke-opacity="{0.25 + 0.75 * abs(w) / top:.2f}">'
                     f'<title>{html.escape(f"{u} -> {d}: {sig3(w)}")}</title></line>')
    for node in graph.nodes:
        x, y = at(node)
        dash = ' stroke-dasharray="3,2"' if node.is_error else ""
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="white" stroke="black"{dash}>'
                     f'<title>{html.escape(graph.hover.get(node, graph.label(node)))}</title></circle>'
                     f'<text x="{x + 8:.1f}" y="{y - 6:.1f}">{html.escape(graph.label(node))}</text>')
    return "\n".join([*parts, "</svg>"]) + "\n"


def export_dot_svg(graph: Graph, stem: str | Path, title: str = "circuit") -> tuple[Path, Path]:
    """Write ``stem.dot`` and ``stem.svg``; return both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    dot, svg = stem.with_suffix(".dot"), stem.with_suffix(".svg")
    dot.write_text(to_dot(graph, title))
    svg.write_text(to_svg(graph, title))
    return dot, svg
