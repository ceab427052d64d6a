"""Attribution graphs on a local replacement model (introduced in chapter 05).

Every *target* of the local replacement model (``utils.graphs.replacement``: a latent's
pre-activation, or a mean-centred logit) is an affine function of its leaves:

    target_t = sum_s A[t, s] + c_t,    A[t, s] = value_s . d target_t / d leaf_s,

where ``value_s`` is the source's activation (a latent: one number; an error or embedding
node: a ``d_model`` vector, dotted with the gradient). ``A`` is the **adjacency matrix**
(rows targets, columns sources) and ``c_t`` the biases' share, which no node owns. Because
the latents are leaves, ``A[t, s]`` is the *direct* effect of ``s`` on ``t`` (through the
residual stream and frozen attention, not through other latents), and removing ``s`` (its
leaf set to zero) moves ``target_t`` by exactly ``A[t, s]``: :func:`edge_errors` checks it.

Nodes are ``utils.nodes.Node``: ``embed`` (index: the token id), ``transcoder`` (a latent id,
or ``"error"``), ``logit`` (the token id, at layer ``n_layers``).
"""
from __future__ import annotations

from collections.abc import Sequence

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from utils.graphs.graph import Graph
from utils.graphs.replacement import LocalReplacement, replacement_forward
from utils.nodes import ERROR, Node


def graph_nodes(rm: LocalReplacement, logit_ids: Int[Tensor, " k"], threshold: float = 0.0) -> list[Node]:
    """Embedding nodes, then per layer its error nodes and active latents (activation above
    ``threshold``), then the logit nodes (at the last position)."""
    nodes = [Node("embed", 0, p, int(t)) for p, t in enumerate(rm.tokens[0].tolist())]
    for layer, acts in rm.acts.items():
        nodes += [Node("transcoder", layer, p, ERROR) for p in range(rm.n_pos)]
        nodes += [Node("transcoder", layer, int(p), int(i)) for p, i in (acts > threshold).nonzero().tolist()]
    last = rm.n_pos - 1
    return nodes + [Node("logit", rm.model.cfg.n_layers, last, int(t)) for t in logit_ids.tolist()]


def _target_values(rm: LocalReplacement, targets: list[Node], pre: dict[int, Tensor], logits: Tensor) -> Float[Tensor, " rows"]:
    """Row ``r``'s value of target ``targets[r]``: a latent's pre-activation, or a logit minus
    the mean logit."""
    values = []
    for r, t in enumerate(targets):
        if t.kind == "logit":
            values.append(logits[r, t.pos, t.index] - logits[r, t.pos].mean())
        else:
            values.append(pre[t.layer][r, t.pos, t.index])
    return torch.stack(values)


def _edges_from_grads(rm: LocalReplacement, nodes: list[Node], leaves: dict[str, Tensor]) -> Float[Tensor, "rows n_nodes"]:
    """Each row's edge weights into every node: ``value . gradient`` of every source."""
    # A leaf no target of this pass depends on has no gradient: its edges are zero.
    grads = {name: leaf.grad if leaf.grad is not None else torch.zeros_like(leaf) for name, leaf in leaves.items()}
    out = torch.zeros(grads["embed"].shape[0], len(nodes), dtype=grads["embed"].dtype, device=grads["embed"].device)
    embed = [(j, n.pos) for j, n in enumerate(nodes) if n.kind == "embed"]
    cols, pos = map(list, zip(*embed))
    out[:, cols] = einops.einsum(grads["embed"][:, pos], rm.embed[pos], "r n d, n d -> r n")
    for layer in rm.acts:
        errors = [(j, n.pos) for j, n in enumerate(nodes) if n.kind == "transcoder" and n.layer == layer and n.is_error]
        latents = [(j, n.pos, n.index) for j, n in enumerate(nodes) if n.kind == "transcoder" and n.layer == layer and not n.is_error]
        if errors:
            cols, pos = map(list, zip(*errors))
            out[:, cols] = einops.einsum(grads[f"error.{layer}"][:, pos], rm.errors[layer][pos], "r n d, n d -> r n")
        if latents:
            cols, pos, idx = map(list, zip(*latents))
            out[:, cols] = grads[f"latents.{layer}"][:, pos, idx] * rm.acts[layer][pos, idx]
    return out


