"""Experiment trackers (`run --report-to`): every training stage's curves in TensorBoard, W&B, MLflow or trackio.

TRL's trainers log through their own `report_to` (transformers' tracker callbacks); our PPO, which has no
trainer, logs its metrics through `StageLogger` under the names those callbacks use: each logged key with
the prefix `train/` (`train/loss`, `train/objective/kl`, ...), at the stage's step (the optimiser step for
TRL's trainers, the rollout batch for PPO).

One tracker run per stage, named after the stage's cache folder (`sft-3f2a...`), tagged with the runs it
belongs to: a stage is shared by every arm and grid point that uses it (docs/design.md), so its tags list
all of them (`arm`, `seed`, `point`, `runs`). TensorBoard's event files go to
`<tracking dir>/<stage name>/`; the other trackers keep their own stores (W&B's project, MLflow's
experiment, trackio's project: the suite's name unless the user's environment sets one).

A stage already in the cache is not trained again, so it logs nothing: its curves are in the tracker from
the run that computed it (and in the report's `training_logs.csv`).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path

from compare.errors import SuiteError

# name in --report-to -> the module it needs (the package to install has the same name)
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}
DEFAULT = "tensorboard"


def parse_report_to(text: str) -> tuple[str, ...]:
    """`tensorboard`, `wandb,mlflow`, ... -> the trackers, each known and installed (else one-line error)."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names or names == ("none",):
        return ()
    for name in names:
        if name not in TRACKERS:
            raise SuiteError(f"--report-to {name}: unknown tracker; choose from {', '.join(TRACKERS)}")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            extra = " (or pip install -e '.[trackers]')" if name == "tensorboard" else ""
            raise SuiteError(
                f"--report-to {name}: {TRACKERS[name]} is not installed: pip install {name}{extra}"
            )
    return names


def run_tags(runs) -> dict[str, str]:
    """The tags of a stage: the arms, seeds and grid points of the runs (`compare.plan.Run`) that use it."""

    def joined(values) -> str:
        return ",".join(dict.fromkeys(str(v) for v in values)) or "-"

    points = [" ".join(f"{k}={v}" for k, v in r.point.items() if k != "seed") for r in runs]
    return {
        "arm": joined(sorted({r.arm for r in runs})),
        "seed": joined(sorted({r.seed for r in runs})),
        "point": joined(p for p in points if p),
        "runs": "; ".join(r.label for r in runs) or "-",
    }


def project_name(ctx, env: str) -> str:
    """The tracker's project: its own environment variable (`env`), else the suite's name."""
    return os.environ.get(env, ctx.project or "sft-vs-rlhf")


def trainer_report_to(ctx, config_cls=None) -> dict:
    """The TRL config fields for `ctx`'s trackers: `report_to`, the tracker run's name, and trackio's
    project where the config has that field (the other trackers read theirs from the environment,
    `_tracker_environment`)."""
    if not ctx.report_to:
        return {"report_to": "none"}
    fields = {"report_to": list(ctx.report_to), "run_name": ctx.stage}
    known = getattr(config_cls, "__dataclass_fields__", {})
    if "project" in known:
        fields["project"] = project_name(ctx, "TRACKIO_PROJECT")
    return fields


@contextmanager
def tracked(trainer, ctx):
    """Point a TRL trainer's tracker callbacks at this stage: TensorBoard's folder, the run's tags."""
    if not ctx.report_to:
        yield
        return
    from transformers.integrations import TensorBoardCallback

    tensorboards = [c for c in trainer.callback_handler.callbacks if isinstance(c, TensorBoardCallback)]
    for callback in tensorboards:
        callback.logging_dir = str(stage_folder(ctx))
    trainer.add_callback(_tags_callback(ctx, tensorboards))
    try:
        with _tracker_environment(ctx):
            yield
    finally:
        _end_runs(ctx)


def _end_runs(ctx) -> None:
    """End this stage's W&B and MLflow runs: transformers' callbacks leave them open after training, and
    the next stage in the same process would log into them."""
    import sys

    if "wandb" in ctx.report_to and "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish()
    if "mlflow" in ctx.report_to and "mlflow" in sys.modules and sys.modules["mlflow"].active_run():
        sys.modules["mlflow"].end_run()


