"""One contract over every recipe stage (compare/stages/spec.py), as TRL runs the same tests over every
trainer: each settings field documented, the strength setting a number a grid can sweep, and a micro run
on a tiny model that changes its weights. The inputs come from the spec alone: the data its kind of
feedback's producer writes, the prompts of an on-policy stage, a reward model when it wants one."""

from __future__ import annotations

import pytest
import torch

from compare.lm.loading import load_policy, load_reward_model, save_model
from compare.stage_run import run_stage
from compare.stages import DATA_KINDS, RECIPE_STAGES, Produces
from compare.stages.common import Context
from compare.suite.schema import TaskSettings

CTX = Context(verbose=False)
TASK = TaskSettings(name="reviews", train_prompts=64, eval_prompts=8).model_dump()
# the cheapest value of each setting some stage has, by the setting's name (not the stage's): a new stage
# with settings of these names runs small here with no edit
MICRO = {"epochs": 1, "batch_size": 8, "lr": 1e-2, "episodes": 16, "rollout_batch_size": 8, "ppo_epochs": 1,
         "num_generations": 2, "max_new_tokens": 8, "rounds": 2, "iterations": 1, "prompts": 8, "n": 2,
         "gold_eval_prompts": 4}  # fmt: skip


def micro_settings(spec):
    fields = spec.settings.model_fields
    return spec.settings.model_validate({k: v for k, v in MICRO.items() if k in fields})


@pytest.mark.parametrize("kind", sorted(RECIPE_STAGES))
def test_every_setting_is_documented_and_the_strength_is_a_number(kind):
    spec = RECIPE_STAGES[kind]
    fields = spec.settings.model_fields
    assert spec.description and spec.role is not None
    undocumented = [name for name, field in fields.items() if not (field.description or "").strip()]
    assert not undocumented, f"{kind}: settings without a description: {undocumented}"
    if spec.strength is not None:
        field = fields[spec.strength]
        assert field.annotation in (int, float), f"{kind}: strength {spec.strength} is not a number"
        default = spec.settings().model_dump()[spec.strength]
        swept = spec.settings.model_validate({spec.strength: default * 2})  # a grid value validates
        assert getattr(swept, spec.strength) == default * 2


@pytest.fixture(scope="module")
def bought(tmp_path_factory, tiny_policy_dir):
    """Each kind of feedback, written by its producer stage (`DataKind.stage`), and on-policy prompts."""
    folders = {}
    for name, kind in DATA_KINDS.items():
        out = tmp_path_factory.mktemp(name)
        params = {"task": TASK, "n": 16, "seed": 0} | ({"max_new_tokens": 8} if kind.sampled else {})
        run_stage(kind.stage, params, out, {"policy": tiny_policy_dir} if kind.sampled else {}, CTX)
        folders[name] = out
    folders["prompts"] = tmp_path_factory.mktemp("prompts")
    run_stage("prompts", {"task": TASK, "n": 16, "seed": 0}, folders["prompts"], {}, CTX)
    return folders


def body(model) -> dict[str, torch.Tensor]:
    return dict(model.base_model.named_parameters())


@pytest.mark.parametrize("kind", sorted(RECIPE_STAGES))
def test_a_micro_run_changes_the_weights(kind, tmp_path, bought, tiny_policy_dir, tiny_rm_dir):
    spec = RECIPE_STAGES[kind]
    settings = micro_settings(spec)
    if spec.produces is Produces.SAMPLING:  # no weights: it tells the evaluator how to sample
        assert spec.sampling(settings) and spec.last
        return
    inputs = {"model": tiny_policy_dir}
    if spec.data is not None:
        inputs["data"] = bought["prompts" if spec.on_policy else spec.data.name]
    if spec.wants_reward_model(settings):
        inputs["reward_model"] = tiny_rm_dir
    if spec.teacher:  # a teacher the student is not: the tiny policy with its weights perturbed
        teacher, tokenizer = load_policy(tiny_policy_dir)
        torch.manual_seed(0)
        with torch.no_grad():
            for p in teacher.parameters():
                p.add_(0.5 * torch.randn_like(p))
        save_model(teacher, tokenizer, tmp_path / "teacher")
        inputs["teacher"] = tmp_path / "teacher"
    out = tmp_path / "out"
    out.mkdir()
    run_stage(kind, {"train": settings.model_dump(), "seed": 0, "task": TASK}, out, inputs, CTX)
    start = body(load_policy(tiny_policy_dir)[0])
    loader = load_reward_model if spec.produces is Produces.REWARD_MODEL else load_policy
    trained = body(loader(out)[0])
    moved = [name for name in start if not torch.equal(start[name], trained[name])]
    assert len(moved) > len(start) / 2, f"{kind}: {len(moved)} of {len(start)} weights moved"
