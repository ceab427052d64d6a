"""Exercise stubs for chapter ch03_feature_circuits.

Generated from source/ch03_feature_circuits.py by `python -m utils.course build`: edit the source, not this file."""


from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.circuits import NodeBaseline
from utils.graphs import node_gradients, splice_for_edges
from utils.nodes import Node, dictionary_key, output_hook


def edge_effects(
    model: HookedSAETransformer,
    dictionaries: Sequence[SAE],
    upstream: SAE,
    downstream: SAE,
    tokens: Int[Tensor, "batch pos"],
    metric: Callable[[Tensor], Tensor],
    targets: Sequence[Node],
    baseline: NodeBaseline | None = None,
) -> Float[Tensor, "target pos d_up_plus_error"]:
    """E[t, p, j] = mean_b (dm_b/dd_t) . (dd_t/du_j(p)) . (u'_j(p) - u_j(p)); column d_sae: the upstream error."""
    raise NotImplementedError("edge_effects: your code here")


def ablation_edges(
    model: HookedSAETransformer,
    dictionaries: Sequence[SAE],
    upstream: SAE,
    downstream: SAE,
    tokens: Int[Tensor, "batch pos"],
    node: Node,
    threshold_exp: int,
) -> Float[Tensor, "pos d_down"]:
    """mean_b (f_down_ablated - f_down)[b, p, j], set to 0 where |.| < 2**threshold_exp; node zeroed at node.pos."""
    raise NotImplementedError("ablation_edges: your code here")


def probe_latent_effects(
    probe_weight: Float[Tensor, " d_model"],
    dictionary: SAE,
    latents: Float[Tensor, "batch d_sae"],
    baseline: Float[Tensor, " d_sae"] | None = None,
) -> Float[Tensor, "batch d_sae"]:
    """effect[b, i] = (f'_i - latents[b, i]) * (W_dec[i] . w): z with latent i set to f'_i, minus z."""
    raise NotImplementedError("probe_latent_effects: your code here")


def gender_latents(latents: Float[Tensor, "batch d_sae"], bios, candidates: Sequence[int]) -> list[int]:
    """Candidates i, sorted, with |AUROC_gender(i) - 0.5| >= 0.2 and > |AUROC_profession(i) - 0.5|."""
    raise NotImplementedError("gender_latents: your code here")
