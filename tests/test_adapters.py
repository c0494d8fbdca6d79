"""LoRA stages store their adapters; loading a stage's chain gives the model a merged copy would have held.

"Today's merged copy" is captured where the old code made it: `finish_training` / `save_policy` merge the
adapter into the model and check it (`check_finite`) before saving; the tests keep that merged model
and compare its outputs with the chain loaded from the stage folders.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from compare.lm import loading
from compare.lm.loading import ChainError, chain, load_policy, load_reward_model, stored_as_adapter
from compare.runner import run_stage
from compare.stages import common, dpo, ppo, rloo
from compare.stages.common import Context
from compare.stages.dpo import DPOSettings
from compare.stages.ppo import PPOSettings
from compare.stages.rloo import RLOOSettings
from compare.stages.rm import RewardSettings
from compare.stages.sft import SFTSettings

CTX = Context()
TASK = {"name": "reviews", "seed": 0, "demonstrator_quality": 0.6, "train_prompts": 64, "eval_prompts": 8,
        "annotator": {"temperature": 0.25, "flip_rate": 0.0}}  # fmt: skip
TEXTS = ["movie review : i had high hopes . the plot is good .", "movie review : the acting is bad ."]


@pytest.fixture(autouse=True, scope="module")
def one_thread_and_no_leaked_rng():
    threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.random.set_rng_state(rng)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny_policy_dir):
    """A stage cache in miniature: stage folders side by side, the base model among them."""
    root = tmp_path_factory.mktemp("cache")
    import shutil

    shutil.copytree(tiny_policy_dir, root / "base-0")
    (root / "demos-0").mkdir()
    run_stage("demos", {"task": TASK, "n": 32, "seed": 0}, root / "demos-0", {}, CTX)
    (root / "comparisons-0").mkdir()
    params = {"task": TASK, "n": 32, "seed": 0, "max_new_tokens": 16}
    run_stage("comparisons", params, root / "comparisons-0", {"policy": root / "base-0"}, CTX)
    return root


@pytest.fixture
def merged_copies(monkeypatch):
    """Every model the savers check, kept as it was checked: the merged model today's code saved."""
    kept = []
    check = common.check_finite

    def keep(model, what):
        check(model, what)
        if "after training" in what:  # not PPO's check after each rollout batch
            kept.append(copy.deepcopy(model).eval())

    monkeypatch.setattr(common, "check_finite", keep)
    monkeypatch.setattr(ppo, "check_finite", keep)
    return kept


def train(kind, settings, out, inputs):
    out.mkdir()
    run_stage(kind, {"train": settings.model_dump(), "seed": 0}, out, inputs, CTX)
    return out


def policy_logits(model, tokenizer):
    """Logits of each text on its own (no padding: RLOO's reference supplies its own position ids)."""
    with torch.no_grad():
        return torch.cat([model(**tokenizer([t], return_tensors="pt")).logits[0] for t in TEXTS])


def rewards(model, tokenizer):
    enc = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**enc).logits[:, 0]


def assert_adapter_folder(folder, parent: str):
    names = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "parent.json", "config.json"} <= names
    assert not any(n.startswith("model") and n.endswith(".safetensors") for n in names)  # no full weights
    assert "README.md" not in names and ".adapter" not in names
    assert json.loads((folder / "parent.json").read_text()) == {"parent": parent}


def test_lora_sft_then_dpo_chain_loads_the_merged_model(cache, merged_copies):
    sft = train("sft", SFTSettings(epochs=1, lr=1e-2, batch_size=8, lora_r=4), cache / "sft-1",
                {"model": cache / "base-0", "data": cache / "demos-0"})  # fmt: skip
    dpo_out = train("dpo", DPOSettings(epochs=1, lr=1e-2, batch_size=8, lora_r=4), cache / "dpo-1",
                    {"model": sft, "data": cache / "comparisons-0"})  # fmt: skip
    assert_adapter_folder(sft, "base-0")  # named as a sibling in the cache
    assert_adapter_folder(dpo_out, "sft-1")
    assert chain(dpo_out) == [cache / "base-0", sft, dpo_out]
    merged_sft, merged_dpo = merged_copies
    for folder, merged in ((sft, merged_sft), (dpo_out, merged_dpo)):
        model, tokenizer = load_policy(folder)
        torch.testing.assert_close(policy_logits(model, tokenizer), policy_logits(merged, tokenizer))
        assert not any("lora" in name for name, _ in model.named_parameters())
    base, tokenizer = load_policy(cache / "base-0")
    assert not torch.allclose(policy_logits(base, tokenizer), policy_logits(merged_dpo, tokenizer))
    # the adapters are a small part of the model (the tiny model's embeddings dominate; real ones more so)
    size = sum(f.stat().st_size for f in dpo_out.glob("adapter_model.safetensors"))
    assert size < (cache / "base-0" / "model.safetensors").stat().st_size / 4


