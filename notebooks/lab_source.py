# %% [markdown]
# # SFT vs RLHF: a lab, by hand and by experiment
#
# This notebook takes apart what supervised fine-tuning (SFT), a reward model with PPO, DPO and the
# group-baseline methods (RLOO, GRPO) each optimise, one formula at a time, with the package's own
# functions on examples small enough to check with a pencil. You write four of the pieces yourself
# (the Bradley–Terry loss, GAE, DPO's loss, a best-of-$n$ selection) and a provided cell checks each
# against the package on random inputs. Then the notebook runs a suite of the harness, shows each arm's
# completions and the report's figures, and asks you to predict the answers to questions before
# checking them.

# %% [markdown] student
# **Student's version.** Cells marked *Exercise* end in `raise NotImplementedError`: replace that line
# with your code, run the cell, then run the check below it. Questions marked **Predict** ask you to write
# your prediction down *before* running the next cell.

# %% [markdown] teacher
# **Teacher's version.** The same notebook as the students' `sft_vs_rlhf.ipynb`, built from the same
# source (`notebooks/lab_source.py`, `python notebooks/build.py`), with every exercise solved and every
# **Predict** question answered in an *Answer* cell (some of them with a cell that reads the answer from
# this run's own results).

# %% [markdown]
# ## 0. Before the lab
#
# **Install** before the lab, not in it. From the repository root: `make setup` (or
# `python -m venv .venv` and `.venv/bin/pip install -e '.[dev]'`; Python 3.10 or newer, `make` only for
# the shortcut). The environment takes **about 2.3 GB** on disk: torch's CPU build 0.75 GB, Ray 0.24 GB,
# pyarrow 0.17 GB, transformers 0.13 GB, the rest small. How long it takes is mostly the download of
# those wheels, so it depends on the network: do it at home, or give the class a pre-built `.venv` or
# container. Then `pip install jupyterlab` and `jupyter lab notebooks/`, or open the notebook in VS Code
# with its Jupyter extension and pick `.venv` as the kernel. Nothing is downloaded while the notebook
# runs: the task is built in and the base model is a tiny GPT-2 the harness pretrains itself.
#
# **Settings** are the next cell's four variables; change them there and run the notebook from the top.
#
# - `SIZE`: `"laptop"` (the default) trains the lab's suite on 3 seeds; `"micro"` is a smoke test of a
#   minute or two whose base model writes word salad (the tests run the notebook this way).
# - `WORK`: the folder next to this notebook where the suites, their reports and figures go (the figures
#   shown below are files in it; open `WORK/report/report.html` in a browser for the full report).
# - `CACHE`: the stage cache. Every trained model is stored there under the hash of its settings and
#   inputs, so a second run, or another notebook with the same settings, trains nothing again.
# - `JOBS`: stages run at once. `1` (the default) runs them one after another in this process, with no
#   Ray and no worker processes; a larger number starts Ray and is only worth it with more than 2 cores.
#
# **How long.** The suite cells do all the training; sections 1–8 take seconds. On our 2-core machine,
# with one job and the CPU shared with other work (load average 12 to 29, mean 19, so the notebook got
# about a quarter of a core), the whole notebook at the default size took 20 minutes: the first suite
# 12.7, the length-bias suite 5.7, the β sweep 1.1. The kernel itself used 324 seconds of CPU time on one
# thread, so on an otherwise idle 2-core laptop expect about 6 minutes, most of it pretraining the base
# model and the RL arms. At micro size everything takes a minute or two.
#
# **Pre-building the cache** (teachers): run the whole teacher's notebook once before the lab (Run All,
# or `jupyter nbconvert --to notebook --execute notebooks/sft_vs_rlhf_teacher.ipynb --output /tmp/run.ipynb`
# from the repository root; nbconvert comes with jupyterlab), then give every student a copy of
# `notebooks/sft_vs_rlhf_lab/cache` (about 20 MB), or point `CACHE` at a shared folder. With the cache in
# place every suite cell only evaluates and reports, in under a minute. The stages' keys depend only on
# their settings, so keep `SIZE` and the suites as they are.

# %%
from pathlib import Path

SIZE = "laptop"  # "laptop" (the lab) or "micro" (a smoke test whose results mean nothing)
WORK = Path("sft_vs_rlhf_lab")  # suites, reports and figures: a folder next to this notebook
CACHE = WORK / "cache"  # the stage cache; a pre-built one skips all training (see "Before the lab")
JOBS = 1  # stages at once; 1 runs them in this process without Ray

# %%
import copy
import math
import random
import warnings

import pandas as pd
import torch
import torch.nn.functional as F
from IPython.display import Image, Markdown, display

from compare import teaching

# tqdm's notice that ipywidgets is missing: its text progress bars work without
warnings.filterwarnings("ignore", message="IProgress not found")
if SIZE not in ("micro", "laptop"):
    raise ValueError(f"SIZE = {SIZE!r}: use 'micro' or 'laptop'")
WORK.mkdir(parents=True, exist_ok=True)
print(
    f"size {SIZE}, {JOBS} job(s); suites, reports and figures go to {WORK.resolve()}; cache {CACHE.resolve()}"
)

# %% [markdown]
# ## 1. The world: prompts, demonstrations and the gold reward
#
# The built-in `reviews` task (`compare/tasks/reviews.py`, described in `docs/world.md`) asks for a short
# review of a product in a tiny English-like language. Its **gold reward** is what the task really wants,
# a helpful review; no training method ever sees it, only evaluation and the simulated labellers do:
#
# $$\text{gold} = \text{pos} + \tfrac12\,\text{cov} + \tfrac14\,\text{spec} - \text{malformed} - \text{repetition} - \text{off-topic} - \text{length}$$
#
# - $\text{pos}$: mean sentiment of the well-formed sentences, in $[-1, 1]$ ("very" adds nothing);
# - $\text{cov}$: distinct aspects of the prompt's domain, up to 3, divided by 3;
# - $\text{spec}$: share of the sentences that are about an aspect of the domain;
# - malformed, repetition, off-topic: shares of the sentences that do not parse, repeat, or talk about an
#   aspect the domain does not have;
# - length: $0.25$ per sentence past 4.
#
# `Reviews.gold` returns the reward with its parts (`GoldScore`). Coverage, specificity and length are not
# stored separately; the last column below is what is left of the reward once the stored parts are taken
# out. Check the first row by hand: three positive sentences ($\text{pos} = 1$) about three phone aspects
# ($\text{cov} = \text{spec} = 1$) give $1 + 0.5 + 0.25 = 1.75$, the best any review can score.

