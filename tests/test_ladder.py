"""The base-size ladder: the pretraining rule (tokens per parameter), Kendall's tau, inversions and each
claim's verdict per size on hand-made results whose answers are known; one micro suite over two sizes
end to end (slow)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from compare.lm.tiny import steps_for_ratio
from compare.report.ladder import (
    FLIPPED,
    HELD,
    SOME,
    UNDECIDED,
    across_sizes,
    find_inversions,
    kendall_tau,
    ladder_section,
    pair_differences,
    ranking,
    size_columns,
)
from compare.report.roles import Roles
from compare.report.verdicts import CONTRADICTED, INCONCLUSIVE, NOT_MEASURED, SUPPORTED
from compare.suite.schema import TinyBase

SIZE = "grid.base.tiny.n_embd"
ROOT = Path(__file__).resolve().parents[1]


# -- the pretraining rule ---------------------------------------------------------------------------------
def test_steps_for_ratio_by_hand():
    # 20 tokens x 1000 parameters = 20,000 tokens; a batch of 10 texts of 4 tokens holds 40: 500 steps
    assert steps_for_ratio(20, 1000, 10, 4.0) == 500
    assert steps_for_ratio(20, 1001, 10, 4.0) == 501  # 500.5 steps: rounded up, never short of the ratio
    assert steps_for_ratio(0.001, 10, 64, 23.0) == 1  # at least one step
    # the default 64-wide reviews base: 112,192 parameters, 64 texts of 23.24 tokens a step, 20 per parameter
    assert steps_for_ratio(20, 112_192, 64, 23.24) == math.ceil(20 * 112_192 / (64 * 23.24))


def test_tokens_per_parameter_replaces_steps_in_the_key():
    plain = TinyBase().model_dump()
    assert "tokens_per_parameter" not in plain and plain["steps"] == 1500  # keys of every existing suite
    ruled = TinyBase(tokens_per_parameter=20, steps=99).model_dump()
    assert ruled["tokens_per_parameter"] == 20 and "steps" not in ruled  # steps are not read: not keyed
    assert TinyBase.model_validate(ruled).model_dump() == ruled  # a saved suite.yaml reads back the same
    with pytest.raises(ValueError):
        TinyBase(tokens_per_parameter=0)


# -- pure functions ----------------------------------------------------------------------------------------
def test_kendall_tau_by_hand():
    first = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    # one of the 6 pairs (b, c) swapped: (5 concordant - 1 discordant) / 6
    tau, p, n = kendall_tau(first, {"a": 1.0, "b": 3.0, "c": 2.0, "d": 4.0})
    assert tau == pytest.approx(4 / 6) and n == 4 and 0 < p <= 1
    assert kendall_tau(first, {k: -v for k, v in first.items()})[0] == pytest.approx(-1.0)
    assert kendall_tau(first, {"a": 5.0, "e": 1.0})[2] == 1 and math.isnan(kendall_tau(first, {"a": 1.0})[0])
    # only the names both have count: d's rank elsewhere does not matter
    assert kendall_tau(first, {"a": 0.0, "b": 1.0, "c": 2.0, "x": 9.0})[0] == pytest.approx(1.0)


def test_ranking_best_first_nan_last():
    assert ranking({"a": 0.1, "b": 0.3, "c": math.nan, "d": 0.2}) == ["b", "d", "a", "c"]


def test_across_sizes():
    assert across_sizes([SUPPORTED, SUPPORTED, SUPPORTED]) == HELD
    assert across_sizes([CONTRADICTED, CONTRADICTED]) == HELD
    assert across_sizes([SUPPORTED, INCONCLUSIVE, CONTRADICTED]) == FLIPPED
    assert across_sizes([SUPPORTED, INCONCLUSIVE, SUPPORTED]) == SOME
    assert across_sizes([INCONCLUSIVE, NOT_MEASURED, INCONCLUSIVE]) == UNDECIDED


def _scores(x: list[float], y: list[float]) -> dict[str, dict[int, float]]:
    return {"x": dict(enumerate(x)), "y": dict(enumerate(y))}


def test_an_inversion_decided_both_ways_is_found_once():
    small = pair_differences(_scores([1.0, 1.1, 0.9], [0.5, 0.6, 0.4]))  # x − y = 0.5 at every seed
    large = pair_differences(_scores([0.2, 0.3, 0.25], [0.6, 0.65, 0.7]))  # x − y = −0.4 ± 0.124
    (inv,) = find_inversions({"n_embd=32": small, "n_embd=128": large})
    assert (inv.ahead, inv.behind, inv.ordered_at, inv.decided_at) == ("x", "y", "n_embd=32", "n_embd=128")
    assert inv.both_decided and inv.at_ordered.mean == pytest.approx(0.5)
    assert inv.at_decided.mean == pytest.approx(-0.4) and inv.at_decided.half_width == pytest.approx(
        4.3027 * 0.05 / math.sqrt(3), abs=1e-3
    )


def test_an_order_that_another_size_decides_the_other_way_is_an_inversion():
    noisy = pair_differences(_scores([0.1, -0.05, 0.2], [0.0, 0.0, 0.0]))  # x ahead, not significantly
    decided = pair_differences(_scores([0.0, 0.0, 0.0], [0.4, 0.35, 0.45]))  # y ahead, significantly
    (inv,) = find_inversions({"a": noisy, "b": decided})
    assert (inv.ahead, inv.ordered_at, inv.decided_at, inv.both_decided) == ("x", "a", "b", False)
    # the same order at both sizes, or no size deciding the other way: no inversion
    assert find_inversions({"a": decided, "b": decided}) == []
    assert find_inversions({"a": noisy, "b": noisy}) == []


# -- the section on hand-made results ----------------------------------------------------------------------
JITTER = (-0.02, -0.01, 0.0, 0.01, 0.02)
ROLES = Roles({"base": [], "sft": ["sft"], "dpo": ["dpo"]})


def ladder_results(dpo_minus_sft: dict[int, float]) -> pd.DataFrame:
    """Base, SFT and DPO at each size (n_embd), 5 seeds. DPO's ID gold is SFT's plus the size's effect;
    OOD, SFT loses 0.1 and DPO 0.1 − effect / 2: DPO generalises better where it is ahead."""
    rows = []
    for size, effect in dpo_minus_sft.items():
        for seed, j in enumerate(JITTER):
            for arm, gold, gap in (
                ("base", 0.0, 0.0),
                ("sft", 0.5 + j, 0.1),
                ("dpo", 0.5 + effect, 0.1 - effect / 2),
            ):
                for split, shift in (("id", 0.0), ("ood", gap)):
                    rows.append({"arm": arm, "seed": seed, "split": split, "gold_reward": gold - shift,
                                 "kl_to_base": 0.0, SIZE: size})  # fmt: skip
    return pd.DataFrame(rows)


def test_section_decides_each_size_alone_and_flags_the_inversion():
    results = ladder_results({32: 0.2, 64: 0.1, 128: -0.2})
    assert size_columns(results) == [SIZE]
    lines = ladder_section(results, pd.DataFrame(), ROLES)
    text = "\n".join(lines)
    assert "## Base-size ladder" in text and "| n_embd=32 | n_embd=64 | n_embd=128 |" in text
    # the OOD claim: DPO's gap smaller than SFT's at 32 and 64, larger at 128
    ood = next(x for x in lines if x.startswith("| RLHF generalises better out of distribution"))
    assert (
        ood.count("▲ supported") == 2 and ood.count("▼ contradicted") == 1 and ood.endswith("**flipped** |")
    )
    assert "In short: flipped: `ood[dpo]`." in lines
    # ranks per size on ID gold, 1 = best
    assert "| sft | 0.500 (2) | 0.500 (2) | 0.500 (1) |" in lines
    assert "| dpo | 0.700 (1) | 0.600 (1) | 0.300 (2) |" in lines
    # Kendall's tau, 32 against 128 on ID gold: dpo > sft > base against sft > dpo > base, (2 − 1) / 3
    line = next(x for x in lines if x.startswith("| ID | n_embd=32 vs n_embd=128 |"))
    assert line.split(" | ")[2] == f"{1 / 3:.2f}"
    # DPO ahead of SFT at 32 and 64, behind at 128: decided both ways, each size pair once, ID and OOD
    inversions = [x for x in lines if x.startswith("- ") and "ahead of" in x]
    assert len(inversions) == 4 and all("**decided both ways**" in x for x in inversions)
    assert "4 pair(s) of policies ordered one way at one size and decided the other way" in text
    assert (
        "- ID gold: dpo ahead of sft at n_embd=32 (0.200 ± 0.020, **decided both ways**), behind at n_embd=128"
        in text
    )


def test_section_only_when_the_size_is_swept():
    one = ladder_results({64: 0.2})
    assert ladder_section(one, pd.DataFrame(), ROLES) == []
    assert ladder_section(one.drop(columns=[SIZE]), pd.DataFrame(), ROLES) == []


# -- end to end --------------------------------------------------------------------------------------------
LADDER = """
name: ladder
description: micro ladder for the tests
task: {train_prompts: 32, eval_prompts: 2}
base:
  tiny: {n_layer: 1, n_head: 2, corpus_size: 300, batch_size: 16, tokens_per_parameter: 2}
