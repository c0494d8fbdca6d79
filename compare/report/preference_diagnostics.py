"""DPO's own diagnostics: the log-probabilities of the chosen and rejected answers over training, and the
implicit reward judged as a reward model beside the gold of what the policy generates.

Read from saved files only, so every cached run reports them: TRL's DPOTrainer logs `logps/chosen`,
`logps/rejected` (the policy's summed log-probabilities of each side of the step's pairs) and
`rewards/accuracies` (how often β·log π/π_ref ranks the chosen side higher) at every step, and the stage
keeps its log history (training_logs.csv). DPO, IPO and the other losses of the `dpo` stage, and online
DPO, all train with it.

Two signs of trouble the literature reports: the chosen side's log-probability falling while the margin
grows (both sides pushed down, the rejected faster: Rafailov et al.'s repository, issue 32; Pal et al.
2024, "Smaug"), and a policy that classifies pairs better while generating worse (Tang et al. 2024). For
the second, the implicit reward r(x, y) = β log π(y|x)/π_ref(y|x) is judged like a reward model
(`rm_accuracy`): on pairs of the policy's own samples of held-out evaluation prompts, labelled by the gold
reward (noise-free, ties skipped). Its reference must be known from samples.csv, so it is read for arms
whose recipe is the preference stage alone: their reference is the base model, and `logp_policy −
logp_base` of each sample is the implicit reward up to β (which does not change an ordering).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pandas as pd

from compare.metrics import mean_ci, pairwise_accuracy
from compare.report.roles import Roles
from compare.report.series import summary
from compare.report.stats import against_zero
from compare.report.verdicts import Claim, decide, missing, reading
from compare.stages import RECIPE_STAGES, Role

CHOSEN, REJECTED, ACCURACY = "logps/chosen", "logps/rejected", "rewards/accuracies"
KEY = "dpo_chosen_falls"
TEXT = "The chosen responses' log-probability falls during DPO training (both sides pushed down)."
WINDOW = 0.1  # the start and the end of training: the first and last 10% of logged steps (at least one)


def preference_arms(logs: pd.DataFrame, roles: Roles) -> list[str]:
    """The arms whose training logged DPO's log-probabilities (DPO, IPO, online DPO, ...), suite order."""
    if logs.empty or CHOSEN not in logs:
        return []
    logged = set(logs.loc[logs[CHOSEN].notna(), "arm"])
    return [a for a in roles.names if a in logged]


def _rows(logs: pd.DataFrame, arm: str) -> pd.DataFrame:
    return logs[(logs["arm"] == arm) & logs[CHOSEN].notna()]


def start_end(logs: pd.DataFrame, arm: str, column: str) -> dict[int, tuple[float, float]]:
    """{seed: (mean of `column` over the first WINDOW of logged steps, over the last)}: batches differ
    from step to step, so a window rather than a single step."""
    out = {}
    for seed, rows in _rows(logs, arm).groupby("seed"):
        values = rows.sort_values("step")[column].dropna().to_numpy(dtype=float)
        if len(values) < 2:
            continue
        w = max(1, int(len(values) * WINDOW))
        out[int(seed)] = (float(values[:w].mean()), float(values[-w:].mean()))
    return out


def implicit_reward_accuracy(samples: pd.DataFrame | None, arm: str, split: str = "id") -> dict[int, float]:
    """{seed: accuracy} of log π(y)/π_base(y) as a scorer on pairs (0, 1), (2, 3), ... of the arm's own
    samples of each prompt, labelled by the gold reward (the pairs `rm_accuracy` uses)."""
    if samples is None or samples.empty or not {"logp_policy", "logp_base"} <= set(samples.columns):
        return {}
    rows = samples[(samples["arm"] == arm) & (samples["split"] == split)]
    out = {}
    for seed, group in rows.groupby("seed"):
        group = group.sort_values(["prompt_index", "sample_index"])
        first = group[group["sample_index"] % 2 == 0]
        second = group[group["sample_index"] % 2 == 1].assign(sample_index=lambda g: g["sample_index"] - 1)
        both = first.merge(second, on=["prompt_index", "sample_index"], suffixes=("_a", "_b"))
        if both.empty:
            continue
        score = both["logp_policy_a"] - both["logp_base_a"], both["logp_policy_b"] - both["logp_base_b"]
        acc = pairwise_accuracy(
            list(score[0]), list(score[1]), list(both["gold_reward_a"]), list(both["gold_reward_b"])
        )
        if not math.isnan(acc):
            out[int(seed)] = acc
    return out


def reference_is_base(roles: Roles, arm: str) -> bool:
    """The arm's recipe is one preference stage, which starts from the base model: its reference."""
    recipe = roles.arms[arm].recipe if arm in roles.arms else ()
    return len(recipe) == 1 and RECIPE_STAGES[recipe[0]].role is Role.PREFERENCE


