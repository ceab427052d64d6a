"""The capstone's ground truth: derived at build time, read by the grader.

For every variant of the pool (a planted task and one layout; seed ``s`` draws variant
``s % pool_size()``), ``derive_truth`` measures on the committed model, with the grader's
prompts (``split="grade"``, seed = the variant's index) and per-position means over other
prompts of the layout (``split="baseline"``):

- ``accuracy``, ``logit_diff``; ``rules``: the menu's rules, the true one first, each with
  the share of prompts where its answer is the model's top prediction;
- ``positions``: token positions of the planted labels (``labels``), the set that carries
  the answer (``answer_positions``, from the labels), and as measured the positions whose
  token moves the answer when patched (``token_positions``) and those where an attention or
  MLP output does (``computing_positions``);
- ``patching``: component patching from the resampled twin into the clean prompt (the
  first ``PATCH_N`` prompts), the share of the logit difference each site carries at each
  position (``utils.hunt.mechanism``): the residual stream entering each layer (layer 0:
  the tokens), each attention and MLP output, and every head wherever its layer's
  attention carries at least ``HEAD_SITES``;
- ``mechanism``: the planted design (``planted.DESIGN``), each claim with what was measured
  (``share`` at its site and position; for a claim that the site reads a position,
  ``knockout``: the share of the clean logit difference lost when every head's attention
  from its position to the read positions is knocked out, and per head; the heads that
  carry it and their attention there) and whether it holds (``share`` or ``knockout`` at
  least ``HOLDS``);
- ``circuit``: chapter 02-03's method, node attribution with the mean baseline, every
  dictionary and error node ranked by |mean attribution|; the reference circuit is the
  smallest prefix (on a size grid) with faithfulness ≥ ``FAITHFUL``, reported with its
  completeness, the faithfulness of the same number of nodes without error nodes, its
  components ((kind, layer, pos) groups, each with its share of the attribution and, for
  the ``N_COMPONENTS`` strongest holding at least 1% of it, the faithfulness lost without
  it; ``required_components``: those losing at least ``REQUIRED``), the faithfulness of
  the circuit without its error nodes, and its key latents (labelled by AUROC and
  precision over a labelled corpus, planted labels included);
- ``decoys``: strongly attributed latents that fire on a large share of all tokens.

Plus ``latents``: per dictionary, every latent's firing frequency, the token its activation
mass falls on most and that share, and its best label.

This module is the build's (``python -m utils.hunt build``) and part of the answer key:
the grader reads ``truth.json`` back through ``utils.course.hunt``, and a learner's code
that imports this module, ``utils.hunt.planted`` or reads ``truth.json`` is flagged by the
grader's screening (``utils.course.screening``).
"""
from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import einops
import torch
from jaxtyping import Bool, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.circuits import dictionary_key, label_positions, rank_nodes
from utils.hunt import _examples, _variant, hunt_task, pool_size
from utils.hunt import planted
from utils.hunt.mechanism import (CircuitScorer, attention_from, baseline_for, end_metrics, knockout_metric,
                                  node_scores, patch_shares, smallest_faithful)
from utils.hunt.world import HuntWorld, planted_batch
from utils.nodes import Node
from utils.toy.generator import Example, Sampler, TaskBatch
from utils.toy.report import activation_precision, auroc, flat_labels
from utils.toy.training import EVAL_SEEDS

GRADE_N, BASELINE_N = 64, 64  # prompts per variant: graded on, and averaged for the mean baseline
FAITHFUL = 0.8  # the reference circuit's faithfulness target
SIZES = (5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000)
HOLDS = 0.5  # a design claim holds when its site carries at least this share
N_RANKED, N_KEY, DENSE, N_COMPONENTS = 200, 8, 0.25, 16  # ranking kept; key latents; a latent firing on more tokens is dense
SITES = ("resid", "attn", "mlp")
PATCH_N, HEAD_SITES = 32, 0.1  # prompts patched (the first of the grade batch); heads where attention carries this
TOKEN_SHARE, SITE_SHARE = 0.05, 0.1  # a token position / a computing position carries at least this
REQUIRED = 0.1  # a component of the reference circuit is required when leaving it out costs this much faithfulness


# ---------------------------------------------------------------------------------------
# The labelled world.


def _prefixed(task: str) -> Sampler:
    """The task's sampler with its marks named ``task.label``."""
    def draw(rng: random.Random) -> Example:
        example = planted.SAMPLERS[task](rng)
        example.marks = {f"{task}.{name}": positions for name, positions in example.marks.items()}
        return example
    return draw


