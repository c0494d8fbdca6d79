"""The report finds arms by what they are (their recipes' stage roles), never by what they are called."""

from __future__ import annotations

import csv
import itertools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from compare.cli import main
from compare.report import figures
from compare.report.claims import NOT_MEASURED, check_claims
from compare.report.roles import Column, Roles, preference_rank
from compare.report.series import frontier_points
from compare.stages import SPECS
from compare.suite import load_suites
from compare.tasks import TASKS
from compare.tasks.task import ID_SPLIT, Split, SplitRole

ROOT = Path(__file__).resolve().parents[1]
RENAMES = {"sft": "imitation", "dpo": "prefopt"}  # neither new name appears anywhere else in a report


# -- renaming the arms of a saved report -----------------------------------------------------------------
def _renamed_key(key: str, names: dict[str, str], prefix: str) -> str:
    """`<prefix>arms.<old>.rest` -> `<prefix>arms.<new>.rest` (grid keys, results columns, failed points)."""
    for old, new in names.items():
        if key.startswith(f"{prefix}arms.{old}."):
            return f"{prefix}arms.{new}." + key[len(f"{prefix}arms.{old}.") :]
    return key


def _rename_csv(path: Path, names: dict[str, str]) -> None:
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    header = [_renamed_key(c, names, "grid.") for c in rows[0]]
    arm, point = header.index("arm"), header.index("point") if "point" in header else None
    for row in rows[1:]:
        row[arm] = names.get(row[arm], row[arm])
        if point is not None:
            row[point] = " ".join(_renamed_key(p, names, "") for p in row[point].split(" "))
    with path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([header, *rows[1:]])


