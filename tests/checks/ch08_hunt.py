"""Checks of chapter 08 (the capstone hunt). Each runs your function on the checks' own copy
of the hunt backend, on prompts of the ``"check"`` split drawn with the check's seeds, and
compares with known outputs recorded from the reference; ``hunt_submission`` is graded
instead against the planted ground truth (``utils.course.hunt``), on the learner's seed in
the notebook and on the grader's seed when it re-checks."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from tests.mistakes.ch08_hunt import MISTAKES
from utils.backends import Backend
from utils.course.checking import backend, exercise_check, expect_close, expect_tensor, fail, known, run, seed, signatures
from utils.course.hunt import grade_submission
from utils.circuits import mean_baseline, node_attribution, rank_nodes
from utils.hunt import hunt_prompts, pool_size, rule_answers
from utils.nodes import Node

CHAPTER = "ch08_hunt"
HUNT = "hunt"
# Library functions that compute what an exercise of this chapter asks for, or read the
# answer key: the grader's re-check treats a call to them from a learner's function as a
# call to the reference (``utils.course.recheck``).
REFERENCE_TWINS = ("utils.hunt.mechanism", "utils.hunt.truth", "utils.course.hunt")


def _batch(k: int, n: int) -> Any:
    """``n`` prompts of the check's ``k``-th draw (any task: the seed decides)."""
    return hunt_prompts(seed(k), n, split="check")


def _ids(bk: Backend, answers: list[list[str | None]]) -> Tensor:
    vocab = bk.model.tokenizer.get_vocab()
    return torch.tensor([[vocab[w] if w in vocab else -1 for w in row] for row in answers])


# ---------------------------------------------------------------------------------------
# 1. rule_agreement


def _rule_rows(bk: Backend, k: int, n: int) -> tuple[Tensor, Tensor]:
    """The menu's rules on the draw's prompts, plus three rows that tell mistakes apart: the
    model's runner-up prediction, its top prediction on every other prompt (-1 between),
    and the twins' answers."""
    batch = _batch(k, n)
    with torch.no_grad():
        order = bk.model(batch.tokens)[:, -1].argsort(-1, descending=True)
    top, runner_up = order[:, 0], order[:, 1]
    half = torch.where(torch.arange(n) % 2 == 0, top, torch.full_like(top, -1))
    rows = torch.cat([_ids(bk, rule_answers(seed(k), batch.prompts)), torch.stack([runner_up, half, batch.distractor_ids])])
    return batch.tokens, rows


@exercise_check(CHAPTER)
def check_rule_agreement(rule_agreement: Any) -> None:
    bk = backend(HUNT)
    for i, (k, n) in enumerate([(0, 12), (1, 8), (2, 16)]):
        tokens, rows = _rule_rows(bk, k, n)
        got = run(rule_agreement, bk, bk.model, tokens, rows.clone())
        expect_tensor(got, known(f"fit_{i}", got), name=f"rule fits ({n} prompts of {hunt_task_name(k)}, "
                      f"{len(rows)} rules)", dims="rule", mistakes=signatures(MISTAKES["rule_agreement"], bk.model, tokens, rows))


def hunt_task_name(k: int) -> str:
    from utils.hunt import hunt_task

    return hunt_task(seed(k))


# ---------------------------------------------------------------------------------------
# 2. patch_positions


