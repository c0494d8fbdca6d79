"""Beside the tiny world: a suite's verdicts next to the project's findings (the suite key
`beside_findings`, docs/own_model.md).

A suite (on a real model, say) names a findings report folder, what `make findings` writes
(reports/findings). When its report is written, that folder's member suites are
read (results.csv, training_logs.csv, suite.yaml) and their findings decided exactly as the findings
report decides them (`findings.collection_findings`); what this report needs of them is saved in the
report folder as `beside.csv`, so `sft-vs-rlhf report` rebuilds the section without the reference folder.

The section puts, for every claim both worlds measure, the tiny world's finding beside this suite's
verdict, and says whether they agree (`agreement`): a tiny-world verdict counts as decided only when it
replicated (decided on the discovery half of its seeds and confirmed on the held-out half), this suite's
after Holm's correction over its claims table. A claim of this suite stands for the tiny world's claim
when both have the same key without its arm (`ood`, `diversity`) and the arm that stood for RLHF has the
same recipe in both (`[rm, ppo]`): arms are matched by what they are, not by what they are called (a
claim whose key names no arm, such as `frontier`, by its key alone). Then
the arms' rankings by ID and OOD gold in both worlds, over the arms both have (the same name and the same
recipe), with Kendall's tau-b (`ladder.kendall_tau`); the tiny world's from its member suite that shares
the most arms with this one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from compare.report.ladder import kendall_tau
from compare.report.roles import Roles
from compare.report.series import fmt
from compare.report.stats import Difference
from compare.report.tables import table_cell
from compare.report.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    MARKERS,
    NOT_MEASURED,
    SUPPORTED,
    Claim,
    effect_text,
)

BESIDE = "beside.csv"  # in the report folder: the tiny world's findings and gold per arm (`reference_frame`)
CLAIM_COLUMNS = ("row", "suite", "task", "commit", "training_logs", "key", "claim", "recipe", "discovery",
                 "confirmation", "replicated", "corrected", "effect", "effect_half_width", "effect_n")  # fmt: skip
GOLD_COLUMNS = ("row", "suite", "task", "commit", "arm", "recipe", "split", "gold", "seeds", "grid")
COLUMNS = tuple(dict.fromkeys(CLAIM_COLUMNS + GOLD_COLUMNS))
SPLITS = ("id", "ood")  # the rankings: in distribution and the task's first shift, as every task names them

HELD, FLIPPED, TINY_ONLY, HERE_ONLY, NEITHER = (
    "held",
    "flipped",
    "decided in the tiny world only",
    "decided here only",
    "decided in neither",
)


# -- pure functions ---------------------------------------------------------------------------------------
def agreement(tiny: str, here: str) -> str:
    """What the tiny world's finding (its discovery verdict when it replicated, else inconclusive) and this
    suite's verdict (after correction) say together: held (both decided, the same way), flipped (both
    decided, opposite ways), decided in one world only, or in neither."""
    tiny_decided, here_decided = tiny in (SUPPORTED, CONTRADICTED), here in (SUPPORTED, CONTRADICTED)
    if tiny_decided and here_decided:
        return HELD if tiny == here else FLIPPED
    if tiny_decided:
        return TINY_ONLY
    return HERE_ONLY if here_decided else NEITHER


def recipe_text(recipe: Sequence[str]) -> str:
    """A recipe as beside.csv keeps it: its stage kinds joined by spaces ("" for the base model)."""
    return " ".join(recipe)


def matched_arms(here: Mapping[str, Sequence[str]], there: Mapping[str, Sequence[str]]) -> list[str]:
    """The arms (name -> recipe) both worlds have: the same name and the same recipe, in `here`'s order."""
    return [name for name, recipe in here.items() if name in there and tuple(there[name]) == tuple(recipe)]


def arm_gold(results: pd.DataFrame, split: str, arms: Sequence[str]) -> dict[str, tuple[float, int]]:
    """{arm: (mean gold over seeds, seeds)} on one split: each seed's mean over the grid's other values,
    then the mean over seeds; arms without rows on the split are left out."""
    out = {}
    rows = results[(results["split"] == split) & results["arm"].isin(arms)].dropna(subset=["gold_reward"])
    for arm in arms:
        per_seed = rows[rows["arm"] == arm].groupby("seed")["gold_reward"].mean()
        if not per_seed.empty:
            out[arm] = (float(per_seed.mean()), int(per_seed.size))
    return out


