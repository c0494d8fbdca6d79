"""Our PPO against TRL 1.12.0's `trl.experimental.ppo.PPOTrainer`: speed and reward gain, same set-up.

    .venv/bin/python benchmarks/ppo_vs_trl.py [--episodes N] [--repeats R] [--samples K] [--work DIR]
                                              [--micro]

One tiny base model (the `reviews` task's 2-layer, 64-wide GPT-2, 600 pretraining steps), 1024
comparisons sampled from it and a reward model trained on them, built with the project's own stages and
cached in DIR (default `.cache/ppo_vs_trl`, git-ignored). TRL 1.12.0, the last release with a PPO
trainer, is installed into DIR/trl112-venv on top of this venv's packages (`pip install --no-deps`; the
venv reads this one's site-packages after its own, so torch, transformers and the rest are the very same
files; created once, reused after) and runs in a subprocess with that venv's python.

Both trainers get the quick suite's PPO hyper-parameters (`PPO` below) and the same number of episodes,
one torch thread each; the value model starts from the reward model, the reference is the frozen base
model, EOS is the stop token. TRL's `PPOConfig` defaults that differ from ours are set to ours: no
gradient checkpointing, no bf16, constant learning rate, AdamW eps 1e-5, no sample generations. Only the
training loop is timed (`ppo.train` for ours, `trainer.train()` for TRL), not loading or saving; ours
runs its held-out check only before the first and after the last batch (1 prompt).

Evaluation is the same for both, in this process: K samples per held-out (ID) prompt from the final
policy at the training temperature with `compare.lm.sampling.sample` (one fixed seed), scored by the reward
model and by the task's gold reward; a gain is the mean after training minus that of the base policy
sampled the same way. TRL runs twice per seed: as it ships, and with the two `gc.collect()` calls
it makes for every rollout batch taken out (`gc.collect` patched to a no-op in its process), which
changes no number, only the time. Each trainer runs R times (seeds 0..R-1, the order rotating so that a
change in the machine's load hits all alike): episodes/s is the median, gains the mean. Prints a table,
where the time goes per rollout batch (generation / scoring passes / update / TRL's gc.collect), and a
last line

    ppo_vs_trl speed_ratio=R speed_ratio_no_gc=R2 ours_gain=A trl_gain=B

with R = our episodes/s / TRL's as it ships, R2 the same against TRL without its per-batch
`gc.collect()` (how much of R is our work and how much TRL's overhead), and A, B the gold-reward gains.

`--micro` shrinks everything (a 1-layer base, 64 comparisons, one rollout batch, one seed) to check in
a minute that the benchmark still runs (tests/test_benchmarks.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import time
from importlib.metadata import version
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TRL_VERSION = "1.12.0"
SEED = 0
TASK = {"name": "reviews", "seed": 0, "train_prompts": 400, "eval_prompts": 32}
ANNOTATOR = {"temperature": 0.25, "flip_rate": 0.0}
TINY = {  # the quick suite's base model, pretrained for fewer steps
    "n_layer": 2,
    "n_head": 4,
    "n_embd": 64,
    "n_positions": 64,
    "corpus_size": 20000,
    "steps": 600,
    "batch_size": 64,
    "lr": 3e-3,
    "seed": 0,
}
N_COMPARISONS = 1024  # enough for a reward model that tracks the gold reward (r ~ 0.8 on base samples)
# `--micro`: the smallest set-up that exercises every step (numbers meaningless)
MICRO_TINY = {
    **TINY,
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 16,
    "corpus_size": 500,
    "steps": 30,
    "batch_size": 16,
}
MICRO_TASK = {**TASK, "train_prompts": 64, "eval_prompts": 4}
# Shared PPO hyper-parameters: the quick suite's `ppo` stage (PPOSettings defaults otherwise).
PPO = {
    "rollout_batch_size": 64,
    "minibatches": 1,
    "ppo_epochs": 4,
    "lr": 3e-4,
    "temperature": 1.0,
    "max_new_tokens": 32,
    "kl_coef": 0.1,
    "kl_estimator": "k1",
    "gamma": 1.0,
    "lam": 0.95,
    "clip_eps": 0.2,
    "vf_coef": 0.1,
    "vf_clip": 0.2,
    "missing_eos_penalty": 1.0,
    "whiten_rewards": False,
}

# The TRL side, run by DIR/trl112-venv/bin/python with one argument: a JSON file of settings.
TRL_RUNNER = r"""
import json, sys, time

