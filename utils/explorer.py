"""An interactive latent explorer (chapter 00), with a plain-text twin for checked cells.

:func:`latent_explorer` is an ipywidgets app: pick a prompt and a residual SAE, see the
most active latents at every position, click one to see the tokens its decoder direction
promotes (``W_dec[latent] @ W_U``) and its max-activating contexts over a corpus.

Widgets need a live kernel, and their output carries random model ids, so the notebook
cell that calls :func:`latent_explorer` must start with ``# NBVAL_IGNORE_OUTPUT``. The next
cell should print :func:`explorer_summary` for one (prompt, hook, latent): the same content
as text, rounded to 3 significant figures, which nbval checks.
"""
from __future__ import annotations

import html as html_lib
from dataclasses import dataclass

import ipywidgets as widgets
import torch
from IPython.display import clear_output, display
from jaxtyping import Float, Int
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from utils.views import (RUN_TO_EXPLORE, WEAK_AUROC, contexts_html, contexts_table, latent_label, sig3,
                         token_strings)

CORPUS = dict(n_seqs=256, seq_len=32, seed=0)  # the corpus the contexts come from
TOP_PER_POSITION = 3
TOP_TOKENS = 10
TOP_CONTEXTS = 8
WINDOW = 6
FADED = "color:#999;font-style:italic"  # how a weak label is shown


# ---------------------------------------------------------------------------------------
# The computations behind the app.


def sae_acts(model: HookedTransformer, sae: SAE, tokens: Int[Tensor, "batch seq"]
             ) -> Float[Tensor, "batch seq d_sae"]:
    """Latent activations of ``sae`` on ``tokens`` (works with or without SAEs spliced in)."""
    hook = sae.cfg.metadata.hook_name
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in (hook, f"{hook}.hook_sae_input"))
        resid = cache[hook] if hook in cache else cache[f"{hook}.hook_sae_input"]
        return sae.encode(resid)


def promoted_tokens(model: HookedTransformer, sae: SAE, latent: int, k: int = TOP_TOKENS
                    ) -> list[tuple[str, float]]:
    """The ``k`` tokens whose logits the latent's decoder direction raises most: ``W_dec[latent] @ W_U``."""
    with torch.no_grad():
        logits: Float[Tensor, " d_vocab"] = sae.W_dec[latent] @ model.W_U
    values, ids = torch.sort(logits, descending=True, stable=True)
    strings = token_strings(model, ids[:k])
    return list(zip(strings, values[:k].tolist()))


@dataclass
class CorpusContexts:
    """Each latent's top-``k`` activations over a corpus, with the sequences they sit in."""

    values: Float[Tensor, "d_sae k"]
    seq_pos: Int[Tensor, "d_sae k 2"]
    tokens: Int[Tensor, "d_sae k seq"]
    acts: Float[Tensor, "d_sae k seq"]

    def of(self, latent: int) -> tuple[Int[Tensor, "k seq"], Float[Tensor, "k seq"],
                                       Float[Tensor, " k"], Int[Tensor, "k 2"]]:
        """The latent's context sequences, its activations on them, and its positive top
        activations with their (row in those sequences, position)."""
        keep = self.values[latent] > 0
        rows = torch.arange(int(keep.sum()))
        seq_pos = torch.stack([rows, self.seq_pos[latent][keep][:, 1]], dim=-1)
        return (self.tokens[latent][keep], self.acts[latent][keep],
                self.values[latent][keep], seq_pos)


_CONTEXTS: dict[tuple[int, str, tuple[tuple[int, ...], int] | None], CorpusContexts] = {}  # (model, hook, corpus)


def corpus_tokens(bk) -> Int[Tensor, "batch seq"]:
    """The explorer's corpus: ``bk.world.corpus(**CORPUS).tokens`` (toy backend only)."""
    if bk.world is None:
        raise ValueError(f"backend {bk.name!r} has no data generator: pass corpus=tokens")
    return bk.world.corpus(**CORPUS).tokens