def rename_arms(folder: Path, names: dict[str, str]) -> None:
    """Rename arms everywhere a saved report names them as arms: suite.yaml's arms and grid keys, the `arm`
    column and `grid.arms.<name>.` columns of the CSVs, failed runs' grid points."""
    suite = yaml.safe_load((folder / "suite.yaml").read_text())
    suite["arms"] = {names.get(k, k): v for k, v in suite["arms"].items()}
    suite["grid"] = {_renamed_key(k, names, ""): v for k, v in suite["grid"].items()}
    (folder / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    for name in (
        "results.csv",
        "samples.csv",
        "training_logs.csv",
        "failed_runs.csv",
        "compute.csv",
        "snapshots.csv",
    ):
        _rename_csv(folder / name, names)


def claims_table(text: str) -> list[str]:
    section = text[text.index("## Claims checked") :]
    return [line for line in section.splitlines() if line.startswith("| ") and "| **" in line]


def named_back(text: str, names: dict[str, str]) -> str:
    for old, new in names.items():
        text = re.sub(rf"\b{re.escape(new)}\b", old, text)
    return text


def test_renamed_arms_give_the_same_report(tmp_path):
    same, renamed = tmp_path / "same", tmp_path / "renamed"
    shutil.copytree(ROOT / "reports" / "example", same)
    shutil.copytree(ROOT / "reports" / "example", renamed)
    rename_arms(renamed, RENAMES)
    assert "imitation" in (renamed / "suite.yaml").read_text()
    assert main(["report", str(same)]) == 0 and main(["report", str(renamed)]) == 0
    before, after = (same / "report.md").read_text(), (renamed / "report.md").read_text()
    claims = claims_table(after)
    assert len(claims) == 23  # 18 claims; 5 of those against SFT are checked for DPO and for PPO
    assert [named_back(c, RENAMES) for c in claims] == claims_table(before)
    # as in the example itself, which sweeps no budget, noise, demonstrator, DPO beta or labeller bias, has no online DPO and no pass@k
    assert sum(NOT_MEASURED in c for c in claims) == 8
    assert "prefopt" in "".join(claims) and "imitation" in "".join(claims)
    assert "### Differences from imitation, paired by seed" in after
    assert named_back(after, RENAMES) == before  # every table, statement and figure list too


# -- every claim, on synthetic results with every sweep ---------------------------------------------------
def synthetic(names: dict[str, str]):
    """Results and logs with a budget, noise, demonstrator, DPO beta, PPO KL, best-of-n and labeller length
    bias sweep, every evaluation split, the forward KL, pass@k and DPO's log-probabilities; arms renamed."""
    rng = np.random.default_rng(0)
    sft, dpo, ppo = (names.get(a, a) for a in ("sft", "dpo", "ppo"))
    bon = names.get("best_of_n", "best_of_n")
    recipes = {
        "base": [], sft: ["sft"], "preferred_ft": ["preferred_ft"], dpo: ["dpo"], ppo: ["rm", "ppo"],
        bon: ["rm", "best_of_n"], "online_dpo": ["online_dpo"],
    }  # fmt: skip
    strength = {
        dpo: f"grid.arms.{dpo}.stages.dpo.beta",
        "online_dpo": "grid.arms.online_dpo.stages.online_dpo.beta",
        ppo: f"grid.arms.{ppo}.stages.ppo.kl_coef",
        bon: f"grid.arms.{bon}.stages.best_of_n.n",
    }
    splits = ("id", "ood", "ood_opener", "ood_format", "prior")
    rows = []
    for arm, seed, budget, flip, quality, cost, split in itertools.product(
        recipes, range(3), (32, 64), (0.0, 0.3), (0.3, 0.9), (2, 8), splits
    ):
        for s in (0.1, 0.3, 1.0) if arm in strength else (None,):
            row = {
                "arm": arm, "seed": seed, "split": split, "budget": budget, Column.BUDGET: budget,
                Column.COST_RATIO: cost, "n_demonstrations": budget // cost,
                Column.LABEL_NOISE: flip, Column.DEMONSTRATOR_QUALITY: quality, "demonstrator_gold": quality,
                "gold_reward": rng.normal(budget / 64 - flip), "kl_to_base": rng.exponential(),
                "distinct_2_across": rng.uniform(), "forward_kl_train": rng.exponential(),
                Column.LENGTH_BIAS: flip, "pass_at_1": rng.uniform(), "pass_at_64": rng.uniform(),
            }  # fmt: skip
            row.update({col: s if a == arm else np.nan for a, col in strength.items()})
            rows.append(row)
    held = [(seed, step) for seed in range(3) for step in range(1, 6)]
    logs = pd.DataFrame(
        {"arm": ppo, "seed": seed, "stage": "ppo", "step": step, "heldout/kl": step / 2,
         "heldout/gold": rng.normal(), "heldout/proxy": step / 4, Column.LENGTH_BIAS: bias}
        for seed, step in held for bias in (0.0, 0.3)
    )  # fmt: skip
    dpo_logs = pd.DataFrame(
        {"arm": dpo, "seed": seed, "stage": "dpo", "step": step, "logps/chosen": rng.normal(-step),
         "logps/rejected": rng.normal(-2 * step), "rewards/accuracies": rng.uniform()}
        for seed, step in held
    )  # fmt: skip
    logs = pd.concat([logs, dpo_logs], ignore_index=True)
    return pd.DataFrame(rows), logs, Roles(recipes, splits=TASKS["reviews"].split_specs)


def test_every_claim_is_found_by_role():
    results, logs, roles = synthetic({})
    results2, logs2, roles2 = synthetic(RENAMES)
    claims = check_claims(results, logs, roles)
    renamed = check_claims(results2, logs2, roles2)
    assert all(c.verdict != NOT_MEASURED for c in claims), [c for c in claims if c.verdict == NOT_MEASURED]
    assert [
        (c.claim, c.verdict, named_back(c.evidence, RENAMES), named_back(c.reading, RENAMES)) for c in renamed
    ] == [(c.claim, c.verdict, c.evidence, c.reading) for c in claims]
    assert "imitation" in renamed[0].evidence and "prefopt" in renamed[0].evidence


# -- the selections --------------------------------------------------------------------------------------
def test_imitation_arm_whatever_its_name():
    roles = Roles({"start": [], "zebra": ["sft"], "mixed": ["sft", "preferred_ft"], "pf": ["preferred_ft"]})
    assert roles.imitation == "zebra" and roles.base == "start" and roles.reference == "zebra"
    assert roles.imitation_control == "pf"
    assert Roles({"start": [], "rm": ["rm"]}).reference == "start"
    assert Roles({"zebra": ["sft"]}, present={"other"}).imitation is None  # no results: not selected


def test_preference_arm_by_role():
    assert Roles({"b": ["rm", "best_of_n"], "p": ["rm", "ppo"], "d": ["dpo"]}).preference == "d"
    assert (
        Roles({"b": ["rm", "best_of_n"], "mix": ["sft", "rm", "ppo"], "p": ["rm", "rloo"]}).preference == "p"
    )
    assert Roles({"b": ["rm", "best_of_n"], "mix": ["sft", "rm", "ppo"]}).preference == "mix"
    assert Roles({"b": ["sft", "rm", "best_of_n"], "o": ["ppo_gold"]}).preference == "b"
    assert (
        Roles({"base": [], "s": ["sft"], "pf": ["preferred_ft"], "rm": ["rm"], "o": ["ppo_gold"]}).preference
        is None
    )
    # ties: the shortest recipe, then suite order
    assert Roles({"long": ["sft", "dpo"], "a": ["rm", "ppo"], "b": ["rm", "rloo"]}).preference == "a"
    assert Roles({"b": ["rm", "rloo"], "a": ["rm", "ppo"]}).preference == "b"
    assert Roles({"pd": ["preferred_ft", "dpo"], "sd": ["sft", "dpo"], "d": ["dpo"]}).dpo == "d"
    assert Roles({"sd": ["sft", "dpo"], "pd": ["preferred_ft", "dpo"]}).dpo == "pd"  # no demonstrations
    assert Roles({"sp": ["sft", "rm", "ppo"], "r": ["rm", "rloo"]}).online_rl == "r"
    assert preference_rank(Roles({"x": []}).arms["x"]) is None


def test_oracle_and_reward_model_arms():
    roles = Roles({"upper": ["ppo_gold"], "scorer": ["rm"], "p": ["rm", "ppo"]})
    assert roles.oracles == ("upper",) and roles.is_oracle("upper") and not roles.is_oracle("p")
    assert roles.label("upper") == "upper (oracle bound)" and roles.label("p") == "p"
    assert roles.reward_model_only == "scorer" and roles.online_rl == "p"
    kind = roles.arms["p"]
    assert kind.comparisons and not kind.demonstrations and not kind.is_base and not kind.oracle


OLD_PREFERENCE = ("dpo", "ppo", "rloo", "sft_ppo", "sft_dpo", "rm_ppo", "best_of_n")  # the names used before


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_suites_keep_their_choices(path):
    for suite in load_suites(path)[1]:
        roles, arms = Roles.of(suite), list(suite.arms)
        assert roles.preference == next((a for a in OLD_PREFERENCE if a in arms), None)
        assert roles.imitation == ("sft" if "sft" in arms else None)
        assert roles.imitation_control == ("preferred_ft" if "preferred_ft" in arms else None)
        assert roles.dpo == ("dpo" if "dpo" in arms else None)
        assert roles.online_rl == next((a for a in ("ppo", "sft_ppo", "rm_ppo") if a in arms), None)
        assert roles.reference == next((a for a in ("sft", "base") if a in arms), None)
        assert roles.oracles == tuple(a for a in ("ppo_gold", "distill") if a in arms)  # distill: methods
        assert roles.gold_optimisers == (("ppo_gold",) if "ppo_gold" in arms else ())


# -- strength columns ------------------------------------------------------------------------------------
def test_strength_columns_by_spec_for_any_arm_name():
    roles = Roles({"zebra": ["rm", "ppo"], "other": ["dpo"], "picker": ["rm", "best_of_n"]})
    columns = [
        "grid.budget.units",
        "grid.arms.zebra.stages.ppo.kl_coef",
        "grid.arms.zebra.stages.rm.epochs",
        "grid.arms.other.stages.dpo.beta",
        "grid.stages.ppo.kl_coef",
        "grid.stages.dpo.beta",
    ]
    assert roles.strength_columns("zebra", columns) == [
        "grid.arms.zebra.stages.ppo.kl_coef",
        "grid.stages.ppo.kl_coef",
    ]
    assert roles.strength_columns("other", columns) == [
        "grid.arms.other.stages.dpo.beta",
        "grid.stages.dpo.beta",
    ]
    assert roles.strength_columns("picker", ["grid.arms.picker.stages.best_of_n.n"], stage="best_of_n") == [
        "grid.arms.picker.stages.best_of_n.n"
    ]
    assert roles.strength_columns("picker", ["grid.arms.picker.stages.best_of_n.n"], stage="rm") == []


def test_frontier_and_selection_sweep_of_an_arbitrarily_named_arm(tmp_path):
    roles = Roles({"base": [], "zebra": ["dpo"], "picker": ["rm", "best_of_n"]})
    rows = []
    for arm, col in (
        ("zebra", "grid.arms.zebra.stages.dpo.beta"),
        ("picker", "grid.arms.picker.stages.best_of_n.n"),
    ):
        for value in (1, 2, 4):
            for seed in (0, 1):
                rows.append({"arm": arm, "seed": seed, "split": "id", col: value, "kl_to_base": value / 2 + seed,
                             "gold_reward": value / 10, "proxy_reward": value / 5})  # fmt: skip
    rows.append({"arm": "base", "seed": 0, "split": "id", "kl_to_base": 0.0, "gold_reward": 0.0})
    results = pd.DataFrame(rows)
    assert frontier_points(results, roles, "zebra") == [(1.0, 0.1), (1.5, 0.2), (2.5, 0.4)]
    assert frontier_points(results, roles, "base") == []
    assert figures.frontier(results, roles, tmp_path / "frontier.png") == tmp_path / "frontier.png"
    path = figures.overoptimisation(results, pd.DataFrame(), roles, tmp_path / "over.png")
    assert path is not None and path.stat().st_size > 5000  # picker's panel, found by its role


def test_stage_objectives_come_from_the_specs():
    assert figures.objective("dpo") == SPECS["dpo"].objective
    assert figures.objective("ppo_gold") == SPECS["ppo_gold"].objective
    assert figures.objective("unknown") == ("loss", "unknown")


def test_figures_set_no_global_backend():
    code = "import sys, compare.report; assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_forgetting_figure_draws_each_strength_setting_and_the_equal_gain_panel(tmp_path, monkeypatch):
    roles = Roles({"base": [], "sft": ["sft"], "ppo": ["rm", "ppo"]})
    cols = {"sft": "grid.arms.sft.stages.sft.epochs", "ppo": "grid.arms.ppo.stages.ppo.kl_coef"}
    rows = [{"arm": "base", "seed": s, "split": sp, "gold_reward": 0.6, "forward_kl_train": 0.0}
            for s in (0, 1) for sp in ("id", "prior")]  # fmt: skip
    for arm, col in cols.items():
        for value in (1, 3, 9):
            for seed in (0, 1):
                for split, gold in (("id", 0.6 + value / 20), ("prior", 1 - value / 20)):
                    rows.append({"arm": arm, "seed": seed, "split": split, col: value, "gold_reward": gold,
                                 "forward_kl_train": value / 3})  # fmt: skip
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or path)
    assert figures.forgetting(pd.DataFrame(rows), roles, tmp_path / "f.png") == tmp_path / "f.png"
    left, right = drawn[0].axes
    lines = {line.get_label(): line for line in right.get_lines() if not line.get_label().startswith("_")}
    assert list(lines["sft (epochs)"].get_xdata()) == pytest.approx([0.65, 0.75, 1.05])  # ID gold per epochs
    assert list(lines["ppo (kl_coef)"].get_ydata()) == pytest.approx([0.95, 0.85, 0.55])  # prior per setting
    assert "KL(base ‖ policy)" in left.get_xlabel() and "ID prompts" in right.get_xlabel()


