"""The MLflow store wherever the project is: a copied or moved project keeps its artifacts
inside itself (MLflow records absolute locations; `rotnet.store.relocate_artifacts` points
them at the `mlartifacts/` beside the store), and the address `rotnet ui` serves it at."""

from __future__ import annotations

import shutil
from pathlib import Path

from helpers import tiny_config
from rotnet import experiments, store, tracking
from rotnet.tracking import Tracker


def files_under(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def logged_run(tmp_path: Path) -> str:
    """A finished run with one JSON artifact in the store MLFLOW_TRACKING_URI names."""
    note = tmp_path / "note.json"
    note.write_text('{"where": "original"}')
    run = Tracker().start("note", {}, {})
    run.log_artifact(note)
    run.finish()
    return run.run_id


def test_a_copied_project_writes_its_artifacts_inside_itself(tmp_path, monkeypatch, tiny_data):
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{original / 'mlflow.db'}")
    old_run = logged_run(tmp_path)
    assert (original / "mlartifacts").is_dir()
    shutil.copytree(original, copy)
    before = files_under(original)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{copy / 'mlflow.db'}")
    result = experiments.pretrain(tiny_config(), tmp_path / "run", data=tiny_data)  # a stage's work
    assert files_under(original) == before  # nothing written into the original
    written = [p for p in (copy / "mlartifacts").rglob("checkpoint.pt")]
    assert [p for p in written if result.run_id in str(p)], written
    assert list((copy / "mlartifacts" / "models").iterdir())  # the logged network too
    assert tracking.read_json_artifact(old_run, "note.json") == {"where": "original"}


def test_a_moved_project_reads_and_writes_its_artifacts_in_the_new_place(tmp_path, monkeypatch):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{old / 'mlflow.db'}")
    run_id = logged_run(tmp_path)
    shutil.move(old, new)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{new / 'mlflow.db'}")
    assert tracking.read_json_artifact(run_id, "note.json") == {"where": "original"}
    second = logged_run(tmp_path)
    assert not old.exists()
    assert list((new / "mlartifacts").glob(f"{second}/artifacts/note.json"))
    assert store.relocate_artifacts(f"sqlite:///{new / 'mlflow.db'}") == 0  # once is enough


def test_rotnet_ui_records_where_it_serves_the_store_and_links_follow(tmp_path, monkeypatch):
    from rotnet import report_render

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv(report_render.UI_ENV, raising=False)
    assert store.recorded_ui_address(uri) is None
    assert report_render.ui_base() == report_render.DEFAULT_UI
    store.record_ui_address(uri, "http://127.0.0.1:5123")
    assert report_render.ui_base() == "http://127.0.0.1:5123"
    assert report_render.ui_base("http://elsewhere:9") == "http://elsewhere:9"  # given wins


def test_the_ui_starts_no_more_server_workers_than_cores(monkeypatch):
    from rotnet import cli_pipeline

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert cli_pipeline.ui_workers() == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))
    assert cli_pipeline.ui_workers() == 4
