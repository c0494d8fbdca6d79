"""Chat templates end to end: a tiny model whose tokenizer has a template is trained and sampled on the
templated token ids in every stage (compare/lm/chat.py).

The model is built here: a 1-layer GPT-2 over the reviews words, its word-level tokenizer given two
special tokens (<|user|>, <|assistant|>) and a template that ends the assistant's turn with EOS.
"""

import json
import random

import pytest
import torch
from conftest import reward_model_from

from compare.lm import chat
from compare.lm.external import Source, materialize
from compare.lm.loading import load_policy, load_reward_model, save_model
from compare.lm.sampling import (
    completion_logprobs,
    left_pad,
    reward_function,
    reward_scores,
    right_pad,
    sample,
    sequence_scores,
)
from compare.lm.tiny import build_word_tokenizer, tiny_gpt2
from compare.stages import dpo, kto, ppo, rloo, rm, sft
from compare.stages.common import Context, write_jsonl
from compare.stages.spec import Job

TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ ' <eos>' }}{% endif %}{{ ' ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
CTX = Context()


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory, task):
    path = tmp_path_factory.mktemp("chat_policy")
    tokenizer = build_word_tokenizer(task.vocabulary())
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>"]})
    tokenizer.chat_template = TEMPLATE
    torch.manual_seed(0)
    save_model(tiny_gpt2(tokenizer, n_layer=1, n_head=2, n_embd=32, n_positions=96), tokenizer, path)
    return path


@pytest.fixture(scope="module")
def chat_rm_dir(tmp_path_factory, chat_dir):
    return reward_model_from(chat_dir, tmp_path_factory.mktemp("chat_rm"))


@pytest.fixture(scope="module")
def tok(chat_dir):
    return load_policy(chat_dir)[1]


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def templated_prompt(tokenizer, prompt: str) -> list[int]:
    """By hand: what the template renders for a user turn and the generation prompt."""
    return ids(tokenizer, f"<|user|> {prompt} <|assistant|>")


def templated_turn(tokenizer, completion: str) -> list[int]:
    return ids(tokenizer, f"{completion} <eos>")


@pytest.fixture(scope="module")
def rows(task):
    rng = random.Random(0)
    prompts = task.prompts("train")[:8]
    return [
        {"prompt": p, "chosen": task.demonstrate(p, rng), "rejected": " the food is bad ."} for p in prompts
    ]


# -- the helpers ------------------------------------------------------------------------------------------
def test_plain_tokenizer_is_unchanged(tiny_policy_dir, task):
    _, plain = load_policy(tiny_policy_dir)
    prompts = task.prompts("train")[:2]
    assert not chat.uses_chat(plain)
    assert chat.prompt_token_ids(plain, prompts) == [ids(plain, p) for p in prompts]
    assert chat.scored_token_ids(plain, prompts, [" good", " bad"]) == [
        ids(plain, prompts[0] + " good<eos>"),
        ids(plain, prompts[1] + " bad<eos>"),
    ]
    assert chat.conversational(plain, [{"prompt": "a", "completion": "b"}]) == [
        {"prompt": "a", "completion": "b"}
    ]


def test_template_helpers(tok, task):
    prompt = task.prompts("train")[0]
    assert chat.uses_chat(tok)
    assert chat.prompt_token_ids(tok, [prompt]) == [templated_prompt(tok, prompt)]
    scored = chat.scored_token_ids(tok, [prompt], [" good ."])[0]
    assert scored == templated_prompt(tok, prompt) + templated_turn(tok, " good .")
    row = chat.conversational(tok, [{"prompt": prompt, "chosen": "x", "rejected": "y", "label": True}])[0]
    assert row == {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": "x"}],
        "rejected": [{"role": "assistant", "content": "y"}],
        "label": True,
    }
    assert chat.prompt_text(row["prompt"]) == prompt


def test_a_system_turn_goes_before_every_prompt(tok, task):
    import copy

    prompt = task.prompts("train")[0]
    sys_tok = copy.deepcopy(tok)
    sys_tok.init_kwargs[chat.SYSTEM_PROMPT] = "the food is good ."
    system = ids(sys_tok, "<|system|> the food is good . ")
    assert chat.system_turn(tok) == []
    assert chat.prompt_token_ids(sys_tok, [prompt]) == [system + templated_prompt(sys_tok, prompt)]
    scored = chat.scored_token_ids(sys_tok, [prompt], [" good ."])[0]
    assert scored == system + templated_prompt(sys_tok, prompt) + templated_turn(sys_tok, " good .")
    row = chat.conversational(sys_tok, [{"prompt": prompt, "completion": "x"}])[0]
    assert row["prompt"] == [
        {"role": "system", "content": "the food is good ."},
        {"role": "user", "content": prompt},
    ]
    assert chat.prompt_text(row["prompt"]) == prompt  # what a reward function hands the task
    # an empty system turn is a turn too (a template then leaves out its default)
    sys_tok.init_kwargs[chat.SYSTEM_PROMPT] = ""
    assert chat.system_turn(sys_tok) == [{"role": "system", "content": ""}]


# -- the base stage keeps or drops the template -------------------------------------------------------------
def test_base_saves_the_system_prompt_with_the_tokenizer(chat_dir, tiny_policy_dir, tmp_path):
    materialize(Source(str(chat_dir)), tmp_path / "a", system_prompt="the food is good .")
    _, tokenizer = load_policy(tmp_path / "a")
    assert chat.system_turn(tokenizer) == [{"role": "system", "content": "the food is good ."}]
    save_model(load_policy(tmp_path / "a")[0], tokenizer, tmp_path / "b")  # as every stage saves its output
    assert chat.system_turn(load_policy(tmp_path / "b")[1]) == chat.system_turn(tokenizer)
    with pytest.raises(ValueError, match="no chat template"):
        materialize(Source(str(tiny_policy_dir)), tmp_path / "c", system_prompt="x")
    with pytest.raises(ValueError, match="no chat template"):
        materialize(Source(str(chat_dir)), tmp_path / "d", chat_template=False, system_prompt="x")


@pytest.mark.parametrize("keep", [True, False])
def test_base_keeps_the_template_unless_none(chat_dir, tmp_path, keep):
    materialize(Source(str(chat_dir)), tmp_path, chat_template=keep)
    _, tokenizer = load_policy(tmp_path)
    assert chat.uses_chat(tokenizer) is keep


# -- sampling and log-probs start from the templated prompt ---------------------------------------------------
def test_sampler_and_logprobs_read_templated_prompts(chat_dir, task):
    model, tokenizer = load_policy(chat_dir)
    prompts = task.prompts("train")[:3]
    seen = []
    hook = model.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["input_ids"].clone()), with_kwargs=True
    )
    samples = sample(model, tokenizer, prompts, 2, 8, 1.0, seed=0)
    hook.remove()
    rows = [templated_prompt(tokenizer, p) for p in prompts for _ in range(2)]
    assert torch.equal(seen[0], left_pad(rows, tokenizer.pad_token_id)[0])
    # recomputed log-probs put the completions after the same templated prompts
    lp = completion_logprobs(model, tokenizer, samples.prompts, samples.completion_ids, 1.0)
    assert lp == pytest.approx(samples.logprobs, abs=1e-4)


