"""What the training stages share: reading stage data, TRL trainer arguments, saving a trained model."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from compare.compute import Counter
from compare.lm.loading import device
from compare.tasks import TASKS, Task
from compare.tracking import tracked, trainer_report_to


@dataclass
class Context:
    """Run-wide settings a stage may need (not part of any stage key)."""

    verbose: bool = False
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    progress: bool = False  # show progress bars (on a terminal)
    report_to: tuple[str, ...] = ()  # experiment trackers (`compare.tracking`); empty: none
    tracking_dir: str | None = None  # TensorBoard's event files: <tracking_dir>/<stage>/
    project: str | None = None  # the suite's (or collection's) name: the trackers' project
    stage: str | None = None  # the stage being computed (its cache folder's name), set per stage
    tags: dict = field(default_factory=dict)  # its runs' arms, seeds and grid points (`run_tags`)


@contextmanager
def quiet_libraries(verbose: bool):
    """For the block: the libraries' logs, progress bars and warnings out of the way unless verbose.

    Everything is put back afterwards (verbosity, progress bars, warning filters), so importing or
    calling the package leaves the process as it found it.
    """
    if verbose:
        yield
        return
    import datasets
    import transformers

    accelerate_log = logging.getLogger("accelerate")
    before = (transformers.logging.get_verbosity(), datasets.logging.get_verbosity(), accelerate_log.level)
    hf_bars, ds_bars = (
        transformers.utils.logging.is_progress_bar_enabled(),
        datasets.is_progress_bar_enabled(),
    )
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    accelerate_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        transformers.logging.set_verbosity(before[0])
        datasets.logging.set_verbosity(before[1])
        accelerate_log.setLevel(before[2])
        if hf_bars:
            transformers.utils.logging.enable_progress_bar()
        if ds_bars:
            datasets.enable_progress_bars()


def make_task(params: dict, inputs: dict[str, Path] | None = None) -> Task:
    """The task of a stage's `task` settings; a stage given a `judge` input hands its model to the task."""
    settings = {k: v for k, v in params.items() if k not in ("name", "annotator", "annotator_pool")}
    if "data" in settings and settings["data"] is None:  # a built-in task in suite.task.model_dump()
        del settings["data"]
    if inputs and "judge" in inputs:
        settings["judge_model"] = str(inputs["judge"])
    return TASKS[params["name"]](**settings)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def use_bf16(bf16_cpu: bool) -> bool:
    """Whether a training stage computes in bfloat16: on a GPU whenever it supports it, on the CPU only
    when the stage's `bf16_cpu` asks for it."""
    return torch.cuda.is_bf16_supported() if device().type == "cuda" else bf16_cpu


