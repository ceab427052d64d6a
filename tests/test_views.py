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


def test_show_html_writes_a_file_and_shows_a_frame_with_a_summary(tmp_path, capsys):
    views.show_html("<p>hello</p>", "hello", 300, "<b>a greeting</b>", "a greeting")
    assert (tmp_path / "_views" / "hello.html").read_text() == "<p>hello</p>"
    out = capsys.readouterr().out
    assert out.startswith("a greeting\n") and views.RUN_TO_EXPLORE in out and "_views/hello.html" in out
    html = views.frame_html("<p>hello</p>", "hello", 300, "<b>a greeting</b>")
    assert 'src="_views/hello.html"' in html and html.index("a greeting") < html.index("<iframe")


@pytest.mark.parametrize("where", ["colab", "vscode"])
def test_show_html_inlines_where_files_cannot_be_served(tmp_path, monkeypatch, where):
    if where == "colab":
        monkeypatch.setitem(__import__("sys").modules, "google.colab", SimpleNamespace())
    else:
        monkeypatch.setenv("VSCODE_PID", "1")
    views.show_html("<p>hi</p>", "inline", 300, "hi", "hi")
    assert not (tmp_path / "_views").exists()
    assert 'srcdoc="&lt;p&gt;hi&lt;/p&gt;"' in views.frame_html("<p>hi</p>", "inline", 300, "hi")


def test_word_level_tokens_are_shown_with_spaces(tiny):
    assert views.tokens_lack_spaces(tiny.model)
    assert views.display_tokens(tiny.model, [0, 4, 5]) == [" <bos>", " w1", " w2"]
    assert views.token_strings(tiny.model, [4, 5]) == ["w1", "w2"]


def test_token_logprob_view_is_inline_html_with_legend_and_text(tiny):
    view = views.token_logprob_view(tiny.model, "w1 w2 w3 w4")
    assert "<script" not in view.html and "log-prob of each token" in view.html
    assert view.html.count("title=") == 4 and ">&#x27;" not in view.html
    assert " <span" in view.html and ">w3</span>" in view.html  # "w1 w2", not "w1w2"
    tokens = tiny.model.to_tokens("w1 w2 w3 w4")[0]
    with torch.no_grad():
        log_probs = tiny.model(tokens[None])[0].log_softmax(-1)
    lines = view.text.splitlines()[1:]
    assert [line.split()[:2] for line in lines] == [
        [w, views.sig3(log_probs[p, tokens[p + 1]])] for p, w in enumerate(["w1", "w2", "w3", "w4"])]


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


def test_show_contexts_shades_every_token_and_has_a_text_fallback(tiny, capsys):
    acts = latent_acts(tiny, 5)
    values, seq_pos = views.top_positions(acts, 3)
    html = views.contexts_html(tiny.model, tiny.tokens, values, seq_pos, acts, 3)
    assert html.count("<tr>") == 4 and html.count("outline:1px solid") == 3 and " <span" in html
    seq, pos = seq_pos[0].tolist()
    for p in range(pos - 3, pos + 4):  # every token of the window carries its own activation
        if 0 <= p < tiny.tokens.shape[1]:
            assert f'title="activation {views.sig3(acts[seq, p])}"' in html
    shades = set(re.findall(r"rgba\(255,110,0,([\d.]+)\)", html))
    assert len(shades) > 3  # not only the centre token and zeros
    views.show_contexts(tiny.model, tiny.tokens, values, seq_pos, acts, 3)
    assert capsys.readouterr().out.rstrip("\n") == \
        views.contexts_table(tiny.model, tiny.tokens, values, seq_pos, 3)


