"""The paper's claims (`rotnet.paper_claims`) decided on the runs of a report, or on the
paper's own published numbers (`rotnet claims --paper`), into `reports/claims.md`.

Each comparison gets an estimate, its interval and a verdict from `rotnet.significance`
(paired on the test images where the runs' `predictions.json` allow it; Holm's correction
within each claim). A claim holds when every comparison holds, is refuted when any is
refuted, and is otherwise undecided (or not run: a cell has no run).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rotnet import attention_render, files, paper_claims, tracking
from rotnet.paper_claims import CONV_SERIES, PROBE_SERIES, SUPERVISED_SERIES, Claim, Comparison
from rotnet.report import (PAPER, PAPER_DATASET, ROTNET_CONV, SNAPSHOT_PROBE, SUPERVISED,
                           ReportData, Run)
from rotnet.significance import (ALPHA, NOT_RUN, Decision, Sample, Scored, claim_verdict, decide,
                                 estimate, quantile)

# Points: a comparison whose 95 % interval is within ± this decides any gap larger than it
# (the quick profile's aim; each row says how many seeds would get it there).
RESOLUTION = 2.5
PAPER_TEST_IMAGES = 10_000  # CIFAR-10's test set: what every published number was scored on
FIGURE_SERIES = {PROBE_SERIES: ("figure5a", SNAPSHOT_PROBE), CONV_SERIES: ("figure5b", ROTNET_CONV),
                 SUPERVISED_SERIES: ("figure5b", SUPERVISED)}


def scored_run(run: Run) -> Scored:
    """A run as the test sees it: its accuracy and, where it logged them, its predictions."""
    images = int(run.tags.get("test_images", "0") or 0)
    record = tracking.read_json_artifact(run.run_id, files.PREDICTIONS)
    correct = test_set = None
    if record is not None:
        correct = np.asarray(record["predicted"]) == np.asarray(record["labels"])
        test_set, images = record["test_set_sha256"], len(correct)
    return Scored(int(run.tags.get("seed", 0)), run.value, images, correct, test_set)


class RunEvidence:
    """The cells and figure points of a report, each run with its predictions."""

    def __init__(self, data: ReportData):
        self.data = data
        self._scored: dict[str, Scored] = {}  # by run id: each run's predictions read once

    def _score(self, run: Run) -> Scored:
        if run.run_id not in self._scored:
            self._scored[run.run_id] = scored_run(run)
        return self._scored[run.run_id]

    def sample(self, key: str) -> Sample | None:
        cell = self.data.by_key(key)
        return tuple(map(self._score, cell.runs)) if cell and cell.runs else None

    def series(self, name: str) -> dict[float, Sample]:
        figure, series = FIGURE_SERIES[name]
        by_x: dict[float, list[Scored]] = {}
        for point in self.data.series(figure, series):
            by_x.setdefault(point.x, []).append(self._score(point.run))
        return {x: tuple(runs) for x, runs in by_x.items()}

    def whole_set_per_class(self) -> float | None:
        """The supervised point that is Table 3's run (no `figure5` tag) is the whole set."""
        return next((p.x for p in self.data.series("figure5b", SUPERVISED)
                     if "figure5" not in p.run.tags), None)


class PaperEvidence:
    """The paper's published CIFAR-10 numbers, each one run on the 10 000 test images: seed
    noise unmeasured, no per-image predictions. Figure 5 is published as a plot only; its
    whole-set point (K = 5000) is Table 3's."""

    WHOLE_SET = 5000.0

    def sample(self, key: str) -> Sample | None:
        table, *rest = key.split("/")
        value = PAPER[table].get(rest[0])
        if table == "table1" and value is not None:
            block = int(rest[1][1:])
            value = value[block - 1] if block <= len(value) else None
        return None if value is None else (Scored(0, value, PAPER_TEST_IMAGES),)

    def series(self, name: str) -> dict[float, Sample]:
        key = {CONV_SERIES: "table3/conv", SUPERVISED_SERIES: "table3/supervised"}.get(name)
        return {self.WHOLE_SET: self.sample(key)} if key else {}

    def whole_set_per_class(self) -> float | None:
        return self.WHOLE_SET


@dataclass(frozen=True)
class Decided:
    comparison: Comparison
    decision: Decision | None  # None: a cell has no run

    @property
    def verdict(self) -> str:
        return self.decision.verdict if self.decision else NOT_RUN


def decide_claim(claim: Claim, evidence) -> list[Decided]:
    """Every comparison of `claim`, Holm-corrected over those that have runs."""
    comparisons = claim.comparisons(evidence)
    ready = [c for c in comparisons if all(sample for _, sample in c.terms)]
    decisions = decide([estimate(list(c.terms)) for c in ready], [c.threshold for c in ready])
    by_comparison = dict(zip(map(id, ready), decisions))
    return [Decided(c, by_comparison.get(id(c))) for c in comparisons]


def _row(decided: Decided) -> str:
    d = decided.decision
    if d is None:
        return f"| {decided.comparison.text} | — | — | — | — | {NOT_RUN} |"
    lo, hi = d.interval
    e = d.estimate
    noise = "" if e.seed_noise_measured else " ¹"
    how = "paired" if e.paired else "independent"
    needed = e.seeds_for(RESOLUTION)
    return (f"| {decided.comparison.text} | {e.value:+.2f} | [{lo:+.2f}, {hi:+.2f}] at "
            f"{100 * d.level:.1f} % ({how}, n={e.seeds}){noise} | ±{e.half_width(0.95):.2f} | "
            f"{needed if needed is not None else '—'} | {d.verdict} |")


