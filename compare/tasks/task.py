"""What every task gives the harness: prompts, a gold reward, a demonstrator and a pretraining corpus.

A task is the *world* an experiment lives in. Training methods see only what the simulated labellers
produce from it (demonstrations, comparisons); the gold reward is read by evaluation and by the
annotator, never by a training method (docs/design.md, fairness rule 3).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from pydantic import BaseModel, ConfigDict

from compare.oracle import View

# a task with no realistic labellers of its own (a dataset's labels are already human): no biases
NO_BIASES = {
    "temperature": 0.25,
    "flip_rate": 0.0,
    "length_bias": 0.0,
    "style_bias": 0.0,
    "position_bias": 0.0,
}


class Options(BaseModel):
    """Base of a task's own settings models (`Task.options`, `Task.data_settings`): strict like the whole
    suite (compare/suite/schema.py): unknown keys are errors, every float finite, every field documented."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


# The task settings each stage reads (a stage's key holds only these), by use: the stage kind, or what an
# online or on-policy stage does with the task. So sweeping a setting (say the annotator's flip rate) does
# not re-run stages that never see it (demonstrations, SFT, their evaluation). A task adds its own options
# to the uses that read them (`Task.stage_fields`); a dataset task adds its `data` to every use.
STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "base": ("name", "seed", "eval_prompts"),  # the tiny base's corpus keeps the evaluation prompts out
    "demos": ("name", "seed", "train_prompts", "demonstrator_quality", "demonstrator_habit"),
    "comparisons": ("name", "seed", "train_prompts", "annotator", "annotator_pool"),  # the annotator's
    "online": ("name", "seed", "train_prompts", "eval_prompts"),  # rolls out on the training prompts
    "prompts": ("name", "seed", "train_prompts"),  # the prompts an on-policy stage labels its samples for
    "eval": ("name", "seed", "eval_prompts"),
    "demonstrator": ("name", "seed", "eval_prompts", "demonstrator_quality", "demonstrator_habit"),
    "judge": ("name",),  # the held-out split a dataset task's judge is trained on
}


