"""Checks of chapter 04 (Transcoder circuits). Each runs your function on the checks' own toy
backend, watches what it does, and compares with known outputs recorded from the reference;
a failure names the likely mistake (the catalogued ones in ``tests/mistakes``, or a generic
family of ``utils.course.compare``). The blind case study is graded against the organism's ground
truth instead (``utils.transcoders.blind_case_truths``)."""
from __future__ import annotations

from typing import Any

import einops
import torch
from jaxtyping import Float
from sae_lens import HookedSAETransformer, Transcoder
from torch import Tensor

from tests.checks import expect_explained_variance
from tests.mistakes.ch04_transcoders import MISTAKES
from utils.backends import Backend
from utils.course.checking import (
    CheckFailure,
    backend,
    exercise_check,
    expect_close,
    expect_tensor,
    fail,
    known,
    python_number,
    run,
    seed,
    shifted_positions,
    signatures,
)
from utils.transcoders import (
    BLIND_CASE_POOL,
    CaseTruth,
    blind,
    blind_case_truths,
    pullbacks,
    upstream_ablations,
    upstream_contributions,
)

CHAPTER = "ch04_transcoders"
TC = ("blocks.0.ln2.hook_normalized", "blocks.1.ln2.hook_normalized")


def _preacts(model: HookedSAETransformer, tc: Transcoder, tokens: Tensor) -> Float[Tensor, "batch pos d_sae"]:
    hook = tc.cfg.metadata.hook_name
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hook)
    return cache[hook] @ tc.W_enc + tc.b_enc


def _draw(n: int, high: int) -> int:
    """A latent index drawn with seed ``n`` (shifted by the grader)."""
    return int(torch.randint(high, (1,), generator=torch.Generator().manual_seed(seed(n))))


# ---------------------------------------------------------------------------------------
# 1. transcoder_metrics

KEYS = ["l0", "explained_variance", "ce_clean", "ce_spliced", "ce_with_error", "ce_zero", "ce_recovered"]


def _vector(out: Any) -> Tensor | None:
    try:
        return torch.tensor([float(out[key]) for key in KEYS], dtype=torch.float64)
    except Exception:
        return None


@exercise_check(CHAPTER)
def check_transcoder_metrics(transcoder_metrics: Any) -> None:
    bk = backend()
    tokens = bk.world.corpus(n_seqs=8, seq_len=20, seed=seed(1)).tokens
    for i, hook in enumerate(reversed(TC)):
        tc = bk.transcoders[hook]
        try:
            got = run(transcoder_metrics, bk, bk.model, tc, tokens)
        except CheckFailure as failure:
            if "KeyError" in str(failure) and f"{hook}.hook_sae" in str(failure):
                fail(f"{failure}\nA transcoder's latents are cached under the hook it writes, "
                     f"{tc.cfg.metadata.hook_name_out}.hook_sae_acts_post, not under the hook it reads", header=failure.header)
            raise
        if not isinstance(got, dict):
            fail(f"expected a dict with keys {KEYS}, got {type(got).__name__}")
        missing = [key for key in KEYS if key not in got]
        if missing:
            fail(f"the dict lacks keys {missing} (expected {KEYS})")
        got = {key: python_number(got[key], key) for key in KEYS}  # "a dict of Python floats"
        want = {key: known(f"{key}_{i}", float(got[key])) for key in KEYS}
        _expect_metrics(bk, tc, tokens, got, want)


