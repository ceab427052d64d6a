"""Checks of chapter 05 (Attribution graphs). Each runs your function on the checks' own toy
backend, watches what it does, and compares with known outputs recorded from the reference;
a failure names the likely mistake (the catalogued ones in ``tests/mistakes``, or a generic
family of ``utils.course.compare``)."""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Int
from sae_lens import HookedSAETransformer
from torch import Tensor

from tests.mistakes.ch05_attribution_graphs import MISTAKES
from utils.backends import Backend
from utils.course.checking import (
    backend,
    consistent,
    exercise_check,
    expect_tensor,
    fail,
    known,
    recording_now,
    run,
    seed,
    signatures,
)
from utils.graphs import Graph, build_graph, local_replacement, salient_logit_ids
from utils.nodes import Node

CHAPTER = "ch05_attribution_graphs"


def _transcoders(bk: Backend) -> list[Any]:
    return [bk.dictionary("transcoder", layer) for layer in range(bk.model.cfg.n_layers)]


def _graph(bk: Backend, tokens: Int[Tensor, "1 pos"], key: str) -> tuple[Any, Graph]:
    """The prompt's replacement model and graph, of the latents above a threshold chosen by
    the reference (stored under ``key``)."""
    rm = local_replacement(bk.model, _transcoders(bk), tokens)
    return rm, build_graph(rm, salient_logit_ids(rm.logits[-1])[0], threshold=known(key, _clear_threshold(rm)))


def _clear_threshold(rm: Any) -> float:
    """A small activation threshold in the widest gap between the activations in
    (0.02, 0.3): latents near zero would be active on one machine and not another, and a
    graph of the latents above a clear threshold has the same nodes everywhere."""
    acts = torch.cat([a.flatten() for a in rm.acts.values()]).double()
    inside = torch.cat([torch.tensor([0.02, 0.3], dtype=acts.dtype), acts[(acts > 0.02) & (acts < 0.3)]]).sort().values
    gap = int((inside[1:] - inside[:-1]).argmax())
    return float(inside[gap] + inside[gap + 1]) / 2


# ---------------------------------------------------------------------------------------
# 1. freeze_nonlinearities


def _logits_with(model: HookedSAETransformer, hooks: Any, tokens: Tensor, watch: bool = False) -> Any:
    """Logits of ``tokens`` with ``hooks``; with ``watch``, also the largest gradient reaching
    any attention score from the sum of the logits (the residual stream entering layer 0 a leaf)."""
    scores: list[Tensor] = []

    def leaf(x: Tensor, hook: Any) -> Tensor:
        return x.detach().requires_grad_(True)

    def keep(x: Tensor, hook: Any) -> None:
        x.retain_grad()
        scores.append(x)

    extra = [("blocks.0.hook_resid_pre", leaf)] + [(f"blocks.{L}.attn.hook_attn_scores", keep) for L in range(model.cfg.n_layers)]
    with torch.set_grad_enabled(watch), model.hooks(fwd_hooks=extra + list(hooks) if watch else list(hooks)):
        logits = model(tokens)
        if not watch:
            return logits
        logits.sum().backward()
    return logits.detach(), max((s.grad.abs().max().item() for s in scores if s.grad is not None), default=0.0)


def _valid_hooks(hooks: Any) -> list[tuple[str, Callable[..., Tensor]]]:
    if not isinstance(hooks, (list, tuple)) or not all(
            isinstance(h, (list, tuple)) and len(h) == 2 and isinstance(h[0], str) and callable(h[1]) for h in hooks):
        fail(f"expected a list of (hook_name, hook_fn) pairs, got {type(hooks).__name__}")
    return list(hooks)


