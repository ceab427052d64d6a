"""Independent catalog, chapter 05 (attribution graphs): plausible learner implementations of
freeze_nonlinearities, salient_logits, target_edges, logit_influence and prune_by_influence,
written from the chapter's text and reference alone (see ``benchmarks/independent``)."""
from __future__ import annotations

import torch
from torch import Tensor

from benchmarks.independent import correct, wrong
from utils.graphs import replacement_forward

CH = "ch05_attribution_graphs"

# ---------------------------------------------------------------------------------------
# freeze_nonlinearities


def _names(model, *, ln1=True, ln2=True, pattern=True, final=True, pattern_hook="attn.hook_pattern",
           scale_hook="hook_scale") -> list[str]:
    names = []
    for layer in range(model.cfg.n_layers):
        if ln1:
            names.append(f"blocks.{layer}.ln1.{scale_hook}")
        if pattern:
            names.append(f"blocks.{layer}.{pattern_hook}")
        if ln2:
            names.append(f"blocks.{layer}.ln2.{scale_hook}")
    return names + ([f"ln_final.{scale_hook}"] if final else [])


def _freeze(model, cache, *, detach=True, expand=True, **which):
    def frozen(x, hook):
        value = cache[hook.name]
        value = value.detach() if detach else value
        return value.expand_as(x) if expand else value
    return [(name, frozen) for name in _names(model, **which)]


@wrong(CH, "freeze_nonlinearities", "no detach: gradients can flow into what computed the cached value",
       names=("detach", "gradient"))
def freeze_no_detach(model, cache):
    return _freeze(model, cache, detach=False)


@wrong(CH, "freeze_nonlinearities", "returns the cached batch-1 value as it is (no broadcast to x's batch)",
       names=("batch", "expand", "broadcast"))
def freeze_no_broadcast(model, cache):
    return _freeze(model, cache, expand=False)


@wrong(CH, "freeze_nonlinearities", "forgets ln_final.hook_scale", names=("ln_final",))
def freeze_no_final_norm(model, cache):
    return _freeze(model, cache, final=False)


@wrong(CH, "freeze_nonlinearities", "freezes the norm scales only, not the attention patterns", names=("pattern", "attn"))
def freeze_no_patterns(model, cache):
    return _freeze(model, cache, pattern=False)


@wrong(CH, "freeze_nonlinearities", "freezes the attention scores (before the softmax) instead of the pattern",
       names=("pattern", "attn_scores", "scores"))
def freeze_scores_not_pattern(model, cache):
    return _freeze(model, cache, pattern_hook="attn.hook_attn_scores")


@wrong(CH, "freeze_nonlinearities", "forgets ln2's scale (only ln1, the patterns and the final norm)", names=("ln2",))
def freeze_no_ln2(model, cache):
    return _freeze(model, cache, ln2=False)


@wrong(CH, "freeze_nonlinearities", "freezes hook_normalized (the whole normalised vector) instead of the scale",
       names=("hook_normalized", "normalized", "scale"))
def freeze_normalized_vectors(model, cache):
    return _freeze(model, cache, scale_hook="hook_normalized")


@wrong(CH, "freeze_nonlinearities", "late-binding closure: every hook returns the value of the last name in the loop",
       names=("closure", "late", "hook.name", "wrong value", "shape"))
def freeze_late_binding(model, cache):
    hooks = []
    for name in _names(model):
        def frozen(x, hook):
            return cache[name].detach().expand_as(x)  # `name` is read when the hook runs: the last one
        hooks.append((name, frozen))
    return hooks


@correct(CH, "freeze_nonlinearities", "one closure per name (default argument), repeat() copies instead of expand")
def freeze_closure_per_name(model, cache):
    hooks = []
    for name in _names(model):
        def frozen(x, hook, name=name):
            value = cache[name].detach()
            return value.repeat(x.shape[0], *([1] * (value.ndim - 1)))
        hooks.append((name, frozen))
    return hooks


