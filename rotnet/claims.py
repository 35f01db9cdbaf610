"""The paper's claims on CIFAR-10, checked against the runs of a report (`reports/claims.md`).

Each claim is a few comparisons "A beats B" between report cells (or Figure 5b points); each
comparison is decided on the seeds' spread (`rotnet.spread.beyond_spread`): A's mean above
B's by more than the margin holds, B's above A's by more than it does not hold, anything
between is within the spread. A claim holds when all its comparisons hold, does not hold
when any does not, and is within the spread otherwise (not run: a cell has no run yet).
"""

from __future__ import annotations

from dataclasses import dataclass

from rotnet.registry import rotation_set_label
from rotnet.report import ROTNET_CONV, SUPERVISED, ReportData, runs_spread
from rotnet.spread import SE_MULTIPLE, Spread, beyond_spread, margin

HOLDS, FAILS, WITHIN, NOT_RUN = "holds", "does not hold", "within spread", "not run"


@dataclass(frozen=True)
class Comparison:
    higher: str  # what the paper says is better
    lower: str
    a: Spread | None
    b: Spread | None

    @property
    def verdict(self) -> str:
        if self.a is None or self.b is None:
            return NOT_RUN
        if beyond_spread(self.a, self.b):
            return HOLDS
        return FAILS if beyond_spread(self.b, self.a) else WITHIN

    def text(self) -> str:
        if self.verdict == NOT_RUN:
            return f"{self.higher} > {self.lower}: {NOT_RUN}"
        return (f"{self.higher} {self.a.text()} vs {self.lower} {self.b.text()}: difference "
                f"{self.a.mean - self.b.mean:+.2f}, margin {margin(self.a, self.b):.2f} → "
                f"{self.verdict}")


def claim_verdict(comparisons: list[Comparison]) -> str:
    verdicts = {c.verdict for c in comparisons} or {NOT_RUN}
    for verdict in (FAILS, NOT_RUN, WITHIN):
        if verdict in verdicts:
            return verdict
    return HOLDS


def block2_is_best(data: ReportData) -> list[Comparison]:
    """Table 1: in every RotNet, block 2's probe beats each other block's."""
    comparisons = []
    for row in dict.fromkeys(c.row for c in data.table("table1")):
        cells = {c.column: c for c in data.table("table1") if c.row == row}
        comparisons += [Comparison(f"{row} B2", f"{row} {column}", cells["B2"].spread, cell.spread)
                        for column, cell in cells.items() if column != "B2"]
    return comparisons


def rotation_sets_ordered(data: ReportData) -> list[Comparison]:
    """Table 2: 4 rotations beat 8, and 8 beat 2 (0°, 180°)."""
    cells = {c.row: c for c in data.table("table2")}
    four, eight, two = (rotation_set_label(name) for name in ("4", "8", "2"))
    return [Comparison(four, eight, cells[four].spread, cells[eight].spread),
            Comparison(eight, two, cells[eight].spread, cells[two].spread)]


def conv_beats_supervised_with_few_labels(data: ReportData) -> list[Comparison]:
    """Figure 5b: at every subset size below the whole training set, RotNet + conv beats the
    supervised NIN trained on the same labelled images."""
    by_k: dict[float, dict[str, list]] = {}
    for point in data.points:
        if point.figure == "figure5b" and point.series in (SUPERVISED, ROTNET_CONV):
            by_k.setdefault(point.x, {}).setdefault(point.series, []).append(point.run)
    comparisons = []
    for k, series in sorted(by_k.items()):
        if ROTNET_CONV not in series:  # the whole set: Table 3's supervised run only
            continue
        a, b = (series.get(name, []) for name in (ROTNET_CONV, SUPERVISED))
        comparisons.append(Comparison(f"{ROTNET_CONV}, {k:g} per class",
                                      f"{SUPERVISED}, {k:g} per class",
                                      runs_spread(a), runs_spread(b)))
    return comparisons


CLAIMS = (("Block 2 is the best frozen block (Table 1)", block2_is_best),
          ("4 rotations > 8 > 2 (Table 2)", rotation_sets_ordered),
          ("RotNet + conv beats supervised with few labels (Figure 5b)",
           conv_beats_supervised_with_few_labels))


def claims_markdown(data: ReportData) -> str:
    lines = ["# The paper's claims on these runs", "",
             f"- Data set: `{data.dataset}`; profile: `{data.profile}`",
             "- Each number: mean ± standard deviation over the seeds (n runs) · SE, the "
             "test-set standard error √(p(1−p)/n_test) at the mean, in points.",
             "- A beats B **beyond the spread** when mean(A) − mean(B) exceeds the margin: "
             "the larger of sd(A) + sd(B) and "
             f"{SE_MULTIPLE:g} × √(SE(A)² + SE(B)²). Reversed beyond it: does not hold; "
             "otherwise within spread (with n=1 only the test-set SE counts: no seed spread "
             "is known).", ""]
    for title, comparisons_of in CLAIMS:
        comparisons = comparisons_of(data)
        lines += [f"## {title}: {claim_verdict(comparisons)}", ""]
        lines += [f"- {c.text()}" for c in comparisons] or [f"- {NOT_RUN}"]
        lines.append("")
    return "\n".join(lines)