def weight_dtype(settings) -> torch.dtype:
    """The dtype a stage holds its models in: bfloat16 with `bf16_weights` where the device supports it
    (the CPU does; a GPU if `torch.cuda.is_bf16_supported()`), else float32, as they are saved."""
    bf16 = getattr(settings, "bf16_weights", False)
    if bf16 and (device().type != "cuda" or torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float32


def trainer_args(config_cls, train, seed: int, out: Path, ctx: Context, **extra):
    """TRL config for one stage: its optimiser settings (`epochs`, `batch_size`, `lr`), quiet, seeded.

    Activation checkpointing only when the stage asks for it (`gradient_checkpointing`): TRL's configs
    turn it on by default, and it costs a recomputed forward pass for the same numbers.
    """
    cuda = device().type == "cuda"
    # transformers 5.x renamed the switch (the old name warns); TRL's configs turn it on by default
    fields = {f.name for f in dataclasses.fields(config_cls)}
    switch = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return config_cls(
        output_dir=str(out / "trainer"),
        num_train_epochs=train.epochs,
        per_device_train_batch_size=train.batch_size,
        learning_rate=train.lr,
        lr_scheduler_type="linear",
        warmup_steps=0,
        logging_steps=1,
        logging_nan_inf_filter=False,  # else a nan loss is logged as the window's mean (0.0 at one step)
        save_strategy="no",
        **trainer_report_to(ctx, config_cls),
        disable_tqdm=not (ctx.verbose or ctx.progress),
        seed=seed,
        data_seed=seed,
        use_cpu=not cuda,
        bf16=use_bf16(train.bf16_cpu),
        dataloader_num_workers=0,
        **{switch: train.gradient_checkpointing},
        **extra,
    )


class NonFiniteError(RuntimeError):
    """Training produced a nan or inf: a loss, a reward, a gradient norm or the weights themselves.

    Raised before anything is saved, so the stage fails instead of being cached with a broken model.
    """


# Logged training numbers that must be finite: the losses and gradient norm of every trainer, and the
# rewards and margins the preference and RL trainers log (DPO's rewards/*, RM's margin, RLOO's reward).
# Other logged numbers are left alone (e.g. RLOO's clip ratios may be nan by design).
CHECKED_LOGS = ("loss", "train_loss", "grad_norm")
CHECKED_LOG_WORDS = ("reward", "margin")


def is_checked_log(key: str) -> bool:
    if key.startswith("eval_") or key.startswith("frac_"):
        return False
    return key in CHECKED_LOGS or any(word in key for word in CHECKED_LOG_WORDS)


def non_finite_logs(logs: dict) -> list[tuple[str, float]]:
    """The checked numbers in `logs` that are nan or inf (None, strings and bools are not numbers)."""
    return [
        (k, v)
        for k, v in logs.items()
        if is_checked_log(k)
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and not math.isfinite(v)
    ]


def check_logs(logs: dict, step: int) -> None:
    """Raise `NonFiniteError` if a checked number in one training log is nan or inf."""
    bad = non_finite_logs(logs)
    if bad:
        what = ", ".join(f"{k} is {v}" for k, v in bad)
        raise NonFiniteError(f"{what} at step {step}")


@functools.cache
def _callbacks() -> dict[str, type]:
    """The trainer callbacks, defined on first use: importing transformers' trainer takes seconds."""
    from transformers import ProgressCallback, TrainerCallback

    class FiniteLogsCallback(TrainerCallback):
        """Stop training with `NonFiniteError` at the first step whose logged loss (or reward...) is not finite.

        `logging_steps=1` makes `on_log` see every optimiser step. The trainer calls callbacks without
        catching their exceptions (`CallbackHandler.call_event`), so the error leaves `trainer.train()`.
        """

        def on_log(self, args, state, control, logs=None, **kwargs):
            check_logs(logs or {}, state.global_step)

    class BarOnlyProgressCallback(ProgressCallback):
        """transformers' progress bar, named and cleared at the end like PPO's, without the log dict that
        `ProgressCallback` writes (to stdout, above the bar) at every logging step."""

        def __init__(self, desc: str | None = None):
            super().__init__()
            self.desc = desc

        def on_train_begin(self, args, state, control, **kwargs):
            from tqdm.auto import tqdm

            if state.is_world_process_zero:
                self.training_bar = tqdm(
                    total=state.max_steps, desc=self.desc, leave=False, dynamic_ncols=True
                )
            self.current_step = 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    return {c.__name__: c for c in (FiniteLogsCallback, BarOnlyProgressCallback)}


def __getattr__(name: str):  # `FiniteLogsCallback`, `BarOnlyProgressCallback`: see `_callbacks`
    if name in ("FiniteLogsCallback", "BarOnlyProgressCallback"):
        return _callbacks()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_finite(model: torch.nn.Module, what: str) -> None:
    """Raise `NonFiniteError` naming the first parameter or buffer of `model` with a nan or inf.

    One device sync for the whole model (the per-tensor checks are stacked before being read).
    """
    tensors = [
        (name, t)
        for named in (model.named_parameters(), model.named_buffers())
        for name, t in named
        if (t.is_floating_point() or t.is_complex()) and t.device.type != "meta"
    ]
    if not tensors:
        return
    dev = tensors[0][1].device
    with torch.no_grad():
        finite = torch.stack([torch.isfinite(t).all().to(dev) for _, t in tensors])
        if bool(finite.all()):
            return
        name, t = tensors[int((~finite).nonzero()[0])]
        nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
    raise NonFiniteError(f"{what} not finite: {name} ({nan} nan and {inf} inf of {t.numel()} values)")


def train_and_save(trainer, out: Path, ctx: Context) -> None:
    """Train, stopping at the first non-finite loss, then check the weights and save."""
    train(trainer, ctx)
    finish_training(trainer, out)


def train(trainer, ctx: Context) -> None:
    """Train, stopping at the first non-finite loss (`NonFiniteError`); nothing is saved.

    Unless verbose, no log line per step: the trainer's PrinterCallback (used when its progress bar is
    off) is removed, and its ProgressCallback (bar on, for `ctx.progress`) swapped for one that only
    draws the bar. Stages that train in rounds call this once per round, then save once.
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if not ctx.verbose:
        trainer.remove_callback(PrinterCallback)
        if trainer.pop_callback(ProgressCallback) is not None:  # "DPOTrainer" -> "dpo"
            desc = type(trainer).__name__.removesuffix("Trainer").lower() or None
            trainer.add_callback(_callbacks()["BarOnlyProgressCallback"](desc))
    trainer.add_callback(_callbacks()["FiniteLogsCallback"])
    with tracked(trainer, ctx):
        trainer.train()


def point_reference_at_start(model, tokenizer, path: str, out: Path) -> None:
    """Make sure a TRL trainer's reference (reloaded from `model.config._name_or_path`) is the starting policy.

    That is `path` itself unless `load_policy` had to add a pad token (resizing the embeddings), or `path`
    stores a LoRA adapter on a parent (which TRL cannot load), in which case the starting policy is saved
    under `out / "start"` and the reference loaded from there (the stage removes that copy once its
    trainer is built). Only full fine-tuning needs it: with LoRA the reference is the adapter disabled.
    """
    from transformers import AutoConfig

    from compare.lm.loading import save_model, stored_as_adapter

    if (
        stored_as_adapter(path)
        or model.config.vocab_size != AutoConfig.from_pretrained(path, trust_remote_code=False).vocab_size
    ):
        path = str(out / "start")
        save_model(model, tokenizer, Path(path))
    model.config._name_or_path = path


def lora_config(r: int | None, task_type: str):
    """LoRA adapters of rank `r` on every linear layer (peft), or None for full fine-tuning.

    `task_type` "SEQ_CLS" also trains the scalar head of a reward or value model (in full: peft's
    `modules_to_save`, so the head is saved with the adapter).
    """
    if not r:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear", task_type=task_type
    )


def finish_training(trainer, out: Path) -> None:
    """Save the trained model, its tokenizer and the training log.

    With LoRA, the adapter and a note of the folder it was trained from (`compare.lm.loading.
    save_trained_peft`; later stages load the chain, merged in memory); otherwise the full weights.
    Raises `NonFiniteError`, saving nothing, if the model to be saved (the merged one, with LoRA) has a
    nan or inf anywhere.
    """
    if hasattr(trainer.model, "merge_and_unload"):  # peft
        from compare.lm.loading import save_trained_peft

        save_trained_peft(
            trainer.model, trainer.processing_class, out, lambda m: check_finite(m, "weights after training")
        )
    else:
        check_finite(trainer.model, "weights after training")
        trainer.save_model(str(out))
    (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    trainer_dir = out / "trainer"
    if trainer_dir.exists():
        import shutil

        shutil.rmtree(trainer_dir)


def train_prompt_tokens(params: dict, counter: Counter) -> float:
    """The mean tokens of the task's training prompts (what an online stage rolls out on)."""
    task = make_task(params["task"])
    return counter.prompts(task.prompts("train"))
