"""Attribution graphs on a local replacement model (introduced in chapter 05).

For one prompt, the **local replacement model** replaces every MLP by its transcoder and
freezes everything else that is nonlinear at its value on the prompt:

* every normalisation scale ``s(x)`` (``ln1``, ``ln2``, ``ln_final``: their ``hook_scale``
  returns the cached value), so a norm becomes the linear map ``x -> (P x) / s * w + b``;
* every attention pattern (``hook_pattern`` returns the cached value), so attention becomes
  a linear map of the values;
* every transcoder's latents and every *error node* ``e = MLP(x) - decode(f)`` become
  *leaves*: inputs of the model whose values are those on the prompt. Layer ``L``'s MLP
  output is ``f_L W_dec + b_dec + e_L``.

The token-plus-position embedding at each position is a leaf as well (``blocks.0.hook_resid_pre``).
With every leaf at its value the replacement model reproduces the model's logits exactly,
and every *target* (a latent's pre-activation ``n_L(x) . W_enc[:, i] + b_enc[i]``, or a
mean-centred logit) is an affine function of the leaves:

    target_t = sum_s A[t, s] + c_t,    A[t, s] = value_s . d target_t / d leaf_s,

where ``value_s`` is the source's activation (a latent: one number; an error or embedding
node: a ``d_model`` vector, dotted with the gradient). ``A`` is the **adjacency matrix**
(rows targets, columns sources) and ``c_t`` the biases' share, which no node owns. Because
the latents are leaves, ``A[t, s]`` is the *direct* effect of ``s`` on ``t`` (through the
residual stream and frozen attention, not through other latents), and removing ``s`` (its
leaf set to zero) moves ``target_t`` by exactly ``A[t, s]``: :func:`edge_errors` checks it.

One backward pass gives one row of ``A``. :func:`build_graph` runs many rows at once: the
prompt is repeated ``rows`` times, row ``r`` seeds target ``r``, and since rows do not mix,
the gradient in row ``r`` is target ``r``'s.

Nodes are ``utils.nodes.Node``: ``embed`` (index: the token id), ``transcoder`` (a latent id,
or ``"error"``), ``logit`` (the token id, at layer ``n_layers``).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import einops
import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.nodes import ERROR, Node, transcoder_layer

Hook = tuple[str, Callable[..., Tensor]]

# ---------------------------------------------------------------------------------------
# Freezing and the replacement model.


def frozen_hook_names(model: HookedSAETransformer) -> list[str]:
    """Every hook whose value the local replacement model freezes: each layer's ``ln1`` and
    ``ln2`` scales and attention pattern, and the final norm's scale (LayerNorm or RMSNorm;
    a model without norms has no scales to freeze)."""
    names = []
    norms = model.cfg.normalization_type is not None
    for layer in range(model.cfg.n_layers):
        if norms:
            names += [f"blocks.{layer}.ln1.hook_scale", f"blocks.{layer}.ln2.hook_scale"]
        names.append(f"blocks.{layer}.attn.hook_pattern")
    return names + (["ln_final.hook_scale"] if norms else [])


def freezing_hooks(frozen: dict[str, Tensor]) -> list[Hook]:
    """Hooks that replace each activation named in ``frozen`` by its frozen value (batch 1,
    broadcast to any batch), detached: no gradient flows into what computed it."""

    def hook(x: Tensor, hook: Any) -> Tensor:
        return frozen[hook.name].detach().expand_as(x)

    return [(name, hook) for name in frozen]


@dataclass
class LocalReplacement:
    """Everything the local replacement model of one prompt holds fixed.

    tokens: ``[1, pos]``; frozen: cached scales and patterns (batch 1); embed: the residual
    stream entering layer 0 ``[pos, d_model]``; acts / errors: each transcoder's latents
    ``[pos, d_sae]`` and error node ``[pos, d_model]``, keyed by layer; logits: the model's
    ``[pos, d_vocab]``."""

    model: HookedSAETransformer
    transcoders: dict[int, SAE]
    tokens: Int[Tensor, "1 pos"]
    frozen: dict[str, Tensor]
    embed: Float[Tensor, "pos d_model"]
    acts: dict[int, Float[Tensor, "pos d_sae"]]
    errors: dict[int, Float[Tensor, "pos d_model"]]
    logits: Float[Tensor, "pos d_vocab"]

    @property
    def n_pos(self) -> int:
        return self.tokens.shape[1]

    def leaves(self, rows: int) -> dict[str, Tensor]:
        """Fresh leaves (``requires_grad``) holding the prompt's values, repeated ``rows`` times:
        ``"embed"``, ``"latents.L"``, ``"error.L"``."""
        values = {"embed": self.embed} | {f"latents.{L}": a for L, a in self.acts.items()} | {
            f"error.{L}": e for L, e in self.errors.items()}
        return {name: v.detach().expand(rows, *v.shape).clone().requires_grad_(True) for name, v in values.items()}


def local_replacement(model: HookedSAETransformer, transcoders: Sequence[SAE], tokens: Int[Tensor, "1 pos"]) -> LocalReplacement:
    """Run the model once on ``tokens`` (one prompt) and keep what the replacement model freezes."""
    if tokens.ndim != 2 or tokens.shape[0] != 1:
        raise ValueError(f"a local replacement model is built for one prompt: expected tokens [1, pos], got {tuple(tokens.shape)}")
    by_layer = {transcoder_layer(tc): tc for tc in transcoders}
    if sorted(by_layer) != list(range(model.cfg.n_layers)):
        raise ValueError(f"one transcoder per layer is needed (layers 0..{model.cfg.n_layers - 1}), got layers {sorted(by_layer)}")
    names = frozen_hook_names(model) + ["blocks.0.hook_resid_pre"] + [
        f"blocks.{L}.ln2.hook_normalized" for L in by_layer] + [f"blocks.{L}.hook_mlp_out" for L in by_layer]
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=names)
        acts = {L: tc.encode(cache[f"blocks.{L}.ln2.hook_normalized"])[0] for L, tc in by_layer.items()}
        errors = {L: cache[f"blocks.{L}.hook_mlp_out"][0] - tc.decode(acts[L]) for L, tc in by_layer.items()}
    return LocalReplacement(model, by_layer, tokens, {n: cache[n] for n in frozen_hook_names(model)},
                            cache["blocks.0.hook_resid_pre"][0], acts, errors, logits[0])


def replacement_forward(rm: LocalReplacement, leaves: dict[str, Tensor],
                        stop_at_layer: int | None = None) -> tuple[dict[int, Tensor], Tensor | None]:
    """Run the replacement model with ``leaves`` (from :meth:`LocalReplacement.leaves`, maybe
    edited). Returns each layer's transcoder pre-activations ``[rows, pos, d_sae]`` (read
    from the frozen-scale ``ln2.hook_normalized``) and the logits ``[rows, pos, d_vocab]``
    (None with ``stop_at_layer``: only blocks before it run, which saves the unembedding
    when only latents are targets)."""
    rows = leaves["embed"].shape[0]
    pre: dict[int, Tensor] = {}

    def embed(x: Tensor, hook: Any) -> Tensor:
        return leaves["embed"]

    def read(layer: int) -> Callable[..., None]:
        def hook(x: Tensor, hook: Any) -> None:
            tc = rm.transcoders[layer]
            pre[layer] = x @ tc.W_enc + tc.b_enc
        return hook

    def write(layer: int) -> Callable[..., Tensor]:
        def hook(x: Tensor, hook: Any) -> Tensor:
            return rm.transcoders[layer].decode(leaves[f"latents.{layer}"]) + leaves[f"error.{layer}"]
        return hook

    hooks = freezing_hooks(rm.frozen) + [("blocks.0.hook_resid_pre", embed)]
    for layer in rm.transcoders:
        hooks += [(f"blocks.{layer}.ln2.hook_normalized", read(layer)), (f"blocks.{layer}.hook_mlp_out", write(layer))]
    with rm.model.hooks(fwd_hooks=hooks):
        out = rm.model(rm.tokens.expand(rows, -1), stop_at_layer=stop_at_layer)
    return pre, out if stop_at_layer is None else None


# ---------------------------------------------------------------------------------------
# Salient logits.


def salient_logit_ids(logits: Float[Tensor, " d_vocab"], coverage: float = 0.95, max_n: int = 10) -> tuple[Int[Tensor, " k"], Float[Tensor, " k"]]:
    """The fewest top tokens whose probabilities sum to at least ``coverage`` (at most
    ``max_n``), and their probabilities: chapter 05's ``salient_logits`` exercise."""
    probs = logits.double().softmax(-1)
    top = probs.topk(max_n)
    k = int((top.values.cumsum(0) < coverage).sum().item()) + 1
    return top.indices[: min(k, max_n)], top.values[: min(k, max_n)].to(logits.dtype)


