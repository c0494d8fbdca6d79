"""The test tiers name real modules, so that a renamed module cannot fall silently into another tier."""

from pathlib import Path

from conftest import SLOW, UNIT


def test_every_tier_names_a_test_module():
    modules = {p.stem for p in Path(__file__).parent.glob("test_*.py")}
    assert (UNIT | SLOW) <= modules, (UNIT | SLOW) - modules
    assert not UNIT & SLOW
