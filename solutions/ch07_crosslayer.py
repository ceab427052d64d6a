"""Reference solutions for chapter ch07_crosslayer.

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
    latents = {}
    for s in range(clt.cfg.n_layers):
        pre = inputs[s] @ clt.W_enc[s] + clt.b_enc[s]
        latents[s] = pre * (pre > clt.threshold[s])
    return {t: sum(latents[s] @ clt.decoder(s, t) for s in range(t + 1)) + clt.b_dec[t]
            for t in range(clt.cfg.n_layers)}


def clt_loss(
    clt: CrossLayerTranscoder,
    inputs: Float[Tensor, "layer n d_in"],
    targets: Float[Tensor, "layer n d_out"],
    l1_coefficient: float,
) -> dict[str, Float[Tensor, ""]]:
    """mse = sum_t mean_n ||y_hat_tn - y_tn||^2; sparsity = sum_s mean_n sum_i f_sni ||d_si||
    with ||d_si||^2 = sum_{t >= s} ||W_dec[s, t]_i||^2; loss = mse + l1_coefficient * sparsity."""
    n = clt.cfg.n_layers
    latents = {s: clt.encode(s, inputs[s]) for s in range(n)}
    mse = sum((clt.decode_layer(t, latents) - targets[t]).pow(2).sum(-1).mean() for t in range(n))
    sparsity = 0.0
    for s in range(n):
        rows = torch.stack([clt.decoder(s, t) for t in range(s, n)])  # [targets, d_sae, d_out]
        norms = rows.pow(2).sum((0, 2)).sqrt()  # [d_sae]
        sparsity = sparsity + (latents[s] * norms).sum(-1).mean()
    return {"loss": mse + l1_coefficient * sparsity, "mse": mse, "sparsity": sparsity}


def clt_virtual_weights(
    clt: CrossLayerTranscoder, source: int, target_layer: int, read: Float[Tensor, "d_out n"]
) -> Float[Tensor, "d_sae n"]:
    """(sum_{source <= t < target_layer} W_dec[source, t]) @ read."""
    if not source < target_layer <= clt.cfg.n_layers:
        raise ValueError(f"a latent of layer {source} reaches layers {source + 1}..{clt.cfg.n_layers}, "
                         f"got target_layer {target_layer}")
    write = sum(clt.decoder(source, t) for t in range(source, target_layer))
    return write @ read


def splice_clt(
    model: HookedSAETransformer, clt: CrossLayerTranscoder, tokens: Int[Tensor, "batch pos"]
) -> tuple[Float[Tensor, "batch pos d_vocab"], dict[int, Float[Tensor, "batch pos d_out"]]]:
    """y_t -> y_hat_t + e_t with e_t = (y_t - y_hat_t) detached and y_hat_t = sum_{s<=t} f_s W_dec[s, t] + b_dec[t]."""
    latents: dict[int, Tensor] = {}
    errors: dict[int, Tensor] = {}

    def encode(layer: int):
        def hook(x: Tensor, hook) -> None:
            latents[layer] = clt.encode(layer, x)
        return hook

    def replace(layer: int):
        def hook(out: Tensor, hook) -> Tensor:
            recon = clt.decode_layer(layer, latents)
            errors[layer] = (out - recon).detach()
            return recon + errors[layer]
        return hook

    n = clt.cfg.n_layers
    hooks = [(clt.hook_in_at(s), encode(s)) for s in range(n)] + [(clt.hook_out_at(t), replace(t)) for t in range(n)]
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    return logits, errors


def mean_path_length(
    normalized: Float[Tensor, "n n"], logit_weights: Float[Tensor, " n"], sources: Bool[Tensor, " n"]
) -> float:
    """sum_k k m_k / sum_k m_k, m_k = sum over sources of (w A^k), k = 1, 2, ..."""
    term, k = logit_weights @ normalized, 1
    weighted, total = 0.0, 0.0
    while term.abs().sum() > 0:
        m_k = term[sources].sum().item()
        weighted, total = weighted + k * m_k, total + m_k
        term, k = term @ normalized, k + 1
    return weighted / total if total > 0 else float("nan")
