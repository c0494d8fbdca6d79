"""Shared fixtures: tiny models built inside the tests (nothing is downloaded)."""

from __future__ import annotations

import random

import pytest
import torch

from compare.lm.loading import save_model
from compare.lm.tiny import build_word_tokenizer, pretrain, tiny_gpt2
from compare.tasks.reviews import Reviews

torch.set_num_threads(1)  # tiny models: one thread is as fast, and robust on a shared 2-core machine


# The smallest whole suite (base, SFT, DPO; one seed): for the tests that need any end-to-end run.
SMALL_SUITE = """
name: small
task: {train_prompts: 32, eval_prompts: 2}
base:
  tiny: {n_layer: 1, n_head: 2, n_embd: 16, corpus_size: 300, steps: 20, batch_size: 16}
budget: {units: 32, cost: {demonstration: 4, comparison: 1}}
stages:
  sft: {epochs: 1, batch_size: 8}
  dpo: {epochs: 1, batch_size: 8}
arms:
  base: {recipe: []}
  sft: {recipe: [sft]}
  dpo: {recipe: [dpo]}
grid: {seed: [0]}
eval: {samples_per_prompt: 2, max_new_tokens: 8, examples: 1}
"""

# The three tiers of shared/STYLE.md, one marker each: `unit` (pure functions against hand-computed
# values, hand-made results), `smoke` (a stage, a loader or a task on a tiny model built in the test) and
# `slow` (end-to-end: whole micro suites, the benchmarks' smoke runs, the browser, the notebook).
# `pytest -m "not slow"` runs the first two. A test marked slow by hand stays slow whatever its module.
UNIT = {"test_stats", "test_claims", "test_claims_known", "test_ladder", "test_metrics", "test_compute", "test_oracle", "test_reviews",
        "test_ppo_math", "test_diversity", "test_suite", "test_suite_limits", "test_report",
        "test_report_roles", "test_report_html", "test_data_kinds",
        "test_teaching", "test_beside"}  # fmt: skip
SLOW = {"test_benchmarks", "test_end_to_end", "test_findings", "test_notebook", "test_executor",
        "test_integrity", "test_safety", "test_cache_commands", "test_browser", "test_export"}  # fmt: skip


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("slow"):
            continue
        module = item.module.__name__.rsplit(".", 1)[-1]
        item.add_marker("slow" if module in SLOW else "unit" if module in UNIT else "smoke")


@pytest.fixture(scope="session")
def task() -> Reviews:
    return Reviews(seed=0, train_prompts=64, eval_prompts=8)


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory, task):
    """A 1-layer GPT-2 over the reviews language, pretrained for a few steps so it writes some reviews."""
    path = tmp_path_factory.mktemp("tiny_policy")
    tokenizer = build_word_tokenizer(task.vocabulary())
    torch.manual_seed(0)  # the initialisation must not depend on which test built the fixture first
    model = tiny_gpt2(tokenizer, n_layer=1, n_head=2, n_embd=32, n_positions=64)
    corpus = task.pretraining_corpus(2000, random.Random(0))
    pretrain(model, tokenizer, corpus, steps=150, batch_size=32, lr=3e-3, seed=0, desc="fixture")
    save_model(model, tokenizer, path)
    return path


def reward_model_from(policy_dir, path):
    """A reward model at `path`: the policy's body with a fresh scalar head (untrained, but a valid
    scorer), its tokenizer (and any chat template) kept."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(policy_dir, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    model.config.pad_token_id = tokenizer.pad_token_id
    save_model(model, tokenizer, path)
    return path


@pytest.fixture(scope="session")
def tiny_rm_dir(tmp_path_factory, tiny_policy_dir):
    """A reward model: the tiny policy's body with a fresh scalar head (untrained, but a valid scorer)."""
    return reward_model_from(tiny_policy_dir, tmp_path_factory.mktemp("tiny_rm"))


@pytest.fixture
def install_package(tmp_path, monkeypatch):
    """Install a fake distribution for one test: its files and a dist-info whose RECORD lists them.

    `install_package(name, version, {relative path: bytes})` returns the site folder (on sys.path).
    """

    def install(name: str, version: str, files: dict[str, bytes]):
        site = tmp_path / "site"
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        for rel, data in files.items():
            (site / rel).parent.mkdir(parents=True, exist_ok=True)
            (site / rel).write_bytes(data)
        record = [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]
        (info / "RECORD").write_text("".join(f"{rel},,\n" for rel in record))
        monkeypatch.syspath_prepend(str(site))
        return site

    return install
