"""Loading and saving models: any causal LM or reward model folder (or hub id), with a pad token.

Every stage loads its inputs through here, so each model has a pad token distinct from EOS
(docs/ppo.md row 1) and sits on the device the run uses. No load runs code from the folder it reads
(`NO_REMOTE_CODE`): a config or tokenizer that asks for its own Python code (`auto_map`) is refused
with transformers' one-line error, never run and never asked about on the terminal.

A stage trained with LoRA (`lora_r`) stores its adapter, not a merged copy of its model: the folder
holds peft's `adapter_config.json` and `adapter_model.safetensors` (for a reward model, the trained
scalar head comes along as a `modules_to_save` module), the tokenizer, the trained model's
`config.json`, and `parent.json`, which names the folder it was trained from (its input "model": a
sibling in the stage cache, by name; an absolute path elsewhere). Loading such a folder loads its
chain: the first folder with full weights, then every adapter on the way down, each merged in memory,
so every caller gets the model that a merged copy would have held (docs/cache.md).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from compare.cache import PARENT  # {"parent": the folder it was trained from}, in an adapter folder

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
MAX_CHAIN = 64  # adapters on adapters: far more than any recipe has
STARTED_FROM = "_stage_folder"  # attribute of a model loaded from a local folder: that folder
# every `from_pretrained` of a model, config or tokenizer: code shipped in a folder (a stage of the cache,
# a user's model) is never run; transformers raises instead of asking "Do you wish to run the custom code?"
NO_REMOTE_CODE = {"trust_remote_code": False}


class ChainError(RuntimeError):
    """An adapter folder whose chain cannot be loaded (a parent missing or pruned, a cycle), in one line."""


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


# -- chains of adapters ------------------------------------------------------------------------------------
def stored_as_adapter(folder: str | Path) -> bool:
    """Whether `folder` is a stage folder that stores a LoRA adapter on a parent (not full weights)."""
    return (Path(folder) / PARENT).is_file()


def parent_of(folder: str | Path) -> Path | None:
    """The folder an adapter folder was trained from, or None for a folder with full weights."""
    folder = Path(folder)
    if not stored_as_adapter(folder):
        return None
    try:
        ref = json.loads((folder / PARENT).read_text())["parent"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ChainError(f"{folder / PARENT}: not a parent record ({e})") from None
    return folder.parent / ref  # a name: a sibling in the cache; an absolute path stays itself


def chain(folder: str | Path) -> list[Path]:
    """The folders whose weights make the model in `folder`: the one with full weights first, `folder` last."""
    folders = [Path(folder)]
    while (parent := parent_of(folders[-1])) is not None:
        if not parent.is_dir():
            raise ChainError(
                f"{folders[-1]}: stored as an adapter on {parent}, which is missing (pruned?); "
                "run the suite again to rebuild it"
            )
        if len(folders) > MAX_CHAIN or any(os.path.samefile(parent, f) for f in folders):
            raise ChainError(f"{folders[0]}: its chain of adapters loops or is deeper than {MAX_CHAIN}")
        folders.append(parent)
    return folders[::-1]


def _adapter_task(folder: Path) -> str | None:
    return json.loads((folder / "adapter_config.json").read_text()).get("task_type")


def _from_pretrained(path: str | Path, cls, config_kwargs: dict | None = None, **kwargs):
    """`cls.from_pretrained(path)`, for a full folder or hub id as it is, for an adapter folder by its chain.

    A chain is loaded with the top folder's config (a reward model's `num_labels`, its pad token...); the
    adapters are applied with the random state put back afterwards, so loading a chain draws from torch's
    generator exactly what loading the merged copy would: nothing, unless the model has a part that no
    folder holds (a fresh scalar head on a policy), which is initialised as it would have been.
    """
    config_kwargs = config_kwargs or {}
    if not stored_as_adapter(path):
        model = cls.from_pretrained(path, **config_kwargs, **{**kwargs, **NO_REMOTE_CODE})
        if Path(path).is_dir():
            setattr(model, STARTED_FROM, Path(path))
        return model
    from peft import PeftConfig, PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    folders = chain(path)
    top = folders[-1]
    head_in_adapter = any(_adapter_task(f) == "SEQ_CLS" for f in folders[1:])
    if head_in_adapter and cls is AutoModelForCausalLM:
        raise ChainError(f"{path}: a reward model (an adapter with a scalar head), not a policy")
    config = AutoConfig.from_pretrained(top, **config_kwargs, **NO_REMOTE_CODE)
    # a head that an adapter brings: the fresh one the first folder's load makes is overwritten, so it draws
    # nothing from the generator and its "newly initialised" report is no news
    with torch.random.fork_rng(devices=[]) if head_in_adapter else nullcontext(), _quiet(head_in_adapter):
        model = cls.from_pretrained(folders[0], config=config, **{**kwargs, **NO_REMOTE_CODE})
    with torch.random.fork_rng(devices=[]):  # peft initialises the adapter's weights before loading them
        for folder in folders[1:]:
            adapter = PeftConfig.from_pretrained(folder)
            # no task type: peft's generic wrapper, so a policy's adapter also fits a reward model's body
            adapter.task_type = None
            model = PeftModel.from_pretrained(model, folder, config=adapter).merge_and_unload()
    if (top / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(top)
    # where it came from: a stage trained on it names it its parent; and a TRL trainer that reloads its
    # reference from `_name_or_path` fails on an adapter folder instead of silently taking the first folder
    setattr(model, STARTED_FROM, Path(path))
    model.config._name_or_path = str(path)
    return model


@contextmanager
def _quiet(on: bool):
    """transformers' warnings off for the block, if `on` (and put back as they were)."""
    if not on:
        yield
        return
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


