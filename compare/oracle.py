"""The simulated annotator: Bradley–Terry preferences on the gold margin, with label noise.

P(a preferred over b) = sigmoid((gold_a - gold_b) / temperature) (Bradley and Terry, 1952); then the
label is flipped with probability `flip_rate`. A small temperature is a careful annotator; a large one
prefers almost at random. Real datasets replace this with their own labels.
"""

from __future__ import annotations

import math
import random


def preference_probability(gold_a: float, gold_b: float, temperature: float, flip_rate: float = 0.0) -> float:
    """Probability that the annotator prefers a over b."""
    margin = (gold_a - gold_b) / temperature
    p = 1.0 / (1.0 + math.exp(-margin)) if margin > -700 else 0.0
    return p * (1 - flip_rate) + (1 - p) * flip_rate


def annotate(gold_a: float, gold_b: float, temperature: float, flip_rate: float, rng: random.Random) -> bool:
    """True when the annotator prefers a."""
    return rng.random() < preference_probability(gold_a, gold_b, temperature, flip_rate)
