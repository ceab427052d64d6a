"""Checks of chapter 02 (Error nodes). Each runs your function on the checks' own toy backend,
watches what it does, and compares with known outputs recorded from the reference; a
failure names the likely mistake (the catalogued ones in ``tests/mistakes``, or a generic
family of ``utils.course.compare``)."""
from __future__ import annotations

import functools
from typing import Any

import torch
from sae_lens import SAE
from torch import Tensor

from tests.mistakes.ch02_error_nodes import MISTAKES
from utils.backends import Backend
from utils.course.checking import (
    backend,
    recording_now as _recording,
    consistent,
    exercise_check,
    expect_tensor,
    fail,
    known,
    python_number,
    run,
    seed,
    signatures,
)
from utils.circuits import NodeBaseline, dictionary_values, mean_baseline, node_attribution, rank_nodes
from utils.nodes import KINDS, Node

CHAPTER = "ch02_error_nodes"

NUMBERS = torch.float32  # scores the learner returns as Python numbers, compared as the fixtures hold them


def _number(value: Any, name: str) -> float:
    """``value`` as a float if it is a Python number ("as floats", the exercises say), or a
    failure saying what it is instead."""
    return python_number(value, name)


def _numbers(out: Any, names: tuple[str, ...]) -> Tensor:
    """A result that should be a tuple of numbers, as a tensor (None if it is not one)."""
    if not isinstance(out, tuple) or len(out) != len(names):
        return None
    try:
        return torch.tensor([_number(v, n) for v, n in zip(out, names)], dtype=NUMBERS)
    except Exception:
        return None


def _expect_numbers(got: Any, key: str, names: tuple[str, ...], what: str, mistakes: Any) -> None:
    """Compare a tuple of numbers with the known one (one tensor: signatures apply to the whole)."""
    if not isinstance(got, tuple) or len(got) != len(names):
        fail(f"expected a tuple ({', '.join(names)}), got {type(got).__name__}"
             + (f" of length {len(got)}" if isinstance(got, (tuple, list)) else ""))
    values = torch.tensor([_number(v, n) for v, n in zip(got, names)], dtype=NUMBERS)
    want = known(key, values)
    if torch.allclose(values.flip(0), want, rtol=1e-3, atol=1e-6) and not torch.allclose(values, want, rtol=1e-3, atol=1e-6):
        fail(f"{what}: you returned ({', '.join(reversed(names))}): return ({', '.join(names)})", header=what)
    expect_tensor(values, want, name=f"{what} ({', '.join(names)})", entries=names,
                  mistakes=mistakes.select(lambda out: _numbers(out, names)))


# ---------------------------------------------------------------------------------------
# 1. error_term and spliced_task_scores


@exercise_check(CHAPTER)
def check_error_term(error_term: Any) -> None:
    bk = backend()
    configs = [("resid_sae", 0, "ioi", 3), ("transcoder", 0, "induction", 2), ("attn_sae", 1, "facts", 1),
               ("transcoder", 1, "ioi", 2)]
    for i, (kind, layer, task, n) in enumerate(configs):
        dictionary = bk.dictionary(kind, layer)
        tokens = bk.world.task_batch(task, n, seed=seed(1 + i)).tokens
        got = run(error_term, bk, bk.model, dictionary, tokens)
        dims = "batch pos n_heads d_head" if kind == "attn_sae" else "batch pos d_model"
        mistakes = {**signatures(MISTAKES["error_term"], bk.model, dictionary, tokens), **_other_hooks(bk, dictionary, tokens)}
        expect_tensor(got, known(f"error_{i}", got), name=f"error term ({kind}{layer}, {n} prompts)", dims=dims,
                      mistakes=mistakes)


def _other_hooks(bk: Backend, dictionary: SAE, tokens: Tensor) -> dict[str, Any]:
    """The error term with x read at another hook point of the same block, of the same shape
    (e.g. hook_resid_mid for ln2.hook_normalized): a dictionary reads cfg.metadata.hook_name only."""
    meta = dictionary.cfg.metadata
    reads, writes = meta.hook_name, getattr(meta, "hook_name_out", None) or meta.hook_name
    block = ".".join(reads.split(".")[:2]) + "." if reads.startswith("blocks.") else ""

    def error_reading(other: str) -> Any:
        names = [other, reads, writes]
        with torch.no_grad():
            _, cache = bk.model.run_with_cache(tokens, names_filter=names)
            if cache[other].shape != cache[reads].shape:
                return None
            y = cache[other] if writes == reads else cache[writes]
            return y - dictionary.decode(dictionary.encode(cache[other]))

    others = [h for h in bk.model.hook_dict if h.startswith(block) and h not in (reads, writes) and "hook_sae" not in h]
    return {f"this reads x at {other}: the dictionary reads cfg.metadata.hook_name = {reads}, and its error is "
            f"{'x' if writes == reads else writes} - decode(encode(x))": (lambda other=other: error_reading(other))
            for other in others}


