"""Where the wall time of `dvc repro` goes, stage by stage.

    python bench/dag_time.py [--dry] [-- extra dvc repro arguments]

Runs `dvc repro` (in the current directory, with its params.yaml), stamps the moment each
stage starts, then reads the MLflow runs each stage made (tag `stage`) and splits every
stage's wall time into training (the epochs' train + test seconds, from the runs' metrics)
and the fixed rest: process start and imports, data loading, MLflow connection,
checkpoint/metric writes. Prints one row per stage and the totals.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

STAGE_LINE = re.compile(r"Running stage '([^']+)'")


def timed_repro(extra: list[str]) -> tuple[dict[str, float], float]:
    """Wall seconds per stage (start to the next stage's start) and the whole run's."""
    starts: list[tuple[str, float]] = []
    begin = time.perf_counter()
    with subprocess.Popen(["dvc", "repro", *extra], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            match = STAGE_LINE.search(line)
            if match:
                starts.append((match.group(1), time.perf_counter()))
    end = time.perf_counter()
    if proc.returncode:
        sys.exit(f"dvc repro failed with exit code {proc.returncode}")
    bounds = [t for _, t in starts[1:]] + [end]
    return {name: stop - start for (name, start), stop in zip(starts, bounds)}, end - begin


def training_seconds(stage: str) -> tuple[float, int]:
    """Sum of the epochs' train + test seconds over the finished runs of `stage`."""
    from rotnet import tracking

    seconds, runs = 0.0, 0
    for run in tracking.search_runs(f"tags.stage = '{stage}' and attributes.status = 'FINISHED'"):
        runs += 1
        for key in ("epoch_seconds", "eval_seconds"):
            seconds += sum(value for _, value in tracking.metric_history(run.info.run_id, key))
    return seconds, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repro_args", nargs="*", help="passed on to dvc repro (after --)")
    args = parser.parse_args()
    walls, total = timed_repro(args.repro_args)
    print(f"\n{'stage':<34}{'wall s':>9}{'train s':>9}{'fixed s':>9}{'runs':>6}")
    fixed_total = 0.0
    for stage, wall in walls.items():
        train, runs = training_seconds(stage)
        fixed = max(0.0, wall - train)
        fixed_total += fixed
        print(f"{stage:<34}{wall:>9.1f}{train:>9.1f}{fixed:>9.1f}{runs:>6}")
    print(f"{'TOTAL':<34}{total:>9.1f}{total - fixed_total:>9.1f}{fixed_total:>9.1f}")
    print(f"fixed per-stage costs: {100 * fixed_total / total:.1f} % of the wall time "
          f"({len(walls)} stages, {fixed_total / max(1, len(walls)):.1f} s each on average)")


if __name__ == "__main__":
    main()
