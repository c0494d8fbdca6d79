"""One smoke test per stage on tiny models built in the tests: losses finite, parameters changed."""

import json
import math

import pytest
import torch

from compare.lm.loading import load_policy, load_reward_model
from compare.runner import run_stage
from compare.stages.common import Context, read_jsonl
from compare.stages.dpo import DPOSettings
from compare.stages.rm import RewardSettings
from compare.stages.sft import SFTSettings
from compare.tasks.reviews import Reviews

CTX = Context(verbose=False)


@pytest.fixture(scope="module")
def task_params(task):
    return {"name": "reviews", "seed": 0, "demonstrator_quality": 0.6, "train_prompts": 64, "eval_prompts": 8,
            "annotator": {"temperature": 0.25, "flip_rate": 0.0}}  # fmt: skip


@pytest.fixture(scope="module")
def demos_dir(tmp_path_factory, task_params):
    out = tmp_path_factory.mktemp("demos")
    run_stage("demos", {"task": task_params, "n": 32, "seed": 0}, out, {}, CTX)
    return out


@pytest.fixture(scope="module")
def comparisons_dir(tmp_path_factory, task_params, tiny_policy_dir):
    out = tmp_path_factory.mktemp("comparisons")
    run_stage(
        "comparisons",
        {"task": task_params, "n": 32, "seed": 0, "max_new_tokens": 32},
        out,
        {"policy": tiny_policy_dir},
        CTX,
    )
    return out


def changed_fraction(before, after) -> float:
    a, b = dict(before.named_parameters()), dict(after.named_parameters())
    shared = [n for n in a if n in b]
    return sum(not torch.equal(a[n], b[n]) for n in shared) / len(shared)


