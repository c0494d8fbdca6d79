"""On-policy distillation (`compare/stages/distill.py`): the loss against hand-computed values, the plan's
teacher, the role, a smoke run on tiny models built here, and a micro suite end to end."""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap

import pandas as pd
import pytest
import torch

from compare.cli import main
from compare.lm.loading import load_policy, save_model
from compare.lm.sampling import left_pad, sample, token_logprobs
from compare.lm.tiny import pretrain
from compare.plan import build_run, stage_order
from compare.preflight import trained_kinds
from compare.report.figures import arm_style
from compare.report.key_results import gold_scale
from compare.report.roles import Roles
from compare.runner import run_stage
from compare.stages import RECIPE_STAGES, SPECS, Job, Role, distill
from compare.stages.common import Context
from compare.stages.distill import DistillSettings
from compare.suite.schema import Suite

CTX = Context()
TASK = {"name": "reviews", "seed": 0, "train_prompts": 64, "eval_prompts": 8}


# -- tier 1: the loss TRL computes, against hand-computed values; the plan; the roles -------------------------
def _trl_divergence(student_logits, teacher_logits, mask, beta):
    """TRL's DistillationTrainer loss on given logits: hidden states = logits, lm_head = identity."""
    from trl.trainer.distillation_trainer import _chunked_divergence_loss

    eye = torch.eye(student_logits.shape[-1])
    loss, _, _ = _chunked_divergence_loss(student_logits, teacher_logits, eye, eye, mask, beta)
    return float(loss)