def test_figures_have_axis_titles_and_fitting_forms():
    x, y = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.5, 2.9])
    fig = views.scatter_with_diagonal(x, y, ["a", "b", "c"], "attribution vs ablation", "true", "estimate")
    assert fig.layout.title.text == "attribution vs ablation"
    assert fig.layout.title.subtitle.text == "Pearson r = 0.948"  # numpy.corrcoef: 0.9483
    assert fig.data[1].name == "(prompt, latent)"  # what a point is, by default
    assert views.scatter_with_diagonal(x, y, "abc", "t", "x", "y", points="(prompt, error node)").data[1].name == "(prompt, error node)"
    assert (fig.layout.xaxis.title.text, fig.layout.yaxis.title.text) == ("true", "estimate")
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.xaxis.range == fig.layout.yaxis.range
    assert list(fig.data[1].customdata) == ["a", "b", "c"]

    effects = torch.tensor([[0.0, 2.0, -0.1, 0.01], [0.0, 1.0, -0.3, 0.0]])
    fig = views.top_latents_bar(effects, ["#0", "#1", "#2", "#3"], 2, "ablation", "change (nats)")
    assert list(fig.data[0].y) == ["#2", "#1"] and list(fig.data[0].x) == pytest.approx([-0.2, 1.5])
    assert "2 others not shown" in fig.layout.title.text and fig.layout.xaxis.title.text == "change (nats)"

    fig = views.histogram(torch.tensor([0.5, 0.55, 0.95, 0.99]), "AUROC", "AUROC", threshold=0.9)
    assert fig.layout.annotations[0].text == "2 above 0.9" and fig.layout.yaxis.title.text == "count"

    fig = views.bar(torch.tensor([1.0, -1.0]), ["a", "b"], "b", "head", "change (nats)")
    assert list(fig.data[0].y) == [1.0, -1.0] and fig.layout.yaxis.title.text == "change (nats)"
    fig = views.heatmap(torch.eye(2), ["a", "b"], ["c", "d"], "h", "latent", "prompt", "nats")
    assert fig.data[0].zmid == 0 and fig.data[0].colorbar.title.text == "nats"

    fig = views.edge_graph([["#1 at 'x'", "#2 at 'y'"], ["#9"]], [(0, 0, 1, 0, 0.5), (0, 1, 1, 0, -2.0)],
                           ["layer 0", "layer 1"], "edges", "gradient x activation")
    lines = [t for t in fig.data if t.mode == "lines"]
    assert [t.line.color for t in lines] == ["#4c72b0", "#c44e52"] and lines[1].line.width > lines[0].line.width
    assert "#2 at 'y' → #9<br>gradient x activation: -2" in fig.data[2].customdata


def test_latent_labels_mark_weak_ones():
    table = SimpleNamespace(lookup=lambda hook, i: {"label": "pronoun", "auroc": [0.97, 0.65][i]})
    bk = SimpleNamespace(explanations=table)
    assert views.latent_name(bk, HOOK, 0) == "#0 pronoun (AUROC 0.97)"
    assert views.latent_name(bk, HOOK, 1) == "#1 pronoun? (AUROC 0.65, weak)"
    assert views.latent_name(SimpleNamespace(explanations=None), HOOK, 3) == "#3"


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
    assert not re.search(r"<(script|link|img)[^>]*(src|href)=", html)  # loads nothing from elsewhere
    assert "</script>" in html and len(html) > 3_000_000  # plotly.js inlined
    data = dashboard_data(path)
    acts = explorer.sae_acts(tiny.model, sae, tiny.tokens)
    assert data["AGGDATA"]["max"][0] == pytest.approx(acts[..., latent].max().item(), abs=1e-4)
    top_logits = data["DASHBOARD_DATA"][str(latent)]["logitsTableData"]["0"]["posLogits"]
    expected = explorer.promoted_tokens(tiny.model, sae, latent, k=len(top_logits))
    assert [row["symbol"] for row in top_logits] == [f" {token}" for token, _ in expected]
    tokens = re.findall(r'"tok": "([^"]*)"', json.dumps(data["DASHBOARD_DATA"][str(latent)]))
    assert len(tokens) > 20 and all(t.startswith(" ") for t in tokens)  # words do not run together


def test_dashboard_summary_names_each_latent(tiny, capsys):
    dashboards.latent_dashboard(tiny.model, tiny.saes[HOOK], tiny.tokens, [7, 3], "dash")
    out = capsys.readouterr().out
    assert out.startswith(f"sae-vis dashboard of 2 latent(s) of {HOOK} over 16 sequences:")
    assert "latent #7: max activation" in out and "latent #3:" in out and views.RUN_TO_EXPLORE in out


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


