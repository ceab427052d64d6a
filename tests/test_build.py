"""The single-source build: generated files in sync, conventions enforced, notebooks small."""
import jupytext
import nbformat
import pytest

from tests.harness import every_exercise_has_mistakes
from utils.course import ROOT, build, source
from utils.course.chapter import Chapter, names

CHAPTERS = names()


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_generated_files_in_sync(chapter, impl):
    # A learner edits exercises/ by design; with --impl exercises those files are theirs.
    stale = build.out_of_sync(Chapter(chapter), include_exercises=impl == "solutions")
    assert not stale, f"run `{build.COMMAND} {chapter}` and commit: {stale}"


def test_readme_chapter_table_in_sync():
    assert build.readme_in_sync(), f"run `{build.COMMAND} --no-execute` and commit README.md"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_exercise_has_three_mistakes(chapter):
    assert not every_exercise_has_mistakes(chapter), "each exercise needs >= 4 catalogued mistakes"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_notebooks_are_small_and_executed(chapter):
    for folder in ("chapters", "solutions"):
        path = ROOT / folder / f"{chapter}.ipynb"
        assert path.stat().st_size < 2_000_000, f"{path} is over 2 MB: keep large HTML out of it"
    solved = nbformat.read(ROOT / "solutions" / f"{chapter}.ipynb", as_version=4)
    code = [c for c in solved.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "the solution notebook must be executed"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_learner_notebook_layout(chapter):
    nb = nbformat.read(ROOT / "chapters" / f"{chapter}.ipynb", as_version=4)
    assert source.repository_url().removeprefix("https://github.com/") in nb.cells[0].source  # Colab link
    assert "![" not in nb.cells[0].source  # as text: an image would be broken offline
    assert "google.colab" in nb.cells[1].source  # install cell, inert offline
    exercises = [c for c in nb.cells if "exercise" in c.metadata]
    checks = [c for c in nb.cells if "check" in c.metadata]
    assert [c.metadata["exercise"] for c in exercises] == [c.metadata["check"] for c in checks]
    assert all("NotImplementedError" in c.source and source.BEGIN not in c.source for c in exercises)
    assert "".join(c.source for c in nb.cells).count("<summary>Solution</summary>") == len(exercises)


SOURCE = '''# %% [markdown]
# # Title

# %% [markdown] exercise="double" title="Double a number" difficulty=1 importance=1 minutes=1
# Double it.

# %%
def double(x):
    """2x."""
    y = x
    ### BEGIN SOLUTION
    return 2 * y
    ### END SOLUTION
'''


def test_stub_and_reference_from_markers():
    nb = jupytext.reads(SOURCE, fmt="py:percent")
    (ex,) = source.find_exercises(nb, "demo").values()
    stub = source.stub(ex.code, ex.name)
    assert 'raise NotImplementedError("double: your code here")' in stub and "2 * y" not in stub
    assert "y = x" in stub  # code outside the markers stays
    assert source.strip_markers(ex.code).count("return 2 * y") == 1 and source.BEGIN not in source.strip_markers(ex.code)


@pytest.mark.parametrize(
    "broken,phrase",
    [
        (SOURCE.replace(" minutes=1", ""), "lacks ['minutes']"),
        (SOURCE.replace('number"', 'number (1/3)"'), "drop the (k/n)"),
        (SOURCE.replace("def double", "def twice"), "must define `def double(`"),
        (SOURCE.replace("    ### BEGIN SOLUTION\n", ""), "has no `### BEGIN SOLUTION` block"),
        (SOURCE + '\n# %% [markdown] hint="triple"\n# no such exercise\n', "hint for unknown"),
    ],
)
def test_conventions_are_enforced(broken, phrase):
    with pytest.raises(ValueError, match=None) as info:
        source.find_exercises(jupytext.reads(broken, fmt="py:percent"), "demo")
    assert phrase in str(info.value)