# -- loading -------------------------------------------------------------------------------------------------
def load_causal_lm(path: str | Path, **kwargs):
    """A causal LM from a folder, hub id or adapter chain, on the CPU, as `from_pretrained` returns it."""
    from transformers import AutoModelForCausalLM

    return _from_pretrained(path, AutoModelForCausalLM, **kwargs)


def load_classifier(path: str | Path, num_labels: int | None = None, dtype: torch.dtype | None = None):
    """A sequence-classification model (a reward model, a value model, a judge) from a folder, hub id or
    adapter chain, on the CPU; `num_labels` for a fresh head on a policy's body; `dtype` to hold it in
    another dtype than the one it was saved in."""
    from transformers import AutoModelForSequenceClassification

    config_kwargs = {"num_labels": num_labels} if num_labels is not None else {}
    kwargs = {"dtype": dtype} if dtype is not None else {}
    return _from_pretrained(path, AutoModelForSequenceClassification, config_kwargs, **kwargs)


def load_policy(path: str | Path, dtype: torch.dtype | None = None, **kwargs):
    """A causal LM and its tokenizer from a folder or hub id; a pad token distinct from EOS is ensured.
    `dtype`: hold the model in another dtype than the one it was saved in (`bf16_weights`)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, **{**kwargs, **NO_REMOTE_CODE})
    model = load_causal_lm(path, **kwargs, **({"dtype": dtype} if dtype is not None else {}))
    ensure_pad_token(model, tokenizer)
    model.to(device()).eval()
    return model, tokenizer


def load_reward_model(path: str | Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, **NO_REMOTE_CODE)
    model = load_classifier(path)
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


# -- saving --------------------------------------------------------------------------------------------------
def save_model(model, tokenizer, path: Path) -> None:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def save_config(model, out: Path) -> None:
    """The config files `save_pretrained` writes beside the weights (dtype and architecture set as it does)."""
    model.config.dtype = str(model.dtype).split(".")[1]
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(out)
    if model.can_generate():
        model.generation_config.save_pretrained(out)


def adapter_parent(model, out: Path) -> str | None:
    """How `out` will name the folder a peft `model` was trained from, or None if it cannot be its parent.

    The start is the folder it was loaded from (noted by the loaders here, else `config._name_or_path`).
    Not a parent: a hub id, anything without a config, a copy inside `out` (removed once loaded), or a
    start whose vocabulary differs from the trained model's (a pad token added at loading, whose new
    embedding row an adapter does not hold). A start beside `out` (the stage cache) is named by its
    folder name.
    """
    base = model.get_base_model()
    start = getattr(base, STARTED_FROM, None) or getattr(base.config, "_name_or_path", "") or ""
    if not start or not (Path(start) / "config.json").is_file():
        return None
    from transformers import AutoConfig

    start = Path(start)
    if start.resolve().is_relative_to(Path(out).resolve()):
        return None
    vocab = getattr(AutoConfig.from_pretrained(start, **NO_REMOTE_CODE).get_text_config(), "vocab_size", None)
    if vocab != base.get_input_embeddings().num_embeddings:
        return None
    if start.resolve().parent == Path(out).resolve().parent:
        return start.name
    return str(start.resolve())


def save_trained_peft(model, tokenizer, out: Path, check: Callable[[torch.nn.Module], None]) -> bool:
    """Save a trained peft `model` into `out`: its adapter on the folder it started from, if it can be.

    Writes peft's adapter files (`save_pretrained`), the trained model's config (and generation config),
    the tokenizer and `parent.json`; where the start cannot be a parent (see `adapter_parent`), the merged
    model's full weights instead. `check(merged)` sees the merged model, the one every later stage loads,
    before anything is written: an exception there leaves `out` as it was. Returns True for an adapter.
    """
    parent = adapter_parent(model, out)
    scratch = Path(out) / ".adapter"
    if parent is not None:  # before the merge, which takes the adapter out of the model
        model.save_pretrained(str(scratch), save_embedding_layers=False)
    try:
        merged = model.merge_and_unload()
        check(merged)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if parent is None:
        save_model(merged, tokenizer, out)
        return False
    for name in ADAPTER_FILES:
        os.replace(scratch / name, Path(out) / name)
    shutil.rmtree(scratch)  # and peft's model card with it
    config_file = Path(out) / "adapter_config.json"
    adapter = json.loads(config_file.read_text())
    adapter["base_model_name_or_path"] = parent
    config_file.write_text(json.dumps(adapter, indent=2, sort_keys=True))
    save_config(merged, out)
    tokenizer.save_pretrained(out)
    (Path(out) / PARENT).write_text(json.dumps({"parent": parent}) + "\n")
    return True
