"""The simulated annotator: Bradley–Terry preferences on what a labeller perceives, with its biases.

A labeller perceives a completion's quality as its gold reward plus what real labellers are swayed by
(docs/world.md has each mechanism with its source):

    perceived = gold + length_bias * length + style_bias * style

where `length` and `style` come from the task (`Task.labeller_view`: for `reviews`, sentences and
enthusiastic or flattering markers). Then P(a preferred over b) = sigmoid((perceived_a - perceived_b) /
temperature) (Bradley and Terry, 1952); the label is flipped with probability `flip_rate`; and with
probability `position_bias` the labeller takes the first completion shown, whatever it says. A pool of
annotators (AlpacaFarm's simulated pool) draws one member per comparison. Real datasets replace all of
this with their own labels.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class View:
    """What a labeller notices about a completion besides its quality (task units; see Task.labeller_view)."""

    length: float = 0.0
    style: float = 0.0


def preference_probability(gold_a: float, gold_b: float, temperature: float, flip_rate: float = 0.0) -> float:
    """Probability that the annotator prefers a over b."""
    margin = (gold_a - gold_b) / temperature
    p = 1.0 / (1.0 + math.exp(-margin)) if margin > -700 else 0.0
    return p * (1 - flip_rate) + (1 - p) * flip_rate


def annotate(gold_a: float, gold_b: float, temperature: float, flip_rate: float, rng: random.Random) -> bool:
    """True when the annotator prefers a."""
    return rng.random() < preference_probability(gold_a, gold_b, temperature, flip_rate)


def perceived(gold: float, view: View, annotator: dict) -> float:
    """The quality a biased labeller sees: gold plus its length and style biases."""
    return (
        gold + annotator.get("length_bias", 0.0) * view.length + annotator.get("style_bias", 0.0) * view.style
    )


def prefers_first(a: tuple[float, View], b: tuple[float, View], annotator: dict, rng: random.Random) -> bool:
    """True when the annotator prefers a (shown first) over b; `a`, `b` are (gold, view).

    `annotator` holds temperature, flip_rate, length_bias, style_bias, position_bias (compare/suite/schema.py).
    """
    p = preference_probability(
        perceived(*a, annotator), perceived(*b, annotator), annotator["temperature"], annotator["flip_rate"]
    )
    position = annotator.get("position_bias", 0.0)
    return rng.random() < position + (1.0 - position) * p


def pick_annotator(annotator: dict, pool: list[dict], rng: random.Random) -> dict:
    """The labeller of one comparison: a member of the pool (uniformly), or the one annotator."""
    return pool[rng.randrange(len(pool))] if pool else annotator


# -- binary feedback: one completion, thumbs up or down (KTO) ------------------------------------------------
def thumbs_reference(perceived_qualities: list[float]) -> float:
    """The level a labeller judges single completions against: the mean perceived quality of the batch.

    A thumbs label needs a bar; the labeller's is what they have been shown (the batch they label), so
    "good" means "better than the average answer here", on any task's reward scale. The mean, not the
    median: a reward with a mass at its top (arithmetic, where most samples are exact) has its median
    at the top itself, which would make every top answer's label a coin flip.
    """
    if not perceived_qualities:
        raise ValueError("no completions to set a reference level from")
    return math.fsum(perceived_qualities) / len(perceived_qualities)


def thumbs_up(gold: float, view: View, reference: float, annotator: dict, rng: random.Random) -> bool:
    """True when the annotator gives one completion a thumbs up; the comparisons' noise model.

    Bradley–Terry of the completion's perceived quality against the reference level:
    P(up) = sigmoid((perceived - reference) / temperature), then flipped with probability `flip_rate`.
    There is no position bias (one completion is shown).
    """
    p = preference_probability(
        perceived(gold, view, annotator), reference, annotator["temperature"], annotator["flip_rate"]
    )
    return rng.random() < p
