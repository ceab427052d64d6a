"""The ``hunt`` backend: the capstone's second organism (``utils.hunt``), the same kind of
model and dictionaries as ``toy``, trained on a language whose extra tasks are the hunt."""
from __future__ import annotations

from utils.backends.base import Backend, register


@register("hunt")
def load_hunt(device: str = "cpu") -> Backend:
    """The committed hunt model, its dictionaries, world and explanation table."""
    from utils.hunt import load

    return load(device=device)
