"""The arithmetic task: gold reward on hand-written answers, the splits, the labellers, the language."""

import math
import random
import statistics

import pytest

from compare.lm.tiny import build_word_tokenizer
from compare.tasks.arithmetic import (
    Arithmetic,
    carry_columns,
    column_sum,
    format_prompt,
    parse_prompt,
    slipped_sum,
)

PROMPT = "add 4 7 + 3 8 ="  # 47 + 38 = 85: a carry out of the units
LONG = "add 5 6 7 + 5 6 8 ="  # 567 + 568 = 1135: lengths 3 to 4 are plausible


@pytest.fixture
def task():
    return Arithmetic(seed=0)


@pytest.mark.parametrize(
    "prompt, completion, expected",
    [
        (PROMPT, " 8 5", 1.0),  # exact
        (PROMPT, " 7 5", 0.5),  # dropped carry: units right, tens wrong
        (PROMPT, " 8 4", 0.5),  # units wrong
        (PROMPT, " 5", 0.5),  # too short: 1 of max(1, 2) digits right
        (PROMPT, " 1 8 5", 2 / 3),  # a digit too many (still a plausible length): 2 of 3
        (PROMPT, " 0 8 5", 2 / 3),  # leading zero counts as an extra digit
        (LONG, " 1 1 3 5", 1.0),
        (LONG, " 1 3 5", 0.75),  # dropped final carry: 3 of 4 digits right
        (LONG, " 1 0 3 5", 0.75),
        # malformed: "+" is not a digit -> 0 of 3 aligned right, minus 1/3 malformed
        (PROMPT, " 8 5 +", 0.0 - 1 / 3),
        # echoes the question: nothing aligned right; "+" and a 4th digit (3 at most) are 2 of 5 words
        (PROMPT, " 4 7 + 3 8", 0.0 - 2 / 5),
        # runs on: 7 digits where at most 3 are possible -> 4/7 malformed; aligned "5 5" vs "8 5": 1 of 7
        (PROMPT, " 8 5 5 5 5 5 5", 1 / 7 - 4 / 7),
        (PROMPT, " add = +", -1.0),  # nothing but non-digits
        (PROMPT, "", -1.0),  # nothing written
        (PROMPT, "   ", -1.0),
    ],
)
def test_gold_reward_hand_computed(task, prompt, completion, expected):
    assert task.gold_reward(prompt, completion) == pytest.approx(expected)


def test_gold_parts_and_well_formed(task):
    assert task.gold(PROMPT, " 8 5").well_formed and task.gold(PROMPT, " 8 5").malformed == 0.0
    assert task.gold(PROMPT, " 7 5").well_formed  # wrong but well formed
    assert task.gold(PROMPT, " 1 8 5").well_formed  # three digits: a plausible length for 2 + 2 digits
    assert not task.gold(PROMPT, " 5").well_formed  # a sum of two 2-digit numbers has at least 2 digits
    assert not task.gold(PROMPT, " 1 1 8 5").well_formed
    assert task.gold(PROMPT, " 1 1 8 5").malformed == pytest.approx(1 / 4)
    assert not task.gold(PROMPT, " 8 5 =").well_formed
    assert not task.gold(PROMPT, "").well_formed
    assert task.gold(PROMPT, " 85").reward == -1.0  # digits must be separate words


def test_only_the_exact_answer_scores_one(task):
    rng = random.Random(0)
    for _ in range(200):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        prompt, truth = format_prompt(a, b), a + b
        assert task.gold_reward(prompt, " " + " ".join(str(truth))) == 1.0
        wrong = rng.choice([truth + rng.randint(1, 50), truth * 10 + rng.randint(0, 9)])
        assert task.gold_reward(prompt, " " + " ".join(str(wrong))) < 1.0


def test_prompt_language():
    assert format_prompt(47, 38) == PROMPT and parse_prompt(PROMPT) == (47, 38)
    assert parse_prompt("add 0 + 9 9 9 =") == (0, 999)
    for bad in ("add 4 7 + =", "4 7 + 3 8 =", "add 4 7 3 8 =", "add 4 x + 3 ="):
        with pytest.raises(ValueError):
            parse_prompt(bad)


