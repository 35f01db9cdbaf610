"""Where the wall time of `dvc repro` goes, stage by stage.

    python bench/dag_time.py [--jobs N] [--cold]
    python bench/dag_time.py --log FILE    # the same split of a run already made (`make run | tee FILE`)

Runs `rotnet repro --jobs N` in the current directory, with its params.yaml (independent
stages side by side; each stage started warm, in a fork of a server that imported torch and
MLflow once, or with `--cold` in a process of its own as plain `dvc repro` starts it),
stamps the moment each stage starts and prints its last line, then reads the MLflow runs each stage made (tag `stage`)
and splits every stage's wall time into training (the epochs' train seconds, and a random
backbone's BatchNorm calibration), evaluation (the epochs' test seconds), both from the runs,
and the fixed rest: process start and imports, data loading, MLflow connection,
checkpoint/metric writes, DVC's bookkeeping. Prints one row per stage and the
totals; with several jobs the stages overlap, so their walls add up to more than the total.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

STAGE_LINE = re.compile(r"^\[([^\]]+)\] Running stage ")
# `rotnet repro`'s last line per stage: its wall from DVC's start to its exit
STAGE_END = re.compile(r"^\[([^\]]+)\] (?:finished|failed) in ([0-9.]+) s$")


def stage_walls(lines, echo: bool = False) -> dict[str, float]:
    """Wall seconds of each stage that ran (unchanged ones are skipped), from `rotnet
    repro`'s output lines."""
    ran: set[str] = set()
    walls: dict[str, float] = {}
    for line in lines:
        if echo:
            sys.stdout.write(line)
        if match := STAGE_LINE.match(line):
            ran.add(match.group(1))
        elif (match := STAGE_END.match(line.rstrip("\n"))) and match.group(1) in ran:
            walls[match.group(1)] = float(match.group(2))
    return walls


def timed_repro(command: list[str]) -> tuple[dict[str, float], float]:
    """Wall seconds of each stage that ran and of the whole run."""
    begin = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        walls = stage_walls(proc.stdout, echo=True)
    total = time.perf_counter() - begin
    if proc.returncode:
        sys.exit(f"{' '.join(command)} failed with exit code {proc.returncode}")
    return walls, total


def run_seconds(stage: str) -> tuple[float, float, int]:
    """The training seconds (epochs, BatchNorm calibration) and evaluation seconds summed over
    the finished runs of `stage`, and how many runs that is."""
    from rotnet import tracking

    train, test, runs = 0.0, 0.0, 0
    for run in tracking.search_runs(f"tags.stage = '{stage}' and attributes.status = 'FINISHED'"):
        runs += 1
        # a random backbone's BatchNorm calibration is the method's work, as an epoch is
        train += float(run.data.tags.get("calibration_seconds", 0.0))
        train += sum(value for _, value in tracking.metric_history(run.info.run_id, "epoch_seconds"))
        test += sum(value for _, value in tracking.metric_history(run.info.run_id, "eval_seconds"))
    return train, test, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="stages side by side (default 2)")
    parser.add_argument("--cold", action="store_true",
                        help="every stage imports torch and MLflow itself (as plain `dvc repro`)")
    parser.add_argument("--log", help="split the stages of this saved `rotnet repro` output "
                        "instead of running (the whole run's time is then not known)")
    args = parser.parse_args()
    if args.log:
        with open(args.log, encoding="utf-8", errors="replace") as lines:
            walls, total = stage_walls(lines), float("nan")
    else:
        command = ["rotnet", "repro", "--jobs", str(args.jobs), "--cold" if args.cold else "--warm"]
        walls, total = timed_repro(command)
    print(f"\n{'stage':<34}{'wall s':>8}{'train s':>9}{'eval s':>8}{'fixed s':>9}{'runs':>6}")
    sums = {"wall": 0.0, "train": 0.0, "eval": 0.0, "fixed": 0.0}
    fixed_by_stage, training = {}, []
    for stage, wall in walls.items():
        train, test, runs = run_seconds(stage)
        # A stage without epochs (data, subsets, attention, report) is all "fixed".
        fixed = fixed_by_stage[stage] = max(0.0, wall - train - test)
        if train > 0:
            training.append(fixed)
        for key, value in (("wall", wall), ("train", train), ("eval", test), ("fixed", fixed)):
            sums[key] += value
        print(f"{stage:<34}{wall:>8.1f}{train:>9.1f}{test:>8.1f}{fixed:>9.1f}{runs:>6}")
    print(f"{'sum over stages':<34}{sums['wall']:>8.1f}{sums['train']:>9.1f}{sums['eval']:>8.1f}"
          f"{sums['fixed']:>9.1f}")
    count = max(1, len(walls))
    worst = max(fixed_by_stage, key=fixed_by_stage.get, default="-")
    how = f"from {args.log}" if args.log else f"{args.jobs} at a time, {'cold' if args.cold else 'warm'}"
    print(f"whole run {total:.1f} s; {len(walls)} stages, {how}")
    print(f"fixed cost per stage: mean {sums['fixed'] / count:.1f} s, most "
          f"{fixed_by_stage.get(worst, 0):.1f} s ({worst})")
    if training:
        print(f"fixed cost per training stage: mean {sum(training) / len(training):.1f} s, "
              f"median {sorted(training)[len(training) // 2]:.1f} s, most {max(training):.1f} s "
              f"({len(training)} stages)")
    print(f"evaluation {100 * sums['eval'] / max(sums['wall'], 1e-9):.1f} % and fixed costs "
          f"{100 * sums['fixed'] / max(sums['wall'], 1e-9):.1f} % of the stages' summed time")


if __name__ == "__main__":
    main()
