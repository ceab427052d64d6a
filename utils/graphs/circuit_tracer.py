"""A course graph in the JSON that circuit-tracer's graph viewer reads (chapter 05).

circuit-tracer (Hanna, Piotrowski et al.) ships the interactive viewer of Anthropic's
attribution-graph papers. It reads one JSON file per graph and a ``graph-metadata.json`` that
lists the graphs of a folder. :func:`viewer_json` writes a course :class:`Graph` (optionally
its :class:`Pruned` subset) in that schema and :func:`write_viewer_graph` puts it in a folder
the viewer serves (``python -m benchmarks.circuit_tracer.viewer GRAPH.json`` opens it).

The schema, as the viewer reads it:

* ``metadata``: ``slug`` (the graph's name), ``scan`` (which dictionaries), ``prompt_tokens``
  (the prompt's tokens, drawn along the x axis), ``prompt``, ``node_threshold`` (the top of
  the viewer's pruning slider), ``transcoder_list``, ``schema_version``;
* ``qParams``: the view's state: ``pinnedIds`` (nodes pinned in the subgraph panel),
  ``supernodes`` (``[label, id, id, ...]`` lists), ``linkType``, ``clickedId``, ``sg_pos``;
* ``nodes``: one object per node: ``node_id`` (we use the course's node id,
  ``transcoder0@3:91``), ``feature`` (an integer: for a latent the Cantor pairing of layer
  and latent index, which the viewer unpairs to find feature cards), ``layer`` (a string:
  ``"E"`` for embeddings, the layer for latents and errors, ``n_layers + 1`` for logits),
  ``ctx_idx`` (the position), ``feature_type`` (``"embedding"``, ``"cross layer transcoder"``
  — the viewer's name for any transcoder latent —, ``"mlp reconstruction error"``,
  ``"logit"``), ``clerp`` (the label the viewer shows; a logit's must read
  ``Output "token" (p=0.123)``, which the viewer parses), ``influence`` (see below),
  ``activation``, ``token_prob`` and ``is_target_logit`` (the most probable) for logits;
* ``links``: ``{"source": id, "target": id, "weight": A[target, source]}``.

A node's ``influence`` in this schema is *cumulative*: with the nodes sorted by influence on
the logits, most influential first, it is the share of the total influence carried by the
node and every node before it. The viewer's slider at ``t`` shows the nodes with a
cumulative influence of at most ``t`` (embeddings and logits always). Like circuit-tracer's
own export, only nodes that some kept link touches are written, and embeddings and logits.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from utils.graphs.graph import Graph
from utils.graphs.pruning import Pruned, influence, normalized_adjacency
from utils.nodes import Node

SCHEMA_VERSION = 1
FEATURE_TYPE = {"embed": "embedding", "transcoder": "cross layer transcoder", "error": "mlp reconstruction error",
                "logit": "logit"}


def cantor_pair(x: int, y: int) -> int:
    """``(x + y)(x + y + 1) / 2 + y``: one integer for a (layer, latent) pair, the viewer's feature id."""
    return (x + y) * (x + y + 1) // 2 + y


