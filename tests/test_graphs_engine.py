"""The attribution-graph engine (``utils.graphs.engine.build_graph``) against the first
builder (``build_graph_reference``) and the removal test (``edge_errors``): on the toy
organism's fact and IOI prompts, in float32 and float64, with batch sizes that do not
divide the number of targets, with a cap on latent nodes, and on GPT-2-shaped weights cut to
two blocks. Every edge must be exact to 1e-5 of the largest edge. The engine's two ways of
taking seeds back to the write points, the hand-written transpose (``_Transpose``) and
autograd on a traced forward pass (``_Trace``, for models the transpose does not cover),
give the same graphs."""
from __future__ import annotations

import copy

import pytest
import torch

from utils.backends import load_backend
from utils.backends.gpt2 import load_gpt2_shaped
from utils.graphs import engine
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


def _traced(rm, ids, **kwargs):
    """``build_graph`` with autograd on a traced forward pass, as for a model the transpose does not cover."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine._Transpose, "supports", staticmethod(lambda rm: False))
        return build_graph(rm, ids, **kwargs)


def _reference(rm, ids, **kwargs):
    """The first builder's graph; it leaves parameter gradients behind, which are cleared."""
    graph = build_graph_reference(rm, ids, **kwargs)
    for p in [*rm.model.parameters(), *rm.dictionary.parameters()]:
        p.grad = None
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


def test_transpose_equals_autograd_on_the_traced_pass(toy):
    _, _, rm, ids, _, graph = toy
    assert engine._Transpose.supports(rm)
    with torch.no_grad():
        traced = _traced(rm, ids, batch=64)
    assert traced.nodes == graph.nodes and _relative(graph.adjacency, traced.adjacency) < 1e-6


@pytest.mark.parametrize("hook, transposed", [("blocks.{layer}.hook_resid_mid", True),
                                              ("blocks.{layer}.hook_resid_pre", False)])
def test_dictionaries_reading_elsewhere(hook, transposed):
    """The transpose covers a dictionary that reads the residual stream before the MLP's
    norm (``hook_resid_mid``); one reading it before the attention (``hook_resid_pre``) is
    not a read point it models, and the traced pass takes over. Both graphs are exact (the
    toy's cross-layer transcoder, told to read there: its error nodes absorb the rest)."""
    from utils.toy import load_clts

    bk = load_backend("toy")
    clt = copy.deepcopy(load_clts()["cross_layer"])
    clt.cfg.hook_in = hook
    rm = local_replacement(bk.model, clt, bk.world.task_batch("ioi", 1, seed=0).tokens)
    ids = salient_logit_ids(rm.logits[-1])[0]
    assert engine._Transpose.supports(rm) == transposed
    with torch.no_grad():
        graph = build_graph(rm, ids, batch=100)
        if transposed:
            assert _relative(graph.adjacency, _traced(rm, ids, batch=100).adjacency) < 1e-6
    assert int((graph.adjacency != 0).sum()) > len(graph.nodes)
    assert edge_errors(rm, graph).abs().max() <= EXACT * graph.adjacency.abs().max()


@pytest.mark.parametrize("setting", ["parallel_attn_mlp", "use_split_qkv_input", "use_normalization_before_and_after"])
def test_transpose_declines_blocks_it_does_not_model(setting):
    """A block whose attention and MLP read the same residual stream, or with per-head
    inputs or extra norms, is not the transpose's block: the engine uses the traced pass."""
    bk, _, rm, _ = _toy("facts")
    assert engine._Transpose.supports(rm)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bk.model.cfg, setting, True)
        assert not engine._Transpose.supports(rm)


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
    with torch.no_grad():
        assert _relative(graph.adjacency, _traced(rm, ids, batch=96).adjacency) < 1e-6


# ------------------------------------------------------------------ cross-layer transcoders
def _clt_case(task: str, which: str = "cross_layer", dtype: torch.dtype = torch.float32):
    from utils.toy import load_clts

    bk = load_backend("toy", dtype=dtype)
    clt = load_clts()[which].to(dtype)
    rm = local_replacement(bk.model, clt, bk.world.task_batch(task, 1, seed=0).tokens)
    return bk, clt, rm, salient_logit_ids(rm.logits[-1])[0]


@pytest.fixture(scope="module", params=["facts", "induction"])
def clt_toy(request):
    bk, clt, rm, ids = _clt_case(request.param)
    with torch.no_grad():
        return bk, clt, rm, ids, _reference(rm, ids), build_graph(rm, ids, batch=48)


def test_clt_graph_equals_the_reference_builder_and_removal(clt_toy):
    _, clt, rm, ids, reference, graph = clt_toy
    assert {n.kind for n in graph.nodes} == {"embed", "clt", "logit"}
    assert graph.nodes == reference.nodes and torch.equal(graph.activation, reference.activation)
    assert _relative(graph.adjacency, reference.adjacency) < EXACT
    assert edge_errors(rm, graph).abs().max() <= EXACT * graph.adjacency.abs().max()
    with torch.no_grad():
        assert _relative(graph.adjacency, _traced(rm, ids, batch=48).adjacency) < 1e-6


