"""The built-in base model: a word-level tokenizer over a task's language, a tiny GPT-2, its pretraining.

The `base` stage builds it when a suite names no external model (compare/stages/base_model.py); the
tests build smaller ones the same way.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from compare.lm.loading import EOS, PAD, UNK, device, set_seed


def build_word_tokenizer(words: list[str]):
    """A word-level tokenizer over `words`, with a pad token distinct from EOS (docs/ppo.md row 1)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK)


def tiny_gpt2(tokenizer, n_layer: int, n_head: int, n_embd: int, n_positions: int):
    """A GPT-2-style causal LM with dropout off everywhere (docs/ppo.md row 6).

    Its GELU is GPT-2's tanh approximation computed by one fused kernel (`gelu_pytorch_tanh`) rather than
    GPT-2's own `gelu_new`, the same formula in five elementwise ops: the same function to 2e-7, a fifth
    of the time of every MLP activation (forward and backward), about 20% of a tiny model's step.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        activation_function="gelu_pytorch_tanh",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def parameter_count(model) -> int:
    """Trainable parameters, each counted once (GPT-2's output layer shares the token embedding)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def steps_for_ratio(tokens_per_parameter: float, parameters: int, batch_size: int, mean_tokens: float) -> int:
    """Optimiser steps that show the model `tokens_per_parameter` corpus tokens per parameter, each batch
    holding `batch_size` texts of `mean_tokens` tokens on average (padding not counted):
    ceil(ratio * parameters / (batch_size * mean_tokens)), at least 1. Chinchilla (Hoffmann et al. 2022)
    trains compute-optimally at about 20 tokens per parameter; the default 64-wide base sees about 20."""
    return max(1, math.ceil(tokens_per_parameter * parameters / (batch_size * mean_tokens) - 1e-9))


def pretrain(
    model, tokenizer, texts: list[str], steps: int, batch_size: int, lr: float, seed: int, desc: str
):
    """Next-token pretraining on `texts` (each ends with EOS); a plain loop, the model is tiny."""
    set_seed(seed)
    dev = device()
    model.to(dev).train()
    enc = tokenizer([t + EOS for t in texts], padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    labels = ids.masked_fill(mask == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * max(0.1, 1 - s / steps)
    )
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in tqdm(range(steps), desc=desc, leave=False, disable=None):
        idx = torch.randint(0, len(texts), (batch_size,), generator=gen)
        width = int(mask[idx].sum(1).max())
        out = model(
            input_ids=ids[idx, :width].to(dev),
            attention_mask=mask[idx, :width].to(dev),
            labels=labels[idx, :width].to(dev),
        )
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(out.loss.item())
    model.eval()
    return losses
