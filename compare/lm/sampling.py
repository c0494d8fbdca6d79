"""Sampling and log-probs, once for every stage: comparison data, evaluation, online RL.

Temperature, padding and position ids are handled the same way everywhere (docs/ppo.md rows 2–4): the
sampler divides logits by the temperature it samples at, left-padded prompts get explicit position ids,
and every recomputed log-prob uses the same temperature and positions.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from compare.lm.chat import prompt_text, prompt_token_ids, scored_token_ids


@dataclass
class Samples:
    """Completions sampled for a list of prompts; rows are prompt-major (prompt i, sample j)."""

    prompts: list[str]
    completions: list[str]  # decoded text that continues the prompt (see `completion_text`), without EOS
    completion_ids: list[list[int]]  # truncated after the first EOS (EOS included when present)
    ended: list[bool]  # whether the completion ended with EOS
    logprobs: list[float]  # summed log-prob of the completion under the sampling distribution


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


def right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, so a padded row scores like the unpadded one (docs/ppo.md row 2)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def sample(
    model,
    tokenizer,
    prompts: list[str],
    n: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    batch_size: int = 256,
) -> Samples:
    """Sample `n` completions per prompt with a KV cache; logits are divided by `temperature` (row 3).

    Each prompt is tokenised by `compare.lm.chat.prompt_token_ids`: with a chat template, the templated
    user turn and the assistant's generation prompt.
    """
    with evaluating(model):  # a model training with activation checkpointing would drop its KV cache
        return _sample(model, tokenizer, prompts, n, max_new_tokens, temperature, seed, batch_size)


@contextmanager
def evaluating(model):
    """`model` in eval mode for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _sample(model, tokenizer, prompts, n, max_new_tokens, temperature, seed, batch_size) -> Samples:
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    prompt_ids = prompt_token_ids(tokenizer, prompts)
    rows = [p for p in prompt_ids for _ in range(n)]
    out = Samples([p for p in prompts for _ in range(n)], [], [], [], [])
    for start in range(0, len(rows), batch_size):
        ids, mask = left_pad(rows[start : start + batch_size], pad)
        ids, mask = ids.to(dev), mask.to(dev)
        b = ids.shape[0]
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        tokens, logps = [], []
        past, step_ids, pos = None, ids, position_ids(mask)
        for _ in range(max_new_tokens):
            logits = model(
                input_ids=step_ids,
                attention_mask=mask,
                position_ids=pos,
                past_key_values=past,
                use_cache=True,
            )
            past = logits.past_key_values
            step_logp = torch.log_softmax(scaled_logits(model, logits.logits[:, -1], temperature), dim=-1)
            nxt = torch.multinomial(step_logp.exp(), 1, generator=gen).squeeze(1)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            logps.append(torch.where(done, 0.0, step_logp.gather(1, nxt[:, None]).squeeze(1)))
            tokens.append(nxt)
            done |= nxt == eos
            if bool(done.all()):
                break
            step_ids = nxt[:, None]
            pos = pos[:, -1:] + 1
            mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype, device=dev)], dim=1)
        toks = torch.stack(tokens, 1).tolist()
        lps = torch.stack(logps, 1).sum(1).tolist()
        for row, lp, p_ids in zip(toks, lps, rows[start : start + batch_size]):
            cut = row.index(eos) + 1 if eos in row else len(row)
            kept = [t for t in row[:cut] if t != pad]
            out.completion_ids.append(kept)
            out.ended.append(bool(kept) and kept[-1] == eos)
            out.completions.append(completion_text(tokenizer, kept, p_ids))
            out.logprobs.append(lp)
    return out


def completion_text(tokenizer, ids: list[int], prompt_ids: list[int]) -> str:
    """The text of a completion as it continues its prompt: cut at EOS, no padding, spacing kept.

    Decoded together with the prompt and cut after the prompt's text, so that the join is what the
    tokenizer writes: a word-level tokenizer's completion starts with the space between words, a BPE
    completion starts with whatever its first token holds (" great", "n't"). prompt + completion is the
    full text. Every stage that turns completion tokens into text (sampling, RLOO's reward function) uses
    this, so the reward model and the gold reward always see the same format.
    """
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    body = [t for t in (ids[: ids.index(eos)] if eos in ids else ids) if t != pad]
    prompt = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    full = tokenizer.decode([*prompt_ids, *body], skip_special_tokens=True)
    if full.startswith(prompt):
        return full[len(prompt) :]
    return tokenizer.decode(body, skip_special_tokens=True)  # a tokenizer that re-normalises the join


@torch.no_grad()
def completion_logprobs(
    model, tokenizer, prompts: list[str], completion_ids: list[list[int]], temperature: float, batch_size=256
) -> list[float]:
    """Summed log-prob of each completion after its prompt, logits divided by `temperature`."""
    return [
        float(x.sum())
        for x in token_logprobs(model, tokenizer, prompts, completion_ids, temperature, batch_size)
    ]


def token_logprobs(model, tokenizer, prompts, completion_ids, temperature: float, batch_size=256):
    """Per-token log-probs of each completion (a list of 1-D tensors), read one position early (row 4)."""
    dev = next(model.parameters()).device
    prompt_ids = prompt_token_ids(tokenizer, prompts)
    result = []
    for start in range(0, len(prompt_ids), batch_size):
        p_ids, p_mask = left_pad(prompt_ids[start : start + batch_size], tokenizer.pad_token_id)
        c_ids, c_mask = right_pad(completion_ids[start : start + batch_size], tokenizer.pad_token_id)
        c_ids, c_mask = c_ids.to(dev), c_mask.to(dev)
        logits = response_logits(model, p_ids.to(dev), p_mask.to(dev), c_ids, c_mask, temperature)
        lp = gather_logprobs(logits, c_ids)
        lp = lp * c_mask
        result.extend(lp[i, : int(c_mask[i].sum())].cpu() for i in range(lp.shape[0]))
    return result


