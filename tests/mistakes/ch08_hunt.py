"""Plausible wrong implementations of chapter 08's exercises; each check must catch each one.

A mistake with ``signature=True`` (the default) is recognised by its result: the check runs
it on its own inputs and fails with its diagnosis. The others must be caught another way:
``hunt_submission``'s are the wrong findings a learner could hand in (a rule read off the
prompts' surface, positions counted from the first word, a circuit without error nodes,
another task's circuit, dense key latents, a faithfulness claimed without measuring it),
and the grader's diagnosis must name each."""
from __future__ import annotations

import copy
import dataclasses

import torch

from solutions.ch01_attribution import logit_diff
from solutions.ch08_hunt import (
    attribution_map,
    faithfulness_of,
    hunt_submission,
    leave_one_out,
    patch_positions,
    smallest_faithful_circuit,
)
from utils.circuits import node_attribution
from utils.course.checking import Mistake
from utils.hunt import HuntSubmission, hunt_prompts, pool_size, rule_menu
from utils.nodes import Node

# --- rule_agreement --------------------------------------------------------------------


def fit_first_position(model, tokens, rule_ids):
    top = model(tokens)[:, 0].argmax(-1)
    return (rule_ids == top).float().mean(-1)


def fit_where_rule_answers(model, tokens, rule_ids):
    """Divides by the prompts where the rule gives a word."""
    top = model(tokens)[:, -1].argmax(-1)
    hits = (rule_ids == top).float().sum(-1)
    return hits / (rule_ids >= 0).float().sum(-1).clamp(min=1)


def fit_top_two(model, tokens, rule_ids):
    top2 = model(tokens)[:, -1].topk(2).indices  # [batch, 2]
    return (rule_ids[..., None] == top2).any(-1).float().mean(-1)


def fit_probability(model, tokens, rule_ids):
    probs = model(tokens)[:, -1].softmax(-1)  # [batch, d_vocab]
    picked = probs.gather(-1, rule_ids.clamp(min=0).T).T  # [rule, batch]
    return torch.where(rule_ids >= 0, picked, 0.0).mean(-1)


def fit_counts(model, tokens, rule_ids):
    top = model(tokens)[:, -1].argmax(-1)
    return (rule_ids == top).float().sum(-1)


# --- patch_positions ---------------------------------------------------------------------


def _patched_metrics(model, batch, hooks, into_twin=False, first_hook_only=False):
    """Per-prompt metric with every position patched in turn (the reference's loop, with knobs)."""
    hooks = list(hooks)[:1] if first_hook_only else list(hooks)
    source, target = (batch.tokens, batch.corrupted_tokens) if into_twin else (batch.corrupted_tokens, batch.tokens)
    _, cache = model.run_with_cache(source, names_filter=hooks)
    rows = []
    for pos in range(batch.tokens.shape[1]):
        def patch(x, hook, pos=pos):
            x = x.clone()
            x[:, pos] = cache[hook.name][:, pos]
            return x

        rows.append(logit_diff(model.run_with_hooks(target, fwd_hooks=[(h, patch) for h in hooks]),
                               batch.answer_ids, batch.distractor_ids))
    return torch.stack(rows)  # [pos, batch]


def _ends(model, batch):
    clean = logit_diff(model(batch.tokens), batch.answer_ids, batch.distractor_ids)
    twin = logit_diff(model(batch.corrupted_tokens), batch.answer_ids, batch.distractor_ids)
    return clean, twin


def shares_over_clean(model, batch, hooks):
    clean, _ = _ends(model, batch)
    return (clean.mean() - _patched_metrics(model, batch, hooks).mean(-1)) / clean.mean()


def shares_into_twin(model, batch, hooks):
    clean, twin = _ends(model, batch)
    return (_patched_metrics(model, batch, hooks, into_twin=True).mean(-1) - twin.mean()) / (clean.mean() - twin.mean())


def shares_first_hook(model, batch, hooks):
    clean, twin = _ends(model, batch)
    patched = _patched_metrics(model, batch, hooks, first_hook_only=True).mean(-1)
    return (clean.mean() - patched) / (clean.mean() - twin.mean())


def shares_twin_own_answer(model, batch, hooks):
    """Scores the twin with its own answer (the prompt's distractor) and distractor."""
    clean, _ = _ends(model, batch)
    twin = logit_diff(model(batch.corrupted_tokens), batch.distractor_ids, batch.answer_ids)
    return (clean.mean() - _patched_metrics(model, batch, hooks).mean(-1)) / (clean.mean() - twin.mean())


def shares_negated(model, batch, hooks):
    return -patch_positions(model, batch, hooks)


