"""Fast checks of the visual tools: ``utils/views.py``, ``utils/dashboards.py``, ``utils/explorer.py``.

Everything runs on a tiny seeded model (2 layers, d_model 32) with a 64-word word-level
tokenizer and a seeded ReLU SAE, inside a temporary working directory, so no view lands in
the repository.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from sae_lens import HookedSAETransformer, StandardSAE, StandardSAEConfig
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformer_lens import HookedTransformerConfig
from transformers import PreTrainedTokenizerFast

from utils import dashboards, explorer, views

HOOK = "blocks.1.hook_resid_post"
WORDS = ["<bos>", "<pad>", "<unk>"] + [f"w{i}" for i in range(61)]


def tiny_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A",
                                                        special_tokens=[("<bos>", 0)])
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<bos>",
                            pad_token="<pad>", unk_token="<unk>").save_pretrained(str(folder))
    return PreTrainedTokenizerFast.from_pretrained(str(folder), add_bos_token=True,
                                                   local_files_only=True)


def tiny_sae(d_model: int, apply_b_dec_to_input: bool, seed: int) -> StandardSAE:
    torch.manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=d_model, d_sae=4 * d_model,
                                        apply_b_dec_to_input=apply_b_dec_to_input))
    sae.cfg.metadata.hook_name = HOOK
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(0, 0.5)
    return sae


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> SimpleNamespace:
    """A tiny backend-shaped object: model, one residual SAE, and a corpus generator."""
    tokenizer = tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))
    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_heads=2, d_head=16, d_mlp=64,
                                  n_ctx=32, act_fn="gelu", normalization_type="LN",
                                  d_vocab=len(WORDS), seed=0)
    model = HookedSAETransformer(cfg, tokenizer=tokenizer).eval()
    tokens = torch.randint(3, len(WORDS), (16, 24), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 0
    world = SimpleNamespace(corpus=lambda n_seqs, seq_len, seed: SimpleNamespace(tokens=tokens))
    return SimpleNamespace(name="tiny", model=model, saes={HOOK: tiny_sae(32, True, 0)},
                           world=world, tokens=tokens)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(__import__("sys").modules, "google.colab", raising=False)


def latent_acts(bk, latent: int) -> torch.Tensor:
    return explorer.sae_acts(bk.model, bk.saes[HOOK], bk.tokens)[..., latent]


# ------------------------------------------------------------------ views
def test_sig3_rounds_to_three_significant_figures():
    assert [views.sig3(x) for x in (3.14159, -0.000123456, 12345.0, -0.0)] == \
        ["3.14", "-0.000123", "1.23e+04", "0"]


def test_show_html_writes_a_file_and_shows_a_small_iframe(tmp_path, capsys):
    views.show_html("<p>hello</p>", "hello")
    assert (tmp_path / "_views" / "hello.html").read_text() == "<p>hello</p>"
    assert capsys.readouterr().out.strip() == "view: _views/hello.html"


def test_show_html_inlines_in_colab(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "google.colab", SimpleNamespace())
    views.show_html("<p>hi</p>", "colab")
    assert not (tmp_path / "_views").exists()


def test_token_logprob_view_writes_circuitsvis_html(tiny, tmp_path):
    views.token_logprob_view(tiny.model, "w1 w2 w3 w4", "logprobs")
    html = (tmp_path / "_views" / "logprobs.html").read_text()
    assert "TokenLogProbs" in html and '"w3"' in html


def test_contexts_table_is_deterministic_text(tiny):
    acts = latent_acts(tiny, 5)
    values, seq_pos = views.top_positions(acts, 4)
    assert values.tolist() == sorted(acts.flatten().tolist(), reverse=True)[:4]
    text = views.contexts_table(tiny.model, tiny.tokens, values, seq_pos, window=3)
    lines = text.splitlines()
    assert len(lines) == 4 and all(line.count("[[") == 1 for line in lines)
    seq, pos = seq_pos[0].tolist()
    assert f"[[{WORDS[tiny.tokens[seq, pos]]}]]" in lines[0]
    assert lines[0].split()[0] == views.sig3(values[0])
    assert text == views.contexts_table(tiny.model, tiny.tokens, values, seq_pos, window=3)


def test_show_contexts_displays_html_with_a_text_fallback(tiny, capsys):
    values, seq_pos = views.top_positions(latent_acts(tiny, 5), 3)
    html = views.contexts_html(tiny.model, tiny.tokens, values, seq_pos, 3)
    assert html.count("<tr>") == 4 and "border:1px solid" in html
    views.show_contexts(tiny.model, tiny.tokens, values, seq_pos, 3)
    assert capsys.readouterr().out.rstrip("\n") == \
        views.contexts_table(tiny.model, tiny.tokens, values, seq_pos, 3)


def test_plot_helpers_return_figures():
    x, y = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.5, 2.9])
    fig = views.scatter_with_diagonal(x, y, ["a", "b", "c"], "attribution vs ablation")
    assert fig.layout.title.text == "attribution vs ablation (Pearson r = 0.948)"  # numpy.corrcoef: 0.9483
    assert list(fig.data[1].x) == [1.0, 3.0]
    assert views.heatmap(torch.eye(2), ["a", "b"], ["c", "d"], "h").data[0].zmid == 0
    assert list(views.bar(torch.tensor([1.0, -1.0]), ["a", "b"], "b").data[0].y) == [1.0, -1.0]


# ------------------------------------------------------------------ dashboards
def dashboard_data(path: Path) -> dict:
    """The JSON that sae-vis embeds in ``defineData()``."""
    match = re.search(r"function defineData\(\) \{.*?return (\{.*\});\n", path.read_text(), re.S)
    return json.loads(match.group(1))


@pytest.mark.parametrize("apply_b_dec_to_input", [True, False])
def test_dashboard_carries_the_sae_weights(tiny, tmp_path, apply_b_dec_to_input):
    sae = tiny_sae(32, apply_b_dec_to_input, seed=1)
    latent = 7
    path = dashboards.latent_dashboard(tiny.model, sae, tiny.tokens, [latent, 3], "dash")
    assert path == tmp_path / "_views" / "dash.html"
    html = path.read_text()
    assert "https://" not in html and (tmp_path / "_views" / "plotly.min.js").exists()
    data = dashboard_data(path)
    acts = explorer.sae_acts(tiny.model, sae, tiny.tokens)
    assert data["AGGDATA"]["max"][0] == pytest.approx(acts[..., latent].max().item(), abs=1e-4)
    top_logits = data["DASHBOARD_DATA"][str(latent)]["logitsTableData"]["0"]["posLogits"]
    expected = explorer.promoted_tokens(tiny.model, sae, latent, k=len(top_logits))
    assert [row["symbol"] for row in top_logits] == [token for token, _ in expected]


def test_dashboard_refuses_spliced_models(tiny):
    tiny.model.add_sae(tiny.saes[HOOK])
    try:
        with pytest.raises(ValueError, match="reset_saes"):
            dashboards.latent_dashboard(tiny.model, tiny.saes[HOOK], tiny.tokens, [1], "x")
    finally:
        tiny.model.reset_saes()


# ------------------------------------------------------------------ explorer
def test_explorer_summary_is_deterministic_and_consistent(tiny):
    text = explorer.explorer_summary(tiny, "w1 w2 w3", HOOK, 5)
    assert text == explorer.explorer_summary(tiny, "w1 w2 w3", HOOK, 5)
    rows = explorer.active_latents(tiny, "w1 w2 w3", HOOK)
    assert [token for token, _ in rows] == ["<bos>", "w1", "w2", "w3"]
    first = rows[1][1][0]
    assert f"#{first[0]} ({views.sig3(first[1])})" in text
    values, seq_pos = views.top_positions(latent_acts(tiny, 5), explorer.TOP_CONTEXTS)
    expected = views.contexts_table(tiny.model, tiny.tokens, values, seq_pos, explorer.WINDOW)
    assert text.endswith(expected)


def test_explorer_widget_builds_and_reacts(tiny):
    app = explorer.latent_explorer(tiny, ["w1 w2 w3", "w4 w5"])
    positions = app.children[1].children[0]
    assert len(positions.children) == 4
    button = positions.children[1].children[1]
    button.click()  # runs the callback: promoted tokens and contexts for that latent
    app.children[0].children[0].value = "w4 w5"
    assert len(positions.children) == 3
    latent = int(button.description.split()[0][1:])
    detail = explorer._latent_detail(tiny, HOOK, latent, None)
    assert f"latent #{latent}" in detail.value and "<table" in detail.value


def test_explorer_reads_the_same_acts_with_the_sae_spliced_in(tiny):
    clean = explorer.sae_acts(tiny.model, tiny.saes[HOOK], tiny.tokens[:2])
    tiny.model.add_sae(tiny.saes[HOOK], use_error_term=True)
    try:
        spliced = explorer.sae_acts(tiny.model, tiny.saes[HOOK], tiny.tokens[:2])
    finally:
        tiny.model.reset_saes()
    torch.testing.assert_close(spliced, clean)
