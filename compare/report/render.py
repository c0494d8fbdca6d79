"""report.md from the saved results, the figures written and the claims: its sections, in order."""

from __future__ import annotations

import pandas as pd

from compare.report.claims import data_needs_statements, forgetting_statements, generalisation_statements
from compare.report.roles import Roles
from compare.report.tables import (
    data_table,
    differences_section,
    efficiency_section,
    examples_section,
    main_table,
    rm_table,
    split_name,
    splits_table,
    table_cell,
)
from compare.suite import Suite


def describe_base(suite: Suite) -> str:
    b = suite.base
    if b.package:
        return f"the GGUF model shipped by the package `{b.package}`, dequantised to float32"
    if b.model:
        return f"`{b.model}`" + (f" (GGUF file `{b.gguf_file}`)" if b.gguf_file else "")
    return (
        f"built-in tiny GPT-2 ({b.tiny.n_layer} layers, {b.tiny.n_embd} hidden, "
        f"pretrained {b.tiny.steps} steps on the task corpus)"
    )


def render_markdown(
    suite: Suite, results, samples, prov: dict, figures, claims, failed=None, roles: Roles | None = None
) -> str:
    roles = roles or Roles.of(suite, set(results["arm"]))
    arms = list(suite.arms)
    base = describe_base(suite)
    seeds = sorted(results["seed"].unique().tolist())
    cost = suite.budget.cost
    ann = suite.task.annotator
    budgets = sorted(results["budget"].unique().tolist())
    splits = list(dict.fromkeys(results["split"]))  # in the order the evaluator wrote them
    lines = [
        f"# Report: {suite.name}",
        "",
        suite.description.strip(),
        "",
        "## Setup",
        "",
        f"- **Task:** `{suite.task.name}` (task seed {suite.task.seed}); demonstrator quality "
        f"{suite.task.demonstrator_quality:g}; annotator: Bradley–Terry on the gold margin, temperature "
        f"{ann.temperature:g}, flip rate {ann.flip_rate:g}"
        + "".join(
            f", {label} {value:g}"
            for label, value in (
                ("length bias", ann.length_bias),
                ("style bias", ann.style_bias),
                ("position bias", ann.position_bias),
            )
            if value
        )
        + ".",
        f"- **Base model (every arm starts here):** {base}.",
        f"- **Budget:** {', '.join(f'{b:g}' for b in budgets)} annotation units per arm; a demonstration costs "
        f"{cost.demonstration:g} units, a comparison {cost.comparison:g}, a binary label {cost.label:g}.",
        f"- **Seeds:** {', '.join(map(str, seeds))} ({len(seeds)} per cell); tables show mean ± 95% t-interval "
        "over seeds.",
        f"- **Evaluation (same for every arm):** {suite.task.eval_prompts} prompts in each split "
        f"({', '.join(split_name(x) for x in splits)}), {suite.eval.samples_per_prompt} samples each at "
        f"temperature {suite.eval.temperature:g}, at most "
        f"{suite.eval.max_new_tokens} new tokens. KL to the base is the mean sampled log-ratio "
        "log π(y|x) − log π_base(y|x) per completion.",
        "",
        "### What each arm got",
        "",
        data_table(suite, results),
        "",
        "## Results",
        "",
        "Gold reward is the task's true objective, which no training method sees. RM score is the reward "
        "model's opinion (runs with a reward model only).",
        "",
        main_table(results, arms),
        "",
    ]
    rm = rm_table(results)
    if rm:
        lines += [
            "### Reward models",
            "",
            "Accuracy: how often the reward model orders two samples of the same prompt as the gold reward "
            "does (noise-free labels, ties skipped).",
            "",
            rm,
            "",
        ]
    lines += failed_section(failed)
    lines += differences_section(results, roles)
    lines += efficiency_section(suite, results, roles)
    lines += axis_sections(results, roles, figures)
    lines += claims_section(claims, 0 if failed is None else len(failed))
    lines += ["## Example generations", "", examples_section(samples, arms, suite.eval.examples), ""]
    lines += [
        "## Provenance",
        "",
        f"Generated {prov.get('date')} by sft-vs-rlhf {prov.get('sft_vs_rlhf', '(version not recorded)')} "
        f"from commit `{prov.get('git_commit')}` with torch {prov.get('torch')}, "
        f"transformers {prov.get('transformers')}, trl {prov.get('trl')} on {prov.get('device')}. "
        "`results.csv`, `samples.csv` and `training_logs.csv` hold every number; `suite.yaml` the resolved "
        "suite. Rebuild this page with `sft-vs-rlhf report <this folder>`.",
        "",
    ]
    return "\n".join(lines)


