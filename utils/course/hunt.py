"""The capstone's grader (chapter 08): the hunt model's ground truth, read back, and a
learner's finding graded against it.

This is grader-side code, next to the checks: the library (``utils.hunt``) hands a learner
prompts, rule menus and the model, never this module. The ground truth itself is derived
when the hunt model is built (``utils.hunt.truth``, written to ``truth.json``); here it is
only read.

A finding (:class:`utils.hunt.HuntSubmission`) on the task that seed ``s`` draws is graded
on variant ``v = s % pool_size()``, with what the build measured on the grader's prompts
(``split="grade"``, seed ``v``, 64 prompts) and means over 64 others (``split="baseline"``):

- **rule**: the line of the menu the learner chose, against the planted rule;
- **positions**: precision and recall of the learner's positions against the positions
  that carry the answer (the planted labels', which token patching finds);
- **circuit**: faithfulness and completeness *recomputed here* (chapter 02's definitions:
  every dictionary spliced with its error term, nodes outside the circuit, or the circuit's
  own, mean-ablated position by position), the claimed faithfulness against the recomputed
  one, node precision (the share of the learner's nodes that the task uses: the reference
  circuit and the 200 most attributed nodes) and recall (the share of the reference
  circuit's attribution the learner's circuit holds), and the components (dictionary,
  layer, position) the planted mechanism needs;
- **key latents**: at most five latents of the circuit, none of them dense (firing on more
  than a quarter of all tokens) and each among the nodes the task uses.

Every failed part comes with a diagnosis a learner can act on. Everything is deterministic:
the same submission and seed give the same grade.
"""
from __future__ import annotations

import copy
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from utils.backends import Backend
from utils.hunt import ARTIFACTS, TRUTH, HuntSubmission, _variant, hunt_prompts, pool_size, rule_menu
from utils.hunt.mechanism import CircuitScorer, baseline_for
from utils.nodes import Node

GRADED_SEEDS = range(pool_size())  # every seed the grader can draw: one per variant of the pool
FAITHFUL = 0.7  # the recomputed faithfulness a circuit must reach (the reference circuits: 0.8 and up)
CLAIM = 0.1  # the claimed faithfulness may differ from the recomputed one by this much
COMPLETE = 0.25  # completeness at most this: ablating the circuit must remove most of the behaviour
POSITIONS = 0.8  # position precision and recall at least this
NODE_PRECISION, NODE_RECALL = 0.4, 0.6  # share of the nodes the task uses; share of the reference's attribution
KEY_LATENTS = 5  # at most this many key latents
TOP = 50  # "the nodes most attributed on this task": the reference ranking's first TOP
STRAY = 0.02  # a position carries nothing when no patched site there moves more than this share

SITES = {"resid0": "its token", "attn0": "layer 0's attention output", "mlp0": "layer 0's MLP output",
         "attn1": "layer 1's attention output", "mlp1": "layer 1's MLP output"}


# ---------------------------------------------------------------------------------------
# The ground truth, read back.


@functools.cache
def _truth_at(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text())


def load_truth(root: Path = ARTIFACTS) -> dict[str, Any]:
    """The committed ground truth (``truth.json``; a copy, to change as you like)."""
    return copy.deepcopy(_truth_at(root / TRUTH))


def variant_truth(seed: int, root: Path = ARTIFACTS) -> dict[str, Any]:
    """The ground truth of the variant ``seed`` draws (a copy); circuit nodes parsed back
    into ``utils.nodes.Node``."""
    _variant(seed)  # a clear message for a seed that is no int
    truth = copy.deepcopy(_truth_at(root / TRUTH)["variants"][seed % pool_size()])
    truth["circuit"]["nodes"] = [Node.parse(n) for n in truth["circuit"]["nodes"]]
    return truth


def true_rule(seed: int) -> str:
    """The rule of the task ``seed`` draws (one entry of ``rule_menu(seed)``)."""
    from utils.hunt.planted import RULES

    return RULES[_variant(seed)[0]][0]


