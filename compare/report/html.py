"""report.html: report.md as one self-contained page, with sortable tables, figures that show their
numbers on hover, and a browser of every saved sample.

The page is report.md itself (`render_markdown`), turned into HTML by a small converter for the few
kinds of markdown the report writes (headings, paragraphs, lists, tables, bold, code, images), so the two
never drift apart. Where report.md shows a PNG, the page draws the main figures as inline SVG from the
numbers (`charts.py`) and embeds the others as data: URLs. samples.csv travels inside the page as JSON
(strings stored once, numbers rounded) for the sample browser, which marks what each answer changed
against the base model's answer to the same prompt; the over-optimisation view (`overopt.py`) carries
its own, smaller JSON. Script and style come from
`compare/report/assets/` and are inlined: the page fetches nothing when it is opened, and a Content
Security Policy forbids it to. Every piece of text is escaped; model output only ever reaches the page
as JSON in a script element (with `<`, `>` and `&` escaped) and is shown as text by the script.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from html import escape
from pathlib import Path

import pandas as pd
import yaml

from compare.report.charts import SVG_FIGURES, gold_by_split_svg
from compare.report.claims import CONTRADICTED, INCONCLUSIVE, NOT_MEASURED, SUPPORTED
from compare.report.key_results import gold_scale
from compare.report.overopt import overopt_section
from compare.report.render import render_markdown
from compare.report.roles import Roles
from compare.report.tables import grid_cell, grid_heading
from compare.suite import Suite

ASSETS = Path(__file__).with_name("assets")
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED)
# samples.csv columns of the gold reward's parts, in [0, 1], when the task writes them (older folders don't)
GOLD_PARTS = (("repetition", "repetition"), ("off_topic", "off topic"), ("malformed", "malformed"))
IMAGE = re.compile(r"!\[(.*)\]\((.*)\)")
ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")  # markdown's backslash escape of an ASCII punctuation character
# a table cell that is a number ("0.61 ± 0.03", "256 (on-policy)"): kept on one line
NUMBER = re.compile(r"[-+−]?(\d+\.?\d*|\.\d+)( ± |$| \()")
MAX_SAMPLES = 60_000  # samples the page carries (the example's 23,040 make about 2.5 MB of it)
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def render_html(
    suite: Suite,
    results,
    samples,
    logs,
    prov: dict,
    figures,
    claims,
    failed=None,
    roles: Roles | None = None,
    snapshots=None,
    beside=None,
) -> str:
    """The whole page. `figures` is `report_figures`' answer: {axis: [(title, path of the PNG or None)]};
    `snapshots`: snapshots.csv, for the over-optimisation view; `beside`: beside.csv (`render_markdown`)."""
    roles = roles or Roles.of(suite, set(results["arm"]))
    text = render_markdown(
        suite, results, samples, prov, figures, claims, failed, roles, snapshots, logs, beside
    )
    scale = gold_scale(results, roles)
    pngs = {path.name: path for figs in figures.values() for _, path in figs if path is not None}

    def figure(title: str, target: str) -> str:
        name = target.rsplit("/", 1)[-1]
        draw = SVG_FIGURES.get(name)
        chart = draw(results, logs, roles, scale) if draw else None
        if chart is None and name in pngs and pngs[name].is_file():
            data = base64.b64encode(pngs[name].read_bytes()).decode()
            chart = f'<img src="data:image/png;base64,{data}" alt="{escape(title)}">'
        hint = ' <span class="hint">(hover a mark for its numbers)</span>' if draw and chart else ""
        body = chart or f'<p class="missing">{escape(target)} was not found</p>'
        stem = escape(name.rsplit(".", 1)[0])
        return f'<figure id="fig-{stem}">{body}<figcaption>{escape(title)}{hint}</figcaption></figure>'

    title, intro, sections = markdown_sections(text, figure)
    key = [html for _, s, html in sections if s == "key-results"]  # on the first screen, in the header
    sections = [s for s in sections if s[1] != "key-results"]
    provenance = [(h, s, html + _records(prov, suite)) for h, s, html in sections if s == "provenance"]
    sections = [s for s in sections if s[1] != "provenance"]
    overopt = overopt_section(results, samples, snapshots, roles)
    if overopt is not None:
        sections.append(("Watching over-optimisation", "watching-over-optimisation", overopt[0]))
    sections += [("Sample browser", "sample-browser", _sample_browser()), *provenance]
    toc = "".join(f'<li><a href="#{slug}">{escape(heading)}</a></li>' for heading, slug, _ in sections)
    body = "".join(f'<section id="{slug}">{html}</section>' for _, slug, html in sections)
    payload = script_json(samples_payload(samples, roles.names, roles=roles))
    header = (
        f'<div class="head-text"><h1>{escape(title)}</h1>{intro}'
        f'<div class="key-results" id="key-results">{"".join(key)}</div>{_glance(claims)}'
        f'<nav aria-label="sections"><ol>{toc}</ol></nav></div>{_glance_chart(results, roles, scale)}'
    )
    extra = (
        '<div id="tooltip" role="tooltip" hidden></div>\n'
        f'<script type="application/json" id="report-samples">{payload}</script>\n'
    )
    if overopt is not None:
        extra += f'<script type="application/json" id="report-overopt">{script_json(overopt[1])}</script>\n'
    return page(title, header, body, extra)


def page(title: str, header: str, body: str, extra: str = "") -> str:
    """One self-contained page: the report's style and script inlined, a policy that forbids fetching."""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_asset('report.css')}</style></head>\n<body>"
        f"<header>{header}</header>\n<main>{body}</main>\n{extra}"
        f"<script>{_asset('report.js')}</script>\n</body></html>\n"
    )


