"""The arithmetic task: gold reward on hand-written answers, the splits, the labellers, the language, and
its options (rule variants, worked steps, prompt templates)."""

import hashlib
import json
import math
import random
import re
import statistics
from pathlib import Path

import pytest

from compare.lm.tiny import build_word_tokenizer
from compare.tasks.arithmetic import (
    HELD_OUT_TEMPLATE,
    PATTERNS,
    REVERSED_FRAME,
    TRAIN_TEMPLATES,
    Arithmetic,
    carry_columns,
    column_steps,
    column_sum,
    format_prompt,
    parse_prompt,
    slip,
    slipped_sum,
    split_answer,
    steps_well_formed,
    write_prompt,
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


# -- the options: rule variants, worked steps, prompt templates --------------------------------------------
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
ALL_ON = {"rule_variants": True, "worked_steps": True, "templates": 4}
REVERSED = "rev 7 4 + 8 3 ="  # 47 + 38 with each operand written units first: still 85


def digest(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


def split_text(text: str) -> tuple[str, str, str]:
    """(frame, prompt, completion) of a corpus text or a prompt."""
    for frame, pattern in PATTERNS.items():
        match = pattern.match(text)
        if match:
            return frame, text[: match.end()], text[match.end() :]
    raise ValueError(text)


@pytest.fixture
def varied():
    return Arithmetic(seed=0, **ALL_ON)


@pytest.mark.parametrize(
    "prompt, completion, expected",
    [
        (PROMPT, " 1 5 , 0 8 so 8 5", 1.0),  # worked: 7+8 = 15, 4+3+1 = 08, so 85
        (PROMPT, " 8 5", 1.0),  # the same answer without steps scores the same
        (PROMPT, " 1 5 , 0 8 so 7 5", 0.5),  # right steps, wrong final sum: tens wrong
        (PROMPT, " 1 5 , 0 7 so 7 5", 0.5),  # the dropped carry shows in the steps; the answer is scored
        (PROMPT, " 1 4 , 0 7 so 8 5", 1.0),  # wrong but well-formed steps are not scored
        # one step for two columns: the step and "so" are 3 malformed words of 5
        (PROMPT, " 1 5 so 8 5", 1.0 - 3 / 5),
        (PROMPT, " so 8 5", 1.0 - 1 / 3),  # "so" without steps: 1 malformed word of 3
        (PROMPT, " 1 5 , 0 8 so", -1.0),  # steps and no answer
        # the answer is "8 5 so": 0 of 3 aligned right; "so" is 1 malformed word of 9
        (PROMPT, " 1 5 , 0 8 so 8 5 so", 0.0 - 1 / 9),
        (LONG, " 1 5 , 1 3 , 1 1 so 1 1 3 5", 1.0),
        (LONG, " 1 5 , 1 3 , 0 1 so 1 3 5", 0.75),  # the final carry dropped: 3 of 4 digits right
        (REVERSED, " 8 5", 1.0),
        (REVERSED, " 1 5 7", 0.0),  # 74 + 83: the training rule applied to the variant, nothing aligned
        (REVERSED, " 1 5 , 0 8 so 8 5", 1.0),
        ("rev 7 6 5 + 8 6 5 =", " 1 1 3 5", 1.0),  # 567 + 568
        ("rev 7 6 5 + 8 6 5 =", " 1 6 3 0", 0.5),  # 765 + 865, the usual reading: 2 of 4 aligned
        ("what is 4 7 + 3 8 =", " 8 5", 1.0),
        ("4 7 + 3 8 is", " 7 5", 0.5),
        ("sum of 4 7 and 3 8 =", " 1 5 , 0 8 so 8 5", 1.0),
    ],
)
def test_gold_reward_of_worked_answers_and_variant_prompts(task, prompt, completion, expected):
    assert task.gold_reward(prompt, completion) == pytest.approx(expected)


def test_worked_answers_well_formed_and_verified(varied):
    assert varied.gold(PROMPT, " 1 5 , 0 8 so 8 5").well_formed
    assert varied.gold(PROMPT, " 1 4 , 0 7 so 7 5").well_formed  # wrong, but the form is right
    for bad in (" 1 5 so 8 5", " 1 5 , so 8 5", " 1 5 , 0 8 , 0 0 so 8 5", " 1 5 + 0 8 so 8 5", " so 8 5"):
        assert not varied.gold(PROMPT, bad).well_formed, bad
    prompts = [PROMPT] * 5 + [REVERSED]
    completions = [
        " 1 5 , 0 8 so 8 5",
        " 1 4 , 0 7 so 8 5",
        " 1 5 , 0 8 so 7 5",
        " 1 5 so 8 5",
        " 8 5",
        " 8 5",
    ]
    assert varied.verifier_rewards(prompts, completions) == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    assert split_answer("1 5 , 0 8 so 8 5".split()) == ("1 5 , 0 8".split(), ["8", "5"])
    assert split_answer(["8", "5"]) == (None, ["8", "5"])


def test_column_steps():
    assert column_steps(47, 38) == "1 5 , 0 8".split()
    assert column_steps(567, 568) == "1 5 , 1 3 , 1 1".split()
    assert column_steps(47, 38, frozenset({0})) == "1 5 , 0 7".split()  # the carry is missing from the tens
    assert column_steps(5, 6) == ["1", "1"]
    assert steps_well_formed(column_steps(567, 568), 3) and not steps_well_formed(column_steps(47, 38), 3)
    rng = random.Random(0)
    for _ in range(300):  # a slip's dropped carries are those of the answer it returns
        a, b, n = rng.randint(10, 999), rng.randint(10, 999), rng.choice([1, 2])
        dropped, answer = slip(a, b, n, rng)
        assert dropped <= set(carry_columns(a, b)) and answer != column_sum(a, b)
        dropped_sum = column_sum(a, b, dropped)  # the rest of the slips are wrong digits written into it
        assert len(answer) == len(dropped_sum)
        assert sum(x != y for x, y in zip(answer, dropped_sum)) <= n - len(dropped)


def test_prompt_frames_round_trip():
    assert write_prompt(REVERSED_FRAME, 47, 38) == REVERSED and parse_prompt(REVERSED) == (47, 38)
    assert write_prompt(REVERSED_FRAME, 40, 5) == "rev 0 4 + 5 =" and parse_prompt("rev 0 4 + 5 =") == (40, 5)
    assert write_prompt(HELD_OUT_TEMPLATE, 47, 38) == "what is 4 7 + 3 8 ="
    assert [write_prompt(f, 47, 38) for f in TRAIN_TEMPLATES] == [
        PROMPT,
        "add 4 7 and 3 8 =",
        "sum of 4 7 and 3 8 =",
        "4 7 + 3 8 is",
    ]
    for frame in (*TRAIN_TEMPLATES, HELD_OUT_TEMPLATE, REVERSED_FRAME):
        assert parse_prompt(write_prompt(frame, 567, 8)) == (567, 8)
    for bad in ("rev 4 7 and 3 8 =", "what is 4 7 and 3 8 =", "add 4 7 and 3 8 is", "sum 4 7 + 3 8 ="):
        with pytest.raises(ValueError):
            parse_prompt(bad)


def test_options_off_leave_the_task_as_it_was(task):
    """Digests of the prompts, demonstrations and corpus computed with the code before the options."""
    assert task.eval_splits == ("id", "ood") == Arithmetic.eval_splits
    assert task.vocabulary() == sorted([*"0123456789", "add", "+", "="])
    assert digest(task.pretraining_corpus(200, random.Random(0))) == "bac7254a4d3b1f61"
    assert digest(task.pretraining_corpus(2000, random.Random(1))) == "bbcd6672299fda31"
    assert digest(task.prompts("train") + task.prompts("id") + task.prompts("ood")) == "ae1cdcae30bcb4c8"
    rng = random.Random(0)
    assert digest([task.demonstrate(p, rng) for p in task.prompts("train")]) == "a19c55271d44bf14"
    other = Arithmetic(seed=3, train_prompts=50, eval_prompts=96)
    assert digest(other.prompts("train") + other.prompts("id") + other.prompts("ood")) == "10b0c09ed2333faf"


def test_options_add_splits_and_keep_id_and_ood(task, varied):
    assert varied.eval_splits == ("id", "ood", "ood_reversed", "ood_template")
    assert Arithmetic(seed=0, rule_variants=True).eval_splits == ("id", "ood", "ood_reversed")
    assert Arithmetic(seed=0, templates=2).eval_splits == ("id", "ood", "ood_template")
    assert Arithmetic(seed=0, worked_steps=True).eval_splits == ("id", "ood")
    for split in ("id", "ood"):  # the same prompts, in the default form
        assert varied.prompts(split) == task.prompts(split)
    problems = [parse_prompt(p) for p in task.prompts("id")]
    assert [parse_prompt(p) for p in varied.prompts("ood_reversed")] == problems  # the same inputs
    assert [parse_prompt(p) for p in varied.prompts("ood_template")] == problems
    assert all(p.startswith("rev ") for p in varied.prompts("ood_reversed"))
    assert all(p.startswith("what is ") for p in varied.prompts("ood_template"))
    # the training problems are those of the default form, written in the templates
    assert [parse_prompt(p) for p in varied.prompts("train")] == [
        parse_prompt(p) for p in task.prompts("train")
    ]
    with pytest.raises(ValueError):
        Arithmetic(templates=5)


@pytest.mark.parametrize("templates", [1, 2, 4])
def test_no_training_prompt_uses_a_variant_or_the_held_out_template(templates):
    task = Arithmetic(seed=0, rule_variants=True, worked_steps=True, templates=templates)
    train = task.prompts("train")
    used = {split_text(p)[0] for p in train}
    assert used == set(TRAIN_TEMPLATES[:templates])
    assert not any(p.startswith(("rev ", "what ")) for p in train)
    held_out = {parse_prompt(p) for p in task.prompts("id")}
    assert not {parse_prompt(p) for p in train} & held_out  # nor a variant split's problem in another form


def test_demonstrator_shows_its_work(varied):
    rng = random.Random(0)
    prompts = varied.prompts("train") * 3
    demonstrations = [varied.demonstrate(p, rng) for p in prompts]
    golds = [varied.gold(p, d) for p, d in zip(prompts, demonstrations)]
    assert all(g.well_formed for g in golds)  # every one has well-formed steps and a plausible answer
    assert all(split_answer(d.split())[0] is not None for d in demonstrations)
    exact = statistics.fmean(g.reward == 1.0 for g in golds)
    assert abs(exact - varied.demonstrator_quality) < 4 * math.sqrt(0.8 * 0.2 / len(prompts))
    for p, d, g in zip(prompts, demonstrations, golds):  # a right answer comes after the true steps
        if g.reward == 1.0:
            assert d.split() == [*column_steps(*parse_prompt(p)), "so", *column_sum(*parse_prompt(p))]


def test_corpus_with_the_options(varied):
    corpus = varied.pretraining_corpus(4000, random.Random(0))
    assert corpus == varied.pretraining_corpus(4000, random.Random(0))
    assert set(" ".join(corpus).split()) <= set(varied.vocabulary())
    frames, prompts, answers = zip(*map(split_text, corpus))
    assert set(frames) == {*TRAIN_TEMPLATES, HELD_OUT_TEMPLATE, REVERSED_FRAME}
    assert 0.035 < statistics.fmean(f == REVERSED_FRAME for f in frames) < 0.065  # CORPUS_REVERSED = 0.05
    assert 0.03 < statistics.fmean(f == HELD_OUT_TEMPLATE for f in frames) < 0.065  # 5% of the other 95%
    assert 0.4 < statistics.fmean(f == TRAIN_TEMPLATES[0] for f in frames) < 0.5  # half of the rest
    assert 0.45 < statistics.fmean(" so " in a for a in answers) < 0.55  # CORPUS_WORKED = 0.5
    exact = statistics.fmean(varied.gold_reward(p, a) == 1.0 for p, a in zip(prompts, answers))
    assert 0.65 < exact < 0.75  # 70% correct, worked or not
    held_out = {parse_prompt(p) for split in varied.eval_splits for p in varied.prompts(split)}
    assert not {parse_prompt(p) for p in prompts} & held_out  # no evaluation problem, in any notation


def test_suite_options_reach_the_stages_that_read_them():
    """Every stage of the variants suite builds the same task prompts; evaluation sees every split."""
    from compare.plan import plan_runs, stage_order
    from compare.stages.common import make_task
    from compare.suite import load_suite

    suite = load_suite(EXPERIMENTS / "arithmetic_variants.yaml")
    runs = plan_runs(suite)
    stages = stage_order([root for run in runs for root in run.roots])
    reference = Arithmetic(seed=0, **ALL_ON)
    kinds = set()
    for stage in stages:
        if "task" not in stage.params:
            continue
        kinds.add(stage.kind)
        task = make_task(stage.params["task"])
        assert task.prompts("train") == reference.prompts("train"), stage.kind
        if stage.kind in ("eval", "demonstrator"):
            assert task.eval_splits == reference.eval_splits
        if stage.kind in ("base", "demos", "demonstrator"):
            assert task.worked_steps
        if stage.kind == "base":
            assert task.vocabulary() == reference.vocabulary()
    assert {"base", "demos", "comparisons", "grpo", "ppo", "eval", "demonstrator"} <= kinds


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["arithmetic.yaml", "methods.yaml"])
def test_options_at_their_defaults_change_no_stage_key(tmp_path, name):
    from compare.plan import plan_runs, task_params
    from compare.suite import load_suite
    from compare.suite.schema import TASK_OPTIONS

    text = (EXPERIMENTS / name).read_text()
    assert "task:\n" in text
    plain = load_suite(_write(tmp_path / "plain.yaml", text))
    spelled = load_suite(
        _write(
            tmp_path / "spelled.yaml",
            text.replace(
                "task:\n", "task:\n  rule_variants: false\n  worked_steps: false\n  templates: 1\n", 1
            ),
        )
    )
    names = [[s.name for r in plan_runs(x) for s in r.roots] for x in (plain, spelled)]
    assert names[0] == names[1]
    assert not set(TASK_OPTIONS) & set(plain.task.model_dump())  # nor in the report's suite.yaml
    old_fields = {  # the stage keys' task settings before the options existed
        "base": {"name", "seed", "eval_prompts"},
        "demos": {"name", "seed", "train_prompts", "demonstrator_quality", "demonstrator_habit"},
        "comparisons": {"name", "seed", "train_prompts", "annotator", "annotator_pool"},
        "online": {"name", "seed", "train_prompts", "eval_prompts"},
        "prompts": {"name", "seed", "train_prompts"},
        "eval": {"name", "seed", "eval_prompts"},
        "demonstrator": {"name", "seed", "eval_prompts", "demonstrator_quality", "demonstrator_habit"},
    }
    for use, fields in old_fields.items():
        assert set(task_params(plain, use)) == fields
    on = load_suite(EXPERIMENTS / "arithmetic_variants.yaml")
    assert task_params(on, "base")["templates"] == 4 and "worked_steps" not in task_params(on, "eval")


@pytest.mark.parametrize(
    "task, message",
    [
        ("{name: reviews, rule_variants: true}", "task.rule_variants: task 'reviews' has no such option"),
        ("{name: reviews, templates: 2}", "task.templates: task 'reviews' has no such option"),
        ("{name: arithmetic, templates: 5}", "task.templates: Input should be less than or equal to 4"),
    ],
)
def test_options_are_checked_at_load(tmp_path, task, message):
    from compare.suite import load_suite
    from compare.suite.errors import SuiteError

    path = _write(tmp_path / "s.yaml", f"name: s\ntask: {task}\narms: {{base: {{recipe: []}}}}\n")
    with pytest.raises(SuiteError, match=re.escape(message)):
        load_suite(path)


MICRO_VARIANTS = """
name: micro_variants
task: {name: arithmetic, train_prompts: 32, eval_prompts: 4, rule_variants: true, worked_steps: true, templates: 2}
base:
  tiny: {n_layer: 1, n_head: 2, n_embd: 32, corpus_size: 500, steps: 30, batch_size: 32}
budget: {units: 32, cost: {demonstration: 4, comparison: 1}}
stages:
  sft: {epochs: 1, batch_size: 8}
  grpo: {reward: verifier, episodes: 8, num_generations: 2, batch_size: 4, max_new_tokens: 16}
arms:
  base: {recipe: []}
  sft: {recipe: [sft]}
  grpo_verifier: {recipe: [grpo]}
grid: {seed: [0]}
eval: {samples_per_prompt: 2, max_new_tokens: 16}
"""


@pytest.mark.slow
def test_micro_suite_with_the_options(tmp_path):
    """The options through a whole run: worked demonstrations, a row per split, GRPO on the verifier."""
    import pandas as pd

    from compare.cli import main

    suite = _write(tmp_path / "micro.yaml", MICRO_VARIANTS)
    cache, out = tmp_path / "cache", tmp_path / "report"
    assert main(["run", str(suite), "--cache-dir", str(cache), "--out", str(out)]) == 0
    results = pd.read_csv(out / "results.csv")
    splits = ("id", "ood", "ood_reversed", "ood_template")
    assert sorted(results["split"]) == sorted(splits * 3)
    samples = pd.read_csv(out / "samples.csv")
    reversed_ = samples.loc[samples["split"] == "ood_reversed", "prompt"]
    assert len(reversed_) and reversed_.str.startswith("rev ").all()
    (demos,) = cache.glob("demos-*/demos.jsonl")
    rows = [json.loads(line) for line in demos.read_text().splitlines()]
    assert len(rows) == 8 and all(" so " in row["completion"] for row in rows)
    assert {split_text(row["prompt"])[0] for row in rows} <= set(TRAIN_TEMPLATES[:2])
    assert "templates: 2" in (out / "suite.yaml").read_text()


def test_splits_with_the_options_are_the_instance_splits():
    """Preflight sizes the evaluation by `splits_with` before any task is built: it must agree."""
    for settings in ({}, {"rule_variants": True}, {"templates": 3}, {"rule_variants": True, "templates": 2}):
        assert Arithmetic.splits_with(settings) == Arithmetic(seed=0, **settings).eval_splits
    assert Arithmetic.splits_with({"rule_variants": True, "templates": 2}) == (
        "id",
        "ood",
        "ood_reversed",
        "ood_template",
    )
