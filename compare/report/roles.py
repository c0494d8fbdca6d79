"""Arms by what they are, not by what they are called: roles from the saved suite's recipes and the specs.

A suite names its arms freely; the report finds the arm each claim and figure needs from the roles of
its recipe's stages (`compare/stages/spec.py`): the imitation arm (SFT), its control trained on the
chosen side of comparisons (preferred-FT), the preference arm the claims compare with SFT, the DPO arm,
the online-RL arm, oracle bounds. When several arms qualify, the one with the shortest recipe is taken,
then the first in suite order. Swept settings are found the same way: a method's strength column is the
grid column of its stage's `strength` setting, whatever the arm is called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from compare.stages import RECIPE_STAGES, DataKind, Role
from compare.stages.data import COMPARISONS, DEMONSTRATIONS
from compare.tasks.task import Split, SplitRole


class Column:
    """Results columns of the suite settings a grid may sweep, by what they mean (suite paths, not arms)."""

    BUDGET = "grid.budget.units"  # annotation units per arm
    COST_RATIO = "grid.budget.cost.demonstration"  # units a demonstration costs, against a comparison
    LABEL_NOISE = "grid.task.annotator.flip_rate"
    ANNOTATOR_TEMPERATURE = "grid.task.annotator.temperature"
    DEMONSTRATOR_QUALITY = "grid.task.demonstrator_quality"
    LENGTH_BIAS = "grid.task.annotator.length_bias"  # the labellers' preference for longer answers
    STYLE_BIAS = "grid.task.annotator.style_bias"  # ... for enthusiastic, flattering answers
    BASE_SIZE = ("grid.base.tiny.n_layer", "grid.base.tiny.n_embd")  # the built-in base model's size


@dataclass(frozen=True)
class ArmKind:
    """What one arm is, read off its recipe: the role of each stage and the annotation it buys."""

    name: str
    recipe: tuple[str, ...]

    @property
    def roles(self) -> tuple[Role, ...]:
        return tuple(RECIPE_STAGES[kind].role for kind in self.recipe)

    @property
    def is_base(self) -> bool:
        return not self.recipe

    def buys(self, kind: DataKind) -> bool:
        """Some stage of its recipe trains on this kind of feedback."""
        return any(RECIPE_STAGES[stage].data is kind for stage in self.recipe)

    @property
    def demonstrations(self) -> bool:
        return self.buys(DEMONSTRATIONS)

    @property
    def comparisons(self) -> bool:
        return self.buys(COMPARISONS)

    @property
    def offline_comparisons(self) -> bool:
        """Its last stage trains on comparisons bought up front (not on-policy, like online DPO)."""
        spec = RECIPE_STAGES[self.recipe[-1]] if self.recipe else None
        return spec is not None and spec.data is COMPARISONS and not spec.on_policy

    @property
    def oracle(self) -> bool:
        return Role.ORACLE in self.roles

    @property
    def last(self) -> Role | None:
        return self.roles[-1] if self.recipe else None

    def only(self, role: Role, data: DataKind | None = None) -> bool:
        """Every stage has this role (and trains on this data); False for the base model."""
        specs = [RECIPE_STAGES[kind] for kind in self.recipe]
        return bool(specs) and all(s.role is role and (data is None or s.data is data) for s in specs)


def preference_rank(arm: ArmKind) -> int | None:
    """Which arm the claims compare with SFT: a pure preference arm (DPO) first, then online RL without
    demonstrations (RM → PPO, RM → RLOO), then mixed recipes (SFT → RM → PPO), then selection at sampling
    time (best-of-n); None for arms that learn nothing from preferences, and for oracle bounds."""
    roles = set(arm.roles) - {Role.REWARD_MODEL}
    if Role.ORACLE in roles or not roles & {Role.PREFERENCE, Role.ONLINE_RL, Role.SELECTION}:
        return None
    if Role.SELECTION in roles:
        return 3
    if arm.demonstrations or len(roles) > 1:
        return 2
    return 0 if roles == {Role.PREFERENCE} else 1


def builtin_splits() -> tuple[Split, ...]:
    """Every split the built-in tasks declare (the first declaration of a name wins): the splits of a
    `Roles` built without its task, as tests on hand-made results do."""
    from compare.tasks import TASKS

    found: dict[str, Split] = {}
    for task in TASKS.values():
        for split in task.split_specs:
            found.setdefault(split.name, split)
    return tuple(found.values())


class Roles:
    """The arms of one suite by role; selections consider only the arms in `present` (those with results).

    The task's evaluation splits are read the same way, by role (`compare/tasks/task.py:Split`): the
    in-distribution split, the named shifts, the prior ability; `splits` are the task's declarations.
    """

    def __init__(
        self,
        recipes: Mapping[str, Sequence[str]],
        present: Iterable[str] | None = None,
        splits: Sequence[Split] | None = None,
        gold_ceiling: float | None = None,
        shift_suite: str = "",
        pass_rule: str = "",
    ):
        self.arms = {name: ArmKind(name, tuple(recipe)) for name, recipe in recipes.items()}
        self.names = list(self.arms)  # suite order: the order of every table and figure
        keep = None if present is None else set(present)
        self._candidates = [a for a in self.names if keep is None or a in keep]
        self.splits = {s.name: s for s in (builtin_splits() if splits is None else splits)}
        self.gold_ceiling = gold_ceiling  # the task's best possible gold reward (the report's scale)
        self.shift_suite = shift_suite  # the shipped suite that decides the claims on the task's shifts
        self.pass_rule = pass_rule  # what counts as a pass for pass@k, in words (`Task.pass_rule`)

    @classmethod
    def of(cls, suite, present: Iterable[str] | None = None) -> Roles:
        from compare.tasks import TASKS

        task = TASKS.get(suite.task.name)
        recipes = {name: arm.recipe for name, arm in suite.arms.items()}
        if task is None:
            return cls(recipes, present)
        return cls(recipes, present, task.split_specs, task.gold_ceiling, task.shift_suite, task.pass_rule)

    # -- the task's splits, by role ---------------------------------------------------------------------
    def split_label(self, split: str) -> str:
        return self.splits[split].label if split in self.splits else split

    @property
    def shifts(self) -> list[str]:
        """The named shifts, in the task's order (each a claim and a column of the splits table)."""
        return [name for name, s in self.splits.items() if s.role is SplitRole.SHIFT]

    def shift_description(self, split: str) -> str:
        return self.splits[split].description if split in self.splits else split

    @property
    def prior(self) -> Split | None:
        """The prior ability of the base model that no stage trains (forgetting), if the task has one."""
        return next((s for s in self.splits.values() if s.role is SplitRole.PRIOR), None)

    def split_order(self, present: Iterable[str]) -> list[str]:
        """The splits present, in the task's order, then any others by name."""
        present = set(present)
        return [s for s in self.splits if s in present] + sorted(present - set(self.splits))

    def pick(self, fits: Callable[[ArmKind], bool], rank: Callable[[ArmKind], int] | None = None):
        """The arm that fits, by rank, then shortest recipe, then suite order; None if none fits."""
        found = [a for a in self._candidates if fits(self.arms[a])]
        order = {a: i for i, a in enumerate(self._candidates)}
        return min(
            found,
            key=lambda a: (rank(self.arms[a]) if rank else 0, len(self.arms[a].recipe), order[a]),
            default=None,
        )

    # -- the selections ---------------------------------------------------------------------------------
    @cached_property
    def base(self) -> str | None:
        """The base model evaluated as it is (empty recipe)."""
        return self.pick(lambda a: a.is_base)

    @cached_property
    def imitation(self) -> str | None:
        """The SFT arm: only imitation stages, trained on demonstrations."""
        return self.pick(lambda a: a.only(Role.IMITATION, DEMONSTRATIONS))

    @cached_property
    def imitation_control(self) -> str | None:
        """Preferred-FT: imitation of the chosen side of comparisons (DPO's control: same data, no loser)."""
        return self.pick(lambda a: a.only(Role.IMITATION, COMPARISONS))

    @cached_property
    def preference(self) -> str | None:
        """The preference-learning arm the claims compare with the imitation arm (see `preference_rank`)."""
        return self.pick(lambda a: preference_rank(a) is not None, preference_rank)

    @cached_property
    def dpo(self) -> str | None:
        """The arm whose policy comes from a preference loss on comparisons bought up front (last stage),
        no demonstrations: DPO (or a variant), not KTO (labels) or online DPO (its own samples)."""
        return self.pick(
            lambda a: a.last is Role.PREFERENCE and a.offline_comparisons and not a.demonstrations
        )

    @cached_property
    def online_preference(self) -> str | None:
        """The arm whose policy comes from a preference loss on comparisons of its own samples, labelled
        while it trains (online DPO): DPO's online counterpart; no demonstrations."""
        return self.pick(
            lambda a: (
                a.last is Role.PREFERENCE and RECIPE_STAGES[a.recipe[-1]].on_policy and not a.demonstrations
            )
        )

    @cached_property
    def online_rl(self) -> str | None:
        """The arm whose last stage is online RL against a reward model (one in its recipe: not GRPO on a
        verifier); without demonstrations first."""
        return self.pick(
            lambda a: a.last is Role.ONLINE_RL and Role.REWARD_MODEL in a.roles,
            lambda a: int(a.demonstrations),
        )

    @cached_property
    def selection(self) -> str | None:
        """The arm that selects among samples at sampling time with a reward model (best-of-n)."""
        return self.pick(lambda a: a.last is Role.SELECTION and not a.demonstrations)

    @cached_property
    def reward_model_only(self) -> str | None:
        """A reward model alone (its policy is the base model's): evaluated as a scorer."""
        return self.pick(lambda a: a.only(Role.REWARD_MODEL))

    @cached_property
    def reference(self) -> str | None:
        """What the differences table subtracts: the imitation arm, else the base model."""
        return self.imitation or self.base

    @cached_property
    def oracles(self) -> tuple[str, ...]:
        """Upper bounds that optimise the gold reward itself: drawn dashed, never a competitor."""
        return tuple(a for a in self.names if self.arms[a].oracle)

    @cached_property
    def gold_optimisers(self) -> tuple[str, ...]:
        """The oracle bounds that optimise the gold reward themselves (PPO on it), not the students of one
        (`StageSpec.teacher`, distillation): the gold scale's oracle level."""
        return tuple(
            a for a in self.oracles if not any(RECIPE_STAGES[k].teacher for k in self.arms[a].recipe)
        )

    @cached_property
    def policies(self) -> list[str]:
        """The arms that are policies, in suite order: every arm but a reward model evaluated alone (its
        policy is the base model's; its accuracy is in the reward-model table)."""
        return [a for a in self.names if not self.arms[a].only(Role.REWARD_MODEL)]

    # -- per arm ----------------------------------------------------------------------------------------
    def is_oracle(self, arm: str) -> bool:
        return arm in self.arms and self.arms[arm].oracle

    def is_base(self, arm: str) -> bool:
        return arm in self.arms and self.arms[arm].is_base

    def label(self, arm: str) -> str:
        return f"{arm} (oracle bound)" if self.is_oracle(arm) else arm

    def strength_columns(self, arm: str, columns: Iterable[str], stage: str | None = None) -> list[str]:
        """Grid columns that set the strength (`spec.strength`) of one of `arm`'s stages (or of `stage`):
        `grid.stages.<kind>.<setting>` for every arm with that stage, `grid.arms.<arm>.stages.<kind>.<setting>`
        for this arm alone (DPO's beta, PPO's KL coefficient, best-of-n's n, ...), in the columns' order."""
        kind = self.arms.get(arm)
        wanted = set()
        for stage_kind in kind.recipe if kind else ():
            setting = RECIPE_STAGES[stage_kind].strength
            if setting and stage in (None, stage_kind):
                wanted |= {
                    f"grid.stages.{stage_kind}.{setting}",
                    f"grid.arms.{arm}.stages.{stage_kind}.{setting}",
                }
        return [c for c in columns if c in wanted]
