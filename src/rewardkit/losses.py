"""Training objectives: pure functions of reward scores and labels (docs/METHODS.md §1, §2, §3.1 and §6).

Two layers:

* Plain loss functions (``bradley_terry``, ``plackett_luce``, ...) that take score differences or rewards
  and return a scalar. Each reduces with the mean over pairs (or groups), or with the weighted mean
  ``sum(w * l) / sum(w)`` when ``weight`` is given.
* An objective layer (``LossInputs``, ``LOSSES``, ``compute_loss``, ``validate_loss``) that the training
  loop calls by config name without knowing which loss it is.

Notation: ``delta = r_chosen - r_rejected``; ``softplus(-delta) = -log sigmoid(delta)``. Every formula is
written with ``softplus`` / ``logsumexp`` so it stays finite for large rewards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from rewardkit.errors import RewardkitError

__all__ = [
    "LOSSES",
    "LOSS_NAMES",
    "LossInputs",
    "Objective",
    "bradley_terry",
    "centering_penalty",
    "combine_objectives",
    "compute_loss",
    "distill_regression",
    "distill_soft_bt",
    "from_helpsteer",
    "kwise_all_pairs",
    "label_smoothed_bt",
    "margin_bt",
    "masked_mse",
    "odin_length_loss",
    "odin_orthogonality",
    "pearson",
    "plackett_luce",
    "robust_bt",
    "scaled_bt",
    "soft_bt",
    "static_weights",
    "to_helpsteer",
    "validate_loss",
]


# --------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------

def _reduce(losses: Tensor, weight: Tensor | None) -> Tensor:
    """Mean of per-item losses, or the weighted mean sum(w * l) / sum(w)."""
    if weight is None:
        return losses.mean()
    if weight.shape != losses.shape:
        # Broadcasting would silently weight the wrong thing, so insist on one weight per item.
        raise ValueError(f"weight has shape {tuple(weight.shape)}, expected {tuple(losses.shape)}")
    weight = weight.to(losses.dtype)
    return (weight * losses).sum() / weight.sum()


def _check_eps(eps: float) -> None:
    if not 0.0 <= eps < 0.5:
        raise RewardkitError(f"eps must satisfy 0 <= eps < 0.5, got {eps}")


def _check_tau(tau: float) -> None:
    if not tau > 0.0:
        raise RewardkitError(f"tau must be > 0, got {tau}")


# --------------------------------------------------------------------------------------------------------
# Pairwise losses (METHODS.md §1.1, §1.3-§1.8)
# --------------------------------------------------------------------------------------------------------

def bradley_terry(delta: Tensor, weight: Tensor | None = None) -> Tensor:
    """Bradley-Terry loss ``softplus(-delta)`` = ``-log sigmoid(delta)`` (METHODS §1.1).

    Source: Ouyang et al., "Training language models to follow instructions with human feedback"
    (arXiv 2203.02155).

    Args:
        delta (Tensor): ``r_chosen - r_rejected``, shape (n_pairs,).
        weight (Tensor | None): per-pair weights, shape (n_pairs,).

    Returns:
        Tensor: scalar loss.
    """
    return _reduce(F.softplus(-delta), weight)


def margin_bt(delta: Tensor, margin: Tensor | float, weight: Tensor | None = None) -> Tensor:
    """Margin BT ``softplus(-(delta - m))`` (METHODS §1.3); ``m = 0`` is plain BT.

    Source: Touvron et al., "Llama 2: Open Foundation and Fine-Tuned Chat Models" (arXiv 2307.09288).

    Args:
        delta (Tensor): ``r_chosen - r_rejected``, shape (n_pairs,).
        margin (Tensor | float): margin m from the rating gap, shape (n_pairs,) or a scalar.
        weight (Tensor | None): per-pair weights, shape (n_pairs,).

    Returns:
        Tensor: scalar loss.
    """
    return _reduce(F.softplus(-(delta - margin)), weight)


def scaled_bt(delta: Tensor, strength: Tensor | float, weight: Tensor | None = None) -> Tensor:
    """Scaled BT ``m * softplus(-delta)`` with m the preference strength, e.g. {1, 2, 3} (METHODS §1.4).

    Source: Wang et al., "HelpSteer2-Preference: Complementing Ratings with Preferences" (arXiv 2410.01257).

    The strength multiplies the per-pair loss; it is not a weight in the denominator of the mean, so the
    gradient is exactly m times the BT gradient.

    Args:
        delta (Tensor): ``r_chosen - r_rejected``, shape (n_pairs,).
        strength (Tensor | float): preference strength m, shape (n_pairs,) or a scalar.
        weight (Tensor | None): per-pair weights, shape (n_pairs,).

    Returns:
        Tensor: scalar loss.
    """
    return _reduce(strength * F.softplus(-delta), weight)


def soft_bt(delta: Tensor, p: Tensor | float, weight: Tensor | None = None) -> Tensor:
    """Soft-label BT ``-[p log sigmoid(delta) + (1-p) log sigmoid(-delta)]`` (METHODS §1.8).

    The cross-entropy between the label probability p and sigmoid(delta); minimised at
    ``delta = logit(p)`` with minimum value the binary entropy H(p). ``p = 1`` is plain BT.
    Source: soft preference labels from annotator fractions, as in arXiv 2410.01257 (HelpSteer2-Preference).

    Args:
        delta (Tensor): ``r_chosen - r_rejected``, shape (n_pairs,).
        p (Tensor | float): probability that the chosen response wins, shape (n_pairs,) or a scalar.
        weight (Tensor | None): per-pair weights, shape (n_pairs,).

    Returns:
        Tensor: scalar loss.
    """
    return _reduce(p * F.softplus(-delta) + (1.0 - p) * F.softplus(delta), weight)


def label_smoothed_bt(delta: Tensor, eps: float = 0.1, weight: Tensor | None = None) -> Tensor:
    """Conservative (label-smoothed) BT ``(1-eps) softplus(-delta) + eps softplus(delta)`` (METHODS §1.5).

    Soft BT with ``p = 1 - eps``: assumes each label is flipped with probability eps, so the minimiser is
    ``delta* = log((1-eps)/eps)`` instead of +inf.
    Source: Mitchell, "A note on DPO with noisy preferences & relationship to IPO" (cDPO, 2023).

    Args:
        delta (Tensor): ``r_chosen - r_rejected``, shape (n_pairs,).
        eps (float): label-flip rate, 0 <= eps < 0.5.
        weight (Tensor | None): per-pair weights, shape (n_pairs,).

    Returns:
        Tensor: scalar loss.
    """
    _check_eps(eps)
    return soft_bt(delta, 1.0 - eps, weight)


def robust_bt(delta: Tensor, eps: float = 0.1, weight: Tensor | None = None) -> Tensor:
    """Robust BT ``[(1-eps) softplus(-delta) - eps softplus(delta)] / (1-2eps)`` (METHODS §1.6).

    An unbiased estimate of the clean BT loss under label noise eps:
    ``(1-eps) L(delta) + eps L(-delta) = softplus(-delta)``. Unbounded below, so watch the reward scale.
    Source: Chowdhury et al., "Provably Robust DPO: Aligning Language Models with Noisy Feedback"
    (arXiv 2403.00409).

    Args:
        delta (Tensor): ``r_chosen - r_rejected``, shape (n_pairs,).
        eps (float): label-flip rate, 0 <= eps < 0.5.
        weight (Tensor | None): per-pair weights, shape (n_pairs,).

    Returns:
        Tensor: scalar loss.
    """
    _check_eps(eps)
    per_pair = ((1.0 - eps) * F.softplus(-delta) - eps * F.softplus(delta)) / (1.0 - 2.0 * eps)
    return _reduce(per_pair, weight)


def centering_penalty(r_chosen: Tensor, r_rejected: Tensor, weight: Tensor | None = None) -> Tensor:
    """Reward-centering term ``mean((r_chosen + r_rejected)^2)`` (METHODS §1.7).

    Pins the free per-prompt offset of a BT model so scores compare across prompts. It squares the SUM of
    the two rewards, not their difference (the early TRL bug, issue #1931). Add it as ``eta * penalty``.
    Source: Eisenstein et al., "Helping or Herding? Reward Model Ensembles Mitigate but do not Eliminate
    Reward Hacking" (arXiv 2312.09244, Eq. 2).

    Args:
        r_chosen (Tensor): rewards of the chosen responses, shape (n_pairs,).
        r_rejected (Tensor): rewards of the rejected responses, shape (n_pairs,).
        weight (Tensor | None): per-pair weights, shape (n_pairs,).

    Returns:
        Tensor: scalar penalty.
    """
    return _reduce((r_chosen + r_rejected).square(), weight)


# --------------------------------------------------------------------------------------------------------
# K-wise losses (METHODS.md §1.2)
# --------------------------------------------------------------------------------------------------------

def _ranking_mask(rewards: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Validity mask (n_groups, K_max) and rewards with padding replaced by 0.

    Zeroing the padding (rather than masking later) keeps inf/NaN padding out of both values and grads.
    """
    if rewards.dim() != 2 or lengths.shape != rewards.shape[:1]:
        raise ValueError(f"expected rewards (n_groups, K_max) and lengths (n_groups,), got "
                         f"{tuple(rewards.shape)} and {tuple(lengths.shape)}")
    k_max = rewards.shape[1]
    if bool(((lengths < 2) | (lengths > k_max)).any()):
        raise ValueError(f"every group needs 2 <= K <= K_max = {k_max}, got lengths {lengths.tolist()}")
    valid = torch.arange(k_max, device=rewards.device) < lengths[:, None]
    return valid, torch.where(valid, rewards, torch.zeros((), dtype=rewards.dtype, device=rewards.device))


def kwise_all_pairs(rewards: Tensor, lengths: Tensor, weight: Tensor | None = None) -> Tensor:
    """All-pairs K-wise loss: per group ``(1/C(K,2)) sum_{i<j} softplus(-(r_i - r_j))`` (METHODS §1.2).

    Every group (one prompt's ranking) counts once however large its K. For K = 2 it is BT.
    Source: Ouyang et al., arXiv 2203.02155 (InstructGPT reward model).

    Args:
        rewards (Tensor): each group's rewards in rank order, best first, padded on the right with any
            value, shape (n_groups, K_max).
        lengths (Tensor): the real K of each group (2 <= K <= K_max), shape (n_groups,).
        weight (Tensor | None): per-group weights, shape (n_groups,).

    Returns:
        Tensor: scalar loss.
    """
    valid, r = _ranking_mask(rewards, lengths)
    k_max = r.shape[1]
    idx = torch.arange(k_max, device=r.device)
    # pair (i, j) counts when i is ranked above j and both are real responses.
    upper = idx[:, None] < idx[None, :]
    pairs = upper & valid[:, None, :]                                    # (n_groups, K_max, K_max)
    per_pair = F.softplus(-(r[:, :, None] - r[:, None, :]))
    per_pair = torch.where(pairs, per_pair, torch.zeros((), dtype=r.dtype, device=r.device))
    k = lengths.to(r.dtype)
    per_group = per_pair.sum(dim=(1, 2)) / (k * (k - 1) / 2)
    return _reduce(per_group, weight)


def plackett_luce(rewards: Tensor, lengths: Tensor, weight: Tensor | None = None) -> Tensor:
    """Plackett-Luce negative log-likelihood of each full ranking (METHODS §1.2).

    Per group ``-sum_{k=1}^{K-1} [r_k - logsumexp_{j>=k} r_j]``, then the mean over groups. For K = 2 it
    is BT; with all rewards equal it is ln K!.
    Source: Zhu, Jordan & Jiao, "Principled Reinforcement Learning with Human Feedback from Pairwise or
    K-wise Comparisons" (arXiv 2301.11270).

    Args:
        rewards (Tensor): each group's rewards in rank order, best first, padded on the right with any
            value, shape (n_groups, K_max).
        lengths (Tensor): the real K of each group (2 <= K <= K_max), shape (n_groups,).
        weight (Tensor | None): per-group weights, shape (n_groups,).

    Returns:
        Tensor: scalar loss.
    """
    valid, r = _ranking_mask(rewards, lengths)
    k_max = r.shape[1]
    idx = torch.arange(k_max, device=r.device)
    # Row k of the (K_max, K_max) grid holds the candidates still in play at step k: j >= k and real.
    # The diagonal is always kept so rows past the end are never all -inf (that gives NaN gradients).
    in_play = ((idx[None, :] >= idx[:, None]) & valid[:, None, :]) | torch.eye(k_max, dtype=torch.bool,
                                                                           device=r.device)
    grid = r[:, None, :].expand(-1, k_max, -1).masked_fill(~in_play, float("-inf"))
    log_norm = torch.logsumexp(grid, dim=-1)                             # (n_groups, K_max)
    # Steps k = 1..K-1 (0-based 0..K-2); the last choice is forced and contributes log 1 = 0.
    steps = idx[None, :] < (lengths[:, None] - 1)
    per_step = torch.where(steps, log_norm - r, torch.zeros((), dtype=r.dtype, device=r.device))
    return _reduce(per_step.sum(dim=1), weight)


# --------------------------------------------------------------------------------------------------------
# Distillation (METHODS.md §6)
# --------------------------------------------------------------------------------------------------------

def distill_soft_bt(delta_student: Tensor, delta_teacher: Tensor, tau: float = 1.0,
                    weight: Tensor | None = None) -> Tensor:
    """Soft-BT distillation: soft BT of the student against ``p_T = sigmoid(delta_T / tau)`` (METHODS §6).

    ``tau -> 0`` gives hard BT on the teacher's argmax label. The teacher is a fixed target (detached).
    Source: Fisch et al., "Robust Preference Optimization through Reward Model Distillation"
    (arXiv 2405.19316); Gao et al., "Scaling Laws for Reward Model Overoptimization" (arXiv 2210.10760).

    Args:
        delta_student (Tensor): student ``r_chosen - r_rejected``, shape (n_pairs,).
        delta_teacher (Tensor): teacher ``r_chosen - r_rejected``, shape (n_pairs,).
        tau (float): teacher temperature, > 0.
        weight (Tensor | None): per-pair weights, shape (n_pairs,).

    Returns:
        Tensor: scalar loss.
    """
    _check_tau(tau)
    p_teacher = torch.sigmoid(delta_teacher.detach() / tau)
    return soft_bt(delta_student, p_teacher, weight)


def distill_regression(delta_student: Tensor, delta_teacher: Tensor, weight: Tensor | None = None) -> Tensor:
    """Pairwise-difference regression ``(delta_S - delta_T)^2`` (METHODS §6).

    Regresses differences because a BT teacher is defined only up to a per-prompt shift. The teacher is a
    fixed target (detached).
    Source: Fisch et al., arXiv 2405.19316.

    Args:
        delta_student (Tensor): student ``r_chosen - r_rejected``, shape (n_pairs,).
        delta_teacher (Tensor): teacher ``r_chosen - r_rejected``, shape (n_pairs,).
        weight (Tensor | None): per-pair weights, shape (n_pairs,).

    Returns:
        Tensor: scalar loss.
    """
    return _reduce((delta_student - delta_teacher.detach()).square(), weight)


# --------------------------------------------------------------------------------------------------------
# Multi-objective reward models (METHODS.md §2.1, §2.2)
# --------------------------------------------------------------------------------------------------------

def masked_mse(pred: Tensor, target: Tensor, mask: Tensor, denominator: Tensor | float | None = None) -> Tensor:
    """Attribute regression with missing labels masked: ``sum m (r - y)^2 / sum m`` (METHODS §2.1).

    Merged attribute data are sparse (a HelpSteer row rates five attributes, a safety row one), so a missing
    label must contribute nothing: its target is never read (NaN there is fine) and its prediction gets a
    zero gradient; an attribute with every label missing gets a zero gradient altogether. With no label at
    all the loss is 0 (not NaN), still attached to the graph.
    Source: Wang et al., "HelpSteer2" (arXiv 2406.08673); ArmoRM stage 1 (arXiv 2406.12845).

    Args:
        pred (Tensor): predicted attribute values, shape (n_responses, n_attributes).
        target (Tensor): labels, any value where ``mask`` is False, shape (n_responses, n_attributes).
        mask (Tensor): bool, True where a label is present, shape (n_responses, n_attributes).
        denominator (Tensor | float | None): the label count to divide by instead of ``mask.sum()``: the
            training loop passes the count over the whole global batch, so a batch cut into several forward
            passes gets the same gradient as one pass.

    Returns:
        Tensor: scalar loss.
    """
    if pred.shape != target.shape or pred.shape != mask.shape:
        raise ValueError(f"pred, target and mask must have one shape, got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)} and {tuple(mask.shape)}")
    mask = mask.bool()
    zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
    sq = torch.where(mask, pred - torch.where(mask, target.to(pred.dtype), zero), zero).square()
    count = mask.sum() if denominator is None else torch.as_tensor(denominator, device=pred.device)
    return sq.sum() / count.to(pred.dtype).clamp_min(1.0)  # no label: 0 / 1, never 0 / 0


def step_bce(logits: Tensor, target: Tensor, mask: Tensor, denominator: Tensor | float | None = None) -> Tensor:
    """Process reward models' step loss: binary cross-entropy of P(step correct) = sigmoid(logit) against
    hard or soft step labels, unlabeled steps masked (METHODS.md §4.2):
    ``-sum m [y log p + (1 - y) log(1 - p)] / sum m``.

    Args:
        logits (Tensor): one logit per step read, shape (n_steps,).
        target (Tensor): labels in [0, 1], any value where ``mask`` is False, shape (n_steps,).
        mask (Tensor): bool, True where a step is labelled, shape (n_steps,).
        denominator (Tensor | float | None): the labelled-step count to divide by instead of ``mask.sum()``
            (the global batch's, so a batch cut into several passes gets the same gradient).

    Returns:
        Tensor: scalar loss; 0 (attached to the graph) with no labelled step.
    """
    if logits.shape != target.shape or logits.shape != mask.shape:
        raise ValueError(f"logits, target and mask must have one shape, got {tuple(logits.shape)}, "
                         f"{tuple(target.shape)} and {tuple(mask.shape)}")
    mask = mask.bool()
    y = torch.where(mask, target.to(logits.dtype), torch.zeros_like(logits))
    per_step = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    count = mask.sum() if denominator is None else torch.as_tensor(denominator, device=logits.device)
    return torch.where(mask, per_step, torch.zeros_like(per_step)).sum() / count.to(logits.dtype).clamp_min(1.0)


def to_helpsteer(y: Tensor | float) -> Tensor | float:
    """HelpSteer 0-4 ratings to the unit-scale regression target ``(y + 0.5) / 5`` (METHODS §2.1)."""
    return (y + 0.5) / 5.0


def from_helpsteer(r: Tensor | float) -> Tensor | float:
    """A unit-scale prediction back to the HelpSteer 0-4 scale, ``5 r - 0.5``; inverts ``to_helpsteer``."""
    return 5.0 * r - 0.5


def static_weights(raw: Tensor, nonnegative: bool = True) -> Tensor:
    """Combination weights w from their free parameters: ``softplus(raw)`` when w >= 0 is wanted, else raw.

    Args:
        raw (Tensor): free parameters, shape (n_objectives,).

    Returns:
        Tensor: weights, shape (n_objectives,).
    """
    return F.softplus(raw) if nonnegative else raw


def inverse_static_weights(weights: Tensor, nonnegative: bool = True) -> Tensor:
    """The free parameters that give `weights` (the inverse of ``static_weights``), shape (n_objectives,)."""
    if not nonnegative:
        return weights.clone()
    w = weights.clamp_min(1e-6)
    return w + torch.log(-torch.expm1(-w))  # softplus^-1(w) = log(e^w - 1), stable for small and large w


def combine_objectives(rewards: Tensor, weights: Tensor) -> Tensor:
    """The single reward ``s = w^T r`` of every response (METHODS §2.2).

    Args:
        rewards (Tensor): per-objective rewards, shape (n_responses, n_objectives).
        weights (Tensor): combination weights, shape (n_objectives,).

    Returns:
        Tensor: combined rewards, shape (n_responses,).
    """
    return rewards @ weights.to(rewards.dtype)


# --------------------------------------------------------------------------------------------------------
# ODIN length head (METHODS.md §3.1)
# --------------------------------------------------------------------------------------------------------

def pearson(x: Tensor, y: Tensor) -> Tensor:
    """Differentiable Pearson correlation of two series, shape (n,) each; 0 for a constant series.

    Returns:
        Tensor: scalar in [-1, 1].
    """
    x = x - x.mean()
    y = y.to(x.dtype) - y.to(x.dtype).mean()
    norm = (x.square().sum() * y.square().sum()).sqrt()
    return (x * y).sum() / norm.clamp_min(1e-12)


def odin_length_loss(r_quality: Tensor, r_length: Tensor, lengths: Tensor) -> Tensor:
    """ODIN's disentangling term ``|rho(r_Q, len)| - rho(r_L, len)`` (METHODS §3.1).

    It pushes the quality reward's correlation with length to zero and the length head's to one. With several
    quality heads (one per objective) the first part is their mean. rho is Pearson over every response given,
    which the training loop gathers from all processes (the global batch).
    Source: Chen et al., "ODIN: Disentangled Reward Mitigates Hacking in RLHF" (arXiv 2402.07319).

    Args:
        r_quality (Tensor): quality rewards, shape (n_responses,) or (n_responses, n_objectives).
        r_length (Tensor): length-head outputs, shape (n_responses,).
        lengths (Tensor): response lengths in tokens, shape (n_responses,).

    Returns:
        Tensor: scalar loss in [-1, 2].
    """
    quality = r_quality[:, None] if r_quality.dim() == 1 else r_quality
    lengths = lengths.to(quality.dtype)
    rho_q = torch.stack([pearson(quality[:, j], lengths).abs() for j in range(quality.shape[1])]).mean()
    return rho_q - pearson(r_length, lengths)


def odin_orthogonality(w_quality: Tensor, w_length: Tensor) -> Tensor:
    """ODIN's head orthogonality ``|w_Q^T w_L|`` on mean-centred, unit-norm head weights (METHODS §3.1).

    Args:
        w_quality (Tensor): quality head weight rows, shape (hidden,) or (n_objectives, hidden); with several
            rows the result is the mean over them.
        w_length (Tensor): length head weights, shape (hidden,).

    Returns:
        Tensor: scalar in [0, 1].
    """
    def unit(w: Tensor) -> Tensor:
        w = w - w.mean(dim=-1, keepdim=True)
        return w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    quality = w_quality[None, :] if w_quality.dim() == 1 else w_quality
    return (unit(quality) @ unit(w_length)).abs().mean()


# --------------------------------------------------------------------------------------------------------
# Objective layer: what the training loop calls
# --------------------------------------------------------------------------------------------------------

@dataclass
class LossInputs:
    """Everything any objective may need for one batch; each loss reads only its own fields.

    Attributes:
        rewards: flat rewards of every response in the batch, shape (n_responses,).
        winner: long indices into ``rewards`` of the preferred response of each pair, shape (n_pairs,).
        loser: long indices into ``rewards`` of the other response, shape (n_pairs,).
        p: probability that the winner beats the loser (1.0 for hard labels, the annotator fraction for
            soft ones), shape (n_pairs,).
        margin: margin or strength from the data (0.0 when the data has none), shape (n_pairs,).
        weight: per-pair weight (e.g. 1/C(K,2) so every prompt counts once), shape (n_pairs,).
        groups: long indices into ``rewards``, each row one full ranking best-first, padded on the right
            with -1, shape (n_groups, K_max). Needed by "kwise" and "plackett_luce".
        teacher: teacher rewards of the same responses, shape (n_responses,). Needed by "distill_*".
    """

    rewards: Tensor
    winner: Tensor
    loser: Tensor
    p: Tensor
    margin: Tensor
    weight: Tensor
    groups: Tensor | None = None
    teacher: Tensor | None = None

    def to(self, device: torch.device | str, rewards: Tensor) -> LossInputs:
        """The same labels on `device`, with the batch's rewards filled in."""
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return LossInputs(rewards, move(self.winner), move(self.loser), move(self.p), move(self.margin),
                          move(self.weight), move(self.groups), move(self.teacher))

    def delta(self) -> Tensor:
        """``r_winner - r_loser``, shape (n_pairs,)."""
        return self.rewards[self.winner] - self.rewards[self.loser]

    def teacher_delta(self, loss_name: str) -> Tensor:
        """Teacher ``t_winner - t_loser``, shape (n_pairs,); a per-prompt teacher offset cancels here."""
        if self.teacher is None:
            raise RewardkitError(f"loss '{loss_name}' needs teacher rewards, but the batch has none: "
                                 "score the training data with a teacher model first")
        teacher = self.teacher.to(self.rewards.dtype)
        return teacher[self.winner] - teacher[self.loser]

    def ranked_groups(self, loss_name: str) -> tuple[Tensor, Tensor]:
        """Rewards of each ranking best-first (padding = 0), shape (n_groups, K_max), and the lengths."""
        if self.groups is None:
            raise RewardkitError(f"loss '{loss_name}' needs full rankings (groups), but the batch has none: "
                                 "use ranked data (K >= 2 responses per prompt) or a pairwise loss")
        real = self.groups >= 0
        lengths = real.sum(dim=1)
        k_max = self.groups.shape[1]
        if not bool((real == (torch.arange(k_max, device=real.device) < lengths[:, None])).all()):
            raise ValueError("groups must be padded with -1 on the right only")
        return self.rewards[self.groups.clamp_min(0)], lengths


def _strength(inputs: LossInputs) -> Tensor:
    # Scaled BT reads the data's margin field as the strength m in {1, 2, 3}. A margin of 0 (or below)
    # means "no strength given", and counts as 1 so the pair still trains as plain BT, never as 0.
    return torch.where(inputs.margin > 0, inputs.margin, torch.ones_like(inputs.margin))


# Each objective: (inputs, its own params) -> scalar loss, before the shared centering term.
_ObjectiveFn = Callable[..., Tensor]


@dataclass(frozen=True)
class Objective:
    """A named training objective: how to compute it from LossInputs and which parameters it takes."""

    fn: _ObjectiveFn
    defaults: dict[str, float]    # its own parameters and their defaults ("center" is shared by all)
    summary: str


LOSSES: dict[str, Objective] = {
    "bt": Objective(
        lambda x: bradley_terry(x.delta(), x.weight), {},
        "Bradley-Terry softplus(-delta)"),
    "margin": Objective(
        lambda x: margin_bt(x.delta(), x.margin, x.weight), {},
        "margin BT softplus(-(delta - m)), m from the data's margin"),
    "scaled": Objective(
        lambda x: scaled_bt(x.delta(), _strength(x), x.weight), {},
        "scaled BT m * softplus(-delta), m = the data's margin as strength (0 counts as 1)"),
    "smoothed": Objective(
        lambda x, eps: label_smoothed_bt(x.delta(), eps, x.weight), {"eps": 0.1},
        "label-smoothed (conservative) BT"),
    "robust": Objective(
        lambda x, eps: robust_bt(x.delta(), eps, x.weight), {"eps": 0.1},
        "noise-robust (unbiased) BT"),
    "soft": Objective(
        lambda x: soft_bt(x.delta(), x.p, x.weight), {},
        "soft-label BT with p from the data"),
    "kwise": Objective(
        lambda x: kwise_all_pairs(*x.ranked_groups("kwise")), {},
        "all-pairs loss over each full ranking, every prompt counts once"),
    "plackett_luce": Objective(
        lambda x: plackett_luce(*x.ranked_groups("plackett_luce")), {},
        "Plackett-Luce likelihood of each full ranking"),
    "distill_soft": Objective(
        lambda x, tau: distill_soft_bt(x.delta(), x.teacher_delta("distill_soft"), tau, x.weight),
        {"tau": 1.0},
        "soft BT against the teacher's sigmoid(delta_T / tau)"),
    "distill_regression": Objective(
        lambda x: distill_regression(x.delta(), x.teacher_delta("distill_regression"), x.weight), {},
        "regression of the student's reward differences onto the teacher's"),
}
LOSS_NAMES: tuple[str, ...] = tuple(LOSSES)

# The centering weight eta applies to every objective: it only needs the batch's (winner, loser) pairs.
_SHARED_DEFAULTS: dict[str, float] = {"center": 0.0}

_PARAM_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "eps": (lambda v: 0.0 <= v < 0.5, "0 <= eps < 0.5"),
    "tau": (lambda v: v > 0.0, "tau > 0"),
    "center": (lambda v: v >= 0.0, "center >= 0"),
}


