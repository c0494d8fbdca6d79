"""The compute of a report's runs, stage by stage, read from the cache (the counting: `compare/compute.py`).

A run's compute is the sum over every stage its policy needed before the evaluation, shared stages counted
whole for each arm that uses them; each stage is counted once however many runs share it.
"""

from __future__ import annotations

from compare.compute import Counter, Tokens, parameter_count
from compare.plan import stage_order
from compare.stages import SPECS


class Ledger:
    """The compute of the runs of one report, stage by stage, read from the cache; each stage counted once
    however many runs share it."""

    def __init__(self, runs, cache):
        self.cache = cache
        self.sharing: dict[str, int] = {}
        for run in runs:
            for stage in stage_order([run.eval]):
                self.sharing[stage.name] = self.sharing.get(stage.name, 0) + 1
        self.counters: dict[str, Counter] = {}
        self.counted: dict[str, Tokens | None] = {}

    def rows(self, run) -> list[dict]:
        """One row per stage the run's policy needed (its evaluation left out), inputs first: the stage,
        how many of the report's runs share it, N, tokens trained and forwarded, FLOPs, seconds, and what
        was bounded ("not counted" for a stage whose spec has no count)."""
        from transformers import AutoTokenizer

        chain = [s for s in stage_order([run.eval]) if s.kind != "eval"]
        base_dir = str(self.cache.path(next(s for s in chain if s.kind == "base").name))
        if base_dir not in self.counters:
            self.counters[base_dir] = Counter(
                AutoTokenizer.from_pretrained(base_dir, trust_remote_code=False)
            )
        n_params = parameter_count(base_dir)
        rows = []
        for stage in chain:
            if stage.name not in self.counted:
                count = SPECS[stage.kind].compute
                inputs = {k: self.cache.path(s.name) for k, s in stage.inputs.items() if s is not None}
                self.counted[stage.name] = (
                    count(stage.params, self.cache.path(stage.name), inputs, self.counters[base_dir])
                    if count is not None
                    else None
                )
            tokens = self.counted[stage.name]
            nan = float("nan")
            rows.append(
                {
                    "stage": stage.kind,
                    "stage_name": stage.name,
                    "shared_by_runs": self.sharing.get(stage.name, 1),
                    "parameters": n_params,
                    "tokens_trained": tokens.trained if tokens else nan,
                    "tokens_forwarded": tokens.forwarded if tokens else nan,
                    "flops": tokens.flops(n_params) if tokens else nan,
                    "seconds": float(self.cache.info(stage.name).get("seconds", nan)),
                    "bound": tokens.bound if tokens else "not counted",
                }
            )
        return rows
