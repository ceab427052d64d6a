"""Views: the HTML and plotly figures that chapters show, readable with or without a kernel.

Every view has three forms. In a live notebook, the interactive one; in a notebook opened
without running it (an untrusted notebook, GitHub, a grader's terminal), a static summary
that says "run the cell to explore"; and a plain-text form, rounded to 3 significant
figures, that checked cells print so that nbval compares numbers, never random ids.

Large pages (sae-vis dashboards inline plotly.js) go through :func:`show_html`: written as
one self-contained file to ``_views/{name}.html`` beside the notebook and shown in an
iframe, so a committed notebook stays small; inlined instead where a file next to the
notebook cannot be served (Colab, VS Code).

Chapter 00 introduces the token helpers, :func:`show_html`, :func:`token_logprob_view`, the
max-activating contexts and :func:`histogram`; chapter 01 the figures of effects per latent
(:func:`top_latents_bar`, :func:`scatter_with_diagonal`, :func:`bar`, :func:`edge_graph`,
:func:`heatmap`) that chapters 02-05 reuse.
"""
from __future__ import annotations

import html as html_lib
import math
import os
import sys
from pathlib import Path
from typing import Sequence

import plotly.graph_objects as go
import plotly.io as pio
import torch
from IPython.display import display
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformers import PreTrainedTokenizerBase

from utils.metrics import pearson

VIEWS_DIR = "_views"
RUN_TO_EXPLORE = "Run the cell to explore it."
WEAK_AUROC = 0.8  # below this, an explanation-table label is shown as a guess (faded)


# ---------------------------------------------------------------------------------------
# Small shared helpers (chapter 00).


def sig3(x: float) -> str:
    """``x`` rounded to 3 significant figures, the precision of every checked printout."""
    text = f"{float(x):.3g}"
    return "0" if text in ("-0", "0") else text


def in_colab() -> bool:
    """True inside Google Colab (online; outputs live in the notebook, not beside it)."""
    return "google.colab" in sys.modules


def in_vscode() -> bool:
    """True in a VS Code kernel, whose outputs cannot load files beside the notebook."""
    return "VSCODE_PID" in os.environ


def token_strings(model: HookedTransformer, tokens: Int[Tensor, " pos"] | Sequence[int]
                  ) -> list[str]:
    """One string per token id, as the tokenizer has it (``<id>`` when there is none)."""
    ids = [int(t) for t in tokens]
    if model.tokenizer is None:
        return [f"<{i}>" for i in ids]
    return [_decode(model.tokenizer, [i]) for i in ids]


