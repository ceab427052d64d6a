"""Checks of chapter 00 (Toolkit). Each runs your function on the checks' own toy backend,
watches what it does, and compares with known outputs recorded from the reference; a
failure names the likely mistake."""
from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from tests.checks import expect_explained_variance
from tests.mistakes.ch00_toolkit import MISTAKES
from utils.backends import Backend
from utils.course.checking import (
    backend,
    exercise_check,
    expect_close,
    expect_tensor,
    fail,
    known,
    python_number,
    run,
    seed,
    signatures,
)
from utils.course.compare import tolerance

CHAPTER = "ch00_toolkit"


def _pair(out: Any, names: str) -> tuple[Any, Any]:
    if not isinstance(out, tuple) or len(out) != 2:
        fail(f"expected a tuple {names}, got {type(out).__name__}")
    return out


def _sae_acts(model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "batch pos"] | str) -> Float[Tensor, "batch pos d_sae"]:
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    with torch.no_grad():
        _, cache = model.run_with_cache_with_saes(tokens, saes=[sae], names_filter=name)
    return cache[name]


@exercise_check(CHAPTER)
def check_top_k_latents(top_k_latents: Any) -> None:
    bk = backend()
    batch = bk.world.task_batch("ioi", 3, seed=seed(0))
    cases = [(bk.saes["blocks.1.hook_resid_post"], batch.prompts[0], -1, 5),
             (bk.saes["blocks.0.hook_resid_post"], batch.prompts[1], 3, 4),
             (bk.attn_saes["blocks.0.attn.hook_z"], batch.prompts[2], -2, 3)]
    # k beyond the active latents: the last values are zeros (ReLU), whatever comes before the ReLU
    sae = bk.saes["blocks.0.hook_resid_post"]
    active = int((_sae_acts(bk.model, sae, batch.prompts[0])[0, 2] > 0).sum())
    cases.append((sae, batch.prompts[0], 2, known("k_beyond_active", active + 4)))
    for i, (sae, prompt, pos, k) in enumerate(cases):
        hook = sae.cfg.metadata.hook_name
        values, indices = _pair(run(top_k_latents, bk, bk.model, sae, prompt, pos, k), "(values, indices)")
        if isinstance(values, Tensor) and isinstance(indices, Tensor) and not values.is_floating_point() and indices.is_floating_point():
            fail("you returned (indices, values): return (values, indices)")
        post = _sae_acts(bk.model, sae, prompt)[0]  # [pos, d_sae]
        n_pos = post.shape[0]
        mistakes = dict(signatures(MISTAKES["top_k_latents"], bk.model, sae, prompt, pos, k).select(lambda out: out[0]))
        for p in range(n_pos):
            if p != pos % n_pos:
                mistakes[f"these are the top latents at position {p}, expected position {pos % n_pos} "
                         "(BOS is position 0)"] = post[p].topk(k).values
        if isinstance(values, Tensor) and values.ndim == 1 and len(values) > 1 and not torch.all(values[:-1] >= values[1:]):
            fail("values should be in decreasing order (topk's default sorted=True)")
        want_values = known(f"values_{i}", values)
        expect_tensor(values, want_values, name=f"values ({hook}, pos {pos})", dims="k", mistakes=mistakes)
        want_indices = known(f"indices_{i}", indices)
        if not _tied_top_k(indices, post[pos % n_pos], want_values):
            expect_tensor(indices, want_indices, name=f"indices ({hook}, pos {pos})", dims="k")


def _tied_top_k(indices: Any, acts: Float[Tensor, " d_sae"], want: Float[Tensor, " k"]) -> bool:
    """True if ``indices`` are a correct top-k up to near ties: distinct latents whose
    activations are the expected values (within tolerance), whatever the order of ties."""
    if not isinstance(indices, Tensor) or indices.is_floating_point() or indices.shape != want.shape:
        return False
    if len(set(indices.tolist())) != len(indices) or not (0 <= indices.min() and indices.max() < len(acts)):
        return False
    tol = tolerance().atol * want.abs().max() + tolerance().rtol * want.abs()
    return bool(((acts[indices.cpu()].cpu().float() - want).abs() <= tol).all())


