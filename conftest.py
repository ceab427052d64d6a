"""pytest options of the course: ``--impl solutions|exercises`` picks the code the checks run on."""
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
