"""Unit tests for compare.ppo_math against hand-computed values (docs/ppo.md rows 7, 9-16)."""

import math

import pytest
import torch
from torch import Tensor

from compare.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    apply_missing_eos_penalty,
    entropy_from_logits,
    gae_advantages,
    kl_estimate,
    masked_mean,
    masked_var,
    masked_whiten,
    per_token_rewards,
    policy_loss,
    value_loss,
)
from compare.stages.best_of_n import bon_kl_bound

EOS, PAD = 2, 0


def gae_advantages_loop(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Plain per-row Python reference for ``gae_advantages`` (same shapes): the loop it must agree with."""
    advantages = torch.zeros_like(values)
    for b in range(values.size(0)):
        steps = [t for t in range(values.size(1)) if mask[b, t]]
        next_value, next_advantage = 0.0, 0.0
        for t in reversed(steps):
            delta = float(rewards[b, t]) + gamma * next_value - float(values[b, t])
            next_advantage = delta + gamma * lam * next_advantage
            next_value = float(values[b, t])
            advantages[b, t] = next_advantage
    returns = torch.where(mask.bool(), advantages + values, torch.zeros_like(values))
    return advantages, returns


def ragged_mask(lengths: list[int], width: int) -> torch.Tensor:
    return torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


# --- masked reductions (rows 12, 13) ---------------------------------------------------------------


def test_masked_mean_and_var_ignore_invalid_positions():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, float("nan"), float("inf")]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(x, mask).item() == pytest.approx(2.0)
    assert torch.allclose(masked_mean(x, mask, dim=1), torch.tensor([1.5, 3.0]))
    # values 1, 2, 3: mean 2, unbiased var 1, biased var 2/3
    assert masked_var(x, mask).item() == pytest.approx(1.0)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(2 / 3)


def test_masked_var_unbiased_needs_two_values():
    with pytest.raises(ValueError):
        masked_var(torch.ones(1, 3), torch.tensor([[1, 0, 0]]))


def test_masked_whiten_equals_plain_whiten_of_valid_slice():
    torch.manual_seed(0)
    x = torch.randn(4, 7) * 3 + 5
    mask = ragged_mask([7, 3, 5, 1], 7)
    valid = x[mask]
    expected = (valid - valid.mean()) / torch.sqrt(valid.var() + 1e-8)
    whitened = masked_whiten(x, mask)
    assert torch.allclose(whitened[mask], expected, atol=1e-5)
    assert (whitened[~mask] == 0).all()
    # mean kept (row 13): only the scale changes
    kept = masked_whiten(x, mask, shift_mean=False)
    assert torch.allclose(kept[mask], expected + valid.mean(), atol=1e-5)
    assert (kept[~mask] == 0).all()


# --- EOS handling (rows 7, 9) ------------------------------------------------------------------------


def test_missing_eos_penalty_both_modes():
    scores = torch.tensor([0.5, 0.5, -2.0])
    has_eos = torch.tensor([True, False, False])
    subtract = apply_missing_eos_penalty(scores, has_eos, 1.0, mode="subtract")
    assert torch.allclose(subtract, torch.tensor([0.5, -0.5, -3.0]))
    replace = apply_missing_eos_penalty(scores, has_eos, 1.0, mode="replace")
    assert torch.allclose(replace, torch.tensor([0.5, -1.0, -1.0]))
    with pytest.raises(ValueError):
        apply_missing_eos_penalty(scores, has_eos, 1.0, mode="add")


# --- KL and rewards (rows 10, 11) ------------------------------------------------------------------


def test_kl_estimators_pd_md_examples():
    logp = torch.log(torch.tensor([0.5, 0.25]))
    ref = torch.log(torch.tensor([0.25, 0.5]))
    k1, k3 = kl_estimate(logp, ref, "k1"), kl_estimate(logp, ref, "k3")
    assert k1.tolist() == pytest.approx([math.log(2), -math.log(2)])
    assert k1.tolist() == pytest.approx([0.693, -0.693], abs=5e-4)
    assert k3.tolist() == pytest.approx([0.5 - 1 + math.log(2), 2 - 1 - math.log(2)], rel=1e-5)
    assert k3.tolist() == pytest.approx([0.193, 0.307], abs=5e-4)
    with pytest.raises(ValueError):
        kl_estimate(logp, ref, "k2")


def test_k3_is_never_negative_and_zero_at_equality():
    torch.manual_seed(0)
    logp, ref = torch.randn(64, 50) * 3, torch.randn(64, 50) * 3
    assert (kl_estimate(logp, ref, "k3") >= 0).all()
    assert (kl_estimate(logp, logp, "k3") == 0).all()
    assert (kl_estimate(logp, logp, "k1") == 0).all()


def test_per_token_rewards_score_on_last_valid_token():
    scores = torch.tensor([2.0, -1.0, 3.0])
    kl = torch.tensor([[0.1, 0.2, 0.3, 9.0], [0.4, 0.0, 0.0, 0.0], [0.1, 0.1, 0.1, 0.1]])
    mask = ragged_mask([3, 1, 4], 4)
    rewards, non_score = per_token_rewards(scores, kl, mask, kl_coef=0.5)
    assert torch.allclose(non_score, torch.tensor([[-0.05, -0.1, -0.15, 0], [-0.2, 0, 0, 0], [-0.05] * 4]))
    expected = non_score.clone()
    expected[0, 2] += 2.0  # EOS at position 2
    expected[1, 0] += -1.0  # a one-token response
    expected[2, 3] += 3.0  # no EOS: the last generated token
    assert torch.allclose(rewards, expected)
    # an empty row gets nothing and no error
    empty, _ = per_token_rewards(
        torch.tensor([5.0]), torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool), 0.1
    )
    assert (empty == 0).all()


# --- GAE (rows 11, 14) ------------------------------------------------------------------------------


def test_gae_pd_md_example():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.5, 0.5]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    for gae in (gae_advantages, gae_advantages_loop):
        advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.95)
        assert advantages[0].tolist() == pytest.approx([0.45125, 0.475, 0.5])
        assert returns[0].tolist() == pytest.approx([0.95125, 0.975, 1.0])


def test_score_on_last_token_gives_pd_md_advantages():
    # V = 0, KL = 0, gamma = 1, lambda = 0.95, score 2 on a 3-token response (+1 pad)
    mask = ragged_mask([3], 4)
    rewards, _ = per_token_rewards(torch.tensor([2.0]), torch.zeros(1, 4), mask, kl_coef=0.05)
    advantages, returns = gae_advantages(rewards, torch.zeros(1, 4), mask, gamma=1.0, lam=0.95)
    assert advantages[0].tolist() == pytest.approx([1.805, 1.9, 2.0, 0.0])
    assert returns[0].tolist() == pytest.approx([1.805, 1.9, 2.0, 0.0])


def test_gae_next_value_is_zero_after_last_valid_step():
    # garbage values/rewards in the padding must not bootstrap into the last valid step
    rewards = torch.tensor([[0.0, 1.0, 7.0, 7.0]])
    values = torch.tensor([[0.5, 0.5, 9.0, 9.0]])
    advantages, returns = gae_advantages(rewards, values, ragged_mask([2], 4), gamma=1.0, lam=0.95)
    assert advantages[0].tolist() == pytest.approx([0.475, 0.5, 0.0, 0.0])
    assert returns[0].tolist() == pytest.approx([0.975, 1.0, 0.0, 0.0])


@pytest.mark.parametrize("arbitrary_holes", [False, True])
def test_gae_loop_and_vectorised_agree(arbitrary_holes: bool):
    torch.manual_seed(1)
    rewards, values = torch.randn(8, 12, dtype=torch.float64), torch.randn(8, 12, dtype=torch.float64)
    if arbitrary_holes:
        mask = torch.rand(8, 12) > 0.3
    else:
        mask = ragged_mask([12, 1, 0, 5, 11, 3, 7, 12], 12)
    for gamma, lam in [(1.0, 0.95), (0.9, 0.8)]:
        fast = gae_advantages(rewards, values, mask, gamma, lam)
        slow = gae_advantages_loop(rewards, values, mask, gamma, lam)
        for got, want in zip(fast, slow, strict=True):
            assert torch.allclose(got, want, atol=1e-10)
            assert (got[~mask] == 0).all()


# --- losses (rows 12, 15, 16) -----------------------------------------------------------------------


def test_policy_loss_clips_ratio():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 1.0]]))
    advantages = torch.tensor([[2.0, 0.0]])
    loss, stats = policy_loss(new, old, advantages, torch.tensor([[1, 0]]), clip_eps=0.2)
    assert loss.item() == pytest.approx(-1.2 * 2.0)  # r = 1.5, A > 0 -> -1.2 A
    assert stats["clipfrac"].item() == pytest.approx(1.0)
    assert stats["ratio"].item() == pytest.approx(1.5)
    assert stats["approxkl"].item() == pytest.approx(0.5 * math.log(1.5) ** 2)
    # A < 0 with r = 1.5: the unclipped term -A r is the larger, no clipping
    loss, stats = policy_loss(new, old, -advantages, torch.tensor([[1, 0]]))
    assert loss.item() == pytest.approx(1.5 * 2.0)
    assert stats["clipfrac"].item() == 0.0


def test_policy_loss_step_zero_ratio_is_one():
    logp = torch.randn(3, 5)
    loss, stats = policy_loss(logp, logp.clone(), torch.randn(3, 5), ragged_mask([5, 2, 4], 5))
    assert stats["ratio"].item() == pytest.approx(1.0)
    assert stats["approxkl"].item() == 0.0
    assert stats["clipfrac"].item() == 0.0


def test_masked_positions_change_neither_loss():
    torch.manual_seed(2)
    mask = ragged_mask([6, 2, 4], 6)
    new_lp, old_lp, adv = torch.randn(3, 6), torch.randn(3, 6), torch.randn(3, 6)
    new_v, old_v, ret = torch.randn(3, 6), torch.randn(3, 6), torch.randn(3, 6)

    def perturb(x: torch.Tensor, fill: float | None = None) -> torch.Tensor:
        noise = torch.full_like(x, fill) if fill is not None else torch.randn_like(x) * 100
        return torch.where(mask, x, noise)

    pl, ps = policy_loss(new_lp, old_lp, adv, mask)
    vl, vs = value_loss(new_v, old_v, ret, mask)
    for fill in (None, float("inf"), float("-inf")):
        pl2, ps2 = policy_loss(perturb(new_lp, fill), perturb(old_lp), perturb(adv, fill), mask)
        vl2, vs2 = value_loss(perturb(new_v, fill), perturb(old_v), perturb(ret, fill), mask)
        assert torch.allclose(pl, pl2) and torch.allclose(vl, vl2)
        assert all(torch.allclose(ps[k], ps2[k]) for k in ps)
        assert torch.allclose(vs["vf_clipfrac"], vs2["vf_clipfrac"])

    # and no gradient reaches a masked position, even from an inf filler
    new_lp_inf = perturb(new_lp, float("inf")).requires_grad_()
    new_v_inf = perturb(new_v, float("inf")).requires_grad_()
    (policy_loss(new_lp_inf, old_lp, adv, mask)[0] + value_loss(new_v_inf, old_v, ret, mask)[0]).backward()
    for grad in (new_lp_inf.grad, new_v_inf.grad):
        assert torch.isfinite(grad).all()
        assert (grad[~mask] == 0).all()
        assert (grad[mask] != 0).any()


def test_value_loss_clipping_by_hand():
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[1.0, 0.1]])
    returns = torch.tensor([[2.0, 0.0]])
    loss, stats = value_loss(new, old, returns, torch.ones(1, 2), clip_range=0.2)
    # token 0: unclipped (1-2)^2 = 1, clipped (0.2-2)^2 = 3.24 -> 3.24; token 1: both 0.01
    assert loss.item() == pytest.approx(0.5 * (3.24 + 0.01) / 2)
    assert stats["vf_clipfrac"].item() == pytest.approx(0.5)


# --- entropy, KL controllers, best-of-n -------------------------------------------------------------


def test_entropy_of_uniform_is_log_vocab():
    vocab = 11
    logits = torch.full((2, 3, vocab), 4.2)
    entropy = entropy_from_logits(logits, ragged_mask([3, 1], 3))
    assert torch.allclose(entropy[0], torch.full((3,), math.log(vocab)))
    assert entropy[1].tolist() == pytest.approx([math.log(vocab), 0.0, 0.0])


def test_entropy_is_stable_for_extreme_and_filtered_logits():
    logits = torch.tensor([[[1e4, 1e4, -1e4, float("-inf")], [0.0, 0.0, float("-inf"), float("-inf")]]])
    entropy = entropy_from_logits(logits.to(torch.bfloat16), torch.ones(1, 2))
    assert entropy.dtype == torch.float32
    assert entropy[0].tolist() == pytest.approx([math.log(2), math.log(2)], abs=1e-6)
    # matches a direct computation on random logits
    logits = torch.randn(2, 3, 7)
    p = torch.softmax(logits, -1)
    assert torch.allclose(entropy_from_logits(logits, torch.ones(2, 3)), -(p * p.log()).sum(-1), atol=1e-6)


def test_adaptive_kl_controller_moves_towards_target():
    high = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    high.update(current_kl=12.0, n_steps=100)  # error clipped to +0.2
    assert high.value == pytest.approx(0.1 * (1 + 0.2 * 100 / 10_000))
    low = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    low.update(current_kl=5.4, n_steps=100)  # error -0.1, inside the clip
    assert low.value == pytest.approx(0.1 * (1 - 0.1 * 100 / 10_000))
    on_target = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    on_target.update(current_kl=6.0, n_steps=100)
    assert on_target.value == pytest.approx(0.1)
    fixed = FixedKLController(0.05)
    fixed.update(current_kl=100.0, n_steps=100)
    assert fixed.value == 0.05


def test_bon_kl_bound():
    assert bon_kl_bound(1) == 0.0
    assert bon_kl_bound(2) == pytest.approx(math.log(2) - 0.5)
    assert bon_kl_bound(16) == pytest.approx(math.log(16) - 15 / 16)
    with pytest.raises(ValueError):
        bon_kl_bound(0)