# --- attribution_map ---------------------------------------------------------------------


def _attribution(model, dictionaries, batch, baseline, metric=None):
    metric = metric or (lambda logits: logit_diff(logits, batch.answer_ids, batch.distractor_ids))
    return node_attribution(model, dictionaries, batch.tokens, metric, baseline)


def _normalised(mass):
    return mass / mass.sum()


def map_abs_before_mean(model, dictionaries, batch, baseline):
    a = _attribution(model, dictionaries, batch, baseline)
    return _normalised(torch.stack([a[s.cfg.metadata.hook_name].abs().mean(0).sum(-1) for s in dictionaries]))


def map_no_errors(model, dictionaries, batch, baseline):
    a = _attribution(model, dictionaries, batch, baseline)
    return _normalised(torch.stack([a[s.cfg.metadata.hook_name].mean(0)[:, :-1].abs().sum(-1) for s in dictionaries]))


def map_per_dictionary(model, dictionaries, batch, baseline):
    a = _attribution(model, dictionaries, batch, baseline)
    mass = torch.stack([a[s.cfg.metadata.hook_name].mean(0).abs().sum(-1) for s in dictionaries])
    return mass / mass.sum(-1, keepdim=True)


def map_zero_baseline(model, dictionaries, batch, baseline):
    return attribution_map(model, dictionaries, batch, None)


def map_signed(model, dictionaries, batch, baseline):
    a = _attribution(model, dictionaries, batch, baseline)
    mass = torch.stack([a[s.cfg.metadata.hook_name].mean(0).sum(-1) for s in dictionaries]).abs()
    return _normalised(mass)


def map_answer_logit(model, dictionaries, batch, baseline):
    metric = lambda logits: logits[:, -1].gather(-1, batch.answer_ids[:, None])[:, 0]  # noqa: E731
    a = _attribution(model, dictionaries, batch, baseline, metric)
    return _normalised(torch.stack([a[s.cfg.metadata.hook_name].mean(0).abs().sum(-1) for s in dictionaries]))


# --- smallest_faithful_circuit -----------------------------------------------------------


def circuit_best_faithfulness(faithfulness, ranking, target, sizes):
    scored = [(faithfulness(ranking[:n]), n) for n in sizes]
    f, n = max(scored)
    return list(ranking[:n]), f


def circuit_strictly_above(faithfulness, ranking, target, sizes):
    for n in sizes:
        f = faithfulness(ranking[:n])
        if f > target:
            return list(ranking[:n]), f
    return list(ranking[:sizes[-1]]), f


def circuit_without_errors(faithfulness, ranking, target, sizes):
    return smallest_faithful_circuit(faithfulness, [n for n in ranking if not n.is_error], target, sizes)


def circuit_empty_when_unfaithful(faithfulness, ranking, target, sizes):
    for n in sizes:
        f = faithfulness(ranking[:n])
        if f >= target:
            return list(ranking[:n]), f
    return [], faithfulness([])


def circuit_last_reaching(faithfulness, ranking, target, sizes):
    found = None
    for n in sizes:
        f = faithfulness(ranking[:n])
        if f >= target:
            found = (list(ranking[:n]), f)
    return found or (list(ranking[:sizes[-1]]), f)


# --- leave_one_out ---------------------------------------------------------------------


def _component(node):
    return (node.kind, node.layer, node.pos)


def loss_faithfulness_without(faithfulness, circuit):
    groups = sorted({_component(n) for n in circuit})
    return {g: faithfulness([n for n in circuit if _component(n) != g]) for g in groups}


def loss_component_alone(faithfulness, circuit):
    groups = sorted({_component(n) for n in circuit})
    return {g: faithfulness([n for n in circuit if _component(n) == g]) for g in groups}


def loss_keeps_error(faithfulness, circuit):
    full = faithfulness(circuit)
    groups = sorted({_component(n) for n in circuit})
    return {g: full - faithfulness([n for n in circuit if _component(n) != g or n.is_error]) for g in groups}


def loss_by_dictionary(faithfulness, circuit):
    full = faithfulness(circuit)
    groups = sorted({(n.kind, n.layer) for n in circuit})
    return {(kind, layer, -1): full - faithfulness([n for n in circuit if (n.kind, n.layer) != (kind, layer)])
            for kind, layer in groups}


def loss_relative(faithfulness, circuit):
    full = faithfulness(circuit)
    return {g: v / full for g, v in leave_one_out(faithfulness, circuit).items()}


# --- firing_frequency ---------------------------------------------------------------------


def _acts(model, dictionary, tokens, hook=None):
    hook = hook or dictionary.cfg.metadata.hook_name
    _, cache = model.run_with_cache(tokens, names_filter=hook)
    return dictionary.encode(cache[hook])


