"""sft-vs-rlhf: run SFT and RLHF from one base model and one annotation budget, and compare them."""

import importlib.metadata


def _version() -> str:
    """The installed distribution's version (pyproject.toml's), or a marker when run from a bare checkout."""
    try:
        return importlib.metadata.version("sft-vs-rlhf")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _version()
