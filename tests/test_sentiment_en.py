"""The sentiment_en task: gold reward on hand-written completions, splits, the demonstrator, a micro run."""

import random
import statistics
import textwrap
import time

import pandas as pd
import pytest

from compare.cli import main
from compare.tasks import TASKS
from compare.tasks.sentiment_en import (
    ID_TOPICS,
    OOD_TOPICS,
    SentimentEn,
    function_word_share,
    sentiment_gold,
    words_of,
)

PROMPT = "I went to the sushi bar near the station last night and"
POSITIVE = " the food was wonderful and the staff were lovely. I would happily eat there again."


@pytest.fixture(scope="module")
def task():
    return SentimentEn(seed=0)


# -- gold reward ------------------------------------------------------------------------------------------
def test_words_of_strips_punctuation_and_counts_junk():
    words, junk = words_of("Don't, e-mail me at 12:30 ### café! 10x0 ...")
    assert words == ["don't", "e-mail", "me", "at", "12:30", "café"]
    assert junk == 3  # "###", "10x0" (letters and digits mixed) and "..."
    assert function_word_share(words) == pytest.approx(3 / 6)  # "don't" (a contraction), "me", "at"
    assert function_word_share([]) == 0.0


def test_gold_orders_positive_neutral_negative(task):
    positive = task.gold(PROMPT, POSITIVE)
    neutral = task.gold(PROMPT, " we got there around seven and ordered the soup of the day.")
    negative = task.gold(PROMPT, " the food was terrible and the service was awful. I regret going.")
    assert positive.reward > 0.8 > neutral.reward == 0.0 > -0.5 > negative.reward
    for g in (positive, neutral, negative):  # fluent text pays no penalty: the reward is VADER's score
        assert g.well_formed and g.reward == g.positivity and g.repetition == g.off_topic == 0.0


@pytest.mark.parametrize(
    "completion, malformed, repetition",
    [
        # 6 words, 5 bigrams all ("great", "great"): rep-2 = 1 - 1/5; one sentence; no function word
        (" great great great great great great", 1.0, 0.8),
        # 3 sentences, 1 distinct -> 2/3; rep-2 = 1 - 3/8 = 0.625 is smaller
        (" I loved it. I loved it. I loved it.", 0.0, 2 / 3),
        # two different sentences sharing one bigram ("was great") of 7 -> 1/7
        (" the food was great. The service was great.", 0.0, 1 / 7),
        # junk: "###" and "10x0" are 2 of 6 tokens; "3.5" is a number, so a word
        (" ### 10x0 the pasta 3.5 wonderful.", 2 / 6, 0.0),
        # too little text: 2 words of the 3 wanted -> (3 - 2) / 3
        (" loved it!", 1 / 3, 0.0),
        # too little text and junk tie: 1 junk of 3 tokens, 2 words -> max(1/3, 1/3)
        (" loved it :)", 1 / 3, 0.0),
        # not prose: 1 function word ("the") of 7 -> (0.2 - 1/7) / 0.2 = 2/7
        (" the great wonderful lovely excellent superb food", 2 / 7, 0.0),
        # a pile of praise: no function word at all
        (" Great! Wonderful! Lovely! Excellent!", 1.0, 0.0),
    ],
)
def test_penalties_hand_computed(task, completion, malformed, repetition):
    g = task.gold(PROMPT, completion)
    assert g.malformed == pytest.approx(malformed) and g.repetition == pytest.approx(repetition)
    assert g.reward == pytest.approx(g.positivity - malformed - repetition)
    assert g.well_formed == (malformed == 0.0)


def test_degenerate_praise_scores_below_fluent_praise(task):
    fluent = task.gold_reward(PROMPT, POSITIVE)
    for degenerate in (
        " great great great great great great",
        " I loved it. I loved it. I loved it.",
        " Great! Wonderful! Lovely! Excellent!",
        " great!",
    ):
        g = task.gold(PROMPT, degenerate)
        assert g.positivity > 0.6 and g.reward < fluent - 0.5


def test_empty_completion(task):
    assert task.gold(PROMPT, "") == task.gold(PROMPT, "   ")
    g = task.gold(PROMPT, "")
    assert g.reward == -1.0 and g.malformed == 1.0 and not g.well_formed


def test_golds_are_fast(task):
    completions = [task.demonstrate(p, random.Random(i)) for i, p in enumerate(task.prompts("train"))] * 3
    start = time.perf_counter()
    task.golds([PROMPT] * 1000, completions[:1000])
    assert time.perf_counter() - start < 1.0
    assert sentiment_gold(POSITIVE) == task.gold("any prompt", POSITIVE)  # the prompt is not read


