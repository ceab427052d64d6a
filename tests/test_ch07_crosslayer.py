"""Chapter 07's checks: pass on the reference (or your code, with --impl exercises), fail on
the stubs and on every catalogued mistake."""
from tests.harness import chapter_tests

test_implementation, test_stub_fails, test_mistake_caught = chapter_tests("ch07_crosslayer")
