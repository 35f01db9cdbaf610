"""The table `rotnet ablate` prints and writes: per probed block, the variant's and the
baseline's downstream accuracy over every seed of params' `seeds` (mean ± sd (n)), the
paper's numbers for each, and their difference with the interval and verdict of the paper
claims' test (`rotnet.significance`: paired on the runs' per-image predictions where they
have them; Holm's correction over the blocks compared). Runs are links into the MLflow UI.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from rotnet.config import Config
from rotnet.registry import BASELINE, ROTATION_SETS, VARIANTS, parse_variant, probe_blocks
from rotnet.report import PAPER, Run, expected_fingerprint, finished_runs, latest, runs_spread
from rotnet.significance import NOT_RUN, Decision, decide, estimate
from rotnet.spread import MISSING, number_text



@dataclass(frozen=True)
class Row:
    label: str
    chance: float | None  # % a guess scores on this row's task
    ours: tuple[Run, ...]  # the variant's runs, one per seed that has one
    paper: float | None  # the paper's number for the variant (Tables 1-2), where it has one
    base: tuple[Run, ...]  # the baseline's runs
    base_paper: float | None
    decision: Decision | None = None  # variant − baseline; None: a side has no run

    @property
    def difference(self) -> float | None:
        return self.decision.estimate.value if self.decision else None

    @property
    def verdict(self) -> str:
        """holds: the variant beats the baseline; refuted: it is worse; else undecided."""
        return self.decision.verdict if self.decision else NOT_RUN


def paper_value(variant: str, block: int) -> float | None:
    """The paper's non-linear probe accuracy on `block` of `variant` (Table 1, else Table 2)."""
    per_block = PAPER["table1"].get(variant)
    if per_block and block <= len(per_block):
        return per_block[block - 1]
    return PAPER["table2"].get(variant) if block == 2 else None


def probed_blocks(variant: str) -> list[int]:
    """The blocks `rotnet ablate` probes: those dvc.yaml probes for a main-pipeline variant
    (block 2 of a rotation variant, as in Table 2), else every block (ablation/dvc.yaml)."""
    if variant in VARIANTS:
        return sorted(probe_blocks(variant))
    return list(range(1, parse_variant(variant)[0] + 1))


def seed_runs(config: Config, runs: list[Run], variant: str, block: int) -> tuple[Run, ...]:
    """The variant's finished non-linear probe on `block`, one per seed of `config.seeds`
    that has one: the run of the fingerprint that seed's params imply, as in the report."""
    want = {"method": "nonlinear", "block": str(block), "variant": variant}
    found = (latest(runs, fingerprint=expected_fingerprint(config.with_seed(seed), want), **want)
             for seed in config.seeds)
    return tuple(run for run in found if run is not None)


def decided(rows: list[Row]) -> list[Row]:
    """Each row with both sides run gets its decision (Holm over those rows)."""
    from rotnet.claims import scored_run  # reads the runs' predictions from MLflow

    ready = [i for i, row in enumerate(rows) if row.ours and row.base]
    estimates = [estimate([(1.0, tuple(map(scored_run, rows[i].ours))),
                           (-1.0, tuple(map(scored_run, rows[i].base)))]) for i in ready]
    out = list(rows)
    for i, decision in zip(ready, decide(estimates, [0.0] * len(estimates))):
        out[i] = replace(rows[i], decision=decision)
    return out


def comparison_rows(config: Config, variant: str, baseline: str = BASELINE) -> list[Row]:
    """One row per probed block of `variant`: the object-classification accuracy of a
    non-linear probe on it, the variant's and the baseline's (same task, same chance level),
    over every seed; only runs of the protocol `config` states count, as in the report."""
    runs = [r for r in finished_runs(config.profile, config.data.dataset) if "figure5" not in r.tags]
    pairs = {block: (seed_runs(config, runs, variant, block), seed_runs(config, runs, baseline, block))
             for block in probed_blocks(variant)}
    # A probe run logs one accuracy per class, and every row classifies the same classes.
    classes = next((len(r.per_class) for pair in pairs.values() for side in pair for r in side
                    if r.per_class), 0)
    return decided([Row(f"block {block}", 100 / classes if classes else None, ours,
                        paper_value(variant, block), base, paper_value(baseline, block))
                    for block, (ours, base) in pairs.items()])


