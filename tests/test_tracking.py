"""Experiment trackers: `--report-to` parsing, the runs' tags, and a micro suite's curves read back from
TensorBoard's event files (TRL's trainers and our PPO, under the same names)."""

import os
import sys
import textwrap
import types
from pathlib import Path

import pytest

from compare.cli import main
from compare.plan import plan_runs, stage_order
from compare.stages.common import Context
from compare.suite import SuiteError, load_suite
from compare.tracking import StageLogger, parse_report_to, run_tags, tracked, trainer_report_to

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

MICRO = """
name: micro_tracking
description: micro suite for the trackers' test
task: {train_prompts: 32, eval_prompts: 2}
base:
  tiny: {n_layer: 1, n_head: 2, n_embd: 32, corpus_size: 500, steps: 30, batch_size: 32}
budget: {units: 24, cost: {demonstration: 4, comparison: 1}}
stages:
  sft: {epochs: 1, batch_size: 8}
  dpo: {epochs: 1, batch_size: 8}
  rm: {epochs: 1, batch_size: 8}
  ppo: {episodes: 32, rollout_batch_size: 16, max_new_tokens: 8, gold_eval_every: 1}
arms:
  sft: {recipe: [sft]}
  dpo: {recipe: [dpo]}
  ppo: {recipe: [rm, ppo]}
grid: {seed: [0, 1]}
eval: {samples_per_prompt: 2, max_new_tokens: 8}
"""
TRAINING = {"sft", "dpo", "rm", "ppo"}


def test_report_to_names():
    assert parse_report_to("tensorboard") == ("tensorboard",)
    assert parse_report_to("tensorboard, tensorboard") == ("tensorboard",)
    assert parse_report_to("none") == ()
    with pytest.raises(SuiteError, match="--report-to tensorbord: unknown tracker; choose from tensorboard"):
        parse_report_to("tensorbord")


def test_report_to_a_tracker_not_installed(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "mlflow" else real(name))
    with pytest.raises(SuiteError, match="mlflow is not installed: pip install mlflow"):
        parse_report_to("tensorboard,mlflow")


def test_tags_name_every_run_of_a_shared_stage():
    def run(arm, seed, **point):
        return types.SimpleNamespace(
            arm=arm, seed=seed, point={"seed": seed, **point}, label=f"{arm} seed={seed}"
        )

    tags = run_tags([run("sft", 1, n=4), run("ppo", 0, n=4), run("ppo", 1, n=8)])
    assert tags == {
        "arm": "ppo,sft",
        "seed": "0,1",
        "point": "n=4,n=8",
        "runs": "sft seed=1; ppo seed=0; ppo seed=1",
    }
    assert run_tags([run("sft", 0)])["point"] == "-"


def test_stage_logger_names_and_tags_in_wandb(monkeypatch, tmp_path):
    """Our PPO's logger, through a stand-in for the wandb module: one run per stage, tagged, `train/` keys."""
    calls = []

    class FakeRun:
        def log(self, scalars, step):
            calls.append(("log", scalars, step))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: calls.append(("init", kwargs)) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    ctx = Context(report_to=("wandb",), project="quick", stage="ppo-abc", tags={"arm": "ppo", "seed": "0"})
    logger = StageLogger(ctx, {"kl_coef": 0.05})
    logger.log({"step": 3, "episode": 64, "objective/kl": 1.5, "loss": 0.25, "note": "x"}, 3)
    logger.close()
    (_, init), (_, scalars, step), (finish,) = calls
    assert init["project"] == "quick" and init["name"] == "ppo-abc"
    assert init["tags"] == ["arm:ppo", "seed:0"] and init["config"]["kl_coef"] == 0.05
    assert scalars == {"train/episode": 64.0, "train/objective/kl": 1.5, "train/loss": 0.25} and step == 3
    assert finish == "finish"