def _decode(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    text = tokenizer.decode(ids)
    assert isinstance(text, str), "a list of ids decodes to one string"
    return text


_SPACED: dict[int, bool] = {}


def tokens_lack_spaces(model: HookedTransformer) -> bool:
    """True when the tokenizer joins tokens with spaces, so token strings carry none.

    The toy model's word-level tokenizer decodes ``[went, to]`` as ``"went to"`` while each
    token alone is ``"went"`` and ``"to"``; GPT-2's BPE tokens carry their own spaces.
    """
    tokenizer = model.tokenizer
    if tokenizer is None:
        return True
    if id(tokenizer) not in _SPACED:
        i, j = len(tokenizer) // 2, len(tokenizer) // 2 + 1  # two ordinary tokens
        apart = _decode(tokenizer, [i]) + " " + _decode(tokenizer, [j])
        _SPACED[id(tokenizer)] = _decode(tokenizer, [i, j]) == apart
    return _SPACED[id(tokenizer)]


def display_tokens(model: HookedTransformer, tokens: Int[Tensor, " pos"] | Sequence[int]
                   ) -> list[str]:
    """Token strings as a reader should see them side by side: with a leading space
    for word-level tokenizers, as they are for BPE (whose tokens carry their spaces)."""
    strings = token_strings(model, tokens)
    return [" " + s for s in strings] if tokens_lack_spaces(model) else strings


def join_tokens(strings: Sequence[str]) -> str:
    """Join token strings: word-level tokens with spaces, BPE tokens (leading spaces) as is."""
    if any(s[:1].isspace() for s in strings):
        return "".join(strings)
    return " ".join(strings)


def latent_label(bk, hook: str, latent: int) -> str:
    """The explanation table's label for a latent, e.g. ``pronoun (AUROC 0.97, precision 0.61)``
    (precision: the share of the latent's activation on label tokens), else ``""``.

    Labels below :data:`WEAK_AUROC` are marked as guesses: ``ioi_end? (AUROC 0.656, weak)``.
    Only the toy backend has an explanation table (``bk.explanations.lookup``).
    """
    try:
        row = bk.explanations.lookup(hook, latent)
    except (AttributeError, KeyError):
        return ""
    precision = f", precision {sig3(row['precision'])}" if "precision" in row else ""
    if row["auroc"] < WEAK_AUROC:
        return f"{row['label']}? (AUROC {sig3(row['auroc'])}{precision}, weak)"
    return f"{row['label']} (AUROC {sig3(row['auroc'])}{precision})"


def latent_name(bk, hook: str, latent: int) -> str:
    """``#latent`` followed by its label where the backend has one: what hovers show."""
    label = latent_label(bk, hook, latent)
    return f"#{latent} {label}" if label else f"#{latent}"


class View:
    """An output with an HTML form and a plain-text form (what nbval and terminals see)."""

    def __init__(self, html: str, text: str):
        self.html, self.text = html, text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


# ---------------------------------------------------------------------------------------
# Showing a large page (chapter 00 onwards).


def view_path(name: str) -> Path:
    """Where :func:`show_html` writes view ``name``: ``./_views/{name}.html``."""
    return Path.cwd() / VIEWS_DIR / f"{name}.html"


def frame_html(page: str, name: str, height: int, summary_html: str) -> str:
    """``summary_html`` and an iframe showing ``page``; the summary hides once the frame loads.

    Where a notebook's HTML is sanitized (opened without running, on GitHub) the iframe and
    its ``onload`` are dropped and only the summary remains, ending in "run the cell".
    Inline (Colab, VS Code) the page goes into ``srcdoc``; elsewhere the frame loads the file
    that :func:`show_html` wrote, a plain navigation that Jupyter Server allows.
    """
    source = (f'srcdoc="{html_lib.escape(page)}"' if in_colab() or in_vscode()
              else f'src="{VIEWS_DIR}/{name}.html"')
    return (f'<div class="sae-view-summary">{summary_html}<p><i>{RUN_TO_EXPLORE}</i></p></div>'
            f'<iframe {source} width="100%" height="{height}" style="border:none" '
            'onload="this.previousElementSibling.style.display=\'none\'"></iframe>')


def show_html(page: str, name: str, height: int, summary_html: str, summary_text: str) -> None:
    """Display a large self-contained HTML page without storing it in the notebook (chapter 00).

    ``page`` must load nothing from elsewhere (inline its scripts): Jupyter Server refuses a
    page under ``/files/`` the scripts it would load beside it, and offline there is no CDN.
    Outside Colab and VS Code it is written to ``_views/{name}.html`` under the working
    directory (the notebook's folder) and shown in an iframe ``height`` pixels high; the
    stored output is then a few hundred bytes plus the summary. ``summary_html`` and
    ``summary_text`` describe the view for readers who have not run the cell.
    """
    if not (in_colab() or in_vscode()):
        path = view_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    text = f"{summary_text}\n({RUN_TO_EXPLORE} The page: {VIEWS_DIR}/{name}.html)"
    display(View(frame_html(page, name, height, summary_html), text))


# ---------------------------------------------------------------------------------------
# Token log-prob view (chapter 00).

SURPRISE_RANGE = 8.0  # nats: tokens at log-prob <= -8 get the darkest colour


def _surprise_colour(log_prob: float) -> str:
    """White for an expected token (log-prob 0), dark red at ``-SURPRISE_RANGE`` or below."""
    alpha = min(1.0, max(0.0, -log_prob / SURPRISE_RANGE))
    return f"rgba(200,30,30,{alpha:.2f})"


def _legend_bar() -> str:
    steps = "".join(f'<span style="display:inline-block;width:18px;height:12px;'
                    f'background:{_surprise_colour(-k)}"></span>' for k in range(int(SURPRISE_RANGE) + 1))
    return (f'<div style="font-size:12px;margin-bottom:6px">log-prob of each token given the '
            f'text before it: 0 (expected) {steps} &le; &minus;{SURPRISE_RANGE:g} nats '
            f'(surprising). Hover a token for the model\'s top guesses there.</div>')


def _token_span(token: str, style: str, title: str) -> str:
    """A token as an HTML span, its leading space (if any) left outside so shading and boxes
    cover the word only; ``title`` is what hovering shows."""
    word = token.lstrip()
    lead = html_lib.escape(token[: len(token) - len(word)])
    tip = f' title="{html_lib.escape(title)}"' if title else ""
    return f'{lead}<span style="{style};white-space:pre"{tip}>{html_lib.escape(word)}</span>'


def token_logprob_view(model: HookedTransformer, prompt: str, top_k: int = 5) -> View:
    """Show each token of ``prompt`` coloured by the log-prob the model gave it (chapter 00).

    Token ``t`` at position ``p`` gets ``log softmax(logits[p - 1])[t]``: white when expected,
    red when surprising (legend above the text). Hovering a token shows that probability, its
    rank, and the model's ``top_k`` guesses at that position. Plain HTML with no script, so it
    reads the same live, in a saved notebook and in the exported HTML; the text form lists
    the same numbers to 3 significant figures. Returns the view: a cell's last line shows it.
    """
    tokens: Int[Tensor, " pos"] = model.to_tokens(prompt)[0]
    with torch.no_grad():
        log_probs: Float[Tensor, "pos d_vocab"] = model(tokens[None])[0].log_softmax(-1)
    shown = display_tokens(model, tokens)
    spans, lines = [_token_span(shown[0], "color:#888", "")], []
    for p in range(1, len(tokens)):
        guess_lp, guess_ids = log_probs[p - 1].topk(min(top_k, log_probs.shape[-1]))
        lp = float(log_probs[p - 1, tokens[p]])
        rank = int((log_probs[p - 1] > lp).sum())
        guesses = ", ".join(f"{g.strip()} {sig3(math.exp(v))}" for g, v in
                            zip(token_strings(model, guess_ids), guess_lp.tolist()))
        tip = (f"P({shown[p].strip()}) = {sig3(math.exp(lp))}, log-prob {sig3(lp)}, rank {rank}\n"
               f"top guesses: {guesses}")
        spans.append(_token_span(shown[p], f"background:{_surprise_colour(lp)};border-radius:2px", tip))
        lines.append(f"{shown[p].strip():>14} {sig3(lp):>7}  rank {rank}")
    html = (f'<div class="sae-logprobs">{_legend_bar()}<div style="font-family:monospace;'
            f'line-height:1.8">{"".join(spans)}</div></div>')
    return View(html, "log-prob of each token (nats) and its rank among the model's guesses:\n"
                + "\n".join(lines))


# ---------------------------------------------------------------------------------------
# Max-activating contexts (chapter 00; the explorer and dashboards reuse them).


def top_positions(acts: Float[Tensor, "batch seq"], k: int
                  ) -> tuple[Float[Tensor, " k"], Int[Tensor, "k 2"]]:
    """The ``k`` largest entries of ``acts`` and their (sequence, position) indices.

    Ties are broken by position in the flattened array (stable sort), so the result is the
    same on every machine.
    """
    flat = acts.detach().flatten()
    k = min(k, flat.numel())
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    seq_pos = torch.stack([order // acts.shape[1], order % acts.shape[1]], dim=-1)
    return flat[order], seq_pos


def _window(n_pos: int, pos: int, window: int) -> range:
    return range(max(0, pos - window), min(n_pos, pos + window + 1))


def contexts_table(model: HookedTransformer, tokens: Int[Tensor, "batch seq"],
                   values: Float[Tensor, " k"], seq_pos: Int[Tensor, "k 2"],
                   window: int = 8) -> str:
    """Plain-text max-activating contexts: the form that checked cells print (chapter 00).

    One line per context: the activation to 3 significant figures, then up to ``window``
    tokens either side of the activating token, which is written ``[[like this]]``.
    """
    values, seq_pos = values.detach(), seq_pos.detach()
    lines = []
    for value, (seq, pos) in zip(values.tolist(), seq_pos.tolist()):
        strings = token_strings(model, tokens[seq, list(_window(tokens.shape[1], pos, window))])
        centre = min(pos, window)
        strings[centre] = f"[[{strings[centre]}]]"
        lines.append(f"{sig3(value):>7}  {join_tokens(strings)}")
    return "\n".join(lines)


def contexts_html(model: HookedTransformer, tokens: Int[Tensor, "batch seq"],
                  values: Float[Tensor, " k"], seq_pos: Int[Tensor, "k 2"],
                  acts: Float[Tensor, "batch seq"], window: int = 8) -> str:
    """HTML max-activating contexts (chapter 00): one row per context.

    Every token's background is shaded by the latent's activation on it (``acts``, same
    shape as ``tokens``) relative to the largest of ``values``; the activating token is
    boxed; hovering a token shows its activation.
    """
    values, seq_pos, acts = values.detach(), seq_pos.detach(), acts.detach()
    top = max(float(values.max()), 1e-8) if len(values) else 1.0
    rows = []
    for value, (seq, pos) in zip(values.tolist(), seq_pos.tolist()):
        where = list(_window(tokens.shape[1], pos, window))
        cells = []
        for p, text in zip(where, display_tokens(model, tokens[seq, where])):
            act = float(acts[seq, p])
            alpha = round(max(0.0, min(1.0, act / top)), 2)
            border = ";outline:1px solid #000" if p == pos else ""
            cells.append(_token_span(text, f"background:rgba(255,110,0,{alpha}){border}", f"activation {sig3(act)}"))
        rows.append(f'<tr><td style="text-align:right;padding-right:8px">{sig3(value)}</td>'
                    f'<td style="text-align:left;font-family:monospace">{"".join(cells)}</td></tr>')
    return ('<table style="border-collapse:collapse"><tr><th>activation</th>'
            f'<th style="text-align:left">context (shade: activation on each token)</th></tr>'
            f'{"".join(rows)}</table>')


def show_contexts(model: HookedTransformer, tokens: Int[Tensor, "batch seq"],
                  values: Float[Tensor, " k"], seq_pos: Int[Tensor, "k 2"],
                  acts: Float[Tensor, "batch seq"], window: int = 8) -> None:
    """Display max-activating contexts as a shaded HTML table with a text fallback (chapter 00).

    ``acts`` is the latent's activation on every token of ``tokens``: each token is shaded by
    it. A checked cell should print :func:`contexts_table` instead.
    """
    display(View(contexts_html(model, tokens, values, seq_pos, acts, window),
                 contexts_table(model, tokens, values, seq_pos, window)))


# ---------------------------------------------------------------------------------------
# Plotly figures. Each returns the figure; nothing is random. Axes carry titles with
# units, and every hover names what it points at (for a latent: id and label).

FIGURE_STYLE = dict(template="plotly_white", margin=dict(l=60, r=30, t=60, b=50))
# One style in every chapter: a figure that sets no template (a chapter's own go.Figure or
# px call) gets the course's, not plotly's grey default.
pio.templates.default = "plotly_white"


def log_ticks(values: Sequence[float]) -> dict:
    """Axis settings for a log axis over ``values`` with every tick labelled in full (1, 2,
    5 per decade; 1 and 3 over more than three decades): plotly's own labels "2 3 ... 9 100
    2 3" leave the reader to guess whether "3" is 30 or 300. Use as
    ``fig.update_xaxes(**log_ticks(xs))``."""
    positive = [float(v) for v in values if v is not None and float(v) > 0]
    if not positive:
        raise ValueError("a log axis needs positive values")
    lo, hi = min(positive), max(positive)
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    steps = (1, 2, 5) if last - first <= 3 else (1, 3)
    ticks = [m * 10.0 ** e for e in range(first, last + 1) for m in steps]
    inside = [t for t in ticks if lo / 1.5 <= t <= hi * 1.5]
    inside = inside if len(inside) >= 2 else [t for t in ticks if lo / 10 <= t <= hi * 10]
    return dict(type="log", tickvals=inside, ticktext=[f"{t:,.0f}" if t >= 1 else f"{t:g}" for t in inside])


def _numpy(x: Tensor | Sequence[float]):
    return x.detach().cpu().double().numpy() if isinstance(x, Tensor) else list(x)


def _style(fig: go.Figure, title: str, x_title: str, y_title: str, height: int) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=height,
                      **FIGURE_STYLE)
    return fig


def histogram(values: Float[Tensor, " n"], title: str, x_title: str, threshold: float | None = None,
              n_bins: int = 40) -> go.Figure:
    """How many items (e.g. latents) take each value, with an optional threshold line (chapter 00).

    With ``threshold`` the figure marks it and says how many values exceed it: the form for
    questions like "how many latents have AUROC above 0.9?".
    """
    values = torch.as_tensor(values).flatten()
    fig = go.Figure(go.Histogram(x=_numpy(values), nbinsx=n_bins, marker_color="#4c72b0",
                                 hovertemplate="%{x}: %{y} latents<extra></extra>"))
    if threshold is not None:
        above = int((values > threshold).sum())
        fig.add_vline(x=threshold, line_dash="dash", line_color="firebrick",
                      annotation_text=f"{above} above {threshold:g}", annotation_position="top right")
    return _style(fig, title, x_title, "count", 360)


def bar(values: Float[Tensor, " n"], labels: Sequence[str], title: str, x_title: str,
        y_title: str, hover: Sequence[str] | None = None) -> go.Figure:
    """Vertical bars of ``values`` named by ``labels`` (chapter 01: effect per head, per input).

    Bars are red below zero and blue above; ``hover`` (default: the label) names each bar.
    """
    v = _numpy(torch.as_tensor(values).flatten())
    fig = go.Figure(go.Bar(x=list(labels), y=v, marker_color=["#c44e52" if x < 0 else "#4c72b0" for x in v],
                           customdata=list(hover or labels),
                           hovertemplate="%{customdata}: %{y:.3g}<extra></extra>"))
    fig.update_xaxes(type="category")
    return _style(fig, title, x_title, y_title, 340)


def top_latents_bar(effects: Float[Tensor, "batch n"], names: Sequence[str], k: int, title: str,
                    value_title: str) -> go.Figure:
    """The ``k`` latents with the largest mean |effect|, as horizontal bars (chapter 01).

    For sweeps where most latents do almost nothing: a bar per latent (its mean over the
    batch, largest |mean| at the top) and a dot per prompt, so spread and sign stay visible.
    ``names[i]`` names column ``i`` (id and label); the title says how many were left out.
    """
    effects = torch.as_tensor(effects).detach().double().reshape(-1, len(names))
    mean = effects.mean(0)
    order = mean.abs().argsort(descending=True, stable=True)[:k].flip(0)  # plotly draws bottom-up
    shown = [names[i] for i in order.tolist()]
    fig = go.Figure(go.Bar(y=shown, x=_numpy(mean[order]), orientation="h", name="mean over prompts",
                           marker_color=["#c44e52" if x < 0 else "#4c72b0" for x in mean[order].tolist()],
                           hovertemplate="%{y}<br>mean: %{x:.3g}<extra></extra>"))
    points = effects[:, order]  # [batch, k]
    fig.add_trace(go.Scatter(y=[n for _ in range(points.shape[0]) for n in shown], x=_numpy(points.flatten()),
                             mode="markers", name="one prompt", marker=dict(color="black", size=5, opacity=0.5),
                             customdata=[b for b in range(points.shape[0]) for _ in shown],
                             hovertemplate="%{y}<br>prompt %{customdata}: %{x:.3g}<extra></extra>"))
    fig.update_yaxes(type="category")
    rest = len(names) - len(shown)
    return _style(fig, f"{title}<br><sup>top {len(shown)} of {len(names)} latents by |mean|; "
                       f"{rest} others not shown</sup>", value_title, "latent", 120 + 28 * len(shown))


def scatter_with_diagonal(x: Float[Tensor, " n"], y: Float[Tensor, " n"], hover: Sequence[str],
                          title: str, x_title: str, y_title: str, points: str = "(prompt, latent)") -> go.Figure:
    """Scatter of ``y`` against ``x`` on equal axes with the line y = x (chapter 01).

    Both axes share one range and scale, so y = x runs at 45 degrees and a point's distance
    from it is the estimate's error. Pearson r is under the title; ``hover[i]`` names point
    i; ``points`` says in the legend what a point is.
    """
    x, y = torch.as_tensor(x).flatten().double(), torch.as_tensor(y).flatten().double()
    lo, hi = float(torch.minimum(x.min(), y.min())), float(torch.maximum(x.max(), y.max()))
    pad = 0.05 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    fig = go.Figure([
        go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x (exact)",
                   line=dict(dash="dash", color="grey"), hoverinfo="skip"),
        go.Scatter(x=_numpy(x), y=_numpy(y), mode="markers", customdata=list(hover), name=points,
                   marker=dict(color="#4c72b0", size=6, opacity=0.7),
                   hovertemplate="%{customdata}<br>x: %{x:.3g}<br>y: %{y:.3g}<extra></extra>"),
    ])
    fig.update_xaxes(range=[lo, hi], constrain="domain")
    fig.update_yaxes(range=[lo, hi], scaleanchor="x", scaleratio=1, constrain="domain")
    fig = _style(fig, "", x_title, y_title, 600)
    fig.update_layout(width=720, legend=dict(x=0.02, y=0.98), margin=dict(t=80),
                      title=dict(text=title, font=dict(size=15), subtitle=dict(text=f"Pearson r = {sig3(pearson(x, y))}")))
    return fig


def heatmap(z: Float[Tensor, "rows cols"], x_labels: Sequence[str], y_labels: Sequence[str],
            title: str, x_title: str, y_title: str, colorbar_title: str) -> go.Figure:
    """A heatmap on a diverging scale centred on 0 (chapters 01, 03, 05: effect per node).

    Use it when most cells matter; when most columns are about zero, :func:`top_latents_bar`
    reads better. Hover names the row and column labels (give latents as id and label).
    """
    fig = go.Figure(go.Heatmap(z=_numpy(z), x=list(x_labels), y=list(y_labels), colorscale="RdBu",
                               zmid=0.0, colorbar=dict(title=colorbar_title),
                               hovertemplate="%{y}, %{x}: %{z:.3g}<extra></extra>"))
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    return _style(fig, title, x_title, y_title, 120 + 40 * len(y_labels))


def edge_graph(columns: Sequence[Sequence[str]], edges: Sequence[tuple[int, int, int, int, float]],
               column_titles: Sequence[str], title: str, weight_title: str) -> go.Figure:
    """A small left-to-right graph of weighted edges between nodes in columns (chapter 01).

    ``columns[c]`` lists the node names of column ``c`` (e.g. latents of one layer, or
    tokens); an edge ``(c0, i0, c1, i1, w)`` joins node ``i0`` of column ``c0`` to node ``i1``
    of column ``c1``. Line width grows with ``|w|``; blue is positive, red negative; hover a
    node or an edge's midpoint to read it. Chapters 03 and 05 draw circuits the same way.
    """
    def where(c: int, i: int) -> tuple[float, float]:
        n = len(columns[c])
        return float(c), (n - 1) / 2 - i  # centred vertically

    top = max((abs(w) for *_, w in edges), default=1.0) or 1.0
    fig = go.Figure()
    mids_x, mids_y, mids_text = [], [], []
    for c0, i0, c1, i1, w in edges:
        (x0, y0), (x1, y1) = where(c0, i0), where(c1, i1)
        fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="skip", showlegend=False,
                                 line=dict(width=1 + 7 * abs(w) / top, color="#4c72b0" if w >= 0 else "#c44e52"),
                                 opacity=0.4 + 0.5 * abs(w) / top))
        mids_x.append((x0 + x1) / 2)
        mids_y.append((y0 + y1) / 2)
        mids_text.append(f"{columns[c0][i0]} → {columns[c1][i1]}<br>{weight_title}: {sig3(w)}")
    fig.add_trace(go.Scatter(x=mids_x, y=mids_y, mode="markers", marker=dict(size=10, opacity=0),
                             customdata=mids_text, hovertemplate="%{customdata}<extra></extra>",
                             showlegend=False))
    xs, ys, names = zip(*[(*where(c, i), name) for c, col in enumerate(columns) for i, name in enumerate(col)])
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+text", text=list(names), textposition="top center",
                             marker=dict(size=14, color="white", line=dict(color="black", width=1.5)),
                             hovertemplate="%{text}<extra></extra>", showlegend=False))
    span = max(len(col) for col in columns)
    fig.update_xaxes(tickvals=list(range(len(columns))), ticktext=list(column_titles),
                     range=[-0.5, len(columns) - 0.5], showgrid=False, zeroline=False)
    fig.update_yaxes(visible=False, range=[-span / 2 - 0.3, span / 2 + 0.2])
    return _style(fig, f"{title}<br><sup>line width: |{weight_title}|; blue positive, red negative</sup>",
                  "", "", 160 + 60 * span)
