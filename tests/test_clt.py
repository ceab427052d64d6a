"""utils.clt: the cross-layer transcoder's algebra, files, splice, loss and trainer, and the
organism's shipped CLT against its report. Fast: a random CLT on the toy model for the
algebra, the shipped one only where the report's figures are reproduced."""
from __future__ import annotations

import itertools
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from utils.backends import load_backend
from utils.clt import (
    CLTBatch,
    CLTConfig,
    CLTTrainingConfig,
    CrossLayerTranscoder,
    _export,
    _Scaled,
    batch_topk,
    calibrate_thresholds,
    clt_batches,
    read_clt,
    reconstruction_loss,
    sparsity_loss,
    spliced,
    train_clt,
)
from utils.toy import ARTIFACTS, REPORT


@pytest.fixture(scope="module")
def bk():
    return load_backend("toy")


def random_clt(cross_layer: bool = True, seed: int = 0, d_in: int = 128, d_sae: int = 256, n_layers: int = 2,
               threshold: float = 0.05) -> CrossLayerTranscoder:
    """A CLT with seeded random weights, a few latents active per token on the organism."""
    g = torch.Generator().manual_seed(seed)
    clt = CrossLayerTranscoder(CLTConfig(d_in, d_sae, n_layers, cross_layer=cross_layer))
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        clt.b_enc.sub_(0.3)
        clt.threshold.fill_(threshold)
    return clt.eval()


def tokens(bk, n: int = 4, seed: int = 7):
    return bk.world.corpus(n, 24, seed=seed).tokens


# ------------------------------------------------------------------ algebra
def test_each_mlp_output_is_the_sum_over_earlier_or_same_layers():
    clt = random_clt()
    x = {L: torch.randn(3, 5, 128) for L in range(2)}
    f = {L: clt.encode(L, x[L]) for L in range(2)}
    out = clt(x)
    assert set(out) == {0, 1} and out[1].shape == (3, 5, 128)
    by_hand_0 = f[0] @ clt.W_dec["0_0"] + clt.b_dec[0]
    by_hand_1 = f[0] @ clt.W_dec["0_1"] + f[1] @ clt.W_dec["1_1"] + clt.b_dec[1]
    torch.testing.assert_close(out[0], by_hand_0)
    torch.testing.assert_close(out[1], by_hand_1)
    # layer 0 alone decodes layer 0 only; layer 1's output needs layer 0's latents
    assert set(clt.decode({0: f[0]})) == {0}
    with pytest.raises(ValueError, match="missing \\[0\\]"):
        clt.decode_layer(1, {1: f[1]})


def test_encode_is_a_jumprelu_per_latent():
    clt = random_clt(threshold=0.2)
    x = torch.randn(50, 128)
    pre, f = clt.encode_pre(0, x), clt.encode(0, x)
    assert torch.equal(f, torch.where(pre > 0.2, pre, torch.zeros_like(pre)))
    assert 0 < (f > 0).float().sum(-1).mean() < 256


def test_decoders_go_forward_only_and_same_layer_clts_have_no_cross_decoders():
    clt, local = random_clt(), random_clt(cross_layer=False)
    with pytest.raises(ValueError, match="writes only to layers >= 1"):
        clt.decoder(1, 0)
    assert sorted(local.W_dec) == ["0_0", "1_1"] and not local.decoder(0, 1).any()
    assert local.cfg.sources(1) == [1] and clt.cfg.sources(1) == [0, 1]


def test_what_a_latent_writes_is_its_decoders_stacked_or_summed():
    clt = random_clt()
    rows = clt.decoder_rows(0, torch.tensor([3, 9]))
    assert rows.shape == (2, 2, 128)
    torch.testing.assert_close(rows[1, 1], clt.W_dec["0_1"][9])
    torch.testing.assert_close(clt.residual_write(0), clt.W_dec["0_0"] + clt.W_dec["0_1"])
    torch.testing.assert_close(clt.residual_write(0, before=1), clt.W_dec["0_0"])
    norms = torch.cat([clt.W_dec["0_0"], clt.W_dec["0_1"]], dim=1).norm(dim=1)
    torch.testing.assert_close(clt.decoder_norms(0), norms)
    with pytest.raises(ValueError, match="before"):
        clt.residual_write(1, before=1)


def test_per_layer_transcoders_become_a_same_layer_clt_exactly(bk):
    plts = list(bk.transcoders.values())
    clt = CrossLayerTranscoder.from_transcoders(plts)
    assert not clt.cfg.cross_layer
    x = torch.randn(7, 128)
    for L, tc in enumerate(plts):
        torch.testing.assert_close(clt.encode(L, x), tc.encode(x))
        torch.testing.assert_close(clt.decode_layer(L, {L: tc.encode(x)}), tc.decode(tc.encode(x)))
    with pytest.raises(ValueError, match="one transcoder for each layer"):
        CrossLayerTranscoder.from_transcoders(plts[1:])