def _marked_mix() -> dict[str, tuple[Sampler, float]]:
    mix = dict(HuntWorld.corpus_mix)
    for task, code in planted.CODENAMES.items():
        mix[code] = (_prefixed(task), mix[code][1])
    return mix


class LabelledHuntWorld(HuntWorld):
    """The hunt world's text (same seeds, same tokens) with the planted tasks' marks kept."""

    corpus_mix = _marked_mix()

    def planted_labels(self, tokens: Int[Tensor, "batch pos"], marks: list[dict[str, list[int]]],
                       names: tuple[str, ...] = planted.LABEL_NAMES) -> dict[str, Bool[Tensor, "batch pos"]]:
        """``labels[name][b, p]``: token ``p`` of row ``b`` carries planted label ``name``
        (marks are word positions, so +1 for BOS; positions past the end are dropped)."""
        labels = {}
        for name in names:
            labels[name] = torch.zeros_like(tokens, dtype=torch.bool)
            for row, mark in enumerate(marks):
                positions = [p + 1 for p in mark.get(name, []) if p + 1 < tokens.shape[1]]
                labels[name][row, positions] = True
        return labels


# ---------------------------------------------------------------------------------------
# Prompts with their labels.


def labelled_prompts(seed: int, n: int = GRADE_N, split: str = "grade", twin: str = "resampled") -> TaskBatch:
    """The prompts of ``hunt_prompts(seed, n, split)`` with the planted labels (names of
    ``planted.TASK_LABELS[task]``); ``twin`` picks the corrupted prompts: ``"resampled"``
    (the learner's) or ``"corrupted"`` (the minimal twin)."""
    task, _ = _variant(seed)
    examples = _examples(seed, n, split)
    world = LabelledHuntWorld()
    tokens = torch.tensor([world.encode(ex.words[:ex.answer_pos]) for ex in examples])
    labels = world.planted_labels(tokens, [ex.marks for ex in examples], planted.TASK_LABELS[task])
    return planted_batch(world, task, examples, twin, labels, hunt_task(seed))


def positions_of(batch: TaskBatch, names: tuple[str, ...]) -> list[int]:
    """Token positions labelled (in at least half the prompts) with any of ``names``."""
    mask = torch.stack([label_positions(batch.labels[name]) for name in names]).any(0)
    return mask.nonzero()[:, 0].tolist()


# ---------------------------------------------------------------------------------------
# Latents: frequency, main token, best label (hidden and organism labels) on a corpus.


def labelled_corpus(n_seqs: int = 256, seq_len: int = 48) -> tuple[Int[Tensor, "batch pos"], dict[str, Bool[Tensor, "batch pos"]]]:
    """Held-out hunt text with the organism's labels and the planted ones (``task.label``)."""
    world = LabelledHuntWorld()
    tokens, marks = world.documents(n_seqs, seq_len, seed=EVAL_SEEDS + 2)
    return tokens, {**world.labels(tokens, marks), **world.planted_labels(tokens, marks)}


@torch.no_grad()
def latent_table(model: HookedSAETransformer, dictionaries: dict[str, SAE]) -> dict[str, dict[str, list]]:
    """Per dictionary (keyed ``kind{layer}``): every latent's firing frequency (BOS
    excluded), the token carrying most of its activation mass with that share, its best
    label by AUROC with the AUROC and precision."""
    tokens, labels = labelled_corpus()
    flat = flat_labels({name: mask[:, 1:] for name, mask in labels.items()})
    names = list(flat)
    label_mask = torch.stack(list(flat.values()), dim=1)
    ids = tokens[:, 1:].flatten()
    table = {}
    for sae in dictionaries.values():
        kind, layer = dictionary_key(sae)
        hook = sae.cfg.metadata.hook_name
        _, cache = model.run_with_cache(tokens, names_filter=hook)
        acts = einops.rearrange(sae.encode(cache[hook])[:, 1:], "b p s -> (b p) s").double()
        mass = torch.zeros(len(model.tokenizer.get_vocab()), acts.shape[1], dtype=torch.float64).index_add_(0, ids, acts)
        share, token = (mass / mass.sum(0).clamp(min=1e-12)).max(0)
        scores = auroc(acts.float(), label_mask)  # [label, latent]
        precision = activation_precision(acts.float(), label_mask)
        best = scores.argmax(0)
        columns = torch.arange(acts.shape[1])
        table[f"{kind}{layer}"] = {
            "frequency": [round(x, 4) for x in (acts > 0).float().mean(0).tolist()],
            "top_token": model.to_str_tokens(token),
            "top_token_share": [round(x, 3) for x in share.tolist()],
            "label": [names[i] for i in best.tolist()],
            "auroc": [round(x, 3) for x in scores[best, columns].tolist()],
            "precision": [round(x, 3) for x in precision[best, columns].tolist()],
        }
    return table


