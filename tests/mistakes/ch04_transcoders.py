"""Plausible wrong implementations of chapter 04's exercises; each check must catch each one.

A mistake with ``signature=True`` (the default) is recognised by its result: the check runs
it on its own inputs (``utils.course.checking.signatures``) and fails with its diagnosis. The
others must be caught by a generic diagnosis, a specific test in the check or a watched side
effect, and their diagnosis is a phrase of that message."""
from __future__ import annotations

import torch

from solutions.ch04_transcoders import (
    attention_path_contributions,
    blind_case_study,
    de_embedding,
    extended_de_embedding,
    input_dependent_connections,
    pullback,
    transcoder_metrics,
    upstream_ablation_effects,
)
from utils.course.checking import Mistake
from utils.nodes import layer_of


def _centre(x):
    return x - x.mean(-1, keepdim=True)


# --- transcoder_metrics --------------------------------------------------------------


def _metrics(model, transcoder, tokens, *, read_hook=None, target="output", bos=False, zero_hook=None,
             spliced_error=False, with_error=True):
    """The reference with the knobs a learner might get wrong."""
    out_hook = transcoder.cfg.metadata.hook_name_out
    read_hook = read_hook or out_hook
    start = 0 if bos else 1
    ce_spliced, cache = model.run_with_cache_with_saes(tokens, saes=[transcoder], return_type="loss",
                                                        use_error_term=spliced_error)
    acts = cache[f"{read_hook}.hook_sae_acts_post"][:, start:]
    y_hat = cache[f"{read_hook}.hook_sae_recons"][:, 1:]
    ce_clean, clean_cache = model.run_with_cache(tokens, return_type="loss", names_filter=[out_hook, transcoder.cfg.metadata.hook_name])
    y = clean_cache[out_hook if target == "output" else transcoder.cfg.metadata.hook_name][:, 1:]
    with model.saes(saes=[transcoder], use_error_term=with_error):
        ce_with_error = model(tokens, return_type="loss")
    ce_zero = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(zero_hook or out_hook, lambda act, hook: torch.zeros_like(act))])
    residual, total = (y - y_hat).pow(2).sum(), (y - y.mean(dim=(0, 1))).pow(2).sum()
    return {"l0": (acts > 0).float().sum(-1).mean().item(), "explained_variance": (1 - residual / total).item(),
            "ce_clean": ce_clean.item(), "ce_spliced": ce_spliced.item(), "ce_with_error": ce_with_error.item(),
            "ce_zero": ce_zero.item(), "ce_recovered": ((ce_zero - ce_spliced) / (ce_zero - ce_clean)).item()}


def metrics_cache_at_input_hook(model, transcoder, tokens):
    return _metrics(model, transcoder, tokens, read_hook=transcoder.cfg.metadata.hook_name)


def metrics_l0_with_bos(model, transcoder, tokens):
    return _metrics(model, transcoder, tokens, bos=True)


def metrics_variance_of_input(model, transcoder, tokens):
    return _metrics(model, transcoder, tokens, target="input")


def metrics_zero_input(model, transcoder, tokens):
    return _metrics(model, transcoder, tokens, zero_hook=transcoder.cfg.metadata.hook_name)


def metrics_no_error_term(model, transcoder, tokens):
    return _metrics(model, transcoder, tokens, with_error=False)


def metrics_spliced_with_error(model, transcoder, tokens):
    return _metrics(model, transcoder, tokens, spliced_error=True)


def metrics_as_tensors(model, transcoder, tokens):
    return {key: torch.tensor(value) for key, value in transcoder_metrics(model, transcoder, tokens).items()}


def _with_variance(model, transcoder, tokens, centre, start=1):
    out_hook = transcoder.cfg.metadata.hook_name_out
    _, spliced = model.run_with_cache_with_saes(tokens, saes=[transcoder])
    _, clean = model.run_with_cache(tokens, names_filter=out_hook)
    y, y_hat = clean[out_hook][:, start:], spliced[f"{out_hook}.hook_sae_recons"][:, start:]
    return {**transcoder_metrics(model, transcoder, tokens),
            "explained_variance": 1 - ((y - y_hat) ** 2).sum().item() / ((y - centre(y)) ** 2).sum().item()}