def competition_ranks(means: Mapping[str, float]) -> dict[str, int]:
    """Each name's rank, 1 = the highest mean; tied means share the better rank ("1224"); nan last."""
    values = [v for v in means.values() if not math.isnan(v)]
    return {
        k: len(values) + 1 if math.isnan(v) else 1 + sum(other > v for other in values)
        for k, v in means.items()
    }


def tiny_verdict(row) -> str:
    """The tiny world's finding of one claim row: its discovery verdict when it replicated, else
    inconclusive."""
    return row["discovery"] if _true(row["replicated"]) else INCONCLUSIVE


def _true(value) -> bool:
    return value is True or str(value).strip().lower() == "true"


def claim_recipe(claim: Claim, recipes: Mapping[str, Sequence[str]]) -> str | None:
    """The recipe of the arm that stood for RLHF in `claim` ("" for a claim without one); None when that
    arm is not among `recipes`."""
    if not claim.arm:
        return ""
    return recipe_text(recipes[claim.arm]) if claim.arm in recipes else None


def pairs(tiny: pd.DataFrame, claims: Sequence[Claim], recipes: Mapping[str, Sequence[str]]) -> list[tuple]:
    """(tiny row, this suite's claim) of every claim both worlds measure: this suite's verdict is not "not
    measured", the tiny world's all-seeds verdict neither, and both have the same key without its arm and
    the same recipe for the arm that stood for RLHF. In this suite's claims order, then the tiny rows'."""
    rows = tiny[(tiny["row"] == "claim") & (tiny["corrected"] != NOT_MEASURED)]
    found = []
    for claim in claims:
        if claim.verdict == NOT_MEASURED:
            continue
        recipe = claim_recipe(claim, recipes)
        for _, row in rows.iterrows():
            if row["key"].split("[")[0] == claim.base_key and _text(row["recipe"]) == recipe:
                found.append((row, claim))
    return found


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


