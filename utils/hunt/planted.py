"""The planted tasks of the hunt model: grammar, layouts, labels, rules and rule menus.

This module is the answer key's source: the capstone's learner-facing objects never expose
it (the hunt backend's world, ``utils.hunt.hunt_prompts`` and ``rule_menu`` hand out text,
tokens and opaque task names only). The grader reads it through ``utils.hunt.truth``.

Three tasks of different kinds, each ending with a single answer at the last position:

================  ==========================================================================
task              document (``{x}`` drawn at random; the answer follows the prompt)
================  ==========================================================================
``copy``          ``{w1} .. {wj} # {wj+1} .. {wn} ? {wj}`` : the word just before ``#``
                  (n distinct random words, 4 <= n <= 9, 1 <= j <= n)
``partner``       ``{n1} lives in {c1} . .. {nk} lives in {ck} . the partner of {q} lives in
                  {c}`` : the city of q's partner (every name has one fixed partner of the
                  other gender, also stated in the corpus as ``{a} is married to {b} .``)
``count``         ``{w1} .. {wn} . how many {c}`` : the number (one .. four) of names among
                  the n listed words (the others random adjectives, nouns and verbs)
================  ==========================================================================

In training documents the layout (list length, where the marker or the partner sits) is
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
from dataclasses import dataclass, field

from utils.toy.generator import (ADJECTIVES, CITIES, FEMALE_NAMES, MALE_NAMES, NOUNS,
                                 RANDOM_WORDS, VERBS, Example)

MARKER, TRIGGER = "#", "?"
NUMBERS = ("one", "two", "three", "four")
NEW_WORDS = (MARKER, TRIGGER, "lives", "partner", "married", "how", "many", *NUMBERS)
NAMES = FEMALE_NAMES + MALE_NAMES


def _partners() -> dict[str, str]:
    """Every name's fixed partner: female i with male perm[i], a seeded permutation."""
    males = list(MALE_NAMES)
    random.Random("hunt/partners").shuffle(males)
    pairs = dict(zip(FEMALE_NAMES, males))
    return {**pairs, **{m: f for f, m in pairs.items()}}


