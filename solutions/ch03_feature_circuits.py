"""Reference solutions for chapter ch03_feature_circuits.

Generated from source/ch03_feature_circuits.py by `python -m utils.course build`: edit the source, not this file."""


from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.circuits import NodeBaseline
from utils.graphs import node_gradients, splice_for_edges
from utils.nodes import Node, dictionary_key, output_hook


def edge_effects(
    model: HookedSAETransformer,
    dictionaries: Sequence[SAE],
    upstream: SAE,
    downstream: SAE,
    tokens: Int[Tensor, "batch pos"],
    metric: Callable[[Tensor], Tensor],
    targets: Sequence[Node],
    baseline: NodeBaseline | None = None,
) -> Float[Tensor, "target pos d_up_plus_error"]:
    """E[t, p, j] = mean_b (dm_b/dd_t) . (dd_t/du_j(p)) . (u'_j(p) - u_j(p)); column d_sae: the upstream error."""
    grads = node_gradients(model, dictionaries, tokens, metric)
    down_hook, up_hook = downstream.cfg.metadata.hook_name, upstream.cfg.metadata.hook_name
    g_latents, g_error = grads[f"{down_hook}.latents"].grad, grads[f"{down_hook}.error"].grad
    with splice_for_edges(model, dictionaries, upstream, downstream) as nodes, torch.enable_grad():
        model(tokens)
        f, e = nodes["up.latents"], nodes["up.error"]
        f_change = (0.0 if baseline is None else baseline.latents[up_hook]) - f.detach()  # [batch, pos, d_sae]
        e_change = (0.0 if baseline is None else baseline.errors[up_hook]) - e.detach()  # [batch, pos, ...]
        rows = []
        for target in targets:
            if target.is_error:  # g . d for the error vector at its position
                weighted = (g_error[:, target.pos] * nodes["down.error"][:, target.pos]).sum()
            else:
                weighted = (g_latents[:, target.pos, target.index] * nodes["down.latents"][:, target.pos, target.index]).sum()
            grad_f, grad_e = torch.autograd.grad(weighted, [f, e], retain_graph=True)  # one VJP per target
            error_edge = (grad_e * e_change).flatten(2).sum(-1)  # [batch, pos]
            rows.append(torch.cat([grad_f * f_change, error_edge[..., None]], dim=-1).mean(0))
    return torch.stack(rows)


def ablation_edges(
    model: HookedSAETransformer,
    dictionaries: Sequence[SAE],
    upstream: SAE,
    downstream: SAE,
    tokens: Int[Tensor, "batch pos"],
    node: Node,
    threshold_exp: int,
) -> Float[Tensor, "pos d_down"]:
    """mean_b (f_down_ablated - f_down)[b, p, j], set to 0 where |.| < 2**threshold_exp; node zeroed at node.pos."""
    up_name = f"{output_hook(upstream)}.hook_sae_acts_post"
    down_name = f"{output_hook(downstream)}.hook_sae_acts_post"

    def zero(acts: Float[Tensor, "batch pos d_sae"], hook) -> Float[Tensor, "batch pos d_sae"]:
        acts = acts.clone()
        acts[:, node.pos, node.index] = 0.0
        return acts

    with model.saes(saes=list(dictionaries), use_error_term=True):
        _, clean = model.run_with_cache(tokens, names_filter=down_name)
        with model.hooks(fwd_hooks=[(up_name, zero)]):
            _, ablated = model.run_with_cache(tokens, names_filter=down_name)
    change = (ablated[down_name] - clean[down_name]).mean(0)  # [pos, d_sae]
    return torch.where(change.abs() >= 2.0 ** threshold_exp, change, 0.0)


def probe_latent_effects(
    probe_weight: Float[Tensor, " d_model"],
    dictionary: SAE,
    latents: Float[Tensor, "batch d_sae"],
    baseline: Float[Tensor, " d_sae"] | None = None,
) -> Float[Tensor, "batch d_sae"]:
    """effect[b, i] = (f'_i - latents[b, i]) * (W_dec[i] . w): z with latent i set to f'_i, minus z."""
    target = torch.zeros_like(latents) if baseline is None else baseline.expand_as(latents)
    return (target - latents) * (dictionary.W_dec @ probe_weight)


def gender_latents(latents: Float[Tensor, "batch d_sae"], bios, candidates: Sequence[int]) -> list[int]:
    """Candidates i, sorted, with |AUROC_gender(i) - 0.5| >= 0.2 and > |AUROC_profession(i) - 0.5|."""
    from utils.metrics import auroc

    scores = auroc(latents[:, list(candidates)], torch.stack([bios.gender.bool(), bios.profession.bool()], dim=1))
    gender, profession = (scores - 0.5).abs()  # [n_candidates] each
    return sorted(i for i, g, p in zip(candidates, gender.tolist(), profession.tolist()) if g >= 0.2 and g > p)
