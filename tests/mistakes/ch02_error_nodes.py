"""Plausible wrong implementations of chapter 02's exercises; each check must catch each one.

A mistake with ``signature=True`` (the default) is recognised by its result: the check runs
it on its own inputs (``utils.course.checking.signatures``) and fails with its diagnosis. The
others must be caught by a generic diagnosis or a watched side effect."""
from __future__ import annotations

import torch

from solutions.ch01_attribution import logit_diff
from solutions.ch02_error_nodes import (
    ablate_nodes,
    completeness,
    error_attribution,
    error_term,
    faithfulness,
    position_precision_recall,
    spliced_task_scores,
)
from utils.course.checking import Mistake
from utils.circuits import node_masks
from utils.nodes import output_hook

# --- error_term ----------------------------------------------------------------------


def _read_and_written(model, dictionary, tokens):
    reads = dictionary.cfg.metadata.hook_name
    writes = dictionary.cfg.metadata.hook_name_out or reads
    _, cache = model.run_with_cache(tokens, names_filter=[reads, writes])
    return cache[reads], cache[writes]


def error_from_input(model, dictionary, tokens):
    """Subtracts the prediction from what the dictionary reads (wrong for a transcoder)."""
    x, _ = _read_and_written(model, dictionary, tokens)
    return x - dictionary.decode(dictionary.encode(x))


def error_encodes_output(model, dictionary, tokens):
    """Encodes the activation the dictionary writes (a transcoder reads the MLP's input)."""
    _, y = _read_and_written(model, dictionary, tokens)
    return y - dictionary.decode(dictionary.encode(y))


def error_negated(model, dictionary, tokens):
    return -error_term(model, dictionary, tokens)


def error_reads_values(model, dictionary, tokens):
    hook = dictionary.cfg.metadata.hook_name
    if not hook.endswith("attn.hook_z"):
        return error_term(model, dictionary, tokens)
    _, cache = model.run_with_cache(tokens)
    x = cache[hook.replace("hook_z", "hook_v")]  # "the values are what the heads mix"
    return x - dictionary.decode(dictionary.encode(x))


def error_no_decoder_bias(model, dictionary, tokens):
    x, y = _read_and_written(model, dictionary, tokens)
    return y - (dictionary.encode(x) @ dictionary.W_dec).view_as(y)


def error_pre_relu(model, dictionary, tokens):
    x, y = _read_and_written(model, dictionary, tokens)
    pre = dictionary.process_sae_in(x) @ dictionary.W_enc + dictionary.b_enc  # before the ReLU
    return y - dictionary.decode(pre)


def error_flattened_heads(model, dictionary, tokens):
    return error_term(model, dictionary, tokens).flatten(2)


def error_is_reconstruction(model, dictionary, tokens):
    x, _ = _read_and_written(model, dictionary, tokens)
    return dictionary.decode(dictionary.encode(x))


# --- spliced_task_scores -------------------------------------------------------------


def _scores(model, dictionaries, batch, use_error_term, correct=None, accuracy_from_diff=False, clean_diff=False):
    """The reference with knobs a learner might get wrong."""
    with model.saes(saes=dictionaries, use_error_term=use_error_term):
        logits = model(batch.tokens)
    diff = logit_diff(model(batch.tokens) if clean_diff else logits, batch.answer_ids, batch.distractor_ids)
    top = logits[:, -1].argmax(-1)
    if accuracy_from_diff:
        accuracy = (diff > 0).float().mean().item()
    elif correct == "answer":
        accuracy = (top == batch.answer_ids).float().mean().item()
    else:
        accuracy = batch.correct.gather(-1, top[:, None]).float().mean().item()
    return accuracy, diff.mean().item()


def scores_answer_only(model, dictionaries, batch, use_error_term=False):
    return _scores(model, dictionaries, batch, use_error_term, correct="answer")


def scores_ignore_error_flag(model, dictionaries, batch, use_error_term=False):
    return _scores(model, dictionaries, batch, False)


def scores_accuracy_from_diff(model, dictionaries, batch, use_error_term=False):
    return _scores(model, dictionaries, batch, use_error_term, accuracy_from_diff=True)


def scores_first_dictionary_only(model, dictionaries, batch, use_error_term=False):
    return _scores(model, dictionaries[:1], batch, use_error_term)


def scores_clean_logit_diff(model, dictionaries, batch, use_error_term=False):
    return _scores(model, dictionaries, batch, use_error_term, clean_diff=True)


def scores_swapped(model, dictionaries, batch, use_error_term=False):
    accuracy, diff = spliced_task_scores(model, dictionaries, batch, use_error_term)
    return diff, accuracy


def scores_total_logit_diff(model, dictionaries, batch, use_error_term=False):
    accuracy, diff = spliced_task_scores(model, dictionaries, batch, use_error_term)
    return accuracy, diff * len(batch.prompts)


