"""Reference solutions for chapter ch05_attribution_graphs.

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
    names = [f"blocks.{layer}.{hook}" for layer in range(model.cfg.n_layers)
             for hook in ("ln1.hook_scale", "attn.hook_pattern", "ln2.hook_scale")] + ["ln_final.hook_scale"]

    def frozen(x: Tensor, hook: Any) -> Tensor:
        return cache[hook.name].detach().expand_as(x)  # the prompt's value, whatever x is

    return [(name, frozen) for name in names]


def salient_logits(logits: Float[Tensor, " d_vocab"], coverage: float = 0.95, max_n: int = 10) -> tuple[Int[Tensor, " k"], Float[Tensor, " k"]]:
    """k = min(max_n, min{k : p_(1) + ... + p_(k) >= coverage}), p = softmax(logits) sorted."""
    probs = logits.softmax(-1)
    top = probs.topk(max_n)
    k = min(max_n, int((top.values.cumsum(0) < coverage).sum()) + 1)  # the first k reaching coverage
    return top.indices[:k], top.values[:k]


def target_edges(rm: LocalReplacement, nodes: list[Node], target: Node) -> Float[Tensor, " n_nodes"]:
    """A[target, s] = v_s . d target / d v_s for every node s (0 where s is not a source)."""
    leaves = rm.leaves(1)
    with torch.enable_grad():
        pre, logits = replacement_forward(rm, leaves)
        if target.kind == "logit":
            value = logits[0, target.pos, target.index] - logits[0, target.pos].mean()  # a centred logit
        else:
            value = pre[target.layer][0, target.pos, target.index]
        value.backward()
    grad = {name: leaf.grad[0] if leaf.grad is not None else torch.zeros_like(leaf[0]) for name, leaf in leaves.items()}
    edges = torch.zeros(len(nodes), dtype=rm.embed.dtype)
    for j, n in enumerate(nodes):
        if n.kind == "embed":
            edges[j] = grad["embed"][n.pos] @ rm.embed[n.pos]
        elif n.kind == "transcoder" and n.is_error:
            edges[j] = grad[f"error.{n.layer}"][n.pos] @ rm.errors[n.layer][n.pos]
        elif n.kind == "transcoder":
            edges[j] = grad[f"latents.{n.layer}"][n.pos, n.index] * rm.acts[n.layer][n.pos, n.index]
    return edges


def logit_influence(adjacency: Float[Tensor, "n_nodes n_nodes"], logit_weights: Float[Tensor, " n_nodes"]) -> Float[Tensor, " n_nodes"]:
    """I = w (Â + Â² + ...), Â[t, s] = |A[t, s]| / sum_s' |A[t, s']|."""
    a = adjacency.abs()
    norm = a / a.sum(1, keepdim=True).clamp(min=torch.finfo(a.dtype).tiny)  # a row without input stays zero
    total, term = torch.zeros_like(logit_weights), logit_weights @ norm
    for _ in range(len(logit_weights)):  # nilpotent: the terms vanish after the longest path
        if not term.any():
            break
        total, term = total + term, term @ norm
    return total


def prune_by_influence(scores: Float[Tensor, " n"], threshold: float) -> Bool[Tensor, " n"]:
    """Keep the top k, k = min{k : s_(1) + ... + s_(k) >= threshold * sum(s)}; never a zero."""
    order = scores.argsort(descending=True)
    share = scores[order].cumsum(0) / scores.sum()
    k = int((share < threshold).sum()) + 1  # the entry that crosses the threshold is kept
    keep = torch.zeros(len(scores), dtype=torch.bool, device=scores.device)
    keep[order[:k]] = True
    return keep & (scores > 0)
