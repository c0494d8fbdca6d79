"""Model-level tests of the PPO stage, one per row of docs/ppo.md (the pure math is in test_ppo_math.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from compare import runner
from compare.lm.loading import EOS, load_policy, save_model
from compare.lm.sampling import gather_logprobs, reward_scores, sample, sequence_scores
from compare.stages import ppo
from compare.stages.common import Context
from compare.stages.ppo import PPOSettings

METRICS = [
    "objective/kl",
    "objective/entropy",
    "objective/non_score_reward",
    "objective/rlhf_reward",
    "objective/scores",
    "policy/approxkl",
    "policy/clipfrac",
    "loss/policy",
    "loss/value",
    "val/clipfrac",
    "val/ratio",
    "val/num_eos",
    "loss",
]
HELDOUT = ["heldout/gold", "heldout/proxy", "heldout/kl"]
T = 0.7


@pytest.fixture(autouse=True, scope="module")
def one_thread_and_no_leaked_rng():
    """One intra-op thread: tiny models gain nothing from more, and on a busy 2-core machine they lose
    ~20x. The stage seeds torch's global RNG; restore it so later test modules see what they would."""
    threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.random.set_rng_state(rng)


def settings(**overrides) -> PPOSettings:
    small = dict(episodes=16, rollout_batch_size=8, max_new_tokens=12, lr=1e-3, gold_eval_prompts=4)
    return PPOSettings(**{**small, **overrides})


def inputs(policy_dir, rm_dir=None) -> dict:
    return {"model": policy_dir} | ({"reward_model": rm_dir} if rm_dir else {})


def run_stage(tmp_path, policy_dir, rm_dir, reward="model", seed=0, **overrides) -> list[dict]:
    params = {
        "train": settings(**overrides).model_dump(),
        "seed": seed,
        "task": {"name": "reviews", "seed": 0, "train_prompts": 64, "eval_prompts": 8},
    }
    kind = "ppo" if reward == "model" else "ppo_gold"
    runner.run_stage(kind, params, tmp_path, inputs(policy_dir, rm_dir), Context())
    return json.loads((tmp_path / "log_history.json").read_text())


@pytest.fixture
def models(tiny_policy_dir, tiny_rm_dir) -> ppo.Models:
    return ppo.load_models(inputs(tiny_policy_dir, tiny_rm_dir), "model", None)


def a_rollout(models, task, n=8, seed=0, max_new_tokens=32) -> ppo.Batch:
    return ppo.rollout(models.policy, models.tokenizer, task.prompts("train")[:n], max_new_tokens, T, seed)


def hand_batch(tokenizer, prompts: list[str], responses: list[str]) -> ppo.Batch:
    """A batch from text; a response ending in EOS keeps it (the rows are already 'truncated')."""
    prompt_rows = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    response_rows = tokenizer(responses, add_special_tokens=False)["input_ids"]
    return ppo.make_batch(tokenizer, prompts, responses, prompt_rows, response_rows, "cpu")


def unpadded_logprobs(model, prompt_ids: list[int], response_ids: list[int]) -> torch.Tensor:
    """log_softmax(logits / T) at each response token, from one unpadded forward pass.

    The pad token is filler, never an output: the policy's distribution excludes it (logit -inf).
    """
    ids = torch.tensor([prompt_ids + response_ids])
    logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1] / T
    logits[:, model.config.pad_token_id] = float("-inf")
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(response_ids)[:, None]).squeeze(1)


# row 1
def test_completion_eos_is_attended_and_pad_is_not_eos(models, task):
    tok = models.tokenizer
    assert tok.pad_token_id != tok.eos_token_id
    batch = a_rollout(models, task)
    assert batch.has_eos.any()
    attention = torch.cat([batch.prompt_mask, batch.mask.long()], 1)
    for i in batch.has_eos.nonzero().squeeze(1).tolist():
        end = int(batch.mask[i].sum()) - 1
        assert batch.response_ids[i, end] == tok.eos_token_id
        assert attention[i, batch.prompt_ids.shape[1] + end] == 1


# row 2
def test_left_padded_row_scores_like_the_unpadded_row(models):
    prompts = ["movie review : .", "book review : i tried it last week . i had high hopes ."]
    responses = [" the plot is good . " + EOS, " it was fine ."]
    both = hand_batch(models.tokenizer, prompts, responses)
    alone = hand_batch(models.tokenizer, prompts[:1], responses[:1])
    assert both.prompt_mask[0, 0] == 0  # the short prompt is left-padded
    n = int(alone.mask.sum())
    with torch.no_grad():
        for model in (models.policy, models.ref):
            padded = gather_logprobs(ppo.policy_logits(model, both, T), both.response_ids)[0]
            single = gather_logprobs(ppo.policy_logits(model, alone, T), alone.response_ids)[0]
            torch.testing.assert_close(padded[:n], single[:n], atol=1e-4, rtol=0)
        values = ppo.compute_values(models.value, both)[0, :n]
        torch.testing.assert_close(values, ppo.compute_values(models.value, alone)[0, :n], atol=1e-4, rtol=0)
        padded_score = ppo.score_responses(both, models.tokenizer, None, models.rm)[0]
        torch.testing.assert_close(
            padded_score, ppo.score_responses(alone, models.tokenizer, None, models.rm)[0]
        )


