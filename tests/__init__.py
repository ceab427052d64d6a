"""Tests and checks of the course.

``tests.checks.<chapter>`` holds the checks notebooks call; ``tests.mistakes.<chapter>`` the
catalog of plausible wrong implementations each check must catch; ``tests/fixtures`` the
known outputs, recorded from the reference by ``python -m utils.course record``.
"""
