"""What the dataset tasks (`imdb`, `preferences`) share: reading a dataset, and scoring with a model.

Reading. A task's `data:` block names a dataset by `path` (with optional `name` and `data_dir`):

- a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` is read with
  `datasets.load_from_disk` (a single saved `Dataset` is the split "train");
- a csv, json, jsonl or parquet file is read with `datasets.load_dataset(<format>, data_files=path)`
  (its split is "train");
- anything else (a hub id such as `stanfordnlp/imdb`, or a folder of data files) with
  `datasets.load_dataset(path, name, data_dir=...)`; a hub id needs hub access.

Every split a task reads is checked before use: it exists, it has the columns the task's `columns:`
mapping names, and it is not empty; each failure is one line naming the setting, the value and what the
dataset has instead. Suites check local datasets this way when they are loaded, before anything runs.

Scoring. A sentiment classifier or a judge reward model named by hub id or folder is loaded once per
process with `AutoModelForSequenceClassification` and `AutoTokenizer`, and scores texts in batches
without gradients.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pydantic import Field

from compare.lm.external import is_local
from compare.tasks.task import STAGE_FIELDS, Options, with_fields

DATA_FILE_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
SCORE_BATCH = 32


class DatasetSource(Options):
    """A dataset: `datasets.load_from_disk` for a folder written by `save_to_disk`, `load_dataset` otherwise."""

    path: str = Field(
        description="Hub dataset id (needs hub access), a folder written by Dataset/DatasetDict.save_to_disk, "
        "or a folder or csv/json/parquet file that datasets.load_dataset reads."
    )
    name: str | None = Field(None, description="Dataset configuration (load_dataset's `name`).")
    data_dir: str | None = Field(
        None, description="Subfolder of the dataset to read (load_dataset's `data_dir`), e.g. helpful-base."
    )


# a dataset task's stages all read its dataset: its `data` goes to every use of the task's settings
DATASET_FIELDS = with_fields({use: ("data",) for use in STAGE_FIELDS})


class DataError(ValueError):
    """A dataset (or a model that scores it) that does not fit the task's settings, said in one line."""


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


@functools.lru_cache(maxsize=8)
def _open(path: str, name: str | None, data_dir: str | None) -> dict:
    """The dataset's splits by name (read once per process)."""
    import datasets

    local = Path(path).expanduser()
    try:
        if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists()):
            saved = datasets.load_from_disk(str(local))
            return dict(saved) if isinstance(saved, datasets.DatasetDict) else {"train": saved}
        if local.is_file():
            fmt = DATA_FILE_FORMATS.get(local.suffix.lower())
            if fmt is None:
                raise DataError(f"path: {path!r} is not a dataset file ({', '.join(DATA_FILE_FORMATS)})")
            return {"train": datasets.load_dataset(fmt, data_files=str(local), split="train")}
        return dict(datasets.load_dataset(str(local) if local.exists() else path, name, data_dir=data_dir))
    except DataError:
        raise
    except Exception as e:  # offline hub ids, unreadable files: one line, not a traceback
        where = "hub dataset (needs hub access)" if not is_local(path) else "dataset"
        raise DataError(f"path: cannot read {where} {path!r}: {_first_line(e)}") from None


def load_split(source: dict[str, Any], split_key: str, columns: dict[str, str | None]):
    """One split of a dataset, checked: it exists, has every mapped column, and is not empty.

    `source` holds path, name, data_dir and the split name under `split_key` (the setting named in
    errors); `columns` maps each role the task reads to its column (None: a role the task derives).
    """
    path, split = source["path"], source[split_key]
    splits = _open(path, source.get("name"), source.get("data_dir"))
    if split not in splits:
        raise DataError(
            f"{split_key}: no split {split!r} in dataset {path!r} (splits: {', '.join(sorted(splits))})"
        )
    dataset = splits[split]
    for role, column in columns.items():
        if column is not None and column not in dataset.column_names:
            raise DataError(
                f"columns.{role}: column {column!r} is not in split {split!r} of {path!r} "
                f"(columns: {', '.join(dataset.column_names)})"
            )
    if len(dataset) == 0:
        raise DataError(f"{split_key}: split {split!r} of dataset {path!r} is empty")
    return dataset


# -- scoring with a sequence-classification model -----------------------------------------------------------
def load_scorer(path: str):
    """A sequence-classification model and its tokenizer, on the device, in eval mode.

    Tasks keep the one they load for as long as they live (one stage), not the process."""
    from transformers import AutoTokenizer

    from compare.lm.loading import device, load_classifier

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = load_classifier(path)  # a hub id, a folder, or a judge stored as a LoRA adapter
    if tokenizer.pad_token is None:  # GPT-2-style classifiers: padding is masked, any token will do
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "right"
    return model.to(device()).eval(), tokenizer


def label_index(model, positive: int | str, setting: str) -> int:
    """The output index of `positive`: an index, or a label name from the model's config."""
    labels = model.config.id2label
    if isinstance(positive, str):
        by_name = {str(name): int(i) for i, name in labels.items()}
        if positive not in by_name:
            raise DataError(
                f"{setting}: label {positive!r} is not one of the model's labels ({', '.join(by_name)})"
            )
        return by_name[positive]
    if not 0 <= positive < model.config.num_labels:
        raise DataError(
            f"{setting}: index {positive} is out of range (the model has {model.config.num_labels} labels)"
        )
    return positive


def _max_length(model, tokenizer) -> int:
    config_max = getattr(model.config, "max_position_embeddings", None) or getattr(
        model.config, "n_positions", None
    )
    limits = [n for n in (tokenizer.model_max_length, config_max) if n and n < 1_000_000]
    return min(limits) if limits else 512


def classifier_scores(
    scorer: tuple,
    texts: list[str],
    pairs: list[str] | None = None,
    positive: int | str | None = None,
    setting: str = "classifier",
) -> list[float]:
    """Scores of `texts` (or of text pairs, `texts[i]` with `pairs[i]`), in batches, without gradients.

    `scorer` is (model, tokenizer) from `load_scorer`; its model's name is in the messages.

    A model with one output (a reward model) scores its logit; one with several (a classifier) scores
    the probability of its `positive` label.
    """
    import torch

    model, tokenizer = scorer
    path = model.config._name_or_path
    n_labels = model.config.num_labels
    if positive is None and n_labels != 1:
        raise DataError(f"{setting}: {path!r} has {n_labels} outputs; a judge reward model has one")
    index = label_index(model, positive, setting) if n_labels != 1 else 0
    dev, limit = next(model.parameters()).device, _max_length(model, tokenizer)
    scores: list[float] = []
    for start in range(0, len(texts), SCORE_BATCH):
        first = texts[start : start + SCORE_BATCH]
        second = pairs[start : start + SCORE_BATCH] if pairs is not None else None
        enc = tokenizer(first, second, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        with torch.no_grad():
            logits = model(**{k: v.to(dev) for k, v in enc.items()}).logits.float()
        batch = logits[:, 0] if n_labels == 1 else torch.softmax(logits, dim=-1)[:, index]
        scores.extend(batch.tolist())
    return scores
