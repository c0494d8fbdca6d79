"""A micro suite through the command line: report, results, cache hits, resuming after an interruption."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from compare.cache import MARKER
from compare.cli import main
from compare.report.files import read_saved
from compare.tasks.reviews import Reviews

MICRO = """
name: micro
description: micro suite for the tests
task: {train_prompts: 64, eval_prompts: 4}
base:
  tiny: {n_layer: 1, n_head: 2, n_embd: 32, corpus_size: 1000, steps: 60, batch_size: 32}
budget: {units: 48, cost: {demonstration: 4, comparison: 1}}
stages:
  sft: {epochs: 1, batch_size: 8}
  preferred_ft: {epochs: 1, batch_size: 8}
  rm: {epochs: 1, batch_size: 8}
  dpo: {epochs: 1, batch_size: 8}
arms:
  base: {recipe: []}
  sft: {recipe: [sft]}
  preferred_ft: {recipe: [preferred_ft]}
  dpo: {recipe: [dpo]}
  rm: {recipe: [rm]}
grid: {seed: [0, 1]}
eval: {samples_per_prompt: 2, max_new_tokens: 16}
"""

REQUIRED = [
    "arm",
    "seed",
    "budget",
    "split",
    "gold_reward",
    "kl_to_base",
    "proxy_reward",
    "distinct_2",
    "mean_length",
]


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    suite = root / "micro.yaml"
    suite.write_text(textwrap.dedent(MICRO))
    cache, out = root / "cache", root / "report"
    argv = ["run", str(suite), "--cache-dir", str(cache), "--out", str(out)]
    assert main(argv) == 0
    return suite, cache, out, argv


def test_results_and_report(micro_run):
    _, _, out, _ = micro_run
    results = pd.read_csv(out / "results.csv")
    assert set(REQUIRED) <= set(results.columns)
    assert set(results["arm"]) == {"base", "sft", "preferred_ft", "dpo", "rm"}
    splits = Reviews.eval_splits  # ID, unseen domains, an opener that pulls the other way, a format, counting
    assert set(results["split"]) == set(splits) and set(results["seed"]) == {0, 1}
    assert len(results) == 5 * 2 * len(splits)
    counts = results.groupby("arm")[["n_demonstrations", "n_comparisons"]].first()
    assert tuple(counts.loc["sft"]) == (12, 0) and tuple(counts.loc["dpo"]) == (0, 48)
    assert results.loc[results["arm"] == "rm", "proxy_reward"].notna().all()
    assert results.loc[results["arm"] == "sft", "proxy_reward"].isna().all()
    samples = pd.read_csv(out / "samples.csv")
    assert len(samples) == 5 * 2 * len(splits) * 4 * 2  # arms x seeds x splits x prompts x samples
    assert results["forward_kl_train"].notna().all()
    assert (results.loc[results["arm"] == "base", "forward_kl_train"] == 0).all()
    text = (out / "report.md").read_text()
    for needle in ("## Setup", "| **sft** |", "gold reward ID", "## Example generations", "demonstrations"):
        assert needle in text
    for png in ("gold_by_arm.png", "gold_vs_kl.png", "training.png"):
        assert (out / "plots" / png).stat().st_size > 5000
        assert f"plots/{png}" in text
    page = (out / "report.html").read_text()  # `run` writes the page beside report.md, and lists it
    assert 'id="t-results"' in page and "| **sft** |" not in page and "sft" in page
    assert "report.html" in json.loads((out / ".sft-vs-rlhf-report").read_text())["files"]


def test_compute_per_run_and_stage(micro_run):
    _, _, out, _ = micro_run
    compute = pd.read_csv(out / "compute.csv")
    results = pd.read_csv(out / "results.csv")
    first = compute[compute["seed"] == 0].set_index(["arm", "stage"])
    # the base model: shared by all 10 runs, trained only; SFT trains on its demonstrations; DPO (1 epoch)
    # trains on both sides of its comparisons and its reference reads them once more; the reward model
    # trains on the same comparisons, which DPO, the RM and preferred-FT share
    assert (
        first.loc[("sft", "base"), "shared_by_runs"] == 10
        and first.loc[("sft", "base"), "tokens_trained"] > 0
    )
    assert first.loc[("sft", "sft"), "tokens_forwarded"] == 0 < first.loc[("sft", "sft"), "tokens_trained"]
    dpo = first.loc[("dpo", "dpo")]
    assert dpo["tokens_trained"] == dpo["tokens_forwarded"] == first.loc[("rm", "rm"), "tokens_trained"]
    assert first.loc[("dpo", "comparisons"), "shared_by_runs"] == 3
    n = first.loc[("dpo", "dpo"), "parameters"]
    assert dpo["flops"] == pytest.approx(8 * n * dpo["tokens_trained"])
    # results: each run's compute after the base model (which every arm shares)
    id_rows = results[(results["split"] == "id") & (results["seed"] == 0)].set_index("arm")
    assert id_rows.loc["base", "compute_flops"] == 0
    after_base = first.loc["dpo"].drop(index="base")
    assert id_rows.loc["dpo", "compute_flops"] == pytest.approx(after_base["flops"].sum())
    assert "compute_seconds" not in results  # wall seconds: in compute.csv, added back by the report
    seconds = read_saved(out)[1].query("split == 'id' and seed == 0").set_index("arm")["compute_seconds"]
    assert seconds["dpo"] == pytest.approx(after_base["seconds"].sum()) and seconds["dpo"] > 0
    assert re.search(r"\| training [kMGTPE]?FLOP \| training s \|", (out / "report.md").read_text())
    assert (out / "plots" / "gold_vs_compute.png").stat().st_size > 5000


def test_rerun_hits_the_cache(micro_run, capsys):
    _, cache, out, argv = micro_run
    before = sorted(os.listdir(cache))
    capsys.readouterr()
    assert main(argv) == 0
    assert "all stages cached" in capsys.readouterr().out
    assert sorted(os.listdir(cache)) == before


def test_interrupted_stage_is_redone(micro_run, capsys):
    suite, cache, out, argv = micro_run
    evals = sorted(p for p in cache.iterdir() if p.name.startswith("eval-"))
    victim = evals[0]
    (victim / MARKER).unlink()  # as if the process died before publishing
    (cache / ".tmp-eval-00000000deadbeef-999999").mkdir()  # a dead process's half-written folder
    capsys.readouterr()
    assert main(argv) == 0
    assert "1 stages run" in capsys.readouterr().out
    assert (victim / MARKER).exists() and not (cache / ".tmp-eval-00000000deadbeef-999999").exists()


def test_report_rebuilds_from_saved_results(micro_run):
    _, _, out, _ = micro_run
    (out / "report.md").unlink()
    (out / "plots" / "gold_vs_kl.png").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").exists() and (out / "plots" / "gold_vs_kl.png").exists()


def test_plan_lists_cached_stages(micro_run, capsys):
    suite, cache, _, _ = micro_run
    capsys.readouterr()
    assert main(["plan", str(suite), "--cache-dir", str(cache)]) == 0
    printed = capsys.readouterr().out
    assert "10 runs" in printed and "0 of" in printed and "[to run]" not in printed


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "compare", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "run" in done.stdout and "report" in done.stdout


SWEEPS = """
name: micro_sweeps
description: micro versions of every sweep of the comparison suites
include: micro.yaml
arms:
  base: {recipe: []}
  sft: {recipe: [sft]}
  dpo: {recipe: [dpo]}
  ppo: {recipe: [rm, ppo]}
  best_of_n: {recipe: [rm, best_of_n]}
