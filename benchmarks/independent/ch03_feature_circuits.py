"""Independent catalog, chapter 03 (sparse feature circuits): plausible learner
implementations of edge_effects, ablation_edges, probe_latent_effects and gender_latents,
written from the chapter's text and reference alone (see ``benchmarks/independent``)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from benchmarks.independent import correct, wrong
from utils.circuits import output_hook
from utils.graphs import node_gradients, splice_for_edges
from utils.toy.report import auroc

CH = "ch03_feature_circuits"

# ---------------------------------------------------------------------------------------
# edge_effects: a configurable learner implementation, then the entries.


def _edges(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline, *,
           sign: float = 1.0, use_baseline: bool = True, reduce: str = "mean", use_g: bool = True,
           use_delta: bool = True, error_column: bool = True, mean_g: bool = False,
           all_positions: bool = False, error_sum_last_only: bool = False) -> Tensor:
    grads = node_gradients(model, dictionaries, tokens, metric)
    down_hook, up_hook = downstream.cfg.metadata.hook_name, upstream.cfg.metadata.hook_name
    g_lat, g_err = grads[f"{down_hook}.latents"].grad, grads[f"{down_hook}.error"].grad
    if mean_g:
        g_lat, g_err = g_lat.mean(0, keepdim=True).expand_as(g_lat), g_err.mean(0, keepdim=True).expand_as(g_err)
    rows = []
    with splice_for_edges(model, dictionaries, upstream, downstream) as nodes, torch.enable_grad():
        model(tokens)
        f, e = nodes["up.latents"], nodes["up.error"]
        base_f = baseline.latents[up_hook] if (baseline is not None and use_baseline) else 0.0
        base_e = baseline.errors[up_hook] if (baseline is not None and use_baseline) else 0.0
        df = sign * (base_f - f.detach())
        de = sign * (base_e - e.detach())
        for t in targets:
            if t.is_error:
                d = nodes["down.error"]
                d_t = d[:, t.pos] if not all_positions else d
                g_t = g_err[:, t.pos] if not all_positions else g_err
                scalar = ((g_t * d_t) if use_g else d_t).sum()
            else:
                d = nodes["down.latents"]
                d_t = d[:, t.pos, t.index] if not all_positions else d[:, :, t.index]
                g_t = g_lat[:, t.pos, t.index] if not all_positions else g_lat[:, :, t.index]
                scalar = ((g_t * d_t) if use_g else d_t).sum()
            gf, ge = torch.autograd.grad(scalar, [f, e], retain_graph=True, allow_unused=True)
            gf = torch.zeros_like(f) if gf is None else gf
            ge = torch.zeros_like(e) if ge is None else ge
            lat = gf * df if use_delta else gf
            err_prod = ge * de if use_delta else ge
            err = err_prod.sum(-1) if error_sum_last_only else err_prod.flatten(2).sum(-1)
            row = torch.cat([lat, err[..., None]], -1) if error_column else lat
            rows.append(row.mean(0) if reduce == "mean" else row.sum(0))
    return torch.stack(rows)


@wrong(CH, "edge_effects", "ignores the baseline: always zero-ablates the upstream nodes",
       names=("baseline", "zero ablation", "mean ablation"))
def edges_ignore_baseline(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline=None):
    return _edges(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline, use_baseline=False)


@wrong(CH, "edge_effects", "change taken as u - u' instead of u' - u (sign flipped)",
       names=("sign", "negat", "flip"))
def edges_sign_flipped(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline=None):
    return _edges(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline, sign=-1.0)


@wrong(CH, "edge_effects", "drops the upstream error column: returns [target, pos, d_sae]",
       names=("error node", "error column", "last column", "shape", "d_sae + 1"))
def edges_no_error_column(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline=None):
    return _edges(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline, error_column=False)


@wrong(CH, "edge_effects", "sums over prompts instead of averaging",
       names=("sum", "mean over prompts", "average", "batch size"))
def edges_sum_over_prompts(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline=None):
    return _edges(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline, reduce="sum")


@wrong(CH, "edge_effects", "forgets the metric's gradient g_t at the downstream node: backward from d_t itself",
       names=("gradient", "metric", "g_t", "dm/dd"))
def edges_without_metric_gradient(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline=None):
    return _edges(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline, use_g=False)


@wrong(CH, "edge_effects", "returns the vector-Jacobian product without multiplying by the change u' - u",
       names=("change", "delta", "u' - u", "baseline"))
def edges_without_change(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline=None):
    return _edges(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline, use_delta=False)


@wrong(CH, "edge_effects", "averages the metric gradient over prompts before the VJP (every prompt gets the mean g)",
       names=("per prompt", "each prompt", "mean gradient", "averaged gradient"))
def edges_mean_gradient(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline=None):
    return _edges(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline, mean_g=True)


@wrong(CH, "edge_effects", "ignores the target's position: backward from the target latent summed over every position",
       names=("position", "target.pos"))
def edges_target_all_positions(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline=None):
    return _edges(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline, all_positions=True)


@wrong(CH, "edge_effects", "error column summed over the last dim only (breaks for an attention SAE's [n_heads, d_head] error)",
       names=("attention", "attn", "hook_z", "head", "error column"))
def edges_error_sum_last_dim(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline=None):
    return _edges(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline, error_sum_last_only=True)


@correct(CH, "edge_effects", "a fresh forward pass per target instead of retain_graph; float64 products")
def edges_forward_per_target(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline=None):
    grads = node_gradients(model, dictionaries, tokens, metric)
    down_hook, up_hook = downstream.cfg.metadata.hook_name, upstream.cfg.metadata.hook_name
    g_lat = grads[f"{down_hook}.latents"].grad.double()
    g_err = grads[f"{down_hook}.error"].grad.double()
    rows = []
    for t in targets:
        with splice_for_edges(model, dictionaries, upstream, downstream) as nodes, torch.enable_grad():
            model(tokens)
            f, e = nodes["up.latents"], nodes["up.error"]
            if t.is_error:
                scalar = (g_err[:, t.pos] * nodes["down.error"][:, t.pos].double()).sum()
            else:
                scalar = (g_lat[:, t.pos, t.index] * nodes["down.latents"][:, t.pos, t.index].double()).sum()
            gf, ge = torch.autograd.grad(scalar, [f, e])
        f0, e0 = f.detach().double(), e.detach().double()
        bf = baseline.latents[up_hook].double() if baseline is not None else torch.zeros_like(f0)
        be = baseline.errors[up_hook].double() if baseline is not None else torch.zeros_like(e0)
        lat = gf.double() * (bf - f0)
        err = torch.einsum("bp...,bp...->bp", ge.double(), (be - e0).expand_as(e0))
        rows.append(torch.cat([lat, err[..., None]], -1).mean(0))
    return torch.stack(rows).float()


@correct(CH, "edge_effects", "one backward pass per prompt and target (a loop over the batch), averaged at the end")
def edges_loop_over_prompts(model, dictionaries, upstream, downstream, tokens, metric, targets, baseline=None):
    grads = node_gradients(model, dictionaries, tokens, metric)
    down_hook, up_hook = downstream.cfg.metadata.hook_name, upstream.cfg.metadata.hook_name
    g_lat, g_err = grads[f"{down_hook}.latents"].grad, grads[f"{down_hook}.error"].grad
    out = []
    with splice_for_edges(model, dictionaries, upstream, downstream) as nodes, torch.enable_grad():
        model(tokens)
        f, e = nodes["up.latents"], nodes["up.error"]
        zero_f, zero_e = torch.zeros_like(f[0]), torch.zeros_like(e[0])
        bf = baseline.latents[up_hook] if baseline is not None else zero_f
        be = baseline.errors[up_hook] if baseline is not None else zero_e
        for t in targets:
            per_prompt = []
            for b in range(tokens.shape[0]):
                if t.is_error:
                    scalar = torch.dot(g_err[b, t.pos].flatten(), nodes["down.error"][b, t.pos].flatten())
                else:
                    scalar = g_lat[b, t.pos, t.index] * nodes["down.latents"][b, t.pos, t.index]
                gf, ge = torch.autograd.grad(scalar, [f, e], retain_graph=True)
                lat = gf[b] * (bf - f[b].detach())
                err = (ge[b] * (be - e[b].detach())).reshape(ge.shape[1], -1).sum(-1)
                per_prompt.append(torch.cat([lat, err[:, None]], -1))
            out.append(torch.stack(per_prompt).mean(0))
    return torch.stack(out)


# ---------------------------------------------------------------------------------------
# ablation_edges


def _ablation(model, dictionaries, upstream, downstream, tokens, node, threshold_exp, *, threshold=None,
              signed: bool = False, error_term: bool = True, every_pos: bool = False,
              flip: bool = False, read: str = "hook_sae_acts_post", reduce: str = "mean",
              up_hook_point: str | None = None) -> Tensor:
    up_name = up_hook_point or f"{output_hook(upstream)}.hook_sae_acts_post"
    down_name = f"{output_hook(downstream)}.{read}"

    def zero(acts, hook):
        acts = acts.clone()
        if every_pos:
            acts[:, :, node.index] = 0.0
        else:
            acts[:, node.pos, node.index] = 0.0
        return acts

    with model.saes(saes=list(dictionaries), use_error_term=error_term):
        _, clean = model.run_with_cache(tokens, names_filter=down_name)
        with model.hooks(fwd_hooks=[(up_name, zero)]):
            _, ablated = model.run_with_cache(tokens, names_filter=down_name)
    diff = ablated[down_name] - clean[down_name]
    if flip:
        diff = -diff
    change = diff.mean(0) if reduce == "mean" else diff.sum(0)
    cut = 2.0 ** threshold_exp if threshold is None else threshold
    kept = change >= cut if signed else change.abs() >= cut
    return torch.where(kept, change, 0.0)


@wrong(CH, "ablation_edges", "threshold 2*k instead of 2**k", names=("2**", "2^", "power", "threshold"))
def ablation_threshold_times_two(model, dictionaries, upstream, downstream, tokens, node, threshold_exp):
    return _ablation(model, dictionaries, upstream, downstream, tokens, node, threshold_exp, threshold=2.0 * threshold_exp)


@wrong(CH, "ablation_edges", "thresholds the signed change: latents switched off (negative changes) are dropped",
       names=("negative", "magnitude", "abs", "switched off"))
def ablation_signed_threshold(model, dictionaries, upstream, downstream, tokens, node, threshold_exp):
    return _ablation(model, dictionaries, upstream, downstream, tokens, node, threshold_exp, signed=True)


@wrong(CH, "ablation_edges", "splices the dictionaries without their error terms", names=("error term",))
def ablation_no_error_term(model, dictionaries, upstream, downstream, tokens, node, threshold_exp):
    return _ablation(model, dictionaries, upstream, downstream, tokens, node, threshold_exp, error_term=False)


@wrong(CH, "ablation_edges", "zeroes the upstream latent at every position, not only at node.pos",
       names=("every position", "all positions", "node.pos", "position"))
def ablation_every_position(model, dictionaries, upstream, downstream, tokens, node, threshold_exp):
    return _ablation(model, dictionaries, upstream, downstream, tokens, node, threshold_exp, every_pos=True)


@wrong(CH, "ablation_edges", "clean minus ablated (sign flipped)", names=("sign", "negat", "flip"))
def ablation_sign_flipped(model, dictionaries, upstream, downstream, tokens, node, threshold_exp):
    return _ablation(model, dictionaries, upstream, downstream, tokens, node, threshold_exp, flip=True)


@wrong(CH, "ablation_edges", "reads the downstream pre-activations (hook_sae_acts_pre) instead of the latents",
       names=("pre-activation", "acts_pre", "pre-relu", "post-relu", "relu"))
def ablation_reads_preacts(model, dictionaries, upstream, downstream, tokens, node, threshold_exp):
    return _ablation(model, dictionaries, upstream, downstream, tokens, node, threshold_exp, read="hook_sae_acts_pre")


@wrong(CH, "ablation_edges", "sums the change over prompts instead of averaging", names=("sum", "mean over prompts", "average"))
def ablation_sum_over_prompts(model, dictionaries, upstream, downstream, tokens, node, threshold_exp):
    return _ablation(model, dictionaries, upstream, downstream, tokens, node, threshold_exp, reduce="sum")


@wrong(CH, "ablation_edges", "hooks the upstream latents under the hook the dictionary reads (wrong for a transcoder)",
       names=("output hook", "hook_name_out", "transcoder", "hook"))
def ablation_input_hook_name(model, dictionaries, upstream, downstream, tokens, node, threshold_exp):
    return _ablation(model, dictionaries, upstream, downstream, tokens, node, threshold_exp,
                     up_hook_point=f"{upstream.cfg.metadata.hook_name}.hook_sae_acts_post")


@wrong(CH, "ablation_edges", "adds the SAEs and the ablation hook with add_sae/add_hook and never removes them",
       names=("attached", "left", "reset", "hook", "remove"))
def ablation_leaves_hooks(model, dictionaries, upstream, downstream, tokens, node, threshold_exp):
    up_name = f"{output_hook(upstream)}.hook_sae_acts_post"
    down_name = f"{output_hook(downstream)}.hook_sae_acts_post"
    for sae in dictionaries:
        model.add_sae(sae, use_error_term=True)
    _, clean = model.run_with_cache(tokens, names_filter=down_name)

    def zero(acts, hook):
        acts = acts.clone()
        acts[:, node.pos, node.index] = 0.0
        return acts

    model.add_hook(up_name, zero)
    _, ablated = model.run_with_cache(tokens, names_filter=down_name)
    change = (ablated[down_name] - clean[down_name]).mean(0)
    return torch.where(change.abs() >= 2.0 ** threshold_exp, change, 0.0)


@correct(CH, "ablation_edges", "one run on the batch twice over, the hook zeroing only the second copy; mask multiply")
def ablation_one_doubled_run(model, dictionaries, upstream, downstream, tokens, node, threshold_exp):
    up_name = f"{output_hook(upstream)}.hook_sae_acts_post"
    down_name = f"{output_hook(downstream)}.hook_sae_acts_post"
    n = tokens.shape[0]

    def zero_second_half(acts, hook):
        acts = acts.clone()
        acts[n:, node.pos, node.index] = 0.0
        return acts

    with model.saes(saes=list(dictionaries), use_error_term=True):
        with model.hooks(fwd_hooks=[(up_name, zero_second_half)]):
            _, cache = model.run_with_cache(torch.cat([tokens, tokens]), names_filter=down_name)
    acts = cache[down_name]
    change = (acts[n:] - acts[:n]).mean(0)
    return change * (change.abs() >= 2.0 ** threshold_exp).to(change.dtype)


@correct(CH, "ablation_edges", "run_with_cache_with_saes for the clean run; in-place zeroing hook; float64 mean")
def ablation_with_saes_calls(model, dictionaries, upstream, downstream, tokens, node, threshold_exp):
    up_name = f"{output_hook(upstream)}.hook_sae_acts_post"
    down_name = f"{output_hook(downstream)}.hook_sae_acts_post"
    _, clean = model.run_with_cache_with_saes(tokens, saes=list(dictionaries), use_error_term=True, names_filter=down_name)

    def zero_in_place(acts, hook):
        acts[:, node.pos, node.index] = 0.0

    with model.saes(saes=list(dictionaries), use_error_term=True), model.hooks(fwd_hooks=[(up_name, zero_in_place)]):
        _, ablated = model.run_with_cache(tokens, names_filter=down_name)
    change = (ablated[down_name].double() - clean[down_name].double()).mean(0)
    limit = 2.0 ** threshold_exp
    change[change.abs() < limit] = 0.0
    return change.float()


# ---------------------------------------------------------------------------------------
# probe_latent_effects


def _target(latents: Tensor, baseline: Tensor | None) -> Tensor:
    return torch.zeros_like(latents) if baseline is None else baseline.expand_as(latents)


@wrong(CH, "probe_latent_effects", "latents minus baseline (sign flipped)", names=("sign", "negat", "flip"))
def probe_sign_flipped(probe_weight, dictionary, latents, baseline=None):
    return (latents - _target(latents, baseline)) * (dictionary.W_dec @ probe_weight)


@wrong(CH, "probe_latent_effects", "ignores the baseline: always zero-ablates", names=("baseline", "zero"))
def probe_ignores_baseline(probe_weight, dictionary, latents, baseline=None):
    return -latents * (dictionary.W_dec @ probe_weight)


@wrong(CH, "probe_latent_effects", "reads the encoder (W_enc columns) instead of the decoder rows",
       names=("decoder", "w_dec", "encoder", "w_enc"))
def probe_uses_encoder(probe_weight, dictionary, latents, baseline=None):
    return (_target(latents, baseline) - latents) * (probe_weight @ dictionary.W_enc)


@wrong(CH, "probe_latent_effects", "the latent's contribution f_i (d_i . w), not the change when it is ablated",
       names=("sign", "baseline", "negat", "change"))
def probe_contribution_not_change(probe_weight, dictionary, latents, baseline=None):
    return latents * (dictionary.W_dec @ probe_weight)


@wrong(CH, "probe_latent_effects", "normalises the decoder rows to unit norm before the dot product",
       names=("norm", "unit", "decoder"))
def probe_unit_decoder(probe_weight, dictionary, latents, baseline=None):
    d = dictionary.W_dec / dictionary.W_dec.norm(dim=-1, keepdim=True)
    return (_target(latents, baseline) - latents) * (d @ probe_weight)


@wrong(CH, "probe_latent_effects", "averages over examples: returns [d_sae]", names=("shape", "batch", "per example"))
def probe_mean_over_examples(probe_weight, dictionary, latents, baseline=None):
    return ((_target(latents, baseline) - latents) * (dictionary.W_dec @ probe_weight)).mean(0)


@wrong(CH, "probe_latent_effects", "computes the change in place, overwriting the caller's latents",
       names=("mutat", "in place", "modif", "overwr"))
def probe_mutates_latents(probe_weight, dictionary, latents, baseline=None):
    target = _target(latents, baseline)
    latents.sub_(target).neg_()  # latents now holds target - latents
    return latents.mul_(dictionary.W_dec @ probe_weight)


@wrong(CH, "probe_latent_effects", "baseline None taken as the batch mean (mean ablation) instead of zero",
       names=("baseline", "zero", "mean"))
def probe_default_mean_baseline(probe_weight, dictionary, latents, baseline=None):
    target = latents.mean(0).expand_as(latents) if baseline is None else baseline.expand_as(latents)
    return (target - latents) * (dictionary.W_dec @ probe_weight)


@wrong(CH, "probe_latent_effects", "adds the decoder bias's contribution b_dec . w to every effect",
       names=("b_dec", "bias", "decoder bias"))
def probe_adds_decoder_bias(probe_weight, dictionary, latents, baseline=None):
    return (_target(latents, baseline) - latents) * (dictionary.W_dec @ probe_weight) + dictionary.b_dec @ probe_weight


@correct(CH, "probe_latent_effects", "difference of two probe logits on reconstructions, latent by latent, in float64")
def probe_by_reconstruction(probe_weight, dictionary, latents, baseline=None):
    w = probe_weight.double()
    W, b = dictionary.W_dec.double(), dictionary.b_dec.double()
    f = latents.double()
    target = torch.zeros_like(f) if baseline is None else baseline.double().expand_as(f)
    z_clean = (f @ W + b) @ w  # [batch]
    out = torch.empty_like(f)
    for i in range(f.shape[1]):
        g = f.clone()
        g[:, i] = target[:, i]
        out[:, i] = (g @ W + b) @ w - z_clean
    return out.to(latents.dtype)


@correct(CH, "probe_latent_effects", "einsum over d_model with an explicit baseline tensor")
def probe_einsum(probe_weight, dictionary, latents, baseline=None):
    base = torch.zeros(latents.shape[1], dtype=latents.dtype) if baseline is None else baseline
    per_unit = torch.einsum("im,m->i", dictionary.W_dec, probe_weight)
    return torch.einsum("bi,i->bi", base.unsqueeze(0) - latents, per_unit)


# ---------------------------------------------------------------------------------------
# gender_latents


def _aurocs(latents: Tensor, bios, candidates: Sequence[int]) -> tuple[list[float], list[float]]:
    labels = torch.stack([bios.gender.bool(), bios.profession.bool()], dim=1)
    scores = auroc(latents[:, list(candidates)], labels)
    return scores[0].tolist(), scores[1].tolist()


@wrong(CH, "gender_latents", "no absolute value: only latents with gender AUROC above 0.5 can qualify",
       names=("abs", "below 0.5", "near 0", "distance", "men", "male", "direction"))
def gender_no_abs(latents, bios, candidates):
    g, p = _aurocs(latents, bios, candidates)
    return sorted(i for i, a, b in zip(candidates, g, p) if a - 0.5 >= 0.2 and a - 0.5 > abs(b - 0.5))


@wrong(CH, "gender_latents", "gender and profession labels swapped: returns profession latents",
       names=("profession", "swap"))
def gender_labels_swapped(latents, bios, candidates):
    p, g = _aurocs(latents, bios, candidates)
    return sorted(i for i, a, b in zip(candidates, g, p) if abs(a - 0.5) >= 0.2 and abs(a - 0.5) > abs(b - 0.5))


@wrong(CH, "gender_latents", "forgets the |AUROC_gender - 0.5| >= 0.2 condition",
       names=("0.2", "at all", "threshold", "minimum"))
def gender_no_minimum(latents, bios, candidates):
    g, p = _aurocs(latents, bios, candidates)
    return sorted(i for i, a, b in zip(candidates, g, p) if abs(a - 0.5) > abs(b - 0.5))


@wrong(CH, "gender_latents", "returns the latents in candidate order, not sorted", names=("sort", "order", "increasing"))
def gender_unsorted(latents, bios, candidates):
    g, p = _aurocs(latents, bios, candidates)
    return [i for i, a, b in zip(candidates, g, p) if abs(a - 0.5) >= 0.2 and abs(a - 0.5) > abs(b - 0.5)]


@wrong(CH, "gender_latents", "returns positions within the candidate list instead of latent ids",
       names=("index", "indices", "latent id", "position", "candidate"))
def gender_returns_positions(latents, bios, candidates):
    g, p = _aurocs(latents, bios, candidates)
    return sorted(k for k, (a, b) in enumerate(zip(g, p)) if abs(a - 0.5) >= 0.2 and abs(a - 0.5) > abs(b - 0.5))


@wrong(CH, "gender_latents", "either condition instead of both (or for and)", names=("both", "and", "profession"))
def gender_or_conditions(latents, bios, candidates):
    g, p = _aurocs(latents, bios, candidates)
    return sorted(i for i, a, b in zip(candidates, g, p) if abs(a - 0.5) >= 0.2 or abs(a - 0.5) > abs(b - 0.5))


@wrong(CH, "gender_latents", "scores every latent of the dictionary, not only the candidates", names=("candidate",))
def gender_all_latents(latents, bios, candidates):
    everything = list(range(latents.shape[1]))
    g, p = _aurocs(latents, bios, everything)
    return sorted(i for i, a, b in zip(everything, g, p) if abs(a - 0.5) >= 0.2 and abs(a - 0.5) > abs(b - 0.5))


@wrong(CH, "gender_latents", "returns a tensor of ids instead of a list of ints", names=("list", "type", "tensor", "int"))
def gender_returns_tensor(latents, bios, candidates):
    g, p = _aurocs(latents, bios, candidates)
    return torch.tensor(sorted(i for i, a, b in zip(candidates, g, p) if abs(a - 0.5) >= 0.2 and abs(a - 0.5) > abs(b - 0.5)),
                        dtype=torch.long)


def _rank_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUROC with average ranks for ties, in float64."""
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / max(n_pos * n_neg, 1))


