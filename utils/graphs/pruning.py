"""Influence, pruning and scores of an attribution graph (introduced in chapter 05).

``Â`` is the adjacency with absolute values and each row (target) divided by its sum: the
share of a target's direct input each source supplies. The influence of a node on the
logits sums, over every path from it to a logit, the product of those shares along the
path, weighted by the logit's probability (:func:`influence`). Pruning keeps what carries
most of it; the scores say how much of the output the graph explains with latents rather
than error nodes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from utils.graphs.graph import Graph



def normalized_adjacency(adjacency: Float[Tensor, "n n"]) -> Float[Tensor, "n n"]:
    """``|A|`` with each row (target) divided by its sum: the share of a target's direct
    input each source supplies. Rows without input (sources only) stay zero."""
    a = adjacency.abs()
    return a / a.sum(1, keepdim=True).clamp(min=torch.finfo(a.dtype).tiny)


def influence(normalized: Float[Tensor, "n n"], weights: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
    """``w (Â + Â² + Â³ + ...)``: the summed share of ``weights`` (on the logits) that reaches
    each node along every path. The graph is acyclic, so ``Â`` is nilpotent and the Neumann
    series ends after at most ``n`` terms (in practice the number of layers plus two)."""
    total = torch.zeros_like(weights)
    term = weights @ normalized
    while term.abs().sum() > 0:
        total = total + term
        term = term @ normalized
    return total


def cumulative_mask(scores: Float[Tensor, " n"], threshold: float) -> Bool[Tensor, " n"]:
    """The highest-scoring entries whose scores add up to ``threshold`` of the total (the
    entry that crosses it included): chapter 05's pruning rule."""
    order = scores.argsort(descending=True)
    cum = scores[order].cumsum(0) / scores.sum().clamp(min=torch.finfo(scores.dtype).tiny)
    keep = torch.zeros_like(scores, dtype=torch.bool)
    n_keep = int((cum < threshold).sum().item()) + 1
    keep[order[: min(n_keep, len(scores))]] = True
    return keep & (scores > 0)


@dataclass
class Pruned:
    """A pruned graph: which nodes and edges survive, and its scores."""

    nodes: Bool[Tensor, " n_nodes"]
    edges: Bool[Tensor, "n_nodes n_nodes"]
    node_influence: Float[Tensor, " n_nodes"]
    scores: dict[str, float]


