"""The one graph type of the course: nodes, a weighted adjacency, and what each node carries.

Chapter 03's feature circuits (node effects on a metric, edge effects between consecutive
dictionaries) and chapter 05's attribution graphs (direct effects in a local replacement
model) are both a :class:`Graph`:

* ``nodes``: ``utils.nodes.Node`` ids, in a fixed order (an attribution graph's is the
  forward order: embeddings, then per layer its error nodes and latents, then the logits);
* ``adjacency[t, s]``: the weight of the edge from node ``s`` into node ``t`` (rows are
  targets, columns sources), zero where there is no edge;
* ``activation[j]``: a latent's activation, a logit node's probability, else 0;
* ``effect[j]``: a node's effect on a metric (chapter 03's node attribution), else 0;
* ``tokens``: the prompt's string tokens (empty when the graph spans several prompts);
* ``labels`` / ``hover``: short and long texts to draw, by node.

Groups of nodes merge into **supernodes** (:func:`group_nodes`): a supernode is a ``Node``
with a negative ``index`` (``-1`` for the first group, ``-2`` for the second ...), placed
at its latest member in forward order (:func:`is_supernode`).

Pruning and scores live beside it (``utils.graphs.pruning``), its exports in
``utils.graphs.export`` and its drawings in ``utils.graphs.view``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from utils.nodes import Node


@dataclass
class Graph:
    """Nodes, a ``[target, source]`` adjacency and per-node values (module docstring)."""

    nodes: list[Node]
    adjacency: Float[Tensor, "n_nodes n_nodes"]
    # Zeros when not given (``__post_init__``): after construction both are tensors.
    activation: Float[Tensor, " n_nodes"] = None  # type: ignore[assignment]
    effect: Float[Tensor, " n_nodes"] = None  # type: ignore[assignment]
    tokens: list[str] = field(default_factory=list)
    labels: dict[Node, str] = field(default_factory=dict)
    hover: dict[Node, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.nodes)
        if tuple(self.adjacency.shape) != (n, n):
            raise ValueError(f"adjacency must be [n_nodes, n_nodes] = [{n}, {n}], got {tuple(self.adjacency.shape)}")
        if len(self._positions) != n:
            raise ValueError("a node appears twice in the graph")
        zeros = torch.zeros(n, dtype=self.adjacency.dtype)
        self.activation = zeros.clone() if self.activation is None else self.activation
        self.effect = zeros.clone() if self.effect is None else self.effect

    @classmethod
    def from_edges(cls, effects: Mapping[Node, float], edges: Mapping[tuple[Node, Node], float],
                   labels: dict[Node, str] | None = None, hover: dict[Node, str] | None = None) -> "Graph":
        """A graph from node effects ``{node: effect}`` and edges ``{(source, target): weight}``
        (chapter 03's way of building one); values are kept as float64, exactly."""
        nodes = list(effects)
        where = {n: j for j, n in enumerate(nodes)}
        adjacency = torch.zeros(len(nodes), len(nodes), dtype=torch.float64)
        for (source, target), weight in edges.items():
            adjacency[where[target], where[source]] = weight
        return cls(nodes, adjacency, effect=torch.tensor([float(v) for v in effects.values()], dtype=torch.float64),
                   labels=dict(labels or {}), hover=dict(hover or {}))

    # --- finding nodes

    @cached_property
    def _positions(self) -> dict[Node, int]:
        return {n: j for j, n in enumerate(self.nodes)}

    def index(self, node: Node) -> int:
        """The row (and column) of ``node``."""
        try:
            return self._positions[node]
        except KeyError:
            raise KeyError(f"{node} is not a node of this graph") from None

    def mask(self, kind: str, error: bool | None = None) -> Bool[Tensor, " n_nodes"]:
        """Nodes of ``kind`` (``error`` True / False picks error nodes / latents only)."""
        return torch.tensor([n.kind == kind and (error is None or n.is_error == error) for n in self.nodes], dtype=torch.bool)

    def dictionary_mask(self, error: bool | None = None) -> Bool[Tensor, " n_nodes"]:
        """Nodes of any dictionary, whatever its kind (transcoder, CLT, SAE): everything but
        the embeddings and logits (``error`` True / False picks error nodes / latents only)."""
        return torch.tensor([n.kind not in ("embed", "logit") and (error is None or n.is_error == error) for n in self.nodes],
                            dtype=torch.bool)

    # --- chapter 05's reading

    @property
    def logit_weights(self) -> Float[Tensor, " n_nodes"]:
        """Each logit node's probability, zero elsewhere: how much each output counts."""
        return torch.where(self.mask("logit"), self.activation, 0.0).to(self.adjacency.dtype)

    @property
    def logit_probs(self) -> Float[Tensor, " n_logits"]:
        """The logit nodes' probabilities, in node order."""
        return self.activation[self.mask("logit")]

    # --- chapter 03's reading

    @property
    def effects(self) -> Mapping[Node, float]:
        """``{node: effect}``, read-only."""
        return MappingProxyType(dict(zip(self.nodes, self.effect.tolist())))

    @property
    def edges(self) -> Mapping[tuple[Node, Node], float]:
        """``{(source, target): weight}`` for every nonzero entry of the adjacency, by source
        then target; read-only (edit ``adjacency`` instead)."""
        targets, sources = self.adjacency.nonzero(as_tuple=True)
        order = sorted(zip(sources.tolist(), targets.tolist()))
        return MappingProxyType({(self.nodes[s], self.nodes[t]): float(self.adjacency[t, s]) for s, t in order})

    def subgraph(self, keep: Bool[Tensor, " n_nodes"], edges: Bool[Tensor, "n_nodes n_nodes"] | None = None) -> "Graph":
        """The graph on the nodes of ``keep`` (order kept), with only the ``edges`` given (all by default)."""
        adjacency = self.adjacency if edges is None else torch.where(edges, self.adjacency, 0.0)
        js = keep.nonzero().flatten()
        kept = [self.nodes[j] for j in js.tolist()]
        return Graph(kept, adjacency[js][:, js].clone(), self.activation[js].clone(), self.effect[js].clone(), list(self.tokens),
                     {n: t for n, t in self.labels.items() if n in kept}, {n: t for n, t in self.hover.items() if n in kept})

    def thresholded(self, node_threshold: float = 0.0, edge_threshold: float = 0.0) -> "Graph":
        """Nodes with ``|effect| >= node_threshold``, then edges between kept nodes with
        ``|weight| >= edge_threshold`` (chapter 03's thresholds)."""
        return self.subgraph(self.effect.abs() >= node_threshold, self.adjacency.abs() >= edge_threshold)

    def label(self, node: Node) -> str:
        """``kind layer.latent@pos`` (or ``.err``), with the short label when there is one."""
        head = f"{node.kind}{node.layer}.{'err' if node.is_error else node.index}@{node.pos}"
        return f"{head} {self.labels[node]}" if node in self.labels else head


# ---------------------------------------------------------------------------------------
# Paths and supernodes.


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


def is_supernode(node: Node) -> bool:
    """Whether ``node`` stands for a group of nodes (:func:`group_nodes` gives it a negative index)."""
    return isinstance(node.index, int) and node.index < 0


def group_membership(graph: Graph, groups: Mapping[str, Sequence[Node]]) -> tuple[list[Node], dict[Node, Node]]:
    """The nodes of the grouped graph, and where each node of ``graph`` goes.

    Group ``g`` (0-based, in the order of ``groups``) becomes the supernode
    ``Node(kind, layer, pos, -1 - g)`` with the kind, layer and position of its latest member
    in forward order, so a drawing puts it where its computation ends. Every other node
    stays itself. The new nodes are listed in forward order (``sorted``).

    Refused with a ``ValueError`` naming the culprit: an empty group, a node that is not in
    ``graph``, a node in two groups."""
    owner: dict[Node, str] = {}
    for name, members in groups.items():
        if not members:
            raise ValueError(f"group {name!r} has no members: give each group at least one node of the graph")
        for node in members:
            if node not in graph._positions:
                raise ValueError(f"group {name!r}: {node} is not a node of this graph")
            if node in owner and owner[node] != name:
                raise ValueError(f"{node} is in two groups, {owner[node]!r} and {name!r}: a node can join one supernode only")
            owner[node] = name
    supernode = {name: Node(last.kind, last.layer, last.pos, -1 - g)
                 for g, (name, last) in enumerate((name, max(members)) for name, members in groups.items())}
    goes_to = {node: supernode[owner[node]] if node in owner else node for node in graph.nodes}
    return sorted(set(goes_to.values())), goes_to


def group_nodes(graph: Graph, groups: Mapping[str, Sequence[Node]]) -> Graph:
    """The graph with each group of ``groups`` (``{name: [nodes]}``) merged into one supernode.

    With the membership matrix $M$ (``M[g, j] = 1`` when node ``j`` joins new node ``g``;
    an ungrouped node is its own group of one), the grouped graph is

    A' = M A M^T (with its diagonal set to 0),    a' = M a,    e' = M e:

    the edge from supernode $S$ to node $T$ is the sum of the edges from $S$'s members to
    $T$'s members, and a supernode's activation and effect are its members' sums. Targets are
    sums of their sources, so the sums are exact: a node outside every group receives from a
    supernode exactly what it received from the members, and the total weight into the
    logits is unchanged. Edges *between members of one group* become the supernode's
    internal business and are dropped (they would be a loop on the supernode).

    The supernode's label reads ``supernode NAME (k members)`` and its hover lists the
    members; labels and hovers of ungrouped nodes are kept. Refusals: see
    :func:`group_membership`."""
    new_nodes, goes_to = group_membership(graph, groups)
    row = {n: g for g, n in enumerate(new_nodes)}
    member = torch.zeros(len(new_nodes), len(graph.nodes), dtype=graph.adjacency.dtype)
    for j, node in enumerate(graph.nodes):
        member[row[goes_to[node]], j] = 1.0
    adjacency = member @ graph.adjacency @ member.T
    adjacency.fill_diagonal_(0.0)
    labels = {n: t for n, t in graph.labels.items() if goes_to[n] == n}
    hover = {n: t for n, t in graph.hover.items() if goes_to[n] == n}
    for g, (name, members) in enumerate(groups.items()):
        node = Node(max(members).kind, max(members).layer, max(members).pos, -1 - g)
        listed = sorted(set(members))
        labels[node] = f"supernode {name} ({len(listed)} member{'s' if len(listed) > 1 else ''})"
        hover[node] = "members: " + ", ".join(str(n) for n in listed)
    return Graph(new_nodes, adjacency, member @ graph.activation.to(member.dtype), member @ graph.effect.to(member.dtype),
                 list(graph.tokens), labels, hover)
