"""Dataset tasks on local fixtures in the hub datasets' formats: loaders, golds, errors, one micro suite each.

Nothing is downloaded: an IMDb-like DatasetDict, preference datasets in three formats (prompt column,
Anthropic HH strings, UltraFeedback message lists), a tiny sentiment classifier, a tiny judge reward
model and tiny base models are all built here.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pandas as pd
import pytest
import torch

from compare import plan
from compare.cli import main
from compare.lm.loading import save_model
from compare.lm.tiny import build_word_tokenizer
from compare.plan import plan_runs, stage_order
from compare.preflight import preflight
from compare.stages.common import make_task
from compare.suite import SuiteError, load_suite
from compare.tasks.hub import DataError
from compare.tasks.imdb import Imdb
from compare.tasks.preferences import Pair, Preferences, to_pair

# -- fixtures: an IMDb-like dataset and a sentiment classifier -------------------------------------------
TIMES = ["last night", "on sunday", "at home", "with friends", "in class", "on holiday", "after work"]
FILMS = ["film", "movie", "sequel", "drama", "comedy", "thriller"]
POSITIVE = ["it was great .", "the acting was wonderful .", "i loved the music .", "a fine story ."]
NEGATIVE = ["it was awful .", "the plot was boring .", "i hated the ending .", "a poor script ."]
PROMPT_WORDS = 6  # "last night we saw the film"


def imdb_rows(rng: random.Random) -> list[dict]:
    rows = []
    for i, (time, film) in enumerate((t, f) for t in TIMES for f in FILMS):
        label = (i + i // len(FILMS)) % 2  # every film has reviews of both labels
        sentences = rng.sample(POSITIVE if label else NEGATIVE, 3)
        rows.append({"text": f"{time} we saw the {film} <br /><br /> " + " ".join(sentences), "label": label})
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def imdb_dir(tmp_path_factory):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    rows = imdb_rows(random.Random(0))
    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    path = tmp_path_factory.mktemp("data") / "imdb"
    DatasetDict(
        train=Dataset.from_list(rows[:28], features=features),
        test=Dataset.from_list(rows[28:], features=features),
        empty=Dataset.from_dict({"text": [], "label": []}, features=features),
    ).save_to_disk(str(path), num_shards={"train": 1, "test": 1, "empty": 1})  # an empty split needs a shard
    return path


def imdb_data(path, classifier) -> dict:
    return {"path": str(path), "name": None, "data_dir": None, "train_split": "train", "test_split": "test",
            "columns": {"text": "text", "label": "label"}, "positive_label": 1, "prompt_words": PROMPT_WORDS,
            "demonstration_words": 9, "classifier": str(classifier), "classifier_positive": "POSITIVE"}  # fmt: skip


def words_of_rows(rows) -> list[str]:
    return sorted({w for r in rows for w in r["text"].replace("<br />", " ").split()})


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A tiny GPT-2 sentiment classifier over the fixture's words, trained for a few steps (need not be good)."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    rows = imdb_rows(random.Random(0))
    tokenizer = build_word_tokenizer(words_of_rows(rows))
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                        num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"},
                        label2id={"NEGATIVE": 0, "POSITIVE": 1}, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    model = GPT2ForSequenceClassification(config)
    enc = tokenizer([r["text"].replace("<br />", " ") for r in rows], padding=True, return_tensors="pt")
    labels = torch.tensor([r["label"] for r in rows])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(30):
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("classifier")
    save_model(model.eval(), tokenizer, path)
    return path


@pytest.fixture(scope="module")
def imdb_task(imdb_dir, classifier_dir) -> Imdb:
    return Imdb(data=imdb_data(imdb_dir, classifier_dir), seed=0, train_prompts=16, eval_prompts=4)


# -- fixtures: preference datasets in three formats, and a judge -----------------------------------------
TOPICS = ["rice", "pasta", "soup", "bread", "tea", "eggs", "beans", "fish", "salad", "cake"]


def preference_triples(n: int, offset: int = 0) -> list[tuple[str, str, str]]:
    triples = []
    for i in range(offset, offset + n):
        topic = TOPICS[i % len(TOPICS)]
        question = (
            f"how do i make {topic} ?" if i % 2 else f"my friends come tonight , how do i make good {topic} ?"
        )
        question += f" ( {i} )"  # every prompt distinct
        triples.append(
            (question, f"cook the {topic} slowly and taste it .", f"i do not know about {topic} .")
        )
    return triples


def preference_rows(triples, layout: str) -> list[dict]:
    rows = []
    for q, good, bad in triples:
        if layout == "prompt":
            rows.append({"prompt": f"Human: {q}\n\nAssistant:", "chosen": f" {good}", "rejected": f" {bad}"})
        elif layout == "hh":  # Anthropic HH: whole transcripts, the prompt is their shared prefix
            rows.append({"chosen": f"\n\nHuman: {q}\n\nAssistant: {good}", "rejected": f"\n\nHuman: {q}\n\nAssistant: {bad}"})  # fmt: skip
        else:  # UltraFeedback binarized: message lists
            user = {"role": "user", "content": q}
            rows.append({"prompt": q, "chosen": [user, {"role": "assistant", "content": good}],
                         "rejected": [user, {"role": "assistant", "content": bad}]})  # fmt: skip
    return rows


def save_preferences(path, layout: str):
    from datasets import Dataset, DatasetDict

    splits = {
        "train": preference_triples(40),
        "test": preference_triples(16, 40),
        "judge": preference_triples(24, 56),
    }
    DatasetDict({k: Dataset.from_list(preference_rows(v, layout)) for k, v in splits.items()}).save_to_disk(
        str(path)
    )
    return path


@pytest.fixture(scope="module")
def preference_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("preferences")
    return {layout: save_preferences(root / layout, layout) for layout in ("prompt", "hh", "messages")}


def preference_data(path, judge=None, judge_split=None, prompt_column: str | None = "prompt") -> dict:
    return {"path": str(path), "name": None, "data_dir": None, "train_split": "train", "test_split": "test",
            "columns": {"prompt": prompt_column, "chosen": "chosen", "rejected": "rejected"},
            "assistant_marker": "Assistant:", "judge": judge and str(judge), "judge_split": judge_split,
            "judge_training": {}, "ood": None}  # fmt: skip


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory, preference_dirs):
    """A tiny judge reward model (one output) over the preference words: untrained, but a valid scorer."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    task = Preferences(data=preference_data(preference_dirs["prompt"], judge="unused"), seed=0)
    tokenizer = build_word_tokenizer(task.vocabulary())
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2, num_labels=1,
                        pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    path = tmp_path_factory.mktemp("judge")
    save_model(GPT2ForSequenceClassification(config).eval(), tokenizer, path)
    return path


