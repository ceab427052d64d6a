"""Drawings of a :class:`~utils.graphs.graph.Graph` with plotly.

Two renderers for now: :func:`graph_figure` (chapter 03: nodes coloured by their effect on a
metric, edges by their edge effect) and :func:`attribution_figure` (chapter 05: a pruned
attribution graph, nodes by kind, hover with activation and influence). Both place a node
at its position (x) and its layer and dictionary (y).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go

from utils.graphs.graph import Graph
from utils.nodes import FORWARD_ORDER, Node, forward_rank
from utils.views import sig3

if TYPE_CHECKING:
    from utils.graphs.pruning import Pruned

ROW_OF_KIND: dict[str, int] = {kind: forward_rank(kind) for kind in FORWARD_ORDER}  # rows within a layer: forward order


def layout(graph: Graph) -> dict[Node, tuple[float, float]]:
    """x = position (nodes sharing a position and row spread sideways), y = layer * 5 + row."""
    cells: dict[tuple[int, int, int], list[Node]] = {}
    for node in sorted(graph.nodes):
        cells.setdefault((node.pos, node.layer, ROW_OF_KIND[node.kind]), []).append(node)
    where = {}
    for (pos, layer, row), nodes in cells.items():
        for k, node in enumerate(nodes):
            where[node] = (pos + 0.8 * (k - (len(nodes) - 1) / 2) / max(len(nodes), 1), layer * 5.0 + row + 0.15 * (k % 2))
    return where


def graph_figure(graph: Graph, title: str, tokens: Sequence[str] | None = None, weight_title: str = "edge effect") -> go.Figure:
    """The interactive view: nodes at (position, layer and kind), labelled ``kind layer.latent``
    with their short label; hover shows ``graph.hover`` (contexts, logits); edges blue for
    positive, red for negative weights, opacity and width growing with ``|weight|``; marker
    colour is the node's effect."""
    where = layout(graph)
    edges, effect_of = graph.edges, graph.effects
    top = max((abs(w) for w in edges.values()), default=1.0) or 1.0
    figure = go.Figure()
    for (u, d), w in sorted(edges.items(), key=lambda item: abs(item[1])):
        (x0, y0), (x1, y1) = where[u], where[d]
        figure.add_scatter(x=[x0, x1], y=[y0, y1], mode="lines", showlegend=False, hoverinfo="skip",
                           line=dict(width=0.5 + 5 * abs(w) / top, color="#4c72b0" if w >= 0 else "#c44e52"),
                           opacity=0.15 + 0.85 * abs(w) / top)
    mids = [((where[u][0] + where[d][0]) / 2, (where[u][1] + where[d][1]) / 2, f"{graph.label(u)} → {graph.label(d)}<br>{weight_title} {sig3(w)}")
            for (u, d), w in edges.items()]
    if mids:
        mx, my, mt = zip(*mids)
        figure.add_scatter(x=mx, y=my, mode="markers", marker=dict(size=8, opacity=0), customdata=list(mt),
                           hovertemplate="%{customdata}<extra></extra>", showlegend=False)
    nodes = sorted(graph.nodes)
    if nodes:
        effects = [effect_of[n] for n in nodes]
        scale = max(abs(e) for e in effects) or 1.0
        # Text only on the strongest node of each (position, layer, kind) cell: all of them
        # overlap into an unreadable pile; every node keeps its label in the hover.
        strongest: dict[tuple[int, int, int], Node] = {}
        for n in nodes:
            cell = (n.pos, n.layer, ROW_OF_KIND[n.kind])
            if cell not in strongest or abs(effect_of[n]) > abs(effect_of[strongest[cell]]):
                strongest[cell] = n
        shown = set(strongest.values())
        figure.add_scatter(
            x=[where[n][0] for n in nodes], y=[where[n][1] for n in nodes], mode="markers+text",
            text=[graph.label(n) if n in shown else "" for n in nodes], textposition="top center", textfont=dict(size=9), showlegend=False,
            customdata=[f"{graph.label(n)}<br>effect {sig3(effect_of[n])}<br>{graph.hover.get(n, '')}" for n in nodes],
            hovertemplate="%{customdata}<extra></extra>",
            marker=dict(size=14, color=effects, colorscale="RdBu", cmin=-scale, cmax=scale,
                        symbol=["square" if n.is_error else "circle" for n in nodes],
                        colorbar=dict(title="node effect<br>(Δ metric)"), line=dict(color="black", width=1)))
    layers = sorted({n.layer for n in graph.nodes})
    kinds = [k for k in ("attn_sae", "transcoder", "resid_sae") if any(n.kind == k for n in graph.nodes)]
    ticks = [(layer * 5.0 + ROW_OF_KIND[k], f"{k} {layer}") for layer in layers for k in kinds]
    figure.update_yaxes(title_text="layer and dictionary", tickvals=[t for t, _ in ticks], ticktext=[t for _, t in ticks])
    positions = sorted({n.pos for n in graph.nodes})
    figure.update_xaxes(title_text="token position", tickvals=positions,
                        ticktext=[f"{p} {tokens[p]}" if tokens is not None else str(p) for p in positions])
    return figure.update_layout(title=f"{title}<br><sup>edges: blue positive, red negative; width and opacity: |{weight_title}|</sup>",
                                height=250 + 60 * len(ticks), template="plotly_white")