def dense_latents(root: Path = ARTIFACTS) -> dict[tuple[str, int], dict[str, Any]]:
    """Latents that fire on at least the truth's dense share of the hunt corpus's tokens,
    keyed by (dictionary as ``kind{layer}``, latent id): frequency and main token."""
    truth = _truth_at(root / TRUTH)
    out = {}
    for name, table in truth["latents"].items():
        for index, frequency in enumerate(table["frequency"]):
            if frequency >= truth["dense_frequency"]:
                out[name, index] = {"frequency": frequency, "top_token": table["top_token"][index],
                                    "top_token_share": table["top_token_share"][index]}
    return out


# ---------------------------------------------------------------------------------------
# The course's measurement of a circuit on the grader's prompts.


_SCORERS: dict[tuple[int, int, torch.dtype], tuple[Any, CircuitScorer]] = {}


def course_scorer(bk: Backend, seed: int) -> CircuitScorer:
    """Faithfulness and completeness on the grader's 64 prompts of the variant ``seed``
    draws, with per-position means over its 64 baseline prompts (built once per backend)."""
    variant = seed % pool_size()
    key = (id(bk.model), variant, bk.model.cfg.dtype)
    if key not in _SCORERS or _SCORERS[key][0] is not bk.model:
        saes = list(bk.dictionaries.values())
        baseline = baseline_for(bk.model, saes, hunt_prompts(variant, 64, split="baseline").tokens)
        _SCORERS[key] = (bk.model, CircuitScorer(bk.model, saes, hunt_prompts(variant, 64, split="grade"), baseline))
    return _SCORERS[key][1]


# ---------------------------------------------------------------------------------------
# Grading.


@dataclass
class HuntGrade:
    """A graded submission: a score per part, and what to fix (empty when it passed)."""

    seed: int
    task: str
    scores: dict[str, str] = field(default_factory=dict)
    diagnoses: list[str] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.diagnoses

    def report(self) -> str:
        lines = [f"hunt seed {self.seed} ({self.task}), graded on the course's 64 prompts of its layout:"]
        lines += [f"  {part:<12} {score}" for part, score in self.scores.items()]
        return "\n".join(lines)

    def failure(self) -> str:
        """One message: the scores, then each diagnosis."""
        return self.report() + "\n" + "\n".join(f"  - {d}" for d in self.diagnoses)


def describe(kind: str, layer: int) -> str:
    """A dictionary in words."""
    return {"resid_sae": f"the residual SAE after layer {layer}", "attn_sae": f"layer {layer}'s attention SAE",
            "transcoder": f"layer {layer}'s transcoder (its MLP)"}[kind]