def test_reward_model_scores_the_templated_conversation(chat_rm_dir, task):
    model, tokenizer = load_reward_model(chat_rm_dir)
    prompts, completions = task.prompts("train")[:2], [" the food is good .", " bad"]
    rows = [
        templated_prompt(tokenizer, p) + templated_turn(tokenizer, c) for p, c in zip(prompts, completions)
    ]
    id_tensor, mask = right_pad(rows, tokenizer.pad_token_id)
    expected = sequence_scores(model, id_tensor, mask).tolist()
    assert reward_scores(model, tokenizer, prompts, completions) == pytest.approx(expected, abs=1e-6)


# -- every TRL stage trains on the templated ids --------------------------------------------------------------
@pytest.fixture
def captured(monkeypatch):
    """The trainer a stage builds, kept instead of trained."""
    trainers = []

    def keep(trainer, out, ctx):
        trainers.append(trainer)

    for module in (sft, dpo, rm):
        monkeypatch.setattr(module, "train_and_save", keep)
    return trainers


def test_sft_trains_on_templated_ids(chat_dir, rows, tmp_path, captured):
    demos = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows]
    sft.train_sft(demos, Job(sft.SFTSettings(epochs=1, batch_size=4), 0), tmp_path, {"model": chat_dir}, CTX)
    trainer = captured[0]
    tokenizer = trainer.processing_class
    first = trainer.train_dataset[0]
    prompt = templated_prompt(tokenizer, demos[0]["prompt"])
    assert first["input_ids"] == prompt + templated_turn(tokenizer, demos[0]["completion"])
    # the loss is on the assistant's turn only: the templated prompt's labels are masked out
    assert first["labels"] == [-100] * len(prompt) + first["input_ids"][len(prompt) :]


