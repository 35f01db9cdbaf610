"""`rotnet ablate`: how one pretraining variant is reproduced through DVC, and the table that
compares it with the baseline RotNet on the downstream task.

A variant of the main pipeline (a `pretrain@<variant>` stage of dvc.yaml) is reproduced with
`dvc repro` of its stages, which skips whatever is already up to date, so an ablation never
retrains what the pipeline already has. Only a variant outside the main DAG runs the stage of
ablation/dvc.yaml, as a DVC experiment named after the variant.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from rotnet.config import Config
from rotnet.errors import RotnetError
from rotnet.registry import (BASELINE, ROTATION_SETS, VARIANTS, baseline_stages, parse_variant,
                             probe_blocks, variant_name, variant_stages)
from rotnet.repro import DVC
from rotnet.report import PAPER, Run, expected_fingerprint, finished_runs, latest
from rotnet.stage_io import ablation_group, stage_config
from rotnet.tracking import Tracker

ABLATION_PIPELINE = "ablation/dvc.yaml"
REPORTS = Path("reports")
MISSING = "–"


def in_main_pipeline(variant: str) -> bool:
    return variant in VARIANTS


def main_pipeline_stages(variant: str, seed: int = 0) -> list[str]:
    """The main dvc.yaml stages of `variant` for `seed` (its pretraining and its probe stage,
    which probes every block the registry lists), then the baseline's."""
    own = variant_stages(variant, seed)
    return own + [stage for stage in baseline_stages(seed) if stage not in own]


def repro_command(variant: str, seed: int = 0) -> list[str]:
    return [*DVC, "repro", *main_pipeline_stages(variant, seed)]


def experiment_command(blocks: int, rotations: str, name: str, queue: bool = False,
                       seed: int = 0) -> list[str]:
    """`dvc exp run` of ablation/dvc.yaml for a variant outside the main DAG, plus the
    baseline's main-pipeline stages (up to date ones are skipped)."""
    return [*DVC, "exp", "run", *(["--queue"] if queue else []), "-n", name,
            "-S", f"ablation.blocks={blocks}", "-S", f"ablation.rotations='{rotations}'",
            ABLATION_PIPELINE, *baseline_stages(seed)]


def dvc_command(variant: str, queue: bool = False, seed: int = 0) -> list[str]:
    """How DVC runs `variant` (the main pipeline's stages of `seed`, params' runtime.seed):
    reproduced in the main pipeline, else as a named experiment."""
    if in_main_pipeline(variant):
        return repro_command(variant, seed)
    blocks, rotations = parse_variant(variant)
    return experiment_command(blocks, rotations, experiment_name(variant), queue, seed)


def existing_experiment_names() -> set[str]:
    """The names of the DVC experiments in this repository (refs/exps/<base>/<name>)."""
    out = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
                         capture_output=True, text=True)
    return {ref.rsplit("/", 1)[-1] for ref in out.stdout.split()}


def unique_name(base: str, taken: set[str]) -> str:
    """`base`, or `base-2`, `base-3`, ... : DVC refuses a name an experiment already has."""
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def experiment_name(variant: str) -> str:
    return unique_name(f"ablate-{variant}", existing_experiment_names())


# ---- the comparison table -------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    label: str
    chance: float | None  # % a guess scores on this row's task
    ours: Run | None
    paper: float | None  # the paper's number for the variant (Tables 1-2), where it has one
    base: Run | None
    base_paper: float | None

    @property
    def difference(self) -> float | None:
        return self.ours.value - self.base.value if self.ours and self.base else None


def paper_value(variant: str, block: int) -> float | None:
    """The paper's non-linear probe accuracy on `block` of `variant` (Table 1, else Table 2)."""
    per_block = PAPER["table1"].get(variant)
    if per_block and block <= len(per_block):
        return per_block[block - 1]
    return PAPER["table2"].get(variant) if block == 2 else None


def probed_blocks(variant: str) -> list[int]:
    """The blocks `rotnet ablate` probes: those dvc.yaml probes for a main-pipeline variant
    (block 2 of a rotation variant, as in Table 2), else every block (ablation/dvc.yaml)."""
    if in_main_pipeline(variant):
        return sorted(probe_blocks(variant))
    return list(range(1, parse_variant(variant)[0] + 1))


def comparison_rows(config: Config, variant: str, baseline: str = BASELINE) -> list[Row]:
    """One row per probed block of `variant`: the object-classification accuracy of a
    non-linear probe on it, the variant's and the baseline's (same task, same chance level);
    only runs of the protocol `config` states count, as in the report."""
    runs = [r for r in finished_runs(config.profile, config.data.dataset) if "figure5" not in r.tags]

    def run_of(name: str, block: int) -> Run | None:
        want = {"method": "nonlinear", "block": str(block), "variant": name}
        return latest(runs, fingerprint=expected_fingerprint(config, want), **want)

    pairs = {block: (run_of(variant, block), run_of(baseline, block))
             for block in probed_blocks(variant)}
    # A probe run logs one accuracy per class, and every row classifies the same classes.
    classes = next((len(r.per_class) for pair in pairs.values() for r in pair if r and r.per_class), 0)
    return [Row(f"block {block}", 100 / classes if classes else None, ours,
                paper_value(variant, block), base, paper_value(baseline, block))
            for block, (ours, base) in pairs.items()]


