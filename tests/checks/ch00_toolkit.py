"""Checks of chapter 00 (Toolkit). Each runs your function on the toy backend and compares
with known outputs recorded from the reference; a failure names the likely mistake."""
from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.backends import Backend, load_backend
from utils.checking import call, exercise_check, expect_close, expect_tensor, fail, known

CHAPTER = "ch00_toolkit"


def _toy() -> Backend:
    bk = load_backend("toy")
    bk.model.reset_saes()
    return bk


def _pair(out: Any, names: str) -> tuple[Any, Any]:
    if not isinstance(out, tuple) or len(out) != 2:
        fail(f"expected a tuple {names}, got {type(out).__name__}")
    return out


def _expect_detached(model: HookedSAETransformer) -> None:
    if model.acts_to_saes:
        model.reset_saes()
        fail(
            "your function left an SAE attached to the model (hooks are global state): splice it "
            "for one call with run_with_cache_with_saes, or call model.reset_saes() before returning"
        )


def _sae_acts(
    model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "batch pos"] | str
) -> tuple[Float[Tensor, "batch pos d_sae"], Float[Tensor, "batch pos d_sae"]]:
    """Post- and pre-ReLU latents, used only to recognise mistakes."""
    hook = sae.cfg.metadata.hook_name
    with torch.no_grad():
        _, cache = model.run_with_cache_with_saes(tokens, saes=[sae])
    return cache[f"{hook}.hook_sae_acts_post"], cache[f"{hook}.hook_sae_acts_pre"]


@exercise_check(CHAPTER)
def check_top_k_latents(top_k_latents: Any) -> None:
    bk = _toy()
    batch = bk.world.task_batch("ioi", 2, seed=0)
    cases = [("blocks.1.hook_resid_post", batch.prompts[0], -1, 5), ("blocks.0.hook_resid_post", batch.prompts[1], 3, 4)]
    for i, (hook, prompt, pos, k) in enumerate(cases):
        sae = bk.saes[hook]
        values, indices = _pair(call(top_k_latents, bk.model, sae, prompt, pos, k), "(values, indices)")
        _expect_detached(bk.model)
        if isinstance(values, Tensor) and isinstance(indices, Tensor) and not values.is_floating_point() and indices.is_floating_point():
            fail("you returned (indices, values): return (values, indices)")
        post, _ = _sae_acts(bk.model, sae, prompt)
        n_pos = post.shape[1]
        mistakes = {
            "these are the k smallest activations: take the largest (topk's default)": post[0, pos].topk(k, largest=False).values,
        }
        for p in range(n_pos):
            if p != pos % n_pos:
                mistakes[f"these are the top latents at position {p}, expected position {pos % n_pos} (BOS is position 0)"] = post[0, p].topk(k).values
        expect_tensor(values, known(f"values_{i}", values), name=f"values ({hook}, pos {pos})", dims="k", mistakes=mistakes)
        expect_tensor(indices, known(f"indices_{i}", indices), name=f"indices ({hook}, pos {pos})", dims="k")


