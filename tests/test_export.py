"""`sft-vs-rlhf export`: a micro suite's runs written out as save_pretrained folders, datasets and cards."""

from __future__ import annotations

import json
import shutil
import textwrap
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from compare import export
from compare.cache import MARKER
from compare.cli import main
from compare.lm.loading import chain, load_policy, load_reward_model, stored_as_adapter
from compare.plan import plan_runs
from compare.stages.common import read_jsonl
from compare.suite import load_suite

# tests/test_end_to_end.py's MICRO with an arm per kind of export: a reward model (rm, best-of-n on the
# base model), binary labels (kto), a swept setting (dpo's beta) and LoRA stages chained on the base
MICRO = """
name: micro_export
description: micro suite for the export tests
task: {train_prompts: 64, eval_prompts: 4}
base:
  tiny: {n_layer: 1, n_head: 2, n_embd: 32, corpus_size: 1000, steps: 60, batch_size: 32}
budget: {units: 48, cost: {demonstration: 4, comparison: 1}}
stages:
  sft: {epochs: 1, batch_size: 8}
  rm: {epochs: 1, batch_size: 8}
  dpo: {epochs: 1, batch_size: 8}
  kto: {epochs: 1, batch_size: 8}
  best_of_n: {n: 2}
arms:
  base: {recipe: []}
  sft: {recipe: [sft]}
  dpo: {recipe: [dpo]}
  rm: {recipe: [rm]}
  best_of_n: {recipe: [rm, best_of_n]}
  kto: {recipe: [kto]}
  lora: {recipe: [sft, dpo], stages: {sft: {lora_r: 4}, dpo: {lora_r: 4}}}
grid: {seed: [0], arms.dpo.stages.dpo.beta: [0.1, 1.0]}
eval: {samples_per_prompt: 2, max_new_tokens: 16}
"""
BETA = ["--point", "arms.dpo.stages.dpo.beta=0.1"]


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    suite = root / "micro.yaml"
    suite.write_text(textwrap.dedent(MICRO))
    cache, report = root / "cache", root / "report"
    assert main(["run", str(suite), "--cache-dir", str(cache), "--out", str(report), "--jobs", "1"]) == 0
    runs = plan_runs(load_suite(report / "suite.yaml"))
    return SimpleNamespace(root=root, cache=cache, report=report, runs=runs)


def run_of(micro, arm: str, **point):
    (run,) = [r for r in micro.runs if r.arm == arm and all(r.point.get(k) == v for k, v in point.items())]
    return run


def export_arm(micro, arm: str, to, *extra: str, cache=None) -> int:
    argv = ["export", str(micro.report), "--arm", arm, "--seed", "0", *extra, "--to", str(to)]
    return main(argv + ["--cache-dir", str(cache or micro.cache)])


@pytest.fixture(scope="module")
def exported(micro):
    """Each arm the tests read, exported once: arm -> its folder."""
    folders = {}
    for arm, extra in (
        ("dpo", BETA),
        ("best_of_n", []),
        ("sft", []),
        ("kto", []),
        ("lora", []),
        ("base", []),
    ):
        folders[arm] = micro.root / f"out-{arm}"
        assert export_arm(micro, arm, folders[arm], *extra) == 0
    return folders


def cached(micro, stage) -> str:
    return str(micro.cache / stage.name)


def first_text(to) -> str:
    from datasets import load_from_disk

    for name, column in (("comparisons", "chosen"), ("demonstrations", "completion")):
        if (to / "data" / name).is_dir():
            row = load_from_disk(str(to / "data" / name))[0]
            return row["prompt"] + row[column]
    raise AssertionError("no data to take a text from")


def policy_logits(model, tokenizer, text: str) -> torch.Tensor:
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=ids["input_ids"]).logits


