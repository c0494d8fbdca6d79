"""The methods of issue 12: GRPO, KTO on thumbs labels, online DPO, rejection-sampling FT, DPO's family.

Three tiers: pure functions and planning against hand-computed values; a smoke test per stage on tiny
models built in the tests (loss finite, parameters changed, one property of the method); a micro suite
with every new method, end to end.
"""

from __future__ import annotations

import json
import math
import random
import textwrap

import pandas as pd
import pytest
import torch
import yaml

from compare.cli import main
from compare.lm.loading import load_policy, save_model
from compare.lm.sampling import sample
from compare.lm.tiny import build_word_tokenizer, pretrain, tiny_gpt2
from compare.oracle import View, thumbs_reference, thumbs_up
from compare.plan import build_run, split_budget, stage_order
from compare.runner import run_stage
from compare.stages import RECIPE_STAGES, Job, grpo, kto, online_dpo, rs_ft
from compare.stages.common import Context, read_jsonl, write_jsonl
from compare.stages.data import COMPARISONS as C
from compare.stages.data import DEMONSTRATIONS as D
from compare.stages.data import LABELS as L
from compare.stages.dpo import DPOSettings
from compare.stages.grpo import GRPOSettings
from compare.stages.kto import KTOSettings
from compare.stages.online_dpo import OnlineDPOSettings, rounds_of
from compare.stages.rs_ft import RSFTSettings, best_of_groups
from compare.suite.errors import SuiteError
from compare.suite.schema import Cost, Suite
from compare.tasks.arithmetic import Arithmetic
from compare.tasks.reviews import Reviews

CTX = Context()
ANNOTATOR = {"temperature": 0.25, "flip_rate": 0.0}
TASK = {"name": "reviews", "seed": 0, "train_prompts": 64, "eval_prompts": 8}
LABELLED_TASK = {**TASK, "annotator": ANNOTATOR}


# -- tier 1: pure functions, the annotator's binary mode, budgets, planning ------------------------------------
def test_online_dpo_splits_its_labels_into_rounds():
    assert rounds_of(10, 4) == [3, 3, 2, 2]
    assert rounds_of(8, 4) == [2, 2, 2, 2]
    assert rounds_of(5, 1) == [5]
    with pytest.raises(ValueError, match="3 labels cannot be split into 4 rounds"):
        rounds_of(3, 4)


def test_best_of_groups_keeps_each_groups_highest_score():
    assert best_of_groups([0.1, 0.9, 0.5, 0.2, 0.2, -1.0], 3) == [1, 3]
    assert best_of_groups([1.0, 1.0], 2) == [0]  # the first on ties


def test_thumbs_reference_is_the_mean():
    assert thumbs_reference([3.0, -1.0, 1.0]) == 1.0
    assert thumbs_reference([1.0, 1.0, 1.0, -1.0]) == 0.5  # below the top, where a median would sit
    with pytest.raises(ValueError):
        thumbs_reference([])


def test_thumbs_up_is_bradley_terry_against_the_reference_then_flips():
    rng = random.Random(0)
    careful = {"temperature": 1e-3, "flip_rate": 0.0}
    assert thumbs_up(0.6, View(), 0.5, careful, rng) and not thumbs_up(0.4, View(), 0.5, careful, rng)
    # P(up) = sigmoid((gold - reference) / T) = sigmoid(1) = 0.7311 at T = 1; a flip rate of 0.2 makes it
    # 0.7311 * 0.8 + 0.2689 * 0.2 = 0.6387
    for flip, expected in ((0.0, 0.7311), (0.2, 0.6387), (0.5, 0.5)):
        who = {"temperature": 1.0, "flip_rate": flip}
        ups = sum(thumbs_up(1.0, View(), 0.0, who, rng) for _ in range(40000))
        assert ups / 40000 == pytest.approx(expected, abs=0.01)
    # a labeller with a length bias sees a long answer as better than it is
    biased = {"temperature": 1e-3, "flip_rate": 0.0, "length_bias": 1.0}
    assert thumbs_up(0.4, View(length=0.2), 0.5, biased, rng)