# ------------------------------------------------------------------ files
def test_save_and_load_round_trip_checks_every_key_and_shape(tmp_path):
    clt = random_clt()
    clt.save(tmp_path / "a")
    back = CrossLayerTranscoder.load(tmp_path / "a")
    assert back.cfg == clt.cfg
    for name, value in clt.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name
    weights = load_file(tmp_path / "a" / "clt_weights.safetensors")
    del weights["W_dec.0_1"]
    save_file(weights, tmp_path / "a" / "clt_weights.safetensors")
    with pytest.raises(ValueError, match="W_dec.0_1"):
        CrossLayerTranscoder.load(tmp_path / "a")
    weights["W_dec.0_1"] = torch.zeros(256, 127)
    save_file(weights, tmp_path / "a" / "clt_weights.safetensors")
    with pytest.raises(ValueError, match="wrong shapes"):
        CrossLayerTranscoder.load(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="no CLT"):
        CrossLayerTranscoder.load(tmp_path / "missing")


def test_circuit_tracer_export_has_its_files_keys_and_shapes(tmp_path):
    """The layout circuit-tracer 0.5.0's ``load_clt`` reads, and its math on those files
    (``JumpReLU(x W_enc^T + b_enc)``, decoder rows per target layer) gives our output."""
    clt = random_clt()
    written = clt.to_circuit_tracer(tmp_path, model_name="toy")
    assert sorted(p.name for p in written) == ["W_dec_0.safetensors", "W_dec_1.safetensors", "W_enc_0.safetensors",
                                               "W_enc_1.safetensors", "config.yaml"]
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config == {"model_kind": "cross_layer_transcoder", "model_name": "toy",
                      "feature_input_hook": "ln2.hook_normalized", "feature_output_hook": "hook_mlp_out"}
    enc = [load_file(tmp_path / f"W_enc_{L}.safetensors") for L in range(2)]
    dec = [load_file(tmp_path / f"W_dec_{L}.safetensors")[f"W_dec_{L}"] for L in range(2)]
    assert {k: tuple(v.shape) for k, v in enc[1].items()} == {"W_enc_1": (256, 128), "b_enc_1": (256,), "b_dec_1": (128,), "threshold_1": (256,)}
    assert dec[0].shape == (256, 2, 128) and dec[1].shape == (256, 1, 128)
    x = torch.randn(2, 6, 128)  # [layer, pos, d_model], as circuit-tracer stacks MLP inputs
    feats = []
    for L in range(2):
        pre = x[L] @ enc[L][f"W_enc_{L}"].T + enc[L][f"b_enc_{L}"]
        feats.append(pre * (pre > enc[L][f"threshold_{L}"]))
    recon1 = feats[0] @ dec[0][:, 1] + feats[1] @ dec[1][:, 0] + enc[1]["b_dec_1"]
    torch.testing.assert_close(recon1, clt({0: x[0], 1: x[1]})[1])


# ------------------------------------------------------------------ splicing
def test_splice_with_error_term_gives_the_models_logits(bk):
    clt, toks = random_clt(), tokens(bk)
    clean = bk.model(toks)
    with spliced(bk.model, clt, use_error_term=True) as splice:
        logits = bk.model(toks)
    assert (logits - clean).abs().max() < 1e-4
    assert set(splice.errors) == {0, 1} and splice.latents[1].shape == (4, 24, 256)
    assert not bk.model.hook_dict["blocks.0.hook_mlp_out"].fwd_hooks  # hooks removed


def test_splice_without_error_term_replaces_the_mlps_and_cleans_up_after_errors(bk):
    clt, toks = random_clt(), tokens(bk)
    with spliced(bk.model, clt, layers=[1]) as splice:
        logits = bk.model(toks)
        _, cache = bk.model.run_with_cache(toks, names_filter="blocks.1.hook_mlp_out")
    assert not torch.allclose(logits, bk.model(toks))
    torch.testing.assert_close(cache["blocks.1.hook_mlp_out"], splice.reconstructions[1])
    assert set(splice.reconstructions) == {1} and set(splice.latents) == {0, 1}
    with pytest.raises(RuntimeError, match="boom"):
        with spliced(bk.model, clt):
            raise RuntimeError("boom")
    assert all(not h.fwd_hooks for h in bk.model.hook_dict.values())
    bk.model.add_sae(bk.transcoders["blocks.1.ln2.hook_normalized"])
    try:
        with pytest.raises(ValueError, match="reset_saes"):
            with spliced(bk.model, clt):
                pass
    finally:
        bk.model.reset_saes()


