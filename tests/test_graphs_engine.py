"""The attribution-graph engine (``utils.graphs.engine.build_graph``) against the first
builder (``build_graph_reference``) and the removal test (``edge_errors``): on the toy
organism's fact and IOI prompts, in float32 and float64, with batch sizes that do not
divide the number of targets, with a cap on latent nodes, and on GPT-2-shaped weights cut to
two blocks. Every edge must be exact to 1e-5 of the largest edge."""
from __future__ import annotations

import pytest
import torch

from utils.backends import load_backend
from utils.backends.gpt2 import load_gpt2_shaped
from utils.graphs import (
    attribute,
    build_graph,
    build_graph_reference,
    edge_errors,
    influence,
    local_replacement,
    normalized_adjacency,
    salient_logit_ids,
)

EXACT = 1e-5  # of the largest edge


def _reference(rm, ids, **kwargs):
    """The first builder's graph; it leaves parameter gradients behind, which are cleared."""
    graph = build_graph_reference(rm, ids, **kwargs)
    for module in [rm.model, *rm.transcoders.values()]:
        module.zero_grad(set_to_none=True)
    return graph


def _toy(task: str, dtype: torch.dtype = torch.float32):
    bk = load_backend("toy", dtype=dtype)
    transcoders = [bk.dictionary("transcoder", layer) for layer in range(bk.model.cfg.n_layers)]
    rm = local_replacement(bk.model, transcoders, bk.world.task_batch(task, 1, seed=0).tokens)
    return bk, transcoders, rm, salient_logit_ids(rm.logits[-1])[0]


@pytest.fixture(scope="module", params=["facts", "ioi"])
def toy(request):
    bk, transcoders, rm, ids = _toy(request.param)
    with torch.no_grad():
        return bk, transcoders, rm, ids, _reference(rm, ids), build_graph(rm, ids, batch=64)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_engine_equals_the_reference_builder(toy):
    _, _, _, _, reference, graph = toy
    assert graph.nodes == reference.nodes
    assert _relative(graph.adjacency, reference.adjacency) < EXACT
    assert torch.equal(graph.activation, reference.activation) and graph.tokens == reference.tokens
    assert int((graph.adjacency != 0).sum()) > len(graph.nodes)  # a real graph, not an empty one


def test_every_edge_is_a_removal_effect(toy):
    _, _, rm, _, _, graph = toy
    assert edge_errors(rm, graph).abs().max() <= EXACT * graph.adjacency.abs().max()


@pytest.mark.parametrize("batch", [1, 13, 50, 1000])
def test_batch_sizes_that_do_not_divide_the_targets(toy, batch):
    _, _, rm, ids, _, graph = toy
    # targets are batched per layer (then the logits): sizes of those groups
    groups = [sum(1 for n in graph.nodes if n.kind == "transcoder" and n.layer == layer and not n.is_error) for layer in (0, 1)]
    assert batch == 1 or any(size % batch for size in groups)
    with torch.no_grad():
        other = build_graph(rm, ids, batch=batch)
    assert other.nodes == graph.nodes and _relative(other.adjacency, graph.adjacency) < 1e-6


def test_parameters_frozen_and_nothing_left_behind():
    bk, transcoders, rm, ids = _toy("facts")
    params = [p for module in [bk.model, *transcoders] for p in module.parameters()]
    for p in params:
        p.grad = None
    flags = [p.requires_grad for p in params]
    with torch.no_grad():
        before = bk.model(rm.tokens)
    grad_mode = torch.is_grad_enabled()
    graph = build_graph(rm, ids, batch=32)
    assert graph.adjacency.abs().max() > 0
    assert all(p.grad is None for p in params), "the engine left a gradient in a parameter's .grad"
    assert [p.requires_grad for p in params] == flags and torch.is_grad_enabled() == grad_mode
    assert not any(hp.fwd_hooks or hp.bwd_hooks for hp in bk.model.hook_dict.values())
    with torch.no_grad():
        assert torch.equal(bk.model(rm.tokens), before)


