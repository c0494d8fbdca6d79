"""What the training stages share: reading stage data, TRL trainer arguments, saving a trained model."""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from compare.models import device
from compare.tasks import TASKS, Task


@dataclass
class Context:
    """Run-wide settings a stage may need (not part of any stage key)."""

    verbose: bool = False
    threads: int | None = None  # torch CPU threads; None leaves torch's default


def quiet_libraries(verbose: bool) -> None:
    """Keep the libraries' logs and progress bars out of the way unless asked for."""
    import datasets
    import transformers

    if verbose:
        return
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def make_task(params: dict, inputs: dict[str, Path] | None = None) -> Task:
    """The task of a stage's `task` settings; a stage given a `judge` input hands its model to the task."""
    settings = {k: v for k, v in params.items() if k not in ("name", "annotator")}
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


def trainer_args(config_cls, train: dict, seed: int, out: Path, ctx: Context, **extra):
    """TRL config for one stage: the suite's optimiser settings, quiet, no checkpoints, seeded."""
    cuda = device().type == "cuda"
    return config_cls(
        output_dir=str(out / "trainer"),
        num_train_epochs=train["epochs"],
        per_device_train_batch_size=train["batch_size"],
        learning_rate=train["lr"],
        lr_scheduler_type="linear",
        warmup_steps=0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=not ctx.verbose,
        seed=seed,
        data_seed=seed,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        dataloader_num_workers=0,
        **extra,
    )


def train_and_save(trainer, out: Path, ctx: Context) -> None:
    """Train quietly (the trainer prints every log line when its progress bar is off), then save."""
    from transformers.trainer_callback import PrinterCallback

    if not ctx.verbose:
        trainer.remove_callback(PrinterCallback)
    trainer.train()
    finish_training(trainer, out)


def lora_config(r: int | None, task_type: str):
    """LoRA adapters of rank `r` on every linear layer (peft), or None for full fine-tuning.

    `task_type` "SEQ_CLS" also trains the scalar head of a reward or value model.
    """
    if not r:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear", task_type=task_type
    )


def finish_training(trainer, out: Path) -> None:
    """Save the trained model (a LoRA adapter merged into it), its tokenizer and the training log."""
    if hasattr(trainer.model, "merge_and_unload"):  # peft: later stages load a plain model folder
        trainer.model.merge_and_unload().save_pretrained(str(out))
        trainer.processing_class.save_pretrained(str(out))
    else:
        trainer.save_model(str(out))
    (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    trainer_dir = out / "trainer"
    if trainer_dir.exists():
        import shutil

        shutil.rmtree(trainer_dir)
