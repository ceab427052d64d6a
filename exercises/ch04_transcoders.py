"""Exercise stubs for chapter ch04_transcoders.

Generated from source/ch04_transcoders.py by `python -m utils.course build`: edit the source, not this file."""


from typing import Any

import torch
from jaxtyping import Float, Int
from sae_lens import HookedSAETransformer, Transcoder
from torch import Tensor

from utils.nodes import layer_of


def transcoder_metrics(model: HookedSAETransformer, transcoder: Transcoder, tokens: Int[Tensor, "batch pos"]) -> dict[str, float]:
    """L0, explained variance of the MLP output, and losses clean / spliced / with error / MLP zeroed."""
    raise NotImplementedError("transcoder_metrics: your code here")


def de_embedding(model: HookedSAETransformer, transcoder: Transcoder, latent: int, scale: float) -> Float[Tensor, " d_vocab"]:
    """a[t] = (W_E[t] - mean(W_E[t])) . W_enc[:, latent] / scale + b_enc[latent]."""
    raise NotImplementedError("de_embedding: your code here")


def extended_de_embedding(
    model: HookedSAETransformer, up: Transcoder, down: Transcoder, latent: int, scales: tuple[float, float]
) -> Float[Tensor, " d_vocab"]:
    """a[t] = P(W_E[t] + up(W_E[t])) . W_enc_down[:, latent] / s_down + b_enc_down[latent], up(.) with scale s_up."""
    raise NotImplementedError("extended_de_embedding: your code here")


def pullback(model: HookedSAETransformer, up: Transcoder, down: Transcoder, latent: int, scale: float) -> Float[Tensor, " d_sae_up"]:
    """p[k] = (W_dec_up[k] - mean(W_dec_up[k])) . W_enc_down[:, latent] / scale."""
    raise NotImplementedError("pullback: your code here")


def input_dependent_connections(
    model: HookedSAETransformer, up: Transcoder, down: Transcoder, latent: int, tokens: Int[Tensor, "batch pos"], pos: int
) -> Float[Tensor, "batch d_sae_up"]:
    """c[b, k] = f_k(b, pos) * (P W_dec_up[k]) . W_enc_down[:, latent] / s_down(b, pos)."""
    raise NotImplementedError("input_dependent_connections: your code here")


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
    raise NotImplementedError("upstream_ablation_effects: your code here")


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
    raise NotImplementedError("attention_path_contributions: your code here")


def blind_case_study(bk: Any, latent: int) -> dict[str, Any]:
    """{"label": planted label the latent tracks, "upstream": main transcoder-0 latents feeding it}."""
    raise NotImplementedError("blind_case_study: your code here")