def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def _glance(claims) -> str:
    """The claims' verdicts after the correction counted, each count linking to the claims table."""
    counts = Counter(c.corrected or c.verdict for c in claims)
    chips = "".join(
        f'<a class="chip v-{_verdict_class(v)}" href="#claims-checked">{counts[v]} {escape(v)}</a>'
        for v in VERDICTS
        if counts[v]
    )
    text = f"{len(claims)} claims checked (after Holm's correction): "
    return f'<p class="glance">{text}{chips}</p>' if claims else ""


def _glance_chart(results, roles: Roles, scale: dict | None = None) -> str:
    """The headline numbers beside the title: gold reward of every policy, in and out of distribution,
    against the gold scale (base model, demonstrator, best possible)."""
    chart = gold_by_split_svg(results, roles, splits=("id", "ood"), width=520, scale=scale)
    if chart is None:
        return ""
    return (
        f'<figure class="glance-chart">{chart}<figcaption>Gold reward per policy, ID and OOD prompts '
        '(mean ± 95% CI over runs; every split in <a href="#generalisation">'
        "Generalisation</a>)</figcaption></figure>"
    )


def _verdict_class(verdict: str) -> str:
    return verdict.replace(" ", "-")


def _sample_browser() -> str:
    return (
        "<h2>Sample browser</h2>"
        "<p>Every sample of <code>samples.csv</code>: pick a split and a prompt to see each arm's completions "
        "side by side, with their gold reward, the reward model's score (arms with a reward model) and the "
        "log-ratio log π(y|x) − log π_base(y|x). Filter by arm, gold reward and kind of failure. Words that "
        "differ from the base model's answer to the same prompt (same seed and sample) are marked.</p>"
        "<noscript><p>The sample browser needs JavaScript; every sample is in samples.csv.</p></noscript>"
        '<form id="sb-controls" class="sb-controls" hidden>'
        '<label>Split <select id="sb-split"></select></label>'
        '<label>Prompt <select id="sb-prompt"></select></label>'
        '<label>Seed <select id="sb-seed"></select></label>'
        '<label>Gold from <input id="sb-gold-min" type="number" step="0.05" size="6"></label>'
        '<label>to <input id="sb-gold-max" type="number" step="0.05" size="6"></label>'
        '<label>Failure <select id="sb-failure"><option value="">any</option></select></label>'
        '<label>Order <select id="sb-order"><option value="">as sampled</option>'
        '<option value="hack">reward model − gold, largest first (reward hacking first)</option>'
        '<option value="gold">gold, lowest first</option></select></label>'
        '<label><input id="sb-diff" type="checkbox" checked> mark changes against the base model</label>'
        '<fieldset id="sb-arms"><legend>Arms</legend></fieldset>'
        "</form>"
        '<p id="sb-status" aria-live="polite"></p><p id="sb-prompt-text"></p>'
        '<div id="sb-cards" class="sb-cards"></div>'
    )


def _records(prov: dict, suite: Suite) -> str:
    """provenance.json and the resolved suite, folded away below the provenance paragraph."""
    record = json.dumps(prov, indent=1, ensure_ascii=False)
    saved = yaml.safe_dump(suite.model_dump(), sort_keys=False, allow_unicode=True)
    return (
        f"<details><summary>provenance.json</summary><pre>{escape(record)}</pre></details>"
        f"<details><summary>suite.yaml (the resolved suite)</summary><pre>{escape(saved)}</pre></details>"
    )