# -- prompts ----------------------------------------------------------------------------------------------
def test_splits_are_deterministic_disjoint_and_sized(task):
    again = SentimentEn(seed=0)
    for split in ("train", "id", "ood"):
        assert task.prompts(split) == again.prompts(split)
        assert all(p == p.strip() for p in task.prompts(split))  # the completion brings the space
    assert SentimentEn(seed=1).prompts("train") != task.prompts("train")
    train, id_, ood = task.prompts("train"), task.prompts("id"), task.prompts("ood")
    assert len(train) == 400 and len(set(train)) == 400  # several hundred distinct training prompts
    assert len(id_) == len(set(id_)) == 32 and len(ood) == len(set(ood)) == 32
    assert not set(id_) & set(train)  # ID evaluation prompts are held out
    assert {task.topic_of(p) for p in train + id_} == set(ID_TOPICS)
    assert {task.topic_of(p) for p in ood} == set(OOD_TOPICS)
    small = SentimentEn(seed=0, train_prompts=64, eval_prompts=4)
    assert (len(small.prompts("train")), len(small.prompts("id")), len(small.prompts("ood"))) == (64, 4, 4)


# -- the demonstrator and the corpus ----------------------------------------------------------------------
def test_demonstrator_is_fluent_and_below_the_best(task):
    rng = random.Random(0)
    prompts = task.prompts("train")[:200]
    demos = [task.demonstrate(p, rng) for p in prompts]
    golds = task.golds(prompts, demos)
    assert all(d.startswith(" ") and not d.startswith("  ") for d in demos)
    assert all(d.split()[0][0].islower() or d.split()[0] == "I" for d in demos)  # continues the opening
    assert statistics.fmean(g.well_formed for g in golds) == 1.0
    assert statistics.fmean(g.repetition for g in golds) < 0.01
    demo_gold = statistics.fmean(g.reward for g in golds)
    assert demo_gold < task.gold_reward(PROMPT, POSITIVE) - 0.5
    means = {}
    for quality in (0.2, 1.0):
        other = SentimentEn(seed=0, demonstrator_quality=quality)
        rng = random.Random(0)
        means[quality] = statistics.fmean(other.gold_reward(p, other.demonstrate(p, rng)) for p in prompts)
    assert means[0.2] < demo_gold < means[1.0]


def test_vocabulary_covers_prompts_corpus_and_demonstrations(task):
    vocabulary = set(task.vocabulary())
    corpus = task.pretraining_corpus(2000, random.Random(0))
    rng = random.Random(0)
    prompts = [p for split in ("train", "id", "ood") for p in task.prompts(split)]
    demos = [SentimentEn(seed=0, demonstrator_quality=0.5).demonstrate(p, rng) for p in prompts]
    assert set(" ".join(corpus + prompts + demos).split()) <= vocabulary
    assert max(len(text.split()) for text in corpus) < 64  # fits the tiny base model's 64 positions


def test_corpus_covers_every_topic_and_behaviour(task):
    corpus = task.pretraining_corpus(2000, random.Random(0))
    topics = {task.topic_of(text) for text in corpus}
    assert topics == set(ID_TOPICS) | set(OOD_TOPICS)
    golds = [sentiment_gold(text) for text in corpus]  # the prompt is neutral, so scoring it all is fine
    assert min(g.positivity for g in golds) < -0.5 and max(g.positivity for g in golds) > 0.8
    assert statistics.fmean(g.repetition > 0.3 for g in golds) > 0.05  # some degenerate text


# -- a micro suite through the command line ---------------------------------------------------------------
MICRO = """
name: micro_sentiment_en
description: micro suite on the sentiment_en task
task: {name: sentiment_en, train_prompts: 64, eval_prompts: 4}
base:
  tiny: {n_layer: 1, n_head: 2, n_embd: 32, corpus_size: 500, steps: 40, batch_size: 16}
budget: {units: 32, cost: {demonstration: 4, comparison: 1}}
stages:
  sft: {epochs: 1, batch_size: 8}
  dpo: {epochs: 1, batch_size: 8}
arms:
  base: {recipe: []}
  sft: {recipe: [sft]}
  dpo: {recipe: [dpo]}
grid: {seed: [0]}
eval: {samples_per_prompt: 2, max_new_tokens: 16}
"""


@pytest.mark.slow
def test_micro_suite_runs(tmp_path):
    assert "sentiment_en" in TASKS
    suite = tmp_path / "micro.yaml"
    suite.write_text(textwrap.dedent(MICRO))
    out = tmp_path / "report"
    assert main(["run", str(suite), "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    results = pd.read_csv(out / "results.csv")
    assert set(results["arm"]) == {"base", "sft", "dpo"} and set(results["split"]) == {"id", "ood"}
    assert len(results) == 3 * 2 and results["gold_reward"].between(-3, 1).all()
