"""The reviews task: gold reward on hand-written completions, determinism, the labellers' quality."""

import random
import statistics

import pytest

from compare.tasks.reviews import ID_DOMAINS, OOD_DOMAINS, Reviews, parse_sentence

PROMPT = "phone review : i paid full price ."


@pytest.fixture
def task():
    return Reviews(seed=0)


# gold = positivity + 0.5 coverage + 0.25 specificity - malformed - repetition - off_topic - length
# (phone aspects: battery, screen, camera, speaker, price; coverage counts up to 3 distinct ones)
@pytest.mark.parametrize(
    "completion, expected",
    [
        (" the battery is great .", 0.9 + 0.5 / 3 + 0.25),  # one positive, specific sentence
        (" the battery is very great .", 0.9 + 0.5 / 3 + 0.25),  # intensity is not quality
        (" it was very excellent .", 1.0),  # positive but says nothing about the phone
        (" the screen is awful . i love the camera .", 0.0 + 0.5 * 2 / 3 + 0.25),  # mean of -1 and +1
        (" it was okay .", 0.0),  # neutral, no aspect (never off topic)
        # the helpful answer: three positive sentences about three aspects
        (" the battery is excellent . the screen is wonderful . i love the camera .", 1.75),
        # five of them: one sentence past the helpful length costs 0.25
        (
            " the battery is excellent . the screen is excellent . the camera is excellent ."
            " the speaker is excellent . the price is excellent .",
            1.5,
        ),  # fmt: skip
        # flattery is positive (0.5) but not specific
        (" the battery is great . you will love it .", 0.7 + 0.5 / 3 + 0.125),
        # repetition: 3 sentences, 1 distinct -> repetition 2/3; one aspect covered
        (
            " the battery is great . the battery is great . the battery is great .",
            0.9 + 0.5 / 3 + 0.25 - 2 / 3,
        ),
        # off topic: "plot" is not a phone aspect -> 1 of 2 sentences off topic, half specific
        (" the battery is great . the plot is great .", 0.9 + 0.5 / 3 + 0.125 - 0.5),
        # malformed: 1 of 2 units broken ("great great")
        (" the battery is great . great great .", 0.9 + 0.5 / 3 + 0.25 - 0.5),
        # dangling words without a final "." count as a malformed unit
        (" the battery is great . the screen", 0.9 + 0.5 / 3 + 0.25 - 0.5),
        ("", -2.0),  # nothing written
        (" very very .", -2.0),  # nothing valid: -1 - malformed (1.0)
    ],
)
def test_gold_reward_hand_computed(task, completion, expected):
    assert task.gold_reward(PROMPT, completion) == pytest.approx(expected)


def test_neither_the_shortest_nor_the_longest_answer_is_best(task):
    one = task.gold_reward(PROMPT, " the battery is excellent .")
    three = task.gold_reward(
        PROMPT, " the battery is excellent . the screen is excellent . i love the camera ."
    )
    five = " the battery is excellent . the screen is excellent . the camera is excellent ."
    five += " the speaker is excellent . the price is excellent ."
    assert one < three and task.gold_reward(PROMPT, five) < three


def test_format_prompt_wants_the_number_of_sentences_asked(task):
    two = "phone review in two sentences : i paid full price ."
    assert task.gold_reward(two, " the battery is excellent . the screen is excellent .") == pytest.approx(
        1.75
    )
    three = " the battery is excellent . the screen is excellent . the camera is excellent ."
    assert task.gold_reward(two, three) == pytest.approx(1.75 - 0.5)  # one sentence more than asked


def test_counting_is_scored_by_the_numbers_right(task):
    assert task.gold("count : three four", " five six seven .").reward == 1.0
    assert task.gold("count : three four", " five six seven .").well_formed
    assert task.gold_reward("count : two four", " six eight nine .") == pytest.approx(2 / 3)  # step 2
    assert task.gold_reward("count : three four", " the food is good .") == 0.0


def test_labellers_see_length_and_style(task):
    view = task.labeller_view(PROMPT, " the battery is very great . you will love it . it was")
    assert view.length == 3 and view.style == 2  # two sentences and a dangling one; "very" and flattery


def test_gold_parts_and_well_formed(task):
    g = task.gold(PROMPT, " the battery is great . the plot is great .")
    assert g.well_formed and g.off_topic == 0.5 and g.positivity == pytest.approx(0.9)
    assert task.gold(PROMPT, " you will love it .").well_formed
    assert not task.gold(PROMPT, " the battery great .").well_formed


def test_parse_sentence_forms():
    assert parse_sentence("the screen is bad".split()) == (-0.7, "screen")
    assert parse_sentence("i hate the ending".split()) == (-1.0, "ending")
    assert parse_sentence("it was very good".split()) == (pytest.approx(0.6), None)
    assert parse_sentence("i recommend it".split()) == (0.5, None)
    assert parse_sentence("the is good".split()) is None
    assert parse_sentence("i love".split()) is None


def test_splits_are_deterministic_and_disjoint_in_domain(task):
    again = Reviews(seed=0)
    for split in ("train", *task.eval_splits):
        assert task.prompts(split) == again.prompts(split)
    assert Reviews(seed=1).prompts("train") != task.prompts("train")
    id_domains = {p.split()[0] for p in task.prompts("train") + task.prompts("id")}
    ood_domains = {p.split()[0] for p in task.prompts("ood")}
    assert id_domains <= set(ID_DOMAINS) and ood_domains <= set(OOD_DOMAINS)
    assert not set(task.prompts("id")) & set(task.prompts("train"))  # ID eval prompts are held out
    id_aspects = {a for aspects in ID_DOMAINS.values() for a in aspects}
    assert not id_aspects & {
        a for aspects in OOD_DOMAINS.values() for a in aspects
    }  # never written in training
    train = set(task.prompts("train"))
    for split in ("ood_opener", "ood_format", "prior"):  # every shift is unseen in training
        assert task.prompts(split) and not set(task.prompts(split)) & train


def test_demonstrator_is_good_but_below_the_best(task):
    rng = random.Random(0)
    prompts = task.prompts("train")[:300]
    demo_gold = statistics.fmean(task.gold_reward(p, task.demonstrate(p, rng)) for p in prompts)
    best = task.gold_reward(
        PROMPT, " the battery is wonderful . the screen is excellent . i love the camera ."
    )
    corpus_gold = []
    for text in task.pretraining_corpus(500, random.Random(1)):
        if text.startswith("count"):
            continue
        head, _, tail = text.partition(" . ")  # the opener ends the prompt
        corpus_gold.append(task.gold_reward(head + " .", " " + tail))
    assert statistics.fmean(corpus_gold) < demo_gold < best - 0.5
    better = Reviews(seed=0, demonstrator_quality=1.0, demonstrator_habit=0.0)
    assert statistics.fmean(better.gold_reward(p, better.demonstrate(p, rng)) for p in prompts) > demo_gold


def test_corpus_covers_every_domain_and_behaviour(task):
    corpus = task.pretraining_corpus(2000, random.Random(0))
    assert {t.split()[0] for t in corpus} == set(ID_DOMAINS) | set(OOD_DOMAINS) | {"count"}
    words = set(" ".join(corpus).split())
    assert {"great", "awful", "okay"} <= words
    assert set(task.vocabulary()) >= words
