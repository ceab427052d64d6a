"""Progress bars for slow loops (chapter 00 onwards): ``for batch in progress(batches, "desc")``.

A notebook shows a tqdm widget. Setting ``TQDM_DISABLE=1`` (the test suite and the build do)
turns bars off entirely, so executed notebooks hold no widget with a random id; plain
``tqdm.auto`` in a notebook ignores that variable, hence this wrapper.
"""
from __future__ import annotations

import os
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str = "", **kwargs: object) -> Iterable[T]:
    """``tqdm(iterable, desc)`` unless progress bars are disabled by ``TQDM_DISABLE``."""
    if os.environ.get("TQDM_DISABLE", "") not in ("", "0"):
        return iterable
    return tqdm(iterable, desc=desc, leave=False, **kwargs)
