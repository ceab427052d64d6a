"""Drawings of a :class:`~utils.graphs.graph.Graph` with plotly: one renderer, :func:`draw_graph`.

Chapter 03's circuits and cognition graphs (:func:`graph_figure`: nodes coloured by their
effect on a metric when there is one) and chapter 05's pruned attribution graphs
(:func:`attribution_figure`: nodes by kind, ranked by influence) are drawn by the same code,
sized for a 950-px notebook column and readable without hovering:

* every node has its own place: x is its token position, y a band per (layer, dictionary);
  the nodes of one (position, band) cell sit on a grid inside the cell, strongest first;
* the ``top`` strongest nodes carry a number, listed under the figure with their names and
  labels (no text is drawn over another); every node's full text is in its hover, and a
  click on a node shows its first ``NOTE_LINES`` lines beside the node (name and label,
  values, then the hover: chapter 03's contexts and logits, chapter 05's :func:`node_card`);
* groups of nodes can be drawn as supernodes (:func:`attribution_figure` with ``groups``);
* a slider keeps only edges of at least a fraction of the largest ``|weight|``, so the
  strong paths stand out (a big graph opens on the strongest edges);
* colour only where it carries information: edges by sign, nodes by effect when effects are
  not all zero, else by kind.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go

from utils.graphs.graph import Graph, group_membership, group_nodes, is_supernode
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


WIDTH = 900  # px: the figure fits a 950-px notebook column
MARGIN = dict(l=120, r=100, t=130)  # left: band names; right: the colour bar; top: title and slider
PITCH = 18.0  # px between the centres of neighbouring nodes of a cell
BAND_GAP = 14.0  # px between bands
LIST_TOP = 62.0  # px from the plot's bottom edge to the node list (tick labels and axis title above it)
LINE = 15.0  # px per line of the node list
EDGE_STEPS = (0.0, 0.05, 0.1, 0.2, 0.4)  # slider: edges with |weight| >= this fraction of the largest
NOTE_LINES, NOTE_WIDTH = 9, 56  # a click note: the first lines of a node's text, wrapped at this many characters
MAX_EDGES_SHOWN = 80  # a bigger graph opens on the first step showing at most this many edges
POSITIVE, NEGATIVE = "#2166ac", "#b2182b"
KIND_COLOUR = {"embed": "#999999", "attn_sae": "#55a868", "transcoder": "#dd8452", "resid_sae": "#8172b3",
               "logit": "#17becf", "error": "#444444"}
KIND_NAME = {"embed": (0, "grey", "embedding"), "attn_sae": (1, "green", "attn SAE latent"),
             "transcoder": (2, "orange", "transcoder latent"), "resid_sae": (3, "purple", "resid SAE latent"),
             "error": (4, "dark square", "error node"), "logit": (5, "cyan", "logit")}  # for the subtitle
SHORT_KIND = {"embed": "emb", "attn_sae": "attn", "transcoder": "tc", "resid_sae": "resid", "logit": "logit"}
BAND_NAME = {"embed": "embeddings", "attn_sae": "attn SAE", "transcoder": "transcoder", "resid_sae": "resid SAE",
             "logit": "logits"}


def short_name(node: Node) -> str:
    """``tc0.123@5``: kind, layer, latent (or ``err``, or ``S2`` for the second supernode), position."""
    index = "err" if node.is_error else f"S{-int(node.index)}" if is_supernode(node) else node.index
    return f"{SHORT_KIND.get(node.kind, node.kind)}{node.layer}.{index}@{node.pos}"


def _clip(text: str, n: int) -> str:
    text = " ".join(text.replace("<br>", " ").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _wrap(text: str, width: int) -> str:
    """Break ``text`` into lines of at most ``width`` characters (``<br>``), at spaces."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "<br>".join(lines)


@dataclass
class Placement:
    """Where :func:`place` put each node, in pixels of the plot area (origin bottom left)."""

    xy: dict[Node, tuple[float, float]]
    width: float
    height: float
    columns: dict[int, float]  # position -> x of its column's centre
    bands: dict[tuple[int, int], float]  # (layer, forward rank) -> y of its band's centre
    pitch: float