@exercise_check(CHAPTER)
def check_freeze_nonlinearities(freeze_nonlinearities: Any) -> None:
    bk = backend()
    model = bk.model
    for i, (task, n_other) in enumerate([("facts", 3), ("ioi", 1)]):
        batch = bk.world.task_batch(task, n_other + 1, seed=seed(1 + i))
        with torch.no_grad():
            _, cache = model.run_with_cache(batch.tokens[:1])
        # The cached values are leaves that require grad, as if they had been computed with gradients on:
        # a hook must detach them, so that no gradient reaches what computed them.
        cache = {name: value.detach().clone().requires_grad_(value.is_floating_point()) for name, value in cache.items()}
        hooks = _valid_hooks(run(freeze_nonlinearities, bk, model, cache))
        other = batch.tokens[1:]  # other prompts of the same length, frozen at the first one's values
        _expect_batch_shape(model, hooks, cache, len(other))
        try:
            got, leak = _logits_with(model, hooks, other, watch=True)
        except Exception as error:  # the learner's hooks raised inside the model
            fail(f"running the model with your hooks raised {type(error).__name__}: {error}")
        mistakes = signatures(MISTAKES["freeze_nonlinearities"], model, cache).select(
            lambda hooks, other=other: _logits_with(model, hooks, other))
        expect_tensor(got, known(f"logits_{i}", got), name=f"logits of {n_other} other {task} prompt(s) with your hooks",
                      dims="batch pos d_vocab", mistakes=mistakes)
        if leak > 1e-6:
            fail(f"the values are frozen, but a gradient of size {leak:.3g} still reaches the attention scores: "
                 "return the cached value itself (detached), not one that carries the gradient of x")
        reached = sorted(name for name, value in cache.items() if value.grad is not None and value.grad.abs().max() > 0)
        if reached:
            fail(f"gradients reach the cached values ({', '.join(reached[:2])}{' ...' if len(reached) > 2 else ''}): "
                 "return cache[name].detach(), so that no gradient flows into whatever computed them")
        _expect_hook_names(model, hooks)


def _frozen_names(model: HookedSAETransformer) -> list[str]:
    """The hook points the exercise asks to freeze, at every layer."""
    return [f"blocks.{L}.{h}" for L in range(model.cfg.n_layers)
            for h in ("ln1.hook_scale", "attn.hook_pattern", "ln2.hook_scale")] + ["ln_final.hook_scale"]


def _expect_hook_names(model: HookedSAETransformer, hooks: list[tuple[str, Callable[..., Tensor]]]) -> None:
    names, wanted = [name for name, _ in hooks], _frozen_names(model)
    missing, extra = [n for n in wanted if n not in names], sorted({n for n in names if n not in wanted})
    hint = (" (the scores come before the softmax: freeze attn.hook_pattern, the pattern itself)"
            if any("hook_attn_scores" in n for n in extra) else "")
    if missing and extra:
        fail(f"your hooks replace {', '.join(extra[:2])}{' ...' if len(extra) > 2 else ''} where the exercise asks for "
             f"{', '.join(missing[:2])}{' ...' if len(missing) > 2 else ''}{hint}")
    if missing:
        fail(f"no hook replaces {', '.join(missing)}: freeze every norm scale and attention pattern, at every layer")
    if extra:
        fail(f"your hooks also replace {', '.join(extra)}, which the exercise does not ask for{hint}")


def _expect_batch_shape(model: HookedSAETransformer, hooks: list[tuple[str, Callable[..., Tensor]]],
                        cache: dict[str, Tensor], batch: int) -> None:
    """Each hook, called on an activation of ``batch`` prompts, returns that activation's shape."""
    for name, fn in hooks:
        if name not in cache or name not in model.hook_dict:
            continue
        x = cache[name].detach().expand(batch, *cache[name].shape[1:]).clone()
        try:
            out = fn(x, hook=model.hook_dict[name])
        except Exception as error:
            fail(f"your hook for {name}, called on an activation of {batch} prompts, raised {type(error).__name__}: {error}")
        if isinstance(out, Tensor) and tuple(out.shape) != tuple(x.shape):
            fail(f"your hook for {name} returns shape {list(out.shape)} on an activation of shape {list(x.shape)}: "
                 f"broadcast the prompt's value to x's batch (expand_as(x)), so the hook works on {batch} prompts")


# ---------------------------------------------------------------------------------------
# 2. salient_logits


