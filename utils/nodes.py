"""One vocabulary for circuits: dictionary kinds, the hooks they read and write, and node ids
(chapters 02-05).

Every dictionary belongs to one of three kinds, named the same on every backend:

=============  ===================================  =========================================
kind           reads (``cfg.metadata.hook_name``)   writes
=============  ===================================  =========================================
``resid_sae``  ``blocks.{L}.hook_resid_post`` (toy) the same hook
               ``blocks.{L}.hook_resid_pre`` (GPT-2)
``attn_sae``   ``blocks.{L}.attn.hook_z``           the same hook
``transcoder`` ``blocks.{L}.ln2.hook_normalized``   ``blocks.{L}.hook_mlp_out``
=============  ===================================  =========================================

A dictionary is named by the hook it reads (``sae.cfg.metadata.hook_name``) and, when spliced,
sits at the hook it writes (:func:`output_hook`); :func:`dictionary_kind` and
:func:`dictionary_key` tell its kind and (kind, layer), :func:`transcoder_layer` the layer
whose MLP a transcoder replaces.

A *node* of a circuit is one latent (or the error term) of one dictionary at one position:
``Node(kind, layer, pos, index)`` with ``index`` a latent id or ``"error"``. Graphs of
chapter 05 add the input embeddings (``Node("embed", 0, pos, token_id)``) and the output
logits (``Node("logit", n_layers, pos, token_id)``); chapter 07's cross-layer transcoder
(``utils.clt``) adds ``Node("clt", layer, pos, index)``: a latent whose encoder reads layer
``layer``'s MLP input (it writes into that MLP's output and every later one), or the error
node of layer ``layer``'s MLP output. Nodes sort by layer, then kind (in the order a forward
pass meets them; a CLT sits where the transcoders do), then position and index.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

from sae_lens import SAE, Transcoder

DictionaryKind = Literal["resid_sae", "attn_sae", "transcoder"]
KINDS: tuple[DictionaryKind, ...] = ("resid_sae", "attn_sae", "transcoder")  # the order backends list them in
NodeKind = Literal["embed", "attn_sae", "transcoder", "clt", "resid_sae", "logit"]
FORWARD_ORDER: tuple[NodeKind, ...] = ("embed", "attn_sae", "transcoder", "clt", "resid_sae", "logit")  # within a layer
# A CLT replaces the MLPs, as the transcoders do: it shares their rank.
_ORDER: dict[str, int] = {"embed": 0, "attn_sae": 1, "transcoder": 2, "clt": 2, "resid_sae": 3, "logit": 4}
ERROR = "error"


def forward_rank(kind: str) -> int:
    """Where a forward pass meets a node or dictionary ``kind`` within its layer (0 first)."""
    return _ORDER[kind]


@dataclass(frozen=True)
class Node:
    """A latent (``index`` an int) or error node (``index == "error"``) at one position."""

    kind: str
    layer: int
    pos: int
    index: Union[int, str]

    def __post_init__(self) -> None:
        if self.kind not in _ORDER:
            raise ValueError(f"unknown node kind {self.kind!r}: expected one of {list(_ORDER)}")
        if not (isinstance(self.index, int) or self.index == ERROR):
            raise ValueError(f"a node's index is a latent id (int) or {ERROR!r}, got {self.index!r}")

    @property
    def is_error(self) -> bool:
        return self.index == ERROR

    def sort_key(self) -> tuple[int, int, int, int]:
        return (self.layer, forward_rank(self.kind), self.pos, -1 if self.is_error else int(self.index))

    def __lt__(self, other: "Node") -> bool:
        return self.sort_key() < other.sort_key()

    def __str__(self) -> str:
        """``resid_sae1@5:91``, ``transcoder0@3:error``: kind, layer, position, index."""
        return f"{self.kind}{self.layer}@{self.pos}:{self.index}"

    @classmethod
    def parse(cls, text: str) -> "Node":
        """The inverse of ``str(node)``."""
        head, _, index = text.partition(":")
        kind_layer, _, pos = head.partition("@")
        kind = kind_layer.rstrip("0123456789")
        return cls(kind, int(kind_layer[len(kind):]), int(pos), index if index == ERROR else int(index))


def layer_of(hook_name: str) -> int:
    """The layer of a ``blocks.{L}.…`` hook name."""
    parts = hook_name.split(".")
    if len(parts) < 2 or parts[0] != "blocks" or not parts[1].isdigit():
        raise ValueError(f"not a per-layer hook name: {hook_name!r}")
    return int(parts[1])


def output_hook(sae: SAE) -> str:
    """The hook a dictionary writes: where SAELens splices it, and where its
    ``hook_sae_acts_post`` / ``hook_sae_error`` hook points live (a transcoder's
    ``blocks.{L}.hook_mlp_out``; an SAE's own hook)."""
    return sae.cfg.metadata.hook_name_out or sae.cfg.metadata.hook_name


def dictionary_kind(sae: SAE) -> DictionaryKind:
    """``transcoder``, ``attn_sae`` (reads ``attn.hook_z``) or ``resid_sae``."""
    if isinstance(sae, Transcoder) or output_hook(sae) != sae.cfg.metadata.hook_name:
        return "transcoder"
    return "attn_sae" if sae.cfg.metadata.hook_name.endswith("attn.hook_z") else "resid_sae"


def dictionary_key(sae: SAE) -> tuple[DictionaryKind, int]:
    """(kind, layer): how a node names its dictionary."""
    return dictionary_kind(sae), layer_of(sae.cfg.metadata.hook_name)


def transcoder_layer(transcoder: SAE) -> int:
    """The layer whose MLP a transcoder replaces (it reads ``blocks.{L}.ln2.hook_normalized``)."""
    hook = transcoder.cfg.metadata.hook_name
    if not hook.endswith("ln2.hook_normalized"):
        raise ValueError(f"expected a transcoder reading blocks.L.ln2.hook_normalized, got one reading {hook!r}")
    return layer_of(hook)