# %%
from compare.tasks.reviews import Reviews

task = Reviews(seed=0, train_prompts=8, eval_prompts=4)
prompt = "phone review : i paid full price ."
reviews = {
    "helpful": " the battery is excellent . the screen is wonderful . i love the camera .",
    "vague": " it was very excellent .",
    "repetitive": " the battery is great . the battery is great . the battery is great .",
    "off topic": " the battery is great . the food is great .",
    "rambling": " the battery is good . the screen is good . the camera is good . the speaker is good ."
    " the price is good . it was fine .",
    "empty": "",
}
for name, text in reviews.items():
    g = task.gold(prompt, text)
    rest = g.reward - g.positivity + g.malformed + g.repetition + g.off_topic
    print(
        f"{name:10} gold {g.reward:+.3f} | positivity {g.positivity:+.3f} malformed {g.malformed:.2f} "
        f"repetition {g.repetition:.2f} off-topic {g.off_topic:.2f} | coverage+specificity-length {rest:+.3f}"
    )

# %% [markdown]
# The **demonstrator** writes two to four well-formed, on-topic sentences, each positive only 60% of the
# time, and now and then closes with a generic filler (`it was okay .`): good, but clearly below 1.75.
# SFT can only imitate it.

# %%
rng = random.Random(0)
prompts = task.prompts("train")[:4]
demos = [task.demonstrate(p, rng) for p in prompts]
for p, d in zip(prompts, demos):
    print(f"{task.gold_reward(p, d):+.3f}  {p}{d}")

# %% [markdown]
# ## 2. SFT: the negative log-likelihood of demonstrations
#
# SFT maximises the likelihood of the demonstrator's completion $y$ given the prompt $x$, counting the
# completion's tokens only (the prompt is given, not predicted), averaged over all $N$ completion tokens
# of the batch (end-of-text included):
#
# $$\mathcal{L}_\text{SFT} = -\frac1N \sum_t \log \pi(y_t \mid x, y_{<t}).$$
#
# `compare.lm.sampling.token_logprobs` gives $\log \pi(y_t \mid x, y_{<t})$ for every completion token;
# the harness uses it for evaluation and PPO, and TRL's `SFTTrainer` (`compare/stages/sft.py`) minimises
# the same mean on minibatches.
#
# **Predict.** An untrained model is close to uniform over its vocabulary $V$ (the pad token excluded).
# What is its NLL per token?

# %% [markdown] teacher
# *Answer.* $\log(|V| - 1)$: a uniform model gives every token probability $1/(|V|-1)$. The cell prints
# both; they differ a little because the random initial weights are not exactly uniform.

# %%
from compare.lm.sampling import token_logprobs
from compare.lm.tiny import build_word_tokenizer, tiny_gpt2

tokenizer = build_word_tokenizer(task.vocabulary())
torch.manual_seed(0)
model = tiny_gpt2(tokenizer, n_layer=1, n_head=2, n_embd=32, n_positions=64)
reference = copy.deepcopy(model)  # the starting policy, kept for DPO below
completion_ids = [
    tokenizer(d, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for d in demos
]


def sft_loss(policy):
    return -torch.cat(token_logprobs(policy, tokenizer, prompts, completion_ids, temperature=1.0)).mean()


print(
    "log-probs of the first demonstration's tokens:",
    [round(x, 3) for x in token_logprobs(model, tokenizer, prompts[:1], completion_ids[:1], 1.0)[0].tolist()],
)
print(
    f"SFT loss (NLL per token) {sft_loss(model).item():.4f}; log(|V| - 1) = {math.log(len(tokenizer) - 1):.4f}"
)

# %% [markdown]
# Training is nothing more than lowering that number. Thirty AdamW steps on these four demonstrations:

# %%
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
for _ in range(30):
    loss = sft_loss(model)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"SFT loss after 30 steps: {sft_loss(model).item():.4f}")

# %% [markdown]
# ## 3. The simulated labeller, and why its biases matter
#
# Preference methods learn from comparisons instead of demonstrations. The harness's labeller
# (`compare/oracle.py`, `docs/world.md`) does not see the gold reward directly: it **perceives**
#
# $$\text{perceived} = \text{gold} + b_\text{length} \cdot \text{sentences} + b_\text{style} \cdot (\#\text{"very"} + \#\text{flattering sentences})$$
#
# and prefers $a$ over $b$ with the Bradley–Terry probability $\sigma(\Delta / T)$, where
# $\Delta = \text{perceived}_a - \text{perceived}_b$ and $T$ is its temperature, then flips the label with
# probability $f$:
#
# $$P(a \succ b) = \sigma(\Delta / T)\,(1 - f) + \bigl(1 - \sigma(\Delta / T)\bigr)\, f.$$
#
# With probability `position_bias` it simply takes the first one shown. The task's defaults:
# $T = 0.25$, $f = 0.1$, $b_\text{length} = 0.15$, $b_\text{style} = 0.2$, position bias 0.05.
#
# Below, a long, lukewarm review against a short, enthusiastic one. The long one is worse by the gold
# reward. `prefers_first` draws the labels (the long one is shown first, so the position bias adds a
# little).
#
# **Predict.** As the length bias grows from 0 to 0.5, how often does the labeller prefer the long review?

