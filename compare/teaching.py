"""The teaching notebook's references and exercise checks (notebooks/sft_vs_rlhf.ipynb).

A student writes a piece of a method (the Bradley–Terry loss, GAE, DPO's loss, a best-of-n selection);
a `check_*` function calls it on random inputs and compares it with the package's own function:
`compare.ppo_math.gae_advantages` (what the `ppo` stage trains with), `compare.stages.rs_ft.best_of_groups`
(what the `rs_ft` stage keeps), and the references below for the two losses the stages leave to TRL's
trainers (`rm`: RewardTrainer; `dpo`: DPOTrainer, whose default `sigmoid` loss is `dpo_loss`), each
tested against hand-computed values in tests/test_teaching.py.

A check returns True when the function agrees everywhere; raises AssertionError naming the input, the
expected and the returned values (and the usual slip, when the returned value matches one) when it does
not; and returns False, printing what to do, when the function still raises NotImplementedError (the
student's notebook runs from top to bottom before any exercise is done).

`rloo_advantages` and `grpo_advantages` are the group baselines of the `rloo` and `grpo` stages (TRL's
RLOOTrainer and GRPOTrainer), written out for the notebook's section on baselines without a critic.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from compare.ppo_math import gae_advantages
from compare.stages.rs_ft import best_of_groups

TRIALS = 8
TOLERANCE = 1e-5


def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """The reward model's loss, −mean log σ(r_chosen − r_rejected) (Bradley & Terry 1952; Ouyang et al.
    2022, eq. 1). r_chosen, r_rejected: (B,) scores of each pair's chosen and rejected completion."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def dpo_loss(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float
) -> Tensor:
    """DPO's loss (Rafailov et al. 2023, eq. 7), the mean over pairs of

    −log σ(β · [(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]).

    Every argument but beta: (B,) summed log-probs of each pair's chosen (w) or rejected (l) completion.
    """
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()


def rloo_advantages(rewards: Tensor, k: int) -> Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024, eq. 5): each reward minus the mean of the other
    k − 1 in its group. rewards: (G·k,), groups of k consecutive completions of one prompt."""
    groups = rewards.view(-1, k)
    others = (groups.sum(dim=1, keepdim=True) - groups) / (k - 1)
    return (groups - others).view(-1)


def grpo_advantages(rewards: Tensor, k: int, scale: bool = True, eps: float = 1e-4) -> Tensor:
    """GRPO (Shao et al. 2024, sec. 4.1.2): each reward minus its group's mean, divided by the group's
    standard deviation (Bessel-corrected) + eps when `scale` (Dr. GRPO leaves the division out).
    rewards: (G·k,), groups of k consecutive completions of one prompt."""
    groups = rewards.view(-1, k)
    advantages = groups - groups.mean(dim=1, keepdim=True)
    if scale:
        advantages = advantages / (groups.std(dim=1, keepdim=True) + eps)
    return advantages.view(-1)


class _NotDone(Exception):
    """The student's function still raises NotImplementedError."""


