"""Stage `ppo`: RLHF with PPO against the reward model (`ppo_gold` runs it against the gold reward).

The project's own PPO (TRL removed its trainer); `docs/ppo.md` lists what it must get right, and "row N"
below points into that table. One rollout batch, top to bottom (see `train`):

    1. roll out      sample responses at temperature T with a KV cache (`compare.lm.sampling.sample`)
    2. score         reward-model score at the last token of prompt + response + EOS, or the gold reward;
                     minus a penalty for responses without EOS
    3. KL penalty    r_t = -beta * kl_t per token, the score added on the last response token
    4. whiten        optionally the rewards (scale only)
    5. GAE           advantages and returns from the value model's per-token values; advantages whitened
    6. updates       `ppo_epochs` passes, each a fresh permutation into `minibatches` minibatches; one AdamW
                     step per minibatch on the clipped policy loss + vf_coef * clipped value loss

Models: the policy; a frozen reference (a separate copy, or with LoRA the policy with its adapter
disabled); a value model initialised from the reward model (values = the RM's score head at every
position), or, for the gold reward, from the policy's body with a zero scalar head; the frozen RM (with
LoRA, the value model with its adapters disabled: two frozen bases, not four copies). Optionally in
bfloat16 (`bf16_weights`) and with activation checkpointing in the trained models.
Dropout is off in all of them (row 6). `accelerate` places them and runs backward, so `accelerate
launch` gives data parallelism: `rollout_batch_size` is the global batch, split over processes.

Writes the policy (with LoRA, its adapter on the policy it started from) and `log_history.json`: one entry per rollout batch ("step", "episode",
the docs/ppo.md metrics, "loss", "time/*"); every `gold_eval_every` batches the entry also has heldout/gold,
heldout/proxy (NaN for the gold reward) and heldout/kl, measured before that batch's update on a fixed
batch of ID prompts; a last entry (step = number of batches) holds them after the final update. And
`snapshots.jsonl`: held-out completions at a few checkpoints along training (`compare.stages.snapshots`).
Training stops with `NonFiniteError`, saving nothing, at the first rollout batch whose scores, rewards or
losses are nan or inf, whose updates leave a non-finite weight, or whose policy samples from non-finite
probabilities (see `check_batch`, `sampling`).

References: Schulman et al. 2017 (PPO); Ziegler et al. 2019 and Stiennon et al. 2020 (KL-penalised RLHF);
Huang et al. 2022/2024 ("The N(+) Implementation Details of RLHF with PPO"); CleanRL's ppo.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from compare.compute import Tokens, rollouts
from compare.lm.chat import prompt_token_ids, uses_chat
from compare.lm.loading import (
    device,
    ensure_pad_token,
    load_classifier,
    load_policy,
    save_model,
    save_trained_peft,
)
from compare.lm.sampling import (
    completion_logprobs,
    gather_logprobs,
    left_pad,
    per_token_scores,
    response_logits,
    reward_scores,
    right_pad,
    sample,
    sequence_scores,
)
from compare.metrics import sampled_kl
from compare.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    apply_missing_eos_penalty,
    entropy_from_logits,
    gae_advantages,
    kl_estimate,
    masked_whiten,
    per_token_rewards,
    policy_loss,
    value_loss,
)
from compare.stages.common import (
    Context,
    NonFiniteError,
    check_finite,
    lora_config,
    make_task,
    train_prompt_tokens,
    use_bf16,
    weight_dtype,
)
from compare.stages.snapshots import SnapshotSettings, snapshot_steps, take_snapshot, write_snapshots
from compare.stages.spec import Job, Memory, Produces, Role, StageSpec, TrainingSettings
from compare.tracking import StageLogger

SEED_STRIDE = 100003  # per-process seed offset (row 19)


# -- settings --------------------------------------------------------------------------------------------
class PPOSettings(TrainingSettings, SnapshotSettings):
    """Our PPO (docs/ppo.md): rollouts, reward-model score, per-token KL penalty, GAE, clipped updates."""

    episodes: int = Field(1024, ge=1, description="Prompts rolled out in all (rollout batches x batch size).")
    rollout_batch_size: int = Field(64, ge=2, description="Prompts per rollout batch.")
    minibatches: int = Field(1, ge=1, description="Minibatches per PPO epoch (one optimiser step each).")
    ppo_epochs: int = Field(4, ge=1, description="Passes over each rollout batch.")
    lr: float = Field(3e-4, gt=0, description="AdamW learning rate (eps 1e-5); tiny models need large ones.")
    lr_decay: bool = Field(False, description="Decay the learning rate linearly to 0 over training.")
    temperature: float = Field(0.7, gt=0, description="Rollout temperature, used in every log-prob too.")
    max_new_tokens: int = Field(32, ge=1, description="Longest response.")
    kl_coef: float = Field(0.05, ge=0, description="KL penalty coefficient (initial value when adaptive).")
    kl_estimator: Literal["k1", "k3"] = Field("k1", description="Per-token KL estimator in the penalty.")
    target_kl: float | None = Field(
        None, gt=0, description="If set, adapt kl_coef towards this KL (Ziegler et al.)."
    )
    kl_horizon: int = Field(10000, ge=1, description="Horizon of the adaptive KL controller.")
    whiten_rewards: bool = Field(False, description="Whiten per-token rewards (masked, mean kept).")
    missing_eos_penalty: float | None = Field(1.0, ge=0, description="Subtracted from responses without EOS.")
    gamma: float = Field(1.0, ge=0, le=1, description="GAE discount.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda.")
    clip_eps: float = Field(0.2, gt=0, description="Policy ratio clip range.")
    vf_coef: float = Field(0.1, ge=0, description="Value loss coefficient.")
    vf_clip: float = Field(0.2, gt=0, description="Value clip range.")
    gold_eval_every: int = Field(
        2, ge=1, description="Rollout batches between gold checks on a fixed held-out batch."
    )
    gold_eval_prompts: int = Field(32, ge=1, description="Prompts in that fixed held-out batch.")
    lora_r: int | None = Field(
        None,
        ge=1,
        description="Train LoRA adapters of this rank (peft) on the policy and the value model instead of "
        "all weights; the reference is the policy with its adapter disabled.",
    )

    @model_validator(mode="after")
    def _batches_fit(self):
        """Checked when the suite is loaded, as TRL's configs do in __post_init__: at least one rollout
        batch, and a batch that splits into its minibatches (each of at least 2 responses)."""
        if self.episodes < self.rollout_batch_size:
            raise ValueError(
                f"episodes ({self.episodes}) must be at least rollout_batch_size ({self.rollout_batch_size}): "
                "PPO rolls out whole batches"
            )
        if self.rollout_batch_size < 2 * self.minibatches:
            raise ValueError(
                f"rollout_batch_size ({self.rollout_batch_size}) must hold at least 2 responses per minibatch "
                f"({self.minibatches} minibatches)"
            )
        return self


# -- models ----------------------------------------------------------------------------------------------
@dataclass
class Models:
    policy: torch.nn.Module  # a peft model when training LoRA
    ref: torch.nn.Module | None  # None with LoRA: the reference is the policy with its adapter disabled
    value: torch.nn.Module  # a sequence-classification model; its head gives per-token values
    # None for the gold reward, and with LoRA (then it is the value model with its adapters disabled)
    rm: torch.nn.Module | None
    tokenizer: object
    value_adapters: torch.nn.Module | None = None  # with LoRA: the peft model around `value`
    shares_rm: bool = False  # the reward model is `value` with its adapters disabled (LoRA)


@contextmanager
def reward_model(models: Models):
    """The frozen reward model, or None for the gold reward: its own copy, or with LoRA the value model with
    its adapters disabled, which is the reward model itself (the value model starts as a copy of it, and
    peft's disabled adapters give back its linear layers and its scalar head; row 20's sharing for the RM)."""
    if not models.shares_rm:
        yield models.rm
    else:
        with models.value_adapters.disable_adapter():
            yield models.value


def disable_dropout(model: torch.nn.Module) -> None:
    """Row 6: dropout off, in `nn.Dropout` modules and in attention that takes a float probability."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name in ("attention_dropout", "dropout"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