# %% [markdown] teacher
# *Answer.* More and more often, past one half once the bias is large enough: each extra sentence adds
# $b_\text{length}$ to the perceived reward, and the long review has three more sentences, so
# $\Delta$ grows by $3\,b_\text{length}$ and $\sigma(\Delta/T)$ with it; at $b_\text{length} = 0.5$
# the bias ($+1.5$) outweighs the gold deficit. The sampled shares sit a little above the probabilities
# because of the position bias: with probability 0.05 the labeller takes the first shown (the long one),
# so the share is about $0.95\,P + 0.05$, up to sampling noise (4000 labels: about $\pm 0.015$).

# %%
from compare.oracle import perceived, preference_probability, prefers_first

short = " the battery is excellent . the screen is great ."
long = " the battery is good . the screen is fine . the camera is okay . it was fine . the price is good ."
a = (task.gold_reward(prompt, long), task.labeller_view(prompt, long))
b = (task.gold_reward(prompt, short), task.labeller_view(prompt, short))
print(
    f"long:  gold {a[0]:.3f}, {a[1].length:.0f} sentences\nshort: gold {b[0]:.3f}, {b[1].length:.0f} sentences"
)
for length_bias in (0.0, 0.15, 0.5):
    annotator = {**Reviews.default_annotator, "length_bias": length_bias}
    p = preference_probability(
        perceived(*a, annotator), perceived(*b, annotator), annotator["temperature"], annotator["flip_rate"]
    )
    draws = random.Random(0)
    share = sum(prefers_first(a, b, annotator, draws) for _ in range(4000)) / 4000
    print(f"length_bias {length_bias:.2f}: P(long preferred) = {p:.3f}; share of 4000 labels {share:.3f}")

# %% [markdown]
# ## 4. The reward model: Bradley–Terry on the labels
#
# A reward model $r(x, y)$ (the policy's body with a scalar head, trained with TRL's `RewardTrainer` in
# `compare/stages/rm.py`) assumes the labels came from $P(a \succ b) = \sigma(r_a - r_b)$, the
# labeller's own model with the temperature folded into the reward's scale, and maximises the likelihood
# of the labels, averaged over the $B$ pairs of a batch:
#
# $$\mathcal{L}_\text{RM} = -\frac1B \sum_{i=1}^{B} \log \sigma\bigl(r(x_i, y_i^\text{chosen}) - r(x_i, y_i^\text{rejected})\bigr).$$
#
# A pair it already orders well costs little, a tie costs $\log 2 = 0.6931$, a pair ordered the wrong way
# costs more. The last line checks that `preference_probability` at temperature 1 is the same $\sigma$.

# %%
r_chosen = torch.tensor([1.2, 0.3, -0.5])
r_rejected = torch.tensor([0.2, 0.8, -0.5])
print("P(chosen > rejected):", [round(x, 4) for x in torch.sigmoid(r_chosen - r_rejected).tolist()])
print("loss per pair:       ", [round(x, 4) for x in (-F.logsigmoid(r_chosen - r_rejected)).tolist()])
print(f"mean loss {(-F.logsigmoid(r_chosen - r_rejected)).mean().item():.4f}")
print(f"preference_probability(1.2, 0.2, temperature=1) = {preference_probability(1.2, 0.2, 1.0):.4f}")

# %% [markdown]
# **Exercise 1: the Bradley–Terry loss.** Write `bradley_terry_loss(r_chosen, r_rejected)`: both are
# tensors of shape $(B,)$; return the mean loss above as a 0-dimensional tensor. `F.logsigmoid` is
# $\log\sigma$, computed without overflow.


# %%
def bradley_terry_loss(r_chosen, r_rejected):
    # BEGIN SOLUTION
    return -F.logsigmoid(r_chosen - r_rejected).mean()
    # END SOLUTION


# %% [markdown]
# The check calls your function on random scores and compares it with the reference
# (`compare.teaching.bradley_terry_loss`). When they differ it says on which input, and names the usual
# slip if your result matches one.

# %%
teaching.check_bradley_terry_loss(bradley_terry_loss)

# %% [markdown]
# A reward model learns whatever made the labeller choose, length bias included: the gold reward never
# reaches it. That gap between the proxy (the reward model) and the gold reward is what a policy can
# exploit.
#
# ## 5. PPO: reward minus KL, GAE, and the clipped surrogate
#
# RLHF with PPO maximises the reward model's score while staying close to the starting policy
# $\pi_\text{ref}$:
#
# $$\max_\pi\; \mathbb{E}_{x,\; y \sim \pi}\bigl[r(x, y)\bigr] - \beta\, \mathrm{KL}\bigl(\pi \,\|\, \pi_\text{ref}\bigr).$$
#
# Per token (`compare/ppo_math.py`, `docs/ppo.md` rows 10–15): the KL is estimated on the sampled tokens,
# $k_t = \log \pi(y_t) - \log \pi_\text{ref}(y_t)$ (the k1 estimator); each token's reward is
# $-\beta k_t$, and the reward model's score is added once, on the last token. Generalised advantage
# estimation (GAE) turns those rewards and a value model's (the **critic**'s) estimates $V_t$ into
# advantages:
#
# $$\delta_t = r_t + \gamma V_{t+1} - V_t, \qquad A_t = \delta_t + \gamma\lambda A_{t+1}, \qquad R_t = A_t + V_t,$$
#
# with $\gamma = 1$, $\lambda = 0.95$, and $V_{T} = A_{T} = 0$ after the last token.
#
# A 3-token response with score 2, $\beta = 0.1$ and every value 0.5. By hand:
# $k = [0.2, 0, -0.5]$, so the rewards are $[-0.02, 0, 2 + 0.05] = [-0.02, 0, 2.05]$;
# $\delta = [-0.02, 0, 1.55]$; $A_2 = 1.55$, $A_1 = 0.95 \cdot 1.55 = 1.4725$,
# $A_0 = -0.02 + 0.95 \cdot 1.4725 = 1.378875$; the returns are $A + 0.5$.

# %%
from compare import ppo_math

