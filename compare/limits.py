"""Bounds on what a suite file may ask for, checked while it loads, before anything runs.

A suite that would exhaust the machine (a YAML alias bomb, a budget that buys 10^11 demonstrations, a
grid of 10^9 runs) or fail late (a seed numpy refuses, a name that is not a folder) is refused with one
line naming the file and the key. The YAML side is here (`load_yaml`: a `yaml.SafeLoader` that checks
the composed node graph before any Python object is built); the plan side (what each grid point asks
for) is `compare.suite.loading (the file) and compare.preflight (the machine)`, with the limits and byte estimates below.

Memory limits are derived from the memory free now (`available_ram`) and a generous estimate of the
bytes one item costs, so they refuse only what cannot fit; absolute caps bound what memory does not
(runs, tokens a stage generates, self-BLEU work), far above what any shipped suite asks for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# -- the YAML file ----------------------------------------------------------------------------------------
MAX_SUITE_BYTES = 4 * 1024**2  # a suite is a few KB; even a long hand-written grid is far below this
MAX_YAML_VALUES = 100_000  # nodes once aliases are expanded (a shipped suite has a few hundred)
MAX_YAML_ALIASES = 1_000  # alias uses (`*name`) in one file
MAX_YAML_DEPTH = 64  # nesting of mappings and sequences (a suite nests about 5 deep)
MAX_INCLUDE_DEPTH = 16  # files in one include chain (the shipped suites use 2)

# -- seeds and names ---------------------------------------------------------------------------------------
# A run's seed goes to transformers' set_seed (numpy's np.random.seed: 0 to 2**32 - 1), torch.manual_seed
# and random; PPO adds rank * SEED_STRIDE for torch and random only, which take far larger values.
MAX_SEED = 2**32 - 1
MAX_NAME_BYTES = 255  # a folder name, on every common file system

# -- the plan ------------------------------------------------------------------------------------------
MAX_RUNS = 10_000  # runs of one suite or collection (each trains and evaluates at least one policy)
MAX_GRID_POINTS = 10_000  # points of the grid's cross product (every one is validated at load)
MAX_STAGE_TOKENS = 10**10  # tokens one stage generates in all: beyond what any machine here can finish
MAX_SELF_BLEU_PAIRS = 10**8  # sentence-vs-reference pairs of one split's self-BLEU (O(k^2) per prompt)
MAX_PASS_AT_K = 1024  # samples per prompt for pass@k (eval.pass_at_k); the curve is read up to 64 and beyond

# Bytes one item holds in memory at the stage's peak, generously (Python objects, tokenised copies,
# Arrow tables, JSON rows): the limit is the memory free now divided by these.
ITEM_BYTES = {
    "demonstration": 16 * 1024,  # prompt + completion text, tokenised for SFT
    "comparison": 32 * 1024,  # prompt + two completions, tokenised for DPO / the reward model
    "prompt": 4 * 1024,  # a prompt of a pool (training prompts, RLOO's episode dataset)
    "eval sample": 8 * 1024,  # one evaluation row: texts, ids, log-probs, gold and proxy rewards
    "token": 64,  # one generated token: ids and log-probs as tensors and as Python lists
}


class YamlLimit(Exception):
    """A YAML input past one of the limits above, or malformed in a way PyYAML allows; one line."""


def available_ram() -> int:
    """Bytes of memory free for a run's data now: MemAvailable, at most the cgroup's limit if it has one.

    The CPU side of `compare.lm.external.available_memory` (which reads the GPU when there is one and
    honours SFT_VS_RLHF_MEMORY_GB, both about model weights; data and samples live in host memory).
    """
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (OSError, ValueError, AttributeError):
            free = 8 * 1024**3  # cannot tell: assume a small machine
    try:  # a container's own limit (cgroup v2); its usage counts page cache, so only the limit is read
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            free = min(free, int(limit))
    except (OSError, ValueError):
        pass
    return free


def fits(item: str, ram: int) -> int:
    """How many of `item` (a key of ITEM_BYTES) fit in `ram` bytes."""
    return ram // ITEM_BYTES[item]


def count(x: float) -> str:
    """A count for a message: every digit while it is readable, else 3 significant ones."""
    if x < 10**15:
        return str(int(x))
    try:
        if float(x) != float("inf"):
            return f"{float(x):.3g}"
    except OverflowError:
        pass
    return "more than 1e+308"


def gigabytes(n: float) -> str:
    return f"{n / 1024**3:.3g} GB"


# -- names -------------------------------------------------------------------------------------------------
def folder_name_problem(name: str) -> str | None:
    """Why `name` is not a plain folder name (reports/<name>/), or None when it is one."""
    if not name:
        return "must not be empty"
    if "/" in name or "\\" in name:
        return "must not contain '/' or '\\' (it is one folder name, not a path)"
    if name in (".", ".."):
        return "must not be '.' or '..'"
    if name.startswith("."):
        return "must not start with '.' (a hidden folder)"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "must not contain control characters"
    if name != name.strip():
        return "must not start or end with spaces"
    if len(name.encode()) > MAX_NAME_BYTES:
        return f"is {len(name.encode())} bytes long; a folder name is at most {MAX_NAME_BYTES}"
    return None


# -- YAML --------------------------------------------------------------------------------------------------
MERGE_TAGS = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")


class SuiteLoader(yaml.SafeLoader):
    """SafeLoader that refuses, on the composed node graph and before any object is built: more than
    MAX_YAML_ALIASES aliases, more than MAX_YAML_VALUES values once aliases are expanded (a "billion
    laughs" bomb), recursive aliases, nesting deeper than MAX_YAML_DEPTH, and duplicate mapping keys."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise YamlLimit(f"YAML uses more than {MAX_YAML_ALIASES} aliases")
        return super().compose_node(parent, index)

    def compose_document(self) -> Node:
        node = super().compose_document()
        self.check_graph(node)
        return node

    def check_graph(self, root: Node) -> None:
        """Expanded size (memoised per node, so an alias bomb costs its file size), depth, duplicates."""
        sizes: dict[int, int] = {}  # id(node) -> values under it, aliases expanded
        open_nodes: set[int] = set()  # the ancestors of the node being visited
        stack: list[tuple[Node, bool, int]] = [(root, False, 1)]
        while stack:
            node, finished, depth = stack.pop()
            children = _children(node)
            if finished:
                open_nodes.discard(id(node))
                size = 1 + sum(sizes[id(c)] for c in children)
                if size > MAX_YAML_VALUES:
                    raise YamlLimit(f"YAML aliases expand to more than {MAX_YAML_VALUES} values")
                sizes[id(node)] = size
                continue
            if id(node) in sizes:
                continue
            if id(node) in open_nodes:
                raise YamlLimit(f"line {node.start_mark.line + 1}: a YAML alias refers to itself")
            if depth > MAX_YAML_DEPTH:
                raise YamlLimit(f"line {node.start_mark.line + 1}: YAML nests deeper than {MAX_YAML_DEPTH}")
            if isinstance(node, MappingNode):
                self.check_keys(node)
            open_nodes.add(id(node))
            stack.append((node, True, depth))
            stack.extend((c, False, depth + 1) for c in children if id(c) not in sizes)

    def check_keys(self, node: MappingNode) -> None:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag in MERGE_TAGS:
                continue  # `<<: *base` merges are meant to be overridden; complex keys fail later
            key = self.construct_object(key_node)
            try:
                duplicate = key in seen
            except TypeError:
                continue
            if duplicate:
                raise YamlLimit(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            seen.add(key)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_yaml(text: str) -> Any:
    """yaml.safe_load with the checks of `SuiteLoader`; raises YamlLimit or yaml.YAMLError."""
    loader = SuiteLoader(text)
    try:
        return loader.get_single_data()
    except RecursionError:  # PyYAML composes and constructs recursively
        raise YamlLimit(f"YAML nests deeper than {MAX_YAML_DEPTH}") from None
    finally:
        loader.dispose()
