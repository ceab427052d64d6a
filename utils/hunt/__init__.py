"""The hunt model: a second organism for the capstone (chapter 08), the same kind of
two-layer model and dictionaries as ``utils.toy``, trained on a language with more in it.

>>> from utils.hunt import load, hunt_task, hunt_prompts, rule_menu
>>> bk = load()                     # doctest: +SKIP
>>> hunt_task(seed=7)               # doctest: +SKIP
'hunt-b'
>>> batch = hunt_prompts(seed=7, n=32)  # doctest: +SKIP
>>> batch.prompts[0], batch.corrupted[0]  # a prompt and a twin of the same length  # doctest: +SKIP
>>> hunt_seed("ada")                # a learner's seed, from their name  # doctest: +SKIP

Each seed draws one task of the pool and one layout of it: every prompt of ``hunt_prompts``
has the same length, its answer is predicted at the last position, and ``corrupted[b]`` is a
twin prompt of the same layout whose answer is ``distractors[b]``. What the task is, and
where the model computes it, is the capstone's question: ``labels`` are hidden.
``rule_menu`` lists candidate rules and ``rule_answers`` the answer each gives on a prompt;
a finding is handed in as a :class:`HuntSubmission`.
``python -m utils.hunt build`` retrains every artifact from seeds; ``python -m utils.hunt
report`` prints the figures as JSON.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from utils.nodes import Node

if TYPE_CHECKING:
    from utils.backends.base import Backend
    from utils.hunt.planted import PlantedExample
    from utils.toy.generator import TaskBatch

ARTIFACTS = Path(__file__).parent / "artifacts"  # tokenizer/, model/, <kind>/<name>/, *.json
TOKENIZER, MODEL, EXPLANATIONS, REPORT = "tokenizer", "model", "explanations.json", "report.json"
TRUTH = "truth.json"  # the grader's: read through utils.hunt.truth only
SPLITS = ("hunt", "check", "grade", "baseline")  # prompt streams: learner, checks, grader, means


class Hidden(Mapping[str, Tensor]):
    """Stands where the capstone's ground truth would be: any use says it is hidden.

    It takes the place of a batch's ``labels`` (a mapping of label name to mask), so it is a
    mapping whose every read refuses; like any object it is truthy, equal only to itself
    and hashable."""

    def __init__(self, what: str):
        self._what = what

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise PermissionError(f"the hunt hides {self._what}: find it with the model "
                              "(predictions, patching, attribution, circuits)")

    def __getitem__(self, key: str) -> Tensor:
        return self.__getattr__("getitem")

    def __iter__(self) -> Iterator[str]:
        return self.__getattr__("iter")

    def __len__(self) -> int:
        return self.__getattr__("len")

    def keys(self) -> KeysView[str]:
        return self.__getattr__("keys")

    def items(self) -> ItemsView[str, Tensor]:
        return self.__getattr__("items")

    def values(self) -> ValuesView[Tensor]:
        return self.__getattr__("values")

    def __bool__(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:  # object's: identity (Mapping would read the items)
        return True if self is other else NotImplemented

    def __hash__(self) -> int:  # object's (Mapping's __eq__ would leave it unhashable)
        return object.__hash__(self)

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


def hunt_seed(name: str) -> int:
    """A learner's hunt seed, one of ``range(pool_size())``, drawn from ``name`` (your name
    or student id; the same name always gives the same seed). An instructor can hand out
    seeds instead: consecutive seeds draw different tasks."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"hunt_seed needs your name or student id (a non-empty str), got {name!r}")
    digest = hashlib.sha256(name.strip().lower().encode()).digest()
    return int.from_bytes(digest[:8], "big") % pool_size()


def _examples(seed: int, n: int, split: str) -> list[PlantedExample]:
    from utils.hunt.planted import LAYOUTS, SAMPLERS

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n is the number of prompts, a positive int; got {n!r}")
    task, layout = _variant(seed)
    rng = random.Random(f"hunt-prompts/{split}/{seed}")
    return [SAMPLERS[task](rng, **LAYOUTS[task][layout]) for _ in range(n)]


def hunt_prompts(seed: int, n: int = 32, split: str = "hunt") -> TaskBatch:
    """``n`` prompts of the task ``seed`` draws, as a ``TaskBatch`` (``utils.toy.generator``)
    with the labels hidden: ``tokens`` [n, pos] (BOS first), ``answer_ids`` (the answer),
    ``corrupted_tokens`` (a twin prompt of the same layout) and ``distractor_ids`` (the
    twin's answer). Same seed and split, same prompts (the first ``k`` of ``n`` are those
    of ``n = k``); ``split`` picks another stream of prompts of the same layout:
    ``"hunt"`` (yours), ``"check"`` (the checks'), ``"grade"`` (the grader's) or
    ``"baseline"`` (for means)."""
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


def rule_answers(seed: int, prompts: list[str]) -> list[list[str | None]]:
    """What each rule of ``rule_menu(seed)`` answers on each prompt (``batch.prompts`` of
    ``hunt_prompts(seed)``): ``answers[r][b]`` is the word rule ``r`` gives for prompt
    ``b``, or None where it gives no single word."""
    from utils.hunt.planted import MENUS

    by_text = dict(MENUS[_variant(seed)[0]])
    return [[by_text[rule](prompt.split()) for prompt in prompts] for rule in rule_menu(seed)]


@dataclass
class HuntSubmission:
    """A finding on the task a seed draws, as the capstone's check grades it.

    ``rule``: one line of ``rule_menu(seed)``, verbatim. ``positions``: the token positions
    (BOS at 0) that carry the answer. ``circuit``: its nodes (``utils.nodes.Node``: kind,
    layer, position, latent id or ``"error"``). ``faithfulness``: the circuit's
    faithfulness as you measured it. ``key_latents``: at most five latents of the circuit
    that matter most to it."""

    rule: str
    positions: list[int]
    circuit: list[Node]
    faithfulness: float
    key_latents: list[Node] = field(default_factory=list)


def load(device: str = "cpu", root: Path = ARTIFACTS) -> Backend:
    """The committed hunt model as a ``utils.backends.Backend`` (offline, seconds): model,
    residual SAEs, attention SAEs, transcoders, the world (the organism's labels only) and
    an explanation table of the organism's labels."""
    from utils.hunt.world import HuntWorld
    from utils.toy import load as load_organism

    return load_organism(device, root, name="hunt", world=HuntWorld())
