"""Training that goes non-finite fails with `NonFiniteError` before saving; progress bars follow the context."""

from __future__ import annotations

import json
import math

import pytest
import torch

from compare.lm.loading import load_policy
from compare.lm.tiny import build_word_tokenizer, tiny_gpt2
from compare.runner import run_stage
from compare.stages import ppo
from compare.stages.common import Context, NonFiniteError, check_finite, trainer_args
from compare.stages.dpo import DPOSettings
from compare.stages.ppo import PPOSettings
from compare.stages.sft import SFTSettings

WEIGHT = "transformer.h.0.attn.c_attn.weight"


@pytest.fixture(autouse=True, scope="module")
def one_thread_and_no_leaked_rng():
    """As in test_ppo: one intra-op thread, and torch's global RNG restored for later test modules."""
    threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.random.set_rng_state(rng)


@pytest.fixture(scope="module")
def task_params():
    return {"name": "reviews", "seed": 0, "demonstrator_quality": 0.6, "train_prompts": 64, "eval_prompts": 8,
            "annotator": {"temperature": 0.25, "flip_rate": 0.0}}  # fmt: skip


@pytest.fixture(scope="module")
def comparisons_dir(tmp_path_factory, task_params, tiny_policy_dir):
    out = tmp_path_factory.mktemp("comparisons")
    params = {"task": task_params, "n": 16, "seed": 0, "max_new_tokens": 16}
    run_stage("comparisons", params, out, {"policy": tiny_policy_dir}, Context())
    return out


@pytest.fixture(scope="module")
def demos_dir(tmp_path_factory, task_params):
    out = tmp_path_factory.mktemp("demos")
    run_stage("demos", {"task": task_params, "n": 16, "seed": 0}, out, {}, Context())
    return out


def saved_nothing(out) -> bool:
    return not any(out.rglob("*.safetensors")) and not (out / "log_history.json").exists()


# -- (a) the trainer callback ----------------------------------------------------------------------------
def on_log(logs: dict, step: int = 3):
    """Hand `logs` to the callback through transformers' own CallbackHandler, as `Trainer.log` does."""
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from transformers.trainer_callback import CallbackHandler

    from compare.stages.common import FiniteLogsCallback

    handler = CallbackHandler([FiniteLogsCallback()], None, None, None, None)
    args = TrainingArguments(output_dir="unused", report_to="none")
    handler.on_log(args, TrainerState(global_step=step), TrainerControl(), logs)


def test_callback_passes_finite_logs_and_other_numbers():
    on_log({"loss": 0.69, "grad_norm": 1.2, "learning_rate": 1e-3, "rewards/margins": -0.5, "epoch": 0.5})
    on_log({"train_loss": 0.7, "train_runtime": 1.0})
    # numbers that are not training quantities, and TRL's None for "no valid value", are left alone
    on_log({"loss": 0.5, "clip_ratio/low_min": math.nan, "reward": None, "frac_reward_zero_std": math.nan})


@pytest.mark.parametrize(
    "logs,message",
    [({"loss": math.nan, "grad_norm": 1.0}, "loss is nan at step 3"),
     ({"loss": 0.5, "grad_norm": math.inf}, "grad_norm is inf at step 3"),
     ({"loss": -math.inf}, "loss is -inf at step 3"),
     ({"loss": 0.5, "rewards/margins": math.nan}, "rewards/margins is nan at step 3"),
     ({"loss": 0.5, "reward": math.inf}, "reward is inf at step 3"),
     ({"loss": 0.5, "margin": math.nan}, "margin is nan at step 3")],
)  # fmt: skip
def test_callback_raises_on_a_non_finite_training_number(logs, message):
    with pytest.raises(NonFiniteError, match=message):
        on_log(logs)


def test_non_finite_error_is_a_runtime_error():
    assert issubclass(NonFiniteError, RuntimeError)


# -- (b) the weights check -------------------------------------------------------------------------------
@pytest.fixture
def small_model(task):
    torch.manual_seed(0)
    return tiny_gpt2(build_word_tokenizer(task.vocabulary()), n_layer=1, n_head=2, n_embd=16, n_positions=16)


def test_check_finite_passes_a_normal_model(small_model):
    check_finite(small_model, "weights after training")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_check_finite_names_the_broken_parameter(small_model, value):
    with torch.no_grad():
        small_model.get_parameter(WEIGHT)[3, 5] = value
    with pytest.raises(NonFiniteError, match=rf"weights after training not finite: {WEIGHT} \(") as err:
        check_finite(small_model, "weights after training")
    assert ("1 nan" if math.isnan(value) else "1 inf") in str(err.value)


