"""The explanation table: an offline stand-in for Neuronpedia.

For every latent of every dictionary one row (a plain dict, saved as JSON):

- ``dictionary``, ``kind``, ``latent``;
- ``label``, ``auroc``: the planted label its activation separates best (AUROC over
  held-out corpus tokens), i.e. our ground-truth explanation and how well it fits;
- ``precision``: the share of the latent's activation mass on tokens with that label
  (``report.activation_precision``). Read it beside the AUROC: a latent can rank every
  labelled token above most others (AUROC near 1) and still spend most of its activation
  elsewhere (low precision);
- ``frequency``, ``max_activation``: how often it fires (share of tokens) and how strongly;
- ``top_contexts``: the text before and after its strongest activations, with the
  activating token marked as ``[[token]]``;
- ``top_tokens``: the tokens its decoder direction promotes most, the top entries of
  ``W_dec[i] @ W_U`` (for an attention SAE, ``W_dec[i]`` is first mapped through ``W_O``).

>>> table = ExplanationTable.load(path)            # doctest: +SKIP
>>> table.lookup("blocks.0.hook_resid_post", 3)    # doctest: +SKIP
>>> table.search("country")[:3]                    # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path

import einops
import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.toy.dictionaries import DictionarySpec
from utils.metrics import activation_precision, auroc
from utils.toy.report import DictionaryReading, firing_frequency, read_dictionary

N_CONTEXTS, N_TOKENS, WINDOW = 5, 5, (8, 2)


class ExplanationTable:
    """Rows of latent explanations, searchable by dictionary and latent or by keyword."""

    def __init__(self, rows: list[dict]):
        self.rows = rows
        self._index = {(r["dictionary"], r["latent"]): r for r in rows}

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"ExplanationTable({len(self.rows)} latents in {len(self.dictionaries)} dictionaries)"

    @property
    def dictionaries(self) -> list[str]:
        return sorted({r["dictionary"] for r in self.rows})

    def lookup(self, dictionary: str, latent: int) -> dict:
        """The row of ``latent`` in ``dictionary`` (a hook name, or ``transcoder.{L}``)."""
        key = (dictionary, int(latent))
        if key not in self._index:
            raise KeyError(f"no latent {latent} in {dictionary!r}; dictionaries: "
                           f"{self.dictionaries}")
        return self._index[key]

    def search(self, keyword: str, min_auroc: float = 0.0) -> list[dict]:
        """Rows whose label, top tokens or contexts mention ``keyword`` (case-insensitive),
        best AUROC first."""
        keyword = keyword.lower()

        def matches(row: dict) -> bool:
            text = " ".join([row["label"], *row["top_tokens"], *row["top_contexts"]])
            return keyword in text.lower() and row["auroc"] >= min_auroc

        return sorted(filter(matches, self.rows), key=lambda r: -r["auroc"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.rows, separators=(",", ":")))

    @classmethod
    def load(cls, path: str | Path) -> "ExplanationTable":
        return cls(json.loads(Path(path).read_text()))


def promoted_tokens(model: HookedSAETransformer, sae: SAE, spec: DictionarySpec,
                    k: int = N_TOKENS) -> Int[Tensor, "d_sae k"]:
    """Top-k token ids of each latent's direct effect on the logits, W_dec @ W_U."""
    with torch.no_grad():
        W_dec = sae.W_dec
        if spec.kind == "attn_sae":
            W_O = model.blocks[spec.layer].attn.W_O  # [head, d_head, d_model]
            W_dec = einops.einsum(
                einops.rearrange(W_dec, "s (h d) -> s h d", h=W_O.shape[0]), W_O,
                "s h d, h d m -> s m")
        return (W_dec @ model.W_U).topk(k, dim=-1).indices


def top_contexts(model: HookedSAETransformer, tokens: Int[Tensor, "batch pos"],
                 acts: Float[Tensor, "batch pos"], k: int = N_CONTEXTS) -> list[str]:
    """The windows around a latent's k strongest activations (at most one per sequence)."""
    best_per_seq, where = acts.max(-1)
    contexts = []
    for seq in best_per_seq.topk(k).indices.tolist():
        if best_per_seq[seq] <= 0:
            break
        pos = int(where[seq])
        words = model.to_str_tokens(tokens[seq, max(0, pos - WINDOW[0]):pos + WINDOW[1] + 1])
        mark = min(pos, WINDOW[0])
        words[mark] = f"[[{words[mark]}]]"
        contexts.append(" ".join(words))
    return contexts


def explain(model: HookedSAETransformer, sae: SAE, spec: DictionarySpec,
            reading: DictionaryReading, tokens: Int[Tensor, "batch pos"],
            labels: dict[str, Tensor]) -> list[dict]:
    """One row per latent of ``sae`` (see the module docstring)."""
    label_mask = torch.stack(list(labels.values()), dim=1)
    scores = auroc(reading.latents, label_mask)
    precision = activation_precision(reading.latents, label_mask)
    frequency = firing_frequency(reading.latents)
    names = list(labels)
    per_seq = einops.rearrange(reading.latents, "(b p) s -> s b p", b=tokens.shape[0])
    promoted = promoted_tokens(model, sae, spec)
    rows = []
    for i in range(sae.cfg.d_sae):
        best = int(scores[:, i].argmax())
        rows.append({
            "dictionary": spec.name, "kind": spec.kind, "latent": i,
            "label": names[best], "auroc": round(scores[best, i].item(), 4),
            "precision": round(precision[best, i].item(), 4),
            "frequency": round(frequency[i].item(), 5),
            "max_activation": round(reading.latents[:, i].max().item(), 4),
            "top_contexts": top_contexts(model, tokens, per_seq[i]),
            "top_tokens": model.to_str_tokens(promoted[i]),
        })
    return rows


def explanation_table(model: HookedSAETransformer, dictionaries: dict[str, SAE],
                      specs: list[DictionarySpec], tokens: Int[Tensor, "batch pos"],
                      labels: dict[str, Tensor]) -> ExplanationTable:
    """Explain every latent of every dictionary on the corpus ``tokens`` (flat ``labels``)."""
    rows = []
    for spec in specs:
        reading = read_dictionary(model, dictionaries[spec.name], spec, tokens)
        rows += explain(model, dictionaries[spec.name], spec, reading, tokens, labels)
    return ExplanationTable(rows)
