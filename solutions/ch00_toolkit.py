"""Reference solutions for chapter ch00_toolkit.

Generated from source/ch00_toolkit.py by `python -m utils.course build`: edit the source, not this file."""


import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.progress import progress


def top_k_latents(
    model: HookedSAETransformer, sae: SAE, prompt: str, pos: int, k: int
) -> tuple[Float[Tensor, " k"], Int[Tensor, " k"]]:
    """The k largest entries of f(x) = ReLU(W_enc^T x + b_enc) at position ``pos``.

    Returns (values, indices), values in decreasing order.
    """
    hook_name = sae.cfg.metadata.hook_name
    _, cache = model.run_with_cache_with_saes(prompt, saes=[sae])
    acts = cache[f"{hook_name}.hook_sae_acts_post"][0, pos]  # [d_sae]
    values, indices = acts.topk(k)
    return values, indices


def latent_logit_effects(model: HookedSAETransformer, sae: SAE, latent: int) -> Float[Tensor, " d_vocab"]:
    """Direct logit effect of one latent: W_dec[latent] @ W_U."""
    return sae.W_dec[latent] @ model.W_U


def max_activating_contexts(
    model: HookedSAETransformer,
    sae: SAE,
    latent: int,
    tokens: Int[Tensor, "batch pos"],
    k: int = 10,
    batch_size: int = 64,
) -> tuple[Float[Tensor, " k"], Int[Tensor, "k 2"]]:
    """Top-k activations of one latent over every (sequence, position) of ``tokens``."""
    hook_name = sae.cfg.metadata.hook_name
    layer = int(hook_name.split(".")[1])  # hook names read "blocks.{layer}...."
    acts = []
    for start in progress(range(0, tokens.shape[0], batch_size), desc=f"latent {latent}"):
        _, cache = model.run_with_cache_with_saes(
            tokens[start : start + batch_size], saes=[sae], stop_at_layer=layer + 1,
            names_filter=f"{hook_name}.hook_sae_acts_post",
        )
        acts.append(cache[f"{hook_name}.hook_sae_acts_post"][..., latent])  # [batch, pos]
    acts = torch.cat(acts)  # [n_seqs, pos]
    values, flat = acts.flatten().topk(k)
    seq_pos = torch.stack([flat // acts.shape[1], flat % acts.shape[1]], dim=-1)
    return values, seq_pos


def reconstruction_metrics(
    model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "batch pos"]
) -> dict[str, float]:
    """L0, explained variance and CE-loss recovered of ``sae`` spliced at its hook."""
    hook_name = sae.cfg.metadata.hook_name
    ce_spliced, cache = model.run_with_cache_with_saes(tokens, saes=[sae], return_type="loss")
    x = cache[f"{hook_name}.hook_sae_input"][:, 1:]  # [batch, pos - 1, d_model], no BOS
    x_hat = cache[f"{hook_name}.hook_sae_recons"][:, 1:]
    acts = cache[f"{hook_name}.hook_sae_acts_post"][:, 1:]
    residual = (x - x_hat).pow(2).sum()
    total = (x - x.mean(dim=(0, 1))).pow(2).sum()
    ce_clean = model(tokens, return_type="loss")
    ce_zero = model.run_with_hooks(
        tokens, return_type="loss", fwd_hooks=[(hook_name, lambda act, hook: torch.zeros_like(act))]
    )
    return {
        "l0": (acts > 0).float().sum(-1).mean().item(),
        "explained_variance": (1 - residual / total).item(),
        "ce_clean": ce_clean.item(),
        "ce_spliced": ce_spliced.item(),
        "ce_zero": ce_zero.item(),
        "ce_recovered": ((ce_zero - ce_spliced) / (ce_zero - ce_clean)).item(),
    }


def latent_aurocs(acts: Float[Tensor, "n d_sae"], labels: Bool[Tensor, " n"]) -> Float[Tensor, " d_sae"]:
    """AUROC of each latent's activation as a score for ``labels`` (ties count 1/2)."""
    pos = acts[labels].T.contiguous()  # [d_sae, P]
    neg = acts[~labels].T.sort(dim=-1).values.contiguous()  # [d_sae, N], sorted per latent
    below = torch.searchsorted(neg, pos, side="left")  # negatives strictly below each positive
    below_or_tied = torch.searchsorted(neg, pos, side="right")
    wins = (below + below_or_tied).float() / 2  # below + ties / 2
    return wins.sum(-1) / (pos.shape[1] * neg.shape[1])