def test_float64_is_exact_to_float64_rounding():
    _, _, rm, ids = _toy("ioi", torch.float64)
    with torch.no_grad():
        graph = build_graph(rm, ids, batch=100)
        reference = _reference(rm, ids)
    assert graph.adjacency.dtype == torch.float64
    assert _relative(graph.adjacency, reference.adjacency) < 1e-12
    assert edge_errors(rm, graph).abs().max() <= 1e-12 * graph.adjacency.abs().max()


def test_attribute_is_one_call():
    bk, transcoders, rm, ids = _toy("facts")
    with torch.no_grad():
        graph = attribute(bk.model, transcoders, rm.tokens)
        assert torch.equal(graph.adjacency, build_graph(rm, ids).adjacency)


def test_cap_on_latent_nodes_follows_running_influence():
    _, _, rm, ids = _toy("ioi")
    with torch.no_grad():
        full = build_graph(rm, ids)
        first = build_graph(rm, ids, batch=10, max_feature_nodes=10)  # one round: ranked by the logits' rows alone
        capped = build_graph(rm, ids, batch=16, max_feature_nodes=40)
    latents = full.mask("transcoder", error=False)
    # first round: the 10 latents with the largest influence through the logits' rows only
    logit_rows = torch.where(full.mask("logit")[:, None], full.adjacency, 0.0)
    ranked = torch.where(latents, influence(normalized_adjacency(logit_rows), full.logit_weights), -torch.inf)
    expected = {full.nodes[j] for j in ranked.argsort(descending=True, stable=True)[:10].tolist()}
    assert {n for n in first.nodes if n.kind == "transcoder" and not n.is_error} == expected
    # the capped graph: 40 latents, every other node kept, its edges the full graph's among its nodes
    kept = [full.index(n) for n in capped.nodes]
    assert int(capped.mask("transcoder", error=False).sum()) == 40
    assert len(capped.nodes) == len(full.nodes) - int(latents.sum()) + 40
    assert torch.equal(capped.activation, full.activation[kept])
    rows = [i for i, n in enumerate(capped.nodes) if n.kind == "logit" or (n.kind == "transcoder" and not n.is_error)]
    assert _relative(capped.adjacency[rows], full.adjacency[kept][:, kept][rows]) < 1e-6
    assert edge_errors(rm, capped).abs().max() <= EXACT * capped.adjacency.abs().max()


@pytest.fixture(scope="module")
def shaped():
    """GPT-2-shaped weights (random, 24,576-latent transcoders) cut to two blocks, a 6-token prompt."""
    backend = load_gpt2_shaped("cpu", layers=range(2), kinds=("transcoder",))
    model = backend.model
    model.cfg.n_layers = 2
    model.blocks = model.blocks[:2]
    tokens = torch.randint(1000, 20000, (1, 6), generator=torch.Generator().manual_seed(0))
    tokens[0, 0] = model.tokenizer.bos_token_id
    rm = local_replacement(model, [backend.dictionary("transcoder", layer) for layer in range(2)], tokens)
    return rm, salient_logit_ids(rm.logits[-1])[0]


def test_gpt2_shaped_cut_to_two_blocks(shaped):
    rm, ids = shaped
    with torch.no_grad():
        graph = build_graph(rm, ids, batch=96)
        latents = [n for n in graph.nodes if n.kind == "transcoder" and not n.is_error]
        targets = [n for n in graph.nodes if n.kind == "logit"] + latents[::40]  # the reference is slow: a sample of rows
        reference = _reference(rm, ids, targets=targets)
    assert len(latents) > 300 and reference.nodes == graph.nodes
    rows = [graph.index(n) for n in targets]
    assert _relative(graph.adjacency[rows], reference.adjacency[rows]) < EXACT
    sources = [n for n in graph.nodes if n.kind == "embed" or n.is_error] + latents[::25]
    errors = edge_errors(rm, graph, sources=sources)
    assert errors.abs().max() <= EXACT * graph.adjacency.abs().max()
