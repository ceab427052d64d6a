"""Independent catalog, chapter 06 (training): plausible learner implementations of
sae_training_config, runner_config, density_stats, label_precision and transcoder_loss,
written from the chapter's text and reference alone (see ``benchmarks/independent``)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from sae_lens import (
    BatchTopKTrainingSAEConfig,
    JumpReLUTrainingSAEConfig,
    LoggingConfig,
    StandardTrainingSAEConfig,
    TopKTrainingSAEConfig,
)
from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.saes.sae import TrainingSAEConfig

from benchmarks.independent import correct, wrong

CH = "ch06_training"
NORM = "expected_average_only_in"

# ---------------------------------------------------------------------------------------
# sae_training_config


def _config(architecture, d_in, d_sae, sparsity, *, topk_k=round, batchtopk_k=float, jumprelu_field="l0_coefficient",
            normalize=NORM, unknown="valueerror", extra=None):
    shape = dict(d_in=d_in, d_sae=d_sae, **({"normalize_activations": normalize} if normalize else {}), **(extra or {}))
    if architecture == "standard":
        return StandardTrainingSAEConfig(l1_coefficient=sparsity, **shape)
    if architecture == "topk":
        return TopKTrainingSAEConfig(k=topk_k(sparsity), **shape)
    if architecture == "batchtopk":
        return BatchTopKTrainingSAEConfig(k=batchtopk_k(sparsity), **shape)
    if architecture == "jumprelu":
        return JumpReLUTrainingSAEConfig(**{jumprelu_field: sparsity}, **shape)
    if unknown == "valueerror":
        raise ValueError(f"unknown architecture {architecture!r}: expected standard, topk, batchtopk or jumprelu")
    if unknown == "vague":
        raise ValueError("bad architecture")
    return None


@wrong(CH, "sae_training_config", "TopK's k left a float (not a whole number)", names=("int", "whole", "k"))
def config_topk_float(architecture, d_in, d_sae, sparsity):
    return _config(architecture, d_in, d_sae, sparsity, topk_k=float)


@wrong(CH, "sae_training_config", "TopK's k truncated with int() instead of rounded", names=("round", "int", "whole", "k"))
def config_topk_truncated(architecture, d_in, d_sae, sparsity):
    return _config(architecture, d_in, d_sae, sparsity, topk_k=int)


@wrong(CH, "sae_training_config", "BatchTopK's k rounded to a whole number (it takes a mean)",
       names=("float", "mean", "batchtopk", "k"))
def config_batchtopk_rounded(architecture, d_in, d_sae, sparsity):
    return _config(architecture, d_in, d_sae, sparsity, batchtopk_k=round)


@wrong(CH, "sae_training_config", "JumpReLU's knob put in jumprelu_init_threshold instead of l0_coefficient",
       names=("l0_coefficient", "threshold", "jumprelu"))
def config_jumprelu_threshold(architecture, d_in, d_sae, sparsity):
    return _config(architecture, d_in, d_sae, sparsity, jumprelu_field="jumprelu_init_threshold")


@wrong(CH, "sae_training_config", "forgets normalize_activations (left at 'none')",
       names=("normalize", "normalis", "expected_average_only_in"))
def config_not_normalised(architecture, d_in, d_sae, sparsity):
    return _config(architecture, d_in, d_sae, sparsity, normalize=None)


@wrong(CH, "sae_training_config", "another normalisation mode (constant_norm_rescale)",
       names=("normalize", "normalis", "expected_average_only_in"))
def config_other_normalisation(architecture, d_in, d_sae, sparsity):
    return _config(architecture, d_in, d_sae, sparsity, normalize="constant_norm_rescale")


@wrong(CH, "sae_training_config", "returns None for an unknown architecture instead of raising",
       names=("valueerror", "raise", "unknown", "architecture"))
def config_none_for_unknown(architecture, d_in, d_sae, sparsity):
    return _config(architecture, d_in, d_sae, sparsity, unknown="none")


@wrong(CH, "sae_training_config", "raises a ValueError that does not name the four choices",
       names=("choices", "four", "standard", "message"))
def config_vague_error(architecture, d_in, d_sae, sparsity):
    return _config(architecture, d_in, d_sae, sparsity, unknown="vague")


@wrong(CH, "sae_training_config", "also sets a non-default field (apply_b_dec_to_input=False)",
       names=("default", "apply_b_dec_to_input", "other field"))
def config_extra_field(architecture, d_in, d_sae, sparsity):
    return _config(architecture, d_in, d_sae, sparsity, extra={"apply_b_dec_to_input": False})


@wrong(CH, "sae_training_config", "inference config classes (no sparsity knob), the knob dropped",
       names=("training", "trainingsaeconfig", "knob", "class"))
def config_inference_classes(architecture, d_in, d_sae, sparsity):
    from sae_lens import JumpReLUSAEConfig, StandardSAEConfig, TopKSAEConfig
    shape = dict(d_in=d_in, d_sae=d_sae, normalize_activations=NORM)
    if architecture == "standard":
        return StandardSAEConfig(**shape)
    if architecture in ("topk", "batchtopk"):
        return TopKSAEConfig(k=round(sparsity), **shape)
    if architecture == "jumprelu":
        return JumpReLUSAEConfig(**shape)
    raise ValueError(f"unknown architecture {architecture!r}: expected standard, topk, batchtopk or jumprelu")


@correct(CH, "sae_training_config", "a table of (class, knob field, conversion) per architecture")
def config_table(architecture, d_in, d_sae, sparsity):
    table = {"standard": (StandardTrainingSAEConfig, "l1_coefficient", float),
             "topk": (TopKTrainingSAEConfig, "k", lambda s: int(round(s))),
             "batchtopk": (BatchTopKTrainingSAEConfig, "k", float),
             "jumprelu": (JumpReLUTrainingSAEConfig, "l0_coefficient", float)}
    if architecture not in table:
        raise ValueError(f"architecture must be one of {', '.join(table)}; got {architecture!r}")
    cls, field, convert = table[architecture]
    return cls(d_in=d_in, d_sae=d_sae, normalize_activations=NORM, **{field: convert(sparsity)})


@correct(CH, "sae_training_config", "TrainingSAEConfig.from_dict with the architecture name")
def config_from_dict(architecture, d_in, d_sae, sparsity):
    knobs = {"standard": ("l1_coefficient", sparsity), "topk": ("k", round(sparsity)),
             "batchtopk": ("k", float(sparsity)), "jumprelu": ("l0_coefficient", sparsity)}
    if architecture not in knobs:
        raise ValueError(f"unknown architecture {architecture!r}; choose standard, topk, batchtopk or jumprelu")
    field, value = knobs[architecture]
    return TrainingSAEConfig.from_dict({"architecture": architecture, "d_in": d_in, "d_sae": d_sae,
                                        "normalize_activations": NORM, field: value})


# ---------------------------------------------------------------------------------------
# runner_config


def _runner(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3, **changes):
    kwargs = dict(
        sae=sae_cfg, hook_name=hook_name, context_size=context_size,
        training_tokens=steps * batch_tokens, train_batch_size_tokens=batch_tokens, lr=lr,
        lr_warm_up_steps=steps // 20, lr_decay_steps=steps // 5,
        n_batches_in_buffer=math.ceil(2 * batch_tokens / context_size), n_batches_for_norm_estimate=10,
        exclude_special_tokens=[model.tokenizer.bos_token_id], device=str(model.cfg.device),
        logger=LoggingConfig(log_to_wandb=False), checkpoint_path=None, output_path=None, verbose=False)
    kwargs.update(changes)
    for name in [k for k, v in kwargs.items() if v is _DEFAULT]:
        del kwargs[name]
    return LanguageModelSAERunnerConfig(**kwargs)


_DEFAULT = object()


@wrong(CH, "runner_config", "training_tokens set to the number of steps", names=("training_tokens", "tokens"))
def runner_tokens_as_steps(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    return _runner(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr, training_tokens=steps)


@wrong(CH, "runner_config", "warm-up and decay counted in tokens, not steps", names=("warm", "decay", "steps", "schedule"))
def runner_schedule_in_tokens(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    return _runner(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr,
                   lr_warm_up_steps=steps * batch_tokens // 20, lr_decay_steps=steps * batch_tokens // 5)


@wrong(CH, "runner_config", "warm-up and decay swapped (steps // 5 and steps // 20)", names=("warm", "decay"))
def runner_schedule_swapped(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    return _runner(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr,
                   lr_warm_up_steps=steps // 5, lr_decay_steps=steps // 20)


@wrong(CH, "runner_config", "buffer rows rounded down (floor), too few when not divisible",
       names=("buffer", "n_batches_in_buffer", "ceil", "round"))
def runner_buffer_floor(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    return _runner(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr,
                   n_batches_in_buffer=2 * batch_tokens // context_size)


@wrong(CH, "runner_config", "buffer size given in tokens (2 * batch_tokens rows)", names=("buffer", "n_batches_in_buffer"))
def runner_buffer_in_tokens(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    return _runner(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr, n_batches_in_buffer=2 * batch_tokens)


@wrong(CH, "runner_config", "BOS not excluded (exclude_special_tokens left at its default)",
       names=("bos", "exclude_special_tokens", "special"))
def runner_keeps_bos(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    return _runner(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr, exclude_special_tokens=_DEFAULT)


@wrong(CH, "runner_config", "logger left at its default: logs to wandb", names=("wandb", "log_to_wandb", "logger"))
def runner_wandb_on(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    return _runner(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr, logger=_DEFAULT)


@wrong(CH, "runner_config", "output_path and checkpoint_path left at their defaults: files written",
       names=("output_path", "checkpoint_path", "disk", "files", "written"))
def runner_writes_files(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    return _runner(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr, output_path=_DEFAULT,
                   checkpoint_path=_DEFAULT)


@wrong(CH, "runner_config", "n_batches_for_norm_estimate left at 1,000",
       names=("n_batches_for_norm_estimate", "norm estimate", "norm_estimate"))
def runner_norm_estimate_default(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    return _runner(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr, n_batches_for_norm_estimate=_DEFAULT)


@wrong(CH, "runner_config", "learning rate hard-coded, the lr argument ignored", names=("lr", "learning rate"))
def runner_ignores_lr(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    return _runner(model, sae_cfg, hook_name, context_size, steps, batch_tokens, 3e-3)


@wrong(CH, "runner_config", "train_batch_size_tokens left at its default (4096)",
       names=("train_batch_size_tokens", "batch size", "batch_tokens"))
def runner_default_batch(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    return _runner(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr, train_batch_size_tokens=_DEFAULT)


@correct(CH, "runner_config", "integer ceiling -(-a // b), keyword dict, device from the embedding's parameter")
def runner_integer_ceiling(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    settings = {
        "sae": sae_cfg, "hook_name": hook_name, "context_size": context_size,
        "training_tokens": batch_tokens * steps, "train_batch_size_tokens": batch_tokens,
        "lr": lr, "lr_warm_up_steps": steps // 20, "lr_decay_steps": steps // 5,
        "n_batches_in_buffer": -(-2 * batch_tokens // context_size), "n_batches_for_norm_estimate": 10,
        "exclude_special_tokens": [int(model.tokenizer.bos_token_id)], "device": str(model.W_E.device),
        "logger": LoggingConfig(log_to_wandb=False), "checkpoint_path": None, "output_path": None, "verbose": False,
    }
    return LanguageModelSAERunnerConfig(**settings)


@correct(CH, "runner_config", "only what the exercise lists (verbose left at its default)")
def runner_as_listed(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    rows = 1
    while rows * context_size < 2 * batch_tokens:
        rows += 1
    return LanguageModelSAERunnerConfig(
        sae=sae_cfg, hook_name=hook_name, context_size=context_size, training_tokens=steps * batch_tokens,
        train_batch_size_tokens=batch_tokens, lr=lr, lr_warm_up_steps=steps // 20, lr_decay_steps=steps // 5,
        n_batches_in_buffer=rows, n_batches_for_norm_estimate=10, exclude_special_tokens=[model.tokenizer.bos_token_id],
        device=model.cfg.device if isinstance(model.cfg.device, str) else str(model.cfg.device),
        logger=LoggingConfig(log_to_wandb=False), checkpoint_path=None, output_path=None)


# ---------------------------------------------------------------------------------------
# density_stats


@wrong(CH, "density_stats", "active as f >= 0: every latent counts as active everywhere",
       names=("> 0", "active", "strict", "zero"))
def density_non_negative(acts, dense_above=0.1):
    density = (acts >= 0).to(acts.dtype).mean(0)
    return {"density": density, "dead": density == 0, "dense": density > dense_above}


@wrong(CH, "density_stats", "averages over latents (dim 1) instead of tokens", names=("dimension", "dim", "shape", "token"))
def density_wrong_dim(acts, dense_above=0.1):
    density = (acts > 0).to(acts.dtype).mean(1)
    return {"density": density, "dead": density == 0, "dense": density > dense_above}


@wrong(CH, "density_stats", "dense as density >= dense_above (not strictly more)", names=("more than", ">=", "strict", "boundary"))
def density_dense_inclusive(acts, dense_above=0.1):
    density = (acts > 0).to(acts.dtype).mean(0)
    return {"density": density, "dead": density == 0, "dense": density >= dense_above}


@wrong(CH, "density_stats", "density as a count of tokens, not a share", names=("share", "fraction", "count", "mean"))
def density_counts(acts, dense_above=0.1):
    density = (acts > 0).to(acts.dtype).sum(0)
    return {"density": density, "dead": density == 0, "dense": density > dense_above}


@wrong(CH, "density_stats", "dead as density below 1e-3 (a log-threshold habit), not exactly zero", names=("dead", "no token", "zero"))
def density_dead_threshold(acts, dense_above=0.1):
    density = (acts > 0).to(acts.dtype).mean(0)
    return {"density": density, "dead": density < 1e-3, "dense": density > dense_above}


@wrong(CH, "density_stats", "density as the mean activation, not the share of tokens active",
       names=("active", "share", "activation", "mean activation"))
def density_mean_activation(acts, dense_above=0.1):
    density = acts.mean(0)
    return {"density": density, "dead": density == 0, "dense": density > dense_above}


@wrong(CH, "density_stats", "dead and dense as float masks instead of Bool", names=("bool", "dtype"))
def density_float_masks(acts, dense_above=0.1):
    density = (acts > 0).to(acts.dtype).mean(0)
    return {"density": density, "dead": (density == 0).float(), "dense": (density > dense_above).float()}


@wrong(CH, "density_stats", "the dense threshold hard-coded at 0.1, the argument ignored", names=("dense_above", "threshold", "argument"))
def density_fixed_threshold(acts, dense_above=0.1):
    density = (acts > 0).to(acts.dtype).mean(0)
    return {"density": density, "dead": density == 0, "dense": density > 0.1}


@correct(CH, "density_stats", "count_nonzero in float64, cast back; dead from the count")
def density_count_nonzero(acts, dense_above=0.1):
    active = torch.count_nonzero(acts > 0, dim=0)
    density = (active.double() / acts.shape[0]).to(acts.dtype)
    return {"density": density, "dead": active == 0, "dense": density > dense_above}


@correct(CH, "density_stats", "sign of the clamped activations, averaged")
def density_sign(acts, dense_above=0.1):
    density = acts.clamp(min=0).sign().mean(dim=0)
    return {"dense": density > dense_above, "dead": ~(acts > 0).any(0), "density": density}


# ---------------------------------------------------------------------------------------
# label_precision


@wrong(CH, "label_precision", "no guard for latents that never fire: NaN", names=("nan", "never fires", "dead", "0/0", "zero"))
def precision_nan_for_dead(acts, labels):
    return acts[labels].sum(0) / acts.sum(0)


@wrong(CH, "label_precision", "counts active tokens instead of summing activation", names=("activation", "count", "sum", "weighted"))
def precision_counts(acts, labels):
    active = (acts > 0).to(acts.dtype)
    on, total = active[labels].sum(0), active.sum(0)
    return torch.where(total > 0, on / total.clamp_min(1), 0.0)


@wrong(CH, "label_precision", "divides by the number of labelled tokens (mean activation on the label)",
       names=("denominator", "total activation", "recall", "divide"))
def precision_per_label_token(acts, labels):
    return acts[labels].sum(0) / labels.sum().clamp_min(1)


@wrong(CH, "label_precision", "the share on tokens WITHOUT the label (mask inverted)", names=("invert", "complement", "without", "unlabel"))
def precision_inverted_mask(acts, labels):
    on, total = acts[~labels].sum(0), acts.sum(0)
    return torch.where(total > 0, on / total.clamp_min(1e-30), 0.0)


@wrong(CH, "label_precision", "ratio of means (mean on label / mean overall)", names=("mean", "sum", "ratio"))
def precision_ratio_of_means(acts, labels):
    on, total = acts[labels].mean(0), acts.mean(0)
    return torch.where(total > 0, on / total.clamp_min(1e-30), 0.0)


@wrong(CH, "label_precision", "sums over latents (dim 1): one number per token", names=("shape", "dim", "dimension"))
def precision_wrong_dim(acts, labels):
    on = (acts * labels[:, None]).sum(1)
    total = acts.sum(1)
    return torch.where(total > 0, on / total.clamp_min(1e-30), 0.0)


@wrong(CH, "label_precision", "recall: share of the label's tokens on which the latent is active",
       names=("recall", "activation", "share of its"))
def precision_recall(acts, labels):
    return (acts[labels] > 0).to(acts.dtype).mean(0)


@correct(CH, "label_precision", "multiplies by the float mask, float64, nan_to_num for dead latents")
def precision_mask_float64(acts, labels):
    a = acts.double()
    ratio = (a * labels.double()[:, None]).sum(0) / a.sum(0)
    return torch.nan_to_num(ratio, nan=0.0).to(acts.dtype)


@correct(CH, "label_precision", "matrix product with the label vector, a safe denominator")
def precision_matmul(acts, labels):
    on = labels.to(acts.dtype) @ acts
    total = acts.sum(0)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, on / safe, torch.zeros_like(total))


# ---------------------------------------------------------------------------------------
# transcoder_loss


def _terms(transcoder, x, y, l1, *, mse="sum_mean", weight="norm", reduce_tokens="mean", target="y", subtract_b_dec=False,
           coefficient_on="sparsity"):
    acts = transcoder.encode(x - transcoder.b_dec if subtract_b_dec else x)
    y_hat = transcoder.decode(acts)
    goal = y if target == "y" else x
    if mse == "sum_mean":
        err = (y_hat - goal).pow(2).sum(-1)
    elif mse == "mean_mean":
        err = (y_hat - goal).pow(2).mean(-1)
    else:  # norm, not squared
        err = (y_hat - goal).norm(dim=-1)
    w = {"norm": transcoder.W_dec.norm(dim=-1), "none": torch.ones(acts.shape[-1]),
         "squared": transcoder.W_dec.pow(2).sum(-1)}[weight]
    l1_term = (acts * w).sum(-1)
    if reduce_tokens == "mean":
        mse_v, sparsity = err.mean(), l1_term.mean()
    else:
        mse_v, sparsity = err.sum(), l1_term.sum()
    loss = mse_v + l1 * sparsity if coefficient_on == "sparsity" else l1 * mse_v + sparsity
    return {"loss": loss, "mse": mse_v, "sparsity": sparsity}


@wrong(CH, "transcoder_loss", "F.mse_loss: averages over output dimensions too", names=("d_out", "output dim", "dimension", "summed over"))
def loss_mse_mean_dims(transcoder, x, y, l1_coefficient):
    acts = transcoder.encode(x)
    mse = F.mse_loss(transcoder.decode(acts), y)
    sparsity = (acts * transcoder.W_dec.norm(dim=-1)).sum(-1).mean()
    return {"loss": mse + l1_coefficient * sparsity, "mse": mse, "sparsity": sparsity}


@wrong(CH, "transcoder_loss", "plain L1, not weighted by the decoder norms", names=("decoder norm", "w_dec", "norm", "weight"))
def loss_plain_l1(transcoder, x, y, l1_coefficient):
    return _terms(transcoder, x, y, l1_coefficient, weight="none")


@wrong(CH, "transcoder_loss", "sums over tokens instead of averaging", names=("mean over tokens", "average", "token", "sum"))
def loss_sum_over_tokens(transcoder, x, y, l1_coefficient):
    return _terms(transcoder, x, y, l1_coefficient, reduce_tokens="sum")


@wrong(CH, "transcoder_loss", "computed under torch.no_grad: not differentiable", names=("differentiab", "grad", "backward"))
def loss_no_grad(transcoder, x, y, l1_coefficient):
    with torch.no_grad():
        return _terms(transcoder, x, y, l1_coefficient)


@wrong(CH, "transcoder_loss", "reconstructs the input x (an SAE's loss), not the output y",
       names=("target", "output", "reconstruct"))
def loss_reconstructs_input(transcoder, x, y, l1_coefficient):
    return _terms(transcoder, x, y, l1_coefficient, target="x")


@wrong(CH, "transcoder_loss", "coefficient on the wrong term (l1 * mse + sparsity)", names=("loss", "coefficient"))
def loss_coefficient_on_mse(transcoder, x, y, l1_coefficient):
    return _terms(transcoder, x, y, l1_coefficient, coefficient_on="mse")


@wrong(CH, "transcoder_loss", "subtracts b_dec from the input before encoding (an SAE habit)", names=("b_dec",))
def loss_subtracts_b_dec(transcoder, x, y, l1_coefficient):
    return _terms(transcoder, x, y, l1_coefficient, subtract_b_dec=True)


@wrong(CH, "transcoder_loss", "the error's norm, not its square", names=("squared", "square"))
def loss_norm_not_squared(transcoder, x, y, l1_coefficient):
    return _terms(transcoder, x, y, l1_coefficient, mse="norm")


@wrong(CH, "transcoder_loss", "weights the L1 by squared decoder norms", names=("norm", "squared", "weight"))
def loss_squared_norm_weight(transcoder, x, y, l1_coefficient):
    return _terms(transcoder, x, y, l1_coefficient, weight="squared")


@wrong(CH, "transcoder_loss", "decoder norms over dim 0 (one per output dimension)", names=("norm", "dim", "w_dec"))
def loss_norm_wrong_dim(transcoder, x, y, l1_coefficient):
    acts = transcoder.encode(x)
    mse = (transcoder.decode(acts) - y).pow(2).sum(-1).mean()
    norms = transcoder.W_dec.norm(dim=0)  # [d_out]
    sparsity = (acts.sum(-1, keepdim=True) * norms.mean()).mean()  # "make the shapes fit"
    return {"loss": mse + l1_coefficient * sparsity, "mse": mse, "sparsity": sparsity}


@correct(CH, "transcoder_loss", "sum-reduced mse_loss divided by n, vector_norm, einsum")
def loss_library_calls(transcoder, x, y, l1_coefficient):
    acts = transcoder.encode(x)
    y_hat = transcoder.decode(acts)
    n = x.shape[0]
    mse = F.mse_loss(y_hat, y, reduction="sum") / n
    sparsity = torch.einsum("ni,i->", acts, torch.linalg.vector_norm(transcoder.W_dec, dim=1)) / n
    return {"mse": mse, "sparsity": sparsity, "loss": mse + l1_coefficient * sparsity}


@correct(CH, "transcoder_loss", "float64 internally, cast back to the input dtype (still differentiable)")
def loss_float64(transcoder, x, y, l1_coefficient):
    acts = transcoder.encode(x)
    y_hat = transcoder.decode(acts).double()
    mse = ((y_hat - y.double()) ** 2).sum(dim=1).mean()
    norms = (transcoder.W_dec.double() ** 2).sum(1).sqrt()
    sparsity = (acts.double() @ norms).mean()
    loss = mse + l1_coefficient * sparsity
    return {k: v.to(x.dtype) for k, v in {"loss": loss, "mse": mse, "sparsity": sparsity}.items()}


# ---------------------------------------------------------------------------------------
# Changes to `names` phrases after the first run (with the message that prompted each):
# none after the first run (results_before_ch03-06.json): no caught-but-unnamed message names its mistake in other words.
