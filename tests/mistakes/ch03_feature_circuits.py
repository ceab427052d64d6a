"""Plausible wrong implementations of chapter 03's exercises; each check must catch each one.

A mistake with ``signature=True`` (the default) is recognised by its result: the check runs
it on its own inputs (``utils.course.checking.signatures``) and fails with its diagnosis. The
others must be caught by a generic diagnosis of ``utils.course.compare``."""
from __future__ import annotations

import torch

from solutions.ch03_feature_circuits import ablation_edges, edge_effects, probe_latent_effects
from utils.course.checking import Mistake
from utils.nodes import output_hook
from utils.graphs import node_gradients, splice_for_edges
from utils.metrics import auroc

# --- edge_effects --------------------------------------------------------------------


def _edges(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline=None,
           frozen=None, weighted=True, zero_baseline=False, error_column=True, reduce="mean", times_change=True):
    """The reference with one thing changed (each mistake below picks one)."""
    grads = node_gradients(model, dictionaries, tokens, metric)
    down_hook, up_hook = downstream.cfg.metadata.hook_name, upstream.cfg.metadata.hook_name
    g_latents, g_error = grads[f"{down_hook}.latents"].grad, grads[f"{down_hook}.error"].grad
    others = dictionaries if frozen is None else frozen
    base = None if zero_baseline else baseline
    with splice_for_edges(model, others, upstream, downstream) as nodes, torch.enable_grad():
        model(tokens)
        f, e = nodes["up.latents"], nodes["up.error"]
        f_change = (0.0 if base is None else base.latents[up_hook]) - f.detach()
        e_change = (0.0 if base is None else base.errors[up_hook]) - e.detach()
        rows = []
        for t in targets:
            if t.is_error:
                g = g_error[:, t.pos] if weighted else torch.ones_like(g_error[:, t.pos])
                scalar = (g * nodes["down.error"][:, t.pos]).sum()
            else:
                g = g_latents[:, t.pos, t.index] if weighted else 1.0
                scalar = (g * nodes["down.latents"][:, t.pos, t.index]).sum()
            grad_f, grad_e = torch.autograd.grad(scalar, [f, e], retain_graph=True)
            if not times_change:
                f_change, e_change = torch.ones_like(f), torch.ones_like(e)
            error_edge = (grad_e * e_change).flatten(2).sum(-1) if error_column else torch.zeros_like(grad_f[..., 0])
            row = torch.cat([grad_f * f_change, error_edge[..., None]], dim=-1)
            rows.append(row.mean(0) if reduce == "mean" else row.sum(0))
    return torch.stack(rows)


def edges_zero_baseline(*args, **kwargs):
    return _edges(*args, **kwargs, zero_baseline=True)


def edges_unweighted(*args, **kwargs):
    return _edges(*args, **kwargs, weighted=False)


def edges_total_effect(model, dictionaries, upstream, downstream, *args, **kwargs):
    return _edges(model, dictionaries, upstream, downstream, *args, **kwargs, frozen=[upstream, downstream])


def edges_sign(*args, **kwargs):
    return -edge_effects(*args, **kwargs)


def edges_summed(*args, **kwargs):
    return _edges(*args, **kwargs, reduce="sum")


def edges_no_error_column(*args, **kwargs):
    return _edges(*args, **kwargs, error_column=False)


def edges_jacobian_only(*args, **kwargs):
    return _edges(*args, **kwargs, times_change=False)


# --- ablation_edges ------------------------------------------------------------------


def _ablation(model, dictionaries, upstream, downstream, tokens, node, threshold_exp,
              use_error_term=True, every_position=False, signed=False, threshold=True, measured="acts_post"):
    up_name = f"{output_hook(upstream)}.hook_sae_acts_post"
    down_name = f"{output_hook(downstream)}.hook_sae_{measured}"

    def zero(acts, hook):
        acts = acts.clone()
        acts[:, slice(None) if every_position else node.pos, node.index] = 0.0
        return acts

    with model.saes(saes=list(dictionaries), use_error_term=use_error_term):
        _, clean = model.run_with_cache(tokens, names_filter=down_name)
        with model.hooks(fwd_hooks=[(up_name, zero)]):
            _, ablated = model.run_with_cache(tokens, names_filter=down_name)
    change = (ablated[down_name] - clean[down_name]).mean(0)
    if not threshold:
        return change
    size = change if signed else change.abs()
    return torch.where(size >= 2.0 ** threshold_exp, change, 0.0)


def ablation_no_error_term(*args, **kwargs):
    return _ablation(*args, **kwargs, use_error_term=False)


def ablation_every_position(*args, **kwargs):
    return _ablation(*args, **kwargs, every_position=True)


def ablation_signed_threshold(*args, **kwargs):
    return _ablation(*args, **kwargs, signed=True)


def ablation_no_threshold(*args, **kwargs):
    return _ablation(*args, **kwargs, threshold=False)


def ablation_preactivations(*args, **kwargs):
    return _ablation(*args, **kwargs, measured="acts_pre")


def ablation_sign(*args, **kwargs):
    return -ablation_edges(*args, **kwargs)


# --- probe_latent_effects ------------------------------------------------------------


def _change(latents, baseline):
    return (torch.zeros_like(latents) if baseline is None else baseline.expand_as(latents)) - latents


def probe_none_as_batch_mean(probe_weight, dictionary, latents, baseline=None):
    if baseline is None:
        baseline = latents.mean(0)  # "the usual baseline"
    return (baseline - latents) * (dictionary.W_dec @ probe_weight)


def probe_encoder(probe_weight, dictionary, latents, baseline=None):
    return _change(latents, baseline) * (dictionary.W_enc.T @ probe_weight)


