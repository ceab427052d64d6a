"""The check harness: tolerances at the scale of a quantity, diagnoses that name the mistake,
watched side effects, strict and interactive failures, and the (chapter, name) registry."""
import pytest
import torch

from utils.course import checking, compare, settings
from utils.course.checking import CheckFailure, call, check_settings, expect_close, expect_sparse, expect_tensor, run
from utils.course.compare import diagnose_values

WANT = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) + 1


def message(got, want=WANT, dims="batch pos d_sae", **kwargs) -> str:
    with pytest.raises(CheckFailure) as info:
        expect_tensor(got, want, name="x", dims=dims, **kwargs)
    return str(info.value)


def test_equal_and_float_noise_pass():
    expect_tensor(WANT.clone(), WANT, name="x")
    noise = 1e-5 * WANT.abs().max() * torch.randn(WANT.shape, generator=torch.Generator().manual_seed(0))
    expect_tensor(WANT + noise, WANT, name="x")


def test_tolerance_is_relative_to_the_tensor_scale():
    want = torch.tensor([1000.0, 0.0, 1e-6])
    expect_tensor(torch.tensor([1000.0, 1e-3, -1e-3]), want, name="x")  # noise at the scale of 1000
    with pytest.raises(CheckFailure):
        expect_tensor(torch.tensor([1000.0, 20.0, 0.0]), want, name="x")


@pytest.mark.parametrize(
    "got,phrase",
    [
        ([1, 2], "should be a torch.Tensor, got list"),
        (WANT.long(), "should have dtype torch.float32, got torch.int64"),
        (WANT.double(), "float64 result usually means"),
        (WANT.permute(0, 2, 1), "permuted"),
        (WANT[None], "size-1 dim"),
        (WANT.sum(1), "one dim is missing (`pos`?)"),
        (WANT.reshape(2, 3, 2, 2), "one dim too many"),
        (WANT[:, 1:], "`pos` is off by one"),
        (-WANT, "wrong sign"),
        (WANT * 3, "constant factor (about 3x"),
        (WANT / 2, "average over `batch` instead of summing"),
        (torch.zeros_like(WANT), "is all zeros"),
        (torch.where(WANT > 20, float("nan"), WANT), "NaN or inf in 4 of 24"),
        (WANT.clone().index_put_((torch.tensor(1), torch.tensor(2), torch.tensor(3)), torch.tensor(0.0)), "zero in 1 entries"),
        (WANT.clone().index_put_((torch.tensor(1), torch.tensor(2), torch.tensor(3)), torch.tensor(5.0)), "all at batch=1"),
    ],
)
def test_diagnoses(got, phrase):
    assert phrase in message(got)


def test_shift_along_a_position_dim():
    want = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(1))
    shifted = torch.cat([torch.zeros(2, 1, 3), want[:, :-1]], 1)  # got[p] = want[p - 1]
    assert "shifted one position later along `pos`" in message(shifted, want)


def test_transposed_dims_of_equal_size():
    want = torch.randn(4, 4, generator=torch.Generator().manual_seed(2))
    assert "`d_down` and `d_up` swapped" in message(want.T, want, dims="d_down d_up")


def test_values_where_zero_is_expected():
    want = torch.randn(3, 5, generator=torch.Generator().manual_seed(3)).relu()
    got = torch.where(want == 0, 0.7, want)
    assert "non-zero values in" in message(got, want, dims="pos d_sae")


def test_constant_factor_within_noise_of_one_is_not_a_factor():
    got = WANT.clone()
    got[0, 0, 0] += 0.5  # one wrong entry: least-squares factor ~1.0001
    text = message(got)
    assert "constant factor" not in text and "1 of 24 entries differ" in text


def test_tensor_subclass_is_rejected():
    class Liar(torch.Tensor):
        pass

    assert "subclass of torch.Tensor" in message(WANT.as_subclass(Liar))


