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

import html as html_lib
import re
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils import views

if TYPE_CHECKING:
    from sae_vis.model_fns import AutoEncoder  # imported when used: sae_vis is slow to import


def to_sae_vis_encoder(sae: SAE) -> AutoEncoder:
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


# sae-vis pages load d3 v6 and plotly from CDNs, so offline they stay blank. The pages use
# only d3's selections (select, selectAll, data/enter/append, attr, style, text, html,
# property, each, on, remove, empty), which this small stand-in provides; plotly.js comes
# from the plotly Python package. Both are inlined into the page (:func:`self_contained`).
D3_SELECTIONS = r"""
(function () {
  function call(v, node, d, i) { return typeof v === "function" ? v.call(node, d, i) : v; }
  function items(node) { return { node: node, d: node ? node.__data__ : undefined }; }
  class Selection {
    constructor(groups) { this.groups = groups; }  // [{parent, items: [{node, d}]}]
    _each(f) { this.groups.forEach(g => g.items.forEach((it, i) => { if (it.node) f(it, i, g); })); return this; }
    _first() { for (const g of this.groups) for (const it of g.items) if (it.node) return it.node; return null; }
    _map(f) {
      return new Selection(this.groups.map(g => ({ parent: g.parent,
        items: g.items.map((it, i) => f(it, i, g)) })));
    }
    node() { return this._first(); }
    empty() { return this._first() === null; }
    select(s) {
      return this._map(it => {
        const n = it.node ? it.node.querySelector(s) : null;
        if (n && it.d !== undefined) n.__data__ = it.d;
        return items(n);
      });
    }
    selectAll(s) {
      const groups = [];
      this._each(it => groups.push({ parent: it.node,
        items: Array.from(it.node.querySelectorAll(s)).map(items) }));
      return new Selection(groups);
    }
    data(values) {
      const update = [], enter = [];
      this.groups.forEach((g, j) => {
        const data = call(values, g.parent, g.parent ? g.parent.__data__ : undefined, j);
        const u = [], e = [];
        data.forEach((d, i) => {
          const it = g.items[i];
          if (it && it.node) { it.node.__data__ = d; u.push({ node: it.node, d: d }); }
          else e.push({ node: null, d: d });
        });
        update.push({ parent: g.parent, items: u });
        enter.push({ parent: g.parent, items: e });
      });
      const sel = new Selection(update);
      sel._enter = new Selection(enter);
      return sel;
    }
    enter() { return this._enter || new Selection([]); }
    append(tag) {
      return this._map((it, i, g) => {
        const parent = it.node || g.parent;
        const n = parent.appendChild(document.createElement(tag));
        n.__data__ = it.d;
        return { node: n, d: it.d };
      });
    }
    attr(name, v) {
      if (arguments.length < 2) { const n = this._first(); return n ? n.getAttribute(name) : null; }
      return this._each((it, i) => {
        const x = call(v, it.node, it.d, i);
        if (x === null || x === undefined) it.node.removeAttribute(name);
        else it.node.setAttribute(name, x);
      });
    }
    style(name, v) { return this._each((it, i) => it.node.style.setProperty(name, call(v, it.node, it.d, i))); }
    text(v) {
      if (arguments.length < 1) { const n = this._first(); return n ? n.textContent : null; }
      return this._each((it, i) => { it.node.textContent = call(v, it.node, it.d, i); });
    }
    html(v) {
      if (arguments.length < 1) { const n = this._first(); return n ? n.innerHTML : null; }
      return this._each((it, i) => { it.node.innerHTML = call(v, it.node, it.d, i); });
    }
    property(name, v) {
      if (arguments.length < 2) { const n = this._first(); return n ? n[name] : undefined; }
      return this._each((it, i) => { it.node[name] = call(v, it.node, it.d, i); });
    }
    each(f) { return this._each((it, i) => f.call(it.node, it.d, i)); }
    on(type, f) {
      return this._each(it => it.node.addEventListener(type, function (event) { f.call(this, event, this.__data__); }));
    }
    remove() { return this._each(it => it.node.remove()); }
  }
  function one(x) { return typeof x === "string" ? document.querySelector(x) : x; }
  window.d3 = {
    select: x => new Selection([{ parent: document.documentElement, items: [items(one(x))] }]),
    selectAll: s => new Selection([{ parent: document.documentElement,
      items: Array.from(document.querySelectorAll(s)).map(items) }]),
  };
})();
"""
D3_CDN = '<script src="https://d3js.org/d3.v6.min.js"></script>'
PLOTLY_CDN = '<script src="https://cdn.plot.ly/plotly-latest.min.js"></script>'


# sae-vis lays its columns side by side in a grid as wide as their sum (about 2,000 px with
# the quantile groups): a notebook's output column is about 950 px. Appended after sae-vis's
# own style, this lets the columns wrap under each other and keeps each inside the frame.
FIT_COLUMN_CSS = """<style>/* utils.dashboards: reflow to a notebook's column */
.grid-container { display: flex; flex-wrap: wrap; align-items: flex-start; white-space: normal;
                  overflow-x: hidden; margin: 10px 0; padding: 15px 0 12px 0; }
.grid-column { margin-left: 16px; padding-right: 8px; max-width: calc(100vw - 60px); overflow-x: hidden; }
.seq-group { overflow-x: hidden; }
</style>"""


