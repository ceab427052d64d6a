"""The planted tasks of the hunt model: grammar, layouts, labels, rules and rule menus.

This module is the answer key's source: the capstone's learner-facing objects never expose
it (the hunt backend's world, ``utils.hunt.hunt_prompts`` and ``rule_menu`` hand out text,
tokens and opaque task names only). The grader reads it through ``utils.hunt.truth``.

Three tasks of different kinds, each ending with a single answer at the last position:

================  ==========================================================================
task              document (``{x}`` drawn at random; the answer follows the prompt)
================  ==========================================================================
``copy``          ``{w1} .. {wn} ? {wn-1}`` : the word two places before ``?`` (n distinct
                  random words, 3 <= n <= 9)
``hometown``      ``{n1} lives in {c1} . .. {nk} lives in {ck} . {q} grew up in the country of
                  {country}`` : the country of q's home town (every name has one fixed home
                  town, also stated in the corpus as ``{name} grew up in {city} .``; the
                  organism's facts give each city's country); q may be listed, living in
                  another city
``count``         ``{w1} .. {wn} . how many {c}`` : the number (one .. four) of names among
                  the n listed words (the others random adjectives, nouns and verbs)
================  ==========================================================================

In training documents the layout (list length, where the asked name sits) is
random; the capstone's prompts fix one *layout* per variant so that every prompt of a batch
has the same length and the same positions (``LAYOUTS``). Every prompt comes with two twins
of the same length whose answer is the prompt's distractor: a *minimal* one (the words that
decide the answer changed, everything else kept) and a *resampled* one (a fresh prompt of the
same layout whose answer is the distractor).

Per-token labels (word positions in ``marks``; +1 for BOS in token positions) are listed per
task in ``TASK_LABELS``; ``ANSWER_LABELS`` are those whose positions carry the answer.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NotRequired, TypedDict

from utils.toy.generator import (ADJECTIVES, CITIES, FEMALE_NAMES, MALE_NAMES, NOUNS,
                                 RANDOM_WORDS, VERBS, Example)

TRIGGER = "?"
NUMBERS = ("one", "two", "three", "four")
NEW_WORDS = (TRIGGER, "lives", "grew", "up", "how", "many", *NUMBERS)
NAMES = FEMALE_NAMES + MALE_NAMES


def _hometowns() -> dict[str, str]:
    """Every name's fixed home town: the names shuffled (seeded) and dealt round the cities."""
    names = list(NAMES)
    random.Random("hunt/hometowns").shuffle(names)
    return {name: tuple(CITIES)[i % len(CITIES)] for i, name in enumerate(names)}


HOMETOWNS = _hometowns()
COUNTRY = {city: country for city, (country, _) in CITIES.items()}
PLANTED = ("copy", "hometown", "count")
CODENAMES = {"copy": "hunt-a", "hometown": "hunt-b", "count": "hunt-c"}  # what a learner sees
TASK_LABELS = {
    "copy": ("source", "readout"),
    "hometown": ("query_name", "listed_name", "lives_city", "readout"),
    "count": ("list_word", "counted", "readout"),
}
ANSWER_LABELS = {  # labels whose positions carry the answer (the planted position set)
    "copy": ("source", "readout"),
    "hometown": ("query_name", "readout"),
    "count": ("list_word", "readout"),
}
# One layout per variant: the capstone's prompts of a variant all share it.
LAYOUTS = {
    "copy": ({"n_words": 5}, {"n_words": 6}, {"n_words": 7}),
    "hometown": ({"n_statements": 2, "own_slot": 2}, {"n_statements": 3, "own_slot": 2},
                 {"n_statements": 3, "own_slot": 3}),
    "count": ({"n_words": 5}, {"n_words": 6}, {"n_words": 7}),
}


@dataclass
class PlantedExample(Example):
    """A planted prompt (``words[:answer_pos]``) with its answer, its distractor and two twins
    of the same length whose answer is the distractor: ``corrupted`` (minimal change) and
    ``resampled`` (a fresh prompt of the same layout)."""

    resampled: list[str] = field(default_factory=list)