# ---- rendering ---------------------------------------------------------------------------

HEADER = ("probe on", "chance", "{variant} (ours)", "{variant} (paper)", "{baseline} (ours)",
          "{baseline} (paper)", "Δ ours", "interval", "verdict", "runs (seed)")
LEFT = (0, 8, 9)  # the left-aligned columns



def _spread(runs: tuple[Run, ...]) -> str:
    spread = runs_spread(list(runs))
    return MISSING if spread is None else f"{spread.mean:.2f} ± {spread.sd:.2f} ({spread.n})"


def _interval(row: Row) -> str:
    if row.decision is None:
        return MISSING
    lo, hi = row.decision.interval
    how = "paired" if row.decision.estimate.paired else "independent"
    return f"[{lo:+.2f}, {hi:+.2f}] at {100 * row.decision.level:.1f} % ({how})"


def run_links(row: Row, link) -> str:
    """"b4-r8 s0 s1 / b4-r4 s0 s1", each seed linked by `link(run, text)`."""
    def side(runs: tuple[Run, ...]) -> str:
        return " ".join(link(r, f"s{r.tags.get('seed', '?')}") for r in runs) or MISSING
    return f"{side(row.ours)} / {side(row.base)}"


def cells(row: Row, link) -> list[str]:
    return [row.label, number_text(row.chance), _spread(row.ours), number_text(row.paper), _spread(row.base),
            number_text(row.base_paper), number_text(row.difference, True), _interval(row), row.verdict,
            run_links(row, link)]


def title(config: Config, variant: str, baseline: str) -> str:
    chance = [100 / len(ROTATION_SETS[parse_variant(v)[1]]) for v in (variant, baseline)]
    return (f"{variant} vs {baseline}: non-linear probe (object classification) test accuracy, "
            f"%, final epoch, mean ± sd (n seeds) over seeds {list(config.seeds)} "
            f"({config.data.dataset}, {config.profile}); pretext chance "
            f"{chance[0]:.1f}% vs {chance[1]:.1f}%, not compared")


NOTE = ("Δ ours: the variant's mean − the baseline's; interval and verdict: the test of "
        "`reports/claims.md` (seed and test-set noise; paired on the runs' per-image "
        "predictions where both have them; Holm's correction over the blocks). holds: the "
        "variant is better, refuted: it is worse, undecided: within the noise. Paper: Gidaris et "
        "al., ICLR 2018, Tables 1-2 (CIFAR-10).")


def header(variant: str, baseline: str) -> list[str]:
    return [h.format(variant=variant, baseline=baseline) for h in HEADER]


def rich_table(config: Config, rows: list[Row], variant: str, ui: str, baseline: str = BASELINE):
    """The table for the terminal, transposed (a column per block, as few as a variant has),
    with the Markdown's cells; runs as terminal hyperlinks."""
    from rich import box
    from rich.table import Table

    from rotnet.report_render import run_url

    columns = [cells(row, lambda run, text: f"[link={run_url(run, ui)}]{text}[/link]") for row in rows]
    table = Table(title=title(config, variant, baseline), caption=NOTE, box=box.SIMPLE_HEAD)
    table.add_column(header(variant, baseline)[0])
    for column in columns:
        table.add_column(column[0], justify="right")
    for i, name in enumerate(header(variant, baseline)[1:], 1):
        table.add_row(name, *(column[i] for column in columns))
    return table


def markdown(config: Config, rows: list[Row], variant: str, ui: str, baseline: str = BASELINE) -> str:
    from rotnet.report_render import run_url

    lines = [f"# {title(config, variant, baseline)}", "", NOTE, "",
             "| " + " | ".join(header(variant, baseline)) + " |",
             "|" + "|".join("---" if i in LEFT else "--:" for i in range(len(HEADER))) + "|"]
    lines += ["| " + " | ".join(cells(row, lambda run, text: f"[{text}]({run_url(run, ui)})"))
              + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_markdown(config: Config, rows: list[Row], variant: str, out_dir: Path, ui: str) -> Path:
    from rotnet.files import atomic_write_text

    path = Path(out_dir) / f"ablation-{variant}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, markdown(config, rows, variant, ui))
    return path
