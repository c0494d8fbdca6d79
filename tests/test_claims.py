"""The claims on curated demonstrations (LIMA), DPO's over-optimisation and online vs offline DPO, on
hand-made results whose answers are known."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from compare.report.claims import _claim_curated_demonstrations, shift_claims
from compare.report.kl_claims import (
    at_equal_kl,
    by_strength,
    claim_best_of_n_kl,
    claim_dpo_overoptimises,
    claim_frontier,
    claim_online_beats_offline,
    gold_at_kl,
)
from compare.report.roles import Column, Roles
from compare.report.verdicts import CONTRADICTED, INCONCLUSIVE, NOT_MEASURED, SUPPORTED

BETA = "grid.arms.dpo.stages.dpo.beta"
ONLINE_BETA = "grid.arms.online.stages.online_dpo.beta"
ROLES = Roles({"base": [], "sft": ["sft"], "dpo": ["dpo"], "online": ["online_dpo"]})


def row(arm, seed, gold, kl=0.0, **grid):
    return {"arm": arm, "seed": seed, "split": "id", "gold_reward": gold, "kl_to_base": kl, **grid}


def test_gold_at_kl_interpolates_inside_the_curve_only():
    curve = pd.Series([1.0, 2.0, 0.0], index=[0.5, 1.5, 3.5])
    assert gold_at_kl(curve, 1.0) == pytest.approx(1.5)  # half way from 1.0 to 2.0
    assert gold_at_kl(curve, 2.5) == pytest.approx(1.0)  # half way from 2.0 to 0.0
    assert gold_at_kl(curve, 1.5) == 2.0
    assert math.isnan(gold_at_kl(curve, 0.1)) and math.isnan(gold_at_kl(curve, 4.0))


def test_by_strength_orders_settings_by_their_mean_kl():
    rows = [
        row("dpo", s, g, kl, **{BETA: b}) for s in (0, 1) for b, kl, g in ((1.0, 0.5, 0.1), (0.1, 3.0, 0.2))
    ]
    curves = by_strength(pd.DataFrame(rows), ROLES, "dpo")
    assert list(curves[0].index) == [0.5, 3.0] and list(curves[1]) == [0.1, 0.2]


def curated(gold_curated: list[float], gold_mediocre: list[float]) -> pd.DataFrame:
    q, c = Column.DEMONSTRATOR_QUALITY, Column.COST_RATIO
    rows = []
    for seed, (good, bad) in enumerate(zip(gold_curated, gold_mediocre)):
        rows += [
            {**row("sft", seed, good, **{q: 0.9, c: 8}), "n_demonstrations": 16},
            {**row("sft", seed, bad, **{q: 0.3, c: 2}), "n_demonstrations": 64},
            {**row("sft", seed, 9.0, **{q: 0.9, c: 2}), "n_demonstrations": 64},  # not compared
            {**row("sft", seed, -9.0, **{q: 0.3, c: 8}), "n_demonstrations": 16},
        ]
    return pd.DataFrame(rows)


def test_curated_demonstrations_compare_the_two_corners_of_the_grid():
    claim = _claim_curated_demonstrations(curated([1.0, 1.2, 1.1], [0.5, 0.6, 0.55]), ROLES)
    assert claim.verdict == SUPPORTED
    assert "16 demonstrations of quality 0.9 at 8 units vs 64 of quality 0.3 at 2" in claim.evidence
    assert "curated − mediocre = 0.550" in claim.evidence  # (0.5 + 0.6 + 0.55) / 3
    assert _claim_curated_demonstrations(curated([0.1, 0.2, 0.1], [0.5, 0.6, 0.55]), ROLES).verdict == (
        CONTRADICTED
    )
    no_cost = curated([1.0, 1.2], [0.5, 0.6]).drop(columns=Column.COST_RATIO)
    assert _claim_curated_demonstrations(no_cost, ROLES).verdict == NOT_MEASURED


def dpo_sweep(golds_by_seed: list[list[float]]) -> pd.DataFrame:
    """DPO at beta 1.0, 0.3, 0.1 (KL 0.5, 1.5, 3.0); one list of golds per seed in that order."""
    return pd.DataFrame(
        row("dpo", seed, g, kl, **{BETA: b})
        for seed, golds in enumerate(golds_by_seed)
        for b, kl, g in zip((1.0, 0.3, 0.1), (0.5, 1.5, 3.0), golds)
    )


def test_dpo_overoptimisation_chooses_each_seed_s_peak_on_the_other_seeds():
    # seed 2's own best is beta 1.0 (0.9), but the other seeds peak at beta 0.3, where seed 2 has 0.5:
    # its difference is 0.5 - 0.4 = 0.1, not its own best minus last (0.5)
    curves = dpo_sweep([[0.5, 1.0, 0.2], [0.4, 1.1, 0.3], [0.9, 0.5, 0.4]])
    claim = claim_dpo_overoptimises(curves, ROLES)
    assert "0.567" in claim.evidence  # (0.8 + 0.8 + 0.1) / 3; own-peak selection would give 0.700


def test_dpo_overoptimisation_when_gold_falls_at_the_smallest_beta():
    claim = claim_dpo_overoptimises(dpo_sweep([[0.5, 1.0, 0.2], [0.4, 1.1, 0.3], [0.6, 0.9, 0.1]]), ROLES)
    # every seed: the other seeds peak at beta 0.3 (KL 1.5); drops 0.8, 0.8, 0.8
    assert (
        claim.verdict == SUPPORTED
        and "0.800" in claim.evidence
        and "peaks at KL 1.50 of the 3.00" in (claim.evidence)
    )
    rising = claim_dpo_overoptimises(dpo_sweep([[0.5, 1.0, 1.2], [0.4, 1.1, 1.3], [0.6, 0.9, 1.4]]), ROLES)
    assert (
        rising.verdict == INCONCLUSIVE and "still rises at the largest KL reached (3.00)" in rising.evidence
    )
    two = dpo_sweep([[0.5, 1.0], [0.4, 1.1]])
    assert claim_dpo_overoptimises(two, ROLES).verdict == NOT_MEASURED


def test_online_vs_offline_at_a_common_kl():
    rows = []
    for seed in range(3):
        # offline: gold 0 at KL 1, 1 at KL 3; online: gold 1 at KL 1, 2 at KL 3 (+ a seed offset)
        for b, kl, g in ((1.0, 1.0, 0.0), (0.1, 3.0, 1.0)):
            rows.append(row("dpo", seed, g + seed / 10, kl, **{BETA: b}))
        for b, kl, g in ((1.0, 1.0, 1.0), (0.1, 3.0, 2.0)):
            rows.append(row("online", seed, g + seed / 10 + seed / 100, kl, **{ONLINE_BETA: b}))
    claim = claim_online_beats_offline(pd.DataFrame(rows), ROLES)
    assert claim.verdict == SUPPORTED and "at KL 2.00 (interpolated)" in claim.evidence
    assert "online − dpo = 1.010" in claim.evidence  # 1 + mean(0, 0.01, 0.02)


def test_without_a_common_kl_nothing_is_decided():
    def results(online_kl: float) -> pd.DataFrame:
        rows = []
        for seed in range(3):
            rows += [row("base", seed, 0.0), row("dpo", seed, 1.0, 4.0)]
            rows.append(row("online", seed, 1.2 + seed / 100, online_kl))
        return pd.DataFrame(rows)

    # more gold (+0.21, significant) with less KL: dpo may be past its peak, so equal KL is not known
    claim = claim_online_beats_offline(results(2.0), ROLES)
    assert claim.verdict == INCONCLUSIVE and "online − dpo = 0.210" in claim.evidence
    assert "no common KL (online at KL 2.00, dpo at 4.00" in claim.evidence
    assert claim_online_beats_offline(results(6.0), ROLES).verdict == INCONCLUSIVE
    assert claim_online_beats_offline(results(2.0), Roles({"dpo": ["dpo"]})).verdict == NOT_MEASURED


def test_a_one_point_arm_is_compared_where_the_swept_arm_reaches_its_kl():
    roles = Roles({"base": [], "bon": ["rm", "best_of_n"], "ppo": ["rm", "ppo"]})
    n = "grid.arms.bon.stages.best_of_n.n"
    rows = []
    for seed in range(3):
        rows.append(row("base", seed, 0.0))
        rows += [row("bon", seed, g + seed / 10, kl, **{n: k}) for k, kl, g in ((2, 0.5, 0.5), (8, 2.5, 1.5))]
        rows.append(row("ppo", seed, 0.8 + seed / 20, 1.5))  # KL 1.5: bon's curve gives 1.0 there
    d, what, decisive = at_equal_kl(pd.DataFrame(rows), roles, "bon", "ppo")
    assert what == "ID gold at KL 1.50 (interpolated)" and decisive
    assert d.mean == pytest.approx(0.2 + (0 + 0.05 + 0.1) / 3) and d.significant
    assert claim_best_of_n_kl(pd.DataFrame(rows), roles).verdict == SUPPORTED


def test_frontier_is_decided_at_equal_kl_by_seed():
    roles = Roles({"base": [], "dpo": ["dpo"], "ppo": ["rm", "ppo"]})
    kl_coef = "grid.arms.ppo.stages.ppo.kl_coef"
    rows = []
    for seed in range(3):
        rows += [row("dpo", seed, g, kl, **{BETA: b}) for b, kl, g in ((1.0, 1.0, 0.2), (0.1, 3.0, 0.6))]
        rows += [
            row("ppo", seed, g + seed / 10, kl, **{kl_coef: c})
            for c, kl, g in ((1.0, 1.0, 0.5), (0.1, 3.0, 1.0))
        ]
    claim = claim_frontier(pd.DataFrame(rows), roles)
    # at KL 2: dpo 0.4, ppo 0.75 + seed/10 -> dpo − ppo = -0.45 on average: PPO's frontier is above
    assert claim.verdict == CONTRADICTED and "dpo − ppo = -0.450" in claim.evidence
    assert "100% of dpo's by ppo's" in claim.evidence


def test_a_task_s_other_named_shifts_get_a_claim_each():
    from compare.report.claims import _gap_claim_for
    from compare.tasks import TASKS

    arithmetic = Roles({"sft": ["sft"], "dpo": ["dpo"]}, splits=TASKS["arithmetic"].split_specs)
    reviews = Roles({"sft": ["sft"], "dpo": ["dpo"]}, splits=TASKS["reviews"].split_specs)
    assert shift_claims(arithmetic) == ["ood_reversed", "ood_template"]  # the task's own shifts
    assert shift_claims(reviews) == ["ood_opener", "ood_format"]
    frame = pd.DataFrame([row("sft", 0, 1.0), {**row("sft", 0, 0.5), "split": "ood_reversed"}])
    claim = _gap_claim_for(frame, arithmetic, "dpo", "sft", "offline preference", "ood_reversed", "x.yaml")
    assert "a changed rule" in claim.claim and "ID − OOD reversed gap" in claim.claim
    assert claim.key == "shift:ood_reversed[dpo]"


def test_forgetting_is_decided_at_equal_gain_and_only_there():
    from compare.report.claims import _claim_forgetting

    roles = Roles({"base": [], "sft": ["sft"], "ppo": ["rm", "ppo"]})
    epochs, kl_coef = "grid.arms.sft.stages.sft.epochs", "grid.arms.ppo.stages.ppo.kl_coef"

    def prior(arm, seed, gold, **grid):
        return {**row(arm, seed, gold, **grid), "split": "prior"}

    rows = []
    for seed in range(3):
        # SFT: ID gold 0.4 then 0.8 with more epochs, prior 0.9 then 0.5 -> prior 0.7 at ID gold 0.6
        for e, g, p in ((1, 0.4, 0.9), (4, 0.8, 0.5)):
            rows += [row("sft", seed, g, **{epochs: e}), prior("sft", seed, p, **{epochs: e})]
        # PPO: ID gold 0.2 then 1.0 with less KL penalty, prior 1.0 then 0.6 + seed / 10 -> 0.8 + seed / 10 at 0.6
        for c, g, p in ((1.0, 0.2, 1.0), (0.1, 1.0, 0.6 + seed / 10)):
            rows += [row("ppo", seed, g, **{kl_coef: c}), prior("ppo", seed, p, **{kl_coef: c})]
    frame = pd.DataFrame(rows)
    # the forward KL on training prompts: SFT 1 then 3, PPO 0.5 then 2.5 -> 2.0 and 1.5 at ID gold 0.6
    frame["forward_kl_train"] = (
        frame["grid.arms.sft.stages.sft.epochs"]
        .map({1: 1.0, 4: 3.0})
        .fillna(frame["grid.arms.ppo.stages.ppo.kl_coef"].map({1.0: 0.5, 0.1: 2.5}))
    )
    claim = _claim_forgetting(frame, roles)
    assert "KL(base ‖ π) on training prompts there ppo 1.500 ± 0.000 (n=3), sft 2.000" in claim.evidence
    assert claim.verdict == SUPPORTED and "prior gold at ID gold 0.60 (interpolated)" in claim.evidence
    # PPO's prior half way between 1.0 and 0.6 + seed / 10: 0.8 + (0 + 0.05 + 0.1) / 3, minus SFT's 0.7
    assert "ppo − sft = 0.150" in claim.evidence and "ID gold ppo" not in claim.evidence

    # without sweeps the arms end at different gains: shown, never deciding, however large the difference
    ended = pd.DataFrame([r for r in rows if r.get(epochs, 4) == 4 and r.get(kl_coef, 0.1) == 0.1])
    claim = _claim_forgetting(ended.drop(columns=[epochs, kl_coef]), roles)
    assert claim.verdict == INCONCLUSIVE and "no common ID gold (ppo at ID gold 1.00, sft at 0.80;" in (
        claim.evidence
    )


def test_a_curve_that_zigzags_along_its_strength_does_not_decide():
    """SFT whose ID gold rises then falls with epochs: a curve indexed by gold would join 1 and 9 epochs
    as neighbours, so the claim is shown where each arm ended, not decided at an equal gain."""
    from compare.report.claims import _claim_forgetting

    roles = Roles({"base": [], "sft": ["sft"], "ppo": ["rm", "ppo"]})
    epochs, kl_coef = "grid.arms.sft.stages.sft.epochs", "grid.arms.ppo.stages.ppo.kl_coef"
    rows = []
    for seed in range(3):
        for e, g in ((1, 0.4), (4, 0.9), (9, 0.5)):
            rows += [
                row("sft", seed, g, **{epochs: e}),
                {**row("sft", seed, 0.5, **{epochs: e}), "split": "prior"},
            ]
        for c, g in ((1.0, 0.2), (0.1, 1.0)):
            rows += [
                row("ppo", seed, g, **{kl_coef: c}),
                {**row("ppo", seed, 0.9, **{kl_coef: c}), "split": "prior"},
            ]
    claim = _claim_forgetting(pd.DataFrame(rows), roles)
    assert claim.verdict == INCONCLUSIVE and "sft: ID gold does not move one way" in claim.evidence


def test_settings_at_the_same_x_are_one_point_and_a_missing_one_is_no_crash():
    rows = [
        row("dpo", s, g, kl, **{BETA: b}) for s in (0, 1) for b, kl, g in ((1.0, 0.5, 0.1), (0.3, 0.5, 0.3))
    ]
    rows += [row("dpo", 0, 0.9, 2.0, **{BETA: 0.1})]  # seed 1 lacks beta 0.1
    curves = by_strength(pd.DataFrame(rows), ROLES, "dpo")
    assert curves[0].to_dict() == {0.5: pytest.approx(0.2), 2.0: 0.9} and curves[1].to_dict() == {
        0.5: pytest.approx(0.2)
    }
    pd.concat(curves.values(), axis=1)  # the seed-mean curve of at_equal_kl: unique x, so it aligns