def test_known_mistake_wins_over_generic_diagnosis_and_is_lazy():
    calls = []
    mistakes = {"you used the encoder": lambda: calls.append(1) or WANT + 3}
    expect_tensor(WANT.clone(), WANT, name="x", mistakes=mistakes)
    assert not calls  # a right answer never computes the mistakes
    assert "you used the encoder" in message(WANT + 3, mistakes=mistakes)


def test_integer_mismatch_counts_entries():
    with pytest.raises(CheckFailure, match="1 of 3 entries differ"):
        expect_tensor(torch.tensor([1, 2, 4]), torch.tensor([1, 2, 3]), name="indices")


def test_float64_checks_accept_float64_results():
    with check_settings(dtype=torch.float64), compare.measuring(torch.float64):
        expect_tensor(WANT.double(), WANT, name="x")


def test_tolerance_follows_the_dtype_of_each_check_run():
    seen = []

    @checking.exercise_check("ch99_probe")
    def check_probe_dtype(fn):
        seen.append(compare.tolerance().dtype)

    try:
        with check_settings(dtype=torch.float64):
            checking.recheck(check_probe_dtype, print, None, seed_offset=0, known={})
        checking.recheck(check_probe_dtype, print, None, seed_offset=0, known={})
    finally:
        checking.CHECKS.pop(("ch99_probe", "probe_dtype"), None)
    assert seen == [torch.float64, torch.float32]
    assert compare.tolerance().dtype == torch.float32  # outside a check: the default


def test_sparse_results():
    dense = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    want = dense.to_sparse()
    expect_sparse(want, want.indices(), want.values(), name="J", shape=(2, 2), dims="a b")
    with pytest.raises(CheckFailure, match="dense tensor"):
        expect_sparse(dense, want.indices(), want.values(), name="J", shape=(2, 2), dims="a b")
    extra = torch.sparse_coo_tensor(torch.tensor([[0, 0, 1], [0, 1, 0]]), torch.tensor([0.0, 2.0, 3.0]), (2, 2), check_invariants=True)
    with pytest.raises(CheckFailure, match="stores 1 entries where none is expected"):
        expect_sparse(extra, want.indices(), want.values(), name="J", shape=(2, 2), dims="a b")
    optional = torch.tensor([[True, False], [False, False]])  # (0, 0) is within noise of active
    expect_sparse(extra, want.indices(), want.values(), name="J", shape=(2, 2), dims="a b", optional=optional)


def test_call_explains_stub_none_and_shows_the_learners_line():
    def stub():
        raise NotImplementedError

    def no_return():
        pass

    def broken():
        ratio = 1 / 0
        return ratio

    with pytest.raises(CheckFailure, match="not implemented yet"):
        call(stub)
    with pytest.raises(CheckFailure, match="returned None: did you forget a `return`"):
        call(no_return)
    with pytest.raises(CheckFailure) as info:
        call(broken)
    assert "raised ZeroDivisionError" in str(info.value) and "ratio = 1 / 0" in str(info.value)
    assert "utils/course/checking.py" not in str(info.value) and "line" in str(info.value)
    with pytest.raises(CheckFailure, match="expected a function, got int"):
        call(3)


def test_failure_renders_without_our_traceback():
    lines = CheckFailure("x: wrong sign")._render_traceback_()
    assert len(lines) == 1 and "x: wrong sign" in lines[0]


def test_expect_close():
    expect_close(torch.tensor(1.0), 1.0, name="loss")
    expect_close(1.0 + 1e-4, 1.0, name="loss")
    with pytest.raises(CheckFailure, match="wrong sign"):
        expect_close(-1.0, 1.0, name="loss")
    with pytest.raises(CheckFailure, match="should be a single number"):
        expect_close(torch.ones(2), 1.0, name="loss")
    with pytest.raises(CheckFailure, match="is nan"):
        expect_close(float("nan"), 1.0, name="loss")
    with pytest.raises(CheckFailure, match="should be a number"):
        expect_close(True, 1.0, name="loss")


