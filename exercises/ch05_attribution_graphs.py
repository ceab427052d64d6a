"""Exercise stubs for chapter ch05_attribution_graphs.

Generated from source/ch05_attribution_graphs.py by `python -m utils.course build`: edit the source, not this file."""


from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from sae_lens import HookedSAETransformer
from torch import Tensor

from utils.graphs import LocalReplacement, replacement_forward
from utils.nodes import Node


def freeze_nonlinearities(model: HookedSAETransformer, cache: dict[str, Tensor]) -> list[tuple[str, Callable[..., Tensor]]]:
    """Hooks x -> cache[name] (detached, broadcast to x's batch) for every norm scale and
    attention pattern: with them the model is linear in its residual stream, except MLPs."""
    raise NotImplementedError("freeze_nonlinearities: your code here")


def salient_logits(logits: Float[Tensor, " d_vocab"], coverage: float = 0.95, max_n: int = 10) -> tuple[Int[Tensor, " k"], Float[Tensor, " k"]]:
    """k = min(max_n, min{k : p_(1) + ... + p_(k) >= coverage}), p = softmax(logits) sorted."""
    raise NotImplementedError("salient_logits: your code here")


def target_edges(rm: LocalReplacement, nodes: list[Node], target: Node) -> Float[Tensor, " n_nodes"]:
    """A[target, s] = v_s . d target / d v_s for every node s (0 where s is not a source)."""
    raise NotImplementedError("target_edges: your code here")


def logit_influence(adjacency: Float[Tensor, "n_nodes n_nodes"], logit_weights: Float[Tensor, " n_nodes"]) -> Float[Tensor, " n_nodes"]:
    """I = w (Â + Â² + ...), Â[t, s] = |A[t, s]| / sum_s' |A[t, s']|."""
    raise NotImplementedError("logit_influence: your code here")


def prune_by_influence(scores: Float[Tensor, " n"], threshold: float) -> Bool[Tensor, " n"]:
    """Keep the top k, k = min{k : s_(1) + ... + s_(k) >= threshold * sum(s)}; never a zero."""
    raise NotImplementedError("prune_by_influence: your code here")