def metrics_variance_uncentred(model, transcoder, tokens):
    return _with_variance(model, transcoder, tokens, lambda y: 0.0)


def metrics_variance_with_bos(model, transcoder, tokens):
    return _with_variance(model, transcoder, tokens, lambda y: y.mean((0, 1)), start=0)


def metrics_recovered_inverted(model, transcoder, tokens):
    out = transcoder_metrics(model, transcoder, tokens)
    return {**out, "ce_recovered": 1 - out["ce_recovered"]}


# --- de_embedding --------------------------------------------------------------------


def de_embedding_uncentred(model, transcoder, latent, scale):
    return model.W_E @ transcoder.W_enc[:, latent] / scale + transcoder.b_enc[latent]


def de_embedding_ln_affine(model, transcoder, latent, scale):
    ln = model.blocks[layer_of(transcoder.cfg.metadata.hook_name)].ln2
    return (_centre(model.W_E) / scale * ln.w + ln.b) @ transcoder.W_enc[:, latent] + transcoder.b_enc[latent]


def de_embedding_no_bias(model, transcoder, latent, scale):
    return _centre(model.W_E) @ transcoder.W_enc[:, latent] / scale


def de_embedding_times_scale(model, transcoder, latent, scale):
    return _centre(model.W_E) @ transcoder.W_enc[:, latent] * scale + transcoder.b_enc[latent]


def de_embedding_decoder(model, transcoder, latent, scale):
    return _centre(model.W_E) @ transcoder.W_dec[latent] / scale + transcoder.b_enc[latent]


def de_embedding_bias_scaled(model, transcoder, latent, scale):
    return (_centre(model.W_E) @ transcoder.W_enc[:, latent] + transcoder.b_enc[latent]) / scale


def de_embedding_sae_input(model, transcoder, latent, scale):
    return _centre(model.W_E - transcoder.b_dec) @ transcoder.W_enc[:, latent] / scale + transcoder.b_enc[latent]


def de_embedding_relu(model, transcoder, latent, scale):
    return de_embedding(model, transcoder, latent, scale).relu()


def de_embedding_unembedding(model, transcoder, latent, scale):
    return _centre(model.W_U.T) @ transcoder.W_enc[:, latent] / scale + transcoder.b_enc[latent]


# --- extended_de_embedding -----------------------------------------------------------


def _extended(model, up, down, latent, scales, relu=True, b_dec=True, direct=True, centre_sum=True, b_enc=True,
              down_b_enc=True):
    s_up, s_down = scales
    pre = _centre(model.W_E) @ up.W_enc / s_up + (up.b_enc if b_enc else 0.0)
    out = (pre.relu() if relu else pre) @ up.W_dec + (up.b_dec if b_dec else 0.0)
    resid = model.W_E + out if direct else out
    resid = _centre(resid) if centre_sum else _centre(model.W_E) + out
    return resid @ down.W_enc[:, latent] / s_down + (down.b_enc[latent] if down_b_enc else 0.0)


def extended_no_downstream_bias(model, up, down, latent, scales):
    return _extended(model, up, down, latent, scales, down_b_enc=False)


def extended_no_relu(model, up, down, latent, scales):
    return _extended(model, up, down, latent, scales, relu=False)


def extended_no_decoder_bias(model, up, down, latent, scales):
    return _extended(model, up, down, latent, scales, b_dec=False)


def extended_mlp_path_only(model, up, down, latent, scales):
    return _extended(model, up, down, latent, scales, direct=False)


def extended_uncentred_output(model, up, down, latent, scales):
    return _extended(model, up, down, latent, scales, centre_sum=False)


def extended_swapped_scales(model, up, down, latent, scales):
    return extended_de_embedding(model, up, down, latent, (scales[1], scales[0]))


def extended_no_encoder_bias(model, up, down, latent, scales):
    return _extended(model, up, down, latent, scales, b_enc=False)


# --- pullback ------------------------------------------------------------------------


def pullback_encoder(model, up, down, latent, scale):
    return _centre(up.W_enc.T) @ down.W_enc[:, latent] / scale


def pullback_uncentred(model, up, down, latent, scale):
    return up.W_dec @ down.W_enc[:, latent] / scale