def _expect_metrics(bk: Backend, tc: Transcoder, tokens: Tensor, got: dict[str, Any], want: dict[str, float]) -> None:
    losses = max(want["ce_clean"], want["ce_zero"])
    got_vec, want_vec = _vector(got), _vector(want)
    if got_vec is not None and not torch.allclose(got_vec, want_vec, rtol=1e-3, atol=1e-4 * losses):
        for diagnosis, result in signatures(MISTAKES["transcoder_metrics"], bk.model, tc, tokens).items():
            out = result()
            vec = _vector(out) if out is not None else None
            if vec is not None and torch.allclose(got_vec, vec, rtol=1e-4, atol=1e-5 * losses):
                fail(diagnosis)
    if abs(float(got["ce_spliced"]) - float(got["ce_clean"])) < 1e-6 * losses:
        fail("ce_spliced equals ce_clean: splice the transcoder without its error term for ce_spliced")
    if abs(float(got["ce_with_error"]) - float(got["ce_spliced"])) < 1e-6 * losses:
        fail("ce_with_error equals ce_spliced: splice with use_error_term=True for ce_with_error")
    if abs(float(got["l0"]) - want["l0"]) > 1e-3 * want["l0"]:
        with torch.no_grad():
            _, cache = bk.model.run_with_cache_with_saes(tokens, saes=[tc])
        with_bos = (cache[f"{tc.cfg.metadata.hook_name_out}.hook_sae_acts_post"] > 0).float().sum(-1).mean().item()
        if abs(float(got["l0"]) - with_bos) < 1e-3 * want["l0"]:
            fail("l0 includes the BOS position; leave position 0 out")
    if abs(float(got["ce_recovered"]) - (1 - want["ce_recovered"])) < 1e-3:
        fail("ce_recovered looks like 1 minus the right value: (CE_zero - CE_spliced) / (CE_zero - CE_clean)")
    for key in KEYS:
        if key == "explained_variance":
            with torch.no_grad():
                _, spliced = bk.model.run_with_cache_with_saes(tokens, saes=[tc])
                _, clean = bk.model.run_with_cache(tokens, names_filter=tc.cfg.metadata.hook_name_out)
            y, y_hat = clean[tc.cfg.metadata.hook_name_out], spliced[f"{tc.cfg.metadata.hook_name_out}.hook_sae_recons"]
            expect_explained_variance(got[key], want[key], y, y_hat, "y")
            continue
        scale = losses / abs(want["ce_zero"] - want["ce_clean"]) if key == "ce_recovered" else None
        expect_close(got[key], want[key], name=key, scale=scale)


# ---------------------------------------------------------------------------------------
# 2-4. de_embedding, extended_de_embedding, pullback


@exercise_check(CHAPTER)
def check_de_embedding(de_embedding: Any) -> None:
    bk = backend()
    for i, (hook, scale) in enumerate([(TC[0], 0.61), (TC[1], 1.7), (TC[0], 0.25)]):
        tc = bk.transcoders[hook]
        latent = _draw(10 + i, tc.cfg.d_sae)
        got = run(de_embedding, bk, bk.model, tc, latent, scale)
        expect_tensor(got, known(f"de_embedding_{i}", got), name=f"de-embedding of latent {latent} ({hook}, scale {scale})",
                      dims="d_vocab", mistakes=signatures(MISTAKES["de_embedding"], bk.model, tc, latent, scale))


@exercise_check(CHAPTER)
def check_extended_de_embedding(extended_de_embedding: Any) -> None:
    bk = backend()
    up, down = bk.transcoders[TC[0]], bk.transcoders[TC[1]]
    for i, scales in enumerate([(0.61, 1.7), (0.3, 2.4)]):
        latent = _draw(20 + i, down.cfg.d_sae)
        got = run(extended_de_embedding, bk, bk.model, up, down, latent, scales)
        expect_tensor(got, known(f"extended_{i}", got), name=f"extended de-embedding of latent {latent} (scales {scales})",
                      dims="d_vocab", mistakes=signatures(MISTAKES["extended_de_embedding"], bk.model, up, down, latent, scales))


@exercise_check(CHAPTER)
def check_pullback(pullback: Any) -> None:
    bk = backend()
    up, down = bk.transcoders[TC[0]], bk.transcoders[TC[1]]
    for i, scale in enumerate([1.7, 0.9]):
        latent = _draw(30 + i, down.cfg.d_sae)
        got = run(pullback, bk, bk.model, up, down, latent, scale)
        expect_tensor(got, known(f"pullback_{i}", got), name=f"pullback of latent {latent} (scale {scale})",
                      dims="d_sae_up", mistakes=signatures(MISTAKES["pullback"], bk.model, up, down, latent, scale))


# ---------------------------------------------------------------------------------------
# 5-7. On prompts: connections, ablations, attention paths


def _most_active(bk: Backend, tokens: Tensor, pos: int) -> int:
    """The transcoder-1 latent with the largest mean pre-activation at ``pos``."""
    return int(_preacts(bk.model, bk.transcoders[TC[1]], tokens)[:, pos].mean(0).argmax())


