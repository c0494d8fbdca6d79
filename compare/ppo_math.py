"""The math of RLHF PPO as pure torch functions.

Shapes are batch-first: B rows, T response tokens, V vocabulary entries. ``mask`` is a bool or 0/1
tensor of valid (non-pad) response positions, shape (B, T). Every reduction here is masked, so pad
fillers never reach a loss or a metric (docs/ppo.md row 12). Numbers in brackets ("row 14") refer to
the table in docs/ppo.md. References: Schulman et al. 2017 (PPO), Schulman et al. 2016 (GAE), Ziegler et
al. 2019 (KL-penalised RLHF), Huang et al. 2022/2024 ("The N(+) Implementation Details of RLHF with PPO").
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over positions where ``mask`` is true; (B, T) -> scalar, or reduced over ``dim``.

    Uses ``where`` rather than ``x * mask`` so an inf/NaN at a masked position cannot leak in.
    """
    mask = mask.bool()
    total = torch.where(mask, x, torch.zeros_like(x)).sum(dim=dim)
    return total / mask.sum(dim=dim).to(x.dtype)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of ``x`` over all valid positions (a scalar); Bessel-corrected when ``unbiased``."""
    mask = mask.bool()
    centered = torch.where(mask, x - masked_mean(x, mask), torch.zeros_like(x))
    var = masked_mean(centered**2, mask)
    if unbiased:
        n = int(mask.sum())
        if n < 2:
            raise ValueError(f"unbiased masked_var needs at least 2 valid positions, got {n}")
        var = var * n / (n - 1)
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Whiten ``x`` (B, T) with the mean and unbiased variance of its valid positions.

    ``shift_mean=False`` only rescales and keeps the mean (reward whitening, row 13); the default
    centres too (advantage whitening, row 14). Invalid positions are 0 in the output.
    """
    mask = mask.bool()
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, torch.zeros_like(whitened))


def apply_missing_eos_penalty(
    scores: Tensor, has_eos: Tensor, penalty: float, mode: str = "subtract"
) -> Tensor:
    """Penalise responses (B,) that never emitted EOS (row 9).

    mode "subtract": score - penalty; mode "replace": score := -penalty. Rows with EOS are unchanged.
    """
    if mode == "subtract":
        penalised = scores - penalty
    elif mode == "replace":
        penalised = torch.full_like(scores, -penalty)
    else:
        raise ValueError(f"mode must be 'subtract' or 'replace', got {mode!r}")
    return torch.where(has_eos.bool(), scores, penalised)


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k1") -> Tensor:
    """Per-token estimate of KL(policy || ref) from sampled-token log-probs, (B, T) -> (B, T) (row 10).

    k1 = logp - ref (unbiased, can be negative); k3 = exp(ref - logp) - 1 - (ref - logp)
    (unbiased, never negative; Schulman, "Approximating KL divergence", 2020).
    """
    if kind == "k1":
        return logprobs - ref_logprobs
    if kind == "k3":
        log_ratio = ref_logprobs - logprobs
        return torch.expm1(log_ratio) - log_ratio  # expm1 keeps precision when the ratio is near 1
    raise ValueError(f"kind must be 'k1' or 'k3', got {kind!r}")


def per_token_rewards(
    scores: Tensor, kl: Tensor, mask: Tensor, kl_coef: float | Tensor
) -> tuple[Tensor, Tensor]:
    """KL-penalised per-token rewards r_t = -kl_coef * kl_t, plus the score once (Ziegler et al. 2019, eq. 2).

    Convention (row 11): the score lands on the LAST valid token of each row, i.e. on the EOS token,
    or on the last generated token when the response has no EOS. A row with no valid token gets nothing.
    scores: (B,); kl, mask: (B, T). Returns (rewards, non_score_reward), both (B, T), 0 where invalid.
    """
    mask = mask.bool()
    non_score_reward = torch.where(mask, -kl_coef * kl, torch.zeros_like(kl))
    positions = torch.arange(mask.size(1), device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, -1).max(dim=1).values  # -1 when the row is empty
    score_at_end = torch.where(last >= 0, scores, torch.zeros_like(scores)).to(kl.dtype)
    rewards = non_score_reward.scatter_add(1, last.clamp(min=0).unsqueeze(1), score_at_end.unsqueeze(1))
    return rewards, non_score_reward


