"""Built-in tasks: a plain dict from name to class (no registry machinery)."""

from compare.tasks.arithmetic import Arithmetic
from compare.tasks.base import GoldScore, Task
from compare.tasks.reviews import Reviews
from compare.tasks.sentiment_en import SentimentEn

TASKS: dict[str, type[Task]] = {"reviews": Reviews, "arithmetic": Arithmetic, "sentiment_en": SentimentEn}

__all__ = ["TASKS", "GoldScore", "Task"]