def scores_as_tensors(model, dictionaries, batch, use_error_term=False):
    return tuple(torch.tensor(v) for v in spliced_task_scores(model, dictionaries, batch, use_error_term))


def scores_leave_saes(model, dictionaries, batch, use_error_term=False):
    for sae in dictionaries:
        model.add_sae(sae, use_error_term=use_error_term)
    return _scores(model, [], batch, use_error_term)


# --- ablate_nodes --------------------------------------------------------------------


def _ablate(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement, *,
            errors=True, use_error_term=True, every_position=False, late_binding=False, effect=False):
    """The reference with knobs a learner might get wrong."""
    masks = node_masks(nodes, dictionaries, tokens.shape[1])
    fwd_hooks = []
    for sae in dictionaries:
        hook = sae.cfg.metadata.hook_name
        ablated = ~masks[hook] if complement else masks[hook]
        if every_position:
            ablated = ablated.any(0, keepdim=True).expand_as(ablated)
        latent_value = 0.0 if baseline is None else baseline.latents[hook]
        error_value = 0.0 if baseline is None else baseline.errors[hook]
        if late_binding:  # closures read the loop variables when they run: the last dictionary's
            def set_latents(acts, hook):
                return torch.where(ablated[:, :-1], latent_value, acts)

            def set_error(error, hook):
                return torch.where(ablated[:, -1].view(-1, *[1] * (error.ndim - 2)), error_value, error)
        else:
            def set_latents(acts, hook, where=ablated[:, :-1], value=latent_value):
                return torch.where(where, value, acts)

            def set_error(error, hook, where=ablated[:, -1], value=error_value):
                return torch.where(where.view(-1, *[1] * (error.ndim - 2)), value, error)
        writes = output_hook(sae)
        fwd_hooks.append((f"{writes}.hook_sae_acts_post", set_latents))
        if errors:
            fwd_hooks.append((f"{writes}.hook_sae_error", set_error))
    with model.saes(saes=dictionaries, use_error_term=use_error_term):
        logits = model.run_with_hooks(tokens, fwd_hooks=fwd_hooks)
        out = logit_diff(logits, answer_ids, distractor_ids)
        if effect:
            out = out - logit_diff(model(tokens), answer_ids, distractor_ids)
    return out


def ablate_latents_only(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None, complement=False):
    return _ablate(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement, errors=False)


def ablate_without_error_term(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None, complement=False):
    return _ablate(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement, use_error_term=False)


def ablate_ignores_complement(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None, complement=False):
    return ablate_nodes(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, False)


def ablate_every_position(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None, complement=False):
    return _ablate(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement, every_position=True)


def ablate_ignores_baseline(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None, complement=False):
    return ablate_nodes(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, None, complement)


def ablate_returns_effect(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None, complement=False):
    return _ablate(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement, effect=True)


def ablate_late_binding(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None, complement=False):
    return _ablate(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement, late_binding=True)


# --- error_attribution ---------------------------------------------------------------


def _error_grad(model, dictionary, tokens, answer_ids, distractor_ids, reduce="sum"):
    """The error leaf and its gradient (metric summed, or averaged, over prompts)."""
    kept = {}

    def leaf(error, hook):
        kept["error"] = error.detach().requires_grad_(True)
        return kept["error"]

    with model.saes(saes=[dictionary], use_error_term=True), torch.enable_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[(f"{output_hook(dictionary)}.hook_sae_error", leaf)])
        metric = logit_diff(logits, answer_ids, distractor_ids)
        (metric.sum() if reduce == "sum" else metric.mean()).backward()
    error = kept["error"]
    return error.detach(), error.grad


def _target(error, baseline):
    return torch.zeros_like(error) if baseline is None else baseline.expand_as(error)