def assert_trained(out, start_dir, loader=load_policy):
    history = json.loads((out / "log_history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses and all(math.isfinite(x) for x in losses)
    trained, _ = loader(out)
    start, _ = loader(start_dir) if loader is load_policy else (None, None)
    if start is not None:
        assert changed_fraction(start, trained) > 0.9  # (nearly) every parameter moved
    assert not (out / "trainer").exists()  # no checkpoints left behind


def test_demos_are_the_demonstrator(demos_dir, task):
    rows = read_jsonl(demos_dir / "demos.jsonl")
    assert len(rows) == 32
    assert all(r["prompt"] in task.prompts("train") and r["completion"].startswith(" ") for r in rows)
    assert all(task.gold_reward(r["prompt"], r["completion"]) == r["gold"] for r in rows)


def test_comparisons_follow_the_annotator(comparisons_dir):
    rows = read_jsonl(comparisons_dir / "comparisons.jsonl")
    assert len(rows) == 32
    # a careful annotator (temperature 0.25, no flips) mostly prefers the higher gold reward
    decided = [r for r in rows if r["gold_chosen"] != r["gold_rejected"]]
    assert sum(r["gold_chosen"] > r["gold_rejected"] for r in decided) / len(decided) > 0.7


@pytest.mark.parametrize(
    "kind,stage,data", [("sft", SFTSettings, "demos_dir"), ("preferred_ft", SFTSettings, "comparisons_dir"),
                        ("dpo", DPOSettings, "comparisons_dir")])  # fmt: skip
def test_policy_stage_trains(tmp_path, request, tiny_policy_dir, kind, stage, data):
    params = {"train": stage(epochs=1, lr=1e-3, batch_size=8).model_dump(), "seed": 0}
    run_stage(kind, params, tmp_path, {"model": tiny_policy_dir, "data": request.getfixturevalue(data)}, CTX)
    assert_trained(tmp_path, tiny_policy_dir)


def test_rm(tmp_path, comparisons_dir, tiny_policy_dir):
    params = {"train": RewardSettings(epochs=2, lr=1e-3, batch_size=8).model_dump(), "seed": 0}
    run_stage("rm", params, tmp_path, {"model": tiny_policy_dir, "data": comparisons_dir}, CTX)
    assert_trained(tmp_path, tiny_policy_dir, loader=load_reward_model)
    rm, _ = load_reward_model(tmp_path)
    policy, _ = load_policy(tiny_policy_dir)
    # the body starts from the policy and moved; the scalar head exists
    assert not torch.equal(rm.base_model.wte.weight, policy.base_model.wte.weight)
    assert rm.config.num_labels == 1


@pytest.mark.parametrize(
    "kind,stage,data", [("sft", SFTSettings, "demos_dir"), ("dpo", DPOSettings, "comparisons_dir"),
                        ("rm", RewardSettings, "comparisons_dir")])  # fmt: skip
def test_lora_trains_adapters_and_saves_them(tmp_path, request, tiny_policy_dir, kind, stage, data):
    params = {"train": stage(epochs=1, lr=1e-2, batch_size=8, lora_r=4).model_dump(), "seed": 0}
    run_stage(kind, params, tmp_path, {"model": tiny_policy_dir, "data": request.getfixturevalue(data)}, CTX)
    # the adapter on its start, no full weights (tests/test_adapters.py: it loads as the merged model)
    assert (tmp_path / "adapter_config.json").exists() and not (tmp_path / "model.safetensors").exists()
    loader = load_reward_model if kind == "rm" else load_policy
    trained, start = loader(tmp_path)[0], loader(tiny_policy_dir)[0] if kind != "rm" else None
    start = start or load_policy(tiny_policy_dir)[0]
    a, b = dict(start.base_model.named_parameters()), dict(trained.base_model.named_parameters())
    # the linear layers moved (adapters merged into them); the embeddings, which LoRA leaves, did not
    assert not torch.equal(a["h.0.attn.c_attn.weight"], b["h.0.attn.c_attn.weight"])
    assert torch.equal(a["wte.weight"], b["wte.weight"])
    if kind == "rm":  # the trained scalar head is saved with the adapter
        from safetensors import safe_open

        with safe_open(str(tmp_path / "adapter_model.safetensors"), "pt") as f:
            assert any(k.endswith("score.weight") for k in f.keys())


def test_eval_base_and_best_of_n(tmp_path, task_params, tiny_policy_dir, tiny_rm_dir):
    settings = {"samples_per_prompt": 4, "max_new_tokens": 16, "temperature": 1.0, "examples": 1}
    base_in = {"policy": tiny_policy_dir, "base": tiny_policy_dir, "reward_model": tiny_rm_dir}
    plain = tmp_path / "plain"
    plain.mkdir()
    run_stage("eval", {"task": task_params, "eval": settings, "seed": 0}, plain, base_in, CTX)
    m = json.loads((plain / "metrics.json").read_text())
    assert set(m) == set(Reviews.eval_splits) and m["id"]["kl_to_base"] == 0.0
    rows = read_jsonl(plain / "samples.jsonl")
    assert len(rows) == len(Reviews.eval_splits) * 8 * 4
    bon = tmp_path / "bon"
    bon.mkdir()
    run_stage("eval", {"task": task_params, "eval": settings, "seed": 0, "best_of_n": 4}, bon, base_in, CTX)
    mb = json.loads((bon / "metrics.json").read_text())
    # picking the reward model's favourite of 4 raises its score, and moves away from the base
    assert mb["id"]["proxy_reward"] > m["id"]["proxy_reward"]
    assert mb["id"]["kl_bound"] == pytest.approx(math.log(4) - 0.75)
    assert mb["id"]["kl_to_base"] > 0


def test_pad_is_never_sampled_and_has_no_probability(tiny_policy_dir, task):
    from compare.lm.loading import load_policy
    from compare.lm.sampling import sample, token_logprobs

    model, tok = load_policy(tiny_policy_dir)
    with torch.no_grad():
        model.lm_head.weight[tok.pad_token_id] += 50.0  # make pad the model's favourite token
    s = sample(model, tok, task.prompts("id")[:4], 4, 8, 1.0, seed=0)
    assert all(tok.pad_token_id not in ids for ids in s.completion_ids)
    recomputed = token_logprobs(model, tok, s.prompts, s.completion_ids, 1.0)
    assert [float(x.sum()) for x in recomputed] == pytest.approx(s.logprobs, abs=1e-4)


def test_pad_token_never_shrinks_a_padded_vocabulary(task):
    """A model with spare embedding rows (Pythia-style) keeps them all when the pad token is set."""
    from compare.lm.loading import ensure_pad_token
    from compare.lm.tiny import build_word_tokenizer, tiny_gpt2

    tokenizer = build_word_tokenizer(task.vocabulary())
    model = tiny_gpt2(tokenizer, n_layer=1, n_head=2, n_embd=16, n_positions=16)
    rows = len(tokenizer) + 8
    model.resize_token_embeddings(rows)
    tokenizer.pad_token = tokenizer.eos_token  # pad == EOS, as many hub tokenizers ship
    ensure_pad_token(model, tokenizer)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.get_input_embeddings().num_embeddings == rows  # not cut down to the tokenizer's size
    assert tokenizer.pad_token_id < rows
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_dpo_with_precomputed_reference_trains_the_same_model(
    tmp_path, comparisons_dir, tiny_policy_dir, monkeypatch
):
    """precompute_ref: the reference's log-probs once before training, not at every step: the same loss
    up to batching, so the same weights to float tolerance (with LoRA: the reference is the adapter off)."""
    import trl

    seen, init = [], trl.DPOTrainer.__init__

    def recording_init(self, *args, **kwargs):
        seen.append(kwargs["args"].precompute_ref_log_probs)
        init(self, *args, **kwargs)

    monkeypatch.setattr(trl.DPOTrainer, "__init__", recording_init)
    trained = {}
    for precompute in (False, True):
        out = tmp_path / str(precompute)
        out.mkdir()
        settings = DPOSettings(epochs=2, lr=1e-3, batch_size=8, lora_r=4, precompute_ref=precompute)
        params = {"train": settings.model_dump(), "seed": 0}
        run_stage("dpo", params, out, {"model": tiny_policy_dir, "data": comparisons_dir}, CTX)
        trained[precompute] = dict(load_policy(out)[0].named_parameters())
    assert seen == [False, True]  # TRL was asked to precompute the second time only
    start = dict(load_policy(tiny_policy_dir)[0].named_parameters())
    name = "transformer.h.0.attn.c_attn.weight"
    assert not torch.equal(trained[True][name], start[name])  # it trained
    for key, value in trained[False].items():
        torch.testing.assert_close(trained[True][key], value, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="bf16_cpu is about the CPU; a GPU uses bf16 anyway")
def test_bf16_on_the_cpu_trains_in_bfloat16_autocast(tmp_path, demos_dir, tiny_policy_dir, monkeypatch):
    """bf16_cpu: TRL's trainer runs its forward passes under bfloat16 autocast on the CPU too; the model
    trains, its stored weights stay float32, and they differ from a float32 run's (bf16's rounding)."""
    seen = []
    original = torch.autocast.__init__

    def recording(self, device_type, dtype=None, enabled=True, *args, **kwargs):
        if enabled and device_type == "cpu":
            seen.append(dtype)
        original(self, device_type, dtype, enabled, *args, **kwargs)

    monkeypatch.setattr(torch.autocast, "__init__", recording)
    trained = {}
    for bf16 in (False, True):
        out = tmp_path / str(bf16)
        out.mkdir()
        settings = SFTSettings(epochs=1, lr=1e-3, batch_size=8, bf16_cpu=bf16)
        params = {"train": settings.model_dump(), "seed": 0}
        run_stage("sft", params, out, {"model": tiny_policy_dir, "data": demos_dir}, CTX)
        assert (torch.bfloat16 in seen) == bf16  # float32: no autocast at all
        assert_trained(out, tiny_policy_dir)
        trained[bf16] = load_policy(out)[0]
    a, b = (dict(trained[k].named_parameters()) for k in (False, True))
    assert all(p.dtype == torch.float32 for p in b.values())
    assert any(not torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_a_setting_at_its_neutral_value_leaves_the_stage_key_alone():
    """Settings added after a stage's version (bf16_cpu, DPO's precompute_ref) at the value that reproduces
    the old results are not part of the key, so caches stay valid; any other value is a new stage."""
    from compare.plan import Stage

    old = {"train": {"epochs": 3.0, "lr": 5e-4, "batch_size": 16, "lora_r": None, "beta": 0.1}, "seed": 0}
    new = {"train": {**old["train"], "bf16_cpu": False, "precompute_ref": False}, "seed": 0}
    assert Stage("dpo", new).key == Stage("dpo", old).key
    for changed in ({"bf16_cpu": True}, {"precompute_ref": True}):
        assert Stage("dpo", {**new, "train": {**new["train"], **changed}}).key != Stage("dpo", old).key
    assert (
        Stage("sft", {"train": {"epochs": 3.0, "bf16_cpu": False}}).key
        == Stage("sft", {"train": {"epochs": 3.0}}).key
    )
    # the judge trains with the reward model's settings: the same holds for it
    judge = {"train": {"epochs": 1.0, "lora_r": None}, "seed": 0}
    assert (
        Stage("judge", {**judge, "train": {**judge["train"], "bf16_cpu": False}}).key
        == Stage("judge", judge).key
    )
    # a stage without such settings keeps whatever its parameters say
    assert Stage("eval", {"train": {"bf16_cpu": False}}).key != Stage("eval", {"train": {}}).key