def test_check_finite_checks_float_buffers(small_model):
    small_model.register_buffer("running_scale", torch.tensor([1.0, math.nan]))
    with pytest.raises(NonFiniteError, match="running_scale"):
        check_finite(small_model, "weights")


# -- (c) TRL stages --------------------------------------------------------------------------------------
def test_dpo_with_a_huge_learning_rate_fails_at_the_first_nan_loss(
    tmp_path, tiny_policy_dir, comparisons_dir
):
    # 16 pairs, batch 8: step 1 moves every weight by ~1e20, step 2's loss is nan
    params = {"train": DPOSettings(epochs=1, lr=1e20, batch_size=8).model_dump(), "seed": 0}
    with pytest.raises(NonFiniteError, match="loss is nan.* at step 2"):
        run_stage("dpo", params, tmp_path, {"model": tiny_policy_dir, "data": comparisons_dir}, Context())
    assert saved_nothing(tmp_path)


def test_sft_with_a_huge_learning_rate_fails_too(tmp_path, tiny_policy_dir, demos_dir):
    params = {"train": SFTSettings(epochs=1, lr=1e20, batch_size=8).model_dump(), "seed": 0}
    with pytest.raises(NonFiniteError, match="at step 2"):
        run_stage("sft", params, tmp_path, {"model": tiny_policy_dir, "data": demos_dir}, Context())
    assert saved_nothing(tmp_path)


@pytest.mark.parametrize("lora_r", [None, 4])
def test_non_finite_weights_after_training_are_not_saved(
    tmp_path, monkeypatch, tiny_policy_dir, comparisons_dir, lora_r
):
    """Losses all finite, weights broken after the last step (which no loss sees): the weights check."""
    from trl import DPOTrainer

    train = DPOTrainer.train

    def train_then_break_a_weight(self, *args, **kwargs):
        result = train(self, *args, **kwargs)
        with torch.no_grad():
            if lora_r:  # an adapter, which the merge spreads into the layer's weight
                name = next(n for n, _ in self.model.named_parameters() if "c_attn.lora_B" in n)
            else:
                name = WEIGHT
            self.model.get_parameter(name).fill_(math.nan)
        return result

    monkeypatch.setattr(DPOTrainer, "train", train_then_break_a_weight)
    params = {"train": DPOSettings(epochs=1, lr=1e-3, batch_size=8, lora_r=lora_r).model_dump(), "seed": 0}
    with pytest.raises(NonFiniteError, match=f"weights after training not finite: {WEIGHT}"):
        run_stage("dpo", params, tmp_path, {"model": tiny_policy_dir, "data": comparisons_dir}, Context())
    assert saved_nothing(tmp_path)


# -- (d) our PPO -----------------------------------------------------------------------------------------
def run_ppo(tmp_path, policy_dir, rm_dir, ctx=None, **overrides):
    small = dict(episodes=16, rollout_batch_size=8, max_new_tokens=12, lr=1e-3, gold_eval_prompts=4)
    params = {
        "train": PPOSettings(**{**small, **overrides}).model_dump(),
        "seed": 0,
        "task": {"name": "reviews", "seed": 0, "train_prompts": 64, "eval_prompts": 8},
    }
    run_stage("ppo", params, tmp_path, {"model": policy_dir, "reward_model": rm_dir}, ctx or Context())
    return json.loads((tmp_path / "log_history.json").read_text())


def test_ppo_with_a_huge_learning_rate_fails_at_the_first_nan_loss(tmp_path, tiny_policy_dir, tiny_rm_dir):
    # the first minibatch update moves every weight by ~1e20; the second minibatch's loss is nan
    with pytest.raises(
        NonFiniteError, match=r"^loss is nan.* at step 0 \(first at minibatch update 2 of 4\)"
    ):
        run_ppo(tmp_path, tiny_policy_dir, tiny_rm_dir, lr=1e20, ppo_epochs=1, minibatches=4)
    assert saved_nothing(tmp_path)


def test_ppo_one_huge_update_fails_when_sampling_not_with_torchs_error(
    tmp_path, tiny_policy_dir, tiny_rm_dir
):
    # one update per rollout batch: no loss sees the huge (finite) weights; the next rollout's logits overflow
    with pytest.raises(NonFiniteError, match="not finite when sampling at step 1") as err:
        run_ppo(tmp_path, tiny_policy_dir, tiny_rm_dir, lr=1e20, ppo_epochs=1, minibatches=1)
    assert isinstance(err.value.__cause__, RuntimeError)  # torch.multinomial's, kept as the cause
    assert saved_nothing(tmp_path)


