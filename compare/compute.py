"""Compute per stage and per run, from what the cache already holds: FLOPs and seconds.

FLOPs follow the usual transformer estimate (Kaplan et al. 2020): 6·N per token through a forward and a
backward pass (training), 2·N per token through a forward pass only (sampling, scoring by a reward
model, a reference model's log-probs), with N the base model's parameter count. Tokens are counted from
the stage's own files where they hold them (demonstrations, comparisons, labels: prompt and completion
tokens with the base model's tokenizer); where a stage keeps no record of what it generated (the
rollouts of PPO, RLOO, GRPO, rejection sampling; the tiny base's pretraining batches), the count is an
upper bound (every completion at `max_new_tokens`, every pretraining text at `n_positions`), and the
stage says so. LoRA stages are counted as full fine-tuning (an upper bound too: frozen weights need no
weight gradients). Seconds are what each stage's completion marker recorded when it ran.

Each stage spec says how its tokens are counted (`StageSpec.compute`: params, folder, inputs, counter ->
`Tokens`); a stage without one is reported as not counted. This module is the counting's vocabulary, a
leaf the stages import; `compare/ledger.py` adds it up per run: the sum over every stage its policy needed
before the evaluation, shared stages counted whole for each arm that uses them.
"""

from __future__ import annotations

import functools
import json
import statistics
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Tokens:
    """Tokens one stage processed: `trained` through forward and backward, `forwarded` through a forward
    pass only; `bound` names what was bounded from above rather than counted ("" when all was counted)."""

    trained: float = 0.0
    forwarded: float = 0.0
    bound: str = ""

    def flops(self, n_params: int) -> float:
        """6·N·trained + 2·N·forwarded."""
        return 6.0 * n_params * self.trained + 2.0 * n_params * self.forwarded


NO_MODEL = Tokens()  # a stage that runs no model (the demonstrator, the simulated annotator, prompts)


class Counter:
    """Token counts with one tokenizer (the base model's), each text counted once."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @functools.lru_cache(maxsize=100_000)  # noqa: B019  (one counter per report; texts repeat)
    def text(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def rows(self, path: Path, fields: tuple[str, ...]) -> int:
        """Σ over the rows of a JSONL file of tokens(prompt + row[field]) for each field: one sequence per
        field, as a trainer sees it (both sides of a comparison are two sequences)."""
        total = 0
        with path.open() as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    total += sum(self.text(row["prompt"] + row[field]) for field in fields)
        return total

    def prompts(self, texts: list[str]) -> float:
        """The mean tokens of a prompt among `texts` (0 for none)."""
        return statistics.fmean(self.text(t) for t in texts) if texts else 0.0


def offline(data_file: str, fields: tuple[str, ...], reference: bool = False):
    """The count of a stage that trains `epochs` passes over a data file of its `data` input (SFT,
    preferred-FT, the reward model, DPO, KTO); with `reference`, a frozen reference scores every sequence
    at every epoch (once with DPO's `precompute_ref`)."""

    def count(params: dict, folder: Path, inputs: dict[str, Path], counter: Counter) -> Tokens:
        train = params["train"]
        per_epoch = counter.rows(inputs["data"] / data_file, fields)
        passes = 1.0 if train.get("precompute_ref") else train["epochs"]
        return Tokens(train["epochs"] * per_epoch, passes * per_epoch if reference else 0.0)

    return count


def sampled(data_file: str, fields: tuple[str, ...]):
    """The count of a stage that samples the sequences it writes (comparisons and labels from the policy):
    one forward pass per token, the prompt included."""

    def count(params: dict, folder: Path, inputs: dict[str, Path], counter: Counter) -> Tokens:
        return Tokens(0.0, counter.rows(folder / data_file, fields))

    return count


def rollouts(
    completions: float, prompt: float, max_new: int, forward_passes: float, update_passes: float
) -> Tokens:
    """An online stage: `completions` sequences of at most prompt + max_new tokens, each through
    `forward_passes` forward-only passes (sampling, a reference, a reward model, a value model) and
    `update_passes` forward and backward passes; an upper bound (completions at max_new_tokens)."""
    length = prompt + max_new
    return Tokens(
        completions * length * update_passes,
        completions * length * forward_passes,
        "rollouts: every completion at max_new_tokens",
    )


@functools.cache
def parameter_count(model_dir: str) -> int:
    """Parameters of the model in `model_dir`, from its config alone (built on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    return sum(p.numel() for p in model.parameters())
