"""README's `bash course.sh --headless` runs a chapter end to end (issue 21).

Chapter 00 (the cheapest, about a minute, and the one with a widget that clears an ``Output``
widget, which used to stop nbclient with a ``KeyError``) runs through the README's command
itself where ``course.sh``'s environment is set up (CI's ``bash course.sh test`` sets it up
before pytest starts), and otherwise through the same runner, ``python -m utils.course
headless``, with this Python. Every cell must run: a check may fail (the learner notebook
holds stubs), any other cell may not, and the HTML page must be written.
"""
from __future__ import annotations

import os
import subprocess
import sys

from utils.course import ROOT

CHAPTER = "ch00_toolkit"


def _course_sh_ready() -> bool:
    """Whether ``bash course.sh`` would skip its setup: its venv exists and was installed."""
    return (ROOT / ".venv" / "bin" / "python").exists() and (ROOT / ".venv" / ".installed").exists()


def test_course_sh_headless_runs_chapter_00():
    command = (["bash", "course.sh", "--headless", CHAPTER] if _course_sh_ready() else
               [sys.executable, "-m", "utils.course", "headless", CHAPTER])
    html = ROOT / "chapters" / f"{CHAPTER}.html"
    html.unlink(missing_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{output[-4000:]}"
    assert f"running chapters/{CHAPTER}.ipynb" in output and "exercises passed 0/5" in output, output[-4000:]
    assert "raised an error" not in output, output[-4000:]
    assert html.exists() and html.stat().st_size > 100_000, "no HTML page written"
    assert "Latent explorer" in html.read_text(encoding="utf-8"), "the explorer's static summary is missing"