def pullback_times_scale(model, up, down, latent, scale):
    return _centre(up.W_dec) @ down.W_enc[:, latent] * scale


def pullback_with_bias(model, up, down, latent, scale):
    return pullback(model, up, down, latent, scale) + down.b_enc[latent]


def pullback_downstream_decoder(model, up, down, latent, scale):
    return _centre(up.W_dec) @ down.W_dec[latent] / scale


def pullback_ln_weight(model, up, down, latent, scale):
    w = model.blocks[layer_of(down.cfg.metadata.hook_name)].ln2.w
    return (_centre(up.W_dec) * w) @ down.W_enc[:, latent] / scale


# --- input_dependent_connections -----------------------------------------------------


def _connections(model, up, down, latent, tokens, pos, which="ln2", preacts=False, no_scale=False, every_position=False):
    layer = layer_of(down.cfg.metadata.hook_name)
    up_hook, scale_hook = up.cfg.metadata.hook_name, f"blocks.{layer}.{which}.hook_scale"
    _, cache = model.run_with_cache(tokens, names_filter=[up_hook, scale_hook])
    x = cache[up_hook]
    acts = x @ up.W_enc + up.b_enc if preacts else up.encode(x)
    scale = torch.ones_like(cache[scale_hook]) if no_scale else cache[scale_hook]
    if every_position:
        return (acts / scale)[:, : (pos % tokens.shape[1]) + 1].sum(1) * pullback(model, up, down, latent, 1.0)
    return acts[:, pos] * pullback(model, up, down, latent, 1.0) / scale[:, pos]


def connections_no_scale(model, up, down, latent, tokens, pos):
    return _connections(model, up, down, latent, tokens, pos, no_scale=True)


def connections_preacts(model, up, down, latent, tokens, pos):
    return _connections(model, up, down, latent, tokens, pos, preacts=True)


def connections_attention_scale(model, up, down, latent, tokens, pos):
    return _connections(model, up, down, latent, tokens, pos, which="ln1")


def connections_every_position(model, up, down, latent, tokens, pos):
    return _connections(model, up, down, latent, tokens, pos, every_position=True)


def connections_previous_token(model, up, down, latent, tokens, pos):
    return input_dependent_connections(model, up, down, latent, tokens, (pos % tokens.shape[1]) - 1)


def connections_typical_scale(model, up, down, latent, tokens, pos):
    """One scale for every prompt: the mean over the batch at ``pos``."""
    layer = layer_of(down.cfg.metadata.hook_name)
    _, cache = model.run_with_cache(tokens, names_filter=[up.cfg.metadata.hook_name, f"blocks.{layer}.ln2.hook_scale"])
    scale = cache[f"blocks.{layer}.ln2.hook_scale"][:, 1:].mean()
    return up.encode(cache[up.cfg.metadata.hook_name][:, pos]) * pullback(model, up, down, latent, 1.0) / scale


# --- upstream_ablation_effects -------------------------------------------------------


def _ablate(model, up, down, latent, tokens, pos, up_latents, use_error_term=True, where=slice(None), post=False, sign=1.0):
    acts_hook = f"{up.cfg.metadata.hook_name_out}.hook_sae_acts_post"
    down_hook = down.cfg.metadata.hook_name

    def read(fwd_hooks):
        kept = {}
        with model.hooks(fwd_hooks=fwd_hooks + [(down_hook, lambda x, hook: kept.update(x=x))]):
            model(tokens)
        pre = kept["x"][:, pos] @ down.W_enc[:, latent] + down.b_enc[latent]
        return pre.relu() if post else pre

    with model.saes(saes=[up], use_error_term=use_error_term):
        clean = read([])
        effects = []
        for k in up_latents.tolist():
            def zero(acts, hook, k=k):
                acts[:, where, k] = 0.0
                return acts
            effects.append(sign * (read([(acts_hook, zero)]) - clean))
    return torch.stack(effects, -1)


def ablation_without_error_term(model, up, down, latent, tokens, pos, up_latents):
    return _ablate(model, up, down, latent, tokens, pos, up_latents, use_error_term=False)


def ablation_at_pos_only(model, up, down, latent, tokens, pos, up_latents):
    return _ablate(model, up, down, latent, tokens, pos, up_latents, where=pos)


