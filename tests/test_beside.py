"""Beside the tiny world (`beside_findings`): agreement words, ranks and Kendall's tau, arms and claims
matched by recipe, beside.csv's round trip, the section rendered from a hand-made findings folder and
rebuilt after that folder is gone, and the one-line error for a bad path."""

from __future__ import annotations

import math
import shutil
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import SMALL_SUITE

from compare.cli import main
from compare.report.beside import (
    BESIDE,
    FLIPPED,
    HELD,
    HERE_ONLY,
    NEITHER,
    TINY_ONLY,
    agreement,
    arm_gold,
    beside_key_result,
    competition_ranks,
    matched_arms,
    pairs,
    read_beside,
    read_reference,
    reference_frame,
)
from compare.report.findings import collection_findings
from compare.report.roles import Roles
from compare.report.verdicts import CONTRADICTED, INCONCLUSIVE, NOT_MEASURED, SUPPORTED, Claim
from compare.suite import Suite

ARMS = {"base": [], "sft": ["sft"], "dpo": ["dpo"], "ppo": ["rm", "ppo"]}


# -- pure functions ---------------------------------------------------------------------------------------
def test_agreement_words():
    assert agreement(SUPPORTED, SUPPORTED) == agreement(CONTRADICTED, CONTRADICTED) == HELD
    assert agreement(SUPPORTED, CONTRADICTED) == agreement(CONTRADICTED, SUPPORTED) == FLIPPED
    assert agreement(SUPPORTED, INCONCLUSIVE) == TINY_ONLY
    assert agreement(INCONCLUSIVE, CONTRADICTED) == HERE_ONLY
    assert agreement(INCONCLUSIVE, INCONCLUSIVE) == NEITHER


def test_ranks_share_ties_and_put_nan_last():
    ranks = competition_ranks({"a": 1.0, "b": 2.0, "c": 2.0, "d": 0.0, "e": math.nan})
    assert ranks == {"b": 1, "c": 1, "a": 3, "d": 4, "e": 5}


def test_arms_match_by_name_and_recipe():
    here = {"base": (), "sft": ("sft",), "ppo": ("rm", "ppo"), "rloo": ("rm", "rloo"), "x": ("dpo",)}
    there = {"base": [], "sft": ["sft"], "ppo": ["rm", "ppo"], "rloo": ["rloo"], "dpo": ["dpo"]}
    assert matched_arms(here, there) == ["base", "sft", "ppo"]  # rloo: another recipe; x/dpo: other names


def test_arm_gold_averages_each_seed_over_the_grid_then_the_seeds():
    rows = pd.DataFrame(
        [
            {"arm": "a", "seed": 0, "split": "id", "gold_reward": 1.0},
            {"arm": "a", "seed": 0, "split": "id", "gold_reward": 3.0},  # another grid value of seed 0
            {"arm": "a", "seed": 1, "split": "id", "gold_reward": 4.0},
            {"arm": "a", "seed": 1, "split": "ood", "gold_reward": 9.0},
            {"arm": "b", "seed": 0, "split": "ood", "gold_reward": 1.0},
        ]
    )
    assert arm_gold(rows, "id", ["a", "b"]) == {"a": (3.0, 2)}  # (2 + 4) / 2 over 2 seeds; b has no ID


def claim_row(key: str, recipe: str, discovery: str, replicated: bool, corrected: str) -> dict:
    return {"row": "claim", "suite": "generalization", "task": "reviews", "key": key, "recipe": recipe,
            "discovery": discovery, "confirmation": discovery if replicated else INCONCLUSIVE,
            "replicated": replicated, "corrected": corrected, "training_logs": True}  # fmt: skip


def test_claims_pair_by_key_without_arm_and_by_recipe():
    tiny = pd.DataFrame(
        [
            claim_row("ood[dpo]", "dpo", SUPPORTED, True, SUPPORTED),
            claim_row("ood[ppo]", "rm ppo", CONTRADICTED, True, CONTRADICTED),
            claim_row("diversity[dpo]", "dpo", NOT_MEASURED, False, NOT_MEASURED),
        ]
    )
    recipes = {"offline": ("dpo",), "online": ("rm", "rloo")}  # renamed arms; rloo is not PPO
    here = [
        Claim("ood[offline]", "RLHF generalises better", SUPPORTED, "", corrected=SUPPORTED),
        Claim("ood[online]", "RLHF generalises better", CONTRADICTED, "", corrected=CONTRADICTED),
        Claim("diversity[offline]", "RLHF reduces diversity", SUPPORTED, "", corrected=SUPPORTED),
        Claim("frontier", "frontier", NOT_MEASURED, ""),
    ]
    found = pairs(tiny, here, recipes)
    assert [(row["key"], claim.key) for row, claim in found] == [("ood[dpo]", "ood[offline]")]
    line = beside_key_result(here, Roles({"offline": ["dpo"], "online": ["rm", "rloo"]}), "the model", tiny)
    assert "1 of the 1 tiny-world findings" in line and "hold on the model" in line