def load_models(
    inputs: dict[str, Path],
    reward: str,
    lora_r: int | None,
    dtype: torch.dtype = torch.float32,
    checkpointing: bool = False,
) -> Models:
    """Policy, reference, value model and reward model, in `dtype`; with LoRA the reference and the reward
    model are no copies but the policy's and the value model's frozen bases (adapters disabled).
    `checkpointing`: activation checkpointing in the two trained models."""
    from transformers import AutoTokenizer

    policy_path = str(inputs["model"])
    policy, tokenizer = load_policy(policy_path, dtype=dtype)
    ref = None
    if checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora_r:
        from peft import get_peft_model

        policy = get_peft_model(policy, lora_config(lora_r, "CAUSAL_LM"))
    else:
        # a separate frozen copy (row 20)
        ref = load_policy(policy_path, dtype=dtype)[0].requires_grad_(False)
    rm = None
    if reward == "model":
        rm_path = str(inputs["reward_model"])
        if (
            AutoTokenizer.from_pretrained(rm_path, trust_remote_code=False).get_vocab()
            != tokenizer.get_vocab()
        ):
            raise ValueError(f"the reward model at {rm_path} must share the policy's tokenizer")
        if not lora_r:  # with LoRA, the value model's base (see `reward_model`)
            rm = load_classifier(rm_path, dtype=dtype).requires_grad_(False)
        value = load_classifier(rm_path, dtype=dtype)  # a critic that knows the reward
    elif reward == "gold":
        value = load_classifier(policy_path, num_labels=1, dtype=dtype)
        torch.nn.init.zeros_(value.score.weight)
        if getattr(value.score, "bias", None) is not None:
            torch.nn.init.zeros_(value.score.bias)
    else:
        raise ValueError(f"reward must be 'model' or 'gold', got {reward!r}")
    for model in (value, rm):
        if model is not None:
            ensure_pad_token(model, tokenizer)
    if checkpointing:
        value.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    value_adapters = None
    if lora_r:  # the value model trains adapters and its head; it is called through its own classes
        from peft import get_peft_model

        value_adapters = get_peft_model(value, lora_config(lora_r, "SEQ_CLS"))
        value = value_adapters.get_base_model()
    for model in (policy, ref, value, rm):
        if model is not None:
            disable_dropout(model)
            model.to(device())
    return Models(
        policy, ref, value, rm, tokenizer, value_adapters, shares_rm=reward == "model" and bool(lora_r)
    )


