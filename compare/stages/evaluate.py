"""Stage `eval`: the one evaluator every arm goes through (same prompts, sampling, metrics).

For each of the task's evaluation splits (`Task.eval_splits`: ID, OOD, and for built-in tasks more named
shifts and a prior ability): K samples per prompt from the policy at the suite's temperature; per sample
the gold reward and its parts, the log-probs under the policy and the base model (KL to the base is the
mean sampled sequence-level log-ratio, at the same temperature for every arm), and, when the run has a
reward model, its score. The reward model is also checked against the gold reward on pairs of the
policy's own samples (noise-free labels).

Forgetting is measured against the forward KL on the training prompts, KL(π_base ‖ π) = E_{y~π_base}
[log π_base(y) − log π(y)] ("RL's Razor", Shenfeld et al. 2025): K samples of the base model per training
prompt, scored by the policy (`forward_kl_train`, the same on every split's row; NaN for best-of-n,
whose density is not available for the base model's samples).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from compare.diversity import ead_n, self_bleu, within_and_across
from compare.lm.loading import load_policy, load_reward_model
from compare.lm.sampling import completion_logprobs, reward_scores, sample
from compare.metrics import distinct_n, pairwise_accuracy, pass_at_k, pass_ks, sampled_kl
from compare.stages.best_of_n import best_of_n, bon_kl_bound
from compare.stages.common import Context, make_task, write_jsonl
from compare.stages.spec import Memory, StageSpec


def run(params: dict, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    task = make_task(params["task"], inputs)  # with the judge model, for a task whose gold is one
    settings = params["eval"]
    k, temperature = settings["samples_per_prompt"], settings["temperature"]
    policy, tokenizer = load_policy(str(inputs["policy"]))
    same_as_base = inputs["policy"] == inputs["base"]
    base = policy if same_as_base else load_policy(str(inputs["base"]))[0]
    rm = load_reward_model(str(inputs["reward_model"])) if "reward_model" in inputs else None
    rows, metrics = [], {}
    forward_kl = math.nan
    if params.get("best_of_n", 1) == 1:
        forward_kl = (
            0.0 if same_as_base else forward_kl_train(task, base, policy, tokenizer, settings, params["seed"])
        )
    n = params.get("best_of_n", 1)

    def draw(prompts: list[str], per_prompt: int, seed: int):
        """`per_prompt` answers of the arm to each prompt (with best-of-n, each the best of n), their
        reward-model scores, and best-of-n's estimated log-ratio (else None)."""
        samples = sample(
            policy, tokenizer, prompts, per_prompt * n, settings["max_new_tokens"], temperature, seed=seed
        )
        proxy = (
            reward_scores(*rm, samples.prompts, samples.completions) if rm else [None] * len(samples.prompts)
        )
        if n > 1:
            return best_of_n(samples, proxy, per_prompt, n)
        return samples, proxy, None

    pass_k = settings.get("pass_at_k", 0)  # off unless the suite asks for it (its key then says so)
    for split in task.eval_splits:
        prompts = task.prompts(split)
        samples, proxy, log_ratio = draw(prompts, k, params["seed"])
        base_lp = completion_logprobs(base, tokenizer, samples.prompts, samples.completion_ids, temperature)
        if log_ratio is not None:  # best-of-n: log pi_bon(y) = log pi(y) + estimated log-ratio
            samples.logprobs = [b + r for b, r in zip(base_lp, log_ratio)]
        golds = task.golds(samples.prompts, samples.completions)
        for i, (prompt, completion, g) in enumerate(zip(samples.prompts, samples.completions, golds)):
            rows.append(
                {
                    "split": split,
                    "prompt_index": i // k,
                    "sample_index": i % k,
                    "prompt": prompt,
                    "completion": completion,
                    "gold_reward": g.reward,
                    "well_formed": g.well_formed,
                    "malformed": g.malformed,  # the gold reward's parts: what went wrong, if anything
                    "repetition": g.repetition,
                    "off_topic": g.off_topic,
                    "length": len(samples.completion_ids[i]) - int(samples.ended[i]),
                    "ended_with_eos": samples.ended[i],
                    "logp_policy": samples.logprobs[i],
                    "logp_base": base_lp[i],
                    "proxy_reward": proxy[i],
                }
            )
        split_rows = [r for r in rows if r["split"] == split]
        m = {
            "gold_reward": statistics.fmean(g.reward for g in golds),
            "kl_to_base": 0.0 if same_as_base and n == 1 else sampled_kl(samples.logprobs, base_lp),
            "distinct_2": distinct_n(samples.completions, 2),
            "mean_length": statistics.fmean(r["length"] for r in split_rows),
            "well_formed": statistics.fmean(float(g.well_formed) for g in golds),
            "eos_rate": statistics.fmean(float(e) for e in samples.ended),
            **diversity(samples.completions, k, len(tokenizer)),
            "forward_kl_train": forward_kl,
        }
        if n > 1:
            m["kl_bound"] = bon_kl_bound(n)
        if rm:
            m["proxy_reward"] = statistics.fmean(proxy)
            # pairs of the policy's own samples for one prompt: (0, 1), (2, 3), ...
            a = [i for i in range(len(golds)) if i % k % 2 == 0 and i % k + 1 < k]
            m["rm_accuracy"] = pairwise_accuracy(
                [proxy[i] for i in a],
                [proxy[i + 1] for i in a],
                [golds[i].reward for i in a],
                [golds[i + 1].reward for i in a],
            )
        if pass_k:
            passed = [task.passes(p, c, g) for p, c, g in zip(samples.prompts, samples.completions, golds)]
            per_prompt = k
            if k < pass_k:  # pass@k needs K samples of each prompt: drawn for it alone
                extra, _, _ = draw(prompts, pass_k, params["seed"] + PASS_SEED_OFFSET)
                golds_k = task.golds(extra.prompts, extra.completions)
                passed = [task.passes(p, c, g) for p, c, g in zip(extra.prompts, extra.completions, golds_k)]
                per_prompt = pass_k
            m.update(pass_at(passed, per_prompt, pass_k))
        metrics[split] = m
    write_jsonl(out / "samples.jsonl", rows)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))


