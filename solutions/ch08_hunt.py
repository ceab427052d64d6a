"""Reference solutions for chapter ch08_hunt.

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
    top = model(tokens)[:, -1].argmax(-1)  # [batch]
    return (rule_ids == top).float().mean(-1)


def patch_positions(model: HookedSAETransformer, batch: TaskBatch, hooks: Sequence[str]) -> Float[Tensor, " pos"]:
    """s[p] = (mean m_clean - mean m_patched(p)) / (mean m_clean - mean m_twin), every hook of `hooks`
    patched at position p from the twin; m = logit(answer) - logit(distractor) at the last position."""
    def metric(logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, ""]:
        return logit_diff(logits, batch.answer_ids, batch.distractor_ids).mean()

    twin_logits, twin = model.run_with_cache(batch.corrupted_tokens, names_filter=list(hooks))
    clean, corrupted = metric(model(batch.tokens)), metric(twin_logits)
    shares = []
    for pos in range(batch.tokens.shape[1]):
        def patch(x: Tensor, hook: HookPoint, pos: int = pos) -> Tensor:
            x = x.clone()
            x[:, pos] = twin[hook.name][:, pos]  # every trailing dim (d_model, or heads and d_head)
            return x

        patched = metric(model.run_with_hooks(batch.tokens, fwd_hooks=[(name, patch) for name in hooks]))
        shares.append((clean - patched) / (clean - corrupted))
    return torch.stack(shares)


def attribution_map(model: HookedSAETransformer, dictionaries: list[SAE], batch: TaskBatch,
                    baseline: NodeBaseline) -> Float[Tensor, "dictionary pos"]:
    """A[d, p] = sum_i |mean_b attr[d][b, p, i]| / sum over every node, error nodes included."""
    attribution = node_attribution(model, dictionaries, batch.tokens,
                                   lambda logits: logit_diff(logits, batch.answer_ids, batch.distractor_ids), baseline)
    mass = torch.stack([attribution[sae.cfg.metadata.hook_name].mean(0).abs().sum(-1) for sae in dictionaries])
    return mass / mass.sum()  # [dictionary, pos]


def smallest_faithful_circuit(faithfulness: Callable[[Sequence[Node]], float], ranking: Sequence[Node],
                              target: float, sizes: Sequence[int]) -> tuple[list[Node], float]:
    """(ranking[:n], F(ranking[:n])) for the first n of `sizes` with F >= target, else the last n."""
    for size in sizes:
        f = faithfulness(ranking[:size])
        if f >= target:
            return list(ranking[:size]), f
    return list(ranking[:sizes[-1]]), f


def leave_one_out(faithfulness: Callable[[Sequence[Node]], float],
                  circuit: Sequence[Node]) -> dict[tuple[str, int, int], float]:
    """{g: F(C) - F(C without the nodes of component g)} for every component g = (kind, layer, pos) of C."""
    full = faithfulness(circuit)
    components = sorted({(n.kind, n.layer, n.pos) for n in circuit})
    return {g: full - faithfulness([n for n in circuit if (n.kind, n.layer, n.pos) != g]) for g in components}


def firing_frequency(model: HookedSAETransformer, dictionary: SAE,
                     tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, " d_sae"]:
    """freq[i] = mean over (b, p >= 1) of [f_i(x[b, p]) > 0], x read at cfg.metadata.hook_name."""
    hook = dictionary.cfg.metadata.hook_name
    _, cache = model.run_with_cache(tokens, names_filter=hook)
    return (dictionary.encode(cache[hook])[:, 1:] > 0).float().mean((0, 1))


def hunt_submission(bk: Backend, seed: int) -> HuntSubmission:
    """The rule, positions, circuit, faithfulness and key latents of the task `seed` draws."""
    model, dictionaries = bk.model, list(bk.dictionaries.values())
    batch = hunt_prompts(seed, 64)
    means = mean_baseline(model, dictionaries, hunt_prompts(seed, 64, split="baseline").tokens)
    # 1. the rule the model's predictions follow
    fits = rule_agreement(model, batch.tokens, answer_ids(model, rule_answers(seed, batch.prompts)))
    rule = rule_menu(seed)[int(fits.argmax())]
    # 2. the positions whose token, or what is computed there, carries the answer
    tokens, computed = patch_positions(model, batch, TOKENS), patch_positions(model, batch, COMPUTED)
    positions = [p for p in range(batch.tokens.shape[1])
                 if tokens[p].abs() >= TOKEN_SHARE or computed[p].abs() >= COMPUTED_SHARE]
    # 3. every node ranked by attribution, error nodes included
    attribution = node_attribution(model, dictionaries, batch.tokens,
                                   lambda logits: logit_diff(logits, batch.answer_ids, batch.distractor_ids), means)
    ranking = rank_nodes({hook: a.mean(0) for hook, a in attribution.items()}, dictionaries)
    # 4. the smallest faithful prefix
    faithful = faithfulness_of(model, dictionaries, batch, means)
    circuit, f = smallest_faithful_circuit(faithful, ranking, TARGET, [s for s in SIZES if s <= len(ranking)])
    # 5. key latents: the best-ranked latents of the circuit that are not dense
    corpus = bk.world.corpus(n_seqs=64, seq_len=48, seed=0).tokens
    frequency: dict[tuple[str, int], Tensor] = {}
    key: list[Node] = []
    for node in (n for n in circuit if not n.is_error):
        if (node.kind, node.layer) not in frequency:
            frequency[node.kind, node.layer] = firing_frequency(model, bk.dictionaries[node.kind, node.layer], corpus)
        if frequency[node.kind, node.layer][node.index] < DENSE:
            key.append(node)
        if len(key) == N_KEY:
            break
    return HuntSubmission(rule=rule, positions=positions, circuit=circuit, faithfulness=f, key_latents=key)
