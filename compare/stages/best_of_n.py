"""Stage `best_of_n`: no training; each answer is the reward model's favourite of n samples.

Selection at sampling time (Nakano et al. 2021; Gao et al. 2022): the evaluator samples n completions
per answer from the arm's policy, scores them with the arm's reward model and keeps the best. Its KL to
the policy it samples from is reported twice: as measured (the log-ratio estimated from the empirical
CDF of the reward under the policy, see `best_of_n`) and as the analytic bound log n − (n − 1)/n.
"""

from __future__ import annotations

import math

from pydantic import Field

from compare.lm.sampling import Samples
from compare.stages.spec import Produces, Role, StageSettings, StageSpec


class BestOfNSettings(StageSettings):
    n: int = Field(
        4, ge=1, description="Candidates sampled per answer; the reward model keeps its favourite."
    )


def best_of_n(
    samples: Samples, proxy: list[float], k: int, n: int
) -> tuple[Samples, list[float], list[float]]:
    """Keep the highest-scoring of each group of n; rows are prompt-major, k groups of n per prompt.

    Returns the kept samples, their scores and the estimated log(pi_bon / pi) of each (see module doc).
    """
    keep, log_ratio = [], []
    per_prompt = k * n
    for p0 in range(0, len(proxy), per_prompt):
        groups = [list(range(p0 + g * n, p0 + (g + 1) * n)) for g in range(k)]
        for g, members in enumerate(groups):
            winner = max(members, key=lambda i: proxy[i])
            others = [proxy[i] for h, m in enumerate(groups) if h != g for i in m]
            if others:  # smoothed empirical CDF of the reward under pi, at the winner's reward
                cdf = (sum(r <= proxy[winner] for r in others) + 1) / (len(others) + 2)
                log_ratio.append(math.log(n) + (n - 1) * math.log(cdf))
            else:
                log_ratio.append(math.nan)
            keep.append(winner)
    kept = Samples(
        prompts=[samples.prompts[i] for i in keep],
        completions=[samples.completions[i] for i in keep],
        completion_ids=[samples.completion_ids[i] for i in keep],
        ended=[samples.ended[i] for i in keep],
        logprobs=[samples.logprobs[i] for i in keep],
    )
    return kept, [proxy[i] for i in keep], log_ratio


def bon_kl_bound(n: int) -> float:
    """The analytic KL of best-of-n against its base policy, log n - (n - 1) / n.

    Used by Stiennon et al. 2020 and Gao et al. 2023 as the exact KL; Beirami et al. 2024 show it is an
    upper bound (tight when responses rarely repeat), so report it as a bound.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return math.log(n) - (n - 1) / n


def sampling(settings: BestOfNSettings) -> dict:
    """What the evaluator of an arm ending in best-of-n does differently: n candidates per answer."""
    return {"best_of_n": settings.n}


def run(*_args) -> None:  # never called: the evaluator does the sampling (see `sampling`)
    raise RuntimeError("best_of_n is applied by the evaluator, not run as a stage")


SPEC = StageSpec(
    kind="best_of_n",
    version=1,
    run=run,
    description="Best-of-n sampling with the reward model.",
    settings=BestOfNSettings,
    role=Role.SELECTION,
    needs_reward_model=True,
    produces=Produces.SAMPLING,
    last=True,
    sampling=sampling,
    strength="n",
)
