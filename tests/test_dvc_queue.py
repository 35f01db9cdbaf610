"""The DVC experiment queue: two seeds of one cheap stage (pretrain@b3-r4-<seed>, smoke profile,
`seeds` set per experiment) run
in parallel workers, each in its own temporary copy of the repository, and both log to the
ONE absolute MLflow store.

The queued runs import `rotnet` from their own temporary copy: PYTHONPATH is "." (made
absolute at interpreter start-up against the stage's working directory, the copy's root).
Without it the editable install would resolve `rotnet` to the source checkout, not the
experiment's code. A marker appended to the copy's rotnet/__init__.py records where it was
imported from."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from helpers import copy_project, run_command as run

BIN = Path(sys.executable).parent
MARKER = ("\nimport os as _os\nif _os.environ.get('ROTNET_IMPORT_LOG'):\n"
          "    with open(_os.environ['ROTNET_IMPORT_LOG'], 'a') as _log:\n"
          "        _log.write(__file__ + '\\n')\n")


@pytest.fixture
def project(tmp_path):
    """A git + DVC copy of the working tree (tracked and untracked, not ignored files)."""
    dest = tmp_path / "project"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": ".",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "ROTNET_IMPORT_LOG": str(tmp_path / "imports.log")}
    env.pop("ROTNET_HOME", None)  # project_root() then follows the imported copy
    copy_project(dest, env)
    with open(dest / "rotnet" / "__init__.py", "a") as init:  # which copy a queued run imports
        init.write(MARKER)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "marker"], dest, env)
    return dest, env, tmp_path


@pytest.mark.slow
def test_two_queued_experiments_run_in_parallel(project):
    dest, env, tmp = project
    (tmp / "imports.log").unlink(missing_ok=True)
    # No store exists yet: the two workers create it at once (tracking serialises that).
    for seed in (1, 2):
        run(["dvc", "exp", "run", "--queue", "-S", f"seeds=[{seed}]", f"pretrain@b3-r4-{seed}"],
            dest, env)
    try:
        run(["dvc", "queue", "start", "-j", "2"], dest, env)
        deadline = time.monotonic() + 300
        while True:
            status = run(["dvc", "queue", "status"], dest, env).stdout
            states = re.findall(r"\b(Queued|Running|Success|Failed)\b", status)
            if len(states) >= 2 and not {"Queued", "Running"} & set(states):
                break
            assert time.monotonic() < deadline, f"queue did not finish:\n{status}"
            time.sleep(3)
        if states.count("Success") != 2:
            logs = [run(["dvc", "queue", "logs", line.split()[0]], dest, env, check=False).stdout[-2000:]
                    for line in status.splitlines() if "Failed" in line]
            raise AssertionError(status + "\n".join(logs))
    finally:
        run(["dvc", "queue", "stop", "--kill"], dest, env, check=False, timeout=120)

    # Both experiments, with their params, in `dvc exp show`.
    shown = json.loads(run(["dvc", "exp", "show", "--json"], dest, env).stdout)
    exps = []
    for entry in shown:
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs") or []:
                exps.append(rev)
    found = {}
    for rev in exps:
        data = rev.get("data") or {}
        seeds = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("seeds")
        seed = seeds[0] if seeds else None
        # (per-run files are not DVC metrics: the report's summary is, and no report ran here)
        if seed in (1, 2):
            found[seed] = rev
    assert set(found) == {1, 2}, json.dumps(shown)[:3000]

    # Both runs in the one absolute MLflow store, FINISHED, one per seed, run from temp copies.
    check = ("import json, mlflow\n"
             "c = mlflow.tracking.MlflowClient()\n"
             "e = c.get_experiment_by_name('rotnet')\n"
             "runs = c.search_runs([e.experiment_id], \"tags.stage LIKE 'pretrain@b3-r4-%'\")\n"
             "print(json.dumps([[r.info.status, r.data.tags['seed'], r.data.tags['checkpoint_path'],"
             " r.data.metrics.get('test_acc')] for r in runs]))\n")
    runs = json.loads(run([sys.executable, "-c", check], tmp, env).stdout.strip().splitlines()[-1])
    assert sorted(r[1] for r in runs) == ["1", "2"], runs
    assert all(r[0] == "FINISHED" and r[3] is not None for r in runs), runs
    exps_dir = str(dest / ".dvc" / "tmp" / "exps")
    assert all(r[2].startswith(exps_dir) for r in runs), runs

    # The stage processes imported rotnet from their temporary copy, not the checkout the test runs from.
    imports = [line for line in (tmp / "imports.log").read_text().splitlines() if line]
    assert imports and all(line.startswith(exps_dir) for line in imports), imports
