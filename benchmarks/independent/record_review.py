"""Record manual verdicts on the catalog's diagnoses in ``benchmarks/independent/review.json``.

    python -m benchmarks.independent.record_review RESULTS.json VERDICTS.py

``RESULTS.json`` is what ``python -m utils.course bench check_generality --catalog independent
--json`` wrote; ``VERDICTS.py`` defines ``NOT_NAMED`` and ``NAMED_ANYWAY`` (``{"chapter.exercise.name":
note}``), the verdicts of a person who read the diagnoses. Every other phrase match is recorded
as named, every other caught row as not named. A review is tied to the diagnosis it read (its
first ``REVIEWED_CHARS`` characters): when a check's message changes, the runner reports the
review stale, and the row must be read again.
"""
from __future__ import annotations

import json
import runpy
import sys
from typing import Any

from benchmarks.check_generality import REVIEW, REVIEWED_CHARS


def record(results: str, verdicts: str) -> dict[str, Any]:
    given = runpy.run_path(verdicts)
    not_named, named_anyway = given["NOT_NAMED"], given.get("NAMED_ANYWAY", {})
    try:
        with open(REVIEW) as handle:
            review: dict[str, Any] = json.load(handle)
    except FileNotFoundError:
        review = {}
    with open(results) as handle:
        rows = json.load(handle)["rows"]
    seen = set()
    for r in rows:
        if r["catalog"] != "independent" or r["correct"] or not r["caught"]:
            continue
        key = f"{r['chapter']}.{r['exercise']}.{r['name']}"
        seen.add(key)
        diagnosis = r["diagnosis"][:REVIEWED_CHARS]
        if key in not_named:
            review[key] = {"named": False, "note": not_named[key], "diagnosis": diagnosis}
        elif key in named_anyway:
            review[key] = {"named": True, "note": named_anyway[key], "diagnosis": diagnosis}
        elif review.get(key, {}).get("diagnosis") != diagnosis:
            note = "the diagnosis names the mistake" if r["named"] else "no phrase: generic or another mistake's diagnosis"
            review[key] = {"named": bool(r["named"]), "note": note, "diagnosis": diagnosis}
    unknown = [k for k in [*not_named, *named_anyway] if k not in seen]
    if unknown:
        raise SystemExit(f"verdicts for entries that are not caught rows of {results}: {unknown}")
    with open(REVIEW, "w") as handle:
        json.dump(dict(sorted(review.items())), handle, indent=1, ensure_ascii=False)
    return review


if __name__ == "__main__":
    print(len(record(sys.argv[1], sys.argv[2])), "reviews in", REVIEW)
