"""Chapter 02, written blind: plausible learner implementations of the seven error-node exercises.

Each wrong one carries the phrases that would name its mistake; each correct one computes the
reference's answer another way. Written from the exercise text and the library only; the
learner's own ``logit_diff`` (chapter 01) and ``ablate_nodes`` (used by faithfulness and
completeness) are the helpers :func:`_logit_diff` and :func:`_ablate` below.
"""
from __future__ import annotations

import functools

import einops
import torch

from benchmarks.independent import correct, wrong
from utils.attribution import splice_for_gradients
from utils.circuits import node_masks, output_hook
from utils.nodes import Node

CH = "ch02_error_nodes"


def _logit_diff(logits, answer_ids, distractor_ids):
    final = logits[:, -1]
    rows = torch.arange(final.shape[0], device=final.device)
    return final[rows, answer_ids] - final[rows, distractor_ids]


def _is_attn(dictionary) -> bool:
    return dictionary.cfg.metadata.hook_name.endswith("attn.hook_z")


# ---------------------------------------------------------------------------------------
# error_term(model, dictionary, tokens) -> [batch, pos, *d_out]


def _read_write(model, dictionary, tokens, reads=None, writes=None):
    reads = reads or dictionary.cfg.metadata.hook_name
    writes = writes or dictionary.cfg.metadata.hook_name_out or dictionary.cfg.metadata.hook_name
    _, cache = model.run_with_cache(tokens, names_filter=[reads, writes])
    return cache[reads], cache[writes]


def _manual_reconstruction(dictionary, x, relu=True, b_dec_in=True, b_dec_out=True):
    """decode(encode(x)) by hand for a ReLU dictionary, hook_z inputs flattened and restored."""
    shape = x.shape
    flat = x.flatten(-2) if _is_attn(dictionary) else x
    subtract = dictionary.b_dec if (b_dec_in and dictionary.cfg.apply_b_dec_to_input) else 0.0
    pre = (flat - subtract) @ dictionary.W_enc + dictionary.b_enc
    acts = torch.relu(pre) if relu else pre
    recons = acts @ dictionary.W_dec + (dictionary.b_dec if b_dec_out else 0.0)
    return recons.reshape(shape)


@wrong(CH, "error_term", "for a transcoder, subtracts the reconstruction from its input instead of the MLP's output",
       names=('transcoder', 'hook_mlp_out', "mlp's output", 'mlp output', 'hook_name_out'))
def error_transcoder_input(model, dictionary, tokens):
    hook = dictionary.cfg.metadata.hook_name
    _, cache = model.run_with_cache(tokens, names_filter=hook)
    x = cache[hook]
    return x - dictionary.decode(dictionary.encode(x))


@wrong(CH, "error_term", "reconstruction minus activation: the sign flipped",
       names=('sign', 'negat', 'flip'))
def error_flipped(model, dictionary, tokens):
    x, y = _read_write(model, dictionary, tokens)
    return dictionary.decode(dictionary.encode(x)) - y


@wrong(CH, "error_term", "flattens hook_z to [batch, pos, n_heads * d_head] and returns it flat",
       names=('shape', 'n_heads', 'd_head', 'flatten', 'hook_z'))
def error_flat_attention(model, dictionary, tokens):
    x, y = _read_write(model, dictionary, tokens)
    if _is_attn(dictionary):
        x, y = x.flatten(-2), y.flatten(-2)
        return y - (torch.relu((x - dictionary.b_dec) @ dictionary.W_enc + dictionary.b_enc) @ dictionary.W_dec
                    + dictionary.b_dec)
    return y - dictionary.decode(dictionary.encode(x))


@wrong(CH, "error_term", "decodes by hand without the decoder bias b_dec",
       names=('b_dec', 'decoder bias'))
def error_no_decoder_bias(model, dictionary, tokens):
    x, y = _read_write(model, dictionary, tokens)
    return y - _manual_reconstruction(dictionary, x, b_dec_out=False)


@wrong(CH, "error_term", "encodes by hand without the ReLU (pre-activations decoded)",
       names=('relu', 'pre-activation', 'pre activation', 'acts_pre'))
def error_no_relu(model, dictionary, tokens):
    x, y = _read_write(model, dictionary, tokens)
    return y - _manual_reconstruction(dictionary, x, relu=False)


@wrong(CH, "error_term", "encodes by hand without subtracting b_dec from the input (apply_b_dec_to_input)",
       names=('b_dec', 'decoder bias', 'apply_b_dec_to_input'))
def error_no_input_b_dec(model, dictionary, tokens):
    x, y = _read_write(model, dictionary, tokens)
    return y - _manual_reconstruction(dictionary, x, b_dec_in=False)


@wrong(CH, "error_term", "for a transcoder, reads the un-normalised MLP input hook_resid_mid",
       names=('ln2', 'hook_normalized', 'resid_mid', 'layer norm', 'wrong hook', 'normalized input'))
def error_transcoder_resid_mid(model, dictionary, tokens):
    reads = dictionary.cfg.metadata.hook_name
    if reads.endswith("ln2.hook_normalized"):
        reads = reads.replace("ln2.hook_normalized", "hook_resid_mid")
    x, y = _read_write(model, dictionary, tokens, reads=reads)
    return y - dictionary.decode(dictionary.encode(x))


@wrong(CH, "error_term", "drops the BOS position",
       names=('bos', 'position 0', 'first position'))
def error_without_bos(model, dictionary, tokens):
    x, y = _read_write(model, dictionary, tokens)
    return (y - dictionary.decode(dictionary.encode(x)))[:, 1:]


@wrong(CH, "error_term", "reads SAELens's hook_sae_error after add_sae(use_error_term=True), never resets",
       names=('attached', 'reset_saes', 'left on', 'left an sae'))