@pytest.mark.parametrize("start", ["base", "lora sft"])
def test_lora_reward_model_loads_the_merged_model_with_its_trained_head(cache, merged_copies, start):
    from safetensors import safe_open

    parent = cache / "base-0"
    if start == "lora sft":
        parent = train("sft", SFTSettings(epochs=1, lr=1e-2, batch_size=8, lora_r=4), cache / "sft-rm",
                       {"model": parent, "data": cache / "demos-0"})  # fmt: skip
        merged_copies.clear()
    out = cache / f"rm-{start.replace(' ', '')}"
    train("rm", RewardSettings(epochs=1, lr=1e-2, batch_size=8, lora_r=4), out,
          {"model": parent, "data": cache / "comparisons-0"})  # fmt: skip
    assert_adapter_folder(out, parent.name)
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        assert any(k.endswith("score.weight") for k in f.keys())  # the trained head came along
    (merged,) = merged_copies
    rm, tokenizer = load_reward_model(out)
    assert rm.config.num_labels == 1
    torch.testing.assert_close(rewards(rm, tokenizer), rewards(merged, tokenizer))
    with pytest.raises(ChainError, match="reward model"):
        load_policy(out)


def test_full_fine_tuning_still_saves_full_weights(cache):
    out = train("sft", SFTSettings(epochs=1, lr=1e-3, batch_size=8), cache / "sft-full",
                {"model": cache / "base-0", "data": cache / "demos-0"})  # fmt: skip
    assert (out / "model.safetensors").exists() and not stored_as_adapter(out)
    assert chain(out) == [out]


def test_lora_ppo_policy_is_stored_as_its_adapter(tmp_path, cache, merged_copies, tiny_rm_dir):
    params = {
        "train": PPOSettings(
            episodes=16, rollout_batch_size=8, max_new_tokens=8, lr=1e-2, lora_r=4, gold_eval_prompts=4
        ).model_dump(),  # fmt: skip
        "seed": 0,
        "task": {"name": "reviews", "seed": 0, "train_prompts": 64, "eval_prompts": 8},
    }
    out = cache / "ppo-1"
    out.mkdir()
    run_stage("ppo", params, out, {"model": cache / "base-0", "reward_model": tiny_rm_dir}, CTX)
    assert_adapter_folder(out, "base-0")
    (merged,) = merged_copies
    model, tokenizer = load_policy(out)
    torch.testing.assert_close(policy_logits(model, tokenizer), policy_logits(merged, tokenizer))


@pytest.fixture(scope="module")
def lora_sft(cache):
    return train("sft", SFTSettings(epochs=1, lr=1e-2, batch_size=8, lora_r=4), cache / "sft-start",
                 {"model": cache / "base-0", "data": cache / "demos-0"})  # fmt: skip


def test_full_dpo_on_a_lora_start_takes_the_start_as_reference(cache, lora_sft, monkeypatch):
    """TRL reloads a full fine-tuning reference from the policy's folder; an adapter chain it cannot load."""
    built = []
    monkeypatch.setattr(dpo, "train_and_save", lambda trainer, out, ctx: built.append(trainer))
    out = cache / "dpo-full"
    out.mkdir()
    params = {"train": DPOSettings(epochs=1, batch_size=8).model_dump(), "seed": 0}
    run_stage("dpo", params, out, {"model": lora_sft, "data": cache / "comparisons-0"}, CTX)
    start, tokenizer = load_policy(lora_sft)
    ref = built[0].ref_model
    torch.testing.assert_close(policy_logits(ref, tokenizer), policy_logits(start, tokenizer))


@pytest.mark.parametrize("lora_r", [None, 4])
def test_rloo_on_a_lora_start_has_it_as_reference_and_parent(tmp_path, cache, lora_sft, tiny_rm_dir, lora_r):
    job = rloo.Job(RLOOSettings(episodes=8, num_generations=4, batch_size=8, lora_r=lora_r), 0, TASK)
    out = cache / f"rloo-{lora_r}"
    out.mkdir()
    trainer = rloo.build_trainer(job, out, {"model": lora_sft, "reward_model": tiny_rm_dir}, CTX)
    start, tokenizer = load_policy(lora_sft)
    assert not (out / "start").exists()  # the copy TRL's reference was loaded from is gone
    if lora_r:  # the reference is the adapter disabled; the start stays the parent the adapter names
        assert trainer.ref_model is None
        assert loading.adapter_parent(trainer.model, out) == lora_sft.name
    else:
        torch.testing.assert_close(
            policy_logits(trainer.ref_model, tokenizer), policy_logits(start, tokenizer)
        )


def test_loading_a_chain_draws_nothing_from_the_generator(lora_sft):
    state = torch.random.get_rng_state()
    load_policy(lora_sft)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_missing_parent_is_one_clear_error(tmp_path, lora_sft):
    import shutil

    moved = tmp_path / lora_sft.name
    shutil.copytree(lora_sft, moved)  # without its parent beside it
    with pytest.raises(ChainError, match=r"stored as an adapter on .*base-0, which is missing \(pruned\?\)"):
        load_policy(moved)