# ---------------------------------------------------------------------------------------
# One variant.


def _subset(batch: TaskBatch, n: int) -> TaskBatch:
    """The first ``n`` prompts of ``batch``."""
    return TaskBatch(batch.task, batch.prompts[:n], batch.corrupted[:n], batch.answers[:n], batch.distractors[:n],
                     batch.tokens[:n], batch.corrupted_tokens[:n], batch.answer_ids[:n], batch.distractor_ids[:n],
                     batch.correct[:n], {k: v[:n] for k, v in batch.labels.items()})


def _patching(model: HookedSAETransformer, batch: TaskBatch) -> dict[str, Any]:
    """Shares per position of the residual stream entering each layer, each attention and
    MLP output; per head wherever its layer's attention carries at least HEAD_SITES."""
    layers, heads = model.cfg.n_layers, model.cfg.n_heads
    sites = [(site, layer, None) for layer in range(layers) for site in SITES]  # resid L: entering layer L
    shares = {f"{site}{layer}": v for (site, layer, _), v in patch_shares(model, batch, sites).items()}
    per_head = {}
    for layer in range(layers):
        where = (shares[f"attn{layer}"].abs() >= HEAD_SITES).nonzero()[:, 0].tolist()
        if where:
            found = patch_shares(model, batch, [("head", layer, h) for h in range(heads)], where)
            per_head.update({f"head{layer}.{h}@{p}": round(v[p].item(), 3) for (_, _, h), v in found.items() for p in where})
    return {"resampled": {name: [round(x, 3) for x in v.tolist()] for name, v in shares.items()},
            "heads": per_head, "ends": [round(x, 3) for x in end_metrics(model, batch)], "n_prompts": len(batch.prompts)}


def _where(patching: dict[str, Any], sites: tuple[str, ...], threshold: float) -> list[int]:
    """Positions where any of ``sites`` carries at least ``threshold`` (resampled twin)."""
    shares = torch.tensor([patching["resampled"][site] for site in sites]).abs().max(0).values
    return (shares >= threshold).nonzero()[:, 0].tolist()


def _claims(model: HookedSAETransformer, batch: TaskBatch, task: str, patching: dict[str, Any]) -> list[dict[str, Any]]:
    """Each design claim with its measurements on ``batch``."""
    clean, twin = end_metrics(model, batch)
    out = []
    for claim in planted.DESIGN[task]:
        site, layer = claim["site"], claim["layer"]
        at = positions_of(batch, (claim["at"],))
        pos = at[0]
        share = patching["resampled"][f"{site}{layer}"][pos]
        measured: dict[str, Any] = {**claim, "pos": pos, "share": share}
        if site == "attn" and f"head{layer}.0@{pos}" in patching["heads"]:
            head_shares = {h: patching["heads"][f"head{layer}.{h}@{pos}"] for h in range(model.cfg.n_heads)}
            carriers = sorted((h for h, s in head_shares.items() if s >= 0.2 * max(head_shares.values())),
                              key=lambda h: -head_shares[h])
            measured["heads"] = {str(h): round(head_shares[h], 3) for h in carriers}
        if "reads" in claim:
            reads = positions_of(batch, (claim["reads"],))
            pattern = attention_from(model, batch.tokens, layer, pos)  # [head, src]
            knocked = {h: (clean - knockout_metric(model, batch, layer, pos, reads, [h]).mean().item()) / clean
                       for h in range(model.cfg.n_heads)}
            readers = sorted((h for h in knocked if knocked[h] >= 0.2 * max(knocked.values())), key=lambda h: -knocked[h])
            measured["reads_pos"] = reads
            measured["knockout"] = round((clean - knockout_metric(model, batch, layer, pos, reads).mean().item()) / clean, 3)
            measured["knockout_heads"] = {str(h): round(knocked[h], 3) for h in readers}
            measured["attention"] = {str(h): round(pattern[h, reads].sum().item(), 3) for h in readers}
        measured["holds"] = bool(share >= HOLDS or measured.get("knockout", 0.0) >= HOLDS)
        out.append(measured)
    return out