def test_a_spliced_layer_is_encoded_from_what_earlier_spliced_layers_wrote(bk):
    """Layer 1's latents read the residual stream in which layer 0's MLP was replaced."""
    clt, toks = random_clt(), tokens(bk)
    with torch.no_grad(), spliced(bk.model, clt) as splice:
        _, cache = bk.model.run_with_cache(toks, names_filter="blocks.1.ln2.hook_normalized")
    torch.testing.assert_close(splice.latents[1], clt.encode(1, cache["blocks.1.ln2.hook_normalized"]))
    clean_latents, _, _ = read_clt(bk.model, clt, toks)
    assert not torch.allclose(clean_latents[1], splice.latents[1])


# ------------------------------------------------------------------ loss and training
def test_reconstruction_and_sparsity_losses_by_hand():
    clt = random_clt()
    recon, target, weights = torch.randn(2, 5, 128), torch.randn(2, 5, 128), torch.rand(2, 5)
    by_hand = sum(weights[t, n] * ((recon[t, n] - target[t, n]) ** 2).sum() for t in range(2) for n in range(5)) / 5
    torch.testing.assert_close(reconstruction_loss(recon, target, weights), by_hand)
    f = [torch.rand(5, 256), torch.rand(5, 256)]
    norm0 = (clt.W_dec["0_0"].pow(2).sum(1) + clt.W_dec["0_1"].pow(2).sum(1)).sqrt()
    norm1 = clt.W_dec["1_1"].norm(dim=1)
    by_hand = sum(f[0][n] @ norm0 + f[1][n] @ norm1 for n in range(5)) / 5
    torch.testing.assert_close(sparsity_loss(clt, f), by_hand)


def test_batch_topk_keeps_the_largest_k_per_token_on_average():
    values = torch.rand(40, 30).relu()
    keep = batch_topk(values, 2.5)
    assert keep.sum() == 100
    assert values[keep].min() >= values[~keep].max()
    assert not batch_topk(torch.zeros(4, 3), 1.0).any()


def test_export_folds_scales_and_decoder_norms_without_changing_the_reconstruction():
    clt = random_clt(threshold=0.0)
    first = CLTBatch(torch.randn(2, 64, 128) * 3, torch.randn(2, 64, 128) * 0.2, torch.ones(2, 64))
    state = _Scaled(clt, first, CLTTrainingConfig(k=(4.0, 4.0)))
    out = _export(clt, state)
    x = torch.randn(2, 10, 128)
    scaled = clt({L: x[L] * state.scale_in[L] for L in range(2)})
    mine = out({0: x[0], 1: x[1]})
    for L in range(2):
        torch.testing.assert_close(mine[L], scaled[L] / state.scale_out[L], rtol=1e-4, atol=1e-5)
    # in the training's units (targets times scale_out) each latent's decoder rows have norm 1 together
    rows = torch.cat([out.decoder(0, t) * state.scale_out[t] for t in range(2)], dim=1)
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(256))


def test_calibrated_thresholds_give_the_batchtopk_l0():
    clt = random_clt(threshold=0.0)
    inputs = [torch.randn(2, 500, 128) for _ in range(3)]
    calibrate_thresholds(clt, inputs, (3.0, 7.5))
    x = torch.cat(inputs, 1)
    assert [float((clt.encode(L, x[L]) > 0).float().sum(-1).mean()) for L in range(2)] == [3.0, 7.5]


def test_a_short_training_run_on_the_organism_lowers_the_loss_at_the_asked_l0(bk):
    stream = (bk.world.corpus(8, 24, seed=100 + t).tokens for t in itertools.count())
    cfg = CLTTrainingConfig(k=(4.0, 6.0), steps=30, lr=5e-3, calibration_batches=4)
    run = train_clt(CLTConfig(128, 64, 2), cfg, clt_batches(bk.model, stream, 2), progress=False)
    assert run.history["mse"][-1] < 0.7 * run.history["mse"][0]
    assert run.history["l0.0"][-1] == pytest.approx(4.0, abs=0.01) and run.history["l0.1"][-1] == pytest.approx(6.0, abs=0.01)
    latents, recon, true = read_clt(bk.model, run.clt, bk.world.corpus(16, 24, seed=999).tokens)
    assert 2 < float((latents[0] > 0).float().sum(-1).mean()) < 8
    assert run.seconds > 0 and run.cpu_seconds > 0


