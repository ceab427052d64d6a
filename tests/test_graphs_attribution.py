"""The local replacement model and attribution graphs of ``utils.graphs``
(chapter 05) on one toy prompt: exact output, exact edges, influence and pruning."""
from __future__ import annotations

import pytest
import torch

from utils.backends import load_backend
from utils.graphs import (
    build_graph,
    edge_errors,
    influence,
    intervene,
    local_replacement,
    normalized_adjacency,
    prune,
    replacement_forward,
    salient_logit_ids,
    to_json,
)
from utils.nodes import Node


@pytest.fixture(scope="module")
def fact_graph():
    bk = load_backend("toy")
    transcoders = [bk.dictionary("transcoder", layer) for layer in range(bk.model.cfg.n_layers)]
    tokens = bk.world.task_batch("facts", 1, seed=3).tokens
    rm = local_replacement(bk.model, transcoders, tokens)
    return bk, transcoders, rm, build_graph(rm, salient_logit_ids(rm.logits[-1])[0], batch=50)


def test_replacement_reproduces_the_logits(fact_graph):
    bk, _, rm, _ = fact_graph
    with torch.no_grad():
        _, logits = replacement_forward(rm, rm.leaves(2))
        clean = bk.model(rm.tokens)[0]
    assert torch.allclose(logits[1], clean, atol=1e-4)


def test_every_edge_is_a_removal_effect(fact_graph):
    _, _, rm, graph = fact_graph
    assert edge_errors(rm, graph).abs().max() < 1e-4 * graph.adjacency.abs().max()


def test_edges_respect_causality(fact_graph):
    _, _, _, graph = fact_graph
    for t, s in (graph.adjacency != 0).nonzero().tolist():
        target, source = graph.nodes[t], graph.nodes[s]
        assert source.pos <= target.pos and source.kind != "logit"
        assert source.kind == "embed" or source.layer < target.layer


def test_influence_is_the_neumann_series(fact_graph):
    _, _, _, graph = fact_graph
    norm = normalized_adjacency(graph.adjacency).double()
    w = graph.logit_weights.double()
    closed_form = w @ (torch.linalg.inv(torch.eye(len(w), dtype=torch.float64) - norm) - torch.eye(len(w), dtype=torch.float64))
    assert torch.allclose(influence(norm, w), closed_form, atol=1e-10)
    # normalised rows sum to 1, so all the logits' weight ends at embeddings and error nodes
    ends = graph.mask("embed") | graph.mask("transcoder", error=True)
    assert influence(norm, w)[ends].sum().item() == pytest.approx(w.sum().item(), abs=1e-6)  # rows normalised in float32


def test_pruned_graph_is_smaller_and_connected(fact_graph):
    _, _, _, graph = fact_graph
    pruned = prune(graph)
    assert pruned.nodes.sum() < len(graph.nodes) and pruned.edges.sum() < (graph.adjacency != 0).sum()
    assert not (pruned.edges & (graph.adjacency == 0)).any()
    assert 0 < pruned.scores["replacement"] <= 1 and 0 < pruned.scores["completeness"] <= 1
    exported = to_json(graph, pruned)
    assert len(exported["nodes"]) == int(pruned.nodes.sum()) and len(exported["edges"]) == int(pruned.edges.sum())


def test_frozen_intervention_moves_the_logit_by_the_edge(fact_graph):
    bk, transcoders, rm, graph = fact_graph
    logit = graph.nodes[-1]
    last_layer = [j for j, n in enumerate(graph.nodes) if n.kind == "transcoder" and n.layer == 1 and n.pos == logit.pos and not n.is_error]
    j = max(last_layer, key=lambda j: graph.adjacency[-1, j].abs())
    node = graph.nodes[j]
    out = intervene(bk.model, transcoders, rm.tokens, [(node, 0.0)], rm.frozen)[0, -1]
    centred = out[logit.index] - out.mean()
    clean = rm.logits[-1, logit.index] - rm.logits[-1].mean()
    assert (clean - centred).item() == pytest.approx(graph.adjacency[-1, j].item(), abs=1e-4)
    with pytest.raises(ValueError, match="only transcoder latents"):
        intervene(bk.model, transcoders, rm.tokens, [(Node("embed", 0, 0, 0), 0.0)])
