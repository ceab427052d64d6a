"""Circuits as graphs of nodes and weighted edges (introduced in chapter 03).

A :class:`Graph` holds node effects (one number per ``utils.nodes.Node``) and edge effects
(one number per (upstream, downstream) pair). This module splices dictionaries so that the
*direct* edge from one dictionary to a later one can be differentiated
(:func:`splice_for_edges`) or ablated (:func:`direct_change`), thresholds a graph, grows one
by progressive tracing (:class:`Tracer`), exports it to Graphviz ``.dot`` and to a
self-contained ``.svg``, and draws it with plotly (:func:`graph_figure`). Chapter 05's
attribution graphs reuse the data structure and the views.

Direct edges. With every dictionary spliced, a later dictionary ``d`` depends on an earlier
one ``u`` through every path of the model, many of them through a third dictionary ``m``
between them. The edge u -> d counts only paths through *no* other dictionary: every other
spliced dictionary's output is held fixed (a stop-gradient for gradients, its clean value for
ablations). On a model with residual SAEs at every layer, edges therefore join consecutive
dictionaries (``resid_sae L-1 -> attn_sae L, transcoder L, resid_sae L`` and
``attn_sae L -> transcoder L, resid_sae L``, ``transcoder L -> resid_sae L``), the residual
skip path included.
"""
from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from utils.nodes import Node, output_hook
from utils.views import sig3

ROW_OF_KIND = {"embed": 0, "attn_sae": 1, "transcoder": 2, "resid_sae": 3, "logit": 4}  # rows within a layer


# ---------------------------------------------------------------------------------------
# Splices for direct edges.


@contextmanager
def splice_for_edges(model: HookedSAETransformer, dictionaries: Sequence[SAE], upstream: SAE, downstream: SAE
                     ) -> Iterator[dict[str, Tensor]]:
    """Splice so that the next forward pass exposes the direct dependence of ``downstream``
    on ``upstream``. Yields a dict filled by that pass:

    * ``up.latents`` ``[batch, pos, d_sae]`` and ``up.error`` (the shape of what ``upstream``
      writes): leaves that ``requires_grad``; ``upstream`` writes ``decode(f) + e``, its
      own activation;
    * ``down.latents`` ``[batch, pos, d_sae]`` and ``down.error``: ``downstream``'s latents
      ``encode(x)`` and error ``y - decode(encode(x))``, computed *with* gradients from what it
      reads, so ``torch.autograd`` can take their vector-Jacobian products with the leaves.

    Every other dictionary of ``dictionaries`` writes its activation detached: no gradient
    passes through it, so only direct paths remain. Values are the model's own. Hooks are
    global state; they are removed when the block exits. Call under ``torch.enable_grad()``.
    """
    nodes: dict[str, Tensor] = {}
    inputs: dict[str, Tensor] = {}

    def keep_input(hook_name: str):
        def hook(x: Tensor, hook: HookPoint) -> None:
            inputs[hook_name] = x
        return hook

    def as_upstream(y: Tensor, hook: HookPoint) -> Tensor:
        x = inputs.pop("up", y)
        with torch.no_grad():
            latents = upstream.encode(x.detach())
        nodes["up.latents"] = latents.requires_grad_(True)
        recons = upstream.decode(latents)
        nodes["up.error"] = (y - recons).detach().requires_grad_(True)
        return recons + nodes["up.error"]

    def as_downstream(y: Tensor, hook: HookPoint) -> Tensor:
        x = inputs.pop("down", y)
        nodes["down.latents"] = downstream.encode(x)
        nodes["down.error"] = y - downstream.decode(nodes["down.latents"])
        return y

    def frozen(y: Tensor, hook: HookPoint) -> Tensor:
        return y.detach()

    fwd_hooks = []
    for sae in dictionaries:
        if sae is upstream or sae is downstream:
            continue
        fwd_hooks.append((output_hook(sae), frozen))
    for sae, role, splice in ((upstream, "up", as_upstream), (downstream, "down", as_downstream)):
        if output_hook(sae) != sae.cfg.metadata.hook_name:
            fwd_hooks.append((sae.cfg.metadata.hook_name, keep_input(role)))
        fwd_hooks.append((output_hook(sae), splice))
    with model.hooks(fwd_hooks=fwd_hooks):
        yield nodes


