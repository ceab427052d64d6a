"""Exercise stubs for chapter ch00_toolkit.

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
    raise NotImplementedError("top_k_latents: your code here")


def latent_logit_effects(model: HookedSAETransformer, sae: SAE, latent: int) -> Float[Tensor, " d_vocab"]:
    """Direct logit effect of one latent: W_dec[latent] @ W_U."""
    raise NotImplementedError("latent_logit_effects: your code here")


def max_activating_contexts(
    model: HookedSAETransformer,
    sae: SAE,
    latent: int,
    tokens: Int[Tensor, "batch pos"],
    k: int = 10,
    batch_size: int = 64,
) -> tuple[Float[Tensor, " k"], Int[Tensor, "k 2"]]:
    """Top-k activations of one latent over every (sequence, position) of ``tokens``."""
    raise NotImplementedError("max_activating_contexts: your code here")


def reconstruction_metrics(
    model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "batch pos"]
) -> dict[str, float]:
    """L0, explained variance and CE-loss recovered of ``sae`` spliced at its hook."""
    raise NotImplementedError("reconstruction_metrics: your code here")


def latent_aurocs(acts: Float[Tensor, "n d_sae"], labels: Bool[Tensor, " n"]) -> Float[Tensor, " d_sae"]:
    """AUROC of each latent's activation as a score for ``labels`` (ties count 1/2)."""
    raise NotImplementedError("latent_aurocs: your code here")