@pytest.fixture(scope="module")
def preference_task(preference_dirs, judge_dir) -> Preferences:
    return Preferences(
        data=preference_data(preference_dirs["prompt"], judge_dir), seed=0, train_prompts=16, eval_prompts=4
    )


# -- the IMDb loader ----------------------------------------------------------------------------------------
def test_imdb_prompts_are_openings_split_by_label(imdb_task):
    train, id_, ood = (imdb_task.prompts(s) for s in ("train", "id", "ood"))
    assert len(train) == 16 and len(id_) == len(ood) == 4
    assert all(len(p.split()) == PROMPT_WORDS and p.split()[2:4] == ["we", "saw"] for p in train + id_ + ood)
    assert not set(train) & (set(id_) | set(ood))  # held-out prompts are disjoint from the training pool
    rows = imdb_rows(random.Random(0))
    label_of = {" ".join(r["text"].split()[:PROMPT_WORDS]): r["label"] for r in rows}
    assert {label_of[p] for p in train + id_} == {1} and {label_of[p] for p in ood} == {0}
    assert imdb_task.prompts("train") == Imdb(data=imdb_task.data, seed=0, train_prompts=16).prompts("train")


def test_imdb_demonstration_is_the_real_rest_of_the_review(imdb_task):
    rows = imdb_rows(random.Random(0))
    prompt = imdb_task.prompts("train")[0]
    review = next(r["text"] for r in rows if r["text"].startswith(prompt))
    demo = imdb_task.demonstrate(prompt, random.Random(0))
    assert demo.startswith(" ") and "<br" not in demo and len(demo.split()) == 9
    assert (prompt + demo).split() == review.replace("<br />", " ").split()[: PROMPT_WORDS + 9]
    careless = Imdb(data=imdb_task.data, seed=0, demonstrator_quality=0.0)
    assert careless.demonstrate(prompt, random.Random(0)) != demo