def _fresh(rng: random.Random, pool: tuple[str, ...], avoid: set[str], k: int = 1) -> list[str]:
    return rng.sample([w for w in pool if w not in avoid], k)


# ---------------------------------------------------------------------------------------
# copy: the word two places before the trigger.


def _copy_prompt(rng: random.Random, n: int, answer: str | None, avoid: set[str]) -> list[str]:
    words = _fresh(rng, RANDOM_WORDS, avoid | ({answer} if answer else set()), n)
    if answer is not None:
        words[n - 2] = answer
    return words + [TRIGGER]


def copy_task(rng: random.Random, n_words: int | None = None) -> PlantedExample:
    """``n_words`` distinct random words (3-9 when None), ``?``; answer: the word two places
    before ``?``."""
    n = n_words or rng.randint(3, 9)
    prompt = _copy_prompt(rng, n, None, set())
    answer = prompt[n - 2]
    other = _fresh(rng, RANDOM_WORDS, set(prompt))[0]
    corrupted = prompt[:n - 2] + [other] + prompt[n - 1:]
    resampled = _copy_prompt(rng, n, other, {answer})
    marks = {"source": [n - 2], "readout": [n]}
    return PlantedExample(prompt + [answer, "."], n + 1, other, corrupted, marks,
                          resampled=resampled)


# ---------------------------------------------------------------------------------------
# hometown: the country of the asked person's home town.


def _hometown_prompt(rng: random.Random, k: int, own_slot: int, answer: str | None,
                     avoid: set[str]) -> list[str]:
    """``k`` statements ``{name} lives in {city} .`` (the asked person in ``own_slot``, 0:
    not listed; no listed city is the asked person's home town), then the question. The
    asked person's country is ``answer`` when given, and never one of ``avoid``."""
    query = rng.choice([n for n in NAMES if COUNTRY[HOMETOWNS[n]] not in avoid
                        and (answer is None or COUNTRY[HOMETOWNS[n]] == answer)])
    cities = _fresh(rng, tuple(CITIES), {HOMETOWNS[query]}, k)
    others = iter(_fresh(rng, NAMES, {query}, k))
    words = []
    for slot in range(1, k + 1):
        words += [query if slot == own_slot else next(others), "lives", "in", cities[slot - 1], "."]
    return words + [query, "grew", "up", "in", "the", "country", "of"]


def hometown_task(rng: random.Random, n_statements: int | None = None,
                  own_slot: int | None = None) -> PlantedExample:
    """``n_statements`` statements (0-3 when None), the asked person in ``own_slot`` (0: not
    listed; random when None), the question; answer: the country of the asked person's home
    town. The minimal twin asks about someone else (not listed) from another country."""
    k = rng.randint(0, 3) if n_statements is None else n_statements
    if own_slot is None:
        own_slot = rng.randint(1, k) if k and rng.random() < 0.6 else 0
    prompt = _hometown_prompt(rng, k, own_slot, None, set())
    query = prompt[5 * k]
    answer = COUNTRY[HOMETOWNS[query]]
    other = rng.choice([n for n in NAMES if COUNTRY[HOMETOWNS[n]] != answer and n not in prompt])
    corrupted = prompt[:5 * k] + [other] + prompt[5 * k + 1:]
    distractor = COUNTRY[HOMETOWNS[other]]
    resampled = _hometown_prompt(rng, k, own_slot, distractor, {answer})
    marks = {"query_name": [5 * k], "readout": [5 * k + 6]}
    if own_slot:
        marks.update(listed_name=[5 * own_slot - 5], lives_city=[5 * own_slot - 2])
    return PlantedExample(prompt + [answer, "."], 5 * k + 7, distractor, corrupted, marks,
                          resampled=resampled)