@exercise_check(CHAPTER)
def check_salient_logits(salient_logits: Any) -> None:
    bk = backend()
    model = bk.model
    facts = bk.world.task_batch("facts", 1, seed=seed(10)).tokens
    text = bk.world.corpus(4, 16, seed=seed(11)).tokens
    with torch.no_grad():
        fact_logits = model(facts)[0, -1]
        text_logits = model(text).flatten(0, 1)  # [token, d_vocab]
    cum = text_logits.double().softmax(-1).sort(-1, descending=True).values.cumsum(-1)  # [token, d_vocab]
    k = (cum < 0.95).sum(-1) + 1
    clear = ((cum - 0.95).abs() > 1e-3).all(-1)  # no partial sum within float noise of the coverage
    middle = int(torch.where(clear & (k >= 3) & (k <= 8), (k - 5).abs(), 10**6).argmin())  # a few tokens cover it
    flat = int(k.argmax())  # the least certain token: many are needed
    configs = [(fact_logits, 0.95, 10), (text_logits[middle], 0.95, 10), (text_logits[flat], 0.95, 4),
               (text_logits[middle] / 2, 0.8, 20)]
    for i, (logits, coverage, max_n) in enumerate(configs):
        got = run(salient_logits, bk, logits, coverage, max_n)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            fail(f"expected a pair (token ids, probabilities), got {type(got).__name__}")
        mistakes = signatures(MISTAKES["salient_logits"], logits, coverage, max_n)
        what = f"(coverage {coverage}, max_n {max_n})"
        ids_want = known(f"ids_{i}", got[0])
        if isinstance(got[0], Tensor) and isinstance(ids_want, Tensor) and got[0].shape != ids_want.shape:
            for diagnosis, result in mistakes.items():
                out = result()
                if out is not None and tuple(out[0].shape) == tuple(got[0].shape):
                    fail(f"token ids {what}: {diagnosis}")
        expect_tensor(got[0], ids_want, name=f"token ids {what}", dims="k",
                      mistakes=mistakes.select(lambda out: out[0]))
        expect_tensor(got[1], known(f"probs_{i}", got[1]), name=f"probabilities {what}", dims="k",
                      mistakes=mistakes.select(lambda out: out[1]))


# ---------------------------------------------------------------------------------------
# 3. target_edges


