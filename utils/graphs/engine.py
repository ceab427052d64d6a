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
``target_t`` at the write point. With the norms' scales and the attention patterns frozen and
the MLPs replaced by leaves, the map from write points to read points is linear; a batch of
seeds (the reads, as gradients at their points) is taken back through its transpose, written
out by hand (``_Transpose``: per block, the attention's value-output path and the norm, a
few matrix products, no autograd), or, for a model it does not cover, by one backward pass
of a traced forward pass (``_Trace``). That gives every target's ``g_t`` at every write
point, and the edges are dot products with the sources' vectors, for the active latents
only. :func:`build_graph_reference`, the first builder, does the same with ``d_sae``-wide
leaves and a forward pass per batch.

Nodes are ``utils.nodes.Node``: ``embed`` (index: the token id), ``transcoder`` or ``clt`` (the
dictionary's kind; a latent id, or ``"error"``), ``logit`` (the token id, at layer
``n_layers``). Per-layer transcoders and a CLT go through the same code
(``utils.graphs.replacement.MLPDictionary``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
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


@dataclass
class _Layout:
    """The nodes of :func:`graph_nodes` and where each kind sits among them (graph columns):
    ``embed[p]`` and ``errors[L][p]`` per position, ``latents[L] = (columns, positions,
    latent ids)``, ``logits`` (for ``logit_ids``)."""

    nodes: list[Node]
    embed: Int[Tensor, " pos"]
    errors: dict[int, Int[Tensor, " pos"]]
    latents: dict[int, tuple[Int[Tensor, " n"], Int[Tensor, " n"], Int[Tensor, " n"]]]
    logits: Int[Tensor, " k"]
    logit_ids: Int[Tensor, " k"]

    @property
    def latent_columns(self) -> list[int]:
        return [j for cols, _, _ in self.latents.values() for j in cols.tolist()]


def _layout(rm: LocalReplacement, logit_ids: Int[Tensor, " k"], threshold: float = 0.0) -> _Layout:
    """Embedding nodes, then per layer its error nodes and active latents (activation above
    ``threshold``, by position then id), then the logit nodes (at the last position)."""
    n_pos, n_layers = rm.n_pos, rm.model.cfg.n_layers
    nodes = [Node("embed", 0, p, int(t)) for p, t in enumerate(rm.tokens[0].tolist())]
    embed, errors, latents = torch.arange(n_pos), {}, {}
    for layer, acts in rm.acts.items():
        errors[layer] = torch.arange(len(nodes), len(nodes) + n_pos)
        nodes += [Node(rm.kind, layer, p, ERROR) for p in range(n_pos)]
        active = (acts > threshold).nonzero().cpu()
        latents[layer] = (torch.arange(len(nodes), len(nodes) + len(active)), active[:, 0], active[:, 1])
        nodes += [Node(rm.kind, layer, p, i) for p, i in active.tolist()]
    logits = torch.arange(len(nodes), len(nodes) + len(logit_ids))
    nodes += [Node("logit", n_layers, n_pos - 1, t) for t in logit_ids.tolist()]
    return _Layout(nodes, embed, errors, latents, logits, logit_ids.cpu())


def graph_nodes(rm: LocalReplacement, logit_ids: Int[Tensor, " k"], threshold: float = 0.0) -> list[Node]:
    """Embedding nodes, then per layer its error nodes and active latents (activation above
    ``threshold``), then the logit nodes (at the last position)."""
    return _layout(rm, logit_ids, threshold).nodes


# ---------------------------------------------------------------------------------------
# The engine.


class _Trace:
    """One forward pass of the local replacement model (batch 1), whose autograd graph every
    batch of targets reuses: the engine's way for a model :class:`_Transpose` does not cover.

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


class _Factored:
    """A batch of ``k`` gradients over the residual stream, ``dense [k, pos, d]``, and, while
    that is cheaper to carry through attention, the same as factors: ``dense[k, q] = sum_r
    coef[k, r, q] basis[k, r]`` summed over ``parts`` (``(basis [k, R, d], coef [k, R, pos])``;
    None once only ``dense`` is kept). A seed is one direction at one position; each
    attention layer it crosses mixes positions but multiplies its directions only by the
    number of heads, so while they are fewer than the positions the factors are smaller than ``dense``."""

    def __init__(self, dense: Tensor, parts: list[tuple[Tensor, Tensor]] | None):
        self.dense, self.parts = dense, parts

    @property
    def directions(self) -> int:
        """``R`` summed over the parts."""
        return sum(basis.shape[1] for basis, _ in self.parts or [])


class _Transpose:
    """The transpose of the frozen replacement model's map from its write points to its read
    points, written out by hand (no autograd): with attention patterns and norm scales
    frozen and the MLPs replaced by leaves, the map is linear, and each block's transpose is
    ``g -> g + LN1^T(sum_h A_h^T g W_O^h^T W_V^h^T)``, where a norm's transpose multiplies by
    its weight, centres (LayerNorm) and divides by its frozen scale; the weight and the
    centring are folded into ``W_V^T`` once. Seeds stay factored (:class:`_Factored`) while
    that costs less than dense, so the first attention layer a seed crosses costs a few
    vector-matrix products rather than a ``pos``-times larger one.

    Used where the model is a plain pre-norm transformer (LayerNorm or RMSNorm, with or
    without weights, or none), the dictionaries read ``ln2.hook_normalized`` or
    ``hook_resid_mid`` and write ``hook_mlp_out`` (:meth:`supports`); otherwise
    :class:`_Trace`'s autograd does the same."""

    def __init__(self, rm: LocalReplacement):
        model, cfg, frozen = rm.model, rm.model.cfg, rm.frozen
        self.n_layers, self.n_pos = cfg.n_layers, rm.n_pos
        self.center = cfg.normalization_type in ("LN", "LNPre")
        norms = cfg.normalization_type is not None
        dtype = model.blocks[0].attn.W_O.dtype

        def inverse_scale(name: str) -> Tensor:
            return (1 / frozen[name][0, :, 0]).to(dtype) if norms else torch.ones(rm.n_pos, dtype=dtype, device=rm.embed.device)

        def weight(norm: Any) -> Tensor | None:
            return norm.w.detach() if cfg.normalization_type in ("LN", "RMS") else None

        self.layers = []
        for layer, block in enumerate(model.blocks):
            W_O, W_V = block.attn.W_O.detach(), block.attn.W_V.detach()  # [H, dh, d], [H, d, dh]
            self.layers.append(dict(
                W_O=W_O.flatten(0, 1), W_Vt=self._norm_t(W_V.transpose(1, 2), weight(block.ln1)),  # LN1^T folded in
                pattern=frozen[f"blocks.{layer}.attn.hook_pattern"][0], inv1=inverse_scale(f"blocks.{layer}.ln1.hook_scale"),
                read=(None, inverse_scale(f"blocks.{layer}.ln2.hook_scale"))
                if rm.dictionary.hook_in_at(layer).endswith("ln2.hook_normalized") else None))
        self.final = (weight(model.ln_final), inverse_scale("ln_final.hook_scale")) if hasattr(model, "ln_final") else None
        n_heads, d_head, d_model = self.layers[0]["W_Vt"].shape
        # multiply-adds per row of one attention transpose: per factored direction, and dense
        self.cost_factored = 2 * d_model * n_heads * d_head + (1 + n_heads) * rm.n_pos * d_model
        self.cost_dense = rm.n_pos * (2 * d_model * n_heads * d_head + n_heads * rm.n_pos * d_head + d_model)

    @staticmethod
    def supports(rm: LocalReplacement) -> bool:
        cfg, d = rm.model.cfg, rm.dictionary
        return (cfg.normalization_type in (None, "LN", "LNPre", "RMS", "RMSPre") and not cfg.parallel_attn_mlp
                and not getattr(cfg, "use_normalization_before_and_after", False) and not cfg.use_split_qkv_input
                and hasattr(rm.model, "ln_final") == (cfg.normalization_type is not None)
                and all(type(b.attn).__name__ == "Attention" for b in rm.model.blocks)
                and all(d.hook_in_at(L) in (f"blocks.{L}.ln2.hook_normalized", f"blocks.{L}.hook_resid_mid")
                        and d.hook_out_at(L) == f"blocks.{L}.hook_mlp_out" for L in range(cfg.n_layers)))

    def _norm_t(self, x: Tensor, w: Tensor | None) -> Tensor:
        """A norm's transpose without its per-position scale: ``P(x * w)`` (``P`` centres)."""
        x = x * w if w is not None else x
        return x - x.mean(-1, keepdim=True) if self.center else x

    def _seeds(self, basis: Tensor, coef: Tensor, rows: Tensor, pos: Tensor, vec: Tensor,
               norm: tuple[Tensor | None, Tensor] | None) -> None:
        """Write into the seeds' factors ``basis [k, 1, d]``, ``coef [k, 1, pos]`` the seeds ``vec``
        of ``rows`` at positions ``pos``, taken back through the read point's norm (``norm``:
        its weight and inverse scales; None: no norm)."""
        basis[rows, 0] = self._norm_t(vec.to(basis.dtype), norm[0]) if norm is not None else vec.to(basis.dtype)
        coef[rows, 0, pos] = norm[1][pos] if norm is not None else 1.0

    def _attention_t(self, layer: int, g: _Factored) -> _Factored:
        """The gradient at layer ``layer``'s residual input, from ``g`` at its attention output."""
        p = self.layers[layer]
        pattern, W_O, W_Vt, inv1 = p["pattern"], p["W_O"], p["W_Vt"], p["inv1"]
        n_heads, d_head = W_Vt.shape[0], W_Vt.shape[1]
        if g.parts is None or g.directions * self.cost_factored >= self.cost_dense:
            gz = (g.dense @ W_O.T).unflatten(-1, (n_heads, d_head))  # [k, q, h, e]
            gv = torch.einsum("kqhe,hqK->khKe", gz, pattern)
            return _Factored(torch.einsum("khKe,hed->kKd", gv, W_Vt).mul_(inv1[:, None]).add_(g.dense), None)
        parts, dense = list(g.parts), g.dense
        for basis, coef in g.parts:
            y = (basis @ W_O.T).unflatten(-1, (n_heads, d_head))  # [k, R, h, e]
            new_basis = torch.einsum("krhe,hed->krhd", y, W_Vt).flatten(1, 2)
            new_coef = (torch.einsum("krq,hqK->krhK", coef, pattern) * inv1).flatten(1, 2)
            dense = torch.baddbmm(dense, new_coef.transpose(1, 2), new_basis)
            parts.append((new_basis, new_coef))
        return _Factored(dense, parts)

    def grads(self, layers: Int[Tensor, " k"], pos: Int[Tensor, " k"], vec: Float[Tensor, "k d"],
              upstream: list[str]) -> dict[str, Tensor]:
        """Each seed's gradient at the write points ``upstream`` (``embed``, ``mlp.L``), ``[k, pos, d]``:
        row ``r`` seeds ``vec[r]`` at read point ``layers[r]`` (a layer's MLP input, or
        ``n_layers``: the final norm's output), position ``pos[r]``. Seeds enter before any
        attention layer is crossed (at most at the last layer's MLP input and the final norm,
        between which the residual stream is the identity), so they share one direction per row."""
        k, d = vec.shape
        dtype = self.layers[0]["W_O"].dtype
        basis = torch.zeros(k, 1, d, dtype=dtype, device=vec.device)
        coef = torch.zeros(k, 1, self.n_pos, dtype=dtype, device=vec.device)
        top, bottom = int(layers.max()), int(layers.min())
        assert bottom >= min(top, self.n_layers - 1), "seeds enter before any attention layer is crossed"
        out: dict[str, Tensor] = {}
        g = None
        for level in range(top, -1, -1):
            rows = (layers == level).nonzero().flatten()
            if len(rows):
                self._seeds(basis, coef, rows, pos[rows], vec[rows], self.final if level == self.n_layers else self.layers[level]["read"])
                g = _Factored(coef.transpose(1, 2) @ basis, [(basis, coef)])
            assert g is not None
            if level == self.n_layers:  # the last MLP's output feeds the final norm directly
                out[f"mlp.{level - 1}"] = g.dense
                continue
            g = self._attention_t(level, g)
            out["embed" if level == 0 else f"mlp.{level - 1}"] = g.dense
        return {name: out[name] for name in upstream}


@dataclass
class _Readout:
    """What the sources wrote at each write point (``"embed"``: ``blocks.0.hook_resid_pre``;
    ``"mlp.t"``: layer ``t``'s MLP output), packed per position: ``written[point][p, slot]``
    is one source's vector and ``cols[point]`` the graph column of each flat ``(position,
    slot)``; the unused slots are zero padding, with the column one past the last node. An
    embedding node writes its ``d_model`` vector (``rm.embed``) at ``"embed"``, layer ``t``'s
    error node its vector (``rm.errors``) at ``"mlp.t"``, and an active latent of layer ``s``
    writes ``a_i W_dec[s, t][i]`` at every ``"mlp.t"`` it reaches (its edge sums them)."""

    written: dict[str, Float[Tensor, "pos slot d_model"]]
    cols: dict[str, Int[Tensor, " pos_slot"]]


def _readout(rm: LocalReplacement, layout: _Layout) -> _Readout:
    """The readout of ``layout``'s nodes."""
    device, n_nodes = rm.embed.device, len(layout.nodes)
    # per write point: (graph columns, positions, vectors) of what each source wrote there
    sources = {"embed": [(layout.embed, torch.arange(rm.n_pos), rm.embed)]}
    for t in range(rm.dictionary.n_layers):
        sources[f"mlp.{t}"] = [(layout.errors[t], torch.arange(rm.n_pos), rm.errors[t])]
        for s in rm.dictionary.sources(t):
            cols, pos, idx = layout.latents[s]
            p, i = pos.to(device), idx.to(device)
            decoder = rm.dictionary.decoder(s, t)[i].to(rm.embed.dtype)
            sources[f"mlp.{t}"].append((cols, pos, rm.acts[s][p, i, None] * decoder))  # a_i W_dec[s, t][i]
    written, col_of = {}, {}
    for point, parts in sources.items():
        cols, pos, vectors = (torch.cat(x) for x in zip(*parts))
        order = torch.argsort(pos, stable=True)
        cols, pos, vectors = cols[order], pos[order], vectors[order.to(device)]
        slot = torch.arange(len(pos)) - torch.searchsorted(pos, pos)  # rank among the sources at the same position
        width = int(slot.max()) + 1 if len(pos) else 0
        packed = torch.zeros(rm.n_pos, width, rm.embed.shape[-1], dtype=rm.embed.dtype, device=device)
        packed[pos.to(device), slot.to(device)] = vectors
        flat = torch.full((rm.n_pos * width,), n_nodes, dtype=torch.long)
        flat[pos * width + slot] = cols
        written[point], col_of[point] = packed, flat.to(device)
    return _Readout(written, col_of)


class _Engine:
    """Rows of the adjacency, ``batch`` targets per backward pass.

    A target's seed is the gradient of its value at its read point: a latent ``(L, p, i)``
    has ``d pre_i / d x_L[p] = W_enc[:, i]`` at transcoder ``L``'s input, a logit ``t`` the
    centred unembedding column at the final norm's output, last position. One backward
    pass of the batch's seeds (:class:`_Transpose`, or autograd on a :class:`_Trace`,
    vectorised with ``is_grads_batched``) gives each target's gradient at every write point
    before its read point; an edge is that gradient dotted with what the source wrote there."""

    def __init__(self, rm: LocalReplacement, layout: _Layout, batch: int, traced: bool):
        self.rm, self.nodes, self.batch = rm, layout.nodes, batch
        self.readout = _readout(rm, layout)
        # the hand-written transpose where the model allows it (``traced`` False), else autograd on a traced forward pass
        self.transpose = None if traced else _Transpose(rm)
        self.trace = _Trace(rm) if traced else None
        # the targets (latents by layer, then logits): graph column, read point, position, seed vector
        n_layers = rm.model.cfg.n_layers
        latents = list(layout.latents.items())
        self.target_cols = torch.cat([cols for _, (cols, _, _) in latents] + [layout.logits])
        self.seed_layer = torch.cat([torch.full((len(cols),), L) for L, (cols, _, _) in latents]
                                    + [torch.full((len(layout.logits),), n_layers)])
        self.seed_pos = torch.cat([pos for _, (_, pos, _) in latents] + [torch.full((len(layout.logits),), rm.n_pos - 1)])
        self.seed_vec = torch.cat([rm.dictionary.encoder(L)[:, idx.to(rm.embed.device)].T for L, (_, _, idx) in latents]
                                  + [centred_unembedding(rm.model, layout.logit_ids.to(rm.embed.device)).T]).to(rm.embed.dtype)
        self.seed_row = torch.full((len(self.nodes),), -1, dtype=torch.long)
        self.seed_row[self.target_cols] = torch.arange(len(self.target_cols))

    def rows(self, targets: Sequence[int]) -> Iterator[tuple[list[int], Float[Tensor, "k n_nodes"]]]:
        """``(targets, their rows)`` per backward pass, the rows on the CPU: targets grouped by
        where their seeds enter (latents by layer, then logits), ``batch`` at a time. The
        logits' seeds enter just after the last layer's latents', so they share its last
        pass when there is room."""
        layer_of = self.seed_layer[self.seed_row[torch.as_tensor(list(targets), dtype=torch.long)]].tolist()
        by_layer: dict[int, list[int]] = {}
        for j, layer in zip(targets, layer_of):
            by_layer.setdefault(layer, []).append(j)
        chunks = [(layer, group[start: start + self.batch]) for layer, group in sorted(by_layer.items())
                  for start in range(0, len(group), self.batch)]
        last_layer, logits = self.rm.model.cfg.n_layers - 1, self.rm.model.cfg.n_layers
        if (len(chunks) > 1 and chunks[-1][0] == logits and chunks[-2][0] == last_layer
                and len(chunks[-2][1]) + len(chunks[-1][1]) <= self.batch):
            chunks[-2:] = [(last_layer, chunks[-2][1] + chunks[-1][1])]
        for _, chunk in chunks:
            yield chunk, self._rows(chunk)

    def _rows(self, chunk: list[int]) -> Float[Tensor, "k n_nodes"]:
        """One backward pass from the seeds of ``chunk``, at every read point they use."""
        which = self.seed_row[torch.tensor(chunk, dtype=torch.long)]
        layer = self.seed_layer[which]
        top = int(layer.max())
        upstream = ["embed"] + [f"mlp.{L}" for L in range(top)]  # what is written before the last read point
        if self.transpose is not None:
            return self._edges(self.transpose.grads(layer, self.seed_pos[which], self.seed_vec[which], upstream), len(chunk)).cpu()
        assert self.trace is not None
        points = sorted(set(layer.tolist()))
        reads, seeds = [self.trace.reads[point] for point in points], []
        for point, read in zip(points, reads):
            rows = (layer == point).nonzero().flatten()
            seed = torch.zeros(len(chunk), *read.shape, dtype=read.dtype, device=read.device)  # [k, 1, pos, d_model]
            seed[rows, 0, self.seed_pos[which[rows]]] = self.seed_vec[which[rows]]
            seeds.append(seed)
        traced = torch.autograd.grad(reads, [self.trace.writes[w] for w in upstream], seeds,
                                     retain_graph=True, allow_unused=True, is_grads_batched=True)
        return self._edges({w: g[:, 0] if g is not None else None for w, g in zip(upstream, traced)}, len(chunk)).cpu()

    def _edges(self, grads: Mapping[str, Tensor | None], k: int) -> Float[Tensor, "k n_nodes"]:
        """``value . gradient`` of every source into each of the ``k`` targets: per write point,
        each target's gradient dotted with every vector written there."""
        rm, ro = self.rm, self.readout
        out = torch.zeros(k, len(self.nodes) + 1, dtype=rm.embed.dtype, device=rm.embed.device)  # + the padding's column
        assert grads.get("embed") is not None, "every target depends on the embeddings"
        for point, grad in grads.items():
            if grad is not None:  # None: written after every read point of the pass
                out.index_add_(1, ro.cols[point], torch.einsum("kpd,pwd->kpw", grad, ro.written[point]).flatten(1))
        return out[:, :-1]


def build_graph(rm: LocalReplacement, logit_ids: Int[Tensor, " k"], batch: int = 256, threshold: float = 0.0,
                max_feature_nodes: int | None = None) -> Graph:
    """The attribution graph of the prompt: nodes from :func:`graph_nodes` (latents active
    above ``threshold``, the logits ``logit_ids`` at the last position), and a row of the
    adjacency for every latent and logit.

    ``batch`` targets at a time, one backward pass from their seeds (:class:`_Engine`):
    nothing ``d_sae``- or ``d_vocab``-wide is made per target, and nothing is left in any
    ``.grad`` (the hand-written transpose uses no autograd; the traced pass freezes the
    parameters for its duration).

    ``max_feature_nodes`` caps the latents that get a row, chosen by running influence as
    circuit-tracer chooses them: the logits' rows first; then, repeatedly, the ``batch``
    (at most the cap's remainder) latents not yet visited with the largest influence on the
    logits in the graph of the rows computed so far (:func:`influence` over those rows:
    a latent's share of the logits' input, through every visited target), ties in node
    order, until the cap is reached. The graph keeps only the visited latents: an unvisited
    latent's contributions to them are left out, like a bias, and every edge kept stays
    exact. Without a cap (or a cap at least the number of active latents) every active
    latent is a node."""
    layout = _layout(rm, logit_ids, threshold)
    nodes, latents, logits = layout.nodes, layout.latent_columns, layout.logits.tolist()
    activation = _activation(rm, layout)
    tokens = rm.model.to_str_tokens(rm.tokens[0])
    # the hand-written transpose needs no autograd; the traced one, with the parameters frozen
    traced = not _Transpose.supports(rm)
    with frozen_parameters(rm.model, rm.dictionary) if traced else nullcontext(), torch.set_grad_enabled(traced):
        engine = _Engine(rm, layout, batch, traced)
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


def _activation(rm: LocalReplacement, layout: _Layout) -> Float[Tensor, " n_nodes"]:
    """Each latent's activation, each logit's probability, 0 for embeddings and error nodes."""
    activation = torch.zeros(len(layout.nodes), dtype=rm.embed.dtype)
    for layer, (cols, pos, idx) in layout.latents.items():
        activation[cols] = rm.acts[layer][pos.to(rm.embed.device), idx.to(rm.embed.device)].cpu()
    activation[layout.logits] = rm.logits[-1].double().softmax(-1)[layout.logit_ids.to(rm.embed.device)].to(rm.embed.dtype).cpu()
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
