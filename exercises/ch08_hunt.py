"""Exercise stubs for chapter ch08_hunt.

Generated from source/ch08_hunt.py by `python -m utils.course build`: edit the source, not this file."""


from collections.abc import Callable, Collection, Sequence

import torch
from jaxtyping import Float, Int
from sae_lens import SAE, HookedSAETransformer
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from utils.backends import Backend
from utils.circuits import NodeBaseline, mean_baseline, node_attribution, rank_nodes
from utils.course.checking import earlier
from utils.hunt import HuntSubmission, hunt_prompts, rule_answers, rule_menu
from utils.nodes import Node
from utils.toy.generator import TaskBatch

logit_diff = earlier("ch01_attribution", "logit_diff")  # chapter 01's metric: yours once its check passed, else the reference
ablate_nodes = earlier("ch02_error_nodes", "ablate_nodes")  # chapter 02's ablation of node sets

TOKENS = ["blocks.0.hook_resid_pre"]  # the token (and position) embedding: what a position reads in
COMPUTED = ["blocks.0.hook_attn_out", "blocks.0.hook_mlp_out", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out"]
TOKEN_SHARE, COMPUTED_SHARE = 0.05, 0.1  # a position carries the answer when patching it moves this share
TARGET = 0.8  # the faithfulness a circuit must reach
SIZES = (50, 75, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000)  # circuit sizes tried, in order
DENSE = 0.2  # a latent firing on more than this share of all tokens is dense: no key latent
N_KEY = 5  # key latents handed in


def answer_ids(model: HookedSAETransformer, answers: list[list[str | None]]) -> Int[Tensor, "rule batch"]:
    """Token ids of ``rule_answers``' words; -1 where a rule gives no word."""
    vocab = model.tokenizer.get_vocab()
    return torch.tensor([[vocab[word] if word in vocab else -1 for word in row] for row in answers])


def faithfulness_of(model: HookedSAETransformer, dictionaries: list[SAE], batch: TaskBatch,
                    baseline: NodeBaseline) -> Callable[[Collection[Node]], float]:
    """C -> F(C) = (m(C) - m(empty)) / (m(M) - m(empty)), chapter 02's faithfulness with its
    ``ablate_nodes``, m(M) and m(empty) computed once for the batch."""
    def m(nodes: Collection[Node], complement: bool) -> float:
        return ablate_nodes(model, dictionaries, batch.tokens, batch.answer_ids, batch.distractor_ids, nodes,
                            baseline, complement).mean().item()

    whole, empty = m([], complement=False), m([], complement=True)
    return lambda circuit: (m(circuit, complement=True) - empty) / (whole - empty)


def rule_agreement(model: HookedSAETransformer, tokens: Int[Tensor, "batch pos"],
                   rule_ids: Int[Tensor, "rule batch"]) -> Float[Tensor, " rule"]:
    """fit[r] = mean_b [rule_ids[r, b] == argmax_v logits[b, -1, v]] (a rule's -1 never fits)."""
    raise NotImplementedError("rule_agreement: your code here")


def patch_positions(model: HookedSAETransformer, batch: TaskBatch, hooks: Sequence[str]) -> Float[Tensor, " pos"]:
    """s[p] = (mean m_clean - mean m_patched(p)) / (mean m_clean - mean m_twin), every hook of `hooks`
    patched at position p from the twin; m = logit(answer) - logit(distractor) at the last position."""
    raise NotImplementedError("patch_positions: your code here")


def attribution_map(model: HookedSAETransformer, dictionaries: list[SAE], batch: TaskBatch,
                    baseline: NodeBaseline) -> Float[Tensor, "dictionary pos"]:
    """A[d, p] = sum_i |mean_b attr[d][b, p, i]| / sum over every node, error nodes included."""
    raise NotImplementedError("attribution_map: your code here")


def smallest_faithful_circuit(faithfulness: Callable[[Sequence[Node]], float], ranking: Sequence[Node],
                              target: float, sizes: Sequence[int]) -> tuple[list[Node], float]:
    """(ranking[:n], F(ranking[:n])) for the first n of `sizes` with F >= target, else the last n."""
    raise NotImplementedError("smallest_faithful_circuit: your code here")


def leave_one_out(faithfulness: Callable[[Sequence[Node]], float],
                  circuit: Sequence[Node]) -> dict[tuple[str, int, int], float]:
    """{g: F(C) - F(C without the nodes of component g)} for every component g = (kind, layer, pos) of C."""
    raise NotImplementedError("leave_one_out: your code here")


def firing_frequency(model: HookedSAETransformer, dictionary: SAE,
                     tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, " d_sae"]:
    """freq[i] = mean over (b, p >= 1) of [f_i(x[b, p]) > 0], x read at cfg.metadata.hook_name."""
    raise NotImplementedError("firing_frequency: your code here")


def hunt_submission(bk: Backend, seed: int) -> HuntSubmission:
    """The rule, positions, circuit, faithfulness and key latents of the task `seed` draws."""
    raise NotImplementedError("hunt_submission: your code here")
