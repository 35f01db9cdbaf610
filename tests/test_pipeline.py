"""The DVC pipeline end to end on the smoke profile, in a throw-away copy of the repository,
run as `make run` runs it (`rotnet repro`, each stage through DVC): every table and figure
exists, every table cell links to a finished MLflow run, a second, plain `dvc repro` does
nothing, and a probe parameter change reruns only what depends on it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from helpers import copy_project, run_command as run
from rotnet.stage_io import RUN_METRICS

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git + DVC copy of the working tree (tracked and untracked, not ignored files)."""
    dest = tmp_path_factory.mktemp("project")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "ROTNET_HOME": str(dest),
           "MLFLOW_TRACKING_URI": f"sqlite:///{dest / 'mlflow.db'}", "PYTHONPATH": str(dest)}
    copy_project(dest, env)
    return dest, env


@pytest.mark.slow
def test_smoke_pipeline_end_to_end(project):
    dest, env = project
    # `make run`'s way: every stage through DVC, two at a time, started warm
    repro = run([str(BIN / "rotnet"), "repro", "--jobs", "2"], dest, env)
    # Each stage reports its progress (off a terminal: a line per epoch).
    assert "pretrain@b4-r4-0 epoch 1/" in repro.stdout + repro.stderr

    reports = dest / "reports"
    for name in ("table1.md", "table2.md", "table3.md", "table9.md", "figure5a.png", "figure5b.png"):
        assert (reports / name).is_file() and (reports / name).stat().st_size > 0, name
    for name in ("table1.md", "table2.md", "table3.md"):
        assert "paper" in (reports / name).read_text().lower()

    # Every table cell and figure point names a run that exists and finished.
    cells = json.loads((reports / "runs.json").read_text())
    run_ids = sorted({c["run_id"] for c in _walk(cells) if c.get("run_id")})
    assert len(run_ids) >= 15
    check = ("import sys, mlflow\n"
             "c = mlflow.tracking.MlflowClient()\n"
             "for rid in sys.argv[1:]:\n"
             "    r = c.get_run(rid)\n"
             "    assert r.info.status == 'FINISHED', (rid, r.info.status)\n"
             "    assert r.data.tags['profile'] == 'smoke'\n")
    run([sys.executable, "-c", check, *run_ids], dest, env)

    # DVC metrics: the report's summary only, one short key per cell, no warning about the
    # per-run files or the ablation stage's, which only `rotnet ablate` makes.
    shown = run(["dvc", "metrics", "show", "--json"], dest, env)
    assert "failed to load" not in shown.stderr, shown.stderr
    files = json.loads(shown.stdout)[""]["data"]
    assert set(files) == {"reports/metrics.json"}
    summary = files["reports/metrics.json"]["data"]
    assert set(summary) == {"table1", "table2", "table3"} and "B2" in summary["table1"]["b4"]
    # the per-run files, as the report stage reads them (the attention stage's measures are
    # per network, under metrics/attention/)
    run_files = [p for p in (dest / "metrics").rglob("*.json") if "attention" not in p.parts]
    assert {tuple(sorted(json.loads(p.read_text()))) for p in run_files} == {tuple(sorted(RUN_METRICS))}

    # Each probe is trained once: no two finished probe runs share a fingerprint (Figure 5a's
    # last snapshot is Table 1's b4-r4 block-2 run).
    check_once = ("import collections, mlflow\n"
                  "c = mlflow.tracking.MlflowClient()\n"
                  "e = c.get_experiment_by_name('rotnet')\n"
                  "runs = c.search_runs([e.experiment_id], \"tags.task = 'probe'\", max_results=1000)\n"
                  "twice = [f for f, n in collections.Counter(r.data.tags['fingerprint'] for r in runs).items() if n > 1]\n"
                  "assert runs and not twice, twice\n")
    run([sys.executable, "-c", check_once], dest, env)

    # Plain DVC sees the same pipeline: a second repro is a no-op.
    again = run(["dvc", "repro"], dest, env)
    assert "Running stage" not in again.stdout, again.stdout
    status = json.loads(run(["dvc", "status", "--json", "dvc.yaml"], dest, env).stdout or "{}")
    assert status == {}, status

    # The report regenerates byte for byte from MLflow alone.
    before = {p.name: p.read_bytes() for p in reports.iterdir() if p.is_file()}
    run([str(BIN / "rotnet"), "report"], dest, env)
    after = {p.name: p.read_bytes() for p in reports.iterdir() if p.is_file()}
    assert before == after

    # Changing a probe parameter invalidates the probes and what follows, not pretraining.
    params = (dest / "params.yaml").read_text()
    changed = params.replace("probe:\n  hidden: 200", "probe:\n  hidden: 100")
    assert changed != params
    (dest / "params.yaml").write_text(changed)
    stale = set(json.loads(run(["dvc", "status", "--json", "dvc.yaml"], dest, env).stdout))
    assert stale, "changing probe.hidden changed nothing"
    assert all(s.startswith(("probe@", "snapshots", "table3@")) for s in stale), stale
    assert not any(s.startswith(("pretrain@", "data", "semisup")) for s in stale), stale
    (dest / "params.yaml").write_text(params)


def test_bad_params_and_variants_exit_2(project, tmp_path):
    dest, env = project
    bad = dest / "bad-params"
    bad.mkdir(exist_ok=True)
    (bad / "params.yaml").write_text("profile: smoke\npretrain:\n  blockz: 4\n")
    outs = ["runs/pretrain/b4-r4-s0", "metrics/pretrain/b4-r4-s0.json", "plots/pretrain/b4-r4-s0.csv"]
    result = run([sys.executable, str(dest / "stages" / "pretrain.py"), "b4-r4", "0", *outs], bad, env,
                 check=False)
    assert result.returncode == 2 and "blockz" in result.stderr
    (bad / "params.yaml").write_text("profile: smoke\npretrain:\n  width: wide\n")
    result = run([sys.executable, str(dest / "stages" / "data.py"), "runs/data.json"], bad, env, check=False)
    assert result.returncode == 2 and "pretrain.width" in result.stderr
    result = run([sys.executable, str(dest / "stages" / "pretrain.py"), "b7-r4", "0", *outs], dest, env,
                 check=False)
    assert result.returncode == 2 and "unknown variant" in result.stderr
    result = run([str(BIN / "rotnet"), "ablate", "--rotations", "3"], dest, env, check=False)
    assert result.returncode == 2 and "--rotations 3" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_report_before_any_run_exits_2(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'empty.db'}",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    result = run([str(BIN / "rotnet"), "report", "--out", str(tmp_path / "reports"), "--profile",
                  "smoke", "--dataset", "generated"], tmp_path, env, check=False)
    assert result.returncode == 2, result.stderr
    assert "no finished runs" in result.stderr
    assert not (tmp_path / "reports" / "table1.md").exists()


def _walk(node):
    """Every dict in a nested JSON structure."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)
