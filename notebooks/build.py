"""Build the lab's two notebooks from one source, so that they cannot drift apart.

    python notebooks/build.py           # writes sft_vs_rlhf.ipynb (students) and sft_vs_rlhf_teacher.ipynb
    python notebooks/build.py --check   # exits 1, naming the file, if a committed notebook is not a fresh build

The source, `lab_source.py`, is in the "percent" format that Jupytext, VS Code and Spyder read: a line
`# %%` starts a code cell, `# %% [markdown]` a markdown cell (each line's leading `# ` dropped). A marker
after the cell type puts a cell in one version only: `# %% teacher`, `# %% [markdown] teacher`,
`# %% [markdown] student`. In a code cell the lines between `# BEGIN SOLUTION` and `# END SOLUTION` are
the exercise's answer: the teacher's version keeps them (without the two marker lines), the students'
version has `raise NotImplementedError` in their place, at the same indentation.

Both notebooks are written without outputs, with cell ids numbered in order, so that a build is the same
on every machine (tests/test_teaching.py checks that the committed files are one).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "lab_source.py"
VERSIONS = {"student": HERE / "sft_vs_rlhf.ipynb", "teacher": HERE / "sft_vs_rlhf_teacher.ipynb"}
HEADER = re.compile(r"^# %%(?: \[(?P<kind>markdown)\])?(?: (?P<only>student|teacher))?$")
BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
STUB = "raise NotImplementedError  # your code here"


def cells(source: str) -> list[tuple[str, str | None, list[str]]]:
    """The source's cells in order: (kind 'code' or 'markdown', only-version or None, lines)."""
    found: list[tuple[str, str | None, list[str]]] = []
    for number, line in enumerate(source.splitlines(), 1):
        if line.startswith("# %%"):
            match = HEADER.match(line)
            if not match:
                raise ValueError(f"{SOURCE.name}:{number}: unknown cell header {line!r}")
            found.append((match["kind"] or "code", match["only"], []))
        elif found:
            found[-1][2].append(line)
        elif line.strip():
            raise ValueError(f"{SOURCE.name}:{number}: text before the first cell header")
    return found


def markdown(lines: list[str], number: int) -> str:
    out = []
    for line in lines:
        if line and line != "#" and not line.startswith("# "):
            raise ValueError(f"{SOURCE.name}: markdown cell {number}: line {line!r} is not a comment")
        out.append(line[2:])
    return "\n".join(out).strip("\n")


def code(lines: list[str], version: str, number: int) -> str:
    out, inside = [], False
    for line in lines:
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"{SOURCE.name}: code cell {number}: {BEGIN} inside a solution")
            inside = True
            if version == "student":
                out.append(line[: len(line) - len(line.lstrip())] + STUB)
        elif marker == END:
            if not inside:
                raise ValueError(f"{SOURCE.name}: code cell {number}: {END} without {BEGIN}")
            inside = False
        elif not (inside and version == "student"):
            out.append(line)
    if inside:
        raise ValueError(f"{SOURCE.name}: code cell {number}: {BEGIN} without {END}")
    return "\n".join(out).strip("\n")


def build(version: str, source: str | None = None) -> nbformat.NotebookNode:
    """The notebook of one version ('student' or 'teacher'), without outputs."""
    source = SOURCE.read_text() if source is None else source
    nb = nbformat.v4.new_notebook()
    for number, (kind, only, lines) in enumerate(cells(source), 1):
        if only not in (None, version):
            continue
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(markdown(lines, number))
        else:
            cell = nbformat.v4.new_code_cell(code(lines, version, number))
        cell.id = f"{version}-{len(nb.cells):03d}"
        nb.cells.append(cell)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nbformat.validate(nb)
    return nb


def text(version: str) -> str:
    return nbformat.writes(build(version)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed notebooks")
    args = parser.parse_args(argv)
    stale = []
    for version, path in VERSIONS.items():
        fresh = text(version)
        if args.check:
            if not path.exists() or path.read_text() != fresh:
                stale.append(path)
        else:
            path.write_text(fresh)
            print(f"wrote {path}")
    for path in stale:
        print(f"{path}: not a fresh build of {SOURCE.name}; run python notebooks/build.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