def test_budget_buys_labels_at_their_cost():
    cost = Cost(demonstration=4, comparison=1, label=0.5)
    assert Cost().label == 0.5  # the default: half a comparison
    assert split_budget(48, cost, 0.0, [L]) == {"labels": 96}
    assert split_budget(48, cost, 0.5, [D, L]) == {"demonstrations": 6, "labels": 48}
    assert split_budget(48, cost, 0.0, [C, L]) == {"comparisons": 24, "labels": 48}  # half the units each
    # as before labels existed
    assert split_budget(48, cost, 0.5, [D, C]) == {"demonstrations": 6, "comparisons": 24}


def test_arithmetic_verifier_is_exact_answers_only():
    task = Arithmetic(train_prompts=8, eval_prompts=4)
    prompt = "add 4 7 + 3 8 ="
    rewards = task.verifier_rewards([prompt] * 4, [" 8 5", " 8 4", " 8 5 1", ""])
    assert rewards == [1.0, 0.0, 0.0, 0.0]
    assert task.gold_reward(prompt, " 8 4") == 0.5  # the gold reward keeps its partial credit
    assert Reviews(train_prompts=8, eval_prompts=4).verifier_rewards(["a"], ["b"]) is None  # no verifier


def suite(**changes) -> Suite:
    data = {
        "name": "t",
        "task": {"name": "arithmetic", "train_prompts": 64, "eval_prompts": 4},
        "budget": {"units": 48, "cost": {"demonstration": 4, "comparison": 1, "label": 0.5}},
        "arms": {
            "kto": {"recipe": ["kto"]},
            "online_dpo": {"recipe": ["online_dpo"]},
            "grpo": {"recipe": ["rm", "grpo"]},
            "grpo_verifier": {"recipe": ["grpo"], "stages": {"grpo": {"reward": "verifier"}}},
            "rs_ft": {"recipe": ["rm", "rs_ft"]},
            "ipo": {"recipe": ["dpo"], "stages": {"dpo": {"loss_type": "ipo"}}},
            "dpo": {"recipe": ["dpo"]},
        },
    }
    data.update(changes)
    return Suite.model_validate(data)


def test_plan_wires_each_method():
    s = suite()
    runs = {arm: build_run(s, arm, {"seed": 0}) for arm in s.arms}
    stages = {arm: {st.kind: st for st in stage_order([r.eval])} for arm, r in runs.items()}
    # KTO trains on binary labels sampled from its start: 48 units / 0.5 = 96 labels
    assert runs["kto"].bought == {"demonstrations": 0, "comparisons": 0, "labels": 96}
    assert stages["kto"]["kto"].inputs["data"].kind == "labels"
    assert stages["kto"]["labels"].params["n"] == 96
    # online DPO is given the prompts of its 48 comparisons, and the annotator, instead of labelled pairs
    assert runs["online_dpo"].bought["comparisons"] == 48 and "comparisons" not in stages["online_dpo"]
    odpo = stages["online_dpo"]["online_dpo"]
    assert odpo.inputs["data"].kind == "prompts" and odpo.inputs["data"].params["n"] == 48
    assert odpo.params["task"]["annotator"]["temperature"] > 0
    # GRPO takes the reward model only when it is rewarded by one
    assert "reward_model" in stages["grpo"]["grpo"].inputs
    assert "reward_model" not in stages["grpo_verifier"]["grpo"].inputs
    assert not any(runs["grpo_verifier"].bought.values())  # a verifier costs no annotation
    assert stages["rs_ft"]["rs_ft"].inputs["reward_model"].kind == "rm"
    # DPO's loss type is a setting: its own stage, the same comparisons
    assert stages["ipo"]["dpo"].key != stages["dpo"]["dpo"].key
    assert stages["ipo"]["comparisons"].key == stages["dpo"]["comparisons"].key


