"""`imdb`: continue the opening of a movie review positively (Rafailov et al. 2023, section 6.1).

The data is a dataset of labelled reviews with a text and a label column (`stanfordnlp/imdb` on the hub,
or any dataset mapped onto those two roles by `task.data.columns`). Texts are whitespace-normalised
and IMDb's `<br />` tags become spaces; a review's words are its whitespace tokens.

Prompts are review openings: the first `prompt_words` words of a review that has more words than that.

- train: openings of the train split's positive reviews (sampled, with a seeded shuffle, to
  `task.train_prompts`);
- ID: openings of the test split's positive reviews;
- OOD: openings of the test split's *negative* reviews. The training data never shows a review that
  starts badly, so turning one around is a shift in the prompt distribution that the gold reward still
  measures. Evaluation prompts that are also training prompts are dropped from ID and OOD.

Demonstrator: the real rest of the review that the prompt opens (its next `demonstration_words` words),
when that review is positive; for a prompt that opens a negative review (OOD) or no review it knows, the
rest of a positive test review, chosen at random. With probability
1 - `demonstrator_quality` it writes the rest of a negative review instead (a careless labeller).

Gold reward: the probability of the positive label under a sentiment classifier (`task.data.classifier`,
e.g. `lvwerra/distilbert-imdb`; the DPO paper used `siebert/sentiment-roberta-large-english`) of the
whole text, prompt + completion, as in the DPO paper's IMDb frontier. The annotator labels sampled pairs
on this gold reward, as for the built-in tasks.

Pretraining corpus and vocabulary (for the built-in tiny base model, which needs a word list): review
openings with their next `demonstration_words` words, of either label; the vocabulary is every
whitespace token of the reviews the task uses.
"""

from __future__ import annotations

import random
from functools import cached_property

from pydantic import Field

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


def review_words(text: str) -> list[str]:
    return text.replace("<br />", " ").replace("<br/>", " ").split()


class ImdbColumns(Options):
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