def prune(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruned:
    """Keep the latents carrying ``node_threshold`` of the influence on the logits (every
    embedding, error and logit node is kept: they are the graph's boundary), then the edges
    among kept nodes carrying ``edge_threshold`` of the edge influence (an edge's: its
    normalised weight times its target's influence plus logit weight), then drop nodes left
    without a path to a logit."""
    norm = normalized_adjacency(graph.adjacency)
    w = graph.logit_weights
    node_inf = influence(norm, w)
    latent = graph.dictionary_mask(error=False)
    keep = ~latent | (cumulative_mask(torch.where(latent, node_inf, 0.0), node_threshold) & latent)
    edge_score = norm * (node_inf + w)[:, None] * keep[:, None] * keep[None, :]
    edges = cumulative_mask(edge_score.flatten(), edge_threshold).view_as(edge_score)
    keep = keep & _reaches_logits(edges, graph.mask("logit"))
    edges = edges & keep[:, None] & keep[None, :]
    return Pruned(keep, edges, node_inf, graph_scores(graph, edges))


def _reaches_logits(edges: Bool[Tensor, "n n"], logits: Bool[Tensor, " n"]) -> Bool[Tensor, " n"]:
    """Nodes with a path of kept edges to a logit node (logit nodes included)."""
    reach = logits.clone()
    while True:
        grown = reach | (edges & reach[:, None]).any(0)
        if torch.equal(grown, reach):
            return reach
        reach = grown


def graph_scores(graph: Graph, edges: Bool[Tensor, "n n"] | None = None) -> dict[str, float]:
    """Replacement and completeness scores of the graph restricted to ``edges`` (all edges if None).

    With ``Â`` the normalised adjacency of the *full* graph, masked to the kept edges, and
    ``w_M`` the logits' influence through kept edges (:func:`influence`):

    * replacement = ``sum over embedding nodes of w_M``: the share of the logits' influence
      that reaches the tokens along kept edges, rather than ending at error nodes or being
      pruned away (1 for a perfect, unpruned replacement);
    * completeness = ``sum_t u_t sum_{s not error} Â[t, s] / sum_t u_t`` with
      ``u = w_M + logit weights`` over the targets: the influence-weighted share of each
      node's input explained by kept non-error nodes."""
    norm = normalized_adjacency(graph.adjacency)
    if edges is not None:
        norm = norm * edges
    w = graph.logit_weights
    w_m = influence(norm, w)
    u = (w_m + w) * (graph.adjacency.abs().sum(1) > 0)
    non_error = ~graph.dictionary_mask(error=True)
    explained = (norm * non_error[None, :]).sum(1)
    return {"replacement": float(w_m[graph.mask("embed")].sum() / w.sum()),
            "completeness": float((u * explained).sum() / u.sum())}


# ---------------------------------------------------------------------------------------
# Circuit-tracer's rule and scores, beside the chapter's.


def crossing_score(scores: Float[Tensor, " n"], threshold: float) -> float:
    """The score of the entry at which the scores, sorted in decreasing order, first add up
    to ``threshold`` of their total (the last entry if they never do)."""
    ordered = scores.flatten().sort(descending=True).values
    cum = ordered.cumsum(0) / ordered.sum().clamp(min=torch.finfo(ordered.dtype).tiny)
    k = min(int((cum < threshold).sum().item()), len(ordered) - 1)
    return float(ordered[k])


def prune_as_circuit_tracer(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruned:
    """Prune as circuit-tracer does (``prune_graph``, version 0.5), in four steps:

    1. every node's influence on the logits (:func:`influence` on the full graph): latents,
       error nodes and embeddings compete alike, error and embedding nodes taking their
       share; keep the nodes scoring at least :func:`crossing_score` at ``node_threshold``
       of the total, and every embedding and logit node;
    2. drop the other nodes' rows and columns, normalise what is left again and compute the
       influence *on this pruned graph*, ``I'``; an edge's score is ``Â'[t, s] (I'_t + w_t)``;
       keep the edges scoring at least the crossing score at ``edge_threshold``;
    3. drop latents and error nodes without a kept outgoing edge, and latents without a kept
       incoming one, with their edges, until nothing changes (a dropped node can leave
       another without edges).

    ``node_influence`` is step 1's; ``scores`` are :func:`circuit_tracer_scores` of the kept edges."""
    w = graph.logit_weights
    node_inf = influence(normalized_adjacency(graph.adjacency), w)
    boundary = graph.mask("embed") | graph.mask("logit")
    keep = boundary | (node_inf >= crossing_score(node_inf, node_threshold))
    pruned = graph.adjacency * keep[:, None] * keep[None, :]
    norm = normalized_adjacency(pruned)
    edge_score = norm * (influence(norm, w) + w)[:, None]
    edges = (edge_score >= crossing_score(edge_score, edge_threshold)) & (pruned != 0)
    latent, error = graph.dictionary_mask(error=False), graph.dictionary_mask(error=True)
    while True:
        edges = edges & keep[:, None] & keep[None, :]
        still = keep & ~((latent | error) & ~edges.any(0)) & ~(latent & ~edges.any(1))
        if torch.equal(still, keep):
            return Pruned(keep, edges, node_inf, circuit_tracer_scores(graph, edges))
        keep = still


def circuit_tracer_scores(graph: Graph, edges: Bool[Tensor, "n n"] | None = None) -> dict[str, float]:
    """Circuit-tracer's replacement and completeness scores (``compute_graph_scores``) of the
    graph, restricted to ``edges`` if given (then normalised again over what is left).

    With ``Â`` the normalised adjacency, ``I`` the influence and ``w`` the logit weights:

    * replacement = ``I(embeddings) / (I(embeddings) + I(error nodes))``: of the influence
      that ends at the graph's boundary, the tokens' share;
    * completeness = ``sum_t (1 - sum_{s error} Â[t, s]) (I_t + w_t) / sum_t (I_t + w_t)`` over
      *every* node: a node with no input (an embedding, an error node) counts as fully
      explained, where :func:`graph_scores` leaves it out."""
    adjacency = graph.adjacency if edges is None else graph.adjacency * edges
    norm = normalized_adjacency(adjacency)
    w = graph.logit_weights
    node_inf = influence(norm, w)
    tokens = node_inf[graph.mask("embed")].sum()
    errors = node_inf[graph.dictionary_mask(error=True)].sum()
    explained = 1 - norm[:, graph.dictionary_mask(error=True)].sum(1)
    weight = node_inf + w
    return {"replacement": float(tokens / (tokens + errors)), "completeness": float((explained * weight).sum() / weight.sum())}
