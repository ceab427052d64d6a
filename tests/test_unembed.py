"""The unembedding every backend installs (``utils.backends.Unembed``): the same logits and
gradients as TransformerLens 3.9's ``Unembed``, bitwise, without copying ``W_U`` per call."""
from __future__ import annotations

import pytest
import torch
import transformer_lens.components

from utils.backends import _LOADERS, Unembed, _import_loaders, load_backend
from utils.backends.gpt2 import load_gpt2_shaped
from utils.graphs import frozen_parameters


def test_every_registered_loader_installs_it():
    _import_loaders()
    assert set(_LOADERS) >= {"toy", "gpt2", "gpt2-shaped"}
    assert all(hasattr(loader, "__wrapped__") for loader in _LOADERS.values())


@pytest.fixture(scope="module", params=["toy", "gpt2-shaped"])
def model(request):
    if request.param == "toy":
        return load_backend("toy").model
    return load_gpt2_shaped("cpu", layers=[0], kinds=("transcoder",)).model


def _theirs(unembed: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return transformer_lens.components.Unembed.forward(unembed, x)


def _residual(model, seed: int) -> torch.Tensor:
    return torch.randn(2, 5, model.cfg.d_model, generator=torch.Generator().manual_seed(seed))


def test_identical_logits_without_gradients(model):
    assert type(model.unembed) is Unembed
    with torch.no_grad():
        x = _residual(model, 0)
        assert torch.equal(model.unembed(x), _theirs(model.unembed, x))
        kept = model.unembed._transposed()
        assert model.unembed._transposed() is kept  # no copy per call
        model.unembed.W_U[0, 0] += 1.0  # an in-place edit makes it again
        try:
            assert model.unembed._transposed() is not kept and torch.equal(model.unembed(x), _theirs(model.unembed, x))
        finally:
            model.unembed.W_U[0, 0] -= 1.0
        assert torch.equal(model.unembed(x), _theirs(model.unembed, x))


def test_identical_gradients(model):
    x = _residual(model, 1).requires_grad_(True)
    seed = torch.randn(2, 5, model.cfg.d_vocab, generator=torch.Generator().manual_seed(2))
    with torch.enable_grad():
        # parameters that require grad: TransformerLens's own code, W_U's gradient included
        ours = torch.autograd.grad(model.unembed(x), [x, model.unembed.W_U], seed)
        theirs = torch.autograd.grad(_theirs(model.unembed, x), [x, model.unembed.W_U], seed)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
        with frozen_parameters(model):  # frozen parameters: the kept copy, the same gradient for x
            logits = model.unembed(x)
            assert torch.equal(logits, _theirs(model.unembed, x))
            assert torch.equal(torch.autograd.grad(logits, x, seed)[0], ours[0])


def test_whole_forward_and_hooks_unchanged(model):
    tokens = torch.randint(3, 100, (1, 6), generator=torch.Generator().manual_seed(3))
    seen = []
    with torch.no_grad(), model.hooks(fwd_hooks=[("unembed.hook_out", lambda x, hook: seen.append(x.shape))]):
        ours = model(tokens)
        model.unembed.__class__ = transformer_lens.components.Unembed
        try:
            theirs = model(tokens)
        finally:
            model.unembed.__class__ = Unembed
    assert torch.equal(ours, theirs) and len(seen) == 2
