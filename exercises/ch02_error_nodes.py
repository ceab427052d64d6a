"""Exercise stubs for chapter ch02_error_nodes.

Generated from source/ch02_error_nodes.py by `python -m utils.course build`: edit the source, not this file."""


from collections.abc import Collection

import torch
from jaxtyping import Bool, Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.circuits import NodeBaseline, node_masks
from utils.course.checking import earlier
from utils.nodes import Node, output_hook
from utils.toy.generator import TaskBatch

logit_diff = earlier("ch01_attribution", "logit_diff")  # chapter 01's metric: yours once its check passed, else the reference


def error_term(model: HookedSAETransformer, dictionary: SAE, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos ..."]:
    """e = y - decode(encode(x)): x read at cfg.metadata.hook_name, y at cfg.metadata.hook_name_out (or x)."""
    raise NotImplementedError("error_term: your code here")


def spliced_task_scores(
    model: HookedSAETransformer, dictionaries: list[SAE], batch: TaskBatch, use_error_term: bool = False
) -> tuple[float, float]:
    """(mean_b [argmax logits[b, -1] is correct for b], mean_b logit_diff_b), dictionaries spliced."""
    raise NotImplementedError("spliced_task_scores: your code here")


def ablate_nodes(
    model: HookedSAETransformer,
    dictionaries: list[SAE],
    tokens: Int[Tensor, "batch pos"],
    answer_ids: Int[Tensor, " batch"],
    distractor_ids: Int[Tensor, " batch"],
    nodes: Collection[Node],
    baseline: NodeBaseline | None = None,
    complement: bool = False,
) -> Float[Tensor, " batch"]:
    """m_b with every node of A set to its baseline: f_i(p) := f'_i(p) for a latent, e(p) := e'(p) for an
    error node (f', e' from `baseline`, 0 when None); A = nodes, or every other node when `complement`.
    Every dictionary is spliced with its error term, so A = {} gives the model's own m_b."""
    raise NotImplementedError("ablate_nodes: your code here")


def error_attribution(
    model: HookedSAETransformer,
    dictionary: SAE,
    tokens: Int[Tensor, "batch pos"],
    answer_ids: Int[Tensor, " batch"],
    distractor_ids: Int[Tensor, " batch"],
    baseline: Float[Tensor, "pos ..."] | None = None,
) -> Float[Tensor, "batch pos"]:
    """attr[b, p] = sum_d dm_b/de_d(p) (e'_d(p) - e_d(p)), one forward and one backward pass."""
    raise NotImplementedError("error_attribution: your code here")


def faithfulness(
    model: HookedSAETransformer,
    dictionaries: list[SAE],
    circuit: Collection[Node],
    tokens: Int[Tensor, "batch pos"],
    answer_ids: Int[Tensor, " batch"],
    distractor_ids: Int[Tensor, " batch"],
    baseline: NodeBaseline | None = None,
) -> float:
    """F(C) = (m(C) - m(empty)) / (m(M) - m(empty)), m(X): mean logit diff with every node outside X ablated."""
    raise NotImplementedError("faithfulness: your code here")


def completeness(
    model: HookedSAETransformer,
    dictionaries: list[SAE],
    circuit: Collection[Node],
    tokens: Int[Tensor, "batch pos"],
    answer_ids: Int[Tensor, " batch"],
    distractor_ids: Int[Tensor, " batch"],
    baseline: NodeBaseline | None = None,
) -> float:
    """F(M \\ C) = (m(M \\ C) - m(empty)) / (m(M) - m(empty)), m(M \\ C): only the nodes of C ablated."""
    raise NotImplementedError("completeness: your code here")


def position_precision_recall(nodes: Collection[Node], truth: Bool[Tensor, " pos"]) -> tuple[float, float]:
    """(|P & T| / |P|, |P & T| / |T|), P = {node.pos mod n_pos}, T = {p : truth[p]}."""
    raise NotImplementedError("position_precision_recall: your code here")
