"""`preferences`: a human preference dataset (prompt, chosen, rejected), as Anthropic HH or UltraFeedback.

Rows. `task.data.columns` maps the roles prompt, chosen and rejected onto the dataset's columns. A row
becomes one pair (prompt, chosen response, rejected response) by this rule:

- chosen and rejected are *message lists* (UltraFeedback binarized, TRL's conversational format: lists
  of {role, content}): the responses are the contents of their last messages; the prompt is the prompt
  column when it is a message list too, else the messages before the last one in chosen, else the
  prompt column's text as a user turn. Turns are written as a transcript in Anthropic HH's format,
  "Human: ...\n\nAssistant: ...", ending with "Assistant:", so both kinds of dataset read alike;
- chosen and rejected are *texts* and `columns.prompt` is null (Anthropic HH): the prompt is their shared
  prefix, up to and including the last `assistant_marker` ("Assistant:") in it (or up to the last
  whitespace when it has none); the responses are what follows;
- texts with a prompt column: the prompt is that column; a response that repeats the prompt at its
  start has it removed.

Prompts are stripped of surrounding whitespace; responses get a single leading space (the format every
sampled completion has). Rows whose responses are the same, or whose prompt is empty, carry no
preference and are dropped.

Splits. Train prompts and comparisons come from the train split (a seeded shuffle, cut to
`task.train_prompts` pairs: the training pool); ID evaluation prompts from the test split. OOD prompts
come from `data.ood` (another split or dataset with the same columns) when it is set; otherwise the split
is by length: the train pool and ID use prompts up to the median prompt length of the train split (in
words), and OOD uses the test split's longer prompts (longer conversations than any training prompt).
Evaluation prompts that are also training prompts are dropped.

Labels. Comparisons are the dataset's own human labels (`fixed_comparisons`): the annotator's flip rate
still applies (noise experiments); its temperature does not. The demonstrator writes the chosen response
of a pair for the prompt (the rejected one with probability 1 - `demonstrator_quality`).

Gold reward: a judge reward model's score of prompt and completion, either one named by hub id or folder
(`data.judge`, e.g. OpenAssistant/reward-model-deberta-v3-large-v2, given the pair (prompt, completion)
as its two segments), or one trained by this harness on held-out pairs (the `judge` stage, a reward
model trained from the base model with the `rm` stage's code, scored as the rm stage's models are): every
pair of a split of their own (`data.judge_split`), or, for a dataset with no spare split (UltraFeedback),
a share of the train split (`data.judge_fraction`), held out by a fixed shuffle before the training pool
is drawn, with every pair of their prompts.
"""

from __future__ import annotations

import os
import random
import statistics
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import Field, model_serializer, model_validator

from compare.tasks.hub import (
    DATASET_FIELDS,
    DataError,
    DatasetSource,
    classifier_scores,
    is_local,
    load_scorer,
    load_split,
)
from compare.tasks.task import ID_SPLIT, GoldScore, Options, Split, SplitRole, Task

ROLE_NAMES = {"user": "Human", "human": "Human", "assistant": "Assistant", "system": "System"}


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str
    rejected: str

    def as_row(self) -> dict[str, str]:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


def _messages(cell: Any, role: str) -> list[dict[str, str]]:
    if not (
        cell
        and isinstance(cell, list)
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in cell)
    ):
        raise DataError(
            f"columns.{role}: expected text or a list of {{role, content}} messages, got {cell!r:.80}"
        )
    return cell


def transcript(messages: list[dict[str, str]]) -> str:
    """Turns as an Anthropic-HH-style transcript that ends with the assistant's turn to speak."""
    turns = [f"{ROLE_NAMES.get(m['role'], m['role'].capitalize())}: {m['content'].strip()}" for m in messages]
    return "\n\n".join([*turns, "Assistant:"])


def shared_prompt(chosen: str, rejected: str, marker: str) -> int:
    """Where the prompt ends in HH-style texts: after the last `marker` of their shared prefix."""
    common = os.path.commonprefix([chosen, rejected])
    cut = common.rfind(marker)
    if cut >= 0:
        return cut + len(marker)
    return max(common.rfind(" "), common.rfind("\n"), 0)