def node_label(bk: Any, node: Node) -> str:
    """A node's label for hovers and tables: a latent's entry in the explanation table (label,
    AUROC, precision, top contexts' words), or what the node is."""
    if node.kind == "embed":
        return f"token {bk.model.to_single_str_token(int(node.index))!r} (+ position {node.pos})"
    if node.kind == "logit":
        return f"logit {bk.model.to_single_str_token(int(node.index))!r} (minus the mean logit)"
    if node.is_error:
        return f"what transcoder {node.layer} misses at position {node.pos}"
    if bk.explanations is None:
        return f"transcoder {node.layer} latent {node.index}"
    row = bk.explanations.lookup(f"transcoder.{node.layer}", int(node.index))
    return (f"{row['label']} (AUROC {row['auroc']:.3g}, precision {row['precision']:.3g}); "
            f"promotes {', '.join(row['top_tokens'][:4])}")


def attribution_figure(graph: Graph, pruned: Pruned, labels: dict[Node, str], title: str) -> go.Figure:
    """The pruned graph drawn layer by position: embeddings at the bottom, each transcoder's
    error nodes and latents in its own row, the logits on top; an edge's width follows
    ``|weight|``, its colour the sign. Hover names each node and gives its label,
    activation and influence on the logits."""
    n_layers = max(n.layer for n in graph.nodes)
    kept = [j for j in range(len(graph.nodes)) if pruned.nodes[j]]
    xy: dict[int, tuple[float, float]] = {}
    slots: dict[tuple[float, int], int] = {}
    for j in kept:
        n = graph.nodes[j]
        row = 0.0 if n.kind == "embed" else n_layers + 1.0 if n.kind == "logit" else n.layer + (0.75 if n.is_error else 1.0)
        k = slots.get((row, n.pos), 0)
        slots[(row, n.pos)] = k + 1
        xy[j] = (n.pos + 0.12 * (k % 7) - 0.36, row + 0.1 * (k // 7))
    biggest = float(graph.adjacency[pruned.edges].abs().max()) if pruned.edges.any() else 1.0
    fig = go.Figure()
    for t, s in pruned.edges.nonzero().tolist():
        w = float(graph.adjacency[t, s])
        fig.add_trace(go.Scatter(x=[xy[s][0], xy[t][0]], y=[xy[s][1], xy[t][1]], mode="lines", hoverinfo="skip",
                                 line=dict(width=0.5 + 4 * abs(w) / biggest, color="#2166ac" if w > 0 else "#b2182b"),
                                 opacity=0.5, showlegend=False))
    for kind, colour in (("embed", "#999999"), ("transcoder", "#ff7f0e"), ("error", "#444444"), ("logit", "#2ca02c")):
        js = [j for j in kept if (graph.nodes[j].kind == kind and not graph.nodes[j].is_error)
              or (kind == "error" and graph.nodes[j].is_error)]
        hover = [f"{graph.nodes[j]} on {graph.tokens[graph.nodes[j].pos]!r}<br>{labels.get(graph.nodes[j], '')}<br>"
                 f"activation {float(graph.activation[j]):.3g}, influence {float(pruned.node_influence[j]):.3g}" for j in js]
        fig.add_trace(go.Scatter(x=[xy[j][0] for j in js], y=[xy[j][1] for j in js], mode="markers", name=kind,
                                 marker=dict(size=10, color=colour, symbol="square" if kind == "error" else "circle"),
                                 hovertext=hover, hoverinfo="text"))
    fig.update_layout(title=title, height=520, template="plotly_white", legend_title="node kind",
                      xaxis=dict(title="position (token)", tickvals=list(range(len(graph.tokens))),
                                 ticktext=[f"{p}: {w}" for p, w in enumerate(graph.tokens)]),
                      yaxis=dict(title="layer (embeddings 0, transcoder L at L + 1, logits on top)",
                                 tickvals=list(range(n_layers + 2)),
                                 ticktext=["embed"] + [f"transcoder {L}" for L in range(n_layers)] + ["logits"]))
    return fig