@exercise_check(CHAPTER)
def check_latent_logit_effects(latent_logit_effects: Any) -> None:
    bk = _toy()
    model = bk.model
    for i, (hook, latent) in enumerate([("blocks.1.hook_resid_post", 3), ("blocks.0.hook_resid_post", 17)]):
        sae = bk.saes[hook]
        got = call(latent_logit_effects, model, sae, latent)
        _expect_detached(model)
        with torch.no_grad():
            mistakes = {
                "this is the encoder direction (W_enc[:, latent]); a latent writes its decoder row W_dec[latent]": sae.W_enc[:, latent] @ model.W_U,
                "you added the unembedding bias b_U: the direct effect of the latent is W_dec[latent] @ W_U alone": sae.W_dec[latent] @ model.W_U + model.b_U,
                "this uses the embedding W_E; the logits come from the unembedding W_U": sae.W_dec[latent] @ model.W_E.T,
            }
        expect_tensor(got, known(f"effects_{i}", got), name=f"effects of latent {latent} ({hook})", dims="d_vocab", mistakes=mistakes)


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
    bk = _toy()
    sae = bk.saes["blocks.1.hook_resid_post"]
    tokens = bk.world.corpus(n_seqs=70, seq_len=24, seed=3).tokens  # 70 = 4 batches of 16 + 6
    post, _ = _sae_acts(bk.model, sae, tokens)
    k, batch_size = 8, 16
    latent = known("latent", _latent_firing_twice_per_sequence(post, k))
    # Strongest sequences last, so a loop that skips the last, smaller batch misses them.
    order = post[..., latent].max(-1).values.argsort()
    tokens, post = tokens[order], post[order]
    values, seq_pos = _pair(call(max_activating_contexts, bk.model, sae, latent, tokens, k, batch_size), "(values, seq_pos)")
    _expect_detached(bk.model)
    n_seqs, n_pos = tokens.shape
    n_full = n_seqs // batch_size * batch_size
    per_sequence = post[..., latent].max(-1).values.topk(k).values
    expect_tensor(
        values, known("values", values), name="values", dims="k",
        mistakes={
            "you kept at most one context per sequence: take the top k over every (sequence, position), not the max of each sequence": per_sequence,
            f"your contexts miss the last, smaller batch (sequences {n_full}-{n_seqs - 1}): check your range over batches": post[:n_full, :, latent].flatten().topk(k).values,
        },
    )
    # Identical prefixes give exactly tied activations; compare rows in a canonical order.
    want_where = _canonical(values, known("seq_pos", seq_pos))
    if isinstance(seq_pos, Tensor) and seq_pos.shape == want_where.shape and not seq_pos.is_floating_point():
        seq_pos = _canonical(values, seq_pos)
    flat = want_where[:, 0] * n_pos + want_where[:, 1]
    expect_tensor(
        seq_pos, want_where, name="seq_pos", dims="k two",
        mistakes={
            "each row should be (sequence, position); yours looks like (position, sequence)": want_where.flip(-1),
            f"flat indices were split with the wrong length: sequence = flat // n_pos, position = flat % n_pos (n_pos = {n_pos})": torch.stack([flat // n_seqs, flat % n_seqs], -1),
        },
    )


def _canonical(values: Float[Tensor, " k"], seq_pos: Int[Tensor, "k 2"]) -> Int[Tensor, "k 2"]:
    """Rows sorted by rounded value (descending), then sequence, then position."""
    keys = [(-round(v, 4), s, p) for v, (s, p) in zip(values.tolist(), seq_pos.tolist())]
    return seq_pos[sorted(range(len(keys)), key=keys.__getitem__)]


@exercise_check(CHAPTER)
def check_reconstruction_metrics(reconstruction_metrics: Any) -> None:
    bk = _toy()
    sae = bk.saes["blocks.1.hook_resid_post"]
    tokens = bk.world.corpus(n_seqs=16, seq_len=32, seed=4).tokens
    got = call(reconstruction_metrics, bk.model, sae, tokens)
    _expect_detached(bk.model)
    keys = ["l0", "explained_variance", "ce_clean", "ce_spliced", "ce_zero", "ce_recovered"]
    if not isinstance(got, dict):
        fail(f"expected a dict with keys {keys}, got {type(got).__name__}")
    missing = [key for key in keys if key not in got]
    if missing:
        fail(f"the dict lacks keys {missing} (expected {keys})")
    want = {key: known(key, float(got[key])) for key in keys}
    expect_close(got["ce_clean"], want["ce_clean"], name="ce_clean")
    if abs(float(got["ce_spliced"]) - float(got["ce_clean"])) < 1e-6:
        fail("ce_spliced equals ce_clean: the SAE was spliced with use_error_term=True, or not spliced at all")
    expect_close(got["ce_spliced"], want["ce_spliced"], name="ce_spliced")
    expect_close(got["ce_zero"], want["ce_zero"], name="ce_zero")
    if abs(float(got["ce_recovered"]) - (1 - want["ce_recovered"])) < 1e-4:
        fail("ce_recovered looks like 1 minus the right value: (CE_zero - CE_spliced) / (CE_zero - CE_clean)")
    expect_close(got["ce_recovered"], want["ce_recovered"], name="ce_recovered")
    with torch.no_grad():  # one spliced pass gives what the l0 and variance mistakes would use
        _, cache = bk.model.run_with_cache_with_saes(tokens, saes=[sae])
    hook = sae.cfg.metadata.hook_name
    post = cache[f"{hook}.hook_sae_acts_post"]
    if abs(float(got["l0"]) - (post > 0).float().sum(-1).mean().item()) < 1e-4:
        fail("l0 includes the BOS position; leave position 0 out")
    if 0 <= float(got["l0"]) <= 1 < want["l0"]:
        fail("l0 should count active latents per token, not the fraction of latents active")
    expect_close(got["l0"], want["l0"], name="l0")
    x, x_hat = cache[f"{hook}.hook_sae_input"][:, 1:], cache[f"{hook}.hook_sae_recons"][:, 1:]
    uncentered = 1 - ((x - x_hat).pow(2).sum() / x.pow(2).sum()).item()
    if abs(float(got["explained_variance"]) - uncentered) < 1e-4:
        fail("explained_variance divides by sum ||x||^2; the denominator is the spread around the mean, sum ||x - mean(x)||^2")
    expect_close(got["explained_variance"], want["explained_variance"], name="explained_variance")


def _aurocs_by_counting(acts: Tensor, labels: Tensor, tie: float) -> Tensor:
    """Slow AUROC by pairwise counting with ties weighted ``tie``: recognises tie mistakes."""
    pos, neg = acts[labels], acts[~labels]  # [P, d], [N, d]
    greater = (pos[:, None] > neg[None]).float() + tie * (pos[:, None] == neg[None]).float()
    return greater.mean((0, 1))


@exercise_check(CHAPTER)
def check_latent_aurocs(latent_aurocs: Any) -> None:
    bk = _toy()
    small_acts = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.0]])
    small_labels = torch.tensor([True, False, True, False, False])
    tokens = bk.world.corpus(n_seqs=32, seq_len=24, seed=5)
    post, _ = _sae_acts(bk.model, bk.saes["blocks.1.hook_resid_post"], tokens.tokens)
    real_acts = post[:, 1:].flatten(0, 1)
    real_labels = tokens.labels["name_repeated"][:, 1:].flatten()
    for i, (acts, labels) in enumerate([(small_acts, small_labels), (real_acts, real_labels)]):
        got = call(latent_aurocs, acts.clone(), labels.clone())
        want = known(f"aurocs_{i}", got)
        mistakes = {
            "ties count as 0; they should count one half (ReLU latents are tied at zero on most tokens)": _aurocs_by_counting(acts, labels, 0.0),
            "ties count as 1; they should count one half": _aurocs_by_counting(acts, labels, 1.0),
            "this is 1 - AUROC: positives and negatives are swapped": 1 - want,
        }
        expect_tensor(got, want, name=f"aurocs (case {i + 1})", dims="d_sae", mistakes=mistakes)