def test_explorer_widget_builds_reacts_and_has_a_static_fallback(tiny, capsys):
    app = explorer.latent_explorer(tiny, ["w1 w2 w3", "w4 w5"], hook=HOOK, latent=5)
    out = capsys.readouterr().out
    assert "VBox(" not in out and views.RUN_TO_EXPLORE in out
    assert explorer.explorer_summary(tiny, "w1 w2 w3", HOOK, 5) in out  # what it opens on
    assert "<b>latent #5</b>" in out  # the detail panel (printed: no kernel captures it here)
    positions = app.children[1].children[0]
    assert len(positions.children) == 4
    button = positions.children[1].children[1]
    button.click()  # runs the callback: promoted tokens and contexts for that latent
    latent = int(button.description.split()[0][1:])
    assert f"<b>latent #{latent}</b>" in capsys.readouterr().out
    app.children[0].children[0].value = "w4 w5"
    assert len(positions.children) == 3
    assert "<table" in explorer._latent_detail(tiny, HOOK, latent, None).value


def test_explorer_reads_the_same_acts_with_the_sae_spliced_in(tiny):
    clean = explorer.sae_acts(tiny.model, tiny.saes[HOOK], tiny.tokens[:2])
    tiny.model.add_sae(tiny.saes[HOOK], use_error_term=True)
    try:
        spliced = explorer.sae_acts(tiny.model, tiny.saes[HOOK], tiny.tokens[:2])
    finally:
        tiny.model.reset_saes()
    torch.testing.assert_close(spliced, clean)


# ------------------------------------------------------------------ offline HTML (course.sh --headless)
def test_offline_html_loads_nothing_and_draws_math_figures_and_fallbacks():
    import nbformat
    import plotly.graph_objects as go

    from utils.course.headless import offline_html

    widget = {"application/vnd.jupyter.widget-view+json": {"model_id": "x", "version_major": 2,
                                                           "version_minor": 0},
              "text/html": "<p>the static summary</p>", "text/plain": "VBox(...)"}
    figure = go.Figure(go.Bar(x=["a"], y=[1])).to_plotly_json()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("Loss $x^2$, code `$HOME`, and\n$$\\sum_i f_i$$\n"
                                      "[![Open In Colab](https://example.org/badge.svg)](https://example.org)"),
        nbformat.v4.new_code_cell("w", outputs=[nbformat.v4.new_output("display_data", data=widget)]),
        nbformat.v4.new_code_cell("f", outputs=[nbformat.v4.new_output(
            "display_data", data={"application/vnd.plotly.v1+json": figure})]),
    ])
    html = offline_html(nb)
    assert not re.search(r"<(script|link|img)\b[^>]*(src|href)=\"https?://", html)
    assert html.count("<math") == 2 and 'display="block"' in html and "$HOME" in html
    assert "Open In Colab" in html and "the static summary" in html and "Plotly.newPlot" in html
    assert nb.cells[0].source.startswith("Loss $x^2$")  # the notebook itself is left as it was


def test_log_ticks_label_every_tick_in_full():
    """Plotly's own log ticks read "2 3 ... 9 100 2 3": ours are full numbers, increasing,
    covering the values, 1-2-5 per decade (1-3 over more than three decades)."""
    assert views.log_ticks([3, 40, 600])["ticktext"] == ["2", "5", "10", "20", "50", "100", "200", "500"]  # within 1.5x of the values
    wide = views.log_ticks([2, 23_000])
    assert wide["tickvals"][0] <= 2 * 1.5 and wide["tickvals"][-1] >= 23_000 / 1.5
    assert all(b > a for a, b in zip(wide["tickvals"], wide["tickvals"][1:])) and "30,000" in wide["ticktext"]
    assert views.log_ticks([0.02, 0.3])["ticktext"][:2] == ["0.02", "0.05"]
    with pytest.raises(ValueError, match="positive"):
        views.log_ticks([0, -1])
