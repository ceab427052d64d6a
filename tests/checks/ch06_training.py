"""Checks of chapter 06 (Training SAEs and transcoders). Training itself is not checked (it
is slow and its result depends on the machine); what is: the configs your functions build,
field by field, and the functions that judge and train dictionaries, on fixed inputs. A
failure names the likely mistake (the catalogued ones in ``tests/mistakes``, or a generic
family of ``utils.course.compare``)."""
from __future__ import annotations

import copy
from typing import Any

import torch
from sae_lens import BatchTopKTrainingSAEConfig, JumpReLUTrainingSAEConfig, StandardTrainingSAEConfig, TopKTrainingSAEConfig
from sae_lens.config import LanguageModelSAERunnerConfig
from sae_lens.saes.sae import SAEConfig, TrainingSAEConfig
from torch import Tensor

from tests.checks import loss_entry
from tests.mistakes.ch06_training import MISTAKES
from utils.backends import Backend
from utils.course.checking import (
    Signatures,
    backend,
    call,
    consistent,
    exercise_check,
    expect_tensor,
    fail,
    known,
    run,
    seed,
    signatures,
)
from utils.course import compare
from utils.training import new_transcoder

CHAPTER = "ch06_training"
ARCHITECTURES = ("standard", "topk", "batchtopk", "jumprelu")


def _expect_fields(got: dict[str, Any], want: dict[str, Any], name: str, mistakes: Signatures) -> None:
    """``got`` equal to ``want`` field by field, else the catalogued mistake that gives ``got``,
    else the first field that differs."""
    if got == want:
        return
    for diagnosis, thunk in mistakes.items():
        if thunk() == got:
            fail(f"{name}: {diagnosis}", header=name)
    for key in want:
        if key not in got:
            fail(f"{name}: no field `{key}`", header=name)
        if got[key] != want[key]:
            fail(f"{name}: field `{key}` is {got[key]!r}, expected {want[key]!r}", header=name)
    fail(f"{name}: unexpected fields {sorted(set(got) - set(want))}", header=name)


# ---------------------------------------------------------------------------------------
# 1. sae_training_config


def _sae_fields(cfg: Any) -> dict[str, Any] | None:
    """The class and every field of a training config (metadata aside), for comparison."""
    if not isinstance(cfg, SAEConfig):
        return None
    return {"class": type(cfg).__name__, **{k: v for k, v in cfg.to_dict().items() if k != "metadata"}}


@exercise_check(CHAPTER)
def check_sae_training_config(sae_training_config: Any) -> None:
    bk = backend()
    cases = [("standard", 128, 256, 1.5), ("topk", 128, 512, 16.0), ("batchtopk", 768, 1024, 12.5),
             ("jumprelu", 64, 256, 0.3), ("topk", 128, 64, 4.0), ("topk", 128, 256, 12.7)]
    for i, (architecture, d_in, d_sae, sparsity) in enumerate(cases):
        args = (architecture, d_in, d_sae, sparsity)
        got = run(sae_training_config, bk, *args)
        name = f"sae_training_config({architecture!r}, d_in={d_in}, d_sae={d_sae}, sparsity={sparsity})"
        if isinstance(got, SAEConfig) and not isinstance(got, TrainingSAEConfig):
            fail(f"{name} is an inference config ({type(got).__name__}): the trainer needs the training class, "
                 f"e.g. StandardTrainingSAEConfig, which carries the sparsity knob", header=name)
        if not isinstance(got, TrainingSAEConfig):
            fail(f"{name} should return a SAELens training config, got {type(got).__name__}", header=name)
        if architecture == "topk" and isinstance(getattr(got, "k", None), int) and got.k != round(sparsity) and \
                got.k == int(sparsity):
            fail(f"{name}: k is {got.k}, the sparsity {sparsity} cut down by int(): round it to the nearest whole number, "
                 f"{round(sparsity)}", header=name)
        mistakes = signatures(MISTAKES["sae_training_config"], *args).select(_sae_fields)
        _expect_fields(_sae_fields(got), known(f"fields_{i}", _sae_fields(got)), name, mistakes)
        if architecture == "topk" and not isinstance(got.k, int):
            fail(f"{name}: TopK's k must be a whole number (an int), got {got.k!r}: it is the number of latents kept per token", header=name)
    try:
        got = sae_training_config("gated", 128, 256, 1.0)
    except ValueError as error:
        unnamed = [choice for choice in ARCHITECTURES if choice not in str(error)]
        if unnamed:
            fail(f"the ValueError for an unknown architecture should name the four choices; its message {str(error)!r} "
                 f"does not name {', '.join(repr(c) for c in unnamed)}")
    except Exception as error:
        fail(f"an unknown architecture should raise a ValueError naming the four choices, not {type(error).__name__}")
    else:
        fail(f"sae_training_config('gated', ...) should raise a ValueError naming the four choices; it returned "
             f"{type(got).__name__}")