def ablation_post_activation(model, up, down, latent, tokens, pos, up_latents):
    return _ablate(model, up, down, latent, tokens, pos, up_latents, post=True)


def ablation_negated(model, up, down, latent, tokens, pos, up_latents):
    return -upstream_ablation_effects(model, up, down, latent, tokens, pos, up_latents)


def ablation_leaves_transcoder(model, up, down, latent, tokens, pos, up_latents):
    out = upstream_ablation_effects(model, up, down, latent, tokens, pos, up_latents)
    model.add_sae(up, use_error_term=True)
    return out


def ablation_ablated_only(model, up, down, latent, tokens, pos, up_latents):
    """The ablated pre-activation itself, without subtracting the clean one."""
    _, cache = model.run_with_cache(tokens, names_filter=down.cfg.metadata.hook_name)
    clean = cache[down.cfg.metadata.hook_name][:, pos] @ down.W_enc[:, latent] + down.b_enc[latent]
    return upstream_ablation_effects(model, up, down, latent, tokens, pos, up_latents) + clean[:, None]


# --- attention_path_contributions ----------------------------------------------------


def _paths(model, up, down, latent, up_latent, head, tokens, pos, transpose=False, ln_weight=True, ln1_scale=True,
           out_scale_at_source=False, pattern_layer=None, centre_out=True, pattern=True, centre_d=True, s1_norm="ln1",
           heads="one", acts_at="source", value_bias=False):
    layer = layer_of(down.cfg.metadata.hook_name)
    src_layer = layer if pattern_layer is None else pattern_layer
    names = [up.cfg.metadata.hook_name, f"blocks.{src_layer}.attn.hook_pattern", f"blocks.{layer}.{s1_norm}.hook_scale",
             f"blocks.{layer}.ln2.hook_scale"]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    acts = up.encode(cache[names[0]])[..., up_latent]
    if acts_at == "destination":
        acts = acts[:, pos, None].expand_as(acts)
    heads_ = list(range(model.cfg.n_heads)) if heads == "every" else [head]
    total = 0.0
    for h in heads_:
        a = cache[names[1]][:, h, :, pos] if transpose else cache[names[1]][:, h, pos]
        a = (a > 0).to(a.dtype) if not pattern else a
        s1 = cache[names[2]][..., 0] if ln1_scale else torch.ones_like(cache[names[2]][..., 0])
        s2 = cache[names[3]][..., 0] if out_scale_at_source else cache[names[3]][:, pos]
        d = _centre(up.W_dec[up_latent]) if centre_d else up.W_dec[up_latent]
        attn = model.blocks[layer].attn
        out = (d * model.blocks[layer].ln1.w if ln_weight else d) @ attn.W_V[h] @ attn.W_O[h]
        if value_bias:
            out = out + attn.b_V[h] @ attn.W_O[h]
        read = (_centre(out) if centre_out else out) @ down.W_enc[:, latent]
        total = total + a * acts / s1 * read / s2
    return total


def paths_no_pattern(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, pattern=False)


def paths_decoder_uncentred(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, centre_d=False)


def paths_output_uncentred(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, centre_out=False)


def paths_source_scale_of_ln2(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, s1_norm="ln2")


def paths_every_head(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, heads="every")


def paths_activation_at_destination(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, acts_at="destination")


def paths_with_value_bias(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, value_bias=True)


def paths_pattern_transposed(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, transpose=True)


def paths_no_ln_weight(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, ln_weight=False)


def paths_no_source_scale(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, ln1_scale=False)


def paths_output_scale_at_source(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, out_scale_at_source=True)


def paths_upstream_layer_pattern(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, pattern_layer=layer_of(up.cfg.metadata.hook_name))


def paths_summed_over_sources(model, up, down, latent, up_latent, head, tokens, pos):
    out = attention_path_contributions(model, up, down, latent, up_latent, head, tokens, pos)
    total = torch.zeros_like(out)
    total[:, pos] = out.sum(-1)
    return total


# --- blind_case_study ----------------------------------------------------------------

_TRUE_LABELS = {29: "greater_than_end", 147: "century", 172: "induction"}


