"""The synthetic language of the model organism, with per-token ground truth.

Every text is lower-case words separated by single spaces (punctuation is a word too), so a
word-level tokenizer maps each word to one token. A sequence is ``<bos>`` followed by
*documents*, each one sentence of a planted task or of filler:

=============  ===========================================================================
task           grammar (``{x}`` is drawn at random; the *answer* is the word after the
               prompt)
=============  ===========================================================================
ioi            ``when {A} and {B} went to the {place} , {S} {gave} a {object} to {IO} .``
               where {S} is one of A, B and {IO} the other (indirect-object identification)
induction      ``{w1} .. {wk} {w1} .. {wk} .``: a span of k distinct random words, repeated
facts          ``the {landmark} is in the city of {city} .`` and
               ``{city} is in the country of {country} .``
pronouns       ``{name} {went to the {place} | looked at the {object}} and then {she|he}
               {verb} the {noun} .`` (the pronoun agrees with the name's gender)
greater_than   ``the {event} lasted from the year {C} {YY} to the year {C} {ZZ} .`` with
               ZZ > YY (years are two tokens: century "17", then "32")
bios           ``{name} is a {profession} . {she|he} works at the {workplace} .`` (every
               profession has one workplace)
filler         ``the {adjective} {noun} {verb} the {noun} .``
=============  ===========================================================================

Token-level labels (``World.label_names``), each a Bool per token:

- identity labels (true wherever the word is of that kind): ``is_name``, ``female_name``,
  ``male_name``, ``pronoun`` (she/he), ``landmark``, ``city``, ``country``, ``profession``,
  ``workplace``;
- context labels: ``name_repeated`` (a name already seen earlier in the sequence),
  ``induction`` (a word of the repeated copy of an induction span, from its second word on,
  i.e. a word the copy makes predictable), ``ioi_end`` (the final "to" of an IOI sentence,
  where the indirect object is predicted), ``fact_answer`` (the city that completes a
  landmark fact), ``century`` / ``year`` (first / second token of a year),
  ``greater_than_end`` (the century token after "to the year", where the end year is
  predicted).

Broad labels (``is_name``, ``female_name``, ``male_name``) are the ones no single latent is
expected to carry alone.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Int
from torch import Tensor

BOS, PAD, UNK = "<bos>", "<pad>", "<unk>"
FEMALE_NAMES = ("mary", "anna", "lisa", "sarah", "emma", "julia", "laura", "kate",
                "alice", "rose", "clara", "nina", "helen", "grace", "lucy", "sophie")
MALE_NAMES = ("john", "james", "david", "mark", "paul", "peter", "tom", "mike",
              "daniel", "george", "henry", "jack", "luke", "sam", "oliver", "adam")
PLACES = ("store", "park", "school", "market", "station", "garden", "beach", "library",
          "office", "cafe")
OBJECTS = ("book", "ball", "letter", "cake", "key", "gift", "drink", "pen", "ring", "hat")
GIVE_VERBS = ("gave", "handed", "sent", "showed")
CITIES = {  # city -> (country, landmarks)
    "paris": ("france", ("eiffel", "louvre")),
    "rome": ("italy", ("colosseum", "pantheon")),
    "london": ("england", ("westminster", "buckingham")),
    "berlin": ("germany", ("reichstag", "brandenburg")),
    "madrid": ("spain", ("prado", "bernabeu")),
    "athens": ("greece", ("acropolis", "parthenon")),
    "cairo": ("egypt", ("sphinx", "pyramids")),
    "moscow": ("russia", ("kremlin", "bolshoi")),
    "tokyo": ("japan", ("shibuya", "skytree")),
    "sydney": ("australia", ("bondi", "opera")),
}
LANDMARKS = {mark: city for city, (_, marks) in CITIES.items() for mark in marks}
EVENTS = ("war", "trip", "reign", "drought", "festival", "project")
CENTURIES = tuple(str(c) for c in range(12, 20))
TWO_DIGITS = tuple(f"{n:02d}" for n in range(100))
PROFESSIONS = {  # profession -> (workplace, stereotyped gender: 1 female, 0 male)
    "nurse": ("hospital", 1), "professor": ("university", 0), "teacher": ("classroom", 1),
    "pilot": ("airport", 0), "dancer": ("theater", 1), "engineer": ("factory", 0),
    "librarian": ("archive", 1), "farmer": ("farm", 0),
}
ADJECTIVES = ("big", "small", "old", "new", "red", "blue", "green", "happy", "quiet", "loud",
              "dark", "bright", "warm", "cold", "soft", "hard", "tall", "short", "fast", "slow")
NOUNS = ("dog", "cat", "bird", "tree", "car", "house", "river", "hill", "boat", "chair",
         "table", "lamp", "door", "window", "road", "bridge", "cloud", "stone", "flower", "fish",
         "horse", "apple", "bread", "coat", "shoe", "clock", "box", "bag", "cup", "plate",
         "song", "game", "story", "picture", "paper", "phone", "bike", "train", "ship", "wall")
VERBS = ("saw", "found", "liked", "moved", "took", "made", "watched", "painted", "opened",
         "closed", "carried", "dropped", "cleaned", "pushed", "pulled", "kept", "lost", "held",
         "washed", "fixed")
RANDOM_WORDS = ADJECTIVES + NOUNS + VERBS
FUNCTION_WORDS = ("when", "and", "went", "to", "the", "a", ",", ".", "then", "looked", "at",
                  "is", "in", "city", "of", "country", "lasted", "from", "year", "works",
                  "she", "he")

TASKS = ("ioi", "induction", "facts", "pronouns", "greater_than", "bios")
IDENTITY_LABELS = {
    "is_name": FEMALE_NAMES + MALE_NAMES, "female_name": FEMALE_NAMES,
    "male_name": MALE_NAMES, "pronoun": ("she", "he"), "landmark": tuple(LANDMARKS),
    "city": tuple(CITIES), "country": tuple(c for c, _ in CITIES.values()),
    "profession": tuple(PROFESSIONS), "workplace": tuple(w for w, _ in PROFESSIONS.values()),
}
PLANTED_LABELS = ("induction", "ioi_end", "fact_answer", "century", "year",
                  "greater_than_end")
LABEL_NAMES = tuple(IDENTITY_LABELS) + ("name_repeated",) + PLANTED_LABELS
BROAD_LABELS = ("is_name", "female_name", "male_name")
INDUCTION_SPAN = 6  # span length of induction prompts in task batches


def vocabulary() -> list[str]:
    """Every word of the language, specials first (their ids are 0, 1, 2)."""
    words = [BOS, PAD, UNK, *FUNCTION_WORDS, *FEMALE_NAMES, *MALE_NAMES, *PLACES, *OBJECTS,
             *GIVE_VERBS, *CITIES, *IDENTITY_LABELS["country"], *LANDMARKS, *EVENTS,
             *TWO_DIGITS, *PROFESSIONS, *IDENTITY_LABELS["workplace"], *RANDOM_WORDS]
    assert len(words) == len(set(words)), "a word is listed twice"
    return words


@dataclass
class Example:
    """One planted sentence. ``words[:answer_pos]`` is the prompt, ``words[answer_pos]``
    its answer; ``corrupted`` is a prompt of the same length whose answer differs;
    ``marks`` maps planted labels to word positions; ``correct`` lists every acceptable
    answer (several only for greater-than)."""

    words: list[str]
    answer_pos: int
    distractor: str
    corrupted: list[str]
    marks: dict[str, list[int]] = field(default_factory=dict)
    correct: tuple[str, ...] = ()


Sampler = Callable[[random.Random], Example]  # draws one document (or prompt) of a kind


def _gender(name: str) -> int:
    return int(name in FEMALE_NAMES)


def _pronoun(name: str) -> str:
    return "she" if _gender(name) else "he"


def _ioi(rng: random.Random) -> Example:
    a, b, c = rng.sample(FEMALE_NAMES + MALE_NAMES, 3)
    s, io = (a, b) if rng.random() < 0.5 else (b, a)
    head = ["when", a, "and", b, "went", "to", "the", rng.choice(PLACES), ","]
    tail = [rng.choice(GIVE_VERBS), "a", rng.choice(OBJECTS), "to"]
    words = head + [s] + tail + [io, "."]
    corrupted = head + [c] + tail  # ABC: the subject is no longer repeated
    end = len(head) + len(tail)
    return Example(words, end + 1, s, corrupted, {"ioi_end": [end]})


def _induction(rng: random.Random, span: int | None = None) -> Example:
    k = span or rng.randint(4, 8)
    *first, other = rng.sample(RANDOM_WORDS, k + 1)
    words = first + first + ["."]
    corrupted = first[:-1] + [other] + first[:-1]
    return Example(words, 2 * k - 1, other, corrupted, {"induction": list(range(k + 1, 2 * k))})


def _landmark_fact(rng: random.Random) -> Example:
    mark, other = rng.sample(tuple(LANDMARKS), 2)
    while LANDMARKS[other] == LANDMARKS[mark]:
        other = rng.choice(tuple(LANDMARKS))
    words = ["the", mark, "is", "in", "the", "city", "of", LANDMARKS[mark], "."]
    corrupted = ["the", other, *words[2:7]]
    return Example(words, 7, LANDMARKS[other], corrupted, {"fact_answer": [7]})


def _country_fact(rng: random.Random) -> Example:
    city, other = rng.sample(tuple(CITIES), 2)
    words = [city, "is", "in", "the", "country", "of", CITIES[city][0], "."]
    return Example(words, 6, CITIES[other][0], [other, *words[1:6]])


def _pronouns(rng: random.Random) -> Example:
    name = rng.choice(FEMALE_NAMES + MALE_NAMES)
    swap = rng.choice(MALE_NAMES if _gender(name) else FEMALE_NAMES)
    middle = (["went", "to", "the", rng.choice(PLACES)] if rng.random() < 0.5
              else ["looked", "at", "the", rng.choice(OBJECTS)])
    prompt = [name, *middle, "and", "then"]
    words = prompt + [_pronoun(name), rng.choice(VERBS), "the", rng.choice(NOUNS), "."]
    return Example(words, len(prompt), _pronoun(swap), [swap, *prompt[1:]])


def _greater_than(rng: random.Random, lo: int = 1, hi: int = 98) -> Example:
    start = rng.randint(lo, hi)
    end, low = rng.randint(start + 1, 99), rng.randint(0, start - 1)
    century = rng.choice(CENTURIES)
    head = ["the", rng.choice(EVENTS), "lasted", "from", "the", "year", century]
    tail = ["to", "the", "year", century]
    words = head + [TWO_DIGITS[start]] + tail + [TWO_DIGITS[end], "."]
    corrupted = head + [TWO_DIGITS[rng.randint(end, 99)]] + tail
    marks = {"century": [6, 11], "year": [7, 12], "greater_than_end": [11]}
    return Example(words, 12, TWO_DIGITS[low], corrupted, marks, TWO_DIGITS[start + 1:])


def _bio(rng: random.Random, name: str | None = None, profession: str | None = None) -> Example:
    name = name or rng.choice(FEMALE_NAMES + MALE_NAMES)
    profession = profession or rng.choice(tuple(PROFESSIONS))
    other = rng.choice([p for p in PROFESSIONS if p != profession])
    prompt = [name, "is", "a", profession, ".", _pronoun(name), "works", "at", "the"]
    words = prompt + [PROFESSIONS[profession][0], "."]
    corrupted = prompt[:3] + [other] + prompt[4:]
    return Example(words, len(prompt), PROFESSIONS[other][0], corrupted)


def _filler(rng: random.Random) -> Example:
    words = ["the", rng.choice(ADJECTIVES), rng.choice(NOUNS), rng.choice(VERBS), "the",
             rng.choice(NOUNS), "."]
    return Example(words, 6, ".", words[:6])


def _facts(rng: random.Random) -> Example:
    return _landmark_fact(rng) if rng.random() < 0.6 else _country_fact(rng)


# Corpus mixture: document kind -> (sampler, weight).
_CORPUS_MIX: dict[str, tuple[Sampler, float]] = {
    "ioi": (_ioi, 0.22), "induction": (_induction, 0.18), "facts": (_facts, 0.16),
    "pronouns": (_pronouns, 0.14), "greater_than": (_greater_than, 0.12),
    "bios": (_bio, 0.10), "filler": (_filler, 0.08),
}
# Task prompts: every prompt of one task has the same length.
_TASK_SAMPLERS = {
    "ioi": _ioi,
    "induction": lambda rng: _induction(rng, INDUCTION_SPAN),
    "facts": _landmark_fact,
    "pronouns": _pronouns,
    "greater_than": lambda rng: _greater_than(rng, lo=10, hi=89),
    "bios": _bio,
}
_TASK_SEED = {task: 1000 * (i + 1) for i, task in enumerate(TASKS)}


@dataclass
class TaskBatch:
    """Prompts of one task, ready for a forward pass; the answer is predicted at the last
    position. ``correct[b, v]`` marks every acceptable answer token (a single one except
    for greater-than, where any later year counts)."""

    task: str
    prompts: list[str]
    corrupted: list[str]
    answers: list[str]
    distractors: list[str]
    tokens: Int[Tensor, "batch pos"]
    corrupted_tokens: Int[Tensor, "batch pos"]
    answer_ids: Int[Tensor, " batch"]
    distractor_ids: Int[Tensor, " batch"]
    correct: Bool[Tensor, "batch d_vocab"]
    labels: Mapping[str, Bool[Tensor, "batch pos"]]  # a stand-in that refuses every read where labels are hidden


@dataclass
class Corpus:
    """Training / analysis text: ``tokens[b, 0]`` is BOS; ``labels[name][b, p]`` is the
    ground truth of token ``tokens[b, p]``."""

    tokens: Int[Tensor, "batch pos"]
    labels: dict[str, Bool[Tensor, "batch pos"]]


@dataclass
class BioBatch:
    """Biographies for SHIFT: ``gender`` is 1 for female, ``profession`` indexes
    ``professions``; ``labels`` holds the token-level ground truth."""

    texts: list[str]
    tokens: Int[Tensor, "batch pos"]
    gender: Int[Tensor, " batch"]
    profession: Int[Tensor, " batch"]
    professions: tuple[str, ...]
    labels: dict[str, Bool[Tensor, "batch pos"]]


class World:
    """The seeded generator of the synthetic language. Same seed, same data.

    >>> world = World()
    >>> world.task_batch("facts", 2).prompts[0].split()[:3]  # doctest: +SKIP
    ['the', 'kremlin', 'is']
    """

    tasks: tuple[str, ...] = TASKS
    label_names: tuple[str, ...] = LABEL_NAMES
    broad_labels = BROAD_LABELS
    vocabulary = staticmethod(vocabulary)  # a language built on this one adds words
    corpus_mix: Mapping[str, tuple[Sampler, float]] = _CORPUS_MIX  # document kind -> (sampler, weight)

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.vocab = self.vocabulary()
        self.word_to_id = {w: i for i, w in enumerate(self.vocab)}
        self._identity = {
            name: self._mask_of(words) for name, words in IDENTITY_LABELS.items()
        }

    def _mask_of(self, words: tuple[str, ...]) -> Bool[Tensor, " d_vocab"]:
        mask = torch.zeros(len(self.vocab), dtype=torch.bool)
        mask[[self.word_to_id[w] for w in words]] = True
        return mask

    def _rng(self, salt: int, seed: int) -> random.Random:
        return random.Random(f"{self.seed}/{salt}/{seed}")

    def encode(self, words: list[str]) -> list[int]:
        """Word ids with BOS prepended (the same ids the tokenizer gives)."""
        return [self.word_to_id[BOS]] + [self.word_to_id[w] for w in words]

    def labels(self, tokens: Int[Tensor, "batch pos"],
               marks: list[dict[str, list[int]]]) -> dict[str, Bool[Tensor, "batch pos"]]:
        """Token-level ground truth: identity labels from the token ids, ``name_repeated``
        from earlier occurrences, planted labels from ``marks`` (word positions, so +1 for
        BOS)."""
        labels = {name: mask[tokens] for name, mask in self._identity.items()}
        labels["name_repeated"] = labels["is_name"] & _seen_before(tokens)
        for name in PLANTED_LABELS:
            labels[name] = torch.zeros_like(tokens, dtype=torch.bool)
            for row, mark in enumerate(marks):
                positions = [p + 1 for p in mark.get(name, []) if p + 1 < tokens.shape[1]]
                labels[name][row, positions] = True
        return {name: labels[name] for name in LABEL_NAMES}

    def task_batch(self, task: str, n: int, seed: int = 0) -> TaskBatch:
        """``n`` prompts of ``task`` with minimal-pair corruptions, answers and labels."""
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}: expected one of {TASKS}")
        rng = self._rng(_TASK_SEED[task], seed)
        examples = [_TASK_SAMPLERS[task](rng) for _ in range(n)]
        prompts = [ex.words[:ex.answer_pos] for ex in examples]
        tokens = torch.tensor([self.encode(p) for p in prompts])
        answers = [ex.words[ex.answer_pos] for ex in examples]
        correct = torch.stack([self._mask_of(ex.correct or (a,))
                               for ex, a in zip(examples, answers)])
        return TaskBatch(
            task=task,
            prompts=[" ".join(p) for p in prompts],
            corrupted=[" ".join(ex.corrupted) for ex in examples],
            answers=answers,
            distractors=[ex.distractor for ex in examples],
            tokens=tokens,
            corrupted_tokens=torch.tensor([self.encode(ex.corrupted) for ex in examples]),
            answer_ids=torch.tensor([self.word_to_id[a] for a in answers]),
            distractor_ids=torch.tensor([self.word_to_id[ex.distractor] for ex in examples]),
            correct=correct,
            labels=self.labels(tokens, [ex.marks for ex in examples]),
        )

    def corpus(self, n_seqs: int, seq_len: int, seed: int = 0) -> Corpus:
        """``n_seqs`` sequences of ``seq_len`` tokens: BOS, then documents drawn from the
        corpus mixture until the sequence is full (the last one is cut off)."""
        tokens, marks = self.documents(n_seqs, seq_len, seed)
        return Corpus(tokens, self.labels(tokens, marks))

    def documents(self, n_seqs: int, seq_len: int,
                  seed: int = 0) -> tuple[Int[Tensor, "batch pos"], list[dict[str, list[int]]]]:
        """The tokens of :meth:`corpus` and, per sequence, its documents' marks (word
        positions in the sequence, before BOS)."""
        rng = self._rng(1, seed)
        kinds = list(self.corpus_mix)
        weights = [w for _, w in self.corpus_mix.values()]
        rows, marks = [], []
        for _ in range(n_seqs):
            words: list[str] = []
            mark: dict[str, list[int]] = {}
            while len(words) < seq_len - 1:
                example = self.corpus_mix[rng.choices(kinds, weights)[0]][0](rng)
                for name, positions in example.marks.items():
                    mark.setdefault(name, []).extend(p + len(words) for p in positions)
                words += example.words
            rows.append(self.encode(words[:seq_len - 1]))
            marks.append(mark)
        return torch.tensor(rows), marks

    def bios(self, n: int, correlation: float, seed: int = 0,
             professions: tuple[str, ...] = ("nurse", "professor")) -> BioBatch:
        """``n`` biographies. Each profession has a stereotyped gender; a bio takes it with
        probability ``correlation`` and is otherwise a fair coin, so P(stereotyped) =
        (1 + correlation) / 2: ``correlation=1`` is fully confounded (SHIFT training set),
        ``correlation=0`` independent (its test set). Professions are balanced."""
        rng = self._rng(2, seed)
        texts, genders, jobs = [], [], []
        for i in range(n):
            job = i % len(professions)
            stereotyped = rng.random() < correlation
            gender = PROFESSIONS[professions[job]][1] if stereotyped else rng.randint(0, 1)
            name = rng.choice(FEMALE_NAMES if gender else MALE_NAMES)
            texts.append(_bio(rng, name, professions[job]).words)
            genders.append(gender)
            jobs.append(job)
        tokens = torch.tensor([self.encode(t) for t in texts])
        return BioBatch([" ".join(t) for t in texts], tokens, torch.tensor(genders),
                        torch.tensor(jobs), professions, self.labels(tokens, [{}] * n))


def _seen_before(tokens: Int[Tensor, "batch pos"]) -> Bool[Tensor, "batch pos"]:
    """``out[b, p]`` is True when ``tokens[b, p]`` occurs at some earlier position."""
    same = tokens[:, :, None] == tokens[:, None, :]  # [batch, pos_q, pos_k]
    earlier = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).tril(-1)
    return (same & earlier).any(-1)
