"""Views: HTML and plotly figures that chapters show, kept out of the committed notebooks.

Rich views (circuitsvis, sae-vis) inline large scripts. Outside Colab, :func:`show_html`
writes them to ``_views/{name}.html`` beside the running notebook and displays a small
iframe, so a committed notebook stays far below 2 MB. Every view also has a plain-text
form that prints the same content rounded to 3 significant figures: that is what checked
notebook cells print, so nbval compares numbers, never random ids.

Chapter 00 introduces :func:`show_html`, :func:`token_logprob_view` and the max-activating
contexts table; chapters 01-05 use the plotly helpers (:func:`heatmap`,
:func:`scatter_with_diagonal`, :func:`bar`).
"""
from __future__ import annotations

import html as html_lib
import sys
from pathlib import Path
from typing import Sequence

import plotly.graph_objects as go
import torch
from IPython.display import HTML, IFrame, display
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

VIEWS_DIR = "_views"


# ---------------------------------------------------------------------------------------
# Small shared helpers.


def sig3(x: float) -> str:
    """``x`` rounded to 3 significant figures, the precision of every checked printout."""
    text = f"{float(x):.3g}"
    return "0" if text in ("-0", "0") else text


def in_colab() -> bool:
    """True inside Google Colab, where views are inlined instead of written to files."""
    return "google.colab" in sys.modules


def token_strings(model: HookedTransformer, tokens: Int[Tensor, "pos"] | Sequence[int]
                  ) -> list[str]:
    """One printable string per token id (``<id>`` when the model has no tokenizer)."""
    ids = [int(t) for t in tokens]
    if model.tokenizer is None:
        return [f"<{i}>" for i in ids]
    return [model.tokenizer.decode([i]) for i in ids]


def join_tokens(strings: Sequence[str]) -> str:
    """Join token strings: word-level tokens with spaces, BPE tokens (leading spaces) as is."""
    if any(s[:1].isspace() for s in strings):
        return "".join(strings)
    return " ".join(strings)


# ---------------------------------------------------------------------------------------
# Showing HTML (chapter 00 onwards).


class ViewFrame(IFrame):
    """An IFrame whose plain-text form is its path, so nbval sees no memory address."""

    def __repr__(self) -> str:
        return f"view: {self.src}"


def view_path(name: str) -> Path:
    """Where :func:`show_html` writes view ``name``: ``./_views/{name}.html``."""
    return Path.cwd() / VIEWS_DIR / f"{name}.html"


def show_html(html: str, name: str, height: int = 420) -> None:
    """Display a large HTML view without storing it in the notebook (chapter 00).

    In Colab the HTML is displayed inline (Colab notebooks are not committed). Elsewhere it
    is written to ``_views/{name}.html`` under the working directory (the notebook's folder,
    ``chapters/``) and shown through a small iframe; the cell output is then a few hundred
    bytes and the same on every run.
    """
    if in_colab():
        display(HTML(html))
        return
    path = view_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    display(ViewFrame(f"{VIEWS_DIR}/{name}.html", width="100%", height=height))


# ---------------------------------------------------------------------------------------
# Token log-prob view (chapter 00).


def token_logprob_view(model: HookedTransformer, prompt: str, name: str) -> None:
    """Show the model's next-token log-probs on ``prompt`` with circuitsvis (chapter 00).

    Each token is coloured by the log-prob the model gave it; hovering shows the model's
    top-10 guesses at that position and the true token's rank.
    """
    import circuitsvis as cv

    tokens: Int[Tensor, "pos"] = model.to_tokens(prompt)[0]
    with torch.no_grad():
        log_probs: Float[Tensor, "pos d_vocab"] = model(tokens[None])[0].log_softmax(-1)
    view = cv.logits.token_log_probs(tokens, log_probs,
                                     to_string=lambda i: token_strings(model, [i])[0],
                                     top_k=min(10, model.cfg.d_vocab))
    # Colab is online: the CDN form is tiny. Offline we must inline the bundle (1.3 MB).
    show_html(view.cdn_src if in_colab() else view.local_src, name)


# ---------------------------------------------------------------------------------------
# Max-activating contexts (chapter 00; the explorer and dashboards reuse them).