def with_fields(added: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """`STAGE_FIELDS` with a task's own fields added to the uses that read them."""
    return {use: fields + added.get(use, ()) for use, fields in STAGE_FIELDS.items()}


class SplitRole(str, Enum):
    """What an evaluation split is for: the report reads splits by role, never by name."""

    IN_DISTRIBUTION = "in-distribution"  # held-out prompts of the training distribution: the split named "id"
    SHIFT = "shift"  # a named distribution shift: generalisation is read as the ID - shift gap
    PRIOR = "prior ability"  # an ability of the base model no stage trains: forgetting


@dataclass(frozen=True)
class Split:
    """One evaluation split of a task: its name (a `split` of results.csv), role, the label the report
    prints, and for a shift or a prior ability a phrase that finishes "... under <description>" or
    "the base model's prior ability (<description>)"."""

    name: str
    role: SplitRole
    label: str
    description: str = ""


ID_SPLIT = Split("id", SplitRole.IN_DISTRIBUTION, "ID", "held-out prompts of the training distribution")


@dataclass(frozen=True)
class GoldScore:
    """The gold reward of one completion, with the parts it was built from (for reports and teaching)."""

    reward: float
    well_formed: bool
    positivity: float = 0.0
    malformed: float = 0.0
    repetition: float = 0.0
    off_topic: float = 0.0


class Task:
    """Base class. Subclasses set `name` and implement the methods below.

    The settings every task takes (the suite's `task:` keys): the seed of its prompt splits and corpus,
    the demonstrator's quality in [0, 1] (1 = the best the demonstrator can do), the size of the
    training prompt pool, and the number of prompts per evaluation split.
    """

    name: str = ""
    default_demonstrator_quality: float = 0.6
    default_demonstrator_habit: float = 0.0  # how often the demonstrator slips into its bad habit
    default_annotator: dict = NO_BIASES  # the simulated labeller's settings a suite does not give
    eval_splits: tuple[str, ...] = ("id", "ood")  # the evaluation splits, each a row of results.csv
    # every split the task can evaluate on (options may leave some out), in the order the report shows them
    split_specs: tuple[Split, ...] = (
        ID_SPLIT,
        Split("ood", SplitRole.SHIFT, "OOD", "out-of-distribution prompts"),
    )
    # its own suite `task:` keys, beside the common ones (compare/suite/schema.py assembles them by name);
    # at its default an option is left out of the dumped settings, so suites that do not set it keep their
    # suite.yaml and stage keys
    options: type[Options] | None = None
    data_settings: type[Options] | None = None  # a dataset task: the model of the suite's `task.data`
    stage_fields: dict[str, tuple[str, ...]] = STAGE_FIELDS  # the task settings each stage reads
    gold_ceiling: float | None = None  # the best gold reward a completion can get (the report's scale)
    shift_suite: str = ""  # the shipped suite (experiments/) that decides the claims on its named shifts
    # what counts as a pass for pass@k (`passes`), in words for the report; "" when the task has no pass
    pass_rule: str = ""

    def __init__(
        self,
        seed: int = 0,
        demonstrator_quality: float | None = None,
        train_prompts: int = 400,
        eval_prompts: int = 32,
        demonstrator_habit: float | None = None,
    ):
        self.seed = seed
        if demonstrator_quality is None:
            demonstrator_quality = self.default_demonstrator_quality
        self.demonstrator_quality = demonstrator_quality
        self.demonstrator_habit = (
            self.default_demonstrator_habit if demonstrator_habit is None else demonstrator_habit
        )
        self.n_train_prompts = train_prompts
        self.n_eval_prompts = eval_prompts

    @classmethod
    def splits_with(cls, settings: dict) -> tuple[str, ...]:
        """The evaluation splits a task with these suite settings has (its options may add some)."""
        return cls.eval_splits

    def prompts(self, split: str) -> list[str]:
        """Prompts of one split: "train" (the pool data is drawn from), or one of `eval_splits`."""
        raise NotImplementedError

    def labeller_view(self, prompt: str, completion: str) -> View:
        """What a biased labeller notices besides quality: length in units of five words, no style cue."""
        return View(length=len(completion.split()) / 5)

    def gold(self, prompt: str, completion: str) -> GoldScore:
        """The true objective for `completion` written after `prompt`."""
        raise NotImplementedError

    def gold_reward(self, prompt: str, completion: str) -> float:
        return self.gold(prompt, completion).reward

    def golds(self, prompts: list[str], completions: list[str]) -> list[GoldScore]:
        """The gold scores of many completions at once; tasks whose gold is a model override this."""
        return [self.gold(p, c) for p, c in zip(prompts, completions)]

    def gold_rewards(self, prompts: list[str], completions: list[str]) -> list[float]:
        return [g.reward for g in self.golds(prompts, completions)]

    def verifier_rewards(self, prompts: list[str], completions: list[str]) -> list[float] | None:
        """A check a trainer may use (RL with verifiable rewards: is the final answer right?), or None.

        Unlike the gold reward, a verifier is a legitimate training signal (docs/design.md, fairness rule
        3): it is what a task with checkable answers gives every method for free. None: no verifier.
        """
        return None

    def passes(self, prompt: str, completion: str, gold: GoldScore) -> bool:
        """Whether a completion solves its prompt, for pass@k (`eval.pass_at_k`); tasks with a `pass_rule`
        override it. Read by evaluation only, like the gold reward."""
        raise NotImplementedError(f"task {self.name!r} has no pass rule")

    def demonstrate(self, prompt: str, rng: random.Random) -> str:
        """A completion written by the simulated expert labeller (imperfect by design)."""
        raise NotImplementedError

    def fixed_comparisons(self, n: int, rng: random.Random) -> list[dict[str, str]] | None:
        """`n` comparisons ({prompt, chosen, rejected}) labelled by people, for tasks whose dataset has them.

        None (the default): comparisons are pairs sampled from the policy, labelled by the simulated
        annotator on the gold reward.
        """
        return None

    def pretraining_corpus(self, n: int, rng: random.Random) -> list[str]:
        """Full texts (prompt + completion) in which a base model learns the task's language."""
        raise NotImplementedError

    def vocabulary(self) -> list[str]:
        """Every word the task's language uses (built-in tasks train a word-level tokenizer on it)."""
        raise NotImplementedError


def has_verifier(task: type[Task]) -> bool:
    """Whether a task class gives a verifier (overrides `Task.verifier_rewards`)."""
    return task.verifier_rewards is not Task.verifier_rewards


def has_human_labels(task: type[Task]) -> bool:
    """Whether a task class's comparisons are its dataset's human labels (overrides
    `Task.fixed_comparisons`) rather than the simulated annotator's."""
    return task.fixed_comparisons is not Task.fixed_comparisons
