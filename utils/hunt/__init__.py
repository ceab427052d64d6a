"""The hunt model: a second organism for the capstone (chapter 08), the same kind of
two-layer model and dictionaries as ``utils.toy``, trained on a language with more in it.

>>> from utils.hunt import load, hunt_task, hunt_prompts, rule_menu
>>> bk = load()                     # doctest: +SKIP
>>> hunt_task(seed=7)               # doctest: +SKIP
'hunt-b'
>>> batch = hunt_prompts(seed=7, n=32)  # doctest: +SKIP
>>> batch.prompts[0], batch.corrupted[0]  # a prompt and a twin of the same length  # doctest: +SKIP

Each seed draws one task of the pool and one layout of it: every prompt of ``hunt_prompts``
has the same length, its answer is predicted at the last position, and ``corrupted[b]`` is a
twin prompt of the same layout whose answer is ``distractors[b]``. What the task is, and
where the model computes it, is the capstone's question: ``labels`` are hidden.
``python -m utils.hunt build`` retrains every artifact from seeds; ``python -m utils.hunt
report`` prints the figures as JSON.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

ARTIFACTS = Path(__file__).parent / "artifacts"  # tokenizer/, model/, <kind>/<name>/, *.json
TOKENIZER, MODEL, EXPLANATIONS, REPORT = "tokenizer", "model", "explanations.json", "report.json"
TRUTH = "truth.json"  # the grader's: read through utils.hunt.truth only
SPLITS = ("hunt", "check", "grade", "baseline")  # prompt streams: learner, checks, grader, means


class Hidden:
    """Stands where the capstone's ground truth would be: any use says it is hidden."""

    def __init__(self, what: str):
        self._what = what

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise PermissionError(f"the hunt hides {self._what}: find it with the model "
                              "(predictions, patching, attribution, circuits)")

    def __getitem__(self, key: Any) -> Any:
        return self.__getattr__("getitem")

    def __iter__(self) -> Any:
        return self.__getattr__("iter")

    def __repr__(self) -> str:
        return f"<hidden: {self._what}>"


def pool_size() -> int:
    """How many (task, layout) variants the seeds cycle through."""
    from utils.hunt.planted import LAYOUTS, PLANTED

    return len(PLANTED) * min(len(LAYOUTS[t]) for t in PLANTED)


def _variant(seed: int) -> tuple[str, int]:
    """Seed -> (task, layout index): consecutive seeds draw different tasks."""
    from utils.hunt.planted import PLANTED

    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"a hunt seed is an int, got {type(seed).__name__} {seed!r}")
    index = seed % pool_size()
    return PLANTED[index % len(PLANTED)], index // len(PLANTED)


def hunt_task(seed: int) -> str:
    """The (opaque) name of the task that ``seed`` draws."""
    from utils.hunt.planted import CODENAMES

    return CODENAMES[_variant(seed)[0]]


def _examples(seed: int, n: int, split: str) -> list:
    from utils.hunt.planted import LAYOUTS, SAMPLERS

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n is the number of prompts, a positive int; got {n!r}")
    task, layout = _variant(seed)
    rng = random.Random(f"hunt-prompts/{split}/{seed}")
    return [SAMPLERS[task](rng, **LAYOUTS[task][layout]) for _ in range(n)]


def hunt_prompts(seed: int, n: int = 32, split: str = "hunt") -> Any:
    """``n`` prompts of the task ``seed`` draws, as a ``TaskBatch`` (``utils.toy.generator``)
    with the labels hidden: ``tokens`` [n, pos] (BOS first), ``answer_ids`` (the answer),
    ``corrupted_tokens`` (a twin prompt of the same layout) and ``distractor_ids`` (the
    twin's answer). Same seed, same prompts."""
    from utils.hunt.world import HuntWorld, planted_batch

    task, _ = _variant(seed)
    return planted_batch(HuntWorld(), task, _examples(seed, n, split), "resampled",
                         Hidden("the planted labels"), hunt_task(seed))


def rule_menu(seed: int) -> list[str]:
    """Candidate rules for the task ``seed`` draws, in an order drawn from the seed: one of
    them says how the answer follows from the prompt."""
    from utils.hunt.planted import RULES

    rules = list(RULES[_variant(seed)[0]])
    random.Random(f"hunt-menu/{seed}").shuffle(rules)
    return rules


def load(device: str = "cpu", root: Path = ARTIFACTS):
    """The committed hunt model as a ``utils.backends.Backend`` (offline, seconds): model,
    residual SAEs, attention SAEs, transcoders, the world (the organism's labels only) and
    an explanation table of the organism's labels."""
    from utils.hunt.world import HuntWorld
    from utils.toy import load as load_organism

    return load_organism(device, root, name="hunt", world=HuntWorld())