def test_roles_of_the_new_stages():
    roles = {kind: RECIPE_STAGES[kind].role.value for kind in ("grpo", "kto", "online_dpo", "rs_ft")}
    assert roles == {
        "grpo": "online RL",
        "kto": "preference optimisation",
        "online_dpo": "preference optimisation",
        "rs_ft": "online RL",
    }


def test_report_finds_the_new_methods_by_role():
    from compare.report.roles import Roles

    recipes = {"kto": ["kto"], "online_dpo": ["online_dpo"], "grpo_verifier": ["grpo"], "dpo": ["dpo"],
               "rs_ft": ["rm", "rs_ft"], "ppo": ["rm", "ppo"]}  # fmt: skip
    roles = Roles(recipes)
    assert roles.dpo == "dpo"  # not KTO (labels) nor online DPO (its own samples), though listed first
    assert roles.online_rl == "rs_ft"  # online RL against a reward model: not GRPO on a verifier
    assert Roles({"kto": ["kto"], "g": ["grpo"]}).preference == "kto"  # a pure preference arm first
    assert Roles({"g": ["grpo"]}).online_rl is None


def test_what_each_arm_got_counts_labels():
    from compare.report.tables import data_table

    s = suite()
    rows = [{"arm": arm, **{f"n_{k}": n for k, n in build_run(s, arm, {"seed": 0}).bought.items()}}
            for arm in s.arms]  # fmt: skip
    table = data_table(s, pd.DataFrame(rows))
    assert "| comparisons | labels | units spent |" in table
    assert "| kto | base → kto | 0 | 0 | 0 | 96 | 48 |" in table  # 96 labels x 0.5 units
    assert "| online_dpo | base → online_dpo | 0 | 0 | 48 (on-policy) | 0 | 48 |" in table
    assert "| grpo_verifier | base → grpo | 0 | 0 | 0 | 0 | 0 |" in table
    # a results.csv without the labels column (written before it existed): counted from the suite
    old = pd.DataFrame(rows).drop(columns="n_labels")
    assert "| kto | base → kto | 0 | 0 | 0 | 96 | 48 |" in data_table(s, old)


def test_gold_per_unit_and_no_ranking_per_nat_of_kl():
    from compare.report.roles import Roles
    from compare.report.tables import efficiency_section

    arms = {"base": {"recipe": []}, "a": {"recipe": ["dpo"]},
            "v": {"recipe": ["grpo"], "stages": {"grpo": {"reward": "verifier"}}}}  # fmt: skip
    s = suite(arms=arms)
    rows = []  # (arm, comparisons bought, gold by seed, KL by seed)
    for arm, bought, gold, kl in (("base", 0, (0.5, 0.6), (0, 0)), ("a", 100, (0.7, 0.7), (0.5, 0.25)),
                                  ("v", 0, (0.6, 0.8), (0.5, 0.5))):  # fmt: skip
        for seed in (0, 1):
            rows.append({"arm": arm, "seed": seed, "split": "id", "n_demonstrations": 0, "n_comparisons": bought,
                         "n_labels": 0, "gold_reward": gold[seed], "kl_to_base": kl[seed]})  # fmt: skip
    text = "\n".join(efficiency_section(s, pd.DataFrame(rows), Roles.of(s)))
    # a: gains 0.2 and 0.1 on 100 units -> 0.2, 0.1 per 100 units; t(0.975, 1) = 12.706 -> ± 0.635
    assert "| a | 0.150 ± 0.635 |" in text
    assert "| v |" not in text  # spent no units: nothing per unit
    # gold per nat of KL favours whichever arm moved less when gold is concave in KL: never ranked
    assert "| arm | gold gain per 100 units |" in text and "Most gold" not in text


