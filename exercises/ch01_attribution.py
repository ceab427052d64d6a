"""Exercise stubs for chapter ch01_attribution.

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
    raise NotImplementedError("logit_diff: your code here")


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
    raise NotImplementedError("ablation_effects: your code here")


def attribution_patching(
    model: HookedSAETransformer,
    saes: list[SAE],
    tokens: Int[Tensor, "batch pos"],
    answer_ids: Int[Tensor, " batch"],
    distractor_ids: Int[Tensor, " batch"],
    patched: dict[str, Float[Tensor, "batch pos d_sae"]],
) -> dict[str, Float[Tensor, "batch pos d_sae"]]:
    """attr[hook][b, p, i] = dm_b/df_i(p) * (patched[hook][b, p, i] - f_i(p)), one fwd + one bwd."""
    raise NotImplementedError("attribution_patching: your code here")


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
    raise NotImplementedError("integrated_gradients: your code here")


def latent_to_latent_gradients(
    model: HookedSAETransformer, up_sae: SAE, down_sae: SAE, tokens: Int[Tensor, "1 n_pos"], pos: int
) -> Float[Tensor, "d_sae_down n_pos d_sae_up"]:
    """Sparse J[i, p, j] = d f_down_i(pos) / d f_up_j(p) over active i (at pos) and active j (at p <= pos)."""
    raise NotImplementedError("latent_to_latent_gradients: your code here")


def latent_to_logit_gradients(
    model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "1 n_pos"], token_ids: Int[Tensor, " k"]
) -> Float[Tensor, "k n_pos d_sae"]:
    """Sparse G[t, p, j] = d logits[0, -1, token_ids[t]] / d f_j(p) over active (p, j)."""
    raise NotImplementedError("latent_to_logit_gradients: your code here")


def token_to_latent_gradients(
    model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "1 n_pos"], pos: int
) -> Float[Tensor, "d_sae n_pos"]:
    """Sparse A[i, p] = (d f_i(pos) / d e(p)) . e(p) over active i and p <= pos."""
    raise NotImplementedError("token_to_latent_gradients: your code here")


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
    raise NotImplementedError("attn_latent_path_effects: your code here")