import torch

cfg = json.load(open(sys.argv[1]))
torch.set_num_threads(1)

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from transformers.trainer_callback import PrinterCallback
from trl.experimental.ppo import PPOConfig, PPOTrainer
from trl.experimental.ppo import ppo_trainer as module

h = cfg["ppo"]
tokenizer = AutoTokenizer.from_pretrained(cfg["base"])
tokenizer.padding_side = "left"  # PPOTrainer takes the queries as they are padded by its collator
policy = AutoModelForCausalLM.from_pretrained(cfg["base"])
ref = AutoModelForCausalLM.from_pretrained(cfg["base"])  # the frozen base model
rm = AutoModelForSequenceClassification.from_pretrained(cfg["rm"])
value = AutoModelForSequenceClassification.from_pretrained(cfg["rm"])  # the critic starts from the RM
for model in (policy, ref, rm, value):
    model.config.pad_token_id = tokenizer.pad_token_id

def tokenize(prompts):
    return Dataset.from_dict({"input_ids": tokenizer(prompts, add_special_tokens=False)["input_ids"]})

args = PPOConfig(
    output_dir=cfg["out"] + "/trainer",
    total_episodes=cfg["episodes"],
    per_device_train_batch_size=h["rollout_batch_size"],  # one rollout batch on one process
    gradient_accumulation_steps=1,
    num_mini_batches=h["minibatches"],
    num_ppo_epochs=h["ppo_epochs"],
    local_rollout_forward_batch_size=h["rollout_batch_size"],
    learning_rate=h["lr"],
    lr_scheduler_type="constant",  # ours: lr_decay off
    warmup_steps=0,
    adam_epsilon=1e-5,  # as ours (docs/ppo.md row 18)
    weight_decay=0.0,
    temperature=h["temperature"],
    response_length=h["max_new_tokens"],
    stop_token="eos",
    missing_eos_penalty=h["missing_eos_penalty"],
    kl_coef=h["kl_coef"],
    kl_estimator=h["kl_estimator"],
    whiten_rewards=h["whiten_rewards"],
    gamma=h["gamma"],
    lam=h["lam"],
    cliprange=h["clip_eps"],
    vf_coef=h["vf_coef"],
    cliprange_value=h["vf_clip"],
    num_sample_generations=0,  # no debugging generations inside the timed loop
    gradient_checkpointing=False,  # PPOConfig's default is on; ours does not recompute activations
    bf16=False,
    use_cpu=True,
    seed=cfg["seed"],
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    disable_tqdm=True,
    dataloader_num_workers=0,
)
trainer = PPOTrainer(
    args=args,
    processing_class=tokenizer,
    model=policy,
    ref_model=ref,
    reward_model=rm,
    train_dataset=tokenize(cfg["train_prompts"]),
    value_model=value,
    eval_dataset=tokenize(cfg["eval_prompts"]),
)
trainer.remove_callback(PrinterCallback)

# time per phase: generation (batch_generation), scoring passes (forward / get_reward without grad),
# gc.collect (the trainer calls it twice per rollout batch) and the update (the rest of the loop: forward
# with grad, backward, optimiser steps, GAE, metrics)
import gc

phases = {"generation": 0.0, "scoring": 0.0, "gc": 0.0}

def timed(fn, name=None):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            if name or not torch.is_grad_enabled():
                phases[name or "scoring"] += time.perf_counter() - t
    return wrapper

module.batch_generation = timed(module.batch_generation, "generation")
module.forward = timed(module.forward)
module.get_reward = timed(module.get_reward)
# as TRL ships, or with its per-batch gc.collect() taken out (nothing else changes)
gc.collect = timed(gc.collect if not cfg["no_gc"] else (lambda generation=2: 0), "gc")