budget: {units: 32, cost: {demonstration: 4, comparison: 1}}
stages:
  sft: {epochs: 1, batch_size: 8}
  dpo: {epochs: 1, batch_size: 8}
arms:
  base: {recipe: []}
  sft: {recipe: [sft]}
  dpo: {recipe: [dpo]}
grid: {seed: [0, 1], base.tiny.n_embd: [8, 16]}
eval: {samples_per_prompt: 2, max_new_tokens: 8, examples: 1}
"""


@pytest.mark.slow
def test_ladder_end_to_end(tmp_path):
    from compare.cli import main

    suite = tmp_path / "ladder.yaml"
    suite.write_text(textwrap.dedent(LADDER))
    cache, out = tmp_path / "cache", tmp_path / "report"
    assert main(["run", str(suite), "--cache-dir", str(cache), "--out", str(out), "--jobs", "1"]) == 0
    # one base model per size, each pretrained for the fewest steps that show it 2 tokens per parameter
    made = [json.loads(p.read_text()) for p in cache.glob("base-*/pretraining.json")]
    assert len(made) == 2 and made[0]["parameters"] != made[1]["parameters"]
    for info in made:
        per_step = info["tokens"] / info["steps"]
        assert (info["steps"] - 1) * per_step < 2 * info["parameters"] <= info["tokens"] + 1
    text = (out / "report.md").read_text()
    assert "## Base-size ladder" in text and "| n_embd=8 | n_embd=16 |" in text.replace(
        "claim | compared | ", ""
    )
    assert "each pretrained on 2 corpus tokens per parameter" in text
    html = (out / "report.html").read_text()
    assert 'id="base-size-ladder"' in html and "Kendall" in html
    # benchmarks/scale_time.py: every stage of each size done, with the seconds its cache records
    bench = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scale_time.py"), str(suite), "--cache-dir", str(cache)],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    rows = {line.split()[0]: line.split() for line in bench.stdout.splitlines()[2:-1]}
    assert set(rows) == {"n_embd=8", "n_embd=16", "shared"}
    for size in ("n_embd=8", "n_embd=16"):
        done, every = rows[size][1].split("/")
        assert done == every and float(rows[size][2]) > 0  # its base model took some seconds
    last = bench.stdout.splitlines()[-1]
    assert (
        last.startswith("scale stages=")
        and last.split()[1].split("=")[1].split("/")[0] == last.split()[1].split("/")[1]
    )


def test_verdict_cell_shows_a_p_value_only_where_it_reads_as_one():
    from compare.report.ladder import _verdict_cell
    from compare.report.verdicts import Claim

    decided = Claim("k", "c", SUPPORTED, "", p_value=0.001, corrected=SUPPORTED)
    assert _verdict_cell(decided) == "▲ supported, p = 0.001"
    corrected_away = Claim("k", "c", SUPPORTED, "", p_value=0.03, corrected=INCONCLUSIVE)
    assert _verdict_cell(corrected_away) == "○ inconclusive, p = 0.03 (before correction: supported)"
    fell_short = Claim("k", "c", INCONCLUSIVE, "", p_value=0.26, corrected=INCONCLUSIVE)
    assert _verdict_cell(fell_short) == "○ inconclusive, p = 0.26"
    # two tests, both arms below the demonstrator: the small p of one of them decides nothing
    compound = Claim("k", "c", INCONCLUSIVE, "", p_value=2.4e-05, corrected=INCONCLUSIVE)
    assert _verdict_cell(compound) == "○ inconclusive"
