"""Cross-layer transcoders (CLTs): one dictionary for all the MLPs of a model (chapter 07).

A per-layer transcoder (PLT, chapter 04) of layer ``L`` reads that layer's MLP input and
writes that MLP's output only. A cross-layer transcoder has, for every layer ``s``, an
encoder reading the MLP input of layer ``s`` (``blocks.{s}.ln2.hook_normalized``, where the
course's PLTs read) and, for every layer ``t >= s``, a decoder ``W_dec[s, t]`` writing into
the MLP output of layer ``t`` (``blocks.{t}.hook_mlp_out``):

    f_s = JumpReLU(x_s W_enc[s] + b_enc[s]; theta_s)                latents of layer s
    y_t = sum_{s <= t} f_s W_dec[s, t] + b_dec[t]                    MLP output of layer t

with ``JumpReLU(z; theta) = z * [z > theta]`` per latent (``theta = 0`` is a ReLU). A latent
of layer ``s`` is *one* node that writes into every later MLP output, so a feature the model
computes over several MLPs needs one latent, not one per layer. Without the decoders
``t > s`` (``CLTConfig.cross_layer=False``) a CLT is a set of PLTs, trained by the same code.

Contents, in the order a reader needs them:

* :class:`CLTConfig`, :class:`CrossLayerTranscoder`: encode, decode, forward; what a latent
  writes (:meth:`~CrossLayerTranscoder.residual_write`,
  :meth:`~CrossLayerTranscoder.decoder_rows`), for edges in attribution graphs;
* saving and loading (``cfg.json`` + ``clt_weights.safetensors``, every key and shape
  checked) and :meth:`~CrossLayerTranscoder.to_circuit_tracer` (circuit-tracer's CLT files);
* :func:`spliced`: the CLT in place of the model's MLPs, with or without error nodes;
* training: :func:`batch_topk`, :func:`reconstruction_loss`, :func:`sparsity_loss`,
  :func:`clt_batches` (activations of any ``HookedTransformer``) and :func:`train_clt`.

For attribution graphs (chapter 05's local replacement model) a CLT changes one thing: the
MLP output of layer ``t`` is ``decode_layer(t, {s: leaf_s for s <= t}) + error_t``, so a
latent leaf of layer ``s`` feeds every later MLP output, and the gradient with respect to it
(its outgoing edges) sums over all its decoders by itself. Encoders still read
``blocks.{L}.ln2.hook_normalized`` (``encode_pre``); per-layer transcoders go through the same
code as a CLT without cross-layer decoders (:meth:`CrossLayerTranscoder.from_transcoders`).

Training reads an endless iterator of token batches through any ``HookedTransformer``; for
GPT-2 on the organism's text (chapter 06's ``text_dataset``), a two-layer CLT for a few steps::

    rows = torch.tensor(text_dataset(gpt2, texts, context_size=128)["tokens"])
    stream = (rows[i % len(rows):][:8] for i in itertools.count(0, 8))
    run = train_clt(CLTConfig(768, 3072, n_layers=2), CLTTrainingConfig(k=(32, 32), steps=5),
                    clt_batches(gpt2, stream, n_layers=2, drop_bos=True))

(all twelve layers have 78 decoders: 0.7 GB of weights at 3,072 latents per layer).

Training uses BatchTopK (Bussmann et al. 2024): in a batch of ``N`` tokens, layer ``s`` keeps
its ``k_s * N`` largest values of ``ReLU(pre) * ||d||`` (``||d||`` the norm of everything the
latent writes, all its decoders concatenated) and zeroes the rest, so the mean L0 of layer ``s``
is exactly ``k_s``. For inference the selection becomes a per-layer threshold (a JumpReLU),
calibrated so that the L0 stays ``k_s`` on fresh text.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import einops
import torch
from jaxtyping import Bool, Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

CONFIG, WEIGHTS = "cfg.json", "clt_weights.safetensors"
HOOK_IN = "blocks.{layer}.ln2.hook_normalized"
HOOK_OUT = "blocks.{layer}.hook_mlp_out"


# ---------------------------------------------------------------------------------------
# The model.


@dataclass
class CLTConfig:
    """The shape of a CLT and where it reads and writes.

    d_in, d_out: widths of the MLP input it reads and of the MLP output it writes (``d_out``
    defaults to ``d_in``); d_sae: latents *per layer*; n_layers: the CLT covers the MLPs of
    layers ``0 .. n_layers - 1``; hook_in / hook_out: hook names with ``{layer}``;
    cross_layer: False keeps only the decoders ``W_dec[s, s]`` (a set of PLTs);
    metadata: free-form record (model name, training settings and figures)."""

    d_in: int
    d_sae: int
    n_layers: int
    d_out: int = 0
    hook_in: str = HOOK_IN
    hook_out: str = HOOK_OUT
    cross_layer: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.d_out = self.d_out or self.d_in
        for name in ("d_in", "d_sae", "n_layers", "d_out"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"CLTConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        for name in ("hook_in", "hook_out"):
            if "{layer}" not in getattr(self, name):
                raise ValueError(f"CLTConfig.{name} needs a '{{layer}}' placeholder, got {getattr(self, name)!r}")

    def decoder_pairs(self) -> list[tuple[int, int]]:
        """Every (source, target) layer pair with a decoder: ``t >= s`` (``t == s`` only if
        not ``cross_layer``)."""
        return [(s, t) for s in range(self.n_layers) for t in range(s, self.n_layers) if self.cross_layer or s == t]

    def sources(self, target: int) -> list[int]:
        """The layers whose latents write into layer ``target``'s MLP output."""
        return [s for s, t in self.decoder_pairs() if t == target]

    def hook_in_at(self, layer: int) -> str:
        return self.hook_in.format(layer=layer)

    def hook_out_at(self, layer: int) -> str:
        return self.hook_out.format(layer=layer)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CLTConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown CLTConfig keys {sorted(unknown)}: expected some of {sorted(known)}")
        return cls(**data)


