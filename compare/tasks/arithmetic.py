"""`arithmetic`: multi-digit addition written as a short answer ("SFT memorizes, RL generalizes").

The setting of Chu et al. (2025), "SFT Memorizes, RL Generalizes": the same algorithm (column addition)
is trained on short numbers and evaluated on longer ones. Every digit is its own token, so a number of
any length can be written with a vocabulary of thirteen words (ten digits, "add", "+", "="):

    prompt      add 4 7 + 3 8 =
    completion   8 5                (then EOS, which the harness appends)

Splits. Training and in-distribution (ID) prompts add two two-digit numbers (10–99, 8,100 distinct
problems); the ID prompts are held out from the training pool and from the pretraining corpus, so a
policy can answer them only by adding, not by recalling an answer it has seen. Out-of-distribution (OOD)
prompts add two three-digit numbers (100–999): the same algorithm solves them (one more column, longer
carry chains), but no training prompt has that length, so memorised training answers do not help.
Both operands of a problem have the same length, so each column sits at a fixed place in the prompt:
with operands of mixed lengths (0–99 + 0–99) the tiny base model (2 layers, 64 wide, 1,500 steps) did
not learn the units column at all (units digit right about 10% of the time, exact 1–4%); with equal
lengths it learns part of the algorithm (exact 4–34% on ID depending on the pretraining seed), which is
what alignment should then select and extend. One-digit sums are too few (100) to hold any out, so
they appear only in the corpus.

Gold reward. Let T be the digits of the true sum, A the words of the answer (n of them), and
L_min = max(len a, len b), L_max = L_min + 1 the lengths a sum of these operands can have. Then

    digit share = #{i < min(n, |T|) : A[n-1-i] == T[|T|-1-i]} / max(n, |T|)   (aligned from the units)
    malformed   = (#non-digit words in A + max(0, #digit words in A - L_max)) / n   (1 when n == 0)
    reward      = digit share - malformed                                         in [-1, 1]

so the exact answer scores 1.0 and nothing else does (a wrong, missing or extra digit lowers the share);
an answer with one wrong digit out of two scores 0.5; words that are not digits, and digits beyond the
longest possible sum, each cost their share of the answer; an empty answer scores -1. `well_formed`: the
answer is only digits and has L_min to L_max of them. The answer is the whole completion, or what
follows "so" in a worked answer (below).

Demonstrator: the exact sum `demonstrator_quality` of the time; otherwise one or two plausible
slips of column addition (a dropped carry, a wrong digit). Pretraining corpus: sums of two one-,
two- or three-digit operands (so the OOD length too; mostly two digits, the training length), 70%
correct, 20% with slips and 10% malformed (digits that run on, the operands echoed back, a truncated
answer), so that the base model can write right and wrong answers alike and alignment selects behaviour
rather than teaches it.

Options (suite `task:` keys; each defaults off, and off leaves the prompts, corpus, vocabulary and stage
keys exactly as above; docs/world.md):

`rule_variants: true` adds the split `ood_reversed`: the ID problems under a changed rule (Chu et al.
2025 evaluate the same inputs under a changed rule): each operand is written units first after the word
"rev" (`rev 7 4 + 8 3 =` is 47 + 38; the answer is still 85, written as usual). The same digits in the
usual notation would be another problem, so a policy that applies the training rule whatever the prompt
says answers 157. No training prompt, demonstration or comparison uses it; 5% of the corpus problems
are written in it (`CORPUS_REVERSED`): a notation the base model has met but rarely, as a pretrained
model has met an unusual convention, and enough for the tiny base to learn part of it (with every option
on, 5,000 steps: half the `ood_reversed` problems right greedily and a quarter of its samples at
temperature 1, against all and two thirds on ID), so that what each method keeps or loses of a rarely
seen rule can be measured.

`worked_steps: true`: the demonstrator shows its work (Lin et al. 2025 find worked-step demonstrations
decisive for SFT): the sum of each column from the units up, as two digits (carry, digit), then "so"
and the answer: `add 4 7 + 3 8 = 1 5 , 0 8 so 8 5`. The steps make the carry explicit, so a model can
add column by column instead of the most significant digit first. Half of the corpus answers are
worked (`CORPUS_WORKED`, with the same mix of right, slipped and malformed answers), so the base model
writes both forms. The gold reward and the verifier read the answer after the first "so" and never
score the steps' arithmetic; steps must be well formed (L_min groups of two digits separated by ","),
and if they are not, every word before the answer (the steps and "so") counts as malformed, over all
the completion's words: `malformed = (malformed answer words + malformed step words) / all words`. An
answer without steps is scored as above, so a worked and a plain exact answer both score 1.0.

`templates: N` (1 to 4; default 1): training prompts in N surface forms of the same problem (Lin et al.
2025 study template diversity), the first N of `TRAIN_TEMPLATES` (`add 4 7 + 3 8 =`, `add 4 7 and 3 8
=`, `sum of 4 7 and 3 8 =`, `4 7 + 3 8 is`), chosen at random per training problem. ID and OOD stay in
the first form; with N > 1 the split `ood_template` asks the ID problems in a form no training prompt
uses (`what is 4 7 + 3 8 =`). The corpus then writes 5% of its problems in the held-out form and the
rest half in the first form and half in the other three, the same corpus for every N > 1, so suites
that sweep N differ only in the training prompts.
"""

