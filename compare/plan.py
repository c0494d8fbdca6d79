"""From a validated suite to runs and a deduplicated graph of stages: the grid, the budget, the keys.

A run is one arm at one grid point. Its stages come from its recipe, wired by what each stage's spec
says it consumes and produces (`compare/stages/spec.py`): a stage that trains on a kind of feedback gets
the stage its `DataKind` names as producer (demonstrations: `demos`; comparisons and binary labels sampled
from the policy the first stage that trains on them starts from), an online stage the task's prompts
(and the reward model before it), a selection stage only changes how the evaluator samples. A stage is identified by its kind, its own
settings and its inputs' keys; two runs that need the same base model, demonstrations, comparisons or
SFT warm start name the same stage, which runs once.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from compare.lm.external import local_stamp
from compare.stages import RECIPE_STAGES, SPECS, DataKind, Produces
from compare.suite.grid import (  # noqa: F401  (the grid and the budget, pure functions of a suite)
    apply_point,
    arm_budget,
    arm_point,
    arm_settings,
    default_share,
    grid_points,
    grid_size,
    set_path,
    split_budget,
)
from compare.suite.schema import Suite
from compare.tasks import TASKS


@dataclass(frozen=True)
class Stage:
    kind: str
    params: dict[str, Any] = field(hash=False, compare=False)
    inputs: dict[str, Stage] = field(default_factory=dict, hash=False, compare=False)

    @cached_property
    def key(self) -> str:
        spec = {
            "kind": self.kind,
            "version": SPECS[self.kind].version,
            "params": _keyed_params(self.kind, self.params),
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


def _keyed_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """A stage's parameters as its key sees them: settings added after its version that, at the value its
    settings class lists as `NEUTRAL`, reproduce the results of before are left out, so that adding such a
    setting keeps every cached stage valid."""
    spec = SPECS[kind]
    neutral = getattr(spec.settings or spec.train_settings, "NEUTRAL", {})
    train = params.get("train")
    if not neutral or not isinstance(train, dict):
        return params
    kept = {k: v for k, v in train.items() if k not in neutral or neutral[k] != v}
    return {**params, "train": kept}


@dataclass
class Run:
    """One arm at one grid point: its resolved settings and the stage that evaluates it."""

    arm: str
    point: dict[str, Any]
    suite: Suite
    bought: dict[str, int]  # items of each kind of feedback (compare.stages.DATA_KINDS) its budget bought
    eval: Stage
    demonstrator: Stage  # the demonstrator's gold reward on the same evaluation prompts

    @property
    def roots(self) -> list[Stage]:
        """The stages whose outputs the report reads; every other stage of the run is upstream of one."""
        return [self.eval, self.demonstrator]

    @property
    def seed(self) -> int:
        return int(self.point["seed"])

    @property
    def label(self) -> str:
        return " ".join([self.arm] + [f"{k}={v}" for k, v in self.point.items()])


def task_params(suite: Suite, use: str) -> dict[str, Any]:
    """The task settings a stage reads (`Task.stage_fields[use]`, declared by the task): a stage's key
    holds only these. An option at its default is not in the dump, so it is not in the key either."""
    settings = suite.task.model_dump()
    return {k: settings[k] for k in TASKS[suite.task.name].stage_fields[use] if k in settings}


def judge_stage(suite: Suite, base: Stage) -> Stage | None:
    """The gold reward model of a dataset task that trains one on held-out pairs (`task.data.judge_split`,
    or `judge_fraction` of the train split).

    It starts from the base model and is trained with the rm stage's code on every held-out pair
    (`judge_data`); stages that read the gold reward take it as their input "judge".
    """
    data = suite.task.data
    if data is None or not getattr(data, "trains_judge", False):
        return None
    pairs = Stage("judge_data", {"task": task_params(suite, "judge")})
    settings = {"train": data.judge_training, "seed": suite.task.seed}
    return Stage("judge", settings, {"model": base, "data": pairs})


def base_stage(suite: Suite) -> Stage:
    base = suite.base
    if base.external:  # copied into the cache as a plain model folder (compare/lm/external.py)
        source = {"model": base.model, "gguf_file": base.gguf_file, "package": base.package}
        source["chat_template"] = base.chat_template  # the tiny base has none: its key stays as it was
        if base.system_prompt is not None:  # unset, the key stays as it was
            source["system_prompt"] = base.system_prompt
        if base.package:  # a new release of the package is a new model
            source["version"] = importlib.metadata.version(base.package)
        stamp = local_stamp(base.model, base.gguf_file)
        if stamp:  # so are new files at the same path
            source["files"] = stamp
        return Stage("base", {"source": source})
    # the task's corpus keeps its evaluation prompts out, so it depends on how many there are
    return Stage("base", {"task": task_params(suite, "base"), "tiny": suite.base.tiny.model_dump()})


def teacher_stage(suite: Suite, kind: str, own, start: Stage, seed: int, gold: dict) -> Stage:
    """The teacher of a distilling stage: recipe stage `kind` (one that buys no annotation and needs no
    reward model, `StageSpec.check_teacher`) trained from `start` with its settings `own`, built as
    `build_run` builds it for an arm whose recipe it ends, so the two name the same stage."""
    params: dict[str, Any] = {"train": own.model_dump(), "seed": seed}
    inputs: dict[str, Stage] = {"model": start}
    if RECIPE_STAGES[kind].reads_task:
        params["task"] = task_params(suite, "online")
        inputs.update(gold)
    return Stage(kind, params, inputs)


def data_stage(suite: Suite, kind: DataKind, n: int, seed: int, policy: Stage, gold: dict) -> Stage:
    """The stage that buys `n` items of a kind of feedback (`DataKind.stage`): from the task's settings it
    reads, and, for a kind sampled from a policy, from `policy` at the suite's completion length."""
    params: dict[str, Any] = {"task": task_params(suite, kind.reads), "n": n, "seed": seed}
    if not kind.sampled:
        return Stage(kind.stage, params, gold)
    # as long as the completions evaluation samples (the suite's eval.max_new_tokens)
    params["max_new_tokens"] = suite.eval.max_new_tokens
    return Stage(kind.stage, params, {"policy": policy, **gold})


