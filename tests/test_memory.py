"""Memory that fits: the estimate (compare/memory.py) by hand, activation checkpointing that changes no
number, bf16 weights, and PPO with LoRA holding its reward model as the value model's frozen base."""

import random

import pytest
import torch

from compare.lm.external import OVERHEAD
from compare.lm.loading import load_reward_model
from compare.lm.sampling import reward_scores
from compare.memory import Shape, StageLoad, activation_bytes, memory_needed, stage_load
from compare.stages import SPECS, ppo, sft
from compare.stages.common import Context
from compare.stages.ppo import PPOSettings
from compare.stages.spec import Job

M = 1_000_000


# -- the estimate, by hand ----------------------------------------------------------------------------------
def test_bytes_per_parameter_by_hand():
    memory = SPECS["ppo"].memory  # policy and value trained, reference and RM frozen
    assert memory.bytes_per_parameter(lora=False) == 2 * 16 + 2 * 4 == 40
    assert memory.bytes_per_parameter(lora=False, weight_bytes=2) == 2 * 8 + 2 * 2 == 20
    assert (
        memory.bytes_per_parameter(lora=True) == 8
    )  # two frozen bases: policy's (= reference), value's (= RM)
    assert memory.bytes_per_parameter(lora=True, weight_bytes=2) == 4
    assert SPECS["dpo"].memory.bytes_per_parameter(lora=False) == 20  # + the frozen reference
    assert SPECS["eval"].memory.bytes_per_parameter(lora=False) == 12  # three frozen models


def test_activations_by_hand():
    shape = Shape(parameters=M, layers=2, hidden=8, vocab=100)
    load = StageLoad("sft", sequences=3, tokens=10)  # 30 tokens
    # float32: 34 bytes x 2 per token, layer and hidden unit; + 8 bytes per token and vocabulary entry
    assert activation_bytes(shape, load) == 30 * (2 * 34 * 2 * 8 + 8 * 100)
    assert activation_bytes(shape, load._replace(half=True)) == 30 * (34 * 2 * 8 + 8 * 100)
    # checkpointing: each layer's input (2 bytes, x2 in float32) and one layer recomputed in full
    assert activation_bytes(shape, load._replace(checkpointing=True)) == 30 * (8 * (2 * 2 + 34) * 2 + 8 * 100)
    assert activation_bytes(Shape(M), load) == 0  # dimensions unknown
    # a reward model has a scalar head (no logits); PPO keeps the policy's and the value model's activations
    assert activation_bytes(shape, load._replace(kind="rm")) == 30 * (2 * 34 * 2 * 8)
    assert activation_bytes(shape, load._replace(kind="ppo")) == 30 * (2 * (2 * 34 * 2 * 8) + 8 * 100)
    assert activation_bytes(shape, StageLoad("eval")) == 0  # no training step
    # PPO scores its whole rollout batch (no gradients): 40 sequences x 10 tokens of float32 logits, more
    # than one minibatch's step here, so that is the peak; a small rollout batch leaves the step's
    ppo = load._replace(kind="ppo", rollout=40, half=True)
    assert activation_bytes(shape, ppo) == 40 * 10 * 8 * 100
    assert activation_bytes(shape, ppo._replace(rollout=4)) == 30 * (2 * (34 * 2 * 8) + 8 * 100)
    total = memory_needed(shape, {load})
    assert total == pytest.approx((M * 16 + 30 * (2 * 34 * 2 * 8 + 8 * 100)) * OVERHEAD)


def test_stage_load_reads_the_settings():
    s = PPOSettings(rollout_batch_size=64, minibatches=2, max_new_tokens=24, lora_r=16, bf16_cpu=True)
    load = stage_load("ppo", s)
    assert load == StageLoad("ppo", lora=True, half=True, sequences=32, tokens=256 + 24, rollout=64)
    s = sft.SFTSettings(batch_size=8, gradient_checkpointing=True, bf16_weights=True)
    assert stage_load("sft", s) == StageLoad(
        "sft", bf16_weights=True, checkpointing=True, half=True, sequences=8, tokens=512
    )
    dpo = SPECS["dpo"].settings(batch_size=8)
    assert stage_load("dpo", dpo).sequences == 16  # chosen and rejected