def resolution_line(decided: list[Decided]) -> str:
    """How many comparisons the runs resolve to ±RESOLUTION at 95 %, and the widest."""
    estimates = [d.decision.estimate for d in decided if d.decision is not None]
    if not estimates:
        return "- Resolution: no comparison has runs yet."
    halves = [e.half_width(0.95) for e in estimates]
    within = sum(h <= RESOLUTION for h in halves)
    return (f"- Resolution: {within} of {len(halves)} comparisons have a 95 % interval within "
            f"±{RESOLUTION:g} points (before Holm's correction); the widest is "
            f"±{max(halves):.2f}. Column \"seeds for ±{RESOLUTION:g}\": the seeds per cell that "
            "would get a comparison there, were its seed spread and test-set error as measured "
            "(— : seed noise unmeasured, or the test set alone is too wide).")


def claim_markdown(number: int, claim: Claim, decided: list[Decided]) -> list[str]:
    verdict = claim_verdict([d.verdict for d in decided])
    return [f"## {number}. {claim.title}: **{verdict}**", "",
            f"> \"{claim.quote}\" — {claim.where}", "", f"Tested as: {claim.tested_as}", "",
            f"| comparison | difference (points) | interval | ±95 % | seeds for ±{RESOLUTION:g} "
            "| verdict |", "|---|---|---|---|---|---|",
            *map(_row, decided), ""]


METHOD = (
    "Each comparison is a difference of cells' mean accuracies (points); its standard error "
    "adds the seeds' variance of that difference (over n seeds) and the test set's, from the "
    "per-image differences of correctness on the same test images (paired) or from binomial "
    "errors where the cells share no per-image predictions (independent). The interval is the "
    "difference ± t(n − 1) × SE (normal quantile with one seed), at the level Holm's step-down "
    f"correction gives that comparison within its claim (family-wise error {ALPHA:g}). A "
    "comparison holds when its interval lies wholly above the claimed threshold (0 for A > B), "
    "is refuted when it lies wholly below, and is undecided otherwise.")


def attention_lines(data: ReportData) -> list[str]:
    """Figures 3 and 6 against the attention measures on the baseline RotNet's pretraining
    runs (reached through its block-2 probes' lineage) and the supervised NIN's runs: a
    description of what was measured, not a test (the paper gives pictures, no number)."""
    def metrics(run_ids) -> list[dict]:
        found = [tracking.run_metrics(run_id) for run_id in dict.fromkeys(filter(None, run_ids))]
        return [m for m in found if any(k.startswith(attention_render.METRIC_PREFIX) for k in m)]

    probes, supervised = data.by_key("table1/b4-r4/B2"), data.by_key("table3/supervised")
    rotnet = metrics(r.tags.get("pretrain_run_id") for r in (probes.runs if probes else []))
    plain = metrics(r.run_id for r in (supervised.runs if supervised else []))
    return attention_render.attention_claims_markdown(rotnet, plain)


def claims_markdown(evidence, header: list[str], measured: list[str] = ()) -> str:
    decided = [decide_claim(claim, evidence) for claim in paper_claims.CLAIMS]
    lines = ["# The paper's claims, decided", "", *header,
             f"- Method ({PAPER_TEST_IMAGES:,} test images for the paper's numbers): {METHOD}",
             "- ¹ one seed per cell: seed-to-seed noise is unmeasured, so this verdict speaks for "
             "the finite test set only.",
             resolution_line([d for per_claim in decided for d in per_claim]), ""]
    for number, (claim, per_claim) in enumerate(zip(paper_claims.CLAIMS, decided), 1):
        lines += claim_markdown(number, claim, per_claim)
    if measured:
        lines += ["# What the pictures show: measured, not tested", "",
                  "Figures 3 and 6 are pictures; the paper states no number to test. "
                  "`reports/attention/` has the figures and the measures per variant.", "",
                  *measured]
    lines += ["## Not decided here", ""]
    lines += [f"- \"{quote}\": {why}" for quote, why in paper_claims.NOT_DECIDED]
    return "\n".join(lines) + "\n"


def runs_claims_markdown(data: ReportData) -> str:
    """claims.md of a report's runs."""
    seeds = max((len(c.replicates) for c in data.cells), default=0)
    header = [f"- Data set: `{data.dataset}`; profile: `{data.profile}`; precision of every run: "
              f"`{data.precision or 'not recorded'}`",
              f"- Seeds per cell: {seeds}. " + (
                  f"The 95 % quantile t({seeds - 1}) is {quantile(0.975, seeds - 1):.2f} (the "
                  f"normal's 1.96): with few seeds it, not the test set, sets the width of the "
                  f"intervals; {seeds + 1} seeds would make it {quantile(0.975, seeds):.2f}."
                  if seeds >= 2 else "Seed-to-seed noise is unmeasured."),
              "- Quotes and thresholds are the paper's, for CIFAR-10" +
              ("." if data.dataset == PAPER_DATASET else f"; these runs are on `{data.dataset}`.")]
    return claims_markdown(RunEvidence(data), header, attention_lines(data))


def paper_claims_markdown() -> str:
    """The claims decided on the paper's published numbers (`rotnet claims --paper`)."""
    return claims_markdown(PaperEvidence(), [
        "- Evidence: the paper's published CIFAR-10 numbers (Tables 1–3), each as one run on the "
        f"{PAPER_TEST_IMAGES:,} test images; Figure 5 is published as a plot only, so its claims "
        "are not run."])
