"""Backends: one call returns everything a chapter runs on.

>>> from utils.backends import load_backend
>>> bk = load_backend("toy")          # doctest: +SKIP
>>> bk.model, bk.saes, bk.attn_saes, bk.transcoders, bk.world, bk.explanations  # doctest: +SKIP

``toy`` is the offline model organism (default); ``hunt`` the capstone's second organism
(chapter 08); ``gpt2`` is GPT-2 small with public
dictionaries (needs the Hugging Face hub); ``gpt2-shaped`` has GPT-2 small's shapes with
seeded random weights, for memory and speed measurements only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from sae_lens import SAE, HookedSAETransformer, Transcoder

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


_LOADERS: dict[str, Callable[..., Backend]] = {}
_CACHE: dict[tuple[str, str], Backend] = {}


def register(name: str) -> Callable[[Callable[..., Backend]], Callable[..., Backend]]:
    """Register a backend loader under ``name``; refuses duplicates."""

    def decorate(loader: Callable[..., Backend]) -> Callable[..., Backend]:
        if name in _LOADERS:
            raise ValueError(f"backend {name!r} is registered twice")
        _LOADERS[name] = loader
        return loader

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
    from utils.backends import gpt2, hunt, toy  # noqa: F401