def error_leaves_dictionary(model, dictionary, tokens):
    name = f"{output_hook(dictionary)}.hook_sae_error"
    model.add_sae(dictionary, use_error_term=True)
    _, cache = model.run_with_cache(tokens, names_filter=name)
    return cache[name]


@correct(CH, "error_term", "SAELens's own hook_sae_error, spliced with use_error_term for one call")
def error_from_saelens(model, dictionary, tokens):
    name = f"{output_hook(dictionary)}.hook_sae_error"
    _, cache = model.run_with_cache_with_saes(tokens, saes=[dictionary], use_error_term=True, names_filter=name)
    return cache[name]


@correct(CH, "error_term", "encode and decode by hand in float64 (b_dec subtracted, hook_z flattened and restored)")
def error_by_hand_float64(model, dictionary, tokens):
    x, y = _read_write(model, dictionary, tokens)
    shape = y.shape
    flat = x.double().flatten(-2) if _is_attn(dictionary) else x.double()
    b_dec = dictionary.b_dec.double()
    if dictionary.cfg.apply_b_dec_to_input:
        flat = flat - b_dec
    acts = torch.relu(flat @ dictionary.W_enc.double() + dictionary.b_enc.double())
    recons = (acts @ dictionary.W_dec.double() + b_dec).reshape(shape)
    return (y.double() - recons).to(y.dtype)


@correct(CH, "error_term", "the error node of utils.attribution.splice_for_gradients")
def error_from_gradient_splice(model, dictionary, tokens):
    with splice_for_gradients(model, [dictionary]) as nodes:
        model(tokens)
    return nodes[f"{dictionary.cfg.metadata.hook_name}.error"].detach()


# ---------------------------------------------------------------------------------------
# spliced_task_scores(model, dictionaries, batch, use_error_term=False) -> (accuracy, mean logit diff)


def _spliced_logits(model, dictionaries, tokens, use_error_term):
    with model.saes(saes=list(dictionaries), use_error_term=use_error_term):
        return model(tokens)


@wrong(CH, "spliced_task_scores", "ignores use_error_term: always splices without the error term",
       names=('error term',))
def scores_ignore_error_term(model, dictionaries, batch, use_error_term=False):
    logits = _spliced_logits(model, dictionaries, batch.tokens, False)
    top = logits[:, -1].argmax(-1)
    accuracy = batch.correct[torch.arange(len(top)), top].float().mean().item()
    return accuracy, _logit_diff(logits, batch.answer_ids, batch.distractor_ids).mean().item()


@wrong(CH, "spliced_task_scores", "accuracy against answer_ids only, ignoring the other acceptable answers",
       names=('acceptable', 'several answers', 'batch.correct', 'other answers', 'any later year'))
def scores_answer_ids_only(model, dictionaries, batch, use_error_term=False):
    logits = _spliced_logits(model, dictionaries, batch.tokens, use_error_term)
    accuracy = (logits[:, -1].argmax(-1) == batch.answer_ids).float().mean().item()
    return accuracy, _logit_diff(logits, batch.answer_ids, batch.distractor_ids).mean().item()


@wrong(CH, "spliced_task_scores", "returns 0-dim tensors instead of floats",
       names=('python float', 'tensor', 'float(', '.item()'))
def scores_tensors(model, dictionaries, batch, use_error_term=False):
    logits = _spliced_logits(model, dictionaries, batch.tokens, use_error_term)
    top = logits[:, -1].argmax(-1)
    accuracy = batch.correct[torch.arange(len(top)), top].float().mean()
    return accuracy, _logit_diff(logits, batch.answer_ids, batch.distractor_ids).mean()


@wrong(CH, "spliced_task_scores", "splices only the first dictionary of the list",
       names=('every dictionary', 'all dictionaries', 'first dictionary', 'only one', 'each dictionary'))
def scores_first_dictionary(model, dictionaries, batch, use_error_term=False):
    logits = _spliced_logits(model, list(dictionaries)[:1], batch.tokens, use_error_term)
    top = logits[:, -1].argmax(-1)
    accuracy = batch.correct[torch.arange(len(top)), top].float().mean().item()
    return accuracy, _logit_diff(logits, batch.answer_ids, batch.distractor_ids).mean().item()


@wrong(CH, "spliced_task_scores", "batch.correct[:, top]: averages a [batch, batch] table",
       names=('[batch, batch]', 'gather', 'diagonal', 'indexing'))
def scores_outer_indexing(model, dictionaries, batch, use_error_term=False):
    logits = _spliced_logits(model, dictionaries, batch.tokens, use_error_term)
    top = logits[:, -1].argmax(-1)
    accuracy = batch.correct[:, top].float().mean().item()
    return accuracy, _logit_diff(logits, batch.answer_ids, batch.distractor_ids).mean().item()


@wrong(CH, "spliced_task_scores", "add_sae for each dictionary and no reset: they stay attached",
       names=('attached', 'reset_saes', 'left on', 'left an sae'))
def scores_leave_dictionaries(model, dictionaries, batch, use_error_term=False):
    for dictionary in dictionaries:
        model.add_sae(dictionary, use_error_term=use_error_term)
    logits = model(batch.tokens)
    top = logits[:, -1].argmax(-1)
    accuracy = batch.correct[torch.arange(len(top)), top].float().mean().item()
    return accuracy, _logit_diff(logits, batch.answer_ids, batch.distractor_ids).mean().item()


@wrong(CH, "spliced_task_scores", "sums the logit differences over prompts instead of averaging",
       names=('summed', 'sum over prompts', 'averag', 'number of prompts'))
def scores_summed_diff(model, dictionaries, batch, use_error_term=False):
    logits = _spliced_logits(model, dictionaries, batch.tokens, use_error_term)
    top = logits[:, -1].argmax(-1)
    accuracy = batch.correct[torch.arange(len(top)), top].float().mean().item()
    return accuracy, _logit_diff(logits, batch.answer_ids, batch.distractor_ids).sum().item()


