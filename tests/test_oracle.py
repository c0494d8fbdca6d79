"""The simulated annotator follows Bradley–Terry on the gold margin, with flips."""

import math
import random

import pytest

from compare.oracle import annotate, preference_probability


def test_bradley_terry_probability_hand_computed():
    assert preference_probability(1.0, 1.0, 0.5) == 0.5
    assert preference_probability(1.0, 0.5, 0.5) == pytest.approx(1 / (1 + math.exp(-1)))
    assert preference_probability(0.0, 1.0, 0.25) == pytest.approx(1 / (1 + math.exp(4)))
    # a flip rate pulls every probability towards 1/2
    p = 1 / (1 + math.exp(-1))
    assert preference_probability(1.0, 0.5, 0.5, flip_rate=0.2) == pytest.approx(0.8 * p + 0.2 * (1 - p))
    assert preference_probability(100.0, -100.0, 0.01) == pytest.approx(1.0)


@pytest.mark.parametrize("margin, temperature, flip", [(0.5, 0.5, 0.0), (0.2, 0.25, 0.1), (-1.0, 1.0, 0.3)])
def test_choice_rates_match_probabilities(margin, temperature, flip):
    rng = random.Random(0)
    n = 20000
    rate = sum(annotate(margin, 0.0, temperature, flip, rng) for _ in range(n)) / n
    p = preference_probability(margin, 0.0, temperature, flip)
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_annotator_is_seeded():
    a = [annotate(0.1, 0.0, 0.5, 0.1, r) for r in [random.Random(3)] for _ in range(100)]
    b = [annotate(0.1, 0.0, 0.5, 0.1, r) for r in [random.Random(3)] for _ in range(100)]
    assert a == b
