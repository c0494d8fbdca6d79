"""Pure helpers of the report's markdown."""

from compare.report import table_cell


def test_table_cell_keeps_real_text_in_one_cell():
    # real models write line breaks and pipes; a markdown row must stay one row
    assert (
        table_cell("was delighted!\nDear James,\n  it | was fine")
        == "was delighted! ⏎ Dear James, ⏎ it \\| was fine"
    )
    assert table_cell("one line") == "one line"
