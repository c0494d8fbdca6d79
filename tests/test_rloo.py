"""Stage `rloo`: a short run on the tiny fixtures, and the reward model seeing its training format."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from compare.lm.loading import load_policy, load_reward_model
from compare.lm.sampling import left_pad, reward_scores
from compare.stages import Job, rloo
from compare.stages.common import Context
from compare.stages.rloo import RLOOSettings

TASK = {"name": "reviews", "seed": 0, "train_prompts": 64, "eval_prompts": 8}


def params(**train) -> dict:
    settings = {
        "episodes": 32,
        "num_generations": 4,
        "batch_size": 8,
        "lr": 1e-3,
        "beta": 0.05,
        "temperature": 0.7,
        "max_new_tokens": 16,
    }
    return Job(RLOOSettings(**{**settings, **train}), 0, TASK)


def test_short_run_trains_and_logs(tmp_path, tiny_policy_dir, tiny_rm_dir):
    out = tmp_path / "rloo"
    out.mkdir()
    rloo.run(params(), out, {"model": tiny_policy_dir, "reward_model": tiny_rm_dir}, Context())

    trained, _ = load_policy(out)
    start, _ = load_policy(tiny_policy_dir)
    before = dict(start.named_parameters())
    unchanged = [n for n, p in trained.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged

    log = json.loads((out / "log_history.json").read_text())
    steps = [row for row in log if "loss" in row]
    assert len(steps) == 32 * 4 // 8
    assert all(math.isfinite(row["loss"]) for row in steps)
    assert all(math.isfinite(row["reward"]) and "kl" in row for row in steps)
    assert not (out / "trainer").exists() and not (out / "start").exists()


def test_trainer_reward_is_reward_scores(tmp_path, task, tiny_policy_dir, tiny_rm_dir):
    trainer = rloo.build_trainer(
        params(), tmp_path, {"model": tiny_policy_dir, "reward_model": tiny_rm_dir}, Context()
    )
    tokenizer = trainer.processing_class
    rng = random.Random(0)
    prompts = task.prompts("train")[:3]
    completions = [task.demonstrate(p, rng) for p in prompts]  # " the food is good ." etc.
    ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
    ids = [ids[0] + [tokenizer.eos_token_id], ids[1] + [tokenizer.eos_token_id], ids[2]]  # last one truncated
    as_trl_decodes = tokenizer.batch_decode(ids, skip_special_tokens=True)

    rewards = trainer._calculate_rewards([{"prompt": p} for p in prompts], prompts, as_trl_decodes, ids)
    rm, rm_tokenizer = load_reward_model(tiny_rm_dir)
    expected = reward_scores(rm, rm_tokenizer, prompts, completions)
    assert rewards[:, 0].tolist() == pytest.approx(expected, abs=1e-5)


def test_left_padding_does_not_shift_positions(tiny_policy_dir, task):
    model, tokenizer = load_policy(tiny_policy_dir)
    rloo.use_mask_positions(model)
    rows = sorted(tokenizer(task.prompts("train"), add_special_tokens=False)["input_ids"], key=len)
    short, long = rows[0], rows[-1]
    assert len(short) < len(long)
    ids, mask = left_pad([short, long], tokenizer.pad_token_id)
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask).logits[0, -len(short) :]
        alone = model(
            input_ids=torch.tensor([short]), attention_mask=torch.ones(1, len(short), dtype=torch.long)
        ).logits[0]
    assert torch.allclose(padded, alone, atol=1e-4)


def test_reference_is_the_starting_policy(tmp_path, tiny_policy_dir, tiny_rm_dir):
    trainer = rloo.build_trainer(
        params(), tmp_path, {"model": tiny_policy_dir, "reward_model": tiny_rm_dir}, Context()
    )
    assert trainer.ref_model is not trainer.model
    assert trainer.ref_model.config._name_or_path == str(tiny_policy_dir)
    reference = dict(trainer.ref_model.named_parameters())
    assert all(torch.equal(p, reference[n]) for n, p in trainer.model.named_parameters())


@pytest.mark.skipif(torch.cuda.is_available(), reason="bf16_cpu is about the CPU; a GPU uses bf16 anyway")
def test_bf16_cpu_reaches_the_trainer(tmp_path, tiny_policy_dir, tiny_rm_dir):
    """RLOO (and GRPO, which shares its set-up) hand bf16_cpu to TRL's config: autocast on the CPU."""
    inputs = {"model": tiny_policy_dir, "reward_model": tiny_rm_dir}
    for bf16 in (False, True):
        trainer = rloo.build_trainer(params(bf16_cpu=bf16), tmp_path / str(bf16), inputs, Context())
        assert trainer.args.bf16 is bf16