def _where(pos: int, n_pos: int, words: list[str]) -> str:
    last = " (the last)" if pos == n_pos - 1 else ""
    return f"position {pos}{last}, {words[pos]!r} in the course's first prompt"


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _number(x: Any) -> float | None:
    if isinstance(x, Tensor) and x.numel() == 1:
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _structure(bk: Backend, submission: Any, menu: list[str], n_pos: int) -> list[str]:
    """What makes ``submission`` impossible to grade (empty when it is well formed)."""
    if not isinstance(submission, HuntSubmission):
        return [f"return a utils.hunt.HuntSubmission(rule=..., positions=..., circuit=..., faithfulness=..., "
                f"key_latents=...), not a {type(submission).__name__}"]
    problems = []
    if not isinstance(submission.rule, str) or submission.rule not in menu:
        problems.append(f"your rule {submission.rule!r} is not a line of rule_menu(seed): copy one of its "
                        f"{len(menu)} lines verbatim")
    positions = submission.positions
    if not isinstance(positions, (list, tuple, set)) or not positions or not all(_is_int(p) for p in positions):
        problems.append(f"positions should be a non-empty list of token positions (ints), got {positions!r}")
    elif any(not -n_pos <= p < n_pos for p in positions):
        problems.append(f"positions {[p for p in positions if not -n_pos <= p < n_pos]} are outside these "
                        f"{n_pos}-token prompts (BOS at 0, the last position {n_pos - 1})")
    circuit = submission.circuit
    if not isinstance(circuit, (list, tuple, set)) or not circuit or not all(isinstance(n, Node) for n in circuit):
        problems.append("circuit should be a non-empty list of utils.nodes.Node (kind, layer, position, latent id "
                        f"or 'error'), got {type(circuit).__name__}"
                        + (f" holding {type(next(iter(circuit))).__name__}" if isinstance(circuit, (list, tuple, set))
                           and circuit else ""))
    else:
        bad = [n for n in circuit if _bad_node(bk, n, n_pos)]
        if bad:
            problems.append(f"{len(bad)} of your {len(circuit)} nodes name no node of these prompts "
                            f"({', '.join(f'{n}: {_bad_node(bk, n, n_pos)}' for n in bad[:3])})"
                            + (": nodes of another task's prompts?" if any("position" in _bad_node(bk, n, n_pos)
                                                                           for n in bad) else ""))
    if _number(submission.faithfulness) is None:
        problems.append(f"faithfulness should be the number you measured, got {submission.faithfulness!r}")
    key = submission.key_latents
    if not isinstance(key, (list, tuple)) or not 1 <= len(key) <= KEY_LATENTS or not all(isinstance(n, Node) for n in key):
        problems.append(f"key_latents should list 1 to {KEY_LATENTS} latents of your circuit (Node), got {key!r}")
    elif isinstance(circuit, (list, tuple, set)) and all(isinstance(n, Node) for n in circuit):
        inside = {_wrapped(n, n_pos) for n in circuit if not _bad_node(bk, n, n_pos)}
        errors = [n for n in key if n.is_error]
        outside = [n for n in key if not n.is_error and _wrapped(n, n_pos) not in inside]
        if errors:
            problems.append(f"key latents are latents, not error nodes ({', '.join(map(str, errors))})")
        if outside:
            problems.append(f"key latents must be nodes of your circuit; {', '.join(map(str, outside))} is not")
    return problems


def _bad_node(bk: Backend, node: Node, n_pos: int) -> str:
    """Why ``node`` is no node of ``bk``'s dictionaries on ``n_pos``-token prompts ('' if it is)."""
    if node.kind not in ("resid_sae", "attn_sae", "transcoder") or (node.kind, node.layer) not in bk.dictionaries:
        return f"no dictionary {node.kind}{node.layer}"
    if not -n_pos <= node.pos < n_pos:
        return f"position {node.pos} is outside these {n_pos}-token prompts"
    d_sae = bk.dictionaries[node.kind, node.layer].cfg.d_sae
    if not node.is_error and not 0 <= int(node.index) < d_sae:
        return f"latent {node.index} is not in 0..{d_sae - 1}"
    return ""


def _wrapped(node: Node, n_pos: int) -> Node:
    return Node(node.kind, node.layer, node.pos % n_pos, node.index)


def grade_submission(bk: Backend, seed: int, submission: Any) -> HuntGrade:
    """Grade ``submission`` on the task ``seed`` draws (see the module docstring)."""
    truth = variant_truth(seed)
    n_pos = truth["n_pos"]
    words = ["<bos>", *truth["prompt"].split()]
    grade = HuntGrade(seed, truth["codename"])
    problems = _structure(bk, submission, rule_menu(seed), n_pos)
    if problems:
        grade.scores["submission"] = "could not be graded"
        grade.diagnoses = problems
        return grade
    _grade_rule(grade, truth, submission.rule)
    _grade_positions(grade, truth, submission.positions, n_pos, words)
    circuit = sorted({_wrapped(n, n_pos) for n in submission.circuit})
    _grade_circuit(grade, bk, seed, truth, circuit, _number(submission.faithfulness) or 0.0, n_pos, words)
    _grade_key_latents(grade, truth, [_wrapped(n, n_pos) for n in submission.key_latents])
    return grade


def _grade_rule(grade: HuntGrade, truth: dict[str, Any], rule: str) -> None:
    fits = {r["rule"]: r["agreement"] for r in truth["rules"]}
    right = rule == truth["rules"][0]["rule"]
    grade.scores["rule"] = "right" if right else f"wrong (it fits the model's predictions on {fits[rule]:.0%} of prompts)"
    grade.numbers["rule"] = float(right)
    if not right:
        grade.diagnoses.append(
            f"the model's top prediction follows your rule on {fits[rule]:.0%} of the course's prompts, and another "
            f"rule of the menu fits {max(fits.values()):.0%} of them: score every rule against the model's own "
            "predictions (section 1), not against what the prompts seem to ask")