from __future__ import annotations

import random
import re
from functools import cached_property

from pydantic import Field

from compare.tasks.task import ID_SPLIT, GoldScore, Options, Split, SplitRole, Task, with_fields

DIGITS = [str(d) for d in range(10)]
ID_OPERANDS = (10, 99)  # train and ID: two digits
OOD_OPERANDS = (100, 999)  # OOD: three digits
CORPUS_OPERAND_LENGTHS = {1: 0.1, 2: 0.6, 3: 0.3}  # share of corpus problems by operand length
CORPUS_CORRECT, CORPUS_SLIPPED = 0.7, 0.2  # the remaining 0.1 of the corpus is malformed
TWO_SLIPS = 0.3  # share of wrong answers with two slips rather than one

# Prompt frames: words, with A and B where the operands go.
A, B = "A", "B"
DEFAULT_FRAME = "add A + B ="
REVERSED_FRAME = "rev A + B ="  # rule_variants: each operand written units first
TRAIN_TEMPLATES = (DEFAULT_FRAME, "add A and B =", "sum of A and B =", "A + B is")  # templates: the first N
HELD_OUT_TEMPLATE = "what is A + B ="  # templates > 1: the split ood_template, never a training prompt
STEP_MARK, ANSWER_MARK = ",", "so"  # worked_steps: "1 5 , 0 8 so 8 5"

CORPUS_REVERSED = 0.05  # rule_variants: share of corpus problems in the reversed notation
CORPUS_WORKED = 0.5  # worked_steps: share of corpus answers that show their column sums
CORPUS_HELD_OUT_TEMPLATE = 0.05  # templates > 1: share of corpus problems in the held-out form
CORPUS_DEFAULT_TEMPLATE = 0.5  # templates > 1: share in the first form; the other three share the rest


class ArithmeticOptions(Options):
    """The suite `task:` keys only arithmetic reads (docs/world.md)."""

    rule_variants: bool = Field(
        False,
        description="arithmetic: evaluate also on `ood_reversed`, the ID problems with each operand written "
        "units first (a changed rule no training prompt uses; 5% of the corpus). docs/world.md.",
    )
    worked_steps: bool = Field(
        False,
        description="arithmetic: the demonstrator writes each column's sum before the answer "
        "(`1 5 , 0 8 so 8 5`); half the corpus answers are worked. docs/world.md.",
    )
    templates: int = Field(
        1,
        ge=1,
        le=len(TRAIN_TEMPLATES),
        description="arithmetic: surface forms of a problem among the training prompts; above 1, the split "
        "`ood_template` asks the ID problems in a form no training prompt uses. docs/world.md.",
    )


