"""The model organism: its generator, tokenizer, committed artifacts and their thresholds.

Thresholds are those of issue 3, measured here on a small held-out evaluation (the report
command measures the same figures on a larger one).
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from utils.backends import load_backend  # noqa: E402
from utils.toy.build import specs_of  # noqa: E402
from utils.toy.generator import BROAD_LABELS, LABEL_NAMES, PROFESSIONS, World  # noqa: E402
from utils.nodes import layer_of  # noqa: E402
from utils.metrics import activation_precision  # noqa: E402
from utils.toy.report import firing_frequency, flat_labels, full_report, read_dictionary  # noqa: E402
from utils.toy.training import EVAL_SEEDS  # noqa: E402

TASK_FLOOR = {"induction": 0.90}  # every other task: 0.95
SPLICED_FLOOR = {"induction": 0.80}  # every other task: 0.90


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """On a busy 2-core machine, two torch threads per process made this module 20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bk():
    return load_backend("toy")


@pytest.fixture(scope="module")
def dictionaries(bk):
    return {**bk.saes, **bk.attn_saes,
            **{f"transcoder.{layer_of(hook)}": tc for hook, tc in bk.transcoders.items()}}


@pytest.fixture(scope="module")
def figures(bk, dictionaries):
    return full_report(bk.model, dictionaries, specs_of(bk.model), bk.world,
                       n_prompts=64, n_seqs=96)


def test_tokenizer_round_trip_and_bos_once(bk):
    model, world = bk.model, bk.world
    text = "when mary and john went to the store , john gave a book to"
    tokens = model.to_tokens(text)
    assert tokens[0, 0].item() == model.tokenizer.bos_token_id
    assert (tokens == model.tokenizer.bos_token_id).sum().item() == 1
    assert tokens[0].tolist() == world.encode(text.split())
    assert model.to_str_tokens(text) == ["<bos>", *text.split()]
    assert model.to_string(tokens[0]) == "<bos> " + text
    assert model.tokenizer.name_or_path.endswith("tokenizer")


def test_generator_is_deterministic():
    a, b = World(), World()
    for task in a.tasks:
        assert a.task_batch(task, 8, seed=3).prompts == b.task_batch(task, 8, seed=3).prompts
        assert a.task_batch(task, 8, seed=3).prompts != a.task_batch(task, 8, seed=4).prompts
    assert torch.equal(a.corpus(4, 48, seed=1).tokens, b.corpus(4, 48, seed=1).tokens)


@pytest.mark.parametrize("task", World.tasks)
def test_task_batches_stack_and_answer(bk, task):
    batch = bk.world.task_batch(task, 16)
    assert batch.tokens.shape == batch.corrupted_tokens.shape
    assert set(batch.labels) == set(LABEL_NAMES)
    assert all(mask.shape == batch.tokens.shape for mask in batch.labels.values())
    assert torch.equal(batch.tokens, bk.model.to_tokens(batch.prompts))
    assert torch.equal(batch.corrupted_tokens, bk.model.to_tokens(batch.corrupted))
    assert torch.equal(batch.answer_ids, bk.model.to_tokens(batch.answers, prepend_bos=False)[:, 0])
    assert batch.correct[torch.arange(16), batch.answer_ids].all()
    assert not batch.correct[torch.arange(16), batch.distractor_ids].any()


def test_bios_correlation():
    world = World()
    confounded = world.bios(64, correlation=1.0)
    stereotype = torch.tensor([PROFESSIONS[confounded.professions[j]][1]
                               for j in confounded.profession])
    assert torch.equal(confounded.gender, stereotype)
    independent = world.bios(400, correlation=0.0)
    agree = (independent.gender == 1 - independent.profession).float().mean().item()
    assert 0.4 < agree < 0.6


def test_every_dictionary_attaches_and_error_term_is_exact(bk, dictionaries):
    model = bk.model
    tokens = bk.world.task_batch("ioi", 8).tokens
    with torch.no_grad():
        clean = model(tokens)
        for name, sae in dictionaries.items():
            model.add_sae(sae, use_error_term=True)
            try:
                assert sae.cfg.metadata.hook_name in model.acts_to_saes, name
                torch.testing.assert_close(model(tokens), clean, atol=1e-4, rtol=1e-4)
            finally:
                model.reset_saes()


