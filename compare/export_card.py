"""The model cards `sft-vs-rlhf export` writes beside an exported model (`policy/README.md`,
`reward_model/README.md`): what the model is, the suite and the run's resolved settings, its metrics
from the report's results.csv, the base model and the provenance (docs/export.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compare import __version__


@dataclass
class Located:
    """The run to export and everything about it that the cards need."""

    report: Path
    run: Any  # compare.plan.Run
    results: Any  # its rows of results.csv (a DataFrame, one row per split)
    provenance: dict
    policy: Any  # the Stage whose model the arm samples
    reward_model: Any  # the arm's reward model Stage, or None
    data: dict[str, list]  # exported dataset name -> the stages holding its rows, inputs first


# results.csv columns shown on the cards, where the run has them, and what each is
METRICS = {
    "gold_reward": "the task's true reward",
    "kl_to_base": "KL(π ‖ π_base) on the evaluation samples",
    "forward_kl_train": "KL(π_base ‖ π) on training prompts (forgetting)",
    "proxy_reward": "the arm's reward model's score",
    "rm_accuracy": "the reward model's agreement with the gold reward on pairs of the policy's samples",
    "distinct_2": "distinct bigrams among the samples (diversity)",
    "self_bleu_across": "self-BLEU across prompts (lower = more diverse)",
    "well_formed": "share of well-formed samples",
    "mean_length": "mean completion length in tokens",
}
POLICY_METRICS = tuple(k for k in METRICS if k != "rm_accuracy")
RM_METRICS = ("rm_accuracy", "proxy_reward", "gold_reward")


# -- the parts of a card ---------------------------------------------------------------------------------------
def _number(value: Any) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "–" if math.isnan(value) else f"{value:.4f}"


def metrics_table(rows, columns: tuple[str, ...]) -> list[str]:
    """A markdown table of the run's results.csv rows (one per split) and what each column is."""
    shown = [c for c in columns if c in rows and rows[c].notna().any()]
    if rows.empty or not shown:
        return ["No row of the report's results.csv is this run's (did it fail?)."]
    lines = ["| split | " + " | ".join(shown) + " |", "|---" * (len(shown) + 1) + "|"]
    for _, row in rows.iterrows():
        lines.append(f"| {row['split']} | " + " | ".join(_number(row[c]) for c in shown) + " |")
    return lines + ["", "; ".join(f"{c}: {METRICS[c]}" for c in shown) + "."]


def base_text(base) -> str:
    if base.package:
        return f"the GGUF model that the Python package `{base.package}` ships"
    if base.model:
        return f"`{base.model}`" + (f" (GGUF file `{base.gguf_file}`)" if base.gguf_file else "")
    tiny = ", ".join(f"{k}={v}" for k, v in base.tiny.model_dump().items())
    return f"the harness's built-in tiny GPT-2, pretrained on the task's corpus ({tiny})"


def policy_text(found: Located) -> str:
    """What the exported policy is, for the card: trained by which stages, or why untrained."""
    from compare.stages import RECIPE_STAGES, Produces

    run, arm = found.run, found.run.suite.arms[found.run.arm]
    trained = [k for k in arm.recipe if RECIPE_STAGES[k].produces is Produces.POLICY]
    selection = [k for k in arm.recipe if RECIPE_STAGES[k].produces is Produces.SAMPLING]
    if trained:
        text = f"The policy trained by the arm's stages {' → '.join(trained)}, from the base model."
    else:
        text = f"Arm {run.arm} trains no policy: this is the base model itself, which the arm samples."
    for kind in selection:
        own = ", ".join(f"{k}={v}" for k, v in getattr(_settings(run), kind).model_dump().items())
        text += (
            f" The arm's answers are not this model's plain samples: its last stage, {kind} ({own}: "
            f"{RECIPE_STAGES[kind].description.rstrip('.')}), picks among them with the reward model "
            "exported beside it (`../reward_model/`)."
        )
    return text


def _settings(run):
    from compare.plan import arm_settings

    return arm_settings(run.suite, run.suite.arms[run.arm])


