"""``utils.patching``: activation patching from a corrupted run, on the model organism."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from utils.backends import load_backend  # noqa: E402
from utils.patching import patch_each_position  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    bk = load_backend("toy")
    batch = bk.world.task_batch("facts", 8, seed=1)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        final = logits[:, -1]
        return (final.gather(-1, batch.answer_ids[:, None]) - final.gather(-1, batch.distractor_ids[:, None]))[:, 0]

    with torch.no_grad():
        clean, corrupted = metric(bk.model(batch.tokens)), metric(bk.model(batch.corrupted_tokens))
    return bk.model, batch, metric, clean, corrupted


def test_patching_where_the_runs_agree_changes_nothing_and_the_last_residual_gives_the_corrupted_run(setup):
    model, batch, metric, clean, corrupted = setup
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"]
    m = patch_each_position(model, batch.tokens, batch.corrupted_tokens, hooks, metric)
    assert m.shape == (2, batch.tokens.shape[1], len(batch.prompts))
    differ = (batch.tokens != batch.corrupted_tokens).any(0)  # the landmark's position only
    assert differ.sum() == 1
    torch.testing.assert_close(m[0, ~differ], clean.expand(int((~differ).sum()), -1), atol=1e-4, rtol=0)
    torch.testing.assert_close(m[0, differ][0], corrupted, atol=1e-4, rtol=0)  # the embedding is the input
    torch.testing.assert_close(m[1, -1], corrupted, atol=1e-4, rtol=0)  # the last residual is the output
    torch.testing.assert_close(m[1, :-1], clean.expand(batch.tokens.shape[1] - 1, -1), atol=1e-4, rtol=0)


def test_patching_leaves_no_hook_and_names_bad_input(setup):
    model, batch, metric, clean, _ = setup
    patch_each_position(model, batch.tokens, batch.corrupted_tokens, ["blocks.0.attn.hook_z"], metric)
    with torch.no_grad():
        torch.testing.assert_close(metric(model(batch.tokens)), clean)
    with pytest.raises(ValueError, match="no hook point"):
        patch_each_position(model, batch.tokens, batch.corrupted_tokens, ["blocks.9.hook_resid_post"], metric)
    with pytest.raises(ValueError, match="one shape"):
        patch_each_position(model, batch.tokens, batch.corrupted_tokens[:, :-1], ["blocks.0.hook_resid_pre"], metric)