def grew_up_fact(rng: random.Random) -> Example:
    """Background: ``{name} grew up in {city} .`` (the home town; no planted label)."""
    name = rng.choice(NAMES)
    other = rng.choice([n for n in NAMES if HOMETOWNS[n] != HOMETOWNS[name]])
    words = [name, "grew", "up", "in", HOMETOWNS[name], "."]
    return Example(words, 4, HOMETOWNS[other], [other, *words[1:4]])


# ---------------------------------------------------------------------------------------
# count: how many of the listed words are names.


def _count_prompt(rng: random.Random, n: int, count: int) -> list[str]:
    slots = set(rng.sample(range(n), count))
    names = iter(rng.sample(NAMES, count))
    others = iter(rng.sample(RANDOM_WORDS, n - count))
    return [next(names) if i in slots else next(others) for i in range(n)] + [".", "how", "many"]


def count_task(rng: random.Random, n_words: int | None = None) -> PlantedExample:
    """``n_words`` listed words (3-8 when None), 1-4 of them names, then ``. how many``;
    answer: the number of names. The minimal twin turns one listed word into a name or a
    name into a word, so the count moves by one."""
    n = n_words or rng.randint(3, 8)
    count = rng.randint(1, min(len(NUMBERS), n))
    prompt = _count_prompt(rng, n, count)
    up = count < min(len(NUMBERS), n) and (count == 1 or rng.random() < 0.5)
    corrupted = list(prompt)
    if up:  # one more name: a listed non-name becomes a name
        slot = rng.choice([i for i in range(n) if prompt[i] not in NAMES])
        corrupted[slot] = _fresh(rng, NAMES, set(prompt))[0]
    else:  # one name fewer
        slot = rng.choice([i for i in range(n) if prompt[i] in NAMES])
        corrupted[slot] = _fresh(rng, RANDOM_WORDS, set(prompt))[0]
    other = count + (1 if up else -1)
    resampled = _count_prompt(rng, n, other)
    marks = {"list_word": list(range(n)), "counted": [i for i in range(n) if prompt[i] in NAMES],
             "readout": [n + 2]}
    return PlantedExample(prompt + [NUMBERS[count - 1], "."], n + 3, NUMBERS[other - 1],
                          corrupted, marks, resampled=resampled)


# Each takes the rng, then (optionally) the keywords of one of its task's ``LAYOUTS``.
LayoutSampler = Callable[..., PlantedExample]
SAMPLERS: dict[str, LayoutSampler] = {"copy": copy_task, "hometown": hometown_task, "count": count_task}
LABEL_NAMES = tuple(dict.fromkeys(f"{task}.{label}" for task in PLANTED
                                  for label in TASK_LABELS[task]))


# ---------------------------------------------------------------------------------------
# Rule menus: each rule with the answer it gives for a prompt (None: no single word), the
# true rule first (the learner's menu is shuffled per seed). The decoys are plausible from
# the prompts' surface; each must disagree with the model's answers on many prompts.

Answer = Callable[[list[str]], "str | None"]


def _copy_listed(prompt: list[str]) -> list[str]:
    return prompt[:-1]  # the words before "?"


def _statements(prompt: list[str]) -> tuple[list[str], list[str], str]:
    """(listed names, their cities, the asked name) of a hometown prompt."""
    k = (len(prompt) - 7) // 5
    return [prompt[5 * s] for s in range(k)], [prompt[5 * s + 3] for s in range(k)], prompt[5 * k]


def _lives_in(prompt: list[str]) -> str | None:
    names, cities, query = _statements(prompt)
    return COUNTRY[cities[names.index(query)]] if query in names else None


def _number(c: int) -> str | None:
    return NUMBERS[c - 1] if 1 <= c <= len(NUMBERS) else None


def _count_listed(prompt: list[str]) -> list[str]:
    return prompt[:-3]  # the words before ". how many"


def _before_first_name(prompt: list[str]) -> str | None:
    firsts = [i for i, w in enumerate(_count_listed(prompt)) if w in NAMES]
    return _number(firsts[0]) if firsts else None