# rows 3 and 4
def test_rollout_logprobs_are_tempered_log_softmax_at_the_sampled_token(models, task):
    tok = models.tokenizer
    prompts = task.prompts("train")[:6]
    samples = sample(models.policy, tok, prompts, 1, 16, T, seed=3)
    batch = ppo.rollout(models.policy, tok, prompts, 16, T, seed=3)
    assert batch.response_ids[batch.mask].tolist() == sum(samples.completion_ids, [])
    with torch.no_grad():
        recomputed = gather_logprobs(ppo.policy_logits(models.policy, batch, T), batch.response_ids)
        for i, prompt in enumerate(prompts):
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            hand = unpadded_logprobs(models.policy, p_ids, samples.completion_ids[i])
            torch.testing.assert_close(recomputed[i, : len(hand)], hand, atol=1e-5, rtol=0)
            # the sampler's own log-prob (KV cache, step by step) is the same tempered distribution
            assert samples.logprobs[i] == pytest.approx(float(hand.sum()), abs=1e-4)


def test_response_logprobs_come_from_the_previous_position(models):
    prompt, response = [5, 6, 7], [8, 9, 1]
    batch = ppo.make_batch(models.tokenizer, ["p"], ["r"], [prompt], [response], "cpu")
    with torch.no_grad():
        got = gather_logprobs(ppo.policy_logits(models.policy, batch, T), batch.response_ids)[0]
        for t, token in enumerate(response):  # predict token t from the prefix that ends just before it
            prefix = torch.tensor([prompt + response[:t]])
            last = models.policy(input_ids=prefix).logits[0, -1] / T
            last[models.policy.config.pad_token_id] = float("-inf")  # pad is never an output
            assert float(got[t]) == pytest.approx(float(torch.log_softmax(last, -1)[token]), abs=1e-5)
    logits = torch.randn(2, 4, 7)
    tokens = torch.randint(0, 7, (2, 4))
    hand = [[torch.log_softmax(logits[b, t], -1)[tokens[b, t]] for t in range(4)] for b in range(2)]
    torch.testing.assert_close(gather_logprobs(logits, tokens), torch.tensor(hand))


# row 5
def test_step_zero_ratio_is_one_and_kl_to_the_identical_reference_is_zero(
    tmp_path, tiny_policy_dir, tiny_rm_dir, monkeypatch
):
    calls, original = [], ppo.policy_loss

    def recording_policy_loss(*args, **kwargs):
        loss, stats = original(*args, **kwargs)
        calls.append({k: float(v) for k, v in stats.items()})
        return loss, stats

    monkeypatch.setattr(ppo, "policy_loss", recording_policy_loss)
    history = run_stage(tmp_path, tiny_policy_dir, tiny_rm_dir, ppo_epochs=2, minibatches=2, lr=3e-3)
    first = calls[0]  # the first minibatch, before any optimiser step
    assert first["ratio"] == pytest.approx(1.0, abs=1e-5)
    assert first["approxkl"] == pytest.approx(0.0, abs=1e-8)
    assert first["clipfrac"] == 0.0
    assert history[0]["objective/kl"] == 0.0
    assert history[0]["objective/non_score_reward"] == 0.0
    assert history[0]["heldout/kl"] == pytest.approx(0.0, abs=1e-4)
    assert history[-1]["heldout/kl"] != pytest.approx(0.0, abs=1e-4)  # and it does move afterwards


# row 6
def test_dropout_is_off_in_every_model(tmp_path, task):
    from transformers import AutoModelForSequenceClassification, GPT2Config, GPT2LMHeadModel

    from compare.lm.tiny import build_word_tokenizer

    tok = build_word_tokenizer(task.vocabulary())
    config = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2)
    config.pad_token_id, config.eos_token_id = tok.pad_token_id, tok.eos_token_id
    assert config.resid_pdrop > 0  # transformers' GPT-2 default: dropout on
    save_model(GPT2LMHeadModel(config), tok, tmp_path / "policy")
    rm = AutoModelForSequenceClassification.from_pretrained(tmp_path / "policy", num_labels=1)
    save_model(rm, tok, tmp_path / "rm")
    models = ppo.load_models(inputs(tmp_path / "policy", tmp_path / "rm"), "model", None)
    batch = hand_batch(tok, ["movie review : i had high hopes ."], [" the plot is good . " + EOS])
    ids = torch.cat([batch.prompt_ids, batch.response_ids], 1)
    with_dropout = GPT2LMHeadModel(config).train()
    assert not torch.equal(with_dropout(input_ids=ids).logits, with_dropout(input_ids=ids).logits)
    for model in (models.policy, models.ref, models.value, models.rm):
        model.train()
        assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)


