"""Reference solutions for chapter ch04_transcoders.

Generated from source/ch04_transcoders.py by `python -m utils.course build`: edit the source, not this file."""


from typing import Any

import torch
from jaxtyping import Float, Int
from sae_lens import HookedSAETransformer, Transcoder
from torch import Tensor

from utils.nodes import layer_of


def transcoder_metrics(model: HookedSAETransformer, transcoder: Transcoder, tokens: Int[Tensor, "batch pos"]) -> dict[str, float]:
    """L0, explained variance of the MLP output, and losses clean / spliced / with error / MLP zeroed."""
    out_hook = transcoder.cfg.metadata.hook_name_out  # SAELens caches a transcoder under the hook it writes
    ce_spliced, cache = model.run_with_cache_with_saes(tokens, saes=[transcoder], return_type="loss")
    acts = cache[f"{out_hook}.hook_sae_acts_post"][:, 1:]  # [batch, pos - 1, d_sae], no BOS
    y_hat = cache[f"{out_hook}.hook_sae_recons"][:, 1:]
    ce_clean, clean_cache = model.run_with_cache(tokens, return_type="loss", names_filter=out_hook)
    y = clean_cache[out_hook][:, 1:]  # the MLP's own output
    with model.saes(saes=[transcoder], use_error_term=True):
        ce_with_error = model(tokens, return_type="loss")
    ce_zero = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(out_hook, lambda act, hook: torch.zeros_like(act))])
    residual = (y - y_hat).pow(2).sum()
    total = (y - y.mean(dim=(0, 1))).pow(2).sum()
    return {
        "l0": (acts > 0).float().sum(-1).mean().item(),
        "explained_variance": (1 - residual / total).item(),
        "ce_clean": ce_clean.item(),
        "ce_spliced": ce_spliced.item(),
        "ce_with_error": ce_with_error.item(),
        "ce_zero": ce_zero.item(),
        "ce_recovered": ((ce_zero - ce_spliced) / (ce_zero - ce_clean)).item(),
    }


def de_embedding(model: HookedSAETransformer, transcoder: Transcoder, latent: int, scale: float) -> Float[Tensor, " d_vocab"]:
    """a[t] = (W_E[t] - mean(W_E[t])) . W_enc[:, latent] / scale + b_enc[latent]."""
    centred = model.W_E - model.W_E.mean(-1, keepdim=True)  # the LayerNorm removes each vector's mean
    return centred @ transcoder.W_enc[:, latent] / scale + transcoder.b_enc[latent]


def extended_de_embedding(
    model: HookedSAETransformer, up: Transcoder, down: Transcoder, latent: int, scales: tuple[float, float]
) -> Float[Tensor, " d_vocab"]:
    """a[t] = P(W_E[t] + up(W_E[t])) . W_enc_down[:, latent] / s_down + b_enc_down[latent], up(.) with scale s_up."""
    s_up, s_down = scales

    def centre(x: Float[Tensor, "d_vocab d_model"]) -> Float[Tensor, "d_vocab d_model"]:
        return x - x.mean(-1, keepdim=True)

    up_acts = (centre(model.W_E) @ up.W_enc / s_up + up.b_enc).relu()  # [d_vocab, d_sae_up]
    resid = model.W_E + up_acts @ up.W_dec + up.b_dec  # embedding plus what the MLP adds
    return centre(resid) @ down.W_enc[:, latent] / s_down + down.b_enc[latent]


def pullback(model: HookedSAETransformer, up: Transcoder, down: Transcoder, latent: int, scale: float) -> Float[Tensor, " d_sae_up"]:
    """p[k] = (W_dec_up[k] - mean(W_dec_up[k])) . W_enc_down[:, latent] / scale."""
    writes = up.W_dec - up.W_dec.mean(-1, keepdim=True)  # [d_sae_up, d_model], what the LayerNorm sees
    return writes @ down.W_enc[:, latent] / scale


def input_dependent_connections(
    model: HookedSAETransformer, up: Transcoder, down: Transcoder, latent: int, tokens: Int[Tensor, "batch pos"], pos: int
) -> Float[Tensor, "batch d_sae_up"]:
    """c[b, k] = f_k(b, pos) * (P W_dec_up[k]) . W_enc_down[:, latent] / s_down(b, pos)."""
    scale_hook = f"blocks.{layer_of(down.cfg.metadata.hook_name)}.ln2.hook_scale"
    up_hook = up.cfg.metadata.hook_name
    _, cache = model.run_with_cache(tokens, names_filter=[up_hook, scale_hook])
    up_acts = up.encode(cache[up_hook][:, pos])  # [batch, d_sae_up]
    scale = cache[scale_hook][:, pos]  # [batch, 1]
    return up_acts * pullback(model, up, down, latent, 1.0) / scale