@pytest.mark.parametrize(
    "arms,message",
    [
        ({"g": {"recipe": ["grpo"]}}, "arms.g.recipe: grpo is rewarded by a reward model: put rm before it"),
        ({"g": {"recipe": ["rs_ft"]}}, "arms.g: rs_ft needs a reward model: put rm before it"),
    ],
)
def test_settings_that_need_a_reward_model(tmp_path, arms, message):
    from compare.suite import load_suite

    path = tmp_path / "s.yaml"
    path.write_text(json.dumps({"name": "s", "arms": arms}))
    with pytest.raises(SuiteError, match=message.replace(".", r"\.")):
        load_suite(path)


def test_a_verifier_needs_a_task_that_has_one(tmp_path):
    from compare.suite import load_suite

    path = tmp_path / "s.yaml"
    arms = {"g": {"recipe": ["grpo"], "stages": {"grpo": {"reward": "verifier"}}}}
    path.write_text(json.dumps({"name": "s", "task": {"name": "reviews"}, "arms": arms}))
    with pytest.raises(SuiteError, match="grpo trains on the task's verifier and task 'reviews' has none"):
        load_suite(path)
    path.write_text(json.dumps({"name": "s", "task": {"name": "arithmetic"}, "arms": arms}))
    assert load_suite(path).arms["g"].recipe == ["grpo"]


def test_loading_and_preflight_check_labels_and_rounds(tmp_path):
    from compare.preflight import preflight
    from compare.suite import load_suite

    s = suite(budget={"units": 0.25, "cost": {"label": 0.5}}, arms={"kto": {"recipe": ["kto"]}})
    path = tmp_path / "labels.yaml"
    path.write_text(yaml.safe_dump(s.model_dump()))
    with pytest.raises(
        SuiteError, match=r"budget\.units: 0\.25 units buy no binary label for arm 'kto' \(cost\.label 0\.5\)"
    ):
        load_suite(path)
    s = suite(
        budget={"units": 3},
        arms={"o": {"recipe": ["online_dpo"], "stages": {"online_dpo": {"rounds": 4}}}},
    )
    with pytest.raises(SuiteError, match=r"arms\.o\.stages\.online_dpo\.rounds: 4 rounds, but 3 units buy 3"):
        preflight([s])


# -- tier 2: smoke tests on tiny models -----------------------------------------------------------------------
def changed(start_dir, out) -> float:
    a, b = dict(load_policy(start_dir)[0].named_parameters()), dict(load_policy(out)[0].named_parameters())
    return sum(not torch.equal(a[n], b[n]) for n in a) / len(a)


def losses(out) -> list[float]:
    history = json.loads((out / "log_history.json").read_text())
    found = [h["loss"] for h in history if "loss" in h]
    assert found and all(math.isfinite(x) for x in found)
    return found


@pytest.fixture(scope="module")
def arithmetic_policy_dir(tmp_path_factory):
    """A 1-layer GPT-2 over the arithmetic language, pretrained a little (it writes digits)."""
    path = tmp_path_factory.mktemp("arith_policy")
    task = Arithmetic(train_prompts=64, eval_prompts=4)
    tokenizer = build_word_tokenizer(task.vocabulary())
    torch.manual_seed(0)
    model = tiny_gpt2(tokenizer, n_layer=1, n_head=2, n_embd=32, n_positions=64)
    pretrain(model, tokenizer, task.pretraining_corpus(1000, random.Random(0)), 60, 32, 3e-3, 0, desc="t")
    save_model(model, tokenizer, path)
    return path


def grpo_job(**settings) -> Job:
    base = {"episodes": 8, "num_generations": 4, "batch_size": 8, "lr": 1e-3, "max_new_tokens": 8}
    return Job(GRPOSettings(**{**base, **settings}), 0, TASK)