@exercise_check(CHAPTER)
def check_spliced_task_scores(spliced_task_scores: Any) -> None:
    bk = backend()
    configs = [("greater_than", 8, [("transcoder", 0)], False), ("induction", 8, [("attn_sae", 0)], False),
               ("ioi", 4, [("transcoder", 0), ("resid_sae", 1)], True), ("facts", 1, [("attn_sae", 0), ("resid_sae", 1)], False)]
    for i, (task, n, keys, use_error_term) in enumerate(configs):
        batch = bk.world.task_batch(task, n, seed=seed(10 + i))
        dictionaries = [bk.dictionary(*key) for key in keys]
        got = run(spliced_task_scores, bk, bk.model, dictionaries, batch, use_error_term=use_error_term)
        what = f"{task}, {'+'.join(f'{k}{layer}' for k, layer in keys)}, use_error_term={use_error_term}"
        _expect_numbers(got, f"scores_{i}", ("accuracy", "mean logit difference"), what,
                        signatures(MISTAKES["spliced_task_scores"], bk.model, dictionaries, batch, use_error_term=use_error_term))


# ---------------------------------------------------------------------------------------
# 2. ablate_nodes


def _top_latents(bk: Backend, dictionary: SAE, tokens: Tensor, pos: int, k: int, key: str) -> list[int]:
    """The k latents with the largest mean activation at ``pos``: chosen from the backend when
    known outputs are recorded, then stored, so float noise elsewhere cannot change the choice."""
    acts, _ = dictionary_values(bk.model, [dictionary], tokens)[dictionary.cfg.metadata.hook_name]
    return known(key, acts[:, pos].mean(0).topk(k).indices.tolist())


def _baseline(bk: Backend, dictionaries: list[SAE], task: str, draw: int) -> NodeBaseline:
    """Position-wise means over 16 other prompts of the task (seed ``draw``)."""
    return mean_baseline(bk.model, dictionaries, bk.world.task_batch(task, 16, seed=draw).tokens)


def _ranked(bk: Backend, dictionaries: list[SAE], batch: Any, baseline: NodeBaseline, k: int, key: str,
            errors: bool = True) -> list[Node]:
    """The k nodes with the largest mean attribution: a circuit drawn from the backend when known
    outputs are recorded, then stored, so near-ties cannot reorder it on another machine."""
    from solutions.ch01_attribution import logit_diff

    with torch.no_grad():
        attribution = node_attribution(bk.model, dictionaries, batch.tokens,
                                       lambda logits: logit_diff(logits, batch.answer_ids, batch.distractor_ids), baseline)
    ranked = rank_nodes({hook: a.mean(0) for hook, a in attribution.items()}, dictionaries, errors=errors, k=k)
    return [Node.parse(text) for text in known(key, [str(node) for node in ranked])]


