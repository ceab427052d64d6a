"""Reference solutions for chapter ch06_training.

Generated from source/ch06_training.py by `python -m utils.course build`: edit the source, not this file."""


import math

import torch
from jaxtyping import Bool, Float
from sae_lens import (
    BatchTopKTrainingSAEConfig,
    HookedSAETransformer,
    JumpReLUTrainingSAEConfig,
    LoggingConfig,
    StandardTrainingSAEConfig,
    TopKTrainingSAEConfig,
    Transcoder,
)
from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.saes.sae import TrainingSAEConfig
from torch import Tensor


def sae_training_config(architecture: str, d_in: int, d_sae: int, sparsity: float) -> TrainingSAEConfig:
    """The SAELens training config of ``architecture`` with ``sparsity`` as its knob:
    standard -> l1_coefficient, topk -> k (int), batchtopk -> k (mean L0), jumprelu -> l0_coefficient."""
    shape = dict(d_in=d_in, d_sae=d_sae, normalize_activations="expected_average_only_in")
    if architecture == "standard":
        return StandardTrainingSAEConfig(l1_coefficient=sparsity, **shape)
    if architecture == "topk":
        return TopKTrainingSAEConfig(k=round(sparsity), **shape)
    if architecture == "batchtopk":
        return BatchTopKTrainingSAEConfig(k=float(sparsity), **shape)
    if architecture == "jumprelu":
        return JumpReLUTrainingSAEConfig(l0_coefficient=sparsity, **shape)
    raise ValueError(f"unknown architecture {architecture!r}: expected standard, topk, batchtopk or jumprelu")


def runner_config(
    model: HookedSAETransformer,
    sae_cfg: TrainingSAEConfig,
    hook_name: str,
    context_size: int,
    steps: int,
    batch_tokens: int,
    lr: float = 3e-3,
) -> LanguageModelSAERunnerConfig:
    """training_tokens = steps * batch_tokens; buffer rows n = ceil(2 * batch_tokens / context_size);
    warm-up steps // 20, decay steps // 5; BOS excluded; no wandb, no files."""
    return LanguageModelSAERunnerConfig(
        sae=sae_cfg,
        hook_name=hook_name,
        context_size=context_size,
        training_tokens=steps * batch_tokens,
        train_batch_size_tokens=batch_tokens,
        lr=lr,
        lr_warm_up_steps=steps // 20,
        lr_decay_steps=steps // 5,
        n_batches_in_buffer=math.ceil(2 * batch_tokens / context_size),
        n_batches_for_norm_estimate=10,
        exclude_special_tokens=[model.tokenizer.bos_token_id],
        device=str(model.cfg.device),
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        output_path=None,
        verbose=False,
    )


def density_stats(acts: Float[Tensor, "n d_sae"], dense_above: float = 0.1) -> dict[str, Tensor]:
    """density_i = (1/n) sum_t 1[f_i(t) > 0]; dead_i = (density_i == 0); dense_i = (density_i > dense_above)."""
    density = (acts > 0).to(acts.dtype).mean(0)
    return {"density": density, "dead": density == 0, "dense": density > dense_above}


def label_precision(acts: Float[Tensor, "n d_sae"], labels: Bool[Tensor, " n"]) -> Float[Tensor, " d_sae"]:
    """precision_i = sum_t f_i(t) 1[label_t] / sum_t f_i(t), and 0 where sum_t f_i(t) = 0."""
    on_label = acts[labels].sum(0)
    total = acts.sum(0)
    return torch.where(total > 0, on_label / total.clamp_min(torch.finfo(acts.dtype).tiny), 0.0)


def transcoder_loss(
    transcoder: Transcoder,
    x: Float[Tensor, "n d_in"],
    y: Float[Tensor, "n d_out"],
    l1_coefficient: float,
) -> dict[str, Float[Tensor, ""]]:
    """mse = mean_t ||y_hat_t - y_t||^2; sparsity = mean_t sum_i f_i(x_t) ||W_dec[i]||;
    loss = mse + l1_coefficient * sparsity."""
    acts = transcoder.encode(x)  # [n, d_sae]
    y_hat = transcoder.decode(acts)  # [n, d_out]
    mse = (y_hat - y).pow(2).sum(-1).mean()
    sparsity = (acts * transcoder.W_dec.norm(dim=-1)).sum(-1).mean()
    return {"loss": mse + l1_coefficient * sparsity, "mse": mse, "sparsity": sparsity}