def frequency_with_bos(model, dictionary, tokens):
    return (_acts(model, dictionary, tokens) > 0).float().mean((0, 1))


def frequency_per_sequence(model, dictionary, tokens):
    return (_acts(model, dictionary, tokens)[:, 1:] > 0).any(1).float().mean(0)


def frequency_mean_activation(model, dictionary, tokens):
    return _acts(model, dictionary, tokens)[:, 1:].mean((0, 1))


def frequency_reads_output(model, dictionary, tokens):
    writes = dictionary.cfg.metadata.hook_name_out or dictionary.cfg.metadata.hook_name
    return (_acts(model, dictionary, tokens, writes)[:, 1:] > 0).float().mean((0, 1))


def frequency_nonnegative(model, dictionary, tokens):
    return (_acts(model, dictionary, tokens)[:, 1:] >= 0).float().mean((0, 1))


# --- hunt_submission: wrong findings -----------------------------------------------------

_FOUND: dict[tuple[int, torch.dtype, int], HuntSubmission] = {}


def _reference(bk, seed):
    """The reference's finding (computed once per backend and seed: the mistakes change it)."""
    key = (id(bk.model), bk.model.cfg.dtype, seed)
    if key not in _FOUND:
        _FOUND[key] = hunt_submission(bk, seed)
    return copy.deepcopy(_FOUND[key])


SURFACE = ("just before", "lives", "not names")  # rules a reader takes off the prompts' surface


def submission_surface_rule(bk, seed):
    """Picks the rule that reads well off the prompts instead of scoring rules on the model."""
    found = _reference(bk, seed)
    return dataclasses.replace(found, rule=next(r for r in rule_menu(seed) if any(s in r for s in SURFACE)))


def submission_word_positions(bk, seed):
    """Counts positions from the first word (forgets BOS at position 0)."""
    found = _reference(bk, seed)
    return dataclasses.replace(found, positions=[p - 1 for p in found.positions])


def submission_latents_only(bk, seed):
    """Ranks latents only: the same number of nodes, no error node."""
    model, dictionaries = bk.model, list(bk.dictionaries.values())
    found = _reference(bk, seed)
    batch = hunt_prompts(seed, 64)
    means = _means(bk, seed)
    from utils.circuits import rank_nodes

    attribution = node_attribution(model, dictionaries, batch.tokens,
                                   lambda logits: logit_diff(logits, batch.answer_ids, batch.distractor_ids), means)
    ranking = rank_nodes({h: a.mean(0) for h, a in attribution.items()}, dictionaries, errors=False)
    circuit = ranking[:len(found.circuit)]
    f = faithfulness_of(model, dictionaries, batch, means)(circuit)
    key = [n for n in found.key_latents if n in set(circuit)] or [circuit[0]]
    return HuntSubmission(found.rule, found.positions, circuit, f, key)


def _means(bk, seed):
    from utils.circuits import mean_baseline

    return mean_baseline(bk.model, list(bk.dictionaries.values()), hunt_prompts(seed, 64, split="baseline").tokens)


def submission_neighbours_circuit(bk, seed):
    """Hands in the circuit found for the next seed (another task), its nodes counted from
    the end of the prompt so that they land on this layout's positions."""
    found, other = _reference(bk, seed), _reference(bk, (seed + 1) % pool_size())
    n_here, n_there = hunt_prompts(seed, 1).tokens.shape[1], hunt_prompts((seed + 1) % pool_size(), 1).tokens.shape[1]
    moved = [Node(n.kind, n.layer, n.pos - n_there + n_here, n.index) for n in other.circuit
             if 0 <= n.pos - n_there + n_here]
    key = [Node(n.kind, n.layer, n.pos - n_there + n_here, n.index) for n in other.key_latents]
    return HuntSubmission(found.rule, found.positions, moved, other.faithfulness, [n for n in key if n in set(moved)])


def submission_most_frequent_key_latents(bk, seed):
    """Names as key latents the circuit's latents that are active on the most tokens of the
    task's prompts, taking "always there" for "important"."""
    found = _reference(bk, seed)
    tokens = hunt_prompts(seed, 64).tokens
    from utils.circuits import dictionary_values

    values = dictionary_values(bk.model, list(bk.dictionaries.values()), tokens)
    hook = {key: sae.cfg.metadata.hook_name for key, sae in bk.dictionaries.items()}

    def active(node):
        return (values[hook[node.kind, node.layer]][0][:, 1:, node.index] > 0).float().mean().item()

    latents = sorted((n for n in found.circuit if not n.is_error), key=lambda n: -active(n))
    return dataclasses.replace(found, key_latents=latents[:5])