def test_diagnose_values_localises_a_wrong_position():
    got = WANT.clone()
    got[:, 0] = 0.0
    assert "(position 0 is BOS)" in diagnose_values(got, WANT, ["batch", "pos", "d_sae"], 5e-3, 5e-3) or \
        "zero in" in diagnose_values(got, WANT, ["batch", "pos", "d_sae"], 5e-3, 5e-3)


# ---------------------------------------------------------------------------------------
# Watching side effects on the checks' own backend.


@pytest.fixture
def bk():
    return checking.backend()


def _watched(fn, bk, *args, grad=False):
    with pytest.raises(CheckFailure) as info:
        run(fn, bk, *args, grad=grad)
    assert not checking._damage(checking._IN_USE[0]), "the harm must be undone"
    return str(info.value)


def test_run_watches_hooks_and_saes(bk):
    sae = bk.saes["blocks.0.hook_resid_post"]

    def leaves_sae(model):
        model.add_sae(sae)
        return torch.ones(1)

    def leaves_hook(model):
        model.blocks[0].hook_resid_post.add_hook(lambda x, hook: x)
        return torch.ones(1)

    def leaves_permanent_hook(model):
        model.blocks[1].hook_resid_post.add_hook(lambda x, hook: x, is_permanent=True)
        return torch.ones(1)

    assert "left an SAE at blocks.0.hook_resid_post" in _watched(leaves_sae, bk, bk.model)
    assert "a hook on blocks.0.hook_resid_post" in _watched(leaves_hook, bk, bk.model)
    assert "a hook on blocks.1.hook_resid_post" in _watched(leaves_permanent_hook, bk, bk.model)


def test_run_watches_weights_flags_grad_mode_and_inputs(bk):
    def edits_weights(model):
        model.W_U[0, 0] += 1.0
        return torch.ones(1)

    def flips_flag(model):
        model.set_use_split_qkv_input(True)
        return torch.ones(1)

    def enables_grad(model):
        torch.set_grad_enabled(True)
        return torch.ones(1)

    def mutates(tokens):
        tokens[0, 0] = 7
        return torch.ones(1)

    with torch.no_grad():
        assert "changed weights in place (model.unembed.W_U)" in _watched(edits_weights, bk, bk.model)
    assert "use_split_qkv_input" in _watched(flips_flag, bk, bk.model)
    assert "left gradients enabled" in _watched(enables_grad, bk, bk.model)
    assert not torch.is_grad_enabled() or torch.is_grad_enabled()  # restored to the caller's mode
    tokens = torch.zeros(1, 3, dtype=torch.long)
    assert "changed its input `tokens` in place" in _watched(mutates, bk, tokens)
    assert tokens.sum() == 0, "the input is restored"


def test_run_watches_tensors_inside_dataclasses_and_gradients_left_on_inputs(bk):
    from utils.circuits import NodeBaseline

    baseline = NodeBaseline(latents={"h": torch.zeros(3)}, errors={"h": torch.zeros(2)})

    def mutates_baseline(baseline):
        baseline.latents["h"] += 1
        return torch.ones(1)

    def marks_input(x):
        x.requires_grad_(True)
        return torch.ones(1)

    assert "changed its input `baseline.latents['h']` in place" in _watched(mutates_baseline, bk, baseline)
    assert baseline.latents["h"].sum() == 0, "the input is restored"
    x = torch.ones(3)
    assert "left requires_grad switched on its input `x`" in _watched(marks_input, bk, x)
    assert not x.requires_grad


def test_run_watches_hooks_on_a_dictionarys_own_hook_points(bk):
    sae = bk.saes["blocks.0.hook_resid_post"]

    def hooks_the_sae(model):
        sae.hook_sae_acts_post.add_hook(lambda x, hook: 2 * x)
        return torch.ones(1)

    text = _watched(hooks_the_sae, bk, bk.model)
    assert "saes['blocks.0.hook_resid_post'].hook_sae_acts_post" in text and "sae.reset_hooks()" in text
    assert not sae.hook_sae_acts_post._forward_hooks, "the hook is removed"