@correct(CH, "freeze_nonlinearities", "names in another order, clone of the detached value expanded to x.shape")
def freeze_other_order(model, cache):
    names = ["ln_final.hook_scale"]
    for layer in reversed(range(model.cfg.n_layers)):
        names += [f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.ln2.hook_scale", f"blocks.{layer}.ln1.hook_scale"]

    def frozen(x, hook):
        return cache[hook.name].detach().clone().expand(x.shape)

    return [(name, frozen) for name in names]


# ---------------------------------------------------------------------------------------
# salient_logits


@wrong(CH, "salient_logits", "drops the token that crosses the coverage", names=("cross", "includ", "one more", "coverage"))
def salient_excludes_crossing(logits, coverage=0.95, max_n=10):
    probs = logits.softmax(-1)
    top = probs.topk(max_n)
    k = min(max_n, int((top.values.cumsum(0) < coverage).sum()))
    return top.indices[:k], top.values[:k]


@wrong(CH, "salient_logits", "no cap at max_n", names=("max_n", "at most"))
def salient_no_cap(logits, coverage=0.95, max_n=10):
    probs, ids = logits.softmax(-1).sort(descending=True)
    k = int((probs.cumsum(0) < coverage).sum()) + 1
    return ids[:k], probs[:k]


@wrong(CH, "salient_logits", "returns the logits of the top tokens instead of their probabilities",
       names=("probabilit", "softmax"))
def salient_returns_logits(logits, coverage=0.95, max_n=10):
    probs = logits.softmax(-1)
    top = probs.topk(max_n)
    k = min(max_n, int((top.values.cumsum(0) < coverage).sum()) + 1)
    return top.indices[:k], logits[top.indices[:k]]


@wrong(CH, "salient_logits", "returns the tokens in increasing order of probability", names=("order", "decreasing", "sort"))
def salient_ascending(logits, coverage=0.95, max_n=10):
    probs = logits.softmax(-1)
    top = probs.topk(max_n)
    k = min(max_n, int((top.values.cumsum(0) < coverage).sum()) + 1)
    return top.indices[:k].flip(0), top.values[:k].flip(0)


@wrong(CH, "salient_logits", "off by one on the cap: topk(max_n + 1)", names=("max_n", "at most"))
def salient_cap_off_by_one(logits, coverage=0.95, max_n=10):
    probs = logits.softmax(-1)
    top = probs.topk(max_n + 1)
    k = min(max_n + 1, int((top.values.cumsum(0) < coverage).sum()) + 1)
    return top.indices[:k], top.values[:k]


@wrong(CH, "salient_logits", "returns log-probabilities (log_softmax) as the probabilities",
       names=("probabilit", "log", "softmax"))
def salient_log_probs(logits, coverage=0.95, max_n=10):
    logp = logits.log_softmax(-1)
    top = logp.topk(max_n)
    k = min(max_n, int((top.values.exp().cumsum(0) < coverage).sum()) + 1)
    return top.indices[:k], top.values[:k]


@wrong(CH, "salient_logits", "returns Python lists instead of tensors", names=("tensor", "type", "list"))
def salient_returns_lists(logits, coverage=0.95, max_n=10):
    probs = logits.softmax(-1)
    top = probs.topk(max_n)
    k = min(max_n, int((top.values.cumsum(0) < coverage).sum()) + 1)
    return top.indices[:k].tolist(), top.values[:k].tolist()


@wrong(CH, "salient_logits", "keeps each token whose own probability is at least 1 - coverage (no cumulative sum)",
       names=("cumulative", "coverage", "sum"))
def salient_per_token_cutoff(logits, coverage=0.95, max_n=10):
    probs = logits.softmax(-1)
    top = probs.topk(max_n)
    keep = top.values >= 1 - coverage
    return top.indices[keep], top.values[keep]


@correct(CH, "salient_logits", "a loop over the sorted probabilities, accumulating until coverage")
def salient_loop(logits, coverage=0.95, max_n=10):
    probs = logits.softmax(-1)
    values, ids = probs.sort(descending=True)
    total, k = 0.0, 0
    while k < max_n and k < len(values):
        total += values[k].item()
        k += 1
        if total >= coverage:
            break
    return ids[:k], values[:k]


@correct(CH, "salient_logits", "searchsorted on the cumulative sum")
def salient_searchsorted(logits, coverage=0.95, max_n=10):
    probs = torch.softmax(logits, dim=0)
    values, ids = torch.sort(probs, descending=True)
    cumulative = values.cumsum(0)
    k = int(torch.searchsorted(cumulative, torch.tensor(coverage, dtype=cumulative.dtype))) + 1
    k = min(k, max_n, len(values))
    return ids[:k].clone(), values[:k].clone()


# ---------------------------------------------------------------------------------------
# target_edges


def _edges(rm, nodes, target, *, times_value=True, centre=True, errors=True, embeds=True, position_sum=False,
           sign=1.0, prob_target=False, leaves=None) -> Tensor:
    leaves = rm.leaves(1) if leaves is None else leaves
    with torch.enable_grad():
        pre, logits = replacement_forward(rm, leaves)
        if target.kind == "logit":
            row = logits[0, target.pos]
            if prob_target:
                value = row.softmax(-1)[target.index]
            else:
                value = row[target.index] - (row.mean() if centre else 0.0)
        else:
            value = pre[target.layer][0, :, target.index].sum() if position_sum else pre[target.layer][0, target.pos, target.index]
        value.backward()
    grad = {k: (v.grad[0] if v.grad is not None else torch.zeros_like(v[0])) for k, v in leaves.items()}
    out = torch.zeros(len(nodes), dtype=rm.embed.dtype)
    for j, n in enumerate(nodes):
        if n.kind == "embed" and embeds:
            g, v = grad["embed"][n.pos], rm.embed[n.pos]
            out[j] = g @ v if times_value else g.sum()
        elif n.kind == "transcoder" and n.is_error and errors:
            g, v = grad[f"error.{n.layer}"][n.pos], rm.errors[n.layer][n.pos]
            out[j] = g @ v if times_value else g.sum()
        elif n.kind == "transcoder" and not n.is_error:
            g = grad[f"latents.{n.layer}"][n.pos, n.index]
            out[j] = g * rm.acts[n.layer][n.pos, n.index] if times_value else g
    return sign * out


@wrong(CH, "target_edges", "the gradient alone, not value times gradient", names=("value", "activation", "times"))
def edges_gradient_only(rm, nodes, target):
    return _edges(rm, nodes, target, times_value=False)


@wrong(CH, "target_edges", "logit target not centred (the raw logit, not minus the mean logit)",
       names=("mean logit", "centred", "centered", "minus the mean"))
def edges_uncentred_logit(rm, nodes, target):
    return _edges(rm, nodes, target, centre=False)


@wrong(CH, "target_edges", "error-node edges left at zero", names=("error",))
def edges_no_error_nodes(rm, nodes, target):
    return _edges(rm, nodes, target, errors=False)


@wrong(CH, "target_edges", "embedding-node edges left at zero", names=("embed",))
def edges_no_embeddings(rm, nodes, target):
    return _edges(rm, nodes, target, embeds=False)


@wrong(CH, "target_edges", "latent target summed over every position", names=("position",))
def edges_target_every_position(rm, nodes, target):
    return _edges(rm, nodes, target, position_sum=True)


@wrong(CH, "target_edges", "negated: the change when the source is removed (minus the edge)", names=("sign", "negat"))
def edges_negated(rm, nodes, target):
    return _edges(rm, nodes, target, sign=-1.0)


@wrong(CH, "target_edges", "logit target as the token's probability (softmax), not the centred logit",
       names=("probabilit", "softmax", "logit"))
def edges_probability_target(rm, nodes, target):
    return _edges(rm, nodes, target, prob_target=True)


_CACHED_LEAVES: dict[int, dict[str, Tensor]] = {}


@wrong(CH, "target_edges", "reuses one set of leaves across calls: gradients accumulate",
       names=("accumulat", "fresh", "leaves", "grad"))
def edges_reused_leaves(rm, nodes, target):
    leaves = _CACHED_LEAVES.setdefault(id(rm), rm.leaves(1))
    return _edges(rm, nodes, target, leaves=leaves)


@correct(CH, "target_edges", "torch.autograd.grad on every leaf, products in float64, vectorised by node kind")
def edges_autograd_float64(rm, nodes, target):
    leaves = rm.leaves(1)
    names = list(leaves)
    with torch.enable_grad():
        pre, logits = replacement_forward(rm, leaves)
        if target.kind == "logit":
            centred = logits[0, target.pos] - logits[0, target.pos].mean()
            value = centred[target.index]
        else:
            value = pre[target.layer][0, target.pos, target.index]
        grads = torch.autograd.grad(value, [leaves[n] for n in names], allow_unused=True)
    grad = {n: (g[0] if g is not None else torch.zeros_like(leaves[n][0])).double() for n, g in zip(names, grads)}
    out = torch.zeros(len(nodes), dtype=torch.float64)
    for j, n in enumerate(nodes):
        if n.kind == "embed":
            out[j] = torch.dot(grad["embed"][n.pos], rm.embed[n.pos].double())
        elif n.kind == "transcoder" and n.is_error:
            out[j] = torch.dot(grad[f"error.{n.layer}"][n.pos], rm.errors[n.layer][n.pos].double())
        elif n.kind == "transcoder":
            out[j] = grad[f"latents.{n.layer}"][n.pos, n.index] * rm.acts[n.layer][n.pos, n.index].double()
    return out.to(rm.embed.dtype)


@correct(CH, "target_edges", "gradient times input over whole leaves (einsum), then gathered per node")
def edges_gradient_times_input(rm, nodes, target):
    leaves = rm.leaves(1)
    with torch.enable_grad():
        pre, logits = replacement_forward(rm, leaves)
        if target.kind == "logit":
            value = logits[0, target.pos, target.index] - logits[0, target.pos].mean()
        else:
            value = pre[target.layer][0, target.pos, target.index]
        value.backward()

    def contribution(name: str, values: Tensor) -> Tensor:
        g = leaves[name].grad
        g = torch.zeros_like(values) if g is None else g[0]
        return g * values

    embed = contribution("embed", rm.embed).sum(-1)  # [pos]
    err = {L: contribution(f"error.{L}", e).sum(-1) for L, e in rm.errors.items()}  # [pos]
    lat = {L: contribution(f"latents.{L}", a) for L, a in rm.acts.items()}  # [pos, d_sae]
    out = []
    for n in nodes:
        if n.kind == "embed":
            out.append(embed[n.pos])
        elif n.kind == "transcoder" and n.is_error:
            out.append(err[n.layer][n.pos])
        elif n.kind == "transcoder":
            out.append(lat[n.layer][n.pos, n.index])
        else:
            out.append(torch.zeros((), dtype=rm.embed.dtype))
    return torch.stack(out)


# ---------------------------------------------------------------------------------------
# logit_influence


def _normalise(a: Tensor, by: str = "row") -> Tensor:
    if by == "row":
        return a / a.sum(1, keepdim=True).clamp(min=torch.finfo(a.dtype).tiny)
    if by == "column":
        return a / a.sum(0, keepdim=True).clamp(min=torch.finfo(a.dtype).tiny)
    return a / a.sum().clamp(min=torch.finfo(a.dtype).tiny)


def _series(norm: Tensor, w: Tensor, *, include_zero=False, transpose=False, max_terms=None) -> Tensor:
    step = (lambda v: norm @ v) if transpose else (lambda v: v @ norm)
    total = w.clone() if include_zero else torch.zeros_like(w)
    term = step(w)
    for _ in range(len(w) if max_terms is None else max_terms):
        if not term.any():
            break
        total = total + term
        term = step(term)
    return total


@wrong(CH, "logit_influence", "normalises the signed adjacency (no absolute value)", names=("abs", "absolute", "sign"))
def influence_signed(adjacency, logit_weights):
    a = adjacency
    return _series(a / a.sum(1, keepdim=True).clamp(min=1e-30), logit_weights)


@wrong(CH, "logit_influence", "includes the length-zero term (the weights themselves)",
       names=("length zero", "length 0", "length-zero", "weights themselves", "logit_weights", "logit nodes"))
def influence_includes_weights(adjacency, logit_weights):
    return _series(_normalise(adjacency.abs()), logit_weights, include_zero=True)


@wrong(CH, "logit_influence", "normalises columns (over targets) instead of rows", names=("row", "column", "normalis", "normaliz"))
def influence_column_normalised(adjacency, logit_weights):
    return _series(_normalise(adjacency.abs(), "column"), logit_weights)


@wrong(CH, "logit_influence", "multiplies on the wrong side (Â w instead of w Â)",
       names=("transpos", "direction", "row", "column", "side"))
def influence_wrong_side(adjacency, logit_weights):
    return _series(_normalise(adjacency.abs()), logit_weights, transpose=True)


@wrong(CH, "logit_influence", "direct effects only: w Â, no longer paths", names=("length", "path", "series", "indirect"))
def influence_one_step(adjacency, logit_weights):
    return logit_weights @ _normalise(adjacency.abs())


@wrong(CH, "logit_influence", "divides by the row sums without guarding empty rows: NaN", names=("nan", "zero row", "no input", "empty"))
def influence_nan_rows(adjacency, logit_weights):
    a = adjacency.abs()
    return _series(a / a.sum(1, keepdim=True), logit_weights)


@wrong(CH, "logit_influence", "stops after two terms (Â + Â²)", names=("series", "length", "term", "path"))
def influence_two_terms(adjacency, logit_weights):
    return _series(_normalise(adjacency.abs()), logit_weights, max_terms=2)


@wrong(CH, "logit_influence", "normalises by the whole matrix's sum instead of each row's", names=("row", "normalis", "normaliz"))
def influence_global_normalisation(adjacency, logit_weights):
    return _series(_normalise(adjacency.abs(), "all"), logit_weights)


@correct(CH, "logit_influence", "closed form w((I - Â)^-1 - I) by a linear solve in float64")
def influence_solve(adjacency, logit_weights):
    a = adjacency.abs().double()
    rows = a.sum(1, keepdim=True)
    norm = torch.where(rows > 0, a / torch.where(rows > 0, rows, torch.ones_like(rows)), torch.zeros_like(a))
    eye = torch.eye(len(a), dtype=torch.float64)
    w = logit_weights.double()
    # x (I - Â) = w  <=>  (I - Â)^T x^T = w^T
    x = torch.linalg.solve((eye - norm).T, w)
    return (x - w).to(logit_weights.dtype)


@correct(CH, "logit_influence", "a fixed number of matrix powers (nilpotent, no early stop)")
def influence_fixed_powers(adjacency, logit_weights):
    a = adjacency.abs()
    sums = a.sum(dim=1)
    norm = a / torch.where(sums == 0, torch.ones_like(sums), sums)[:, None]
    total = torch.zeros_like(logit_weights)
    term = logit_weights
    for _ in range(len(logit_weights)):
        term = term @ norm
        total = total + term
    return total


# ---------------------------------------------------------------------------------------
# prune_by_influence


@wrong(CH, "prune_by_influence", "drops the entry that crosses the threshold", names=("cross", "includ"))
def prune_excludes_crossing(scores, threshold):
    order = scores.argsort(descending=True)
    share = scores[order].cumsum(0) / scores.sum()
    k = int((share < threshold).sum())
    keep = torch.zeros(len(scores), dtype=torch.bool)
    keep[order[:k]] = True
    return keep & (scores > 0)


@wrong(CH, "prune_by_influence", "keeps zero scores when the threshold reaches them", names=("zero",))
def prune_keeps_zeros(scores, threshold):
    order = scores.argsort(descending=True)
    share = scores[order].cumsum(0) / scores.sum()
    k = int((share < threshold).sum()) + 1
    keep = torch.zeros(len(scores), dtype=torch.bool)
    keep[order[:k]] = True
    return keep


@wrong(CH, "prune_by_influence", "sorts ascending: keeps the lowest scores", names=("highest", "largest", "order", "descending"))
def prune_ascending(scores, threshold):
    order = scores.argsort()
    share = scores[order].cumsum(0) / scores.sum()
    k = int((share < threshold).sum()) + 1
    keep = torch.zeros(len(scores), dtype=torch.bool)
    keep[order[:k]] = True
    return keep & (scores > 0)


@wrong(CH, "prune_by_influence", "returns the kept indices instead of a Bool mask", names=("mask", "bool", "dtype", "type", "shape"))
def prune_returns_indices(scores, threshold):
    order = scores.argsort(descending=True)
    share = scores[order].cumsum(0) / scores.sum()
    k = int((share < threshold).sum()) + 1
    kept = order[:k]
    return kept[scores[kept] > 0]


@wrong(CH, "prune_by_influence", "keeps each entry whose own share is at least 1 - threshold (no cumulative sum)",
       names=("cumulative", "sum", "share"))
def prune_per_entry(scores, threshold):
    return (scores / scores.sum() >= 1 - threshold) & (scores > 0)


@wrong(CH, "prune_by_influence", "mask built in sorted order (keep[:k] = True), not mapped back", names=("order", "original", "index", "position"))
def prune_sorted_order_mask(scores, threshold):
    order = scores.argsort(descending=True)
    share = scores[order].cumsum(0) / scores.sum()
    k = int((share < threshold).sum()) + 1
    keep = torch.zeros(len(scores), dtype=torch.bool)
    keep[:k] = True
    return keep & (scores > 0)


@wrong(CH, "prune_by_influence", "cumulative share divided by the largest score instead of the total", names=("total", "sum"))
def prune_share_of_max(scores, threshold):
    order = scores.argsort(descending=True)
    share = scores[order].cumsum(0) / scores.max()
    k = int((share < threshold).sum()) + 1
    keep = torch.zeros(len(scores), dtype=torch.bool)
    keep[order[:k]] = True
    return keep & (scores > 0)


@correct(CH, "prune_by_influence", "a Python loop over the sorted entries, accumulating in float64")
def prune_loop(scores, threshold):
    values = scores.double()
    total = values.sum().item()
    keep = torch.zeros(len(scores), dtype=torch.bool)
    running = 0.0
    for i in values.argsort(descending=True).tolist():
        if values[i] <= 0:
            break
        keep[i] = True
        running += values[i].item()
        if running >= threshold * total:
            break
    return keep


@correct(CH, "prune_by_influence", "searchsorted on the cumulative sum, scatter back to the original order")
def prune_searchsorted(scores, threshold):
    values, order = torch.sort(scores, descending=True)
    cumulative = values.cumsum(0)
    k = int(torch.searchsorted(cumulative, threshold * cumulative[-1])) + 1
    sorted_keep = (torch.arange(len(scores)) < k) & (values > 0)
    return torch.zeros_like(sorted_keep).scatter(0, order, sorted_keep)


# ---------------------------------------------------------------------------------------
# Changes to `names` phrases after the first run (with the message that prompted each):
# none after the first run (results_before_ch03-06.json): no caught-but-unnamed message names its mistake in other words.