def attribution_negated(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    return -error_attribution(model, dictionary, tokens, answer_ids, distractor_ids, baseline)


def attribution_baseline_dropped(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    return error_attribution(model, dictionary, tokens, answer_ids, distractor_ids)


def attribution_gradient_only(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    _, grad = _error_grad(model, dictionary, tokens, answer_ids, distractor_ids)
    return grad.flatten(2).sum(-1)


def attribution_times_baseline(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    error, grad = _error_grad(model, dictionary, tokens, answer_ids, distractor_ids)
    return (grad * _target(error, baseline)).flatten(2).sum(-1)


def attribution_norms(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    error, grad = _error_grad(model, dictionary, tokens, answer_ids, distractor_ids)
    return grad.flatten(2).norm(dim=-1) * (_target(error, baseline) - error).flatten(2).norm(dim=-1)


def attribution_mean_metric(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    error, grad = _error_grad(model, dictionary, tokens, answer_ids, distractor_ids, reduce="mean")
    return (grad * (_target(error, baseline) - error)).flatten(2).sum(-1)


def attribution_per_dim(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    error, grad = _error_grad(model, dictionary, tokens, answer_ids, distractor_ids)
    return (grad * (_target(error, baseline) - error)).flatten(2)


# --- faithfulness and completeness ---------------------------------------------------


def _metrics(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline, complement):
    """Per-prompt m(C) (outside or inside C ablated), m(empty) and m(M)."""
    def m(nodes, comp):
        return ablate_nodes(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, comp)
    return m(circuit, complement), m([], True), m([], False)


def faithfulness_mean_of_ratios(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    c, empty, whole = _metrics(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline, True)
    return ((c - empty) / (whole - empty)).mean().item()


def faithfulness_no_empty(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    c, _, whole = _metrics(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline, True)
    return (c.mean() / whole.mean()).item()


def faithfulness_ablates_circuit(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    return completeness(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline)


def faithfulness_one_minus(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    return 1 - faithfulness(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline)


def faithfulness_unnormalised(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    c, empty, _ = _metrics(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline, True)
    return (c - empty).mean().item()


def faithfulness_tensor(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    return torch.tensor(faithfulness(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline))


def faithfulness_zero_baseline(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    return faithfulness(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, None)


def completeness_ablates_outside(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    return faithfulness(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline)


def completeness_one_minus(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    return 1 - completeness(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline)


def completeness_no_empty(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    c, _, whole = _metrics(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline, False)
    return (c.mean() / whole.mean()).item()


def completeness_mean_of_ratios(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    c, empty, whole = _metrics(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline, False)
    return ((c - empty) / (whole - empty)).mean().item()


def completeness_unnormalised(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    c, empty, _ = _metrics(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline, False)
    return (c - empty).mean().item()


def completeness_zero_baseline(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    return completeness(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, None)


# --- position_precision_recall -------------------------------------------------------


def _positions(nodes, truth, wrap=True):
    n_pos = truth.shape[0]
    found = {node.pos % n_pos if wrap else node.pos for node in nodes}
    return found, set(truth.nonzero()[:, 0].tolist())


def pr_swapped(nodes, truth):
    precision, recall = position_precision_recall(nodes, truth)
    return recall, precision


def pr_node_weighted(nodes, truth):
    found, true = _positions(nodes, truth)
    on_label = sum(node.pos % truth.shape[0] in true for node in nodes)
    hits = len(found & true)
    return (on_label / len(nodes) if nodes else 0.0), (hits / len(true) if true else 0.0)


def pr_negative_positions(nodes, truth):
    found, true = _positions(nodes, truth, wrap=False)
    hits = len(found & true)
    return (hits / len(found) if found else 0.0), (hits / len(true) if true else 0.0)


def pr_recall_over_positions(nodes, truth):
    precision, _ = position_precision_recall(nodes, truth)
    found, true = _positions(nodes, truth)
    return precision, len(found & true) / truth.shape[0]


def pr_counts_nodes(nodes, truth):
    """Recall counts nodes on labelled positions instead of labelled positions covered."""
    precision, _ = position_precision_recall(nodes, truth)
    _, true = _positions(nodes, truth)
    on_label = sum(node.pos % truth.shape[0] in true for node in nodes)
    return precision, (on_label / len(true) if true else 0.0)


MISTAKES = {
    "error_term": [
        Mistake(error_from_input, "this subtracts the transcoder's prediction from its input (ln2.hook_normalized): "
                "a transcoder predicts hook_mlp_out, so its error is mlp_out - decode(encode(ln2 input))"),
        Mistake(error_encodes_output, "this encodes the activation the transcoder writes (hook_mlp_out): a transcoder "
                "encodes its input, blocks.{L}.ln2.hook_normalized"),
        Mistake(error_negated, "wrong sign", signature=False),
        Mistake(error_reads_values, "this reads x at blocks.1.attn.hook_v", signature=False),
        Mistake(error_no_decoder_bias, "the reconstruction lacks the decoder bias b_dec: use dictionary.decode, "
                "which adds it"),
        Mistake(error_pre_relu, "this decodes the pre-ReLU activations (hook_sae_acts_pre): decode the latents "
                "dictionary.encode returns"),
        Mistake(error_flattened_heads, "expected shape", signature=False),
        Mistake(error_is_reconstruction, "this is the reconstruction decode(encode(x)) itself: the error is the "
                "activation minus it"),
    ],
    "spliced_task_scores": [
        Mistake(scores_answer_only, "accuracy counts only the sampled answer: greater-than accepts every later "
                "year, so test batch.correct at the top token"),
        Mistake(scores_ignore_error_flag, "the dictionaries were spliced without the error term although "
                "use_error_term=True: pass it to model.saes"),
        Mistake(scores_accuracy_from_diff, "accuracy is the share of prompts with a positive logit difference: "
                "it must be the share whose top prediction is correct"),
        Mistake(scores_first_dictionary_only, "only the first dictionary was spliced: splice every one at once"),
        Mistake(scores_clean_logit_diff, "the logit difference comes from the model without the dictionaries: "
                "compute it from the spliced run"),
        Mistake(scores_swapped, "you returned (mean logit difference, accuracy)", signature=False),
        Mistake(scores_leave_saes, "left an SAE at", signature=False),
        Mistake(scores_total_logit_diff, "mean logit difference is 8x the expected", signature=False),
        Mistake(scores_as_tensors, "accuracy should be a Python float, got a 0-dim torch.Tensor", signature=False),
    ],
    "ablate_nodes": [
        Mistake(ablate_latents_only, "the error nodes were not ablated: hook hook_sae_error too and set the error "
                "term at the error nodes' positions"),
        Mistake(ablate_without_error_term, "the dictionaries were spliced without their error term: the model "
                "then runs on reconstructions only; use use_error_term=True"),
        Mistake(ablate_ignores_complement, "complement=True was ignored: ablate every node *not* in `nodes`"),
        Mistake(ablate_every_position, "each node was ablated at every position: only at its own position"),
        Mistake(ablate_ignores_baseline, "the nodes were set to zero although a baseline was given: use "
                "baseline.latents[hook] and baseline.errors[hook]"),
        Mistake(ablate_returns_effect, "this is the change from the clean metric: return the metric itself"),
        Mistake(ablate_late_binding, "every hook used the last dictionary's mask and baseline: hooks defined in a "
                "loop read the loop variables when they run; bind them as default arguments"),
    ],
    "error_attribution": [
        Mistake(attribution_negated, "wrong sign", signature=False),
        Mistake(attribution_baseline_dropped, "this is the attribution for a zero baseline", signature=False),
        Mistake(attribution_gradient_only, "this is the gradient summed over the error's dims: multiply it by "
                "(baseline - error) first"),
        Mistake(attribution_times_baseline, "multiplied the gradient by the baseline alone: multiply by "
                "(baseline - error)"),
        Mistake(attribution_norms, "this multiplies the norms of the gradient and of (baseline - error): take "
                "their dot product"),
        Mistake(attribution_mean_metric, "average over `batch` instead of summing", signature=False),
        Mistake(attribution_per_dim, "one dim too many", signature=False),
    ],
    "faithfulness": [
        Mistake(faithfulness_mean_of_ratios, "this averages a ratio per prompt: average the metric over prompts "
                "first, then take one ratio"),
        Mistake(faithfulness_no_empty, "this is m(C) / m(M): subtract m(empty), the metric with every node "
                "ablated, above and below"),
        Mistake(faithfulness_ablates_circuit, "this ablates the circuit itself (that is completeness): ablate "
                "every node outside it"),
        Mistake(faithfulness_one_minus, "this is 1 - F: the numerator is m(C) - m(empty)"),
        Mistake(faithfulness_zero_baseline, "the nodes were zero-ablated although a baseline was given"),
        Mistake(faithfulness_unnormalised, "this is m(C) - m(empty) alone: divide by m(M) - m(empty)"),
        Mistake(faithfulness_tensor, "should be a Python float, got a 0-dim torch.Tensor", signature=False),
    ],
    "completeness": [
        Mistake(completeness_ablates_outside, "this ablates everything outside the circuit (that is "
                "faithfulness): ablate only the circuit's nodes"),
        Mistake(completeness_one_minus, "this is 1 - the completeness score: the numerator is m(M \\ C) - m(empty)"),
        Mistake(completeness_no_empty, "this is m(M \\ C) / m(M): subtract m(empty) above and below"),
        Mistake(completeness_mean_of_ratios, "this averages a ratio per prompt: average the metric over prompts "
                "first, then take one ratio"),
        Mistake(completeness_zero_baseline, "the nodes were zero-ablated although a baseline was given"),
        Mistake(completeness_unnormalised, "this is m(M \\ C) - m(empty) alone: divide by m(M) - m(empty)"),
    ],
    "position_precision_recall": [
        Mistake(pr_swapped, "(recall, precision)", signature=False),
        Mistake(pr_node_weighted, "precision counts nodes, not positions: take the share of the circuit's "
                "distinct positions that are labelled"),
        Mistake(pr_negative_positions, "negative positions were not wrapped: -1 is the last position (pos % n_pos)"),
        Mistake(pr_recall_over_positions, "recall divides by the prompt length: divide by the number of labelled "
                "positions"),
        Mistake(pr_counts_nodes, "recall counts nodes on labelled positions: count the labelled positions the "
                "circuit covers"),
    ],
}
