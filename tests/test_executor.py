"""Stages in parallel on Ray give the results of one stage at a time, on one machine and on a cluster.

Every stage is seeded by its own settings, so `results.csv` and `samples.csv` must be byte-identical
whatever runs where: `--jobs 2` (Ray started in-process), a simulated two-node cluster (Ray's own
`ray.cluster_utils.Cluster`), and a run whose worker is killed in the middle of a stage (Ray retries
it). A stage that raises is not retried, and is reported as in one process. A node that cannot see the
cache is named before anything runs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import textwrap
import threading
import time
from pathlib import Path

import pytest

from compare.cli import main
from compare.suite import SuiteError

pytest.importorskip("ray")

SUITE = """
name: parallel
task: {train_prompts: 32, eval_prompts: 2}
base:
  tiny: {n_layer: 1, n_head: 2, n_embd: 16, corpus_size: 300, steps: 20, batch_size: 16}
budget: {units: 32, cost: {demonstration: 4, comparison: 1}}
stages:
  sft: {epochs: 1, batch_size: 8}
  dpo: {epochs: 1, batch_size: 8}
  rm: {epochs: 1, batch_size: 8}
  ppo: {episodes: 16, rollout_batch_size: 8, max_new_tokens: 6, gold_eval_every: 1, gold_eval_prompts: 2}
arms:
  base: {recipe: []}
  sft: {recipe: [sft]}
  dpo: {recipe: [dpo]}
  ppo: {recipe: [rm, ppo]}
grid: {seed: [0]}
eval: {samples_per_prompt: 2, max_new_tokens: 8, examples: 1}
"""
FILES = ("results.csv", "samples.csv")


def run(suite: Path, root: Path, *more: str) -> int:
    return main(["run", str(suite), "--cache-dir", str(root / "cache"), "--out", str(root / "report"), *more])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The suite run one stage at a time in this process, as without Ray."""
    root = tmp_path_factory.mktemp("jobs1")
    suite = root / "parallel.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    assert run(suite, root, "--jobs", "1") == 0
    return suite, {name: (root / "report" / name).read_bytes() for name in FILES}


def same_files(root: Path, expected: dict[str, bytes]) -> None:
    for name in FILES:
        assert (root / "report" / name).read_bytes() == expected[name], f"{name} differs"


def test_two_jobs_give_the_results_of_one(reference, tmp_path, capsys):
    suite, expected = reference
    assert run(suite, tmp_path, "--jobs", "2") == 0
    same_files(tmp_path, expected)
    err = capsys.readouterr().err
    lines = re.findall(r"^\[(\d+)/(\d+)\] (\w+) .*: done in", err, re.M)
    total = int(lines[0][1])
    assert sorted(int(i) for i, _, _ in lines) == list(range(1, total + 1))  # each stage once, all done
    assert "error" not in err


def test_a_simulated_two_node_cluster_gives_the_same_results(reference, tmp_path, capsys, monkeypatch):
    from ray.cluster_utils import Cluster

    from compare import executor, runner

    suite, expected = reference
    executor._shutdown()  # Ray a test before started in this process
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        monkeypatch.setattr(runner, "_draws_bars", lambda: True)  # as on a terminal: the overall bar
        assert run(suite, tmp_path, "--ray-address", cluster.address) == 0
        same_files(tmp_path, expected)
        err = capsys.readouterr().err
        assert "stages:" in err and "running" in err and not re.search(r"^\[\d+/\d+\]", err, re.M)

        # a node that cannot see the cache folder is named, in one line, before anything runs
        head = cluster.head_node.node_id

        real_probe = executor._probe

        def blind(path, token, node):  # the head sees the cache as it is; the other node does not
            return real_probe(path, token, node) if node == head else "cannot read the probe (simulated)"

        monkeypatch.setattr(executor, "_probe", blind)
        other = tmp_path / "other"
        assert run(suite, other, "--ray-address", cluster.address) == 2
        errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
        assert (
            len(errors) == 1
            and "cannot read the probe (simulated)" in errors[0]
            and "every node" in errors[0]
        )
        assert not list((other / "cache").rglob(".probe*"))
    finally:
        cluster.shutdown()