# row 7
def test_rollout_pads_everything_after_the_first_eos(models, task):
    tok = models.tokenizer
    batch = a_rollout(models, task, n=16)
    for row, valid, ended in zip(batch.response_ids.tolist(), batch.mask.tolist(), batch.has_eos.tolist()):
        n = sum(valid)
        assert valid == [True] * n + [False] * (len(row) - n)
        assert all(t == tok.pad_token_id for t in row[n:])
        assert tok.eos_token_id not in row[: n - 1]
        assert ended == (row[n - 1] == tok.eos_token_id)


# row 8
def test_rm_score_is_read_at_the_last_token_and_matches_the_pooled_logit(models, task, tiny_rm_dir):
    from transformers import AutoModelForSequenceClassification

    tok = models.tokenizer
    batch = a_rollout(models, task)
    hf_rm = AutoModelForSequenceClassification.from_pretrained(tiny_rm_dir).eval()
    with torch.no_grad():
        scores = ppo.score_responses(batch, tok, None, models.rm)
        texts = [p + c + EOS for p, c in zip(batch.prompts, batch.completions)]
        enc = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        assert tok.padding_side == "right" and (enc["attention_mask"] == 0).any()
        pooled = hf_rm(**enc).logits[:, 0]  # transformers' own pooling: the last non-pad token
        torch.testing.assert_close(scores, pooled, atol=1e-5, rtol=0)
        torch.testing.assert_close(
            scores, torch.tensor(reward_scores(models.rm, tok, batch.prompts, batch.completions))
        )
        ids, mask = enc["input_ids"], enc["attention_mask"]
        more_pads = torch.cat([ids, torch.full((len(ids), 5), tok.pad_token_id)], 1)
        longer = sequence_scores(models.rm, more_pads, torch.cat([mask, torch.zeros_like(mask[:, :5])], 1))
        torch.testing.assert_close(longer, pooled, atol=1e-5, rtol=0)


# row 9
def test_missing_eos_penalty_counts_only_the_response(models):
    tok = models.tokenizer
    prompts = [
        "movie review : it was good . " + EOS + " i had high hopes .",
        "movie review : i had high hopes .",
    ]
    batch = hand_batch(tok, prompts, [" the plot is good .", " the plot is good . " + EOS])
    assert tok.eos_token_id in batch.prompt_ids[0].tolist()
    assert batch.has_eos.tolist() == [False, True]
    with torch.no_grad():
        raw = ppo.score_responses(batch, tok, None, models.rm)
        penalised = ppo.score_responses(batch, tok, 1.0, models.rm)
    torch.testing.assert_close(penalised, raw - torch.tensor([1.0, 0.0]))
    gold = ppo.score_responses(batch, tok, 0.5, task=ConstantGold())
    assert gold.tolist() == [0.5, 1.0]


class ConstantGold:
    def gold_rewards(self, prompts: list[str], completions: list[str]) -> list[float]:
        return [1.0] * len(prompts)


# row 16
def test_initial_values_equal_the_reward_models_per_token_outputs(models, task, tiny_policy_dir):
    batch = a_rollout(models, task)
    outputs = []
    hook = models.rm.score.register_forward_hook(lambda m, i, o: outputs.append(o))
    ids = torch.cat([batch.prompt_ids, batch.response_ids], 1)
    mask = torch.cat([batch.prompt_mask, batch.mask.long()], 1)
    with torch.no_grad():
        models.rm(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0))
        hook.remove()
        expected = outputs[0][:, batch.prompt_ids.shape[1] - 1 : -1, 0]
        torch.testing.assert_close(ppo.compute_values(models.value, batch), expected)
        gold_models = ppo.load_models(inputs(tiny_policy_dir), "gold", None)
        assert gold_models.rm is None
        assert torch.count_nonzero(ppo.compute_values(gold_models.value, batch)) == 0


# row 17
def test_optimiser_steps_per_rollout_are_epochs_times_minibatches(models, task, monkeypatch):
    steps = []
    original = torch.optim.AdamW.step

    def counting_step(self, *args, **kwargs):
        steps.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counting_step)
    s = settings(episodes=16, rollout_batch_size=8, ppo_epochs=3, minibatches=2, gold_eval_every=100)
    history = ppo.train(models, task, s, 0, ppo.make_accelerator(), Context())
    assert len(history) == 2 + 1  # two rollout batches and the final held-out check
    assert len(steps) == 2 * 3 * 2


