"""Exercise stubs for chapter ch06_training.

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
    raise NotImplementedError("sae_training_config: your code here")


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
    raise NotImplementedError("runner_config: your code here")


def density_stats(acts: Float[Tensor, "n d_sae"], dense_above: float = 0.1) -> dict[str, Tensor]:
    """density_i = (1/n) sum_t 1[f_i(t) > 0]; dead_i = (density_i == 0); dense_i = (density_i > dense_above)."""
    raise NotImplementedError("density_stats: your code here")


def label_precision(acts: Float[Tensor, "n d_sae"], labels: Bool[Tensor, " n"]) -> Float[Tensor, " d_sae"]:
    """precision_i = sum_t f_i(t) 1[label_t] / sum_t f_i(t), and 0 where sum_t f_i(t) = 0."""
    raise NotImplementedError("label_precision: your code here")


def transcoder_loss(
    transcoder: Transcoder,
    x: Float[Tensor, "n d_in"],
    y: Float[Tensor, "n d_out"],
    l1_coefficient: float,
) -> dict[str, Float[Tensor, ""]]:
    """mse = mean_t ||y_hat_t - y_t||^2; sparsity = mean_t sum_i f_i(x_t) ||W_dec[i]||;
    loss = mse + l1_coefficient * sparsity."""
    raise NotImplementedError("transcoder_loss: your code here")
