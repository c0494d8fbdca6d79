"""Per-stage seconds, tokens per second and model FLOPs utilisation of one suite, cold, in this process.

    python benchmarks/gpu_stages.py SUITE.yaml [--peak-tflops P] [--markdown FILE] [--set KEY=VALUE ...]

Runs the suite from an empty cache with `--jobs 1` (stages one after another, so each one's seconds are
its own), counting every forward pass of a model as it runs: tokens = the non-pad tokens it was given
(a cached generation step counts its new tokens only), FLOPs = 2 x parameters x tokens without
gradients, 6 x parameters x tokens with them (forward + backward; the usual estimate, attention not
counted). MFU = FLOPs / (seconds x peak FLOP/s): for training stages, the share of the accelerator's
peak that the model's arithmetic used. The peak is looked up from the GPU's name (dense bf16) or given
with `--peak-tflops`; on the CPU give it (the numbers are then only a check that this script runs).
On CUDA the harness trains and samples in bf16 (`compare.stages.common.trainer_args`, PPO's
accelerator). `benchmarks/gpu.sh` runs it for the quick and SmolLM2 suites.

Prints a table per stage kind and a last line `gpu_stages suite=S seconds=T tokens_per_s=X mfu_train=M`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

# dense bf16 tensor-core peaks (TFLOP/s), by a substring of torch.cuda.get_device_name()
PEAK_BF16 = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


class Counter:
    """Tokens and FLOPs of the outermost model forward passes (a model inside another is not counted twice)."""

    def __init__(self):
        self.depth = 0
        self.reset()

    def reset(self):
        self.tokens = self.train_tokens = 0
        self.flops = 0.0

    def pre(self, module, args, kwargs):
        from transformers import PreTrainedModel

        self.depth += 1
        if self.depth != 1 or not isinstance(module, PreTrainedModel):
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if ids is None or not hasattr(ids, "numel"):
            return
        tokens = int(mask[..., -ids.shape[-1] :].sum()) if mask is not None else ids.numel()
        params = getattr(module, "_bench_params", None)
        if params is None:
            params = module._bench_params = sum(p.numel() for p in module.parameters())
        grad = torch.is_grad_enabled()
        self.tokens += tokens
        self.train_tokens += tokens if grad else 0
        self.flops += (6 if grad else 2) * params * tokens

    def post(self, module, args, kwargs, output):
        self.depth -= 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suite")
    parser.add_argument("--peak-tflops", type=float, help="the accelerator's peak (default: from its name)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="suite override")
    args = parser.parse_args()

    from compare import stage_run as runner  # where one stage is called (`_call`)
    from compare.cli import main as cli

    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name() if cuda else "CPU"
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16.items() if k in name), None)
    counter = Counter()
    rows: list[dict] = []
    real_call = runner._call

    def counted(spec, params, out, inputs, ctx):
        from transformers import PreTrainedModel

        own = "__call__" in PreTrainedModel.__dict__
        original = PreTrainedModel.__call__

        def call(module, *a, **k):  # every model's forward, with the depth of models inside models
            counter.pre(module, a, k)
            try:
                return original(module, *a, **k)
            finally:
                counter.post(module, a, k, None)

        counter.reset()
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        PreTrainedModel.__call__ = call
        try:
            real_call(spec, params, out, inputs, ctx)
        finally:
            if own:
                PreTrainedModel.__call__ = original
            else:
                del PreTrainedModel.__call__
            if cuda:
                torch.cuda.synchronize()
        rows.append(
            {
                "kind": spec.kind,
                "seconds": time.perf_counter() - start,
                "tokens": counter.tokens,
                "train_tokens": counter.train_tokens,
                "flops": counter.flops,
            }
        )

    runner._call = counted
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["run", args.suite, "--cache-dir", f"{tmp}/cache", "--out", f"{tmp}/report", "--jobs", "1"]
        for override in args.overrides:
            argv += ["--set", override]
        start = time.perf_counter()
        code = cli(argv)
        total = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"the suite exited with {code}")

    kinds: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        kinds[row["kind"]].append(row)
    lines = [
        f"suite `{args.suite}` on {name} ({'bf16' if cuda else 'float32'}), peak "
        f"{f'{peak:g} TFLOP/s' if peak else 'unknown'}; cold, one stage at a time: {total:.1f} s",
        "",
        "| stage | count | seconds | tokens/s | train tokens | MFU (training) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, group in sorted(kinds.items(), key=lambda kv: -sum(r["seconds"] for r in kv[1])):
        seconds = sum(r["seconds"] for r in group)
        tokens = sum(r["tokens"] for r in group)
        train = sum(r["train_tokens"] for r in group)
        flops = sum(r["flops"] for r in group)
        mfu = f"{100 * flops / (seconds * peak * 1e12):.2f}%" if peak and train and seconds else ""
        lines.append(
            f"| {kind} | {len(group)} | {seconds:.1f} | {tokens / max(seconds, 1e-9):,.0f} | {train:,} | {mfu} |"
        )
    seconds = sum(r["seconds"] for r in rows)
    train_rows = [r for r in rows if r["train_tokens"]]
    train_seconds = sum(r["seconds"] for r in train_rows)
    mfu_train = (
        sum(r["flops"] for r in train_rows) / (train_seconds * peak * 1e12)
        if peak and train_seconds
        else float("nan")
    )
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n")
    tokens_per_s = sum(r["tokens"] for r in rows) / max(seconds, 1e-9)
    print(
        f"gpu_stages suite={Path(args.suite).stem} seconds={total:.1f} tokens_per_s={tokens_per_s:.0f} "
        f"mfu_train={mfu_train:.4f}"
    )


if __name__ == "__main__":
    main()