@exercise_check(CHAPTER)
def check_latent_logit_effects(latent_logit_effects: Any) -> None:
    bk = backend()
    for i, (hook, latent) in enumerate([("blocks.1.hook_resid_post", 3), ("blocks.0.hook_resid_post", 17 + seed(0) % 200)]):
        sae = bk.saes[hook]
        got = run(latent_logit_effects, bk, bk.model, sae, latent)
        expect_tensor(got, known(f"effects_{i}", got), name=f"effects of latent {latent} ({hook})", dims="d_vocab",
                      mistakes=signatures(MISTAKES["latent_logit_effects"], bk.model, sae, latent))


def _latent_firing_twice_per_sequence(post: Float[Tensor, "batch pos d_sae"], k: int) -> int:
    """The most frequently active latent whose top-k contexts repeat a sequence, so that a
    per-sequence maximum gives a different answer from the top-k over all positions."""
    flat = post.flatten(0, 1)  # [(batch pos), d_sae]
    seqs = flat.topk(k, dim=0).indices // post.shape[1]  # [k, d_sae]
    repeats = torch.tensor([len(set(col.tolist())) < k for col in seqs.T])
    frequency = (post > 0).float().mean((0, 1))
    return int(torch.where(repeats, frequency, -1.0).argmax())


@exercise_check(CHAPTER)
def check_max_activating_contexts(max_activating_contexts: Any) -> None:
    bk = backend()
    sae = bk.saes["blocks.1.hook_resid_post"]
    tokens = bk.world.corpus(n_seqs=70, seq_len=24, seed=seed(3)).tokens  # 70 = 4 batches of 16 + 6
    post = _sae_acts(bk.model, sae, tokens)
    k, batch_size = 8, 16
    latent = known("latent", _latent_firing_twice_per_sequence(post, k))
    # Strongest sequences last, so a loop that skips the last, smaller batch misses them.
    order = post[..., latent].max(-1).values.argsort()
    tokens, post = tokens[order], post[order]
    values, seq_pos = _pair(run(max_activating_contexts, bk, bk.model, sae, latent, tokens, k, batch_size),
                            "(values, seq_pos)")
    n_seqs, n_pos = tokens.shape
    mistakes = signatures(MISTAKES["max_activating_contexts"], bk.model, sae, latent, tokens, k, batch_size)
    expect_tensor(values, known("values", values), name="values", dims="k", mistakes=mistakes.select(lambda out: out[0]))
    # Tied activations (identical prefixes) may come in any order: compare the activations
    # at the returned places, then the places in a canonical order.
    want_where = _canonical(post[..., latent], known("seq_pos", seq_pos))
    if isinstance(seq_pos, Tensor) and seq_pos.shape == want_where.shape and not seq_pos.is_floating_point():
        if torch.equal(_canonical(post[..., latent], seq_pos.flip(-1)), want_where):
            fail("each row should be (sequence, position); yours looks like (position, sequence)")
        for step in (1, -1):
            moved = seq_pos.cpu() + torch.tensor([0, step])
            if torch.equal(_canonical(post[..., latent], moved), want_where):
                fail(f"every position is {'one too small' if step == 1 else 'one too large'}: positions count from "
                     "BOS at 0 (slicing BOS off shifts them by one: add it back)")
        seq_pos = _canonical(post[..., latent], seq_pos)
    expect_tensor(seq_pos, want_where, name="seq_pos", dims="k two",
                  mistakes=mistakes.select(lambda out: _canonical(post[..., latent], out[1])))