# -- markdown ---------------------------------------------------------------------------------------------
def inline(text: str) -> str:
    """One line of report markdown as HTML: everything escaped, then `code` and **bold**."""
    parts, pos = [], 0
    for m in re.finditer(r"`([^`]+)`", text):
        parts += [_bold(text[pos : m.start()]), f"<code>{escape(m[1])}</code>"]
        pos = m.end()
    parts.append(_bold(text[pos:]))
    return "".join(parts)


def _bold(text: str) -> str:
    """Escaped text with **bold**; a markdown backslash escape (`\\#`, `\\<`: `render.quoted_text`) is the
    character itself, never markup (held in a private-use character meanwhile)."""
    held = ESCAPED.sub(lambda m: chr(0xE000 + ord(m[1])), text)
    html = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escape(held))
    return re.sub("[\ue021-\ue07e]", lambda m: escape(chr(ord(m[0]) - 0xE000)), html)


def slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-") or "section"


def table_cells(line: str) -> list[str]:
    """The cells of one markdown table row; `\\|` (see `tables.table_cell`) is a pipe inside a cell."""
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def table_html(lines: list[str], table_id: str) -> str:
    """A markdown table as a sortable HTML table; a cell that is a claim's verdict is marked as one."""
    rows = [table_cells(line) for line in lines]
    header = rows[0]
    body = [r for r in rows[1:] if not all(re.fullmatch(r":?-+:?", c) for c in r)]
    head = "".join(f'<th scope="col">{inline(c)}</th>' for c in header)
    out = []
    folded = {i for i, h in enumerate(header) if h == "numbers"}  # long evidence: folded away
    for row in body:
        cells = []
        for i, cell in enumerate(row):
            bare = cell.strip("*").strip()
            verdict = bare[2:] if bare[:2] in ("▲ ", "▼ ", "○ ", "– ") else bare
            mark = (
                f' class="verdict v-{_verdict_class(verdict)}"'
                if verdict in VERDICTS and cell != bare
                else ""
            )
            mark = mark or (' class="num"' if NUMBER.match(bare) and len(bare) < 40 else "")
            content = inline(cell)
            if i in folded and len(cell) > 40:
                content = f"<details><summary>numbers</summary>{content}</details>"
            cells.append(f"<td{mark}>{content}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="table-wrap"><table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(out)}</tbody></table></div>"
    )


def markdown_sections(text: str, figure: Callable[[str, str], str]) -> tuple[str, str, list]:
    """(the `#` title, the HTML before the first `##`, [(short heading, slug, HTML of its section)]).

    `figure(title, target)` draws an image line `![title](target)`. Tables get ids `t-<section>`,
    `t-<section>-2`, ... so each can be found by the section it sits in.
    """
    title, intro, sections = "", [], []
    current, section = intro, "report"
    ids: Counter = Counter()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        heading = re.match(r"(#{1,6}) (.*)", line)
        if heading:
            level, words = len(heading[1]), heading[2].strip()
            if level == 1:
                title = words
            elif level == 2:
                short = words.split(":")[0].strip()  # "Objective: what each method ..." -> "Objective"
                section = slug(short)
                current = []
                sections.append((short, section, current))
                current.append(f"<h2>{inline(words)}</h2>")
            else:
                current.append(f'<h{level} id="{section}-{slug(words)}">{inline(words)}</h{level}>')
            i += 1
            continue
        start = i
        if line.startswith("|"):
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            ids[section] += 1
            table_id = f"t-{section}" + (f"-{ids[section]}" if ids[section] > 1 else "")
            current.append(table_html(lines[start:i], table_id))
        elif line.startswith("- "):
            while i < len(lines) and lines[i].startswith("- "):
                i += 1
            current.append("<ul>" + "".join(f"<li>{inline(x[2:])}</li>" for x in lines[start:i]) + "</ul>")
        elif IMAGE.fullmatch(line.strip()):
            image = IMAGE.fullmatch(line.strip())
            current.append(figure(image[1], image[2]))
            i += 1
        else:
            while i < len(lines) and lines[i].strip() and not re.match(r"#|\||- |!\[", lines[i]):
                i += 1
            current.append("<p>" + " ".join(inline(x.strip()) for x in lines[start:i]) + "</p>")
    return title, "".join(intro), [(h, s, "".join(parts)) for h, s, parts in sections]


# -- samples ----------------------------------------------------------------------------------------------
def _numbers(column: pd.Series, digits: int) -> list:
    values = pd.to_numeric(column, errors="coerce").round(digits)
    return [float(v) if math.isfinite(v) else None for v in values]  # JSON has no nan or inf