def table(results: pd.DataFrame, samples, logs: pd.DataFrame, roles: Roles) -> str | None:
    """One row per arm that trained with a DPO loss: the chosen and rejected log-probabilities at the start
    and end of training, the training pairs' accuracy at the end, the implicit reward's accuracy on held-out
    pairs and the ID gold of the generations; mean ± 95% interval over seeds."""
    arms = preference_arms(logs, roles)
    if not arms:
        return None
    lines = [
        "| arm | log p(chosen) start → end | log p(rejected) start → end | training pairs' accuracy (end) "
        "| implicit-reward accuracy, held-out pairs | gold ID |",
        "|---|---|---|---|---|---|",
    ]
    for arm in arms:
        cells = [f"**{arm}**"]
        for column in (CHOSEN, REJECTED):
            ends = start_end(logs, arm, column)
            cells.append(
                f"{_ci([s for s, _ in ends.values()])} → {_ci([e for _, e in ends.values()])}"
                if ends
                else "–"
            )
        acc = start_end(logs, arm, ACCURACY) if ACCURACY in logs else {}
        cells.append(_ci([e for _, e in acc.values()]) if acc else "–")
        held = implicit_reward_accuracy(samples, arm) if reference_is_base(roles, arm) else {}
        cells.append(_ci(list(held.values())) if held else "–")
        gold = (
            results[(results["arm"] == arm) & (results["split"] == "id")]
            .groupby("seed")["gold_reward"]
            .mean()
        )
        cells.append(_ci(gold.tolist()))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ci(values) -> str:
    mean, half, n = mean_ci(list(values))
    if n == 0:
        return "–"
    return f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def claim(logs: pd.DataFrame, roles: Roles) -> Claim:
    """Decided on the DPO arm (`Roles.dpo`) by the change of log p(chosen) from the start to the end of
    training, per seed, against 0 (`decide`): supported when it falls significantly, contradicted when it
    rises significantly."""
    arm = roles.dpo
    if arm is None or arm not in preference_arms(logs, roles):
        return missing(KEY, TEXT, "needs a DPO arm with its training log")
    ends = start_end(logs, arm, CHOSEN)
    change = {s: e - b for s, (b, e) in ends.items()}
    d = against_zero(change)
    rejected = start_end(logs, arm, REJECTED)
    evidence = (
        f"log p(chosen) end − start {summary(change)}; log p(rejected) end − start "
        f"{summary({s: e - b for s, (b, e) in rejected.items()})} (first and last {WINDOW:.0%} of steps)"
    )
    read = reading(d, f"{arm}'s log p(chosen) ends", "above", "below", "where it started")
    decision = decide(d, positive_supports=False)
    effect = replace(d, mean=-d.mean)  # positive where the claim predicts it: a fall
    return Claim(KEY, TEXT, decision.verdict, evidence, reading=read, compared=f"DPO, here: {arm}",
                 p_value=decision.p_value, effect=effect)  # fmt: skip


def figure(logs: pd.DataFrame, roles: Roles, path: Path) -> Path | None:
    """log p(chosen) and log p(rejected) over training steps (mean over seeds), one panel per arm that
    trained with a DPO loss; the training pairs' accuracy on a second axis."""
    from compare.report.canvas import panels, save

    arms = preference_arms(logs, roles)
    if not arms:
        return None
    fig, axes = panels(len(arms), 4.2, 3.0)
    for ax, arm in zip(axes, arms):
        rows = _rows(logs, arm)
        means = rows.groupby("step")[[c for c in (CHOSEN, REJECTED, ACCURACY) if c in rows]].mean()
        ax.plot(means.index, means[CHOSEN], label="log p(chosen)", color="tab:green")
        ax.plot(means.index, means[REJECTED], label="log p(rejected)", color="tab:red")
        if ACCURACY in means and means[ACCURACY].notna().any():
            twin = ax.twinx()
            smooth = means[ACCURACY].rolling(max(1, len(means) // 10), min_periods=1).mean()
            twin.plot(means.index, smooth, color="tab:gray", lw=1, ls=":", label="pairs' accuracy")
            twin.set_ylim(0, 1.05)
            twin.tick_params(labelsize="small")
        ax.set_title(roles.label(arm), fontsize="medium")
        ax.set_xlabel("step")
    axes[0].set_ylabel("summed log p (mean over seeds)")
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(matplotlib_line())
    labels.append("training pairs' accuracy (right axis)")
    fig.legend(handles, labels, fontsize="small", loc="upper center", ncol=3, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle("DPO: log p of the chosen and rejected answers over training", fontsize="medium")
    return save(fig, path)


def matplotlib_line():
    from matplotlib.lines import Line2D

    return Line2D([], [], color="tab:gray", lw=1, ls=":")
