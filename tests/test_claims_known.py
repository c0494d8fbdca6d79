"""Every claim of the claims table on hand-made results whose answer is known: where it holds, where it is
contradicted (for the claims that can be), and where the suite cannot measure it; and the report-wide
correction. Effects are exact numbers plus a small seed jitter, so each interval is known in advance."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from compare.report.claims import check_claims
from compare.report.roles import Column, Roles
from compare.report.stats import holm, paired_difference
from compare.report.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_MEASURED,
    SUPPORTED,
    Claim,
    correct,
    decide,
)

SEEDS = range(5)
JITTER = (-0.02, -0.01, 0.0, 0.01, 0.02)  # sd 0.0158: an effect of 0.1 is significant at 5 seeds
ROLES = Roles({"base": [], "sft": ["sft"], "preferred_ft": ["preferred_ft"], "dpo": ["dpo"],
               "ppo": ["rm", "ppo"], "best_of_n": ["rm", "best_of_n"], "online_dpo": ["online_dpo"]})  # fmt: skip


def row(arm, seed, gold, split="id", kl=0.0, **extra):
    return {"arm": arm, "seed": seed, "split": split, "gold_reward": gold, "kl_to_base": kl, **extra}


def by_key(results: pd.DataFrame, logs: pd.DataFrame | None = None, roles: Roles = ROLES) -> dict[str, Claim]:
    return {c.key: c for c in check_claims(results, pd.DataFrame() if logs is None else logs, roles)}


# -- the rule itself ------------------------------------------------------------------------------------
def test_decide_is_the_one_rule():
    up = paired_difference({s: 0.1 + j for s, j in zip(SEEDS, JITTER)}, dict.fromkeys(SEEDS, 0.0))
    down = paired_difference(dict.fromkeys(SEEDS, 0.0), {s: 0.1 + j for s, j in zip(SEEDS, JITTER)})
    flat = paired_difference({s: j for s, j in zip(SEEDS, JITTER)}, dict.fromkeys(SEEDS, 0.0))
    assert decide(up).verdict == SUPPORTED and decide(down).verdict == CONTRADICTED
    assert decide(up, positive_supports=False).verdict == CONTRADICTED
    assert decide(down, can_contradict=False).verdict == INCONCLUSIVE  # a claim its statistic cannot refute
    assert decide(flat).verdict == INCONCLUSIVE and decide(None).verdict == INCONCLUSIVE
    assert decide(up).p_value == up.p_value < 1e-3


def test_holm_correction_turns_a_marginal_verdict_inconclusive():
    claims = [
        Claim("a", "a", SUPPORTED, "", p_value=0.001),
        Claim("b", "b", SUPPORTED, "", p_value=0.03),  # 0.03 * 2 = 0.06 after Holm: not kept
        Claim("c", "c", INCONCLUSIVE, "", p_value=0.5),
        Claim("d", "d", NOT_MEASURED, ""),  # not tested: not in the family
    ]
    out = correct(claims)
    assert [c.corrected for c in out] == [SUPPORTED, INCONCLUSIVE, INCONCLUSIVE, NOT_MEASURED]
    assert holm([0.001, 0.03, 0.5]) == pytest.approx([0.003, 0.06, 0.5])


# -- claims against SFT, one per kind of RLHF present ------------------------------------------------------
def gaps(sft_gap: float, pref_gap: float, split: str = "ood") -> pd.DataFrame:
    rows = []
    for s, j in zip(SEEDS, JITTER):
        rows += [row("sft", s, 1.0), row("sft", s, 1.0 - sft_gap - j, split)]
        rows += [row("dpo", s, 1.2), row("dpo", s, 1.2 - pref_gap, split)]
    return pd.DataFrame(rows)


def test_ood_gap_claim():
    assert by_key(gaps(0.3, 0.1))["ood[dpo]"].verdict == SUPPORTED  # DPO loses less OOD
    claim = by_key(gaps(0.1, 0.3))["ood[dpo]"]
    assert claim.verdict == CONTRADICTED and "dpo's ID − OOD gap is 0.200 larger than sft's" in claim.reading
    assert claim.suite == "" or claim.suite.endswith(".yaml")
    assert by_key(gaps(0.3, 0.1), roles=Roles({"sft": ["sft"]}))["ood"].verdict == NOT_MEASURED


def test_shift_claim_names_its_split_and_the_suite_that_decides_it():
    frame = gaps(0.3, 0.1, "ood_opener")
    from compare.tasks import TASKS

    reviews = TASKS["reviews"]
    recipes = {arm: kind.recipe for arm, kind in ROLES.arms.items()}
    roles = Roles(recipes, None, reviews.split_specs, reviews.gold_ceiling, reviews.shift_suite)
    claims = check_claims(frame, pd.DataFrame(), roles)
    opener = next(c for c in claims if c.key == "shift:ood_opener[dpo]")
    assert opener.verdict == SUPPORTED and opener.suite == "generalization.yaml"
    assert next(c for c in claims if c.key.startswith("shift:ood_format")).verdict == NOT_MEASURED
    contradicted = by_key(gaps(0.1, 0.3, "ood_opener"))["shift:ood_opener[dpo]"]
    assert contradicted.verdict == CONTRADICTED


def test_each_kind_of_rlhf_is_checked_against_sft():
    rows = []
    for s, j in zip(SEEDS, JITTER):
        rows += [row("sft", s, 1.0), row("sft", s, 0.7 - j, "ood")]
        rows += [row("dpo", s, 1.2), row("dpo", s, 1.1, "ood")]  # gap 0.1: holds up better
        rows += [row("ppo", s, 1.2), row("ppo", s, 0.6, "ood")]  # gap 0.6: holds up worse
    claims = by_key(pd.DataFrame(rows))
    assert claims["ood[dpo]"].verdict == SUPPORTED and "offline preference" in claims["ood[dpo]"].compared
    assert claims["ood[ppo]"].verdict == CONTRADICTED and "online RL" in claims["ood[ppo]"].compared


def diversity(sft_div: float, pref_div: float) -> pd.DataFrame:
    return pd.DataFrame(
        [{**row("sft", s, 1.0), "distinct_2_across": sft_div + j} for s, j in zip(SEEDS, JITTER)]
        + [{**row("dpo", s, 1.0), "distinct_2_across": pref_div} for s in SEEDS]
    )


def test_diversity_claim():
    assert by_key(diversity(0.3, 0.2))["diversity[dpo]"].verdict == SUPPORTED
    assert by_key(diversity(0.2, 0.3))["diversity[dpo]"].verdict == CONTRADICTED
    assert by_key(diversity(0.3, 0.2), roles=Roles({"dpo": ["dpo"]}))["diversity"].verdict == NOT_MEASURED


def demonstrator(sft_gold: float, pref_gold: float, demo: float = 0.8) -> pd.DataFrame:
    rows = []
    for s, j in zip(SEEDS, JITTER):
        rows += [{**row("sft", s, sft_gold + j), "demonstrator_gold": demo}, row("dpo", s, pref_gold - j)]
    return pd.DataFrame(rows)


def test_beyond_the_demonstrator_claim():
    assert by_key(demonstrator(0.8, 1.0))["beyond_demonstrator[dpo]"].verdict == SUPPORTED
    assert by_key(demonstrator(1.0, 0.8))["beyond_demonstrator[dpo]"].verdict == CONTRADICTED
    assert by_key(demonstrator(1.0, 1.2))["beyond_demonstrator[dpo]"].verdict == INCONCLUSIVE  # both above
    no_demo = demonstrator(0.8, 1.0).drop(columns="demonstrator_gold")
    assert by_key(no_demo)["beyond_demonstrator"].verdict == NOT_MEASURED


def budgets(effects: dict[int, float]) -> pd.DataFrame:
    rows = []
    for b, effect in effects.items():
        for s, j in zip(SEEDS, JITTER):
            rows += [
                row("sft", s, 0.5, **{Column.BUDGET: b}),
                row("dpo", s, 0.5 + effect + j, **{Column.BUDGET: b}),
            ]
    return pd.DataFrame(rows)


def test_data_needs_claim():
    claim = by_key(budgets({32: 0.0, 128: 0.2, 512: 0.3}))["data_needs[dpo]"]
    assert claim.verdict == SUPPORTED and "128, 512 units" in claim.reading
    assert by_key(budgets({32: -0.2, 128: 0.0}))["data_needs[dpo]"].verdict == CONTRADICTED
    assert by_key(budgets({32: -0.2, 128: 0.2}))["data_needs[dpo]"].verdict == INCONCLUSIVE  # both ways
    assert by_key(budgets({128: 0.2}))["data_needs"].verdict == NOT_MEASURED  # one budget: no sweep


def noise(sft_loss: float, pref_loss: float) -> pd.DataFrame:
    q, f = Column.DEMONSTRATOR_QUALITY, Column.LABEL_NOISE
    rows = []
    for s, j in zip(SEEDS, JITTER):
        rows += [
            row("sft", s, 1.0, **{q: 0.8, f: 0.0}),
            row("sft", s, 1.0 - sft_loss - j, **{q: 0.2, f: 0.0}),
        ]
        rows += [row("dpo", s, 1.0, **{q: 0.6, f: 0.0}), row("dpo", s, 1.0 - pref_loss, **{q: 0.6, f: 0.4})]
    return pd.DataFrame(rows)


def test_noise_claim():
    assert by_key(noise(0.4, 0.1))["noise[dpo]"].verdict == SUPPORTED
    assert by_key(noise(0.1, 0.4))["noise[dpo]"].verdict == CONTRADICTED
    assert by_key(noise(0.4, 0.1).drop(columns=Column.LABEL_NOISE))["noise"].verdict == NOT_MEASURED


def test_dpo_against_preferred_ft():
    def frame(effect):
        return pd.DataFrame([row("preferred_ft", s, 0.8) for s in SEEDS]
                            + [row("dpo", s, 0.8 + effect + j) for s, j in zip(SEEDS, JITTER)])  # fmt: skip

    assert by_key(frame(0.2))["dpo_vs_preferred"].verdict == SUPPORTED
    assert by_key(frame(-0.2))["dpo_vs_preferred"].verdict == CONTRADICTED
    assert by_key(frame(0.2), roles=Roles({"dpo": ["dpo"]}))["dpo_vs_preferred"].verdict == NOT_MEASURED


# -- over-optimisation ----------------------------------------------------------------------------------
def heldout(gold_by_step, levels=(None,)) -> pd.DataFrame:
    rows = []
    for level in levels:
        for s, j in zip(SEEDS, JITTER):
            for step, g in enumerate(gold_by_step(level)):
                rows.append({"arm": "ppo", "seed": s, "stage": "ppo", "step": step, "heldout/kl": step / 2,
                             "heldout/gold": g + j, "heldout/proxy": step / 4,
                             **({} if level is None else {Column.LENGTH_BIAS: level})})  # fmt: skip
    return pd.DataFrame(rows)


def test_overoptimisation_claim_cannot_be_contradicted():
    ids = pd.DataFrame([row("ppo", s, 1.0) for s in SEEDS])
    peaked = by_key(ids, heldout(lambda _: [0.5, 0.9, 1.2, 0.8]))["overoptimisation"]
    assert peaked.verdict == SUPPORTED and not peaked.can_contradict
    # still rising at the end: the run stopped before any peak; inconclusive, never "contradicted"
    rising = by_key(ids, heldout(lambda _: [0.5, 0.9, 1.0, 1.2]))["overoptimisation"]
    assert rising.verdict == INCONCLUSIVE
    assert "still rises at the largest KL reached" in rising.evidence  # the fit starts at step 0's gold
    assert by_key(ids)["overoptimisation"].verdict == NOT_MEASURED


def test_bias_needed_claim():
    ids = pd.DataFrame([row("ppo", s, 1.0) for s in SEEDS])
    biased_only = heldout(lambda lv: [0.5, 1.2, 0.8] if lv else [0.5, 0.9, 1.2], levels=(0.0, 1.0))
    assert by_key(ids, biased_only)["bias_needed"].verdict == SUPPORTED
    also_clean = heldout(lambda lv: [0.5, 1.2, 0.8], levels=(0.0, 1.0))
    assert by_key(ids, also_clean)["bias_needed"].verdict == CONTRADICTED
    neither = heldout(lambda lv: [0.5, 0.9, 1.2], levels=(0.0, 1.0))
    assert by_key(ids, neither)["bias_needed"].verdict == INCONCLUSIVE
    assert (
        by_key(ids, heldout(lambda lv: [0.5, 1.2, 0.8], levels=(1.0,)))["bias_needed"].verdict == NOT_MEASURED
    )


def dpo_betas(golds) -> pd.DataFrame:
    beta = "grid.arms.dpo.stages.dpo.beta"
    return pd.DataFrame(
        row("dpo", s, g + j, kl=kl, **{beta: b})
        for s, j in zip(SEEDS, JITTER)
        for b, kl, g in zip((1.0, 0.3, 0.1), (0.5, 1.5, 3.0), golds)
    )


def test_dpo_overoptimises_claim():
    assert by_key(dpo_betas([0.5, 1.0, 0.6]))["dpo_overoptimises"].verdict == SUPPORTED
    assert (
        by_key(dpo_betas([0.5, 1.0, 1.2]))["dpo_overoptimises"].verdict == INCONCLUSIVE
    )  # cannot contradict
    assert by_key(dpo_betas([0.5, 1.0, 0.6]).iloc[:0])["dpo_overoptimises"].verdict == NOT_MEASURED


# -- at equal KL ----------------------------------------------------------------------------------------
def equal_kl(a: str, a_col: str, b: str, b_col: str, a_better: float) -> pd.DataFrame:
    """Arms a and b each at two strengths (KL 1 and 3); a's gold is b's plus `a_better`."""
    rows = []
    for s, j in zip(SEEDS, JITTER):
        for setting, kl, g in ((1.0, 1.0, 0.5), (0.1, 3.0, 1.0)):
            rows.append(row(b, s, g, kl=kl, **{b_col: setting}))
            rows.append(row(a, s, g + a_better + j, kl=kl, **{a_col: setting}))
    return pd.DataFrame(rows)


BETA, KL_COEF = "grid.arms.dpo.stages.dpo.beta", "grid.arms.ppo.stages.ppo.kl_coef"
N, ONLINE_BETA = "grid.arms.best_of_n.stages.best_of_n.n", "grid.arms.online_dpo.stages.online_dpo.beta"


@pytest.mark.parametrize(
    "key, a, a_col, b, b_col",
    [
        ("frontier", "dpo", BETA, "ppo", KL_COEF),
        ("best_of_n_kl", "best_of_n", N, "ppo", KL_COEF),
        ("online", "online_dpo", ONLINE_BETA, "dpo", BETA),
    ],
)
def test_equal_kl_claims(key, a, a_col, b, b_col):
    assert by_key(equal_kl(a, a_col, b, b_col, 0.2))[key].verdict == SUPPORTED
    claim = by_key(equal_kl(a, a_col, b, b_col, -0.2))[key]
    assert claim.verdict == CONTRADICTED and "at KL 2.00" in claim.reading
    only_a = equal_kl(a, a_col, b, b_col, 0.2)
    assert by_key(only_a[only_a["arm"] == a])[key].verdict == NOT_MEASURED


def forgetting(rl_better: float) -> pd.DataFrame:
    epochs = "grid.arms.sft.stages.sft.epochs"
    rows = []
    for s, j in zip(SEEDS, JITTER):
        for setting, g, p in ((1, 0.4, 0.9), (4, 0.8, 0.5)):
            rows += [row("sft", s, g, **{epochs: setting}), row("sft", s, p, "prior", **{epochs: setting})]
            rows += [row("ppo", s, g, **{KL_COEF: setting}),
                     row("ppo", s, p + rl_better + j, "prior", **{KL_COEF: setting})]  # fmt: skip
    return pd.DataFrame(rows)


def test_forgetting_claim():
    assert by_key(forgetting(0.2))["forgetting"].verdict == SUPPORTED
    assert by_key(forgetting(-0.2))["forgetting"].verdict == CONTRADICTED
    no_prior = forgetting(0.2)
    assert by_key(no_prior[no_prior["split"] == "id"])["forgetting"].verdict == NOT_MEASURED


def curated(effect: float) -> pd.DataFrame:
    q, c = Column.DEMONSTRATOR_QUALITY, Column.COST_RATIO
    rows = []
    for s, j in zip(SEEDS, JITTER):
        for quality, cost, g in ((0.9, 8, 0.6 + effect + j), (0.3, 2, 0.6), (0.9, 2, 0.0), (0.3, 8, 0.0)):
            rows.append({**row("sft", s, g, **{q: quality, c: cost}), "n_demonstrations": 256 // cost})
    return pd.DataFrame(rows)


def test_curated_claim():
    assert by_key(curated(0.2))["curated"].verdict == SUPPORTED
    assert by_key(curated(-0.2))["curated"].verdict == CONTRADICTED
    assert by_key(curated(0.2).drop(columns=Column.COST_RATIO))["curated"].verdict == NOT_MEASURED


def test_an_undecided_claim_says_how_many_seeds_would_decide_it():
    frame = pd.DataFrame([row("preferred_ft", s, 0.8) for s in range(3)]
                         + [row("dpo", s, 0.8 + g) for s, g in zip(range(3), (0.0, 0.1, 0.05))])  # fmt: skip
    claim = by_key(frame)["dpo_vs_preferred"]
    # differences 0, 0.1, 0.05: mean 0.05, sd 0.05 -> n = 7, as for mean 1 and sd 1 (t_{0.975, 6} / sqrt 7 < 1)
    assert claim.verdict == INCONCLUSIVE and claim.seeds_needed == 7
    assert not math.isnan(claim.p_value)


def pass_rows(rl_low: float, rl_high: float) -> pd.DataFrame:
    """pass@1 and pass@64 of the base model (0.3, 0.9) and RM + PPO, which starts from it."""
    rows = []
    for seed, j in zip(SEEDS, JITTER):
        rows.append(row("base", seed, 0.0, pass_at_1=0.3, pass_at_64=0.9))
        rows.append(row("ppo", seed, 0.0, pass_at_1=0.3 + rl_low + j, pass_at_64=0.9 + rl_high + j))
        rows.append(row("sft", seed, 0.0))  # no pass@k: not an RL arm, not a start
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "rl_low, rl_high, verdict",
    [
        (0.2, -0.1, SUPPORTED),  # squeezes: above at k = 1, below at k = 64
        (0.2, 0.1, CONTRADICTED),  # expands: above at k = 64 too
        (0.2, 0.0, INCONCLUSIVE),  # the same at k = 64: not a decided "below"
        (0.0, -0.1, INCONCLUSIVE),  # no gain at k = 1
    ],
)
def test_pass_at_k_claim(rl_low, rl_high, verdict):
    claim = by_key(pass_rows(rl_low, rl_high))["pass_at_k[ppo]"]
    assert claim.verdict == verdict
    assert claim.compared == "RL, here: ppo; its start, here: base" and claim.suite == "arithmetic.yaml"
    assert "pass@1 ppo − base" in claim.evidence and "pass@64 ppo − base" in claim.evidence


def test_pass_at_k_claim_not_measured_without_pass_at_k():
    claims = by_key(pd.DataFrame([row("base", s, 0.0) for s in SEEDS] + [row("ppo", s, 0.1) for s in SEEDS]))
    assert claims["pass_at_k"].verdict == NOT_MEASURED


def dpo_logs(change: float) -> pd.DataFrame:
    """DPO's log p(chosen) over 20 steps per seed: -10 at the start, -10 + change at the end."""
    rows = []
    for seed, j in zip(SEEDS, JITTER):
        for step in range(1, 21):
            chosen = -10.0 + (change + j) * (step - 1) / 19
            rows.append({"arm": "dpo", "seed": seed, "stage": "dpo", "step": step, "logps/chosen": chosen,
                         "logps/rejected": chosen - step * 0.1, "rewards/accuracies": 0.5})  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize("change, verdict", [(-1.0, SUPPORTED), (1.0, CONTRADICTED), (0.0, INCONCLUSIVE)])
