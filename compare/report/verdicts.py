"""What a claim is and how it is decided: one verdict rule, the claim's typed result, and the correction
for deciding many claims in one report.

The rule (`decide`): a test is a seed-paired difference (`stats.Difference`) whose sign the claim
predicts. It *supports* the claim when its 95% t-interval excludes 0 on the predicted side, and
*contradicts* it when the interval excludes 0 on the other side, for claims that can be contradicted;
anything else is *inconclusive*. A claim made of several tests (one per budget, per bias level) combines
verdicts of this rule, and its p-value is the deciding test's, Bonferroni-multiplied by the number of
tests it chose among, so that the report-wide correction (`correct`, Holm) sees one honest p per claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from compare.report.series import fmt, num
from compare.report.stats import Difference, holm

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED = (
    "supported",
    "contradicted",
    "inconclusive",
    "not measured",
)
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED)
MARKERS = {SUPPORTED: "▲ supported", CONTRADICTED: "▼ contradicted", INCONCLUSIVE: "○ inconclusive",
           NOT_MEASURED: "– not measured"}  # fmt: skip
LEVEL = 0.05  # two-sided, per test and family-wise after the correction
CORRECTION = "Holm (1979) step-down, family-wise error 5% over the claims this report tests"


@dataclass(frozen=True)
class Decision:
    """A verdict and the p-value behind it (nan when no test was run or could decide)."""

    verdict: str
    p_value: float = math.nan


def decide(diff: Difference | None, positive_supports: bool = True, can_contradict: bool = True) -> Decision:
    """The one verdict rule: supported when the interval excludes 0 on the side the claim predicts,
    contradicted when on the other side (only for claims that can be contradicted), else inconclusive."""
    if diff is None or diff.n < 2 or not diff.significant:
        return Decision(INCONCLUSIVE, diff.p_value if diff is not None else math.nan)
    if (diff.mean > 0) == positive_supports:
        return Decision(SUPPORTED, diff.p_value)
    return Decision(CONTRADICTED if can_contradict else INCONCLUSIVE, diff.p_value)


def decide_any(
    diffs: list[Difference], positive_supports: bool = True, can_contradict: bool = True
) -> Decision:
    """Several tests of one claim (e.g. one per budget, one per setting): supported when some test supports
    it and none contradicts it, contradicted the other way round, inconclusive when none decides or they
    disagree. The p-value is the smallest of the deciding side's, times the number of tests (Bonferroni)."""
    verdicts = [decide(d, positive_supports, can_contradict) for d in diffs]
    sides = {v.verdict for v in verdicts} & {SUPPORTED, CONTRADICTED}
    if len(sides) != 1:
        ps = [d.p_value for d in diffs if not math.isnan(d.p_value)]
        return Decision(INCONCLUSIVE, min(1.0, min(ps) * len(diffs)) if ps else math.nan)
    side = sides.pop()
    p = min(v.p_value for v in verdicts if v.verdict == side)
    return Decision(side, min(1.0, p * len(diffs)))


@dataclass(frozen=True)
class Claim:
    """One row of the claims table.

    key: a stable id (`data_needs`, `ood[dpo]`, `shift:ood_format[ppo]`), the same in every report;
    claim: the statement from the literature; verdict: one of VERDICTS, by `decide`;
    compared: which arms stood for which side, by name and role ("RLHF, here: ppo (online RL)");
    reading: one sentence a student can read; evidence: the numbers behind it;
    p_value: of the deciding test (nan when none); corrected: the verdict after the report-wide
    correction (`correct`); can_contradict: False for claims whose statistic cannot speak against them
    (docs/claims.md says why); suite: the shipped suite designed to decide it;
    seeds_needed: for an undecided effect, about how many seeds would decide one of its observed size;
    effect: the deciding difference (mean, interval), positive where the claim predicts it.
    """

    key: str
    claim: str
    verdict: str
    evidence: str
    reading: str = ""
    compared: str = ""
    p_value: float = math.nan
    corrected: str = ""
    can_contradict: bool = True
    suite: str = ""
    seeds_needed: int | None = None
    effect: Difference | None = None  # the difference that decides it (its sign: the claim's direction)

    @property
    def decided(self) -> bool:
        return self.verdict in (SUPPORTED, CONTRADICTED)

    @property
    def base_key(self) -> str:
        """The key without the arm it was checked for: `shift:ood_format[ppo]` -> `shift:ood_format`."""
        return self.key.split("[")[0]

    @property
    def family(self) -> str:
        """The claim without its arm or split: `shift:ood_format[ppo]` -> `shift`."""
        return self.base_key.split(":")[0]

    @property
    def arm(self) -> str:
        """The arm that stood for RLHF, for claims checked once per kind of RLHF; else ""."""
        return self.key.split("[", 1)[1].rstrip("]") if "[" in self.key else ""

    @property
    def short(self) -> str:
        """The statement up to its first parenthesis or colon, quoted."""
        return "“" + self.claim.split(" (")[0].split(":")[0].rstrip(".") + "”"


def correct(claims: list[Claim]) -> list[Claim]:
    """Each claim with its verdict after Holm's correction over the claims that ran a test: a decided
    verdict stands only when its adjusted p-value is below LEVEL, else it becomes inconclusive."""
    adjusted = holm([c.p_value if c.verdict != NOT_MEASURED else math.nan for c in claims])
    out = []
    for claim, p in zip(claims, adjusted):
        kept = claim.verdict if not claim.decided or (not math.isnan(p) and p < LEVEL) else INCONCLUSIVE
        out.append(replace(claim, corrected=kept))
    return out


def effect_text(diff: Difference | None) -> str:
    """A claim's deciding difference as the findings table shows it: mean ± 95% half-width (n seeds),
    positive in the direction the claim predicts; "–" when there is none."""
    if diff is None or diff.n == 0:
        return "–"
    half = "" if math.isnan(diff.half_width) else f" ± {diff.half_width:.3f}"
    return f"{num(diff.mean, True)}{half} (n={diff.n})"


def diff_text(diff: Difference, a: str, b: str, what: str) -> str:
    if diff.n == 0:
        return "no shared seeds"
    mark = "significant" if diff.significant else "not significant"
    p = "" if math.isnan(diff.p_value) else f", p = {diff.p_value:.2g}"
    return f"{what} {a} − {b} = {fmt(diff.mean, diff.half_width)} over {diff.n} paired seeds ({mark}{p})"


def reading(diff: Difference, subject: str, bigger: str, smaller: str, other: str, unit: str = "") -> str:
    """One plain sentence about a paired difference `subject − other`: "PPO's gap is 0.050 smaller than
    SFT's; not significant at 3 seeds" (`bigger`/`smaller` are the words for a positive/negative mean)."""
    if diff.n == 0:
        return f"{subject} and {other} share no seeds: nothing to compare."
    word = bigger if diff.mean >= 0 else smaller
    sure = (
        f"significant at {diff.n} seeds (95% interval {num(diff.low, True)} to {num(diff.high, True)})"
        if diff.significant
        else f"not significant at {diff.n} seed{'s' if diff.n != 1 else ''}"
    )
    return f"{subject} {abs(diff.mean):.3f}{unit} {word} {other}; {sure}."


def missing(key: str, text: str, why: str, suite: str = "") -> Claim:
    """A claim the suite has no runs for; `why` says what it would need."""
    return Claim(key, text, NOT_MEASURED, why, reading=f"Not measured here: {why}.", suite=suite)
