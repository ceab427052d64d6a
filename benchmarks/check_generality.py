"""How general are the checks? Run them on plausible wrong implementations that are NOT in the
mistake catalogs (``tests/mistakes``), and count how many are caught and how many get a
message that names the mistake (anything more specific than "N of M entries differ").

    python -m utils.course bench check_generality          # prints one line per mistake, then totals
    python -m utils.course bench check_generality --catalog independent --chapter ch01_attribution --json out.json

The catalog's own mistakes are tested in ``tests/``; these are written separately, as a
learner might get things wrong, to measure the generic diagnoses of ``utils.course.compare`` and
the watched side effects of ``utils.course.checking.run``.
"""
from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

import torch

import solutions.ch00_toolkit as s0
import solutions.ch01_attribution as s1
from utils.course import settings
from utils.course.chapter import Chapter
from utils.course.checking import CheckFailure

UNSEEN: list[tuple[str, str, Callable[..., Any]]] = []


def unseen(chapter: str, exercise: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        UNSEEN.append((chapter, exercise, fn))
        return fn
    return register


def _acts(model, sae, tokens):
    _, cache = model.run_with_cache_with_saes(tokens, saes=[sae])
    return cache[f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"]


# --- chapter 00 ----------------------------------------------------------------------
C0 = "ch00_toolkit"


@unseen(C0, "top_k_latents")
def top_k_ascending(model, sae, prompt, pos, k):
    values, indices = _acts(model, sae, prompt)[0, pos].sort()
    return values[-k:], indices[-k:]


@unseen(C0, "top_k_latents")
def top_k_next_position(model, sae, prompt, pos, k):
    n = model.to_tokens(prompt).shape[1]
    return s0.top_k_latents(model, sae, prompt, (pos + 1) % n, k)


@unseen(C0, "top_k_latents")
def top_k_float_indices(model, sae, prompt, pos, k):
    values, indices = s0.top_k_latents(model, sae, prompt, pos, k)
    return values, indices.float()


@unseen(C0, "top_k_latents")
def top_k_keepdim(model, sae, prompt, pos, k):
    values, indices = s0.top_k_latents(model, sae, prompt, pos, k)
    return values[None], indices[None]


@unseen(C0, "top_k_latents")
def top_k_bos(model, sae, prompt, pos, k):
    return s0.top_k_latents(model, sae, prompt, 0, k)


@unseen(C0, "latent_logit_effects")
def effects_normalised(model, sae, latent):
    direction = sae.W_dec[latent] / sae.W_dec[latent].norm()
    return direction @ model.W_U


@unseen(C0, "latent_logit_effects")
def effects_column(model, sae, latent):
    return sae.W_dec[:, latent] @ model.W_U


@unseen(C0, "latent_logit_effects")
def effects_softmax(model, sae, latent):
    return (sae.W_dec[latent] @ model.W_U).softmax(-1)


@unseen(C0, "latent_logit_effects")
def effects_normalises_in_place(model, sae, latent):
    with torch.no_grad():
        sae.W_dec[latent] /= 1.0 + 1e-2
    return sae.W_dec[latent] @ model.W_U


@unseen(C0, "max_activating_contexts")
def contexts_batch_relative_sequence(model, sae, latent, tokens, k=10, batch_size=64):
    best = []
    for start in range(0, tokens.shape[0], batch_size):
        acts = _acts(model, sae, tokens[start:start + batch_size])[..., latent]
        values, flat = acts.flatten().topk(min(k, acts.numel()))
        best += [(v, f // acts.shape[1], f % acts.shape[1]) for v, f in zip(values.tolist(), flat.tolist())]
    best = sorted(best, reverse=True)[:k]
    return torch.tensor([v for v, _, _ in best]), torch.tensor([[s, p] for _, s, p in best])


@unseen(C0, "max_activating_contexts")
def contexts_ascending(model, sae, latent, tokens, k=10, batch_size=64):
    values, seq_pos = s0.max_activating_contexts(model, sae, latent, tokens, k, batch_size)
    return values.flip(0), seq_pos.flip(0)


@unseen(C0, "max_activating_contexts")
def contexts_without_bos_offset(model, sae, latent, tokens, k=10, batch_size=64):
    acts = _acts(model, sae, tokens)[:, 1:, latent]
    values, flat = acts.flatten().topk(k)
    return values, torch.stack([flat // acts.shape[1], flat % acts.shape[1]], -1)


@unseen(C0, "reconstruction_metrics")
def metrics_variance_per_token(model, sae, tokens):
    m = s0.reconstruction_metrics(model, sae, tokens)
    hook = sae.cfg.metadata.hook_name
    _, cache = model.run_with_cache_with_saes(tokens, saes=[sae])
    x, x_hat = cache[f"{hook}.hook_sae_input"][:, 1:], cache[f"{hook}.hook_sae_recons"][:, 1:]
    m["explained_variance"] = (1 - (x - x_hat).pow(2).sum(-1) / (x - x.mean((0, 1))).pow(2).sum(-1)).mean().item()
    return m


@unseen(C0, "reconstruction_metrics")
def metrics_l0_with_pre(model, sae, tokens):
    m = s0.reconstruction_metrics(model, sae, tokens)
    _, cache = model.run_with_cache_with_saes(tokens, saes=[sae])
    m["l0"] = (cache[f"{sae.cfg.metadata.hook_name}.hook_sae_acts_pre"][:, 1:] > 0).float().sum(-1).mean().item() + 0.5
    return m


@unseen(C0, "reconstruction_metrics")
def metrics_leaves_sae(model, sae, tokens):
    out = s0.reconstruction_metrics(model, sae, tokens)
    model.add_sae(sae)
    return out


@unseen(C0, "latent_aurocs")
def aurocs_normalised_by_positives(acts, labels):
    return s0.latent_aurocs(acts, labels) * (~labels).sum() / labels.sum()


@unseen(C0, "latent_aurocs")
def aurocs_ranks_without_ties(acts, labels):
    ranks = acts.argsort(0).argsort(0).float() + 1
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return (ranks[labels].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


@unseen(C0, "latent_aurocs")
def aurocs_sorted_in_place(acts, labels):
    acts.copy_(acts.sort(0).values)
    return s0.latent_aurocs(acts, labels)


# --- chapter 01 ----------------------------------------------------------------------
C1 = "ch01_attribution"


@unseen(C1, "logit_diff")
def diff_second_to_last(logits, answer_ids, distractor_ids):
    return s1.logit_diff(logits[:, :-1], answer_ids, distractor_ids)


@unseen(C1, "logit_diff")
def diff_keepdim(logits, answer_ids, distractor_ids):
    return s1.logit_diff(logits, answer_ids, distractor_ids)[:, None]


@unseen(C1, "logit_diff")
def diff_batch_sum(logits, answer_ids, distractor_ids):
    return s1.logit_diff(logits, answer_ids, distractor_ids).sum()


@unseen(C1, "ablation_effects")
def ablation_next_position(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    return s1.ablation_effects(model, sae, tokens, answer_ids, distractor_ids, latents, pos - 1, baseline)


@unseen(C1, "ablation_effects")
def ablation_forgets_clean(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    with model.saes(saes=[sae], use_error_term=True):
        clean = s1.logit_diff(model(tokens), answer_ids, distractor_ids)
    return s1.ablation_effects(model, sae, tokens, answer_ids, distractor_ids, latents, pos, baseline) + clean[:, None]


@unseen(C1, "ablation_effects")
def ablation_mean_over_batch(model, sae, tokens, answer_ids, distractor_ids, latents, pos=-1, baseline=None):
    out = s1.ablation_effects(model, sae, tokens, answer_ids, distractor_ids, latents, pos, baseline)
    return out.mean(0, keepdim=True).expand_as(out).clone()


@unseen(C1, "attribution_patching")
def attribution_clean_minus_patched(model, saes, tokens, answer_ids, distractor_ids, patched):
    with s1.splice_for_gradients(model, saes) as nodes, torch.enable_grad():
        s1.logit_diff(model(tokens), answer_ids, distractor_ids).sum().backward()
    return {s.cfg.metadata.hook_name: nodes[f"{s.cfg.metadata.hook_name}.latents"].grad
            * (nodes[f"{s.cfg.metadata.hook_name}.latents"].detach() - patched[s.cfg.metadata.hook_name]) for s in saes}


@unseen(C1, "attribution_patching")
def attribution_leaves_grad_on(model, saes, tokens, answer_ids, distractor_ids, patched):
    torch.set_grad_enabled(True)
    return s1.attribution_patching(model, saes, tokens, answer_ids, distractor_ids, patched)


@unseen(C1, "attribution_patching")
def attribution_first_sae_only(model, saes, tokens, answer_ids, distractor_ids, patched):
    out = s1.attribution_patching(model, saes[:1], tokens, answer_ids, distractor_ids, patched)
    out.update({s.cfg.metadata.hook_name: torch.zeros_like(patched[s.cfg.metadata.hook_name]) for s in saes[1:]})
    return out


@unseen(C1, "integrated_gradients")
def ig_trapezoid(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    from tests.mistakes.ch01_attribution import _ig
    return _ig(model, sae, tokens, answer_ids, distractor_ids, patched, [k / steps for k in range(steps + 1)])


@unseen(C1, "integrated_gradients")
def ig_without_error_term(model, sae, tokens, answer_ids, distractor_ids, patched, steps=10):
    name = f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post"
    with model.saes(saes=[sae], use_error_term=False):
        clean = model.run_with_cache(tokens, names_filter=name)[1][name]
        total = torch.zeros_like(clean)
        for k in range(steps):
            point = (clean + (k + 0.5) / steps * (patched - clean)).requires_grad_(True)
            with torch.enable_grad():
                s1.logit_diff(model.run_with_hooks(tokens, fwd_hooks=[(name, lambda a, hook: point)]), answer_ids, distractor_ids).sum().backward()
            total += point.grad
    return (patched - clean) * total / steps


@unseen(C1, "latent_to_latent_gradients")
def l2l_non_causal(model, up_sae, down_sae, tokens, pos):
    J = s1.latent_to_latent_gradients(model, up_sae, down_sae, tokens, tokens.shape[1] - 1)
    return J if pos % tokens.shape[1] == tokens.shape[1] - 1 else s1.latent_to_latent_gradients(model, up_sae, down_sae, tokens, pos + 1)


@unseen(C1, "latent_to_logit_gradients")
def logit_probabilities(model, sae, tokens, token_ids):
    hook = sae.cfg.metadata.hook_name
    with s1.splice_for_gradients(model, [sae]) as nodes, torch.enable_grad():
        probs = model(tokens)[0, -1].softmax(-1)
        latents = nodes[f"{hook}.latents"]
        where = (latents[0].detach() > 0).nonzero(as_tuple=True)
        values = torch.stack([torch.autograd.grad(probs[t], latents, retain_graph=True)[0][0][where] for t in token_ids.tolist()])
    k, n = values.shape
    indices = torch.stack([torch.arange(k).repeat_interleave(n), where[0].repeat(k), where[1].repeat(k)])
    return torch.sparse_coo_tensor(indices, values.flatten(), (k, tokens.shape[1], sae.cfg.d_sae)).coalesce()


@unseen(C1, "token_to_latent_gradients")
def token_strictly_before(model, sae, tokens, pos):
    A = s1.token_to_latent_gradients(model, sae, tokens, pos).coalesce()
    keep = A.indices()[1] < pos % tokens.shape[1]
    return torch.sparse_coo_tensor(A.indices()[:, keep], A.values()[keep], A.shape).coalesce()


@unseen(C1, "attn_latent_path_effects")
def path_layer_zero(model, attn_sae, tokens, answer_ids, distractor_ids, layer, head, latents, input="k"):
    return s1.attn_latent_path_effects(model, attn_sae, tokens, answer_ids, distractor_ids, 0, head, latents, input)


GENERIC = ("entries differ (max abs diff", "the check could not use your result")


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", choices=("unseen", "independent", "all"), default="all",
                        help="unseen: the UNSEEN mistakes above; independent: benchmarks/independent (wrong and "
                             "correct implementations written blind); all: both (default)")
    parser.add_argument("--chapter", action="append", default=None, metavar="CH",
                        help="only this chapter (repeatable), e.g. ch01_attribution")
    parser.add_argument("--json", metavar="PATH", help="write every row and the summaries to PATH")
    parser.add_argument("--sentinel", choices=("exercise", "entry", "none"), default="exercise",
                        help="after each exercise's entries (or after every entry), run the reference through the "
                             "same check: if it fails, an earlier entry poisoned state the check did not restore")


def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars from the implementations' loops

    rows: list[dict[str, Any]] = []
    sentinels: list[dict[str, Any]] = []
    if args.catalog in ("unseen", "all"):
        rows += _run_unseen(args.chapter)
    if args.catalog in ("independent", "all"):
        independent, independent_sentinels = _run_independent(args.chapter, args.sentinel)
        rows += independent
        sentinels += independent_sentinels
    summary = _summarise(rows)
    _print_summary(summary, rows, sentinels)
    if args.json:
        import sys

        meta = {"argv": sys.argv[1:], "torch_threads": torch.get_num_threads(),
                "SAE_CIRCUITS_STRICT": os.environ.get("SAE_CIRCUITS_STRICT"), "commit": _commit()}
        with open(args.json, "w") as handle:
            json.dump({"meta": meta, "summary": summary, "rows": rows, "sentinels": sentinels}, handle, indent=1)
        print(f"wrote {len(rows)} rows to {args.json}")


def _commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _global_state() -> dict[str, Any]:
    """Process-wide state an implementation can change behind the check's back."""
    return {"grad_enabled": torch.is_grad_enabled(), "default_dtype": str(torch.get_default_dtype()),
            "num_threads": torch.get_num_threads(), "deterministic": torch.are_deterministic_algorithms_enabled()}


def _restore_global_state(state: dict[str, Any]) -> None:
    torch.set_grad_enabled(state["grad_enabled"])
    torch.set_default_dtype(getattr(torch, state["default_dtype"].removeprefix("torch.")))
    torch.set_num_threads(state["num_threads"])
    torch.use_deterministic_algorithms(state["deterministic"])


def _run_check(chapter: str, exercise: str, fn: Callable[..., Any]) -> dict[str, Any]:
    """Run one check on ``fn``: passed / CheckFailure / crash, the message, what it printed,
    the time, and any process-wide state the call left changed (restored before returning)."""
    import contextlib
    import io
    import time

    before = _global_state()
    printed = io.StringIO()
    start = time.perf_counter()
    crash = None
    diagnosis = ""
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            with settings.strict_checks():
                Chapter(chapter).check(exercise)(fn)
        passed, message = True, "PASSED"
    except CheckFailure as failure:
        passed, message, diagnosis = False, str(failure), failure.diagnosis
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # a check must raise CheckFailure and nothing else
        passed, crash = False, type(error).__name__
        message = diagnosis = f"CRASH {crash}: {error}"
    seconds = time.perf_counter() - start
    after = _global_state()
    leaked = {key: [before[key], after[key]] for key in before if before[key] != after[key]}
    if leaked:
        _restore_global_state(before)
    return {"passed": passed, "message": message, "diagnosis": diagnosis, "crash": crash, "seconds": round(seconds, 2),
            "state_left_changed": leaked, "printed": printed.getvalue()[-2000:]}


def _run_unseen(chapters: list[str] | None) -> list[dict[str, Any]]:
    rows = []
    for chapter, exercise, fn in UNSEEN:
        if chapters and chapter not in chapters:
            continue
        result = _run_check(chapter, exercise, fn)
        message = "PASSED (not caught)" if result["passed"] else result["message"]
        caught = not result["passed"]
        is_named = caught and result["crash"] is None and not any(g in result["diagnosis"] for g in GENERIC)
        outcome = "CRASH" if result["crash"] else "named" if is_named else "caught" if caught else "MISSED"
        rows.append({"catalog": "unseen", "chapter": chapter, "exercise": exercise, "name": fn.__name__,
                     "correct": False, "description": "", "names": list(GENERIC), "outcome": outcome,
                     "caught": caught, "named": is_named, "message": message, "crash": result["crash"],
                     "seconds": result["seconds"], "state_left_changed": result["state_left_changed"]})
        print(f"{outcome:8} unseen {chapter}.{exercise}.{fn.__name__}: {message[:160]}", flush=True)
    return rows


def _run_independent(chapters: list[str] | None, sentinel: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import importlib

    from benchmarks.independent import load_all

    entries = [impl for impl in load_all() if not chapters or impl.chapter in chapters]
    rows, sentinels = [], []
    for k, impl in enumerate(entries):
        result = _run_check(impl.chapter, impl.exercise, impl.fn)
        message = result["message"]
        if impl.correct:
            outcome = "accepted" if result["passed"] else "CRASH" if result["crash"] else "REJECTED"
            caught = is_named = False
        else:
            caught = not result["passed"]
            # Phrases are looked for in the diagnosis only: the message's header echoes the check's
            # inputs ("mean baseline", "pos -1") and would name a mistake by accident.
            is_named = caught and result["crash"] is None and any(p in result["diagnosis"].lower() for p in impl.names)
            outcome = "CRASH" if result["crash"] else "named" if is_named else "caught" if caught else "MISSED"
        rows.append({"catalog": "independent", "chapter": impl.chapter, "exercise": impl.exercise, "name": impl.name,
                     "correct": impl.correct, "description": impl.description, "names": list(impl.names),
                     "outcome": outcome, "caught": caught, "named": is_named, "accepted": impl.correct and result["passed"],
                     "message": message, "diagnosis": result["diagnosis"], "review": _review(impl, result["diagnosis"]),
                     "crash": result["crash"], "seconds": result["seconds"],
                     "state_left_changed": result["state_left_changed"]})
        leak = f"  [left changed: {result['state_left_changed']}]" if result["state_left_changed"] else ""
        print(f"{outcome:8} {impl.chapter}.{impl.exercise}.{impl.name}: {message[:160]}{leak}", flush=True)
        last_of_exercise = k + 1 == len(entries) or (entries[k + 1].chapter, entries[k + 1].exercise) != (
            impl.chapter, impl.exercise)
        if sentinel == "entry" or (sentinel == "exercise" and last_of_exercise):
            reference = getattr(importlib.import_module(f"solutions.{impl.chapter}"), impl.exercise)
            check = _run_check(impl.chapter, impl.exercise, reference)
            sentinels.append({"chapter": impl.chapter, "exercise": impl.exercise, "after": impl.name,
                              "passed": check["passed"], "message": check["message"][:500]})
            if not check["passed"]:
                print(f"POISONED {impl.chapter}.{impl.exercise}: the reference fails its check after "
                      f"{impl.name}: {check['message'][:160]}", flush=True)
    return rows, sentinels


REVIEW = "benchmarks/independent/review.json"
_REVIEWS: dict[str, Any] = {}


def _review(impl: Any, diagnosis: str) -> dict[str, Any] | None:
    """The manual review of this entry's diagnosis (``benchmarks/independent/review.json``:
    ``"chapter.exercise.name" -> {"named": bool, "note": str, "diagnosis": str}``), or None if
    nobody reviewed this very diagnosis (a review of an older message is stale and not used)."""
    if not _REVIEWS:
        try:
            with open(REVIEW) as handle:
                _REVIEWS.update(json.load(handle))
        except FileNotFoundError:
            _REVIEWS["__none__"] = {}
    review = _REVIEWS.get(f"{impl.chapter}.{impl.exercise}.{impl.name}")
    if review is None or impl.correct:
        return None
    if review.get("diagnosis") != diagnosis[:REVIEWED_CHARS]:
        return {"stale": True, "named": None, "note": review.get("note", "")}
    return {"stale": False, "named": bool(review["named"]), "note": review.get("note", "")}


REVIEWED_CHARS = 400  # the opening of the diagnosis a review is tied to


def _counts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    wrong = [r for r in rows if not r["correct"]]
    right = [r for r in rows if r["correct"]]
    caught = sum(r["caught"] for r in wrong)
    named = sum(r["named"] for r in wrong)
    accepted = sum(r["outcome"] == "accepted" for r in right)
    fresh = [r for r in wrong if r.get("review") and not r["review"]["stale"]]
    unreviewed = [r for r in wrong if r["named"] and r not in fresh]
    if not any("review" in r for r in wrong):  # the UNSEEN catalog has no reviews
        unreviewed = []
    reviewed = sum(r["review"]["named"] for r in fresh) if fresh or unreviewed else None
    return {"wrong": len(wrong), "caught": caught, "named": named,
            "caught_pct": round(100 * caught / len(wrong), 1) if wrong else None,
            "named_pct": round(100 * named / len(wrong), 1) if wrong else None,
            "named_on_review": reviewed, "named_by_phrase_unreviewed": len(unreviewed),
            "correct": len(right), "accepted": accepted,
            "crashes": sum(r["outcome"] == "CRASH" for r in rows),
            "state_left_changed": sum(bool(r["state_left_changed"]) for r in rows)}


def _summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for catalog in ("unseen", "independent"):
        mine = [r for r in rows if r["catalog"] == catalog]
        if not mine:
            continue
        per_exercise: dict[str, Any] = {}
        per_chapter: dict[str, Any] = {}
        for key in dict.fromkeys(f"{r['chapter']}.{r['exercise']}" for r in mine):
            per_exercise[key] = _counts([r for r in mine if f"{r['chapter']}.{r['exercise']}" == key])
        for chapter in dict.fromkeys(r["chapter"] for r in mine):
            per_chapter[chapter] = _counts([r for r in mine if r["chapter"] == chapter])
        summary[catalog] = {"total": _counts(mine), "chapters": per_chapter, "exercises": per_exercise}
    return summary


def _print_summary(summary: dict[str, Any], rows: list[dict[str, Any]], sentinels: list[dict[str, Any]]) -> None:
    def line(label: str, c: dict[str, Any]) -> str:
        wrong = (f"wrong caught {c['caught']}/{c['wrong']} ({c['caught_pct']}%), named {c['named']}/{c['wrong']} "
                 f"({c['named_pct']}%)" if c["wrong"] else "no wrong entries")
        extra = f", CRASH {c['crashes']}" if c["crashes"] else ""
        extra += f", state left changed {c['state_left_changed']}" if c["state_left_changed"] else ""
        accepted = f"; correct accepted {c['accepted']}/{c['correct']}" if c["correct"] else ""
        if c.get("named_on_review") is not None and c["wrong"]:
            extra += f"; named on review {c['named_on_review']}/{c['wrong']}"
            extra += f" ({c['named_by_phrase_unreviewed']} phrase matches unreviewed)" if c["named_by_phrase_unreviewed"] else ""
        return f"{label}: {wrong}{accepted}{extra}"

    for catalog, parts in summary.items():
        print(f"\n== {catalog} catalog")
        for exercise, counts in parts["exercises"].items():
            print("  " + line(exercise, counts))
        for chapter, counts in parts["chapters"].items():
            print(line(chapter, counts))
        print(line("TOTAL", parts["total"]))
    problems = [r for r in rows if r["outcome"] in ("MISSED", "REJECTED", "CRASH")]
    if problems:
        print("\nMISSED wrong, REJECTED correct and CRASH rows:")
        for r in problems:
            print(f"  {r['outcome']:8} {r['chapter']}.{r['exercise']}.{r['name']}: {r['message'][:160]}")
    poisoned = [s for s in sentinels if not s["passed"]]
    print(f"\nsentinels (reference re-checked after the entries): {len(sentinels) - len(poisoned)}/{len(sentinels)} passed")
    for s in poisoned:
        print(f"  POISONED {s['chapter']}.{s['exercise']} after {s['after']}: {s['message'][:160]}")
    print(json.dumps({catalog: parts["total"] for catalog, parts in summary.items()}))