def _whole(frame: pd.DataFrame, column: str) -> list[int]:
    values = pd.to_numeric(frame[column], errors="coerce") if column in frame else pd.Series([0] * len(frame))
    return [int(v) for v in values.fillna(0)]


def _flags(column: pd.Series) -> list:
    """0/1 of a True/False column (as pandas read it, or as text), None where it holds neither."""
    known = {"True": 1, "False": 0, "true": 1, "false": 0, "1": 1, "0": 0}
    return [int(v) if isinstance(v, bool) else known.get(str(v)) for v in column]


def samples_payload(
    samples: pd.DataFrame, arms: list[str], most: int = MAX_SAMPLES, roles: Roles | None = None
) -> dict:
    """samples.csv for the sample browser: columns of numbers (arms, splits, grid points and texts as
    indices into lists, every text stored once), and the failure kinds its columns allow. Beyond `most`
    samples, only the first prompts of each split are kept (`left_out` says how many samples are not)."""
    if samples.empty or not {"arm", "split", "completion"} <= set(samples.columns):
        return {"n": 0}
    frame = samples.reset_index(drop=True)
    left_out = 0
    if len(frame) > most and "prompt_index" in frame:
        per_prompt = frame.groupby("prompt_index").size().sort_index().cumsum()
        keep = per_prompt.index[per_prompt <= most]
        kept = frame[frame["prompt_index"].isin(keep if len(keep) else per_prompt.index[:1])]
        frame, left_out = kept.reset_index(drop=True), len(frame) - len(kept)
    order = list(arms) + sorted(set(frame["arm"].astype(str)) - set(arms))
    present = set(frame["split"].astype(str))
    roles = roles or Roles({a: [] for a in arms})  # the splits' names and order: the task's
    splits = roles.split_order(present)
    grid = [c for c in frame.columns if c.startswith("grid.")]
    labels = [
        ", ".join(f"{grid_heading(c)}={grid_cell(row[c])}" for c in grid if not pd.isna(row[c]))
        for row in frame[grid].to_dict("records")
    ]
    points = list(dict.fromkeys(sorted(labels, key=lambda x: (x != "", _natural(x)))))
    strings: dict[str, int] = {}

    def refs(column: str) -> list[int]:
        texts = frame[column].fillna("").astype(str) if column in frame else pd.Series([""] * len(frame))
        return [strings.setdefault(t, len(strings)) for t in texts]

    columns = {
        "arm": [order.index(a) for a in frame["arm"].astype(str)],
        "seed": _whole(frame, "seed"),
        "split": [splits.index(s) for s in frame["split"].astype(str)],
        "prompt_index": _whole(frame, "prompt_index"),
        "sample": _whole(frame, "sample_index"),
        "point": [points.index(x) for x in labels],
        "prompt": refs("prompt"),
        "text": refs("completion"),
        "gold": _numbers(frame["gold_reward"], 3) if "gold_reward" in frame else [None] * len(frame),
        "rm": _numbers(frame["proxy_reward"], 3) if "proxy_reward" in frame else [None] * len(frame),
        "lr": _numbers(frame["logp_policy"] - frame["logp_base"], 3)
        if {"logp_policy", "logp_base"} <= set(frame.columns)
        else [None] * len(frame),
    }
    kinds = []
    for column, key, label in (
        ("well_formed", "wf", "ill-formed"),
        ("ended_with_eos", "eos", "cut off (no EOS)"),
    ):
        if column in frame:
            columns[key] = _flags(frame[column])
            kinds.append({"key": key, "label": label, "test": "false"})
    for column, label in GOLD_PARTS:
        if column in frame:
            columns[column] = _numbers(frame[column], 3)
            kinds.append({"key": column, "label": f"{label} > 0", "test": "positive"})
    return {
        "n": len(frame),
        "left_out": left_out,
        "arms": order,
        "base": order.index(roles.base)
        if roles.base in order
        else None,  # whose answers others are diffed to
        "splits": splits,
        "split_names": [roles.split_label(s) for s in splits],
        "points": points,
        "strings": list(strings),
        "kinds": kinds,
        "columns": columns,
    }


def _natural(text: str) -> list:
    """Sort key that orders "n=2" before "n=10"."""
    return [
        float(t) if re.fullmatch(r"-?\d+(\.\d+)?", t) else t for t in re.split(r"(-?\d+(?:\.\d+)?)", text)
    ]


def script_json(data) -> str:
    """JSON that is safe inside a <script> element: no `<`, `>` or `&` (so no `</script>`), no line
    separators that older JavaScript reads as line ends."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, code in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, code)
    return text