# -- reading the reference and writing beside.csv ---------------------------------------------------------
def member_folders(folder: Path) -> list[Path]:
    """The member suites' report folders of a findings report folder: its subfolders with a suite.yaml."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and (p / "suite.yaml").is_file())


def read_reference(folder: Path) -> list[tuple]:
    """(suite, results, logs, roles, provenance, has training logs) of every member suite of a findings
    report folder, each file checked; raises ReportError (one line) on the first problem, or when the
    folder has no member suite."""
    from compare.report.files import ReportError, read_saved  # files -> render -> this module

    members = member_folders(folder)
    if not members:
        raise ReportError(
            f"{folder}: no member suite (a subfolder with suite.yaml and results.csv); give a findings "
            "report folder, what `make findings` writes"
        )
    out = []
    for member in members:
        suite, results, _, logs, prov, _ = read_saved(member, samples=False)
        if results["seed"].nunique() < 2:
            raise ReportError(
                f"{member / 'results.csv'}: {results['seed'].nunique()} seed; a findings report's suites "
                "decide each claim on a discovery and a confirmation half of their seeds"
            )
        roles = Roles.of(suite, set(results["arm"]))
        out.append((suite, results, logs, roles, prov, (member / "training_logs.csv").is_file()))
    return out


def reference_frame(members: list[tuple], suite) -> pd.DataFrame:
    """beside.csv: a `claim` row per finding of the reference (decided as the findings report decides
    them), and `gold` rows (each policy's mean gold on ID and OOD) of the member suite that shares the most
    arms with `suite` (then: the same task, more seeds, name order)."""
    from compare.report.findings import collection_findings  # findings -> render -> this module

    by_name = {m[0].name: m for m in members}
    rows = []
    for f in collection_findings([m[:4] for m in members]):
        member, results, logs, roles, prov, has_logs = by_name[f.suite]
        arm = f.whole.arm
        d: Difference | None = f.whole.effect
        rows.append({
            "row": "claim", "suite": f.suite, "task": member.task.name, "commit": prov.get("git_commit") or "",
            "training_logs": has_logs, "key": f.whole.key, "claim": f.whole.claim,
            "recipe": recipe_text(member.arms[arm].recipe) if arm in member.arms else "",
            "discovery": f.discovery.verdict,
            "confirmation": f.confirmed if f.discovery.decided else f.confirmation.verdict,
            "replicated": f.replicated, "corrected": f.corrected,
            "effect": d.mean if d is not None and d.n else math.nan,
            "effect_half_width": d.half_width if d is not None and d.n else math.nan,
            "effect_n": d.n if d is not None else 0,
        })  # fmt: skip
    here = Roles.of(suite)
    here_recipes = {a: here.arms[a].recipe for a in here.policies}

    def closeness(i: int) -> tuple:
        m = members[i]
        there = {a: m[3].arms[a].recipe for a in m[3].policies}
        return (len(matched_arms(here_recipes, there)), m[0].task.name == suite.task.name,
                m[1]["seed"].nunique(), -i)  # fmt: skip

    member, results, _, roles, prov, _ = members[max(range(len(members)), key=closeness)]
    swept = ", ".join(k for k in member.grid if k != "seed")
    for split in SPLITS:
        for arm, (gold, seeds) in arm_gold(results, split, roles.policies).items():
            rows.append({
                "row": "gold", "suite": member.name, "task": member.task.name,
                "commit": prov.get("git_commit") or "", "arm": arm,
                "recipe": recipe_text(member.arms[arm].recipe), "split": split, "gold": gold,
                "seeds": seeds, "grid": swept,
            })  # fmt: skip
    return pd.DataFrame(rows, columns=list(COLUMNS))


def read_beside(folder: Path) -> pd.DataFrame | None:
    """beside.csv of a report folder, checked; None when there is none."""
    from compare.report.files import read_csv_checked

    path = folder / BESIDE
    if not path.exists():
        return None
    frame = read_csv_checked(path, COLUMNS, keep_default_na=False, na_values=[""])
    for column in ("recipe", "grid", "commit", "key", "claim", "arm", "split"):
        frame[column] = frame[column].map(_text)
    return frame


# -- the section ------------------------------------------------------------------------------------------
def beside_section(
    suite, results: pd.DataFrame, claims: Sequence[Claim], roles: Roles, base: str, tiny: pd.DataFrame | None
) -> list[str]:
    """report.md's "Beside the tiny world"; empty unless the suite sets `beside_findings`. `base`: how the
    report names this suite's base model."""
    if not suite.beside_findings:
        return []
    lines = ["## Beside the tiny world", ""]
    if tiny is None:
        return lines + [
            f"This suite names the findings report `{suite.beside_findings}` (`beside_findings`), but this "
            f"folder has no {BESIDE}: run the suite again to write it.",
            "",
        ]
    recipes = {name: kind.recipe for name, kind in roles.arms.items()}
    claim_rows = tiny[tiny["row"] == "claim"]
    commits = sorted({c[:12] for c in tiny["commit"] if c})
    relative = (
        "" if Path(suite.beside_findings).expanduser().is_absolute() else " (relative to the suite file)"
    )
    lines += [
        f"The tiny world's verdicts come from the findings report `{suite.beside_findings}`{relative}, made "
        f"at commit{'s' if len(commits) > 1 else ''} "
        f"{', '.join(f'`{c}`' for c in commits) or '(not recorded)'}; `{BESIDE}` in this folder keeps them. "
        f"A tiny-world verdict counts as decided only when it **replicated** (decided on the discovery half "
        f"of its suite's seeds and confirmed on the held-out half); this suite's verdict is its claims "
        f"table's after Holm's correction. Agreement: **{HELD}** when both worlds decide a claim the same "
        f"way, **{FLIPPED}** when both decide it the opposite way, **{TINY_ONLY}** or **{HERE_ONLY}** when "
        f"one world decides it, **{NEITHER}** otherwise. A claim here stands for the tiny world's when "
        "the arm that stood for RLHF has the same recipe in both; effects are mean ± 95% interval over "
        "seeds, positive in the direction the claim predicts, each on its own world's gold scale.",
        "",
    ]
    matched = pairs(tiny, claims, recipes)
    if matched:
        lines += [
            "| claim | agreement | tiny world: finding (its suite, task) | tiny world: effect, all seeds | "
            "here: verdict | here: effect |",
            "|---|---|---|---|---|---|",
        ]
        for row, claim in matched:
            lines.append(
                "| " + " | ".join([
                    table_cell(claim.short + (f" [{claim.arm}]" if claim.arm else "")),
                    f"**{agreement(tiny_verdict(row), claim.corrected or claim.verdict)}**",
                    f"{_tiny_cell(row)} in {row['suite']} ({row['task']})", _tiny_effect(row),
                    f"**{MARKERS[claim.corrected or claim.verdict]}**", effect_text(claim.effect),
                ]) + " |"
            )  # fmt: skip
        lines += ["", _in_short(matched), ""]
    else:
        lines += ["No claim is measured in both worlds.", ""]
    lines += _unmatched_lines(claims, claim_rows, matched)
    lines += _ranking_lines(tiny, results, roles, base)
    return lines


def beside_key_result(claims: Sequence[Claim], roles: Roles, base: str, tiny: pd.DataFrame | None) -> str:
    """The key results' line: how many of the tiny world's findings that this suite measures hold here."""
    if tiny is None:
        return ""
    recipes = {name: kind.recipe for name, kind in roles.arms.items()}
    decided = [(r, c) for r, c in pairs(tiny, claims, recipes) if tiny_verdict(r) != INCONCLUSIVE]
    outcomes = [agreement(tiny_verdict(r), c.corrected or c.verdict) for r, c in decided]
    if not decided:
        return (
            "- **Beside the tiny world**: none of the tiny world's findings (claims that replicated there) "
            "is measured by this suite (see Beside the tiny world, below)."
        )
    flipped = outcomes.count(FLIPPED)
    return (
        f"- **Beside the tiny world**: {outcomes.count(HELD)} of the {len(decided)} tiny-world findings "
        f"(claims that replicated there) that this suite measures hold on {base}"
        + (f"; {flipped} flipped" if flipped else "")
        + (f"; {outcomes.count(TINY_ONLY)} not decided here" if TINY_ONLY in outcomes else "")
        + " (after Holm's correction; see Beside the tiny world, below)."
    )


def _tiny_cell(row) -> str:
    if _true(row["replicated"]):
        return f"**{MARKERS[row['discovery']]}**, replicated"
    if row["discovery"] in (SUPPORTED, CONTRADICTED):
        return f"not replicated (discovery {MARKERS[row['discovery']]}, confirmation {MARKERS[row['confirmation']]})"
    return f"not replicated (discovery {MARKERS[row['discovery']]})"


def _tiny_effect(row) -> str:
    n = int(row["effect_n"]) if row["effect_n"] == row["effect_n"] else 0
    half = (
        float(row["effect_half_width"]) if row["effect_half_width"] == row["effect_half_width"] else math.nan
    )
    return effect_text(Difference(float(row["effect"]), half, n, math.nan, math.nan) if n else None)


def _in_short(matched: list[tuple]) -> str:
    counts: dict[str, int] = {}
    for row, claim in matched:
        outcome = agreement(tiny_verdict(row), claim.corrected or claim.verdict)
        counts[outcome] = counts.get(outcome, 0) + 1
    order = (HELD, FLIPPED, TINY_ONLY, HERE_ONLY, NEITHER)
    return (
        "In short: " + "; ".join(f"{o} {counts[o]}" for o in order if o in counts) + f" (of {len(matched)})."
    )


def _unmatched_lines(claims: Sequence[Claim], rows: pd.DataFrame, matched: list[tuple]) -> list[str]:
    """The claims measured here that the reference does not measure, and why where the reference's folder
    says (a home suite without training logs)."""
    done = {id(c) for _, c in matched}
    lines = []
    for claim in claims:
        if claim.verdict == NOT_MEASURED or id(claim) in done:
            continue
        same = rows[rows["key"].map(lambda k: k.split("[")[0]) == claim.base_key]
        label = f"`{claim.key}`"
        if same.empty:
            lines.append(f"{label} (no suite of the reference decides it)")
        elif not same["training_logs"].map(_true).all() and (same["corrected"] == NOT_MEASURED).all():
            lines.append(
                f"{label} (not measured there: {same['suite'].iloc[0]}'s folder has no training_logs.csv)"
            )
        elif (same["corrected"] == NOT_MEASURED).all():
            lines.append(f"{label} (not measured there)")
        else:
            lines.append(f"{label} (the arm standing for RLHF has another recipe there)")
    if not lines:
        return []
    return ["Measured here only: " + "; ".join(lines) + ".", ""]


def _ranking_lines(tiny: pd.DataFrame, results: pd.DataFrame, roles: Roles, base: str) -> list[str]:
    gold = tiny[tiny["row"] == "gold"]
    if gold.empty:
        return []
    suite, task = gold["suite"].iloc[0], gold["task"].iloc[0]
    there = dict(zip(gold["arm"], gold["recipe"].map(lambda r: tuple(r.split()))))
    here = {a: roles.arms[a].recipe for a in roles.policies}
    shared = matched_arms(here, there)
    swept = gold["grid"].iloc[0]
    lines = [
        "### Do the arms rank the same way?",
        "",
        f"Gold reward of the arms both worlds have (the same name and the same recipe), mean over seeds "
        f"(each seed's mean over the grid's other values), and each arm's rank among them (1 = best): the "
        f"tiny world's from its suite `{suite}` ({task}), the member suite that shares the most arms with "
        f"this one{f', pooled over its grid ({swept})' if swept else ''}; here on {base}. The two worlds' "
        "gold rewards are different tasks' scales: only the orders compare. Kendall's τ-b over the shared "
        "arms: 1 = the same order, −1 = reversed.",
        "",
    ]
    for split in SPLITS:
        tiny_means = {
            r["arm"]: float(r["gold"])
            for _, r in gold[gold["split"] == split].iterrows()
            if r["arm"] in shared
        }
        here_means = {a: m for a, (m, _) in arm_gold(results, split, shared).items()}
        both = [a for a in shared if a in tiny_means and a in here_means]
        if len(both) < 2:
            continue
        tiny_rank = competition_ranks({a: tiny_means[a] for a in both})
        here_rank = competition_ranks({a: here_means[a] for a in both})
        tau, p_value, n = kendall_tau(tiny_means, here_means)
        name = roles.split_label(split)
        lines += [
            f"**{name} gold**:",
            "",
            "| arm | recipe | tiny world: gold (rank) | here: gold (rank) |",
            "|---|---|---|---|",
        ]
        for a in both:
            lines.append(
                f"| {table_cell(a)} | {table_cell(' → '.join(here[a]) or '(base model)')} | "
                f"{fmt(tiny_means[a], math.nan)} ({tiny_rank[a]}) | {fmt(here_means[a], math.nan)} ({here_rank[a]}) |"
            )
        t = f"{tau:.2f}" if tau == tau else "undefined (one world gives every arm the same gold)"
        p = f" (p = {p_value:.2g})" if p_value == p_value else ""
        lines += ["", f"Kendall's τ-b, {name} gold: {t}{p} over {n} arms.", ""]
    unranked = [
        f"in {suite} only: " + ", ".join(_arm_recipe(a, there[a]) for a in there if a not in shared),
        f"here only (not in {suite}): " + ", ".join(_arm_recipe(a, here[a]) for a in here if a not in shared),
    ]
    unranked = [part for part, arms in zip(unranked, (there, here)) if any(a not in shared for a in arms)]
    if unranked:
        lines += ["Not ranked (in one world only, or under another recipe): " + "; ".join(unranked) + ".", ""]
    return lines


def _arm_recipe(arm: str, recipe: Sequence[str]) -> str:
    return f"{arm} ({' → '.join(recipe) or 'base model'})"
