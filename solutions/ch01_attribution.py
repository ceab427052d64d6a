"""Reference solutions for chapter ch01_attribution.

Generated from source/ch01_attribution.py by `python -m utils.course build`: edit the source, not this file."""


from typing import Literal

import einops
import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.attribution import splice_for_gradients
from utils.progress import progress


def logit_diff(
    logits: Float[Tensor, "batch pos d_vocab"], answer_ids: Int[Tensor, " batch"], distractor_ids: Int[Tensor, " batch"]
) -> Float[Tensor, " batch"]:
    """m_b = logits[b, -1, answer_b] - logits[b, -1, distractor_b]."""
    final = logits[:, -1]  # [batch, d_vocab]
    answer = final.gather(-1, answer_ids[:, None])[:, 0]
    distractor = final.gather(-1, distractor_ids[:, None])[:, 0]
    return answer - distractor


def ablation_effects(
    model: HookedSAETransformer,
    sae: SAE,
    tokens: Int[Tensor, "batch pos"],
    answer_ids: Int[Tensor, " batch"],
    distractor_ids: Int[Tensor, " batch"],
    latents: Int[Tensor, " n_latents"],
    pos: int = -1,
    baseline: Float[Tensor, " d_sae"] | None = None,
) -> Float[Tensor, "batch n_latents"]:
    """effect[b, i] = m_b(f_{latents[i]} at pos := baseline) - m_b(clean), error term kept."""
    acts_hook = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    with model.saes(saes=[sae], use_error_term=True):  # spliced inside the block only
        clean = logit_diff(model(tokens), answer_ids, distractor_ids)
        effects = []
        for latent in progress(latents.tolist(), desc="ablating"):
            value = 0.0 if baseline is None else baseline[latent].item()

            def ablate(acts: Float[Tensor, "batch pos d_sae"], hook) -> Float[Tensor, "batch pos d_sae"]:
                acts[:, pos, latent] = value
                return acts

            logits = model.run_with_hooks(tokens, fwd_hooks=[(acts_hook, ablate)])
            effects.append(logit_diff(logits, answer_ids, distractor_ids) - clean)
    return torch.stack(effects, dim=-1)


def attribution_patching(
    model: HookedSAETransformer,
    saes: list[SAE],
    tokens: Int[Tensor, "batch pos"],
    answer_ids: Int[Tensor, " batch"],
    distractor_ids: Int[Tensor, " batch"],
    patched: dict[str, Float[Tensor, "batch pos d_sae"]],
) -> dict[str, Float[Tensor, "batch pos d_sae"]]:
    """attr[hook][b, p, i] = dm_b/df_i(p) * (patched[hook][b, p, i] - f_i(p)), one fwd + one bwd."""
    with splice_for_gradients(model, saes) as nodes, torch.enable_grad():
        logit_diff(model(tokens), answer_ids, distractor_ids).sum().backward()
    attributions = {}
    for sae in saes:
        hook = sae.cfg.metadata.hook_name
        latents = nodes[f"{hook}.latents"]
        attributions[hook] = latents.grad * (patched[hook] - latents.detach())
    return attributions


def integrated_gradients(
    model: HookedSAETransformer,
    sae: SAE,
    tokens: Int[Tensor, "batch pos"],
    answer_ids: Int[Tensor, " batch"],
    distractor_ids: Int[Tensor, " batch"],
    patched: Float[Tensor, "batch pos d_sae"],
    steps: int = 10,
) -> Float[Tensor, "batch pos d_sae"]:
    """IG[b, p, i] = (patched - clean)[b, p, i] * mean_k dm_b/df_i(p) at clean + alpha_k (patched - clean)."""
    acts_hook = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    with model.saes(saes=[sae], use_error_term=True):
        _, cache = model.run_with_cache(tokens, names_filter=acts_hook)
        clean = cache[acts_hook]
        total_grad = torch.zeros_like(clean)
        for k in range(steps):
            alpha = (k + 0.5) / steps
            point = (clean + alpha * (patched - clean)).requires_grad_(True)
            with torch.enable_grad():
                logits = model.run_with_hooks(tokens, fwd_hooks=[(acts_hook, lambda acts, hook: point)])
                logit_diff(logits, answer_ids, distractor_ids).sum().backward()
            total_grad += point.grad
    return (patched - clean) * total_grad / steps


def latent_to_latent_gradients(
    model: HookedSAETransformer, up_sae: SAE, down_sae: SAE, tokens: Int[Tensor, "1 n_pos"], pos: int
) -> Float[Tensor, "d_sae_down n_pos d_sae_up"]:
    """Sparse J[i, p, j] = d f_down_i(pos) / d f_up_j(p) over active i (at pos) and active j (at p <= pos)."""
    up_hook, down_hook = up_sae.cfg.metadata.hook_name, down_sae.cfg.metadata.hook_name
    pos = pos % tokens.shape[1]
    kept = {}

    def keep(x: Float[Tensor, "1 n_pos d_model"], hook) -> None:
        kept["x"] = x

    with splice_for_gradients(model, [up_sae]) as nodes, torch.enable_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(down_hook, keep)])
        up = nodes[f"{up_hook}.latents"]  # [1, n_pos, d_sae_up], the leaf to differentiate
        down = down_sae.encode(kept["x"][0, pos])  # [d_sae_down]
        rows = down.detach().nonzero()[:, 0]  # active downstream latents
        up_pos, up_latent = (up[0, : pos + 1].detach() > 0).nonzero(as_tuple=True)  # active upstream ones
        values = torch.stack([
            torch.autograd.grad(down[i], up, retain_graph=True)[0][0, up_pos, up_latent] for i in rows.tolist()
        ])  # [n_down, n_up]
    indices = torch.stack([
        rows.repeat_interleave(len(up_pos)), up_pos.repeat(len(rows)), up_latent.repeat(len(rows))
    ])  # [3, n_down * n_up], rows of `values` flattened in order
    shape = (down_sae.cfg.d_sae, tokens.shape[1], up_sae.cfg.d_sae)
    return torch.sparse_coo_tensor(indices, values.flatten(), shape, check_invariants=True).coalesce()


