"""sft-vs-rlhf: run SFT and RLHF from one base model and one annotation budget, and compare them."""

__version__ = "0.1.0"
