"""How `make bench` judges a goal from paired runs (docs/benchmarks.md, "Reading the table"):
a full run by the median of the pair ratios; a quick run only by what every pair agrees on,
so noise can make it unsure but never makes it print MISSED for a goal the pairs straddle.
"""

from __future__ import annotations

import pytest
from benchmarks.run import paired_row, verdict

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("ratios", "full", "quick"),
    [
        ([1.05, 1.08, 1.10, 1.12, 1.14], "ok", "ok"),
        # Median within the goal, one noisy pair over it.
        ([1.05, 1.08, 1.10, 1.12, 1.40], "ok", "unsure"),
        # Median over the goal, one pair within it.
        ([1.10, 1.16, 1.18, 1.20, 1.22], "MISSED", "unsure"),
        ([1.16, 1.18, 1.20, 1.22, 1.30], "MISSED", "MISSED"),
        # At the goal counts as within it.
        ([1.15, 1.15, 1.15], "ok", "ok"),
    ],
)
def test_full_runs_judge_by_the_median_and_quick_runs_by_every_pair(
    ratios: list[float], full: str, quick: str
) -> None:
    assert verdict(ratios, 1.15, quick=False) == full
    assert verdict(ratios, 1.15, quick=True) == quick


def test_a_row_reports_the_median_pair_ratio_and_its_spread() -> None:
    floor = [100.0, 200.0, 100.0]
    project = [110.0, 260.0, 105.0]  # pair ratios 1.10, 1.30, 1.05

    row = paired_row("figure", floor, project, 1.15, quick=False)

    assert row.floor == 100.0
    assert row.project == 110.0
    assert row.ratio == pytest.approx(1.10)
    assert row.spread == (pytest.approx(1.05), pytest.approx(1.30))
    assert row.verdict == "ok"


def test_a_ceiling_is_missed_whatever_the_ratio() -> None:
    row = paired_row("memory", [90.0], [97.0], 1.10, quick=False, ceiling=96, summary=max)

    assert row.ratio == pytest.approx(97 / 90)
    assert row.verdict == "MISSED"


def test_a_figure_without_a_goal_has_no_verdict() -> None:
    assert paired_row("wall", [1.0, 2.0], [3.0, 4.0], None, quick=True).verdict == ""