def test_ppo_checks_the_weights_after_each_rollout_batch(tmp_path, monkeypatch, tiny_policy_dir, tiny_rm_dir):
    """An update that breaks a weight while its loss was finite stops training at that batch."""
    adamw = torch.optim.AdamW

    class BreakingAdamW(adamw):
        def step(self, closure=None):
            result = super().step(closure)
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(math.nan)  # the policy's token embeddings
            return result

    monkeypatch.setattr(torch.optim, "AdamW", BreakingAdamW)
    with pytest.raises(NonFiniteError, match=r"weights after the updates of step 0 not finite: policy\."):
        run_ppo(tmp_path, tiny_policy_dir, tiny_rm_dir, ppo_epochs=1, minibatches=1)
    assert saved_nothing(tmp_path)


def test_ppo_checks_the_scores(tmp_path, monkeypatch, tiny_policy_dir, tiny_rm_dir):
    score = ppo.score_responses

    def one_nan_score(*args, **kwargs):
        scores = score(*args, **kwargs)
        return torch.where(torch.arange(len(scores)) == 2, math.nan, scores)

    monkeypatch.setattr(ppo, "score_responses", one_nan_score)
    with pytest.raises(NonFiniteError, match="^objective/scores is nan.* at step 0"):
        run_ppo(tmp_path, tiny_policy_dir, tiny_rm_dir)
    assert saved_nothing(tmp_path)


@pytest.mark.parametrize("lora_r", [None, 4])
def test_ppo_saves_no_policy_with_non_finite_weights(tmp_path, tiny_policy_dir, tiny_rm_dir, lora_r):
    models = ppo.load_models({"model": tiny_policy_dir, "reward_model": tiny_rm_dir}, "model", lora_r)
    with torch.no_grad():
        if lora_r:
            name = next(n for n, _ in models.policy.named_parameters() if "c_attn.lora_B" in n)
        else:
            name = WEIGHT
        models.policy.get_parameter(name).fill_(math.inf)
    with pytest.raises(NonFiniteError, match=f"policy weights after training not finite: {WEIGHT}"):
        ppo.save_policy(models, tmp_path)
    assert saved_nothing(tmp_path)


def test_ppo_still_trains_and_saves(tmp_path, tiny_policy_dir, tiny_rm_dir):
    history = run_ppo(tmp_path, tiny_policy_dir, tiny_rm_dir)
    assert all(math.isfinite(h["loss"]) for h in history if "loss" in h)
    load_policy(tmp_path)


# -- (e) progress bars -----------------------------------------------------------------------------------
def test_trainer_progress_bar_follows_the_context(tmp_path):
    from trl import SFTConfig

    train = SFTSettings(epochs=1, batch_size=8, lr=1e-3)
    assert trainer_args(SFTConfig, train, 0, tmp_path, Context()).disable_tqdm
    assert not trainer_args(SFTConfig, train, 0, tmp_path, Context(progress=True)).disable_tqdm
    assert not trainer_args(SFTConfig, train, 0, tmp_path, Context(verbose=True)).disable_tqdm
    # and a nan loss reaches the logs as nan (transformers' filter would log 0.0 at logging_steps=1)
    assert not trainer_args(SFTConfig, train, 0, tmp_path, Context()).logging_nan_inf_filter


def test_progress_shows_the_bar_without_the_per_step_logs(tmp_path, capsys, tiny_policy_dir, demos_dir):
    params = {"train": SFTSettings(epochs=1, lr=1e-3, batch_size=8).model_dump(), "seed": 0}
    (tmp_path / "quiet").mkdir()
    run_stage("sft", params, tmp_path / "quiet", {"model": tiny_policy_dir, "data": demos_dir}, Context())
    quiet = capsys.readouterr()
    assert "sft:" not in quiet.err and "'loss'" not in quiet.out
    (tmp_path / "bar").mkdir()
    run_stage(
        "sft", params, tmp_path / "bar", {"model": tiny_policy_dir, "data": demos_dir}, Context(progress=True)
    )
    shown = capsys.readouterr()
    assert "sft:   0%" in shown.err and "0/2" in shown.err  # the bar, named, over the 2 steps
    assert "'loss'" not in shown.out + shown.err  # transformers' ProgressCallback would print a dict per step


def test_ppo_progress_bar_follows_the_context(tmp_path, capsys, tiny_policy_dir, tiny_rm_dir):
    (tmp_path / "quiet").mkdir()
    (tmp_path / "bar").mkdir()
    run_ppo(tmp_path / "quiet", tiny_policy_dir, tiny_rm_dir, episodes=8)
    assert "ppo:" not in capsys.readouterr().err
    run_ppo(tmp_path / "bar", tiny_policy_dir, tiny_rm_dir, Context(progress=True), episodes=8)
    assert "ppo:" in capsys.readouterr().err