# -- the policy and reward model ----------------------------------------------------------------------------
def test_dpo_policy_loads_generates_and_is_the_cached_policy(micro, exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    to, run = exported["dpo"], run_of(micro, "dpo", **{"arms.dpo.stages.dpo.beta": 0.1})
    model = AutoModelForCausalLM.from_pretrained(to / "policy").eval()
    tokenizer = AutoTokenizer.from_pretrained(to / "policy")
    text = first_text(to)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > ids.shape[1]
    policy, policy_tokenizer = load_policy(cached(micro, run.eval.inputs["policy"]))
    assert run.eval.inputs["policy"].kind == "dpo"
    assert torch.equal(policy_logits(model, tokenizer, text), policy_logits(policy, policy_tokenizer, text))
    assert not (to / "reward_model").exists() and not (to / "data" / "demonstrations").exists()
    record = json.loads((to / "export.json").read_text())
    assert record["stages"]["policy"] == run.eval.inputs["policy"].name
    assert record["point"] == {"arms.dpo.stages.dpo.beta": 0.1}


def test_lora_policy_is_exported_merged(micro, exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    to, run = exported["lora"], run_of(micro, "lora")
    stage = run.eval.inputs["policy"]
    assert stored_as_adapter(cached(micro, stage)) and len(chain(cached(micro, stage))) == 3  # base, sft, dpo
    names = {p.name for p in (to / "policy").iterdir()}
    assert "adapter_config.json" not in names and "parent.json" not in names and "model.safetensors" in names
    model = AutoModelForCausalLM.from_pretrained(to / "policy").eval()
    assert not any("lora" in name for name, _ in model.named_parameters())
    tokenizer = AutoTokenizer.from_pretrained(to / "policy")
    policy, policy_tokenizer = load_policy(cached(micro, stage))
    text = first_text(to)
    assert torch.equal(policy_logits(model, tokenizer, text), policy_logits(policy, policy_tokenizer, text))
    assert "merged here into one full model" in (to / "policy" / "README.md").read_text()


def test_best_of_n_exports_the_policy_it_samples_and_its_reward_model(micro, exported):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    to, run = exported["best_of_n"], run_of(micro, "best_of_n")
    rm = AutoModelForSequenceClassification.from_pretrained(to / "reward_model").eval()
    tokenizer = AutoTokenizer.from_pretrained(to / "reward_model")
    cached_rm, cached_tokenizer = load_reward_model(cached(micro, run.eval.inputs["reward_model"]))
    text = first_text(to) + tokenizer.eos_token
    assert torch.equal(policy_logits(rm, tokenizer, text), policy_logits(cached_rm, cached_tokenizer, text))
    assert run.eval.inputs["policy"].kind == "base"
    card = (to / "policy" / "README.md").read_text()
    assert "trains no policy: this is the base model itself" in card and "best_of_n (n=2" in card
    rm_card = (to / "reward_model" / "README.md").read_text()
    assert "arm best_of_n" in rm_card and "| rm_accuracy |" in rm_card


def test_base_arm_exports_the_base_model_and_no_data(exported):
    to = exported["base"]
    assert sorted(p.name for p in to.iterdir()) == ["export.json", "policy", "suite.yaml"]
    card = (to / "policy" / "README.md").read_text()
    assert "Arm base trains no policy" in card and "bought no annotations" in card


def test_model_card_names_the_run_and_its_metrics(micro, exported):
    card = (exported["dpo"] / "policy" / "README.md").read_text()
    results = pd.read_csv(micro.report / "results.csv")
    row = results[
        (results["arm"] == "dpo")
        & (results["seed"] == 0)
        & (results["grid.arms.dpo.stages.dpo.beta"] == 0.1)
        & (results["split"] == "id")
    ]
    assert len(row) == 1
    assert f"| id | {row['gold_reward'].iloc[0]:.4f} | {row['kl_to_base'].iloc[0]:.4f} |" in card
    for needle in ("# micro_export: arm dpo, seed 0", "- seed: 0", "- arms.dpo.stages.dpo.beta: 0.1",
                   "micro suite for the export tests", "beta: 0.1", "built-in tiny GPT-2",
                   "run by sft-vs-rlhf", "pipeline_tag: text-generation"):  # fmt: skip
        assert needle in card


# -- the data ----------------------------------------------------------------------------------------------
def test_comparisons_are_the_cached_ones_and_train_dpo(micro, exported, tmp_path):
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    to, run = exported["dpo"], run_of(micro, "dpo", **{"arms.dpo.stages.dpo.beta": 0.1})
    data = load_from_disk(str(to / "data" / "comparisons"))
    assert (
        data.column_names == ["prompt", "chosen", "rejected"] and len(data) == run.bought["comparisons"] == 48
    )
    stage = run.eval.inputs["policy"].inputs["data"]
    rows = read_jsonl(micro.cache / stage.name / "comparisons.jsonl")
    assert data.to_list() == [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]
    model = AutoModelForCausalLM.from_pretrained(to / "policy")
    before = [p.detach().clone() for p in model.parameters()]
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=4,
                     report_to="none", save_strategy="no", use_cpu=True, learning_rate=1e-2)  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(to / "policy")
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    assert trainer.state.global_step == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_demonstrations_are_prompt_completion_rows_the_budget_bought(micro, exported):
    from datasets import load_from_disk

    run = run_of(micro, "sft")
    data = load_from_disk(str(exported["sft"] / "data" / "demonstrations"))
    assert data.column_names == ["prompt", "completion"]
    assert len(data) == run.bought["demonstrations"] == 12  # 48 units at 4 a demonstration
    lora = load_from_disk(str(exported["lora"] / "data" / "demonstrations"))
    assert len(lora) == run_of(micro, "lora").bought["demonstrations"] == 6  # half the budget
    assert len(load_from_disk(str(exported["lora"] / "data" / "comparisons"))) == 24


def test_kto_labels_are_prompt_completion_label_rows(micro, exported):
    from datasets import load_from_disk

    run = run_of(micro, "kto")
    data = load_from_disk(str(exported["kto"] / "data" / "labels"))
    assert data.column_names == ["prompt", "completion", "label"]
    assert data.features["label"].dtype == "bool"
    assert len(data) == run.bought["labels"] == 96  # 48 units at 0.5 a label
    assert set(data["label"]) == {True, False}


# -- refusals ----------------------------------------------------------------------------------------------
def only_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "arm, extra, needles",
    [
        ("nope", [], ["--arm 'nope'", "its arms: base, sft, dpo, rm, best_of_n, kto, lora"]),
        ("dpo", ["--seed", "7"], ["--seed 7", "its seeds: 0"]),
        ("dpo", [], ["2 runs at seed 0", f"{' '.join(BETA)}; --point arms.dpo.stages.dpo.beta=1.0"]),
        ("dpo", ["--point", "arms.dpo.stages.dpo.beta=0.5"], ["beta=0.5", "its points: --point"]),
        ("dpo", ["--point", "budget.units=48"], ["budget.units is not a grid key of arm dpo"]),
        ("sft", ["--point", "budget.units"], ["--point 'budget.units': expected KEY=VALUE"]),
    ],
)  # fmt: skip
def test_bad_choices_are_one_line_naming_the_choices(micro, tmp_path, capsys, arm, extra, needles):
    to = tmp_path / "out"
    argv = ["export", str(micro.report), "--arm", arm, "--seed", "0", *extra, "--to", str(to)]
    capsys.readouterr()
    assert main([*argv, "--cache-dir", str(micro.cache)]) == 2
    err = only_line(capsys)
    for needle in needles:
        assert needle in err
    assert not to.exists()