def test_column_addition_and_slips():
    assert column_sum(47, 38) == ["8", "5"] and column_sum(0, 0) == ["0"]
    assert column_sum(999, 1) == ["1", "0", "0", "0"]
    assert carry_columns(47, 38) == [0] and carry_columns(999, 1) == [0, 1, 2] and carry_columns(12, 3) == []
    assert column_sum(47, 38, frozenset({0})) == ["7", "5"]  # the carry into the tens is forgotten
    assert column_sum(567, 568, frozenset({2})) == ["1", "3", "5"]  # the final carry is forgotten
    rng = random.Random(0)
    for _ in range(300):
        a, b, n = rng.randint(0, 999), rng.randint(0, 999), rng.choice([1, 2])
        slipped = slipped_sum(a, b, n, rng)
        assert slipped != column_sum(a, b)
        assert max(len(str(a)), len(str(b))) <= len(slipped) <= max(len(str(a)), len(str(b))) + 1


def test_splits_are_deterministic_held_out_and_ood_is_longer(task):
    again = Arithmetic(seed=0)
    for split in ("train", "id", "ood"):
        assert task.prompts(split) == again.prompts(split)
    assert Arithmetic(seed=1).prompts("train") != task.prompts("train")
    assert len(task.prompts("train")) == 400
    assert len(task.prompts("id")) == len(set(task.prompts("id"))) == 32
    assert len(task.prompts("ood")) == 32
    assert not set(task.prompts("id")) & set(task.prompts("train"))  # ID eval prompts are held out
    short = {len(str(x)) for p in task.prompts("train") + task.prompts("id") for x in parse_prompt(p)}
    long = {len(str(x)) for p in task.prompts("ood") for x in parse_prompt(p)}
    assert short == {2} and long == {3}  # OOD operands are longer than any training operand
    small = Arithmetic(seed=0, train_prompts=10, eval_prompts=4)
    assert len(small.prompts("train")) == 10 and len(small.prompts("id")) == len(small.prompts("ood")) == 4


def test_demonstrator_is_mostly_right_but_below_perfect(task):
    rng = random.Random(0)
    prompts = task.prompts("train") * 5  # 2000 demonstrations
    golds = [task.gold(p, task.demonstrate(p, rng)) for p in prompts]
    exact = statistics.fmean(g.reward == 1.0 for g in golds)
    assert abs(exact - task.demonstrator_quality) < 4 * math.sqrt(0.8 * 0.2 / len(prompts))
    assert all(g.well_formed for g in golds)  # wrong demonstrations are plausible slips, not garbage
    assert 0.8 < statistics.fmean(g.reward for g in golds) < 0.97
    for quality in (0.0, 0.5, 1.0):
        other = Arithmetic(seed=0, demonstrator_quality=quality)
        exact = statistics.fmean(other.gold_reward(p, other.demonstrate(p, rng)) == 1.0 for p in prompts)
        assert abs(exact - quality) < 0.05


def test_corpus_mixes_right_and_wrong_answers_of_every_length(task):
    corpus = task.pretraining_corpus(3000, random.Random(0))
    assert corpus == task.pretraining_corpus(3000, random.Random(0))
    golds, lengths = [], set()
    for text in corpus:
        prompt, _, answer = text.partition(" =")
        golds.append(task.gold_reward(prompt + " =", answer))
        lengths |= {len(str(x)) for x in parse_prompt(prompt + " =")}
    assert lengths == {1, 2, 3}  # the OOD length is pretrained on too
    exact = statistics.fmean(g == 1.0 for g in golds)
    assert 0.65 < exact < 0.75 and min(golds) < 0.0  # correct, slipped and malformed answers
    held_out = set(task.prompts("id")) | set(task.prompts("ood"))
    assert not {text.partition(" =")[0] + " =" for text in corpus} & held_out


def test_vocabulary_covers_the_language_and_round_trips(task):
    corpus = task.pretraining_corpus(2000, random.Random(0))
    vocab = set(task.vocabulary())
    assert set(" ".join(corpus).split()) <= vocab
    assert {w for p in task.prompts("train") + task.prompts("ood") for w in p.split()} <= vocab
    tokenizer = build_word_tokenizer(task.vocabulary())
    text = LONG + " 1 1 3 5"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.split()) and tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_base_corpus_holds_out_the_suites_own_evaluation_prompts(tmp_path):
    """The base stage builds the task with the suite's eval_prompts, so a larger ID split stays unseen."""
    from compare.plan import base_stage
    from compare.stages.common import make_task
    from compare.suite import load_suite

    path = tmp_path / "s.yaml"
    path.write_text("name: s\ntask: {name: arithmetic, eval_prompts: 96}\narms: {base: {recipe: []}}\n")
    stage = base_stage(load_suite(path))
    task = make_task(stage.params["task"])
    held_out = set(task.prompts("id"))
    assert len(held_out) == 96
    corpus = task.pretraining_corpus(3000, random.Random(0))
    assert not {text.partition(" =")[0] + " =" for text in corpus} & held_out