MENUS: dict[str, tuple[tuple[str, Answer], ...]] = {
    "copy": (
        ("the answer repeats the word two places before `?`", lambda p: _copy_listed(p)[-2]),
        ("the answer repeats the word just before `?`", lambda p: _copy_listed(p)[-1]),
        ("the answer repeats the word three places before `?`", lambda p: _copy_listed(p)[-3]),
        ("the answer repeats the first word of the prompt", lambda p: _copy_listed(p)[0]),
        ("the answer repeats the second word of the prompt", lambda p: _copy_listed(p)[1]),
    ),
    "hometown": (
        ("the country of the city where the person asked about grew up",
         lambda p: COUNTRY[HOMETOWNS[_statements(p)[2]]]),
        ("the country of the city where the person asked about lives", _lives_in),
        ("the country of the first city mentioned", lambda p: COUNTRY[_statements(p)[1][0]]),
        ("the country of the last city mentioned", lambda p: COUNTRY[_statements(p)[1][-1]]),
        ("the country where the first person listed grew up",
         lambda p: COUNTRY[HOMETOWNS[_statements(p)[0][0]]]),
    ),
    "count": (
        ("how many of the listed words are names",
         lambda p: _number(sum(w in NAMES for w in _count_listed(p)))),
        ("how many of the listed words are female names",
         lambda p: _number(sum(w in FEMALE_NAMES for w in _count_listed(p)))),
        ("how many of the listed words are nouns",
         lambda p: _number(sum(w in NOUNS for w in _count_listed(p)))),
        ("how many of the listed words are not names",
         lambda p: _number(sum(w not in NAMES for w in _count_listed(p)))),
        ("how many words come before the first name", _before_first_name),
    ),
}
RULES = {task: tuple(text for text, _ in menu) for task, menu in MENUS.items()}


def decoy_answers(task: str, prompt: list[str]) -> list[str | None]:
    """The answer each rule of ``MENUS[task]`` gives for the layout prompt ``prompt``
    (words, without BOS), in menu order (None: the rule names no single word)."""
    if task not in MENUS:
        raise ValueError(f"unknown planted task {task!r}: expected one of {PLANTED}")
    return [answer(prompt) for _, answer in MENUS[task]]


assert set(ADJECTIVES + NOUNS + VERBS) == set(RANDOM_WORDS)


# ---------------------------------------------------------------------------------------
# The planted mechanism, by design: where each task must be computed in a two-layer model.
# ``at``/``reads`` name labels of the task (their positions in a layout). The build measures
# every claim on the trained model (``utils.hunt.truth``).


class Claim(TypedDict):
    """A claim of the design: ``site`` (``resid``, ``attn`` or ``mlp``; see
    ``utils.hunt.mechanism.site_hook``) of ``layer`` carries the answer at the position of
    label ``at``, reading (attention) the positions of label ``reads``."""

    site: str
    layer: int
    at: str
    reads: NotRequired[str]


DESIGN: dict[str, tuple[Claim, ...]] = {
    "copy": (
        # the answer is the token two places before the last position ...
        {"site": "resid", "layer": 0, "at": "source"},
        # ... which attention at the last position reads by its offset alone
        {"site": "attn", "layer": 0, "at": "readout", "reads": "source"},
    ),
    "hometown": (
        # the answer depends on the asked name's token alone ...
        {"site": "resid", "layer": 0, "at": "query_name"},
        # the asked name reaches the last position through attention ...
        {"site": "attn", "layer": 0, "at": "readout", "reads": "query_name"},
        # ... where MLPs recall its home town's country
        {"site": "mlp", "layer": 0, "at": "readout"},
    ),
    "count": (
        # attention at the last position gathers the listed words ...
        {"site": "attn", "layer": 0, "at": "readout", "reads": "list_word"},
        # ... and an MLP there turns how much of it came from names into a number
        {"site": "mlp", "layer": 0, "at": "readout"},
    ),
}