def upstream_ablation_effects(
    model: HookedSAETransformer,
    up: Transcoder,
    down: Transcoder,
    latent: int,
    tokens: Int[Tensor, "batch pos"],
    pos: int,
    up_latents: Int[Tensor, " n_up"],
) -> Float[Tensor, "batch n_up"]:
    """effect[b, i] = a_latent(b, pos | f_{up_latents[i]} := 0 everywhere) - a_latent(b, pos), error term kept."""
    up_acts_hook = f"{up.cfg.metadata.hook_name_out}.hook_sae_acts_post"  # the latents sit under the output hook
    down_hook = down.cfg.metadata.hook_name
    stop = layer_of(down_hook) + 1

    def downstream_preact(fwd_hooks: list) -> Float[Tensor, " batch"]:
        kept = {}
        with model.hooks(fwd_hooks=fwd_hooks + [(down_hook, lambda x, hook: kept.update(x=x))]):
            model(tokens, stop_at_layer=stop)
        return kept["x"][:, pos] @ down.W_enc[:, latent] + down.b_enc[latent]

    with model.saes(saes=[up], use_error_term=True):
        clean = downstream_preact([])
        effects = []
        for k in up_latents.tolist():
            def zero(acts: Float[Tensor, "batch pos d_sae"], hook, k: int = k) -> Float[Tensor, "batch pos d_sae"]:
                acts[..., k] = 0.0
                return acts
            effects.append(downstream_preact([(up_acts_hook, zero)]) - clean)
    return torch.stack(effects, dim=-1)


def attention_path_contributions(
    model: HookedSAETransformer,
    up: Transcoder,
    down: Transcoder,
    latent: int,
    up_latent: int,
    head: int,
    tokens: Int[Tensor, "batch pos"],
    pos: int,
) -> Float[Tensor, "batch pos"]:
    """c[b, s] = A[b, head, pos, s] f_k(b, s) ((P d_k) / s1(b, s) * w1) W_V W_O . P W_enc[:, latent] / s2(b, pos)."""
    layer = layer_of(down.cfg.metadata.hook_name)
    up_hook = up.cfg.metadata.hook_name
    names = [up_hook, f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.ln1.hook_scale", f"blocks.{layer}.ln2.hook_scale"]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    up_acts = up.encode(cache[up_hook])[..., up_latent]  # [batch, pos]
    pattern = cache[names[1]][:, head, pos]  # [batch, src]: where the destination looks
    s1, s2 = cache[names[2]][..., 0], cache[names[3]][:, pos]  # [batch, src], [batch, 1]
    d = up.W_dec[up_latent] - up.W_dec[up_latent].mean()
    attn = model.blocks[layer].attn
    out = (d * model.blocks[layer].ln1.w) @ attn.W_V[head] @ attn.W_O[head]  # [d_model] per unit over s1
    read = (out - out.mean()) @ down.W_enc[:, latent]  # a number
    return pattern * up_acts / s1 * read / s2


def blind_case_study(bk: Any, latent: int) -> dict[str, Any]:
    """{"label": planted label the latent tracks, "upstream": main transcoder-0 latents feeding it}."""
    # The labels, read from the case files: where each latent fires hardest, and what it promotes.
    labels = {
        29: "greater_than_end",  # the century after "to the year" only, promoting later years
        147: "century",  # every century token, after "from the year" as well as "to the year"
        172: "induction",  # the words of a repeated span's second copy
    }
    # The upstream latents, computed: mean input-dependent connection at its strongest activations.
    model, up, down = bk.model, bk.dictionary("transcoder", 0), bk.dictionary("transcoder", 1)
    tokens = bk.world.corpus(n_seqs=64, seq_len=48, seed=0).tokens
    _, cache = model.run_with_cache(tokens, names_filter=["blocks.0.ln2.hook_normalized", "blocks.1.ln2.hook_scale",
                                                          "blocks.1.ln2.hook_normalized"])
    acts = down.encode(cache["blocks.1.ln2.hook_normalized"])[..., latent].flatten()
    strongest = acts.topk(32).indices
    up_acts = up.encode(cache["blocks.0.ln2.hook_normalized"]).flatten(0, 1)[strongest]  # [32, d_up]
    scale = cache["blocks.1.ln2.hook_scale"].flatten()[strongest]  # [32]
    connection = (up_acts * pullback(model, up, down, latent, 1.0) / scale[:, None]).mean(0)
    top = connection.topk(3)
    upstream = top.indices[top.values >= 0.25 * top.values[0]]  # the few that matter, not a long tail
    return {"label": labels[latent], "upstream": upstream.tolist()}
