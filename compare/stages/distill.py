"""Stage `distill`: on-policy distillation from a stronger policy of the same suite, with TRL's DistillationTrainer.

The student samples, the teacher scores every token, the loss is the per-token reverse KL (Agarwal et al.
2024, "On-Policy Distillation of Language Models", GKD; Thinking Machines 2025, "On-Policy Distillation"):

    1. sample   one completion y per training prompt x from the student pi_s at `temperature`
    2. score    the teacher pi_t's next-token distribution at every completion position, y_<t given
    3. loss     mean over completion tokens (EOS included) of KL(pi_s(. | x, y_<t) || pi_t(. | x, y_<t))
                = sum_v pi_s(v) (log pi_s(v) - log pi_t(v)), both at `temperature`; one AdamW step per
                `batch_size` prompts, then sample again from the updated student

TRL 1.16's `DistillationTrainer` does exactly this with `beta` = 1 (its generalised Jensen-Shannon
divergence: 0 is forward KL, 1 reverse KL; `tests/test_distill.py` pins the convention). It
computes the reverse KL over the whole vocabulary at each position: the exact expectation of Thinking
Machines' one-sample estimate log pi_s(y_t) - log pi_t(y_t), with the prefix held fixed (their discount
of zero: each position is trained to pick its next token, not to steer later ones). The trainer is used
as it is, with two corrections for this harness's models:

- positions: it runs the student's and the teacher's backbones directly (not the LM head model, whose
  `generate` takes positions from the mask), with no position ids, so a left-padded prompt's GPT-2
  positions would shift between sampling and scoring (docs/ppo.md row 2); `use_mask_positions` on both
  backbones supplies `cumsum(mask) - 1`;
- pad: our sampler never samples the pad token (`compare.lm.sampling.scaled_logits`); generation here
  suppresses it too. The loss still normalises over the whole vocabulary, pad included, where both
  models put almost no mass (pretraining never has pad as a target).

The teacher is the spec's `teacher`: the `ppo_gold` policy (our PPO on the gold reward) trained from the
student's start with the suite's `stages.ppo_gold` settings, the same stage an arm `[ppo_gold]` trains (the
plan builds it once). A stronger policy of the same suite that no annotation buys a better version of.
Its cost cannot be counted in annotation units: PPO reads the gold reward of every rollout, which no
annotation unit buys and fairness rule 3 (docs/design.md) keeps from every competitor. So the stage's role
is `ORACLE`: the arm is an upper bound like `ppo_gold` (labelled "oracle bound", never a competitor in the
claims, out of the gold-per-unit table), which shows how much of the oracle's gain a student recovers from
its own samples and the teacher's log-probs. It spends no annotation units.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from compare.compute import Tokens, rollouts
from compare.lm.loading import load_policy
from compare.lm.sampling import use_mask_positions
from compare.stages.common import (
    Context,
    lora_config,
    make_task,
    train_and_save,
    train_prompt_tokens,
    trainer_args,
)
from compare.stages.rloo import episode_prompts
from compare.stages.spec import LORA_HELP, Job, Memory, Role, StageSpec, TrainingSettings, TrainSettings


class DistillSettings(TrainingSettings):
    """TRL's DistillationTrainer: the student's own samples, the teacher's per-token distribution."""

    episodes: int = Field(512, ge=1, description="Training prompts in all, one sampled completion each.")
    batch_size: int = Field(16, ge=1, description="Prompts (completions) per optimiser step.")
    lr: float = Field(3e-4, gt=0, description="Peak learning rate (linear decay to 0).")
    beta: float = Field(
        1.0,
        ge=0,
        le=1,
        description="TRL's divergence: 1 reverse KL (on-policy distillation), 0 forward KL, 0.5 "
        "Jensen-Shannon; it selects the divergence to the teacher, not a KL penalty to the start.",
    )
    temperature: float = Field(
        1.0, gt=0, description="Sampling temperature, also applied to both models' logits in the loss."
    )
    max_new_tokens: int = Field(
        32, ge=1, description="Longest sampled completion (keep it at eval.max_new_tokens)."
    )
    lora_r: int | None = Field(None, ge=1, description=LORA_HELP)


def run(job: Job, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    trainer = build_trainer(job, out, inputs, ctx)
    train_and_save(trainer, out, ctx)


def build_trainer(job: Job, out: Path, inputs: dict[str, Path], ctx: Context):
    """The configured DistillationTrainer, ready to train (split from `run` so tests can inspect it)."""
    from trl import DistillationConfig, DistillationTrainer

    settings = job.settings
    task = make_task(
        job.task
    )  # the training prompts only; the gold reward reaches the student via the teacher
    data = episode_prompts(task, settings.episodes, f"distill-{job.seed}")
    model, tokenizer = load_policy(str(inputs["model"]))
    teacher, _ = load_policy(str(inputs["teacher"]))
    for lm in (model, teacher):  # the trainer runs the backbones directly: positions from the mask there
        use_mask_positions(lm.base_model)
    optimiser = TrainSettings.one_pass(settings)
    args = trainer_args(
        DistillationConfig,
        optimiser,
        job.seed,
        out,
        ctx,
        beta=settings.beta,
        temperature=settings.temperature,
        max_completion_length=settings.max_new_tokens,
        generation_kwargs={"suppress_tokens": [tokenizer.pad_token_id]},  # never sample pad, as our sampler
        disable_dropout=True,
    )
    return DistillationTrainer(
        model=model,
        teacher_model=teacher,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora_config(settings.lora_r, "CAUSAL_LM"),
    )


def workload(s: DistillSettings) -> tuple[int, int, str]:
    """Its prompts are one dataset, built before training; one completion each."""
    tokens = s.episodes * s.max_new_tokens
    return s.episodes, tokens, f"{s.episodes} episodes x 1 completion x {s.max_new_tokens} tokens"


def compute(params: dict, folder: Path, inputs: dict, counter) -> Tokens:
    """One completion per episode, sampled by the student and scored by the teacher (forward), then one
    update of the student (forward and backward); the teacher's own training is its stage's count."""
    train = params["train"]
    prompt = train_prompt_tokens(params, counter)
    return rollouts(train["episodes"], prompt, train["max_new_tokens"], 2, 1)


SPEC = StageSpec(
    kind="distill",
    version=1,
    run=run,
    description="On-policy distillation from the ppo_gold policy (TRL DistillationTrainer): an oracle bound.",
    settings=DistillSettings,
    role=Role.ORACLE,  # its teacher optimised the gold reward (see the module's docstring)
    teacher="ppo_gold",
    reads_task=True,
    memory=Memory(trained=1, frozen=1, lora=2),  # student trained, teacher frozen; LoRA: both frozen
    strength="episodes",  # no penalty to the start: more of the teacher's signal moves it further
    objective=("loss", "reverse KL to the teacher per token ↓"),
    distributed=True,
    workload=workload,
    compute=compute,
)