def _canonical(acts: Float[Tensor, "n_seqs n_pos"], seq_pos: Int[Tensor, "k 2"]) -> Int[Tensor, "k 2"]:
    """Rows sorted by activation (rounded, descending), then sequence, then position."""
    rows = seq_pos.cpu().tolist()
    if not all(0 <= s < acts.shape[0] and 0 <= p < acts.shape[1] for s, p in rows):
        return seq_pos
    keys = [(-round(acts[s, p].item(), 3), s, p) for s, p in rows]
    return seq_pos[sorted(range(len(keys)), key=keys.__getitem__)]


@exercise_check(CHAPTER)
def check_reconstruction_metrics(reconstruction_metrics: Any) -> None:
    bk = backend()
    tokens = bk.world.corpus(n_seqs=16, seq_len=32, seed=seed(4)).tokens
    for i, hook in enumerate(["blocks.1.hook_resid_post", "blocks.0.hook_resid_post"]):
        sae = bk.saes[hook]
        got = run(reconstruction_metrics, bk, bk.model, sae, tokens)
        keys = ["l0", "explained_variance", "ce_clean", "ce_spliced", "ce_zero", "ce_recovered"]
        if not isinstance(got, dict):
            fail(f"expected a dict with keys {keys}, got {type(got).__name__}")
        missing = [key for key in keys if key not in got]
        if missing:
            fail(f"the dict lacks keys {missing} (expected {keys})")
        got = {key: python_number(got[key], key) for key in keys}  # "a dict of Python floats"
        want = {key: known(f"{key}_{i}", float(got[key])) for key in keys}
        _expect_losses(bk, sae, tokens, got, want)
        _expect_l0_and_variance(bk, sae, tokens, got, want)


def _expect_losses(bk: Backend, sae: SAE, tokens: Tensor, got: dict[str, Any], want: dict[str, float]) -> None:
    losses = max(want["ce_clean"], want["ce_zero"])
    if abs(got["ce_clean"] - want["ce_clean"]) > 1e-3 * losses:
        with torch.no_grad():
            per_token = bk.model(tokens, return_type="loss", loss_per_token=True)  # [batch, pos - 1]
        if abs(got["ce_clean"] - per_token[:, 1:].mean().item()) < 1e-4 * losses:
            fail("ce_clean leaves out the first prediction (the one made at BOS): BOS is left out of l0 and "
                 "explained_variance only; the losses are the model's mean loss over every prediction")
    expect_close(got["ce_clean"], want["ce_clean"], name="ce_clean")
    if abs(float(got["ce_spliced"]) - float(got["ce_clean"])) < 1e-6 * losses:
        fail("ce_spliced equals ce_clean: the SAE was spliced with use_error_term=True, or not spliced at all")
    expect_close(got["ce_spliced"], want["ce_spliced"], name="ce_spliced")
    if abs(float(got["ce_zero"]) - want["ce_zero"]) > 1e-3 * losses:
        hook = sae.cfg.metadata.hook_name
        with torch.no_grad():
            mean = bk.model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[
                (hook, lambda act, hook: act.mean((0, 1), keepdim=True).expand_as(act))]).item()
        if abs(float(got["ce_zero"]) - mean) < 1e-3 * losses:
            fail("ce_zero is the loss with the activation replaced by its mean: replace it by zeros")
    expect_close(got["ce_zero"], want["ce_zero"], name="ce_zero")
    if abs(float(got["ce_recovered"]) - (1 - want["ce_recovered"])) < 1e-3:
        fail("ce_recovered looks like 1 minus the right value: (CE_zero - CE_spliced) / (CE_zero - CE_clean)")
    expect_close(got["ce_recovered"], want["ce_recovered"], name="ce_recovered", scale=losses / (want["ce_zero"] - want["ce_clean"]))


