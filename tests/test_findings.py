"""The findings report: seeds in halves, replication, the corrections (on hand-made results), and a micro
findings collection run end to end through the benchmark script that times it."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from compare.cli import main
from compare.report.findings import corrected, halves, suite_findings
from compare.report.roles import Column, Roles
from compare.report.verdicts import CONTRADICTED, INCONCLUSIVE, SUPPORTED

ROOT = Path(__file__).resolve().parents[1]
ROLES = Roles({"base": [], "sft": ["sft"]})
Q, C = Column.DEMONSTRATOR_QUALITY, Column.COST_RATIO


def test_halves_split_sorted_seeds():
    assert halves([9, 0, 3, 1, 2, 5, 4, 6, 7, 8]) == ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
    assert halves([4, 2, 0]) == ((0,), (2, 4))  # odd: the confirmation half is the larger


def curated(effect_first: float, effect_second: float) -> pd.DataFrame:
    """The curated-demonstrations claim's grid over 10 seeds: curated minus mediocre is `effect_first` on
    seeds 0-4 and `effect_second` on 5-9, plus a small jitter."""
    rows = []
    for seed in range(10):
        effect = effect_first if seed < 5 else effect_second
        jitter = (seed % 5 - 2) / 100
        for quality, cost, gold in (
            (0.9, 8, 0.6 + effect + jitter),
            (0.3, 2, 0.6),
            (0.9, 2, 0.0),
            (0.3, 8, 0.0),
        ):
            rows.append({"arm": "sft", "seed": seed, "split": "id", "gold_reward": gold, "kl_to_base": 0.0,
                         "n_demonstrations": 256 // cost, Q: quality, C: cost})  # fmt: skip
    return pd.DataFrame(rows)


def one(results) -> object:
    found = corrected(suite_findings("curated", results, pd.DataFrame(), ROLES))
    assert [f.whole.key for f in found] == ["curated"]  # only the claims whose home is this suite
    return found[0]


def test_a_claim_decided_on_both_halves_replicates():
    f = one(curated(0.2, 0.2))
    assert f.discovery_seeds == (0, 1, 2, 3, 4) and f.confirmation_seeds == (5, 6, 7, 8, 9)
    assert f.discovery.verdict == SUPPORTED and f.confirmed == SUPPORTED and f.replicated
    assert f.corrected == SUPPORTED


def test_a_claim_the_confirmation_half_does_not_decide_is_not_replicated():
    f = one(curated(0.2, 0.0))
    assert f.discovery.verdict == SUPPORTED and f.confirmed == INCONCLUSIVE and not f.replicated
    flipped = one(curated(0.2, -0.2))
    assert flipped.confirmation.verdict == CONTRADICTED and not flipped.replicated
    never = one(curated(0.0, 0.0))
    assert not never.discovery.decided and not never.replicated


def test_the_confirmation_half_is_corrected_over_the_claims_carried_to_it():
    base = one(curated(0.2, 0.2))
    weak = base.confirmation.__class__(**{**base.confirmation.__dict__, "p_value": 0.03})
    others = [base.__class__(**{**base.__dict__, "confirmation": weak}) for _ in range(3)]
    # three claims carried, each confirmed at p = 0.03: Holm multiplies the smallest by 3 -> 0.09
    assert all(f.confirmed == INCONCLUSIVE for f in corrected(others))
    assert corrected(others[:1])[0].confirmed == SUPPORTED  # alone, 0.03 < 0.05


MICRO_SUITE = """
name: curated
description: micro curated suite for the findings test
task: {{train_prompts: 32, eval_prompts: 2}}
base:
  tiny: {{n_layer: 1, n_head: 2, n_embd: 16, corpus_size: 300, steps: 20, batch_size: 16}}
budget: {{units: 16}}
stages:
  sft: {{epochs: 1, batch_size: 8}}
arms:
  base: {{recipe: []}}
  sft: {{recipe: [sft]}}
grid:
  seed: {seeds}
  task.demonstrator_quality: [0.3, 0.9]
  budget.cost.demonstration: [2, 8]
eval: {{samples_per_prompt: 2, max_new_tokens: 8, examples: 1}}
"""


def test_a_findings_collection_needs_two_halves_of_five_seeds(tmp_path):
    (tmp_path / "curated.yaml").write_text(textwrap.dedent(MICRO_SUITE.format(seeds=list(range(6)))))
    (tmp_path / "f.yaml").write_text("name: f\nfindings: true\nsuites: [curated.yaml]\n")
    assert main(["plan", str(tmp_path / "f.yaml"), "--cache-dir", str(tmp_path / "cache")]) == 2


def test_micro_findings_collection_through_the_benchmark(tmp_path):
    """`benchmarks/findings_time.py` runs a findings collection cold and prints its table; the collection's
    folder holds report.md and report.html with the claim's row on both halves."""
    (tmp_path / "curated.yaml").write_text(textwrap.dedent(MICRO_SUITE.format(seeds=list(range(10)))))
    (tmp_path / "f.yaml").write_text(
        "name: f\ndescription: '# micro findings <b>x</b>'\nfindings: true\nsuites: [curated.yaml]\n"
    )
    out, cache = tmp_path / "out", tmp_path / "cache"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "findings_time.py"), str(tmp_path / "f.yaml"),
         "--cache-dir", str(cache), "--out", str(out), "--jobs", "1"],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert re.search(r"^findings cold_s=[\d.]+ stages=\d+ stage_s=[\d.]+ ok=(True|False)$", done.stdout, re.M)
    assert "stage sft" in done.stdout and "suite curated" in done.stdout
    text = (out / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| A few curated demonstrations"))
    assert "[curated](curated/report.md) (0–4 / 5–9)" in row
    assert re.search(r"\| \*\*[▲▼○] \w+\*\* \| \*\*[▲▼○] \w+\*\* \| (\*\*yes\*\*|no) \|", row)
    assert "## Each suite's key figures" in text and (out / "curated" / "report.md").is_file()
    page = (out / "report.html").read_text()
    assert "<h2>Every claim, on both halves</h2>" in page and "http" not in page.split("<body>")[1][:2000]
    assert '<a href="curated/report.md">curated</a>' in page  # the suite's own report, beside it
    index = (out / "index.md").read_text()
    assert "[report.md](report.md)" in index
    for page in (index, text):  # a description never becomes a heading or HTML
        assert sum(line.startswith("# ") for line in page.splitlines()) == 1 and "\\# micro findings" in page
    assert "<b>x</b>" not in (out / "report.html").read_text()
    # a second benchmark run refuses the warm cache: it would not be a cold run
    again = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "findings_time.py"), str(tmp_path / "f.yaml"),
         "--cache-dir", str(cache), "--out", str(out)], capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert again.returncode != 0 and "not empty" in again.stderr


@pytest.mark.parametrize("name", ["findings.yaml"])
def test_the_shipped_findings_collection_plans(name, tmp_path):
    assert main(["plan", str(ROOT / "experiments" / name), "--cache-dir", str(tmp_path / "cache")]) == 0