def write_comparisons(folder, rows):
    folder.mkdir()
    write_jsonl(folder / "comparisons.jsonl", rows)
    return folder


def test_dpo_trains_on_templated_ids(chat_dir, rows, tmp_path, captured):
    data = write_comparisons(tmp_path / "data", rows)
    dpo.run(Job(dpo.DPOSettings(epochs=1, batch_size=4), 0), tmp_path, {"model": chat_dir, "data": data}, CTX)
    trainer = captured[0]
    tokenizer, first = trainer.processing_class, trainer.train_dataset[0]
    assert first["prompt_ids"] == templated_prompt(tokenizer, rows[0]["prompt"])
    assert first["chosen_ids"] == templated_turn(tokenizer, rows[0]["chosen"])
    assert first["rejected_ids"] == templated_turn(tokenizer, rows[0]["rejected"])


def test_rm_trains_on_what_scoring_reads(chat_dir, rows, tmp_path, captured):
    data = write_comparisons(tmp_path / "data", rows)
    rm.train_reward_model(
        rm.RewardSettings(epochs=1, batch_size=4), 0, tmp_path, {"model": chat_dir, "data": data}, CTX
    )
    trainer = captured[0]
    tokenizer, first = trainer.processing_class, trainer.train_dataset[0]
    assert (
        first["chosen_ids"] == chat.scored_token_ids(tokenizer, [rows[0]["prompt"]], [rows[0]["chosen"]])[0]
    )
    assert first["chosen_ids"] == templated_prompt(tokenizer, rows[0]["prompt"]) + templated_turn(
        tokenizer, rows[0]["chosen"]
    )


