"""Plausible wrong implementations of chapter 06's exercises; each check must catch each one.

A mistake with ``signature=True`` (the default) is recognised by its result: the check runs
it on its own inputs (``utils.course.checking.signatures``) and fails with its diagnosis. The
others must be caught by a generic diagnosis, a specific test of the check or a watched
side effect."""
from __future__ import annotations

import dataclasses
import math

import torch
from sae_lens import LoggingConfig, StandardSAEConfig, TopKTrainingSAEConfig

from solutions.ch06_training import density_stats, label_precision, runner_config, sae_training_config, transcoder_loss
from utils.course.checking import Mistake

# --- sae_training_config -------------------------------------------------------------


def config_batchtopk_as_topk(architecture, d_in, d_sae, sparsity):
    if architecture == "batchtopk":
        return sae_training_config("topk", d_in, d_sae, sparsity)
    return sae_training_config(architecture, d_in, d_sae, sparsity)


def config_jumprelu_threshold(architecture, d_in, d_sae, sparsity):
    cfg = sae_training_config(architecture, d_in, d_sae, sparsity)
    if architecture == "jumprelu":
        return dataclasses.replace(cfg, l0_coefficient=1.0, jumprelu_init_threshold=sparsity)
    return cfg


def config_not_normalised(architecture, d_in, d_sae, sparsity):
    return dataclasses.replace(sae_training_config(architecture, d_in, d_sae, sparsity), normalize_activations="none")


def config_topk_float_k(architecture, d_in, d_sae, sparsity):
    if architecture == "topk":
        return TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=sparsity, normalize_activations="expected_average_only_in")
    return sae_training_config(architecture, d_in, d_sae, sparsity)


def config_topk_floor(architecture, d_in, d_sae, sparsity):
    if architecture == "topk":
        return TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=math.floor(sparsity), normalize_activations="expected_average_only_in")
    return sae_training_config(architecture, d_in, d_sae, sparsity)


def config_terse_error(architecture, d_in, d_sae, sparsity):
    if architecture not in ("standard", "topk", "batchtopk", "jumprelu"):
        raise ValueError(f"unsupported architecture {architecture!r}")
    return sae_training_config(architecture, d_in, d_sae, sparsity)


def config_inference_class(architecture, d_in, d_sae, sparsity):
    if architecture == "standard":
        return StandardSAEConfig(d_in=d_in, d_sae=d_sae, normalize_activations="expected_average_only_in")
    return sae_training_config(architecture, d_in, d_sae, sparsity)


def config_unknown_is_standard(architecture, d_in, d_sae, sparsity):
    known = ("standard", "topk", "batchtopk", "jumprelu")
    return sae_training_config(architecture if architecture in known else "standard", d_in, d_sae, sparsity)


# --- runner_config -------------------------------------------------------------------