def _call(fn: Callable, name: str, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as error:
        raise _NotDone(name) from error


def _not_done(name: str) -> bool:
    print(
        f"{name}: not written yet (it raises NotImplementedError). Write it in the cell above, run that cell, then this one."
    )
    return False


def _as_tensor(value, name: str, shape: tuple[int, ...]) -> Tensor:
    if not isinstance(value, Tensor):
        try:
            value = torch.as_tensor(value, dtype=torch.float32)
        except (TypeError, ValueError) as error:
            raise AssertionError(f"{name} returned {type(value).__name__}, expected a tensor") from error
    assert tuple(value.shape) == shape, f"{name} returned shape {tuple(value.shape)}, expected {shape}"
    return value.detach().float()


def _close(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, atol=TOLERANCE, rtol=TOLERANCE)


def _slip(got: Tensor, candidates: dict[str, Tensor]) -> str:
    """The usual mistake whose result `got` equals, as a hint for the message ('' if none)."""
    for hint, value in candidates.items():
        if _close(got, value):
            return f" It matches the result when {hint}."
    return ""


def _fmt(x: Tensor) -> str:
    return str([round(v, 4) for v in x.flatten().tolist()]) if x.numel() > 1 else f"{x.item():.6f}"


def check_bradley_terry_loss(fn: Callable[[Tensor, Tensor], Tensor]) -> bool:
    """fn(r_chosen, r_rejected) -> scalar mean loss, compared with `bradley_terry_loss` on random scores."""
    name = "bradley_terry_loss"
    g = torch.Generator().manual_seed(1)
    try:
        for trial in range(TRIALS):
            n = 1 + trial
            chosen, rejected = torch.randn(n, generator=g) * 2, torch.randn(n, generator=g) * 2
            want = bradley_terry_loss(chosen, rejected)
            got = _as_tensor(_call(fn, name, chosen.clone(), rejected.clone()), name, ())
            if not _close(got, want):
                slip = _slip(
                    got,
                    {
                        "chosen and rejected are swapped": bradley_terry_loss(rejected, chosen),
                        "the pairs are summed instead of averaged": -F.logsigmoid(chosen - rejected).sum(),
                        "the minus sign is left out": F.logsigmoid(chosen - rejected).mean(),
                        "log σ is taken of the wrong thing (σ without the log)": -torch.sigmoid(
                            chosen - rejected
                        ).mean(),
                    },
                )
                raise AssertionError(
                    f"{name}(r_chosen={_fmt(chosen)}, r_rejected={_fmt(rejected)}) returned {_fmt(got)}, "
                    f"expected {_fmt(want)}.{slip}"
                )
    except _NotDone:
        return _not_done(name)
    print(f"{name}: agrees with the reference on {TRIALS} random batches.")
    return True


def _right_padded_mask(batch: int, steps: int, g: torch.Generator) -> Tensor:
    lengths = torch.randint(1, steps + 1, (batch,), generator=g)
    return torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)


def check_gae(fn: Callable[..., tuple[Tensor, Tensor]]) -> bool:
    """fn(rewards, values, mask, gamma, lam) -> (advantages, returns), compared with
    `compare.ppo_math.gae_advantages` on random right-padded batches (0 where the mask is False)."""
    name = "gae"
    g = torch.Generator().manual_seed(2)
    try:
        for trial in range(TRIALS):
            batch, steps = 1 + trial % 3, 2 + trial
            rewards, values = torch.randn(batch, steps, generator=g), torch.randn(batch, steps, generator=g)
            mask = (
                _right_padded_mask(batch, steps, g) if trial else torch.ones(batch, steps, dtype=torch.bool)
            )
            gamma, lam = (1.0, 0.95) if trial < 2 else (0.5 + 0.5 * torch.rand(2, generator=g)).tolist()
            want_adv, want_ret = gae_advantages(rewards, values, mask, gamma=gamma, lam=lam)
            out = _call(fn, name, rewards.clone(), values.clone(), mask.clone(), gamma, lam)
            assert isinstance(out, tuple) and len(out) == 2, (
                f"{name} returned {type(out).__name__}, expected a tuple (advantages, returns)"
            )
            got_adv = _as_tensor(out[0], f"{name}'s advantages", (batch, steps))
            got_ret = _as_tensor(out[1], f"{name}'s returns", (batch, steps))
            where = (
                f"{name}(rewards={_fmt(rewards)}, values={_fmt(values)}, mask={mask.int().tolist()}, "
                f"gamma={gamma:.3f}, lam={lam:.3f})"
            )
            if not _close(got_adv, want_adv):
                slip = _slip(
                    got_adv,
                    {
                        "λ is left out (A_t = δ_t + γ A_{t+1})": gae_advantages(
                            rewards, values, mask, gamma=gamma, lam=1.0
                        )[0],
                        "the recursion runs forwards instead of backwards": _forward_gae(
                            rewards, values, mask, gamma, lam
                        ),
                        "the mask is ignored": gae_advantages(
                            rewards, values, torch.ones_like(mask), gamma=gamma, lam=lam
                        )[0].masked_fill(~mask, 0.0),
                    },
                )
                raise AssertionError(
                    f"{where}: advantages {_fmt(got_adv)}, expected {_fmt(want_adv)}.{slip} After the last "
                    "valid step the next value and advantage are 0; padded positions are 0."
                )
            if not _close(got_ret, want_ret):
                raise AssertionError(
                    f"{where}: advantages agree but returns {_fmt(got_ret)}, expected {_fmt(want_ret)} "
                    "(returns = advantages + values, 0 where the mask is False)"
                )
    except _NotDone:
        return _not_done(name)
    print(f"{name}: agrees with compare.ppo_math.gae_advantages on {TRIALS} random padded batches.")
    return True


