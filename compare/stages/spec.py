"""What a stage is, in one place: `StageSpec`, which every stage module exports as `SPEC`.

A spec holds everything the rest of the harness needs to know about a stage kind: its typed settings
(for the stages a recipe names), its version (bump it when the stage's code changes what it produces,
so old cache entries are not reused), what it consumes and produces, the role it gives an arm, the
memory it needs per base-model parameter, the setting that sets its strength, what it optimises, and the
function that runs it. Planning, validation, the memory check, the runner and the report read specs;
nothing else lists stage names.

Adding a training method is one module in `compare/stages/` that defines its settings, its run function
and its `SPEC` (the package finds it). A kind of feedback is a `DataKind`, declared beside the stage that
produces it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class Role(str, Enum):
    """What a recipe stage makes of an arm; the report finds arms by these, never by their names."""

    IMITATION = "imitation"  # copies answers: demonstrations (SFT) or the chosen side of comparisons
    PREFERENCE = "preference optimisation"  # learns the policy from comparisons directly (DPO)
    REWARD_MODEL = "reward model"  # learns a scorer from comparisons
    ONLINE_RL = "online RL"  # optimises a reward model's score on the policy's own samples
    SELECTION = "selection"  # picks among samples at sampling time (best-of-n)
    ORACLE = "oracle"  # optimises the gold reward itself: an upper bound, not a competitor


@dataclass(frozen=True)
class DataKind:
    """One kind of feedback an arm buys from its budget (fairness rule 6), declared once beside the stage
    that produces it (`compare/stages/data.py` declares the built-in kinds) and exported by its module as
    `KINDS`. The planner, the budget split, the schema's `budget.cost`, preflight, export and the report's
    tables read these declarations: a new kind of feedback is one declaration and its producer stage.
    """

    name: str  # the data's name: results.csv's `n_<name>`, the exported dataset `data/<name>`
    singular: str  # what one item is called in messages and the report ("binary label")
    cost: str  # its field of the suite's `budget.cost`: the annotation units one item costs
    cost_default: float
    cost_help: str  # that field's description
    stage: str  # the stage kind that produces it (inputs: the task's settings `reads`, `n`, `seed`)
    file: str  # the file that stage writes, one row per item
    columns: tuple[str, ...]  # the columns of each row that TRL's trainers read (what `export` writes)
    trainers: str  # the TRL trainers that read that format (the exported model card says so)
    reads: str  # the task settings its stage reads: a use of the task's `stage_fields`
    # completions its stage samples per item from the policy that the first stage training on it starts
    # from (then it takes that policy and the suite's eval.max_new_tokens); 0: written without a policy
    sampled: int = 0
    share: bool = False  # bought with the arm's `demonstration_share`; the rest buys the other kinds
    item: str = "demonstration"  # the size of one item in memory: a key of `compare.limits.ITEM_BYTES`
    booleans: tuple[str, ...] = ()  # columns exported as booleans

    @property
    def column(self) -> str:
        """Its column in results.csv: how many items the run's arm bought."""
        return f"n_{self.name}"


class Produces(str, Enum):
    POLICY = "policy"  # a new policy that later stages start from
    REWARD_MODEL = "reward model"  # a scorer that later stages optimise or select by
    SAMPLING = "sampling"  # no model: how the evaluator samples the arm's answers


class StageSettings(BaseModel):
    """Base of every stage's settings: strict (unknown keys are errors), finite numbers, documented fields."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


LORA_HELP = (
    "Train a LoRA adapter of this rank (peft) instead of all weights; the stage stores the adapter, and "
    "later stages load it merged onto the model it started from."
)


CHECKPOINTING_HELP = (
    "Activation (gradient) checkpointing: keep only each layer's input in the forward pass and recompute "
    "the rest in the backward pass; much less activation memory for about a third more compute. The same "
    "numbers up to floating-point order."
)

BF16_WEIGHTS_HELP = (
    "Hold the stage's models in bfloat16 where the device supports it (a GPU with bf16, or the CPU), instead "
    "of float32: half the weight memory, and trained weights, gradients and AdamW's moments in bf16 too "
    "(LoRA adapters stay float32). Changes results by bf16's rounding."
)

BF16_CPU_HELP = (
    "Train in bfloat16 autocast on the CPU too (on a GPU that supports it, bf16 is always used): up to "
    "about 1.6x faster per forward and backward pass on CPUs with AVX512-BF16, with bf16's rounding."
)


class TrainingSettings(StageSettings):
    """Base of every training stage's settings (the TRL-backed ones, RLOO, GRPO, our PPO)."""

    # settings added after a stage's version whose value here reproduces the results of before: left out
    # of the stage's key at that value (compare.plan), so adding them kept every cached stage valid
    NEUTRAL: ClassVar[dict[str, Any]] = {
        "bf16_cpu": False,
        "gradient_checkpointing": False,
        "bf16_weights": False,
    }

    bf16_cpu: bool = Field(False, description=BF16_CPU_HELP)
    gradient_checkpointing: bool = Field(False, description=CHECKPOINTING_HELP)
    bf16_weights: bool = Field(False, description=BF16_WEIGHTS_HELP)