def _latent(node: Node) -> int:
    """The latent id of a latent node (an error node has none)."""
    if not isinstance(node.index, int):
        raise ValueError(f"expected a latent node (an int index), got {node}")
    return node.index


def _components(scorer: CircuitScorer, circuit: list[Node], scores: Mapping[Node, float], reference_f: float) -> list[dict[str, Any]]:
    """The reference circuit grouped by (kind, layer, pos): nodes, share of |attribution|,
    and the faithfulness lost when the group is left out of the circuit."""
    groups: dict[tuple[str, int, int], list[Node]] = defaultdict(list)
    for node in circuit:
        groups[node.kind, node.layer, node.pos].append(node)
    total = sum(abs(scores[n]) for n in circuit)
    out = []
    for rank, ((kind, layer, pos), nodes) in enumerate(sorted(groups.items(), key=lambda item: -sum(abs(scores[n]) for n in item[1]))):
        share = sum(abs(scores[n]) for n in nodes) / total
        lost = None
        if rank < N_COMPONENTS and share >= 0.01:  # the strongest groups: measured; the tail: None
            rest = [n for n in circuit if (n.kind, n.layer, n.pos) != (kind, layer, pos)]
            lost = round(reference_f - scorer.faithfulness(rest), 4)
        out.append({"kind": kind, "layer": layer, "pos": pos, "n_nodes": len(nodes),
                    "errors": sum(n.is_error for n in nodes), "attribution_share": round(share, 4),
                    "faithfulness_lost": lost})
    return out


def derive_variant(model: HookedSAETransformer, dictionaries: dict[str, SAE], variant: int,
                   latents: dict[str, dict[str, list]]) -> dict[str, Any]:
    """Everything the grader needs about one variant (see the module docstring)."""
    task, layout = _variant(variant)
    batch = labelled_prompts(variant)
    saes = list(dictionaries.values())
    with torch.no_grad():
        logits = model(batch.tokens)[:, -1]
    top = logits.argmax(-1)
    predictions = [model.tokenizer.convert_ids_to_tokens(int(t)) for t in top]
    rule_answers = [planted.decoy_answers(task, p.split()) for p in batch.prompts]
    rules = [{"rule": rule, "agreement": round(sum(a[i] == y for a, y in zip(rule_answers, predictions)) / len(predictions), 4)}
             for i, rule in enumerate(planted.RULES[task])]
    patching = _patching(model, _subset(batch, PATCH_N))
    spliced = {}
    for name, sae in dictionaries.items():
        with torch.no_grad(), model.saes(saes=[sae], use_error_term=False):
            chosen = model(batch.tokens)[:, -1].argmax(-1)
        spliced[name] = round(batch.correct[torch.arange(len(chosen)), chosen].float().mean().item(), 4)

    baseline = baseline_for(model, saes, labelled_prompts(variant, BASELINE_N, split="baseline").tokens)
    scores = node_scores(model, saes, batch, baseline)
    hook_of: dict[tuple[str, int], str] = {dictionary_key(sae): sae.cfg.metadata.hook_name for sae in saes}

    def score(node: Node) -> float:
        return scores[hook_of[node.kind, node.layer]][node.pos, -1 if node.is_error else _latent(node)].item()

    ranking = rank_nodes(scores, saes)
    latent_ranking = rank_nodes(scores, saes, errors=False)
    scorer = CircuitScorer(model, saes, batch, baseline)
    size, f = smallest_faithful(scorer, ranking, FAITHFUL, [s for s in SIZES if s <= len(ranking)])
    circuit = ranking[:size]
    by_node = {n: score(n) for n in ranking[:max(size, N_RANKED)]}
    key = [n for n in circuit if not n.is_error][:N_KEY]
    components = _components(scorer, circuit, by_node, f)
    decoys = []
    for node in latent_ranking[:100]:
        stats = latents[f"{node.kind}{node.layer}"]
        index = _latent(node)
        if stats["frequency"][index] >= DENSE:
            decoys.append({"node": str(node), "attribution": round(score(node), 4),
                           "frequency": stats["frequency"][index], "top_token": stats["top_token"][index],
                           "top_token_share": stats["top_token_share"][index]})
    return {
        "variant": variant, "task": task, "codename": hunt_task(variant), "layout": planted.LAYOUTS[task][layout],
        "n_pos": batch.tokens.shape[1], "prompt": batch.prompts[0], "twin": batch.corrupted[0],
        "accuracy": round(batch.correct[torch.arange(len(top)), top].float().mean().item(), 4),
        "logit_diff": round((logits.gather(-1, batch.answer_ids[:, None]) - logits.gather(-1, batch.distractor_ids[:, None])).mean().item(), 4),
        "rules": rules, "accuracy_spliced": spliced,
        "positions": {"labels": {name: positions_of(batch, (name,)) for name in planted.TASK_LABELS[task]},
                      "answer_positions": positions_of(batch, planted.ANSWER_LABELS[task]),
                      # measured: tokens whose patching moves the answer; positions where an attention or MLP output does
                      "token_positions": _where(patching, ("resid0",), TOKEN_SHARE),
                      "computing_positions": _where(patching, ("attn0", "mlp0", "attn1", "mlp1"), SITE_SHARE)},
        "patching": patching,
        "mechanism": _claims(model, _subset(batch, PATCH_N), task, patching),
        "circuit": {
            "size": size, "faithfulness": round(f, 4), "completeness": round(scorer.completeness(circuit), 4),
            "target": FAITHFUL, "errors": sum(n.is_error for n in circuit),
            "faithfulness_without_errors": round(scorer.faithfulness(latent_ranking[:size]), 4),
            "faithfulness_without_errors_max": round(scorer.faithfulness(latent_ranking[:SIZES[-1]]), 4),
            "nodes": [str(n) for n in circuit],
            "faithfulness_minus_errors": round(scorer.faithfulness([n for n in circuit if not n.is_error]), 4),
            "components": components,
            "required_components": [f"{c['kind']}{c['layer']}@{c['pos']}" for c in components
                                    if (c["faithfulness_lost"] or 0.0) >= REQUIRED],
            "key_latents": [{"node": str(n), "attribution": round(score(n), 4),
                             **{k: latents[f"{n.kind}{n.layer}"][k][_latent(n)] for k in ("label", "auroc", "precision", "frequency", "top_token")}}
                            for n in key],
            "ranking": [[str(n), round(s, 5)] for n, s in list(by_node.items())[:N_RANKED]],
        },
        "decoys": decoys,
    }