def test_not_a_report_folder(micro, tmp_path, capsys):
    for folder, needle in ((tmp_path, "not a report folder"), (tmp_path / "gone", "no such folder")):
        argv = ["export", str(folder), "--arm", "sft", "--seed", "0", "--to", str(tmp_path / "out")]
        assert main(argv) == 2
        assert needle in only_line(capsys) and not (tmp_path / "out").exists()


def test_stage_not_in_the_cache_says_to_run_the_suite(micro, tmp_path, capsys):
    empty = tmp_path / "cache"
    empty.mkdir()
    assert export_arm(micro, "sft", tmp_path / "out", cache=empty) == 2
    err = only_line(capsys)
    assert run_of(micro, "sft").eval.inputs["policy"].name in err and "sft-vs-rlhf run" in err
    assert not (tmp_path / "out").exists()


def test_adapter_whose_parent_is_gone_is_one_line(micro, tmp_path, capsys):
    run = run_of(micro, "lora")
    partial = tmp_path / "cache"  # the lora arm's policy and data, without the sft stage it is stored on
    for stage in (run.eval.inputs["policy"], *(s for s in export.data_sources(run)["comparisons"])):
        shutil.copytree(micro.cache / stage.name, partial / stage.name)
    demos = export.data_sources(run)["demonstrations"][0]
    shutil.copytree(micro.cache / demos.name, partial / demos.name)
    assert (partial / run.eval.inputs["policy"].name / MARKER).exists()
    assert export_arm(micro, "lora", tmp_path / "out", cache=partial) == 2
    err = only_line(capsys)
    assert run.eval.inputs["policy"].inputs["model"].name in err and "missing" in err
    assert not (tmp_path / "out").exists()


def test_existing_folder_is_refused_and_untouched(micro, tmp_path, capsys):
    to = tmp_path / "mine"
    to.mkdir()
    (to / "notes.txt").write_text("my notes")
    assert export_arm(micro, "sft", to) == 2
    assert f"--to {to}: exists and is not empty" in only_line(capsys)
    assert [p.name for p in to.iterdir()] == ["notes.txt"] and (to / "notes.txt").read_text() == "my notes"
    inside = micro.report / "exported"
    assert export_arm(micro, "sft", inside) == 2
    assert "inside the report folder" in only_line(capsys) and not inside.exists()


def test_empty_folder_is_used_and_no_temporary_folder_is_left(micro, tmp_path):
    to = tmp_path / "empty"
    to.mkdir()
    assert export_arm(micro, "rm", to) == 0
    assert (to / "policy" / "README.md").is_file() and (to / "reward_model" / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_failed_export_leaves_nothing(micro, tmp_path, monkeypatch):
    def fail(rows, out):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "save_dataset", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export_arm(micro, "sft", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_to_under_a_file_is_one_line(micro, capsys, tmp_path):
    """A --to whose parent is a file cannot be created: one line, exit 2, the file untouched."""
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    assert export_arm(micro, "sft", blocker / "out") == 2
    assert "cannot create it" in capsys.readouterr().err and blocker.read_text() == "mine"