def runner_tokens_as_steps(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    return dataclasses.replace(runner_config(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr), training_tokens=steps)


def runner_wandb_on(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    return dataclasses.replace(runner_config(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr), logger=LoggingConfig())


def runner_keeps_bos(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    return dataclasses.replace(runner_config(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr), exclude_special_tokens=False)


def runner_writes_output(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    return dataclasses.replace(runner_config(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr), output_path="output")


def runner_default_buffer(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    return dataclasses.replace(runner_config(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr), n_batches_in_buffer=20)


def runner_warmup_in_tokens(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    cfg = runner_config(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr)
    return dataclasses.replace(cfg, lr_warm_up_steps=cfg.training_tokens // 20, lr_decay_steps=cfg.training_tokens // 5)


def runner_default_norm_estimate(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr=3e-3):
    return dataclasses.replace(runner_config(model, sae_cfg, hook_name, context_size, steps, batch_tokens, lr),
                               n_batches_for_norm_estimate=1000)


# --- density_stats -------------------------------------------------------------------


def density_counts(acts, dense_above=0.1):
    out = density_stats(acts, dense_above)
    return {**out, "density": (acts > 0).to(acts.dtype).sum(0)}


def density_mean_activation(acts, dense_above=0.1):
    density = acts.mean(0)
    return {"density": density, "dead": density == 0, "dense": density > dense_above}


def density_counts_zeros(acts, dense_above=0.1):
    density = (acts >= 0).to(acts.dtype).mean(0)
    return {"density": density, "dead": density == 0, "dense": density > dense_above}


def density_dead_if_rare(acts, dense_above=0.1):
    out = density_stats(acts, dense_above)
    return {**out, "dead": out["density"] < 0.01}


def density_dense_from_counts(acts, dense_above=0.1):
    out = density_stats(acts, dense_above)
    return {**out, "dense": (acts > 0).sum(0) > dense_above}


def density_dead_below_permille(acts, dense_above=0.1):
    out = density_stats(acts, dense_above)
    return {**out, "dead": out["density"] < 1e-3}


def density_dense_at_threshold(acts, dense_above=0.1):
    out = density_stats(acts, dense_above)
    return {**out, "dense": out["density"] >= dense_above}


def density_default_threshold(acts, dense_above=0.1):
    return density_stats(acts)


def density_per_token(acts, dense_above=0.1):
    density = (acts > 0).to(acts.dtype).mean(1)
    return {"density": density, "dead": density == 0, "dense": density > dense_above}


# --- label_precision -----------------------------------------------------------------


def precision_mean_on_label(acts, labels):
    return acts[labels].mean(0)


def precision_counts_firings(acts, labels):
    return label_precision((acts > 0).to(acts.dtype), labels)


def precision_nan_for_dead(acts, labels):
    return acts[labels].sum(0) / acts.sum(0)


def precision_recall(acts, labels):
    return (acts[labels] > 0).to(acts.dtype).mean(0)


def precision_off_label(acts, labels):
    return label_precision(acts, ~labels)


def precision_over_all_latents(acts, labels):
    return acts[labels].sum(0) / acts.sum()


# --- transcoder_loss -----------------------------------------------------------------


def loss_reconstructs_input(transcoder, x, y, l1_coefficient):
    return transcoder_loss(transcoder, x, x, l1_coefficient)


def loss_plain_l1(transcoder, x, y, l1_coefficient):
    acts = transcoder.encode(x)
    mse = (transcoder.decode(acts) - y).pow(2).sum(-1).mean()
    sparsity = acts.sum(-1).mean()
    return {"loss": mse + l1_coefficient * sparsity, "mse": mse, "sparsity": sparsity}


def loss_mse_over_dims(transcoder, x, y, l1_coefficient):
    acts = transcoder.encode(x)
    mse = torch.nn.functional.mse_loss(transcoder.decode(acts), y)
    sparsity = (acts * transcoder.W_dec.norm(dim=-1)).sum(-1).mean()
    return {"loss": mse + l1_coefficient * sparsity, "mse": mse, "sparsity": sparsity}


def loss_subtracts_b_dec(transcoder, x, y, l1_coefficient):
    acts = transcoder.encode(x - transcoder.b_dec)
    mse = (transcoder.decode(acts) - y).pow(2).sum(-1).mean()
    sparsity = (acts * transcoder.W_dec.norm(dim=-1)).sum(-1).mean()
    return {"loss": mse + l1_coefficient * sparsity, "mse": mse, "sparsity": sparsity}


def loss_detached(transcoder, x, y, l1_coefficient):
    with torch.no_grad():
        return transcoder_loss(transcoder, x, y, l1_coefficient)


def loss_l0_penalty(transcoder, x, y, l1_coefficient):
    acts = transcoder.encode(x)
    mse = (transcoder.decode(acts) - y).pow(2).sum(-1).mean()
    sparsity = (acts > 0).to(acts.dtype).sum(-1).mean()
    return {"loss": mse + l1_coefficient * sparsity, "mse": mse, "sparsity": sparsity}


def _loss(transcoder, x, y, l1_coefficient, *, squared=True, norm_dim=-1, norm_power=1, coefficient_on="sparsity"):
    acts = transcoder.encode(x)
    error = (transcoder.decode(acts) - y).norm(dim=-1)
    mse = (error ** 2 if squared else error).mean()
    norms = transcoder.W_dec.norm(dim=norm_dim) ** norm_power
    sparsity = (acts * norms).sum(-1).mean() if norm_dim == -1 else (acts.sum(-1) * norms.mean()).mean()
    loss = mse + l1_coefficient * sparsity if coefficient_on == "sparsity" else l1_coefficient * mse + sparsity
    return {"loss": loss, "mse": mse, "sparsity": sparsity}


def loss_error_norm(transcoder, x, y, l1_coefficient):
    return _loss(transcoder, x, y, l1_coefficient, squared=False)


def loss_squared_decoder_norms(transcoder, x, y, l1_coefficient):
    return _loss(transcoder, x, y, l1_coefficient, norm_power=2)


def loss_coefficient_on_mse(transcoder, x, y, l1_coefficient):
    return _loss(transcoder, x, y, l1_coefficient, coefficient_on="mse")


def loss_summed_over_tokens(transcoder, x, y, l1_coefficient):
    acts = transcoder.encode(x)
    mse = (transcoder.decode(acts) - y).pow(2).sum()
    sparsity = (acts * transcoder.W_dec.norm(dim=-1)).sum()
    return {"loss": mse + l1_coefficient * sparsity, "mse": mse, "sparsity": sparsity}


MISTAKES = {
    "sae_training_config": [
        Mistake(config_batchtopk_as_topk, "this is a TopK config: BatchTopK has its own class, BatchTopKTrainingSAEConfig "
                "(TopK keeps k latents on every token, BatchTopK k per token on average over the batch)"),
        Mistake(config_jumprelu_threshold, "JumpReLU's knob is l0_coefficient; jumprelu_init_threshold only sets where its "
                "thresholds start"),
        Mistake(config_not_normalised, "normalize_activations is 'none': set it to 'expected_average_only_in', or the "
                "useful size of the L1/L0 coefficient depends on the scale of each hook's activations"),
        Mistake(config_topk_float_k, "TopK's k must be a whole number (an int)", signature=False),
        Mistake(config_inference_class, "is an inference config", signature=False),
        Mistake(config_unknown_is_standard, "should raise a ValueError", signature=False),
        Mistake(config_topk_floor, "cut down by int(): round it", signature=False),
        Mistake(config_terse_error, "does not name 'standard', 'topk', 'batchtopk', 'jumprelu'", signature=False),
    ],
    "runner_config": [
        Mistake(runner_tokens_as_steps, "training_tokens counts tokens, not steps: steps * batch_tokens"),
        Mistake(runner_wandb_on, "the run would log to wandb: pass logger=LoggingConfig(log_to_wandb=False)"),
        Mistake(runner_keeps_bos, "BOS is not excluded: exclude_special_tokens=[model.tokenizer.bos_token_id] "
                "(every row starts with BOS, whose activation has an outsized norm)"),
        Mistake(runner_writes_output, "the run would write the trained SAE to disk: output_path=None"),
        Mistake(runner_default_buffer, "buffer", signature=False),
        Mistake(runner_warmup_in_tokens, "lr_warm_up_steps and lr_decay_steps count steps, not tokens"),
        Mistake(runner_default_norm_estimate, "n_batches_for_norm_estimate is the default 1000: the norm estimate would "
                "read more activations than the whole run; use 10"),
    ],
    "density_stats": [
        Mistake(density_counts, "density counts tokens: divide by the number of tokens to get a share"),
        Mistake(density_mean_activation, "this is each latent's mean activation; density is the share of tokens on which "
                "it is active (f > 0)"),
        Mistake(density_counts_zeros, "every latent looks active everywhere: `acts >= 0` counts zeros; active means f > 0"),
        Mistake(density_dead_if_rare, "dead means never active (density exactly 0), not rarely active", signature=False,
                coincides=("density_dead_below_permille",)),
        Mistake(density_dense_from_counts, "dense compares `dense_above` with a count of tokens; it is a share of tokens"),
        Mistake(density_per_token, "expected shape", signature=False),
        Mistake(density_dead_below_permille, "dead means never active (density exactly 0), not rarely active",
                signature=False, coincides=("density_dead_if_rare",)),
        Mistake(density_dense_at_threshold, "dense means active on *more* than dense_above of the tokens", signature=False),
        Mistake(density_default_threshold, "`dense_above` is ignored", signature=False),
    ],
    "label_precision": [
        Mistake(precision_mean_on_label, "this is the latent's mean activation on label tokens; precision is the share of "
                "its total activation that falls on them"),
        Mistake(precision_counts_firings, "this counts firings; precision weighs each token by the latent's activation"),
        Mistake(precision_nan_for_dead, "NaN", signature=False),
        Mistake(precision_recall, "this is the share of label tokens on which the latent fires (a recall), not the share "
                "of its activation on the label"),
        Mistake(precision_off_label, "this is the share on tokens *without* the label: index with `labels`, not `~labels`"),
        Mistake(precision_over_all_latents, "this divides by the activation of all latents together; divide each latent's "
                "activation on the label by its own total"),
    ],
    "transcoder_loss": [
        Mistake(loss_reconstructs_input, "reconstructs the input x: a transcoder predicts the MLP's output y from x"),
        Mistake(loss_plain_l1, "the sparsity term is the plain L1 of the latents: weight each latent by its decoder row's "
                "norm, ||W_dec[i]||"),
        Mistake(loss_mse_over_dims, "mse is averaged over output dimensions as well (F.mse_loss): sum over d_out, then "
                "average over tokens"),
        Mistake(loss_subtracts_b_dec, "you subtracted b_dec from the input: b_dec lives in the output space; use "
                "transcoder.encode(x)"),
        Mistake(loss_detached, "does not require grad", signature=False),
        Mistake(loss_l0_penalty, "the sparsity term counts active latents (an L0), which has no gradient: use the "
                "decoder-norm-weighted L1 of the activations"),
        Mistake(loss_error_norm, "mse is the mean norm of the error, not its square: square ||y_hat - y|| before "
                "averaging"),
        Mistake(loss_squared_decoder_norms, "the latents are weighted by squared decoder norms: weight each by "
                "||W_dec[i]|| itself"),
        Mistake(loss_coefficient_on_mse, "l1_coefficient multiplies the mse: it weighs the sparsity term, "
                "loss = mse + l1_coefficient * sparsity"),
        Mistake(loss_summed_over_tokens, "summed over tokens: average over tokens, so the loss does not grow with the "
                "batch size"),
    ],
}