class Imdb(Task):
    """Positive continuations of review openings, scored by a sentiment classifier."""

    name = "imdb"
    split_specs = (ID_SPLIT, Split("ood", SplitRole.SHIFT, "OOD", "openings of negative reviews"))
    default_demonstrator_quality = 1.0
    data_settings = ImdbData
    stage_fields = DATASET_FIELDS

    def __init__(self, data: dict, **settings):
        super().__init__(**settings)
        self.data = data

    @classmethod
    def check_data(cls, data: dict, local_only: bool = False) -> None:
        """Open the splits the task reads and check their columns (raises DataError); hub ids too unless local_only."""
        if not local_only or is_local(data["path"]):
            for split_key in ("train_split", "test_split"):
                load_split(data, split_key, data["columns"])

    # -- reviews and prompts ---------------------------------------------------------------------------
    @cached_property
    def _reviews(self) -> dict[str, tuple[list[list[str]], list[list[str]]]]:
        """Per split ("train", "test"): (positive, negative) reviews as word lists, longer than a prompt."""
        return {split: self._read(f"{split}_split") for split in ("train", "test")}

    def _read(self, split_key: str) -> tuple[list[list[str]], list[list[str]]]:
        dataset = load_split(self.data, split_key, self.data["columns"])
        text_col, label_col = self.data["columns"]["text"], self.data["columns"]["label"]
        positive, n = self.data["positive_label"], self.data["prompt_words"]
        feature = dataset.features[label_col]
        if isinstance(positive, str) and hasattr(feature, "names"):  # a ClassLabel name, e.g. "pos"
            if positive not in feature.names:
                raise DataError(
                    f"positive_label: {positive!r} is not a label of the dataset ({', '.join(feature.names)})"
                )
            positive = feature.str2int(positive)
        pos, neg = [], []
        for text, label in zip(dataset[text_col], dataset[label_col]):
            words = review_words(text or "")
            if len(words) > n:
                (pos if label == positive else neg).append(words)
        split = self.data[split_key]
        if not pos:
            raise DataError(
                f"positive_label: no review of split {split!r} has label {self.data['positive_label']!r} "
                f"and more than {n} words"
            )
        if not neg:
            raise DataError(
                f"positive_label: every review of split {split!r} is positive; OOD needs negative ones"
            )
        return pos, neg

    def _opening(self, words: list[str]) -> str:
        return " ".join(words[: self.data["prompt_words"]])

    def _rest(self, words: list[str]) -> str:
        n = self.data["prompt_words"]
        return " " + " ".join(words[n : n + self.data["demonstration_words"]])

    @cached_property
    def _splits(self) -> dict[str, list[str]]:
        rng = random.Random(f"imdb-prompts-{self.seed}")
        (train_pos, _), (test_pos, test_neg) = self._reviews["train"], self._reviews["test"]
        train = _shuffled([self._opening(w) for w in train_pos], rng)
        seen = set(train)
        held_out = {
            "id": [p for p in _shuffled([self._opening(w) for w in test_pos], rng) if p not in seen],
            "ood": [p for p in _shuffled([self._opening(w) for w in test_neg], rng) if p not in seen],
        }
        for split, prompts in held_out.items():
            if not prompts:
                raise DataError(
                    f"test_split: every {split.upper()} opening of split {self.data['test_split']!r} is a training prompt"
                )
        return {
            "train": _cycle(train, self.n_train_prompts),
            **{split: _cycle(prompts, self.n_eval_prompts) for split, prompts in held_out.items()},
        }

    def prompts(self, split: str) -> list[str]:
        return list(self._splits[split])

    # -- the demonstrator -------------------------------------------------------------------------------
    @cached_property
    def _continuations(self) -> dict[str, str]:
        """Opening -> the rest of that positive review (a train review wins over a test one)."""
        return {self._opening(w): self._rest(w) for w in self._reviews["test"][0] + self._reviews["train"][0]}

    def demonstrate(self, prompt: str, rng: random.Random) -> str:
        if rng.random() >= self.demonstrator_quality:  # a careless labeller: a negative review's rest
            return self._rest(rng.choice(self._reviews["train"][1]))
        if prompt in self._continuations:
            return self._continuations[prompt]
        return self._rest(rng.choice(self._reviews["test"][0]))

    # -- the gold reward --------------------------------------------------------------------------------
    @cached_property
    def _classifier(self):
        return load_scorer(self.data["classifier"])

    def golds(self, prompts: list[str], completions: list[str]) -> list[GoldScore]:
        texts = [p + c for p, c in zip(prompts, completions)]
        scores = classifier_scores(
            self._classifier,
            texts,
            positive=self.data["classifier_positive"],
            setting="classifier_positive",
        )
        return [GoldScore(reward=s, well_formed=True, positivity=s) for s in scores]

    def gold(self, prompt: str, completion: str) -> GoldScore:
        return self.golds([prompt], [completion])[0]

    # -- for the built-in tiny base model ---------------------------------------------------------------
    def _texts(self, splits: tuple[str, ...]) -> list[str]:
        n = self.data["prompt_words"] + self.data["demonstration_words"]
        return [" ".join(w[:n]) for split in splits for group in self._reviews[split] for w in group]

    def pretraining_corpus(self, n: int, rng: random.Random) -> list[str]:
        texts = self._texts(("train",))
        return [rng.choice(texts) for _ in range(n)]

    def vocabulary(self) -> list[str]:
        return sorted({word for text in self._texts(("train", "test")) for word in text.split()})


def _shuffled(prompts: list[str], rng: random.Random) -> list[str]:
    """Distinct prompts in a seeded order."""
    distinct = list(dict.fromkeys(prompts))
    rng.shuffle(distinct)
    return distinct


def _cycle(items: list[str], n: int) -> list[str]:
    return [items[i % len(items)] for i in range(n)]