start = time.perf_counter()
trainer.train()
seconds = time.perf_counter() - start
phases["update"] = seconds - phases["generation"] - phases["scoring"] - phases["gc"]
policy = trainer.accelerator.unwrap_model(trainer.model).policy
policy.save_pretrained(cfg["out"])
tokenizer.save_pretrained(cfg["out"])
result = {
    "seconds": seconds,
    "episodes": trainer.state.episode,
    "batches": trainer.state.global_step,
    "phases": phases,
    "log_history": trainer.state.log_history,
}
json.dump(result, open(cfg["out"] + "/result.json", "w"), indent=1)
"""


def tail(path: Path, lines: int = 30) -> str:
    return "".join(path.read_text().splitlines(True)[-lines:])


# -- set-up ----------------------------------------------------------------------------------------------
def build_models(
    work: Path, tiny: dict, task: dict, n_comparisons: int, rm_epochs: float
) -> tuple[Path, Path]:
    """Base model, comparisons and reward model, with the project's stages; cached in `work`.

    Each stage is called as the runner calls it (`compare.runner.run_stage`), with the parameters the
    planner gives it (the task settings each stage reads: the task's `stage_fields`, compare/tasks/task.py).
    """
    from compare.runner import run_stage
    from compare.stages import SPECS
    from compare.stages.common import Context
    from compare.stages.rm import RewardSettings

    versions = {k: SPECS[k].version for k in ("base", "comparisons", "rm")}
    key = {"tiny": tiny, "task": task, "annotator": ANNOTATOR, "comparisons": n_comparisons}
    key |= {"rm_epochs": rm_epochs, "versions": versions}
    stamp = work / "models.json"
    base, comparisons, rm = work / "base", work / "comparisons", work / "rm"
    if stamp.exists() and json.loads(stamp.read_text()) == key:
        return base, rm
    ctx = Context(verbose=False, threads=1)
    for folder in (base, comparisons, rm):
        folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    run_stage(
        "base", {"task": {k: task[k] for k in ("name", "seed", "eval_prompts")}, "tiny": tiny}, base, {}, ctx
    )
    settings = {k: task[k] for k in ("name", "seed", "train_prompts")} | {"annotator": ANNOTATOR}
    params = {"task": settings, "n": n_comparisons, "seed": SEED, "max_new_tokens": PPO["max_new_tokens"]}
    run_stage("comparisons", params, comparisons, {"policy": base}, ctx)
    params = {"train": RewardSettings(epochs=rm_epochs).model_dump(), "seed": SEED}
    run_stage("rm", params, rm, {"model": base, "data": comparisons}, ctx)
    stamp.write_text(json.dumps(key))
    print(f"built base model and reward model in {time.perf_counter() - t:.0f}s", flush=True)
    return base, rm


def trl_python(work: Path) -> Path:
    """DIR/trl112-venv: trl==1.12.0 over this venv's packages (torch, transformers, ...); created once."""
    venv = work / "trl112-venv"
    python = venv / "bin" / "python"
    site = sysconfig.get_paths()["purelib"]  # this venv's site-packages, read after the new venv's own
    pins = [f"trl=={TRL_VERSION}", f"torch=={version('torch')}", f"transformers=={version('transformers')}"]
    stamp = venv / "installed.json"
    if stamp.exists() and json.loads(stamp.read_text()) == [*pins, site]:
        return python
    t = time.perf_counter()
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    done = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    (Path(done.stdout.strip()) / "main-venv.pth").write_text(f"import site; site.addsitedir({site!r})\n")
    log = work / "pip.log"  # pip's own output (this machine's pip config warns about local indexes)
    target = Path(done.stdout.strip())
    with log.open("w") as f:  # this venv's pip, installing into the new venv's site-packages only
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--upgrade",
            "--target",
            str(target),
            pins[0],
        ]
        done = subprocess.run(cmd, stdout=f, stderr=f)
    if done.returncode:
        sys.exit(f"installing {pins} failed; the end of {log}:\n" + tail(log))
    stamp.write_text(json.dumps([*pins, site]))
    print(f"installed {pins[0]} into {venv} in {time.perf_counter() - t:.0f}s", flush=True)
    return python


# -- the two trainers ------------------------------------------------------------------------------------
def run_ours(base: Path, rm: Path, out: Path, episodes: int, seed: int, task_settings: dict) -> dict:
    """Our PPO stage, as `ppo.run` does it, timing `ppo.train` only."""
    from compare.stages import ppo
    from compare.stages.common import Context, make_task
    from compare.stages.ppo import PPOSettings

    settings = PPOSettings(
        episodes=episodes,
        **PPO,
        gold_eval_every=10**9,  # held-out checks only at the start and the end (TRL's are off)
        gold_eval_prompts=1,
    )
    models = ppo.load_models({"model": base, "reward_model": rm}, "model", None)
    accelerator = ppo.make_accelerator()
    task = make_task({k: task_settings[k] for k in ("name", "seed", "train_prompts", "eval_prompts")})
    start = time.perf_counter()
    history = ppo.train(models, task, settings, seed, accelerator, Context(threads=1))
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    ppo.save_policy(models, out)
    steps = [e for e in history if "time/update" in e]
    phases = {k: sum(e[f"time/{k}"] for e in steps) for k in ("generation", "scoring", "update")}
    phases["gc"] = 0.0  # ours never calls gc.collect
    return {
        "seconds": seconds,
        "episodes": len(steps) * PPO["rollout_batch_size"],
        "batches": len(steps),
        "phases": phases,
        "log_history": history,
    }


