"""``utils.circuits`` and the transcoder case of ``utils.attribution.splice_for_gradients``."""
from __future__ import annotations

import pytest
import torch

from solutions.ch01_attribution import logit_diff
from utils.attribution import splice_for_gradients
from utils.backends import load_backend
from utils.metrics import agreement
from utils.circuits import mean_baseline, node_attribution, node_masks, nodes_of, rank_nodes
from utils.nodes import Node, dictionary_key, output_hook


@pytest.fixture(scope="module")
def bk():
    return load_backend("toy")


def test_dictionary_keys_and_output_hooks(bk) -> None:
    for (kind, layer), sae in bk.dictionaries.items():
        assert dictionary_key(sae) == (kind, layer)
        assert output_hook(sae) == (f"blocks.{layer}.hook_mlp_out" if kind == "transcoder" else sae.cfg.metadata.hook_name)


def test_node_masks_round_trip(bk) -> None:
    dictionaries = list(bk.dictionaries.values())
    nodes = [Node("resid_sae", 0, -1, 3), Node("attn_sae", 1, 2, "error"), Node("transcoder", 0, 0, 255),
             Node("transcoder", 0, 0, "error"), Node("resid_sae", 1, 4, 0)]
    masks = node_masks(nodes, dictionaries, n_pos=5)
    assert sum(int(m.sum()) for m in masks.values()) == len(nodes)
    assert masks["blocks.0.hook_resid_post"][4, 3] and masks["blocks.1.attn.hook_z"][2, -1]
    back = {n for sae in dictionaries for n in nodes_of(masks[sae.cfg.metadata.hook_name], sae)}
    assert back == {Node(n.kind, n.layer, n.pos % 5, n.index) for n in nodes}


@pytest.mark.parametrize("node,message", [
    (Node("resid_sae", 2, 0, 1), "no dictionary"), (Node("resid_sae", 0, 5, 1), "outside a prompt"),
    (Node("resid_sae", 0, -6, 1), "outside a prompt"), (Node("attn_sae", 0, 0, 256), "not in 0..255"),
])
def test_node_masks_refuse_bad_nodes(bk, node, message) -> None:
    with pytest.raises(ValueError, match=message):
        node_masks([node], list(bk.dictionaries.values()), n_pos=5)


def test_rank_nodes_orders_by_size_then_node_order(bk) -> None:
    dictionaries = [bk.dictionary("resid_sae", 0), bk.dictionary("attn_sae", 0)]
    scores = {sae.cfg.metadata.hook_name: torch.zeros(3, sae.cfg.d_sae + 1) for sae in dictionaries}
    scores["blocks.0.hook_resid_post"][1, -1] = -5.0  # an error node, largest |score|
    scores["blocks.0.hook_resid_post"][2, 7] = 2.0
    scores["blocks.0.attn.hook_z"][0, 9] = 2.0  # a tie: attention comes first in a layer
    top = rank_nodes(scores, dictionaries, k=3)
    assert top == [Node("resid_sae", 0, 1, "error"), Node("attn_sae", 0, 0, 9), Node("resid_sae", 0, 2, 7)]
    without = rank_nodes(scores, dictionaries, errors=False)
    assert len(without) == 3 * 256 * 2 and not any(n.is_error for n in without)
    assert len(rank_nodes(scores, dictionaries)) == 3 * 257 * 2


def test_splice_for_gradients_transcoder_matches_saelens(bk) -> None:
    model, tc = bk.model, bk.dictionary("transcoder", 1)
    batch = bk.world.task_batch("ioi", 3, seed=0)
    name = f"{output_hook(tc)}.hook_sae_error"
    with torch.no_grad():
        clean = model(batch.tokens)
        _, cache = model.run_with_cache_with_saes(batch.tokens, saes=[tc], use_error_term=True, names_filter=name)
    with splice_for_gradients(model, [tc]) as nodes, torch.enable_grad():
        logits = model(batch.tokens)
        logit_diff(logits, batch.answer_ids, batch.distractor_ids).sum().backward()
    assert not model.acts_to_saes and not any(h._forward_hooks for h in model.hook_dict.values())
    assert torch.allclose(logits.detach(), clean, atol=1e-4)
    assert torch.allclose(nodes["blocks.1.ln2.hook_normalized.error"], cache[name], atol=1e-5)
    assert nodes["blocks.1.ln2.hook_normalized.error"].grad.abs().sum() > 0
    assert nodes["blocks.1.ln2.hook_normalized.latents"].grad.abs().sum() > 0


def test_node_attribution_error_column_is_exact_gradient(bk) -> None:
    """With all dictionaries spliced, the error column equals the one-dictionary SAELens leaf."""
    from solutions.ch02_error_nodes import error_attribution

    model, dictionaries = bk.model, list(bk.dictionaries.values())
    batch = bk.world.task_batch("induction", 2, seed=0)
    means = mean_baseline(model, dictionaries, bk.world.task_batch("induction", 8, seed=1).tokens)
    together = node_attribution(model, dictionaries, batch.tokens,
                                lambda logits: logit_diff(logits, batch.answer_ids, batch.distractor_ids), means)
    for sae in dictionaries:
        hook = sae.cfg.metadata.hook_name
        alone = error_attribution(model, sae, batch.tokens, batch.answer_ids, batch.distractor_ids, means.errors[hook])
        assert together[hook].shape == (2, batch.tokens.shape[1], sae.cfg.d_sae + 1)
        assert torch.allclose(together[hook][..., -1], alone, atol=1e-4 * alone.abs().max().item())


def test_agreement() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, -1.0])
    assert agreement(x, 2 * x) == pytest.approx({"spearman": 1.0, "pearson": 1.0, "sign_agreement": 1.0})
    assert agreement(x, -x)["sign_agreement"] == 0.0


def test_mean_baseline_shapes(bk) -> None:
    dictionaries = [bk.dictionary("attn_sae", 0), bk.dictionary("transcoder", 0)]
    tokens = bk.world.task_batch("facts", 4, seed=0).tokens
    per_position = mean_baseline(bk.model, dictionaries, tokens)
    pooled = mean_baseline(bk.model, dictionaries, tokens, per_position=False)
    n_pos = tokens.shape[1]
    assert per_position.latents["blocks.0.attn.hook_z"].shape == (n_pos, 256)
    assert per_position.errors["blocks.0.attn.hook_z"].shape == (n_pos, 4, 32)
    assert pooled.errors["blocks.0.ln2.hook_normalized"].shape == (128,)
    assert torch.allclose(pooled.latents["blocks.0.attn.hook_z"], per_position.latents["blocks.0.attn.hook_z"][1:].mean(0), atol=1e-5)
