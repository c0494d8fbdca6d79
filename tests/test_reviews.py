"""The reviews task: gold reward on hand-written completions, determinism, the labellers' quality."""

import random
import statistics

import pytest

from compare.tasks.reviews import ID_DOMAINS, OOD_DOMAINS, Reviews, parse_sentence

PROMPT = "phone review : i paid full price ."


@pytest.fixture
def task():
    return Reviews(seed=0)


@pytest.mark.parametrize(
    "completion, expected",
    [
        (" the battery is great .", 0.9),  # one positive, on-topic sentence
        (" the battery is very great .", 1.35),  # "very" scales by 1.5
        (" the screen is awful . i love the camera .", 0.0),  # mean of -1 and +1
        (" it was okay .", 0.0),  # neutral, no aspect (never off topic)
        # repetition: 3 sentences, 1 distinct -> repetition 2/3; positivity 0.9
        (" the battery is great . the battery is great . the battery is great .", 0.9 - 2 / 3),
        # off topic: "plot" is not a phone aspect -> 1 of 2 sentences off topic
        (" the battery is great . the plot is great .", 0.9 - 0.5),
        # malformed: 1 of 2 units broken ("great great") -> positivity of the valid one minus 0.5
        (" the battery is great . great great .", 0.9 - 0.5),
        # dangling words without a final "." count as a malformed unit
        (" the battery is great . the screen", 0.9 - 0.5),
        ("", -2.0),  # nothing written
        (" very very .", -2.0),  # nothing valid: -1 - malformed (1.0)
    ],
)
def test_gold_reward_hand_computed(task, completion, expected):
    assert task.gold_reward(PROMPT, completion) == pytest.approx(expected)


def test_gold_parts_and_well_formed(task):
    g = task.gold(PROMPT, " the battery is great . the plot is great .")
    assert g.well_formed and g.off_topic == 0.5 and g.positivity == pytest.approx(0.9)
    assert not task.gold(PROMPT, " the battery great .").well_formed


def test_parse_sentence_forms():
    assert parse_sentence("the screen is bad".split()) == (-0.7, "screen")
    assert parse_sentence("i hate the ending".split()) == (-1.0, "ending")
    assert parse_sentence("it was very good".split()) == (pytest.approx(0.9), None)
    assert parse_sentence("the is good".split()) is None
    assert parse_sentence("i love".split()) is None


def test_splits_are_deterministic_and_disjoint_in_domain(task):
    again = Reviews(seed=0)
    for split in ("train", "id", "ood"):
        assert task.prompts(split) == again.prompts(split)
    assert Reviews(seed=1).prompts("train") != task.prompts("train")
    id_domains = {p.split()[0] for p in task.prompts("train") + task.prompts("id")}
    ood_domains = {p.split()[0] for p in task.prompts("ood")}
    assert id_domains <= set(ID_DOMAINS) and ood_domains <= set(OOD_DOMAINS)
    assert not set(task.prompts("id")) & set(task.prompts("train"))  # ID eval prompts are held out


def test_demonstrator_is_good_but_below_the_best(task):
    rng = random.Random(0)
    prompts = task.prompts("train")[:300]
    demo_gold = statistics.fmean(task.gold_reward(p, task.demonstrate(p, rng)) for p in prompts)
    best = task.gold_reward(PROMPT, " the battery is very wonderful .")
    corpus_gold = []
    for text in task.pretraining_corpus(500, random.Random(1)):
        head, _, tail = text.partition(" . ")  # the opener ends the prompt
        corpus_gold.append(task.gold_reward(head + " .", " " + tail))
    assert statistics.fmean(corpus_gold) < demo_gold < best - 0.5
    better = Reviews(seed=0, demonstrator_quality=1.0)
    assert statistics.fmean(better.gold_reward(p, better.demonstrate(p, rng)) for p in prompts) > demo_gold


def test_corpus_covers_every_domain_and_behaviour(task):
    corpus = task.pretraining_corpus(2000, random.Random(0))
    assert {t.split()[0] for t in corpus} == set(ID_DOMAINS) | set(OOD_DOMAINS)
    words = set(" ".join(corpus).split())
    assert {"great", "awful", "okay"} <= words
    assert set(task.vocabulary()) >= words
