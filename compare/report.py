"""The report: tables and plots built only from the files a run saved, so it can be rebuilt at will.

A report folder holds `results.csv` (one row per run and split), `samples.csv` (one row per sample),
`training_logs.csv`, `suite.yaml` (the resolved suite), `provenance.json`, `report.md` and `plots/`.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import platform
import subprocess
from pathlib import Path

import pandas as pd
import yaml
from pydantic import ValidationError

from compare import analysis, plots
from compare.metrics import mean_ci
from compare.plan import default_share
from compare.plots import SPLIT_NAMES
from compare.stats import paired_difference
from compare.suite import Suite, one_line

METRICS = [  # column, heading, higher is better (None: neither)
    ("gold_reward", "gold reward", True),
    ("kl_to_base", "KL to base", None),
    ("proxy_reward", "RM score", True),
    ("distinct_2", "distinct-2", True),
    ("mean_length", "length", None),
    ("well_formed", "well-formed", True),
]


class ReportError(Exception):
    """A report folder whose saved files cannot be trusted, said in one line."""


FAILED_RUNS = "failed_runs.csv"  # arm, point, seed, stage, reason, log of every run that has no results


def write_report(
    out: Path, suite: Suite, results, samples, logs, stage_seconds: dict[str, float], failed: list[dict] = ()
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / "results.csv", index=False)
    samples.to_csv(out / "samples.csv", index=False)
    logs.to_csv(out / "training_logs.csv", index=False)
    if failed:
        pd.DataFrame(failed).to_csv(out / FAILED_RUNS, index=False)
    (out / "suite.yaml").write_text(yaml.safe_dump(suite.model_dump(), sort_keys=False))
    (out / "provenance.json").write_text(json.dumps(provenance(stage_seconds), indent=1))
    rebuild_report(out)


def provenance(timings: dict[str, float]) -> dict:
    import torch
    import transformers
    import trl

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit or None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "stage_seconds": {k: round(v, 2) for k, v in timings.items()},
    }


def read_csv_checked(
    path: Path, required: tuple[str, ...] = (), rows: bool = True, fields: bool = False, **read
) -> pd.DataFrame:
    """A CSV the harness wrote, or a one-line ReportError: missing, empty, header only, cut short, columns."""
    if not path.exists():
        raise ReportError(f"{path}: missing")
    text = path.read_text(errors="replace")
    if not text.strip():
        raise ReportError(f"{path}: empty")
    if not text.endswith("\n"):
        raise ReportError(f"{path}: cut short (the last row has no line end); the file is incomplete")
    try:
        frame = pd.read_csv(path, **read)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise ReportError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    if rows and frame.empty:
        raise ReportError(f"{path}: has a header but no rows")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ReportError(f"{path}: missing column(s) {', '.join(missing)}")
    if not fields:
        return frame
    with path.open(newline="") as f:  # a row cut mid-way has fewer fields than the header (numbers only:
        # free text such as completions may hold a lone carriage return that csv and pandas read apart)
        reader = csv.reader(f)
        width = len(next(reader))
        for line, row in enumerate(reader, 2):
            if row and len(row) != width:
                raise ReportError(f"{path}: line {line}: {len(row)} fields, the header has {width}")
    return frame


def read_saved(folder: Path):
    """Every file a report is built from, each checked; raises ReportError (one line) on the first problem."""
    suite_path = folder / "suite.yaml"
    if not suite_path.exists():
        raise ReportError(f"{suite_path}: missing (not a report folder written by `run`)")
    try:
        data = yaml.safe_load(suite_path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ReportError(f"{suite_path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{suite_path}: not a saved suite (a mapping of keys)")
    try:
        suite = Suite.model_validate(data)
    except ValidationError as err:
        raise ReportError(str(one_line(suite_path, err))) from None
    results = read_csv_checked(
        folder / "results.csv", ("arm", "seed", "split", "gold_reward", "budget"), fields=True
    )
    samples = read_csv_checked(
        folder / "samples.csv", ("arm", "seed", "split"), rows=False, keep_default_na=False, na_values=[""]
    )
    logs_path = folder / "training_logs.csv"
    logs = pd.DataFrame()
    if logs_path.exists() and logs_path.stat().st_size > 1:
        logs = read_csv_checked(logs_path, rows=False)
    failed_path = folder / FAILED_RUNS
    failed = (
        read_csv_checked(failed_path, rows=False, keep_default_na=False) if failed_path.exists() else None
    )
    prov_path = folder / "provenance.json"
    try:
        prov = json.loads(prov_path.read_text()) if prov_path.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{prov_path}: not valid JSON ({e})") from None
    if not isinstance(prov, dict):
        raise ReportError(f"{prov_path}: not a provenance record (a JSON object)")
    return suite, results, samples, logs, prov, failed


def rebuild_report(folder: Path) -> None:
    """Report.md and its plots from the saved files; nothing is written unless every file reads cleanly."""
    suite, results, samples, logs, prov, failed = read_saved(folder)
    out = folder / "plots"
    out.mkdir(exist_ok=True)
    arms = list(suite.arms)
    figures = {  # axis -> [(title, path or None)]; a figure without data is left out
        "objective": [
            ("Gold reward vs KL to the base model (ID prompts)", plots.gold_vs_kl(results, arms, out / "gold_vs_kl.png")),
            ("What each stage optimises", plots.training_objectives(logs, out / "training.png")),
            ("Reward–KL frontier", plots.frontier(results, arms, out / "frontier.png")),
            ("Over-optimisation", plots.overoptimisation(results, logs, arms, out / "overoptimisation.png")),
        ],
        "data": [
            ("Learning curves", plots.sweep_plot(results, arms, "grid.budget.units", "budget (annotation units, log scale)",
                                                "Gold reward vs annotation budget", out / "learning_curves.png",
                                                log_x=True, mark_crossover=True)),
            ("Learning curves by cost ratio", plots.learning_curves_by_cost(results, arms, out / "cost_ratio.png")),
            ("Robustness to label noise", plots.sweep_plot(results, arms, "grid.task.annotator.flip_rate",
                                                          "annotator flip rate", "Gold reward vs label noise",
                                                          out / "noise.png")),
            ("Annotator temperature", plots.sweep_plot(results, arms, "grid.task.annotator.temperature",
                                                      "Bradley–Terry temperature", "Gold reward vs annotator care",
                                                      out / "annotator_temperature.png")),
            ("Demonstrator quality", plots.sweep_plot(results, arms, "grid.task.demonstrator_quality",
                                                     "demonstrator quality", "Gold reward vs demonstrator quality",
                                                     out / "demonstrator_quality.png")),
        ],
        "generalisation": [
            ("Gold reward per arm, in and out of distribution", plots.gold_by_split(results, arms, out / "gold_by_arm.png")),
            ("Diversity vs quality", plots.diversity_vs_gold(results, arms, out / "diversity.png")),
        ],
    }  # fmt: skip
    claims = analysis.check_claims(results, logs)
    text = render_markdown(suite, results, samples, prov, figures, claims, failed)
    tmp = folder / ".report.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, folder / "report.md")


# -- tables ----------------------------------------------------------------------------------------------
def fmt_ci(values) -> str:
    mean, half, n = mean_ci(list(values))
    if n == 0 or math.isnan(mean):
        return "–"
    return f"{mean:.3f}" if n == 1 or math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def group_columns(results: pd.DataFrame) -> list[str]:
    return ["arm"] + [c for c in results.columns if c.startswith("grid.")]


MAIN_COLUMNS = [  # (metric, split): the main table; every other number is in results.csv
    ("gold_reward", "id"),
    ("gold_reward", "ood"),
    ("kl_to_base", "id"),
    ("proxy_reward", "id"),
    ("distinct_2", "id"),
    ("well_formed", "id"),
    ("mean_length", "id"),
]


def grid_heading(col: str) -> str:
    """`grid.arms.best_of_n.stages.best_of_n.n` -> `n`, `grid.budget.units` -> `units`."""
    return col.rsplit(".", 1)[-1]


def grid_cell(value) -> str:
    if pd.isna(value):
        return "–"
    return f"{value:g}" if isinstance(value, float) else str(value)


def main_table(results: pd.DataFrame, arms: list[str]) -> str:
    headings = {m: h for m, h, _ in METRICS}
    cols = [(m, s) for m, s in MAIN_COLUMNS if results[m].notna().any()]
    keys = group_columns(results)
    header = ["arm", *(grid_heading(c) for c in keys[1:]), "seeds"]
    header += [f"{headings[m]} {SPLIT_NAMES[s]}" for m, s in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups = results.groupby(keys, sort=False, dropna=False)
    for key, group in sorted(groups, key=lambda kv: _arm_order(kv[0], arms)):
        key = key if isinstance(key, tuple) else (key,)
        cells = [f"**{key[0]}**", *(grid_cell(k) for k in key[1:]), str(group["seed"].nunique())]
        cells += [fmt_ci(group.loc[group["split"] == s, m]) for m, s in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _arm_order(key, arms: list[str]):
    key = key if isinstance(key, tuple) else (key,)
    arm, rest = key[0], key[1:]
    numbers = tuple(float("inf") if pd.isna(v) else v for v in rest if isinstance(v, int | float))
    return (arms.index(arm) if arm in arms else len(arms), numbers, str(rest))


def data_table(suite: Suite, results: pd.DataFrame) -> str:
    lines = [
        "| arm | recipe | demonstration share | demonstrations | comparisons | units spent |",
        "|---|---|---|---|---|---|",
    ]
    cost = suite.budget.cost
    for name, arm in suite.arms.items():
        rows = results[results["arm"] == name]
        if rows.empty:
            continue
        d, c = int(rows["n_demonstrations"].iloc[0]), int(rows["n_comparisons"].iloc[0])
        recipe = " → ".join(["base", *arm.recipe])
        share = f"{default_share(arm):g}" if arm.recipe else "–"
        spent = d * cost.demonstration + c * cost.comparison
        lines.append(f"| {name} | {recipe} | {share} | {d} | {c} | {spent:g} |")
    return "\n".join(lines)


def rm_table(results: pd.DataFrame) -> str | None:
    rm = results[results["rm_accuracy"].notna()]
    if rm.empty:
        return None
    lines = [
        "| arm | RM accuracy ID | RM accuracy OOD | RM score ID | gold reward ID |",
        "|---|---|---|---|---|",
    ]
    for arm, group in rm.groupby("arm", sort=False):
        cells = [fmt_ci(group.loc[group["split"] == s, "rm_accuracy"]) for s in ("id", "ood")]
        cells += [fmt_ci(group.loc[group["split"] == "id", c]) for c in ("proxy_reward", "gold_reward")]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def examples_section(samples: pd.DataFrame, arms: list[str], per_arm: int) -> str:
    if samples.empty or per_arm == 0:
        return ""
    seed = samples["seed"].min()
    parts = []
    for split in ("id", "ood"):
        sub = samples[
            (samples["seed"] == seed) & (samples["split"] == split) & (samples["prompt_index"] == 0)
        ]
        if sub.empty:
            continue
        parts.append(f"**{SPLIT_NAMES[split]} prompt:** `{sub['prompt'].iloc[0]}`\n")
        parts.append("| arm | completion | gold |\n|---|---|---|")
        for arm in arms:
            rows = sub[sub["arm"] == arm].head(per_arm)
            if "grid.budget.units" in rows:
                rows = rows[rows["grid.budget.units"] == rows["grid.budget.units"].max()]
            for _, r in rows.iterrows():
                text = table_cell(str(r["completion"]).strip()) or "(empty)"
                parts.append(f"| {arm} | {text} | {r['gold_reward']:.2f} |")
        parts.append("")
    return "\n".join(parts)


# -- markdown --------------------------------------------------------------------------------------------
def table_cell(text: str) -> str:
    """Text that stays inside one markdown table cell: pipes escaped, line breaks shown as ⏎."""
    return " ⏎ ".join(line.strip() for line in text.replace("|", "\\|").splitlines())


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


def render_markdown(suite: Suite, results, samples, prov: dict, figures, claims, failed=None) -> str:
    arms = list(suite.arms)
    base = describe_base(suite)
    seeds = sorted(results["seed"].unique().tolist())
    cost = suite.budget.cost
    ann = suite.task.annotator
    budgets = sorted(results["budget"].unique().tolist())
    lines = [
        f"# Report: {suite.name}",
        "",
        suite.description.strip(),
        "",
        "## Setup",
        "",
        f"- **Task:** `{suite.task.name}` (task seed {suite.task.seed}); demonstrator quality "
        f"{suite.task.demonstrator_quality:g}; annotator: Bradley–Terry on the gold margin, temperature "
        f"{ann.temperature:g}, flip rate {ann.flip_rate:g}.",
        f"- **Base model (every arm starts here):** {base}.",
        f"- **Budget:** {', '.join(f'{b:g}' for b in budgets)} annotation units per arm; a demonstration costs "
        f"{cost.demonstration:g} units, a comparison {cost.comparison:g}.",
        f"- **Seeds:** {', '.join(map(str, seeds))} ({len(seeds)} per cell); tables show mean ± 95% t-interval "
        "over seeds.",
        f"- **Evaluation (same for every arm):** {suite.task.eval_prompts} ID and {suite.task.eval_prompts} OOD "
        f"prompts, {suite.eval.samples_per_prompt} samples each at temperature {suite.eval.temperature:g}, at most "
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
    lines += differences_section(results, arms)
    lines += axis_sections(results, arms, figures)
    lines += claims_section(claims, 0 if failed is None else len(failed))
    lines += ["## Example generations", "", examples_section(samples, arms, suite.eval.examples), ""]
    lines += [
        "## Provenance",
        "",
        f"Generated {prov.get('date')} from commit `{prov.get('git_commit')}` with torch {prov.get('torch')}, "
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


def axis_sections(results: pd.DataFrame, arms: list[str], figures: dict) -> list[str]:
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
    data_lines = analysis.data_needs_statements(results, arms)
    lines += [f"- {x}" for x in data_lines] or [
        "This suite sweeps no budget; see `experiments/data_needs.yaml`."
    ]
    lines += [""] + _figure_lines(figures["data"])
    lines += ["## Generalisation: in vs out of distribution, and diversity", ""]
    lines += [f"- {x}" for x in analysis.generalisation_statements(results, arms)]
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


def differences_section(results: pd.DataFrame, arms: list[str]) -> list[str]:
    """Each arm against a reference arm, paired by seed: which differences are significant."""
    ref = next((a for a in ("sft", "base") if a in arms), None)
    if ref is None:
        return []
    swept = any(c.startswith("grid.") for c in results.columns)
    keys_note = " (averaged over the swept settings)" if swept else ""
    rows = []
    for arm in arms:
        if arm == ref:
            continue
        cells = []
        for split in ("id", "ood"):
            d = paired_difference(
                analysis.per_seed(results, arm, "gold_reward", split),
                analysis.per_seed(results, ref, "gold_reward", split),
            )
            if d["n"] == 0:
                cells.append("–")
                continue
            mark = "**significant**" if d["significant"] else "not significant"
            cells.append(f"{analysis.fmt(d['mean'], d['half_width'])} ({mark})")
        rows.append(f"| {arm} − {ref} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [
        f"### Differences from {ref}, paired by seed",
        "",
        f"Gold reward of each arm minus {ref}'s on the same seeds{keys_note}: mean ± 95% t-interval of the "
        "paired differences; significant when the interval excludes zero.",
        "",
        "| difference | gold ID | gold OOD |",
        "|---|---|---|",
        *rows,
        "",
    ]
