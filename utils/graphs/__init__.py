"""Circuits as graphs: one package, laid out along the pipeline.

=======================  ==============================================================
module                   what it holds
=======================  ==============================================================
``graph``                the one graph type (:class:`Graph`: nodes, ``[target, source]``
                         adjacency, activations, effects, tokens, labels), paths, supernodes
                         (:func:`group_nodes`)
``feature_circuits``     chapter 03: splices for direct edges between dictionaries, edge
                         ablation, progressive tracing (:class:`Tracer`)
``replacement``          chapter 05: the local replacement model of one prompt (frozen
                         norms and attention, transcoder latents and error nodes as leaves)
``engine``               chapter 05: the attribution graph of a replacement model
``pruning``              influence on the logits, pruning, replacement and completeness scores
``interventions``        setting latents on the real model, cross-prompt swaps
``export``               the course's JSON; Graphviz ``.dot`` and ``.svg``
``view``                 plotly drawings (:func:`graph_figure`, :func:`attribution_figure`)
=======================  ==============================================================

Everything public is importable from ``utils.graphs`` itself.
"""
from utils.graphs.engine import attribute, build_graph, build_graph_reference, edge_errors, graph_nodes
from utils.graphs.export import export_dot_svg, to_dot, to_json, to_svg
from utils.graphs.feature_circuits import Tracer, direct_change, node_gradients, splice_for_edges
from utils.graphs.graph import Graph, group_membership, group_nodes, is_supernode, paths_between, supernode_adjacency
from utils.graphs.interventions import generate_with, intervene, swap_edits
from utils.graphs.pruning import (
    Pruned,
    circuit_tracer_scores,
    crossing_score,
    cumulative_mask,
    graph_scores,
    influence,
    normalized_adjacency,
    prune,
    prune_as_circuit_tracer,
)
from utils.graphs.replacement import (
    LocalReplacement,
    centred_unembedding,
    freezing_hooks,
    frozen_hook_names,
    frozen_parameters,
    local_replacement,
    replacement_forward,
    salient_logit_ids,
)
from utils.graphs.view import attribution_figure, draw_graph, graph_figure, layout, node_card, node_label

__all__ = [
    "Graph", "LocalReplacement", "Pruned", "Tracer", "attribute", "attribution_figure", "build_graph",
    "build_graph_reference", "centred_unembedding", "circuit_tracer_scores", "crossing_score",
    "cumulative_mask", "direct_change", "draw_graph", "edge_errors", "export_dot_svg", "freezing_hooks", "frozen_hook_names",
    "frozen_parameters", "generate_with", "graph_figure", "graph_nodes", "graph_scores", "group_membership", "group_nodes", "influence",
    "intervene", "is_supernode", "layout", "local_replacement", "node_card", "node_gradients", "node_label", "normalized_adjacency",
    "paths_between", "prune", "prune_as_circuit_tracer", "replacement_forward", "salient_logit_ids",
    "splice_for_edges", "supernode_adjacency", "swap_edits", "to_dot", "to_json", "to_svg",
]