@exercise_check(CHAPTER)
def check_ablate_nodes(ablate_nodes: Any) -> None:
    bk = backend()
    model = bk.model
    every = [bk.dictionary(kind, layer) for kind in KINDS for layer in (0, 1)]
    # 1. one residual SAE, zero: three latents and the error node at the last position (pos -1)
    batch = bk.world.task_batch("ioi", 4, seed=seed(20))
    resid0 = bk.dictionary("resid_sae", 0)
    nodes = [Node("resid_sae", 0, -1, i) for i in _top_latents(bk, resid0, batch.tokens, -1, 3, "latents_0")]
    nodes.append(Node("resid_sae", 0, -1, "error"))
    cases = [(batch, [resid0], nodes, None, False, "resid_sae0, zero, latents and error at pos -1")]
    # 2. an attention SAE and a transcoder, zero: latents at a middle position, the error at every position
    batch = bk.world.task_batch("induction", 3, seed=seed(21))
    attn0, tc1 = bk.dictionary("attn_sae", 0), bk.dictionary("transcoder", 1)
    middle = batch.tokens.shape[1] // 2
    nodes = ([Node("attn_sae", 0, middle, i) for i in _top_latents(bk, attn0, batch.tokens, middle, 4, "latents_1")]
             + [Node("transcoder", 1, p, "error") for p in range(batch.tokens.shape[1])]
             + [Node("transcoder", 1, -1, i) for i in _top_latents(bk, tc1, batch.tokens, -1, 2, "latents_2")])
    cases.append((batch, [attn0, tc1], nodes, None, False, "attn_sae0 + transcoder1, zero"))
    # 3. the same dictionaries with a mean baseline
    cases.append((batch, [attn0, tc1], nodes, _baseline(bk, [attn0, tc1], "induction", seed(22)), False,
                  "attn_sae0 + transcoder1, mean"))
    # 4. all six dictionaries, mean, every node *outside* a small circuit ablated (one prompt)
    batch = bk.world.task_batch("ioi", 2, seed=seed(23))
    means = _baseline(bk, every, "ioi", seed(24))
    circuit = _ranked(bk, every, batch, means, 60, "circuit")
    cases.append((bk.world.task_batch("ioi", 1, seed=seed(25)), every, circuit, means, True, "all six, mean, complement"))
    results = []  # the learner's result, the known one and the catalogued mistakes' on every case, when needed
    for i, (batch, dictionaries, nodes, baseline, complement, _) in enumerate(cases):
        args = (model, dictionaries, batch.tokens, batch.answer_ids, batch.distractor_ids, nodes)
        got = functools.cache(lambda args=args, baseline=baseline, complement=complement:
                              run(ablate_nodes, bk, *args, baseline=baseline, complement=complement))
        want = known(f"metric_{i}", got()) if _recording() else known(f"metric_{i}", None)
        results.append((got, want, signatures(MISTAKES["ablate_nodes"], *args, baseline=baseline, complement=complement)))
    for i, ((got, want, _), mistakes) in enumerate(zip(results, consistent(results))):
        expect_tensor(got(), want, name=f"metric ({cases[i][-1]})", dims="batch", mistakes=mistakes)


# ---------------------------------------------------------------------------------------
# 3. error_attribution


@exercise_check(CHAPTER)
def check_error_attribution(error_attribution: Any) -> None:
    bk = backend()
    configs = [("resid_sae", 1, "ioi", 3, False, 30), ("attn_sae", 0, "induction", 2, True, 31), ("transcoder", 0, "ioi", 1, False, 32),
               ("transcoder", 1, "facts", 2, True, 33), ("attn_sae", 0, "induction", 2, False, 31)]  # the last: the second, zero
    for i, (kind, layer, task, n, mean, draw) in enumerate(configs):
        dictionary = bk.dictionary(kind, layer)
        batch = bk.world.task_batch(task, n, seed=seed(draw))
        baseline = _baseline(bk, [dictionary], task, seed(40 + i)).errors[dictionary.cfg.metadata.hook_name] if mean else None
        args = (bk.model, dictionary, batch.tokens, batch.answer_ids, batch.distractor_ids)
        got = run(error_attribution, bk, *args, baseline=baseline)
        ignored = {"this is the attribution for a zero baseline: use e' = `baseline`, (baseline - error)":
                   lambda: known("attribution_4", None)} if i == 1 else {}
        expect_tensor(got, known(f"attribution_{i}", got),
                      name=f"error attribution ({kind}{layer}, {n} prompts, {'mean' if mean else 'zero'})", dims="batch pos",
                      mistakes={**signatures(MISTAKES["error_attribution"], *args, baseline=baseline), **ignored})


# ---------------------------------------------------------------------------------------
# 4. faithfulness and completeness