def test_kto_trains_on_templated_ids(chat_dir, rows, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(
        data / "labels.jsonl", [{"prompt": r["prompt"], "completion": r["chosen"], "label": 1} for r in rows]
    )
    trainer = kto.build_trainer(Job(kto.KTOSettings(epochs=1, batch_size=4), 0), tmp_path, {"model": chat_dir, "data": data}, CTX)  # fmt: skip
    tokenizer, first = trainer.processing_class, trainer.train_dataset[0]
    assert first["prompt_ids"] == templated_prompt(tokenizer, rows[0]["prompt"])
    assert first["completion_ids"] == templated_turn(tokenizer, rows[0]["chosen"])


def test_rloo_samples_from_templated_prompts(chat_dir, chat_rm_dir, task, tmp_path):
    job = Job(rloo.RLOOSettings(episodes=4, batch_size=4, num_generations=2), 0, task={"name": "reviews", "seed": 0, "train_prompts": 64, "eval_prompts": 8})  # fmt: skip
    trainer = rloo.build_trainer(job, tmp_path, {"model": chat_dir, "reward_model": chat_rm_dir}, CTX)
    tokenizer = trainer.processing_class
    prompt = trainer.train_dataset[0]["prompt"]
    assert prompt == chat.user(chat.prompt_text(prompt))
    prompt_ids, _, _ = trainer._tokenize_prompts([prompt])
    assert prompt_ids[0] == templated_prompt(tokenizer, chat.prompt_text(prompt))
    # its reward function, handed conversational prompts, scores the templated conversation
    rm_model, rm_tokenizer = load_reward_model(chat_rm_dir)
    completion = templated_turn(tokenizer, " the food is good .")
    score = reward_function(tokenizer, lambda p, c: reward_scores(rm_model, rm_tokenizer, p, c), "rm")
    expected = reward_scores(rm_model, rm_tokenizer, [chat.prompt_text(prompt)], [" the food is good ."])
    assert score([prompt], [completion]) == pytest.approx(expected, abs=1e-6)


# -- our PPO rolls out from, and scores, the templated ids ----------------------------------------------------
def test_ppo_rollout_and_score_are_templated(chat_dir, chat_rm_dir, task):
    models = ppo.load_models({"model": chat_dir, "reward_model": chat_rm_dir}, "model", lora_r=None)
    prompts = task.prompts("train")[:3]
    batch = ppo.rollout(models.policy, models.tokenizer, prompts, 8, 1.0, seed=0)
    expected_prompts = left_pad(
        [templated_prompt(models.tokenizer, p) for p in prompts], models.tokenizer.pad_token_id
    )
    assert torch.equal(batch.prompt_ids, expected_prompts[0])
    scores = ppo.score_responses(batch, models.tokenizer, None, rm=models.rm)
    expected = reward_scores(models.rm, models.tokenizer, prompts, batch.completions)
    assert scores.tolist() == pytest.approx(expected, abs=1e-5)


def test_config_round_trip(chat_dir):
    """The template is saved with the tokenizer, so every stage's output folder carries it on."""
    _, tokenizer = load_policy(chat_dir)
    assert (
        json.loads((chat_dir / "tokenizer_config.json").read_text()).get("chat_template")
        or (chat_dir / "chat_template.jinja").is_file()
    )
    assert tokenizer.chat_template == TEMPLATE


# -- a micro suite on the templated model: every arm trains, evaluates and reports --------------------------
@pytest.mark.slow
def test_micro_suite_with_a_chat_template(chat_dir, tmp_path):
    import pandas as pd
    import yaml

    from compare.cli import main

    suite = {
        "name": "chat",
        "description": "a tiny model with a chat template",
        "task": {"train_prompts": 64, "eval_prompts": 4},
        "base": {"model": str(chat_dir), "system_prompt": "the food is good ."},
        "budget": {"units": 48, "cost": {"demonstration": 4, "comparison": 1}},
        "stages": {
            "sft": {"epochs": 1, "batch_size": 8},
            "dpo": {"epochs": 1, "batch_size": 8},
            "rm": {"epochs": 1, "batch_size": 8},
            "ppo": {"episodes": 8, "rollout_batch_size": 4, "ppo_epochs": 1, "max_new_tokens": 8, "gold_eval_prompts": 4},
            "rloo": {"episodes": 4, "batch_size": 4, "num_generations": 2, "max_new_tokens": 8},
        },
        "arms": {"base": {"recipe": []}, "sft": {"recipe": ["sft"]}, "dpo": {"recipe": ["dpo"]},
                 "ppo": {"recipe": ["rm", "ppo"]}, "rloo": {"recipe": ["rm", "rloo"]}},
        "grid": {"seed": [0]},
        "eval": {"samples_per_prompt": 2, "max_new_tokens": 8},
    }  # fmt: skip
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "report"
    assert (
        main(["run", str(path), "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--threads", "1"])
        == 0
    )
    results = pd.read_csv(out / "results.csv")
    assert set(results["arm"]) == {"base", "sft", "dpo", "ppo", "rloo"}
    assert results["gold_reward"].notna().all()
    # every trained arm moved away from the base under the templated prompts
    assert results.loc[results["arm"] != "base", "kl_to_base"].ne(0).all()
    (base,) = (tmp_path / "cache").glob("base-*")
    assert load_policy(base)[1].chat_template == TEMPLATE
    # the system turn travels with every stage's saved tokenizer (each trained model's folder)
    configs = list((tmp_path / "cache").glob("*/**/tokenizer_config.json"))
    assert {c.parts[len((tmp_path / "cache").parts)].split("-")[0] for c in configs} >= {
        "base",
        "sft",
        "dpo",
        "ppo",
        "rloo",
    }
    assert all(json.loads(c.read_text()).get(chat.SYSTEM_PROMPT) == "the food is good ." for c in configs)