old_logprobs = torch.tensor([[-1.0, -0.5, -2.0]])
ref_logprobs = torch.tensor([[-1.2, -0.5, -1.5]])
mask = torch.ones(1, 3, dtype=torch.bool)
kl = ppo_math.kl_estimate(old_logprobs, ref_logprobs, "k1")
rewards, _ = ppo_math.per_token_rewards(torch.tensor([2.0]), kl, mask, kl_coef=0.1)
values = torch.full((1, 3), 0.5)
advantages, returns = ppo_math.gae_advantages(rewards, values, mask, gamma=1.0, lam=0.95)
for name, x in [("kl", kl), ("rewards", rewards), ("advantages", advantages), ("returns", returns)]:
    print(f"{name:10}", [round(v, 4) + 0.0 for v in x[0].tolist()])  # + 0.0 prints -0.0 as 0.0

# %% [markdown]
# **Exercise 2: GAE.** Write `gae(rewards, values, mask, gamma, lam)`. `rewards`, `values`: float
# tensors $(B, T)$; `mask`: bool $(B, T)$, `True` on a response's tokens and `False` on the padding after
# it (each row is right-padded). Return `(advantages, returns)`, both $(B, T)$ and 0 where the mask is
# `False`. Hint: loop over $t$ from the last step to the first, carrying $V_{t+1}$ and $A_{t+1}$ (0 past
# the end of a row: multiply by `mask[:, t + 1]`).


# %%
def gae(rewards, values, mask, gamma, lam):
    # BEGIN SOLUTION
    mask = mask.float()
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(rewards.size(0))
    next_advantage = torch.zeros(rewards.size(0))
    for t in reversed(range(rewards.size(1))):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantages[:, t] = (delta + gamma * lam * next_advantage) * mask[:, t]
        next_value, next_advantage = values[:, t] * mask[:, t], advantages[:, t]
    return advantages, (advantages + values) * mask
    # END SOLUTION


# %%
teaching.check_gae(gae)

# %% [markdown]
# The policy update uses the **clipped surrogate** with the probability ratio
# $\rho_t = \pi_\text{new}(y_t) / \pi_\text{old}(y_t)$ and $\epsilon = 0.2$:
#
# $$\mathcal{L}_\text{clip} = \frac1T \sum_t \max\bigl(-A_t \rho_t,\; -A_t\, \mathrm{clip}(\rho_t, 1 - \epsilon, 1 + \epsilon)\bigr).$$
#
# With $A > 0$, a ratio above $1.2$ earns nothing more: the first token's ratio $e^{0.4} = 1.492$ counts
# as $1.2$. By hand, with the advantages above (the stage whitens them first; here they are used as they
# are): $\frac13\bigl(-1.2 \cdot 1.378875 - 1 \cdot 1.4725 - e^{-0.1} \cdot 1.55\bigr) = -1.5099$, and
# one token in three is clipped.

# %%
new_logprobs = old_logprobs + torch.tensor([[0.4, 0.0, -0.1]])
loss, stats = ppo_math.policy_loss(new_logprobs, old_logprobs, advantages, mask, clip_eps=0.2)
print(
    f"clipped policy loss {loss.item():.4f}; clipped share {stats['clipfrac'].item():.3f}; "
    f"mean ratio {stats['ratio'].item():.4f}"
)

# %% [markdown]
# ## 6. DPO: the same preferences, no reward model, no sampling
#
# DPO (Rafailov et al. 2023) shows that the KL-regularised objective above has its optimum at
#
# $$\pi^*(y \mid x) = \frac{1}{Z(x)}\, \pi_\text{ref}(y \mid x)\, \exp\bigl(r(x, y) / \beta\bigr),$$
#
# so $\beta \log \frac{\pi(y)}{\pi_\text{ref}(y)}$ acts as a reward ($Z$ cancels in a difference).
# Putting that implicit reward into the Bradley–Terry loss of section 4 gives a loss on the policy itself:
#
# $$\mathcal{L}_\text{DPO} = -\log \sigma\Bigl(\beta \Bigl[\log\frac{\pi(y_w)}{\pi_\text{ref}(y_w)} - \log\frac{\pi(y_l)}{\pi_\text{ref}(y_l)}\Bigr]\Bigr),$$
#
# with $y_w$ the chosen and $y_l$ the rejected completion, $\log \pi(y)$ the summed log-prob of a
# completion, and the mean over pairs. The `dpo` stage (`compare/stages/dpo.py`) trains with TRL's
# `DPOTrainer`, whose default `sigmoid` loss is this one. By hand, with $\beta = 0.1$, a policy that
# raised the chosen completion by 2 nats and lowered the rejected one by 2: the margin is 4, and the loss
# is $-\log\sigma(0.4) = \log(1 + e^{-0.4}) = 0.5130$.
#
# **Predict.** What does every pair cost at the start of training, when $\pi = \pi_\text{ref}$?

# %% [markdown] teacher
# *Answer.* $\log 2 = 0.6931$, whatever the pair: both log-ratios are 0, so the margin is 0 and
# $-\log\sigma(0) = \log 2$. A DPO run's loss curve starts there (`training.png` below shows it).

# %%
beta = 0.1
logp_chosen, ref_chosen = -12.0, -14.0
logp_rejected, ref_rejected = -15.0, -13.0
margin = (logp_chosen - ref_chosen) - (logp_rejected - ref_rejected)
dpo_loss_by_hand = -F.logsigmoid(torch.tensor(beta * margin)).item()
print(f"margin {margin:.1f}; DPO loss: {dpo_loss_by_hand:.4f}")

# %% [markdown]
# **Exercise 3: DPO's loss.** Write `dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
# beta)`: the first four are tensors $(B,)$ of summed log-probs; return the mean loss over the $B$ pairs
# as a 0-dimensional tensor.


# %%
def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    # BEGIN SOLUTION
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()
    # END SOLUTION


# %%
teaching.check_dpo_loss(dpo_loss)

# %% [markdown]
# The same formula on the tiny model of section 2: $\pi$ is the model after its thirty SFT steps,
# $\pi_\text{ref}$ the model before them, $y_w$ the first demonstration and $y_l$ an off-topic review for
# the same prompt. `compare.lm.sampling.completion_logprobs` sums the per-token log-probs of section 2.
#
# **Predict.** SFT only ever raised the likelihood of the four demonstrations; it never saw the off-topic
# review. Has $\log\pi(y_l) - \log\pi_\text{ref}(y_l)$ gone up, down, or stayed near 0?