def build_graph(rm: LocalReplacement, logit_ids: Int[Tensor, " k"], batch: int = 128, threshold: float = 0.0,
                targets: Sequence[Node] | None = None) -> Graph:
    """The attribution graph of the prompt: one backward pass per target (latents active
    above ``threshold`` and the logits ``logit_ids`` at the last position), ``batch``
    targets per pass. A latent below the threshold is left out of the graph; what it
    contributes is then in no node (like a bias). ``targets`` restricts the backward passes
    to those nodes (a partial graph, for large models: other latents keep their outgoing
    edges into the targets but get no incoming ones)."""
    nodes = graph_nodes(rm, logit_ids, threshold)
    wanted = set(targets) if targets is not None else None
    targets = [(i, n) for i, n in enumerate(nodes) if (n.kind == "logit" or (n.kind == "transcoder" and not n.is_error))
               and (wanted is None or n in wanted)]
    adjacency = torch.zeros(len(nodes), len(nodes), dtype=rm.embed.dtype)
    with torch.enable_grad():
        for start in range(0, len(targets), batch):
            chunk = targets[start: start + batch]
            leaves = rm.leaves(len(chunk))
            latents_only = all(t.kind != "logit" for _, t in chunk)  # then no block after theirs is needed
            pre, logits = replacement_forward(rm, leaves, max(t.layer for _, t in chunk) + 1 if latents_only else None)
            _target_values(rm, [t for _, t in chunk], pre, logits).sum().backward()
            adjacency[[i for i, _ in chunk]] = _edges_from_grads(rm, nodes, leaves).detach().cpu()  # the graph lives on the CPU
    # A latent cannot act on latents of its own layer or earlier: their pre-activations are
    # read before it writes, so those gradients are exactly zero already.
    probs = rm.logits[-1].double().softmax(-1)[logit_ids].to(rm.embed.dtype).cpu()
    activation = torch.zeros(len(nodes), dtype=rm.embed.dtype)
    for j, n in enumerate(nodes):
        if n.kind == "transcoder" and not n.is_error:
            activation[j] = rm.acts[n.layer][n.pos, n.index].item()
    activation[[j for j, n in enumerate(nodes) if n.kind == "logit"]] = probs
    return Graph(nodes, adjacency, activation, tokens=rm.model.to_str_tokens(rm.tokens[0]))

def edge_errors(rm: LocalReplacement, graph: Graph, batch: int = 256) -> Float[Tensor, "n_nodes n_nodes"]:
    """For every (target, source): the change of the target when the source alone is removed
    (its leaf zeroed, every other leaf and every frozen value kept), minus the edge weight.
    Zero up to rounding when the graph is exact. One forward pass per source, batched."""
    targets = [n for n in graph.nodes if n.kind == "logit" or (n.kind == "transcoder" and not n.is_error)]
    t_index = [graph.index(t) for t in targets]
    sources = [(j, n) for j, n in enumerate(graph.nodes) if n.kind != "logit"]
    errors = torch.zeros_like(graph.adjacency)
    with torch.no_grad():
        base_pre, base_logits = replacement_forward(rm, rm.leaves(1))
        base = _values_all(targets, base_pre, base_logits)[0]  # [n_targets]
        for start in range(0, len(sources), batch):
            chunk = sources[start: start + batch]
            leaves = rm.leaves(len(chunk))
            for r, (_, n) in enumerate(chunk):
                if n.kind == "embed":
                    leaves["embed"][r, n.pos] = 0.0
                elif n.is_error:
                    leaves[f"error.{n.layer}"][r, n.pos] = 0.0
                else:
                    leaves[f"latents.{n.layer}"][r, n.pos, n.index] = 0.0
            pre, logits = replacement_forward(rm, leaves)
            moved = (base - _values_all(targets, pre, logits)).cpu()  # [rows, n_targets]
            for r, (j, _) in enumerate(chunk):
                errors[t_index, j] = moved[r] - graph.adjacency[t_index, j]
    return errors


def _values_all(targets: list[Node], pre: dict[int, Tensor], logits: Tensor) -> Float[Tensor, "rows n_targets"]:
    """Every target's value in every row."""
    cols = []
    for t in targets:
        if t.kind == "logit":
            cols.append(logits[:, t.pos, t.index] - logits[:, t.pos].mean(-1))
        else:
            cols.append(pre[t.layer][:, t.pos, t.index])
    return torch.stack(cols, 1)
