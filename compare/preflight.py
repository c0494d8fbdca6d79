"""Preflight: every check that touches the world, before anything trains.

The suite's schema (`compare/suite/schema.py`) only says what a file may contain. Here, with the files,
datasets, packages and memory of this machine: the base model and its GGUF file exist, a package that
ships one is installed, a dataset's splits and columns are there and hold enough labelled pairs, each
grid point's data, samples and tokens fit in memory, the base model fits in memory for its hungriest
stage, and the report folder may be written. Each problem is one line naming the file and the key.
A report is rebuilt without any of this (`sft-vs-rlhf report` never runs preflight).
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
import shutil
from pathlib import Path

from compare import limits
from compare.lm import external as basemodel
from compare.lm.external import is_local
from compare.memory import TOKENS_PER_WORD, Shape, StageLoad, memory_needed, stage_load, stage_needed
from compare.plan import apply_point, arm_budget, arm_settings, grid_points
from compare.stages import DATA_KINDS, RECIPE_STAGES, SPECS, Produces
from compare.stages.data import COMPARISONS
from compare.suite.errors import SuiteError
from compare.suite.schema import Arm, Suite
from compare.tasks import TASKS

REPORT_MARKER = ".sft-vs-rlhf-report"  # in every folder `run` writes: only such a folder is ever replaced
PARTIAL_MARKER = ".sft-vs-rlhf-partial"  # in a report folder while it is being written
# inside a report folder that cannot be swapped whole (a mount point): the new report being written and
# the old one being replaced, each `<name>-<pid>/` with the partial marker; and the marker being written
INSIDE_TMP, INSIDE_OLD = ".sft-vs-rlhf-new", ".sft-vs-rlhf-old"
_INSIDE = re.compile(r"\.sft-vs-rlhf-(?:new|old)-[0-9]+")
_MARKER_TMP = re.compile(re.escape(f".{REPORT_MARKER}.tmp-") + r"[0-9]+-[0-9a-f]{8}")
# what a report folder of an earlier version (a marker without a manifest) holds
REPORT_FILES = ["failed_runs.csv", "index.md", "plots", "provenance.json", "report.html", "report.md",
                "results.csv", "samples.csv", "suite.yaml", "training_logs.csv"]  # fmt: skip


def plain_name(name) -> bool:
    """A name of an entry directly inside a folder: no path separator, not `.` or `..`, nothing else."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\0" not in name


def read_marker(folder: Path) -> dict | None:
    """The marker of a folder the harness wrote ({files: its entries, complete}), or None if there is none
    (a link in its place is none). Its manifest keeps only plain names: nothing outside the folder is
    ever named by it."""
    path = folder / REPORT_MARKER
    if path.is_symlink() or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):  # an earlier version's marker
        subfolders = [p.name for p in folder.iterdir() if (p / REPORT_MARKER).is_file()]
        return {"files": REPORT_FILES + subfolders, "complete": True}
    return {**data, "files": [name for name in data["files"] if plain_name(name)]}


def _our_leftover(entry: Path) -> bool:
    """Something a publish into this very folder left when it was killed (ours to clear)."""
    if _INSIDE.fullmatch(entry.name):
        return entry.is_dir() and not entry.is_symlink() and (entry / PARTIAL_MARKER).is_file()
    return bool(_MARKER_TMP.fullmatch(entry.name)) and not entry.is_dir()


def clear_leftovers_inside(out: Path) -> None:
    """Remove what a killed publish into `out` itself left there (call it holding the folder's lock)."""
    for entry in out.iterdir():
        if _our_leftover(entry):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def preflight(suites: list[Suite], out: Path | None = None, cache_root: Path | None = None) -> None:
    """Every check of the world for the suites about to run (their report folder `out` and stage cache,
    if given)."""
    if cache_root is not None:
        check_cache_dir(cache_root)
    if out is not None:
        check_out_folder(out, cache_root)
    ram = limits.available_ram()
    for suite in suites:
        path = Path(suite.source)
        check_files(suite, path)
        for point in grid_points(suite):
            resolved = apply_point(suite, point, path)
            stages = {name: arm_settings(resolved, arm) for name, arm in resolved.arms.items()}
            check_sizes(resolved, stages, path, ram)
            check_lengths(resolved, stages, path)
            _check_dataset_task(resolved, path)
        check_memory(suite, path)
        check_beside(suite, path)
    if cache_root is not None:
        make_cache_dir(cache_root)


