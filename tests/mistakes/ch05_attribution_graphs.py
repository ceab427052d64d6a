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


def _names(model):
    return [f"blocks.{layer}.{h}" for layer in range(model.cfg.n_layers)
            for h in ("ln1.hook_scale", "attn.hook_pattern", "ln2.hook_scale")] + ["ln_final.hook_scale"]


def freeze_keeps_graph(model, cache):
    return [(name, lambda x, hook: cache[hook.name] * torch.ones_like(x)) for name in _names(model)]


def freeze_prompt_shape(model, cache):
    return [(name, lambda x, hook: cache[hook.name].detach()) for name in _names(model)]


def freeze_scores(model, cache):
    names = [name.replace("attn.hook_pattern", "attn.hook_attn_scores") for name in _names(model)]
    return [(name, lambda x, hook: cache[hook.name].detach().expand_as(x)) for name in names]


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


def salient_increasing(logits, coverage=0.95, max_n=10):
    ids, probs = salient_logits(logits, coverage, max_n)
    return ids.flip(0), probs.flip(0)


def salient_cap_plus_one(logits, coverage=0.95, max_n=10):
    probs = logits.softmax(-1).sort(descending=True)
    k = min(max_n + 1, int((probs.values.cumsum(0) < coverage).sum()) + 1)
    return probs.indices[:k], probs.values[:k]


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


_LEAVES: dict[int, dict] = {}


def edges_leaves_kept(rm, nodes, target):
    """Leaves made once per replacement model and kept for the next call: their .grad accumulates."""
    leaves = _LEAVES.setdefault(id(rm), rm.leaves(1))
    with torch.enable_grad():
        pre, logits = replacement_forward(rm, leaves)
        value = (logits[0, target.pos, target.index] - logits[0, target.pos].mean() if target.kind == "logit"
                 else pre[target.layer][0, target.pos, target.index])
        value.backward()
    edges = torch.zeros(len(nodes), dtype=rm.embed.dtype)
    for j, n in enumerate(nodes):
        if n.kind == "embed":
            edges[j] = leaves["embed"].grad[0, n.pos] @ rm.embed[n.pos]
        elif n.kind == "transcoder" and n.is_error:
            edges[j] = leaves[f"error.{n.layer}"].grad[0, n.pos] @ rm.errors[n.layer][n.pos]
        elif n.kind == "transcoder":
            edges[j] = leaves[f"latents.{n.layer}"].grad[0, n.pos, n.index] * rm.acts[n.layer][n.pos, n.index]
    return edges


def edges_without_errors(rm, nodes, target):
    edges = target_edges(rm, nodes, target)
    return torch.where(torch.tensor([n.is_error for n in nodes]), 0.0, edges)


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


def prune_zeros_allowed(scores, threshold):
    order = scores.argsort(descending=True)
    reached = scores[order].cumsum(0) >= threshold * scores.sum()
    k = int(reached.float().argmax()) + 1 if reached.any() else len(scores)
    keep = torch.zeros(len(scores), dtype=torch.bool)
    keep[order[:k]] = True
    return keep


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
        Mistake(freeze_straight_through, "still reaches the attention scores", signature=False),
        Mistake(freeze_keeps_graph, "gradients reach the cached values", signature=False),
        Mistake(freeze_prompt_shape, "broadcast the prompt's value to x's batch", signature=False),
        Mistake(freeze_scores, "the scores come before the softmax", signature=False),
    ],
    "salient_logits": [
        Mistake(salient_stops_short, "stops one token short: keep the token whose probability crosses the coverage"),
        Mistake(salient_no_cap, "ignores max_n: return at most max_n tokens"),
        Mistake(salient_returns_logits, "returns the logits of the tokens: return their probabilities (softmax)"),
        Mistake(salient_renormalised, "the probabilities are renormalised over the kept tokens: return softmax over the vocabulary"),
        Mistake(salient_log_probs, "returns log-probabilities: return probabilities"),
        Mistake(salient_increasing, "holds the expected values in reverse order", signature=False),
        Mistake(salient_cap_plus_one, "one entry too many (`max_n` is 4)", signature=False),
    ],
    "target_edges": [
        Mistake(edges_gradient_only, "returns gradients alone: an edge is the source's value times the gradient"),
        Mistake(edges_uncentred_logit, "the logit target is not centred: use the logit minus the mean logit at its position"),
        Mistake(edges_vector_nodes_summed, "error and embedding edges sum the gradient over d_model: dot it with the node's value"),
        Mistake(edges_token_embedding_only, "embedding edges use W_E[token] alone: the node's value is the residual stream "
                                            "entering layer 0 (token plus position embedding), rm.embed"),
        Mistake(edges_negated, "wrong sign", signature=False),
        Mistake(edges_leaves_kept, "a different result when called a second time", signature=False),
        Mistake(edges_without_errors, "the edges from every error node are zero", signature=False),
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
        Mistake(prune_zeros_allowed, "you kept entries whose score is 0", signature=False),
        Mistake(prune_relative_to_max, "keeps scores above a share of the largest: the threshold is a share of the cumulative total"),
    ],
}