def run_trl(
    python: Path, base: Path, rm: Path, out: Path, episodes: int, seed: int, task_settings: dict, no_gc: bool
) -> dict:
    task = reviews(task_settings)
    out.mkdir(parents=True, exist_ok=True)
    runner, config = out / "trl_runner.py", out / "trl_settings.json"
    runner.write_text(TRL_RUNNER)
    cfg = {
        "base": str(base),
        "rm": str(rm),
        "out": str(out),
        "episodes": episodes,
        "seed": seed,
        "no_gc": no_gc,
        "ppo": PPO,
        "train_prompts": task.prompts("train"),
        "eval_prompts": task.prompts("id"),
    }
    config.write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["TRL_EXPERIMENTAL_SILENCE"] = "1"
    env.pop("PYTHONPATH", None)
    log = out / "trl.log"
    with log.open("w") as f:
        done = subprocess.run([str(python), str(runner), str(config)], env=env, stdout=f, stderr=f)
    if done.returncode:
        sys.exit(f"TRL's run failed; the end of {log}:\n" + tail(log))
    return json.loads((out / "result.json").read_text())


# -- evaluation ------------------------------------------------------------------------------------------
def reviews(task_settings: dict):
    from compare.tasks.reviews import Reviews

    return Reviews(**{k: task_settings[k] for k in ("seed", "train_prompts", "eval_prompts")})


def evaluate(policy_dir: Path, rm_dir: Path, samples: int, task_settings: dict) -> dict[str, float]:
    """Mean RM score and gold reward of `samples` completions per held-out ID prompt (fixed seed)."""
    from compare.lm.loading import load_policy, load_reward_model
    from compare.lm.sampling import reward_scores, sample

    task = reviews(task_settings)
    policy, tokenizer = load_policy(policy_dir)
    rm, _ = load_reward_model(rm_dir)
    out = sample(
        policy, tokenizer, task.prompts("id"), samples, PPO["max_new_tokens"], PPO["temperature"], 1234
    )
    rm_scores = reward_scores(rm, tokenizer, out.prompts, out.completions)
    gold = [task.gold_reward(p, c) for p, c in zip(out.prompts, out.completions)]
    n = len(gold)
    return {
        "rm": sum(rm_scores) / n,
        "gold": sum(gold) / n,
        "eos": sum(out.ended) / n,
        "length": sum(len(c) for c in out.completion_ids) / n,
    }