# %%
from compare.lm.sampling import completion_logprobs

rejected_ids = tokenizer(" the food is bad .", add_special_tokens=False)["input_ids"] + [
    tokenizer.eos_token_id
]
pair = [completion_ids[0], rejected_ids]
policy = completion_logprobs(model, tokenizer, [prompts[0]] * 2, pair, temperature=1.0)
ref = completion_logprobs(reference, tokenizer, [prompts[0]] * 2, pair, temperature=1.0)
margin = (policy[0] - ref[0]) - (policy[1] - ref[1])
print(
    f"log pi - log pi_ref: chosen {policy[0] - ref[0]:+.3f}, rejected {policy[1] - ref[1]:+.3f}; "
    f"DPO loss {-F.logsigmoid(torch.tensor(beta * margin)).item():.4f}"
)

# %% [markdown]
# **The striking part: the rejected review's log-ratio rises too, by about 13 nats, although SFT never
# saw it.** SFT has no negative signal. Starting from a near-uniform model, it learns what *all* the
# demonstrations share: the sentence pattern `the X is Y .`, which words follow which, a period then
# end-of-text; `the food is bad .` is built of exactly those patterns, so it gains too. (The chosen
# completion gains far more, because thirty steps on four demonstrations memorise them.) Likelihood is
# not a judgement of quality: raising the probability of good text raises the probability of similar bad
# text. DPO uses only the *difference* of the two log-ratios, the margin, so the gain they share cancels.
# This is also why DPO is usually started from the SFT model ($\pi_\text{ref}$ = the SFT policy; in the
# suite below the `dpo` arm starts from the base model, and a recipe `[sft, dpo]` would start from SFT):
# the fluency is then in the reference, and the margin measures the preference alone. The opposite happens
# too: during DPO both log-probs often *fall* while the margin grows (Razin et al. 2024, "likelihood
# displacement"), because the loss constrains only the difference.

# %% [markdown] teacher
# *Answer to the prediction.* Up, by many nats (about 13 with the notebook's seed), though less than the
# chosen one (see the paragraph above). Students usually predict "down" (SFT should prefer what it was
# shown) or "unchanged" (it never saw that text); both miss that likelihood is shared by everything built
# from the same patterns.

# %% [markdown]
# ## 7. Baselines without a critic: RLOO and GRPO, and best-of-$n$
#
# PPO's critic is a second network trained alongside the policy, only to predict $V_t$, so that
# $A_t$ says "better or worse than expected". RLOO and GRPO drop it: for each prompt they sample a
# **group** of $k$ completions and compare each completion's reward with the others' (the reward is the
# reward model's score, one number per completion, so there is no per-token credit assignment):
#
# $$A_i^\text{RLOO} = r_i - \frac{1}{k-1} \sum_{j \ne i} r_j \qquad\qquad A_i^\text{GRPO} = \frac{r_i - \operatorname{mean}(r_1, \dots, r_k)}{\operatorname{std}(r_1, \dots, r_k) + \varepsilon}.$$
#
# RLOO's leave-one-out baseline keeps the gradient unbiased (a completion's own reward is not in its
# baseline); GRPO's division makes every prompt's advantages the same size, however easy or hard the
# prompt. The price of dropping the critic is $k$ samples per prompt; what is saved is a whole network
# and its training. `compare/stages/rloo.py` and `compare/stages/grpo.py` train with TRL's trainers;
# `compare.teaching` writes their advantages out. Below, two prompts with $k = 4$ each.
#
# **Predict.** The second prompt's four completions all get reward $0.7$. What advantage does each get,
# under RLOO and under GRPO, and what does the policy learn from that prompt?

# %% [markdown] teacher
# *Answer.* 0 under both (GRPO: $0 / (0 + \varepsilon) = 0$): a group whose completions are all equally
# good teaches nothing, however good they are. A critic would still give them a non-zero advantage if
# $V$ expected less or more. This is why GRPO runs log the share of groups with zero spread
# (`frac_reward_zero_std` in `training_logs.csv`), and why easy or impossible prompts waste samples.

# %%
group_rewards = torch.tensor([1.0, 0.2, 0.6, -0.2, 0.7, 0.7, 0.7, 0.7])
print("rewards         ", group_rewards.tolist())
print("RLOO advantages ", [round(x, 4) for x in teaching.rloo_advantages(group_rewards, k=4).tolist()])
print("GRPO advantages ", [round(x, 4) for x in teaching.grpo_advantages(group_rewards, k=4).tolist()])
print(
    "Dr. GRPO (no std)",
    [round(x, 4) for x in teaching.grpo_advantages(group_rewards, k=4, scale=False).tolist()],
)

# %% [markdown]
# By hand for the first group: the mean is $0.4$; RLOO's baseline for $r_1 = 1$ is
# $(0.2 + 0.6 - 0.2) / 3 = 0.2$, so $A_1 = 0.8$, which is $\frac{k}{k-1} = \frac43$ times the mean-centred
# $0.6$: RLOO and Dr. GRPO differ only by that constant factor.
#
# **Best-of-$n$** uses the same groups without training at all: sample $n$ completions, keep the reward
# model's favourite. The `best_of_n` arm does it at evaluation time; rejection-sampling fine-tuning
# (`rs_ft`) trains on the kept ones. Its KL to the policy it samples from is at most
# $\log n - \frac{n-1}{n}$ (`compare.stages.best_of_n.bon_kl_bound`): about 0.64 nats for $n = 4$.
#
# **Exercise 4: best-of-$n$ selection.** Write `best_of_n(scores, n)`: `scores` is a list of floats made
# of consecutive groups of `n` (one group per prompt); return a list with, for each group, the **index
# into `scores`** of its highest score, the first one on ties.


# %%
def best_of_n(scores, n):
    # BEGIN SOLUTION
    return [max(range(start, start + n), key=lambda i: scores[i]) for start in range(0, len(scores), n)]
    # END SOLUTION


