"""Backends: one call returns everything a chapter runs on.

>>> from utils.backends import load_backend
>>> bk = load_backend("toy")          # doctest: +SKIP
>>> bk.model, bk.saes, bk.attn_saes, bk.transcoders, bk.world, bk.explanations  # doctest: +SKIP

``toy`` is the offline model organism (default); ``gpt2`` is GPT-2 small with public
dictionaries (needs the Hugging Face hub); ``gpt2-shaped`` has GPT-2 small's shapes with
seeded random weights, for memory and speed measurements only.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
import transformer_lens.components
from jaxtyping import Float
from sae_lens import SAE, HookedSAETransformer, Transcoder
from torch import Tensor

from utils.nodes import KINDS, DictionaryKind, layer_of


@dataclass
class Backend:
    """What every chapter receives. Every dictionary is keyed by the hook it reads
    (``sae.cfg.metadata.hook_name``); ``dictionary(kind, layer)`` finds one by kind and layer.

    saes: residual-stream SAEs (``blocks.{L}.hook_resid_post`` on the toy model).
    attn_saes: attention-output SAEs (``blocks.{L}.attn.hook_z``).
    transcoders: MLP transcoders, read ``blocks.{L}.ln2.hook_normalized`` and write
        ``blocks.{L}.hook_mlp_out`` (``sae.cfg.metadata.hook_name_out``).
    world: the synthetic data generator with ground-truth labels (toy only, else None).
    explanations: the offline explanation table for latents (toy only, else None).
    """

    name: str
    model: HookedSAETransformer
    saes: dict[str, SAE] = field(default_factory=dict)
    attn_saes: dict[str, SAE] = field(default_factory=dict)
    transcoders: dict[str, Transcoder] = field(default_factory=dict)
    world: Any = None
    explanations: Any = None

    def __post_init__(self) -> None:
        for kind, group in zip(KINDS, (self.saes, self.attn_saes, self.transcoders)):
            for hook, sae in group.items():
                if hook != sae.cfg.metadata.hook_name:
                    raise ValueError(f"{kind} keyed {hook!r} reads {sae.cfg.metadata.hook_name!r}: "
                                     "key every dictionary by the hook it reads")

    @property
    def dictionaries(self) -> dict[tuple[DictionaryKind, int], SAE]:
        """Every dictionary, keyed by (kind, layer) in forward order (``utils.nodes``)."""
        found = {(kind, layer_of(hook)): sae for kind, group in zip(KINDS, (self.saes, self.attn_saes, self.transcoders))
                 for hook, sae in group.items()}
        return dict(sorted(found.items(), key=lambda item: (item[0][1], ("attn_sae", "transcoder", "resid_sae").index(item[0][0]))))

    def dictionary(self, kind: DictionaryKind, layer: int) -> SAE:
        """The dictionary of ``kind`` (``resid_sae``, ``attn_sae``, ``transcoder``) at ``layer``."""
        if kind not in KINDS:
            raise ValueError(f"unknown dictionary kind {kind!r}: expected one of {list(KINDS)}")
        found = self.dictionaries.get((kind, layer))
        if found is None:
            have = sorted(layer for k, layer in self.dictionaries if k == kind)
            raise KeyError(f"the {self.name} backend has no {kind} at layer {layer} (it has layers {have})")
        return found

    def kind_of(self, sae: SAE) -> DictionaryKind:
        """The kind of one of this backend's dictionaries."""
        for (kind, _), candidate in self.dictionaries.items():
            if candidate is sae:
                return kind
        raise ValueError("this dictionary is not one of the backend's")

    def to(self, device: str | None = None, dtype: torch.dtype | None = None) -> "Backend":
        """Move (in place) the model and every dictionary to ``device`` / ``dtype``."""
        self.model.to(device or self.model.cfg.device, print_details=False)
        if dtype is not None:
            self.model.to(dtype, print_details=False)
        for sae in self.dictionaries.values():
            sae.to(device or sae.device)
            if dtype is not None:
                sae.to(dtype)
        return self


class Unembed(transformer_lens.components.Unembed):
    """TransformerLens 3.9's ``Unembed``, without copying the unembedding on every call.

    ``Unembed.forward`` in TransformerLens 3.9 runs ``F.linear(x, W_U.T.contiguous(), b_U)``:
    a fresh ``[d_vocab, d_model]`` copy of the unembedding per call (on GPT-2's shapes about
    150 of 160 ms of a forward pass on one CPU thread). This one keeps that contiguous copy
    and makes it again only when ``W_U`` changes (another tensor, device or dtype, or an
    in-place edit), so the product, and the logits, are bitwise TransformerLens's
    (``tests/test_unembed.py``). When autograd may need ``W_U``'s own gradient (grad mode on
    and ``W_U.requires_grad``) it runs TransformerLens's code unchanged, copy included.
    The kept copy costs ``W_U``'s memory once more (150 MB on GPT-2)."""

    def forward(self, residual: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab_out"]:
        if torch.is_grad_enabled() and self.W_U.requires_grad:
            return super().forward(residual)
        residual = self.hook_in(residual)
        return self.hook_out(F.linear(residual, self._transposed(), self.b_U))

    def _transposed(self) -> Float[Tensor, "d_vocab_out d_model"]:
        """``W_U.T.contiguous()``, made once per version of ``W_U``."""
        key = (self.W_U.data_ptr(), self.W_U._version, self.W_U.dtype, self.W_U.device)
        if getattr(self, "_transposed_key", None) != key:
            with torch.inference_mode(False), torch.no_grad():
                self._transposed_W_U = self.W_U.T.contiguous()
            self._transposed_key = key
        return self._transposed_W_U


def unembed_without_copy(model: HookedSAETransformer) -> HookedSAETransformer:
    """Give ``model`` the copy-free :class:`Unembed` (its class swapped in place: weights,
    hooks and ``state_dict`` unchanged); every backend's loader does it."""
    if type(model.unembed) is transformer_lens.components.Unembed:
        model.unembed.__class__ = Unembed
    return model


_LOADERS: dict[str, Callable[..., Backend]] = {}
_CACHE: dict[tuple[str, str], Backend] = {}


def register(name: str) -> Callable[[Callable[..., Backend]], Callable[..., Backend]]:
    """Register a backend loader under ``name``; refuses duplicates. The registered loader
    (also what the decorated name holds) gives its model the copy-free :class:`Unembed`."""

    def decorate(loader: Callable[..., Backend]) -> Callable[..., Backend]:
        if name in _LOADERS:
            raise ValueError(f"backend {name!r} is registered twice")

        @functools.wraps(loader)
        def load(*args: Any, **kwargs: Any) -> Backend:
            bk = loader(*args, **kwargs)
            unembed_without_copy(bk.model)
            return bk

        _LOADERS[name] = load
        return load

    return decorate


def load_backend(name: str = "toy", device: str = "cpu", fresh: bool = False,
                 dtype: torch.dtype = torch.float32) -> Backend:
    """Load (once per process) the backend called ``name``; ``fresh`` loads a new copy
    that is not cached (the checks use their own)."""
    _import_loaders()
    if name not in _LOADERS:
        raise ValueError(f"unknown backend {name!r}: expected one of {sorted(_LOADERS)}")
    key = (name, device, dtype)
    if fresh or key not in _CACHE:
        bk = _LOADERS[name](device=device)
        if dtype != torch.float32:
            bk.to(dtype=dtype)
        if fresh:
            return bk
        _CACHE[key] = bk
    return _CACHE[key]


def _import_loaders() -> None:
    # Importing the modules runs their @register decorators.
    from utils.backends import gpt2, toy  # noqa: F401