# -- report ----------------------------------------------------------------------------------------------
def median(xs: list[float]) -> float:
    xs = sorted(xs)
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, help="episodes (prompts rolled out) per run (default 1024)")
    parser.add_argument("--repeats", type=int, help="runs of each trainer, seeds 0, 1, ... (default 5)")
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "ppo_vs_trl", help="work folder")
    parser.add_argument("--samples", type=int, help="evaluation samples per held-out prompt (default 32)")
    parser.add_argument("--micro", action="store_true", help="the smallest set-up, to check that it runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from compare.stages.common import quiet_libraries

    with quiet_libraries(False):
        compare_trainers(args)


def compare_trainers(args) -> None:
    micro = args.micro
    tiny, task = (MICRO_TINY, MICRO_TASK) if micro else (TINY, TASK)
    episodes = args.episodes or (PPO["rollout_batch_size"] if micro else 1024)
    repeats = args.repeats or (1 if micro else 5)
    samples = args.samples or (2 if micro else 32)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)

    base, rm = build_models(work, tiny, task, 64 if micro else N_COMPARISONS, 1.0 if micro else 3.0)
    python = trl_python(work)
    before = evaluate(base, rm, samples, task)
    trainers = {
        "ours": lambda out, seed: run_ours(base, rm, out, episodes, seed, task),
        "trl": lambda out, seed: run_trl(python, base, rm, out, episodes, seed, task, no_gc=False),
        "trl_no_gc": lambda out, seed: run_trl(python, base, rm, out, episodes, seed, task, no_gc=True),
    }
    names = list(trainers)
    runs: dict[str, list[dict]] = {name: [] for name in trainers}
    for seed in range(repeats):
        # rotate the order, so that a change in the machine's load hits every trainer alike
        for name in names[seed % len(names) :] + names[: seed % len(names)]:
            out = work / f"policy-{name}-seed{seed}"
            result = trainers[name](out, seed)
            result["eval"] = evaluate(out, rm, samples, task)
            result["eps"] = result["episodes"] / result["seconds"]
            runs[name].append(result)
            print(
                f"  seed {seed} {name:<9} {result['seconds']:6.1f}s  {result['eps']:6.1f} episodes/s  "
                f"RM {result['eval']['rm']:+.3f}  gold {result['eval']['gold']:+.3f}",
                flush=True,
            )
    (work / "results.json").write_text(json.dumps({"before": before, **runs}, indent=1))

    print(
        f"\nbase policy: RM {before['rm']:+.3f}, gold {before['gold']:+.3f}, "
        f"EOS rate {before['eos']:.2f}, length {before['length']:.1f}"
    )
    print(
        f"{repeats} run(s) each; seconds and episodes/s are medians, gains and the rest means over runs; "
        f"gain = after - before on {samples} samples x {task['eval_prompts']} held-out prompts; trl_no_gc is "
        "TRL without its per-batch gc.collect()"
    )
    header = ("trainer", "episodes", "seconds", "episodes/s", "RM gain", "gold gain", "+-se", "EOS", "length")
    print(f"{header[0]:<10}" + "".join(f"{h:>11}" for h in header[1:]))
    summary = {}
    for name, rs in runs.items():
        mean = {k: sum(r["eval"][k] for r in rs) / len(rs) for k in before}
        golds = [r["eval"]["gold"] for r in rs]
        se = (sum((g - mean["gold"]) ** 2 for g in golds) / max(1, len(rs) - 1) / len(rs)) ** 0.5
        summary[name] = {"eps": median([r["eps"] for r in rs]), "gold": mean["gold"] - before["gold"]}
        cells = [
            f"{rs[0]['episodes']:>11}",
            f"{median([r['seconds'] for r in rs]):>11.1f}",
            f"{summary[name]['eps']:>11.1f}",
            f"{mean['rm'] - before['rm']:>+11.3f}",
            f"{mean['gold'] - before['gold']:>+11.3f}",
            f"{se:>11.3f}",
            f"{mean['eos']:>11.2f}",
            f"{mean['length']:>11.1f}",
        ]
        print(f"{name:<10}" + "".join(cells))

    print(
        f"\nwhere the time goes: seconds per rollout batch of {PPO['rollout_batch_size']} episodes, over all runs"
    )
    parts = ("generation", "scoring", "update", "gc", "other", "total")
    print(f"{'trainer':<10}" + "".join(f"{k:>11}" for k in parts))
    for name, rs in runs.items():
        n = sum(r["batches"] for r in rs)
        cells = {k: sum(r["phases"][k] for r in rs) for k in parts[:4]}
        cells["total"] = sum(r["seconds"] for r in rs)
        cells["other"] = cells["total"] - sum(cells[k] for k in parts[:4])
        print(f"{name:<10}" + "".join(f"{cells[k] / n:>11.3f}" for k in parts))
    print(
        "generation: sampling the rollouts; scoring: the no-grad passes (ours: policy, reference, value, RM;\n"
        "TRL: reference, value, RM, its old log-probs come from generation); update: ppo_epochs x (forward,\n"
        "backward, AdamW step), GAE, metrics; gc: TRL's two gc.collect() calls per batch; other: our\n"
        "held-out checks (first and last batch only here)"
    )
    trl_gc = sum(r["phases"]["gc"] for r in runs["trl"]) / sum(r["seconds"] for r in runs["trl"])
    print(f"TRL as it ships spends {trl_gc:.0%} of train() in gc.collect()")

    ratio = summary["ours"]["eps"] / summary["trl"]["eps"]
    ratio_no_gc = summary["ours"]["eps"] / summary["trl_no_gc"]["eps"]
    ours, trl = summary["ours"]["gold"], summary["trl"]["gold"]
    print(
        f"ppo_vs_trl speed_ratio={ratio:.2f} speed_ratio_no_gc={ratio_no_gc:.2f} ours_gain={ours:.3f} "
        f"trl_gain={trl:.3f}"
    )


if __name__ == "__main__":
    main()
