"""Independent catalog, chapter 04 (transcoder circuits): plausible learner implementations
of the eight exercises, written from the chapter's text and reference alone (see
``benchmarks/independent``)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from benchmarks.independent import correct, wrong
from utils.nodes import layer_of
from utils.transcoders import extended_de_embeddings, typical_scale, upstream_contributions

CH = "ch04_transcoders"


def _centre(x: Tensor) -> Tensor:
    return x - x.mean(-1, keepdim=True)


# ---------------------------------------------------------------------------------------
# transcoder_metrics


def _metrics(model, transcoder, tokens, *, skip_bos: bool = True, target: str = "out", zero_at: str = "out",
             recovered: str = "recovered", ev: str = "global", error_term: bool = True, l0: str = "mean",
             as_float: bool = True) -> dict[str, Any]:
    out_hook = transcoder.cfg.metadata.hook_name_out
    in_hook = transcoder.cfg.metadata.hook_name
    start = 1 if skip_bos else 0
    ce_spliced, cache = model.run_with_cache_with_saes(tokens, saes=[transcoder], return_type="loss")
    acts = cache[f"{out_hook}.hook_sae_acts_post"][:, start:]
    y_hat = cache[f"{out_hook}.hook_sae_recons"][:, start:]
    ce_clean, clean = model.run_with_cache(tokens, return_type="loss", names_filter=[out_hook, in_hook])
    y = (clean[out_hook] if target == "out" else clean[in_hook])[:, start:]
    with model.saes(saes=[transcoder], use_error_term=error_term):
        ce_with_error = model(tokens, return_type="loss")
    zero_hook = out_hook if zero_at == "out" else in_hook
    ce_zero = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(zero_hook, lambda a, hook: torch.zeros_like(a))])
    if ev == "global":
        ev_value = 1 - (y - y_hat).pow(2).sum() / (y - y.mean((0, 1))).pow(2).sum()
    elif ev == "per_position_mean":
        ev_value = 1 - (y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum()
    else:  # uncentred
        ev_value = 1 - (y - y_hat).pow(2).sum() / y.pow(2).sum()
    if recovered == "recovered":
        rec = (ce_zero - ce_spliced) / (ce_zero - ce_clean)
    else:
        rec = (ce_spliced - ce_clean) / (ce_zero - ce_clean)
    active = (acts > 0).float().sum(-1)
    l0_value = active.mean() if l0 == "mean" else active.mean() / transcoder.cfg.d_sae
    values = {"l0": l0_value, "explained_variance": ev_value, "ce_clean": ce_clean, "ce_spliced": ce_spliced,
              "ce_with_error": ce_with_error, "ce_zero": ce_zero, "ce_recovered": rec}
    return {k: v.item() for k, v in values.items()} if as_float else {k: v.detach() for k, v in values.items()}


@wrong(CH, "transcoder_metrics", "BOS included in L0 and explained variance", names=("bos", "position 0", "first token"))
def metrics_bos_included(model, transcoder, tokens):
    return _metrics(model, transcoder, tokens, skip_bos=False)


@wrong(CH, "transcoder_metrics", "explained variance against the transcoder's input (ln2.hook_normalized), not the MLP output",
       names=("mlp output", "hook_mlp_out", "explained_variance", "target"))
def metrics_ev_against_input(model, transcoder, tokens):
    return _metrics(model, transcoder, tokens, target="in")


@wrong(CH, "transcoder_metrics", "ce_zero zeroes the transcoder's input instead of the MLP's output",
       names=("ce_zero", "mlp output", "zero"))
def metrics_zero_input(model, transcoder, tokens):
    return _metrics(model, transcoder, tokens, zero_at="in")


@wrong(CH, "transcoder_metrics", "ce_recovered as the fraction lost, (spliced - clean) / (zero - clean)",
       names=("ce_recovered", "recovered"))
def metrics_recovered_inverted(model, transcoder, tokens):
    return _metrics(model, transcoder, tokens, recovered="lost")


@wrong(CH, "transcoder_metrics", "explained variance with an uncentred denominator (sum of y^2)",
       names=("explained_variance", "variance", "mean of y", "centred"))
def metrics_ev_uncentred(model, transcoder, tokens):
    return _metrics(model, transcoder, tokens, ev="uncentred")


@wrong(CH, "transcoder_metrics", "explained variance centred on a per-position mean (over the batch only)",
       names=("explained_variance", "mean over tokens", "variance"))
def metrics_ev_per_position_mean(model, transcoder, tokens):
    return _metrics(model, transcoder, tokens, ev="per_position_mean")


@wrong(CH, "transcoder_metrics", "ce_with_error computed without use_error_term", names=("ce_with_error", "error term"))
def metrics_no_error_term(model, transcoder, tokens):
    return _metrics(model, transcoder, tokens, error_term=False)


@wrong(CH, "transcoder_metrics", "L0 as the share of latents active instead of their number", names=("l0",))
def metrics_l0_fraction(model, transcoder, tokens):
    return _metrics(model, transcoder, tokens, l0="fraction")


@wrong(CH, "transcoder_metrics", "returns 0-d tensors instead of Python floats", names=("float", "type", "tensor"))
def metrics_returns_tensors(model, transcoder, tokens):
    return _metrics(model, transcoder, tokens, as_float=False)


@wrong(CH, "transcoder_metrics", "splices with add_sae and never resets: the transcoder stays attached",
       names=("attached", "left", "reset", "spliced", "still"))
def metrics_leaves_transcoder(model, transcoder, tokens):
    out_hook = transcoder.cfg.metadata.hook_name_out
    ce_clean, clean = model.run_with_cache(tokens, return_type="loss", names_filter=out_hook)
    y = clean[out_hook][:, 1:]
    ce_zero = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(out_hook, lambda a, hook: torch.zeros_like(a))])
    model.add_sae(transcoder, use_error_term=True)
    ce_with_error = model(tokens, return_type="loss")
    model.reset_saes()
    model.add_sae(transcoder)
    ce_spliced, cache = model.run_with_cache(tokens, return_type="loss")
    acts = cache[f"{out_hook}.hook_sae_acts_post"][:, 1:]
    y_hat = cache[f"{out_hook}.hook_sae_recons"][:, 1:]
    return {"l0": (acts > 0).float().sum(-1).mean().item(),
            "explained_variance": (1 - (y - y_hat).pow(2).sum() / (y - y.mean((0, 1))).pow(2).sum()).item(),
            "ce_clean": ce_clean.item(), "ce_spliced": ce_spliced.item(), "ce_with_error": ce_with_error.item(),
            "ce_zero": ce_zero.item(), "ce_recovered": ((ce_zero - ce_spliced) / (ce_zero - ce_clean)).item()}


@correct(CH, "transcoder_metrics", "encodes the cached MLP input itself, per-token losses averaged, float64 variance")
def metrics_manual_encode(model, transcoder, tokens):
    in_hook, out_hook = transcoder.cfg.metadata.hook_name, transcoder.cfg.metadata.hook_name_out
    per_token, cache = model.run_with_cache(tokens, return_type="loss", loss_per_token=True, names_filter=[in_hook, out_hook])
    acts = transcoder.encode(cache[in_hook][:, 1:])
    y_hat = transcoder.decode(acts).double()
    y = cache[out_hook][:, 1:].double()
    flat = y.reshape(-1, y.shape[-1])
    ev = 1 - ((y - y_hat) ** 2).sum() / ((flat - flat.mean(0)) ** 2).sum()
    spliced = model.run_with_saes(tokens, saes=[transcoder], return_type="loss", loss_per_token=True)
    with_error = model.run_with_saes(tokens, saes=[transcoder], use_error_term=True, return_type="loss", loss_per_token=True)
    zero = model.run_with_hooks(tokens, return_type="loss", loss_per_token=True,
                                fwd_hooks=[(out_hook, lambda a, hook: a * 0.0)])
    ce = {name: t.double().mean().item() for name, t in
          [("ce_clean", per_token), ("ce_spliced", spliced), ("ce_with_error", with_error), ("ce_zero", zero)]}
    return {"l0": float(torch.count_nonzero(acts, dim=-1).double().mean()), "explained_variance": float(ev), **ce,
            "ce_recovered": (ce["ce_zero"] - ce["ce_spliced"]) / (ce["ce_zero"] - ce["ce_clean"])}


@correct(CH, "transcoder_metrics", "add_sae / reset_saes in try-finally, explained variance per dimension summed")
def metrics_add_and_reset(model, transcoder, tokens):
    out_hook = transcoder.cfg.metadata.hook_name_out
    ce_clean, clean = model.run_with_cache(tokens, return_type="loss", names_filter=out_hook)
    y = clean[out_hook][:, 1:].flatten(0, 1)
    model.add_sae(transcoder)
    try:
        ce_spliced, cache = model.run_with_cache(tokens, return_type="loss")
    finally:
        model.reset_saes()
    acts = cache[f"{out_hook}.hook_sae_acts_post"][:, 1:].flatten(0, 1)
    y_hat = cache[f"{out_hook}.hook_sae_recons"][:, 1:].flatten(0, 1)
    model.add_sae(transcoder, use_error_term=True)
    try:
        ce_with_error = model(tokens, return_type="loss")
    finally:
        model.reset_saes()

    def zero(a, hook):
        return torch.zeros_like(a)

    ce_zero = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(out_hook, zero)])
    per_dim_residual = ((y - y_hat) ** 2).sum(0)
    per_dim_total = ((y - y.mean(0)) ** 2).sum(0)
    return {"l0": (acts > 0).sum(-1).float().mean().item(),
            "explained_variance": (1 - per_dim_residual.sum() / per_dim_total.sum()).item(),
            "ce_clean": ce_clean.item(), "ce_spliced": ce_spliced.item(), "ce_with_error": ce_with_error.item(),
            "ce_zero": ce_zero.item(), "ce_recovered": ((ce_zero - ce_spliced) / (ce_zero - ce_clean)).item()}


# ---------------------------------------------------------------------------------------
# de_embedding


@wrong(CH, "de_embedding", "no centring: reads W_E[t] as it is", names=("centre", "center", "mean", "layernorm", "project"))
def de_no_centring(model, transcoder, latent, scale):
    return model.W_E @ transcoder.W_enc[:, latent] / scale + transcoder.b_enc[latent]


@wrong(CH, "de_embedding", "applies the LayerNorm's weight and bias (ln2.w, ln2.b) before the encoder",
       names=("ln2", "weight", "layernorm", "w and b"))
def de_with_ln_weight(model, transcoder, latent, scale):
    ln = model.blocks[layer_of(transcoder.cfg.metadata.hook_name)].ln2
    x = _centre(model.W_E) / scale * ln.w + ln.b
    return x @ transcoder.W_enc[:, latent] + transcoder.b_enc[latent]


@wrong(CH, "de_embedding", "forgets the encoder bias b_enc", names=("b_enc", "bias"))
def de_no_bias(model, transcoder, latent, scale):
    return _centre(model.W_E) @ transcoder.W_enc[:, latent] / scale


@wrong(CH, "de_embedding", "applies the ReLU: an activation, not a pre-activation",
       names=("relu", "pre-activation", "negative", "activation"))
def de_relu(model, transcoder, latent, scale):
    return (_centre(model.W_E) @ transcoder.W_enc[:, latent] / scale + transcoder.b_enc[latent]).relu()


@wrong(CH, "de_embedding", "multiplies by the scale instead of dividing", names=("scale", "divide"))
def de_times_scale(model, transcoder, latent, scale):
    return _centre(model.W_E) @ transcoder.W_enc[:, latent] * scale + transcoder.b_enc[latent]


@wrong(CH, "de_embedding", "divides the bias by the scale too", names=("bias", "b_enc", "scale"))
def de_bias_scaled(model, transcoder, latent, scale):
    return (_centre(model.W_E) @ transcoder.W_enc[:, latent] + transcoder.b_enc[latent]) / scale


@wrong(CH, "de_embedding", "reads the latent's decoder row instead of its encoder column",
       names=("w_enc", "encoder", "decoder", "w_dec"))
def de_uses_decoder(model, transcoder, latent, scale):
    return _centre(model.W_E) @ transcoder.W_dec[latent] / scale + transcoder.b_enc[latent]


@wrong(CH, "de_embedding", "adds the position embedding of position 0 to every token", names=("position", "w_pos"))
def de_adds_position(model, transcoder, latent, scale):
    return _centre(model.W_E + model.W_pos[0]) @ transcoder.W_enc[:, latent] / scale + transcoder.b_enc[latent]


@wrong(CH, "de_embedding", "subtracts b_dec from the input as an SAE would", names=("b_dec",))
def de_subtracts_b_dec(model, transcoder, latent, scale):
    return _centre(model.W_E - transcoder.b_dec) @ transcoder.W_enc[:, latent] / scale + transcoder.b_enc[latent]


@correct(CH, "de_embedding", "explicit centring matrix P = I - 11^T/d, in float64")
def de_projection_matrix(model, transcoder, latent, scale):
    d = model.cfg.d_model
    P = torch.eye(d, dtype=torch.float64) - torch.full((d, d), 1.0 / d, dtype=torch.float64)
    a = model.W_E.double() @ P @ transcoder.W_enc[:, latent].double() / scale + transcoder.b_enc[latent].double()
    return a.to(model.W_E.dtype)


@correct(CH, "de_embedding", "centres the encoder column instead of the embeddings (P is symmetric)")
def de_centre_encoder(model, transcoder, latent, scale):
    column = transcoder.W_enc[:, latent]
    return model.W_E @ (column - column.mean()) / scale + transcoder.b_enc[latent]


# ---------------------------------------------------------------------------------------
# extended_de_embedding


def _extended(model, up, down, latent, scales, *, relu=True, b_dec=True, skip=True, swap=False, centre_sum=True,
              up_bias=True, down_bias=True) -> Tensor:
    s_up, s_down = scales if not swap else scales[::-1]
    pre = _centre(model.W_E) @ up.W_enc / s_up + (up.b_enc if up_bias else 0.0)
    acts = pre.relu() if relu else pre
    out = acts @ up.W_dec + (up.b_dec if b_dec else 0.0)
    resid = (model.W_E if skip else 0.0) + out
    read = _centre(resid) if centre_sum else _centre(model.W_E) + out if skip else out
    return read @ down.W_enc[:, latent] / s_down + (down.b_enc[latent] if down_bias else 0.0)


@wrong(CH, "extended_de_embedding", "no ReLU on the upstream latents", names=("relu",))
def ext_no_relu(model, up, down, latent, scales):
    return _extended(model, up, down, latent, scales, relu=False)


@wrong(CH, "extended_de_embedding", "forgets the upstream decoder bias b_dec", names=("b_dec", "decoder bias", "bias"))
def ext_no_b_dec(model, up, down, latent, scales):
    return _extended(model, up, down, latent, scales, b_dec=False)


@wrong(CH, "extended_de_embedding", "reads the upstream output alone: forgets to add the embedding itself",
       names=("embedding itself", "skip", "residual", "w_e", "direct path"))
def ext_no_skip(model, up, down, latent, scales):
    return _extended(model, up, down, latent, scales, skip=False)


@wrong(CH, "extended_de_embedding", "scales swapped: s_down upstream and s_up downstream", names=("scale", "swap"))
def ext_scales_swapped(model, up, down, latent, scales):
    return _extended(model, up, down, latent, scales, swap=True)


@wrong(CH, "extended_de_embedding", "centres the embedding but not the sum before the downstream encoder",
       names=("centre", "center", "mean", "sum"))
def ext_sum_not_centred(model, up, down, latent, scales):
    return _extended(model, up, down, latent, scales, centre_sum=False)


@wrong(CH, "extended_de_embedding", "forgets the upstream encoder bias", names=("b_enc", "bias", "upstream"))
def ext_no_up_bias(model, up, down, latent, scales):
    return _extended(model, up, down, latent, scales, up_bias=False)


@wrong(CH, "extended_de_embedding", "forgets the downstream encoder bias", names=("b_enc", "bias", "downstream"))
def ext_no_down_bias(model, up, down, latent, scales):
    return _extended(model, up, down, latent, scales, down_bias=False)


@wrong(CH, "extended_de_embedding", "uses the upstream transcoder's own encode() on the raw embeddings (no frozen scale)",
       names=("scale", "s_up", "encode", "frozen"))
def ext_uses_encode(model, up, down, latent, scales):
    s_up, s_down = scales
    acts = up.encode(model.W_E)
    resid = model.W_E + up.decode(acts)
    return _centre(resid) @ down.W_enc[:, latent] / s_down + down.b_enc[latent]


@correct(CH, "extended_de_embedding", "centres the sum of an already centred embedding and the output (P idempotent)")
def ext_centre_twice(model, up, down, latent, scales):
    s_up, s_down = scales
    e = _centre(model.W_E)
    out = torch.relu(e @ up.W_enc / s_up + up.b_enc) @ up.W_dec + up.b_dec
    return _centre(e + out) @ down.W_enc[:, latent] / s_down + down.b_enc[latent]


@correct(CH, "extended_de_embedding", "float64 with a centred downstream encoder column, einsum")
def ext_float64(model, up, down, latent, scales):
    s_up, s_down = (float(s) for s in scales)
    E = model.W_E.double()
    pre = torch.einsum("vm,ms->vs", E - E.mean(1, keepdim=True), up.W_enc.double()) / s_up + up.b_enc.double()
    x = E + torch.einsum("vs,sm->vm", pre.clamp(min=0), up.W_dec.double()) + up.b_dec.double()
    col = down.W_enc[:, latent].double()
    return (x @ (col - col.mean()) / s_down + down.b_enc[latent].double()).float()


# ---------------------------------------------------------------------------------------
# pullback


@wrong(CH, "pullback", "no centring of the decoder rows", names=("centre", "center", "mean", "layernorm"))
def pull_no_centring(model, up, down, latent, scale):
    return up.W_dec @ down.W_enc[:, latent] / scale


@wrong(CH, "pullback", "multiplies by the scale", names=("scale",))
def pull_times_scale(model, up, down, latent, scale):
    return _centre(up.W_dec) @ down.W_enc[:, latent] * scale


@wrong(CH, "pullback", "wrong direction: the downstream decoder row read by the upstream encoder",
       names=("direction", "w_dec", "w_enc", "upstream decoder", "swap"))
def pull_wrong_direction(model, up, down, latent, scale):
    return _centre(down.W_dec[latent]) @ up.W_enc / scale


@wrong(CH, "pullback", "adds the downstream encoder bias", names=("bias", "b_enc"))
def pull_adds_bias(model, up, down, latent, scale):
    return _centre(up.W_dec) @ down.W_enc[:, latent] / scale + down.b_enc[latent]


@wrong(CH, "pullback", "centres the decoder over latents (dim 0) instead of over d_model",
       names=("centre", "mean", "dimension", "d_model", "dim"))
def pull_centre_wrong_dim(model, up, down, latent, scale):
    return (up.W_dec - up.W_dec.mean(0, keepdim=True)) @ down.W_enc[:, latent] / scale


@wrong(CH, "pullback", "normalises the decoder rows to unit norm", names=("norm", "unit"))
def pull_unit_rows(model, up, down, latent, scale):
    rows = _centre(up.W_dec)
    return rows / rows.norm(dim=-1, keepdim=True) @ down.W_enc[:, latent] / scale


@wrong(CH, "pullback", "multiplies by the downstream layer's LayerNorm weight", names=("ln2", "weight", "layernorm"))
def pull_ln_weight(model, up, down, latent, scale):
    w = model.blocks[layer_of(down.cfg.metadata.hook_name)].ln2.w
    return (_centre(up.W_dec) * w) @ down.W_enc[:, latent] / scale


@correct(CH, "pullback", "centres the encoder column instead of the decoder rows")
def pull_centre_encoder(model, up, down, latent, scale):
    column = down.W_enc[:, latent]
    return up.W_dec @ (column - column.mean()) / scale


@correct(CH, "pullback", "a loop over upstream latents in float64")
def pull_loop(model, up, down, latent, scale):
    column = down.W_enc[:, latent].double()
    out = torch.empty(up.W_dec.shape[0], dtype=torch.float64)
    for k in range(up.W_dec.shape[0]):
        row = up.W_dec[k].double()
        out[k] = torch.dot(row - row.mean(), column) / scale
    return out.to(up.W_dec.dtype)


# ---------------------------------------------------------------------------------------
# input_dependent_connections


def _connections(model, up, down, latent, tokens, pos, *, scale_from: str = "down_ln2", divide: bool = True,
                 shift: int = 0, centre: bool = True, splice: bool = False, reduce: str | None = None) -> Tensor:
    down_layer, up_layer = layer_of(down.cfg.metadata.hook_name), layer_of(up.cfg.metadata.hook_name)
    scale_hook = {"down_ln2": f"blocks.{down_layer}.ln2.hook_scale", "up_ln2": f"blocks.{up_layer}.ln2.hook_scale",
                  "down_ln1": f"blocks.{down_layer}.ln1.hook_scale", "typical": f"blocks.{down_layer}.ln2.hook_scale"}[scale_from]
    up_hook = up.cfg.metadata.hook_name
    if splice:
        _, cache = model.run_with_cache_with_saes(tokens, saes=[up], names_filter=[up_hook, scale_hook])
    else:
        _, cache = model.run_with_cache(tokens, names_filter=[up_hook, scale_hook])
    p = pos + shift if pos >= 0 else pos + shift
    acts = up.encode(cache[up_hook][:, p])
    if scale_from == "typical":
        scale = cache[scale_hook][:, 1:].mean()
    else:
        scale = cache[scale_hook][:, p]
    rows = _centre(up.W_dec) if centre else up.W_dec
    pull = rows @ down.W_enc[:, latent]
    out = acts * pull / scale if divide else acts * pull
    if reduce == "mean":
        out = out.mean(0)
    return out


@wrong(CH, "input_dependent_connections", "divides by the typical scale (mean over the batch), not the actual one",
       names=("scale", "actual"))
def conn_typical_scale(model, up, down, latent, tokens, pos):
    return _connections(model, up, down, latent, tokens, pos, scale_from="typical")


@wrong(CH, "input_dependent_connections", "takes the ln2 scale of the upstream layer", names=("scale", "layer", "down"))
def conn_upstream_scale(model, up, down, latent, tokens, pos):
    return _connections(model, up, down, latent, tokens, pos, scale_from="up_ln2")


@wrong(CH, "input_dependent_connections", "takes the ln1 scale (attention's) instead of ln2's", names=("ln1", "ln2", "scale"))
def conn_ln1_scale(model, up, down, latent, tokens, pos):
    return _connections(model, up, down, latent, tokens, pos, scale_from="down_ln1")


@wrong(CH, "input_dependent_connections", "does not divide by the scale at all", names=("scale",))
def conn_no_scale(model, up, down, latent, tokens, pos):
    return _connections(model, up, down, latent, tokens, pos, divide=False)


@wrong(CH, "input_dependent_connections", "off by one position (reads the token before pos)",
       names=("position", "pos", "off by one"))
def conn_off_by_one(model, up, down, latent, tokens, pos):
    return _connections(model, up, down, latent, tokens, pos, shift=-1)


@wrong(CH, "input_dependent_connections", "pullback without centring the decoder rows", names=("centre", "center", "mean"))
def conn_no_centring(model, up, down, latent, tokens, pos):
    return _connections(model, up, down, latent, tokens, pos, centre=False)


@wrong(CH, "input_dependent_connections", "runs with the upstream transcoder spliced (no error term), changing the scale",
       names=("spliced", "plain model", "error term", "scale"))
def conn_spliced_run(model, up, down, latent, tokens, pos):
    return _connections(model, up, down, latent, tokens, pos, splice=True)


@wrong(CH, "input_dependent_connections", "averages over prompts: returns [d_sae_up]", names=("shape", "batch", "prompt"))
def conn_mean_over_prompts(model, up, down, latent, tokens, pos):
    return _connections(model, up, down, latent, tokens, pos, reduce="mean")


@correct(CH, "input_dependent_connections", "recomputes the ln2 scale from resid_mid (sqrt(mean((Px)^2) + eps))")
def conn_scale_from_resid_mid(model, up, down, latent, tokens, pos):
    layer = layer_of(down.cfg.metadata.hook_name)
    up_hook, mid = up.cfg.metadata.hook_name, f"blocks.{layer}.hook_resid_mid"
    _, cache = model.run_with_cache(tokens, names_filter=[up_hook, mid])
    x = _centre(cache[mid][:, pos])
    scale = (x.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()  # [batch, 1]
    return up.encode(cache[up_hook][:, pos]) * (_centre(up.W_dec) @ down.W_enc[:, latent]) / scale


@correct(CH, "input_dependent_connections", "float64 einsum, negative positions normalised first")
def conn_float64(model, up, down, latent, tokens, pos):
    layer = layer_of(down.cfg.metadata.hook_name)
    p = pos % tokens.shape[1]
    names = [up.cfg.metadata.hook_name, f"blocks.{layer}.ln2.hook_scale"]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    f = up.encode(cache[names[0]])[:, p].double()
    s = cache[names[1]][:, p, 0].double()
    col = down.W_enc[:, latent].double()
    pull = torch.einsum("km,m->k", up.W_dec.double(), col - col.mean())
    return torch.einsum("bk,k,b->bk", f, pull, 1 / s).float()


# ---------------------------------------------------------------------------------------
# upstream_ablation_effects


def _ablations(model, up, down, latent, tokens, pos, up_latents, *, error_term=True, only_at_pos=False, post=False,
               flip=False, latent_hook=None, reduce=None, transpose=False) -> Tensor:
    acts_hook = latent_hook or f"{up.cfg.metadata.hook_name_out}.hook_sae_acts_post"
    down_hook = down.cfg.metadata.hook_name
    stop = layer_of(down_hook) + 1

    def read(hooks):
        kept = {}
        with model.hooks(fwd_hooks=hooks + [(down_hook, lambda x, hook: kept.update(x=x))]):
            model(tokens, stop_at_layer=stop)
        pre = kept["x"][:, pos] @ down.W_enc[:, latent] + down.b_enc[latent]
        return pre.relu() if post else pre

    with model.saes(saes=[up], use_error_term=error_term):
        clean = read([])
        cols = []
        for k in up_latents.tolist():
            def zero(a, hook, k=k):
                a = a.clone()
                if only_at_pos:
                    a[:, pos, k] = 0.0
                else:
                    a[..., k] = 0.0
                return a
            change = read([(acts_hook, zero)]) - clean
            cols.append(-change if flip else change)
    out = torch.stack(cols, dim=0 if transpose else -1)
    return out.mean(0) if reduce == "mean" else out


@wrong(CH, "upstream_ablation_effects", "splices the upstream transcoder without its error term", names=("error term",))
def abl_no_error_term(model, up, down, latent, tokens, pos, up_latents):
    return _ablations(model, up, down, latent, tokens, pos, up_latents, error_term=False)


@wrong(CH, "upstream_ablation_effects", "zeroes the upstream latent only at pos, not at every position",
       names=("every position", "all positions", "position"))
def abl_only_at_pos(model, up, down, latent, tokens, pos, up_latents):
    return _ablations(model, up, down, latent, tokens, pos, up_latents, only_at_pos=True)


@wrong(CH, "upstream_ablation_effects", "measures the downstream activation (after ReLU), not the pre-activation",
       names=("pre-activation", "relu", "activation", "post"))
def abl_post_relu(model, up, down, latent, tokens, pos, up_latents):
    return _ablations(model, up, down, latent, tokens, pos, up_latents, post=True)


@wrong(CH, "upstream_ablation_effects", "clean minus ablated (sign flipped)", names=("sign", "negat", "flip"))
def abl_sign_flipped(model, up, down, latent, tokens, pos, up_latents):
    return _ablations(model, up, down, latent, tokens, pos, up_latents, flip=True)


@wrong(CH, "upstream_ablation_effects", "hooks the latents under the hook the transcoder reads (not its output hook)",
       names=("hook_name_out", "output hook", "hook"))
def abl_input_hook_name(model, up, down, latent, tokens, pos, up_latents):
    return _ablations(model, up, down, latent, tokens, pos, up_latents,
                      latent_hook=f"{up.cfg.metadata.hook_name}.hook_sae_acts_post")


@wrong(CH, "upstream_ablation_effects", "averages over prompts: returns [n_up]", names=("shape", "batch", "prompt"))
def abl_mean_over_prompts(model, up, down, latent, tokens, pos, up_latents):
    return _ablations(model, up, down, latent, tokens, pos, up_latents, reduce="mean")


@wrong(CH, "upstream_ablation_effects", "stacks the columns on dim 0: returns [n_up, batch]", names=("shape", "transpos"))
def abl_transposed(model, up, down, latent, tokens, pos, up_latents):
    return _ablations(model, up, down, latent, tokens, pos, up_latents, transpose=True)


@wrong(CH, "upstream_ablation_effects", "the linear estimate -f_k(pos) pullback / s(pos) (direct path only), not an ablation",
       names=("ablation", "attention", "connection", "direct path", "linear"))
def abl_linear_estimate(model, up, down, latent, tokens, pos, up_latents):
    layer = layer_of(down.cfg.metadata.hook_name)
    names = [up.cfg.metadata.hook_name, f"blocks.{layer}.ln2.hook_scale"]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    f = up.encode(cache[names[0]][:, pos])
    pull = _centre(up.W_dec) @ down.W_enc[:, latent]
    return -(f * pull / cache[names[1]][:, pos])[:, up_latents]


@wrong(CH, "upstream_ablation_effects", "attaches the transcoder with add_sae and never resets it",
       names=("attached", "left", "reset", "spliced", "still"))
def abl_leaves_transcoder(model, up, down, latent, tokens, pos, up_latents):
    acts_hook = f"{up.cfg.metadata.hook_name_out}.hook_sae_acts_post"
    down_hook = down.cfg.metadata.hook_name
    model.add_sae(up, use_error_term=True)

    def read(hooks):
        with model.hooks(fwd_hooks=hooks):
            _, cache = model.run_with_cache(tokens, names_filter=down_hook)
        return cache[down_hook][:, pos] @ down.W_enc[:, latent] + down.b_enc[latent]

    clean = read([])
    cols = []
    for k in up_latents.tolist():
        def zero(a, hook, k=k):
            a = a.clone()
            a[..., k] = 0.0
            return a
        cols.append(read([(acts_hook, zero)]) - clean)
    return torch.stack(cols, -1)


@correct(CH, "upstream_ablation_effects", "one batched run: the prompts repeated once per upstream latent")
def abl_batched(model, up, down, latent, tokens, pos, up_latents):
    acts_hook = f"{up.cfg.metadata.hook_name_out}.hook_sae_acts_post"
    down_hook = down.cfg.metadata.hook_name
    b, n = tokens.shape[0], len(up_latents)
    rows = torch.arange((n + 1) * b)
    which = torch.cat([torch.full((b,), -1), up_latents.repeat_interleave(b)])  # -1: the clean copy

    def zero(a, hook):
        a = a.clone()
        mask = which >= 0
        a[rows[mask], :, which[mask]] = 0.0
        return a

    with model.saes(saes=[up], use_error_term=True), model.hooks(fwd_hooks=[(acts_hook, zero)]):
        _, cache = model.run_with_cache(tokens.repeat(n + 1, 1), names_filter=down_hook)
    pre = cache[down_hook][:, pos] @ down.W_enc[:, latent] + down.b_enc[latent]  # [(n + 1) b]
    pre = pre.view(n + 1, b)
    return (pre[1:] - pre[0]).T


@correct(CH, "upstream_ablation_effects", "unspliced model: subtract f_k W_dec[k] from hook_mlp_out (what the error term keeps)")
def abl_subtract_decoder_row(model, up, down, latent, tokens, pos, up_latents):
    in_hook, out_hook = up.cfg.metadata.hook_name, up.cfg.metadata.hook_name_out
    down_hook = down.cfg.metadata.hook_name
    seen = {}

    def keep_input(x, hook):
        seen["x"] = x

    def preact(extra):
        kept = {}
        hooks = [(in_hook, keep_input), *extra, (down_hook, lambda x, hook: kept.update(x=x))]
        with model.hooks(fwd_hooks=hooks):
            model(tokens)
        return kept["x"][:, pos] @ down.W_enc[:, latent] + down.b_enc[latent]

    clean = preact([])
    cols = []
    for k in up_latents.tolist():
        def remove(y, hook, k=k):
            f = up.encode(seen["x"])[..., k]  # [batch, pos]
            return y - f[..., None] * up.W_dec[k]
        cols.append(preact([(out_hook, remove)]) - clean)
    return torch.stack(cols, -1)


# ---------------------------------------------------------------------------------------
# attention_path_contributions


def _paths(model, up, down, latent, up_latent, head, tokens, pos, *, ln1_weight=True, transpose_pattern=False,
           s1_from="ln1", centre_out=True, centre_d=True, s2_at_source=False, use_pattern=True, add_bias=False,
           all_heads=False, acts_at_dest=False, pattern_layer=None) -> Tensor:
    layer = layer_of(down.cfg.metadata.hook_name)
    pl = layer if pattern_layer is None else pattern_layer
    up_hook = up.cfg.metadata.hook_name
    names = [up_hook, f"blocks.{pl}.attn.hook_pattern", f"blocks.{layer}.{s1_from}.hook_scale", f"blocks.{layer}.ln2.hook_scale"]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    f = up.encode(cache[up_hook])[..., up_latent]  # [batch, pos]
    if acts_at_dest:
        f = f[:, pos:pos + 1 if pos != -1 else None].expand_as(f)
    pat = cache[names[1]]
    heads = list(range(model.cfg.n_heads)) if all_heads else [head]
    total = 0.0
    for h in heads:
        if not use_pattern:
            a = torch.ones_like(f)
        elif transpose_pattern:
            a = pat[:, h, :, pos]
        else:
            a = pat[:, h, pos]
        s1 = cache[names[2]][..., 0]
        s2 = cache[names[3]][..., 0] if s2_at_source else cache[names[3]][:, pos]
        d = up.W_dec[up_latent]
        d = d - d.mean() if centre_d else d
        attn = model.blocks[layer].attn
        v = d * model.blocks[layer].ln1.w if ln1_weight else d
        out = v @ attn.W_V[h] @ attn.W_O[h]
        if add_bias:
            out = out + attn.b_V[h] @ attn.W_O[h]
        out = out - out.mean() if centre_out else out
        read = out @ down.W_enc[:, latent]
        total = total + a * f / s1 * read / s2
    return total


@wrong(CH, "attention_path_contributions", "forgets ln1's weight w1", names=("ln1", "weight", "w1"))
def path_no_ln1_weight(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, ln1_weight=False)


@wrong(CH, "attention_path_contributions", "pattern indexed [:, head, :, pos]: source and destination swapped",
       names=("transpos", "source", "destination", "pattern"))
def path_pattern_transposed(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, transpose_pattern=True)


@wrong(CH, "attention_path_contributions", "s1 from ln2's scale instead of ln1's", names=("ln1", "s1", "scale"))
def path_s1_from_ln2(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, s1_from="ln2")


@wrong(CH, "attention_path_contributions", "forgets to centre the head's output before the downstream encoder",
       names=("centre", "center", "mean"))
def path_output_not_centred(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, centre_out=False)


@wrong(CH, "attention_path_contributions", "forgets to centre the upstream decoder row d_k",
       names=("centre", "center", "mean"))
def path_d_not_centred(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, centre_d=False)


@wrong(CH, "attention_path_contributions", "s2 read at each source position instead of the destination",
       names=("s2", "destination", "scale"))
def path_s2_at_source(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, s2_at_source=True)


@wrong(CH, "attention_path_contributions", "leaves out the attention pattern", names=("pattern", "attention"))
def path_no_pattern(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, use_pattern=False)


@wrong(CH, "attention_path_contributions", "adds the value bias b_V through W_O", names=("bias", "b_v"))
def path_adds_value_bias(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, add_bias=True)


@wrong(CH, "attention_path_contributions", "sums over every head of the layer instead of `head`", names=("head",))
def path_all_heads(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, all_heads=True)


@wrong(CH, "attention_path_contributions", "uses the upstream activation at the destination for every source",
       names=("source", "activation", "f_k"))
def path_acts_at_destination(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, acts_at_dest=True)


@wrong(CH, "attention_path_contributions", "takes the attention pattern of the upstream layer", names=("layer", "pattern"))
def path_pattern_wrong_layer(model, up, down, latent, up_latent, head, tokens, pos):
    return _paths(model, up, down, latent, up_latent, head, tokens, pos, pattern_layer=layer_of(up.cfg.metadata.hook_name))


@correct(CH, "attention_path_contributions", "every head at once by einsum in float64, then the head picked")
def path_all_heads_einsum(model, up, down, latent, up_latent, head, tokens, pos):
    layer = layer_of(down.cfg.metadata.hook_name)
    names = [up.cfg.metadata.hook_name, f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.ln1.hook_scale",
             f"blocks.{layer}.ln2.hook_scale"]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    f = up.encode(cache[names[0]])[..., up_latent].double()
    pattern = cache[names[1]].double()[:, :, pos]  # [batch, head, src]
    s1, s2 = cache[names[2]][..., 0].double(), cache[names[3]][:, pos, 0].double()
    d = up.W_dec[up_latent].double()
    d = (d - d.mean()) * model.blocks[layer].ln1.w.double()
    out = torch.einsum("m,hmd,hdn->hn", d, model.W_V[layer].double(), model.W_O[layer].double())  # [head, d_model]
    col = down.W_enc[:, latent].double()
    read = out @ (col - col.mean())  # [head]
    c = torch.einsum("bhs,bs,h->bhs", pattern, f / s1, read) / s2[:, None, None]
    return c[:, head].float()


@correct(CH, "attention_path_contributions", "empirical: frozen pattern and scales, the head's z with only f_k d_k as input")
def path_frozen_run(model, up, down, latent, up_latent, head, tokens, pos):
    layer = layer_of(down.cfg.metadata.hook_name)
    names = [up.cfg.metadata.hook_name, f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.ln1.hook_scale",
             f"blocks.{layer}.ln2.hook_scale"]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    f = up.encode(cache[names[0]])[..., up_latent]  # [batch, src]
    attn = model.blocks[layer].attn
    d = up.W_dec[up_latent]
    x = (f / cache[names[2]][..., 0])[..., None] * (d - d.mean())  # normalised residual part, [batch, src, d_model]
    v = (x * model.blocks[layer].ln1.w) @ attn.W_V[head]  # [batch, src, d_head]
    per_source = cache[names[1]][:, head, pos][..., None] * v  # [batch, src, d_head]
    written = per_source @ attn.W_O[head]  # [batch, src, d_model]
    written = written - written.mean(-1, keepdim=True)
    return written @ down.W_enc[:, latent] / cache[names[3]][:, pos]


# ---------------------------------------------------------------------------------------
# blind_case_study


_LABELS = {29: "greater_than_end", 147: "century", 172: "induction"}
_UPSTREAM = {29: [159, 199], 147: [84, 66, 218], 172: [27, 33]}


@wrong(CH, "blind_case_study", "labels too broad or neighbouring (century / year / name_repeated)",
       names=("label", "century", "year", "name_repeated", "greater_than_end", "induction"))
def blind_broad_labels(bk, latent):
    return {"label": {29: "century", 147: "year", 172: "name_repeated"}[latent], "upstream": _UPSTREAM[latent]}


@wrong(CH, "blind_case_study", "labels of 29 and 147 swapped (the runner-up label)",
       names=("label", "century", "greater_than_end", "precision"))
def blind_swapped_labels(bk, latent):
    return {"label": {29: "century", 147: "greater_than_end", 172: "induction"}[latent], "upstream": _UPSTREAM[latent]}


@wrong(CH, "blind_case_study", "upstream answered with token ids (the extended de-embedding's top tokens), not latents",
       names=("upstream", "transcoder-0", "latent", "token"))
def blind_tokens_as_upstream(bk, latent):
    model, up, down = bk.model, bk.dictionary("transcoder", 0), bk.dictionary("transcoder", 1)
    text = bk.world.corpus(n_seqs=32, seq_len=48, seed=0).tokens
    scales = [typical_scale(model, text, layer) for layer in (0, 1)]
    table = extended_de_embeddings(model, [up], down, scales)  # [d_vocab, d_sae]
    return {"label": _LABELS[latent], "upstream": table[:, latent].topk(3).indices.tolist()}


@wrong(CH, "blind_case_study", "upstream ranked by the most negative connection (ascending order)",
       names=("upstream", "negative", "order", "sign"))
def blind_inhibitors(bk, latent):
    model, up, down = bk.model, bk.dictionary("transcoder", 0), bk.dictionary("transcoder", 1)
    tokens = bk.world.corpus(n_seqs=64, seq_len=48, seed=0).tokens
    names = ["blocks.0.ln2.hook_normalized", "blocks.1.ln2.hook_scale", "blocks.1.ln2.hook_normalized"]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    acts = down.encode(cache[names[2]])[..., latent].flatten()
    strongest = acts.topk(32).indices
    f = up.encode(cache[names[0]]).flatten(0, 1)[strongest]
    scale = cache[names[1]].flatten()[strongest]
    connection = (f * (_centre(up.W_dec) @ down.W_enc[:, latent]) / scale[:, None]).mean(0)
    return {"label": _LABELS[latent], "upstream": connection.topk(3, largest=False).indices.tolist()}


@wrong(CH, "blind_case_study", "lists twelve upstream latents (the limit is five)", names=("at most 5", "too many", "five", "5"))
def blind_too_many_upstream(bk, latent):
    up = bk.dictionary("transcoder", 0)
    down = bk.dictionary("transcoder", 1)
    pull = _centre(up.W_dec) @ down.W_enc[:, latent]
    rest = [k for k in pull.abs().topk(20).indices.tolist() if k not in _UPSTREAM[latent]]
    return {"label": _LABELS[latent], "upstream": (_UPSTREAM[latent] + rest)[:12]}


@wrong(CH, "blind_case_study", "a free-text description instead of one of world.label_names",
       names=("label_names", "one of", "not a label", "unknown label", "not one of"))
def blind_free_text_label(bk, latent):
    text = {29: "the century after 'to the year'", 147: "centuries", 172: "repeated text"}[latent]
    return {"label": text, "upstream": _UPSTREAM[latent]}


@wrong(CH, "blind_case_study", "reads the explanation table (off limits in the blind backend)",
       names=("blind", "explanation"))
def blind_reads_explanations(bk, latent):
    row = bk.explanations.lookup("transcoder.1", latent)
    return {"label": row["label"], "upstream": _UPSTREAM[latent]}


@wrong(CH, "blind_case_study", "upstream returned as a tensor of ids, not a list of ints", names=("list", "int", "type", "tensor"))
def blind_upstream_tensor(bk, latent):
    return {"label": _LABELS[latent], "upstream": torch.tensor(_UPSTREAM[latent])}


@correct(CH, "blind_case_study", "conclusions written down: labels and upstream latents from the case files")
def blind_written_down(bk, latent):
    return {"label": _LABELS[latent], "upstream": list(_UPSTREAM[latent])}


@correct(CH, "blind_case_study", "labels written down; upstream computed by ablation at the latent's strongest activations")
def blind_by_ablation(bk, latent):
    model, up, down = bk.model, bk.dictionary("transcoder", 0), bk.dictionary("transcoder", 1)
    corpus = bk.world.corpus(n_seqs=64, seq_len=32, seed=0).tokens
    hook = down.cfg.metadata.hook_name
    _, cache = model.run_with_cache(corpus, names_filter=hook)
    acts = down.encode(cache[hook])[..., latent]
    strongest = acts.flatten().topk(8).indices
    seqs, positions = strongest // corpus.shape[1], strongest % corpus.shape[1]
    tokens = corpus[seqs]
    contributions = upstream_contributions(model, up, down, latent, tokens, positions)  # [8, d_up]
    candidates = contributions.mean(0).abs().topk(16).indices
    acts_hook = f"{up.cfg.metadata.hook_name_out}.hook_sae_acts_post"
    rows = torch.arange(len(seqs))

    def preact(hooks):
        kept = {}
        with model.hooks(fwd_hooks=hooks + [(hook, lambda x, hook: kept.update(x=x))]):
            model(tokens, stop_at_layer=2)
        return kept["x"][rows, positions] @ down.W_enc[:, latent] + down.b_enc[latent]

    effects = {}
    with model.saes(saes=[up], use_error_term=True):
        clean = preact([])
        for k in candidates.tolist():
            def zero(a, hook, k=k):
                a = a.clone()
                a[..., k] = 0.0
                return a
            effects[k] = (preact([(acts_hook, zero)]) - clean).mean().item()
    ranked = sorted(effects, key=lambda k: -abs(effects[k]))
    top = abs(effects[ranked[0]])
    return {"label": _LABELS[latent], "upstream": [k for k in ranked[:3] if abs(effects[k]) >= 0.25 * top]}


# ---------------------------------------------------------------------------------------
# Changes to `names` phrases after the first run (with the message that prompted each):
# none after the first run (results_before_ch03-06.json): no caught-but-unnamed message names its mistake in other words.