@wrong(CH, "spliced_task_scores", "distractor minus answer in the logit difference",
       names=('sign', 'negat', 'flip'))
def scores_flipped_diff(model, dictionaries, batch, use_error_term=False):
    logits = _spliced_logits(model, dictionaries, batch.tokens, use_error_term)
    top = logits[:, -1].argmax(-1)
    accuracy = batch.correct[torch.arange(len(top)), top].float().mean().item()
    return accuracy, _logit_diff(logits, batch.distractor_ids, batch.answer_ids).mean().item()


@wrong(CH, "spliced_task_scores", "accuracy as the share of prompts preferring the answer to the distractor",
       names=('argmax', 'top prediction'))
def scores_pairwise_accuracy(model, dictionaries, batch, use_error_term=False):
    logits = _spliced_logits(model, dictionaries, batch.tokens, use_error_term)
    diff = _logit_diff(logits, batch.answer_ids, batch.distractor_ids)
    return (diff > 0).float().mean().item(), diff.mean().item()


@correct(CH, "spliced_task_scores", "run_with_saes, accuracy by advanced indexing")
def scores_run_with_saes(model, dictionaries, batch, use_error_term=False):
    logits = model.run_with_saes(batch.tokens, saes=list(dictionaries), use_error_term=use_error_term)
    top = logits[:, -1].argmax(-1)
    hits = batch.correct[torch.arange(top.shape[0]), top]
    return hits.float().mean().item(), _logit_diff(logits, batch.answer_ids, batch.distractor_ids).mean().item()


@correct(CH, "spliced_task_scores", "add_sae / reset_saes in try-finally, means in float64 via Python sums")
def scores_add_and_reset(model, dictionaries, batch, use_error_term=False):
    hooks = [d.cfg.metadata.hook_name for d in dictionaries]
    try:
        for dictionary in dictionaries:
            model.add_sae(dictionary, use_error_term=use_error_term)
        logits = model(batch.tokens)
    finally:
        if hooks:
            model.reset_saes(hooks)
    final = logits[:, -1]
    n = final.shape[0]
    hits = sum(bool(batch.correct[b, final[b].argmax()]) for b in range(n))
    diffs = [float(final[b, batch.answer_ids[b]]) - float(final[b, batch.distractor_ids[b]]) for b in range(n)]
    return hits / n, sum(diffs) / n


# ---------------------------------------------------------------------------------------
# ablate_nodes(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None, complement=False)
#   -> [batch]


def _ablate(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None, complement=False):
    """A correct ablate_nodes of the learner's own: one index mask per dictionary, values written
    into clones of the latents and the error term."""
    n_pos = tokens.shape[1]
    nodes = list(nodes)
    fwd_hooks = []
    for sae in dictionaries:
        hook = sae.cfg.metadata.hook_name
        kind = "transcoder" if output_hook(sae) != hook else ("attn_sae" if _is_attn(sae) else "resid_sae")
        layer = int(hook.split(".")[1])
        mask = torch.zeros(n_pos, sae.cfg.d_sae + 1, dtype=torch.bool)
        for node in nodes:
            if (node.kind, node.layer) == (kind, layer):
                mask[node.pos % n_pos, sae.cfg.d_sae if node.is_error else node.index] = True
        if complement:
            mask = ~mask
        latent_base = None if baseline is None else baseline.latents[hook]
        error_base = None if baseline is None else baseline.errors[hook]

        def set_latents(acts, hook, mask=mask[:, :-1], base=latent_base):
            acts = acts.clone()
            pos, latent = mask.nonzero(as_tuple=True)
            if base is None:
                acts[:, pos, latent] = 0.0
            else:
                base = base.expand(acts.shape[1:]) if base.ndim == 1 else base
                acts[:, pos, latent] = base[pos, latent]
            return acts

        def set_error(error, hook, mask=mask[:, -1], base=error_base):
            error = error.clone()
            for p in mask.nonzero()[:, 0].tolist():
                if base is None:
                    error[:, p] = 0.0
                else:
                    error[:, p] = base[p] if base.ndim == error.ndim - 1 else base
            return error

        writes = output_hook(sae)
        fwd_hooks += [(f"{writes}.hook_sae_acts_post", set_latents), (f"{writes}.hook_sae_error", set_error)]
    with model.saes(saes=list(dictionaries), use_error_term=True):
        logits = model.run_with_hooks(tokens, fwd_hooks=fwd_hooks)
    return _logit_diff(logits, answer_ids, distractor_ids)


def _ablate_with(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None, complement=False,
                 *, latent_value=None, error_value=None, mask_of=None, error_view=None, acts_at=None,
                 use_error_term=True, bind=True):
    """The reference recipe with one step swapped for a learner's variant (each keyword one variant)."""
    masks = node_masks(nodes, dictionaries, tokens.shape[1])
    fwd_hooks = []
    for sae in dictionaries:
        hook = sae.cfg.metadata.hook_name
        ablated = mask_of(masks[hook]) if mask_of else (~masks[hook] if complement else masks[hook])
        lv = (0.0 if baseline is None else baseline.latents[hook]) if latent_value is None else latent_value(baseline, hook)
        ev = (0.0 if baseline is None else baseline.errors[hook]) if error_value is None else error_value(baseline, hook)
        where_latents, where_error = ablated[:, :-1], ablated[:, -1]

        if bind:
            def set_latents(acts, hook, where=where_latents, value=lv):
                return torch.where(where, value, acts)

            def set_error(error, hook, where=where_error, value=ev):
                view = error_view(where, error) if error_view else where.view(-1, *[1] * (error.ndim - 2))
                return torch.where(view, value, error)
        else:
            def set_latents(acts, hook):
                return torch.where(where_latents, lv, acts)

            def set_error(error, hook):
                return torch.where(where_error.view(-1, *[1] * (error.ndim - 2)), ev, error)

        at = acts_at(sae) if acts_at else output_hook(sae)
        fwd_hooks += [(f"{at}.hook_sae_acts_post", set_latents), (f"{at}.hook_sae_error", set_error)]
    with model.saes(saes=list(dictionaries), use_error_term=use_error_term):
        logits = model.run_with_hooks(tokens, fwd_hooks=fwd_hooks)
    return _logit_diff(logits, answer_ids, distractor_ids)