def test_imdb_gold_is_the_classifier_batched_and_deterministic(imdb_task):
    rows = imdb_rows(random.Random(0))
    texts = [r["text"].replace("<br />", " ") for r in rows]
    prompts = [" ".join(t.split()[:PROMPT_WORDS]) for t in texts]
    completions = [" " + " ".join(t.split()[PROMPT_WORDS:]) for t in texts]
    golds = imdb_task.gold_rewards(prompts, completions)
    assert golds == imdb_task.gold_rewards(prompts, completions)
    assert all(0 <= g <= 1 for g in golds)
    one = imdb_task.gold(prompts[0], completions[0]).reward
    assert one == pytest.approx(golds[0], abs=1e-5)  # the same score alone as in a padded batch
    positive = [g for g, r in zip(golds, rows) if r["label"] == 1]
    negative = [g for g, r in zip(golds, rows) if r["label"] == 0]
    assert sum(positive) / len(positive) > sum(negative) / len(negative)


def test_imdb_vocabulary_and_corpus_serve_a_tiny_base(imdb_task):
    vocab = set(imdb_task.vocabulary())
    corpus = imdb_task.pretraining_corpus(20, random.Random(0))
    assert all(set(text.split()) <= vocab for text in corpus)
    assert all(set(p.split()) <= vocab for p in imdb_task.prompts("ood"))


# -- the preference loader ---------------------------------------------------------------------------------
def test_three_layouts_give_the_same_pairs(preference_dirs):
    pairs = {}
    for layout, path in preference_dirs.items():
        data = preference_data(path, judge_split="judge", prompt_column=None if layout == "hh" else "prompt")
        pairs[layout] = Preferences(data=data).judge_comparisons()
    assert pairs["prompt"] == pairs["hh"] == pairs["messages"] and len(pairs["hh"]) == 24
    q, good, bad = preference_triples(1, 56)[0]
    assert pairs["hh"][0] == {
        "prompt": f"Human: {q}\n\nAssistant:",
        "chosen": f" {good}",
        "rejected": f" {bad}",
    }


def test_to_pair_rules():
    assert to_pair(None, "Human: hi\n\nAssistant: yes", "Human: hi\n\nAssistant: no", "Assistant:") == Pair(
        "Human: hi\n\nAssistant:", " yes", " no"
    )
    assert to_pair("q", "q a", "q b", "Assistant:") == Pair("q", " a", " b")  # the prompt repeated is cut
    assert to_pair("q", "same", "same", "Assistant:") is None  # no preference
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    turns = [*conversation, {"role": "user", "content": "bye"}]
    pair = to_pair(
        None,
        [*turns, {"role": "assistant", "content": "ok"}],
        [*turns, {"role": "assistant", "content": "no"}],
        "",
    )
    assert pair.prompt == "Human: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant:"
    with pytest.raises(DataError, match="columns.chosen"):
        to_pair("q", [{"text": "x"}], [{"text": "y"}], "Assistant:")


def test_preference_splits_labels_and_demonstrations(preference_task):
    train, id_, ood = (preference_task.prompts(s) for s in ("train", "id", "ood"))
    assert len(train) == 16 and len(id_) == len(ood) == 4
    assert not set(train) & (set(id_) | set(ood))
    # no OOD source given: OOD prompts are longer than the median training prompt, ID ones are not
    longest_train = max(len(p.split()) for p in train)
    assert all(len(p.split()) > longest_train for p in ood) and all(
        len(p.split()) <= longest_train for p in id_
    )
    rows = preference_task.fixed_comparisons(8, random.Random(0))
    assert len(rows) == 8 and all(r["prompt"] in train and "do not know" in r["rejected"] for r in rows)
    assert "slowly" in preference_task.demonstrate(train[0], random.Random(0))
    with pytest.raises(DataError, match="training pool has 16 pairs"):
        preference_task.fixed_comparisons(17, random.Random(0))