def test_grpo_trains_against_the_reward_model(tmp_path, tiny_policy_dir, tiny_rm_dir):
    grpo.run(grpo_job(), tmp_path, {"model": tiny_policy_dir, "reward_model": tiny_rm_dir}, CTX)
    assert len(losses(tmp_path)) == 8 * 4 // 8
    history = json.loads((tmp_path / "log_history.json").read_text())
    assert all(math.isfinite(h["rewards/reward_model/mean"]) for h in history if "loss" in h)
    assert changed(tiny_policy_dir, tmp_path) > 0.9
    assert not (tmp_path / "start").exists() and not (tmp_path / "trainer").exists()
    snapshots = read_jsonl(tmp_path / "snapshots.jsonl")  # held-out samples from before the first step on
    assert sorted({r["step"] for r in snapshots}) == [0, 1, 2, 3, 4]
    assert all(r["proxy_reward"] is not None for r in snapshots)


@pytest.mark.parametrize(
    "scale,expected",
    [  # group [1, 0, 0, 0]: mean 0.25, sample std 0.5; group [2, 2, 2, 2]: no spread, advantage 0
        ("group", [0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, 0, 0, 0, 0]),
        ("none", [0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]),
    ],
)
def test_grpo_advantages_are_group_normalised(tmp_path, task, tiny_policy_dir, tiny_rm_dir, scale, expected):
    """TRL's own advantage computation, on rewards made by hand (its epsilon is 1e-4)."""
    trainer = grpo.build_trainer(
        grpo_job(scale_rewards=scale), tmp_path, {"model": tiny_policy_dir, "reward_model": tiny_rm_dir}, CTX
    )
    rewards = torch.tensor([[1.0], [0.0], [0.0], [0.0], [2.0], [2.0], [2.0], [2.0]])
    trainer._calculate_rewards = lambda *args, **kwargs: rewards
    trainer.model.train()
    prompts = task.prompts("train")[:2]
    batch = trainer._generate_and_score_completions([{"prompt": p} for p in prompts for _ in range(4)])
    assert batch["advantages"].tolist() == pytest.approx(expected, abs=1e-6)


