"""Exercise stubs for chapter ch07_crosslayer.

Generated from source/ch07_crosslayer.py by `python -m utils.course build`: edit the source, not this file."""


import torch
from jaxtyping import Bool, Float, Int
from sae_lens import HookedSAETransformer
from torch import Tensor

from utils.clt import CrossLayerTranscoder


def clt_forward(
    clt: CrossLayerTranscoder, inputs: dict[int, Float[Tensor, "... d_in"]]
) -> dict[int, Float[Tensor, "... d_out"]]:
    """f_s = z_s * [z_s > theta_s], z_s = x_s W_enc[s] + b_enc[s];
    y_t = sum_{s <= t} f_s W_dec[s, t] + b_dec[t], for every layer t."""
    raise NotImplementedError("clt_forward: your code here")


def clt_loss(
    clt: CrossLayerTranscoder,
    inputs: Float[Tensor, "layer n d_in"],
    targets: Float[Tensor, "layer n d_out"],
    l1_coefficient: float,
) -> dict[str, Float[Tensor, ""]]:
    """mse = sum_t mean_n ||y_hat_tn - y_tn||^2; sparsity = sum_s mean_n sum_i f_sni ||d_si||
    with ||d_si||^2 = sum_{t >= s} ||W_dec[s, t]_i||^2; loss = mse + l1_coefficient * sparsity."""
    raise NotImplementedError("clt_loss: your code here")


def clt_virtual_weights(
    clt: CrossLayerTranscoder, source: int, target_layer: int, read: Float[Tensor, "d_out n"]
) -> Float[Tensor, "d_sae n"]:
    """(sum_{source <= t < target_layer} W_dec[source, t]) @ read."""
    raise NotImplementedError("clt_virtual_weights: your code here")


def splice_clt(
    model: HookedSAETransformer, clt: CrossLayerTranscoder, tokens: Int[Tensor, "batch pos"]
) -> tuple[Float[Tensor, "batch pos d_vocab"], dict[int, Float[Tensor, "batch pos d_out"]]]:
    """y_t -> y_hat_t + e_t with e_t = (y_t - y_hat_t) detached and y_hat_t = sum_{s<=t} f_s W_dec[s, t] + b_dec[t]."""
    raise NotImplementedError("splice_clt: your code here")


def mean_path_length(
    normalized: Float[Tensor, "n n"], logit_weights: Float[Tensor, " n"], sources: Bool[Tensor, " n"]
) -> float:
    """sum_k k m_k / sum_k m_k, m_k = sum over sources of (w A^k), k = 1, 2, ..."""
    raise NotImplementedError("mean_path_length: your code here")