# ---------------------------------------------------------------------------------------
# 2. runner_config


def _runner_fields(cfg: Any, bos: int = -1) -> dict[str, Any] | None:
    """What the exercise asks for, one entry per requirement (the buffer is checked apart)."""
    if not isinstance(cfg, LanguageModelSAERunnerConfig):
        return None
    excluded = cfg.exclude_special_tokens
    return {
        "hook_name": cfg.hook_name, "context_size": cfg.context_size, "training_tokens": cfg.training_tokens,
        "train_batch_size_tokens": cfg.train_batch_size_tokens, "lr": cfg.lr,
        "lr_warm_up_steps": cfg.lr_warm_up_steps, "lr_decay_steps": cfg.lr_decay_steps,
        "n_batches_for_norm_estimate": cfg.n_batches_for_norm_estimate, "device": str(cfg.device),
        "BOS excluded": excluded is True or (isinstance(excluded, list) and bos in excluded),
        "logs to wandb": cfg.logger.log_to_wandb, "output_path": cfg.output_path,
        "writes checkpoints": cfg.checkpoint_path is not None and (cfg.n_checkpoints > 0 or cfg.save_final_checkpoint),
    }


@exercise_check(CHAPTER)
def check_runner_config(runner_config: Any) -> None:
    bk = backend()
    model = bk.model
    bos = model.tokenizer.bos_token_id
    norm = dict(normalize_activations="expected_average_only_in")
    cases = [
        (StandardTrainingSAEConfig(d_in=128, d_sae=256, l1_coefficient=1.0, **norm), "blocks.0.hook_resid_post", 48, 300, 1024, 3e-3),
        (TopKTrainingSAEConfig(d_in=128, d_sae=512, k=16, **norm), "blocks.1.attn.hook_z", 32, 50, 4096, 1e-3),
        (JumpReLUTrainingSAEConfig(d_in=128, d_sae=128, l0_coefficient=0.5, **norm), "blocks.1.hook_resid_post", 64, 7, 200, 5e-4),
        (BatchTopKTrainingSAEConfig(d_in=128, d_sae=256, k=8.0, **norm), "blocks.0.hook_resid_post", 40, 1000, 100, 3e-3),
    ]
    for i, (sae_cfg, hook, context_size, steps, batch_tokens, lr) in enumerate(cases):
        args = (model, sae_cfg, hook, context_size, steps, batch_tokens)
        got = run(runner_config, bk, *args, lr=lr)
        name = f"runner_config(hook {hook!r}, context_size={context_size}, steps={steps}, batch_tokens={batch_tokens})"
        if not isinstance(got, LanguageModelSAERunnerConfig):
            fail(f"{name} should return a LanguageModelSAERunnerConfig, got {type(got).__name__}", header=name)
        if got.sae is not sae_cfg and _sae_fields(got.sae) != _sae_fields(sae_cfg):
            fail(f"{name}: `sae` should be the sae_cfg you were given", header=name)
        mistakes = signatures(MISTAKES["runner_config"], *args, lr=lr).select(lambda cfg: _runner_fields(cfg, bos))
        fields = _runner_fields(got, bos)
        _expect_fields(fields, known(f"fields_{i}", fields), name, mistakes)
        buffer = got.n_batches_in_buffer * got.context_size
        if buffer < 2 * batch_tokens:
            fail(f"{name}: the activation buffer holds n_batches_in_buffer x context_size = {got.n_batches_in_buffer} x "
                 f"{got.context_size} = {buffer} tokens, fewer than two batches of {batch_tokens} (SAELens refuses a buffer "
                 "smaller than one batch): use math.ceil(2 * batch_tokens / context_size) rows", header=name)
        if got.n_batches_in_buffer > -(-2 * batch_tokens // context_size):
            fail(f"{name}: n_batches_in_buffer is {got.n_batches_in_buffer}; the fewest rows that hold two batches are "
                 f"math.ceil(2 * batch_tokens / context_size) = {-(-2 * batch_tokens // context_size)}", header=name)


# ---------------------------------------------------------------------------------------
# 3. density_stats


def _sparse_acts(n: int, d_sae: int, draw: int) -> Tensor:
    """Non-negative activations with exact zeros, in the checks' dtype: latent i fires with
    probability p_i spread over [1e-3, 0.5] on a log scale; two latents never fire, two fire
    on a third or more of the tokens. The zero pattern is drawn in float32, so it is the
    same in every dtype."""
    generator = torch.Generator().manual_seed(draw)
    p = 10 ** (torch.rand(d_sae, generator=generator) * 2.7 - 3)
    order = torch.randperm(d_sae, generator=generator)
    p[order[:2]] = 0.0
    p[order[2:4]] = torch.tensor([0.35, 0.6])
    fires = torch.rand(n, d_sae, generator=generator) < p
    values = 0.05 + 3 * torch.rand(n, d_sae, generator=generator)
    return (fires * values).to(compare.tolerance().dtype)


def _stats_entry(out: Any, key: str, name: str) -> Any:
    if not isinstance(out, dict):
        fail(f"{name}: expected a dict with keys 'density', 'dead', 'dense', got {type(out).__name__}", header=name)
    if key not in out:
        fail(f"{name}: the dict lacks the key {key!r} (expected 'density', 'dead', 'dense')", header=name)
    return out[key]


@exercise_check(CHAPTER)
def check_density_stats(density_stats: Any) -> None:
    bk = backend()
    cases = [(600, 64, 0.1, 60), (600, 64, 0.3, 60), (300, 32, 0.01, 61), (1, 16, 0.5, 62), (2500, 16, 0.05, 63)]
    dense_masks: dict[int, Tensor] = {}
    for i, (n, d_sae, dense_above, draw) in enumerate(cases):
        acts = _sparse_acts(n, d_sae, seed(draw))
        if n == 2500:  # one latent fires on a single token (density 4e-4, not dead); one on exactly 5% (not dense)
            acts[:, 0] = 0.0
            acts[n // 2, 0] = 1.0
            acts[:, 1] = torch.where(torch.arange(n) % 20 == 0, 0.7, 0.0).to(acts.dtype)
        got = run(density_stats, bk, acts, dense_above=dense_above)
        name = f"density_stats({n} tokens, {d_sae} latents, dense_above={dense_above})"
        mistakes = signatures(MISTAKES["density_stats"], acts, dense_above=dense_above)
        values = {key: _stats_entry(got, key, name) for key in ("density", "dead", "dense")}
        wants = {key: known(f"{key}_{i}", value) for key, value in values.items()}
        parts = consistent([(lambda v=v: v, wants[key], mistakes.select(lambda out, key=key: out[key]))
                            for key, v in values.items()])  # a mistake must give every entry of the dict
        if i == 1:  # the first case's tokens with another dense_above
            parts[2]["this is the dense mask for dense_above=0.1: `dense_above` is ignored"] = dense_masks[0]
        dense_masks[i] = wants["dense"]
        _expect_thresholds(values, wants, dense_above, name)
        for (key, value), signatures_of_key in zip(values.items(), parts):
            expect_tensor(value, wants[key], name=f"{name}[{key!r}]", dims="d_sae", mistakes=signatures_of_key)


def _expect_thresholds(got: dict[str, Any], want: dict[str, Tensor], dense_above: float, name: str) -> None:
    """The boundaries the exercise states: dead is a density of exactly 0, dense strictly above."""
    density = want["density"]
    for key, extra_ok, message in (
            ("dead", lambda extra: (density[extra] > 0).all(),
             "dead means never active (density exactly 0), not rarely active: latents {ids} have density {values}"),
            ("dense", lambda extra: (density[extra] == dense_above).all(),
             "dense means active on *more* than dense_above of the tokens: latents {ids} have density exactly {values}")):
        value = got[key]
        if not isinstance(value, Tensor) or value.dtype != torch.bool or value.shape != want[key].shape:
            continue
        value = value.cpu()
        extra, lost = value & ~want[key], want[key] & ~value
        if extra.any() and not lost.any() and extra_ok(extra):
            ids = extra.nonzero()[:, 0].tolist()[:4]
            fail(f"{name}[{key!r}]: " + message.format(ids=ids, values=[round(density[j].item(), 4) for j in ids]),
                 header=f"{name}[{key!r}]")


# ---------------------------------------------------------------------------------------
# 4. label_precision


def _planted_acts(labels: Tensor, d_sae: int, draw: int) -> Tensor:
    """Sparse activations (as in density_stats) in which a quarter of the latents fire mostly
    on ``labels``, and one never fires at all."""
    acts = _sparse_acts(len(labels), d_sae, draw)
    generator = torch.Generator().manual_seed(draw + 1)
    planted = torch.randperm(d_sae, generator=generator)[: d_sae // 4]
    on_label = (labels[:, None] & (torch.rand(len(labels), len(planted), generator=generator) < 0.7)).to(acts.dtype)
    acts[:, planted] = acts[:, planted] * 0.2 + on_label * 2.0
    return acts


@exercise_check(CHAPTER)
def check_label_precision(label_precision: Any) -> None:
    bk = backend()
    dtype = compare.tolerance().dtype
    corpus = bk.world.corpus(n_seqs=12, seq_len=32, seed=seed(70))
    cases = [
        (torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [1.0, 3.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]], dtype=dtype),
         torch.tensor([True, False, True, False, False])),
    ]
    for j, label in enumerate(("name_repeated", "city")):
        mask = corpus.labels[label][:, 1:].flatten()
        cases.append((_planted_acts(mask, 48 // (j + 1), seed(71 + j)), mask))
    for i, (acts, labels) in enumerate(cases):
        got = run(label_precision, bk, acts, labels)
        expect_tensor(got, known(f"precision_{i}", got), name=f"precision (case {i + 1}: {len(labels)} tokens)",
                      dims="d_sae", mistakes=signatures(MISTAKES["label_precision"], acts, labels))


# ---------------------------------------------------------------------------------------
# 5. transcoder_loss


def _mlp_io(bk: Backend, layer: int, n_seqs: int, draw: int) -> tuple[Tensor, Tensor]:
    """The MLP input and output of ``layer``, one row per non-BOS token of some corpus text."""
    hook_in, hook_out = f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"
    tokens = bk.world.corpus(n_seqs=n_seqs, seq_len=20, seed=draw).tokens
    with torch.no_grad():
        _, cache = bk.model.run_with_cache(tokens, names_filter=[hook_in, hook_out], stop_at_layer=layer + 1)
    return cache[hook_in][:, 1:].flatten(0, 1), cache[hook_out][:, 1:].flatten(0, 1)


@exercise_check(CHAPTER)
def check_transcoder_loss(transcoder_loss: Any) -> None:
    bk = backend()
    d_model = bk.model.cfg.d_model
    fresh = new_transcoder(d_model, 64, d_model, "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out", seed=seed(80))
    cases = [(bk.transcoders["blocks.0.ln2.hook_normalized"], 0, 6, 2.0), (bk.transcoders["blocks.1.ln2.hook_normalized"], 1, 4, 0.5),
             (fresh.to(compare.tolerance().dtype), 0, 1, 1.0)]
    for i, (shipped, layer, n_seqs, l1) in enumerate(cases):
        transcoder = copy.deepcopy(shipped)  # gradients land on the copy, never on the checks' backend
        x, y = _mlp_io(bk, layer, n_seqs, seed(81 + i))
        if i == 2:
            x, y = x[:1], y[:1]  # a batch of one token
        args = (transcoder, x, y, l1)
        got = run(transcoder_loss, bk, *args, grad=True)
        name = f"layer {layer}, {len(x)} tokens, l1_coefficient {l1}"
        mistakes = signatures(MISTAKES["transcoder_loss"], *args, grad=True)
        for key in ("mse", "sparsity", "loss"):
            value = loss_entry(got, key)
            expect_tensor(value, known(f"{key}_{i}", value), name=f"{key} ({name})",
                          mistakes=mistakes.select(lambda out, key=key: out[key]))
        loss = got["loss"]
        if not loss.requires_grad:
            fail("the loss does not require grad: it is cut off from the transcoder's parameters (computed under "
                 "torch.no_grad(), detached, or rebuilt from .item()); a training loop could not call backward() on it")
        params = {"b_dec": transcoder.b_dec, "W_dec": transcoder.W_dec, "b_enc": transcoder.b_enc}
        grads = call(lambda: torch.autograd.grad(loss, list(params.values()), allow_unused=True))
        for (param, grad) in zip(params, grads):
            if grad is None:
                fail(f"the loss does not depend on transcoder.{param}")
            want = known(f"grad_{param}_{i}", grad.norm(dim=-1) if param == "W_dec" else grad)
            if param == "W_dec":  # per-latent size of the decoder's gradient
                grad = grad.norm(dim=-1)
            if param == "b_enc":  # a latent at its ReLU kink on some token may switch on one machine, off on another
                grad, want = grad * _clear_of_kink(transcoder, x), want * _clear_of_kink(transcoder, x).cpu()
            dims = "d_sae" if param in ("b_enc", "W_dec") else "d_out"
            expect_tensor(grad, want, name=f"gradient of the loss for {param} ({name})", dims=dims)


def _clear_of_kink(transcoder: Any, x: Tensor) -> Tensor:
    """Latents whose pre-activation is away from 0 on every token (by 0.2% of the largest,
    about 8 times what TF32-rounded weights move it),
    so that float noise cannot switch them on or off and change the gradient for b_enc."""
    with torch.no_grad():
        pre = x @ transcoder.W_enc + transcoder.b_enc
    return (pre.abs() > 2e-3 * pre.abs().max()).all(0).to(pre.dtype)