# row 19
def test_one_seed_gives_identical_metrics(tmp_path, tiny_policy_dir, tiny_rm_dir):
    def metrics(folder):
        history = run_stage(tmp_path / folder, tiny_policy_dir, tiny_rm_dir, seed=7)
        return [{k: v for k, v in e.items() if not k.startswith("time/")} for e in history]

    assert json.dumps(metrics("a")) == json.dumps(metrics("b"))  # NaN-safe equality


# row 20
def test_reference_is_frozen_and_separate(models, task):
    assert models.ref is not models.policy
    ref_before = {k: v.clone() for k, v in models.ref.state_dict().items()}
    policy_before = {k: v.clone() for k, v in models.policy.state_dict().items()}
    ppo.train(models, task, settings(gold_eval_every=100), 0, ppo.make_accelerator(), Context())
    for name, value in models.ref.state_dict().items():
        assert torch.equal(value, ref_before[name]), name
    assert any(not torch.equal(v, policy_before[k]) for k, v in models.policy.state_dict().items())


# smoke tests
@pytest.mark.parametrize("reward", ["model", "gold"])
def test_run_writes_a_trained_policy_and_every_metric(tmp_path, tiny_policy_dir, tiny_rm_dir, reward):
    history = run_stage(tmp_path, tiny_policy_dir, tiny_rm_dir if reward == "model" else None, reward=reward)
    start, _ = load_policy(tiny_policy_dir)
    trained, tokenizer = load_policy(tmp_path)
    assert tokenizer.pad_token_id == start.config.pad_token_id
    changed = [not torch.equal(a, b) for a, b in zip(start.parameters(), trained.parameters())]
    assert all(changed), f"{changed.count(False)} of {len(changed)} parameter tensors did not change"
    steps = [e for e in history if "loss" in e]
    assert [e["step"] for e in history] == [0, 1, 2] and len(steps) == 2
    for entry in steps:
        assert set(METRICS) <= set(entry)
        assert all(math.isfinite(entry[k]) for k in METRICS)
    for entry in (history[0], history[-1]):
        assert set(HELDOUT) <= set(entry)
        assert math.isnan(entry["heldout/proxy"]) == (reward == "gold")
    assert history[-1]["episode"] == 16


def test_lora_run_keeps_the_adapter_disabled_base_as_reference(tmp_path, tiny_policy_dir, tiny_rm_dir, task):
    models = ppo.load_models(inputs(tiny_policy_dir, tiny_rm_dir), "model", lora_r=4)
    assert models.ref is None
    # the value model trains adapters and its scalar head only
    trainable = [n for n, p in models.value.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "score" in n for n in trainable)
    assert any("score" in n for n in trainable)
    history = ppo.train(models, task, settings(lora_r=4, lr=1e-2), 0, ppo.make_accelerator(), Context())
    base, tok = load_policy(tiny_policy_dir)
    batch = hand_batch(tok, ["movie review : i had high hopes ."], [" the plot is good . " + EOS])
    with torch.no_grad():
        with ppo.reference(models) as ref:
            torch.testing.assert_close(ppo.policy_logits(ref, batch, T), ppo.policy_logits(base, batch, T))
        assert not torch.allclose(
            ppo.policy_logits(models.policy, batch, T), ppo.policy_logits(base, batch, T)
        )
    ppo.save_policy(models, tmp_path)
    merged, _ = load_policy(tmp_path)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert any(not torch.equal(a, b) for a, b in zip(base.parameters(), merged.parameters()))
    assert all(math.isfinite(e["loss"]) for e in history if "loss" in e)


@pytest.mark.skipif(torch.cuda.is_available(), reason="bf16_cpu is about the CPU; a GPU uses bf16 anyway")
def test_bf16_on_the_cpu_runs_ppo_under_bfloat16_autocast(tiny_policy_dir, tiny_rm_dir, task):
    """bf16_cpu: the accelerator's autocast is bfloat16 on the CPU; PPO trains with finite numbers and ends
    somewhere else than in float32 (bf16's rounding), its weights still float32. One process, both
    precisions in turn: accelerate's per-process state is reset between them."""
    ends = {}
    for bf16 in (False, True, False):
        accelerator = ppo.make_accelerator(bf16_cpu=bf16)
        assert accelerator.mixed_precision == ("bf16" if bf16 else "no")
        models = ppo.load_models(inputs(tiny_policy_dir, tiny_rm_dir), "model", None)
        history = ppo.train(
            models, task, settings(episodes=16, rollout_batch_size=8), 0, accelerator, Context()
        )
        assert all(math.isfinite(e["loss"]) for e in history if "loss" in e)
        ends.setdefault(bf16, dict(models.policy.named_parameters()))
    assert all(p.dtype == torch.float32 for p in ends[True].values())
    assert any(not torch.allclose(ends[False][k], ends[True][k], atol=1e-6) for k in ends[False])
