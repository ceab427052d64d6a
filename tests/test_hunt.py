"""The hunt model (``utils.hunt``): its committed artifacts, the pool and its seeds, the
planted tasks' accuracy, the planted mechanism as measured by patching, the ground truth's
consistency with the model, and what the learner-facing objects hide.

The build is not run here (``python -m utils.hunt build``); these tests load its artifacts.
"""
from __future__ import annotations

import inspect
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import utils.hunt as hunt  # noqa: E402
from utils.backends import load_backend  # noqa: E402
from utils.hunt import Hidden, hunt_prompts, hunt_task, pool_size, rule_menu  # noqa: E402
from utils.hunt import planted  # noqa: E402
from utils.hunt.mechanism import CircuitScorer, baseline_for, end_metrics, knockout_metric, patched_metric  # noqa: E402
from utils.course.hunt import load_truth, true_rule, variant_truth  # noqa: E402
from utils.hunt.truth import labelled_prompts, positions_of  # noqa: E402
from utils.hunt.world import HuntWorld, hunt_vocabulary  # noqa: E402
from utils.nodes import Node  # noqa: E402
from utils.toy.generator import LABEL_NAMES, TASKS, vocabulary  # noqa: E402

VARIANTS = list(range(pool_size()))
ACCURACY_FLOOR = 0.95
PLANTED_SHARE, STRAY_SHARE = 0.5, 0.1  # a planted site carries at least this; a site off the answer positions at most that


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.no_grad():
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bk():
    return load_backend("hunt")


@pytest.fixture(scope="module")
def truth():
    return load_truth()


# ---------------------------------------------------------------------------------------
# Artifacts.


def test_same_kind_as_the_organism(bk):
    toy = load_backend("toy")
    for key in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "normalization_type", "act_fn", "n_ctx"):
        assert getattr(bk.model.cfg, key) == getattr(toy.model.cfg, key), key
    assert bk.name == "hunt" and bk.model.cfg.model_name == "hunt"
    assert sorted(bk.dictionaries) == sorted(toy.dictionaries)
    for (kind, layer), sae in bk.dictionaries.items():
        assert type(sae) is type(toy.dictionary(kind, layer))
        assert sae.cfg.d_sae == toy.dictionary(kind, layer).cfg.d_sae
        assert sae.cfg.metadata.hook_name == toy.dictionary(kind, layer).cfg.metadata.hook_name


def test_vocabulary_extends_the_organism(bk):
    words = hunt_vocabulary()
    assert words[:len(vocabulary())] == vocabulary()  # the organism's ids are kept
    assert set(words[len(vocabulary()):]) == set(planted.NEW_WORDS)
    assert bk.model.tokenizer.get_vocab() == {w: i for i, w in enumerate(words)}
    text = hunt_prompts(0, 1).prompts[0]
    assert bk.model.to_tokens(text)[0].tolist() == HuntWorld().encode(text.split())


def test_artifacts_are_small():
    total = sum(p.stat().st_size for p in hunt.ARTIFACTS.rglob("*") if p.is_file())
    assert total <= 5.5e6, f"hunt artifacts take {total / 1e6:.2f} MB"


# ---------------------------------------------------------------------------------------
# The pool and its seeds.


def test_pool_is_deterministic_and_neighbours_differ():
    seeds = range(-20, 200)
    assert [hunt_task(s) for s in seeds] == [hunt_task(s) for s in seeds]
    assert all(hunt_task(s) != hunt_task(s + 1) for s in seeds)
    assert {hunt_task(s) for s in seeds} == set(planted.CODENAMES.values())
    for s in (0, 5, 17, 1234567):
        a, b = hunt_prompts(s, 8), hunt_prompts(s, 8)
        assert a.prompts == b.prompts and a.corrupted == b.corrupted and torch.equal(a.tokens, b.tokens)
        assert hunt_prompts(s + pool_size(), 8).task == a.task  # the same variant ...
        assert hunt_prompts(s + pool_size(), 8).prompts != a.prompts  # ... with other prompts
        assert rule_menu(s) == rule_menu(s)


@pytest.mark.parametrize("seed", ["3", 2.0, None, True])
def test_seeds_must_be_ints(seed):
    with pytest.raises(TypeError, match="int"):
        hunt_task(seed)