def build_run(suite: Suite, arm_name: str, point: dict[str, Any]) -> Run:
    """The stages of one arm at one grid point, from its recipe and what each stage's spec needs."""
    arm = suite.arms[arm_name]
    seed = int(point["seed"])
    settings = arm_settings(suite, arm)
    bought = arm_budget(suite, arm)
    base = base_stage(suite)
    judge = judge_stage(suite, base)
    gold = {"judge": judge} if judge is not None else {}  # what a stage that reads the gold reward needs
    policy, reward_model, sampling = base, None, {}
    data: dict[str, Stage] = {}  # each kind of feedback, bought once: from the policy the first stage
    # that trains on it starts from (demonstrations from none)
    for kind in arm.recipe:
        spec, own = RECIPE_STAGES[kind], getattr(settings, kind)
        if spec.produces is Produces.SAMPLING:  # no training: changes how the evaluator samples
            sampling.update(spec.sampling(own))
            continue
        params: dict[str, Any] = {"train": own.model_dump(), "seed": seed}
        inputs: dict[str, Stage] = {"model": policy}
        if spec.on_policy:  # buys its labels during training, from its own samples (the annotator inside)
            prompts = {"task": task_params(suite, "prompts"), "n": bought[spec.data.name], "seed": seed}
            inputs["data"] = Stage("prompts", prompts)
            params["task"] = task_params(suite, spec.data.reads)
            inputs.update(gold)
        elif spec.data is not None:
            if spec.data.name not in data:
                n = bought[spec.data.name]
                data[spec.data.name] = data_stage(suite, spec.data, n, seed, policy, gold)
            inputs["data"] = data[spec.data.name]
        if spec.wants_reward_model(own):
            inputs["reward_model"] = reward_model
        if spec.reads_task:  # online: rolls out on the task's prompts; the gold reward for checks
            params["task"] = task_params(suite, "online")
            inputs.update(gold)
        if spec.teacher:  # learns from a policy trained from the same start (distillation)
            own_teacher = getattr(settings, spec.teacher)
            inputs["teacher"] = teacher_stage(suite, spec.teacher, own_teacher, policy, seed, gold)
        stage = Stage(kind, params, inputs)
        if spec.produces is Produces.REWARD_MODEL:
            reward_model = stage
        else:
            policy = stage
    inputs = {"policy": policy, "base": base, **gold}
    if reward_model is not None:
        inputs["reward_model"] = reward_model
    params = {"task": task_params(suite, "eval"), "eval": suite.eval.model_dump(), "seed": seed, **sampling}
    evaluation = Stage("eval", params, inputs)
    demonstrator = Stage(
        "demonstrator",
        {
            "task": task_params(suite, "demonstrator"),
            "samples_per_prompt": suite.eval.samples_per_prompt,
            "seed": seed,
        },
        gold,
    )
    return Run(arm_name, point, suite, bought, evaluation, demonstrator)


# -- runs and their stages ---------------------------------------------------------------------------------
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