def test_preference_gold_is_the_judge(preference_task):
    prompts = preference_task.prompts("id")
    completions = [" cook it slowly .", " i do not know ."] * 2
    golds = preference_task.gold_rewards(prompts, completions)
    assert golds == preference_task.gold_rewards(prompts, completions) and len(set(golds)) > 1
    assert preference_task.gold(prompts[1], completions[1]).reward == pytest.approx(golds[1], abs=1e-5)


def test_comparisons_stage_writes_human_labels_with_flips(preference_task, tmp_path):
    from compare.runner import run_stage
    from compare.stages.common import Context, read_jsonl

    params = {"name": "preferences", "seed": 0, "train_prompts": 16, "data": preference_task.data}
    for flip_rate, out in ((0.0, tmp_path / "clean"), (0.5, tmp_path / "noisy")):
        out.mkdir()
        task = {**params, "annotator": {"temperature": 0.25, "flip_rate": flip_rate}}
        run_stage("comparisons", {"task": task, "n": 16, "seed": 0, "max_new_tokens": 16}, out, {}, Context())
        rows = read_jsonl(out / "comparisons.jsonl")
        assert set(rows[0]) == {"prompt", "chosen", "rejected", "gold_chosen", "gold_rejected"}
        flipped = sum("do not know" in r["chosen"] for r in rows)
        assert flipped == 0 if flip_rate == 0 else 0 < flipped < 16


# -- suites: schema, stage keys, one-line errors -------------------------------------------------------------
MICRO_STAGES = """
budget: {units: 24, cost: {demonstration: 4, comparison: 1}}
stages:
  sft: {epochs: 1, batch_size: 8}
  rm: {epochs: 1, batch_size: 8}
  dpo: {epochs: 1, batch_size: 8}
  ppo: {episodes: 16, rollout_batch_size: 8, max_new_tokens: 8, gold_eval_every: 1, gold_eval_prompts: 4}
grid: {seed: [0]}
eval: {samples_per_prompt: 2, max_new_tokens: 10}
"""


IMDB_SUITE = f"""
name: micro_imdb
task:
  name: imdb
  train_prompts: 16
  eval_prompts: 4
  data:
    path: <DATA>
    columns: {{text: text, label: label}}
    positive_label: pos
    prompt_words: {PROMPT_WORDS}
    demonstration_words: 9
    classifier: <CLASSIFIER>
    classifier_positive: POSITIVE
base: {{model: <BASE>}}
arms:
  base: {{recipe: []}}
  sft: {{recipe: [sft]}}
  dpo: {{recipe: [dpo]}}
  ppo: {{recipe: [rm, ppo]}}
"""

PREFERENCE_SUITE = """
name: micro_preferences
task:
  name: preferences
  train_prompts: 16
  eval_prompts: 4
  data:
    path: <DATA>
    columns: {prompt: null, chosen: chosen, rejected: rejected}
    <JUDGE>
    judge_training: {epochs: 1, batch_size: 8}
base: {model: <BASE>}
arms:
  base: {recipe: []}
  sft: {recipe: [sft]}
  dpo: {recipe: [dpo]}
  rm: {recipe: [rm]}
"""


def imdb_suite(data, classifier, base="gpt2") -> str:  # a hub id: planning reads nothing
    text = IMDB_SUITE.replace("<DATA>", str(data)).replace("<CLASSIFIER>", str(classifier))
    return text.replace("<BASE>", str(base)) + MICRO_STAGES


def preference_suite(data, base="gpt2", judge_line="judge_split: judge") -> str:
    text = PREFERENCE_SUITE.replace("<DATA>", str(data)).replace("<JUDGE>", judge_line)
    return text.replace("<BASE>", str(base)) + MICRO_STAGES.replace("units: 24", "units: 16")  # 16 pairs