def round_context(ctx, r: int):
    """`ctx` for round `r` of a stage that trains in rounds: its own tracker run, `<stage>/round-<r>`."""
    import dataclasses

    return dataclasses.replace(ctx, stage=f"{ctx.stage}/round-{r}") if ctx.report_to else ctx


def stage_folder(ctx) -> Path:
    return Path(ctx.tracking_dir) / ctx.stage


def tags_text(tags: dict[str, str]) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in tags.items())


def _tags_callback(ctx, tensorboards: list):
    """A callback that writes the stage's tags into TensorBoard once its writer exists (the other trackers
    read them from the environment)."""
    from transformers import TrainerCallback

    class Tags(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            for callback in tensorboards:
                if callback.tb_writer is not None:
                    callback.tb_writer.add_text("tags", tags_text(ctx.tags))

    return Tags()


@contextmanager
def _tracker_environment(ctx):
    """The tags and project names that W&B, MLflow and trackio read from the environment, for one stage;
    a name the user has set is left as it is."""
    values = {
        "WANDB_TAGS": ",".join(f"{k}:{v}"[:64] for k, v in ctx.tags.items() if k != "runs"),
        "MLFLOW_TAGS": json.dumps(ctx.tags),
    }
    for name in ("WANDB_PROJECT", "MLFLOW_EXPERIMENT_NAME", "TRACKIO_PROJECT"):
        if ctx.project and name not in os.environ:
            values[name] = ctx.project
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class StageLogger:
    """Logs a stage's metrics to `ctx`'s trackers, as transformers' callbacks do for TRL's trainers; use it
    as a context manager, so that a stage that raises still ends its tracker runs."""

    def __enter__(self) -> StageLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __init__(self, ctx, config: dict | None = None):
        self.ctx, self.writers = ctx, []
        if not ctx.report_to:
            return
        tags, name = ctx.tags, ctx.stage
        config = {**(config or {}), **{f"tag/{k}": v for k, v in tags.items()}}
        for tracker in ctx.report_to:
            if tracker == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(log_dir=str(stage_folder(ctx)))
                writer.add_text("tags", tags_text(tags))
                writer.add_text("args", json.dumps(config, indent=1, default=str))
                self.writers.append(_TensorBoard(writer))
            elif tracker == "wandb":
                import wandb

                project = project_name(ctx, "WANDB_PROJECT")
                tag_list = [f"{k}:{v}"[:64] for k, v in tags.items() if k != "runs"]
                run = wandb.init(project=project, name=name, tags=tag_list, config=config, reinit=True)
                self.writers.append(_Wandb(run))
            elif tracker == "mlflow":
                import mlflow

                mlflow.set_experiment(project_name(ctx, "MLFLOW_EXPERIMENT_NAME"))
                mlflow.start_run(run_name=name, tags=tags)
                mlflow.log_params({k: str(v)[:500] for k, v in config.items()})
                self.writers.append(_MLflow(mlflow))
            elif tracker == "trackio":
                import trackio

                trackio.init(project=project_name(ctx, "TRACKIO_PROJECT"), name=name, config=config)
                self.writers.append(_Trackio(trackio))

    def log(self, entry: dict, step: int) -> None:
        """Every number in `entry` (but the step counters), as `train/<key>` at `step`."""
        if not self.writers:
            return
        scalars = {
            f"train/{k}": float(v)
            for k, v in entry.items()
            if k not in ("step",) and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        for writer in self.writers:
            writer.log(scalars, step)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers = []


class _TensorBoard:
    def __init__(self, writer):
        self.writer = writer

    def log(self, scalars: dict[str, float], step: int) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, run):
        self.run = run

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    def __init__(self, mlflow):
        self.mlflow = mlflow

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics({k: v for k, v in scalars.items() if math.isfinite(v)}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


class _Trackio:
    def __init__(self, trackio):
        self.trackio = trackio

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.trackio.log(scalars, step=step)

    def close(self) -> None:
        self.trackio.finish()