def latent_to_logit_gradients(
    model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "1 n_pos"], token_ids: Int[Tensor, " k"]
) -> Float[Tensor, "k n_pos d_sae"]:
    """Sparse G[t, p, j] = d logits[0, -1, token_ids[t]] / d f_j(p) over active (p, j)."""
    hook = sae.cfg.metadata.hook_name
    with splice_for_gradients(model, [sae]) as nodes, torch.enable_grad():
        final = model(tokens)[0, -1]  # [d_vocab]
        latents = nodes[f"{hook}.latents"]  # [1, n_pos, d_sae], the leaf
        where = (latents[0].detach() > 0).nonzero(as_tuple=True)
        values = torch.stack([
            torch.autograd.grad(final[t], latents, retain_graph=True)[0][0][where] for t in token_ids.tolist()
        ])  # [k, n_active]
    k, n_active = values.shape
    indices = torch.stack([
        torch.arange(k, device=values.device).repeat_interleave(n_active), where[0].repeat(k), where[1].repeat(k)
    ])
    return torch.sparse_coo_tensor(indices, values.flatten(), (k, tokens.shape[1], sae.cfg.d_sae), check_invariants=True).coalesce()


def token_to_latent_gradients(
    model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "1 n_pos"], pos: int
) -> Float[Tensor, "d_sae n_pos"]:
    """Sparse A[i, p] = (d f_i(pos) / d e(p)) . e(p) over active i and p <= pos."""
    pos = pos % tokens.shape[1]
    kept = {}

    def leaf_input(x: Float[Tensor, "1 n_pos d_model"], hook) -> Float[Tensor, "1 n_pos d_model"]:
        kept["e"] = x.detach().requires_grad_(True)
        return kept["e"]

    def keep(x: Float[Tensor, "1 n_pos d_model"], hook) -> None:
        kept["x"] = x

    with torch.enable_grad():
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_pre", leaf_input), (sae.cfg.metadata.hook_name, keep)])
        latents = sae.encode(kept["x"][0, pos])  # [d_sae]
        rows = latents.detach().nonzero()[:, 0]
        e = kept["e"][0]  # [n_pos, d_model]
        values = torch.stack([
            (torch.autograd.grad(latents[i], kept["e"], retain_graph=True)[0][0] * e).sum(-1)[: pos + 1]
            for i in rows.tolist()
        ]).detach()  # [n_active, pos + 1]
    indices = torch.stack([rows.repeat_interleave(pos + 1), torch.arange(pos + 1, device=rows.device).repeat(len(rows))])
    return torch.sparse_coo_tensor(indices, values.flatten(), (sae.cfg.d_sae, tokens.shape[1]), check_invariants=True).coalesce()


def attn_latent_path_effects(
    model: HookedSAETransformer,
    attn_sae: SAE,
    tokens: Int[Tensor, "batch pos"],
    answer_ids: Int[Tensor, " batch"],
    distractor_ids: Int[Tensor, " batch"],
    layer: int,
    head: int,
    latents: Int[Tensor, " n_latents"],
    input: Literal["q", "k", "v"] = "k",
) -> Float[Tensor, "batch n_latents"]:
    """effect[b, i] = m_b(head's `input` minus f_i d_i W_O) - m_b(clean), one path at a time."""
    z_hook = attn_sae.cfg.metadata.hook_name
    source_layer = int(z_hook.split(".")[1])  # "blocks.{L}.attn.hook_z"
    acts_hook = f"{z_hook}.hook_sae_acts_post"
    _, cache = model.run_with_cache_with_saes(tokens, saes=[attn_sae], names_filter=acts_hook)
    acts = cache[acts_hook]  # [batch, pos, d_sae]
    clean = logit_diff(model(tokens), answer_ids, distractor_ids)
    model.set_use_split_qkv_input(True)
    try:
        effects = []
        for latent in progress(latents.tolist(), desc="path patching"):
            z = einops.rearrange(acts[..., latent, None] * attn_sae.W_dec[latent],
                                 "b p (n h) -> b p n h", n=model.cfg.n_heads)
            contribution = einops.einsum(z, model.W_O[source_layer], "b p n h, n h d -> b p d")

            def remove(x: Float[Tensor, "batch pos n_heads d_model"], hook) -> Float[Tensor, "batch pos n_heads d_model"]:
                x[:, :, head] -= contribution
                return x

            logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_{input}_input", remove)])
            effects.append(logit_diff(logits, answer_ids, distractor_ids) - clean)
    finally:
        model.set_use_split_qkv_input(False)
    return torch.stack(effects, dim=-1)