# -- splits by role: a task of the test's own, with split names the report has never seen ---------------
def test_a_new_task_s_splits_get_their_claims_and_tables_without_report_edits(tmp_path):
    splits = (
        ID_SPLIT,
        Split("far_away", SplitRole.SHIFT, "far away", "questions from another planet"),
        Split("recall", SplitRole.PRIOR, "recall", "remembering names"),
    )
    roles = Roles({"base": [], "sft": ["sft"], "ppo": ["rm", "ppo"]}, splits=splits)
    kl_coef, epochs = "grid.arms.ppo.stages.ppo.kl_coef", "grid.arms.sft.stages.sft.epochs"
    rows = []
    for seed, jitter in enumerate((-0.02, -0.01, 0.0, 0.01, 0.02)):
        for split, gold in (("id", 0.6), ("far_away", 0.5), ("recall", 0.9)):
            rows.append({"arm": "base", "seed": seed, "split": split, "gold_reward": gold, "kl_to_base": 0.0})
        for setting, g, kept in ((1, 0.4, 0.9), (4, 0.8, 0.5)):
            for arm, col, far, keep in (
                ("sft", epochs, g - 0.4 - jitter, kept),
                ("ppo", kl_coef, g - 0.1, kept + 0.2 + jitter),
            ):
                rows += [
                    {"arm": arm, "seed": seed, "split": "id", "gold_reward": g, "kl_to_base": 1.0, col: setting},
                    {"arm": arm, "seed": seed, "split": "far_away", "gold_reward": far, "kl_to_base": 1.0, col: setting},
                    {"arm": arm, "seed": seed, "split": "recall", "gold_reward": keep, "kl_to_base": 1.0, col: setting},
                ]  # fmt: skip
    results = pd.DataFrame(rows)
    results["forward_kl_train"] = 1.0
    claims = {c.key: c for c in check_claims(results, pd.DataFrame(), roles)}
    shift = claims["shift:far_away[ppo]"]  # its own shift, with its own description
    assert "under questions from another planet (smaller ID − far away gap)" in shift.claim
    assert shift.verdict == "supported"  # PPO loses 0.1 there, SFT 0.4
    assert claims["forgetting"].verdict == "supported" and "remembering names" in claims["forgetting"].reading
    assert not any(k.startswith(("shift:ood_opener", "shift:ood_format")) for k in claims)
    from compare.report.tables import splits_table

    table = splits_table(results, roles)
    assert table.splitlines()[0].startswith("| arm | gold ID | gold far away | gold recall |")
    assert figures.forgetting(results, roles, tmp_path / "f.png") is not None  # the prior ability, by role