# The options each stage reads (in its key only when set): the corpus reads all of them, `templates`
# changes the training prompts, `rule_variants` the evaluation splits, `worked_steps` what the demonstrator
# writes. The gold reward reads every form of answer whatever the options, so a stage that only scores
# needs none of them.
OPTION_FIELDS = {
    "base": tuple(ArithmeticOptions.model_fields),
    "demos": ("worked_steps", "templates"),
    "comparisons": ("templates",),
    "online": ("templates",),
    "prompts": ("templates",),
    "eval": ("rule_variants", "templates"),
    "demonstrator": ("rule_variants", "worked_steps", "templates"),
}


# -- the language -----------------------------------------------------------------------------------------
def spell(number: int) -> str:
    """Digits as separate words: 47 -> "4 7"."""
    return " ".join(str(number))


def write_prompt(frame: str, a: int, b: int) -> str:
    """The problem a + b in one of the prompt frames (`REVERSED_FRAME` writes the operands units first)."""

    def operand(x: int) -> str:
        return " ".join(reversed(str(x))) if frame == REVERSED_FRAME else spell(x)

    return " ".join(operand(a) if w == A else operand(b) if w == B else w for w in frame.split())


def format_prompt(a: int, b: int) -> str:
    return write_prompt(DEFAULT_FRAME, a, b)


def _pattern(frame: str) -> re.Pattern:
    operand = r"((?:[0-9] )*[0-9])"
    return re.compile(" ".join(operand if w in (A, B) else re.escape(w) for w in frame.split()))


PATTERNS = {frame: _pattern(frame) for frame in (*TRAIN_TEMPLATES, HELD_OUT_TEMPLATE, REVERSED_FRAME)}


def parse_prompt(prompt: str) -> tuple[int, int]:
    """The two operands of a prompt written by `write_prompt` in any frame."""
    text = " ".join(prompt.split())
    for frame, pattern in PATTERNS.items():
        match = pattern.fullmatch(text)
        if match:
            a, b = ("".join(group.split()) for group in match.groups())
            if frame == REVERSED_FRAME:
                a, b = a[::-1], b[::-1]
            return int(a), int(b)
    raise ValueError(f"not an arithmetic prompt: {prompt!r}")


def split_answer(words: list[str]) -> tuple[list[str] | None, list[str]]:
    """(steps, answer) of a completion's words: the words before and after the first "so", or (None,
    all the words) when there is none."""
    if ANSWER_MARK not in words:
        return None, words
    i = words.index(ANSWER_MARK)
    return words[:i], words[i + 1 :]


def steps_well_formed(steps: list[str], columns: int) -> bool:
    """Whether `steps` are `columns` groups of two digits separated by "," (their sums are not checked)."""
    return len(steps) == 3 * columns - 1 and all(
        (w == STEP_MARK) if i % 3 == 2 else (w in DIGITS) for i, w in enumerate(steps)
    )


# -- column addition, and the slips a person makes in it ---------------------------------------------------
def column_sum(a: int, b: int, dropped_carries: frozenset[int] = frozenset()) -> list[str]:
    """Digits of a + b by column addition, most significant first, forgetting the carry out of each
    column in `dropped_carries` (0 = units). With no carries dropped this is the true sum."""
    da, db = [int(c) for c in reversed(str(a))], [int(c) for c in reversed(str(b))]
    digits, carry = [], 0
    for i in range(max(len(da), len(db))):
        s = (da[i] if i < len(da) else 0) + (db[i] if i < len(db) else 0) + carry
        digits.append(s % 10)
        carry = 0 if i in dropped_carries else s // 10
    if carry:
        digits.append(carry)
    return [str(d) for d in reversed(digits)]


