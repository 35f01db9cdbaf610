"""`dvc repro` with independent stages run side by side (`rotnet repro --jobs N`).

DVC runs a pipeline's stages one after another. Its documentation allows running
independent branches as separate `dvc repro` processes, since each releases the repository
lock while its stage's command runs. This module does that for a whole dvc.yaml: every
stage runs as `dvc repro --single-item STAGE` once all the stages it depends on have
finished, up to `jobs` at a time; DVC itself still decides whether a stage changed (an
unchanged one is skipped) and records it in dvc.lock, each process waiting its turn for
DVC's lock (`--wait-for-lock`) around its command.

On a CPU the cores are shared out: each stage gets `cores // jobs` threads (all of them
where it runs alone), so while one stage starts up (imports, MLflow, data: one core) the
other trains, instead of a core idling through every start-up. On a GPU, stages that each use a
fraction of the chip run side by side.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable

from rotnet.warm import warm_server

# DVC of this interpreter: found even where its bin/ is not on PATH (e.g. `.venv/bin/rotnet`),
# with dvc.lock read by the C parser (rotnet.dvc_cli)
DVC = [sys.executable, "-m", "rotnet.dvc_cli"]


def stage_graph(dvcfile: str = "dvc.yaml") -> dict[str, set[str]]:
    """Each stage of `dvcfile` with the stages of the same file it depends on."""
    from dvc.repo import Repo  # the library imports without DVC; only this command needs it

    with Repo(".") as repo:
        graph = repo.index.graph
        inside = {stage for stage in graph.nodes if os.path.basename(stage.path) == dvcfile
                  and os.path.dirname(os.path.abspath(stage.path)) == os.getcwd()}
        # DVC's edges point from a stage to the stages whose outputs it depends on.
        return {stage.addressing: {dep.addressing for dep in graph.successors(stage) if dep in inside}
                for stage in inside}


def downstream_counts(graph: dict[str, set[str]]) -> dict[str, int]:
    """How many stages of `graph` depend on each stage, directly or through others."""
    dependents: dict[str, set[str]] = {stage: set() for stage in graph}
    for stage, deps in graph.items():
        for dep in deps & graph.keys():
            dependents[dep].add(stage)

    def below(stage: str, seen: set[str]) -> set[str]:
        for child in dependents[stage] - seen:
            seen.add(child)
            below(child, seen)
        return seen

    return {stage: len(below(stage, set())) for stage in graph}


def schedule(graph: dict[str, set[str]], jobs: int, run: Callable[[str, int], int]) -> list[str]:
    """Run every stage of `graph` once its dependencies succeeded, `jobs` at a time, in a
    stable order: of the ready ones, those with the most stages downstream first (they hold
    up the most; on the quick profile this keeps a lone long stage off the end), then by
    name. `run(stage, width)` is told how many stages will run side by side as it starts (at
    most `jobs`: fewer at the pipeline's narrow points, so a lone stage can take every core).
    Returns the stages that failed; after a failure nothing new starts, and the running ones
    finish."""
    unknown = {dep for deps in graph.values() for dep in deps} - graph.keys()
    if unknown:
        raise ValueError(f"stages depend on stages not in the graph: {sorted(unknown)}")
    downstream = downstream_counts(graph)
    done: set[str] = set()
    failed: list[str] = []
    running: dict[Future, str] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while True:
            started = done | set(running.values()) | set(failed)
            ready = sorted((s for s in graph if s not in started and graph[s] <= done),
                           key=lambda s: (-downstream[s], s))
            width = min(jobs, len(running) + len(ready))
            while ready and not failed and len(running) < jobs:
                stage = ready.pop(0)
                running[pool.submit(run, stage, width)] = stage
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                stage = running.pop(future)
                (done.add if future.result() == 0 else failed.append)(stage)
    never = [s for s in graph if s not in done and s not in failed]
    if never and not failed:  # only a cycle leaves stages unrun without a failure
        raise ValueError(f"stages never became ready (a cycle?): {sorted(never)}")
    return failed


def stage_environment(width: int, cores: int | None = None) -> dict[str, str]:
    """The environment of one of `width` stage processes running side by side: its share
    of the CPU cores as threads."""
    cores = cores or os.cpu_count() or 1
    threads = str(max(1, cores // width))
    return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
            "PYTHONUNBUFFERED": "1"}


_print_lock = threading.Lock()


def dvc_stage_runner(dvcfile: str = "dvc.yaml",
                     extra_env: dict[str, str] | None = None) -> Callable[[str, int], int]:
    """A `run` for `schedule`: one stage through `dvc repro --single-item`, waiting while
    another process holds DVC's lock, its output prefixed with the stage name; `extra_env`
    (e.g. the warm server's address) goes into its environment."""

    def run(stage: str, width: int) -> int:
        env = {**stage_environment(width), **(extra_env or {})}
        target = stage if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage}"
        command = [*DVC, "--wait-for-lock", "repro", "--single-item", target]
        start = time.perf_counter()
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) as proc:
            for line in proc.stdout:
                with _print_lock:
                    print(f"[{stage}] {line}", end="", flush=True)
        seconds = time.perf_counter() - start  # DVC's start and bookkeeping included
        with _print_lock:
            print(f"[{stage}] {'finished' if proc.returncode == 0 else 'failed'} in "
                  f"{seconds:.1f} s", flush=True)
        return proc.returncode

    return run


def reproduce(dvcfile: str, jobs: int, echo: Callable[[str], object] = print,
              warm: bool = True) -> list[str]:
    """Every stage of `dvcfile` through DVC, `jobs` at a time; returns the failed stages.
    `warm`: each stage runs in a fork of a server that has imported torch and MLflow once
    (`rotnet.warm`), instead of importing them itself."""
    graph = stage_graph(dvcfile)
    echo(f"{len(graph)} stages, up to {jobs} at a time, each with its share of the CPU cores "
         f"({stage_environment(jobs)['OMP_NUM_THREADS']} thread(s); all where it runs alone)"
         + ("; started warm" if warm else ""))
    with warm_server() if warm else contextlib.nullcontext({}) as server_env:
        return schedule(graph, jobs, dvc_stage_runner(dvcfile, server_env))