PASS_SEED_OFFSET = 7919  # the seed of pass@k's own samples: the run's seed + this, apart from the others


def pass_at(passed: list[bool], per_prompt: int, most: int) -> dict[str, float]:
    """`pass_at_<k>` for k in `pass_ks(most)`: the mean over prompts of the unbiased pass@k estimate, from
    `per_prompt` samples of each prompt (prompt-major, as `sample` returns them)."""
    counts = [sum(passed[i : i + per_prompt]) for i in range(0, len(passed), per_prompt)]
    return {
        f"pass_at_{k}": statistics.fmean(pass_at_k(per_prompt, c, k) for c in counts) for k in pass_ks(most)
    }


def forward_kl_train(task, base, policy, tokenizer, settings: dict, seed: int) -> float:
    """KL(π_base ‖ π) on the training prompts: base samples, scored by both (see the module docstring)."""
    prompts = task.prompts("train")[: task.n_eval_prompts]
    k, temperature = settings["samples_per_prompt"], settings["temperature"]
    samples = sample(base, tokenizer, prompts, k, settings["max_new_tokens"], temperature, seed=seed)
    policy_lp = completion_logprobs(policy, tokenizer, samples.prompts, samples.completion_ids, temperature)
    return sampled_kl(samples.logprobs, policy_lp)


def diversity(completions: list[str], k: int, vocab_size: int) -> dict[str, float]:
    """Diversity of a split's samples (prompt-major, k per prompt): within one prompt and across prompts."""
    by_prompt = {i: completions[i * k : (i + 1) * k] for i in range(len(completions) // k)}
    distinct = within_and_across(by_prompt, lambda texts: distinct_n(texts, 2))
    bleu = within_and_across(by_prompt, self_bleu) if k > 1 else {"within": math.nan, "across": math.nan}
    return {
        "ead_2": ead_n(completions, 2, vocab_size),
        "distinct_2_within": distinct["within"],
        "distinct_2_across": distinct["across"],
        "self_bleu_within": bleu["within"],
        "self_bleu_across": bleu["across"],
    }


SPEC = StageSpec(kind="eval", version=5, run=run, memory=Memory(0, 3, 3))  # policy, base, reward model