@torch.no_grad()
def reward_scores(
    rm, tokenizer, prompts: list[str], completions: list[str], batch_size: int = 256
) -> list[float]:
    """Reward-model score of prompt + completion + EOS, read at the last non-pad token (docs/ppo.md row 8).

    The reward trainer appends EOS to every training text, so scoring does the same; with a chat template
    the model reads the templated conversation, as the trainer did (`compare.lm.chat.scored_token_ids`).
    """
    dev = next(rm.parameters()).device
    scores = []
    for start in range(0, len(prompts), batch_size):
        enc = scored_token_ids(
            tokenizer, prompts[start : start + batch_size], completions[start : start + batch_size]
        )
        ids, mask = right_pad(enc, tokenizer.pad_token_id)
        scores.extend(sequence_scores(rm, ids.to(dev), mask.to(dev)).tolist())
    return scores


# -- TRL's online trainers (RLOO, GRPO): one reward path -------------------------------------------------
def completion_texts(tokenizer, prompts: list[str], completion_ids: list[list[int]]) -> list[str]:
    """Each completion's text as `sample` writes it (`completion_text`), from its token ids."""
    prompt_ids = prompt_token_ids(tokenizer, prompts)
    return [completion_text(tokenizer, c, p) for c, p in zip(completion_ids, prompt_ids)]


def reward_function(tokenizer, score: Callable[[list[str], list[str]], list[float]], name: str):
    """A reward function for TRL's `reward_funcs` that scores what our sampler would have written.

    TRL hands reward functions `completions` decoded from the ids alone (`skip_special_tokens=True`),
    which for a word-level tokenizer drops the space between the prompt's last word and the first
    completion word; a reward model given to TRL directly also scores the text without EOS, one token
    early for one trained on texts that end with it (docs/ppo.md row 8). The function rebuilds each
    completion from its ids with `completion_text` and calls `score(prompts, completions)`:
    `reward_scores` for a reward model (which appends EOS), a task's verifier. `name` is the function's
    name in TRL's logs (`rewards/<name>/mean`). With a chat template TRL hands over conversational
    prompts (message lists): the task's prompt string is read back from the user's turn.
    """

    def reward(prompts: list, completion_ids: list[list[int]], **_) -> list[float]:
        texts = [prompt_text(p) for p in prompts]
        return score(texts, completion_texts(tokenizer, texts, completion_ids))

    reward.__name__ = name
    return reward


def use_mask_positions(model) -> None:
    """Give every forward pass without position ids `cumsum(mask) - 1`, so left padding shifts nothing.

    TRL's log-prob passes give left-padded prompts no position ids while `generate` derives them from
    the mask; GPT-2's absolute positions would then differ between sampling and scoring (docs/ppo.md
    row 2). A forward pre-hook on the policy (and the reference) supplies them.
    """

    def add_positions(module, args, kwargs):
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        # only full-sequence passes: `generate` supplies its own position ids for cached steps
        if (
            kwargs.get("position_ids") is None
            and ids is not None
            and mask is not None
            and mask.shape == ids.shape
        ):
            kwargs["position_ids"] = position_ids(mask.long())
        return args, kwargs

    model.register_forward_pre_hook(add_positions, with_kwargs=True)


# -- batched forward passes (shared by evaluation and PPO) ------------------------------------------------
def response_logits(model, prompt_ids, prompt_mask, response_ids, response_mask, temperature: float):
    """Logits / `temperature` that predict each response token, (B, T, V) float32 (docs/ppo.md rows 2-4).

    Prompts (B, P) are left-padded, responses (B, T) right-padded; masks are 1 at real tokens. The
    logit at position t predicts token t + 1, so the response's logits start one position early (row 4);
    position ids skip the left padding (row 2).
    """
    ids = torch.cat([prompt_ids, response_ids], 1)
    mask = torch.cat([prompt_mask, response_mask.to(prompt_mask.dtype)], 1)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits
    return scaled_logits(model, logits[:, prompt_ids.shape[1] - 1 : -1], temperature)


def scaled_logits(model, logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits / temperature in float32, with the pad token ruled out.

    Pad is filler, never an output: the policy's distribution excludes it in sampling and in every
    recomputed log-prob alike, so sampled and recomputed log-probs agree (docs/ppo.md row 3).
    """
    logits = logits.float() / temperature
    config = getattr(model, "config", None) or model.module.config  # DDP wraps the model
    pad = config.pad_token_id
    if pad is not None and pad != config.eos_token_id and pad < logits.shape[-1]:
        logits[..., pad] = float("-inf")
    return logits


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits) at `tokens`: (B, T, V), (B, T) -> (B, T)."""
    return torch.log_softmax(logits, dim=-1).gather(2, tokens.unsqueeze(-1)).squeeze(-1)


def per_token_scores(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A sequence-classification model's scalar head applied at every position, (B, L) float32.

    The value model of PPO reads this at response positions; a reward model's score is its value at the
    last real token (`sequence_scores`). Causal-LM classifiers in transformers name their head `score`.
    """
    hidden = model.base_model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask))
    return model.score(hidden.last_hidden_state).squeeze(-1).float()


def sequence_scores(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Score of each row (B,) read at its last non-pad token (docs/ppo.md row 8); any padding side."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), positions, -1).max(dim=1).values.clamp(min=0)
    return per_token_scores(model, ids, mask).gather(1, last.unsqueeze(1)).squeeze(1)
