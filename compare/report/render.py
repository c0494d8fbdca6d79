"""report.md from the saved results, the figures written and the claims: its sections, in order."""

from __future__ import annotations

import re
import unicodedata

import pandas as pd

import compare.report.pass_at_k as pass_at_k
import compare.report.preference_diagnostics as preference_diagnostics
from compare.report.beside import beside_key_result, beside_section
from compare.report.claims import data_needs_statements, forgetting_statements, generalisation_statements
from compare.report.key_results import SCALE_NAMES, gold_scale, key_results
from compare.report.ladder import ladder_section, sizes
from compare.report.roles import Roles
from compare.report.tables import (
    data_table,
    differences_section,
    efficiency_section,
    examples_section,
    main_table,
    rm_table,
    splits_table,
    table_cell,
)
from compare.report.verdicts import CORRECTION, MARKERS, NOT_MEASURED
from compare.stages import DATA_KINDS
from compare.suite import Suite

FINDINGS_POINTER = "(`make findings`: reports/findings/)"
# in a user's text, outside `code`: what would make markdown of it (escapes, HTML and entities, links and
# images, table cells); and at a paragraph's start, what would make a heading, a quote, a list or a rule
_MARKUP = re.compile(r"([\\<&\[\]|])")
_BLOCK_START = re.compile(r"^(?:([#>+*=-])|([0-9]{1,9})([.)]))")