@exercise_check(CHAPTER)
def check_target_edges(target_edges: Any) -> None:
    bk = backend()
    for i, (task, which) in enumerate([("facts", "logit"), ("ioi", "layer1"), ("induction", "layer0"), ("ioi", "logit")]):
        tokens = bk.world.task_batch(task, 1, seed=seed(20 + i)).tokens
        rm, graph = _graph(bk, tokens, f"threshold_{i}")
        nodes = graph.nodes
        if which == "logit":
            target = nodes[-1]
        else:  # the most active latent of that layer at the last position (layer 1) or a middle one (layer 0)
            layer, pos = (1, rm.n_pos - 1) if which == "layer1" else (0, rm.n_pos // 2)
            target = Node("transcoder", layer, pos, known(f"latent_{i}", int(rm.acts[layer][pos].argmax())))
        got = run(target_edges, bk, rm, nodes, target, twice=i == 0)  # fresh leaves in every call
        want = known(f"edges_{i}", got)
        _expect_every_kind(got, want, nodes)
        expect_tensor(got, want, name=f"edges into {target} ({task} prompt)", dims="n_nodes",
                      mistakes=signatures(MISTAKES["target_edges"], rm, nodes, target))


def _expect_every_kind(got: Any, want: Tensor, nodes: list[Node]) -> None:
    """Edges right everywhere but zero for every source of one kind (embeddings, error nodes, latents)."""
    if not isinstance(got, Tensor) or got.shape != want.shape or not got.is_floating_point():
        return
    got = got.detach().cpu().to(want.dtype)
    tol = 5e-3 * want.abs().max().item()
    groups = {"embedding": [n.kind == "embed" for n in nodes], "error": [n.is_error for n in nodes],
              "latent": [n.kind == "transcoder" and not n.is_error for n in nodes]}
    for kind, mask in groups.items():
        mask_t = torch.tensor(mask)
        wrong = (got - want).abs() > tol
        if mask_t.any() and wrong.any() and not (wrong & ~mask_t).any() and (got[mask_t].abs() <= tol).all() \
                and (want[mask_t].abs() > tol).any():
            fail(f"the edges from every {kind} node are zero, the rest matches: {kind} nodes are sources too "
                 "(value times gradient)")


# ---------------------------------------------------------------------------------------
# 4. logit_influence


def _random_dag(n: int, n_logits: int, generator: torch.Generator, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """A random sparse acyclic adjacency (edges from lower to higher index) with signed
    weights, the last ``n_logits`` nodes weighted like logits."""
    weights = torch.randn(n, n, generator=generator, dtype=torch.float64)
    keep = (torch.rand(n, n, generator=generator, dtype=torch.float64) < 0.3).tril(-1)
    keep[: n // 4] = False  # the first quarter are sources only (embeddings)
    w = torch.zeros(n, dtype=torch.float64)
    w[-n_logits:] = torch.rand(n_logits, generator=generator, dtype=torch.float64).softmax(0)
    return (weights * keep).to(dtype), w.to(dtype)


@exercise_check(CHAPTER)
def check_logit_influence(logit_influence: Any) -> None:
    bk = backend()
    dtype = bk.model.cfg.dtype
    _, graph = _graph(bk, bk.world.task_batch("facts", 1, seed=seed(30)).tokens, "threshold")
    cases = [(graph.adjacency, graph.logit_weights, "the fact prompt's graph")]
    for i, (n, k) in enumerate([(12, 1), (40, 3)]):
        adjacency, weights = _random_dag(n, k, torch.Generator().manual_seed(seed(31 + i)), dtype)
        cases.append((adjacency, weights, f"a random graph of {n} nodes"))
    for i, (adjacency, weights, what) in enumerate(cases):
        got = run(logit_influence, bk, adjacency, weights)
        expect_tensor(got, known(f"influence_{i}", got), name=f"influence ({what})", dims="n_nodes",
                      mistakes=signatures(MISTAKES["logit_influence"], adjacency, weights))


# ---------------------------------------------------------------------------------------
# 5. prune_by_influence


@exercise_check(CHAPTER)
def check_prune_by_influence(prune_by_influence: Any) -> None:
    bk = backend()
    dtype = bk.model.cfg.dtype
    _, graph = _graph(bk, bk.world.task_batch("ioi", 1, seed=seed(40)).tokens, "threshold")
    from solutions.ch05_attribution_graphs import logit_influence

    latents = graph.mask("transcoder", error=False)
    scores = torch.where(latents, logit_influence(graph.adjacency, graph.logit_weights), 0.0)
    generator = torch.Generator().manual_seed(seed(41))
    random = torch.empty(50, dtype=torch.float64).exponential_(generator=generator)
    random[torch.rand(50, generator=generator) < 0.2] = 0.0
    cases = [(scores, 0.8, "latent influence on an IOI graph"), (scores, 0.5, "the same at 0.5"),
             (random.to(dtype), 0.98, "50 random scores, some zero"), (random[:6].to(dtype), 0.6, "6 random scores"),
             (torch.zeros(8, dtype=dtype), 0.5, "8 scores, all zero"), (random[:12].to(dtype), 1.0, "12 random scores, some zero")]
    results = []
    for i, (values, threshold, _) in enumerate(cases):
        got = functools.cache(lambda values=values, threshold=threshold: run(prune_by_influence, bk, values, threshold))
        want = known(f"keep_{i}", got()) if recording_now() else known(f"keep_{i}", None)
        results.append((got, want, signatures(MISTAKES["prune_by_influence"], values, threshold)))
    for (got, want, _), (values, threshold, what), mistakes in zip(results, cases, consistent(results)):
        kept_zero = isinstance(got(), Tensor) and got().dtype == torch.bool and got().shape == values.shape and \
            bool((got().cpu() & (values.cpu() == 0)).any())
        if kept_zero and not (want & (values.cpu() == 0)).any():
            fail(f"mask ({what}, threshold {threshold}): you kept entries whose score is 0: never keep a zero, "
                 "even where the cumulative sum has not reached the threshold")
        expect_tensor(got(), want, name=f"mask ({what}, threshold {threshold})", dims="n", mistakes=mistakes)
