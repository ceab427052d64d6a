"""Reference solutions for chapter ch02_error_nodes.

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
    reads = dictionary.cfg.metadata.hook_name
    writes = dictionary.cfg.metadata.hook_name_out or reads
    _, cache = model.run_with_cache(tokens, names_filter=[reads, writes])
    return cache[writes] - dictionary.decode(dictionary.encode(cache[reads]))


def spliced_task_scores(
    model: HookedSAETransformer, dictionaries: list[SAE], batch: TaskBatch, use_error_term: bool = False
) -> tuple[float, float]:
    """(mean_b [argmax logits[b, -1] is correct for b], mean_b logit_diff_b), dictionaries spliced."""
    with model.saes(saes=dictionaries, use_error_term=use_error_term):
        logits = model(batch.tokens)
    top = logits[:, -1].argmax(-1)  # [batch]
    accuracy = batch.correct.gather(-1, top[:, None]).float().mean().item()
    return accuracy, logit_diff(logits, batch.answer_ids, batch.distractor_ids).mean().item()


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
    masks = node_masks(nodes, dictionaries, tokens.shape[1])  # hook -> [pos, d_sae + 1], error last
    fwd_hooks = []
    for sae in dictionaries:
        hook = sae.cfg.metadata.hook_name
        ablated = ~masks[hook] if complement else masks[hook]
        latent_value = 0.0 if baseline is None else baseline.latents[hook]
        error_value = 0.0 if baseline is None else baseline.errors[hook]

        def set_latents(acts: Float[Tensor, "batch pos d_sae"], hook, where=ablated[:, :-1], value=latent_value):
            return torch.where(where, value, acts)  # [pos, d_sae] broadcasts over the batch

        def set_error(error: Float[Tensor, "batch pos ..."], hook, where=ablated[:, -1], value=error_value):
            where = where.view(-1, *[1] * (error.ndim - 2))  # [pos, 1, ...]: the whole vector at p
            return torch.where(where, value, error)

        writes = output_hook(sae)
        fwd_hooks += [(f"{writes}.hook_sae_acts_post", set_latents), (f"{writes}.hook_sae_error", set_error)]
    with model.saes(saes=dictionaries, use_error_term=True):
        logits = model.run_with_hooks(tokens, fwd_hooks=fwd_hooks)
    return logit_diff(logits, answer_ids, distractor_ids)


def error_attribution(
    model: HookedSAETransformer,
    dictionary: SAE,
    tokens: Int[Tensor, "batch pos"],
    answer_ids: Int[Tensor, " batch"],
    distractor_ids: Int[Tensor, " batch"],
    baseline: Float[Tensor, "pos ..."] | None = None,
) -> Float[Tensor, "batch pos"]:
    """attr[b, p] = sum_d dm_b/de_d(p) (e'_d(p) - e_d(p)), one forward and one backward pass."""
    kept = {}

    def leaf(error: Float[Tensor, "batch pos ..."], hook) -> Float[Tensor, "batch pos ..."]:
        kept["error"] = error.detach().requires_grad_(True)
        return kept["error"]

    with model.saes(saes=[dictionary], use_error_term=True), torch.enable_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[(f"{output_hook(dictionary)}.hook_sae_error", leaf)])
        logit_diff(logits, answer_ids, distractor_ids).sum().backward()
    error = kept["error"]
    target = torch.zeros_like(error) if baseline is None else baseline.expand_as(error)
    return (error.grad * (target - error.detach())).flatten(2).sum(-1)


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
    def m(nodes: Collection[Node], complement: bool) -> float:
        return ablate_nodes(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement).mean().item()

    empty, whole = m([], complement=True), m([], complement=False)
    return (m(circuit, complement=True) - empty) / (whole - empty)


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
    def m(nodes: Collection[Node], complement: bool) -> float:
        return ablate_nodes(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement).mean().item()

    empty, whole = m([], complement=True), m([], complement=False)
    return (m(circuit, complement=False) - empty) / (whole - empty)


def position_precision_recall(nodes: Collection[Node], truth: Bool[Tensor, " pos"]) -> tuple[float, float]:
    """(|P & T| / |P|, |P & T| / |T|), P = {node.pos mod n_pos}, T = {p : truth[p]}."""
    n_pos = truth.shape[0]
    found = {node.pos % n_pos for node in nodes}
    true = set(truth.nonzero()[:, 0].tolist())
    hits = len(found & true)
    return (hits / len(found) if found else 0.0), (hits / len(true) if true else 0.0)