def validate_loss(name: str, **params: float) -> dict[str, float]:
    """Check a loss name and its parameters before any model loads; return the full parameter set.

    Args:
        name: one of ``LOSS_NAMES``.
        **params: that loss's parameters (``eps`` for smoothed/robust, ``tau`` for distill_soft,
            ``center`` for any loss); missing ones take their defaults.

    Returns:
        dict[str, float]: every parameter of the loss, defaults filled in.

    Raises:
        RewardkitError: unknown name, unknown parameter, or a value out of range.
    """
    if name not in LOSSES:
        raise RewardkitError(f"unknown loss '{name}'; valid losses: {', '.join(LOSS_NAMES)}")
    allowed = {**_SHARED_DEFAULTS, **LOSSES[name].defaults}
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise RewardkitError(f"loss '{name}' takes no parameter {', '.join(map(repr, unknown))}; "
                             f"its parameters: {', '.join(sorted(allowed))}")
    resolved = {**allowed, **params}
    for key, value in resolved.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RewardkitError(f"loss '{name}': {key} must be a finite number, got {value!r}")
        ok, rule = _PARAM_RULES[key]
        if not ok(value):
            raise RewardkitError(f"loss '{name}': {key} must satisfy {rule}, got {value}")
    return {k: float(v) for k, v in resolved.items()}


