"""Pure helpers of the report's markdown."""

from compare.report import table_cell


def test_table_cell_keeps_real_text_in_one_cell():
    # real models write line breaks and pipes; a markdown row must stay one row
    assert (
        table_cell("was delighted!\nDear James,\n  it | was fine")
        == "was delighted! ⏎ Dear James, ⏎ it \\| was fine"
    )
    assert table_cell("one line") == "one line"


def test_slide_figures_are_vector_and_slide_shaped(tmp_path):
    """`report DIR --figures svg|pdf` writes the key figures as vector files for a 1280x720 slide."""
    import re
    import shutil
    from pathlib import Path

    from compare.cli import main

    folder = tmp_path / "example"
    shutil.copytree(Path(__file__).resolve().parents[1] / "reports" / "example", folder)
    assert main(["report", str(folder), "--figures", "svg"]) == 0
    slides = sorted(p.name for p in (folder / "plots" / "slides").iterdir())
    assert {"gold_by_arm.svg", "gold_vs_kl.svg", "overoptimisation.svg", "forgetting.svg"} <= set(slides)
    assert "training.svg" not in slides  # the key figures only
    head = (folder / "plots" / "slides" / "gold_vs_kl.svg").read_text()[:2000]
    width, height = (float(x) for x in re.search(r'width="([\d.]+)pt" height="([\d.]+)pt"', head).groups())
    assert width >= 800 and 1.5 <= width / height <= 2.0  # about 12.8 x 7.2 inches, 16:9
    assert (folder / "plots" / "gold_vs_kl.png").is_file()  # the page's figures are still there
    assert main(["report", str(folder), "--figures", "pdf"]) == 0
    assert (folder / "plots" / "slides" / "gold_vs_kl.pdf").read_bytes()[:4] == b"%PDF"


def test_no_negative_zero_in_numbers():
    """A KL estimate of -0.0004 prints as 0.000, not -0.000; real negatives keep their sign."""
    from compare.report.series import fmt, num
    from compare.report.tables import fmt_ci

    assert num(-0.0004) == "0.000" and num(-0.0004, signed=True) == "+0.000"
    assert num(-0.0006) == "-0.001" and num(0.25, signed=True) == "+0.250"
    assert fmt(-0.0001, float("nan")) == "0.000"
    assert fmt_ci([-0.0004, -0.0003, -0.0005]).startswith("0.000 ± ")
    assert fmt_ci([-0.0004, 0.002, -0.002], nonnegative=True).startswith("0.000 (0.000 to ")


def test_main_table_shows_training_compute_when_recorded():
    import pandas as pd

    from compare.report.roles import Roles
    from compare.report.tables import main_table

    roles = Roles({"base": [], "sft": ["sft"]})
    rows = [
        {"arm": a, "seed": s, "split": sp, "gold_reward": 0.5, "kl_to_base": 0.0, "proxy_reward": float("nan"),
         "distinct_2": 0.5, "well_formed": 1.0, "mean_length": 3.0, "compute_seconds": secs + s,
         "compute_flops": secs * 5e9}
        for a, secs in (("base", 10.0), ("sft", 20.0)) for s in (0, 1, 2) for sp in ("id", "ood")
    ]  # fmt: skip
    table = main_table(pd.DataFrame(rows), roles)
    assert "| training GFLOP | training s |" in table and "| 100.000 ± 0.000 | 21.000 ± 2.484 |" in table
    # 20, 21, 22 s: t(2) * 1 / sqrt(3); 1e11 FLOPs in gigaflops
    assert "training" not in main_table(
        pd.DataFrame(rows).drop(columns=["compute_seconds", "compute_flops"]), roles
    )


def test_reference_line_labels_never_overlap():
    """Two gold-scale lines 0.01 apart (the SmolLM2 findings' base model 0.28 and demonstrator 0.29) get
    labels at least LABEL_GAP apart; lines far apart keep their labels on the lines."""
    from matplotlib.figure import Figure

    from compare.report.figures import LABEL_GAP, reference_lines

    ax = Figure().subplots()
    ax.bar([0, 1], [0.5, 0.7])
    ax.set_ylim(0, 1)
    reference_lines(ax, {"base": 0.28, "demonstrator": 0.29, "ceiling": 0.9})
    ys = sorted(a.xy[1] for a in ax.texts)
    assert [round(y, 3) for y in ys] == [0.28, round(0.28 + LABEL_GAP, 3), 0.9]
    assert [t.get_text() for t in sorted(ax.texts, key=lambda a: a.xy[1])][:2] == [
        "base model 0.28",
        "demonstrator 0.29",
    ]