@wrong(CH, "ablate_nodes", "ignores complement: always ablates `nodes` themselves",
       names=('complement=true was ignored',))
def ablate_ignores_complement(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None,
                              complement=False):
    return _ablate_with(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement,
                        mask_of=lambda mask: mask)


@wrong(CH, "ablate_nodes", "hooks defined in the loop without binding: every hook uses the last dictionary's "
       "mask and values", names=('last dictionary', 'late binding', 'default argument', 'loop variable', 'every dictionary', 'closure'))
def ablate_late_binding(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None,
                        complement=False):
    return _ablate_with(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement,
                        bind=False)


@wrong(CH, "ablate_nodes", "an error node ablates the error at every position, not only at its own",
       names=('every position', 'all positions', 'its position', 'other positions'))
def ablate_error_everywhere(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None,
                            complement=False):
    def spread(mask):
        mask = ~mask if complement else mask.clone()
        mask[:, -1] = mask[:, -1].any()
        return mask
    return _ablate_with(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement,
                        mask_of=spread)


@wrong(CH, "ablate_nodes", "splices the dictionaries without their error terms",
       names=('error term', 'use_error_term'))
def ablate_no_error_term(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None,
                         complement=False):
    return _ablate_with(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement,
                        use_error_term=False)


@wrong(CH, "ablate_nodes", "hooks the latents under the hook a dictionary reads, not the one it writes "
       "(no such hook point for a transcoder)", names=('output_hook', 'hook it writes', 'hook_mlp_out', 'transcoder'))
def ablate_reads_hook(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None,
                      complement=False):
    return _ablate_with(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement,
                        acts_at=lambda sae: sae.cfg.metadata.hook_name)


@wrong(CH, "ablate_nodes", "sets ablated error nodes to zero even when a baseline is given",
       names=("error node's baseline", 'errors[', 'baseline for the error', 'error baseline', 'baseline.errors'))
def ablate_errors_to_zero(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None,
                          complement=False):
    return _ablate_with(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement,
                        error_value=lambda baseline, hook: 0.0)


@wrong(CH, "ablate_nodes", "with complement, ablates only the latents outside `nodes`, keeping every error node",
       names=('error nodes outside', 'keeps the error', 'error nodes too', 'error nodes were not ablated'))
def ablate_complement_latents_only(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None,
                                   complement=False):
    def latents_only(mask):
        if not complement:
            return mask
        flipped = ~mask
        flipped[:, -1] = False
        return flipped
    return _ablate_with(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement,
                        mask_of=latents_only)


@wrong(CH, "ablate_nodes", "reshapes the error mask to [pos, 1] for every dictionary (wrong for [.., n_heads, d_head])",
       names=('attention sae', 'hook_z', 'n_heads', 'broadcast', 'reshape'))
def ablate_error_mask_2d(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None,
                         complement=False):
    return _ablate_with(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement,
                        error_view=lambda where, error: where.view(-1, 1))


@wrong(CH, "ablate_nodes", "averages the per-position baseline over positions before using it",
       names=('per position', 'position by position', 'per-position'))
def ablate_baseline_position_mean(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None,
                                  complement=False):
    def latent_value(baseline, hook):
        if baseline is None:
            return 0.0
        value = baseline.latents[hook]
        return value.mean(0) if value.ndim == 2 else value

    def error_value(baseline, hook):
        if baseline is None:
            return 0.0
        value = baseline.errors[hook]
        return value.mean(0) if value.ndim >= 2 else value
    return _ablate_with(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement,
                        latent_value=latent_value, error_value=error_value)


@wrong(CH, "ablate_nodes", "returns the mean over prompts instead of one value per prompt",
       names=('per prompt', 'one value per prompt', 'scalar', 'averag', 'reduce over a dim'))
def ablate_batch_mean(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None,
                      complement=False):
    return _ablate(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement).mean()


@correct(CH, "ablate_nodes", "masks built node by node (no node_masks), values written into clones")
def ablate_node_by_node(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None,
                        complement=False):
    return _ablate(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement)


@correct(CH, "ablate_nodes", "node_masks with hooks bound by functools.partial; error masks broadcast with einops")
def ablate_partial_hooks(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline=None,
                         complement=False):
    masks = node_masks(nodes, dictionaries, tokens.shape[1])

    def set_latents(acts, hook, where, value):
        return torch.where(where, value, acts)

    def set_error(error, hook, where, value):
        if error.ndim == 4:
            where = einops.rearrange(where, "p -> p 1 1")
        else:
            where = einops.rearrange(where, "p -> p 1")
        return torch.where(where, value, error)

    fwd_hooks = []
    for sae in dictionaries:
        hook = sae.cfg.metadata.hook_name
        mask = masks[hook] ^ complement  # XOR with True flips every entry
        latents_to = torch.zeros(()) if baseline is None else baseline.latents[hook]
        error_to = torch.zeros(()) if baseline is None else baseline.errors[hook]
        fwd_hooks.append((f"{output_hook(sae)}.hook_sae_acts_post",
                          functools.partial(set_latents, where=mask[:, :-1], value=latents_to)))
        fwd_hooks.append((f"{output_hook(sae)}.hook_sae_error",
                          functools.partial(set_error, where=mask[:, -1], value=error_to)))
    with model.saes(saes=list(dictionaries), use_error_term=True):
        logits = model.run_with_hooks(tokens, fwd_hooks=fwd_hooks)
    return _logit_diff(logits, answer_ids, distractor_ids)