# -- a hand-made findings folder --------------------------------------------------------------------------
def results(arms: dict, seeds: range, gaps: dict[str, float], jitter: float = 0.01) -> pd.DataFrame:
    """ID and OOD gold of each arm at each seed: ID 1 + its index / 10, OOD that minus the arm's gap
    (plus a small jitter by seed, so intervals have width)."""
    rows = []
    for seed in seeds:
        for i, arm in enumerate(arms):
            wobble = jitter * ((seed * 7 + i) % 5 - 2)
            gold = 1.0 + i / 10 + wobble
            for split, value in (("id", gold), ("ood", gold - gaps.get(arm, 0.0) + wobble / 2)):
                rows.append({"arm": arm, "seed": seed, "budget": 64.0, "split": split, "gold_reward": value,
                             "kl_to_base": 0.1 * i, "well_formed": 1.0, "n_demonstrations": 16,
                             "n_comparisons": 0, "n_labels": 0, "distinct_2": 0.5, "mean_length": 8.0,
                             "eos_rate": 1.0, "rm_accuracy": math.nan, "proxy_reward": math.nan})  # fmt: skip
    return pd.DataFrame(rows)


def member(folder: Path, name: str, arms: dict, frame: pd.DataFrame, commit: str = "abc123") -> None:
    folder.mkdir(parents=True)
    suite = Suite.model_validate({"name": name, "arms": {a: {"recipe": r} for a, r in arms.items()}})
    (folder / "suite.yaml").write_text(yaml.safe_dump(suite.model_dump(), sort_keys=False))
    frame.to_csv(folder / "results.csv", index=False)
    (folder / "provenance.json").write_text(f'{{"git_commit": "{commit}"}}')


@pytest.fixture
def reference(tmp_path) -> Path:
    """A findings folder of two member suites on the reviews task, 10 seeds each: `generalization` (the OOD
    claim's home: DPO's ID − OOD gap smaller than SFT's, PPO's larger) and `data_needs` (base and SFT)."""
    root = tmp_path / "findings"
    gaps = {"sft": 0.2, "dpo": 0.05, "ppo": 0.4}
    member(
        root / "generalization", "generalization", ARMS, results(ARMS, range(10), gaps), "1234567890abcdef"
    )
    two = {"base": [], "sft": ["sft"]}
    member(root / "data_needs", "data_needs", two, results(two, range(10), {}))
    return root


def here_suite(tmp_path: Path, reference: Path) -> Suite:
    suite = Suite.model_validate(
        {
            "name": "real",
            "arms": {**{a: {"recipe": r} for a, r in ARMS.items()}, "rloo": {"recipe": ["rm", "rloo"]}},
            "grid": {"seed": [0, 1, 2]},
            "beside_findings": str(reference),
        }  # fmt: skip
    )
    suite._source = str(tmp_path / "real.yaml")
    return suite


def test_the_reference_is_decided_as_the_findings_report_decides_it(reference, tmp_path):
    members = read_reference(reference)
    frame = reference_frame(members, here_suite(tmp_path, reference))
    claims = frame[frame["row"] == "claim"].set_index("key")
    expected = {
        f.whole.key: (f.replicated, f.corrected) for f in collection_findings([m[:4] for m in members])
    }
    assert {k: (bool(r), c) for k, (r, c) in claims[["replicated", "corrected"]].iterrows()} == expected
    assert claims.loc["ood[dpo]", "discovery"] == SUPPORTED and claims.loc["ood[dpo]", "replicated"]
    assert (
        claims.loc["ood[ppo]", "discovery"] == CONTRADICTED and claims.loc["ood[ppo]", "recipe"] == "rm ppo"
    )
    gold = frame[frame["row"] == "gold"]
    assert set(gold["suite"]) == {"generalization"}  # four arms shared, against data_needs' two
    assert gold.set_index(["arm", "split"]).loc[("ppo", "id"), "gold"] == pytest.approx(1.3, abs=0.02)
    # beside.csv's round trip: the text columns (an empty recipe, the base model's) come back as written
    frame.to_csv(tmp_path / BESIDE, index=False)
    back = read_beside(tmp_path)
    assert back["recipe"].tolist() == frame["recipe"].fillna("").tolist()
    assert back["key"].tolist() == frame["key"].fillna("").tolist()
    assert back["discovery"].fillna("").tolist() == frame["discovery"].fillna("").tolist()
    assert back["gold"].dropna().tolist() == pytest.approx(frame["gold"].dropna().tolist())


def section(text: str) -> str:
    return text[text.index("## Beside the tiny world") : text.index("## Example generations")]