def _forward_gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """The recursion run from the first step on: a slip `check_gae` names when it sees it."""
    flipped = gae_advantages(rewards.flip(1), values.flip(1), mask.flip(1), gamma=gamma, lam=lam)[0]
    return flipped.flip(1)


def check_dpo_loss(fn: Callable[..., Tensor]) -> bool:
    """fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) -> scalar mean loss, compared
    with `dpo_loss` on random summed log-probs and betas."""
    name = "dpo_loss"
    g = torch.Generator().manual_seed(3)
    try:
        for trial in range(TRIALS):
            n = 1 + trial
            logps = [-20 * torch.rand(n, generator=g) for _ in range(4)]
            beta = 0.1 if trial == 0 else float(0.01 + torch.rand(1, generator=g))
            want = dpo_loss(*logps, beta)
            got = _as_tensor(_call(fn, name, *(x.clone() for x in logps), beta), name, ())
            if not _close(got, want):
                pc, pr, rc, rr = logps
                slip = _slip(
                    got,
                    {
                        "β is left out": dpo_loss(pc, pr, rc, rr, 1.0),
                        "chosen and rejected are swapped": dpo_loss(pr, pc, rr, rc, beta),
                        "the policy and the reference are swapped": dpo_loss(rc, rr, pc, pr, beta),
                        "the pairs are summed instead of averaged": dpo_loss(pc, pr, rc, rr, beta) * n,
                        "the reference is left out": -F.logsigmoid(beta * (pc - pr)).mean(),
                    },
                )
                raise AssertionError(
                    f"{name}(policy_chosen={_fmt(logps[0])}, policy_rejected={_fmt(logps[1])}, "
                    f"ref_chosen={_fmt(logps[2])}, ref_rejected={_fmt(logps[3])}, beta={beta:.3f}) returned "
                    f"{_fmt(got)}, expected {_fmt(want)}.{slip}"
                )
    except _NotDone:
        return _not_done(name)
    print(f"{name}: agrees with the reference (TRL's default sigmoid loss) on {TRIALS} random batches.")
    return True


def check_best_of_n(fn: Callable[[list[float], int], list[int]]) -> bool:
    """fn(scores, n) -> the index (into scores) of the best of each consecutive group of n, the first on
    ties, compared with `compare.stages.rs_ft.best_of_groups` on random scores with ties."""
    name = "best_of_n"
    g = torch.Generator().manual_seed(4)
    try:
        for trial in range(TRIALS):
            n, groups = 1 + trial % 4, 1 + trial
            # rounded to one decimal, so that ties happen
            scores = [round(x, 1) for x in torch.randn(n * groups, generator=g).tolist()]
            if trial == TRIALS - 1:
                scores = [0.5] * (n * groups)  # all tied
            want = best_of_groups(scores, n)
            got = _call(fn, name, list(scores), n)
            got = [int(i) for i in got] if isinstance(got, list | tuple | Tensor) else got
            if got != want:
                within = [i - g0 for i, g0 in zip(want, range(0, len(scores), n))]
                last = [
                    max(range(g0, g0 + n), key=lambda i: (scores[i], i)) for g0 in range(0, len(scores), n)
                ]
                hint = (
                    " It returns the position inside each group; return the index into scores."
                    if got == within and within != want
                    else " It keeps the last of tied scores; keep the first."
                    if got == last
                    else ""
                )
                raise AssertionError(f"{name}(scores={scores}, n={n}) returned {got}, expected {want}.{hint}")
    except _NotDone:
        return _not_done(name)
    print(
        f"{name}: agrees with compare.stages.rs_ft.best_of_groups on {TRIALS} random score lists, ties included."
    )
    return True
