"""Built-in tasks: a plain dict from name to class (no registry machinery)."""

from compare.tasks.arithmetic import Arithmetic
from compare.tasks.imdb import Imdb
from compare.tasks.preferences import Preferences
from compare.tasks.reviews import Reviews
from compare.tasks.sentiment_en import SentimentEn
from compare.tasks.task import GoldScore, Task

TASKS: dict[str, type[Task]] = {"reviews": Reviews, "arithmetic": Arithmetic, "sentiment_en": SentimentEn}
# Dataset tasks: they read a dataset named by the suite's `task.data` (compare/tasks/hub.py).
TASKS |= {"imdb": Imdb, "preferences": Preferences}

__all__ = ["TASKS", "GoldScore", "Task"]
