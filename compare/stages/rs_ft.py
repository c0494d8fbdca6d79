"""Stage `rs_ft`: rejection-sampling fine-tuning (expert iteration) against the reward model.

Each iteration samples `n` completions for each of `prompts` training prompts from the current policy,
keeps the reward model's favourite of every prompt's n, and fine-tunes the policy on the kept
completions with the SFT stage's code (`compare.stages.sft.train_sft`: TRL's SFTTrainer, NLL of the
completion tokens, EOS appended); the next iteration samples from the fine-tuned policy. This is
best-of-n distilled into the weights, repeated: AlpacaFarm's "expert iteration" (Dubois et al. 2023),
ReST's Improve step (Gulcehre et al. 2023), RAFT (Dong et al. 2023). It optimises the reward model on
the policy's own samples, so it is online RL by role; it buys no annotation beyond the reward model's
comparisons.

Log history: SFT's per-step rows of every iteration (steps counted across iterations, `iteration`
column), and one row per iteration with the reward model's mean score of the kept completions
(`reward`) and of all sampled ones (`reward_all`).
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
from pathlib import Path

from pydantic import Field

from compare.compute import Tokens, rollouts
from compare.lm.loading import load_policy, load_reward_model
from compare.lm.sampling import reward_scores, sample
from compare.stages.common import Context, make_task, train_prompt_tokens
from compare.stages.sft import train_sft
from compare.stages.spec import Job, Memory, Role, StageSpec, TrainSettings
from compare.tracking import round_context


class RSFTSettings(TrainSettings):
    """Sampling and selection per iteration; the SFT optimiser settings for each fine-tuning."""

    iterations: int = Field(2, ge=1, description="Rounds of sample, select, fine-tune.")
    prompts: int = Field(128, ge=1, description="Training prompts sampled per iteration.")
    n: int = Field(4, ge=2, description="Completions per prompt; the reward model keeps its favourite.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    max_new_tokens: int = Field(32, ge=1, description="Longest completion.")
    epochs: float = Field(2.0, gt=0, description="Passes over each iteration's kept completions.")


def best_of_groups(scores: list[float], n: int) -> list[int]:
    """Index of the highest score in each consecutive group of n (the first on ties)."""
    return [max(range(g, g + n), key=lambda i: scores[i]) for g in range(0, len(scores), n)]


def run(job: Job, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    s, seed = job.settings, job.seed
    pool = make_task(job.task).prompts("train")  # prompts only: the reward is the reward model's
    rm, rm_tokenizer = load_reward_model(str(inputs["reward_model"]))
    rng = random.Random(f"rs-ft-{seed}")
    current, history, steps = Path(inputs["model"]), [], 0
    for it in range(s.iterations):
        model, tokenizer = load_policy(current)
        prompts = [rng.choice(pool) for _ in range(s.prompts)]
        samples = sample(
            model, tokenizer, prompts, s.n, s.max_new_tokens, s.temperature, seed=seed * 1000 + it
        )
        del model
        scores = reward_scores(rm, rm_tokenizer, samples.prompts, samples.completions)
        kept = best_of_groups(scores, s.n)
        rows = [{"prompt": samples.prompts[i], "completion": samples.completions[i]} for i in kept]
        target = out if it == s.iterations - 1 else out / f"iteration-{it}"
        target.mkdir(parents=True, exist_ok=True)
        train_sft(rows, job, target, {"model": current}, round_context(ctx, it))
        log = json.loads((target / "log_history.json").read_text())
        history += [{**entry, "step": entry["step"] + steps, "iteration": it} for entry in log]
        steps += max((entry["step"] for entry in log), default=0)
        history.append(
            {
                "step": steps,
                "iteration": it,
                "reward": statistics.fmean(scores[i] for i in kept),
                "reward_all": statistics.fmean(scores),
            }
        )
        current = target
    (out / "log_history.json").write_text(json.dumps(history, indent=1))
    # the policies between iterations; the last one, trained from a folder inside `out`, has full weights
    for it in range(s.iterations - 1):
        shutil.rmtree(out / f"iteration-{it}")


def workload(s: RSFTSettings) -> tuple[int, int, str]:
    """Each iteration samples its prompts at once, n completions each."""
    tokens = s.iterations * s.prompts * s.n * s.max_new_tokens
    return (
        s.prompts * s.n,
        tokens,
        f"{s.iterations} iterations x {s.prompts} prompts x {s.n} completions x {s.max_new_tokens} tokens",
    )


def compute(params: dict, folder: Path, inputs: dict, counter) -> Tokens:
    """Each iteration: n completions of each prompt, sampled and scored by the reward model; `epochs` of
    SFT on the kept one per prompt."""
    train = params["train"]
    prompt = train_prompt_tokens(params, counter)
    drawn = train["iterations"] * train["prompts"] * train["n"]
    sampling = rollouts(drawn, prompt, train["max_new_tokens"], 2, 0)
    kept = rollouts(
        train["iterations"] * train["prompts"], prompt, train["max_new_tokens"], 0, train["epochs"]
    )
    return Tokens(kept.trained, sampling.forwarded, kept.bound)


SPEC = StageSpec(
    kind="rs_ft",
    version=1,
    run=run,
    description="Rejection-sampling fine-tuning (expert iteration): SFT on the reward model's best of n.",
    settings=RSFTSettings,
    role=Role.ONLINE_RL,
    needs_reward_model=True,
    reads_task=True,
    memory=Memory(trained=1, frozen=1, lora=2),  # SFT's, + the frozen reward model
    strength="n",
    objective=("reward", "RM score of the kept samples ↑"),
    distributed=False,
    compute=compute,
)