PARTNERS = _partners()
PLANTED = ("copy", "partner", "count")
CODENAMES = {"copy": "hunt-a", "partner": "hunt-b", "count": "hunt-c"}  # what a learner sees
TASK_LABELS = {
    "copy": ("source", "marker", "readout"),
    "partner": ("query_name", "partner_name", "partner_city", "own_city", "readout"),
    "count": ("list_word", "counted", "readout"),
}
ANSWER_LABELS = {  # labels whose positions carry the answer (the planted position set)
    "copy": ("source", "marker", "readout"),
    "partner": ("query_name", "partner_name", "partner_city", "readout"),
    "count": ("list_word", "readout"),
}
# One layout per variant: the capstone's prompts of a variant all share it.
LAYOUTS = {
    "copy": ({"n_words": 7, "source": 2}, {"n_words": 7, "source": 4}, {"n_words": 7, "source": 6}),
    "partner": ({"n_statements": 4, "partner_slot": 2, "own_slot": 4},
                {"n_statements": 4, "partner_slot": 3, "own_slot": 1},
                {"n_statements": 4, "partner_slot": 3, "own_slot": 2}),
    "count": ({"n_words": 5}, {"n_words": 6}, {"n_words": 7}),
}
# Rule menus: the true rule first (the learner's menu is shuffled per seed).
RULES = {
    "copy": (
        "the answer repeats the word just before `#`",
        "the answer repeats the word just after `#`",
        "the answer repeats the first word of the prompt",
        "the answer repeats the last word before `?`",
        "the answer repeats the word two places before `#`",
    ),
    "partner": (
        "the city where the partner of the person asked about lives",
        "the city where the person asked about lives",
        "the city of the first person listed",
        "the city of the last person listed",
        "the city of the person listed just before the person asked about",
    ),
    "count": (
        "how many of the listed words are names",
        "how many of the listed words are female names",
        "how many of the listed words are nouns",
        "how many of the listed words are not names",
        "how many words come before the first name",
    ),
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
# copy: the word just before the marker.


def _copy_prompt(rng: random.Random, n: int, j: int, answer: str | None,
                 avoid: set[str]) -> list[str]:
    words = _fresh(rng, RANDOM_WORDS, avoid | ({answer} if answer else set()), n)
    if answer is not None:
        words[j - 1] = answer
    return words[:j] + [MARKER] + words[j:] + [TRIGGER]


def copy_task(rng: random.Random, n_words: int | None = None,
              source: int | None = None) -> PlantedExample:
    n = n_words or rng.randint(4, 9)
    j = source or rng.randint(1, n)
    prompt = _copy_prompt(rng, n, j, None, set())
    answer = prompt[j - 1]
    other = _fresh(rng, RANDOM_WORDS, set(prompt))[0]
    corrupted = prompt[:j - 1] + [other] + prompt[j:]
    resampled = _copy_prompt(rng, n, j, other, {answer})
    marks = {"source": [j - 1], "marker": [j], "readout": [n + 1]}
    return PlantedExample(prompt + [answer, "."], n + 2, other, corrupted, marks,
                          resampled=resampled)


# ---------------------------------------------------------------------------------------
# partner: the city where the partner of the asked person lives.


def _gender(name: str) -> int:
    return int(name in FEMALE_NAMES)


def _partner_prompt(rng: random.Random, k: int, partner_slot: int, own_slot: int,
                    answer: str | None, avoid_cities: set[str]) -> tuple[list[str], str]:
    """The prompt and the asked name; ``own_slot`` 0: the asked person is not listed."""
    query = rng.choice(NAMES)
    partner = PARTNERS[query]
    same_as_partner = [n for n in NAMES if _gender(n) == _gender(partner) and n != partner]
    anyone = [n for n in NAMES if n not in (query, partner)]
    names = {partner_slot: partner}
    if own_slot:
        names[own_slot] = query
    free = [s for s in range(1, k + 1) if s not in names]
    rng.shuffle(free)
    if free:  # someone of the partner's gender who is not the partner
        names[free[0]] = rng.choice(same_as_partner)
    for slot in free[1:]:
        names[slot] = rng.choice([n for n in anyone if n not in names.values()])
    cities = _fresh(rng, tuple(CITIES), avoid_cities | ({answer} if answer else set()), k)
    if answer is not None:
        cities[partner_slot - 1] = answer
    words = []
    for slot in range(1, k + 1):
        words += [names[slot], "lives", "in", cities[slot - 1], "."]
    return words + ["the", "partner", "of", query, "lives", "in"], query


def partner_task(rng: random.Random, n_statements: int | None = None,
                 partner_slot: int | None = None, own_slot: int | None = None) -> PlantedExample:
    k = n_statements or rng.randint(2, 4)
    p = partner_slot or rng.randint(1, k)
    if own_slot is None:
        own_slot = rng.choice([s for s in range(1, k + 1) if s != p]) if rng.random() < 0.7 else 0
    prompt, _ = _partner_prompt(rng, k, p, own_slot, None, set())
    answer = prompt[5 * p - 2]
    listed = {prompt[5 * s - 2] for s in range(1, k + 1)}
    other = _fresh(rng, tuple(CITIES), listed)[0]
    corrupted = prompt[:5 * p - 2] + [other] + prompt[5 * p - 1:]
    resampled, _ = _partner_prompt(rng, k, p, own_slot, other, {answer})
    marks = {"query_name": [5 * k + 3], "partner_name": [5 * p - 5],
             "partner_city": [5 * p - 2], "readout": [5 * k + 5]}
    if own_slot:
        marks["own_city"] = [5 * own_slot - 2]
    return PlantedExample(prompt + [answer, "."], 5 * k + 6, other, corrupted, marks,
                          resampled=resampled)


def married_fact(rng: random.Random) -> Example:
    """Background: ``{a} is married to {b} .`` (b is a's partner; no planted label)."""
    a = rng.choice(NAMES)
    words = [a, "is", "married", "to", PARTNERS[a], "."]
    b = rng.choice([n for n in NAMES if n not in (a, PARTNERS[a])])
    return Example(words, 4, PARTNERS[b], [b, *words[1:4]])


# ---------------------------------------------------------------------------------------
# count: how many of the listed words are names.


def _count_prompt(rng: random.Random, n: int, count: int) -> list[str]:
    slots = set(rng.sample(range(n), count))
    names = iter(rng.sample(NAMES, count))
    others = iter(rng.sample(RANDOM_WORDS, n - count))
    return [next(names) if i in slots else next(others) for i in range(n)] + [".", "how", "many"]


def count_task(rng: random.Random, n_words: int | None = None) -> PlantedExample:
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


SAMPLERS = {"copy": copy_task, "partner": partner_task, "count": count_task}
LABEL_NAMES = tuple(dict.fromkeys(f"{task}.{label}" for task in PLANTED
                                  for label in TASK_LABELS[task]))


# ---------------------------------------------------------------------------------------
# What the decoy rules would answer (for the menu's audit: each must disagree with the
# model's answers on a good share of prompts).


def decoy_answers(task: str, prompt: list[str]) -> list[str | None]:
    """The answer each rule of ``RULES[task]`` gives for ``prompt`` (None: no single word)."""
    if task == "copy":
        j = prompt.index(MARKER)
        return [prompt[j - 1], prompt[j + 1] if prompt[j + 1] != TRIGGER else None, prompt[0],
                prompt[-2] if prompt[-2] != MARKER else prompt[-3],
                prompt[j - 2] if j >= 2 else None]
    if task == "partner":
        k = (len(prompt) - 6) // 5
        names = [prompt[5 * s] for s in range(k)]
        cities = [prompt[5 * s + 3] for s in range(k)]
        query = prompt[-3]
        lives = dict(zip(names, cities))
        before = names.index(query) - 1 if query in names else -1
        return [lives.get(PARTNERS[query]), lives.get(query), cities[0], cities[-1],
                cities[before] if before >= 0 else None]
    if task == "count":
        listed = prompt[:-3]
        firsts = [i for i, w in enumerate(listed) if w in NAMES]

        def number(c: int) -> str | None:
            return NUMBERS[c - 1] if 1 <= c <= len(NUMBERS) else None

        return [number(sum(w in NAMES for w in listed)),
                number(sum(w in FEMALE_NAMES for w in listed)),
                number(sum(w in NOUNS for w in listed)),
                number(sum(w not in NAMES for w in listed)),
                number(firsts[0]) if firsts else None]
    raise ValueError(f"unknown planted task {task!r}: expected one of {PLANTED}")


assert set(ADJECTIVES + NOUNS + VERBS) == set(RANDOM_WORDS)


# ---------------------------------------------------------------------------------------
# The planted mechanism, by design: where each task must be computed in a two-layer model.
# ``at``/``reads`` name labels of the task (their positions in a layout). The build measures
# every claim on the trained model (``utils.hunt.truth``).

DESIGN = {
    "copy": (
        # only layer-0 attention can bring the word before the marker onto the marker ...
        {"site": "attn", "layer": 0, "at": "marker", "reads": "source"},
        # ... and only layer-1 attention can then carry it to the last position
        {"site": "attn", "layer": 1, "at": "readout", "reads": "marker"},
    ),
    "partner": (
        # the asked name reaches the last position through layer-0 attention ...
        {"site": "attn", "layer": 0, "at": "readout", "reads": "query_name"},
        # ... each listed city learns whose it is from layer-0 attention to the name ...
        {"site": "attn", "layer": 0, "at": "partner_city", "reads": "partner_name"},
        # ... and layer-1 attention at the last position finds the partner's city and copies it
        {"site": "attn", "layer": 1, "at": "readout", "reads": "partner_city"},
    ),
    "count": (
        # attention at the last position gathers the listed words ...
        {"site": "attn", "layer": 0, "at": "readout", "reads": "list_word"},
        # ... and an MLP there turns how much of it came from names into a number
        {"site": "mlp", "layer": 0, "at": "readout"},
    ),
}
