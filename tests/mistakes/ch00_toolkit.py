"""Plausible wrong implementations of chapter 00's exercises; each check must catch each one."""
from __future__ import annotations

import torch

from solutions.ch00_toolkit import latent_aurocs, latent_logit_effects, max_activating_contexts, reconstruction_metrics, top_k_latents
from tests.harness import Mistake


# --- top_k_latents -------------------------------------------------------------------


def top_k_forgets_bos(model, sae, prompt, pos, k):
    return top_k_latents(model, sae, prompt, pos - 1, k)


def top_k_swapped(model, sae, prompt, pos, k):
    values, indices = top_k_latents(model, sae, prompt, pos, k)
    return indices, values


def top_k_leaves_sae(model, sae, prompt, pos, k):
    model.add_sae(sae)
    _, cache = model.run_with_cache(prompt)
    return cache[f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"][0, pos].topk(k)


def top_k_smallest(model, sae, prompt, pos, k):
    _, cache = model.run_with_cache_with_saes(prompt, saes=[sae])
    return cache[f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"][0, pos].topk(k, largest=False)


# --- latent_logit_effects ------------------------------------------------------------


def effects_encoder(model, sae, latent):
    return sae.W_enc[:, latent] @ model.W_U


def effects_with_bias(model, sae, latent):
    return latent_logit_effects(model, sae, latent) + model.b_U


def effects_embedding(model, sae, latent):
    return sae.W_dec[latent] @ model.W_E.T


def effects_negated(model, sae, latent):
    return -latent_logit_effects(model, sae, latent)


# --- max_activating_contexts ---------------------------------------------------------


def contexts_per_sequence(model, sae, latent, tokens, k=10, batch_size=64):
    _, cache = model.run_with_cache_with_saes(tokens, saes=[sae])
    acts = cache[f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"][..., latent]
    best, pos = acts.max(-1)
    values, seqs = best.topk(k)
    return values, torch.stack([seqs, pos[seqs]], -1)


def contexts_drop_last_batch(model, sae, latent, tokens, k=10, batch_size=64):
    n_full = tokens.shape[0] // batch_size * batch_size
    return max_activating_contexts(model, sae, latent, tokens[:n_full], k, batch_size)


def contexts_wrong_unflatten(model, sae, latent, tokens, k=10, batch_size=64):
    _, cache = model.run_with_cache_with_saes(tokens, saes=[sae])
    acts = cache[f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"][..., latent]
    values, flat = acts.flatten().topk(k)
    return values, torch.stack([flat // acts.shape[0], flat % acts.shape[0]], -1)


def contexts_pos_seq(model, sae, latent, tokens, k=10, batch_size=64):
    values, seq_pos = max_activating_contexts(model, sae, latent, tokens, k, batch_size)
    return values, seq_pos.flip(-1)


# --- reconstruction_metrics ----------------------------------------------------------


def metrics_with_error_term(model, sae, tokens):
    model.add_sae(sae, use_error_term=True)
    try:
        spliced = model(tokens, return_type="loss").item()
    finally:
        model.reset_saes()
    m = reconstruction_metrics(model, sae, tokens)
    m["ce_spliced"] = spliced
    m["ce_recovered"] = (m["ce_zero"] - spliced) / (m["ce_zero"] - m["ce_clean"])
    return m


def metrics_inverted_recovered(model, sae, tokens):
    m = reconstruction_metrics(model, sae, tokens)
    m["ce_recovered"] = (m["ce_spliced"] - m["ce_clean"]) / (m["ce_zero"] - m["ce_clean"])
    return m


def metrics_l0_fraction(model, sae, tokens):
    m = reconstruction_metrics(model, sae, tokens)
    m["l0"] = m["l0"] / sae.cfg.d_sae
    return m


def metrics_l0_with_bos(model, sae, tokens):
    _, cache = model.run_with_cache_with_saes(tokens, saes=[sae])
    m = reconstruction_metrics(model, sae, tokens)
    m["l0"] = (cache[f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"] > 0).float().sum(-1).mean().item()
    return m


def metrics_uncentered_variance(model, sae, tokens):
    hook = sae.cfg.metadata.hook_name
    _, cache = model.run_with_cache_with_saes(tokens, saes=[sae])
    x, x_hat = cache[f"{hook}.hook_sae_input"][:, 1:], cache[f"{hook}.hook_sae_recons"][:, 1:]
    m = reconstruction_metrics(model, sae, tokens)
    m["explained_variance"] = 1 - ((x - x_hat).pow(2).sum() / x.pow(2).sum()).item()
    return m


# --- latent_aurocs -------------------------------------------------------------------


def aurocs_strict(acts, labels):
    pos, neg = acts[labels], acts[~labels]
    return (pos[:, None] > neg[None]).float().mean((0, 1))


def aurocs_ties_win(acts, labels):
    pos, neg = acts[labels], acts[~labels]
    return (pos[:, None] >= neg[None]).float().mean((0, 1))


def aurocs_flipped(acts, labels):
    return latent_aurocs(acts, ~labels)


def aurocs_over_all_pairs(acts, labels):
    return latent_aurocs(acts, labels) * labels.sum() * (~labels).sum() / labels.numel() ** 2


MISTAKES = {
    "top_k_latents": [
        Mistake(top_k_forgets_bos, "top latents at position"),
        Mistake(top_k_swapped, "(indices, values)"),
        Mistake(top_k_leaves_sae, "left an SAE attached"),
        Mistake(top_k_smallest, "smallest"),
    ],
    "latent_logit_effects": [
        Mistake(effects_encoder, "encoder direction"),
        Mistake(effects_with_bias, "unembedding bias"),
        Mistake(effects_embedding, "embedding W_E"),
        Mistake(effects_negated, "wrong sign"),
    ],
    "max_activating_contexts": [
        Mistake(contexts_per_sequence, "at most one context per sequence"),
        Mistake(contexts_drop_last_batch, "last, smaller batch"),
        Mistake(contexts_wrong_unflatten, "split with the wrong length"),
        Mistake(contexts_pos_seq, "(position, sequence)"),
    ],
    "reconstruction_metrics": [
        Mistake(metrics_with_error_term, "use_error_term=True"),
        Mistake(metrics_inverted_recovered, "1 minus the right value"),
        Mistake(metrics_l0_fraction, "fraction of latents"),
        Mistake(metrics_l0_with_bos, "includes the BOS"),
        Mistake(metrics_uncentered_variance, "spread around the mean"),
    ],
    "latent_aurocs": [
        Mistake(aurocs_strict, "ties count as 0"),
        Mistake(aurocs_ties_win, "ties count as 1"),
        Mistake(aurocs_flipped, "1 - AUROC"),
        Mistake(aurocs_over_all_pairs, "constant factor"),
    ],
}