def test_run_twice_catches_state_kept_between_calls(bk):
    calls = []

    def accumulates(x):
        calls.append(1)
        return x * len(calls)

    with pytest.raises(CheckFailure, match="a different result when called a second time"):
        run(accumulates, bk, torch.ones(2), twice=True)
    assert torch.equal(run(lambda x: x * 2, bk, torch.ones(2), twice=True), torch.full((2,), 2.0))


def test_sizes_of_the_inputs_name_a_wrong_size_and_a_factor(bk):
    from tests.checks.ch06_training import CHAPTER  # noqa: F401 (registers the chapter's checks)

    def reduced_the_wrong_dim(acts):
        return acts.mean(1)

    acts = torch.rand(600, 64)
    with compare.measuring():
        got = run(reduced_the_wrong_dim, bk, acts)
        assert ("dim 0 of `acts`", 600) in compare.tolerance().sizes
        with pytest.raises(CheckFailure, match="600 is the size of dim 0 of `acts`"):
            expect_tensor(got, acts.mean(0), name="density", dims="d_sae")
        with pytest.raises(CheckFailure, match="did you sum over dim 0 of `acts` where a mean was needed"):
            expect_tensor(acts.sum(0), acts.mean(0), name="density", dims="d_sae")


@pytest.mark.parametrize(
    "got,want,phrase",
    [
        (torch.tensor([1.0, 2.0, 3.0, 1.0]), torch.tensor([1.0, -2.0, 3.0, -1.0]), "absolute value of the expected"),
        (torch.tensor([1.0, 0.0, 3.0, 0.0]), torch.tensor([1.0, -2.0, 3.0, -1.0]), "negative entries set to zero"),
        (torch.tensor([3.0, 2.0, -0.5, -0.7]), torch.tensor([3.0, 2.0, 0.0, 0.0]), "a ReLU is missing"),
        (torch.tensor([0.5, 0.25]), torch.tensor([0.6, 0.25]), "expected [0.6, 0.25], got [0.5, 0.25]"),
    ],
)
def test_sign_families_and_few_numbers(got, want, phrase):
    assert phrase in message(got, want, dims="k")


def test_few_numbers_are_no_constant_factor():
    text = message(torch.tensor([0.3, 0.6]), torch.tensor([0.4, 0.8]), dims="two")
    assert "constant factor" not in text and "expected [0.4, 0.8], got [0.3, 0.6]" in text


@pytest.mark.parametrize(
    "got,want,dims,phrase",
    [
        (torch.zeros(2, 5, 12), torch.zeros(2, 5, 3, 4), "batch pos n_heads d_head", "`n_heads` and `d_head` are flattened"),
        (torch.zeros(4, 7), torch.zeros(4, 8), "target d_up_plus_error", "its `error` entry"),
        (torch.zeros(5), torch.zeros(4), "k", "a boundary case included or left out"),
    ],
)
def test_shape_diagnoses(got, want, dims, phrase):
    text = message(got, want, dims=dims)
    assert phrase in text and "BOS" not in text


def test_all_zeros_says_only_what_it_sees():
    text = message(torch.zeros_like(WANT))
    assert "is all zeros, where the expected values reach 24" in text and "never written" not in text


def test_an_exception_is_blamed_on_the_learners_line_not_the_standard_library(bk):
    def hooks_a_missing_point(model):
        with model.hooks(fwd_hooks=[("blocks.0.ln2.hook_normalized.hook_sae_acts_post", lambda x, hook: x)]):
            return model(torch.zeros(1, 3, dtype=torch.long))

    with pytest.raises(CheckFailure) as info:
        run(hooks_a_missing_point, bk, bk.model)
    text = str(info.value)
    assert "contextlib" not in text and "with model.hooks(" in text
    assert "the hook it writes" in text and "hook_name_out" in text