def _expect_l0_and_variance(bk: Backend, sae: SAE, tokens: Tensor, got: dict[str, Any], want: dict[str, float]) -> None:
    hook = sae.cfg.metadata.hook_name
    with torch.no_grad():  # one spliced pass gives what the l0 and variance mistakes would use
        _, cache = bk.model.run_with_cache_with_saes(tokens, saes=[sae])
    post = cache[f"{hook}.hook_sae_acts_post"]
    if abs(float(got["l0"]) - want["l0"]) > 1e-3 * want["l0"]:
        if abs(float(got["l0"]) - (post > 0).float().sum(-1).mean().item()) < 1e-3 * want["l0"]:
            fail("l0 includes the BOS position; leave position 0 out")
        if 0 <= float(got["l0"]) <= 1 < want["l0"]:
            fail("l0 should count active latents per token, not the fraction of latents active")
    expect_close(got["l0"], want["l0"], name="l0")
    x, x_hat = cache[f"{hook}.hook_sae_input"], cache[f"{hook}.hook_sae_recons"]
    expect_explained_variance(got["explained_variance"], want["explained_variance"], x, x_hat, "x")


@exercise_check(CHAPTER)
def check_latent_aurocs(latent_aurocs: Any) -> None:
    bk = backend()
    dtype = tolerance().dtype
    small_acts = torch.tensor([[0.0, 1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 2.0, 1.0, 2.0], [2.0, 0.0, 0.0, 0.0, 0.0],
                               [0.0, 3.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0, 0.0]], dtype=dtype)
    small_labels = torch.tensor([True, False, True, False, False])
    tokens = bk.world.corpus(n_seqs=32, seq_len=24, seed=seed(5))
    post = _sae_acts(bk.model, bk.saes["blocks.1.hook_resid_post"], tokens.tokens)
    # The activations themselves are known outputs: a latent within float noise of zero is
    # active on one machine and off on another, which moves its AUROC (ties count 1/2). A
    # learner's AUROC is judged on the very numbers the reference saw.
    real_acts = known("acts", post[:, 1:].flatten(0, 1)[:, :64].float()).to(dtype)
    real_labels = tokens.labels["name_repeated"][:, 1:].flatten()
    for i, (acts, labels) in enumerate([(small_acts, small_labels), (real_acts, real_labels)]):
        got = run(latent_aurocs, bk, acts.clone(), labels.clone())
        want = known(f"aurocs_{i}", got)
        mistakes = signatures(MISTAKES["latent_aurocs"], acts, labels)
        _expect_ties_half(got, want, acts, labels, mistakes)
        expect_tensor(got, want, name=f"aurocs (case {i + 1})", dims="d_sae", mistakes=mistakes)


def _expect_ties_half(got: Any, want: Tensor, acts: Tensor, labels: Tensor, mistakes: Any) -> None:
    """Ties count one half: an AUROC that lies between counting ties as 0 and as 1, and
    differs only for latents with ties, counts them some other way."""
    if not isinstance(got, Tensor) or got.shape != want.shape or not got.is_floating_point():
        return
    got = got.detach().cpu().to(want.dtype)
    pos, neg = acts[labels].cpu().to(want.dtype), acts[~labels].cpu().to(want.dtype)
    low = (pos[:, None] > neg[None]).to(want.dtype).mean((0, 1))
    high = (pos[:, None] >= neg[None]).to(want.dtype).mean((0, 1))
    tol = 1e-4
    wrong = (got - want).abs() > tol
    if not wrong.any() or any(r() is not None and torch.allclose(got, r().cpu().to(want.dtype), atol=tol)
                              for r in mistakes.values()):
        return  # right, or a catalogued mistake (its own diagnosis)
    if ((got >= low - tol) & (got <= high + tol)).all() and not (wrong & (high - low <= tol)).any():
        fail(f"ties are not counted one half: for {int(wrong.sum())} latents with tied activations (ReLU zeros) your "
             "AUROC lies between counting ties as 0 and as 1 (ranks that break ties by their order?); count each "
             "tied (positive, negative) pair as 1/2, e.g. with average ranks")
