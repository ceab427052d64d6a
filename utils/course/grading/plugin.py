"""The pytest plugin loaded into a worker's nbval run (``-p utils.course.grading.plugin``).

It records every cell's outcome as it comes, one JSON line per cell in the file named by
``SAE_GRADING_CELLS`` (so a submission that runs past its time still reports the cells that
ran), and notices a dead kernel at once instead of waiting for the cell's time limit.
"""
from __future__ import annotations

import json
import os
import re
import time
from typing import Any

from utils.course.grading.report import plain

CELLS_ENV = "SAE_GRADING_CELLS"  # where the plugin writes each cell's outcome


def pytest_configure(config: Any) -> None:
    if not os.environ.get(CELLS_ENV):
        return
    from queue import Empty

    from nbval.kernel import RunningKernel

    waiting = RunningKernel.await_reply

    def await_reply(self: Any, msg_id: str, timeout: float | None = None) -> None:
        end = None if timeout is None else time.monotonic() + float(timeout)
        while True:
            wait = 1.0 if end is None else min(1.0, end - time.monotonic())
            if wait <= 0:
                raise Empty
            try:
                return waiting(self, msg_id, timeout=wait)
            except Empty:
                if not self.is_alive():
                    raise RuntimeError("the kernel died while running this cell (os._exit, a crash, or out of "
                                       "memory)") from None

    RunningKernel.await_reply = await_reply


def pytest_runtest_logreport(report: Any) -> None:
    path = os.environ.get(CELLS_ENV)
    match = re.search(r"::Cell (\d+)$", report.nodeid)
    if not path or not match or (report.when != "call" and report.outcome == "passed"):
        return
    record = {"cell": int(match.group(1)), "when": report.when, "outcome": report.outcome,
              "xfail": getattr(report, "wasxfail", "") or "", "message": plain(report.longreprtext)[-4000:]}
    with open(path, "a") as out:
        out.write(json.dumps(record) + "\n")
