"""Gradients with respect to SAE latents and error nodes (introduced in chapter 01).

SAELens splices an SAE with its error term as ``out = decode(f) + e`` with
``e = x - decode(encode(x))`` computed under ``torch.no_grad``. The value is the model's own,
but a backward pass then sees only the reconstruction path: an earlier layer receives
``J_decode · J_encode`` instead of the identity, and the error node gets no gradient at all.
:func:`splice_for_gradients` fixes both, so that every latent, every error node and every
earlier layer receives the gradient of the *unchanged* model.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor
from transformer_lens.hook_points import HookPoint


@contextmanager
def splice_for_gradients(model: HookedSAETransformer, saes: Sequence[SAE]) -> Iterator[dict[str, Tensor]]:
    """Splice ``saes`` with their error terms; latents and errors become leaves with grads.

    Yields a dict filled by the next forward pass: ``nodes[f"{hook}.latents"]`` is the
    ``[batch, pos, d_sae]`` latent tensor and ``nodes[f"{hook}.error"]`` the error node, each
    a leaf that ``requires_grad``. The SAE's output is ``decode(f) + e + (x - x.detach())``:
    its value is the model's own activation, its gradient flows to ``f`` through the decoder,
    to ``e`` directly, and to the input ``x`` as the identity, as in the unspliced model.
    Hooks and SAEs are global state: both are removed when the block exits.

    >>> with splice_for_gradients(model, [sae]) as nodes:          # doctest: +SKIP
    ...     with torch.enable_grad():
    ...         metric(model(tokens)).backward()
    >>> nodes["blocks.1.hook_resid_post.latents"].grad             # doctest: +SKIP
    """
    nodes: dict[str, Tensor] = {}
    inputs: dict[str, Tensor] = {}

    def leaf(name: str):
        def hook(act: Tensor, hook: HookPoint) -> Tensor:
            nodes[name] = act.detach().requires_grad_(True)
            return nodes[name]
        return hook

    def keep_input(name: str):
        def hook(act: Tensor, hook: HookPoint) -> None:
            inputs[name] = act
        return hook

    def identity_path(name: str):
        def hook(out: Tensor, hook: HookPoint) -> Tensor:
            x = inputs.pop(name)
            return out + (x - x.detach()).reshape(out.shape)  # value + 0; gradient dx = dout
        return hook

    fwd_hooks = []
    for sae in saes:
        model.add_sae(sae, use_error_term=True)
        name = sae.cfg.metadata.hook_name
        fwd_hooks += [
            (f"{name}.hook_sae_input", keep_input(name)),
            (f"{name}.hook_sae_acts_post", leaf(f"{name}.latents")),
            (f"{name}.hook_sae_error", leaf(f"{name}.error")),
            (f"{name}.hook_sae_output", identity_path(name)),
        ]
    try:
        with model.hooks(fwd_hooks=fwd_hooks):
            yield nodes
    finally:
        model.reset_saes()
