"""Training the model organism and its dictionaries, from seeds, on CPU in minutes.

Data never repeats: step ``t`` of the model reads ``world.corpus(..., seed=t)``, step ``t`` of
the dictionaries ``seed=DICTIONARY_SEEDS + t``; evaluation uses ``EVAL_SEEDS`` and up.

Dictionaries are trained all at once, one optimiser step each per batch of activations.
SAEs use SAELens's ``StandardTrainingSAE.training_forward_pass``; SAELens has no transcoder
trainer, so the transcoder loss is written out. Both minimise, per token,

    L = || x_hat - y ||^2 + lambda * sum_i f_i ||W_dec[i]||,   f = ReLU(x W_enc + b_enc)

(y = x for an SAE). Residual SAEs and transcoders weight each token's error by
<||r||^2> / ||r_t||^2, where r is the residual stream after their layer (``hook_resid_post``)
and <.> the batch mean: the final LayerNorm divides the residual by its norm, so what reaches
the logits is an error relative to that norm, and residual norms differ a lot between tokens
(unweighted, the last residual SAE lost 2 nats of CE loss at 0.92 explained variance). The
attention SAEs keep uniform weights, which measured better for them. Inputs and targets are first scaled by a constant so that their mean
norm is sqrt(d) (which makes one range of ``lambda`` fit every hook), and the scale is folded
back into the weights afterwards. ``lambda`` is steered towards a target L0: each step it is
multiplied by exp(eta * clip((L0 - target) / target, -1, 1)) until the last fifth of
training, when it is frozen and the learning rate decays to zero.

The cross-layer transcoder (``utils.clt``, chapter 07) and its same-layer control are trained
afterwards by :func:`train_organism_clts` on the same token stream (same seeds, BOS included, errors
weighted by the same residual norms, same steps, learning rate and schedule), with BatchTopK
at the shipped transcoders' L0 instead of a steered L1; ``utils.clt.train_clt`` states its loss.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import einops
import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer, StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput
from torch import Tensor
from tqdm.auto import tqdm

from utils.clt import CLTConfig, CLTTrainingConfig, CLTTrainingRun, clt_batches, train_clts
from utils.toy.dictionaries import D_SAE, DictionarySpec, empty_dictionary
from utils.toy.generator import World

DICTIONARY_SEEDS = 1_000_000
EVAL_SEEDS = 2_000_000


def _lr_at(step: int, steps: int, lr: float, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to a tenth of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_model(model: HookedSAETransformer, world: World, steps: int = 2000,
                batch: int = 64, seq_len: int = 48, lr: float = 2e-3) -> list[float]:
    """Next-token prediction on the toy corpus with AdamW; returns the loss curve."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    model.train()
    for step in (bar := tqdm(range(steps), desc="model")):
        for group in optimiser.param_groups:
            group["lr"] = _lr_at(step, steps, lr)
        loss = model(world.corpus(batch, seq_len, seed=step).tokens, return_type="loss")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        optimiser.zero_grad()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return losses


def read_activations(model: HookedSAETransformer, tokens: Int[Tensor, "batch pos"],
                     hooks: set[str]) -> dict[str, Float[Tensor, "token d"]]:
    """Activations at ``hooks``, one row per token (attention heads flattened)."""
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in hooks)
    flat = {}
    for name in hooks:
        pattern = "b p h d -> (b p) (h d)" if name.endswith("hook_z") else "b p d -> (b p) d"
        flat[name] = einops.rearrange(cache[name], pattern)
    return flat


def token_weights(spec: DictionarySpec,
                  resid: Float[Tensor, "token d_model"]) -> Float[Tensor, "token 1"]:
    """<||r||^2> / ||r_t||^2 (1 for attention SAEs): how much token t's error counts."""
    norm2 = resid.pow(2).sum(-1, keepdim=True)
    return torch.ones_like(norm2) if spec.kind == "attn_sae" else norm2.mean() / norm2


def weight_hook(spec: DictionarySpec) -> str:
    return f"blocks.{spec.layer}.hook_resid_post"


