"""The report: tables and plots built only from the files a run saved, so it can be rebuilt at will.

A report folder holds `results.csv` (one row per run and split), `samples.csv` (one row per sample),
`training_logs.csv`, `suite.yaml` (the resolved suite), `provenance.json`, `report.md` and `plots/`.
"""

from __future__ import annotations

import datetime
import json
import math
import platform
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from compare.config import Suite, default_share  # noqa: E402
from compare.metrics import mean_ci  # noqa: E402

SPLIT_NAMES = {"id": "ID", "ood": "OOD"}
LOSS_NAMES = {  # what each training stage minimises
    "sft": "NLL of demonstrations",
    "preferred_ft": "NLL of chosen responses",
    "dpo": "DPO loss",
    "rm": "Bradley–Terry loss",
    "ppo": "PPO loss (policy + value)",
    "rloo": "RLOO loss",
}
METRICS = [  # column, heading, higher is better (None: neither)
    ("gold_reward", "gold reward", True),
    ("kl_to_base", "KL to base", None),
    ("proxy_reward", "RM score", True),
    ("distinct_2", "distinct-2", True),
    ("mean_length", "length", None),
    ("well_formed", "well-formed", True),
]


def write_report(out: Path, suite: Suite, results, samples, logs, timings: dict[str, float]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / "results.csv", index=False)
    samples.to_csv(out / "samples.csv", index=False)
    logs.to_csv(out / "training_logs.csv", index=False)
    (out / "suite.yaml").write_text(yaml.safe_dump(suite.model_dump(), sort_keys=False))
    (out / "provenance.json").write_text(json.dumps(provenance(timings), indent=1))
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


def rebuild_report(folder: Path) -> None:
    suite = Suite.model_validate(yaml.safe_load((folder / "suite.yaml").read_text()))
    results = pd.read_csv(folder / "results.csv")
    samples = pd.read_csv(folder / "samples.csv", keep_default_na=False, na_values=[""])
    logs_path = folder / "training_logs.csv"
    logs = pd.read_csv(logs_path) if logs_path.exists() and logs_path.stat().st_size > 1 else pd.DataFrame()
    prov = json.loads((folder / "provenance.json").read_text())
    plots = folder / "plots"
    plots.mkdir(exist_ok=True)
    arms = list(suite.arms)
    figures = [
        (
            "Gold reward per arm, in and out of distribution",
            plot_gold_by_split(results, arms, plots / "gold_by_arm.png"),
        ),
        (
            "Gold reward vs KL to the base model (ID prompts)",
            plot_gold_vs_kl(results, arms, plots / "gold_vs_kl.png"),
        ),
    ]
    if not logs.empty:
        figures.append(
            ("What each stage optimises: its training loss", plot_training(logs, plots / "training.png"))
        )
    text = render_markdown(suite, results, samples, prov, figures)
    (folder / "report.md").write_text(text)


# -- tables ----------------------------------------------------------------------------------------------
def fmt_ci(values) -> str:
    mean, half, n = mean_ci(list(values))
    if n == 0 or math.isnan(mean):
        return "–"
    return f"{mean:.3f}" if n == 1 or math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def group_columns(results: pd.DataFrame) -> list[str]:
    return ["arm"] + [c for c in results.columns if c.startswith("grid.")]


def main_table(results: pd.DataFrame, arms: list[str]) -> str:
    cols = [(m, h) for m, h, _ in METRICS if results[m].notna().any()]
    header = ["arm", *(c for c in group_columns(results)[1:]), "seeds"]
    header += [f"{h} {SPLIT_NAMES[s]}" for m, h in cols for s in ("id", "ood")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keys = group_columns(results)
    for key, group in sorted(results.groupby(keys, sort=False), key=lambda kv: _arm_order(kv[0], arms)):
        key = key if isinstance(key, tuple) else (key,)
        cells = [f"**{key[0]}**", *(str(k) for k in key[1:]), str(group["seed"].nunique())]
        for m, _ in cols:
            for split in ("id", "ood"):
                cells.append(fmt_ci(group.loc[group["split"] == split, m]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _arm_order(key, arms: list[str]):
    arm = key[0] if isinstance(key, tuple) else key
    return (arms.index(arm) if arm in arms else len(arms), str(key))


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
                text = str(r["completion"]).strip().replace("|", "\\|") or "(empty)"
                parts.append(f"| {arm} | {text} | {r['gold_reward']:.2f} |")
        parts.append("")
    return "\n".join(parts)


# -- plots -----------------------------------------------------------------------------------------------
def _arm_means(results: pd.DataFrame, arms: list[str], metric: str, split: str):
    rows = []
    for arm in arms:
        vals = results.loc[(results["arm"] == arm) & (results["split"] == split), metric]
        mean, half, n = mean_ci(list(vals))
        rows.append((arm, mean, 0.0 if math.isnan(half) else half, n))
    return rows


def plot_gold_by_split(results: pd.DataFrame, arms: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(arms) + 2), 4))
    width = 0.38
    for j, split in enumerate(("id", "ood")):
        stats = _arm_means(results, arms, "gold_reward", split)
        xs = [i + (j - 0.5) * width for i in range(len(arms))]
        ax.bar(
            xs, [s[1] for s in stats], width, yerr=[s[2] for s in stats], capsize=3, label=SPLIT_NAMES[split]
        )
    ax.set_xticks(range(len(arms)), arms, rotation=20)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("gold reward (mean ± 95% CI over seeds)")
    ax.set_title("Gold reward per arm: in-distribution vs out-of-distribution prompts")
    ax.legend(title="eval prompts")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_gold_vs_kl(results: pd.DataFrame, arms: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    gold = _arm_means(results, arms, "gold_reward", "id")
    kl = _arm_means(results, arms, "kl_to_base", "id")
    for (arm, g, gh, _), (_, k, kh, _) in zip(gold, kl):
        ax.errorbar(k, g, xerr=kh, yerr=gh, fmt="o", capsize=3, label=arm)
        ax.annotate(arm, (k, g), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("KL(policy ‖ base), nats per completion (sampled)")
    ax.set_ylabel("gold reward (ID)")
    ax.set_title("What each arm buys with its distance from the base model")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_training(logs: pd.DataFrame, path: Path) -> Path:
    logs = logs[logs["loss"].notna()] if "loss" in logs else logs.iloc[0:0]
    arms = list(dict.fromkeys(logs["arm"]))
    fig, axes = plt.subplots(1, max(1, len(arms)), figsize=(3.2 * max(1, len(arms)), 3), squeeze=False)
    for ax, arm in zip(axes[0], arms):
        for stage, group in logs[logs["arm"] == arm].groupby("stage", sort=False):
            curve = group.groupby("step")["loss"].mean()
            ax.plot(curve.index, curve.values, label=LOSS_NAMES.get(stage, stage))
        ax.set_title(arm, fontsize=9)
        ax.set_xlabel("optimiser step")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("training loss (mean over seeds)")
    fig.suptitle("What each arm's training stages minimise", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- markdown --------------------------------------------------------------------------------------------
def render_markdown(suite: Suite, results, samples, prov: dict, figures) -> str:
    arms = list(suite.arms)
    base = suite.base.model or (
        f"built-in tiny GPT-2 ({suite.base.tiny.n_layer} layers, {suite.base.tiny.n_embd} hidden, "
        f"pretrained {suite.base.tiny.steps} steps on the task corpus)"
    )
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
    for title, path in figures:
        lines += [f"### {title}", "", f"![{title}](plots/{path.name})", ""]
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