HEADER = ("probe on", "chance", "{variant}", "paper", "{baseline}", "paper", "Δ", "runs")


def _num(value: float | None, signed: bool = False) -> str:
    return MISSING if value is None else (f"{value:+.2f}" if signed else f"{value:.2f}")


def _cells(row: Row, id_length: int = 32) -> list[str]:
    runs = " / ".join(r.run_id[:id_length] if r else MISSING for r in (row.ours, row.base))
    return [row.label, _num(row.chance), _num(row.ours and row.ours.value), _num(row.paper),
            _num(row.base and row.base.value), _num(row.base_paper), _num(row.difference, True), runs]


def title(config: Config, variant: str, baseline: str) -> str:
    chance = [100 / len(ROTATION_SETS[parse_variant(v)[1]]) for v in (variant, baseline)]
    return (f"{variant} vs {baseline}: non-linear probe (object classification) test accuracy, "
            f"%, final epoch ({config.data.dataset}, {config.profile}); pretext chance "
            f"{chance[0]:.1f}% vs {chance[1]:.1f}%, not compared")


def header(variant: str, baseline: str) -> list[str]:
    return [h.format(variant=variant, baseline=baseline) for h in HEADER]


def rich_table(config: Config, rows: list[Row], variant: str, baseline: str = BASELINE):
    from rich.table import Table

    table = Table(title=title(config, variant, baseline))
    for i, name in enumerate(header(variant, baseline)):
        table.add_column(name, justify="left" if i in (0, 7) else "right")
    for row in rows:
        table.add_row(*_cells(row, id_length=8))  # the full ids are in the markdown file
    return table


def markdown(config: Config, rows: list[Row], variant: str, baseline: str = BASELINE) -> str:
    lines = [f"# {title(config, variant, baseline)}", "",
             "Paper: Gidaris et al., ICLR 2018, Tables 1-2 (CIFAR-10); runs: MLflow run ids "
             f"({variant} / {baseline}).", "",
             "| " + " | ".join(header(variant, baseline)) + " |",
             "|" + "|".join(["---"] + ["--:"] * 6 + ["---"]) + "|"]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_markdown(config: Config, rows: list[Row], variant: str, out_dir: Path = REPORTS) -> Path:
    from rotnet.files import atomic_write_text

    path = Path(out_dir) / f"ablation-{variant}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, markdown(config, rows, variant))
    return path


def gather_runs(config: Config, variant: str, rows: list[Row], table: Path) -> str | None:
    """Nest the variant's runs (its probes and their pretraining) under the ablation's MLflow
    parent run and attach the table there. The ablation stage's runs are already nested; a
    main-pipeline variant's were made by `dvc repro`, outside any parent. None: no runs."""
    if variant == BASELINE:  # its runs belong to the whole pipeline (Tables 1-3, Figure 5)
        return None
    probes = [row.ours for row in rows if row.ours]
    ids = {r.run_id for r in probes} | {r.tags["pretrain_run_id"] for r in probes
                                         if r.tags.get("pretrain_run_id")}
    return Tracker().gather(ablation_group(config, variant), sorted(ids), table) if ids else None


def run(blocks: int | None, rotations: str | None, queue: bool, console) -> None:
    """`rotnet ablate`: the variant (params.yaml's `ablation` unless given) through DVC, then
    its table (printed, written under reports/) and its runs grouped in MLflow; `console`
    prints the progress lines."""
    from rich.console import Console

    if not Path(ABLATION_PIPELINE).exists():
        raise RotnetError("run `rotnet ablate` from the project root (ablation/dvc.yaml not found)")
    config = stage_config()
    variant = variant_name(blocks or config.ablation.blocks, rotations or config.ablation.rotations)
    parse_variant(variant)  # an unknown variant: exit 2 before DVC starts
    command = dvc_command(variant, queue, config.runtime.seed)
    console.print("$ " + " ".join(command), highlight=False, soft_wrap=True)
    if subprocess.run(command).returncode != 0:
        raise RotnetError("the DVC run failed (see its output above)")
    if queue and not in_main_pipeline(variant):
        return
    rows = comparison_rows(config, variant, BASELINE)
    Console().print(rich_table(config, rows, variant, BASELINE))
    table = write_markdown(config, rows, variant)
    console.print(f"wrote {table}")
    try:
        parent = gather_runs(config, variant, rows, table)
    except RotnetError as err:  # the table is written; only its MLflow grouping is missing
        console.print(f"warning: runs not grouped in MLflow: {err}", highlight=False)
    else:
        if parent:
            console.print(f"MLflow: the variant's runs and the table under parent run {parent}")
