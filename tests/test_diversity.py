"""Diversity metrics against hand-computed values."""

import math

import pytest

from compare.diversity import ead_n, self_bleu, within_and_across
from compare.metrics import distinct_n


def test_ead_n_hand_computed():
    # unigrams a b a: 2 distinct, C = 3, N = V = 2 -> E = 2 (1 - (1/2)^3) = 7/4 -> 2 / (7/4) = 8/7
    assert ead_n(["a b a"], 1, 2) == pytest.approx(8 / 7)
    # bigrams (a b) (b a) (a b): 2 distinct, C = 3, N = 2^2 = 4 -> E = 4 (1 - (3/4)^3) = 37/16 -> 32/37
    assert ead_n(["a b a b"], 2, 2) == pytest.approx(32 / 37)
    # n-grams pooled over texts, none across a text boundary: (a b) (b c) | (a b): 2 distinct, C = 3
    # N = 3^2 = 9 -> E = 9 (1 - (8/9)^3) = 217/81 -> 162/217
    assert ead_n(["a b c", "a b"], 2, 3) == pytest.approx(162 / 217)
    # one possible n-gram (V = 1): E = 1, whatever C is
    assert ead_n(["a a a"], 1, 1) == pytest.approx(1.0)


def test_ead_n_limits():
    texts = ["the cat sat on the mat", "the dog sat on the log"]
    # N >> C: the expectation tends to C and EAD-n to distinct-n; V^n = 1e48 is beyond (N-1)/N in floats
    assert ead_n(texts, 4, 10**12) == pytest.approx(distinct_n(texts, 4), rel=1e-9)
    assert ead_n(["a"], 2, 10) == 0.0 and ead_n([], 1, 10) == 0.0
    with pytest.raises(ValueError):
        ead_n(texts, 0, 10)


def test_self_bleu_hand_computed():
    # "a b c d" vs "a b c e": precisions 3/4, 2/3, 1/2, and 0/1 -> "exp" smoothing 1/(2*1) = 1/2; BP = 1
    # BLEU = (3/4 * 2/3 * 1/2 * 1/2)^(1/4) = (1/8)^(1/4) = 2^(-3/4), the same both ways round
    assert self_bleu(["a b c d", "a b c e"]) == pytest.approx(2**-0.75)
    assert self_bleu(["x y z", "x y z", "x y z"]) == pytest.approx(1.0)
    assert self_bleu(["a b c d", "e f g h"]) == 0.0
    # texts 1 and 3 are copies: each finds itself among its references (1); text 2 shares nothing (0)
    assert self_bleu(["a b c d", "e f g h", "a b c d"]) == pytest.approx(2 / 3)
    assert math.isnan(self_bleu(["only one"])) and math.isnan(self_bleu([]))


def test_self_bleu_tokenizer_keeps_our_tokens():
    # "13a" would split "it's." into "it's ." and score this pair 1; "none" keeps "it's." one token
    assert self_bleu(["it's.", "it's ."]) == 0.0


def test_within_and_across():
    by_prompt = {"p1": ["a b", "a b"], "p2": ["c d", "e f"], "p3": []}
    result = within_and_across(by_prompt, lambda ts: distinct_n(ts, 1))
    # within: p1 2/4 and p2 4/4 -> 3/4; across: first samples "a b" "c d" -> 4/4; p3 (empty) skipped
    assert result == {"within": pytest.approx(0.75), "across": pytest.approx(1.0)}
    assert math.isnan(within_and_across({"p": ["x"]}, self_bleu)["within"])
    assert math.isnan(within_and_across({}, self_bleu)["across"])
