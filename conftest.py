"""pytest options of the course: ``--impl solutions|exercises`` picks the code the checks run
on; under pytest-xdist (``SAE_TEST_WORKERS=N bash course.sh test``), the order in which each
worker takes the files (:func:`pytest_collection_modifyitems`)."""
import pytest

from utils.course import settings

# Checks raise on failure here (in a notebook run by hand they print and let Run All go on);
# offline; no progress bars (widgets with random ids). Notebook kernels inherit them.
settings.for_tests()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--impl",
        choices=("solutions", "exercises"),
        default="solutions",
        help="run the checks on the reference (solutions, default) or on your exercises/ modules",
    )


@pytest.fixture
def impl(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--impl")


@pytest.fixture
def meta_tests(impl: str) -> None:
    """Tests of the course itself (checks must fail on stubs/mistakes) run with the reference."""
    if impl != "solutions":
        pytest.skip("a test of the checks themselves; it runs with --impl solutions")


# ---------------------------------------------------------------------------------------
# In several processes (``SAE_TEST_WORKERS=N bash course.sh test``: pytest-xdist, ``--dist
# loadfile``), each file runs
# whole on one worker: a test file (its module fixtures computed once; tests sharing a cached
# result, like the grading catalog, share a file) or a notebook under nbval (its cells share
# a kernel and run in order). Files are handed out in collection order (``--no-loadscope-reorder``),
# the longest first, so that no long one starts last: the order changes how long the run
# takes, never what it checks.
LONGEST_FIRST = [  # seconds alone on an idle 2-core machine (pytest --durations=0), longest first
    "tests/test_browser_chapters.py",  # 266: Run All of every chapter in JupyterLab
    "tests/test_cheats.py",            # 232: the cheat catalog and the course's notebooks, graded
    "tests/test_scaleups.py",          # 178: every scale-up cell on the simulated hub
    "tests/test_browser.py",           # 84: Run All of two solved chapters in JupyterLab
    "tests/test_classroom.py",         # 66
    "tests/test_robustness.py",        # 62
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker, the longest files first (stable: each file keeps its order)."""
    if hasattr(config, "workerinput"):
        rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