def test_the_report_shows_the_section_and_rebuilds_it_without_the_reference(reference, tmp_path):
    from compare.pipeline import mark
    from compare.report import write_report

    suite = here_suite(tmp_path, reference)
    # here: DPO's gap smaller than SFT's (as in the tiny world: held), PPO's smaller too (there larger:
    # flipped); RLOO here only; the arms' order on ID gold is the tiny world's
    gaps = {"sft": 0.3, "dpo": 0.05, "ppo": 0.05, "rloo": 0.1}
    frame = results({**ARMS, "rloo": ["rm", "rloo"]}, range(3), gaps, jitter=0.001)
    samples = pd.DataFrame(
        columns=["arm", "seed", "split", "prompt_index", "prompt", "completion", "gold_reward"]
    )
    out = tmp_path / "report"
    beside = reference_frame(read_reference(suite.beside_folder), suite)
    write_report(out, suite, frame, samples, pd.DataFrame(), {}, beside=beside)
    mark(out)
    text = (out / "report.md").read_text()
    shown = section(text)
    rows = [line for line in shown.splitlines() if line.startswith("| “RLHF generalises")]
    assert len(rows) == 2
    assert f"[dpo] | **{HELD}** | **▲ supported**, replicated in generalization (reviews) |" in rows[0]
    assert f"[ppo] | **{FLIPPED}** | **▼ contradicted**, replicated in generalization (reviews) |" in rows[1]
    assert "`1234567890ab`" in shown  # the reference's commit
    assert "Kendall's τ-b, ID gold: 1.00" in shown  # the same order in both worlds
    assert "here only (not in generalization): rloo (rm → rloo)" in shown
    assert "- **Beside the tiny world**: 1 of the 2 tiny-world findings" in text and "1 flipped" in text
    assert "Beside the tiny world" in (out / "report.html").read_text()
    shutil.rmtree(reference)
    assert main(["report", str(out)]) == 0
    assert section((out / "report.md").read_text()) == shown


def test_a_bad_reference_is_one_line_naming_the_key(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    base = "name: s\narms: {base: {recipe: []}}\nbeside_findings: "
    suite.write_text(base + "no_such_folder\n")
    assert main(["plan", str(suite), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{suite}: beside_findings: 'no_such_folder'" in err and "does not exist" in err
    (tmp_path / "empty").mkdir()
    suite.write_text(base + "empty\n")  # relative to the suite file
    assert main(["plan", str(suite), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "beside_findings: 'empty'" in err and "no member suite" in err
    (tmp_path / "empty" / "x").mkdir()
    (tmp_path / "empty" / "x" / "suite.yaml").write_text("name: x\narms: {base: {recipe: []}}\n")
    assert main(["plan", str(suite), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "results.csv: missing" in err
    pd.DataFrame([{"arm": "base", "seed": 0, "split": "id", "gold_reward": 0.0, "budget": 1.0}]).to_csv(
        tmp_path / "empty" / "x" / "results.csv", index=False
    )
    assert main(["plan", str(suite), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1 seed; a findings report's suites" in err


def test_the_key_leaves_stage_keys_alone(tmp_path, reference, capsys):
    from compare.plan import plan_runs

    text = textwrap.dedent(
        """
        name: s
        arms: {base: {recipe: []}, sft: {recipe: [sft]}}
        """
    )
    plain = Suite.model_validate(yaml.safe_load(text))
    beside = Suite.model_validate({**yaml.safe_load(text), "beside_findings": str(reference)})
    keys = [[s.name for s in run.roots] for run in plan_runs(plain)]
    assert keys == [[s.name for s in run.roots] for run in plan_runs(beside)]


@pytest.mark.slow
def test_a_run_writes_beside_csv_and_a_rewritten_reference_rewrites_the_report(reference, tmp_path):
    """Through the pipeline: the smallest whole suite with `beside_findings` (relative to its file) writes
    beside.csv and the section; a warm run writes the report again only when the reference changed."""
    from compare.preflight import read_marker

    suite = tmp_path / "small.yaml"
    suite.write_text(SMALL_SUITE + "beside_findings: findings\n")
    out, cache = tmp_path / "out", tmp_path / "cache"
    run = ["run", str(suite), "--out", str(out), "--cache-dir", str(cache), "--jobs", "1"]
    assert main(run) == 0
    assert BESIDE in read_marker(out)["files"]
    shown = section((out / "report.md").read_text())
    assert "findings report `findings` (relative to the suite file)" in shown
    assert "tiny world: finding" in shown  # sft and dpo: claims both worlds measure
    first = (out / "report.md").stat().st_mtime_ns
    assert main(run) == 0 and (out / "report.md").stat().st_mtime_ns == first  # up to date: left alone
    frame = pd.read_csv(reference / "generalization" / "results.csv")
    frame.assign(gold_reward=frame["gold_reward"] + 0.5).to_csv(
        reference / "generalization" / "results.csv", index=False
    )
    assert main(run) == 0 and (out / "report.md").stat().st_mtime_ns != first
