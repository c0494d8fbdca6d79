"""Compute per stage (compare/compute.py): the FLOP estimate and the token counts, by hand."""

import json

import pytest

from compare.compute import Counter, Tokens, offline, rollouts, sampled


class WordTokenizer:
    """One token per word, as the tiny base's word-level tokenizer counts them."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def test_flops_are_6n_per_trained_and_2n_per_forwarded_token():
    assert Tokens(10, 5).flops(1000) == 6 * 1000 * 10 + 2 * 1000 * 5


def test_offline_and_sampled_counts_from_the_files(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = [
        {"prompt": "a b", "chosen": " c", "rejected": " d e"},
        {"prompt": "f", "chosen": " g", "rejected": " h"},
    ]
    (data / "comparisons.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    counter = Counter(WordTokenizer())
    both = 3 + 4 + 2 + 2  # prompt + chosen, prompt + rejected, per row
    dpo = offline("comparisons.jsonl", ("chosen", "rejected"), reference=True)
    assert dpo({"train": {"epochs": 3}}, tmp_path, {"data": data}, counter) == Tokens(3 * both, 3 * both)
    once = dpo({"train": {"epochs": 3, "precompute_ref": True}}, tmp_path, {"data": data}, counter)
    assert once == Tokens(3 * both, both)  # the reference's log-probs computed once
    sft = offline("comparisons.jsonl", ("chosen",))
    assert sft({"train": {"epochs": 2.0}}, tmp_path, {"data": data}, counter) == Tokens(2 * (3 + 2), 0.0)
    assert sampled("comparisons.jsonl", ("chosen", "rejected"))({}, data, {}, counter) == Tokens(0.0, both)


def test_rollouts_are_an_upper_bound():
    tokens = rollouts(completions=100, prompt=6.0, max_new=8, forward_passes=4, update_passes=2)
    assert tokens.trained == pytest.approx(100 * 14 * 2) and tokens.forwarded == pytest.approx(100 * 14 * 4)
    assert "max_new_tokens" in tokens.bound


def test_every_stage_an_arm_runs_says_how_its_tokens_are_counted():
    from compare.stages import SPECS

    # the evaluation and the demonstrator are the same for every arm: not an arm's training compute
    uncounted = {
        kind for kind, spec in SPECS.items() if spec.compute is None and spec.produces.value != "sampling"
    }
    assert uncounted == {"eval", "demonstrator"}
