"""The MLflow UI as a user opens it, in a real browser (headless Chromium from Debian's
packages; `.ci/run` installs it): the link rotnet prints opens the experiment in the
model-training view listing its runs, and the compare view shows the 2/4/8-rotation runs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from helpers import tiny_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    # Required in CI (installed there); a developer without Chromium skips it.
    pytest.mark.skipif(not CHROMIUM and not os.environ.get("CI"), reason="no chromium"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rendered_dom(url: str) -> str:
    """The page after its JavaScript ran (the UI is a single-page app)."""
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                          "--virtual-time-budget=20000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=180)
    return out.stdout


@pytest.fixture
def ui(tracking_store):
    """`mlflow ui` on the test's store as `rotnet ui` serves it (its app, one worker),
    stopped afterwards; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
                             tracking_store.uri, "--port", str(port), "--workers", "1",
                             "--app-name", "rotnet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                assert time.time() < deadline and proc.poll() is None, "mlflow ui did not start"
                time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_printed_link_opens_the_model_training_view_and_compares_rotation_sets(
        tracking_store, ui, tmp_path):
    from rotnet import experiments, tracking

    runs = {}
    for rotations in ("2", "4", "8"):
        config = tiny_config({"pretrain": {"rotations": rotations}})
        result = experiments.pretrain(config, tmp_path / rotations)
        runs[rotations] = tracking_store.run(result.run_id).info.run_name
    experiment = tracking.experiment_id()

    page = rendered_dom(tracking.ui_link(ui, experiment))
    for name in runs.values():
        assert name in page, f"run {name} not listed"
    assert "Detect Issues" not in page  # the GenAI overview's pop-up

    ids = json.dumps([r.info.run_id for r in tracking_store.runs()]).replace(" ", "")
    compare = rendered_dom(f"{ui}/#/compare-runs?runs={ids}&experiments=[\"{experiment}\"]"
                           f"&{tracking.MODEL_TRAINING_VIEW}")
    assert "Comparing 3 Runs" in compare
    for name in runs.values():
        assert name in compare

    # MLflow's own Compare link carries no workflowType: the page still opens in the
    # model-training view (no GenAI-only entries such as Prompts in its side bar).
    plain = rendered_dom(f"{ui}/#/compare-runs?runs={ids}&experiments=[\"{experiment}\"]")
    assert "Comparing 3 Runs" in plain and ">Prompts<" not in plain

    # "Logged models" lists each pretraining's network, named rotnet, from its run.
    models = rendered_dom(tracking.ui_link(ui, experiment).replace("?", "/models?"))
    for name in runs.values():  # each model's source run
        assert name in models, models[-3000:]


def test_a_report_link_opens_its_run_and_the_cell_tag_search_finds_it(tracking_store, ui, tmp_path):
    from rotnet import report, report_publish, report_render, tracking
    from test_report import CONFIG, log_run, probe_tags

    run_id = log_run(probe_tags("b4-r8", 2), [70.0, 81.5])
    data = report.collect(CONFIG)
    report_publish.publish(data, tmp_path, report_render.write_report(tmp_path, data, ui))
    row = next(line for line in (tmp_path / "table2.md").read_text().splitlines()
               if line.startswith("| 8 rotations"))
    link = row[row.index("(http") + 1:row.index(")", row.index("(http"))]
    name = tracking_store.run(run_id).info.run_name
    assert name.endswith(run_id[:8]) and f"[{run_id[:8]}]" in row  # cited as its name ends
    assert name in rendered_dom(link)  # the run's page
    runs_page = tracking.ui_link(ui, tracking.experiment_id()).replace("?", "/runs?")
    for search in ("tags.cell%20%3D%20%22table2%2Fb4-r8%22",  # the cell's runs
                   f"run_id%20LIKE%20%27{run_id[:8]}%25%27"):  # the cited id, as the header says
        assert name in rendered_dom(f"{runs_page}&searchFilter={search}"), search
    assert "run_id LIKE '<cited id>%'" in (tmp_path / "table2.md").read_text()