stages:
  ppo: {episodes: 32, rollout_batch_size: 16, max_new_tokens: 12, gold_eval_every: 1}
grid:
  seed: [0, 1]
  budget.units: [24, 48]
  budget.cost.demonstration: [2, 4]
  task.annotator.flip_rate: [0.0, 0.3]
  task.demonstrator_quality: [0.3, 0.9]
  arms.dpo.stages.dpo.beta: [0.1, 1.0]
  arms.ppo.stages.ppo.kl_coef: [0.05, 0.5]
  arms.best_of_n.stages.best_of_n.n: [1, 4]
"""


def test_every_sweep_end_to_end(tmp_path):
    (tmp_path / "micro.yaml").write_text(textwrap.dedent(MICRO))
    suite = tmp_path / "sweeps.yaml"
    suite.write_text(textwrap.dedent(SWEEPS))
    out = tmp_path / "report"
    assert main(["run", str(suite), "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    results = pd.read_csv(out / "results.csv")
    for col in ("grid.budget.units", "grid.task.annotator.flip_rate", "grid.arms.dpo.stages.dpo.beta"):
        assert results[col].nunique() == 2
    text = (out / "report.md").read_text()
    for png in (
        "learning_curves",
        "cost_ratio",
        "noise",
        "demonstrator_quality",
        "frontier",
        "overoptimisation",
    ):
        assert f"plots/{png}.png" in text and (out / "plots" / f"{png}.png").exists()
    claims = text[text.index("## Claims checked") :]
    rows = [line for line in claims.splitlines() if line.startswith("| ") and "| **" in line]
    assert len(rows) >= 16  # every claim, some for each kind of RLHF
    verdict = re.compile(
        r"\| \*\*[▲▼○–] (supported|contradicted|inconclusive|not measured)\*\* \| "
        r"\*\*[▲▼○–] (supported|contradicted|inconclusive|not measured)\*\* \|"
    )
    assert all(verdict.search(r) for r in rows)  # a verdict before and after the correction
    # the sweeps these claims need are present, so none of them says "not measured"
    for claim in ("SFT needs more labelled data", "tolerates noisy feedback", "frontier dominates"):
        row = next(line for line in claims.splitlines() if claim in line)
        assert "not measured" not in row
    assert "reached 90% of its best gain" in text
    # held-out samples along PPO's 2 rollout batches, and the view's paths along training and each sweep
    snapshots = pd.read_csv(out / "snapshots.csv")
    assert set(snapshots["arm"]) == {"ppo"} and sorted(snapshots["step"].unique()) == [0, 1, 2]
    page = (out / "report.html").read_text()
    view = json.loads(re.search(r'id="report-overopt">(.*?)</script>', page)[1])
    titles = [p["title"] for p in view["tracks"]]
    assert any(t.startswith("ppo ") and t.endswith("along training") for t in titles)
    for arm in ("dpo", "ppo", "best_of_n"):
        assert any(t.startswith(arm + " ") and "along training" not in t for t in titles), arm


def test_report_marks_significance(micro_run):
    _, _, out, _ = micro_run
    text = (out / "report.md").read_text()
    section = text[text.index("### Differences from sft") :]
    cell = r"-?\d\.\d{3} ± \d\.\d{3} \((\*\*significant\*\*|not significant), p = [\d.e-]+\)"
    assert re.search(rf"\| dpo − sft \| {cell} \| {cell} \|", section)  # each split marked, with its p
    assert "## Key results" in text and text.index("## Key results") < text.index("## Setup")


def test_local_model_folder_as_base(tmp_path, tiny_policy_dir):
    """Any causal LM folder that transformers loads can be the base model of every arm."""
    suite = tmp_path / "local.yaml"
    text = textwrap.dedent(MICRO).replace(
        "base:\n  tiny: {n_layer: 1, n_head: 2, n_embd: 32, corpus_size: 1000, steps: 60, batch_size: 32}",
        f"base: {{model: {tiny_policy_dir}}}",
    )
    suite.write_text(text.replace("grid: {seed: [0, 1]}", "grid: {seed: [0]}"))
    out = tmp_path / "report"
    assert main(["run", str(suite), "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    results = pd.read_csv(out / "results.csv")
    assert set(results["arm"]) == {"base", "sft", "preferred_ft", "dpo", "rm"}
    assert results.loc[results["arm"] == "sft", "kl_to_base"].gt(0).all()  # trained away from that base
    assert str(tiny_policy_dir) in (out / "report.md").read_text()
