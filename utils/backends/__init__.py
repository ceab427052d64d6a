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

import torch

from utils.backends.base import _LOADERS, Backend, register
from utils.backends.unembed import Unembed, unembed_without_copy

__all__ = ["Backend", "Unembed", "load_backend", "register", "unembed_without_copy"]
_CACHE: dict[tuple[str, str, torch.dtype], Backend] = {}


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