def _grade_positions(grade: HuntGrade, truth: dict[str, Any], positions: Sequence[int], n_pos: int,
                     words: list[str]) -> None:
    given, true = {p % n_pos for p in positions}, set(truth["positions"]["answer_positions"])
    hits = len(given & true)
    precision, recall = hits / len(given), hits / len(true)
    grade.scores["positions"] = f"precision {precision:.2f}, recall {recall:.2f}"
    grade.numbers.update(position_precision=precision, position_recall=recall)
    if precision >= POSITIONS and recall >= POSITIONS:
        return
    for shift in (-1, 1):
        if {p + shift for p in given} == true:
            grade.diagnoses.append(
                f"your positions are off by one: shifted by {shift:+d} they would be right. Positions count tokens, "
                "with BOS at position 0 (word i of `batch.prompts` is token i + 1)")
            return
    shares = truth["patching"]["resampled"]
    for pos in sorted(true - given):
        site = max(SITES, key=lambda s: abs(shares[s][pos]))
        grade.diagnoses.append(
            f"your positions leave out {_where(pos, n_pos, words)}: patching {SITES[site]} there from the twin carries "
            f"{shares[site][pos]:.2f} of the logit difference (section 2)")
    stray = sorted(given - true)
    if stray:
        largest = max(abs(shares[s][p]) for s in SITES for p in stray)
        grade.diagnoses.append(
            f"position{'s' if len(stray) > 1 else ''} {', '.join(map(str, stray))} carr{'y' if len(stray) > 1 else 'ies'} "
            f"no answer: patching the token, an attention or an MLP output there moves at most {largest:.2f} of the "
            "logit difference")


def _grade_circuit(grade: HuntGrade, bk: Backend, seed: int, truth: dict[str, Any], circuit: list[Node],
                   claimed: float, n_pos: int, words: list[str]) -> None:
    scorer = course_scorer(bk, seed)
    f, c = scorer.faithfulness(circuit), scorer.completeness(circuit)
    reference = truth["circuit"]
    ranking = [(Node.parse(text), abs(score)) for text, score in reference["ranking"]]
    weight = dict(ranking)
    floor = min(weight.values())
    used = set(reference["nodes"]) | set(weight)
    precision = sum(n in used for n in circuit) / len(circuit)
    total = sum(weight.get(n, floor) for n in reference["nodes"])
    recall = sum(weight.get(n, floor) for n in reference["nodes"] if n in set(circuit)) / total
    errors = sum(n.is_error for n in circuit)
    grade.scores["circuit"] = (f"{len(circuit)} nodes ({errors} error nodes): faithfulness {f:.2f} (you claimed "
                               f"{claimed:.2f}), completeness {c:.2f}; node precision {precision:.2f}, recall {recall:.2f}")
    grade.numbers.update(faithfulness=f, completeness=c, claimed=claimed, node_precision=precision, node_recall=recall)
    if f < FAITHFUL:
        grade.diagnoses.append(
            f"your circuit recovers F = {f:.2f} of the behaviour on the course's prompts (at least {FAITHFUL} needed; "
            f"the course's circuit of {reference['size']} nodes: {reference['faithfulness']:.2f})"
            + _why_unfaithful(truth, circuit, n_pos, words, precision, recall))
    if abs(claimed - f) > CLAIM:
        grade.diagnoses.append(
            f"you claim F = {claimed:.2f}; the course measures {f:.2f} on its own prompts of this layout, every node "
            "outside the circuit mean-ablated to its per-position mean over 64 other prompts: measure F as chapter 02 "
            "does, on enough prompts (64), before you claim it")
    if c > COMPLETE:
        grade.diagnoses.append(
            f"ablating only your circuit leaves the model {c:.0%} of the behaviour (completeness {c:.2f}; the course's "
            f"circuit: {reference['completeness']:.2f}): nodes that carry the task are missing from it")
    if precision < NODE_PRECISION:
        grade.diagnoses.append(
            f"only {precision:.0%} of your {len(circuit)} nodes belong to this task (to the course's circuit or its "
            "200 most attributed nodes): are they this task's, from its own prompts, twins and logit difference? A "
            "circuit is the few nodes that carry the task, the smallest faithful prefix of its attribution ranking")
    if recall < NODE_RECALL and f >= FAITHFUL:
        grade.diagnoses.append(
            f"your circuit holds {recall:.0%} of the attribution of the course's circuit: follow the attribution "
            "ranking (latents and error nodes) from the top")