# %%
teaching.check_best_of_n(best_of_n)

# %% [markdown]
# ## 8. What $\beta$ does
#
# $\beta$ prices the distance from $\pi_\text{ref}$: in PPO's objective it multiplies the KL (`kl_coef`),
# in DPO it scales the implicit reward, and in both the ideal policy is
# $\pi^* \propto \pi_\text{ref}\, e^{r/\beta}$. On four completions with a uniform $\pi_\text{ref}$ that
# optimum can be computed exactly: small $\beta$ puts all the mass on the best completion (large KL),
# large $\beta$ stays near $\pi_\text{ref}$ (KL near 0). The expected reward
# $\mathbb{E}_{\pi^*}[r]$ rises as $\beta$ falls, and the KL is what it costs. With a *learnt* reward the
# best completion by $r$ may not be the best by gold: that is over-optimisation, and what $\beta$
# guards against.

# %%
completion_rewards = torch.tensor([1.0, 0.5, 0.0, -1.0])
log_ref = torch.log(torch.full((4,), 0.25))
for b in (0.1, 0.3, 1.0, 3.0, 10.0):
    log_opt = torch.log_softmax(log_ref + completion_rewards / b, dim=0)
    kl_opt = (log_opt.exp() * (log_opt - log_ref)).sum()
    print(
        f"beta {b:5.1f}: pi* = {[round(x, 3) for x in log_opt.exp().tolist()]}  "
        f"E[r] {(log_opt.exp() * completion_rewards).sum().item():+.3f}  KL {kl_opt.item():.3f} nats"
    )

# %% [markdown]
# ## 9. The lab's suite: every method from the same base model and the same budget
#
# The harness trains each arm from one base model with one annotation budget (a demonstration costs 4
# units, a comparison 1), evaluates every policy with the gold reward on the same prompts, and writes a
# report. The suite below has eight arms: the base model, SFT, DPO, the reward model alone (evaluated as
# a scorer, so its policy is the base model's), and, on that reward model, PPO (with a critic), RLOO and
# GRPO (group baselines) and best-of-4 (no training). Its keys are those of `compare/suite/schema.py`;
# `experiments/quick.yaml` is the full version. The laptop size trains the tiny GPT-2 of the built-in
# suites; the micro size is a smoke test.

# %%
ARMS = """
arms:
  base: {recipe: []}
  sft: {recipe: [sft]}
  dpo: {recipe: [dpo]}
  rm: {recipe: [rm]}
  ppo: {recipe: [rm, ppo]}
  rloo: {recipe: [rm, rloo]}
  grpo: {recipe: [rm, grpo]}
  best_of_n: {recipe: [rm, best_of_n]}
"""
SUITES = {
    "micro": """
name: notebook
task: {train_prompts: 64, eval_prompts: 4}
base:
  tiny: {n_layer: 1, n_head: 2, n_embd: 32, corpus_size: 1000, steps: 60, batch_size: 32}
budget: {units: 48, cost: {demonstration: 4, comparison: 1}}
stages:
  sft: {epochs: 1, batch_size: 8}
  rm: {epochs: 1, batch_size: 8}
  dpo: {epochs: 1, batch_size: 8}
  ppo: {episodes: 32, rollout_batch_size: 16, max_new_tokens: 12, gold_eval_every: 1}
  rloo: {episodes: 16, num_generations: 4, batch_size: 8, max_new_tokens: 12}
  grpo: {episodes: 16, num_generations: 4, batch_size: 8, max_new_tokens: 12}
  best_of_n: {n: 4}
grid: {seed: [0, 1]}
eval: {samples_per_prompt: 2, max_new_tokens: 16}
""",
    "laptop": """
name: notebook
task: {train_prompts: 400, eval_prompts: 16}
base:
  tiny: {n_layer: 2, n_head: 4, n_embd: 64, steps: 1500}
budget: {units: 256, cost: {demonstration: 4, comparison: 1}}
stages:
  sft: {epochs: 3, lr: 1.0e-3, batch_size: 16}
  rm: {epochs: 3, lr: 1.0e-3, batch_size: 16}
  dpo: {epochs: 3, lr: 5.0e-4, batch_size: 16, beta: 0.1}
  ppo: {episodes: 512, rollout_batch_size: 64, lr: 3.0e-4, kl_coef: 0.1, temperature: 1.0}
  rloo: {episodes: 256, num_generations: 4, batch_size: 64, lr: 3.0e-4, beta: 0.05, temperature: 1.0}
  grpo: {episodes: 256, num_generations: 4, batch_size: 64, lr: 3.0e-4, beta: 0.05, temperature: 1.0}
  best_of_n: {n: 4}
grid: {seed: [0, 1, 2]}
eval: {samples_per_prompt: 4, max_new_tokens: 32, temperature: 1.0}
""",
}
suite_path = WORK / "lab.yaml"
suite_path.write_text(SUITES[SIZE].lstrip() + ARMS.lstrip())
print(suite_path.read_text())

# %% [markdown]
# `compare.cli.main` is the command line (`sft-vs-rlhf run ...`) as a function. Stages are cached in
# `CACHE` by the hash of their settings and inputs, so running a cell again, or a second suite that
# shares stages, trains only what is new. Each report is a folder in `WORK`.

# %%
from compare.cli import main


def run_suite(out: str, *overrides: str) -> Path:
    argv = ["run", str(suite_path), "--cache-dir", str(CACHE), "--out", str(WORK / out), "--jobs", str(JOBS)]
    for override in overrides:
        argv += ["--set", override]
    code = main(argv)
    if code != 0:
        raise RuntimeError(f"the suite exited with code {code}; the messages above say why")
    return WORK / out


report = run_suite("report")
print(f"report: {report / 'report.md'} (and report.html: open it in a browser)")

# %% [markdown]
# ## 10. What each arm writes
#
# The same three held-out prompts (seed 0), the first sample of every arm, with its gold reward and the
# reward model's score (`proxy`; blank for arms without a reward model). Read them before the numbers:
# which arms write like the demonstrator, which ones found something the reward model likes?