def probe_no_latents(probe_weight, dictionary, latents, baseline=None):
    return -(dictionary.W_dec @ probe_weight).expand_as(latents).clone()


def probe_decoder_bias(probe_weight, dictionary, latents, baseline=None):
    return _change(latents, baseline) * (dictionary.W_dec @ probe_weight) - dictionary.b_dec @ probe_weight


def probe_zero_baseline(probe_weight, dictionary, latents, baseline=None):
    return probe_latent_effects(probe_weight, dictionary, latents)


def probe_sign(probe_weight, dictionary, latents, baseline=None):
    return -probe_latent_effects(probe_weight, dictionary, latents, baseline)


def probe_unit_weight(probe_weight, dictionary, latents, baseline=None):
    return probe_latent_effects(probe_weight / probe_weight.norm(), dictionary, latents, baseline)


# --- gender_latents ------------------------------------------------------------------


def _separation(latents, bios, candidates):
    scores = auroc(latents[:, list(candidates)], torch.stack([bios.gender.bool(), bios.profession.bool()], dim=1))
    return scores[0].tolist(), scores[1].tolist()


def gender_one_sided(latents, bios, candidates):
    gender, _ = _separation(latents, bios, candidates)
    return sorted(i for i, g in zip(candidates, gender) if g >= 0.7)


def gender_ignores_profession(latents, bios, candidates):
    gender, _ = _separation(latents, bios, candidates)
    return sorted(i for i, g in zip(candidates, gender) if abs(g - 0.5) >= 0.2)


def gender_profession_latents(latents, bios, candidates):
    gender, profession = _separation(latents, bios, candidates)
    return sorted(i for i, g, p in zip(candidates, gender, profession) if abs(p - 0.5) >= 0.2 and abs(p - 0.5) > abs(g - 0.5))


def gender_every_candidate(latents, bios, candidates):
    return sorted(candidates)


def gender_candidate_order(latents, bios, candidates):
    from solutions.ch03_feature_circuits import gender_latents
    marked = set(gender_latents(latents, bios, candidates))
    return [c for c in reversed(candidates) if c in marked]


def gender_positions(latents, bios, candidates):
    from solutions.ch03_feature_circuits import gender_latents
    marked = set(gender_latents(latents, bios, candidates))
    return [i for i, c in enumerate(candidates) if c in marked]


def gender_raw_auroc(latents, bios, candidates):
    gender, profession = _separation(latents, bios, candidates)
    return sorted(i for i, g, p in zip(candidates, gender, profession) if abs(g - 0.5) >= 0.2 and g > p)


MISTAKES = {
    "edge_effects": [
        Mistake(edges_zero_baseline, "your edges match a zero baseline: use u' from `baseline` (u' - u), not -u"),
        Mistake(edges_unweighted, "your edges leave out the metric's gradient at the downstream node: weight d_t by "
                "dm/dd_t (node_gradients) before the vector-Jacobian product"),
        Mistake(edges_total_effect, "your edges count paths through other dictionaries: pass every dictionary to "
                "splice_for_edges, so the ones between upstream and downstream are held fixed"),
        Mistake(edges_sign, "sign", signature=False),
        Mistake(edges_summed, "constant factor", signature=False),
        Mistake(edges_no_error_column, "part of the result was left out", signature=False),
        Mistake(edges_jacobian_only, "your edges leave out the change (u' - u): multiply each vector-Jacobian product "
                "by it"),
    ],
    "ablation_edges": [
        Mistake(ablation_no_error_term, "your changes match splicing without the error term: pass "
                "use_error_term=True, so only the ablated latent differs from the clean run"),
        Mistake(ablation_every_position, "your changes match zeroing the latent at every position: zero it at node.pos only"),
        Mistake(ablation_signed_threshold, "you kept only increases: compare |change| with 2**threshold_exp, "
                "so latents switched off are kept too"),
        Mistake(ablation_no_threshold, "you kept every change: set entries with |change| < 2**threshold_exp to zero"),
        Mistake(ablation_sign, "sign", signature=False),
        Mistake(ablation_preactivations, "your changes are of the downstream pre-activations (hook_sae_acts_pre): "
                "measure the latents themselves, hook_sae_acts_post"),
    ],
    "probe_latent_effects": [
        Mistake(probe_encoder, "you used the encoder: a latent writes f_i * W_dec[i] into the residual stream"),
        Mistake(probe_no_latents, "you left out the latents: the effect of ablating latent i scales with its activation f_i"),
        Mistake(probe_decoder_bias, "you included the decoder bias: it does not depend on any latent and cancels"),
        Mistake(probe_zero_baseline, "your effects match a zero baseline: set latent i to baseline[i], a change of "
                "(baseline[i] - f_i)"),
        Mistake(probe_sign, "sign", signature=False),
        Mistake(probe_unit_weight, "constant factor", signature=False),
        Mistake(probe_none_as_batch_mean, "baseline=None means zero", signature=False),
    ],
    "gender_latents": [
        Mistake(gender_one_sided, "you kept only latents that fire for women (gender AUROC near 1): a latent with "
                "AUROC near 0 fires for men and is as much about gender"),
        Mistake(gender_ignores_profession, "you marked latents that separate profession at least as well as gender: "
                "compare |AUROC_gender - 0.5| with |AUROC_profession - 0.5|"),
        Mistake(gender_profession_latents, "you marked the profession latents: SHIFT removes the gender ones"),
        Mistake(gender_every_candidate, "you marked every candidate: keep only those that carry gender"),
        Mistake(gender_raw_auroc, "compare distances from 0.5, not raw AUROCs"),
        Mistake(gender_candidate_order, "in increasing order", signature=False),
        Mistake(gender_positions, "positions in `candidates`", signature=False),
    ],
}
