"""Plausible wrong implementations of chapter 05's exercises; each check must catch each one.

A mistake with ``signature=True`` (the default) is recognised by its result: the check runs
it on its own inputs (``utils.course.checking.signatures``) and fails with its diagnosis. The
others must be caught by a generic diagnosis, a specific test in the check or a watched side
effect, and their diagnosis is a phrase of that message."""
from __future__ import annotations

import torch

from solutions.ch05_attribution_graphs import logit_influence, salient_logits, target_edges
from utils.course.checking import Mistake
from utils.graphs import replacement_forward

# --- freeze_nonlinearities -----------------------------------------------------------


def _freeze(model, cache, hooks):
    def frozen(x, hook):
        return cache[hook.name].detach().expand_as(x)

    return [(f"blocks.{layer}.{h}", frozen) for layer in range(model.cfg.n_layers) for h in hooks]


def freeze_patterns_only(model, cache):
    return _freeze(model, cache, ["attn.hook_pattern"])


def freeze_scales_only(model, cache):
    return _freeze(model, cache, ["ln1.hook_scale", "ln2.hook_scale"]) + freeze_final(cache)


def freeze_final(cache):
    return [("ln_final.hook_scale", lambda x, hook: cache[hook.name].detach().expand_as(x))]


def freeze_without_final_norm(model, cache):
    return _freeze(model, cache, ["ln1.hook_scale", "attn.hook_pattern", "ln2.hook_scale"])


def freeze_ln2_not_ln1(model, cache):
    return _freeze(model, cache, ["attn.hook_pattern", "ln2.hook_scale"]) + freeze_final(cache)


def freeze_normalized_output(model, cache):
    hooks = _freeze(model, cache, ["ln1.hook_normalized", "attn.hook_pattern", "ln2.hook_normalized"])
    return hooks + [("ln_final.hook_normalized", lambda x, hook: cache[hook.name].detach().expand_as(x))]


def freeze_straight_through(model, cache):
    def frozen(x, hook):
        return x + (cache[hook.name] - x).detach()  # the frozen value, but the gradient of x

    return [(f"blocks.{layer}.{h}", frozen) for layer in range(model.cfg.n_layers)
            for h in ("ln1.hook_scale", "attn.hook_pattern", "ln2.hook_scale")] + [("ln_final.hook_scale", frozen)]


# --- salient_logits ------------------------------------------------------------------


def salient_stops_short(logits, coverage=0.95, max_n=10):
    probs = logits.softmax(-1)
    top = probs.topk(max_n)
    k = max(1, int((top.values.cumsum(0) < coverage).sum()))
    return top.indices[:k], top.values[:k]


def salient_no_cap(logits, coverage=0.95, max_n=10):
    probs = logits.softmax(-1)
    top = probs.sort(descending=True)
    k = int((top.values.cumsum(0) < coverage).sum()) + 1
    return top.indices[:k], top.values[:k]


def salient_returns_logits(logits, coverage=0.95, max_n=10):
    ids, _ = salient_logits(logits, coverage, max_n)
    return ids, logits[ids]


def salient_renormalised(logits, coverage=0.95, max_n=10):
    ids, probs = salient_logits(logits, coverage, max_n)
    return ids, probs / probs.sum()


def salient_log_probs(logits, coverage=0.95, max_n=10):
    ids, probs = salient_logits(logits, coverage, max_n)
    return ids, probs.log()


# --- target_edges --------------------------------------------------------------------


def _edges(rm, nodes, target, *, times_value=True, centred=True, dot=True, token_only=False):
    """The reference with the knobs a learner might get wrong."""
    leaves = rm.leaves(1)
    with torch.enable_grad():
        pre, logits = replacement_forward(rm, leaves)
        if target.kind == "logit":
            value = logits[0, target.pos, target.index] - (logits[0, target.pos].mean() if centred else 0.0)
        else:
            value = pre[target.layer][0, target.pos, target.index]
        value.backward()
    grad = {name: leaf.grad[0] if leaf.grad is not None else torch.zeros_like(leaf[0]) for name, leaf in leaves.items()}
    edges = torch.zeros(len(nodes), dtype=rm.embed.dtype)
    dot = dot and times_value  # gradients alone: a vector node's gradient summed, like a latent's
    for j, n in enumerate(nodes):
        if n.kind == "embed":
            g, v = grad["embed"][n.pos], rm.model.W_E[n.index] if token_only else rm.embed[n.pos]
            edges[j] = g @ v if dot else g.sum()
        elif n.kind == "transcoder" and n.is_error:
            g = grad[f"error.{n.layer}"][n.pos]
            edges[j] = g @ rm.errors[n.layer][n.pos] if dot else g.sum()
        elif n.kind == "transcoder":
            g = grad[f"latents.{n.layer}"][n.pos, n.index]
            edges[j] = g * rm.acts[n.layer][n.pos, n.index] if times_value else g
    return edges


def edges_gradient_only(rm, nodes, target):
    return _edges(rm, nodes, target, times_value=False)


def edges_uncentred_logit(rm, nodes, target):
    return _edges(rm, nodes, target, centred=False)


