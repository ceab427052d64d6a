"""How well one quantity tracks another: correlations of estimated with true effects
(chapters 01-03) and how well a latent's activation tracks a ground-truth label (chapter 00
onwards). Each exists once here; every chapter, check and benchmark imports it from here.
"""
from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from scipy.stats import rankdata
from torch import Tensor


def pearson(x: Float[Tensor, " n"], y: Float[Tensor, " n"]) -> float:
    """Pearson correlation of ``x`` and ``y`` (0 when either is constant)."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denom = float(x.norm() * y.norm())
    return float((x * y).sum()) / denom if denom > 0 else 0.0


def spearman(x: Float[Tensor, " n"], y: Float[Tensor, " n"]) -> float:
    """Spearman rank correlation: the Pearson correlation of the ranks of ``x`` and ``y``,

        rho = sum_k (r_k - mean r)(s_k - mean s) / (||r - mean r|| ||s - mean s||),

    ranks 0..n-1 (ties, which continuous effects do not have, broken by order). 1 when the
    estimate orders the latents as the truth does, whatever the size of its errors."""
    r, s = (v.flatten().argsort().argsort().double() for v in (x, y))
    r, s = r - r.mean(), s - s.mean()
    return float((r * s).sum() / (r.norm() * s.norm()))


def agreement(estimate: Float[Tensor, " n"], truth: Float[Tensor, " n"]) -> dict[str, float]:
    """How well estimated effects (attribution) match true ones (ablation): Spearman
    (:func:`spearman`), Pearson, and the share of pairs whose signs agree (chapter 02)."""
    estimate, truth = estimate.detach().flatten().cpu(), truth.detach().flatten().cpu()
    return {"spearman": spearman(estimate, truth), "pearson": pearson(estimate, truth),
            "sign_agreement": float((estimate.sign() == truth.sign()).double().mean())}


def auroc(scores: Float[Tensor, "token latent"],
          labels: Bool[Tensor, "token label"]) -> Float[Tensor, "label latent"]:
    """AUROC of every score column for every label column, from average ranks (ties count
    one half): (sum of positive ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg)."""
    ranks = torch.from_numpy(rankdata(scores.numpy(), axis=0)).float()
    y = labels.float()
    n_pos = y.sum(0)[:, None]
    n_neg = len(y) - n_pos
    return (y.T @ ranks - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg).clamp(min=1)


def activation_precision(acts: Float[Tensor, "token latent"],
                         labels: Bool[Tensor, "token label"]) -> Float[Tensor, "label latent"]:
    """Share of each latent's activation mass that falls on tokens with each label,

        precision[l, i] = sum_t y[t, l] a[t, i] / sum_t a[t, i]   (a >= 0: post-ReLU),

    and 0 for a latent that never fires. It is 1 when the latent fires on labelled tokens
    only, and the label's share of tokens when it fires equally everywhere."""
    acts = acts.double()
    mass = acts.sum(0)  # [latent]
    on_label = labels.double().T @ acts  # [label, latent]; 0 wherever the mass is 0
    return (on_label / mass.clamp(min=torch.finfo(acts.dtype).tiny)).float()
