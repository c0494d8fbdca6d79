"""Loading and saving models: any causal LM or reward model folder (or hub id), with a pad token.

Every stage loads its inputs through here, so each model has a pad token distinct from EOS
(docs/ppo.md row 1) and sits on the device the run uses.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def load_policy(path: str | Path, **kwargs):
    """A causal LM and its tokenizer from a folder or hub id; a pad token distinct from EOS is ensured."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    ensure_pad_token(model, tokenizer)
    model.to(device()).eval()
    return model, tokenizer


def load_reward_model(path: str | Path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path)
    model.to(device()).eval()
    return model, tokenizer


def ensure_pad_token(model, tokenizer) -> None:
    """A pad token distinct from EOS, and an embedding row for every token the tokenizer has.

    Rows are only ever added: a model whose vocabulary is padded beyond the tokenizer (Pythia, say)
    keeps its rows, and the new pad token takes one of the spare ones.
    """
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": PAD})
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id


def save_model(model, tokenizer, path: Path) -> None:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
