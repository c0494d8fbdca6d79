"""From a validated suite to runs and a deduplicated DAG of stages.

A stage is identified by its kind, its own settings and its inputs' keys; two runs that need the same
base model, demonstrations, comparisons or SFT warm start name the same stage, which runs once.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from compare.basemodel import local_stamp
from compare.config import Suite, apply_point, arm_allocation, arm_point, arm_stages, grid_points

# Bump a kind's version when its code changes what it produces, so old cache entries are not reused.
STAGE_VERSIONS = {
    "base": 2,
    "demos": 1,
    "comparisons": 2,
    "sft": 1,
    "preferred_ft": 1,
    "dpo": 1,
    "rm": 1,
    "ppo": 1,
    "rloo": 1,
    "eval": 3,
    "judge_data": 1,
    "judge": 1,
}
TRAINING_KINDS = ("sft", "preferred_ft", "dpo", "rm", "ppo", "rloo", "judge")


@dataclass(frozen=True)
class Stage:
    kind: str
    params: dict[str, Any] = field(hash=False, compare=False)
    inputs: dict[str, Stage] = field(default_factory=dict, hash=False, compare=False)

    @cached_property
    def key(self) -> str:
        spec = {
            "kind": self.kind,
            "version": STAGE_VERSIONS[self.kind],
            "params": self.params,
            "inputs": {name: stage.key for name, stage in sorted(self.inputs.items())},
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.key}"

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stage) and other.key == self.key


@dataclass
class Run:
    """One arm at one grid point: its resolved settings and the stage that evaluates it."""

    arm: str
    point: dict[str, Any]
    suite: Suite
    n_demonstrations: int
    n_comparisons: int
    eval: Stage

    @property
    def seed(self) -> int:
        return int(self.point["seed"])

    @property
    def label(self) -> str:
        return " ".join([self.arm] + [f"{k}={v}" for k, v in self.point.items()])


# The task settings each stage reads; a stage's key holds only these, so sweeping a setting (say the
# annotator's flip rate) does not re-run stages that never see it (demonstrations, SFT, their evaluation).
TASK_FIELDS = {
    "base": ("name", "seed", "eval_prompts"),  # the tiny base's corpus (a dataset task's `data` too)
    "demos": ("name", "seed", "train_prompts", "demonstrator_quality"),
    "comparisons": ("name", "seed", "train_prompts", "annotator"),
    "online": ("name", "seed", "train_prompts", "eval_prompts"),
    "eval": ("name", "seed", "eval_prompts"),
    "judge": ("name",),  # the held-out split a dataset task's judge is trained on
}


def task_params(suite: Suite, use: str) -> dict[str, Any]:
    settings = suite.task.model_dump()
    # a dataset task's `data` block goes to every stage that reads the task; built-in tasks have none,
    # and their stage keys stay as they were
    fields = TASK_FIELDS[use] + (("data",) if settings["data"] is not None else ())
    return {k: settings[k] for k in fields}


def judge_stage(suite: Suite, base: Stage) -> Stage | None:
    """The gold reward model of a dataset task that trains one on a held-out split (`task.data.judge_split`).

    It starts from the base model and is trained with the rm stage's code on every pair of that split
    (`judge_data`); stages that read the gold reward take it as their input "judge".
    """
    data = suite.task.data
    if data is None or getattr(data, "judge_split", None) is None:
        return None
    pairs = Stage("judge_data", {"task": task_params(suite, "judge")})
    settings = {"train": data.judge_training, "seed": suite.task.seed}
    return Stage("judge", settings, {"model": base, "data": pairs})


def base_stage(suite: Suite) -> Stage:
    base = suite.base
    if base.external:  # copied into the cache as a plain model folder (compare/basemodel.py)
        source = {"model": base.model, "gguf_file": base.gguf_file, "package": base.package}
        if base.package:  # a new release of the package is a new model
            source["version"] = importlib.metadata.version(base.package)
        stamp = local_stamp(base.model, base.gguf_file)
        if stamp:  # so are new files at the same path
            source["files"] = stamp
        return Stage("base", {"source": source})
    # the task's corpus keeps its evaluation prompts out, so it depends on how many there are
    return Stage("base", {"task": task_params(suite, "base"), "tiny": suite.base.tiny.model_dump()})


def build_run(suite: Suite, arm_name: str, point: dict[str, Any]) -> Run:
    arm = suite.arms[arm_name]
    seed = int(point["seed"])
    stages = arm_stages(suite, arm)
    n_demos, n_comparisons = arm_allocation(suite, arm)
    base = base_stage(suite)
    judge = judge_stage(suite, base)
    gold = {"judge": judge} if judge is not None else {}  # what a stage that reads the gold reward needs
    policy, reward_model, comparisons, best_of_n = base, None, None, None
    demos = (
        Stage("demos", {"task": task_params(suite, "demos"), "n": n_demos, "seed": seed}, gold)
        if n_demos
        else None
    )
    for kind in arm.recipe:
        settings = getattr(stages, kind).model_dump()
        if kind == "sft":
            policy = Stage("sft", {"train": settings, "seed": seed}, {"model": policy, "data": demos})
        elif kind in ("ppo", "rloo"):  # online RL on the reward model: prompts only, no annotation
            online = {
                "train": settings,
                "seed": seed,
                "task": task_params(suite, "online"),
                "reward": "model",
            }
            policy = Stage(kind, online, {"model": policy, "reward_model": reward_model, **gold})
        elif kind == "ppo_gold":  # the oracle upper bound: PPO on the gold reward itself
            online = {"train": settings, "seed": seed, "task": task_params(suite, "online"), "reward": "gold"}
            policy = Stage("ppo", online, {"model": policy, **gold})
        elif kind == "best_of_n":  # no training: selection at sampling time, done by the evaluator
            best_of_n = settings["n"]
        else:
            if comparisons is None:  # sampled from the policy that the first preference stage starts from
                comparisons = Stage(
                    "comparisons",
                    {
                        "task": task_params(suite, "comparisons"),
                        "n": n_comparisons,
                        "seed": seed,
                        "max_new_tokens": suite.eval.max_new_tokens,
                    },
                    {"policy": policy, **gold},
                )
            trained = Stage(kind, {"train": settings, "seed": seed}, {"model": policy, "data": comparisons})
            if kind == "rm":
                reward_model = trained
            else:
                policy = trained
    inputs = {"policy": policy, "base": base, **gold}
    if reward_model is not None:
        inputs["reward_model"] = reward_model
    params = {"task": task_params(suite, "eval"), "eval": suite.eval.model_dump(), "seed": seed}
    if best_of_n is not None:
        params["best_of_n"] = best_of_n
    return Run(arm_name, point, suite, n_demos, n_comparisons, Stage("eval", params, inputs))


def plan_runs(suite: Suite) -> list[Run]:
    """Every arm at every grid point; a key swept for one arm (`arms.<arm>....`) does not multiply the others."""
    runs, seen = [], set()
    for point in grid_points(suite):
        resolved = apply_point(suite, point)
        for arm in resolved.arms:
            own = arm_point(point, arm)
            ident = (arm, tuple(sorted((k, str(v)) for k, v in own.items())))
            if ident not in seen:
                seen.add(ident)
                runs.append(build_run(resolved, arm, own))
    return runs


def stage_order(roots: list[Stage]) -> list[Stage]:
    """Every stage the roots need (roots included), each once, inputs before the stages that use them."""
    order: list[Stage] = []
    seen: set[str] = set()

    def visit(stage: Stage) -> None:
        if stage.key in seen:
            return
        for dep in stage.inputs.values():
            if dep is not None:
                visit(dep)
        seen.add(stage.key)
        order.append(stage)

    for root in roots:
        visit(root)
    return order