@exercise_check(CHAPTER)
def check_input_dependent_connections(input_dependent_connections: Any) -> None:
    bk = backend()
    up, down = bk.transcoders[TC[0]], bk.transcoders[TC[1]]
    # An inner position first: a function that reads the position before or after `pos` shows there.
    for i, (task, n, pos, draw) in enumerate([("facts", 2, 3, 41), ("ioi", 3, -1, 40), ("pronouns", 2, -2, 42)]):
        tokens = bk.world.task_batch(task, n, seed=seed(draw)).tokens
        latent = _most_active(bk, tokens, pos)
        args = (bk.model, up, down, latent, tokens, pos)
        got = run(input_dependent_connections, bk, *args)
        again = shifted_positions(lambda p: run(input_dependent_connections, bk, bk.model, up, down, latent, tokens, p),
                                  pos, tokens.shape[1])
        expect_tensor(got, known(f"connections_{i}", got), name=f"connections into latent {latent} ({task}, pos {pos})",
                      dims="batch d_sae_up", mistakes=signatures(MISTAKES["input_dependent_connections"], *args), retries=again)


def _feeders(bk: Backend, tokens: Tensor, latent: int, pos: int, k: int) -> Tensor:
    """The k upstream latents with the largest linearised contribution (direct and
    attention paths), so that both kinds of path are among the ablated latents."""
    positions = torch.full((tokens.shape[0],), pos % tokens.shape[1])
    linear = upstream_contributions(bk.model, bk.transcoders[TC[0]], bk.transcoders[TC[1]], latent, tokens, positions)
    return linear.abs().mean(0).topk(k).indices.sort().values


def _fragile(bk: Backend, tokens: Tensor, pos: int) -> int:
    """A transcoder-1 latent active at ``pos`` that one upstream latent's direct connection
    could switch off (it exceeds the pre-activation), so that measuring the activation
    instead of the pre-activation shows."""
    up, down = bk.transcoders[TC[0]], bk.transcoders[TC[1]]
    with torch.no_grad():
        _, cache = bk.model.run_with_cache(tokens, names_filter=[TC[0], TC[1], "blocks.1.ln2.hook_scale"])
        pre = (cache[TC[1]][:, pos] @ down.W_enc + down.b_enc).mean(0)  # [d_sae]
        up_acts = up.encode(cache[TC[0]][:, pos]) / cache["blocks.1.ln2.hook_scale"][:, pos]  # [batch, d_up]
        strongest = einops.einsum(up_acts, pullbacks(bk.model, up, down, 1.0), "b k, k j -> b k j").amax(1).mean(0)
    return int(torch.where(pre > 0.2, strongest / pre, -1.0).argmax())


@exercise_check(CHAPTER)
def check_upstream_ablation_effects(upstream_ablation_effects: Any) -> None:
    bk = backend()
    up, down = bk.transcoders[TC[0]], bk.transcoders[TC[1]]
    for i, (task, n, pos) in enumerate([("pronouns", 3, -1), ("greater_than", 1, 7)]):
        tokens = bk.world.task_batch(task, n, seed=seed(50 + i)).tokens
        latent = _most_active(bk, tokens, pos) if i else _fragile(bk, tokens, pos)
        up_latents = _feeders(bk, tokens, latent, pos, 5)
        args = (bk.model, up, down, latent, tokens, pos, up_latents)
        got = run(upstream_ablation_effects, bk, *args)
        again = shifted_positions(lambda p: run(upstream_ablation_effects, bk, bk.model, up, down, latent, tokens, p, up_latents),
                                  pos, tokens.shape[1])
        expect_tensor(got, known(f"effects_{i}", got), name=f"ablation effects on latent {latent} ({task}, pos {pos})",
                      dims="batch n_up", mistakes=signatures(MISTAKES["upstream_ablation_effects"], *args), retries=again)


def _attention_feeder(bk: Backend, tokens: Tensor, latent: int, pos: int) -> int:
    """The upstream latent whose attention paths (all heads) into ``latent`` are largest."""
    positions = torch.full((tokens.shape[0],), pos % tokens.shape[1])
    args = (bk.model, bk.transcoders[TC[0]], bk.transcoders[TC[1]], latent, tokens, positions)
    through_attention = upstream_contributions(*args) - upstream_contributions(*args, attention=False)
    return int(through_attention.abs().mean(0).argmax())


@exercise_check(CHAPTER)
def check_attention_path_contributions(attention_path_contributions: Any) -> None:
    bk = backend()
    up, down = bk.transcoders[TC[0]], bk.transcoders[TC[1]]
    for i, (task, n, pos, head) in enumerate([("pronouns", 2, -1, 1), ("greater_than", 1, 7, bk.model.cfg.n_heads - 1)]):
        tokens = bk.world.task_batch(task, n, seed=seed(60 + i)).tokens
        latent = _most_active(bk, tokens, pos)
        up_latent = _attention_feeder(bk, tokens, latent, pos)
        args = (bk.model, up, down, latent, up_latent, head, tokens, pos)
        got = run(attention_path_contributions, bk, *args)
        expect_tensor(got, known(f"paths_{i}", got), name=f"paths of latent {up_latent} into latent {latent} via head 1.{head}",
                      dims="batch pos", mistakes=signatures(MISTAKES["attention_path_contributions"], *args))