def test_each_switch_lowers_the_estimate():
    shape = Shape(7 * 10**9, layers=32, hidden=4096, vocab=32000)  # a 7B llama
    base = stage_load("ppo", PPOSettings(rollout_batch_size=16, episodes=16, max_new_tokens=256))
    steps = [
        base,
        base._replace(lora=True),
        base._replace(lora=True, checkpointing=True),
        base._replace(lora=True, checkpointing=True, bf16_weights=True, half=True),
    ]
    needs = [memory_needed(shape, {s}) for s in steps]
    assert needs == sorted(needs, reverse=True) and len(set(needs)) == 4
    # with LoRA, PPO's weights are two frozen bases, not four copies: 8 bytes a parameter, not 12
    assert needs[1] - activation_bytes(shape, steps[1]) * OVERHEAD == pytest.approx(7e9 * 8 * OVERHEAD)


# -- the switches on a tiny model ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rows(task):
    rng = random.Random(0)
    return [{"prompt": p, "completion": task.demonstrate(p, rng)} for p in task.prompts("train")[:16]]


def _sft(tmp_path, start, rows, **settings):
    out = tmp_path / "_".join(f"{k}{v}" for k, v in settings.items())
    out.mkdir()
    job = Job(sft.SFTSettings(epochs=1, batch_size=8, **settings), 0)
    sft.train_sft(rows, job, out, {"model": start}, Context())
    return out


def test_checkpointing_changes_no_number(tmp_path, tiny_policy_dir, rows):
    from compare.lm.loading import load_policy

    plain = load_policy(_sft(tmp_path, tiny_policy_dir, rows, gradient_checkpointing=False))[0]
    checkpointed = load_policy(_sft(tmp_path, tiny_policy_dir, rows, gradient_checkpointing=True))[0]
    a, b = dict(plain.named_parameters()), dict(checkpointed.named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_weights_train_in_bf16(tmp_path, tiny_policy_dir, rows, monkeypatch):
    seen = []
    monkeypatch.setattr(sft, "train_and_save", lambda trainer, out, ctx: seen.append(trainer.model.dtype))
    _sft(tmp_path, tiny_policy_dir, rows, bf16_weights=True)
    _sft(tmp_path, tiny_policy_dir, rows, bf16_weights=False)
    assert seen == [torch.bfloat16, torch.float32]


def test_ppo_with_lora_scores_with_the_value_models_frozen_base(tiny_policy_dir, tiny_rm_dir, task):
    models = ppo.load_models({"model": tiny_policy_dir, "reward_model": tiny_rm_dir}, "model", lora_r=4)
    assert models.rm is None and models.shares_rm and models.ref is None
    rm, rm_tokenizer = load_reward_model(tiny_rm_dir)
    prompts, completions = task.prompts("train")[:4], [" the food is good .", " bad", " it was ok .", ""]
    expected = reward_scores(rm, rm_tokenizer, prompts, completions)
    # train the value model's adapters and head away from the RM: the reward model stays what it was
    with torch.no_grad():
        for p in models.value.parameters():
            if p.requires_grad:
                p.add_(0.5)
    with ppo.reward_model(models) as shared:
        assert reward_scores(shared, models.tokenizer, prompts, completions) == pytest.approx(
            expected, abs=1e-5
        )
    moved = reward_scores(models.value, models.tokenizer, prompts, completions)
    assert moved != pytest.approx(expected, abs=1e-3)


def test_ppo_trains_with_checkpointing_and_bf16(tmp_path, tiny_policy_dir, tiny_rm_dir, task):
    """A few rollout batches with every switch on: finite, and the policy moved."""
    settings = PPOSettings(episodes=8, rollout_batch_size=4, ppo_epochs=1, max_new_tokens=8, gold_eval_prompts=4,
                           lora_r=4, gradient_checkpointing=True, bf16_weights=True)  # fmt: skip
    task_params = {"name": "reviews", "seed": 0, "train_prompts": 64, "eval_prompts": 8}
    out = tmp_path / "ppo"
    out.mkdir()
    ppo.run(
        Job(settings, 0, task=task_params),
        out,
        {"model": tiny_policy_dir, "reward_model": tiny_rm_dir},
        Context(),
    )
    import json

    history = json.loads((out / "log_history.json").read_text())
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history if "loss" in h)
    assert (out / "adapter_config.json").is_file()