def to_pair(prompt: Any, chosen: Any, rejected: Any, marker: str) -> Pair | None:
    """One dataset row as a pair, by the rule in the module docstring; None for a row without preference."""
    if isinstance(chosen, list) or isinstance(rejected, list):
        chosen_turns, rejected_turns = _messages(chosen, "chosen"), _messages(rejected, "rejected")
        if isinstance(prompt, list):
            context = _messages(prompt, "prompt")
        elif len(chosen_turns) > 1:
            context = chosen_turns[:-1]
        elif isinstance(prompt, str) and prompt.strip():
            context = [{"role": "user", "content": prompt}]
        else:
            raise DataError(
                "columns.prompt: message-list responses without earlier turns need a prompt column"
            )
        text, good, bad = transcript(context), chosen_turns[-1]["content"], rejected_turns[-1]["content"]
    elif not (isinstance(chosen, str) and isinstance(rejected, str)):
        raise DataError(
            f"columns.chosen: expected text or a list of {{role, content}} messages, got {chosen!r:.80}"
        )
    elif prompt is None:
        end = shared_prompt(chosen, rejected, marker)
        text, good, bad = chosen[:end], chosen[end:], rejected[end:]
    else:
        text = transcript(_messages(prompt, "prompt")) if isinstance(prompt, list) else prompt
        good, bad = chosen.removeprefix(text), rejected.removeprefix(text)
    text, good, bad = text.strip(), " " + good.strip(), " " + bad.strip()
    return Pair(text, good, bad) if text and good != bad else None


class PreferenceColumns(Options):
    prompt: str | None = Field(
        "prompt",
        description="Column with the prompt (text or a message list); null = the shared prefix of chosen "
        "and rejected (Anthropic HH).",
    )
    chosen: str = Field("chosen", description="Column with the preferred response (text or a message list).")
    rejected: str = Field("rejected", description="Column with the other response (text or a message list).")


class OodSource(Options):
    path: str | None = Field(None, description="Dataset of the OOD prompts; empty = the task's own dataset.")
    name: str | None = Field(None, description="Its configuration (load_dataset's `name`).")
    data_dir: str | None = Field(None, description="Its subfolder (load_dataset's `data_dir`).")
    split: str = Field("test", description="Split of the OOD prompts.")


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
    judge_fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Instead of `judge` or `judge_split`: this share of the train split's pairs is held out "
        "(a fixed shuffle, before the training pool is drawn) to train the judge reward model on.",
    )
    ood: OodSource | None = Field(
        None, description="Where OOD prompts come from; empty = the test split's longer prompts."
    )

    @property
    def trains_judge(self) -> bool:
        """Whether the suite trains its judge (the `judge` stage) rather than reading one."""
        return self.judge_split is not None or self.judge_fraction is not None

    @model_serializer(mode="wrap")
    def _without_unset_fraction(self, handler) -> dict[str, Any]:
        settings = handler(self)  # suites written before judge_fraction keep their stage keys
        if settings.get("judge_fraction") is None:
            settings.pop("judge_fraction", None)
        return settings

    @model_validator(mode="after")
    def _one_judge(self):
        given = [self.judge, self.judge_split, self.judge_fraction]
        if sum(x is not None for x in given) != 1:
            raise ValueError(
                "give one of judge (a reward model), judge_split (a split to train one on) or judge_fraction "
                "(a share of the train split to train one on)"
            )
        if self.judge_split in (self.train_split, self.test_split):
            raise ValueError(f"judge_split {self.judge_split!r} must be held out: not train or test split")
        return self


