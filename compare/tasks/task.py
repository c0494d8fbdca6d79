"""What every task gives the harness: prompts, a gold reward, a demonstrator and a pretraining corpus.

A task is the *world* an experiment lives in. Training methods see only what the simulated labellers
produce from it (demonstrations, comparisons); the gold reward is read by evaluation and by the
annotator, never by a training method (docs/design.md, fairness rule 3).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SPLITS = ("train", "id", "ood")


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

    def __init__(
        self,
        seed: int = 0,
        demonstrator_quality: float | None = None,
        train_prompts: int = 400,
        eval_prompts: int = 32,
    ):
        self.seed = seed
        if demonstrator_quality is None:
            demonstrator_quality = self.default_demonstrator_quality
        self.demonstrator_quality = demonstrator_quality
        self.n_train_prompts = train_prompts
        self.n_eval_prompts = eval_prompts

    def prompts(self, split: str) -> list[str]:
        """Prompts of one split: "train" (the pool data is drawn from), "id" or "ood" (evaluation)."""
        raise NotImplementedError

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