# %%
samples = pd.read_csv(report / "samples.csv")
shown = samples[(samples["split"] == "id") & (samples["seed"] == 0) & (samples["sample_index"] == 0)]
arm_order = list(dict.fromkeys(samples["arm"]))
for prompt_index in sorted(shown["prompt_index"].unique())[:3]:
    rows = shown[shown["prompt_index"] == prompt_index].set_index("arm").loc[arm_order]
    lines = [f"**{rows['prompt'].iloc[0]}**", "", "| arm | completion | gold | proxy |", "|---|---|---|---|"]
    for arm, row in rows.iterrows():
        proxy = "" if pd.isna(row["proxy_reward"]) else f"{row['proxy_reward']:+.2f}"
        text = str(row["completion"]).replace("|", "\\|") if pd.notna(row["completion"]) else ""
        lines.append(f"| {arm} | {text} | {row['gold_reward']:+.2f} | {proxy} |")
    display(Markdown("\n".join(lines)))

# %% [markdown]
# ## 11. The report's figures and tables
#
# The report draws its figures into `WORK/report/plots/`. First the gold reward of each arm (mean and
# 95% interval over seeds) on the held-out prompts and on the shifted ones; then each arm's gold reward
# against its KL to the base model: up and to the left is better (more gold for less change); then,
# where the run has them, PPO's gold and proxy reward measured on held-out prompts *during* training,
# against $\sqrt{\mathrm{KL}}$: over-optimisation is the proxy still climbing where the gold reward
# has flattened or turned down.

# %%
for figure in ("gold_by_arm.png", "gold_vs_kl.png", "overoptimisation.png"):
    if (report / "plots" / figure).exists():
        display(Markdown(f"`{report / 'plots' / figure}`"), Image(filename=str(report / "plots" / figure)))

# %% [markdown]
# The training curves, step by step, of what each arm's stages optimise: SFT's NLL, DPO's loss, the
# reward model's Bradley–Terry loss, and the reward the RL stages climb (PPO's is the score minus
# $\beta\,$KL):

# %%
display(Image(filename=str(report / "plots" / "training.png")))

# %% [markdown]
# `results.csv` has one row per arm, seed and evaluation split (`id`: held-out prompts of the training
# domains; `ood`, `ood_opener`, `ood_format`: named shifts; `prior`: counting, which nothing trains). The
# mean over seeds on the ID split:

# %%
results = pd.read_csv(report / "results.csv")
ids = results[results["split"] == "id"]
columns = ["gold_reward", "kl_to_base", "proxy_reward", "distinct_2", "mean_length", "well_formed"]
print(ids.groupby("arm", sort=False)[columns].mean().round(3).to_string())

# %% [markdown]
# The report's own main table (mean ± 95% interval over seeds) and its "claims checked" section, which
# decides a claim only when a seed-paired interval excludes zero:

# %%
report_text = (report / "report.md").read_text()


def section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n#", start + len(title))
    return text[start:] if end < 0 else text[start:end]


display(Markdown(section(report_text, "## Results")))
display(Markdown(section(report_text, "## Claims checked")))

# %% [markdown]
# ## 12. Predict, then run
#
# Write down your prediction before running each cell. At the micro size the numbers mean nothing; at the
# laptop size, compare a difference with how much the seeds disagree (the per-seed rows, or the report's
# "Differences from sft, paired by seed").
#
# **Question 1. Does SFT's output diversity go down or up compared to the base model?** SFT imitates one
# demonstrator. Look at distinct-2 (the share of distinct word pairs; higher is more diverse), its
# "across prompts" version, and self-BLEU across prompts (higher is *less* diverse), per seed.

# %%
diversity = ["distinct_2", "distinct_2_across", "self_bleu_across"]
print(
    ids[ids["arm"].isin(["base", "sft"])]
    .pivot_table(index="seed", columns="arm", values=diversity)
    .round(3)
    .to_string()
)

# %% [markdown] teacher
# *Answer.* Down a little, or not at all, at this size: the usual expectation is a fall (SFT moves the
# model towards one demonstrator's habits: the same sentence pattern, the same filler), but 64
# demonstrations for three epochs move the tiny model by only about one nat of KL, and the demonstrator
# writes the same language as the pretraining corpus. Check the sign on every seed before calling it
# (the first line below counts). The large drop in diversity comes from the arms trained on preferences:
# DPO and the RL arms concentrate on what the (learnt) reward likes, and their distinct-2 across prompts
# falls far below the base model's (the table below, all arms). Mode collapse is a property of optimising
# a reward, more than of imitation.

# %% teacher
per_seed = ids[ids["arm"].isin(["base", "sft"])].pivot_table(index="seed", columns="arm", values=diversity)
lower = (per_seed[("distinct_2_across", "sft")] < per_seed[("distinct_2_across", "base")]).sum()
print(f"SFT's distinct-2 across prompts is below the base model's on {lower} of {len(per_seed)} seeds")
print(ids.groupby("arm", sort=False)[diversity].mean().round(3).to_string())

# %% [markdown]
# **Question 2. Which arm buys more gold reward per nat of KL?** Each trained arm moved away from the base
# model (KL to base, in nats per completion) and changed the gold reward. Divide the gain over the base
# model (same seed) by the KL. An arm with a tiny KL can have a large ratio from a small gain, so read the
# gain and the KL too; the report's "Gold per annotation unit and per nat of KL" table does the same with
# intervals.

# %%
base_gold = ids[ids["arm"] == "base"].set_index("seed")["gold_reward"]
trained = ids[ids["arm"].isin(["sft", "dpo", "ppo", "rloo", "grpo", "best_of_n"])].copy()
trained["gold_gain"] = trained["gold_reward"] - trained["seed"].map(base_gold)
trained["gain_per_nat"] = trained["gold_gain"] / trained["kl_to_base"]
print(
    trained.groupby("arm", sort=False)[["gold_gain", "kl_to_base", "gain_per_nat"]]
    .mean()
    .round(3)
    .to_string()
)