def test_dpo_chosen_falls_claim(change, verdict):
    results = pd.DataFrame([row("dpo", s, 0.5) for s in SEEDS])
    claim = by_key(results, dpo_logs(change))["dpo_chosen_falls"]
    assert claim.verdict == verdict and claim.suite == "generalization.yaml"
    # start and end: the means of steps 1-2 and 19-20, 0.5 and 18.5 nineteenths of the way: 18/19 of it
    assert claim.effect.mean == pytest.approx(-change * 18 / 19, abs=1e-9)
    assert by_key(results)["dpo_chosen_falls"].verdict == NOT_MEASURED  # no training log


def test_implicit_reward_accuracy_on_held_out_pairs():
    from compare.report.preference_diagnostics import implicit_reward_accuracy

    # seed 0, two prompts, 2 samples each: log π − log π_base orders prompt 0's pair as the gold does,
    # prompt 1's the other way round -> 0.5; the gold tie of seed 1 is skipped (nan: no seed)
    samples = pd.DataFrame(
        [
            {"arm": "dpo", "seed": 0, "split": "id", "prompt_index": p, "sample_index": i,
             "logp_policy": lp, "logp_base": -5.0, "gold_reward": g}
            for p, i, lp, g in ((0, 0, -1.0, 1.0), (0, 1, -2.0, 0.0), (1, 0, -1.0, 0.0), (1, 1, -2.0, 1.0))
        ]
        + [
            {"arm": "dpo", "seed": 1, "split": "id", "prompt_index": 0, "sample_index": i,
             "logp_policy": -1.0 - i, "logp_base": -5.0, "gold_reward": 0.5}
            for i in (0, 1)
        ]
    )  # fmt: skip
    assert implicit_reward_accuracy(samples, "dpo") == {0: 0.5}


def test_pass_at_k_claim_decided_on_a_shift_where_id_saturates():
    rows = []
    for seed, j in zip(SEEDS, JITTER):  # ID: both solve everything at k = 64; OOD: the base model more
        rows.append(row("base", seed, 0.0, pass_at_1=0.6, pass_at_64=1.0))
        rows.append(row("ppo", seed, 0.0, pass_at_1=0.7 + j, pass_at_64=1.0))
        rows.append(row("base", seed, 0.0, "ood", pass_at_1=0.2, pass_at_64=0.9))
        rows.append(row("ppo", seed, 0.0, "ood", pass_at_1=0.3 + j, pass_at_64=0.8 + j))
    claim = by_key(pd.DataFrame(rows))["pass_at_k[ppo]"]
    assert claim.verdict == SUPPORTED and "2 splits tested" in claim.reading
    assert "pass@64 ppo − base = -0.100" in claim.evidence.split("OOD: ")[1]