# ---------------------------------------------------------------------------------------
# 8. blind_case_study: graded against ground truth

_TRUTHS: dict[int, dict[int, CaseTruth]] = {}
RELEVANT = 0.1  # a listed upstream latent must reach 10% of the largest effect (ablation or linearised)
MAIN = 0.5  # the main upstream latents: at least half the largest effect (ablation or linearised)
MAX_UPSTREAM = 5


def _truths(bk: Backend) -> dict[int, CaseTruth]:
    """Ground truth of the whole pool, computed once per process for each of the checks'
    backends (float32, float64, TF32-rounded ...) on the blind case's fixed corpus. No seed
    enters it: every answer gets the same grade whatever seed the grader re-checks with."""
    if id(bk) not in _TRUTHS:
        _TRUTHS[id(bk)] = blind_case_truths(bk, BLIND_CASE_POOL)
    return _TRUTHS[id(bk)]


@exercise_check(CHAPTER)
def check_blind_case_study(blind_case_study: Any) -> None:
    bk = backend()
    answers = {latent: run(blind_case_study, bk, blind(bk), latent) for latent in BLIND_CASE_POOL}
    truths = _truths(bk)
    for latent, answer in answers.items():
        _grade_label(bk, latent, answer, truths[latent])
    for latent, answer in answers.items():
        _grade_upstream(bk, latent, answer["upstream"], truths[latent])


def _grade_label(bk: Backend, latent: int, answer: Any, truth: CaseTruth) -> None:
    if not isinstance(answer, dict) or set(answer) != {"label", "upstream"}:
        fail(f"latent {latent}: expected a dict {{'label': ..., 'upstream': [...]}}, got {answer!r}")
    label = answer["label"]
    if label not in bk.world.label_names:
        fail(f"latent {latent}: {label!r} is not one of world.label_names: name one of {list(bk.world.label_names)}")
    if label != truth.label:
        a, p = truth.scores[label]
        fail(f"latent {latent}: you named {label!r}, but it tracks {truth.label!r} (AUROC {truth.auroc:.3g}, precision "
             f"{truth.precision:.3g}: {truth.precision:.0%} of its activation falls on {truth.label} tokens). As a score "
             f"for {label!r} it has AUROC {a:.3g} and precision {p:.3g}" + _label_hint(label, truth, a, p))


def _label_hint(label: str, truth: CaseTruth, a: float, p: float) -> str:
    most = max(q for _, q in truth.scores.values())
    if p < most / 2 and a >= truth.auroc - 0.1:
        return (f": it fires a little on many {label} tokens, but most of its activation is elsewhere (a label is "
                "judged on AUROC and precision together). Look at the tokens where it fires hardest, and the words "
                "before them")
    if p >= most / 2:
        return (f": where it fires, the tokens are often {label} tokens, but it stays silent on many {label} "
                "tokens, so that label is broader than what it does: what do the ones it fires on have in common?")
    return (": look again at the tokens marked in its strongest contexts; the tokens a latent promotes are what it "
            "predicts, not what it reads")


