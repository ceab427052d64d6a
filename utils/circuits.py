"""Circuits as sets of nodes: which dictionary a node lives in, masks and baselines for
ablating node sets, attribution to every node at once, rankings (introduced in chapter 02;
chapter 03 builds its circuits on them).

A node is ``utils.nodes.Node(kind, layer, pos, index)``: one latent (``index`` an int) or the
error term (``index == "error"``) of one dictionary at one position, the same for every
prompt of a batch. Dictionaries are residual SAEs, attention SAEs (``hook_z``, heads
flattened) and transcoders; each is named by the hook it reads
(``sae.cfg.metadata.hook_name``) and sits, when spliced, at the hook it writes
(:func:`utils.nodes.output_hook`). Per-dictionary tensors over nodes put the error node in the *last*
column: ``[..., pos, d_sae + 1]``, latents ``0 .. d_sae - 1`` then the error.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.attribution import splice_for_gradients
from utils.nodes import ERROR, Node, dictionary_key, output_hook
from utils.patching import Metric


# ---------------------------------------------------------------------------------------
# Dictionaries and their nodes.


def by_key(dictionaries: Sequence[SAE]) -> dict[tuple[str, int], SAE]:
    """``dictionaries`` keyed by (kind, layer); refuses two of the same kind at one layer."""
    keyed: dict[tuple[str, int], SAE] = {}
    for sae in dictionaries:
        key = dictionary_key(sae)
        if key in keyed:
            raise ValueError(f"two dictionaries of kind {key[0]!r} at layer {key[1]}: a node could not tell them apart")
        keyed[key] = sae
    return keyed


def node_masks(nodes: Iterable[Node], dictionaries: Sequence[SAE], n_pos: int) -> dict[str, Bool[Tensor, "pos d_sae_plus_error"]]:
    """For each dictionary (keyed by the hook it reads) a mask ``[n_pos, d_sae + 1]`` that is
    True at every node of ``nodes`` (error node in the last column). Negative positions
    count from the end, as in Python."""
    keyed = by_key(dictionaries)
    where: dict[tuple[str, int], tuple[list[int], list[int]]] = {key: ([], []) for key in keyed}
    for node in nodes:
        key = (node.kind, node.layer)
        if key not in keyed:
            raise ValueError(f"node {node} belongs to no dictionary given: expected one of "
                             f"{sorted(f'{k}{layer}' for k, layer in keyed)}")
        if not -n_pos <= node.pos < n_pos:
            raise ValueError(f"node {node} has position {node.pos}, outside a prompt of {n_pos} tokens")
        d_sae = keyed[key].cfg.d_sae
        if not node.is_error and not 0 <= int(node.index) < d_sae:
            raise ValueError(f"node {node}: latent {node.index} is not in 0..{d_sae - 1}")
        where[key][0].append(node.pos % n_pos)
        where[key][1].append(d_sae if node.is_error else int(node.index))
    masks = {}
    for key, sae in keyed.items():
        mask = torch.zeros(n_pos, sae.cfg.d_sae + 1, dtype=torch.bool)
        mask[where[key]] = True  # (positions, columns): one indexed write per dictionary
        masks[sae.cfg.metadata.hook_name] = mask.to(sae.W_dec.device)
    return masks


def nodes_of(mask: Bool[Tensor, "pos d_sae_plus_error"], sae: SAE) -> list[Node]:
    """The nodes marked in one dictionary's mask (the inverse of :func:`node_masks`)."""
    kind, layer = dictionary_key(sae)
    return [Node(kind, layer, p, ERROR if i == sae.cfg.d_sae else i) for p, i in mask.nonzero().tolist()]


# ---------------------------------------------------------------------------------------
# Baselines: the values ablated nodes take.


@dataclass
class NodeBaseline:
    """The value each node takes when ablated, per dictionary keyed by the hook it reads.

    ``latents[hook]`` is ``[pos, d_sae]`` (or ``[d_sae]``, the same at every position) and
    ``errors[hook]`` the error term's value, ``[pos, *d_out]`` (or ``[*d_out]``); both
    broadcast against a batch of activations. ``d_out`` is ``d_model`` for residual SAEs
    and transcoders, ``(n_heads, d_head)`` for attention SAEs.
    """

    latents: dict[str, Float[Tensor, "*pos d_sae"]]
    errors: dict[str, Float[Tensor, "*pos ..."]]


def dictionary_values(model: HookedSAETransformer, dictionaries: Sequence[SAE], tokens: Int[Tensor, "batch pos"]
                      ) -> dict[str, tuple[Float[Tensor, "batch pos d_sae"], Float[Tensor, "batch pos ..."]]]:
    """Clean latents and error terms of every dictionary on ``tokens``, keyed by the hook
    each reads. Every dictionary is spliced with its error term, so the model's own
    activations flow and each dictionary sees exactly what it would see alone."""
    names = {sae.cfg.metadata.hook_name: (f"{output_hook(sae)}.hook_sae_acts_post", f"{output_hook(sae)}.hook_sae_error")
             for sae in dictionaries}
    with torch.no_grad():
        _, cache = model.run_with_cache_with_saes(tokens, saes=list(dictionaries), use_error_term=True,
                                                  names_filter=[n for pair in names.values() for n in pair])
    return {hook: (cache[acts], cache[error]) for hook, (acts, error) in names.items()}