@contextmanager
def reference(models: Models):
    """The frozen reference policy (row 20): its own copy, or the LoRA policy with the adapter disabled."""
    if models.ref is not None:
        yield models.ref
    else:
        with models.policy.disable_adapter():
            yield models.policy


class PolicyAndValue(torch.nn.Module):
    """Policy and value model as one module, so one optimiser and one DDP wrapper serve both (as TRL)."""

    def __init__(self, policy: torch.nn.Module, value: torch.nn.Module) -> None:
        super().__init__()
        self.policy, self.value = policy, value

    def forward(self, batch: Batch, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        return policy_logits(self.policy, batch, temperature), compute_values(self.value, batch)


# -- one rollout batch as tensors ------------------------------------------------------------------------
@dataclass
class Batch:
    """Prompts left-padded (B, P); responses right-padded (B, T), pad after the first EOS (row 7)."""

    prompts: list[str]
    completions: list[str]  # decoded responses, as `sample` writes them (for the gold reward)
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    mask: torch.Tensor  # (B, T) bool: valid response positions; the EOS itself is valid (row 1)
    has_eos: torch.Tensor  # (B,) bool: the response ended with EOS (an EOS in the prompt does not count)

    def rows(self, index: torch.Tensor) -> Batch:
        pick = index.tolist()
        return Batch(
            [self.prompts[i] for i in pick],
            [self.completions[i] for i in pick],
            self.prompt_ids[index],
            self.prompt_mask[index],
            self.response_ids[index],
            self.mask[index],
            self.has_eos[index],
        )


def make_batch(tokenizer, prompts, completions, prompt_rows, response_rows, device) -> Batch:
    """Pad token rows into a `Batch`; `response_rows` are already cut after their first EOS."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    prompt_ids, prompt_mask = left_pad(prompt_rows, pad)
    response_ids, mask = right_pad(response_rows, pad)
    has_eos = torch.tensor([bool(r) and r[-1] == eos for r in response_rows])
    tensors = (prompt_ids, prompt_mask, response_ids, mask.bool(), has_eos)
    return Batch(list(prompts), list(completions), *(t.to(device) for t in tensors))


def rollout(
    policy, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float, seed: int
) -> Batch:
    """1. Roll out: one response per prompt, sampled at `temperature` by the shared sampler (row 3)."""
    samples = sample(policy, tokenizer, prompts, 1, max_new_tokens, temperature, seed)
    prompt_rows = prompt_token_ids(tokenizer, prompts)  # templated, with a chat template (as `sample`)
    dev = next(policy.parameters()).device
    return make_batch(tokenizer, prompts, samples.completions, prompt_rows, samples.completion_ids, dev)


def policy_logits(model, batch: Batch, temperature: float) -> torch.Tensor:
    """Logits / T predicting each response token (B, T, V); the same temperature everywhere (row 3)."""
    return response_logits(
        model, batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.mask, temperature
    )


def compute_values(value_model, batch: Batch) -> torch.Tensor:
    """V(prefix before response token t), (B, T): the value head at the position that predicts token t."""
    ids = torch.cat([batch.prompt_ids, batch.response_ids], 1)
    mask = torch.cat([batch.prompt_mask, batch.mask.to(batch.prompt_mask.dtype)], 1)
    return per_token_scores(value_model, ids, mask)[:, batch.prompt_ids.shape[1] - 1 : -1]


def score_responses(batch: Batch, tokenizer, penalty: float | None, rm=None, task=None) -> torch.Tensor:
    """2. Score (B,): the RM at the last token of prompt + response + EOS (row 8), or the gold reward.

    The RM was trained on texts with EOS appended (TRL's RewardTrainer), so a response without EOS gets one
    here; a response that ended with EOS already has it. Then `penalty` is subtracted from responses
    without EOS (row 9). With a chat template the RM reads the templated conversation of the decoded
    response instead (`reward_scores`), the text TRL's RewardTrainer trained it on.
    """
    if rm is not None and uses_chat(tokenizer):  # (rm: the model, or `reward_model(models)`)
        scores = torch.tensor(
            reward_scores(rm, tokenizer, batch.prompts, batch.completions), device=batch.mask.device
        )
    elif rm is not None:
        eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        spare = torch.full_like(batch.has_eos, pad, dtype=batch.response_ids.dtype).unsqueeze(1)
        ids = torch.cat([batch.prompt_ids, batch.response_ids, spare], 1)
        mask = torch.cat([batch.prompt_mask, batch.mask.long(), torch.zeros_like(spare)], 1)
        rows = (~batch.has_eos).nonzero().squeeze(1)
        end = batch.prompt_ids.shape[1] + batch.mask.sum(1)  # first slot after each response
        ids[rows, end[rows]], mask[rows, end[rows]] = eos, 1
        scores = sequence_scores(rm, ids, mask)
    else:
        gold = task.gold_rewards(batch.prompts, batch.completions)
        scores = torch.tensor(gold, dtype=torch.float32, device=batch.mask.device)
    if penalty is not None:
        scores = apply_missing_eos_penalty(scores, batch.has_eos, penalty)
    return scores


@torch.no_grad()
def heldout_metrics(
    models: Models, task, prompts: list[str], settings: PPOSettings, seed: int
) -> dict[str, float]:
    """Gold reward, RM score and sampled KL to the reference on a fixed held-out batch (same seed each time)."""
    policy, tokenizer, temperature = models.policy, models.tokenizer, settings.temperature
    samples = sample(policy, tokenizer, prompts, 1, settings.max_new_tokens, temperature, seed)
    with reference(models) as ref:
        ref_lp = completion_logprobs(ref, tokenizer, samples.prompts, samples.completion_ids, temperature)
    gold = task.gold_rewards(samples.prompts, samples.completions)
    with reward_model(models) as rm:
        proxy = reward_scores(rm, tokenizer, samples.prompts, samples.completions) if rm is not None else []
    return {
        "heldout/gold": sum(gold) / len(gold),
        "heldout/proxy": sum(proxy) / len(proxy) if proxy else math.nan,
        "heldout/kl": sampled_kl(
            samples.logprobs, ref_lp
        ),  # as evaluation measures KL (docs/design.md rule 5)
    }


def _proxy(models: Models, tokenizer):
    """The reward model's score of (prompts, completions), or None when the reward is the gold reward."""
    if models.rm is None:
        return None
    return lambda prompts, completions: reward_scores(models.rm, tokenizer, prompts, completions)


def prompt_batches(pool: list[str], batch_size: int, n_batches: int, seed: int):
    """Batches drawn from `pool` in seeded shuffled passes: the same order on every process (row 19)."""
    rng, queue = random.Random(seed), []
    for _ in range(n_batches):
        while len(queue) < batch_size:
            queue += rng.sample(pool, len(pool))
        yield queue[:batch_size]
        queue = queue[batch_size:]


# -- the stage -------------------------------------------------------------------------------------------
def run(job: Job, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    """PPO against the reward model in `inputs["reward_model"]`."""
    run_ppo(job, out, inputs, ctx, reward="model")


def run_ppo(job: Job, out: Path, inputs: dict[str, Path], ctx: Context, reward: str) -> None:
    """PPO on `reward`: "model" (the arm's reward model) or "gold" (the task's gold reward; an oracle)."""
    settings = job.settings
    accelerator = make_accelerator(settings.bf16_cpu)
    task = make_task(job.task, inputs)  # with the judge model, for a task whose gold is one
    models = load_models(
        inputs, reward, settings.lora_r, weight_dtype(settings), settings.gradient_checkpointing
    )
    snapshots: list[dict] = []
    history = train(models, task, settings, job.seed, accelerator, ctx, snapshots)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_policy(models, out)
        (out / "log_history.json").write_text(json.dumps(history, indent=1))
        write_snapshots(out, snapshots)


def save_policy(models: Models, out: Path) -> None:
    """The trained policy and its tokenizer: with LoRA its adapter on the policy it started from
    (`compare.lm.loading.save_trained_peft`), otherwise its full weights.

    Raises `NonFiniteError`, saving nothing, if the policy (with LoRA, merged) has a nan or inf anywhere.
    """
    check = lambda policy: check_finite(policy, "policy weights after training")  # noqa: E731
    if models.ref is None:  # LoRA
        save_trained_peft(models.policy, models.tokenizer, out, check)
        return
    check(models.policy)
    save_model(models.policy, models.tokenizer, out)


# Means over the rollout batch (and processes), each nan or inf exactly when one of its terms is: the
# scores, the KL to the reference, the reward with its KL penalty, the minibatch losses. Root cause first.
CHECKED = ("objective/scores", "objective/kl", "objective/rlhf_reward", "loss", "loss/policy", "loss/value")


def check_batch(entry: dict, stats: list[dict], step: int) -> None:
    """Raise `NonFiniteError` if one rollout batch's scores, rewards or minibatch losses were not finite.

    Reads the batch's reduced metrics (already on the host), so it costs no device sync and every process
    sees the same values; the first minibatch at fault is looked up only when raising.
    """
    bad = [k for k in CHECKED if not math.isfinite(entry[k])]
    if not bad:
        return
    what = ", ".join(f"{k} is {entry[k]}" for k in bad)
    local = [i for i, d in enumerate(stats) if not bool(torch.isfinite(d["loss"]))]
    where = f" (first at minibatch update {local[0] + 1} of {len(stats)})" if local else ""
    raise NonFiniteError(f"{what} at step {step}{where}")


# what torch.multinomial says of nan, inf or all-zero probabilities (on the CPU and on CUDA)
BAD_PROBABILITIES = ("probability tensor contains either", "invalid multinomial distribution")


@contextmanager
def sampling(step: int):
    """Sampling from the policy at `step`: its overflowing logits become a `NonFiniteError`.

    Weights can stay finite yet be so large that the logits overflow (one huge update, after which no loss
    was computed); the sampler then fails inside torch.multinomial.
    """
    try:
        yield
    except RuntimeError as e:
        if isinstance(e, NonFiniteError) or not any(m in str(e) for m in BAD_PROBABILITIES):
            raise
        raise NonFiniteError(
            f"the policy's next-token probabilities are not finite when sampling at step {step} "
            f"(after {step} rollout batch(es) of updates): {e}"
        ) from e


def make_accelerator(bf16_cpu: bool = False):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    precision = "bf16" if use_bf16(bf16_cpu) else "no"

    state = AcceleratorState._shared_state  # one per process: a stage before this one may have set another
    if state and str(state.get("_mixed_precision", precision)) != precision:
        AcceleratorState._reset_state()  # as transformers' TrainingArguments does; the process group stays
    return Accelerator(cpu=device().type != "cuda", mixed_precision=precision)


def train(
    models: Models, task, settings: PPOSettings, seed: int, accelerator, ctx: Context, snapshots=None
) -> list[dict]:
    """PPO on `models` in place; returns the log history (one dict per rollout batch, and a final one).
    `snapshots`, a list: the held-out samples of `snapshot_steps` are appended to it (main process)."""
    s = settings
    world, rank = accelerator.num_processes, accelerator.process_index
    n_batches = s.episodes // s.rollout_batch_size
    local_size = s.rollout_batch_size // world
    if n_batches < 1 or s.rollout_batch_size % world or local_size < max(2, s.minibatches):
        raise ValueError(
            f"need episodes >= rollout_batch_size ({s.episodes} < {s.rollout_batch_size}?) and a "
            f"rollout batch that splits into {world} processes x at least {s.minibatches} minibatches"
        )
    process_seed = seed + rank * SEED_STRIDE  # decorrelated sampling, same data order (row 19)
    torch.manual_seed(process_seed)
    seeds = random.Random(process_seed)
    tokenizer, temperature = models.tokenizer, s.temperature

    wrapper = PolicyAndValue(models.policy, models.value).train()
    trainable = [p for p in wrapper.parameters() if p.requires_grad]
    # eps (row 18); foreach: one fused update over all tensors, the same numbers as the per-tensor loop
    optimizer = torch.optim.AdamW(trainable, lr=s.lr, eps=1e-5, weight_decay=0.0, foreach=True)
    wrapper, optimizer = accelerator.prepare(wrapper, optimizer)
    models.policy = accelerator.unwrap_model(wrapper).policy  # the same object, for sampling and saving
    for frozen in (models.ref, models.rm):
        if frozen is not None:
            frozen.to(accelerator.device).eval()
    if s.target_kl is None:
        kl_ctl = FixedKLController(s.kl_coef)
    else:
        kl_ctl = AdaptiveKLController(s.kl_coef, s.target_kl, s.kl_horizon)
    heldout_prompts = task.prompts("id")[: s.gold_eval_prompts]

    def heldout(step: int) -> dict[str, float]:
        if not accelerator.is_main_process:
            return {}
        with accelerator.autocast(), sampling(step):
            return heldout_metrics(models, task, heldout_prompts, s, seed)

    snapshot_prompts = task.prompts("id")[: s.snapshot_prompts]
    snap_at = set(snapshot_steps(n_batches, s.snapshots)) if snapshots is not None else set()

    def snapshot(step: int) -> None:
        """Held-out samples after `step` rollout batches of updates; draws from no training RNG."""
        if step in snap_at and accelerator.is_main_process:
            with accelerator.autocast(), sampling(step):
                snapshots.extend(take_snapshot(
                    models.policy, reference(models), tokenizer, task, snapshot_prompts,
                    _proxy(models, tokenizer), s.max_new_tokens, temperature, seed, step,
                ))  # fmt: skip

    history = []
    with StageLogger(ctx if rank == 0 else dataclasses.replace(ctx, report_to=()), s.model_dump()) as logger:
        batches = prompt_batches(task.prompts("train"), s.rollout_batch_size, n_batches, seed)
        show_bar = (ctx.progress or ctx.verbose) and rank == 0
        bar = tqdm(batches, total=n_batches, desc="ppo", leave=False, disable=not show_bar)
        for step, prompts in enumerate(bar):
            entry = {"step": step, "episode": (step + 1) * s.rollout_batch_size}
            t0 = time.perf_counter()
            if step % s.gold_eval_every == 0:
                entry.update(heldout(step))  # measured before this batch's update, i.e. after `step` updates
            snapshot(step)
            t1 = time.perf_counter()
            if s.lr_decay:  # linear to 0 over the rollout batches (CleanRL)
                optimizer.param_groups[0]["lr"] = s.lr * (1.0 - step / n_batches)

            with torch.no_grad(), accelerator.autocast():
                # 1. roll out; old log-probs, reference log-probs and values once per batch (rows 3-5)
                local_prompts = prompts[rank::world]
                sample_seed = seeds.getrandbits(63)
                with sampling(step):
                    batch = rollout(
                        models.policy, tokenizer, local_prompts, s.max_new_tokens, temperature, sample_seed
                    )
                t2 = time.perf_counter()
                mask = batch.mask
                # With one minibatch, the first epoch's update starts from these weights on this whole batch:
                # its forward pass is this one, kept with its graph (reused below) instead of run twice. It
                # runs on the rows in the first epoch's order (drawn here, as the loop would draw it: nothing
                # in between draws from torch's generator), so the update sums its gradients in the same order.
                reuse = s.minibatches == 1
                if reuse:
                    first_order = torch.randperm(local_size, device=mask.device)
                    with torch.enable_grad():
                        first = wrapper(batch.rows(first_order), temperature)
                    back = torch.argsort(first_order)
                    logits, values = first[0].detach()[back], first[1].detach()[back]
                else:
                    logits = policy_logits(models.policy, batch, temperature)
                    values = compute_values(models.value, batch)
                logprobs = gather_logprobs(logits, batch.response_ids)
                entropy = entropy_from_logits(logits, mask)
                del logits
                with reference(models) as ref:
                    ref_logprobs = gather_logprobs(policy_logits(ref, batch, temperature), batch.response_ids)

                # 2. score: RM or gold, missing-EOS penalty
                with reward_model(models) as rm:
                    scores = score_responses(batch, tokenizer, s.missing_eos_penalty, rm, task)
                t3 = time.perf_counter()

                # 3. KL penalty: per token, score on the last response token (rows 10-11)
                kl = kl_estimate(logprobs, ref_logprobs, s.kl_estimator)
                rewards, non_score_reward = per_token_rewards(scores, kl, mask, kl_ctl.value)

                # 4. whiten rewards (optional, mean kept; row 13)
                if s.whiten_rewards:
                    rewards = masked_whiten(rewards, mask, shift_mean=False)

                # 5. GAE, then whiten the advantages over valid tokens (row 14)
                advantages, returns = gae_advantages(rewards, values, mask, s.gamma, s.lam)
                advantages = masked_whiten(advantages, mask)

            # 6. clipped updates: epochs x minibatches optimiser steps (rows 15-17)
            stats = []
            for epoch in range(s.ppo_epochs):
                first_epoch = epoch == 0 and reuse
                order = first_order if first_epoch else torch.randperm(local_size, device=mask.device)
                for index in torch.tensor_split(order, s.minibatches):
                    mb, mb_mask = batch.rows(index), mask[index]
                    if first_epoch:  # the rollout-time forward, on these rows in this order
                        new_logits, new_values = first
                        del first
                    else:
                        with accelerator.autocast():
                            new_logits, new_values = wrapper(mb, temperature)
                    new_logprobs = gather_logprobs(new_logits, mb.response_ids)
                    pg_loss, pg_stats = policy_loss(
                        new_logprobs, logprobs[index], advantages[index], mb_mask, s.clip_eps
                    )
                    vf_loss, vf_stats = value_loss(
                        new_values.float(), values[index], returns[index], mb_mask, s.vf_clip
                    )
                    loss = pg_loss + s.vf_coef * vf_loss
                    accelerator.backward(loss)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    stats.append(
                        {
                            "loss": loss.detach(),
                            "loss/policy": pg_loss.detach(),
                            "loss/value": vf_loss.detach(),
                            "policy/approxkl": pg_stats["approxkl"],
                            "policy/clipfrac": pg_stats["clipfrac"],
                            "val/clipfrac": vf_stats["vf_clipfrac"],
                            "val/ratio": pg_stats["ratio"],
                        }
                    )
            t4 = time.perf_counter()

            # metrics, all masked (row 21). kl, entropy and non_score_reward are per-response sums (as TRL
            # reports them); entropy is exact, from the tempered logits; kl is the estimator trained on
            with torch.no_grad():
                seq_kl = torch.where(mask, kl, 0.0).sum(1)
                metrics = {
                    "objective/kl": seq_kl.mean(),
                    "objective/entropy": entropy.sum(1).mean(),
                    "objective/non_score_reward": non_score_reward.sum(1).mean(),
                    "objective/rlhf_reward": (scores + non_score_reward.sum(1)).mean(),  # score - beta sum KL
                    "objective/scores": scores.mean(),
                    "objective/kl_coef": torch.tensor(float(kl_ctl.value)),
                    "val/num_eos": batch.has_eos.float().mean(),
                    "val/mean_length": mask.float().sum(1).mean(),
                    **{k: torch.stack([d[k].float() for d in stats]).mean() for k in stats[0]},
                }
                names = list(metrics)
                reduced = accelerator.reduce(
                    torch.stack([metrics[k].float().to(mask.device) for k in names]), "mean"
                )
            entry.update({k: float(v) for k, v in zip(names, reduced.tolist())})
            check_batch(entry, stats, step)
            check_finite(accelerator.unwrap_model(wrapper), f"weights after the updates of step {step}")
            entry["lr"] = optimizer.param_groups[0]["lr"]
            timings = {"heldout": t1 - t0, "generation": t2 - t1, "scoring": t3 - t2, "update": t4 - t3}
            entry.update({f"time/{k}": v for k, v in timings.items()})
            kl_ctl.update(entry["objective/kl"], s.rollout_batch_size)
            history.append(entry)
            logger.log(entry, step)

        final = {"step": n_batches, "episode": n_batches * s.rollout_batch_size}
        history.append({**final, **heldout(n_batches)})  # after the last update
        snapshot(n_batches)
        logger.log(history[-1], n_batches)
    return history


def workload(s: PPOSettings) -> tuple[int, int, str]:
    """What a run asks of the machine: the episodes' responses, plus the held-out gold checks."""
    checks = s.episodes // s.rollout_batch_size // s.gold_eval_every + 1
    heldout = checks * s.gold_eval_prompts + s.snapshots * s.snapshot_prompts
    tokens = (s.episodes + heldout) * s.max_new_tokens
    return 0, tokens, f"{s.episodes} episodes (+ {heldout} held-out prompts) x {s.max_new_tokens} tokens"


def compute(params: dict, folder: Path, inputs: dict, counter) -> Tokens:
    """Each episode's rollout through the policy, the reference, the reward model and the value model
    (forward), then `ppo_epochs` updates of the policy and the value model (forward and backward)."""
    train = params["train"]
    prompt = train_prompt_tokens(params, counter)
    return rollouts(train["episodes"], prompt, train["max_new_tokens"], 4, 2 * train["ppo_epochs"])


SPEC = StageSpec(
    kind="ppo",
    version=3,  # 2: a LoRA policy is stored as its adapter; 3: held-out snapshots along training
    run=run,
    description="PPO against the reward model (our own, docs/ppo.md).",
    settings=PPOSettings,
    role=Role.ONLINE_RL,
    needs_reward_model=True,
    produces=Produces.POLICY,
    reads_task=True,
    # policy and value trained, reference and reward model frozen; with LoRA the reference is the policy's
    # base and the reward model the value model's (adapters disabled): two frozen bases
    memory=Memory(trained=2, frozen=2, lora=2, forwards=2),
    strength="kl_coef",
    objective=("objective/rlhf_reward", "RM score − β·KL ↑"),
    distributed=True,
    workload=workload,
    compute=compute,
)
