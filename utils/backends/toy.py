"""The ``toy`` backend: the offline model organism of ``utils.toy`` (the default)."""
from __future__ import annotations

from utils.backends.base import Backend, register


@register("toy")
def load_toy(device: str = "cpu") -> Backend:
    """The committed toy model, its dictionaries, generator and explanation table."""
    from utils.toy import load

    return load(device=device)