def scalars(folder: Path) -> tuple[set[str], str]:
    """The scalar names and the tags text of every event file under `folder`."""
    names, tags = set(), ""
    for events in folder.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        names |= set(acc.Tags()["scalars"])
        for tag in acc.Tags()["tensors"]:
            if tag.startswith("tags"):
                tags += b"".join(acc.Tensors(tag)[0].tensor_proto.string_val).decode()
    return names, tags


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking")
    suite = root / "micro.yaml"
    suite.write_text(textwrap.dedent(MICRO))
    argv = ["run", str(suite), "--cache-dir", str(root / "cache"), "--out", str(root / "report")]
    assert main([*argv, "--report-to", "--tracking-dir", str(root / "tb")]) == 0
    return suite, root / "tb"


@pytest.mark.slow
def test_every_training_stage_has_its_curves(tracked_run):
    suite, tb = tracked_run
    stages = {
        s.name: s for r in plan_runs(load_suite(suite)) for s in stage_order(r.roots) if s.kind in TRAINING
    }
    assert {p.name for p in tb.iterdir()} == set(stages)
    for name, stage in stages.items():
        names, tags = scalars(tb / name)
        if stage.kind == "ppo":  # our PPO, under TRL's metric names and transformers' prefix
            assert {"train/objective/kl", "train/objective/scores", "train/loss/policy"} <= names
        else:  # TRL's trainers, through their report_to
            assert "train/loss" in names
        assert "- arm: " in tags and "- seed: " in tags, name


@pytest.mark.slow
def test_tags_name_the_runs(tracked_run):
    suite, tb = tracked_run
    runs = plan_runs(load_suite(suite))
    ppo = next(s for r in runs for s in stage_order(r.roots) if s.kind == "ppo" and r.seed == 1)
    _, tags = scalars(tb / ppo.name)
    assert "- arm: ppo" in tags and "- seed: 1" in tags and "ppo seed=1" in tags


def test_trainer_fields_only_when_asked():
    from trl import DPOConfig

    assert trainer_report_to(Context()) == {"report_to": "none"}
    ctx = Context(report_to=("trackio",), stage="dpo-1", project="quick")
    assert trainer_report_to(ctx, DPOConfig) == {
        "report_to": ["trackio"],
        "run_name": "dpo-1",
        "project": "quick",
    }


def test_a_stage_ends_its_wandb_run_even_when_training_raises(monkeypatch):
    """transformers' W&B callback leaves its run open; the next stage in the process would log into it."""
    finished = []
    fake = types.ModuleType("wandb")
    fake.run = object()
    fake.finish = lambda: finished.append(True)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    trainer = types.SimpleNamespace(
        callback_handler=types.SimpleNamespace(callbacks=[]), add_callback=lambda callback: None
    )
    ctx = Context(report_to=("wandb",), stage="sft-1", tracking_dir="/nonexistent", tags={"arm": "sft"})
    with pytest.raises(RuntimeError), tracked(trainer, ctx):
        assert os.environ["WANDB_TAGS"] == "arm:sft"
        raise RuntimeError("diverged")
    assert finished == [True] and "WANDB_TAGS" not in os.environ


def test_tracking_dir_that_is_a_file(tmp_path, capsys):
    suite = tmp_path / "micro.yaml"
    suite.write_text(textwrap.dedent(MICRO))
    (tmp_path / "tb").write_text("mine")
    argv = ["run", str(suite), "--cache-dir", str(tmp_path / "c"), "--report-to", "--tracking-dir"]
    assert main([*argv, str(tmp_path / "tb")]) == 2
    assert "--tracking-dir" in capsys.readouterr().err and (tmp_path / "tb").read_text() == "mine"


def test_tracking_dir_without_report_to(tmp_path, capsys):
    suite = tmp_path / "micro.yaml"
    suite.write_text(textwrap.dedent(MICRO))
    assert main(["run", str(suite), "--cache-dir", str(tmp_path / "c"), "--tracking-dir", str(tmp_path)]) == 2
    assert "give --report-to too" in capsys.readouterr().err and not (tmp_path / "c").exists()
