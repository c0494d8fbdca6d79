"""The findings report: every claim decided in the suite designed for it, on a discovery and a confirmation
half of that suite's seeds (DESIGN.md, fairness rules 7 and 8).

For each suite of a findings collection (`Collection.findings`), the seeds are sorted and split in two:
the first half discovers, the second half confirms. Each claim whose home suite (`Claim.suite`, the
shipped suite named in docs/claims.md) is that suite is checked three times, with the one rule of
`verdicts.py`: on the discovery half, on the confirmation half and on all seeds. A claim is
**replicated** when the discovery half decides it (95%, as any report would) and the confirmation half,
corrected with Holm over the claims carried to it, decides it the same way. On all seeds the verdicts
are also shown after Holm over every claim of the table. Exact numbers differ across CPUs (floating-point
kernels); only replicated verdicts are findings.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from html import escape
from pathlib import Path

import pandas as pd

from compare.report.claims import check_claims
from compare.report.render import quoted_text
from compare.report.roles import Roles
from compare.report.stats import holm, seeds_to_decide
from compare.report.tables import table_cell
from compare.report.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    LEVEL,
    MARKERS,
    NOT_MEASURED,
    SUPPORTED,
    Claim,
    effect_text,
)

SUITE_LINK = re.compile(r"\[([A-Za-z0-9_.-]+)\]\(([A-Za-z0-9_.-]+)/report\.md\)")
# the figures that show what each claim compares, shown under the suite that decides it (when drawn)
CLAIM_FIGURES = {
    "data_needs": ("learning_curves",), "noise": ("noise", "demonstrator_quality"),
    "ood": ("shift_gaps",), "shift": ("shift_gaps",), "diversity": ("diversity",),
    "beyond_demonstrator": ("gold_by_arm",), "dpo_vs_preferred": ("gold_by_arm",),
    "overoptimisation": ("overoptimisation",), "bias_needed": ("labeller_bias", "overoptimisation"),
    "dpo_overoptimises": ("frontier",), "frontier": ("frontier",), "best_of_n_kl": ("frontier",),
    "online": ("frontier",), "forgetting": ("forgetting",), "curated": ("demonstrator_quality",),
}  # fmt: skip


@dataclass(frozen=True)
class Finding:
    """One claim of one suite on both halves and on all seeds."""

    suite: str
    discovery_seeds: tuple[int, ...]
    confirmation_seeds: tuple[int, ...]
    discovery: Claim
    confirmation: Claim
    whole: Claim
    confirmed: str = INCONCLUSIVE  # the confirmation half's verdict after Holm over the carried claims
    corrected: str = INCONCLUSIVE  # all seeds, after Holm over the whole table

    @property
    def replicated(self) -> bool:
        return self.discovery.decided and self.confirmed == self.discovery.verdict


def halves(seeds) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sorted seeds split in two: the first half discovers, the second confirms (odd: discovery is smaller)."""
    ordered = tuple(sorted(set(int(s) for s in seeds)))
    return ordered[: len(ordered) // 2], ordered[len(ordered) // 2 :]


def _only(frame: pd.DataFrame, seeds) -> pd.DataFrame:
    return frame[frame["seed"].isin(seeds)] if not frame.empty and "seed" in frame else frame


def home_of(claim: Claim) -> str:
    return claim.suite.removesuffix(".yaml")


def suite_findings(name: str, results, logs, roles: Roles) -> list[Finding]:
    """The claims whose home is this suite, on each half and on all seeds (before any correction)."""
    first, second = halves(results["seed"].unique())
    checks = {
        seeds: {c.key: c for c in check_claims(_only(results, seeds), _only(logs, seeds), roles)}
        for seeds in (first, second, first + second)
    }
    whole = checks[first + second]
    return [
        Finding(name, first, second, checks[first][key], checks[second][key], claim)
        for key, claim in whole.items()
        if home_of(claim) == name and key in checks[first] and key in checks[second]
    ]


def corrected(findings: list[Finding]) -> list[Finding]:
    """The confirmation verdicts after Holm over the claims the discovery half decided, and the all-seeds
    verdicts after Holm over every measured claim of the table."""
    carried = [i for i, f in enumerate(findings) if f.discovery.decided]
    confirm_p = holm([findings[i].confirmation.p_value for i in carried])
    confirmed = {i: p for i, p in zip(carried, confirm_p)}
    whole_p = holm([f.whole.p_value if f.whole.verdict != NOT_MEASURED else math.nan for f in findings])
    out = []
    for i, f in enumerate(findings):
        p = confirmed.get(i, math.nan)
        conf = f.confirmation.verdict if f.confirmation.decided and p < LEVEL else INCONCLUSIVE
        all_p = whole_p[i]
        whole = f.whole.verdict if f.whole.decided and all_p < LEVEL else (
            NOT_MEASURED if f.whole.verdict == NOT_MEASURED else INCONCLUSIVE
        )  # fmt: skip
        out.append(
            Finding(
                **{**f.__dict__, "confirmed": conf if i in confirmed else INCONCLUSIVE, "corrected": whole}
            )
        )
    return out


def _seeds(seeds: tuple[int, ...]) -> str:
    if seeds and list(seeds) == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _effect(claim: Claim) -> str:
    return effect_text(claim.effect)


def findings_markdown(collection, findings: list[Finding], figures: dict[str, list[Path]]) -> str:
    """report.md of a findings collection: the claims table, then each suite's key figures."""
    replicated = [f for f in findings if f.replicated]
    flipped = [f for f in findings if f.discovery.decided and not f.replicated]
    never = [f for f in findings if not f.discovery.decided and f.whole.verdict != NOT_MEASURED]
    lines = [
        "# Findings" if collection.name == "findings" else f"# Findings: {collection.name}",
        "",
        quoted_text(collection.description),
        "",
        "## Key results",
        "",
        f"- **{len(replicated)} of {len(findings)} claims replicated**: decided on the discovery half of the "
        "seeds and decided the same way on the confirmation half, which was never looked at before "
        "(after Holm's correction over the claims carried to it)"
        + (
            ": " + "; ".join(f"{_name(f)} **{f.discovery.verdict}**" for f in replicated)
            if replicated
            else ""
        )
        + ".",
        f"- **{len(flipped)} decided on the discovery half but not confirmed**"
        + (": " + "; ".join(_name(f) for f in flipped) if flipped else "")
        + ". Read these as leads, not findings.",
        f"- **{len(never)} decided on neither half**; the table gives the effect on all seeds and about how "
        "many seeds would decide an effect of that size.",
        "- Exact numbers differ across CPUs (floating-point kernels), so a verdict is a finding only when "
        "it replicates; each suite's own report (linked below) has every number.",
        "",
        "## Every claim, on both halves",
        "",
        "Discovery and confirmation: the verdict of each half at 95% (the confirmation half after Holm over "
        "the claims the discovery half decided); all seeds: the effect (mean ± 95% t-interval; positive is "
        "the direction the claim predicts) and the verdict after Holm over every claim of this table.",
        "",
        "| claim | compared | suite (seeds: discovery / confirmation) | discovery | confirmation | replicated | "
        "effect, all seeds | all seeds, after correction | seeds to decide |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in findings:
        lines.append(
            "| " + " | ".join([
                table_cell(f.whole.claim), table_cell(f.whole.compared or "–"),
                f"[{f.suite}]({f.suite}/report.md) ({_seeds(f.discovery_seeds)} / {_seeds(f.confirmation_seeds)})",
                f"**{MARKERS[f.discovery.verdict]}**", f"**{MARKERS[f.confirmed if f.discovery.decided else f.confirmation.verdict]}**",
                "**yes**" if f.replicated else "no", _effect(f.whole), f"**{MARKERS[f.corrected]}**",
                _seeds_to_decide(f),
            ]) + " |"
        )  # fmt: skip
    lines += ["", "## Each suite's key figures", ""]
    for suite, paths in figures.items():
        lines += [f"### [{suite}]({suite}/report.md)", ""]
        lines += [f"![{suite}: {p.stem.replace('_', ' ')}]({suite}/plots/{p.name})" for p in paths]
        lines.append("")
    lines += [
        "## How to regenerate",
        "",
        "`make findings` (cold: under an hour on 2 CPU cores; stages are cached, so an interrupted run "
        "resumes). The statistics: `compare/report/findings.py`; the claims and their statistics: "
        "docs/claims.md.",
        "",
    ]
    return "\n".join(lines)


def _seeds_to_decide(f: Finding) -> str:
    """For a claim not decided on all seeds after the correction: about how many seeds would decide an
    effect of the size observed at 95% (`seeds_to_decide`), or that it is significant before the
    correction only."""
    if f.corrected in (SUPPORTED, CONTRADICTED):
        return "–"
    d = f.whole.effect
    if d is None or d.n < 2:
        return "–"
    if d.significant:
        return f"more than {d.n} (significant before the correction only)"
    need = seeds_to_decide(d.mean, d.sd)
    return f"about {need}" if need is not None else "more than 1000"


def _name(f: Finding) -> str:
    return f"{f.whole.short} [{f.whole.arm + ', ' if f.whole.arm else ''}{f.suite}]"


def findings_html(markdown: str, folder: Path) -> str:
    """The same report as one self-contained page: its figures embedded as data: URLs."""
    from compare.report.html import markdown_sections, page

    def figure(title: str, target: str) -> str:
        path = folder / target
        if not path.is_file():
            return f'<p class="missing">{escape(target)} was not found</p>'
        data = base64.b64encode(path.read_bytes()).decode()
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(title)}">'
                f"<figcaption>{escape(title)}</figcaption></figure>")  # fmt: skip

    title, intro, sections = markdown_sections(markdown, figure)
    body = "".join(f'<section id="{slug}">{html}</section>' for _, slug, html in sections)
    # each suite's own report, a link beside this page (suite names are plain folder names); report.md,
    # which the repository's copy of the findings keeps (its report.html, with every sample, it does not)
    body = SUITE_LINK.sub(r'<a href="\2/report.md">\1</a>', body)
    return page(title, f'<div class="head-text"><h1>{escape(title)}</h1>{intro}</div>', body)


def collection_findings(suites_data: list[tuple]) -> list[Finding]:
    """Every suite's findings, corrected over the whole table: what a findings report decides.
    `suites_data`: (suite, results, logs, roles) of every suite of the collection that has results."""
    found = []
    for suite, results, logs, roles in suites_data:
        found += suite_findings(suite.name, results, logs, roles)
    return corrected(found)


def write_findings(folder: Path, collection, suites_data: list[tuple]) -> None:
    """report.md and report.html of a findings collection in `folder`, from each suite's saved results.

    `suites_data`: (suite, results, logs, roles) of every suite that has results, whose own report folder
    `folder/<suite name>/` is already written."""
    found = collection_findings(suites_data)
    figures = {}
    for suite, *_ in suites_data:
        wanted = [
            name for f in found if f.suite == suite.name for name in CLAIM_FIGURES.get(f.whole.family, ())
        ]
        plots = folder / suite.name / "plots"
        figures[suite.name] = [
            plots / f"{n}.png" for n in dict.fromkeys(wanted) if (plots / f"{n}.png").is_file()
        ]
    text = findings_markdown(collection, found, figures)
    (folder / "report.md").write_text(text)
    (folder / "report.html").write_text(findings_html(text, folder), encoding="utf-8")
