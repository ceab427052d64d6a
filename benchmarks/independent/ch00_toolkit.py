"""Chapter 00, written blind: plausible learner implementations of the five toolkit exercises.

Each wrong one carries the phrases that would name its mistake; each correct one computes the
reference's answer another way. Written from the exercise text and the library only.
"""
from __future__ import annotations

import einops
import torch

from benchmarks.independent import correct, wrong
from utils.progress import progress

CH = "ch00_toolkit"


def _acts_post(model, sae, tokens_or_prompt):
    """The SAE's latents on a prompt (or tokens), spliced for one call."""
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    _, cache = model.run_with_cache_with_saes(tokens_or_prompt, saes=[sae], names_filter=name)
    return cache[name]


# ---------------------------------------------------------------------------------------
# top_k_latents(model, sae, prompt, pos, k) -> (values [k], indices [k])


@wrong(CH, "top_k_latents", "reads the pre-ReLU latents (hook_sae_acts_pre)",
       names=('pre-relu', 'pre relu', 'acts_pre', 'before the relu', 'relu', 'negative'))
def top_k_pre_relu(model, sae, prompt, pos, k):
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_pre"
    _, cache = model.run_with_cache_with_saes(prompt, saes=[sae])
    return cache[name][0, pos].topk(k)


@wrong(CH, "top_k_latents", "shifts the position by one 'because of BOS' (pos + 1)",
       names=('off by one', 'shifted', 'wrong position', 'next position', 'one position', 'bos'))
def top_k_bos_shift(model, sae, prompt, pos, k):
    acts = _acts_post(model, sae, prompt)[0]
    values, indices = acts[pos + 1].topk(k)
    return values, indices


@wrong(CH, "top_k_latents", "tokenizes without BOS (prepend_bos=False), so positions shift",
       names=('bos', 'prepend'))
def top_k_no_bos(model, sae, prompt, pos, k):
    tokens = model.to_tokens(prompt, prepend_bos=False)
    return _acts_post(model, sae, tokens)[0, pos].topk(k)


@wrong(CH, "top_k_latents", "splices with add_sae and never resets the model",
       names=('attached', 'reset_saes', 'left on', 'left an sae'))