def _pair(source: int, target: int) -> str:
    return f"{source}_{target}"  # a ParameterDict key (no dots allowed)


class CrossLayerTranscoder(nn.Module):
    """A cross-layer transcoder (see the module docstring for the math).

    Parameters: ``W_enc`` [n_layers, d_in, d_sae] and ``b_enc`` [n_layers, d_sae] (one encoder
    per layer: ``W_enc[L]``), ``threshold`` [n_layers, d_sae] (the JumpReLU thresholds, not
    trained by gradient), ``W_dec`` one [d_sae, d_out] matrix per (source, target) pair, read
    with :meth:`decoder`, and ``b_dec`` [n_layers, d_out] (one bias per target layer)."""

    def __init__(self, cfg: CLTConfig):
        super().__init__()
        self.cfg = cfg
        n, d_in, d_sae, d_out = cfg.n_layers, cfg.d_in, cfg.d_sae, cfg.d_out
        self.W_enc = nn.Parameter(torch.zeros(n, d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(n, d_sae))
        self.threshold = nn.Parameter(torch.zeros(n, d_sae), requires_grad=False)
        self.W_dec = nn.ParameterDict({_pair(s, t): nn.Parameter(torch.zeros(d_sae, d_out)) for s, t in cfg.decoder_pairs()})
        self.b_dec = nn.Parameter(torch.zeros(n, d_out))

    kind = "clt"  # the node kind of its latents and error nodes in a graph (utils.nodes)

    @property
    def device(self) -> torch.device:
        return self.b_enc.device

    @property
    def n_layers(self) -> int:
        return self.cfg.n_layers

    def hook_in_at(self, layer: int) -> str:
        """The hook layer ``layer``'s encoder reads."""
        return self.cfg.hook_in_at(layer)

    def hook_out_at(self, layer: int) -> str:
        """The MLP output of layer ``layer``, which the decoders ``W_dec[s, layer]`` write."""
        return self.cfg.hook_out_at(layer)

    def sources(self, target: int) -> list[int]:
        """The layers whose latents write into layer ``target``'s MLP output."""
        return self.cfg.sources(target)

    def encoder(self, layer: int) -> Float[Tensor, "d_in d_sae"]:
        """``W_enc[layer]``: column ``i`` is the direction latent ``i`` of that layer reads."""
        self._check_layer(layer)
        return self.W_enc[layer]

    @property
    def dtype(self) -> torch.dtype:
        return self.b_enc.dtype

    def _check_layer(self, layer: int, what: str = "layer") -> None:
        if not isinstance(layer, int) or not 0 <= layer < self.cfg.n_layers:
            raise ValueError(f"{what} must be an int in 0..{self.cfg.n_layers - 1}, got {layer!r}")

    def decoder(self, source: int, target: int) -> Float[Tensor, "d_sae d_out"]:
        """``W_dec[source, target]``: what one unit of each latent of layer ``source`` adds to
        layer ``target``'s MLP output (zeros where the CLT has no such decoder)."""
        self._check_layer(source, "source")
        self._check_layer(target, "target")
        if target < source:
            raise ValueError(f"a latent of layer {source} writes only to layers >= {source}, not to layer {target}")
        key = _pair(source, target)
        if key not in self.W_dec:
            return torch.zeros(self.cfg.d_sae, self.cfg.d_out, dtype=self.dtype, device=self.device)
        return self.W_dec[key]

    # -- encoding and decoding --------------------------------------------------------

    def encode_pre(self, layer: int, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Pre-activations ``x W_enc[layer] + b_enc[layer]`` of layer ``layer``'s latents."""
        self._check_layer(layer)
        return x @ self.W_enc[layer] + self.b_enc[layer]

    def encode(self, layer: int, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Latents of layer ``layer``: ``z * [z > threshold]`` with ``z`` the pre-activation
        (thresholds are non-negative, so this is zero wherever a ReLU would be)."""
        pre = self.encode_pre(layer, x)
        return pre * (pre > self.threshold[layer])

    def decode_layer(self, target: int, latents: Mapping[int, Float[Tensor, "... d_sae"]]) -> Float[Tensor, "... d_out"]:
        """Layer ``target``'s MLP output, ``sum_{s <= target} f_s W_dec[s, target] + b_dec[target]``:
        ``latents`` maps each source layer to its latents (every source up to ``target`` needed)."""
        self._check_layer(target, "target")
        sources = self.cfg.sources(target)
        missing = [s for s in sources if s not in latents]
        if missing:
            raise ValueError(f"layer {target}'s output needs the latents of layers {sources}; missing {missing}")
        return sum(latents[s] @ self.decoder(s, target) for s in sources) + self.b_dec[target]

    def decode(self, latents: Mapping[int, Float[Tensor, "... d_sae"]]) -> dict[int, Float[Tensor, "... d_out"]]:
        """Every MLP output whose sources are all in ``latents`` (layers ``0..L`` give outputs
        ``0..L``), keyed by layer."""
        return {t: self.decode_layer(t, latents) for t in range(self.cfg.n_layers)
                if all(s in latents for s in self.cfg.sources(t))}

    def forward(self, inputs: Mapping[int, Float[Tensor, "... d_in"]]) -> dict[int, Float[Tensor, "... d_out"]]:
        """MLP inputs keyed by layer -> reconstructed MLP outputs keyed by layer."""
        return self.decode({layer: self.encode(layer, x) for layer, x in inputs.items()})

    # -- what a latent writes: edges ----------------------------------------------------

    def decoder_norms(self, source: int) -> Float[Tensor, " d_sae"]:
        """``||d_i||``: the norm of everything latent ``i`` of layer ``source`` writes, its rows
        of every decoder ``W_dec[source, t]`` concatenated."""
        rows = torch.stack([self.decoder(source, t) for t in range(source, self.cfg.n_layers)])
        return rows.pow(2).sum((0, 2)).sqrt()

    def decoder_rows(self, source: int, latent_ids: Int[Tensor, " n"] | None = None) -> Float[Tensor, "n n_targets d_out"]:
        """The decoder rows of latents ``latent_ids`` of layer ``source`` (all if None), one per
        target layer ``source .. n_layers - 1``: ``rows[j, t - source] = W_dec[source, t][latent_ids[j]]``.
        An attribution graph reads a latent's outgoing edges against these."""
        rows = torch.stack([self.decoder(source, t) for t in range(source, self.cfg.n_layers)], dim=1)
        return rows if latent_ids is None else rows[latent_ids]

    def residual_write(self, source: int, before: int | None = None) -> Float[Tensor, "d_sae d_out"]:
        """``sum_{source <= t < before} W_dec[source, t]``: what one unit of each latent of layer
        ``source`` has added to the residual stream by the time layer ``before``'s MLP reads it
        (``before=None``: after the last layer, as the unembedding sees it). This is the
        latent's direct path into a later latent or a logit, summed over its decoders."""
        before = self.cfg.n_layers if before is None else before
        if not source < before <= self.cfg.n_layers:
            raise ValueError(f"a latent of layer {source} writes from layer {source} on: expected {source} < before <= {self.cfg.n_layers}, got {before}")
        return torch.stack([self.decoder(source, t) for t in range(source, before)]).sum(0)

    @classmethod
    def from_transcoders(cls, transcoders: Sequence[Any]) -> "CrossLayerTranscoder":
        """Per-layer transcoders (SAELens ``Transcoder``s, one for each layer ``0..n-1``, each
        reading ``blocks.{L}.ln2.hook_normalized`` and writing ``blocks.{L}.hook_mlp_out``) as
        one CLT without cross-layer decoders: the same function, so PLTs and CLTs can go
        through the same code. JumpReLU transcoders keep their thresholds; ReLU ones get 0."""
        by_layer = {}
        for tc in transcoders:
            hook_in, hook_out = tc.cfg.metadata.hook_name, getattr(tc.cfg.metadata, "hook_name_out", None)
            layer = int(hook_in.split(".")[1]) if hook_in.startswith("blocks.") else -1
            if hook_in != HOOK_IN.format(layer=layer) or hook_out != HOOK_OUT.format(layer=layer):
                raise ValueError(f"expected transcoders from {HOOK_IN} to {HOOK_OUT}, got one from {hook_in!r} to {hook_out!r}")
            if getattr(tc.cfg, "apply_b_dec_to_input", False) or hasattr(tc, "W_skip"):
                raise ValueError("a transcoder with a skip connection or that subtracts b_dec from its input is not a CLT layer")
            by_layer[layer] = tc
        if sorted(by_layer) != list(range(len(by_layer))):
            raise ValueError(f"one transcoder for each layer 0..n-1 is needed, got layers {sorted(by_layer)}")
        first = by_layer[0]
        cfg = CLTConfig(d_in=first.cfg.d_in, d_sae=first.cfg.d_sae, n_layers=len(by_layer), d_out=first.cfg.d_out,
                        cross_layer=False, metadata={"from": "per-layer transcoders"})
        clt = cls(cfg).to(device=first.W_enc.device, dtype=first.W_enc.dtype)
        with torch.no_grad():
            for layer, tc in by_layer.items():
                clt.W_enc[layer].copy_(tc.W_enc)
                clt.b_enc[layer].copy_(tc.b_enc)
                clt.decoder(layer, layer).copy_(tc.W_dec)
                clt.b_dec[layer].copy_(tc.b_dec)
                if hasattr(tc, "threshold"):  # SAELens's JumpReLU: ReLU(z) * [z > threshold]
                    clt.threshold[layer].copy_(tc.threshold.clamp(min=0))
        return clt.eval()

    # -- files ----------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write ``cfg.json`` and ``clt_weights.safetensors`` (keys as in ``state_dict``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG).write_text(json.dumps(asdict(self.cfg), indent=1))
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, folder / WEIGHTS)

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> "CrossLayerTranscoder":
        """Rebuild a CLT from :meth:`save`'s files; every key and shape must match the config."""
        folder = Path(folder)
        if not (folder / CONFIG).exists() or not (folder / WEIGHTS).exists():
            raise FileNotFoundError(f"no CLT at {folder}: expected {CONFIG} and {WEIGHTS}")
        clt = cls(CLTConfig.from_dict(json.loads((folder / CONFIG).read_text())))
        state = load_file(folder / WEIGHTS, device=device)
        expected = {k: tuple(v.shape) for k, v in clt.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state.items()}
        if set(found) != set(expected):
            raise ValueError(f"{folder / WEIGHTS}: keys {sorted(set(found) ^ set(expected))} are missing or unexpected")
        wrong = {k: (found[k], expected[k]) for k in expected if found[k] != expected[k]}
        if wrong:
            raise ValueError(f"{folder / WEIGHTS}: wrong shapes (found, expected): {wrong}")
        clt.load_state_dict(state, strict=True)
        if (clt.threshold < 0).any():
            raise ValueError(f"{folder / WEIGHTS}: negative JumpReLU thresholds")
        return clt.to(device).eval()

    def to_circuit_tracer(self, folder: str | Path, model_name: str | None = None) -> list[Path]:
        """Write the CLT in circuit-tracer's CLT format (what its ``load_clt`` reads, 0.5.0):

        * ``W_enc_{L}.safetensors``: ``W_enc_{L}`` [d_sae, d_in] (our ``W_enc[L]`` transposed),
          ``b_enc_{L}`` [d_sae], ``b_dec_{L}`` [d_out], ``threshold_{L}`` [d_sae] (JumpReLU);
        * ``W_dec_{L}.safetensors``: ``W_dec_{L}`` [d_sae, n_layers - L, d_out], the rows of
          :meth:`decoder_rows` (target layers ``L..n_layers-1``);
        * ``config.yaml``: ``model_kind: cross_layer_transcoder``, the model's name and the hooks
          without their ``blocks.{L}.`` prefix (``ln2.hook_normalized``, ``hook_mlp_out``).

        Returns the paths written. Float32, whatever the CLT's dtype."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for layer in range(self.cfg.n_layers):
            enc = {f"W_enc_{layer}": self.W_enc[layer].T, f"b_enc_{layer}": self.b_enc[layer],
                   f"b_dec_{layer}": self.b_dec[layer], f"threshold_{layer}": self.threshold[layer]}
            dec = {f"W_dec_{layer}": self.decoder_rows(layer)}
            for name, tensors in ((f"W_enc_{layer}", enc), (f"W_dec_{layer}", dec)):
                path = folder / f"{name}.safetensors"
                save_file({k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}, path)
                written.append(path)
        config = {"model_kind": "cross_layer_transcoder",
                  "model_name": model_name or self.cfg.metadata.get("model_name", "unknown"),
                  "feature_input_hook": _hook_suffix(self.cfg.hook_in),
                  "feature_output_hook": _hook_suffix(self.cfg.hook_out)}
        # JSON strings are valid YAML scalars: one "key: value" line each needs no YAML writer.
        path = folder / "config.yaml"
        path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items()))
        return written + [path]


def _hook_suffix(template: str) -> str:
    """``blocks.{layer}.ln2.hook_normalized`` -> ``ln2.hook_normalized`` (circuit-tracer adds
    the ``blocks.{L}.`` itself)."""
    prefix = "blocks.{layer}."
    if not template.startswith(prefix):
        raise ValueError(f"circuit-tracer needs per-layer hooks 'blocks.{{layer}}.<name>', got {template!r}")
    return template[len(prefix):]


# ---------------------------------------------------------------------------------------
# Splicing into a model.


@dataclass
class Splice:
    """What the last forward pass under :func:`spliced` computed, keyed by layer: each layer's
    latents ``[batch, pos, d_sae]``, and for each replaced layer its reconstruction and (with
    the error term) its error node ``MLP(x) - reconstruction`` ``[batch, pos, d_out]``."""

    latents: dict[int, Tensor] = field(default_factory=dict)
    reconstructions: dict[int, Tensor] = field(default_factory=dict)
    errors: dict[int, Tensor] = field(default_factory=dict)


@contextmanager
def spliced(model: Any, clt: CrossLayerTranscoder, use_error_term: bool = False,
            layers: Sequence[int] | None = None) -> Iterator[Splice]:
    """For the duration of a ``with`` block, replace the MLP output of each layer in
    ``layers`` (all by default) by the CLT's reconstruction. Hooks are global state: they are
    removed on leaving the block, even after an error.

    Every layer up to the last replaced one is encoded (a replaced layer ``t`` needs the
    latents of every layer ``s <= t``), each from the residual stream the model actually
    computes, so a layer encodes what earlier *replaced* layers wrote. With
    ``use_error_term`` the output becomes ``reconstruction + error``, the error
    ``MLP(x) - reconstruction`` computed without gradient (as SAELens's error term): the
    forward pass is the model's, and gradients reach the latents through the decoders.

    >>> with spliced(model, clt) as splice:           # doctest: +SKIP
    ...     loss = model(tokens, return_type="loss")
    >>> splice.latents[0].shape                      # doctest: +SKIP
    """
    replaced = sorted(range(clt.cfg.n_layers) if layers is None else set(layers))
    if not replaced:
        raise ValueError("spliced() needs at least one layer to replace")
    for layer in replaced:
        clt._check_layer(layer)
    if clt.cfg.n_layers > model.cfg.n_layers:
        raise ValueError(f"the CLT covers {clt.cfg.n_layers} layers, the model has {model.cfg.n_layers}")
    splice = Splice()

    def read(layer: int) -> Any:
        def hook(x: Tensor, hook: Any) -> None:
            splice.latents[layer] = clt.encode(layer, x)
        return hook

    def write(layer: int) -> Any:
        def hook(out: Tensor, hook: Any) -> Tensor:
            recon = clt.decode_layer(layer, splice.latents)
            splice.reconstructions[layer] = recon
            if not use_error_term:
                return recon
            with torch.no_grad():
                splice.errors[layer] = out - recon
            return recon + splice.errors[layer]
        return hook

    hooks = [(clt.cfg.hook_in_at(layer), read(layer)) for layer in range(replaced[-1] + 1)]
    hooks += [(clt.cfg.hook_out_at(layer), write(layer)) for layer in replaced]
    _refuse_attached_saes(model, [name for name, _ in hooks])
    with model.hooks(fwd_hooks=hooks):
        yield splice


def _refuse_attached_saes(model: Any, names: Sequence[str]) -> None:
    """A SAELens dictionary attached at a hook replaces its hook point: say so plainly."""
    taken = sorted(set(names) & set(getattr(model, "acts_to_saes", {})))
    if taken:
        raise ValueError(f"SAELens dictionaries are attached at {taken}, where the CLT reads or writes: "
                         "call model.reset_saes() (or leave their `with model.saes(...)` block) first")


@torch.no_grad()
def intervene(model: Any, clt: CrossLayerTranscoder, tokens: Int[Tensor, "batch pos"],
              edits: Sequence[tuple[int, int, int, float]],
              frozen_hooks: Sequence[tuple[str, Any]] = ()) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits with CLT latents set to new values: for each ``(layer, pos, latent, value)``
    every MLP output ``t >= layer`` at ``pos`` gains ``(value - f) W_dec[layer, t][latent]``,
    ``f`` the latent's activation *on the current input*. The MLPs themselves stay (their
    error terms are kept), so every later layer responds; ``frozen_hooks`` (for example a
    replacement model's freezing hooks) are added for the pass."""
    wanted: dict[int, list[tuple[int, int, float]]] = {}
    for layer, pos, latent, value in edits:
        clt._check_layer(layer)
        wanted.setdefault(layer, []).append((pos, int(latent), float(value)))
    deltas: dict[int, Tensor] = {}  # per source layer: new - old latents, [batch, pos, d_sae]

    def read(layer: int) -> Any:
        def hook(x: Tensor, hook: Any) -> None:
            acts = clt.encode(layer, x)
            new = acts.clone()
            for pos, latent, value in wanted[layer]:
                new[:, pos, latent] = value
            deltas[layer] = new - acts
        return hook

    def write(target: int) -> Any:
        def hook(out: Tensor, hook: Any) -> Tensor:
            return out + sum(deltas[s] @ clt.decoder(s, target) for s in clt.cfg.sources(target) if s in deltas)
        return hook

    hooks = [(clt.cfg.hook_in_at(L), read(L)) for L in wanted]
    hooks += [(clt.cfg.hook_out_at(t), write(t)) for t in range(min(wanted, default=0), clt.cfg.n_layers)]
    _refuse_attached_saes(model, [name for name, _ in hooks])
    hooks = list(frozen_hooks) + hooks
    with model.hooks(fwd_hooks=hooks):
        return model(tokens)


@torch.no_grad()
def read_clt(model: Any, clt: CrossLayerTranscoder, tokens: Int[Tensor, "batch pos"]) -> tuple[
        dict[int, Float[Tensor, "batch pos d_sae"]], dict[int, Float[Tensor, "batch pos d_out"]], dict[int, Float[Tensor, "batch pos d_out"]]]:
    """On the *clean* model (nothing replaced): each layer's latents, the CLT's
    reconstruction of each MLP output, and the true MLP outputs, keyed by layer."""
    names = [clt.cfg.hook_in_at(L) for L in range(clt.cfg.n_layers)] + [clt.cfg.hook_out_at(L) for L in range(clt.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names_filter=names, stop_at_layer=clt.cfg.n_layers)
    latents = {L: clt.encode(L, cache[clt.cfg.hook_in_at(L)]) for L in range(clt.cfg.n_layers)}
    return latents, clt.decode(latents), {L: cache[clt.cfg.hook_out_at(L)] for L in range(clt.cfg.n_layers)}


# ---------------------------------------------------------------------------------------
# Training.


@dataclass
class CLTBatch:
    """One batch of training data, stacked over layers: the MLP inputs each encoder reads,
    the MLP outputs each target layer must reconstruct, and how much each token's error
    counts at each target layer (ones for a plain mean)."""

    inputs: Float[Tensor, "layer token d_in"]
    targets: Float[Tensor, "layer token d_out"]
    weights: Float[Tensor, "layer token"]


def clt_batches(model: Any, token_batches: Iterable[Int[Tensor, "batch pos"]], n_layers: int,
                hook_in: str = HOOK_IN, hook_out: str = HOOK_OUT, weight_by_residual: bool = True,
                drop_bos: bool = False) -> Iterator[CLTBatch]:
    """Activations of ``model`` for a CLT over layers ``0..n_layers-1``, one row per token.

    With ``weight_by_residual``, token ``n``'s error at target layer ``t`` is weighted by
    ``<||r_t||^2> / ||r_{t,n}||^2`` (``r_t`` = ``blocks.{t}.hook_resid_post``, ``<.>`` the batch
    mean), as the organism's PLTs were trained: the final LayerNorm divides the residual
    stream by its norm, so what reaches the logits is each error relative to that norm.
    ``drop_bos`` leaves position 0 out."""
    ins = [hook_in.format(layer=L) for L in range(n_layers)]
    outs = [hook_out.format(layer=L) for L in range(n_layers)]
    resid = [f"blocks.{L}.hook_resid_post" for L in range(n_layers)]
    start = 1 if drop_bos else 0
    for tokens in token_batches:
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=ins + outs + resid, stop_at_layer=n_layers)

        def rows(names: list[str]) -> Tensor:
            return einops.rearrange(torch.stack([cache[n][:, start:] for n in names]), "l b p d -> l (b p) d")

        norm2 = rows(resid).pow(2).sum(-1)  # [layer, token]
        weights = norm2.mean(1, keepdim=True) / norm2 if weight_by_residual else torch.ones_like(norm2)
        yield CLTBatch(rows(ins), rows(outs), weights)


def batch_topk(values: Float[Tensor, "token d_sae"], k: float) -> Bool[Tensor, "token d_sae"]:
    """BatchTopK's selection: the ``round(k * n_tokens)`` largest entries of the whole batch
    (``values`` >= 0; zeros are never selected), so that the mean number per token is ``k``."""
    n_keep = min(round(k * values.shape[0]), values.numel())
    flat = values.flatten()
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.topk(n_keep, sorted=False).indices] = True
    return keep.view_as(values) & (values > 0)


def reconstruction_loss(recon: Float[Tensor, "layer token d_out"], targets: Float[Tensor, "layer token d_out"],
                        weights: Float[Tensor, "layer token"]) -> Tensor:
    """``sum_t mean_n w_{t,n} ||y_hat_{t,n} - y_{t,n}||^2``: squared errors summed over the
    output dimensions and over target layers, averaged over tokens (one term per target layer,
    each as a PLT of that layer would count it)."""
    return ((recon - targets).pow(2).sum(-1) * weights).mean(1).sum()


def sparsity_loss(clt: CrossLayerTranscoder, latents: Sequence[Float[Tensor, "token d_sae"]]) -> Tensor:
    """``sum_s mean_n sum_i f_{s,n,i} ||d_{s,i}||``: each latent's activation weighted by the
    norm of *all* its decoder rows concatenated (:meth:`CrossLayerTranscoder.decoder_norms`),
    so a latent pays once for everything it writes, whatever the number of layers. The
    weighted L1 of a PLT is the special case of one decoder per latent."""
    return torch.stack([(f * clt.decoder_norms(s)).sum(-1).mean() for s, f in enumerate(latents)]).sum()


@dataclass
class CLTTrainingConfig:
    """How :func:`train_clt` trains (SAELens-style names where SAELens has one).

    k: mean active latents per token of each layer (BatchTopK; one number per layer);
    steps, lr: Adam steps and learning rate, constant, then decaying linearly to zero over
    the last ``1 - decay_from`` of training; l1_coefficient: weight of :func:`sparsity_loss`
    (0: BatchTopK alone controls sparsity); aux_coefficient, aux_k, dead_after_tokens: the
    AuxK loss (Gao et al. 2024) that revives latents silent for ``dead_after_tokens`` tokens
    by asking the ``aux_k`` largest of them to reconstruct what the live latents miss;
    decoder_init_norm: norm of each initial same-layer decoder row (cross-layer decoders start
    at zero); calibration_batches: batches for the inference thresholds; seed: the
    initial weights."""

    k: tuple[float, ...]
    steps: int = 2000
    lr: float = 2e-3
    decay_from: float = 0.8
    l1_coefficient: float = 0.0
    aux_coefficient: float = 1 / 32
    aux_k: int = 32
    dead_after_tokens: int = 100_000
    decoder_init_norm: float = 0.1
    calibration_batches: int = 16
    seed: int = 0


@dataclass
class CLTTrainingRun:
    """What :func:`train_clt` returns: the inference CLT, each loss term and each layer's L0
    per step, wall and CPU seconds (the process's CPU time: every thread counted)."""

    clt: CrossLayerTranscoder
    history: dict[str, list[float]]
    seconds: float
    cpu_seconds: float


class _Scaled:
    """Training-time state: inputs and each target layer scaled by a constant so that their
    mean norm is sqrt(d) (one learning rate fits every layer), and the dead-latent counters."""

    def __init__(self, clt: CrossLayerTranscoder, first: CLTBatch, cfg: CLTTrainingConfig):
        d_in, d_out = clt.cfg.d_in, clt.cfg.d_out
        self.scale_in = math.sqrt(d_in) / first.inputs.norm(dim=-1).mean(1)  # [layer]
        self.scale_out = math.sqrt(d_out) / first.targets.norm(dim=-1).mean(1)  # [layer]
        self.silent_tokens = torch.zeros(clt.cfg.n_layers, clt.cfg.d_sae)
        self.cfg = cfg

    def scale(self, batch: CLTBatch) -> tuple[Tensor, Tensor]:
        return batch.inputs * self.scale_in[:, None, None], batch.targets * self.scale_out[:, None, None]


def _init_weights(clt: CrossLayerTranscoder, targets: Float[Tensor, "layer token d_out"], cfg: CLTTrainingConfig) -> None:
    """Same-layer decoder rows in random directions of norm ``decoder_init_norm``, each
    encoder its decoder's transpose when the widths agree; cross-layer decoders and encoder
    biases zero; ``b_dec[t]`` the mean (scaled) target of layer ``t``."""
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        for layer in range(clt.cfg.n_layers):
            rows = torch.randn(clt.cfg.d_sae, clt.cfg.d_out, generator=g)
            rows = cfg.decoder_init_norm * rows / rows.norm(dim=-1, keepdim=True)
            clt.decoder(layer, layer).copy_(rows)
            enc = rows.T if clt.cfg.d_in == clt.cfg.d_out else torch.randn(clt.cfg.d_in, clt.cfg.d_sae, generator=g)
            clt.W_enc[layer].copy_(cfg.decoder_init_norm * enc / enc.norm(dim=0, keepdim=True))
        clt.b_dec.copy_(targets.mean(1))


def training_forward(clt: CrossLayerTranscoder, x: Float[Tensor, "layer token d_in"], k: Sequence[float]) -> tuple[
        list[Float[Tensor, "token d_sae"]], Float[Tensor, "layer token d_out"], list[Float[Tensor, "token d_sae"]]]:
    """BatchTopK latents of every layer (selected by ``ReLU(pre) * ||d||``), the
    reconstruction of every target layer, and the ReLU'd pre-activations (for AuxK)."""
    relu = [clt.encode_pre(s, x[s]).relu() for s in range(clt.cfg.n_layers)]
    latents = [r * batch_topk(r.detach() * clt.decoder_norms(s).detach(), k[s]) for s, r in enumerate(relu)]
    recon = torch.stack([clt.decode_layer(t, dict(enumerate(latents))) for t in range(clt.cfg.n_layers)])
    return latents, recon, relu


def _aux_loss(clt: CrossLayerTranscoder, relu: list[Tensor], residual: Tensor, weights: Tensor,
              dead: Bool[Tensor, "layer d_sae"], aux_k: int) -> Tensor:
    """AuxK: the ``aux_k`` largest dead latents per token and layer reconstruct the live
    latents' (detached) error ``residual`` at every target layer, without decoder bias."""
    if not dead.any():
        return residual.new_zeros(())
    aux = {}
    for s, r in enumerate(relu):
        scores = r * dead[s] * clt.decoder_norms(s).detach()
        n = min(aux_k, int(dead[s].sum()))
        top = torch.zeros_like(r, dtype=torch.bool).scatter_(-1, scores.topk(n, dim=-1).indices, True) if n else torch.zeros_like(r, dtype=torch.bool)
        aux[s] = r * (top & (scores > 0))
    guess = torch.stack([torch.stack([aux[s] @ clt.decoder(s, t) for s in clt.cfg.sources(t)]).sum(0) for t in range(clt.cfg.n_layers)])
    return reconstruction_loss(guess, residual, weights)


class _Trainee:
    """One CLT being trained: its weights in scaled units, scales, optimiser and history."""

    def __init__(self, clt_cfg: CLTConfig, cfg: CLTTrainingConfig, first: CLTBatch):
        if len(cfg.k) != clt_cfg.n_layers:
            raise ValueError(f"CLTTrainingConfig.k needs one value per layer ({clt_cfg.n_layers}), got {cfg.k}")
        self.clt, self.cfg = CrossLayerTranscoder(clt_cfg), cfg
        self.state = _Scaled(self.clt, first, cfg)
        _init_weights(self.clt, self.state.scale(first)[1], cfg)
        self.optimiser = torch.optim.Adam([p for p in self.clt.parameters() if p.requires_grad], lr=cfg.lr)
        self.history: dict[str, list[float]] = {}

    def step(self, step: int, batch: CLTBatch) -> None:
        """One Adam step on ``batch``: the loss of :func:`train_clt`."""
        cfg, clt, state = self.cfg, self.clt, self.state
        x, y = state.scale(batch)
        latents, recon, relu = training_forward(clt, x, cfg.k)
        terms = {"mse": reconstruction_loss(recon, y, batch.weights)}
        if cfg.l1_coefficient:
            terms["sparsity"] = cfg.l1_coefficient * sparsity_loss(clt, latents)
        dead = state.silent_tokens > cfg.dead_after_tokens
        terms["aux"] = cfg.aux_coefficient * _aux_loss(clt, relu, (y - recon).detach(), batch.weights, dead, cfg.aux_k)
        decay_steps = max(1, cfg.steps - int(cfg.decay_from * cfg.steps))
        for group in self.optimiser.param_groups:
            group["lr"] = cfg.lr * min(1.0, (cfg.steps - step) / decay_steps)
        torch.stack(list(terms.values())).sum().backward()
        self.optimiser.step()
        self.optimiser.zero_grad()
        with torch.no_grad():
            fired = torch.stack([(f > 0).any(0) for f in latents])
            state.silent_tokens = torch.where(fired, 0.0, state.silent_tokens + x.shape[1])
        record = {name: float(value.detach()) for name, value in terms.items()}
        record |= {f"l0.{s}": float((f > 0).float().sum(-1).mean()) for s, f in enumerate(latents)}
        record["dead"] = float(dead.float().mean())
        for name, value in record.items():
            self.history.setdefault(name, []).append(value)


def train_clts(runs: Mapping[str, tuple[CLTConfig, CLTTrainingConfig]], batches: Iterator[CLTBatch],
               progress: bool = True) -> dict[str, CLTTrainingRun]:
    """Train several CLTs on one stream of ``batches`` (each sees every batch: the model
    runs once per step for all of them). Every run needs the same number of steps and of
    calibration batches. Per CLT, see :func:`train_clt`; the times are those of the whole
    loop, shared by every CLT in it."""
    from tqdm.auto import tqdm

    cfgs = [cfg for _, cfg in runs.values()]
    if len({(c.steps, c.calibration_batches) for c in cfgs}) != 1:
        raise ValueError("CLTs trained on one stream need the same steps and calibration_batches")
    start, cpu_start = time.perf_counter(), time.process_time()
    first = next(batches)
    trainees = {name: _Trainee(clt_cfg, cfg, first) for name, (clt_cfg, cfg) in runs.items()}
    for step in (bar := tqdm(range(cfgs[0].steps), desc="CLT", disable=not progress)):
        batch = next(batches)
        for trainee in trainees.values():
            trainee.step(step, batch)
        bar.set_postfix(mse=" ".join(f"{t.history['mse'][-1]:.3g}" for t in trainees.values()))
    calibration = [next(batches).inputs for _ in range(cfgs[0].calibration_batches)]
    out = {}
    for name, trainee in trainees.items():
        clt = _export(trainee.clt, trainee.state)
        calibrate_thresholds(clt, calibration, trainee.cfg.k)
        out[name] = clt.eval()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {name: CLTTrainingRun(clt, trainees[name].history, seconds, cpu) for name, clt in out.items()}


def train_clt(clt_cfg: CLTConfig, cfg: CLTTrainingConfig, batches: Iterator[CLTBatch], progress: bool = True) -> CLTTrainingRun:
    """Train a CLT on ``batches``: the first sets the input and output scales and ``b_dec``;
    then one Adam step per batch on, in scaled units,

        L = reconstruction_loss + l1_coefficient * sparsity_loss + aux_coefficient * AuxK

    with BatchTopK latents (:func:`training_forward`); then ``calibration_batches`` more set
    the inference thresholds. Returns the inference CLT, in the activations' own units."""
    return train_clts({"clt": (clt_cfg, cfg)}, batches, progress)["clt"]


@torch.no_grad()
def _export(clt: CrossLayerTranscoder, state: _Scaled) -> CrossLayerTranscoder:
    """The trained CLT in the activations' units, each latent rescaled so that its
    activation is what BatchTopK ranked it by (``ReLU(pre) * ||d||``) and its decoder rows
    have norm 1 together in the training's units (before the division by ``s_out``):

        W_enc[s][:, i] <- s_in[s] ||d_i|| W_enc[s][:, i],   b_enc[s][i] <- ||d_i|| b_enc[s][i],
        W_dec[s, t][i] <- W_dec[s, t][i] / (||d_i|| s_out[t]),   b_dec[t] <- b_dec[t] / s_out[t].

    The reconstruction is unchanged (each latent's activation is multiplied by what its
    decoder rows are divided by); thresholds are zero until :func:`calibrate_thresholds`."""
    out = CrossLayerTranscoder(clt.cfg)
    for s in range(clt.cfg.n_layers):
        norm = clt.decoder_norms(s).clamp(min=torch.finfo(clt.dtype).tiny)
        out.W_enc[s].copy_(clt.W_enc[s] * state.scale_in[s] * norm)
        out.b_enc[s].copy_(clt.b_enc[s] * norm)
        for t in range(s, clt.cfg.n_layers):
            if _pair(s, t) in clt.W_dec:
                out.decoder(s, t).copy_(clt.decoder(s, t) / norm[:, None] / state.scale_out[t])
    out.b_dec.copy_(clt.b_dec / state.scale_out[:, None])
    return out


@torch.no_grad()
def calibrate_thresholds(clt: CrossLayerTranscoder, inputs: Sequence[Float[Tensor, "layer token d_in"]],
                         k: Sequence[float]) -> None:
    """Set each layer's threshold (one number for all its latents) to BatchTopK's cut on
    all of ``inputs`` at once: the ``round(k_s * n_tokens)``-th largest ReLU'd
    pre-activation, so that the JumpReLU keeps what BatchTopK would keep on that big batch
    (mean L0 ``k_s``). Thresholds are at least 0."""
    x = torch.cat(list(inputs), dim=1)
    for s in range(clt.cfg.n_layers):
        values = clt.encode_pre(s, x[s]).relu().flatten()
        n_keep = min(round(k[s] * x.shape[1]), values.numel())
        clt.threshold[s] = values.topk(n_keep + 1).values[-1].clamp(min=0.0)