def _with(bk, latent, label=None, upstream=None):
    answer = blind_case_study(bk, latent)
    return {"label": answer["label"] if label is None else label(latent),
            "upstream": answer["upstream"] if upstream is None else upstream(bk, latent)}


def case_label_from_logits(bk, latent):
    """Names what the latent promotes (the next token, a year) instead of what it reads."""
    return _with(bk, latent, label=lambda k: {29: "year", 147: "year", 172: "induction"}[k])


def case_broad_and_narrow_swapped(bk, latent):
    """The end-year latent called a century latent and the other way round."""
    return _with(bk, latent, label=lambda k: {29: "century", 147: "greater_than_end", 172: "induction"}[k])


def case_free_text_label(bk, latent):
    return _with(bk, latent, label=lambda k: {29: "the end year's century", 147: "centuries", 172: "copying"}[k])


def case_reads_explanations(bk, latent):
    row = bk.explanations.lookup("transcoder.1", latent)
    return {"label": row["label"], "upstream": blind_case_study(bk, latent)["upstream"]}


def case_reads_labels(bk, latent):
    corpus = bk.world.corpus(64, 32, seed=0)
    acts = bk.dictionary("transcoder", 1).encode(
        bk.model.run_with_cache(corpus.tokens)[1]["blocks.1.ln2.hook_normalized"])[..., latent]
    label = max(bk.world.label_names, key=lambda name: (acts * corpus.labels[name]).sum().item())
    return {"label": label, "upstream": blind_case_study(bk, latent)["upstream"]}


def _strongest_upstream_acts(bk, latent):
    """Transcoder-0 activations at the latent's 32 strongest positions on a corpus."""
    model, up, down = bk.model, bk.dictionary("transcoder", 0), bk.dictionary("transcoder", 1)
    tokens = bk.world.corpus(64, 48, seed=0).tokens
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("ln2.hook_normalized"))
    top = down.encode(cache["blocks.1.ln2.hook_normalized"])[..., latent].flatten().topk(32).indices
    return up.encode(cache["blocks.0.ln2.hook_normalized"]).flatten(0, 1)[top], cache, top


def case_upstream_most_active(bk, latent):
    """Upstream = the transcoder-0 latents most active where it fires, connected or not."""
    return _with(bk, latent, upstream=lambda bk, k: _strongest_upstream_acts(bk, k)[0].mean(0).topk(4).indices.tolist())


def case_upstream_coactive_layer1(bk, latent):
    """Upstream = latents of the *same* transcoder that fire with it (ids of the wrong dictionary)."""
    def coactive(bk, k):
        _, cache, top = _strongest_upstream_acts(bk, k)
        acts = bk.dictionary("transcoder", 1).encode(cache["blocks.1.ln2.hook_normalized"]).flatten(0, 1)[top].mean(0)
        acts[k] = 0.0
        return acts.topk(3).indices.tolist()
    return _with(bk, latent, upstream=coactive)


def case_every_connected_latent(bk, latent):
    """Upstream = every transcoder-0 latent with a positive connection (dozens of them)."""
    def every(bk, k):
        acts, _, _ = _strongest_upstream_acts(bk, k)
        connection = (acts * pullback(bk.model, bk.dictionary("transcoder", 0), bk.dictionary("transcoder", 1), k, 1.0)).mean(0)
        return connection.argsort(descending=True)[: int((connection > 0).sum())].tolist()
    return _with(bk, latent, upstream=every)


def case_upstream_sorted_by_id(bk, latent):
    """The right upstream latents, listed by id instead of by importance."""
    return _with(bk, latent, upstream=lambda bk, k: sorted(blind_case_study(bk, k)["upstream"]))


def case_upstream_weakest_first(bk, latent):
    """The right upstream latents, in reverse: the smallest contribution first."""
    return _with(bk, latent, upstream=lambda bk, k: blind_case_study(bk, k)["upstream"][::-1])


def case_upstream_by_pullback_alone(bk, latent):
    """Upstream = the three largest pullbacks (weights only), not weighted by how much each
    upstream latent is active where the latent fires."""
    def by_pullback(bk, k):
        model, up, down = bk.model, bk.dictionary("transcoder", 0), bk.dictionary("transcoder", 1)
        return pullback(model, up, down, k, 1.0).topk(3).indices.tolist()
    return _with(bk, latent, upstream=by_pullback)