def gae_advantages(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16), vectorised over the batch.

    delta_t = r_t + gamma * V_{t+1} - V_t;  A_t = delta_t + gamma * lam * A_{t+1}; the next value is 0
    after the last valid step (the episode ends there). Invalid positions are skipped, which for the
    right-padded masks of RLHF means they simply contribute nothing. rewards, values, mask: (B, T).
    Returns (advantages, returns = advantages + values), both (B, T), 0 where invalid.
    """
    mask = mask.bool()
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    for t in reversed(range(values.size(1))):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        valid = mask[:, t]
        advantages[:, t] = torch.where(valid, advantage, 0.0)
        # at an invalid position carry the later step through unchanged, as if the slot did not exist
        next_value = torch.where(valid, values[:, t], next_value)
        next_advantage = torch.where(valid, advantage, next_advantage)
    returns = torch.where(mask, advantages + values, torch.zeros_like(values))
    return advantages, returns


def policy_loss(
    new_logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float = 0.2
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7), as a loss to minimise (row 15).

    loss = masked_mean(max(-A r, -A clip(r, 1 - eps, 1 + eps))), r = exp(new - old); inputs (B, T).
    Stats (detached 0-dim tensors): ``approxkl`` = 0.5 * mean(log r ^ 2), ``clipfrac``, ``ratio``.
    """
    mask = mask.bool()
    # zero the log-ratio at masked positions first, so garbage there (even inf) cannot reach grads
    log_ratio = torch.where(mask, new_logprobs - old_logprobs, torch.zeros_like(new_logprobs))
    advantages = torch.where(mask, advantages, torch.zeros_like(advantages))
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "approxkl": 0.5 * masked_mean(log_ratio**2, mask),
            "clipfrac": masked_mean((clipped > unclipped).to(ratio.dtype), mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(
    new_values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float = 0.2
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss 0.5 * masked_mean(max((v - R)^2, (clip(v, v_old +- c) - R)^2)) (row 16).

    Inputs (B, T). Stats (detached 0-dim tensor): ``vf_clipfrac``, the share of tokens where the
    clipped term was the larger one.
    """
    mask = mask.bool()
    zeros = torch.zeros_like(new_values)
    new_values = torch.where(mask, new_values, zeros)
    old_values = torch.where(mask, old_values, zeros)
    returns = torch.where(mask, returns, zeros)
    clipped_values = old_values + torch.clamp(new_values - old_values, -clip_range, clip_range)
    unclipped_loss = (new_values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_loss, clipped_loss), mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((clipped_loss > unclipped_loss).to(new_values.dtype), mask)}
    return loss, stats


def entropy_from_logits(logits: Tensor, mask: Tensor) -> Tensor:
    """Per-token entropy H = -sum_v p_v log p_v of softmax(logits), (B, T, V) -> (B, T), 0 where invalid.

    Pass logits already divided by the sampling temperature (row 3). Computed in float32 via
    log_softmax (logsumexp inside); -inf logits (filtered tokens) contribute 0 rather than NaN.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    finite_logp = logp.clamp(min=torch.finfo(logp.dtype).min)  # 0 * -inf would be NaN
    entropy = -(logp.exp() * finite_logp).sum(dim=-1)
    return torch.where(mask.bool(), entropy, torch.zeros_like(entropy))


class FixedKLController:
    """A constant KL coefficient with the same interface as ``AdaptiveKLController``."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """Adaptive KL coefficient of Ziegler et al. 2019, section 2.2.

    e = clip(KL / target - 1, -0.2, 0.2);  beta <- beta * (1 + e * n_steps / horizon).
    The coefficient grows when the measured KL is above target and shrinks when below.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be positive, got {target} and {horizon}")
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
