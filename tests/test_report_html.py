"""report.html: report.md as one self-contained page (tables, claims, figures with their numbers, samples)."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from compare.cli import main
from compare.preflight import REPORT_MARKER, check_out_folder
from compare.report import ReportError, rebuild_report, render_html
from compare.report import files as report_files
from compare.report.charts import SVG_FIGURES
from compare.report.html import markdown_sections, samples_payload, script_json, table_cells
from compare.report.overopt import overopt_section, sweep_tracks, track_chart, training_tracks
from compare.report.roles import Roles

ROOT = Path(__file__).resolve().parents[1]
EVIL = "</script><b>x</b>"


class Tables(HTMLParser):
    """Every table's rows (lists of cell texts) by id, every td's class, and the page's scripts."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.classes: dict[str, list[str]] = {}
        self.scripts: list[tuple[dict, str]] = []
        self._table = self._cell = self._script = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id", "")
            self.tables[self._table], self.classes[self._table] = [], []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
            if tag == "td":
                self.classes[self._table].append(attrs.get("class") or "")
        elif tag == "script":
            self._script = (attrs, [])

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "script" and self._script is not None:
            self.scripts.append((self._script[0], "".join(self._script[1])))
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            self._script[1].append(data)
        elif self._cell is not None:
            self._cell.append(data)


def parse(page: str) -> Tables:
    found = Tables()
    found.feed(page)
    return found


