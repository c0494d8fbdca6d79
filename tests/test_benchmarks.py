"""Every script in benchmarks/ runs at micro size and prints its last line, so none can rot unnoticed.

The numbers mean nothing at this size (and no test asserts a time); what is checked is that each script
runs end to end against the current code and prints the line its results are read from.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import SMALL_SUITE

ROOT = Path(__file__).resolve().parents[1]
MICRO = SMALL_SUITE


def script(name: str, *args: str, timeout: int = 600) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def micro_suite(tmp_path: Path) -> Path:
    path = tmp_path / "micro.yaml"
    path.write_text(textwrap.dedent(MICRO))
    return path


def test_quick_suite_benchmark(tmp_path):
    out = script("quick_suite.py", str(micro_suite(tmp_path)), "--jobs", "1", "--profile")
    assert re.search(r"^quick_suite cold_s=[\d.]+ warm_s=[\d.]+ cold_ok=\w+ warm_ok=\w+$", out, re.M)
    assert "stage base" in out and "stage eval" in out  # the per-kind table
    assert "cumulative" in out and "compare/cli.py" in out  # the warm run's profile


def test_parallel_benchmark(tmp_path):
    out = script("parallel.py", str(micro_suite(tmp_path)), "--jobs", "2")
    line = out.strip().splitlines()[-1]
    assert re.fullmatch(r"parallel suite=micro jobs=2 one_job_s=[\d.]+ n_jobs_s=[\d.]+ speedup=[\d.]+ "
                        r"identical=True", line), line  # fmt: skip


def test_ppo_vs_trl_benchmark(tmp_path):
    """Our PPO and TRL 1.12.0's (installed into the work folder: one wheel, no dependencies)."""
    out = script("ppo_vs_trl.py", "--micro", "--work", str(tmp_path / "work"))
    line = out.strip().splitlines()[-1]
    assert re.fullmatch(
        r"ppo_vs_trl speed_ratio=[\d.]+ speed_ratio_no_gc=[\d.]+ ours_gain=\S+ trl_gain=\S+", line
    )
    for trainer in ("ours", "trl", "trl_no_gc"):
        assert re.search(rf"^{trainer} +64 ", out, re.M), out


def test_gpu_stages_benchmark_on_the_cpu(tmp_path):
    """The per-stage table of gpu.sh, on the CPU at micro size (a made-up peak: only that it runs)."""
    table = tmp_path / "stages.md"
    out = script("gpu_stages.py", str(micro_suite(tmp_path)), "--peak-tflops", "1", "--markdown", str(table))
    assert re.search(r"^gpu_stages suite=micro seconds=[\d.]+ tokens_per_s=\d+ mfu_train=[\d.]+$", out, re.M)
    rows = {
        line.split("|")[1].strip(): line for line in table.read_text().splitlines() if line.startswith("| ")
    }
    assert {"base", "sft", "dpo", "eval"} <= set(rows)
    assert rows["sft"].rstrip(" |").endswith("%") and not rows["eval"].rstrip().endswith("%|")


def test_gpu_script_dry_run():
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "benchmarks/quick_suite.py experiments/quick.yaml" in done.stdout
    assert "benchmarks/gpu_stages.py experiments/quick.yaml" in done.stdout


def test_bf16_cpu_benchmark(tiny_policy_dir):
    out = script(
        "bf16_cpu.py", "--model", str(tiny_policy_dir), "--batch", "2", "--tokens", "8", "--repeats", "1"
    )
    assert re.search(r"^bf16_cpu fp32_s=[\d.]+ bf16_s=[\d.]+ speedup=[\d.]+$", out, re.M)
    assert "| bfloat16 autocast |" in out


def test_memory_benchmark(tiny_policy_dir):
    args = (
        "--model",
        str(tiny_policy_dir),
        "--scale",
        "0.1",
        "--stages",
        "sft,ppo",
        "--configs",
        "before,both",
    )
    out = script("memory.py", *args)
    assert "| sft | before |" in out and "| ppo | both |" in out
    assert re.search(r"^memory stages=2 peak_before_mb=\d+ peak_after_mb=\d+$", out, re.M)
    table = script("memory.py", "--estimates")  # the table in docs/own_model.md, which must stay true
    assert "| Llama-2-7B | ppo |" in table
    docs = (ROOT / "docs" / "own_model.md").read_text()
    assert all(line in docs for line in table.strip().splitlines())