MISTAKES = {
    "transcoder_metrics": [
        Mistake(metrics_cache_at_input_hook, "cached under the hook it writes", signature=False),
        Mistake(metrics_l0_with_bos, "l0 includes the BOS position", signature=False),
        Mistake(metrics_variance_of_input, "explained_variance compares the reconstruction with the transcoder's input "
                "(ln2.hook_normalized); a transcoder reconstructs the MLP's output, hook_mlp_out"),
        Mistake(metrics_zero_input, "ce_zero zeroes the transcoder's input (ln2.hook_normalized); zero the MLP's "
                "output, hook_mlp_out"),
        Mistake(metrics_no_error_term, "ce_with_error equals ce_spliced", signature=False),
        Mistake(metrics_spliced_with_error, "ce_spliced equals ce_clean", signature=False),
        Mistake(metrics_recovered_inverted, "ce_recovered looks like 1 minus", signature=False),
        Mistake(metrics_as_tensors, "should be a Python float, got a 0-dim torch.Tensor", signature=False),
        Mistake(metrics_variance_uncentred, "explained_variance divides by sum ||y||^2, uncentred", signature=False),
        Mistake(metrics_variance_with_bos, "explained_variance includes the BOS position", signature=False),
    ],
    "de_embedding": [
        Mistake(de_embedding_uncentred, "the embedding was not centred: the LayerNorm subtracts each vector's mean "
                "before the transcoder reads it"),
        Mistake(de_embedding_ln_affine, "this applies ln2's weight and bias: ln2.hook_normalized, which the "
                "transcoder reads, comes before them"),
        Mistake(de_embedding_no_bias, "the encoder bias b_enc[latent] is missing"),
        Mistake(de_embedding_times_scale, "multiplied by the scale: the LayerNorm divides by it"),
        Mistake(de_embedding_decoder, "this reads the embedding with the decoder row W_dec[latent]: a latent reads "
                "the residual stream through its encoder column W_enc[:, latent]"),
        Mistake(de_embedding_relu, "this is the activation (after the ReLU): return the pre-activation"),
        Mistake(de_embedding_unembedding, "this uses the unembedding W_U: tokens enter through the embedding W_E"),
        Mistake(de_embedding_bias_scaled, "the encoder bias was divided by the scale too: only the normalised "
                "embedding is divided; add b_enc[latent] afterwards"),
        Mistake(de_embedding_sae_input, "b_dec was subtracted from the input, as an SAE does: a transcoder's b_dec "
                "belongs to its output, and its encoder reads ln2.hook_normalized as it is"),
    ],
    "extended_de_embedding": [
        Mistake(extended_no_relu, "the upstream latents were not passed through the ReLU"),
        Mistake(extended_no_decoder_bias, "the upstream decoder bias b_dec is missing"),
        Mistake(extended_mlp_path_only, "this follows the path through the upstream transcoder only: add the "
                "embedding itself (the direct path) before the downstream encoder"),
        Mistake(extended_uncentred_output, "the upstream output was added after centring: centre the whole "
                "residual stream (embedding plus output) before the downstream encoder"),
        Mistake(extended_swapped_scales, "the two scales are swapped: scales = (upstream layer's, downstream layer's)"),
        Mistake(extended_no_encoder_bias, "the upstream encoder bias b_enc is missing"),
        Mistake(extended_no_downstream_bias, "the downstream encoder bias b_enc[latent] is missing"),
    ],
    "pullback": [
        Mistake(pullback_encoder, "this uses the upstream *encoder*: an upstream latent writes its decoder row W_dec[k]"),
        Mistake(pullback_uncentred, "the decoder rows were not centred: the LayerNorm removes their mean"),
        Mistake(pullback_times_scale, "multiplied by the scale: the LayerNorm divides by it"),
        Mistake(pullback_with_bias, "this adds the encoder bias: a pullback is the change per unit of upstream "
                "activation, so constants drop out"),
        Mistake(pullback_downstream_decoder, "this uses the downstream *decoder* row: the downstream latent reads "
                "through its encoder column W_enc[:, latent]"),
        Mistake(pullback_ln_weight, "this multiplies by ln2's weight: the transcoder reads ln2.hook_normalized, "
                "before the weight is applied"),
    ],
    "input_dependent_connections": [
        Mistake(connections_no_scale, "not divided by the normalisation scale"),
        Mistake(connections_preacts, "these use upstream pre-activations: an upstream latent writes its activation, "
                "after the ReLU"),
        Mistake(connections_attention_scale, "this divides by ln1's scale (attention's input): the downstream "
                "transcoder reads ln2"),
        Mistake(connections_every_position, "this sums upstream activations over every position: the direct path "
                "connects the same position only"),
        Mistake(connections_typical_scale, "one scale for every prompt: use each prompt's own scale at `pos`"),
        Mistake(connections_previous_token, "these are the values one position earlier than `pos`", signature=False),
    ],
    "upstream_ablation_effects": [
        Mistake(ablation_without_error_term, "the upstream transcoder was spliced without its error term"),
        Mistake(ablation_at_pos_only, "the upstream latent was zeroed at `pos` only: zero it at every position, "
                "or the effects that travel through attention are lost"),
        Mistake(ablation_post_activation, "this measures the downstream *activation* (after the ReLU): measure its "
                "pre-activation"),
        Mistake(ablation_negated, "wrong sign", signature=False),
        Mistake(ablation_leaves_transcoder, "left an SAE at", signature=False),
        Mistake(ablation_ablated_only, "this is the ablated pre-activation itself: subtract the clean one"),
    ],
    "attention_path_contributions": [
        Mistake(paths_pattern_transposed, "the pattern is read [src, dst]: index it [:, head, pos, :] (rows are "
                "destinations)"),
        Mistake(paths_no_ln_weight, "ln1's weight is missing: attention reads the normalised vector after the "
                "LayerNorm's weight"),
        Mistake(paths_no_source_scale, "not divided by ln1's scale at the source position"),
        Mistake(paths_output_scale_at_source, "ln2's scale is taken at each source: the downstream latent reads "
                "ln2 at the destination `pos`"),
        Mistake(paths_upstream_layer_pattern, "this uses the upstream layer's attention pattern: the path goes "
                "through the downstream layer's heads"),
        Mistake(paths_no_pattern, "the attention pattern is missing: each source's contribution is weighted by "
                "A[b, head, pos, s]"),
        Mistake(paths_decoder_uncentred, "the upstream decoder row d_k was not centred: ln1 removes its mean (P d_k)"),
        Mistake(paths_output_uncentred, "the head's output was not centred: ln2 removes its mean before the "
                "downstream encoder (P ... W_O)"),
        Mistake(paths_source_scale_of_ln2, "the source is divided by ln2's scale: attention reads ln1, so s1 is "
                "ln1's scale at the source"),
        Mistake(paths_every_head, "this sums the path over every head of the layer: take head `head` only"),
        Mistake(paths_activation_at_destination, "this uses the upstream activation at the destination for every "
                "source: each source s contributes f_k(b, s)"),
        Mistake(paths_with_value_bias, "this includes the value bias b_V: leave the biases out, they do not depend "
                "on the latent"),
        Mistake(paths_summed_over_sources, "summed over sources: return one contribution per source position"),
    ],
    "blind_case_study": [
        Mistake(case_label_from_logits, "you named 'year'", signature=False),
        Mistake(case_broad_and_narrow_swapped, "you named 'century'", signature=False),
        Mistake(case_free_text_label, "is not one of world.label_names", signature=False),
        Mistake(case_reads_explanations, "may not read the explanation table", signature=False),
        Mistake(case_reads_labels, "may not read the corpus labels", signature=False),
        Mistake(case_upstream_most_active, "barely changes", signature=False),
        Mistake(case_upstream_coactive_layer1, "fire together with it", signature=False),
        Mistake(case_every_connected_latent, "at most 5", signature=False),
        Mistake(case_upstream_sorted_by_id, "sorted by latent id", signature=False),
        Mistake(case_upstream_weakest_first, "list the main upstream latents first", signature=False),
        Mistake(case_upstream_by_pullback_alone, "hardly active where the latent fires", signature=False),
    ],
}