def md_rows(text: str, heading: str) -> list[str]:
    """The body rows of the first markdown table after `heading`."""
    section = text[text.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(section) if line.startswith("|"))
    rows = []
    for line in section[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """The example report rebuilt by `sft-vs-rlhf report` into a copy, its marker as an earlier version
    wrote it (no report.html listed)."""
    folder = tmp_path_factory.mktemp("report") / "example"
    shutil.copytree(ROOT / "reports" / "example", folder)
    (folder / "report.html").unlink(missing_ok=True)
    marker = json.loads((folder / REPORT_MARKER).read_text())
    marker["files"] = [f for f in marker["files"] if f != "report.html"]
    marker["note"] = "kept"
    (folder / REPORT_MARKER).write_text(json.dumps(marker))
    assert main(["report", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def altered(tmp_path_factory) -> Path:
    """The example with a completion that tries to close the script, and samples.csv without the columns
    older folders lack (well_formed, ended_with_eos, proxy_reward, the log-probabilities, the gold
    reward's parts)."""
    folder = tmp_path_factory.mktemp("altered") / "example"
    shutil.copytree(ROOT / "reports" / "example", folder)
    samples = pd.read_csv(folder / "samples.csv", keep_default_na=False, na_values=[""])
    samples.loc[0, "completion"] = EVIL  # seed 0, ID, prompt 0 of the first arm: shown in the examples too
    samples = samples.drop(
        columns=["well_formed", "ended_with_eos", "proxy_reward", "logp_policy", "logp_base"]
        + ["malformed", "repetition", "off_topic"]
    )
    samples.to_csv(folder / "samples.csv", index=False)
    prov = json.loads((folder / "provenance.json").read_text())
    prov["description_from"] = "common/parent.yaml"  # the suite kept an included file's description
    (folder / "provenance.json").write_text(json.dumps(prov))
    rebuild_report(folder)
    return folder


def test_an_inherited_description_is_flagged(altered, example):
    note = "this description comes from the included file `common/parent.yaml`"
    assert note in (altered / "report.md").read_text()
    assert "this description comes from the included file" in (altered / "report.html").read_text()
    assert "included file" not in (example / "report.md").read_text()


def test_the_page_holds_every_table_of_report_md(example):
    page, text = (example / "report.html").read_text(), (example / "report.md").read_text()
    tables = parse(page).tables
    for table, heading in (
        ("t-setup", "### What each arm got"),
        ("t-results", "## Results"),
        ("t-results-2", "### Reward models"),
        ("t-results-3", "### Differences from"),
        ("t-results-4", "### Gold per annotation unit"),
        ("t-generalisation", "## Generalisation"),
        ("t-claims-checked", "## Claims checked"),
    ):
        rows = md_rows(text, heading)
        assert len(tables[table]) == len(rows) + 1, table  # and the header
        first = [c.replace("**", "").replace("\\|", "|") for c in table_cells(rows[0])]
        assert tables[table][1] == first, table
    assert tables["t-results"][0][:5] == ["arm", "n", "seeds", "gold reward ID", "gold reward OOD"]
    assert [r[0] for r in tables["t-results"][1:]].count("best_of_n") == 3  # one row per grid point
    for section in (
        "Setup",
        "Objective",
        "Data needs",
        "Generalisation",
        "Example generations",
        "Provenance",
    ):
        assert f'<a href="#{section.lower().replace(" ", "-")}">{section}</a>' in page
    assert "Gold per annotation unit" in page and "per nat of KL: <strong>" not in page  # no ratio ranking
    assert "ID − OOD opener gold gap" in page  # the per-axis statements
    prov = json.loads((example / "provenance.json").read_text())
    assert prov["git_commit"] in page and "stage_seconds" in page


def test_claims_with_their_verdicts(example):
    found = parse((example / "report.html").read_text())
    header, claims = found.tables["t-claims-checked"][0], found.tables["t-claims-checked"][1:]
    assert header[3:5] == ["verdict", "after correction"]
    assert len(claims) == 23  # 21, DPO's log p(chosen) and pass@k (not measured: no eval.pass_at_k)
    verdicts = [row[3][2:] for row in claims]  # "▲ supported" -> "supported"
    corrected = [row[4][2:] for row in claims]
    assert set(verdicts) | set(corrected) <= {"supported", "contradicted", "inconclusive", "not measured"}
    cells = found.classes["t-claims-checked"]
    assert [c for c in cells if c.startswith("verdict")] == [
        f"verdict v-{v.replace(' ', '-')}" for pair in zip(verdicts, corrected) for v in pair
    ]
    md = [table_cells(r)[3].strip("*")[2:] for r in md_rows((example / "report.md").read_text(), "## Claims")]
    assert verdicts == md
    page = (example / "report.html").read_text()
    assert f"{corrected.count('inconclusive')} inconclusive</a>" in page  # the corrected counts at the top


def test_the_marker_lists_report_html_and_keeps_its_fields(example):
    marker = json.loads((example / REPORT_MARKER).read_text())
    assert "report.html" in marker["files"] and marker["note"] == "kept" and marker["complete"] is True
    check_out_folder(example, example.parent / "cache")  # a later run may replace the folder
    assert not [p.name for p in example.iterdir() if p.name.startswith(".") and p.name != REPORT_MARKER]


def test_nothing_is_fetched_from_anywhere(example):
    page = (example / "report.html").read_text()
    links = re.findall(r"""\b(?:src|href|action|poster|srcset)\s*=\s*["']?([^"'\s>]*)""", page, re.I)
    assert links and all(link.startswith(("data:", "#")) for link in links), set(links) - {"#"}
    assert not re.search(r"https?://|url\(|@import", page)
    assert "default-src 'none'" in page  # and the page's own policy forbids it
    drawn = set(re.findall(r"plots/(\w+\.png)", (example / "report.md").read_text()))
    assert {"shift_gaps.png", "dpo_logps.png", "gold_vs_compute.png"} <= drawn
    # every figure of report.md is in the page: an SVG chart, or else the PNG itself, inlined
    assert page.count('src="data:image/png;base64,') == len(drawn - set(SVG_FIGURES)) == 6


def test_figures_carry_their_numbers(example):
    page = (example / "report.html").read_text()
    results = pd.read_csv(example / "results.csv")
    ids = results[results["split"] == "id"]

    def marks(figure: str) -> list[str]:
        block = page[page.index(f'<figure id="fig-{figure}">') :]
        block = block[: block.index("</figure>")]
        return re.findall(r'<g class="mark"[^>]*>.*?<title>(.*?)</title></g>', block, re.S)

    tips = [tip for mark in marks("gold_vs_kl") for tip in mark.split("\n")]  # one mark for points together
    runs = [t for t in tips if ", seed " in t]
    policies = ids[ids["arm"] != "rm"]  # the reward model alone is not a policy
    assert len(runs) == len(policies)  # one point per policy, seed and grid point
    assert "demonstrator: gold 0.792" in tips and "best possible: gold 1.750" in tips  # the gold scale
    dpo = ids[ids["arm"] == "dpo"].iloc[0]
    tip = f"dpo, seed {dpo['seed']}: KL {dpo['kl_to_base']:.3f}, gold {dpo['gold_reward']:.3f}"
    assert tip in runs
    assert any(t.startswith("best_of_n, seed 0 (n=8): KL ") for t in runs)
    by_split = [t for t in marks("gold_by_arm") if " · " in t]
    # every policy, best-of-n once per n (3), on every split; the scale's three lines besides
    assert len(by_split) == (results["arm"].nunique() - 1 + 2) * results["split"].nunique()
    assert "best_of_n n=4 · ID" in " ".join(by_split) and "base model: gold" in " ".join(marks("gold_by_arm"))
    table = {row[0]: row for row in parse(page).tables["t-generalisation"][1:]}
    assert f"ppo · OOD opener: gold {table['ppo'][3]} (95% CI, n=3)" in by_split  # the table's numbers
    assert len(marks("frontier")) == 3  # best-of-n's three n
    assert len(marks("training")) > 10


def test_model_output_cannot_break_the_page(altered):
    page = (altered / "report.html").read_text()
    found = parse(page)
    assert EVIL not in page and page.count("</script>") == len(found.scripts) == 3  # samples, view, script
    assert "&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;" in page  # in the example generations, as text
    data = next(json.loads(body) for attrs, body in found.scripts if attrs.get("id") == "report-samples")
    assert EVIL in data["strings"]
    view = next(json.loads(body) for attrs, body in found.scripts if attrs.get("id") == "report-overopt")
    assert EVIL in view["strings"]  # the base model's answer, which best-of-n's answers are marked against
    assert json.loads(script_json({"a": "<&>\u2028"})) == {"a": "<&>\u2028"}


def test_a_folder_without_the_newer_sample_columns_renders(altered):
    found = parse((altered / "report.html").read_text())
    data = next(json.loads(body) for attrs, body in found.scripts if attrs.get("id") == "report-samples")
    assert data["kinds"] == [] and set(data["columns"]["rm"]) == set(data["columns"]["lr"]) == {None}
    assert len(found.tables["t-claims-checked"]) == 24  # a header and 23 claims


def test_sample_payload_keeps_every_sample_and_the_failure_kinds():
    samples = pd.DataFrame({
        "arm": ["b", "a", "a"], "seed": [0, 0, 1], "split": ["ood", "id", "id"], "prompt_index": [0, 0, 0],
        "prompt": ["p", "p", "p"], "completion": ["x", "y", "x"], "gold_reward": [0.5, float("nan"), 1.0],
        "well_formed": [True, False, True], "ended_with_eos": [True, True, False],
        "logp_policy": [-1.0, -2.0, -3.0], "logp_base": [-1.5, -2.0, -2.0],
        "repetition": [0.0, 0.25, 0.0], "off_topic": [0.0, 0.0, 1.0],
        "grid.arms.a.stages.best_of_n.n": [float("nan"), 2.0, 10.0],
    })  # fmt: skip
    data = samples_payload(samples, ["a", "b"])
    c = data["columns"]
    assert data["n"] == 3 and data["arms"] == ["a", "b"] and data["splits"] == ["id", "ood"]
    assert [data["arms"][i] for i in c["arm"]] == ["b", "a", "a"]
    assert [data["strings"][i] for i in c["text"]] == ["x", "y", "x"] and len(data["strings"]) == 3
    assert data["points"] == ["", "n=2", "n=10"] and c["point"] == [0, 1, 2]
    assert c["gold"] == [0.5, None, 1.0] and c["lr"] == [0.5, 0.0, -1.0] and c["rm"] == [None] * 3
    assert c["wf"] == [1, 0, 1] and c["eos"] == [1, 1, 0] and c["off_topic"] == [0.0, 0.0, 1.0]
    assert [k["key"] for k in data["kinds"]] == [
        "wf",
        "eos",
        "repetition",
        "off_topic",
    ]  # no malformed column
    assert samples_payload(samples.iloc[:0], ["a"]) == {"n": 0}
    many = pd.concat([samples.assign(prompt_index=i) for i in range(4)], ignore_index=True)
    cut = samples_payload(many, ["a", "b"], most=7)  # whole prompts, as many as fit
    assert (cut["n"], cut["left_out"]) == (6, 6) and set(cut["columns"]["prompt_index"]) == {0, 1}


def test_markdown_is_escaped_and_tables_split_on_unescaped_pipes():
    assert table_cells("| a \\| b | **c** |") == ["a | b", "**c**"]
    title, intro, sections = markdown_sections(
        "# T <x>\n\nintro `<i>`\n\n## S: more\n\n- **b** <b>\n\n| h |\n|---|\n| <script> |\n", lambda t, p: ""
    )
    assert title == "T <x>" and intro == "<p>intro <code>&lt;i&gt;</code></p>"
    (heading, slug, html), = sections  # fmt: skip
    assert (heading, slug) == ("S", "s")
    assert "<li><strong>b</strong> &lt;b&gt;</li>" in html and "<td>&lt;script&gt;</td>" in html


def test_a_failed_rebuild_leaves_the_old_pages(tmp_path, monkeypatch):
    folder = tmp_path / "example"
    shutil.copytree(ROOT / "reports" / "example", folder)
    (folder / "report.html").write_text("old page")
    before = (folder / "report.md").read_text()
    monkeypatch.setattr(
        report_files, "report_figures", lambda *a: {"objective": [], "data": [], "generalisation": []}
    )

    def broken(*args):
        raise ReportError("the page could not be drawn")

    monkeypatch.setattr(report_files, "render_html", broken)
    with pytest.raises(ReportError):
        rebuild_report(folder)
    assert (folder / "report.html").read_text() == "old page" and (folder / "report.md").read_text() == before
    assert sorted(p.name for p in (folder / "plots").iterdir()) == sorted(
        p.name for p in (ROOT / "reports" / "example" / "plots").iterdir()
    )
    assert not [p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".old"))]
    assert render_html.__module__ == "compare.report.html"


def test_infinite_numbers_in_samples_are_left_out_not_fatal():
    """A diverged model can leave -inf log-probs or an inf reward-model score in samples.csv; JSON has
    neither, and the page must still be written."""
    samples = pd.DataFrame({
        "arm": ["a", "a"], "seed": [0, 0], "split": ["id", "id"], "prompt_index": [0, 0], "prompt": ["p", "p"],
        "completion": ["x", "y"], "gold_reward": [0.5, 1.0], "proxy_reward": [float("inf"), 1.0],
        "logp_policy": [-1.0, -2.0], "logp_base": [float("-inf"), -2.0],
    })  # fmt: skip
    data = samples_payload(samples, ["a"])
    assert data["columns"]["rm"] == [None, 1.0]
    assert json.loads(script_json(data))["n"] == 2


# -- the over-optimisation view (compare/report/overopt.py) ----------------------------------------------
def snapshot_rows() -> pd.DataFrame:
    """Two checkpoints of one PPO run, two prompts each."""
    return pd.DataFrame({
        "arm": ["ppo"] * 4, "seed": [0] * 4, "stage": ["ppo"] * 4, "step": [0, 0, 4, 4],
        "prompt_index": [0, 1, 0, 1], "prompt": ["p0", "p1", "p0", "p1"],
        "completion": [" a b", " c", " a x", " y"], "gold_reward": [1.0, 0.5, 0.2, 0.0],
        "proxy_reward": [0.1, 0.3, 2.0, 3.0], "log_ratio": [0.0, 0.0, 1.5, 2.5],
    })  # fmt: skip


def test_a_training_track_is_each_checkpoints_means_and_answers():
    roles = Roles({"base": [], "ppo": ["rm", "ppo"]})
    (track,) = training_tracks(snapshot_rows(), roles)
    assert track.title == "ppo · seed 0, along training" and track.kind == "training"
    assert [s.label for s in track.stops] == ["step 0 of 4", "step 4 of 4"]
    assert [(s.gold, s.rm, s.kl) for s in track.stops] == [(0.75, 0.2, 0.0), (0.1, 2.5, 2.0)]
    assert [r[2] for r in track.stops[1].rows] == [" a x", " y"]
    assert track.reference == {0: " a b", 1: " c"}  # the start policy's answers: what changes are marked to
    chart = track_chart(track, against_kl=False)
    # a point where each measurement is (2 stops x gold and RM panels), and a hidden ring per point
    assert chart.count('<g class="mark" data-stop=') == 4 and chart.count('class="now"') == 4
    assert chart.count("hidden") == 4 and "<polyline" in chart
    assert training_tracks(pd.DataFrame(), roles) == []


def test_a_sweep_track_reads_each_settings_results_and_first_answers():
    column = "grid.arms.bon.stages.best_of_n.n"
    roles = Roles({"base": [], "bon": ["rm", "best_of_n"]})
    results = pd.DataFrame({
        "arm": ["base", "bon", "bon", "bon"], "seed": [0] * 4, "split": ["id"] * 4,
        column: [float("nan"), 4.0, 2.0, 16.0], "gold_reward": [0.1, 0.4, 0.3, 0.2],
        "proxy_reward": [float("nan"), 1.0, 0.5, 2.0], "kl_to_base": [0.0, 0.8, 0.3, 1.9],
    })  # fmt: skip
    samples = pd.DataFrame({
        "arm": ["base", "bon", "bon", "bon", "bon"], "seed": [0] * 5, "split": ["id"] * 5,
        "prompt_index": [0, 0, 0, 0, 0], "sample_index": [0, 0, 1, 0, 0], "prompt": ["p"] * 5,
        "completion": ["base says", "n4", "n4 second", "n2", "n16"], column: [None, 4.0, 4.0, 2.0, 16.0],
        "gold_reward": [0.1, 0.4, 0.0, 0.3, 0.2], "logp_policy": [-1.0] * 5, "logp_base": [-1.0, -2, -2, -1.5, -4],
    })  # fmt: skip
    (track,) = sweep_tracks(results, samples, roles)
    assert track.title == "bon · seed 0, along n" and track.categorical
    assert [s.label for s in track.stops] == ["n=2", "n=4", "n=16"]  # in the setting's order
    assert [(s.gold, s.rm, s.kl) for s in track.stops] == [(0.3, 0.5, 0.3), (0.4, 1.0, 0.8), (0.2, 2.0, 1.9)]
    assert [s.rows[0][2] for s in track.stops] == ["n2", "n4", "n16"]  # the first sample only
    assert track.stops[2].rows[0][5] == 3.0 and track.reference == {0: "base says"}
    chart = track_chart(track, against_kl=False)
    assert all(f">{n}</text>" in chart for n in ("2", "4", "16"))  # the settings name the ticks


def test_the_view_is_in_the_page_only_with_something_to_show(example):
    # the example: each online RL stage along training, and best-of-n along its n, a track per seed
    page = (example / "report.html").read_text()
    data = json.loads(re.search(r'id="report-overopt">(.*?)</script>', page)[1])
    titles = [p["title"] for p in data["tracks"]]
    runs = ("ppo", "sft_ppo (ppo)", "rloo", "ppo_gold (oracle bound)")
    expected = [f"{run} · seed {s}, along training" for run in runs for s in (0, 1, 2)]
    assert titles == expected + [f"best_of_n · seed {s}, along n" for s in (0, 1, 2)]
    assert 'id="oo-slider"' in page and page.count('class="oo-chart"') == 2 * len(titles)  # x and KL
    roles = Roles({"base": [], "sft": ["sft"]})
    results = pd.DataFrame({"arm": ["sft"], "seed": [0], "split": ["id"], "gold_reward": [0.5]})
    assert overopt_section(results, pd.DataFrame(), None, roles) is None
