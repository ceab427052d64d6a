"""Where memory goes: list the largest tensors and modules in a namespace, and free a model.

Introduced in chapter 00 (Toolkit) and used again whenever a chapter loads a second model::

    from utils.memory import memory_table, free
    print(memory_table(globals()))   # the largest objects, by device
    free(globals(), "model")         # drop a model and everything that points at it
"""
from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn


@dataclass(frozen=True)
class Row:
    name: str
    kind: str
    device: str
    n_bytes: int
    shape: str


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _module_bytes(m: nn.Module) -> dict[str, int]:
    """Bytes of a module's parameters and buffers, per device (shared tensors counted once)."""
    seen: set[int] = set()
    per_device: dict[str, int] = {}
    for t in (*m.parameters(), *m.buffers()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        per_device[str(t.device)] = per_device.get(str(t.device), 0) + _tensor_bytes(t)
    return per_device


def _rows(name: str, value: Any) -> Iterable[Row]:
    if isinstance(value, torch.Tensor):
        yield Row(name, "tensor", str(value.device), _tensor_bytes(value), "×".join(map(str, value.shape)))
    elif isinstance(value, nn.Module):
        for device, n in _module_bytes(value).items():
            yield Row(name, type(value).__name__, device, n, f"{sum(1 for _ in value.parameters())} params")
    elif isinstance(value, dict) and value and len(value) <= 1000:
        for key, item in value.items():
            if isinstance(item, (torch.Tensor, nn.Module)):
                yield from _rows(f"{name}[{key!r}]", item)


def human(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.1f} {unit}" if unit != "B" else f"{int(n_bytes)} B"
        n_bytes /= 1024
    raise AssertionError("unreachable")


def memory_rows(namespace: dict[str, Any], top: int = 10) -> list[Row]:
    """The ``top`` largest tensors / modules (and dicts of them) in ``namespace``."""
    rows = [r for name, v in namespace.items() if not name.startswith("_") for r in _rows(name, v)]
    return sorted(rows, key=lambda r: -r.n_bytes)[:top]


def memory_table(namespace: dict[str, Any], top: int = 10) -> str:
    """A plain-text table of :func:`memory_rows`, with totals per device."""
    rows = memory_rows(namespace, top)
    width = max([len(r.name) for r in rows] + [4])
    lines = [f"{'name':<{width}}  {'kind':<22} {'device':<7} {'size':>10}  shape", "-" * (width + 60)]
    lines += [f"{r.name:<{width}}  {r.kind:<22} {r.device:<7} {human(r.n_bytes):>10}  {r.shape}" for r in rows]
    totals: dict[str, int] = {}
    for r in rows:
        totals[r.device] = totals.get(r.device, 0) + r.n_bytes
    lines.append("total shown: " + ", ".join(f"{d} {human(n)}" for d, n in totals.items()))
    return "\n".join(lines)


def free(namespace: dict[str, Any], *names: str) -> None:
    """Delete ``names`` from ``namespace``, collect garbage and empty the CUDA cache.

    A model stays alive while anything refers to it (a cache, a hook closure, an output that
    still holds a graph), so delete those names too.
    """
    for name in names:
        if name not in namespace:
            raise KeyError(f"{name!r} is not defined here; expected one of the names in memory_table")
        value = namespace.pop(name)
        reset_hooks = getattr(value, "reset_hooks", None)  # a HookedTransformer's hooks are global state
        if isinstance(value, nn.Module) and callable(reset_hooks):
            reset_hooks(including_permanent=True)
        del value
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
