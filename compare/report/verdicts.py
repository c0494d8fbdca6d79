"""What a claim is and how it is decided: the four verdicts, from a seed-paired difference."""

from __future__ import annotations

from dataclasses import dataclass

from compare.report.series import fmt

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED = (
    "supported",
    "contradicted",
    "inconclusive",
    "not measured",
)


@dataclass
class Claim:
    claim: str
    verdict: str
    evidence: str


def verdict(diff: dict, positive_supports: bool = True) -> str:
    """From a paired difference: supported if it is significantly of the claimed sign."""
    if diff["n"] < 2 or not diff["significant"]:
        return INCONCLUSIVE
    return SUPPORTED if (diff["mean"] > 0) == positive_supports else CONTRADICTED


def diff_text(diff: dict, a: str, b: str, what: str) -> str:
    if diff["n"] == 0:
        return "no shared seeds"
    mark = "significant" if diff["significant"] else "not significant"
    return (
        f"{what} {a} − {b} = {fmt(diff['mean'], diff['half_width'])} over {diff['n']} paired seeds ({mark})"
    )


def missing(text: str, why: str) -> Claim:
    """A claim the suite has no runs for; `why` says what it would need."""
    return Claim(text, NOT_MEASURED, why)