def centred_unembedding(model: HookedSAETransformer, ids: Int[Tensor, " k"]) -> Float[Tensor, "d_model k"]:
    """``W_U[:, t] - mean_t' W_U[:, t']``: the direction a logit *relative to the mean logit* reads."""
    return model.W_U[:, ids] - model.W_U.mean(1, keepdim=True)


# ---------------------------------------------------------------------------------------
# The graph.


@dataclass
class Graph:
    """An attribution graph: ``nodes`` (sources then targets in forward order: embeddings,
    per layer its error nodes then its active latents, logits last), ``adjacency[t, s]`` the
    direct effect of node ``s`` on node ``t`` (zero for pairs that cannot interact), each
    node's ``activation`` (a latent's activation, a logit's probability, else 0) and the
    prompt's string tokens."""

    nodes: list[Node]
    adjacency: Float[Tensor, "n_nodes n_nodes"]
    activation: Float[Tensor, " n_nodes"]
    logit_probs: Float[Tensor, " n_logits"]
    tokens: list[str]
    labels: dict[Node, str] = field(default_factory=dict)

    def index(self, node: Node) -> int:
        return self.nodes.index(node)

    def mask(self, kind: str, error: bool | None = None) -> Bool[Tensor, " n_nodes"]:
        """Nodes of ``kind`` (``error`` True / False picks error nodes / latents only)."""
        return torch.tensor([n.kind == kind and (error is None or n.is_error == error) for n in self.nodes])

    @property
    def logit_weights(self) -> Float[Tensor, " n_nodes"]:
        """Each logit node's probability, zero elsewhere: how much each output counts."""
        w = torch.zeros(len(self.nodes), dtype=self.adjacency.dtype)
        w[self.mask("logit")] = self.logit_probs.to(w.dtype)
        return w


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
    return Graph(nodes, adjacency, activation, probs, rm.model.to_str_tokens(rm.tokens[0]))


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