def node_gradients(model: HookedSAETransformer, dictionaries: Sequence[SAE], tokens: Int[Tensor, "batch pos"],
                   metric: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
    """``dm/df`` and ``dm/de`` at every latent and error node of every dictionary (all
    spliced with ``splice_for_gradients``, one forward and one backward pass of the metric
    summed over prompts), plus the clean values: keys ``{hook}.latents``, ``{hook}.error``
    (leaves with ``.grad``), ``hook`` the hook each dictionary reads."""
    from utils.attribution import splice_for_gradients

    with splice_for_gradients(model, dictionaries) as nodes, torch.enable_grad():
        metric(model(tokens)).sum().backward()
    return dict(nodes)


@torch.no_grad()
def direct_change(model: HookedSAETransformer, dictionaries: Sequence[SAE], upstream: SAE, downstream: SAE,
                  tokens: Int[Tensor, "batch pos"], node: Node, value: float | Tensor = 0.0
                  ) -> tuple[Float[Tensor, "batch pos d_sae"], Float[Tensor, "batch pos ..."]]:
    """Edge ablation: set one upstream node (a latent, or the error node, at ``node.pos``) to
    ``value``, hold every other dictionary's output at its clean value, and return the change
    of ``downstream``'s latents and error term (ablated minus clean), error terms kept."""
    names = [output_hook(sae) for sae in dictionaries if sae is not upstream and sae is not downstream]
    _, clean_cache = model.run_with_cache(tokens, names_filter=names)

    def read(tensors: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return tensors["down.latents"].detach(), tensors["down.error"].detach()

    with splice_for_edges(model, dictionaries, upstream, downstream) as nodes:
        model(tokens)
        clean = read(nodes)

    def ablate(y: Tensor, hook: HookPoint) -> Tensor:
        part = "latents" if isinstance(node.index, int) else "error"
        # the splice has just made up.latents / up.error: rebuild the output with the node changed
        latents, error = nodes["up.latents"].detach().clone(), nodes["up.error"].detach().clone()
        if part == "latents":
            latents[:, node.pos, node.index] = value
        else:
            error[:, node.pos] = value
        return upstream.decode(latents) + error

    fixed = [(name, lambda y, hook, name=name: clean_cache[name]) for name in names]
    with splice_for_edges(model, dictionaries, upstream, downstream) as nodes:
        model.run_with_hooks(tokens, fwd_hooks=[(output_hook(upstream), ablate), *fixed])
        ablated = read(nodes)
    return ablated[0] - clean[0], ablated[1] - clean[1]


# ---------------------------------------------------------------------------------------
# The graph.


@dataclass
class Graph:
    """Nodes with effects and directed edges with weights (upstream, downstream) -> weight.

    ``labels[node]`` is a short name to draw (e.g. ``#91 city``), ``hover[node]`` longer text
    (contexts, promoted logits); both optional."""

    nodes: dict[Node, float] = field(default_factory=dict)
    edges: dict[tuple[Node, Node], float] = field(default_factory=dict)
    labels: dict[Node, str] = field(default_factory=dict)
    hover: dict[Node, str] = field(default_factory=dict)

    def thresholded(self, node_threshold: float = 0.0, edge_threshold: float = 0.0) -> "Graph":
        """Nodes with ``|effect| >= node_threshold``, then edges between kept nodes with
        ``|weight| >= edge_threshold``."""
        nodes = {n: v for n, v in self.nodes.items() if abs(v) >= node_threshold}
        edges = {(u, d): w for (u, d), w in self.edges.items() if u in nodes and d in nodes and abs(w) >= edge_threshold}
        return Graph(nodes, edges, {n: t for n, t in self.labels.items() if n in nodes},
                     {n: t for n, t in self.hover.items() if n in nodes})

    def merge(self, other: "Graph") -> None:
        """Add ``other``'s nodes, edges and texts (``other`` wins where both have one)."""
        self.nodes.update(other.nodes)
        self.edges.update(other.edges)
        self.labels.update(other.labels)
        self.hover.update(other.hover)

    def label(self, node: Node) -> str:
        """``layer.latent`` (or ``layer.err``), with the short label when there is one."""
        head = f"{node.kind}{node.layer}.{'err' if node.is_error else node.index}@{node.pos}"
        return f"{head} {self.labels[node]}" if node in self.labels else head

    def to_dot(self, title: str = "circuit") -> str:
        """Graphviz source: one rank per (layer, kind) row, nodes named ``str(node)``, edges
        blue (positive) or red (negative) with pen width growing with ``|weight|``."""
        top = max((abs(w) for w in self.edges.values()), default=1.0) or 1.0
        lines = [f'digraph "{_dot_escape(title)}" {{', "  rankdir=BT;", "  node [shape=box, fontsize=10];"]
        rows: dict[tuple[int, int], list[Node]] = {}
        for node in sorted(self.nodes):
            rows.setdefault((node.layer, ROW_OF_KIND[node.kind]), []).append(node)
        for nodes in rows.values():
            lines.append("  { rank=same; " + " ".join(f'"{n}"' for n in nodes) + " }")
        for node in sorted(self.nodes):
            style = ", style=dashed" if node.is_error else ""
            lines.append(f'  "{node}" [label="{_dot_escape(self.label(node))}\\neffect {sig3(self.nodes[node])}"{style}];')
        for (u, d), w in sorted(self.edges.items()):
            colour = "#4c72b0" if w >= 0 else "#c44e52"
            lines.append(f'  "{u}" -> "{d}" [color="{colour}", penwidth={0.5 + 4 * abs(w) / top:.2f}, tooltip="{sig3(w)}"];')
        return "\n".join([*lines, "}"]) + "\n"

    def to_svg(self, title: str = "circuit") -> str:
        """A self-contained SVG drawing (no Graphviz needed): x = position, y = layer and kind,
        the layout of :func:`graph_figure`."""
        where = _layout(self)
        xs = [x for x, _ in where.values()] or [0.0]
        ys = [y for _, y in where.values()] or [0.0]
        sx, sy, pad = 150.0, 70.0, 60.0
        width, height = (max(xs) - min(xs)) * sx + 2 * pad + 150, (max(ys) - min(ys)) * sy + 2 * pad

        def at(node: Node) -> tuple[float, float]:
            x, y = where[node]
            return pad + (x - min(xs)) * sx, height - pad - (y - min(ys)) * sy

        top = max((abs(w) for w in self.edges.values()), default=1.0) or 1.0
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" font-family="sans-serif" font-size="10">',
                 f'<text x="{pad}" y="20" font-size="14">{html.escape(title)}</text>']
        for (u, d), w in self.edges.items():
            (x0, y0), (x1, y1) = at(u), at(d)
            colour = "#4c72b0" if w >= 0 else "#c44e52"
            parts.append(f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" stroke="{colour}" '
                         f'stroke-width="{0.5 + 4 * abs(w) / top:.2f}" stroke-opacity="{0.25 + 0.75 * abs(w) / top:.2f}">'
                         f'<title>{html.escape(f"{u} -> {d}: {sig3(w)}")}</title></line>')
        for node in self.nodes:
            x, y = at(node)
            dash = ' stroke-dasharray="3,2"' if node.is_error else ""
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="white" stroke="black"{dash}>'
                         f'<title>{html.escape(self.hover.get(node, self.label(node)))}</title></circle>'
                         f'<text x="{x + 8:.1f}" y="{y - 6:.1f}">{html.escape(self.label(node))}</text>')
        return "\n".join([*parts, "</svg>"]) + "\n"

    def export(self, stem: str | Path, title: str = "circuit") -> tuple[Path, Path]:
        """Write ``stem.dot`` and ``stem.svg``; return both paths."""
        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        dot, svg = stem.with_suffix(".dot"), stem.with_suffix(".svg")
        dot.write_text(self.to_dot(title))
        svg.write_text(self.to_svg(title))
        return dot, svg


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _layout(graph: Graph) -> dict[Node, tuple[float, float]]:
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
    where = _layout(graph)
    top = max((abs(w) for w in graph.edges.values()), default=1.0) or 1.0
    figure = go.Figure()
    for (u, d), w in sorted(graph.edges.items(), key=lambda item: abs(item[1])):
        (x0, y0), (x1, y1) = where[u], where[d]
        figure.add_scatter(x=[x0, x1], y=[y0, y1], mode="lines", showlegend=False, hoverinfo="skip",
                           line=dict(width=0.5 + 5 * abs(w) / top, color="#4c72b0" if w >= 0 else "#c44e52"),
                           opacity=0.15 + 0.85 * abs(w) / top)
    mids = [((where[u][0] + where[d][0]) / 2, (where[u][1] + where[d][1]) / 2, f"{graph.label(u)} → {graph.label(d)}<br>{weight_title} {sig3(w)}")
            for (u, d), w in graph.edges.items()]
    if mids:
        mx, my, mt = zip(*mids)
        figure.add_scatter(x=mx, y=my, mode="markers", marker=dict(size=8, opacity=0), customdata=list(mt),
                           hovertemplate="%{customdata}<extra></extra>", showlegend=False)
    nodes = sorted(graph.nodes)
    if nodes:
        effects = [graph.nodes[n] for n in nodes]
        scale = max(abs(e) for e in effects) or 1.0
        # Text only on the strongest node of each (position, layer, kind) cell: all of them
        # overlap into an unreadable pile; every node keeps its label in the hover.
        strongest: dict[tuple[int, int, int], Node] = {}
        for n in nodes:
            cell = (n.pos, n.layer, ROW_OF_KIND[n.kind])
            if cell not in strongest or abs(graph.nodes[n]) > abs(graph.nodes[strongest[cell]]):
                strongest[cell] = n
        shown = set(strongest.values())
        figure.add_scatter(
            x=[where[n][0] for n in nodes], y=[where[n][1] for n in nodes], mode="markers+text",
            text=[graph.label(n) if n in shown else "" for n in nodes], textposition="top center", textfont=dict(size=9), showlegend=False,
            customdata=[f"{graph.label(n)}<br>effect {sig3(graph.nodes[n])}<br>{graph.hover.get(n, '')}" for n in nodes],
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


# ---------------------------------------------------------------------------------------
# Progressive tracing.


class Tracer:
    """Grow a graph from pinned nodes, one layer of children per :meth:`step` (the cognition
    graphs of chapter 03). ``children(node)`` returns ``{child: weight}`` for one node: the
    downstream nodes its ablation moves above the threshold. Each step expands the frontier
    (the nodes added by the previous step) and returns how many nodes it added."""

    def __init__(self, children: Callable[[Node], dict[Node, float]], pinned: Iterable[Node]):
        self.children = children
        self.graph = Graph()
        self.frontier = list(pinned)
        for node in self.frontier:
            self.graph.nodes[node] = 0.0

    def step(self) -> int:
        added = []
        for node in self.frontier:
            for child, weight in self.children(node).items():
                self.graph.edges[node, child] = weight
                if child not in self.graph.nodes:
                    self.graph.nodes[child] = 0.0
                    added.append(child)
        self.frontier = added
        return len(added)
