"""Gradients with respect to SAE latents and error nodes, and how to compare the estimates
they give with true ablations (introduced in chapter 01; chapter 02 adds transcoders).

SAELens splices an SAE with its error term as ``out = decode(f) + e`` with
``e = x - decode(encode(x))`` computed under ``torch.no_grad``. The value is the model's own,
but a backward pass then sees only the reconstruction path: an earlier layer receives
``J_decode · J_encode`` instead of the identity, and the error node gets no gradient at all.
:func:`splice_for_gradients` splices with its own hook instead, so that every latent, every
error node and every earlier layer receives the gradient of the *unchanged* model. How an
estimate compares with the truth (Spearman, Pearson, sign agreement) is in ``utils.metrics``.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from utils.nodes import output_hook


@contextmanager
def splice_for_gradients(model: HookedSAETransformer, saes: Sequence[SAE]) -> Iterator[dict[str, Tensor]]:
    """Splice ``saes`` so that their latents and error nodes are leaves that collect gradients.

    Yields a dict filled by the next forward pass: ``nodes[f"{hook}.latents"]`` is the
    ``[batch, pos, d_sae]`` latent tensor and ``nodes[f"{hook}.error"]`` the error node
    ``e = y - decode(f)``, each a leaf that ``requires_grad``; ``hook`` is the hook the
    dictionary reads (``sae.cfg.metadata.hook_name``). An SAE reads and writes one
    activation, ``y = x``. A transcoder reads ``x`` at its input hook and stands in for the
    activation ``y`` at ``cfg.metadata.hook_name_out`` (``f = encode(x)``, error
    ``y - decode(f)``, as SAELens computes it). At the written hook ``y`` is replaced by
    ``decode(f) + e + (y - y.detach())``: its value is the model's own activation, its gradient
    flows to ``f`` through the decoder, to ``e`` directly, and to ``y`` as the identity, as in
    the unspliced model. The encoder runs once, without gradients (``f`` is a leaf), so the
    pass costs one encode and one decode per dictionary. Hooks are global state: they are
    removed when the block exits.

    >>> with splice_for_gradients(model, [sae]) as nodes:          # doctest: +SKIP
    ...     with torch.enable_grad():
    ...         metric(model(tokens)).backward()
    >>> nodes["blocks.1.hook_resid_post.latents"].grad             # doctest: +SKIP
    """
    nodes: dict[str, Tensor] = {}
    inputs: dict[str, Tensor] = {}  # a transcoder's input, kept until its output hook fires

    def keep_input(name: str):
        def hook(x: Tensor, hook: HookPoint) -> None:
            inputs[name] = x.detach()
        return hook

    def splice(sae: SAE, name: str):
        def hook(y: Tensor, hook: HookPoint) -> Tensor:
            x = inputs.pop(name, y)  # an SAE reads what it writes
            with torch.no_grad():
                latents = sae.encode(x)
            nodes[f"{name}.latents"] = latents.requires_grad_(True)
            recons = sae.decode(latents)  # same shape as y (hook_z SAEs reshape back)
            nodes[f"{name}.error"] = (y - recons).detach().requires_grad_(True)
            return recons + nodes[f"{name}.error"] + (y - y.detach())  # value y; d/dy = identity
        return hook

    fwd_hooks = []
    for sae in saes:
        name = sae.cfg.metadata.hook_name
        written = output_hook(sae)
        if written != name:
            fwd_hooks.append((name, keep_input(name)))
        fwd_hooks.append((written, splice(sae, name)))
    with model.hooks(fwd_hooks=fwd_hooks):
        yield nodes