def test_beta_one_is_the_per_token_reverse_kl_averaged_over_completion_tokens():
    # position 1: p_s = (1/4, 1/2, 1/4), p_t = (1/3, 1/3, 1/3);
    #   KL(p_s || p_t) = 2 * 1/4 * ln(3/4) + 1/2 * ln(3/2) = 1/2 ln(9/8) = 0.0588915
    #   KL(p_t || p_s) = 1/3 (ln(4/3) + ln(2/3) + ln(4/3)) = 1/3 ln(32/27) = 0.0566330
    # position 2: the same distribution for both (KL 0); position 3: padding, whatever its logits
    s = torch.tensor([[[0.0, math.log(2), 0.0], [1.0, 2.0, 3.0], [9.0, -9.0, 0.0]]])
    t = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [-9.0, 9.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert _trl_divergence(s, t, mask, 1.0) == pytest.approx(0.5 * math.log(9 / 8) / 2, abs=1e-6)
    assert _trl_divergence(s, t, mask, 0.0) == pytest.approx(math.log(32 / 27) / 3 / 2, abs=1e-6)
    # a token's one-sample estimate log p_s(y) - log p_t(y) (Thinking Machines) has this expectation
    p_s = torch.tensor([0.25, 0.5, 0.25])
    estimate = (p_s * (p_s.log() - torch.full((3,), 1 / 3).log())).sum()
    assert float(estimate) == pytest.approx(0.5 * math.log(9 / 8), abs=1e-6)


def suite(**arms) -> Suite:
    return Suite.model_validate(
        {
            "name": "distill",
            "task": {"name": "reviews", "train_prompts": 32, "eval_prompts": 4},
            "base": {"tiny": {"n_layer": 1, "n_head": 2, "n_embd": 16, "steps": 10}},
            "budget": {"units": 32},
            "stages": {"ppo_gold": {"episodes": 64, "kl_coef": 0.2}, "distill": {"episodes": 64}},
            "arms": arms
            or {
                "sft": {"recipe": ["sft"]},
                "ppo_gold": {"recipe": ["ppo_gold"]},
                "distill": {"recipe": ["distill"]},
                "sft_distill": {"recipe": ["sft", "distill"]},
            },  # fmt: skip
        }
    )


def test_plan_gives_distill_the_ppo_gold_policy_from_its_own_start():
    s = suite()
    runs = {arm: build_run(s, arm, {"seed": 0}) for arm in s.arms}
    stages = {arm: {st.kind: st for st in stage_order([r.eval])} for arm, r in runs.items()}
    teacher = stages["distill"]["distill"].inputs["teacher"]
    # the oracle arm's own stage: the same key, so it is trained once for both arms
    assert teacher.key == stages["ppo_gold"]["ppo_gold"].key
    assert teacher.params["train"]["kl_coef"] == 0.2  # the suite's stages.ppo_gold
    # after SFT, the teacher is PPO on gold from the SFT policy: the student's start
    sft_teacher = stages["sft_distill"]["distill"].inputs["teacher"]
    assert sft_teacher.inputs["model"].key == stages["sft"]["sft"].key != teacher.key
    # the student buys nothing: the arm spends no annotation units
    assert not any(runs["distill"].bought.values())
    # the distill stage's own settings are in its key, the teacher's through its input
    assert stages["distill"]["distill"].params["train"]["episodes"] == 64
    assert trained_kinds(s.arms["sft_distill"]) == ["sft", "distill", "ppo_gold"]


def test_a_teacher_must_buy_nothing():
    assert SPECS["distill"].teacher == "ppo_gold"
    # buys data, makes no policy, needs a reward model (grpo: when its settings say so), a student, internal
    for kind in ("sft", "rm", "ppo", "grpo", "distill", "eval"):
        bad = dataclasses.replace(distill.SPEC, teacher=kind)
        with pytest.raises(TypeError, match=f"teacher '{kind}' must be a recipe stage that trains a policy"):
            bad.check_teacher(SPECS)
    distill.SPEC.check_teacher(SPECS)  # ppo_gold: reads the task, buys nothing


def test_every_setting_is_documented():
    assert all(f.description for f in DistillSettings.model_fields.values())
    with pytest.raises(ValueError, match="less than or equal to 1"):
        DistillSettings(beta=1.5)


def test_distill_is_an_oracle_bound_and_not_the_gold_scales_oracle():
    assert RECIPE_STAGES["distill"].role is Role.ORACLE and RECIPE_STAGES["distill"].data is None
    roles = Roles({"base": [], "sft": ["sft"], "ppo_gold": ["ppo_gold"], "distill": ["distill"]})
    assert roles.oracles == ("ppo_gold", "distill") and roles.label("distill") == "distill (oracle bound)"
    assert roles.preference is None  # never the competitor the claims compare with SFT
    assert roles.gold_optimisers == ("ppo_gold",)
    results = pd.DataFrame(
        [
            {"arm": a, "split": "id", "seed": 0, "gold_reward": g}
            for a, g in (("base", 0.2), ("sft", 0.4), ("ppo_gold", 0.9), ("distill", 0.5))
        ]  # fmt: skip
    )
    assert gold_scale(results, roles)["oracle"] == 0.9  # PPO on gold alone, not the mean with its student
    # drawn apart in the figures: both square, the first oracle black, the next grey
    assert [arm_style(roles, a, i) for i, a in enumerate(roles.names)][1:] == [
        ("C1", "o"), ("black", "s"), ("dimgray", "s")]  # fmt: skip


# -- tier 2: a smoke run on tiny models built here ------------------------------------------------------------
@pytest.fixture(scope="module")
def peaked_teacher_dir(tmp_path_factory, tiny_policy_dir, task):
    """The tiny policy pretrained further on one review only: a peaked teacher the student can match."""
    path = tmp_path_factory.mktemp("teacher")
    model, tokenizer = load_policy(tiny_policy_dir)
    corpus = [p + " great fun great fun" for p in task.prompts("train")]
    pretrain(model, tokenizer, corpus, steps=60, batch_size=16, lr=3e-3, seed=0, desc="teacher")
    save_model(model, tokenizer, path)
    return path


def reverse_kl(student, teacher, tokenizer, prompts, seed) -> float:
    """Mean over the student's own samples of sum_t log pi_s(y_t) - log pi_t(y_t): the sampled reverse KL."""
    s = sample(student, tokenizer, prompts, 4, 8, 1.0, seed=seed)
    lp_s = token_logprobs(student, tokenizer, s.prompts, s.completion_ids, 1.0)
    lp_t = token_logprobs(teacher, tokenizer, s.prompts, s.completion_ids, 1.0)
    return sum(float(a.sum() - b.sum()) for a, b in zip(lp_s, lp_t)) / len(lp_s)


def test_distill_moves_the_student_to_its_teacher(tmp_path, task, tiny_policy_dir, peaked_teacher_dir):
    settings = DistillSettings(episodes=192, batch_size=16, lr=3e-3, max_new_tokens=8)
    inputs = {"model": tiny_policy_dir, "teacher": peaked_teacher_dir}
    run_stage("distill", {"train": settings.model_dump(), "seed": 0, "task": TASK}, tmp_path, inputs, CTX)
    history = json.loads((tmp_path / "log_history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3])  # the per-token reverse KL falls
    start, tokenizer = load_policy(tiny_policy_dir)
    student, teacher = load_policy(tmp_path)[0], load_policy(peaked_teacher_dir)[0]
    changed = [
        n for n, p in student.named_parameters() if not torch.equal(p, dict(start.named_parameters())[n])
    ]
    assert len(changed) == len(list(start.parameters()))  # every weight moved
    # measured our own way, on fresh samples: the student is far closer to its teacher than it started
    prompts = task.prompts("id")[:8]
    before, after = (
        reverse_kl(start, teacher, tokenizer, prompts, 1),
        reverse_kl(student, teacher, tokenizer, prompts, 1),
    )
    assert after < 0.5 * before, (before, after)
    assert not (tmp_path / "trainer").exists()


def test_distill_with_lora_stores_its_adapter(tmp_path, tiny_policy_dir, peaked_teacher_dir):
    settings = DistillSettings(episodes=16, batch_size=8, lr=1e-2, max_new_tokens=4, lora_r=4)
    inputs = {"model": tiny_policy_dir, "teacher": peaked_teacher_dir}
    run_stage("distill", {"train": settings.model_dump(), "seed": 0, "task": TASK}, tmp_path, inputs, CTX)
    assert (tmp_path / "adapter_config.json").exists() and not (tmp_path / "model.safetensors").exists()
    start, trained = load_policy(tiny_policy_dir)[0], load_policy(tmp_path)[0]  # merged onto its start
    a, b = dict(start.base_model.named_parameters()), dict(trained.base_model.named_parameters())
    assert not torch.equal(a["h.0.attn.c_attn.weight"], b["h.0.attn.c_attn.weight"])
    assert torch.equal(a["wte.weight"], b["wte.weight"])  # LoRA leaves the embeddings


def test_distill_scores_padded_prompts_at_their_own_positions(
    tmp_path, task, tiny_policy_dir, peaked_teacher_dir
):
    """The trainer runs the backbones directly: a left-padded prompt's hidden states equal the unpadded ones."""
    settings = DistillSettings(episodes=16, batch_size=8, max_new_tokens=4)
    job = Job(settings, 0, TASK)
    trainer = distill.build_trainer(
        job, tmp_path, {"model": tiny_policy_dir, "teacher": peaked_teacher_dir}, CTX
    )
    tokenizer = trainer.processing_class
    prompt, other = task.prompts("train")[:2]
    short = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    long = tokenizer(other + " " + prompt, add_special_tokens=False)["input_ids"]
    ids, mask = left_pad([short, long], tokenizer.pad_token_id)
    for model in (trainer.model, trainer.teacher_model):
        model.eval()
        with torch.no_grad():
            padded = trainer._get_last_hidden_state(model, ids, mask, logits_to_keep=1)[0]
            width = len(short)
            alone = trainer._get_last_hidden_state(
                model, ids[:1, -width:], mask[:1, -width:], logits_to_keep=1
            )[0]
        assert torch.allclose(padded, alone, atol=1e-5)
    # TRL tokenises the prompts as our sampler does (no special tokens added), and never samples pad
    assert trainer._tokenize_prompts([prompt])[0] == [short]
    assert trainer.generation_config.suppress_tokens == [tokenizer.pad_token_id]


# -- tier 3: the arm beside SFT and RL in a micro suite, end to end ---------------------------------------------
MICRO_DISTILL = """
name: micro_distill
description: on-policy distillation from the oracle beside SFT and RL, at micro size
task: {name: reviews, train_prompts: 64, eval_prompts: 4}
base:
  tiny: {n_layer: 1, n_head: 2, n_embd: 32, corpus_size: 1000, steps: 60, batch_size: 32}
budget: {units: 32, cost: {demonstration: 4, comparison: 1}}
stages:
  sft: {epochs: 1, batch_size: 8}
  rm: {epochs: 1, batch_size: 8}
  ppo: {episodes: 16, rollout_batch_size: 8, max_new_tokens: 8}
  ppo_gold: {episodes: 16, rollout_batch_size: 8, max_new_tokens: 8}
  distill: {episodes: 16, batch_size: 8, max_new_tokens: 8}
arms:
  base: {recipe: []}
  sft: {recipe: [sft]}
  ppo: {recipe: [rm, ppo]}
  ppo_gold: {recipe: [ppo_gold]}
  distill: {recipe: [distill]}
grid: {seed: [0]}
eval: {samples_per_prompt: 2, max_new_tokens: 8}
"""


@pytest.mark.slow
def test_distill_arm_end_to_end(tmp_path):
    path = tmp_path / "micro_distill.yaml"
    path.write_text(textwrap.dedent(MICRO_DISTILL))
    out = tmp_path / "report"
    assert main(["run", str(path), "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    results = pd.read_csv(out / "results.csv")
    mine = results[results["arm"] == "distill"].set_index("split")
    assert set(mine.index) >= {"id", "prior"}  # gold on every split, the prior ability among them
    assert mine[["gold_reward", "kl_to_base"]].notna().all().all()
    assert (mine[["n_demonstrations", "n_comparisons", "n_labels"]] == 0).all().all()  # spends no units
    logs = pd.read_csv(out / "training_logs.csv")
    assert {"distill", "ppo_gold"} <= set(
        logs.loc[logs["arm"] == "distill", "stage"]
    )  # the teacher is upstream
    # one teacher for both arms: the cache holds one ppo_gold stage
    assert len(list((tmp_path / "cache").glob("ppo_gold-*"))) == 1
    report = (out / "report.md").read_text()
    assert "| **distill (oracle bound)** |" in report
    assert "| distill | base → distill (teacher: ppo_gold) | 0 | 0 | 0 | 0 | 0 |" in report