def compute_loss(name: str, inputs: LossInputs, **params: float) -> Tensor:
    """The configured training loss for one batch, as a scalar; the caller need not know which loss.

    Adds ``center * centering_penalty`` over the batch's pairs when ``center > 0``. Half-precision
    rewards are upcast to float32 so the loss itself is computed accurately.

    Args:
        name: one of ``LOSS_NAMES``.
        inputs: the batch (see ``LossInputs``).
        **params: the loss's parameters (see ``validate_loss``).

    Returns:
        Tensor: scalar loss.

    Raises:
        RewardkitError: bad name or parameters, or the batch lacks groups / teacher rewards the loss needs.
    """
    resolved = validate_loss(name, **params)
    center = resolved.pop("center")
    rewards = inputs.rewards
    if rewards.dtype in (torch.float16, torch.bfloat16):
        rewards = rewards.float()
    dtype = rewards.dtype
    x = LossInputs(rewards=rewards, winner=inputs.winner, loser=inputs.loser, p=inputs.p.to(dtype),
                   margin=inputs.margin.to(dtype), weight=inputs.weight.to(dtype), groups=inputs.groups,
                   teacher=inputs.teacher)
    loss = LOSSES[name].fn(x, **resolved)
    if center > 0.0:
        loss = loss + center * centering_penalty(rewards[x.winner], rewards[x.loser], x.weight)
    return loss
