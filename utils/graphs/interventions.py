"""Interventions on the real model, to test what an attribution graph predicts (chapter 05).

:func:`intervene` sets transcoder latents to new values and reruns the model, with
attention and norms free or frozen at a prompt's values; :func:`swap_edits` builds the edits
of a cross-prompt swap; :func:`generate_with` continues a prompt with edits applied.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor

from utils.graphs.replacement import LocalReplacement, freezing_hooks
from utils.nodes import Node
from utils.nodes import transcoder_layer


def intervene(model: HookedSAETransformer, transcoders: Sequence[SAE], tokens: Int[Tensor, "batch pos"],
              edits: Sequence[tuple[Node, float]], frozen: dict[str, Tensor] | None = None) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits with transcoder latents set to new values: for each ``(Node("transcoder", L,
    pos, i), value)`` the MLP output of layer ``L`` at ``pos`` gains ``(value - f_i) W_dec[i]``,
    where ``f_i`` is the latent's activation *on the current input* (so the MLP's own error
    term is kept, and every later layer responds). With ``frozen`` (a replacement model's
    frozen scales and patterns, batch 1) attention and norms stay as on the original prompt;
    without, they are free."""
    by_layer = {transcoder_layer(tc): tc for tc in transcoders}
    wanted: dict[int, list[tuple[int, int, float]]] = {}
    for node, value in edits:
        if node.kind != "transcoder" or node.is_error:
            raise ValueError(f"only transcoder latents can be set, got {node}")
        wanted.setdefault(node.layer, []).append((node.pos, int(node.index), float(value)))
    inputs: dict[int, Tensor] = {}

    def keep(layer: int) -> Callable[..., None]:
        def hook(x: Tensor, hook: Any) -> None:
            inputs[layer] = x
        return hook

    def edit(layer: int) -> Callable[..., Tensor]:
        def hook(out: Tensor, hook: Any) -> Tensor:
            tc = by_layer[layer]
            acts = tc.encode(inputs[layer])
            new = acts.clone()
            for pos, i, value in wanted[layer]:
                new[:, pos, i] = value
            return out + (new - acts) @ tc.W_dec
        return hook

    hooks = freezing_hooks(frozen) if frozen is not None else []
    for layer in wanted:
        hooks += [(f"blocks.{layer}.ln2.hook_normalized", keep(layer)), (f"blocks.{layer}.hook_mlp_out", edit(layer))]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        return model(tokens)


def swap_edits(donor: LocalReplacement, receiver: LocalReplacement, where: Sequence[tuple[int, int]],
               donor_where: Sequence[tuple[int, int]] | None = None) -> list[tuple[Node, float]]:
    """Edits that give ``receiver`` the donor's latents at each (layer, position) of ``where``
    (read from ``donor_where`` in the donor, the same places by default): every latent active
    in either prompt there takes the donor's value."""
    edits = []
    for (layer, pos), (d_layer, d_pos) in zip(where, donor_where or where):
        values = donor.acts[d_layer][d_pos]
        active = (values > 0) | (receiver.acts[layer][pos] > 0)
        edits += [(Node("transcoder", layer, pos, int(i)), float(values[i])) for i in active.nonzero().flatten()]
    return edits


def generate_with(model: HookedSAETransformer, transcoders: Sequence[SAE], tokens: Int[Tensor, "1 pos"],
                  edits: Sequence[tuple[Node, float]], n_new: int) -> list[str]:
    """Greedy continuation of ``tokens`` for ``n_new`` words with ``edits`` applied at every
    step (they name positions of the prompt, which stay put as the text grows)."""
    for _ in range(n_new):
        logits = intervene(model, transcoders, tokens, edits)
        tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return model.to_str_tokens(tokens[0])