def _a(noun: str) -> str:
    """The noun with its indefinite article: "a comparison", "an edit"."""
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def quoted_text(text: str) -> str:
    """A user's text (a suite's description) as plain markdown paragraphs: the lines of each paragraph
    joined, control characters dropped, markdown's punctuation escaped outside `code`, so nothing in it
    becomes a heading, a table, a list, a link, an image or HTML in report.md or report.html."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text.strip()):
        line = "".join(c for c in " ".join(block.split()) if unicodedata.category(c)[0] != "C")
        parts = re.split(r"(`[^`]+`)", line)
        line = "".join(part if i % 2 else _MARKUP.sub(r"\\\1", part) for i, part in enumerate(parts))
        line = _BLOCK_START.sub(lambda m: f"\\{m[1]}" if m[1] else f"{m[2]}\\{m[3]}", line)
        if line:
            paragraphs.append(line)
    return "\n\n".join(paragraphs)


def describe_base(suite: Suite) -> str:
    b = suite.base
    if b.package:
        return f"the GGUF model shipped by the package `{b.package}`, dequantised to float32"
    if b.model:
        return f"`{b.model}`" + (f" (GGUF file `{b.gguf_file}`)" if b.gguf_file else "")
    return (
        f"built-in tiny GPT-2 ({b.tiny.n_layer} layers, {b.tiny.n_embd} hidden, "
        f"pretrained {pretraining_length(suite)} on the task corpus)"
    )


def chat_format(suite: Suite) -> str:
    """How an external model reads its prompts (compare/lm/chat.py), for the setup line; "" for the tiny
    model, which has no chat template."""
    b = suite.base
    if not b.external:
        return ""
    if b.chat_template == "none":
        return "; plain text, its chat template (if any) left out"
    if b.system_prompt is None:
        return "; in its chat format where its tokenizer has a template (with the template's own system turn)"
    system = "an empty system turn" if not b.system_prompt else f"the system turn “{b.system_prompt}”"
    return f"; in its chat format (its tokenizer's template), with {system}"


def labels_line(suite: Suite) -> str:
    """Where the comparisons' labels come from: the dataset's people, or the simulated annotator."""
    from compare.tasks import TASKS
    from compare.tasks.task import has_human_labels

    ann = suite.task.annotator
    task = TASKS.get(suite.task.name)
    if task is not None and has_human_labels(task):
        data = getattr(suite.task, "data", None)
        source = f" of `{data.path}`" if getattr(data, "path", None) else ""
        flips = f", {ann.flip_rate:.0%} of them flipped" if ann.flip_rate else ""
        return f"comparisons: the human labels{source}{flips} (no simulated annotator)"
    biases = "".join(
        f", {label} {value:g}"
        for label, value in (
            ("length bias", ann.length_bias),
            ("style bias", ann.style_bias),
            ("position bias", ann.position_bias),
        )
        if value
    )
    return (
        f"annotator: simulated, Bradley–Terry on the gold margin, temperature {ann.temperature:g}, flip "
        f"rate {ann.flip_rate:g}{biases}"
    )


def pretraining_length(suite: Suite) -> str:
    t = suite.base.tiny
    ratio = t.tokens_per_parameter
    return f"{t.steps} steps" if ratio is None else f"on {ratio:g} corpus tokens per parameter"


def render_markdown(
    suite: Suite,
    results,
    samples,
    prov: dict,
    figures,
    claims,
    failed=None,
    roles: Roles | None = None,
    snapshots=None,
    logs: pd.DataFrame | None = None,
    beside: pd.DataFrame | None = None,
) -> str:
    """report.md. `snapshots`: snapshots.csv (held-out samples along training), for the line pointing to
    report.html's over-optimisation view; `logs` (the training logs) also decide the claims again per
    base-model size when the grid sweeps it (`ladder_section`); `beside`: beside.csv, the tiny world's
    findings shown beside this suite's verdicts when the suite sets `beside_findings` (`beside_section`)."""
    roles = roles or Roles.of(suite, set(results["arm"]))
    base = describe_base(suite)
    ladder = sizes(results)
    if len(ladder) > 1:  # one base model per size: the grid's values, not the suite's default
        base = (
            f"built-in tiny GPT-2 at {len(ladder)} sizes ({'; '.join(label for label, _ in ladder)}), each "
            f"pretrained {pretraining_length(suite)} on the task corpus: each size is its own comparison "
            "(Base-size ladder, below)"
        )
    seeds = sorted(results["seed"].unique().tolist())
    cost = suite.budget.cost
    # each kind of feedback's price (the cost model, fairness rule 2): "a demonstration costs 4 units, ..."
    (first, price), *others = [(_a(k.singular), getattr(cost, k.cost)) for k in DATA_KINDS.values()]
    prices = f"{first} costs {price:g} units" + "".join(f", {what} {p:g}" for what, p in others)
    budgets = sorted(results["budget"].unique().tolist())
    splits = list(dict.fromkeys(results["split"]))  # in the order the evaluator wrote them
    inherited = prov.get("description_from")
    lines = [
        f"# Report: {suite.name}",
        "",
        quoted_text(suite.description),
        "",
        *(
            [
                f"> **Note:** this description comes from the included file `{inherited}`; the suite file "
                "sets none of its own, so it may describe another model or dataset.",
                "",
            ]
            if inherited and suite.description
            else []
        ),
        *key_results(
            results, roles, claims, FINDINGS_POINTER, beside_key_result(claims, roles, base, beside)
        ),
        "## Setup",
        "",
        f"- **Task:** `{suite.task.name}` (task seed {suite.task.seed}); demonstrator quality "
        f"{suite.task.demonstrator_quality:g}; {labels_line(suite)}.",
        f"- **Base model (every arm starts here):** {base}{chat_format(suite)}.",
        f"- **Budget:** {', '.join(f'{b:g}' for b in budgets)} annotation units per arm; {prices}.",
        f"- **Seeds:** {', '.join(map(str, seeds))} ({len(seeds)} per cell); tables show mean ± 95% t-interval "
        "over seeds.",
        f"- **Evaluation (same for every arm):** {suite.task.eval_prompts} prompts in each split "
        f"({', '.join(roles.split_label(x) for x in splits)}), {suite.eval.samples_per_prompt} samples each at "
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
        "Gold reward is the task's true objective: no method trains on it, except an oracle arm (marked "
        "as such), which is an upper bound, not a competitor. RM score is the reward model's opinion (runs "
        "with a reward model only). A reward model evaluated alone is not a policy: it is in the "
        "reward-model table below."
        + (
            " Training FLOP and s: the compute of every stage a run needed after the base model (which every "
            "arm shares) and before its evaluation, shared stages (the data, a warm start, a reward model) "
            "counted whole for each arm that uses them: "
            "6·N FLOPs per token trained, 2·N per token only forwarded (sampling, scoring, a reference), "
            "and the seconds the cache recorded when each stage ran; per stage, the base model's included, in "
            "`compute.csv`, where "
            "`bound` names the token counts that are upper bounds (rollouts at max_new_tokens, the tiny "
            "base's pretraining at n_positions). Best-of-n's n samples per answer are evaluation compute, "
            "not counted here."
            if "compute_seconds" in results and results["compute_seconds"].notna().any()
            else ""
        )
        + (f" Gold scale: {_scale_text(results, roles)}." if roles.gold_ceiling is not None else ""),
        "",
        main_table(results, roles),
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
    lines += axis_sections(
        results, roles, figures, snapshots is not None and not snapshots.empty, samples, logs
    )
    lines += claims_section(claims, 0 if failed is None else len(failed))
    lines += beside_section(suite, results, claims, roles, base, beside)
    lines += ladder_section(results, logs, roles)
    lines += ["## Example generations", "", examples_section(samples, roles, suite.eval.examples), ""]
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


def axis_sections(
    results: pd.DataFrame,
    roles: Roles,
    figures: dict,
    snapshots: bool = False,
    samples=None,
    logs: pd.DataFrame | None = None,
) -> list[str]:
    """One section per axis of the comparison: what the numbers say, then the figures that show it
    (`snapshots`: held-out samples along training were saved, which report.html shows; `samples` and
    `logs`: for DPO's diagnostics)."""
    lines = ["## Objective: what each method optimises, and what it achieves", ""]
    lines += [
        "Each stage minimises its own objective (NLL of demonstrations, a preference loss, or the reward "
        "model's score under a KL penalty); the gold reward is what the task wants. The gap between a reward "
        "model's score and the gold reward is the proxy gap; the frontier shows gold reward bought per nat of KL.",
        "",
    ]
    lines += _figure_lines(figures["objective"])
    if snapshots:
        lines += [
            "Watch it happen: report.html's *Watching over-optimisation* view moves a slider along online RL "
            "training (held-out completions saved at a few checkpoints, `snapshots.csv`) and along each "
            "strength sweep, and shows the same prompts' answers with gold, RM score and KL at each point.",
            "",
        ]
    dpo = preference_diagnostics.table(results, samples, logs, roles) if logs is not None else None
    if dpo:
        lines += [
            "### DPO's diagnostics",
            "",
            "The summed log-probabilities of the chosen and rejected answers of the training pairs under the "
            "policy, at the start and end of training (the first and last 10% of logged steps), the training "
            "pairs' accuracy (TRL's rewards/accuracies), the implicit reward β·log π/π_ref judged on pairs "
            "of the policy's own samples of held-out ID prompts labelled by the gold reward (arms whose "
            "reference is the base model), and the gold of the generations. A falling log p(chosen) and a "
            "pair accuracy above the gold's gain are the failure signs reported for DPO.",
            "",
            dpo,
            "",
        ]
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
            f", and the base model's prior ability ({roles.prior.description}), which no stage trains"
            if roles.prior is not None and roles.prior.name in set(results["split"])
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
    reach = pass_at_k.statements(results, roles, roles.pass_rule)
    if reach:
        lines += ["## Reach: pass@k", "", *reach, "", *_figure_lines(figures.get("reach", []))]
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


def _scale_text(results, roles: Roles) -> str:
    return ", ".join(f"{SCALE_NAMES[k]} {v:.2f}" for k, v in gold_scale(results, roles).items())


def claims_section(claims, n_failed: int = 0) -> list[str]:
    without = f" Computed without the {n_failed} failed run(s) listed above." if n_failed else ""
    tested = sum(c.verdict != NOT_MEASURED and c.p_value == c.p_value for c in claims)
    lines = [
        "## Claims checked",
        "",
        "Each claim is checked on this suite's runs with one rule (`compare/report/verdicts.py`): supported "
        "(▲) or contradicted (▼) only when a seed-paired 95% t-interval excludes zero, otherwise "
        "inconclusive (○); not measured (–) when this suite has no runs that bear on it. With many "
        f"claims, some pass by chance: the column *after correction* applies {CORRECTION} ({tested} "
        "tested here), and the key results use it. Where a suite has both kinds of RLHF, the claims against "
        "SFT are checked for each (offline preference: DPO; online RL: a reward model + PPO or RLOO)."
        + without,
        "",
        "| claim | compared | reading | verdict | after correction | decided by | numbers |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        suite = f"experiments/{c.suite}" if c.suite else "–"
        read = c.reading
        if c.seeds_needed is not None and c.verdict != NOT_MEASURED:
            read += f" About {c.seeds_needed} seeds would decide an effect of this size."
        if not c.can_contradict:
            read += " (Cannot be contradicted by this statistic: docs/claims.md.)"
        numbers = "–" if c.verdict == NOT_MEASURED else c.evidence
        if c.p_value == c.p_value and f"p = {c.p_value:.2g}" not in numbers:
            numbers += f"; the claim's p-value (Bonferroni over its tests) = {c.p_value:.2g}"
        lines.append(
            f"| {table_cell(c.claim)} | {table_cell(c.compared or '–')} | {table_cell(read)} | "
            f"**{MARKERS[c.verdict]}** | **{MARKERS[c.corrected or c.verdict]}** | {suite} | {table_cell(numbers)} |"
        )
    return lines + [""]
