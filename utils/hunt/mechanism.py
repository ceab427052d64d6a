"""Measuring where the hunt model computes a planted task: component patching, attention
reads, circuits of dictionary nodes and their faithfulness.

*Component patching* runs the model on a prompt and, at one site (an attention layer's
output, one head's output, an MLP's output) and one position, puts in the activation of the
prompt's twin (same layout, answer changed). With ``m`` the logit difference
answer − distractor (the twin's answer), the *share* of the logit difference that the site
carries is

    share(site, p) = (m_clean − m_patched) / (m_clean − m_twin),

1 when the site at ``p`` alone turns the clean answer into the twin's, 0 when it changes
nothing. *Reading*: knocking out the attention of a layer's heads from position ``p`` to
position ``q`` (weights set to 0, the rest renormalised) and measuring the share of the
clean logit difference lost, (m_clean − m_knocked) / m_clean, tests "layer-L attention at
``p`` reads ``q``" (removing information can at best bring m to 0, not to the twin's).

Circuits are sets of ``utils.nodes.Node``: every dictionary spliced with its error term, a
node outside the circuit mean-ablated (its mean over other prompts of the same layout,
position by position), the faithfulness of circuit C

    F(C) = (m(C) − m(∅)) / (m(M) − m(∅)),    completeness  F(M \\ C),

as in chapter 02 (:func:`circuit_metric` is the library twin of its ``ablate_nodes``).
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from utils.circuits import NodeBaseline, mean_baseline, node_attribution, node_masks, output_hook, rank_nodes
from utils.nodes import Node
from utils.toy.generator import TaskBatch

Metric = Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, " batch"]]


def logit_diff_metric(batch: TaskBatch) -> Metric:
    """m_b = logits[b, -1, answer_b] − logits[b, -1, distractor_b]."""
    def metric(logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, " batch"]:
        last = logits[:, -1]
        rows = torch.arange(len(last), device=last.device)
        return last[rows, batch.answer_ids] - last[rows, batch.distractor_ids]
    return metric


# ---------------------------------------------------------------------------------------
# Component patching.


def site_hook(site: str, layer: int) -> str:
    """The hook a site writes: ``resid`` (the residual stream entering the layer; layer 0:
    the embeddings), ``attn`` (a layer's attention output), ``head`` (one head's
    ``hook_z``), ``mlp`` (a layer's MLP output), ``value`` (one head's ``hook_v``)."""
    names = {"resid": "hook_resid_pre", "attn": "hook_attn_out", "mlp": "hook_mlp_out", "head": "attn.hook_z",
             "value": "attn.hook_v"}
    if site not in names:
        raise ValueError(f"unknown site {site!r}: expected one of {list(names)}")
    return f"blocks.{layer}.{names[site]}"


@torch.no_grad()
def patched_metric(model: HookedSAETransformer, batch: TaskBatch, site: str, layer: int, pos: int,
                   head: int | None = None, twin: dict[str, Tensor] | None = None) -> Float[Tensor, " batch"]:
    """The metric of the clean prompts with ``site`` (head ``head`` for ``head``/``value``)
    at ``pos`` taken from the twin run (``twin``: its activations by hook name, if cached)."""
    name = site_hook(site, layer)
    if twin is None or name not in twin:
        _, twin = model.run_with_cache(batch.corrupted_tokens, names_filter=name)
    source = twin[name]

    def patch(x: Tensor, hook: HookPoint) -> Tensor:  # runs at ``name`` only
        x = x.clone()
        if head is None:
            x[:, pos] = source[:, pos]
        else:
            x[:, pos, head] = source[:, pos, head]
        return x

    return logit_diff_metric(batch)(model.run_with_hooks(batch.tokens, fwd_hooks=[(name, patch)]))


@torch.no_grad()
def end_metrics(model: HookedSAETransformer, batch: TaskBatch) -> tuple[float, float]:
    """(mean m on the clean prompts, mean m on their twins), m scored with the clean
    prompt's answer and distractor."""
    metric = logit_diff_metric(batch)
    return metric(model(batch.tokens)).mean().item(), metric(model(batch.corrupted_tokens)).mean().item()


@torch.no_grad()
def patch_shares(model: HookedSAETransformer, batch: TaskBatch, sites: Sequence[tuple[str, int, int | None]],
                 positions: Sequence[int] | None = None) -> dict[tuple[str, int, int | None], Float[Tensor, " pos"]]:
    """share(site, p) for each ``(site, layer, head)`` of ``sites``, at every position (or at
    ``positions``; the others 0)."""
    clean, twin = end_metrics(model, batch)
    n_pos = batch.tokens.shape[1]
    _, cache = model.run_with_cache(batch.corrupted_tokens, names_filter=list({site_hook(s, layer) for s, layer, _ in sites}))
    out = {}
    for site, layer, head in sites:
        shares = torch.zeros(n_pos)
        for p in range(n_pos) if positions is None else positions:
            patched = patched_metric(model, batch, site, layer, p, head, cache).mean().item()
            shares[p] = (clean - patched) / (clean - twin)
        out[site, layer, head] = shares
    return out