def _circuit_cases(bk: Backend, offset: int) -> list[tuple[Any, list[SAE], list[list[Node]], NodeBaseline | None, str]]:
    """(batch, dictionaries, circuits, baseline, description): circuits of several sizes drawn
    from the attribution ranking, with and without error nodes, some at negative positions."""
    every = [bk.dictionary(kind, layer) for kind in KINDS for layer in (0, 1)]
    batch = bk.world.task_batch("ioi", 4, seed=seed(offset))
    means = _baseline(bk, every, "ioi", seed(offset + 1))
    ranked = _ranked(bk, every, batch, means, 400, "circuit_0")
    cases = [(batch, every, [ranked[:10], ranked[:400]], means, "IOI, all six dictionaries, mean")]
    pair = [bk.dictionary("attn_sae", 0), bk.dictionary("resid_sae", 1)]
    batch = bk.world.task_batch("induction", 2, seed=seed(offset + 2))
    n_pos = batch.tokens.shape[1]
    pair_means = _baseline(bk, pair, "induction", seed(offset + 3))
    ranked = _ranked(bk, pair, batch, pair_means, 20, "circuit_1")
    latents_only = _ranked(bk, pair, batch, pair_means, 80, "circuit_2", errors=False)
    negative = [Node(n.kind, n.layer, n.pos - n_pos, n.index) for n in ranked]  # the same nodes, counted from the end
    cases.append((batch, pair, [negative, latents_only], None, "induction, attn_sae0 + resid_sae1, zero"))
    return cases


def _check_circuit_score(fn: Any, name: str, offset: int) -> None:
    bk = backend()
    for i, (batch, dictionaries, circuits, baseline, what) in enumerate(_circuit_cases(bk, offset)):
        values, thunks = [], []
        for circuit in circuits:
            args = (bk.model, dictionaries, circuit, batch.tokens, batch.answer_ids, batch.distractor_ids)
            values.append(_number(run(fn, bk, *args, baseline=baseline), name))
            thunks.append(signatures(MISTAKES[name], *args, baseline=baseline))
        got = torch.tensor(values, dtype=NUMBERS)
        mistakes = {diagnosis: (lambda d=diagnosis: _stack([t[d]() for t in thunks])) for diagnosis in thunks[0]}
        sizes = ", ".join(str(len(c)) for c in circuits)
        expect_tensor(got, known(f"{name}_{i}", got), name=f"{name} ({what}; circuits of {sizes} nodes)", dims="circuit",
                      mistakes=mistakes)


def _stack(results: list[Any]) -> Tensor | None:
    try:
        return torch.tensor([float(r) for r in results], dtype=NUMBERS)
    except Exception:
        return None


@exercise_check(CHAPTER)
def check_faithfulness(faithfulness: Any) -> None:
    _check_circuit_score(faithfulness, "faithfulness", 50)


@exercise_check(CHAPTER)
def check_completeness(completeness: Any) -> None:
    _check_circuit_score(completeness, "completeness", 60)


# ---------------------------------------------------------------------------------------
# 5. position_precision_recall


def _random_nodes(generator: torch.Generator, n: int, n_pos: int) -> list[Node]:
    """``n`` nodes at random positions (half of them counted from the end), kinds and indices."""
    nodes = []
    for _ in range(n):
        pos = int(torch.randint(0, n_pos, (), generator=generator))
        if torch.rand((), generator=generator) < 0.5:
            pos -= n_pos
        kind = KINDS[int(torch.randint(0, 3, (), generator=generator))]
        index = int(torch.randint(0, 256, (), generator=generator))
        nodes.append(Node(kind, int(torch.randint(0, 2, (), generator=generator)), pos, "error" if index == 0 else index))
    return nodes


@exercise_check(CHAPTER)
def check_position_precision_recall(position_precision_recall: Any) -> None:
    generator = torch.Generator().manual_seed(seed(70))
    cases = []
    for n_nodes, n_pos in ((12, 14), (30, 9), (4, 20)):
        truth = torch.rand(n_pos, generator=generator) < 0.35
        truth[int(torch.randint(0, n_pos, (), generator=generator))] = True  # at least one labelled position
        cases.append((_random_nodes(generator, n_nodes, n_pos), truth))
    truth = torch.zeros(10, dtype=torch.bool)
    truth[[2, 4, 9]] = True
    cases.append(([Node("resid_sae", 0, -1, 3), Node("attn_sae", 1, 9, "error"), Node("transcoder", 0, 2, 7)], truth))
    cases.append(([], truth))
    for i, (nodes, truth) in enumerate(cases):
        got = run(position_precision_recall, None, list(nodes), truth.clone())
        _expect_numbers(got, f"pr_{i}", ("precision", "recall"), f"case {i + 1} ({len(nodes)} nodes, {len(truth)} positions)",
                        signatures(MISTAKES["position_precision_recall"], list(nodes), truth))

