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

from rotnet.ablation_table import Row, comparison_rows, rich_table, write_markdown
from rotnet.config import Config
from rotnet.errors import RotnetError
from rotnet.registry import (BASELINE, VARIANTS, baseline_stages, parse_variant, variant_name,
                             variant_stages)
from rotnet.repro import DVC
from rotnet.stage_io import ablation_group, stage_config
from rotnet.run_groups import gather
from rotnet.tracking import Tracker

ABLATION_PIPELINE = "ablation/dvc.yaml"
REPORTS = Path("reports")


def in_main_pipeline(variant: str) -> bool:
    return variant in VARIANTS


def main_pipeline_stages(variant: str, seeds=(0,)) -> list[str]:
    """The main dvc.yaml stages of `variant` for every seed of `seeds` (its pretraining and its
    probe stage, which probes every block the registry lists), then the baseline's."""
    own = [stage for seed in seeds for stage in variant_stages(variant, seed)]
    return own + [stage for seed in seeds for stage in baseline_stages(seed) if stage not in own]


def repro_command(variant: str, seeds=(0,)) -> list[str]:
    return [*DVC, "repro", *main_pipeline_stages(variant, seeds)]


def experiment_command(blocks: int, rotations: str, name: str, queue: bool = False,
                       seeds=(0,)) -> list[str]:
    """`dvc exp run` of ablation/dvc.yaml (which trains the variant once per seed of params'
    `seeds`) for a variant outside the main DAG, plus the baseline's main-pipeline stages of
    every seed (up to date ones are skipped)."""
    return [*DVC, "exp", "run", *(["--queue"] if queue else []), "-n", name,
            "-S", f"ablation.blocks={blocks}", "-S", f"ablation.rotations='{rotations}'",
            ABLATION_PIPELINE, *(stage for seed in seeds for stage in baseline_stages(seed))]


def dvc_command(variant: str, queue: bool = False, seeds=(0,)) -> list[str]:
    """How DVC runs `variant` for every seed of `seeds` (params' `seeds`): reproduced in the
    main pipeline, else as a named experiment."""
    if in_main_pipeline(variant):
        return repro_command(variant, seeds)
    blocks, rotations = parse_variant(variant)
    return experiment_command(blocks, rotations, experiment_name(variant), queue, seeds)


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


def gather_runs(config: Config, variant: str, rows: list[Row], table: Path) -> list[str]:
    """Nest the variant's runs (its probes and their pretraining) under the ablation's MLflow
    parent run of their seed and attach the table there. The ablation stage's runs are
    already nested; a main-pipeline variant's were made by `dvc repro`, outside any parent.
    Returns the parent runs' ids (none for the baseline, or without runs)."""
    if variant == BASELINE:  # its runs belong to the whole pipeline (Tables 1-3, Figure 5)
        return []
    by_seed: dict[int, set[str]] = {}
    for probe in (run for row in rows for run in row.ours):
        ids = by_seed.setdefault(int(probe.tags.get("seed", 0)), set())
        ids |= {probe.run_id} | ({probe.tags["pretrain_run_id"]} if probe.tags.get("pretrain_run_id") else set())
    tracker = Tracker()
    return [gather(tracker.open_group(ablation_group(config.with_seed(seed), variant)), sorted(ids),
                   [table]) for seed, ids in sorted(by_seed.items())]


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
    command = dvc_command(variant, queue, config.seeds)
    console.print("$ " + " ".join(command), highlight=False, soft_wrap=True)
    if subprocess.run(command).returncode != 0:
        raise RotnetError("the DVC run failed (see its output above)")
    if queue and not in_main_pipeline(variant):
        return
    from rotnet.report_render import ui_base

    rows, ui = comparison_rows(config, variant, BASELINE), ui_base()
    Console().print(rich_table(config, rows, variant, ui, BASELINE))
    table = write_markdown(config, rows, variant, REPORTS, ui)
    console.print(f"wrote {table}")
    try:
        parents = gather_runs(config, variant, rows, table)
    except RotnetError as err:  # the table is written; only its MLflow grouping is missing
        console.print(f"warning: runs not grouped in MLflow: {err}", highlight=False)
    else:
        if parents:
            console.print("MLflow: the variant's runs and the table under parent run(s) "
                          + ", ".join(parents), highlight=False)