def cumulative_influence(scores: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
    """Each node's share of the total, counting itself and every node that scores higher:
    ``c_j = sum_{k: s_k >= s_j} s_k / sum_k s_k`` (ties broken by order)."""
    order = scores.argsort(descending=True)
    shares = scores[order].cumsum(0) / scores.sum().clamp(min=torch.finfo(scores.dtype).tiny)
    return torch.empty_like(shares).scatter_(0, order, shares)


def viewer_node(graph: Graph, j: int, label: str, cumulative: float, n_layers: int, tokenizer: Any = None,
                target: bool = False) -> dict[str, Any]:
    """Node ``j`` of ``graph`` as a node of the viewer's schema (``tokenizer`` spells logit
    tokens; ``target`` marks the logit the graph explains first)."""
    node = graph.nodes[j]
    kind = "error" if node.kind == "transcoder" and node.is_error else node.kind
    out: dict[str, Any] = {"node_id": str(node), "jsNodeId": str(node), "ctx_idx": node.pos,
                           "feature_type": FEATURE_TYPE[kind], "clerp": label, "influence": cumulative,
                           "activation": None, "token_prob": 0.0, "is_target_logit": False, "run_idx": 0,
                           "reverse_ctx_idx": 0}
    if kind == "embed":
        out.update(feature=node.pos, layer="E")
    elif kind == "error":
        out.update(feature=-1, layer=str(node.layer))
    elif kind == "transcoder":
        out.update(feature=cantor_pair(node.layer, int(node.index)), layer=str(node.layer),
                   activation=float(graph.activation[j]))
    else:
        prob = float(graph.activation[j])
        token = tokenizer.decode([int(node.index)]) if tokenizer is not None else str(node.index)
        out.update(feature=int(node.index), layer=str(n_layers + 1), token_prob=prob, is_target_logit=target,
                   clerp=f'Output "{token}" (p={prob:.3f})')
    return out


def kept_part(graph: Graph, pruned: Pruned | None) -> tuple[list[int], Bool[Tensor, "n n"], Float[Tensor, " n"]]:
    """What is written: the indices of the kept nodes that a kept edge touches (embeddings and
    logits always), the kept nonzero edges among them (``[target, source]``), and every node's
    influence on the logits (:func:`influence`, or ``pruned.node_influence``)."""
    if pruned is None:
        keep = torch.ones(len(graph.nodes), dtype=torch.bool)
        edges, scores = graph.adjacency != 0, influence(normalized_adjacency(graph.adjacency), graph.logit_weights)
    else:
        keep, edges, scores = pruned.nodes, pruned.edges, pruned.node_influence
    edges = edges & (graph.adjacency != 0) & keep[:, None] & keep[None, :]
    touched = edges.any(0) | edges.any(1) | graph.mask("embed") | graph.mask("logit")
    return (keep & touched).nonzero().flatten().tolist(), edges, scores


def viewer_json(graph: Graph, pruned: Pruned | None = None, *, slug: str, scan: str = "sae-circuits",
                labels: dict[Node, str] | None = None, node_threshold: float | str | None = "auto",
                pinned: Sequence[Node] = (), supernodes: dict[str, Sequence[Node]] | None = None,
                clicked: Node | None = None, prompt: str | None = None, tokenizer: Any = None) -> dict[str, Any]:
    """``graph`` (its ``pruned`` subset if given: kept nodes and kept edges) in the schema of
    circuit-tracer's viewer. ``labels`` (default ``graph.labels``) become the nodes' texts; a
    logit node's text is ``Output "token" (p=...)``, its token spelled by ``tokenizer`` (the
    token id without one). ``pinned`` nodes start pinned in the subgraph panel, ``supernodes``
    are named groups of nodes there, and ``clicked`` (default: the most probable logit) is the
    node whose links the viewer shows first. ``node_threshold`` is the top of the viewer's
    pruning slider: ``"auto"`` puts it where every exported node shows (the largest cumulative
    influence among them, rounded up to the slider's step of 0.01), None leaves the slider out.
    ``slug`` names the graph and its file: letters, digits, ``-``, ``_`` and ``.``."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", slug):
        raise ValueError(f"a slug names a file: letters, digits, '-', '_' and '.' only, got {slug!r}")
    labels = {**graph.labels, **(labels or {})}
    kept, edges, scores = kept_part(graph, pruned)
    cumulative = cumulative_influence(scores.double())
    top = max((n for n in graph.nodes if n.kind == "logit"), key=lambda n: float(graph.activation[graph.index(n)]))
    clicked = clicked if clicked is not None else top
    exported = {graph.nodes[j] for j in kept}
    for node in [*pinned, *(n for group in (supernodes or {}).values() for n in group), clicked]:
        if node not in exported:
            raise ValueError(f"{node} is pinned, clicked or in a supernode, but it is not a node of the exported graph")
    if node_threshold == "auto":
        node_threshold = min(1.0, math.ceil(max(float(cumulative[j]) for j in kept) * 100 - 1e-9) / 100)
    n_layers = top.layer
    return {
        "metadata": {"slug": slug, "scan": scan, "transcoder_list": [], "prompt_tokens": list(graph.tokens),
                     "prompt": prompt if prompt is not None else " ".join(graph.tokens),
                     "node_threshold": node_threshold, "schema_version": SCHEMA_VERSION},
        "qParams": {"pinnedIds": [str(n) for n in pinned],
                    "supernodes": [[name, *(str(n) for n in group)] for name, group in (supernodes or {}).items()],
                    "linkType": "both", "clickedId": str(clicked), "sg_pos": ""},
        "nodes": [viewer_node(graph, j, labels.get(graph.nodes[j], ""), float(cumulative[j]), n_layers, tokenizer,
                              graph.nodes[j] == top) for j in kept],
        "links": [{"source": str(graph.nodes[s]), "target": str(graph.nodes[t]), "weight": float(graph.adjacency[t, s])}
                  for t, s in edges.nonzero().tolist()],
    }


def write_viewer_graph(data: dict[str, Any], folder: str | Path) -> Path:
    """Write ``data`` (from :func:`viewer_json`) as ``folder/<slug>.json`` and list it in
    ``folder/graph-metadata.json`` (replacing a graph of the same slug). Returns the file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{data['metadata']['slug']}.json"
    path.write_text(json.dumps(data))
    index = folder / "graph-metadata.json"
    graphs = json.loads(index.read_text())["graphs"] if index.exists() else []
    graphs = [g for g in graphs if g["slug"] != data["metadata"]["slug"]] + [data["metadata"]]
    index.write_text(json.dumps({"graphs": graphs}, indent=1))
    return path
