"""Stages in parallel: each stage one Ray task, started as soon as its inputs are complete.

`compare/runner.py:execute` decides what runs and reports it; this module is where stages run when more
than one runs at once. `--jobs N` starts Ray in this process with N stage slots (quiet, no dashboard,
every server of it bound to the loopback address only, and the process's own SIGTERM handling kept:
`sft-vs-rlhf` then exits 143 with one line); `--ray-address ADDR` joins an existing cluster. Each task
asks for the resources its stage needs: CPUs (torch's threads inside the task follow them), a GPU when
the cluster has them, and for an external base model the memory its training stages need
(`compare.preflight.memory_needed`).

Every node reads and writes the same stage cache, so the cache folder must be one shared path: a task
on each node reads a probe file this process wrote there, and writes one back, before anything runs.
A stage that raises is recorded by its task as it is in this process (not cached, its traceback in the
cache's `logs/`) and never retried; a task whose worker process dies (killed, out of memory, its node
lost) is retried by Ray (`max_retries`), and the stage's lock and temporary folder die with it.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from compare.suite import SuiteError
from compare.suite.errors import first_line

RETRIES = 2  # runs of a stage after its worker process died, before it counts as failed
GB = 1024**3
# Ray's own reporting off (no usage statistics sent anywhere, no log lines of its own in ours), and its
# workers at the priority of this process (Ray lowers theirs by default: stages would lose the CPU to
# anything else running)
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DISABLE_IMPORT_WARNING": "1",
    "RAY_DEDUP_LOGS": "0",
    "RAY_worker_niceness": "0",
}
# Ray resolves "127.0.0.1" as the node's address to the machine's network address, and its servers then
# listen on every interface; with this off (its switch for single-machine use) Ray started here keeps to
# the loopback address, in this process and in the processes it starts (which read it from the environment)
LOOPBACK = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def cores() -> int:
    """CPU cores this process may use (its affinity mask, e.g. under Slurm or taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_jobs(external: bool) -> int:
    """Stages at once when the user says nothing (`$SFT_VS_RLHF_JOBS` if set): every core for the tiny
    model (one thread per stage), as many as the memory allows (about 1 GiB per worker: torch,
    transformers and a tiny model); for an external model one, or one per GPU when there are several."""
    if os.environ.get("SFT_VS_RLHF_JOBS"):
        text = os.environ["SFT_VS_RLHF_JOBS"].strip()
        if not text.isdigit() or int(text) < 1:
            raise SuiteError(f"SFT_VS_RLHF_JOBS={text!r}: not a whole number of at least 1")
        return int(text)
    if external:
        import torch

        return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1
    from compare.lm.external import available_memory

    return max(1, min(cores(), int(available_memory() // GB)))


@dataclass(frozen=True)
class Resources:
    """What one stage's task asks the scheduler for."""

    cpus: int = 1
    gpus: float = 0.0
    memory: int | None = None  # bytes; only set for training stages of an external base model

    def options(self) -> dict:
        opts = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.memory:
            opts["memory"] = self.memory
        return opts


def stage_memory(kind: str, params: dict, parameters: int | None) -> int | None:
    """Bytes a training stage of a base with `parameters` parameters needs at its peak (as preflight's
    memory check computes it), or None for a stage that declares no memory or a base of unknown size."""
    from compare.memory import StageLoad, memory_needed, stage_load
    from compare.stages import SPECS

    spec = SPECS[kind]
    if parameters is None or spec.memory is None:
        return None
    train, settings_cls = params.get("train"), spec.settings or spec.train_settings
    load = StageLoad(kind)
    if isinstance(train, dict) and settings_cls is not None:
        load = stage_load(kind, settings_cls.model_validate(train))
    return int(memory_needed(parameters, {load}))


def base_parameters(suite) -> int | None:
    """Parameters of a suite's external base model (read from its config or GGUF header), else None."""
    base = suite.base
    if not base.external:
        return None
    from compare.lm.external import count_parameters, resolve

    try:
        return count_parameters(resolve(base.model, base.gguf_file, base.package))
    except Exception:  # its size unknown here: the task then asks for no memory
        return None


# -- Ray -------------------------------------------------------------------------------------------------
def _stage_task(*args):
    """Runs in a Ray worker: one stage, through the same code as in the main process."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from compare.stage_run import attempt

    return attempt(*args)


def _probe(path: str, token: str, node: str) -> str | None:
    """Runs on one node: None if it reads `token` in the probe file and can write beside it, else why not."""
    probe = Path(path)
    try:
        seen = probe.read_text()
    except OSError as e:
        return f"cannot read {probe} ({type(e).__name__})"
    if seen != token:
        return f"reads a different {probe} (another folder at the same path)"
    try:
        probe.with_name(f"{probe.name}-{node}").write_text(token)
    except OSError as e:
        return f"cannot write in {probe.parent} ({type(e).__name__})"
    return None


class RayPool:
    """Stage tasks on Ray: started here (`address` None, `jobs` slots of `cpus` each) or on a cluster."""

    def __init__(self, jobs: int | None, address: str | None, cpus: int | None, verbose: bool):
        """`cpus`: each stage's CPUs (its torch threads); None: this machine's cores shared by the jobs, or on
        a cluster a node's CPUs (per GPU on a GPU node). `jobs` None on a cluster: as many as it holds."""
        import ray

        for key, value in RAY_ENV.items():
            os.environ.setdefault(key, value)
        self.ray, self.started = ray, address is None
        common = dict(
            include_dashboard=False,
            log_to_driver=verbose,
            logging_level=logging.INFO if verbose else logging.ERROR,
            configure_logging=True,
        )
        global _LOCAL
        if self.started:
            cpus = cpus or max(1, cores() // jobs)
            env = tuple(sorted((k, v) for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"))
            key = (jobs * cpus, verbose, env)
            if _LOCAL != key or not ray.is_initialized():  # else: the instance of a run before, kept
                _shutdown()
                with _own_sigterm(), _loopback():
                    ray.init(
                        address="local",
                        num_cpus=jobs * cpus,
                        _node_ip_address="127.0.0.1",
                        object_store_memory=128 * 1024**2,  # only small results travel through it
                        **common,
                    )
                _LOCAL = key
                atexit.register(_shutdown)
        else:
            _shutdown()  # a local instance of a run before
            try:
                with _own_sigterm():
                    ray.init(address=address, **common)
            except Exception as e:  # unreachable, not a Ray cluster, another Ray version
                raise SuiteError(f"--ray-address {address}: cannot connect ({first_line(e)})") from None
        self.remote = ray.remote(_stage_task)
        self.nodes = [n for n in ray.nodes() if n.get("Alive")]
        resources = [n.get("Resources", {}) for n in self.nodes]
        if cpus is None:
            cpus = max(1, min(int(r.get("CPU", 1) // max(1.0, r.get("GPU", 0.0))) for r in resources))
        self.cpus = cpus
        total = ray.cluster_resources()
        self.gpus = float(total.get("GPU", 0))
        if jobs is None:  # a cluster: as many stages as it has room for
            jobs = int(self.gpus) if self.gpus else int(total.get("CPU", 1) // cpus)
        self.slots = max(1, jobs)
        self.gpus_per_stage = min(1.0, self.gpus / self.slots) if self.gpus else 0.0
        self.max_memory = max((r.get("memory", 0) for r in resources), default=0)
        self.in_flight: dict = {}  # object ref -> stage name

    def check_shared_cache(self, root: Path) -> None:
        """Every node must see the cache folder this process writes: one line naming a node that does not."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if self.started and len(self.nodes) <= 1:
            return  # Ray started here, on this machine: it is this process's folder
        from compare.cache import LOCKS

        (root / LOCKS).mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        probe = root / LOCKS / f".probe-{token}"  # in .locks/: a cache holds nothing else of its own
        probe.write_text(token)
        task = self.ray.remote(_probe)
        try:
            refs = {}
            for node in self.nodes:
                strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                ref = task.options(num_cpus=0, scheduling_strategy=strategy, max_retries=0)
                refs[node["NodeManagerAddress"], node["NodeID"]] = ref.remote(
                    str(probe), token, node["NodeID"]
                )
            for (host, node_id), ref in refs.items():
                try:
                    problem = self.ray.get(ref, timeout=120)
                except Exception as e:  # the node did not answer
                    problem = f"did not answer ({type(e).__name__})"
                if problem is None and not probe.with_name(f"{probe.name}-{node_id}").exists():
                    problem = "writes where this process cannot see it"
                if problem is not None:
                    raise SuiteError(
                        f"stage cache {root}: node {host} {problem}; every node of the cluster needs the same "
                        "shared folder at the same path (--cache-dir on a shared filesystem)"
                    )
        finally:
            for leftover in probe.parent.glob(f".probe-{token}*"):
                leftover.unlink(missing_ok=True)

    def resources(self, memory: int | None) -> Resources:
        if self.gpus:  # the model's memory is the GPU's, and each stage has its own share of the GPUs
            memory = None
        if memory and self.max_memory and memory > self.max_memory:
            memory = int(self.max_memory)  # preflight checked this machine; a smaller node still may run it
        return Resources(self.cpus, self.gpus_per_stage, memory)

    def submit(self, name: str, resources: Resources, args: tuple) -> None:
        ref = self.remote.options(
            name=name, max_retries=RETRIES, retry_exceptions=False, **resources.options()
        ).remote(*args)
        self.in_flight[ref] = name

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        """(stage name, result) of the tasks that finished within `timeout` seconds (maybe none)."""
        if not self.in_flight:
            return []
        done, _ = self.ray.wait(list(self.in_flight), num_returns=1, timeout=timeout)
        finished = []
        for ref in done:
            name = self.in_flight.pop(ref)
            try:
                finished.append((name, self.ray.get(ref)))
            except self.ray.exceptions.RayError as e:  # its worker died more often than it is retried
                finished.append((name, {"crash": e}))
        return finished

    def close(self) -> None:
        """Disconnect from a cluster. Ray started here stays up for the next run in this process (its
        workers have imported what stages need) unless tasks were left running; it stops at exit."""
        interrupted = bool(self.in_flight)
        for ref in list(self.in_flight):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:
                pass
        self.in_flight.clear()
        if interrupted or not self.started:
            _shutdown()


@contextmanager
def _loopback():
    """Ray started in the block binds to the loopback address only (`LOOPBACK`, set for this process and
    the processes it starts meanwhile: Ray's servers, which start its workers), then everything as it was
    (a cluster joined later uses the machine's address)."""
    from ray._private import ray_constants

    before, constant = os.environ.get(LOOPBACK), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = constant
        if before is None:
            os.environ.pop(LOOPBACK, None)
        else:
            os.environ[LOOPBACK] = before


@contextmanager
def _own_sigterm():
    """Keep this process's SIGTERM handler through `ray.init`, which installs Ray's own twice (one exits
    with the signal's number, one stops Ray's processes and exits 1: either past our clean-up and our one
    line). Where there is a handler of ours, Ray's setter does nothing meanwhile; otherwise Ray's stay."""
    from ray._private import utils

    main = threading.current_thread() is threading.main_thread()
    ours = signal.getsignal(signal.SIGTERM) if main else None
    setter = getattr(utils, "set_sigterm_handler", None)
    if callable(ours) and setter is not None:
        utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        if setter is not None:
            utils.set_sigterm_handler = setter
        if callable(ours):
            signal.signal(signal.SIGTERM, ours)


# The Ray instance started in this process, kept between runs (tests, notebooks, benchmarks run many in
# one process): its CPUs, verbosity and the environment its workers inherited; a run that differs in any
# of them starts a new one.
_LOCAL: tuple | None = None


def _shutdown() -> None:
    global _LOCAL
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _LOCAL = None


def crash_reason(error: BaseException) -> str:
    kind = type(error).__name__
    if "WorkerCrashed" in kind or "NodeDied" in kind or "OutOfMemory" in kind or "ActorDied" in kind:
        return f"{kind}: its worker process died {RETRIES + 1} times (killed, out of memory or node lost)"
    return f"{kind}: {first_line(error)}"