def submission_claims_perfect(bk, seed):
    """Claims a perfect circuit without measuring it."""
    return dataclasses.replace(_reference(bk, seed), faithfulness=1.0)


MISTAKES = {
    "rule_agreement": [
        Mistake(fit_first_position, "the top prediction at position 0: the answer is predicted at the last position "
                "(logits[:, -1])"),
        Mistake(fit_where_rule_answers, "divided by the prompts where the rule gives a word: divide by all prompts "
                "(a rule that is silent on a prompt does not explain it)"),
        Mistake(fit_top_two, "counted a rule as fitting when its word is among the top two predictions: compare with "
                "the top prediction only"),
        Mistake(fit_probability, "this is the mean probability of the rule's word: count the prompts whose top "
                "prediction it is"),
        Mistake(fit_counts, "counts, not shares: divide by the number of prompts"),
    ],
    "patch_positions": [
        Mistake(shares_over_clean, "divided by the clean metric: divide by m_clean - m_twin, what patching the whole "
                "twin in would remove"),
        Mistake(shares_into_twin, "patched the prompt's activations into the twin's run: patch the twin's into the "
                "prompt's"),
        Mistake(shares_first_hook, "patched only the first hook of `hooks`: patch all of them at the position at once"),
        Mistake(shares_twin_own_answer, "scored the twin with its own answer: score every run with the prompt's answer "
                "and distractor"),
        Mistake(shares_negated, "wrong sign", signature=False),
    ],
    "attribution_map": [
        Mistake(map_abs_before_mean, "averaged |attribution| over prompts: average the attribution first, then take "
                "|.|"),
        Mistake(map_no_errors, "left out the error nodes (the last column): they are nodes like the latents"),
        Mistake(map_per_dictionary, "normalised each dictionary on its own: divide by the total over every dictionary"),
        Mistake(map_zero_baseline, "attributed against zero although a baseline was given"),
        Mistake(map_signed, "summed signed attributions: take |.| of each node's mean before summing"),
        Mistake(map_answer_logit, "the metric is the answer's logit alone: attribute logit(answer) - logit(distractor)"),
    ],
    "smallest_faithful_circuit": [
        Mistake(circuit_best_faithfulness, "returned the size with the largest faithfulness: return the first (smallest) "
                "size that reaches the target"),
        Mistake(circuit_strictly_above, "compared with >: a circuit whose faithfulness equals the target reaches it (>=)"),
        Mistake(circuit_without_errors, "left the error nodes out of the ranking: they are nodes of the circuit like "
                "the latents"),
        Mistake(circuit_empty_when_unfaithful, "when no size reaches the target, return the prefix of the last size and "
                "its faithfulness"),
        Mistake(circuit_last_reaching, "returned the largest size that reaches the target: stop at the first"),
    ],
    "leave_one_out": [
        Mistake(loss_faithfulness_without, "returned the faithfulness without each component: return what it loses, "
                "F(C) - F(C without it)"),
        Mistake(loss_component_alone, "scored each component alone: drop it from the circuit instead"),
        Mistake(loss_keeps_error, "kept the component's error node: drop all its nodes, latents and error node"),
        Mistake(loss_by_dictionary, "grouped the nodes by dictionary only: a component is a dictionary at one position, "
                "(kind, layer, pos)"),
        Mistake(loss_relative, "divided the loss by F(C): return the difference itself"),
    ],
    "firing_frequency": [
        Mistake(frequency_with_bos, "counted BOS (position 0): leave it out"),
        Mistake(frequency_per_sequence, "counted sequences where it fires anywhere: count tokens"),
        Mistake(frequency_mean_activation, "this is the mean activation: count how often it is active (> 0)"),
        Mistake(frequency_reads_output, "encoded what the dictionary writes (a transcoder writes the MLP's output): "
                "encode what it reads, cfg.metadata.hook_name"),
        Mistake(frequency_nonnegative, "counted activations >= 0, which is every one: active means > 0"),
    ],
    "hunt_submission": [
        Mistake(submission_surface_rule, "the model's top prediction follows your rule on", signature=False),
        Mistake(submission_word_positions, "your positions are off by one", signature=False),
        Mistake(submission_latents_only, "your circuit has no error nodes", signature=False),
        Mistake(submission_neighbours_circuit, "its nodes are not this task's", signature=False),
        Mistake(submission_most_frequent_key_latents, "fire on more than a quarter of all tokens", signature=False),
        Mistake(submission_claims_perfect, "you claim F = 1.00", signature=False),
    ],
}