# %% [markdown] teacher
# *Answer.* Best-of-4, by far, and then the RL arms; SFT least. Best-of-$n$'s KL is capped at
# $\log 4 - 3/4 \approx 0.64$ nats, and picking the reward model's favourite of four base-model samples
# buys a large part of what the RL arms gain, so its ratio is several times theirs. SFT can only reach
# its demonstrator, whose reviews score about 0.8, not far above the base model: a small gain for about a
# nat of KL. PPO, RLOO, GRPO and DPO buy more gold in all, but spend a good part of their KL on what the
# reward (learnt, or DPO's implicit one) merely *likes*: length, repetition of praised aspects (read
# their completions above). A ratio from a KL near 0 is noise, and the order of neighbours changes from
# seed to seed: the cell below ranks the arms by ratio on every seed; the report's table gives intervals.

# %% teacher
print(
    trained.pivot_table(index="seed", columns="arm", values="gain_per_nat")
    .rank(axis=1, ascending=False)
    .astype(int)
    .to_string()
)

# %% [markdown]
# **Question 3. What happens to the gold reward of the preference arms if the labeller prefers longer
# answers more?** The task's labeller has `length_bias` 0.15; the cell below runs the same suite with
# 0.6 (`--set task.annotator.length_bias=0.6`) into a second report. Before running: which arms can change
# at all (which ones see comparisons)? Will the reward model's score (`proxy_reward`) and the gold reward
# move the same way? Will the completions get longer?
#
# What to compare: `gold_reward`, `proxy_reward` and `mean_length` of the arms trained on comparisons
# between the two labellers, and `rm_accuracy` (how often the reward model orders pairs of the arm's
# samples as the gold reward does). The harness's message says how many stages it ran: only the
# comparisons and what is trained on them are new.

# %%
biased = run_suite("report_length_bias", "task.annotator.length_bias=0.6")
both = pd.concat(
    {
        "0.15 (default)": ids,
        "0.6": pd.read_csv(biased / "results.csv").query("split == 'id'"),
    },
    names=["length_bias"],
).reset_index(level=0)
compared = ["gold_reward", "proxy_reward", "mean_length", "rm_accuracy"]
print(both.groupby(["arm", "length_bias"], sort=False)[compared].mean().round(3).to_string())
print(f"second report: {biased / 'report.md'}")

# %% [markdown] teacher
# *Answer.* Only the arms trained on comparisons can change: `dpo`, `rm` (and so `ppo`, `rloo`, `grpo` and
# `best_of_n`, which use it). `base` and `sft` never see a comparison, so their rows are identical, to
# the last digit (the same cached stages). In the RL arms the reward model now pays more for each extra
# sentence: their `proxy_reward` rises while their completions get longer, and the gold reward, which
# charges 0.25 per sentence past 4 and pays nothing for length, falls. That gap between proxy and gold is
# reward hacking, caused here by the labeller rather than by the reward model's capacity. `rm_accuracy`
# (the reward model against gold) drops on most arms' samples, because it learnt the labeller's taste.
# DPO moves least: its implicit reward is learnt from the same biased pairs, but it cannot sample
# longer and longer answers to exploit it. The cell below prints each change, 0.6 minus the default.

# %% teacher
change = both.groupby(["arm", "length_bias"], sort=False)[compared].mean().unstack("length_bias")
print(
    pd.DataFrame({c: change[(c, "0.6")] - change[(c, "0.15 (default)")] for c in compared})
    .round(3)
    .to_string()
)

# %% [markdown]
# **Question 4. What does a smaller or larger $\beta$ do to DPO?** The cell below runs DPO at three more
# values of $\beta$ (0.03, 0.3, 1.0, besides the suite's 0.1) on seed 0, as a grid over
# `arms.dpo.stages.dpo.beta`: every other arm is the cached one. Predict before running: as $\beta$
# falls, does DPO's KL to the base model go up or down? And its gold reward?

# %%
swept = run_suite("report_beta", "grid.arms.dpo.stages.dpo.beta=[0.03, 0.1, 0.3, 1.0]", "grid.seed=[0]")
sweep = pd.read_csv(swept / "results.csv").query("split == 'id' and arm == 'dpo'")
beta_column = "grid.arms.dpo.stages.dpo.beta"
print(
    sweep.sort_values(beta_column)[[beta_column, "gold_reward", "kl_to_base", "proxy_reward", "mean_length"]]
    .rename(columns={beta_column: "beta"})
    .round(3)
    .to_string(index=False)
)

# %% [markdown] teacher
# *Answer.* Broadly up, but not smoothly. DPO's loss is a function of $\beta \times$ margin, so a
# smaller $\beta$ needs a larger margin (a larger change of the policy) to reach the same loss, as the
# exact $\pi^*$ of section 8 showed: from $\beta = 1$ to $0.3$ the KL to the base model typically jumps
# several-fold. Below that, training rather than $\beta$ limits how far DPO goes (three epochs on the
# same 256 pairs), so the KL levels off and one seed's noise can reverse the order of neighbours. The
# gold reward does not follow the KL: more change buys more of what the labeller prefers, length bias
# included, and the pairs were sampled from the base model, so they say less and less about what the
# moved policy writes. With one seed, trust the large KL steps and not the small gold differences. The
# cell below prints the KL at each $\beta$ and whether it falls at every step.

# %% teacher
kls = sweep.sort_values(beta_column)["kl_to_base"].tolist()
betas = sorted(sweep[beta_column])
print("KL to the base model at beta", ", ".join(f"{b}: {k:.2f}" for b, k in zip(betas, kls)))
print("KL falls at every larger beta:", all(a > b for a, b in zip(kls, kls[1:])))

# %% [markdown]
# **Going further.** The same `--set` works for every key of the suite: `task.annotator.style_bias`,
# `task.annotator.flip_rate`, `task.demonstrator_quality`, `budget.units`, `stages.ppo.kl_coef`,
# `stages.grpo.scale_rewards`. The built-in suites in `experiments/` sweep them with `grid:` and the
# report draws the curves (`sft-vs-rlhf run experiments/overoptimization.yaml`). The reports of this
# notebook stay in `WORK` until you delete it.