def _grade_upstream(bk: Backend, latent: int, upstream: Any, truth: CaseTruth) -> None:
    d_up = bk.transcoders[TC[0]].cfg.d_sae
    if not isinstance(upstream, (list, tuple)) or not all(isinstance(k, int) and not isinstance(k, bool) for k in upstream):
        fail(f"latent {latent}: 'upstream' should be a list of transcoder-0 latent ids (ints), got {upstream!r}")
    if not 1 <= len(upstream) <= MAX_UPSTREAM or len(set(upstream)) != len(upstream):
        fail(f"latent {latent}: list between 1 and at most {MAX_UPSTREAM} distinct upstream latents, the main ones "
             f"first; you listed {len(upstream)}")
    if not all(0 <= k < d_up for k in upstream):
        fail(f"latent {latent}: transcoder-0 latent ids run from 0 to {d_up - 1}; you listed {upstream}")
    effects = dict(truth.effects)
    extra = [k for k in upstream if k not in effects]
    if extra:  # listed latents the ground truth did not ablate: ablate them now
        effects.update(_ablate_extra(bk, latent, extra, truth))
    biggest = max(abs(e) for e in truth.effects.values())
    linear_max = truth.contributions.abs().max().item()

    def size(k: int) -> tuple[float, float]:
        """Latent k's share of the largest effect: by ablation, and linearised."""
        return abs(effects[k]) / biggest, abs(truth.contributions[k].item()) / linear_max

    def described(k: int) -> str:
        return f"{k} (zeroing it changes the latent by {effects[k]:.3g}; its connection is {truth.contributions[k].item():.3g})"

    irrelevant = [k for k in upstream if max(size(k)) < RELEVANT]
    coactive = _coactive_downstream(bk, truth)
    if len(irrelevant) == len(upstream) and sum(k in coactive for k in upstream) * 2 >= len(upstream):
        fail(f"latent {latent}: {upstream} look like latents of transcoder 1 that fire together with it at its strongest "
             "activations; the ids should name the transcoder-0 latents that feed it")
    main = [k for k in dict.fromkeys([*truth.effects, *truth.contributions.abs().argsort(descending=True)[:8].tolist()])
            if max(size(k)) >= MAIN]
    weights = _pullbacks_onto(bk, latent)
    largest_pullbacks = [set(w.topk(len(upstream)).indices.tolist()) for w in (weights, weights.abs())]
    if irrelevant and set(upstream) in largest_pullbacks:
        k = irrelevant[0]
        fail(f"latent {latent}: you listed its {len(upstream)} largest pullbacks (weights alone), but transcoder-0 "
             f"latent {k} is hardly active where the latent fires: zeroing it changes the latent by {effects[k]:.2g} "
             f"at its strongest activations, against {biggest:.3g} for the main one. Weigh each pullback by the "
             "upstream latent's activation there")
    for k in irrelevant:
        fail(f"latent {latent}: transcoder-0 latent {k} barely changes it (zeroing {k} changes its pre-activation by "
             f"{effects[k]:.2g} at its strongest activations, against {biggest:.3g} for the main one; its connection is "
             f"{truth.contributions[k].item():.2g}): list only latents that feed it")
    top = truth.main_upstream
    if top not in upstream and size(top)[1] >= MAIN:
        fail(f"latent {latent}: you missed its main upstream latent {described(top)}: both measures put it at the "
             "top or near it. Rank transcoder-0 latents by what they contribute where the latent fires (pullback "
             "times activation, attention paths included), or by ablation")
    later = {k: [j for j in upstream[i + 1:] if all(a < b / 2 for a, b in zip(size(k), size(j)))]
             for i, k in enumerate(upstream)}
    misordered = upstream[0] not in main or any(later.values())
    if misordered and len(upstream) > 1 and list(upstream) == sorted(upstream):
        fail(f"latent {latent}: your list {list(upstream)} is sorted by latent id; order it by importance, the main "
             f"ones first: {', '.join(described(k) for k in upstream)}")
    if upstream[0] not in main:
        fail(f"latent {latent}: list the main upstream latents first; you put {described(upstream[0])} first, but "
             f"the main ones are {', '.join(described(k) for k in main)}")
    for k, larger in later.items():
        if larger:
            fail(f"latent {latent}: order the list by importance: you put {described(k)} before {described(larger[0])}, "
                 "which is more than twice as large by ablation and by connection")


def _pullbacks_onto(bk: Backend, latent: int) -> Tensor:
    """Each transcoder-0 latent's pullback onto ``latent`` (weights only, at scale 1)."""
    return pullbacks(bk.model, bk.transcoders[TC[0]], bk.transcoders[TC[1]], 1.0)[:, latent]


def _coactive_downstream(bk: Backend, truth: CaseTruth) -> set[int]:
    """Transcoder-1 latents active at most of the latent's strongest activations."""
    pre = _preacts(bk.model, bk.transcoders[TC[1]], truth.tokens)
    at = pre[torch.arange(len(truth.positions)), truth.positions]  # [n_contexts, d_sae]
    return set(((at > 0).float().mean(0) >= 0.5).nonzero()[:, 0].tolist())


def _ablate_extra(bk: Backend, latent: int, extra: list[int], truth: CaseTruth) -> dict[int, float]:
    """Ablation effects of upstream latents outside the ground truth's candidates, at the
    same contexts."""
    up, down = bk.transcoders[TC[0]], bk.transcoders[TC[1]]
    effects = upstream_ablations(bk.model, up, down, latent, truth.tokens, truth.positions, torch.tensor(extra)).mean(0)
    return dict(zip(extra, effects.tolist()))
