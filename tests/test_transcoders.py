"""utils.transcoders: the library versions agree with chapter 04's references, the frozen
linearisation is exact, the blind view hides ground truth, and the blind-case pool still
meets its criteria on the committed organism (the chapter's closing note quotes it)."""
from __future__ import annotations

import pytest
import torch

from solutions.ch04_transcoders import (
    attention_path_contributions,
    de_embedding,
    extended_de_embedding,
    input_dependent_connections,
    pullback,
    upstream_ablation_effects,
)
from utils.backends import load_backend
from utils.transcoders import (
    BLIND_CASE_POOL,
    blind,
    blind_case_latents,
    blind_case_truths,
    de_embeddings,
    encoder_preacts,
    extended_de_embeddings,
    ln_scales,
    ov_pullbacks,
    pullbacks,
    residual_writes,
    typical_scale,
    unambiguous,
    upstream_ablations,
    upstream_contributions,
)


@pytest.fixture(scope="module")
def bk():
    torch.set_grad_enabled(False)
    yield load_backend("toy")
    torch.set_grad_enabled(True)


@pytest.fixture(scope="module")
def prompts(bk):
    return bk.world.task_batch("pronouns", 4, seed=3).tokens


def test_encoder_preacts_reproduce_the_transcoder(bk, prompts):
    tc1 = bk.dictionary("transcoder", 1)
    _, cache = bk.model.run_with_cache(prompts)
    want = cache["blocks.1.ln2.hook_normalized"] @ tc1.W_enc + tc1.b_enc
    got = encoder_preacts(bk.model, tc1, cache["blocks.1.hook_resid_mid"], ln_scales(bk.model, prompts, 1))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_library_agrees_with_the_chapter(bk, prompts):
    model, tc0, tc1 = bk.model, bk.dictionary("transcoder", 0), bk.dictionary("transcoder", 1)
    s0, s1 = typical_scale(model, prompts, 0), typical_scale(model, prompts, 1)
    for latent in (3, 147):
        torch.testing.assert_close(de_embeddings(model, tc1, s1)[:, latent], de_embedding(model, tc1, latent, s1))
        torch.testing.assert_close(extended_de_embeddings(model, [tc0], tc1, [s0, s1])[:, latent],
                                   extended_de_embedding(model, tc0, tc1, latent, (s0, s1)))
        torch.testing.assert_close(pullbacks(model, tc0, tc1, s1)[:, latent], pullback(model, tc0, tc1, latent, s1))
    last = torch.full((len(prompts),), prompts.shape[1] - 1)
    direct = upstream_contributions(model, tc0, tc1, 147, prompts, last, attention=False)
    torch.testing.assert_close(direct, input_dependent_connections(model, tc0, tc1, 147, prompts, -1))
    paths = sum(attention_path_contributions(model, tc0, tc1, 147, k, h, prompts, -1).sum(-1)
                for h in range(model.cfg.n_heads) for k in [84]) + direct[:, 84]
    torch.testing.assert_close(upstream_contributions(model, tc0, tc1, 147, prompts, last)[:, 84], paths, rtol=1e-4, atol=1e-5)
    ks = torch.tensor([84, 102, 14])
    torch.testing.assert_close(upstream_ablations(model, tc0, tc1, 147, prompts, last, ks),
                               upstream_ablation_effects(model, tc0, tc1, 147, prompts, -1, ks), rtol=1e-4, atol=1e-5)


def test_frozen_ablation_equals_direct_plus_attention_paths(bk, prompts):
    """With layer 1's scales and patterns frozen, zeroing an upstream latent changes the
    downstream pre-activation by exactly its linearised contribution."""
    model, tc0, tc1 = bk.model, bk.dictionary("transcoder", 0), bk.dictionary("transcoder", 1)
    names = ["blocks.1.ln1.hook_scale", "blocks.1.ln2.hook_scale", "blocks.1.attn.hook_pattern"]
    _, cache = model.run_with_cache(prompts, names_filter=names)
    last = torch.full((len(prompts),), prompts.shape[1] - 1)
    ks = torch.tensor([14, 102, 255, 84])
    def freeze(x: torch.Tensor, hook) -> torch.Tensor:  # the batched ablation stacks len(ks) + 1 copies
        return cache[hook.name].repeat(len(ks) + 1, *[1] * (x.ndim - 1))

    with model.hooks(fwd_hooks=[(name, freeze) for name in names]):
        frozen = upstream_ablations(model, tc0, tc1, 132, prompts, last, ks)
    linear = upstream_contributions(model, tc0, tc1, 132, prompts, last)[:, ks]
    torch.testing.assert_close(-frozen, linear, rtol=1e-4, atol=1e-5)


def test_ov_pullbacks_and_residual_writes_shapes(bk):
    model, tc0, tc1 = bk.model, bk.dictionary("transcoder", 0), bk.dictionary("transcoder", 1)
    attn = bk.dictionary("attn_sae", 1)
    assert residual_writes(model, attn).shape == (attn.cfg.d_sae, model.cfg.d_model)
    assert ov_pullbacks(model, tc0, tc1, 0, 1.0, 1.0).shape == (tc0.cfg.d_sae, tc1.cfg.d_sae)
    with pytest.raises(ValueError, match="ln2.hook_normalized"):
        ov_pullbacks(model, tc0, attn, 0, 1.0, 1.0)


def test_blind_view_hides_ground_truth(bk):
    view = blind(bk)
    corpus = view.world.corpus(4, 16, seed=0)
    assert torch.equal(corpus.tokens, bk.world.corpus(4, 16, seed=0).tokens)
    with pytest.raises(PermissionError, match="corpus labels"):
        corpus.labels["city"]
    with pytest.raises(PermissionError, match="task labels"):
        view.world.task_batch("ioi", 2).labels["ioi_end"]
    with pytest.raises(PermissionError, match="explanation table"):
        view.explanations.lookup("transcoder.1", 0)
    assert view.model is bk.model and view.world.label_names == bk.world.label_names


def test_blind_case_draws_come_from_the_pool():
    for seed in range(6):
        drawn = blind_case_latents(seed)
        assert len(drawn) == 2 and set(drawn) <= set(BLIND_CASE_POOL)
    assert blind_case_latents(0) == blind_case_latents(0)


EXPECTED = {29: ("greater_than_end", {159}), 147: ("century", {84}), 172: ("induction", {27, 33})}


@pytest.mark.parametrize("seed", [0])
def test_blind_case_pool_is_unambiguous(bk, seed):
    """The pool's ground truth, as the chapter's closing note states it."""
    truths = blind_case_truths(bk, BLIND_CASE_POOL, seed=seed)
    for latent, truth in truths.items():
        label, feeders = EXPECTED[latent]
        assert truth.label == label and unambiguous(truth), (latent, truth.label, truth.auroc, truth.precision)
        assert feeders & set(list(truth.effects)[:2]), (latent, list(truth.effects.items())[:3])