def top_positions(acts: Float[Tensor, "batch seq"], k: int
                  ) -> tuple[Float[Tensor, "k"], Int[Tensor, "k 2"]]:
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
                   values: Float[Tensor, "k"], seq_pos: Int[Tensor, "k 2"],
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
                  values: Float[Tensor, "k"], seq_pos: Int[Tensor, "k 2"], window: int = 8,
                  acts: Float[Tensor, "batch seq"] | None = None) -> str:
    """HTML max-activating contexts (chapter 00): one row per context.

    The activating token is boxed; each token's background is shaded by its activation
    relative to the largest of ``values`` (only the activating token when ``acts`` is None).
    """
    values, seq_pos = values.detach(), seq_pos.detach()
    acts = acts.detach() if acts is not None else None
    top = max(float(values.max()), 1e-8) if len(values) else 1.0
    rows = []
    for value, (seq, pos) in zip(values.tolist(), seq_pos.tolist()):
        cells = []
        for p in _window(tokens.shape[1], pos, window):
            text = html_lib.escape(token_strings(model, tokens[seq, p:p + 1])[0])
            act = float(acts[seq, p]) if acts is not None else (value if p == pos else 0.0)
            alpha = round(max(0.0, min(1.0, act / top)), 2)
            border = "border:1px solid #000;" if p == pos else ""
            cells.append(f'<span style="background:rgba(255,110,0,{alpha});{border}'
                         f'padding:0 2px" title="{sig3(act)}">{text}</span>')
        rows.append(f'<tr><td style="text-align:right;padding-right:8px">{sig3(value)}</td>'
                    f'<td style="text-align:left;font-family:monospace">{" ".join(cells)}</td></tr>')
    return ('<table style="border-collapse:collapse"><tr><th>activation</th>'
            f'<th style="text-align:left">context</th></tr>{"".join(rows)}</table>')


class ContextsView:
    """Displays as the HTML table in Jupyter and as the plain-text table everywhere else."""

    def __init__(self, html: str, text: str):
        self.html, self.text = html, text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


def show_contexts(model: HookedTransformer, tokens: Int[Tensor, "batch seq"],
                  values: Float[Tensor, "k"], seq_pos: Int[Tensor, "k 2"], window: int = 8,
                  acts: Float[Tensor, "batch seq"] | None = None) -> None:
    """Display max-activating contexts as an HTML table with a plain-text fallback (chapter 00).

    The table is small, so it stays inline. nbval compares both forms; the shading is rounded
    to 2 decimals, but a checked cell is safest printing :func:`contexts_table` instead.
    """
    display(ContextsView(contexts_html(model, tokens, values, seq_pos, window, acts),
                         contexts_table(model, tokens, values, seq_pos, window)))


# ---------------------------------------------------------------------------------------
# Plotly helpers (chapters 01-05). Each returns the figure; nothing is random.


def _numpy(x: Tensor | Sequence[float]):
    return x.detach().cpu().float().numpy() if isinstance(x, Tensor) else list(x)


def heatmap(z: Float[Tensor, "rows cols"], x_labels: Sequence[str], y_labels: Sequence[str],
            title: str) -> go.Figure:
    """A heatmap on a diverging scale centred on 0 (chapters 01, 03, 05: effects per node)."""
    fig = go.Figure(go.Heatmap(z=_numpy(z), x=list(x_labels), y=list(y_labels),
                               colorscale="RdBu", zmid=0.0))
    fig.update_layout(title=title, yaxis_autorange="reversed")
    return fig


def pearson(x: Float[Tensor, "n"], y: Float[Tensor, "n"]) -> float:
    """Pearson correlation of ``x`` and ``y`` (0 when either is constant)."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denom = float(x.norm() * y.norm())
    return float((x * y).sum()) / denom if denom > 0 else 0.0


def scatter_with_diagonal(x: Float[Tensor, "n"], y: Float[Tensor, "n"], labels: Sequence[str],
                          title: str) -> go.Figure:
    """Scatter of ``y`` against ``x`` with the line y = x and Pearson r in the title.

    Chapter 01 plots attribution patching (y) against true ablation (x) this way.
    """
    x, y = torch.as_tensor(x).flatten(), torch.as_tensor(y).flatten()
    lo = float(torch.minimum(x.min(), y.min()))
    hi = float(torch.maximum(x.max(), y.max()))
    fig = go.Figure([
        go.Scatter(x=_numpy(x), y=_numpy(y), mode="markers", text=list(labels), name="points"),
        go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x",
                   line=dict(dash="dash", color="grey")),
    ])
    fig.update_layout(title=f"{title} (Pearson r = {sig3(pearson(x, y))})")
    return fig


def bar(values: Float[Tensor, "n"], labels: Sequence[str], title: str) -> go.Figure:
    """A bar chart of ``values`` named by ``labels`` (chapters 00-04: logits, effects)."""
    fig = go.Figure(go.Bar(x=list(labels), y=_numpy(torch.as_tensor(values).flatten())))
    fig.update_layout(title=title)
    return fig
