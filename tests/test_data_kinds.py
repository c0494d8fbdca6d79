"""A kind of feedback of the test's own: one `DataKind` declaration and its producer stage (plus the method
that trains on it) reach the planner, the budget split, the schema's cost model, preflight, a micro suite
and its report without an edit to any of them (compare/stages/spec.py:DataKind)."""

from __future__ import annotations

import random
import textwrap

import pandas as pd
import pytest

from compare import stages
from compare.cache import StageCache
from compare.lm.loading import load_policy
from compare.lm.sampling import sample
from compare.pipeline import run_suite
from compare.plan import plan_runs, stage_order
from compare.stages.common import make_task, read_jsonl, write_jsonl
from compare.stages.sft import SFTSettings, train_sft
from compare.stages.spec import DataKind, Memory, Role, StageSpec
from compare.suite import load_suite, schema

# An editor reads one sample of the policy and rewrites it as the demonstrator would: the arm pays for
# each edit, and trains on the edited answers. (What the edit is matters less here than that nothing but
# these declarations knows about it.)
EDITS = DataKind(
    name="edits",
    singular="edit",
    cost="edit",
    cost_default=2.0,
    cost_help="Annotation units one edit (a policy sample rewritten by the demonstrator) costs.",
    stage="edits",
    file="edits.jsonl",
    columns=("prompt", "completion"),
    trainers="SFTTrainer",
    reads="demos",  # the demonstrator's settings
    sampled=1,
)


def run_edits(params: dict, out, inputs, ctx) -> None:
    """The producer: one sample of the policy per bought edit, rewritten by the demonstrator."""
    task = make_task(params["task"], inputs)
    rng = random.Random(f"edits-{params['seed']}")
    prompts = [rng.choice(task.prompts("train")) for _ in range(params["n"])]
    model, tokenizer = load_policy(str(inputs["policy"]))
    drafts = sample(model, tokenizer, prompts, 1, params["max_new_tokens"], 1.0, seed=params["seed"])
    rows = [
        {"prompt": p, "draft": d, "completion": task.demonstrate(p, rng)}
        for p, d in zip(drafts.prompts, drafts.completions)
    ]
    write_jsonl(out / EDITS.file, rows)


def run_edit_ft(job, out, inputs, ctx) -> None:
    """The method: supervised fine-tuning on the edited answers."""
    rows = [{c: row[c] for c in EDITS.columns} for row in read_jsonl(inputs["data"] / EDITS.file)]
    train_sft(rows, job, out, inputs, ctx)


PRODUCER = StageSpec(kind="edits", version=1, run=run_edits)
METHOD = StageSpec(
    kind="edit_ft",
    version=1,
    run=run_edit_ft,
    description="SFT on edits of the policy's own samples.",
    settings=SFTSettings,
    role=Role.IMITATION,
    data=EDITS,
    strength="epochs",
    memory=Memory(trained=1, frozen=0, lora=1),
)


@pytest.fixture
def edits_declared():
    """EDITS, its producer and its method declared as a module of compare/stages would declare them."""
    added = [(stages.SPECS, "edits", PRODUCER), (stages.SPECS, "edit_ft", METHOD)]
    added += [(stages.RECIPE_STAGES, "edit_ft", METHOD), (stages.DATA_KINDS, "edits", EDITS)]
    for table, key, value in added:
        table[key] = value
    try:
        stages.check_kinds(stages.SPECS, stages.DATA_KINDS)
        schema.assemble()
        yield
    finally:
        for table, key, _ in added:
            table.pop(key, None)
        schema.assemble()


SUITE = """
name: edits
task: {train_prompts: 32, eval_prompts: 2}
base:
  tiny: {n_layer: 1, n_head: 2, n_embd: 16, corpus_size: 300, steps: 20, batch_size: 16}
budget: {units: 32, cost: {demonstration: 4, comparison: 1, edit: 2}}
stages:
  sft: {epochs: 1, batch_size: 8}
  dpo: {epochs: 1, batch_size: 8}
  edit_ft: {epochs: 1, batch_size: 8}
arms:
  base: {recipe: []}
  sft: {recipe: [sft]}
  edited: {recipe: [edit_ft]}
  mixed: {recipe: [sft, edit_ft, dpo]}
grid: {seed: [0]}
eval: {samples_per_prompt: 2, max_new_tokens: 8, examples: 1}
"""


def test_a_declared_kind_is_priced_planned_and_budgeted(tmp_path, edits_declared):
    path = tmp_path / "edits.yaml"
    path.write_text(textwrap.dedent(SUITE))
    suite = load_suite(path)
    assert suite.budget.cost.edit == 2  # the cost model has its field, documented
    assert schema.Cost.model_fields["edit"].description == EDITS.cost_help
    runs = {run.arm: run for run in plan_runs(suite)}
    assert runs["edited"].bought == {"demonstrations": 0, "comparisons": 0, "labels": 0, "edits": 16}
    # demonstrations take half (4 x 4 units); the other 16 units split evenly: 8 comparisons, 4 edits
    assert runs["mixed"].bought == {"demonstrations": 4, "comparisons": 8, "labels": 0, "edits": 4}
    (edits,) = [s for s in stage_order([runs["mixed"].eval]) if s.kind == "edits"]
    # sampled from the policy that the first stage training on edits starts from: the SFT policy
    assert edits.params["n"] == 4 and edits.inputs["policy"].kind == "sft"
    assert set(edits.params["task"]) == {"name", "seed", "train_prompts", "demonstrator_quality",
                                         "demonstrator_habit"}  # fmt: skip
    too_little = SUITE.replace("units: 32", "units: 1.5")
    path.write_text(textwrap.dedent(too_little).replace("sft: {recipe: [sft]}", "sft: {recipe: []}"))
    with pytest.raises(Exception, match=r"1\.5 units buy no edit for arm 'edited' \(cost\.edit 2\)"):
        load_suite(path)


@pytest.mark.slow
def test_a_declared_kind_runs_and_shows_in_the_report(tmp_path, edits_declared):
    path = tmp_path / "edits.yaml"
    path.write_text(textwrap.dedent(SUITE))
    out = tmp_path / "report"
    assert run_suite(path, out=out, cache=StageCache(tmp_path / "cache"), jobs=1) == 0
    results = pd.read_csv(out / "results.csv")
    bought = results.groupby("arm")["n_edits"].first()
    assert bought["edited"] == 16 and bought["mixed"] == 4 and bought["sft"] == 0
    assert any(folder.name.startswith("edits-") for folder in (tmp_path / "cache").iterdir())
    report = (out / "report.md").read_text()
    assert (
        "| arm | recipe | demonstration share | demonstrations | comparisons | labels | edits | units spent |"
        in report
    )
    assert "| edited | base → edit_ft | 0 | 0 | 0 | 0 | 16 | 32 |" in report
    assert "| mixed | base → sft → edit_ft → dpo | 0.5 | 4 | 8 | 0 | 4 | 32 |" in report
    assert "an edit 2." in report  # the cost model printed with every kind's price
