"""utils.training (chapter 06): SAELens's runner trains on the organism offline and writes
nothing, the trained SAE is converted without changing what it computes, the helpers return
what their docstrings say, and the committed sweep holds every run the chapter reads."""
from __future__ import annotations

import io
import os

import pytest
import torch
from sae_lens import SAE, BatchTopKTrainingSAE, JumpReLUSAE, StandardSAE

from benchmarks.training_sweep import GRID
from solutions.ch06_training import runner_config, sae_training_config
from utils.backends import load_backend
from utils.training import (
    SWEEP_COMMAND,
    TrainingBar,
    activation_batches,
    inference_sae,
    load_sweep,
    new_transcoder,
    recovery,
    text_dataset,
    token_dataset,
    train_sae,
)

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def bk():
    return load_backend("toy")


def test_token_dataset_rows_start_with_bos(bk) -> None:
    data = token_dataset(bk.world, n_seqs=5, seq_len=12, seed=1)
    assert data.column_names == ["tokens"] and len(data) == 5
    assert all(len(row) == 12 and row[0] == bk.model.tokenizer.bos_token_id for row in data["tokens"])


def test_train_sae_runs_offline_and_records_every_step(bk, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # anything the runner wrote would land here
    steps = 6
    cfg = runner_config(bk.model, sae_training_config("standard", bk.model.cfg.d_model, 64, 1.0), HOOK,
                        context_size=16, steps=steps, batch_tokens=128)
    run = train_sae(cfg, bk.model, token_dataset(bk.world, n_seqs=80, seq_len=16, seed=2), seed=0)
    assert isinstance(run.sae, StandardSAE) and not run.sae.training
    assert set(run.history) == {"mse_loss", "l1_loss", "l0"}
    assert all(len(values) == steps for values in run.history.values())
    assert os.listdir(tmp_path) == []
    assert run.sae.cfg.metadata.hook_name == HOOK


def test_inference_sae_is_what_sae_lens_saves(tmp_path) -> None:
    """``inference_sae`` builds in memory the SAE that ``save_inference_model`` writes: a
    BatchTopK SAE becomes a JumpReLU SAE with its learned threshold, and both compute alike."""
    torch.manual_seed(0)
    trained = BatchTopKTrainingSAE(sae_training_config("batchtopk", 16, 32, 4.0))
    with torch.no_grad():
        trained.topk_threshold.fill_(0.05)
        trained.b_enc.normal_()
        trained.W_dec.mul_(torch.rand(32, 1) + 0.5)  # decoder norms other than 1, as after training
    sae = inference_sae(trained)
    trained.save_inference_model(tmp_path)
    saved = SAE.load_from_disk(tmp_path)
    assert isinstance(sae, JumpReLUSAE) and type(saved) is type(sae)
    x = torch.randn(50, 16)
    acts = sae.encode(x)
    assert 0 < (acts > 0).sum() < acts.numel()
    torch.testing.assert_close(acts, saved.encode(x))
    torch.testing.assert_close(sae.decode(acts), saved.decode(acts))


def test_activation_batches_leave_bos_out(bk) -> None:
    hooks = ["blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"]
    batch = next(activation_batches(bk.model, bk.world, hooks, batch_seqs=3, seq_len=10, seed=5))
    tokens = bk.world.corpus(3, 10, seed=5).tokens
    _, cache = bk.model.run_with_cache(tokens, names_filter=hooks)
    for hook in hooks:
        assert batch[hook].shape == (3 * 9, bk.model.cfg.d_model)
        torch.testing.assert_close(batch[hook], cache[hook][:, 1:].flatten(0, 1))


def test_new_transcoder_starts_as_documented() -> None:
    tc = new_transcoder(8, 20, 6, "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out", seed=3, decoder_norm=0.1)
    torch.testing.assert_close(tc.W_dec.norm(dim=-1), torch.full((20,), 0.1))
    torch.testing.assert_close(tc.W_enc.norm(dim=0), torch.full((20,), 0.1))
    assert not tc.b_enc.any() and not tc.b_dec.any()
    assert tc.cfg.metadata.hook_name_out == "blocks.0.hook_mlp_out"


def test_recovery_finds_the_planted_latent() -> None:
    label = torch.tensor([True, False, True, False, False, True])
    acts = torch.zeros(6, 4)
    acts[:, 2] = label.float() * 2.0  # fires on the label only: AUROC 1, precision 1, a specialist
    acts[:, 0] = 1.0  # fires everywhere
    acts[:, 1] = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])

    def aurocs(a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # a crude stand-in: mean gap
        return 0.5 + (a[y].mean(0) - a[~y].mean(0)) / 4

    def precision(a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = a.sum(0)
        return torch.where(total > 0, a[y].sum(0) / total.clamp_min(1e-9), 0.0)

    row = recovery(acts, {"x": label}, aurocs, precision, min_tokens=3)["x"]
    assert row == {"latent": 2, "auroc": 1.0, "precision": 1.0, "specialists": 1}


def test_committed_sweep_holds_every_run() -> None:
    sweep = load_sweep()
    assert sweep["settings"]["command"] == SWEEP_COMMAND
    assert [(r["architecture"], r["sparsity"], r["d_sae"]) for r in sweep["runs"]] == [(a, s, d) for a, s, d in GRID]
    labels = set(sweep["shipped"]["recovery"])
    assert len(labels) == 16 and all(set(r["recovery"]) == labels for r in sweep["runs"])


def test_missing_sweep_names_the_command(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="benchmarks.training_sweep"):
        load_sweep(tmp_path / "none.json")


def test_text_dataset_cuts_one_stream_into_bos_first_rows(bk) -> None:
    texts = [bk.model.to_string(row[1:]) for row in bk.world.corpus(6, 20, seed=4).tokens]
    data = text_dataset(bk.model, texts, context_size=10)
    bos = bk.model.tokenizer.bos_token_id
    stream = [t for text in texts for t in [bos, *bk.model.tokenizer(text)["input_ids"]]]
    assert all(len(row) == 10 and row[0] == bos for row in data["tokens"])
    assert [t for row in data["tokens"] for t in row[1:]] == stream[: 9 * len(data)]
    assert len(stream) - 9 * len(data) < 9  # only the last partial row is dropped


def test_training_bar_finishes_at_100_percent_on_a_short_description() -> None:
    """SAELens moves its bar every 100 steps (120 steps end at 83 %) and writes every loss
    into the description: the course's bar completes on a normal close, says "training" only,
    and stays where it was when closed by an exception."""
    bar = TrainingBar(total=122_880, file=io.StringIO(), disable=False)
    bar.update(102_400)
    bar.set_description("100| mse_loss: 0.12345 | l1_loss: 0.04321")
    bar.close()
    assert bar.n == 122_880 and bar.desc.startswith("training") and "loss" not in bar.desc
    failed = TrainingBar(total=122_880, file=io.StringIO(), disable=False)
    failed.update(102_400)
    try:
        raise RuntimeError("training stopped")
    except RuntimeError:
        failed.close()
    assert failed.n == 102_400
