"""Backends: one call returns everything a chapter runs on.

>>> from utils.backends import load_backend
>>> bk = load_backend("toy")          # doctest: +SKIP
>>> bk.model, bk.saes, bk.attn_saes, bk.transcoders, bk.world, bk.explanations  # doctest: +SKIP

``toy`` is the offline model organism (default); ``gpt2`` is GPT-2 small with public
dictionaries (needs the Hugging Face hub); ``gpt2-shaped`` has GPT-2 small's shapes with
seeded random weights, for memory and speed measurements only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from sae_lens import SAE, HookedSAETransformer, Transcoder


@dataclass
class Backend:
    """What every chapter receives.

    saes: residual-stream SAEs keyed by hook name (``blocks.{L}.hook_resid_post``).
    attn_saes: attention-output SAEs keyed by hook name (``blocks.{L}.attn.hook_z``).
    transcoders: MLP transcoders keyed by layer (``blocks.{L}.ln2.hook_normalized`` ->
        ``blocks.{L}.hook_mlp_out``).
    world: the synthetic data generator with ground-truth labels (toy only, else None).
    explanations: the offline explanation table for latents (toy only, else None).
    """

    name: str
    model: HookedSAETransformer
    saes: dict[str, SAE] = field(default_factory=dict)
    attn_saes: dict[str, SAE] = field(default_factory=dict)
    transcoders: dict[int, Transcoder] = field(default_factory=dict)
    world: Any = None
    explanations: Any = None


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


def load_backend(name: str = "toy", device: str = "cpu", fresh: bool = False) -> Backend:
    """Load (once per process, unless ``fresh``) the backend called ``name``."""
    _import_loaders()
    if name not in _LOADERS:
        raise ValueError(f"unknown backend {name!r}: expected one of {sorted(_LOADERS)}")
    key = (name, device)
    if fresh or key not in _CACHE:
        _CACHE[key] = _LOADERS[name](device=device)
    return _CACHE[key]


def _import_loaders() -> None:
    # Importing the modules runs their @register decorators.
    from utils.backends import gpt2, toy  # noqa: F401