class TrainSettings(TrainingSettings):
    """Optimiser settings shared by the TRL-backed stages."""

    epochs: float = Field(3.0, gt=0, description="Passes over the stage's data.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    batch_size: int = Field(16, ge=1, description="Examples per optimiser step.")
    lora_r: int | None = Field(None, ge=1, description=LORA_HELP)

    @classmethod
    def one_pass(cls, settings: TrainingSettings) -> TrainSettings:
        """The optimiser of a stage that samples its own data (RLOO, GRPO, distillation): one pass, with
        the stage's batch size, learning rate and precision and checkpointing switches."""
        return cls(
            epochs=1,
            batch_size=settings.batch_size,
            lr=settings.lr,
            bf16_cpu=settings.bf16_cpu,
            gradient_checkpointing=settings.gradient_checkpointing,
        )


@dataclass(frozen=True)
class Memory:
    """What a stage holds at its peak, in copies of the base model's weights (compare/preflight.py).

    Full fine-tuning: `trained` copies with their gradients and AdamW's two moments (4 numbers a
    parameter), `frozen` copies beside them (a reference, a reward model). With LoRA: `lora` frozen
    copies (the adapters are small; a reference is the policy with its adapter disabled).
    """

    trained: int
    frozen: int
    lora: int
    sequences: int = 1  # sequences per training example in a step (2: chosen and rejected)
    forwards: int = 1  # models whose activations one training step keeps (PPO: policy and value)

    def bytes_per_parameter(self, lora: bool, weight_bytes: int = 4) -> int:
        """Bytes a base parameter costs: `weight_bytes` 4 (float32) or 2 (bfloat16) a number."""
        if lora:
            return self.lora * weight_bytes
        return (4 * self.trained + self.frozen) * weight_bytes


@dataclass(frozen=True)
class Job:
    """What a recipe stage's run function receives besides its folders: its typed settings, seed, task."""

    settings: Any  # the spec's `settings` model
    seed: int
    task: dict | None = None  # the task settings it reads (online stages: prompts, and gold for oracles)


@dataclass(frozen=True)
class StageSpec:
    """One stage kind. Recipe stages have `settings` and a `role`; internal stages (base, data, eval) not."""

    kind: str
    version: int
    run: Callable[
        ..., None
    ]  # recipe stages: run(job, out, inputs, ctx); others: run(params, out, inputs, ctx)
    description: str = ""
    settings: type[StageSettings] | None = None
    role: Role | None = None
    data: DataKind | None = None  # the feedback it trains on (bought from the budget)
    # an `rm` must come before it in the recipe; or settings -> whether it does (a stage whose reward is a
    # setting, like grpo's `reward`)
    needs_reward_model: bool | Callable[[Any], bool] = False
    # settings -> whether it trains on the task's verifier (`Task.verifier_rewards`), which the task must have
    needs_verifier: Callable[[Any], bool] | None = None
    # buys its `data` during training, labelling its own samples with the annotator (online DPO); the plan
    # gives it the prompts the budget buys labels for (stage `prompts`) instead of labelled data
    on_policy: bool = False
    produces: Produces = Produces.POLICY
    reads_task: bool = False  # online: rolls out on the task's training prompts (and reads gold if oracle)
    last: bool = False  # must be the last stage of a recipe (selection at sampling time)
    sampling: Callable[[Any], dict] | None = None  # Produces.SAMPLING: settings -> the evaluator's params
    # online stages: settings -> (prompts it holds at once, tokens it generates, how), for preflight
    workload: Callable[[Any], tuple[int, int, str]] | None = None
    memory: Memory | None = None  # the copies of the base it holds at its peak (preflight's estimate)
    strength: str | None = None  # the setting that sets how far it may move from its start (frontier)
    objective: tuple[str, str] | None = None  # (logged column, what it is) for "what each stage optimises"
    distributed: bool = False  # every process takes part under `accelerate launch` (data parallel)
    # learns from another policy (distillation): the recipe stage kind whose policy, trained from this stage's
    # start with the suite's settings of that kind, the plan gives it as its input "teacher" (the same stage
    # an arm [..., teacher] trains, so the two share it); a teacher buys no annotation (`check_teacher`)
    teacher: str | None = None
    # an internal stage that trains with a recipe stage's settings in params["train"] (judge: the reward
    # model's): their class, whose NEUTRAL settings stay out of its key as they do for recipe stages
    train_settings: type | None = None
    # (params, its folder, its inputs' folders, a token counter) -> the tokens it processed
    # (`compare.compute.Tokens`: trained and forwarded), for compute per arm; None: not counted
    compute: Callable[..., Any] | None = None

    @property
    def in_recipes(self) -> bool:
        return self.settings is not None

    def wants_reward_model(self, settings: StageSettings) -> bool:
        rm = self.needs_reward_model
        return bool(rm(settings) if callable(rm) else rm)

    def lora(self, settings: StageSettings) -> bool:
        return bool(getattr(settings, "lora_r", None))

    def check(self) -> None:
        """The spec's own consistency (called once for every spec at import)."""
        if self.in_recipes and self.role is None:
            raise TypeError(f"stage {self.kind}: a recipe stage needs a role")
        if self.on_policy and self.data is None:
            raise TypeError(f"stage {self.kind}: an on-policy stage says which data it buys")
        if self.strength is not None and (
            self.settings is None or self.strength not in self.settings.model_fields
        ):
            raise TypeError(f"stage {self.kind}: strength {self.strength!r} is not one of its settings")
        if self.teacher is not None and not self.in_recipes:
            raise TypeError(f"stage {self.kind}: only a recipe stage learns from a teacher")

    def check_teacher(self, specs: dict[str, StageSpec]) -> None:
        """Its teacher, once every spec is known: a recipe stage that trains a policy on nothing the budget
        buys (no data, no reward model), so the plan can build it from the start alone."""
        if self.teacher is None:
            return
        teacher = specs.get(self.teacher)
        if (
            teacher is None
            or not teacher.in_recipes
            or teacher.produces is not Produces.POLICY
            or teacher.data is not None
            or teacher.needs_reward_model is not False
            or teacher.teacher is not None
        ):
            raise TypeError(
                f"stage {self.kind}: teacher {self.teacher!r} must be a recipe stage that trains a policy "
                "on no annotation and no reward model"
            )
