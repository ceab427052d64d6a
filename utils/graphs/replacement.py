"""The local replacement model of one prompt (introduced in chapter 05).

For one prompt, the **local replacement model** replaces every MLP by its transcoder and
freezes everything else that is nonlinear at its value on the prompt:

* every normalisation scale ``s(x)`` (``ln1``, ``ln2``, ``ln_final``: their ``hook_scale``
  returns the cached value), so a norm becomes the linear map ``x -> (P x) / s * w + b``;
* every attention pattern (``hook_pattern`` returns the cached value), so attention becomes
  a linear map of the values;
* every transcoder's latents and every *error node* ``e = MLP(x) - decode(f)`` become
  *leaves*: inputs of the model whose values are those on the prompt. Layer ``L``'s MLP
  output is ``f_L W_dec + b_dec + e_L``.

The token-plus-position embedding at each position is a leaf as well (``blocks.0.hook_resid_pre``).
With every leaf at its value the replacement model reproduces the model's logits exactly,
and every *target* (a latent's pre-activation ``n_L(x) . W_enc[:, i] + b_enc[i]``, or a
mean-centred logit) is an affine function of the leaves. ``utils.graphs.engine`` builds the
graph of those functions.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.nodes import transcoder_layer

Hook = tuple[str, Callable[..., Any]]  # a TransformerLens forward hook: returns the new value, or None to keep it


def frozen_hook_names(model: HookedSAETransformer) -> list[str]:
    """Every hook whose value the local replacement model freezes: each layer's ``ln1`` and
    ``ln2`` scales and attention pattern, and the final norm's scale (LayerNorm or RMSNorm;
    a model without norms has no scales to freeze)."""
    names = []
    norms = model.cfg.normalization_type is not None
    for layer in range(model.cfg.n_layers):
        if norms:
            names += [f"blocks.{layer}.ln1.hook_scale", f"blocks.{layer}.ln2.hook_scale"]
        names.append(f"blocks.{layer}.attn.hook_pattern")
    return names + (["ln_final.hook_scale"] if norms else [])


def freezing_hooks(frozen: dict[str, Tensor]) -> list[Hook]:
    """Hooks that replace each activation named in ``frozen`` by its frozen value (batch 1,
    broadcast to any batch), detached: no gradient flows into what computed it."""

    def hook(x: Tensor, hook: Any) -> Tensor:
        return frozen[hook.name].detach().expand_as(x)

    return [(name, hook) for name in frozen]


@contextmanager
def frozen_parameters(*modules: torch.nn.Module) -> Iterator[None]:
    """Turn ``requires_grad`` off on every parameter of ``modules`` for the block, and back to
    what it was after: a backward pass then computes no parameter gradient and leaves
    nothing in any ``.grad``."""
    params = [p for module in modules for p in module.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


@dataclass
class LocalReplacement:
    """Everything the local replacement model of one prompt holds fixed.

    tokens: ``[1, pos]``; frozen: cached scales and patterns (batch 1); embed: the residual
    stream entering layer 0 ``[pos, d_model]``; acts / errors: each transcoder's latents
    ``[pos, d_sae]`` and error node ``[pos, d_model]``, keyed by layer; logits: the model's
    ``[pos, d_vocab]``."""

    model: HookedSAETransformer
    transcoders: dict[int, SAE]
    tokens: Int[Tensor, "1 pos"]
    frozen: dict[str, Tensor]
    embed: Float[Tensor, "pos d_model"]
    acts: dict[int, Float[Tensor, "pos d_sae"]]
    errors: dict[int, Float[Tensor, "pos d_model"]]
    logits: Float[Tensor, "pos d_vocab"]

    @property
    def n_pos(self) -> int:
        return self.tokens.shape[1]

    def leaves(self, rows: int) -> dict[str, Tensor]:
        """Fresh leaves (``requires_grad``) holding the prompt's values, repeated ``rows`` times:
        ``"embed"``, ``"latents.L"``, ``"error.L"``."""
        values = {"embed": self.embed} | {f"latents.{L}": a for L, a in self.acts.items()} | {
            f"error.{L}": e for L, e in self.errors.items()}
        return {name: v.detach().expand(rows, *v.shape).clone().requires_grad_(True) for name, v in values.items()}


def check_transcoder(transcoder: SAE) -> None:
    """The replacement model reads a transcoder as ``f = act(x W_enc + b_enc)`` and
    ``decode(f) = f W_dec + b_dec``: refuse one that normalises its input or output at run time."""
    norm = getattr(transcoder.cfg, "normalize_activations", "none")
    if norm not in (None, "none"):
        raise ValueError(f"transcoder at {transcoder.cfg.metadata.hook_name} normalises its activations "
                         f"({norm!r}); the local replacement model needs a plain affine encoder and decoder")


def local_replacement(model: HookedSAETransformer, transcoders: Sequence[SAE], tokens: Int[Tensor, "1 pos"]) -> LocalReplacement:
    """Run the model once on ``tokens`` (one prompt) and keep what the replacement model freezes."""
    if tokens.ndim != 2 or tokens.shape[0] != 1:
        raise ValueError(f"a local replacement model is built for one prompt: expected tokens [1, pos], got {tuple(tokens.shape)}")
    by_layer = dict(sorted(((transcoder_layer(tc), tc) for tc in transcoders), key=lambda item: item[0]))
    if list(by_layer) != list(range(model.cfg.n_layers)):
        raise ValueError(f"one transcoder per layer is needed (layers 0..{model.cfg.n_layers - 1}), got layers {sorted(by_layer)}")
    for tc in by_layer.values():
        check_transcoder(tc)
    names = frozen_hook_names(model) + ["blocks.0.hook_resid_pre"] + [
        f"blocks.{L}.ln2.hook_normalized" for L in by_layer] + [f"blocks.{L}.hook_mlp_out" for L in by_layer]
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=names)
        acts = {L: tc.encode(cache[f"blocks.{L}.ln2.hook_normalized"])[0] for L, tc in by_layer.items()}
        errors = {L: cache[f"blocks.{L}.hook_mlp_out"][0] - tc.decode(acts[L]) for L, tc in by_layer.items()}
    return LocalReplacement(model, by_layer, tokens, {n: cache[n] for n in frozen_hook_names(model)},
                            cache["blocks.0.hook_resid_pre"][0], acts, errors, logits[0])


def replacement_forward(rm: LocalReplacement, leaves: dict[str, Tensor],
                        stop_at_layer: int | None = None) -> tuple[dict[int, Tensor], Tensor | None]:
    """Run the replacement model with ``leaves`` (from :meth:`LocalReplacement.leaves`, maybe
    edited). Returns each layer's transcoder pre-activations ``[rows, pos, d_sae]`` (read
    from the frozen-scale ``ln2.hook_normalized``) and the logits ``[rows, pos, d_vocab]``
    (None with ``stop_at_layer``: only blocks before it run, which saves the unembedding
    when only latents are targets)."""
    rows = leaves["embed"].shape[0]
    pre: dict[int, Tensor] = {}

    def embed(x: Tensor, hook: Any) -> Tensor:
        return leaves["embed"]

    def read(layer: int) -> Callable[..., None]:
        def hook(x: Tensor, hook: Any) -> None:
            tc = rm.transcoders[layer]
            pre[layer] = x @ tc.W_enc + tc.b_enc
        return hook

    def write(layer: int) -> Callable[..., Tensor]:
        def hook(x: Tensor, hook: Any) -> Tensor:
            return rm.transcoders[layer].decode(leaves[f"latents.{layer}"]) + leaves[f"error.{layer}"]
        return hook

    hooks = freezing_hooks(rm.frozen) + [("blocks.0.hook_resid_pre", embed)]
    for layer in rm.transcoders:
        hooks += [(f"blocks.{layer}.ln2.hook_normalized", read(layer)), (f"blocks.{layer}.hook_mlp_out", write(layer))]
    with rm.model.hooks(fwd_hooks=hooks):
        out = rm.model(rm.tokens.expand(rows, -1), stop_at_layer=stop_at_layer)
    return pre, out if stop_at_layer is None else None


# ---------------------------------------------------------------------------------------
# Salient logits.


def salient_logit_ids(logits: Float[Tensor, " d_vocab"], coverage: float = 0.95, max_n: int = 10) -> tuple[Int[Tensor, " k"], Float[Tensor, " k"]]:
    """The fewest top tokens whose probabilities sum to at least ``coverage`` (at most
    ``max_n``), and their probabilities: chapter 05's ``salient_logits`` exercise."""
    probs = logits.double().softmax(-1)
    top = probs.topk(max_n)
    k = int((top.values.cumsum(0) < coverage).sum().item()) + 1
    return top.indices[: min(k, max_n)], top.values[: min(k, max_n)].to(logits.dtype)


def centred_unembedding(model: HookedSAETransformer, ids: Int[Tensor, " k"]) -> Float[Tensor, "d_model k"]:
    """``W_U[:, t] - mean_t' W_U[:, t']``: the direction a logit *relative to the mean logit* reads."""
    return model.W_U[:, ids] - model.W_U.mean(1, keepdim=True)