# ---------------------------------------------------------------------------------------
# Influence, pruning and scores.


def normalized_adjacency(adjacency: Float[Tensor, "n n"]) -> Float[Tensor, "n n"]:
    """``|A|`` with each row (target) divided by its sum: the share of a target's direct
    input each source supplies. Rows without input (sources only) stay zero."""
    a = adjacency.abs()
    return a / a.sum(1, keepdim=True).clamp(min=torch.finfo(a.dtype).tiny)


def influence(normalized: Float[Tensor, "n n"], weights: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
    """``w (Â + Â² + Â³ + ...)``: the summed share of ``weights`` (on the logits) that reaches
    each node along every path. The graph is acyclic, so ``Â`` is nilpotent and the Neumann
    series ends after at most ``n`` terms (in practice the number of layers plus two)."""
    total = torch.zeros_like(weights)
    term = weights @ normalized
    while term.abs().sum() > 0:
        total = total + term
        term = term @ normalized
    return total


def cumulative_mask(scores: Float[Tensor, " n"], threshold: float) -> Bool[Tensor, " n"]:
    """The highest-scoring entries whose scores add up to ``threshold`` of the total (the
    entry that crosses it included): chapter 05's pruning rule."""
    order = scores.argsort(descending=True)
    cum = scores[order].cumsum(0) / scores.sum().clamp(min=torch.finfo(scores.dtype).tiny)
    keep = torch.zeros_like(scores, dtype=torch.bool)
    n_keep = int((cum < threshold).sum().item()) + 1
    keep[order[: min(n_keep, len(scores))]] = True
    return keep & (scores > 0)


@dataclass
class Pruned:
    """A pruned graph: which nodes and edges survive, and its scores."""

    nodes: Bool[Tensor, " n_nodes"]
    edges: Bool[Tensor, "n_nodes n_nodes"]
    node_influence: Float[Tensor, " n_nodes"]
    scores: dict[str, float]


def prune(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruned:
    """Keep the latents carrying ``node_threshold`` of the influence on the logits (every
    embedding, error and logit node is kept: they are the graph's boundary), then the edges
    among kept nodes carrying ``edge_threshold`` of the edge influence (an edge's: its
    normalised weight times its target's influence plus logit weight), then drop nodes left
    without a path to a logit."""
    norm = normalized_adjacency(graph.adjacency)
    w = graph.logit_weights
    node_inf = influence(norm, w)
    latent = graph.mask("transcoder", error=False)
    keep = ~latent | (cumulative_mask(torch.where(latent, node_inf, 0.0), node_threshold) & latent)
    edge_score = norm * (node_inf + w)[:, None] * keep[:, None] * keep[None, :]
    edges = cumulative_mask(edge_score.flatten(), edge_threshold).view_as(edge_score)
    keep = keep & _reaches_logits(edges, graph.mask("logit"))
    edges = edges & keep[:, None] & keep[None, :]
    return Pruned(keep, edges, node_inf, graph_scores(graph, edges))


def _reaches_logits(edges: Bool[Tensor, "n n"], logits: Bool[Tensor, " n"]) -> Bool[Tensor, " n"]:
    """Nodes with a path of kept edges to a logit node (logit nodes included)."""
    reach = logits.clone()
    while True:
        grown = reach | (edges & reach[:, None]).any(0)
        if torch.equal(grown, reach):
            return reach
        reach = grown


def graph_scores(graph: Graph, edges: Bool[Tensor, "n n"] | None = None) -> dict[str, float]:
    """Replacement and completeness scores of the graph restricted to ``edges`` (all edges if None).

    With ``Â`` the normalised adjacency of the *full* graph, masked to the kept edges, and
    ``w_M`` the logits' influence through kept edges (:func:`influence`):

    * replacement = ``sum over embedding nodes of w_M``: the share of the logits' influence
      that reaches the tokens along kept edges, rather than ending at error nodes or being
      pruned away (1 for a perfect, unpruned replacement);
    * completeness = ``sum_t u_t sum_{s not error} Â[t, s] / sum_t u_t`` with
      ``u = w_M + logit weights`` over the targets: the influence-weighted share of each
      node's input explained by kept non-error nodes."""
    norm = normalized_adjacency(graph.adjacency)
    if edges is not None:
        norm = norm * edges
    w = graph.logit_weights
    w_m = influence(norm, w)
    u = (w_m + w) * (graph.adjacency.abs().sum(1) > 0)
    non_error = ~graph.mask("transcoder", error=True)
    explained = (norm * non_error[None, :]).sum(1)
    return {"replacement": float(w_m[graph.mask("embed")].sum() / w.sum()),
            "completeness": float((u * explained).sum() / u.sum())}


# ---------------------------------------------------------------------------------------
# Paths, supernodes, export.


def paths_between(edges: Bool[Tensor, "n n"], source: int, target: int) -> list[list[int]]:
    """Every path of kept edges from node ``source`` to node ``target`` (edges[t, s] is s -> t)."""
    found: list[list[int]] = []

    def walk(path: list[int]) -> None:
        here = path[-1]
        if here == target:
            found.append(path)
            return
        for nxt in edges[:, here].nonzero().flatten().tolist():
            walk(path + [nxt])

    walk([source])
    return found


def supernode_adjacency(graph: Graph, groups: dict[str, list[Node]]) -> tuple[list[str], Float[Tensor, "g g"]]:
    """Merge hand-picked groups of nodes into supernodes: the edge from group ``a`` to group
    ``b`` is the sum of the edges from ``a``'s members to ``b``'s (exact, since targets are
    additive in their sources). Returns the group names and their ``[target, source]`` weights."""
    names = list(groups)
    member = torch.zeros(len(names), len(graph.nodes), dtype=graph.adjacency.dtype)
    for g, name in enumerate(names):
        for node in groups[name]:
            member[g, graph.index(node)] = 1.0
    return names, member @ graph.adjacency @ member.T


def to_json(graph: Graph, pruned: Pruned | None, path: str | Path | None = None) -> dict[str, Any]:
    """The graph as JSON (nodes with kind, layer, position, index, label, activation and
    influence; edges as a sparse list ``{source, target, weight}``), restricted to the pruned
    graph if given; written to ``path`` if given."""
    keep = pruned.nodes if pruned is not None else torch.ones(len(graph.nodes), dtype=torch.bool)
    edges = pruned.edges if pruned is not None else graph.adjacency != 0
    infl = pruned.node_influence if pruned is not None else influence(normalized_adjacency(graph.adjacency), graph.logit_weights)
    data = {
        "prompt": graph.tokens,
        "nodes": [{"id": str(n), "kind": n.kind, "layer": n.layer, "pos": n.pos, "index": n.index,
                   "label": graph.labels.get(n, ""), "activation": round(float(graph.activation[j]), 6),
                   "influence": round(float(infl[j]), 6)}
                  for j, n in enumerate(graph.nodes) if keep[j]],
        "edges": [{"source": str(graph.nodes[s]), "target": str(graph.nodes[t]), "weight": round(float(graph.adjacency[t, s]), 6)}
                  for t, s in (edges & (graph.adjacency != 0)).nonzero().tolist()],
    }
    if path is not None:
        Path(path).write_text(json.dumps(data, indent=1))
    return data


# ---------------------------------------------------------------------------------------
# Interventions on the real model.


def intervene(model: HookedSAETransformer, transcoders: Sequence[SAE], tokens: Int[Tensor, "batch pos"],
              edits: Sequence[tuple[Node, float]], frozen: dict[str, Tensor] | None = None) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits with transcoder latents set to new values: for each ``(Node("transcoder", L,
    pos, i), value)`` the MLP output of layer ``L`` at ``pos`` gains ``(value - f_i) W_dec[i]``,
    where ``f_i`` is the latent's activation *on the current input* (so the MLP's own error
    term is kept, and every later layer responds). With ``frozen`` (a replacement model's
    frozen scales and patterns, batch 1) attention and norms stay as on the original prompt;
    without, they are free."""
    by_layer = {transcoder_layer(tc): tc for tc in transcoders}
    wanted: dict[int, list[tuple[int, int, float]]] = {}
    for node, value in edits:
        if node.kind != "transcoder" or node.is_error:
            raise ValueError(f"only transcoder latents can be set, got {node}")
        wanted.setdefault(node.layer, []).append((node.pos, int(node.index), float(value)))
    inputs: dict[int, Tensor] = {}

    def keep(layer: int) -> Callable[..., None]:
        def hook(x: Tensor, hook: Any) -> None:
            inputs[layer] = x
        return hook

    def edit(layer: int) -> Callable[..., Tensor]:
        def hook(out: Tensor, hook: Any) -> Tensor:
            tc = by_layer[layer]
            acts = tc.encode(inputs[layer])
            new = acts.clone()
            for pos, i, value in wanted[layer]:
                new[:, pos, i] = value
            return out + (new - acts) @ tc.W_dec
        return hook

    hooks = freezing_hooks(frozen) if frozen is not None else []
    for layer in wanted:
        hooks += [(f"blocks.{layer}.ln2.hook_normalized", keep(layer)), (f"blocks.{layer}.hook_mlp_out", edit(layer))]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        return model(tokens)


def swap_edits(donor: LocalReplacement, receiver: LocalReplacement, where: Sequence[tuple[int, int]],
               donor_where: Sequence[tuple[int, int]] | None = None) -> list[tuple[Node, float]]:
    """Edits that give ``receiver`` the donor's latents at each (layer, position) of ``where``
    (read from ``donor_where`` in the donor, the same places by default): every latent active
    in either prompt there takes the donor's value."""
    edits = []
    for (layer, pos), (d_layer, d_pos) in zip(where, donor_where or where):
        values = donor.acts[d_layer][d_pos]
        active = (values > 0) | (receiver.acts[layer][pos] > 0)
        edits += [(Node("transcoder", layer, pos, int(i)), float(values[i])) for i in active.nonzero().flatten()]
    return edits


def generate_with(model: HookedSAETransformer, transcoders: Sequence[SAE], tokens: Int[Tensor, "1 pos"],
                  edits: Sequence[tuple[Node, float]], n_new: int) -> list[str]:
    """Greedy continuation of ``tokens`` for ``n_new`` words with ``edits`` applied at every
    step (they name positions of the prompt, which stay put as the text grows)."""
    for _ in range(n_new):
        logits = intervene(model, transcoders, tokens, edits)
        tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return model.to_str_tokens(tokens[0])


# ---------------------------------------------------------------------------------------
# Reading and drawing a graph.

def node_label(bk: Any, node: Node) -> str:
    """A node's label for hovers and tables: a latent's entry in the explanation table (label,
    AUROC, precision, top contexts' words), or what the node is."""
    if node.kind == "embed":
        return f"token {bk.model.to_single_str_token(int(node.index))!r} (+ position {node.pos})"
    if node.kind == "logit":
        return f"logit {bk.model.to_single_str_token(int(node.index))!r} (minus the mean logit)"
    if node.is_error:
        return f"what transcoder {node.layer} misses at position {node.pos}"
    if bk.explanations is None:
        return f"transcoder {node.layer} latent {node.index}"
    row = bk.explanations.lookup(f"transcoder.{node.layer}", int(node.index))
    return (f"{row['label']} (AUROC {row['auroc']:.3g}, precision {row['precision']:.3g}); "
            f"promotes {', '.join(row['top_tokens'][:4])}")


def graph_figure(graph: Graph, pruned: Pruned, labels: dict[Node, str], title: str) -> Any:
    """The pruned graph drawn layer by position: embeddings at the bottom, each transcoder's
    error nodes and latents in its own row, the logits on top; an edge's width follows
    ``|weight|``, its colour the sign. Hover names each node and gives its label,
    activation and influence on the logits."""
    import plotly.graph_objects as go

    n_layers = max(n.layer for n in graph.nodes)
    kept = [j for j in range(len(graph.nodes)) if pruned.nodes[j]]
    xy: dict[int, tuple[float, float]] = {}
    slots: dict[tuple[float, int], int] = {}
    for j in kept:
        n = graph.nodes[j]
        row = 0.0 if n.kind == "embed" else n_layers + 1.0 if n.kind == "logit" else n.layer + (0.75 if n.is_error else 1.0)
        k = slots.get((row, n.pos), 0)
        slots[(row, n.pos)] = k + 1
        xy[j] = (n.pos + 0.12 * (k % 7) - 0.36, row + 0.1 * (k // 7))
    biggest = float(graph.adjacency[pruned.edges].abs().max()) if pruned.edges.any() else 1.0
    fig = go.Figure()
    for t, s in pruned.edges.nonzero().tolist():
        w = float(graph.adjacency[t, s])
        fig.add_trace(go.Scatter(x=[xy[s][0], xy[t][0]], y=[xy[s][1], xy[t][1]], mode="lines", hoverinfo="skip",
                                 line=dict(width=0.5 + 4 * abs(w) / biggest, color="#2166ac" if w > 0 else "#b2182b"),
                                 opacity=0.5, showlegend=False))
    for kind, colour in (("embed", "#999999"), ("transcoder", "#ff7f0e"), ("error", "#444444"), ("logit", "#2ca02c")):
        js = [j for j in kept if (graph.nodes[j].kind == kind and not graph.nodes[j].is_error)
              or (kind == "error" and graph.nodes[j].is_error)]
        hover = [f"{graph.nodes[j]} on {graph.tokens[graph.nodes[j].pos]!r}<br>{labels.get(graph.nodes[j], '')}<br>"
                 f"activation {float(graph.activation[j]):.3g}, influence {float(pruned.node_influence[j]):.3g}" for j in js]
        fig.add_trace(go.Scatter(x=[xy[j][0] for j in js], y=[xy[j][1] for j in js], mode="markers", name=kind,
                                 marker=dict(size=10, color=colour, symbol="square" if kind == "error" else "circle"),
                                 hovertext=hover, hoverinfo="text"))
    fig.update_layout(title=title, height=520, template="plotly_white", legend_title="node kind",
                      xaxis=dict(title="position (token)", tickvals=list(range(len(graph.tokens))),
                                 ticktext=[f"{p}: {w}" for p, w in enumerate(graph.tokens)]),
                      yaxis=dict(title="layer (embeddings 0, transcoder L at L + 1, logits on top)",
                                 tickvals=list(range(n_layers + 2)),
                                 ticktext=["embed"] + [f"transcoder {L}" for L in range(n_layers)] + ["logits"]))
    return fig
