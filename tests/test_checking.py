"""The check harness names each kind of mistake (unit tests, no model needed)."""
import pytest
import torch

from utils.checking import CheckFailure, call, expect_close, expect_tensor

WANT = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) + 1


def message(got, want=WANT, **kwargs) -> str:
    with pytest.raises(CheckFailure) as info:
        expect_tensor(got, want, name="x", dims="batch pos d_sae", **kwargs)
    return str(info.value)


def test_equal_passes():
    expect_tensor(WANT.clone(), WANT, name="x")
    expect_tensor(WANT + 1e-7, WANT, name="x")


@pytest.mark.parametrize(
    "got,phrase",
    [
        ([1, 2], "should be a torch.Tensor, got list"),
        (WANT.long(), "should have dtype torch.float32, got torch.int64"),
        (WANT.permute(0, 2, 1), "permuted"),
        (WANT[None], "size-1 dim"),
        (WANT.sum(1), "one dim is missing (`pos`?)"),
        (WANT.reshape(2, 3, 2, 2), "one dim too many"),
        (-WANT, "wrong sign"),
        (WANT * 2, "constant factor (about 2x"),
        (torch.where(WANT > 20, float("nan"), WANT), "NaN or inf in 4 of 24"),
        (WANT.clone().index_put_((torch.tensor(1), torch.tensor(2), torch.tensor(3)), torch.tensor(0.0)), "first at index [1, 2, 3]"),
    ],
)
def test_diagnoses(got, phrase):
    assert phrase in message(got)


def test_shape_names_dims():
    assert "expected shape [batch=2, pos=3, d_sae=4], got [2, 4]" in message(WANT[:, 0])


def test_known_mistake_wins_over_generic_diagnosis():
    assert "you used the encoder" in message(WANT + 3, mistakes={"you used the encoder": WANT + 3})


def test_integer_mismatch_counts_entries():
    with pytest.raises(CheckFailure, match="1 of 3 entries differ"):
        expect_tensor(torch.tensor([1, 2, 4]), torch.tensor([1, 2, 3]), name="indices")


def test_call_explains_stub_none_and_exceptions():
    def stub():
        raise NotImplementedError

    def no_return():
        pass

    def broken():
        return 1 / 0

    with pytest.raises(CheckFailure, match="not implemented yet"):
        call(stub)
    with pytest.raises(CheckFailure, match="returned None: did you forget a `return`"):
        call(no_return)
    with pytest.raises(CheckFailure, match="raised ZeroDivisionError"):
        call(broken)
    with pytest.raises(CheckFailure, match="expected a function, got int"):
        call(3)


def test_expect_close():
    expect_close(torch.tensor(1.0), 1.0, name="loss")
    with pytest.raises(CheckFailure, match="wrong sign"):
        expect_close(-2.0, 2.0, name="loss")
    with pytest.raises(CheckFailure, match="single number"):
        expect_close(torch.ones(3), 1.0, name="loss")
    with pytest.raises(CheckFailure, match="is nan"):
        expect_close(float("nan"), 1.0, name="loss")


def test_checked_falls_back_to_the_reference_until_the_check_passes():
    from utils import checking

    def latent_aurocs(acts, labels):  # a learner's unchecked version
        raise NotImplementedError

    checking.PASSED.discard("latent_aurocs")
    assert checking.checked(latent_aurocs).__module__ == "solutions.ch00_toolkit"
    checking.PASSED.add("latent_aurocs")
    try:
        assert checking.checked(latent_aurocs) is latent_aurocs
    finally:
        checking.PASSED.discard("latent_aurocs")
    with pytest.raises(ValueError, match="not an exercise"):
        checking.checked(test_expect_close)