@correct(CH, "gender_latents", "own Mann-Whitney AUROC with tied ranks, in numpy float64")
def gender_own_auroc(latents, bios, candidates):
    x = latents.double().numpy()
    gender, profession = bios.gender.bool().numpy(), bios.profession.bool().numpy()
    found = []
    for i in candidates:
        g = abs(_rank_auroc(x[:, i], gender) - 0.5)
        p = abs(_rank_auroc(x[:, i], profession) - 0.5)
        if g >= 0.2 and g > p:
            found.append(int(i))
    return sorted(found)


@correct(CH, "gender_latents", "max(AUROC, 1 - AUROC) form, tensor masks, then a sorted list")
def gender_max_form(latents, bios, candidates):
    ids = torch.tensor(list(candidates), dtype=torch.long)
    labels = torch.stack([bios.gender.bool(), bios.profession.bool()], dim=1)
    scores = auroc(latents[:, ids], labels)
    separation = torch.maximum(scores, 1 - scores) - 0.5  # [2, n]
    keep = (separation[0] >= 0.2) & (separation[0] > separation[1])
    return sorted(ids[keep].tolist())


# ---------------------------------------------------------------------------------------
# Changes to `names` phrases after the first run (with the message that prompted each):
# none after the first run (results_before_ch03-06.json): no caught-but-unnamed message names its mistake in other words.
