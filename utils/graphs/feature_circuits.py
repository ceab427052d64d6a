"""Feature circuits across dictionaries (introduced in chapter 03).

Direct edges. With every dictionary spliced, a later dictionary ``d`` depends on an earlier
one ``u`` through every path of the model, many of them through a third dictionary ``m``
between them. The edge u -> d counts only paths through *no* other dictionary: every other
spliced dictionary's output is held fixed (a stop-gradient for gradients, its clean value for
ablations). On a model with residual SAEs at every layer, edges therefore join consecutive
dictionaries (``resid_sae L-1 -> attn_sae L, transcoder L, resid_sae L`` and
``attn_sae L -> transcoder L, resid_sae L``, ``transcoder L -> resid_sae L``), the residual
skip path included.

This module splices dictionaries so that such a direct edge can be differentiated
(:func:`splice_for_edges`) or ablated (:func:`direct_change`), and grows a graph by
progressive tracing (:class:`Tracer`). The circuits are :class:`~utils.graphs.graph.Graph` objects
built with ``Graph.from_edges`` (node effects and edge effects), drawn by
``utils.graphs.view.graph_figure`` and exported to ``.dot`` / ``.svg`` by ``utils.graphs.export``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from utils.nodes import output_hook
from utils.graphs.graph import Graph
from utils.nodes import Node


@contextmanager
def splice_for_edges(model: HookedSAETransformer, dictionaries: Sequence[SAE], upstream: SAE, downstream: SAE
                     ) -> Iterator[dict[str, Tensor]]:
    """Splice so that the next forward pass exposes the direct dependence of ``downstream``
    on ``upstream``. Yields a dict filled by that pass:

    * ``up.latents`` ``[batch, pos, d_sae]`` and ``up.error`` (the shape of what ``upstream``
      writes): leaves that ``requires_grad``; ``upstream`` writes ``decode(f) + e``, its
      own activation;
    * ``down.latents`` ``[batch, pos, d_sae]`` and ``down.error``: ``downstream``'s latents
      ``encode(x)`` and error ``y - decode(encode(x))``, computed *with* gradients from what it
      reads, so ``torch.autograd`` can take their vector-Jacobian products with the leaves.

    Every other dictionary of ``dictionaries`` writes its activation detached: no gradient
    passes through it, so only direct paths remain. Values are the model's own. Hooks are
    global state; they are removed when the block exits. Call under ``torch.enable_grad()``.
    """
    nodes: dict[str, Tensor] = {}
    inputs: dict[str, Tensor] = {}

    def keep_input(hook_name: str):
        def hook(x: Tensor, hook: HookPoint) -> None:
            inputs[hook_name] = x
        return hook

    def as_upstream(y: Tensor, hook: HookPoint) -> Tensor:
        x = inputs.pop("up", y)
        with torch.no_grad():
            latents = upstream.encode(x.detach())
        nodes["up.latents"] = latents.requires_grad_(True)
        recons = upstream.decode(latents)
        nodes["up.error"] = (y - recons).detach().requires_grad_(True)
        return recons + nodes["up.error"]

    def as_downstream(y: Tensor, hook: HookPoint) -> Tensor:
        x = inputs.pop("down", y)
        nodes["down.latents"] = downstream.encode(x)
        nodes["down.error"] = y - downstream.decode(nodes["down.latents"])
        return y

    def frozen(y: Tensor, hook: HookPoint) -> Tensor:
        return y.detach()

    fwd_hooks = []
    for sae in dictionaries:
        if sae is upstream or sae is downstream:
            continue
        fwd_hooks.append((output_hook(sae), frozen))
    for sae, role, splice in ((upstream, "up", as_upstream), (downstream, "down", as_downstream)):
        if output_hook(sae) != sae.cfg.metadata.hook_name:
            fwd_hooks.append((sae.cfg.metadata.hook_name, keep_input(role)))
        fwd_hooks.append((output_hook(sae), splice))
    with model.hooks(fwd_hooks=fwd_hooks):
        yield nodes


def node_gradients(model: HookedSAETransformer, dictionaries: Sequence[SAE], tokens: Int[Tensor, "batch pos"],
                   metric: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
    """``dm/df`` and ``dm/de`` at every latent and error node of every dictionary (all
    spliced with ``splice_for_gradients``, one forward and one backward pass of the metric
    summed over prompts), plus the clean values: keys ``{hook}.latents``, ``{hook}.error``
    (leaves with ``.grad``), ``hook`` the hook each dictionary reads."""
    from utils.attribution import splice_for_gradients

    with splice_for_gradients(model, dictionaries) as nodes, torch.enable_grad():
        metric(model(tokens)).sum().backward()
    return dict(nodes)


@torch.no_grad()
def direct_change(model: HookedSAETransformer, dictionaries: Sequence[SAE], upstream: SAE, downstream: SAE,
                  tokens: Int[Tensor, "batch pos"], node: Node, value: float | Tensor = 0.0
                  ) -> tuple[Float[Tensor, "batch pos d_sae"], Float[Tensor, "batch pos ..."]]:
    """Edge ablation: set one upstream node (a latent, or the error node, at ``node.pos``) to
    ``value``, hold every other dictionary's output at its clean value, and return the change
    of ``downstream``'s latents and error term (ablated minus clean), error terms kept."""
    names = [output_hook(sae) for sae in dictionaries if sae is not upstream and sae is not downstream]
    _, clean_cache = model.run_with_cache(tokens, names_filter=names)

    def read(tensors: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return tensors["down.latents"].detach(), tensors["down.error"].detach()

    with splice_for_edges(model, dictionaries, upstream, downstream) as nodes:
        model(tokens)
        clean = read(nodes)

    def ablate(y: Tensor, hook: HookPoint) -> Tensor:
        part = "latents" if isinstance(node.index, int) else "error"
        # the splice has just made up.latents / up.error: rebuild the output with the node changed
        latents, error = nodes["up.latents"].detach().clone(), nodes["up.error"].detach().clone()
        if part == "latents":
            latents[:, node.pos, int(node.index)] = value
        else:
            error[:, node.pos] = value
        return upstream.decode(latents) + error

    fixed = [(name, lambda y, hook, name=name: clean_cache[name]) for name in names]
    with splice_for_edges(model, dictionaries, upstream, downstream) as nodes:
        model.run_with_hooks(tokens, fwd_hooks=[(output_hook(upstream), ablate), *fixed])
        ablated = read(nodes)
    return ablated[0] - clean[0], ablated[1] - clean[1]


class Tracer:
    """Grow a graph from pinned nodes, one layer of children per :meth:`step` (the cognition
    graphs of chapter 03). ``children(node)`` returns ``{child: weight}`` for one node: the
    downstream nodes its ablation moves above the threshold. Each step expands the frontier
    (the nodes added by the previous step) and returns how many nodes it added; ``graph``
    is the graph so far (its labels and hover texts survive later steps)."""

    def __init__(self, children: Callable[[Node], dict[Node, float]], pinned: Iterable[Node]):
        self.children = children
        self.frontier = list(pinned)
        self._effects: dict[Node, float] = {node: 0.0 for node in self.frontier}
        self._edges: dict[tuple[Node, Node], float] = {}
        self.graph = Graph.from_edges(self._effects, self._edges)

    def step(self) -> int:
        added = []
        for node in self.frontier:
            for child, weight in self.children(node).items():
                self._edges[node, child] = weight
                if child not in self._effects:
                    self._effects[child] = 0.0
                    added.append(child)
        self.frontier = added
        self.graph = Graph.from_edges(self._effects, self._edges, self.graph.labels, self.graph.hover)
        return len(added)