class Preferences(Task):
    """A preference dataset: its prompts, its human labels, and a judge reward model as gold."""

    name = "preferences"
    split_specs = (
        ID_SPLIT,
        Split("ood", SplitRole.SHIFT, "OOD", "the dataset's out-of-distribution prompts"),
    )
    default_demonstrator_quality = 1.0
    data_settings = PreferenceData
    stage_fields = DATASET_FIELDS

    def __init__(self, data: dict, judge_model: str | None = None, **settings):
        super().__init__(**settings)
        self.data = data
        self.judge_model = judge_model  # the judge stage's model folder (`judge_split`, `judge_fraction`)

    @classmethod
    def check_data(cls, data: dict, local_only: bool = False) -> None:
        """Open the splits the task reads and check their columns (raises DataError); hub ids too unless local_only."""
        for source, split_key in cls._sources(data):
            if not local_only or is_local(source["path"]):
                load_split(source, split_key, data["columns"])

    @staticmethod
    def _sources(data: dict) -> list[tuple[dict, str]]:
        sources = [(data, "train_split"), (data, "test_split")]
        if data.get("judge_split"):
            sources.append((data, "judge_split"))
        if data.get("ood"):
            sources.append((ood_source(data), "ood.split"))
        return sources

    # -- pairs and prompts ------------------------------------------------------------------------------
    def _read(self, source: dict, split_key: str) -> list[Pair]:
        dataset = load_split(source, split_key, self.data["columns"])
        columns = self.data["columns"]
        prompts = dataset[columns["prompt"]] if columns["prompt"] else [None] * len(dataset)
        rows = zip(prompts, dataset[columns["chosen"]], dataset[columns["rejected"]])
        pairs = [p for row in rows if (p := to_pair(*row, self.data["assistant_marker"])) is not None]
        if not pairs:
            raise DataError(
                f"{split_key}: split {source[split_key]!r} has no pair with a prompt and a preference"
            )
        return pairs

    @cached_property
    def _pairs(self) -> dict[str, list[Pair]]:
        """Pairs by split: "train" (the pool), "id" and "ood" (held out)."""
        train, test = self._train_and_judge[0], self._read(self.data, "test_split")
        median = None
        if self.data.get("ood"):
            ood = self._read(ood_source(self.data), "ood.split")
        else:  # OOD by length: prompts longer than the median training prompt
            # the train split's median, judge pairs included: holding some out does not move the filter
            full = self._read(self.data, "train_split")
            median = statistics.median(len(p.prompt.split()) for p in full)
            train = [p for p in train if len(p.prompt.split()) <= median]
            test, ood = (
                [p for p in test if len(p.prompt.split()) <= median],
                [p for p in test if len(p.prompt.split()) > median],
            )
            if not ood:
                raise DataError(
                    f"ood: the length filter (used when task.data.ood is not set) leaves no OOD prompt: no "
                    f"prompt of test split {self.data['test_split']!r} is longer than the median training "
                    f"prompt ({median:g} words); set task.data.ood to a split of OOD prompts"
                )
        rng = random.Random(f"preferences-prompts-{self.seed}")
        pool = rng.sample(train, len(train))[: self.n_train_prompts]
        seen = {p.prompt for p in pool}
        held_out = {
            "id": [p for p in test if p.prompt not in seen],
            "ood": [p for p in ood if p.prompt not in seen],
        }
        for split, pairs in held_out.items():
            if not pairs:
                where = (
                    f"ood.split: every prompt of split {self.data['ood']['split']!r}"
                    if split == "ood" and self.data.get("ood")
                    else f"test_split: every {split.upper()} prompt of split {self.data['test_split']!r}"
                    + (f" (those up to the median training prompt's {median:g} words)" if median else "")
                )
                raise DataError(f"{where} is also a training prompt: no {split.upper()} prompt is left")
        return {"train": pool, **held_out}

    def prompts(self, split: str) -> list[str]:
        prompts = [p.prompt for p in self._pairs[split]]
        if split == "train":
            return prompts
        distinct = list(dict.fromkeys(prompts))
        random.Random(f"preferences-{split}-{self.seed}").shuffle(distinct)
        return [distinct[i % len(distinct)] for i in range(self.n_eval_prompts)]

    # -- labels: the dataset's own --------------------------------------------------------------------
    def fixed_comparisons(self, n: int, rng: random.Random) -> list[dict[str, str]]:
        pool = self._pairs["train"]
        if n > len(pool):
            raise DataError(
                f"the budget buys {n} comparisons but the training pool has {len(pool)} pairs "
                f"(task.train_prompts, or the size of split {self.data['train_split']!r}"
                + (
                    f" less judge_fraction {self.data['judge_fraction']:g}"
                    if self.data.get("judge_fraction")
                    else ""
                )
                + ")"
            )
        return [pair.as_row() for pair in rng.sample(pool, n)]

    def judge_comparisons(self) -> list[dict[str, str]]:
        """Every held-out judge pair (its split, or its share of the train split): the judge's training data."""
        if self.data.get("judge_fraction"):
            return [pair.as_row() for pair in self._train_and_judge[1]]
        return [pair.as_row() for pair in self._read(self.data, "judge_split")]

    @cached_property
    def _train_and_judge(self) -> tuple[list[Pair], list[Pair]]:
        """The train split's pairs, less those held out for the judge (`judge_fraction`): a fixed shuffle
        (not the task seed: every suite on the dataset has one gold), a share of the prompts, all of whose
        pairs go to the judge so that no judge prompt is a training prompt."""
        train = self._read(self.data, "train_split")
        fraction = self.data.get("judge_fraction")
        if not fraction:
            return train, []
        prompts = sorted({p.prompt for p in train})
        random.Random("preferences-judge").shuffle(prompts)
        held = set(prompts[: max(1, round(fraction * len(prompts)))])
        kept = [p for p in train if p.prompt not in held]
        if not kept:
            raise DataError(
                f"judge_fraction: {fraction:g} of split {self.data['train_split']!r} leaves no pair"
            )
        return kept, [p for p in train if p.prompt in held]

    @cached_property
    def _by_prompt(self) -> dict[str, list[Pair]]:
        by_prompt: dict[str, list[Pair]] = {}
        for split in ("train", "id", "ood"):
            for pair in self._pairs[split]:
                by_prompt.setdefault(pair.prompt, []).append(pair)
        return by_prompt

    def demonstrate(self, prompt: str, rng: random.Random) -> str:
        if prompt not in self._by_prompt:
            raise DataError(f"no pair of the dataset has the prompt {prompt[:60]!r}")
        pair = rng.choice(self._by_prompt[prompt])
        return pair.chosen if rng.random() < self.demonstrator_quality else pair.rejected

    # -- the gold reward: a judge reward model ---------------------------------------------------------
    @cached_property
    def _judge(self):
        """The judge's (model, tokenizer): named in the data, or trained in the suite (`judge_model`)."""
        return load_scorer(self.data["judge"] or self.judge_model)

    def golds(self, prompts: list[str], completions: list[str]) -> list[GoldScore]:
        if self.data.get("judge"):
            scores = classifier_scores(self._judge, prompts, pairs=completions, setting="judge")
        elif self.judge_model is None:
            setting = "judge_split" if self.data.get("judge_split") else "judge_fraction"
            raise DataError(f"{setting}: this stage was not given the judge the suite trains")
        else:
            from compare.lm.sampling import reward_scores

            scores = reward_scores(*self._judge, prompts, completions)
        return [GoldScore(reward=s, well_formed=True) for s in scores]

    def gold(self, prompt: str, completion: str) -> GoldScore:
        return self.golds([prompt], [completion])[0]

    # -- for the built-in tiny base model ---------------------------------------------------------------
    def pretraining_corpus(self, n: int, rng: random.Random) -> list[str]:
        pairs = self._pairs["train"]
        texts = [p.prompt + r for p in pairs for r in (p.chosen, p.rejected)]
        return [rng.choice(texts) for _ in range(n)]

    def vocabulary(self) -> list[str]:
        texts = (t for pairs in self._pairs.values() for p in pairs for t in (p.prompt, p.chosen, p.rejected))
        return sorted({word for text in texts for word in text.split()})


def ood_source(data: dict) -> dict:
    """The dataset OOD prompts come from (`data.ood`; the task's own dataset when it names no path), with
    its split under "ood.split", the setting that errors name."""
    ood = data["ood"]
    source = {k: ood[k] for k in ("path", "name", "data_dir")}
    if ood["path"] is None:  # the task's dataset, with ood's name / data_dir where given
        source = {k: source[k] if source[k] is not None else data[k] for k in source}
    return {**source, "ood.split": ood["split"]}