# -- files, packages, datasets ---------------------------------------------------------------------------
def check_beside(suite: Suite, path: Path) -> None:
    """The findings report folder the suite's report shows beside its own verdicts (`beside_findings`):
    every member suite's saved files read and checked now, not after training."""
    folder = suite.beside_folder
    if folder is None:
        return
    where = f"{path}: beside_findings: {suite.beside_findings!r}"
    if not folder.is_dir():
        problem = "is a file" if folder.exists() else "does not exist"
        raise SuiteError(
            f"{where} ({folder}) {problem}; give a findings report folder (`make findings` writes one)"
        )
    from compare.report.beside import read_reference  # the report's modules: only for suites that ask
    from compare.report.files import ReportError

    try:
        read_reference(folder)
    except ReportError as e:
        raise SuiteError(f"{where}: {e}") from None
    except OSError as e:
        raise SuiteError(f"{where}: cannot read it ({e.strerror or e})") from None


def reference_state(suite: Suite) -> str:
    """The size and time of every file of the suite's findings reference folder's member suites: a
    rewritten reference makes a warm run write the report again."""
    folder = suite.beside_folder
    files = sorted(p for p in folder.glob("*/*") if p.is_file()) if folder and folder.is_dir() else []
    return json.dumps([[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files])


def _exists(value: str | None, path: Path, key: str, what: str, folder: bool) -> None:
    """A local path must exist; a hub id is not checked (no network before a stage needs it)."""
    if value is not None and is_local(value):
        where = Path(value).expanduser()
        if not (where.is_dir() if folder else where.exists()):
            problem = " does not exist" + (" or is not a folder" if folder else "")
            raise SuiteError(f"{path}: {key}: {what} {value!r}{problem}")


def check_files(suite: Suite, path: Path) -> None:
    """The base model's files or package, and a dataset task's data, as the suite names them."""
    base = suite.base
    try:
        if base.model is not None and is_local(base.model):
            key = "base.model"
            basemodel.check_model(base.model)
            if base.gguf_file is not None:
                key = "base.gguf_file"
                basemodel.check_gguf_file(base.model, base.gguf_file)
        if base.package is not None:
            key = "base.package"
            basemodel.package_gguf(base.package)
            basemodel.require_gguf_reader()
    except ValueError as e:
        raise SuiteError(f"{path}: {key}: {e}") from None
    data = suite.task.data
    if data is None:
        return
    _exists(data.path, path, "task.data.path", "dataset path", folder=False)
    for key in ("classifier", "judge"):
        _exists(getattr(data, key, None), path, f"task.data.{key}", f"{key} folder", folder=True)
    ood = getattr(data, "ood", None)
    if ood is not None:
        _exists(ood.path, path, "task.data.ood.path", "dataset path", folder=False)
    # local datasets now (splits, columns, not empty); hub ids only when a stage reads them
    try:
        TASKS[suite.task.name].check_data(data.model_dump(), local_only=True)
    except ValueError as e:
        raise _data_error(path, e) from None


def _data_error(path: Path, e: ValueError) -> SuiteError:
    """A dataset task's error ("ood.split: ...") as the suite's, keyed under task.data."""
    setting, sep, message = str(e).partition(": ")
    if not (sep and re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", setting)):
        setting, message = "", str(e)
    key = "task.data" + (f".{setting}" if setting else "")
    return SuiteError(f"{path}: {key}: {message}")


@functools.lru_cache(maxsize=8)
def _dataset_task(task_json: str):
    """A dataset task, read once for every grid point that does not change its settings."""
    settings = json.loads(task_json)
    return TASKS[settings["name"]](
        **{k: v for k, v in settings.items() if k not in ("name", "annotator", "annotator_pool")}
    )


def _check_dataset_task(suite: Suite, path: Path) -> None:
    """What a dataset task needs from the rest of the suite."""
    data = suite.task.data
    if data is None:
        return
    if not is_local(data.path):
        return
    task = _dataset_task(json.dumps(suite.task.model_dump(), sort_keys=True))
    try:  # every evaluation split has prompts left: an error names the setting or filter that emptied it
        for split in task.splits_with(suite.task.model_dump()):
            task.prompts(split)
    except ValueError as e:
        raise _data_error(path, e) from None
    n_comparisons = max(arm_budget(suite, arm)[COMPARISONS.name] for arm in suite.arms.values())
    if n_comparisons:  # a dataset's own labels: are there enough of them?
        try:
            task.fixed_comparisons(n_comparisons, random.Random(0))
        except ValueError as e:
            raise SuiteError(f"{path}: budget.units: {e}") from None


def trained_kinds(arm: Arm) -> list[str]:
    """The stage kinds a run of the arm trains: its recipe, then the teachers its stages learn from
    (`StageSpec.teacher`, built by the plan from the suite's settings of that kind)."""
    teachers = [RECIPE_STAGES[kind].teacher for kind in arm.recipe if RECIPE_STAGES[kind].teacher]
    return list(dict.fromkeys([*arm.recipe, *teachers]))


# -- sizes: what each grid point asks of the machine -------------------------------------------------------
def _setting_key(arm_name: str, arm: Arm, kind: str, field: str) -> str:
    """The key a stage setting of an arm comes from: the arm's own override, else the suite's stages."""
    own = field in arm.stages.get(kind, {})
    return f"arms.{arm_name}.stages.{kind}.{field}" if own else f"stages.{kind}.{field}"


TINY_VOCABULARY = 10_000  # words of a built-in task's tokenizer, generously (the largest has 625)


def _tiny_bytes(suite: Suite) -> tuple[float, float]:
    """(parameters, bytes at the peak) of the built-in base model: its hungriest stage, a pretraining
    batch's activations (attention scores and MLP) and the tokenised pretraining corpus."""
    t = suite.base.tiny
    parameters = t.n_layer * (12 * t.n_embd**2 + 13 * t.n_embd) + (TINY_VOCABULARY + t.n_positions) * t.n_embd
    kinds = {kind for arm in suite.arms.values() for kind in trained_kinds(arm)} | {"eval"}
    per_parameter = max([16] + [SPECS[k].memory.bytes_per_parameter(False) for k in kinds if SPECS[k].memory])
    weights = parameters * per_parameter * basemodel.OVERHEAD
    activations = (
        t.batch_size * t.n_layer * t.n_positions * (3 * t.n_head * t.n_positions + 16 * t.n_embd) * 4
    )
    corpus = t.corpus_size * (24 * t.n_positions + 1024)
    return parameters, weights + activations + corpus


def check_sizes(suite: Suite, stages: dict, path: Path, ram: int) -> None:
    """What one resolved grid point asks of the machine, before anything is built: the data each arm's
    budget buys, the evaluation's samples and tokens and each stage's tokens, against the memory free
    now (limits.ITEM_BYTES per item) or an absolute cap (limits.py)."""
    count = limits.count
    in_memory = f"fit in memory here ({limits.gigabytes(ram)} free)"

    def check(key: str, n: float, limit: int, said: str, why: str = in_memory) -> None:
        if n > limit:
            raise SuiteError(f"{path}: {key}: {said}; at most {count(limit)} {why}")

    task, ev = suite.task, suite.eval
    check(
        "task.train_prompts",
        task.train_prompts,
        limits.fits("prompt", ram),
        f"{count(task.train_prompts)} training prompts",
    )
    if not suite.base.external:
        parameters, need = _tiny_bytes(suite)
        if need > ram:
            t = suite.base.tiny
            raise SuiteError(
                f"{path}: base.tiny: about {count(parameters)} parameters (n_layer {t.n_layer}, n_embd "
                f"{t.n_embd}), batches of {t.batch_size} x {t.n_positions} positions and {t.corpus_size} "
                f"corpus texts need about {limits.gigabytes(need)}; {limits.gigabytes(ram)} is free here"
            )
    units = suite.budget.units
    for name, arm in suite.arms.items():
        try:
            bought = arm_budget(suite, arm)
        except OverflowError:  # units / cost beyond a float
            bought = {name: math.inf if kind in arm.data_kinds else 0 for name, kind in DATA_KINDS.items()}
        for kind in arm.data_kinds:  # what each kind of feedback bought holds in memory
            n = bought[kind.name]
            said = f"{units:g} units buy {count(n)} {kind.singular}s for arm {name!r}"
            check("budget.units", n, limits.fits(kind.item, ram), said)
            if (
                n and kind.sampled
            ):  # sampled from the policy, eval.max_new_tokens each (a dataset's own pairs: none)
                tokens = n * kind.sampled * ev.max_new_tokens
                said = f"{count(n)} {kind.singular}s for arm {name!r}"
                said += f" x {kind.sampled} completions" if kind.sampled > 1 else ""
                said += f" x {ev.max_new_tokens} tokens = {count(tokens)} tokens"
                check("eval.max_new_tokens", tokens, limits.fits("token", ram), said)
        for kind in arm.recipe:  # a stage that labels its own samples in rounds: one label a round at least
            rounds = getattr(getattr(stages[name], kind), "rounds", None)
            if RECIPE_STAGES[kind].on_policy and rounds is not None:
                bought_now = bought[RECIPE_STAGES[kind].data.name]
                if bought_now < rounds:
                    raise SuiteError(
                        f"{path}: {_setting_key(name, arm, kind, 'rounds')}: {rounds} rounds, but "
                        f"{units:g} units buy {count(bought_now)} labels for arm {name!r}; at most one round per label"
                    )

        # the evaluation (compare/stages/evaluate.py): k samples per prompt (x n with best-of-n) per split
        k, prompts = ev.samples_per_prompt, task.eval_prompts
        factors = [  # pass@k draws its own K per prompt when the evaluation's k are fewer
            (k, "eval.samples_per_prompt", "samples per prompt")
            if k >= ev.pass_at_k
            else (ev.pass_at_k, "eval.pass_at_k", "samples per prompt for pass@k"),
            (prompts, "task.eval_prompts", "prompts"),
        ]
        for kind in arm.recipe:  # selection: n candidates sampled per answer
            spec = RECIPE_STAGES[kind]
            if spec.produces is Produces.SAMPLING and spec.strength:
                n = getattr(getattr(stages[name], kind), spec.strength)
                label = f"{kind.replace('_', '-')} candidates"
                factors.append((n, _setting_key(name, arm, kind, spec.strength), label))
        splits = len(TASKS[suite.task.name].splits_with(suite.task.model_dump()))  # every split evaluated
        samples = math.prod(f[0] for f in factors) * splits
        said = " x ".join(f"{v} {label}" for v, _, label in factors)
        key = max(factors, key=lambda f: f[0])[1]
        said = f"{said} x {splits} splits = {count(samples)} evaluation samples for arm {name!r}"
        check(key, samples, limits.fits("eval sample", ram), said)
        tokens = samples * ev.max_new_tokens
        said = f"{count(samples)} evaluation samples for arm {name!r} x {ev.max_new_tokens} tokens"
        check("eval.max_new_tokens", tokens, limits.fits("token", ram), f"{said} = {count(tokens)} tokens")
        # self-BLEU scores each sample against the others of its prompt, and across prompts: O(k^2)
        pairs = prompts * k * k + prompts * prompts
        said = (
            f"self-BLEU of {prompts} prompts x {k} samples compares {count(pairs)} pairs of texts per split"
        )
        key = "eval.samples_per_prompt" if k * k >= prompts else "task.eval_prompts"
        check(
            key, pairs, limits.MAX_SELF_BLEU_PAIRS, said, "(it grows with the square of samples per prompt)"
        )

        for kind in trained_kinds(arm):  # online stages: what they generate, from their spec
            spec = RECIPE_STAGES[kind]
            if spec.workload is None:
                continue
            fields = spec.settings.model_fields  # the setting that sizes it: episodes (RL), prompts (rs_ft)
            key = _setting_key(
                name, arm, kind, next((f for f in ("episodes", "prompts") if f in fields), "episodes")
            )
            prompts, tokens, said = spec.workload(getattr(stages[name], kind))
            if prompts:
                check(
                    key,
                    prompts,
                    limits.fits("prompt", ram),
                    f"{prompts} episodes of stage {kind} of arm {name!r}",
                )
            said = f"{said} = {count(tokens)} tokens to generate in stage {kind} of arm {name!r}"
            check(key, tokens, limits.MAX_STAGE_TOKENS, said, "per stage")


# -- the base model against the memory its stages need ---------------------------------------------------
def longest_prompt(suite: Suite) -> int:
    """Tokens in the longest prompt of a built-in task (every split), under the tiny base's word tokenizer."""
    return _longest_prompt(json.dumps(suite.task.model_dump(), sort_keys=True))


@functools.lru_cache(maxsize=64)  # one task per distinct task setting, however many grid points share it
def _longest_prompt(settings: str) -> int:
    from compare.stages.common import make_task

    task = make_task(json.loads(settings))
    words = set(task.vocabulary())
    return max(
        sum(1 if w in words else len(w) for w in prompt.split())  # an unknown word: one token per character
        for split in ("train", *task.eval_splits)
        for prompt in task.prompts(split)
    )


def check_lengths(suite: Suite, stages, path: Path) -> None:
    """The tiny base model has `base.tiny.n_positions` positions: every prompt plus the longest completion
    any stage samples (and its EOS) must fit, or sampling fails half-way with an index error."""
    if suite.base.external or suite.task.data is not None:
        return  # a real model's context is its own; a dataset task's prompts are read when it runs
    positions = suite.base.tiny.n_positions
    wanted = [("eval.max_new_tokens", suite.eval.max_new_tokens)]
    for name, arm in suite.arms.items():
        for kind in trained_kinds(arm):
            n = getattr(getattr(stages[name], kind), "max_new_tokens", None)
            if n is not None:
                wanted.append((_setting_key(name, arm, kind, "max_new_tokens"), n))
    key, n = max(wanted, key=lambda kv: kv[1])
    prompt = longest_prompt(suite)
    if prompt + n + 1 > positions:
        raise SuiteError(
            f"{path}: {key}: {n} new tokens after prompts of up to {prompt} tokens need {prompt + n + 1} "
            f"positions; the tiny base model has {positions} (raise base.tiny.n_positions or sample fewer)"
        )


# -- the memory estimate (compare/memory.py) against what the machine has -----------------------------------
def too_large(source: basemodel.Source, stages: set[StageLoad | tuple[str, bool]]) -> str | None:
    """Why the model will not fit (one sentence), or None when it fits or its size is unknown."""
    found = basemodel.model_shape(source)
    if found is None or not stages:
        return None
    stages = {StageLoad(*s) for s in stages}
    shape = Shape(*found)
    parameters = shape.parameters
    need, have = memory_needed(shape, stages), basemodel.available_memory()
    if need <= have:
        return None
    full = sorted({s.kind for s in stages if not s.lora and SPECS[s.kind].memory.trained})
    hints = [f"train with LoRA (stages.<stage>.lora_r) in {', '.join(full)}"] if full else []
    hungry = [s for s in stages if stage_needed(shape, s) > have]
    if any(s.sequences and not s.checkpointing for s in hungry):
        hints.append("set gradient_checkpointing: true")
    if any(not s.bf16_weights for s in hungry):
        hints.append("bf16_weights: true")
    hint = f"; {', '.join(hints)}" if hints else ""
    return (
        f"{parameters / 1e6:,.1f}M parameters need about {need / basemodel.GB:.3g} GB to train here, "
        f"but {have / basemodel.GB:.3g} GB is available{hint}, or pick a smaller model"
    )


def check_memory(suite: Suite, path: Path | str | None = None) -> None:
    """Say before loading anything that the base model will not fit (its parameter count, not its weights)."""
    path = path or suite.source
    if not suite.base.external:
        return
    base = suite.base
    problem = too_large(basemodel.resolve(base.model, base.gguf_file, base.package), stage_loads(suite))
    if problem:
        raise SuiteError(f"{path}: base: {base.model or base.package}: {problem}")


def stage_loads(suite: Suite) -> set[StageLoad]:
    """Every stage of the suite's arms as the memory estimate reads it (compare/memory.py), evaluation too."""
    half = basemodel.computes_in_bf16()
    lengths = {}
    if suite.task.data is None:  # a built-in task: its prompts are known, and short
        lengths = {
            "prompt_tokens": TOKENS_PER_WORD * longest_prompt(suite),
            "completion_tokens": suite.eval.max_new_tokens,
        }
    stages = {StageLoad("eval")}
    for arm in suite.arms.values():
        settings = arm_settings(suite, arm)
        for kind in trained_kinds(arm):
            spec = RECIPE_STAGES[kind]
            if spec.memory is not None:
                stages.add(stage_load(kind, getattr(settings, kind), half, **lengths))
    return stages


# -- the stage cache and the report folder -------------------------------------------------------------------
def check_cache_dir(root: Path) -> None:
    """The cache folder must be a folder we can write, and either new, empty, or a stage cache already."""
    from compare.cache import LEFTOVER, LOCKS, LOGS, QUARANTINE, STAGE_NAME

    if root.exists() and not root.is_dir():
        raise SuiteError(f"--cache-dir {root}: exists and is not a folder")
    for own in (LOCKS, LOGS, QUARANTINE):  # the harness writes into them: never through a link
        if (root / own).is_symlink() or ((root / own).exists() and not (root / own).is_dir()):
            raise SuiteError(f"--cache-dir {root}: {own} is a link or not a folder; the harness writes there")
    if root.is_dir():
        foreign = [
            p.name
            for p in root.iterdir()
            if p.name not in (LOCKS, LOGS, QUARANTINE)
            and not STAGE_NAME.fullmatch(p.name)
            and not LEFTOVER.fullmatch(p.name)
        ]
        if foreign:
            shown = ", ".join(sorted(foreign)[:3]) + (
                f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            )
            raise SuiteError(
                f"--cache-dir {root}: not a stage cache (it holds {shown}); give an empty folder or a cache"
            )


def make_cache_dir(root: Path) -> None:
    """Create the cache folder (the last check: it is the first thing preflight writes)."""
    from compare.cache import LOCKS

    try:
        (root / LOCKS).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SuiteError(f"--cache-dir {root}: cannot write there ({e.strerror or e})") from None


def check_out_folder(out: Path, cache_root: Path) -> None:
    """Refuse, before anything runs, a report folder that would replace something the harness did not write."""
    where = out.resolve()
    cache = Path(cache_root).resolve()
    here = Path.cwd().resolve()
    if where == here or where in here.parents:
        raise SuiteError(
            f"--out {out}: is the current folder or one of its parents; give the report its own folder"
        )
    if where == cache or where in cache.parents:
        raise SuiteError(f"--out {out}: holds the stage cache ({cache_root}); give the report its own folder")
    if cache in where.parents:
        raise SuiteError(f"--out {out}: is inside the stage cache ({cache_root}); choose a folder outside it")
    if out.is_symlink():
        raise SuiteError(f"--out {out}: is a symbolic link; give the folder itself")
    if not out.exists():
        return
    if not out.is_dir():
        raise SuiteError(f"--out {out}: exists and is not a folder")
    marker = read_marker(out)
    if marker is None:
        if any(not _our_leftover(p) for p in out.iterdir()):
            raise SuiteError(
                f"--out {out}: this folder is not empty and was not written by sft-vs-rlhf (no "
                f"{REPORT_MARKER}); nothing in it was touched: choose a new or empty folder"
            )
        return
    theirs = sorted(
        p.name
        for p in out.iterdir()
        if p.name not in {*marker["files"], REPORT_MARKER} and not _our_leftover(p)
    )
    if theirs:
        shown = ", ".join(theirs[:3]) + (f" and {len(theirs) - 3} more" if len(theirs) > 3 else "")
        raise SuiteError(
            f"--out {out}: a report folder is replaced whole, and this one holds what sft-vs-rlhf did not "
            f"write ({shown}); nothing was touched: move them out or choose another folder"
        )