# ---------------------------------------------------------------------------------------
# error_attribution(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None) -> [batch, pos]


def _error_grad(model, dictionary, tokens, answer_ids, distractor_ids, reduce="sum", at=None):
    kept = {}

    def leaf(error, hook):
        kept["error"] = error.detach().requires_grad_(True)
        return kept["error"]

    name = f"{at or output_hook(dictionary)}.hook_sae_error"
    with model.saes(saes=[dictionary], use_error_term=True), torch.enable_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[(name, leaf)])
        metric = _logit_diff(logits, answer_ids, distractor_ids)
        (metric.sum() if reduce == "sum" else metric.mean()).backward()
    return kept["error"]


def _target(error, baseline):
    return torch.zeros_like(error) if baseline is None else baseline.expand_as(error)


@wrong(CH, "error_attribution", "multiplies by e - e': the sign flipped",
       names=('sign', 'negat', 'flip'))
def error_attr_flipped(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    error = _error_grad(model, dictionary, tokens, answer_ids, distractor_ids)
    return (error.grad * (error.detach() - _target(error, baseline))).flatten(2).sum(-1)


@wrong(CH, "error_attribution", "returns the per-dimension products without summing over the error's dims",
       names=('shape', 'sum over', 'dot product', 'd_model'))
def error_attr_unsummed(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    error = _error_grad(model, dictionary, tokens, answer_ids, distractor_ids)
    return error.grad * (_target(error, baseline) - error.detach())


@wrong(CH, "error_attribution", "backpropagates the mean of the metric over prompts, not the sum",
       names=('sum of the metric', 'mean of the metric', 'batch size', 'divided by', '1/batch', 'averag'))
def error_attr_mean_metric(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    error = _error_grad(model, dictionary, tokens, answer_ids, distractor_ids, reduce="mean")
    return (error.grad * (_target(error, baseline) - error.detach())).flatten(2).sum(-1)


@wrong(CH, "error_attribution", "sums the gradient over dims without multiplying by (e' - e)",
       names=('baseline - error', "e' - e", 'multiply', 'gradient alone', 'only the gradient'))
def error_attr_gradient_only(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    error = _error_grad(model, dictionary, tokens, answer_ids, distractor_ids)
    return error.grad.flatten(2).sum(-1)


@wrong(CH, "error_attribution", "multiplies the gradient by the baseline alone (forgot - e)",
       names=('baseline - error', "e' - e", 'subtract', 'minus the error'))
def error_attr_times_baseline(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    error = _error_grad(model, dictionary, tokens, answer_ids, distractor_ids)
    return (error.grad * _target(error, baseline)).flatten(2).sum(-1)


@wrong(CH, "error_attribution", "also sums over positions: one number per prompt",
       names=('shape', 'per position', '[batch, pos]'))
def error_attr_summed_positions(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    error = _error_grad(model, dictionary, tokens, answer_ids, distractor_ids)
    return (error.grad * (_target(error, baseline) - error.detach())).flatten(1).sum(-1)


@wrong(CH, "error_attribution", "sums over the last dim only (an attention SAE's error keeps its heads)",
       names=('shape', 'n_heads', 'attention sae', 'flatten', 'every dim'))
def error_attr_last_dim(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    error = _error_grad(model, dictionary, tokens, answer_ids, distractor_ids)
    return (error.grad * (_target(error, baseline) - error.detach())).sum(-1)


@wrong(CH, "error_attribution", "turns gradients on with torch.set_grad_enabled(True) and leaves them on",
       names=('grad mode', 'set_grad_enabled', 'gradients enabled', 'enable_grad', 'grad_enabled', 'gradients on'))
def error_attr_leaves_grad(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    torch.set_grad_enabled(True)
    kept = {}

    def leaf(error, hook):
        kept["error"] = error.detach().requires_grad_(True)
        return kept["error"]

    with model.saes(saes=[dictionary], use_error_term=True):
        logits = model.run_with_hooks(tokens, fwd_hooks=[(f"{output_hook(dictionary)}.hook_sae_error", leaf)])
        _logit_diff(logits, answer_ids, distractor_ids).sum().backward()
    error = kept["error"]
    return (error.grad * (_target(error, baseline) - error.detach())).flatten(2).sum(-1).detach()


@wrong(CH, "error_attribution", "hooks hook_sae_error under the hook the dictionary reads (wrong for a transcoder)",
       names=('output_hook', 'hook it writes', 'hook_mlp_out', 'transcoder'))
def error_attr_reads_hook(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    error = _error_grad(model, dictionary, tokens, answer_ids, distractor_ids, at=dictionary.cfg.metadata.hook_name)
    return (error.grad * (_target(error, baseline) - error.detach())).flatten(2).sum(-1)


@wrong(CH, "error_attribution", "ignores the baseline: always attributes zero ablation",
       names=('baseline given', 'given baseline', 'baseline argument', 'ignor', 'zero ablation', 'mean baseline'))
def error_attr_ignores_baseline(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    error = _error_grad(model, dictionary, tokens, answer_ids, distractor_ids)
    return (-error.grad * error.detach()).flatten(2).sum(-1)


@correct(CH, "error_attribution", "the error node of splice_for_gradients (its gradient is the model's own)")
def error_attr_gradient_splice(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    with splice_for_gradients(model, [dictionary]) as nodes, torch.enable_grad():
        _logit_diff(model(tokens), answer_ids, distractor_ids).sum().backward()
    error = nodes[f"{dictionary.cfg.metadata.hook_name}.error"]
    return (error.grad * (_target(error, baseline) - error.detach())).flatten(2).sum(-1)


@correct(CH, "error_attribution", "torch.autograd.grad, the dot product by einsum in float64")
def error_attr_autograd_einsum(model, dictionary, tokens, answer_ids, distractor_ids, baseline=None):
    kept = {}

    def leaf(error, hook):
        kept["error"] = error.detach().requires_grad_(True)
        return kept["error"]

    with model.saes(saes=[dictionary], use_error_term=True), torch.enable_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[(f"{output_hook(dictionary)}.hook_sae_error", leaf)])
        (grad,) = torch.autograd.grad(_logit_diff(logits, answer_ids, distractor_ids).sum(), kept["error"])
    error = kept["error"].detach()
    delta = _target(error, baseline) - error
    flat_grad = grad.flatten(2).double()
    flat_delta = delta.flatten(2).double()
    return einops.einsum(flat_grad, flat_delta, "b p d, b p d -> b p").to(grad.dtype)


# ---------------------------------------------------------------------------------------
# faithfulness / completeness(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None)


def _m(model, dictionaries, nodes, tokens, answer_ids, distractor_ids, baseline, complement, reduce=True):
    value = _ablate(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement)
    return value.mean().item() if reduce else value


def _all_nodes(dictionaries, n_pos):
    nodes = []
    for sae in dictionaries:
        hook = sae.cfg.metadata.hook_name
        kind = "transcoder" if output_hook(sae) != hook else ("attn_sae" if _is_attn(sae) else "resid_sae")
        layer = int(hook.split(".")[1])
        for p in range(n_pos):
            nodes.append(Node(kind, layer, p, "error"))
            nodes.extend(Node(kind, layer, p, i) for i in range(sae.cfg.d_sae))
    return nodes


def _normalised(circuit, n_pos):
    return {Node(n.kind, n.layer, n.pos % n_pos, n.index) for n in circuit}


@wrong(CH, "faithfulness", "m(C) ablates the circuit itself (complement=False): that is completeness",
       names=('complement', 'outside the circuit', 'completeness'))
def faith_ablates_circuit(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    args = (model, dictionaries)
    empty = _m(*args, [], tokens, answer_ids, distractor_ids, baseline, True)
    whole = _m(*args, [], tokens, answer_ids, distractor_ids, baseline, False)
    return (_m(*args, circuit, tokens, answer_ids, distractor_ids, baseline, False) - empty) / (whole - empty)


@wrong(CH, "faithfulness", "the mean over prompts of per-prompt ratios, not the ratio of means",
       names=('ratio of means', 'mean of ratios', 'per prompt', 'averag', 'before the ratio'))
def faith_mean_of_ratios(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    args = (model, dictionaries)
    empty = _m(*args, [], tokens, answer_ids, distractor_ids, baseline, True, reduce=False)
    whole = _m(*args, [], tokens, answer_ids, distractor_ids, baseline, False, reduce=False)
    part = _m(*args, circuit, tokens, answer_ids, distractor_ids, baseline, True, reduce=False)
    return ((part - empty) / (whole - empty)).mean().item()


@wrong(CH, "faithfulness", "m(M) and m(empty) swapped: (m(C) - m(M)) / (m(empty) - m(M))",
       names=('1 - f', 'swap', 'invert', 'flip', 'reversed'))
def faith_swapped_references(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    args = (model, dictionaries)
    empty = _m(*args, [], tokens, answer_ids, distractor_ids, baseline, True)
    whole = _m(*args, [], tokens, answer_ids, distractor_ids, baseline, False)
    return (_m(*args, circuit, tokens, answer_ids, distractor_ids, baseline, True) - whole) / (empty - whole)


@wrong(CH, "faithfulness", "no normalisation: returns m(C) - m(empty)",
       names=('normalis', 'normaliz', 'divide', 'not divided', 'unnormal'))
def faith_unnormalised(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    args = (model, dictionaries)
    empty = _m(*args, [], tokens, answer_ids, distractor_ids, baseline, True)
    return _m(*args, circuit, tokens, answer_ids, distractor_ids, baseline, True) - empty


@wrong(CH, "faithfulness", "passes no baseline to the ablations: zero ablation whatever `baseline` is",
       names=('baseline given', 'given baseline', 'baseline argument', 'ignor', 'zero ablation', 'mean baseline', 'although a baseline was given'))
def faith_ignores_baseline(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    args = (model, dictionaries)
    empty = _m(*args, [], tokens, answer_ids, distractor_ids, None, True)
    whole = _m(*args, [], tokens, answer_ids, distractor_ids, None, False)
    return (_m(*args, circuit, tokens, answer_ids, distractor_ids, None, True) - empty) / (whole - empty)


@wrong(CH, "faithfulness", "assumes m(empty) = 0: returns m(C) / m(M)",
       names=('m(∅) = 0', 'm(empty) = 0', 'everything ablated', 'every node ablated', 'empty circuit', 'assumed zero'))
def faith_empty_is_zero(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    args = (model, dictionaries)
    whole = _m(*args, [], tokens, answer_ids, distractor_ids, baseline, False)
    return _m(*args, circuit, tokens, answer_ids, distractor_ids, baseline, True) / whole


@wrong(CH, "faithfulness", "returns a 0-dim tensor instead of a float",
       names=('python float', 'tensor', 'float(', '.item()'))
def faith_tensor(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    def m(nodes, complement):
        return _ablate(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline, complement).mean()
    empty, whole = m([], True), m([], False)
    return (m(circuit, True) - empty) / (whole - empty)


@correct(CH, "faithfulness", "m(M) from the plain model (no dictionary spliced: the error terms make it equal)")
def faith_plain_whole(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    whole = _logit_diff(model(tokens), answer_ids, distractor_ids).mean().item()
    empty = _m(model, dictionaries, [], tokens, answer_ids, distractor_ids, baseline, True)
    part = _m(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline, True)
    return (part - empty) / (whole - empty)


@correct(CH, "faithfulness", "every node listed explicitly: ablates M minus C (complement=False), sums in float64")
def faith_explicit_nodes(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    n_pos = tokens.shape[1]
    everything = _all_nodes(dictionaries, n_pos)
    keep = _normalised(circuit, n_pos)
    outside = [n for n in everything if n not in keep]

    def m(nodes):
        return _ablate(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline).double().mean().item()
    empty, whole = m(everything), m([])
    return (m(outside) - empty) / (whole - empty)


@wrong(CH, "completeness", "m(M \\ C) ablates everything outside the circuit: that is faithfulness",
       names=('complement', 'is faithfulness', 'computed faithfulness', 'only the nodes of', 'outside the circuit'))
def complete_is_faithfulness(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    args = (model, dictionaries)
    empty = _m(*args, [], tokens, answer_ids, distractor_ids, baseline, True)
    whole = _m(*args, [], tokens, answer_ids, distractor_ids, baseline, False)
    return (_m(*args, circuit, tokens, answer_ids, distractor_ids, baseline, True) - empty) / (whole - empty)


@wrong(CH, "completeness", "returns 1 - F(C) instead of F(M \\ C)",
       names=('1 - f', 'f(m \\ c)', 'one minus'))
def complete_one_minus_faithfulness(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    args = (model, dictionaries)
    empty = _m(*args, [], tokens, answer_ids, distractor_ids, baseline, True)
    whole = _m(*args, [], tokens, answer_ids, distractor_ids, baseline, False)
    return 1 - (_m(*args, circuit, tokens, answer_ids, distractor_ids, baseline, True) - empty) / (whole - empty)


@wrong(CH, "completeness", "m(M) and m(empty) swapped in the normalisation",
       names=('1 - f', 'swap', 'invert', 'flip', 'reversed', '1 - the completeness'))
def complete_swapped_references(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    args = (model, dictionaries)
    empty = _m(*args, [], tokens, answer_ids, distractor_ids, baseline, True)
    whole = _m(*args, [], tokens, answer_ids, distractor_ids, baseline, False)
    return (_m(*args, circuit, tokens, answer_ids, distractor_ids, baseline, False) - whole) / (empty - whole)


@wrong(CH, "completeness", "no normalisation: returns m(M \\ C) - m(empty)",
       names=('normalis', 'normaliz', 'divide', 'not divided', 'unnormal'))
def complete_unnormalised(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    args = (model, dictionaries)
    empty = _m(*args, [], tokens, answer_ids, distractor_ids, baseline, True)
    return _m(*args, circuit, tokens, answer_ids, distractor_ids, baseline, False) - empty


@wrong(CH, "completeness", "the mean over prompts of per-prompt ratios, not the ratio of means",
       names=('ratio of means', 'mean of ratios', 'per prompt', 'averag', 'before the ratio'))
def complete_mean_of_ratios(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    args = (model, dictionaries)
    empty = _m(*args, [], tokens, answer_ids, distractor_ids, baseline, True, reduce=False)
    whole = _m(*args, [], tokens, answer_ids, distractor_ids, baseline, False, reduce=False)
    part = _m(*args, circuit, tokens, answer_ids, distractor_ids, baseline, False, reduce=False)
    return ((part - empty) / (whole - empty)).mean().item()


@wrong(CH, "completeness", "passes no baseline to the ablations: zero ablation whatever `baseline` is",
       names=('baseline given', 'given baseline', 'baseline argument', 'ignor', 'zero ablation', 'mean baseline', 'although a baseline was given'))
def complete_ignores_baseline(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    args = (model, dictionaries)
    empty = _m(*args, [], tokens, answer_ids, distractor_ids, None, True)
    whole = _m(*args, [], tokens, answer_ids, distractor_ids, None, False)
    return (_m(*args, circuit, tokens, answer_ids, distractor_ids, None, False) - empty) / (whole - empty)


@correct(CH, "completeness", "F of the explicit node set M minus C, through a faithfulness written inline")
def complete_explicit_complement(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    n_pos = tokens.shape[1]
    removed = _normalised(circuit, n_pos)
    rest = [n for n in _all_nodes(dictionaries, n_pos) if n not in removed]

    def m(nodes, complement):
        return _ablate(model, dictionaries, tokens, answer_ids, distractor_ids, nodes, baseline,
                       complement).mean().item()
    empty, whole = m([], True), m([], False)
    return (m(rest, True) - empty) / (whole - empty)


@correct(CH, "completeness", "m(M) from the plain model, the three means in float64")
def complete_plain_whole(model, dictionaries, circuit, tokens, answer_ids, distractor_ids, baseline=None):
    whole = _logit_diff(model(tokens), answer_ids, distractor_ids).double().mean()
    empty = _ablate(model, dictionaries, tokens, answer_ids, distractor_ids, [], baseline, True).double().mean()
    part = _ablate(model, dictionaries, tokens, answer_ids, distractor_ids, circuit, baseline, False).double().mean()
    return float((part - empty) / (whole - empty))


# ---------------------------------------------------------------------------------------
# position_precision_recall(nodes, truth) -> (precision, recall)


@wrong(CH, "position_precision_recall", "does not turn negative positions into positive ones",
       names=('negative', 'pos % n_pos', 'from the end'))
def ppr_negative_positions(nodes, truth):
    found = {node.pos for node in nodes}
    true = set(truth.nonzero()[:, 0].tolist())
    hits = len(found & true)
    return (hits / len(found) if found else 0.0), (hits / len(true) if true else 0.0)


@wrong(CH, "position_precision_recall", "precision counts nodes, not distinct positions",
       names=('distinct', 'set of positions', 'duplicate', 'nodes, not positions', 'unique'))
def ppr_counts_nodes(nodes, truth):
    n_pos = truth.shape[0]
    positions = [node.pos % n_pos for node in nodes]
    true = set(truth.nonzero()[:, 0].tolist())
    precision = sum(p in true for p in positions) / len(positions) if positions else 0.0
    recall = len(set(positions) & true) / len(true) if true else 0.0
    return precision, recall


@wrong(CH, "position_precision_recall", "returns (recall, precision)",
       names=('swap', 'reversed', 'recall first', 'precision and recall swapped', '(recall, precision)'))
def ppr_swapped(nodes, truth):
    n_pos = truth.shape[0]
    found = {node.pos % n_pos for node in nodes}
    true = set(truth.nonzero()[:, 0].tolist())
    hits = len(found & true)
    return (hits / len(true) if true else 0.0), (hits / len(found) if found else 0.0)


@wrong(CH, "position_precision_recall", "no guard for an empty set: divides by zero",
       names=('empty', 'zerodivision', 'no nodes', 'no labelled', 'divide by zero'))
def ppr_no_empty_guard(nodes, truth):
    n_pos = truth.shape[0]
    found = {node.pos % n_pos for node in nodes}
    true = set(truth.nonzero()[:, 0].tolist())
    hits = len(found & true)
    return hits / len(found), hits / len(true)


@wrong(CH, "position_precision_recall", "computes with tensors and returns 0-dim tensors, not floats",
       names=('python float', 'tensor', 'float(', '.item()'))
def ppr_tensors(nodes, truth):
    n_pos = truth.shape[0]
    found = torch.zeros(n_pos, dtype=torch.bool)
    for node in nodes:
        found[node.pos % n_pos] = True
    hits = (found & truth).sum().float()
    precision = hits / found.sum() if found.any() else torch.tensor(0.0)
    recall = hits / truth.sum() if truth.any() else torch.tensor(0.0)
    return precision, recall


@wrong(CH, "position_precision_recall", "recall divided by the number of positions, not of labelled ones",
       names=('denominator', 'labelled positions', '|t|'))
def ppr_recall_over_all_positions(nodes, truth):
    n_pos = truth.shape[0]
    found = {node.pos % n_pos for node in nodes}
    true = set(truth.nonzero()[:, 0].tolist())
    hits = len(found & true)
    return (hits / len(found) if found else 0.0), hits / n_pos


@correct(CH, "position_precision_recall", "boolean masks over positions, counts by tensor sums")
def ppr_masks(nodes, truth):
    n_pos = truth.shape[0]
    found = torch.zeros(n_pos, dtype=torch.bool)
    found[[node.pos % n_pos for node in nodes]] = True
    hits = int((found & truth.bool().cpu()).sum())
    n_found, n_true = int(found.sum()), int(truth.sum())
    return (hits / n_found if n_found else 0.0), (hits / n_true if n_true else 0.0)


@correct(CH, "position_precision_recall", "sets, negative positions made positive by adding n_pos")
def ppr_sets_added(nodes, truth):
    n_pos = len(truth)
    found = set()
    for node in nodes:
        found.add(node.pos + n_pos if node.pos < 0 else node.pos)
    true = {p for p in range(n_pos) if truth[p]}
    hits = found & true
    precision = float(len(hits)) / len(found) if len(found) > 0 else 0.0
    recall = float(len(hits)) / len(true) if len(true) > 0 else 0.0
    return precision, recall


# ---------------------------------------------------------------------------------------
# Changes to `names` after the first run (commit c2ec256 catalog + runner).
#
# Loosened, where the check's message names the same mistake in other words:
# - error_leaves_dictionary, scores_leave_dictionaries: + "left an sae". Message:
#   "`scores_leave_dictionaries` left an SAE at blocks.0.ln2.hook_normalized, a hook on ... on the
#   model (hooks are global state) ..."
# - ablate_ignores_complement: + "complement=true was ignored". Message: "metric (all six, mean,
#   complement): complement=True was ignored: ablate every node *not* in `nodes`"
# - ablate_complement_latents_only: + "error nodes were not ablated". Message: "metric (all six,
#   mean, complement): the error nodes were not ablated: hook hook_sae_error too ..."
# - ablate_batch_mean: + "reduce over a dim". Message: "expected shape [batch=4], got []: one dim
#   is missing (`batch`?); did you reduce over a dim you should keep?"
# - faith_ignores_baseline, complete_ignores_baseline: + "although a baseline was given".
#   Message: "the nodes were zero-ablated although a baseline was given"
# - complete_swapped_references: + "1 - the completeness". Message: "this is 1 - the completeness
#   score: the numerator is m(M \ C) - m(empty)"
# - ppr_swapped: + "(recall, precision)". Message: "you returned (recall, precision): return
#   (precision, recall)"
#
# Tightened, where a phrase matched the header every message of the check carries (a false
# "named"):
# - spliced_task_scores: "accuracy", "mean logit", "logit difference" and "use_error_term" removed
#   from every entry: each message starts "ioi, transcoder0+resid_sae1, use_error_term=True
#   (accuracy, mean logit difference): ...", so they matched generic messages such as "1 of 2
#   entries differ, all at dim 0=1; the rest matches (...)" (scores_outer_indexing,
#   scores_summed_diff, scores_flipped_diff were counted named on that alone).
# - ablate_ignores_complement, ablate_complement_latents_only: "complement" removed (header
#   "metric (all six, mean, complement)").
# - ablate_error_mask_2d, error_attr_last_dim: "attn_sae" removed (header "error attribution
#   (attn_sae0, 2 prompts, mean)").
# - ppr_recall_over_all_positions: "recall" removed (header "case 1 (12 nodes, 14 positions)
#   (precision, recall)").
