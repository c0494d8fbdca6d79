"""Held-out snapshots along online RL (compare/stages/snapshots.py): when they are taken, what they hold,
and that taking them changes nothing about training (no RNG drawn, modes put back, same trajectory)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from compare import runner
from compare.lm.loading import load_policy
from compare.stages import Job, ppo, rloo
from compare.stages.common import Context, read_jsonl
from compare.stages.ppo import PPOSettings
from compare.stages.rloo import RLOOSettings
from compare.stages.snapshots import FILE, evaluating, snapshot_steps, take_snapshot

TASK = {"name": "reviews", "seed": 0, "train_prompts": 64, "eval_prompts": 8}


@pytest.fixture(autouse=True, scope="module")
def one_thread_and_no_leaked_rng():
    threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.random.set_rng_state(rng)


@pytest.mark.parametrize(
    "total, count, steps",
    [
        (8, 5, [0, 2, 4, 6, 8]),
        (10, 4, [0, 3, 7, 10]),
        (2, 5, [0, 1, 2]),
        (7, 1, [7]),
        (7, 0, []),
        (0, 3, [0]),
    ],
)
def test_snapshot_steps_are_evenly_spaced_from_start_to_end(total, count, steps):
    assert snapshot_steps(total, count) == steps


def test_evaluating_puts_every_modules_mode_back():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)).train()
    model[0].eval()  # a mixed model: each module keeps its own mode
    with evaluating(model, None):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == [True, False, True]


def rng_states():
    return torch.random.get_rng_state().clone(), np.random.get_state()[1].copy(), random.getstate()


def test_a_snapshot_draws_no_training_rng_and_scores_each_completion(tiny_policy_dir, tiny_rm_dir, task):
    models = ppo.load_models({"model": tiny_policy_dir, "reward_model": tiny_rm_dir}, "model", None)
    models.policy.train()
    prompts = task.prompts("id")[:3]
    before = rng_states()
    rows = take_snapshot(models.policy, models.ref, models.tokenizer, task, prompts,
                         ppo._proxy(models, models.tokenizer), 12, 0.7, 5, step=4)  # fmt: skip
    after = rng_states()
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]
    assert models.policy.training  # put back
    again = take_snapshot(models.policy, models.ref, models.tokenizer, task, prompts, None, 12, 0.7, 5, 4)
    assert [r["completion"] for r in again] == [r["completion"] for r in rows]  # its own seeded generator
    assert [r["prompt_index"] for r in rows] == [0, 1, 2] and {r["step"] for r in rows} == {4}
    assert [r["gold_reward"] for r in rows] == task.gold_rewards(prompts, [r["completion"] for r in rows])
    assert all(r["proxy_reward"] is not None for r in rows) and all(r["proxy_reward"] is None for r in again)
    # the policy is its own start here: every log-ratio is zero (up to float error)
    assert all(abs(r["log_ratio"]) < 1e-4 for r in rows)


def trajectory(history: list[dict]) -> str:
    return json.dumps([{k: v for k, v in e.items() if not k.startswith("time/")} for e in history])


def weights(folder) -> dict:
    return {k: v.clone() for k, v in load_policy(folder)[0].state_dict().items()}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("lora_r", [None, 4])
def test_ppo_snapshots_leave_the_trajectory_unchanged(tmp_path, tiny_policy_dir, tiny_rm_dir, lora_r):
    """Training with snapshots gives the very log history and weights of training without them (with
    LoRA, the start policy is the policy with its adapter disabled)."""

    def run(folder, snapshots):
        train = PPOSettings(episodes=24, rollout_batch_size=8, max_new_tokens=10, lr=1e-2 if lora_r else 1e-3,
                            gold_eval_prompts=4, snapshots=snapshots, snapshot_prompts=3, lora_r=lora_r)  # fmt: skip
        params = {"train": train.model_dump(), "seed": 3, "task": TASK}
        out = tmp_path / folder
        runner.run_stage(
            "ppo", params, out, {"model": tiny_policy_dir, "reward_model": tiny_rm_dir}, Context()
        )
        return out

    with_, without = run("with", 3), run("without", 0)
    assert not (without / FILE).exists()
    history = json.loads((with_ / "log_history.json").read_text())
    assert trajectory(history) == trajectory(json.loads((without / "log_history.json").read_text()))
    assert same_weights(weights(with_), weights(without))
    rows = read_jsonl(with_ / FILE)
    assert [(r["step"], r["prompt_index"]) for r in rows] == [(s, i) for s in (0, 2, 3) for i in range(3)]
    assert all(abs(r["log_ratio"]) < 1e-4 for r in rows if r["step"] == 0)  # before any update
    assert any(abs(r["log_ratio"]) > 1e-3 for r in rows if r["step"] == 3)  # the policy moved


@pytest.mark.parametrize(
    "start", [{"beta": 0.05}, {"beta": 0.0}, {"beta": 0.05, "lora_r": 4}], ids=["ref", "copy", "lora"]
)
def test_rloo_snapshots_leave_the_trajectory_unchanged(tmp_path, tiny_policy_dir, tiny_rm_dir, start):
    """The start policy is TRL's reference, a copy taken before training (beta 0), or the LoRA policy
    with its adapter disabled: every way, the log-ratio at step 0 is 0 and training is as without."""

    def run(folder, snapshots):
        settings = RLOOSettings(episodes=16, num_generations=4, batch_size=8, lr=1e-2, temperature=0.7,
                                max_new_tokens=10, snapshots=snapshots, snapshot_prompts=2, **start)  # fmt: skip
        out = tmp_path / folder
        out.mkdir()
        rloo.run(
            Job(settings, 0, TASK), out, {"model": tiny_policy_dir, "reward_model": tiny_rm_dir}, Context()
        )
        return out

    with_, without = run("with", 3), run("without", 0)

    def log(folder):
        timing = ("runtime", "per_second", "time")
        rows = json.loads((folder / "log_history.json").read_text())
        return json.dumps([{k: v for k, v in r.items() if not any(t in k for t in timing)} for r in rows])

    assert log(with_) == log(without)
    assert same_weights(weights(with_), weights(without))
    rows = read_jsonl(with_ / FILE)
    steps = 16 * 4 // 8
    assert sorted({r["step"] for r in rows}) == snapshot_steps(steps, 3) == [0, 4, 8]
    assert len(rows) == 3 * 2 and all(r["proxy_reward"] is not None for r in rows)
    assert all(abs(r["log_ratio"]) < 1e-4 for r in rows if r["step"] == 0)
    assert any(abs(r["log_ratio"]) > 1e-4 for r in rows if r["step"] == 8)