def test_a_suite_of_a_task_invented_here_gets_that_task_s_splits(monkeypatch):
    """What the test above hands Roles by hand, `Roles.of` reads off the suite's task class."""
    from compare.suite.schema import Suite
    from compare.tasks.reviews import Reviews

    class Planets(Reviews):  # a task of the test's own, with splits named as no other task names them
        name = "planets"
        split_specs = (
            ID_SPLIT,
            Split("far_away", SplitRole.SHIFT, "far away", "questions from another planet"),
            Split("recall", SplitRole.PRIOR, "recall", "remembering names"),
        )
        gold_ceiling, shift_suite = 2.0, "planets.yaml"

    monkeypatch.setitem(TASKS, "planets", Planets)
    suite = Suite.model_validate(
        {"name": "p", "task": {"name": "planets"}, "arms": {"sft": {"recipe": ["sft"]}}}
    )
    roles = Roles.of(suite)
    assert (
        roles.shifts == ["far_away"]
        and roles.shift_description("far_away") == "questions from another planet"
    )
    assert roles.prior.name == "recall" and roles.split_label("far_away") == "far away"
    assert (roles.gold_ceiling, roles.shift_suite) == (2.0, "planets.yaml")


def test_every_task_declares_each_split_it_evaluates():
    for name, task in TASKS.items():
        declared = {s.name for s in task.split_specs}
        options = {"rule_variants": True, "templates": 4} if name == "arithmetic" else {}
        assert set(task.splits_with(options)) <= declared, name
        assert [s.role for s in task.split_specs].count(SplitRole.IN_DISTRIBUTION) == 1
