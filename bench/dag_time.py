"""Where the wall time of `dvc repro` goes, stage by stage.

    python bench/dag_time.py [--jobs N] [-- extra dvc repro arguments]

Runs `dvc repro` (in the current directory, with its params.yaml), or with `--jobs N`
`rotnet repro --jobs N` (independent stages side by side), stamps the moment each stage
starts and prints its last line, then reads the MLflow runs each stage made (tag `stage`)
and splits every stage's wall time into training (the epochs' train + test seconds, from
the runs' metrics) and the fixed rest: process start and imports, data loading, MLflow
connection, checkpoint/metric writes, DVC's bookkeeping. Prints one row per stage and the
totals; with several jobs the stages overlap, so their walls add up to more than the total.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

STAGE_LINE = re.compile(r"Running stage '([^']+)'")
PREFIX = re.compile(r"^\[([^\]]+)\] ")  # `rotnet repro` prefixes each line with its stage


def timed_repro(command: list[str]) -> tuple[dict[str, float], float]:
    """Wall seconds per stage and the whole run's. A stage runs from its `Running stage`
    line to its last prefixed line (`rotnet repro`) or to the next stage's start (`dvc repro`)."""
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    current = None
    begin = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            now = time.perf_counter()
            match = STAGE_LINE.search(line)
            if match:
                if current and not PREFIX.match(line):
                    ends[current] = now
                current = match.group(1)
                starts[current] = now
            prefixed = PREFIX.match(line)
            if prefixed and prefixed.group(1) in starts:
                ends[prefixed.group(1)] = now
    end = time.perf_counter()
    if proc.returncode:
        sys.exit(f"{' '.join(command)} failed with exit code {proc.returncode}")
    return {name: ends.get(name, end) - start for name, start in starts.items()}, end - begin


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
    parser.add_argument("--jobs", type=int, default=1,
                        help="run through `rotnet repro --jobs N` (default: plain `dvc repro`)")
    parser.add_argument("repro_args", nargs="*", help="passed on to dvc repro (after --)")
    args = parser.parse_args()
    command = (["rotnet", "repro", "--jobs", str(args.jobs)] if args.jobs > 1
               else ["dvc", "repro", *args.repro_args])
    walls, total = timed_repro(command)
    print(f"\n{'stage':<34}{'wall s':>9}{'train s':>9}{'fixed s':>9}{'runs':>6}")
    fixed_total, train_total = 0.0, 0.0
    for stage, wall in walls.items():
        train, runs = training_seconds(stage)
        fixed = max(0.0, wall - train)
        fixed_total += fixed
        train_total += train
        print(f"{stage:<34}{wall:>9.1f}{train:>9.1f}{fixed:>9.1f}{runs:>6}")
    print(f"{'TOTAL (wall)':<34}{total:>9.1f}{train_total:>9.1f}{fixed_total:>9.1f}")
    print(f"{len(walls)} stages, {args.jobs} at a time; fixed costs {fixed_total / max(1, len(walls)):.1f} s "
          f"per stage on average, {100 * fixed_total / (fixed_total + train_total):.1f} % of the "
          f"stages' summed time")


if __name__ == "__main__":
    main()
