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

What replaces the MLPs is an :class:`MLPDictionary`: per-layer transcoders
(:class:`TranscoderSet`, chapter 05) or a cross-layer transcoder (``utils.clt``, chapter 07),
whose latents of layer ``s`` write into the MLP outputs of every layer ``t >= s``: then layer
``t``'s MLP output is ``sum_{s <= t} f_s W_dec[s, t] + b_dec[t] + e_t``, and a latent leaf
feeds every later MLP output. Both go through the same code.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.nodes import output_hook, transcoder_layer

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
def frozen_parameters(*modules: Any) -> Iterator[None]:
    """Turn ``requires_grad`` off on every parameter of ``modules`` (anything with a
    ``parameters()`` method) for the block, and back to what it was after: a backward pass
    then computes no parameter gradient and leaves nothing in any ``.grad``."""
    params = [p for module in modules for p in module.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


# ---------------------------------------------------------------------------------------
# What replaces the MLPs.


@runtime_checkable
class MLPDictionary(Protocol):
    """What replaces every MLP of a model, as the replacement model and the graph engine
    read it: per-layer transcoders (:class:`TranscoderSet`) or a cross-layer transcoder
    (``utils.clt.CrossLayerTranscoder``).

    ``kind``: the node kind of its latents and error nodes (``"transcoder"``, ``"clt"``);
    layer ``L``'s latents read ``hook_in_at(L)`` (``encode_pre``: ``x W_enc[L] + b_enc[L]``,
    ``encode``: the activations), and layer ``t``'s MLP output, written at ``hook_out_at(t)``, is
    ``decode_layer(t, latents) = sum_{s in sources(t)} f_s decoder(s, t) + b_dec[t]``."""

    kind: str

    @property
    def n_layers(self) -> int: ...

    def hook_in_at(self, layer: int) -> str: ...

    def hook_out_at(self, layer: int) -> str: ...

    def encoder(self, layer: int) -> Float[Tensor, "d_in d_sae"]: ...

    def encode_pre(self, layer: int, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]: ...

    def encode(self, layer: int, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]: ...

    def sources(self, target: int) -> list[int]: ...

    def decoder(self, source: int, target: int) -> Float[Tensor, "d_sae d_out"]: ...

    def decode_layer(self, target: int, latents: Mapping[int, Tensor]) -> Float[Tensor, "... d_out"]: ...

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...


def check_transcoder(transcoder: SAE) -> None:
    """The replacement model reads a transcoder as ``f = act(x W_enc + b_enc)`` and
    ``decode(f) = f W_dec + b_dec``: refuse one that normalises its input or output at run time."""
    norm = getattr(transcoder.cfg, "normalize_activations", "none")
    if norm not in (None, "none"):
        raise ValueError(f"transcoder at {transcoder.cfg.metadata.hook_name} normalises its activations "
                         f"({norm!r}); the local replacement model needs a plain affine encoder and decoder")


class TranscoderSet:
    """Per-layer transcoders (SAELens ``Transcoder``s, one per layer) as an
    :class:`MLPDictionary`: layer ``L``'s latents write into layer ``L``'s MLP output only.
    Nothing is copied: every method calls the transcoder of its layer."""

    kind = "transcoder"

    def __init__(self, transcoders: Sequence[SAE]):
        self.by_layer: dict[int, SAE] = dict(sorted(((transcoder_layer(tc), tc) for tc in transcoders), key=lambda item: item[0]))
        if list(self.by_layer) != list(range(len(self.by_layer))):
            raise ValueError(f"one transcoder per layer from 0 is needed, got layers {sorted(self.by_layer)}")
        for tc in self.by_layer.values():
            check_transcoder(tc)

    @property
    def n_layers(self) -> int:
        return len(self.by_layer)

    def hook_in_at(self, layer: int) -> str:
        return self.by_layer[layer].cfg.metadata.hook_name

    def hook_out_at(self, layer: int) -> str:
        return output_hook(self.by_layer[layer])

    def encoder(self, layer: int) -> Float[Tensor, "d_in d_sae"]:
        return self.by_layer[layer].W_enc

    def encode_pre(self, layer: int, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        tc = self.by_layer[layer]
        return x @ tc.W_enc + tc.b_enc

    def encode(self, layer: int, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        return self.by_layer[layer].encode(x)

    def sources(self, target: int) -> list[int]:
        return [target]

    def decoder(self, source: int, target: int) -> Float[Tensor, "d_sae d_out"]:
        if source != target:
            raise ValueError(f"a per-layer transcoder of layer {source} writes only to layer {source}, not {target}")
        return self.by_layer[source].W_dec

    def decode_layer(self, target: int, latents: Mapping[int, Tensor]) -> Float[Tensor, "... d_out"]:
        return self.by_layer[target].decode(latents[target])

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        for tc in self.by_layer.values():
            yield from tc.parameters()


def mlp_dictionary(dictionaries: MLPDictionary | Sequence[SAE]) -> MLPDictionary:
    """``dictionaries`` as an :class:`MLPDictionary`: a cross-layer transcoder (or any
    :class:`MLPDictionary`) as it is, a sequence of per-layer transcoders as a :class:`TranscoderSet`."""
    if isinstance(dictionaries, MLPDictionary):
        return dictionaries
    if isinstance(dictionaries, SAE):
        raise ValueError("expected one transcoder per layer (a list), or a cross-layer transcoder; got a single SAE")
    return TranscoderSet(dictionaries)


# ---------------------------------------------------------------------------------------
# The replacement model of one prompt.


@dataclass
class LocalReplacement:
    """Everything the local replacement model of one prompt holds fixed.

    dictionary: what replaces the MLPs (:class:`MLPDictionary`); tokens: ``[1, pos]``; frozen:
    cached scales and patterns (batch 1); embed: the residual stream entering layer 0
    ``[pos, d_model]``; acts: each layer's latents ``[pos, d_sae]``; errors: each layer's
    error node ``[pos, d_model]`` (the MLP output minus its reconstruction), keyed by layer;
    logits: the model's ``[pos, d_vocab]``."""

    model: HookedSAETransformer
    dictionary: MLPDictionary
    tokens: Int[Tensor, "1 pos"]
    frozen: dict[str, Tensor]
    embed: Float[Tensor, "pos d_model"]
    acts: dict[int, Float[Tensor, "pos d_sae"]]
    errors: dict[int, Float[Tensor, "pos d_model"]]
    logits: Float[Tensor, "pos d_vocab"]

    @property
    def n_pos(self) -> int:
        return self.tokens.shape[1]

    @property
    def kind(self) -> str:
        """The node kind of the dictionary's latents and error nodes."""
        return self.dictionary.kind

    @property
    def transcoders(self) -> dict[int, SAE]:
        """The per-layer transcoders by layer (chapter 05's replacement); a CLT has none."""
        if not isinstance(self.dictionary, TranscoderSet):
            raise AttributeError("this replacement model uses a cross-layer transcoder: read rm.dictionary")
        return self.dictionary.by_layer

    def leaves(self, rows: int) -> dict[str, Tensor]:
        """Fresh leaves (``requires_grad``) holding the prompt's values, repeated ``rows`` times:
        ``"embed"``, ``"latents.L"``, ``"error.L"``."""
        values = {"embed": self.embed} | {f"latents.{L}": a for L, a in self.acts.items()} | {
            f"error.{L}": e for L, e in self.errors.items()}
        return {name: v.detach().expand(rows, *v.shape).clone().requires_grad_(True) for name, v in values.items()}


def local_replacement(model: HookedSAETransformer, dictionaries: MLPDictionary | Sequence[SAE],
                      tokens: Int[Tensor, "1 pos"]) -> LocalReplacement:
    """Run the model once on ``tokens`` (one prompt) and keep what the replacement model
    freezes. ``dictionaries``: one transcoder per layer, or a cross-layer transcoder over every
    layer (:func:`mlp_dictionary`)."""
    if tokens.ndim != 2 or tokens.shape[0] != 1:
        raise ValueError(f"a local replacement model is built for one prompt: expected tokens [1, pos], got {tuple(tokens.shape)}")
    dictionary = mlp_dictionary(dictionaries)
    if dictionary.n_layers != model.cfg.n_layers:
        raise ValueError(f"the replacement model replaces every MLP (layers 0..{model.cfg.n_layers - 1}): got "
                         f"dictionaries for {dictionary.n_layers} layer(s)")
    layers = range(dictionary.n_layers)
    names = frozen_hook_names(model) + ["blocks.0.hook_resid_pre"] + [dictionary.hook_in_at(L) for L in layers] + [
        dictionary.hook_out_at(L) for L in layers]
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=names)
        acts = {L: dictionary.encode(L, cache[dictionary.hook_in_at(L)])[0] for L in layers}
        errors = {L: cache[dictionary.hook_out_at(L)][0] - dictionary.decode_layer(L, acts) for L in layers}
    return LocalReplacement(model, dictionary, tokens, {n: cache[n] for n in frozen_hook_names(model)},
                            cache["blocks.0.hook_resid_pre"][0], acts, errors, logits[0])


def replacement_forward(rm: LocalReplacement, leaves: dict[str, Tensor],
                        stop_at_layer: int | None = None) -> tuple[dict[int, Tensor], Tensor | None]:
    """Run the replacement model with ``leaves`` (from :meth:`LocalReplacement.leaves`, maybe
    edited). Returns each layer's latents' pre-activations ``[rows, pos, d_sae]`` (read
    from the frozen-scale MLP input) and the logits ``[rows, pos, d_vocab]`` (None with
    ``stop_at_layer``: only blocks before it run, which saves the unembedding when only
    latents are targets). Layer ``t``'s MLP output is
    ``decode_layer(t, latent leaves) + error leaf``: with a CLT, every earlier layer's latent
    leaves write into it too."""
    rows = leaves["embed"].shape[0]
    pre: dict[int, Tensor] = {}
    dictionary = rm.dictionary
    latents = {layer: leaves[f"latents.{layer}"] for layer in range(dictionary.n_layers)}

    def embed(x: Tensor, hook: Any) -> Tensor:
        return leaves["embed"]

    def read(layer: int) -> Callable[..., None]:
        def hook(x: Tensor, hook: Any) -> None:
            pre[layer] = dictionary.encode_pre(layer, x)
        return hook

    def write(layer: int) -> Callable[..., Tensor]:
        def hook(x: Tensor, hook: Any) -> Tensor:
            return dictionary.decode_layer(layer, latents) + leaves[f"error.{layer}"]
        return hook

    hooks = freezing_hooks(rm.frozen) + [("blocks.0.hook_resid_pre", embed)]
    for layer in range(dictionary.n_layers):
        hooks += [(dictionary.hook_in_at(layer), read(layer)), (dictionary.hook_out_at(layer), write(layer))]
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