@exercise_check(CHAPTER)
def check_patch_positions(patch_positions: Any) -> None:
    bk = backend(HUNT)
    cases = [(10, 6, ["blocks.0.hook_resid_pre"]),
             (11, 4, ["blocks.0.hook_attn_out", "blocks.0.hook_mlp_out", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out"]),
             (12, 6, ["blocks.1.hook_resid_pre"]),
             (13, 3, ["blocks.0.attn.hook_z", "blocks.1.hook_mlp_out"])]
    for i, (k, n, hooks) in enumerate(cases):
        batch = _batch(k, n)
        got = run(patch_positions, bk, bk.model, batch, list(hooks))
        expect_tensor(got, known(f"shares_{i}", got), name=f"shares ({n} prompts of {hunt_task_name(k)}, {', '.join(hooks)})",
                      dims="pos", mistakes=signatures(MISTAKES["patch_positions"], bk.model, batch, list(hooks)))


# ---------------------------------------------------------------------------------------
# 3. attribution_map


def _means(bk: Backend, dictionaries: list[Any], k: int, n: int = 16) -> Any:
    """Per-position means over ``n`` baseline prompts of the draw's layout."""
    return mean_baseline(bk.model, dictionaries, hunt_prompts(seed(k), n, split="baseline").tokens)


@exercise_check(CHAPTER)
def check_attribution_map(attribution_map: Any) -> None:
    bk = backend(HUNT)
    every = list(bk.dictionaries.values())
    cases = [(20, 4, every, True), (21, 3, [bk.dictionary("attn_sae", 0), bk.dictionary("transcoder", 1)], False),
             (22, 4, [bk.dictionary("resid_sae", 1), bk.dictionary("transcoder", 0), bk.dictionary("attn_sae", 1)], True)]
    for i, (k, n, dictionaries, mean) in enumerate(cases):
        batch = _batch(k, n)
        baseline = _means(bk, dictionaries, k) if mean else None
        got = run(attribution_map, bk, bk.model, dictionaries, batch, baseline)
        what = "+".join(f"{kind}{layer}" for kind, layer in (bk_key(d) for d in dictionaries))
        expect_tensor(got, known(f"map_{i}", got), name=f"attribution map ({n} prompts of {hunt_task_name(k)}, {what}, "
                      f"{'mean' if mean else 'zero'} baseline)", dims="dictionary pos",
                      mistakes=signatures(MISTAKES["attribution_map"], bk.model, dictionaries, batch, baseline))


def bk_key(sae: Any) -> tuple[str, int]:
    from utils.nodes import dictionary_key

    return dictionary_key(sae)


# ---------------------------------------------------------------------------------------
# 4. smallest_faithful_circuit and 5. leave_one_out: faithfulness functions to hand them


def _nodes(n: int, generator: torch.Generator) -> list[Node]:
    """``n`` distinct nodes (a few error nodes among them) for synthetic rankings."""
    kinds = ("resid_sae", "attn_sae", "transcoder")
    nodes: list[Node] = []
    while len(nodes) < n:
        kind = kinds[int(torch.randint(0, 3, (), generator=generator))]
        layer, pos = int(torch.randint(0, 2, (), generator=generator)), int(torch.randint(3, 7, (), generator=generator))
        index: int | str = "error" if torch.rand((), generator=generator) < 0.15 else int(torch.randint(0, 256, (), generator=generator))
        node = Node(kind, layer, pos, index)
        if node not in nodes:
            nodes.append(node)
    return nodes


class Additive:
    """F(C) = sum of per-node weights (multiples of 1/64: sums are exact), a synthetic
    faithfulness whose value at any circuit is known exactly."""

    def __init__(self, weights: dict[Node, float], squash: bool = False):
        self.weights, self.squash = weights, squash

    def __call__(self, circuit: Any) -> float:
        total = sum(self.weights.get(n, 0.0) for n in circuit)
        return math.tanh(total) if self.squash else total


def _real_faithfulness(bk: Backend, k: int, n: int, size: int, key: str) -> tuple[Any, list[Node]]:
    """Chapter 02's faithfulness on ``n`` prompts of the draw (means over 16 others) and the
    first ``size`` nodes of its attribution ranking (stored, so near-ties cannot reorder it)."""
    from solutions.ch01_attribution import logit_diff
    from solutions.ch08_hunt import faithfulness_of

    dictionaries = list(bk.dictionaries.values())
    batch, means = _batch(k, n), _means(bk, dictionaries, k)
    attribution = node_attribution(bk.model, dictionaries, batch.tokens,
                                   lambda logits: logit_diff(logits, batch.answer_ids, batch.distractor_ids), means)
    ranked = rank_nodes({hook: a.mean(0) for hook, a in attribution.items()}, dictionaries, k=size)
    ranking = [Node.parse(text) for text in known(key, [str(node) for node in ranked])]
    return faithfulness_of(bk.model, dictionaries, batch, means), ranking


def _circuit_result(got: Any, what: str) -> tuple[list[str], float]:
    if not isinstance(got, tuple) or len(got) != 2:
        fail(f"{what}: expected a tuple (circuit, faithfulness), got {type(got).__name__}")
    nodes, f = got
    if not isinstance(nodes, (list, tuple)) or not all(isinstance(n, Node) for n in nodes):
        fail(f"{what}: the circuit should be a list of Node, got {type(nodes).__name__}")
    if isinstance(f, Tensor) and f.numel() == 1:
        f = f.item()
    if isinstance(f, bool) or not isinstance(f, (int, float)):
        fail(f"{what}: the faithfulness should be a number, got {type(f).__name__}")
    return [str(n) for n in nodes], float(f)


def _same_circuit(a: Any, b: tuple[list[str], float]) -> bool:
    try:
        nodes, f = _circuit_result(a, "")
    except Exception:
        return False
    return nodes == b[0] and abs(f - b[1]) <= 1e-3 * max(1.0, abs(b[1]))


@exercise_check(CHAPTER)
def check_smallest_faithful_circuit(smallest_faithful_circuit: Any) -> None:
    bk = backend(HUNT)
    generator = torch.Generator().manual_seed(seed(30))
    ranking = _nodes(40, generator)
    steps = [3, 5, 6, 4, -2, 3, -1, 2, 5, -3]  # per four nodes, in 64ths: F rises, dips, rises, dips
    weights = {node: steps[i // 4] / 256 for i, node in enumerate(ranking)}
    additive = Additive(weights)
    sizes = [4, 8, 12, 16, 20, 24, 28, 32, 36, 40]
    cases = [(additive, ranking, additive(ranking[:12]), sizes, "synthetic F that reaches the target exactly"),
             (additive, ranking, additive(ranking[:20]) - 1 / 512, sizes, "synthetic F that dips and rises again"),
             (additive, ranking, 1.0, sizes, "synthetic F that never reaches the target")]
    faithful, real = _real_faithfulness(bk, 31, 8, 200, "ranking")
    cases.append((faithful, real, 0.8, [5, 10, 20, 50, 100, 200], "chapter 02's F on 8 prompts"))
    for i, (faithfulness, nodes, target, grid, what) in enumerate(cases):
        got = run(smallest_faithful_circuit, bk, faithfulness, list(nodes), target, list(grid))
        result = _circuit_result(got, what)
        want_nodes, want_f = known(f"circuit_{i}", result[0]), known(f"faithfulness_{i}", result[1])
        if result[0] == want_nodes:
            expect_close(result[1], want_f, name=f"{what}: faithfulness")
            continue
        for diagnosis, thunk in signatures(MISTAKES["smallest_faithful_circuit"], faithfulness, list(nodes), target,
                                           list(grid)).items():
            if _same_circuit(thunk(), result):
                fail(f"{what}: {diagnosis}")
        fail(f"{what}: you returned {len(result[0])} nodes with F = {result[1]:.4g}; expected the first "
             f"{len(want_nodes)} of the ranking with F = {want_f:.4g}")


def _loss_dict(got: Any, what: str) -> dict[tuple[str, int, int], float]:
    if not isinstance(got, dict):
        fail(f"{what}: expected a dict {{(kind, layer, pos): faithfulness lost}}, got {type(got).__name__}")
    out = {}
    for key, value in got.items():
        if not (isinstance(key, tuple) and len(key) == 3):
            fail(f"{what}: keys should be (kind, layer, pos) tuples, got {key!r}")
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(f"{what}: values should be numbers, got {type(value).__name__} for {key}")
        out[key] = float(value)
    return out


@exercise_check(CHAPTER)
def check_leave_one_out(leave_one_out: Any) -> None:
    bk = backend(HUNT)
    generator = torch.Generator().manual_seed(seed(40))
    nodes = _nodes(30, generator)
    weights = {node: float(torch.randint(-4, 12, (), generator=generator)) / 64 for node in nodes}
    faithful, real = _real_faithfulness(bk, 41, 6, 40, "ranking")
    cases = [(Additive(weights, squash=True), nodes, "a synthetic F"), (faithful, real, "chapter 02's F on 6 prompts, 40 nodes")]
    for i, (faithfulness, circuit, what) in enumerate(cases):
        got = _loss_dict(run(leave_one_out, bk, faithfulness, list(circuit)), what)
        keys = sorted(got)
        want_keys = [tuple(k) for k in known(f"components_{i}", [list(k) for k in keys])]
        if keys != want_keys:
            for diagnosis, thunk in signatures(MISTAKES["leave_one_out"], faithfulness, list(circuit)).items():
                result = thunk()
                if isinstance(result, dict) and sorted(result) == keys:
                    fail(f"{what}: {diagnosis}")
            fail(f"{what}: expected one entry per component (kind, layer, pos) of the circuit, {len(want_keys)} of "
                 f"them; you returned {len(keys)}")
        values = torch.tensor([got[k] for k in keys], dtype=torch.float32)
        mistakes = {d: (lambda thunk=thunk: _values(thunk(), keys)) for d, thunk in
                    signatures(MISTAKES["leave_one_out"], faithfulness, list(circuit)).items()}
        expect_tensor(values, known(f"lost_{i}", values), name=f"faithfulness lost ({what})", dims="component",
                      mistakes=mistakes)


def _values(result: Any, keys: list[tuple[str, int, int]]) -> Tensor | None:
    if not isinstance(result, dict) or sorted(result) != keys:
        return None
    return torch.tensor([float(result[k]) for k in keys], dtype=torch.float32)


# ---------------------------------------------------------------------------------------
# 6. firing_frequency


@exercise_check(CHAPTER)
def check_firing_frequency(firing_frequency: Any) -> None:
    bk = backend(HUNT)
    cases = [(("resid_sae", 0), 8, 24, 50), (("attn_sae", 1), 6, 32, 51), (("transcoder", 0), 8, 24, 52),
             (("transcoder", 1), 4, 40, 53)]
    for i, (key, n_seqs, seq_len, k) in enumerate(cases):
        dictionary = bk.dictionary(*key)
        tokens = bk.world.corpus(n_seqs, seq_len, seed=seed(k)).tokens
        got = run(firing_frequency, bk, bk.model, dictionary, tokens)
        want = known(f"frequency_{i}", got)
        if _within_threshold_noise(got, want, lambda: _near_threshold(bk, dictionary, tokens)):
            continue
        expect_tensor(got, want, name=f"firing frequency ({key[0]}{key[1]}, {n_seqs} x {seq_len} tokens)",
                      dims="d_sae", mistakes=signatures(MISTAKES["firing_frequency"], bk.model, dictionary, tokens))


# Measured on the four cases: with TF32-rounded weights the reference's frequencies move on
# 1 to 7 latents, each by 1 or 2 tokens, all within this band; it gives 8 to 25 of 256
# latents a slack of at most 2 tokens.
THRESHOLD_NOISE = 1e-4


def _near_threshold(bk: Backend, dictionary: Any, tokens: Tensor) -> Tensor:
    """Per latent, the share of the counted tokens (position 0 left out) where its
    pre-activation lies within ``THRESHOLD_NOISE`` of zero (relative to the largest): there a
    latent may fire on one machine, or with TF32 weights, and not on another."""
    hook, pre = dictionary.cfg.metadata.hook_name, []
    with torch.no_grad():
        _, cache = bk.model.run_with_cache(tokens, names_filter=hook)
        dictionary.hook_sae_acts_pre.add_hook(lambda acts, hook: pre.append(acts))
        try:
            dictionary.encode(cache[hook])
        finally:
            dictionary.hook_sae_acts_pre.remove_hooks()
    acts = pre[0][:, 1:].flatten(0, -2)
    return (acts.abs() < THRESHOLD_NOISE * acts.abs().max()).float().mean(0).cpu()


def _within_threshold_noise(got: Any, want: Tensor, slack: Callable[[], Tensor]) -> bool:
    """``got`` differs from ``want`` only on latents near their threshold, each by at most
    its share of near-threshold tokens (the catalogued mistakes move far more). ``slack`` is
    computed (one more forward pass) only when ``got`` differs at all."""
    if not isinstance(got, Tensor) or got.shape != want.shape or not got.is_floating_point():
        return False
    moved = (got.detach().cpu().double() - want.double()).abs()
    if not moved.any():
        return False  # equal: expect_tensor passes it
    return bool((moved <= slack().double() + 1e-6).all())


# ---------------------------------------------------------------------------------------
# 7. hunt_submission: graded against the planted ground truth


def graded_seed(hunt_seed: Any) -> int:
    """The learner's seed (the notebook hands it in), else the check's own draw: one of the
    ``pool_size()`` seeds the grader can draw."""
    if hunt_seed is None:
        return seed(0) % pool_size()
    if isinstance(hunt_seed, bool) or not isinstance(hunt_seed, int) or not 0 <= hunt_seed < pool_size():
        fail(f"HUNT_SEED should be one of 0..{pool_size() - 1} (hunt_seed(your name) gives yours), got {hunt_seed!r}")
    return hunt_seed


@exercise_check(CHAPTER)
def check_hunt_submission(hunt_submission: Any, hunt_seed: Any = None) -> None:
    bk = backend(HUNT)
    graded = graded_seed(hunt_seed)
    submission = run(hunt_submission, bk, bk, graded)
    grade = grade_submission(bk, graded, submission)
    if not grade.passed:
        fail(grade.failure())
    print(grade.report())
