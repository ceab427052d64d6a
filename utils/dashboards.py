"""Latent dashboards with sae-vis 0.2.15 (chapter 00).

A dashboard shows one latent at a time: its activation histogram, the tokens its decoder
direction promotes and suppresses (``W_dec @ W_U``), and its top-activating contexts.

Two things stand between a SAELens SAE and sae-vis 0.2.15, and this module handles both:

1. ``SaeVisData.create`` wraps a foreign encoder in a fresh ``sae_vis.AutoEncoder`` and then
   loads that fresh module's *own* random weights back into it (``encoder.load_state_dict(
   encoder.state_dict())``), so the dashboard silently describes a random SAE. We build the
   ``AutoEncoder`` ourselves and copy the weights in.
2. sae-vis always encodes ``relu((x - b_dec) @ W_enc + b_enc)``. SAELens subtracts ``b_dec``
   only when ``apply_b_dec_to_input``; otherwise we fold it into the encoder bias:
   ``b_enc' = b_enc + b_dec @ W_enc``, so that ``(x - b_dec) @ W_enc + b_enc' = x @ W_enc + b_enc``.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from jaxtyping import Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils import views


def to_sae_vis_encoder(sae: SAE) -> "AutoEncoder":  # noqa: F821 (sae_vis imported lazily)
    """A ``sae_vis.AutoEncoder`` computing the same latent activations as the ReLU ``sae``."""
    from sae_vis.model_fns import AutoEncoder, AutoEncoderConfig

    cfg = sae.cfg
    if cfg.architecture() != "standard":
        raise ValueError(f"sae-vis 0.2.15 only models ReLU SAEs, got {cfg.architecture()!r}")
    if cfg.normalize_activations != "none" or cfg.reshape_activations != "none":
        raise ValueError("sae-vis cannot normalise or reshape inputs: need "
                         "normalize_activations='none' and reshape_activations='none'")
    # AutoEncoderConfig insists that d_sae is a multiple of d_in; the module itself does not.
    ae_cfg = AutoEncoderConfig(d_in=cfg.d_in, dict_mult=1)
    ae_cfg.d_hidden, ae_cfg.dict_mult = cfg.d_sae, None
    encoder = AutoEncoder(ae_cfg)
    b_enc = sae.b_enc.detach().clone()
    if not cfg.apply_b_dec_to_input:
        b_enc = b_enc + sae.b_dec.detach() @ sae.W_enc.detach()
    with torch.no_grad():
        encoder.W_enc.copy_(sae.W_enc)
        encoder.W_dec.copy_(sae.W_dec)
        encoder.b_enc.copy_(b_enc)
        encoder.b_dec.copy_(sae.b_dec)
    return encoder.to(sae.W_enc.device)


def _vis_config(hook_name: str, latents: list[int], tokens: Int[Tensor, "batch seq"]):
    """A feature-centric layout sized to ``tokens`` (sae-vis needs room around each context)."""
    from sae_vis.data_config_classes import (ActsHistogramConfig, Column, FeatureTablesConfig,
                                             LogitsHistogramConfig, LogitsTableConfig,
                                             SaeVisConfig, SaeVisLayoutConfig, SequencesConfig)

    n_seq, seq_len = tokens.shape
    # A context shows `before` tokens, the active one and `after` tokens; sae-vis also needs
    # the token before the context, so at least one position must remain to choose from.
    before, after = min(5, (seq_len - 2) // 2), min(5, (seq_len - 2) // 2)
    room = n_seq * (seq_len - before - 1 - after)
    seq_cfg = SequencesConfig(buffer=(before, after), stack_mode="stack-none",
                              top_acts_group_size=min(20, room),
                              quantile_group_size=min(5, room), n_quantiles=5)
    layout = SaeVisLayoutConfig(columns=[
        Column(FeatureTablesConfig(n_rows=3, correlated_features_table=len(latents) >= 3)),
        Column(ActsHistogramConfig(), LogitsTableConfig(n_rows=10), LogitsHistogramConfig()),
        Column(seq_cfg),
    ], height=750)
    return SaeVisConfig(hook_point=hook_name, features=latents, minibatch_size_tokens=64,
                        feature_centric_layout=layout, seed=0, verbose=False)


def dashboard_html(model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "batch seq"],
                   latents: list[int], path: Path) -> str:
    """Compute the sae-vis data for ``latents`` over ``tokens`` and write the dashboard to ``path``."""
    from sae_vis.data_storing_fns import SaeVisData

    hook_name = sae.cfg.metadata.hook_name
    if not re.fullmatch(r"blocks\.\d+\.hook_resid_post", hook_name or ""):
        raise ValueError(f"sae-vis dashboards need a residual SAE at blocks.L.hook_resid_post, "
                         f"got hook {hook_name!r}")
    if getattr(model, "acts_to_saes", None):
        raise ValueError("detach the SAEs spliced into the model first (model.reset_saes()): "
                         "sae-vis must read the model's own activations")
    cfg = _vis_config(hook_name, latents, tokens)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # eindex's indexing deprecation notices
        data = SaeVisData.create(encoder=to_sae_vis_encoder(sae), model=model,
                                 tokens=tokens.to(sae.W_enc.device), cfg=cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    data.save_feature_centric_vis(path, feature_idx=latents[0])
    return path.read_text(encoding="utf-8")


def latent_dashboard(model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "batch seq"],
                     latents: list[int], name: str) -> Path:
    """Build and show an sae-vis dashboard for ``latents`` of a ReLU residual SAE (chapter 00).

    The dashboard has a dropdown over ``latents``; for each it shows the activation
    histogram, the top and bottom logits of ``W_dec[latent] @ W_U`` with their histogram, the
    neurons and latents most aligned with it, and its top-activating contexts in ``tokens``.
    It is written to ``_views/{name}.html`` and shown through an iframe (inline in Colab).
    Returns the file's path. Its HTML carries floats and scripts: mark the cell
    ``# NBVAL_IGNORE_OUTPUT`` if it is not already a plain iframe.
    """
    path = views.view_path(name)
    html = dashboard_html(model, sae, tokens, list(latents), path)
    views.show_html(html, name, height=800)
    return path