def derive_truth(model: HookedSAETransformer, dictionaries: dict[str, SAE]) -> dict[str, Any]:
    """The ground truth of every variant of the pool (written to ``truth.json``)."""
    torch.manual_seed(0)
    latents = latent_table(model, dictionaries)
    variants = [derive_variant(model, dictionaries, v, latents) for v in range(pool_size())]
    return {"pool_size": pool_size(), "grade": {"n": GRADE_N, "split": "grade", "seed": "variant index"},
            "baseline": {"n": BASELINE_N, "split": "baseline", "per_position": True},
            "faithful_target": FAITHFUL, "claim_holds_at": HOLDS, "dense_frequency": DENSE,
            "variants": variants, "latents": latents}


def planted_report(truth: dict[str, Any]) -> dict[str, Any]:
    """The report's summary of ``truth``: per variant, accuracy, the design claims as
    measured, and the reference circuit's size and scores."""
    out = {}
    for v in truth["variants"]:
        claims = [{k: c[k] for k in ("site", "layer", "at", "pos", "reads", "reads_pos", "share", "knockout", "holds", "heads",
                                     "knockout_heads", "attention") if k in c}
                  for c in v["mechanism"]]
        circuit = {k: v["circuit"][k] for k in ("size", "faithfulness", "completeness", "errors", "faithfulness_minus_errors",
                                                "faithfulness_without_errors", "faithfulness_without_errors_max",
                                                "required_components")}
        out[f"{v['variant']}:{v['task']}"] = {"accuracy": v["accuracy"], "logit_diff": v["logit_diff"],
                                             "accuracy_spliced": v["accuracy_spliced"],
                                             "rule_agreement": [r["agreement"] for r in v["rules"]],
                                             **{k: v["positions"][k] for k in ("answer_positions", "token_positions",
                                                                               "computing_positions")},
                                             "mechanism": claims, "circuit": circuit}
    return out


__all__ = ["LabelledHuntWorld", "derive_truth", "labelled_prompts", "latent_table", "planted_report", "positions_of"]
