"""Built-in tasks: a plain dict from name to class (no registry machinery)."""

from compare.tasks.arithmetic import Arithmetic
from compare.tasks.base import GoldScore, Task
from compare.tasks.reviews import Reviews

TASKS: dict[str, type[Task]] = {"reviews": Reviews, "arithmetic": Arithmetic}

__all__ = ["TASKS", "GoldScore", "Task"]