def mean_baseline(model: HookedSAETransformer, dictionaries: Sequence[SAE], tokens: Int[Tensor, "batch pos"],
                  per_position: bool = True) -> NodeBaseline:
    """Mean latents and error terms over the prompts of ``tokens``: position by position
    (``[pos, ...]``, for prompts of one template, e.g. a task batch), or over every
    position but BOS (``per_position=False``)."""
    latents, errors = {}, {}
    for hook, (acts, error) in dictionary_values(model, dictionaries, tokens).items():
        if per_position:
            latents[hook], errors[hook] = acts.mean(0), error.mean(0)
        else:
            latents[hook], errors[hook] = acts[:, 1:].mean((0, 1)), error[:, 1:].mean((0, 1))
    return NodeBaseline(latents, errors)


# ---------------------------------------------------------------------------------------
# Attribution to every node, and rankings.


def node_attribution(model: HookedSAETransformer, dictionaries: Sequence[SAE], tokens: Int[Tensor, "batch pos"],
                     metric: Metric, baseline: NodeBaseline | None = None) -> dict[str, Float[Tensor, "batch pos d_sae_plus_error"]]:
    """Attribution patching to every latent and every error node of every dictionary, at
    every position, from one forward and one backward pass (``splice_for_gradients``):

        attr[hook][b, p, i]  = dm_b/df_i(p) . (f'_i(p) - f_i(p))      for a latent i < d_sae,
        attr[hook][b, p, -1] = dm_b/de(p) . (e'(p) - e(p))             for the error node,

    the dot product summed over the error's dims; ``f'``, ``e'`` come from ``baseline``
    (zero when None). It estimates the change of ``metric`` when that one node is ablated.
    """
    with splice_for_gradients(model, dictionaries) as nodes, torch.enable_grad():
        metric(model(tokens)).sum().backward()
    attributions = {}
    for sae in dictionaries:
        hook = sae.cfg.metadata.hook_name
        f, e = nodes[f"{hook}.latents"], nodes[f"{hook}.error"]
        f_base = torch.zeros_like(f) if baseline is None else baseline.latents[hook].expand_as(f)
        e_base = torch.zeros_like(e) if baseline is None else baseline.errors[hook].expand_as(e)
        f_grad, e_grad = (torch.zeros_like(x) if x.grad is None else x.grad for x in (f, e))  # None: no path to the metric
        latent_attr = f_grad * (f_base - f.detach())  # [batch, pos, d_sae]
        error_attr = (e_grad * (e_base - e.detach())).flatten(2).sum(-1)  # [batch, pos]
        attributions[hook] = torch.cat([latent_attr, error_attr[..., None]], dim=-1)
    return attributions


def rank_nodes(scores: dict[str, Float[Tensor, "pos d_sae_plus_error"]], dictionaries: Sequence[SAE],
               errors: bool = True, k: int | None = None) -> list[Node]:
    """The ``k`` nodes (all when None) with the largest ``|score|``, largest first; ties in
    the order of ``utils.nodes`` (layer, kind, position, error before latents). Error nodes
    are left out when ``errors`` is False. ``scores[hook]`` holds one number per node of the
    dictionary reading ``hook``, e.g. an attribution averaged over prompts."""
    ordered = sorted(dictionaries, key=lambda sae: Node(*dictionary_key(sae), 0, 0).sort_key())
    flat, owners = [], []
    for sae in ordered:
        score = scores[sae.cfg.metadata.hook_name].detach().abs().float().cpu()
        score = torch.cat([score[:, -1:], score[:, :-1]], dim=-1)  # error first, as nodes sort
        if not errors:
            score[:, 0] = -1.0  # below every |score|: ranked last, then dropped
        flat.append(score.flatten())
        owners.append((dictionary_key(sae), score.shape[1]))
    values = torch.cat(flat)
    order = torch.sort(values, descending=True, stable=True).indices
    order = order[values[order] >= 0][:k]
    ends = torch.tensor([len(f) for f in flat]).cumsum(0)
    owner = torch.bucketize(order, ends, right=True)  # which dictionary each ranked entry is in
    offset = order - torch.cat([torch.zeros(1, dtype=ends.dtype), ends])[owner]
    ranked = []
    for d, i in zip(owner.tolist(), offset.tolist()):
        (kind, layer), width = owners[d]
        pos, column = divmod(i, width)
        ranked.append(Node(kind, layer, pos, ERROR if column == 0 else column - 1))
    return ranked


def label_positions(labels: Bool[Tensor, "batch pos"], share: float = 0.5) -> Bool[Tensor, " pos"]:
    """Positions labelled in at least ``share`` of the prompts (prompts of one template put
    a label at the same positions)."""
    return labels.float().mean(0) >= share