def place(nodes: Sequence[Node], strength: dict[Node, float], width: float) -> Placement:
    """Columns for the positions present, a band per (layer, dictionary) in forward order;
    each (position, band) cell a grid of ``pitch``-spaced places, filled strongest first, as
    many rows as the band's fullest cell needs: no two nodes share a place."""
    positions = sorted({n.pos for n in nodes})
    column = width / max(len(positions), 1)
    pitch = min(PITCH, column)
    per_row = max(1, int(column // pitch))
    cells: dict[tuple[tuple[int, int], int], list[Node]] = {}
    for n in sorted(nodes, key=lambda n: (not n.is_error, -abs(strength.get(n, 0.0)), n)):
        cells.setdefault(((n.layer, ROW_OF_KIND[n.kind]), n.pos), []).append(n)
    rows_of = {band: 0 for band, _ in cells}
    for (band, _), members in cells.items():
        rows_of[band] = max(rows_of[band], -(-len(members) // per_row))
    bottom, bands = BAND_GAP / 2, {}
    for band in sorted(rows_of):
        bands[band] = bottom + rows_of[band] * pitch / 2
        bottom += rows_of[band] * pitch + BAND_GAP
    columns = {p: (i + 0.5) * column for i, p in enumerate(positions)}
    xy = {}
    for (band, pos), members in cells.items():
        low = bands[band] - rows_of[band] * pitch / 2
        for k, n in enumerate(members):
            r, c = divmod(k, per_row)
            in_row = min(per_row, len(members) - r * per_row)
            xy[n] = (columns[pos] + (c - (in_row - 1) / 2) * pitch, low + (r + 0.5) * pitch)
    return Placement(xy, width, max(bottom - BAND_GAP / 2, 120.0), columns, bands, pitch)


def _band_name(band: tuple[int, int], kinds: dict[tuple[int, int], str]) -> str:
    kind = kinds[band]
    return BAND_NAME.get(kind, kind) if kind in ("embed", "logit") else f"{BAND_NAME.get(kind, kind)} {band[0]}"


def draw_graph(graph: Graph, title: str, *, tokens: Sequence[str] | None = None, strength: dict[Node, float] | None = None,
               details: dict[Node, str] | None = None, labels: dict[Node, str] | None = None, colour_by_effect: bool = True,
               weight_title: str = "edge weight", top: int = 12) -> go.Figure:
    """The course's graph view (module docstring). ``strength`` ranks nodes (which get a
    number and the best places; default ``|effect|``), ``details`` adds a line per node to its
    hover and click note, ``labels`` overrides ``graph.labels``; ``colour_by_effect`` colours
    nodes by ``graph.effect`` (a diverging scale around 0) unless every effect is 0."""
    nodes = sorted(graph.nodes)
    labels = {**graph.labels, **(labels or {})}
    details = details or {}
    effect = graph.effects
    if strength is None:  # |effect|; where every effect is 0 (a cognition graph), the |weight| of the node's edges
        strength = {n: abs(effect[n]) for n in nodes}
        if not any(strength.values()):
            for (u, d), w in graph.edges.items():
                strength[u] += abs(w)
                strength[d] += abs(w)
    plot_width = WIDTH - MARGIN["l"] - MARGIN["r"]
    at = place(nodes, strength, plot_width)
    ranked = sorted(nodes, key=lambda n: -abs(strength.get(n, 0.0)))[:top]
    number = {n: k + 1 for k, n in enumerate(ranked)}
    fig = go.Figure()

    # Edges, one trace per (strength step, sign), and invisible points at their middles for the hover.
    edges = graph.edges
    largest = max((abs(w) for w in edges.values()), default=0.0) or 1.0
    step_of = {e: max(k for k, f in enumerate(EDGE_STEPS) if abs(w) >= f * largest) for e, w in edges.items()}
    counts = [sum(s >= k for s in step_of.values()) for k in range(len(EDGE_STEPS))]
    start = next((k for k, c in enumerate(counts) if c <= MAX_EDGES_SHOWN), len(EDGE_STEPS) - 1)
    edge_traces: list[int] = []  # the step of each edge trace, in trace order
    for k, fraction in enumerate(EDGE_STEPS):
        for sign, colour in ((1, POSITIVE), (-1, NEGATIVE)):
            chosen = [(e, w) for e, w in edges.items() if step_of[e] == k and (w >= 0) == (sign > 0)]
            if not chosen:
                continue
            xs: list[float | None] = []
            ys: list[float | None] = []
            mids: tuple[list[float], list[float], list[str]] = ([], [], [])
            for (u, d), w in chosen:
                (x0, y0), (x1, y1) = at.xy[u], at.xy[d]
                xs += [x0, x1, None]
                ys += [y0, y1, None]
                mids[0].append((x0 + x1) / 2)
                mids[1].append((y0 + y1) / 2)
                mids[2].append(f"{short_name(u)} → {short_name(d)}<br>{weight_title} {sig3(w)}")
            fig.add_scatter(x=xs, y=ys, mode="lines", name=f"edges ≥{fraction:g} {'+' if sign > 0 else '-'}", hoverinfo="skip",
                            line=dict(width=0.6 + 0.8 * k, color=colour), opacity=0.3 + 0.15 * k, showlegend=False,
                            visible=k >= start)
            fig.add_scatter(x=mids[0], y=mids[1], mode="markers", name=f"edge hover {k}", marker=dict(size=6, opacity=0),
                            customdata=mids[2], hovertemplate="%{customdata}<extra></extra>", showlegend=False,
                            visible=k >= start)
            edge_traces += [k, k]

    # Nodes: one trace; a number on the strongest; colour by effect or by kind.
    effects = [effect[n] for n in nodes]
    scale = max((abs(e) for e in effects), default=0.0)
    by_effect = colour_by_effect and scale > 0
    size = max(5.0, at.pitch - 3)
    text = [
        f"<b>{short_name(n)}</b> {_clip(labels.get(n, ''), 60)}" + (f"<br>effect {sig3(effect[n])}" if scale > 0 else "")
        + (f"<br>{details[n]}" if n in details else "") + (f"<br>{graph.hover[n]}" if n in graph.hover else "")
        for n in nodes
    ]
    marker: dict[str, Any] = dict(size=size, symbol=["square" if n.is_error else "circle" for n in nodes],
                                  line=dict(color="#222222", width=0.8))
    if by_effect:
        marker.update(color=effects, colorscale="RdBu", cmin=-scale, cmax=scale,
                      colorbar=dict(title=dict(text="node<br>effect", side="top"), len=0.6, thickness=12, x=1.02))
        dark = [abs(e) / scale > 0.55 for e in effects]
    else:
        marker.update(color=[KIND_COLOUR["error" if n.is_error else n.kind] for n in nodes])
        dark = [n.is_error for n in nodes]
    fig.add_scatter(x=[at.xy[n][0] for n in nodes], y=[at.xy[n][1] for n in nodes], mode="markers+text", name="nodes",
                    text=[str(number[n]) if n in number else "" for n in nodes], textposition="middle center",
                    textfont=dict(size=max(7.0, size - 4), color=["white" if d else "black" for d in dark]),
                    customdata=text, hovertemplate="%{customdata}<extra></extra>", marker=marker, showlegend=False)

    # A click on a node shows its note beside it, turned towards the middle of the plot.
    notes = []
    for n, t in zip(nodes, text):
        x, y = at.xy[n]
        body = "<br>".join(_wrap(_clip(line, 120), NOTE_WIDTH) for line in t.split("<br>")[:NOTE_LINES])
        notes.append(dict(x=x, y=y, xref="x", yref="y", text=body, visible=False, clicktoshow="onoff", showarrow=False,
                          xanchor="left" if x < at.width / 2 else "right", yanchor="bottom" if y < at.height / 2 else "top",
                          align="left", bgcolor="rgba(255,255,255,0.95)", bordercolor="#444444", font=dict(size=10)))

    # The numbered nodes, listed under the plot in two columns.
    half = -(-len(ranked) // 2)
    chars = int((WIDTH / 2 - 20) / 6.3)
    for c, chunk in enumerate((ranked[:half], ranked[half:])):
        if not chunk:
            continue
        lines = [f"<b>{number[n]}</b> " + _clip(f"{short_name(n)} {labels.get(n, '')}", chars - 4) for n in chunk]
        notes.append(dict(x=(-MARGIN["l"] + 10 + c * WIDTH / 2) / plot_width, y=-LIST_TOP / at.height, xref="paper", yref="paper",
                          xanchor="left", yanchor="top", align="left", showarrow=False, text="<br>".join(lines),
                          font=dict(size=11)))
    list_height = LIST_TOP + half * LINE + 20

    kinds = {(n.layer, ROW_OF_KIND[n.kind]): n.kind for n in nodes}
    fig.update_xaxes(range=[0, at.width], fixedrange=True, showgrid=False, zeroline=False, tickangle=0,
                     tickvals=list(at.columns.values()), title_text="token position", title_standoff=4,
                     ticktext=[f"{p}<br>{_clip(tokens[p], 8) if tokens is not None and p < len(tokens) else ''}"
                               for p in at.columns])
    fig.update_yaxes(range=[0, at.height], fixedrange=True, showgrid=False, zeroline=False,
                     tickvals=list(at.bands.values()), ticktext=[_band_name(b, kinds) for b in at.bands],
                     title_text="layer and dictionary")
    present = sorted({"error" if n.is_error else n.kind for n in nodes}, key=lambda k: KIND_NAME[k])
    colours = ("nodes: colour = effect on the metric, squares error nodes" if by_effect else
               "nodes: " + ", ".join(f"{KIND_NAME[k][1]} {KIND_NAME[k][2]}" for k in present))
    subtitle = (f"edges: blue positive, red negative, width = |{weight_title}|; {colours}; "
                f"numbers: the {len(ranked)} strongest (listed below)")
    height = int(MARGIN["t"] + at.height + list_height)
    notes.append(dict(x=-MARGIN["l"] / plot_width + 0.01, y=1 + (MARGIN["t"] - 32) / at.height, xref="paper", yref="paper",
                      xanchor="left", yanchor="top", align="left", showarrow=False, text=_wrap(subtitle, 135),
                      font=dict(size=10, color="#444444")))
    sliders = []
    if edges:
        steps = [dict(method="restyle", label="all" if f == 0 else f"≥{f:.0%}",
                      args=[{"visible": [s >= k for s in edge_traces] + [True]}]) for k, f in enumerate(EDGE_STEPS)]
        sliders = [dict(active=start, steps=steps, x=0.0, len=0.6, y=1.0, yanchor="bottom", pad=dict(t=0, b=6),
                        currentvalue=dict(prefix="edges shown: |weight| ", font=dict(size=11)), font=dict(size=10))]
    return fig.update_layout(
        title=dict(text=_clip(title, 110), font=dict(size=14), x=0.01, xanchor="left", yref="container",
                   y=1 - 8 / height, yanchor="top"),
        width=WIDTH, height=height, autosize=False, template="plotly_white",
        margin=dict(l=MARGIN["l"], r=MARGIN["r"], t=MARGIN["t"], b=int(list_height)), annotations=notes, sliders=sliders,
        hovermode="closest", meta=dict(view="sae-graph", edges=len(edges), nodes=len(nodes)))


def graph_figure(graph: Graph, title: str, tokens: Sequence[str] | None = None, weight_title: str = "edge effect") -> go.Figure:
    """Chapter 03's view of a circuit or cognition graph (:func:`draw_graph`): nodes ranked
    and coloured by their effect on the metric (by kind when every effect is 0), edges by
    ``weight_title``; hover and click show ``graph.hover`` (contexts, logits)."""
    return draw_graph(graph, title, tokens=tokens, weight_title=weight_title)


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


def _context(text: str, before: int = 4, after: int = 2) -> str:
    """A top context ``... w [[tok]] w ...`` cut to a few words around the activating token, which is set in bold."""
    words = text.split()
    k = next((i for i, w in enumerate(words) if w.startswith("[[")), 0)
    cut = words[max(0, k - before): k + after + 1]
    return ("… " if k > before else "") + " ".join(cut).replace("[[", "<b>").replace("]]", "</b>")


def node_card(bk: Any, node: Node, contexts: int = 3, logits: int = 5) -> str:
    """What a click on ``node`` tells beyond its label: for a latent, its top activating
    contexts on the organism's corpus (a few words around each, the activating token in bold)
    and the tokens its decoder direction promotes most (``W_dec[i] @ W_U``), both read from the
    explanation table; for an error, embedding or logit node, what it is. Lines are joined
    by ``<br>``."""
    if node.kind == "embed":
        return f"embedding node: token {bk.model.to_single_str_token(int(node.index))!r} plus position {node.pos}"
    if node.kind == "logit":
        return f"logit node: the logit of {bk.model.to_single_str_token(int(node.index))!r} minus the mean logit"
    if node.is_error:
        return f"error node: what transcoder {node.layer} does not reconstruct at position {node.pos}"
    try:
        row = bk.explanations.lookup(f"{node.kind}.{node.layer}", int(node.index))
    except (AttributeError, KeyError):  # no table (GPT-2), or none for this dictionary
        return f"{node.kind} {node.layer} latent {node.index}: not in an explanation table"
    return "<br>".join(["top contexts:", *(_context(c) for c in row["top_contexts"][:contexts]),
                        f"top logits: {', '.join(row['top_tokens'][:logits])}"])


def attribution_figure(graph: Graph, pruned: Pruned, labels: dict[Node, str], title: str,
                       cards: dict[Node, str] | None = None, groups: dict[str, list[Node]] | None = None) -> go.Figure:
    """Chapter 05's view of a pruned attribution graph (:func:`draw_graph`): embeddings at the
    bottom, each transcoder's error nodes and latents in its own band, the logits on top;
    nodes coloured by kind and ranked by their influence on the logits; hover and click give
    each node's label, activation and influence, then its ``cards`` entry (:func:`node_card`:
    top contexts and logits).

    With ``groups`` (``{name: [nodes of the pruned graph]}``) the pruned subgraph is redrawn
    with each group merged into a supernode (:func:`~utils.graphs.graph.group_nodes`: edges,
    activations and influences summed over the members)."""
    kept = pruned.nodes.nonzero().flatten().tolist()
    sub = graph.subgraph(pruned.nodes, pruned.edges)
    sub.hover.update({n: (cards or {})[n] for n in sub.nodes if n in (cards or {})})
    influence = {graph.nodes[j]: float(pruned.node_influence[j]) for j in kept}
    labels = dict(labels)
    if groups:
        _, goes_to = group_membership(sub, groups)
        sub = group_nodes(sub, groups)
        summed: dict[Node, float] = {}
        for n, v in influence.items():
            summed[goes_to[n]] = summed.get(goes_to[n], 0.0) + v
        influence = summed
        labels = {n: t for n, t in labels.items() if goes_to.get(n) == n} | {n: sub.labels[n] for n in sub.nodes if is_supernode(n)}
    where = {n: j for j, n in enumerate(sub.nodes)}
    details = {n: (f"on {graph.tokens[n.pos]!r}: " if not is_supernode(n) else "") +
               f"activation {sig3(float(sub.activation[where[n]]))}{' (sum)' if is_supernode(n) else ''}, "
               f"influence {sig3(v)}" for n, v in influence.items()}
    ranked = {n: v for n, v in influence.items() if n.kind == "transcoder" or is_supernode(n)}  # numbers go to latents and errors first
    strength = {n: (1.0 + v if n in ranked else v / 10) for n, v in influence.items()}
    return draw_graph(sub, title, tokens=graph.tokens, strength=strength, details=details, labels=labels,
                      colour_by_effect=False, weight_title="attribution")
