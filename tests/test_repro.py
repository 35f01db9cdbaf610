"""`rotnet repro`: DVC stages run side by side in dependency order."""

import subprocess
import sys
import threading
import time

import pytest
import yaml

from rotnet import repro


def recording_runner(fail=(), seconds=0.05):
    """A `run` that records start/end order and the largest number running at once."""
    log, lock, state = [], threading.Lock(), {"now": 0, "peak": 0}

    def run(stage, width):
        with lock:
            log.append(("start", stage))
            state.setdefault("width", {})[stage] = width
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(seconds)
        with lock:
            state["now"] -= 1
            log.append(("end", stage))
        return 1 if stage in fail else 0
    return run, log, state


DVC = [sys.executable, "-m", "dvc"]  # CI runs pytest without the venv's bin/ on PATH
DIAMOND = {"data": set(), "a": {"data"}, "b": {"data"}, "c": {"data"}, "report": {"a", "b", "c"}}


def test_schedule_runs_each_stage_after_its_dependencies_within_jobs():
    run, log, state = recording_runner()
    assert repro.schedule(DIAMOND, 2, run) == []
    ended = [stage for event, stage in log if event == "end"]
    assert sorted(ended) == sorted(DIAMOND)
    for stage, deps in DIAMOND.items():
        start = log.index(("start", stage))
        assert all(log.index(("end", dep)) < start for dep in deps), stage
    assert state["peak"] == 2
    # data and report run alone (all cores); a and b start two at a time
    assert {s: state["width"][s] for s in ("data", "a", "b", "report")} == {
        "data": 1, "a": 2, "b": 2, "report": 1}


def test_schedule_starts_first_the_ready_stage_most_of_the_pipeline_waits_on():
    # "z-root" holds up two stages, "a-leaf" none: z-root first although a-leaf sorts first
    graph = {"a-leaf": set(), "z-root": set(), "mid": {"z-root"}, "end": {"mid"}}
    assert repro.downstream_counts(graph) == {"a-leaf": 0, "z-root": 2, "mid": 1, "end": 0}
    run, log, _ = recording_runner(seconds=0)
    assert repro.schedule(graph, 1, run) == []
    assert [stage for event, stage in log if event == "start"] == ["z-root", "mid", "a-leaf", "end"]


def test_schedule_one_job_is_sequential():
    run, _, state = recording_runner()
    repro.schedule(DIAMOND, 1, run)
    assert state["peak"] == 1


def test_a_failure_starts_nothing_new_and_is_returned():
    run, log, _ = recording_runner(fail={"data"})
    assert repro.schedule(DIAMOND, 3, run) == ["data"]
    assert [stage for _, stage in log] == ["data", "data"]


def test_unknown_dependency_and_cycle_are_errors():
    run, _, _ = recording_runner()
    with pytest.raises(ValueError, match="not in the graph"):
        repro.schedule({"a": {"missing"}}, 2, run)
    with pytest.raises(ValueError, match="cycle"):
        repro.schedule({"a": {"b"}, "b": {"a"}}, 2, run)


def test_cpu_threads_are_shared_out_between_jobs():
    assert repro.stage_environment(2, cores=2)["OMP_NUM_THREADS"] == "1"
    assert repro.stage_environment(1, cores=2)["OMP_NUM_THREADS"] == "2"
    assert repro.stage_environment(4, cores=2)["OMP_NUM_THREADS"] == "1"


def write_pipeline(root):
    """A three-stage DVC pipeline (two independent stages, then one that joins them)."""
    slow = "import sys,time; time.sleep(1); open(sys.argv[1],'w').write(sys.argv[2])"
    stages = {
        "left": {"cmd": f'{sys.executable} -c "{slow}" left.txt L', "outs": ["left.txt"]},
        "right": {"cmd": f'{sys.executable} -c "{slow}" right.txt R', "outs": ["right.txt"]},
        "join": {"cmd": "cat left.txt right.txt > joined.txt",
                 "deps": ["left.txt", "right.txt"], "outs": ["joined.txt"]},
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    for command in (["git", "init", "-q"], DVC + ["init", "-q"]):
        subprocess.run(command, cwd=root, check=True)


def test_rotnet_repro_runs_a_real_pipeline_through_dvc(tmp_path):
    write_pipeline(tmp_path)
    cli = [sys.executable, "-m", "rotnet.cli", "repro", "--jobs", "2"]
    first = subprocess.run(cli, cwd=tmp_path, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / "joined.txt").read_text() == "LR"
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"left", "right", "join"}
    status = subprocess.run(DVC + ["status"], cwd=tmp_path, capture_output=True, text=True)
    assert "up to date" in status.stdout
    again = subprocess.run(cli, cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0 and "Running stage" not in again.stdout


def test_rotnet_repro_without_a_pipeline_is_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rotnet.cli", "repro"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--file dvc.yaml" in result.stderr
