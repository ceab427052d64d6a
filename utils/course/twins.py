"""Exercises' twins: library functions that compute an exercise's answer.

The learner's library (``utils/``, outside ``utils/course``) holds functions the chapters use
for their narrative, and some of them compute what an exercise asks for (``utils.metrics.auroc``
is chapter 00's ``latent_aurocs``; ``salient_logit_ids`` is chapter 05's ``salient_logits``). A
graded function that delegates to one has not solved the exercise, so the grader treats a
call to an exercise's twin like a call to its reference: the screen flags an exercise cell
that names one (:mod:`utils.course.screening`), and the re-check refuses a twin called while
the learner's function for that exercise runs (:mod:`utils.course.recheck`), each a ``FAIL*``
with its reason. A twin of one exercise stays free to use in another (chapter 04's blind case
study may call ``pullbacks``, the twin of its ``pullback`` exercise).

Twins are listed by function *name*, so that a function keeps its entry when it moves between
library modules; :func:`twin_functions` finds each by its ``def`` in the library's source.
``tests/test_lint.py`` checks that every name resolves to exactly one library function and
that every library docstring naming a chapter's exercise is listed here.
"""
from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

from utils.course import ROOT

LIBRARY = ROOT / "utils"
MACHINERY = LIBRARY / "course"

TWINS: dict[tuple[str, str], tuple[str, ...]] = {
    # chapter 00
    ("ch00_toolkit", "top_k_latents"): ("sae_acts", "latent_acts", "active_latents"),
    ("ch00_toolkit", "max_activating_contexts"): ("sae_acts", "latent_acts", "top_positions", "corpus_contexts"),
    ("ch00_toolkit", "reconstruction_metrics"): ("dictionary_report", "ce_losses", "explained_variance"),
    ("ch00_toolkit", "latent_aurocs"): ("auroc", "auroc_and_precision"),
    # chapter 01
    ("ch01_attribution", "attribution_patching"): ("node_attribution",),
    # chapter 02
    ("ch02_error_nodes", "error_term"): ("dictionary_values",),
    ("ch02_error_nodes", "spliced_task_scores"): ("task_scores",),
    ("ch02_error_nodes", "error_attribution"): ("node_attribution",),
    # chapter 03
    ("ch03_feature_circuits", "ablation_edges"): ("direct_change",),
    # chapter 04
    ("ch04_transcoders", "transcoder_metrics"): ("dictionary_report", "ce_losses", "explained_variance"),
    ("ch04_transcoders", "de_embedding"): ("de_embeddings", "encoder_preacts"),
    ("ch04_transcoders", "extended_de_embedding"): ("extended_de_embeddings", "encoder_preacts"),
    ("ch04_transcoders", "pullback"): ("pullbacks",),
    ("ch04_transcoders", "input_dependent_connections"): ("upstream_contributions",),
    ("ch04_transcoders", "upstream_ablation_effects"): ("upstream_ablations",),
    ("ch04_transcoders", "attention_path_contributions"): ("ov_pullbacks", "upstream_contributions"),
    ("ch04_transcoders", "blind_case_study"): ("blind_case_truths",),
    # chapter 05 (names, not modules: utils/graphs_attribution.py is becoming the utils/graphs/ package)
    ("ch05_attribution_graphs", "freeze_nonlinearities"): ("freezing_hooks", "frozen_hook_names"),
    ("ch05_attribution_graphs", "salient_logits"): ("salient_logit_ids",),
    ("ch05_attribution_graphs", "target_edges"): ("build_graph",),
    ("ch05_attribution_graphs", "logit_influence"): ("influence",),
    ("ch05_attribution_graphs", "prune_by_influence"): ("cumulative_mask", "prune"),
    # chapter 06
    ("ch06_training", "density_stats"): ("firing_frequency",),
    ("ch06_training", "label_precision"): ("activation_precision", "auroc_and_precision"),
    # chapter 07 (its forward pass and virtual weights are methods of CrossLayerTranscoder,
    # which the check of clt_forward refuses to run)
    ("ch07_crosslayer", "clt_loss"): ("reconstruction_loss", "sparsity_loss"),
    ("ch07_crosslayer", "splice_clt"): ("read_clt",),
}


def twins(chapter: str) -> dict[str, tuple[str, ...]]:
    """exercise -> the names of its twins, for one chapter."""
    return {exercise: names for (ch, exercise), names in TWINS.items() if ch == chapter}


def _defining_modules(name: str) -> list[str]:
    """The library modules whose source defines ``name`` at top level (found by text, so
    that nothing is imported that does not hold a twin)."""
    pattern = re.compile(rf"^def {re.escape(name)}\(", re.M)
    found = []
    for path in sorted(LIBRARY.rglob("*.py")):
        if MACHINERY in path.parents or "artifacts" in path.parts:
            continue
        if pattern.search(path.read_text(encoding="utf-8")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def twin_functions(names: tuple[str, ...] | list[str]) -> dict[str, list[Callable[..., Any]]]:
    """name -> the library function(s) defined under that name (imported to find them)."""
    found: dict[str, list[Callable[..., Any]]] = {}
    for name in names:
        for module in _defining_modules(name):
            fn = getattr(importlib.import_module(module), name, None)
            if inspect.isfunction(fn):
                found.setdefault(name, []).append(inspect.unwrap(fn))
    return found