def corpus_contexts(bk, hook: str, corpus: Int[Tensor, "batch seq"] | None = None,
                    k: int = TOP_CONTEXTS) -> CorpusContexts:
    """Top-``k`` activations of every latent of ``bk.saes[hook]`` over the corpus (cached).

    Computed once per (model, hook) and process; ties are broken by corpus position.
    """
    key = (id(bk.model), hook, None if corpus is None else (tuple(corpus.shape), int(corpus.sum())))
    if key not in _CONTEXTS:
        tokens = corpus_tokens(bk) if corpus is None else corpus
        n_pos = tokens.shape[1]
        acts: Float[Tensor, "d_sae batch seq"] = sae_acts(bk.model, bk.saes[hook], tokens).permute(2, 0, 1)
        flat: Float[Tensor, "d_sae batch_seq"] = acts.flatten(1)
        order = torch.sort(flat, dim=-1, descending=True, stable=True).indices[:, :k]
        seq_pos = torch.stack([order // n_pos, order % n_pos], dim=-1)
        rows = seq_pos[..., 0, None].expand(-1, -1, n_pos)  # [d_sae k seq]
        _CONTEXTS[key] = CorpusContexts(
            values=flat.gather(-1, order), seq_pos=seq_pos,
            tokens=tokens[seq_pos[..., 0]], acts=acts.gather(1, rows))
    return _CONTEXTS[key]


def active_latents(bk, prompt: str, hook: str, k: int = TOP_PER_POSITION
                   ) -> list[tuple[str, list[tuple[int, float]]]]:
    """For each position of ``prompt``: its token and up to ``k`` (latent, activation), largest first."""
    tokens = bk.model.to_tokens(prompt)
    acts: Float[Tensor, "pos d_sae"] = sae_acts(bk.model, bk.saes[hook], tokens)[0]
    rows = []
    for token, pos_acts in zip(token_strings(bk.model, tokens[0]), acts):
        values, latents = torch.sort(pos_acts, descending=True, stable=True)
        rows.append((token, [(int(i), float(v)) for i, v in zip(latents[:k], values[:k]) if v > 0]))
    return rows


# ---------------------------------------------------------------------------------------
# Plain-text form, for checked cells.


def _positions_text(rows: list[tuple[str, list[tuple[int, float]]]]) -> str:
    lines = []
    for pos, (token, latents) in enumerate(rows):
        found = ", ".join(f"#{i} ({sig3(v)})" for i, v in latents) or "-"
        lines.append(f"  {pos:>3} {token:<14} {found}")
    return "\n".join(lines)


def latent_text(bk, hook: str, latent: int, corpus: Int[Tensor, "batch seq"] | None = None) -> str:
    """A latent's promoted tokens and max-activating contexts, as text."""
    tokens = ", ".join(f"{t} ({sig3(v)})" for t, v in promoted_tokens(bk.model, bk.saes[hook], latent))
    tokens_k, _, values, seq_pos = corpus_contexts(bk, hook, corpus).of(latent)
    contexts = contexts_table(bk.model, tokens_k, values, seq_pos, WINDOW) or "  (never active)"
    label = latent_label(bk, hook, latent)
    label = f"explanation: {label}\n" if label else ""
    return (f"latent #{latent} at {hook}\n{label}promoted tokens: {tokens}\n"
            f"max-activating contexts:\n{contexts}")


def explorer_summary(bk, prompt: str, hook: str, latent: int,
                     corpus: Int[Tensor, "batch seq"] | None = None) -> str:
    """What :func:`latent_explorer` shows for one choice, as deterministic text (chapter 00).

    The top latents at each position of ``prompt`` (activations to 3 significant figures),
    then ``latent``'s promoted tokens and max-activating contexts.
    """
    rows = active_latents(bk, prompt, hook)
    return (f"prompt: {prompt}\nactive latents at {hook} (top {TOP_PER_POSITION} per position):\n"
            f"{_positions_text(rows)}\n{latent_text(bk, hook, latent, corpus)}")


# ---------------------------------------------------------------------------------------
# The widget app.


def _weak(bk, hook: str, latent: int) -> bool:
    """True when the latent's label is missing or below :data:`utils.views.WEAK_AUROC`."""
    try:
        return bk.explanations.lookup(hook, latent)["auroc"] < WEAK_AUROC
    except (AttributeError, KeyError):
        return True


def _latent_detail(bk, hook: str, latent: int, corpus) -> widgets.Widget:
    """The right-hand panel: label, promoted tokens, and contexts as a shaded HTML table."""
    tokens = ", ".join(f"{t} ({sig3(v)})" for t, v in promoted_tokens(bk.model, bk.saes[hook], latent))
    tokens_k, acts_k, values, seq_pos = corpus_contexts(bk, hook, corpus).of(latent)
    table = (contexts_html(bk.model, tokens_k, values, seq_pos, acts_k, WINDOW)
             if len(values) else "<i>never active on the corpus</i>")
    label, style = latent_label(bk, hook, latent), FADED if _weak(bk, hook, latent) else ""
    label = (f'<br><b>explanation:</b> <span style="{style}">{html_lib.escape(label)}</span>'
             if label else "")
    return widgets.HTML(f"<b>latent #{latent}</b> at {hook}{label}<br><b>promoted tokens:</b> "
                        f"{html_lib.escape(tokens)}"
                        f"<br><b>max-activating contexts:</b>{table}")


class _WithFallback:
    """Displays a widget with a static HTML and text summary beside it in the output bundle.

    A live notebook shows the widget; a saved notebook opened without its kernel (or a
    renderer without widgets: GitHub, the HTML export) shows the summary instead of
    ``VBox(children=...)``.
    """

    NOTE = f"Latent explorer (an interactive widget). {RUN_TO_EXPLORE} What it first shows:"

    def __init__(self, widget: widgets.Widget, text: str):
        self.widget, self.text = widget, text

    def _repr_mimebundle_(self, **kwargs) -> dict:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)
        bundle["text/html"] = f"<p><i>{html_lib.escape(self.NOTE)}</i></p><pre>{html_lib.escape(self.text)}</pre>"
        return bundle

    def __repr__(self) -> str:
        return f"{self.NOTE}\n{self.text}"


def latent_explorer(bk, prompts: list[str], hook: str | None = None, latent: int | None = None,
                    corpus: Int[Tensor, "batch seq"] | None = None) -> widgets.Widget:
    """An ipywidgets app to browse the latents of ``bk.saes`` on ``prompts`` (chapter 00).

    Left: the prompt's tokens, each with buttons for its most active latents (id, label
    where the backend has one, activation; weak labels faded). Clicking a button shows, on
    the right, that latent's explanation, promoted tokens and max-activating contexts over
    ``bk.world.corpus(**CORPUS)`` (or ``corpus``), computed once per SAE and cached. It opens
    on SAE ``hook`` (default: the first) showing ``latent`` if given, so it can match the
    text beside it. The cell must carry ``# NBVAL_IGNORE_OUTPUT``; print
    :func:`explorer_summary` in a checked cell instead. Returns the app (already displayed,
    with that summary as its static fallback).
    """
    hooks = sorted(bk.saes, key=lambda h: (len(h), h))
    hook = hook or hooks[0]
    if hook not in bk.saes:
        raise ValueError(f"hook {hook!r} has no SAE: expected one of {hooks}")
    wide = {"description_width": "initial"}
    prompt_box = widgets.Dropdown(options=prompts, value=prompts[0], description="prompt", style=wide,
                                  layout=widgets.Layout(width="62%"))
    hook_box = widgets.Dropdown(options=hooks, value=hook, description="SAE", style=wide,
                                layout=widgets.Layout(width="32%"))
    positions = widgets.VBox(layout=widgets.Layout(width="48%"))
    detail = widgets.Output(layout=widgets.Layout(width="52%", padding="0 0 0 12px"))

    def show_latent(hook: str, latent: int) -> None:
        with detail:
            clear_output(wait=True)
            display(_latent_detail(bk, hook, latent, corpus))

    def latent_button(hook: str, latent: int, value: float) -> widgets.Button:
        label = latent_label(bk, hook, latent).split(" (")[0]
        button = widgets.Button(description=f"#{latent} {label} {sig3(value)}".replace("  ", " "),
                                tooltip=f"latent #{latent}: {latent_label(bk, hook, latent) or 'no label'}; "
                                        f"activation {sig3(value)}",
                                layout=widgets.Layout(width="auto", flex="0 0 auto", margin="1px"))
        button.style.text_color = "#999" if _weak(bk, hook, latent) else "#000"
        button.on_click(lambda _: show_latent(hook, latent))
        return button

    def refresh(_=None) -> None:
        hook, rows = hook_box.value, active_latents(bk, prompt_box.value, hook_box.value)
        lines = []
        for token, latents in rows:
            label = widgets.Label(token, layout=widgets.Layout(width="90px", flex="0 0 auto"))
            buttons = [latent_button(hook, i, v) for i, v in latents]
            lines.append(widgets.HBox([label, *buttons], layout=widgets.Layout(flex_flow="row wrap")))
        positions.children = lines
        with detail:
            clear_output()
            print("click a latent to see its explanation, promoted tokens and contexts")

    prompt_box.observe(refresh, names="value")
    hook_box.observe(refresh, names="value")
    refresh()
    if latent is not None:
        show_latent(hook, latent)
    app = widgets.VBox([widgets.HBox([prompt_box, hook_box]), widgets.HBox([positions, detail])])
    display(_WithFallback(app, explorer_summary(bk, prompts[0], hook, latent, corpus)
                          if latent is not None else f"prompt: {prompts[0]}\n"
                          f"{_positions_text(active_latents(bk, prompts[0], hook))}"))
    return app