def test_the_trainer_runs_on_gpt2_shaped_activations_of_the_organisms_text():
    """The scale-up's fallback path: GPT-2's shapes and tokenizer, the organism's text."""
    from utils.backends.gpt2 import shaped_model
    from utils.toy.generator import World
    from utils.training import text_dataset

    model = shaped_model("cpu")
    world = World()
    texts = [" ".join(world.vocab[int(t)] for t in row[1:]) for row in world.corpus(40, 32, seed=3).tokens]
    rows = torch.tensor(text_dataset(model, texts, context_size=32)["tokens"])
    stream = (rows[i % len(rows): i % len(rows) + 2] for i in itertools.count(0, 2))
    cfg = CLTTrainingConfig(k=(8.0, 8.0), steps=3, calibration_batches=1)
    run = train_clt(CLTConfig(768, 128, 2), cfg, clt_batches(model, stream, 2, drop_bos=True), progress=False)
    assert run.clt.decoder(0, 1).shape == (128, 768) and len(run.history["mse"]) == 3
    assert all(torch.isfinite(torch.tensor(v)).all() for v in run.history.values())


# ------------------------------------------------------------------ the shipped CLT
@pytest.fixture(scope="module")
def report():
    data = json.loads((ARTIFACTS / REPORT).read_text())
    if "clt" not in data:
        pytest.skip("no CLT in the report yet: python -m utils.toy build --only clt")
    return data["clt"]


def test_the_backend_carries_the_cross_layer_transcoder_beside_its_dictionaries(bk, report):
    assert isinstance(bk.clt, CrossLayerTranscoder) and bk.clt.cfg.cross_layer
    assert all(not isinstance(d, CrossLayerTranscoder) for d in bk.dictionaries.values())
    assert bk.clt.cfg.metadata["k"] == report["build"]["k"]


def test_the_shipped_clt_reproduces_its_reported_ce_loss_recovered(bk, report):
    from utils.toy.report import clt_ce_losses
    from utils.toy.training import EVAL_SEEDS

    eval_tokens = bk.world.corpus(256, 48, seed=EVAL_SEEDS).tokens
    for key, ce in clt_ce_losses(bk.model, bk.clt, eval_tokens).items():
        recovered = (ce["zero"] - ce["spliced"]) / (ce["zero"] - ce["clean"])
        assert recovered == pytest.approx(report["cross_layer"]["ce_loss_recovered"][key], abs=2e-3), key


def test_the_clts_l0_is_matched_to_the_shipped_transcoders(report):
    for L in ("0", "1"):
        assert report["cross_layer"]["layers"][L]["l0"] == pytest.approx(report["plt"]["layers"][L]["l0"], rel=0.05)



def test_intervening_on_a_latent_moves_every_later_mlp_output_through_its_decoders(bk):
    from utils.clt import intervene

    clt, toks = random_clt(), tokens(bk, n=1)
    latents, _, _ = read_clt(bk.model, clt, toks)
    pos, latent = 5, int(latents[0][0, 5].argmax())
    old = float(latents[0][0, pos, latent])
    torch.testing.assert_close(intervene(bk.model, clt, toks, [(0, pos, latent, old)]), bk.model(toks))

    def add(target: int):
        def hook(out, hook):
            out = out.clone()
            out[0, pos] += 2.0 * clt.decoder(0, target)[latent]
            return out
        return hook

    by_hand = bk.model.run_with_hooks(toks, fwd_hooks=[(f"blocks.{t}.hook_mlp_out", add(t)) for t in range(2)])
    torch.testing.assert_close(intervene(bk.model, clt, toks, [(0, pos, latent, old + 2.0)]), by_hand)


def test_training_is_reproducible_from_its_seeds(bk):
    def run():
        stream = (bk.world.corpus(4, 16, seed=500 + t).tokens for t in itertools.count())
        cfg = CLTTrainingConfig(k=(3.0, 3.0), steps=5, calibration_batches=1)
        return train_clt(CLTConfig(128, 32, 2), cfg, clt_batches(bk.model, stream, 2), progress=False).clt

    a, b = run(), run()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_the_clt_follows_the_backend_to_float64_and_still_splices_exactly():
    bk64 = load_backend("toy", fresh=True, dtype=torch.float64)
    if bk64.clt is None:
        pytest.skip("no CLT built yet")
    assert bk64.clt.dtype == torch.float64
    toks = tokens(bk64)
    with torch.no_grad():
        clean = bk64.model(toks)
        with spliced(bk64.model, bk64.clt, use_error_term=True):
            assert (bk64.model(toks) - clean).abs().max() < 1e-10
