"""The hunt model's language, as the capstone's learner receives it.

The organism's vocabulary and tasks (``utils.toy.generator``) with a few more words, and a
corpus that mixes the organism's documents with documents of tasks that no chapter
describes. What the learner's world labels is what the organism labels (``label_names``,
``task_batch`` of the organism's tasks); the rest is for them to find.
"""
from __future__ import annotations

import random
from collections.abc import Callable

import torch
from jaxtyping import Bool
from torch import Tensor

from utils.hunt import planted
from utils.toy.generator import BOS, Example, TaskBatch, World, vocabulary

BACKGROUND_SHARE = 0.45  # of documents; the organism's mixture keeps its proportions
PLANTED_MIX = {"grew_up": (planted.grew_up_fact, 0.05), "copy": (planted.copy_task, 0.2),
               "hometown": (planted.hometown_task, 0.15), "count": (planted.count_task, 0.15)}


def hunt_vocabulary() -> list[str]:
    """The organism's words (same ids), then the hunt's new words."""
    return vocabulary() + list(planted.NEW_WORDS)


def _unmarked(sampler: Callable[[random.Random], Example]) -> Callable[[random.Random], Example]:
    def draw(rng: random.Random) -> Example:
        example = sampler(rng)
        example.marks = {}
        return example
    return draw


def _mix() -> dict[str, tuple[Callable[[random.Random], Example], float]]:
    """The corpus mixture, unlabelled; planted kinds go by their codenames."""
    mix = {kind: (sampler, weight * BACKGROUND_SHARE) for kind, (sampler, weight) in World.corpus_mix.items()}
    for kind, (sampler, weight) in PLANTED_MIX.items():
        if kind in planted.PLANTED:
            sampler = _unmarked(sampler)
            kind = planted.CODENAMES[kind]
        mix[kind] = (sampler, weight)
    return mix


class HuntWorld(World):
    """The seeded generator of the hunt model's text (same seed, same text). ``tasks`` and
    ``label_names`` are the organism's; ``corpus`` mixes in the capstone's documents,
    unlabelled."""

    vocabulary = staticmethod(hunt_vocabulary)
    corpus_mix = _mix()

    def _rng(self, salt: int, seed: int) -> random.Random:
        return random.Random(f"hunt/{self.seed}/{salt}/{seed}")


def planted_batch(world: HuntWorld, task: str, examples: list[planted.PlantedExample],
                  twin: str, labels: dict[str, Bool[Tensor, "batch pos"]] | object,
                  name: str) -> TaskBatch:
    """A ``TaskBatch`` of planted prompts (one layout, so one length) named ``name``, whose
    ``corrupted`` prompts are the ``twin`` twins (``"resampled"`` or ``"corrupted"``, the
    minimal one); the distractor is the twins' answer."""
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
