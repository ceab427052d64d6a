"""What every backend returns (:class:`Backend`) and the registry of backend loaders.

A loader is registered under a name with :func:`register` (duplicates refused); the
``utils.backends`` package loads one by name (``load_backend``). Kept apart from the package
so that a backend's module (``utils.toy``, ``utils.backends.gpt2``) can build a ``Backend``
without importing the package that imports it.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from sae_lens import SAE, HookedSAETransformer, Transcoder

from utils.backends.unembed import unembed_without_copy
from utils.nodes import KINDS, DictionaryKind, forward_rank, layer_of


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
    clt: a cross-layer transcoder over every MLP (``utils.clt.CrossLayerTranscoder``; toy
        only, else None). It is not among ``dictionaries``: it has no single layer.
    """

    name: str
    model: HookedSAETransformer
    saes: dict[str, SAE] = field(default_factory=dict)
    attn_saes: dict[str, SAE] = field(default_factory=dict)
    transcoders: dict[str, Transcoder] = field(default_factory=dict)
    world: Any = None
    explanations: Any = None
    clt: Any = None

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
        return dict(sorted(found.items(), key=lambda item: (item[0][1], forward_rank(item[0][0]))))

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
        for sae in [*self.dictionaries.values(), *([self.clt] if self.clt is not None else [])]:
            sae.to(device or sae.device)
            if dtype is not None:
                sae.to(dtype)
        return self


_LOADERS: dict[str, Callable[..., Backend]] = {}


def register(name: str) -> Callable[[Callable[..., Backend]], Callable[..., Backend]]:
    """Register a backend loader under ``name``; refuses duplicates. The registered loader
    (also what the decorated name holds) gives its model the copy-free
    :class:`utils.backends.unembed.Unembed`."""

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
