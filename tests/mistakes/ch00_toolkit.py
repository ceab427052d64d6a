"""Plausible wrong implementations of chapter 00's exercises; each check must catch each one.

A mistake with ``signature=True`` (the default) is recognised by its result: the check runs
it on its own inputs (``utils.course.checking.signatures``) and fails with its diagnosis. The
others must be caught by a generic diagnosis or a watched side effect."""
from __future__ import annotations

import torch

from solutions.ch00_toolkit import latent_aurocs, latent_logit_effects, max_activating_contexts, reconstruction_metrics, top_k_latents
from utils.course.checking import Mistake


def _acts(model, sae, tokens):
    _, cache = model.run_with_cache_with_saes(tokens, saes=[sae])
    return cache[f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"]


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
    return _acts(model, sae, prompt)[0, pos].topk(k, largest=False)


def top_k_max_over_positions(model, sae, prompt, pos, k):
    return _acts(model, sae, prompt)[0].max(0).values.topk(k)


def top_k_unsorted(model, sae, prompt, pos, k):
    values, indices = top_k_latents(model, sae, prompt, pos, k)
    order = indices.argsort()
    return values[order], indices[order]


def top_k_before_relu(model, sae, prompt, pos, k):
    _, cache = model.run_with_cache(prompt, names_filter=sae.cfg.metadata.hook_name)
    _, inner = sae.run_with_cache(cache[sae.cfg.metadata.hook_name][0, pos])
    return inner[next(name for name in inner if name.endswith("hook_sae_acts_pre"))].topk(k)


# --- latent_logit_effects ------------------------------------------------------------


def effects_encoder(model, sae, latent):
    return sae.W_enc[:, latent] @ model.W_U


def effects_with_bias(model, sae, latent):
    return latent_logit_effects(model, sae, latent) + model.b_U


def effects_embedding(model, sae, latent):
    return sae.W_dec[latent] @ model.W_E.T


def effects_negated(model, sae, latent):
    return -latent_logit_effects(model, sae, latent)


def effects_with_decoder_bias(model, sae, latent):
    return (sae.W_dec[latent] + sae.b_dec) @ model.W_U


# --- max_activating_contexts ---------------------------------------------------------


def contexts_per_sequence(model, sae, latent, tokens, k=10, batch_size=64):
    acts = _acts(model, sae, tokens)[..., latent]
    best, pos = acts.max(-1)
    values, seqs = best.topk(k)
    return values, torch.stack([seqs, pos[seqs]], -1)


def contexts_drop_last_batch(model, sae, latent, tokens, k=10, batch_size=64):
    n_full = tokens.shape[0] // batch_size * batch_size
    return max_activating_contexts(model, sae, latent, tokens[:n_full], k, batch_size)


def contexts_wrong_unflatten(model, sae, latent, tokens, k=10, batch_size=64):
    acts = _acts(model, sae, tokens)[..., latent]
    values, flat = acts.flatten().topk(k)
    return values, torch.stack([flat // acts.shape[0], flat % acts.shape[0]], -1)


def contexts_pos_seq(model, sae, latent, tokens, k=10, batch_size=64):
    values, seq_pos = max_activating_contexts(model, sae, latent, tokens, k, batch_size)
    return values, seq_pos.flip(-1)


def contexts_first_batch_only(model, sae, latent, tokens, k=10, batch_size=64):
    return max_activating_contexts(model, sae, latent, tokens[:batch_size], k, batch_size)


def contexts_positions_after_bos(model, sae, latent, tokens, k=10, batch_size=64):
    values, seq_pos = max_activating_contexts(model, sae, latent, tokens, k, batch_size)
    return values, seq_pos - torch.tensor([0, 1])  # "positions counted from the first real token"


# --- reconstruction_metrics ----------------------------------------------------------


def metrics_with_error_term(model, sae, tokens):
    with model.saes(saes=[sae], use_error_term=True):
        spliced = model(tokens, return_type="loss").item()
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
    m = reconstruction_metrics(model, sae, tokens)
    m["l0"] = (_acts(model, sae, tokens) > 0).float().sum(-1).mean().item()
    return m


def metrics_uncentered_variance(model, sae, tokens):
    hook = sae.cfg.metadata.hook_name
    _, cache = model.run_with_cache_with_saes(tokens, saes=[sae])
    x, x_hat = cache[f"{hook}.hook_sae_input"][:, 1:], cache[f"{hook}.hook_sae_recons"][:, 1:]
    m = reconstruction_metrics(model, sae, tokens)
    m["explained_variance"] = 1 - ((x - x_hat).pow(2).sum() / x.pow(2).sum()).item()
    return m


def metrics_mean_ablation_baseline(model, sae, tokens):
    hook = sae.cfg.metadata.hook_name
    m = reconstruction_metrics(model, sae, tokens)
    mean_hook = lambda act, hook: act.mean((0, 1), keepdim=True).expand_as(act)  # noqa: E731
    m["ce_zero"] = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(hook, mean_hook)]).item()
    m["ce_recovered"] = (m["ce_zero"] - m["ce_spliced"]) / (m["ce_zero"] - m["ce_clean"])
    return m


def metrics_l0_tensor(model, sae, tokens):
    m = reconstruction_metrics(model, sae, tokens)
    m["l0"] = torch.tensor(m["l0"])
    return m


def metrics_losses_after_bos(model, sae, tokens):
    m = reconstruction_metrics(model, sae, tokens)
    m["ce_clean"] = model(tokens, return_type="loss", loss_per_token=True)[:, 1:].mean().item()
    return m


def _variance_explained(model, sae, tokens, keep, centre):
    hook = sae.cfg.metadata.hook_name
    _, cache = model.run_with_cache_with_saes(tokens, saes=[sae])
    x, x_hat = cache[f"{hook}.hook_sae_input"][:, keep:], cache[f"{hook}.hook_sae_recons"][:, keep:]
    m = reconstruction_metrics(model, sae, tokens)
    m["explained_variance"] = 1 - ((x - x_hat) ** 2).sum().item() / ((x - centre(x)) ** 2).sum().item()
    return m


def metrics_variance_with_bos(model, sae, tokens):
    return _variance_explained(model, sae, tokens, 0, lambda x: x.flatten(0, 1).mean(0))


def metrics_variance_scalar_centre(model, sae, tokens):
    return _variance_explained(model, sae, tokens, 1, lambda x: x.mean())


def metrics_variance_per_position(model, sae, tokens):
    return _variance_explained(model, sae, tokens, 1, lambda x: x.mean(0))


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


def aurocs_ties_by_order(acts, labels):
    order = torch.arange(len(acts), dtype=acts.dtype)[:, None] * 1e-6  # later tokens win ties
    pos, neg = (acts + order)[labels], (acts + order)[~labels]
    return (pos[:, None] > neg[None]).float().mean((0, 1))


MISTAKES = {
    "top_k_latents": [
        Mistake(top_k_forgets_bos, "top latents at position", signature=False),
        Mistake(top_k_swapped, "you returned (indices, values): return (values, indices)", signature=False),
        Mistake(top_k_leaves_sae, "left an SAE at", signature=False),
        Mistake(top_k_smallest, "these are the k smallest activations: take the largest (topk's default)"),
        Mistake(top_k_max_over_positions, "you took each latent's maximum over all positions: read the latents "
                "at position `pos` only"),
        Mistake(top_k_unsorted, "values should be in decreasing order (topk's default sorted=True)", signature=False),
        Mistake(top_k_before_relu, "a ReLU is missing", signature=False),
    ],
    "latent_logit_effects": [
        Mistake(effects_encoder, "this is the encoder direction (W_enc[:, latent]); a latent writes its decoder "
                "row W_dec[latent]"),
        Mistake(effects_with_bias, "you added the unembedding bias b_U: the direct effect of the latent is "
                "W_dec[latent] @ W_U alone"),
        Mistake(effects_embedding, "this uses the embedding W_E; the logits come from the unembedding W_U"),
        Mistake(effects_negated, "wrong sign", signature=False),
        Mistake(effects_with_decoder_bias, "you included the decoder bias b_dec: it is written whatever the "
                "latents are, so it is no part of one latent's effect"),
    ],
    "max_activating_contexts": [
        Mistake(contexts_per_sequence, "you kept at most one context per sequence: take the top k over every "
                "(sequence, position), not the max of each sequence"),
        Mistake(contexts_drop_last_batch, "your contexts miss the last, smaller batch"),
        Mistake(contexts_wrong_unflatten, "flat indices were split with the wrong length"),
        Mistake(contexts_pos_seq, "(position, sequence)", signature=False),
        Mistake(contexts_first_batch_only, "your contexts come from the first batch only: loop over every batch"),
        Mistake(contexts_positions_after_bos, "every position is one too small", signature=False),
    ],
    "reconstruction_metrics": [
        Mistake(metrics_with_error_term, "use_error_term=True", signature=False),
        Mistake(metrics_inverted_recovered, "1 minus the right value", signature=False),
        Mistake(metrics_l0_fraction, "fraction of latents", signature=False),
        Mistake(metrics_l0_with_bos, "l0 includes the BOS", signature=False),
        Mistake(metrics_uncentered_variance, "divides by sum ||x||^2, uncentred", signature=False),
        Mistake(metrics_mean_ablation_baseline, "ce_zero is the loss with the activation replaced by its mean",
                signature=False),
        Mistake(metrics_l0_tensor, "l0 should be a Python float, got a 0-dim torch.Tensor", signature=False),
        Mistake(metrics_losses_after_bos, "ce_clean leaves out the first prediction", signature=False),
        Mistake(metrics_variance_with_bos, "explained_variance includes the BOS position", signature=False),
        Mistake(metrics_variance_scalar_centre, "centres x on one number", signature=False,
                coincides=("metrics_uncentered_variance",)),  # the residual stream's entries average near zero
        Mistake(metrics_variance_per_position, "centres x on each position's mean over the batch", signature=False),
    ],
    "latent_aurocs": [
        Mistake(aurocs_strict, "ties count as 0; they should count one half (ReLU latents are tied at zero "
                "on most tokens)"),
        Mistake(aurocs_ties_win, "ties count as 1; they should count one half"),
        Mistake(aurocs_flipped, "this is 1 - AUROC: positives and negatives are swapped"),
        Mistake(aurocs_over_all_pairs, "constant factor", signature=False),
        Mistake(aurocs_ties_by_order, "ties are not counted one half", signature=False),
    ],
}