def model_card(found: Located, part: str, counts: dict[str, int], exported: str, folders: int) -> str:
    """The README.md of `policy/` or `reward_model/`; `folders`: how many cache folders its model was
    stored in (more than one: a LoRA adapter chain, merged here)."""
    import yaml

    from compare.lm.external import is_local
    from compare.plan import default_share
    from compare.stages import DATA_KINDS, SPECS  # the exported data's columns, beside their stages

    run, suite = found.run, found.run.suite
    arm = suite.arms[run.arm]
    policy = part == "policy"
    stage = found.policy if policy else found.reward_model
    base = suite.base
    meta = {
        "library_name": "transformers",
        "pipeline_tag": "text-generation" if policy else "text-classification",
        "tags": ["sft-vs-rlhf", *arm.recipe] + ([] if policy else ["reward-model"]),
    }
    if base.model and not base.gguf_file and not is_local(base.model):
        meta["base_model"] = base.model
    point = {k: v for k, v in run.point.items() if k != "seed"}
    recipe = {
        "recipe": arm.recipe,
        "demonstration_share": default_share(arm),
        "budget": suite.budget.model_dump(),
        "bought": dict(run.bought),
        "stages": {k: getattr(_settings(run), k).model_dump() for k in arm.recipe},
    }
    prov = found.provenance
    title = "policy" if policy else "reward model"
    where = "".join(f" {k}={v}" for k, v in point.items())
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).strip(),
        "---",
        "",
        f"# {suite.name}: arm {run.arm}, seed {run.seed}{where} ({title})",
        "",
        f"Exported by sft-vs-rlhf from the report `{found.report}` (`sft-vs-rlhf export`, docs/export.md).",
        "",
        "## What this is",
        "",
    ]
    if policy:
        lines.append(policy_text(found))
    else:
        data = SPECS[stage.kind].data
        lines.append(
            f"The reward model of arm {run.arm} (stage {stage.kind}), a scalar-head model trained on "
            f"{run.bought[data.name]} {data.name} with TRL's RewardTrainer (Bradley–Terry loss)."
        )
    lines += [
        "",
        f"From stage `{stage.name}` of the stage cache, "
        + (
            f"stored there as a chain of {folders - 1} LoRA adapter(s) on full weights, merged here into "
            "one full model (no adapter to apply)."
            if folders > 1
            else "stored there as full weights, as here."
        ),
        "",
        "## Suite",
        "",
        f"`{suite.name}`: {suite.description.strip() or '(no description)'}",
        "",
        f"Task `{suite.task.name}`; the base model is {base_text(base)}.",
        "",
        "## Recipe and settings (as resolved for this run)",
        "",
        "```yaml",
        yaml.safe_dump(recipe, sort_keys=False).strip(),
        "```",
        "",
        "## Grid point and seed",
        "",
        f"- seed: {run.seed}",
        *[f"- {k}: {v}" for k, v in point.items()],
        "",
        "## Metrics (the report's results.csv)",
        "",
        *metrics_table(found.results, POLICY_METRICS if policy else RM_METRICS),
        "",
        "## Data",
        "",
    ]
    if counts:
        for name, n in counts.items():
            kind = DATA_KINDS[name]
            lines.append(f"- `../data/{name}`: {n} rows ({', '.join(kind.columns)}; {kind.trainers})")
    else:
        lines.append("The arm bought no annotations offline (nothing under `../data/`).")
    lines += [
        "",
        "## Provenance",
        "",
        f"- run by sft-vs-rlhf {prov.get('sft_vs_rlhf', '?')}, commit {prov.get('git_commit') or '?'}, "
        f"on {prov.get('date', '?')} (torch {prov.get('torch', '?')}, transformers "
        f"{prov.get('transformers', '?')}, trl {prov.get('trl', '?')})",
        f"- exported by sft-vs-rlhf {__version__} on {exported}",
        "",
        "## Loading",
        "",
        "```python",
    ]
    if policy:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            'tokenizer = AutoTokenizer.from_pretrained("policy")',
            'model = AutoModelForCausalLM.from_pretrained("policy")',
            "# prompts are the task's plain text (no chat template); a completion continues the prompt",
        ]
    else:
        lines += [
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
            "",
            'tokenizer = AutoTokenizer.from_pretrained("reward_model")',
            'model = AutoModelForSequenceClassification.from_pretrained("reward_model")',
            "# scored as trained: prompt + completion + EOS, read at the last token",
            "ids = tokenizer(prompt + completion + tokenizer.eos_token, add_special_tokens=False, "
            'return_tensors="pt")',
            "score = model(**ids).logits[0, 0]",
        ]
    lines += ["```", ""]
    return "\n".join(lines)


# -- the command -------------------------------------------------------------------------------------------
