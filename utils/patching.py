"""Activation patching from a corrupted run (introduced in chapter 01).

A clean prompt and a corrupted twin of the same length differ in a few tokens (chapter 01's
fact prompts: the landmark). Patching one activation, at one hook and one position, from
the corrupted run into the clean run and reading the metric asks: *does the information
that the corruption changes pass through here?* If the metric stays at its clean value, it
does not (or not only); if it moves to the corrupted value, everything the metric needs from
the changed tokens passes through this activation at this position.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from sae_lens import HookedSAETransformer
from torch import Tensor
from transformer_lens.hook_points import HookPoint

Metric = Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, " batch"]]


def patch_each_position(
    model: HookedSAETransformer,
    tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    hooks: Sequence[str],
    metric: Metric,
) -> Float[Tensor, "hook pos batch"]:
    """The metric with one activation patched from the corrupted run, for every hook and position:

        m[h, p, b] = metric_b( model(tokens[b]) with a_h(p) := a_h^{corrupted}(p) ),

    where ``a_h(p)`` is the activation at hook ``hooks[h]`` and position ``p`` (every
    trailing dimension, e.g. all heads of a ``hook_z``). One forward pass per (hook,
    position), all prompts at once, without gradients. Patching at a position where the two
    runs agree up to that hook changes nothing; patching the last residual stream at the last
    position gives the corrupted metric.

    >>> m = patch_each_position(model, clean, corrupted, ["blocks.0.hook_resid_post"],
    ...                         lambda logits: logit_diff(logits, answers, distractors))  # doctest: +SKIP
    >>> m.mean(-1)  # [hook, pos]: the metric at each patch, averaged over prompts  # doctest: +SKIP
    """
    if tokens.shape != corrupted_tokens.shape:
        raise ValueError(f"clean and corrupted tokens must have one shape; got {tuple(tokens.shape)} "
                         f"and {tuple(corrupted_tokens.shape)}")
    unknown = [name for name in hooks if name not in model.hook_dict]
    if unknown:
        raise ValueError(f"no hook point {unknown} in the model; expected names such as "
                         f"'blocks.0.hook_resid_post' or 'blocks.1.hook_attn_out'")
    with torch.no_grad():
        _, corrupted = model.run_with_cache(corrupted_tokens, names_filter=list(hooks))
        rows = []
        for name in hooks:
            row = []
            for pos in range(tokens.shape[1]):
                def patch(x: Tensor, hook: HookPoint, pos: int = pos, name: str = name) -> Tensor:
                    x[:, pos] = corrupted[name][:, pos]
                    return x

                row.append(metric(model.run_with_hooks(tokens, fwd_hooks=[(name, patch)])))
            rows.append(torch.stack(row))
    return torch.stack(rows)
