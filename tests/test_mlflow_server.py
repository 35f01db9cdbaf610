"""Tracking-server mode: runs logged over HTTP to `mlflow server` (only ever 127.0.0.1), and
an unreachable server is a quick one-line error with exit 2 and no output directory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def call(base: str, path: str, body: dict | None = None, timeout: float = 10) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method="POST" if body else "GET",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"{}")


def env_for(uri: str, home: Path) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true",
            "ROTNET_HOME": str(home), "PATH": f"{BIN}:{os.environ['PATH']}"}


@pytest.fixture
def server(tmp_path):
    port = free_port()
    base = f"http://{HOST}:{port}"
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'srv.db'}",
         "--default-artifact-root", str(tmp_path / "art"), "--host", HOST, "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env_for("", tmp_path), start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("mlflow server did not come up:\n"
                                     + (tmp_path / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the server's own process group (gunicorn/uvicorn workers)
            proc.wait(timeout=10)
        log.close()


@pytest.mark.slow
def test_pretrain_logs_to_tracking_server(server, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([str(BIN / "rotnet"), "pretrain", "--profile", "smoke", "--out", str(out)],
                            cwd=tmp_path, env=env_for(server, tmp_path), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "metrics.json").is_file()
    run_id = json.loads((out / "metrics.json").read_text())["run_id"]

    experiment = call(server, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=rotnet")
    experiment_id = experiment["experiment"]["experiment_id"]
    found = call(server, "/api/2.0/mlflow/runs/search",
                 {"experiment_ids": [experiment_id], "max_results": 10})
    runs = {r["info"]["run_id"]: r for r in found.get("runs", [])}
    assert run_id in runs
    run = runs[run_id]
    assert run["info"]["status"] == "FINISHED"
    metrics = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
    assert "test_acc" in metrics and 0 <= metrics["test_acc"] <= 100
    tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
    assert tags["profile"] == "smoke" and tags["task"] == "pretrain"
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to the local default store


@pytest.mark.slow
def test_unreachable_server_fails_fast(tmp_path):
    port = free_port()  # bound and released: nothing listens there
    out = tmp_path / "out"
    start = time.monotonic()
    result = subprocess.run([str(BIN / "rotnet"), "pretrain", "--profile", "smoke", "--out", str(out)],
                            cwd=tmp_path, env=env_for(f"http://{HOST}:{port}", tmp_path),
                            capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stderr[-2000:]
    assert "cannot reach the MLflow tracking server" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert elapsed < 60, elapsed  # imports + data; MLflow's own retries would take minutes
    assert not (out / "metrics.json").exists() and not (out / "checkpoint.pt").exists()


def test_check_reachable_only_probes_http(monkeypatch):
    from rotnet.errors import RotnetError
    from rotnet.tracking import check_reachable

    check_reachable("sqlite:////nonexistent/dir/x.db")  # not a server: not checked
    with pytest.raises(RotnetError, match="cannot reach"):
        check_reachable(f"http://{HOST}:{free_port()}", timeout=2)
