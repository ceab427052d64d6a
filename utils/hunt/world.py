"""The hunt model's language, as the capstone's learner receives it.

The organism's vocabulary and tasks (``utils.toy.generator``) with a few more words, and a
corpus that mixes the organism's documents with documents of tasks that no chapter
describes. What the learner's world labels is what the organism labels (``label_names``,
``task_batch`` of the organism's tasks); the rest is for them to find.
"""
from __future__ import annotations

import random
from collections.abc import Mapping

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from utils.hunt import planted
from utils.toy.generator import BOS, LABEL_NAMES, TASKS, Example, Sampler, TaskBatch, World, vocabulary

# The organism's documents but IOI and induction (whose circuits, needing two attention
# layers in series, form too late for this training budget), in their proportions: 45% of
# documents. Then the hunt's.
BACKGROUND = ("facts", "pronouns", "greater_than", "bios", "filler")
BACKGROUND_SHARE = 0.45
PLANTED_MIX: dict[str, tuple[Sampler, float]] = {"grew_up": (planted.grew_up_fact, 0.05), "copy": (planted.copy_task, 0.16),
               "hometown": (planted.hometown_task, 0.16), "count": (planted.count_task, 0.18)}


def hunt_vocabulary() -> list[str]:
    """The organism's words (same ids), then the hunt's new words."""
    return vocabulary() + list(planted.NEW_WORDS)


def _unmarked(sampler: Sampler) -> Sampler:
    def draw(rng: random.Random) -> Example:
        example = sampler(rng)
        example.marks = {}
        return example
    return draw


def _mix() -> dict[str, tuple[Sampler, float]]:
    """The corpus mixture, unlabelled; planted kinds go by their codenames."""
    total = sum(World.corpus_mix[kind][1] for kind in BACKGROUND)
    mix = {kind: (World.corpus_mix[kind][0], World.corpus_mix[kind][1] / total * BACKGROUND_SHARE) for kind in BACKGROUND}
    for kind, (sampler, weight) in PLANTED_MIX.items():
        if kind in planted.PLANTED:
            sampler = _unmarked(sampler)
            kind = planted.CODENAMES[kind]
        mix[kind] = (sampler, weight)
    return mix


class HuntWorld(World):
    """The seeded generator of the hunt model's text (same seed, same text). ``tasks`` and
    ``label_names`` are the organism's that its text holds; ``corpus`` mixes in the
    capstone's documents, unlabelled."""

    tasks = tuple(task for task in TASKS if task in BACKGROUND)
    label_names = tuple(name for name in LABEL_NAMES if name not in ("induction", "ioi_end"))
    vocabulary = staticmethod(hunt_vocabulary)
    corpus_mix = _mix()

    def labels(self, tokens: Int[Tensor, "batch pos"],
               marks: list[dict[str, list[int]]]) -> dict[str, Bool[Tensor, "batch pos"]]:
        """The organism's labels (``World.labels``) that this text can carry."""
        return {name: mask for name, mask in super().labels(tokens, marks).items() if name in self.label_names}

    def task_batch(self, task: str, n: int, seed: int = 0) -> TaskBatch:
        """``n`` prompts of one of ``tasks`` (the organism's ``World.task_batch``)."""
        if task not in self.tasks:
            raise ValueError(f"unknown task {task!r}: expected one of {self.tasks}")
        return super().task_batch(task, n, seed)

    def _rng(self, salt: int, seed: int) -> random.Random:
        return random.Random(f"hunt/{self.seed}/{salt}/{seed}")


def planted_batch(world: HuntWorld, task: str, examples: list[planted.PlantedExample],
                  twin: str, labels: Mapping[str, Bool[Tensor, "batch pos"]],
                  name: str) -> TaskBatch:
    """A ``TaskBatch`` of planted prompts (one layout, so one length) named ``name``, whose
    ``corrupted`` prompts are the ``twin`` twins (``"resampled"`` or ``"corrupted"``, the
    minimal one); the distractor is the twins' answer; ``labels`` are the planted labels, or
    a stand-in that hides them (``utils.hunt.Hidden``)."""
    prompts = [ex.words[:ex.answer_pos] for ex in examples]
    twins = [getattr(ex, twin) for ex in examples]
    if len({len(p) for p in prompts + twins}) != 1:
        raise ValueError(f"{task}: prompts of one batch must share a layout (one length)")
    answers = [ex.words[ex.answer_pos] for ex in examples]
    tokens = torch.tensor([world.encode(p) for p in prompts])
    correct = torch.zeros(len(examples), len(world.vocab), dtype=torch.bool)
    correct[torch.arange(len(examples)), [world.word_to_id[a] for a in answers]] = True
    return TaskBatch(
        task=name, prompts=[" ".join(p) for p in prompts], corrupted=[" ".join(t) for t in twins],
        answers=answers, distractors=[ex.distractor for ex in examples], tokens=tokens,
        corrupted_tokens=torch.tensor([world.encode(t) for t in twins]),
        answer_ids=torch.tensor([world.word_to_id[a] for a in answers]),
        distractor_ids=torch.tensor([world.word_to_id[ex.distractor] for ex in examples]),
        correct=correct, labels=labels)


assert BOS == hunt_vocabulary()[0]