def top_k_leaves_sae(model, sae, prompt, pos, k):
    model.add_sae(sae)
    _, cache = model.run_with_cache(prompt)
    acts = cache[f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"][0, pos]
    return acts.topk(k)


@wrong(CH, "top_k_latents", "takes each latent's maximum over all positions, ignoring pos",
       names=('wrong position', 'all positions', 'every position', 'over positions'))
def top_k_max_over_positions(model, sae, prompt, pos, k):
    acts = _acts_post(model, sae, prompt)[0]  # [pos, d_sae]
    return acts.max(dim=0).values.topk(k)


@wrong(CH, "top_k_latents", "encodes by the formula in the docstring, forgetting that the SAE "
       "subtracts b_dec from its input first", names=('b_dec', 'decoder bias'))
def top_k_manual_encode_without_b_dec(model, sae, prompt, pos, k):
    hook = sae.cfg.metadata.hook_name
    _, cache = model.run_with_cache(prompt, names_filter=hook)
    x = cache[hook][0, pos]
    acts = torch.relu(x @ sae.W_enc + sae.b_enc)
    return acts.topk(k)


@wrong(CH, "top_k_latents", "returns Python lists instead of tensors",
       names=('list', 'not a tensor', 'expected a tensor', 'python'))
def top_k_as_lists(model, sae, prompt, pos, k):
    values, indices = _acts_post(model, sae, prompt)[0, pos].topk(k)
    return values.tolist(), indices.tolist()


@wrong(CH, "top_k_latents", "returns (indices, values): the pair swapped",
       names=('swap', '(values, indices)', 'indices, values', 'order of the pair'))
def top_k_swapped_pair(model, sae, prompt, pos, k):
    values, indices = _acts_post(model, sae, prompt)[0, pos].topk(k)
    return indices, values


@correct(CH, "top_k_latents", "unspliced cache at the hook, then sae.encode")
def top_k_encode_from_clean_cache(model, sae, prompt, pos, k):
    hook = sae.cfg.metadata.hook_name
    _, cache = model.run_with_cache(prompt, names_filter=hook)
    return sae.encode(cache[hook][0, pos]).topk(k)


@correct(CH, "top_k_latents", "sort descending and slice, spliced with the `with model.saes` block")
def top_k_sort_and_slice(model, sae, prompt, pos, k):
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    with model.saes(saes=[sae]):
        _, cache = model.run_with_cache(prompt)
    values, indices = torch.sort(cache[name][0, pos], descending=True, stable=True)
    return values[:k], indices[:k]


@correct(CH, "top_k_latents", "manual encode in float64 with b_dec subtracted (hook_z flattened), position made "
         "positive first")
def top_k_manual_float64(model, sae, prompt, pos, k):
    hook = sae.cfg.metadata.hook_name
    tokens = model.to_tokens(prompt)
    pos = pos % tokens.shape[1]
    _, cache = model.run_with_cache(tokens, names_filter=hook)
    x = cache[hook][0, pos].double().reshape(-1)  # hook_z: [n_heads, d_head] flattened, as the SAE reads it
    acts = torch.relu((x - sae.b_dec.double()) @ sae.W_enc.double() + sae.b_enc.double())
    values, indices = acts.topk(k)
    return values.to(sae.W_enc.dtype), indices


# ---------------------------------------------------------------------------------------
# latent_logit_effects(model, sae, latent) -> [d_vocab]


@wrong(CH, "latent_logit_effects", "uses the encoder column instead of the decoder row",
       names=('encoder', 'w_enc'))
def effects_encoder(model, sae, latent):
    return sae.W_enc[:, latent] @ model.W_U


@wrong(CH, "latent_logit_effects", "adds the unembedding bias b_U",
       names=('b_u', 'unembedding bias'))
def effects_with_b_U(model, sae, latent):
    return sae.W_dec[latent] @ model.W_U + model.b_U


@wrong(CH, "latent_logit_effects", "adds the SAE's decoder bias to the decoder row",
       names=('b_dec', 'decoder bias'))
def effects_with_b_dec(model, sae, latent):
    return (sae.W_dec[latent] + sae.b_dec) @ model.W_U


@wrong(CH, "latent_logit_effects", "passes the decoder row through the final layer norm first",
       names=('layer norm', 'layernorm', 'ln_final', 'normalis', 'normaliz'))
def effects_through_ln_final(model, sae, latent):
    return model.ln_final(sae.W_dec[latent][None, None])[0, 0] @ model.W_U


@wrong(CH, "latent_logit_effects", "unembeds with the transposed embedding W_E^T (tied-weights habit)",
       names=('w_e', 'tied', 'embedding instead'))
def effects_embedding(model, sae, latent):
    return sae.W_dec[latent] @ model.W_E.T


@wrong(CH, "latent_logit_effects", "normalises the decoder row to unit norm",
       names=('unit norm', 'normalis', 'normaliz', 'rescal'))
def effects_unit_decoder(model, sae, latent):
    row = sae.W_dec[latent]
    return row / row.norm() @ model.W_U


@wrong(CH, "latent_logit_effects", "slices the row with latent:latent+1, returning [1, d_vocab]",
       names=('shape', 'extra dim', 'keepdim'))
def effects_keeps_row_dim(model, sae, latent):
    return sae.W_dec[latent : latent + 1] @ model.W_U


@wrong(CH, "latent_logit_effects", "turns the effects into probabilities with a softmax",
       names=('softmax', 'probabilit'))
def effects_softmax_probs(model, sae, latent):
    return (sae.W_dec[latent] @ model.W_U).softmax(-1)


@correct(CH, "latent_logit_effects", "einops.einsum over d_model")
def effects_einsum(model, sae, latent):
    return einops.einsum(sae.W_dec[latent], model.W_U, "d_model, d_model d_vocab -> d_vocab")


@correct(CH, "latent_logit_effects", "full W_dec @ W_U matrix in float64, then the latent's row")
def effects_full_matrix_float64(model, sae, latent):
    return (sae.W_dec.double() @ model.W_U.double())[latent].to(model.W_U.dtype)


@correct(CH, "latent_logit_effects", "W_U^T times the decoder row")
def effects_transposed_product(model, sae, latent):
    return model.W_U.T @ sae.W_dec[latent]


# ---------------------------------------------------------------------------------------
# max_activating_contexts(model, sae, latent, tokens, k=10, batch_size=64) -> (values [k], [k, 2])


def _layer(sae) -> int:
    return int(sae.cfg.metadata.hook_name.split(".")[1])


def _latent_acts(model, sae, latent, tokens, batch_size):
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    chunks = []
    for start in range(0, tokens.shape[0], batch_size):
        _, cache = model.run_with_cache_with_saes(tokens[start : start + batch_size], saes=[sae],
                                                  stop_at_layer=_layer(sae) + 1, names_filter=name)
        chunks.append(cache[name][..., latent])
    return torch.cat(chunks)  # [n_seqs, pos]


@wrong(CH, "max_activating_contexts", "drops the last, smaller batch (n // batch_size batches)",
       names=('last batch', 'smaller batch', 'partial batch', 'every sequence', 'remainder'))
def contexts_drop_last_batch(model, sae, latent, tokens, k=10, batch_size=64):
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    chunks = []
    for b in progress(range(tokens.shape[0] // batch_size), desc="batches"):
        _, cache = model.run_with_cache_with_saes(tokens[b * batch_size : (b + 1) * batch_size], saes=[sae],
                                                  stop_at_layer=_layer(sae) + 1, names_filter=name)
        chunks.append(cache[name][..., latent])
    acts = torch.cat(chunks)
    values, flat = acts.flatten().topk(k)
    return values, torch.stack([flat // acts.shape[1], flat % acts.shape[1]], dim=-1)


@wrong(CH, "max_activating_contexts", "returns (position, sequence) instead of (sequence, position)",
       names=('swap', 'columns', 'transpos', 'reversed', '(position, sequence)'))
def contexts_pos_seq(model, sae, latent, tokens, k=10, batch_size=64):
    acts = _latent_acts(model, sae, latent, tokens, batch_size)
    values, flat = acts.flatten().topk(k)
    return values, torch.stack([flat % acts.shape[1], flat // acts.shape[1]], dim=-1)


@wrong(CH, "max_activating_contexts", "unravels the flat index by the number of sequences instead of positions",
       names=('unravel', 'flat index', '//', 'divide by', 'flat indices'))
def contexts_wrong_unravel(model, sae, latent, tokens, k=10, batch_size=64):
    acts = _latent_acts(model, sae, latent, tokens, batch_size)
    values, flat = acts.flatten().topk(k)
    return values, torch.stack([flat // acts.shape[0], flat % acts.shape[0]], dim=-1)


@wrong(CH, "max_activating_contexts", "slices BOS off and forgets to add 1 back to the positions",
       names=('bos', 'off by one', 'shifted', 'one position'))
def contexts_bos_dropped_no_offset(model, sae, latent, tokens, k=10, batch_size=64):
    acts = _latent_acts(model, sae, latent, tokens, batch_size)[:, 1:]
    values, flat = acts.flatten().topk(k)
    return values, torch.stack([flat // acts.shape[1], flat % acts.shape[1]], dim=-1)


@wrong(CH, "max_activating_contexts", "takes top-k inside the loop and keeps only the last batch's result",
       names=('last batch', 'every batch', 'only the last', 'accumulat', 'every sequence'))
def contexts_last_batch_only(model, sae, latent, tokens, k=10, batch_size=64):
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    for start in range(0, tokens.shape[0], batch_size):
        _, cache = model.run_with_cache_with_saes(tokens[start : start + batch_size], saes=[sae],
                                                  stop_at_layer=_layer(sae) + 1, names_filter=name)
        acts = cache[name][..., latent]
        values, flat = acts.flatten().topk(k)
        where = torch.stack([flat // acts.shape[1], flat % acts.shape[1]], dim=-1)
    return values, where


@wrong(CH, "max_activating_contexts", "unravels with true division, so the indices come back as floats",
       names=('dtype', 'integer', 'int64', 'long'))
def contexts_float_indices(model, sae, latent, tokens, k=10, batch_size=64):
    acts = _latent_acts(model, sae, latent, tokens, batch_size)
    values, flat = acts.flatten().topk(k)
    seq = torch.floor(flat / acts.shape[1])
    return values, torch.stack([seq, flat - seq * acts.shape[1]], dim=-1)


@wrong(CH, "max_activating_contexts", "returns the k smallest activations (largest=False)",
       names=('smallest', 'largest first', 'descending', 'ascending', 'reverse'))
def contexts_smallest(model, sae, latent, tokens, k=10, batch_size=64):
    acts = _latent_acts(model, sae, latent, tokens, batch_size)
    values, flat = acts.flatten().topk(k, largest=False)
    return values, torch.stack([flat // acts.shape[1], flat % acts.shape[1]], dim=-1)


@correct(CH, "max_activating_contexts", "unspliced run stopped after the layer, sae.encode, torch.unravel_index")
def contexts_encode_unravel(model, sae, latent, tokens, k=10, batch_size=64):
    hook = sae.cfg.metadata.hook_name
    chunks = []
    for start in progress(range(0, len(tokens), batch_size), desc="contexts"):
        _, cache = model.run_with_cache(tokens[start : start + batch_size], stop_at_layer=_layer(sae) + 1,
                                        names_filter=hook)
        chunks.append(sae.encode(cache[hook])[..., latent])
    acts = torch.cat(chunks)
    values, flat = acts.flatten().topk(k)
    seq, pos = torch.unravel_index(flat, acts.shape)
    return values, torch.stack([seq, pos], dim=-1)


@correct(CH, "max_activating_contexts", "a running top-k merged batch by batch, global indices kept")
def contexts_running_topk(model, sae, latent, tokens, k=10, batch_size=64):
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    n_pos = tokens.shape[1]
    best_values = torch.empty(0)
    best_flat = torch.empty(0, dtype=torch.long)
    for start in range(0, tokens.shape[0], batch_size):
        _, cache = model.run_with_cache_with_saes(tokens[start : start + batch_size], saes=[sae],
                                                  stop_at_layer=_layer(sae) + 1, names_filter=name)
        acts = cache[name][..., latent].flatten()
        flat = torch.arange(acts.shape[0]) + start * n_pos
        merged_values = torch.cat([best_values.to(acts), acts])
        merged_flat = torch.cat([best_flat, flat])
        top = merged_values.topk(min(k, merged_values.shape[0]))
        best_values, best_flat = top.values, merged_flat[top.indices]
    return best_values, torch.stack([best_flat // n_pos, best_flat % n_pos], dim=-1)


# ---------------------------------------------------------------------------------------
# reconstruction_metrics(model, sae, tokens) -> dict of floats


def _metrics_parts(model, sae, tokens, use_error_term=False):
    hook = sae.cfg.metadata.hook_name
    ce_spliced, cache = model.run_with_cache_with_saes(tokens, saes=[sae], return_type="loss",
                                                       use_error_term=use_error_term)
    x = cache[f"{hook}.hook_sae_input"]
    x_hat = cache[f"{hook}.hook_sae_recons"]
    acts = cache[f"{hook}.hook_sae_acts_post"]
    ce_clean = model(tokens, return_type="loss")
    ce_zero = model.run_with_hooks(tokens, return_type="loss",
                                   fwd_hooks=[(hook, lambda act, hook: torch.zeros_like(act))])
    return x, x_hat, acts, ce_clean, ce_spliced, ce_zero


def _metrics_dict(l0, ev, ce_clean, ce_spliced, ce_zero):
    return {"l0": float(l0), "explained_variance": float(ev), "ce_clean": float(ce_clean),
            "ce_spliced": float(ce_spliced), "ce_zero": float(ce_zero),
            "ce_recovered": float((ce_zero - ce_spliced) / (ce_zero - ce_clean))}


def _ev(x, x_hat):
    return 1 - (x - x_hat).pow(2).sum() / (x - x.mean(dim=(0, 1))).pow(2).sum()


@wrong(CH, "reconstruction_metrics", "keeps the BOS position in L0 and explained variance",
       names=('bos', 'position 0', 'first position'))
def metrics_with_bos(model, sae, tokens):
    x, x_hat, acts, ce_clean, ce_spliced, ce_zero = _metrics_parts(model, sae, tokens)
    return _metrics_dict((acts > 0).float().sum(-1).mean(), _ev(x, x_hat), ce_clean, ce_spliced, ce_zero)


@wrong(CH, "reconstruction_metrics", "explained variance against the variance around one scalar mean (x.var())",
       names=('explained_variance', 'explained variance'))
def metrics_scalar_variance(model, sae, tokens):
    x, x_hat, acts, ce_clean, ce_spliced, ce_zero = _metrics_parts(model, sae, tokens)
    x, x_hat, acts = x[:, 1:], x_hat[:, 1:], acts[:, 1:]
    ev = 1 - (x - x_hat).pow(2).mean() / x.var()
    return _metrics_dict((acts > 0).float().sum(-1).mean(), ev, ce_clean, ce_spliced, ce_zero)


@wrong(CH, "reconstruction_metrics", "explained variance without centring: divides by sum ||x||^2",
       names=('explained_variance', 'explained variance', 'centr', 'center'))
def metrics_uncentred_variance(model, sae, tokens):
    x, x_hat, acts, ce_clean, ce_spliced, ce_zero = _metrics_parts(model, sae, tokens)
    x, x_hat, acts = x[:, 1:], x_hat[:, 1:], acts[:, 1:]
    ev = 1 - (x - x_hat).pow(2).sum() / x.pow(2).sum()
    return _metrics_dict((acts > 0).float().sum(-1).mean(), ev, ce_clean, ce_spliced, ce_zero)


@wrong(CH, "reconstruction_metrics", "splices with use_error_term=True, so the spliced loss is the clean one",
       names=('error term', 'use_error_term', 'ce_spliced'))
def metrics_with_error_term(model, sae, tokens):
    x, x_hat, acts, ce_clean, ce_spliced, ce_zero = _metrics_parts(model, sae, tokens, use_error_term=True)
    x, x_hat, acts = x[:, 1:], x_hat[:, 1:], acts[:, 1:]
    return _metrics_dict((acts > 0).float().sum(-1).mean(), _ev(x, x_hat), ce_clean, ce_spliced, ce_zero)


@wrong(CH, "reconstruction_metrics", "ablates the hook to its mean activation instead of zeros for ce_zero",
       names=('ce_zero', 'zero-ablat', 'zeros'))
def metrics_mean_ablation(model, sae, tokens):
    x, x_hat, acts, ce_clean, ce_spliced, _ = _metrics_parts(model, sae, tokens)
    hook = sae.cfg.metadata.hook_name
    ce_zero = model.run_with_hooks(tokens, return_type="loss",
                                   fwd_hooks=[(hook, lambda act, hook: act.mean((0, 1), keepdim=True).expand_as(act))])
    x, x_hat, acts = x[:, 1:], x_hat[:, 1:], acts[:, 1:]
    return _metrics_dict((acts > 0).float().sum(-1).mean(), _ev(x, x_hat), ce_clean, ce_spliced, ce_zero)


@wrong(CH, "reconstruction_metrics", "CE recovered as the share of the gap lost, (spliced - clean) / (zero - clean)",
       names=('ce_recovered', 'recovered'))
def metrics_recovered_inverted(model, sae, tokens):
    x, x_hat, acts, ce_clean, ce_spliced, ce_zero = _metrics_parts(model, sae, tokens)
    x, x_hat, acts = x[:, 1:], x_hat[:, 1:], acts[:, 1:]
    result = _metrics_dict((acts > 0).float().sum(-1).mean(), _ev(x, x_hat), ce_clean, ce_spliced, ce_zero)
    result["ce_recovered"] = float((ce_spliced - ce_clean) / (ce_zero - ce_clean))
    return result


@wrong(CH, "reconstruction_metrics", "L0 as the share of latents active, not their number",
       names=('l0',))
def metrics_l0_fraction(model, sae, tokens):
    x, x_hat, acts, ce_clean, ce_spliced, ce_zero = _metrics_parts(model, sae, tokens)
    x, x_hat, acts = x[:, 1:], x_hat[:, 1:], acts[:, 1:]
    return _metrics_dict((acts > 0).float().mean(), _ev(x, x_hat), ce_clean, ce_spliced, ce_zero)


@wrong(CH, "reconstruction_metrics", "returns 0-dim tensors instead of Python floats",
       names=('python float', 'tensor', 'float(', '.item()'))
def metrics_tensors(model, sae, tokens):
    x, x_hat, acts, ce_clean, ce_spliced, ce_zero = _metrics_parts(model, sae, tokens)
    x, x_hat, acts = x[:, 1:], x_hat[:, 1:], acts[:, 1:]
    return {"l0": (acts > 0).float().sum(-1).mean(), "explained_variance": _ev(x, x_hat), "ce_clean": ce_clean,
            "ce_spliced": ce_spliced, "ce_zero": ce_zero,
            "ce_recovered": (ce_zero - ce_spliced) / (ce_zero - ce_clean)}


@wrong(CH, "reconstruction_metrics", "also drops the first prediction from the three losses (BOS excluded everywhere)",
       names=('ce_clean', 'ce_spliced', 'ce_zero', 'loss'))
def metrics_losses_without_first(model, sae, tokens):
    hook = sae.cfg.metadata.hook_name
    per_spliced, cache = model.run_with_cache_with_saes(tokens, saes=[sae], return_type="loss", loss_per_token=True)
    per_clean = model(tokens, return_type="loss", loss_per_token=True)
    per_zero = model.run_with_hooks(tokens, return_type="loss", loss_per_token=True,
                                    fwd_hooks=[(hook, lambda act, hook: torch.zeros_like(act))])
    x, x_hat = cache[f"{hook}.hook_sae_input"][:, 1:], cache[f"{hook}.hook_sae_recons"][:, 1:]
    acts = cache[f"{hook}.hook_sae_acts_post"][:, 1:]
    return _metrics_dict((acts > 0).float().sum(-1).mean(), _ev(x, x_hat), per_clean[:, 1:].mean(),
                         per_spliced[:, 1:].mean(), per_zero[:, 1:].mean())


@wrong(CH, "reconstruction_metrics", "add_sae for the spliced pass, never reset: the SAE stays on the model",
       names=('attached', 'reset_saes', 'left on'))
def metrics_leaves_sae_attached(model, sae, tokens):
    hook = sae.cfg.metadata.hook_name
    ce_clean = model(tokens, return_type="loss")
    ce_zero = model.run_with_hooks(tokens, return_type="loss",
                                   fwd_hooks=[(hook, lambda act, hook: torch.zeros_like(act))])
    model.add_sae(sae)
    ce_spliced, cache = model.run_with_cache(tokens, return_type="loss")
    x, x_hat = cache[f"{hook}.hook_sae_input"][:, 1:], cache[f"{hook}.hook_sae_recons"][:, 1:]
    acts = cache[f"{hook}.hook_sae_acts_post"][:, 1:]
    return _metrics_dict((acts > 0).float().sum(-1).mean(), _ev(x, x_hat), ce_clean, ce_spliced, ce_zero)


@correct(CH, "reconstruction_metrics", "encode/decode by hand from a clean cache, losses by cross-entropy "
         "on the logits, sums in float64")
def metrics_by_hand_float64(model, sae, tokens):
    hook = sae.cfg.metadata.hook_name
    logits_clean, cache = model.run_with_cache(tokens, names_filter=hook)
    x = cache[hook]
    acts = sae.encode(x)
    x_hat = sae.decode(acts)

    def ce(logits):
        return torch.nn.functional.cross_entropy(
            einops.rearrange(logits[:, :-1].double(), "b p v -> (b p) v"), tokens[:, 1:].flatten())

    logits_spliced = model.run_with_saes(tokens, saes=[sae])
    logits_zero = model.run_with_hooks(tokens, fwd_hooks=[(hook, lambda act, hook: act * 0)])
    xs, x_hats = x[:, 1:].double(), x_hat[:, 1:].double()
    centred = xs - xs.mean(dim=(0, 1))
    ev = 1 - ((xs - x_hats) ** 2).sum() / (centred**2).sum()
    l0 = (acts[:, 1:] > 0).double().sum(-1).mean()
    return _metrics_dict(l0.item(), ev.item(), ce(logits_clean).item(), ce(logits_spliced).item(),
                         ce(logits_zero).item())


@correct(CH, "reconstruction_metrics", "explained variance as 1 - MSE / per-dimension variance summed; "
         "the clean loss computed first, the SAE spliced with the context manager")
def metrics_variance_form(model, sae, tokens):
    hook = sae.cfg.metadata.hook_name
    ce_clean = model(tokens, return_type="loss").item()
    with model.saes(saes=[sae]):
        ce_spliced, cache = model.run_with_cache(tokens, return_type="loss")
    x = einops.rearrange(cache[f"{hook}.hook_sae_input"][:, 1:], "b p d -> (b p) d")
    x_hat = einops.rearrange(cache[f"{hook}.hook_sae_recons"][:, 1:], "b p d -> (b p) d")
    acts = einops.rearrange(cache[f"{hook}.hook_sae_acts_post"][:, 1:], "b p d -> (b p) d")
    mse = (x - x_hat).pow(2).sum(-1).mean()
    variance = x.var(dim=0, unbiased=False).sum()
    ce_zero = model.run_with_hooks(tokens, return_type="loss",
                                   fwd_hooks=[(hook, lambda act, hook: torch.zeros_like(act))]).item()
    return _metrics_dict((acts != 0).sum(-1).float().mean().item(), (1 - mse / variance).item(), ce_clean,
                         ce_spliced.item(), ce_zero)


# ---------------------------------------------------------------------------------------
# latent_aurocs(acts [n, d_sae], labels [n]) -> [d_sae]


def _counts(neg_sorted, queries):
    """Per row: how many sorted negatives are strictly below / below or tied to each query."""
    return (torch.searchsorted(neg_sorted, queries, side="left"),
            torch.searchsorted(neg_sorted, queries, side="right"))


@wrong(CH, "latent_aurocs", "counts ties as losses (strictly greater only)",
       names=('tie', '1/2', 'half'))
def aurocs_ties_lose(acts, labels):
    pos = acts[labels].T.contiguous()
    neg = acts[~labels].T.sort(dim=-1).values.contiguous()
    below, _ = _counts(neg, pos)
    return below.float().sum(-1) / (pos.shape[1] * neg.shape[1])


@wrong(CH, "latent_aurocs", "counts ties as wins (greater or equal)",
       names=('tie', '1/2', 'half'))
def aurocs_ties_win(acts, labels):
    pos = acts[labels].T.contiguous()
    neg = acts[~labels].T.sort(dim=-1).values.contiguous()
    _, below_or_tied = _counts(neg, pos)
    return below_or_tied.float().sum(-1) / (pos.shape[1] * neg.shape[1])


@wrong(CH, "latent_aurocs", "positives and negatives swapped: P(negative scores higher)",
       names=('1 - auroc', '1 - the', 'invert', 'swap', 'flip', 'reversed', 'complement'))
def aurocs_swapped_classes(acts, labels):
    pos = acts[~labels].T.contiguous()
    neg = acts[labels].T.sort(dim=-1).values.contiguous()
    below, below_or_tied = _counts(neg, pos)
    return (below + below_or_tied).float().sum(-1) / 2 / (pos.shape[1] * neg.shape[1])


@wrong(CH, "latent_aurocs", "Mann-Whitney with ranks from argsort().argsort(): ties broken by order, not averaged",
       names=('tie', 'rank', '1/2', 'half'))
def aurocs_ordinal_ranks(acts, labels):
    ranks = acts.argsort(dim=0).argsort(dim=0).float() + 1  # [n, d_sae], 1-based
    n_pos = labels.sum()
    n_neg = labels.numel() - n_pos
    rank_sum = ranks[labels].sum(0)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


@wrong(CH, "latent_aurocs", "divides by P * n (all tokens) instead of P * N",
       names=('normalis', 'normaliz', 'denominator', 'p * n', 'p*n', 'divide'))
def aurocs_wrong_denominator(acts, labels):
    pos = acts[labels].T.contiguous()
    neg = acts[~labels].T.sort(dim=-1).values.contiguous()
    below, below_or_tied = _counts(neg, pos)
    return (below + below_or_tied).float().sum(-1) / 2 / (pos.shape[1] * acts.shape[0])


@wrong(CH, "latent_aurocs", "rescales each latent to [0, 1] in place first (the caller's acts change)",
       names=('in place', 'in-place', 'mutat', 'modif', 'changed your input', 'changed the input', 'your input'))
def aurocs_rescale_in_place(acts, labels):
    acts.div_(acts.max(dim=0).values.clamp(min=1e-12))
    pos = acts[labels].T.contiguous()
    neg = acts[~labels].T.sort(dim=-1).values.contiguous()
    below, below_or_tied = _counts(neg, pos)
    return (below + below_or_tied).float().sum(-1) / 2 / (pos.shape[1] * neg.shape[1])


@wrong(CH, "latent_aurocs", "returns [d_sae, 1] (keepdim-style division by a column)",
       names=('shape',))
def aurocs_column(acts, labels):
    pos = acts[labels].T.contiguous()
    neg = acts[~labels].T.sort(dim=-1).values.contiguous()
    below, below_or_tied = _counts(neg, pos)
    return (below + below_or_tied).float().sum(-1, keepdim=True) / 2 / (pos.shape[1] * neg.shape[1])


@correct(CH, "latent_aurocs", "Mann-Whitney U with tie-averaged ranks, computed with searchsorted on each column")
def aurocs_mann_whitney(acts, labels):
    columns = acts.T.contiguous()  # [d_sae, n]
    ordered = columns.sort(dim=-1).values
    below = torch.searchsorted(ordered, columns, side="left").double()
    below_or_tied = torch.searchsorted(ordered, columns, side="right").double()
    ranks = (below + below_or_tied + 1) / 2  # 1-based average rank of each score among all
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    u = ranks[:, labels].sum(-1) - n_pos * (n_pos + 1) / 2
    return (u / (n_pos * n_neg)).to(acts.dtype)


@correct(CH, "latent_aurocs", "roles swapped: 1 - P(negative wins) - P(tie)/2, counted from the negatives' side")
def aurocs_from_negatives(acts, labels):
    neg = acts[~labels].T.contiguous()  # [d_sae, N]
    pos = acts[labels].T.sort(dim=-1).values.contiguous()  # [d_sae, P], sorted
    below = torch.searchsorted(pos, neg, side="left")  # positives strictly below each negative
    below_or_tied = torch.searchsorted(pos, neg, side="right")
    n_pos, n_neg = pos.shape[1], neg.shape[1]
    neg_wins = below.double().sum(-1)
    ties = (below_or_tied - below).double().sum(-1)
    return (1 - (neg_wins + ties / 2) / (n_pos * n_neg)).to(acts.dtype)


# ---------------------------------------------------------------------------------------
# Changes after the first run (commit c2ec256 catalog + runner; results in the commit that follows it).
#
# `names` loosened where the check's message names the same mistake in other words:
# - top_k_leaves_sae: + "left an sae". Message: "`top_k_leaves_sae` left an SAE at
#   blocks.1.hook_resid_post on the model (hooks are global state): use `with model.saes(...)` ..."
# - contexts_pos_seq: + "(position, sequence)". Message: "each row should be (sequence,
#   position); yours looks like (position, sequence)"
# - contexts_wrong_unravel: + "flat indices" ("flat index" did not match the plural). Message:
#   "seq_pos: flat indices were split with the wrong length"
#
# One implementation fixed, because it was not genuinely correct (my error, not the check's):
# - top_k_manual_float64 multiplied the cached [n_heads, d_head] activation of an attention
#   SAE by W_enc without flattening it; the check runs top_k_latents on a hook_z SAE and
#   reported "`top_k_manual_float64` raised RuntimeError: The size of tensor a (32) must
#   match the size of tensor b (128) at non-singleton dimension 1". It now flattens, as the
#   SAE itself does; re-verified against the reference on residual and attention SAEs.