def _why_unfaithful(truth: dict[str, Any], circuit: list[Node], n_pos: int, words: list[str], precision: float,
                    recall: float) -> str:
    """The likeliest reason a circuit is not faithful: the most specific that applies."""
    reference = truth["circuit"]
    if not any(n.is_error for n in circuit) and reference["faithfulness_without_errors_max"] < FAITHFUL:
        return (f"; your circuit has no error nodes, and on this task latents alone recover at most F = "
                f"{reference['faithfulness_without_errors_max']:.2f}, even 3,000 of them: the dictionaries miss part "
                "of what carries the answer. Rank the error nodes with the latents (chapter 02)")
    lost = {f"{c['kind']}{c['layer']}@{c['pos']}": c["faithfulness_lost"] for c in reference["components"]}
    touched = {f"{n.kind}{n.layer}@{n.pos}" for n in circuit}
    missing = [Node.parse(f"{component}:0") for component in reference["required_components"] if component not in touched]
    if missing:
        return "".join(f"; it leaves out {describe(n.kind, n.layer)} at {_where(n.pos, n_pos, words)}: without it the "
                       f"course's circuit loses {lost[f'{n.kind}{n.layer}@{n.pos}']:.2f} of its faithfulness"
                       for n in missing)
    if len(circuit) < reference["size"] / 2 and precision >= 0.6:
        return (f"; it has {len(circuit)} nodes, and the smallest faithful circuit the course's method finds here has "
                f"{reference['size']}: grow it along the attribution ranking until it is faithful")
    if recall < NODE_RECALL:
        top = {Node.parse(text) for text, _ in reference["ranking"][:TOP]}
        return (f"; its nodes are not this task's: it holds {recall:.0%} of the attribution of the course's circuit "
                f"and {len(top & set(circuit))} of the {TOP} nodes most attributed on this task. Find them with this "
                "task's own prompts, twins and logit difference (answer minus the twin's answer)")
    return ""


def _grade_key_latents(grade: HuntGrade, truth: dict[str, Any], key: list[Node]) -> None:
    dense = dense_latents()
    used = {Node.parse(text) for text, _ in truth["circuit"]["ranking"]} | set(truth["circuit"]["nodes"])
    decoys = [(n, dense[f"{n.kind}{n.layer}", int(n.index)]) for n in key if (f"{n.kind}{n.layer}", n.index) in dense]
    unused = [n for n in key if n not in used and (f"{n.kind}{n.layer}", n.index) not in dense]
    good = len(key) - len(decoys) - len(unused)
    grade.scores["key latents"] = f"{good} of {len(key)} specific to the task"
    grade.numbers["key_latents"] = good / len(key)
    if decoys:
        listed = "; ".join(f"{n} fires on {d['frequency']:.0%} of tokens, {d['top_token_share']:.0%} of its activation "
                           f"on {d['top_token']!r}" for n, d in decoys)
        grade.diagnoses.append(
            f"{len(decoys)} of your {len(key)} key latents fire on more than a quarter of all tokens ({listed}): "
            "they are active almost everywhere, not specific to this task. Measure how often each latent fires on "
            "a corpus (section 5) and set the dense ones aside")
    if unused:
        grade.diagnoses.append(
            f"{', '.join(map(str, unused))} {'is' if len(unused) == 1 else 'are'} not among the nodes this task uses "
            "(the course's circuit and the 200 most attributed): key latents are those your attribution ranks first")


__all__ = ["FAITHFUL", "GRADED_SEEDS", "HuntGrade", "course_scorer", "grade_submission", "load_truth", "true_rule",
           "variant_truth"]