def test_interactive_failure_prints_and_returns(monkeypatch, capsys):
    monkeypatch.delenv(settings.STRICT, raising=False)
    from tests.checks.ch00_toolkit import check_latent_aurocs

    def latent_aurocs(acts, labels):
        raise NotImplementedError

    assert check_latent_aurocs(latent_aurocs) is None  # no exception: Run All goes on
    assert "not implemented yet" in capsys.readouterr().err
    monkeypatch.setenv(settings.STRICT, "1")
    with pytest.raises(CheckFailure):
        check_latent_aurocs(latent_aurocs)


# ---------------------------------------------------------------------------------------
# The registry.


def test_exercises_are_keyed_by_chapter_and_name_and_unique():
    checking._import_all_checks()
    keys = list(checking.CHECKS)
    assert len(keys) == len(set(keys))
    names = [name for _, name in keys]
    assert len(names) == len(set(names)), "two chapters share an exercise name: checked() needs chapter=..."


def test_checked_falls_back_to_the_reference_until_the_check_passes():
    from tests.checks.ch00_toolkit import check_latent_aurocs

    def latent_aurocs(acts, labels):  # a learner's unchecked version
        raise NotImplementedError

    checking.PASSED.pop(("ch00_toolkit", "latent_aurocs"), None)
    assert checking.checked(latent_aurocs).__module__ == "solutions.ch00_toolkit"
    from solutions.ch00_toolkit import latent_aurocs as reference
    check_latent_aurocs(reference)
    assert checking.checked(reference) is reference
    assert checking.checked(latent_aurocs) is not latent_aurocs  # another function: not checked
    with pytest.raises(ValueError, match="not an exercise"):
        checking.checked(test_expect_close)


def test_earlier_hands_a_later_chapter_the_learners_passed_function_or_the_reference(monkeypatch):
    from solutions.ch01_attribution import logit_diff as reference

    monkeypatch.delitem(checking.PASSED, ("ch01_attribution", "logit_diff"), raising=False)
    assert checking.earlier("ch01_attribution", "logit_diff") is reference

    def logit_diff(logits, answer_ids, distractor_ids):  # a learner's, whose check passed
        return reference(logits, answer_ids, distractor_ids)

    monkeypatch.setitem(checking.PASSED, ("ch01_attribution", "logit_diff"), logit_diff)
    assert checking.earlier("ch01_attribution", "logit_diff") is logit_diff
    with pytest.raises(ValueError, match="not an exercise of ch01_attribution"):
        checking.earlier("ch01_attribution", "ablate_nodes")
    with pytest.raises(ValueError, match="not a chapter"):
        checking.earlier("ch99_none", "logit_diff")


def test_checked_resolves_a_shared_name_by_chapter(monkeypatch):
    def twin(fn):
        pass
    twin.__name__ = "check_latent_aurocs"
    monkeypatch.setitem(checking.CHECKS, ("ch99_later", "latent_aurocs"), twin)

    def latent_aurocs(acts, labels):
        raise NotImplementedError

    monkeypatch.setattr(checking, "_LAST_CHAPTER", [])
    with pytest.raises(ValueError, match="several chapters"):
        checking.checked(latent_aurocs)
    assert checking.checked(latent_aurocs, chapter="ch00_toolkit").__module__ == "solutions.ch00_toolkit"


def test_recheck_uses_fresh_inputs_and_the_references_answers():
    from solutions.ch00_toolkit import latent_logit_effects
    from tests.checks.ch00_toolkit import check_latent_logit_effects

    checking.recheck(check_latent_logit_effects, latent_logit_effects, latent_logit_effects, seed_offset=7)

    def wrong(model, sae, latent):
        return -latent_logit_effects(model, sae, latent)

    with pytest.raises(CheckFailure, match="wrong sign"):
        checking.recheck(check_latent_logit_effects, wrong, latent_logit_effects, seed_offset=7)