def test_grpo_reward_model_scores_what_the_reward_model_learnt_from(
    tmp_path, task, tiny_policy_dir, tiny_rm_dir
):
    """TRL's reward call gives `reward_scores` of the completion as our sampler writes it (leading space,
    EOS appended), not TRL's decoded text: the reward path RLOO uses (tests/test_rloo.py)."""
    from compare.lm.loading import load_reward_model
    from compare.lm.sampling import reward_scores

    trainer = grpo.build_trainer(
        grpo_job(), tmp_path, {"model": tiny_policy_dir, "reward_model": tiny_rm_dir}, CTX
    )
    tokenizer = trainer.processing_class
    rng = random.Random(0)
    prompts = task.prompts("train")[:3]
    completions = [task.demonstrate(p, rng) for p in prompts]
    ids = [
        tokenizer(c, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for c in completions
    ]
    trl_text = tokenizer.batch_decode(ids, skip_special_tokens=True)
    rewards = trainer._calculate_rewards([{"prompt": p} for p in prompts], prompts, trl_text, ids)
    rm, rm_tokenizer = load_reward_model(tiny_rm_dir)
    assert rewards[:, 0].tolist() == pytest.approx(
        reward_scores(rm, rm_tokenizer, prompts, completions), abs=1e-5
    )
    assert trl_text[0] != completions[0]  # what TRL would have scored: no leading space


def test_grpo_verifier_rewards_exact_answers(tmp_path, arithmetic_policy_dir):
    """RL with verifiable rewards: TRL's reward call gives the task's verifier, 1 for the exact sum."""
    job = Job(GRPOSettings(reward="verifier", episodes=8, num_generations=4, batch_size=8, max_new_tokens=8), 0,
              {"name": "arithmetic", "seed": 0, "train_prompts": 64, "eval_prompts": 4})  # fmt: skip
    trainer = grpo.build_trainer(job, tmp_path, {"model": arithmetic_policy_dir}, CTX)
    tokenizer = trainer.processing_class
    prompts = ["add 4 7 + 3 8 =", "add 1 2 + 3 4 =", "add 1 2 + 3 4 ="]
    answers = [" 8 5", " 4 6", " 4 7"]
    ids = [tokenizer(a, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for a in answers]
    trl_text = tokenizer.batch_decode(ids, skip_special_tokens=True)  # "8 5": no leading space
    rewards = trainer._calculate_rewards([{"prompt": p} for p in prompts], prompts, trl_text, ids)
    assert rewards[:, 0].tolist() == [1.0, 1.0, 0.0]
    (tmp_path / "run").mkdir()
    grpo.run(job, tmp_path / "run", {"model": arithmetic_policy_dir}, CTX)
    history = json.loads((tmp_path / "run" / "log_history.json").read_text())
    assert all(0.0 <= h["rewards/verifier/mean"] <= 1.0 for h in history if "loss" in h)
    losses(tmp_path / "run")
    snapshots = read_jsonl(tmp_path / "run" / "snapshots.jsonl")  # no reward model: no RM score
    assert snapshots and all(r["proxy_reward"] is None and r["gold_reward"] is not None for r in snapshots)


@pytest.fixture(scope="module")
def labels_dir(tmp_path_factory, tiny_policy_dir):
    out = tmp_path_factory.mktemp("labels")
    params = {"task": LABELLED_TASK, "n": 32, "seed": 0, "max_new_tokens": 16}
    run_stage("labels", params, out, {"policy": tiny_policy_dir}, CTX)
    return out


def test_labels_are_thumbs_on_single_samples(labels_dir, task):
    rows = read_jsonl(labels_dir / "labels.jsonl")
    assert len(rows) == 32 and all(r["prompt"] in task.prompts("train") for r in rows)
    assert all(task.gold_reward(r["prompt"], r["completion"]) == r["gold"] for r in rows)
    mean = thumbs_reference([r["gold"] for r in rows])
    # a careful annotator (temperature 0.25, no flips) mostly says up above the batch's mean, down below
    decided = [r for r in rows if abs(r["gold"] - mean) > 0.5]
    assert decided and sum(r["label"] == (r["gold"] > mean) for r in decided) / len(decided) > 0.8
    assert 0 < sum(r["label"] for r in rows) < 32


def test_kto_trains_on_labels(tmp_path, labels_dir, tiny_policy_dir):
    settings = KTOSettings(epochs=1, lr=1e-3, batch_size=8)
    run_stage("kto", {"train": settings.model_dump(), "seed": 0}, tmp_path,
              {"model": tiny_policy_dir, "data": labels_dir}, CTX)  # fmt: skip
    assert len(losses(tmp_path)) == 32 // 8
    assert changed(tiny_policy_dir, tmp_path) > 0.9


@pytest.mark.parametrize("desirable,undesirable", [(1.0, 1.0), (2.0, 1.0), (1.0, 3.0)])
def test_kto_weights_its_desirable_and_undesirable_losses(
    tmp_path, task, tiny_policy_dir, desirable, undesirable
):
    """At the start (policy = reference, so r = 0 and the KL estimate is 0) every example's KTO loss is
    1 - sigmoid(0) = 0.5; two thumbs up and two down give (2 * 0.5 * w_d + 2 * 0.5 * w_u) / 4."""
    data = tmp_path / "labels"
    data.mkdir()
    prompts = task.prompts("train")[:4]
    write_jsonl(data / "labels.jsonl", [
        {"prompt": p, "completion": " the food is good .", "label": up, "gold": 0.0}
        for p, up in zip(prompts, [True, False, True, False])
    ])  # fmt: skip
    settings = KTOSettings(batch_size=4, desirable_weight=desirable, undesirable_weight=undesirable)
    trainer = kto.build_trainer(Job(settings, 0), tmp_path, {"model": tiny_policy_dir, "data": data}, CTX)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["label"].tolist() == [True, False, True, False]
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    assert float(loss) == pytest.approx((2 * 0.5 * desirable + 2 * 0.5 * undesirable) / 4, abs=1e-5)


@pytest.fixture(scope="module")
def comparisons_dir(tmp_path_factory, tiny_policy_dir):
    out = tmp_path_factory.mktemp("comparisons")
    params = {"task": LABELLED_TASK, "n": 8, "seed": 0, "max_new_tokens": 16}
    run_stage("comparisons", params, out, {"policy": tiny_policy_dir}, CTX)
    return out


@pytest.mark.parametrize(
    "loss_type,first_loss",
    [  # the first step's loss at h = 0 (policy = reference), beta 0.1
        ("sigmoid", math.log(2)),  # -log sigmoid(0)
        ("sigmoid_norm", math.log(2)),
        ("hinge", 1.0),  # max(0, 1 - 0)
        ("ipo", 25.0),  # (0 - 1 / (2 * 0.1))^2
    ],
)
def test_dpo_loss_type_reaches_trl(tmp_path, comparisons_dir, tiny_policy_dir, loss_type, first_loss):
    settings = DPOSettings(epochs=1, lr=1e-3, batch_size=8, loss_type=loss_type)
    run_stage("dpo", {"train": settings.model_dump(), "seed": 0}, tmp_path,
              {"model": tiny_policy_dir, "data": comparisons_dir}, CTX)  # fmt: skip
    assert losses(tmp_path)[0] == pytest.approx(first_loss, rel=1e-4)
    assert changed(tiny_policy_dir, tmp_path) > 0.9


def test_dpo_label_smoothing_is_robusts():
    with pytest.raises(ValueError, match="label_smoothing is robust's setting"):
        DPOSettings(label_smoothing=0.1)
    assert DPOSettings(loss_type="robust", label_smoothing=0.1).label_smoothing == 0.1


def test_online_dpo_labels_its_own_samples_round_by_round(tmp_path, task, tiny_policy_dir):
    prompts_dir = tmp_path / "prompts"
    prompts_dir.mkdir()
    run_stage("prompts", {"task": TASK, "n": 20, "seed": 0}, prompts_dir, {}, CTX)
    out = tmp_path / "online"
    out.mkdir()
    settings = OnlineDPOSettings(rounds=3, epochs=1, lr=1e-3, batch_size=4, max_new_tokens=12)
    online_dpo.run(Job(settings, 0, LABELLED_TASK), out, {"model": tiny_policy_dir, "data": prompts_dir}, CTX)
    losses(out)
    assert changed(tiny_policy_dir, out) > 0.9
    # the budget: 20 labels in rounds of 7, 7, 6, each round's count in the log
    history = json.loads((out / "log_history.json").read_text())
    bought = [h for h in history if "labels" in h]
    assert [h["labels"] for h in bought] == [7, 7, 6] and [h["labels_total"] for h in bought] == [7, 14, 20]
    steps = [h["step"] for h in history]
    assert (
        steps == sorted(steps) and bought[-1]["step"] == 2 + 2 + 2
    )  # ceil(7 / 4) + ceil(7 / 4) + ceil(6 / 4)
    rows = read_jsonl(out / "comparisons.jsonl")
    assert [sum(r["round"] == k for r in rows) for k in range(3)] == [7, 7, 6]
    # on-policy: round 0 samples the starting policy; round 2 samples a policy DPO has moved
    start, tokenizer = load_policy(tiny_policy_dir)
    prompts = [r["prompt"] for r in read_jsonl(prompts_dir / "prompts.jsonl")]

    def pairs_of_start(chunk, r):
        s = sample(start, tokenizer, chunk, 2, 12, 1.0, seed=0 * 1000 + r)
        return sorted(zip(s.completions[0::2], s.completions[1::2]))

    def stored(r):
        return sorted(tuple(sorted((x["chosen"], x["rejected"]))) for x in rows if x["round"] == r)

    assert stored(0) == sorted(tuple(sorted(p)) for p in pairs_of_start(prompts[:7], 0))
    assert stored(2) != sorted(tuple(sorted(p)) for p in pairs_of_start(prompts[14:], 2))


def test_rs_ft_fine_tunes_on_the_reward_models_best(tmp_path, tiny_policy_dir, tiny_rm_dir):
    settings = RSFTSettings(iterations=2, prompts=8, n=4, epochs=1, lr=1e-3, batch_size=4, max_new_tokens=12)
    rs_ft.run(Job(settings, 0, TASK), tmp_path, {"model": tiny_policy_dir, "reward_model": tiny_rm_dir}, CTX)
    losses(tmp_path)
    assert changed(tiny_policy_dir, tmp_path) > 0.9
    history = json.loads((tmp_path / "log_history.json").read_text())
    selected = [h for h in history if "reward_all" in h]
    assert [h["iteration"] for h in selected] == [0, 1]
    # the kept completions are each prompt's best of 4: their mean score beats the mean of all samples
    assert all(h["reward"] > h["reward_all"] for h in selected)
    assert not list(tmp_path.glob("iteration-*"))  # the policy between iterations is not kept


# -- tier 3: every new method in one micro suite ----------------------------------------------------------------
MICRO_METHODS = """
name: micro_methods
description: every method of issue 12 at micro size
task: {name: arithmetic, train_prompts: 64, eval_prompts: 4}
base:
  tiny: {n_layer: 1, n_head: 2, n_embd: 32, corpus_size: 1000, steps: 60, batch_size: 32}
budget: {units: 24, cost: {demonstration: 4, comparison: 1, label: 0.5}}
stages:
  rm: {epochs: 1, batch_size: 8}
  dpo: {epochs: 1, batch_size: 8}
  kto: {epochs: 1, batch_size: 8}
  online_dpo: {rounds: 2, epochs: 1, batch_size: 8, max_new_tokens: 8}
  grpo: {episodes: 8, num_generations: 4, batch_size: 8, max_new_tokens: 8}
  rs_ft: {iterations: 2, prompts: 8, n: 2, epochs: 1, batch_size: 8, max_new_tokens: 8}
arms:
  dpo_ipo: {recipe: [dpo], stages: {dpo: {loss_type: ipo}}}
  kto: {recipe: [kto]}
  online_dpo: {recipe: [online_dpo]}
  grpo: {recipe: [rm, grpo]}
  grpo_verifier: {recipe: [grpo], stages: {grpo: {reward: verifier}}}
  rs_ft: {recipe: [rm, rs_ft]}
grid: {seed: [0]}
eval: {samples_per_prompt: 2, max_new_tokens: 8}
"""


@pytest.mark.slow
def test_every_new_method_end_to_end(tmp_path):
    path = tmp_path / "micro_methods.yaml"
    path.write_text(textwrap.dedent(MICRO_METHODS))
    out = tmp_path / "report"
    assert main(["run", str(path), "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    results = pd.read_csv(out / "results.csv")
    arms = {"dpo_ipo", "kto", "online_dpo", "grpo", "grpo_verifier", "rs_ft"}
    assert set(results["arm"]) == arms and results["gold_reward"].notna().all()
    counts = results.groupby("arm")["n_comparisons"].first()
    assert counts["online_dpo"] == counts["grpo"] == 24 and counts["kto"] == counts["grpo_verifier"] == 0
    logs = pd.read_csv(out / "training_logs.csv")
    bought = logs[(logs["arm"] == "online_dpo") & logs["labels"].notna()]
    assert bought["labels"].tolist() == [12, 12]
    assert set(logs["stage"]) >= {"dpo", "kto", "online_dpo", "grpo", "rs_ft", "rm"}
    report = (out / "report.md").read_text()
    for arm in arms:
        assert f"| **{arm}** |" in report
    assert "| kto | base → kto | 0 | 0 | 0 | 48 | 24 |" in report  # what each arm got: 48 labels
    assert "| online_dpo | base → online_dpo | 0 | 0 | 24 (on-policy) | 0 | 24 |" in report
