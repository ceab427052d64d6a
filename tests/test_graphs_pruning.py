"""Pruning and scores (``utils.graphs.pruning``): the chapter's rule and circuit-tracer's,
checked on a graph small enough to score by hand, against a plain re-derivation on random
graphs, and for their defining properties on the organism's fact prompt."""
from __future__ import annotations

import pytest
import torch

from utils.backends import load_backend
from utils.graphs import Graph, build_graph, graph_scores, local_replacement, prune, salient_logit_ids
from utils.graphs.pruning import circuit_tracer_scores, crossing_score, prune_as_circuit_tracer
from utils.nodes import ERROR, Node


def test_scores_by_hand():
    """embedding -(3)-> logit <-(1)- error node, the logit with probability 1: the logit's input
    is three quarters tokens, so both replacement scores are 3/4; the chapter's completeness
    is the logit's explained share, 3/4; circuit-tracer's also counts the embedding
    (influence 3/4) and the error node (1/4) as fully explained: (3/4 + 1/4 + 1 * 3/4) / 2."""
    nodes = [Node("embed", 0, 0, 5), Node("transcoder", 0, 0, ERROR), Node("logit", 1, 0, 7)]
    adjacency = torch.zeros(3, 3, dtype=torch.float64)
    adjacency[2, 0], adjacency[2, 1] = 3.0, 1.0
    graph = Graph(nodes, adjacency, activation=torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    assert graph_scores(graph) == pytest.approx({"replacement": 0.75, "completeness": 0.75})
    assert circuit_tracer_scores(graph) == pytest.approx({"replacement": 0.75, "completeness": 0.875})


def test_crossing_score():
    scores = torch.tensor([0.1, 0.5, 0.2, 0.2])
    assert crossing_score(scores, 0.5) == pytest.approx(0.5)  # the largest alone reaches half
    assert crossing_score(scores, 0.8) == pytest.approx(0.2)  # 0.5 + 0.2 = 0.7 < 0.8, one more 0.2
    assert crossing_score(scores, 1.0) == pytest.approx(0.1)


def _random_graph(seed: int) -> Graph:
    """Embeddings and error nodes (no input), latents of two layers and two logits, random
    signed edges from earlier to later nodes, some missing."""
    g = torch.Generator().manual_seed(seed)
    nodes = ([Node("embed", 0, p, p) for p in range(3)] + [Node("transcoder", 0, p, ERROR) for p in range(3)]
             + [Node("transcoder", 0, p, i) for p in range(3) for i in range(2)]
             + [Node("transcoder", 1, p, ERROR) for p in range(3)] + [Node("transcoder", 1, p, 9) for p in range(3)]
             + [Node("logit", 2, 2, t) for t in range(2)])
    n = len(nodes)
    adjacency = torch.randn(n, n, generator=g, dtype=torch.float64) * (torch.rand(n, n, generator=g) < 0.6)
    adjacency = adjacency.tril(-1)
    has_input = torch.tensor([n.kind in ("logit",) or (n.kind == "transcoder" and not n.is_error) for n in nodes])
    adjacency = adjacency * has_input[:, None]  # embeddings and error nodes have no input
    activation = torch.zeros(n, dtype=torch.float64)
    activation[-2:] = torch.tensor([0.7, 0.2], dtype=torch.float64)
    return Graph(nodes, adjacency, activation)


def _plainly_as_circuit_tracer(graph: Graph, node_threshold: float, edge_threshold: float):
    """circuit-tracer's rule re-derived plainly: influence by the closed form, thresholds by
    sorting Python lists, the clean-up loop node by node."""
    n = len(graph.nodes)
    eye = torch.eye(n, dtype=torch.float64)
    w = graph.logit_weights.double()

    def normalised(a):
        sums = a.abs().sum(1, keepdim=True)
        return torch.where(sums > 0, a.abs() / torch.where(sums > 0, sums, 1.0), 0.0)

    def influence_of(norm):
        return w @ (torch.linalg.inv(eye - norm) - eye)

    def threshold(values, share):
        ordered, total, running = sorted(values, reverse=True), sum(values), 0.0
        for v in ordered:
            running += v
            if running >= share * total:
                return v
        return ordered[-1]

    first = influence_of(normalised(graph.adjacency.double()))
    boundary = [node.kind in ("embed", "logit") for node in graph.nodes]
    t = threshold(first.tolist(), node_threshold)
    keep = [boundary[i] or first[i].item() >= t for i in range(n)]
    pruned = graph.adjacency.double().clone()
    for i in range(n):
        if not keep[i]:
            pruned[i, :] = 0
            pruned[:, i] = 0
    norm = normalised(pruned)
    score = norm * (influence_of(norm) + w)[:, None]
    e = threshold(score.flatten().tolist(), edge_threshold)
    edges = [[score[a, b].item() >= e and pruned[a, b] != 0 for b in range(n)] for a in range(n)]
    changed = True
    while changed:
        changed = False
        for i, node in enumerate(graph.nodes):
            if not keep[i] or node.kind not in ("transcoder",):
                continue
            out_edge = any(edges[a][i] and keep[a] for a in range(n))
            in_edge = any(edges[i][b] and keep[b] for b in range(n))
            if not out_edge or (not node.is_error and not in_edge):
                keep[i], changed = False, True
    kept_edges = [[edges[a][b] and keep[a] and keep[b] for b in range(n)] for a in range(n)]
    return torch.tensor(keep), torch.tensor(kept_edges)


@pytest.mark.parametrize("seed", range(6))
def test_circuit_tracer_rule_matches_a_plain_derivation(seed):
    graph = _random_graph(seed)
    for node_threshold, edge_threshold in ((0.8, 0.98), (0.5, 0.9), (0.9, 0.6), (0.95, 0.4)):
        nodes, edges = _plainly_as_circuit_tracer(graph, node_threshold, edge_threshold)
        pruned = prune_as_circuit_tracer(graph, node_threshold, edge_threshold)
        assert torch.equal(pruned.nodes, nodes) and torch.equal(pruned.edges, edges)


@pytest.fixture(scope="module")
def fact_graph():
    bk = load_backend("toy")
    transcoders = [bk.dictionary("transcoder", layer) for layer in range(bk.model.cfg.n_layers)]
    rm = local_replacement(bk.model, transcoders, bk.world.task_batch("facts", 1, seed=0).tokens)
    with torch.no_grad():
        return build_graph(rm, salient_logit_ids(rm.logits[-1])[0])


def test_the_two_rules_on_the_fact_prompt(fact_graph):
    graph = fact_graph
    latent, error = graph.mask("transcoder", error=False), graph.mask("transcoder", error=True)
    ours, theirs = prune(graph), prune_as_circuit_tracer(graph)
    # circuit-tracer's: every embedding and logit kept; a kept latent has a kept edge in and
    # out, a kept error node one out; kept edges are real edges between kept nodes
    boundary = graph.mask("embed") | graph.mask("logit")
    assert theirs.nodes[boundary].all()
    assert (theirs.edges.any(0) | ~(theirs.nodes & (latent | error))).all()
    assert (theirs.edges.any(1) | ~(theirs.nodes & latent)).all()
    assert not (theirs.edges & ~(theirs.nodes[:, None] & theirs.nodes[None, :])).any()
    assert not (theirs.edges & (graph.adjacency == 0)).any()
    # its nodes passed step 1: influence at least the crossing score over every node
    passed = theirs.node_influence >= crossing_score(theirs.node_influence, 0.8)
    assert (passed | boundary)[theirs.nodes].all()
    # the chapter's rule keeps every error node with a path to the logits; circuit-tracer's prunes them too
    assert (theirs.nodes & error).sum() < (ours.nodes & error).sum()
    assert 0 < (theirs.nodes & latent).sum() and 0 < (ours.nodes & latent).sum()
    # on the full graph: the same replacement score; circuit-tracer's completeness is higher
    # (nodes without input count as explained)
    full_ours, full_theirs = graph_scores(graph), circuit_tracer_scores(graph)
    assert full_theirs["replacement"] == pytest.approx(full_ours["replacement"], rel=1e-5)
    assert full_theirs["completeness"] > full_ours["completeness"]