def write(tmp_path, text, name="suite.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_builtin_suite_stage_keys_unchanged(tmp_path, monkeypatch):
    from compare.tasks.task import STAGE_FIELDS

    suite = load_suite(
        write(tmp_path, "name: m\narms:\n  sft: {recipe: [sft]}\n  ppo: {recipe: [sft, rm, ppo]}\n")
    )
    assert suite.task.data is None and suite.task.demonstrator_quality == 0.6
    stages = stage_order([r.eval for r in plan_runs(suite)])
    assert all("data" not in s.params.get("task", {}) for s in stages)
    now = [s.key for s in stages]

    def before(suite, use):  # task_params as it was before dataset tasks
        settings = suite.task.model_dump()
        return {k: settings[k] for k in STAGE_FIELDS[use]}

    monkeypatch.setattr(plan, "task_params", before)
    assert [s.key for s in stage_order([r.eval for r in plan_runs(suite)])] == now


def test_dataset_suites_plan(tmp_path, imdb_dir, classifier_dir, preference_dirs):
    imdb = load_suite(write(tmp_path, imdb_suite(imdb_dir, classifier_dir)))
    assert imdb.task.demonstrator_quality == 1.0 and imdb.task.data.columns.text == "text"
    stages = stage_order([r.eval for r in plan_runs(imdb)])
    assert all(s.params["task"]["data"]["path"] == str(imdb_dir) for s in stages if "task" in s.params)
    prefs = load_suite(write(tmp_path, preference_suite(preference_dirs["hh"]), "p.yaml"))
    kinds = [s.kind for s in stage_order([r.eval for r in plan_runs(prefs)])]
    assert kinds.count("judge") == 1 and kinds.count("judge_data") == 1  # one gold model for every arm


def test_shipped_dataset_suites_validate_offline():
    for name in ("imdb_gpt2", "hh_preferences"):
        suite = load_suite(f"experiments/{name}.yaml")
        assert suite.task.data is not None and plan_runs(suite)


BAD = [
    (lambda s: s.replace("path: ", "path: ./no/such/dataset #"), "task.data.path: dataset path './no/such/dataset' does not exist"),
    (lambda s: s.replace("{text: text, label: label}", "{text: review, label: label}"),
     "task.data.columns.text: column 'review' is not in split 'train' of"),
    (lambda s: s.replace("prompt_words:", "test_split: empty\n    prompt_words:"), "task.data.test_split: split 'empty' of dataset"),
    (lambda s: s.replace("prompt_words:", "test_split: validation\n    prompt_words:"), "task.data.test_split: no split 'validation'"),
    (lambda s: s.replace("classifier: /", "classifier: /no/such/"), "task.data.classifier: classifier folder"),
    (lambda s: s.replace("name: imdb", "name: reviews"), "reads no dataset"),
    (lambda s: s.replace("positive_label: pos", "positive_label: pos\n    colour: red"), "task.data.colour: unknown key"),
]  # fmt: skip


@pytest.mark.parametrize("edit, expected", BAD)
def test_bad_dataset_suite_is_one_line_error(tmp_path, capsys, imdb_dir, classifier_dir, edit, expected):
    text = edit(imdb_suite(imdb_dir, classifier_dir))
    path = write(tmp_path, text)
    assert main(["plan", str(path), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and str(path) in err
    assert expected in err, err


def test_bad_preference_suites(tmp_path, preference_dirs, judge_dir):
    base = "gpt2"
    cases = [
        (preference_suite(preference_dirs["hh"], base, "judge: /no/such/judge"), "task.data.judge: judge folder"),
        (preference_suite(preference_dirs["hh"], base, f"judge: {judge_dir}\n    judge_split: judge"), "give one of judge"),
        (preference_suite(preference_dirs["hh"], base, "judge_split: train"), "must be held out"),
        (preference_suite(preference_dirs["hh"], base).replace("prompt: null", "prompt: question"), "column 'question'"),
        (preference_suite(preference_dirs["hh"], base).replace("units: 16", "units: 17"),
         "budget.units: the budget buys 17 comparisons but the training pool has 16 pairs"),
    ]  # fmt: skip
    for text, expected in cases:
        with pytest.raises(SuiteError, match=expected.replace("(", r"\(")):
            preflight([load_suite(write(tmp_path, text))])


def test_hub_id_is_not_read_when_a_suite_loads(tmp_path, classifier_dir):
    text = imdb_suite("stanfordnlp/imdb", "lvwerra/distilbert-imdb")
    suite = load_suite(write(tmp_path, text))  # no network: hub ids are read by the stages only
    assert suite.task.data.path == "stanfordnlp/imdb"


def test_make_task_passes_the_data_block(imdb_task):
    task = make_task({"name": "imdb", "seed": 0, "train_prompts": 16, "eval_prompts": 4, "data": imdb_task.data,
                      "annotator": {"temperature": 0.25, "flip_rate": 0.0}})  # fmt: skip
    assert task.prompts("id") == imdb_task.prompts("id")
    assert make_task({"name": "reviews", "seed": 0, "data": None}).name == "reviews"


# -- one micro suite per task, end to end through the command line -----------------------------------------
TINY = "tiny: {n_layer: 1, n_head: 2, n_embd: 32, steps: 40, corpus_size: 500, batch_size: 16}"


def run_suite(tmp_path, text) -> pd.DataFrame:
    path = write(tmp_path, text)
    out = tmp_path / "report"
    argv = ["run", str(path), "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--threads", "1"]
    assert main(argv) == 0
    return pd.read_csv(out / "results.csv")


@pytest.mark.slow
def test_imdb_micro_suite_end_to_end(tmp_path, imdb_dir, classifier_dir):
    """The built-in tiny base, pretrained on the dataset's texts; gold from the classifier."""
    text = imdb_suite(imdb_dir, classifier_dir).replace("base: {model: gpt2}", f"base: {{{TINY}}}")
    results = run_suite(tmp_path, text)
    assert set(results["arm"]) == {"base", "sft", "dpo", "ppo"} and len(results) == 4 * 2
    assert set(results["split"]) == {"id", "ood"}
    assert results["gold_reward"].between(0, 1).all() and results["demonstrator_gold"].between(0, 1).all()


@pytest.mark.slow
@pytest.mark.parametrize("judge", ["judge_split: judge", "judge_fraction: 0.1"])
def test_preferences_micro_suite_with_a_trained_judge(tmp_path, preference_dirs, judge):
    """The built-in tiny base, pretrained on the dataset's texts; PPO reads the held-out judge as gold
    (trained on a split of its own, or on a share of the train split)."""
    text = preference_suite(preference_dirs["hh"], "gpt2", judge).replace(
        "base: {model: gpt2}",
        "base: {tiny: {n_layer: 1, n_head: 2, n_embd: 32, steps: 40, corpus_size: 500}}",
    )
    results = run_suite(tmp_path, text.replace("rm: {recipe: [rm]}", "rm: {recipe: [rm, ppo]}"))
    assert set(results["arm"]) == {"base", "sft", "dpo", "rm"} and len(results) == 4 * 2
    assert set(results["split"]) == {"id", "ood"} and results["gold_reward"].notna().all()
    judges = list((tmp_path / "cache").glob("judge-*"))
    assert len(judges) == 1 and (judges[0] / "config.json").exists()


def test_judge_fraction_holds_out_a_share_of_the_train_split(tmp_path, preference_dirs):
    """`judge_fraction`: a fixed share of the train split's prompts trains the judge; none of them is a
    training or evaluation prompt; the suite plans a judge stage; suites without it keep their keys."""
    data = preference_data(preference_dirs["prompt"])
    task = Preferences(data={**data, "judge_fraction": 0.25}, seed=0, train_prompts=40, eval_prompts=4)
    judge = {p["prompt"] for p in task.judge_comparisons()}
    assert len(judge) == 10  # a quarter of the 40 distinct train prompts
    assert not judge & set(task.prompts("train")) and len(task.prompts("train")) <= 30
    assert not judge & (set(task.prompts("id")) | set(task.prompts("ood")))
    other_seed = Preferences(data={**data, "judge_fraction": 0.25}, seed=1, train_prompts=40)
    assert {p["prompt"] for p in other_seed.judge_comparisons()} == judge  # one gold for every task seed
    text = preference_suite(preference_dirs["hh"], "gpt2", "judge_fraction: 0.25")
    runs = plan_runs(load_suite(write(tmp_path, text)))
    assert any(s.kind == "judge" for s in stage_order([r.eval for r in runs]))
    split = load_suite(write(tmp_path, preference_suite(preference_dirs["hh"]), "split.yaml"))
    assert "judge_fraction" not in split.task.model_dump()["data"]  # unset: not in any stage key
    for line, expected in [
        ("judge_fraction: 0.25\n    judge_split: judge", "give one of judge"),
        ("judge_fraction: 1.5", "judge_fraction"),
    ]:
        with pytest.raises(SuiteError, match=expected):
            load_suite(write(tmp_path, preference_suite(preference_dirs["hh"], "gpt2", line), "bad.yaml"))


def test_preference_ood_from_another_split(preference_dirs, judge_dir):
    data = preference_data(preference_dirs["messages"], judge_dir)
    data["ood"] = {"path": None, "name": None, "data_dir": None, "split": "judge"}
    task = Preferences(data=data, seed=0, train_prompts=40, eval_prompts=24)
    judge_prompts = {
        p["prompt"] for p in Preferences(data={**data, "judge_split": "judge"}).judge_comparisons()
    }
    assert set(task.prompts("ood")) == judge_prompts
    assert len(task.prompts("train")) == 40  # no length split when OOD prompts have a source of their own
    data["ood"]["split"] = "validation"
    with pytest.raises(DataError, match="ood.split: no split 'validation'"):
        Preferences.check_data(data)


def test_an_ood_filter_that_leaves_nothing_names_the_filter(tmp_path, judge_dir):
    """With no `data.ood`, OOD is the test split's prompts longer than the median training prompt: a test
    split of short prompts leaves none, and the error names that filter and what to set instead."""
    from datasets import Dataset, DatasetDict

    short = [t for t in preference_triples(32, 40) if not t[0].startswith("my friends")]
    splits = {"train": preference_triples(40), "test": short}
    path = tmp_path / "short_test"
    DatasetDict({k: Dataset.from_list(preference_rows(v, "prompt")) for k, v in splits.items()}).save_to_disk(
        str(path)
    )
    task = Preferences(data=preference_data(path, judge_dir), seed=0, train_prompts=16, eval_prompts=4)
    with pytest.raises(
        DataError, match=r"^ood: the length filter .* leaves no OOD prompt: .*set task.data.ood"
    ):
        task.prompts("ood")
    # preflight says it under the setting, not as a budget problem
    text = preference_suite(path, "gpt2", f"judge: {judge_dir}").replace("prompt: null", "prompt: prompt")
    with pytest.raises(SuiteError, match=r": task.data.ood: the length filter"):
        preflight([load_suite(write(tmp_path, text))])


def test_data_files_folder_reads_like_a_saved_dataset(tmp_path, imdb_dir, imdb_task):
    """A folder of jsonl files (datasets.load_dataset) gives the same task as the save_to_disk folder."""
    from datasets import load_from_disk

    folder = tmp_path / "imdb_json"
    folder.mkdir()
    for split in ("train", "test"):
        load_from_disk(str(imdb_dir))[split].to_json(str(folder / f"{split}.jsonl"))
    task = Imdb(data={**imdb_task.data, "path": str(folder)}, seed=0, train_prompts=16, eval_prompts=4)
    assert all(task.prompts(s) == imdb_task.prompts(s) for s in ("train", "id", "ood"))


def test_hub_dataset_without_hub_access_is_one_line():
    code = (
        "from compare.tasks.hub import load_split\n"
        "load_split({'path': 'stanfordnlp/imdb', 'name': None, 'data_dir': None, 'train_split': 'train'},"
        " 'train_split', {'text': 'text'})"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # fail fast, whatever the network
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("compare.tasks.hub.DataError: path: cannot read hub dataset (needs hub access)")