def test_a_killed_worker_is_retried_and_a_failing_stage_is_not(reference, tmp_path, monkeypatch, capsys):
    from compare import stages

    suite, expected = reference
    sft_tries, dpo_tries = tmp_path / "sft.tries", tmp_path / "dpo.tries"
    real_sft = stages.SPECS["sft"].run

    def killed_once(job, out, inputs, ctx, tries=str(sft_tries), real=real_sft):
        with open(tries, "a") as f:
            f.write(f"{os.getpid()}\n")
        if len(Path(tries).read_text().split()) == 1:
            time.sleep(300)  # the test kills this process meanwhile
        real(job, out, inputs, ctx)

    def broken(job, out, inputs, ctx, tries=str(dpo_tries)):
        with open(tries, "a") as f:
            f.write(f"{os.getpid()}\n")
        raise RuntimeError("dpo exploded")

    monkeypatch.setitem(stages.SPECS, "sft", dataclasses.replace(stages.SPECS["sft"], run=killed_once))
    monkeypatch.setitem(stages.SPECS, "dpo", dataclasses.replace(stages.SPECS["dpo"], run=broken))
    killed = []

    def killer():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            if sft_tries.exists() and sft_tries.read_text().strip():
                pid = int(sft_tries.read_text().split()[0])
                time.sleep(0.5)  # inside the stage, its lock held and its folder started
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.1)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    assert run(suite, tmp_path, "--jobs", "2") == 3
    thread.join(timeout=5)
    tries = sft_tries.read_text().split()
    assert killed and len(tries) == 2 and tries[0] == str(killed[0]) != tries[1]  # retried elsewhere
    assert len(dpo_tries.read_text().split()) == 1  # raised: not retried
    err = capsys.readouterr().err
    assert re.search(r"error: stage dpo [0-9a-f]{16} failed \(dpo seed=0\): RuntimeError: dpo exploded; "
                     r"not cached; log: \S+dpo-[0-9a-f]{16}\.failed\.log", err)  # fmt: skip
    for name in FILES:  # every other arm exactly as in one process
        lines = [x for x in expected[name].decode().splitlines(True) if not x.startswith("dpo,")]
        assert (tmp_path / "report" / name).read_text() == "".join(lines), f"{name} differs"


def test_probe_of_a_node_names_what_it_cannot_do(tmp_path):
    from compare.executor import _probe

    probe = tmp_path / ".probe-x"
    assert "cannot read" in _probe(str(probe), "t", "n1")
    probe.write_text("other")
    assert "different" in _probe(str(probe), "t", "n1")
    probe.write_text("t")
    assert _probe(str(probe), "t", "n1") is None and (tmp_path / ".probe-x-n1").read_text() == "t"


def test_default_jobs_follow_the_model(monkeypatch):
    from compare import executor

    monkeypatch.setattr(executor, "cores", lambda: 8)
    monkeypatch.setenv("SFT_VS_RLHF_MEMORY_GB", "64")
    assert executor.default_jobs(external=False) == 8  # the tiny model: every core
    monkeypatch.setenv("SFT_VS_RLHF_MEMORY_GB", "3")
    assert executor.default_jobs(external=False) == 3  # about 1 GiB per worker
    assert executor.default_jobs(external=True) == 1  # an external model on the CPU: one at a time
    monkeypatch.setenv("SFT_VS_RLHF_JOBS", "5")
    assert executor.default_jobs(external=False) == 5 == executor.default_jobs(external=True)
    monkeypatch.setenv("SFT_VS_RLHF_JOBS", "two")
    with pytest.raises(SuiteError, match="SFT_VS_RLHF_JOBS='two'"):
        executor.default_jobs(external=False)


def test_stage_memory_from_the_parameter_count():
    from compare.executor import stage_memory
    from compare.lm.external import OVERHEAD
    from compare.stages import SPECS

    full, lora = (SPECS["ppo"].memory.bytes_per_parameter(lora) for lora in (False, True))
    assert stage_memory("ppo", {"train": {"lora_r": None}}, 10**6) == int(10**6 * full * OVERHEAD)
    assert stage_memory("ppo", {"train": {"lora_r": 8}}, 10**6) == int(10**6 * lora * OVERHEAD)
    assert stage_memory("ppo", {"train": {}}, None) is None  # the tiny model: no memory asked
    assert stage_memory("demos", {}, 10**6) is None  # a stage that declares no memory