def test_bad_arguments_get_clear_messages():
    with pytest.raises(ValueError, match="split"):
        hunt_prompts(0, 4, split="train")
    with pytest.raises(ValueError, match="positive int"):
        hunt_prompts(0, 0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_prompts_share_one_layout(variant):
    batch = hunt_prompts(variant, 32)
    assert batch.tokens.shape == batch.corrupted_tokens.shape
    assert (batch.answer_ids != batch.distractor_ids).all()
    words = [p.split() for p in batch.prompts]
    twins = [p.split() for p in batch.corrupted]
    fixed = [i for i in range(len(words[0])) if len({w[i] for w in words + twins}) == 1]
    assert len(fixed) < len(words[0]), "every position is the same in every prompt"


@pytest.mark.parametrize("seed", range(2 * pool_size()))
def test_menu_holds_the_rule_once_in_a_seeded_order(seed):
    menu = rule_menu(seed)
    task = planted.PLANTED[seed % len(planted.PLANTED)]
    assert sorted(menu) == sorted(planted.RULES[task]) and menu.count(true_rule(seed)) == 1
    positions = {rule_menu(s).index(true_rule(s)) for s in range(seed % len(planted.PLANTED), 60, len(planted.PLANTED))}
    assert len(positions) > 1, "the true rule sits at the same place in every menu"


# ---------------------------------------------------------------------------------------
# The planted tasks on the model.


@pytest.mark.parametrize("variant", VARIANTS)
def test_accuracy_on_held_out_prompts(bk, variant):
    batch = hunt_prompts(variant, 64, split="check")
    top = bk.model(batch.tokens)[:, -1].argmax(-1)
    accuracy = (top == batch.answer_ids).float().mean().item()
    assert accuracy >= ACCURACY_FLOOR, f"variant {variant} ({batch.task}): accuracy {accuracy:.3f}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_menus_true_rule_is_the_generators(variant):
    """The first rule of the menu answers every prompt as the generator does; no decoy
    agrees with the generator on more than half the prompts (nor on none: 0 is allowed, a
    decoy is refuted by its first prompt)."""
    batch = labelled_prompts(variant, 64, split="check")
    task = planted.PLANTED[variant % len(planted.PLANTED)]
    answers = [planted.decoy_answers(task, p.split()) for p in batch.prompts]
    assert [a[0] for a in answers] == batch.answers
    for i in range(1, len(planted.RULES[task])):
        agreement = sum(a[i] == y for a, y in zip(answers, batch.answers)) / len(answers)
        assert agreement <= 0.5, f"{planted.RULES[task][i]!r} gives the answer on {agreement:.2f} of the prompts"


@pytest.mark.parametrize("variant", VARIANTS)
def test_only_the_true_rule_fits_the_predictions(bk, variant):
    """The model follows the true rule; each decoy is refuted by a good share of prompts."""
    batch = hunt_prompts(variant, 64, split="check")
    task = planted.PLANTED[variant % len(planted.PLANTED)]
    predicted = bk.model.to_str_tokens(bk.model(batch.tokens)[:, -1].argmax(-1))
    answers = [planted.decoy_answers(task, p.split()) for p in batch.prompts]
    agreement = [sum(a[i] == y for a, y in zip(answers, predicted)) / len(predicted) for i in range(len(planted.RULES[task]))]
    assert agreement[0] >= ACCURACY_FLOOR
    assert max(agreement[1:]) <= 0.5, f"a decoy rule fits {max(agreement[1:]):.2f} of the predictions"


@pytest.mark.parametrize("variant", VARIANTS)
def test_planted_sites_carry_the_answer_and_others_do_not(bk, variant):
    """On held-out prompts, every claim of the design carries at least PLANTED_SHARE of the
    logit difference: patching its site at its position from the resampled twin, or (for a
    claim that the site reads a position) knocking out that attention. Patching the
    residual stream, an attention or an MLP output at any position that carries no answer
    moves less than STRAY_SHARE."""
    model = bk.model
    batch = labelled_prompts(variant, 32, split="check")
    task = planted.PLANTED[variant % len(planted.PLANTED)]
    clean, twin = end_metrics(model, batch)

    def share(metric: torch.Tensor) -> float:
        return (clean - metric.mean().item()) / (clean - twin)

    for claim in planted.DESIGN[task]:
        pos = positions_of(batch, (claim["at"],))[0]
        measured = share(patched_metric(model, batch, claim["site"], claim["layer"], pos))
        if "reads" in claim:  # knocking the attention out removes the information: share of m_clean lost
            reads = positions_of(batch, (claim["reads"],))
            lost = (clean - knockout_metric(model, batch, claim["layer"], pos, reads).mean().item()) / clean
            measured = max(measured, lost)
        assert measured >= PLANTED_SHARE, f"{claim}: share {measured:.3f} at position {pos}"
    carriers = set(positions_of(batch, planted.ANSWER_LABELS[task]))
    for pos in set(range(batch.tokens.shape[1])) - carriers:
        for site in ("resid", "attn", "mlp"):
            for layer in range(model.cfg.n_layers):
                measured = share(patched_metric(model, batch, site, layer, pos))
                assert abs(measured) < STRAY_SHARE, f"{site}{layer} at position {pos} carries {measured:.3f}"


# ---------------------------------------------------------------------------------------
# The ground truth.


def test_truth_covers_every_variant(truth):
    assert truth["pool_size"] == pool_size() == len(truth["variants"])
    for v, entry in enumerate(truth["variants"]):
        assert entry["variant"] == v and entry["codename"] == hunt_task(v)
        assert entry["rules"][0]["rule"] == true_rule(v)
        assert all(claim["holds"] for claim in entry["mechanism"]), entry["mechanism"]
        assert entry["circuit"]["faithfulness"] >= truth["faithful_target"]
        positions = entry["positions"]  # the labels' answer positions are what patching finds
        assert sorted(set(positions["token_positions"]) | set(positions["computing_positions"])) == positions["answer_positions"]
        assert entry["circuit"]["required_components"], "no component of the reference circuit is required"


@pytest.mark.parametrize("variant", VARIANTS)
def test_truth_matches_the_committed_model(bk, variant):
    """The recorded positions, prompts and reference circuit are those of the committed
    model: recomputed faithfulness of the reference circuit matches the record."""
    entry = variant_truth(variant)
    batch = labelled_prompts(variant)
    assert batch.prompts[0] == entry["prompt"]
    assert positions_of(batch, planted.ANSWER_LABELS[entry["task"]]) == entry["positions"]["answer_positions"]
    saes = list(bk.dictionaries.values())
    scorer = CircuitScorer(bk.model, saes, batch, baseline_for(bk.model, saes, labelled_prompts(variant, 64, split="baseline").tokens))
    f = scorer.faithfulness(entry["circuit"]["nodes"])
    assert f == pytest.approx(entry["circuit"]["faithfulness"], abs=0.02)
    no_errors = [n for n in entry["circuit"]["nodes"] if not n.is_error]
    assert scorer.faithfulness(no_errors) < f - 0.2, "the reference circuit does not need its error nodes"


def test_library_faithfulness_is_chapter_02s(bk):
    from solutions.ch02_error_nodes import faithfulness

    entry = variant_truth(1)
    batch = labelled_prompts(1, 16)
    saes = list(bk.dictionaries.values())
    baseline = baseline_for(bk.model, saes, labelled_prompts(1, 64, split="baseline").tokens)
    nodes = entry["circuit"]["nodes"][:40]
    ours = CircuitScorer(bk.model, saes, batch, baseline).faithfulness(nodes)
    theirs = faithfulness(bk.model, saes, nodes, batch.tokens, batch.answer_ids, batch.distractor_ids, baseline)
    assert ours == pytest.approx(theirs, abs=1e-5)


# ---------------------------------------------------------------------------------------
# What the learner receives hides the ground truth.


def test_learner_world_has_only_the_organisms_labels(bk):
    world = bk.world
    assert set(world.tasks) <= set(TASKS) and set(world.label_names) <= set(LABEL_NAMES)
    corpus = world.corpus(8, 48, seed=3)
    assert set(corpus.labels) == set(world.label_names)
    hidden = set(planted.PLANTED) | set(planted.LABEL_NAMES) | {label for labels in planted.TASK_LABELS.values() for label in labels}
    assert not hidden & set(world.corpus_mix), "the corpus mixture names a planted task"
    assert not hidden & set(vars(world)) and not hidden & set(dir(world))
    assert {row["label"] for row in bk.explanations.rows} <= set(LABEL_NAMES)
    for task in planted.PLANTED:
        with pytest.raises(ValueError):
            world.task_batch(task, 2)


def test_hunt_prompts_hide_labels_and_names(bk):
    batch = hunt_prompts(4, 8)
    assert isinstance(batch.labels, Hidden)
    with pytest.raises(PermissionError, match="hides"):
        batch.labels["partner.readout"]
    with pytest.raises(PermissionError, match="hides"):
        list(batch.labels)
    assert batch.task in planted.CODENAMES.values()
    leaks = set(planted.PLANTED) | {label for labels in planted.TASK_LABELS.values() for label in labels}
    for field in ("task",):
        assert getattr(batch, field) not in leaks


def test_learner_facing_docs_do_not_describe_the_tasks():
    from utils.hunt import world as world_module

    texts = [hunt.__doc__, world_module.__doc__, HuntWorld.__doc__, Hidden.__doc__]
    texts += [inspect.getdoc(f) for f in (hunt.hunt_prompts, hunt.hunt_task, hunt.rule_menu, hunt.load, hunt.pool_size,
                                          hunt.hunt_seed, hunt.rule_answers, hunt.HuntSubmission)]
    words = {"home", "town", "country", "city", "names", "number", "places", "offset", "before"} | set(planted.PLANTED)
    for text in texts:
        found = {w for w in words if w in (text or "").lower().split() or f"``{w}``" in (text or "")}
        assert not found, f"a learner-facing docstring mentions {found}: {text[:80]!r}"
    for rules in planted.RULES.values():
        for rule in rules:
            assert all(rule not in (text or "") for text in texts)


def test_every_node_id_in_the_truth_parses(truth):
    for entry in truth["variants"]:
        for text, _ in entry["circuit"]["ranking"]:
            assert str(Node.parse(text)) == text