def test_explanation_table_covers_every_latent(bk, dictionaries):
    table = bk.explanations
    assert len(table) == sum(sae.cfg.d_sae for sae in dictionaries.values())
    row = table.lookup("blocks.0.hook_resid_post", 0)
    assert {"label", "auroc", "top_contexts", "top_tokens"} <= set(row)
    assert all(r["label"] == "country" or "country" in " ".join(r["top_contexts"] + r["top_tokens"])
               for r in table.search("country"))


def test_tasks_are_solved(figures):
    for task, scores in figures["tasks"].items():
        assert scores["accuracy"] >= TASK_FLOOR.get(task, 0.95), (task, scores)
        assert scores["logit_diff"] > 0, (task, scores)


def test_residual_saes(figures):
    for name, d in figures["dictionaries"].items():
        if d["kind"] != "resid_sae":
            continue
        assert d["explained_variance"] >= 0.90, (name, d["explained_variance"])
        assert d["ce_loss_recovered"] >= 0.95, (name, d["ce_loss_recovered"])
        assert d["added_loss"] <= 0.15, (name, d["added_loss"])
        assert d["l0"] <= 30, (name, d["l0"])
        for task, accuracy in d["task_accuracy_spliced"].items():
            assert accuracy >= SPLICED_FLOOR.get(task, 0.90), (name, task, accuracy)


def test_transcoders(figures):
    for name, d in figures["dictionaries"].items():
        if d["kind"] != "transcoder":
            continue
        assert d["explained_variance"] >= 0.90, (name, d["explained_variance"])
        assert d["l0"] <= 15, (name, d["l0"])
        assert d["ce_loss_recovered"] >= 0.95, (name, d["ce_loss_recovered"])


def test_planted_features_are_recovered(figures):
    best = {}
    for d in figures["dictionaries"].values():
        for label, hit in d["recovery"].items():
            best[label] = max(best.get(label, 0.0), hit["auroc"])
    narrow = [label for label, score in best.items()
              if label not in BROAD_LABELS and score >= 0.95]
    assert len(narrow) >= 6, best
    for d in figures["dictionaries"].values():
        assert all("probe5_auroc" in d["recovery"][label] for label in BROAD_LABELS)


def test_precision_and_frequency_on_a_hand_made_case():
    # 4 tokens, 3 latents (the second never fires), 2 labels.
    acts = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    labels = torch.tensor([[True, False], [False, True], [True, False], [False, False]])
    want = torch.tensor([[3 / 4, 0.0, 1 / 4],   # label 0: tokens 0 and 2
                         [0.0, 0.0, 3 / 4]])    # label 1: token 1
    torch.testing.assert_close(activation_precision(acts, labels), want)
    torch.testing.assert_close(firing_frequency(acts), torch.tensor([3 / 4, 0.0, 1 / 2]))
    # A latent firing equally everywhere has the label's share of tokens as its precision.
    flat = torch.ones(4, 1)
    torch.testing.assert_close(activation_precision(flat, labels), labels.float().mean(0)[:, None])


def test_report_carries_precision_beside_auroc(figures):
    for d in figures["dictionaries"].values():
        for label, hit in d["recovery"].items():
            assert {"latent", "auroc", "precision", "frequency"} <= set(hit), label
            assert 0.0 <= hit["precision"] <= 1.0 and 0.0 <= hit["frequency"] <= 1.0, (label, hit)
    assert set(figures["label_share"]) == set(LABEL_NAMES)


def test_explanation_precision_matches_its_corpus(bk):
    """The table's precision of a row is the share of that latent's activation on its label,
    on the table's own held-out corpus (seed EVAL_SEEDS + 1)."""
    hook = "blocks.1.hook_resid_post"
    spec = next(s for s in specs_of(bk.model) if s.name == hook)
    corpus = bk.world.corpus(256, 48, seed=EVAL_SEEDS + 1)
    latents = read_dictionary(bk.model, bk.saes[hook], spec, corpus.tokens).latents
    labels = flat_labels(corpus.labels)
    for row in [r for r in bk.explanations.rows if r["dictionary"] == hook][:16]:
        acts = latents[:, row["latent"]]
        want = (acts[labels[row["label"]]].sum() / acts.sum()).item() if acts.sum() > 0 else 0.0
        assert abs(row["precision"] - want) < 1e-3, (row["latent"], row["precision"], want)
