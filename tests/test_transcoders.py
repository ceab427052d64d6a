"""utils.transcoders: the library versions agree with chapter 04's references, the frozen
linearisation is exact, the blind view hides ground truth, the blind-case pool still meets
its criteria on the committed organism (the chapter's closing note quotes it), and the blind
case is graded the same for every seed the grader can use."""
from __future__ import annotations

import re

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
    blind_case_truths,
    de_embeddings,
    encoder_preacts,
    extended_de_embeddings,
    ln_scales,
    ov_pullbacks,
    pullbacks,
    residual_writes,
    tracked_label,
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


EXPECTED = {29: ("greater_than_end", {159}), 147: ("century", {84}), 172: ("induction", {27})}


def test_blind_case_pool_is_unambiguous(bk):
    """The pool's ground truth on the fixed corpus the check grades on, as the chapter's
    closing note states it."""
    truths = blind_case_truths(bk, BLIND_CASE_POOL)
    for latent, truth in truths.items():
        label, feeders = EXPECTED[latent]
        assert truth.label == label and unambiguous(truth), (latent, truth.label, truth.auroc, truth.precision)
        assert feeders == {truth.main_upstream}, (latent, list(truth.effects.items())[:3])


# Corpus seeds on which AUROC alone names `workplace` for latent 29 (found by scanning seeds
# 0..99 of 128 x 32 corpora; 7 of the 100 do); judged with precision, every seed agrees.
AUROC_ALONE_FAILS = (17, 70)


@pytest.mark.parametrize("seed", [*range(4), *AUROC_ALONE_FAILS])
def test_the_tracked_label_holds_on_other_corpora(bk, seed):
    """On small corpora of other seeds the label judged on AUROC and precision together is
    the same for every latent of the pool; on some of them AUROC alone is not."""
    truths = blind_case_truths(bk, BLIND_CASE_POOL, seed=seed, n_seqs=128, n_contexts=1, n_candidates=1)
    assert {latent: truth.label for latent, truth in truths.items()} == {k: v[0] for k, v in EXPECTED.items()}
    by_auroc = max(truths[29].scores, key=lambda name: truths[29].scores[name][0])
    assert (by_auroc == "workplace") == (seed in AUROC_ALONE_FAILS), (seed, by_auroc, truths[29].scores[by_auroc])


def test_tracked_label_weighs_precision_with_auroc():
    scores = {"broad": (0.95, 0.1), "narrow": (0.9, 0.6), "wider": (0.7, 0.6), "other": (0.5, 0.0)}
    assert tracked_label(scores) == "narrow"
    assert tracked_label({"only": (0.6, 0.0), "none": (0.5, 0.0)}) == "only"


def _refuse(n: int) -> int:
    raise AssertionError("the blind case's check drew an input with the grader's seed")


def test_blind_case_grade_is_the_same_for_every_grader_seed(monkeypatch):
    """The seeds the grader can use: 0 in a notebook, one of ``grading.SEED_OFFSETS`` drawn
    by ``grade``, any other given with ``--seed-offset``. The blind case's check draws
    nothing with them (``seed`` raises here if it is called) and grades on the fixed
    corpus's truth, computed once, so each answer gets one grade for all of them. Shown: the
    reference passes the grader's re-check at the ends of the drawn range and off it, and
    every catalogued mistake fails with its diagnosis at the far end."""
    import tests.checks.ch04_transcoders as checks
    from solutions.ch04_transcoders import blind_case_study
    from tests.mistakes.ch04_transcoders import MISTAKES
    from utils.course import checking, settings
    from utils.course.grading import SEED_OFFSETS

    monkeypatch.setattr(checks, "seed", _refuse)
    monkeypatch.setattr(checks, "_TRUTHS", {})  # earlier tests (float64, TF32 variants) leave theirs
    for offset in (0, SEED_OFFSETS[0], SEED_OFFSETS[-1], -7):
        checking.recheck(checks.check_blind_case_study, blind_case_study, blind_case_study, offset)
    truths = dict(checks._TRUTHS)
    assert len(truths) == 1, "one ground truth for every offset"
    with settings.strict_checks(), checking.check_settings(seed_offset=SEED_OFFSETS[-1]):
        for mistake in MISTAKES["blind_case_study"]:
            with pytest.raises(checking.CheckFailure, match=re.escape(mistake.diagnosis)):
                checks.check_blind_case_study(mistake.fn)
    assert checks._TRUTHS == truths


def _answer_with(latent: int, upstream: list[int]):
    """The reference's answers, with ``upstream`` for ``latent``."""
    from solutions.ch04_transcoders import blind_case_study

    def answer(bk, k):
        found = blind_case_study(bk, k)
        return {**found, "upstream": upstream} if k == latent else found
    return answer


def test_blind_case_checks_the_main_upstream_latent_and_the_order():
    """Built from the truth the check grades on: listing the largest connection alone where
    ablation ranks another latent first misses the main one; a small latent listed before
    one more than twice its size by both measures is out of order."""
    import tests.checks.ch04_transcoders as checks
    from utils.course import checking, settings

    bk = checking.backend()
    truths = checks._truths(bk)
    missed = ordered = 0
    with settings.strict_checks():
        for latent, truth in truths.items():
            biggest = max(abs(e) for e in truth.effects.values())
            linear = truth.contributions.abs()
            size = {k: (abs(e) / biggest, linear[k].item() / linear.max().item()) for k, e in truth.effects.items()}
            strongest = int(linear.argmax())
            if strongest != truth.main_upstream and size[truth.main_upstream][1] >= checks.MAIN:
                with pytest.raises(checking.CheckFailure, match=f"latent {latent}: you missed its main upstream latent "
                                                                 f"{truth.main_upstream}"):
                    checks.check_blind_case_study(_answer_with(latent, [strongest]))
                missed += 1
            small = [k for k, (a, c) in size.items() if max(a, c) >= checks.RELEVANT and
                     all(x < y / 2 for x, y in zip(size[k], size[strongest]))]
            if small and strongest != truth.main_upstream:
                with pytest.raises(checking.CheckFailure, match=f"latent {latent}: order the list by importance"):
                    checks.check_blind_case_study(_answer_with(latent, [truth.main_upstream, small[0], strongest]))
                ordered += 1
    assert missed and ordered, "the pool no longer exercises these rules: choose cases that do"