def fit_column(html: str) -> str:
    """The page with :data:`FIT_COLUMN_CSS` appended: its columns wrap to the frame's width."""
    return html + FIT_COLUMN_CSS


def self_contained(html: str) -> str:
    """The page with its CDN scripts replaced by inline ones: the d3 stand-in and plotly.js.

    Nothing is loaded from elsewhere, so the page draws offline, over ``file://``, and under
    Jupyter Server (which refuses scripts that a page in ``/files/`` loads beside it).
    """
    import plotly

    if D3_CDN not in html or PLOTLY_CDN not in html:
        raise RuntimeError("sae-vis changed its page template: update utils/dashboards.self_contained")
    plotly_js = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text(encoding="utf-8")
    # "</script" inside the inlined code would end the tag early; plotly.js does not write it.
    assert "</script" not in plotly_js.lower() and "</script" not in D3_SELECTIONS
    return (html.replace(D3_CDN, f"<script>{D3_SELECTIONS}</script>")
                .replace(PLOTLY_CDN, f"<script>{plotly_js}</script>"))


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
    # Column widths (px): the logits tables need 375; :func:`fit_column` wraps the columns to the frame.
    layout = SaeVisLayoutConfig(columns=[
        Column(FeatureTablesConfig(n_rows=3, correlated_features_table=len(latents) >= 3), width=260),
        Column(ActsHistogramConfig(), LogitsTableConfig(n_rows=10), LogitsHistogramConfig(), width=400),
        Column(seq_cfg, width=400),
    ], height=750)
    return SaeVisConfig(hook_point=hook_name, features=latents, minibatch_size_tokens=64,
                        feature_centric_layout=layout, seed=0, verbose=False)


class _SpacedVocab:
    """Stands in for ``model`` when sae-vis writes the page: it reads only ``tokenizer.vocab``.

    sae-vis shows each token as its vocabulary string, turning GPT-2's space marker "Ġ" into
    a space. Word-level tokens carry no space, so words would run together ("wentto the"):
    we mark each with "Ġ" for the page only.
    """

    def __init__(self, model: HookedSAETransformer):
        vocab = model.tokenizer.vocab
        if views.tokens_lack_spaces(model):
            vocab = {f"Ġ{word}": i for word, i in vocab.items()}
        self.tokenizer = SimpleNamespace(vocab=vocab)


def dashboard_html(model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "batch seq"],
                   latents: list[int]) -> str:
    """The sae-vis page for ``latents`` over ``tokens``, loading d3 and plotly from CDNs."""
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
    data.model = _SpacedVocab(model)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "dashboard.html"
        data.save_feature_centric_vis(path, feature_idx=latents[0])
        return path.read_text(encoding="utf-8")


def dashboard_summary(model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "batch seq"],
                      latents: list[int]) -> tuple[str, str]:
    """What the dashboard shows, in brief, as (HTML, text): per latent, its largest activation
    over ``tokens`` with that context, and the tokens its decoder direction promotes most."""
    from utils.explorer import promoted_tokens, sae_acts

    acts = sae_acts(model, sae, tokens)  # [batch, seq, d_sae]
    rows, lines = [], []
    for latent in latents:
        values, seq_pos = views.top_positions(acts[..., latent], 1)
        context = views.contexts_table(model, tokens, values, seq_pos, window=6).strip()
        promoted = ", ".join(t for t, _ in promoted_tokens(model, sae, latent, k=6))
        lines.append(f"latent #{latent}: max activation {context}; promotes {promoted}")
        rows.append(f"<tr><td>#{latent}</td><td style='text-align:left'>{html_lib.escape(context)}</td>"
                    f"<td style='text-align:left'>{html_lib.escape(promoted)}</td></tr>")
    hook = sae.cfg.metadata.hook_name
    head = f"sae-vis dashboard of {len(latents)} latent(s) of {hook} over {tokens.shape[0]} sequences"
    html = (f"<b>{html_lib.escape(head)}</b><table><tr><th>latent</th><th>max activation, in context</th>"
            f"<th>promotes</th></tr>{''.join(rows)}</table>")
    return html, "\n".join([head + ":", *lines])


def latent_dashboard(model: HookedSAETransformer, sae: SAE, tokens: Int[Tensor, "batch seq"],
                     latents: list[int], name: str) -> Path | None:
    """Build and show an sae-vis dashboard for ``latents`` of a ReLU residual SAE (chapter 00).

    The dashboard has a dropdown over ``latents``; for each it shows the activation
    histogram, the top and bottom logits of ``W_dec[latent] @ W_U`` with their histogram, the
    neurons and latents most aligned with it, and its top-activating contexts in ``tokens``.
    Through :func:`utils.views.show_html`: one self-contained page (plotly.js and a d3
    stand-in inlined, about 5 MB) written to ``_views/{name}.html`` and shown in an iframe,
    inline in VS Code; Colab, being online, gets the page with its CDN scripts. Above the
    frame, a summary for readers who have not run the cell. Returns the file's path (None
    where the page is inlined).
    """
    latents = list(latents)
    html = fit_column(dashboard_html(model, sae, tokens, latents))
    if not views.in_colab():
        html = self_contained(html)
    summary_html, summary_text = dashboard_summary(model, sae, tokens, latents)
    views.show_html(html, name, 1100, summary_html, summary_text)  # the columns wrap: taller than wide
    return None if views.in_colab() or views.in_vscode() else views.view_path(name)