def _figure_lines(figs) -> list[str]:
    lines = []
    for title, path in figs:
        if path is not None:
            lines += [f"![{title}](plots/{path.name})", ""]
    return lines


def axis_sections(results: pd.DataFrame, roles: Roles, figures: dict) -> list[str]:
    """One section per axis of the comparison: what the numbers say, then the figures that show it."""
    lines = ["## Objective: what each method optimises, and what it achieves", ""]
    lines += [
        "Each stage minimises its own objective (NLL of demonstrations, a preference loss, or the reward "
        "model's score under a KL penalty); the gold reward is what the task wants. The gap between a reward "
        "model's score and the gold reward is the proxy gap; the frontier shows gold reward bought per nat of KL.",
        "",
    ]
    lines += _figure_lines(figures["objective"])
    lines += ["## Data needs: quality per annotation unit, and robustness to noise", ""]
    data_lines = data_needs_statements(results, roles)
    lines += [f"- {x}" for x in data_lines] or [
        "This suite sweeps no budget; see `experiments/data_needs.yaml`."
    ]
    lines += [""] + _figure_lines(figures["data"])
    lines += ["## Generalisation: in vs out of distribution, and diversity", ""]
    table = splits_table(results, roles)
    if table:
        prior = (
            ", and the base model's prior ability (counting), which no stage trains"
            if "prior" in set(results["split"])
            else ""
        )
        lines += [
            f"Gold reward on every evaluation split (docs/world.md): ID, then each named shift{prior}; "
            "KL(base ‖ π) is the forward KL on the training prompts, which forgetting is read against "
            "(Shenfeld et al. 2025).",
            "",
            table,
            "",
        ]
    lines += [f"- {x}" for x in generalisation_statements(results, roles)]
    lines += [f"- {x}" for x in forgetting_statements(results, roles)]
    lines += [""] + _figure_lines(figures["generalisation"])
    return lines


def failed_section(failed: pd.DataFrame | None) -> list[str]:
    """The runs that have no results, with the stage that failed and why (their numbers are left out)."""
    if failed is None or failed.empty:
        return []
    lines = [
        "### Failed runs",
        "",
        f"{len(failed)} run(s) failed and are left out of every table, figure and claim below. A failed "
        "stage is never cached: `sft-vs-rlhf run` again retries only what failed.",
        "",
        "| arm | grid point | seed | failed stage | reason | log |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in failed.iterrows():
        cells = [r.get("arm", ""), r.get("point", "") or "–", r.get("seed", ""), r.get("stage", ""),
                 r.get("reason", ""), f"`{r['log']}`" if r.get("log") else "–"]  # fmt: skip
        lines.append("| " + " | ".join(table_cell(str(c)) for c in cells) + " |")
    return lines + [""]


def claims_section(claims, n_failed: int = 0) -> list[str]:
    without = f" Computed without the {n_failed} failed run(s) listed above." if n_failed else ""
    lines = [
        "## Claims checked",
        "",
        "Each claim is marked supported or contradicted only when a seed-paired 95% interval excludes zero; "
        "otherwise inconclusive at this scale. 'Not measured' means this suite has no runs that bear on it."
        + without,
        "",
        "| claim | verdict | evidence |",
        "|---|---|---|",
    ]
    lines += [f"| {c.claim} | **{c.verdict}** | {c.evidence} |" for c in claims]
    return lines + [""]
