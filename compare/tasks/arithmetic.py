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

Gold reward. Let T be the digits of the true sum, A the words of the completion (n of them), and
L_min = max(len a, len b), L_max = L_min + 1 the lengths a sum of these operands can have. Then

    digit share = #{i < min(n, |T|) : A[n-1-i] == T[|T|-1-i]} / max(n, |T|)   (aligned from the units)
    malformed   = (#non-digit words in A + max(0, #digit words in A - L_max)) / n   (1 when n == 0)
    reward      = digit share - malformed                                         in [-1, 1]

so the exact answer scores 1.0 and nothing else does (a wrong, missing or extra digit lowers the share);
an answer with one wrong digit out of two scores 0.5; words that are not digits, and digits beyond the
longest possible sum, each cost their share of the answer; an empty answer scores -1. `well_formed`: the
answer is only digits and has L_min to L_max of them.

Demonstrator: the exact sum `demonstrator_quality` of the time; otherwise one or two plausible
slips of column addition (a dropped carry, a wrong digit). Pretraining corpus: sums of two one-,
two- or three-digit operands (so the OOD length too; mostly two digits, the training length), 70%
correct, 20% with slips and 10% malformed (digits that run on, the operands echoed back, a truncated
answer), so that the base model can write right and wrong answers alike and alignment selects behaviour
rather than teaches it.
"""

from __future__ import annotations

import random
from functools import cached_property

from compare.tasks.task import GoldScore, Task

DIGITS = [str(d) for d in range(10)]
ID_OPERANDS = (10, 99)  # train and ID: two digits
OOD_OPERANDS = (100, 999)  # OOD: three digits
CORPUS_OPERAND_LENGTHS = {1: 0.1, 2: 0.6, 3: 0.3}  # share of corpus problems by operand length
CORPUS_CORRECT, CORPUS_SLIPPED = 0.7, 0.2  # the remaining 0.1 of the corpus is malformed
TWO_SLIPS = 0.3  # share of wrong answers with two slips rather than one


# -- the language -----------------------------------------------------------------------------------------
def spell(number: int) -> str:
    """Digits as separate words: 47 -> "4 7"."""
    return " ".join(str(number))


def format_prompt(a: int, b: int) -> str:
    return f"add {spell(a)} + {spell(b)} ="


def parse_prompt(prompt: str) -> tuple[int, int]:
    """The two operands of a prompt written by `format_prompt`."""
    words = prompt.split()
    if not words or words[0] != "add" or words[-1] != "=" or words.count("+") != 1:
        raise ValueError(f"not an arithmetic prompt: {prompt!r}")
    plus = words.index("+")
    a, b = words[1:plus], words[plus + 1 : -1]
    if not a or not b or not all(w in DIGITS for w in a + b):
        raise ValueError(f"not an arithmetic prompt: {prompt!r}")
    return int("".join(a)), int("".join(b))


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


def carry_columns(a: int, b: int) -> list[int]:
    """Columns (0 = units) that carry into the next one in the true column addition of a + b."""
    da, db = [int(c) for c in reversed(str(a))], [int(c) for c in reversed(str(b))]
    columns, carry = [], 0
    for i in range(max(len(da), len(db))):
        carry = ((da[i] if i < len(da) else 0) + (db[i] if i < len(db) else 0) + carry) // 10
        if carry:
            columns.append(i)
    return columns


def slipped_sum(a: int, b: int, n_slips: int, rng: random.Random) -> list[str]:
    """A wrong answer to a + b with `n_slips` plausible slips: a dropped carry, or one digit written
    wrong (a wrong leading digit is never 0). Always differs from the true sum and is a digit string of a length a
    sum of these operands can have."""
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
            return answer
    raise RuntimeError(f"no slipped answer found for {a} + {b}")  # unreachable: a slip always changes a digit


class Arithmetic(Task):
    """Synthetic addition task; every random choice is seeded, so the task is deterministic."""

    name = "arithmetic"
    default_demonstrator_quality = 0.8

    # -- prompts ---------------------------------------------------------------------------------------
    @cached_property
    def _splits(self) -> dict[str, list[str]]:
        rng = random.Random(f"arithmetic-prompts-{self.seed}")
        lo, hi = ID_OPERANDS
        if self.n_eval_prompts > (hi - lo + 1) ** 2 // 2:
            raise ValueError(f"eval_prompts={self.n_eval_prompts} is too many for operands {lo}-{hi}")
        # ID first, as distinct problems; the training pool is then drawn (with replacement, like every
        # task's pool) from the problems that are not ID ones.
        id_prompts: list[str] = []
        while len(id_prompts) < self.n_eval_prompts:
            prompt = format_prompt(rng.randint(lo, hi), rng.randint(lo, hi))
            if prompt not in id_prompts:
                id_prompts.append(prompt)
        held_out = set(id_prompts)
        train: list[str] = []
        while len(train) < self.n_train_prompts:
            prompt = format_prompt(rng.randint(lo, hi), rng.randint(lo, hi))
            if prompt not in held_out:
                train.append(prompt)
        ood = [format_prompt(rng.randint(*OOD_OPERANDS), rng.randint(*OOD_OPERANDS)) for _ in id_prompts]
        return {"train": train, "id": id_prompts, "ood": ood}

    def prompts(self, split: str) -> list[str]:
        return list(self._splits[split])

    # -- gold reward -----------------------------------------------------------------------------------
    def gold(self, prompt: str, completion: str) -> GoldScore:
        a, b = parse_prompt(prompt)
        truth = column_sum(a, b)
        answer = completion.split()
        n = len(answer)
        if n == 0:  # nothing written at all
            return GoldScore(reward=-1.0, well_formed=False, malformed=1.0)
        shortest = max(len(str(a)), len(str(b)))  # a sum has as many digits as its longer operand,
        longest = shortest + 1  # or one more
        right = sum(x == y for x, y in zip(reversed(answer), reversed(truth)))
        digit_share = right / max(n, len(truth))
        n_digits = sum(w in DIGITS for w in answer)
        malformed = ((n - n_digits) + max(0, n_digits - longest)) / n
        return GoldScore(
            reward=digit_share - malformed,
            well_formed=n_digits == n and shortest <= n <= longest,
            malformed=malformed,
        )

    def verifier_rewards(self, prompts: list[str], completions: list[str]) -> list[float]:
        """1.0 for an exact final answer (the sum's digits and nothing else), else 0.0; no partial credit."""
        return [
            float(completion.split() == column_sum(*parse_prompt(prompt)))
            for prompt, completion in zip(prompts, completions)
        ]

    # -- writers: the demonstrator and the pretraining corpus ------------------------------------------
    def _slipped(self, a: int, b: int, rng: random.Random) -> list[str]:
        return slipped_sum(a, b, 2 if rng.random() < TWO_SLIPS else 1, rng)

    def demonstrate(self, prompt: str, rng: random.Random) -> str:
        """The exact sum `demonstrator_quality` of the time, otherwise one with one or two slips."""
        a, b = parse_prompt(prompt)
        correct = rng.random() < self.demonstrator_quality
        return " " + " ".join(column_sum(a, b) if correct else self._slipped(a, b, rng))

    def _malformed(self, a: int, b: int, rng: random.Random) -> list[str]:
        truth = column_sum(a, b)
        kind = rng.randrange(3)
        if kind == 0:  # runs on: digits past the longest possible sum
            return truth + rng.choices(DIGITS, k=rng.randint(2, 4))
        if kind == 1:  # echoes the question instead of answering it
            return [*spell(a).split(), "+", *spell(b).split()]
        return truth[rng.randint(1, len(truth) - 1) :] if len(truth) > 1 else []  # truncated (or empty)

    def pretraining_corpus(self, n: int, rng: random.Random) -> list[str]:
        """Sums of two operands of one, two or three digits, correct, slipped and malformed.

        The ID and OOD evaluation problems never appear, so evaluation measures adding, not recall.
        """
        held_out = set(self._splits["id"]) | set(self._splits["ood"])
        texts = []
        while len(texts) < n:
            (length,) = rng.choices(
                list(CORPUS_OPERAND_LENGTHS), weights=list(CORPUS_OPERAND_LENGTHS.values())
            )
            a, b = self._operand(length, rng), self._operand(length, rng)
            prompt = format_prompt(a, b)
            if prompt in held_out:
                continue
            u = rng.random()
            if u < CORPUS_CORRECT:
                answer = column_sum(a, b)
            elif u < CORPUS_CORRECT + CORPUS_SLIPPED:
                answer = self._slipped(a, b, rng)
            else:
                answer = self._malformed(a, b, rng)
            texts.append(prompt + "".join(" " + w for w in answer))
        return texts

    @staticmethod
    def _operand(length: int, rng: random.Random) -> int:
        return rng.randint(0, 9) if length == 1 else rng.randint(10 ** (length - 1), 10**length - 1)

    def vocabulary(self) -> list[str]:
        return sorted([*DIGITS, "add", "+", "="])
