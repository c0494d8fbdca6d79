"""The teaching notebook (notebooks/sft_vs_rlhf.ipynb) runs top to bottom at micro size, so it cannot rot."""

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

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "sft_vs_rlhf.ipynb"
KERNEL = "sft-vs-rlhf-test"


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


def stdout_of(nb) -> str:
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "stream" and out.name == "stdout"
    )


def test_committed_notebook_is_valid_and_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_notebook_runs_at_micro_size(tmp_path, monkeypatch):
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    kernel = this_python_kernel(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("TMPDIR", str(tmp))  # the notebook's default work folder is a new temporary one
    monkeypatch.setenv("SFT_VS_RLHF_NOTEBOOK_SIZE", "micro")
    monkeypatch.delenv("SFT_VS_RLHF_NOTEBOOK_DIR", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name=kernel, timeout=300, resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    printed = stdout_of(nb)

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

    # the suite ran into the temporary work folder, twice, and nothing was written into the working folder
    assert list(cwd.iterdir()) == []
    (work,) = tmp.glob("sft-vs-rlhf-notebook-*")
    assert f"report: {work / 'report' / 'report.md'}" in printed
    arms = {"base", "sft", "dpo", "rm", "ppo"}
    results = pd.read_csv(work / "report" / "results.csv")
    biased = pd.read_csv(work / "report_length_bias" / "results.csv")
    assert set(results["arm"]) == arms and set(biased["arm"]) == arms
    assert "length_bias: 0.6" in (work / "report_length_bias" / "suite.yaml").read_text()
    assert "0.15 (default)" in printed and "rm_accuracy" in printed  # the two labellers' table
    assert "## Claims checked" in "".join(
        out.get("data", {}).get("text/markdown", "") for cell in nb.cells for out in cell.get("outputs", [])
    )
