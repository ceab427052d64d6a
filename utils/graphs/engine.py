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

How :func:`build_graph` computes the rows. Every source *writes* a vector into the residual
stream: an embedding node its ``d_model`` vector at ``blocks.0.hook_resid_pre``, an error node
its vector and a latent ``a_i W_dec[i]`` at its MLP's output (a cross-layer transcoder's
latent of layer ``s`` writes ``a_i W_dec[s, t][i]`` at every MLP output ``t >= s``, and its
edge sums those writes: ``A[t, s] = sum_t' g_t(t') . a_i W_dec[s, t'][i]``). Every target *reads* one
direction at one point: a latent ``(L, p, i)`` reads ``W_enc[:, i]`` at transcoder ``L``'s
input at position ``p``, a logit its centred unembedding column at the final norm's output.
So ``A[t, s] = g_t(write point of s) . (what s wrote)``, with ``g_t`` the gradient of
``target_t`` at the write point. One forward pass of the replacement model records the
graph; each backward pass from a batch of seeds (the reads, as gradients at their points)
gives every target's ``g_t`` at every write point, and the edges are dot products with the
sources' vectors, for the active latents only. :func:`build_graph_reference`, the first
builder, does the same with ``d_sae``-wide leaves and a forward pass per batch.

Nodes are ``utils.nodes.Node``: ``embed`` (index: the token id), ``transcoder`` or ``clt`` (the
dictionary's kind; a latent id, or ``"error"``), ``logit`` (the token id, at layer
``n_layers``). Per-layer transcoders and a CLT go through the same code
(``utils.graphs.replacement.MLPDictionary``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import einops
import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.graphs.graph import Graph
from utils.graphs.pruning import normalized_adjacency
from utils.graphs.replacement import (
    LocalReplacement,
    MLPDictionary,
    centred_unembedding,
    freezing_hooks,
    frozen_parameters,
    local_replacement,
    replacement_forward,
    salient_logit_ids,
)
from utils.nodes import ERROR, Node


def _is_latent(node: Node) -> bool:
    """A dictionary's latent (not an embedding, error node or logit)."""
    return node.kind not in ("embed", "logit") and not node.is_error


def _is_target(node: Node) -> bool:
    """A node with a row in the adjacency: a latent or a logit."""
    return node.kind == "logit" or _is_latent(node)


def graph_nodes(rm: LocalReplacement, logit_ids: Int[Tensor, " k"], threshold: float = 0.0) -> list[Node]:
    """Embedding nodes, then per layer its error nodes and active latents (activation above
    ``threshold``), then the logit nodes (at the last position)."""
    nodes = [Node("embed", 0, p, int(t)) for p, t in enumerate(rm.tokens[0].tolist())]
    for layer, acts in rm.acts.items():
        nodes += [Node(rm.kind, layer, p, ERROR) for p in range(rm.n_pos)]
        nodes += [Node(rm.kind, layer, int(p), int(i)) for p, i in (acts > threshold).nonzero().tolist()]
    last = rm.n_pos - 1
    return nodes + [Node("logit", rm.model.cfg.n_layers, last, int(t)) for t in logit_ids.tolist()]


# ---------------------------------------------------------------------------------------
# The engine.


class _Trace:
    """One forward pass of the local replacement model (batch 1), whose autograd graph every
    batch of targets reuses.

    Seeds enter at ``reads[L]``: layer ``L``'s MLP input (``L < n_layers``; a latent target
    reads it through its encoder column) or the final norm's output (``L = n_layers``; a
    logit reads it through its centred unembedding column), so no pass computes ``d_sae``
    pre-activations or ``d_vocab`` logits. Gradients are read at ``writes``: the embedding
    (``blocks.0.hook_resid_pre``) and each MLP's output (``hook_mlp_out``), made leaves, so
    that no gradient reaches the MLPs themselves (the replacement model's MLP output is a
    sum of leaves) and every source writes where its gradient is read (a CLT latent at every
    MLP output it writes)."""

    def __init__(self, rm: LocalReplacement):
        model = rm.model
        self.reads: dict[int, Tensor] = {}
        self.writes: dict[str, Tensor] = {}

        def leaf(name: str) -> Callable[..., Tensor]:
            def hook(x: Tensor, hook: Any) -> Tensor:
                self.writes[name] = x.detach().requires_grad_(True)
                return self.writes[name]
            return hook

        def read(layer: int) -> Callable[..., None]:
            def hook(x: Tensor, hook: Any) -> None:
                self.reads[layer] = x
            return hook

        hooks = freezing_hooks(rm.frozen) + [("blocks.0.hook_resid_pre", leaf("embed"))]
        for layer in range(rm.dictionary.n_layers):
            hooks += [(rm.dictionary.hook_in_at(layer), read(layer)), (rm.dictionary.hook_out_at(layer), leaf(f"mlp.{layer}"))]
        with model.hooks(fwd_hooks=hooks):
            resid = model(rm.tokens, stop_at_layer=model.cfg.n_layers)
            self.reads[model.cfg.n_layers] = model.ln_final(resid) if hasattr(model, "ln_final") else resid


@dataclass
class _Readout:
    """Where each source's edges go (``*_cols``: columns of the graph) and what it wrote:
    the embeddings and error nodes their ``d_model`` vectors (``rm.embed``, ``rm.errors``),
    each active latent of layer ``s`` ``a_i W_dec[s, t][i]`` into each MLP output ``t`` it
    writes, packed per position: ``decoders[(s, t)][p, slot]`` with ``latent_slots[s]`` the
    flat (position, slot) of each latent column of layer ``s``."""

    embed_cols: Int[Tensor, " pos"]
    error_cols: dict[int, Int[Tensor, " pos"]]
    latent_cols: dict[int, Int[Tensor, " n_latents"]]
    latent_slots: dict[int, Int[Tensor, " n_latents"]]
    decoders: dict[tuple[int, int], Float[Tensor, "pos slot d_model"]]


def _writes(dictionary: MLPDictionary) -> list[tuple[int, int]]:
    """Every (source, target) layer pair with a decoder, by source then target."""
    return sorted((s, t) for t in range(dictionary.n_layers) for s in dictionary.sources(t))


def _readout(rm: LocalReplacement, nodes: list[Node]) -> _Readout:
    """The readout of ``nodes`` (as :func:`graph_nodes` orders them)."""
    cols: dict[tuple[str, int], list[int]] = {}
    for j, n in enumerate(nodes):
        cols.setdefault(("embed" if n.kind == "embed" else "error" if n.is_error else n.kind, n.layer), []).append(j)
    latent_cols, slots, decoders = {}, {}, {}
    layout: dict[int, tuple[Tensor, Tensor, Tensor, int]] = {}
    for layer in range(rm.dictionary.n_layers):
        js = cols.get((rm.kind, layer), [])
        pos = torch.tensor([nodes[j].pos for j in js], dtype=torch.long)
        idx = torch.tensor([int(nodes[j].index) for j in js], dtype=torch.long)
        # rank among the latents at the same position (graph_nodes lists them position by position)
        slot = torch.arange(len(js)) - torch.searchsorted(pos, pos)
        width = int(slot.max()) + 1 if len(js) else 0
        layout[layer] = (pos, idx, slot, width)
        latent_cols[layer], slots[layer] = torch.tensor(js, dtype=torch.long), pos * width + slot
    for source, target in _writes(rm.dictionary):
        pos, idx, slot, width = layout[source]
        packed = torch.zeros(rm.n_pos, width, rm.embed.shape[-1], dtype=rm.embed.dtype, device=rm.embed.device)
        rows = rm.dictionary.decoder(source, target)[idx].to(rm.embed.dtype)
        packed[pos, slot] = rm.acts[source][pos, idx, None] * rows  # a_i W_dec[s, t][i]
        decoders[(source, target)] = packed
    return _Readout(torch.tensor(cols[("embed", 0)]), {L: torch.tensor(cols[("error", L)]) for L in rm.acts},
                    latent_cols, slots, decoders)


class _Engine:
    """Rows of the adjacency, ``batch`` targets per backward pass, on one :class:`_Trace`.

    A target's seed is the gradient of its value at its read point: a latent ``(L, p, i)``
    has ``d pre_i / d x_L[p] = W_enc[:, i]`` at transcoder ``L``'s input, a logit ``t`` the
    centred unembedding column at the final norm's output, last position. One backward
    pass, vectorised over the batch's seeds (``is_grads_batched``), gives each target's
    gradient at every write point before its read point; an edge is that gradient dotted
    with what the source wrote there."""

    def __init__(self, rm: LocalReplacement, nodes: list[Node], batch: int):
        self.rm, self.nodes, self.batch = rm, nodes, batch
        self.readout = _readout(rm, nodes)
        self.trace = _Trace(rm)
        targets = [j for j, n in enumerate(nodes) if _is_target(n)]
        self.seed_row = {j: r for r, j in enumerate(targets)}
        self.seed_pos = torch.tensor([nodes[j].pos for j in targets], dtype=torch.long)
        groups = []  # seed vectors in target order: latents by layer (W_enc columns), then logits
        for layer in range(rm.dictionary.n_layers):
            idx = [int(nodes[j].index) for j in targets if _is_latent(nodes[j]) and nodes[j].layer == layer]
            groups.append(rm.dictionary.encoder(layer)[:, idx].T)
        logit_ids = torch.tensor([int(nodes[j].index) for j in targets if nodes[j].kind == "logit"], dtype=torch.long)
        groups.append(centred_unembedding(rm.model, logit_ids).T)
        self.seed_vec = torch.cat(groups).to(rm.embed.dtype)

    def rows(self, targets: Sequence[int]) -> Iterator[tuple[list[int], Float[Tensor, "k n_nodes"]]]:
        """``(targets, their rows)`` per backward pass, the rows on the CPU: targets grouped by
        where their seeds enter (latents by layer, then logits), ``batch`` at a time. The
        logits' seeds enter just after the last layer's latents', so they share its last
        pass when there is room."""
        by_layer: dict[int, list[int]] = {}
        for j in targets:
            by_layer.setdefault(self.nodes[j].layer, []).append(j)
        chunks = [group[start: start + self.batch] for _, group in sorted(by_layer.items())
                  for start in range(0, len(group), self.batch)]
        last_layer, logits = self.rm.model.cfg.n_layers - 1, self.rm.model.cfg.n_layers
        if (len(chunks) > 1 and self.nodes[chunks[-1][0]].layer == logits and self.nodes[chunks[-2][0]].layer == last_layer
                and len(chunks[-2]) + len(chunks[-1]) <= self.batch):
            chunks[-2:] = [chunks[-2] + chunks[-1]]
        for chunk in chunks:
            yield chunk, self._rows(chunk)

    def _rows(self, chunk: list[int]) -> Float[Tensor, "k n_nodes"]:
        """One backward pass from the seeds of ``chunk``, at every read point they use."""
        which = torch.tensor([self.seed_row[j] for j in chunk], dtype=torch.long)
        layer = torch.tensor([self.nodes[j].layer for j in chunk], dtype=torch.long)
        points = sorted(set(layer.tolist()))
        reads, seeds = [self.trace.reads[point] for point in points], []
        for point, read in zip(points, reads):
            rows = (layer == point).nonzero().flatten()
            seed = torch.zeros(len(chunk), *read.shape, dtype=read.dtype, device=read.device)  # [k, 1, pos, d_model]
            seed[rows, 0, self.seed_pos[which[rows]]] = self.seed_vec[which[rows]]
            seeds.append(seed)
        upstream = ["embed"] + [f"mlp.{L}" for L in range(max(points))]  # what is written before the last read point
        grads = torch.autograd.grad(reads, [self.trace.writes[w] for w in upstream], seeds,
                                    retain_graph=True, allow_unused=True, is_grads_batched=True)
        return self._edges(dict(zip(upstream, grads)), len(chunk)).cpu()

    def _edges(self, grads: dict[str, Tensor | None], k: int) -> Float[Tensor, "k n_nodes"]:
        """``value . gradient`` of every source into each of the ``k`` targets."""
        rm, ro = self.rm, self.readout
        out = torch.zeros(k, len(self.nodes), dtype=rm.embed.dtype, device=rm.embed.device)
        embed = grads["embed"]
        assert embed is not None, "every target depends on the embeddings"
        out[:, ro.embed_cols] = einops.einsum(embed[:, 0], rm.embed, "k pos d, pos d -> k pos")
        per_slot: dict[int, Tensor] = {}  # each source layer's edges, summed over the MLP outputs it writes
        for (source, target), written in ro.decoders.items():
            grad = grads.get(f"mlp.{target}")
            if grad is None or not len(ro.latent_cols[source]):  # written after the read point: no path
                continue
            edges = einops.einsum(grad[:, 0], written, "k pos d, pos slot d -> k pos slot")
            per_slot[source] = per_slot[source] + edges if source in per_slot else edges
        for layer in rm.errors:
            grad = grads.get(f"mlp.{layer}")
            if grad is not None:
                out[:, ro.error_cols[layer]] = einops.einsum(grad[:, 0], rm.errors[layer], "k pos d, pos d -> k pos")
        for source, edges in per_slot.items():
            out[:, ro.latent_cols[source]] = edges.flatten(1)[:, ro.latent_slots[source]]
        return out


def build_graph(rm: LocalReplacement, logit_ids: Int[Tensor, " k"], batch: int = 256, threshold: float = 0.0,
                max_feature_nodes: int | None = None) -> Graph:
    """The attribution graph of the prompt: nodes from :func:`graph_nodes` (latents active
    above ``threshold``, the logits ``logit_ids`` at the last position), and a row of the
    adjacency for every latent and logit.

    One forward pass of the replacement model with its parameters frozen; then, ``batch``
    targets at a time, one backward pass from their seeds (:class:`_Engine`): nothing
    ``d_sae``- or ``d_vocab``-wide is made per target, and nothing is left in any ``.grad``.

    ``max_feature_nodes`` caps the latents that get a row, chosen by running influence as
    circuit-tracer chooses them: the logits' rows first; then, repeatedly, the ``batch``
    (at most the cap's remainder) latents not yet visited with the largest influence on the
    logits in the graph of the rows computed so far (:func:`influence` over those rows:
    a latent's share of the logits' input, through every visited target), ties in node
    order, until the cap is reached. The graph keeps only the visited latents: an unvisited
    latent's contributions to them are left out, like a bias, and every edge kept stays
    exact. Without a cap (or a cap at least the number of active latents) every active
    latent is a node."""
    nodes = graph_nodes(rm, logit_ids, threshold)
    latents = [j for j, n in enumerate(nodes) if _is_latent(n)]
    logits = [j for j, n in enumerate(nodes) if n.kind == "logit"]
    activation = _activation(rm, nodes, logit_ids)
    tokens = rm.model.to_str_tokens(rm.tokens[0])
    with frozen_parameters(rm.model, rm.dictionary), torch.enable_grad():
        engine = _Engine(rm, nodes, batch)
        if max_feature_nodes is None or max_feature_nodes >= len(latents):
            adjacency = torch.zeros(len(nodes), len(nodes), dtype=rm.embed.dtype)
            for chunk, rows in engine.rows(latents + logits):
                adjacency[chunk] = rows
            return Graph(nodes, adjacency, activation, tokens=tokens)
        rows, order = _visit_by_influence(engine, logits, latents, activation, max_feature_nodes)
    # keep the embeddings, error nodes, logits and visited latents, in node order
    keep = torch.ones(len(nodes), dtype=torch.bool)
    keep[latents] = False
    keep[order] = True
    new_index = keep.long().cumsum(0) - 1
    adjacency = torch.zeros(int(keep.sum()), int(keep.sum()), dtype=rm.embed.dtype)
    adjacency[new_index[order]] = rows[:, keep]
    return Graph([n for j, n in enumerate(nodes) if keep[j]], adjacency, activation[keep], tokens=tokens)


def _activation(rm: LocalReplacement, nodes: list[Node], logit_ids: Int[Tensor, " k"]) -> Float[Tensor, " n_nodes"]:
    """Each latent's activation, each logit's probability, 0 for embeddings and error nodes."""
    activation = torch.zeros(len(nodes), dtype=rm.embed.dtype)
    for layer, acts in rm.acts.items():
        js = [(j, n.pos, int(n.index)) for j, n in enumerate(nodes) if _is_latent(n) and n.layer == layer]
        if js:
            cols, pos, idx = map(list, zip(*js))
            activation[cols] = acts[pos, idx].cpu()
    probs = rm.logits[-1].double().softmax(-1)[logit_ids].to(rm.embed.dtype).cpu()
    activation[[j for j, n in enumerate(nodes) if n.kind == "logit"]] = probs
    return activation


def _visit_by_influence(engine: _Engine, logits: list[int], latents: list[int], activation: Tensor,
                        cap: int) -> tuple[Float[Tensor, "k n_nodes"], list[int]]:
    """The rows of the logits and of ``cap`` latents chosen by running influence
    (:func:`build_graph`), in visiting order, and the node index of each row."""
    n = len(engine.nodes)
    rows = torch.zeros(cap + len(logits), n, dtype=activation.dtype)
    order: list[int] = []
    weights = torch.zeros(n, dtype=activation.dtype)
    weights[logits] = activation[logits]
    waiting = torch.zeros(n, dtype=torch.bool)
    waiting[latents] = True
    pending = logits
    while pending:
        for chunk, block in engine.rows(pending):
            rows[len(order): len(order) + len(chunk)] = block
            order += chunk
        waiting[pending] = False
        visited = len(order) - len(logits)
        score = torch.where(waiting, _partial_influence(rows[: len(order)], order, weights), -torch.inf)
        pending = sorted(score.argsort(descending=True, stable=True)[: min(engine.batch, cap - visited)].tolist())
    return rows, order


def _partial_influence(rows: Float[Tensor, "m n"], order: list[int], weights: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
    """:func:`influence` in the graph whose only targets are ``order`` (row ``r`` of ``rows``
    is node ``order[r]``'s input): ``w Â + w Â² + ...`` with ``Â`` zero outside those rows."""
    norm = normalized_adjacency(rows)
    total = torch.zeros_like(weights)
    term = weights[order] @ norm
    while term.any():
        total = total + term
        term = term[order] @ norm
    return total


def attribute(model: HookedSAETransformer, transcoders: MLPDictionary | Sequence[SAE], tokens: Int[Tensor, "1 pos"],
              coverage: float = 0.95, max_n_logits: int = 10, batch: int = 256, threshold: float = 0.0,
              max_feature_nodes: int | None = None) -> Graph:
    """The attribution graph of one prompt in one call: its local replacement model (per-layer
    transcoders or a CLT), its salient logits (``coverage``, ``max_n_logits``) and :func:`build_graph`."""
    rm = local_replacement(model, transcoders, tokens)
    logit_ids, _ = salient_logit_ids(rm.logits[-1], coverage, max_n_logits)
    return build_graph(rm, logit_ids, batch, threshold, max_feature_nodes)


# ---------------------------------------------------------------------------------------
# The first builder, kept as a reference; the removal test.


def _target_values(rm: LocalReplacement, targets: list[Node], pre: dict[int, Tensor], logits: Tensor | None) -> Float[Tensor, " rows"]:
    """Row ``r``'s value of target ``targets[r]``: a latent's pre-activation, or a logit minus
    the mean logit."""
    values = []
    for r, t in enumerate(targets):
        if t.kind == "logit":
            assert logits is not None, "a logit target needs the whole forward pass"
            values.append(logits[r, t.pos, int(t.index)] - logits[r, t.pos].mean())
        else:
            values.append(pre[t.layer][r, t.pos, int(t.index)])
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
        errors = [(j, n.pos) for j, n in enumerate(nodes) if n.kind == rm.kind and n.layer == layer and n.is_error]
        latents = [(j, n.pos, n.index) for j, n in enumerate(nodes) if _is_latent(n) and n.layer == layer]
        if errors:
            cols, pos = map(list, zip(*errors))
            out[:, cols] = einops.einsum(grads[f"error.{layer}"][:, pos], rm.errors[layer][pos], "r n d, n d -> r n")
        if latents:
            cols, pos, idx = map(list, zip(*latents))
            out[:, cols] = grads[f"latents.{layer}"][:, pos, idx] * rm.acts[layer][pos, idx]  # type: ignore[index]
    return out


def build_graph_reference(rm: LocalReplacement, logit_ids: Int[Tensor, " k"], batch: int = 128, threshold: float = 0.0,
                          targets: Sequence[Node] | None = None) -> Graph:
    """The attribution graph as chapter 05's first builder computed it, kept as a reference
    for :func:`build_graph` (tests and benchmark): the prompt repeated ``batch`` times, each
    row with its own ``d_sae``-wide leaves (:meth:`LocalReplacement.leaves`), a forward and
    a backward pass per batch of targets, row ``r`` seeding target ``r`` by differentiating
    its value (``.backward()``: parameters' gradients are computed too, and left in their
    ``.grad``, as the first builder left them). Same nodes as
    :func:`build_graph`; ``targets`` restricts the backward passes to those nodes (other
    latents keep their outgoing edges into them but get no incoming ones)."""
    nodes = graph_nodes(rm, logit_ids, threshold)
    wanted = set(targets) if targets is not None else None
    rows = [(i, n) for i, n in enumerate(nodes) if _is_target(n) and (wanted is None or n in wanted)]
    adjacency = torch.zeros(len(nodes), len(nodes), dtype=rm.embed.dtype)
    with torch.enable_grad():
        for start in range(0, len(rows), batch):
            chunk = rows[start: start + batch]
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
        if _is_latent(n):
            activation[j] = rm.acts[n.layer][n.pos, int(n.index)].item()
    activation[[j for j, n in enumerate(nodes) if n.kind == "logit"]] = probs
    return Graph(nodes, adjacency, activation, tokens=rm.model.to_str_tokens(rm.tokens[0]))


def edge_errors(rm: LocalReplacement, graph: Graph, batch: int = 256,
                sources: Sequence[Node] | None = None) -> Float[Tensor, "n_nodes n_nodes"]:
    """For every (target, source): the change of the target when the source alone is removed
    (its leaf zeroed, every other leaf and every frozen value kept), minus the edge weight.
    Zero up to rounding when the graph is exact. One forward pass of the replacement model
    (``d_sae``-wide leaves, full logits: independent of :func:`build_graph`'s backward
    passes) per source, batched; ``sources`` limits the test to those nodes' columns (the
    others stay zero)."""
    targets = [n for n in graph.nodes if _is_target(n)]
    t_index = [graph.index(t) for t in targets]
    chosen = set(sources) if sources is not None else None
    columns = [(j, n) for j, n in enumerate(graph.nodes) if n.kind != "logit" and (chosen is None or n in chosen)]
    errors = torch.zeros_like(graph.adjacency)
    with torch.no_grad():
        base_pre, base_logits = replacement_forward(rm, rm.leaves(1))
        base = _values_all(targets, base_pre, base_logits)[0]  # [n_targets]
        for start in range(0, len(columns), batch):
            chunk = columns[start: start + batch]
            leaves = rm.leaves(len(chunk))
            for r, (_, n) in enumerate(chunk):
                if n.kind == "embed":
                    leaves["embed"][r, n.pos] = 0.0
                elif n.is_error:
                    leaves[f"error.{n.layer}"][r, n.pos] = 0.0
                else:
                    leaves[f"latents.{n.layer}"][r, n.pos, int(n.index)] = 0.0
            pre, logits = replacement_forward(rm, leaves)
            moved = (base - _values_all(targets, pre, logits)).cpu()  # [rows, n_targets]
            for r, (j, _) in enumerate(chunk):
                errors[t_index, j] = moved[r] - graph.adjacency[t_index, j]
    return errors


def _values_all(targets: list[Node], pre: dict[int, Tensor], logits: Tensor | None) -> Float[Tensor, "rows n_targets"]:
    """Every target's value in every row."""
    cols = []
    for t in targets:
        if t.kind == "logit":
            assert logits is not None, "a logit target needs the whole forward pass"
            cols.append(logits[:, t.pos, int(t.index)] - logits[:, t.pos].mean(-1))
        else:
            cols.append(pre[t.layer][:, t.pos, int(t.index)])
    return torch.stack(cols, 1)