def edges_vector_nodes_summed(rm, nodes, target):
    return _edges(rm, nodes, target, dot=False)


def edges_token_embedding_only(rm, nodes, target):
    return _edges(rm, nodes, target, token_only=True)


def edges_negated(rm, nodes, target):
    return -target_edges(rm, nodes, target)


# --- logit_influence -----------------------------------------------------------------


def _influence(adjacency, weights, *, absolute=True, rows=True, normalise=True, first=1, last=None):
    a = adjacency.abs() if absolute else adjacency
    if normalise:
        total = a.abs().sum(1 if rows else 0, keepdim=True).clamp(min=1e-30)
        a = a / total
    out, term = torch.zeros_like(weights), weights.clone()
    for k in range(len(weights) + 1):
        if k >= first and (last is None or k <= last):
            out = out + term
        term = term @ a
    return out


def influence_signed(adjacency, logit_weights):
    return _influence(adjacency, logit_weights, absolute=False)


def influence_direct_only(adjacency, logit_weights):
    return _influence(adjacency, logit_weights, last=1)


def influence_with_weights(adjacency, logit_weights):
    return logit_influence(adjacency, logit_weights) + logit_weights


def influence_columns_normalised(adjacency, logit_weights):
    return _influence(adjacency, logit_weights, rows=False)


def influence_unnormalised(adjacency, logit_weights):
    return _influence(adjacency, logit_weights, normalise=False)


# --- prune_by_influence --------------------------------------------------------------


def _prune(scores, threshold, *, include_crossing=True, descending=True):
    order = scores.argsort(descending=descending)
    share = scores[order].cumsum(0) / scores.sum()
    k = int((share < threshold).sum()) + (1 if include_crossing else 0)
    keep = torch.zeros(len(scores), dtype=torch.bool)
    keep[order[:k]] = True
    return keep & (scores > 0)


def prune_without_crossing(scores, threshold):
    return _prune(scores, threshold, include_crossing=False)


def prune_smallest_first(scores, threshold):
    return _prune(scores, threshold, descending=False)


def prune_raw_threshold(scores, threshold):
    return scores >= threshold


def prune_relative_to_max(scores, threshold):
    return scores >= (1 - threshold) * scores.max()


MISTAKES = {
    "freeze_nonlinearities": [
        Mistake(freeze_patterns_only, "only the attention patterns are frozen: freeze every norm's hook_scale too"),
        Mistake(freeze_scales_only, "only the norm scales are frozen: freeze every attn.hook_pattern too"),
        Mistake(freeze_without_final_norm, "ln_final.hook_scale is not frozen: the final norm is nonlinear too"),
        Mistake(freeze_ln2_not_ln1, "ln1.hook_scale is not frozen: attention reads a norm as well as the MLP"),
        Mistake(freeze_normalized_output, "you froze the normalised vector (hook_normalized), not the scale: "
                                          "that cuts the layer off from its input; freeze hook_scale"),
        Mistake(freeze_straight_through, "gradient", signature=False),
    ],
    "salient_logits": [
        Mistake(salient_stops_short, "stops one token short: keep the token whose probability crosses the coverage"),
        Mistake(salient_no_cap, "ignores max_n: return at most max_n tokens"),
        Mistake(salient_returns_logits, "returns the logits of the tokens: return their probabilities (softmax)"),
        Mistake(salient_renormalised, "the probabilities are renormalised over the kept tokens: return softmax over the vocabulary"),
        Mistake(salient_log_probs, "returns log-probabilities: return probabilities"),
    ],
    "target_edges": [
        Mistake(edges_gradient_only, "returns gradients alone: an edge is the source's value times the gradient"),
        Mistake(edges_uncentred_logit, "the logit target is not centred: use the logit minus the mean logit at its position"),
        Mistake(edges_vector_nodes_summed, "error and embedding edges sum the gradient over d_model: dot it with the node's value"),
        Mistake(edges_token_embedding_only, "embedding edges use W_E[token] alone: the node's value is the residual stream "
                                            "entering layer 0 (token plus position embedding), rm.embed"),
        Mistake(edges_negated, "wrong sign", signature=False),
    ],
    "logit_influence": [
        Mistake(influence_signed, "the signed adjacency was normalised: take absolute values first"),
        Mistake(influence_direct_only, "only the first term (direct edges): sum the series over paths of every length"),
        Mistake(influence_with_weights, "the weights themselves (paths of length zero) are included: start at w Â"),
        Mistake(influence_columns_normalised, "normalised per source (columns): divide each target's row by its sum"),
        Mistake(influence_unnormalised, "the adjacency is not normalised: divide each row of |A| by its sum"),
    ],
    "prune_by_influence": [
        Mistake(prune_without_crossing, "the entry that crosses the threshold is left out: keep it"),
        Mistake(prune_smallest_first, "keeps the smallest scores first: sort in decreasing order"),
        Mistake(prune_raw_threshold, "compares each score with the threshold: the threshold is a share of the cumulative total"),
        Mistake(prune_relative_to_max, "keeps scores above a share of the largest: the threshold is a share of the cumulative total"),
    ],
}