def column_steps(a: int, b: int, dropped_carries: frozenset[int] = frozenset()) -> list[str]:
    """The worked steps of a + b: each column's sum (with the carry into it) as two digits, units first,
    separated by ","; 47 + 38 -> "1 5 , 0 8". A dropped carry is missing from the next column's sum."""
    da, db = [int(c) for c in reversed(str(a))], [int(c) for c in reversed(str(b))]
    words, carry = [], 0
    for i in range(max(len(da), len(db))):
        s = (da[i] if i < len(da) else 0) + (db[i] if i < len(db) else 0) + carry
        words += [STEP_MARK] * bool(i) + [str(s // 10), str(s % 10)]
        carry = 0 if i in dropped_carries else s // 10
    return words


def carry_columns(a: int, b: int) -> list[int]:
    """Columns (0 = units) that carry into the next one in the true column addition of a + b."""
    da, db = [int(c) for c in reversed(str(a))], [int(c) for c in reversed(str(b))]
    columns, carry = [], 0
    for i in range(max(len(da), len(db))):
        carry = ((da[i] if i < len(da) else 0) + (db[i] if i < len(db) else 0) + carry) // 10
        if carry:
            columns.append(i)
    return columns


def slip(a: int, b: int, n_slips: int, rng: random.Random) -> tuple[frozenset[int], list[str]]:
    """A wrong answer to a + b with `n_slips` plausible slips, and the carries it dropped: a dropped
    carry, or one digit written wrong (a wrong leading digit is never 0). Always differs from the true
    sum and is a digit string of a length a sum of these operands can have."""
    truth = column_sum(a, b)
    for _ in range(100):
        carries = carry_columns(a, b)
        dropped = set()
        if carries and rng.random() < 0.5:  # forget a carry; any slip left is a wrong digit
            dropped.add(rng.choice(carries))
        answer = column_sum(a, b, frozenset(dropped))
        positions = rng.sample(range(len(answer)), k=min(len(answer), n_slips - len(dropped)))
        for pos in positions:
            low = 1 if pos == 0 and len(answer) > 1 else 0
            answer[pos] = rng.choice([d for d in DIGITS[low:] if d != answer[pos]])
        if answer != truth:
            return frozenset(dropped), answer
    raise RuntimeError(f"no slipped answer found for {a} + {b}")  # unreachable: a slip always changes a digit


def slipped_sum(a: int, b: int, n_slips: int, rng: random.Random) -> list[str]:
    """The answer of `slip`."""
    return slip(a, b, n_slips, rng)[1]


class Arithmetic(Task):
    """Synthetic addition task; every random choice is seeded, so the task is deterministic."""

    name = "arithmetic"
    default_demonstrator_quality = 0.8
    options = ArithmeticOptions
    stage_fields = with_fields(OPTION_FIELDS)
    gold_ceiling = 1.0  # every digit right, nothing else
    pass_rule = "the verifier accepts the answer (the exact sum, after well-formed steps if any)"
    split_specs = (
        ID_SPLIT,
        Split("ood", SplitRole.SHIFT, "OOD", "longer operands (3 digits)"),
        Split(
            "ood_reversed", SplitRole.SHIFT, "OOD reversed", "a changed rule (operands written units first)"
        ),
        Split("ood_template", SplitRole.SHIFT, "OOD template", "a prompt template training never used"),
    )
    shift_suite = "arithmetic_variants.yaml"

    def __init__(
        self,
        rule_variants: bool = False,
        worked_steps: bool = False,
        templates: int = 1,
        **settings,
    ):
        super().__init__(**settings)
        if not 1 <= templates <= len(TRAIN_TEMPLATES):
            raise ValueError(f"templates={templates}: 1 to {len(TRAIN_TEMPLATES)} training templates")
        self.rule_variants, self.worked_steps, self.templates = rule_variants, worked_steps, templates
        self.eval_splits = self.splits_with({"rule_variants": rule_variants, "templates": templates})

    @classmethod
    def splits_with(cls, settings: dict) -> tuple[str, ...]:
        variants, templates = settings.get("rule_variants", False), settings.get("templates", 1)
        return ("id", "ood") + ("ood_reversed",) * bool(variants) + ("ood_template",) * (templates > 1)

    # -- prompts ---------------------------------------------------------------------------------------
    @cached_property
    def _problems(self) -> dict[str, list[tuple[int, int]]]:
        """The operands of each split's prompts; the ID problems are also those of the variant splits."""
        rng = random.Random(f"arithmetic-prompts-{self.seed}")
        lo, hi = ID_OPERANDS
        if self.n_eval_prompts > (hi - lo + 1) ** 2 // 2:
            raise ValueError(f"eval_prompts={self.n_eval_prompts} is too many for operands {lo}-{hi}")
        # ID first, as distinct problems; the training pool is then drawn (with replacement, like every
        # task's pool) from the problems that are not ID ones.
        id_problems: list[tuple[int, int]] = []
        while len(id_problems) < self.n_eval_prompts:
            problem = (rng.randint(lo, hi), rng.randint(lo, hi))
            if problem not in id_problems:
                id_problems.append(problem)
        held_out = set(id_problems)
        train: list[tuple[int, int]] = []
        while len(train) < self.n_train_prompts:
            problem = (rng.randint(lo, hi), rng.randint(lo, hi))
            if problem not in held_out:
                train.append(problem)
        ood = [(rng.randint(*OOD_OPERANDS), rng.randint(*OOD_OPERANDS)) for _ in id_problems]
        return {"train": train, "id": id_problems, "ood": ood}

    @cached_property
    def _splits(self) -> dict[str, list[str]]:
        problems = self._problems
        frames = [DEFAULT_FRAME] * len(problems["train"])
        if self.templates > 1:  # its own stream: the problems are those of one template
            pick = random.Random(f"arithmetic-templates-{self.seed}")
            frames = [pick.choice(TRAIN_TEMPLATES[: self.templates]) for _ in frames]
        splits = {
            "train": [write_prompt(f, a, b) for f, (a, b) in zip(frames, problems["train"])],
            "id": [format_prompt(a, b) for a, b in problems["id"]],
            "ood": [format_prompt(a, b) for a, b in problems["ood"]],
        }
        if self.rule_variants:
            splits["ood_reversed"] = [write_prompt(REVERSED_FRAME, a, b) for a, b in problems["id"]]
        if self.templates > 1:
            splits["ood_template"] = [write_prompt(HELD_OUT_TEMPLATE, a, b) for a, b in problems["id"]]
        return splits

    def prompts(self, split: str) -> list[str]:
        return list(self._splits[split])

    # -- gold reward -----------------------------------------------------------------------------------
    def gold(self, prompt: str, completion: str) -> GoldScore:
        a, b = parse_prompt(prompt)
        truth = column_sum(a, b)
        words = completion.split()
        steps, answer = split_answer(words)
        n = len(answer)
        if n == 0:  # no answer at all
            return GoldScore(reward=-1.0, well_formed=False, malformed=1.0)
        shortest = max(len(str(a)), len(str(b)))  # a sum has as many digits as its longer operand,
        longest = shortest + 1  # or one more
        steps_ok = steps is None or steps_well_formed(steps, shortest)
        bad_steps = 0 if steps_ok else len(steps) + 1  # the steps and their "so"
        right = sum(x == y for x, y in zip(reversed(answer), reversed(truth)))
        digit_share = right / max(n, len(truth))
        n_digits = sum(w in DIGITS for w in answer)
        malformed = ((n - n_digits) + max(0, n_digits - longest) + bad_steps) / len(words)
        return GoldScore(
            reward=digit_share - malformed,
            well_formed=steps_ok and n_digits == n and shortest <= n <= longest,
            malformed=malformed,
        )

    def verifier_rewards(self, prompts: list[str], completions: list[str]) -> list[float]:
        """1.0 for an exact final answer (the sum's digits and nothing else, after well-formed steps if
        the completion shows any), else 0.0; no partial credit, and the steps' sums are not checked."""
        rewards = []
        for prompt, completion in zip(prompts, completions):
            a, b = parse_prompt(prompt)
            steps, answer = split_answer(completion.split())
            columns = max(len(str(a)), len(str(b)))
            ok = answer == column_sum(a, b) and (steps is None or steps_well_formed(steps, columns))
            rewards.append(float(ok))
        return rewards

    def passes(self, prompt: str, completion: str, gold: GoldScore) -> bool:
        """The verifier's verdict: an exact answer (the gold reward is then at its ceiling, 1.0)."""
        return self.verifier_rewards([prompt], [completion])[0] == 1.0

    # -- writers: the demonstrator and the pretraining corpus ------------------------------------------
    def _slipped(self, a: int, b: int, rng: random.Random) -> tuple[frozenset[int], list[str]]:
        return slip(a, b, 2 if rng.random() < TWO_SLIPS else 1, rng)

    @staticmethod
    def _worked(a: int, b: int, dropped: frozenset[int], answer: list[str]) -> list[str]:
        return [*column_steps(a, b, dropped), ANSWER_MARK, *answer]

    def demonstrate(self, prompt: str, rng: random.Random) -> str:
        """The exact sum `demonstrator_quality` of the time, otherwise one with one or two slips; with
        `worked_steps`, after the column sums that led to it (a dropped carry shows in them)."""
        a, b = parse_prompt(prompt)
        correct = rng.random() < self.demonstrator_quality
        dropped, answer = (frozenset(), column_sum(a, b)) if correct else self._slipped(a, b, rng)
        return " " + " ".join(self._worked(a, b, dropped, answer) if self.worked_steps else answer)

    def _malformed(self, a: int, b: int, rng: random.Random) -> list[str]:
        truth = column_sum(a, b)
        kind = rng.randrange(3)
        if kind == 0:  # runs on: digits past the longest possible sum
            return truth + rng.choices(DIGITS, k=rng.randint(2, 4))
        if kind == 1:  # echoes the question instead of answering it
            return [*spell(a).split(), "+", *spell(b).split()]
        return truth[rng.randint(1, len(truth) - 1) :] if len(truth) > 1 else []  # truncated (or empty)

    def _corpus_frame(self, rng: random.Random) -> str:
        """The prompt frame of one corpus problem (no random draw with every option off)."""
        if self.rule_variants and rng.random() < CORPUS_REVERSED:
            return REVERSED_FRAME
        if self.templates > 1:
            if rng.random() < CORPUS_HELD_OUT_TEMPLATE:
                return HELD_OUT_TEMPLATE
            if rng.random() < CORPUS_DEFAULT_TEMPLATE:
                return DEFAULT_FRAME
            return rng.choice(TRAIN_TEMPLATES[1:])
        return DEFAULT_FRAME

    def pretraining_corpus(self, n: int, rng: random.Random) -> list[str]:
        """Sums of two operands of one, two or three digits, correct, slipped and malformed (in the
        options' notations and forms, some worked, when they are on).

        No problem of an evaluation split appears, in any notation, so evaluation measures adding, not
        recall.
        """
        held_out = set(self._problems["id"]) | set(self._problems["ood"])  # every evaluation split's problems
        texts = []
        while len(texts) < n:
            (length,) = rng.choices(
                list(CORPUS_OPERAND_LENGTHS), weights=list(CORPUS_OPERAND_LENGTHS.values())
            )
            a, b = self._operand(length, rng), self._operand(length, rng)
            if (a, b) in held_out:
                continue
            frame = self._corpus_frame(rng)
            worked = self.worked_steps and rng.random() < CORPUS_WORKED
            u = rng.random()
            dropped = frozenset()
            if u < CORPUS_CORRECT:
                answer = column_sum(a, b)
            elif u < CORPUS_CORRECT + CORPUS_SLIPPED:
                dropped, answer = self._slipped(a, b, rng)
            else:
                answer = self._malformed(a, b, rng)
            if worked:
                answer = self._worked(a, b, dropped, answer)
            texts.append(write_prompt(frame, a, b) + "".join(" " + w for w in answer))
        return texts

    @staticmethod
    def _operand(length: int, rng: random.Random) -> int:
        return rng.randint(0, 9) if length == 1 else rng.randint(10 ** (length - 1), 10**length - 1)

    def vocabulary(self) -> list[str]:
        words = {*DIGITS, "add", "+", "="}
        if self.rule_variants:
            words |= set(REVERSED_FRAME.split()) - {A, B}
        if self.worked_steps:
            words |= {STEP_MARK, ANSWER_MARK}
        if self.templates > 1:
            words |= {w for frame in (*TRAIN_TEMPLATES, HELD_OUT_TEMPLATE) for w in frame.split()} - {A, B}
        return sorted(words)
