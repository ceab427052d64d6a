"""The unembedding every backend installs: TransformerLens 3.9's ``Unembed`` without the copy
of ``W_U`` it makes on every call (``tests/test_unembed.py``; README's troubleshooting)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import transformer_lens.components
from jaxtyping import Float
from sae_lens import HookedSAETransformer
from torch import Tensor


class Unembed(transformer_lens.components.Unembed):
    """TransformerLens 3.9's ``Unembed``, without copying the unembedding on every call.

    ``Unembed.forward`` in TransformerLens 3.9 runs ``F.linear(x, W_U.T.contiguous(), b_U)``:
    a fresh ``[d_vocab, d_model]`` copy of the unembedding per call (on GPT-2's shapes about
    150 of 160 ms of a forward pass on one CPU thread). This one keeps that contiguous copy
    and makes it again only when ``W_U`` changes (another tensor, device or dtype, or an
    in-place edit), so the product, and the logits, are bitwise TransformerLens's
    (``tests/test_unembed.py``). When autograd may need ``W_U``'s own gradient (grad mode on
    and ``W_U.requires_grad``) it runs TransformerLens's code unchanged, copy included.
    The kept copy costs ``W_U``'s memory once more (150 MB on GPT-2)."""

    def forward(self, residual: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab_out"]:
        if torch.is_grad_enabled() and self.W_U.requires_grad:
            return super().forward(residual)
        residual = self.hook_in(residual)
        return self.hook_out(F.linear(residual, self._transposed(), self.b_U))

    def _transposed(self) -> Float[Tensor, "d_vocab_out d_model"]:
        """``W_U.T.contiguous()``, made once per version of ``W_U``."""
        key = (self.W_U.data_ptr(), self.W_U._version, self.W_U.dtype, self.W_U.device)
        if getattr(self, "_transposed_key", None) != key:
            with torch.inference_mode(False), torch.no_grad():
                self._transposed_W_U = self.W_U.T.contiguous()
            self._transposed_key = key
        return self._transposed_W_U


def unembed_without_copy(model: HookedSAETransformer) -> HookedSAETransformer:
    """Give ``model`` the copy-free :class:`Unembed` (its class swapped in place: weights,
    hooks and ``state_dict`` unchanged); every backend's loader does it."""
    if type(model.unembed) is transformer_lens.components.Unembed:
        model.unembed.__class__ = Unembed
    return model
