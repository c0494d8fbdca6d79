"""Held-out samples along training, so over-optimisation can be watched (report.html's view of it).

An online RL stage (PPO, its gold-reward oracle, RLOO, GRPO) samples one completion for each of a few
fixed held-out prompts (the first `snapshot_prompts` of the task's ID split, the prompts the evaluation
lists first) at `snapshots` checkpoints evenly spaced over its optimiser steps: the first before any
update, the last after the final one (`snapshot_steps`). Each completion is scored with the gold reward,
the reward model (when the stage trains on one) and its sampled log-ratio log π(y|x) − log π_start(y|x)
to the policy the stage started from; the mean log-ratio over the prompts is the checkpoint's KL estimate
(as evaluation measures KL, docs/design.md rule 5). They are written to `snapshots.jsonl` in the stage's
folder, one row per checkpoint and prompt, and collected into the report's `snapshots.csv`.

Measuring is not a training signal (fairness rule 3): as PPO's held-out checks, the gold reward is read and
nothing is learnt from it. Taking a snapshot must not change training either: sampling draws from its own
seeded `torch.Generator` (`compare.lm.sampling.sample`), never from torch's global generator, numpy's or
Python's; nothing is computed with gradients; every module's train/eval mode is put back as it was.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from pydantic import Field

from compare.lm.sampling import completion_logprobs, sample
from compare.stages.spec import StageSettings

FILE = "snapshots.jsonl"


class SnapshotSettings(StageSettings):
    """How an online RL stage records held-out samples along its training."""

    snapshots: int = Field(
        5,
        ge=0,
        description="Checkpoints at which held-out samples are saved, evenly spaced over training, the "
        "first before any update and the last after the final one (0: none).",
    )
    snapshot_prompts: int = Field(
        8, ge=1, description="Held-out ID prompts sampled (one completion each) at every checkpoint."
    )


def snapshot_steps(total: int, count: int) -> list[int]:
    """`count` optimiser steps evenly spaced over 0..`total`, rounded half up, the first 0 (before any
    update) and the last `total` (after the final one); fewer when steps coincide.

    (8, 5) -> [0, 2, 4, 6, 8]; (10, 4) -> [0, 3, 7, 10]; (2, 5) -> [0, 1, 2]; (7, 1) -> [7]; (7, 0) -> [].
    """
    if count <= 0:
        return []
    if count == 1:
        return [total]
    return sorted({math.floor(i * total / (count - 1) + 0.5) for i in range(count)})


@contextmanager
def evaluating(*models: torch.nn.Module | None):
    """Every module of `models` in eval mode for the block, then each put back in the mode it was in."""
    modes = [(m, m.training) for model in models if model is not None for m in model.modules()]
    for model in models:
        if model is not None:
            model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@torch.no_grad()
def take_snapshot(
    policy,
    start,
    tokenizer,
    task,
    prompts: list[str],
    proxy: Callable[[list[str], list[str]], list[float]] | None,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    step: int,
) -> list[dict]:
    """One checkpoint: a completion per prompt from `policy`, with its gold reward, the reward model's score
    (`proxy`; None without one) and its log-ratio to `start` (the starting policy, or a context manager
    that yields it, as a LoRA policy with its adapter disabled). Rows as `snapshots.jsonl` holds them."""
    with evaluating(policy):
        samples = sample(policy, tokenizer, prompts, 1, max_new_tokens, temperature, seed)
        with start if hasattr(start, "__enter__") else nullcontext(start) as reference, evaluating(reference):
            start_lp = completion_logprobs(
                reference, tokenizer, samples.prompts, samples.completion_ids, temperature
            )
    gold = task.gold_rewards(samples.prompts, samples.completions)
    scores = proxy(samples.prompts, samples.completions) if proxy else [None] * len(prompts)
    return [
        {
            "step": step,
            "prompt_index": i,
            "prompt": prompt,
            "completion": completion,
            "gold_reward": float(g),
            "proxy_reward": None if r is None else float(r),
            "log_ratio": lp - slp,
            "ended_with_eos": ended,
        }
        for i, (prompt, completion, g, r, lp, slp, ended) in enumerate(
            zip(prompts, samples.completions, gold, scores, samples.logprobs, start_lp, samples.ended)
        )
    ]


def write_snapshots(out: Path, rows: list[dict]) -> None:
    from compare.stages.common import write_jsonl

    if rows:
        write_jsonl(out / FILE, rows)


# -- TRL's trainers (RLOO, GRPO): a callback ---------------------------------------------------------------
def watch_training(trainer, job, inputs: dict[str, Path], out: Path, proxy) -> None:
    """Add to a TRL trainer the callback that takes its snapshots and writes them into `out` when training
    ends. The starting policy is TRL's reference where it keeps one, the adapter disabled with LoRA, else
    (beta = 0, full fine-tuning) a frozen copy loaded from `inputs["model"]` as PPO loads its reference (a
    `copy.deepcopy` of a model the trainer has set up computes with the trained weights)."""
    from compare.lm.loading import load_policy
    from compare.stages.common import make_task

    settings = job.settings
    if not settings.snapshots:
        return
    task = make_task(job.task, inputs)  # with the judge model, for a task whose gold is one
    model = trainer.model
    if hasattr(model, "disable_adapter"):  # peft: the policy itself, its adapter disabled

        @contextmanager
        def start():
            with model.disable_adapter():
                yield model

    elif trainer.ref_model is not None:
        start = functools.partial(nullcontext, trainer.ref_model)
    else:
        frozen = load_policy(str(inputs["model"]))[0].requires_grad_(False).eval()
        frozen.to(next(model.parameters()).device)
        start = functools.partial(nullcontext, frozen)
    prompts = task.prompts("id")[: settings.snapshot_prompts]

    def take(step: int) -> list[dict]:
        return take_snapshot(
            trainer.model, start(), trainer.processing_class, task, prompts, proxy,
            settings.max_new_tokens, settings.temperature, job.seed, step,
        )  # fmt: skip

    trainer.add_callback(_callback_class()(take, settings.snapshots, out))


@functools.cache
def _callback_class() -> type:
    """Defined on first use: importing transformers' trainer takes seconds."""
    from transformers import TrainerCallback

    class SnapshotCallback(TrainerCallback):
        """Snapshots before the first optimiser step and after the steps of `snapshot_steps`; written into
        the stage folder when training ends (a stage that fails afterwards is not cached at all)."""

        def __init__(self, take: Callable[[int], list[dict]], count: int, out: Path):
            self.take, self.count, self.out = take, count, out
            self.steps, self.rows, self.done = [], [], set()

        def _maybe(self, state, step: int) -> None:
            if state.is_world_process_zero and step in self.steps and step not in self.done:
                self.done.add(step)
                self.rows += self.take(step)

        def on_train_begin(self, args, state, control, **kwargs):
            self.steps = snapshot_steps(state.max_steps, self.count)
            self._maybe(state, 0)

        def on_step_end(self, args, state, control, **kwargs):
            self._maybe(state, state.global_step)

        def on_train_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                write_snapshots(self.out, self.rows)

    return SnapshotCallback