def test_clt_edges_sum_over_every_decoder_a_latent_writes_through(clt_toy):
    """A layer-0 latent's edge into a logit is its write through W_dec[0, 0] plus its write
    through W_dec[0, 1]: removing the cross-layer decoder from the replacement model changes
    the edge by exactly the second term."""
    _, clt, rm, ids, _, graph = clt_toy
    logit = graph.index(next(n for n in graph.nodes if n.kind == "logit"))
    latents = [j for j, n in enumerate(graph.nodes) if n.kind == "clt" and n.layer == 0 and not n.is_error]
    with torch.no_grad():
        saved = clt.decoder(0, 1).clone()
        clt.decoder(0, 1).zero_()
        try:
            rm0 = local_replacement(rm.model, clt, rm.tokens)
            rm0.acts, rm0.errors = rm.acts, rm.errors  # same leaves: only the decoder changed
            without = build_graph(rm0, ids)
        finally:
            clt.decoder(0, 1).copy_(saved)
    assert without.nodes == graph.nodes
    through_cross = graph.adjacency[logit, latents] - without.adjacency[logit, latents]
    assert through_cross.abs().max() > 1e-3 * graph.adjacency[logit, latents].abs().max()  # the cross decoder matters
    # the layer-1 rows (read before MLP 1 writes) do not see the cross-layer decoder at all
    layer1 = [j for j, n in enumerate(graph.nodes) if n.kind == "clt" and n.layer == 1 and not n.is_error]
    assert torch.equal(graph.adjacency[layer1][:, latents], without.adjacency[layer1][:, latents])


def test_transcoders_as_a_clt_give_chapter_05s_graph():
    """PLTs through the engine directly and as a CLT without cross-layer decoders
    (``from_transcoders``): the same graph up to the node kind."""
    from utils.clt import CrossLayerTranscoder

    bk, transcoders, rm, ids = _toy("ioi")
    as_clt = CrossLayerTranscoder.from_transcoders(transcoders)
    rm_clt = local_replacement(bk.model, as_clt, rm.tokens)
    with torch.no_grad():
        graph, other = build_graph(rm, ids), build_graph(rm_clt, ids)
    assert [(n.layer, n.pos, n.index) for n in graph.nodes] == [(n.layer, n.pos, n.index) for n in other.nodes]
    assert {n.kind for n in other.nodes} == {"embed", "clt", "logit"}
    assert _relative(other.adjacency, graph.adjacency) < 1e-6


def test_clt_in_float64_is_exact_to_float64_rounding():
    _, _, rm, ids = _clt_case("ioi", dtype=torch.float64)
    with torch.no_grad():
        graph = build_graph(rm, ids, batch=100)
        reference = _reference(rm, ids)
    assert _relative(graph.adjacency, reference.adjacency) < 1e-12
    assert edge_errors(rm, graph).abs().max() <= 1e-12 * graph.adjacency.abs().max()


def test_a_three_layer_clt_on_gpt2_shaped_blocks():
    """Decoders 0->1, 0->2 and 1->2: a random CLT over GPT-2-shaped blocks cut to three."""
    from utils.backends.gpt2 import shaped_model
    from utils.clt import CLTConfig, CrossLayerTranscoder

    model = shaped_model("cpu")
    model.cfg.n_layers = 3
    model.blocks = model.blocks[:3]
    g = torch.Generator().manual_seed(1)
    clt = CrossLayerTranscoder(CLTConfig(768, 512, 3))
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        clt.threshold.fill_(3.0)  # about 2 % of the latents active
    tokens = torch.randint(1000, 20000, (1, 7), generator=g)
    tokens[0, 0] = model.tokenizer.bos_token_id
    rm = local_replacement(model, clt, tokens)
    ids = salient_logit_ids(rm.logits[-1], max_n=3)[0]
    with torch.no_grad():
        graph = build_graph(rm, ids, batch=40)
        reference = _reference(rm, ids)
    assert 30 < int(graph.dictionary_mask(error=False).sum()) < 1000
    assert _relative(graph.adjacency, reference.adjacency) < EXACT
    assert edge_errors(rm, graph).abs().max() <= EXACT * graph.adjacency.abs().max()


def test_a_clt_must_cover_every_layer():
    from utils.clt import CLTConfig, CrossLayerTranscoder

    bk = load_backend("toy")
    with pytest.raises(ValueError, match="replaces every MLP"):
        local_replacement(bk.model, CrossLayerTranscoder(CLTConfig(128, 16, 1)), bk.world.task_batch("facts", 1, seed=0).tokens)