@torch.no_grad()
def knockout_metric(model: HookedSAETransformer, batch: TaskBatch, layer: int, at: int, reads: Sequence[int],
                    heads: Sequence[int] | None = None) -> Float[Tensor, " batch"]:
    """The metric with the attention of ``heads`` (all when None) of ``layer`` from position
    ``at`` to the positions ``reads`` knocked out: those weights set to 0 and the rest of the
    row renormalised, so the heads read everything else as before."""
    heads = list(range(model.cfg.n_heads)) if heads is None else list(heads)

    def knock(pattern: Tensor, hook: HookPoint) -> Tensor:
        pattern = pattern.clone()
        row = pattern[:, heads, at]  # [batch, head, src]
        row[..., list(reads)] = 0.0
        pattern[:, heads, at] = row / row.sum(-1, keepdim=True).clamp(min=1e-9)
        return pattern

    logits = model.run_with_hooks(batch.tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_pattern", knock)])
    return logit_diff_metric(batch)(logits)


@torch.no_grad()
def attention_from(model: HookedSAETransformer, tokens: Int[Tensor, "batch pos"], layer: int,
                   pos: int) -> Float[Tensor, "head src"]:
    """Mean attention pattern of every head of ``layer`` from query position ``pos``."""
    name = f"blocks.{layer}.attn.hook_pattern"
    _, cache = model.run_with_cache(tokens, names_filter=name)
    return cache[name][:, :, pos].mean(0)


# ---------------------------------------------------------------------------------------
# Circuits of dictionary nodes.


@torch.no_grad()
def circuit_metric(model: HookedSAETransformer, dictionaries: Sequence[SAE], tokens: Int[Tensor, "batch pos"],
                   metric: Metric, nodes: Collection[Node], baseline: NodeBaseline | None = None,
                   complement: bool = False) -> Float[Tensor, " batch"]:
    """m_b with every node of A set to its baseline value (0 when ``baseline`` is None),
    A = ``nodes``, or every other node when ``complement``; every dictionary is spliced
    with its error term, so A = ∅ gives the model's own m_b."""
    masks = node_masks(nodes, dictionaries, tokens.shape[1])  # hook -> [pos, d_sae + 1], error last
    fwd_hooks = []
    for sae in dictionaries:
        hook = sae.cfg.metadata.hook_name
        ablated = ~masks[hook] if complement else masks[hook]
        latent_value = 0.0 if baseline is None else baseline.latents[hook]
        error_value = 0.0 if baseline is None else baseline.errors[hook]

        def set_latents(acts: Tensor, hook: HookPoint, where=ablated[:, :-1], value=latent_value) -> Tensor:
            return torch.where(where, value, acts)

        def set_error(error: Tensor, hook: HookPoint, where=ablated[:, -1], value=error_value) -> Tensor:
            return torch.where(where.view(-1, *[1] * (error.ndim - 2)), value, error)

        written = output_hook(sae)
        fwd_hooks += [(f"{written}.hook_sae_acts_post", set_latents), (f"{written}.hook_sae_error", set_error)]
    with model.saes(saes=list(dictionaries), use_error_term=True):
        return metric(model.run_with_hooks(tokens, fwd_hooks=fwd_hooks))


class CircuitScorer:
    """Faithfulness and completeness of node sets on one batch with one baseline (the two
    ends, m(M) and m(∅), computed once)."""

    def __init__(self, model: HookedSAETransformer, dictionaries: Sequence[SAE], batch: TaskBatch,
                 baseline: NodeBaseline):
        self.model, self.dictionaries, self.batch, self.baseline = model, list(dictionaries), batch, baseline
        self.metric = logit_diff_metric(batch)
        self.whole = self._m([], complement=False)
        self.empty = self._m([], complement=True)

    def _m(self, nodes: Collection[Node], complement: bool) -> float:
        return circuit_metric(self.model, self.dictionaries, self.batch.tokens, self.metric, nodes,
                              self.baseline, complement).mean().item()

    def faithfulness(self, nodes: Collection[Node]) -> float:
        """F(C) = (m(C) − m(∅)) / (m(M) − m(∅)): only the circuit kept."""
        return (self._m(nodes, complement=True) - self.empty) / (self.whole - self.empty)

    def completeness(self, nodes: Collection[Node]) -> float:
        """F(M \\ C): only the circuit ablated (0 when the circuit is everything that matters)."""
        return (self._m(nodes, complement=False) - self.empty) / (self.whole - self.empty)


def node_scores(model: HookedSAETransformer, dictionaries: Sequence[SAE], batch: TaskBatch,
                baseline: NodeBaseline) -> dict[str, Float[Tensor, "pos d_sae_plus_error"]]:
    """Mean attribution (over prompts) of mean-ablating each node alone: chapter 02's
    ``node_attribution`` with the metric of :func:`logit_diff_metric`."""
    attribution = node_attribution(model, list(dictionaries), batch.tokens, logit_diff_metric(batch), baseline)
    return {hook: a.mean(0) for hook, a in attribution.items()}


def smallest_faithful(scorer: CircuitScorer, ranking: Sequence[Node], target: float,
                      sizes: Sequence[int]) -> tuple[int, float]:
    """The first size of ``sizes`` whose top-ranked nodes reach faithfulness ``target``
    (the last size when none does), with its faithfulness."""
    for size in sizes:
        f = scorer.faithfulness(ranking[:size])
        if f >= target:
            return size, f
    return sizes[-1], f


def baseline_for(model: HookedSAETransformer, dictionaries: Sequence[SAE], tokens: Int[Tensor, "batch pos"]) -> NodeBaseline:
    """Per-position means over prompts of one layout (``utils.circuits.mean_baseline``)."""
    return mean_baseline(model, list(dictionaries), tokens, per_position=True)


__all__ = ["CircuitScorer", "attention_from", "baseline_for", "circuit_metric", "end_metrics", "knockout_metric", "logit_diff_metric",
           "node_scores", "patch_shares", "patched_metric", "rank_nodes", "site_hook", "smallest_faithful"]
