"""The lab's notebooks (notebooks/sft_vs_rlhf.ipynb for students, sft_vs_rlhf_teacher.ipynb with the
answers) run top to bottom at micro size, so they cannot rot; their single source is tested in
tests/test_teaching.py."""

import json
import math
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat, nbclient and ipykernel")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbformat, nbclient and ipykernel")
pytest.importorskip("ipykernel", reason="the notebook test needs nbformat, nbclient and ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
VERSIONS = {"student": NOTEBOOKS / "sft_vs_rlhf.ipynb", "teacher": NOTEBOOKS / "sft_vs_rlhf_teacher.ipynb"}
KERNEL = "sft-vs-rlhf-test"
ARMS = {"base", "sft", "dpo", "rm", "ppo", "rloo", "grpo", "best_of_n"}
CHECKS = ("bradley_terry_loss", "gae", "dpo_loss", "best_of_n")


def this_python_kernel(jupyter_path: Path) -> str:
    """A kernelspec that starts this interpreter, so the notebook imports the package under test.

    The `python3` kernelspec a machine has may start another Python (its argv is a bare `python`, or a
    user's own kernel); one written into a private JUPYTER_PATH cannot.
    """
    spec = jupyter_path / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    return KERNEL


def outputs(nb, key: str) -> list[str]:
    """Every output's `key` (a mime type, or 'text' for streams) of every code cell, in order."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            value = out.get("text") if key == "text" else out.get("data", {}).get(key)
            if value:
                found.append(value)
    return found


@pytest.mark.parametrize("version", VERSIONS)
def test_committed_notebook_is_valid_and_has_no_outputs(version):
    nb = nbformat.read(VERSIONS[version], as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def with_settings(nb, cache: Path):
    """The first code cell holds the settings: micro size, and one stage cache for both versions."""
    settings = nb.cells[next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")]
    for default, test in [
        ('SIZE = "laptop"', 'SIZE = "micro"'),
        ('CACHE = WORK / "cache"', f"CACHE = Path({str(cache)!r})"),
    ]:
        assert settings.source.count(default) == 1, f"the settings cell no longer sets {default}"
        settings.source = settings.source.replace(default, test)
    assert "JOBS = 1 " in settings.source  # one job, no Ray, by default
    return nb


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Both versions run at micro size, each in a folder of its own, sharing one stage cache."""
    root = tmp_path_factory.mktemp("notebooks")
    mp = pytest.MonkeyPatch()
    kernel = this_python_kernel(root / "jupyter")
    mp.setenv("JUPYTER_PATH", str(root / "jupyter"))
    mp.setenv("JUPYTER_RUNTIME_DIR", str(root / "runtime"))
    mp.setenv("IPYTHONDIR", str(root / "ipython"))
    runs = {}
    try:
        for version, path in VERSIONS.items():
            cwd = root / version
            cwd.mkdir()
            nb = with_settings(nbformat.read(path, as_version=4), root / "cache")
            client = nbclient.NotebookClient(
                nb, kernel_name=kernel, timeout=600, resources={"metadata": {"path": str(cwd)}}
            )
            client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
            runs[version] = (nb, cwd)
    finally:
        mp.undo()
    return runs


@pytest.mark.parametrize("version", VERSIONS)
def test_notebook_runs_at_micro_size(executed, version):
    nb, cwd = executed[version]
    printed = "".join(outputs(nb, "text"))

    # the hand-computed numbers the markdown asks the learner to check
    assert "helpful    gold +1.750" in printed
    assert "mean loss 0.6602" in printed  # Bradley–Terry: mean of log(1 + e^-1), log(1 + e^0.5), log 2
    a2 = 1.55  # score 2 + 0.1 * 0.5 (negative KL) - value 0.5
    a1 = 0.95 * a2
    a0 = -0.02 + 0.95 * a1
    assert f"advantages {[round(a, 4) for a in (a0, a1, a2)]}" in printed
    clipped = (-1.2 * a0 - a1 - math.exp(-0.1) * a2) / 3
    assert f"clipped policy loss {clipped:.4f}; clipped share 0.333" in printed
    assert f"DPO loss: {math.log1p(math.exp(-0.4)):.4f}" in printed
    before = float(re.search(r"SFT loss \(NLL per token\) ([\d.]+)", printed).group(1))
    after = float(re.search(r"SFT loss after 30 steps: ([\d.]+)", printed).group(1))
    assert after < before
    assert "RLOO advantages  [0.8, -0.2667, 0.2667, -0.8, 0.0, 0.0, 0.0, 0.0]" in printed

    # the exercises: solved and checked in the teacher's version, waiting for the student in theirs
    for check in CHECKS:
        done = f"{check}: agrees with" in printed
        waiting = f"{check}: not written yet" in printed
        assert (done, waiting) == ((True, False) if version == "teacher" else (False, True)), check

    # the suites ran into the folder next to the notebook that the settings name, and nowhere else
    assert [p.name for p in cwd.iterdir()] == ["sft_vs_rlhf_lab"]
    work = cwd / "sft_vs_rlhf_lab"
    results = pd.read_csv(work / "report" / "results.csv")
    biased = pd.read_csv(work / "report_length_bias" / "results.csv")
    assert set(results["arm"]) == ARMS and set(biased["arm"]) == ARMS
    assert "length_bias: 0.6" in (work / "report_length_bias" / "suite.yaml").read_text()
    assert "0.15 (default)" in printed and "rm_accuracy" in printed  # the two labellers' table
    betas = pd.read_csv(work / "report_beta" / "results.csv").query("arm == 'dpo'")
    assert sorted(betas["grid.arms.dpo.stages.dpo.beta"].unique()) == [0.03, 0.1, 0.3, 1.0]

    # inline: every arm's completion for the same prompts, the report's figures, its tables
    markdown = "\n".join(outputs(nb, "text/markdown"))
    tables = markdown.count("| arm | completion | gold | proxy |")
    assert tables >= 1 and all(markdown.count(f"\n| {arm} | ") >= tables for arm in ARMS)
    figures = ["gold_by_arm", "gold_vs_kl", "training"] + ["overoptimisation"] * (
        (work / "report" / "plots" / "overoptimisation.png").exists()
    )
    assert len(outputs(nb, "image/png")) == len(figures)  # each figure the report drew, shown inline
    assert "sft_vs_rlhf_lab/report/plots/gold_vs_kl.png" in markdown  # the notebook names the files
    assert "## Claims checked" in markdown

    # the teacher's cells that read the answers from this run
    answered = ("below the base model's on", "KL falls at every larger beta:")
    assert all((line in printed) == (version == "teacher") for line in answered)