class _Trainee:
    """One dictionary being trained: its parameters, input/output scales and lambda."""

    def __init__(self, spec: DictionarySpec, x: Float[Tensor, "token d_in"],
                 y: Float[Tensor, "token d_out"], l1: float = 1.0):
        self.spec = spec
        self.scale_in = math.sqrt(spec.d_in) / x.norm(dim=-1).mean().item()
        self.scale_out = math.sqrt(spec.d_out) / y.norm(dim=-1).mean().item()
        self.l1 = l1
        if spec.kind == "transcoder":
            self.module = empty_dictionary(spec)
        else:
            cfg = StandardTrainingSAEConfig(d_in=spec.d_in, d_sae=D_SAE, l1_coefficient=l1)
            self.module = StandardTrainingSAE(cfg)
        with torch.no_grad():
            self.module.b_dec.copy_((y * self.scale_out).mean(0))

    def loss(self, x: Float[Tensor, "token d_in"], y: Float[Tensor, "token d_out"],
             weights: Float[Tensor, "token 1"],
             step: int) -> tuple[Tensor, Float[Tensor, "token d_sae"]]:
        """The training loss on a batch (scaled here) and the latent activations."""
        x, y = x * self.scale_in, y * self.scale_out
        if self.spec.kind == "transcoder":
            acts = self.module.encode(x)
            mse = ((self.module.decode(acts) - y).pow(2) * weights).sum(-1).mean()
            sparsity = (acts * self.module.W_dec.norm(dim=-1)).sum(-1).mean()
            return mse + self.l1 * sparsity, acts
        # SAELens sums mse_loss_fn(out, x) over d_in: swap in this batch's weighted error.
        self.module.mse_loss_fn = lambda out, target: (out - target).pow(2) * weights
        out = self.module.training_forward_pass(TrainStepInput(
            sae_in=x, coefficients={"l1": self.l1}, dead_neuron_mask=None,
            n_training_steps=step, is_logging_step=False))
        return out.loss, out.feature_acts

    def steer(self, l0: float, eta: float = 0.01) -> None:
        """Move lambda towards the target L0 (multiplicatively, at most e^eta per step)."""
        error = (l0 - self.spec.target_l0) / self.spec.target_l0
        self.l1 *= math.exp(eta * max(-1.0, min(1.0, error)))

    def export(self) -> SAE:
        """The inference dictionary, with the input/output scales folded into its weights:
        W_enc <- s_in W_enc, W_dec <- W_dec / s_out, b_dec <- b_dec / s_out (for an SAE the
        pre-encoder subtraction of b_dec then uses b_dec / s, as it should)."""
        sae = empty_dictionary(self.spec)
        with torch.no_grad():
            sae.W_enc.copy_(self.module.W_enc * self.scale_in)
            sae.b_enc.copy_(self.module.b_enc)
            sae.W_dec.copy_(self.module.W_dec / self.scale_out)
            sae.b_dec.copy_(self.module.b_dec / self.scale_out)
        return sae.eval()


def train_dictionaries(model: HookedSAETransformer, world: World,
                       specs: list[DictionarySpec], steps: int = 2000, batch: int = 64,
                       seq_len: int = 48, lr: float = 2e-3) -> dict[str, SAE]:
    """Train every dictionary in ``specs`` on the same stream of activations."""
    hooks = {h for s in specs for h in (s.hook, s.hook_out, weight_hook(s))}
    first = read_activations(model, world.corpus(batch, seq_len, DICTIONARY_SEEDS - 1).tokens,
                             hooks)
    trainees = [_Trainee(s, first[s.hook], first[s.hook_out]) for s in specs]
    optimisers = [torch.optim.Adam(t.module.parameters(), lr=lr) for t in trainees]
    frozen_from = int(0.8 * steps)
    for step in (bar := tqdm(range(steps), desc="dictionaries")):
        acts = read_activations(
            model, world.corpus(batch, seq_len, seed=DICTIONARY_SEEDS + step).tokens, hooks)
        decay = min(1.0, (steps - step) / (steps - frozen_from))
        l0s = []
        for trainee, optimiser in zip(trainees, optimisers):
            spec = trainee.spec
            loss, latents = trainee.loss(acts[spec.hook], acts[spec.hook_out],
                                         token_weights(spec, acts[weight_hook(spec)]), step)
            for group in optimiser.param_groups:
                group["lr"] = lr * decay
            loss.backward()
            optimiser.step()
            optimiser.zero_grad()
            l0 = (latents > 0).float().sum(-1).mean().item()
            if step < frozen_from:
                trainee.steer(l0)
            l0s.append(l0)
        bar.set_postfix(l0=" ".join(f"{v:.0f}" for v in l0s))
    return {t.spec.name: t.export() for t in trainees}


# ---------------------------------------------------------------------------------------
# Cross-layer transcoders (chapter 07), trained after the dictionaries on the same stream.

CLT_NAMES = ("cross_layer", "same_layer")  # the CLT, and the same trainer without cross-layer decoders


def clt_token_batches(world: World, batch: int = 64, seq_len: int = 48) -> Iterator[Int[Tensor, "batch pos"]]:
    """The dictionaries' token stream: ``seed=DICTIONARY_SEEDS - 1`` first (it sets the
    scales), then step ``t`` reads ``seed=DICTIONARY_SEEDS + t``, then the calibration batches."""
    for t in itertools.count(-1):
        yield world.corpus(batch, seq_len, seed=DICTIONARY_SEEDS + t).tokens


def train_organism_clts(model: HookedSAETransformer, world: World, k: tuple[float, ...], steps: int = 2000) -> dict[str, CLTTrainingRun]:
    """The organism's CLT and its same-layer control, trained together on the stream the
    PLTs were trained on (BOS included, errors weighted by the residual norm as theirs),
    with BatchTopK at ``k`` latents per token per layer (the shipped PLTs' L0)."""
    n_layers, d_model = model.cfg.n_layers, model.cfg.d_model
    cfg = CLTTrainingConfig(k=k, steps=steps)
    runs = {name: (CLTConfig(d_model, D_SAE, n_layers, cross_layer=name == "cross_layer",
                             metadata={"model_name": "toy", "trained_as": "batchtopk", "k": list(k), "steps": steps}), cfg)
            for name in CLT_NAMES}
    return train_clts(runs, clt_batches(model, clt_token_batches(world), n_layers))
